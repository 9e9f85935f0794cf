/*
 * test_ctl_probe.c — a cold start of a cluster job from an earlier run's
 * files (ptctl start --resume-from; daemon/controller/ctl_jobs_probe.c),
 * without sockets: every part asked (DISK_PROBE) before any epoch; the
 * steps all of them hold, of one flush, journaled complete (resumed)
 * before the first EPOCH, which restores the newest from the resume dir,
 * replayed and compacted; another world size, no step in common (naming
 * the node that had none), a node that cannot read the directory and one
 * that does not answer fail the job, saying so; a controller restarted
 * before the first EPOCH asks every node again.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/controller/controller.h"
#include "tests/unit/fixture/ctl_fx.h"
#include "tests/unit/unit.h"

static char DIRP[64], PATH[128];

/* a b c (conns 1-3) start job r, code 2+1, resuming from /old/pt: not
 * running, probing. */
static struct ctl_job *resume_job(void)
{
  char err[256];
  struct ctl_job *j;
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  FX.nev = 0;
  s.name = "r";
  s.n_argv = 3;
  s.argv = ctl_fx_argv;
  s.nodes = 3;
  s.ranks_per_node = 1;
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 1;
  s.persist_dir = "/shared/pt";
  s.resume_from = "/old/pt";
  ck_assert_int_eq(ctl_jobs_start(&FX.js, &s, 0, &j, err, sizeof(err)), PT_OK);
  return j;
}

/* Part p answers steps[] (step, mark pairs; 0-terminated). */
static int answer(struct ctl_job *j, uint32_t p, const uint64_t *steps,
                  uint32_t other_world, uint64_t now)
{
  Pt__DiskProbeReply m = PT__DISK_PROBE_REPLY__INIT;
  Pt__ProbeStep st[16], *sp[16];
  size_t n = 0;
  for (; steps != NULL && steps[2 * n] != 0; n++) {
    pt__probe_step__init(&st[n]);
    st[n].step = steps[2 * n];
    st[n].mark = steps[2 * n + 1];
    st[n].has_bytes = true;
    st[n].bytes = 100;
    sp[n] = &st[n];
  }
  m.job = "r";
  m.epoch = j->epoch;
  m.n_steps = n;
  m.steps = sp;
  m.has_other_world = m.has_other_world_step = other_world != 0;
  m.other_world = other_world;
  m.other_world_step = 50;
  return ctl_jobs_probe_reply(&FX.js, j, p, j->epoch, &m, now);
}

/* Every part is asked before any epoch; the steps all of them hold, of
 * one flush, are journaled (resumed) before the first EPOCH, which
 * restores the newest from the resume dir; a damaged one sends the job to
 * the one before; all of it replayed. */
START_TEST(probe_cold_start)
{
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  ctl_fx_journal_open(PATH, true);
  struct ctl_job *j = resume_job();
  ck_assert(j->persist.probing);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(ctl_fx_seen("probe 0 e0 r0+1 of 3 /old/pt"));
  ck_assert(ctl_fx_seen("probe 2 e0 r2+1 of 3 /old/pt"));
  ck_assert(!ctl_fx_seen("J EPOCH r e1"));
  /* step 10 is not on b; 30 is of another flush on b; 20 everywhere */
  const uint64_t a[] = {10, 7, 20, 8, 30, 9, 0};
  const uint64_t b[] = {20, 8, 30, 99, 0};
  const uint64_t c[] = {10, 7, 20, 8, 30, 9, 0};
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 0, b, 0, 5), PT_OK); /* twice: the first holds */
  ck_assert_int_eq(answer(j, 1, b, 0, 5), PT_OK);
  ck_assert(j->persist.probing && !ctl_fx_seen("J EPOCH r e1"));
  ck_assert_int_eq(answer(j, 2, c, 0, 5), PT_OK);
  ck_assert(!j->persist.probing);
  long pe = ctl_fx_idx("J PERSISTED r s20"), ep = ctl_fx_idx("J EPOCH r e1");
  ck_assert_msg(pe >= 0 && ep > pe, "PERSISTED before EPOCH");
  ck_assert(ctl_fx_idx("assign 0 to a e1 r0 restore=20") > ep);
  ck_assert(j->restore_disk && j->restore_step == 20 && j->restore_mark == 8);
  ck_assert(ctl_jobs_persist_restore_resumed(j));
  ck_assert_uint_eq(j->persist.ndisk, 1);
  ck_assert_uint_eq(j->persist.disk[0].bytes, 300);
  /* a stale answer after the epoch began: not this probe's */
  ck_assert_int_eq(answer(j, 0, a, 0, 6), PT_EEPOCH);
  ctl_fx_close();
  for (int round = 0; round < 2; round++) {
    ctl_fx_journal_open(PATH, false);
    j = ctl_jobs_find(&FX.js, "r");
    ck_assert_ptr_nonnull(j);
    ck_assert(!j->persist.probing);
    ck_assert_uint_eq(j->persist.ndisk, 1);
    ck_assert(j->persist.disk[0].resumed);
    ck_assert(j->restore_disk && j->restore_step == 20);
    ck_assert(ctl_jobs_persist_restore_resumed(j));
    if (round == 0)
      ck_assert_int_eq(ctl_journal_compact(FX.jr, &FX.js, true), PT_OK);
    ctl_fx_close();
  }
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* Another world size, no step in common, a node that cannot read the
 * directory, one that does not answer: the job fails, saying so; a
 * controller restarted before the first EPOCH asks again. */
START_TEST(probe_refusals)
{
  ctl_fx_setup();
  struct ctl_job *j = resume_job();
  const uint64_t a[] = {20, 8, 0};
  ck_assert_int_eq(answer(j, 0, NULL, 4, 5), PT_OK);
  ck_assert_int_eq(answer(j, 1, a, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 2, NULL, 0, 5), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "step 50 was written by a job of 4 ranks; "
                                  "this one has 3") != NULL, "%s", j->reason);
  ck_assert(!ctl_fx_seen("J EPOCH r e1"));
  ctl_fx_close();

  ctl_fx_setup();
  j = resume_job();
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 1, NULL, 0, 5), PT_OK);
  ck_assert_int_eq(answer(j, 2, a, 0, 5), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "no step holds a file of every rank") &&
                    strstr(j->reason, "node 'b' holds none"), "%s", j->reason);
  ctl_fx_close();

  ctl_fx_setup();
  j = resume_job();
  Pt__DiskProbeReply m = PT__DISK_PROBE_REPLY__INIT;
  m.job = "r";
  m.status = -EACCES;
  m.message = "cannot open '/old/pt/r': Permission denied";
  ck_assert_int_eq(ctl_jobs_probe_reply(&FX.js, j, 1, j->epoch, &m, 5), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "node 'b' cannot read '/old/pt/r'") &&
                    strstr(j->reason, "Permission denied"), "%s", j->reason);
  ctl_fx_close();

  /* unanswered: its deadline fails the job, naming the node; before it,
   * a controller restart asks every node again */
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  ctl_fx_journal_open(PATH, true);
  j = resume_job();
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  ctl_fx_close();
  ctl_fx_journal_open(PATH, false);
  FX.nev = 0;
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  j = ctl_jobs_find(&FX.js, "r");
  ck_assert(j->persist.probing && j->persist.nprobed == 0);
  ck_assert(ctl_fx_seen("probe 0 e0 r0+1 of 3 /old/pt"));
  ck_assert(ctl_fx_seen("probe 1 e0 r1+1 of 3 /old/pt"));
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  ck_assert_int_eq(answer(j, 0, a, 0, 10), PT_OK);
  ck_assert_int_eq(answer(j, 1, a, 0, 10), PT_OK);
  ctl_jobs_tick_all(&FX.js, CTL_PROBE_MS - 1);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ctl_jobs_tick_all(&FX.js, CTL_PROBE_MS + 10);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "node 'c' did not say within") != NULL,
                "%s", j->reason);
  ctl_fx_close();
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* A controller restarted while its nodes were being asked asks them
 * again; the first epoch it then begins is the one the job was to have,
 * and replays; meanwhile a report of an older epoch (an ended job of the
 * same name) is not this job's, and ptctl restore is refused. */
START_TEST(probe_restarted)
{
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-probe.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  ctl_fx_journal_open(PATH, true);
  struct ctl_job *j = resume_job();
  const uint64_t a[] = {20, 8, 0};
  ck_assert_int_eq(answer(j, 0, a, 0, 5), PT_OK);
  ck_assert_int_eq(ctl_jobs_parts_state(&FX.js, j, 1, j->epoch,
                                        CTL_PART_RUNNING, NULL, NULL, 5),
                   PT_EEPOCH);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  char err[256];
  bool has;
  uint64_t from;
  ck_assert_int_eq(ctl_jobs_restore(&FX.js, "r", false, 0, 5, &has, &from,
                                    err, sizeof(err)), -EAGAIN);
  ck_assert_msg(strstr(err, "still asking its nodes") != NULL, "%s", err);
  ctl_fx_close();

  ctl_fx_journal_open(PATH, false);
  FX.nev = 0;
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  j = ctl_jobs_find(&FX.js, "r");
  ck_assert(j->persist.probing);
  for (uint32_t p = 0; p < 3; p++)
    ck_assert_int_eq(answer(j, p, a, 0, 10), PT_OK);
  ck_assert(ctl_fx_seen("J EPOCH r e1"));
  ck_assert(j->restore_disk && j->restore_step == 20);
  ctl_fx_close();

  ctl_fx_journal_open(PATH, false);
  j = ctl_jobs_find(&FX.js, "r");
  ck_assert_ptr_nonnull(j);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_uint_eq(j->first_epoch, 1);
  ck_assert(!j->persist.probing);
  ck_assert(j->restore_disk && j->restore_step == 20);
  ck_assert(ctl_jobs_persist_restore_resumed(j));
  ctl_fx_close();
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_probe");
  TCase *tc = tcase_create("probe");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, probe_cold_start);
  tcase_add_test(tc, probe_refusals);
  tcase_add_test(tc, probe_restarted);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
