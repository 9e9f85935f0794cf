/*
 * rpc_bulk.c — bulk frames (rpc.h: rpc_conn_send_bulk, ops.on_bulk_begin):
 * an RPC_BULK frame whose body is a Pt__BulkHeader, then the raw payload.
 *
 * Sending: the header frame and the caller's payload go out in one
 * uv_write of two buffers, the payload from the caller's memory (never
 * copied); the caller gets it back in its sent callback. Backpressure: a
 * send is refused with -EAGAIN while the conn holds bulk_queue_max bytes
 * or more unwritten, and on_drain tells the sender when it is below again.
 *
 * Receiving: a conn with on_bulk_begin reads exactly up to the end of each
 * frame (rpc_conn.c's alloc_cb), so when an RPC_BULK frame has been parsed
 * not one byte of its payload has been read yet. on_bulk_begin names the
 * destination, and alloc_cb hands libuv that destination for every read of
 * the payload: the bytes go from the socket into it, and their CRC32C is
 * computed read by read, while they are hot.
 *
 * Invariants:
 *   - a header whose length exceeds ops.max_bulk closes the conn
 *     (PT_ETOOBIG) before any payload byte is read;
 *   - every on_bulk_begin that returned PT_OK gets exactly one
 *     on_bulk_done, and every send that returned PT_OK exactly one sent
 *     callback, whatever happens to the conn;
 *   - a CRC mismatch fails that transfer only: the stream is still in step,
 *     so the conn stays open;
 *   - on a tagged (TCP) conn the header frame's tag is checked before
 *     on_bulk_begin sees it, and the payload is the next unit: its tag,
 *     after it, is computed piece by piece with the CRC and checked before
 *     on_bulk_done says PT_OK; a wrong one closes the conn (-EACCES, and
 *     on_bulk_done gets that). The sender tags the payload as the frame
 *     goes to libuv (rpc_conn.c), in one pass over the caller's buffer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <uv.h>

#include "pt.h"
#include "common/crc32c.h"
#include "rpc/rpc.h"
#include "rpc/rpc_int.h"

/* A payload is read in pieces of at most this much, so that each piece's
 * CRC is computed while the piece is still in the cache. */
#define READ_PIECE ((size_t)256 << 10)

/* ---- sending --------------------------------------------------------------- */

int rpc_conn_send_bulk(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                       const void *payload, rpc_bulk_sent_cb sent, void *arg)
{
  Pt__BulkHeader m = PT__BULK_HEADER__INIT;
  struct rpci_wreq *w;
  int rc;

  if (c->closing)
    return -EPIPE;
  if (h->length > 0 && payload == NULL)
    return -EINVAL;
  if (rpc_conn_queued_bytes(c) >= c->ops.bulk_queue_max) {
    c->drain_owed = true;
    return -EAGAIN;
  }
  m.kind = h->kind;
  m.tag = h->tag;
  m.offset = h->offset;
  m.length = h->length;
  m.crc32c = h->crc32c;
  rc = rpci_wreq_new(RPC_BULK, 0, &m.base, &w);
  if (rc != PT_OK)
    return rc;
  w->bulk = true;
  w->payload = payload;
  w->payload_len = (size_t)h->length;
  w->sent = sent;
  w->sent_arg = arg;
  rc = rpci_queue(c, w);
  if (rc < 0) {
    free(w);
    return rc;
  }
  return PT_OK;
}

void rpci_bulk_written(struct rpc_conn *c, struct rpci_wreq *w, int status)
{
  c->bulk_inflight -= w->payload_len;
  if (w->sent != NULL) {
    int st = status == 0 ? PT_OK
             : status == UV_ECANCELED
                 ? (c->close_err != 0 ? c->close_err : -ECANCELED)
                 : status;
    w->sent(c, w->sent_arg, st);
  }
}

void rpci_bulk_drain_check(struct rpc_conn *c)
{
  if (c->drain_owed && !c->closing &&
      rpc_conn_queued_bytes(c) < c->ops.bulk_queue_max) {
    c->drain_owed = false;
    if (c->ops.on_drain != NULL)
      c->ops.on_drain(c);
  }
}

/* ---- receiving ------------------------------------------------------------- */

static void bulk_end(struct rpc_conn *c, int status)
{
  struct rpci_bulk_rx b = c->brx;

  memset(&c->brx, 0, sizeof(c->brx));
  if (c->ops.on_bulk_done != NULL)
    c->ops.on_bulk_done(c, &b.h, b.dst, status);
}

/* The payload is in (and, on a tagged conn, its tag checked). */
static void bulk_finish(struct rpc_conn *c)
{
  int status = PT_OK;

  if (c->brx.dst == NULL)
    status = -ECANCELED;
  else if (c->brx.crc != c->brx.h.crc32c)
    status = PT_ECHECKSUM;
  bulk_end(c, status);
}

int rpci_bulk_frame(struct rpc_conn *c, const struct rpc_hdr *h,
                    const uint8_t *body)
{
  struct rpc_bulk_hdr bh;
  void *dst = NULL;
  int rc;

  if (c->ops.on_bulk_begin == NULL)
    return PT_EPROTO; /* this conn takes no bulk frames */
  rc = rpc_bulk_hdr_decode(body, h->length, c->ops.max_bulk, &bh);
  if (rc != PT_OK)
    return rc; /* PT_ETOOBIG: refused before a payload byte is read */
  rc = c->ops.on_bulk_begin(c, &bh, &dst);
  if (rc != 0)
    return rc < 0 ? rc : PT_EPROTO;
  c->brx.active = true;
  c->brx.h = bh;
  c->brx.dst = dst;
  c->brx.have = 0;
  c->brx.crc = CRC32C_SEED;
  c->brx.tagged = c->tagged;
  c->brx.tag_have = 0;
  if (c->tagged) { /* the payload is the next unit, its tag after it */
    c->brx.seq = c->sess.rx_seq++;
    rpc_tag_begin(&c->brx.mac, c->sess.rx_key, c->brx.seq);
  }
  if (c->closing)
    return RPCI_FRAME_STOP; /* on_bulk_done comes from the close */
  if (bh.length == 0 && !c->brx.tagged)
    bulk_finish(c);
  return c->closing ? RPCI_FRAME_STOP : PT_OK;
}

void rpci_bulk_alloc(struct rpc_conn *c, uv_buf_t *buf)
{
  uint64_t left = c->brx.h.length - c->brx.have;

  if (left == 0) { /* tagged: the payload is in, its tag follows */
    buf->base = (char *)c->brx.tag + c->brx.tag_have;
    buf->len = RPC_TAG_BYTES - c->brx.tag_have;
  } else if (c->brx.dst != NULL) {
    buf->base = (char *)c->brx.dst + c->brx.have;
    buf->len = left < READ_PIECE ? (size_t)left : READ_PIECE;
  } else { /* discarding: through the thread's read buffer */
    buf->base = (char *)rpci_read_buf();
    buf->len = left < RPCI_READ_BUF_BYTES ? (size_t)left : RPCI_READ_BUF_BYTES;
  }
}

/* The payload's tag is in: check it, then finish (or close the conn). */
static void bulk_tag_in(struct rpc_conn *c)
{
  char what[128];

  if (rpc_tag_check(&c->brx.mac, c->brx.tag)) {
    bulk_finish(c);
    return;
  }
  snprintf(what, sizeof(what), "the payload of bulk frame %" PRIu64
           ", %" PRIu64 " bytes", c->brx.seq - 1, c->brx.h.length);
  rpci_tag_fail(c, c->brx.seq, what); /* on_bulk_done(-EACCES) follows */
}

void rpci_bulk_read(struct rpc_conn *c, size_t n)
{
  if (c->brx.have == c->brx.h.length) { /* tagged: tag bytes */
    c->brx.tag_have += n;
    if (c->brx.tag_have == RPC_TAG_BYTES)
      bulk_tag_in(c);
    return;
  }
  const uint8_t *p = c->brx.dst != NULL ? c->brx.dst + c->brx.have
                                        : rpci_read_buf();
  /* CRC and tag over the same piece, while it is in the cache. */
  if (c->brx.dst != NULL)
    c->brx.crc = crc32c_update(c->brx.crc, p, n);
  if (c->brx.tagged)
    rpc_tag_update(&c->brx.mac, p, n);
  c->brx.have += n;
  if (c->brx.have == c->brx.h.length && !c->brx.tagged)
    bulk_finish(c);
}

void rpci_bulk_abort(struct rpc_conn *c, int err)
{
  if (c->brx.active)
    bulk_end(c, err);
}
