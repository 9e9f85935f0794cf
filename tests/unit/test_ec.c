/*
 * test_ec.c — the erasure-coding library (ec/rs.h): layout, round trips for
 * every k + m from 2+1 to 10+4 and every erasure pattern (sampled beyond
 * G = 8), odd and unequal member sizes, incremental parity, bad arguments,
 * concurrency. Damage and too many losses: test_ec_damage.c; the code
 * against a textbook Reed–Solomon: test_ec_ref.c.
 *
 * Expected results never come from ISA-L alone: checksum tables come from
 * the fixture's own CRC32C, and rebuilt members are compared with the
 * originals.
 */
#include <check.h>
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "tests/unit/test_ec_fixture.h"
#include "tests/unit/unit.h"

/* ---- layout ------------------------------------------------------------------- */

START_TEST(test_layout_mapping)
{
  static const unsigned codes[][2] = {{1, 1}, {2, 1}, {4, 2}, {8, 2}, {10, 4},
                                      {3, 5}, {16, 16}, {31, 1}, {1, 31}};
  for (size_t n = 0; n < sizeof(codes) / sizeof(codes[0]); n++) {
    unsigned k = codes[n][0], m = codes[n][1], g = k + m;
    size_t sizes[RS_MAX_MEMBERS];
    struct rs_layout l;
    unsigned seen[RS_MAX_MEMBERS][RS_MAX_MEMBERS];
    size_t max = 0;

    for (unsigned i = 0; i < g; i++) {
      sizes[i] = 1000 * i + 7 * n + 1;
      if (sizes[i] > max)
        max = sizes[i];
    }
    ck_assert_int_eq(rs_layout_init(&l, k, m, sizes, g), 0);
    /* Padding: to the largest member, to a multiple of k*64. */
    ck_assert_uint_eq(l.chunk_bytes % RS_ALIGN, 0);
    ck_assert_uint_ge(l.chunk_bytes, RS_ALIGN);
    ck_assert_uint_eq(l.padded_bytes, k * l.chunk_bytes);
    ck_assert_uint_ge(l.padded_bytes, max);
    ck_assert_uint_lt(l.padded_bytes - max, (size_t)k * RS_ALIGN);
    ck_assert_uint_eq(l.parity_bytes, m * l.chunk_bytes);

    /* Every stripe: k data chunks from k distinct members, position q held by
     * member j+q; every member holds exactly one piece of every stripe. */
    memset(seen, 0, sizeof(seen));
    for (unsigned i = 0; i < g; i++) {
      size_t covered = 0;
      for (unsigned c = 0; c < k; c++) {
        unsigned j = rs_layout_chunk_stripe(&l, i, c);
        ck_assert_uint_eq(rs_layout_piece_member(&l, j, c), i);
        seen[j][c]++;
        covered += rs_layout_chunk_valid(&l, i, c);
      }
      ck_assert_uint_eq(covered, sizes[i]); /* every byte in exactly one chunk */
      for (unsigned r = 0; r < m; r++) {
        unsigned j = rs_layout_parity_stripe(&l, i, r);
        ck_assert_uint_eq(rs_layout_piece_member(&l, j, k + r), i);
        seen[j][k + r]++;
      }
    }
    for (unsigned j = 0; j < g; j++) {
      uint32_t members = 0;
      for (unsigned q = 0; q < g; q++) {
        ck_assert_uint_eq(seen[j][q], 1);
        members |= 1u << rs_layout_piece_member(&l, j, q);
      }
      ck_assert_uint_eq(__builtin_popcount(members), g);
      for (unsigned q = 0; q < k; q++) /* data from members j..j+k-1 */
        ck_assert_uint_eq(rs_layout_piece_member(&l, j, q), (j + q) % g);
    }
  }
}
END_TEST

START_TEST(test_layout_sends_and_parity)
{
  size_t sizes[7] = {5000, 100, 0, 4096, 4097, 1, 3000};
  struct rs_layout l;
  struct rs_send sends[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
  struct rs_parity_ref par[RS_MAX_MEMBERS];
  unsigned received[7][RS_MAX_MEMBERS];

  ck_assert_int_eq(rs_layout_init(&l, 4, 3, sizes, 7), 0);
  memset(received, 0, sizeof(received));
  for (unsigned i = 0; i < 7; i++) {
    ck_assert_int_eq(rs_layout_sends(&l, i, sends), 12);
    for (int n = 0; n < 12; n++) {
      struct rs_send *s = &sends[n];
      ck_assert_uint_eq(s->stripe, rs_layout_chunk_stripe(&l, i, s->chunk));
      ck_assert_uint_ne(s->to, i);
      ck_assert_uint_eq(rs_layout_parity_stripe(&l, s->to, s->parity_row),
                        s->stripe);
      ck_assert_uint_eq(s->offset, s->chunk * l.chunk_bytes);
      ck_assert_uint_eq(s->valid, rs_layout_chunk_valid(&l, i, s->chunk));
      received[s->to][s->parity_row]++;
    }
  }
  for (unsigned i = 0; i < 7; i++) {
    ck_assert_int_eq(rs_layout_parity(&l, i, par), 3);
    for (unsigned r = 0; r < 3; r++) {
      ck_assert_uint_eq(received[i][r], 4); /* k chunks for each kept row */
      ck_assert_uint_eq(par[r].offset, r * l.chunk_bytes);
      for (unsigned c = 0; c < 4; c++)
        ck_assert_uint_eq(rs_layout_chunk_stripe(&l, par[r].from[c], c),
                          par[r].stripe);
    }
  }
}
END_TEST

START_TEST(test_layout_plan)
{
  size_t sizes[6] = {640, 640, 640, 640, 640, 640};
  struct rs_layout l;
  static struct rs_plan p;

  ck_assert_int_eq(rs_layout_init(&l, 4, 2, sizes, 6), 0);
  for (uint32_t lost = 0; lost < 64; lost++) {
    int rc = rs_layout_plan(&l, lost, &p);
    if (__builtin_popcount(lost) > 2) {
      ck_assert_int_eq(rc, PT_ENOFRAG);
      continue;
    }
    ck_assert_int_eq(rc, 0);
    for (unsigned j = 0; j < 6; j++) {
      struct rs_stripe_plan *sp = &p.stripe[j];
      ck_assert_uint_eq(sp->nlost, __builtin_popcount(lost));
      ck_assert_uint_eq(sp->nsrc, lost ? 4 : 0);
      ck_assert_uint_eq(sp->src_mask & sp->lost_mask, 0);
      for (unsigned t = 0; t < sp->nsrc; t++) {
        ck_assert(!(lost & (1u << sp->src[t].member)));
        ck_assert_uint_eq(sp->src[t].member,
                          rs_layout_piece_member(&l, j, sp->src[t].pos));
        ck_assert_uint_eq(sp->src[t].is_parity, sp->src[t].pos >= 4);
      }
      for (unsigned t = 0; t < sp->nlost; t++)
        ck_assert(lost & (1u << sp->lost[t].member));
    }
  }
  ck_assert_int_eq(rs_layout_plan(&l, 1u << 6, &p), -EINVAL);
}
END_TEST

/* ---- round trips ------------------------------------------------------------------ */

/* Loop index -> code k+m, k = 2..10, m = 1..4. */
static void code_of(int n, unsigned *k, unsigned *m)
{
  *k = 2 + (unsigned)n / 4;
  *m = 1 + (unsigned)n % 4;
}

static const size_t odd_sizes[] = {1, 63, 65, 4096, 5003, 0, 191, 2049, 777, 64,
                                   128, 1500, 3333, 10007};

START_TEST(test_round_trip_all_codes)
{
  unsigned k, m, g;
  size_t sizes[RS_MAX_MEMBERS];
  struct fx f;
  unsigned patterns = 0;

  code_of(_i, &k, &m);
  g = k + m;
  for (unsigned i = 0; i < g; i++)
    sizes[i] = odd_sizes[(i + (unsigned)_i) % (sizeof(odd_sizes) / sizeof(size_t))];
  /* Small slices, so chunks span several; two threads every other code. */
  fx_init(&f, k, m, sizes, 1 + (unsigned)_i % 2, 256, (uint64_t)_i + 1);
  if (g <= 8) {
    for (uint32_t lost = 0; lost < (1u << g); lost++) {
      if ((unsigned)__builtin_popcount(lost) > m)
        continue;
      fx_round_trip(&f, lost);
      patterns++;
    }
  } else {
    uint64_t s = 12345 + (uint64_t)_i;
    for (unsigned i = 0; i < g; i++, patterns++)
      fx_round_trip(&f, 1u << i);
    for (unsigned n = 0; n < 40; n++, patterns++) {
      uint32_t lost = 0;
      unsigned want = 1 + (unsigned)(rng_next(&s) % m);
      while ((unsigned)__builtin_popcount(lost) < want)
        lost |= 1u << (rng_next(&s) % g);
      fx_round_trip(&f, lost);
    }
  }
  ck_assert_uint_gt(patterns, g);
  fx_free(&f);
}
END_TEST

START_TEST(test_round_trip_odd_sizes)
{
  /* All members 1, 63, 65 or 1 MiB + 1 bytes, then all different. */
  static const size_t same[] = {1, 63, 65, (1u << 20) + 1};
  size_t sizes[6];
  struct fx f;

  for (size_t n = 0; n < 4; n++) {
    for (unsigned i = 0; i < 6; i++)
      sizes[i] = same[n];
    fx_init(&f, 4, 2, sizes, 1, 0, 100 + n);
    for (uint32_t lost = 0; lost < 64; lost++)
      if (__builtin_popcount(lost) <= 2 && (n < 3 || __builtin_popcount(lost) == 2))
        fx_round_trip(&f, lost);
    fx_free(&f);
  }
  {
    size_t mixed[6] = {1, 63, 65, (1u << 20) + 1, 0, 3 * (1u << 20) + 17};
    fx_init(&f, 4, 2, mixed, 2, 0, 200);
    for (uint32_t lost = 1; lost < 64; lost++)
      if (__builtin_popcount(lost) == 2)
        fx_round_trip(&f, lost);
    fx_free(&f);
  }
}
END_TEST

START_TEST(test_round_trip_extremes)
{
  /* k = 1 (copies), k + m = 32 both ways, and a single-member layout. */
  static const unsigned codes[][2] = {{1, 1}, {1, 3}, {31, 1}, {16, 16}, {1, 31}};
  for (size_t n = 0; n < sizeof(codes) / sizeof(codes[0]); n++) {
    unsigned k = codes[n][0], m = codes[n][1], g = k + m;
    size_t sizes[RS_MAX_MEMBERS];
    struct fx f;
    uint64_t s = 99 + n;

    for (unsigned i = 0; i < g; i++)
      sizes[i] = odd_sizes[i % (sizeof(odd_sizes) / sizeof(size_t))];
    fx_init(&f, k, m, sizes, 1, 0, 300 + n);
    for (unsigned t = 0; t < 6; t++) {
      uint32_t lost = 0;
      unsigned want = t == 0 ? m : 1 + (unsigned)(rng_next(&s) % m);
      while ((unsigned)__builtin_popcount(lost) < want)
        lost |= 1u << (rng_next(&s) % g);
      fx_round_trip(&f, lost);
    }
    fx_free(&f);
  }
}
END_TEST

START_TEST(test_threads_large)
{
  /* 4 MiB-ish members on 3 threads with small slices: the parallel paths. */
  size_t sizes[6] = {4u << 20, (4u << 20) - 1, 3u << 20, 1, (4u << 20) + 65, 0};
  struct fx f;

  fx_init(&f, 4, 2, sizes, 3, 4096, 7);
  fx_round_trip(&f, 0x3);
  fx_round_trip(&f, 0x28);
  fx_round_trip(&f, 0x10);
  fx_free(&f);
}
END_TEST

/* ---- incremental parity ----------------------------------------------------------- */

static uint8_t *padded_chunk(const struct fx *f, unsigned i, unsigned c)
{
  uint8_t *p = xalloc(f->l.chunk_bytes);
  size_t v = rs_layout_chunk_valid(&f->l, i, c);
  memset(p, 0, f->l.chunk_bytes);
  if (v > 0)
    memcpy(p, f->data[i] + c * f->l.chunk_bytes, v);
  return p;
}

START_TEST(test_incremental_equals_whole)
{
  size_t sizes[7] = {10000, 9999, 1, 0, 8191, 6000, 12345};
  struct fx f;
  struct rs_parity_ref refs[RS_MAX_MEMBERS];
  uint64_t s = 77;

  fx_init(&f, 4, 3, sizes, 1, 1024, 5);
  /* Each keeper folds the k chunks of each row it keeps, in a random order,
   * one row at a time, as chunks would arrive from the network. */
  for (unsigned i = 0; i < f.g; i++) {
    uint8_t *par = xalloc(f.l.parity_bytes);
    memset(par, 0, f.l.parity_bytes);
    ck_assert_int_eq(rs_layout_parity(&f.l, i, refs), 3);
    for (unsigned r = 0; r < 3; r++) {
      unsigned order[4] = {0, 1, 2, 3};
      void *row = par + refs[r].offset;
      for (unsigned t = 3; t > 0; t--) {
        unsigned u = (unsigned)(rng_next(&s) % (t + 1)), x = order[t];
        order[t] = order[u];
        order[u] = x;
      }
      for (unsigned t = 0; t < 4; t++) {
        unsigned c = order[t];
        uint8_t *chunk = padded_chunk(&f, refs[r].from[c], c);
        ck_assert_int_eq(rs_stripe_update(f.c, f.l.chunk_bytes, c, chunk, r, 1,
                                          &row),
                         0);
        free(chunk);
      }
    }
    ck_assert_msg(memcmp(par, f.par[i], f.l.parity_bytes) == 0,
                  "member %u: incremental parity differs from whole-stripe", i);
    free(par);
  }
  /* All rows at once, and whole-stripe encode of the same stripe. */
  for (unsigned j = 0; j < f.g; j++) {
    uint8_t *chunks[4], *rows[3], *whole[3];
    void *rowp[3];
    for (unsigned c = 0; c < 4; c++)
      chunks[c] = padded_chunk(&f, rs_layout_piece_member(&f.l, j, c), c);
    for (unsigned r = 0; r < 3; r++) {
      rows[r] = xalloc(f.l.chunk_bytes);
      whole[r] = xalloc(f.l.chunk_bytes);
      memset(rows[r], 0, f.l.chunk_bytes);
      rowp[r] = rows[r];
    }
    for (unsigned c = 4; c-- > 0;)
      ck_assert_int_eq(rs_stripe_update(f.c, f.l.chunk_bytes, c, chunks[c], 0, 3,
                                        rowp),
                       0);
    ck_assert_int_eq(rs_stripe_encode(f.c, f.l.chunk_bytes,
                                      (const void *const *)chunks,
                                      (void *const *)whole),
                     0);
    for (unsigned r = 0; r < 3; r++) {
      unsigned keeper = rs_layout_piece_member(&f.l, j, 4 + r);
      ck_assert(memcmp(rows[r], whole[r], f.l.chunk_bytes) == 0);
      ck_assert(memcmp(rows[r], f.par[keeper] + r * f.l.chunk_bytes,
                       f.l.chunk_bytes) == 0);
      free(rows[r]);
      free(whole[r]);
    }
    for (unsigned c = 0; c < 4; c++)
      free(chunks[c]);
  }
  fx_free(&f);
}
END_TEST

START_TEST(test_encode_own_rows_only)
{
  /* A keeper computing only its own rows gets the same bytes. */
  size_t sizes[5] = {3000, 2000, 1000, 4000, 100};
  struct fx f;
  struct rs_member mb[5];

  fx_init(&f, 3, 2, sizes, 1, 0, 9);
  for (unsigned keeper = 0; keeper < 5; keeper++) {
    uint8_t *par = xalloc(f.l.parity_bytes);
    memset(par, 0x77, f.l.parity_bytes);
    for (unsigned i = 0; i < 5; i++)
      mb[i] = (struct rs_member){.data = f.data[i], .bytes = sizes[i],
                                 .parity = i == keeper ? par : NULL};
    ck_assert_int_eq(rs_group_encode(f.c, &f.l, mb), 0);
    ck_assert(memcmp(par, f.par[keeper], f.l.parity_bytes) == 0);
    free(par);
  }
  fx_free(&f);
}
END_TEST

/* ---- bad arguments ----------------------------------------------------------------- */

START_TEST(test_bad_arguments)
{
  size_t sizes[RS_MAX_MEMBERS + 1];
  struct rs_layout l;
  struct rs_coder *c = (struct rs_coder *)&l;
  struct rs_coder_opts o = {0};
  struct fx f;
  uint8_t buf[128];
  void *pp[3] = {buf, buf, NULL};

  for (unsigned i = 0; i <= RS_MAX_MEMBERS; i++)
    sizes[i] = 100;
  ck_assert_int_eq(rs_layout_init(&l, 0, 2, sizes, 2), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "k >= 1"));
  ck_assert_int_eq(rs_layout_init(&l, 2, 0, sizes, 2), -EINVAL);
  ck_assert_int_eq(rs_layout_init(&l, 20, 13, sizes, 33), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "20+13"));
  ck_assert_int_eq(rs_layout_init(&l, 4, 2, sizes, 5), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "5 member sizes"));
  ck_assert_int_eq(rs_layout_init(&l, 4, 2, NULL, 6), -EINVAL);
  ck_assert_int_eq(rs_layout_init(NULL, 4, 2, sizes, 6), -EINVAL);
  ck_assert_int_eq(rs_layout_init(&l, 16, 16, sizes, 32), 0);

  ck_assert_int_eq(rs_coder_new(&c, 0, 1, NULL), -EINVAL);
  ck_assert_ptr_null(c);
  ck_assert_int_eq(rs_coder_new(&c, 1, 0, NULL), -EINVAL);
  ck_assert_int_eq(rs_coder_new(&c, 30, 3, NULL), -EINVAL);
  ck_assert_int_eq(rs_coder_new(NULL, 4, 2, NULL), -EINVAL);
  o.slice_bytes = 100;
  ck_assert_int_eq(rs_coder_new(&c, 4, 2, &o), -EINVAL);
  o.slice_bytes = 2u << 20; /* more than a checksum block */
  ck_assert_int_eq(rs_coder_new(&c, 4, 2, &o), -EINVAL);
  o.slice_bytes = 0;
  o.threads = 1000;
  ck_assert_int_eq(rs_coder_new(&c, 4, 2, &o), -EINVAL);

  fx_init(&f, 2, 1, sizes, 1, 0, 61);
  /* Stripe level: lengths, NULL buffers, rows. */
  ck_assert_int_eq(rs_stripe_encode(f.c, 0, (const void *const *)pp, pp + 2), -EINVAL);
  ck_assert_int_eq(rs_stripe_encode(f.c, 100, (const void *const *)pp, pp + 2),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "multiple of 64"));
  ck_assert_int_eq(rs_stripe_encode(f.c, 64, (const void *const *)pp, pp + 2),
                   -EINVAL); /* parity row NULL */
  ck_assert_int_eq(rs_stripe_encode(f.c, 64, NULL, pp), -EINVAL);
  ck_assert_int_eq(rs_stripe_encode(NULL, 64, (const void *const *)pp, pp), -EINVAL);
  ck_assert_int_eq(rs_stripe_update(f.c, 64, 2, buf, 0, 1, pp), -EINVAL);
  ck_assert_int_eq(rs_stripe_update(f.c, 64, 0, buf, 0, 2, pp), -EINVAL);
  ck_assert_int_eq(rs_stripe_update(f.c, 64, 0, NULL, 0, 1, pp), -EINVAL);
  ck_assert_int_eq(rs_stripe_decode(f.c, 64, pp, 0x3, 0x1), -EINVAL); /* overlap */
  ck_assert_int_eq(rs_stripe_decode(f.c, 64, pp, 0x3, 0x4), -EINVAL); /* NULL */
  ck_assert_int_eq(rs_stripe_decode(f.c, 64, pp, 0x9, 0x0), -EINVAL); /* beyond G */

  /* Group level: sizes that disagree with the layout, NULL buffers, a lost
   * member without its checksum table, a mismatched coder. */
  fx_prepare(&f, 1u << 0);
  f.mb[1].bytes = 99;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "member 1 has 99 bytes"));
  ck_assert_int_eq(rs_group_encode(f.c, &f.l, f.mb), -EINVAL);
  f.mb[1].bytes = 100;
  f.mb[0].crcs = NULL;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, NULL), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "checksum table"));
  f.mb[0].crcs = f.crcs[0];
  f.mb[2].data = NULL;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, NULL), -EINVAL);
  ck_assert_int_eq(rs_group_encode(f.c, &f.l, f.mb), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "no data buffer"));
  f.mb[2].data = f.in_data[2];
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, NULL, 1u << 0, 0, NULL), -EINVAL);
  ck_assert_int_eq(rs_group_decode(f.c, NULL, f.mb, 1u << 0, 0, NULL), -EINVAL);
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 3, 0, NULL), -EINVAL);
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0x80, NULL), -EINVAL);
  ck_assert_int_eq(rs_layout_init(&l, 2, 2, sizes, 4), 0);
  ck_assert_int_eq(rs_group_encode(f.c, &l, f.mb), -EINVAL);
  ck_assert_ptr_nonnull(strstr(rs_last_error(), "does not match"));
  /* And the good call still works. */
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, NULL), 0);
  fx_free(&f);
  rs_coder_free(NULL);
}
END_TEST

START_TEST(test_stripe_every_pattern_10_4)
{
  /* Every erasure pattern of 10+4 (1,470 of them, more than the coder's
   * table cache keeps, so the uncached path runs too), at stripe level. */
  enum { K = 10, M = 4, G = 14, LEN = 128 };
  uint8_t *pieces[G], *work[G];
  struct rs_coder *c;
  unsigned patterns = 0;

  for (unsigned q = 0; q < G; q++) {
    pieces[q] = xalloc(LEN);
    work[q] = xalloc(LEN);
    if (q < K)
      fill_random(pieces[q], LEN, 500 + q);
  }
  ck_assert_int_eq(rs_coder_new(&c, K, M, NULL), 0);
  ck_assert_int_eq(rs_stripe_encode(c, LEN, (const void *const *)pieces,
                                    (void *const *)(pieces + K)),
                   0);
  for (uint32_t lost = 1; lost < (1u << G); lost++) {
    if (__builtin_popcount(lost) > M)
      continue;
    for (unsigned q = 0; q < G; q++) {
      if (lost & (1u << q))
        memset(work[q], 0x3C, LEN);
      else
        memcpy(work[q], pieces[q], LEN);
    }
    ck_assert_int_eq(rs_stripe_decode(c, LEN, (void *const *)work,
                                      ~lost & ((1u << G) - 1), lost),
                     0);
    for (unsigned q = 0; q < G; q++)
      ck_assert_msg(memcmp(work[q], pieces[q], LEN) == 0,
                    "pattern 0x%x: piece %u differs", lost, q);
    patterns++;
  }
  ck_assert_uint_eq(patterns, 14 + 91 + 364 + 1001);
  rs_coder_free(c);
  for (unsigned q = 0; q < G; q++) {
    free(pieces[q]);
    free(work[q]);
  }
}
END_TEST

/* ---- repair pipelining's terms ------------------------------------------------ */

START_TEST(test_pipelined_terms)
{
  /* A lost piece is the sum of its k sources, each times its coefficient,
   * added up in any order (a chain of survivors): for every lost position
   * of several codes, from the k lowest survivors and from the k highest. */
  static const unsigned codes[][2] = {{2, 1}, {3, 2}, {4, 2}, {8, 2}, {10, 4}};
  enum { LEN = 192 };
  uint64_t rng = 77;

  for (size_t n = 0; n < sizeof(codes) / sizeof(codes[0]); n++) {
    unsigned k = codes[n][0], m = codes[n][1], g = k + m;
    uint8_t *pieces[RS_MAX_MEMBERS];
    struct rs_coder *c;
    ck_assert_int_eq(rs_coder_new(&c, k, m, NULL), 0);
    for (unsigned q = 0; q < g; q++) {
      pieces[q] = xalloc(LEN);
      if (q < k)
        fill_random(pieces[q], LEN, 900 + 31 * n + q);
    }
    ck_assert_int_eq(rs_stripe_encode(c, LEN, (const void *const *)pieces,
                                      (void *const *)(pieces + k)), 0);
    uint8_t *acc = xalloc(LEN);
    for (unsigned want = 0; want < g; want++) {
      for (int high = 0; high < 2; high++) {
        uint32_t src = 0;
        for (unsigned t = 0; t < g && (unsigned)__builtin_popcount(src) < k; t++) {
          unsigned q = high ? g - 1 - t : t;
          if (q != want)
            src |= 1u << q;
        }
        uint8_t coefs[RS_MAX_MEMBERS];
        ck_assert_int_eq(rs_decode_coefs(c, src, want, coefs), 0);
        unsigned pos[RS_MAX_MEMBERS], np = 0;
        for (unsigned q = 0; q < g; q++)
          if (src & (1u << q))
            pos[np++] = q;
        /* a chain in a shuffled order */
        unsigned order[RS_MAX_MEMBERS];
        for (unsigned j = 0; j < k; j++)
          order[j] = j;
        for (unsigned j = k; j > 1; j--) {
          rng = rng * 6364136223846793005ull + 1442695040888963407ull;
          unsigned x = (unsigned)(rng >> 33) % j, t = order[j - 1];
          order[j - 1] = order[x];
          order[x] = t;
        }
        memset(acc, 0xEE, LEN);
        for (unsigned j = 0; j < k; j++)
          rs_scale_fold(LEN, coefs[order[j]], pieces[pos[order[j]]], acc, j == 0);
        ck_assert_msg(memcmp(acc, pieces[want], LEN) == 0,
                      "%u+%u: piece %u from 0x%x differs", k, m, want, src);
      }
      /* refused: the wanted among the sources, too few sources */
      uint8_t coefs[RS_MAX_MEMBERS];
      uint32_t lowk = (1u << k) - 1;
      ck_assert_int_eq(rs_decode_coefs(c, lowk, want < k ? want : 0, coefs), -EINVAL);
      ck_assert_int_eq(rs_decode_coefs(c, lowk >> 1, g - 1, coefs), -EINVAL);
    }
    free(acc);
    for (unsigned q = 0; q < g; q++)
      free(pieces[q]);
    rs_coder_free(c);
  }

  /* Any length: each byte is acc ^ coef * in (first: coef * in), against
   * ISA-L's scalar gf_mul, around every vector width's edges. */
  static const size_t lens[] = {1, 15, 16, 17, 31, 32, 33, 63, 64, 65, 100, 1000, 4097};
  uint8_t *in = xalloc(5000), *a = xalloc(5000), *b = xalloc(5000);
  for (size_t n = 0; n < sizeof(lens) / sizeof(lens[0]); n++)
    for (int first = 0; first < 2; first++) {
      size_t len = lens[n];
      uint8_t coef = (uint8_t)(0x1d + 37 * n + first);
      fill_random(in, 5000, 40 + n);
      fill_random(a, 5000, 80 + n);
      memcpy(b, a, 5000);
      rs_scale_fold(len, coef, in, a, first);
      for (size_t x = 0; x < len; x++) {
        uint8_t want = (uint8_t)((first ? 0 : b[x]) ^ gf_mul(coef, in[x]));
        ck_assert_msg(a[x] == want, "len %zu first %d: byte %zu is %u, not %u", len,
                      first, x, a[x], want);
      }
      ck_assert_msg(memcmp(a + len, b + len, 5000 - len) == 0,
                    "len %zu: bytes past it written", len);
    }
  free(in);
  free(a);
  free(b);
}
END_TEST

/* ---- concurrency ---------------------------------------------------------------------- */

struct conc_arg {
  struct fx *f;
  unsigned id;
  int failures;
};

static void *conc_main(void *p)
{
  struct conc_arg *a = p;
  struct fx *f = a->f;
  struct rs_member mb[RS_MAX_MEMBERS];
  uint8_t *out[RS_MAX_MEMBERS] = {0};

  /* Each thread rebuilds its own pair of members into its own buffers, many
   * times, sharing the coder (and so its table cache). */
  for (unsigned round = 0; round < 20; round++) {
    uint32_t lost = (1u << ((a->id + round) % f->g)) |
                    (1u << ((a->id + round + 1 + round % 3) % f->g));
    for (unsigned i = 0; i < f->g; i++) {
      size_t s = f->l.member_bytes[i];
      mb[i] = (struct rs_member){.data = f->data[i], .bytes = s,
                                 .parity = f->par[i], .crcs = f->crcs[i]};
      if (lost & (1u << i)) {
        free(out[i]);
        out[i] = malloc(s + f->l.parity_bytes);
        mb[i].data = out[i];
        mb[i].parity = out[i] + s;
      }
    }
    if (rs_group_decode(f->c, &f->l, mb, lost, 0, NULL) != 0) {
      a->failures++;
      continue;
    }
    for (unsigned i = 0; i < f->g; i++)
      if ((lost & (1u << i)) &&
          (memcmp(out[i], f->data[i], f->l.member_bytes[i]) != 0 ||
           memcmp(out[i] + f->l.member_bytes[i], f->par[i], f->l.parity_bytes) != 0))
        a->failures++;
  }
  for (unsigned i = 0; i < f->g; i++)
    free(out[i]);
  return NULL;
}

START_TEST(test_concurrent_decodes)
{
  size_t sizes[8] = {20000, 19999, 1, 30000, 20000, 64, 12345, 8000};
  struct fx f;
  pthread_t t[4];
  struct conc_arg a[4];

  fx_init(&f, 5, 3, sizes, 2, 1024, 71);
  for (unsigned n = 0; n < 4; n++) {
    a[n] = (struct conc_arg){.f = &f, .id = n};
    ck_assert_int_eq(pthread_create(&t[n], NULL, conc_main, &a[n]), 0);
  }
  for (unsigned n = 0; n < 4; n++) {
    pthread_join(t[n], NULL);
    ck_assert_int_eq(a[n].failures, 0);
  }
  fx_free(&f);
}
END_TEST

static Suite *ec_suite(void)
{
  Suite *s = suite_create("ec");
  TCase *tc;

  crc_init();
  tc = tcase_create("layout");
  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, test_layout_mapping);
  tcase_add_test(tc, test_layout_sends_and_parity);
  tcase_add_test(tc, test_layout_plan);
  suite_add_tcase(s, tc);

  tc = tcase_create("round_trip");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_round_trip_all_codes, 0, 36); /* 2+1 .. 10+4 */
  tcase_add_test(tc, test_round_trip_odd_sizes);
  tcase_add_test(tc, test_round_trip_extremes);
  tcase_add_test(tc, test_threads_large);
  tcase_add_test(tc, test_stripe_every_pattern_10_4);
  suite_add_tcase(s, tc);

  tc = tcase_create("incremental");
  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, test_incremental_equals_whole);
  tcase_add_test(tc, test_encode_own_rows_only);
  tcase_add_test(tc, test_pipelined_terms);
  suite_add_tcase(s, tc);

  tc = tcase_create("api");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_bad_arguments);
  tcase_add_test(tc, test_concurrent_decodes);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(ec_suite());
}
