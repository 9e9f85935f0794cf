/*
 * rpc_tcp.c — rpc conns over TCP (rpc.h: rpc_listen_tcp,
 * rpc_conn_connect_tcp): numeric IPv4 and IPv6 addresses, TCP_NODELAY and
 * keepalive on every conn, and the handshake of rpc_auth.c driven from the
 * event loop.
 *
 * Invariants:
 *   - a TCP conn is not ready until its handshake has succeeded: until then
 *     every frame received goes to rpci_auth_frame (a non-handshake frame
 *     fails it without its body being unpacked), bodies are limited to
 *     RPC_AUTH_MAX_BODY, and nothing but handshake frames is written (what
 *     the user sends waits in the pending queue);
 *   - the handshake has a deadline (ops.auth_ms for an accepted conn, the
 *     caller's timeout for a dialled one, which covers the connect too);
 *   - a listener holds at most ops.max_handshakes accepted conns that are
 *     not yet authenticated (l->handshakes counts those with hs_counted,
 *     uncounted when the handshake succeeds or the conn starts closing);
 *     one more accepted drops the one that has waited longest;
 *   - once it has succeeded, every frame both ways carries a tag under
 *     the conn's session keys (rpc_tag.c), from the frame after the last
 *     handshake frame on: rpci_conn_start_session, before anything the
 *     user queued is written;
 *   - an accepted conn that fails it gets one RPC_LOG_REFUSE line naming
 *     the peer's address and is closed without reaching on_accept or
 *     on_close; a dialled conn that fails it reports through on_close.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "rpc/rpc_int.h"

static int parse_addr(const char *host, int port, struct sockaddr_storage *ss)
{
  if (host == NULL || port < 0 || port > 65535)
    return -EINVAL;
  memset(ss, 0, sizeof(*ss));
  if (strchr(host, ':') != NULL)
    return uv_ip6_addr(host, port, (struct sockaddr_in6 *)ss) == 0 ? PT_OK
                                                                  : -EINVAL;
  return uv_ip4_addr(host, port, (struct sockaddr_in *)ss) == 0 ? PT_OK
                                                               : -EINVAL;
}

/* "1.2.3.4:5" or "[::1]:5". */
static void addr_name(const struct sockaddr_storage *ss, char *out, size_t cap)
{
  char ip[INET6_ADDRSTRLEN] = "?";

  if (ss->ss_family == AF_INET6) {
    const struct sockaddr_in6 *a = (const struct sockaddr_in6 *)ss;
    uv_ip6_name(a, ip, sizeof(ip));
    snprintf(out, cap, "[%s]:%u", ip, (unsigned)ntohs(a->sin6_port));
  } else if (ss->ss_family == AF_INET) {
    const struct sockaddr_in *a = (const struct sockaddr_in *)ss;
    uv_ip4_name(a, ip, sizeof(ip));
    snprintf(out, cap, "%s:%u", ip, (unsigned)ntohs(a->sin_port));
  } else {
    snprintf(out, cap, "an unknown address");
  }
}

static bool auth_ok(const struct rpc_auth *auth)
{
  return auth != NULL &&
         memchr(auth->node_id, '\0', sizeof(auth->node_id)) != NULL;
}

/* The arguments of both a dial and a listener: auth whole, host:port
 * numeric (OUT: *ss). PT_OK or -EINVAL. */
static int tcp_args(const struct rpc_auth *auth, const char *host, int port,
                    struct sockaddr_storage *ss)
{
  return auth_ok(auth) ? parse_addr(host, port, ss) : -EINVAL;
}

/* TCP_NODELAY, keepalive, and the peer's name for log lines. */
static void tcp_setup(struct rpc_conn *c)
{
  struct sockaddr_storage ss;
  int len = sizeof(ss);

  uv_tcp_nodelay(&c->io.tcp, 1);
  uv_tcp_keepalive(&c->io.tcp, 1, RPC_TCP_KEEPALIVE_S);
  uv_os_fd_t fd;
  if (uv_fileno(&c->io.handle, &fd) == 0) {
    unsigned int ut = RPC_TCP_USER_TIMEOUT_MS;
    (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
  }
  if (uv_tcp_getpeername(&c->io.tcp, (struct sockaddr *)&ss, &len) == 0)
    addr_name(&ss, c->peer_name, sizeof(c->peer_name));
}

static int hs_start(struct rpc_conn *c, const struct rpc_auth *auth,
                    bool dialler, uint32_t deadline_ms)
{
  c->hs = malloc(sizeof(*c->hs));
  if (c->hs == NULL)
    return -ENOMEM;
  int rc = rpc_handshake_init(c->hs, auth, dialler);
  if (rc != PT_OK) {
    free(c->hs);
    c->hs = NULL;
    return rc;
  }
  c->ready_by_ms = uv_now(c->io.handle.loop) + deadline_ms;
  rpci_timer_arm(c);
  return PT_OK;
}

/* Writes one handshake frame now (the conn is connected, not ready). */
static int hs_send(struct rpc_conn *c, uint32_t type,
                   const ProtobufCMessage *msg)
{
  struct rpci_wreq *w;
  int rc = rpci_wreq_new(type, 0, msg, &w);

  if (rc != PT_OK) {
    rpc_conn_close(c, rc);
    return rc;
  }
  rc = rpci_write(c, w);
  if (rc < 0)
    free(w);
  return rc;
}

/* What an acceptor's peer said it is in its HELLO (unproven), for the
 * refusal line: "" before it. Printable ASCII only, cut at 64 bytes. */
static void said_who(const struct rpc_handshake *hs, char *out, size_t cap)
{
  char id[65];

  out[0] = '\0';
  if (hs == NULL || !rpc_handshake_has_hello(hs))
    return;
  rpci_printable(hs->peer_node, id, sizeof(id));
  snprintf(out, cap, " (it said role %u, node id '%s')",
           (unsigned)hs->peer_role, id);
}

void rpci_auth_fail(struct rpc_conn *c, int err, const char *why)
{
  char who[128];

  if (c->closing)
    return;
  if (!c->dialled) {
    /* A dialler without our key finds our challenge's MAC wrong and goes
     * away without a proof: all we see is it stopping there. */
    bool after_challenge = c->hs != NULL && err != -EACCES &&
                           rpc_handshake_is_waiting_proof(c->hs);
    said_who(c->hs, who, sizeof(who));
    rpci_log(RPC_LOG_REFUSE, RPC_LOG_WARN,
             "rpc: refusing connection from %s%s%s%s: authentication failed: "
             "%s%s (%s)", c->peer_name, c->listener != NULL ? " on " : "",
             c->listener != NULL ? c->listener->name : "", who, why,
             after_challenge ? ", after our challenge and without its proof, "
                               "as a peer without the cluster key does"
                             : "",
             pt_strerror(err));
  }
  rpc_conn_close(c, err);
}

void rpci_hs_uncount(struct rpc_conn *c)
{
  if (!c->hs_counted)
    return;
  c->hs_counted = false;
  if (c->listener != NULL)
    c->listener->handshakes--;
}

int rpci_auth_frame(struct rpc_conn *c, const struct rpc_hdr *h,
                    const uint8_t *body)
{
  ProtobufCMessage *in;
  const ProtobufCMessage *out;
  uint32_t out_type;
  int rc;

  if (h->type != RPC_AUTH_HELLO && h->type != RPC_AUTH_CHALLENGE &&
      h->type != RPC_AUTH_PROOF) {
    /* Not unpacked: nothing but the handshake is parsed before it. */
    rpci_auth_fail(c, PT_EPROTO, c->dialled ? "no challenge"
                                            : "a frame before the handshake");
    return RPCI_FRAME_STOP;
  }
  rc = rpc_body_unpack(h->type, body, h->length, &in);
  if (rc == PT_OK && h->type == RPC_AUTH_HELLO &&
      ((const Pt__AuthHello *)in)->version != RPC_AUTH_VERSION) {
    char why[192];
    snprintf(why, sizeof(why), "it speaks handshake version %u, this side "
             "%u (from version 2 on every frame after the handshake carries "
             "an authentication tag): run the same pt on both ends",
             (unsigned)((const Pt__AuthHello *)in)->version, RPC_AUTH_VERSION);
    protobuf_c_message_free_unpacked(in, NULL);
    rpci_auth_fail(c, PT_EPROTO, why);
    return RPCI_FRAME_STOP;
  }
  if (rc == PT_OK) {
    rc = rpc_handshake_next(c->hs, h->type, in, &out_type, &out);
    protobuf_c_message_free_unpacked(in, NULL);
  }
  if (rc < 0) {
    rpci_auth_fail(c, rc, rc == -EACCES ? "wrong key or replayed handshake"
                                        : "malformed handshake");
    return RPCI_FRAME_STOP;
  }
  if (out != NULL && hs_send(c, out_type, out) < 0)
    return RPCI_FRAME_STOP;
  if (rc != RPC_HANDSHAKE_DONE)
    return PT_OK;

  rpci_hs_uncount(c);
  c->peer_role = c->hs->peer_role;
  memcpy(c->peer_node, c->hs->peer_node, sizeof(c->peer_node));
  /* From the next frame on, both ways: tags under this conn's keys. */
  rpci_conn_start_session(c);
  rpc_handshake_release(c->hs);
  free(c->hs);
  c->hs = NULL;
  if (c->dialled)
    rpci_conn_ready(c);
  else if (c->listener == NULL || c->listener->closing)
    rpc_conn_close(c, -ECONNABORTED); /* nobody accepts any more */
  else
    rpci_conn_accepted(c->listener, c);
  return c->closing ? RPCI_FRAME_STOP : PT_OK;
}

/* ---- dialling ---------------------------------------------------------------- */

static void connect_cb(uv_connect_t *req, int status)
{
  struct rpc_conn *c = req->data;
  const ProtobufCMessage *out;
  uint32_t out_type;

  if (!rpci_connected(c, status))
    return;
  tcp_setup(c);
  if (rpci_read_start(c) < 0)
    return;
  int rc = rpc_handshake_next(c->hs, 0, NULL, &out_type, &out);
  if (rc < 0) {
    rpc_conn_close(c, rc);
    return;
  }
  hs_send(c, out_type, out);
}

int rpc_conn_connect_tcp(struct uv_loop_s *loop, const char *host, int port,
                         const struct rpc_conn_ops *ops,
                         const struct rpc_auth *auth, uint32_t timeout_ms,
                         void *data, struct rpc_conn **out)
{
  struct sockaddr_storage ss;
  int rc;

  *out = NULL;
  rc = tcp_args(auth, host, port, &ss);
  if (rc < 0)
    return rc;
  struct rpc_conn *c = rpci_conn_new(loop, true, ops, data);
  if (c == NULL)
    return -ENOMEM;
  c->dialled = true;
  addr_name(&ss, c->peer_name, sizeof(c->peer_name));
  rc = hs_start(c, auth, true, timeout_ms != 0 ? timeout_ms : RPC_AUTH_TIMEOUT_MS);
  if (rc == PT_OK) {
    c->connect_req.data = c;
    rc = uv_tcp_connect(&c->connect_req, &c->io.tcp, (struct sockaddr *)&ss,
                        connect_cb);
  }
  if (rc < 0) {
    rpc_conn_close(c, rc); /* not announced: no on_close */
    return rc;
  }
  c->announced = true;
  *out = c;
  return PT_OK;
}

/* ---- listener -------------------------------------------------------------- */

/* The listener holds max_handshakes conns that have not authenticated: the
 * one that has waited longest goes, so that strangers who connect and say
 * nothing cannot keep a peer with the key out until their deadline (a
 * handshake with the key takes a round trip; a flood would have to fill
 * every slot within it to push that one out). */
static void drop_oldest_handshake(struct rpc_listener *l,
                                  const struct rpc_conn *incoming)
{
  struct rpc_conn *oldest = NULL;

  for (struct rpc_conn *c = l->conns; c != NULL; c = c->next)
    if (c->hs_counted && !c->closing &&
        (oldest == NULL || c->ready_by_ms <= oldest->ready_by_ms))
      oldest = c;
  if (oldest == NULL)
    return;
  rpci_log(RPC_LOG_REFUSE, RPC_LOG_WARN,
           "rpc: dropping the connection from %s on %s: the oldest of %u "
           "handshakes in progress, for one from %s",
           oldest->peer_name, l->name, l->handshakes, incoming->peer_name);
  rpc_conn_close(oldest, -EBUSY); /* never announced: no on_close */
}

static void connection_cb(uv_stream_t *server, int status)
{
  struct rpc_listener *l = server->data;
  struct rpc_conn *c = rpci_accept(server, status, true, l->name);
  int rc;

  if (c == NULL)
    return;
  tcp_setup(c);
  if (l->handshakes >= l->ops.max_handshakes)
    drop_oldest_handshake(l, c);
  rpci_conn_attach(l, c);
  c->hs_counted = true;
  l->handshakes++;
  rc = hs_start(c, l->auth, false, c->ops.auth_ms);
  if (rc < 0) {
    rpci_log(RPC_LOG_ACCEPT, RPC_LOG_ERR, "rpc: cannot accept on %s: %s",
             l->name, pt_strerror(rc));
    rpc_conn_close(c, rc);
    return;
  }
  rpci_read_start(c);
}

int rpc_listen_tcp(struct uv_loop_s *loop, const char *host, int port,
                   const struct rpc_conn_ops *ops, const struct rpc_auth *auth,
                   rpc_accept_cb on_accept, void *data,
                   struct rpc_listener **out)
{
  struct sockaddr_storage ss;
  int len = sizeof(ss);
  int rc;

  *out = NULL;
  rc = tcp_args(auth, host, port, &ss);
  if (rc < 0)
    return rc;
  struct rpc_listener *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  l->auth = malloc(sizeof(*l->auth));
  if (l->auth == NULL) {
    free(l);
    return -ENOMEM;
  }
  *l->auth = *auth;
  rpci_ops_fill(&l->ops, ops);
  l->on_accept = on_accept;
  l->data = data;
  rc = uv_tcp_init(loop, &l->io.tcp);
  if (rc < 0) {
    free(l->auth);
    free(l);
    return rc;
  }
  l->io.handle.data = l;
  rc = uv_tcp_bind(&l->io.tcp, (struct sockaddr *)&ss, 0);
  if (rc == 0)
    rc = uv_listen(&l->io.stream, RPCI_LISTEN_BACKLOG, connection_cb);
  if (rc == 0)
    rc = uv_tcp_getsockname(&l->io.tcp, (struct sockaddr *)&ss, &len);
  if (rc < 0) {
    uv_close(&l->io.handle, rpci_listener_free_cb);
    return rc;
  }
  l->port = ntohs(ss.ss_family == AF_INET6
                      ? ((struct sockaddr_in6 *)&ss)->sin6_port
                      : ((struct sockaddr_in *)&ss)->sin_port);
  addr_name(&ss, l->name, sizeof(l->name));
  *out = l;
  return PT_OK;
}
