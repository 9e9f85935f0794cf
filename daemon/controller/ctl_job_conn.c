/*
 * ctl_job_conn.c — the jobs protocol on the controller's connections
 * (rpc/pt.proto, "jobs across nodes"), between the wire and the pure job
 * table (ctl_jobs.c), and the journal under it (ctl_journal.c).
 *
 *   ptctl (PEER_ROLE_CTL)   JOB_START, JOB_STOP, JOB_RESTORE -> JOB_REPLY;
 *                           JOBS_QUERY -> JOBS_REPLY
 *   to nodes                JOB_ASSIGN, JOB_HALT, JOB_PIN, JOB_COMMIT,
 *                           JOB_UNPIN
 *   from nodes              JOB_PART_STATE, STEP_SEALED, JOB_VOTE
 *
 * Every node message is checked: the connection's node must have a part in
 * the job it names (a report of a job it is not in is answered with a
 * JOB_HALT when it says its part runs, and otherwise ignored), the epoch
 * must be the job's current one (another: ignored, logged at debug); a
 * malformed one (a job name or a state that cannot be) closes that
 * connection with one line (ctl_conn.c's refusal).
 *
 * A decision is journaled before any node hears of it; a journal that
 * cannot be written stops the controller (exit 1): it cannot keep its word
 * any more, and a restart replays what was durable.
 *
 * Fault point, for the scenario that kills the controller between
 * journaling a commit and its broadcast: with the environment variable
 * PT_FAULT=ctl_after_commit_journal the controller calls _exit(9) right
 * after a COMMIT record is durable, before any JOB_COMMIT is sent.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/journal.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "ec/rs.h"


static struct controller *CTL(void *ctx)
{
  return ctx;
}

static struct rpc_conn *part_conn(struct controller *ctl,
                                  const struct ctl_job *j, uint32_t p)
{
  size_t i = j->parts[p].node;
  if (i >= ctl->members.n)
    return NULL;
  return ctl->members.nodes[i].conn;
}

static int send_to(struct controller *ctl, const struct ctl_job *j,
                   uint32_t p, uint32_t type, uint64_t req,
                   const ProtobufCMessage *msg)
{
  struct rpc_conn *c = part_conn(ctl, j, p);
  if (c == NULL)
    return -ENOTCONN;
  int rc = rpc_conn_send(c, type, req, msg);
  if (rc != PT_OK && rc != -EPIPE)
    log_warn("job '%s': cannot send %s to node '%s': %s", j->spec->name,
             rpc_type_name(type), j->parts[p].node_id, pt_strerror(rc));
  return rc;
}

/* Node group i of j as a message. mem, mp, emp: room for its members (at
 * most RS_MAX_MEMBERS); the strings point into the job and the
 * membership. */
static void group_msg(struct controller *ctl, const struct ctl_job *j,
                      uint32_t i, Pt__NodeGroup *out, Pt__GroupMember *mem,
                      Pt__GroupMember **mp, uint32_t *emp)
{
  const struct ctl_groups *g = &j->groups;

  pt__node_group__init(out);
  out->index = i;
  out->k = ctl_groups_k(g, i);
  out->m = g->m;
  out->n_members = ctl_groups_size(g, i);
  out->members = mp;
  out->empty = emp;
  for (uint32_t x = 0; x < out->n_members; x++) {
    uint32_t p = g->member[g->first[i] + x];
    const struct ctl_part *pt = &j->parts[p];
    if (pt->empty)
      emp[out->n_empty++] = x;
    pt__group_member__init(&mem[x]);
    mem[x].node_index = p;
    mem[x].node_id = (char *)pt->node_id;
    if (pt->node < ctl->members.n &&
        ctl->members.nodes[pt->node].advertise[0] != '\0')
      mem[x].advertise = ctl->members.nodes[pt->node].advertise;
    mp[x] = &mem[x];
  }
}

/* The protection of node group i now (see NodeGroup.tolerates). */
static void group_health(struct controller *ctl, const struct ctl_job *j,
                         uint32_t i, Pt__NodeGroup *out, uint64_t now)
{
  const struct ctl_groups *g = &j->groups;
  uint32_t lost = 0;

  for (uint32_t x = 0; x < ctl_groups_size(g, i); x++) {
    const struct ctl_part *pt = &j->parts[g->member[g->first[i] + x]];
    /* A spare that has not held a committed step yet holds nothing. */
    if (pt->empty || pt->node >= ctl->members.n ||
        ctl->members.nodes[pt->node].state != CTL_NODE_ALIVE)
      lost++;
  }
  out->has_tolerates = true;
  out->tolerates = j->has_committed && lost < g->m ? g->m - lost : 0;
  if (j->has_committed) {
    out->has_protected_step = true;
    out->protected_step = j->committed;
  }
  if (j->has_committed && j->committed_ms != 0) {
    out->has_protected_age_ms = true;
    out->protected_age_ms = now > j->committed_ms ? now - j->committed_ms : 0;
  }
}

static int op_assign(void *ctx, struct ctl_job *j, uint32_t p)
{
  struct controller *ctl = CTL(ctx);
  Pt__JobAssign a = PT__JOB_ASSIGN__INIT;
  Pt__NodeGroup ng;
  Pt__GroupMember mem[RS_MAX_MEMBERS], *mp[RS_MAX_MEMBERS];
  uint32_t emp[RS_MAX_MEMBERS];

  a.spec = j->spec;
  a.epoch = j->epoch;
  a.has_first_epoch = true;
  a.first_epoch = j->first_epoch;
  a.node_index = p;
  a.first_rank = ctl_jobs_first_rank(j, p);
  a.world_size = ctl_jobs_world_size(j);
  a.master_addr = j->master_addr;
  a.master_port = j->master_port;
  a.has_restore_step = j->has_restore;
  a.restore_step = j->restore_step;
  a.has_committed_step = j->has_committed;
  a.committed_step = j->committed;
  a.has_restore_from_disk = a.restore_from_disk =
      j->has_restore && j->restore_disk;
  a.has_restore_disk_mark = a.restore_from_disk;
  a.restore_disk_mark = j->restore_mark;
  a.has_restore_disk_resume = a.restore_from_disk;
  a.restore_disk_resume = a.restore_from_disk &&
                          ctl_jobs_persist_restore_resumed(j);
  if (j->groups.n > 0) {
    group_msg(ctl, j, j->groups.group_of[p], &ng, mem, mp, emp);
    a.group = &ng;
  }
  log_debug("job '%s' epoch %" PRIu64 ": JOB_ASSIGN to node '%s' (index %"
            PRIu32 ", ranks %" PRIu32 "..%" PRIu32 " of %" PRIu32 ")",
            j->spec->name, j->epoch, j->parts[p].node_id, p, a.first_rank,
            a.first_rank + j->spec->ranks_per_node - 1, a.world_size);
  return send_to(ctl, j, p, RPC_JOB_ASSIGN, ++ctl->req_seq, &a.base);
}

static int op_halt(void *ctx, struct ctl_job *j, uint32_t p, bool remove)
{
  struct controller *ctl = CTL(ctx);
  Pt__JobHalt h = PT__JOB_HALT__INIT;

  h.job = j->spec->name;
  h.epoch = j->epoch;
  h.remove = remove;
  h.reason = j->reason[0] != '\0' ? j->reason : NULL;
  return send_to(ctl, j, p, RPC_JOB_HALT, ++ctl->req_seq, &h.base);
}

static int op_pin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step,
                  uint64_t *ticket)
{
  struct controller *ctl = CTL(ctx);
  Pt__JobPin m = PT__JOB_PIN__INIT;

  m.job = j->spec->name;
  m.epoch = j->epoch;
  m.step = step;
  *ticket = ++ctl->req_seq;
  return send_to(ctl, j, p, RPC_JOB_PIN, *ticket, &m.base);
}

static int op_commit(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step)
{
  Pt__JobCommit m = PT__JOB_COMMIT__INIT;
  m.job = j->spec->name;
  m.epoch = j->epoch;
  m.step = step;
  m.has_persist = m.has_persist_mark =
      ctl_jobs_persist_marked(j, step, &m.persist_mark);
  m.persist = m.has_persist;
  return send_to(CTL(ctx), j, p, RPC_JOB_COMMIT, 0, &m.base);
}

static int op_unpin(void *ctx, struct ctl_job *j, uint32_t p, uint64_t step)
{
  Pt__JobUnpin m = PT__JOB_UNPIN__INIT;
  m.job = j->spec->name;
  m.epoch = j->epoch;
  m.step = step;
  return send_to(CTL(ctx), j, p, RPC_JOB_UNPIN, 0, &m.base);
}

static int op_journal(void *ctx, const struct ctl_job *j, enum ctl_rec kind)
{
  struct controller *ctl = CTL(ctx);

  if (ctl->journal == NULL)
    return -EBADF;
  int rc = ctl_journal_append(ctl->journal, j, kind);
  if (rc != PT_OK) {
    log_error("cannot write the journal in '%s': %s; stopping (a restart "
              "replays what is durable)", ctl->cfg.state_dir,
              pt_strerror(rc));
    ctl->exit_code = CTL_EXIT_FAILED;
    controller_stop(ctl, "journal not writable");
    return rc;
  }
  if (kind == CTL_REC_COMMIT && ctl->fault_after_commit) {
    log_notice("fault point ctl_after_commit_journal: exiting after the "
               "COMMIT of step %" PRIu64 " of job '%s'", j->committed,
               j->spec->name);
    _exit(9);
  }
  ctl->compact_due = true;
  return PT_OK;
}

static int op_persisted(void *ctx, struct ctl_job *j, uint32_t p)
{
  const struct ctl_disk_step *d = ctl_jobs_persist_newest(j);
  Pt__JobPersisted m = PT__JOB_PERSISTED__INIT;
  if (d == NULL)
    return -ENOENT;
  m.job = j->spec->name;
  m.epoch = j->epoch;
  m.step = d->step;
  m.mark = d->mark;
  m.has_keep_from = true;
  m.keep_from = ctl_jobs_persist_keep_from(j);
  return send_to(CTL(ctx), j, p, RPC_JOB_PERSISTED, 0, &m.base);
}

static int op_probe(void *ctx, struct ctl_job *j, uint32_t p)
{
  struct controller *ctl = CTL(ctx);
  Pt__DiskProbe m = PT__DISK_PROBE__INIT;
  m.job = j->spec->name;
  m.epoch = j->epoch;
  m.dir = j->spec->resume_from;
  m.first_rank = ctl_jobs_first_rank(j, p);
  m.ranks = j->spec->ranks_per_node;
  m.world = ctl_jobs_world_size(j);
  return send_to(ctl, j, p, RPC_DISK_PROBE, ++ctl->req_seq, &m.base);
}

const struct ctl_jobs_ops ctl_job_conn_ops = {
    .assign = op_assign,
    .halt = op_halt,
    .pin = op_pin,
    .commit = op_commit,
    .unpin = op_unpin,
    .journal = op_journal,
    .persisted = op_persisted,
    .probe = op_probe,
};

/* ---- the jobs' timer ---- */

static void maybe_compact(struct controller *ctl)
{
  if (!ctl->compact_due || ctl->journal == NULL)
    return;
  ctl->compact_due = false;
  int rc = ctl_journal_compact(ctl->journal, &ctl->jobs, false);
  if (rc != PT_OK)
    log_warn("cannot compact the journal: %s (it keeps growing)",
             pt_strerror(rc));
}

static void on_jobs_timer(uv_timer_t *t)
{
  struct controller *ctl = t->data;
  if (ctl->stopping)
    return;
  ctl_jobs_tick_all(&ctl->jobs, rpc_now_ms());
  maybe_compact(ctl);
}

void ctl_job_conn_timer_start(struct controller *ctl)
{
  uv_timer_init(ctl->loop, &ctl->jobs_timer);
  ctl->jobs_timer.data = ctl;
  uv_timer_start(&ctl->jobs_timer, on_jobs_timer, CTL_JOBS_TICK_MS,
                 CTL_JOBS_TICK_MS);
}

/* ---- ptctl ---- */

static void job_reply(struct rpc_conn *c, uint64_t req, int status,
                      const char *msg, const struct ctl_job *j, bool has_step,
                      uint64_t step)
{
  Pt__JobReply r = PT__JOB_REPLY__INIT;
  r.status = status;
  r.message = (char *)msg;
  if (j != NULL) {
    r.job = j->spec->name;
    r.has_epoch = true;
    r.epoch = j->epoch;
  }
  r.has_step = has_step;
  r.step = step;
  int rc = rpc_conn_send(c, RPC_JOB_REPLY, req, &r.base);
  if (rc != PT_OK && rc != -EPIPE)
    log_warn("cannot answer ptctl %s: %s", rpc_conn_peer_name(c),
             pt_strerror(rc));
}

/* The messages of j's groups in ji (freed, with its disk steps, by
 * info_free). */
static int fill_groups(struct controller *ctl, const struct ctl_job *j,
                       Pt__JobInfo *ji)
{
  uint32_t n = j->groups.n;
  if (n == 0)
    return PT_OK;
  Pt__NodeGroup *gs = calloc(n, sizeof(*gs));
  Pt__NodeGroup **gp = calloc(n, sizeof(*gp));
  Pt__GroupMember *mem = calloc(j->nparts, sizeof(*mem));
  Pt__GroupMember **mp = calloc(j->nparts, sizeof(*mp));
  uint32_t *emp = calloc(j->nparts, sizeof(*emp));
  if (gs == NULL || gp == NULL || mem == NULL || mp == NULL || emp == NULL) {
    free(gs);
    free(gp);
    free(mem);
    free(mp);
    free(emp);
    return -ENOMEM;
  }
  for (uint32_t i = 0; i < n; i++) {
    uint32_t off = j->groups.first[i];
    group_msg(ctl, j, i, &gs[i], mem + off, mp + off, emp + off);
    group_health(ctl, j, i, &gs[i], rpc_now_ms());
    gp[i] = &gs[i];
  }
  ji->n_groups = n;
  ji->groups = gp;
  return PT_OK;
}

static void info_free(Pt__JobInfo *ji)
{
  free(ji->disk); /* (disk_fill's, with everything it points to) */
  ji->disk = NULL;
  if (ji->n_groups == 0)
    return;
  Pt__NodeGroup *gs = ji->groups[0];
  free(gs[0].members[0]);
  free(gs[0].members);
  free(gs[0].empty);
  free(gs);
  free(ji->groups);
}

/* The steps on disk in ji->disk: one allocation, whose first member is
 * the array ji->disk points to (free(ji->disk) frees it all). */
struct disk_msgs {
  Pt__DiskStep *dp[CTL_DISK_MAX + 1];
  Pt__DiskStep d[CTL_DISK_MAX + 1];
  char why[CTL_DISK_MAX + 1][320];
};

static void disk_fill(const struct ctl_job *j, Pt__JobInfo *ji)
{
  const struct ctl_persist *ps = &j->persist;
  if (!ctl_jobs_persist_on(j) && ps->ndisk == 0) /* (--resume-from only) */
    return;
  struct disk_msgs *dm = calloc(1, sizeof(*dm));
  if (dm == NULL)
    return;
  uint64_t wall = ctl_jobs_persist_unix_ms();
  uint32_t world = ctl_jobs_world_size(j), n = 0;
  for (uint32_t i = 0; i < ps->ndisk; i++, n++) {
    Pt__DiskStep *d = &dm->d[n];
    pt__disk_step__init(d);
    d->step = ps->disk[i].step;
    d->complete = true;
    d->has_files = true;
    d->files = world;
    d->has_bytes = ps->disk[i].bytes != 0;
    d->bytes = ps->disk[i].bytes;
    d->has_age_ms = ps->disk[i].unix_ms != 0;
    d->age_ms = wall > ps->disk[i].unix_ms ? wall - ps->disk[i].unix_ms : 0;
    if (ps->disk[i].bad) {
      snprintf(dm->why[n], sizeof(dm->why[n]), "a restore from it failed: "
               "never used again");
      d->why = dm->why[n];
    } else if (ps->disk[i].resumed) {
      /* (its age: since a cold start found it) */
      snprintf(dm->why[n], sizeof(dm->why[n]), "an earlier run's, under "
               "'%.200s/%s' (--resume-from)", j->spec->resume_from,
               j->spec->name);
      d->why = dm->why[n];
    }
    dm->dp[n] = d;
  }
  if (ps->has_marked) {
    Pt__DiskStep *d = &dm->d[n];
    pt__disk_step__init(d);
    d->step = ps->marked;
    d->complete = false;
    d->has_files = true;
    d->files = ps->nok * j->spec->ranks_per_node;
    if (ps->failed)
      snprintf(dm->why[n], sizeof(dm->why[n]), "%s", ps->error);
    else
      snprintf(dm->why[n], sizeof(dm->why[n]), "being written: %" PRIu32
               " of %" PRIu32 " nodes' files durable", ps->nok, j->nparts);
    d->why = dm->why[n];
    dm->dp[n++] = d;
  }
  ji->n_disk = n;
  ji->disk = dm->dp;
}

static void fill_info(struct controller *ctl, const struct ctl_job *j,
                      Pt__JobInfo *ji, Pt__JobPartInfo *pis,
                      Pt__JobPartInfo **pp, uint64_t now)
{
  pt__job_info__init(ji);
  ji->name = j->spec->name;
  ji->state = (char *)ctl_jobs_state_name(j->state);
  ji->epoch = j->epoch;
  ji->has_committed_step = j->has_committed;
  ji->committed_step = j->committed;
  if (j->has_committed && j->committed_ms != 0) {
    ji->has_commit_age_ms = true;
    ji->commit_age_ms = now > j->committed_ms ? now - j->committed_ms : 0;
  }
  ji->restarts = j->restarts;
  ji->commits = j->commits;
  ji->has_restore_step = j->has_restore;
  ji->restore_step = j->restore_step;
  ji->has_restore_from_disk = ji->restore_from_disk =
      j->has_restore && j->restore_disk;
  const struct ctl_disk_step *d = ctl_jobs_persist_newest(j);
  if (d != NULL) {
    ji->has_disk_step = true;
    ji->disk_step = d->step;
    uint64_t wall = ctl_jobs_persist_unix_ms();
    ji->has_disk_age_ms = d->unix_ms != 0;
    ji->disk_age_ms = wall > d->unix_ms ? wall - d->unix_ms : 0;
  }
  ji->has_persisted = ctl_jobs_persist_on(j);
  ji->persisted = j->persist.persisted;
  ji->persist_error = j->persist.error[0] != '\0' ? (char *)j->persist.error
                                                   : NULL;
  ji->reason = j->reason[0] != '\0' ? (char *)j->reason : NULL;
  ji->spec = j->spec;
  uint64_t bytes = 0;
  for (uint32_t p = 0; p < j->nparts; p++) {
    const struct ctl_part *pt = &j->parts[p];
    Pt__JobPartInfo *pi = &pis[p];
    pt__job_part_info__init(pi);
    pi->node_id = (char *)pt->node_id;
    pi->node_index = p;
    const struct ctl_node *n =
        pt->node < ctl->members.n ? &ctl->members.nodes[pt->node] : NULL;
    pi->node_state = n != NULL ? (char *)ctl_members_node_state_name(n->state)
                               : "unknown";
    if (n != NULL) {
      pi->has_heartbeat_age_ms = true;
      pi->heartbeat_age_ms =
          now > n->last_heard_ms ? now - n->last_heard_ms : 0;
    }
    pi->part_state = (char *)ctl_jobs_part_state_name(pt->state);
    pi->first_rank = ctl_jobs_first_rank(j, p);
    pi->ranks = j->spec->ranks_per_node;
    pi->has_bytes_held = true;
    pi->bytes_held = pt->bytes_held;
    pi->has_last_sealed = pt->has_sealed;
    pi->last_sealed = pt->last_sealed;
    pi->n_held = pt->nheld;
    pi->held = (uint64_t *)pt->held;
    bytes += pt->bytes_held;
    pp[p] = pi;
  }
  ji->bytes_held = bytes;
  ji->n_parts = j->nparts;
  ji->parts = pp;
  if (fill_groups(ctl, j, ji) != PT_OK)
    log_warn("job '%s': its coding groups left out of the status: out of "
             "memory", j->spec->name);
  disk_fill(j, ji);
}

static void jobs_query(struct controller *ctl, struct rpc_conn *c,
                       const struct rpc_hdr *h, const Pt__JobsQuery *q)
{
  Pt__JobsReply r = PT__JOBS_REPLY__INIT;
  size_t nj = 0, nparts = 0;
  uint64_t now = rpc_now_ms();

  for (struct ctl_job *j = ctl->jobs.jobs; j != NULL; j = j->next)
    if (q->job == NULL || j == ctl_jobs_find(&ctl->jobs, q->job)) {
      nj++;
      nparts += j->nparts;
    }
  if (q->job != NULL && nj == 0) {
    char msg[CTL_JOB_MAX * 4 + 32];
    snprintf(msg, sizeof(msg), "no job '%s'", LOG_ESC(q->job));
    r.status = -ENOENT;
    r.message = msg;
    (void)rpc_conn_send(c, RPC_JOBS_REPLY, h->request_id, &r.base);
    return;
  }
  Pt__JobInfo *infos = calloc(nj + 1, sizeof(*infos));
  Pt__JobInfo **ips = calloc(nj + 1, sizeof(*ips));
  Pt__JobPartInfo *pis = calloc(nparts + 1, sizeof(*pis));
  Pt__JobPartInfo **pps = calloc(nparts + 1, sizeof(*pps));
  if (infos == NULL || ips == NULL || pis == NULL || pps == NULL) {
    r.status = -ENOMEM;
    r.message = "out of memory";
  } else {
    size_t k = 0, off = 0;
    /* Oldest first. */
    for (size_t want = nj; want-- > 0;) {
      size_t i = 0;
      for (struct ctl_job *j = ctl->jobs.jobs; j != NULL; j = j->next) {
        if (q->job != NULL && j != ctl_jobs_find(&ctl->jobs, q->job))
          continue;
        if (i++ != want)
          continue;
        fill_info(ctl, j, &infos[k], pis + off, pps + off, now);
        ips[k] = &infos[k];
        k++;
        off += j->nparts;
        break;
      }
    }
    r.status = PT_OK;
    r.n_jobs = k;
    r.jobs = ips;
  }
  int rc = rpc_conn_send(c, RPC_JOBS_REPLY, h->request_id, &r.base);
  if (rc != PT_OK && rc != -EPIPE)
    log_warn("cannot answer ptctl %s: %s", rpc_conn_peer_name(c),
             pt_strerror(rc));
  for (size_t i = 0; infos != NULL && ips != NULL && i < r.n_jobs; i++)
    info_free(&infos[i]);
  free(infos);
  free(ips);
  free(pis);
  free(pps);
}

int ctl_job_conn_on_ctl(struct controller *ctl, struct rpc_conn *c,
                        const struct rpc_hdr *h, ProtobufCMessage *msg)
{
  char err[1024];
  uint64_t now = rpc_now_ms();
  int rc;

  err[0] = '\0';
  switch (h->type) {
  case RPC_JOB_START: {
    const Pt__JobStart *m = (const Pt__JobStart *)msg;
    struct ctl_job *j = NULL;
    rc = ctl_jobs_start(&ctl->jobs, m->spec, now, &j, err, sizeof(err));
    if (rc != PT_OK)
      log_notice("ptctl %s: job '%s' not started: %s", rpc_conn_peer_name(c),
                 LOG_ESC(m->spec->name), err);
    job_reply(c, h->request_id, rc, rc != PT_OK ? err : NULL, j, false, 0);
    break;
  }
  case RPC_JOB_STOP: {
    const Pt__JobStop *m = (const Pt__JobStop *)msg;
    rc = ctl_jobs_stop(&ctl->jobs, m->job, m->has_keep && m->keep, now, err,
                       sizeof(err));
    job_reply(c, h->request_id, rc, rc != PT_OK ? err : NULL,
              rc == PT_OK ? ctl_jobs_find(&ctl->jobs, m->job) : NULL, false,
              0);
    break;
  }
  case RPC_JOB_RESTORE: {
    const Pt__JobRestore *m = (const Pt__JobRestore *)msg;
    bool has = false;
    uint64_t step = 0;
    rc = ctl_jobs_restore(&ctl->jobs, m->job, m->has_step, m->step, now, &has,
                          &step, err, sizeof(err));
    if (rc != PT_OK)
      log_notice("ptctl %s: job '%s' not restored: %s", rpc_conn_peer_name(c),
                 LOG_ESC(m->job), err);
    job_reply(c, h->request_id, rc, rc != PT_OK ? err : NULL,
              rc == PT_OK ? ctl_jobs_find(&ctl->jobs, m->job) : NULL, has,
              step);
    break;
  }
  case RPC_JOBS_QUERY:
    jobs_query(ctl, c, h, (const Pt__JobsQuery *)msg);
    break;
  default:
    return PT_EPROTO;
  }
  maybe_compact(ctl);
  return PT_OK;
}

/* ---- nodes ---- */

static bool part_state_parse(const char *s, enum ctl_part_state *out)
{
  static const struct {
    const char *name;
    enum ctl_part_state st;
  } map[] = {
      {"starting", CTL_PART_ASSIGNED}, {"running", CTL_PART_RUNNING},
      {"stopped", CTL_PART_STOPPED},   {"failed", CTL_PART_FAILED},
      {"done", CTL_PART_DONE},
  };
  for (size_t i = 0; i < sizeof(map) / sizeof(map[0]); i++)
    if (strcmp(s, map[i].name) == 0) {
      *out = map[i].st;
      return true;
    }
  return false;
}

static bool job_name_ok(const char *s)
{
  size_t n = s != NULL ? strlen(s) : 0;
  return n >= 1 && n <= CTL_JOB_MAX;
}

/* A node's report of a job it has no part in (one that ended, or one of
 * another controller's life): when it says its part runs, it is told to
 * halt it. */
static void not_in_job(struct controller *ctl, struct rpc_conn *c,
                       struct ctl_node *n, const char *job, uint64_t epoch,
                       bool runs)
{
  log_debug("node '%s' reports job '%s' epoch %" PRIu64 ", in which it has "
            "no part", LOG_ESC(n->id), LOG_ESC(job), epoch);
  if (!runs)
    return;
  Pt__JobHalt h = PT__JOB_HALT__INIT;
  struct ctl_job *j = ctl_jobs_find(&ctl->jobs, job);
  h.job = (char *)job;
  h.epoch = epoch;
  h.remove = j != NULL && j->removed;
  h.reason = "this node has no part in the job";
  log_info("node '%s' runs job '%s' epoch %" PRIu64 " in which it has no "
           "part: telling it to halt", LOG_ESC(n->id), LOG_ESC(job), epoch);
  (void)rpc_conn_send(c, RPC_JOB_HALT, ++ctl->req_seq, &h.base);
}

int ctl_job_conn_on_node(struct controller *ctl, struct rpc_conn *c,
                         size_t node, const struct rpc_hdr *h,
                         ProtobufCMessage *msg, char *what, size_t whatlen)
{
  struct ctl_node *n = node < ctl->members.n ? &ctl->members.nodes[node]
                                             : NULL;
  const char *job;
  uint64_t epoch, now = rpc_now_ms();
  enum ctl_part_state st = CTL_PART_ASSIGNED;

  if (n == NULL || n->conn != c) {
    snprintf(what, whatlen, "%s from a node no longer registered on this "
             "connection", rpc_type_name(h->type));
    return PT_EPROTO;
  }
  switch (h->type) {
  case RPC_JOB_PART_STATE: {
    const Pt__JobPartState *m = (const Pt__JobPartState *)msg;
    job = m->job;
    epoch = m->epoch;
    if (!part_state_parse(m->state, &st)) {
      snprintf(what, whatlen, "JOB_PART_STATE with state '%s'",
               LOG_ESC(m->state));
      return PT_EPROTO;
    }
    break;
  }
  case RPC_STEP_SEALED:
    job = ((const Pt__StepSealed *)msg)->job;
    epoch = ((const Pt__StepSealed *)msg)->epoch;
    break;
  case RPC_JOB_VOTE:
    job = ((const Pt__JobVote *)msg)->job;
    epoch = ((const Pt__JobVote *)msg)->epoch;
    break;
  case RPC_STEP_PERSISTED:
    job = ((const Pt__StepPersisted *)msg)->job;
    epoch = ((const Pt__StepPersisted *)msg)->epoch;
    break;
  case RPC_DISK_PROBE_REPLY:
    job = ((const Pt__DiskProbeReply *)msg)->job;
    epoch = ((const Pt__DiskProbeReply *)msg)->epoch;
    break;
  default:
    snprintf(what, whatlen, "%s is not a node's frame here",
             rpc_type_name(h->type));
    return PT_EPROTO;
  }
  if (!job_name_ok(job)) {
    snprintf(what, whatlen, "%s with a job name of %zu bytes (1..%u)",
             rpc_type_name(h->type), job != NULL ? strlen(job) : 0,
             CTL_JOB_MAX);
    return PT_EPROTO;
  }
  struct ctl_job *j = n->jobp;
  if (j == NULL || strcmp(j->spec->name, job) != 0) {
    not_in_job(ctl, c, n, job, epoch,
               h->type == RPC_JOB_PART_STATE &&
                   (st == CTL_PART_RUNNING || st == CTL_PART_ASSIGNED));
    return PT_OK;
  }
  uint32_t p = n->part;
  int rc;
  switch (h->type) {
  case RPC_JOB_PART_STATE: {
    const Pt__JobPartState *m = (const Pt__JobPartState *)msg;
    rc = ctl_jobs_parts_state(&ctl->jobs, j, p, epoch, st, m->message, m, now);
    if (n->jobp == j)
      ctl_peers_on_part_state(ctl, j, p, m);
    break;
  }
  case RPC_STEP_SEALED: {
    const Pt__StepSealed *ss = (const Pt__StepSealed *)msg;
    if (epoch == j->epoch) {
      struct ctl_part *pt = &j->parts[p];
      if (ss->has_bytes_held)
        pt->bytes_held = ss->bytes_held;
      /* What a restore to an older committed step may choose now. */
      if (ss->n_held > 0) {
        pt->nheld = 0;
        for (size_t i = 0; i < ss->n_held && pt->nheld < CTL_HELD_MAX; i++)
          pt->held[pt->nheld++] = ss->held[i];
      }
    }
    rc = ctl_jobs_parts_sealed(&ctl->jobs, j, p, epoch, ss->step,
                               ss->has_pinned && ss->pinned, now);
    break;
  }
  case RPC_STEP_PERSISTED: {
    /* Whatever epoch it names: the mark tells the flushes apart (a new
     * epoch drops the marked one, and its late reports are ignored). */
    const Pt__StepPersisted *m = (const Pt__StepPersisted *)msg;
    rc = ctl_jobs_persist_report(&ctl->jobs, j, p, m->step, m->mark,
                                 m->status, m->message,
                                 m->has_bytes ? m->bytes : 0);
    break;
  }
  case RPC_DISK_PROBE_REPLY:
    rc = ctl_jobs_probe_reply(&ctl->jobs, j, p, epoch,
                              (const Pt__DiskProbeReply *)msg, now);
    break;
  default: {
    const Pt__JobVote *m = (const Pt__JobVote *)msg;
    rc = ctl_jobs_parts_vote(&ctl->jobs, j, p, epoch, m->step,
                             h->request_id, m->status, m->message, now);
    break;
  }
  }
  if (rc == PT_EEPOCH)
    log_debug("node '%s': %s of job '%s' epoch %" PRIu64 " ignored (the "
              "job is in epoch %" PRIu64 ")", LOG_ESC(n->id),
              rpc_type_name(h->type), j->spec->name, epoch, j->epoch);
  maybe_compact(ctl);
  return PT_OK;
}
