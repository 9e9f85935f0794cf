/*
 * rs_decode.c — verified rebuild of lost members (rs_group_decode).
 *
 * State, per stripe: which of its G pieces are present, which are wanted (the
 * lost members' pieces), which present data pieces are trusted and which are
 * suspect (a checksum block overlapping them failed), and the current choice
 * of k sources: every trusted piece plus `need` more taken from the
 * candidates (present parity first, then suspect data as a last resort),
 * enumerated in lexicographic order. The outputs are the wanted pieces plus
 * the suspect pieces not used as sources (rebuilt into scratch, so that they
 * can be checked and, on request, written back).
 *
 * Checksums are computed inside the decode, slice by slice, while the bytes
 * are in cache: every data piece of a decoded stripe, source or output, of
 * each member that has a table contributes the CRCs of its slice (split at a
 * block boundary, at most one per slice) and the blocks are assembled
 * afterwards (common/crc32c.h's crc32c_shift). Rounds:
 *
 *  1. Every stripe is decoded (or only checksummed when it has no output)
 *     with all survivors' data trusted, and every block is checked.
 *  2. A survivor block that fails turns the chunks it overlaps suspect; the
 *     stripes holding them are planned again and decoded again. Nothing is
 *     accepted that was computed from a piece later found damaged, so this is
 *     the same as verifying the survivors first, in one pass over memory
 *     instead of two.
 *  3. Otherwise, a failing block of a lost member (or of a suspect survivor
 *     chunk), or rebuilt padding that is not zero, blames the stripes whose
 *     decoded or suspect pieces it covers; they move to their next source
 *     combination, odometer-style (the lowest-numbered first; one that runs
 *     out starts over and carries), so a block shared by two stripes is
 *     searched over the product of their choices.
 *
 * Why checking the rebuilt data suffices: in a stripe decoded with need > 0,
 * the parity sources map one-to-one (an invertible Cauchy submatrix) onto the
 * data pieces that are not sources, each of which is checked against its
 * owner's table (and its padding against zero). When those pass, the parity
 * pieces used were intact, and so are the parity rows rebuilt with them. A
 * stripe with need == 0 decodes from checked data only.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "ec/rs_internal.h"
#include "kernels/kernels.h"
#include "pt.h"

#define DECODE_MAX_ROUNDS 128

struct stripe_state {
  uint32_t present; /* positions with a piece to read */
  uint32_t want;    /* lost positions to rebuild */
  uint32_t trusted; /* present data positions not suspect */
  uint32_t suspect; /* present data positions under a failing block */
  unsigned need;    /* sources to take from cand */
  unsigned ncand;
  uint8_t cand[RS_MAX_MEMBERS]; /* present parity, then suspect data */
  uint8_t idx[RS_MAX_MEMBERS];  /* current combination: need indices in cand */
  uint32_t src, out;            /* current sources and outputs */
  unsigned char *tbls, *owned;  /* tables for (src, out) */
};

struct decode_call {
  struct rs_coder *c;
  const struct rs_layout *l;
  const struct rs_member *mb;
  uint32_t lost;
  uint32_t checked;             /* members whose blocks are checked */
  size_t nslices;
  uint32_t slice_op;            /* crc32c_shift_op(slice) */
  struct stripe_state st[RS_MAX_MEMBERS];
  /* Rebuilt suspect data pieces, C bytes each, by [stripe][position]. */
  unsigned char *sbuf[RS_MAX_MEMBERS][RS_MAX_MEMBERS];
  /* Per checked member: seg[(chunk * nslices + slice) * 2 + part], the CRC
   * (seed 0) of the data bytes of that slice before (part 0) and after
   * (part 1) a block boundary; bad[block], its blocks that failed. */
  uint32_t *seg[RS_MAX_MEMBERS];
  uint8_t *bad[RS_MAX_MEMBERS];
  unsigned dirty[RS_MAX_MEMBERS];
  unsigned ndirty;
  atomic_int pad_bad[RS_MAX_MEMBERS];
};

/* ---- source combinations ------------------------------------------------------------ */

static void combo_reset(struct stripe_state *st)
{
  for (unsigned t = 0; t < st->need; t++)
    st->idx[t] = (uint8_t)t;
}

/* The next need-subset of cand in lexicographic order; false after the last. */
static bool combo_next(struct stripe_state *st)
{
  int t = (int)st->need - 1;

  while (t >= 0 && st->idx[t] == st->ncand - st->need + (unsigned)t)
    t--;
  if (t < 0)
    return false;
  st->idx[t]++;
  for (unsigned u = (unsigned)t + 1; u < st->need; u++)
    st->idx[u] = (uint8_t)(st->idx[u - 1] + 1);
  return true;
}

static void choice_apply(struct stripe_state *st)
{
  st->src = st->trusted;
  for (unsigned t = 0; t < st->need; t++)
    st->src |= 1u << st->cand[st->idx[t]];
  st->out = st->want | (st->suspect & ~st->src);
}

/* (Re)plans stripe j from its present, wanted and suspect pieces. */
static int stripe_plan(struct decode_call *d, unsigned j)
{
  const struct rs_layout *l = d->l;
  struct stripe_state *st = &d->st[j];
  uint32_t data_mask = (1u << l->k) - 1;

  st->trusted = st->present & data_mask & ~st->suspect;
  st->ncand = 0;
  for (unsigned q = l->k; q < l->g; q++)
    if (st->present & (1u << q))
      st->cand[st->ncand++] = (uint8_t)q;
  for (unsigned q = 0; q < l->k; q++)
    if (st->suspect & (1u << q))
      st->cand[st->ncand++] = (uint8_t)q;
  st->need = l->k - rs_popcount(st->trusted);
  st->src = st->out = 0;
  if ((st->want | st->suspect) == 0)
    return 0;
  if (rs_popcount(st->present) < l->k)
    return rs_fail(PT_ENOFRAG,
                   "rs: decode: stripe %u has %u pieces available, a %u+%u "
                   "code needs %u",
                   j, rs_popcount(st->present), l->k, l->m, l->k);
  combo_reset(st);
  choice_apply(st);
  return 0;
}

/* Moves the blamed stripes to their next combination, odometer-style, and
 * marks every stripe it changed dirty. False when all were exhausted. */
static bool stripes_advance(struct decode_call *d, uint32_t blame)
{
  d->ndirty = 0;
  for (unsigned j = 0; j < d->l->g; j++) {
    struct stripe_state *st = &d->st[j];
    bool moved;
    if (!(blame & (1u << j)))
      continue;
    moved = combo_next(st);
    if (!moved)
      combo_reset(st);
    choice_apply(st);
    d->dirty[d->ndirty++] = j;
    if (moved)
      return true;
  }
  return false;
}

/* ---- one slice of one stripe ------------------------------------------------------------ */

static bool is_zero(const unsigned char *p, size_t n)
{
  for (size_t i = 0; i < n; i++)
    if (p[i] != 0)
      return false;
  return true;
}

static unsigned char *parity_at(const struct decode_call *d, unsigned i,
                                unsigned row, size_t off)
{
  return (unsigned char *)d->mb[i].parity + (size_t)row * d->l->chunk_bytes +
         off;
}

/* Where the data bytes of piece (j, q) stand after the stripe's decode. */
static const unsigned char *data_now(const struct decode_call *d, unsigned j,
                                     unsigned q, unsigned i, size_t off)
{
  if (!(d->lost & (1u << i)) && (d->st[j].out & (1u << q)))
    return d->sbuf[j][q] + off;
  return (const unsigned char *)d->mb[i].data + (size_t)q * d->l->chunk_bytes +
         off;
}

/* The CRCs of the data bytes of slice s of every data piece of stripe j
 * whose member is checked. */
static void slice_crcs(struct decode_call *d, unsigned j, size_t s, size_t off,
                       size_t len)
{
  const struct rs_layout *l = d->l;

  for (unsigned q = 0; q < l->k; q++) {
    unsigned i = rs_layout_piece_member(l, j, q);
    uint32_t *sg;
    size_t v, n, n0, a;
    const unsigned char *p;

    if (!(d->checked & (1u << i)))
      continue;
    sg = &d->seg[i][((size_t)q * d->nslices + s) * 2];
    sg[0] = sg[1] = 0;
    v = rs_layout_chunk_valid(l, i, q);
    if (off >= v)
      continue;
    n = v - off < len ? v - off : len;
    a = (size_t)q * l->chunk_bytes + off;
    n0 = KERN_BLOCK_SIZE - a % KERN_BLOCK_SIZE;
    if (n0 > n)
      n0 = n;
    p = data_now(d, j, q, i, off);
    sg[0] = crc32c_update(0, p, n0);
    if (n > n0)
      sg[1] = crc32c_update(0, p + n0, n - n0);
  }
}

static int decode_task(void *arg, size_t t, struct rs_worker *w)
{
  struct decode_call *d = arg;
  const struct rs_layout *l = d->l;
  unsigned j = d->dirty[t / d->nslices], ns = 0, no = 0, npost = 0;
  size_t s = t % d->nslices, L = d->c->slice, C = l->chunk_bytes;
  size_t off = s * L, len = rs_slice_len(d->c, l, s);
  struct stripe_state *st = &d->st[j];
  unsigned char *src[RS_MAX_MEMBERS], *out[RS_MAX_MEMBERS];
  unsigned char *bounce = w->scratch, *spare = w->scratch + (size_t)l->k * L;
  struct {
    unsigned char *scratch; /* where ISA-L wrote the slice */
    unsigned char *dst;     /* where its data bytes go (NULL: they stay) */
    size_t data;            /* leading bytes that are data; the rest, padding */
  } post[RS_MAX_MEMBERS];

  if (st->out == 0)
    goto out_crcs;
  for (unsigned q = 0; q < l->g; q++) {
    unsigned i = rs_layout_piece_member(l, j, q);
    if (!(st->src & (1u << q)))
      continue;
    if (q < l->k)
      src[ns] = rs_data_in(d->c, l, d->mb, i, q, off, len,
                           bounce + (size_t)ns * L);
    else
      src[ns] = parity_at(d, i, q - l->k, off);
    ns++;
  }
  for (unsigned q = 0; q < l->g; q++) {
    unsigned i = rs_layout_piece_member(l, j, q);
    size_t v;
    if (!(st->out & (1u << q)))
      continue;
    if (q >= l->k) {
      out[no++] = parity_at(d, i, q - l->k, off);
      continue;
    }
    v = rs_layout_chunk_valid(l, i, q);
    if (d->lost & (1u << i)) {
      unsigned char *dst =
          v > off ? (unsigned char *)d->mb[i].data + (size_t)q * C + off : NULL;
      if (off + len <= v) {
        out[no++] = dst;
        continue;
      }
      out[no] = spare + (size_t)no * L;
      post[npost].dst = dst;
    } else {
      /* A suspect survivor chunk, rebuilt whole into its scratch. */
      out[no] = d->sbuf[j][q] + off;
      if (off + len <= v) {
        no++;
        continue;
      }
      post[npost].dst = NULL;
    }
    post[npost].scratch = out[no];
    post[npost].data = v > off ? v - off : 0;
    npost++;
    no++;
  }
  ec_encode_data((int)len, (int)l->k, (int)no, st->tbls, src, out);
  for (unsigned p = 0; p < npost; p++) {
    if (post[p].dst != NULL)
      memcpy(post[p].dst, post[p].scratch, post[p].data);
    if (!is_zero(post[p].scratch + post[p].data, len - post[p].data))
      atomic_store(&d->pad_bad[j], 1);
  }

out_crcs:
  slice_crcs(d, j, s, off, len);
  return 0;
}

/* Tables and scratch for the dirty stripes, then the decode of them. */
static int decode_dirty(struct decode_call *d)
{
  const struct rs_layout *l = d->l;
  uint64_t work = 0;
  int rc;

  for (unsigned n = 0; n < d->ndirty; n++) {
    unsigned j = d->dirty[n];
    struct stripe_state *st = &d->st[j];
    uint32_t rebuilt = st->suspect & st->out;

    free(st->owned);
    st->owned = NULL;
    st->tbls = NULL;
    atomic_store(&d->pad_bad[j], 0);
    work += (uint64_t)l->chunk_bytes * l->k;
    if (st->out == 0)
      continue;
    rc = rs_tables_get(d->c, st->src, st->out, &st->tbls, &st->owned);
    if (rc < 0)
      return rc;
    for (unsigned q = 0; q < l->k; q++) {
      if (!(rebuilt & (1u << q)) || d->sbuf[j][q] != NULL)
        continue;
      d->sbuf[j][q] = rs_alloc(l->chunk_bytes);
      if (d->sbuf[j][q] == NULL)
        return rs_fail(-ENOMEM, "rs: decode: out of memory for a rebuilt chunk");
    }
    work += (uint64_t)l->chunk_bytes * rs_popcount(st->out);
  }
  return rs_run(d->c, (size_t)d->ndirty * d->nslices,
                (size_t)l->g * d->c->slice, work, decode_task, d);
}

/* ---- blocks ------------------------------------------------------------------------------ */

/* Chunks of member i that block b overlaps. */
static uint32_t block_chunks(const struct rs_layout *l, unsigned i, size_t b)
{
  size_t a = b * KERN_BLOCK_SIZE, e = a + KERN_BLOCK_SIZE;
  uint32_t mask = 0;

  if (e > l->member_bytes[i])
    e = l->member_bytes[i];
  for (size_t c = a / l->chunk_bytes; c <= (e - 1) / l->chunk_bytes; c++)
    mask |= 1u << c;
  return mask;
}

/* Assembles member i's block CRCs from its slice CRCs and checks them. */
static void member_check(struct decode_call *d, unsigned i)
{
  const struct rs_layout *l = d->l;
  const uint32_t *crcs = d->mb[i].crcs;
  size_t S = l->member_bytes[i], pos = 0, blk = 0;
  uint32_t acc = CRC32C_SEED;

  for (unsigned c = 0; c < l->k; c++) {
    size_t v = rs_layout_chunk_valid(l, i, c);
    for (size_t s = 0; s < d->nslices && s * d->c->slice < v; s++) {
      const uint32_t *sg = &d->seg[i][((size_t)c * d->nslices + s) * 2];
      size_t off = s * d->c->slice, len = rs_slice_len(d->c, l, s);
      size_t n = v - off < len ? v - off : len;
      size_t n0 = KERN_BLOCK_SIZE - pos % KERN_BLOCK_SIZE;

      if (n0 > n)
        n0 = n;
      acc = crc32c_shift(acc, n0 == d->c->slice ? d->slice_op
                                                   : crc32c_shift_op(n0)) ^
            sg[0];
      pos += n0;
      if (pos % KERN_BLOCK_SIZE == 0 || pos == S) {
        d->bad[i][blk] = acc != crcs[blk];
        blk++;
        acc = CRC32C_SEED;
      }
      if (n > n0) {
        /* Starts on a boundary and is shorter than a block. */
        acc = crc32c_shift(acc, crc32c_shift_op(n - n0)) ^ sg[1];
        pos += n - n0;
        if (pos == S) {
          d->bad[i][blk] = acc != crcs[blk];
          blk++;
        }
      }
    }
  }
}

static bool member_is_dirty(const struct decode_call *d, uint32_t dirty_mask,
                            unsigned i)
{
  for (unsigned c = 0; c < d->l->k; c++)
    if (dirty_mask & (1u << rs_layout_chunk_stripe(d->l, i, c)))
      return true;
  return false;
}

/* Survivor blocks that failed turn their chunks suspect. Returns the stripes
 * that gained a suspect piece. */
static uint32_t suspects_mark(struct decode_call *d, uint32_t *corrupt)
{
  const struct rs_layout *l = d->l;
  uint32_t replan = 0;

  for (unsigned i = 0; i < l->g; i++) {
    if (!(d->checked & (1u << i)) || (d->lost & (1u << i)))
      continue;
    for (size_t b = 0; b < kern_nblocks(l->member_bytes[i]); b++) {
      uint32_t chunks;
      if (!d->bad[i][b])
        continue;
      *corrupt |= 1u << i;
      chunks = block_chunks(l, i, b);
      for (unsigned c = 0; c < l->k; c++) {
        unsigned j = rs_layout_chunk_stripe(l, i, c);
        if ((chunks & (1u << c)) && !(d->st[j].suspect & (1u << c))) {
          d->st[j].suspect |= 1u << c;
          replan |= 1u << j;
        }
      }
    }
  }
  return replan;
}

/* Stripes to blame for the failures of this round; -1 (and a message) when a
 * failing block cannot be blamed on any stripe that could decode otherwise. */
static int64_t failures_blame(const struct decode_call *d)
{
  const struct rs_layout *l = d->l;
  uint32_t blame = 0;

  for (unsigned j = 0; j < l->g; j++)
    if (atomic_load(&d->pad_bad[j]))
      blame |= 1u << j;
  for (unsigned i = 0; i < l->g; i++) {
    bool lost = d->lost & (1u << i);
    if (!(d->checked & (1u << i)))
      continue;
    for (size_t b = 0; b < kern_nblocks(l->member_bytes[i]); b++) {
      uint32_t chunks, mine = 0;
      if (!d->bad[i][b])
        continue;
      chunks = block_chunks(l, i, b);
      for (unsigned c = 0; c < l->k; c++) {
        unsigned j = rs_layout_chunk_stripe(l, i, c);
        if ((chunks & (1u << c)) && (lost || (d->st[j].suspect & (1u << c))))
          mine |= 1u << j;
      }
      if (mine == 0) {
        rs_fail(PT_ECHECKSUM,
                "rs: decode: block %zu of member %u fails its checksum and no "
                "other source combination can change it",
                b, i);
        return -1;
      }
      blame |= mine;
    }
  }
  return blame;
}

static void repair(struct decode_call *d, uint32_t *repaired)
{
  const struct rs_layout *l = d->l;

  for (unsigned j = 0; j < l->g; j++) {
    uint32_t rebuilt = d->st[j].suspect & d->st[j].out;
    for (unsigned q = 0; q < l->k; q++) {
      unsigned i = rs_layout_piece_member(l, j, q);
      if (!(rebuilt & (1u << q)))
        continue;
      memcpy((unsigned char *)d->mb[i].data + (size_t)q * l->chunk_bytes,
             d->sbuf[j][q], rs_layout_chunk_valid(l, i, q));
      *repaired |= 1u << i;
    }
  }
}

static int decode_rounds(struct decode_call *d, struct rs_decode_report *rep)
{
  const struct rs_layout *l = d->l;
  int rc;

  for (unsigned round = 1;; round++) {
    uint32_t dirty_mask = 0, replan;
    int64_t blame;

    rep->rounds = round;
    if (round > 1)
      rep->retries += d->ndirty;
    rc = decode_dirty(d);
    if (rc < 0)
      return rc;
    for (unsigned n = 0; n < d->ndirty; n++)
      dirty_mask |= 1u << d->dirty[n];
    for (unsigned i = 0; i < l->g; i++)
      if ((d->checked & (1u << i)) && member_is_dirty(d, dirty_mask, i))
        member_check(d, i);

    replan = suspects_mark(d, &rep->corrupt_members);
    if (replan != 0) {
      d->ndirty = 0;
      for (unsigned j = 0; j < l->g; j++) {
        if (!(replan & (1u << j)))
          continue;
        rc = stripe_plan(d, j);
        if (rc < 0)
          return rc;
        d->dirty[d->ndirty++] = j;
      }
    } else {
      blame = failures_blame(d);
      if (blame < 0)
        return PT_ECHECKSUM;
      if (blame == 0)
        return 0;
      if (!stripes_advance(d, (uint32_t)blame))
        return rs_fail(PT_ECHECKSUM,
                       "rs: decode: every combination of surviving pieces of "
                       "stripes 0x%x was tried and none verifies",
                       (uint32_t)blame);
    }
    if (round >= DECODE_MAX_ROUNDS)
      return rs_fail(PT_ECHECKSUM,
                     "rs: decode: rebuilt data still fails its checksums "
                     "after %u rounds",
                     round);
  }
}

/* ---- entry ------------------------------------------------------------------------------- */

static int decode_args(const struct rs_coder *c, const struct rs_layout *l,
                       const struct rs_member *mb, uint32_t lost, unsigned flags)
{
  int rc = rs_group_check(c, l, mb, "decode");

  if (rc < 0)
    return rc;
  if (l->g < 32 && (lost >> l->g) != 0)
    return rs_fail(-EINVAL, "rs: decode: lost set 0x%x names members beyond %u",
                   lost, l->g - 1);
  if (flags & ~(unsigned)RS_DECODE_REPAIR)
    return rs_fail(-EINVAL, "rs: decode: unknown flags 0x%x", flags);
  if (rs_popcount(lost) > l->m)
    return rs_fail(PT_ENOFRAG,
                   "rs: decode: %u members lost, a %u+%u code rebuilds at most %u",
                   rs_popcount(lost), l->k, l->m, l->m);
  for (unsigned i = 0; i < l->g; i++) {
    if (mb[i].bytes == 0)
      continue;
    if (mb[i].data == NULL)
      return rs_fail(-EINVAL, "rs: decode: member %u has no data buffer", i);
    if ((lost & (1u << i)) && mb[i].crcs == NULL)
      return rs_fail(-EINVAL,
                     "rs: decode: lost member %u has no checksum table to "
                     "verify its rebuild",
                     i);
  }
  return 0;
}

int rs_group_decode(struct rs_coder *c, const struct rs_layout *l,
                    const struct rs_member *members, uint32_t lost,
                    unsigned flags, struct rs_decode_report *rep)
{
  struct rs_decode_report dummy;
  struct decode_call *d;
  int rc;

  if (rep == NULL)
    rep = &dummy;
  memset(rep, 0, sizeof(*rep));
  rc = decode_args(c, l, members, lost, flags);
  if (rc < 0)
    return rc;
  d = calloc(1, sizeof(*d));
  if (d == NULL)
    return rs_fail(-ENOMEM, "rs: decode: out of memory");
  d->c = c;
  d->l = l;
  d->mb = members;
  d->lost = lost;
  d->nslices = (l->chunk_bytes + c->slice - 1) / c->slice;
  d->slice_op = crc32c_shift_op(c->slice);
  for (unsigned i = 0; i < l->g; i++) {
    size_t nb = kern_nblocks(l->member_bytes[i]);
    if (nb == 0 || members[i].crcs == NULL)
      continue;
    d->checked |= 1u << i;
    d->seg[i] = calloc((size_t)l->k * d->nslices * 2, sizeof(uint32_t));
    d->bad[i] = calloc(nb, 1);
    if (d->seg[i] == NULL || d->bad[i] == NULL) {
      rc = rs_fail(-ENOMEM, "rs: decode: out of memory");
      goto out_free;
    }
  }

  /* Every stripe goes through round 1: decoded when it has outputs,
   * checksummed in any case. A stripe short of pieces fails here, before
   * anything is written. */
  for (unsigned j = 0; j < l->g; j++) {
    struct stripe_state *st = &d->st[j];
    for (unsigned q = 0; q < l->g; q++) {
      unsigned i = rs_layout_piece_member(l, j, q);
      if (lost & (1u << i)) {
        if (q < l->k || members[i].parity != NULL)
          st->want |= 1u << q;
      } else if (q < l->k || members[i].parity != NULL) {
        st->present |= 1u << q;
      }
    }
    rc = stripe_plan(d, j);
    if (rc < 0)
      goto out_free;
    d->dirty[d->ndirty++] = j;
  }
  rc = decode_rounds(d, rep);
  if (rc < 0)
    goto out_free;
  for (unsigned j = 0; j < l->g; j++)
    rep->pieces_rebuilt += rs_popcount(d->st[j].out);
  if (flags & RS_DECODE_REPAIR)
    repair(d, &rep->repaired_members);

out_free:
  for (unsigned j = 0; j < l->g; j++) {
    free(d->st[j].owned);
    for (unsigned q = 0; q < l->k; q++)
      free(d->sbuf[j][q]);
  }
  for (unsigned i = 0; i < l->g; i++) {
    free(d->seg[i]);
    free(d->bad[i]);
  }
  free(d);
  return rc;
}
