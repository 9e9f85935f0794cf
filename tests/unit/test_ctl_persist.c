/*
 * test_ctl_persist.c — the persistent tier of a cluster job, as the
 * controller runs it (daemon/controller/ctl_jobs_persist.c), without
 * sockets: every persist_every'th commit marked (its JOB_COMMITs carry the
 * flush), one at a time; complete only once every part reported its files
 * durable, journaled (PERSISTED) before any JOB_PERSISTED, the older steps
 * past persist_keep let go; a failed flush stays incomplete and training
 * goes on; more of a group lost than its code rebuilds restores the newest
 * complete step from disk instead of failing the job, every epoch until a
 * step commits; a part whose files of it fail (disk_failed) sends the job
 * to the complete step before, and with none left it fails; memory that
 * cannot serve the restore step (PT_ENOFRAG) goes to disk; all of it
 * replayed from the journal and its compaction.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/journal.h"
#include "daemon/controller/controller.h"
#include "tests/unit/fixture/ctl_fx.h"
#include "tests/unit/unit.h"



static char DIRP[64], PATH[128];

/* Every part reports the marked step durable (status 0) or p_fail fails. */
static void report_all(struct ctl_job *j, uint32_t p_fail)
{
  uint64_t mark = j->persist.mark, step = j->persist.marked;
  for (uint32_t p = 0; p < j->nparts; p++)
    ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, p, step, mark,
                                             p == p_fail ? -ENOSPC : PT_OK,
                                             p == p_fail ? "disk full" : NULL,
                                             1000),
                     PT_OK);
}

/* a b c (conns 1-3) run job j, code 2+1, persisted every 2nd commit. */
static struct ctl_job *abc_job(void)
{
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  FX.persist_dir = "/shared/pt";
  struct ctl_job *j = ctl_fx_start_job("j", 3, 2, 1, 0);
  FX.persist_dir = NULL;
  FX.nev = 0;
  return j;
}

/* Marks, completion, the journal before JOB_PERSISTED, keep, a failure. */
START_TEST(marks_and_completes)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  uint64_t mark;
  ctl_fx_commit_steps(j, 1, 1);
  ck_assert(!j->persist.has_marked);
  ctl_fx_commit_steps(j, 2, 2);
  ck_assert(j->persist.has_marked);
  ck_assert_uint_eq(j->persist.marked, 2);
  ck_assert(ctl_jobs_persist_marked(j, 2, &mark));
  ck_assert_uint_eq(mark, j->persist.mark);
  uint64_t none;
  ck_assert(!ctl_jobs_persist_marked(j, 1, &none));
  ck_assert_uint_eq(none, 0);
  /* not complete until every part said so; a stale mark is ignored */
  ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, 0, 2, mark, PT_OK, NULL, 1000),
                   PT_OK);
  ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, 1, 2, mark + 1, PT_OK,
                                           NULL, 1000), PT_OK);
  ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, 0, 2, mark, PT_OK, NULL, 1000),
                   PT_OK); /* twice: counted once */
  ck_assert_ptr_null(ctl_jobs_persist_newest(j));
  ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, 1, 2, mark, PT_OK, NULL, 1000),
                   PT_OK);
  ck_assert_ptr_null(ctl_jobs_persist_newest(j));
  ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, 2, 2, mark, PT_OK, NULL, 1000),
                   PT_OK);
  ck_assert_ptr_nonnull(ctl_jobs_persist_newest(j));
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 2);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->mark, mark);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->bytes, 3000); /* once each */
  long pj = ctl_fx_idx("J PERSISTED j s2");
  ck_assert_msg(pj >= 0 && ctl_fx_idx("persisted 0 s2 keep_from=2") > pj,
                "PERSISTED at %ld", pj);
  ck_assert(ctl_fx_seen("persisted 1 s2 keep_from=2") &&
            ctl_fx_seen("persisted 2 s2 keep_from=2"));
  /* 4 and 6 complete: keep 2, so 2 goes (keep_from 4) */
  ctl_fx_commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 5, 6);
  report_all(j, UINT32_MAX);
  ck_assert_uint_eq(j->persist.ndisk, 2);
  ck_assert_uint_eq(j->persist.disk[0].step, 4);
  ck_assert(ctl_fx_seen("persisted 0 s6 keep_from=4"));
  ck_assert_uint_eq(j->persist.persisted, 3);
  /* a flush that fails on one node: incomplete, said, the next mark comes */
  ctl_fx_commit_steps(j, 7, 8);
  ck_assert_uint_eq(j->persist.marked, 8);
  report_all(j, 1);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 6);
  ck_assert_ptr_nonnull(strstr(j->persist.error, "step 8: node 'b': disk full"));
  ctl_fx_commit_steps(j, 9, 10);
  ck_assert(j->persist.has_marked && j->persist.marked == 10);
  /* while a mark is outstanding, the next is not made */
  ctl_fx_commit_steps(j, 11, 12);
  ck_assert_uint_eq(j->persist.marked, 10);
  /* a new epoch drops it: its late reports make nothing complete */
  uint64_t mark10 = j->persist.mark;
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  ctl_jobs_parts_state(&FX.js, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 100);
  ctl_jobs_tick_all(&FX.js, 60000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert(!j->persist.has_marked);
  for (uint32_t p = 0; p < 3; p++)
    ctl_jobs_persist_report(&FX.js, j, p, 10, mark10, PT_OK, NULL, 1000);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 6);
  /* a report from a part out of range is refused */
  ck_assert_int_eq(ctl_jobs_persist_report(&FX.js, j, 7, 10, mark10, PT_OK,
                                           NULL, 1000), PT_OK);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 6);
  ctl_fx_close();
}
END_TEST

/* Two of the 2+1 group lost with step 4 complete on disk: spares take both
 * places and every part restores 4 from disk (the EPOCH, then the
 * assignments); an epoch that fails before a commit restores from disk
 * again; disk_failed goes to step 2; failed again, none is left: the job
 * fails saying so. A commit ends the disk's turn. */
START_TEST(m_plus_one_from_disk)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 5, 5);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  FX.nev = 0;
  uintptr_t bc[] = {2, 3, 0};
  ctl_fx_nodes_die(bc, 1000);
  if (j->state != CTL_JOB_STARTING)
    ctl_fx_dump();
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("e")].jobp, j);
  ck_assert(j->has_restore && j->restore_disk);
  ck_assert_uint_eq(j->restore_step, 4);
  ck_assert_uint_eq(j->restore_mark, j->persist.disk[1].mark);
  ck_assert_uint_eq(j->committed, 4); /* the job went back to it */
  long e = ctl_fx_idx("J EPOCH j e2 1=d 2=e");
  ck_assert_msg(e >= 0 && ctl_fx_idx("assign 0 to a e2 r0 restore=4") > e &&
                    ctl_fx_idx("assign 1 to d e2 r1 restore=4") > e,
                "EPOCH at %ld", e);
  ck_assert_ptr_nonnull(strstr(j->reason, "restoring step 4 from disk"));
  ck_assert_ptr_nonnull(strstr(j->reason, "lost 2 of 3 members (b, c)"));
  /* a part fails before a commit (not the disk's fault): from disk again */
  ctl_fx_run_all(j, 2000);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_status = true;
  m.status = -EIO;
  ctl_jobs_parts_state(&FX.js, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 2100);
  ctl_jobs_tick_all(&FX.js, 60000);
  ck_assert_uint_eq(j->epoch, 3);
  ck_assert(j->restore_disk && j->restore_step == 4);
  /* d's file of step 4 fails: step 2 next */
  ctl_fx_run_all(j, 61000);
  m.has_disk_failed = m.disk_failed = true;
  m.status = PT_ECHECKSUM;
  ctl_jobs_parts_state(&FX.js, j, 1, j->epoch, CTL_PART_FAILED, "bad", &m, 61100);
  ck_assert(j->persist.disk[1].bad);
  ctl_jobs_tick_all(&FX.js, 120000);
  ck_assert_uint_eq(j->epoch, 4);
  ck_assert(j->restore_disk && j->restore_step == 2);
  /* and step 2 fails too: nothing older, the job fails */
  ctl_fx_run_all(j, 121000);
  ctl_jobs_parts_state(&FX.js, j, 2, j->epoch, CTL_PART_FAILED, "bad", &m,
                      121100);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "no older complete step on disk"));
  ctl_fx_close();

  /* the restore from disk, then a commit: memory holds the job again, and
   * the next restart restores from memory */
  ctl_fx_setup();
  j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 2);
  ctl_fx_run_all(j, 2000);
  ctl_fx_commit_steps(j, 3, 3);
  ck_assert(!j->persist.next_disk);
  m = (Pt__JobPartState)PT__JOB_PART_STATE__INIT;
  ctl_jobs_parts_state(&FX.js, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 3000);
  ctl_jobs_tick_all(&FX.js, 60000);
  ck_assert(!j->restore_disk);
  ck_assert_uint_eq(j->restore_step, 3);
  ctl_fx_close();

  /* nothing complete on disk: failed as without the tier */
  ctl_fx_setup();
  j = abc_job();
  ctl_fx_commit_steps(j, 1, 1);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_nodes_die(bc, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "tolerates 1"));
  ctl_fx_close();
}
END_TEST

/* A part that finds too little of the restore step in memory (PT_ENOFRAG:
 * its group cannot rebuild it) sends the next epoch to disk. */
START_TEST(nofrag_to_disk)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 3, 3);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_status = true;
  m.status = -EIO;
  ctl_jobs_parts_state(&FX.js, j, 1, j->epoch, CTL_PART_FAILED, "x", &m, 100);
  ctl_jobs_tick_all(&FX.js, 60000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert(!j->restore_disk && j->restore_step == 3);
  ctl_fx_run_all(j, 61000);
  m.status = PT_ENOFRAG;
  ctl_jobs_parts_state(&FX.js, j, 1, j->epoch, CTL_PART_FAILED,
                      "cannot rebuild step 3", &m, 61100);
  ctl_jobs_tick_all(&FX.js, 120000);
  ck_assert_uint_eq(j->epoch, 3);
  ck_assert(j->restore_disk);
  ck_assert_uint_eq(j->restore_step, 2);
  ctl_fx_close();
}
END_TEST

/* The complete steps and a disk epoch survive the controller's restart,
 * and the compaction. */
START_TEST(replayed)
{
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);

  ctl_fx_journal_open(PATH, true);
  struct ctl_job *j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  uint64_t mark4 = j->persist.disk[1].mark;
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  ctl_fx_nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 4);
  ctl_fx_close();

  for (int round = 0; round < 2; round++) {
    ctl_fx_journal_open(PATH, false);
    j = ctl_jobs_find(&FX.js, "j");
    ck_assert_ptr_nonnull(j);
    ck_assert_uint_eq(j->persist.ndisk, 2);
    ck_assert_uint_eq(j->persist.disk[0].step, 2);
    ck_assert_uint_eq(j->persist.disk[1].step, 4);
    ck_assert_uint_eq(j->persist.disk[1].mark, mark4);
    ck_assert_uint_eq(j->persist.disk[1].bytes, 3000);
    ck_assert(j->restore_disk);
    ck_assert_uint_eq(j->restore_step, 4);
    ck_assert_uint_eq(j->restore_mark, mark4);
    ck_assert(j->persist.next_disk); /* no commit since: disk again */
    if (round == 0)
      ck_assert_int_eq(ctl_journal_compact(FX.jr, &FX.js, true), PT_OK);
    ctl_fx_close();
  }
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* The step chosen on disk is held by step and flush, not by place: a late
 * report of the mark outstanding at the loss is not taken (the mark goes
 * with the choice), so nothing shifts or prunes the step the next epoch
 * restores; bad steps do not count toward --persist-keep; ptctl restore
 * is the operator's step, from memory. */
START_TEST(choice_held)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 5, 6); /* step 6 marked, not yet reported */
  ck_assert(j->persist.has_marked && j->persist.marked == 6);
  uint64_t mark6 = j->persist.mark;
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  ctl_fx_nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 4);
  ck_assert(!j->persist.has_marked);
  /* the late reports of step 6: ignored, nothing completes or is pruned */
  for (uint32_t p = 0; p < 3; p++)
    ctl_jobs_persist_report(&FX.js, j, p, 6, mark6, PT_OK, NULL, 1000);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 4);
  ck_assert_uint_eq(j->persist.ndisk, 2);
  /* step 4 fails: 2 next; bad 4 kept, not counted toward keep */
  ctl_fx_run_all(j, 2000);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_status = m.has_disk_failed = m.disk_failed = true;
  m.status = PT_ECHECKSUM;
  ctl_jobs_parts_state(&FX.js, j, 1, j->epoch, CTL_PART_FAILED, "bad", &m, 2100);
  ctl_jobs_tick_all(&FX.js, 60000);
  ck_assert(j->restore_disk && j->restore_step == 2);
  ck_assert(ctl_fx_seen("J PERSISTED j s2") && j->persist.disk[1].bad);
  /* running from 2: steps 3..4 again, 4 complete again (a new flush) */
  ctl_fx_run_all(j, 61000);
  ctl_fx_commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, 4);
  ck_assert(!ctl_jobs_persist_newest(j)->bad);
  /* (the old 4 was of the history left: dropped; 2 and 4 kept) */
  ck_assert_uint_eq(j->persist.ndisk, 2);
  ck_assert_uint_eq(j->persist.disk[0].step, 2);
  ctl_fx_close();

  /* ptctl restore in a disk epoch: the operator's step, from memory */
  ctl_fx_setup();
  j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 3, 3);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_nodes_die(bc, 1000);
  ck_assert(j->restore_disk && j->restore_step == 2);
  ctl_fx_run_all(j, 2000);
  bool has;
  uint64_t restored;
  char err[256];
  ck_assert_int_eq(ctl_jobs_restore(&FX.js, "j", false, 0, 3000, &has, &restored,
                                    err, sizeof(err)), PT_OK);
  ck_assert(!j->restore_disk);
  ck_assert(has && restored == j->restore_step);
  ctl_fx_close();
}
END_TEST

/* Bad steps are journaled: a restarted controller never tries them. */
START_TEST(bad_replayed)
{
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  ctl_fx_journal_open(PATH, true);
  struct ctl_job *j = abc_job();
  ctl_fx_commit_steps(j, 1, 2);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 3, 4);
  report_all(j, UINT32_MAX);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  ctl_fx_nodes_die(bc, 1000);
  ck_assert(j->restore_step == 4);
  ctl_fx_run_all(j, 2000);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.has_disk_failed = m.disk_failed = true;
  ctl_jobs_parts_state(&FX.js, j, 1, j->epoch, CTL_PART_FAILED, "bad", &m, 2100);
  ck_assert(j->persist.disk[1].bad);
  ctl_fx_close();
  for (int round = 0; round < 2; round++) {
    ctl_fx_journal_open(PATH, false);
    j = ctl_jobs_find(&FX.js, "j");
    ck_assert_uint_eq(j->persist.ndisk, 2);
    ck_assert(!j->persist.disk[0].bad && j->persist.disk[1].bad);
    /* the epoch journaled restores 4 from disk; its next one, 2 */
    ck_assert(j->persist.next_disk);
    ck_assert_uint_eq(j->persist.next_step, 2);
    if (round == 0)
      ck_assert_int_eq(ctl_journal_compact(FX.jr, &FX.js, true), PT_OK);
    ctl_fx_close();
  }
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

/* After a restart from memory, the steps completed in the new epoch
 * survive a compaction and the controller's restart (the EPOCH's rollback
 * drops only a history the job left). */
START_TEST(compaction_keeps_epoch_steps)
{
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-persist.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  ctl_fx_journal_open(PATH, true);
  struct ctl_job *j = abc_job();
  ctl_fx_commit_steps(j, 1, 3);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  ctl_jobs_parts_state(&FX.js, j, 0, j->epoch, CTL_PART_FAILED, "x", &m, 100);
  ctl_jobs_tick_all(&FX.js, 60000);
  ck_assert(j->has_restore && !j->restore_disk && j->restore_step == 3);
  ctl_fx_run_all(j, 61000);
  ctl_fx_commit_steps(j, 4, 5);
  report_all(j, UINT32_MAX);
  ctl_fx_commit_steps(j, 6, 7);
  report_all(j, UINT32_MAX);
  ck_assert_uint_eq(j->persist.ndisk, 2);
  uint64_t newest = ctl_jobs_persist_newest(j)->step;
  ck_assert_int_eq(ctl_journal_compact(FX.jr, &FX.js, true), PT_OK);
  ctl_fx_close();
  ctl_fx_journal_open(PATH, false);
  j = ctl_jobs_find(&FX.js, "j");
  ck_assert_uint_eq(j->persist.ndisk, 2);
  ck_assert_uint_eq(ctl_jobs_persist_newest(j)->step, newest);
  ck_assert(!j->persist.next_disk);
  ctl_fx_close();
  unlink(PATH);
  rmdir(DIRP);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_persist");
  TCase *tc = tcase_create("persist");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, marks_and_completes);
  tcase_add_test(tc, m_plus_one_from_disk);
  tcase_add_test(tc, nofrag_to_disk);
  tcase_add_test(tc, replayed);
  tcase_add_test(tc, choice_held);
  tcase_add_test(tc, bad_replayed);
  tcase_add_test(tc, compaction_keeps_epoch_steps);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
