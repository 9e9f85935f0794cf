/*
 * test_ctl_journal.c — the controller's journal (daemon/controller/
 * ctl_journal.c) under the job table: what a run journaled rebuilds the
 * same jobs (epoch, committed step, placement, ended jobs), a node that
 * registers again is told its epoch and committed step; a torn last record
 * is dropped, a flipped byte in the middle refused naming the journal and
 * the offset; compaction keeps the state, and the journal stays bounded
 * over 100,000 commits.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/journal.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

static struct journal *JR;
static char DIRP[64], PATH[128];
static char last_assign[256];
static uint64_t tick[8], tickets;

static int f_assign(void *ctx, struct ctl_job *j, uint32_t p)
{
  (void)ctx;
  snprintf(last_assign, sizeof(last_assign),
           "assign %u e%llu restore=%lld committed=%lld", p,
           (unsigned long long)j->epoch,
           j->has_restore ? (long long)j->restore_step : -1LL,
           j->has_committed ? (long long)j->committed : -1LL);
  return 0;
}
static int f_halt(void *ctx, struct ctl_job *j, uint32_t p, bool remove)
{
  (void)ctx;
  (void)j;
  (void)p;
  (void)remove;
  return 0;
}
static int f_pin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step,
                 uint64_t *ticket)
{
  (void)ctx;
  (void)j;
  (void)step;
  *ticket = tick[p] = ++tickets;
  return 0;
}
static int f_cu(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step)
{
  (void)ctx;
  (void)j;
  (void)p;
  (void)step;
  return 0;
}
static int f_journal(void *ctx, const struct ctl_job *j, enum ctl_rec kind)
{
  struct ctl_jobs *js = ctx;
  int rc = ctl_journal_append(JR, j, kind);
  if (rc == PT_OK)
    rc = ctl_journal_compact(JR, js, false);
  return rc;
}
static int n_persisted;
static int f_persisted(void *ctx, struct ctl_job *j, uint32_t p)
{
  (void)ctx;
  (void)j;
  (void)p;
  n_persisted++;
  return 0;
}

static const struct ctl_jobs_ops OPS = {f_assign, f_halt, f_pin,
                                        f_cu,     f_cu,   f_journal, f_persisted, NULL};
static const struct ctl_timeouts T = {.heartbeat_ms = 1000,
                                      .dead_after_ms = 10000,
                                      .grace_ms = 5000};
static uint8_t INC[16] = {1};

struct world {
  struct ctl_members m;
  struct ctl_jobs js;
};

static void add_node(struct world *w, const char *id, uintptr_t conn)
{
  struct ctl_register r = {.node_id = id, .handshake_id = id,
                           .advertise = "127.0.0.1", .capacity = 2,
                           .incarnation = INC, .incarnation_len = 16};
  enum ctl_reg_kind kind;
  void *old;
  char err[256];
  ck_assert_int_eq(ctl_members_register(&w->m, &r, (void *)conn, 0, &kind,
                                        &old, err, sizeof(err)),
                   PT_OK);
  struct ctl_node *n = ctl_members_find(&w->m, id);
  ctl_jobs_node_registered(&w->js, (size_t)(n - w->m.nodes), 0);
}

static void world_init(struct world *w)
{
  ctl_members_init(&w->m, &T, NULL, NULL);
  ctl_jobs_init(&w->js, &w->m, &OPS, &w->js);
}

/* Opens the journal into a fresh world. Returns journal_open's code. */
static int world_open(struct world *w, uint64_t *dropped, char *err,
                      size_t errlen)
{
  world_init(w);
  int rc = ctl_journal_open(&JR, PATH, &w->js, dropped, err, errlen);
  if (rc == PT_OK)
    ctl_jobs_replay_done(&w->js, 0);
  return rc;
}

static void world_close(struct world *w)
{
  if (JR != NULL)
    journal_close(JR);
  JR = NULL;
  ctl_jobs_release(&w->js);
  ctl_members_release(&w->m);
}

static void dir_make(void)
{
  /* tmpfs when there is one: 100,000 fdatasyncs */
  snprintf(DIRP, sizeof(DIRP), "%s/pt-test-ctljr.XXXXXX",
           access("/dev/shm", W_OK) == 0 ? "/dev/shm" : "/tmp");
  ck_assert_ptr_nonnull(mkdtemp(DIRP));
  snprintf(PATH, sizeof(PATH), "%s/journal", DIRP);
}
static void dir_remove(void)
{
  char cmd[160];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", DIRP);
  ck_assert_int_eq(system(cmd), 0);
}

static char *ARGV[] = {"pt-train", "--steps", "10"};

static struct ctl_job *start(struct world *w, const char *name)
{
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  struct ctl_job *j;
  char err[256];
  s.name = (char *)name;
  s.n_argv = 3;
  s.argv = ARGV;
  s.nodes = 2;
  s.ranks_per_node = 2;
  ck_assert_int_eq(ctl_jobs_start(&w->js, &s, 0, &j, err, sizeof(err)),
                   PT_OK);
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&w->js, j, p, j->epoch, CTL_PART_RUNNING, NULL, NULL,
                        0);
  return j;
}

static void commit(struct world *w, struct ctl_job *j, uint64_t step)
{
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_parts_sealed(&w->js, j, p, j->epoch, step, false, 0);
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_parts_vote(&w->js, j, p, j->epoch, step, tick[p], 0, NULL, 0);
  ck_assert_uint_eq(j->committed, step);
}

/* A run: job a (2 nodes) commits 3..5, restarts (epoch 2 from 5),
 * commits 6; job b ends stopped. */
static void a_run(void)
{
  struct world w;
  char err[512];
  uint64_t dropped;
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  add_node(&w, "n0", 1);
  add_node(&w, "n1", 2);
  add_node(&w, "n2", 3);
  add_node(&w, "n3", 4);
  struct ctl_job *a = start(&w, "a");
  for (uint64_t s = 3; s <= 5; s++)
    commit(&w, a, s);
  ctl_jobs_parts_state(&w.js, a, 1, 1, CTL_PART_FAILED, "boom", NULL, 10);
  ctl_jobs_tick_all(&w.js, 10000);
  ck_assert_uint_eq(a->epoch, 2);
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&w.js, a, p, 2, CTL_PART_RUNNING, NULL, NULL, 10001);
  commit(&w, a, 6);
  struct ctl_job *b = start(&w, "b");
  commit(&w, b, 1);
  ck_assert_int_eq(ctl_jobs_stop(&w.js, "b", false, 20000, err, sizeof(err)), PT_OK);
  world_close(&w);
}

/* What a reopened world says about job a. */
static void check_a(struct world *w, uint64_t committed, uint64_t epoch)
{
  struct ctl_job *a = ctl_jobs_find(&w->js, "a");
  ck_assert_ptr_nonnull(a);
  ck_assert_int_eq(a->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(a->epoch, epoch);
  ck_assert(a->has_committed);
  ck_assert_uint_eq(a->committed, committed);
  ck_assert_str_eq(a->parts[0].node_id, "n0");
  ck_assert_str_eq(a->parts[1].node_id, "n1");
  ck_assert_uint_eq(a->master_port, 29500);
  ck_assert_str_eq(a->master_addr, "127.0.0.1");
}

START_TEST(replay_rebuilds)
{
  struct world w;
  char err[512];
  uint64_t dropped = 1;

  dir_make();
  a_run();
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(dropped, 0);
  check_a(&w, 6, 2);
  struct ctl_job *a = ctl_jobs_find(&w.js, "a");
  ck_assert_uint_eq(a->restarts, 1);
  ck_assert(a->has_restore && a->restore_step == 5);
  /* why it restarted survives the controller's restart */
  ck_assert_msg(strstr(a->reason, "boom") != NULL, "reason '%s'", a->reason);
  struct ctl_job *b = ctl_jobs_find(&w.js, "b");
  ck_assert_ptr_nonnull(b);
  ck_assert_int_eq(b->state, CTL_JOB_STOPPED);
  ck_assert_str_eq(b->reason, "stopped by ptctl");
  ck_assert(b->removed); /* a node that comes back is told to remove them */
  ck_assert_uint_eq(w.js.nlive, 1);
  ck_assert_uint_eq(w.js.nended, 1);
  /* a node of a registering again: the same epoch, the committed step */
  last_assign[0] = '\0';
  add_node(&w, "n1", 9);
  ck_assert_str_eq(last_assign, "assign 1 e2 restore=5 committed=6");
  ck_assert_str_eq(ctl_members_find(&w.m, "n1")->job, "a");
  /* and no other job may take it */
  add_node(&w, "n0", 8);
  ctl_jobs_parts_state(&w.js, a, 0, 2, CTL_PART_RUNNING, NULL, NULL, 1);
  ctl_jobs_parts_state(&w.js, a, 1, 2, CTL_PART_RUNNING, NULL, NULL, 1);
  ck_assert_int_eq(a->state, CTL_JOB_RUNNING);
  /* commits go on past the replayed one, journaled as before */
  commit(&w, a, 7);
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  check_a(&w, 7, 2);
  /* nodes that never come back: the job fails after dead-after + wait */
  ctl_jobs_tick_all(&w.js, T.dead_after_ms + 60000 - 1);
  ck_assert_int_eq(ctl_jobs_find(&w.js, "a")->state, CTL_JOB_STARTING);
  ctl_jobs_tick_all(&w.js, T.dead_after_ms + 60000);
  ck_assert_int_eq(ctl_jobs_find(&w.js, "a")->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(ctl_jobs_find(&w.js, "a")->reason,
                               "node 'n0' did not register again"));
  world_close(&w);
  dir_remove();
}
END_TEST

static void add_node_in(struct world *w, const char *id, const char *dom,
                        uintptr_t conn)
{
  struct ctl_register r = {.node_id = id, .handshake_id = id,
                           .advertise = "127.0.0.1", .failure_domain = dom,
                           .capacity = 2, .incarnation = INC,
                           .incarnation_len = 16};
  enum ctl_reg_kind kind;
  void *old;
  char err[256];
  ck_assert_int_eq(ctl_members_register(&w->m, &r, (void *)conn, 0, &kind,
                                        &old, err, sizeof(err)),
                   PT_OK);
  struct ctl_node *n = ctl_members_find(&w->m, id);
  ctl_jobs_node_registered(&w->js, (size_t)(n - w->m.nodes), 0);
}

/* "0,1,4|2,3,5": j's node groups. */
static const char *groups_str(const struct ctl_job *j)
{
  static char buf[256];
  size_t n = 0;
  buf[0] = '\0';
  for (uint32_t i = 0; i < j->groups.n; i++)
    for (uint32_t x = j->groups.first[i]; x < j->groups.first[i + 1]; x++)
      n += (size_t)snprintf(buf + n, sizeof(buf) - n, "%s%u",
                            x == j->groups.first[i] ? (i > 0 ? "|" : "")
                                                    : ",",
                            j->groups.member[x]);
  return buf;
}

/* The coding groups come back from the journal as they were formed (from
 * failure domains the replay does not know: formed again without them, the
 * node list would be cut in consecutive groups), after a compaction too. */
START_TEST(groups_replayed)
{
  struct world w;
  char err[512];
  uint64_t dropped;

  dir_make();
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  static const char *const dom[] = {"a", "a", "a", "a", "b", "b"};
  for (int i = 0; i < 6; i++) {
    char id[16];
    snprintf(id, sizeof(id), "n%d", i);
    add_node_in(&w, id, dom[i], (uintptr_t)(i + 1));
  }
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  struct ctl_job *j;
  s.name = "g";
  s.n_argv = 3;
  s.argv = ARGV;
  s.nodes = 6;
  s.ranks_per_node = 2;
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 1;
  ck_assert_int_eq(ctl_jobs_start(&w.js, &s, 0, &j, err, sizeof(err)),
                   PT_OK);
  /* placed a b a b a a: two groups of 3 with two of rack a each */
  ck_assert_str_eq(groups_str(j), "0,1,4|2,3,5");
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  j = ctl_jobs_find(&w.js, "g");
  ck_assert_ptr_nonnull(j);
  ck_assert_uint_eq(j->groups.m, 1);
  ck_assert_str_eq(groups_str(j), "0,1,4|2,3,5");
  ck_assert_uint_eq(j->groups.group_of[4], 0);
  ck_assert_uint_eq(j->groups.index_of[4], 2);
  ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  j = ctl_jobs_find(&w.js, "g");
  ck_assert_str_eq(groups_str(j), "0,1,4|2,3,5");
  world_close(&w);
  dir_remove();
}
END_TEST

/* A restart waiting out its backoff when the journal is compacted and the
 * controller then restarts: the failure is counted once, by the restart the
 * new controller makes, not also by the copy. */
START_TEST(pending_restart_counted_once)
{
  struct world w;
  char err[512];
  uint64_t dropped;

  dir_make();
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  add_node(&w, "n0", 1);
  add_node(&w, "n1", 2);
  struct ctl_job *a = start(&w, "a");
  commit(&w, a, 3);
  ctl_jobs_parts_state(&w.js, a, 1, 1, CTL_PART_FAILED, "boom", NULL, 10);
  ck_assert_int_eq(a->state, CTL_JOB_RESTARTING);
  ck_assert_uint_eq(a->restarts, 1);
  ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
  world_close(&w);

  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  a = ctl_jobs_find(&w.js, "a");
  ck_assert_ptr_nonnull(a);
  ck_assert_uint_eq(a->epoch, 1);
  ck_assert_uint_eq(a->restarts, 0);
  /* the part reports its failure again: one restart, counted once */
  add_node(&w, "n0", 3);
  add_node(&w, "n1", 4);
  ctl_jobs_parts_state(&w.js, a, 1, 1, CTL_PART_FAILED, "boom", NULL, 20);
  ctl_jobs_tick_all(&w.js, 20000);
  ck_assert_uint_eq(a->epoch, 2);
  ck_assert_uint_eq(a->restarts, 1);
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(ctl_jobs_find(&w.js, "a")->restarts, 1);
  world_close(&w);
  dir_remove();
}
END_TEST

/* A job that reuses an ended job's name: its first epoch is above the old
 * job's, after a replay of both (the old job's records, then the new
 * one's) and after a compaction, which keeps the ended job's epoch. */
START_TEST(name_reused_replayed)
{
  struct world w;
  char err[512];
  uint64_t dropped;

  dir_make();
  a_run(); /* b ended in epoch 1 */
  for (int compact = 0; compact < 2; compact++) {
    ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
    if (compact)
      ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
    world_close(&w);
    ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
    struct ctl_job *old = ctl_jobs_find(&w.js, "b");
    ck_assert_int_eq(old->state, CTL_JOB_STOPPED);
    uint64_t was = old->epoch;
    ck_assert_uint_eq(was, compact ? 2 : 1);
    add_node(&w, "n2", 3);
    add_node(&w, "n3", 4);
    struct ctl_job *b = start(&w, "b");
    ck_assert_uint_eq(b->epoch, was + 1);
    ck_assert_uint_eq(b->first_epoch, was + 1);
    commit(&w, b, 1);
    world_close(&w);
    ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
    b = ctl_jobs_find(&w.js, "b");
    ck_assert_int_eq(b->state, CTL_JOB_STARTING);
    ck_assert_uint_eq(b->epoch, was + 1);
    ck_assert_uint_eq(b->first_epoch, was + 1);
    ck_assert_uint_eq(b->restarts, 0);
    last_assign[0] = '\0';
    add_node(&w, "n2", 5);
    char want[64];
    snprintf(want, sizeof(want), "assign 0 e%llu restore=-1 committed=1",
             (unsigned long long)(was + 1));
    ck_assert_str_eq(last_assign, want);
    /* it ends again: the next round reuses the name once more */
    ck_assert_int_eq(ctl_jobs_stop(&w.js, "b", false, 30000, err,
                                   sizeof(err)),
                     PT_OK);
    world_close(&w);
  }
  dir_remove();
}
END_TEST

/* A job revived by ptctl restore (an EPOCH after its END) comes back from
 * the journal live, in its new epoch, with its committed step; and a job
 * revived after a compaction copied it ended goes on from the same epoch
 * and step. An EPOCH after the END of a job whose snapshots were removed
 * is refused. */
START_TEST(revival_replayed)
{
  struct world w;
  char err[512];
  uint64_t dropped, step;
  bool has;

  dir_make();
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  add_node(&w, "n0", 1);
  add_node(&w, "n1", 2);
  struct ctl_job *a = start(&w, "a");
  for (uint64_t s = 3; s <= 5; s++)
    commit(&w, a, s);
  ctl_jobs_parts_state(&w.js, a, 1, 1, CTL_PART_FAILED, "boom", NULL, 10);
  ck_assert_int_eq(a->state, CTL_JOB_RESTARTING);
  /* out of restarts: 3 within the window */
  for (uint64_t e = 2; e <= 4; e++) {
    ctl_jobs_tick_all(&w.js, 10000 * e);
    ctl_jobs_parts_state(&w.js, a, 1, a->epoch, CTL_PART_FAILED, "boom", NULL,
                        10000 * e + 1);
  }
  ck_assert_int_eq(a->state, CTL_JOB_FAILED);
  ck_assert_uint_eq(a->epoch, 4);
  ck_assert_int_eq(ctl_jobs_restore(&w.js, "a", false, 0, 50000, &has, &step,
                                    err, sizeof(err)),
                   PT_OK);
  ck_assert(has && step == 5);
  ck_assert_uint_eq(a->epoch, 5);
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&w.js, a, p, 5, CTL_PART_RUNNING, NULL, NULL, 50001);
  commit(&w, a, 6);
  world_close(&w);

  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  a = ctl_jobs_find(&w.js, "a");
  ck_assert_ptr_nonnull(a);
  ck_assert_int_eq(a->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(a->epoch, 5);
  ck_assert_uint_eq(a->committed, 6);
  ck_assert(a->has_restore && a->restore_step == 5);
  ck_assert_uint_eq(w.js.nlive, 1);
  ck_assert_uint_eq(w.js.nended, 0);
  last_assign[0] = '\0';
  add_node(&w, "n0", 3);
  ck_assert_str_eq(last_assign, "assign 0 e5 restore=5 committed=6");
  add_node(&w, "n1", 4);
  /* stopped --keep, the journal compacted: the copy keeps epoch and step */
  ck_assert_int_eq(ctl_jobs_stop(&w.js, "a", true, 60000, err, sizeof(err)),
                   PT_OK);
  ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
  ck_assert_uint_eq(journal_records(JR), 4); /* JOB EPOCH COMMIT END */
  world_close(&w);

  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  a = ctl_jobs_find(&w.js, "a");
  ck_assert_int_eq(a->state, CTL_JOB_STOPPED);
  ck_assert_uint_eq(a->epoch, 5);
  ck_assert(a->has_committed && a->committed == 6);
  add_node(&w, "n0", 5);
  add_node(&w, "n1", 6);
  last_assign[0] = '\0';
  ck_assert_int_eq(ctl_jobs_restore(&w.js, "a", false, 0, 70000, &has, &step,
                                    err, sizeof(err)),
                   PT_OK);
  ck_assert(has && step == 6);
  ck_assert_str_eq(last_assign, "assign 1 e6 restore=6 committed=6");
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  a = ctl_jobs_find(&w.js, "a");
  ck_assert_int_eq(a->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(a->epoch, 6);
  ck_assert_uint_eq(a->committed, 6);
  /* compacted live, after the revival: the same */
  ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  a = ctl_jobs_find(&w.js, "a");
  ck_assert_int_eq(a->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(a->epoch, 6);
  ck_assert_uint_eq(a->committed, 6);

  /* an EPOCH after the END of a job whose snapshots were removed */
  add_node(&w, "n0", 7);
  add_node(&w, "n1", 8);
  ck_assert_int_eq(ctl_jobs_stop(&w.js, "a", false, 80000, err, sizeof(err)),
                   PT_OK);
  ck_assert_int_eq(ctl_jobs_restore(&w.js, "a", false, 0, 80001, &has, &step,
                                    err, sizeof(err)),
                   -ENOENT);
  a->epoch++;
  ck_assert_int_eq(ctl_journal_append(JR, a, CTL_REC_EPOCH), PT_OK);
  world_close(&w);
  err[0] = '\0';
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "after its END") != NULL, "%s", err);
  world_close(&w);
  dir_remove();
}
END_TEST

START_TEST(torn_and_flipped)
{
  struct world w;
  char err[512];
  uint64_t dropped = 0;
  struct stat st;

  dir_make();
  a_run();
  /* torn: the last record (b's END) loses its last 3 bytes */
  ck_assert_int_eq(stat(PATH, &st), 0);
  ck_assert_int_eq(truncate(PATH, st.st_size - 3), 0);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  ck_assert_uint_gt(dropped, 0);
  check_a(&w, 6, 2);
  /* b's END never took effect: b is live again (and waits for its nodes) */
  ck_assert_int_eq(ctl_jobs_find(&w.js, "b")->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(ctl_jobs_find(&w.js, "b")->committed, 1);
  world_close(&w);

  /* a flipped byte in the middle: refused, naming journal and offset */
  ck_assert_int_eq(stat(PATH, &st), 0);
  int fd = open(PATH, O_RDWR);
  ck_assert_int_ge(fd, 0);
  off_t off = st.st_size / 2;
  unsigned char c;
  ck_assert_int_eq(pread(fd, &c, 1, off), 1);
  c ^= 0x40;
  ck_assert_int_eq(pwrite(fd, &c, 1, off), 1);
  close(fd);
  err[0] = '\0';
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, PATH) != NULL && strstr(err, "offset") != NULL,
                "%s", err);
  world_close(&w);
  dir_remove();
}
END_TEST

START_TEST(compaction_bounded)
{
  struct world w;
  char err[512];
  uint64_t dropped;

  dir_make();
  a_run();
  /* forced compaction: the same state */
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  uint64_t before = journal_records(JR);
  ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
  ck_assert_uint_lt(journal_records(JR), before);
  /* a: JOB EPOCH COMMIT; b: JOB EPOCH END (its epoch: a new b starts
   * above it) */
  ck_assert_uint_eq(journal_records(JR), 6);
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  check_a(&w, 6, 2);
  ck_assert_int_eq(ctl_jobs_find(&w.js, "b")->state, CTL_JOB_STOPPED);
  ck_assert_uint_eq(ctl_jobs_find(&w.js, "b")->epoch, 1);

  /* 100,000 commits: never over the bounds (+ one record) */
  add_node(&w, "n0", 1);
  add_node(&w, "n1", 2);
  struct ctl_job *a = ctl_jobs_find(&w.js, "a");
  ctl_jobs_parts_state(&w.js, a, 0, 2, CTL_PART_RUNNING, NULL, NULL, 1);
  ctl_jobs_parts_state(&w.js, a, 1, 2, CTL_PART_RUNNING, NULL, NULL, 1);
  uint64_t maxrec = 0, maxbytes = 0;
  for (uint64_t s = 7; s < 7 + 100000; s++) {
    commit(&w, a, s);
    if (journal_records(JR) > maxrec)
      maxrec = journal_records(JR);
    if (journal_bytes(JR) > maxbytes)
      maxbytes = journal_bytes(JR);
  }
  ck_assert_uint_le(maxrec, CTL_JOURNAL_MAX_RECORDS + 1);
  ck_assert_uint_le(maxbytes, CTL_JOURNAL_MAX_BYTES + 4096);
  world_close(&w);
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  check_a(&w, 7 + 100000 - 1, 2);
  ck_assert_uint_eq(ctl_jobs_find(&w.js, "a")->commits, 4 + 100000);
  world_close(&w);
  dir_remove();
}
END_TEST

/* An ended job whose snapshots are kept: what its parts held is known
 * straight after a controller restart (journaled with its END, kept by a
 * compaction), so restore --step of an older held step is taken, and one
 * of a step no part holds refused naming what they hold. */
START_TEST(ended_held_replayed)
{
  struct world w;
  char err[512];
  uint64_t dropped, step;
  bool has;
  uint64_t held[3] = {3, 4, 5};

  dir_make();
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  add_node(&w, "n0", 1);
  add_node(&w, "n1", 2);
  struct ctl_job *a = start(&w, "a");
  for (uint64_t s = 3; s <= 5; s++)
    commit(&w, a, s);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.n_held = 3;
  m.held = held;
  m.has_bytes_held = true;
  m.bytes_held = 1234;
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&w.js, a, p, 1, CTL_PART_RUNNING, NULL, &m, 100);
  ck_assert_int_eq(ctl_jobs_stop(&w.js, "a", true, 200, err, sizeof(err)),
                   PT_OK);
  world_close(&w);
  for (int round = 0; round < 2; round++) {
    ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
    a = ctl_jobs_find(&w.js, "a");
    ck_assert_int_eq(a->state, CTL_JOB_STOPPED);
    for (uint32_t p = 0; p < 2; p++) {
      ck_assert_uint_eq(a->parts[p].nheld, 3);
      ck_assert_uint_eq(a->parts[p].bytes_held, 1234);
    }
    if (round == 0) {
      ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
      world_close(&w);
    }
  }
  add_node(&w, "n0", 3);
  add_node(&w, "n1", 4);
  ck_assert_int_eq(ctl_jobs_restore(&w.js, "a", true, 2, 300, &has, &step,
                                    err, sizeof(err)),
                   -ENOENT);
  ck_assert_msg(strstr(err, "steps 5, 4, 3") != NULL, "%s", err);
  ck_assert_int_eq(ctl_jobs_restore(&w.js, "a", true, 4, 300, &has, &step,
                                    err, sizeof(err)),
                   PT_OK);
  ck_assert(has && step == 4);
  world_close(&w);
  dir_remove();
}
END_TEST

/* Node identities (NODE records): replayed, the last one of an id wins,
 * kept by a compaction. */
START_TEST(identities_replayed)
{
  struct world w;
  char err[512];
  uint64_t dropped;
  static const uint8_t ID1[16] = {0x11}, ID2[16] = {0x22}, ID3[16] = {0x33};

  dir_make();
  ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(ctl_journal_append_node(JR, "n0", ID1, 16), PT_OK);
  ck_assert_int_eq(ctl_journal_append_node(JR, "n1", ID2, 16), PT_OK);
  ck_assert_int_eq(ctl_journal_append_node(JR, "n0", ID3, 16), PT_OK);
  world_close(&w);
  for (int round = 0; round < 2; round++) {
    ck_assert_int_eq(world_open(&w, &dropped, err, sizeof(err)), PT_OK);
    ck_assert_uint_eq(w.m.nident, 2);
    const struct ctl_ident *e = ctl_members_identity(&w.m, "n0");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(memcmp(e->tok, ID3, 16), 0);
    e = ctl_members_identity(&w.m, "n1");
    ck_assert_ptr_nonnull(e);
    ck_assert_int_eq(memcmp(e->tok, ID2, 16), 0);
    /* a registration of n0 with ID1 is refused after the restart */
    struct ctl_register r = {.node_id = "n0", .handshake_id = "n0",
                             .advertise = "127.0.0.1", .capacity = 2,
                             .incarnation = INC, .incarnation_len = 16,
                             .identity = ID1, .identity_len = 16};
    enum ctl_reg_kind kind;
    void *old;
    ck_assert_int_eq(ctl_members_register(&w.m, &r, (void *)1, 0, &kind, &old,
                                          err, sizeof(err)), -EPERM);
    if (round == 0) {
      ck_assert_int_eq(ctl_journal_compact(JR, &w.js, true), PT_OK);
      ck_assert_uint_eq(journal_records(JR), 2);
    }
    world_close(&w);
  }
  dir_remove();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_journal");
  TCase *tc = tcase_create("journal");
  tcase_set_timeout(tc, 120);
  tcase_add_test(tc, replay_rebuilds);
  tcase_add_test(tc, groups_replayed);
  tcase_add_test(tc, torn_and_flipped);
  tcase_add_test(tc, compaction_bounded);
  tcase_add_test(tc, name_reused_replayed);
  tcase_add_test(tc, pending_restart_counted_once);
  tcase_add_test(tc, revival_replayed);
  tcase_add_test(tc, identities_replayed);
  tcase_add_test(tc, ended_held_replayed);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
