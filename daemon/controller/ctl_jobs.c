/*
 * ctl_jobs.c — the controller's jobs, as a pure state machine (see the
 * jobs section of controller.h): no sockets, no clock, every effect through
 * struct ctl_jobs_ops.
 *
 * Rules kept here:
 *   - a decision is journaled (ops->journal, durable on return) before any
 *     node hears of it: JOB + EPOCH before the first JOB_ASSIGN, EPOCH
 *     before a restart's JOB_ASSIGNs, COMMIT before any JOB_COMMIT, END
 *     before the halts of a job's end;
 *   - one commit module per job, one voter per part: a round for the
 *     newest step every part sealed in the current epoch; a part whose node
 *     goes down is a voter gone;
 *   - a failed part the node says is permanent (a trainer's exit 78,
 *     PT_EBUDGET, a trainer command that cannot run) fails the job with
 *     the node's words, not restarted;
 *   - a failed part (a trainer or an SMP on its node, or no answer to its
 *     assignment within CTL_ASSIGN_MS) restarts the whole job in a new
 *     epoch, from the newest committed step, within max_restarts in
 *     restart_window_ms and after a backoff doubling from backoff_ms up to
 *     CTL_BACKOFF_CAP_MS (started over after CTL_HEALTHY_MS running with a
 *     commit), as standalone ptd node does;
 *   - a node of a coded job declared dead gives its place to a spare, in
 *     a new epoch (ctl_jobs_spare.c), unless its group lost more than the
 *     code tolerates (the job fails); with no spare, or no code, a node
 *     declared dead halts the job's other parts; the job waits
 *     node_wait_ms for it (then fails, naming it); the node back in time
 *     restarts the job in a new epoch;
 *   - an ended job whose snapshots are kept (failed, stopped --keep) is
 *     live again only by ptctl restore (ctl_jobs_revive.c).
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
#include "snapshot/snap_store.h"

const char *ctl_jobs_state_name(enum ctl_job_state s)
{
  switch (s) {
  case CTL_JOB_STARTING:
    return "starting";
  case CTL_JOB_RUNNING:
    return "running";
  case CTL_JOB_RESTARTING:
    return "restarting";
  case CTL_JOB_WAITING:
    return "waiting";
  case CTL_JOB_STOPPING:
    return "stopping";
  case CTL_JOB_DONE:
    return "done";
  case CTL_JOB_FAILED:
    return "failed";
  case CTL_JOB_STOPPED:
    return "stopped";
  }
  return "unknown";
}

enum ctl_job_state ctl_jobs_state_parse(const char *name)
{
  for (int s = CTL_JOB_STARTING; s <= CTL_JOB_STOPPED; s++)
    if (strcmp(name, ctl_jobs_state_name(s)) == 0)
      return s;
  return 0;
}

const char *ctl_jobs_part_state_name(enum ctl_part_state s)
{
  switch (s) {
  case CTL_PART_ASSIGNED:
    return "assigned";
  case CTL_PART_RUNNING:
    return "running";
  case CTL_PART_STOPPED:
    return "stopped";
  case CTL_PART_FAILED:
    return "failed";
  case CTL_PART_DONE:
    return "done";
  }
  return "unknown";
}

bool ctl_jobs_ended(enum ctl_job_state s)
{
  return s == CTL_JOB_DONE || s == CTL_JOB_FAILED || s == CTL_JOB_STOPPED;
}

/* The job has nodes and may send (stopping still halts). */
static bool live(const struct ctl_job *j)
{
  return !ctl_jobs_ended(j->state);
}

void ctl_jobs_init(struct ctl_jobs *js, struct ctl_members *m,
                   const struct ctl_jobs_ops *ops, void *ctx)
{
  memset(js, 0, sizeof(*js));
  js->m = m;
  js->ops = ops;
  js->ctx = ctx;
}

static void job_free(struct ctl_job *j)
{
  if (j == NULL)
    return;
  commit_release(&j->commit);
  ctl_groups_release(&j->groups);
  if (j->spec != NULL)
    protobuf_c_message_free_unpacked(&j->spec->base, NULL);
  for (uint32_t p = 0; j->parts != NULL && p < j->nparts; p++)
    free(j->parts[p].peer_ports);
  free(j->parts);
  free(j->restart_log);
  free(j->persist.ok);
  free(j->persist.probed);
  free(j);
}

void ctl_jobs_release(struct ctl_jobs *js)
{
  struct ctl_job *j = js->jobs;
  while (j != NULL) {
    struct ctl_job *next = j->next;
    job_free(j);
    j = next;
  }
  js->jobs = NULL;
  js->nlive = js->nended = 0;
}

/* The live job of that name, else the newest ended one. */
struct ctl_job *ctl_jobs_find(struct ctl_jobs *js, const char *name)
{
  struct ctl_job *ended = NULL;
  for (struct ctl_job *j = js->jobs; j != NULL; j = j->next) {
    if (strcmp(j->spec->name, name) != 0)
      continue;
    if (live(j))
      return j;
    if (ended == NULL)
      ended = j;
  }
  return ended;
}

struct ctl_job *ctl_jobs_find_live(struct ctl_jobs *js, const char *name)
{
  struct ctl_job *j = ctl_jobs_find(js, name);
  return j != NULL && live(j) ? j : NULL;
}

void ctl_jobs_reason_set(struct ctl_job *j, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(j->reason, sizeof(j->reason), fmt, ap);
  va_end(ap);
}

uint32_t ctl_jobs_first_rank(const struct ctl_job *j, uint32_t part)
{
  return part * j->spec->ranks_per_node;
}

uint32_t ctl_jobs_world_size(const struct ctl_job *j)
{
  return j->spec->nodes * j->spec->ranks_per_node;
}

/* ---- nodes of a job ---- */

struct ctl_node *ctl_jobs_part_node(struct ctl_jobs *js, const struct ctl_job *j,
                                  uint32_t p)
{
  size_t i = j->parts[p].node;
  return i < js->m->n ? &js->m->nodes[i] : NULL;
}

/* Its node has a connection (alive, or unreachable but still connected:
 * a slow node is still told; one that does not answer runs into the
 * deadline of what it was asked). */
bool ctl_jobs_part_connected(struct ctl_jobs *js, const struct ctl_job *j,
                           uint32_t p)
{
  struct ctl_node *n = ctl_jobs_part_node(js, j, p);
  return n != NULL && n->conn != NULL && n->state != CTL_NODE_DEAD;
}

void ctl_jobs_bind_node(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                      size_t node)
{
  struct ctl_node *n = &js->m->nodes[node];
  j->parts[p].node = node;
  n->jobp = j;
  n->part = p;
  snprintf(n->job, sizeof(n->job), "%s", j->spec->name);
}

static void unbind_all(struct ctl_jobs *js, struct ctl_job *j)
{
  for (uint32_t p = 0; p < j->nparts; p++) {
    struct ctl_node *n = ctl_jobs_part_node(js, j, p);
    if (n != NULL && n->jobp == j) {
      n->jobp = NULL;
      n->job[0] = '\0';
    }
  }
}

/* ---- the table ---- */

/* Drops the jobs that ended first beyond CTL_ENDED_KEEP, never keep (the
 * one that just ended, which its callers still hold). */
void ctl_jobs_trim_ended(struct ctl_jobs *js, const struct ctl_job *keep)
{
  while (js->nended > CTL_ENDED_KEEP) {
    struct ctl_job **victim = NULL;
    for (struct ctl_job **pp = &js->jobs; *pp != NULL; pp = &(*pp)->next)
      if (ctl_jobs_ended((*pp)->state) && *pp != keep &&
          (victim == NULL || (*pp)->ended_ms <= (*victim)->ended_ms))
        victim = pp; /* ties: the one created first (last in the list) */
    if (victim == NULL)
      return;
    struct ctl_job *v = *victim;
    *victim = v->next;
    job_free(v);
    js->nended--;
  }
}

Pt__JobSpec *ctl_jobs_spec_copy(const Pt__JobSpec *s)
{
  size_t len = protobuf_c_message_get_packed_size(&s->base);
  uint8_t *buf = malloc(len > 0 ? len : 1);
  if (buf == NULL)
    return NULL;
  protobuf_c_message_pack(&s->base, buf);
  Pt__JobSpec *c = pt__job_spec__unpack(NULL, len, buf);
  free(buf);
  return c;
}

/* A new job in the table, its parts on node_ids (unbound). */
int ctl_jobs_job_new(struct ctl_jobs *js, const Pt__JobSpec *spec,
                   struct ctl_job **out)
{
  struct ctl_job *j = calloc(1, sizeof(*j));
  if (j == NULL)
    return -ENOMEM;
  j->js = js;
  j->spec = ctl_jobs_spec_copy(spec);
  j->parts = calloc(spec->nodes, sizeof(*j->parts));
  j->nparts = spec->nodes;
  uint32_t nlog = spec->max_restarts > 0 ? spec->max_restarts : 1;
  if (nlog > 4096)
    nlog = 4096;
  j->restart_log = calloc(nlog, sizeof(*j->restart_log));
  j->nlog = nlog;
  j->persist.ok = calloc(spec->nodes, sizeof(*j->persist.ok));
  j->persist.probed = calloc(spec->nodes, sizeof(*j->persist.probed));
  int rc = j->spec == NULL || j->parts == NULL || j->restart_log == NULL ||
                   j->persist.ok == NULL || j->persist.probed == NULL
               ? -ENOMEM
               : commit_init(&j->commit, j->nparts, CTL_ROUND_MS,
                             &ctl_jobs_commit_ops, j);
  if (rc != PT_OK) {
    job_free(j);
    return rc;
  }
  for (uint32_t p = 0; p < j->nparts; p++)
    j->parts[p].node = SIZE_MAX;
  j->seal_min_stale = true;
  j->state = CTL_JOB_STARTING;
  /* An ended job of the same name gives way. */
  for (struct ctl_job **pp = &js->jobs; *pp != NULL;) {
    if (ctl_jobs_ended((*pp)->state) && strcmp((*pp)->spec->name,
                                               spec->name) == 0) {
      struct ctl_job *old = *pp;
      *pp = old->next;
      job_free(old);
      js->nended--;
    } else {
      pp = &(*pp)->next;
    }
  }
  j->next = js->jobs;
  js->jobs = j;
  js->nlive++;
  *out = j;
  return PT_OK;
}

static void job_unlink_free(struct ctl_jobs *js, struct ctl_job *j)
{
  for (struct ctl_job **pp = &js->jobs; *pp != NULL; pp = &(*pp)->next)
    if (*pp == j) {
      *pp = j->next;
      break;
    }
  if (live(j))
    js->nlive--;
  else
    js->nended--;
  job_free(j);
}

/* Sends part its assignment of the current epoch, when its node is
 * connected; else it gets it when it registers again. */
void ctl_jobs_assign_part(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                        uint64_t now)
{
  struct ctl_part *pt = &j->parts[p];
  if (!ctl_jobs_part_connected(js, j, p))
    return;
  if (j->persist.probing) {
    ctl_jobs_probe_send(js, j, p, now); /* no epoch before its answer */
    return;
  }
  if (js->ops->assign(js->ctx, j, p) == PT_OK) {
    pt->sent = true;
    if (pt->state == CTL_PART_ASSIGNED)
      pt->deadline = now + CTL_ASSIGN_MS;
  }
}

void ctl_jobs_halt_all(struct ctl_jobs *js, struct ctl_job *j, bool remove,
                     uint64_t now, bool except_down)
{
  for (uint32_t p = 0; p < j->nparts; p++) {
    if (!ctl_jobs_part_connected(js, j, p)) {
      if (!except_down)
        j->parts[p].state = CTL_PART_STOPPED;
      continue;
    }
    if (js->ops->halt(js->ctx, j, p, remove) == PT_OK)
      j->parts[p].deadline = now + CTL_ASSIGN_MS;
  }
}

/* The epoch after the current one begins (journaled first), from the
 * committed step. */
int ctl_jobs_begin_epoch(struct ctl_jobs *js, struct ctl_job *j, bool has_from,
                       uint64_t from, uint64_t now)
{
  uint64_t was_epoch = j->epoch;
  bool was_has = j->has_restore;
  uint64_t was_step = j->restore_step;
  bool was_disk = j->restore_disk;
  uint64_t was_mark = j->restore_mark;

  /* A cold start still asking its nodes what they hold (a spare took a
   * place, a node came back): asked again, every part. */
  if (j->persist.probing) {
    ctl_jobs_probe_begin(js, j, now);
    return PT_OK;
  }
  /* Memory could not serve it: the step chosen on disk. */
  ctl_jobs_persist_epoch(j, &has_from, &from);
  j->epoch++;
  j->has_restore = has_from;
  j->restore_step = has_from ? from : 0;
  /* The master is node index 0's address as it is now. */
  struct ctl_node *n0 = ctl_jobs_part_node(js, j, 0);
  if (n0 != NULL && n0->advertise[0] != '\0')
    snprintf(j->master_addr, sizeof(j->master_addr), "%s", n0->advertise);
  int rc = js->ops->journal(js->ctx, j, CTL_REC_EPOCH);
  if (rc != PT_OK) {
    j->epoch = was_epoch;
    j->has_restore = was_has;
    j->restore_step = was_step;
    j->restore_disk = was_disk;
    j->restore_mark = was_mark;
    return rc;
  }
  if (j->restore_disk)
    log_notice("job '%s' epoch %" PRIu64 ": restoring step %" PRIu64 " from "
               "disk ('%s/%s', flush %" PRIu64 ")", j->spec->name, j->epoch,
               from, LOG_ESC(j->spec->persist_dir), j->spec->name,
               j->restore_mark);
  /* A restore to an older step takes the job back to it: the steps after
   * are done again, and committed again (the disk's too: of a history
   * the job left, so that a step on disk is never newer than the
   * committed one). */
  if (has_from && j->has_committed && from < j->committed)
    j->committed = from;
  if (has_from)
    ctl_jobs_persist_rollback(j, from);
  commit_reset(&j->commit, j->has_committed, j->committed);
  j->state = CTL_JOB_STARTING;
  j->due_ms = 0;
  j->running_since = 0;
  j->committed_since = false;
  for (uint32_t p = 0; p < j->nparts; p++) {
    struct ctl_part *pt = &j->parts[p];
    pt->state = CTL_PART_ASSIGNED;
    pt->sent = false;
    pt->deadline = 0;
    pt->has_sealed = false;
    pt->last_sealed = 0;
    pt->has_pinned = false;
  }
  j->seal_min_stale = true;
  if (has_from)
    log_notice("job '%s' epoch %" PRIu64 ": every part restores step %"
               PRIu64, j->spec->name, j->epoch, from);
  else
    log_notice("job '%s' epoch %" PRIu64 ": every part starts fresh",
               j->spec->name, j->epoch);
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_assign_part(js, j, p, now);
  return PT_OK;
}

/* The job ends in st (END journaled first), its parts halted, its nodes
 * freed. */
void ctl_jobs_end_job(struct ctl_jobs *js, struct ctl_job *j,
                    enum ctl_job_state st, uint64_t now)
{
  enum ctl_job_state was = j->state;

  j->state = st;
  /* A completed job's snapshots are of no more use, nor a stopped one's
   * (nothing resumes it); a failed job's are kept for whoever looks into
   * it (and, later, for the persistent tier). */
  j->removed = st == CTL_JOB_DONE || (st == CTL_JOB_STOPPED && !j->stop_keep);
  if (js->ops->journal(js->ctx, j, CTL_REC_END) != PT_OK) {
    j->state = was;
    j->removed = false;
    return;
  }
  commit_cancel(&j->commit);
  log_notice("job '%s' epoch %" PRIu64 " %s%s%s", j->spec->name, j->epoch,
             ctl_jobs_state_name(st), j->reason[0] != '\0' ? ": " : "",
             j->reason);
  ctl_jobs_halt_all(js, j, j->removed, now, false);
  if (j->removed)
    for (uint32_t p = 0; p < j->nparts; p++)
      j->parts[p].bytes_held = 0; /* the nodes remove them */
  unbind_all(js, j);
  for (uint32_t p = 0; p < j->nparts; p++)
    j->parts[p].deadline = 0;
  j->due_ms = 0;
  j->recovering = false;
  j->ended_ms = now;
  js->nlive--;
  js->nended++;
  ctl_jobs_trim_ended(js, j);
}

static uint32_t restarts_recent(const struct ctl_job *j, uint64_t now)
{
  uint32_t win = j->spec->restart_window_ms, n = 0;
  for (uint32_t i = 0; i < j->nlog; i++)
    if (j->restart_log[i] != 0 &&
        (win == 0 || j->restart_log[i] + win > now))
      n++;
  return n;
}

/* A failure: every part halted; the next epoch after the backoff, or the
 * job fails when no restarts are left. */
void ctl_jobs_restart_counted(struct ctl_jobs *js, struct ctl_job *j,
                            uint64_t now, const char *why)
{
  const Pt__JobSpec *s = j->spec;
  uint32_t recent = restarts_recent(j, now);

  commit_cancel(&j->commit);
  if (recent >= s->max_restarts) {
    if (s->restart_window_ms != 0)
      ctl_jobs_reason_set(j, "%s; no restarts left (%" PRIu32 " in the last %" PRIu32
                 " s, max_restarts %" PRIu32 ")", why, recent,
                 s->restart_window_ms / 1000u, s->max_restarts);
    else
      ctl_jobs_reason_set(j, "%s; no restarts left (max_restarts %" PRIu32 ")", why,
                 s->max_restarts);
    ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
    return;
  }
  if (j->backoff_attempt > 0 && j->committed_since && j->running_since != 0 &&
      now >= j->running_since + CTL_HEALTHY_MS) {
    log_info("job '%s' ran healthy since its last restart: backoff starts "
             "again from %" PRIu32 " ms", s->name, s->backoff_ms);
    j->backoff_attempt = 0;
  }
  j->restart_log[j->log_pos] = now > 0 ? now : 1;
  j->log_pos = (j->log_pos + 1) % j->nlog;
  j->backoff_attempt++;
  uint64_t d = s->backoff_ms;
  for (uint32_t i = 1; i < j->backoff_attempt && d < CTL_BACKOFF_CAP_MS; i++)
    d *= 2;
  if (d > CTL_BACKOFF_CAP_MS)
    d = CTL_BACKOFF_CAP_MS;
  ctl_jobs_reason_set(j, "%s", why);
  log_notice("job '%s' epoch %" PRIu64 ": %s; restarting every part (restart "
             "%" PRIu32 ", %" PRIu32 " of at most %" PRIu32 ") in %" PRIu64
             " ms", s->name, j->epoch, why, j->restarts + 1, recent + 1,
             s->max_restarts, d);
  j->restarts++;
  j->state = CTL_JOB_RESTARTING;
  j->due_ms = now + d;
  ctl_jobs_halt_all(js, j, false, now, true);
}

int ctl_jobs_start(struct ctl_jobs *js, const Pt__JobSpec *spec_in,
                   uint64_t now, struct ctl_job **out, char *err,
                   size_t errlen)
{
  Pt__JobSpec *spec = ctl_jobs_spec_copy(spec_in);
  size_t *idx = NULL;
  struct ctl_job *j = NULL;
  int rc;

  if (spec == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  rc = ctl_spec_check(js, spec, err, errlen);
  if (rc != PT_OK)
    goto out;
  if (ctl_jobs_find_live(js, spec->name) != NULL) {
    snprintf(err, errlen, "job '%s' exists (stop it first, or pick another "
             "name)", spec->name);
    rc = -EEXIST;
    goto out;
  }
  uint32_t port = ctl_spec_pick_port(js, spec->has_master_port ?
                                     spec->master_port : 0);
  if (port == 0) {
    snprintf(err, errlen, "no free master port in %u..%u: give one",
             CTL_MASTER_PORT_BASE, CTL_MASTER_PORT_BASE +
             CTL_MASTER_PORT_SPAN - 1);
    rc = -EADDRINUSE;
    goto out;
  }
  idx = calloc(spec->nodes, sizeof(*idx));
  if (idx == NULL) {
    rc = -ENOMEM;
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  rc = ctl_spec_place(js, spec, idx, err, errlen);
  if (rc != PT_OK)
    goto out;
  /* A port given in the spec: not one a live job's master on the same
   * node listens on. */
  for (const struct ctl_job *o = js->jobs; o != NULL; o = o->next)
    if (live(o) && o->master_port == port &&
        strcmp(o->master_addr, js->m->nodes[idx[0]].advertise) == 0) {
      snprintf(err, errlen, "master port %" PRIu32 " on %s is job '%s''s: "
               "give another, or 0 for one the controller picks", port,
               o->master_addr, o->spec->name);
      rc = -EADDRINUSE;
      goto out;
    }
  /* Above every epoch an ended job of this name had (job_new drops it):
   * nothing of it on a node, nor a late report, is taken for the new's. */
  uint64_t floor = 0;
  for (const struct ctl_job *o = js->jobs; o != NULL; o = o->next)
    if (strcmp(o->spec->name, spec->name) == 0 && o->epoch > floor)
      floor = o->epoch;
  rc = ctl_jobs_job_new(js, spec, &j);
  if (rc != PT_OK) {
    snprintf(err, errlen, "out of memory");
    goto out;
  }
  j->epoch = floor; /* ctl_jobs_begin_epoch takes the next */
  j->first_epoch = floor + 1;
  j->master_port = port;
  for (uint32_t p = 0; p < j->nparts; p++)
    snprintf(j->parts[p].node_id, sizeof(j->parts[p].node_id), "%s",
             js->m->nodes[idx[p]].id);
  rc = ctl_spec_groups(js, j, idx, err, errlen);
  if (rc != PT_OK) {
    job_unlink_free(js, j);
    goto out;
  }
  snprintf(j->master_addr, sizeof(j->master_addr), "%s",
           js->m->nodes[idx[0]].advertise);
  rc = js->ops->journal(js->ctx, j, CTL_REC_JOB);
  if (rc != PT_OK) {
    snprintf(err, errlen, "cannot journal the job: %s", pt_strerror(rc));
    job_unlink_free(js, j);
    goto out;
  }
  for (uint32_t p = 0; p < j->nparts; p++)
    ctl_jobs_bind_node(js, j, p, idx[p]);
  /* A cold start asks every node what it holds first (ctl_jobs_probe.c);
   * its first epoch begins on their answers. */
  if (spec->resume_from != NULL && spec->resume_from[0] != '\0')
    j->persist.probing = true;
  rc = ctl_jobs_begin_epoch(js, j, false, 0, now);
  if (rc != PT_OK) {
    /* JOB is journaled: end it so that a replay does not resurrect it. */
    ctl_jobs_reason_set(j, "cannot journal its first epoch: %s", pt_strerror(rc));
    snprintf(err, errlen, "%s", j->reason);
    ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
    goto out;
  }
  char code[64] = "no code";
  if (j->groups.n > 0)
    snprintf(code, sizeof(code), "code %" PRIu32 "+%" PRIu32 " in %" PRIu32
             " node group%s", j->spec->code_k, j->spec->code_m, j->groups.n,
             j->groups.n == 1 ? "" : "s");
  log_notice("job '%s' started on %" PRIu32 " nodes x %" PRIu32
             " ranks, master %s:%" PRIu32 ", %s", j->spec->name, j->nparts,
             j->spec->ranks_per_node, j->master_addr, j->master_port, code);
  *out = j;
out:
  free(idx);
  protobuf_c_message_free_unpacked(&spec->base, NULL);
  return rc;
}

int ctl_jobs_stop(struct ctl_jobs *js, const char *name, bool keep,
                  uint64_t now, char *err, size_t errlen)
{
  struct ctl_job *j = ctl_jobs_find(js, name);
  if (j == NULL) {
    snprintf(err, errlen, "no job '%s'", LOG_ESC(name));
    return -ENOENT;
  }
  if (!live(j) || j->state == CTL_JOB_STOPPING) {
    snprintf(err, errlen, "job '%s' already %s", j->spec->name,
             ctl_jobs_state_name(j->state));
    return -EALREADY;
  }
  ctl_jobs_reason_set(j, "stopped by ptctl%s",
                      keep ? "; its snapshots are kept" : "");
  j->stop_keep = keep;
  ctl_jobs_end_job(js, j, CTL_JOB_STOPPED, now);
  if (live(j)) {
    snprintf(err, errlen, "cannot journal the end of job '%s'", name);
    return -EIO;
  }
  return PT_OK;
}

int ctl_jobs_restore(struct ctl_jobs *js, const char *name, bool has_step,
                     uint64_t step, uint64_t now, bool *has_restored,
                     uint64_t *restored, char *err, size_t errlen)
{
  struct ctl_job *j = ctl_jobs_find(js, name);
  bool has;
  uint64_t from;

  if (j == NULL) {
    snprintf(err, errlen, "no job '%s'", LOG_ESC(name));
    return -ENOENT;
  }
  if (j->state == CTL_JOB_STOPPING) {
    snprintf(err, errlen, "job '%s' is stopping", j->spec->name);
    return -EALREADY;
  }
  if (j->state == CTL_JOB_WAITING) {
    snprintf(err, errlen, "job '%s' waits for a dead node (%s)",
             j->spec->name, j->reason);
    return -EAGAIN;
  }
  if (j->persist.probing) {
    snprintf(err, errlen, "job '%s' is still asking its nodes which steps "
             "'%s/%s' holds (a cold start)", j->spec->name,
             LOG_ESC(j->spec->resume_from), j->spec->name);
    return -EAGAIN;
  }
  if (j->spec->resume_from != NULL && j->spec->resume_from[0] != '\0' &&
      j->epoch < j->first_epoch) {
    snprintf(err, errlen, "job '%s' never began: its cold start from '%s' "
             "failed (%s); start it again with ptctl start --resume-from",
             j->spec->name, LOG_ESC(j->spec->resume_from), j->reason);
    return -EINVAL;
  }
  if (!live(j)) /* failed, or stopped --keep: revived (ctl_jobs_revive.c) */
    return ctl_jobs_revive_job(js, j, has_step, step, now, has_restored,
                               restored, err, errlen);
  int rc = ctl_jobs_revive_pick_step(j, has_step, step, &has, &from, err,
                                     errlen);
  if (rc != PT_OK)
    return rc;
  commit_cancel(&j->commit);
  ctl_jobs_halt_all(js, j, false, now, true);
  j->restarts++;
  ctl_jobs_reason_set(j, "restore asked by ptctl");
  ctl_jobs_persist_operator(j);
  rc = ctl_jobs_begin_epoch(js, j, has, from, now);
  if (rc != PT_OK) {
    snprintf(err, errlen, "cannot journal the new epoch: %s",
             pt_strerror(rc));
    return rc;
  }
  *has_restored = has;
  *restored = from;
  return PT_OK;
}
