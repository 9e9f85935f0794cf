/*
 * test_ctl_jobs.c — the controller's job table (daemon/controller/
 * ctl_jobs.c) without sockets or a clock: specs refused with the field
 * named, placement (-ENOSPC with the counts, failure domains spread),
 * ranks and the master, epochs, the commit across nodes (journal before
 * any JOB_COMMIT, an old epoch's vote ignored), restarts with their
 * backoff and window, a dead node waited for then failed, or back in time
 * and a new epoch.
 */
#include <check.h>
#include <errno.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "daemon/controller/controller.h"
#include "tests/unit/unit.h"

/* ---- what the table asks for, as lines ---- */

static char ev[4096][128];
static size_t nev;
static uint64_t last_ticket[1024];
static int journal_fail;

static void note(const char *fmt, ...) __attribute__((format(printf, 1, 2)));
static void note(const char *fmt, ...)
{
  va_list ap;
  if (nev >= 4096)
    return; /* only the thousand-node case gets here; it counts */
  va_start(ap, fmt);
  vsnprintf(ev[nev++], sizeof(ev[0]), fmt, ap);
  va_end(ap);
}

static bool seen(const char *s)
{
  for (size_t i = 0; i < nev; i++)
    if (strcmp(ev[i], s) == 0)
      return true;
  return false;
}

static long idx_of(const char *s)
{
  for (size_t i = 0; i < nev; i++)
    if (strcmp(ev[i], s) == 0)
      return (long)i;
  return -1;
}

static int f_assign(void *ctx, struct ctl_job *j, uint32_t p)
{
  (void)ctx;
  note("assign %u e%llu r%u w%u %s:%u restore=%lld committed=%lld", p,
       (unsigned long long)j->epoch, ctl_jobs_first_rank(j, p),
       ctl_jobs_world_size(j), j->master_addr, j->master_port,
       j->has_restore ? (long long)j->restore_step : -1LL,
       j->has_committed ? (long long)j->committed : -1LL);
  return 0;
}
static int f_halt(void *ctx, struct ctl_job *j, uint32_t p, bool remove)
{
  (void)ctx;
  note("halt %u e%llu remove=%d", p, (unsigned long long)j->epoch, remove);
  return 0;
}
static uint64_t tickets;
static int f_pin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step,
                 uint64_t *ticket)
{
  (void)ctx;
  *ticket = ++tickets;
  last_ticket[p] = *ticket;
  note("pin %u e%llu s%llu", p, (unsigned long long)j->epoch,
       (unsigned long long)step);
  return 0;
}
static int f_commit(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step)
{
  (void)ctx;
  note("commit %u e%llu s%llu", p, (unsigned long long)j->epoch,
       (unsigned long long)step);
  return 0;
}
static int f_unpin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step)
{
  (void)ctx;
  note("unpin %u e%llu s%llu", p, (unsigned long long)j->epoch,
       (unsigned long long)step);
  return 0;
}
static int f_journal(void *ctx, const struct ctl_job *j, enum ctl_rec kind)
{
  (void)ctx;
  if (journal_fail)
    return -EIO;
  switch (kind) {
  case CTL_REC_JOB:
    note("J JOB %s", j->spec->name);
    break;
  case CTL_REC_EPOCH:
    note("J EPOCH %s e%llu", j->spec->name, (unsigned long long)j->epoch);
    break;
  case CTL_REC_COMMIT:
    note("J COMMIT %s e%llu s%llu", j->spec->name,
         (unsigned long long)j->epoch, (unsigned long long)j->committed);
    break;
  case CTL_REC_END:
    note("J END %s %s", j->spec->name, ctl_jobs_state_name(j->state));
    break;
  default:
    break;
  }
  return 0;
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

static const struct ctl_jobs_ops OPS = {f_assign, f_halt,  f_pin,
                                        f_commit, f_unpin, f_journal, f_persisted, NULL};

static const struct ctl_timeouts T = {.heartbeat_ms = 1000,
                                      .dead_after_ms = 10000,
                                      .grace_ms = 5000};
static struct ctl_members M;
static struct ctl_jobs JS;
static uint8_t INC[16] = {1};

static void setup(void)
{
  nev = 0;
  journal_fail = 0;
  ctl_members_init(&M, &T, NULL, NULL);
  ctl_jobs_init(&JS, &M, &OPS, NULL);
}
static void teardown(void)
{
  ctl_jobs_release(&JS);
  ctl_members_release(&M);
}

static void add_node(const char *id, const char *adv, const char *dom,
                     uint32_t cap, uintptr_t conn, uint64_t now)
{
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

static char *ARGV[] = {"pt-train", "--steps", "10"};

static Pt__JobSpec spec(const char *name, uint32_t nodes, uint32_t rpn)
{
  Pt__JobSpec s = PT__JOB_SPEC__INIT;
  s.name = (char *)name;
  s.n_argv = 3;
  s.argv = ARGV;
  s.nodes = nodes;
  s.ranks_per_node = rpn;
  return s;
}

static int check_msg(Pt__JobSpec s, char *err)
{
  return ctl_spec_check(&JS, &s, err, 256);
}

START_TEST(spec_refusals)
{
  char err[256];
  Pt__JobSpec s = spec("train-1.a_b", 2, 2);

  setup();
  ck_assert_int_eq(check_msg(s, err), PT_OK);
  ck_assert_int_eq(ctl_spec_check(&JS, &s, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(s.slots, 3);
  ck_assert_uint_eq(s.max_restarts, 3);
  ck_assert_uint_eq(s.node_wait_ms, 60000);
  ck_assert_uint_eq(s.backoff_ms, 200);

  s = spec("bad name", 2, 2);
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "1..255 bytes of A-Z a-z 0-9 . _ -"));
  s = spec("", 2, 2);
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  char big[300];
  memset(big, 'a', 299);
  big[299] = '\0';
  s = spec(big, 1, 1);
  ck_assert_int_eq(check_msg(s, err), -EINVAL);

  s = spec("j", 2, 2);
  s.n_argv = 0;
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "argv is empty"));
  s = spec("j", 0, 2);
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "nodes 0"));
  s = spec("j", 2, 0);
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "ranks per node 0"));
  s = spec("j", 2, 2);
  s.has_slots = true;
  s.slots = 1;
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "slots 1 (2..8)"));
  s.slots = 9;
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  s = spec("j", 3, 1);
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 0; /* a hostile spec: k without m */
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_msg(strstr(err, "code 2+0: k >= 1 and m >= 1") != NULL, "%s", err);
  s.code_k = 0;
  s.code_m = 1;
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  s.has_code_m = false; /* k given, m absent: m is 0 */
  s.code_k = 2;
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_msg(strstr(err, "code 2+0") != NULL, "%s", err);
  s.has_code_m = true;
  s.code_m = 2; /* 4 > 3 nodes */
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_msg(strstr(err, "code 2+2 needs at least 4 nodes; the job has "
                           "3") != NULL, "%s", err);
  s = spec("j", 40, 1);
  s.has_code_k = s.has_code_m = true;
  s.code_k = 30;
  s.code_m = 3; /* over what ec/ codes */
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_msg(strstr(err, "k + m at most 32") != NULL, "%s", err);
  s.code_k = 20;
  s.code_m = 12; /* one group of 40 */
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_msg(strstr(err, "1 group of up to 40 nodes, more than the 32")
                    != NULL, "%s", err);
  s.code_k = 4;
  s.code_m = 4294967295u; /* k + m wraps in 32 bits */
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  s = spec("j", 3, 1);
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 1;
  ck_assert_int_eq(check_msg(s, err), PT_OK);
  s.code_k = s.code_m = 0; /* none, as given */
  ck_assert_int_eq(check_msg(s, err), PT_OK);
  ck_assert(s.has_code_k && s.code_k == 0 && s.code_m == 0);
  /* Absent: the default by the number of nodes. */
  static const uint32_t dn[][3] = {{1, 0, 0}, {2, 0, 0}, {3, 2, 1},
                                   {5, 2, 1}, {6, 4, 2}, {64, 4, 2}};
  for (size_t i = 0; i < sizeof(dn) / sizeof(dn[0]); i++) {
    s = spec("j", dn[i][0], 1);
    ck_assert_int_eq(check_msg(s, err), PT_OK);
    Pt__JobSpec c = spec("j", dn[i][0], 1);
    ck_assert_int_eq(ctl_spec_check(&JS, &c, err, sizeof(err)), PT_OK);
    ck_assert_msg(c.has_code_k && c.has_code_m && c.code_k == dn[i][1] &&
                      c.code_m == dn[i][2],
                  "%u nodes: %u+%u", dn[i][0], c.code_k, c.code_m);
  }
  s = spec("j", 2, 1);
  s.has_node_wait_ms = true;
  s.node_wait_ms = 10000; /* == dead-after */
  ck_assert_int_eq(check_msg(s, err), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "heartbeat < dead-after < node wait"));
  s.node_wait_ms = 10001;
  ck_assert_int_eq(check_msg(s, err), PT_OK);
  teardown();
}
END_TEST

/* Spares of racks a a a b b c: a job of 5 takes a, b, c, then a, b (not a
 * third of rack a), and 6 nodes at 2+1 make two groups of one node per
 * rack each. */
START_TEST(placement_rounds)
{
  char err[256];
  size_t idx[6];

  setup();
  add_node("a1", "10.0.0.1", "a", 4, 1, 0);
  add_node("a2", "10.0.0.2", "a", 4, 2, 0);
  add_node("a3", "10.0.0.3", "a", 4, 3, 0);
  add_node("b1", "10.0.0.4", "b", 4, 4, 0);
  add_node("b2", "10.0.0.5", "b", 4, 5, 0);
  add_node("c1", "10.0.0.6", "c", 4, 6, 0);
  add_node("c2", "10.0.0.7", "c", 4, 7, 0);
  Pt__JobSpec s = spec("j", 5, 1);
  ck_assert_int_eq(ctl_spec_check(&JS, &s, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(ctl_spec_place(&JS, &s, idx, err, sizeof(err)), PT_OK);
  static const char *const want[] = {"a1", "b1", "c1", "a2", "b2"};
  for (int i = 0; i < 5; i++)
    ck_assert_str_eq(M.nodes[idx[i]].id, want[i]);
  s = spec("j", 6, 1);
  s.has_code_k = s.has_code_m = true;
  s.code_k = 2;
  s.code_m = 1;
  struct ctl_job *j;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(j->groups.n, 2);
  for (uint32_t g = 0; g < 2; g++) {
    const struct ctl_groups *G = &j->groups;
    ck_assert_uint_eq(ctl_groups_size(G, g), 3);
    for (uint32_t x = G->first[g]; x < G->first[g + 1]; x++)
      for (uint32_t y = G->first[g]; y < x; y++)
        ck_assert_str_ne(
            M.nodes[j->parts[G->member[x]].node].failure_domain,
            M.nodes[j->parts[G->member[y]].node].failure_domain);
  }
  teardown();
}
END_TEST

START_TEST(placement)
{
  char err[256];
  size_t idx[4];

  setup();
  add_node("n1", "10.0.0.1", "rack-a", 4, 1, 0);
  add_node("n2", "10.0.0.2", "rack-a", 4, 2, 0);
  add_node("n3", "10.0.0.3", "rack-b", 4, 3, 0);
  add_node("n4", "10.0.0.4", "rack-c", 1, 4, 0);
  add_node("n5", "10.0.0.5", "rack-c", 4, 5, 0);

  /* 3 nodes of capacity >= 2: one per rack, n4 too small */
  Pt__JobSpec s = spec("j", 3, 2);
  ck_assert_int_eq(ctl_spec_check(&JS, &s, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(ctl_spec_place(&JS, &s, idx, err, sizeof(err)), PT_OK);
  ck_assert_str_eq(M.nodes[idx[0]].id, "n1");
  ck_assert_str_eq(M.nodes[idx[1]].id, "n3");
  ck_assert_str_eq(M.nodes[idx[2]].id, "n5");
  /* 4 nodes: the fourth from a rack used already */
  s = spec("j", 4, 2);
  ck_assert_int_eq(ctl_spec_place(&JS, &s, idx, err, sizeof(err)), PT_OK);
  ck_assert_str_eq(M.nodes[idx[3]].id, "n2");
  /* 3 nodes, code 2+1: one group, every member in its own rack */
  s = spec("g", 3, 2);
  struct ctl_job *g;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &g, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(g->spec->code_k, 2);
  ck_assert_uint_eq(g->groups.n, 1);
  ck_assert_uint_eq(ctl_groups_size(&g->groups, 0), 3);
  ck_assert_int_eq(ctl_jobs_stop(&JS, "g", false, 0, err, sizeof(err)), PT_OK);
  /* 5 of capacity 2: only 4 can */
  s = spec("j", 5, 2);
  ck_assert_int_eq(ctl_spec_place(&JS, &s, idx, err, sizeof(err)), -ENOSPC);
  ck_assert_msg(strstr(err, "needs 5 spare nodes") != NULL &&
                    strstr(err, "4 free") != NULL,
                "%s", err);

  /* a job takes 3; another wanting 3 finds 2 free (+ n4, too small) */
  struct ctl_job *j;
  s = spec("first", 3, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  s = spec("second", 3, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)),
                   -ENOSPC);
  ck_assert_msg(strstr(err, "1 free") != NULL, "%s", err);
  s = spec("first", 1, 1);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)),
                   -EEXIST);
  /* a dead node is no spare */
  teardown();
}
END_TEST

START_TEST(ranks_master_epochs)
{
  char err[256];
  struct ctl_job *j, *k;

  setup();
  add_node("n1", "10.0.0.1", "a", 2, 1, 0);
  add_node("n2", "10.0.0.2", "b", 2, 2, 0);
  add_node("n3", "10.0.0.3", "c", 2, 3, 0);
  Pt__JobSpec s = spec("j", 2, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  /* journaled before anything is sent */
  ck_assert_str_eq(ev[0], "J JOB j");
  ck_assert_str_eq(ev[1], "J EPOCH j e1");
  ck_assert(seen("assign 0 e1 r0 w4 10.0.0.1:29500 restore=-1 committed=-1"));
  ck_assert(seen("assign 1 e1 r2 w4 10.0.0.1:29500 restore=-1 committed=-1"));
  ck_assert_str_eq(ctl_members_find(&M, "n1")->job, "j");
  ck_assert_str_eq(ctl_members_find(&M, "n3")->job, "");
  /* another live job gets another port */
  s = spec("k", 1, 1);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &k, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(k->master_port, 29501);
  ck_assert_msg(seen("assign 0 e1 r0 w1 10.0.0.3:29501 restore=-1 committed=-1"),
                "%s", ev[nev - 1]);
  /* running once every part says so */
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 0, 1, CTL_PART_RUNNING, NULL,
                                       NULL, 10),
                   PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 1, 1, CTL_PART_RUNNING, NULL,
                                       NULL, 10),
                   PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  /* another epoch's report: ignored */
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 1, 7, CTL_PART_FAILED, NULL,
                                       NULL, 10),
                   PT_EEPOCH);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  /* every part done: the job is done, END journaled, nodes freed */
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 0, 1, CTL_PART_DONE, NULL,
                                       NULL, 20), PT_OK);
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 1, 1, CTL_PART_DONE, NULL,
                                       NULL, 20), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_DONE);
  ck_assert(seen("J END j done"));
  ck_assert(seen("halt 0 e1 remove=1"));
  ck_assert_str_eq(ctl_members_find(&M, "n1")->job, "");
  ck_assert_ptr_null(ctl_members_find(&M, "n1")->jobp);
  /* its port is free again for a new job, k keeps 29501 */
  ck_assert_uint_eq(ctl_spec_pick_port(&JS, 0), 29500);
  teardown();
}
END_TEST

static struct ctl_job *running_job(uint32_t nodes, uint32_t max_restarts,
                                   uint32_t window_ms)
{
  char err[256];
  struct ctl_job *j;
  char id[16], adv[32];
  for (uint32_t i = 0; i < nodes; i++) {
    snprintf(id, sizeof(id), "n%u", i);
    snprintf(adv, sizeof(adv), "10.0.0.%u", i + 1);
    add_node(id, adv, NULL, 2, i + 1, 0);
  }
  Pt__JobSpec s = spec("j", nodes, 2);
  s.has_max_restarts = true;
  s.max_restarts = max_restarts;
  s.has_restart_window_ms = true;
  s.restart_window_ms = window_ms;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  for (uint32_t p = 0; p < nodes; p++)
    ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, p, j->epoch,
                                         CTL_PART_RUNNING, NULL, NULL, 0),
                     PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  nev = 0;
  return j;
}

START_TEST(commit_across_nodes)
{
  setup();
  struct ctl_job *j = running_job(2, 3, 0);
  ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, 0, 1, 5, false, 100), PT_OK);
  ck_assert_uint_eq(nev, 0); /* one node is not a round */
  ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, 1, 1, 5, false, 100), PT_OK);
  ck_assert(seen("pin 0 e1 s5") && seen("pin 1 e1 s5"));
  /* a vote of another epoch is ignored */
  ck_assert_int_eq(ctl_jobs_parts_vote(&JS, j, 0, 0, 5, last_ticket[0], 0, NULL,
                                 101),
                   PT_EEPOCH);
  ck_assert_int_eq(ctl_jobs_parts_vote(&JS, j, 0, 1, 5, last_ticket[0], 0, NULL,
                                 101),
                   PT_OK);
  ck_assert(!j->has_committed);
  ck_assert_int_eq(ctl_jobs_parts_vote(&JS, j, 1, 1, 5, last_ticket[1], 0, NULL,
                                 102),
                   PT_OK);
  ck_assert(j->has_committed);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert_uint_eq(j->commits, 1);
  long jr = idx_of("J COMMIT j e1 s5");
  ck_assert_int_ge(jr, 0);
  ck_assert_int_gt(idx_of("commit 0 e1 s5"), jr); /* journaled first */
  ck_assert_int_gt(idx_of("commit 1 e1 s5"), jr);

  /* a refusal: no commit, UNPIN to the one that pinned */
  nev = 0;
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 6, false, 200);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 6, false, 200);
  ctl_jobs_parts_vote(&JS, j, 0, 1, 6, last_ticket[0], 0, NULL, 201);
  ctl_jobs_parts_vote(&JS, j, 1, 1, 6, last_ticket[1], -ENOENT, "gone", 201);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert(seen("unpin 0 e1 s6"));
  ck_assert(!seen("J COMMIT j e1 s6"));

  /* a vote that never comes: the round's deadline */
  nev = 0;
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 7, false, 300);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 7, false, 300);
  ctl_jobs_parts_vote(&JS, j, 0, 1, 7, last_ticket[0], 0, NULL, 301);
  ck_assert_uint_le(ctl_jobs_tick_next_ms(&JS, 301), CTL_ROUND_MS);
  ctl_jobs_tick_all(&JS, 300 + CTL_ROUND_MS);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert(seen("unpin 0 e1 s7") && seen("unpin 1 e1 s7"));

  /* the journal cannot take it: not committed, no JOB_COMMIT */
  nev = 0;
  journal_fail = 1;
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 8, false, 20000);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 8, false, 20000);
  ctl_jobs_parts_vote(&JS, j, 0, 1, 8, last_ticket[0], 0, NULL, 20001);
  ctl_jobs_parts_vote(&JS, j, 1, 1, 8, last_ticket[1], 0, NULL, 20001);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert(!seen("commit 0 e1 s8"));
  journal_fail = 0;

  /* a voter's node going down fails the round under way */
  nev = 0;
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 9, false, 30000);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 9, false, 30000);
  ctl_jobs_parts_vote(&JS, j, 0, 1, 9, last_ticket[0], 0, NULL, 30001);
  ctl_members_lost(&M, (void *)2, 30002);
  ctl_jobs_node_down(&JS, 1, 30002);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert(seen("unpin 0 e1 s9"));
  teardown();
}
END_TEST

START_TEST(restart_backoff_window)
{
  setup();
  struct ctl_job *j = running_job(2, 2, 60000);
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 4, false, 10);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 4, false, 10);
  ctl_jobs_parts_vote(&JS, j, 0, 1, 4, last_ticket[0], 0, NULL, 10);
  ctl_jobs_parts_vote(&JS, j, 1, 1, 4, last_ticket[1], 0, NULL, 10);
  ck_assert_uint_eq(j->committed, 4);
  nev = 0;

  /* a failed part: every part halted, the next epoch after 200 ms */
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 1, 1, CTL_PART_FAILED,
                                       "rank 3 exited 1", NULL, 1000),
                   PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_RESTARTING);
  ck_assert(seen("halt 0 e1 remove=0") && seen("halt 1 e1 remove=0"));
  ck_assert_ptr_nonnull(strstr(j->reason, "rank 3 exited 1"));
  ck_assert_uint_eq(ctl_jobs_tick_next_ms(&JS, 1000), 200);
  ctl_jobs_tick_all(&JS, 1199);
  ck_assert_int_eq(j->state, CTL_JOB_RESTARTING);
  ctl_jobs_tick_all(&JS, 1200);
  ck_assert_uint_eq(j->epoch, 2);
  long e = idx_of("J EPOCH j e2");
  ck_assert_int_ge(e, 0);
  ck_assert_int_gt(
      idx_of("assign 0 e2 r0 w4 10.0.0.1:29500 restore=4 committed=4"), e);
  ck_assert(seen("assign 1 e2 r2 w4 10.0.0.1:29500 restore=4 committed=4"));
  ck_assert_uint_eq(j->restarts, 1);

  /* the second: backoff doubled (400 ms) */
  ctl_jobs_parts_state(&JS, j, 0, 2, CTL_PART_RUNNING, NULL, NULL, 1300);
  ctl_jobs_parts_state(&JS, j, 1, 2, CTL_PART_RUNNING, NULL, NULL, 1300);
  ctl_jobs_parts_state(&JS, j, 0, 2, CTL_PART_FAILED, "smp died", NULL, 2000);
  ck_assert_uint_eq(ctl_jobs_tick_next_ms(&JS, 2000), 400);
  ctl_jobs_tick_all(&JS, 2400);
  ck_assert_uint_eq(j->epoch, 3);
  /* the third, within the window of 60 s: 2 used, no restarts left */
  ctl_jobs_parts_state(&JS, j, 0, 3, CTL_PART_FAILED, "again", NULL, 3000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "no restarts left"));
  ck_assert(seen("J END j failed"));
  teardown();

  /* outside the window the old restarts no longer count */
  setup();
  j = running_job(1, 1, 5000);
  ctl_jobs_parts_state(&JS, j, 0, 1, CTL_PART_FAILED, "x", NULL, 1000);
  ctl_jobs_tick_all(&JS, 1200);
  ck_assert_uint_eq(j->epoch, 2);
  ctl_jobs_parts_state(&JS, j, 0, 2, CTL_PART_RUNNING, NULL, NULL, 1300);
  ctl_jobs_parts_state(&JS, j, 0, 2, CTL_PART_FAILED, "x", NULL, 7000);
  ck_assert_int_eq(j->state, CTL_JOB_RESTARTING);
  teardown();

  /* an assignment never answered counts as a failed part */
  setup();
  add_node("n0", "10.0.0.1", NULL, 2, 1, 0);
  Pt__JobSpec s = spec("j", 1, 1);
  char err[256];
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  ctl_jobs_tick_all(&JS, CTL_ASSIGN_MS - 1);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ctl_jobs_tick_all(&JS, CTL_ASSIGN_MS);
  ck_assert_int_eq(j->state, CTL_JOB_RESTARTING);
  ck_assert_ptr_nonnull(strstr(j->reason, "did not answer its assignment"));
  teardown();
}
END_TEST

static void node_dies(const char *id, uintptr_t conn, uint64_t now)
{
  ctl_members_lost(&M, (void *)conn, now);
  for (uintptr_t c = 1; c <= 8; c++)
    if (c != conn)
      (void)ctl_members_heartbeat(&M, (void *)c, now + T.grace_ms);
  ctl_members_tick(&M, now + T.grace_ms, NULL, 0);
  struct ctl_node *n = ctl_members_find(&M, id);
  ck_assert_int_eq(n->state, CTL_NODE_DEAD);
  ctl_jobs_node_down(&JS, (size_t)(n - M.nodes), now + T.grace_ms);
}

/* A failed part the node says is permanent (exit 78, PT_EBUDGET, a
 * command that cannot run) fails the job with the node's words: no
 * restart, whatever restarts are left. */
START_TEST(permanent_failure_not_restarted)
{
  setup();
  struct ctl_job *j = running_job(2, 3, 0);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  m.job = "j";
  m.epoch = 1;
  m.state = "failed";
  m.has_status = true;
  m.status = PT_EBUDGET;
  m.message = "node 'n1': --memory-budget 4096 bytes gives each of the 2 "
              "ranks 2048 bytes; the smallest snapshot object needs 12288";
  m.has_permanent = true;
  m.permanent = true;
  ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, 1, 1, CTL_PART_FAILED,
                                       m.message, &m, 1000),
                   PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_uint_eq(j->restarts, 0);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_msg(strstr(j->reason, "2048 bytes") != NULL &&
                    strstr(j->reason, "12288") != NULL &&
                    strstr(j->reason, "not restarted") != NULL,
                "reason: %s", j->reason);
  ck_assert(seen("J END j failed"));
  ck_assert(!seen("J EPOCH j e2"));
  /* kept for a look: a failed job's snapshots are not removed */
  ck_assert(seen("halt 0 e1 remove=0") && seen("halt 1 e1 remove=0"));
  ctl_jobs_tick_all(&JS, 100000);
  ck_assert_uint_eq(j->epoch, 1);
  teardown();

  /* permanent false (or absent): restarted as before */
  setup();
  j = running_job(1, 3, 0);
  m.has_permanent = true;
  m.permanent = false;
  ctl_jobs_parts_state(&JS, j, 0, 1, CTL_PART_FAILED, "x", &m, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_RESTARTING);
  teardown();
}
END_TEST

/* A new job that reuses the name of a stopped one, on the same nodes,
 * with no restarts: it starts above every epoch the name had, so the old
 * job's late reports (the answers to its halts) are not taken for its
 * own, and it runs and completes. */
START_TEST(name_reused_not_confused)
{
  char err[256];
  setup();
  struct ctl_job *j = running_job(2, 0, 0);
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", false, 0, 5, &(bool){false},
                                    &(uint64_t){0}, err, sizeof(err)),
                   PT_OK);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_int_eq(ctl_jobs_stop(&JS, "j", false, 10, err, sizeof(err)),
                   PT_OK);
  nev = 0;
  Pt__JobSpec s = spec("j", 2, 2);
  s.has_max_restarts = true;
  s.max_restarts = 0;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 20, &j, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(j->epoch, 3);
  ck_assert_uint_eq(j->first_epoch, 3);
  ck_assert(seen("J EPOCH j e3"));
  ck_assert(seen("assign 0 e3 r0 w4 10.0.0.1:29500 restore=-1 committed=-1"));
  /* the old job's parts answer its halts now: ignored */
  for (uint32_t p = 0; p < 2; p++) {
    ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, p, 2, CTL_PART_STOPPED, NULL,
                                         NULL, 30),
                     PT_EEPOCH);
    ck_assert_int_eq(ctl_jobs_parts_state(&JS, j, p, 1, CTL_PART_STOPPED, NULL,
                                         NULL, 30),
                     PT_EEPOCH);
    ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, p, 2, 40, false, 30),
                     PT_EEPOCH);
  }
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&JS, j, p, 3, CTL_PART_RUNNING, NULL, NULL, 40);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&JS, j, p, 3, CTL_PART_DONE, NULL, NULL, 50);
  ck_assert_int_eq(j->state, CTL_JOB_DONE);
  ck_assert_uint_eq(j->restarts, 0);
  /* a name never used starts at 1 */
  s = spec("fresh", 1, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 60, &j, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(j->epoch, 1);
  ck_assert_uint_eq(j->first_epoch, 1);
  teardown();
}
END_TEST

START_TEST(dead_node_wait)
{
  setup();
  struct ctl_job *j = running_job(3, 3, 0);
  node_dies("n1", 2, 1000);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  ck_assert(seen("halt 0 e1 remove=0") && seen("halt 2 e1 remove=0"));
  ck_assert(!seen("halt 1 e1 remove=0"));
  ck_assert_ptr_nonnull(strstr(j->reason, "node 'n1' is dead"));
  /* back in time (a new connection): a new epoch on every node */
  nev = 0;
  add_node("n1", "10.0.0.2", NULL, 2, 12, 7000);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert(seen("J EPOCH j e2"));
  ck_assert(seen("assign 1 e2 r2 w6 10.0.0.1:29500 restore=-1 committed=-1"));
  ck_assert(seen("assign 0 e2 r0 w6 10.0.0.1:29500 restore=-1 committed=-1"));
  teardown();

  /* not back within node_wait_ms: failed, naming it */
  setup();
  j = running_job(2, 3, 0);
  node_dies("n1", 2, 1000);
  uint64_t dl = 1000 + T.grace_ms + 60000;
  ctl_jobs_tick_all(&JS, dl - 1);
  ck_assert_int_eq(j->state, CTL_JOB_WAITING);
  ctl_jobs_tick_all(&JS, dl);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_msg(strstr(j->reason, "node 'n1' did not come back within "
                                  "60000 ms") != NULL,
                "%s", j->reason);
  ck_assert(seen("J END j failed"));
  teardown();

  /* a node that reconnects while the job runs is told its epoch again */
  setup();
  j = running_job(2, 3, 0);
  ctl_members_lost(&M, (void *)2, 100);
  ctl_jobs_node_down(&JS, 1, 100);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  add_node("n1", "10.0.0.2", NULL, 2, 22, 200);
  ck_assert(seen("assign 1 e1 r2 w4 10.0.0.1:29500 restore=-1 committed=-1"));
  ck_assert_uint_eq(j->epoch, 1);
  teardown();
}
END_TEST

START_TEST(stop_and_restore)
{
  char err[256];
  bool has;
  uint64_t step;

  setup();
  struct ctl_job *j = running_job(2, 3, 0);
  for (uint64_t s = 3; s <= 5; s++) {
    ctl_jobs_parts_sealed(&JS, j, 0, 1, s, false, 10);
    ctl_jobs_parts_sealed(&JS, j, 1, 1, s, false, 10);
    ctl_jobs_parts_vote(&JS, j, 0, 1, s, last_ticket[0], 0, NULL, 10);
    ctl_jobs_parts_vote(&JS, j, 1, 1, s, last_ticket[1], 0, NULL, 10);
  }
  ck_assert_uint_eq(j->committed, 5);
  /* the nodes say what they hold */
  uint64_t held[] = {3, 5};
  Pt__JobPartState ps = PT__JOB_PART_STATE__INIT;
  ps.n_held = 2;
  ps.held = held;
  ctl_jobs_parts_state(&JS, j, 0, 1, CTL_PART_RUNNING, NULL, &ps, 20);
  ctl_jobs_parts_state(&JS, j, 1, 1, CTL_PART_RUNNING, NULL, &ps, 20);
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", true, 4, 30, &has, &step, err,
                                    sizeof(err)),
                   -ENOENT);
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", true, 6, 30, &has, &step, err,
                                    sizeof(err)),
                   -ENOENT);
  nev = 0;
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", true, 3, 30, &has, &step, err,
                                    sizeof(err)),
                   PT_OK);
  ck_assert(has && step == 3);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert(seen("halt 0 e1 remove=0"));
  ck_assert(seen("assign 0 e2 r0 w4 10.0.0.1:29500 restore=3 committed=3"));
  ck_assert_int_eq(ctl_jobs_restore(&JS, "nope", false, 0, 30, &has, &step,
                                    err, sizeof(err)),
                   -ENOENT);
  nev = 0;
  ck_assert_int_eq(ctl_jobs_stop(&JS, "j", false, 40, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(j->state, CTL_JOB_STOPPED);
  ck_assert_str_eq(ev[0], "J END j stopped");
  /* a stopped job's snapshots go, as a completed one's */
  ck_assert(seen("halt 0 e2 remove=1") && seen("halt 1 e2 remove=1"));
  ck_assert(j->removed);
  ck_assert_int_eq(ctl_jobs_stop(&JS, "j", false, 40, err, sizeof(err)), -EALREADY);
  ck_assert_str_eq(ctl_members_find(&M, "n0")->job, "");
  /* the name can be used again, above every epoch it had */
  Pt__JobSpec s = spec("j", 2, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 50, &j, err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(j->epoch, 3);
  ck_assert_uint_eq(j->first_epoch, 3);
  /* stop --keep: the parts halt, the snapshots stay, and the reason says so */
  nev = 0;
  ck_assert_int_eq(ctl_jobs_stop(&JS, "j", true, 60, err, sizeof(err)), PT_OK);
  ck_assert(seen("halt 0 e3 remove=0") && seen("halt 1 e3 remove=0"));
  ck_assert(!j->removed);
  ck_assert_msg(strstr(j->reason, "snapshots are kept") != NULL, "%s", j->reason);
  teardown();
}
END_TEST

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

/* A failed job (its dead node away past node_wait_ms) restored by ptctl
 * once the node is back: live again in a new epoch from its committed
 * step, on the same nodes, its restart budget and backoff started over;
 * refused (naming the node) while the node is dead. */
START_TEST(revive_failed)
{
  char err[256];
  bool has = false;
  uint64_t step = 0;

  setup();
  struct ctl_job *j = running_job(2, 3, 0);
  commit_steps(j, 3, 5);
  node_dies("n1", 2, 1000);
  ctl_jobs_tick_all(&JS, 1000 + T.grace_ms + 60000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert(!j->removed);
  ck_assert_uint_eq(JS.nlive, 0);
  ck_assert_uint_eq(JS.nended, 1);
  /* the node still dead: refused, naming it and why */
  nev = 0;
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", false, 0, 70000, &has, &step,
                                    err, sizeof(err)),
                   -EAGAIN);
  ck_assert_msg(strstr(err, "node 'n1'") != NULL &&
                    strstr(err, "dead") != NULL && strstr(err, "failed"),
                "%s", err);
  ck_assert_uint_eq(nev, 0);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  /* back: nothing happens by itself (the job ended) ... */
  add_node("n1", "10.0.0.2", NULL, 2, 12, 71000);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_uint_eq(nev, 0);
  /* ... until ptctl restore: EPOCH journaled, then every part assigned */
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", false, 0, 72000, &has, &step,
                                    err, sizeof(err)),
                   PT_OK);
  ck_assert(has && step == 5);
  ck_assert_ptr_eq(ctl_jobs_find(&JS, "j"), j);
  ck_assert_int_eq(j->state, CTL_JOB_STARTING);
  ck_assert_uint_eq(j->epoch, 2);
  ck_assert_uint_eq(JS.nlive, 1);
  ck_assert_uint_eq(JS.nended, 0);
  long e = idx_of("J EPOCH j e2");
  ck_assert_int_ge(e, 0);
  ck_assert_int_gt(
      idx_of("assign 0 e2 r0 w4 10.0.0.1:29500 restore=5 committed=5"), e);
  ck_assert_int_gt(
      idx_of("assign 1 e2 r2 w4 10.0.0.1:29500 restore=5 committed=5"), e);
  ck_assert_str_eq(ctl_members_find(&M, "n0")->job, "j");
  ck_assert_str_eq(ctl_members_find(&M, "n1")->job, "j");
  ck_assert_ptr_nonnull(strstr(j->reason, "restored by ptctl"));
  /* it runs, commits, and a second restore is of a live job */
  ctl_jobs_parts_state(&JS, j, 0, 2, CTL_PART_RUNNING, NULL, NULL, 72100);
  ctl_jobs_parts_state(&JS, j, 1, 2, CTL_PART_RUNNING, NULL, NULL, 72100);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  commit_steps(j, 6, 6);
  ck_assert(seen("J COMMIT j e2 s6"));
  teardown();

  /* out of restarts: failed; restored, the budget and backoff start over */
  setup();
  j = running_job(1, 2, 0);
  commit_steps(j, 1, 2);
  uint64_t t = 1000;
  for (int i = 0; i < 2; i++) {
    ctl_jobs_parts_state(&JS, j, 0, j->epoch, CTL_PART_FAILED, "x", NULL, t);
    ctl_jobs_tick_all(&JS, t + 10000);
    t += 20000;
  }
  ck_assert_uint_eq(j->epoch, 3);
  ctl_jobs_parts_state(&JS, j, 0, 3, CTL_PART_FAILED, "x", NULL, t);
  ck_assert_int_eq(j->state, CTL_JOB_FAILED);
  ck_assert_ptr_nonnull(strstr(j->reason, "no restarts left"));
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", false, 0, t + 1, &has, &step,
                                    err, sizeof(err)),
                   PT_OK);
  ck_assert_uint_eq(j->epoch, 4);
  ctl_jobs_parts_state(&JS, j, 0, 4, CTL_PART_RUNNING, NULL, NULL, t + 2);
  ctl_jobs_parts_state(&JS, j, 0, 4, CTL_PART_FAILED, "y", NULL, t + 3);
  ck_assert_int_eq(j->state, CTL_JOB_RESTARTING);
  ck_assert_uint_eq(ctl_jobs_tick_next_ms(&JS, t + 3), 200); /* not 800 */
  teardown();
}
END_TEST

/* What cannot be restored says what it is and why: a completed job, one
 * stopped without --keep; a node in another job or not registered. One
 * stopped with --keep is restored. */
START_TEST(revive_refusals)
{
  char err[256];
  bool has = false;
  uint64_t step = 0;

  setup();
  struct ctl_job *j = running_job(2, 3, 0);
  commit_steps(j, 1, 1);
  ck_assert_int_eq(ctl_jobs_stop(&JS, "j", false, 100, err, sizeof(err)),
                   PT_OK);
  nev = 0;
  ck_assert_int_eq(ctl_jobs_restore(&JS, "j", false, 0, 200, &has, &step,
                                    err, sizeof(err)),
                   -ENOENT);
  ck_assert_msg(strstr(err, "stopped without --keep") != NULL &&
                    strstr(err, "snapshots were removed") != NULL,
                "%s", err);
  ck_assert_uint_eq(nev, 0);
  ck_assert_int_eq(j->state, CTL_JOB_STOPPED);

  /* completed */
  Pt__JobSpec s = spec("d", 2, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 300, &j, err, sizeof(err)), PT_OK);
  for (uint32_t p = 0; p < 2; p++)
    ctl_jobs_parts_state(&JS, j, p, 1, CTL_PART_DONE, NULL, NULL, 400);
  ck_assert_int_eq(j->state, CTL_JOB_DONE);
  ck_assert_int_eq(ctl_jobs_restore(&JS, "d", false, 0, 500, &has, &step,
                                    err, sizeof(err)),
                   -ENOENT);
  ck_assert_msg(strstr(err, "completed") != NULL &&
                    strstr(err, "nothing to restore") != NULL,
                "%s", err);

  /* stopped --keep: restored, unless a node is in another job */
  s = spec("k", 2, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 600, &j, err, sizeof(err)), PT_OK);
  struct ctl_job *k = j;
  commit_steps(k, 4, 4);
  ck_assert_int_eq(ctl_jobs_stop(&JS, "k", true, 700, err, sizeof(err)),
                   PT_OK);
  s = spec("o", 1, 2);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 800, &j, err, sizeof(err)), PT_OK);
  const char *taken = j->parts[0].node_id;
  ck_assert_int_eq(ctl_jobs_restore(&JS, "k", false, 0, 900, &has, &step,
                                    err, sizeof(err)),
                   -EBUSY);
  ck_assert_msg(strstr(err, taken) != NULL && strstr(err, "job 'o'") != NULL,
                "%s", err);
  ck_assert_int_eq(k->state, CTL_JOB_STOPPED);
  ck_assert_int_eq(ctl_jobs_stop(&JS, "o", false, 1000, err, sizeof(err)),
                   PT_OK);
  nev = 0;
  ck_assert_int_eq(ctl_jobs_restore(&JS, "k", false, 0, 1100, &has, &step,
                                    err, sizeof(err)),
                   PT_OK);
  ck_assert(has && step == 4);
  ck_assert_int_eq(k->state, CTL_JOB_STARTING);
  ck_assert(seen("J EPOCH k e2"));
  ck_assert(!k->stop_keep && !k->removed);
  /* --step of a step not held: refused as for a live job */
  ck_assert_int_eq(ctl_jobs_stop(&JS, "k", true, 1200, err, sizeof(err)),
                   PT_OK);
  ck_assert_int_eq(ctl_jobs_restore(&JS, "k", true, 9, 1300, &has, &step,
                                    err, sizeof(err)),
                   -ENOENT);
  teardown();
}
END_TEST

/* A master port given in the spec that a live job's master uses on the
 * same host is refused; elsewhere, or another port, is fine. */
START_TEST(master_port_clash)
{
  char err[256];
  struct ctl_job *j;

  setup();
  add_node("n1", "10.0.0.1", NULL, 1, 1, 0);
  add_node("n2", "10.0.0.1", NULL, 1, 2, 0);
  add_node("n3", "10.0.0.3", NULL, 1, 3, 0);
  Pt__JobSpec s = spec("a", 1, 1);
  s.has_master_port = true;
  s.master_port = 29600;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  s = spec("b", 1, 1);
  s.has_master_port = true;
  s.master_port = 29600;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)),
                   -EADDRINUSE);
  ck_assert_msg(strstr(err, "master port 29600 on 10.0.0.1 is job 'a''s") !=
                    NULL,
                "%s", err);
  s.master_port = 29601;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  /* n3 is another host: the same port is fine there */
  s = spec("c", 1, 1);
  s.has_master_port = true;
  s.master_port = 29600;
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  teardown();
}
END_TEST

/* At most CTL_ENDED_KEEP ended jobs are remembered: those that ended first
 * go, never the one that just ended. */
START_TEST(ended_kept)
{
  char err[256], name[16];
  struct ctl_job *j;

  setup();
  add_node("n0", "10.0.0.1", NULL, 1, 1, 0);
  add_node("n1", "10.0.0.2", NULL, 1, 2, 0);
  Pt__JobSpec s = spec("old", 1, 1);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 1, &j, err, sizeof(err)), PT_OK);
  for (unsigned i = 0; i <= CTL_ENDED_KEEP; i++) {
    snprintf(name, sizeof(name), "j%u", i);
    s = spec(name, 1, 1);
    ck_assert_int_eq(ctl_jobs_start(&JS, &s, 10 + i, &j, err, sizeof(err)),
                     PT_OK);
    ck_assert_int_eq(ctl_jobs_stop(&JS, name, false, 10 + i, err, sizeof(err)),
                     PT_OK);
  }
  ck_assert_uint_eq(JS.nended, CTL_ENDED_KEEP);
  ck_assert_ptr_null(ctl_jobs_find(&JS, "j0"));
  ck_assert_ptr_nonnull(ctl_jobs_find(&JS, "j1"));
  /* the oldest-created job ends last: it stays, j1 goes */
  ck_assert_int_eq(ctl_jobs_stop(&JS, "old", false, 500, err, sizeof(err)), PT_OK);
  ck_assert_ptr_nonnull(ctl_jobs_find(&JS, "old"));
  ck_assert_int_eq(ctl_jobs_find(&JS, "old")->state, CTL_JOB_STOPPED);
  ck_assert_ptr_null(ctl_jobs_find(&JS, "j1"));
  ck_assert_uint_eq(JS.nended, CTL_ENDED_KEEP);
  ck_assert_uint_eq(JS.nlive, 0);
  teardown();
}
END_TEST

/* A node that sealed steps while the controller was away says so in its
 * JOB_PART_STATE (last_sealed): that starts a round as STEP_SEALED does. */
START_TEST(sealed_from_part_state)
{
  setup();
  struct ctl_job *j = running_job(2, 3, 0);
  Pt__JobPartState ps = PT__JOB_PART_STATE__INIT;
  ps.has_last_sealed = true;
  ps.last_sealed = 7;
  ctl_jobs_parts_state(&JS, j, 0, 1, CTL_PART_RUNNING, NULL, &ps, 5);
  ck_assert(!seen("pin 0 e1 s7"));
  ctl_jobs_parts_state(&JS, j, 1, 1, CTL_PART_RUNNING, NULL, &ps, 5);
  ck_assert(seen("pin 0 e1 s7") && seen("pin 1 e1 s7"));
  ctl_jobs_parts_vote(&JS, j, 0, 1, 7, last_ticket[0], 0, NULL, 6);
  ctl_jobs_parts_vote(&JS, j, 1, 1, 7, last_ticket[1], 0, NULL, 6);
  ck_assert_uint_eq(j->committed, 7);
  ck_assert_uint_eq(j->committed_ms, 6);
  teardown();
}
END_TEST

/* Nodes that pinned a step before they reported it (STEP_SEALED{pinned})
 * are sent no JOB_PIN: their report is their vote, and the step commits
 * (journal, then JOB_COMMIT) with the last report. One that reported a step
 * unpinned is still asked, alone. */
/* A coded job whose nodes hold pins of different steps (two node groups
 * out of step: each SMP protects one step at a time and skips the others)
 * can commit neither: both are let go of on every node at once. A job
 * without code is left to its rounds. */
START_TEST(pins_apart_let_go)
{
  setup();
  struct ctl_job *j = running_job(3, 3, 0);
  ck_assert_uint_gt(j->groups.n, 0);
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 5, true, 100);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 5, true, 100);
  ck_assert_uint_eq(nev, 0);
  ctl_jobs_parts_sealed(&JS, j, 2, 1, 6, true, 101);
  for (int p = 0; p < 3; p++) {
    char a[64], b[64];
    snprintf(a, sizeof(a), "unpin %d e1 s5", p);
    snprintf(b, sizeof(b), "unpin %d e1 s6", p);
    ck_assert_msg(seen(a) && seen(b), "part %d not told to let go", p);
  }
  ck_assert(!j->parts[0].has_pinned && !j->parts[2].has_pinned);
  ck_assert(!j->has_committed);
  /* in step again: the next step commits as before */
  nev = 0;
  for (uint32_t p = 0; p < 3; p++)
    ctl_jobs_parts_sealed(&JS, j, p, 1, 8, true, 200);
  ck_assert(!seen("unpin 0 e1 s8"));
  ck_assert(j->has_committed && j->committed == 8);
  teardown();

  /* Not apart: node 2 holds a pin of 6 but reported 7 too (unpinned), so
   * 7, which node 0 pins, can still commit: nothing is let go of. */
  setup();
  j = running_job(3, 3, 0);
  ctl_jobs_parts_sealed(&JS, j, 2, 1, 6, true, 100);
  ctl_jobs_parts_sealed(&JS, j, 2, 1, 7, false, 101);
  nev = 0;
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 7, true, 102);
  ck_assert(!seen("unpin 0 e1 s7") && !seen("unpin 2 e1 s6"));
  teardown();

  setup();
  j = running_job(2, 3, 0);
  ck_assert_uint_eq(j->groups.n, 0);
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 5, true, 100);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 6, true, 100);
  ck_assert(!seen("unpin 0 e1 s5") && !seen("unpin 1 e1 s6"));
  teardown();
}
END_TEST

START_TEST(commit_of_pinned_reports)
{
  setup();
  struct ctl_job *j = running_job(3, 3, 0);
  ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, 0, 1, 5, true, 100), PT_OK);
  ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, 1, 1, 5, true, 100), PT_OK);
  ck_assert_uint_eq(nev, 0);
  ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, 2, 1, 5, true, 101), PT_OK);
  ck_assert(!seen("pin 0 e1 s5") && !seen("pin 1 e1 s5") &&
            !seen("pin 2 e1 s5"));
  ck_assert(j->has_committed);
  ck_assert_uint_eq(j->committed, 5);
  ck_assert_uint_eq(j->committed_ms, 101);
  ck_assert(seen("commit 0 e1 s5") && seen("commit 2 e1 s5"));
  /* step 6: node 1 reports it unpinned (its pin was busy): only it is
   * asked, and the step commits on its vote. */
  nev = 0;
  ctl_jobs_parts_sealed(&JS, j, 0, 1, 6, true, 200);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 6, false, 200);
  ctl_jobs_parts_sealed(&JS, j, 2, 1, 6, true, 200);
  ck_assert(seen("pin 1 e1 s6"));
  ck_assert(!seen("pin 0 e1 s6") && !seen("pin 2 e1 s6"));
  ck_assert_uint_eq(j->committed, 5);
  ctl_jobs_parts_vote(&JS, j, 1, 1, 6, last_ticket[1], 0, NULL, 201);
  ck_assert_uint_eq(j->committed, 6);
  /* a pinned report of an older epoch counts for nothing */
  nev = 0;
  ck_assert_int_eq(ctl_jobs_parts_sealed(&JS, j, 0, 0, 7, true, 300),
                   PT_EEPOCH);
  ctl_jobs_parts_sealed(&JS, j, 1, 1, 7, true, 300);
  ctl_jobs_parts_sealed(&JS, j, 2, 1, 7, true, 300);
  ck_assert_uint_eq(j->committed, 6);
  teardown();
}
END_TEST

/* 1,000 nodes, 100 rounds: each STEP_SEALED and JOB_VOTE is O(1) but the
 * last (no O(n^2) per round): well under a millisecond per node-round even
 * in a sanitizer build. */
START_TEST(thousand_nodes)
{
  enum { N = 1000, ROUNDS = 100 };
  char err[256], id[16];
  struct ctl_job *j;

  setup();
  for (uint32_t i = 0; i < N; i++) {
    snprintf(id, sizeof(id), "n%u", i);
    add_node(id, "10.0.0.1", NULL, 1, i + 1, 0);
  }
  Pt__JobSpec s = spec("big", N, 1);
  ck_assert_int_eq(ctl_jobs_start(&JS, &s, 0, &j, err, sizeof(err)), PT_OK);
  for (uint32_t p = 0; p < N; p++)
    ctl_jobs_parts_state(&JS, j, p, 1, CTL_PART_RUNNING, NULL, NULL, 0);
  ck_assert_int_eq(j->state, CTL_JOB_RUNNING);
  uint64_t t0 = rpc_now_ms();
  for (uint64_t step = 1; step <= ROUNDS; step++) {
    nev = 0;
    for (uint32_t p = 0; p < N; p++)
      ctl_jobs_parts_sealed(&JS, j, p, 1, step, false, 0);
    /* one JOB_PIN per node, once the last one sealed */
    ck_assert_uint_eq(nev, N);
    for (uint32_t p = 0; p < N; p++)
      ctl_jobs_parts_vote(&JS, j, p, 1, step, last_ticket[p], 0, NULL, 0);
    ck_assert_uint_eq(j->committed, step);
  }
  /* and rounds of pinned reports: no JOB_PIN at all */
  for (uint64_t step = ROUNDS + 1; step <= 2 * ROUNDS; step++) {
    nev = 0;
    for (uint32_t p = 0; p < N; p++)
      ctl_jobs_parts_sealed(&JS, j, p, 1, step, true, 0);
    ck_assert_uint_eq(j->committed, step);
    ck_assert(!seen("pin 0 e1 s1"));
  }
  uint64_t ms = rpc_now_ms() - t0;
  fprintf(stderr, "1000 nodes: %d rounds in %llu ms\n", ROUNDS,
          (unsigned long long)ms);
  ck_assert_uint_lt(ms, 5000);
  teardown();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ctl_jobs");
  TCase *tc = tcase_create("jobs");
  tcase_add_test(tc, spec_refusals);
  tcase_add_test(tc, placement);
  tcase_add_test(tc, placement_rounds);
  tcase_add_test(tc, ranks_master_epochs);
  tcase_add_test(tc, commit_across_nodes);
  tcase_add_test(tc, commit_of_pinned_reports);
  tcase_add_test(tc, pins_apart_let_go);
  tcase_add_test(tc, restart_backoff_window);
  tcase_add_test(tc, permanent_failure_not_restarted);
  tcase_add_test(tc, name_reused_not_confused);
  tcase_add_test(tc, dead_node_wait);
  tcase_add_test(tc, stop_and_restore);
  tcase_add_test(tc, revive_failed);
  tcase_add_test(tc, revive_refusals);
  tcase_add_test(tc, master_port_clash);
  tcase_add_test(tc, ended_kept);
  tcase_add_test(tc, sealed_from_part_state);
  tcase_add_test(tc, thousand_nodes);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
