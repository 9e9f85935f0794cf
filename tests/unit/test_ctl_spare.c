/*
 * test_ctl_spare.c — a lost node's place given to a spare (daemon/
 * controller/ctl_jobs_spare.c) without sockets or a clock: the spare
 * chosen, put at the dead node's index and journaled (in the new epoch's
 * record) before any assignment; no spare: the job waits as before, and a
 * spare registering meanwhile takes the place; failure domains apart when
 * the labels allow; more of a group lost than its code tolerates (at once,
 * or a second loss during a rebuild) ends the job failed naming the group,
 * the nodes and the code; the placement replayed after a controller
 * restart (and compacted, and a torn record keeping the old one); a node
 * that does not register again after a controller restart replaced too; a
 * job without a code is given no spare.
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

/* a b c (conns 1-3) run job j, code 2+1, steps 1..5 committed. */
static struct ctl_job *abc_job(void)
{
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  struct ctl_job *j = ctl_fx_start_job("j", 3, 2, 1, 0);
  ck_assert_uint_eq(j->groups.n, 1);
  ctl_fx_commit_steps(j, 1, 5);
  FX.nev = 0;
  return j;
}

/* b dies; spare d (registered, free) takes index 1: same member of the
 * group, same rank; the EPOCH record holding the placement is written
 * before any assignment, and every part, the spare's too, restores the
 * committed step; the dead node leaves the job; a commit after protects
 * the group again. */
START_TEST(spare_takes_place)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_add_node("d", NULL, 1, 4, 100);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("d")].jobp); /* a spare, free */
  uint32_t grp = j->groups.group_of[1], mem = j->groups.index_of[1];
  ctl_fx_node_dies(2, 1000);
  if (!ctl_fx_seen("J EPOCH j e2 1=d"))
    ctl_fx_dump();
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert_uint_eq(j->parts[1].node, ctl_fx_node_index("d"));
  ck_assert(j->parts[1].empty);
  ck_assert_str_eq(j->parts[1].lost_id, "b");
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("d")].jobp, j);
  ck_assert_str_eq(FX.m.nodes[ctl_fx_node_index("d")].job, "j");
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("b")].jobp);
  ck_assert_str_eq(FX.m.nodes[ctl_fx_node_index("b")].job, "");
  ck_assert_uint_eq(j->groups.group_of[1], grp);
  ck_assert_uint_eq(j->groups.index_of[1], mem);
  ck_assert_uint_eq(j->groups.member[j->groups.first[grp] + mem], 1);
  long e = ctl_fx_idx("J EPOCH j e2 1=d");
  long a1 = ctl_fx_idx("assign 1 to d e2 r1 restore=5");
  ck_assert_msg(e >= 0 && a1 > e, "EPOCH at %ld, assign to d at %ld", e, a1);
  ck_assert(ctl_fx_idx("assign 0 to a e2 r0 restore=5") > e);
  ck_assert(ctl_fx_idx("assign 2 to c e2 r2 restore=5") > e);
  ck_assert(!ctl_fx_seen("assign 1 to b e2 r1 restore=5"));
  ck_assert_ptr_nonnull(strstr(j->reason, "spare 'd'"));
  /* b back later: not in the job any more */
  FX.nev = 0;
  ctl_fx_add_node("b", NULL, 1, 12, 2000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("b")].jobp);
  ck_assert_uint_eq(FX.nev, 0);
  /* running, and a newer step committed everywhere: protected again */
  ctl_fx_run_all(j, 3000);
  ctl_fx_commit_steps(j, 6, 6);
  ck_assert(!j->parts[1].empty);
  ctl_fx_close();
}
END_TEST

/* No spare: the job waits for the dead node, as before (a spare in another
 * job, or too small, is none); one that registers during the wait takes
 * the place. */
START_TEST(no_spare_waits)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_add_node("x", NULL, 1, 6, 0);
  struct ctl_job *other = ctl_fx_start_job("other", 1, 0, 0, 0);
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("x")].jobp, other);
  /* a free node too small for the job's ranks per node is no spare */
  ctl_fx_add_node("small", NULL, 1, 5, 0);
  j->spec->ranks_per_node = 2; /* as if the job had 2 ranks per node */
  FX.nev = 0;
  ctl_fx_node_dies(2, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_str_eq(j->parts[1].node_id, "b");
  ck_assert_ptr_nonnull(strstr(j->reason, "node 'b' is dead"));
  ck_assert(ctl_fx_seen("halt 0 e1 remove=0") && ctl_fx_seen("halt 2 e1 remove=0"));
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("x")].jobp, other);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("small")].jobp);
  /* the backoff's end with the node still dead: still waiting */
  ctl_jobs_tick_all(&FX.js, 20000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  /* a spare registers within the wait: it takes b's place */
  FX.nev = 0;
  ctl_fx_add_node("d", NULL, 2, 4, 30000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(ctl_fx_idx("J EPOCH j e2 1=d") >= 0 &&
            ctl_fx_idx("J EPOCH j e2 1=d") < ctl_fx_idx("assign 1 to d e2 r2 restore=5"));
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("small")].jobp);
  ctl_fx_close();

  /* no spare ever: failed at node_wait_ms, naming b */
  ctl_fx_setup();
  j = abc_job();
  ctl_fx_node_dies(2, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  ctl_jobs_tick_all(&FX.js, 1000 + ctl_fx_timeouts.grace_ms + 60000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "node 'b' did not come back"));
  ctl_fx_close();
}
END_TEST

/* The spare comes from a failure domain no other member of the group is
 * in when one does; else the first spare, the labels not allowing. */
START_TEST(failure_domain_preference)
{
  ctl_fx_setup();
  ctl_fx_add_node("a", "r1", 1, 1, 0);
  ctl_fx_add_node("b", "r2", 1, 2, 0);
  ctl_fx_add_node("c", "r3", 1, 3, 0);
  struct ctl_job *j = ctl_fx_start_job("j", 3, 2, 1, 0);
  ctl_fx_commit_steps(j, 1, 2);
  ctl_fx_add_node("d", "r1", 1, 4, 0); /* with a */
  ctl_fx_add_node("e", "r3", 1, 5, 0); /* with c */
  ctl_fx_add_node("f", "r2", 1, 6, 0); /* with b, which is lost: apart from a, c */
  ctl_fx_add_node("g", NULL, 1, 7, 0);
  ctl_fx_node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "f");
  /* f lost too (before a commit: the group has lost 1 member still, f
   * held nothing): g, no label, is a domain of its own; d, e share */
  ctl_fx_node_dies(6, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_str_eq(j->parts[1].node_id, "g");
  ck_assert_str_eq(j->parts[1].lost_id, "b");
  ck_assert_uint_eq(j->epoch, 3);
  /* g lost: only d and e, both beside a member: the first, d */
  ctl_fx_node_dies(7, 3000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("d")].jobp, j);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("e")].jobp);
  ctl_fx_close();
}
END_TEST

/* Two members of a 2+1 group dead at once with a step committed: failed,
 * the group, the nodes and the code named, the snapshots kept (halts
 * without remove), no new epoch; with nothing committed there is nothing
 * to lose: it waits. */
START_TEST(m_plus_one_fails)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  ctl_fx_nodes_die(bc, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "coding group 0 lost 2 of its 3 members "
                                  "(nodes b, c); code 2+1 tolerates 1") !=
                    NULL,
                "reason: %s", j->reason);
  ck_assert(ctl_fx_seen("J END j failed"));
  ck_assert(!ctl_fx_seen("J EPOCH j e2 1=d 2=e"));
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert(ctl_fx_seen("halt 0 e1 remove=0"));
  ck_assert(!j->removed);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("d")].jobp);
  ctl_fx_close();

  /* nothing committed: the spares take both places, every part fresh */
  ctl_fx_setup();
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  j = ctl_fx_start_job("j", 3, 2, 1, 0);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  FX.nev = 0;
  ctl_fx_nodes_die(bc, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(ctl_fx_seen("assign 0 to a e2 r0 restore=-1"));
  ctl_fx_close();
}
END_TEST

/* A second loss while a spare holds nothing yet: 2+1, a second member lost
 * is the group's second (failed, naming b, whose data the spare had not
 * rebuilt, and c); 2+2 survives it (a second spare), and a third loss
 * fails it; a commit in between makes the spares full members again. */
START_TEST(second_loss_during_rebuild)
{
  ctl_fx_setup();
  struct ctl_job *j = abc_job();
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ctl_fx_run_all(j, 1500);
  ctl_fx_node_dies(3, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "coding group 0 lost 2 of its 3 members "
                                  "(nodes b, c); code 2+1 tolerates 1") !=
                    NULL,
                "reason: %s", j->reason);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("e")].jobp);
  ctl_fx_close();

  /* 2+1 again, but a step commits after d's placement: c's loss is the
   * group's only one now, e takes it */
  ctl_fx_setup();
  j = abc_job();
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_node_dies(2, 1000);
  ctl_fx_run_all(j, 1500);
  ctl_fx_commit_steps(j, 6, 7);
  ctl_fx_node_dies(3, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_str_eq(j->parts[2].node_id, "e");
  ck_assert(!j->parts[1].empty && j->parts[2].empty);
  ck_assert(ctl_fx_seen("assign 1 to d e3 r1 restore=7"));
  ctl_fx_close();

  /* 2+2 on 4 nodes: two losses survived, the third not */
  ctl_fx_setup();
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  ctl_fx_add_node("h", NULL, 1, 8, 0);
  j = ctl_fx_start_job("j", 4, 2, 2, 0);
  ctl_fx_commit_steps(j, 1, 3);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_add_node("f", NULL, 1, 6, 0);
  ctl_fx_node_dies(2, 1000);
  ctl_fx_run_all(j, 1100);
  FX.nev = 0;
  ctl_fx_node_dies(3, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(ctl_fx_seen("J EPOCH j e3 1=d 2=e"));
  ck_assert(ctl_fx_seen("assign 2 to e e3 r2 restore=3"));
  ctl_fx_node_dies(1, 3000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "lost 3 of its 4 members (nodes a, b, c); "
                                  "code 2+2 tolerates 2") != NULL,
                "reason: %s", j->reason);
  ctl_fx_close();
}
END_TEST

static char DIRP[64], PATH[128];

/* The placement is in the journal: a restarted controller puts d at index
 * 1 (still empty: nothing committed since), binds it when it registers and
 * tells it; a compaction keeps it; a commit after clears it; a torn
 * placement record keeps the old placement and epoch. */
START_TEST(placement_replayed)
{
  char err[512];
  uint64_t dropped = 0;
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-spare.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);

  ctl_fx_journal_open(PATH, true);
  struct ctl_job *j = abc_job();
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  struct stat before;
  ck_assert_int_eq(stat(PATH, &before), 0);
  ctl_fx_node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ctl_fx_close();

  /* reopened: d in b's place, empty, the epoch of the placement */
  ctl_fx_journal_open(PATH, false);
  j = ctl_jobs_find(&FX.js, "j");
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(j->parts[1].empty);
  ck_assert_str_eq(j->parts[1].lost_id, "b");
  FX.nev = 0;
  ctl_fx_add_node("a", NULL, 1, 1, 100);
  ctl_fx_add_node("b", NULL, 1, 2, 100);
  ctl_fx_add_node("c", NULL, 1, 3, 100);
  ctl_fx_add_node("d", NULL, 1, 4, 100);
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("d")].jobp, j);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("b")].jobp);
  ck_assert(ctl_fx_seen("assign 1 to d e2 r1 restore=5"));
  /* compacted: still there */
  ck_assert_int_eq(ctl_journal_compact(FX.jr, &FX.js, true), PT_OK);
  ctl_fx_close();
  ctl_fx_journal_open(PATH, false);
  j = ctl_jobs_find(&FX.js, "j");
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(j->parts[1].empty);
  ck_assert_uint_eq(j->committed, 5);
  /* a commit after the placement: replayed, no longer empty */
  ctl_fx_add_node("a", NULL, 1, 1, 100);
  ctl_fx_add_node("c", NULL, 1, 3, 100);
  ctl_fx_add_node("d", NULL, 1, 4, 100);
  ctl_fx_run_all(j, 200);
  ctl_fx_commit_steps(j, 6, 6);
  ck_assert(!j->parts[1].empty);
  ctl_fx_close();
  ctl_fx_journal_open(PATH, false);
  j = ctl_jobs_find(&FX.js, "j");
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(!j->parts[1].empty);
  ck_assert_uint_eq(j->committed, 6);
  ctl_fx_close();

  /* torn: the placement's record cut short keeps b and epoch 1 */
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -f '%s'", PATH);
  ck_assert_int_eq(system(cmd), 0);
  ctl_fx_journal_open(PATH, true);
  j = abc_job();
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ctl_fx_close();
  struct stat st;
  ck_assert_int_eq(stat(PATH, &st), 0);
  ck_assert_int_eq(truncate(PATH, st.st_size - 3), 0);
  ctl_fx_init();
  ck_assert_int_eq(ctl_journal_open(&FX.jr, PATH, &FX.js, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ck_assert_uint_gt(dropped, 0);
  ctl_jobs_replay_done(&FX.js, 0);
  j = ctl_jobs_find(&FX.js, "j");
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_str_eq(j->parts[1].node_id, "b");
  ck_assert(!j->parts[1].empty);
  ctl_fx_close();
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", DIRP);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* After a controller restart, a node of a coded job that does not register
 * again within dead-after is lost as a dead one is: a spare takes its
 * place (before, the job waited out dead-after + node_wait_ms and
 * failed). */
START_TEST(spare_after_controller_restart)
{
  char err[512];
  uint64_t dropped = 0;
  snprintf(DIRP, sizeof(DIRP), "/tmp/pt-test-spare.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
  ctl_fx_journal_open(PATH, true);
  abc_job();
  ctl_fx_close();

  ctl_fx_init();
  ck_assert_int_eq(ctl_journal_open(&FX.jr, PATH, &FX.js, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&FX.js, 1000);
  struct ctl_job *j = ctl_jobs_find(&FX.js, "j");
  FX.nev = 0;
  ctl_fx_add_node("a", NULL, 1, 1, 1100);
  ctl_fx_add_node("c", NULL, 1, 3, 1100);
  ctl_fx_add_node("d", NULL, 1, 4, 1100);
  ctl_jobs_tick_all(&FX.js, 1000 + ctl_fx_timeouts.dead_after_ms - 1);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("d")].jobp);
  ctl_jobs_tick_all(&FX.js, 1000 + ctl_fx_timeouts.dead_after_ms);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(j->parts[1].empty);
  ck_assert(!j->recovering);
  long e = ctl_fx_idx("J EPOCH j e2 1=d");
  ck_assert(e >= 0 && ctl_fx_idx("assign 1 to d e2 r1 restore=5") > e);
  /* b, late: not the job's any more */
  ctl_fx_add_node("b", NULL, 1, 2, 20000);
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("b")].jobp);
  ctl_fx_run_all(j, 20000);
  ctl_jobs_tick_all(&FX.js, 1000 + ctl_fx_timeouts.dead_after_ms + 60000);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  ctl_fx_close();
  char cmd[160];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", DIRP);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A job without a code cannot rebuild a lost node: it waits for it, the
 * spare left free (for a coded job, which takes it). */
START_TEST(no_code_no_spare)
{
  ctl_fx_setup();
  ctl_fx_add_node("a", NULL, 1, 1, 0);
  ctl_fx_add_node("b", NULL, 1, 2, 0);
  ctl_fx_add_node("c", NULL, 1, 3, 0);
  struct ctl_job *plain = ctl_fx_start_job("plain", 3, 0, 0, 0);
  ck_assert_uint_eq(plain->groups.n, 0);
  ctl_fx_commit_steps(plain, 1, 3);
  ctl_fx_add_node("e", NULL, 1, 5, 0);
  ctl_fx_add_node("f", NULL, 1, 6, 0);
  ctl_fx_add_node("g", NULL, 1, 7, 0);
  struct ctl_job *coded = ctl_fx_start_job("coded", 3, 2, 1, 0);
  ctl_fx_commit_steps(coded, 1, 2);
  ctl_fx_add_node("d", NULL, 1, 4, 0);
  ctl_fx_node_dies(2, 1000);
  ck_assert_int_eq(plain->state, CTL_JOB_WAITING);
  ck_assert_str_eq(plain->parts[1].node_id, "b");
  ck_assert_ptr_null(FX.m.nodes[ctl_fx_node_index("d")].jobp);
  /* b back: plain restarts on it, restoring its step */
  FX.nev = 0;
  ctl_fx_add_node("b", NULL, 1, 12, 2000);
  ck_assert_uint_eq(plain->epoch, 2);
  ck_assert(ctl_fx_seen("assign 1 to b e2 r1 restore=3"));
  /* the coded job's loss takes d */
  ctl_fx_node_dies(6, 3000);
  ck_assert_str_eq(coded->parts[1].node_id, "d");
  ck_assert_ptr_eq(FX.m.nodes[ctl_fx_node_index("d")].jobp, coded);
  ctl_fx_close();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_spare");
  TCase *tc = tcase_create("spare");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, spare_takes_place);
  tcase_add_test(tc, no_spare_waits);
  tcase_add_test(tc, failure_domain_preference);
  tcase_add_test(tc, m_plus_one_fails);
  tcase_add_test(tc, second_loss_during_rebuild);
  tcase_add_test(tc, placement_replayed);
  tcase_add_test(tc, spare_after_controller_restart);
  tcase_add_test(tc, no_code_no_spare);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
