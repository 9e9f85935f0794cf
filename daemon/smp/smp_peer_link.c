/*
 * smp_peer_link.c — the links of a coded SMP to the other members of its
 * group (smp_peer.c says what goes over them): the listener, the links it
 * dials and their redials, PEER_HELLO and its checks, READY and ACK, the
 * pieces that come in (read into the link's buffer, folded by the engine),
 * PEERS_SET from the node.
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
#include "daemon/smp/smp_peer_int.h"

/* The callbacks of both kinds of link, each under the SIGBUS guard (at the
 * end of this file). */
static int on_out_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg);
static void on_out_drain(struct rpc_conn *c);
static int on_in_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                     ProtobufCMessage *msg);
static void on_in_bulk_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                            void *dst, int status);

/* ---- sending ---- */

void smp_peer_link_hello(struct link *l)
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

/* ---- the links we dialled ---- */

void smp_peer_link_out_closed(struct link *l, int err)
{
  struct smp_peer *p = l->p;

  if (l->out_up || err != 0)
    log_debug("link to member %u (node '%s') closed: %s", l->member,
              member_of(p, l->member)->node_id, pt_strerror(err));
  l->out = NULL;
  l->out_up = false;
  l->nready = 0;
  smp_peer_rebuild_link_down(l);
  smp_peer_relay_link_down(l);
  l->redial_at = rpc_now_ms() + l->redial_ms;
  l->redial_ms = l->redial_ms * 2 > PEER_REDIAL_MAX_MS ? PEER_REDIAL_MAX_MS
                                                        : l->redial_ms * 2;
  if (p->active && l->nidx > 0 && l->cur < l->nidx)
    smp_peer_step_fail(p, p->step, -ECONNRESET, "the link to member %u (node '%s') "
              "broke", l->member, member_of(p, l->member)->node_id);
}

static void on_out_close(struct rpc_conn *c, int err)
{
  struct link *l = rpc_conn_data(c);
  if (l != NULL && l->out == c)
    smp_peer_link_out_closed(l, err);
}

static void on_out_ready(struct rpc_conn *c)
{
  struct link *l = rpc_conn_data(c);
  /* Whoever answers at the member's address must be that member's node,
   * as an SMP: else it would get the member's chunks. */
  if (rpc_conn_peer_role(c) != PT__PEER_ROLE__PEER_ROLE_SMP ||
      strcmp(rpc_conn_peer_node(c), member_of(l->p, l->member)->node_id) != 0) {
    log_warn("link to member %u at %s: it answers as node '%s' (role %u), "
             "not as node '%s''s SMP; closing it", l->member,
             rpc_conn_peer_name(c), LOG_ESC(rpc_conn_peer_node(c)),
             rpc_conn_peer_role(c), member_of(l->p, l->member)->node_id);
    rpc_conn_close(c, PT_EROLE);
    return;
  }
  l->out_up = true;
  l->redial_ms = PEER_REDIAL_MIN_MS;
  log_debug("link to member %u (node '%s') up", l->member,
            member_of(l->p, l->member)->node_id);
  smp_peer_link_hello(l);
  /* The table of the step being sent, which this link missed at the seal
   * (every link gets it again: a member keeps one per step). */
  if (l->p->active)
    smp_peer_serve_meta_send(l->p, l->p->slot, l->p->step);
}

static void on_out_drain_body(struct rpc_conn *c)
{
  smp_peer_push(rpc_conn_data(c));
}

static int on_out_msg_body(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg)
{
  struct link *l = rpc_conn_data(c);
  struct smp_peer *p = l->p;

  if ((h->request_id & PEER_RELAY_TAG) &&
      (h->type == RPC_PEER_META || h->type == RPC_PEER_ACK))
    return smp_peer_relay_reply(l, h, msg); /* the sums we asked for */
  if (h->request_id != 0 && (h->type == RPC_PEER_META || h->type == RPC_PEER_ACK))
    return smp_peer_rebuild_link_reply(l, h, msg); /* our fetches' answers */
  switch (h->type) {
  case RPC_PEER_READY: {
    const Pt__PeerReady *r = (const Pt__PeerReady *)msg;
    if (r->has_bytes && (!l->has_bytes || l->bytes != r->bytes)) {
      l->has_bytes = true;
      l->bytes = r->bytes;
    }
    if (!r->has_step || r->epoch != p->epoch)
      return 0;
    smp_peer_ready_add(l, r->step);
    if (p->active && p->step == r->step && l->nidx > 0 && !l->sending) {
      l->sending = true;
      smp_peer_push(l);
    }
    return 0;
  }
  case RPC_PEER_SKIP:
    smp_peer_on_skip(p, l, (const Pt__PeerSkip *)msg);
    return 0;
  case RPC_PEER_ACK: {
    const Pt__PeerAck *a = (const Pt__PeerAck *)msg;
    if (p->eng == NULL)
      return 0;
    if (a->status != 0) {
      /* (a refusal is an error whatever code the peer put in it) */
      smp_peer_step_fail(p, a->step, a->status < 0 ? a->status : PT_EPROTO,
                "member %u (node '%s') refused "
                "chunk %u: %s", l->member, member_of(p, l->member)->node_id,
                a->chunk, a->message ? LOG_ESC(a->message)
                                     : pt_strerror(a->status));
      return 0;
    }
    int rc = smp_protect_ack(p->eng, a->step, l->member, a->chunk);
    if (rc != 0 && rc != -ENOENT)
      log_debug("acknowledgement from member %u: %s", l->member,
                smp_protect_error(p->eng));
    smp_peer_check_done(p);
    return 0;
  }
  default:
    log_warn("link to member %u (node '%s'): unexpected %s; closing it",
             l->member, member_of(p, l->member)->node_id,
             rpc_type_name(h->type));
    return PT_EPROTO;
  }
}

void smp_peer_link_dial(struct link *l)
{
  struct smp_peer *p = l->p;
  struct rpc_conn_ops ops = {.on_msg = on_out_msg, .on_close = on_out_close,
                             .on_ready = on_out_ready,
                             .on_drain = on_out_drain,
                             /* the pieces our rebuild fetched */
                             .on_bulk_begin = smp_peer_rebuild_link_bulk_begin,
                             .on_bulk_done = smp_peer_rebuild_link_bulk_done,
                             .max_bulk = PEER_PIECE};
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

void smp_peer_link_ready(struct smp_peer *p, struct link *l, bool has, uint64_t step)
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
      /* The member dialled again. Its old link is kept while it is live
       * (bytes within PEER_HELLO_MS): anyone with the key may claim a
       * member's node id here, and must not be able to push the real one
       * off; a member that restarted has its old link broken or silent. */
      if (rpc_conn_idle_ms(l->in) < PEER_HELLO_MS) {
        log_warn("refusing a second link from member %u (node '%s', %s): "
                 "its link is live", h->from, LOG_ESC(node),
                 rpc_conn_peer_name(c));
        return -EBUSY;
      }
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
        smp_peer_link_ready(p, l, true, st.step);
        n++;
      }
    }
  if (n == 0)
    smp_peer_link_ready(p, l, false, 0);
  return 0;
}

static int on_in_msg_body(struct rpc_conn *c, const struct rpc_hdr *h,
                     ProtobufCMessage *msg)
{
  struct in_conn *ic = rpc_conn_data(c);
  if (h->type == RPC_PEER_HELLO)
    return on_hello(c, ic, (const Pt__PeerHello *)msg);
  struct link *l = in_link(c);
  if (l != NULL && (h->type == RPC_PEER_META || h->type == RPC_PEER_FETCH))
    return smp_peer_serve_on_msg(l, h, msg);
  if (l != NULL && h->type == RPC_PEER_SKIP) {
    smp_peer_on_skip(l->p, l, (const Pt__PeerSkip *)msg);
    return 0;
  }
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

static void on_in_bulk_done_body(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
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
    smp_peer_check_done(p);
  }
}

static void on_in_close(struct rpc_conn *c, int err)
{
  struct in_conn *ic = rpc_conn_data(c);
  (void)err;
  if (ic == NULL)
    return;
  smp_peer_relay_conn_gone(ic->p, c);
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
  if (rpc_conn_peer_role(c) != PT__PEER_ROLE__PEER_ROLE_SMP) {
    log_warn("refusing a peer link from %s (node '%s'): it authenticated "
             "as role %u, not as an SMP", rpc_conn_peer_name(c),
             LOG_ESC(node), rpc_conn_peer_role(c));
    return PT_EROLE;
  }
  if (!known) {
    log_warn("refusing a peer link from %s: node '%s' is no other member "
             "of coding group %u", rpc_conn_peer_name(c), LOG_ESC(node),
             g->group);
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
void smp_peer_link_tell_bytes(struct smp_peer *p)
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
      smp_peer_link_hello(l);
    if (l->in != NULL)
      smp_peer_link_ready(p, l, false, 0);
  }
}

int smp_peer_link_on_peers_set(struct smp_conn *sc, uint64_t id,
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
      smp_peer_relay_link_down(l);
      rpc_conn_set_data(c, NULL);
      rpc_conn_close(c, 0);
    }
    if (moved) {
      l->redial_at = 0;
      l->redial_ms = PEER_REDIAL_MIN_MS;
    }
  }
  if (new_epoch) {
    smp_peer_reset(p);
    log_info("coding group %u: epoch %" PRIu64, smp->group.group, p->epoch);
  }
  smp_serve_reply_status(sc, id, 0, NULL);
  return 0;
}


/* ---- every callback that may touch the mapping, under the SMP's SIGBUS
 * guard (smp_guarded): an object shrunk under the SMP is dropped, never a
 * fault that kills it ---- */

struct gcall {
  struct rpc_conn *c;
  const struct rpc_hdr *h;
  ProtobufCMessage *msg;
  const struct rpc_bulk_hdr *bh;
  void *dst;
  int status;
  int kind;
};

static int gcall_run(void *a)
{
  struct gcall *g = a;
  switch (g->kind) {
  case 0:
    return on_out_msg_body(g->c, g->h, g->msg);
  case 1:
    return on_in_msg_body(g->c, g->h, g->msg);
  case 2:
    on_in_bulk_done_body(g->c, g->bh, g->dst, g->status);
    return 0;
  default:
    on_out_drain_body(g->c);
    return 0;
  }
}

/* The SMP of a link's conn (out links hold a link, in links an in_conn). */
static struct smp *conn_smp(struct rpc_conn *c, bool out)
{
  void *d = rpc_conn_data(c);
  if (d == NULL)
    return NULL;
  return out ? ((struct link *)d)->p->smp : ((struct in_conn *)d)->p->smp;
}

static int guarded(struct gcall *g, bool out)
{
  struct smp *smp = conn_smp(g->c, out);
  if (smp == NULL)
    return 0;
  int rc = smp_guarded(smp, gcall_run, g);
  return rc == -EIO && smp->store == NULL ? 0 : rc; /* dropped: go on */
}

static int on_out_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg)
{
  struct gcall g = {.c = c, .h = h, .msg = msg, .kind = 0};
  return guarded(&g, true);
}

static void on_out_drain(struct rpc_conn *c)
{
  struct gcall g = {.c = c, .kind = 3};
  (void)guarded(&g, true);
}

static int on_in_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                     ProtobufCMessage *msg)
{
  struct gcall g = {.c = c, .h = h, .msg = msg, .kind = 1};
  return guarded(&g, false);
}

static void on_in_bulk_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                            void *dst, int status)
{
  struct gcall g = {.c = c, .bh = h, .dst = dst, .status = status, .kind = 2};
  (void)guarded(&g, false);
}

int smp_peer_link_listen(struct smp_peer *p, const char *host)
{
  struct rpc_conn_ops ops = {.on_msg = on_in_msg, .on_close = on_in_close,
                             .idle_ms = PEER_HELLO_MS,
                             .on_bulk_begin = on_in_bulk_begin,
                             .on_bulk_done = on_in_bulk_done,
                             .max_bulk = PEER_PIECE};
  return rpc_listen_tcp(&p->smp->loop, host, 0, &ops, &p->auth, on_accept, p,
                        &p->listener);
}

void smp_peer_link_close_all(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (l->out != NULL) {
      smp_peer_relay_link_down(l);
      rpc_conn_set_data(l->out, NULL);
      rpc_conn_close(l->out, 0);
      l->out = NULL;
    }
    if (l->in != NULL)
      rpc_conn_close(l->in, 0);
    free(l->rbuf);
    l->rbuf = NULL;
    smp_peer_serve_forget(l);
  }
}

void smp_peer_link_drop_queued(struct smp_peer *p)
{
  struct smp *smp = p->smp;
  /* Our queued pieces point into the mapping about to go: the links that
   * carry them are closed now (libuv writes nothing more of a closed
   * stream), and dialled again. */
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (l->out != NULL && rpc_conn_queued_bytes(l->out) > 0) {
      struct rpc_conn *c = l->out;
      smp_peer_link_out_closed(l, -ECANCELED);
      rpc_conn_set_data(c, NULL);
      rpc_conn_close(c, -ECANCELED);
    }
    /* and the pieces of a rebuild we serve, on the links dialled to us */
    if (l->in != NULL && rpc_conn_queued_bytes(l->in) > 0) {
      struct in_conn *ic = rpc_conn_data(l->in);
      struct rpc_conn *c = l->in;
      ic->member = -1;
      l->in = NULL;
      rpc_conn_close(c, -ECANCELED);
    }
  }
}
