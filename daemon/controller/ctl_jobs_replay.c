/*
 * ctl_jobs_replay.c — the job table rebuilt from the journal at start-up
 * (ctl_journal.c reads the records and calls these in order): JOB, EPOCH,
 * COMMIT and END records checked against what came before them (anything
 * out of order is PT_EFORMAT with a sentence; an EPOCH after a job's END
 * is its revival by `ptctl restore`), then every live job waits
 * for its nodes to register again, with its epoch and committed step.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

static int replay_bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int replay_bad(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return PT_EFORMAT;
}

int ctl_jobs_replay_job(struct ctl_jobs *js, const Pt__JobSpec *spec,
                        char *const *node_ids, size_t n, uint32_t master_port,
                        const char *master_addr,
                        const uint32_t *const *lists, const size_t *lens,
                        size_t ngroups, char *err, size_t errlen)
{
  struct ctl_job *j;
  char why[256];
  Pt__JobSpec *s = ctl_jobs_spec_copy(spec);

  if (s == NULL)
    return -ENOMEM;
  /* The spec was checked when it was journaled; its shape is checked again
   * (not the timeouts, which may have changed since). */
  struct ctl_jobs nojs = {.m = NULL};
  int rc = ctl_spec_check(&nojs, s, why, sizeof(why));
  protobuf_c_message_free_unpacked(&s->base, NULL);
  if (rc != PT_OK)
    return replay_bad(err, errlen, "a JOB record with a bad spec: %s", why);
  if (n != spec->nodes)
    return replay_bad(err, errlen, "JOB record of '%s' places %zu nodes, "
                      "its spec %" PRIu32, spec->name, n, spec->nodes);
  if (ctl_jobs_find_live(js, spec->name) != NULL)
    return replay_bad(err, errlen, "a second JOB record for live job '%s'",
                      spec->name);
  /* The groups as journaled; a coded job journaled before groups were
   * gets the node list cut in groups (nothing was protected by them). */
  struct ctl_groups g;
  uint32_t k = spec->has_code_k ? spec->code_k : 0;
  uint32_t mm = spec->has_code_m ? spec->code_m : 0;
  if (ngroups == 0 && k != 0)
    rc = ctl_groups_form(&g, spec->nodes, NULL, k, mm, NULL, why,
                         sizeof(why));
  else
    rc = ctl_groups_set(&g, spec->nodes, k, mm, lists, lens, ngroups, why,
                        sizeof(why));
  if (rc == -ENOMEM)
    return rc;
  if (rc != PT_OK)
    return replay_bad(err, errlen, "JOB record of '%s': %s", spec->name,
                      why);
  /* Above every epoch an ended job of this name had (job_new drops it),
   * as ctl_jobs_start: the first epoch of a job whose EPOCH is not
   * journaled yet (a cold start's probe) is the one it was to have. */
  uint64_t floor = 0;
  for (const struct ctl_job *o = js->jobs; o != NULL; o = o->next)
    if (strcmp(o->spec->name, spec->name) == 0 && o->epoch > floor)
      floor = o->epoch;
  rc = ctl_jobs_job_new(js, spec, &j);
  if (rc != PT_OK) {
    ctl_groups_release(&g);
    return rc;
  }
  j->first_epoch = floor + 1;
  j->groups = g;
  j->master_port = master_port;
  snprintf(j->master_addr, sizeof(j->master_addr), "%s",
           master_addr != NULL ? master_addr : "");
  for (size_t p = 0; p < n; p++)
    snprintf(j->parts[p].node_id, sizeof(j->parts[p].node_id), "%s",
             node_ids[p]);
  j->epoch = 0;
  return PT_OK;
}

static struct ctl_job *replay_find(struct ctl_jobs *js, const char *job,
                                   const char *what, char *err, size_t errlen)
{
  struct ctl_job *j = ctl_jobs_find_live(js, job);
  if (j == NULL)
    replay_bad(err, errlen, "%s record of job '%s', which is not live",
               what, LOG_ESC(job));
  return j;
}

int ctl_jobs_replay_epoch(struct ctl_jobs *js, const char *job, uint64_t epoch,
                          bool has_restore, uint64_t restore,
                          uint64_t first_epoch, char *err, size_t errlen)
{
  struct ctl_job *j = ctl_jobs_find(js, job);
  if (j != NULL && ctl_jobs_ended(j->state)) {
    /* After its END: `ptctl restore` revived it (ctl_jobs_restore.c),
     * which only a job with its snapshots kept can be. */
    if (j->state == CTL_JOB_DONE || j->removed)
      return replay_bad(err, errlen, "EPOCH %" PRIu64 " of job '%s' after "
                        "its END (%s, its snapshots removed)", epoch, job,
                        ctl_jobs_state_name(j->state));
    if (epoch <= j->epoch)
      return replay_bad(err, errlen, "EPOCH %" PRIu64 " of job '%s' after "
                        "epoch %" PRIu64, epoch, job, j->epoch);
    j->state = CTL_JOB_STARTING;
    j->reason[0] = '\0';
    j->ended_ms = 0;
    js->nended--;
    js->nlive++;
  }
  j = replay_find(js, job, "an EPOCH", err, errlen);
  if (j == NULL)
    return PT_EFORMAT;
  if (epoch <= j->epoch)
    return replay_bad(err, errlen, "EPOCH %" PRIu64 " of job '%s' after "
                      "epoch %" PRIu64, epoch, job, j->epoch);
  if (first_epoch == 0 || first_epoch > epoch)
    return replay_bad(err, errlen, "EPOCH %" PRIu64 " of job '%s' says its "
                      "first epoch is %" PRIu64, epoch, job, first_epoch);
  if (j->epoch != 0)
    j->restarts++;
  j->first_epoch = first_epoch;
  j->epoch = epoch;
  j->has_restore = has_restore;
  j->restore_step = has_restore ? restore : 0;
  if (has_restore && j->has_committed && restore < j->committed)
    j->committed = restore;
  if (j->has_empty_floor && j->has_committed &&
      j->committed < j->empty_floor)
    j->empty_floor = j->committed;
  return PT_OK;
}

int ctl_jobs_replay_place(struct ctl_jobs *js, const char *job,
                          uint32_t node_index, const char *node_id,
                          const char *was, bool has_since, uint64_t since,
                          char *err, size_t errlen)
{
  struct ctl_job *j = replay_find(js, job, "an EPOCH's placement", err,
                                  errlen);
  if (j == NULL)
    return PT_EFORMAT;
  if (j->groups.n == 0)
    return replay_bad(err, errlen, "EPOCH of job '%s' places a spare; the "
                      "job has no code", job);
  if (node_index >= j->nparts)
    return replay_bad(err, errlen, "EPOCH of job '%s' places a spare at "
                      "node index %" PRIu32 " (it has %" PRIu32 " nodes)",
                      job, node_index, j->nparts);
  if (node_id == NULL || node_id[0] == '\0' ||
      strlen(node_id) > RPC_NODE_ID_MAX)
    return replay_bad(err, errlen, "EPOCH of job '%s' places a spare with "
                      "no valid node id", job);
  for (uint32_t p = 0; p < j->nparts; p++)
    if (p != node_index && strcmp(j->parts[p].node_id, node_id) == 0)
      return replay_bad(err, errlen, "EPOCH of job '%s' places node '%s' at "
                        "index %" PRIu32 "; it is at %" PRIu32 " already",
                        job, LOG_ESC(node_id), node_index, p);
  struct ctl_part *pt = &j->parts[node_index];
  snprintf(pt->node_id, sizeof(pt->node_id), "%s", node_id);
  snprintf(pt->lost_id, sizeof(pt->lost_id), "%s",
           was != NULL && strlen(was) <= RPC_NODE_ID_MAX ? was : "");
  pt->empty = true;
  j->has_empty_floor = has_since;
  j->empty_floor = has_since ? since : 0;
  return PT_OK;
}

int ctl_jobs_replay_commit(struct ctl_jobs *js, const char *job,
                           uint64_t epoch, uint64_t step, char *err,
                           size_t errlen)
{
  struct ctl_job *j = replay_find(js, job, "a COMMIT", err, errlen);
  if (j == NULL)
    return PT_EFORMAT;
  if (epoch != j->epoch)
    return replay_bad(err, errlen, "COMMIT of job '%s' in epoch %" PRIu64
                      ", its epoch is %" PRIu64, job, epoch, j->epoch);
  if (j->has_committed && step <= j->committed)
    return replay_bad(err, errlen, "COMMIT of step %" PRIu64 " of job '%s' "
                      "after step %" PRIu64, step, job, j->committed);
  j->has_committed = true;
  j->committed = step;
  j->committed_ms = 0;
  j->commits++;
  /* A step newer than the spares' placement: they hold it, protected. */
  if (!j->has_empty_floor || step > j->empty_floor) {
    for (uint32_t p = 0; p < j->nparts; p++) {
      j->parts[p].empty = false;
      j->parts[p].lost_id[0] = '\0';
    }
    j->has_empty_floor = false;
  }
  return PT_OK;
}

int ctl_jobs_replay_end(struct ctl_jobs *js, const char *job,
                        enum ctl_job_state st, const char *reason,
                        bool has_removed, bool removed, char *err,
                        size_t errlen)
{
  struct ctl_job *j = replay_find(js, job, "an END", err, errlen);
  if (j == NULL)
    return PT_EFORMAT;
  if (!ctl_jobs_ended(st))
    return replay_bad(err, errlen, "END of job '%s' in state '%s'", job,
                      ctl_jobs_state_name(st));
  j->state = st;
  j->removed = has_removed ? removed : st == CTL_JOB_DONE;
  snprintf(j->reason, sizeof(j->reason), "%s", reason != NULL ? reason : "");
  j->ended_ms = ++js->replay_ends; /* in the order they ended */
  js->nlive--;
  js->nended++;
  ctl_jobs_trim_ended(js, j);
  return PT_OK;
}

void ctl_jobs_replay_done(struct ctl_jobs *js, uint64_t now)
{
  for (struct ctl_job *j = js->jobs; j != NULL; j = j->next) {
    if (ctl_jobs_ended(j->state))
      continue;
    commit_reset(&j->commit, j->has_committed, j->committed);
    j->state = CTL_JOB_STARTING;
    j->recovering = true;
    j->due_ms = now + js->m->t.dead_after_ms + j->spec->node_wait_ms;
    j->recover_dead_ms = now + js->m->t.dead_after_ms;
    for (uint32_t p = 0; p < j->nparts; p++) {
      j->parts[p].state = CTL_PART_ASSIGNED;
      j->parts[p].node = SIZE_MAX;
    }
    j->seal_min_stale = true;
    /* A cold start whose first epoch was not journaled: its nodes are
     * asked again (ctl_jobs_probe.c), as they register. */
    if (j->epoch == 0 && j->spec->resume_from != NULL &&
        j->spec->resume_from[0] != '\0') {
      j->epoch = j->first_epoch - 1; /* ctl_jobs_begin_epoch takes the next */
      j->persist.probing = true;
      j->persist.nprobed = 0;
      j->persist.has_cand = false;
      memset(j->persist.probed, 0, j->nparts * sizeof(*j->persist.probed));
    }
    /* Nodes already registered (none at start-up; a test may) bind now. */
    for (uint32_t p = 0; p < j->nparts; p++) {
      struct ctl_node *n = ctl_members_find(js->m, j->parts[p].node_id);
      if (n != NULL && n->jobp == NULL)
        ctl_jobs_bind_node(js, j, p, (size_t)(n - js->m->nodes));
    }
    log_notice("job '%s' epoch %" PRIu64 " rebuilt from the journal "
               "(committed step %s%" PRIu64 "): waiting for its %" PRIu32
               " nodes", j->spec->name, j->epoch,
               j->has_committed ? "" : "none, ",
               j->has_committed ? j->committed : 0, j->nparts);
  }
}
