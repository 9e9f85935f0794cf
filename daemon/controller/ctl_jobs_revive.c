/*
 * ctl_jobs_revive.c — `ptctl restore JOB [--step N]` of an ended job
 * (pure, as ctl_jobs.c; ctl_jobs_restore hands it ended jobs, and takes
 * the step check for live ones): an ended job whose snapshots are still
 * on its nodes (failed, or stopped with --keep) is revived: it is live
 * again, on the same nodes (each registered, alive and in no other job,
 * else refused naming the node), with its restart budget and backoff
 * started over, in a new epoch journaled before any node hears of it (an
 * EPOCH record after the job's END, which the replay takes as the
 * revival). A completed job, or a stopped one whose snapshots were
 * removed, has nothing to restore: refused, saying so.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

static bool part_holds(const struct ctl_part *pt, uint64_t step)
{
  for (uint32_t i = 0; i < pt->nheld; i++)
    if (pt->held[i] == step)
      return true;
  return false;
}

/* What an ended job's parts hold is what they last reported, journaled
 * with its END (ctl_journal.c), so a controller restart keeps it; a part
 * that reported nothing (nheld 0) is known to hold the committed step
 * only. */
int ctl_jobs_revive_pick_step(const struct ctl_job *j, bool has_step,
                              uint64_t step, bool *has, uint64_t *from,
                              char *err, size_t errlen)
{
  *has = j->has_committed;
  *from = j->committed;
  if (!has_step)
    return PT_OK;
  if (!j->has_committed || step > j->committed) {
    snprintf(err, errlen, "step %" PRIu64 " of job '%s' is not committed "
             "(newest committed: %s)", step, j->spec->name,
             j->has_committed ? "see status" : "none");
    return -ENOENT;
  }
  for (uint32_t p = 0; p < j->nparts && step != j->committed; p++)
    if (!part_holds(&j->parts[p], step)) {
      char list[160] = "";
      size_t used = 0;
      for (uint32_t i = 0; i < j->parts[p].nheld && used < sizeof(list) - 24;
           i++)
        used += (size_t)snprintf(list + used, sizeof(list) - used,
                                 "%s%" PRIu64, i > 0 ? ", " : "",
                                 j->parts[p].held[i]);
      snprintf(err, errlen, "step %" PRIu64 " of job '%s' is no longer "
               "held on node '%s' (it holds committed step%s %s)", step,
               j->spec->name, j->parts[p].node_id,
               j->parts[p].nheld == 1 ? "" : "s",
               used > 0 ? list : "none known");
      return -ENOENT;
    }
  *has = true;
  *from = step;
  return PT_OK;
}

/* An ended job can be revived: its snapshots are on its nodes, and each
 * node is registered, alive and free; its master port is free. OUT:
 * idx[p], the member index of part p's node. */
static int revive_check(struct ctl_jobs *js, const struct ctl_job *j,
                        size_t *idx, char *err, size_t errlen)
{
  const char *name = j->spec->name;

  if (j->state == CTL_JOB_DONE) {
    snprintf(err, errlen, "job '%s' completed (%s): its snapshots were "
             "removed, there is nothing to restore; start it again as a new "
             "job", name, j->reason);
    return -ENOENT;
  }
  if (j->removed) {
    snprintf(err, errlen, "job '%s' was stopped without --keep: its "
             "snapshots were removed, there is nothing to restore; start it "
             "again as a new job", name);
    return -ENOENT;
  }
  for (uint32_t p = 0; p < j->nparts; p++) {
    const char *id = j->parts[p].node_id;
    struct ctl_node *n = ctl_members_find(js->m, id);
    if (n == NULL) {
      snprintf(err, errlen, "job '%s' is %s; its node '%s' (part %" PRIu32
               ") has not registered: start it, then restore", name,
               ctl_jobs_state_name(j->state), id, p);
      return -EAGAIN;
    }
    if (n->state != CTL_NODE_ALIVE || n->conn == NULL) {
      snprintf(err, errlen, "job '%s' is %s; its node '%s' (part %" PRIu32
               ") is %s: restore once it is alive", name,
               ctl_jobs_state_name(j->state), id, p,
               n->state != CTL_NODE_ALIVE
                   ? ctl_members_node_state_name(n->state)
                   : "disconnected");
      return -EAGAIN;
    }
    if (n->jobp != NULL) {
      snprintf(err, errlen, "job '%s' is %s; its node '%s' (part %" PRIu32
               ") runs a part of job '%s' now", name,
               ctl_jobs_state_name(j->state), id, p, n->job);
      return -EBUSY;
    }
    idx[p] = (size_t)(n - js->m->nodes);
  }
  const char *master = js->m->nodes[idx[0]].advertise;
  for (const struct ctl_job *o = js->jobs; o != NULL; o = o->next)
    if (o != j && !ctl_jobs_ended(o->state) &&
        o->master_port == j->master_port &&
        strcmp(o->master_addr, master) == 0) {
      snprintf(err, errlen, "job '%s''s master port %" PRIu32 " on %s is "
               "job '%s''s now", name, j->master_port, master,
               o->spec->name);
      return -EADDRINUSE;
    }
  return PT_OK;
}

/* The ended job j live again in a new epoch from (has) from. */
static int revive(struct ctl_jobs *js, struct ctl_job *j, bool has,
                  uint64_t from, uint64_t now, char *err, size_t errlen)
{
  size_t *idx = calloc(j->nparts > 0 ? j->nparts : 1, sizeof(*idx));
  enum ctl_job_state was = j->state;
  char reason[CTL_REASON_MAX];

  if (idx == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  int rc = revive_check(js, j, idx, err, errlen);
  if (rc != PT_OK) {
    free(idx);
    return rc;
  }
  snprintf(reason, sizeof(reason), "%s", j->reason);
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_bind_node(js, j, p, idx[p]);
  uint32_t was_restarts = j->restarts;
  j->restarts++;
  ctl_jobs_reason_set(j, "restored by ptctl after it %s",
                      ctl_jobs_state_name(was));
  /* Live while its EPOCH is journaled: a compaction then copies it so. */
  j->state = CTL_JOB_STARTING;
  ctl_jobs_persist_operator(j);
  rc = ctl_jobs_begin_epoch(js, j, has, from, now);
  if (rc != PT_OK) {
    j->state = was;
    for (uint32_t p = 0; p < j->nparts; p++) {
      struct ctl_node *n = &js->m->nodes[idx[p]];
      n->jobp = NULL;
      n->job[0] = '\0';
      j->parts[p].node = SIZE_MAX;
    }
    j->restarts = was_restarts;
    snprintf(j->reason, sizeof(j->reason), "%s", reason);
    snprintf(err, errlen, "cannot journal the new epoch: %s",
             pt_strerror(rc));
    free(idx);
    return rc;
  }
  free(idx);
  /* Live again: its budget of restarts and its backoff start over. */
  js->nended--;
  js->nlive++;
  memset(j->restart_log, 0, j->nlog * sizeof(*j->restart_log));
  j->log_pos = 0;
  j->backoff_attempt = 0;
  j->recovering = false;
  j->removed = false;
  j->stop_keep = false;
  j->ended_ms = 0;
  log_notice("job '%s' (%s: %s) restored by ptctl in epoch %" PRIu64,
             j->spec->name, ctl_jobs_state_name(was), reason, j->epoch);
  return PT_OK;
}

int ctl_jobs_revive_job(struct ctl_jobs *js, struct ctl_job *j, bool has_step,
                        uint64_t step, uint64_t now, bool *has_restored,
                        uint64_t *restored, char *err, size_t errlen)
{
  bool has;
  uint64_t from;

  if (j->state == CTL_JOB_DONE || j->removed)
    return revive_check(js, j, NULL, err, errlen); /* the refusal */
  int rc = ctl_jobs_revive_pick_step(j, has_step, step, &has, &from, err,
                                     errlen);
  if (rc == PT_OK)
    rc = revive(js, j, has, from, now, err, errlen);
  if (rc != PT_OK)
    return rc;
  *has_restored = has;
  *restored = from;
  return PT_OK;
}

/* Part pt found the epoch's restore step damaged (its ranks' checksums,
 * PT_ECHECKSUM): the next epoch restores the newest older step it holds
 * intact (m->held), and the other parts check that they hold it too. None:
 * the job fails rather than restore damaged state. False: it ended. */
bool ctl_jobs_revive_damaged(struct ctl_jobs *js, struct ctl_job *j,
                             const struct ctl_part *pt,
                             const Pt__JobPartState *m, const char *why,
                             uint64_t now)
{
  bool has = false;
  uint64_t best = 0;

  for (size_t i = 0; i < m->n_held; i++)
    if (m->held[i] < j->restore_step && (!has || m->held[i] > best)) {
      has = true;
      best = m->held[i];
    }
  if (!has && ctl_jobs_persist_fallback(j, why))
    return true;
  if (!has) {
    commit_cancel(&j->commit);
    ctl_jobs_reason_set(j, "%s; node '%s' holds no older step intact: not "
                        "restarted (never from damaged state)", why,
                        pt->node_id);
    ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
    return false;
  }
  j->has_fallback = true;
  j->fallback_step = best;
  log_notice("job '%s' epoch %" PRIu64 ": step %" PRIu64 " is damaged on "
             "node '%s'; the next epoch restores step %" PRIu64 ", the "
             "newest older step it holds intact", j->spec->name, j->epoch,
             j->restore_step, pt->node_id, best);
  return true;
}
