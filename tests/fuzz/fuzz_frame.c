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
 * must pack again. Any difference aborts (a finding). ASan and UBSan watch
 * the memory side. Seeds: tests/fuzz/seeds (see tests/fuzz/make_seeds.py).
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
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
  if (t->n < MAX_FRAMES) {
    t->f[t->n].h = *h;
    t->f[t->n].body_hash = fnv1a(body, h->length);
    t->f[t->n].unpack_rc = rc;
  }
  t->n++;
  return 0;
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

  whole.n = 0;
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  rc_whole = rpc_parser_feed(&p, data, size, on_frame, &whole);
  rpc_parser_release(&p);
  rpc_handshake_release(&hs_acc);
  rpc_handshake_release(&hs_dial);
  check(rpc_handshake_init(&hs_acc, &self, false) == PT_OK);
  check(rpc_handshake_init(&hs_dial, &self, true) == PT_OK);
  check(rpc_handshake_next(&hs_dial, 0, NULL, &out_type, &out) == PT_OK);

  /* The same bytes in pieces of pseudo-random sizes (1 to 64 bytes, now and
   * then a large one), including empty pieces. */
  split.n = 0;
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
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
  rpc_parser_release(&p);
  rpc_handshake_release(&hs_acc);
  rpc_handshake_release(&hs_dial);

  check(rc_whole == PT_OK || rc_whole == PT_EPROTO || rc_whole == PT_ETOOBIG ||
        rc_whole == -ENOMEM);
  check(rc_split == rc_whole);
  check(split.n == whole.n);
  for (size_t i = 0; i < whole.n && i < MAX_FRAMES; i++) {
    check(split.f[i].h.type == whole.f[i].h.type);
    check(split.f[i].h.length == whole.f[i].h.length);
    check(split.f[i].h.flags == whole.f[i].h.flags);
    check(split.f[i].h.request_id == whole.f[i].h.request_id);
    check(split.f[i].body_hash == whole.f[i].body_hash);
    check(split.f[i].unpack_rc == whole.f[i].unpack_rc);
  }
  return 0;
}
