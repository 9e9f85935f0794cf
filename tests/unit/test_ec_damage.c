/*
 * test_ec_damage.c — rs_group_decode() facing more than it can rebuild:
 * more than m members lost (PT_ENOFRAG, nothing written), survivors with
 * flipped bits in their data (caught by their own checksum tables, rebuilt
 * from other survivors, optionally repaired) and in their parity (caught in
 * the rebuilt data, other combinations tried), and damage with no spare
 * piece left (PT_ECHECKSUM).
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include "tests/unit/test_ec_fixture.h"
#include "tests/unit/unit.h"

/* ---- too many losses ----------------------------------------------------------------- */

START_TEST(test_too_many_lost)
{
  size_t sizes[6] = {4000, 4000, 4000, 4000, 4000, 4000};
  struct fx f;
  struct rs_plan *p = malloc(sizeof(*p));
  uint8_t before[4000];

  ck_assert_ptr_nonnull(p);
  fx_init(&f, 4, 2, sizes, 1, 0, 11);
  for (uint32_t lost = 0; lost < 64; lost++) {
    if (__builtin_popcount(lost) != 3)
      continue;
    fx_prepare(&f, lost);
    memcpy(before, f.out_data[__builtin_ctz(lost)], sizeof(before));
    ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, lost, 0, NULL), PT_ENOFRAG);
    ck_assert_ptr_nonnull(strstr(rs_last_error(), "3 members lost"));
    /* Nothing was written: no garbage handed out as data. */
    ck_assert(memcmp(before, f.out_data[__builtin_ctz(lost)], sizeof(before)) == 0);
    ck_assert_int_eq(rs_layout_plan(&f.l, lost, p), PT_ENOFRAG);
  }
  /* Two lost plus a survivor's parity unavailable: some stripe is short. */
  fx_prepare(&f, 0x3);
  f.mb[2].parity = NULL;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 0x3, 0, NULL), PT_ENOFRAG);
  /* Stripe level: fewer than k pieces available. */
  {
    uint8_t *pc[6];
    for (unsigned q = 0; q < 6; q++)
      pc[q] = xalloc(f.l.chunk_bytes);
    ck_assert_int_eq(rs_stripe_decode(f.c, f.l.chunk_bytes, (void *const *)pc,
                                      0x7, 0x38),
                     PT_ENOFRAG);
    for (unsigned q = 0; q < 6; q++)
      free(pc[q]);
  }
  free(p);
  fx_free(&f);
}
END_TEST

/* ---- damaged survivors ------------------------------------------------------------- */

START_TEST(test_survivor_data_flipped)
{
  /* 4+2, member 1 lost, a bit of survivor 3's data flipped: its own table
   * flags it, its chunk is treated as an erasure, the rebuild uses another
   * survivor, and RS_DECODE_REPAIR fixes the survivor. */
  size_t sizes[6] = {300000, 300000, 299999, 250000, 300000, 12345};
  struct fx f;
  struct rs_decode_report rep;
  int rc;

  fx_init(&f, 4, 2, sizes, 1, 8192, 21);
  fx_prepare(&f, 1u << 1);
  f.in_data[3][123457] ^= 0x10;
  rc = rs_group_decode(f.c, &f.l, f.mb, 1u << 1, RS_DECODE_REPAIR, &rep);
  ck_assert_msg(rc == 0, "%s", rs_last_error());
  ck_assert_uint_eq(rep.corrupt_members, 1u << 3);
  ck_assert_uint_eq(rep.repaired_members, 1u << 3);
  fx_check_rebuilt(&f, 1u << 1);
  ck_assert(memcmp(f.in_data[3], f.data[3], sizes[3]) == 0);

  /* A survivor the caller vouches for (no table) is trusted: damage in its
   * chunk 2, which shares stripe 1 with member 1's data, surfaces in the
   * rebuilt member, which no longer verifies. */
  ck_assert_uint_eq(rs_layout_chunk_stripe(&f.l, 3, 2),
                    rs_layout_chunk_stripe(&f.l, 1, 0));
  fx_prepare(&f, 1u << 1);
  f.in_data[3][2 * f.l.chunk_bytes + 100] ^= 0x10;
  f.mb[3].crcs = NULL;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 1, 0, &rep),
                   PT_ECHECKSUM);
  ck_assert_uint_eq(rep.corrupt_members, 0);

  /* Without REPAIR the survivor is left alone. */
  fx_prepare(&f, 1u << 1);
  f.in_data[3][5] ^= 0x01;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 1, 0, &rep), 0);
  fx_check_rebuilt(&f, 1u << 1);
  ck_assert_uint_eq(f.in_data[3][5], f.data[3][5] ^ 0x01);

  /* Two lost and a damaged survivor: that stripe has only k - 1 clean
   * pieces; the damaged one is tried, fails, and the decode says so. */
  fx_prepare(&f, 0x3);
  f.in_data[4][100] ^= 0x80;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 0x3, 0, &rep), PT_ECHECKSUM);
  ck_assert_uint_eq(rep.corrupt_members, 1u << 4);
  fx_free(&f);
}
END_TEST

START_TEST(test_survivor_parity_flipped)
{
  /* 4+2, member 0 lost; the first choice for the stripe where member 0 holds
   * chunk 0 uses parity row 0 of member (j + 4) % 6. Flip a bit there: the
   * rebuilt chunk fails member 0's CRC, the stripe is decoded again without
   * that piece, and the result verifies. */
  size_t sizes[6] = {200000, 200000, 200000, 200000, 200000, 200000};
  struct fx f;
  struct rs_decode_report rep;
  unsigned j, keeper;
  int rc;

  fx_init(&f, 4, 2, sizes, 2, 0, 31);
  j = rs_layout_chunk_stripe(&f.l, 0, 0);
  keeper = rs_layout_piece_member(&f.l, j, 4);
  fx_prepare(&f, 1u << 0);
  f.in_par[keeper][1000] ^= 0x04; /* row 0, byte 1000: data of chunk 0 */
  rc = rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, &rep);
  ck_assert_msg(rc == 0, "%s", rs_last_error());
  ck_assert_uint_gt(rep.rounds, 1);
  ck_assert_uint_gt(rep.retries, 0);
  ck_assert_uint_eq(rep.corrupt_members, 0);
  fx_check_rebuilt(&f, 1u << 0);

  /* The damaged piece in a stripe that is not the first one blamed: member
   * 0's one block covers its chunks in stripes 0, 3, 4 and 5; the parity row
   * used first in stripe 3 (chunk 3) is damaged. Stripe 0 runs through its
   * choices, starts over and carries into stripe 3, which then verifies. */
  j = rs_layout_chunk_stripe(&f.l, 0, 3);
  keeper = rs_layout_piece_member(&f.l, j, 4);
  ck_assert_uint_eq(j, 3);
  fx_prepare(&f, 1u << 0);
  f.in_par[keeper][1000] ^= 0x81;
  rc = rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, &rep);
  ck_assert_msg(rc == 0, "%s", rs_last_error());
  ck_assert_uint_ge(rep.rounds, 3);
  fx_check_rebuilt(&f, 1u << 0);

  /* The same with the flip in the padding of a partial chunk: members of
   * unequal size, so the lost chunk is mostly padding. */
  fx_free(&f);
  {
    size_t s2[6] = {1000, 200000, 200000, 200000, 200000, 200000};
    fx_init(&f, 4, 2, s2, 1, 0, 32);
    j = rs_layout_chunk_stripe(&f.l, 0, 0);
    keeper = rs_layout_piece_member(&f.l, j, 4);
    fx_prepare(&f, 1u << 0);
    /* Byte 20000 of the row lies past member 0's 1000 bytes: the damage can
     * only show up as non-zero rebuilt padding. */
    f.in_par[keeper][20000] ^= 0x40;
    rc = rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, &rep);
    ck_assert_msg(rc == 0, "%s", rs_last_error());
    ck_assert_uint_gt(rep.rounds, 1);
    fx_check_rebuilt(&f, 1u << 0);
  }

  /* m = 1: no other survivor to take its place. */
  fx_free(&f);
  {
    size_t s3[4] = {70000, 70000, 70000, 70000};
    fx_init(&f, 3, 1, s3, 1, 0, 33);
    j = rs_layout_chunk_stripe(&f.l, 2, 0);
    keeper = rs_layout_piece_member(&f.l, j, 3);
    fx_prepare(&f, 1u << 2);
    f.in_par[keeper][10] ^= 0x01;
    ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 2, 0, &rep),
                     PT_ECHECKSUM);
    ck_assert_ptr_nonnull(strstr(rs_last_error(), "none verifies"));
  }
  fx_free(&f);
}
END_TEST

START_TEST(test_survivor_damage_straddling)
{
  /* Chunks far below a checksum block: one damaged block covers every chunk
   * of the survivor, so all k of its chunks become suspect. With 3+3 and one
   * lost member each stripe still has enough clean pieces. A second damaged
   * survivor's parity is found by the retries. */
  size_t sizes[6] = {9000, 9000, 9000, 9000, 9000, 9000};
  struct fx f;
  struct rs_decode_report rep;
  int rc;

  fx_init(&f, 3, 3, sizes, 1, 0, 41);
  fx_prepare(&f, 1u << 5);
  f.in_data[2][4500] ^= 0x02;
  f.in_par[0][64] ^= 0x20;
  rc = rs_group_decode(f.c, &f.l, f.mb, 1u << 5, RS_DECODE_REPAIR, &rep);
  ck_assert_msg(rc == 0, "%s", rs_last_error());
  ck_assert_uint_eq(rep.corrupt_members, 1u << 2);
  ck_assert_uint_eq(rep.repaired_members, 1u << 2);
  fx_check_rebuilt(&f, 1u << 5);
  ck_assert(memcmp(f.in_data[2], f.data[2], sizes[2]) == 0);

  /* Nothing lost, one survivor damaged: a pure verify-and-repair pass. */
  fx_prepare(&f, 0);
  f.in_data[1][8999] ^= 0xff;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 0, RS_DECODE_REPAIR, &rep), 0);
  ck_assert_uint_eq(rep.corrupt_members, 1u << 1);
  ck_assert(memcmp(f.in_data[1], f.data[1], sizes[1]) == 0);

  /* rs_member_verify names the damaged chunks. */
  {
    uint32_t bad = 0;
    struct rs_member mb = {.data = f.in_data[4], .bytes = sizes[4],
                           .crcs = f.crcs[4]};
    f.in_data[4][0] ^= 1;
    ck_assert_int_eq(rs_member_verify(f.c, &f.l, 4, &mb, &bad), PT_ECHECKSUM);
    ck_assert_uint_eq(bad, 0x7); /* one block over all three chunks */
    f.in_data[4][0] ^= 1;
    ck_assert_int_eq(rs_member_verify(f.c, &f.l, 4, &mb, &bad), 0);
    ck_assert_uint_eq(bad, 0);
  }
  fx_free(&f);
}
END_TEST

START_TEST(test_survivor_damage_block_aligned)
{
  /* Large members (chunks of 1 MiB + 64): a flipped bit in one block of a
   * survivor makes one or two chunks suspect; the rebuilt lost member and the
   * survivor both verify. */
  size_t S = 4 * ((1u << 20) + 64);
  size_t sizes[5] = {S, S, S - 100, S, 5};
  struct fx f;
  struct rs_decode_report rep;
  int rc;

  fx_init(&f, 4, 1, sizes, 2, 0, 51);
  fx_prepare(&f, 0);
  f.in_data[2][(1u << 20) + 10] ^= 0x08; /* block 1, chunk 1 */
  rc = rs_group_decode(f.c, &f.l, f.mb, 0, RS_DECODE_REPAIR, &rep);
  ck_assert_msg(rc == 0, "%s", rs_last_error());
  ck_assert_uint_eq(rep.corrupt_members, 1u << 2);
  ck_assert(memcmp(f.in_data[2], f.data[2], sizes[2]) == 0);
  /* With a member lost too, m = 1 leaves no spare piece in that stripe. */
  fx_prepare(&f, 1u << 0);
  f.in_data[2][(1u << 20) + 10] ^= 0x08;
  ck_assert_int_eq(rs_group_decode(f.c, &f.l, f.mb, 1u << 0, 0, &rep),
                   PT_ECHECKSUM);
  fx_free(&f);
}
END_TEST

static Suite *damage_suite(void)
{
  Suite *s = suite_create("ec_damage");
  TCase *tc = tcase_create("damage");

  crc_init();
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_too_many_lost);
  tcase_add_test(tc, test_survivor_data_flipped);
  tcase_add_test(tc, test_survivor_parity_flipped);
  tcase_add_test(tc, test_survivor_damage_straddling);
  tcase_add_test(tc, test_survivor_damage_block_aligned);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(damage_suite());
}
