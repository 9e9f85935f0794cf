/*
 * ctl_jobs_commit.c — the commit module's seam for the controller's jobs
 * (pure, as ctl_jobs.c): one commit module per job (daemon/commit/), one
 * voter per part. A part that reported a step pinned (STEP_SEALED{pinned})
 * has voted for a round of that step already: no JOB_PIN goes to it. The
 * COMMIT of a step is journaled (ops->journal, durable on return) before
 * any JOB_COMMIT; JOB_COMMIT and JOB_UNPIN are not answered. In front of
 * commit_drive, whose search is O(parts), a gate kept incrementally lets a
 * STEP_SEALED cost O(1) until a round is possible.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

/* ---- the commit module's seam ---- */

static int c_send(void *ctx, uint32_t voter, enum commit_phase phase,
                  uint64_t round, uint64_t step, uint64_t *ticket)
{
  struct ctl_job *j = ctx;
  struct ctl_jobs *js = j->js;
  static uint64_t seq;
  (void)round;

  if (!ctl_jobs_part_connected(js, j, voter))
    return -ENOTCONN;
  if (phase == COMMIT_PH_PIN) {
    struct ctl_part *pt = &j->parts[voter];
    if (pt->has_pinned && pt->pinned_step == step) {
      /* It pinned step before it reported it: its vote is in already. */
      *ticket = ++seq;
      commit_reply(&j->commit, voter, *ticket, COMMIT_VOTE_YES, NULL, 0);
      return 0;
    }
    return js->ops->pin(js->ctx, j, voter, step, ticket);
  }
  if (phase == COMMIT_PH_UNPIN) /* its pin goes, whatever it was */
    j->parts[voter].has_pinned = false;
  /* JOB_COMMIT and JOB_UNPIN are not answered: taken once sent. */
  int rc = phase == COMMIT_PH_COMMIT ? js->ops->commit(js->ctx, j, voter, step)
                                     : js->ops->unpin(js->ctx, j, voter, step);
  if (rc != 0)
    return rc;
  *ticket = ++seq;
  commit_reply(&j->commit, voter, *ticket, COMMIT_VOTE_YES, NULL, 0);
  return 0;
}

static void c_verdict(void *ctx, const struct commit_outcome *o)
{
  struct ctl_job *j = ctx;
  struct ctl_jobs *js = j->js;

  if (!o->committed) {
    bool benign = !o->any_lost && o->voter != UINT32_MAX;
    log_at_(benign ? LOG_LVL_DEBUG : LOG_LVL_NOTICE,
            "job '%s' epoch %" PRIu64 ": step %" PRIu64 " not committed: "
            "node '%s' %s (%s)", j->spec->name, j->epoch, o->step,
            o->voter < j->nparts ? j->parts[o->voter].node_id : "?",
            o->vote == COMMIT_VOTE_NO ? "no longer holds it"
            : o->sent                 ? "did not answer"
                                      : "could not be asked",
            LOG_ESC(o->text)); /* a node's words, when it refused */
    return;
  }
  bool had = j->has_committed;
  uint64_t was = j->committed;
  j->has_committed = true;
  j->committed = o->step;
  j->commits++;
  if (js->ops->journal(js->ctx, j, CTL_REC_COMMIT) != PT_OK) {
    /* Not durable: not committed. The round is dropped (no JOB_COMMIT);
     * the pins stay until a later round or the next epoch. */
    j->has_committed = had;
    j->committed = was;
    j->commits--;
    commit_reset(&j->commit, had, was);
    return;
  }
  j->committed_since = true;
  ctl_jobs_spare_protected(j);
  ctl_jobs_persist_on_commit(j, o->step); /* before its JOB_COMMITs */
  log_debug("job '%s' epoch %" PRIu64 ": commit step %" PRIu64, j->spec->name,
            j->epoch, o->step);
}

static void c_missed(void *ctx, uint32_t voter, uint64_t step,
                     const char *text)
{
  struct ctl_job *j = ctx;
  log_info("job '%s': node '%s' did not get the commit of step %" PRIu64
           " (%s); it learns it on reconnect", j->spec->name,
           j->parts[voter].node_id, step, text);
  /* Nor the mark: the step never completes on disk; the next one is
   * marked at once, not after the deadline. */
  ctl_jobs_persist_missed(j, voter, step);
}

const struct commit_ops ctl_jobs_commit_ops = {
    .send = c_send,
    .verdict = c_verdict,
    .commit_missed = c_missed,
    .strerror = pt_strerror,
};

/* The gate in front of commit_drive, whose search for a step is O(parts):
 * a round can only start once every part sealed a step newer than the
 * floor, i.e. once the oldest of the parts' newest sealed steps is. That
 * oldest one is kept incrementally (recomputed, O(parts), only when the
 * last part at it moves on), so a STEP_SEALED costs O(1) until the round
 * is possible. A part's "seal" below is last_sealed + 1, 0 for none. */
uint64_t ctl_jobs_commit_seal_of(const struct ctl_part *pt)
{
  return pt->has_sealed ? pt->last_sealed + 1 : 0;
}

static void seal_min_compute(struct ctl_job *j)
{
  j->seal_min = UINT64_MAX;
  j->n_at_min = 0;
  for (uint32_t p = 0; p < j->nparts; p++) {
    uint64_t v = ctl_jobs_commit_seal_of(&j->parts[p]);
    if (v < j->seal_min) {
      j->seal_min = v;
      j->n_at_min = 0;
    }
    if (v == j->seal_min)
      j->n_at_min++;
  }
  j->seal_min_stale = false;
}

void ctl_jobs_commit_realign(struct ctl_jobs *js, struct ctl_job *j,
                             uint32_t p, uint64_t step)
{
  if (j->groups.n == 0 || commit_is_open(&j->commit) ||
      (j->has_committed && step <= j->committed))
    return;
  for (uint32_t q = 0; q < j->nparts; q++) {
    const struct ctl_part *o = &j->parts[q];
    if (q == p || !o->has_pinned || o->pinned_step == step ||
        (j->has_committed && o->pinned_step <= j->committed))
      continue;
    uint64_t other = o->pinned_step;
    /* Apart only when neither step can still commit: q never reported
     * step (sealed, pinned or not) and p never reported q's. */
    if (commit_plan_sealed_has(&j->commit.v[q].sealed, step) ||
        commit_plan_sealed_has(&j->commit.v[p].sealed, other))
      continue;
    log_debug("job '%s' epoch %" PRIu64 ": node '%s' pinned step %" PRIu64
              ", node '%s' step %" PRIu64 ": neither can commit, both let "
              "go of", j->spec->name, j->epoch, j->parts[p].node_id, step,
              o->node_id, other);
    for (uint32_t r = 0; r < j->nparts; r++) {
      struct ctl_part *pt = &j->parts[r];
      if (pt->has_pinned && (pt->pinned_step == step || pt->pinned_step == other))
        pt->has_pinned = false;
      if (!ctl_jobs_part_connected(js, j, r))
        continue;
      (void)js->ops->unpin(js->ctx, j, r, step);
      (void)js->ops->unpin(js->ctx, j, r, other);
    }
    return;
  }
}

void ctl_jobs_commit_drive(struct ctl_job *j, uint64_t now)
{
  uint64_t floor;

  if (j->state != CTL_JOB_STARTING && j->state != CTL_JOB_RUNNING)
    return;
  if (commit_is_open(&j->commit))
    return;
  if (j->seal_min_stale)
    seal_min_compute(j);
  if (j->seal_min == 0 ||
      (commit_floor(&j->commit, &floor) && j->seal_min - 1 <= floor))
    return;
  (void)commit_drive(&j->commit, now);
}
