/*
 * bench_ec.h — ptbench's erasure-coding part (bench_ec.c).
 *
 * One thread, 4 MiB chunks, for the codes 4+2 and 8+2: a whole coding group
 * (G = k + m members of k * 4 MiB each) is encoded with rs_group_encode(),
 * encoded again with plain ISA-L ec_encode_data() stripe by stripe on the same
 * buffers in the same run (the baseline), and m members are rebuilt with
 * rs_group_decode() in two ways:
 *
 *  - ec_decode: as a replacement node rebuilds during a restore. The
 *    survivors have checked their own slots against their own checksum
 *    tables (restore step 2 of DESIGN.md, on their own nodes), so their
 *    tables are not passed; the decode checks every rebuilt block against the
 *    lost members' tables (and retries on a mismatch), as always.
 *  - ec_decode_verify_all: every member's table is passed, so the same call
 *    also checks all the survivors' data (in the same pass over memory).
 *
 * Every rate counts data bytes: the G * k * 4 MiB of snapshot data the group's
 * stripes cover, divided by the time of the operation (parity bytes are not
 * counted, unlike ISA-L's own perf tools). GB/s = 1e9 bytes per second.
 *
 * Allocations. One ISA-L call streams k sources and m outputs at once, and
 * its rate depends on which physical pages those streams lie on: on the
 * 2-core EPYC this was written on, one stripe's ec_encode_data over 4 MiB
 * chunks ran anywhere from 10 to 26 GB/s from one allocation of the same
 * buffers to the next, with the same code, sizes and virtual alignment. A
 * single allocation therefore favours encode or decode by chance. The group
 * is allocated afresh `allocations` times (every buffer at a 2 MiB boundary,
 * as the snapshot store places its slot and parity areas); each allocation
 * runs `reps` interleaved repetitions of raw encode, encode, decode and
 * decode-verify-all. Within an allocation the operations run on the same
 * pages, so the ratios the targets name are taken there, pairwise, from the
 * medians of that allocation's repetitions; every figure reported (rates
 * and ratios) is the median over the allocations, an odd number of them, and
 * the lowest and highest decode / encode are reported beside it.
 */
#ifndef PT_BENCH_EC_H
#define PT_BENCH_EC_H

#include <stdbool.h>
#include <stdint.h>

struct bench_ec_result {
  double ec_encode_gbps;            /* 4+2: rs_group_encode */
  double ec_decode_gbps;            /* 4+2: rs_group_decode, 2 members lost,
                                       rebuilt blocks checked */
  double isal_raw_encode_gbps;      /* 4+2: ec_encode_data, same buffers */
  double ec82_encode_gbps;          /* the same three for 8+2 */
  double ec82_decode_gbps;
  double ec82_isal_raw_encode_gbps;
  double ec_decode_verify_all_gbps;   /* 4+2: survivors checked as well */
  double ec82_decode_verify_all_gbps; /* 8+2: the same */
  /* The targets' ratios: medians over the allocations of each allocation's
   * paired ratio (encode / raw, decode / encode on the same buffers). */
  double ec_encode_ratio, ec_decode_ratio;
  double ec82_encode_ratio, ec82_decode_ratio;
  /* decode / encode: the lowest and highest allocation */
  double ec_decode_ratio_min, ec_decode_ratio_max;
  double ec82_decode_ratio_min, ec82_decode_ratio_max;
  uint64_t chunk_bytes;             /* 4 MiB */
  int allocations;                  /* fresh allocations of each group */
  int reps;                         /* timed repetitions per allocation */
  char error[256];                  /* why a failed run failed, else "" */
};

/* Runs both codes; quick: fewer allocations and repetitions (same sizes);
 * verbose: each allocation's figures on stderr. Returns 0 or a
 * negative code (pt.h's space) with out->error saying why; a rebuilt member
 * that differs from the original is PT_ECHECKSUM. Uses about 600 MiB. */
int bench_ec_run(struct bench_ec_result *out, bool quick, bool verbose);

#endif /* PT_BENCH_EC_H */
