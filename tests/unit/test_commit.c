/*
 * test_commit.c — the commit module on its own (daemon/commit/): the
 * voters' sealed sets, the step of a round, the verdict of a phase, and
 * whole rounds driven through struct commit_ops by a fake owner: every
 * vote yes commits, one no aborts, a deadline aborts, a voter that goes
 * mid-round aborts and the round still ends, an answer of an old round is
 * ignored, and a second round never starts while one is open. A
 * simulation runs rounds of the module against real snapshot objects
 * while trainers race them, and checks that every rank always holds the
 * committed step.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/commit/commit.h"
#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

/* ---- sealed sets ---- */

START_TEST(sealed_sorted_unique)
{
  struct commit_sealed_set s = {0};
  const uint64_t in[] = {5, 3, 9, 3, 1, 9, 7};

  for (size_t i = 0; i < sizeof(in) / sizeof(in[0]); i++)
    commit_plan_sealed_add(&s, in[i]);
  ck_assert_uint_eq(s.n, 5);
  const uint64_t want[] = {1, 3, 5, 7, 9};
  for (uint32_t i = 0; i < s.n; i++)
    ck_assert_uint_eq(s.steps[i], want[i]);
  ck_assert(commit_plan_sealed_has(&s, 7));
  ck_assert(!commit_plan_sealed_has(&s, 4));

  commit_plan_sealed_prune(&s, 5);
  ck_assert_uint_eq(s.n, 2);
  ck_assert_uint_eq(s.steps[0], 7);
  ck_assert_uint_eq(s.steps[1], 9);
  commit_plan_sealed_prune(&s, 100);
  ck_assert_uint_eq(s.n, 0);
}
END_TEST

START_TEST(sealed_full_drops_oldest)
{
  struct commit_sealed_set s = {0};

  for (uint64_t st = 1; st <= COMMIT_SEALED_MAX + 10; st++)
    commit_plan_sealed_add(&s, st * 2);
  ck_assert_uint_eq(s.n, COMMIT_SEALED_MAX);
  ck_assert_uint_eq(s.steps[0], 2 * 11);
  ck_assert_uint_eq(s.steps[COMMIT_SEALED_MAX - 1],
                    2 * (COMMIT_SEALED_MAX + 10));
  /* Older than everything kept: ignored when full. */
  commit_plan_sealed_add(&s, 1);
  ck_assert(!commit_plan_sealed_has(&s, 1));
  /* In between: goes in, the oldest goes out. */
  commit_plan_sealed_add(&s, 2 * 11 + 1);
  ck_assert(commit_plan_sealed_has(&s, 23));
  ck_assert(!commit_plan_sealed_has(&s, 22));
  ck_assert_uint_eq(s.n, COMMIT_SEALED_MAX);
  for (uint32_t i = 1; i < s.n; i++)
    ck_assert(s.steps[i - 1] < s.steps[i]);
}
END_TEST

/* ---- the step of a round ---- */

static bool plan(struct commit_sealed_set *sets, uint32_t n, bool has,
                 uint64_t committed, uint64_t *out)
{
  const struct commit_sealed_set *p[8];
  for (uint32_t i = 0; i < n; i++)
    p[i] = &sets[i];
  return commit_plan_step(p, n, has, committed, out);
}

START_TEST(step_needs_every_voter)
{
  struct commit_sealed_set s[3];
  memset(s, 0, sizeof(s));
  uint64_t step = 0;

  commit_plan_sealed_add(&s[0], 4);
  commit_plan_sealed_add(&s[1], 4);
  ck_assert(!plan(s, 3, false, 0, &step)); /* voter 2 has nothing */
  commit_plan_sealed_add(&s[2], 5);
  ck_assert(!plan(s, 3, false, 0, &step));
  commit_plan_sealed_add(&s[2], 4);
  ck_assert(plan(s, 3, false, 0, &step));
  ck_assert_uint_eq(step, 4);
  /* Nothing newer than the floor: no round. */
  ck_assert(!plan(s, 3, true, 4, &step));
  ck_assert(!plan(s, 3, true, 9, &step));
  ck_assert(!plan(s, 0, false, 0, &step));
}
END_TEST

START_TEST(step_picks_largest_common)
{
  struct commit_sealed_set s[2];
  memset(s, 0, sizeof(s));
  uint64_t step = 0;

  for (uint64_t st = 1; st <= 6; st++)
    commit_plan_sealed_add(&s[0], st);
  commit_plan_sealed_add(&s[1], 2);
  commit_plan_sealed_add(&s[1], 5);
  commit_plan_sealed_add(&s[1], 7);
  ck_assert(plan(s, 2, true, 1, &step));
  ck_assert_uint_eq(step, 5);
  /* Committed 0 is a real step, not "none". */
  struct commit_sealed_set z[1];
  memset(z, 0, sizeof(z));
  commit_plan_sealed_add(&z[0], 0);
  ck_assert(plan(z, 1, false, 0, &step));
  ck_assert_uint_eq(step, 0);
  ck_assert(!plan(z, 1, true, 0, &step));
}
END_TEST

static bool oracle_step(struct commit_sealed_set *s, uint32_t n, bool has,
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

START_TEST(step_matches_oracle)
{
  srand(12345);
  for (int iter = 0; iter < 2000; iter++) {
    struct commit_sealed_set s[4];
    memset(s, 0, sizeof(s));
    uint32_t n = 1 + (uint32_t)(rand() % 4);
    uint64_t maxstep = 1 + (uint64_t)(rand() % 20);
    for (uint32_t r = 0; r < n; r++)
      for (int k = rand() % 12; k > 0; k--)
        commit_plan_sealed_add(&s[r], (uint64_t)rand() % (maxstep + 1));
    bool has = rand() % 2;
    uint64_t committed = (uint64_t)rand() % (maxstep + 1);
    uint64_t a = 0, b = 0;
    bool got = plan(s, n, has, committed, &a);
    bool want = oracle_step(s, n, has, committed, maxstep, &b);
    ck_assert_int_eq(got, want);
    if (got)
      ck_assert_uint_eq(a, b);
  }
}
END_TEST

START_TEST(phase_verdicts)
{
  enum commit_vote v[3];

  v[0] = v[1] = v[2] = COMMIT_VOTE_YES;
  ck_assert_int_eq(commit_plan_verdict(v, 3), COMMIT_VERDICT_COMMIT);
  ck_assert(commit_plan_votes_in(v, 3));
  /* One voter still to answer: wait, whatever the others said. */
  for (int other = COMMIT_VOTE_YES; other <= COMMIT_VOTE_LOST; other++) {
    v[0] = (enum commit_vote)other;
    v[1] = COMMIT_VOTE_YES;
    v[2] = COMMIT_VOTE_WAIT;
    ck_assert_int_eq(commit_plan_verdict(v, 3), COMMIT_VERDICT_WAIT);
    ck_assert(!commit_plan_votes_in(v, 3));
    v[2] = COMMIT_VOTE_NONE; /* not asked yet */
    ck_assert_int_eq(commit_plan_verdict(v, 3), COMMIT_VERDICT_WAIT);
  }
  /* Every answer in, one not yes: abort. */
  v[0] = COMMIT_VOTE_YES;
  v[1] = COMMIT_VOTE_NO;
  v[2] = COMMIT_VOTE_YES;
  ck_assert_int_eq(commit_plan_verdict(v, 3), COMMIT_VERDICT_ABORT);
  v[1] = COMMIT_VOTE_LOST;
  ck_assert_int_eq(commit_plan_verdict(v, 3), COMMIT_VERDICT_ABORT);
  ck_assert(commit_plan_votes_in(v, 3));
  ck_assert_int_eq(commit_plan_verdict(v, 1), COMMIT_VERDICT_COMMIT);
  ck_assert_int_eq(commit_plan_verdict(v, 0), COMMIT_VERDICT_ABORT);
  /* The commit and unpin phases: NONE (not asked) does not hold them up. */
  v[0] = COMMIT_VOTE_NONE;
  v[1] = COMMIT_VOTE_NO;
  v[2] = COMMIT_VOTE_LOST;
  ck_assert(commit_plan_votes_in(v, 3));

  /* UNPIN goes where a pin may be: yes, or no answer at all. */
  ck_assert(commit_plan_unpin_to(COMMIT_VOTE_YES));
  ck_assert(commit_plan_unpin_to(COMMIT_VOTE_LOST));
  ck_assert(!commit_plan_unpin_to(COMMIT_VOTE_NO));
  ck_assert(!commit_plan_unpin_to(COMMIT_VOTE_NONE));
  ck_assert(!commit_plan_unpin_to(COMMIT_VOTE_WAIT));
}
END_TEST

/* ---- rounds, through a fake owner ---- */

#define F_MAX 64
struct sent {
  uint32_t voter;
  enum commit_phase phase;
  uint64_t round, step, ticket;
};
struct fake {
  struct commit c;
  uint64_t next_ticket;
  struct sent sent[F_MAX];
  uint32_t nsent;
  int fail_voter;          /* send fails for this voter; -1 none */
  int gone_in_send;        /* send reports this voter gone, then fails */
  bool answer_in_send;     /* send feeds back YES before it returns */
  struct commit_outcome verdict[8];
  uint32_t nverdicts;
  uint32_t missed[8];      /* commit_missed per voter */
  uint32_t ended;
  uint64_t ended_step;
};

static int f_send(void *ctx, uint32_t voter, enum commit_phase phase,
                  uint64_t round, uint64_t step, uint64_t *ticket)
{
  struct fake *f = ctx;

  if ((int)voter == f->fail_voter)
    return -ENOTCONN;
  if ((int)voter == f->gone_in_send) {
    commit_voter_gone(&f->c, voter, "connection lost", 0);
    return -ENOTCONN;
  }
  ck_assert_uint_lt(f->nsent, F_MAX);
  *ticket = ++f->next_ticket;
  f->sent[f->nsent++] = (struct sent){voter, phase, round, step, *ticket};
  if (f->answer_in_send)
    commit_reply(&f->c, voter, *ticket, COMMIT_VOTE_YES, NULL, 0);
  return 0;
}

static void f_verdict(void *ctx, const struct commit_outcome *o)
{
  struct fake *f = ctx;

  ck_assert_uint_lt(f->nverdicts, 8);
  f->verdict[f->nverdicts++] = *o;
}

static void f_missed(void *ctx, uint32_t voter, uint64_t step,
                     const char *text)
{
  struct fake *f = ctx;
  (void)step;
  ck_assert_ptr_nonnull(text);
  f->missed[voter]++;
}

static void f_ended(void *ctx, uint64_t round, uint64_t step)
{
  struct fake *f = ctx;
  (void)round;
  f->ended++;
  f->ended_step = step;
}

static const struct commit_ops f_ops = {
    .send = f_send, .verdict = f_verdict, .commit_missed = f_missed,
    .ended = f_ended, .strerror = pt_strerror};

static void f_init(struct fake *f, uint32_t n)
{
  memset(f, 0, sizeof(*f));
  f->fail_voter = -1;
  f->gone_in_send = -1;
  ck_assert_int_eq(commit_init(&f->c, n, 1000, &f_ops, f), 0);
}

/* The request of phase ph sent to voter in the current round (fails the
 * test when there is none). */
static const struct sent *f_req(const struct fake *f, uint32_t voter,
                                enum commit_phase ph)
{
  for (uint32_t k = f->nsent; k-- > 0;)
    if (f->sent[k].voter == voter && f->sent[k].phase == ph &&
        f->sent[k].round == f->c.round)
      return &f->sent[k];
  ck_abort_msg("no %s request to voter %u", commit_phase_name(ph), voter);
  return NULL;
}

static bool f_asked(const struct fake *f, uint32_t voter,
                    enum commit_phase ph)
{
  for (uint32_t k = 0; k < f->nsent; k++)
    if (f->sent[k].voter == voter && f->sent[k].phase == ph &&
        f->sent[k].round == f->c.round)
      return true;
  return false;
}

static void f_answer(struct fake *f, uint32_t voter, enum commit_phase ph,
                     enum commit_vote vote, uint64_t now)
{
  commit_reply(&f->c, voter, f_req(f, voter, ph)->ticket, vote, "because",
               now);
}

static void f_seal_all(struct fake *f, uint64_t step)
{
  for (uint32_t i = 0; i < f->c.n; i++)
    commit_sealed(&f->c, i, step);
}

START_TEST(all_yes_commits)
{
  struct fake f;
  uint64_t floor;

  f_init(&f, 3);
  ck_assert(!commit_drive(&f.c, 0)); /* nothing sealed */
  commit_sealed(&f.c, 0, 5);
  commit_sealed(&f.c, 1, 5);
  ck_assert(!commit_drive(&f.c, 0)); /* voter 2 has not sealed it */
  ck_assert_uint_eq(f.nsent, 0);
  commit_sealed(&f.c, 2, 5);
  ck_assert(commit_drive(&f.c, 0));
  ck_assert(commit_is_open(&f.c));
  ck_assert_uint_eq(f.nsent, 3);
  for (uint32_t i = 0; i < 3; i++)
    ck_assert_uint_eq(f_req(&f, i, COMMIT_PH_PIN)->step, 5);
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 10);
  f_answer(&f, 2, COMMIT_PH_PIN, COMMIT_VOTE_YES, 10);
  ck_assert_uint_eq(f.nverdicts, 0); /* voter 1 still to answer */
  f_answer(&f, 1, COMMIT_PH_PIN, COMMIT_VOTE_YES, 20);
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(f.verdict[0].committed);
  ck_assert_uint_eq(f.verdict[0].step, 5);
  ck_assert(f.c.has_committed);
  ck_assert_uint_eq(f.c.committed, 5);
  ck_assert_uint_eq(f.nsent, 6);
  for (uint32_t i = 0; i < 3; i++)
    f_req(&f, i, COMMIT_PH_COMMIT);
  ck_assert(commit_is_open(&f.c)); /* until every COMMIT is answered */
  for (uint32_t i = 0; i < 3; i++)
    f_answer(&f, i, COMMIT_PH_COMMIT, COMMIT_VOTE_YES, 30);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.ended, 1);
  ck_assert_uint_eq(f.ended_step, 5);
  ck_assert(commit_floor(&f.c, &floor));
  ck_assert_uint_eq(floor, 5);
  for (uint32_t i = 0; i < 3; i++)
    ck_assert_uint_eq(f.missed[i], 0);
  /* The floor holds: an older or the same step starts nothing. */
  f_seal_all(&f, 4);
  f_seal_all(&f, 5);
  ck_assert(!commit_drive(&f.c, 40));
  commit_release(&f.c);
}
END_TEST

START_TEST(one_no_aborts)
{
  struct fake f;
  uint64_t floor;

  f_init(&f, 3);
  f_seal_all(&f, 7);
  ck_assert(commit_drive(&f.c, 0));
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 1);
  f_answer(&f, 1, COMMIT_PH_PIN, COMMIT_VOTE_NO, 1);
  ck_assert_uint_eq(f.nverdicts, 0); /* a refusal does not end it early */
  f_answer(&f, 2, COMMIT_PH_PIN, COMMIT_VOTE_YES, 2);
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(!f.verdict[0].committed);
  ck_assert_uint_eq(f.verdict[0].voter, 1);
  ck_assert_int_eq(f.verdict[0].vote, COMMIT_VOTE_NO);
  ck_assert(f.verdict[0].sent);
  ck_assert(!f.verdict[0].any_lost);
  ck_assert_str_eq(f.verdict[0].text, "because");
  ck_assert(!f.c.has_committed);
  /* UNPIN to the voters that pinned it, not to the one that refused. */
  f_req(&f, 0, COMMIT_PH_UNPIN);
  f_req(&f, 2, COMMIT_PH_UNPIN);
  ck_assert(!f_asked(&f, 1, COMMIT_PH_UNPIN));
  ck_assert(!f_asked(&f, 0, COMMIT_PH_COMMIT));
  f_answer(&f, 0, COMMIT_PH_UNPIN, COMMIT_VOTE_YES, 3);
  ck_assert(commit_is_open(&f.c));
  f_answer(&f, 2, COMMIT_PH_UNPIN, COMMIT_VOTE_NO, 3);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.ended, 1);
  /* No round goes back to the step of the last one. */
  ck_assert(commit_floor(&f.c, &floor));
  ck_assert_uint_eq(floor, 7);
  ck_assert(!commit_drive(&f.c, 4));
  commit_release(&f.c);
}
END_TEST

START_TEST(vote_timeout_aborts)
{
  struct fake f;

  f_init(&f, 3);
  f_seal_all(&f, 9);
  ck_assert(commit_drive(&f.c, 100));
  ck_assert_uint_eq(commit_next_deadline(&f.c), 1100);
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 200);
  f_answer(&f, 1, COMMIT_PH_PIN, COMMIT_VOTE_YES, 200);
  commit_tick(&f.c, 1099);
  ck_assert_uint_eq(f.nverdicts, 0);
  commit_tick(&f.c, 1100);
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(!f.verdict[0].committed);
  ck_assert_uint_eq(f.verdict[0].voter, 2);
  ck_assert_int_eq(f.verdict[0].vote, COMMIT_VOTE_LOST);
  ck_assert(f.verdict[0].any_lost);
  /* Voter 2 may have pinned it: it is told to let go as well. */
  for (uint32_t i = 0; i < 3; i++)
    f_req(&f, i, COMMIT_PH_UNPIN);
  ck_assert_uint_eq(commit_next_deadline(&f.c), 2100);
  /* Its late PIN answer counts for nothing now. */
  const struct sent *late = NULL;
  for (uint32_t k = 0; k < f.nsent; k++)
    if (f.sent[k].voter == 2 && f.sent[k].phase == COMMIT_PH_PIN)
      late = &f.sent[k];
  commit_reply(&f.c, 2, late->ticket, COMMIT_VOTE_YES, NULL, 1200);
  f_answer(&f, 0, COMMIT_PH_UNPIN, COMMIT_VOTE_YES, 1200);
  ck_assert(commit_is_open(&f.c));
  /* The unpin phase has a deadline too: the round ends. */
  commit_tick(&f.c, 2100);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.ended, 1);
  ck_assert_uint_eq(commit_next_deadline(&f.c), UINT64_MAX);
  ck_assert(!f.c.has_committed);
  commit_release(&f.c);
}
END_TEST

START_TEST(voter_gone_aborts_and_ends)
{
  struct fake f;

  f_init(&f, 3);
  f_seal_all(&f, 11);
  ck_assert(commit_drive(&f.c, 0));
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 1);
  commit_voter_gone(&f.c, 1, "connection lost", 2);
  ck_assert_uint_eq(f.nverdicts, 0); /* voter 2 may still pin it */
  f_answer(&f, 2, COMMIT_PH_PIN, COMMIT_VOTE_YES, 3);
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(!f.verdict[0].committed);
  ck_assert_uint_eq(f.verdict[0].voter, 1);
  ck_assert_int_eq(f.verdict[0].vote, COMMIT_VOTE_LOST);
  ck_assert_str_eq(f.verdict[0].text, "connection lost");
  /* The voter that went is not asked again in this round. */
  f_req(&f, 0, COMMIT_PH_UNPIN);
  f_req(&f, 2, COMMIT_PH_UNPIN);
  ck_assert(!f_asked(&f, 1, COMMIT_PH_UNPIN));
  /* A voter that goes in the unpin phase does not hold the round. */
  f_answer(&f, 0, COMMIT_PH_UNPIN, COMMIT_VOTE_YES, 4);
  commit_voter_gone(&f.c, 2, NULL, 5);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.ended, 1);

  /* Gone in the commit phase: it keeps the step pinned (commit_missed),
   * the step is committed anyway, and the round ends. */
  f_seal_all(&f, 12);
  ck_assert(commit_drive(&f.c, 10));
  for (uint32_t i = 0; i < 3; i++)
    f_answer(&f, i, COMMIT_PH_PIN, COMMIT_VOTE_YES, 11);
  ck_assert(f.verdict[1].committed);
  f_answer(&f, 0, COMMIT_PH_COMMIT, COMMIT_VOTE_YES, 12);
  f_answer(&f, 1, COMMIT_PH_COMMIT, COMMIT_VOTE_YES, 12);
  commit_voter_gone(&f.c, 2, "connection lost", 13);
  ck_assert_uint_eq(f.missed[2], 1);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.c.committed, 12);
  commit_release(&f.c);
}
END_TEST

START_TEST(send_failure_is_lost)
{
  struct fake f;

  f_init(&f, 2);
  f.fail_voter = 1;
  f_seal_all(&f, 3);
  ck_assert(commit_drive(&f.c, 0));
  ck_assert(!f_asked(&f, 1, COMMIT_PH_PIN));
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 1);
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(!f.verdict[0].committed);
  ck_assert_uint_eq(f.verdict[0].voter, 1);
  ck_assert(!f.verdict[0].sent);
  ck_assert_str_eq(f.verdict[0].text, pt_strerror(-ENOTCONN));
  f_answer(&f, 0, COMMIT_PH_UNPIN, COMMIT_VOTE_YES, 2);
  ck_assert(!commit_is_open(&f.c)); /* voter 1 could not be asked */

  /* No voter can be asked at all: the round ends at once. */
  struct fake g;
  f_init(&g, 1);
  g.fail_voter = 0;
  commit_sealed(&g.c, 0, 1);
  ck_assert(commit_drive(&g.c, 0));
  ck_assert(!commit_is_open(&g.c));
  ck_assert_uint_eq(g.nverdicts, 1);
  ck_assert_uint_eq(g.ended, 1);
  commit_release(&g.c);
  commit_release(&f.c);
}
END_TEST

/* The owner may feed answers back from inside its send (an owner whose
 * voters answer at once, or that learns in send that a voter is gone):
 * such an answer counts, and a voter is judged once. */
START_TEST(answer_from_inside_send)
{
  struct fake f;

  f_init(&f, 3);
  f.answer_in_send = true;
  f_seal_all(&f, 4);
  ck_assert(commit_drive(&f.c, 0));
  /* Every voter answered yes to PIN and to COMMIT while being asked. */
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(f.verdict[0].committed);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.ended, 1);
  ck_assert_uint_eq(f.c.committed, 4);
  commit_release(&f.c);

  /* Gone from inside the COMMIT's send: commit_missed once, not twice. */
  f_init(&f, 2);
  f_seal_all(&f, 6);
  ck_assert(commit_drive(&f.c, 0));
  f.gone_in_send = 1;
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 1);
  f_answer(&f, 1, COMMIT_PH_PIN, COMMIT_VOTE_YES, 1);
  ck_assert(f.verdict[0].committed);
  ck_assert_uint_eq(f.missed[1], 1);
  f_answer(&f, 0, COMMIT_PH_COMMIT, COMMIT_VOTE_YES, 2);
  ck_assert(!commit_is_open(&f.c));
  ck_assert_uint_eq(f.ended, 1);
  commit_release(&f.c);
}
END_TEST

START_TEST(late_reply_ignored)
{
  struct fake f;

  f_init(&f, 2);
  f_seal_all(&f, 20);
  ck_assert(commit_drive(&f.c, 0));
  uint64_t old0 = f_req(&f, 0, COMMIT_PH_PIN)->ticket;
  uint64_t old_round = f.c.round;
  /* The owner drops the round (a restart): what is still to come of it is
   * ignored. */
  commit_cancel(&f.c);
  ck_assert(!commit_is_open(&f.c));
  commit_reply(&f.c, 0, old0, COMMIT_VOTE_YES, NULL, 1);
  ck_assert_uint_eq(f.nverdicts, 0);
  /* A new round for the same step (the last one never ended). */
  ck_assert(commit_drive(&f.c, 2));
  ck_assert_uint_gt(f.c.round, old_round);
  commit_reply(&f.c, 0, old0, COMMIT_VOTE_YES, NULL, 3);
  commit_reply(&f.c, 1, f_req(&f, 1, COMMIT_PH_PIN)->ticket, COMMIT_VOTE_YES,
               NULL, 3);
  ck_assert_uint_eq(f.nverdicts, 0); /* voter 0's old answer did not count */
  /* A reply with voter 0's ticket but from another voter: ignored. */
  commit_reply(&f.c, 1, f_req(&f, 0, COMMIT_PH_PIN)->ticket, COMMIT_VOTE_NO,
               NULL, 4);
  ck_assert_uint_eq(f.nverdicts, 0);
  f_answer(&f, 0, COMMIT_PH_PIN, COMMIT_VOTE_YES, 5);
  ck_assert_uint_eq(f.nverdicts, 1);
  ck_assert(f.verdict[0].committed);
  /* The PIN answer again, in the commit phase: ignored. */
  uint64_t pin0 = 0;
  for (uint32_t k = 0; k < f.nsent; k++)
    if (f.sent[k].voter == 0 && f.sent[k].phase == COMMIT_PH_PIN &&
        f.sent[k].round == f.c.round)
      pin0 = f.sent[k].ticket;
  commit_reply(&f.c, 0, pin0, COMMIT_VOTE_NO, NULL, 6);
  ck_assert_uint_eq(f.missed[0], 0);
  ck_assert(commit_is_open(&f.c));
  commit_release(&f.c);
}
END_TEST

START_TEST(one_round_at_a_time)
{
  struct fake f;
  uint64_t step = 0;

  f_init(&f, 2);
  f_seal_all(&f, 5);
  ck_assert(commit_drive(&f.c, 0));
  uint32_t sent = f.nsent;
  f_seal_all(&f, 6);
  ck_assert(!commit_drive(&f.c, 1));
  ck_assert_uint_eq(f.nsent, sent);
  ck_assert(commit_target(&f.c, &step));
  ck_assert_uint_eq(step, 5); /* the open round's */
  for (uint32_t i = 0; i < 2; i++)
    f_answer(&f, i, COMMIT_PH_PIN, COMMIT_VOTE_YES, 2);
  ck_assert(!commit_drive(&f.c, 3)); /* the commit phase is still open */
  for (uint32_t i = 0; i < 2; i++)
    f_answer(&f, i, COMMIT_PH_COMMIT, COMMIT_VOTE_YES, 4);
  ck_assert(!commit_is_open(&f.c));
  ck_assert(commit_target(&f.c, &step));
  ck_assert_uint_eq(step, 6);
  ck_assert(commit_drive(&f.c, 5));
  ck_assert_uint_eq(f.c.step, 6);
  ck_assert_uint_eq(f_req(&f, 1, COMMIT_PH_PIN)->step, 6);
  commit_release(&f.c);
}
END_TEST

START_TEST(reset_and_adopt)
{
  struct fake f;
  uint64_t floor, step;

  f_init(&f, 2);
  f_seal_all(&f, 5);
  f_seal_all(&f, 8);
  commit_note_committed(&f.c, 6); /* adopted: 5 goes, 8 stays */
  ck_assert(commit_target(&f.c, &step));
  ck_assert_uint_eq(step, 8);
  commit_note_committed(&f.c, 2); /* older: nothing */
  ck_assert(commit_floor(&f.c, &floor));
  ck_assert_uint_eq(floor, 6);
  ck_assert(commit_drive(&f.c, 0));
  uint64_t t = f_req(&f, 0, COMMIT_PH_PIN)->ticket;
  commit_reset(&f.c, true, 4); /* a restore to step 4 */
  ck_assert(!commit_is_open(&f.c));
  ck_assert(!commit_target(&f.c, &step)); /* every sealed set forgotten */
  ck_assert(commit_floor(&f.c, &floor));
  ck_assert_uint_eq(floor, 4);
  commit_reply(&f.c, 0, t, COMMIT_VOTE_YES, NULL, 1);
  ck_assert_uint_eq(f.nverdicts, 0);
  commit_reset(&f.c, false, 0);
  ck_assert(!commit_floor(&f.c, &floor));
  commit_release(&f.c);
  struct commit none;
  ck_assert_int_eq(commit_init(&none, 0, 1, &f_ops, &f), -EINVAL);
  commit_release(&none);
}
END_TEST

/*
 * The simulation: R ranks, each with a real snapshot object of S slots, its
 * voter end (a FIFO of requests applied to the object, as ptd smp does) and
 * its trainer; the module runs the rounds. A random scheduler interleaves
 * trainer steps, voter work and owner work, so that trainers overtake
 * rounds in every way. The trainers stay within one step of each other
 * (their all-reduce). After every action: every rank holds the committed
 * step, PINNED or COMMITTED, and no rank holds a COMMITTED step that
 * was not committed.
 */
#define SIM_RANKS 3
#define SIM_Q 64
#define SIM_SHM "pt-tcommit-sim."

static pid_t runner_pid; /* names the objects, so that main can sweep them */

enum sim_msg { SIM_REQ, SIM_REPLY, SIM_SEALED };
struct sim_item {
  enum sim_msg kind;
  enum commit_phase phase;
  uint64_t step, ticket;
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
};
struct sim {
  struct commit c;
  struct sim_rank r[SIM_RANKS];
  uint32_t nranks;
  uint64_t tickets;
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

static int sim_send(void *ctx, uint32_t voter, enum commit_phase phase,
                    uint64_t round, uint64_t step, uint64_t *ticket)
{
  struct sim *m = ctx;
  (void)round;
  *ticket = ++m->tickets;
  fifo_push(&m->r[voter].to_smp, (struct sim_item){
      .kind = SIM_REQ, .phase = phase, .step = step, .ticket = *ticket});
  return 0;
}

static void sim_verdict(void *ctx, const struct commit_outcome *o)
{
  struct sim *m = ctx;
  if (o->committed)
    m->commits++;
  else
    m->aborts++;
}

static const struct commit_ops sim_ops = {.send = sim_send,
                                          .verdict = sim_verdict};

/* The owner handles the oldest message from rank i. */
static void sim_node(struct sim *m, uint32_t i)
{
  struct sim_item it = fifo_pop(&m->r[i].to_node);
  if (it.kind == SIM_SEALED)
    commit_sealed(&m->c, i, it.step);
  else
    commit_reply(&m->c, i, it.ticket,
                 it.status == 0 ? COMMIT_VOTE_YES : COMMIT_VOTE_NO, NULL, 0);
  commit_drive(&m->c, 0);
}

/* Rank i's voter end handles the oldest request. */
static void sim_smp(struct sim *m, uint32_t i)
{
  struct sim_rank *r = &m->r[i];
  struct sim_item it = fifo_pop(&r->to_smp);
  int rc;
  switch (it.phase) {
  case COMMIT_PH_PIN:
    rc = snap_slot_pin(r->store, it.step);
    break;
  case COMMIT_PH_COMMIT:
    rc = snap_slot_commit(r->store, it.step);
    ck_assert_int_eq(rc, 0); /* a pinned step is still there */
    break;
  default:
    rc = snap_slot_unpin(r->store, it.step);
    break;
  }
  fifo_push(&r->to_node, (struct sim_item){.kind = SIM_REPLY,
                                           .ticket = it.ticket,
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
        ck_assert_msg(m->c.has_committed && si.step <= m->c.committed,
                      "rank %u holds step %llu COMMITTED, it was not "
                      "committed", i, (unsigned long long)si.step);
      if (m->c.has_committed && si.step == m->c.committed &&
          (si.state == SNAP_PINNED || si.state == SNAP_PROTECTED ||
           si.state == SNAP_COMMITTED))
        held = true;
    }
    ck_assert_msg(!m->c.has_committed || held,
                  "rank %u no longer holds the committed step %llu", i,
                  (unsigned long long)m->c.committed);
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
    ck_assert_int_eq(commit_init(&m.c, m.nranks, 1000, &sim_ops, &m), 0);
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
    ck_assert(!commit_is_open(&m.c));
    total_commits += m.commits;
    total_aborts += m.aborts;
    total_skipped += m.skipped;
    for (uint32_t i = 0; i < m.nranks; i++) {
      snap_store_close(m.r[i].store);
      snap_store_unlink(m.r[i].name);
    }
    commit_release(&m.c);
  }
  /* Every path was taken many times. */
  ck_assert_uint_gt(total_commits, 100);
  ck_assert_uint_gt(total_aborts, 100);
  ck_assert_uint_gt(total_skipped, 100);
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *s = suite_create("commit");
  TCase *tc = tcase_create("commit");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, sealed_sorted_unique);
  tcase_add_test(tc, sealed_full_drops_oldest);
  tcase_add_test(tc, step_needs_every_voter);
  tcase_add_test(tc, step_picks_largest_common);
  tcase_add_test(tc, step_matches_oracle);
  tcase_add_test(tc, phase_verdicts);
  tcase_add_test(tc, all_yes_commits);
  tcase_add_test(tc, one_no_aborts);
  tcase_add_test(tc, vote_timeout_aborts);
  tcase_add_test(tc, voter_gone_aborts_and_ends);
  tcase_add_test(tc, send_failure_is_lost);
  tcase_add_test(tc, late_reply_ignored);
  tcase_add_test(tc, answer_from_inside_send);
  tcase_add_test(tc, one_round_at_a_time);
  tcase_add_test(tc, reset_and_adopt);
  tcase_add_test(tc, rounds_keep_committed_step_everywhere);
  suite_add_tcase(s, tc);
  int rc = unit_run(s);
  unit_shm_sweep(SIM_SHM "%d.", (int)runner_pid);
  return rc;
}
