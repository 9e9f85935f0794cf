/*
 * test_node_plan.c — the node's pure decisions (daemon/node/node_plan.c):
 * pins that commit rounds left behind, which step to restore, restart
 * backoff and window, open files, the memory budget and the exit wording
 * the logs share with the scenario tests. Hand-made cases pin the rules;
 * randomized cases compare with a brute-force oracle written here from the
 * rules' definitions. The rounds themselves, their step and their votes are
 * the commit module's: tests/unit/test_commit.c.
 */
#include <check.h>
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/node/node.h"
#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

/* ---- pins left behind ---- */

START_TEST(pins_left_behind)
{
  /* The committed step, pinned or only sealed here: commit it again. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 7, true, 7, false, 0),
                   NODE_PIN_COMMIT);
  ck_assert_int_eq(node_plan_pin(SNAP_SEALED, 7, true, 7, true, 9),
                   NODE_PIN_COMMIT);
  ck_assert_int_eq(node_plan_pin(SNAP_COMMITTED, 7, true, 7, true, 9),
                   NODE_PIN_NONE);
  /* The round's step (under way or next): the round pins it again,
   * then commits or aborts it. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 9, true, 7, true, 9),
                   NODE_PIN_NONE);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 9, false, 0, true, 9),
                   NODE_PIN_NONE);
  /* Any other pin: older than the committed step, newer but not what the
   * next round is for, or no round possible. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 5, true, 7, true, 9),
                   NODE_PIN_UNPIN);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 8, true, 7, true, 9),
                   NODE_PIN_UNPIN);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 8, true, 7, false, 8),
                   NODE_PIN_UNPIN);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 0, false, 0, false, 0),
                   NODE_PIN_UNPIN);
  /* Committed step 0 is a real step. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 0, true, 0, false, 0),
                   NODE_PIN_COMMIT);
  /* PROTECTED (reserved, set by nothing yet) is taken as PINNED. */
  for (uint64_t st = 0; st < 10; st++)
    for (int r = 0; r < 2; r++)
      ck_assert_int_eq(node_plan_pin(SNAP_PROTECTED, st, true, 7, r, 9),
                       node_plan_pin(SNAP_PINNED, st, true, 7, r, 9));
  ck_assert_int_eq(node_plan_pin(SNAP_PROTECTED, 5, true, 7, true, 9),
                   NODE_PIN_UNPIN);
  /* Slots that are not pins. */
  ck_assert_int_eq(node_plan_pin(SNAP_SEALED, 8, true, 7, false, 0),
                   NODE_PIN_NONE);
  ck_assert_int_eq(node_plan_pin(SNAP_WRITING, 7, true, 7, false, 0),
                   NODE_PIN_NONE);
  ck_assert_int_eq(node_plan_pin(SNAP_FREE, 7, true, 7, false, 0),
                   NODE_PIN_NONE);
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
  /* PINNED counts. */
  r1[0].state = SNAP_PINNED;
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
            .state = (uint32_t)(rand() % (SNAP_STATE_MAX + 1)),
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
                      (x->state == SNAP_SEALED || x->state == SNAP_PINNED ||
                       x->state == SNAP_PROTECTED ||
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

/* What an SMP reports when asked to verify newest first: slots that hold
 * data, from the newest step down, read until one is intact; the rest not
 * read. */
static void read_newest_first(const struct node_slot_view *full, uint32_t n,
                              struct node_slot_view *out)
{
  bool done = false;
  for (uint32_t k = 0; k < n; k++)
    out[k] = (struct node_slot_view){.step = full[k].step, .state = full[k].state};
  while (!done) {
    int best = -1;
    for (uint32_t k = 0; k < n; k++)
      if (snap_state_holds_data(full[k].state) && !out[k].verified &&
          (best < 0 || full[k].step > full[best].step))
        best = (int)k;
    if (best < 0)
      break;
    out[best].verified = true;
    out[best].intact = full[best].intact;
    done = full[best].intact;
  }
}

/* Read newest first, the restore step is taken only when it is the one a
 * full read gives; otherwise the node reads everything. And the common
 * case (every rank's newest step intact) is decided without a full read. */
START_TEST(restore_newest_first_same_answer)
{
  struct node_slot_view a[] = {
      {.step = 13, .state = SNAP_COMMITTED, .verified = true, .intact = true},
      {.step = 12, .state = SNAP_COMMITTED},
  };
  struct node_slot_view b[] = {
      {.step = 12, .state = SNAP_COMMITTED},
      {.step = 13, .state = SNAP_COMMITTED, .verified = true, .intact = true},
      {.step = 14, .state = SNAP_WRITING},
  };
  struct node_rank_slots v[2] = {{a, 2}, {b, 3}};
  uint64_t step = 0;
  ck_assert(node_plan_restore_step(v, 2, &step));
  ck_assert_uint_eq(step, 13);
  ck_assert(node_plan_restore_decided(v, 2, true, 13));
  /* Rank b's 13 damaged: its 12 was read too, rank a's 12 was not. */
  b[1].intact = false;
  b[0].verified = b[0].intact = true;
  ck_assert(node_plan_restore_step(v, 2, &step) == false);
  ck_assert(!node_plan_restore_decided(v, 2, false, 0));

  srand(4242);
  int decided = 0;
  for (int iter = 0; iter < 4000; iter++) {
    struct node_slot_view full[4][SNAP_MAX_SLOTS], part[4][SNAP_MAX_SLOTS];
    struct node_rank_slots vf[4], vp[4];
    uint32_t n = 1 + (uint32_t)(rand() % 4);
    for (uint32_t r = 0; r < n; r++) {
      vf[r].slots = full[r];
      vp[r].slots = part[r];
      vf[r].n = vp[r].n = (uint32_t)(rand() % (SNAP_MAX_SLOTS + 1));
      for (uint32_t k = 0; k < vf[r].n; k++)
        full[r][k] = (struct node_slot_view){
            .step = (uint64_t)(rand() % 6),
            .state = (uint32_t)(rand() % (SNAP_STATE_MAX + 1)),
            .verified = true, .intact = rand() % 5 != 0};
      read_newest_first(full[r], vf[r].n, part[r]);
    }
    uint64_t fs = 0, ps = 0;
    bool fh = node_plan_restore_step(vf, n, &fs);
    bool ph = node_plan_restore_step(vp, n, &ps);
    ck_assert(node_plan_restore_decided(vf, n, fh, fs)); /* all read */
    if (node_plan_restore_decided(vp, n, ph, ps)) {
      decided++;
      ck_assert_int_eq(ph, fh);
      if (fh)
        ck_assert_uint_eq(ps, fs);
    }
  }
  ck_assert_int_gt(decided, 1000); /* the fast path is the common one */
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

/* --max-restarts over --restart-window: only the restarts of the window
 * count, and the ring never needs more than --max-restarts entries. */
START_TEST(restart_window_counts_recent)
{
  uint64_t at[3];
  struct node_restart_log l = {.at = at, .cap = 3};

  ck_assert_uint_eq(node_plan_restarts_recent(&l, 1000, 600000), 0);
  node_plan_restart_note(&l, 1000);
  node_plan_restart_note(&l, 2000);
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 2000, 600000), 2);
  node_plan_restart_note(&l, 3000);
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 3000, 600000), 3);
  /* 3 of 3 within the window: no restart left now ... */
  ck_assert_uint_ge(node_plan_restarts_recent(&l, 3000, 600000), 3);
  /* ... but once the first one is older than the window, one is back. */
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 601000, 600000), 2);
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 603000, 600000), 0);
  /* The ring keeps the newest cap restarts. */
  node_plan_restart_note(&l, 700000);
  ck_assert_uint_eq(l.n, 3);
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 700000, 600000), 1);
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 700000, 697500), 2);
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 700000, 1000000), 3);
  /* Window 0: the job's whole life (saturates at cap = --max-restarts). */
  ck_assert_uint_eq(node_plan_restarts_recent(&l, 99999999, 0), 3);
  /* --max-restarts 0: nothing recorded, no restart ever allowed. */
  struct node_restart_log none = {0};
  node_plan_restart_note(&none, 5);
  ck_assert_uint_eq(node_plan_restarts_recent(&none, 5, 600000), 0);
}
END_TEST

/* The backoff starts over only after a healthy period: a commit since the
 * last (re)start and NODE_HEALTHY_MS up. */
START_TEST(healthy_resets_backoff)
{
  ck_assert(!node_plan_healthy(false, 1000, 1000 + 3600000, 60000));
  ck_assert(!node_plan_healthy(true, 1000, 1000 + 59999, 60000));
  ck_assert(node_plan_healthy(true, 1000, 1000 + 60000, 60000));
  ck_assert(!node_plan_healthy(true, 0, 99999999, 60000));
}
END_TEST

/* Open files: enough, raised to the hard limit, or refused with numbers. */
START_TEST(fds_needed_and_refused)
{
  char err[256] = "";
  uint64_t raise_to = 7;
  uint64_t need = node_plan_fds_needed(2);

  ck_assert_uint_gt(need, 8);
  ck_assert_uint_gt(node_plan_fds_needed(64), need);
  ck_assert_int_eq(node_plan_fds_check(2, need, need, &raise_to, err,
                                       sizeof(err)), PT_OK);
  ck_assert_uint_eq(raise_to, 0);
  ck_assert_int_eq(node_plan_fds_check(2, 8, 4096, &raise_to, err,
                                       sizeof(err)), PT_OK);
  ck_assert_uint_eq(raise_to, 1024);
  ck_assert_int_eq(node_plan_fds_check(2, 8, UINT64_MAX, &raise_to, err,
                                       sizeof(err)), PT_OK);
  ck_assert_uint_eq(raise_to, 1024);
  ck_assert_int_eq(node_plan_fds_check(2, 8, need, &raise_to, err,
                                       sizeof(err)), PT_OK);
  ck_assert_uint_eq(raise_to, need);
  ck_assert_int_eq(node_plan_fds_check(1000, 8, 1u << 20, &raise_to, err,
                                       sizeof(err)), PT_OK);
  ck_assert_uint_eq(raise_to % 1024, 0);
  ck_assert_uint_ge(raise_to, node_plan_fds_needed(1000));
  ck_assert_int_eq(node_plan_fds_check(2, 6, 6, &raise_to, err, sizeof(err)),
                   -EMFILE);
  ck_assert_ptr_nonnull(strstr(err, "the limit is 6"));
  char want[64];
  snprintf(want, sizeof(want), "need %llu", (unsigned long long)need);
  ck_assert_ptr_nonnull(strstr(err, want));
}
END_TEST

/* --memory-budget: none, too small per rank, more than /dev/shm holds. */
START_TEST(budget_before_spawning)
{
  char err[320] = "";

  ck_assert_int_eq(node_plan_budget_check(0, 4, 1000, 0, err, sizeof(err)),
                   PT_OK);
  ck_assert_int_eq(node_plan_budget_check(8000, 4, 2000, 8000, err,
                                          sizeof(err)), PT_OK);
  /* Below one byte per rank used to mean "no budget". */
  ck_assert_int_eq(node_plan_budget_check(3, 4, 2000, 1u << 30, err,
                                          sizeof(err)), PT_EBUDGET);
  ck_assert_ptr_nonnull(strstr(err, "each of the 4 ranks 0 bytes"));
  ck_assert_ptr_nonnull(strstr(err, "needs 2000 bytes per rank"));
  ck_assert_int_eq(node_plan_budget_check(7999, 4, 2000, 1u << 30, err,
                                          sizeof(err)), PT_EBUDGET);
  ck_assert_int_eq(node_plan_budget_check(8001, 4, 2000, 8000, err,
                                          sizeof(err)), -ENOSPC);
  ck_assert_ptr_nonnull(strstr(err, "8000 bytes available"));
}
END_TEST

/* --state-bytes: not given, fits, over the budget per rank, more than
 * /dev/shm holds for all ranks. */
START_TEST(state_bytes_before_spawning)
{
  char err[320] = "";

  ck_assert_int_eq(node_plan_state_check(0, 5000, 10, 4, 0, err, sizeof(err)),
                   PT_OK);
  ck_assert_int_eq(node_plan_state_check(4000, 5000, 20000, 4, 20000, err,
                                         sizeof(err)), PT_OK);
  ck_assert_int_eq(node_plan_state_check(4000, 5000, 0, 4, 20000, err,
                                         sizeof(err)), PT_OK);
  ck_assert_int_eq(node_plan_state_check(4000, 5000, 19999, 4, 1u << 30, err,
                                         sizeof(err)), PT_EBUDGET);
  ck_assert_ptr_nonnull(strstr(err, "each of the 4 ranks 4999 bytes"));
  ck_assert_ptr_nonnull(strstr(err, "--state-bytes 4000 needs a snapshot "
                                    "object of 5000 bytes per rank"));
  ck_assert_int_eq(node_plan_state_check(4000, 5000, 0, 4, 19999, err,
                                         sizeof(err)), -ENOSPC);
  ck_assert_ptr_nonnull(strstr(err, "4 snapshot objects of 5000 bytes "
                                    "(20000 bytes)"));
  ck_assert_ptr_nonnull(strstr(err, "19999 bytes available"));
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

/* The preflight counts a coded job's parity areas: --state-bytes whose
 * object fits the budget without a code is refused under 2+1 (each slot
 * also keeps half the state as parity), and fits once the budget has room
 * for it. */
START_TEST(state_bytes_with_parity)
{
  struct node_config cfg;
  struct snap_region_desc one = {.name = "x", .bytes = 8u << 20};

  memset(&cfg, 0, sizeof(cfg));
  snprintf(cfg.job, sizeof(cfg.job), "parity");
  snprintf(cfg.shm_prefix, sizeof(cfg.shm_prefix), "pt-tnodeplan-none-");
  cfg.ranks = 1;
  cfg.slots = 2;
  cfg.state_bytes = one.bytes;
  struct snap_params p = {.job = cfg.job, .world = 1, .nslots = 2,
                          .regions = &one, .nregions = 1};
  uint64_t plain = snap_store_bytes_needed(&p);
  p.ec_k = 2;
  p.ec_m = 1;
  uint64_t coded = snap_store_bytes_needed(&p);
  ck_assert_uint_ge(coded, plain + (8u << 20)); /* 2 slots x 4 MiB */
  cfg.memory_budget = plain;
  char err[320];
  ck_assert_int_eq(node_check_preflight(&cfg, err, sizeof(err)), PT_OK);
  cfg.group.k = 2;
  cfg.group.m = 1;
  ck_assert_int_eq(node_check_preflight(&cfg, err, sizeof(err)), PT_EBUDGET);
  /* The sentence names the bytes (the controller passes it on). */
  char want[32];
  snprintf(want, sizeof(want), "%" PRIu64, coded);
  ck_assert_msg(strstr(err, want) != NULL, "no %s in: %s", want, err);
  cfg.memory_budget = coded;
  ck_assert_int_eq(node_check_preflight(&cfg, NULL, 0), PT_OK);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("node_plan");
  TCase *tc = tcase_create("plan");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, pins_left_behind);
  tcase_add_test(tc, restore_intact_everywhere);
  tcase_add_test(tc, restore_none);
  tcase_add_test(tc, restore_matches_oracle);
  tcase_add_test(tc, restore_newest_first_same_answer);
  tcase_add_test(tc, backoff_doubles_to_cap);
  tcase_add_test(tc, restart_window_counts_recent);
  tcase_add_test(tc, healthy_resets_backoff);
  tcase_add_test(tc, fds_needed_and_refused);
  tcase_add_test(tc, budget_before_spawning);
  tcase_add_test(tc, state_bytes_before_spawning);
  tcase_add_test(tc, state_bytes_with_parity);
  tcase_add_test(tc, exit_text_words);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
