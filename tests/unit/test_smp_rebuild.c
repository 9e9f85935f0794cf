/*
 * test_smp_rebuild.c — the rebuild state machine (daemon/smp/smp_rebuild.h)
 * against a coding group held in memory: for every member of 2+1 and 4+2
 * groups with members of different sizes (an empty one, ones shorter than
 * a chunk, none a multiple of 64), the machine's fetches are served from
 * the survivors' data and the parity rs_group_encode computed, in a
 * seeded random order with small slices and several in flight, and the
 * rebuilt bytes must equal the lost member's own, with the replacement
 * having received about k times its size; with repair pipelining (one
 * coded fetch per slice, answered as the chain of survivors would) about
 * once, and exact again when pipelining is given up half-way. A fetch
 * that never went out, one already in, and one of the wrong length are
 * refused.
 */
#include <check.h>
#include <errno.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "daemon/smp/smp_rebuild.h"
#include "tests/unit/test_ec_fixture.h"
#include "tests/unit/unit.h"

/* Piece (member, what, index) of the group in f: its bytes and how many
 * of them are valid. */
static const uint8_t *piece(const struct fx *f, uint32_t member, uint32_t what,
                            uint32_t index, uint64_t *end)
{
  const struct rs_layout *l = &f->l;
  if (what == 0) {
    *end = rs_layout_chunk_valid(l, member, index);
    return f->data[member] + (size_t)index * l->chunk_bytes;
  }
  *end = l->chunk_bytes;
  return f->par[member] + (size_t)index * l->chunk_bytes;
}

/* One survivor's term of a pipelined fetch, added into acc (len bytes). */
static void term(const struct fx *f, uint32_t member, uint32_t what, uint32_t index,
                 uint8_t coef, uint64_t off, uint64_t len, uint8_t *acc)
{
  uint64_t end;
  const uint8_t *src = piece(f, member, what, index, &end);
  uint64_t n = off >= end ? 0 : end - off < len ? end - off : len;
  rs_scale_fold((size_t)n, coef, src + off, acc, 0);
}

/* The reply to one fetch, from the group in f: OUT dst, returns its bytes.
 * A pipelined one is answered as the chain of survivors would: the sum of
 * every hop's term, length bytes. */
static uint64_t serve(const struct fx *f, const struct smp_rebuild_fetch *q)
{
  if (q->coded) {
    memset(q->dst, 0, (size_t)q->length);
    term(f, q->member, q->what, q->index, q->coef, q->offset, q->length, q->dst);
    for (unsigned h = 0; h < q->nhops; h++)
      term(f, q->hop[h].member, q->hop[h].what, q->hop[h].index, q->hop[h].coef,
           q->offset, q->length, q->dst);
    return q->length;
  }
  uint64_t end;
  const uint8_t *src = piece(f, q->member, q->what, q->index, &end);
  uint64_t n = q->offset >= end ? 0 : end - q->offset < q->length ? end - q->offset
                                                                  : q->length;
  memcpy(q->dst, src + q->offset, (size_t)n);
  memset((uint8_t *)q->dst + n, 0xCC, (size_t)(q->length - n)); /* garbage past */
  return n;
}

/* A coded fetch names k distinct sources, none the lost member. */
static void check_chain(const struct smp_rebuild_fetch *q, unsigned k, unsigned lost)
{
  uint32_t seen = 1u << q->member;
  ck_assert_uint_eq(q->nhops, k - 1);
  ck_assert_uint_eq(q->expect, q->length);
  for (unsigned h = 0; h < q->nhops; h++) {
    ck_assert_uint_ne(q->hop[h].member, lost);
    ck_assert_msg(!(seen & (1u << q->hop[h].member)), "member %u twice in a chain",
                  q->hop[h].member);
    seen |= 1u << q->hop[h].member;
  }
}

/* chain: pipelined fetches; flip_at > 0: pipelining turned off after
 * that many replies (a chain failed), the coded fetches out dropped. */
static void run_mode(unsigned k, unsigned m, const size_t *sizes, uint64_t seed,
                     bool chain, unsigned flip_at)
{
  struct fx f;
  fx_init(&f, k, m, sizes, 1, 0, seed);
  uint64_t rng = seed * 7919 + 3;
  for (unsigned lost = 0; lost < k + m; lost++) {
    size_t s = sizes[lost];
    uint8_t *dst = xalloc(s > 0 ? s : 1);
    memset(dst, 0xA5, s > 0 ? s : 1);
    struct smp_rebuild *rb;
    char err[256] = "";
    ck_assert_msg(smp_rebuild_new(&rb, k, m, sizes, lost, dst, 1024, 3, err,
                                  sizeof(err)) == 0, "%s", err);
    ck_assert_int_eq(smp_rebuild_set_chain(rb, chain), 0);
    struct smp_rebuild_fetch pend[256];
    unsigned np = 0, guard = 0, served = 0, coded = 0;
    bool flipped = false;
    while (!smp_rebuild_done(rb)) {
      ck_assert_uint_lt(guard++, 1000000);
      if (flip_at > 0 && served == flip_at && !flipped) {
        flipped = true;
        ck_assert_int_eq(smp_rebuild_set_chain(rb, false), 0);
        ck_assert(!smp_rebuild_chained(rb));
        unsigned w = 0;
        for (unsigned j = 0; j < np; j++)
          if (smp_rebuild_wants(rb, pend[j].id))
            pend[w++] = pend[j];
          else /* a late reply to a dropped fetch is refused */
            ck_assert_int_eq(smp_rebuild_got(rb, pend[j].id, pend[j].expect), PT_EPROTO);
        np = w;
        for (unsigned j = 0; j < np; j++)
          ck_assert(!pend[j].coded);
      }
      np += smp_rebuild_next(rb, pend + np, 256 - np);
      ck_assert_msg(np > 0, "%u+%u lost %u: not done and nothing to fetch", k, m, lost);
      unsigned j = (unsigned)(rng_next(&rng) % np);
      struct smp_rebuild_fetch q = pend[j];
      pend[j] = pend[--np];
      ck_assert_uint_ne(q.member, lost); /* never from the lost member */
      ck_assert(q.coded == (chain && !flipped));
      if (q.coded) {
        check_chain(&q, k, lost);
        coded++;
      }
      served++;
      uint64_t n = serve(&f, &q);
      ck_assert_uint_eq(n, q.expect);
      if (rng_next(&rng) % 7 == 0) /* the wrong length: refused */
        ck_assert_int_eq(smp_rebuild_got(rb, q.id, n + 1), PT_EPROTO);
      int rc = smp_rebuild_got(rb, q.id, n);
      ck_assert_msg(rc == 0, "%s", smp_rebuild_error(rb));
      ck_assert_int_eq(smp_rebuild_got(rb, q.id, n), PT_EPROTO); /* twice */
    }
    ck_assert_uint_eq(np, 0);
    ck_assert_msg(s == 0 || memcmp(dst, f.data[lost], s) == 0,
                  "%u+%u: member %u rebuilt wrong", k, m, lost);
    uint64_t fetched, rebuilt;
    smp_rebuild_progress(rb, &fetched, &rebuilt);
    ck_assert_uint_eq(rebuilt, s);
    /* k pieces per rebuilt byte, at most (data pieces past their own
     * valid bytes are not sent); pipelined, one (each chunk's tail
     * rounded up to 64 bytes) */
    ck_assert_uint_le(fetched, (uint64_t)k * ((s + 63) / 64 * 64));
    if (chain && flip_at == 0) {
      ck_assert_uint_le(fetched, s + 64u * k);
      ck_assert_uint_eq(coded > 0, s > 0);
    }
    if (chain && flip_at > 0 && s > 20000)
      ck_assert(flipped && coded > 0);
    ck_assert_int_eq(smp_rebuild_got(rb, 999999, 0), PT_EPROTO);
    smp_rebuild_free(rb);
    free(dst);
  }
  fx_free(&f);
}

static void run(unsigned k, unsigned m, const size_t *sizes, uint64_t seed)
{
  run_mode(k, m, sizes, seed, false, 0);
}

START_TEST(rebuild_2_1)
{
  const size_t sizes[] = {300001, 299937, 150007};
  for (uint64_t seed = 1; seed <= 3; seed++)
    run(2, 1, sizes, seed);
}
END_TEST

START_TEST(rebuild_4_2)
{
  const size_t sizes[] = {(1u << 20) + 4099, 0, 1000, 77777, (1u << 18) + 5, 65};
  for (uint64_t seed = 1; seed <= 2; seed++)
    run(4, 2, sizes, seed);
}
END_TEST

/* Repair pipelining: the same rebuilds with one coded fetch per slice,
 * about one byte received per byte rebuilt; and with pipelining given up
 * half-way (a chain failed), the rest piece by piece, still exact. */
START_TEST(rebuild_chained)
{
  const size_t s21[] = {300001, 299937, 150007};
  const size_t s42[] = {(1u << 20) + 4099, 0, 1000, 77777, (1u << 18) + 5, 65};
  const size_t s32[] = {200003, 199999, 64, 131072, 7};
  for (uint64_t seed = 1; seed <= 2; seed++) {
    run_mode(2, 1, s21, seed, true, 0);
    run_mode(4, 2, s42, seed, true, 0);
    run_mode(3, 2, s32, seed, true, 0);
    run_mode(2, 1, s21, seed, true, 20);
    run_mode(4, 2, s42, seed, true, 40);
  }
  /* 1+m has nothing to chain: pieces as before */
  const size_t s11[] = {5000, 4000};
  run_mode(1, 1, s11, 1, false, 0);
  struct smp_rebuild *rb;
  uint8_t d[5000];
  ck_assert_int_eq(smp_rebuild_new(&rb, 1, 1, s11, 0, d, 0, 0, NULL, 0), 0);
  ck_assert_int_eq(smp_rebuild_set_chain(rb, true), 0);
  ck_assert(!smp_rebuild_chained(rb));
  smp_rebuild_free(rb);
}
END_TEST

START_TEST(refusals)
{
  const size_t sizes[] = {4096, 4096, 4096};
  struct smp_rebuild *rb;
  uint8_t dst[4096];
  ck_assert_int_eq(smp_rebuild_new(&rb, 2, 1, sizes, 3, dst, 0, 0, NULL, 0), -EINVAL);
  ck_assert_int_eq(smp_rebuild_new(&rb, 2, 1, sizes, 0, dst, 100, 0, NULL, 0), -EINVAL);
  ck_assert_int_eq(smp_rebuild_new(&rb, 2, 1, sizes, 0, dst, 0, 0, NULL, 0), 0);
  ck_assert(!smp_rebuild_done(rb));
  struct smp_rebuild_fetch q[8];
  ck_assert_uint_eq(smp_rebuild_next(rb, q, 1), 0); /* room for fewer than k */
  ck_assert_uint_eq(smp_rebuild_next(rb, q, 8), 4);  /* 2 chunks x 2 sources */
  ck_assert_uint_eq(smp_rebuild_next(rb, q, 8), 0);  /* all issued */
  smp_rebuild_free(rb);
}
END_TEST

/* 4+2, each member `lost` rebuilt while a survivor it fetches from is
 * erased mid-way (lost + erased = 2, the code's m): the fetches of the
 * slices that used it are dropped and asked again of others, nothing is
 * asked of the erased member any more, and the bytes still come out
 * right; one more erase is PT_ENOFRAG. 2+1 has no spare survivor: any
 * erase is PT_ENOFRAG. */
START_TEST(erase_source)
{
  const size_t sizes[] = {(1u << 18) + 4099, 200003, 1000, 77777, (1u << 18) + 5, 65};
  struct fx f;
  fx_init(&f, 4, 2, sizes, 1, 0, 11);
  for (unsigned lost = 0; lost < 6; lost++) {
    size_t s = sizes[lost];
    uint8_t *dst = xalloc(s);
    memset(dst, 0xA5, s);
    struct smp_rebuild *rb;
    char err[256] = "";
    ck_assert_msg(smp_rebuild_new(&rb, 4, 2, sizes, lost, dst, 4096, 2, err,
                                  sizeof(err)) == 0, "%s", err);
    struct smp_rebuild_fetch pend[256];
    unsigned np = 0, served = 0, guard = 0;
    int erased = -1;
    uint64_t rng = 77 + lost;
    while (!smp_rebuild_done(rb)) {
      ck_assert_uint_lt(guard++, 1000000);
      np += smp_rebuild_next(rb, pend + np, 256 - np);
      ck_assert_uint_gt(np, 0);
      if (erased < 0 && served == (s > 20000 ? 5u : 1u)) {
        /* the member asked first that is not the lost one */
        erased = (int)pend[0].member;
        ck_assert_int_eq(smp_rebuild_erase(rb, (unsigned)erased), 0);
        ck_assert_uint_eq(smp_rebuild_erased(rb), 1u << erased);
        unsigned w = 0;
        for (unsigned j = 0; j < np; j++)
          if (smp_rebuild_wants(rb, pend[j].id))
            pend[w++] = pend[j];
        ck_assert_uint_lt(w, np); /* the erased member's slice, at least */
        np = w;
        /* one more member is beyond the code: 1 lost + 2 erased > m */
        unsigned other = 0;
        while (other == lost || other == (unsigned)erased)
          other++;
        struct smp_rebuild *probe = NULL;
        ck_assert_int_eq(smp_rebuild_new(&probe, 4, 2, sizes, lost, dst, 4096, 2,
                                         NULL, 0), 0);
        ck_assert_int_eq(smp_rebuild_erase(probe, (unsigned)erased), 0);
        ck_assert_int_eq(smp_rebuild_erase(probe, other), PT_ENOFRAG);
        ck_assert_int_eq(smp_rebuild_erase(probe, lost), -EINVAL);
        smp_rebuild_free(probe);
        continue;
      }
      unsigned j = (unsigned)(rng_next(&rng) % np);
      struct smp_rebuild_fetch q = pend[j];
      pend[j] = pend[--np];
      ck_assert_uint_ne(q.member, lost);
      if (erased >= 0)
        ck_assert_uint_ne(q.member, (unsigned)erased);
      uint64_t n = serve(&f, &q);
      int rc = smp_rebuild_got(rb, q.id, n);
      ck_assert_msg(rc == 0, "%s", smp_rebuild_error(rb));
      served++;
    }
    ck_assert_int_ge(erased, 0);
    ck_assert_msg(memcmp(dst, f.data[lost], s) == 0, "4+2: member %u rebuilt wrong "
                  "after member %d was erased", lost, erased);
    smp_rebuild_free(rb);
    free(dst);
  }
  fx_free(&f);

  const size_t small[] = {4096, 4096, 4096};
  uint8_t d[4096];
  struct smp_rebuild *rb;
  ck_assert_int_eq(smp_rebuild_new(&rb, 2, 1, small, 0, d, 0, 0, NULL, 0), 0);
  ck_assert_int_eq(smp_rebuild_erase(rb, 1), PT_ENOFRAG);
  ck_assert_uint_eq(smp_rebuild_erased(rb), 0);
  ck_assert_int_eq(smp_rebuild_erase(rb, 3), -EINVAL);
  smp_rebuild_free(rb);
}
END_TEST

int main(void)
{
  crc_init();
  Suite *s = suite_create("smp_rebuild");
  TCase *tc = tcase_create("core");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, rebuild_2_1);
  tcase_add_test(tc, rebuild_4_2);
  tcase_add_test(tc, rebuild_chained);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, erase_source);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
