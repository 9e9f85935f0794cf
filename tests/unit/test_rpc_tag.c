/*
 * test_rpc_tag.c — the tags of frames after a TCP handshake (rpc_tag.c,
 * rpc.h "Frame tags"): the construction against RFC 8439's vector, the
 * session keys of both sides, and over the wire against the rpc TCP server
 * fixture (fixture/rpc_tcp_srv.c): a byte changed in a body, a header, a
 * tag, a bulk header or a bulk payload, a frame replayed, reordered,
 * deleted, or reflected from the other direction: each closes that conn
 * with -EACCES and one line naming the frame and the peer, and the
 * listener goes on serving. A long conversation passes.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "common/crc32c.h"
#include "rpc/rpc.h"
#include "tests/unit/tsess.h"
#include "tests/unit/fixture/rpc_tcp_srv.h"
#include "tests/unit/unit.h"

/* RFC 8439 2.6.2: the Poly1305 key of key 80..9f and nonce
 * 000000000001020304050607, which is our unit number 0x0706050403020100
 * (the nonce's last 8 bytes, little-endian). */
START_TEST(tag_is_rfc8439_construction)
{
  static const uint8_t want_otk[32] = {
      0x8a, 0xd5, 0xa0, 0x8b, 0x90, 0x5f, 0x81, 0xcc, 0x81, 0x50, 0x40,
      0x27, 0x4a, 0xb2, 0x94, 0x71, 0xa8, 0x33, 0xb6, 0x37, 0xe3, 0xfd,
      0x0d, 0xa5, 0x08, 0xdb, 0xb8, 0xe2, 0xfd, 0xd1, 0xa6, 0x46};
  uint8_t key[32], msg[300], want[16], got[16];
  struct rpc_tag_ctx t;

  ck_assert_int_ge(sodium_init(), 0);
  for (int i = 0; i < 32; i++)
    key[i] = (uint8_t)(0x80 + i);
  for (size_t i = 0; i < sizeof(msg); i++)
    msg[i] = (uint8_t)(i * 7);
  crypto_onetimeauth(want, msg, sizeof(msg), want_otk);
  rpc_tag_begin(&t, key, 0x0706050403020100ull);
  rpc_tag_update(&t, msg, 100); /* in pieces */
  rpc_tag_update(&t, msg + 100, sizeof(msg) - 100);
  rpc_tag_final(&t, got);
  ck_assert(memcmp(got, want, 16) == 0);
  /* Another unit number, another tag; check() says which matches. */
  rpc_tag_begin(&t, key, 0x0706050403020101ull);
  rpc_tag_update(&t, msg, sizeof(msg));
  ck_assert(!rpc_tag_check(&t, want));
  rpc_tag_begin(&t, key, 0x0706050403020100ull);
  rpc_tag_update(&t, msg, sizeof(msg));
  ck_assert(rpc_tag_check(&t, want));
}
END_TEST

/* Runs a dialler and an acceptor handshake against each other in memory. */
static void pair(struct rpc_handshake *d, struct rpc_handshake *s)
{
  struct rpc_auth a, b;
  const ProtobufCMessage *out;
  uint32_t t;

  auth_init(&a, 1, 3, "cli");
  auth_init(&b, 1, 7, "srv");
  ck_assert_int_eq(rpc_handshake_init(d, &a, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_init(s, &b, false), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(d, 0, NULL, &t, &out), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(s, t, out, &t, &out), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(d, t, out, &t, &out),
                   RPC_HANDSHAKE_DONE);
  ck_assert_int_eq(rpc_handshake_next(s, t, out, &t, &out),
                   RPC_HANDSHAKE_DONE);
}

START_TEST(session_keys_per_direction_and_connection)
{
  struct rpc_handshake d, s, d2, s2;
  struct rpc_session kd, ks, kd2, ks2;

  ck_assert_int_ge(sodium_init(), 0);
  pair(&d, &s);
  ck_assert_int_eq(rpc_handshake_session(&d, &kd), PT_OK);
  ck_assert_int_eq(rpc_handshake_session(&s, &ks), PT_OK);
  ck_assert(memcmp(kd.tx_key, ks.rx_key, 32) == 0);
  ck_assert(memcmp(kd.rx_key, ks.tx_key, 32) == 0);
  ck_assert(memcmp(kd.tx_key, kd.rx_key, 32) != 0);
  ck_assert_uint_eq(kd.tx_seq, 0);
  ck_assert_uint_eq(ks.rx_seq, 0);
  pair(&d2, &s2); /* the same peers again: other keys */
  ck_assert_int_eq(rpc_handshake_session(&d2, &kd2), PT_OK);
  ck_assert_int_eq(rpc_handshake_session(&s2, &ks2), PT_OK);
  ck_assert(memcmp(kd.tx_key, kd2.tx_key, 32) != 0);
  ck_assert(memcmp(ks.tx_key, ks2.tx_key, 32) != 0);
  /* Not before the handshake is done. */
  struct rpc_handshake h;
  struct rpc_auth a;
  auth_init(&a, 1, 3, "x");
  ck_assert_int_eq(rpc_handshake_init(&h, &a, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_session(&h, &kd2), -EINVAL);
  rpc_handshake_release(&d);
  rpc_handshake_release(&s);
  rpc_handshake_release(&d2);
  rpc_handshake_release(&s2);
  rpc_handshake_release(&h);
}
END_TEST

/* Blocking sessions on a socketpair, from an in-memory handshake: frames
 * pass both ways; a changed byte is -EACCES at the receiver. */
START_TEST(sock_session_checks_tags)
{
  struct rpc_handshake d, s;
  struct rpc_sock_session a, b;
  int sv[2];
  struct rpc_hdr h;
  ProtobufCMessage *m;
  Pt__SlotAcquire q = PT__SLOT_ACQUIRE__INIT;

  ck_assert_int_ge(sodium_init(), 0);
  pair(&d, &s);
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
  ck_assert_int_eq(rpc_sock_session_start(&a, sv[0], &d), PT_OK);
  ck_assert_int_eq(rpc_sock_session_start(&b, sv[1], &s), PT_OK);
  for (uint64_t i = 0; i < 100; i++) {
    q.step = i;
    ck_assert_int_eq(rpc_sock_session_send(i % 2 ? &a : &b, RPC_SLOT_ACQUIRE,
                                           i + 1, &q.base,
                                           rpc_now_ms() + 2000), PT_OK);
    ck_assert_int_eq(rpc_sock_session_recv(i % 2 ? &b : &a, 0,
                                           rpc_now_ms() + 2000, &h, &m),
                     PT_OK);
    ck_assert_uint_eq(h.request_id, i + 1);
    ck_assert_uint_eq(((Pt__SlotAcquire *)m)->step, i);
    protobuf_c_message_free_unpacked(m, NULL);
  }
  /* a's next frame, one body byte changed on the way */
  size_t len;
  q.step = 77;
  ck_assert_int_eq(rpc_frame_size(RPC_SLOT_ACQUIRE, &q.base, &len), PT_OK);
  uint8_t f[64];
  ck_assert_int_eq(rpc_frame_write(f, len, RPC_SLOT_ACQUIRE, 5, &q.base),
                   PT_OK);
  rpc_tag_seal(&a.keys, f, len, f + len);
  f[RPC_HDR_BYTES] ^= 0x01;
  write_all(sv[0], f, len + RPC_TAG_BYTES);
  ck_assert_int_eq(rpc_sock_session_recv(&b, 0, rpc_now_ms() + 2000, &h, &m),
                   -EACCES);
  ck_assert_ptr_null(m);
  /* An untagged session is the plain calls. */
  struct rpc_sock_session p;
  ck_assert_int_eq(rpc_sock_session_start(&p, sv[1], NULL), PT_OK);
  ck_assert(!p.tagged);
  rpc_sock_session_release(&a);
  rpc_sock_session_release(&b);
  close(sv[0]);
  close(sv[1]);
  rpc_handshake_release(&d);
  rpc_handshake_release(&s);
}
END_TEST

/* ---- over the wire, against the fixture's server ------------------------- */

/* fd's next SLOT_ACQUIRE (request id id, step) packed and tagged. */
static uint8_t *acquire(int fd, uint64_t id, uint64_t step, size_t *len)
{
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  uint8_t *f;

  a.step = step;
  ck_assert_int_eq(tsess_pack(fd, &f, len, RPC_SLOT_ACQUIRE, id, &a.base),
                   PT_OK);
  return f;
}

/* The server closed the conn it accepted (the first one) with -EACCES,
 * after one line naming frame seq and the peer; a new client is served. */
static void expect_tag_refusal(int fd, uint64_t seq)
{
  char want[256];

  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(S.accepted >= 1 && S.recs[0].closes == 1);
  ck_assert_int_eq(S.recs[0].err, -EACCES);
  snprintf(want, sizeof(want), "rpc: frame %llu from %s failed its "
           "authentication tag", (unsigned long long)seq, S.recs[0].peer_name);
  ck_assert_msg(count_lines(want) == 1, "no line '%s' in:\n%s", want, S.log);
  ck_assert_int_eq(count_lines("failed its authentication tag"), 1);
  ck_assert_int_eq(count_lines("rpc: "), 1); /* that line alone */
  close(fd);
  int fd2 = authed_client();
  call_ok(fd2, 9);
  close(fd2);
}

/* How a tagged frame is spoiled on the way: which byte. */
enum spoil { SPOIL_BODY, SPOIL_HEADER, SPOIL_TAG };

static void spoiled_frame(enum spoil how)
{
  size_t len;

  srv_setup();
  int fd = authed_client();
  call_ok(fd, 1); /* frame 0 */
  uint8_t *f = acquire(fd, 50, 2, &len); /* frame 1 */
  if (how == SPOIL_BODY)
    f[RPC_HDR_BYTES + 1] ^= 0x04; /* the step: still a valid message */
  else if (how == SPOIL_HEADER)
    f[16] ^= 0x80; /* the request id: still a valid header */
  else
    f[len - 1] ^= 0x01;
  write_all(fd, f, len);
  free(f);
  expect_tag_refusal(fd, 1);
  ck_assert_int_eq(S.recs[0].msgs, 1); /* the spoiled one never reached it */
  srv_stop();
}

START_TEST(tampered_body_refused)
{
  spoiled_frame(SPOIL_BODY);
}
END_TEST

START_TEST(tampered_header_refused)
{
  spoiled_frame(SPOIL_HEADER);
}
END_TEST

START_TEST(tampered_tag_refused)
{
  spoiled_frame(SPOIL_TAG);
}
END_TEST

/* A frame without any tag (as a version-1 peer would send after a
 * handshake it could not have passed): the next bytes are taken as its
 * tag, and it fails. */
START_TEST(untagged_frame_refused)
{
  uint8_t *f;
  size_t len;
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;

  srv_setup();
  int fd = authed_client();
  ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_SLOT_ACQUIRE, 1, &a.base),
                   PT_OK);
  write_all(fd, f, len);
  write_all(fd, f, len); /* the second one's bytes as the first's tag */
  free(f);
  expect_tag_refusal(fd, 0);
  srv_stop();
}
END_TEST

START_TEST(replayed_frame_refused)
{
  size_t len;

  srv_setup();
  int fd = authed_client();
  uint8_t *f = acquire(fd, 1, 3, &len); /* frame 0, good */
  write_all(fd, f, len);
  struct rpc_hdr h;
  ProtobufCMessage *m;
  ck_assert_int_eq(rpc_sock_session_recv(tsess(fd), 0, rpc_now_ms() + 5000,
                                         &h, &m), PT_OK);
  ck_assert_uint_eq(((Pt__SlotReply *)m)->generation, 6);
  protobuf_c_message_free_unpacked(m, NULL);
  write_all(fd, f, len); /* the same bytes again, as frame 1 */
  free(f);
  expect_tag_refusal(fd, 1);
  ck_assert_int_eq(S.recs[0].msgs, 1);
  srv_stop();
}
END_TEST

/* Two frames sent in the other order, and a frame left out. */
START_TEST(reordered_or_deleted_frame_refused)
{
  size_t l1, l2;

  srv_setup();
  int fd = authed_client();
  uint8_t *f1 = acquire(fd, 1, 1, &l1); /* frame 0 */
  uint8_t *f2 = acquire(fd, 2, 2, &l2); /* frame 1 */
  write_all(fd, f2, l2);
  write_all(fd, f1, l1);
  free(f1);
  free(f2);
  expect_tag_refusal(fd, 0);
  srv_stop();

  srv_setup();
  fd = authed_client();
  f1 = acquire(fd, 1, 1, &l1); /* frame 0: never sent */
  f2 = acquire(fd, 2, 2, &l2); /* frame 1 */
  write_all(fd, f2, l2);
  free(f1);
  free(f2);
  expect_tag_refusal(fd, 0);
  ck_assert_int_eq(S.recs[0].msgs, 0);
  srv_stop();
}
END_TEST

/* The server's own reply, its bytes as they came, sent back to it: tagged
 * under the other direction's key, so refused. */
START_TEST(reflected_frame_refused)
{
  size_t len;

  srv_setup();
  int fd = authed_client();
  uint8_t *f = acquire(fd, 1, 4, &len);
  write_all(fd, f, len);
  free(f);
  uint8_t reply[256], hdr[RPC_HDR_BYTES];
  struct rpc_hdr h;
  ck_assert_int_eq(rpc_sock_read_all(fd, hdr, sizeof(hdr),
                                     rpc_now_ms() + 5000), PT_OK);
  ck_assert_int_eq(rpc_hdr_decode(hdr, sizeof(reply), &h), PT_OK);
  ck_assert_uint_eq(h.type, RPC_SLOT_REPLY);
  memcpy(reply, hdr, sizeof(hdr));
  ck_assert_int_eq(rpc_sock_read_all(fd, reply + sizeof(hdr),
                                     h.length + RPC_TAG_BYTES,
                                     rpc_now_ms() + 5000), PT_OK);
  write_all(fd, reply, sizeof(hdr) + h.length + RPC_TAG_BYTES);
  expect_tag_refusal(fd, 1);
  srv_stop();
}
END_TEST

/* ---- bulk frames --------------------------------------------------------- */

static void bulk_setup(void)
{
  g_bulk = true;
  srv_setup();
}

START_TEST(tampered_bulk_payload_refused)
{
  static uint8_t src[100000];
  struct rpc_bulk_hdr bh = {.kind = 0, .length = sizeof(src)};
  uint8_t tag[RPC_TAG_BYTES];

  for (size_t i = 0; i < sizeof(src); i++)
    src[i] = (uint8_t)(i * 31);
  bh.crc32c = crc32c_update(CRC32C_SEED, src, sizeof(src));
  bulk_setup();
  int fd = authed_client();
  /* One good transfer first: frames 0 and 1 (header, payload). */
  ck_assert_int_eq(rpc_sock_session_send_bulk(tsess(fd), &bh, src,
                                              rpc_now_ms() + 5000), PT_OK);
  WAIT_FOR(S.dones == 1);
  ck_assert_int_eq(S.last_status, PT_OK);
  ck_assert(memcmp(g_dst, src, sizeof(src)) == 0);
  /* Then frame 2, a header with the CRC of the changed payload (so that
   * only the tag can catch it), and payload 3, changed after its tag was
   * computed. */
  static uint8_t bad[sizeof(src)];
  memcpy(bad, src, sizeof(src));
  bad[5000] ^= 0x10;
  Pt__BulkHeader m = PT__BULK_HEADER__INIT;
  m.length = sizeof(bad);
  m.crc32c = crc32c_update(CRC32C_SEED, bad, sizeof(bad));
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_BULK, 0, &m.base,
                                         rpc_now_ms() + 5000), PT_OK);
  ck_assert_uint_eq(tsess_tag2(fd, src, sizeof(src), NULL, 0, tag),
                    RPC_TAG_BYTES);
  write_all(fd, bad, sizeof(bad));
  write_all(fd, tag, sizeof(tag));
  expect_tag_refusal(fd, 3);
  ck_assert_int_eq(S.begins, 2); /* its header was proved: it began */
  ck_assert_int_eq(S.dones, 2);
  ck_assert_int_eq(S.last_status, -EACCES); /* never PT_OK */
  srv_stop();
}
END_TEST

START_TEST(tampered_bulk_header_refused_before_begin)
{
  static uint8_t src[1000];
  Pt__BulkHeader m = PT__BULK_HEADER__INIT;
  uint8_t *f;
  size_t len;

  bulk_setup();
  int fd = authed_client();
  m.kind = 3;
  m.length = sizeof(src);
  m.crc32c = crc32c_update(CRC32C_SEED, src, sizeof(src));
  ck_assert_int_eq(tsess_pack(fd, &f, &len, RPC_BULK, 0, &m.base), PT_OK);
  f[RPC_HDR_BYTES + 1] ^= 0x01; /* kind 3 -> 2: still a valid header */
  write_all(fd, f, len);
  free(f);
  write_all(fd, src, sizeof(src));
  expect_tag_refusal(fd, 0);
  ck_assert_int_eq(S.begins, 0); /* on_bulk_begin never saw it */
  srv_stop();
}
END_TEST

/* Many frames and bulk payloads both ways on one conn: every tag in turn. */
START_TEST(long_conversation_passes)
{
  static uint8_t src[300000];
  struct rpc_bulk_hdr bh = {.kind = 0, .length = sizeof(src)};

  bulk_setup();
  int fd = authed_client();
  for (uint64_t i = 1; i <= 3000; i++) {
    call_ok(fd, i);
    if (i % 300 == 0) {
      memset(src, (int)i, sizeof(src));
      bh.crc32c = crc32c_update(CRC32C_SEED, src, sizeof(src));
      ck_assert_int_eq(rpc_sock_session_send_bulk(tsess(fd), &bh, src,
                                                  rpc_now_ms() + 5000),
                       PT_OK);
    }
  }
  WAIT_FOR(S.dones == 10);
  ck_assert_int_eq(S.last_status, PT_OK);
  ck_assert(memcmp(g_dst, src, sizeof(src)) == 0);
  /* An empty payload has its tag too. */
  struct rpc_bulk_hdr empty = {.kind = 0, .length = 0,
                               .crc32c = crc32c_update(CRC32C_SEED, src, 0)};
  ck_assert_int_eq(rpc_sock_session_send_bulk(tsess(fd), &empty, NULL,
                                              rpc_now_ms() + 5000), PT_OK);
  WAIT_FOR(S.dones == 11);
  ck_assert_int_eq(S.last_status, PT_OK);
  call_ok(fd, 1);
  ck_assert_uint_eq(tsess(fd)->keys.tx_seq, 3001 + 11 * 2);
  ck_assert_uint_eq(tsess(fd)->keys.rx_seq, 3001);
  ck_assert_int_eq(S.recs[0].closes, 0);
  ck_assert_int_eq(count_lines("authentication tag"), 0);
  close(fd);
  srv_stop();
}
END_TEST

/* A dialler of handshake version 1 (whose frames would carry no tags) is
 * refused at its HELLO with a line that says so. */
START_TEST(version_1_hello_refused_with_reason)
{
  struct rpc_handshake hs;
  struct rpc_auth a;
  const ProtobufCMessage *out;
  uint32_t t;
  uint8_t *f;
  size_t len;

  srv_setup();
  auth_init(&a, 1, 3, "old");
  ck_assert_int_eq(rpc_handshake_init(&hs, &a, true), PT_OK);
  ck_assert_int_eq(rpc_handshake_next(&hs, 0, NULL, &t, &out), PT_OK);
  hs.out.hello.version = 1;
  ck_assert_int_eq(rpc_frame_pack(&f, &len, t, 0, out), PT_OK);
  int fd = tcp_client();
  write_all(fd, f, len);
  free(f);
  ck_assert(unit_closed_by_peer(fd, 5000));
  WAIT_FOR(count_locked("it speaks handshake version 1, this side 2") == 1);
  ck_assert_int_eq(S.accepted, 0);
  close(fd);
  rpc_handshake_release(&hs);
  srv_stop();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("rpc_tag");
  TCase *tc = tcase_create("tag");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, tag_is_rfc8439_construction);
  tcase_add_test(tc, session_keys_per_direction_and_connection);
  tcase_add_test(tc, sock_session_checks_tags);
  tcase_add_test(tc, tampered_body_refused);
  tcase_add_test(tc, tampered_header_refused);
  tcase_add_test(tc, tampered_tag_refused);
  tcase_add_test(tc, untagged_frame_refused);
  tcase_add_test(tc, replayed_frame_refused);
  tcase_add_test(tc, reordered_or_deleted_frame_refused);
  tcase_add_test(tc, reflected_frame_refused);
  tcase_add_test(tc, tampered_bulk_payload_refused);
  tcase_add_test(tc, tampered_bulk_header_refused_before_begin);
  tcase_add_test(tc, long_conversation_passes);
  tcase_add_test(tc, version_1_hello_refused_with_reason);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
