/*
 * node_ctl.c — how `ptd node` is controlled and watched from outside: the
 * control socket for ptctl, SIGTERM/SIGINT, and systemd's notification
 * socket and watchdog.
 *
 * The control socket, <state-dir>/ptd.sock, serves two requests:
 * RPC_STATUS_QUERY (answered with RPC_STATUS_REPLY, built from the node's
 * current view) and RPC_STOP (answered with RPC_REPLY,
 * then the job is stopped as on SIGTERM). The rpc layer closes a connection
 * that sends a malformed, oversized or truncated frame; any other frame type
 * is refused here by closing the connection. Either way the listener keeps
 * serving every other client.
 *
 * Signals: SIGTERM or SIGINT stops the job as `ptctl stop` does (exit 3); a
 * second one sends SIGKILL to whatever is still running.
 *
 * systemd (Type=notify, NotifyAccess=main): READY=1 once the ranks run,
 * STATUS= with the phase and the committed step at every change,
 * STOPPING=1 when the job ends, WATCHDOG=1 every half WATCHDOG_USEC when the
 * unit sets WatchdogSec=. Without NOTIFY_SOCKET every call is a no-op.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <systemd/sd-daemon.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_ctl_int.h"
#include "daemon/node/node_persist.h"

int node_ctl_status_send(struct node *n, struct rpc_conn *c, uint64_t id,
                         const struct node_ctl_listing *l)
{
  Pt__StatusReply rep = PT__STATUS_REPLY__INIT;
  uint32_t nr = n->cfg.ranks;
  int rc;
  Pt__SlotView **vp = NULL;
  Pt__DiskStep *dv = NULL, **dp = NULL;

  struct node_cluster_view cv;
  Pt__RankStatus *rs = calloc(nr > 0 ? nr : 1, sizeof(*rs));
  Pt__RankStatus **rp = calloc(nr > 0 ? nr : 1, sizeof(*rp));
  if (rs == NULL || rp == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  rep.status = PT_OK;
  rep.job = n->cfg.job;
  rep.state = (char *)node_life_phase_name(n);
  rep.node_pid = (int32_t)getpid();
  rep.restarts = n->restarts;
  rep.commits = n->commits;
  rep.restores = n->restores;
  if (n->has_committed) {
    rep.has_committed_step = true;
    rep.committed_step = n->committed;
    if (n->committed_unix_ms != 0) {
      uint64_t now = node_unix_ms();
      rep.has_commit_age_ms = true;
      rep.commit_age_ms =
          now > n->committed_unix_ms ? now - n->committed_unix_ms : 0;
    }
  }
  if (n->why[0] != '\0')
    rep.message = n->why;
  if (n->cfg.cluster) {
    node_cluster_status(n, &cv);
    rep.state = (char *)node_part_report_state_name(n);
    rep.mode = "cluster";
    rep.node_id = n->cfg.node_id;
    rep.controller = cv.controller;
    rep.controller_link = (char *)cv.link;
    rep.has_controller_link_ms = true;
    rep.controller_link_ms = cv.link_ms;
    if (cv.error[0] != '\0')
      rep.controller_error = cv.error;
  }
  struct node_persist_status ps;
  node_persist_status(n, &ps);
  if (ps.on && ps.dir[0] != '\0') {
    rep.persist_dir = ps.dir;
    rep.has_persist_step = ps.has_complete;
    rep.persist_step = ps.complete;
    rep.has_persist_age_ms = ps.has_complete && ps.complete_unix_ms != 0;
    uint64_t now = node_unix_ms();
    rep.persist_age_ms = now > ps.complete_unix_ms ? now - ps.complete_unix_ms : 0;
    rep.has_persisted = rep.has_persist_failures = true;
    rep.persisted = ps.persisted;
    rep.persist_failures = ps.failures;
    if (ps.last_error[0] != '\0')
      rep.persist_error = ps.last_error;
  }
  if (n->restores > 0 && n->restore_reason[0] != '\0') {
    rep.restored_from = n->restore_disk ? "disk" : "memory";
    rep.restore_reason = n->restore_reason;
  }
  for (uint32_t i = 0; i < nr; i++) {
    const struct node_rank *r = &n->ranks[i];
    Pt__RankStatus *s = &rs[i];

    pt__rank_status__init(s);
    s->rank = r->rank;
    s->has_global_rank = n->cfg.cluster;
    s->global_rank = n->cfg.first_rank + r->rank;
    s->trainer_pid =
        r->trainer != NULL && !r->trainer->exited ? r->trainer->pid : 0;
    s->smp_pid = r->smp != NULL && !r->smp->exited ? r->smp->pid : 0;
    s->state = (char *)node_life_rank_state_name(n, r);
    s->restarts = r->restarts;
    s->smp_restarts = r->smp_restarts;
    s->has_last_sealed = r->has_last_sealed;
    s->last_sealed = r->last_sealed;
    s->has_bytes_held = true;
    s->bytes_held = r->bytes_held;
    rep.bytes_held += r->bytes_held;
    rp[i] = s;
  }
  rep.n_ranks = nr;
  rep.ranks = rp;
  rep.instance = n->instance_hex;
  if (l != NULL) {
    vp = calloc(l->nviews > 0 ? l->nviews : 1, sizeof(*vp));
    dv = calloc(l->nd > 0 ? l->nd : 1, sizeof(*dv));
    dp = calloc(l->nd > 0 ? l->nd : 1, sizeof(*dp));
    if (vp == NULL || dv == NULL || dp == NULL) {
      rc = -ENOMEM;
      goto out_free;
    }
    for (size_t i = 0; i < l->nviews; i++)
      vp[i] = &l->views[i];
    rep.n_slots = l->nviews;
    rep.slots = vp;
    if (l->merr[0] != '\0')
      rep.memory_error = (char *)l->merr;
    for (uint32_t i = 0; i < l->nd; i++) {
      const struct node_disk_step *x = &l->ds[i];
      Pt__DiskStep *d = &dv[i];
      pt__disk_step__init(d);
      d->step = x->step;
      d->complete = x->complete;
      d->has_files = d->has_bytes = true;
      d->files = x->files;
      d->bytes = x->bytes;
      d->has_age_ms = d->has_ours = x->complete;
      d->age_ms = x->age_ms;
      d->ours = x->ours;
      if (x->why[0] != '\0')
        d->why = (char *)x->why;
      dp[i] = d;
    }
    rep.n_disk_steps = l->nd;
    rep.disk_steps = dp;
  }
  rc = rpc_conn_send(c, RPC_STATUS_REPLY, id, &rep.base);
out_free:
  free(rp);
  free(rs);
  free(vp);
  free(dv);
  free(dp);
  return rc;
}

static int ctl_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg)
{
  struct node *n = rpc_conn_data(c);
  int rc;

  if (n == NULL)
    return 1; /* the node is closing */
  switch (h->type) {
  case RPC_STATUS_QUERY:
    /* The listing reads the disk: on the pool, answered when it is done. */
    if (msg != NULL && ((Pt__StatusQuery *)msg)->has_snapshots &&
        ((Pt__StatusQuery *)msg)->snapshots && !n->cfg.cluster)
      rc = node_ctl_snapshots_start(n, c, h->request_id);
    else
      rc = node_ctl_status_send(n, c, h->request_id, NULL);
    if (rc != PT_OK) {
      log_warn("control: cannot answer a status query: %s", pt_strerror(rc));
      return 1;
    }
    return 0;
  case RPC_STOP: {
    Pt__Reply rep = PT__REPLY__INIT;
    rep.status = PT_OK;
    /* Cluster mode: the node daemon itself ends (its part first, and the
     * controller is told); standalone: the job, then the daemon. */
    rep.message = n->cfg.cluster
                      ? "stopping the node daemon (cluster mode): its part of "
                        "the job ends, the controller is told; its jobs are "
                        "stopped with ptctl --controller HOST:PORT stop JOB"
                      : "stopping";
    rc = rpc_conn_send(c, RPC_REPLY, h->request_id, &rep.base);
    if (rc != PT_OK)
      log_warn("control: cannot answer a stop request: %s", pt_strerror(rc));
    if (n->cfg.cluster)
      node_cluster_stop(n, "ptctl stop");
    else
      node_life_request_stop(n, "ptctl stop", false);
    return 0;
  }
  default:
    log_warn("control: refusing a %s frame from pid %d; closing the "
             "connection",
             rpc_type_name(h->type), rpc_conn_peer_pid(c));
    return 1;
  }
}

static void ctl_on_close(struct rpc_conn *c, int err)
{
  struct node *n = rpc_conn_data(c);

  if (err == -ETIMEDOUT)
    log_info("control: closed the connection from pid %d: idle for %u s",
             rpc_conn_peer_pid(c), NODE_CTL_IDLE_MS / 1000);
  else if (err != 0)
    log_debug("control: connection from pid %d closed: %s",
              rpc_conn_peer_pid(c), pt_strerror(err));
  if (n == NULL)
    return;
  node_ctl_snapshots_conn_gone(n, c);
  for (uint32_t i = 0; i < n->n_ctl; i++)
    if (n->ctl_conns[i] == c) {
      n->ctl_conns[i] = n->ctl_conns[--n->n_ctl];
      break;
    }
}

/* Every open connection is remembered, so that the node can close them
 * when it exits (a client that never speaks would keep the loop alive).
 * Connections idle for NODE_CTL_IDLE_MS are closed by the rpc layer; when
 * NODE_CTL_MAX are open, the one idle longest makes room for the new one,
 * so idle clients cannot lock ptctl out. */
static int ctl_on_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  struct node *n = rpc_listener_data(l);

  if (n->n_ctl == NODE_CTL_MAX) {
    uint32_t oldest = 0;
    for (uint32_t i = 1; i < n->n_ctl; i++)
      if (rpc_conn_idle_ms(n->ctl_conns[i]) >
          rpc_conn_idle_ms(n->ctl_conns[oldest]))
        oldest = i;
    struct rpc_conn *old = n->ctl_conns[oldest];
    /* A connection flood must not flood the log: rate-limited. */
    static struct log_limit lim;
    log_limited(&lim, LOG_LVL_WARN,
                "control: %d connections open; closing the one idle longest "
                "(pid %d, %" PRIu64 " ms) for pid %d",
                NODE_CTL_MAX, rpc_conn_peer_pid(old), rpc_conn_idle_ms(old),
                rpc_conn_peer_pid(c));
    n->ctl_conns[oldest] = n->ctl_conns[--n->n_ctl];
    rpc_conn_set_data(old, NULL);
    rpc_conn_close(old, 0);
  }
  rpc_conn_set_data(c, n);
  n->ctl_conns[n->n_ctl++] = c;
  return 0;
}

static const struct rpc_conn_ops ctl_ops = {
    .on_msg = ctl_on_msg,
    .on_close = ctl_on_close,
    .max_body = 64u << 10, /* requests are empty messages */
    .max_write_queue = 4u << 20,
    .idle_ms = NODE_CTL_IDLE_MS,
};

int node_ctl_open(struct node *n)
{
  int rc = rpc_listen_unix(n->loop, n->ctl_path, &ctl_ops, ctl_on_accept, n,
                           &n->ctl);
  if (rc != PT_OK) {
    log_error("cannot listen on '%s': %s", n->ctl_path, pt_strerror(rc));
    n->ctl = NULL;
  }
  return rc;
}

void node_ctl_close(struct node *n)
{
  if (n->ctl != NULL) {
    rpc_listener_close(n->ctl);
    n->ctl = NULL;
  }
  while (n->n_ctl > 0) {
    struct rpc_conn *c = n->ctl_conns[--n->n_ctl];
    rpc_conn_set_data(c, NULL);
    rpc_conn_close(c, 0);
  }
}

/* ---- signals and systemd ---- */

void node_ctl_notify(struct node *n, bool ready)
{
  char status[160];

  if (n->has_committed)
    snprintf(status, sizeof(status),
             "STATUS=%s: job %s, committed step %" PRIu64 ", %" PRIu32
             " restarts",
             node_life_phase_name(n), n->cfg.job, n->committed, n->restarts);
  else
    snprintf(status, sizeof(status),
             "STATUS=%s: job %s, nothing committed yet, %" PRIu32 " restarts",
             node_life_phase_name(n), n->cfg.job, n->restarts);
  if (ready && !n->ready_sent) {
    n->ready_sent = true;
    sd_notifyf(0, "READY=1\n%s", status);
  } else if (n->phase >= NODE_PH_STOP_TRAINERS) {
    sd_notifyf(0, "STOPPING=1\n%s", status);
  } else {
    sd_notify(0, status);
  }
}

static void on_watchdog(uv_timer_t *t)
{
  (void)t;
  sd_notify(0, "WATCHDOG=1");
}

static void on_signal(uv_signal_t *s, int signum)
{
  struct node *n = s->data;

  if (n->cfg.cluster) {
    node_cluster_stop(n, signum == SIGINT ? "SIGINT" : "SIGTERM");
    return;
  }
  node_life_request_stop(n, signum == SIGINT ? "SIGINT" : "SIGTERM", true);
}

void node_ctl_signals_open(struct node *n)
{
  uv_timer_init(n->loop, &n->watchdog);
  n->watchdog.data = n;
  uv_signal_init(n->loop, &n->sigterm);
  n->sigterm.data = n;
  uv_signal_init(n->loop, &n->sigint);
  n->sigint.data = n;
  uv_signal_start(&n->sigterm, on_signal, SIGTERM);
  uv_signal_start(&n->sigint, on_signal, SIGINT);
}

void node_ctl_watchdog_start(struct node *n)
{
  uint64_t usec = 0;

  if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
    uv_timer_start(&n->watchdog, on_watchdog, usec / 2000, usec / 2000);
    n->watchdog_on = true;
    log_debug("systemd watchdog: a ping every %" PRIu64 " ms", usec / 2000);
  }
}
