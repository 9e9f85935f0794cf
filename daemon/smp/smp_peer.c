/*
 * smp_peer.c — erasure coding between the SMPs of a coding group
 * (DESIGN.md "Erasure coding across nodes", "One snapshot, step by step"
 * 4): the TCP links to the other members, and the protection of each
 * sealed step over them with the engine of smp_protect.h.
 *
 * Links. The SMP listens on --peer-listen (port 0: the kernel's pick; the
 * port reaches the node in every StateReply, the controller in the node's
 * JobPartState, and every member of the group in a PEERS_SET from its
 * node). It dials every other member once PEERS_SET says where it is: one
 * connection per ordered pair, authenticated with the cluster key as
 * PEER_ROLE_SMP under its node's id. The dialler sends PEER_HELLO (job,
 * epoch, group, both member numbers, its slot bytes); the acceptor checks
 * it against its own group (the node id the handshake proved must be that
 * member's) and from then on takes that member's chunks on it. A link that
 * breaks is dialled again, 100 ms doubling to 2 s.
 *
 * A step. When this SMP's trainer takes a slot for step N, the engine
 * begins N there (its parity rows) and READY(N) goes to every member that
 * dialled us: send your chunks of N. When the trainer seals N, the k*m
 * sends are planned (smp_protect_plan) and the chunks for each holder that
 * said READY(N) go out in pieces of PEER_PIECE bytes, bulk frames read from
 * the slot itself (never copied), each with its CRC32C, in order; the
 * holder reads each into its link's buffer, folds it (
 * smp_protect_receive_piece) and acknowledges each chunk once all of it is
 * in (PEER_ACK). The step is protected here when every send is
 * acknowledged and every row this member keeps is complete.
 *
 * Never slowing training: one step's sends at a time; the rpc layer's
 * queue mark bounds what is written ahead (-EAGAIN, then on_drain). A step
 * has PEER_PROTECT_MS (--protect-timeout-ms) from its seal; a newer step
 * sealed meanwhile takes the place of one that is not pinned yet, and
 * waits when it is. PIN of a coded step answers once the step is
 * PROTECTED (smp_peer_pin), or with why not at the deadline: the node then
 * unpins it, and the step is not committed; the trainer never waits, it
 * only finds fewer free slots and skips snapshots.
 *
 * Hostile peers. A stranger cannot pass the handshake; a member of the
 * group that sends what the layout does not allow gets a PEER_ACK with the
 * refusal and its bytes are never folded (smp_protect.h "Hostile input");
 * a frame of a type the link does not carry, or a HELLO that is not that
 * member's, closes the link.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_protect.h"

#define PEER_PIECE ((size_t)4 << 20)  /* bytes of a chunk per bulk frame */
#define PEER_BULK_PIECE 1u            /* bulk kind: a piece of a chunk */
#define PEER_TICK_MS 50u
#define PEER_REDIAL_MIN_MS 100u
#define PEER_REDIAL_MAX_MS 2000u
#define PEER_HELLO_MS 10000u          /* an accepted link says HELLO by then */

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
  /* the step whose sends are out (one at a time) */
  bool active;
  uint32_t slot;
  uint64_t step, deadline;
  struct smp_protect_send sends[SMP_PROTECT_MAX_SENDS];
  unsigned nsends;
  bool pending;              /* a newer step sealed meanwhile */
  uint32_t pending_slot;
  uint64_t pending_step;
  /* a PIN of the node waiting for its step to be protected */
  bool pin_wait;
  struct smp_conn *pin_sc;
  uint64_t pin_id, pin_step, pin_deadline;
  /* the store whose bytes the links were told (none: not told yet) */
  const struct snap_store *told_store;
  uint64_t told_bytes;
  char why[400];             /* why the last step failed */
  uint64_t failed_step;
  bool has_failed;
};

static struct smp_peer *P(struct smp *smp)
{
  return smp->peer;
}

static const struct code_group_member *member_of(const struct smp_peer *p,
                                                 uint32_t i)
{
  return &p->smp->group.members[i];
}

static uint64_t own_bytes(const struct smp_peer *p)
{
  return p->smp->store ? snap_store_slot_bytes(p->smp->store) : 0;
}

/* ---- the engine ---- */

/* The engine for the sizes known now: made when every member's bytes are
 * known and this SMP has its object; made again when they change. */
static struct smp_protect *engine(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  const struct code_group *g = &smp->group;
  uint64_t bytes[RS_MAX_MEMBERS];
  size_t sizes[RS_MAX_MEMBERS];

  if (smp->store == NULL)
    return NULL;
  for (uint32_t i = 0; i < g->n; i++) {
    if (i == g->member)
      bytes[i] = own_bytes(p);
    else if (!p->link[i].has_bytes)
      return NULL;
    else
      bytes[i] = p->link[i].bytes;
    sizes[i] = (size_t)bytes[i];
  }
  if (p->eng != NULL && p->eng_store == smp->store &&
      memcmp(bytes, p->eng_bytes, g->n * sizeof(bytes[0])) == 0)
    return p->eng;
  smp_protect_free(p->eng);
  p->eng = NULL;
  p->active = false;
  p->pending = false;
  char err[300];
  int rc = smp_protect_new(&p->eng, g->k, g->m, g->member, sizes,
                           snap_store_nslots(smp->store), NULL, err,
                           sizeof(err));
  if (rc != 0) {
    log_error("coding group %u: cannot lay out the members' %u snapshots: "
              "%s", g->group, g->n, err);
    return NULL;
  }
  memcpy(p->eng_bytes, bytes, sizeof(p->eng_bytes));
  p->eng_store = smp->store;
  log_info("coding group %u: protecting %" PRIu64 " bytes per step "
           "(chunks of %zu bytes, %zu bytes of parity kept)", g->group,
           bytes[g->member], smp_protect_layout(p->eng)->chunk_bytes,
           smp_protect_layout(p->eng)->parity_bytes);
  return p->eng;
}

/* ---- the PIN that waits ---- */

static void pin_answer(struct smp_peer *p, int status, const char *why)
{
  if (!p->pin_wait)
    return;
  p->pin_wait = false;
  if (p->pin_sc != NULL && !p->pin_sc->closing)
    smp_serve_reply_status(p->pin_sc, p->pin_id, status, why);
  p->pin_sc = NULL;
}

/* The step failed here: logged once, the PIN waiting for it answered. */
static void step_fail(struct smp_peer *p, uint64_t step, int rc, const char *fmt,
                      ...) __attribute__((format(printf, 4, 5)));
static void step_fail(struct smp_peer *p, uint64_t step, int rc, const char *fmt,
                      ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->why, sizeof(p->why), fmt, ap);
  va_end(ap);
  if (!p->has_failed || p->failed_step != step)
    log_warn("step %" PRIu64 " not protected: %s", step, p->why);
  p->has_failed = true;
  p->failed_step = step;
  if (p->active && p->step == step) {
    p->active = false;
    for (uint32_t i = 0; i < p->smp->group.n; i++)
      p->link[i].sending = false;
  }
  if (p->pin_wait && p->pin_step == step)
    pin_answer(p, rc, p->why);
}

static void start_step(struct smp_peer *p, uint32_t slot, uint64_t step);
static void push(struct link *l);
static void send_ready(struct smp_peer *p, struct link *l, bool has,
                       uint64_t step);

static void ready_add(struct link *l, uint64_t step)
{
  for (unsigned i = 0; i < l->nready; i++)
    if (l->ready[i] == step)
      return;
  if (l->nready == SNAP_MAX_SLOTS) {
    memmove(l->ready, l->ready + 1, (SNAP_MAX_SLOTS - 1) * sizeof(l->ready[0]));
    l->nready--;
  }
  l->ready[l->nready++] = step;
}

static bool is_ready(const struct link *l, uint64_t step)
{
  for (unsigned i = 0; i < l->nready; i++)
    if (l->ready[i] == step)
      return true;
  return false;
}

/* Protected here: PROTECTED in the object once pinned, the PIN answered,
 * and the next step's sends may go. */
static void check_done(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  uint32_t slot;

  if (p->eng == NULL || smp->store == NULL)
    return;
  if (p->pin_wait && smp_protect_find(p->eng, p->pin_step, &slot) == 0 &&
      smp_protect_done(p->eng, slot)) {
    int rc = smp_protect_mark(p->eng, smp->store, slot);
    if (rc == 0)
      log_debug("step %" PRIu64 " protected", p->pin_step);
    pin_answer(p, rc, rc ? pt_strerror(rc) : NULL);
  }
  if (p->active && smp_protect_find(p->eng, p->step, &slot) == 0) {
    struct smp_protect_status st;
    smp_protect_status(p->eng, slot, &st);
    if (st.nacked == st.nsends)
      p->active = false; /* our part is done; rows may still come */
  }
  if (!p->active && p->pending) {
    p->pending = false;
    start_step(p, p->pending_slot, p->pending_step);
  }
}

/* ---- sending ---- */

static void send_hello(struct link *l)
{
  struct smp_peer *p = l->p;
  struct smp *smp = p->smp;
  Pt__PeerHello h = PT__PEER_HELLO__INIT;

  h.job = (char *)smp->job;
  h.epoch = p->epoch;
  h.group = smp->group.group;
  h.from = smp->group.member;
  h.to = l->member;
  h.k = smp->group.k;
  h.m = smp->group.m;
  if (smp->store != NULL) {
    h.has_bytes = true;
    h.bytes = own_bytes(p);
  }
  rpc_conn_send(l->out, RPC_PEER_HELLO, 0, &h.base);
}

/* Writes l's pieces of the active step until the link's queue is full. */
static void push(struct link *l)
{
  struct smp_peer *p = l->p;

  if (!p->active || !l->sending || !l->out_up)
    return;
  while (l->cur < l->nidx) {
    const struct smp_protect_send *s = &p->sends[l->idx[l->cur]];
    uint64_t left = s->hdr.valid - l->cur_off;
    uint64_t len = left < PEER_PIECE ? left : PEER_PIECE;
    const uint8_t *b = s->bytes ? (const uint8_t *)s->bytes + l->cur_off
                                : NULL;
    struct rpc_bulk_hdr h = {
        .kind = PEER_BULK_PIECE | (s->hdr.chunk << 8), .tag = p->step,
        .offset = l->cur_off, .length = len,
        .crc32c = len > 0 ? crc32c(b, (size_t)len) : CRC32C_SEED};
    int rc = rpc_conn_send_bulk(l->out, &h, b, NULL, NULL);
    if (rc == -EAGAIN)
      return; /* on_drain */
    if (rc != PT_OK) {
      step_fail(p, p->step, rc, "cannot send to member %u (node '%s'): %s",
                l->member, member_of(p, l->member)->node_id,
                pt_strerror(rc));
      return;
    }
    l->cur_off += len;
    if (l->cur_off == s->hdr.valid) {
      l->cur++;
      l->cur_off = 0;
    }
  }
}

/* The sends of step in slot begin: to each holder that is ready for it. */
static void start_step(struct smp_peer *p, uint32_t slot, uint64_t step)
{
  struct smp *smp = p->smp;
  struct smp_protect *e = engine(p);
  struct smp_protect_status st;

  if (e == NULL) {
    step_fail(p, step, PT_ESTATE, "the group's members are not all known "
              "yet (links up, sizes said)");
    return;
  }
  smp_protect_status(e, slot, &st);
  if (!st.active || st.step != step) {
    int rc = smp_protect_begin_store(e, smp->store, slot, step);
    if (rc != 0) {
      step_fail(p, step, rc, "%s", smp_protect_error(e));
      return;
    }
    for (uint32_t i = 0; i < smp->group.n; i++)
      if (p->link[i].in != NULL)
        send_ready(p, &p->link[i], true, step);
  }
  int n = smp_protect_plan(e, slot, snap_slot_data(smp->store, slot),
                           (size_t)snap_store_slot_bytes(smp->store),
                           p->sends);
  if (n < 0) {
    step_fail(p, step, n, "%s", smp_protect_error(e));
    return;
  }
  p->nsends = (unsigned)n;
  p->active = true;
  p->slot = slot;
  p->step = step;
  p->deadline = rpc_now_ms() + smp->protect_ms;
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    l->nidx = l->cur = 0;
    l->cur_off = 0;
    l->sending = false;
  }
  for (unsigned j = 0; j < p->nsends; j++) {
    struct link *l = &p->link[p->sends[j].to];
    l->idx[l->nidx++] = j;
  }
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (i == smp->group.member || l->nidx == 0)
      continue;
    if (is_ready(l, step)) {
      l->sending = true;
      push(l);
    }
  }
  check_done(p);
}

/* ---- the links we dialled ---- */

static void out_closed(struct link *l, int err)
{
  struct smp_peer *p = l->p;

  if (l->out_up || err != 0)
    log_debug("link to member %u (node '%s') closed: %s", l->member,
              member_of(p, l->member)->node_id, pt_strerror(err));
  l->out = NULL;
  l->out_up = false;
  l->nready = 0;
  l->redial_at = rpc_now_ms() + l->redial_ms;
  l->redial_ms = l->redial_ms * 2 > PEER_REDIAL_MAX_MS ? PEER_REDIAL_MAX_MS
                                                        : l->redial_ms * 2;
  if (p->active && l->nidx > 0 && l->cur < l->nidx)
    step_fail(p, p->step, -ECONNRESET, "the link to member %u (node '%s') "
              "broke", l->member, member_of(p, l->member)->node_id);
}

static void on_out_close(struct rpc_conn *c, int err)
{
  struct link *l = rpc_conn_data(c);
  if (l != NULL && l->out == c)
    out_closed(l, err);
}

static void on_out_ready(struct rpc_conn *c)
{
  struct link *l = rpc_conn_data(c);
  l->out_up = true;
  l->redial_ms = PEER_REDIAL_MIN_MS;
  log_debug("link to member %u (node '%s') up", l->member,
            member_of(l->p, l->member)->node_id);
  send_hello(l);
}

static void on_out_drain(struct rpc_conn *c)
{
  push(rpc_conn_data(c));
}

static int on_out_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg)
{
  struct link *l = rpc_conn_data(c);
  struct smp_peer *p = l->p;

  switch (h->type) {
  case RPC_PEER_READY: {
    const Pt__PeerReady *r = (const Pt__PeerReady *)msg;
    if (r->has_bytes && (!l->has_bytes || l->bytes != r->bytes)) {
      l->has_bytes = true;
      l->bytes = r->bytes;
    }
    if (!r->has_step || r->epoch != p->epoch)
      return 0;
    ready_add(l, r->step);
    if (p->active && p->step == r->step && l->nidx > 0 && !l->sending) {
      l->sending = true;
      push(l);
    }
    return 0;
  }
  case RPC_PEER_ACK: {
    const Pt__PeerAck *a = (const Pt__PeerAck *)msg;
    if (p->eng == NULL)
      return 0;
    if (a->status != 0) {
      step_fail(p, a->step, a->status, "member %u (node '%s') refused "
                "chunk %u: %s", l->member, member_of(p, l->member)->node_id,
                a->chunk, a->message ? LOG_ESC(a->message)
                                     : pt_strerror(a->status));
      return 0;
    }
    int rc = smp_protect_ack(p->eng, a->step, l->member, a->chunk);
    if (rc != 0 && rc != -ENOENT)
      log_debug("acknowledgement from member %u: %s", l->member,
                smp_protect_error(p->eng));
    check_done(p);
    return 0;
  }
  default:
    log_warn("link to member %u (node '%s'): unexpected %s; closing it",
             l->member, member_of(p, l->member)->node_id,
             rpc_type_name(h->type));
    return PT_EPROTO;
  }
}

static void dial(struct link *l)
{
  struct smp_peer *p = l->p;
  struct rpc_conn_ops ops = {.on_msg = on_out_msg, .on_close = on_out_close,
                             .on_ready = on_out_ready,
                             .on_drain = on_out_drain};
  int rc = rpc_conn_connect_tcp(&p->smp->loop, l->host, l->port, &ops,
                                &p->auth, 0, l, &l->out);
  if (rc != 0) {
    l->out = NULL;
    l->redial_at = rpc_now_ms() + PEER_REDIAL_MAX_MS;
    log_warn("cannot dial member %u at %s:%d: %s", l->member, l->host,
             l->port, pt_strerror(rc));
  }
}

/* ---- the links dialled to us ---- */

static struct link *in_link(struct rpc_conn *c)
{
  struct in_conn *ic = rpc_conn_data(c);
  if (ic == NULL || ic->member < 0)
    return NULL;
  struct link *l = &ic->p->link[ic->member];
  return l->in == c ? l : NULL;
}

static void send_ready(struct smp_peer *p, struct link *l, bool has, uint64_t step)
{
  Pt__PeerReady r = PT__PEER_READY__INIT;
  r.epoch = p->epoch;
  r.has_step = has;
  r.step = step;
  if (p->smp->store != NULL) {
    r.has_bytes = true;
    r.bytes = own_bytes(p);
  }
  rpc_conn_send(l->in, RPC_PEER_READY, 0, &r.base);
}

static void send_ack(struct link *l, uint64_t step, uint32_t chunk, int rc,
                     const char *why)
{
  Pt__PeerAck a = PT__PEER_ACK__INIT;
  a.step = step;
  a.chunk = chunk;
  a.status = rc;
  if (rc != 0 && why != NULL && why[0] != '\0')
    a.message = (char *)why;
  rpc_conn_send(l->in, RPC_PEER_ACK, 0, &a.base);
}

static int on_hello(struct rpc_conn *c, struct in_conn *ic,
                    const Pt__PeerHello *h)
{
  struct smp_peer *p = ic->p;
  const struct code_group *g = &p->smp->group;
  const char *node = rpc_conn_peer_node(c);

  if (strcmp(h->job, p->smp->job) != 0 || h->group != g->group ||
      h->k != g->k || h->m != g->m || h->to != g->member ||
      h->from >= g->n || h->from == g->member ||
      strcmp(member_of(p, h->from)->node_id, node) != 0) {
    log_warn("refusing a peer link from node '%s' (%s): it says job '%s', "
             "group %u, member %u to %u of %u+%u; this is job '%s', group "
             "%u, member %u of %u+%u", LOG_ESC(node), rpc_conn_peer_name(c),
             LOG_ESC(h->job), h->group, h->from, h->to, h->k, h->m,
             p->smp->job, g->group, g->member, g->k, g->m);
    return PT_EROLE;
  }
  struct link *l = &p->link[h->from];
  if (ic->member < 0) {
    if (l->in != NULL && l->in != c) {
      struct in_conn *old = rpc_conn_data(l->in);
      old->member = -1;
      rpc_conn_close(l->in, 0); /* replaced: the member dialled again */
    }
    ic->member = (int)h->from;
    l->in = c;
    rpc_conn_set_idle(c, 0);
    log_debug("member %u (node '%s') linked", h->from, LOG_ESC(node));
  } else if (ic->member != (int)h->from) {
    return PT_EPROTO;
  }
  if (h->has_bytes) {
    l->has_bytes = true;
    l->bytes = h->bytes;
  }
  unsigned n = 0;
  if (h->epoch == p->epoch && p->eng != NULL && p->smp->store != NULL)
    for (uint32_t i = 0; i < snap_store_nslots(p->smp->store); i++) {
      struct smp_protect_status st;
      smp_protect_status(p->eng, i, &st);
      if (st.active) {
        send_ready(p, l, true, st.step);
        n++;
      }
    }
  if (n == 0)
    send_ready(p, l, false, 0);
  return 0;
}

static int on_in_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                     ProtobufCMessage *msg)
{
  struct in_conn *ic = rpc_conn_data(c);
  if (h->type == RPC_PEER_HELLO)
    return on_hello(c, ic, (const Pt__PeerHello *)msg);
  log_warn("peer link from %s: unexpected %s; closing it",
           rpc_conn_peer_name(c), rpc_type_name(h->type));
  return PT_EPROTO;
}

static int on_in_bulk_begin(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                            void **dst)
{
  struct link *l = in_link(c);
  if (l == NULL || (h->kind & 0xffu) != PEER_BULK_PIECE)
    return PT_EPROTO; /* before HELLO, or not a piece */
  if (l->rbuf == NULL && (l->rbuf = malloc(PEER_PIECE)) == NULL)
    return -ENOMEM;
  *dst = l->rbuf;
  return PT_OK;
}

static void on_in_bulk_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                            void *dst, int status)
{
  struct link *l = in_link(c);
  (void)dst;
  if (l == NULL)
    return;
  struct smp_peer *p = l->p;
  const struct rs_layout *lay = p->eng ? smp_protect_layout(p->eng) : NULL;
  uint32_t chunk = h->kind >> 8;
  if (status != PT_OK) {
    if (status == PT_ECHECKSUM)
      send_ack(l, h->tag, chunk, status, "a piece failed its CRC32C");
    return;
  }
  if (lay == NULL) {
    if (h->offset == 0)
      send_ack(l, h->tag, chunk, PT_ESTATE, "the holder has no layout yet");
    return;
  }
  if (chunk >= lay->k) {
    send_ack(l, h->tag, chunk, PT_EPROTO, "no such chunk");
    return;
  }
  uint32_t stripe = rs_layout_chunk_stripe(lay, l->member, chunk);
  uint32_t row = (p->smp->group.member + 2 * lay->g - lay->k - stripe) %
                 lay->g;
  struct smp_protect_piece pc = {
      .step = h->tag, .stripe = stripe, .parity_row = row,
      .from = l->member, .chunk = chunk, .offset = h->offset,
      .len = h->length};
  int rc = smp_protect_receive_piece(p->eng, &pc, l->rbuf);
  if (rc != 0) {
    if (h->offset == 0 || rc != -ENOENT)
      send_ack(l, h->tag, chunk, rc, smp_protect_error(p->eng));
    return;
  }
  if (h->offset + h->length == rs_layout_chunk_valid(lay, l->member, chunk)) {
    send_ack(l, h->tag, chunk, 0, NULL);
    check_done(p);
  }
}

static void on_in_close(struct rpc_conn *c, int err)
{
  struct in_conn *ic = rpc_conn_data(c);
  (void)err;
  if (ic == NULL)
    return;
  if (ic->member >= 0) {
    struct link *l = &ic->p->link[ic->member];
    if (l->in == c)
      l->in = NULL;
  }
  free(ic);
}

static int on_accept(struct rpc_listener *ls, struct rpc_conn *c)
{
  struct smp_peer *p = rpc_listener_data(ls);
  const struct code_group *g = &p->smp->group;
  const char *node = rpc_conn_peer_node(c);
  bool known = false;

  for (uint32_t i = 0; i < g->n && !known; i++)
    known = i != g->member && strcmp(g->members[i].node_id, node) == 0;
  if (rpc_conn_peer_role(c) != PT__PEER_ROLE__PEER_ROLE_SMP || !known) {
    log_warn("refusing a peer link from %s: node '%s' (role %u) is no "
             "member of coding group %u", rpc_conn_peer_name(c),
             LOG_ESC(node), rpc_conn_peer_role(c), g->group);
    return PT_EROLE;
  }
  struct in_conn *ic = calloc(1, sizeof(*ic));
  if (ic == NULL)
    return -ENOMEM;
  ic->p = p;
  ic->member = -1;
  rpc_conn_set_data(c, ic);
  return 0;
}

/* Every link hears this SMP's slot bytes once it has an object (and again
 * for a new one): the layout needs every member's. */
static void tell_bytes(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  if (smp->store == NULL ||
      (p->told_store == smp->store && p->told_bytes == own_bytes(p)))
    return;
  p->told_store = smp->store;
  p->told_bytes = own_bytes(p);
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (l->out != NULL && l->out_up)
      send_hello(l);
    if (l->in != NULL)
      send_ready(p, l, false, 0);
  }
}

/* ---- the timer: dials due, deadlines ---- */

static void on_tick(uv_timer_t *t)
{
  struct smp_peer *p = t->data;
  struct smp *smp = p->smp;
  uint64_t now = rpc_now_ms();

  tell_bytes(p);
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (i != smp->group.member && l->port != 0 && l->out == NULL &&
        p->has_epoch && now >= l->redial_at)
      dial(l);
  }
  if (p->active && now >= p->deadline) {
    char waiting[160] = "";
    for (uint32_t i = 0; i < smp->group.n; i++) {
      const struct link *l = &p->link[i];
      if (l->nidx > 0 && (!l->sending || l->cur < l->nidx)) {
        snprintf(waiting, sizeof(waiting), ": member %u (node '%s') %s", i,
                 member_of(p, i)->node_id,
                 !l->out_up ? "is not linked"
                 : !l->sending ? "never said it is ready for the step"
                               : "has not taken every chunk");
        break;
      }
    }
    step_fail(p, p->step, -ETIMEDOUT, "not done within %u ms%s",
              smp->protect_ms, waiting);
  }
  if (p->pin_wait && now >= p->pin_deadline)
    step_fail(p, p->pin_step, -ETIMEDOUT,
              "the parity this member keeps is not complete within %u ms",
              smp->protect_ms);
  check_done(p);
}

/* ---- the SMP's calls ---- */

int smp_peer_start(struct smp *smp)
{
  char err[512];
  int rc;

  if (smp->group.k == 0)
    return 0;
  if (smp->key_file == NULL) {
    log_warn("coding group %u: no --key, so no links to the group: the "
             "snapshots of this rank are not protected", smp->group.group);
    return 0;
  }
  struct smp_peer *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  p->smp = smp;
  rc = rpc_key_load(smp->key_file, p->auth.key, err, sizeof(err));
  if (rc != 0) {
    log_error("refusing to start: %s", err);
    free(p);
    return rc;
  }
  p->auth.role = PT__PEER_ROLE__PEER_ROLE_SMP;
  snprintf(p->auth.node_id, sizeof(p->auth.node_id), "%s", smp->node_id);
  for (uint32_t i = 0; i < smp->group.n; i++) {
    p->link[i].p = p;
    p->link[i].member = i;
    p->link[i].redial_ms = PEER_REDIAL_MIN_MS;
  }
  struct rpc_conn_ops ops = {.on_msg = on_in_msg, .on_close = on_in_close,
                             .idle_ms = PEER_HELLO_MS,
                             .on_bulk_begin = on_in_bulk_begin,
                             .on_bulk_done = on_in_bulk_done,
                             .max_bulk = PEER_PIECE};
  const char *host = smp->peer_listen ? smp->peer_listen : "0.0.0.0";
  rc = rpc_listen_tcp(&smp->loop, host, 0, &ops, &p->auth, on_accept, p,
                      &p->listener);
  if (rc != 0) {
    log_error("cannot listen for the coding group on %s: %s", host,
              pt_strerror(rc));
    sodium_memzero(p->auth.key, sizeof(p->auth.key));
    free(p);
    return rc;
  }
  p->port = rpc_listener_port(p->listener);
  uv_timer_init(&smp->loop, &p->timer);
  p->timer.data = p;
  uv_timer_start(&p->timer, on_tick, PEER_TICK_MS, PEER_TICK_MS);
  p->timer_on = true;
  smp->peer = p;
  log_info("coding group %u: taking the group's chunks on %s:%d", 
           smp->group.group, host, p->port);
  return 0;
}

void smp_peer_stop(struct smp *smp)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  pin_answer(p, -ECANCELED, "the SMP is stopping");
  if (p->listener != NULL)
    rpc_listener_close(p->listener);
  p->listener = NULL;
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (l->out != NULL) {
      rpc_conn_set_data(l->out, NULL);
      rpc_conn_close(l->out, 0);
      l->out = NULL;
    }
    if (l->in != NULL)
      rpc_conn_close(l->in, 0);
    free(l->rbuf);
    l->rbuf = NULL;
  }
  if (p->timer_on) {
    uv_timer_stop(&p->timer);
    uv_close((uv_handle_t *)&p->timer, NULL);
    p->timer_on = false;
  }
  /* p itself lives until exit: the closes above still name its links. */
}

int smp_peer_port(const struct smp *smp)
{
  return smp->peer ? smp->peer->port : 0;
}

void smp_peer_store_gone(struct smp *smp)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  /* Our queued pieces point into the mapping about to go: the links that
   * carry them are closed now (libuv writes nothing more of a closed
   * stream), and dialled again. */
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (l->out != NULL && rpc_conn_queued_bytes(l->out) > 0) {
      struct rpc_conn *c = l->out;
      out_closed(l, -ECANCELED);
      rpc_conn_set_data(c, NULL);
      rpc_conn_close(c, -ECANCELED);
    }
  }
  pin_answer(p, -EIO, "the snapshot object was dropped");
  p->told_store = NULL;
  p->active = false;
  p->pending = false;
  smp_protect_free(p->eng);
  p->eng = NULL;
  p->eng_store = NULL;
}

void smp_peer_conn_gone(struct smp *smp, struct smp_conn *sc)
{
  struct smp_peer *p = P(smp);
  if (p != NULL && p->pin_sc == sc) {
    p->pin_wait = false;
    p->pin_sc = NULL;
  }
}

int smp_peer_on_peers_set(struct smp_conn *sc, uint64_t id,
                          const Pt__PeersSet *m)
{
  struct smp *smp = sc->smp;
  struct smp_peer *p = P(smp);

  if (p == NULL) {
    smp_serve_reply_status(sc, id, PT_ECONFIG,
                           smp->group.k == 0 ? "this SMP has no coding group"
                                             : "this SMP has no --key");
    return 0;
  }
  for (size_t i = 0; i < m->n_peers; i++) {
    const Pt__PeerAddr *a = m->peers[i];
    if (a->member >= smp->group.n || a->member == smp->group.member ||
        a->port > 65535 || strlen(a->host) >= sizeof(p->link[0].host)) {
      smp_serve_reply_status(sc, id, -EINVAL, "a peer out of the group");
      return 0;
    }
  }
  bool new_epoch = !p->has_epoch || p->epoch != m->epoch;
  p->has_epoch = true;
  p->epoch = m->epoch;
  for (size_t i = 0; i < m->n_peers; i++) {
    const Pt__PeerAddr *a = m->peers[i];
    struct link *l = &p->link[a->member];
    bool moved = l->port != (int)a->port || strcmp(l->host, a->host) != 0;
    snprintf(l->host, sizeof(l->host), "%s", a->host);
    l->port = (int)a->port;
    if ((moved || new_epoch) && l->out != NULL) {
      struct rpc_conn *c = l->out;
      l->out = NULL;
      l->out_up = false;
      l->nready = 0;
      rpc_conn_set_data(c, NULL);
      rpc_conn_close(c, 0);
    }
    if (moved) {
      l->redial_at = 0;
      l->redial_ms = PEER_REDIAL_MIN_MS;
    }
  }
  if (new_epoch) {
    pin_answer(p, PT_EEPOCH, "the job moved to another epoch");
    p->active = false;
    p->pending = false;
    log_info("coding group %u: epoch %" PRIu64, smp->group.group, p->epoch);
  }
  smp_serve_reply_status(sc, id, 0, NULL);
  return 0;
}

void smp_peer_slot_begun(struct smp *smp, uint32_t slot, uint64_t step)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  tell_bytes(p);
  struct smp_protect *e = engine(p);
  if (e == NULL)
    return;
  int rc = smp_protect_begin_store(e, smp->store, slot, step);
  if (rc != 0) {
    log_warn("step %" PRIu64 ": cannot take the group's chunks: %s", step,
             smp_protect_error(e));
    return;
  }
  for (uint32_t i = 0; i < smp->group.n; i++)
    if (p->link[i].in != NULL)
      send_ready(p, &p->link[i], true, step);
}

void smp_peer_slot_dropped(struct smp *smp, uint32_t slot)
{
  struct smp_peer *p = P(smp);
  if (p == NULL || p->eng == NULL)
    return;
  if (p->active && p->slot == slot)
    step_fail(p, p->step, -ECANCELED, "its slot was given back");
  if (p->pending && p->pending_slot == slot)
    p->pending = false;
  smp_protect_forget(p->eng, slot);
}

void smp_peer_sealed(struct smp *smp, uint32_t slot, uint64_t step)
{
  struct smp_peer *p = P(smp);
  if (p == NULL)
    return;
  if (p->active && p->step != step) {
    struct snap_slot_info si;
    snap_slot_get(smp->store, p->slot, &si);
    bool pinned = (si.state == SNAP_PINNED || si.state == SNAP_PROTECTED) &&
                  si.step == p->step;
    if (pinned) {
      p->pending = true; /* the commit under way goes first */
      p->pending_slot = slot;
      p->pending_step = step;
      return;
    }
    log_debug("step %" PRIu64 " takes the place of step %" PRIu64
              " (not pinned)", step, p->step);
    p->active = false;
  }
  start_step(p, slot, step);
}

bool smp_peer_pin(struct smp_conn *sc, uint64_t id, uint64_t step)
{
  struct smp *smp = sc->smp;
  struct smp_peer *p = P(smp);
  uint32_t slot;

  if (p == NULL)
    return false; /* no code, or no links: answered as a plain pin */
  pin_answer(p, -ECANCELED, "another PIN came");
  if (p->has_failed && p->failed_step == step && !(p->active && p->step == step)) {
    smp_serve_reply_status(sc, id, -EIO, p->why);
    return true;
  }
  if (p->eng == NULL || smp_protect_find(p->eng, step, &slot) != 0) {
    smp_serve_reply_status(sc, id, PT_ESTATE, "the step is not being "
                           "protected here (the group's links or sizes are "
                           "not all known yet)");
    return true;
  }
  p->pin_wait = true;
  p->pin_sc = sc;
  p->pin_id = id;
  p->pin_step = step;
  p->pin_deadline = rpc_now_ms() + smp->protect_ms;
  check_done(p);
  return true;
}
