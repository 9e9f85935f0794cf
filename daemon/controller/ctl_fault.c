/*
 * ctl_fault.c — the controller's part in fault injection (ptctl fault,
 * README "Fault injection"): FAULT requests from ptctl.
 *
 *   kind "controller"  this controller is the target: with --allow-faults
 *                      it answers, then SIGKILLs itself (nothing is
 *                      journaled: what a crash leaves); without, -EPERM.
 *   any other kind     relayed to the node that runs the target (named by
 *                      the request, or the part holding its rank) under a
 *                      request id of the controller's own; the node's
 *                      FAULT_REPLY is relayed back under ptctl's id. The
 *                      node decides whether it allows faults.
 *
 * A relayed request waits in ctl->fault_waits until the node answers or
 * either connection closes (ptctl gives up after its --timeout and closes;
 * a node that dies before answering is told to ptctl as -ECONNRESET).
 * Invariant: every wait names a live ptctl connection and a node index.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"

struct ctl_fault_wait {
  struct ctl_fault_wait *next;
  struct rpc_conn *ptctl;  /* where the answer goes */
  uint64_t ptctl_id;       /* under this request id */
  size_t node;             /* the node asked (index in ctl->members.nodes) */
  uint64_t node_id;        /* the request id the node answers */
};

static void reply(struct rpc_conn *c, uint64_t id, int status,
                  const char *msg)
{
  Pt__FaultReply r = PT__FAULT_REPLY__INIT;

  r.status = status;
  r.message = (char *)msg;
  (void)rpc_conn_send(c, RPC_FAULT_REPLY, id, &r.base);
}

static bool kind_is_node(const char *k)
{
  static const char *const kinds[] = {"trainer",    "smp",       "ptd",
                                      "stop",       "corrupt",   "parity",
                                      "node",       "protecting",
                                      "rebuilding"};
  for (size_t i = 0; i < sizeof(kinds) / sizeof(kinds[0]); i++)
    if (strcmp(k, kinds[i]) == 0)
      return true;
  return false;
}

static void kill_self(struct controller *ctl, struct rpc_conn *c,
                      uint64_t id)
{
  Pt__FaultReply r = PT__FAULT_REPLY__INIT;
  char msg[96];

  if (!ctl->cfg.allow_faults) {
    reply(c, id, -EPERM, "this controller was not started with "
                         "--allow-faults: it refuses to kill itself");
    return;
  }
  snprintf(msg, sizeof(msg), "controller pid %d killed (SIGKILL)",
           (int)getpid());
  r.status = PT_OK;
  r.message = msg;
  r.has_pid = true;
  r.pid = (uint32_t)getpid();
  /* uv_write hands a small frame to the kernel at once when nothing is
   * queued before it, so the answer leaves before the signal. */
  (void)rpc_conn_send(c, RPC_FAULT_REPLY, id, &r.base);
  log_warn("fault injection: killing this controller (SIGKILL), as ptctl "
           "%s asked", rpc_conn_peer_name(c));
  raise(SIGKILL);
}

int ctl_fault_on_ctl(struct controller *ctl, struct rpc_conn *c,
                     const struct rpc_hdr *h, const Pt__Fault *m)
{
  char msg[CTL_JOB_MAX * 4 + RPC_NODE_ID_MAX * 4 + 160];

  if (strcmp(m->kind, "controller") == 0) {
    kill_self(ctl, c, h->request_id);
    return PT_OK;
  }
  if (!kind_is_node(m->kind)) {
    snprintf(msg, sizeof(msg), "no fault kind '%s' (trainer, smp, ptd, "
             "stop, corrupt, parity, node, protecting, rebuilding, "
             "controller)", LOG_ESC(m->kind));
    reply(c, h->request_id, -EINVAL, msg);
    return PT_OK;
  }
  struct ctl_job *j = ctl_jobs_find(&ctl->jobs, m->job);
  if (j == NULL || ctl_jobs_ended(j->state)) {
    snprintf(msg, sizeof(msg), "no live job '%s'", LOG_ESC(m->job));
    reply(c, h->request_id, -ENOENT, msg);
    return PT_OK;
  }
  uint32_t part = UINT32_MAX;
  for (uint32_t p = 0; p < j->nparts; p++) {
    uint32_t first = ctl_jobs_first_rank(j, p);
    bool by_node = m->node != NULL && strcmp(m->node, j->parts[p].node_id) == 0;
    bool by_rank = m->has_rank && m->rank >= first &&
                   m->rank - first < j->spec->ranks_per_node;
    if ((m->node != NULL && by_node && (!m->has_rank || by_rank)) ||
        (m->node == NULL && by_rank)) {
      part = p;
      break;
    }
  }
  if (part == UINT32_MAX) {
    if (m->node == NULL && !m->has_rank)
      snprintf(msg, sizeof(msg), "a fault of kind '%s' needs a node or a "
               "rank of job '%s'", LOG_ESC(m->kind), LOG_ESC(m->job));
    else if (m->node == NULL)
      snprintf(msg, sizeof(msg), "job '%s' has no rank %" PRIu32,
               LOG_ESC(m->job), m->rank);
    else
      snprintf(msg, sizeof(msg), "job '%s' has no part on node '%s'%s",
               LOG_ESC(m->job), LOG_ESC(m->node),
               m->has_rank ? " holding that rank" : "");
    reply(c, h->request_id, -ENOENT, msg);
    return PT_OK;
  }
  const struct ctl_part *pt = &j->parts[part];
  const struct ctl_node *n =
      pt->node < ctl->members.n ? &ctl->members.nodes[pt->node] : NULL;
  if (n == NULL || n->conn == NULL || n->state == CTL_NODE_DEAD) {
    snprintf(msg, sizeof(msg), "node '%s' of job '%s' is not connected",
             LOG_ESC(pt->node_id), LOG_ESC(m->job));
    reply(c, h->request_id, -ENOTCONN, msg);
    return PT_OK;
  }
  struct ctl_fault_wait *w = calloc(1, sizeof(*w));
  if (w == NULL) {
    reply(c, h->request_id, -ENOMEM, "out of memory");
    return PT_OK;
  }
  Pt__Fault f = *m;
  f.node = (char *)pt->node_id;
  w->ptctl = c;
  w->ptctl_id = h->request_id;
  w->node = pt->node;
  w->node_id = ++ctl->req_seq;
  int rc = rpc_conn_send(n->conn, RPC_FAULT, w->node_id, &f.base);
  if (rc != PT_OK) {
    snprintf(msg, sizeof(msg), "cannot send the fault to node '%s': %s",
             LOG_ESC(pt->node_id), pt_strerror(rc));
    reply(c, h->request_id, rc, msg);
    free(w);
    return PT_OK;
  }
  w->next = ctl->fault_waits;
  ctl->fault_waits = w;
  log_notice("fault injection: '%s' of job '%s' relayed to node '%s' for "
             "ptctl %s", LOG_ESC(m->kind), LOG_ESC(m->job),
             LOG_ESC(pt->node_id), rpc_conn_peer_name(c));
  return PT_OK;
}

int ctl_fault_on_node(struct controller *ctl, size_t node,
                      const struct rpc_hdr *h, const Pt__FaultReply *m)
{
  for (struct ctl_fault_wait **pp = &ctl->fault_waits; *pp != NULL;
       pp = &(*pp)->next) {
    struct ctl_fault_wait *w = *pp;
    if (w->node_id != h->request_id || w->node != node)
      continue;
    *pp = w->next;
    (void)rpc_conn_send(w->ptctl, RPC_FAULT_REPLY, w->ptctl_id, &m->base);
    free(w);
    return PT_OK;
  }
  log_debug("a fault reply nobody waits for (request %" PRIu64 "), dropped",
            h->request_id);
  return PT_OK;
}

void ctl_fault_conn_closed(struct controller *ctl, struct rpc_conn *c,
                           bool registered, size_t node)
{
  for (struct ctl_fault_wait **pp = &ctl->fault_waits; *pp != NULL;) {
    struct ctl_fault_wait *w = *pp;
    if (w->ptctl == c) {
      *pp = w->next;
      free(w);
    } else if (registered && w->node == node) {
      /* The node went away before it answered: "ptd" and "stop" faults
       * answer before they act, so this is a node that died otherwise. */
      *pp = w->next;
      if (!ctl->stopping)
        reply(w->ptctl, w->ptctl_id, -ECONNRESET,
              "the node's connection closed before it answered");
      free(w);
    } else {
      pp = &w->next;
    }
  }
}
