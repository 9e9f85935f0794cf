/*
 * test_snap_huge.c — snapshot objects made with snap_params.huge_pages:
 * the object is as valid as any (open, layout, a second mapping reads what
 * the first wrote), the creator's huge-page figure agrees with what
 * snap_huge_pages_why() says about /dev/shm, and a mapping that is not ours
 * counts no huge pages.
 *
 * Where /dev/shm gives no huge pages (its default, huge=never) the figure
 * must be 0 and the reason must name the setting. Run with
 * PT_TEST_EXPECT_HUGE=1 (tests/scenario/huge_pages.sh does, on a private
 * tmpfs mounted with huge=within_size) it must be the whole object.
 *
 * Objects are named /pt-thuge.<runner pid>.<tag>; main() removes leftovers.
 */
#include <check.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

#define MIB ((uint64_t)1 << 20)

static pid_t runner_pid;

START_TEST(test_huge_object)
{
  char name[64], err[256] = "", why[256];
  snprintf(name, sizeof(name), "/pt-thuge.%d.obj", (int)runner_pid);
  struct snap_region_desc r[2] = {
    { .name = "params", .bytes = 6 * MIB + 5, .kind = 0 },
    { .name = "adam", .bytes = 3 * MIB, .kind = 0 },
  };
  struct snap_params p = {
    .job = "hj", .rank = 0, .world = 1, .nslots = 2, .regions = r,
    .nregions = 2, .huge_pages = true,
  };
  struct snap_store *s = NULL, *o = NULL;

  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  snap_huge_pages_why(why, sizeof(why));
  uint64_t huge = snap_store_huge_bytes(s);
  if (why[0] != '\0') {
    ck_assert_uint_eq(huge, 0);
    ck_assert_msg(strstr(why, "huge") != NULL || strstr(why, "shmem") != NULL,
                  "the reason names no setting: %s", why);
  }
  const char *expect = getenv("PT_TEST_EXPECT_HUGE");
  if (expect != NULL && strcmp(expect, "1") == 0) {
    ck_assert_msg(why[0] == '\0', "huge pages expected, but: %s", why);
    ck_assert_uint_eq(huge, snap_store_total_bytes(s));
  }
  ck_assert_uint_le(huge, snap_store_total_bytes(s));

  /* A valid object: it opens, and a second mapping sees the first's bytes. */
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  ck_assert_uint_eq(snap_store_total_bytes(o), snap_store_total_bytes(s));
  ck_assert_uint_eq(snap_store_huge_bytes(o), 0); /* measured at creation only */
  char *a = snap_slot_data(s, 1), *b = snap_slot_data(o, 1);
  memset(a, 0x5a, 4 * MIB);
  for (uint64_t i = 0; i < 4 * MIB; i += 4096)
    ck_assert_int_eq(b[i], 0x5a);
  if (expect != NULL && strcmp(expect, "1") == 0)
    ck_assert_uint_gt(snap_huge_mapped_bytes(snap_store_base(o)), 0);
  snap_store_close(o);
  snap_store_close(s);
  ck_assert_int_eq(snap_store_unlink(name), 0);
}
END_TEST

START_TEST(test_not_a_mapping)
{
  int on_stack = 0;
  ck_assert_uint_eq(snap_huge_mapped_bytes(NULL), 0);
  ck_assert_uint_eq(snap_huge_mapped_bytes(&on_stack), 0);
  char small[8];
  snap_huge_pages_why(small, sizeof(small)); /* cut, never overrun */
  ck_assert_uint_lt(strlen(small), sizeof(small));
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *su = suite_create("snap_huge");
  TCase *tc = tcase_create("huge");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_huge_object);
  tcase_add_test(tc, test_not_a_mapping);
  suite_add_tcase(su, tc);

  int rc = unit_run(su);
  unit_shm_sweep("pt-thuge.%d.", (int)runner_pid);
  return rc;
}
