/*
 * smp_peer_rebuild_link.c — the replies to a rebuild's fetches
 * (smp_peer_rebuild.c), on the links this SMP dialled: a PEER_META (the
 * table), a PEER_ACK (a refusal; -EAGAIN: asked again, backing off), a bulk
 * frame of kind PEER_BULK_FETCH (a piece) or PEER_BULK_SUM (a pipelined
 * fetch's sum; the kind must be the fetch's, else the fetch fails) read
 * straight into the machine's buffer of that fetch. A reply is the outstanding fetch's when its request id (the
 * bulk frame's tag) is; anything else is discarded.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_peer_rebuild_int.h"

/* ---- replies, on the links this SMP dialled ---- */

int smp_peer_rebuild_link_reply(struct link *l, const struct rpc_hdr *h,
                                ProtobufCMessage *msg)
{
  struct smp_peer_rebuild *r = l->p->rebuild;
  struct rb_fetch *m = r != NULL && smp_peer_rebuild_active(r)
                           ? smp_peer_rebuild_find(r, l->member, h->request_id)
                           : NULL;

  if (m == NULL)
    return 0; /* a late answer to a fetch given up */
  if (h->type == RPC_PEER_META) {
    if (!m->meta) {
      smp_peer_rebuild_member_failed(r, l->member, "it answered a piece with a table");
    } else {
      m->busy = false;
      smp_peer_rebuild_table_in(r, l->member, (const Pt__PeerMeta *)msg);
    }
  } else if (h->type == RPC_PEER_ACK) {
    const Pt__PeerAck *a = (const Pt__PeerAck *)msg;
    if (a->status == -EAGAIN) {
      /* busy, or not ready yet: again, backing off to 100 ms */
      unsigned shift = m->agains < 6 ? m->agains : 6;
      m->agains++;
      m->again_at = rpc_now_ms() + ((uint64_t)REBUILD_AGAIN_MS << shift);
      return 0;
    }
    char why[300];
    snprintf(why, sizeof(why), "refused: %s", a->message != NULL
             ? LOG_ESC(a->message) : pt_strerror(a->status));
    smp_peer_rebuild_member_failed(r, l->member, why);
  }
  if (smp_peer_rebuild_active(r))
    smp_peer_rebuild_drive(r);
  return 0;
}

void smp_peer_rebuild_link_down(struct link *l)
{
  struct smp_peer_rebuild *r = l->p->rebuild;
  if (r == NULL)
    return;
  for (unsigned k = 0; k < REBUILD_LANES; k++) {
    struct rb_fetch *m = &r->mem[l->member].lane[k];
    m->landing = false; /* the closed link reads nothing more */
    if (smp_peer_rebuild_active(r) && m->busy)
      m->unsent = true; /* asked again once it is up */
  }
}

int smp_peer_rebuild_link_bulk_begin(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                                     void **dst)
{
  struct link *l = rpc_conn_data(c);
  *dst = NULL;
  unsigned kind = h->kind & 0xffu;
  if (l == NULL || (kind != PEER_BULK_FETCH && kind != PEER_BULK_SUM))
    return PT_EPROTO;
  if (h->tag & PEER_RELAY_TAG)
    return smp_peer_relay_bulk_begin(l, h, dst); /* a sum we asked for */
  struct smp_peer_rebuild *r = l->p->rebuild;
  struct rb_fetch *m = r != NULL && smp_peer_rebuild_active(r)
                           ? smp_peer_rebuild_find(r, l->member, h->tag)
                           : NULL;
  if (m == NULL || m->meta || h->offset != m->f.offset || h->length > m->f.length)
    return PT_OK; /* discarded: not asked for (or no longer) */
  if ((kind == PEER_BULK_SUM) != m->f.coded) {
    m->wrong_kind = true; /* discarded; the fetch fails at its end */
    return PT_OK;
  }
  m->landing = true;
  m->landing_req = h->tag;
  *dst = m->f.dst;
  return PT_OK;
}

struct bulk_call {
  struct link *l;
  const struct rpc_bulk_hdr *h;
  int status;
};

static int bulk_done_body(void *arg)
{
  struct bulk_call *b = arg;
  struct link *l = b->l;
  struct smp_peer_rebuild *r = l->p->rebuild;
  const struct rpc_bulk_hdr *h = b->h;

  for (unsigned k = 0; k < REBUILD_LANES; k++) {
    struct rb_fetch *x = &r->mem[l->member].lane[k];
    if (x->landing && x->landing_req == h->tag)
      x->landing = false;
  }
  struct rb_fetch *m = smp_peer_rebuild_active(r)
                           ? smp_peer_rebuild_find(r, l->member, h->tag)
                           : NULL;
  if (m != NULL && m->wrong_kind) {
    m->wrong_kind = false;
    smp_peer_rebuild_member_failed(r, l->member, m->f.coded
        ? "it answered a sum with its plain piece (an SMP without repair pipelining?)"
        : "it answered a piece with a sum");
    if (smp_peer_rebuild_active(r))
      smp_peer_rebuild_drive(r);
    return 0;
  }
  if (b->status == -ECANCELED || m == NULL || m->meta)
    return 0; /* discarded, or a fetch given up */
  if (b->status == PT_ECHECKSUM && ++m->crc_fails < REBUILD_CRC_TRIES) {
    smp_peer_rebuild_send(r, l->member, m); /* once more, the same piece */
    return 0;
  }
  if (b->status != PT_OK) {
    char why[120];
    snprintf(why, sizeof(why), "its piece came in with %s", pt_strerror(b->status));
    smp_peer_rebuild_member_failed(r, l->member, why);
    smp_peer_rebuild_drive(r);
    return 0;
  }
  m->busy = false;
  int rc = smp_rebuild_got(r->rb, m->f.id, h->length);
  if (rc == PT_EPROTO) {
    char why[300];
    snprintf(why, sizeof(why), "%s", smp_rebuild_error(r->rb));
    smp_peer_rebuild_member_failed(r, l->member, why);
  } else if (rc != 0) {
    smp_peer_rebuild_fail(r, rc, "cannot rebuild step %" PRIu64 ": %s", r->step,
                          smp_rebuild_error(r->rb));
    return 0;
  } else {
    r->received += h->length;
    r->used |= 1u << l->member;
    for (unsigned x = 0; m->f.coded && x < m->f.nhops; x++)
      r->used |= 1u << m->f.hop[x].member; /* the chain's sources too */
  }
  if (smp_peer_rebuild_active(r))
    smp_peer_rebuild_drive(r);
  return 0;
}

void smp_peer_rebuild_link_bulk_done(struct rpc_conn *c, const struct rpc_bulk_hdr *h,
                                     void *dst, int status)
{
  struct link *l = rpc_conn_data(c);
  (void)dst;
  if (l != NULL && (h->tag & PEER_RELAY_TAG)) {
    smp_peer_relay_bulk_done(l, h, status);
    return;
  }
  if (l == NULL || l->p->rebuild == NULL)
    return;
  struct bulk_call b = {.l = l, .h = h, .status = status};
  (void)smp_guarded(l->p->smp, bulk_done_body, &b);
}
