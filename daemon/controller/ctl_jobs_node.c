/*
 * ctl_jobs_node.c — what a job does when one of its nodes comes and goes
 * (pure, as ctl_jobs.c): a node registering again binds to its part, is
 * sent its assignment (the same epoch and the committed step, or the
 * halt that a waiting job keeps it in), and a job waiting for it restarts
 * in a new epoch once every node is back; a node that goes down is a voter
 * gone for the round under way, and a dead one stops the job's other
 * parts, which then wait for it (ctl_jobs.c's deadlines).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

bool ctl_jobs_node_all_alive(struct ctl_jobs *js, const struct ctl_job *j)
{
  for (uint32_t p = 0; p < j->nparts; p++)
    if (!ctl_jobs_part_connected(js, j, p))
      return false;
  return true;
}

void ctl_jobs_node_registered(struct ctl_jobs *js, size_t node, uint64_t now)
{
  struct ctl_node *n = &js->m->nodes[node];
  struct ctl_job *j = n->jobp;

  if (j == NULL) {
    /* Its first registration since a replay? */
    for (struct ctl_job *k = js->jobs; k != NULL && j == NULL; k = k->next) {
      if (ctl_jobs_ended(k->state))
        continue;
      for (uint32_t p = 0; p < k->nparts; p++)
        if (k->parts[p].node == SIZE_MAX &&
            strcmp(k->parts[p].node_id, n->id) == 0) {
          ctl_jobs_bind_node(js, k, p, node);
          j = k;
          break;
        }
    }
    if (j == NULL) {
      /* A free node: a spare for a coded job waiting for a dead node. */
      for (struct ctl_job *k = js->jobs; k != NULL; k = k->next)
        if (k->state == CTL_JOB_WAITING && ctl_jobs_spare_take(js, k, now))
          break;
      return;
    }
  }
  uint32_t p = n->part;
  switch (j->state) {
  case CTL_JOB_WAITING:
    if (ctl_jobs_node_all_alive(js, j)) {
      log_notice("job '%s': node '%s' is back; restarting every part",
                 j->spec->name, n->id);
      j->restarts++;
      ctl_jobs_reason_set(j, "node '%s' came back", n->id);
      if (ctl_jobs_begin_epoch(js, j, j->has_committed, j->committed, now) != PT_OK)
        log_error("job '%s': cannot journal its next epoch", j->spec->name);
    } else if (js->ops->halt(js->ctx, j, p, false) == PT_OK) {
      /* Still waiting for another: this one's part stays halted (it may
       * have missed the halt while it was away). */
      j->parts[p].deadline = 0;
    }
    return;
  case CTL_JOB_STARTING:
  case CTL_JOB_RUNNING:
    /* It learns (again) the epoch and the committed step; it answers
     * where it stands, without respawning what runs. */
    if (j->recovering && ctl_jobs_node_all_alive(js, j))
      log_info("job '%s': every node is back after the controller's restart",
               j->spec->name);
    ctl_jobs_assign_part(js, j, p, now);
    if (j->parts[p].state != CTL_PART_ASSIGNED)
      j->parts[p].deadline = 0;
    return;
  case CTL_JOB_RESTARTING:
  case CTL_JOB_STOPPING:
    if (js->ops->halt(js->ctx, j, p, false) == PT_OK)
      j->parts[p].deadline = now + CTL_ASSIGN_MS;
    return;
  default:
    return;
  }
}

void ctl_jobs_node_down(struct ctl_jobs *js, size_t node, uint64_t now)
{
  struct ctl_node *n = &js->m->nodes[node];
  struct ctl_job *j = n->jobp;
  char why[CTL_REASON_MAX];

  if (j == NULL || ctl_jobs_ended(j->state))
    return;
  uint32_t p = n->part;
  snprintf(why, sizeof(why), "node '%s' %s", n->id,
           ctl_members_node_state_name(n->state));
  commit_voter_gone(&j->commit, p, why, now);
  if (n->state != CTL_NODE_DEAD)
    return; /* what it was asked keeps its deadline */
  j->parts[p].deadline = 0;
  if (j->state == CTL_JOB_STOPPING) {
    j->parts[p].state = CTL_PART_STOPPED;
    return;
  }
  /* A coded job: more of a group lost than its code tolerates ends it;
   * else spares take the dead nodes' places (ctl_jobs_spare.c). */
  if (ctl_jobs_spare_lost_check(js, j, now) ||
      ctl_jobs_spare_take(js, j, now))
    return;
  if (j->state == CTL_JOB_WAITING)
    return; /* already waiting: the first deadline stands */
  commit_cancel(&j->commit);
  j->state = CTL_JOB_WAITING;
  j->due_ms = now + j->spec->node_wait_ms;
  ctl_jobs_reason_set(j, "node '%s' is dead; waiting up to %" PRIu32 " ms for it",
             n->id, j->spec->node_wait_ms);
  log_warn("job '%s' epoch %" PRIu64 ": %s (its other parts halted)",
           j->spec->name, j->epoch, j->reason);
  ctl_jobs_halt_all(js, j, false, now, true);
}
