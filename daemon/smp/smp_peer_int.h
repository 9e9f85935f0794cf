/*
 * smp_peer_int.h — what smp_peer.c (a step's protection) and
 * smp_peer_link.c (the links to the group) share. Not an interface: the
 * SMP calls the smp_peer_* functions of smp_internal.h.
 */
#ifndef PT_SMP_PEER_INT_H
#define PT_SMP_PEER_INT_H

#include <stdbool.h>
#include <stdint.h>

#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_protect.h"

#define PEER_PIECE ((size_t)4 << 20)  /* bytes of a chunk per bulk frame */
#define PEER_BULK_PIECE 1u            /* bulk kind: a piece of a chunk */
#define PEER_TICK_MS 50u
#define PEER_REDIAL_MIN_MS 100u
#define PEER_REDIAL_MAX_MS 2000u
#define PEER_HELLO_MS 10000u          /* an accepted link says HELLO by then */
#define PEER_BULK_FETCH 2u            /* bulk kind: a piece a rebuild fetched */
#define PEER_BULK_SUM 3u              /* bulk kind: a pipelined rebuild's sum */
#define PEER_META_MAX ((size_t)1 << 20) /* bytes of a checksum table */

struct smp_peer;

/* One other member of the group. */
struct link {
  struct smp_peer *p;
  uint32_t member;
  char host[64];
  int port;                  /* 0: not known */
  /* the link we dialled: our chunks go out on it */
  struct rpc_conn *out;
  bool out_up;               /* authenticated, HELLO sent */
  uint64_t redial_at, redial_ms;
  uint64_t ready[SNAP_MAX_SLOTS]; /* steps it said READY for, newest */
  unsigned nready;                 /*   last */
  /* the member's slot bytes (from its HELLO or READY) */
  bool has_bytes;
  uint64_t bytes;
  /* the link it dialled: its chunks come in on it */
  struct rpc_conn *in;
  uint8_t *rbuf;             /* PEER_PIECE bytes, for its pieces */
  /* our sends of the active step to this member: indexes into p->sends */
  unsigned idx[SMP_PROTECT_MAX_SENDS];
  unsigned nidx, cur;
  uint64_t cur_off;
  bool sending;              /* READY came: its pieces go out */
  /* the member's checksum tables of its newest steps (PEER_META), for a
   * rebuild of it (smp_peer_serve.c) */
  struct {
    uint64_t step;
    uint8_t *table;
    size_t len;
  } meta[SNAP_MAX_SLOTS];
  unsigned nmeta;
};

/* An accepted connection before its HELLO says whose it is. */
struct in_conn {
  struct smp_peer *p;
  int member;                /* -1 until HELLO */
};

struct smp_peer {
  struct smp *smp;
  struct rpc_auth auth;
  struct rpc_listener *listener;
  int port;
  uv_timer_t timer;
  bool timer_on;
  bool has_epoch;
  uint64_t epoch;
  struct link link[RS_MAX_MEMBERS];
  /* the engine, for the sizes it was made with and the store it serves */
  struct smp_protect *eng;
  uint64_t eng_bytes[RS_MAX_MEMBERS];
  const struct snap_store *eng_store;
  /* until when each slot's step is being protected: the trainer's next
   * slot is not taken from it meanwhile (smp_peer_busy_slots) */
  uint64_t slot_until[SNAP_MAX_SLOTS];
  /* the step whose sends are out (one at a time) */
  bool active;
  uint32_t slot;
  uint64_t step, deadline;
  struct smp_protect_send sends[SMP_PROTECT_MAX_SENDS];
  unsigned nsends;
  /* The step this SMP's trainer took a slot for, in flight: from the
   * slot's taking until the job commits or lets go of it, it fails here,
   * or its slot_until. Meanwhile the trainer takes no other slot
   * (smp_peer_may_take). */
  bool cur;
  uint32_t cur_slot;
  uint64_t cur_step;
  /* a PIN of the node waiting for its step to be protected */
  bool pin_wait, pin_fresh; /* fresh: the slot was pinned by this PIN */
  struct smp_conn *pin_sc;
  uint64_t pin_id, pin_step, pin_deadline;
  /* the store whose bytes the links were told (none: not told yet) */
  const struct snap_store *told_store;
  uint64_t told_bytes;
  char why[400];             /* why the last step failed */
  /* the steps given up here lately (newest last): never started again,
   * and a PIN of one is answered at once */
  uint64_t failed[SNAP_MAX_SLOTS];
  unsigned nfailed;
  struct smp_peer_rebuild *rebuild; /* smp_peer_rebuild.c; NULL: none yet */
  struct smp_peer_relay *relay;     /* smp_peer_relay.c; NULL: none yet */
  bool meta_loaded;          /* the tables kept before read (smp_peer_meta.c) */
  /* A step this member rebuilt: its data, not its parity rows (the next
   * committed step writes them); kept in '<object>.meta' too, so that an
   * SMP started again never serves that step's parity area as parity. */
  bool no_parity;
  uint64_t no_parity_step;
};

static inline struct smp_peer *P(struct smp *smp)
{
  return smp->peer;
}

static inline const struct code_group_member *member_of(const struct smp_peer *p,
                                                 uint32_t i)
{
  return &p->smp->group.members[i];
}

static inline uint64_t own_bytes(const struct smp_peer *p)
{
  return p->smp->store ? snap_store_slot_bytes(p->smp->store) : 0;
}

/* smp_peer.c */
/* Writes l's pieces of the active step until the link's queue is full. */
void smp_peer_push(struct link *l);
/* The step failed here: logged once, a PIN waiting for it answered. */
void smp_peer_step_fail(struct smp_peer *p, uint64_t step, int rc,
                        const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
/* Protected here: PROTECTED once pinned, the PIN answered, the next
 * step's sends started. */
void smp_peer_check_done(struct smp_peer *p);
/* The PIN waiting (if any) is answered with status (why: its words). */
void smp_peer_pin_answer(struct smp_peer *p, int status, const char *why);
/* Member l's trainer skipped step (PEER_SKIP): its protection here is
 * given up at once, not at its deadline. */
void smp_peer_on_skip(struct smp_peer *p, const struct link *l,
                      const Pt__PeerSkip *m);
/* A new epoch: everything of the old one's steps is forgotten (their
 * slots, sends, failures, a PIN waiting). */
void smp_peer_reset(struct smp_peer *p);
/* Whether step was given up here lately. */
bool smp_peer_failed(const struct smp_peer *p, uint64_t step);
/* l's holder said READY for step. */
void smp_peer_ready_add(struct link *l, uint64_t step);

/* smp_peer_link.c */
void smp_peer_link_hello(struct link *l);
void smp_peer_link_ready(struct smp_peer *p, struct link *l, bool has,
                         uint64_t step);
void smp_peer_link_dial(struct link *l);
/* The link we dialled is gone (err): dialled again after a backoff, and a
 * step still sending on it fails. */
void smp_peer_link_out_closed(struct link *l, int err);
/* Every link hears this SMP's slot bytes once it has an object. */
void smp_peer_link_tell_bytes(struct smp_peer *p);
/* The listener on host, port 0 (p->listener). */
int smp_peer_link_listen(struct smp_peer *p, const char *host);
void smp_peer_link_close_all(struct smp_peer *p);
/* Links with pieces queued are closed (the store goes). */
void smp_peer_link_drop_queued(struct smp_peer *p);

/* smp_peer_serve.c: what a rebuild of another member needs from this one */
/* PEER_META of step (in slot) on every link we dialled that is up. */
void smp_peer_serve_meta_send(struct smp_peer *p, uint32_t slot, uint64_t step);
/* PEER_META and PEER_FETCH on l's accepted link (after its HELLO): 0, or
 * non-zero to close it. */
int smp_peer_serve_on_msg(struct link *l, const struct rpc_hdr *h,
                          ProtobufCMessage *msg);
/* A piece of a step held here: base[0, end) its valid bytes (a data
 * chunk's last bytes past end are zero), of a chunk_bytes-byte piece. */
struct smp_peer_piece {
  const uint8_t *base;
  size_t end, chunk_bytes;
};
/* Piece (what 0: data chunk, 1: parity row; index) of step: 0, or the code
 * a fetch of it is refused with and why. */
int smp_peer_serve_piece(struct smp_peer *p, uint64_t step, uint32_t what,
                         uint32_t index, struct smp_peer_piece *out, char *why,
                         size_t whylen);
/* PEER_ACK{step, index, rc, the sentence} answering request id on c. */
void smp_peer_serve_refuse(struct rpc_conn *c, uint64_t id, uint64_t step,
                           uint32_t index, int rc, const char *fmt, ...)
    __attribute__((format(printf, 6, 7)));
/* Frees the tables kept for l. */
void smp_peer_serve_forget(struct link *l);
/* The job restores step (has false: starts fresh): every member's table of
 * a newer step (none then) is dropped, here and in '<object>.meta', since
 * those steps are sealed again, maybe with other bytes (a trainer that is
 * not bit-deterministic), and a rebuild must never check against an old
 * table. */
void smp_peer_serve_forget_after(struct smp_peer *p, bool has, uint64_t step);

/* smp_peer_relay.c: the terms of pipelined rebuilds (PeerFetch.coef) */
#define PEER_RELAY_TAG ((uint64_t)1 << 63) /* request ids of relayed fetches */
/* Whether a fetch with a coefficient may be relayed here (its chain, its
 * coefficients, len, PT_REPAIR_PIPELINE): 0, or the refusal's code and
 * why. */
int smp_peer_relay_check(const struct link *l, const Pt__PeerFetch *f, uint64_t len,
                         char *why, size_t whylen);
/* Fetch id on l's accepted link, checked (smp_peer_relay_check, its piece
 * held here, [off, off + len) in it): answered with coef times the piece
 * plus the chain's sum. */
void smp_peer_relay_fetch(struct link *l, uint64_t id, const Pt__PeerFetch *f,
                          uint64_t off, uint64_t len);
/* Replies to relayed fetches, on the link l this SMP dialled (request id
 * or tag with PEER_RELAY_TAG). */
int smp_peer_relay_reply(struct link *l, const struct rpc_hdr *h, ProtobufCMessage *msg);
int smp_peer_relay_bulk_begin(struct link *l, const struct rpc_bulk_hdr *h, void **dst);
void smp_peer_relay_bulk_done(struct link *l, const struct rpc_bulk_hdr *h, int status);
/* The link l dialled is gone or about to be closed (its reads stop with
 * the close: a sum landing in a relay's buffer is given up at once); an
 * accepted conn c is gone; the deadlines (the peer tick). */
void smp_peer_relay_link_down(struct link *l);
void smp_peer_relay_conn_gone(struct smp_peer *p, struct rpc_conn *c);
void smp_peer_relay_tick(struct smp_peer *p);

/* smp_peer_meta.c: the tables of meta[] kept in "<object name>.meta", so
 * that the next SMP (a new epoch) still has them. save: rewrites it; load:
 * once, before the first table is kept or asked for. */
void smp_peer_meta_save(struct smp_peer *p);
void smp_peer_meta_load(struct smp_peer *p);

/* smp_peer_rebuild_link.c: the replies to this SMP's own fetches, on the links
 * it dialled. A PEER_META or PEER_ACK with a request id (0 is the
 * protection's): 0, or non-zero to close the link. */
int smp_peer_rebuild_link_reply(struct link *l, const struct rpc_hdr *h,
                              ProtobufCMessage *msg);
/* rpc_conn_ops.on_bulk_begin/on_bulk_done of the links this SMP dials. */
int smp_peer_rebuild_link_bulk_begin(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                                void **dst);
void smp_peer_rebuild_link_bulk_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                                void *dst, int status);
/* The link l dialled is gone: a fetch on it is asked again when it is up. */
void smp_peer_rebuild_link_down(struct link *l);
/* Whether step's parity rows are not held here (the step was rebuilt
 * here, its parity not): a fetch of them is refused. */
bool smp_peer_rebuild_no_parity(const struct smp_peer *p, uint64_t step);

#endif /* PT_SMP_PEER_INT_H */
