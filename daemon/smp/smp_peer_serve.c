/*
 * smp_peer_serve.c — what this SMP gives a rebuild of another member of
 * its group (DESIGN.md "Restore" 2): the checksum tables of the other
 * members' steps, kept as they come (PEER_META, sent by each member after
 * it sealed a step), and the pieces of a step it holds committed or
 * protected (PEER_FETCH): bytes of one of its own data chunks, or of a
 * parity row it keeps, read straight from the slot as a bulk frame.
 *
 * Nothing here is trusted: a fetch of a step this SMP does not hold, of a
 * chunk or row out of the layout, or of bytes past the piece is answered
 * with a PEER_ACK naming why; a table larger than PEER_META_MAX, or of
 * another size than a whole number of u32, closes the link. The tables
 * are kept in memory, the newest SNAP_MAX_SLOTS steps per member (never
 * the step committed here, the one a rebuild asks for), and in
 * "<object>.meta" for the next SMP (smp_peer_meta.c). An SMP that has
 * protected nothing yet (the epoch after a loss) serves with the layout
 * of the sizes its members said (-EAGAIN until it knows them all); the
 * parity of a step this SMP rebuilt itself is not held, and refused. A
 * fetch with a coefficient is a term of a pipelined rebuild: answered by
 * smp_peer_relay.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"

void smp_peer_serve_meta_send(struct smp_peer *p, uint32_t slot, uint64_t step)
{
  struct smp *smp = p->smp;
  Pt__PeerMeta m = PT__PEER_META__INIT;

  if (smp->store == NULL)
    return;
  m.step = step;
  m.table.data = (uint8_t *)snap_slot_crcs(smp->store, slot);
  m.table.len = ((size_t)snap_store_nblocks(smp->store) + SNAP_TABLE_TRAILER) *
                sizeof(uint32_t);
  for (uint32_t i = 0; i < smp->group.n; i++) {
    struct link *l = &p->link[i];
    if (l->out != NULL && l->out_up)
      rpc_conn_send(l->out, RPC_PEER_META, 0, &m.base);
  }
}

void smp_peer_serve_forget_after(struct smp_peer *p, bool has, uint64_t step)
{
  unsigned dropped = 0;

  smp_peer_meta_load(p); /* what the file keeps is dropped too */
  for (uint32_t i = 0; i < p->smp->group.n; i++) {
    struct link *l = &p->link[i];
    unsigned k = 0;
    for (unsigned j = 0; j < l->nmeta; j++) {
      if (!has || l->meta[j].step > step) {
        free(l->meta[j].table);
        dropped++;
      } else {
        l->meta[k++] = l->meta[j];
      }
    }
    l->nmeta = k;
  }
  if (dropped > 0) {
    log_debug("dropped %u of the group's checksum tables of steps after %s",
              dropped, has ? "the restore step" : "a fresh start");
    smp_peer_meta_save(p);
  }
}

void smp_peer_serve_forget(struct link *l)
{
  for (unsigned i = 0; i < l->nmeta; i++)
    free(l->meta[i].table);
  l->nmeta = 0;
}

static int keep_meta(struct link *l, const Pt__PeerMeta *m)
{
  if (m->table.len == 0 || m->table.len > PEER_META_MAX ||
      m->table.len % sizeof(uint32_t) != 0) {
    log_warn("member %u sent a checksum table of %zu bytes; closing its "
             "link", l->member, m->table.len);
    return PT_EPROTO;
  }
  smp_peer_meta_load(l->p);
  uint8_t *t = malloc(m->table.len);
  if (t == NULL)
    return 0; /* not kept: a rebuild of that step will say so */
  memcpy(t, m->table.data, m->table.len);
  unsigned at = l->nmeta;
  for (unsigned i = 0; i < l->nmeta; i++)
    if (l->meta[i].step == m->step)
      at = i;
  if (at == l->nmeta && l->nmeta == SNAP_MAX_SLOTS) {
    /* The oldest goes, but not the step committed here: the one a rebuild
     * of that member will ask for, however many steps it sealed since. */
    struct smp *smp = l->p->smp;
    uint32_t cslot;
    uint64_t cstep = 0;
    bool has_c = smp->store != NULL &&
                 snap_slot_newest_committed(smp->store, &cslot, &cstep) == 0;
    unsigned old = 0;
    if (has_c && l->meta[0].step == cstep)
      old = 1;
    free(l->meta[old].table);
    memmove(&l->meta[old], &l->meta[old + 1],
            (SNAP_MAX_SLOTS - 1 - old) * sizeof(l->meta[0]));
    at = --l->nmeta;
  }
  if (at < l->nmeta)
    free(l->meta[at].table);
  else
    l->nmeta++;
  l->meta[at].step = m->step;
  l->meta[at].table = t;
  l->meta[at].len = m->table.len;
  smp_peer_meta_save(l->p);
  return 0;
}

void smp_peer_serve_refuse(struct rpc_conn *c, uint64_t id, uint64_t step,
                           uint32_t index, int rc, const char *fmt, ...)
{
  char why[300];
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  Pt__PeerAck a = PT__PEER_ACK__INIT;
  a.step = step;
  a.chunk = index;
  a.status = rc;
  a.message = why;
  rpc_conn_send(c, RPC_PEER_ACK, id, &a.base);
}

#define refuse(l, id, f, rc, ...) \
  smp_peer_serve_refuse((l)->in, (id), (f)->step, (f)->index, (rc), __VA_ARGS__)

/* The slot holding step committed or protected (its parity complete, its
 * slot kept until a newer commit); UINT32_MAX. */
static uint32_t held_slot(const struct snap_store *s, uint64_t step)
{
  for (uint32_t i = 0; i < snap_store_nslots(s); i++) {
    struct snap_slot_info si;
    snap_slot_get(s, i, &si);
    if (si.record_ok && si.step == step &&
        (si.state == SNAP_COMMITTED || si.state == SNAP_PROTECTED))
      return i;
  }
  return UINT32_MAX;
}

/* The group's layout: the engine's, or (an SMP that has protected
 * nothing yet, as in the epoch after a node's loss) one made from the
 * sizes the members said. NULL while one is not known. */
static const struct rs_layout *serve_layout(const struct smp_peer *p,
                                            struct rs_layout *own)
{
  const struct smp *smp = p->smp;
  size_t sizes[RS_MAX_MEMBERS];

  if (p->eng != NULL)
    return smp_protect_layout(p->eng);
  if (smp->store == NULL)
    return NULL;
  for (uint32_t i = 0; i < smp->group.n; i++) {
    if (i == smp->group.member)
      sizes[i] = (size_t)own_bytes(p);
    else if (p->link[i].has_bytes)
      sizes[i] = (size_t)p->link[i].bytes;
    else
      return NULL;
  }
  if (rs_layout_init(own, smp->group.k, smp->group.m, sizes, smp->group.n) != 0)
    return NULL;
  return own;
}

int smp_peer_serve_piece(struct smp_peer *p, uint64_t step, uint32_t what,
                         uint32_t index, struct smp_peer_piece *out, char *why,
                         size_t whylen)
{
  struct smp *smp = p->smp;
  struct rs_layout own;
  const struct rs_layout *lay = serve_layout(p, &own);
  uint32_t slot = smp->store ? held_slot(smp->store, step) : UINT32_MAX;

  if (lay == NULL && slot != UINT32_MAX) {
    /* (a new SMP, its group's sizes not all said yet: ask again) */
    snprintf(why, whylen, "member %u does not know every member's size yet",
             smp->group.member);
    return -EAGAIN;
  }
  if (lay == NULL || slot == UINT32_MAX) {
    snprintf(why, whylen, "member %u holds no step %" PRIu64 " committed",
             smp->group.member, step);
    return -ENOENT;
  }
  out->chunk_bytes = lay->chunk_bytes;
  if (what == 0 && index < lay->k) {
    out->end = rs_layout_chunk_valid(lay, smp->group.member, index);
    out->base = (const uint8_t *)snap_slot_data(smp->store, slot) +
                (size_t)index * lay->chunk_bytes;
    return 0;
  }
  if (what == 1 && index < lay->m) {
    uint64_t plen = 0;
    smp_peer_meta_load(p); /* a mark kept by this member's last SMP */
    if (smp_peer_rebuild_no_parity(p, step)) {
      snprintf(why, whylen, "member %u rebuilt step %" PRIu64 " and holds "
               "no parity of it", smp->group.member, step);
      return -ENOENT;
    }
    const uint8_t *base = snap_store_parity(smp->store, slot, &plen);
    if (base == NULL || plen < lay->parity_bytes) {
      snprintf(why, whylen, "no parity area for step %" PRIu64, step);
      return PT_ECONFIG;
    }
    out->end = lay->chunk_bytes;
    out->base = base + (size_t)index * lay->chunk_bytes;
    return 0;
  }
  snprintf(why, whylen, "no piece %u of kind %u in the %u+%u layout", index, what,
           lay->k, lay->m);
  return PT_EPROTO;
}

static void on_fetch(struct link *l, uint64_t id, const Pt__PeerFetch *f)
{
  struct smp_peer *p = l->p;
  struct smp *smp = p->smp;

  if (f->what == 2) {
    smp_peer_meta_load(p);
    struct link *of = f->index < smp->group.n ? &p->link[f->index] : NULL;
    for (unsigned i = 0; of != NULL && i < of->nmeta; i++)
      if (of->meta[i].step == f->step) {
        Pt__PeerMeta m = PT__PEER_META__INIT;
        m.step = f->step;
        m.table.data = of->meta[i].table;
        m.table.len = of->meta[i].len;
        m.has_member = true;
        m.member = f->index;
        rpc_conn_send(l->in, RPC_PEER_META, id, &m.base);
        return;
      }
    refuse(l, id, f, -ENOENT, "no checksum table of member %u for step %" PRIu64,
           f->index, f->step);
    return;
  }
  struct smp_peer_piece pc;
  char why[256];
  int prc = f->has_coef ? smp_peer_relay_check(l, f, f->has_length ? f->length : PEER_PIECE,
                                                why, sizeof(why))
                        : 0;
  if (prc == 0)
    prc = smp_peer_serve_piece(p, f->step, f->what, f->index, &pc, why, sizeof(why));
  if (prc != 0) {
    refuse(l, id, f, prc, "%s", why);
    return;
  }
  const uint8_t *base = pc.base;
  size_t end = pc.end;
  uint64_t off = f->has_offset ? f->offset : 0;
  uint64_t len = f->has_length ? f->length : PEER_PIECE;
  if (len > PEER_PIECE || off > pc.chunk_bytes ||
      (f->has_coef && len > pc.chunk_bytes - off)) {
    refuse(l, id, f, -EMSGSIZE, "%" PRIu64 " bytes at %" PRIu64 " of a %zu-byte "
           "piece (at most %zu at once)", len, off, pc.chunk_bytes, PEER_PIECE);
    return;
  }
  /* 2 * PEER_PIECE bytes of replies queued at most per link (a rebuild
   * keeps a few fetches out per member, so that the link never idles
   * between them): a member that
   * asks faster than it reads is told to wait, before any CRC is spent. */
  if (rpc_conn_queued_bytes(l->in) > 2 * PEER_PIECE) {
    refuse(l, id, f, -EAGAIN, "two fetches of this link are still being sent");
    return;
  }
  if (f->has_coef) { /* a term of a pipelined rebuild */
    smp_peer_relay_fetch(l, id, f, off, len);
    return;
  }
  uint64_t n = off >= end ? 0 : end - off < len ? end - off : len;
  struct rpc_bulk_hdr h = {.kind = PEER_BULK_FETCH, .tag = id, .offset = off,
                           .length = n,
                           .crc32c = n > 0 ? crc32c(base + off, (size_t)n) : CRC32C_SEED};
  int rc = rpc_conn_send_bulk(l->in, &h, n > 0 ? base + off : NULL, NULL, NULL);
  if (rc != PT_OK)
    log_debug("member %u's fetch of step %" PRIu64 " not answered: %s", l->member,
              f->step, pt_strerror(rc));
}

int smp_peer_serve_on_msg(struct link *l, const struct rpc_hdr *h,
                          ProtobufCMessage *msg)
{
  switch (h->type) {
  case RPC_PEER_META:
    return keep_meta(l, (const Pt__PeerMeta *)msg);
  case RPC_PEER_FETCH:
    on_fetch(l, h->request_id, (const Pt__PeerFetch *)msg);
    return 0;
  default:
    log_warn("peer link from member %u: unexpected %s; closing it", l->member,
             rpc_type_name(h->type));
    return PT_EPROTO;
  }
}
