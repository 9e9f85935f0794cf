/*
 * smp_protect.c — the protection engine (smp_protect.h): the sends of a
 * sealed step and their acknowledgements, the checks and the folds of the
 * chunks a holder receives, and when a slot is protected.
 *
 * A holder folds a chunk of `valid` bytes as the zero-padded C bytes the
 * code defines: the whole 64-byte pieces straight from the bytes given,
 * the last partial one through a zeroed 64-byte copy; past it the chunk is
 * zero, and folding zeros changes nothing, so it is skipped. The CRC is
 * computed in the same pass, slice by slice; a chunk that fails it is
 * folded a second time, which cancels the first (the fold is an XOR in
 * GF(2^8)), so a refused chunk leaves the rows as they were.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/crc32c.h"
#include "daemon/smp/smp_protect.h"

struct protect_slot {
  bool active;
  uint64_t step;
  uint8_t *parity;                      /* m*C bytes: the rows kept */
  bool sends_ready;
  uint32_t crc[RS_MAX_MEMBERS];         /* own chunk c's CRC */
  bool acked[SMP_PROTECT_MAX_SENDS];    /* by send index */
  unsigned nacked;
  uint32_t got[RS_MAX_MEMBERS];         /* by row: bit c, data row folded */
  unsigned nreceived, nrows_done;
};

struct smp_protect {
  struct rs_layout l;
  struct rs_coder *coder;
  unsigned member, nslots, nsends;
  struct rs_send sends[SMP_PROTECT_MAX_SENDS];
  struct rs_parity_ref rows[RS_MAX_MEMBERS];
  struct protect_slot slot[SNAP_MAX_SLOTS];
  char err[512];
};

static int fail(struct smp_protect *p, int rc, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static int fail(struct smp_protect *p, int rc, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(p->err, sizeof(p->err), fmt, ap);
  va_end(ap);
  return rc;
}

static void errset(char *err, size_t len, const char *what)
{
  if (err != NULL && len > 0)
    snprintf(err, len, "%s", what);
}

int smp_protect_new(struct smp_protect **out, unsigned k, unsigned m,
                    unsigned member, const size_t *member_bytes,
                    unsigned nslots, const struct rs_coder_opts *opts,
                    char *err, size_t errlen)
{
  struct smp_protect *p;
  int rc;

  *out = NULL;
  if (member_bytes == NULL || nslots == 0 || nslots > SNAP_MAX_SLOTS) {
    errset(err, errlen, "no member sizes, or a slot count out of range");
    return -EINVAL;
  }
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  rc = rs_layout_init(&p->l, k, m, member_bytes, k + m);
  if (rc == 0 && member >= k + m)
    rc = -EINVAL;
  if (rc != 0) {
    errset(err, errlen, rc == -EINVAL && member >= k + m
                            ? "member number out of the group"
                            : rs_last_error());
    free(p);
    return rc;
  }
  rc = rs_coder_new(&p->coder, k, m, opts);
  if (rc != 0) {
    errset(err, errlen, rs_last_error());
    free(p);
    return rc;
  }
  p->member = member;
  p->nslots = nslots;
  p->nsends = (unsigned)rs_layout_sends(&p->l, member, p->sends);
  (void)rs_layout_parity(&p->l, member, p->rows);
  *out = p;
  return 0;
}

void smp_protect_free(struct smp_protect *p)
{
  if (p == NULL)
    return;
  rs_coder_free(p->coder);
  free(p);
}

const struct rs_layout *smp_protect_layout(const struct smp_protect *p)
{
  return &p->l;
}

const char *smp_protect_error(const struct smp_protect *p)
{
  return p->err;
}

int smp_protect_find(const struct smp_protect *p, uint64_t step,
                     uint32_t *slot)
{
  for (uint32_t i = 0; i < p->nslots; i++) {
    if (p->slot[i].active && p->slot[i].step == step) {
      if (slot != NULL)
        *slot = i;
      return 0;
    }
  }
  return -ENOENT;
}

void smp_protect_forget(struct smp_protect *p, uint32_t slot)
{
  if (slot < p->nslots)
    memset(&p->slot[slot], 0, sizeof(p->slot[slot]));
}

int smp_protect_begin(struct smp_protect *p, uint32_t slot, uint64_t step,
                      void *parity, size_t parity_len)
{
  p->err[0] = '\0';
  if (slot >= p->nslots || parity == NULL)
    return fail(p, -EINVAL, "slot %" PRIu32 " of %u, or no parity area",
                slot, p->nslots);
  if (parity_len < p->l.parity_bytes)
    return fail(p, PT_ECONFIG,
                "slot %" PRIu32 "'s parity area has %zu bytes; the group's "
                "layout needs %zu (%u rows of %zu-byte chunks, from its "
                "largest member's %zu bytes against this member's %zu)",
                slot, parity_len, p->l.parity_bytes, p->l.m,
                p->l.chunk_bytes, p->l.padded_bytes,
                p->l.member_bytes[p->member]);
  for (uint32_t i = 0; i < p->nslots; i++)
    if (p->slot[i].active && p->slot[i].step == step)
      smp_protect_forget(p, i);
  smp_protect_forget(p, slot);
  struct protect_slot *ps = &p->slot[slot];
  ps->parity = parity;
  memset(parity, 0, p->l.parity_bytes);
  ps->step = step;
  ps->active = true;
  return 0;
}

int smp_protect_sends(struct smp_protect *p, uint32_t slot, const void *data,
                      size_t bytes, struct smp_protect_send *out)
{
  p->err[0] = '\0';
  if (slot >= p->nslots || out == NULL)
    return fail(p, -EINVAL, "slot %" PRIu32 " of %u", slot, p->nslots);
  struct protect_slot *ps = &p->slot[slot];
  if (!ps->active)
    return fail(p, PT_ESTATE, "slot %" PRIu32 " protects no step", slot);
  if (bytes != p->l.member_bytes[p->member] || (data == NULL && bytes > 0))
    return fail(p, -EINVAL,
                "member %u's data has %zu bytes, the layout says %zu",
                p->member, bytes, p->l.member_bytes[p->member]);
  const uint8_t *d = data;
  for (unsigned c = 0; c < p->l.k; c++) {
    size_t valid = rs_layout_chunk_valid(&p->l, p->member, c);
    ps->crc[c] = valid > 0 ? crc32c(d + (size_t)c * p->l.chunk_bytes, valid)
                           : CRC32C_SEED;
  }
  for (unsigned i = 0; i < p->nsends; i++) {
    const struct rs_send *s = &p->sends[i];
    out[i] = (struct smp_protect_send){
        .hdr = {.step = ps->step, .stripe = s->stripe,
                .parity_row = s->parity_row, .from = p->member,
                .chunk = s->chunk, .valid = s->valid, .crc = ps->crc[s->chunk]},
        .to = s->to,
        .bytes = s->valid > 0 ? d + s->offset : NULL,
    };
    ps->acked[i] = false;
  }
  ps->nacked = 0;
  ps->sends_ready = true;
  return (int)p->nsends;
}

int smp_protect_ack(struct smp_protect *p, uint64_t step, unsigned to,
                    unsigned chunk)
{
  uint32_t slot;
  p->err[0] = '\0';
  if (smp_protect_find(p, step, &slot) != 0)
    return fail(p, -ENOENT, "acknowledgement of step %" PRIu64 ", which no "
                "slot is protecting", step);
  struct protect_slot *ps = &p->slot[slot];
  if (!ps->sends_ready)
    return fail(p, PT_ESTATE, "acknowledgement of step %" PRIu64 " before "
                "its sends were made", step);
  for (unsigned i = 0; i < p->nsends; i++) {
    if (p->sends[i].to != to || p->sends[i].chunk != chunk)
      continue;
    if (ps->acked[i])
      return fail(p, -EALREADY, "member %u acknowledged chunk %u of step %"
                  PRIu64 " twice", to, chunk, step);
    ps->acked[i] = true;
    ps->nacked++;
    return 0;
  }
  return fail(p, PT_EPROTO, "member %u acknowledged chunk %u of step %" PRIu64
              ", which was not sent to it", to, chunk, step);
}

/* Bytes of a chunk checked and folded at a time: the slice of the chunk and
 * the slice of the row it lands in stay in cache between the two. */
#define FOLD_SLICE ((size_t)256 << 10)

/* Folds valid bytes of data row `row` into parity row `prow` at dst; with
 * crc not NULL, also *crc = crc32c() of the bytes, slice by slice. Folding
 * the same bytes twice leaves dst as it was (the fold is an XOR). */
static int fold(struct smp_protect *p, unsigned row, const uint8_t *bytes,
                size_t valid, unsigned prow, uint8_t *dst, uint32_t *crc)
{
  size_t whole = valid / RS_ALIGN * RS_ALIGN;
  uint32_t c = CRC32C_SEED;
  int rc = 0;

  for (size_t off = 0; off < whole && rc == 0; off += FOLD_SLICE) {
    size_t n = whole - off < FOLD_SLICE ? whole - off : FOLD_SLICE;
    void *out[1] = {dst + off};
    if (crc != NULL)
      c = crc32c_update(c, bytes + off, n);
    rc = rs_stripe_update(p->coder, n, row, bytes + off, prow, 1, out);
  }
  if (rc == 0 && valid > whole) {
    uint8_t tail[RS_ALIGN] __attribute__((aligned(RS_ALIGN)));
    void *out[1] = {dst + whole};
    memset(tail, 0, sizeof(tail));
    memcpy(tail, bytes + whole, valid - whole);
    if (crc != NULL)
      c = crc32c_update(c, tail, valid - whole);
    rc = rs_stripe_update(p->coder, RS_ALIGN, row, tail, prow, 1, out);
  }
  if (crc != NULL)
    *crc = c;
  return rc;
}

int smp_protect_receive(struct smp_protect *p,
                        const struct smp_protect_chunk *h, const void *bytes)
{
  const struct rs_layout *l = &p->l;
  uint32_t slot;

  p->err[0] = '\0';
  if (h == NULL)
    return fail(p, -EINVAL, "no chunk header");
  if (smp_protect_find(p, h->step, &slot) != 0)
    return fail(p, -ENOENT, "chunk of step %" PRIu64 " from member %" PRIu32
                ": no slot is protecting that step", h->step, h->from);
  if (h->stripe >= l->g || h->parity_row >= l->m || h->chunk >= l->k ||
      h->from >= l->g)
    return fail(p, PT_EPROTO, "chunk of step %" PRIu64 " names stripe %"
                PRIu32 ", parity row %" PRIu32 ", member %" PRIu32
                ", chunk %" PRIu32 ": out of the %u+%u layout", h->step,
                h->stripe, h->parity_row, h->from, h->chunk, l->k, l->m);
  const struct rs_parity_ref *ref = &p->rows[h->parity_row];
  if (ref->stripe != h->stripe)
    return fail(p, PT_EPROTO, "chunk of step %" PRIu64 " for parity row %"
                PRIu32 " of stripe %" PRIu32 ": member %u keeps that row of "
                "stripe %u", h->step, h->parity_row, h->stripe, p->member,
                ref->stripe);
  if (ref->from[h->chunk] != h->from)
    return fail(p, PT_EPROTO, "chunk of step %" PRIu64 " from member %" PRIu32
                " as data row %" PRIu32 " of stripe %" PRIu32 ": that row "
                "is member %u's", h->step, h->from, h->chunk, h->stripe,
                ref->from[h->chunk]);
  size_t want = rs_layout_chunk_valid(l, h->from, h->chunk);
  if (h->valid != want)
    return fail(p, -EMSGSIZE, "chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 " has %" PRIu64 " bytes, the layout "
                "gives it %zu", h->chunk, h->from, h->step, h->valid, want);
  if (want > 0 && bytes == NULL)
    return fail(p, -EINVAL, "chunk %" PRIu32 " of member %" PRIu32
                " without its bytes", h->chunk, h->from);
  struct protect_slot *ps = &p->slot[slot];
  if (ps->got[h->parity_row] & (1u << h->chunk))
    return fail(p, -EALREADY, "chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 " arrived twice", h->chunk, h->from,
                h->step);
  /* One pass: each slice is checked and folded while in cache; a chunk
   * that fails its CRC is folded again, which takes it out (an XOR). */
  uint8_t *dst = ps->parity + ref->offset;
  uint32_t crc;
  int rc = fold(p, h->chunk, bytes, want, h->parity_row, dst, &crc);
  if (rc != 0)
    return fail(p, rc, "folding chunk %" PRIu32 " of member %" PRIu32 ": %s",
                h->chunk, h->from, rs_last_error());
  if (crc != h->crc) {
    rc = fold(p, h->chunk, bytes, want, h->parity_row, dst, NULL);
    return fail(p, rc != 0 ? rc : PT_ECHECKSUM,
                "chunk %" PRIu32 " of member %" PRIu32 " for step %" PRIu64
                ": CRC32C %08" PRIx32 ", its header says %08" PRIx32,
                h->chunk, h->from, h->step, crc, h->crc);
  }
  ps->got[h->parity_row] |= 1u << h->chunk;
  ps->nreceived++;
  if (ps->got[h->parity_row] == (1u << l->k) - 1u)
    ps->nrows_done++;
  return 0;
}

void smp_protect_status(const struct smp_protect *p, uint32_t slot,
                        struct smp_protect_status *st)
{
  memset(st, 0, sizeof(*st));
  if (slot >= p->nslots || !p->slot[slot].active)
    return;
  const struct protect_slot *ps = &p->slot[slot];
  st->active = true;
  st->step = ps->step;
  st->sends_ready = ps->sends_ready;
  st->nsends = p->nsends;
  st->nacked = ps->nacked;
  st->nrows = p->l.m;
  st->nrows_done = ps->nrows_done;
  st->nreceived = ps->nreceived;
  st->done = ps->sends_ready && ps->nacked == p->nsends &&
             ps->nrows_done == p->l.m;
}

bool smp_protect_done(const struct smp_protect *p, uint32_t slot)
{
  struct smp_protect_status st;
  smp_protect_status(p, slot, &st);
  return st.done;
}

/* ---- on a snapshot object ---- */

/* PT_ESTATE unless slot holds step in one of the states of mask. */
static int slot_check(struct smp_protect *p, const struct snap_store *s,
                      uint32_t slot, uint64_t step, unsigned mask,
                      const char *what)
{
  struct snap_slot_info info;
  if (slot >= snap_store_nslots(s))
    return fail(p, -EINVAL, "slot %" PRIu32 " of %" PRIu32, slot,
                snap_store_nslots(s));
  snap_slot_get(s, slot, &info);
  if (!info.record_ok || info.state > SNAP_STATE_MAX ||
      !(mask & (1u << info.state)) || info.step != step)
    return fail(p, PT_ESTATE, "%s step %" PRIu64 " in slot %" PRIu32
                ", which is %s with step %" PRIu64, what, step, slot,
                snap_state_name(info.state), info.step);
  return 0;
}

#define MASK_SEALED_ON ((1u << SNAP_SEALED) | (1u << SNAP_PINNED) | \
                        (1u << SNAP_PROTECTED))

int smp_protect_begin_store(struct smp_protect *p, struct snap_store *s,
                            uint32_t slot, uint64_t step)
{
  /* Never a COMMITTED or FREE slot: the committed step's parity stays
   * intact until a newer step commits. */
  int rc = slot_check(p, s, slot, step, MASK_SEALED_ON | (1u << SNAP_WRITING),
                      "cannot protect");
  if (rc != 0)
    return rc;
  uint64_t len = 0;
  void *area = snap_store_parity(s, slot, &len);
  if (area == NULL)
    return fail(p, PT_ECONFIG, "snapshot object has no parity area for slot %"
                PRIu32 " (made without a code, or no such slot)", slot);
  return smp_protect_begin(p, slot, step, area, (size_t)len);
}

int smp_protect_sends_store(struct smp_protect *p, const struct snap_store *s,
                            uint32_t slot, struct smp_protect_send *out)
{
  if (slot >= p->nslots || !p->slot[slot].active)
    return fail(p, PT_ESTATE, "slot %" PRIu32 " protects no step", slot);
  int rc = slot_check(p, s, slot, p->slot[slot].step, MASK_SEALED_ON,
                      "cannot send");
  if (rc != 0)
    return rc;
  return smp_protect_sends(p, slot, snap_slot_data(s, slot),
                           (size_t)snap_store_slot_bytes(s), out);
}

int smp_protect_mark(const struct smp_protect *p, struct snap_store *s,
                     uint32_t slot)
{
  if (!smp_protect_done(p, slot))
    return PT_ESTATE;
  return snap_slot_protect(s, p->slot[slot].step);
}
