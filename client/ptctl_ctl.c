/*
 * ptctl_ctl.c — the cluster's `ptd controller` over TCP, authenticated
 * with the cluster key as PEER_ROLE_CTL: one connection per command, one
 * request, one reply, everything within --timeout. And `ptctl nodes`.
 */
#include <errno.h>
#include <inttypes.h>
#include <string.h>
#include <unistd.h>

#include "client/ptctl.h"
#include "pt.h"
#include "rpc/rpc.h"

static int left_ms(uint64_t deadline)
{
  uint64_t now = rpc_now_ms();

  return now < deadline ? (int)(deadline - now) : 1;
}

int ptctl_ctl_call(const struct ptctl_opts *o, uint32_t type,
                   const ProtobufCMessage *req, uint32_t reply_type,
                   ProtobufCMessage **reply)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)o->timeout_ms;
  struct rpc_auth self = {.role = PT__PEER_ROLE__PEER_ROLE_CTL};
  const char *addr = o->controller;
  char host[64], err[512];
  uint32_t peer_role = 0;
  int port, fd, rc, code;

  if (rpc_addr_parse(addr, 1, host, sizeof(host), &port, err,
                     sizeof(err)) != PT_OK) {
    fprintf(stderr, "ptctl: --controller '%s': %s\n", addr, err);
    return PTCTL_EXIT_USAGE;
  }
  rc = rpc_key_load(o->key, self.key, err, sizeof(err));
  if (rc != PT_OK) {
    fprintf(stderr, "ptctl: %s\n", err);
    return PTCTL_EXIT_FAILED;
  }
  snprintf(self.node_id, sizeof(self.node_id), "ptctl");
  rc = rpc_sock_connect_tcp(host, port, o->timeout_ms, &fd);
  if (rc != PT_OK) {
    fprintf(stderr, "ptctl: cannot reach ptd controller at %s: %s%s\n", addr,
            rc == -ETIMEDOUT ? "timed out" : pt_strerror(rc),
            rc == -ECONNREFUSED ? " (is ptd controller running?)" : "");
    code = rc == -EINVAL ? PTCTL_EXIT_USAGE : PTCTL_EXIT_UNREACHABLE;
    goto out_wipe;
  }
  struct rpc_sock_session ss;
  rc = rpc_sock_session_handshake(&ss, fd, &self, left_ms(deadline),
                                  &peer_role, NULL);
  if (rc == PT_OK && peer_role != PT__PEER_ROLE__PEER_ROLE_CONTROLLER)
    rc = PT_EPROTO;
  if (rc != PT_OK) {
    /* The controller closes a connection whose key is wrong: a reset or
     * EOF in the middle of the handshake is a refusal; silence is not. */
    bool refused = rc == -EACCES || rc == -ECONNRESET || rc == -EPIPE;
    fprintf(stderr, "ptctl: cannot authenticate to ptd controller at %s: "
                    "%s\n",
            addr,
            refused ? "refused (is --key the cluster's key?)"
            : rc == PT_EPROTO && peer_role != 0
                ? "the peer is not a controller"
            : rc == -ETIMEDOUT ? "timed out"
                               : pt_strerror(rc));
    rpc_sock_session_release(&ss);
    close(fd);
    code = refused || rc == PT_EPROTO ? PTCTL_EXIT_FAILED
                                      : PTCTL_EXIT_UNREACHABLE;
    goto out_wipe;
  }
  rc = rpc_sock_session_call(&ss, type, req, reply_type, left_ms(deadline),
                             reply);
  rpc_sock_session_release(&ss);
  close(fd);
  code = PTCTL_EXIT_OK;
  if (rc == -ECONNRESET || rc == -EPIPE) {
    /* Authenticated, then closed without an answer: the controller went
     * away, or it does not know the request (one older than ptctl). */
    fprintf(stderr, "ptctl: ptd controller at %s closed the connection "
                    "without answering %s (see its log: a controller older "
                    "than ptctl closes on a request it does not know)\n",
            addr, rpc_type_name(type));
    code = PTCTL_EXIT_UNREACHABLE;
  } else if (rc != PT_OK) {
    fprintf(stderr, "ptctl: no answer from ptd controller at %s: %s\n", addr,
            rc == -ETIMEDOUT ? "timed out"
            : rc == -EACCES  ? "a frame failed its authentication tag "
                               "(altered on the way?)"
                             : pt_strerror(rc));
    code = rc == PT_EPROTO || rc == PT_ETOOBIG || rc == -EACCES
               ? PTCTL_EXIT_FAILED
                                               : PTCTL_EXIT_UNREACHABLE;
  }
out_wipe:
  memset(self.key, 0, sizeof(self.key));
  return code;
}

int ptctl_ctl_refused(const struct ptctl_opts *o, const char *what,
                      int32_t status, const char *message)
{
  if (message != NULL && message[0] != '\0')
    fprintf(stderr, "ptctl: ptd controller at %s %s: %s (%s: %s)\n",
            o->controller, what, message, pt_err_name(status),
            pt_strerror(status));
  else
    fprintf(stderr, "ptctl: ptd controller at %s %s: %s (%s)\n",
            o->controller, what, pt_strerror(status), pt_err_name(status));
  return PTCTL_EXIT_FAILED;
}

int ptctl_ctl_flush(int code)
{
  if (fflush(stdout) != 0) {
    fprintf(stderr, "ptctl: cannot write the output: %s\n", strerror(errno));
    return PTCTL_EXIT_FAILED;
  }
  return code;
}

/* ---- nodes ---- */

static void nodes_json(FILE *f, const char *addr, const Pt__NodesReply *m)
{
  fputs("{\"controller\":", f);
  ptctl_out_json_str(f, addr);
  fputs(",\"nodes\":[", f);
  for (size_t i = 0; i < m->n_nodes; i++) {
    const Pt__NodeInfo *n = m->nodes[i];
    fputs(i > 0 ? ",{\"node\":" : "{\"node\":", f);
    ptctl_out_json_str(f, n->node_id);
    fputs(",\"state\":", f);
    ptctl_out_json_str(f, n->state);
    fputs(",\"advertise\":", f);
    ptctl_out_json_str(f, n->advertise);
    fprintf(f, ",\"capacity\":%" PRIu32 ",\"failure_domain\":", n->capacity);
    ptctl_out_json_str(f, n->failure_domain);
    fputs(",\"heartbeat_age_ms\":", f);
    ptctl_out_json_u64(f, n->has_heartbeat_age_ms, n->heartbeat_age_ms);
    fputs(",\"job\":", f);
    ptctl_out_json_str(f, n->job);
    fputc('}', f);
  }
  fputs("]}\n", f);
}

static void nodes_table(FILE *f, const Pt__NodesReply *m)
{
  struct ptctl_table t;
  static const char *const head[] = {"NODE",   "STATE",     "ADVERTISE",
                                     "CAPACITY", "DOMAIN", "HEARTBEAT",
                                     "JOB"};

  if (m->n_nodes == 0) {
    fputs("no nodes registered\n", f);
    return;
  }
  ptctl_table_init(&t, 7);
  ptctl_table_row(&t, head);
  for (size_t i = 0; i < m->n_nodes; i++) {
    const Pt__NodeInfo *n = m->nodes[i];
    char cap[16], age[32];
    snprintf(cap, sizeof(cap), "%" PRIu32, n->capacity);
    const char *row[] = {
        n->node_id, n->state, n->advertise, cap, n->failure_domain,
        n->has_heartbeat_age_ms
            ? ptctl_out_age(age, sizeof(age), n->heartbeat_age_ms)
            : NULL,
        n->job};
    ptctl_table_row(&t, row);
  }
  ptctl_table_print(&t, f);
}

int ptctl_ctl_nodes(const struct ptctl_opts *o, int argc, char **argv)
{
  Pt__NodesQuery q = PT__NODES_QUERY__INIT;
  ProtobufCMessage *msg = NULL;

  if (argc > 1) {
    fprintf(stderr, "ptctl: nodes: unexpected argument '%s'\n", argv[1]);
    return PTCTL_EXIT_USAGE;
  }
  int code = ptctl_ctl_call(o, RPC_NODES_QUERY, &q.base, RPC_NODES_REPLY, &msg);
  if (code != PTCTL_EXIT_OK)
    return code;
  const Pt__NodesReply *m = (const Pt__NodesReply *)msg;
  if (m->status != 0)
    code = ptctl_ctl_refused(o, "refused to list the nodes", m->status,
                             m->message);
  else if (o->json)
    nodes_json(stdout, o->controller, m);
  else
    nodes_table(stdout, m);
  protobuf_c_message_free_unpacked(msg, NULL);
  return ptctl_ctl_flush(code);
}
