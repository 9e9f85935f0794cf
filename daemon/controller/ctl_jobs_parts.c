/*
 * ctl_jobs_parts.c — what the nodes say of a job's parts, as part of the
 * jobs state machine (ctl_jobs.c has its rules): a part's state (running,
 * done, failed, stopped unasked), a step sealed, a commit vote. No
 * sockets, no clock; every effect through struct ctl_jobs_ops.
 *
 * A failed part goes, in order, to the persistent tier (its files of the
 * step failed, or memory holds too little of it: ctl_jobs_persist.c), to a
 * damaged restore step (ctl_jobs_revive.c), to a permanent error (the job
 * fails), and else to a counted restart in a new epoch.
 */
#include <inttypes.h>
#include <stdio.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

static bool all_parts(const struct ctl_job *j, enum ctl_part_state st)
{
  for (uint32_t p = 0; p < j->nparts; p++)
    if (j->parts[p].state != st)
      return false;
  return true;
}

int ctl_jobs_parts_state(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                         uint64_t epoch, enum ctl_part_state st,
                         const char *msg, const Pt__JobPartState *m,
                         uint64_t now)
{
  struct ctl_part *pt = &j->parts[p];
  char why[CTL_REASON_MAX];

  if (epoch != j->epoch || j->persist.probing)
    return PT_EEPOCH; /* (probing: no epoch yet; an older job's report) */
  if (m != NULL) {
    if (m->has_bytes_held)
      pt->bytes_held = m->bytes_held;
    if (m->has_last_sealed) {
      /* What it sealed while the controller was away (or before this
       * controller began) counts as a STEP_SEALED. */
      pt->has_sealed = true;
      pt->last_sealed = m->last_sealed;
      j->seal_min_stale = true;
      commit_sealed(&j->commit, p, m->last_sealed);
    }
    pt->nheld = 0;
    for (size_t i = 0; i < m->n_held && pt->nheld < CTL_HELD_MAX; i++)
      pt->held[pt->nheld++] = m->held[m->n_held - 1 - i]; /* newest kept */
    /* Its SMPs rebuilt the restore step (back empty): no parity of it is
     * held there until the next commit, as for a spare. */
    if (m->has_rebuilt && m->rebuilt && j->groups.n > 0 && !pt->empty)
      ctl_jobs_spare_rebuilt(j, p);
  }
  pt->deadline = 0;
  switch (j->state) {
  case CTL_JOB_STARTING:
  case CTL_JOB_RUNNING:
    if (st == CTL_PART_FAILED ||
        (st == CTL_PART_STOPPED && pt->state != CTL_PART_STOPPED)) {
      pt->state = st;
      snprintf(why, sizeof(why), "node '%s' part %s%s%s", pt->node_id,
               st == CTL_PART_FAILED ? "failed" : "stopped unasked",
               msg != NULL && msg[0] != '\0' ? ": " : "",
               msg != NULL ? LOG_ESC(msg) : ""); /* the node's words */
      /* The tier's: its files of the step failed, or memory holds too
       * little of it (ctl_jobs_persist.c). */
      if (st == CTL_PART_FAILED && m != NULL &&
          ctl_jobs_persist_part_failed(js, j, m, why, now))
        return PT_OK;
      if (st == CTL_PART_FAILED && m != NULL && m->has_status &&
          m->status == PT_ECHECKSUM && j->has_restore && !j->restore_disk &&
          !ctl_jobs_revive_damaged(js, j, pt, m, why, now))
        return PT_OK;
      if (st == CTL_PART_FAILED && m != NULL && m->has_permanent &&
          m->permanent) {
        /* Exit 78, PT_EBUDGET, ...: as standalone, the job fails. */
        commit_cancel(&j->commit);
        ctl_jobs_reason_set(j, "%s; not restarted (a permanent error)", why);
        ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
        return PT_OK;
      }
      ctl_jobs_restart_counted(js, j, now, why);
      return PT_OK;
    }
    if (st == CTL_PART_ASSIGNED) /* "starting": answered, on its way */
      return PT_OK;
    pt->state = st;
    if (st == CTL_PART_DONE) {
      if (all_parts(j, CTL_PART_DONE)) {
        ctl_jobs_reason_set(j, "every rank finished");
        ctl_jobs_end_job(js, j, CTL_JOB_DONE, now);
      }
      return PT_OK;
    }
    if (j->state == CTL_JOB_STARTING && all_parts(j, CTL_PART_RUNNING)) {
      j->state = CTL_JOB_RUNNING;
      j->running_since = now;
      j->recovering = false;
      j->due_ms = 0;
      log_info("job '%s' epoch %" PRIu64 " running on every node",
               j->spec->name, j->epoch);
    }
    uint64_t before = j->commits;
    ctl_jobs_commit_drive(j, now);
    if (j->commits != before)
      j->committed_ms = now;
    return PT_OK;
  default:
    /* Restarting, waiting, stopping: the answers to the halts. */
    if (st == CTL_PART_STOPPED || st == CTL_PART_FAILED ||
        st == CTL_PART_DONE)
      pt->state = CTL_PART_STOPPED;
    return PT_OK;
  }
}

int ctl_jobs_parts_sealed(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                          uint64_t epoch, uint64_t step, bool pinned,
                          uint64_t now)
{
  if (epoch != j->epoch || j->persist.probing)
    return PT_EEPOCH; /* (probing: no epoch yet; an older job's report) */
  struct ctl_part *pt = &j->parts[p];
  if (pinned && (!j->has_committed || step > j->committed)) {
    pt->has_pinned = true;
    pt->pinned_step = step;
  }
  if (!pt->has_sealed || step > pt->last_sealed) {
    bool at_min = !j->seal_min_stale && ctl_jobs_commit_seal_of(pt) == j->seal_min;
    pt->has_sealed = true;
    pt->last_sealed = step;
    if (at_min && --j->n_at_min == 0)
      j->seal_min_stale = true;
  }
  if (pinned)
    ctl_jobs_commit_realign(js, j, p, step);
  uint64_t before = j->commits;
  commit_sealed(&j->commit, p, step);
  ctl_jobs_commit_drive(j, now);
  if (j->commits != before)
    j->committed_ms = now;
  return PT_OK;
}

int ctl_jobs_parts_vote(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                        uint64_t epoch, uint64_t step, uint64_t ticket,
                        int status, const char *msg, uint64_t now)
{
  (void)js;
  if (epoch != j->epoch || j->persist.probing)
    return PT_EEPOCH; /* (probing: no epoch yet; an older job's report) */
  if (!commit_is_open(&j->commit) || j->commit.step != step)
    return PT_OK;
  uint64_t before = j->commits;
  commit_reply(&j->commit, p, ticket,
               status == 0 ? COMMIT_VOTE_YES : COMMIT_VOTE_NO,
               msg != NULL ? msg : pt_strerror(status), now);
  ctl_jobs_commit_drive(j, now);
  if (j->commits != before)
    j->committed_ms = now;
  return PT_OK;
}
