/*
 * test_rpc_hostile.c — a hostile peer against an rpc TCP listener
 * (rpc_tcp.c, rpc_auth.c, rpc_bulk.c): frames of every type before the
 * handshake, handshake frames out of turn, reflected or oversized, floods
 * of conns that never finish the handshake, a handshake sent a byte at a
 * time, bulk headers with absurd lengths, short payloads, a receiver that
 * refuses, and key files that are not what they claim. The server loop
 * runs in a thread of the test process (the harness of test_rpc_tcp.c);
 * the attacker is raw blocking sockets. Every port is bound as 0.
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
#include "common/crc32c.h"
#include "rpc/rpc.h"
#include "tests/unit/tsess.h"
#include "tests/unit/unit.h"

#include <sys/resource.h>
#include <sys/wait.h>

#include "tests/unit/fixture/rpc_tcp_srv.h"

/* ---- TCP conns ---------------------------------------------------------------- */

/* ---- before the handshake ------------------------------------------------------ */

static void expect_refused(int fd, const char *why)
{
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(strstr(S.log, why) != NULL);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.accepted, 0);
  pthread_mutex_unlock(&S.mu);
}

/* A frame of every type but AUTH_HELLO as the first frame (empty body, and
 * a body of junk): refused, never reaching on_msg or on_accept. */
START_TEST(every_type_before_handshake)
{
  static const uint8_t junk[16] = {0x0a, 0x05, 'x', 'x', 'x', 'x', 'x', 0xff};
  srv_setup();
  for (uint32_t t = 1; t <= RPC_TYPE_MAX_ + 1; t++) {
    for (int withbody = 0; withbody < 2; withbody++) {
      if (t == RPC_AUTH_HELLO && withbody == 0)
        continue; /* an empty HELLO is just malformed: covered by the rest */
      uint8_t h[RPC_HDR_BYTES];
      struct rpc_hdr hdr = {.type = t, .length = withbody ? sizeof(junk) : 0};
      rpc_hdr_encode(h, &hdr);
      int fd = tcp_client();
      write_all(fd, h, sizeof(h));
      if (withbody)
        write_all(fd, junk, sizeof(junk));
      ck_assert_msg(unit_closed_by_peer(fd, 5000), "type %u body %d; log:\n%s",
                    t, withbody, S.log);
      close(fd);
    }
  }
  WAIT_FOR(count_locked("authentication failed") == 2 * (RPC_TYPE_MAX_ + 1) - 1);
  ck_assert_int_eq(count_lines("rpc: refusing connection from 127.0.0.1:"),
                   2 * (RPC_TYPE_MAX_ + 1) - 1);
  ck_assert_int_eq(S.accepted, 0);
  srv_stop();
}
END_TEST

START_TEST(handshake_huge_length)
{
  uint8_t h[RPC_HDR_BYTES];
  struct rpc_hdr hdr = {.type = RPC_AUTH_HELLO, .length = 0xffffffffu};
  srv_setup();
  size_t before = rpc_buffered_bytes();
  int fd = tcp_client();
  rpc_hdr_encode(h, &hdr);
  write_all(fd, h, sizeof(h));
  expect_refused(fd, pt_strerror(PT_ETOOBIG));
  ck_assert_uint_eq(rpc_buffered_bytes(), before);
  close(fd);
  srv_stop();
}
END_TEST

/* A dialler's first frames made by hand: HELLO of the given key. */
static void hello_of(struct rpc_handshake *hs, uint8_t keyv, uint8_t **f,
                     size_t *len)
{
  struct rpc_auth a;
  const ProtobufCMessage *out;
  uint32_t t;
  auth_init(&a, keyv, 3, "cli");
  ck_assert_int_eq(rpc_handshake_init(hs, &a, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(hs, 0, NULL, &t, &out), PT_OK);
  ck_assert_int_eq(rpc_frame_pack(f, len, t, 0, out), PT_OK);
}

START_TEST(proof_first)
{
  uint8_t mac[RPC_AUTH_MAC_BYTES] = {1};
  Pt__AuthProof p = PT__AUTH_PROOF__INIT;
  srv_setup();
  p.mac.data = mac;
  p.mac.len = sizeof(mac);
  int fd = tcp_client();
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_AUTH_PROOF, 0, &p.base,
                                 rpc_now_ms() + 5000), PT_OK);
  expect_refused(fd, "malformed handshake");
  close(fd);
  srv_stop();
}
END_TEST

/* The server's own challenge sent back to it: as a CHALLENGE, and its MAC
 * as our PROOF. Both refused. */
START_TEST(challenge_reflected)
{
  struct rpc_handshake hs;
  struct rpc_hdr h;
  ProtobufCMessage *in;
  uint8_t *hello, *f;
  size_t hello_len, len;

  srv_setup();
  hello_of(&hs, 9, &hello, &hello_len); /* no key */
  for (int how = 0; how < 2; how++) {
    int fd = tcp_client();
    write_all(fd, hello, hello_len);
    ck_assert_int_eq(rpc_sock_session_recv(tsess(fd), RPC_AUTH_MAX_BODY, rpc_now_ms() + 5000,
                                   &h, &in), PT_OK);
    ck_assert_uint_eq(h.type, RPC_AUTH_CHALLENGE);
    Pt__AuthChallenge *ch = (Pt__AuthChallenge *)in;
    if (how == 0) {
      ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_AUTH_CHALLENGE, 0, in),
                       PT_OK);
    } else {
      Pt__AuthProof p = PT__AUTH_PROOF__INIT;
      p.mac = ch->mac;
      ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_AUTH_PROOF, 0, &p.base),
                       PT_OK);
    }
    protobuf_c_message_free_unpacked(in, NULL);
    write_all(fd, f, len);
    free(f);
    ck_assert(unit_closed_by_peer(fd, 5000));
    close(fd);
  }
  WAIT_FOR(count_locked("authentication failed") == 2);
  ck_assert_int_eq(count_lines("malformed handshake"), 1);
  ck_assert_int_eq(count_lines("wrong key or replayed handshake"), 1);
  ck_assert_int_eq(S.accepted, 0);
  free(hello);
  rpc_handshake_release(&hs);
  srv_stop();
}
END_TEST

/* A HELLO a byte at a time, each byte before the last is late: the
 * handshake deadline is counted from the connect, not from the last
 * byte. */
START_TEST(slowloris_handshake)
{
  struct rpc_handshake hs;
  uint8_t *hello;
  size_t len;

  srv_setup_host("127.0.0.1", 600);
  hello_of(&hs, 1, &hello, &len);
  int fd = tcp_client();
  uint64_t t0 = rpc_now_ms();
  bool closed = false;
  for (size_t i = 0; i < len && !closed; i++) {
    if (send(fd, hello + i, 1, MSG_NOSIGNAL) != 1)
      break;
    closed = unit_closed_by_peer(fd, 100);
  }
  if (!closed)
    closed = unit_closed_by_peer(fd, 3000);
  uint64_t took = rpc_now_ms() - t0;
  ck_assert(closed);
  ck_assert_uint_ge(took, 500);
  ck_assert_msg(took < 1500, "held a trickling peer for %llu ms",
                (unsigned long long)took);
  WAIT_FOR(strstr(S.log, "no handshake in time") != NULL);
  close(fd);
  free(hello);
  rpc_handshake_release(&hs);
  srv_stop();
}
END_TEST

/* Hundreds of conns that never send a byte. The listener holds a bounded
 * number of handshakes at once: each one past it drops the oldest at once
 * (so a stranger cannot take every descriptor of the process), the held
 * ones go at the deadline; a peer with the key is served while the flood
 * holds every slot, not after it. */
#define FLOOD 300
static bool closed_now(int fd)
{
  struct pollfd pfd = {fd, POLLIN, 0};
  char c;
  if (poll(&pfd, 1, 0) <= 0)
    return false;
  ssize_t n = read(fd, &c, 1);
  return n == 0 || (n < 0 && errno == ECONNRESET);
}

START_TEST(handshake_flood_bounded)
{
  static int fds[FLOOD];
  srv_setup_host("127.0.0.1", 2000);
  for (int i = 0; i < FLOOD; i++)
    fds[i] = tcp_client();
  /* Those past the bound go at once, well before the 2 s deadline. */
  uint64_t t0 = rpc_now_ms();
  int closed = 0;
  while (closed < FLOOD - 64 && rpc_now_ms() - t0 < 1500) {
    usleep(20 * 1000);
    for (int i = 0; i < FLOOD; i++)
      if (fds[i] >= 0 && closed_now(fds[i]))
        closed++, fds[i] = -fds[i] - 1;
  }
  ck_assert_uint_lt(rpc_now_ms() - t0, 1800); /* before the deadline */
  ck_assert_msg(closed >= FLOOD - 128, "%d of %d half-open conns held",
                FLOOD - closed, FLOOD);
  int early = authed_client(); /* every slot is a stranger's */
  call_ok(early, 4);
  ck_assert_uint_lt(rpc_now_ms() - t0, 1900); /* before their deadline */
  close(early);
  /* The rest go at the deadline. */
  for (int i = 0; i < FLOOD; i++)
    if (fds[i] >= 0) {
      ck_assert(unit_closed_by_peer(fds[i], 5000));
      close(fds[i]);
    } else {
      close(-fds[i] - 1);
    }
  ck_assert_uint_eq(rpc_buffered_bytes(), 0);
  ck_assert_int_ge(count_lines("handshakes in progress, for one from"), closed);
  int fd = authed_client();
  call_ok(fd, 5);
  close(fd);
  srv_stop();
}
END_TEST

/* ---- a hostile acceptor against our dialler ------------------------------------ */

static int g_evil_port;

static void evil_dial_ready(struct rpc_conn *c)
{
  (void)c;
  pthread_mutex_lock(&S.mu);
  S.dial_ready++;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void evil_dial_close(struct rpc_conn *c, int err)
{
  (void)c;
  pthread_mutex_lock(&S.mu);
  S.dial_closes++;
  S.dial_err = err;
  S.dialled = NULL;
  pthread_cond_broadcast(&S.cv);
  pthread_mutex_unlock(&S.mu);
}

static void evil_dial_cmd(void)
{
  struct rpc_conn_ops ops = {.on_close = evil_dial_close,
                             .on_ready = evil_dial_ready};
  ck_assert_int_eq(rpc_conn_connect_tcp(&S.loop, "127.0.0.1", g_evil_port,
                                        &ops, &S.auth, 3000, NULL,
                                        &S.dialled), PT_OK);
}

/* A listener of our own that answers our HELLO with something else than a
 * good CHALLENGE: a control frame, a huge length, our HELLO echoed, a
 * CHALLENGE with a made-up MAC, a bulk header. Our dialled conn must
 * close with an error and never become ready. */
START_TEST(hostile_acceptor)
{
  srv_setup();
  int lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  struct sockaddr_in a = {.sin_family = AF_INET};
  socklen_t alen = sizeof(a);
  a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  ck_assert_int_eq(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
  ck_assert_int_eq(listen(lfd, 8), 0);
  ck_assert_int_eq(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
  g_evil_port = ntohs(a.sin_port);
  for (int how = 0; how < 5; how++) {
    pthread_mutex_lock(&S.mu);
    S.dial_closes = 0;
    S.dial_err = 0;
    pthread_mutex_unlock(&S.mu);
    srv_do(evil_dial_cmd);
    int fd = accept(lfd, NULL, NULL);
    ck_assert_int_ge(fd, 0);
    struct rpc_hdr h;
    ProtobufCMessage *in;
    ck_assert_int_eq(rpc_sock_session_recv(tsess(fd), RPC_AUTH_MAX_BODY, rpc_now_ms() + 5000,
                                   &h, &in), PT_OK);
    ck_assert_uint_eq(h.type, RPC_AUTH_HELLO);
    if (how == 0) {
      Pt__SlotReply r = PT__SLOT_REPLY__INIT;
      ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_SLOT_REPLY, 0, &r.base,
                                     rpc_now_ms() + 5000), PT_OK);
    } else if (how == 1) {
      uint8_t b[RPC_HDR_BYTES];
      struct rpc_hdr hh = {.type = RPC_AUTH_CHALLENGE, .length = 0xffffffffu};
      rpc_hdr_encode(b, &hh);
      write_all(fd, b, sizeof(b));
    } else if (how == 2) {
      ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_AUTH_HELLO, 0, in,
                                     rpc_now_ms() + 5000), PT_OK);
    } else if (how == 3) {
      Pt__AuthHello *m = (Pt__AuthHello *)in;
      uint8_t mac[RPC_AUTH_MAC_BYTES] = {7};
      Pt__AuthChallenge ch = PT__AUTH_CHALLENGE__INIT;
      ch.node_id = "srv";
      ch.nonce = m->nonce; /* its own nonce back, and a made-up MAC */
      ch.mac.data = mac;
      ch.mac.len = sizeof(mac);
      ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_AUTH_CHALLENGE, 0, &ch.base,
                                     rpc_now_ms() + 5000), PT_OK);
    } else {
      Pt__BulkHeader b = PT__BULK_HEADER__INIT;
      b.length = 10;
      ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_BULK, 0, &b.base,
                                     rpc_now_ms() + 5000), PT_OK);
      write_all(fd, "0123456789", 10);
    }
    protobuf_c_message_free_unpacked(in, NULL);
    WAIT_FOR(S.dial_closes == 1);
    ck_assert_msg(S.dial_err < 0, "case %d: err %d", how, S.dial_err);
    if (how == 3)
      ck_assert_int_eq(S.dial_err, -EACCES);
    ck_assert(unit_closed_by_peer(fd, 5000));
    close(fd);
  }
  ck_assert_int_eq(S.dial_ready, 0);
  close(lfd);
  srv_stop();
}
END_TEST

/* After a good handshake, a second one is a protocol error. */
START_TEST(handshake_again_after_auth)
{
  struct rpc_handshake hs;
  uint8_t *hello;
  size_t len;
  srv_setup();
  int fd = authed_client();
  call_ok(fd, 1);
  hello_of(&hs, 1, &hello, &len);
  /* Tagged, so that it is the HELLO that is refused, not its tag. */
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_AUTH_HELLO, 0,
                                         &hs.out.hello.base,
                                         rpc_now_ms() + 5000), PT_OK);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, PT_EPROTO);
  free(hello);
  rpc_handshake_release(&hs);
  close(fd);
  srv_stop();
}
END_TEST

/* ---- bulk frames from an authenticated peer ------------------------------------ */

static void send_bulk_hdr(int fd, uint32_t kind, uint64_t length, uint32_t crc)
{
  Pt__BulkHeader b = PT__BULK_HEADER__INIT;
  b.kind = kind;
  b.length = length;
  b.crc32c = crc;
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_BULK, 0, &b.base, rpc_now_ms() + 5000),
                   PT_OK);
}

/* A bulk payload and, after it, its tag. */
static void send_payload(int fd, const void *p, size_t n)
{
  uint8_t tag[RPC_TAG_BYTES];

  write_all(fd, p, n);
  write_all(fd, tag, tsess_tag2(fd, p, n, NULL, 0, tag));
}

static void bulk_setup(void)
{
  g_bulk = true;
  srv_setup();
}

START_TEST(bulk_length_2_63)
{
  bulk_setup();
  int fd = authed_client();
  send_bulk_hdr(fd, 0, (uint64_t)1 << 63, 0);
  write_all(fd, "abcd", 4);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, PT_ETOOBIG);
  ck_assert_int_eq(S.begins, 0);
  ck_assert_uint_eq(rpc_buffered_bytes(), 0);
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(bulk_length_just_over_max)
{
  bulk_setup();
  int fd = authed_client();
  send_bulk_hdr(fd, 0, sizeof(g_dst) + 1, 0);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, PT_ETOOBIG);
  ck_assert_int_eq(S.begins, 0);
  close(fd);
  /* Exactly max_bulk is taken. */
  static uint8_t src[sizeof(g_dst)];
  memset(src, 0x5a, sizeof(src));
  fd = authed_client();
  send_bulk_hdr(fd, 0, sizeof(src), crc32c_update(CRC32C_SEED, src, sizeof(src)));
  send_payload(fd, src, sizeof(src));
  WAIT_FOR(S.dones == 1);
  ck_assert_int_eq(S.last_status, PT_OK);
  ck_assert(memcmp(g_dst, src, sizeof(src)) == 0);
  call_ok(fd, 2);
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(bulk_short_then_eof)
{
  bulk_setup();
  int fd = authed_client();
  send_bulk_hdr(fd, 0, 1000, 0);
  write_all(fd, g_dst, 999);
  shutdown(fd, SHUT_WR);
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.dones, 1);
  ck_assert_int_eq(S.last_status, PT_EPROTO);
  ck_assert_int_eq(S.recs[0].err, PT_EPROTO);
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(bulk_crc_mismatch_then_good)
{
  static uint8_t src[4096];
  bulk_setup();
  for (size_t i = 0; i < sizeof(src); i++)
    src[i] = (uint8_t)(i * 13);
  uint32_t crc = crc32c_update(CRC32C_SEED, src, sizeof(src));
  int fd = authed_client();
  send_bulk_hdr(fd, 0, sizeof(src), crc ^ 1);
  send_payload(fd, src, sizeof(src));
  WAIT_FOR(S.dones == 1);
  ck_assert_int_eq(S.last_status, PT_ECHECKSUM);
  send_bulk_hdr(fd, 0, sizeof(src), crc);
  send_payload(fd, src, sizeof(src));
  WAIT_FOR(S.dones == 2);
  ck_assert_int_eq(S.last_status, PT_OK);
  /* Discarded, then a control frame: still in step. */
  send_bulk_hdr(fd, 2, sizeof(src), crc);
  send_payload(fd, src, sizeof(src));
  WAIT_FOR(S.dones == 3);
  ck_assert_int_eq(S.last_status, -ECANCELED);
  call_ok(fd, 4);
  ck_assert_int_eq(S.recs[0].closes, 0);
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(bulk_begin_refuses)
{
  bulk_setup();
  int fd = authed_client();
  send_bulk_hdr(fd, 1, 100, 0);
  write_all(fd, g_dst, 100);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, -EIO);
  ck_assert_int_eq(S.begins, 1);
  ck_assert_int_eq(S.dones, 0); /* no done for a begin that failed */
  close(fd);
  srv_stop();
}
END_TEST

START_TEST(bulk_where_not_taken)
{
  srv_setup(); /* no on_bulk_begin */
  int fd = authed_client();
  send_bulk_hdr(fd, 0, 100, 0);
  write_all(fd, g_dst, 100);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, PT_EPROTO);
  close(fd);
  srv_stop();
}
END_TEST

/* The server sends 1 MiB bulk frames to a peer that has stopped reading:
 * after bulk_queue_max (16 MiB) unwritten it is refused with -EAGAIN, the
 * queue stays within one payload of the mark, and once the peer reads
 * again on_drain comes and every send is reported done. */
START_TEST(bulk_to_peer_that_stops_reading)
{
  srv_setup();
  int fd = authed_client();
  int small = 64 * 1024;
  setsockopt(fd, SOL_SOCKET, SO_RCVBUF, &small, sizeof(small));
  Pt__StateQuery q = PT__STATE_QUERY__INIT;
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_STATE_QUERY, 1, &q.base,
                                 rpc_now_ms() + 5000), PT_OK);
  WAIT_FOR(S.bulk_sends > 0 || S.bulk_rc != 0);
  pthread_mutex_lock(&S.mu);
  int sends = S.bulk_sends;
  ck_assert_int_eq(S.bulk_rc, -EAGAIN);
  ck_assert_int_lt(sends, 40);
  ck_assert_uint_le(S.bulk_peak, ((size_t)16 << 20) + (1 << 20) + 4096);
  pthread_mutex_unlock(&S.mu);
  /* Read again: everything arrives, on_drain follows. */
  static uint8_t buf[1 << 16];
  size_t want = (size_t)sends << 20, got = 0;
  uint64_t dl = rpc_now_ms() + 10000;
  while (got < want && rpc_now_ms() < dl) {
    struct pollfd pfd = {fd, POLLIN, 0};
    if (poll(&pfd, 1, 100) > 0) {
      ssize_t n = read(fd, buf, sizeof(buf));
      ck_assert_int_gt(n, 0);
      got += (size_t)n;
    }
  }
  ck_assert_uint_ge(got, want);
  WAIT_FOR(S.drains == 1 && S.bulk_sent == sends && S.bulk_sent_ok == sends);
  close(fd);
  srv_stop();
}
END_TEST

/* A peer that stops reading in the middle of a payload: the frames queued
 * behind it count against max_write_queue (1 MiB here) in full, however
 * much of the payload the kernel took, and the conn closes past it
 * (-ENOBUFS), not after a payload's worth more. */
START_TEST(frames_behind_partial_payload_capped)
{
  srv_setup();
  int fd = authed_client();
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_STATUS_QUERY, 1, &q.base,
                                 rpc_now_ms() + 5000), PT_OK);
  WAIT_FOR(S.frames_rc != 0);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.frames_rc, -ENOBUFS);
  ck_assert_msg(S.frames_taken <= (1u << 20),
                "%zu bytes of frames taken behind the payload, cap 1 MiB",
                S.frames_taken);
  ck_assert_uint_gt(S.frames_taken, (1u << 20) - 8192);
  pthread_mutex_unlock(&S.mu);
  ck_assert(unit_closed_by_peer(fd, 5000));
  close(fd);
  srv_stop();
}
END_TEST

/* ---- key files ----------------------------------------------------------------- */

/* A directory, 31 and 33 bytes, another uid's file, a symlink to a good
 * file, keygen into a missing directory: each refused, naming the path. */
START_TEST(key_files_hostile)
{
  char dir[] = "/tmp/pt-rpc-hkey.XXXXXX", p[160], err[256];
  uint8_t key[RPC_KEY_BYTES];

  ck_assert_ptr_nonnull(mkdtemp(dir));
  /* A directory. */
  ck_assert_int_eq(rpc_key_load(dir, key, err, sizeof(err)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
  /* 31 and 33 bytes, mode 0600. */
  snprintf(p, sizeof(p), "%s/size.key", dir);
  for (int n = 31; n <= 33; n += 2) {
    int fd = open(p, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    ck_assert_int_ge(fd, 0);
    ck_assert_int_eq(ftruncate(fd, n), 0);
    close(fd);
    ck_assert_int_eq(rpc_key_load(p, key, err, sizeof(err)), -EINVAL);
    ck_assert_msg(strstr(err, n == 31 ? "31 bytes" : "33 bytes") != NULL, "%s",
                  err);
  }
  unlink(p);
  /* A good file reached through a symlink. */
  snprintf(p, sizeof(p), "%s/good.key", dir);
  ck_assert_int_eq(rpc_key_write(p, err, sizeof(err)), PT_OK);
  char l[200];
  snprintf(l, sizeof(l), "%s/link.key", dir);
  ck_assert_int_eq(symlink(p, l), 0);
  ck_assert_int_eq(rpc_key_load(l, key, err, sizeof(err)), -ELOOP);
  unlink(l);
  /* Owned by another uid (as root: chown to nobody). */
  if (geteuid() == 0) {
    ck_assert_int_eq(chown(p, 65534, 65534), 0);
    ck_assert_int_eq(rpc_key_load(p, key, err, sizeof(err)), -EPERM);
    ck_assert_msg(strstr(err, "owned by uid 65534") != NULL, "%s", err);
  }
  unlink(p);
  /* keygen over a file, a dangling symlink: refused, saying which. */
  snprintf(p, sizeof(p), "%s/again.key", dir);
  ck_assert_int_eq(rpc_key_write(p, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(rpc_key_write(p, err, sizeof(err)), -EEXIST);
  ck_assert_msg(strstr(err, "never overwrites") != NULL, "%s", err);
  unlink(p);
  ck_assert_int_eq(symlink("/tmp/pt-hostile-no-such-target", l), 0);
  ck_assert_int_eq(rpc_key_write(l, err, sizeof(err)), -EEXIST);
  ck_assert_msg(strstr(err, "symlink") != NULL, "%s", err);
  ck_assert_int_eq(access("/tmp/pt-hostile-no-such-target", F_OK), -1);
  unlink(l);
  /* keygen into a directory that does not exist. */
  snprintf(p, sizeof(p), "%s/no/such/dir.key", dir);
  ck_assert_int_eq(rpc_key_write(p, err, sizeof(err)), -ENOENT);
  ck_assert_ptr_nonnull(strstr(err, "no/such/dir.key"));
  rmdir(dir);
}
END_TEST

/* A FIFO with no writer: refused at once, not waited on (the load runs in
 * a child, so a hang fails the test instead of hanging it). */
START_TEST(key_fifo_refused)
{
  char dir[] = "/tmp/pt-rpc-fkey.XXXXXX", p[160], err[256];
  uint8_t key[RPC_KEY_BYTES];

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(p, sizeof(p), "%s/fifo.key", dir);
  ck_assert_int_eq(mkfifo(p, 0600), 0);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0)
    _exit(rpc_key_load(p, key, err, sizeof(err)) == -EINVAL ? 0 : 1);
  int st = 0;
  pid_t w = 0;
  for (int i = 0; i < 300 && w == 0; i++) {
    w = waitpid(pid, &st, WNOHANG);
    if (w == 0)
      usleep(10000);
  }
  if (w == 0) {
    kill(pid, SIGKILL);
    waitpid(pid, &st, 0);
  }
  ck_assert_msg(w == pid, "loading a FIFO as a key hangs");
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "loading a FIFO as a key: not refused with -EINVAL");
  ck_assert_int_eq(rpc_key_load(p, key, err, sizeof(err)), -EINVAL);
  ck_assert_ptr_nonnull(strstr(err, "not a regular file"));
  unlink(p);
  rmdir(dir);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("rpc_hostile");
  TCase *tc = tcase_create("hostile");

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, every_type_before_handshake);
  tcase_add_test(tc, handshake_huge_length);
  tcase_add_test(tc, proof_first);
  tcase_add_test(tc, challenge_reflected);
  tcase_add_test(tc, slowloris_handshake);
  tcase_add_test(tc, handshake_flood_bounded);
  tcase_add_test(tc, hostile_acceptor);
  tcase_add_test(tc, handshake_again_after_auth);
  tcase_add_test(tc, bulk_length_2_63);
  tcase_add_test(tc, bulk_length_just_over_max);
  tcase_add_test(tc, bulk_short_then_eof);
  tcase_add_test(tc, bulk_crc_mismatch_then_good);
  tcase_add_test(tc, bulk_begin_refuses);
  tcase_add_test(tc, bulk_where_not_taken);
  tcase_add_test(tc, bulk_to_peer_that_stops_reading);
  tcase_add_test(tc, frames_behind_partial_payload_capped);
  tcase_add_test(tc, key_files_hostile);
  tcase_add_test(tc, key_fifo_refused);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
