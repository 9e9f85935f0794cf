/*
 * ctl_jobs_probe.c — a cold start of a cluster job from the files of an
 * earlier run (ptctl start --resume-from DIR), as part of the jobs state
 * machine (pure, as ctl_jobs.c; the node's side is
 * daemon/node/node_persist_probe.c).
 *
 * The earlier run's journal is gone, and a cluster writes no MANIFEST:
 * only the nodes can say what DIR/<job> holds. Before the first epoch
 * (the job starting, no EPOCH journaled) every part is sent DISK_PROBE:
 * which steps hold a file of every one of its global ranks, written by a
 * job of this world size, all of one flush. Once every part answered,
 * the steps all of them hold are complete (journaled PERSISTED, resumed,
 * before the EPOCH that restores one), and the first epoch restores the
 * newest from disk as any disk epoch does: every block verified, a file
 * that fails sends the job to the one before. None in common fails the
 * job, saying what each side had; a part that cannot read the directory
 * or does not answer within CTL_PROBE_MS fails it too, naming the node.
 *
 * A spare taking a dead node's place, or a node back, asks every part
 * again (ctl_jobs_begin_epoch). A controller restarted before the first
 * EPOCH asks again (ctl_jobs_replay.c).
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

void ctl_jobs_probe_send(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                         uint64_t now)
{
  struct ctl_persist *ps = &j->persist;
  struct ctl_part *pt = &j->parts[p];
  if (!ps->probing || ps->probed[p] || !ctl_jobs_part_connected(js, j, p) ||
      js->ops->probe == NULL)
    return;
  if (js->ops->probe(js->ctx, j, p) == PT_OK) {
    pt->sent = true;
    pt->deadline = now + CTL_PROBE_MS;
  }
}

void ctl_jobs_probe_begin(struct ctl_jobs *js, struct ctl_job *j,
                          uint64_t now)
{
  struct ctl_persist *ps = &j->persist;
  ps->probing = true;
  ps->nprobed = 0;
  ps->has_cand = false;
  ps->ncand = 0;
  ps->other_world = 0;
  ps->other_step = 0;
  ps->emptied_by = 0;
  memset(ps->probed, 0, j->nparts * sizeof(*ps->probed));
  j->state = CTL_JOB_STARTING;
  j->due_ms = 0;
  for (uint32_t p = 0; p < j->nparts; p++) {
    j->parts[p].state = CTL_PART_ASSIGNED;
    j->parts[p].sent = false;
    j->parts[p].deadline = 0;
  }
  log_notice("job '%s': a cold start from '%s/%s': asking its %" PRIu32
             " nodes which steps their ranks' files hold", j->spec->name,
             LOG_ESC(j->spec->resume_from), j->spec->name, j->nparts);
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_probe_send(js, j, p, now);
}

/* The candidates that part's answer also holds (the first answer: all of
 * them). */
static void intersect(struct ctl_persist *ps, const Pt__DiskProbeReply *m)
{
  if (!ps->has_cand) {
    ps->has_cand = true;
    ps->ncand = 0;
    /* the newest CTL_DISK_MAX, ascending (a node sends them so) */
    size_t from = m->n_steps > CTL_DISK_MAX ? m->n_steps - CTL_DISK_MAX : 0;
    for (size_t i = from; i < m->n_steps; i++) {
      if (ps->ncand > 0 && m->steps[i]->step <= ps->cand[ps->ncand - 1].step)
        continue; /* not ascending: a hostile or broken node's */
      ps->cand[ps->ncand++] = (struct ctl_probe_step){
          .step = m->steps[i]->step, .mark = m->steps[i]->mark,
          .bytes = m->steps[i]->has_bytes ? m->steps[i]->bytes : 0};
    }
    return;
  }
  uint32_t k = 0;
  for (uint32_t c = 0; c < ps->ncand; c++) {
    for (size_t i = 0; i < m->n_steps; i++)
      if (m->steps[i]->step == ps->cand[c].step &&
          m->steps[i]->mark == ps->cand[c].mark) {
        struct ctl_probe_step s = ps->cand[c];
        s.bytes += m->steps[i]->has_bytes ? m->steps[i]->bytes : 0;
        ps->cand[k++] = s;
        break;
      }
  }
  ps->ncand = k;
}

static void fail(struct ctl_jobs *js, struct ctl_job *j, uint64_t now)
{
  j->persist.probing = false;
  log_error("job '%s': %s", j->spec->name, j->reason);
  ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
}

/* Every part answered: the first epoch, from the newest step in common. */
static void probed_all(struct ctl_jobs *js, struct ctl_job *j, uint64_t now)
{
  struct ctl_persist *ps = &j->persist;
  const char *dir = j->spec->resume_from;
  if (ps->ncand == 0) {
    if (ps->other_world != 0)
      ctl_jobs_reason_set(j, "--resume-from '%s/%s': step %" PRIu64 " was "
                          "written by a job of %" PRIu32 " ranks; this one "
                          "has %" PRIu32 " (%" PRIu32 " nodes x %" PRIu32
                          "): give the same world size",
                          LOG_ESC(dir), j->spec->name, ps->other_step,
                          ps->other_world, ctl_jobs_world_size(j),
                          j->nparts, j->spec->ranks_per_node);
    else if (ps->emptied_by != 0)
      ctl_jobs_reason_set(j, "--resume-from '%s/%s': no step holds a file "
                          "of every rank, of one flush, on every node "
                          "(node '%s' holds none of the steps the nodes "
                          "before it hold)", LOG_ESC(dir), j->spec->name,
                          j->parts[ps->emptied_by - 1].node_id);
    else
      ctl_jobs_reason_set(j, "--resume-from '%s/%s': no step holds a file "
                          "of every rank, of one flush, on every node",
                          LOG_ESC(dir), j->spec->name);
    fail(js, j, now);
    return;
  }
  for (uint32_t c = 0; c < ps->ncand; c++) {
    int rc = ctl_jobs_persist_found(js, j, ps->cand[c].step, ps->cand[c].mark,
                                    ps->cand[c].bytes);
    if (rc != PT_OK) {
      ctl_jobs_reason_set(j, "cannot journal the steps found under '%s': %s",
                          LOG_ESC(dir), pt_strerror(rc));
      fail(js, j, now);
      return;
    }
  }
  const struct ctl_probe_step *newest = &ps->cand[ps->ncand - 1];
  log_notice("job '%s': step %" PRIu64 " is the newest step every rank's "
             "file under '%s/%s' holds, of one flush (%" PRIu32 " step%s in "
             "common)", j->spec->name, newest->step, LOG_ESC(dir),
             j->spec->name, ps->ncand, ps->ncand == 1 ? "" : "s");
  ps->probing = false;
  char why[CTL_REASON_MAX];
  snprintf(why, sizeof(why), "a cold start from '%s/%s' (--resume-from)",
           LOG_ESC(dir), j->spec->name);
  (void)ctl_jobs_persist_fallback(j, why);
  int rc = ctl_jobs_begin_epoch(js, j, false, 0, now);
  if (rc != PT_OK) {
    ctl_jobs_reason_set(j, "cannot journal its first epoch: %s",
                        pt_strerror(rc));
    fail(js, j, now);
  }
}

int ctl_jobs_probe_reply(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                         uint64_t epoch, const Pt__DiskProbeReply *m,
                         uint64_t now)
{
  struct ctl_persist *ps = &j->persist;
  if (!ps->probing || epoch != j->epoch)
    return PT_EEPOCH;
  if (ps->probed[p])
    return PT_OK; /* an answer again (a probe sent twice) */
  struct ctl_part *pt = &j->parts[p];
  pt->deadline = 0;
  if (m->status != PT_OK) {
    ctl_jobs_reason_set(j, "--resume-from: node '%s' cannot read '%s/%s': "
                        "%s", pt->node_id, LOG_ESC(j->spec->resume_from),
                        j->spec->name,
                        m->message != NULL && m->message[0] != '\0'
                            ? LOG_ESC(m->message)
                            : pt_strerror(m->status));
    fail(js, j, now);
    return PT_OK;
  }
  ps->probed[p] = true;
  ps->nprobed++;
  if (m->has_other_world && m->other_world != 0 &&
      (ps->other_world == 0 || m->other_world_step > ps->other_step)) {
    ps->other_world = m->other_world;
    ps->other_step = m->has_other_world_step ? m->other_world_step : 0;
  }
  bool had = ps->has_cand && ps->ncand > 0;
  intersect(ps, m);
  if (had && ps->ncand == 0 && ps->emptied_by == 0)
    ps->emptied_by = p + 1;
  log_info("job '%s': node '%s' holds %zu usable step%s of its ranks under "
           "'%s/%s' (%" PRIu32 " of %" PRIu32 " nodes answered, %" PRIu32
           " step%s in common)", j->spec->name, pt->node_id, m->n_steps,
           m->n_steps == 1 ? "" : "s", LOG_ESC(j->spec->resume_from),
           j->spec->name, ps->nprobed, j->nparts, ps->ncand,
           ps->ncand == 1 ? "" : "s");
  if (ps->nprobed == j->nparts)
    probed_all(js, j, now);
  return PT_OK;
}

bool ctl_jobs_probe_tick(struct ctl_jobs *js, struct ctl_job *j, uint64_t now)
{
  if (!j->persist.probing)
    return false;
  for (uint32_t p = 0; p < j->nparts; p++) {
    struct ctl_part *pt = &j->parts[p];
    if (pt->deadline == 0 || now < pt->deadline)
      continue;
    ctl_jobs_reason_set(j, "--resume-from: node '%s' did not say within %u "
                        "ms what '%s/%s' holds", pt->node_id, CTL_PROBE_MS,
                        LOG_ESC(j->spec->resume_from), j->spec->name);
    fail(js, j, now);
    return true;
  }
  return true;
}
