/*
 * test_smp_protect.c — the protection engine (daemon/smp/smp_protect.h)
 * with every member of a coding group in one process: G = k + m engines,
 * members of different sizes, every chunk and acknowledgement delivered in
 * a seeded random order, two steps in flight at once in two slots, some
 * chunks first delivered damaged. Then
 * every holder's parity must equal rs_group_encode over the same data, and
 * rs_group_decode must rebuild every set of m lost members bit-exact from
 * the others' data and the parity the engines folded. Hostile chunks and
 * acknowledgements are each refused with their own code, nothing folded.
 * Last, the engine on snapshot objects made as a coded SMP makes them: a
 * pinned slot becomes PROTECTED once protected, and a group with a larger
 * member is refused.
 */
#include <check.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "daemon/smp/smp_protect.h"
#include "snapshot/snap_store.h"
#include "tests/unit/test_ec_fixture.h"
#include "tests/unit/unit.h"

#define NSLOTS 2u

/* One chunk in flight, or its acknowledgement. */
struct msg {
  struct smp_protect_send s;
};

struct group {
  unsigned k, m, g;
  struct smp_protect *e[RS_MAX_MEMBERS];
  uint8_t *parity[NSLOTS][RS_MAX_MEMBERS]; /* each member's, per slot */
};

static void group_init(struct group *gr, unsigned k, unsigned m,
                       const size_t *sizes)
{
  char err[256] = "";
  struct rs_coder_opts o = {.threads = 1, .slice_bytes = 4096};

  memset(gr, 0, sizeof(*gr));
  gr->k = k;
  gr->m = m;
  gr->g = k + m;
  for (unsigned i = 0; i < gr->g; i++) {
    ck_assert_msg(smp_protect_new(&gr->e[i], k, m, i, sizes, NSLOTS, &o, err,
                                  sizeof(err)) == 0, "%s", err);
    size_t pb = smp_protect_layout(gr->e[i])->parity_bytes;
    for (unsigned s = 0; s < NSLOTS; s++) {
      gr->parity[s][i] = xalloc(pb);
      memset(gr->parity[s][i], 0xEE, pb); /* every byte must be written */
    }
  }
}

static void group_free(struct group *gr)
{
  for (unsigned i = 0; i < gr->g; i++) {
    smp_protect_free(gr->e[i]);
    for (unsigned s = 0; s < NSLOTS; s++)
      free(gr->parity[s][i]);
  }
}

/* Every member begins step in slot and lists its sends from f's data.
 * OUT: q (appended at *n). */
static void group_begin(struct group *gr, const struct fx *f, uint32_t slot,
                        uint64_t step, struct msg *q, size_t *n)
{
  struct smp_protect_send sends[SMP_PROTECT_MAX_SENDS];
  for (unsigned i = 0; i < gr->g; i++) {
    const struct rs_layout *l = smp_protect_layout(gr->e[i]);
    ck_assert_int_eq(smp_protect_begin(gr->e[i], slot, step,
                                       gr->parity[slot][i], l->parity_bytes),
                     0);
    int ns = smp_protect_sends(gr->e[i], slot, f->data[i], l->member_bytes[i],
                               sends);
    ck_assert_int_eq(ns, (int)(gr->k * gr->m));
    for (int j = 0; j < ns; j++) {
      ck_assert_uint_eq(sends[j].hdr.from, i);
      ck_assert_uint_eq(sends[j].hdr.step, step);
      ck_assert_uint_ne(sends[j].to, i);
      q[(*n)++].s = sends[j];
    }
  }
}

static void shuffle(struct msg *q, size_t n, uint64_t *rng)
{
  for (size_t i = n; i > 1; i--) {
    size_t j = rng_next(rng) % i;
    struct msg t = q[i - 1];
    q[i - 1] = q[j];
    q[j] = t;
  }
}

static bool all_done(const struct group *gr, uint32_t slot)
{
  for (unsigned i = 0; i < gr->g; i++)
    if (!smp_protect_done(gr->e[i], slot))
      return false;
  return true;
}

/* rs_group_decode of every set of m lost members from the survivors' data
 * and the parity the engines folded (slot), checked bit-exact. */
static void decode_all(struct fx *f, struct group *gr, uint32_t slot)
{
  unsigned tried = 0;
  for (uint32_t lost = 1; lost < (1u << f->g); lost++) {
    if ((unsigned)__builtin_popcount(lost) != f->m)
      continue;
    for (unsigned i = 0; i < f->g; i++) {
      size_t s = f->l.member_bytes[i];
      if (lost & (1u << i)) {
        memset(f->out_data[i], 0xA5, s);
        memset(f->out_par[i], 0x5A, f->l.parity_bytes);
        f->mb[i] = (struct rs_member){.data = f->out_data[i], .bytes = s,
                                      .parity = f->out_par[i],
                                      .crcs = f->crcs[i]};
      } else {
        memcpy(f->in_data[i], f->data[i], s);
        f->mb[i] = (struct rs_member){.data = f->in_data[i], .bytes = s,
                                      .parity = gr->parity[slot][i],
                                      .crcs = f->crcs[i]};
      }
    }
    struct rs_decode_report rep;
    int rc = rs_group_decode(f->c, &f->l, f->mb, lost, 0, &rep);
    ck_assert_msg(rc == 0, "%u+%u lost 0x%x: %s (%s)", f->k, f->m, lost,
                  pt_err_name(rc), rs_last_error());
    ck_assert_uint_eq(rep.corrupt_members, 0);
    fx_check_rebuilt(f, lost);
    tried++;
  }
  ck_assert_uint_gt(tried, 0);
}

/* A whole group protects two steps at once (slots 0 and 1), every chunk
 * and every acknowledgement of both delivered in one random order; an
 * acknowledgement is only delivered after its chunk was received. */
static void run_group(unsigned k, unsigned m, const size_t *sizes,
                      uint64_t seed)
{
  struct fx f[NSLOTS];
  struct group gr;
  size_t nmax = 2 * (size_t)(k + m) * k * m;
  struct msg *q = calloc(nmax, sizeof(*q));
  struct msg *acks = calloc(nmax, sizeof(*acks));
  size_t nq = 0, nacks = 0;
  uint64_t rng = seed * 2654435761u + 7;

  ck_assert_ptr_nonnull(q);
  ck_assert_ptr_nonnull(acks);
  for (unsigned s = 0; s < NSLOTS; s++)
    fx_init(&f[s], k, m, sizes, 1, 0, seed * 10 + s);
  group_init(&gr, k, m, sizes);
  ck_assert_uint_eq(smp_protect_layout(gr.e[0])->chunk_bytes,
                    f[0].l.chunk_bytes);
  group_begin(&gr, &f[0], 0, 100 + seed, q, &nq);
  group_begin(&gr, &f[1], 1, 101 + seed, q, &nq);
  ck_assert_uint_eq(nq, nmax);
  shuffle(q, nq, &rng);

  size_t next = 0, done_at = 0;
  while (next < nq || nacks > 0) {
    ck_assert(!all_done(&gr, 0) || !all_done(&gr, 1));
    /* a chunk or, as often, one of the acknowledgements owed */
    if (next < nq && (nacks == 0 || rng_next(&rng) % 2 == 0)) {
      const struct smp_protect_send *s = &q[next++].s;
      if (next % 5 == 1 && s->hdr.valid > 0) {
        /* first a copy damaged in its last byte (past the first slices of
         * a large chunk): refused, and the final parity shows that it was
         * taken out again */
        uint8_t *bad = xalloc(s->hdr.valid);
        memcpy(bad, s->bytes, s->hdr.valid);
        bad[s->hdr.valid - 1] ^= 0x01;
        ck_assert_int_eq(smp_protect_receive(gr.e[s->to], &s->hdr, bad),
                         PT_ECHECKSUM);
        free(bad);
      }
      int rc = smp_protect_receive(gr.e[s->to], &s->hdr, s->bytes);
      ck_assert_msg(rc == 0, "%s: %s", pt_err_name(rc),
                    smp_protect_error(gr.e[s->to]));
      acks[nacks++] = q[next - 1];
    } else {
      size_t j = rng_next(&rng) % nacks;
      const struct smp_protect_send *s = &acks[j].s;
      ck_assert_int_eq(smp_protect_ack(gr.e[s->hdr.from], s->hdr.step, s->to,
                                       s->hdr.chunk), 0);
      acks[j] = acks[--nacks];
    }
    done_at++;
  }
  ck_assert_uint_eq(done_at, 2 * nq);
  for (unsigned slot = 0; slot < NSLOTS; slot++) {
    for (unsigned i = 0; i < gr.g; i++) {
      struct smp_protect_status st;
      smp_protect_status(gr.e[i], slot, &st);
      ck_assert(st.done);
      ck_assert_uint_eq(st.nacked, k * m);
      ck_assert_uint_eq(st.nreceived, k * m);
      ck_assert_uint_eq(st.nrows_done, m);
      ck_assert_msg(memcmp(gr.parity[slot][i], f[slot].par[i],
                           f[slot].l.parity_bytes) == 0,
                    "%u+%u slot %u: member %u's parity differs from "
                    "rs_group_encode", k, m, slot, i);
    }
    decode_all(&f[slot], &gr, slot);
  }
  group_free(&gr);
  for (unsigned s = 0; s < NSLOTS; s++)
    fx_free(&f[s]);
  free(q);
  free(acks);
}

/* A whole group protects one step with every chunk moved in pieces of
 * random sizes (multiples of 64 but the last), the pieces of all chunks to
 * all holders interleaved at random, as a transport with one connection
 * per pair delivers them. Pieces repeated or skipped ahead are refused on
 * the way and change nothing. Then the parity equals rs_group_encode's and
 * every m lost members rebuild. */
static void run_group_pieces(unsigned k, unsigned m, const size_t *sizes,
                             uint64_t seed)
{
  struct fx f;
  struct group gr;
  struct smp_protect_send sends[RS_MAX_MEMBERS][SMP_PROTECT_MAX_SENDS];
  uint64_t done[RS_MAX_MEMBERS][SMP_PROTECT_MAX_SENDS];
  bool whole[RS_MAX_MEMBERS][SMP_PROTECT_MAX_SENDS];
  uint64_t rng = seed * 40503u + 11;
  unsigned g = k + m, ns = k * m, left = g * ns;

  fx_init(&f, k, m, sizes, 1, 0, seed + 500);
  group_init(&gr, k, m, sizes);
  for (unsigned i = 0; i < g; i++) {
    const struct rs_layout *l = smp_protect_layout(gr.e[i]);
    ck_assert_int_eq(smp_protect_begin(gr.e[i], 0, 9, gr.parity[0][i],
                                       l->parity_bytes), 0);
    ck_assert_int_eq(smp_protect_plan(gr.e[i], 0, f.data[i],
                                      l->member_bytes[i], sends[i]),
                     (int)ns);
    for (unsigned j = 0; j < ns; j++) {
      ck_assert_uint_eq(sends[i][j].hdr.crc, 0); /* no CRC pass */
      done[i][j] = 0;
      whole[i][j] = false;
    }
  }
  unsigned refusals = 0;
  while (left > 0) {
    unsigned i = (unsigned)(rng_next(&rng) % g), j = (unsigned)(rng_next(&rng) % ns);
    const struct smp_protect_send *sd = &sends[i][j];
    if (whole[i][j])
      continue;
    uint64_t valid = sd->hdr.valid, off = done[i][j];
    uint64_t len = (1 + rng_next(&rng) % 48) * 64;
    if (len > valid - off)
      len = valid - off;
    struct smp_protect_piece pc = {
        .step = sd->hdr.step, .stripe = sd->hdr.stripe,
        .parity_row = sd->hdr.parity_row, .from = sd->hdr.from,
        .chunk = sd->hdr.chunk, .offset = off, .len = len};
    const uint8_t *b = sd->bytes ? (const uint8_t *)sd->bytes + off : NULL;
    struct smp_protect *to = gr.e[sd->to];
    if (off > 0 && rng_next(&rng) % 4 == 0) { /* the previous piece again */
      struct smp_protect_piece again = pc;
      again.offset = off - 64;
      again.len = 64;
      ck_assert_int_eq(smp_protect_receive_piece(to, &again, b - 64),
                       -EALREADY);
      refusals++;
    }
    if (len > 64 && off + len < valid && rng_next(&rng) % 4 == 0) {
      struct smp_protect_piece ahead = pc; /* one skipped */
      ahead.offset = off + 64;
      ahead.len = 64;
      ck_assert_int_eq(smp_protect_receive_piece(to, &ahead, b + 64),
                       PT_EPROTO);
      refusals++;
    }
    int rc = smp_protect_receive_piece(to, &pc, b);
    ck_assert_msg(rc == 0, "%s: %s", pt_err_name(rc), smp_protect_error(to));
    done[i][j] += len;
    if (done[i][j] == valid) {
      whole[i][j] = true;
      left--;
      ck_assert_int_eq(smp_protect_ack(gr.e[i], 9, sd->to, sd->hdr.chunk), 0);
      /* the chunk is in: any piece of it more is refused */
      ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), -EALREADY);
    }
  }
  ck_assert_uint_gt(refusals, 0);
  for (unsigned i = 0; i < g; i++) {
    ck_assert(smp_protect_done(gr.e[i], 0));
    ck_assert_msg(memcmp(gr.parity[0][i], f.par[i], f.l.parity_bytes) == 0,
                  "%u+%u in pieces: member %u's parity differs from "
                  "rs_group_encode", k, m, i);
  }
  decode_all(&f, &gr, 0);
  group_free(&gr);
  fx_free(&f);
}

START_TEST(group_pieces)
{
  const size_t s21[] = {300001, 299937, 150007};
  const size_t s42[] = {(1u << 20) + 4099, 0, 1000, 777777, (1u << 20) + 5,
                        65};
  for (uint64_t seed = 1; seed <= 3; seed++) {
    run_group_pieces(2, 1, s21, seed);
    run_group_pieces(4, 2, s42, seed);
  }
}
END_TEST

/* Pieces that do not fit the chunk: each refused, nothing folded. */
START_TEST(hostile_pieces)
{
  const size_t sizes[] = {5000, 4100, 4097};
  struct fx f;
  struct group gr;
  struct smp_protect_send sends[SMP_PROTECT_MAX_SENDS];

  fx_init(&f, 2, 1, sizes, 1, 0, 77);
  group_init(&gr, 2, 1, sizes);
  const struct rs_layout *l = smp_protect_layout(gr.e[0]);
  for (unsigned i = 0; i < 3; i++)
    ck_assert_int_eq(smp_protect_begin(gr.e[i], 0, 3, gr.parity[0][i],
                                       l->parity_bytes), 0);
  ck_assert_int_eq(smp_protect_plan(gr.e[0], 0, f.data[0], sizes[0], sends),
                   2);
  const struct smp_protect_send *sd = &sends[0];
  struct smp_protect *to = gr.e[sd->to];
  struct smp_protect_piece pc = {
      .step = 3, .stripe = sd->hdr.stripe, .parity_row = sd->hdr.parity_row,
      .from = 0, .chunk = sd->hdr.chunk, .offset = 0, .len = 100};
  const uint8_t *b = sd->bytes;
  ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), PT_EPROTO);
  pc.len = sd->hdr.valid + 64;
  ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), -EMSGSIZE);
  pc.len = 0;
  ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), -EMSGSIZE);
  pc.len = 64;
  pc.step = 4;
  ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), -ENOENT);
  pc.step = 3;
  pc.from = 1; /* not the sender of that row */
  ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), PT_EPROTO);
  pc.from = 0;
  ck_assert_int_eq(smp_protect_receive_piece(to, &pc, b), 0);
  /* a piece begun: the chunk is not taken whole any more */
  struct smp_protect_send w;
  struct smp_protect_send full[SMP_PROTECT_MAX_SENDS];
  ck_assert_int_eq(smp_protect_sends(gr.e[0], 0, f.data[0], sizes[0], full),
                   2);
  w = full[0];
  ck_assert_int_eq(smp_protect_receive(to, &w.hdr, w.bytes), -EALREADY);
  struct smp_protect_status st;
  smp_protect_status(to, 0, &st);
  ck_assert_uint_eq(st.nreceived, 0);
  group_free(&gr);
  fx_free(&f);
}
END_TEST

/* 2+1: sizes differ, none a multiple of 64; the smallest leaves a chunk
 * partly and one wholly padding. */
START_TEST(group_2_1)
{
  const size_t sizes[] = {300001, 299937, 150007};
  for (uint64_t seed = 1; seed <= 4; seed++)
    run_group(2, 1, sizes, seed);
}
END_TEST

/* 4+2 with an empty member, one shorter than a chunk, and one over a
 * block (the CRC tables of rs_group_decode have several blocks). */
START_TEST(group_4_2)
{
  const size_t sizes[] = {(1u << 20) + 4099, 0, 1000, 777777, (1u << 20) + 5,
                          65};
  for (uint64_t seed = 1; seed <= 3; seed++)
    run_group(4, 2, sizes, seed);
}
END_TEST

/* ---- hostile input ---- */

/* Every member of a 2+1 group begins step 5 in slot 0; OUT: all sends. */
struct hostile {
  struct fx f;
  struct group gr;
  struct msg q[64];
  size_t nq;
};

static void hostile_init(struct hostile *h, const size_t *sizes)
{
  memset(h, 0, sizeof(*h));
  fx_init(&h->f, 2, 1, sizes, 1, 0, 42);
  group_init(&h->gr, 2, 1, sizes);
  group_begin(&h->gr, &h->f, 0, 5, h->q, &h->nq);
}

static void hostile_free(struct hostile *h)
{
  group_free(&h->gr);
  fx_free(&h->f);
}

/* Refused with want, nothing counted, nothing folded. */
static void refused(struct hostile *h, unsigned to,
                    const struct smp_protect_chunk *c, const void *bytes,
                    int want, const char *what)
{
  struct smp_protect_status before, after;
  size_t pb = h->f.l.parity_bytes;
  uint8_t *copy = xalloc(pb);

  memcpy(copy, h->gr.parity[0][to], pb);
  smp_protect_status(h->gr.e[to], 0, &before);
  int rc = smp_protect_receive(h->gr.e[to], c, bytes);
  ck_assert_msg(rc == want, "%s: %s (%d), not %s: %s", what, pt_err_name(rc),
                rc, pt_err_name(want), smp_protect_error(h->gr.e[to]));
  ck_assert_msg(smp_protect_error(h->gr.e[to])[0] != '\0', "%s: no sentence",
                what);
  smp_protect_status(h->gr.e[to], 0, &after);
  ck_assert_uint_eq(after.nreceived, before.nreceived);
  ck_assert_uint_eq(after.nrows_done, before.nrows_done);
  ck_assert_msg(memcmp(copy, h->gr.parity[0][to], pb) == 0,
                "%s: the parity changed", what);
  free(copy);
}

START_TEST(hostile_chunks)
{
  const size_t sizes[] = {5000, 4100, 4097};
  struct hostile h;
  hostile_init(&h, sizes);

  /* the first send of member 1 with bytes, and where it goes */
  const struct smp_protect_send *s = NULL;
  for (size_t i = 0; i < h.nq && s == NULL; i++)
    if (h.q[i].s.hdr.from == 1 && h.q[i].s.hdr.valid > 64)
      s = &h.q[i].s;
  ck_assert_ptr_nonnull(s);
  unsigned to = s->to;
  size_t pb = h.f.l.parity_bytes;

  struct smp_protect_chunk c = s->hdr;
  c.step = 6;
  refused(&h, to, &c, s->bytes, -ENOENT, "another step");
  c = s->hdr;
  c.stripe = (s->hdr.stripe + 1) % 3;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "a stripe it keeps no row of");
  c.stripe = 3;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "a stripe out of range");
  c = s->hdr;
  c.parity_row = 1;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "a parity row out of range");
  c = s->hdr;
  c.from = to;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "a sender not owning the row");
  c.from = 99;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "a sender out of range");
  c = s->hdr;
  c.chunk = (s->hdr.chunk + 1) % 2;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "another data row");
  c.chunk = 2;
  refused(&h, to, &c, s->bytes, PT_EPROTO, "a chunk out of range");
  c = s->hdr;
  c.valid = s->hdr.valid + 1;
  refused(&h, to, &c, s->bytes, -EMSGSIZE, "one byte too many");
  c.valid = UINT64_MAX;
  refused(&h, to, &c, s->bytes, -EMSGSIZE, "an absurd length");
  c.valid = s->hdr.valid - 1;
  refused(&h, to, &c, s->bytes, -EMSGSIZE, "one byte short");
  c = s->hdr;
  c.crc ^= 1;
  refused(&h, to, &c, s->bytes, PT_ECHECKSUM, "a wrong CRC");
  uint8_t *bad = xalloc(s->hdr.valid);
  memcpy(bad, s->bytes, s->hdr.valid);
  bad[s->hdr.valid / 2] ^= 0x10;
  refused(&h, to, &s->hdr, bad, PT_ECHECKSUM, "a flipped byte");
  free(bad);
  refused(&h, to, &s->hdr, NULL, -EINVAL, "no bytes");

  /* the true chunk is taken once; its duplicate changes nothing */
  ck_assert_int_eq(smp_protect_receive(h.gr.e[to], &s->hdr, s->bytes), 0);
  refused(&h, to, &s->hdr, s->bytes, -EALREADY, "a duplicate");

  /* acknowledgements: not before the sends of a step are made, not for a
   * step not protected, not from a member the chunk did not go to, once */
  unsigned from = s->hdr.from;
  ck_assert_int_eq(smp_protect_ack(h.gr.e[from], 6, to, s->hdr.chunk),
                   -ENOENT);
  ck_assert_int_eq(smp_protect_ack(h.gr.e[from], 5, from, s->hdr.chunk),
                   PT_EPROTO);
  ck_assert_int_eq(smp_protect_ack(h.gr.e[from], 5, to, 7), PT_EPROTO);
  ck_assert_int_eq(smp_protect_ack(h.gr.e[from], 5, to, s->hdr.chunk), 0);
  ck_assert_int_eq(smp_protect_ack(h.gr.e[from], 5, to, s->hdr.chunk),
                   -EALREADY);
  ck_assert_int_eq(smp_protect_begin(h.gr.e[from], 1, 9, h.gr.parity[1][from],
                                     pb), 0);
  ck_assert_int_eq(smp_protect_ack(h.gr.e[from], 9, to, 0), PT_ESTATE);

  /* the rest, each once: every member protected, parity as encoded, in
   * spite of everything refused on the way */
  for (size_t i = 0; i < h.nq; i++) {
    const struct smp_protect_send *x = &h.q[i].s;
    if (x == s)
      continue;
    ck_assert_int_eq(smp_protect_receive(h.gr.e[x->to], &x->hdr, x->bytes),
                     0);
    ck_assert_int_eq(smp_protect_ack(h.gr.e[x->hdr.from], 5, x->to,
                                     x->hdr.chunk), 0);
  }
  for (unsigned i = 0; i < 3; i++) {
    ck_assert(smp_protect_done(h.gr.e[i], 0));
    ck_assert(memcmp(h.gr.parity[0][i], h.f.par[i], pb) == 0);
  }
  ck_assert(!smp_protect_done(h.gr.e[from], 1));

  /* a new step in the slot starts its rows again; the old step's chunks
   * are refused from then on; a forgotten slot accepts nothing */
  ck_assert_int_eq(smp_protect_begin(h.gr.e[to], 0, 6, h.gr.parity[0][to],
                                     pb), 0);
  ck_assert(!smp_protect_done(h.gr.e[to], 0));
  refused(&h, to, &s->hdr, s->bytes, -ENOENT, "a step the slot left");
  smp_protect_forget(h.gr.e[to], 0);
  c = s->hdr;
  c.step = 6;
  ck_assert_int_eq(smp_protect_receive(h.gr.e[to], &c, s->bytes), -ENOENT);
  uint32_t slot;
  ck_assert_int_eq(smp_protect_find(h.gr.e[to], 6, &slot), -ENOENT);

  /* an area smaller than the layout's rows, and sends of the wrong size */
  ck_assert_int_eq(smp_protect_begin(h.gr.e[to], 0, 7, h.gr.parity[0][to],
                                     pb - 64), PT_ECONFIG);
  ck_assert_ptr_nonnull(strstr(smp_protect_error(h.gr.e[to]), "needs"));
  struct smp_protect_send out[SMP_PROTECT_MAX_SENDS];
  ck_assert_int_eq(smp_protect_sends(h.gr.e[to], 0, h.f.data[to], sizes[to],
                                     out), PT_ESTATE);
  ck_assert_int_eq(smp_protect_begin(h.gr.e[to], 0, 7, h.gr.parity[0][to],
                                     pb), 0);
  ck_assert_int_eq(smp_protect_sends(h.gr.e[to], 0, h.f.data[to],
                                     sizes[to] + 1, out), -EINVAL);
  hostile_free(&h);
}
END_TEST

/* Sends carry each chunk's CRC32C over its valid bytes only, and no bytes
 * for a chunk that is all padding. */
START_TEST(send_list)
{
  const size_t sizes[] = {200, 64, 0};
  struct hostile h;
  hostile_init(&h, sizes);
  const struct rs_layout *l = &h.f.l;
  ck_assert_uint_eq(l->chunk_bytes, 128);
  unsigned seen = 0;
  for (size_t i = 0; i < h.nq; i++) {
    const struct smp_protect_send *s = &h.q[i].s;
    size_t want = rs_layout_chunk_valid(l, s->hdr.from, s->hdr.chunk);
    ck_assert_uint_eq(s->hdr.valid, want);
    if (want == 0) {
      ck_assert_ptr_null(s->bytes);
      ck_assert_uint_eq(s->hdr.crc, CRC32C_SEED);
    } else {
      ck_assert_ptr_eq(s->bytes, h.f.data[s->hdr.from] +
                                     (size_t)s->hdr.chunk * l->chunk_bytes);
      ck_assert_uint_eq(s->hdr.crc, crc_ref(s->bytes, want));
    }
    ck_assert_uint_eq(s->hdr.stripe, rs_layout_chunk_stripe(l, s->hdr.from,
                                                            s->hdr.chunk));
    seen |= 1u << (s->hdr.from * 2 + s->hdr.chunk);
  }
  ck_assert_uint_eq(seen, 0x3f);
  hostile_free(&h);
}
END_TEST

/* ---- on snapshot objects ---- */

static char g_prefix[64];

/* A 2+1 object as a coded SMP makes it, with one region of bytes. */
static struct snap_store *store_make(unsigned rank, uint64_t bytes)
{
  struct snap_region_desc d;
  struct snap_store *s = NULL;
  char name[128], err[256] = "";

  memset(&d, 0, sizeof(d));
  snprintf(d.name, sizeof(d.name), "w");
  d.bytes = bytes;
  struct snap_params p = {.job = "protect", .rank = rank, .world = 3,
                          .nslots = NSLOTS, .regions = &d, .nregions = 1,
                          .ec_k = 2, .ec_m = 1};
  ck_assert_int_eq(snap_store_name(name, sizeof(name), g_prefix, "protect",
                                   rank), 0);
  snap_store_unlink(name);
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s",
                err);
  snap_store_unlink(name); /* the mapping is all this test needs */
  return s;
}

/* Step 3 sealed in a slot of s, filled with seeded bytes. OUT: slot. */
static uint32_t store_seal(struct snap_store *s, uint64_t seed)
{
  uint32_t slot;
  uint64_t gen;
  ck_assert_int_eq(snap_slot_acquire(s, 3, &slot, &gen), 0);
  fill_random(snap_slot_data(s, slot), snap_store_slot_bytes(s), seed);
  uint32_t *crcs = snap_slot_crcs(s, slot);
  const struct snap_region *r = snap_store_region(s, 0);
  ck_assert_uint_eq(r->nblocks, 1);
  crcs[0] = crc32c((uint8_t *)snap_slot_data(s, slot) + r->offset, r->bytes);
  crcs[snap_store_nblocks(s)] = 0;
  crcs[snap_store_nblocks(s) + 1] = CRC32C_SEED;
  ck_assert_int_eq(snap_slot_seal(s, slot, gen, 3), 0);
  return slot;
}

START_TEST(on_store)
{
  struct snap_store *st[3];
  struct smp_protect *e[3];
  size_t sizes[3];
  uint32_t slot[3];
  char err[256];

  for (unsigned i = 0; i < 3; i++) {
    st[i] = store_make(i, 100000 + i); /* within one chunk's rounding */
    sizes[i] = (size_t)snap_store_slot_bytes(st[i]);
  }
  /* a committed step's slot, a FREE one, a step the slot does not hold:
   * refused, nothing zeroed; a WRITING slot is begun, but not sent from */
  ck_assert_int_eq(smp_protect_new(&e[0], 2, 1, 0, sizes, NSLOTS, NULL, err,
                                   sizeof(err)), 0);
  uint32_t cs, ws;
  uint64_t gen;
  ck_assert_int_eq(snap_slot_acquire(st[0], 2, &cs, &gen), 0);
  ck_assert_int_eq(snap_slot_seal(st[0], cs, gen, 2), 0);
  ck_assert_int_eq(snap_slot_commit(st[0], 2), 0);
  uint64_t plen;
  uint8_t *cpar = snap_store_parity(st[0], cs, &plen);
  memset(cpar, 0x77, plen);
  ck_assert_int_eq(smp_protect_begin_store(e[0], st[0], cs, 2), PT_ESTATE);
  ck_assert_msg(strstr(smp_protect_error(e[0]), "COMMITTED") != NULL, "%s",
                smp_protect_error(e[0]));
  ck_assert_int_eq(smp_protect_begin_store(e[0], st[0], 1 - cs, 3), PT_ESTATE);
  for (uint64_t i = 0; i < plen; i++)
    ck_assert_uint_eq(cpar[i], 0x77);
  ck_assert_int_eq(snap_slot_acquire(st[0], 3, &ws, &gen), 0);
  ck_assert_uint_ne(ws, cs);
  ck_assert_int_eq(smp_protect_begin_store(e[0], st[0], ws, 4), PT_ESTATE);
  ck_assert_int_eq(smp_protect_begin_store(e[0], st[0], ws, 3), 0);
  struct smp_protect_send early[SMP_PROTECT_MAX_SENDS];
  ck_assert_int_eq(smp_protect_sends_store(e[0], st[0], ws, early), PT_ESTATE);
  ck_assert_int_eq(snap_slot_abort(st[0], ws, gen), 0);
  smp_protect_free(e[0]);

  for (unsigned i = 0; i < 3; i++) {
    slot[i] = store_seal(st[i], 7 + i);
    ck_assert_int_eq(smp_protect_new(&e[i], 2, 1, i, sizes, NSLOTS, NULL, err,
                                     sizeof(err)), 0);
    memset(snap_store_parity(st[i], slot[i], NULL), 0xCC,
           smp_protect_layout(e[i])->parity_bytes);
    ck_assert_int_eq(smp_protect_begin_store(e[i], st[i], slot[i], 3), 0);
  }
  struct smp_protect_send out[3][SMP_PROTECT_MAX_SENDS];
  for (unsigned i = 0; i < 3; i++)
    ck_assert_int_eq(smp_protect_sends_store(e[i], st[i], slot[i], out[i]), 2);
  for (unsigned i = 0; i < 3; i++) {
    for (unsigned j = 0; j < 2; j++) {
      const struct smp_protect_send *x = &out[i][j];
      ck_assert_int_eq(smp_protect_receive(e[x->to], &x->hdr, x->bytes), 0);
      /* not protected before every acknowledgement */
      ck_assert_int_eq(smp_protect_mark(e[i], st[i], slot[i]), PT_ESTATE);
      ck_assert_int_eq(smp_protect_ack(e[i], 3, x->to, x->hdr.chunk), 0);
    }
  }
  /* reference: rs_group_encode over the slots' data */
  struct rs_coder *c;
  struct rs_layout l;
  struct rs_member mb[3];
  uint8_t *ref[3];
  ck_assert_int_eq(rs_layout_init(&l, 2, 1, sizes, 3), 0);
  ck_assert_int_eq(rs_coder_new(&c, 2, 1, NULL), 0);
  for (unsigned i = 0; i < 3; i++) {
    ref[i] = xalloc(l.parity_bytes);
    mb[i] = (struct rs_member){.data = snap_slot_data(st[i], slot[i]),
                               .bytes = sizes[i], .parity = ref[i]};
  }
  ck_assert_int_eq(rs_group_encode(c, &l, mb), 0);
  for (unsigned i = 0; i < 3; i++) {
    ck_assert(smp_protect_done(e[i], slot[i]));
    ck_assert(memcmp(snap_store_parity(st[i], slot[i], NULL), ref[i],
                     l.parity_bytes) == 0);
    /* SEALED: the commit's pin first */
    ck_assert_int_eq(smp_protect_mark(e[i], st[i], slot[i]), PT_ESTATE);
    ck_assert_int_eq(snap_slot_pin(st[i], 3), 0);
    ck_assert_int_eq(smp_protect_mark(e[i], st[i], slot[i]), 0);
    struct snap_slot_info info;
    snap_slot_get(st[i], slot[i], &info);
    ck_assert_uint_eq(info.state, SNAP_PROTECTED);
    ck_assert_int_eq(snap_slot_verify(st[i], slot[i], NULL), 0);
    smp_protect_free(e[i]);
    free(ref[i]);
  }
  rs_coder_free(c);

  /* a peer whose chunk is larger than this object's parity chunk */
  size_t big[3] = {sizes[0], sizes[1] + 4096, sizes[2]};
  ck_assert_int_eq(smp_protect_new(&e[0], 2, 1, 0, big, NSLOTS, NULL, err,
                                   sizeof(err)), 0);
  ck_assert_int_eq(smp_protect_begin_store(e[0], st[0], slot[0], 3),
                   PT_ECONFIG);
  ck_assert_msg(strstr(smp_protect_error(e[0]), "layout needs") != NULL, "%s",
                smp_protect_error(e[0]));
  ck_assert_int_eq(smp_protect_find(e[0], 3, NULL), -ENOENT);
  smp_protect_free(e[0]);
  for (unsigned i = 0; i < 3; i++)
    snap_store_close(st[i]);
}
END_TEST

int main(void)
{
  crc_init(); /* the fixture's independent CRC32C */
  snprintf(g_prefix, sizeof(g_prefix), "tprot%d-", (int)getpid());
  Suite *s = suite_create("smp_protect");
  TCase *tc = tcase_create("protect");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, group_2_1);
  tcase_add_test(tc, group_4_2);
  tcase_add_test(tc, hostile_chunks);
  tcase_add_test(tc, group_pieces);
  tcase_add_test(tc, hostile_pieces);
  tcase_add_test(tc, send_list);
  tcase_add_test(tc, on_store);
  suite_add_tcase(s, tc);
  int rc = unit_run(s);
  unit_shm_sweep("%s", g_prefix);
  return rc;
}
