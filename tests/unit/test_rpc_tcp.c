/*
 * test_rpc_tcp.c — rpc conns over TCP (rpc_tcp.c) and their handshake and
 * keys (rpc_auth.c). A server loop runs in a thread of the test process;
 * clients are blocking sockets that run the handshake with
 * rpc_sock_session_handshake (tsess.h; or hand-made bytes), or conns
 * dialled from the loop with rpc_conn_connect_tcp. Every port is bound as 0 and read back.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>
#include <arpa/inet.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/unit/tsess.h"
#include "tests/unit/unit.h"

#include "tests/unit/fixture/rpc_tcp_srv.h"


/* ---- TCP conns ---------------------------------------------------------------- */

START_TEST(tcp_serves_authenticated_peers)
{
  srv_setup();
  int fd = authed_client();
  call_ok(fd, 5);
  WAIT_FOR(S.accepted == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_uint_eq(S.recs[0].peer_role, 3);
  ck_assert_str_eq(S.recs[0].peer_node, "cli");
  ck_assert_msg(strncmp(S.recs[0].peer_name, "127.0.0.1:", 10) == 0, "%s",
                S.recs[0].peer_name);
  pthread_mutex_unlock(&S.mu);
  close(fd);
  WAIT_FOR(S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, 0);
  srv_stop();
  ck_assert_int_eq(count_lines("rpc:"), 0); /* nothing to say */
}
END_TEST

/* The accepted conn's socket (this process's, the server runs in a
 * thread): the one TCP socket bound to the server's port that is not the
 * listener. -1 when none. */
static int accepted_fd(void)
{
  for (int fd = 3; fd < 1024; fd++) {
    struct sockaddr_in sa;
    socklen_t sl = sizeof(sa);
    int acc = 0;
    socklen_t al = sizeof(acc);
    if (getsockname(fd, (struct sockaddr *)&sa, &sl) != 0 ||
        sa.sin_family != AF_INET || ntohs(sa.sin_port) != S.port)
      continue;
    if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &al) == 0 && acc == 0)
      return fd;
  }
  return -1;
}

/* An accepted conn has TCP_NODELAY, keepalive and TCP_USER_TIMEOUT, so a
 * peer whose machine went silent ends it in RPC_TCP_USER_TIMEOUT_MS rather
 * than after the kernel's retransmissions (about 15 minutes). */
START_TEST(tcp_socket_options)
{
  srv_setup();
  int fd = authed_client();
  call_ok(fd, 5);
  WAIT_FOR(S.accepted == 1);
  int a = accepted_fd();
  ck_assert_int_ge(a, 0);
  int v = 0;
  unsigned int ut = 0;
  socklen_t l = sizeof(v);
  ck_assert_int_eq(getsockopt(a, IPPROTO_TCP, TCP_NODELAY, &v, &l), 0);
  ck_assert_int_eq(v, 1);
  l = sizeof(v);
  ck_assert_int_eq(getsockopt(a, SOL_SOCKET, SO_KEEPALIVE, &v, &l), 0);
  ck_assert_int_eq(v, 1);
  l = sizeof(ut);
  ck_assert_int_eq(getsockopt(a, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, &l), 0);
  ck_assert_uint_eq(ut, RPC_TCP_USER_TIMEOUT_MS);
  close(fd);
  WAIT_FOR(S.recs[0].closes == 1);
  srv_stop();
}
END_TEST

START_TEST(tcp_ipv6)
{
  if (!srv_setup_host("::1", 0))
    return; /* no IPv6 loopback on this machine */
  int fd = tcp_client_at("::1", S.port);
  struct rpc_auth a;
  auth_init(&a, 1, 3, "cli6");
  ck_assert_int_eq(tsess_handshake(fd, &a, 5000, NULL, NULL), PT_OK);
  call_ok(fd, 6);
  WAIT_FOR(S.accepted == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_msg(strncmp(S.recs[0].peer_name, "[::1]:", 6) == 0, "%s",
                S.recs[0].peer_name);
  pthread_mutex_unlock(&S.mu);
  close(fd);
  srv_stop();
}
END_TEST

static void set_nodelay(int fd)
{
  int one = 1;
  ck_assert_int_eq(setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)), 0);
}

START_TEST(tcp_partial_reads_and_many_frames_per_read)
{
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  uint8_t *f, all[4096];
  size_t len, n = 0;

  srv_setup();
  int fd = authed_client();
  set_nodelay(fd);
  /* One frame a byte at a time, each byte its own segment. */
  a.step = 11;
  ck_assert_int_eq(tsess_pack(fd, &f, &len, RPC_SLOT_ACQUIRE, 1, &a.base), PT_OK);
  for (size_t i = 0; i < len; i++) {
    write_all(fd, f + i, 1);
    usleep(2000);
  }
  free(f);
  /* Then eight frames in one write. */
  for (uint64_t i = 0; i < 8; i++) {
    a.step = 20 + i;
    ck_assert_int_eq(tsess_pack(fd, &f, &len, RPC_SLOT_ACQUIRE, 2 + i, &a.base),
                     PT_OK);
    memcpy(all + n, f, len);
    n += len;
    free(f);
  }
  write_all(fd, all, n);
  for (uint64_t i = 0; i < 9; i++) {
    struct rpc_hdr h;
    ProtobufCMessage *m;
    ck_assert_int_eq(rpc_sock_session_recv(tsess(fd), 0, rpc_now_ms() + 5000, &h, &m), PT_OK);
    ck_assert_uint_eq(h.request_id, 1 + i);
    ck_assert_uint_eq(((Pt__SlotReply *)m)->generation, i == 0 ? 22 : (19 + i) * 2);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  WAIT_FOR(S.accepted == 1 && S.recs[0].msgs == 9);
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(tcp_peer_that_stops_reading)
{
  srv_setup();
  int fd = authed_client();
  int small = 64 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  sub.node_id = "node";
  /* Sends, then never reads. */
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_SUBSCRIBE, 1, &sub.base,
                                 rpc_now_ms() + 5000), PT_OK);
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.recs[0].flood_rc, -ENOBUFS);
  ck_assert_int_eq(S.recs[0].err, -ENOBUFS);
  pthread_mutex_unlock(&S.mu);
  ck_assert(unit_closed_by_peer(fd, 5000));
  close(fd);
  srv_stop();
  ck_assert_int_eq(count_lines("rpc: closing connection from 127.0.0.1:"), 1);
}
END_TEST

START_TEST(tcp_peer_dies_mid_frame)
{
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  uint8_t *f;
  size_t len;

  srv_setup();
  int fd = authed_client();
  a.step = 3;
  ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_SLOT_ACQUIRE, 1, &a.base), PT_OK);
  write_all(fd, f, len - 2);
  free(f);
  WAIT_FOR(S.accepted == 1);
  close(fd); /* dies mid-frame */
  WAIT_FOR(S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, PT_EPROTO);
  srv_stop();
  ck_assert_int_eq(count_lines("rpc: closing connection from 127.0.0.1:"), 1);
}
END_TEST

/* ---- the handshake over the wire --------------------------------------------- */

/* Every refusal: one line naming the peer's address, and the conn never
 * reaches on_accept. */
static void expect_refused(int fd, const char *why)
{
  char want[160];
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(strstr(S.log, why) != NULL);
  snprintf(want, sizeof(want), "rpc: refusing connection from 127.0.0.1:");
  ck_assert_int_eq(count_lines(want), 1);
  ck_assert_int_eq(count_lines("authentication failed"), 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.accepted, 0);
  pthread_mutex_unlock(&S.mu);
}

START_TEST(handshake_wrong_key)
{
  struct rpc_auth a;
  srv_setup();
  int fd = tcp_client();
  auth_init(&a, 2, 3, "cli"); /* another key */
  ck_assert_int_eq(tsess_handshake(fd, &a, 5000, NULL, NULL), -EACCES);
  close(fd); /* the dialler gives up: the server sees the handshake end */
  WAIT_FOR(strstr(S.log, "closed before the handshake ended") != NULL);
  ck_assert_int_eq(count_lines("rpc: refusing connection from 127.0.0.1:"), 1);
  /* The line says who the peer claimed to be and where it stopped, so an
   * operator sees which daemon lacks the key. */
  ck_assert_msg(strstr(S.log, " (it said role 3, node id 'cli'): "
                              "authentication failed: closed before the "
                              "handshake ended, after our challenge and "
                              "without its proof, as a peer without the "
                              "cluster key does") != NULL, "%s", S.log);
  ck_assert_int_eq(S.accepted, 0);
  srv_stop();
}
END_TEST

/* A client that skips the handshake (holds no key): its first frame is
 * refused, unparsed. */
START_TEST(handshake_missing)
{
  srv_setup();
  int fd = tcp_client();
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_SLOT_ACQUIRE, 1, &a.base,
                                 rpc_now_ms() + 5000), PT_OK);
  expect_refused(fd, "a frame before the handshake");
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(handshake_garbage_first)
{
  static const char http[] = "GET / HTTP/1.1\r\nHost: pt\r\n\r\n";
  srv_setup();
  int fd = tcp_client();
  write_all(fd, http, sizeof(http) - 1);
  expect_refused(fd, "no valid handshake");
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(handshake_oversized_first_frame)
{
  uint8_t h[RPC_HDR_BYTES];
  struct rpc_hdr hdr = {.type = RPC_AUTH_HELLO, .length = RPC_AUTH_MAX_BODY + 1};
  srv_setup();
  int fd = tcp_client();
  rpc_hdr_encode(h, &hdr);
  write_all(fd, h, sizeof(h));
  expect_refused(fd, pt_strerror(PT_ETOOBIG));
  close(fd);
  srv_stop();
}
END_TEST

/* Packs the frame of a handshake message (for recording and replaying). */
static void pack(uint32_t type, const ProtobufCMessage *m, uint8_t **f,
                 size_t *len)
{
  ck_assert_int_eq(rpc_frame_pack(f, len, type, 0, m), PT_OK);
}

START_TEST(handshake_replayed)
{
  struct rpc_auth a;
  struct rpc_handshake hs;
  const ProtobufCMessage *out;
  ProtobufCMessage *in;
  struct rpc_hdr h;
  uint32_t t;
  uint8_t *hello, *proof;
  size_t hello_len, proof_len;

  srv_setup();
  /* Session 1, with the key: record the dialler's two frames. */
  int fd = tcp_client();
  auth_init(&a, 1, 3, "cli");
  ck_assert_int_eq(rpc_handshake_init(&hs, &a, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(&hs, 0, NULL, &t, &out), PT_OK);
  pack(t, out, &hello, &hello_len);
  write_all(fd, hello, hello_len);
  ck_assert_int_eq(rpc_sock_session_recv(tsess(fd), RPC_AUTH_MAX_BODY, rpc_now_ms() + 5000, &h,
                                 &in), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(&hs, h.type, in, &t, &out),
                   RPC_HANDSHAKE_DONE);
  protobuf_c_message_free_unpacked(in, NULL);
  pack(t, out, &proof, &proof_len);
  write_all(fd, proof, proof_len);
  ck_assert_int_eq(tsess_start(fd, &hs), PT_OK);
  rpc_handshake_release(&hs);
  call_ok(fd, 1);
  WAIT_FOR(S.accepted == 1);

  /* Session 2, without the key: the same bytes again. */
  int fd2 = tcp_client();
  write_all(fd2, hello, hello_len);
  ck_assert_int_eq(rpc_sock_session_recv(tsess(fd2), RPC_AUTH_MAX_BODY, rpc_now_ms() + 5000, &h,
                                 &in), PT_OK);
  ck_assert_uint_eq(h.type, RPC_AUTH_CHALLENGE); /* a fresh nonce ... */
  protobuf_c_message_free_unpacked(in, NULL);
  write_all(fd2, proof, proof_len); /* ... that the old proof cannot cover */
  ck_assert(unit_closed_by_peer(fd2, 5000));
  WAIT_FOR(strstr(S.log, "wrong key or replayed handshake") != NULL);
  ck_assert_int_eq(count_lines("rpc: refusing connection from 127.0.0.1:"), 1);
  ck_assert_int_eq(S.accepted, 1);
  free(hello);
  free(proof);
  close(fd2);
  close(fd);
  srv_stop();
}
END_TEST

static size_t g_buffered;
static void read_buffered(void) { g_buffered = rpc_buffered_bytes(); }

START_TEST(handshake_truncated)
{
  struct rpc_auth a;
  struct rpc_handshake hs;
  const ProtobufCMessage *out;
  uint32_t t;
  uint8_t *hello;
  size_t len;

  srv_setup_host("127.0.0.1", 300); /* auth_ms */
  auth_init(&a, 1, 3, "cli");
  ck_assert_int_eq(rpc_handshake_init(&hs, &a, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(&hs, 0, NULL, &t, &out), PT_OK);
  pack(t, out, &hello, &len);
  /* Cut, then EOF. */
  int fd = tcp_client();
  write_all(fd, hello, len / 2);
  shutdown(fd, SHUT_WR);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(strstr(S.log, "closed before the handshake ended") != NULL);
  close(fd);
  /* Cut, then silence: the deadline, which runs from the accept (t0 is
   * taken before the dial, so a slow test thread cannot shorten it). */
  uint64_t t0 = rpc_now_ms();
  fd = tcp_client();
  write_all(fd, hello, len / 2);
  ck_assert(unit_closed_by_peer(fd, 5000));
  ck_assert_uint_ge(rpc_now_ms() - t0, 250);
  WAIT_FOR(strstr(S.log, "no handshake in time") != NULL);
  ck_assert_int_eq(count_lines("rpc: refusing connection from 127.0.0.1:"), 2);
  ck_assert_int_eq(S.accepted, 0);
  close(fd);
  /* Cut, then a reset, once the listener holds the cut frame (so that the
   * reset comes to a conn, not to the accept queue): refused with its line
   * too. */
  fd = tcp_client();
  write_all(fd, hello, len / 2);
  uint64_t until = rpc_now_ms() + 5000;
  do {
    srv_do(read_buffered);
    if (g_buffered == 0)
      usleep(1000);
  } while (g_buffered == 0 && rpc_now_ms() < until);
  ck_assert_uint_gt(g_buffered, 0);
  struct linger lg = {.l_onoff = 1, .l_linger = 0};
  ck_assert_int_eq(setsockopt(fd, SOL_SOCKET, SO_LINGER, &lg, sizeof(lg)), 0);
  close(fd);
  WAIT_FOR(strstr(S.log, "lost before the handshake ended") != NULL);
  ck_assert_int_eq(count_lines("rpc: refusing connection from 127.0.0.1:"), 3);
  ck_assert_int_eq(S.accepted, 0);
  free(hello);
  rpc_handshake_release(&hs);
  srv_stop();
}
END_TEST

/* Strangers who connect and say nothing hold at most RPC_AUTH_PENDING_DEFAULT
 * conns, and never a peer with the key out: one more conn drops the one
 * that has waited longest, so the peer with the key is served at once, long
 * before the strangers' deadline. */
START_TEST(handshake_pending_capped)
{
  int silent[RPC_AUTH_PENDING_DEFAULT];

  ck_assert(srv_setup_host("127.0.0.1", 20000)); /* auth_ms */
  for (unsigned i = 0; i < RPC_AUTH_PENDING_DEFAULT; i++) {
    silent[i] = tcp_client();
    usleep(1000); /* an order the listener sees too */
  }
  uint64_t t0 = rpc_now_ms();
  int fd = authed_client();
  WAIT_FOR(S.accepted == 1);
  ck_assert_uint_lt(rpc_now_ms() - t0, 5000); /* not the 20 s deadline */
  call_ok(fd, 3);
  /* The first stranger went for it, with one line; the others are held. */
  ck_assert(unit_closed_by_peer(silent[0], 5000));
  ck_assert_int_eq(count_lines("the oldest of 64 handshakes in progress"), 1);
  struct pollfd pfd = {.fd = silent[RPC_AUTH_PENDING_DEFAULT - 1],
                       .events = POLLIN};
  ck_assert_int_eq(poll(&pfd, 1, 50), 0);
  /* Strangers take no more than the cap: the first refills it, the second
   * pushes out the oldest left. */
  int extra = tcp_client();
  usleep(20 * 1000);
  pfd.fd = silent[1];
  ck_assert_int_eq(poll(&pfd, 1, 50), 0);
  int extra2 = tcp_client();
  ck_assert(unit_closed_by_peer(silent[1], 5000));
  ck_assert_int_eq(count_lines("the oldest of 64 handshakes in progress"), 2);
  close(extra);
  close(extra2);
  close(fd);
  for (unsigned i = 0; i < RPC_AUTH_PENDING_DEFAULT; i++)
    close(silent[i]);
  srv_stop();
}
END_TEST

/* ---- dialled conns -------------------------------------------------------------- */

static struct rpc_auth g_dial_auth;
static int g_dial_port;
static uint32_t g_dial_timeout;

static int dial_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                       ProtobufCMessage *msg)
{
  (void)c;
  (void)msg;
  pthread_mutex_lock(&S.mu);
  if (h->type == RPC_SLOT_REPLY)
    S.dial_replies++;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
  return 0;
}

static void dial_on_ready(struct rpc_conn *c)
{
  pthread_mutex_lock(&S.mu);
  S.dial_ready++;
  S.dial_peer_role = rpc_conn_peer_role(c);
  snprintf(S.dial_peer_node, sizeof(S.dial_peer_node), "%s",
           rpc_conn_peer_node(c));
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void dial_on_close(struct rpc_conn *c, int err)
{
  (void)c;
  pthread_mutex_lock(&S.mu);
  S.dial_closes++;
  S.dial_err = err;
  S.dialled = NULL;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void dial_cmd(void)
{
  struct rpc_conn_ops ops = {.on_msg = dial_on_msg, .on_close = dial_on_close,
                             .on_ready = dial_on_ready};
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;

  ck_assert_int_eq(rpc_conn_connect_tcp(&S.loop, "127.0.0.1", g_dial_port, &ops,
                                        &g_dial_auth, g_dial_timeout, NULL,
                                        &S.dialled), PT_OK);
  /* Queued until the handshake is done. */
  for (uint64_t i = 0; i < 3; i++) {
    a.step = i;
    ck_assert_int_eq(rpc_conn_send(S.dialled, RPC_SLOT_ACQUIRE, i + 1, &a.base),
                     PT_OK);
  }
}

START_TEST(dial_with_right_key)
{
  srv_setup();
  auth_init(&g_dial_auth, 1, 9, "dialler");
  g_dial_port = S.port;
  srv_do(dial_cmd);
  WAIT_FOR(S.dial_ready == 1 && S.dial_replies == 3);
  ck_assert_uint_eq(S.dial_peer_role, 7);
  ck_assert_str_eq(S.dial_peer_node, "srv");
  WAIT_FOR(S.accepted == 1);
  ck_assert_str_eq(S.recs[0].peer_node, "dialler");
  ck_assert_uint_eq(S.recs[0].peer_role, 9);
  srv_stop();
  ck_assert_int_eq(S.dial_closes, 1);
}
END_TEST

START_TEST(dial_with_wrong_key)
{
  srv_setup();
  auth_init(&g_dial_auth, 5, 9, "dialler");
  g_dial_port = S.port;
  srv_do(dial_cmd);
  WAIT_FOR(S.dial_closes == 1);
  ck_assert_int_eq(S.dial_err, -EACCES);
  ck_assert_int_eq(S.dial_ready, 0);
  WAIT_FOR(strstr(S.log, "rpc: refusing connection from 127.0.0.1:") != NULL);
  ck_assert_int_eq(count_lines("rpc: refusing connection from 127.0.0.1:"), 1);
  ck_assert_int_eq(S.accepted, 0);
  ck_assert_int_eq(S.recs[0].msgs, 0);
  srv_stop();
}
END_TEST

START_TEST(dial_refused_and_timed_out)
{
  struct sockaddr_in sa = {.sin_family = AF_INET};
  socklen_t len = sizeof(sa);

  srv_setup();
  auth_init(&g_dial_auth, 1, 9, "dialler");
  /* A port nobody listens on: refused. */
  int fd = socket(AF_INET, SOCK_STREAM, 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(getsockname(fd, (struct sockaddr *)&sa, &len), 0);
  g_dial_port = ntohs(sa.sin_port);
  srv_do(dial_cmd);
  WAIT_FOR(S.dial_closes == 1);
  ck_assert_int_eq(S.dial_err, UV_ECONNREFUSED);
  /* A socket that listens and never answers: the deadline. */
  ck_assert_int_eq(listen(fd, 4), 0);
  g_dial_timeout = 200;
  uint64_t t0 = rpc_now_ms();
  srv_do(dial_cmd);
  WAIT_FOR(S.dial_closes == 2);
  ck_assert_int_eq(S.dial_err, -ETIMEDOUT);
  ck_assert_uint_ge(rpc_now_ms() - t0, 150);
  ck_assert_int_eq(S.dial_ready, 0);
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(tcp_needs_auth_and_numeric_host)
{
  struct rpc_conn_ops ops = {0};
  struct rpc_listener *l;
  struct rpc_conn *c;
  struct rpc_auth a;
  uv_loop_t loop;

  auth_init(&a, 1, 0, "x");
  ck_assert_int_eq(uv_loop_init(&loop), 0);
  ck_assert_int_eq(rpc_listen_tcp(&loop, "127.0.0.1", 0, &ops, NULL, NULL, NULL,
                                  &l), -EINVAL);
  ck_assert_int_eq(rpc_listen_tcp(&loop, "localhost", 0, &ops, &a, NULL, NULL,
                                  &l), -EINVAL);
  ck_assert_int_eq(rpc_conn_connect_tcp(&loop, "127.0.0.1", 1, &ops, NULL, 0,
                                        NULL, &c), -EINVAL);
  ck_assert_int_eq(rpc_conn_connect_tcp(&loop, "127.0.0.1", 70000, &ops, &a, 0,
                                        NULL, &c), -EINVAL);
  memset(a.node_id, 'n', sizeof(a.node_id)); /* not terminated */
  ck_assert_int_eq(rpc_listen_tcp(&loop, "127.0.0.1", 0, &ops, &a, NULL, NULL,
                                  &l), -EINVAL);
  uv_run(&loop, UV_RUN_DEFAULT);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
}
END_TEST

/* ---- the handshake machine alone ---------------------------------------------- */

/* Runs dialler d against acceptor s in memory; tamper, when set, edits the
 * challenge before the dialler sees it. Returns the first error, or PT_OK
 * when both ends are done. */
static int run_pair(struct rpc_handshake *d, struct rpc_handshake *s,
                    void (*tamper)(Pt__AuthChallenge *))
{
  const ProtobufCMessage *out;
  uint32_t t;
  int rc;

  if ((rc = rpc_handshake_next(d, 0, NULL, &t, &out)) < 0)
    return rc;
  if ((rc = rpc_handshake_next(s, t, out, &t, &out)) < 0)
    return rc;
  Pt__AuthChallenge ch = *(const Pt__AuthChallenge *)out;
  if (tamper != NULL)
    tamper(&ch);
  if ((rc = rpc_handshake_next(d, t, &ch.base, &t, &out)) != RPC_HANDSHAKE_DONE)
    return rc < 0 ? rc : -EINVAL;
  if ((rc = rpc_handshake_next(s, t, out, &t, &out)) != RPC_HANDSHAKE_DONE)
    return rc < 0 ? rc : -EINVAL;
  return PT_OK;
}

static void tamper_role(Pt__AuthChallenge *ch) { ch->role ^= 1; }
static void tamper_node(Pt__AuthChallenge *ch) { ch->node_id = "srw"; }
static uint8_t g_nonce[RPC_AUTH_NONCE_BYTES];
static void tamper_nonce(Pt__AuthChallenge *ch)
{
  memcpy(g_nonce, ch->nonce.data, sizeof(g_nonce));
  g_nonce[0] ^= 1;
  ch->nonce.data = g_nonce;
}

START_TEST(handshake_machine)
{
  struct rpc_auth da, sa;
  struct rpc_handshake d, s;
  void (*tampers[])(Pt__AuthChallenge *) = {tamper_role, tamper_node,
                                            tamper_nonce};

  auth_init(&da, 1, 3, "cli");
  auth_init(&sa, 1, 7, "srv");
  ck_assert_int_eq(rpc_handshake_init(&d, &da, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_init(&s, &sa, false), PT_OK);
  ck_assert_int_eq(run_pair(&d, &s, NULL), PT_OK);
  ck_assert_uint_eq(d.peer_role, 7);
  ck_assert_str_eq(s.peer_node, "cli");
  /* Role, node id and nonce are bound into the MAC. */
  for (size_t i = 0; i < sizeof(tampers) / sizeof(tampers[0]); i++) {
    rpc_handshake_init(&d, &da, true);
    rpc_handshake_init(&s, &sa, false);
    ck_assert_int_eq(run_pair(&d, &s, tampers[i]), -EACCES);
  }
  /* Another key on either side. */
  auth_init(&sa, 2, 7, "srv");
  rpc_handshake_init(&d, &da, true);
  rpc_handshake_init(&s, &sa, false);
  ck_assert_int_eq(run_pair(&d, &s, NULL), -EACCES);

  /* Reflection: the acceptor's own MAC offered back as a proof. */
  const ProtobufCMessage *out;
  uint32_t t;
  auth_init(&sa, 1, 7, "srv");
  rpc_handshake_init(&d, &da, true);
  rpc_handshake_init(&s, &sa, false);
  rpc_handshake_next(&d, 0, NULL, &t, &out);
  ck_assert_int_eq(rpc_handshake_next(&s, t, out, &t, &out), PT_OK);
  Pt__AuthProof pr = PT__AUTH_PROOF__INIT;
  pr.mac = ((const Pt__AuthChallenge *)out)->mac;
  uint8_t mac[RPC_AUTH_MAC_BYTES];
  memcpy(mac, pr.mac.data, sizeof(mac));
  pr.mac.data = mac;
  ck_assert_int_eq(rpc_handshake_next(&s, RPC_AUTH_PROOF, &pr.base, &t, &out),
                   -EACCES);
  /* Out of turn: a proof first; a failed machine stays failed. */
  rpc_handshake_init(&s, &sa, false);
  ck_assert_int_eq(rpc_handshake_next(&s, RPC_AUTH_PROOF, &pr.base, &t, &out),
                   PT_EPROTO);
  ck_assert_int_eq(rpc_handshake_next(&s, RPC_AUTH_PROOF, &pr.base, &t, &out),
                   PT_EPROTO);
  rpc_handshake_release(&d);
  rpc_handshake_release(&s);
}
END_TEST

/* ---- key files ------------------------------------------------------------------- */

START_TEST(key_files)
{
  char dir[] = "/tmp/pt-rpc-key.XXXXXX", path[128], link_path[128], err[256];
  uint8_t key[RPC_KEY_BYTES], again[RPC_KEY_BYTES], zero[RPC_KEY_BYTES] = {0};
  struct stat st;

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/cluster.key", dir);
  snprintf(link_path, sizeof(link_path), "%s/link.key", dir);
  umask(022);
  ck_assert_int_eq(rpc_key_write(path, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 07777, 0600);
  ck_assert_int_eq(st.st_size, RPC_KEY_BYTES);
  ck_assert_int_eq(rpc_key_load(path, key, err, sizeof(err)), PT_OK);
  ck_assert(memcmp(key, zero, sizeof(key)) != 0);
  /* Never overwritten. */
  ck_assert_int_eq(rpc_key_write(path, err, sizeof(err)), -EEXIST);
  ck_assert_int_eq(rpc_key_load(path, again, err, sizeof(err)), PT_OK);
  ck_assert(memcmp(key, again, sizeof(key)) == 0);
  /* Readable by others: refused, saying how to fix it. */
  ck_assert_int_eq(chmod(path, 0644), 0);
  ck_assert_int_eq(rpc_key_load(path, key, err, sizeof(err)), -EPERM);
  ck_assert_msg(strstr(err, "0644") != NULL && strstr(err, "chmod 600") != NULL,
                "%s", err);
  ck_assert_int_eq(chmod(path, 0620), 0); /* group may write */
  ck_assert_int_eq(rpc_key_load(path, key, err, sizeof(err)), -EPERM);
  ck_assert_int_eq(chmod(path, 0600), 0);
  /* A symlink: refused. */
  ck_assert_int_eq(symlink(path, link_path), 0);
  ck_assert_int_eq(rpc_key_load(link_path, key, err, sizeof(err)), -ELOOP);
  ck_assert_ptr_nonnull(strstr(err, "symlink"));
  ck_assert_int_eq(rpc_key_write(link_path, err, sizeof(err)), -EEXIST);
  unlink(link_path);
  /* Nor does keygen follow a dangling one. */
  ck_assert_int_eq(symlink("/tmp/pt-nonexistent-key-target", link_path), 0);
  ck_assert_int_ne(rpc_key_write(link_path, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(access("/tmp/pt-nonexistent-key-target", F_OK), -1);
  unlink(link_path);
  /* Wrong size. */
  ck_assert_int_eq(truncate(path, 31), 0);
  ck_assert_int_eq(rpc_key_load(path, key, err, sizeof(err)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "31 bytes"));
  unlink(path);
  ck_assert_int_eq(rpc_key_load(path, key, err, sizeof(err)), -ENOENT);
  rmdir(dir);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("rpc_tcp");
  TCase *tc = tcase_create("tcp");

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, tcp_serves_authenticated_peers);
  tcase_add_test(tc, tcp_socket_options);
  tcase_add_test(tc, tcp_ipv6);
  tcase_add_test(tc, tcp_partial_reads_and_many_frames_per_read);
  tcase_add_test(tc, tcp_peer_that_stops_reading);
  tcase_add_test(tc, tcp_peer_dies_mid_frame);
  tcase_add_test(tc, handshake_wrong_key);
  tcase_add_test(tc, handshake_missing);
  tcase_add_test(tc, handshake_garbage_first);
  tcase_add_test(tc, handshake_oversized_first_frame);
  tcase_add_test(tc, handshake_replayed);
  tcase_add_test(tc, handshake_truncated);
  tcase_add_test(tc, handshake_pending_capped);
  tcase_add_test(tc, dial_with_right_key);
  tcase_add_test(tc, dial_with_wrong_key);
  tcase_add_test(tc, dial_refused_and_timed_out);
  tcase_add_test(tc, tcp_needs_auth_and_numeric_host);
  tcase_add_test(tc, handshake_machine);
  tcase_add_test(tc, key_files);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
