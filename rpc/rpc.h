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
 *   - pure framing (rpc_hdr_*, rpc_parser_*, rpc_frame_pack, the checks of
 *     handshake and bulk headers): no I/O, fuzzed (rpc_frame.c);
 *   - blocking calls with deadlines over a file descriptor (rpc_sock_*), used
 *     by libpt and ptctl, which must not run an event loop (rpc_sock.c;
 *     over TCP, with frame tags, rpc_sock_session.c, which libpt does not
 *     link);
 *   - libuv connections and listeners over any libuv stream: Unix sockets
 *     (rpc_listen_unix, peers checked by SO_PEERCRED) and TCP (rpc_listen_tcp,
 *     peers authenticated by a cluster key), with bulk frames whose raw
 *     payload goes straight into the receiver's buffer. Used by ptd; libpt
 *     does not link these files (rpc_conn.c, rpc_unix.c, rpc_tcp.c,
 *     rpc_auth.c, rpc_bulk.c, rpc_tag.c).
 * And the one parser of "HOST:PORT" command-line addresses (rpc_addr.c).
 *
 * Bulk frame: an RPC_BULK frame whose body is a Pt__BulkHeader (what, its
 * length, its CRC32C), then `length` raw payload bytes, outside protobuf.
 *
 * TCP authentication (rpc_auth.c): a mutual challenge-response at connect,
 * AUTH_HELLO / AUTH_CHALLENGE / AUTH_PROOF, with HMAC-SHA512-256 over a
 * shared 32-byte cluster key. It proves that both ends hold the key, and
 * both derive from the key and the handshake's two fresh nonces a session
 * key per direction (never the same on two connections).
 *
 * Frame tags (rpc_tag.c; TCP only, from the first frame after the
 * handshake): every frame carries RPC_TAG_BYTES after its body, a Poly1305
 * tag of its header and body under a one-time key (the first 32 bytes of
 * ChaCha20 keystream under the direction's session key, the nonce being
 * the frame's sequence number: ChaCha20-Poly1305's MAC construction). The
 * sequence number counts the tagged units each direction sent, from 0; it
 * is never sent, so a frame replayed, reordered, deleted, or reflected from
 * the other direction fails its tag, and a failed tag closes the conn with
 * -EACCES. A bulk frame is two units: the frame (header and body, tagged
 * as any frame, so that on_bulk_begin acts only on a header that is
 * proved) and then its payload, followed by its own tag (the next
 * sequence number, over the payload bytes). Frames are authenticated, not
 * encrypted: whoever can read the cluster network reads them, and whoever
 * holds the cluster key and saw a handshake's nonces can derive its keys
 * (every holder of the key is trusted alike). Unix-socket conns carry no
 * tag (their peers are checked by SO_PEERCRED), so the header's version
 * stays RPC_VERSION 1 and a trainer's libpt is unchanged; what changed is
 * RPC_AUTH_VERSION (2), which an older TCP peer states in its HELLO and is
 * refused for. The header's length counts the body alone.
 *
 *   header (24) | body (length) | tag (16)
 *   bulk: header | Pt__BulkHeader | tag | payload | tag
 *
 * rpc/ logs nothing and knows nothing of the daemons: every call reports
 * through its return code and the callbacks below; the few lines an
 * operator must see (a peer closed for a fault, a refused peer) go to the
 * process's log callback (rpc_set_log_cb), as one formatted line each.
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
  RPC_PIN = 19,          /* Pt__Pin */
  RPC_UNPIN = 20,        /* Pt__Unpin */
  RPC_TRAINER_SET = 21,  /* Pt__TrainerSet */
  /* The transport's own frames (rpc_auth.c, rpc_bulk.c); never reach
   * on_msg. */
  RPC_AUTH_HELLO = 22,     /* Pt__AuthHello */
  RPC_AUTH_CHALLENGE = 23, /* Pt__AuthChallenge */
  RPC_AUTH_PROOF = 24,     /* Pt__AuthProof */
  RPC_BULK = 25,           /* Pt__BulkHeader, then the raw payload */
  RPC_RELEASE = 26,        /* Pt__Release: a trainer gives a slot back */
  /* The cluster's control plane (TCP, after the handshake). */
  RPC_NODE_REGISTER = 27,       /* Pt__NodeRegister */
  RPC_NODE_REGISTER_REPLY = 28, /* Pt__NodeRegisterReply */
  RPC_HEARTBEAT = 29,           /* Pt__Heartbeat */
  RPC_NODES_QUERY = 30,         /* Pt__NodesQuery */
  RPC_NODES_REPLY = 31,         /* Pt__NodesReply */
  /* jobs across nodes (ptctl -> controller -> nodes) */
  RPC_JOB_START = 32,           /* Pt__JobStart */
  RPC_JOB_STOP = 33,            /* Pt__JobStop */
  RPC_JOB_RESTORE = 34,         /* Pt__JobRestore */
  RPC_JOB_REPLY = 35,           /* Pt__JobReply */
  RPC_JOBS_QUERY = 36,          /* Pt__JobsQuery */
  RPC_JOBS_REPLY = 37,          /* Pt__JobsReply */
  RPC_JOB_ASSIGN = 38,          /* Pt__JobAssign */
  RPC_JOB_HALT = 39,            /* Pt__JobHalt */
  RPC_JOB_PART_STATE = 40,      /* Pt__JobPartState */
  RPC_STEP_SEALED = 41,         /* Pt__StepSealed */
  RPC_JOB_PIN = 42,             /* Pt__JobPin */
  RPC_JOB_VOTE = 43,            /* Pt__JobVote */
  RPC_JOB_COMMIT = 44,          /* Pt__JobCommit */
  RPC_JOB_UNPIN = 45,           /* Pt__JobUnpin */
  /* fault injection (ptctl fault -> controller -> node) */
  RPC_FAULT = 46,               /* Pt__Fault */
  RPC_FAULT_REPLY = 47,         /* Pt__FaultReply */
  /* the persistent tier (controller <-> node) */
  RPC_STEP_PERSISTED = 48,      /* Pt__StepPersisted */
  RPC_JOB_PERSISTED = 49,       /* Pt__JobPersisted */
  RPC_DISK_PROBE = 50,          /* Pt__DiskProbe */
  RPC_DISK_PROBE_REPLY = 51,    /* Pt__DiskProbeReply */
  /* erasure coding between the SMPs of a group */
  RPC_JOB_PEERS = 60,           /* Pt__JobPeers */
  RPC_PEERS_SET = 61,           /* Pt__PeersSet */
  RPC_PEER_HELLO = 62,          /* Pt__PeerHello */
  RPC_PEER_READY = 63,          /* Pt__PeerReady */
  RPC_PEER_ACK = 64,            /* Pt__PeerAck */
  RPC_PEER_META = 65,           /* Pt__PeerMeta */
  RPC_PEER_FETCH = 66,          /* Pt__PeerFetch */
  RPC_PEER_SKIP = 67,           /* Pt__PeerSkip */
  /* recovery in place (node -> SMP -> trainer) */
  RPC_RECOVER = 68,             /* Pt__Recover */
  RPC_RECOVER_QUERY = 69,       /* Pt__RecoverQuery */
  RPC_TYPE_MAX_ = 69,
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
  uint32_t trailer; /* bytes after every body (rpc_parser_set_trailer) */
  uint32_t cur_trailer; /* the trailer of the frame being collected */
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
/* From the next frame on, every frame carries n bytes after its body
 * (a TCP conn's tag, RPC_TAG_BYTES, from the frame after the handshake):
 * they are collected with the body and passed to on_frame at
 * body + h->length; h->length and max_body count the body alone. May be
 * called from on_frame. 0 (the default) for none. */
void rpc_parser_set_trailer(struct rpc_parser *p, uint32_t n);
/* Bytes that complete what p is collecting now: the rest of a header, or
 * the rest of a body (RPC_HDR_BYTES between frames). A reader that never
 * feeds more than this delivers at most one frame per feed and never reads
 * a byte past it (rpc_conn.c does so on conns that take bulk frames). */
size_t rpc_parser_want(const struct rpc_parser *p);
/* Where the stream stands, in words, for the line that closes a peer: in
 * a header or a body (how far), or, once failed, what the header that
 * failed says (its magic, version, type or length against the limit) or
 * which frame the receiver refused. "" between frames. */
void rpc_parser_where(const struct rpc_parser *p, char *out, size_t cap);

/* ---- the transport's frames, pure checks (fuzzed with the parser) ---- */

/* 2: frames after the handshake carry tags (version 1 carried none: such
 * a peer is refused at its HELLO, with a line that says so). */
#define RPC_AUTH_VERSION 2u
#define RPC_AUTH_NONCE_BYTES 32u
#define RPC_AUTH_MAC_BYTES 32u  /* crypto_auth_BYTES */
#define RPC_KEY_BYTES 32u       /* crypto_auth_KEYBYTES */
#define RPC_NODE_ID_MAX 255u    /* bytes of a node id, NUL excluded */
/* Handshake frames are small: during the handshake a conn accepts bodies
 * of at most this many bytes, so a stranger cannot make it allocate. */
#define RPC_AUTH_MAX_BODY 1024u

/* Checks an unpacked handshake message (type RPC_AUTH_*) for what protobuf
 * cannot: the version, nonce and MAC sizes and the node id's length (an id
 * with an embedded NUL is cut there by protobuf-c; both sides MAC the id as
 * decoded, so the cut one is what is proved). PT_OK, or PT_EPROTO (also for
 * any other type). */
int rpc_auth_msg_check(uint32_t type, const ProtobufCMessage *msg);

/* What a bulk frame carries (Pt__BulkHeader, decoded). */
struct rpc_bulk_hdr {
  uint32_t kind;   /* caller-defined: what the payload is */
  uint64_t tag;    /* caller-defined: which one */
  uint64_t offset; /* caller-defined: where in it */
  uint64_t length; /* payload bytes following the frame */
  uint32_t crc32c; /* crc32c_update(CRC32C_SEED, payload, length) */
};
/* Decodes an RPC_BULK body. PT_EPROTO when it does not decode;
 * PT_ETOOBIG when length > max_payload (so a receiver refuses the payload
 * before reading a byte of it). OUT: *h. */
int rpc_bulk_hdr_decode(const uint8_t *body, size_t len, uint64_t max_payload,
                        struct rpc_bulk_hdr *h);

/* ---- blocking I/O with deadlines (libpt, ptctl) ---- */

/* Milliseconds on CLOCK_MONOTONIC. */
uint64_t rpc_now_ms(void);

/* Connects to a Unix socket path. -ENAMETOOLONG when the path does not fit in
 * sun_path; -EAGAIN when the listener's backlog is full (it never blocks).
 * OUT: *fd (CLOEXEC, blocking; the rpc_sock_* calls never block on it past
 * their deadline). After any error but -ETIMEDOUT from the calls below the
 * stream position is lost: close fd. */
int rpc_sock_connect_unix(const char *path, int *fd);
/* Connects to a numeric IPv4 or IPv6 address (no name resolution: -EINVAL)
 * within timeout_ms (-ETIMEDOUT), TCP_NODELAY. OUT: *fd as
 * rpc_sock_connect_unix; run rpc_sock_session_handshake on it before any frame,
 * then rpc_sock_session_* (every frame after it is tagged). */
int rpc_sock_connect_tcp(const char *host, int port, int timeout_ms, int *fd);
/* Sends one frame before deadline_ms (rpc_now_ms() clock); -ETIMEDOUT. */
int rpc_sock_send(int fd, uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg, uint64_t deadline_ms);
/* Receives one frame (header checked before the body is allocated) and
 * unpacks it. OUT: *h, *msg (free with protobuf_c_message_free_unpacked).
 * max_body 0 means RPC_MAX_BODY_DEFAULT.
 * -ECONNRESET on EOF, -ETIMEDOUT, PT_EPROTO, PT_ETOOBIG. */
int rpc_sock_recv(int fd, uint32_t max_body, uint64_t deadline_ms,
                  struct rpc_hdr *h, ProtobufCMessage **msg);
/* Exactly len raw bytes out / in before deadline_ms (what rpc_sock_send
 * and rpc_sock_recv are made of): the errors above. */
int rpc_sock_write_all(int fd, const void *buf, size_t len,
                       uint64_t deadline_ms);
int rpc_sock_read_all(int fd, void *buf, size_t len, uint64_t deadline_ms);
/* The next request id of the process's calls (never 0). */
uint64_t rpc_sock_next_id(void);
/* Sends a request and waits for the reply with the same request id and the
 * expected type, skipping RPC_EVENT frames and replies to other request ids
 * (late answers to calls that timed out). Request ids are unique in the
 * process and never 0. A reply with the right id but another type:
 * PT_EPROTO. timeout_ms bounds the whole call. OUT: *reply as above.
 * In rpc_sock_session.c (rpc_sock_session_call on an untagged session, the
 * one call loop), so not in libpt, whose client keeps its own replies. */
int rpc_sock_call(int fd, uint32_t type, const ProtobufCMessage *req,
                  uint32_t reply_type, int timeout_ms, ProtobufCMessage **reply);

/* ---- libuv connections (ptd only; rpc_conn.c, rpc_unix.c, rpc_tcp.c) ---- */

struct uv_loop_s;
struct rpc_conn;
struct rpc_listener;

/* What the process's log callback is told about. A peer can repeat
 * RPC_LOG_ACCEPT and RPC_LOG_REFUSE lines at will (a connection flood, the
 * process out of descriptors): the callback should rate-limit them. */
enum rpc_log_kind {
  RPC_LOG_CLOSE = 1, /* a conn closed for a fault of its peer's (or of the
                        handler's verdict): one line per conn */
  RPC_LOG_ACCEPT,    /* accepting a connection failed */
  RPC_LOG_REFUSE,    /* a peer refused: credentials or authentication */
};
/* Syslog priorities of the lines. */
#define RPC_LOG_ERR 3
#define RPC_LOG_WARN 4
/* line: one formatted line without a newline ("rpc: closing connection
 * from pid 42: protocol error"), valid during the call. Called on the loop
 * thread of the conn concerned. */
typedef void (*rpc_log_fn)(enum rpc_log_kind kind, int level, const char *line);
/* Process-wide; NULL (the default) drops every line. Set it before any
 * loop runs. */
void rpc_set_log_cb(rpc_log_fn fn);

/* Called for every complete, decoded frame. msg is freed after the callback
 * returns. Return non-zero to close the connection (an RPC_LOG_CLOSE line):
 * a negative value is on_close's err, a positive one becomes PT_EPROTO. */
typedef int (*rpc_msg_cb)(struct rpc_conn *c, const struct rpc_hdr *h,
                          ProtobufCMessage *msg);
/* Called once when the connection is gone (peer EOF, error, protocol
 * violation, rpc_conn_close); err is 0 for a clean EOF or close. It runs from
 * the loop, never from inside rpc_conn_close, so a handler may close its own
 * conn and go on using it until it returns. The conn is freed after it
 * returns. */
typedef void (*rpc_close_cb)(struct rpc_conn *c, int err);
/* Called for every accepted connection (its data starts as the listener's),
 * over TCP once it is authenticated; return non-zero to refuse it: a
 * refused conn is closed and never reaches on_close. */
typedef int (*rpc_accept_cb)(struct rpc_listener *l, struct rpc_conn *c);
/* Called when no byte has arrived on c for its idle deadline; return 0 to
 * keep it open (the deadline starts again), non-zero to close it with
 * -ETIMEDOUT. */
typedef int (*rpc_idle_cb)(struct rpc_conn *c);

/* Called once when a dialled conn can carry frames (connected and, over
 * TCP, authenticated); frames sent before were queued and go out now. */
typedef void (*rpc_ready_cb)(struct rpc_conn *c);

/* Bulk frames (rpc_bulk.c). The receiver names where a payload goes before
 * any byte of it is read: on_bulk_begin gets the decoded header (length
 * already checked against max_bulk) and sets *dst to a buffer of at least
 * h->length bytes, which libuv then reads into directly. It returns PT_OK,
 * or a negative code to close the conn with it. *dst == NULL discards the
 * payload (on_bulk_done then gets -ECANCELED). dst must stay valid until
 * on_bulk_done. */
typedef int (*rpc_bulk_begin_cb)(struct rpc_conn *c,
                                 const struct rpc_bulk_hdr *h, void **dst);
/* Called exactly once for every on_bulk_begin that returned PT_OK: status
 * PT_OK (all bytes in dst, CRC32C matched), PT_ECHECKSUM (all bytes in dst,
 * CRC32C did not match: that transfer failed, the conn stays open, as the
 * stream is still in step), -ECANCELED (discarded), or the conn's close
 * error when it closed mid-payload (PT_EPROTO for a peer that died there;
 * on_close follows). dst is the caller's again when it returns. */
typedef void (*rpc_bulk_done_cb)(struct rpc_conn *c,
                                 const struct rpc_bulk_hdr *h, void *dst,
                                 int status);
/* Called when a conn that refused a bulk send with -EAGAIN has room again. */
typedef void (*rpc_drain_cb)(struct rpc_conn *c);

struct rpc_conn_ops {
  rpc_msg_cb on_msg;
  rpc_close_cb on_close;
  uint32_t max_body;       /* 0: RPC_MAX_BODY_DEFAULT */
  size_t max_write_queue;  /* bytes of frames queued (bulk payloads not
                              counted: they are the caller's) before the
                              peer counts as stuck and is closed with
                              -ENOBUFS; 0: 64 MiB */
  uint32_t idle_ms;        /* idle deadline of every conn (0: none); see
                              rpc_conn_set_idle */
  rpc_idle_cb on_idle;     /* NULL: an idle conn is closed (-ETIMEDOUT) */
  rpc_ready_cb on_ready;   /* dialled conns; may be NULL */
  /* TCP: connect plus handshake deadline of accepted conns (a dialled conn
   * has its own, rpc_conn_connect_tcp); 0: RPC_AUTH_TIMEOUT_MS. */
  uint32_t auth_ms;
  /* TCP listeners: conns accepted and not yet authenticated, at most; one
   * more drops the one that has waited longest (an RPC_LOG_REFUSE line), so
   * strangers that never finish the handshake can take neither every
   * descriptor and 64 KiB each nor the place of a peer with the key;
   * 0: RPC_AUTH_PENDING_DEFAULT. */
  uint32_t max_handshakes;
  /* Bulk frames: a conn without on_bulk_begin closes on one (PT_EPROTO).
   * A conn with it reads no byte past the frame it is in (a payload must
   * not land in the read buffer), so its control frames cost two reads
   * each: give it to peer links, not to chatty control conns. */
  rpc_bulk_begin_cb on_bulk_begin;
  rpc_bulk_done_cb on_bulk_done;
  uint64_t max_bulk;       /* payload bytes accepted; 0: RPC_MAX_BULK_DEFAULT */
  size_t bulk_queue_max;   /* rpc_conn_send_bulk's mark; 0: 16 MiB */
  rpc_drain_cb on_drain;   /* may be NULL */
};
#define RPC_AUTH_TIMEOUT_MS 10000u
#define RPC_AUTH_PENDING_DEFAULT 64u
#define RPC_MAX_BULK_DEFAULT ((uint64_t)1 << 30)

/*
 * Limits on what peers make a process hold. None of these is logged: the
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
 *   - Handshakes in progress: a TCP listener holds at most
 *     ops.max_handshakes accepted conns not yet authenticated (each until
 *     ops.auth_ms at most); one more accepted drops the one that has
 *     waited longest, with an RPC_LOG_REFUSE line (this one is logged).
 */
#define RPC_BUFFER_CAP_DEFAULT ((size_t)64 << 20)
void rpc_buffer_cap_set(size_t bytes); /* 0: RPC_BUFFER_CAP_DEFAULT */
size_t rpc_buffered_bytes(void);       /* held in partial frames now */

/* Listens on a Unix socket path (stale file unlinked first, mode 0600). Every
 * accepted peer's SO_PEERCRED uid must equal ours or be 0; others are closed
 * (an RPC_LOG_REFUSE line). -ENAMETOOLONG for a path longer than sun_path; -EADDRINUSE when
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

/*
 * TCP (rpc_tcp.c). host is a numeric IPv4 or IPv6 address ("127.0.0.1",
 * "::1", "0.0.0.0", "::"); no name resolution here (-EINVAL). Every TCP
 * conn has TCP_NODELAY, keepalive (RPC_TCP_KEEPALIVE_S) and a
 * TCP_USER_TIMEOUT (RPC_TCP_USER_TIMEOUT_MS: data written and not
 * acknowledged that long, the peer's machine gone silent, ends the conn
 * with -ETIMEDOUT instead of after the kernel's ~15 minutes of
 * retransmissions), and is
 * authenticated before anything else: the dialler runs the handshake at
 * connect, the listener answers it; auth (required: -EINVAL when NULL) says
 * who we are and holds the key, and is copied. Until the handshake has
 * succeeded no other frame is parsed (a conn is closed on the first one)
 * and no body over RPC_AUTH_MAX_BODY is accepted. An accepted conn reaches
 * on_accept only once authenticated; one that fails (wrong or missing key,
 * garbage, a replayed or truncated handshake, ops.auth_ms passing) is
 * closed with one RPC_LOG_REFUSE line naming the peer's address and never
 * reaches on_close.
 */
#define RPC_TCP_KEEPALIVE_S 15u
#define RPC_TCP_USER_TIMEOUT_MS 20000u
struct rpc_auth {
  uint8_t key[RPC_KEY_BYTES];         /* the cluster key (rpc_key_load) */
  uint32_t role;                      /* what this side is: caller-defined */
  char node_id[RPC_NODE_ID_MAX + 1];  /* who this side is */
};
/* Parses "HOST:PORT" (rpc_addr.c): a numeric IPv4 address, or an IPv6 one
 * in brackets ("[::1]:7000"), and a port min_port..65535 (0 or 1). OUT:
 * host (without brackets), *port. -EINVAL with a sentence in why that
 * names what is wrong (not the input: the caller names its flag and says
 * it). */
int rpc_addr_parse(const char *s, int min_port, char *host, size_t hostlen,
                   int *port, char *why, size_t whylen);
/* True when host is a numeric IPv4 or IPv6 address alone ("10.0.0.1",
 * "::1"; no brackets, no port), what rpc_sock_connect_tcp and
 * rpc_listen_tcp take; false for a name, "", NULL, or one with a port. */
bool rpc_addr_is_numeric(const char *host);
/* Listens on host:port (port 0: any free port, see rpc_listener_port).
 * -EADDRINUSE, -EINVAL (host not numeric, auth NULL or its node id too
 * long), or libuv's errors. OUT: *out, closed with rpc_listener_close. */
int rpc_listen_tcp(struct uv_loop_s *loop, const char *host, int port,
                   const struct rpc_conn_ops *ops, const struct rpc_auth *auth,
                   rpc_accept_cb on_accept, void *data,
                   struct rpc_listener **out);
/* The port a TCP listener is bound to (0 for a Unix listener). */
int rpc_listener_port(struct rpc_listener *l);
/* Connects to host:port and authenticates, asynchronously: frames sent
 * before on_ready are queued. When both are not done within timeout_ms
 * (0: RPC_AUTH_TIMEOUT_MS) the conn closes with -ETIMEDOUT; a peer without
 * our key: -EACCES; a refused connect: libuv's error, all through
 * on_close. -EINVAL as rpc_listen_tcp. OUT: *out. */
int rpc_conn_connect_tcp(struct uv_loop_s *loop, const char *host, int port,
                         const struct rpc_conn_ops *ops,
                         const struct rpc_auth *auth, uint32_t timeout_ms,
                         void *data, struct rpc_conn **out);
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
/* Peer credentials from SO_PEERCRED (-1 when unknown, and over TCP). */
int rpc_conn_peer_pid(struct rpc_conn *c);
int rpc_conn_peer_uid(struct rpc_conn *c);
/* The peer in words, for log lines: "pid 42" over a Unix socket,
 * "127.0.0.1:5000" or "[::1]:5000" over TCP. Never NULL. */
const char *rpc_conn_peer_name(struct rpc_conn *c);
/* What an authenticated TCP peer said it is (its rpc_auth role and node
 * id): 0 and "" before the handshake and over a Unix socket. */
uint32_t rpc_conn_peer_role(struct rpc_conn *c);
const char *rpc_conn_peer_node(struct rpc_conn *c);
/* A new idle deadline for c, counted from the last byte received; 0 turns
 * it off. */
void rpc_conn_set_idle(struct rpc_conn *c, uint32_t idle_ms);
/* Milliseconds since the last byte arrived on c (or since it connected). */
uint64_t rpc_conn_idle_ms(struct rpc_conn *c);
/* Bytes of an incomplete frame c has received, a bulk payload's included
 * (0 between frames). */
size_t rpc_conn_partial_bytes(struct rpc_conn *c);
/* A trusted conn is never closed for the buffer cap. */
void rpc_conn_set_trusted(struct rpc_conn *c, bool trusted);

/* ---- bulk frames (rpc_bulk.c) ---- */

/* Called once for every rpc_conn_send_bulk that returned PT_OK, when the
 * payload has been handed to the kernel (PT_OK) or will never be (the
 * conn's close error, -ECANCELED when it closed cleanly): the caller's
 * buffer is its own again. */
typedef void (*rpc_bulk_sent_cb)(struct rpc_conn *c, void *arg, int status);
/* Queues one bulk frame: header h (h->crc32c is the caller's CRC of the
 * payload, see common/crc32c.h; a wrong one fails the transfer at the receiver)
 * and h->length bytes from payload, which are written from the caller's
 * buffer, never copied: it must stay valid and unchanged until sent(arg).
 * Backpressure: -EAGAIN, and nothing queued, when the conn already holds
 * ops.bulk_queue_max bytes or more not yet written; on_drain follows when
 * it is below again (at least one send is always taken on an idle conn).
 * -EPIPE once the conn is closing. sent may be NULL. */
int rpc_conn_send_bulk(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                       const void *payload, rpc_bulk_sent_cb sent, void *arg);
/* Bytes queued on c and not yet written (frames and payloads). */
size_t rpc_conn_queued_bytes(struct rpc_conn *c);


/* ---- keys and the handshake's steps (rpc_auth.c; libsodium) ---- */

/* Reads a cluster key: a regular file of exactly RPC_KEY_BYTES bytes,
 * owned by us, not a symlink, with no permission for group or others.
 * -ELOOP (symlink), -EPERM (mode or owner), -EINVAL (size, not a regular
 * file), or open's error; errbuf (may be NULL) gets a sentence naming path
 * and the fix. OUT: key. */
int rpc_key_load(const char *path, uint8_t key[RPC_KEY_BYTES], char *errbuf,
                 size_t errlen);
/* Creates path (O_EXCL|O_NOFOLLOW: -EEXIST when anything is there) with
 * mode 0600 and RPC_KEY_BYTES fresh random bytes, synced. A partly written
 * file is removed. errbuf as rpc_key_load. */
int rpc_key_write(const char *path, char *errbuf, size_t errlen);

/*
 * One side of the handshake, as a state machine without I/O: rpc_tcp.c
 * drives it over libuv, rpc_sock_handshake over a blocking socket.
 *
 *   dialler:  next(NULL) -> HELLO;  next(CHALLENGE) -> PROOF, done
 *   acceptor: next(HELLO) -> CHALLENGE;  next(PROOF) -> done
 *
 * The dialler's MAC input is "pt-rpc-auth-1", 'C', nonce_c, nonce_s,
 * role_c (le32), len(id_c) (1 byte), id_c, role_s (le32), len(id_s), id_s;
 * the acceptor's is the same with 'S'. Both nonces are fresh per handshake
 * from both sides, so a recorded handshake replayed fails, and the label
 * byte keeps one side's MAC from being reflected as the other's.
 */
#define RPC_HANDSHAKE_DONE 1
struct rpc_handshake {
  struct rpc_auth self;
  bool dialler;
  int step;
  uint8_t nonce_c[RPC_AUTH_NONCE_BYTES], nonce_s[RPC_AUTH_NONCE_BYTES];
  uint8_t mac[RPC_AUTH_MAC_BYTES];
  uint32_t peer_role;                 /* valid once the peer said it */
  char peer_node[RPC_NODE_ID_MAX + 1];
  bool peer_said;                     /* peer_role and peer_node are set */
  union {                             /* the message next() gave out */
    Pt__AuthHello hello;
    Pt__AuthChallenge challenge;
    Pt__AuthProof proof;
  } out;
};
/* -EINVAL for a node id longer than RPC_NODE_ID_MAX; -ENOSYS when libsodium
 * cannot start. */
int rpc_handshake_init(struct rpc_handshake *hs, const struct rpc_auth *self,
                       bool dialler);
/* Feeds the peer's message (in_type 0 and in NULL for the dialler's first
 * call) and gives the message to send (OUT: *out_type, *out: NULL when
 * there is none; it lives in hs until the next call). Returns PT_OK (send
 * *out, wait for the peer), RPC_HANDSHAKE_DONE (send *out if any; the peer
 * is authenticated), -EACCES (the peer's MAC is wrong: it lacks our key, or
 * replays another handshake), or PT_EPROTO (a message out of turn, or one
 * rpc_auth_msg_check refuses). After an error hs is failed. */
int rpc_handshake_next(struct rpc_handshake *hs, uint32_t in_type,
                       const ProtobufCMessage *in, uint32_t *out_type,
                       const ProtobufCMessage **out);
/* Acceptor side, for its refusal lines: the dialler's HELLO has been
 * taken (peer_role and peer_node hold what it said, unproven; it stays
 * true after a failure), and: the CHALLENGE is out, the PROOF not yet in
 * (a dialler without the key stops there). False on the dialler's side. */
bool rpc_handshake_has_hello(const struct rpc_handshake *hs);
bool rpc_handshake_is_waiting_proof(const struct rpc_handshake *hs);
/* The handshake returned RPC_HANDSHAKE_DONE (rpc_handshake_session may
 * run). */
bool rpc_handshake_is_done(const struct rpc_handshake *hs);
/* Wipes the key and nonces. */
void rpc_handshake_release(struct rpc_handshake *hs);
/* The dialler's handshake over a connected blocking socket (rpc_sock_*),
 * within timeout_ms; the errors of rpc_handshake_next and rpc_sock_*.
 * OUT: *peer_role and peer_node (RPC_NODE_ID_MAX + 1 bytes), may be NULL.
 * It keeps no session keys, and every frame after the handshake must carry
 * a tag: a caller that goes on talking uses rpc_sock_session_handshake
 * and rpc_sock_session_* instead (this one is good for a handshake alone). */
__attribute__((deprecated("frames after it need tags: use "
                          "rpc_sock_session_handshake")))
int rpc_sock_handshake(int fd, const struct rpc_auth *self, int timeout_ms,
                       uint32_t *peer_role, char *peer_node);

/* ---- frame tags (rpc_tag.c; libsodium) ---- */

#define RPC_TAG_BYTES 16u         /* crypto_onetimeauth_BYTES */
#define RPC_SESSION_KEY_BYTES 32u /* crypto_stream_chacha20_ietf_KEYBYTES */

/* One conn's keys and sequence numbers, both directions. */
struct rpc_session {
  uint8_t tx_key[RPC_SESSION_KEY_BYTES], rx_key[RPC_SESSION_KEY_BYTES];
  uint64_t tx_seq, rx_seq; /* the next unit's number, from 0 */
};
/* Derives s from a handshake that returned RPC_HANDSHAKE_DONE (either
 * side): each direction's key is crypto_generichash (BLAKE2b-256) keyed
 * with the cluster key over "pt-rpc-session-1", nonce_c, nonce_s and 'C'
 * (the dialler's frames) or 'S' (the acceptor's). -EINVAL before DONE. */
int rpc_handshake_session(const struct rpc_handshake *hs,
                          struct rpc_session *s);
void rpc_session_wipe(struct rpc_session *s);

/* An incremental tag: begin with a direction's key and a unit's sequence
 * number, feed the unit's bytes in pieces, then final (the sender) or
 * check (the receiver: constant time; true when it matches). Opaque
 * storage for crypto_onetimeauth_state. */
struct rpc_tag_ctx {
  _Alignas(16) unsigned char opaque[256];
};
void rpc_tag_begin(struct rpc_tag_ctx *t,
                   const uint8_t key[RPC_SESSION_KEY_BYTES], uint64_t seq);
void rpc_tag_update(struct rpc_tag_ctx *t, const void *p, size_t n);
void rpc_tag_final(struct rpc_tag_ctx *t, uint8_t tag[RPC_TAG_BYTES]);
bool rpc_tag_check(struct rpc_tag_ctx *t, const uint8_t tag[RPC_TAG_BYTES]);
/* The tag of one whole frame (header and body, len bytes) as s's next
 * unit out, written to tag; s->tx_seq advances. */
void rpc_tag_seal(struct rpc_session *s, const uint8_t *frame, size_t len,
                  uint8_t tag[RPC_TAG_BYTES]);
/* Checks a received frame (h as decoded, its body of h->length bytes, tag)
 * as s's next unit in; s->rx_seq advances either way (a conn whose tag
 * failed is closed). */
bool rpc_tag_open(struct rpc_session *s, const struct rpc_hdr *h,
                  const uint8_t *body, const uint8_t tag[RPC_TAG_BYTES]);

/* ---- blocking I/O with tags (rpc_sock_session.c; ptctl, tests) ---- */

/* A blocking conn: its fd (the caller's: never closed here) and, over TCP
 * after the handshake, its session. An untagged one (Unix sockets) is the
 * plain rpc_sock_* calls. */
struct rpc_sock_session {
  int fd;
  bool tagged;
  struct rpc_session keys;
};
/* rpc_sock_handshake, keeping the keys: OUT *s (s->fd = fd), then
 * rpc_sock_session_* speak on it. The errors of rpc_sock_handshake. */
int rpc_sock_session_handshake(struct rpc_sock_session *s, int fd,
                               const struct rpc_auth *self, int timeout_ms,
                               uint32_t *peer_role, char *peer_node);
/* A session over fd from a handshake driven by hand (either side, hs
 * DONE), or untagged when hs is NULL. -EINVAL as rpc_handshake_session. */
int rpc_sock_session_start(struct rpc_sock_session *s, int fd,
                           const struct rpc_handshake *hs);
/* rpc_sock_send, rpc_sock_recv and rpc_sock_call on s: the same
 * semantics, each frame tagged and checked (a frame whose tag fails:
 * -EACCES, and the stream is lost). */
int rpc_sock_session_send(struct rpc_sock_session *s, uint32_t type,
                          uint64_t request_id, const ProtobufCMessage *msg,
                          uint64_t deadline_ms);
int rpc_sock_session_recv(struct rpc_sock_session *s, uint32_t max_body,
                          uint64_t deadline_ms, struct rpc_hdr *h,
                          ProtobufCMessage **msg);
int rpc_sock_session_call(struct rpc_sock_session *s, uint32_t type,
                          const ProtobufCMessage *req, uint32_t reply_type,
                          int timeout_ms, ProtobufCMessage **reply);
/* Sends a bulk frame and its payload, both tagged (tests, tools). */
int rpc_sock_session_send_bulk(struct rpc_sock_session *s,
                               const struct rpc_bulk_hdr *h,
                               const void *payload, uint64_t deadline_ms);
/* Wipes the keys (the fd stays open: the caller closes it). */
void rpc_sock_session_release(struct rpc_sock_session *s);

#endif /* PT_RPC_H */
