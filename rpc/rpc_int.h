/*
 * rpc_int.h — private to the libuv side of rpc/ (rpc_conn.c, rpc_unix.c,
 * rpc_tcp.c, rpc_bulk.c): the conn and listener structs and the calls the
 * files make into each other. Names shared here start with rpci_.
 *
 *   rpc_listen.c accepting, and a listener's conns and close
 *   rpc_conn.c   a conn over any stream: reading, framing, writing, queues,
 *                idle deadlines, the buffer cap, closing, the log callback
 *   rpc_unix.c   Unix sockets: listener, dialling, SO_PEERCRED
 *   rpc_tcp.c    TCP: listener, dialling with a deadline, the handshake
 *   rpc_bulk.c   bulk frames: sending with backpressure, receiving into the
 *                receiver's buffer
 *
 * Beside them, without libuv: rpc_auth.c (keys, the handshake),
 * rpc_tag.c (session keys and frame tags), rpc_sock_session.c (blocking
 * calls with tags).
 */
#ifndef PT_RPC_INT_H
#define PT_RPC_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#include <uv.h>

#include "rpc/rpc.h"

#define RPCI_READ_BUF_BYTES (64u * 1024u)
#define RPCI_LISTEN_BACKLOG 128
#define RPCI_NAME_MAX 112 /* "[v6 address]:port" or "pid N" or a path */

/* One queued write: the request, the frame bytes it writes and, for a bulk
 * frame, the caller's payload written after them from the caller's
 * buffer. Freed in write_cb (or when a conn closes before it was ready). */
struct rpci_wreq {
  uv_write_t req;
  struct rpc_conn *conn;
  struct rpci_wreq *next; /* queued until the conn is ready */
  size_t len;             /* frame bytes */
  const void *payload;    /* bulk: the caller's bytes, or NULL */
  size_t payload_len;
  rpc_bulk_sent_cb sent;
  void *sent_arg;
  bool bulk;              /* a bulk frame: payload (maybe empty) follows */
  bool sealed;            /* tagged already (send_direct's remainder) */
  uint8_t payload_tag[RPC_TAG_BYTES]; /* bulk over TCP: after the payload */
  uint8_t frame[];        /* len bytes, and room for RPC_TAG_BYTES more */
};

union rpci_stream {
  uv_handle_t handle;
  uv_stream_t stream;
  uv_pipe_t pipe;
  uv_tcp_t tcp;
};

/* A bulk payload being received. */
struct rpci_bulk_rx {
  bool active;
  struct rpc_bulk_hdr h;
  uint8_t *dst; /* NULL: discarding */
  uint64_t have;
  uint32_t crc;
  /* Tagged conns: the payload's tag, checked before on_bulk_done. */
  bool tagged;
  uint64_t seq;              /* the payload's unit number */
  struct rpc_tag_ctx mac;    /* over the payload so far */
  uint8_t tag[RPC_TAG_BYTES];
  size_t tag_have;           /* tag bytes read, once the payload is in */
};

struct rpc_conn {
  union rpci_stream io;
  uv_timer_t idle_timer; /* idle deadline; connect + handshake deadline
                            while !ready */
  int handles_open;      /* io and timer, until their close callbacks */
  uv_connect_t connect_req;
  struct rpc_conn_ops ops; /* defaults filled in */
  void *data;
  struct rpc_listener *listener; /* NULL if dialled or listener closed */
  struct rpc_conn *prev, *next;  /* on the listener's list */
  struct rpc_parser parser;
  int peer_pid;
  int peer_uid;
  char peer_name[RPCI_NAME_MAX];
  bool tcp;
  bool dialled;   /* ours (rpc_conn_connect_*), not accepted */
  bool connected; /* the socket is connected: handshake frames may go */
  bool ready;     /* authenticated (or no need): every frame may go, and
                     received frames reach on_msg */
  bool closing;
  bool announced; /* on_close is owed to the user */
  bool trusted;   /* exempt from the buffer cap */
  bool drain_owed; /* a bulk send was refused with -EAGAIN */
  uint32_t idle_ms;
  uint64_t last_rx_ms;  /* uv_now when the last byte arrived */
  uint64_t ready_by_ms; /* uv_now deadline for ready (0: none) */
  size_t held;          /* this conn's share of the buffer cap */
  int close_err;
  struct rpci_wreq *pending, **pending_tail; /* until ready */
  size_t pending_bytes;   /* frames and payloads in the pending queue */
  size_t pending_payload; /* of which payloads */
  size_t bulk_inflight; /* payload bytes handed to libuv, not yet done */
  size_t frames_inflight; /* frame bytes handed to libuv, not yet done */
  struct rpc_handshake *hs; /* TCP, until the handshake is done */
  bool hs_counted; /* in listener->handshakes */
  uint32_t peer_role;
  char peer_node[RPC_NODE_ID_MAX + 1];
  /* TCP after the handshake: every frame out is tagged as it is handed to
   * libuv (so sequence numbers follow the wire's order), every frame in
   * checked before it is believed. */
  bool tagged;
  struct rpc_session sess;
  struct rpci_bulk_rx brx;
};

struct rpc_listener {
  union rpci_stream io;
  struct rpc_conn_ops ops;
  rpc_accept_cb on_accept;
  void *data;
  char *path;  /* Unix: the socket file; NULL over TCP */
  char name[RPCI_NAME_MAX]; /* for log lines: the path or host:port */
  dev_t dev;   /* identity of the socket file we bound, so that close */
  ino_t ino;   /* never unlinks a successor's socket */
  int port;    /* TCP: the bound port */
  struct rpc_auth *auth; /* TCP: who we are, and the key */
  struct rpc_conn *conns;
  uint32_t handshakes; /* TCP: accepted conns not yet authenticated */
  bool closing;
};

/* rpc_conn.c */
/* The calling thread's read buffer (RPCI_READ_BUF_BYTES), shared by every
 * conn on it: libuv reads into it and calls read_cb at once, which consumes
 * all of it (the parser copies only the part of a frame that spans reads),
 * so no conn holds one of its own. */
uint8_t *rpci_read_buf(void);
__attribute__((format(printf, 3, 4))) void
rpci_log(enum rpc_log_kind kind, int level, const char *fmt, ...);
void rpci_ops_fill(struct rpc_conn_ops *dst, const struct rpc_conn_ops *src);
/* A peer's node id for a log line: printable ASCII ('?' for the rest),
 * cut to fit cap. */
void rpci_printable(const char *in, char *out, size_t cap);
/* A new conn whose stream is initialised (a pipe, or a TCP handle). */
struct rpc_conn *rpci_conn_new(uv_loop_t *loop, bool tcp,
                               const struct rpc_conn_ops *ops, void *data);
/* Closes c for a fault of its peer's: one RPC_LOG_CLOSE line. */
void rpci_conn_fail(struct rpc_conn *c, int err);
int rpci_read_start(struct rpc_conn *c);
/* What a dialled conn's connect callback starts with: false when the
 * connect was cancelled, c is closing, or the connect failed (c closed
 * with status); else true, c connected. */
bool rpci_connected(struct rpc_conn *c, int status);
/* Starts c's idle deadline (or, while !ready, its ready deadline). */
void rpci_timer_arm(struct rpc_conn *c);
/* Hands w to libuv now (c must be connected). PT_OK, or the error c was
 * closed with (w freed, its sent callback owed by the caller: none). */
int rpci_write(struct rpc_conn *c, struct rpci_wreq *w);
/* Queues w until ready, or writes it when ready. */
int rpci_queue(struct rpc_conn *c, struct rpci_wreq *w);
/* Packs a frame into a new wreq with extra bytes of room. */
int rpci_wreq_new(uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg, struct rpci_wreq **out);
/* c is ready: writes what was queued, calls on_ready for a dialled conn. */
void rpci_conn_ready(struct rpc_conn *c);
/* What both listeners' connection callbacks start with: a new conn on the
 * listener's loop, accepted from server. NULL when status, the allocation
 * or the accept failed (one RPC_LOG_ACCEPT line naming where, e.g. the
 * quoted path or host:port). */
struct rpc_conn *rpci_accept(uv_stream_t *server, int status, bool tcp,
                             const char *where);
/* Takes c off its listener's list (none: nothing). */
void rpci_listener_unlink(struct rpc_conn *c);
/* Puts a conn just accepted on l's list. */
void rpci_conn_attach(struct rpc_listener *l, struct rpc_conn *c);
/* Gives an accepted conn to on_accept and makes it ready: at once for a
 * Unix socket, once authenticated over TCP. The caller starts reading. */
void rpci_conn_accepted(struct rpc_listener *l, struct rpc_conn *c);
void rpci_listener_free_cb(uv_handle_t *h);

/* c's handshake is done (hs still set): the session starts, every frame
 * from now on in both directions carries a tag. */
void rpci_conn_start_session(struct rpc_conn *c);
/* A unit whose tag failed: one RPC_LOG_CLOSE line ("frame N from PEER
 * failed its authentication tag", what names it), c closed with -EACCES. */
void rpci_tag_fail(struct rpc_conn *c, uint64_t seq, const char *what);

/* Returned by a frame's handler (on_frame's helpers) when the conn was
 * closed by the frame's handling: stops the parser without a second
 * verdict. */
#define RPCI_FRAME_STOP 1

/* rpc_tcp.c: a frame received while c->hs is set. PT_OK, or
 * RPCI_FRAME_STOP (c was closed, the refusal logged). */
int rpci_auth_frame(struct rpc_conn *c, const struct rpc_hdr *h,
                    const uint8_t *body);
/* The handshake failed or timed out: one refusal line, then closed. */
void rpci_auth_fail(struct rpc_conn *c, int err, const char *why);
/* c no longer counts against its listener's max_handshakes (done or
 * closing); idempotent. */
void rpci_hs_uncount(struct rpc_conn *c);

/* rpc_bulk.c: an RPC_BULK frame. PT_OK, RPCI_FRAME_STOP, or a negative
 * verdict for the caller to close c with. */
int rpci_bulk_frame(struct rpc_conn *c, const struct rpc_hdr *h,
                    const uint8_t *body);
/* uv buffer for the payload being received. */
void rpci_bulk_alloc(struct rpc_conn *c, uv_buf_t *buf);
/* n bytes of payload landed where rpci_bulk_alloc said. */
void rpci_bulk_read(struct rpc_conn *c, size_t n);
/* The conn closes mid-payload: on_bulk_done(err). */
void rpci_bulk_abort(struct rpc_conn *c, int err);
/* A bulk write completed: account it, call sent. */
void rpci_bulk_written(struct rpc_conn *c, struct rpci_wreq *w, int status);
/* Any write completed: on_drain when a bulk send was refused and the
 * queue (frames or payloads) is below the mark again. */
void rpci_bulk_drain_check(struct rpc_conn *c);

#endif /* PT_RPC_INT_H */
