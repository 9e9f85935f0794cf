/*
 * test_smp_rebuild.c — the rebuild state machine (daemon/smp/smp_rebuild.h)
 * against a coding group held in memory: for every member of 2+1 and 4+2
 * groups with members of different sizes (an empty one, ones shorter than
 * a chunk, none a multiple of 64), the machine's fetches are served from
 * the survivors' data and the parity rs_group_encode computed, in a
 * seeded random order with small slices and several in flight, and the
 * rebuilt bytes must equal the lost member's own, with the replacement
 * having received about k times its size (no repair pipelining). A fetch
 * that never went out, one already in, and one of the wrong length are
 * refused.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "daemon/smp/smp_rebuild.h"
#include "tests/unit/test_ec_fixture.h"
#include "tests/unit/unit.h"

/* The reply to one fetch, from the group in f: OUT dst, returns its bytes. */
static uint64_t serve(const struct fx *f, const struct smp_rebuild_fetch *q)
{
  const struct rs_layout *l = &f->l;
  const uint8_t *src;
  uint64_t end;
  if (q->what == 0) {
    src = f->data[q->member] + (size_t)q->index * l->chunk_bytes;
    end = rs_layout_chunk_valid(l, q->member, q->index);
  } else {
    src = f->par[q->member] + (size_t)q->index * l->chunk_bytes;
    end = l->chunk_bytes;
  }
  uint64_t n = q->offset >= end ? 0 : end - q->offset < q->length ? end - q->offset
                                                                  : q->length;
  memcpy(q->dst, src + q->offset, (size_t)n);
  memset((uint8_t *)q->dst + n, 0xCC, (size_t)(q->length - n)); /* garbage past */
  return n;
}

static void run(unsigned k, unsigned m, const size_t *sizes, uint64_t seed)
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
    struct smp_rebuild_fetch pend[256];
    unsigned np = 0, guard = 0;
    while (!smp_rebuild_done(rb)) {
      ck_assert_uint_lt(guard++, 1000000);
      np += smp_rebuild_next(rb, pend + np, 256 - np);
      ck_assert_msg(np > 0, "%u+%u lost %u: not done and nothing to fetch", k, m, lost);
      unsigned j = (unsigned)(rng_next(&rng) % np);
      struct smp_rebuild_fetch q = pend[j];
      pend[j] = pend[--np];
      ck_assert_uint_ne(q.member, lost); /* never from the lost member */
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
     * valid bytes are not sent) */
    ck_assert_uint_le(fetched, (uint64_t)k * ((s + 63) / 64 * 64));
    ck_assert_int_eq(smp_rebuild_got(rb, 999999, 0), PT_EPROTO);
    smp_rebuild_free(rb);
    free(dst);
  }
  fx_free(&f);
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
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, erase_source);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
