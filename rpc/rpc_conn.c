/*
 * rpc_conn.c — frames over libuv Unix-socket connections, for ptd (node and
 * SMP). libpt does not link this file.
 *
 * A connection owns a libuv pipe, an incremental parser (rpc_frame.c) and
 * its queued writes. Invariants:
 *   - every frame write is one allocation (the uv_write_t and the frame
 *     bytes together) that lives until its write_cb, which frees it;
 *   - a connection whose unwritten bytes exceed ops.max_write_queue is
 *     closed with -ENOBUFS: a peer that stops reading cannot make us hold
 *     unbounded memory;
 *   - a header error, a body that does not decode as its type, a frame
 *     truncated by EOF, or on_msg returning non-zero closes the connection
 *     with one RPC_LOG_CLOSE line (rpc_set_log_cb); the listener keeps
 *     serving other peers;
 *   - closing is idempotent. The conn stays allocated until libuv's close
 *     callback, which calls on_close exactly once and then frees it, so
 *     rpc_conn_close may be called from inside on_msg (or any callback) and
 *     the conn stays valid until that callback returns;
 *   - an accepted conn stays on its listener's list until it is freed, so
 *     rpc_listener_close can detach every conn whatever order libuv runs the
 *     close callbacks in;
 *   - a conn owns two handles, its pipe and its idle timer; both are closed
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
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"

#define READ_BUF_BYTES (64u * 1024u)
#define WRITE_QUEUE_DEFAULT ((size_t)64 << 20)
#define LISTEN_BACKLOG 128

/* One queued frame: the write request and the bytes it writes, freed
 * together in write_cb (or when a conn closes before it was connected). */
struct wreq {
  uv_write_t req;
  struct rpc_conn *conn;
  struct wreq *next; /* queued until a dialled conn is connected */
  size_t len;
  uint8_t frame[];
};

struct rpc_conn {
  uv_pipe_t pipe;
  uv_timer_t idle_timer;
  int handles_open; /* pipe and timer, until their close callbacks */
  uv_connect_t connect_req;
  struct rpc_conn_ops ops; /* defaults filled in */
  void *data;
  struct rpc_listener *listener; /* NULL if dialled or listener closed */
  struct rpc_conn *prev, *next;  /* on the listener's list */
  struct rpc_parser parser;
  int peer_pid;
  int peer_uid;
  bool connected; /* writes may go to the socket */
  bool closing;
  bool announced; /* on_close is owed to the user */
  bool trusted;   /* exempt from the buffer cap */
  uint32_t idle_ms;
  uint64_t last_rx_ms; /* uv_now when the last byte arrived */
  size_t held;         /* this conn's share of g_buffered */
  int close_err;
  struct wreq *pending, **pending_tail;
  size_t pending_bytes;
  uint8_t rbuf[READ_BUF_BYTES];
};

struct rpc_listener {
  uv_pipe_t pipe;
  struct rpc_conn_ops ops;
  rpc_accept_cb on_accept;
  void *data;
  char *path;
  dev_t dev; /* identity of the socket file we bound, so that close */
  ino_t ino; /* never unlinks a successor's socket */
  struct rpc_conn *conns;
  bool closing;
};

static size_t g_buffered;
static rpc_log_fn g_log;

void rpc_set_log_cb(rpc_log_fn fn)
{
  g_log = fn;
}

/* Formats one line for the process's log callback; nothing without one. */
__attribute__((format(printf, 3, 4))) static void
rpc_log(enum rpc_log_kind kind, int level, const char *fmt, ...)
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
static size_t g_cap = RPC_BUFFER_CAP_DEFAULT;

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

static void ops_fill(struct rpc_conn_ops *dst, const struct rpc_conn_ops *src)
{
  *dst = *src;
  if (dst->max_body == 0)
    dst->max_body = RPC_MAX_BODY_DEFAULT;
  if (dst->max_write_queue == 0)
    dst->max_write_queue = WRITE_QUEUE_DEFAULT;
}

static bool path_fits(const char *path)
{
  struct sockaddr_un sa;
  return strlen(path) < sizeof(sa.sun_path);
}

/* ---- closing --------------------------------------------------------------- */

static void listener_unlink_conn(struct rpc_conn *c)
{
  struct rpc_listener *l = c->listener;

  if (l == NULL)
    return;
  if (c->prev != NULL)
    c->prev->next = c->next;
  else
    l->conns = c->next;
  if (c->next != NULL)
    c->next->prev = c->prev;
  c->prev = c->next = NULL;
  c->listener = NULL;
}

static void conn_close_cb(uv_handle_t *h)
{
  struct rpc_conn *c = h->data;

  if (--c->handles_open > 0)
    return;
  if (c->announced && c->ops.on_close != NULL)
    c->ops.on_close(c, c->close_err);
  listener_unlink_conn(c);
  rpc_parser_release(&c->parser);
  free(c);
}

void rpc_conn_close(struct rpc_conn *c, int err)
{
  if (c->closing)
    return;
  c->closing = true;
  c->close_err = err;
  while (c->pending != NULL) {
    struct wreq *w = c->pending;
    c->pending = w->next;
    free(w);
  }
  c->pending_tail = &c->pending;
  c->pending_bytes = 0;
  /* A partial frame is dropped now, so that its bytes leave the cap. The
   * parser allows this from inside on_frame. */
  rpc_parser_release(&c->parser);
  conn_account(c);
  uv_close((uv_handle_t *)&c->idle_timer, conn_close_cb);
  /* libuv cancels the queued writes and a pending connect (their callbacks
   * run with UV_ECANCELED) before conn_close_cb. */
  uv_close((uv_handle_t *)&c->pipe, conn_close_cb);
}

/* Closes a conn for a fault of the peer's (or of our handler's verdict),
 * with the one warning the operator sees. */
static void conn_fail(struct rpc_conn *c, int err)
{
  if (c->closing)
    return;
  rpc_log(RPC_LOG_CLOSE, RPC_LOG_WARN, "rpc: closing connection from pid %d: %s",
          c->peer_pid, pt_strerror(err));
  rpc_conn_close(c, err);
}

/* ---- writing --------------------------------------------------------------- */

static void write_cb(uv_write_t *req, int status)
{
  struct wreq *w = req->data;
  struct rpc_conn *c = w->conn;

  free(w);
  if (status < 0 && status != UV_ECANCELED)
    rpc_conn_close(c, status); /* no-op when already closing */
}

/* Packs a frame into a new wreq (see rpc_frame_pack for the checks). */
static int wreq_new(uint32_t type, uint64_t request_id,
                    const ProtobufCMessage *msg, struct wreq **out)
{
  size_t len;
  int rc = rpc_frame_size(type, msg, &len);

  if (rc != PT_OK)
    return rc;
  struct wreq *w = malloc(sizeof(*w) + len);
  if (w == NULL)
    return -ENOMEM;
  rc = rpc_frame_write(w->frame, len, type, request_id, msg);
  if (rc != PT_OK) {
    free(w);
    return rc;
  }
  w->req.data = w;
  w->next = NULL;
  w->len = len;
  *out = w;
  return PT_OK;
}

/* Hands w to libuv (which owns it from here) and applies backpressure. */
static int write_frame(struct rpc_conn *c, struct wreq *w)
{
  uv_stream_t *s = (uv_stream_t *)&c->pipe;
  uv_buf_t b = uv_buf_init((char *)w->frame, (unsigned int)w->len);
  int rc = uv_write(&w->req, s, &b, 1, write_cb);

  if (rc < 0) {
    free(w);
    rpc_conn_close(c, rc);
    return rc;
  }
  /* uv_write tries the socket at once, so this counts only what the peer
   * has not taken yet. */
  if (uv_stream_get_write_queue_size(s) > c->ops.max_write_queue) {
    conn_fail(c, -ENOBUFS);
    return -ENOBUFS;
  }
  return PT_OK;
}

int rpc_conn_send(struct rpc_conn *c, uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg)
{
  struct wreq *w;
  int rc;

  if (c->closing)
    return -EPIPE;
  rc = wreq_new(type, request_id, msg, &w);
  if (rc != PT_OK)
    return rc;
  w->conn = c;
  if (c->connected)
    return write_frame(c, w);
  *c->pending_tail = w;
  c->pending_tail = &w->next;
  c->pending_bytes += w->len;
  if (c->pending_bytes > c->ops.max_write_queue) {
    conn_fail(c, -ENOBUFS);
    return -ENOBUFS;
  }
  return PT_OK;
}

/* ---- reading --------------------------------------------------------------- */

static void alloc_cb(uv_handle_t *h, size_t suggested, uv_buf_t *buf)
{
  struct rpc_conn *c = h->data;

  (void)suggested;
  /* One buffer per conn is enough: read_cb consumes all of it (the parser
   * copies only the part of a frame that spans reads). */
  *buf = uv_buf_init((char *)c->rbuf, sizeof(c->rbuf));
}

/* Returned from on_frame when the handler closed the conn itself: stops
 * the parser without a second verdict. */
#define FRAME_STOP 1

static int on_frame(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct rpc_conn *c = arg;
  ProtobufCMessage *msg;
  int rc = rpc_body_unpack(h->type, body, h->length, &msg);

  if (rc < 0)
    return rc;
  rc = c->ops.on_msg != NULL ? c->ops.on_msg(c, h, msg) : PT_OK;
  protobuf_c_message_free_unpacked(msg, NULL);
  if (rc != 0)
    return rc < 0 ? rc : PT_EPROTO;
  return c->closing ? FRAME_STOP : PT_OK;
}

static void idle_cb(uv_timer_t *t)
{
  struct rpc_conn *c = t->data;

  if (c->closing || c->idle_ms == 0)
    return;
  if (c->ops.on_idle != NULL && c->ops.on_idle(c) == 0) {
    if (!c->closing && c->idle_ms > 0)
      uv_timer_start(&c->idle_timer, idle_cb, c->idle_ms, 0);
    return;
  }
  rpc_conn_close(c, -ETIMEDOUT); /* no-op when on_idle closed it */
}

/* Starts c's idle deadline, if it has one, counted from its last byte. */
static void idle_arm(struct rpc_conn *c)
{
  uint64_t now = uv_now(c->pipe.loop), since = now - c->last_rx_ms;

  if (c->closing)
    return;
  if (c->idle_ms == 0) {
    uv_timer_stop(&c->idle_timer);
    return;
  }
  uv_timer_start(&c->idle_timer, idle_cb,
                 since >= c->idle_ms ? 0 : c->idle_ms - since, 0);
}

static void read_cb(uv_stream_t *s, ssize_t nread, const uv_buf_t *buf)
{
  struct rpc_conn *c = s->data;

  if (c->closing || nread == 0) /* 0: nothing this time (EAGAIN) */
    return;
  if (nread == UV_EOF) {
    if (c->parser.hdr_have > 0)
      conn_fail(c, PT_EPROTO); /* EOF inside a frame */
    else
      rpc_conn_close(c, 0);
    return;
  }
  if (nread < 0) {
    rpc_conn_close(c, (int)nread);
    return;
  }
  c->last_rx_ms = uv_now(s->loop);
  if (c->idle_ms > 0)
    uv_timer_start(&c->idle_timer, idle_cb, c->idle_ms, 0);
  int rc = rpc_parser_feed(&c->parser, (const uint8_t *)buf->base,
                           (size_t)nread, on_frame, c);
  if (rc != 0) {
    conn_fail(c, rc); /* no-op after the handler closed it */
    return;
  }
  if (c->closing)
    return;
  conn_account(c);
  if (c->held > 0 && !c->trusted && g_buffered > g_cap)
    rpc_conn_close(c, -ENOMEM); /* releases what it held */
}

/* ---- connections --------------------------------------------------------- */

static struct rpc_conn *conn_new(uv_loop_t *loop, const struct rpc_conn_ops *ops,
                                 void *data)
{
  struct rpc_conn *c = calloc(1, sizeof(*c));

  if (c == NULL)
    return NULL;
  if (uv_pipe_init(loop, &c->pipe, 0) < 0) {
    free(c);
    return NULL;
  }
  c->pipe.data = c;
  uv_timer_init(loop, &c->idle_timer); /* cannot fail */
  c->idle_timer.data = c;
  c->handles_open = 2;
  ops_fill(&c->ops, ops);
  c->idle_ms = c->ops.idle_ms;
  c->last_rx_ms = uv_now(loop);
  c->data = data;
  c->peer_pid = -1;
  c->peer_uid = -1;
  c->pending_tail = &c->pending;
  rpc_parser_init(&c->parser, c->ops.max_body);
  return c;
}

/* Peer credentials of a connected pipe. 0 or a negated errno. */
static int conn_peer_cred(struct rpc_conn *c, struct ucred *cred)
{
  uv_os_fd_t fd;
  socklen_t len = sizeof(*cred);
  int rc = uv_fileno((uv_handle_t *)&c->pipe, &fd);

  if (rc < 0)
    return rc;
  if (getsockopt(fd, SOL_SOCKET, SO_PEERCRED, cred, &len) < 0)
    return -errno;
  return PT_OK;
}

static void connect_cb(uv_connect_t *req, int status)
{
  struct rpc_conn *c = req->data;
  struct ucred cred;

  if (status == UV_ECANCELED || c->closing)
    return;
  if (status < 0) {
    rpc_conn_close(c, status);
    return;
  }
  c->connected = true;
  if (conn_peer_cred(c, &cred) == 0) {
    c->peer_pid = cred.pid;
    c->peer_uid = (int)cred.uid;
  }
  int rc = uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
  if (rc < 0) {
    rpc_conn_close(c, rc);
    return;
  }
  c->last_rx_ms = uv_now(c->pipe.loop);
  idle_arm(c);
  while (c->pending != NULL && !c->closing) {
    struct wreq *w = c->pending;
    c->pending = w->next;
    if (c->pending == NULL)
      c->pending_tail = &c->pending;
    c->pending_bytes -= w->len;
    w->next = NULL;
    if (write_frame(c, w) < 0)
      return; /* closed; the rest of the queue was freed */
  }
}

int rpc_conn_connect_unix(struct uv_loop_s *loop, const char *path,
                          const struct rpc_conn_ops *ops, void *data,
                          struct rpc_conn **out)
{
  *out = NULL;
  if (!path_fits(path)) /* libuv 1.44 would truncate it silently */
    return -ENAMETOOLONG;
  struct rpc_conn *c = conn_new(loop, ops, data);
  if (c == NULL)
    return -ENOMEM;
  c->announced = true;
  c->connect_req.data = c;
  uv_pipe_connect(&c->connect_req, &c->pipe, path, connect_cb);
  *out = c;
  return PT_OK;
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

void rpc_conn_set_idle(struct rpc_conn *c, uint32_t idle_ms)
{
  c->idle_ms = idle_ms;
  idle_arm(c);
}

uint64_t rpc_conn_idle_ms(struct rpc_conn *c)
{
  return uv_now(c->pipe.loop) - c->last_rx_ms;
}

size_t rpc_conn_partial_bytes(struct rpc_conn *c)
{
  return c->parser.hdr_have + c->parser.body_have;
}

void rpc_conn_set_trusted(struct rpc_conn *c, bool trusted)
{
  c->trusted = trusted;
}

/* ---- listener -------------------------------------------------------------- */

static void connection_cb(uv_stream_t *server, int status)
{
  struct rpc_listener *l = server->data;
  struct ucred cred;
  int rc;

  if (status < 0) {
    rpc_log(RPC_LOG_ACCEPT, RPC_LOG_WARN, "rpc: cannot accept on '%s': %s",
                l->path, pt_strerror(status));
    return;
  }
  struct rpc_conn *c = conn_new(server->loop, &l->ops, l->data);
  if (c == NULL) {
    rpc_log(RPC_LOG_ACCEPT, RPC_LOG_ERR, "rpc: cannot accept on '%s': %s",
                l->path, pt_strerror(-ENOMEM));
    return;
  }
  c->connected = true;
  rc = uv_accept(server, (uv_stream_t *)&c->pipe);
  if (rc < 0) {
    rpc_log(RPC_LOG_ACCEPT, RPC_LOG_WARN, "rpc: cannot accept on '%s': %s",
                l->path, pt_strerror(rc));
    rpc_conn_close(c, rc); /* never announced: no on_close */
    return;
  }
  rc = conn_peer_cred(c, &cred);
  if (rc < 0) {
    rpc_log(RPC_LOG_REFUSE, RPC_LOG_WARN,
                "rpc: refusing connection on '%s': no peer credentials: %s",
                l->path, pt_strerror(rc));
    rpc_conn_close(c, rc);
    return;
  }
  if (cred.uid != geteuid() && cred.uid != 0) {
    rpc_log(RPC_LOG_REFUSE, RPC_LOG_WARN,
                "rpc: refusing connection on '%s' from pid %d: uid %u is not "
                "ours", l->path, (int)cred.pid, (unsigned)cred.uid);
    rpc_conn_close(c, -EPERM);
    return;
  }
  c->peer_pid = cred.pid;
  c->peer_uid = (int)cred.uid;

  c->listener = l;
  c->next = l->conns;
  if (l->conns != NULL)
    l->conns->prev = c;
  l->conns = c;

  if (l->on_accept != NULL) {
    /* on_accept may close c, or even the listener: touch neither after. */
    rc = l->on_accept(l, c);
    if (rc != 0) {
      rpc_conn_close(c, rc); /* refused: the user never owned it */
      return;
    }
  }
  c->announced = true;
  if (c->closing)
    return;
  rc = uv_read_start((uv_stream_t *)&c->pipe, alloc_cb, read_cb);
  if (rc < 0) {
    rpc_conn_close(c, rc);
    return;
  }
  idle_arm(c);
}

static void listener_free_cb(uv_handle_t *h)
{
  struct rpc_listener *l = h->data;

  free(l->path);
  free(l);
}

/* Makes room for a new socket at path: nothing there, or a socket file
 * nobody listens on any more (removed). A live listener: -EADDRINUSE; a file
 * that is not a socket is left alone: -EEXIST. */
static int clear_stale(const char *path)
{
  struct stat st;
  int fd;

  if (lstat(path, &st) < 0)
    return errno == ENOENT ? PT_OK : -errno;
  if (!S_ISSOCK(st.st_mode))
    return -EEXIST;
  int rc = rpc_sock_connect_unix(path, &fd);
  if (rc == PT_OK) {
    close(fd);
    return -EADDRINUSE;
  }
  if (rc == -EAGAIN) /* alive, its backlog full */
    return -EADDRINUSE;
  if (unlink(path) < 0 && errno != ENOENT)
    return -errno;
  return PT_OK;
}

int rpc_listen_unix(struct uv_loop_s *loop, const char *path,
                    const struct rpc_conn_ops *ops, rpc_accept_cb on_accept,
                    void *data, struct rpc_listener **out)
{
  struct stat st;
  int rc;

  *out = NULL;
  if (!path_fits(path)) /* libuv 1.44 would truncate it silently */
    return -ENAMETOOLONG;
  rc = clear_stale(path);
  if (rc < 0)
    return rc;

  struct rpc_listener *l = calloc(1, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  l->path = strdup(path);
  if (l->path == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  ops_fill(&l->ops, ops);
  l->on_accept = on_accept;
  l->data = data;
  rc = uv_pipe_init(loop, &l->pipe, 0);
  if (rc < 0)
    goto out_free;
  l->pipe.data = l;

  rc = uv_pipe_bind(&l->pipe, path);
  if (rc < 0)
    goto out_close;
  /* Between bind and chmod the mode follows the umask; SO_PEERCRED on
   * accept covers that window. */
  if (chmod(path, 0600) < 0 || stat(path, &st) < 0) {
    rc = -errno;
    goto out_unlink;
  }
  l->dev = st.st_dev;
  l->ino = st.st_ino;
  rc = uv_listen((uv_stream_t *)&l->pipe, LISTEN_BACKLOG, connection_cb);
  if (rc < 0)
    goto out_unlink;
  *out = l;
  return PT_OK;

out_unlink:
  unlink(path);
out_close:
  uv_close((uv_handle_t *)&l->pipe, listener_free_cb);
  return rc;
out_free:
  free(l->path);
  free(l);
  return rc;
}

void rpc_listener_close(struct rpc_listener *l)
{
  struct stat st;

  if (l->closing)
    return;
  l->closing = true;
  if (lstat(l->path, &st) == 0 && st.st_dev == l->dev && st.st_ino == l->ino)
    unlink(l->path);
  /* Accepted conns stay open, no longer tied to the listener. */
  while (l->conns != NULL)
    listener_unlink_conn(l->conns);
  uv_close((uv_handle_t *)&l->pipe, listener_free_cb);
}

void *rpc_listener_data(struct rpc_listener *l)
{
  return l->data;
}
