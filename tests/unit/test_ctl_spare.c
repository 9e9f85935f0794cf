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
#include "tests/unit/unit.h"

/* ---- what the table asks for, as lines ---- */

static char ev[1024][160];
static size_t nev;
static uint64_t last_ticket[64], tickets;
static struct journal *JR; /* a real journal too, when open */
static struct ctl_members M;
static struct ctl_jobs JS;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
  va_list ap;
  if (nev >= 1024)
    return;
  va_start(ap, fmt);
  vsnprintf(ev[nev++], sizeof(ev[0]), fmt, ap);
  va_end(ap);
}

static long idx_of(const char *s)
{
  for (size_t i = 0; i < nev; i++)
    if (strcmp(ev[i], s) == 0)
      return (long)i;
  return -1;
}
static bool seen(const char *s)
{
  return idx_of(s) >= 0;
}
static void dump(void)
{
  for (size_t i = 0; i < nev; i++)
    fprintf(stderr, "  ev %zu: %s\n", i, ev[i]);
}

/* The node the assignment goes to, as the membership has it. */
static int f_assign(void *ctx, struct ctl_job *j, uint32_t p)
{
  struct ctl_jobs *js = ctx;
  size_t i = j->parts[p].node;
  note("assign %u to %s e%llu r%u restore=%lld", p,
       i < js->m->n ? js->m->nodes[i].id : "?", (unsigned long long)j->epoch,
       ctl_jobs_first_rank(j, p),
       j->has_restore ? (long long)j->restore_step : -1LL);
  return 0;
}
static int f_halt(void *ctx, struct ctl_job *j, uint32_t p, bool remove)
{
  (void)ctx;
  note("halt %u e%llu remove=%d", p, (unsigned long long)j->epoch, remove);
  return 0;
}
static int f_pin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step,
                 uint64_t *ticket)
{
  (void)ctx;
  (void)j;
  (void)step;
  *ticket = last_ticket[p] = ++tickets;
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
/* EPOCH lines name the parts placed (empty) as the record holds them. */
static int f_journal(void *ctx, const struct ctl_job *j, enum ctl_rec kind)
{
  struct ctl_jobs *js = ctx;
  char placed[128] = "";
  size_t off = 0;
  switch (kind) {
  case CTL_REC_JOB:
    note("J JOB %s", j->spec->name);
    break;
  case CTL_REC_EPOCH:
    for (uint32_t p = 0; p < j->nparts; p++)
      if (j->parts[p].empty && off < sizeof(placed))
        off += (size_t)snprintf(placed + off, sizeof(placed) - off, " %u=%s",
                                p, j->parts[p].node_id);
    note("J EPOCH %s e%llu%s", j->spec->name, (unsigned long long)j->epoch,
         placed);
    break;
  case CTL_REC_COMMIT:
    note("J COMMIT %s s%llu", j->spec->name,
         (unsigned long long)j->committed);
    break;
  case CTL_REC_END:
    note("J END %s %s", j->spec->name, ctl_jobs_state_name(j->state));
    break;
  default:
    break;
  }
  if (JR == NULL)
    return 0;
  int rc = ctl_journal_append(JR, j, kind);
  return rc == PT_OK ? ctl_journal_compact(JR, js, false) : rc;
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

static void world_init(void)
{
  ctl_members_init(&M, &T, NULL, NULL);
  ctl_jobs_init(&JS, &M, &OPS, &JS);
}
static void setup(void)
{
  nev = 0;
  JR = NULL;
  world_init();
}
static void world_close(void)
{
  if (JR != NULL)
    journal_close(JR);
  JR = NULL;
  ctl_jobs_release(&JS);
  ctl_members_release(&M);
}

/* Node id on connection conn (the conns of the test's nodes: 1..32). */
static void add_node(const char *id, const char *dom, uint32_t cap,
                     uintptr_t conn, uint64_t now)
{
  char adv[32];
  snprintf(adv, sizeof(adv), "10.0.0.%u", (unsigned)conn);
  struct ctl_register r = {.node_id = id, .handshake_id = id,
                           .advertise = adv, .failure_domain = dom,
                           .capacity = cap, .incarnation = INC,
                           .incarnation_len = 16};
  enum ctl_reg_kind kind;
  void *old;
  char err[256];
  ck_assert_int_eq(ctl_members_register(&M, &r, (void *)conn, now, &kind, &old,
                                        err, sizeof(err)),
                   PT_OK);
  struct ctl_node *n = ctl_members_find(&M, id);
  ctl_jobs_node_registered(&JS, (size_t)(n - M.nodes), now);
}

static size_t node_index(const char *id)
{
  struct ctl_node *n = ctl_members_find(&M, id);
  ck_assert_ptr_nonnull(n);
  return (size_t)(n - M.nodes);
}

/* Nodes on the connections in dead[] (0-terminated) lose them at now and
 * are declared dead together; the others heartbeat. */
static void nodes_die(const uintptr_t *dead, uint64_t now)
{
  for (const uintptr_t *d = dead; *d != 0; d++)
    ctl_members_lost(&M, (void *)*d, now);
  for (uintptr_t c = 1; c <= 32; c++) {
    bool is_dead = false;
    for (const uintptr_t *d = dead; *d != 0; d++)
      is_dead |= *d == c;
    if (!is_dead)
      (void)ctl_members_heartbeat(&M, (void *)c, now + T.grace_ms);
  }
  ctl_members_tick(&M, now + T.grace_ms, NULL, 0);
  for (const uintptr_t *d = dead; *d != 0; d++)
    for (size_t i = 0; i < M.n; i++)
      if (M.nodes[i].state == CTL_NODE_DEAD && M.nodes[i].jobp != NULL)
        ctl_jobs_node_down(&JS, i, now + T.grace_ms);
}
static void node_dies(uintptr_t conn, uint64_t now)
{
  uintptr_t d[2] = {conn, 0};
  nodes_die(d, now);
}

static char *ARGV[] = {"pt-train", "--steps", "10"};

/* Job name on nodes (its code: k+m, or the default when k is 0 and m is
 * 1; none when both are 0), running. */
static struct ctl_job *start_job(const char *name, uint32_t nodes, uint32_t k,
                                 uint32_t m, uint64_t now)
{
  char err[256];
  struct ctl_job *j;
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  s.name = (char *)name;
  s.n_argv = 3;
  s.argv = ARGV;
  s.nodes = nodes;
  s.ranks_per_node = 1;
  if (!(k == 0 && m == 1)) {
    s.has_code_k = s.has_code_m = true;
    s.code_k = k;
    s.code_m = m;
  }
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, now, &j, err, sizeof(err)), PT_OK);
  for (uint32_t p = 0; p < nodes; p++)
    ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, p, j->epoch,
                                         CTL_PART_RUNNING, NULL, NULL, now),
                     PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  return j;
}

static void run_all(struct ctl_job *j, uint64_t now)
{
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_parts_state(&JS, j, p, j->epoch, CTL_PART_RUNNING, NULL, NULL,
                        now);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
}

static void commit_steps(struct ctl_job *j, uint64_t from, uint64_t to)
{
  for (uint64_t st = from; st <= to; st++) {
    for (uint32_t p = 0; p < j->nparts; p++)
      ctl_jobs_parts_sealed(&JS, j, p, j->epoch, st, false, 10);
    for (uint32_t p = 0; p < j->nparts; p++)
      ctl_jobs_parts_vote(&JS, j, p, j->epoch, st, last_ticket[p], 0, NULL, 10);
  }
  ck_assert_uint_eq(j->committed, to);
}

/* a b c (conns 1-3) run job j, code 2+1, steps 1..5 committed. */
static struct ctl_job *abc_job(void)
{
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  add_node("c", NULL, 1, 3, 0);
  struct ctl_job *j = start_job("j", 3, 2, 1, 0);
  ck_assert_uint_eq(j->groups.n, 1);
  commit_steps(j, 1, 5);
  nev = 0;
  return j;
}

/* b dies; spare d (registered, free) takes index 1: same member of the
 * group, same rank; the EPOCH record holding the placement is written
 * before any assignment, and every part, the spare's too, restores the
 * committed step; the dead node leaves the job; a commit after protects
 * the group again. */
START_TEST(spare_takes_place)
{
  setup();
  struct ctl_job *j = abc_job();
  add_node("d", NULL, 1, 4, 100);
  ck_assert_ptr_null(M.nodes[node_index("d")].jobp); /* a spare, free */
  uint32_t grp = j->groups.group_of[1], mem = j->groups.index_of[1];
  node_dies(2, 1000);
  if (!seen("J EPOCH j e2 1=d"))
    dump();
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert_uint_eq(j->parts[1].node, node_index("d"));
  ck_assert(j->parts[1].empty);
  ck_assert_str_eq(j->parts[1].lost_id, "b");
  ck_assert_ptr_eq(M.nodes[node_index("d")].jobp, j);
  ck_assert_str_eq(M.nodes[node_index("d")].job, "j");
  ck_assert_ptr_null(M.nodes[node_index("b")].jobp);
  ck_assert_str_eq(M.nodes[node_index("b")].job, "");
  ck_assert_uint_eq(j->groups.group_of[1], grp);
  ck_assert_uint_eq(j->groups.index_of[1], mem);
  ck_assert_uint_eq(j->groups.member[j->groups.first[grp] + mem], 1);
  long e = idx_of("J EPOCH j e2 1=d");
  long a1 = idx_of("assign 1 to d e2 r1 restore=5");
  ck_assert_msg(e >= 0 && a1 > e, "EPOCH at %ld, assign to d at %ld", e, a1);
  ck_assert(idx_of("assign 0 to a e2 r0 restore=5") > e);
  ck_assert(idx_of("assign 2 to c e2 r2 restore=5") > e);
  ck_assert(!seen("assign 1 to b e2 r1 restore=5"));
  ck_assert_ptr_nonnull(strstr(j->reason, "spare 'd'"));
  /* b back later: not in the job any more */
  nev = 0;
  add_node("b", NULL, 1, 12, 2000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_ptr_null(M.nodes[node_index("b")].jobp);
  ck_assert_uint_eq(nev, 0);
  /* running, and a newer step committed everywhere: protected again */
  run_all(j, 3000);
  commit_steps(j, 6, 6);
  ck_assert(!j->parts[1].empty);
  world_close();
}
END_TEST

/* No spare: the job waits for the dead node, as before (a spare in another
 * job, or too small, is none); one that registers during the wait takes
 * the place. */
START_TEST(no_spare_waits)
{
  setup();
  struct ctl_job *j = abc_job();
  add_node("x", NULL, 1, 6, 0);
  struct ctl_job *other = start_job("other", 1, 0, 0, 0);
  ck_assert_ptr_eq(M.nodes[node_index("x")].jobp, other);
  /* a free node too small for the job's ranks per node is no spare */
  add_node("small", NULL, 1, 5, 0);
  j->spec->ranks_per_node = 2; /* as if the job had 2 ranks per node */
  nev = 0;
  node_dies(2, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_str_eq(j->parts[1].node_id, "b");
  ck_assert_ptr_nonnull(strstr(j->reason, "node 'b' is dead"));
  ck_assert(seen("halt 0 e1 remove=0") && seen("halt 2 e1 remove=0"));
  ck_assert_ptr_eq(M.nodes[node_index("x")].jobp, other);
  ck_assert_ptr_null(M.nodes[node_index("small")].jobp);
  /* the backoff's end with the node still dead: still waiting */
  ctl_jobs_tick_all(&JS, 20000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  /* a spare registers within the wait: it takes b's place */
  nev = 0;
  add_node("d", NULL, 2, 4, 30000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(idx_of("J EPOCH j e2 1=d") >= 0 &&
            idx_of("J EPOCH j e2 1=d") < idx_of("assign 1 to d e2 r2 restore=5"));
  ck_assert_ptr_null(M.nodes[node_index("small")].jobp);
  world_close();

  /* no spare ever: failed at node_wait_ms, naming b */
  setup();
  j = abc_job();
  node_dies(2, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  ctl_jobs_tick_all(&JS, 1000 + T.grace_ms + 60000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "node 'b' did not come back"));
  world_close();
}
END_TEST

/* The spare comes from a failure domain no other member of the group is
 * in when one does; else the first spare, the labels not allowing. */
START_TEST(failure_domain_preference)
{
  setup();
  add_node("a", "r1", 1, 1, 0);
  add_node("b", "r2", 1, 2, 0);
  add_node("c", "r3", 1, 3, 0);
  struct ctl_job *j = start_job("j", 3, 2, 1, 0);
  commit_steps(j, 1, 2);
  add_node("d", "r1", 1, 4, 0); /* with a */
  add_node("e", "r3", 1, 5, 0); /* with c */
  add_node("f", "r2", 1, 6, 0); /* with b, which is lost: apart from a, c */
  add_node("g", NULL, 1, 7, 0);
  node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "f");
  /* f lost too (before a commit: the group has lost 1 member still, f
   * held nothing): g, no label, is a domain of its own; d, e share */
  node_dies(6, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_str_eq(j->parts[1].node_id, "g");
  ck_assert_str_eq(j->parts[1].lost_id, "b");
  ck_assert_uint_eq(j->epoch, 3);
  /* g lost: only d and e, both beside a member: the first, d */
  node_dies(7, 3000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert_ptr_eq(M.nodes[node_index("d")].jobp, j);
  ck_assert_ptr_null(M.nodes[node_index("e")].jobp);
  world_close();
}
END_TEST

/* Two members of a 2+1 group dead at once with a step committed: failed,
 * the group, the nodes and the code named, the snapshots kept (halts
 * without remove), no new epoch; with nothing committed there is nothing
 * to lose: it waits. */
START_TEST(m_plus_one_fails)
{
  setup();
  struct ctl_job *j = abc_job();
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  uintptr_t bc[] = {2, 3, 0};
  nodes_die(bc, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "coding group 0 lost 2 of its 3 members "
                                  "(nodes b, c); code 2+1 tolerates 1") !=
                    NULL,
                "reason: %s", j->reason);
  ck_assert(seen("J END j failed"));
  ck_assert(!seen("J EPOCH j e2 1=d 2=e"));
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert(seen("halt 0 e1 remove=0"));
  ck_assert(!j->removed);
  ck_assert_ptr_null(M.nodes[node_index("d")].jobp);
  world_close();

  /* nothing committed: the spares take both places, every part fresh */
  setup();
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  add_node("c", NULL, 1, 3, 0);
  j = start_job("j", 3, 2, 1, 0);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  nev = 0;
  nodes_die(bc, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(seen("assign 0 to a e2 r0 restore=-1"));
  world_close();
}
END_TEST

/* A second loss while a spare holds nothing yet: 2+1, a second member lost
 * is the group's second (failed, naming b, whose data the spare had not
 * rebuilt, and c); 2+2 survives it (a second spare), and a third loss
 * fails it; a commit in between makes the spares full members again. */
START_TEST(second_loss_during_rebuild)
{
  setup();
  struct ctl_job *j = abc_job();
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  run_all(j, 1500);
  node_dies(3, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "coding group 0 lost 2 of its 3 members "
                                  "(nodes b, c); code 2+1 tolerates 1") !=
                    NULL,
                "reason: %s", j->reason);
  ck_assert_ptr_null(M.nodes[node_index("e")].jobp);
  world_close();

  /* 2+1 again, but a step commits after d's placement: c's loss is the
   * group's only one now, e takes it */
  setup();
  j = abc_job();
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  node_dies(2, 1000);
  run_all(j, 1500);
  commit_steps(j, 6, 7);
  node_dies(3, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_str_eq(j->parts[2].node_id, "e");
  ck_assert(!j->parts[1].empty && j->parts[2].empty);
  ck_assert(seen("assign 1 to d e3 r1 restore=7"));
  world_close();

  /* 2+2 on 4 nodes: two losses survived, the third not */
  setup();
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  add_node("c", NULL, 1, 3, 0);
  add_node("h", NULL, 1, 8, 0);
  j = start_job("j", 4, 2, 2, 0);
  commit_steps(j, 1, 3);
  add_node("d", NULL, 1, 4, 0);
  add_node("e", NULL, 1, 5, 0);
  add_node("f", NULL, 1, 6, 0);
  node_dies(2, 1000);
  run_all(j, 1100);
  nev = 0;
  node_dies(3, 2000);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(seen("J EPOCH j e3 1=d 2=e"));
  ck_assert(seen("assign 2 to e e3 r2 restore=3"));
  node_dies(1, 3000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "lost 3 of its 4 members (nodes a, b, c); "
                                  "code 2+2 tolerates 2") != NULL,
                "reason: %s", j->reason);
  world_close();
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

  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  struct ctl_job *j = abc_job();
  add_node("d", NULL, 1, 4, 0);
  struct stat before;
  ck_assert_int_eq(stat(PATH, &before), 0);
  node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  world_close();

  /* reopened: d in b's place, empty, the epoch of the placement */
  world_init();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  j = ctl_jobs_find(&JS, "j");
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(j->parts[1].empty);
  ck_assert_str_eq(j->parts[1].lost_id, "b");
  nev = 0;
  add_node("a", NULL, 1, 1, 100);
  add_node("b", NULL, 1, 2, 100);
  add_node("c", NULL, 1, 3, 100);
  add_node("d", NULL, 1, 4, 100);
  ck_assert_ptr_eq(M.nodes[node_index("d")].jobp, j);
  ck_assert_ptr_null(M.nodes[node_index("b")].jobp);
  ck_assert(seen("assign 1 to d e2 r1 restore=5"));
  /* compacted: still there */
  ck_assert_int_eq(ctl_journal_compact(JR, &JS, true), PT_OK);
  world_close();
  world_init();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  j = ctl_jobs_find(&JS, "j");
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(j->parts[1].empty);
  ck_assert_uint_eq(j->committed, 5);
  /* a commit after the placement: replayed, no longer empty */
  add_node("a", NULL, 1, 1, 100);
  add_node("c", NULL, 1, 3, 100);
  add_node("d", NULL, 1, 4, 100);
  run_all(j, 200);
  commit_steps(j, 6, 6);
  ck_assert(!j->parts[1].empty);
  world_close();
  world_init();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  j = ctl_jobs_find(&JS, "j");
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(!j->parts[1].empty);
  ck_assert_uint_eq(j->committed, 6);
  world_close();

  /* torn: the placement's record cut short keeps b and epoch 1 */
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -f '%s'", PATH);
  ck_assert_int_eq(system(cmd), 0);
  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  j = abc_job();
  add_node("d", NULL, 1, 4, 0);
  node_dies(2, 1000);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  world_close();
  struct stat st;
  ck_assert_int_eq(stat(PATH, &st), 0);
  ck_assert_int_eq(truncate(PATH, st.st_size - 3), 0);
  world_init();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ck_assert_uint_gt(dropped, 0);
  ctl_jobs_replay_done(&JS, 0);
  j = ctl_jobs_find(&JS, "j");
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_str_eq(j->parts[1].node_id, "b");
  ck_assert(!j->parts[1].empty);
  world_close();
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
  setup();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 0);
  abc_job();
  world_close();

  world_init();
  ck_assert_int_eq(ctl_journal_open(&JR, PATH, &JS, &dropped, err,
                                    sizeof(err)),
                   PT_OK);
  ctl_jobs_replay_done(&JS, 1000);
  struct ctl_job *j = ctl_jobs_find(&JS, "j");
  nev = 0;
  add_node("a", NULL, 1, 1, 1100);
  add_node("c", NULL, 1, 3, 1100);
  add_node("d", NULL, 1, 4, 1100);
  ctl_jobs_tick_all(&JS, 1000 + T.dead_after_ms - 1);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_ptr_null(M.nodes[node_index("d")].jobp);
  ctl_jobs_tick_all(&JS, 1000 + T.dead_after_ms);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_str_eq(j->parts[1].node_id, "d");
  ck_assert(j->parts[1].empty);
  ck_assert(!j->recovering);
  long e = idx_of("J EPOCH j e2 1=d");
  ck_assert(e >= 0 && idx_of("assign 1 to d e2 r1 restore=5") > e);
  /* b, late: not the job's any more */
  add_node("b", NULL, 1, 2, 20000);
  ck_assert_ptr_null(M.nodes[node_index("b")].jobp);
  run_all(j, 20000);
  ctl_jobs_tick_all(&JS, 1000 + T.dead_after_ms + 60000);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  world_close();
  char cmd[160];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", DIRP);
  ck_assert_int_eq(system(cmd), 0);
}
END_TEST

/* A job without a code cannot rebuild a lost node: it waits for it, the
 * spare left free (for a coded job, which takes it). */
START_TEST(no_code_no_spare)
{
  setup();
  add_node("a", NULL, 1, 1, 0);
  add_node("b", NULL, 1, 2, 0);
  add_node("c", NULL, 1, 3, 0);
  struct ctl_job *plain = start_job("plain", 3, 0, 0, 0);
  ck_assert_uint_eq(plain->groups.n, 0);
  commit_steps(plain, 1, 3);
  add_node("e", NULL, 1, 5, 0);
  add_node("f", NULL, 1, 6, 0);
  add_node("g", NULL, 1, 7, 0);
  struct ctl_job *coded = start_job("coded", 3, 2, 1, 0);
  commit_steps(coded, 1, 2);
  add_node("d", NULL, 1, 4, 0);
  node_dies(2, 1000);
  ck_assert_int_eq(plain->state, CTL_JOB_WAITING);
  ck_assert_str_eq(plain->parts[1].node_id, "b");
  ck_assert_ptr_null(M.nodes[node_index("d")].jobp);
  /* b back: plain restarts on it, restoring its step */
  nev = 0;
  add_node("b", NULL, 1, 12, 2000);
  ck_assert_uint_eq(plain->epoch, 2);
  ck_assert(seen("assign 1 to b e2 r1 restore=3"));
  /* the coded job's loss takes d */
  node_dies(6, 3000);
  ck_assert_str_eq(coded->parts[1].node_id, "d");
  ck_assert_ptr_eq(M.nodes[node_index("d")].jobp, coded);
  world_close();
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
