/*
 * test_node_plan.c — the node's pure decisions (daemon/node_plan.c): the
 * sealed-step sets, which step to commit, which step to restore, restart
 * backoff and the exit wording the logs share with the scenario tests.
 * Hand-made cases pin the rules; randomized cases compare with a
 * brute-force oracle written here from the rules' definitions.
 */
#include <check.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "daemon/node.h"

/* ---- sealed sets ---- */

START_TEST(sealed_sorted_unique)
{
  struct node_sealed_set s = {0};
  const uint64_t in[] = {5, 3, 9, 3, 1, 9, 7};

  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
    node_sealed_add(&s, in[i]);
  ck_assert_uint_eq(s.n, 5);
  const uint64_t want[] = {1, 3, 5, 7, 9};
  for (uint32_t i = 0; i < s.n; i++)
    ck_assert_uint_eq(s.steps[i], want[i]);
  ck_assert(node_sealed_has(&s, 7));
  ck_assert(!node_sealed_has(&s, 4));

  node_sealed_prune(&s, 5);
  ck_assert_uint_eq(s.n, 2);
  ck_assert_uint_eq(s.steps[0], 7);
  ck_assert_uint_eq(s.steps[1], 9);
  node_sealed_prune(&s, 100);
  ck_assert_uint_eq(s.n, 0);
}
END_TEST

START_TEST(sealed_full_drops_oldest)
{
  struct node_sealed_set s = {0};

  for (uint64_t st = 1; st <= NODE_SEALED_MAX + 10; st++)
    node_sealed_add(&s, st * 2);
  ck_assert_uint_eq(s.n, NODE_SEALED_MAX);
  ck_assert_uint_eq(s.steps[0], 2 * 11);
  ck_assert_uint_eq(s.steps[NODE_SEALED_MAX - 1], 2 * (NODE_SEALED_MAX + 10));
  /* Older than everything kept: ignored when full. */
  node_sealed_add(&s, 1);
  ck_assert(!node_sealed_has(&s, 1));
  /* In between: goes in, the oldest goes out. */
  node_sealed_add(&s, 2 * 11 + 1);
  ck_assert(node_sealed_has(&s, 23));
  ck_assert(!node_sealed_has(&s, 22));
  ck_assert_uint_eq(s.n, NODE_SEALED_MAX);
  for (uint32_t i = 1; i < s.n; i++)
    ck_assert(s.steps[i - 1] < s.steps[i]);
}
END_TEST

START_TEST(sealed_trim_keeps_newest)
{
  struct node_sealed_set s = {0};

  for (uint64_t st = 10; st <= 14; st++)
    node_sealed_add(&s, st);
  node_sealed_trim(&s, 2);
  ck_assert_uint_eq(s.n, 2);
  ck_assert_uint_eq(s.steps[0], 13);
  ck_assert_uint_eq(s.steps[1], 14);
  node_sealed_trim(&s, 5); /* nothing to do */
  ck_assert_uint_eq(s.n, 2);
}
END_TEST

/* ---- commit ---- */

static bool commit(struct node_sealed_set *sets, uint32_t n, bool has,
                   uint64_t committed, uint64_t *out)
{
  const struct node_sealed_set *p[8];
  for (uint32_t i = 0; i < n; i++)
    p[i] = &sets[i];
  return node_plan_commit_step(p, n, has, committed, out);
}

START_TEST(commit_needs_every_rank)
{
  struct node_sealed_set s[3];
  memset(s, 0, sizeof(s));
  uint64_t step = 0;

  node_sealed_add(&s[0], 4);
  node_sealed_add(&s[1], 4);
  ck_assert(!commit(s, 3, false, 0, &step)); /* rank 2 has nothing */
  node_sealed_add(&s[2], 5);
  ck_assert(!commit(s, 3, false, 0, &step));
  node_sealed_add(&s[2], 4);
  ck_assert(commit(s, 3, false, 0, &step));
  ck_assert_uint_eq(step, 4);
  /* Nothing newer than the committed step: no commit. */
  ck_assert(!commit(s, 3, true, 4, &step));
  ck_assert(!commit(s, 3, true, 9, &step));
}
END_TEST

START_TEST(commit_picks_largest_common)
{
  struct node_sealed_set s[2];
  memset(s, 0, sizeof(s));
  uint64_t step = 0;

  for (uint64_t st = 1; st <= 6; st++)
    node_sealed_add(&s[0], st);
  node_sealed_add(&s[1], 2);
  node_sealed_add(&s[1], 5);
  node_sealed_add(&s[1], 7);
  ck_assert(commit(s, 2, true, 1, &step));
  ck_assert_uint_eq(step, 5);
  /* Committed 0 is a real step, not "none". */
  struct node_sealed_set z[1];
  memset(z, 0, sizeof(z));
  node_sealed_add(&z[0], 0);
  ck_assert(commit(z, 1, false, 0, &step));
  ck_assert_uint_eq(step, 0);
  ck_assert(!commit(z, 1, true, 0, &step));
}
END_TEST

static bool oracle_commit(struct node_sealed_set *s, uint32_t n, bool has,
                          uint64_t committed, uint64_t maxstep, uint64_t *out)
{
  for (uint64_t st = maxstep + 1; st-- > 0;) {
    if (has && st <= committed)
      return false;
    bool all = true;
    for (uint32_t r = 0; r < n && all; r++) {
      bool found = false;
      for (uint32_t k = 0; k < s[r].n; k++)
        found = found || s[r].steps[k] == st;
      all = found;
    }
    if (all) {
      *out = st;
      return true;
    }
  }
  return false;
}

START_TEST(commit_matches_oracle)
{
  srand(12345);
  for (int iter = 0; iter < 2000; iter++) {
    struct node_sealed_set s[4];
    memset(s, 0, sizeof(s));
    uint32_t n = 1 + (uint32_t)(rand() % 4);
    uint64_t maxstep = 1 + (uint64_t)(rand() % 20);
    for (uint32_t r = 0; r < n; r++)
      for (int k = rand() % 12; k > 0; k--)
        node_sealed_add(&s[r], (uint64_t)rand() % (maxstep + 1));
    bool has = rand() % 2;
    uint64_t committed = (uint64_t)rand() % (maxstep + 1);
    uint64_t a = 0, b = 0;
    bool got = commit(s, n, has, committed, &a);
    bool want = oracle_commit(s, n, has, committed, maxstep, &b);
    ck_assert_int_eq(got, want);
    if (got)
      ck_assert_uint_eq(a, b);
  }
}
END_TEST

/* ---- restore ---- */

START_TEST(restore_intact_everywhere)
{
  struct node_slot_view r0[] = {
      {.step = 10, .state = SNAP_COMMITTED, .intact = true},
      {.step = 12, .state = SNAP_SEALED, .intact = true},
  };
  struct node_slot_view r1[] = {
      {.step = 12, .state = SNAP_SEALED, .intact = false}, /* damaged */
      {.step = 10, .state = SNAP_COMMITTED, .intact = true},
  };
  struct node_rank_slots v[2] = {{r0, 2}, {r1, 2}};
  uint64_t step = 0;

  ck_assert(node_plan_restore_step(v, 2, &step));
  ck_assert_uint_eq(step, 10);
  r1[0].intact = true;
  ck_assert(node_plan_restore_step(v, 2, &step));
  ck_assert_uint_eq(step, 12);
  /* A WRITING or FREE slot never counts, whatever its step. */
  r1[0].state = SNAP_WRITING;
  ck_assert(node_plan_restore_step(v, 2, &step));
  ck_assert_uint_eq(step, 10);
  r1[1].state = SNAP_FREE;
  ck_assert(!node_plan_restore_step(v, 2, &step));
  /* PROTECTED counts. */
  r1[0].state = SNAP_PROTECTED;
  ck_assert(node_plan_restore_step(v, 2, &step));
  ck_assert_uint_eq(step, 12);
}
END_TEST

START_TEST(restore_none)
{
  struct node_slot_view r0[] = {{.step = 3, .state = SNAP_COMMITTED, .intact = true}};
  struct node_rank_slots v[2] = {{r0, 1}, {NULL, 0}};
  uint64_t step = 77;

  ck_assert(!node_plan_restore_step(v, 2, &step));
  ck_assert_uint_eq(step, 77); /* untouched */
  ck_assert(!node_plan_restore_step(v, 0, &step));
  ck_assert(node_plan_restore_step(v, 1, &step));
  ck_assert_uint_eq(step, 3);
}
END_TEST

START_TEST(restore_matches_oracle)
{
  srand(777);
  for (int iter = 0; iter < 2000; iter++) {
    struct node_slot_view slots[4][SNAP_MAX_SLOTS];
    struct node_rank_slots v[4];
    uint32_t n = 1 + (uint32_t)(rand() % 4);
    for (uint32_t r = 0; r < n; r++) {
      v[r].slots = slots[r];
      v[r].n = (uint32_t)(rand() % (SNAP_MAX_SLOTS + 1));
      for (uint32_t k = 0; k < v[r].n; k++)
        slots[r][k] = (struct node_slot_view){
            .step = (uint64_t)(rand() % 8),
            .state = (uint32_t)(rand() % 5),
            .intact = rand() % 4 != 0};
    }
    /* Oracle: every candidate step 0..7, newest first. */
    bool want = false;
    uint64_t wstep = 0;
    for (int st = 7; st >= 0 && !want; st--) {
      bool all = true;
      for (uint32_t r = 0; r < n && all; r++) {
        bool ok = false;
        for (uint32_t k = 0; k < v[r].n; k++) {
          const struct node_slot_view *x = &slots[r][k];
          ok = ok || (x->step == (uint64_t)st && x->intact &&
                      (x->state == SNAP_SEALED || x->state == SNAP_PROTECTED ||
                       x->state == SNAP_COMMITTED));
        }
        all = ok;
      }
      if (all) {
        want = true;
        wstep = (uint64_t)st;
      }
    }
    uint64_t got_step = 0;
    bool got = node_plan_restore_step(v, n, &got_step);
    ck_assert_int_eq(got, want);
    if (got)
      ck_assert_uint_eq(got_step, wstep);
  }
}
END_TEST

/* ---- backoff and wording ---- */

START_TEST(backoff_doubles_to_cap)
{
  ck_assert_uint_eq(node_plan_backoff_ms(200, 1, 5000), 200);
  ck_assert_uint_eq(node_plan_backoff_ms(200, 2, 5000), 400);
  ck_assert_uint_eq(node_plan_backoff_ms(200, 5, 5000), 3200);
  ck_assert_uint_eq(node_plan_backoff_ms(200, 6, 5000), 5000);
  ck_assert_uint_eq(node_plan_backoff_ms(200, 1000, 5000), 5000);
  ck_assert_uint_eq(node_plan_backoff_ms(0, 7, 5000), 0);
  ck_assert_uint_eq(node_plan_backoff_ms(9000, 1, 5000), 5000);
  ck_assert_uint_eq(node_plan_backoff_ms(50, 0, 5000), 50);
}
END_TEST

START_TEST(exit_text_words)
{
  char buf[64];

  ck_assert_str_eq(node_plan_exit_text(buf, sizeof(buf), 0, 0),
                   "exited with status 0");
  ck_assert_str_eq(node_plan_exit_text(buf, sizeof(buf), 78, 0),
                   "exited with status 78");
  ck_assert_str_eq(node_plan_exit_text(buf, sizeof(buf), 0, SIGKILL),
                   "killed by signal SIGKILL");
  ck_assert_str_eq(node_plan_exit_text(buf, sizeof(buf), 0, SIGTERM),
                   "killed by signal SIGTERM");
}
END_TEST

int main(void)
{
  Suite *s = suite_create("node_plan");
  TCase *tc = tcase_create("plan");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, sealed_sorted_unique);
  tcase_add_test(tc, sealed_full_drops_oldest);
  tcase_add_test(tc, sealed_trim_keeps_newest);
  tcase_add_test(tc, commit_needs_every_rank);
  tcase_add_test(tc, commit_picks_largest_common);
  tcase_add_test(tc, commit_matches_oracle);
  tcase_add_test(tc, restore_intact_everywhere);
  tcase_add_test(tc, restore_none);
  tcase_add_test(tc, restore_matches_oracle);
  tcase_add_test(tc, backoff_doubles_to_cap);
  tcase_add_test(tc, exit_text_words);
  suite_add_tcase(s, tc);
  SRunner *sr = srunner_create(s);
  srunner_run_all(sr, CK_NORMAL);
  int failed = srunner_ntests_failed(sr);
  srunner_free(sr);
  return failed == 0 ? 0 : 1;
}
