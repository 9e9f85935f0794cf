/*
 * smp_rebuild.c — the rebuild of a lost member from its group's survivors
 * (smp_rebuild.h): the slices to fetch, and their decode.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "daemon/smp/smp_rebuild.h"

#define REBUILD_SLICE_DEFAULT ((size_t)4 << 20)
#define REBUILD_WINDOW_DEFAULT 2u
#define REBUILD_WINDOW_MAX 8u

/* One lost chunk: data chunk `chunk` of the lost member, position lost_pos
 * of stripe `stripe`, rebuilt from the plan's sources. */
struct item {
  unsigned stripe, chunk, lost_pos;
  size_t valid;       /* its bytes in the lost member's data */
  size_t span;        /* valid rounded up to RS_ALIGN: what is decoded */
};

/* A slice in flight. */
struct slice {
  bool used;
  unsigned item;
  uint64_t off, len;
  uint8_t *buf[RS_MAX_MEMBERS];   /* by source j: cap bytes, kept for the
                                   * next slice of this window place */
  uint64_t cap[RS_MAX_MEMBERS];
  uint8_t *out;                   /* the tail past the valid bytes: out_cap */
  uint64_t out_cap;
  bool chain;                     /* one coded fetch (index 0), not k */
  uint32_t id[RS_MAX_MEMBERS];
  uint64_t expect[RS_MAX_MEMBERS];
  bool in[RS_MAX_MEMBERS];
  bool issued[RS_MAX_MEMBERS];    /* handed out by smp_rebuild_next */
  unsigned pending;
};

/* Buffers of slices re-planned by smp_rebuild_erase: a reply to a fetch
 * given up may still be landing in them, so they live as long as the
 * machine. */
struct retired {
  struct retired *next;
  void *buf;
};

struct smp_rebuild {
  struct rs_layout l;
  struct rs_plan plan;
  struct rs_coder *coder;
  unsigned lost;
  uint32_t erased;          /* members given up as sources */
  struct retired *retired;
  uint8_t *dst;
  size_t slice_bytes;
  unsigned window;
  bool chain;               /* new slices are pipelined */
  struct item items[RS_MAX_MEMBERS];
  unsigned nitems;
  unsigned next_item;       /* the next slice to issue: item and offset */
  uint64_t next_off;
  unsigned decoded, total;  /* slices */
  struct slice w[REBUILD_WINDOW_MAX];
  uint32_t next_id;
  uint64_t fetched, rebuilt;
  char err[256];
};

static int fail(struct smp_rebuild *rb, int rc, const char *fmt, ...)
  __attribute__((format(printf, 3, 4)));
static int fail(struct smp_rebuild *rb, int rc, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(rb->err, sizeof(rb->err), fmt, ap);
  va_end(ap);
  return rc;
}

/* The slice is done: its buffers stay for the next one (no fresh pages
 * to fault in per slice). */
static void slice_done(struct slice *s)
{
  s->used = false;
}

static void slice_free(struct slice *s)
{
  for (unsigned j = 0; j < RS_MAX_MEMBERS; j++) {
    free(s->buf[j]);
    s->buf[j] = NULL;
    s->cap[j] = 0;
  }
  free(s->out);
  s->out = NULL;
  s->out_cap = 0;
  s->used = false;
}

/* *b holds at least len bytes (cap: what it holds). */
static bool buf_fit(uint8_t **b, uint64_t *cap, uint64_t len)
{
  if (*b != NULL && *cap >= len)
    return true;
  free(*b);
  *cap = 0;
  if ((*b = malloc((size_t)len)) == NULL)
    return false;
  *cap = len;
  return true;
}

int smp_rebuild_new(struct smp_rebuild **out, unsigned k, unsigned m,
                    const size_t *member_bytes, unsigned lost, void *dst,
                    size_t slice, unsigned window, char *err, size_t errlen)
{
  *out = NULL;
  if (slice == 0)
    slice = REBUILD_SLICE_DEFAULT;
  if (window == 0)
    window = REBUILD_WINDOW_DEFAULT;
  if (slice % RS_ALIGN != 0 || window > REBUILD_WINDOW_MAX ||
      lost >= k + m || (dst == NULL && member_bytes[lost] > 0)) {
    if (err != NULL)
      snprintf(err, errlen, "slice %zu, window %u or lost member %u out of range", slice,
               window, lost);
    return -EINVAL;
  }
  struct smp_rebuild *rb = calloc(1, sizeof(*rb));
  if (rb == NULL)
    return -ENOMEM;
  int rc = rs_layout_init(&rb->l, k, m, member_bytes, k + m);
  if (rc == 0)
    rc = rs_layout_plan(&rb->l, 1u << lost, &rb->plan);
  if (rc == 0)
    rc = rs_coder_new(&rb->coder, k, m, NULL);
  if (rc != 0) {
    if (err != NULL)
      snprintf(err, errlen, "%s", rs_last_error());
    free(rb);
    return rc;
  }
  rb->lost = lost;
  rb->dst = dst;
  rb->slice_bytes = slice;
  rb->window = window;
  /* The lost member's data chunks, stripe by stripe. */
  for (unsigned s = 0; s < rb->plan.nstripes; s++) {
    const struct rs_stripe_plan *sp = &rb->plan.stripe[s];
    for (unsigned x = 0; x < sp->nlost; x++) {
      const struct rs_piece *p = &sp->lost[x];
      if (p->is_parity || p->member != lost)
        continue;
      size_t valid = rs_layout_chunk_valid(&rb->l, lost, p->index);
      if (valid == 0)
        continue; /* all padding: nothing to rebuild */
      struct item *it = &rb->items[rb->nitems++];
      *it = (struct item){.stripe = s, .chunk = p->index, .lost_pos = p->pos,
                          .valid = valid,
                          .span = (valid + RS_ALIGN - 1) / RS_ALIGN * RS_ALIGN};
      rb->total += (unsigned)((it->span + slice - 1) / slice);
    }
  }
  *out = rb;
  return 0;
}

void smp_rebuild_free(struct smp_rebuild *rb)
{
  if (rb == NULL)
    return;
  for (unsigned i = 0; i < REBUILD_WINDOW_MAX; i++)
    slice_free(&rb->w[i]);
  while (rb->retired != NULL) {
    struct retired *r = rb->retired;
    rb->retired = r->next;
    free(r->buf);
    free(r);
  }
  rs_coder_free(rb->coder);
  free(rb);
}

/* The fetches slice s is made of: one when chained, else k. */
static unsigned nfetch(const struct smp_rebuild *rb, const struct slice *s)
{
  return s->chain ? 1u : rb->l.k;
}

/* Slice s's coded fetch: to its last source, with the others, each with
 * its decode coefficient (coefs, by source in position order), as the
 * chain. */
static void chain_fetch(const struct smp_rebuild *rb, const struct slice *s,
                        const uint8_t *coefs, struct smp_rebuild_fetch *f)
{
  const struct item *it = &rb->items[s->item];
  const struct rs_stripe_plan *sp = &rb->plan.stripe[it->stripe];
  unsigned k = rb->l.k;
  uint8_t by_pos[RS_MAX_MEMBERS] = {0};

  for (unsigned q = 0, j = 0; q < rb->l.g; q++)
    if (sp->src_mask & (1u << q))
      by_pos[q] = coefs[j++];
  const struct rs_piece *head = &sp->src[k - 1];
  *f = (struct smp_rebuild_fetch){
      .id = s->id[0], .member = head->member, .what = head->is_parity ? 1u : 0u,
      .index = head->index, .offset = s->off, .length = s->len, .expect = s->len,
      .dst = s->buf[0], .coded = true, .coef = by_pos[head->pos], .nhops = k - 1};
  for (unsigned j = 0; j + 1 < k; j++) {
    const struct rs_piece *p = &sp->src[k - 2 - j];
    f->hop[j] = (struct smp_rebuild_hop){.member = p->member,
                                         .what = p->is_parity ? 1u : 0u,
                                         .index = p->index, .coef = by_pos[p->pos]};
  }
}

static void piece_fetch(const struct smp_rebuild *rb, const struct slice *s, unsigned j,
                        struct smp_rebuild_fetch *f)
{
  const struct rs_piece *p = &rb->plan.stripe[rb->items[s->item].stripe].src[j];
  *f = (struct smp_rebuild_fetch){
      .id = s->id[j], .member = p->member, .what = p->is_parity ? 1u : 0u,
      .index = p->index, .offset = s->off, .length = s->len, .expect = s->expect[j],
      .dst = s->buf[j]};
}

unsigned smp_rebuild_next(struct smp_rebuild *rb, struct smp_rebuild_fetch *out,
                          unsigned max)
{
  unsigned n = 0, k = rb->l.k;

  /* Pieces of slices re-planned by smp_rebuild_erase go out first. */
  for (unsigned i = 0; i < rb->window && n < max; i++) {
    struct slice *s = &rb->w[i];
    if (!s->used || s->chain)
      continue;
    for (unsigned j = 0; j < k && n < max; j++) {
      if (s->issued[j] || s->in[j])
        continue;
      s->issued[j] = true;
      piece_fetch(rb, s, j, &out[n++]);
    }
  }
  while (rb->next_item < rb->nitems && n + (rb->chain ? 1 : k) <= max) {
    struct slice *s = NULL;
    unsigned busy = 0;
    for (unsigned i = 0; i < rb->window; i++) {
      if (rb->w[i].used)
        busy++;
      else if (s == NULL)
        s = &rb->w[i];
    }
    if (s == NULL || busy >= rb->window)
      break;
    const struct item *it = &rb->items[rb->next_item];
    const struct rs_stripe_plan *sp = &rb->plan.stripe[it->stripe];
    uint64_t len = it->span - rb->next_off < rb->slice_bytes ? it->span - rb->next_off
                                                             : rb->slice_bytes;
    bool ok = true;
    bool chain = rb->chain;
    uint8_t coefs[RS_MAX_MEMBERS];
    if (chain && rs_decode_coefs(rb->coder, sp->src_mask, it->lost_pos, coefs) != 0)
      chain = rb->chain = false; /* (no coefficients to be had: piece by piece) */
    for (unsigned j = 0; j < (chain ? 1 : k) && ok; j++)
      ok = buf_fit(&s->buf[j], &s->cap[j], len);
    if (ok && rb->next_off + len > it->valid) /* the tail: not all of it lands */
      ok = buf_fit(&s->out, &s->out_cap, len);
    if (!ok) {
      slice_free(s);
      break; /* tried again at the next call */
    }
    memset(s->id, 0, sizeof(s->id));
    memset(s->expect, 0, sizeof(s->expect));
    memset(s->in, 0, sizeof(s->in));
    memset(s->issued, 0, sizeof(s->issued));
    s->used = true;
    s->chain = chain;
    s->item = rb->next_item;
    s->off = rb->next_off;
    s->len = len;
    s->pending = chain ? 1 : k;
    if (chain) {
      s->id[0] = ++rb->next_id;
      s->expect[0] = len;
      s->issued[0] = true;
      chain_fetch(rb, s, coefs, &out[n++]);
    }
    for (unsigned j = 0; j < k && !chain; j++) {
      const struct rs_piece *p = &sp->src[j];
      uint64_t expect = len;
      if (!p->is_parity) {
        size_t v = rs_layout_chunk_valid(&rb->l, p->member, p->index);
        expect = s->off >= v ? 0 : v - s->off < len ? v - s->off : len;
      }
      s->id[j] = ++rb->next_id;
      s->expect[j] = expect;
      s->issued[j] = true;
      piece_fetch(rb, s, j, &out[n++]);
    }
    rb->next_off += len;
    if (rb->next_off >= it->span) {
      rb->next_item++;
      rb->next_off = 0;
    }
  }
  return n;
}

static int decode(struct smp_rebuild *rb, struct slice *s)
{
  const struct item *it = &rb->items[s->item];
  if (s->chain) {
    /* the chain summed the terms: the slice itself */
    uint8_t *to = rb->dst + (size_t)it->chunk * rb->l.chunk_bytes + s->off;
    uint64_t n = it->valid - s->off < s->len ? it->valid - s->off : s->len;
    memcpy(to, s->buf[0], (size_t)n);
    rb->rebuilt += n;
    rb->decoded++;
    return 0;
  }
  const struct rs_stripe_plan *sp = &rb->plan.stripe[it->stripe];
  void *pieces[RS_MAX_MEMBERS] = {0};

  for (unsigned j = 0; j < rb->l.k; j++) {
    if (s->expect[j] < s->len) /* a data piece's padding */
      memset(s->buf[j] + s->expect[j], 0, (size_t)(s->len - s->expect[j]));
    pieces[sp->src[j].pos] = s->buf[j];
  }
  /* Straight into the destination, but for a tail past the valid bytes
   * (decoded whole, then cut). */
  uint8_t *at = rb->dst + (size_t)it->chunk * rb->l.chunk_bytes + s->off;
  bool tail = s->off + s->len > it->valid;
  pieces[it->lost_pos] = tail ? s->out : at;
  int rc = rs_stripe_decode(rb->coder, (size_t)s->len, pieces, sp->src_mask,
                            1u << it->lost_pos);
  if (rc != 0)
    return fail(rb, rc, "decoding stripe %u at byte %" PRIu64 ": %s", it->stripe, s->off,
                rs_last_error());
  uint64_t n = it->valid - s->off < s->len ? it->valid - s->off : s->len;
  if (tail)
    memcpy(at, s->out, (size_t)n);
  rb->rebuilt += n;
  rb->decoded++;
  return 0;
}

int smp_rebuild_got(struct smp_rebuild *rb, uint32_t id, uint64_t bytes)
{
  rb->err[0] = '\0';
  for (unsigned i = 0; i < rb->window; i++) {
    struct slice *s = &rb->w[i];
    if (!s->used)
      continue;
    for (unsigned j = 0; j < nfetch(rb, s); j++) {
      if (s->id[j] != id || s->in[j])
        continue;
      if (bytes != s->expect[j])
        return fail(rb, PT_EPROTO, "fetch %" PRIu32 " brought %" PRIu64 " bytes, %" PRIu64
                    " expected", id, bytes, s->expect[j]);
      s->in[j] = true;
      rb->fetched += bytes;
      if (--s->pending > 0)
        return 0;
      int rc = decode(rb, s);
      slice_done(s);
      return rc;
    }
  }
  return fail(rb, PT_EPROTO, "fetch %" PRIu32 " is not outstanding", id);
}

/* Slice s's pieces are fetched again from the plan's sources now: new
 * buffers (the old ones retired), new ids, none issued yet. */
static int slice_replan(struct smp_rebuild *rb, struct slice *s)
{
  const struct rs_stripe_plan *sp = &rb->plan.stripe[rb->items[s->item].stripe];
  uint8_t *nb[RS_MAX_MEMBERS] = {0};
  struct retired *r[RS_MAX_MEMBERS] = {0};

  for (unsigned j = 0; j < rb->l.k; j++)
    if ((nb[j] = malloc((size_t)s->len)) == NULL ||
        (r[j] = malloc(sizeof(*r[j]))) == NULL) {
      for (unsigned x = 0; x <= j; x++) {
        free(nb[x]);
        free(r[x]);
      }
      return fail(rb, -ENOMEM, "no memory to fetch a slice again");
    }
  for (unsigned j = 0; j < rb->l.k; j++) {
    r[j]->buf = s->buf[j];
    r[j]->next = rb->retired;
    rb->retired = r[j];
    s->buf[j] = nb[j];
    s->cap[j] = s->len;
    const struct rs_piece *p = &sp->src[j];
    uint64_t expect = s->len;
    if (!p->is_parity) {
      size_t v = rs_layout_chunk_valid(&rb->l, p->member, p->index);
      expect = s->off >= v ? 0 : v - s->off < s->len ? v - s->off : s->len;
    }
    s->id[j] = ++rb->next_id;
    s->expect[j] = expect;
    s->in[j] = false;
    s->issued[j] = false;
  }
  s->pending = rb->l.k;
  s->chain = false;
  return 0;
}

int smp_rebuild_set_chain(struct smp_rebuild *rb, bool on)
{
  rb->err[0] = '\0';
  if (on) {
    rb->chain = rb->l.k > 1;
    return 0;
  }
  rb->chain = false;
  for (unsigned i = 0; i < rb->window; i++) {
    struct slice *s = &rb->w[i];
    if (s->used && s->chain) {
      int rc = slice_replan(rb, s);
      if (rc != 0)
        return rc;
    }
  }
  return 0;
}

bool smp_rebuild_chained(const struct smp_rebuild *rb)
{
  return rb->chain;
}

int smp_rebuild_erase(struct smp_rebuild *rb, unsigned member)
{
  rb->err[0] = '\0';
  if (member >= rb->l.g || member == rb->lost)
    return fail(rb, -EINVAL, "member %u is no source of this rebuild", member);
  if (rb->erased & (1u << member))
    return 0;
  int crc = smp_rebuild_set_chain(rb, false); /* piece by piece from here */
  if (crc != 0)
    return crc;
  struct rs_plan plan;
  int rc = rs_layout_plan(&rb->l, (1u << rb->lost) | rb->erased | (1u << member), &plan);
  if (rc != 0)
    return fail(rb, rc, "%s", rs_last_error());
  struct rs_plan old = rb->plan;
  rb->plan = plan;
  rb->erased |= 1u << member;
  for (unsigned i = 0; i < rb->window; i++) {
    struct slice *s = &rb->w[i];
    if (!s->used)
      continue;
    unsigned st = rb->items[s->item].stripe;
    if (old.stripe[st].src_mask == plan.stripe[st].src_mask)
      continue; /* none of its sources was the member's */
    rc = slice_replan(rb, s);
    if (rc != 0)
      return rc;
  }
  return 0;
}

uint32_t smp_rebuild_erased(const struct smp_rebuild *rb)
{
  return rb->erased;
}

bool smp_rebuild_wants(const struct smp_rebuild *rb, uint32_t id)
{
  for (unsigned i = 0; i < rb->window; i++) {
    const struct slice *s = &rb->w[i];
    for (unsigned j = 0; s->used && j < nfetch(rb, s); j++)
      if (s->id[j] == id && !s->in[j])
        return true;
  }
  return false;
}

bool smp_rebuild_done(const struct smp_rebuild *rb)
{
  return rb->decoded == rb->total;
}

void smp_rebuild_progress(const struct smp_rebuild *rb, uint64_t *fetched,
                          uint64_t *rebuilt)
{
  if (fetched != NULL)
    *fetched = rb->fetched;
  if (rebuilt != NULL)
    *rebuilt = rb->rebuilt;
}

const char *smp_rebuild_error(const struct smp_rebuild *rb)
{
  return rb->err;
}
