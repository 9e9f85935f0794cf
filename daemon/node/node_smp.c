/*
 * node_smp.c — the node's side of its connection to each SMP.
 *
 * A rank's SMP is dialled as soon as it is spawned or adopted; until its
 * socket answers (the SMP is still starting) the node retries every
 * NODE_RETRY_MS, and an SMP that is not subscribed within NODE_CONNECT_MS is
 * treated as dead: it gets SIGKILL and its exit brings a fresh one. The
 * first frame on every connection is SUBSCRIBE; its STATE_REPLY makes the
 * connection the SMP's one subscriber, and from then on EVENT frames arrive
 * with request id 0. Right after it, and whenever a trainer is spawned or
 * adopted, TRAINER_SET names the rank's trainer: the SMP accepts HELLO from
 * that trainer's session only.
 *
 * Requests carry ids from one counter per node and wait in a small table per
 * connection, each with a deadline; the caller may keep the id to match the
 * answer (the commit decider does: the transport knows nothing of rounds).
 * An SMP that lets a deadline pass is hung: it is killed too. Every subscribed SMP gets a liveness probe (a
 * STATE_QUERY) each second whose deadline is --smp-timeout, so that a hung
 * SMP is found even when nothing else is asked of it; a probe missed while
 * the SMP is busy (running, per /proc) gets more time. A deadline counts as
 * missed only once the loop has read what arrived before it (node_job_overdue).
 * When a connection goes, every request waiting on it fails with the cause
 * (node_events_on_req_failed), so no caller waits forever.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/proc.h"

static const char *req_name(enum node_req_kind k)
{
  switch (k) {
  case NODE_REQ_SUBSCRIBE: return "SUBSCRIBE";
  case NODE_REQ_STATE: return "STATE_QUERY";
  case NODE_REQ_VERIFY: return "STATE_QUERY(verify)";
  case NODE_REQ_DRAIN: return "STATE_QUERY(end)";
  case NODE_REQ_PIN: return "PIN";
  case NODE_REQ_COMMIT:
  case NODE_REQ_RECOMMIT: return "COMMIT";
  case NODE_REQ_UNPIN:
  case NODE_REQ_STALE_UNPIN: return "UNPIN";
  case NODE_REQ_SET_RESTORE: return "SET_RESTORE";
  case NODE_REQ_PROBE: return "STATE_QUERY(liveness)";
  case NODE_REQ_TRAINER_SET: return "TRAINER_SET";
  case NODE_REQ_PEERS_SET: return "PEERS_SET";
  case NODE_REQ_RECOVER: return "RECOVER";
  }
  return "request";
}

static bool may_reconnect(const struct node *n, const struct node_rank *r)
{
  return n->phase < NODE_PH_STOP_SMPS && r->smp != NULL && !r->smp->exited &&
         !r->smp->kill_sent && !r->smp->term_sent;
}

/* Fails every waiting request; each caller learns why. */
static void fail_pending(struct node *n, struct node_rank *r, int err)
{
  while (r->nreqs > 0) {
    struct node_req q = r->reqs[--r->nreqs];
    node_events_on_req_failed(n, r, &q, err);
  }
}

static int smp_serve_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg)
{
  struct node_rank *r = rpc_conn_data(c);
  struct node *n = r->node;
  uint32_t i;

  if (r->conn != c)
    return 1; /* a connection the rank no longer uses */
  if (h->type == RPC_EVENT) {
    node_events_on_event(n, r, (const Pt__Event *)msg);
    node_job_drive(n);
    return 0;
  }
  for (i = 0; i < r->nreqs; i++)
    if (r->reqs[i].id == h->request_id)
      break;
  if (i == r->nreqs) {
    log_warn("smp rank %s: unexpected %s (request id %" PRIu64
             "); ignored",
             NODE_RANK(n, r->rank), rpc_type_name(h->type), h->request_id);
    return 0;
  }
  struct node_req q = r->reqs[i];
  r->reqs[i] = r->reqs[--r->nreqs];

  bool state_kind = q.kind == NODE_REQ_SUBSCRIBE || q.kind == NODE_REQ_STATE ||
                    q.kind == NODE_REQ_VERIFY || q.kind == NODE_REQ_DRAIN ||
                    q.kind == NODE_REQ_PROBE;
  uint32_t want = state_kind ? RPC_STATE_REPLY : RPC_REPLY;
  if (h->type != want) {
    log_error("smp rank %s: answered %s with %s; closing",
              NODE_RANK(n, r->rank), req_name(q.kind), rpc_type_name(h->type));
    node_events_on_req_failed(n, r, &q, PT_EPROTO);
    node_job_drive(n);
    return 1;
  }
  if (state_kind) {
    const Pt__StateReply *m = (const Pt__StateReply *)msg;
    if (m->status < 0) {
      log_error("smp rank %s: %s failed: %s", NODE_RANK(n, r->rank),
                req_name(q.kind),
                m->message != NULL ? LOG_ESC(m->message)
                                   : pt_strerror(m->status));
      node_events_on_req_failed(n, r, &q, m->status);
      node_job_drive(n);
      return q.kind == NODE_REQ_SUBSCRIBE; /* not subscribed: retry */
    }
    if (q.kind == NODE_REQ_SUBSCRIBE) {
      r->subscribed = true;
      r->connect_deadline = 0;
      r->smp_fails = 0;
      r->probe_at = rpc_now_ms() + NODE_PROBE_EVERY_MS;
      log_debug("smp rank %s (pid %d) subscribed", NODE_RANK(n, r->rank),
                r->smp != NULL ? r->smp->pid : 0);
      /* An SMP (re)started under a live trainer learns which it is. */
      node_smp_announce(n, r);
      r->peers_due = true; /* and where its group is */
    }
    if (q.kind == NODE_REQ_PROBE)
      return 0; /* alive: nothing else to learn */
    node_events_on_state_reply(n, r, q.kind, m);
  } else {
    const Pt__Reply *m = (const Pt__Reply *)msg;
    node_events_on_reply(n, r, &q, m->status, m->message);
  }
  node_job_drive(n);
  return 0;
}

static void smp_on_close(struct rpc_conn *c, int err)
{
  struct node_rank *r = rpc_conn_data(c);
  struct node *n;
  bool was_subscribed;

  if (r == NULL || r->conn != c)
    return;
  n = r->node;
  was_subscribed = r->subscribed;
  r->conn = NULL;
  r->subscribed = false;
  fail_pending(n, r, err != 0 ? err : -ECONNRESET);
  if (may_reconnect(n, r)) {
    uint64_t now = rpc_now_ms();
    if (was_subscribed) {
      log_warn("smp rank %s (pid %d): connection lost (%s); "
               "reconnecting",
               NODE_RANK(n, r->rank),
               r->smp->pid, pt_strerror(err != 0 ? err : -ECONNRESET));
      r->connect_deadline = now + NODE_CONNECT_MS;
    }
    if (r->connect_deadline == 0)
      r->connect_deadline = now + NODE_CONNECT_MS;
    r->retry_at = now + NODE_RETRY_MS;
  }
  node_job_drive(n);
}

static const struct rpc_conn_ops smp_ops = {
    .on_msg = smp_serve_on_msg,
    .on_close = smp_on_close,
};

static void try_connect(struct node *n, struct node_rank *r)
{
  struct rpc_conn *c = NULL;
  int rc;

  r->retry_at = 0;
  if (r->conn != NULL || !may_reconnect(n, r))
    return;
  rc = rpc_conn_connect_unix(n->loop, r->sock_path, &smp_ops, r, &c);
  if (rc != PT_OK) {
    log_debug("smp rank %s: cannot dial '%s': %s", NODE_RANK(n, r->rank),
              r->sock_path, pt_strerror(rc));
    r->retry_at = rpc_now_ms() + NODE_RETRY_MS;
    return;
  }
  r->conn = c;
  r->subscribed = false;
  rc = node_smp_request(n, r, NODE_REQ_SUBSCRIBE, 0, NULL);
  if (rc != PT_OK && r->conn == c) {
    r->conn = NULL;
    rpc_conn_close(c, rc);
    r->retry_at = rpc_now_ms() + NODE_RETRY_MS;
  }
}

void node_smp_announce(struct node *n, struct node_rank *r)
{
  if (!r->subscribed || r->trainer == NULL || r->trainer->exited)
    return;
  int rc = node_smp_request(n, r, NODE_REQ_TRAINER_SET, 0, NULL);
  if (rc != PT_OK)
    log_warn("smp rank %s: cannot announce trainer pid %d: %s",
             NODE_RANK(n, r->rank), r->trainer->pid, pt_strerror(rc));
}

void node_smp_connect(struct node *n, struct node_rank *r)
{
  r->connect_deadline = rpc_now_ms() + NODE_CONNECT_MS;
  try_connect(n, r);
}

void node_smp_disconnect(struct node_rank *r)
{
  struct rpc_conn *c = r->conn;

  r->retry_at = 0;
  if (c == NULL)
    return;
  r->conn = NULL;
  r->subscribed = false;
  fail_pending(r->node, r, -ECONNABORTED);
  rpc_conn_close(c, 0);
}

int node_smp_request(struct node *n, struct node_rank *r,
                     enum node_req_kind kind, uint64_t step, uint64_t *id_out)
{
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  Pt__StateQuery sq = PT__STATE_QUERY__INIT;
  Pt__Pin pr = PT__PIN__INIT;
  Pt__Commit cm = PT__COMMIT__INIT;
  Pt__Unpin ab = PT__UNPIN__INIT;
  Pt__SetRestore sr = PT__SET_RESTORE__INIT;
  Pt__TrainerSet ts = PT__TRAINER_SET__INIT;
  Pt__Recover rv = PT__RECOVER__INIT;
  Pt__PeersSet ps;
  Pt__PeerAddr paddr[RS_MAX_MEMBERS], *pptr[RS_MAX_MEMBERS];
  const ProtobufCMessage *msg;
  char node_id[32], disk_dir[1200];
  uint32_t type;
  uint64_t id, timeout = NODE_REQ_MS;
  int rc;

  if (r->conn == NULL)
    return -ENOTCONN;
  if (r->nreqs == NODE_REQ_MAX)
    return -EBUSY;
  switch (kind) {
  case NODE_REQ_SUBSCRIBE:
    snprintf(node_id, sizeof(node_id), "node.%d", (int)getpid());
    sub.node_id = node_id;
    /* Proves to the SMP that this is the job's node (--secret-file). */
    sub.has_secret = true;
    sub.secret.data = n->secret;
    sub.secret.len = sizeof(n->secret);
    type = RPC_SUBSCRIBE;
    msg = &sub.base;
    timeout = NODE_CONNECT_MS;
    break;
  case NODE_REQ_STATE:
  case NODE_REQ_VERIFY:
  case NODE_REQ_DRAIN:
  case NODE_REQ_PROBE:
    sq.verify = kind == NODE_REQ_VERIFY;
    sq.has_newest_first = sq.verify && step == NODE_VERIFY_NEWEST_FIRST;
    sq.newest_first = sq.has_newest_first;
    type = RPC_STATE_QUERY;
    msg = &sq.base;
    if (sq.verify)
      timeout = NODE_VERIFY_MS;
    else if (kind == NODE_REQ_PROBE)
      timeout = n->cfg.smp_timeout_ms;
    break;
  case NODE_REQ_PIN:
    pr.step = step;
    type = RPC_PIN;
    msg = &pr.base;
    break;
  case NODE_REQ_COMMIT:
  case NODE_REQ_RECOMMIT:
    cm.step = step;
    cm.has_persist = cm.persist =
        node_persist_marked(n, step, &cm.persist_mark);
    cm.has_persist_mark = cm.persist;
    type = RPC_COMMIT;
    msg = &cm.base;
    break;
  case NODE_REQ_UNPIN:
  case NODE_REQ_STALE_UNPIN:
    ab.step = step;
    type = RPC_UNPIN;
    msg = &ab.base;
    break;
  case NODE_REQ_SET_RESTORE:
    /* step == UINT64_MAX: start fresh (no step). */
    sr.has_step = step != UINT64_MAX;
    sr.step = sr.has_step ? step : 0;
    sr.has_rebuild = sr.has_step && r->restore_rebuild && !n->restore_disk;
    sr.rebuild = sr.has_rebuild;
    if (sr.has_step && n->restore_disk) {
      /* never a memory restore of the step in its place */
      rc = node_persist_restore_step_dir(n, step, disk_dir, sizeof(disk_dir));
      if (rc != PT_OK)
        return rc;
      sr.from_disk = disk_dir;
      sr.has_from_disk_mark = true;
      sr.from_disk_mark = node_persist_restore_mark(n);
      /* A cluster's: every node's part has an instance of its own, and
       * the controller's flush id binds the file. */
      sr.has_from_disk_any_instance = sr.from_disk_any_instance =
          n->cfg.cluster;
    }
    type = RPC_SET_RESTORE;
    msg = &sr.base;
    break;
  case NODE_REQ_TRAINER_SET:
    /* The SMP accepts HELLO from this trainer's session only. */
    if (r->trainer == NULL || r->trainer->exited)
      return -ESRCH;
    ts.pid = r->trainer->pid;
    ts.has_start_ticks = r->trainer->start_ticks != 0;
    ts.start_ticks = r->trainer->start_ticks;
    type = RPC_TRAINER_SET;
    msg = &ts.base;
    break;
  case NODE_REQ_RECOVER:
    rv.generation = step;
    type = RPC_RECOVER;
    msg = &rv.base;
    break;
  case NODE_REQ_PEERS_SET:
    rc = node_peers_msg(n, r, &ps, paddr, pptr);
    if (rc != PT_OK)
      return rc;
    type = RPC_PEERS_SET;
    msg = &ps.base;
    break;
  default:
    return -EINVAL;
  }
  id = ++n->next_req_id;
  rc = rpc_conn_send(r->conn, type, id, msg);
  if (rc != PT_OK) {
    log_warn("smp rank %s: cannot send %s: %s", NODE_RANK(n, r->rank),
             req_name(kind), pt_strerror(rc));
    return rc;
  }
  if (r->conn == NULL)
    return -ECONNRESET; /* closed while sending */
  r->reqs[r->nreqs++] = (struct node_req){
      .id = id, .kind = kind, .step = step,
      .deadline_ms = rpc_now_ms() + timeout, .sent_ms = rpc_now_ms()};
  if (id_out != NULL)
    *id_out = id;
  return PT_OK;
}

/* An SMP that does not answer is hung or broken: SIGKILL, and its exit
 * brings a fresh one. */
static void kill_unresponsive(struct node_rank *r, const char *what)
{
  struct node_child *c = r->smp;

  if (c != NULL && !c->exited) {
    log_error("smp rank %s (pid %d) did not answer %s in time; "
              "killing it",
              NODE_RANK(r->node, r->rank), c->pid, what);
    node_proc_child_signal(c, SIGKILL);
    c->kill_sent = true;
  }
  r->connect_deadline = 0;
  node_smp_disconnect(r);
}

/* A probe that missed its deadline while the SMP is busy (running or in
 * disk wait: pre-faulting a new object, verifying slots) is given more
 * time, up to NODE_PROBE_BUSY_MS; one that is stopped or asleep is hung. */
static bool probe_excused(struct node *n, struct node_rank *r,
                          struct node_req *q, uint64_t now)
{
  if (q->kind != NODE_REQ_PROBE)
    return false;
  for (uint32_t k = 0; k < r->nreqs; k++)
    if (r->reqs[k].kind == NODE_REQ_VERIFY)
      goto excused; /* that request has its own, longer deadline */
  if (r->smp == NULL || now >= q->sent_ms + NODE_PROBE_BUSY_MS)
    return false;
  char st = proc_stat_state(r->smp->pid);
  if (st != 'R' && st != 'D')
    return false;
  log_debug("smp rank %s (pid %d) is busy (state %c): its liveness "
            "probe gets more time", NODE_RANK(n, r->rank), r->smp->pid, st);
excused:
  q->deadline_ms = now + n->cfg.smp_timeout_ms;
  return true;
}

/* Sends a liveness probe when one is due: a STATE_QUERY whose deadline is
 * --smp-timeout. None while a STATE_QUERY{verify} runs (the SMP reads every
 * slot meanwhile; that request has its own deadline) or a probe waits. */
static bool probe_wanted(const struct node *n, const struct node_rank *r)
{
  return n->cfg.smp_timeout_ms != 0 && r->subscribed && r->probe_at != 0 &&
         n->phase <= NODE_PH_RUNNING && r->smp != NULL && !r->smp->term_sent;
}

static void probe(struct node *n, struct node_rank *r, uint64_t now)
{
  if (!probe_wanted(n, r) || now < r->probe_at)
    return;
  r->probe_at = now + (n->cfg.smp_timeout_ms < NODE_PROBE_EVERY_MS
                           ? n->cfg.smp_timeout_ms : NODE_PROBE_EVERY_MS);
  for (uint32_t k = 0; k < r->nreqs; k++)
    if (r->reqs[k].kind == NODE_REQ_VERIFY || r->reqs[k].kind == NODE_REQ_PROBE)
      return;
  node_smp_request(n, r, NODE_REQ_PROBE, 0, NULL);
}

void node_smp_tick(struct node *n, uint64_t now)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    bool late = false;
    const char *what = NULL;

    /* node_job_overdue: a deadline counts as missed only once the loop has
     * read what arrived before it (a node resumed from SIGSTOP runs its
     * timer first, with the answers still unread in its sockets). */
    for (uint32_t k = 0; k < r->nreqs; k++)
      if (node_job_overdue(n, r->reqs[k].deadline_ms) &&
          !probe_excused(n, r, &r->reqs[k], now)) {
        late = true;
        what = req_name(r->reqs[k].kind);
      }
    if (late) {
      kill_unresponsive(r, what);
      continue;
    }
    probe(n, r, now);
    if (r->subscribed || r->smp == NULL || r->smp->exited)
      continue;
    if (node_job_overdue(n, r->connect_deadline)) {
      char what_buf[sizeof(r->sock_path) + 8];
      snprintf(what_buf, sizeof(what_buf), "on '%s'", r->sock_path);
      kill_unresponsive(r, what_buf);
      continue;
    }
    if (r->conn == NULL && r->retry_at != 0 && now >= r->retry_at)
      try_connect(n, r);
  }
}

uint64_t node_smp_next_deadline(const struct node_rank *r)
{
  uint64_t d = UINT64_MAX;

  for (uint32_t k = 0; k < r->nreqs; k++)
    if (r->reqs[k].deadline_ms < d)
      d = r->reqs[k].deadline_ms;
  if (probe_wanted(r->node, r) && r->probe_at < d)
    d = r->probe_at;
  if (!r->subscribed && r->smp != NULL && !r->smp->exited) {
    if (r->connect_deadline != 0 && r->connect_deadline < d)
      d = r->connect_deadline;
    if (r->conn == NULL && r->retry_at != 0 && r->retry_at < d)
      d = r->retry_at;
  }
  return d;
}
