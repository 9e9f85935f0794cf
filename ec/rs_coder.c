/*
 * rs_coder.c — the coder: the Cauchy encode matrix and its ISA-L tables, the
 * decode-table cache, the per-call thread runner, and the stripe-level
 * encode, incremental update and decode.
 *
 * Invariants: the encode matrix is gf_gen_cauchy1_matrix(g, k) and never
 * changes; a cache entry, once published under the lock, is immutable and
 * lives until rs_coder_free(), so readers use it without holding the lock.
 * Every ISA-L call sees lengths that are multiples of RS_ALIGN and at least
 * RS_ALIGN, so it never takes its scalar fallback.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <isa-l/erasure_code.h>

#include "ec/rs_internal.h"
#include "kernels/kernels.h"
#include "pt.h"

static int check_code(unsigned k, unsigned m, const char *what)
{
  if (k < 1 || m < 1 || k + m > RS_MAX_MEMBERS)
    return rs_fail(-EINVAL,
                   "rs: %s: code %u+%u refused: need k >= 1, m >= 1, "
                   "k + m <= %d",
                   what, k, m, RS_MAX_MEMBERS);
  return 0;
}

int rs_coder_new(struct rs_coder **out, unsigned k, unsigned m,
                 const struct rs_coder_opts *opts)
{
  struct rs_coder *c;
  unsigned threads = opts != NULL ? opts->threads : 0;
  size_t slice = opts != NULL ? opts->slice_bytes : 0;
  int rc;

  if (out == NULL)
    return rs_fail(-EINVAL, "rs: coder: nowhere to store the coder");
  *out = NULL;
  rc = check_code(k, m, "coder");
  if (rc < 0)
    return rc;
  if (threads > RS_MAX_THREADS)
    return rs_fail(-EINVAL, "rs: coder: %u threads asked, at most %d", threads,
                   RS_MAX_THREADS);
  /* At most one checksum block, so that a slice of a chunk straddles at
   * most one block boundary (rs_decode.c). */
  if (slice != 0 && (slice % RS_ALIGN != 0 || slice > KERN_BLOCK_SIZE))
    return rs_fail(-EINVAL,
                   "rs: coder: slice of %zu bytes is not a multiple of %d "
                   "up to %zu",
                   slice, RS_ALIGN, KERN_BLOCK_SIZE);
  if (slice == 0) {
    slice = RS_SLICE_SOURCE_BYTES / k / RS_ALIGN * RS_ALIGN;
    if (slice < RS_SLICE_MIN)
      slice = RS_SLICE_MIN;
  }

  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return rs_fail(-ENOMEM, "rs: coder: out of memory");
  c->k = k;
  c->m = m;
  c->g = k + m;
  c->threads = threads == 0 ? 1 : threads;
  c->slice = slice;
  gf_gen_cauchy1_matrix(c->matrix, (int)c->g, (int)k);
  c->enc_tbls = rs_alloc((size_t)32 * k * m);
  c->zero = rs_alloc(slice);
  if (c->enc_tbls == NULL || c->zero == NULL) {
    rc = rs_fail(-ENOMEM, "rs: coder: out of memory for tables");
    goto out_free;
  }
  memset(c->zero, 0, slice);
  ec_init_tables((int)k, (int)m, &c->matrix[k * k], c->enc_tbls);
  rc = pthread_mutex_init(&c->lock, NULL);
  if (rc != 0) {
    rc = rs_fail(-rc, "rs: coder: cannot create its lock");
    goto out_free;
  }
  *out = c;
  return 0;

out_free:
  free(c->zero);
  free(c->enc_tbls);
  free(c);
  return rc;
}

void rs_coder_free(struct rs_coder *c)
{
  if (c == NULL)
    return;
  for (unsigned i = 0; i < RS_CACHE_SLOTS; i++)
    free(c->cache[i].tbls);
  pthread_mutex_destroy(&c->lock);
  free(c->zero);
  free(c->enc_tbls);
  free(c);
}

/* ---- decode tables ---------------------------------------------------------- */

/* The decode rows: for each position of out_mask (ascending), the k
 * coefficients of the sources (the positions of src_mask, ascending).
 * OUT: rows[popcount(out_mask) * k]. */
static int decode_rows(const struct rs_coder *c, uint32_t src_mask,
                       uint32_t out_mask, unsigned char *rows)
{
  unsigned k = c->k, t = 0, n = 0;
  unsigned char b[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
  unsigned char inv[RS_MAX_MEMBERS * RS_MAX_MEMBERS];

  for (unsigned q = 0; q < c->g; q++)
    if (src_mask & (1u << q))
      memcpy(&b[t++ * k], &c->matrix[q * k], k);
  if (gf_invert_matrix(b, inv, (int)k) != 0)
    return rs_fail(-EIO, "rs: decode matrix for sources 0x%x is singular",
                   src_mask);
  for (unsigned q = 0; q < c->g; q++) {
    if (!(out_mask & (1u << q)))
      continue;
    if (q < k) {
      /* A data position: its row of the inverse. */
      memcpy(&rows[n * k], &inv[q * k], k);
    } else {
      /* A parity position: its encode row times the inverse. */
      for (unsigned col = 0; col < k; col++) {
        unsigned char s = 0;
        for (unsigned u = 0; u < k; u++)
          s ^= gf_mul(c->matrix[q * k + u], inv[u * k + col]);
        rows[n * k + col] = s;
      }
    }
    n++;
  }
  return (int)n;
}

static int tables_build(const struct rs_coder *c, uint32_t src_mask,
                        uint32_t out_mask, unsigned char **out)
{
  unsigned char rows[RS_MAX_MEMBERS * RS_MAX_MEMBERS];
  unsigned char *tbls;
  unsigned k = c->k;
  int n = decode_rows(c, src_mask, out_mask, rows);

  if (n < 0)
    return n;
  tbls = rs_alloc((size_t)32 * k * (unsigned)n);
  if (tbls == NULL)
    return rs_fail(-ENOMEM, "rs: out of memory for decode tables");
  ec_init_tables((int)k, n, rows, tbls);
  *out = tbls;
  return 0;
}

int rs_decode_coefs(const struct rs_coder *c, uint32_t src_mask, unsigned want,
                    uint8_t *coefs)
{
  uint32_t all = c->g == 32 ? 0xffffffffu : (1u << c->g) - 1;

  if (want >= c->g || (src_mask & ~all) || rs_popcount(src_mask) != c->k ||
      (src_mask & (1u << want)))
    return rs_fail(-EINVAL, "rs: no decode of position %u from sources 0x%x", want,
                   src_mask);
  int n = decode_rows(c, src_mask, 1u << want, coefs);
  return n < 0 ? n : 0;
}

void rs_scale_fold(size_t len, uint8_t coef, const void *in, void *acc, int first)
{
  unsigned char tbl[32];
  unsigned char *src = (unsigned char *)in, *dst = acc;

  if (len == 0)
    return;
  ec_init_tables(1, 1, &coef, tbl);
  if (first)
    ec_encode_data((int)len, 1, 1, tbl, &src, &dst);
  else
    ec_encode_data_update((int)len, 1, 1, 0, tbl, src, &dst);
}

static unsigned cache_slot(uint64_t key)
{
  key *= 0x9e3779b97f4a7c15ull;
  return (unsigned)(key >> 40) % RS_CACHE_SLOTS;
}

/* Under c->lock: the entry for key, or the empty slot where it belongs. */
static struct rs_cache_entry *cache_find(struct rs_coder *c, uint64_t key)
{
  unsigned s = cache_slot(key);

  for (unsigned n = 0; n < RS_CACHE_SLOTS; n++) {
    struct rs_cache_entry *e = &c->cache[(s + n) % RS_CACHE_SLOTS];
    if (e->key == key || e->key == 0)
      return e;
  }
  return NULL;
}

int rs_tables_get(struct rs_coder *c, uint32_t src_mask, uint32_t out_mask,
                  unsigned char **tbls, unsigned char **owned)
{
  uint64_t key = (uint64_t)src_mask << 32 | out_mask;
  struct rs_cache_entry *e;
  unsigned char *fresh = NULL;
  int rc;

  *owned = NULL;
  if (rs_popcount(src_mask) != c->k || out_mask == 0 || (src_mask & out_mask))
    return rs_fail(-EINVAL, "rs: bad decode pattern: sources 0x%x, outputs 0x%x",
                   src_mask, out_mask);
  pthread_mutex_lock(&c->lock);
  e = cache_find(c, key);
  if (e != NULL && e->key == key) {
    *tbls = e->tbls;
    pthread_mutex_unlock(&c->lock);
    return 0;
  }
  pthread_mutex_unlock(&c->lock);

  /* Built outside the lock; another thread may publish the same pattern
   * meanwhile, and then its copy wins. */
  rc = tables_build(c, src_mask, out_mask, &fresh);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&c->lock);
  e = cache_find(c, key);
  if (e != NULL && e->key == key) {
    *tbls = e->tbls;
    pthread_mutex_unlock(&c->lock);
    free(fresh);
    return 0;
  }
  if (e != NULL && c->ncached < RS_CACHE_SLOTS * 3 / 4) {
    e->tbls = fresh;
    e->key = key;
    c->ncached++;
    *tbls = fresh;
  } else {
    *tbls = fresh;
    *owned = fresh;
  }
  pthread_mutex_unlock(&c->lock);
  return 0;
}

/* ---- the per-call thread runner ---------------------------------------------- */

struct run_ctx {
  rs_task_fn fn;
  void *arg;
  size_t ntasks, scratch_bytes;
  atomic_size_t next;
  atomic_int err;
  pthread_mutex_t msg_lock;
  char msg[256];
};

static void run_error(struct run_ctx *r, int rc)
{
  int none = 0;

  if (atomic_compare_exchange_strong(&r->err, &none, rc)) {
    pthread_mutex_lock(&r->msg_lock);
    snprintf(r->msg, sizeof(r->msg), "%s", rs_last_error());
    pthread_mutex_unlock(&r->msg_lock);
  }
}

static void run_work(struct run_ctx *r)
{
  struct rs_worker w = {.scratch = NULL, .scratch_bytes = r->scratch_bytes};

  if (r->scratch_bytes > 0) {
    w.scratch = rs_alloc(r->scratch_bytes);
    if (w.scratch == NULL) {
      run_error(r, rs_fail(-ENOMEM, "rs: out of memory for %zu bytes of scratch",
                           r->scratch_bytes));
      return;
    }
  }
  for (;;) {
    size_t t;
    int rc;

    if (atomic_load_explicit(&r->err, memory_order_relaxed) != 0)
      break;
    t = atomic_fetch_add(&r->next, 1);
    if (t >= r->ntasks)
      break;
    rc = r->fn(r->arg, t, &w);
    if (rc < 0) {
      run_error(r, rc);
      break;
    }
  }
  free(w.scratch);
}

static void *run_thread(void *p)
{
  run_work(p);
  return NULL;
}

int rs_run(const struct rs_coder *c, size_t ntasks, size_t scratch_bytes,
           uint64_t work_bytes, rs_task_fn fn, void *arg)
{
  struct run_ctx r = {.fn = fn, .arg = arg, .ntasks = ntasks,
                      .scratch_bytes = scratch_bytes};
  pthread_t tid[RS_MAX_THREADS];
  size_t nthreads = c->threads, started = 0;
  int rc;

  if (ntasks == 0)
    return 0;
  if (nthreads > ntasks)
    nthreads = ntasks;
  if (work_bytes < RS_PAR_MIN_BYTES)
    nthreads = 1;
  atomic_init(&r.next, 0);
  atomic_init(&r.err, 0);
  pthread_mutex_init(&r.msg_lock, NULL);
  /* A thread that cannot be started only means fewer hands. */
  for (size_t i = 1; i < nthreads; i++)
    if (pthread_create(&tid[started], NULL, run_thread, &r) == 0)
      started++;
  run_work(&r);
  for (size_t i = 0; i < started; i++)
    pthread_join(tid[i], NULL);
  rc = atomic_load(&r.err);
  if (rc < 0)
    rs_fail(rc, "%s", r.msg);
  pthread_mutex_destroy(&r.msg_lock);
  return rc;
}

/* ---- stripe-level calls ------------------------------------------------------ */

struct stripe_call {
  const struct rs_coder *c;
  size_t len;
  unsigned nsrc, nout;
  unsigned char *src[RS_MAX_MEMBERS];
  unsigned char *out[RS_MAX_MEMBERS];
  unsigned char *tbls;
  int update_row; /* >= 0: ec_encode_data_update of src[0] as that row */
};

static int stripe_task(void *arg, size_t t, struct rs_worker *w)
{
  struct stripe_call *s = arg;
  size_t off = t * s->c->slice;
  size_t len = s->len - off < s->c->slice ? s->len - off : s->c->slice;
  unsigned char *src[RS_MAX_MEMBERS], *out[RS_MAX_MEMBERS];

  (void)w;
  for (unsigned i = 0; i < s->nsrc; i++)
    src[i] = s->src[i] + off;
  for (unsigned i = 0; i < s->nout; i++)
    out[i] = s->out[i] + off;
  if (s->update_row >= 0)
    ec_encode_data_update((int)len, (int)s->c->k, (int)s->nout, s->update_row,
                          s->tbls, src[0], out);
  else
    ec_encode_data((int)len, (int)s->c->k, (int)s->nout, s->tbls, src, out);
  return 0;
}

static int stripe_run(struct stripe_call *s)
{
  size_t ntasks = (s->len + s->c->slice - 1) / s->c->slice;
  return rs_run(s->c, ntasks, 0, (uint64_t)s->len * (s->nsrc + s->nout),
                stripe_task, s);
}

static int check_len(const struct rs_coder *c, size_t len, const char *what)
{
  if (c == NULL)
    return rs_fail(-EINVAL, "rs: %s: no coder", what);
  if (len < RS_ALIGN || len % RS_ALIGN != 0)
    return rs_fail(-EINVAL,
                   "rs: %s: piece length %zu is not a positive multiple of %d",
                   what, len, RS_ALIGN);
  return 0;
}

int rs_stripe_encode(struct rs_coder *c, size_t len, const void *const *data,
                     void *const *parity)
{
  struct stripe_call s = {.c = c, .len = len, .update_row = -1};
  int rc = check_len(c, len, "encode");

  if (rc < 0)
    return rc;
  if (data == NULL || parity == NULL)
    return rs_fail(-EINVAL, "rs: encode: %s array is NULL",
                   data == NULL ? "data" : "parity");
  s.nsrc = c->k;
  s.nout = c->m;
  s.tbls = c->enc_tbls;
  for (unsigned i = 0; i < c->k; i++) {
    if (data[i] == NULL)
      return rs_fail(-EINVAL, "rs: encode: data row %u is NULL", i);
    s.src[i] = (unsigned char *)data[i];
  }
  for (unsigned r = 0; r < c->m; r++) {
    if (parity[r] == NULL)
      return rs_fail(-EINVAL, "rs: encode: parity row %u is NULL", r);
    s.out[r] = parity[r];
  }
  return stripe_run(&s);
}

int rs_stripe_update(struct rs_coder *c, size_t len, unsigned row,
                     const void *chunk, unsigned first_row, unsigned nrows,
                     void *const *parity)
{
  struct stripe_call s = {.c = c, .len = len};
  int rc = check_len(c, len, "update");

  if (rc < 0)
    return rc;
  if (row >= c->k)
    return rs_fail(-EINVAL, "rs: update: data row %u of a %u+%u code", row,
                   c->k, c->m);
  if (nrows == 0 || first_row >= c->m || nrows > c->m - first_row)
    return rs_fail(-EINVAL, "rs: update: parity rows %u..%u of a %u+%u code",
                   first_row, first_row + nrows - 1, c->k, c->m);
  if (chunk == NULL || parity == NULL)
    return rs_fail(-EINVAL, "rs: update: %s is NULL",
                   chunk == NULL ? "chunk" : "parity array");
  s.update_row = (int)row;
  s.nsrc = 1;
  s.src[0] = (unsigned char *)chunk;
  s.nout = nrows;
  s.tbls = c->enc_tbls + (size_t)32 * c->k * first_row;
  for (unsigned r = 0; r < nrows; r++) {
    if (parity[r] == NULL)
      return rs_fail(-EINVAL, "rs: update: parity row %u is NULL",
                     first_row + r);
    s.out[r] = parity[r];
  }
  return stripe_run(&s);
}

int rs_stripe_decode(struct rs_coder *c, size_t len, void *const *pieces,
                     uint32_t avail, uint32_t want)
{
  struct stripe_call s = {.c = c, .len = len, .update_row = -1};
  unsigned char *owned = NULL;
  uint32_t all, src_mask = 0;
  int rc = check_len(c, len, "decode");

  if (rc < 0)
    return rc;
  all = c->g == 32 ? 0xffffffffu : (1u << c->g) - 1;
  if (pieces == NULL || (avail & ~all) || (want & ~all) || (avail & want))
    return rs_fail(-EINVAL,
                   "rs: decode: pieces %p, available 0x%x, wanted 0x%x for %u "
                   "positions",
                   (void *)pieces, avail, want, c->g);
  if (want == 0)
    return 0;
  if (rs_popcount(avail) < c->k)
    return rs_fail(PT_ENOFRAG,
                   "rs: decode: %u pieces available, a %u+%u code needs %u",
                   rs_popcount(avail), c->k, c->m, c->k);
  for (unsigned q = 0; q < c->g; q++) {
    if (!((avail | want) & (1u << q)))
      continue;
    if (pieces[q] == NULL)
      return rs_fail(-EINVAL, "rs: decode: piece %u is NULL", q);
    if ((avail & (1u << q)) && s.nsrc < c->k) {
      src_mask |= 1u << q;
      s.src[s.nsrc++] = pieces[q];
    } else if (want & (1u << q)) {
      s.out[s.nout++] = pieces[q];
    }
  }
  rc = rs_tables_get(c, src_mask, want, &s.tbls, &owned);
  if (rc < 0)
    return rc;
  rc = stripe_run(&s);
  free(owned);
  return rc;
}
