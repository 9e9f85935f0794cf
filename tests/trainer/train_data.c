/*
 * train_data.c — pt-train's random numbers and synthetic data.
 *
 * Every random value comes from xoshiro256** seeded through splitmix64. The
 * teacher that labels the data and the model's initial parameters are drawn
 * from generators seeded by --seed alone, so every rank shares them; each
 * rank's data generator mixes the rank into the seed, so ranks see different
 * samples. The data generator's 32 bytes and the count of samples drawn are
 * part of the registered state: a restored run draws exactly the samples the
 * interrupted run would have drawn next.
 *
 * Only +, -, *, /, sqrt and comparisons are used (all correctly rounded in
 * IEEE arithmetic; no other libm call), so the data are the same bits on every
 * IEEE machine.
 */
#include <errno.h>
#include <math.h>
#include <stdlib.h>

#include "train.h"

#define TEACHER_HIDDEN 32

static uint64_t splitmix64(uint64_t *x)
{
  uint64_t z = (*x += 0x9e3779b97f4a7c15ull);
  z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
  z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
  return z ^ (z >> 31);
}

static uint64_t rotl(uint64_t x, int k)
{
  return (x << k) | (x >> (64 - k));
}

void train_rng_seed(struct train_rng *r, uint64_t seed)
{
  uint64_t x = seed;
  for (int i = 0; i < 4; i++)
    r->s[i] = splitmix64(&x);
  if ((r->s[0] | r->s[1] | r->s[2] | r->s[3]) == 0)
    r->s[0] = 1; /* xoshiro's one forbidden state */
}

uint64_t train_rng_next(struct train_rng *r)
{
  uint64_t *s = r->s;
  uint64_t result = rotl(s[1] * 5, 7) * 9;
  uint64_t t = s[1] << 17;
  s[2] ^= s[0];
  s[3] ^= s[1];
  s[1] ^= s[2];
  s[0] ^= s[3];
  s[2] ^= t;
  s[3] = rotl(s[3], 45);
  return result;
}

float train_rng_uniform(struct train_rng *r)
{
  return (float)(train_rng_next(r) >> 40) * (1.0f / 16777216.0f);
}

float train_rng_normal(struct train_rng *r)
{
  /* The sum of four U(0,1) has mean 2 and variance 1/3. */
  float s = train_rng_uniform(r) + train_rng_uniform(r) +
            train_rng_uniform(r) + train_rng_uniform(r);
  return (s - 2.0f) * 1.7320508f;
}

int train_teacher_init(struct train_teacher *t, uint64_t seed, uint32_t inputs,
                       uint32_t classes)
{
  struct train_rng g;
  uint32_t h = TEACHER_HIDDEN;

  t->inputs = inputs;
  t->hidden = h;
  t->classes = classes;
  t->w1 = malloc(sizeof(float) * (size_t)h * inputs);
  t->w2 = malloc(sizeof(float) * (size_t)classes * h);
  t->scratch = malloc(sizeof(float) * ((size_t)h + classes));
  if (t->w1 == NULL || t->w2 == NULL || t->scratch == NULL) {
    train_teacher_release(t);
    return -ENOMEM;
  }
  /* A stream of its own: the model's initialisation and the data use others. */
  train_rng_seed(&g, seed ^ 0x7465616368657221ull);
  /* Scaled so that pre-activations are O(1) and the labels depend on the
   * input in a non-linear but learnable way. */
  float s1 = 2.0f / sqrtf((float)inputs); /* sqrt is exact-rounded IEEE */
  for (size_t i = 0; i < (size_t)h * inputs; i++)
    t->w1[i] = train_rng_normal(&g) * s1;
  for (size_t i = 0; i < (size_t)classes * h; i++)
    t->w2[i] = train_rng_normal(&g);
  return 0;
}

void train_teacher_release(struct train_teacher *t)
{
  free(t->w1);
  free(t->w2);
  free(t->scratch);
  t->w1 = t->w2 = t->scratch = NULL;
}

/* The teacher's label for one input: argmax of w2 * softsign(w1 x). */
static uint32_t teacher_label(const struct train_teacher *t, const float *x)
{
  float *hid = t->scratch;
  for (uint32_t j = 0; j < t->hidden; j++) {
    const float *w = t->w1 + (size_t)j * t->inputs;
    float z = 0.0f;
    for (uint32_t i = 0; i < t->inputs; i++)
      z += w[i] * x[i];
    hid[j] = z / (1.0f + (z < 0.0f ? -z : z));
  }
  uint32_t best = 0;
  float best_score = 0.0f;
  for (uint32_t c = 0; c < t->classes; c++) {
    const float *w = t->w2 + (size_t)c * t->hidden;
    float z = 0.0f;
    for (uint32_t j = 0; j < t->hidden; j++)
      z += w[j] * hid[j];
    if (c == 0 || z > best_score) {
      best = c;
      best_score = z;
    }
  }
  return best;
}

void train_batch_draw(const struct train_teacher *t, struct train_rng *rng,
                      uint64_t *cursor, uint32_t batch, float *x,
                      uint32_t *labels)
{
  for (uint32_t b = 0; b < batch; b++) {
    float *xb = x + (size_t)b * t->inputs;
    for (uint32_t i = 0; i < t->inputs; i++)
      xb[i] = train_rng_normal(rng);
    labels[b] = teacher_label(t, xb);
  }
  *cursor += batch;
}
