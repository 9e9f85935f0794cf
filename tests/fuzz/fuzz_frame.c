/*
 * fuzz_frame.c — libFuzzer target for the framing layer (rpc/rpc_frame.c):
 * header decoding, the incremental parser and body unpacking, on bytes as
 * hostile as a peer on the socket could send.
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

static int on_frame(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct trace *t = arg;
  ProtobufCMessage *msg;
  int rc = rpc_body_unpack(h->type, body, h->length, &msg);

  check(rc == PT_OK || rc == PT_EPROTO);
  check((rc == PT_OK) == (msg != NULL));
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

  whole.n = 0;
  rpc_parser_init(&p, RPC_MAX_BODY_DEFAULT);
  rc_whole = rpc_parser_feed(&p, data, size, on_frame, &whole);
  rpc_parser_release(&p);

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
