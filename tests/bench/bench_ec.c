/*
 * bench_ec.c — ptbench's erasure-coding part: rs_group_encode() and
 * rs_group_decode() against plain ISA-L ec_encode_data() on the same buffers,
 * one thread, 4 MiB chunks, 4+2 and 8+2. What is counted is said in
 * bench_ec.h. Self-contained: it needs only ec/, kernels/ and ISA-L.
 */
#include <errno.h>
#include <math.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/erasure_code.h>

#include "ec/rs.h"
#include "kernels/kernels.h"
#include "pt.h"
#include "tests/bench/bench_ec.h"

#define EC_CHUNK ((size_t)4 << 20)
#define EC_AREA_ALIGN ((size_t)2 << 20) /* the store's slot and parity areas */
#define EC_MAX_BUFS (4 * RS_MAX_MEMBERS)
#define EC_MAX_ALLOCS 16
#define EC_MAX_REPS 16

struct ec_group {
  unsigned k, m, g;
  struct rs_layout l;
  struct rs_coder *c;
  unsigned char *data[RS_MAX_MEMBERS], *par[RS_MAX_MEMBERS];
  uint32_t *crcs[RS_MAX_MEMBERS];
  unsigned char *out_data[RS_MAX_MEMBERS], *out_par[RS_MAX_MEMBERS];
  unsigned char raw_matrix[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
  unsigned char *raw_tbls;
  void *blocks[EC_MAX_BUFS];    /* what alloc_bytes allocated, to free */
  unsigned nblocks;
};

static double now_s(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static double median(double *v, int n)
{
  for (int i = 1; i < n; i++)
    for (int j = i; j > 0 && v[j - 1] > v[j]; j--) {
      double t = v[j];
      v[j] = v[j - 1];
      v[j - 1] = t;
    }
  return n % 2 ? v[n / 2] : (v[n / 2 - 1] + v[n / 2]) / 2;
}

/* Pseudo-random bytes; writing them also faults every page in. */
static void fill(unsigned char *p, size_t n, uint64_t seed)
{
  uint64_t x = seed * 0x9e3779b97f4a7c15ull | 1;
  size_t i = 0;

  for (; i + 8 <= n; i += 8) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    memcpy(p + i, &x, 8);
  }
  for (; i < n; i++)
    p[i] = (unsigned char)(x >> (8 * (i % 8)));
}

/* A buffer of n bytes at the start of a 2 MiB-aligned area, as the snapshot
 * store places its slot and parity areas. */
static unsigned char *alloc_bytes(struct ec_group *e, size_t n)
{
  void *p = NULL;

  if (e->nblocks == EC_MAX_BUFS || posix_memalign(&p, EC_AREA_ALIGN, n) != 0)
    return NULL;
  e->blocks[e->nblocks++] = p;
  return p;
}

static void group_free(struct ec_group *e)
{
  rs_coder_free(e->c);
  for (unsigned i = 0; i < e->g; i++)
    free(e->crcs[i]);
  for (unsigned b = 0; b < e->nblocks; b++)
    free(e->blocks[b]);
  free(e->raw_tbls);
}

static int group_init(struct ec_group *e, unsigned k, unsigned m, char *err,
                      size_t errlen)
{
  size_t sizes[RS_MAX_MEMBERS], S = k * EC_CHUNK;
  int rc;

  memset(e, 0, sizeof(*e));
  e->k = k;
  e->m = m;
  e->g = k + m;
  for (unsigned i = 0; i < e->g; i++)
    sizes[i] = S;
  rc = rs_layout_init(&e->l, k, m, sizes, e->g);
  if (rc == 0)
    rc = rs_coder_new(&e->c, k, m, &(struct rs_coder_opts){.threads = 1});
  if (rc < 0) {
    snprintf(err, errlen, "%s", rs_last_error());
    return rc;
  }
  for (unsigned i = 0; i < e->g; i++) {
    e->data[i] = alloc_bytes(e, S);
    e->par[i] = alloc_bytes(e, e->l.parity_bytes);
    e->crcs[i] = malloc(kern_nblocks(S) * sizeof(uint32_t));
    if (e->data[i] == NULL || e->par[i] == NULL || e->crcs[i] == NULL)
      goto out_nomem;
    fill(e->data[i], S, i + 1);
    memset(e->par[i], 0, e->l.parity_bytes);
    kern_crc_blocks(e->data[i], S, e->crcs[i]);
  }
  /* Decode outputs for the m lost members. */
  for (unsigned n = 0; n < m; n++) {
    e->out_data[n] = alloc_bytes(e, S);
    e->out_par[n] = alloc_bytes(e, e->l.parity_bytes);
    if (e->out_data[n] == NULL || e->out_par[n] == NULL)
      goto out_nomem;
    memset(e->out_data[n], 0, S);
    memset(e->out_par[n], 0, e->l.parity_bytes);
  }
  e->raw_tbls = malloc((size_t)32 * k * m);
  if (e->raw_tbls == NULL)
    goto out_nomem;
  gf_gen_cauchy1_matrix(e->raw_matrix, (int)e->g, (int)k);
  ec_init_tables((int)k, (int)m, &e->raw_matrix[k * k], e->raw_tbls);
  return 0;

out_nomem:
  snprintf(err, errlen, "ec bench: out of memory for a %u+%u group", k, m);
  return -ENOMEM;
}

/* The baseline: ec_encode_data on each stripe's chunks, nothing else. */
static void raw_encode(struct ec_group *e)
{
  unsigned char *src[RS_MAX_MEMBERS], *dst[RS_MAX_MEMBERS];

  for (unsigned j = 0; j < e->g; j++) {
    for (unsigned c = 0; c < e->k; c++)
      src[c] = e->data[(j + c) % e->g] + c * EC_CHUNK;
    for (unsigned r = 0; r < e->m; r++)
      dst[r] = e->par[(j + e->k + r) % e->g] + r * EC_CHUNK;
    ec_encode_data((int)EC_CHUNK, (int)e->k, (int)e->m, e->raw_tbls, src, dst);
  }
}

/* The group as a call sees it: lost members write into the spare buffers;
 * survivors' tables passed only when survivor_crcs. */
static void members_view(struct ec_group *e, uint32_t lost, bool survivor_crcs,
                         struct rs_member *mb)
{
  unsigned n = 0;

  for (unsigned i = 0; i < e->g; i++) {
    mb[i] = (struct rs_member){.data = e->data[i], .bytes = e->l.member_bytes[i],
                               .parity = e->par[i],
                               .crcs = survivor_crcs ? e->crcs[i] : NULL};
    if (lost & (1u << i)) {
      mb[i].crcs = e->crcs[i];
      mb[i].data = e->out_data[n];
      mb[i].parity = e->out_par[n];
      n++;
    }
  }
}

struct code_rates {
  double enc, dec, dec_all, raw;       /* GB/s */
  double enc_ratio, dec_ratio;         /* encode / raw, decode / encode */
  double dec_ratio_min, dec_ratio_max; /* decode / encode, per allocation */
};

/* One fresh allocation of the group: warm-up and check, then reps
 * interleaved repetitions of the four operations, their times in t_*[0..reps). */
static int allocation_run(unsigned k, unsigned m, int reps, double *t_raw,
                          double *t_enc, double *t_dec, double *t_all,
                          char *err, size_t errlen)
{
  struct ec_group e;
  struct rs_member mb[RS_MAX_MEMBERS];
  uint32_t lost = 0;
  int rc;

  rc = group_init(&e, k, m, err, errlen);
  if (rc < 0)
    goto out_free;
  for (unsigned n = 0; n < m; n++)
    lost |= 1u << (n * e.g / m);

  /* Warm-up (tables, caches, page faults) and a correctness check: the
   * rebuilt members must equal the originals. */
  raw_encode(&e);
  members_view(&e, 0, false, mb);
  rc = rs_group_encode(e.c, &e.l, mb);
  if (rc == 0) {
    members_view(&e, lost, true, mb);
    rc = rs_group_decode(e.c, &e.l, mb, lost, 0, NULL);
  }
  if (rc < 0) {
    snprintf(err, errlen, "ec bench %u+%u: %s", k, m, rs_last_error());
    goto out_free;
  }
  for (unsigned i = 0, n = 0; i < e.g; i++) {
    if (!(lost & (1u << i)))
      continue;
    if (memcmp(e.out_data[n], e.data[i], e.l.member_bytes[i]) != 0 ||
        memcmp(e.out_par[n], e.par[i], e.l.parity_bytes) != 0) {
      snprintf(err, errlen, "ec bench %u+%u: rebuilt member %u differs", k, m, i);
      rc = PT_ECHECKSUM;
      goto out_free;
    }
    n++;
  }

  for (int n = 0; n < reps; n++) {
    double t0 = now_s();
    raw_encode(&e);
    t_raw[n] = now_s() - t0;

    members_view(&e, 0, false, mb);
    t0 = now_s();
    rc = rs_group_encode(e.c, &e.l, mb);
    t_enc[n] = now_s() - t0;

    if (rc == 0) {
      members_view(&e, lost, false, mb);
      t0 = now_s();
      rc = rs_group_decode(e.c, &e.l, mb, lost, 0, NULL);
      t_dec[n] = now_s() - t0;
    }
    if (rc == 0) {
      members_view(&e, lost, true, mb);
      t0 = now_s();
      rc = rs_group_decode(e.c, &e.l, mb, lost, 0, NULL);
      t_all[n] = now_s() - t0;
    }
    if (rc < 0) {
      snprintf(err, errlen, "ec bench %u+%u: %s", k, m, rs_last_error());
      goto out_free;
    }
  }

out_free:
  group_free(&e);
  return rc;
}

/* Each allocation gives a median of each operation's times and the paired
 * ratios of those medians (same buffers, same pages). The results are the
 * medians of these over the allocations. */
static int code_run(unsigned k, unsigned m, int allocations, int reps,
                    bool verbose, struct code_rates *r, char *err, size_t errlen)
{
  double raw[EC_MAX_ALLOCS], enc[EC_MAX_ALLOCS], dec[EC_MAX_ALLOCS],
      all[EC_MAX_ALLOCS], enc_ratio[EC_MAX_ALLOCS], dec_ratio[EC_MAX_ALLOCS];
  double bytes = (double)(k + m) * k * EC_CHUNK;
  int rc;

  r->dec_ratio_min = INFINITY;
  r->dec_ratio_max = 0;
  for (int p = 0; p < allocations; p++) {
    double t_raw[EC_MAX_REPS], t_enc[EC_MAX_REPS], t_dec[EC_MAX_REPS],
        t_all[EC_MAX_REPS];

    rc = allocation_run(k, m, reps, t_raw, t_enc, t_dec, t_all, err, errlen);
    if (rc < 0)
      return rc;
    raw[p] = bytes / median(t_raw, reps) / 1e9;
    enc[p] = bytes / median(t_enc, reps) / 1e9;
    dec[p] = bytes / median(t_dec, reps) / 1e9;
    all[p] = bytes / median(t_all, reps) / 1e9;
    enc_ratio[p] = enc[p] / raw[p];
    dec_ratio[p] = dec[p] / enc[p];
    if (verbose)
      fprintf(stderr,
              "ptbench: ec %u+%u allocation %d/%d: raw %.2f, encode %.2f, "
              "decode %.2f, decode+verify all %.2f GB/s; decode/encode %.3f\n",
              k, m, p + 1, allocations, raw[p], enc[p], dec[p], all[p],
              dec_ratio[p]);
    if (dec_ratio[p] < r->dec_ratio_min)
      r->dec_ratio_min = dec_ratio[p];
    if (dec_ratio[p] > r->dec_ratio_max)
      r->dec_ratio_max = dec_ratio[p];
  }
  r->raw = median(raw, allocations);
  r->enc = median(enc, allocations);
  r->dec = median(dec, allocations);
  r->dec_all = median(all, allocations);
  r->enc_ratio = median(enc_ratio, allocations);
  r->dec_ratio = median(dec_ratio, allocations);
  return 0;
}

int bench_ec_run(struct bench_ec_result *out, bool quick, bool verbose)
{
  struct code_rates r42, r82;
  int allocations = quick ? 3 : 5, reps = quick ? 2 : 5, rc;

  if (out == NULL || allocations > EC_MAX_ALLOCS || reps > EC_MAX_REPS)
    return -EINVAL;
  memset(out, 0, sizeof(*out));
  out->chunk_bytes = EC_CHUNK;
  out->reps = reps;
  out->allocations = allocations;
  rc = code_run(4, 2, allocations, reps, verbose, &r42, out->error, sizeof(out->error));
  if (rc < 0)
    return rc;
  rc = code_run(8, 2, allocations, reps, verbose, &r82, out->error, sizeof(out->error));
  if (rc < 0)
    return rc;
  out->ec_encode_gbps = r42.enc;
  out->ec_decode_gbps = r42.dec;
  out->isal_raw_encode_gbps = r42.raw;
  out->ec_decode_verify_all_gbps = r42.dec_all;
  out->ec82_encode_gbps = r82.enc;
  out->ec82_decode_gbps = r82.dec;
  out->ec82_isal_raw_encode_gbps = r82.raw;
  out->ec82_decode_verify_all_gbps = r82.dec_all;
  out->ec_encode_ratio = r42.enc_ratio;
  out->ec_decode_ratio = r42.dec_ratio;
  out->ec82_encode_ratio = r82.enc_ratio;
  out->ec82_decode_ratio = r82.dec_ratio;
  out->ec_decode_ratio_min = r42.dec_ratio_min;
  out->ec_decode_ratio_max = r42.dec_ratio_max;
  out->ec82_decode_ratio_min = r82.dec_ratio_min;
  out->ec82_decode_ratio_max = r82.dec_ratio_max;
  return 0;
}
