/*
 * rpc_conn.c — frames over a libuv stream connection, whatever the stream
 * (a Unix socket, rpc_unix.c, or TCP, rpc_tcp.c), for ptd (node and SMP).
 * libpt does not link this file.
 *
 * A connection owns a libuv stream, an incremental parser (rpc_frame.c) and
 * its queued writes. Invariants:
 *   - a control frame of up to SEND_DIRECT_MAX bytes sent on a ready conn
 *     is packed on the stack and offered to the kernel at once
 *     (uv_try_write, which takes nothing while an earlier write is still
 *     libuv's, so order holds); what the kernel did not take, and every
 *     other frame, is one allocation (the uv_write_t and the frame bytes
 *     together) that lives until its write_cb, which frees it; a bulk
 *     payload is written from the caller's buffer by the same request;
 *   - a connection whose unwritten frame bytes exceed ops.max_write_queue
 *     is closed with -ENOBUFS: a peer that stops reading cannot make us
 *     hold unbounded memory (bulk payloads are the caller's memory and are
 *     bounded by rpc_conn_send_bulk's -EAGAIN instead);
 *   - nothing but handshake frames goes out or comes in before the conn is
 *     ready (connected, and over TCP authenticated): other frames wait in
 *     the pending queue;
 *   - over TCP, once the handshake is done (c->tagged), every frame is
 *     tagged as it is handed to libuv (rpci_write, send_direct: the order
 *     of the sequence numbers is the wire's, whatever waited in the pending
 *     queue) and every frame received has its tag checked in on_frame
 *     before anything else looks at it; one that fails closes the conn
 *     with -EACCES and one line (rpci_tag_fail);
 *   - a header error, a body that does not decode as its type, a frame
 *     truncated by EOF, or on_msg returning non-zero closes the connection
 *     with one RPC_LOG_CLOSE line (rpc_set_log_cb); the listener keeps
 *     serving other peers;
 *   - closing is idempotent. The conn stays allocated until libuv's close
 *     callback, which settles what is owed (on_bulk_done of a payload
 *     being received, the sent callbacks of queued bulk frames), calls
 *     on_close exactly once and then frees it, so rpc_conn_close may be
 *     called from inside on_msg (or any callback) and the conn stays valid
 *     until that callback returns;
 *   - an accepted conn stays on its listener's list until it is freed, so
 *     rpc_listener_close can detach every conn whatever order libuv runs the
 *     close callbacks in;
 *   - a conn owns two handles, its stream and its timer; both are closed
 *     together and the conn is freed (on_close first) by the second close
 *     callback;
 *   - g_buffered is the sum of every conn's `held` (the bytes its parser
 *     allocated for a partial body, which grow with what the peer sent, not
 *     with the length it announced): a conn's share is updated after each
 *     read and dropped when it closes.
 *
 * SIGPIPE: libuv writes with write(2), so a write to a vanished peer raises
 * SIGPIPE; ptd ignores it at start-up (the daemon's job, not this file's).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "rpc/rpc_int.h"

#define WRITE_QUEUE_DEFAULT ((size_t)64 << 20)
#define BULK_QUEUE_DEFAULT ((size_t)16 << 20)

static size_t g_buffered;
static size_t g_cap = RPC_BUFFER_CAP_DEFAULT;
static rpc_log_fn g_log;

void rpc_set_log_cb(rpc_log_fn fn)
{
  g_log = fn;
}

void rpci_log(enum rpc_log_kind kind, int level, const char *fmt, ...)
{
  char line[512];
  va_list ap;

  if (g_log == NULL)
    return;
  va_start(ap, fmt);
  vsnprintf(line, sizeof(line), fmt, ap);
  va_end(ap);
  g_log(kind, level, line);
}

void rpc_buffer_cap_set(size_t bytes)
{
  g_cap = bytes != 0 ? bytes : RPC_BUFFER_CAP_DEFAULT;
}

size_t rpc_buffered_bytes(void)
{
  return g_buffered;
}

/* Brings c's share of g_buffered up to date with its parser. */
static void conn_account(struct rpc_conn *c)
{
  size_t held = c->parser.body != NULL ? c->parser.body_cap : 0;

  g_buffered = g_buffered - c->held + held;
  c->held = held;
}

void rpci_ops_fill(struct rpc_conn_ops *dst, const struct rpc_conn_ops *src)
{
  *dst = *src;
  if (dst->max_body == 0)
    dst->max_body = RPC_MAX_BODY_DEFAULT;
  if (dst->max_write_queue == 0)
    dst->max_write_queue = WRITE_QUEUE_DEFAULT;
  if (dst->auth_ms == 0)
    dst->auth_ms = RPC_AUTH_TIMEOUT_MS;
  if (dst->max_handshakes == 0)
    dst->max_handshakes = RPC_AUTH_PENDING_DEFAULT;
  if (dst->max_bulk == 0)
    dst->max_bulk = RPC_MAX_BULK_DEFAULT;
  if (dst->bulk_queue_max == 0)
    dst->bulk_queue_max = BULK_QUEUE_DEFAULT;
}

/* ---- closing --------------------------------------------------------------- */

/* What a transfer that will never happen is told. */
static int owed_status(const struct rpc_conn *c)
{
  return c->close_err != 0 ? c->close_err : -ECANCELED;
}

static void conn_close_cb(uv_handle_t *h)
{
  struct rpc_conn *c = h->data;

  if (--c->handles_open > 0)
    return;
  if (c->brx.active)
    rpci_bulk_abort(c, owed_status(c));
  while (c->pending != NULL) {
    struct rpci_wreq *w = c->pending;
    c->pending = w->next;
    if (w->sent != NULL)
      w->sent(c, w->sent_arg, owed_status(c));
    free(w);
  }
  if (c->hs != NULL) {
    rpc_handshake_release(c->hs);
    free(c->hs);
    c->hs = NULL;
  }
  if (c->announced && c->ops.on_close != NULL)
    c->ops.on_close(c, c->close_err);
  rpci_listener_unlink(c);
  rpc_parser_release(&c->parser);
  rpc_session_wipe(&c->sess);
  free(c);
}

void rpc_conn_close(struct rpc_conn *c, int err)
{
  if (c->closing)
    return;
  c->closing = true;
  c->close_err = err;
  rpci_hs_uncount(c);
  /* A partial frame is dropped now, so that its bytes leave the cap. The
   * parser allows this from inside on_frame. Queued frames are dropped
   * (their callbacks run) in conn_close_cb, from the loop. */
  rpc_parser_release(&c->parser);
  conn_account(c);
  uv_close((uv_handle_t *)&c->idle_timer, conn_close_cb);
  /* libuv cancels the queued writes and a pending connect (their callbacks
   * run with UV_ECANCELED) before conn_close_cb. */
  uv_close(&c->io.handle, conn_close_cb);
}

void rpci_printable(const char *in, char *out, size_t cap)
{
  size_t n = 0;

  for (; *in != '\0' && n + 1 < cap; in++)
    out[n++] = *in >= 0x20 && *in < 0x7f ? *in : '?';
  out[n] = '\0';
}

void rpci_conn_fail(struct rpc_conn *c, int err)
{
  if (c->closing)
    return;
  rpci_log(RPC_LOG_CLOSE, RPC_LOG_WARN, "rpc: closing connection from %s: %s",
           c->peer_name, pt_strerror(err));
  rpc_conn_close(c, err);
}

/* " (role R, node id 'ID')" of an authenticated TCP peer, else "". */
static void peer_said(const struct rpc_conn *c, char *who, size_t cap)
{
  char id[65];

  who[0] = '\0';
  if (c->tcp && (c->ready || c->tagged)) {
    rpci_printable(c->peer_node, id, sizeof(id));
    snprintf(who, cap, " (role %u, node id '%s')", (unsigned)c->peer_role,
             id);
  }
}

void rpci_tag_fail(struct rpc_conn *c, uint64_t seq, const char *what)
{
  char who[120];

  if (c->closing)
    return;
  peer_said(c, who, sizeof(who));
  rpci_log(RPC_LOG_CLOSE, RPC_LOG_WARN,
           "rpc: frame %" PRIu64 " from %s failed its authentication tag "
           "(%s): closing the connection%s: %s", seq, c->peer_name, what,
           who, pt_strerror(-EACCES));
  rpc_conn_close(c, -EACCES);
}

void rpci_conn_start_session(struct rpc_conn *c)
{
  if (rpc_handshake_session(c->hs, &c->sess) != PT_OK)
    return; /* not done: the caller never gets here */
  c->tagged = true;
  rpc_parser_set_trailer(&c->parser, RPC_TAG_BYTES);
}

/* A stream that went wrong (a frame refused, EOF inside one): the line
 * says what the peer proved it is (TCP) and where in the stream. */
static void conn_fail_stream(struct rpc_conn *c, int err)
{
  char where[160], who[120];

  if (c->closing)
    return;
  rpc_parser_where(&c->parser, where, sizeof(where));
  peer_said(c, who, sizeof(who));
  rpci_log(RPC_LOG_CLOSE, RPC_LOG_WARN,
           "rpc: closing connection from %s%s: %s%s%s%s", c->peer_name, who,
           pt_strerror(err), where[0] != '\0' ? " (" : "", where,
           where[0] != '\0' ? ")" : "");
  rpc_conn_close(c, err);
}

/* ---- writing --------------------------------------------------------------- */

static void write_cb(uv_write_t *req, int status)
{
  struct rpci_wreq *w = req->data;
  struct rpc_conn *c = w->conn;

  c->frames_inflight -= w->len;
  if (w->payload != NULL || w->sent != NULL)
    rpci_bulk_written(c, w, status);
  free(w);
  if (status < 0 && status != UV_ECANCELED)
    rpc_conn_close(c, status); /* no-op when already closing */
  else
    rpci_bulk_drain_check(c); /* control frames fill the queue too */
}

int rpci_wreq_new(uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg, struct rpci_wreq **out)
{
  size_t len;
  int rc = rpc_frame_size(type, msg, &len);

  if (rc != PT_OK)
    return rc;
  /* Room for the tag that rpci_write adds on a tagged conn. */
  struct rpci_wreq *w = calloc(1, sizeof(*w) + len + RPC_TAG_BYTES);
  if (w == NULL)
    return -ENOMEM;
  rc = rpc_frame_write(w->frame, len, type, request_id, msg);
  if (rc != PT_OK) {
    free(w);
    return rc;
  }
  w->req.data = w;
  w->len = len;
  *out = w;
  return PT_OK;
}

/* Tags w as c's next unit(s) out: the frame (its tag goes after it, in
 * the room rpci_wreq_new left), and a bulk frame's payload (its tag in
 * w->payload_tag). Here, as w goes to libuv, so that the sequence numbers
 * follow the order of the wire. */
static void wreq_seal(struct rpc_conn *c, struct rpci_wreq *w)
{
  rpc_tag_seal(&c->sess, w->frame, w->len, w->frame + w->len);
  w->len += RPC_TAG_BYTES;
  if (w->bulk) {
    struct rpc_tag_ctx t;
    rpc_tag_begin(&t, c->sess.tx_key, c->sess.tx_seq++);
    rpc_tag_update(&t, w->payload, w->payload_len);
    rpc_tag_final(&t, w->payload_tag);
  }
  w->sealed = true;
}

int rpci_write(struct rpc_conn *c, struct rpci_wreq *w)
{
  uv_buf_t b[3];
  unsigned int nb = 1;
  bool tag_payload = c->tagged && w->bulk && !w->sealed;

  w->conn = c;
  if (c->tagged && !w->sealed)
    wreq_seal(c, w);
  b[0] = uv_buf_init((char *)w->frame, (unsigned int)w->len);
  if (w->payload != NULL && w->payload_len > 0) {
    b[nb].base = (char *)w->payload; /* written, never modified */
    b[nb].len = w->payload_len;
    nb++;
  }
  if (tag_payload)
    b[nb++] = uv_buf_init((char *)w->payload_tag, RPC_TAG_BYTES);
  int rc = uv_write(&w->req, &c->io.stream, b, nb, write_cb);
  if (rc < 0) {
    rpc_conn_close(c, rc);
    return rc;
  }
  c->bulk_inflight += w->payload_len;
  c->frames_inflight += w->len;
  return PT_OK;
}

int rpci_queue(struct rpc_conn *c, struct rpci_wreq *w)
{
  w->conn = c;
  if (c->ready)
    return rpci_write(c, w);
  *c->pending_tail = w;
  c->pending_tail = &w->next;
  c->pending_bytes += w->len + w->payload_len;
  c->pending_payload += w->payload_len;
  return PT_OK;
}

size_t rpc_conn_queued_bytes(struct rpc_conn *c)
{
  return uv_stream_get_write_queue_size(&c->io.stream) + c->pending_bytes;
}

/* Frame bytes not yet written: what max_write_queue bounds. Counted by the
 * frames themselves, from uv_write to their write_cb, and in the pending
 * queue: libuv's queue size mixes in payload bytes, of which a payload
 * partly written has sent an unknown share, so subtracting bulk_inflight
 * from it would let that share through again as frames. A frame counts
 * until its write_cb, even when the kernel took it at once: one loop turn's
 * worth of frames at most, never a stuck peer's backlog. */
static size_t frames_queued(struct rpc_conn *c)
{
  return c->frames_inflight + (c->pending_bytes - c->pending_payload);
}

/* A frame this small is packed on the stack and offered to the kernel
 * with uv_try_write first. */
#define SEND_DIRECT_MAX 4096u

/* Packs a frame of len bytes into buf (SEND_DIRECT_MAX bytes) and writes as
 * much of it as the socket takes now. OUT: *w, a wreq of what is left
 * (NULL when the kernel took it all). With a write or a callback of libuv's
 * still to come on the stream, uv_try_write takes nothing (-EAGAIN): frames
 * keep their order. A write error is not judged here: the wreq carries the
 * whole frame and uv_write reports it through write_cb, as for any frame. */
static int send_direct(struct rpc_conn *c, uint8_t *buf, size_t len,
                       uint32_t type, uint64_t request_id,
                       const ProtobufCMessage *msg, struct rpci_wreq **out)
{
  int rc = rpc_frame_write(buf, len, type, request_id, msg);

  *out = NULL;
  if (rc != PT_OK)
    return rc;
  if (c->tagged) { /* buf has RPC_TAG_BYTES of room past len */
    rpc_tag_seal(&c->sess, buf, len, buf + len);
    len += RPC_TAG_BYTES;
  }
  uv_buf_t b = uv_buf_init((char *)buf, (unsigned int)len);
  int n = uv_try_write(&c->io.stream, &b, 1);
  if (n == (int)len)
    return PT_OK;
  size_t done = n > 0 ? (size_t)n : 0;
  struct rpci_wreq *w = calloc(1, sizeof(*w) + len - done);
  if (w == NULL) {
    if (done > 0) /* half a frame is on the wire: the stream is lost */
      rpc_conn_close(c, -ENOMEM);
    return -ENOMEM;
  }
  memcpy(w->frame, buf + done, len - done);
  w->req.data = w;
  w->len = len - done;
  w->sealed = true; /* its tag, if any, is in it */
  *out = w;
  return PT_OK;
}

int rpc_conn_send(struct rpc_conn *c, uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg)
{
  struct rpci_wreq *w;
  size_t len;
  int rc;

  if (c->closing)
    return -EPIPE;
  rc = rpc_frame_size(type, msg, &len);
  if (rc != PT_OK)
    return rc;
  if (c->ready && len <= SEND_DIRECT_MAX) {
    /* The common case (a control frame to a peer that reads): one write(2),
     * no allocation, no request for libuv to complete on a later turn. */
    uint8_t buf[SEND_DIRECT_MAX + RPC_TAG_BYTES];
    rc = send_direct(c, buf, len, type, request_id, msg, &w);
    if (rc != PT_OK || w == NULL)
      return rc;
  } else {
    rc = rpci_wreq_new(type, request_id, msg, &w);
    if (rc != PT_OK)
      return rc;
  }
  rc = rpci_queue(c, w);
  if (rc < 0) {
    free(w);
    return rc;
  }
  /* uv_write tries the socket at once, so this counts only what the peer
   * has not taken yet. */
  if (frames_queued(c) > c->ops.max_write_queue) {
    rpci_conn_fail(c, -ENOBUFS);
    return -ENOBUFS;
  }
  return PT_OK;
}

void rpci_conn_ready(struct rpc_conn *c)
{
  if (c->closing)
    return;
  c->ready = true;
  c->ready_by_ms = 0;
  c->parser.max_body = c->ops.max_body;
  c->last_rx_ms = uv_now(c->io.handle.loop);
  rpci_timer_arm(c);
  while (c->pending != NULL && !c->closing) {
    struct rpci_wreq *w = c->pending;
    c->pending = w->next;
    if (c->pending == NULL)
      c->pending_tail = &c->pending;
    c->pending_bytes -= w->len + w->payload_len;
    c->pending_payload -= w->payload_len;
    w->next = NULL;
    if (rpci_write(c, w) < 0) {
      /* Closed: w goes back to the queue, whose callbacks conn_close_cb
       * runs. */
      w->next = c->pending;
      c->pending = w;
      if (w->next == NULL)
        c->pending_tail = &w->next;
      return;
    }
  }
  if (!c->closing && c->dialled && c->ops.on_ready != NULL)
    c->ops.on_ready(c);
}

/* ---- reading --------------------------------------------------------------- */

/* Thread-local: ptd's loops may run on more than one thread. */
static _Thread_local uint8_t t_rbuf[RPCI_READ_BUF_BYTES];

uint8_t *rpci_read_buf(void)
{
  return t_rbuf;
}

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct rpc_conn *c = h->data;
  size_t n = RPCI_READ_BUF_BYTES;

  (void)suggested;
  if (c->brx.active) {
    rpci_bulk_alloc(c, buf);
    return;
  }
  /* A conn that takes bulk frames reads no byte past the frame it is in,
   * so that a payload is never read into the read buffer. Elsewhere the
   * thread's one buffer is enough: read_cb consumes all of it (the parser
   * copies only the part of a frame that spans reads). */
  if (c->ops.on_bulk_begin != NULL) {
    size_t want = rpc_parser_want(&c->parser);
    if (want > 0 && want < n)
      n = want;
  }
  *buf = uv_buf_init((char *)t_rbuf, (unsigned int)n);
}

static bool is_auth_type(uint32_t type)
{
  return type == RPC_AUTH_HELLO || type == RPC_AUTH_CHALLENGE ||
         type == RPC_AUTH_PROOF;
}

static int on_frame(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct rpc_conn *c = arg;
  ProtobufCMessage *msg;
  int rc;

  if (c->hs != NULL)
    return rpci_auth_frame(c, h, body);
  if (c->tagged) {
    uint64_t seq = c->sess.rx_seq;
    if (!rpc_tag_open(&c->sess, h, body, body + h->length)) {
      char what[96];
      snprintf(what, sizeof(what), "a %s frame of %" PRIu32 " body bytes",
               rpc_type_name(h->type), h->length);
      rpci_tag_fail(c, seq, what);
      return RPCI_FRAME_STOP;
    }
  }
  if (is_auth_type(h->type))
    return PT_EPROTO; /* the handshake is over (or never was) */
  if (h->type == RPC_BULK)
    return rpci_bulk_frame(c, h, body);
  rc = rpc_body_unpack(h->type, body, h->length, &msg);
  if (rc < 0)
    return rc;
  rc = c->ops.on_msg != NULL ? c->ops.on_msg(c, h, msg) : PT_OK;
  protobuf_c_message_free_unpacked(msg, NULL);
  if (rc != 0)
    return rc < 0 ? rc : PT_EPROTO;
  return c->closing ? RPCI_FRAME_STOP : PT_OK;
}

static void timer_cb(uv_timer_t *t)
{
  struct rpc_conn *c = t->data;

  if (c->closing)
    return;
  if (!c->ready) {
    if (c->hs != NULL && !c->hs->dialler)
      rpci_auth_fail(c, -ETIMEDOUT, "no handshake in time");
    else
      rpc_conn_close(c, -ETIMEDOUT);
    return;
  }
  if (c->idle_ms == 0)
    return;
  if (c->ops.on_idle != NULL && c->ops.on_idle(c) == 0) {
    if (!c->closing && c->idle_ms > 0)
      uv_timer_start(&c->idle_timer, timer_cb, c->idle_ms, 0);
    return;
  }
  rpc_conn_close(c, -ETIMEDOUT); /* no-op when on_idle closed it */
}

void rpci_timer_arm(struct rpc_conn *c)
{
  uint64_t now = uv_now(c->io.handle.loop);

  if (c->closing)
    return;
  if (!c->ready) {
    if (c->ready_by_ms != 0)
      uv_timer_start(&c->idle_timer, timer_cb,
                     c->ready_by_ms > now ? c->ready_by_ms - now : 0, 0);
    return;
  }
  uint64_t since = now - c->last_rx_ms;
  if (c->idle_ms == 0) {
    uv_timer_stop(&c->idle_timer);
    return;
  }
  uv_timer_start(&c->idle_timer, timer_cb,
                 since >= c->idle_ms ? 0 : c->idle_ms - since, 0);
}

/* A handshake that went wrong in the stream: why, and where. */
static void auth_fail_stream(struct rpc_conn *c, int err, const char *why)
{
  char where[160], line[224];

  rpc_parser_where(&c->parser, where, sizeof(where));
  snprintf(line, sizeof(line), "%s%s%s", why, where[0] != '\0' ? ": " : "",
           where);
  rpci_auth_fail(c, err, line);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct rpc_conn *c = s->data;

  if (c->closing || nread == 0) /* 0: nothing this time (EAGAIN) */
    return;
  if (nread == UV_EOF) {
    if (c->hs != NULL && !c->hs->dialler)
      auth_fail_stream(c, PT_EPROTO, "closed before the handshake ended");
    else if (c->brx.active || c->parser.hdr_have > 0)
      conn_fail_stream(c, PT_EPROTO); /* EOF inside a frame or payload */
    else
      rpc_conn_close(c, c->ready ? 0 : -ECONNRESET);
    return;
  }
  if (nread < 0) {
    if (c->hs != NULL && !c->hs->dialler)
      rpci_auth_fail(c, (int)nread, "connection lost before the handshake "
                                     "ended");
    else
      rpc_conn_close(c, (int)nread);
    return;
  }
  c->last_rx_ms = uv_now(s->loop);
  if (c->ready && c->idle_ms > 0)
    uv_timer_start(&c->idle_timer, timer_cb, c->idle_ms, 0);
  if (c->brx.active) {
    rpci_bulk_read(c, (size_t)nread);
    return;
  }
  int rc = rpc_parser_feed(&c->parser, (const uint8_t *)buf->base,
                           (size_t)nread, on_frame, c);
  if (rc != 0) {
    if (c->hs != NULL && !c->hs->dialler)
      auth_fail_stream(c, rc, "no valid handshake");
    else
      conn_fail_stream(c, rc); /* no-op after the handler closed it */
    return;
  }
  if (c->closing)
    return;
  conn_account(c);
  if (c->held > 0 && !c->trusted && g_buffered > g_cap)
    rpc_conn_close(c, -ENOMEM); /* releases what it held */
}

int rpci_read_start(struct rpc_conn *c)
{
  int rc = uv_read_start(&c->io.stream, alloc_cb, read_cb);

  if (rc < 0)
    rpc_conn_close(c, rc);
  return rc;
}

bool rpci_connected(struct rpc_conn *c, int status)
{
  if (status == UV_ECANCELED || c->closing)
    return false;
  if (status < 0) {
    rpc_conn_close(c, status);
    return false;
  }
  c->connected = true;
  return true;
}

/* ---- connections --------------------------------------------------------- */

struct rpc_conn *rpci_conn_new(uv_loop_t *loop, bool tcp,
                               const struct rpc_conn_ops *ops, void *data)
{
  struct rpc_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return NULL;
  int rc = tcp ? uv_tcp_init(loop, &c->io.tcp) : uv_pipe_init(loop, &c->io.pipe, 0);
  if (rc < 0) {
    free(c);
    return NULL;
  }
  c->io.handle.data = c;
  uv_timer_init(loop, &c->idle_timer); /* cannot fail */
  c->idle_timer.data = c;
  c->handles_open = 2;
  c->tcp = tcp;
  rpci_ops_fill(&c->ops, ops);
  c->idle_ms = c->ops.idle_ms;
  c->last_rx_ms = uv_now(loop);
  c->data = data;
  c->peer_pid = -1;
  c->peer_uid = -1;
  snprintf(c->peer_name, sizeof(c->peer_name), tcp ? "an unknown address"
                                                   : "pid -1");
  c->pending_tail = &c->pending;
  rpc_parser_init(&c->parser, tcp ? RPC_AUTH_MAX_BODY : c->ops.max_body);
  return c;
}

void rpc_conn_set_data(struct rpc_conn *c, void *data)
{
  c->data = data;
}

void *rpc_conn_data(struct rpc_conn *c)
{
  return c->data;
}

struct rpc_listener *rpc_conn_listener(struct rpc_conn *c)
{
  return c->listener;
}

int rpc_conn_peer_pid(struct rpc_conn *c)
{
  return c->peer_pid;
}

int rpc_conn_peer_uid(struct rpc_conn *c)
{
  return c->peer_uid;
}

const char *rpc_conn_peer_name(struct rpc_conn *c)
{
  return c->peer_name;
}

uint32_t rpc_conn_peer_role(struct rpc_conn *c)
{
  return c->peer_role;
}

const char *rpc_conn_peer_node(struct rpc_conn *c)
{
  return c->peer_node;
}

void rpc_conn_set_idle(struct rpc_conn *c, uint32_t idle_ms)
{
  c->idle_ms = idle_ms;
  rpci_timer_arm(c);
}

uint64_t rpc_conn_idle_ms(struct rpc_conn *c)
{
  return uv_now(c->io.handle.loop) - c->last_rx_ms;
}

size_t rpc_conn_partial_bytes(struct rpc_conn *c)
{
  size_t n = c->parser.hdr_have + c->parser.body_have;

  return c->brx.active ? n + (size_t)c->brx.have : n;
}

void rpc_conn_set_trusted(struct rpc_conn *c, bool trusted)
{
  c->trusted = trusted;
}
