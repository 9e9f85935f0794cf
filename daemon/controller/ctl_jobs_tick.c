/*
 * ctl_jobs_tick.c — the deadlines of the controller's jobs (pure, as
 * ctl_jobs.c): an assignment or a halt not answered in time, a restart's
 * backoff ending, a dead node's wait running out (the job fails, naming
 * it), a commit round's phase outliving its deadline; and when the next of
 * them falls, for the jobs' one timer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

static const char *first_down(struct ctl_jobs *js, const struct ctl_job *j)
{
  for (uint32_t p = 0; p < j->nparts; p++)
    if (!ctl_jobs_part_connected(js, j, p))
      return j->parts[p].node_id;
  return "?";
}

static void job_tick(struct ctl_jobs *js, struct ctl_job *j, uint64_t now)
{
  char why[CTL_REASON_MAX];

  commit_tick(&j->commit, now);
  if (ctl_jobs_ended(j->state))
    return;
  ctl_jobs_commit_drive(j, now); /* a round that ran out of time may free the next */
  switch (j->state) {
  case CTL_JOB_RESTARTING:
    if (now < j->due_ms)
      return;
    if (!ctl_jobs_node_all_alive(js, j)) {
      const char *who = first_down(js, j);
      struct ctl_node *dn = NULL;
      for (uint32_t p = 0; p < j->nparts; p++)
        if (!ctl_jobs_part_connected(js, j, p))
          dn = ctl_jobs_part_node(js, j, p);
      if (dn != NULL && dn->state == CTL_NODE_DEAD) {
        if (ctl_jobs_spare_lost_check(js, j, now) ||
            ctl_jobs_spare_take(js, j, now))
          return;
        j->state = CTL_JOB_WAITING;
        j->due_ms = now + j->spec->node_wait_ms;
        ctl_jobs_reason_set(j, "node '%s' is dead; waiting up to %" PRIu32
                   " ms for it", who, j->spec->node_wait_ms);
        return;
      }
      /* Unreachable: assigned when it registers again. */
    }
    /* From the committed step, or the older one a part's damaged
     * snapshot sent it to (ctl_jobs_parts_state). */
    bool fb = j->has_fallback &&
              (!j->has_committed || j->fallback_step < j->committed);
    if (ctl_jobs_begin_epoch(js, j, fb || j->has_committed,
                             fb ? j->fallback_step : j->committed,
                             now) != PT_OK)
      j->due_ms = now + CTL_BACKOFF_CAP_MS;
    else
      j->has_fallback = false;
    return;
  case CTL_JOB_WAITING:
    if (now < j->due_ms)
      return;
    ctl_jobs_reason_set(j, "node '%s' did not come back within %" PRIu32
               " ms (node_wait_ms)", first_down(js, j),
               j->spec->node_wait_ms);
    ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
    return;
  case CTL_JOB_STARTING:
  case CTL_JOB_RUNNING:
    if (ctl_jobs_spare_recovering(js, j, now))
      return;
    if (j->recovering && j->due_ms != 0 && now >= j->due_ms) {
      for (uint32_t p = 0; p < j->nparts; p++)
        if (j->parts[p].node == SIZE_MAX) {
          ctl_jobs_reason_set(j, "node '%s' did not register again within %" PRIu64
                     " ms of the controller's restart", j->parts[p].node_id,
                     (uint64_t)js->m->t.dead_after_ms +
                         j->spec->node_wait_ms);
          ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
          return;
        }
      j->recovering = false;
      j->due_ms = 0;
    }
    if (ctl_jobs_probe_tick(js, j, now))
      return; /* a cold start's probe: its own deadlines */
    for (uint32_t p = 0; p < j->nparts; p++) {
      struct ctl_part *pt = &j->parts[p];
      if (pt->deadline == 0 || now < pt->deadline)
        continue;
      pt->deadline = 0;
      pt->state = CTL_PART_FAILED;
      snprintf(why, sizeof(why), "node '%s' did not answer its assignment "
               "within %u ms", pt->node_id, CTL_ASSIGN_MS);
      ctl_jobs_restart_counted(js, j, now, why);
      return;
    }
    return;
  default:
    for (uint32_t p = 0; p < j->nparts; p++)
      if (j->parts[p].deadline != 0 && now >= j->parts[p].deadline) {
        j->parts[p].deadline = 0;
        j->parts[p].state = CTL_PART_STOPPED;
      }
    return;
  }
}

void ctl_jobs_tick_all(struct ctl_jobs *js, uint64_t now)
{
  struct ctl_job *j = js->jobs;
  while (j != NULL) {
    struct ctl_job *next = j->next; /* an end may trim the list */
    if (!ctl_jobs_ended(j->state))
      job_tick(js, j, now);
    j = next;
  }
}

uint64_t ctl_jobs_tick_next_ms(const struct ctl_jobs *js, uint64_t now)
{
  uint64_t best = UINT64_MAX;
#define CONSIDER(at)                                                           \
  do {                                                                         \
    uint64_t at_ = (at);                                                       \
    uint64_t d_ = at_ > now ? at_ - now : 0;                                   \
    if (d_ < best)                                                             \
      best = d_;                                                               \
  } while (0)
  for (const struct ctl_job *j = js->jobs; j != NULL; j = j->next) {
    if (ctl_jobs_ended(j->state))
      continue;
    if (commit_next_deadline(&j->commit) != UINT64_MAX)
      CONSIDER(commit_next_deadline(&j->commit));
    if (j->due_ms != 0)
      CONSIDER(j->due_ms);
    for (uint32_t p = 0; p < j->nparts; p++)
      if (j->parts[p].deadline != 0)
        CONSIDER(j->parts[p].deadline);
  }
#undef CONSIDER
  return best;
}
