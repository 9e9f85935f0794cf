/*
 * ptbench — pt's benchmark: every figure beside the machine's own limit,
 * measured in one run on the same buffers.
 *
 *   copy_limit_gbps        the fastest plain copy of the state into a
 *                          pre-faulted shm slot (the limit of the copy
 *                          figures): glibc memcpy in one call and in 1 MiB
 *                          pieces and streaming stores, each on one thread
 *                          and on as many as the snapshot's copy threads
 *                          (copy_limit_<how>_gbps; copy_limit_method names
 *                          the fastest)
 *   memcpy_gbps            of those, glibc memcpy in one call on one thread
 *   snapshot_gbps          the copy engine, no checksums, into the same slot
 *   snapshot_crc_gbps      libpt: pt_snapshot + pt_fence against a real SMP,
 *                          with per-block CRC32C (what a trainer runs)
 *   snapshot_blocking_ms_* how long pt_snapshot() blocks the caller
 *   snapshot_ms            pt_snapshot + pt_fence, median (the steady state)
 *   first_snapshot_ms      a fresh client's first snapshot: open, register,
 *                          pt_snapshot, pt_fence (a restarted trainer's)
 *   restore_gbps           pt_restore(), every checksum verified
 *   file_ckpt_blocking_ms  a synchronous write + fsync of the same state
 *   step_overhead_ratio    pt-train step time, snapshot every step / no pt
 *   recovery_ms            kill -9 of pt-train under ptd node to the first
 *                          step the restarted trainer completes, the node's
 *                          backoff excluded (recovery_backoff_ms);
 *                          recovery_commit_ms to that step's commit
 *   ec_*, ec82_*, isal_raw_* the erasure-coding part (bench_ec.c), medians
 *                          over several fresh allocations of the buffers
 *   tcp_raw_gbps           plain sockets over loopback TCP, 1 MiB writes,
 *                          read into a pre-faulted shm ring as bulk frames
 *                          land (bench_net.c): the limit of the network part
 *   tcp_raw_hot_gbps       the same, read into one buffer that stays in the
 *                          cache: the network stack alone, for reference
 *   bulk_gbps              rpc bulk frames over an authenticated loopback TCP
 *                          connection into a pre-faulted shm buffer, CRC32C
 *                          checked (bench_bulk.c), against that limit
 *   bulk_ratio_median/_min/_max bulk_gbps / tcp_raw_gbps per round: the network
 *                          figures run in rounds (raw, then bulk), each
 *                          figure the median over rounds, and the target's
 *                          ratio the median of the rounds' ratios; in each
 *                          round either side is the faster of two transfers
 *                          (raw: its two read sizes)
 *
 * Copy rates are medians of interleaved repetitions; GB/s means 1e9 bytes
 * per second. The run starts its own SMP (and ptd node for the training
 * figure) with a private socket directory, job name and shm prefix, and
 * removes all of it on exit, on failure and on SIGINT/SIGTERM. Exit status:
 * 0 when everything was measured (targets missed are reported, not errors),
 * 1 when a measurement failed, 2 on bad usage.
 */
#include <errno.h>
#include <getopt.h>
#include <limits.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "common/conf.h"
#include "tests/bench/bench.h"
#include "tests/bench/bench_ec.h"

#define DEFAULT_BYTES ((uint64_t)1 << 30)
#define QUICK_BYTES ((uint64_t)64 << 20)

static const char usage[] =
    "usage: ptbench [options]\n"
    "\n"
    "Measures pt's snapshot, restore, erasure-coding and training-overhead\n"
    "figures beside the machine's own limits, in one run on the same buffers,\n"
    "and prints a table (or one JSON object with --json) with the issue's\n"
    "targets and whether each holds.\n"
    "\n"
    "  --bytes N          state size, suffixes K, M, G (default 1G)\n"
    "  --quick            a CI-sized run: 64 MiB, few repetitions (< 30 s)\n"
    "  --json             print exactly one JSON object on stdout\n"
    "  --copy-threads N   copy threads of libpt and the copy engine (default 1)\n"
    "  --reps N           interleaved copy repetitions (default 20; quick 30)\n"
    "  --file-dir DIR     where the file checkpoint is written (default /var/tmp)\n"
    "  --ptd PATH         ptd binary (default: next to ptbench)\n"
    "  --pt-train PATH    pt-train binary (default: next to ptbench)\n"
    "  --skip-train       leave out the pt-train figures (step overhead, recovery)\n"
    "  --only PARTS       measure only these parts, comma-separated: net, ec,\n"
    "                     copy, file (with copy), train, recovery, persist;\n"
    "                     the others"
    " are reported 'not measured'\n"
    "  --cluster          instead of the figures above: the commit across nodes\n"
    "                     on a real ptd controller (3 ptd nodes running pt-train,\n"
    "                     and 10, 100, 1000 simulated nodes, each beside the\n"
    "                     kernel floor of the same traffic); with --quick\n"
    "                     fewer steps (< 1 min)\n"
    "  --cluster-step-ms MS  the simulated nodes seal a step every MS ms, or\n"
    "                     when the last committed if later (default 100)\n"
    "  -v, --verbose      progress and per-repetition times on stderr\n"
    "  -h, --help         this text\n"
    "\n"
    "Exit status: 0 everything measured (missed targets are reported, not\n"
    "errors), 1 a measurement failed, 2 bad usage. With --cluster, a figure\n"
    "that a controller or node without jobs cannot give is reported 'not\n"
    "measured' with the reason, and is not a failure.\n";

enum {
  OPT_BYTES = 256, OPT_QUICK, OPT_JSON, OPT_THREADS, OPT_REPS, OPT_FILE_DIR,
  OPT_PTD, OPT_TRAIN, OPT_SKIP_TRAIN, OPT_CLUSTER, OPT_CLUSTER_STEP, OPT_ONLY,
};

/* The parts of a run (--only). */
enum {
  PART_NET = 1u << 0, PART_EC = 1u << 1, PART_COPY = 1u << 2,
  PART_FILE = 1u << 3, PART_TRAIN = 1u << 4, PART_RECOVERY = 1u << 5,
  PART_PERSIST = 1u << 6,
  PART_ALL = (1u << 7) - 1,
};

/* "net,ec,..." -> a PART_* mask; 0 when a name is unknown. */
static unsigned parse_parts(const char *list)
{
  static const struct { const char *name; unsigned bit; } names[] = {
    { "net", PART_NET }, { "ec", PART_EC }, { "copy", PART_COPY },
    { "file", PART_FILE | PART_COPY }, { "train", PART_TRAIN },
    { "recovery", PART_RECOVERY }, { "persist", PART_PERSIST },
  };
  unsigned mask = 0;
  const char *p = list;

  while (*p != '\0') {
    size_t n = strcspn(p, ",");
    unsigned bit = 0;
    for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
      if (strlen(names[i].name) == n && strncmp(p, names[i].name, n) == 0)
        bit = names[i].bit;
    if (bit == 0)
      return 0;
    mask |= bit;
    p += n;
    if (*p == ',')
      p++;
  }
  return mask;
}

static const struct option options[] = {
  { "bytes", required_argument, NULL, OPT_BYTES },
  { "quick", no_argument, NULL, OPT_QUICK },
  { "json", no_argument, NULL, OPT_JSON },
  { "copy-threads", required_argument, NULL, OPT_THREADS },
  { "reps", required_argument, NULL, OPT_REPS },
  { "file-dir", required_argument, NULL, OPT_FILE_DIR },
  { "ptd", required_argument, NULL, OPT_PTD },
  { "pt-train", required_argument, NULL, OPT_TRAIN },
  { "skip-train", no_argument, NULL, OPT_SKIP_TRAIN },
  { "only", required_argument, NULL, OPT_ONLY },
  { "cluster", no_argument, NULL, OPT_CLUSTER },
  { "cluster-step-ms", required_argument, NULL, OPT_CLUSTER_STEP },
  { "verbose", no_argument, NULL, 'v' },
  { "help", no_argument, NULL, 'h' },
  { NULL, 0, NULL, 0 },
};

/* Everything one run measured; NAN where a figure was not measured. */
struct results {
  char cpu[128];
  long cores;
  struct bench_copy_result copy;
  struct bench_file_result file;
  struct bench_net_result net;
  struct bench_train_result train;
  struct bench_recover_result recover;
  struct bench_ec_result ec;
  struct bench_persist_result persist;
  bool have_copy, have_file, have_net, have_train, have_ec, have_recover;
  bool have_persist;
  struct bench_bulk_result bulk;
  bool have_bulk;
  /* bulk_gbps / tcp_raw_gbps per round (the median is the target's), and
   * the spread over the rounds */
  double bulk_ratio, bulk_ratio_lo, bulk_ratio_hi;
  int net_rounds;
  double blocking_vs_file;
  double elapsed_s;
};

static int parse_int(const char *arg, const char *flag, int lo, int hi, int *out)
{
  char *end;
  errno = 0;
  long v = strtol(arg, &end, 10);
  if (errno != 0 || end == arg || *end != '\0' || v < lo || v > hi) {
    fprintf(stderr, "ptbench: invalid value '%s' for --%s: expected an integer "
            "from %d to %d\n", arg, flag, lo, hi);
    return -EINVAL;
  }
  *out = (int)v;
  return 0;
}

/* "<dir of /proc/self/exe>/name". */
static int beside_self(char *out, size_t len, const char *name)
{
  char self[PATH_MAX];
  ssize_t n = readlink("/proc/self/exe", self, sizeof(self) - 1);
  if (n <= 0)
    return -errno;
  self[n] = '\0';
  char *slash = strrchr(self, '/');
  if (slash == NULL)
    return -ENOENT;
  *slash = '\0';
  if ((size_t)snprintf(out, len, "%s/%s", self, name) >= len)
    return -ENAMETOOLONG;
  return 0;
}

static size_t targets_fill(const struct results *res, struct target *t)
{
  const struct bench_copy_result *c = &res->copy;
  const struct bench_ec_result *e = &res->ec;
  size_t n = 0;
  double nan_ = NAN;

  t[n++] = (struct target){ "snapshot_vs_copy_limit", "snapshot (no CRC) / copy limit",
                            res->have_copy ? c->snapshot_gbps / c->copy_limit_gbps : nan_,
                            true, 0.9, "snapshot_gbps / copy_limit_gbps" };
  t[n++] = (struct target){ "snapshot_crc_vs_copy_limit", "snapshot+CRC / copy limit",
                            res->have_copy ? c->snapshot_crc_gbps / c->copy_limit_gbps : nan_,
                            true, 0.5, "snapshot_crc_gbps / copy_limit_gbps" };
  t[n++] = (struct target){ "snapshot_blocking_ms", "pt_snapshot() blocking p50",
                            res->have_copy ? c->blocking_ms_p50 : nan_, false, 1.0,
                            "snapshot_blocking_ms_p50, ms" };
  t[n++] = (struct target){ "restore_vs_copy_limit", "restore / copy limit",
                            res->have_copy ? c->restore_gbps / c->copy_limit_gbps : nan_,
                            true, 0.5, "restore_gbps / copy_limit_gbps" };
  t[n++] = (struct target){ "step_overhead", "step time with/without pt",
                            res->have_train ? res->train.step_overhead_ratio : nan_,
                            false, 1.05, "step_overhead_ratio" };
  t[n++] = (struct target){ "ec_encode_vs_isal_raw", "EC 4+2 encode / raw ISA-L",
                            res->have_ec ? e->ec_encode_ratio : nan_,
                            true, 0.9,
                            "median over allocations of ec_encode_gbps / isal_raw_encode_gbps" };
  t[n++] = (struct target){ "ec_decode_vs_encode", "EC 4+2 decode / encode",
                            res->have_ec ? e->ec_decode_ratio : nan_,
                            true, 0.8,
                            "median over allocations of ec_decode_gbps / ec_encode_gbps" };
  t[n++] = (struct target){ "ec82_encode_vs_isal_raw", "EC 8+2 encode / raw ISA-L",
                            res->have_ec ? e->ec82_encode_ratio : nan_,
                            true, 0.9,
                            "median over allocations of ec82_encode_gbps / ec82_isal_raw_encode_gbps" };
  t[n++] = (struct target){ "ec82_decode_vs_encode", "EC 8+2 decode / encode",
                            res->have_ec ? e->ec82_decode_ratio : nan_,
                            true, 0.8,
                            "median over allocations of ec82_decode_gbps / ec82_encode_gbps" };
  t[n++] = (struct target){ "first_snapshot_vs_steady", "first snapshot / steady",
                            res->have_copy ? c->first_snapshot_ms / c->snapshot_ms : nan_,
                            false, 1.5, "first_snapshot_ms / snapshot_ms" };
  t[n++] = (struct target){ "recovery_ms", "kill -9 to next completed step",
                            res->have_recover ? res->recover.recovery_ms : nan_, false, 1000,
                            "recovery_ms (backoff excluded), ms" };
  t[n++] = (struct target){ "bulk_vs_tcp_raw", "bulk frames / raw TCP",
                            res->have_bulk && res->have_net ? res->bulk_ratio : nan_,
                            true, 0.8, "bulk_gbps / tcp_raw_gbps" };
  const struct bench_persist_result *p = &res->persist;
  t[n++] = (struct target){ "persist_vs_raw", "flush / raw O_DIRECT write",
                            res->have_persist ? p->persist_ratio : nan_, true, 0.8,
                            "median over rounds of persist_gbps / persist_raw_gbps" };
  t[n++] = (struct target){ "restore_disk_vs_read_raw", "restore from disk / raw read",
                            res->have_persist ? p->restore_ratio : nan_, true, 0.8,
                            "median over rounds of restore_disk_gbps / read_raw_gbps" };
  t[n++] = (struct target){ "persist_step_overhead", "step time with/without a flush",
                            res->have_persist ? p->persist_step_overhead_ratio : nan_,
                            false, 1.05, "persist_step_overhead_ratio" };
  return n;
}

static void print_json(const struct bench_opts *o, const struct results *res,
                       const char *error)
{
  const struct bench_copy_result *c = &res->copy;
  struct bench_json j = { stdout, true };
  double nan_ = NAN;
  struct target t[16];
  size_t nt = targets_fill(res, t);

  fputc('{', stdout);
  bench_json_bool(&j, "complete", error == NULL);
  if (error != NULL)
    bench_json_str(&j, "error", error);
  bench_json_str(&j, "cpu", res->cpu);
  bench_json_u64(&j, "cores", (uint64_t)res->cores);
  bench_json_u64(&j, "bytes", o->bytes);
  bench_json_u64(&j, "copy_threads", (uint64_t)o->copy_threads);
  bench_json_str(&j, "backend", kern_backend_name());
  bench_json_str(&j, "stat", "median");
  bench_json_str(&j, "units", "GB/s = 1e9 bytes per second; ms = milliseconds");

  bench_json_num(&j, "copy_limit_gbps", res->have_copy ? c->copy_limit_gbps : nan_);
  bench_json_str(&j, "copy_limit_method", res->have_copy ? bench_limit_name(c->limit_which) : "");
  bench_json_u64(&j, "copy_limit_threads", (uint64_t)c->limit_threads);
  for (int w = 0; w < BENCH_LIMIT_COUNT; w++) {
    char key[64];
    snprintf(key, sizeof(key), "copy_limit_%s_gbps", bench_limit_name(w));
    bench_json_num(&j, key, res->have_copy ? c->limit_gbps[w] : nan_);
  }
  bench_json_num(&j, "memcpy_gbps", res->have_copy ? c->memcpy_gbps : nan_);
  bench_json_num(&j, "snapshot_gbps", res->have_copy ? c->snapshot_gbps : nan_);
  bench_json_num(&j, "snapshot_crc_gbps", res->have_copy ? c->snapshot_crc_gbps : nan_);
  bench_json_num(&j, "snapshot_blocking_ms_p50", res->have_copy ? c->blocking_ms_p50 : nan_);
  bench_json_num(&j, "snapshot_blocking_ms_p99", res->have_copy ? c->blocking_ms_p99 : nan_);
  bench_json_num(&j, "snapshot_blocking_ms_max", res->have_copy ? c->blocking_ms_max : nan_);
  bench_json_num(&j, "snapshot_fence_ms_p50", res->have_copy ? c->fence_ms_p50 : nan_);
  bench_json_num(&j, "snapshot_ms", res->have_copy ? c->snapshot_ms : nan_);
  bench_json_num(&j, "first_snapshot_ms", res->have_copy ? c->first_snapshot_ms : nan_);
  bench_json_num(&j, "second_snapshot_ms", res->have_copy ? c->second_snapshot_ms : nan_);
  bench_json_u64(&j, "snapshot_blocking_samples", (uint64_t)c->blocking_samples);
  bench_json_u64(&j, "snapshot_skipped", c->skipped);
  bench_json_u64(&j, "copy_reps", (uint64_t)c->reps);
  bench_json_u64(&j, "regions", (uint64_t)c->regions);
  bench_json_num(&j, "restore_gbps", res->have_copy ? c->restore_gbps : nan_);
  bench_json_u64(&j, "restore_reps", (uint64_t)c->restore_reps);
  bench_json_num(&j, "restore_fresh_client_ms", res->have_copy ? c->restore_fresh_client_ms : nan_);

  bench_json_num(&j, "file_ckpt_blocking_ms", res->have_file ? res->file.blocking_ms : nan_);
  bench_json_num(&j, "file_ckpt_write_ms", res->have_file ? res->file.write_ms : nan_);
  bench_json_num(&j, "file_ckpt_fsync_ms", res->have_file ? res->file.fsync_ms : nan_);
  bench_json_str(&j, "file_dir", o->file_dir);
  bench_json_str(&j, "file_fs", res->file.fs_type);
  bench_json_num(&j, "snapshot_blocking_vs_file", res->blocking_vs_file);

  bench_json_num(&j, "step_overhead_ratio", res->have_train ? res->train.step_overhead_ratio : nan_);
  bench_json_num(&j, "train_step_ms_pt", res->have_train ? res->train.step_ms_pt : nan_);
  bench_json_num(&j, "train_step_ms_nopt", res->have_train ? res->train.step_ms_nopt : nan_);
  bench_json_num(&j, "train_fence_ms_avg", res->have_train ? res->train.fence_ms : nan_);
  bench_json_num(&j, "train_snapshot_call_ms_avg", res->have_train ? res->train.snapshot_call_ms : nan_);
  bench_json_u64(&j, "train_state_mb", (uint64_t)res->train.state_mb);
  bench_json_u64(&j, "train_steps", (uint64_t)res->train.steps);
  const struct bench_recover_result *rv = &res->recover;
  bench_json_num(&j, "recovery_ms", res->have_recover ? rv->recovery_ms : nan_);
  bench_json_num(&j, "recovery_commit_ms", res->have_recover ? rv->commit_ms : nan_);
  bench_json_num(&j, "recovery_backoff_ms", res->have_recover ? rv->backoff_ms : nan_);
  bench_json_num(&j, "recovery_total_ms", res->have_recover ? rv->total_ms : nan_);
  bench_json_num(&j, "recovery_step_ms", res->have_recover ? rv->step_ms : nan_);
  bench_json_num(&j, "recovery_node_ms", res->have_recover ? rv->node_ms : nan_);
  bench_json_num(&j, "recovery_trainer_ms", res->have_recover ? rv->trainer_ms : nan_);
  bench_json_u64(&j, "recovery_state_mb", (uint64_t)rv->state_mb);

  const struct bench_persist_result *pp = &res->persist;
  bench_json_num(&j, "persist_gbps", res->have_persist ? pp->persist_gbps : nan_);
  bench_json_num(&j, "persist_raw_gbps", res->have_persist ? pp->persist_raw_gbps : nan_);
  bench_json_num(&j, "restore_disk_gbps", res->have_persist ? pp->restore_disk_gbps : nan_);
  bench_json_num(&j, "read_raw_gbps", res->have_persist ? pp->read_raw_gbps : nan_);
  bench_json_num(&j, "persist_step_overhead_ratio",
           res->have_persist ? pp->persist_step_overhead_ratio : nan_);
  bench_json_num(&j, "persist_step_ms", res->have_persist ? pp->step_ms_persist : nan_);
  bench_json_num(&j, "persist_step_ms_without", res->have_persist ? pp->step_ms_pt : nan_);
  bench_json_num(&j, "persist_vs_raw_median", res->have_persist ? pp->persist_ratio : nan_);
  bench_json_num(&j, "restore_disk_vs_read_raw_median",
           res->have_persist ? pp->restore_ratio : nan_);
  bench_json_u64(&j, "persist_bytes", pp->bytes);
  bench_json_u64(&j, "persist_rounds", (uint64_t)pp->rounds);
  bench_json_str(&j, "persist_io", !res->have_persist ? "-" : pp->direct ? "O_DIRECT" : "buffered");

  bench_json_num(&j, "ec_encode_gbps", res->have_ec ? res->ec.ec_encode_gbps : nan_);
  bench_json_num(&j, "ec_decode_gbps", res->have_ec ? res->ec.ec_decode_gbps : nan_);
  bench_json_num(&j, "isal_raw_encode_gbps", res->have_ec ? res->ec.isal_raw_encode_gbps : nan_);
  bench_json_num(&j, "ec82_encode_gbps", res->have_ec ? res->ec.ec82_encode_gbps : nan_);
  bench_json_num(&j, "ec82_decode_gbps", res->have_ec ? res->ec.ec82_decode_gbps : nan_);
  bench_json_num(&j, "ec82_isal_raw_encode_gbps", res->have_ec ? res->ec.ec82_isal_raw_encode_gbps : nan_);
  bench_json_str(&j, "ec_rate_bytes", "data bytes (parity not counted)");
  bench_json_u64(&j, "ec_chunk_bytes", res->ec.chunk_bytes);
  bench_json_num(&j, "ec_encode_vs_isal_raw_median", res->have_ec ? res->ec.ec_encode_ratio : nan_);
  bench_json_num(&j, "ec_decode_vs_encode_median", res->have_ec ? res->ec.ec_decode_ratio : nan_);
  bench_json_num(&j, "ec82_encode_vs_isal_raw_median", res->have_ec ? res->ec.ec82_encode_ratio : nan_);
  bench_json_num(&j, "ec82_decode_vs_encode_median", res->have_ec ? res->ec.ec82_decode_ratio : nan_);
  bench_json_u64(&j, "ec_allocations", (uint64_t)res->ec.allocations);
  bench_json_u64(&j, "ec_reps", (uint64_t)res->ec.reps);
  bench_json_num(&j, "ec_decode_vs_encode_min", res->have_ec ? res->ec.ec_decode_ratio_min : nan_);
  bench_json_num(&j, "ec_decode_vs_encode_max", res->have_ec ? res->ec.ec_decode_ratio_max : nan_);
  bench_json_num(&j, "ec82_decode_vs_encode_min", res->have_ec ? res->ec.ec82_decode_ratio_min : nan_);
  bench_json_num(&j, "ec82_decode_vs_encode_max", res->have_ec ? res->ec.ec82_decode_ratio_max : nan_);

  bench_json_num(&j, "tcp_raw_gbps", res->have_net ? res->net.tcp_raw_gbps : nan_);
  bench_json_num(&j, "tcp_raw_hot_gbps", res->have_net ? res->net.tcp_raw_hot_gbps : nan_);
  bench_json_num(&j, "bulk_gbps", res->have_bulk ? res->bulk.bulk_gbps : nan_);
  bench_json_num(&j, "bulk_ratio_median", res->have_bulk ? res->bulk_ratio : nan_);
  bench_json_num(&j, "bulk_ratio_min", res->have_bulk ? res->bulk_ratio_lo : nan_);
  bench_json_num(&j, "bulk_ratio_max", res->have_bulk ? res->bulk_ratio_hi : nan_);
  bench_json_num(&j, "elapsed_s", res->elapsed_s);

  bench_json_targets(&j, t, nt);
  fputs("\n}\n", stdout);
}

static void print_table(const struct bench_opts *o, const struct results *res,
                        const char *error)
{
  const struct bench_copy_result *c = &res->copy;
  struct target t[16];
  char b1[32], b2[32], sz[32];
  size_t nt = targets_fill(res, t);

  printf("ptbench: %s of state in %d region(s), %d copy thread(s), %s backend\n",
         bench_fmt_bytes(sz, sizeof(sz), o->bytes), c->regions, o->copy_threads,
         kern_backend_name());
  printf("cpu: %s, %ld cores\n", res->cpu, res->cores);
  printf("rates: GB/s = 1e9 B/s, median of %d interleaved repetitions (plain copies, "
         "engine, libpt) after one warm-up; restore: median of %d\n", c->reps, c->restore_reps);
  printf("copy limit: the fastest plain copy into the same pre-faulted shm slot (glibc "
         "memcpy in one call and in 1 MiB pieces, streaming stores; on the caller's thread and on %d thread(s) of its own); "
         "snapshots run on %d copy thread(s), restore on those and the caller's\n",
         c->limit_threads, o->copy_threads);
  printf("EC: one thread, 4 MiB chunks, data bytes; %d fresh allocations x %d repetitions, "
         "median over allocations; EC ratios paired within an allocation\n\n",
         res->ec.allocations, res->ec.reps);
  printf("%-30s %-15s %-26s %8s  %-9s %s\n", "figure", "measured", "limit", "ratio",
         "target", "result");

  char mc[96];
  snprintf(mc, sizeof(mc), "%s GB/s copy limit",
           bench_fmt(b2, sizeof(b2), "%.2f", res->have_copy ? c->copy_limit_gbps : NAN));
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->copy_limit_gbps : NAN);
  bench_row("copy limit (fastest below)", b1, res->have_copy ? bench_limit_text(c->limit_which) : "-",
      NAN, "", "");
  for (int w = 0; w < BENCH_LIMIT_COUNT; w++) {
    char lab[64], how[64];
    bool threads = w >= BENCH_LIMIT_MEMCPY_THREADS;
    snprintf(lab, sizeof(lab), "  %s", bench_limit_name(w));
    snprintf(how, sizeof(how), "(%d thread%s)", threads ? c->limit_threads : 1,
             threads && c->limit_threads != 1 ? "s" : "");
    bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->limit_gbps[w] : NAN);
    bench_row(lab, b1, how, NAN, "", "");
  }
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->snapshot_gbps : NAN);
  bench_target_row(&t[0], "snapshot, no checksums", b1, mc);
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->snapshot_crc_gbps : NAN);
  bench_target_row(&t[1], "snapshot + CRC32C (libpt)", b1, mc);
  bench_fmt(b1, sizeof(b1), "%.3f ms", res->have_copy ? c->blocking_ms_p50 : NAN);
  bench_target_row(&t[2], "pt_snapshot() blocks, p50", b1, "-");
  bench_fmt(b1, sizeof(b1), "%.3f ms", res->have_copy ? c->blocking_ms_p99 : NAN);
  bench_row("pt_snapshot() blocks, p99", b1, "-", NAN, "", "");
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_copy ? c->restore_gbps : NAN);
  bench_target_row(&t[3], "restore, checksums verified", b1, mc);
  bench_fmt(b1, sizeof(b1), "%.1f ms", res->have_copy ? c->restore_fresh_client_ms : NAN);
  bench_row("restore by a fresh client", b1, "(hello, map, copy, verify)", NAN, "", "");
  char ss[96];
  snprintf(ss, sizeof(ss), "%s snapshot_ms (steady)",
           bench_fmt(b2, sizeof(b2), "%.1f ms", res->have_copy ? c->snapshot_ms : NAN));
  bench_fmt(b1, sizeof(b1), "%.1f ms", res->have_copy ? c->first_snapshot_ms : NAN);
  bench_target_row(&t[9], "first snapshot, fresh client", b1, ss);
  bench_fmt(b1, sizeof(b1), "%.1f ms", res->have_copy ? c->second_snapshot_ms : NAN);
  bench_row("  its second (other slot)", b1, "", NAN, "", "");
  char fl[96];
  snprintf(fl, sizeof(fl), "%s p50 snapshot block",
           bench_fmt(b2, sizeof(b2), "%.3f ms", res->have_copy ? c->blocking_ms_p50 : NAN));
  bench_fmt(b1, sizeof(b1), "%.1f ms", res->have_file ? res->file.blocking_ms : NAN);
  char lab[64];
  snprintf(lab, sizeof(lab), "file ckpt + fsync (%s)", res->file.fs_type[0] ? res->file.fs_type : "-");
  bench_row(lab, b1, fl, res->blocking_vs_file, "", res->have_file ? "(baseline today)" : "");
  bench_fmt(b1, sizeof(b1), "%.2f ms/step", res->have_train ? res->train.step_ms_pt : NAN);
  snprintf(fl, sizeof(fl), "%s no pt",
           bench_fmt(b2, sizeof(b2), "%.2f ms/step", res->have_train ? res->train.step_ms_nopt : NAN));
  bench_target_row(&t[4], "pt-train, snapshot every step", b1, fl);
  if (res->have_train)
    snprintf(b1, sizeof(b1), "%.2f+%.2f ms", res->train.fence_ms, res->train.snapshot_call_ms);
  else
    snprintf(b1, sizeof(b1), "-");
  bench_row("  fence + pt_snapshot per step", b1, "", NAN, "", "");
  const struct bench_recover_result *rv = &res->recover;
  bench_fmt(b1, sizeof(b1), "%.1f ms", res->have_recover ? rv->recovery_ms : NAN);
  char rl[96];
  snprintf(rl, sizeof(rl), "%s state, batch 1", bench_fmt_bytes(b2, sizeof(b2),
           (uint64_t)rv->state_mb << 20));
  bench_target_row(&t[10], "recovery: kill -9 to next step", b1, rl);
  bench_fmt(b1, sizeof(b1), "%.1f ms", res->have_recover ? rv->commit_ms : NAN);
  bench_row("  to that step's commit", b1, "", NAN, "", "");
  if (res->have_recover)
    snprintf(b1, sizeof(b1), "%.0f+%.1f ms", rv->backoff_ms, rv->step_ms);
  else
    snprintf(b1, sizeof(b1), "-");
  bench_row("  backoff (excluded) + 1 step", b1, "", NAN, "", "");
  if (res->have_recover)
    snprintf(b1, sizeof(b1), "%.0f+%.0f ms", rv->node_ms, rv->trainer_ms);
  else
    snprintf(b1, sizeof(b1), "-");
  bench_row("  node + new trainer", b1, "(restore point; start..step)", NAN, "", "");

  const char *ec_lab[4] = { "EC 4+2 encode (data bytes)", "EC 4+2 decode (data bytes)",
                            "EC 8+2 encode (data bytes)", "EC 8+2 decode (data bytes)" };
  const struct bench_ec_result *e = &res->ec;
  double ec_val[4] = { e->ec_encode_gbps, e->ec_decode_gbps, e->ec82_encode_gbps,
                       e->ec82_decode_gbps };
  double ec_lim[4] = { e->isal_raw_encode_gbps, e->ec_encode_gbps,
                       e->ec82_isal_raw_encode_gbps, e->ec82_encode_gbps };
  const char *ec_what[4] = { "raw ISA-L", "encode", "raw ISA-L", "encode" };
  for (int i = 0; i < 4; i++) {
    bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_ec ? ec_val[i] : NAN);
    snprintf(fl, sizeof(fl), "%s GB/s %s",
             bench_fmt(b2, sizeof(b2), "%.2f", res->have_ec ? ec_lim[i] : NAN), ec_what[i]);
    bench_target_row(&t[5 + i], ec_lab[i], b1, fl);
    if (i % 2 == 1) { /* after each decode row: its spread over the allocations */
      double lo = i == 1 ? e->ec_decode_ratio_min : e->ec82_decode_ratio_min;
      double hi = i == 1 ? e->ec_decode_ratio_max : e->ec82_decode_ratio_max;
      if (res->have_ec)
        snprintf(b1, sizeof(b1), "%.2f-%.2f", lo, hi);
      else
        snprintf(b1, sizeof(b1), "-");
      snprintf(fl, sizeof(fl), "over %d allocations", e->allocations);
      bench_row("  decode/encode per allocation", b1, fl, NAN, "", "");
    }
  }
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_net ? res->net.tcp_raw_gbps : NAN);
  bench_row("TCP raw (loopback, into shm)", b1, "(network limit)", NAN, "", "");
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_net ? res->net.tcp_raw_hot_gbps : NAN);
  bench_row("  into a cache-hot buffer", b1, "(for reference)", NAN, "", "");
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_bulk ? res->bulk.bulk_gbps : NAN);
  snprintf(fl, sizeof(fl), "%s GB/s raw TCP",
           bench_fmt(b2, sizeof(b2), "%.2f", res->have_net ? res->net.tcp_raw_gbps : NAN));
  bench_target_row(bench_target_find(t, nt, "bulk_vs_tcp_raw"), "bulk frames, rpc, auth TCP", b1, fl);
  if (res->have_bulk)
    snprintf(b1, sizeof(b1), "%.2f-%.2f", res->bulk_ratio_lo, res->bulk_ratio_hi);
  else
    snprintf(b1, sizeof(b1), "-");
  snprintf(fl, sizeof(fl), "over %d paired rounds", res->net_rounds);
  bench_row("  bulk/raw per round", b1, fl, NAN, "", "");

  const struct bench_persist_result *pp = &res->persist;
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_persist ? pp->persist_gbps : NAN);
  snprintf(fl, sizeof(fl), "%s GB/s O_DIRECT write",
           bench_fmt(b2, sizeof(b2), "%.2f", res->have_persist ? pp->persist_raw_gbps : NAN));
  bench_target_row(bench_target_find(t, nt, "persist_vs_raw"), "persist a step (one rank)", b1, fl);
  bench_fmt(b1, sizeof(b1), "%.2f GB/s", res->have_persist ? pp->restore_disk_gbps : NAN);
  snprintf(fl, sizeof(fl), "%s GB/s O_DIRECT read",
           bench_fmt(b2, sizeof(b2), "%.2f", res->have_persist ? pp->read_raw_gbps : NAN));
  bench_target_row(bench_target_find(t, nt, "restore_disk_vs_read_raw"), "restore from disk, verified",
             b1, fl);
  bench_fmt(b1, sizeof(b1), "%.2f ms/step", res->have_persist ? pp->step_ms_persist : NAN);
  snprintf(fl, sizeof(fl), "%s no flush",
           bench_fmt(b2, sizeof(b2), "%.2f ms/step", res->have_persist ? pp->step_ms_pt : NAN));
  bench_target_row(bench_target_find(t, nt, "persist_step_overhead"), "pt-train beside a flush", b1, fl);

  int missed = 0, unmeasured = 0;

  for (size_t i = 0; i < nt; i++) {
    missed += isfinite(t[i].value) && !bench_target_ok(&t[i]);
    unmeasured += !isfinite(t[i].value);
  }
  char what[64];
  if (error != NULL)
    snprintf(what, sizeof(what), "run INCOMPLETE");
  else if (unmeasured > 0)
    snprintf(what, sizeof(what), "%d target(s) not measured (--only)", unmeasured);
  else
    snprintf(what, sizeof(what), "all figures measured");
  printf("\n%d target(s) missed; %s in %.1f s\n", missed, what, res->elapsed_s);
  if (error != NULL)
    printf("error: %s\n", error);
}

/* ---- main ---- */

int main(int argc, char **argv)
{
  struct bench_opts o = { .bytes = 0, .copy_threads = 1, .file_dir = "/var/tmp",
                          .job = "bench" };
  bool json = false, skip_train = false, cluster = false;
  int reps = 0, opt;
  unsigned parts = PART_ALL;
  char ptd[PATH_MAX] = "", train[PATH_MAX] = "";
  static char err[BENCH_ERRLEN];
  const char *error = NULL;
  struct results res;

  memset(&res, 0, sizeof(res));
  while ((opt = getopt_long(argc, argv, "vh", options, NULL)) != -1) {
    switch (opt) {
    case OPT_BYTES:
      if (conf_parse_bytes(optarg, &o.bytes) != 0 || o.bytes < 4096) {
        fprintf(stderr, "ptbench: invalid value '%s' for --bytes: expected a size of at "
                "least 4K, like 64M or 1G\n", optarg);
        return 2;
      }
      break;
    case OPT_QUICK: o.quick = true; break;
    case OPT_JSON: json = true; break;
    case OPT_THREADS:
      if (parse_int(optarg, "copy-threads", 1, 64, &o.copy_threads) != 0)
        return 2;
      break;
    case OPT_REPS:
      if (parse_int(optarg, "reps", 1, 10000, &reps) != 0)
        return 2;
      break;
    case OPT_FILE_DIR: o.file_dir = optarg; break;
    case OPT_PTD: snprintf(ptd, sizeof(ptd), "%s", optarg); break;
    case OPT_TRAIN: snprintf(train, sizeof(train), "%s", optarg); break;
    case OPT_SKIP_TRAIN: skip_train = true; break;
    case OPT_ONLY:
      if ((parts = parse_parts(optarg)) == 0) {
        fprintf(stderr, "ptbench: invalid value '%s' for --only: expected parts "
                "among net, ec, copy, file, train, recovery, persist, like train,recovery\n",
                optarg);
        return 2;
      }
      break;
    case OPT_CLUSTER: cluster = true; break;
    case OPT_CLUSTER_STEP:
      if (parse_int(optarg, "cluster-step-ms", 1, 60000, &o.cluster_step_ms) != 0)
        return 2;
      break;
    case 'v': o.verbose = true; break;
    case 'h': fputs(usage, stdout); return 0;
    default: fputs(usage, stderr); return 2;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ptbench: unexpected argument '%s'\n%s", argv[optind], usage);
    return 2;
  }
  if (o.bytes == 0)
    o.bytes = o.quick ? QUICK_BYTES : DEFAULT_BYTES;
  if (skip_train) /* (the persist part's step overhead runs pt-train) */
    parts &= ~(unsigned)(PART_TRAIN | PART_RECOVERY | PART_PERSIST);
  skip_train = (parts & (PART_TRAIN | PART_RECOVERY | PART_PERSIST)) == 0;
  o.reps = reps ? reps : o.quick ? 30 : 20;
  o.restore_reps = o.quick ? 10 : 5;
  o.file_reps = 3;
  if ((ptd[0] == '\0' && beside_self(ptd, sizeof(ptd), "ptd") != 0) ||
      (train[0] == '\0' && beside_self(train, sizeof(train), "pt-train") != 0)) {
    fprintf(stderr, "ptbench: cannot find my own directory; use --ptd and --pt-train\n");
    return 2;
  }
  o.ptd = ptd;
  o.pt_train = train;
  if (access(o.ptd, X_OK) != 0) {
    fprintf(stderr, "ptbench: cannot run ptd at '%s': %s (use --ptd)\n", o.ptd,
            strerror(errno));
    return 1;
  }
  if (access(o.file_dir, W_OK | X_OK) != 0) {
    fprintf(stderr, "ptbench: cannot write the file checkpoint in '%s': %s (use --file-dir)\n",
            o.file_dir, strerror(errno));
    return 1;
  }
  if (!skip_train && access(o.pt_train, X_OK) != 0) {
    fprintf(stderr, "ptbench: cannot run pt-train at '%s': %s (use --pt-train or "
            "--skip-train)\n", o.pt_train, strerror(errno));
    return 1;
  }

  /* This run's private names: a temp directory, a shm prefix, a job. */
  bench_cleanup_init();
  char tmp[] = "/tmp/ptbench.XXXXXX";
  if (mkdtemp(tmp) == NULL) {
    fprintf(stderr, "ptbench: cannot create a directory in /tmp: %s\n", strerror(errno));
    return 1;
  }
  bench_cleanup_dir(tmp);
  o.tmp_dir = tmp;
  char prefix[32];
  snprintf(prefix, sizeof(prefix), "ptb%ld-", (long)getpid());
  o.shm_prefix = prefix;
  bench_cleanup_shm_prefix(prefix);

  if (cluster)
    return bench_cluster_main(&o, json);

  double t_start = bench_now();
  bench_cpu_model(res.cpu, sizeof(res.cpu));
  res.cores = sysconf(_SC_NPROCESSORS_ONLN);
  res.blocking_vs_file = NAN;
  void *state = NULL;
  int rc;

  /* The network figures in rounds: plain sockets, then bulk frames, one
   * after the other; each round's ratio compares two transfers made a few
   * seconds apart, so that the load of a shared machine, which moves both
   * figures by 2x between runs, weighs on both sides of each ratio. */
  if (parts & PART_NET) {
    enum { ROUNDS_MAX = 7 };
    int rounds = o.quick ? 3 : ROUNDS_MAX;
    double raw[ROUNDS_MAX], hot[ROUNDS_MAX], bulk[ROUNDS_MAX], ratio[ROUNDS_MAX];
    struct bench_net_result nr;
    struct bench_bulk_result br;

    for (int i = 0; i < rounds; i++) {
      if (o.verbose)
        fprintf(stderr, "ptbench: loopback TCP round %d/%d: plain sockets "
                        "(tcp_raw_gbps), then bulk frames (bulk_gbps)\n",
                i + 1, rounds);
      rc = bench_net_run(&o, &nr, err, sizeof(err));
      if (rc < 0)
        goto out_fail;
      /* The limit is the faster of two transfers (two read sizes): bulk
       * frames get two transfers as well, the faster counting, or the
       * noise of one machine would favour the side with more tries. */
      struct bench_bulk_result b2;
      rc = bench_bulk_run(&o, &br, err, sizeof(err));
      if (rc < 0)
        goto out_fail;
      rc = bench_bulk_run(&o, &b2, err, sizeof(err));
      if (rc < 0)
        goto out_fail;
      if (b2.bulk_gbps > br.bulk_gbps)
        br = b2;
      raw[i] = nr.tcp_raw_gbps;
      hot[i] = nr.tcp_raw_hot_gbps;
      bulk[i] = br.bulk_gbps;
      ratio[i] = br.bulk_gbps / nr.tcp_raw_gbps;
      if (o.verbose)
        fprintf(stderr, "  raw %.2f GB/s, bulk %.2f GB/s: %.2f\n", raw[i],
                bulk[i], ratio[i]);
    }
    res.net = nr;
    res.bulk = br;
    res.net.tcp_raw_gbps = bench_median(raw, (size_t)rounds);
    res.net.tcp_raw_hot_gbps = bench_median(hot, (size_t)rounds);
    res.bulk.bulk_gbps = bench_median(bulk, (size_t)rounds);
    res.net_rounds = rounds;
    res.bulk_ratio_lo = res.bulk_ratio_hi = ratio[0];
    for (int i = 1; i < rounds; i++) {
      if (ratio[i] < res.bulk_ratio_lo)
        res.bulk_ratio_lo = ratio[i];
      if (ratio[i] > res.bulk_ratio_hi)
        res.bulk_ratio_hi = ratio[i];
    }
    res.bulk_ratio = bench_median(ratio, (size_t)rounds);
    res.have_net = res.have_bulk = true;
  }

  if (parts & PART_EC) {
    if (o.verbose)
      fprintf(stderr, "ptbench: erasure coding (4+2, 8+2)\n");
    rc = bench_ec_run(&res.ec, o.quick, o.verbose);
    if (rc < 0) {
      snprintf(err, sizeof(err), "erasure-coding benchmark: %s",
               res.ec.error[0] ? res.ec.error : pt_strerror(rc));
      goto out_fail;
    }
    res.have_ec = true;
  }

  if (parts & PART_COPY) {
    if (o.verbose)
      fprintf(stderr, "ptbench: copies (memcpy, engine, libpt, restore)\n");
    rc = bench_copy_run(&o, &res.copy, &state, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_copy = true;
  }

  if (parts & PART_FILE) {
    if (o.verbose)
      fprintf(stderr, "ptbench: file checkpoint in %s\n", o.file_dir);
    rc = bench_file_run(&o, state, o.bytes, &res.file, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_file = true;
    res.blocking_vs_file = res.file.blocking_ms / res.copy.blocking_ms_p50;
  }
  bench_state_free(state, o.bytes);
  state = NULL;

  if (parts & PART_TRAIN) {
    if (o.verbose)
      fprintf(stderr, "ptbench: pt-train with and without snapshots\n");
    rc = bench_train_run(&o, &res.train, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_train = true;
  }
  if (parts & PART_PERSIST) {
    if (o.verbose)
      fprintf(stderr, "ptbench: the persistent tier in %s\n", o.file_dir);
    rc = bench_persist_run(&o, &res.persist, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_persist = true;
  }
  if (parts & PART_RECOVERY) {
    if (o.verbose)
      fprintf(stderr, "ptbench: recovery from kill -9 of pt-train\n");
    rc = bench_recover_run(&o, &res.recover, err, sizeof(err));
    if (rc < 0)
      goto out_fail;
    res.have_recover = true;
  }
  goto out_report;

out_fail:
  error = err;
  fprintf(stderr, "ptbench: %s\n", err);
out_report:
  bench_state_free(state, o.bytes);
  bench_cleanup_run();
  res.elapsed_s = bench_now() - t_start;
  if (json)
    print_json(&o, &res, error);
  else
    print_table(&o, &res, error);
  return error != NULL ? 1 : 0;
}
