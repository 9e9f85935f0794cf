/*
 * commit_plan.c — the commit module's decisions as pure functions, so that
 * unit tests can check them on their own: the steps each voter sealed, the
 * step of the next round, and the verdict of a phase from its votes.
 *
 * Invariant kept by commit.c with these: a step is committed only when
 * every voter pinned it, so that every voter still holds it (pinned) until
 * it is committed everywhere.
 */
#include <string.h>

#include "daemon/commit/commit.h"

void commit_plan_sealed_add(struct commit_sealed_set *s, uint64_t step)
{
  uint32_t i = s->n;

  if (commit_plan_sealed_has(s, step))
    return;
  if (s->n == COMMIT_SEALED_MAX) {
    /* Full: the oldest step goes (unless the new one is older still). */
    if (step < s->steps[0])
      return;
    memmove(&s->steps[0], &s->steps[1], (s->n - 1) * sizeof(s->steps[0]));
    s->n--;
    i = s->n;
  }
  while (i > 0 && s->steps[i - 1] > step) {
    s->steps[i] = s->steps[i - 1];
    i--;
  }
  s->steps[i] = step;
  s->n++;
}

void commit_plan_sealed_prune(struct commit_sealed_set *s, uint64_t upto)
{
  uint32_t k = 0;

  while (k < s->n && s->steps[k] <= upto)
    k++;
  memmove(&s->steps[0], &s->steps[k], (s->n - k) * sizeof(s->steps[0]));
  s->n -= k;
}

bool commit_plan_sealed_has(const struct commit_sealed_set *s, uint64_t step)
{
  for (uint32_t i = 0; i < s->n; i++)
    if (s->steps[i] == step)
      return true;
  return false;
}

bool commit_plan_step(const struct commit_sealed_set *const *sets, uint32_t n,
                      bool has_floor, uint64_t floor, uint64_t *out)
{
  if (n == 0)
    return false;
  /* Candidates come from voter 0's set, newest first. */
  for (uint32_t i = sets[0]->n; i-- > 0;) {
    uint64_t step = sets[0]->steps[i];
    bool everywhere = true;

    if (has_floor && step <= floor)
      return false;
    for (uint32_t r = 1; r < n && everywhere; r++)
      everywhere = commit_plan_sealed_has(sets[r], step);
    if (everywhere) {
      *out = step;
      return true;
    }
  }
  return false;
}

enum commit_verdict commit_plan_verdict(const enum commit_vote *votes,
                                        uint32_t n)
{
  bool all_yes = true;

  for (uint32_t i = 0; i < n; i++) {
    if (votes[i] == COMMIT_VOTE_WAIT || votes[i] == COMMIT_VOTE_NONE)
      return COMMIT_VERDICT_WAIT; /* NONE: not asked yet (a round starting) */
    all_yes = all_yes && votes[i] == COMMIT_VOTE_YES;
  }
  return n > 0 && all_yes ? COMMIT_VERDICT_COMMIT : COMMIT_VERDICT_ABORT;
}

bool commit_plan_votes_in(const enum commit_vote *votes, uint32_t n)
{
  for (uint32_t i = 0; i < n; i++)
    if (votes[i] == COMMIT_VOTE_WAIT)
      return false;
  return true;
}

bool commit_plan_unpin_to(enum commit_vote v)
{
  return v == COMMIT_VOTE_YES || v == COMMIT_VOTE_LOST;
}
