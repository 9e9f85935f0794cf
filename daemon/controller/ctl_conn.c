/*
 * ctl_conn.c — the controller's connections, after the TCP handshake has
 * proved that the peer holds the cluster key and said its role.
 *
 *   PEER_ROLE_NODE  NODE_REGISTER first (its node id the handshake's),
 *                   answered with NODE_REGISTER_REPLY (heartbeat-ms,
 *                   dead-after-ms); then HEARTBEAT frames, not answered.
 *                   JOB_PART_STATE, STEP_SEALED and JOB_VOTE go to
 *                   ctl_job_conn.c.
 *   PEER_ROLE_CTL   NODES_QUERY, answered with NODES_REPLY; JOB_START,
 *                   JOB_STOP, JOB_RESTORE and JOBS_QUERY (ctl_job_conn.c);
 *                   FAULT (ctl_fault.c, which a node's FAULT_REPLY also
 *                   goes to).
 *
 * Anything else (another role, a frame outside the role, a second
 * NODE_REGISTER, a registration that ctl_members_register_check refuses, a node id
 * alive on another connection) closes the connection with one log line
 * naming the peer; a refused registration is answered first, so the node
 * can say why. A connection that has not registered within
 * CTL_REGISTER_MS of its last byte is closed (idle deadline), and a ptctl
 * conn idle for CTL_CTL_IDLE_MS, each with a line; a registered node's
 * silence is judged by the membership timer instead.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"

#define CTL_REGISTER_MS 10000u /* a node conn's deadline to register */
#define CTL_CTL_IDLE_MS 60000u /* a ptctl conn's idle deadline */
#define CTL_MAX_BODY 65536u    /* what nodes and ptctl send is small */

struct ctl_peer {
  struct controller *ctl;
  struct rpc_conn *c;
  uint32_t role;
  bool registered;
  size_t node;  /* registered: its index in ctl->members.nodes */
  bool refused; /* closed by refuse(): nothing more is read */
  struct ctl_peer *next, **pprev;
};

static const char *role_name(uint32_t role)
{
  switch (role) {
  case PT__PEER_ROLE__PEER_ROLE_NODE:
    return "node";
  case PT__PEER_ROLE__PEER_ROLE_CONTROLLER:
    return "controller";
  case PT__PEER_ROLE__PEER_ROLE_CTL:
    return "ctl";
  case PT__PEER_ROLE__PEER_ROLE_SMP:
    return "smp";
  default:
    return "none";
  }
}

void ctl_conn_log_change(void *arg, const struct ctl_node *n,
                    enum ctl_node_state from, const char *why)
{
  struct controller *ctl = arg;
  log_notice("node '%s' %s -> %s: %s", LOG_ESC(n->id),
             from == 0 ? "new" : ctl_members_node_state_name(from),
             ctl_members_node_state_name(n->state), why);
  if (ctl != NULL && !ctl->stopping && n->state != CTL_NODE_ALIVE)
    ctl_jobs_node_down(&ctl->jobs, (size_t)(n - ctl->members.nodes),
                       rpc_now_ms());
}

static void peer_unlink(struct ctl_peer *p)
{
  if (p->pprev != NULL) {
    *p->pprev = p->next;
    if (p->next != NULL)
      p->next->pprev = p->pprev;
    p->pprev = NULL;
    p->next = NULL;
  }
}

int ctl_conn_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  struct controller *ctl = rpc_listener_data(l);
  uint32_t role = rpc_conn_peer_role(c);

  if (ctl->stopping)
    return -ESHUTDOWN;
  if (role != PT__PEER_ROLE__PEER_ROLE_NODE &&
      role != PT__PEER_ROLE__PEER_ROLE_CTL) {
    log_warn("refusing %s: role %" PRIu32 " (%s) has nothing to do on the "
                "controller's port (nodes and ptctl only)",
                rpc_conn_peer_name(c), role, role_name(role));
    return PT_EPROTO;
  }
  struct ctl_peer *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  p->ctl = ctl;
  p->c = c;
  p->role = role;
  p->next = ctl->peers;
  if (p->next != NULL)
    p->next->pprev = &p->next;
  p->pprev = &ctl->peers;
  ctl->peers = p;
  rpc_conn_set_data(c, p);
  rpc_conn_set_idle(c, role == PT__PEER_ROLE__PEER_ROLE_NODE ? CTL_REGISTER_MS
                                                             : CTL_CTL_IDLE_MS);
  log_debug("accepted %s from %s ('%s')", role_name(role),
            rpc_conn_peer_name(c), LOG_ESC(rpc_conn_peer_node(c)));
  return PT_OK;
}

/* Not rate-limited: only a peer that holds the cluster key gets this far
 * (strangers are refused, rate-limited, by rpc/), and an operator must see
 * each refusal of one of the cluster's own daemons. */
static int refuse(struct ctl_peer *p, const char *what)
{
  log_warn("closing %s %s ('%s'): %s", role_name(p->role),
           rpc_conn_peer_name(p->c), LOG_ESC(rpc_conn_peer_node(p->c)), what);
  /* Closed here rather than by returning an error, so the line above is
   * the only one. A reply sent just before still reaches the peer: uv_write
   * hands a small frame to the kernel at once. */
  p->refused = true;
  rpc_conn_close(p->c, PT_EPROTO);
  return PT_OK;
}

static void send_register_reply(struct ctl_peer *p, uint64_t req, int status,
                                const char *message)
{
  Pt__NodeRegisterReply r = PT__NODE_REGISTER_REPLY__INIT;

  r.status = status;
  r.message = (char *)message;
  if (status == PT_OK) {
    r.has_heartbeat_ms = true;
    r.heartbeat_ms = p->ctl->cfg.t.heartbeat_ms;
    r.has_dead_after_ms = true;
    r.dead_after_ms = p->ctl->cfg.t.dead_after_ms;
  }
  (void)rpc_conn_send(p->c, RPC_NODE_REGISTER_REPLY, req, &r.base);
}

static int on_register(struct ctl_peer *p, const struct rpc_hdr *h,
                       const Pt__NodeRegister *m)
{
  struct controller *ctl = p->ctl;
  struct ctl_register r = {
      .node_id = m->node_id,
      .handshake_id = rpc_conn_peer_node(p->c),
      .advertise = m->advertise,
      .failure_domain = m->failure_domain,
      .capacity = m->capacity,
      .incarnation = m->incarnation.data,
      .incarnation_len = m->incarnation.len,
      .identity = m->has_identity ? m->identity.data : NULL,
      .identity_len = m->has_identity ? m->identity.len : 0,
      .replace = m->has_replace && m->replace,
  };
  enum ctl_reg_kind kind;
  void *old = NULL;
  char err[1024];
  bool bind = false;

  /* A node id bound to a new identity is journaled before the node is
   * taken: a controller restarted at any point still knows it. */
  int rc = ctl_members_register_prepare(&ctl->members, &r, p->c, &bind, err,
                                        sizeof(err));
  if (rc == PT_OK && bind) {
    rc = ctl_journal_append_node(ctl->journal, r.node_id, r.identity,
                                 r.identity_len);
    if (rc != PT_OK)
      snprintf(err, sizeof(err),
               "cannot journal the identity of node '%s': %s",
               LOG_ESC(r.node_id), pt_strerror(rc));
    else
      ctl->compact_due = true;
  }
  if (rc == PT_OK)
    rc = ctl_members_register(&ctl->members, &r, p->c, rpc_now_ms(), &kind,
                              &old, err, sizeof(err));
  if (rc != PT_OK) {
    /* Answered first, so the node can say why. */
    send_register_reply(p, h->request_id, rc, err);
    return refuse(p, err);
  }
  p->registered = true;
  rpc_conn_set_idle(p->c, 0);
  if (old != NULL) {
    struct ctl_peer *op = rpc_conn_data(old);
    if (op != NULL)
      op->registered = false;
    log_info("node '%s': closing its previous connection", LOG_ESC(r.node_id));
    rpc_conn_close(old, -ECONNRESET);
  }
  send_register_reply(p, h->request_id, PT_OK, NULL);
  struct ctl_node *n = ctl_members_find(&ctl->members, r.node_id);
  p->node = (size_t)(n - ctl->members.nodes);
  /* Its part, if it has one, is told again where the job stands. */
  ctl_jobs_node_registered(&ctl->jobs, p->node, rpc_now_ms());
  controller_members_timer_run(ctl);
  return PT_OK;
}

static int on_nodes_query(struct ctl_peer *p, const struct rpc_hdr *h)
{
  struct ctl_members *m = &p->ctl->members;
  Pt__NodesReply r = PT__NODES_REPLY__INIT;
  Pt__NodeInfo *infos = NULL, **ptrs = NULL;
  uint64_t now = rpc_now_ms();

  if (m->n > 0) {
    infos = calloc(m->n, sizeof(*infos));
    ptrs = calloc(m->n, sizeof(*ptrs));
    if (infos == NULL || ptrs == NULL) {
      free(infos);
      free(ptrs);
      r.status = -ENOMEM;
      r.message = "out of memory";
      (void)rpc_conn_send(p->c, RPC_NODES_REPLY, h->request_id, &r.base);
      return PT_OK;
    }
  }
  for (size_t i = 0; i < m->n; i++) {
    struct ctl_node *n = &m->nodes[i];
    Pt__NodeInfo *ni = &infos[i];
    pt__node_info__init(ni);
    ni->node_id = n->id;
    ni->advertise = n->advertise;
    ni->capacity = n->capacity;
    ni->failure_domain = n->failure_domain[0] != '\0' ? n->failure_domain
                                                      : NULL;
    ni->state = (char *)ctl_members_node_state_name(n->state);
    ni->has_heartbeat_age_ms = true;
    ni->heartbeat_age_ms = now > n->last_heard_ms ? now - n->last_heard_ms : 0;
    ni->job = n->job[0] != '\0' ? n->job : NULL;
    ptrs[i] = ni;
  }
  r.status = PT_OK;
  r.has_heartbeat_ms = true;
  r.heartbeat_ms = p->ctl->cfg.t.heartbeat_ms;
  r.has_dead_after_ms = true;
  r.dead_after_ms = p->ctl->cfg.t.dead_after_ms;
  r.n_nodes = m->n;
  r.nodes = ptrs;
  int rc = rpc_conn_send(p->c, RPC_NODES_REPLY, h->request_id, &r.base);
  free(infos);
  free(ptrs);
  if (rc != PT_OK && rc != -EPIPE)
    log_warn("cannot answer ptctl %s: %s", rpc_conn_peer_name(p->c),
             pt_strerror(rc));
  return PT_OK;
}

static int on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                  ProtobufCMessage *msg)
{
  struct ctl_peer *p = rpc_conn_data(c);
  char what[160];

  if (p == NULL)
    return PT_EPROTO;
  if (p->refused)
    return PT_OK;
  switch (p->role) {
  case PT__PEER_ROLE__PEER_ROLE_NODE:
    if (!p->registered) {
      if (h->type != RPC_NODE_REGISTER) {
        snprintf(what, sizeof(what),
                 "sent %s before NODE_REGISTER", rpc_type_name(h->type));
        return refuse(p, what);
      }
      return on_register(p, h, (const Pt__NodeRegister *)msg);
    }
    if (h->type == RPC_HEARTBEAT) {
      if (ctl_members_heartbeat_at(&p->ctl->members, p->node, c,
                                   rpc_now_ms()) != PT_OK)
        return refuse(p, "heartbeat from a node that is no longer "
                         "registered on this connection");
      return PT_OK;
    }
    if (h->type == RPC_JOB_PART_STATE || h->type == RPC_STEP_SEALED ||
        h->type == RPC_JOB_VOTE || h->type == RPC_STEP_PERSISTED ||
        h->type == RPC_DISK_PROBE_REPLY) {
      if (ctl_job_conn_on_node(p->ctl, c, p->node, h, msg, what,
                               sizeof(what)) != PT_OK)
        return refuse(p, what);
      return PT_OK;
    }
    if (h->type == RPC_FAULT_REPLY)
      return ctl_fault_on_node(p->ctl, p->node, h,
                               (const Pt__FaultReply *)msg);
    snprintf(what, sizeof(what), "%s is not a node's frame here%s",
             rpc_type_name(h->type),
             h->type == RPC_NODE_REGISTER ? " (already registered)" : "");
    return refuse(p, what);
  case PT__PEER_ROLE__PEER_ROLE_CTL:
    if (h->type == RPC_NODES_QUERY)
      return on_nodes_query(p, h);
    if (h->type == RPC_JOB_START || h->type == RPC_JOB_STOP ||
        h->type == RPC_JOB_RESTORE || h->type == RPC_JOBS_QUERY)
      return ctl_job_conn_on_ctl(p->ctl, c, h, msg);
    if (h->type == RPC_FAULT)
      return ctl_fault_on_ctl(p->ctl, c, h, (const Pt__Fault *)msg);
    snprintf(what, sizeof(what), "%s is not a ptctl request",
             rpc_type_name(h->type));
    return refuse(p, what);
  default:
    return PT_EPROTO; /* never: ctl_conn_accept admits these two roles */
  }
}

static void on_close(struct rpc_conn *c, int err)
{
  struct ctl_peer *p = rpc_conn_data(c);

  if (p == NULL)
    return;
  /* At stop the controller closes every conn itself: that says nothing
   * about the nodes. */
  if (p->registered && !p->ctl->stopping) {
    ctl_members_lost(&p->ctl->members, c, rpc_now_ms());
    log_debug("node '%s' %s: connection closed: %s",
              LOG_ESC(rpc_conn_peer_node(c)), rpc_conn_peer_name(c),
              err == 0 ? "by the peer" : pt_strerror(err));
    controller_members_timer_run(p->ctl);
  }
  ctl_fault_conn_closed(p->ctl, c, p->registered, p->node);
  peer_unlink(p);
  rpc_conn_set_data(c, NULL);
  free(p);
}

/* The idle deadline passed (a registered node has none): one line, then
 * rpc/ closes the conn. */
static int on_idle(struct rpc_conn *c)
{
  struct ctl_peer *p = rpc_conn_data(c);

  if (p != NULL && !p->refused) {
    if (p->role == PT__PEER_ROLE__PEER_ROLE_NODE && !p->registered)
      log_warn("closing node %s ('%s'): it did not register within %u ms "
               "of its last byte", rpc_conn_peer_name(c),
               LOG_ESC(rpc_conn_peer_node(c)), CTL_REGISTER_MS);
    else
      log_info("closing %s %s ('%s'): idle for %u ms", role_name(p->role),
               rpc_conn_peer_name(c), LOG_ESC(rpc_conn_peer_node(c)),
               CTL_CTL_IDLE_MS);
  }
  return -ETIMEDOUT;
}

const struct rpc_conn_ops ctl_conn_ops = {
    .on_msg = on_msg,
    .on_close = on_close,
    .on_idle = on_idle,
    .max_body = CTL_MAX_BODY,
    .idle_ms = CTL_REGISTER_MS,
};

void ctl_conn_close_all(struct controller *ctl)
{
  for (struct ctl_peer *p = ctl->peers; p != NULL; p = p->next)
    rpc_conn_close(p->c, 0);
}
