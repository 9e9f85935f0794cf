/*
 * test_node_plan.c — the node's pure decisions (daemon/node/node_plan.c): the
 * sealed-step sets, which step a commit round is for, how a round goes on,
 * pins left behind, which step to restore, restart backoff and the exit
 * wording the logs share with the scenario tests. Hand-made cases pin the
 * rules; randomized cases compare with a brute-force oracle written here
 * from the rules' definitions; a simulation runs commit rounds, decided by
 * these functions, against real snapshot objects while trainers race them,
 * and checks that every rank always holds the committed step.
 */
#include <check.h>
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/node/node.h"
#include "tests/unit/unit.h"

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

/* ---- commit rounds ---- */

START_TEST(round_verdicts)
{
  enum node_vote v[3];

  v[0] = v[1] = v[2] = NODE_VOTE_YES;
  ck_assert_int_eq(node_plan_protect_verdict(v, 3), NODE_ROUND_COMMIT);
  ck_assert(node_plan_votes_in(v, 3));
  /* One rank still to answer: wait, whatever the others said. */
  for (int other = NODE_VOTE_YES; other <= NODE_VOTE_LOST; other++) {
    v[0] = (enum node_vote)other;
    v[1] = NODE_VOTE_YES;
    v[2] = NODE_VOTE_WAIT;
    ck_assert_int_eq(node_plan_protect_verdict(v, 3), NODE_ROUND_WAIT);
    ck_assert(!node_plan_votes_in(v, 3));
    v[2] = NODE_VOTE_NONE; /* not asked yet */
    ck_assert_int_eq(node_plan_protect_verdict(v, 3), NODE_ROUND_WAIT);
  }
  /* Every answer in, one not yes: abort. */
  v[0] = NODE_VOTE_YES;
  v[1] = NODE_VOTE_NO;
  v[2] = NODE_VOTE_YES;
  ck_assert_int_eq(node_plan_protect_verdict(v, 3), NODE_ROUND_ABORT);
  v[1] = NODE_VOTE_LOST;
  ck_assert_int_eq(node_plan_protect_verdict(v, 3), NODE_ROUND_ABORT);
  ck_assert(node_plan_votes_in(v, 3));
  ck_assert_int_eq(node_plan_protect_verdict(v, 1), NODE_ROUND_COMMIT);
  ck_assert_int_eq(node_plan_protect_verdict(v, 0), NODE_ROUND_ABORT);
  /* The commit and abort phases: NONE (not asked) does not hold them up. */
  v[0] = NODE_VOTE_NONE;
  v[1] = NODE_VOTE_NO;
  v[2] = NODE_VOTE_LOST;
  ck_assert(node_plan_votes_in(v, 3));

  /* Abort goes where a pin may be: yes, or no answer at all. */
  ck_assert(node_plan_abort_to(NODE_VOTE_YES));
  ck_assert(node_plan_abort_to(NODE_VOTE_LOST));
  ck_assert(!node_plan_abort_to(NODE_VOTE_NO));
  ck_assert(!node_plan_abort_to(NODE_VOTE_NONE));
  ck_assert(!node_plan_abort_to(NODE_VOTE_WAIT));
}
END_TEST

START_TEST(pins_left_behind)
{
  /* The committed step, pinned or only sealed here: commit it again. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 7, true, 7, false, 0),
                   NODE_PIN_COMMIT);
  ck_assert_int_eq(node_plan_pin(SNAP_SEALED, 7, true, 7, true, 9),
                   NODE_PIN_COMMIT);
  ck_assert_int_eq(node_plan_pin(SNAP_COMMITTED, 7, true, 7, true, 9),
                   NODE_PIN_NONE);
  /* The round's step (under way or next): the round protects it again,
   * then commits or aborts it. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 9, true, 7, true, 9),
                   NODE_PIN_NONE);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 9, false, 0, true, 9),
                   NODE_PIN_NONE);
  /* Any other pin: older than the committed step, newer but not what the
   * next round is for, or no round possible. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 5, true, 7, true, 9),
                   NODE_PIN_ABORT);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 8, true, 7, true, 9),
                   NODE_PIN_ABORT);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 8, true, 7, false, 8),
                   NODE_PIN_ABORT);
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 0, false, 0, false, 0),
                   NODE_PIN_ABORT);
  /* Committed step 0 is a real step. */
  ck_assert_int_eq(node_plan_pin(SNAP_PINNED, 0, true, 0, false, 0),
                   NODE_PIN_COMMIT);
  /* PROTECTED (reserved, set by nothing yet) is taken as PINNED. */
  for (uint64_t st = 0; st < 10; st++)
    for (int r = 0; r < 2; r++)
      ck_assert_int_eq(node_plan_pin(SNAP_PROTECTED, st, true, 7, r, 9),
                       node_plan_pin(SNAP_PINNED, st, true, 7, r, 9));
  ck_assert_int_eq(node_plan_pin(SNAP_PROTECTED, 5, true, 7, true, 9),
                   NODE_PIN_ABORT);
  /* Slots that are not pins. */
  ck_assert_int_eq(node_plan_pin(SNAP_SEALED, 8, true, 7, false, 0),
                   NODE_PIN_NONE);
  ck_assert_int_eq(node_plan_pin(SNAP_WRITING, 7, true, 7, false, 0),
                   NODE_PIN_NONE);
  ck_assert_int_eq(node_plan_pin(SNAP_FREE, 7, true, 7, false, 0),
                   NODE_PIN_NONE);
}
END_TEST

/*
 * The simulation: R ranks, each with a real snapshot object of S slots, its
 * SMP (a FIFO of node requests applied to the object) and its trainer; the
 * node runs rounds the way daemon/node/node_round.c does, deciding with the
 * functions under test. A random scheduler interleaves trainer steps, SMP
 * work and node work, so that trainers overtake rounds in every way. The
 * trainers stay within one step of each other (their all-reduce). After
 * every action: every rank holds the node's committed step, PINNED or
 * COMMITTED, and no rank holds a COMMITTED step the node did not commit.
 */
#define SIM_RANKS 3
#define SIM_Q 64
#define SIM_SHM "pt-tnode-sim."

static pid_t runner_pid; /* names the objects, so that main can sweep them */

enum sim_msg { SIM_PROTECT, SIM_COMMIT, SIM_ABORT, SIM_REPLY, SIM_SEALED };
struct sim_item {
  enum sim_msg kind;
  uint64_t step;
  int status;
};
struct sim_fifo {
  struct sim_item v[SIM_Q];
  uint32_t head, n;
};
struct sim_rank {
  struct snap_store *store;
  char name[64];
  struct sim_fifo to_smp, to_node;
  uint64_t next;         /* the trainer's next step */
  bool writing;          /* acquired `next`, not sealed yet */
  uint32_t slot;
  uint64_t gen;
  struct node_sealed_set sealed;
  enum node_vote vote;
};
struct sim {
  struct sim_rank r[SIM_RANKS];
  uint32_t nranks;
  bool has_committed, has_last;
  uint64_t committed, last;
  bool active;
  enum sim_msg phase;
  uint64_t step;
  uint32_t commits, aborts, skipped;
};

static void fifo_push(struct sim_fifo *f, struct sim_item it)
{
  ck_assert_uint_lt(f->n, SIM_Q);
  f->v[(f->head + f->n++) % SIM_Q] = it;
}

static struct sim_item fifo_pop(struct sim_fifo *f)
{
  struct sim_item it = f->v[f->head];
  f->head = (f->head + 1) % SIM_Q;
  f->n--;
  return it;
}

static void sim_send(struct sim *m, enum sim_msg kind)
{
  m->phase = kind;
  for (uint32_t i = 0; i < m->nranks; i++)
    if (m->r[i].vote == NODE_VOTE_WAIT)
      fifo_push(&m->r[i].to_smp,
                (struct sim_item){.kind = kind, .step = m->step});
}

static void sim_check_round(struct sim *m)
{
  enum node_vote v[SIM_RANKS];
  for (uint32_t i = 0; i < m->nranks; i++)
    v[i] = m->r[i].vote;
  if (m->phase == SIM_PROTECT) {
    enum node_round_verdict d = node_plan_protect_verdict(v, m->nranks);
    if (d == NODE_ROUND_WAIT)
      return;
    if (d == NODE_ROUND_COMMIT) {
      m->has_committed = true;
      m->committed = m->step;
      m->commits++;
      for (uint32_t i = 0; i < m->nranks; i++)
        m->r[i].vote = NODE_VOTE_WAIT;
      sim_send(m, SIM_COMMIT);
    } else {
      m->aborts++;
      for (uint32_t i = 0; i < m->nranks; i++)
        m->r[i].vote = node_plan_abort_to(m->r[i].vote) ? NODE_VOTE_WAIT
                                                         : NODE_VOTE_NONE;
      sim_send(m, SIM_ABORT);
    }
    for (uint32_t i = 0; i < m->nranks; i++)
      v[i] = m->r[i].vote;
  }
  if (node_plan_votes_in(v, m->nranks)) {
    m->active = false;
    m->has_last = true;
    m->last = m->step;
    for (uint32_t i = 0; i < m->nranks; i++)
      node_sealed_prune(&m->r[i].sealed, m->step);
  }
}

static void sim_node_drive(struct sim *m)
{
  const struct node_sealed_set *sets[SIM_RANKS];
  uint64_t floor = m->committed, step;
  if (m->has_last && (!m->has_committed || m->last > floor))
    floor = m->last;
  if (m->active)
    return;
  for (uint32_t i = 0; i < m->nranks; i++)
    sets[i] = &m->r[i].sealed;
  if (!node_plan_commit_step(sets, m->nranks, m->has_committed || m->has_last,
                             floor, &step))
    return;
  m->active = true;
  m->step = step;
  for (uint32_t i = 0; i < m->nranks; i++)
    m->r[i].vote = NODE_VOTE_WAIT;
  sim_send(m, SIM_PROTECT);
}

/* The node handles the oldest message from rank i. */
static void sim_node(struct sim *m, uint32_t i)
{
  struct sim_rank *r = &m->r[i];
  struct sim_item it = fifo_pop(&r->to_node);
  if (it.kind == SIM_SEALED) {
    uint64_t floor = m->committed;
    if (m->has_last && (!m->has_committed || m->last > floor))
      floor = m->last;
    if (!(m->has_committed || m->has_last) || it.step > floor)
      node_sealed_add(&r->sealed, it.step);
  } else {
    ck_assert(m->active);
    ck_assert_int_eq(r->vote, NODE_VOTE_WAIT);
    r->vote = it.status == 0 ? NODE_VOTE_YES : NODE_VOTE_NO;
    sim_check_round(m);
  }
  sim_node_drive(m);
}

/* Rank i's SMP handles the oldest request. */
static void sim_smp(struct sim *m, uint32_t i)
{
  struct sim_rank *r = &m->r[i];
  struct sim_item it = fifo_pop(&r->to_smp);
  int rc;
  switch (it.kind) {
  case SIM_PROTECT:
    rc = snap_slot_pin(r->store, it.step);
    break;
  case SIM_COMMIT:
    rc = snap_slot_commit(r->store, it.step);
    ck_assert_int_eq(rc, 0); /* a protected step is still there */
    break;
  default:
    rc = snap_slot_unpin(r->store, it.step);
    break;
  }
  fifo_push(&r->to_node, (struct sim_item){.kind = SIM_REPLY,
                                           .step = it.step, .status = rc});
}

/* Rank i's trainer: snapshot its next step (acquire), or seal it. */
static bool sim_trainer(struct sim *m, uint32_t i)
{
  struct sim_rank *r = &m->r[i];
  if (r->writing) {
    ck_assert_int_eq(snap_slot_seal(r->store, r->slot, r->gen, r->next), 0);
    fifo_push(&r->to_node, (struct sim_item){.kind = SIM_SEALED,
                                             .step = r->next});
    r->writing = false;
    r->next++;
    return true;
  }
  /* The all-reduce before snapshot N waits until every rank started
   * snapshot N-1 (it may not have sealed it yet). */
  for (uint32_t k = 0; k < m->nranks; k++) {
    const struct sim_rank *o = &m->r[k];
    uint64_t started = o->writing ? o->next : o->next - 1;
    if (started + 1 < r->next)
      return false;
  }
  int rc = snap_slot_acquire(r->store, r->next, &r->slot, &r->gen);
  if (rc == PT_SKIPPED) {
    m->skipped++;
    r->next++;
    return true;
  }
  ck_assert_int_eq(rc, 0);
  r->writing = true;
  return true;
}

static void sim_invariant(const struct sim *m)
{
  for (uint32_t i = 0; i < m->nranks; i++) {
    const struct sim_rank *r = &m->r[i];
    bool held = false;
    for (uint32_t k = 0; k < snap_store_nslots(r->store); k++) {
      struct snap_slot_info si;
      snap_slot_get(r->store, k, &si);
      if (si.state == SNAP_COMMITTED)
        ck_assert_msg(m->has_committed && si.step <= m->committed,
                      "rank %u holds step %llu COMMITTED, the node did not "
                      "commit it", i, (unsigned long long)si.step);
      if (m->has_committed && si.step == m->committed &&
          (si.state == SNAP_PINNED || si.state == SNAP_COMMITTED))
        held = true;
    }
    ck_assert_msg(!m->has_committed || held,
                  "rank %u no longer holds the committed step %llu", i,
                  (unsigned long long)m->committed);
  }
}

START_TEST(rounds_keep_committed_step_everywhere)
{
  uint32_t x = 4242;
  uint32_t total_commits = 0, total_aborts = 0, total_skipped = 0;
  struct snap_region_desc reg = {.name = "w", .bytes = 4096, .kind = 0};

  for (int run = 0; run < 120; run++) {
    struct sim m;
    memset(&m, 0, sizeof(m));
    m.nranks = 2 + (uint32_t)(run % 2);
    uint32_t nslots = 2 + (uint32_t)(run % 3 == 2);
    for (uint32_t i = 0; i < m.nranks; i++) {
      struct sim_rank *r = &m.r[i];
      struct snap_params p = {.job = "sim", .rank = i, .world = m.nranks,
                              .nslots = nslots, .regions = &reg,
                              .nregions = 1};
      char err[200];
      snprintf(r->name, sizeof(r->name), "/" SIM_SHM "%d.%u",
               (int)runner_pid, i);
      snap_store_unlink(r->name);
      ck_assert_msg(snap_store_create(&r->store, r->name, &p, err,
                                      sizeof(err)) == 0, "%s", err);
      r->next = 1;
    }
    for (int t = 0; t < 600; t++) {
      x = x * 1664525u + 1013904223u;
      uint32_t i = (x >> 8) % m.nranks, what = (x >> 16) % 3;
      struct sim_rank *r = &m.r[i];
      if (what == 0)
        sim_trainer(&m, i);
      else if (what == 1 && r->to_smp.n > 0)
        sim_smp(&m, i);
      else if (what == 2 && r->to_node.n > 0)
        sim_node(&m, i);
      sim_invariant(&m);
    }
    /* Trainers done: the rounds drain and end. */
    for (int t = 0; t < 1000; t++) {
      bool busy = false;
      for (uint32_t i = 0; i < m.nranks; i++) {
        if (m.r[i].to_smp.n > 0) {
          sim_smp(&m, i);
          busy = true;
        }
        if (m.r[i].to_node.n > 0) {
          sim_node(&m, i);
          busy = true;
        }
        sim_invariant(&m);
      }
      if (!busy)
        break;
    }
    ck_assert(!m.active);
    total_commits += m.commits;
    total_aborts += m.aborts;
    total_skipped += m.skipped;
    for (uint32_t i = 0; i < m.nranks; i++) {
      snap_store_close(m.r[i].store);
      snap_store_unlink(m.r[i].name);
    }
  }
  /* Every path was taken many times. */
  ck_assert_uint_gt(total_commits, 100);
  ck_assert_uint_gt(total_aborts, 100);
  ck_assert_uint_gt(total_skipped, 100);
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
  runner_pid = getpid();
  Suite *s = suite_create("node_plan");
  TCase *tc = tcase_create("plan");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, sealed_sorted_unique);
  tcase_add_test(tc, sealed_full_drops_oldest);
  tcase_add_test(tc, commit_needs_every_rank);
  tcase_add_test(tc, commit_picks_largest_common);
  tcase_add_test(tc, commit_matches_oracle);
  tcase_add_test(tc, round_verdicts);
  tcase_add_test(tc, pins_left_behind);
  tcase_add_test(tc, rounds_keep_committed_step_everywhere);
  tcase_add_test(tc, restore_intact_everywhere);
  tcase_add_test(tc, restore_none);
  tcase_add_test(tc, restore_matches_oracle);
  tcase_add_test(tc, backoff_doubles_to_cap);
  tcase_add_test(tc, restart_window_counts_recent);
  tcase_add_test(tc, healthy_resets_backoff);
  tcase_add_test(tc, fds_needed_and_refused);
  tcase_add_test(tc, budget_before_spawning);
  tcase_add_test(tc, exit_text_words);
  suite_add_tcase(s, tc);
  int rc = unit_run(s);
  /* Objects a failed simulation left behind (its process ended at the
   * assertion). */
  unit_shm_sweep(SIM_SHM "%d.", (int)runner_pid);
  return rc;
}
