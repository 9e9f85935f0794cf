/*
 * smp_protect.c — the protection engine (smp_protect.h): the sends of a
 * sealed step and their acknowledgements, the checks and the folds of the
 * chunks a holder receives, and when a slot is protected.
 *
 * A holder folds a chunk of `valid` bytes as the zero-padded C bytes the
 * code defines: the whole 64-byte pieces straight from the bytes given,
 * the last partial one through a zeroed 64-byte copy; past it the chunk is
 * zero, and folding zeros changes nothing, so it is skipped. A row is
 * zeroed just ahead of the folds that reach it, and past its chunks' ends
 * once all are in. A whole chunk is checked against its CRC before it is
 * folded; a piece comes checked by the transport.
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
  /* By row: bytes of the row zeroed so far, from its start (a row is
   * zeroed ahead of the first fold that reaches a byte, not at begin: a
   * big row is never written twice in a row on the SMP's loop). */
  size_t zeroed[RS_MAX_MEMBERS];
  /* By row and data row: bytes of that chunk folded so far, in order. */
  uint64_t next[RS_MAX_MEMBERS][RS_MAX_MEMBERS];
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
  ps->step = step;
  ps->active = true;
  return 0;
}

static int sends(struct smp_protect *p, uint32_t slot, const void *data,
                 size_t bytes, struct smp_protect_send *out, bool with_crc)
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
    ps->crc[c] = !with_crc ? 0
                 : valid > 0 ? crc32c(d + (size_t)c * p->l.chunk_bytes, valid)
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

int smp_protect_sends(struct smp_protect *p, uint32_t slot, const void *data,
                      size_t bytes, struct smp_protect_send *out)
{
  return sends(p, slot, data, bytes, out, true);
}

int smp_protect_plan(struct smp_protect *p, uint32_t slot, const void *data,
                     size_t bytes, struct smp_protect_send *out)
{
  return sends(p, slot, data, bytes, out, false);
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

/* Folds valid bytes of data row `row` into parity row `prow` at dst, a
 * slice at a time. */
static int fold(struct smp_protect *p, unsigned row, const uint8_t *bytes,
                size_t valid, unsigned prow, uint8_t *dst)
{
  size_t whole = valid / RS_ALIGN * RS_ALIGN;
  int rc = 0;

  for (size_t off = 0; off < whole && rc == 0; off += FOLD_SLICE) {
    size_t n = whole - off < FOLD_SLICE ? whole - off : FOLD_SLICE;
    void *out[1] = {dst + off};
    rc = rs_stripe_update(p->coder, n, row, bytes + off, prow, 1, out);
  }
  if (rc == 0 && valid > whole) {
    uint8_t tail[RS_ALIGN] __attribute__((aligned(RS_ALIGN)));
    void *out[1] = {dst + whole};
    memset(tail, 0, sizeof(tail));
    memcpy(tail, bytes + whole, valid - whole);
    rc = rs_stripe_update(p->coder, RS_ALIGN, row, tail, prow, 1, out);
  }
  return rc;
}

/* Row prow of ps is zero in [0, upto) once this returns (upto rounded up
 * to RS_ALIGN and capped at C: a fold writes whole 64-byte pieces). */
static void zero_to(struct smp_protect *p, struct protect_slot *ps,
                    unsigned prow, size_t upto)
{
  size_t c = p->l.chunk_bytes;
  upto = (upto + RS_ALIGN - 1) / RS_ALIGN * RS_ALIGN;
  if (upto > c)
    upto = c;
  if (upto <= ps->zeroed[prow])
    return;
  memset(ps->parity + p->rows[prow].offset + ps->zeroed[prow], 0,
         upto - ps->zeroed[prow]);
  ps->zeroed[prow] = upto;
}

/* Chunk h->chunk of row h->parity_row is all in: counted, and a row with
 * every chunk in is zeroed past what they wrote (their padding). */
static void chunk_complete(struct smp_protect *p, struct protect_slot *ps,
                           unsigned prow, unsigned chunk)
{
  ps->got[prow] |= 1u << chunk;
  ps->nreceived++;
  if (ps->got[prow] == (1u << p->l.k) - 1u) {
    zero_to(p, ps, prow, p->l.chunk_bytes);
    ps->nrows_done++;
  }
}

/* The checks every chunk or piece of one passes: its step is being
 * protected here, it fits the layout, and this member keeps its row.
 * OUT: *slot, *want (the chunk's valid bytes). */
static int check_piece(struct smp_protect *p, uint64_t step, uint32_t stripe,
                       uint32_t parity_row, uint32_t from, uint32_t chunk,
                       uint32_t *slot, size_t *want)
{
  const struct rs_layout *l = &p->l;

  if (smp_protect_find(p, step, slot) != 0)
    return fail(p, -ENOENT, "chunk of step %" PRIu64 " from member %" PRIu32
                ": no slot is protecting that step", step, from);
  if (stripe >= l->g || parity_row >= l->m || chunk >= l->k || from >= l->g)
    return fail(p, PT_EPROTO, "chunk of step %" PRIu64 " names stripe %"
                PRIu32 ", parity row %" PRIu32 ", member %" PRIu32
                ", chunk %" PRIu32 ": out of the %u+%u layout", step,
                stripe, parity_row, from, chunk, l->k, l->m);
  const struct rs_parity_ref *ref = &p->rows[parity_row];
  if (ref->stripe != stripe)
    return fail(p, PT_EPROTO, "chunk of step %" PRIu64 " for parity row %"
                PRIu32 " of stripe %" PRIu32 ": member %u keeps that row of "
                "stripe %u", step, parity_row, stripe, p->member,
                ref->stripe);
  if (ref->from[chunk] != from)
    return fail(p, PT_EPROTO, "chunk of step %" PRIu64 " from member %" PRIu32
                " as data row %" PRIu32 " of stripe %" PRIu32 ": that row "
                "is member %u's", step, from, chunk, stripe,
                ref->from[chunk]);
  *want = rs_layout_chunk_valid(l, from, chunk);
  if (p->slot[*slot].got[parity_row] & (1u << chunk))
    return fail(p, -EALREADY, "chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 " arrived twice", chunk, from, step);
  return 0;
}

int smp_protect_receive_piece(struct smp_protect *p,
                              const struct smp_protect_piece *h,
                              const void *bytes)
{
  uint32_t slot;
  size_t want;

  p->err[0] = '\0';
  if (h == NULL)
    return fail(p, -EINVAL, "no piece header");
  int rc = check_piece(p, h->step, h->stripe, h->parity_row, h->from,
                       h->chunk, &slot, &want);
  if (rc != 0)
    return rc;
  struct protect_slot *ps = &p->slot[slot];
  uint64_t *next = &ps->next[h->parity_row][h->chunk];
  if (h->offset != *next)
    return fail(p, h->offset < *next ? -EALREADY : PT_EPROTO,
                "piece of chunk %" PRIu32 " of member %" PRIu32 " for step %"
                PRIu64 " at byte %" PRIu64 ": the next one due starts at %"
                PRIu64, h->chunk, h->from, h->step, h->offset, *next);
  if (h->len > want - h->offset || (h->len == 0 && want > 0))
    return fail(p, -EMSGSIZE, "piece of chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 ": %" PRIu64 " bytes at %" PRIu64
                " of a %zu-byte chunk", h->chunk, h->from, h->step, h->len,
                h->offset, want);
  if (h->offset + h->len < want && h->len % RS_ALIGN != 0)
    return fail(p, PT_EPROTO, "piece of chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 ": %" PRIu64 " bytes, not a multiple of "
                "%d before the chunk's end", h->chunk, h->from, h->step,
                h->len, RS_ALIGN);
  if (h->len > 0 && bytes == NULL)
    return fail(p, -EINVAL, "piece without its bytes");
  if (h->len > 0) {
    zero_to(p, ps, h->parity_row, h->offset + h->len);
    uint8_t *dst = ps->parity + p->rows[h->parity_row].offset + h->offset;
    rc = fold(p, h->chunk, bytes, h->len, h->parity_row, dst);
    if (rc != 0)
      return fail(p, rc, "folding chunk %" PRIu32 " of member %" PRIu32
                  ": %s", h->chunk, h->from, rs_last_error());
  }
  *next += h->len;
  if (*next == want)
    chunk_complete(p, ps, h->parity_row, h->chunk);
  return 0;
}

int smp_protect_receive(struct smp_protect *p,
                        const struct smp_protect_chunk *h, const void *bytes)
{
  uint32_t slot;
  size_t want;

  p->err[0] = '\0';
  if (h == NULL)
    return fail(p, -EINVAL, "no chunk header");
  int rc = check_piece(p, h->step, h->stripe, h->parity_row, h->from,
                       h->chunk, &slot, &want);
  if (rc != 0)
    return rc;
  if (h->valid != want)
    return fail(p, -EMSGSIZE, "chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 " has %" PRIu64 " bytes, the layout "
                "gives it %zu", h->chunk, h->from, h->step, h->valid, want);
  if (want > 0 && bytes == NULL)
    return fail(p, -EINVAL, "chunk %" PRIu32 " of member %" PRIu32
                " without its bytes", h->chunk, h->from);
  struct protect_slot *ps = &p->slot[slot];
  if (ps->next[h->parity_row][h->chunk] != 0)
    return fail(p, -EALREADY, "chunk %" PRIu32 " of member %" PRIu32
                " for step %" PRIu64 " arrives whole after pieces of it",
                h->chunk, h->from, h->step);
  /* Checked before anything is written: a refused chunk leaves the rows
   * as they were. */
  uint32_t crc = want > 0 ? crc32c(bytes, want) : CRC32C_SEED;
  if (crc != h->crc)
    return fail(p, PT_ECHECKSUM,
                "chunk %" PRIu32 " of member %" PRIu32 " for step %" PRIu64
                ": CRC32C %08" PRIx32 ", its header says %08" PRIx32,
                h->chunk, h->from, h->step, crc, h->crc);
  zero_to(p, ps, h->parity_row, want);
  rc = fold(p, h->chunk, bytes, want, h->parity_row,
            ps->parity + p->rows[h->parity_row].offset);
  if (rc != 0)
    return fail(p, rc, "folding chunk %" PRIu32 " of member %" PRIu32 ": %s",
                h->chunk, h->from, rs_last_error());
  ps->next[h->parity_row][h->chunk] = want;
  chunk_complete(p, ps, h->parity_row, h->chunk);
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
