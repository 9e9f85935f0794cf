/*
 * rpc.h — frames of protobuf-c messages over stream sockets.
 *
 * Frame (24-byte header, little-endian, then `length` body bytes):
 *
 *   offset  bytes  field
 *   0       4      magic 0x46525450 ("PTRF" on the wire)
 *   4       2      version (RPC_VERSION)
 *   6       2      type (enum rpc_type): which pt.proto message the body is
 *   8       4      body length; checked against the receiver's maximum
 *                  before anything is allocated
 *   12      4      flags (0; reserved)
 *   16      8      request id: echoed in the reply; 0 for events
 *
 * Three layers, each usable alone:
 *   - pure framing (rpc_hdr_*, rpc_parser_*, rpc_frame_pack): no I/O, fuzzed;
 *   - blocking calls with deadlines over a file descriptor (rpc_sock_*), used
 *     by libpt and ptctl, which must not run an event loop;
 *   - libuv connections and listeners (rpc_conn_*, rpc_listen_unix), used by
 *     ptd; these live in rpc_conn.c, which libpt does not link.
 *
 * SIGPIPE: rpc_sock_* send with MSG_NOSIGNAL; libuv writes with write(2), so
 * a process using rpc_conn_* ignores SIGPIPE itself (ptd does at start-up).
 */
#ifndef PT_RPC_H
#define PT_RPC_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include <protobuf-c/protobuf-c.h>

#include "rpc/pt.pb-c.h"

#define RPC_MAGIC 0x46525450u
#define RPC_VERSION 1u
#define RPC_HDR_BYTES 24u
/* A body spanning reads is first given this much, then doubled as it
 * arrives (rpc_parser_feed). */
#define RPC_BODY_CHUNK 65536u
#define RPC_MAX_BODY_DEFAULT (1u << 20) /* control messages are small */
/* A trainer's HELLO lists its whole region table: up to SNAP_MAX_REGIONS
 * (65,536) regions with names of up to 255 bytes, at most 278 bytes each
 * on the wire (name 258, bytes 11, kind 6, the entry's own tag and length
 * 3), so about 18.2 MB: the SMP's socket accepts frames up to this. */
#define RPC_MAX_BODY_HELLO (20u << 20)

enum rpc_type {
  RPC_HELLO = 1,         /* Pt__Hello */
  RPC_HELLO_REPLY = 2,   /* Pt__HelloReply */
  RPC_SLOT_ACQUIRE = 3,  /* Pt__SlotAcquire */
  RPC_SLOT_REPLY = 4,    /* Pt__SlotReply */
  RPC_SEAL = 5,          /* Pt__Seal */
  RPC_REPLY = 6,         /* Pt__Reply */
  RPC_RESTORE_QUERY = 7, /* Pt__RestoreQuery */
  RPC_RESTORE_REPLY = 8, /* Pt__RestoreReply */
  RPC_BYE = 9,           /* Pt__Bye */
  RPC_SUBSCRIBE = 10,    /* Pt__Subscribe */
  RPC_STATE_QUERY = 11,  /* Pt__StateQuery */
  RPC_STATE_REPLY = 12,  /* Pt__StateReply */
  RPC_EVENT = 13,        /* Pt__Event */
  RPC_COMMIT = 14,       /* Pt__Commit */
  RPC_SET_RESTORE = 15,  /* Pt__SetRestore */
  RPC_STATUS_QUERY = 16, /* Pt__StatusQuery */
  RPC_STATUS_REPLY = 17, /* Pt__StatusReply */
  RPC_STOP = 18,         /* Pt__Stop */
  RPC_PROTECT = 19,      /* Pt__Protect */
  RPC_ABORT = 20,        /* Pt__Abort */
  RPC_TRAINER_SET = 21,  /* Pt__TrainerSet */
  RPC_RELEASE = 22,      /* Pt__Release */
  RPC_TYPE_MAX_ = 22,
};

/* The protobuf-c descriptor of a frame type's body; NULL for unknown types. */
const ProtobufCMessageDescriptor *rpc_type_descriptor(uint32_t type);
const char *rpc_type_name(uint32_t type); /* never NULL */

struct rpc_hdr {
  uint32_t type;
  uint32_t length;
  uint32_t flags;
  uint64_t request_id;
};

void rpc_hdr_encode(uint8_t out[RPC_HDR_BYTES], const struct rpc_hdr *h);
/* Checks magic, version, a known type and length <= max_body.
 * PT_EPROTO (bad magic/version/type) or PT_ETOOBIG. */
int rpc_hdr_decode(const uint8_t in[RPC_HDR_BYTES], uint32_t max_body,
                   struct rpc_hdr *h);

/* Packs msg into one frame. OUT: *out (malloc'd, caller frees), *len.
 * msg may be NULL for an empty body. -EINVAL for an unknown type, a msg whose
 * descriptor is not the type's, or a msg missing a required field. */
int rpc_frame_pack(uint8_t **out, size_t *len, uint32_t type,
                   uint64_t request_id, const ProtobufCMessage *msg);

/* The two halves of rpc_frame_pack, for callers that place the frame in
 * memory of their own (rpc_conn.c puts it behind its write request).
 * rpc_frame_size checks msg as rpc_frame_pack does and gives the frame's
 * length, header included (OUT: *len); rpc_frame_write writes that many bytes
 * to out. */
int rpc_frame_size(uint32_t type, const ProtobufCMessage *msg, size_t *len);
int rpc_frame_write(uint8_t *out, size_t len, uint32_t type,
                    uint64_t request_id, const ProtobufCMessage *msg);

/* Unpacks a body as the message its type names. OUT: *msg, freed with
 * protobuf_c_message_free_unpacked(*msg, NULL) by the caller, in the same
 * function. PT_EPROTO when the bytes do not decode (or the type is unknown).
 * protobuf-c does not check enum values: handlers check them. */
int rpc_body_unpack(uint32_t type, const uint8_t *body, size_t len,
                    ProtobufCMessage **msg);

/*
 * Incremental parser: accepts a byte stream in pieces of any size (one read
 * may hold several frames or part of one) and calls on_frame for every
 * complete frame. The body pointer is valid only during the callback.
 */
typedef int (*rpc_frame_cb)(void *arg, const struct rpc_hdr *h,
                            const uint8_t *body);
struct rpc_parser {
  uint32_t max_body;
  uint8_t hdr[RPC_HDR_BYTES];
  size_t hdr_have;
  struct rpc_hdr cur;
  uint8_t *body; /* grows with the bytes received, up to cur.length */
  size_t body_have;
  size_t body_cap; /* bytes allocated for body: what a partial frame holds */
  bool failed;
};
void rpc_parser_init(struct rpc_parser *p, uint32_t max_body);
void rpc_parser_release(struct rpc_parser *p);
/* Returns PT_OK, the first header error (the parser is then failed and every
 * later call returns PT_EPROTO), -ENOMEM, or the first non-zero value
 * on_frame returned (parsing stops there, and the parser is failed too: the
 * rest of that piece is dropped). A body that arrives whole in one piece is
 * passed in place, without a copy. A zero-length body is a valid non-NULL
 * pointer. */
int rpc_parser_feed(struct rpc_parser *p, const uint8_t *data, size_t len,
                    rpc_frame_cb on_frame, void *arg);

/* ---- blocking I/O with deadlines (libpt, ptctl) ---- */

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t rpc_now_ms(void);

/* Connects to a Unix socket path. -ENAMETOOLONG when the path does not fit in
 * sun_path; -EAGAIN when the listener's backlog is full (it never blocks).
 * OUT: *fd (CLOEXEC, blocking; the rpc_sock_* calls never block on it past
 * their deadline). After any error but -ETIMEDOUT from the calls below the
 * stream position is lost: close fd. */
int rpc_sock_connect_unix(const char *path, int *fd);
/* Sends one frame before deadline_ms (rpc_now_ms() clock); -ETIMEDOUT. */
int rpc_sock_send(int fd, uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg, uint64_t deadline_ms);
/* Receives one frame (header checked before the body is allocated) and
 * unpacks it. OUT: *h, *msg (free with protobuf_c_message_free_unpacked).
 * max_body 0 means RPC_MAX_BODY_DEFAULT.
 * -ECONNRESET on EOF, -ETIMEDOUT, PT_EPROTO, PT_ETOOBIG. */
int rpc_sock_recv(int fd, uint32_t max_body, uint64_t deadline_ms,
                  struct rpc_hdr *h, ProtobufCMessage **msg);
/* Sends a request and waits for the reply with the same request id and the
 * expected type, skipping RPC_EVENT frames and replies to other request ids
 * (late answers to calls that timed out). Request ids are unique in the
 * process and never 0. A reply with the right id but another type:
 * PT_EPROTO. timeout_ms bounds the whole call. OUT: *reply as above. */
int rpc_sock_call(int fd, uint32_t type, const ProtobufCMessage *req,
                  uint32_t reply_type, int timeout_ms, ProtobufCMessage **reply);

/* ---- libuv connections (ptd only; rpc_conn.c) ---- */

struct uv_loop_s;
struct rpc_conn;
struct rpc_listener;

/* Called for every complete, decoded frame. msg is freed after the callback
 * returns. Return non-zero to close the connection (logged as a warning):
 * a negative value is on_close's err, a positive one becomes PT_EPROTO. */
typedef int (*rpc_msg_cb)(struct rpc_conn *c, const struct rpc_hdr *h,
                          ProtobufCMessage *msg);
/* Called once when the connection is gone (peer EOF, error, protocol
 * violation, rpc_conn_close); err is 0 for a clean EOF or close. It runs from
 * the loop, never from inside rpc_conn_close, so a handler may close its own
 * conn and go on using it until it returns. The conn is freed after it
 * returns. */
typedef void (*rpc_close_cb)(struct rpc_conn *c, int err);
/* Called for every accepted connection (its data starts as the listener's);
 * return non-zero to refuse it: a refused conn is closed and never reaches
 * on_close. */
typedef int (*rpc_accept_cb)(struct rpc_listener *l, struct rpc_conn *c);
/* Called when no byte has arrived on c for its idle deadline; return 0 to
 * keep it open (the deadline starts again), non-zero to close it with
 * -ETIMEDOUT. */
typedef int (*rpc_idle_cb)(struct rpc_conn *c);

struct rpc_conn_ops {
  rpc_msg_cb on_msg;
  rpc_close_cb on_close;
  uint32_t max_body;       /* 0: RPC_MAX_BODY_DEFAULT */
  size_t max_write_queue;  /* bytes queued before the peer counts as stuck
                              and is closed with -ENOBUFS; 0: 64 MiB */
  uint32_t idle_ms;        /* idle deadline of every conn (0: none); see
                              rpc_conn_set_idle */
  rpc_idle_cb on_idle;     /* NULL: an idle conn is closed (-ETIMEDOUT) */
};

/*
 * Limits on what peers make a process hold. Nothing here is logged: the
 * verdicts reach the user as on_close's err.
 *
 *   - Idle deadline: a conn on which no byte has arrived for its idle_ms
 *     (counted from the last byte received, or from the connect) gets
 *     ops.on_idle, or is closed with -ETIMEDOUT.
 *   - Buffer cap: the bytes held in partial frames (bodies that span reads)
 *     by all conns of the process together. When a conn's partial frame
 *     takes the total past the cap, that conn is closed with -ENOMEM, unless
 *     it is trusted (rpc_conn_set_trusted): trusted conns are served
 *     whatever the total, and count in it.
 */
#define RPC_BUFFER_CAP_DEFAULT ((size_t)64 << 20)
void rpc_buffer_cap_set(size_t bytes); /* 0: RPC_BUFFER_CAP_DEFAULT */
size_t rpc_buffered_bytes(void);       /* held in partial frames now */

/* Listens on a Unix socket path (stale file unlinked first, mode 0600). Every
 * accepted peer's SO_PEERCRED uid must equal ours or be 0; others are closed
 * and logged. -ENAMETOOLONG for a path longer than sun_path; -EADDRINUSE when
 * a live listener answers on path; -EEXIST when path is not a socket.
 * OUT: *out, closed with rpc_listener_close. */
int rpc_listen_unix(struct uv_loop_s *loop, const char *path,
                    const struct rpc_conn_ops *ops, rpc_accept_cb on_accept,
                    void *data, struct rpc_listener **out);
/* Stops accepting and unlinks the path (when it is still our socket).
 * Accepted conns stay open; rpc_conn_listener() is NULL for them after. */
void rpc_listener_close(struct rpc_listener *l);
void *rpc_listener_data(struct rpc_listener *l);

/* Connects to a Unix socket (asynchronously; frames sent before it completes
 * are queued). on_close reports a failed connect. */
int rpc_conn_connect_unix(struct uv_loop_s *loop, const char *path,
                          const struct rpc_conn_ops *ops, void *data,
                          struct rpc_conn **out);
/* Queues one frame. -ENOBUFS (and the conn is closing) past max_write_queue;
 * -EPIPE once the conn is closing; -EINVAL as rpc_frame_pack. */
int rpc_conn_send(struct rpc_conn *c, uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg);
/* Idempotent; frames libuv has not written yet are dropped. on_close(err)
 * follows from the loop. */
void rpc_conn_close(struct rpc_conn *c, int err);
void rpc_conn_set_data(struct rpc_conn *c, void *data);
void *rpc_conn_data(struct rpc_conn *c);
struct rpc_listener *rpc_conn_listener(struct rpc_conn *c); /* NULL if dialled */
/* Peer credentials from SO_PEERCRED (-1 when unknown). */
int rpc_conn_peer_pid(struct rpc_conn *c);
int rpc_conn_peer_uid(struct rpc_conn *c);
/* A new idle deadline for c, counted from the last byte received; 0 turns
 * it off. */
void rpc_conn_set_idle(struct rpc_conn *c, uint32_t idle_ms);
/* Milliseconds since the last byte arrived on c (or since it connected). */
uint64_t rpc_conn_idle_ms(struct rpc_conn *c);
/* Bytes of an incomplete frame c has received (0 between frames). */
size_t rpc_conn_partial_bytes(struct rpc_conn *c);
/* A trusted conn is never closed for the buffer cap. */
void rpc_conn_set_trusted(struct rpc_conn *c, bool trusted);

#endif /* PT_RPC_H */
