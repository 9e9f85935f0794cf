/*
 * commit.c — the commit round (commit.h describes its phases): one round
 * open at a time, its votes, the deadline of each phase and its verdict.
 *
 * Invariants: a round's step is newer than the floor (the committed step
 * or the last round's step, whichever is newer); a vote changes only from
 * WAIT, and only by the answer with the ticket of its request, by its
 * voter going, or by the phase's deadline; the verdict is given once per
 * round, before any COMMIT or UNPIN is sent; a round ends only when no
 * vote of its last phase is WAIT. Everything runs on the owner's thread
 * and within the owner's calls: the module keeps no time of its own.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "daemon/commit/commit.h"

int commit_init(struct commit *c, uint32_t n, uint32_t phase_ms,
                const struct commit_ops *ops, void *ctx)
{
  memset(c, 0, sizeof(*c));
  if (n == 0 || ops == NULL || ops->send == NULL || ops->verdict == NULL)
    return -EINVAL;
  c->v = calloc(n, sizeof(*c->v));
  if (c->v == NULL)
    return -ENOMEM;
  c->n = n;
  c->ops = ops;
  c->ctx = ctx;
  c->phase_ms = phase_ms;
  return 0;
}

void commit_release(struct commit *c)
{
  free(c->v);
  c->v = NULL;
  c->n = 0;
}

const char *commit_phase_name(enum commit_phase ph)
{
  switch (ph) {
  case COMMIT_PH_IDLE: return "idle";
  case COMMIT_PH_PIN: return "pin";
  case COMMIT_PH_COMMIT: return "commit";
  case COMMIT_PH_UNPIN: return "unpin";
  }
  return "?";
}

bool commit_floor(const struct commit *c, uint64_t *floor)
{
  *floor = c->committed;
  if (c->has_last && (!c->has_committed || c->last > *floor))
    *floor = c->last;
  return c->has_committed || c->has_last;
}

bool commit_is_open(const struct commit *c)
{
  return c->phase != COMMIT_PH_IDLE;
}

static bool next_step(const struct commit *c, uint64_t *step)
{
  const struct commit_sealed_set *stack[64], **sets = stack;
  uint64_t floor;
  bool has_floor = commit_floor(c, &floor), found;

  if (c->n > sizeof(stack) / sizeof(stack[0])) {
    sets = malloc(c->n * sizeof(*sets));
    if (sets == NULL)
      return false; /* tried again at the next drive */
  }
  for (uint32_t i = 0; i < c->n; i++)
    sets[i] = &c->v[i].sealed;
  found = commit_plan_step(sets, c->n, has_floor, floor, step);
  if (sets != stack)
    free(sets);
  return found;
}

bool commit_target(const struct commit *c, uint64_t *step)
{
  if (commit_is_open(c)) {
    *step = c->step;
    return true;
  }
  return next_step(c, step);
}

void commit_sealed(struct commit *c, uint32_t voter, uint64_t step)
{
  uint64_t floor;

  if (voter >= c->n || (commit_floor(c, &floor) && step <= floor))
    return;
  commit_plan_sealed_add(&c->v[voter].sealed, step);
}

void commit_sealed_clear(struct commit *c, uint32_t voter)
{
  if (voter < c->n)
    c->v[voter].sealed.n = 0;
}

void commit_cancel(struct commit *c)
{
  c->phase = COMMIT_PH_IDLE;
  c->deadline = 0;
  for (uint32_t i = 0; i < c->n; i++) {
    c->v[i].vote = COMMIT_VOTE_NONE;
    c->v[i].asked = false;
  }
}

void commit_reset(struct commit *c, bool has, uint64_t step)
{
  commit_cancel(c);
  c->has_committed = has;
  c->committed = has ? step : 0;
  c->has_last = false;
  c->last = 0;
  for (uint32_t i = 0; i < c->n; i++)
    c->v[i].sealed.n = 0;
}

void commit_note_committed(struct commit *c, uint64_t step)
{
  if (c->has_committed && step <= c->committed)
    return;
  c->has_committed = true;
  c->committed = step;
  for (uint32_t i = 0; i < c->n; i++)
    commit_plan_sealed_prune(&c->v[i].sealed, step);
}

static void err_text(const struct commit *c, int err, char *buf, size_t len)
{
  const char *t = c->ops->strerror != NULL ? c->ops->strerror(err) : NULL;

  if (t != NULL)
    snprintf(buf, len, "%s", t);
  else
    snprintf(buf, len, "error %d", err);
}

/* The first voter of the pin phase that did not pin: what the verdict
 * names. */
static void note_refusal(struct commit *c, uint32_t i, enum commit_vote vote,
                         bool sent, const char *text)
{
  if (c->phase != COMMIT_PH_PIN || vote == COMMIT_VOTE_YES)
    return;
  if (vote == COMMIT_VOTE_LOST)
    c->out.any_lost = true;
  if (c->out.voter != UINT32_MAX)
    return;
  c->out.voter = i;
  c->out.vote = vote;
  c->out.sent = sent;
  snprintf(c->out.text, sizeof(c->out.text), "%s", text != NULL ? text : "");
}

/* Voter i's vote of the phase under way is in. */
static void set_vote(struct commit *c, uint32_t i, enum commit_vote vote,
                     bool sent, const char *text)
{
  struct commit_voter *v = &c->v[i];

  v->vote = vote;
  v->asked = false;
  note_refusal(c, i, vote, sent, text);
  if (c->phase == COMMIT_PH_COMMIT && vote != COMMIT_VOTE_YES &&
      c->ops->commit_missed != NULL)
    c->ops->commit_missed(c->ctx, i, c->step, text != NULL ? text : "");
}

static void check(struct commit *c, uint64_t now);

/* Sends the phase's request to every voter whose vote is WAIT; a voter
 * gone, or whose request cannot be sent, votes LOST. */
static void send_phase(struct commit *c, enum commit_phase ph, uint64_t now)
{
  uint64_t round = c->round;

  c->phase = ph;
  c->deadline = now + c->phase_ms;
  c->sending = true;
  for (uint32_t i = 0; i < c->n && c->round == round && c->phase == ph; i++) {
    struct commit_voter *v = &c->v[i];
    char text[COMMIT_WHY_MAX];

    if (v->vote != COMMIT_VOTE_WAIT)
      continue;
    v->asked = false;
    if (v->gone) {
      set_vote(c, i, COMMIT_VOTE_LOST, false, "gone");
      continue;
    }
    /* Asked from now on, with the ticket send writes: an answer the owner
     * feeds back from inside send counts (check judges it afterwards). */
    v->asked = true;
    v->ticket = 0;
    int rc = c->ops->send(c->ctx, i, ph, c->round, c->step, &v->ticket);
    if (c->round != round || c->phase != ph)
      break; /* the owner dropped the round meanwhile */
    if (v->vote != COMMIT_VOTE_WAIT)
      continue; /* answered or gone meanwhile: judged once */
    if (rc != 0) {
      err_text(c, rc, text, sizeof(text));
      set_vote(c, i, COMMIT_VOTE_LOST, false, text);
    }
  }
  c->sending = false;
}

static void round_end(struct commit *c)
{
  uint64_t round = c->round, step = c->step;

  c->phase = COMMIT_PH_IDLE;
  c->deadline = 0;
  c->has_last = true;
  c->last = step;
  for (uint32_t i = 0; i < c->n; i++)
    commit_plan_sealed_prune(&c->v[i].sealed, step);
  if (c->ops->ended != NULL)
    c->ops->ended(c->ctx, round, step);
}

static bool votes_in(const struct commit *c)
{
  for (uint32_t i = 0; i < c->n; i++)
    if (c->v[i].vote == COMMIT_VOTE_WAIT)
      return false;
  return true;
}

/* Moves the round on once the votes of its phase are in. */
static void check(struct commit *c, uint64_t now)
{
  uint64_t round = c->round;

  if (c->phase == COMMIT_PH_IDLE || c->sending)
    return;
  if (c->phase == COMMIT_PH_PIN) {
    bool all_yes = true;
    for (uint32_t i = 0; i < c->n; i++) {
      if (c->v[i].vote == COMMIT_VOTE_WAIT || c->v[i].vote == COMMIT_VOTE_NONE)
        return;
      all_yes = all_yes && c->v[i].vote == COMMIT_VOTE_YES;
    }
    c->out.committed = all_yes;
    if (all_yes) {
      /* Every voter holds the step pinned until its COMMIT arrives, and
       * an owner that finds the pins later commits them again: the step
       * counts as committed from this moment on. */
      c->has_committed = true;
      c->committed = c->step;
    }
    c->ops->verdict(c->ctx, &c->out);
    if (c->round != round || c->phase != COMMIT_PH_PIN)
      return; /* dropped by the owner meanwhile */
    for (uint32_t i = 0; i < c->n; i++) {
      struct commit_voter *v = &c->v[i];
      bool to = all_yes || (commit_plan_unpin_to(v->vote) && !v->gone);
      v->vote = to ? COMMIT_VOTE_WAIT : COMMIT_VOTE_NONE;
    }
    send_phase(c, all_yes ? COMMIT_PH_COMMIT : COMMIT_PH_UNPIN, now);
    if (c->round != round || c->phase == COMMIT_PH_IDLE)
      return;
  }
  if (votes_in(c))
    round_end(c);
}

static void round_start(struct commit *c, uint64_t step, uint64_t now)
{
  c->round = ++c->rounds;
  c->step = step;
  memset(&c->out, 0, sizeof(c->out));
  c->out.round = c->round;
  c->out.step = step;
  c->out.voter = UINT32_MAX;
  for (uint32_t i = 0; i < c->n; i++) {
    c->v[i].vote = COMMIT_VOTE_WAIT;
    c->v[i].asked = false;
    c->v[i].gone = false;
  }
  send_phase(c, COMMIT_PH_PIN, now);
  check(c, now);
}

bool commit_drive(struct commit *c, uint64_t now)
{
  uint64_t step;

  if (commit_is_open(c) || !next_step(c, &step))
    return false;
  round_start(c, step, now);
  return true;
}

void commit_reply(struct commit *c, uint32_t voter, uint64_t ticket,
                  enum commit_vote vote, const char *text, uint64_t now)
{
  struct commit_voter *v;

  if (c->phase == COMMIT_PH_IDLE || voter >= c->n)
    return;
  v = &c->v[voter];
  if (v->vote != COMMIT_VOTE_WAIT || !v->asked || v->ticket != ticket)
    return; /* from a round or a phase that is over */
  if (vote != COMMIT_VOTE_YES && vote != COMMIT_VOTE_NO)
    vote = COMMIT_VOTE_LOST;
  set_vote(c, voter, vote, true, text);
  check(c, now);
}

void commit_voter_gone(struct commit *c, uint32_t voter, const char *text,
                       uint64_t now)
{
  if (c->phase == COMMIT_PH_IDLE || voter >= c->n)
    return;
  c->v[voter].gone = true;
  if (c->v[voter].vote != COMMIT_VOTE_WAIT)
    return;
  set_vote(c, voter, COMMIT_VOTE_LOST, c->v[voter].asked,
           text != NULL ? text : "gone");
  check(c, now);
}

void commit_tick(struct commit *c, uint64_t now)
{
  char text[COMMIT_WHY_MAX];

  if (c->phase == COMMIT_PH_IDLE || c->deadline == 0 || now < c->deadline)
    return;
  snprintf(text, sizeof(text), "no answer within %u ms", c->phase_ms);
  for (uint32_t i = 0; i < c->n; i++)
    if (c->v[i].vote == COMMIT_VOTE_WAIT)
      set_vote(c, i, COMMIT_VOTE_LOST, c->v[i].asked, text);
  check(c, now);
}

uint64_t commit_next_deadline(const struct commit *c)
{
  return c->phase != COMMIT_PH_IDLE && c->deadline != 0 ? c->deadline
                                                        : UINT64_MAX;
}
