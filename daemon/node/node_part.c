/*
 * node_part.c — `ptd node` in cluster mode: the job part the controller
 * gives it (JOB_ASSIGN), its end (JOB_HALT, a failure), the epoch fence,
 * and what the node tells the controller about it (JOB_PART_STATE).
 *
 * A cluster-mode node has no ranks until assigned. JOB_ASSIGN{spec, epoch,
 * node_index, first_rank, world_size, master} makes its part: spec's
 * ranks_per_node ranks, slots, memory budget and trainer command, the job
 * name for its shm objects and sockets, and per rank the torchrun
 * environment (node_plan_rank_env). The assignment is recorded in
 * <state-dir>/part.state (atomically, common/state_file.h) before anything
 * is spawned; then the standalone machinery runs the part (an SMP per
 * rank, supervision, the liveness probe, budget checks), with the remote
 * decider (node_decide_remote.c): the restore point is the assignment's.
 *
 * In cluster mode the node does not restart failed ranks: a trainer that
 * fails, an SMP that dies or a refused start stops the part's ranks and
 * the node reports the part failed; the controller decides the next epoch.
 *
 * The epoch fence (node_plan_fence): a JOB_ASSIGN or any decision naming a
 * newer epoch of the job stops the old epoch's ranks first (SIGTERM, then
 * SIGKILL after the grace), and only then is the new assignment taken;
 * a new job that reuses an ended job's name starts above every epoch the
 * name had (JobAssign.first_epoch), so the fence tells them apart too,
 * and a part recorded below first_epoch is the older job's (a new job
 * instance, its objects discarded);
 * anything naming an older epoch is ignored (JOB_PIN: PT_EEPOCH). A
 * JOB_ASSIGN of the epoch the node runs (a reconnect) changes nothing: it
 * is answered with where the part stands, and its committed_step teaches
 * the node a commit it missed.
 *
 * JOB_PART_STATE goes to the controller on every change of the part
 * ("starting", "running", then "stopped", "failed" or "done" once its ranks
 * are all gone) and after every registration, with the bytes held, the
 * newest step every rank sealed and the steps every rank holds verified.
 *
 * The node's own restart: part.state records the part as running, so a
 * node started again takes it up and re-adopts its SMPs and trainers
 * (node_ident_part); it re-registers (a new incarnation) and reports the
 * part running.
 *
 * part.state: "PTPART01", u32 version (2), u32 state (0 running, 1
 * stopped, 2 failed, 3 done), 16 bytes of job instance, u32 length, u32
 * CRC32C of everything before it, then the JobAssign as protobuf (length
 * bytes), then the failure: u32 flags (1: permanent, no restart cures it),
 * s32 status, u32 message length, the message, u32 CRC32C of the failure's
 * fields and message. Version 1 (no failure) is still read. A permanent
 * failure is recorded as soon as it is decided, while the part's ranks
 * stop (state still running): a node restarted meanwhile takes the part
 * up and ends it failed permanently, and one restarted after it ended
 * reports it so; neither turns it into a failure the controller retries.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_part_int.h"
#include "daemon/node/node_persist.h"

/* ---- a part's life ---- */

/* Stops the active part's ranks (the end of node_job.c follows, then
 * node_part_ended). */
static void stop_ranks(struct node *n, enum node_outcome out,
                       const char *why)
{
  log_info("job '%s': stopping the ranks of epoch %" PRIu64 " (%s)",
           n->cfg.job, node_part_of(n)->epoch, why);
  node_life_finish(n, out, "%s", why);
  node_job_drive(n);
}

/* Unlinks the shm objects of the recorded part's ranks (of its
 * instance). */
static void remove_objects(struct node *n)
{
  struct node_part *p = node_part_of(n);
  Pt__JobAssign *a = pt__job_assign__unpack(NULL, p->len, p->buf);

  if (a == NULL)
    return;
  node_job_shm_remove(n, p->job, a->first_rank, a->spec->ranks_per_node,
                      p->instance, LOG_LVL_INFO);
  pt__job_assign__free_unpacked(a, NULL);
}

/* The recorded part is no more (its job ended and its snapshots are
 * removed, or a new job takes its name): the node is a spare. */
static void forget(struct node *n)
{
  struct node_part *p = node_part_of(n);

  p->has = false;
  p->job[0] = '\0';
  p->epoch = 0;
  p->reported = NULL;
  node_peers_forget(n); /* the group's addresses were that part's */
  if (unlink(p->path) != 0 && errno != ENOENT)
    log_warn("cannot remove '%s': %s", p->path, strerror(errno));
}

void node_part_failing(struct node *n)
{
  struct node_part *p = node_part_of(n);

  if (p == NULL || !p->active || p->fail_permanent)
    return;
  snprintf(p->fail_msg, sizeof(p->fail_msg), "node '%.40s': %.240s",
           n->cfg.node_id, n->why);
  p->fail_status = PT_ECONFIG;
  p->fail_permanent = true;
  p->fail_disk = false;
  if (node_part_record_write(p) == PT_OK)
    log_notice("part failing permanently, recorded in '%s': %s", p->path,
               n->why);
}

void node_part_ended(struct node *n)
{
  struct node_part *p = node_part_of(n);

  if (p == NULL || !p->active)
    return;
  node_ranks_abandon(n);
  n->decider->close(n);
  p->end = n->outcome == NODE_OUT_DONE     ? PART_DONE
           : n->outcome == NODE_OUT_FAILED ? PART_FAILED
                                           : PART_STOPPED;
  if (p->end == PART_FAILED && !p->fail_permanent) {
    snprintf(p->fail_msg, sizeof(p->fail_msg), "node '%.40s': %.240s",
             n->cfg.node_id, n->why);
    p->fail_status = n->permanent       ? PT_ECONFIG
                     : n->why_status != 0 ? n->why_status
                                          : -EIO;
    p->fail_permanent = n->permanent;
    p->fail_disk = n->restore_disk_failed;
    /* Its restore step is damaged: what its ranks hold intact (their
     * views are fresh from this epoch's verification), for the
     * controller's next restore. */
    p->n_end_held = n->why_status == PT_ECHECKSUM
                        ? node_part_report_held(n, p->end_held, SNAP_MAX_SLOTS)
                        : 0;
  }
  p->active = false;
  free(p->retired);
  p->retired = n->ranks; /* its conns' callbacks may still come */
  n->ranks = NULL;
  n->cfg.ranks = 0;
  uv_timer_stop(&n->timer);
  node_part_record_write(p);
  log_info("job '%s' epoch %" PRIu64 ": part %s", p->job, p->epoch,
           node_part_report_end_name(p->end));
  if (p->halt_pending) {
    p->halt_pending = false;
    if (p->halt_remove)
      remove_objects(n);
    node_part_report_send(n, p->halt_id, node_part_report_end_name(p->end));
    if (p->halt_remove) {
      p->halt_remove = false;
      forget(n);
    }
  } else {
    node_part_report_send(n, 0, node_part_report_end_name(p->end));
  }
  if (p->next_buf != NULL && p->stop_node) {
    /* An assignment that came while the node stops: it is not started;
     * the controller hears the node leave. */
    free(p->next_buf);
    p->next_buf = NULL;
  } else if (p->next_buf != NULL) {
    free(p->buf);
    p->buf = p->next_buf;
    p->len = p->next_len;
    p->next_buf = NULL;
    node_part_start_run(n, p->next_id, false);
  }
  if (p->stop_node) {
    p->stop_node = false;
    node_cluster_stop(n, p->stop_by);
  }
}

/* ---- the controller's decisions ---- */

static enum node_fence fence(const struct node *n, const char *job,
                             uint64_t epoch)
{
  const struct node_part *p = node_part_of(n);

  return node_plan_fence(p->has ? p->job : NULL, p->epoch, job, epoch);
}

static void on_assign(struct node *n, uint64_t id, const Pt__JobAssign *a)
{
  struct node_part *p = node_part_of(n);
  const char *job = a->spec != NULL && a->spec->name != NULL ? a->spec->name
                                                             : "";
  enum node_fence f = fence(n, job, a->epoch);

  /* A job's first epoch is its start: over a part of that name that
   * ended here in a later epoch (stopped or failed, its snapshots kept) it
   * is a new job of the same name, not a stale decision. (The controller
   * starts a new job of a used name above every epoch the name had: this
   * is for one that no longer knows the older job.) */
  bool new_job = f == NODE_FENCE_OLDER && a->epoch == node_part_start_first_epoch(a) &&
                 !p->active;
  if (new_job)
    f = NODE_FENCE_NONE;
  switch (f) {
  case NODE_FENCE_OLDER:
    log_info("job '%s': ignoring the assignment of epoch %" PRIu64
             " (the part runs epoch %" PRIu64 ")", job, a->epoch, p->epoch);
    return;
  case NODE_FENCE_SAME:
    /* A reconnect: where the part stands; a commit it missed. */
    if (p->active && a->has_committed_step)
      node_decide_remote_commit(n, a->committed_step);
    if (p->active)
      node_job_drive(n);
    {
      const char *s = node_part_report_state_now(n);
      node_part_report_send(n, id, s != NULL ? s : "running");
    }
    return;
  case NODE_FENCE_OTHER_JOB:
    if (p->active) {
      char why[160];
      snprintf(why, sizeof(why), "this node runs a part of job '%s'", p->job);
      node_part_report_refusal(n, id, job, a->epoch, -EBUSY, why);
      return;
    }
    break;
  case NODE_FENCE_NONE:
  case NODE_FENCE_NEWER:
    break;
  }
  char err[300];
  struct code_group grp;
  int rc = node_plan_assign_check(a, n->cfg.capacity, err, sizeof(err));
  if (rc == PT_OK)
    rc = node_plan_group(a, n->cfg.node_id, &grp, err, sizeof(err));
  if (rc != PT_OK) {
    node_part_report_refusal(n, id, job, a->epoch, rc, err); /* nothing changes */
    return;
  }
  /* Before anything of the new epoch runs: no rebuild of it reads this
   * node's parity yet. */
  node_fault_on_assign(n, job, a->epoch, a->has_restore_step, a->restore_step,
                       a->has_restore_from_disk && a->restore_from_disk);
  size_t len = pt__job_assign__get_packed_size(a);
  uint8_t *buf = malloc(len > 0 ? len : 1);
  if (buf == NULL) {
    node_part_report_refusal(n, id, job, a->epoch, -ENOMEM, "out of memory");
    return;
  }
  pt__job_assign__pack(a, buf);
  if (p->active) {
    /* The fence: the old epoch's ranks stop before anything else. */
    free(p->next_buf);
    p->next_buf = buf;
    p->next_len = len;
    p->next_id = id;
    if (n->phase < NODE_PH_STOP_TRAINERS) {
      char why[96];
      snprintf(why, sizeof(why), "epoch %" PRIu64 " superseded by %" PRIu64,
               p->epoch, a->epoch);
      stop_ranks(n, NODE_OUT_STOPPED, why);
    }
    return;
  }
  if (new_job)
    forget(n);
  free(p->buf);
  p->buf = buf;
  p->len = len;
  node_part_start_run(n, id, false);
}

static void on_halt(struct node *n, uint64_t id, const Pt__JobHalt *m)
{
  struct node_part *p = node_part_of(n);
  enum node_fence f = fence(n, m->job, m->epoch);

  if (f == NODE_FENCE_NONE || f == NODE_FENCE_OTHER_JOB) {
    Pt__JobPartState s = PT__JOB_PART_STATE__INIT;
    s.job = m->job;
    s.epoch = m->epoch;
    s.state = "stopped";
    node_cluster_send(n, RPC_JOB_PART_STATE, id, &s.base);
    return;
  }
  if (f == NODE_FENCE_OLDER) {
    log_info("job '%s': ignoring the halt of epoch %" PRIu64 " (the part "
             "runs epoch %" PRIu64 ")", m->job, m->epoch, p->epoch);
    return;
  }
  if (p->next_buf != NULL) { /* an assignment the halt overtakes */
    free(p->next_buf);
    p->next_buf = NULL;
  }
  log_info("job '%s': halt of epoch %" PRIu64 "%s%s%s", m->job, m->epoch,
           m->remove ? ", removing its snapshots" : "",
           m->reason != NULL ? ": " : "", m->reason != NULL ? m->reason : "");
  if (p->active) {
    p->halt_pending = true;
    p->halt_id = id;
    p->halt_remove = p->halt_remove || m->remove;
    if (n->phase < NODE_PH_STOP_TRAINERS)
      stop_ranks(n, NODE_OUT_STOPPED, "halted by the controller");
    return;
  }
  if (p->end == PART_RUNNING)
    p->end = PART_STOPPED;
  if (m->remove)
    remove_objects(n);
  node_part_report_send(n, id, node_part_report_end_name(p->end));
  if (m->remove)
    forget(n);
  else
    node_part_record_write(p);
}

/* JOB_PIN, JOB_COMMIT, JOB_UNPIN: through the fence to the decider. */
static void on_decision(struct node *n, const struct rpc_hdr *h,
                        const ProtobufCMessage *msg, const char *job,
                        uint64_t epoch, uint64_t step)
{
  struct node_part *p = node_part_of(n);
  enum node_fence f = fence(n, job, epoch);

  if (f == NODE_FENCE_NEWER && p->active && n->phase < NODE_PH_STOP_TRAINERS) {
    char why[96];
    snprintf(why, sizeof(why), "the controller runs epoch %" PRIu64, epoch);
    stop_ranks(n, NODE_OUT_STOPPED, why);
  }
  if (f != NODE_FENCE_SAME || !p->active) {
    if (h->type == RPC_JOB_PIN) {
      Pt__JobVote v = PT__JOB_VOTE__INIT;
      v.job = (char *)job;
      v.epoch = epoch;
      v.step = step;
      v.status = f == NODE_FENCE_OLDER || f == NODE_FENCE_NEWER ? PT_EEPOCH
                                                                 : -ENOENT;
      v.message = f == NODE_FENCE_OLDER   ? "an older epoch"
                  : f == NODE_FENCE_NEWER ? "a newer epoch than this part's"
                                          : "no part of this job runs here";
      node_cluster_send(n, RPC_JOB_VOTE, h->request_id, &v.base);
    } else {
      log_debug("job '%s' epoch %" PRIu64 ": %s of step %" PRIu64
                " ignored", job, epoch, rpc_type_name(h->type), step);
    }
    return;
  }
  switch (h->type) {
  case RPC_JOB_PIN:
    node_decide_remote_pin(n, h->request_id, step);
    break;
  case RPC_JOB_COMMIT: {
    const Pt__JobCommit *m = (const Pt__JobCommit *)msg;
    if (m->has_persist && m->persist && m->has_persist_mark)
      node_persist_cluster_mark(n, step, m->persist_mark); /* before */
    node_decide_remote_commit(n, step);
    break;
  }
  default:
    node_decide_remote_unpin(n, step);
    break;
  }
  node_job_drive(n);
}

void node_part_on_msg(struct node *n, const struct rpc_hdr *h,
                      const ProtobufCMessage *msg)
{
  if (node_part_of(n) == NULL || n->cluster == NULL)
    return;
  switch (h->type) {
  case RPC_JOB_ASSIGN:
    on_assign(n, h->request_id, (const Pt__JobAssign *)msg);
    break;
  case RPC_JOB_HALT:
    on_halt(n, h->request_id, (const Pt__JobHalt *)msg);
    break;
  case RPC_JOB_PIN: {
    const Pt__JobPin *m = (const Pt__JobPin *)msg;
    on_decision(n, h, msg, m->job, m->epoch, m->step);
    break;
  }
  case RPC_JOB_COMMIT: {
    const Pt__JobCommit *m = (const Pt__JobCommit *)msg;
    on_decision(n, h, msg, m->job, m->epoch, m->step);
    break;
  }
  case RPC_JOB_UNPIN: {
    const Pt__JobUnpin *m = (const Pt__JobUnpin *)msg;
    on_decision(n, h, msg, m->job, m->epoch, m->step);
    break;
  }
  case RPC_JOB_PERSISTED: {
    /* Any epoch of the part's job: completeness is the flush's. */
    const Pt__JobPersisted *m = (const Pt__JobPersisted *)msg;
    struct node_part *p = node_part_of(n);
    if (p->has && p->active && strcmp(p->job, m->job) == 0)
      node_persist_cluster_complete(n, m->step, m->mark,
                                    m->has_keep_from ? m->keep_from : 0);
    break;
  }
  default:
    break;
  }
}

/* ---- set-up ---- */

int node_part_open(struct node *n)
{
  struct node_part *p = calloc(1, sizeof(*p));
  char err[200] = "";

  if (p == NULL)
    return -ENOMEM;
  p->n = n;
  snprintf(p->path, sizeof(p->path), "%s/part.state", n->cfg.state_dir);
  n->part = p;
  n->phase = NODE_PH_EXIT; /* no part runs */
  int rc = node_part_record_read(p, err, sizeof(err));
  if (rc == -ENOENT)
    return PT_OK;
  if (rc != PT_OK) {
    log_error("'%s': %s", p->path, err[0] != '\0' ? err : pt_strerror(rc));
    return rc;
  }
  if (p->end != PART_RUNNING) {
    log_info("'%s': job '%s' epoch %" PRIu64 " ended here (%s)", p->path,
             p->job, p->epoch, node_part_report_end_name(p->end));
    return PT_OK;
  }
  log_notice("job '%s' epoch %" PRIu64 ": the part was running when this "
             "node ended; taking it up again%s%s",
             p->job, p->epoch,
             p->fail_permanent ? ", to end it: a permanent failure: " : "",
             p->fail_permanent ? p->fail_msg : "");
  bool failing = p->fail_permanent;
  node_part_start_run(n, 0, true);
  /* Its ranks were stopping for a permanent failure: they stop again (a
   * no-op when the adoption failed the part already). */
  if (failing && p->active)
    node_life_fail_permanent(n, "%s (recorded before the node's restart)",
                             p->fail_msg);
  return PT_OK;
}

void node_part_close(struct node *n)
{
  struct node_part *p = node_part_of(n);

  node_peers_forget(n);
  if (p == NULL)
    return;
  free(p->retired);
  free(p->buf);
  free(p->next_buf);
  node_part_start_free_cmd(p);
  free(p);
  n->part = NULL;
}

bool node_part_active(const struct node *n)
{
  return node_part_of(n) != NULL && node_part_of(n)->active;
}

uint64_t node_part_epoch(const struct node *n)
{
  return node_part_of(n) != NULL && node_part_of(n)->has ? node_part_of(n)->epoch : 0;
}

bool node_part_stop_node(struct node *n, const char *by)
{
  struct node_part *p = node_part_of(n);

  if (p == NULL || !p->active)
    return false;
  bool again = p->stop_node;
  if (!again) {
    p->stop_node = true;
    snprintf(p->stop_by, sizeof(p->stop_by), "%s", by);
    /* The controller hears it now, in these words, rather than from the
     * other nodes' trainers whose all-reduce this one's end breaks, or
     * from a heartbeat that stops. */
    snprintf(p->fail_msg, sizeof(p->fail_msg), "node '%.40s' is stopping (%.100s)",
             n->cfg.node_id, by);
    p->fail_status = -ESHUTDOWN;
    node_part_report_send(n, 0, "failed");
  }
  node_life_request_stop(n, by, again);
  return true;
}
