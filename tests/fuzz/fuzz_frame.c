/*
 * fuzz_frame.c — libFuzzer target for the framing layer (rpc/rpc_frame.c):
 * header decoding, the incremental parser and body unpacking, on bytes as
 * hostile as a peer on the socket could send; and the transport's own
 * frames: every bulk header is decoded (rpc_bulk_hdr_decode) at several
 * limits, and every handshake message is checked (rpc_auth_msg_check) and
 * fed to an acceptor's and a dialler's handshake (rpc/rpc_auth.c), which
 * must never complete: that would take a MAC made with a key the input
 * cannot know (an authentication bypass, reported as a finding).
 *
 * Each input is treated as a byte stream. It is parsed twice: once in one
 * piece, once cut at pseudo-random points derived from the input's hash.
 * Both runs must deliver the same frames and end with the same result; every
 * delivered body is unpacked as its type, and every message that decodes
 * must pack again. Any difference aborts (a finding).
 *
 * Then the same bytes go to a real connection (rpc/rpc_conn.c and
 * rpc/rpc_bulk.c on a libuv loop), as a peer on a Unix socket would send
 * them, in pseudo-random pieces: the bulk receive path reads payloads
 * straight into the buffers its on_bulk_begin names (each exactly as long
 * as the header says, so ASan sees any byte written past one), discards
 * some, and must call on_bulk_done exactly once per payload begun, with
 * PT_OK only when the bytes match the header's CRC32C, PT_ECHECKSUM only
 * when they do not, and end by closing on the peer's EOF within a deadline,
 * holding no buffered bytes after.
 *
 * ASan and UBSan watch the memory side. Seeds: tests/fuzz/seeds (see
 * tests/fuzz/make_seeds.py). Without libFuzzer, the suite runs this same
 * target over the seeds and deterministic mutations of them
 * (tests/unit/test_rpc_fuzz.c), plain and under ASan/UBSan.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "common/crc32c.h"
#include "rpc/rpc.h"

#define MAX_FRAMES 4096

struct trace {
  size_t n;
  struct {
    struct rpc_hdr h;
    uint64_t body_hash;
    int unpack_rc;
  } f[MAX_FRAMES];
};

static uint64_t fnv1a(const uint8_t *p, size_t n)
{
  uint64_t h = 0xcbf29ce484222325ull;
  for (size_t i = 0; i < n; i++)
    h = (h ^ p[i]) * 0x100000001b3ull;
  return h;
}

static void check(int cond)
{
  if (!cond)
    abort();
}

/* One acceptor and one dialler handshake per input, fed every handshake
 * message in stream order. */
static struct rpc_handshake hs_acc, hs_dial;

static void handshake_frames(uint32_t type, const ProtobufCMessage *msg)
{
  const ProtobufCMessage *out;
  uint32_t out_type;
  int crc = rpc_auth_msg_check(type, msg);

  check(crc == PT_OK || crc == PT_EPROTO);
  if (crc == PT_OK && type == RPC_AUTH_HELLO) {
    const Pt__AuthHello *m = (const Pt__AuthHello *)msg;
    check(m->nonce.len == RPC_AUTH_NONCE_BYTES);
    check(strlen(m->node_id) <= RPC_NODE_ID_MAX);
  }
  for (int side = 0; side < 2; side++) {
    struct rpc_handshake *hs = side == 0 ? &hs_acc : &hs_dial;
    int rc = rpc_handshake_next(hs, type, msg, &out_type, &out);
    check(rc == PT_OK || rc == -EACCES || rc == PT_EPROTO);
    check(rc != RPC_HANDSHAKE_DONE); /* no MAC without the key */
    if (rc == PT_OK) { /* the acceptor answered a HELLO */
      check(side == 0 && type == RPC_AUTH_HELLO && crc == PT_OK);
      check(out_type == RPC_AUTH_CHALLENGE && out != NULL);
      check(rpc_auth_msg_check(out_type, out) == PT_OK);
    }
  }
}

static void bulk_frame(const uint8_t *body, size_t len, int unpack_rc)
{
  static const uint64_t limits[] = {0, 1, (uint64_t)1 << 20, UINT64_MAX};
  struct rpc_bulk_hdr bh;

  for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
    int rc = rpc_bulk_hdr_decode(body, len, limits[i], &bh);
    check(rc == PT_OK || rc == PT_EPROTO || rc == PT_ETOOBIG);
    check((rc == PT_EPROTO) == (unpack_rc != PT_OK));
    if (rc == PT_OK)
      check(bh.length <= limits[i]);
    if (rc == PT_ETOOBIG)
      check(bh.length > limits[i]);
  }
}

/* Odd-sized inputs are parsed as a TCP stream after the handshake: every
 * frame with a tag after its body (rpc_parser_set_trailer). */
static uint32_t g_trailer;
static struct rpc_session g_sess;

static int on_frame(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct trace *t = arg;
  ProtobufCMessage *msg;
  int rc = rpc_body_unpack(h->type, body, h->length, &msg);

  check(rc == PT_OK || rc == PT_EPROTO);
  check((rc == PT_OK) == (msg != NULL));
  if (h->type == RPC_BULK)
    bulk_frame(body, h->length, rc);
  if (rc == PT_OK && (h->type == RPC_AUTH_HELLO ||
                      h->type == RPC_AUTH_CHALLENGE ||
                      h->type == RPC_AUTH_PROOF))
    handshake_frames(h->type, msg);
  if (rc == PT_OK) {
    uint8_t *frame;
    size_t len;
    /* A message protobuf-c accepted must be packable again. */
    check(rpc_frame_pack(&frame, &len, h->type, h->request_id, msg) == PT_OK);
    check(len >= RPC_HDR_BYTES);
    free(frame);
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  if (g_trailer) {
    /* A tagged stream's frame: its tag follows the body, and the input
     * cannot know the key. */
    check(!rpc_tag_open(&g_sess, h, body, body + h->length));
  }
  if (t->n < MAX_FRAMES) {
    t->f[t->n].h = *h;
    t->f[t->n].body_hash = fnv1a(body, h->length + g_trailer);
    t->f[t->n].unpack_rc = rc;
  }
  t->n++;
  return 0;
}

/* ---- the same bytes through a real connection ---- */

#define CONN_MAX_BULK ((uint64_t)1 << 20)
#define CONN_DEADLINE_MS 5000u

static struct {
  uv_loop_t loop;
  struct rpc_listener *l;
  char dir[64], path[108];
  struct rpc_conn *rx;  /* the accepted conn of this input */
  bool accepted, closed;
  uint64_t begun, done, discarded;
} C;

/* Over every input so far (fuzz_replay.c reports them). */
uint64_t fuzz_bulk_ok, fuzz_bulk_bad_crc, fuzz_bulk_discarded,
    fuzz_bulk_cut, fuzz_conn_inputs;

static int conn_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                    ProtobufCMessage *msg)
{
  (void)c;
  (void)h;
  (void)msg; /* every frame type is fine here: roles are the daemons' */
  return 0;
}

static int conn_bulk_begin(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                           void **dst)
{
  (void)c;
  check(h->length <= CONN_MAX_BULK);
  C.begun++;
  if ((h->tag & 3) == 3) { /* now and then, the receiver declines */
    *dst = NULL;
    C.discarded++;
    return PT_OK;
  }
  /* Exactly the announced length: a byte written past it is ASan's. */
  *dst = malloc(h->length > 0 ? h->length : 1);
  check(*dst != NULL);
  return PT_OK;
}

static void conn_bulk_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                           void *dst, int status)
{
  (void)c;
  C.done++;
  check(C.done <= C.begun);
  if (dst == NULL) {
    check(status == -ECANCELED || status < 0);
    fuzz_bulk_discarded++;
  } else if (status == PT_OK) {
    check(crc32c(dst, h->length) == h->crc32c);
    fuzz_bulk_ok++;
  } else if (status == PT_ECHECKSUM) {
    check(crc32c(dst, h->length) != h->crc32c);
    fuzz_bulk_bad_crc++;
  } else {
    check(status < 0 && status != -ECANCELED);
    fuzz_bulk_cut++;
  }
  free(dst);
}

static void conn_close(struct rpc_conn *c, int err)
{
  (void)err;
  if (c == C.rx) {
    C.closed = true;
    C.rx = NULL;
  }
}

static int conn_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  (void)l;
  check(!C.accepted);
  C.accepted = true;
  C.rx = c;
  return 0;
}

static void conn_cleanup(void)
{
  if (C.path[0] != '\0')
    unlink(C.path);
  if (C.dir[0] != '\0')
    rmdir(C.dir);
}

static void conn_init(void)
{
  static bool ready;
  struct rpc_conn_ops ops = {.on_msg = conn_msg, .on_close = conn_close,
                             .on_bulk_begin = conn_bulk_begin,
                             .on_bulk_done = conn_bulk_done,
                             .max_bulk = CONN_MAX_BULK,
                             .idle_ms = CONN_DEADLINE_MS};
  if (ready)
    return;
  ready = true;
  signal(SIGPIPE, SIG_IGN);
  snprintf(C.dir, sizeof(C.dir), "/tmp/ptfuzz.XXXXXX");
  check(mkdtemp(C.dir) != NULL);
  snprintf(C.path, sizeof(C.path), "%s/s", C.dir);
  atexit(conn_cleanup);
  check(uv_loop_init(&C.loop) == 0);
  check(rpc_listen_unix(&C.loop, C.path, &ops, conn_accept, NULL, &C.l) ==
        PT_OK);
}

static void conn_stream(const uint8_t *data, size_t size)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  uint64_t end, x = fnv1a(data, size) ^ 0x9e3779b97f4a7c15ull;
  size_t off = 0;
  int fd;

  conn_init();
  C.accepted = C.closed = false;
  C.begun = C.done = C.discarded = 0;
  memcpy(sa.sun_path, C.path, strlen(C.path) + 1);
  fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  check(fd >= 0);
  check(connect(fd, (struct sockaddr *)&sa, sizeof(sa)) == 0);
  end = rpc_now_ms() + CONN_DEADLINE_MS;
  /* Pieces of 1 to 4096 bytes, the loop run between them, so reads end at
   * varying points of headers, bodies and payloads. */
  while (off < size) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t n = 1 + (size_t)(x % ((x & 0x10) ? 4096 : 64));
    if (n > size - off)
      n = size - off;
    ssize_t w = write(fd, data + off, n);
    if (w > 0)
      off += (size_t)w;
    else if (w < 0 && errno != EAGAIN && errno != EINTR)
      break; /* the conn closed on us (a verdict on the bytes so far) */
    uv_run(&C.loop, UV_RUN_NOWAIT);
    check(rpc_now_ms() < end);
  }
  shutdown(fd, SHUT_WR);
  /* The conn must end on EOF (or have ended on a verdict) by the deadline. */
  while (!C.closed) {
    uv_run(&C.loop, UV_RUN_NOWAIT);
    if (!C.closed)
      usleep(100);
    check(rpc_now_ms() < end);
  }
  close(fd);
  uv_run(&C.loop, UV_RUN_NOWAIT);
  check(C.accepted);
  check(C.done == C.begun); /* every payload begun was ended */
  check(rpc_buffered_bytes() == 0);
  fuzz_conn_inputs++;
}

static struct trace whole, split;

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
  struct rpc_parser p;
  struct rpc_hdr h;
  int rc_whole, rc_split = PT_OK;

  /* The header decoder alone, at several limits; what it accepts must
   * encode back to the same bytes. */
  if (size >= RPC_HDR_BYTES) {
    static const uint32_t limits[] = {0, 1, 4096, RPC_MAX_BODY_DEFAULT, UINT32_MAX};
    for (size_t i = 0; i < sizeof(limits) / sizeof(limits[0]); i++) {
      int rc = rpc_hdr_decode(data, limits[i], &h);
      check(rc == PT_OK || rc == PT_EPROTO || rc == PT_ETOOBIG);
      if (rc == PT_OK) {
        uint8_t again[RPC_HDR_BYTES];
        check(h.length <= limits[i]);
        check(rpc_type_descriptor(h.type) != NULL);
        rpc_hdr_encode(again, &h);
        check(memcmp(again, data, RPC_HDR_BYTES) == 0);
      }
    }
  }

  /* A fixed key: the input cannot know it. The dialler has sent its HELLO
   * and waits for a challenge. */
  struct rpc_auth self = {.role = 1, .node_id = "fuzz"};
  const ProtobufCMessage *out;
  uint32_t out_type;
  memset(self.key, 0x5a, sizeof(self.key));
  check(rpc_handshake_init(&hs_acc, &self, false) == PT_OK);
  check(rpc_handshake_init(&hs_dial, &self, true) == PT_OK);
  check(rpc_handshake_next(&hs_dial, 0, NULL, &out_type, &out) == PT_OK);
  check(out_type == RPC_AUTH_HELLO);

  g_trailer = size % 2 == 1 ? RPC_TAG_BYTES : 0;
  memset(g_sess.rx_key, 0x3c, sizeof(g_sess.rx_key));
  g_sess.rx_seq = 0;
  whole.n = 0;
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  rpc_parser_set_trailer(&p, g_trailer);
  rc_whole = rpc_parser_feed(&p, data, size, on_frame, &whole);
  char where_whole[160], where_split[160];
  rpc_parser_where(&p, where_whole, sizeof(where_whole));
  rpc_parser_release(&p);
  rpc_handshake_release(&hs_acc);
  rpc_handshake_release(&hs_dial);
  check(rpc_handshake_init(&hs_acc, &self, false) == PT_OK);
  check(rpc_handshake_init(&hs_dial, &self, true) == PT_OK);
  check(rpc_handshake_next(&hs_dial, 0, NULL, &out_type, &out) == PT_OK);

  /* The same bytes in pieces of pseudo-random sizes (1 to 64 bytes, now and
   * then a large one), including empty pieces. */
  split.n = 0;
  g_sess.rx_seq = 0;
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  rpc_parser_set_trailer(&p, g_trailer);
  uint64_t x = fnv1a(data, size) | 1;
  size_t off = 0;
  while (off < size && rc_split == PT_OK) {
    x ^= x << 13;
    x ^= x >> 7;
    x ^= x << 17;
    size_t n = (x & 0x700) == 0 ? (size_t)(x >> 20) % 4096 : (size_t)(x % 65);
    if (n > size - off)
      n = size - off;
    rc_split = rpc_parser_feed(&p, data + off, n, on_frame, &split);
    off += n;
  }
  rpc_parser_where(&p, where_split, sizeof(where_split));
  rpc_parser_release(&p);
  rpc_handshake_release(&hs_acc);
  rpc_handshake_release(&hs_dial);

  check(rc_whole == PT_OK || rc_whole == PT_EPROTO || rc_whole == PT_ETOOBIG ||
        rc_whole == -ENOMEM);
  check(rc_split == rc_whole);
  /* where the stream stands reads the same however it came in */
  check(strlen(where_whole) < sizeof(where_whole));
  check(strcmp(where_whole, where_split) == 0);
  check(split.n == whole.n);
  for (size_t i = 0; i < whole.n && i < MAX_FRAMES; i++) {
    check(split.f[i].h.type == whole.f[i].h.type);
    check(split.f[i].h.length == whole.f[i].h.length);
    check(split.f[i].h.flags == whole.f[i].h.flags);
    check(split.f[i].h.request_id == whole.f[i].h.request_id);
    check(split.f[i].body_hash == whole.f[i].body_hash);
    check(split.f[i].unpack_rc == whole.f[i].unpack_rc);
  }

  conn_stream(data, size);
  return 0;
}
