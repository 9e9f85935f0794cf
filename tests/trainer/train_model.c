/*
 * train_model.c — pt-train's model: an MLP with ReLU hidden layers, softmax
 * cross-entropy, and AdamW.
 *
 * Parameters live in one float array, layer after layer, each linear map as
 * W[in][out] followed by its bias[out]; the Adam moments m and v mirror that
 * layout. These three arrays are registered with libpt as they are.
 *
 * Bit-for-bit reproducibility rules kept here:
 *  - every sum is accumulated in one fixed order: matrix products accumulate
 *    over the input index in ascending order (tiling changes which memory is
 *    hot, never the order of the additions into one element), and dot products
 *    use eight explicit lanes combined in a fixed tree, so vectorisation by the
 *    compiler yields the same bits as scalar code;
 *  - no fused multiply-add (the build is ISO C11, which turns contraction
 *    off, and uses no -ffast-math);
 *  - powers of the Adam betas are computed by repeated squaring, not pow();
 *    only expf/logf of the softmax come from libm (same bits for one libm).
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#include "train.h"

/* Tiles sized for a few hundred KiB of L2 per inner sweep. */
#define TILE_BYTES (192u * 1024u)
#define TILE_COLS 1024u
/* Alignment and granule of the big arrays: one x86-64 huge page. */
#define BIG_ALIGN ((size_t)2 << 20)

static size_t min_sz(size_t a, size_t b)
{
  return a < b ? a : b;
}

/* y[0..n) += a * x[0..n), element by element. */
static void axpy(float *restrict y, float a, const float *restrict x, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; j++)
      y[i + j] += a * x[i + j];
  for (; i < n; i++)
    y[i] += a * x[i];
}

/* Sum of a[i]*b[i] in eight lanes (lane j takes i = j mod 8 of the bulk),
 * combined pairwise, then the tail. */
static float dot(const float *restrict a, const float *restrict b, size_t n)
{
  float acc[8] = {0, 0, 0, 0, 0, 0, 0, 0};
  size_t i = 0;
  for (; i + 8 <= n; i += 8)
    for (size_t j = 0; j < 8; j++)
      acc[j] += a[i + j] * b[i + j];
  float tail = 0.0f;
  for (; i < n; i++)
    tail += a[i] * b[i];
  return (((acc[0] + acc[1]) + (acc[2] + acc[3])) +
          ((acc[4] + acc[5]) + (acc[6] + acc[7]))) +
         tail;
}

/* y[B][N] = bias[N] + x[B][K] * w[K][N]. Zero inputs (ReLU's) are skipped:
 * the decision depends only on the data, so it is as reproducible as the rest. */
static void linear_forward(const float *x, const float *w, const float *bias,
                           float *y, size_t B, size_t K, size_t N)
{
  for (size_t b = 0; b < B; b++)
    memcpy(y + b * N, bias, N * sizeof(float));
  for (size_t n0 = 0; n0 < N; n0 += TILE_COLS) {
    size_t nn = min_sz(TILE_COLS, N - n0);
    size_t kt = TILE_BYTES / (nn * sizeof(float));
    for (size_t k0 = 0; k0 < K; k0 += kt) {
      size_t k1 = min_sz(K, k0 + kt);
      for (size_t b = 0; b < B; b++) {
        const float *xb = x + b * K;
        float *yb = y + b * N + n0;
        for (size_t k = k0; k < k1; k++)
          if (xb[k] != 0.0f)
            axpy(yb, xb[k], w + k * N + n0, nn);
      }
    }
  }
}

/* Gradients of y = bias + x w: gw[K][N] = x^T dy, gb[N] = column sums of dy,
 * summed over the batch in ascending order. */
static void linear_backward_params(const float *x, const float *dy, float *gw,
                                   float *gb, size_t B, size_t K, size_t N)
{
  memset(gb, 0, N * sizeof(float));
  for (size_t b = 0; b < B; b++)
    axpy(gb, 1.0f, dy + b * N, N);
  size_t kt = TILE_BYTES / (N * sizeof(float));
  if (kt == 0)
    kt = 1;
  for (size_t k0 = 0; k0 < K; k0 += kt) {
    size_t k1 = min_sz(K, k0 + kt);
    memset(gw + k0 * N, 0, (k1 - k0) * N * sizeof(float));
    for (size_t b = 0; b < B; b++) {
      const float *xb = x + b * K;
      for (size_t k = k0; k < k1; k++)
        if (xb[k] != 0.0f)
          axpy(gw + k * N, xb[k], dy + b * N, N);
    }
  }
}

/* dx[B][K] = (dy w^T) masked by ReLU: zero where the layer's input x (a ReLU
 * output) is zero. */
static void linear_backward_input(const float *x, const float *dy,
                                  const float *w, float *dx, size_t B, size_t K,
                                  size_t N)
{
  size_t kt = TILE_BYTES / (N * sizeof(float));
  if (kt == 0)
    kt = 1;
  for (size_t k0 = 0; k0 < K; k0 += kt) {
    size_t k1 = min_sz(K, k0 + kt);
    for (size_t b = 0; b < B; b++)
      for (size_t k = k0; k < k1; k++)
        dx[b * K + k] =
            x[b * K + k] > 0.0f ? dot(dy + b * N, w + k * N, N) : 0.0f;
  }
}

/* Mean softmax cross-entropy over the batch; overwrites logits with the
 * gradient of the mean loss with respect to them. */
static double softmax_xent(float *logits, const uint32_t *labels, size_t B,
                           size_t C)
{
  double total = 0.0;
  float inv_b = 1.0f / (float)B;
  for (size_t b = 0; b < B; b++) {
    float *z = logits + b * C;
    float mx = z[0];
    for (size_t c = 1; c < C; c++)
      if (z[c] > mx)
        mx = z[c];
    float sum = 0.0f;
    for (size_t c = 0; c < C; c++) {
      z[c] = expf(z[c] - mx); /* z now holds the unnormalised probabilities */
      sum += z[c];
    }
    float p_label = z[labels[b]] / sum;
    total += -(double)logf(p_label > 1e-30f ? p_label : 1e-30f);
    for (size_t c = 0; c < C; c++)
      z[c] = (z[c] / sum - (c == labels[b] ? 1.0f : 0.0f)) * inv_b;
  }
  return total / (double)B;
}

static void *alloc_floats(size_t n, bool zero)
{
  size_t bytes = n * sizeof(float);
  bytes = (bytes + 4095) & ~(size_t)4095;
  void *p = aligned_alloc(4096, bytes ? bytes : 4096);
  if (p != NULL && zero)
    memset(p, 0, bytes);
  return p;
}

/* The granule of an array of n floats from big_floats(): a huge page for
 * arrays of at least one, else a 4 KiB page (a small model stays small). */
static size_t big_granule(size_t n)
{
  return n * sizeof(float) >= BIG_ALIGN ? BIG_ALIGN : 4096;
}

/* Bytes of an array of n floats from big_floats(): whole granules. */
static size_t big_bytes(size_t n)
{
  size_t g = big_granule(n), bytes = n * sizeof(float);
  return bytes == 0 ? g : (bytes + g - 1) & ~(g - 1);
}

/* n floats of zero pages, mapped lazily: memory nobody writes costs nothing,
 * so a restored run pays only for the copy that fills it. Arrays of at least
 * 2 MiB are aligned to 2 MiB and advised for transparent huge pages, which
 * make the first touch and the unmapping at exit several times cheaper;
 * released with big_free(). */
static float *big_floats(size_t n)
{
  size_t g = big_granule(n), bytes = big_bytes(n);
  size_t span = bytes + (g == BIG_ALIGN ? BIG_ALIGN : 0);
  void *p = mmap(NULL, span, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
  if (p == MAP_FAILED)
    return NULL;
  if (g != BIG_ALIGN)
    return p;
  uintptr_t base = (uintptr_t)p;
  uintptr_t start = (base + BIG_ALIGN - 1) & ~(uintptr_t)(BIG_ALIGN - 1);
  if (start > base)
    munmap(p, start - base);
  if (base + span > start + bytes)
    munmap((void *)(start + bytes), base + span - (start + bytes));
  (void)madvise((void *)start, bytes, MADV_HUGEPAGE); /* advice only */
  return (float *)start;
}

static void big_free(float *p, size_t n)
{
  if (p != NULL)
    munmap(p, big_bytes(n));
}

int train_model_init(struct train_model *m, uint32_t inputs, uint32_t hidden,
                     uint32_t layers, uint32_t classes, uint32_t batch)
{
  memset(m, 0, sizeof(*m));
  m->inputs = inputs;
  m->hidden = hidden;
  m->layers = layers;
  m->classes = classes;
  m->batch = batch;
  m->n_linear = layers + 1;

  m->dim = calloc(m->n_linear + 1, sizeof(*m->dim));
  m->w_off = calloc(m->n_linear, sizeof(*m->w_off));
  m->b_off = calloc(m->n_linear, sizeof(*m->b_off));
  m->act = calloc(m->n_linear, sizeof(*m->act));
  if (m->dim == NULL || m->w_off == NULL || m->b_off == NULL || m->act == NULL)
    goto out_release;

  m->dim[0] = inputs;
  for (uint32_t j = 1; j < m->n_linear; j++)
    m->dim[j] = hidden;
  m->dim[m->n_linear] = classes;

  size_t off = 0, max_dim = 0;
  for (uint32_t j = 0; j < m->n_linear; j++) {
    m->w_off[j] = off;
    off += (size_t)m->dim[j] * m->dim[j + 1];
    m->b_off[j] = off;
    off += m->dim[j + 1];
  }
  m->n_params = off;
  for (uint32_t j = 0; j <= m->n_linear; j++)
    if (m->dim[j] > max_dim)
      max_dim = m->dim[j];

  m->params = big_floats(m->n_params);
  m->m = big_floats(m->n_params);
  m->v = big_floats(m->n_params);
  m->grad = big_floats(m->n_params);
  m->logits = alloc_floats((size_t)batch * classes, true);
  m->delta_a = alloc_floats((size_t)batch * max_dim, true);
  m->delta_b = alloc_floats((size_t)batch * max_dim, true);
  m->labels = calloc(batch, sizeof(*m->labels));
  if (m->params == NULL || m->m == NULL || m->v == NULL || m->grad == NULL ||
      m->logits == NULL || m->delta_a == NULL || m->delta_b == NULL ||
      m->labels == NULL)
    goto out_release;
  for (uint32_t j = 0; j < m->n_linear; j++) {
    m->act[j] = alloc_floats((size_t)batch * m->dim[j], true);
    if (m->act[j] == NULL)
      goto out_release;
  }

  return 0;

out_release:
  train_model_release(m);
  return -ENOMEM;
}

void train_model_init_params(struct train_model *m, uint64_t seed)
{
  /* He-uniform for the ReLU layers, 1/sqrt(fan_in) for the output layer,
   * zero biases; from a stream every rank shares. */
  struct train_rng g;
  train_rng_seed(&g, seed ^ 0x6d6f64656c696e69ull);
  for (uint32_t j = 0; j < m->n_linear; j++) {
    float fan_in = (float)m->dim[j];
    float bound = j + 1 < m->n_linear ? sqrtf(6.0f / fan_in)
                                      : 1.0f / sqrtf(fan_in);
    float *w = m->params + m->w_off[j];
    for (size_t i = 0; i < (size_t)m->dim[j] * m->dim[j + 1]; i++)
      w[i] = (2.0f * train_rng_uniform(&g) - 1.0f) * bound;
    memset(m->params + m->b_off[j], 0, m->dim[j + 1] * sizeof(float));
  }
}

void train_model_release(struct train_model *m)
{
  if (m->act != NULL)
    for (uint32_t j = 0; j < m->n_linear; j++)
      free(m->act[j]);
  free(m->act);
  free(m->labels);
  free(m->delta_b);
  free(m->delta_a);
  free(m->logits);
  big_free(m->grad, m->n_params);
  big_free(m->v, m->n_params);
  big_free(m->m, m->n_params);
  big_free(m->params, m->n_params);
  free(m->b_off);
  free(m->w_off);
  free(m->dim);
  memset(m, 0, sizeof(*m));
}

double train_model_backprop(struct train_model *m)
{
  size_t B = m->batch;
  uint32_t L = m->n_linear;

  for (uint32_t j = 0; j < L; j++) {
    float *out = j + 1 < L ? m->act[j + 1] : m->logits;
    size_t n_out = (size_t)B * m->dim[j + 1];
    linear_forward(m->act[j], m->params + m->w_off[j], m->params + m->b_off[j],
                   out, B, m->dim[j], m->dim[j + 1]);
    if (j + 1 < L)
      for (size_t i = 0; i < n_out; i++)
        out[i] = out[i] > 0.0f ? out[i] : 0.0f;
  }

  double loss = softmax_xent(m->logits, m->labels, B, m->classes);

  const float *dy = m->logits;
  for (uint32_t j = L; j-- > 0;) {
    linear_backward_params(m->act[j], dy, m->grad + m->w_off[j],
                           m->grad + m->b_off[j], B, m->dim[j], m->dim[j + 1]);
    if (j == 0)
      break;
    float *dx = dy == m->delta_a ? m->delta_b : m->delta_a;
    linear_backward_input(m->act[j], dy, m->params + m->w_off[j], dx, B,
                          m->dim[j], m->dim[j + 1]);
    dy = dx;
  }
  return loss;
}

/* beta^t by repeated squaring in double: the same bits on every IEEE machine. */
static double power(double beta, uint64_t t)
{
  double r = 1.0, b = beta;
  while (t != 0) {
    if (t & 1)
      r *= b;
    b *= b;
    t >>= 1;
  }
  return r;
}

/* AdamW on n consecutive parameters, in the form PyTorch uses:
 * p *= 1 - lr*wd; m, v updated; p -= (lr/bc1) * m / (sqrt(v)/sqrt(bc2) + eps). */
static void adamw_span(float *restrict p, float *restrict mo,
                       float *restrict ve, const float *restrict g, size_t n,
                       const struct train_adamw *o, float decay, float step_size,
                       float inv_sqrt_bc2)
{
  float b1 = o->beta1, b2 = o->beta2, c1 = 1.0f - o->beta1,
        c2 = 1.0f - o->beta2;
  for (size_t i = 0; i < n; i++) {
    float gi = g[i];
    float mi = b1 * mo[i] + c1 * gi;
    float vi = b2 * ve[i] + c2 * (gi * gi);
    mo[i] = mi;
    ve[i] = vi;
    float pi = p[i] * decay;
    p[i] = pi - step_size * (mi / (sqrtf(vi) * inv_sqrt_bc2 + o->eps));
  }
}

void train_model_update(struct train_model *m, const struct train_adamw *o,
                        uint64_t t)
{
  float bc1 = (float)(1.0 - power(o->beta1, t));
  float bc2 = (float)(1.0 - power(o->beta2, t));
  float step_size = o->lr / bc1;
  float inv_sqrt_bc2 = 1.0f / sqrtf(bc2);
  float decay = 1.0f - o->lr * o->weight_decay;

  for (uint32_t j = 0; j < m->n_linear; j++) {
    size_t nw = (size_t)m->dim[j] * m->dim[j + 1];
    size_t ow = m->w_off[j], ob = m->b_off[j];
    adamw_span(m->params + ow, m->m + ow, m->v + ow, m->grad + ow, nw, o, decay,
               step_size, inv_sqrt_bc2);
    adamw_span(m->params + ob, m->m + ob, m->v + ob, m->grad + ob,
               m->dim[j + 1], o, 1.0f, step_size, inv_sqrt_bc2);
  }
}
