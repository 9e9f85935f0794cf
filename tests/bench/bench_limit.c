/*
 * bench_limit.c — the copy limit of ptbench: the fastest plain copy of the
 * snapshot's bytes into the same pre-faulted slot, against which the
 * snapshot and restore rates are read.
 *
 * The candidates copy the same segments (the regions into their places in
 * the slot) and differ only in how:
 *
 *   memcpy           glibc memcpy, one call per segment, the caller's thread
 *                    (ptbench's memcpy_gbps; glibc picks streaming stores
 *                    itself above its non-temporal threshold)
 *   memcpy_1m        glibc memcpy in 1 MiB pieces, the caller's thread
 *   stream           a loop of 64-byte non-temporal stores (AVX2 or SSE2,
 *                    as the copy engine's plain copy), the caller's thread
 *   *_threads        each of the three on `threads` threads of our own,
 *                    every thread one contiguous range of the bytes
 *
 * The threads start before anything is timed and sleep at a barrier (a
 * condition variable and a generation count); a timed copy takes the clock,
 * releases them all with one broadcast and takes the clock again when the
 * last of them has finished its range, so a copy on the threads pays the
 * hand-off as the copy engine's does. Nothing here
 * checks what was copied: the copy engine's and libpt's figures do.
 */
#include <errno.h>
#include <pthread.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>

#include "tests/bench/bench.h"

#define PIECE ((size_t)1 << 20)
#define MAX_THREADS 64
#define MAX_SEGS 16

static const char *const lim_names[BENCH_LIMIT_COUNT] = {
  [BENCH_LIMIT_MEMCPY] = "memcpy",
  [BENCH_LIMIT_MEMCPY_1M] = "memcpy_1m",
  [BENCH_LIMIT_STREAM] = "stream",
  [BENCH_LIMIT_MEMCPY_THREADS] = "memcpy_threads",
  [BENCH_LIMIT_MEMCPY_1M_THREADS] = "memcpy_1m_threads",
  [BENCH_LIMIT_STREAM_THREADS] = "stream_threads",
};

static const char *const lim_texts[BENCH_LIMIT_COUNT] = {
  [BENCH_LIMIT_MEMCPY] = "glibc memcpy, one call, 1 thread",
  [BENCH_LIMIT_MEMCPY_1M] = "glibc memcpy, 1 MiB pieces, 1 thread",
  [BENCH_LIMIT_STREAM] = "streaming stores, 1 thread",
  [BENCH_LIMIT_MEMCPY_THREADS] = "glibc memcpy, one call per thread",
  [BENCH_LIMIT_MEMCPY_1M_THREADS] = "glibc memcpy, 1 MiB pieces, threads",
  [BENCH_LIMIT_STREAM_THREADS] = "streaming stores, threads",
};

enum how { HOW_MEMCPY, HOW_PIECES, HOW_STREAM };

struct bench_limit;

struct worker {
  struct bench_limit *l;
  uint64_t lo, hi;           /* its bytes of the segments laid end to end */
  pthread_t th;
};

struct bench_limit {
  struct bench_copy_seg seg[MAX_SEGS];
  size_t nseg;
  uint64_t bytes;            /* the sum of the segments */
  int nthreads;              /* asked for */
  int started;               /* running */
  struct worker w[MAX_THREADS];

  /* The barrier: a copy bumps gen and broadcasts go_cv; each thread copies
   * its range and counts itself out of `running`; the last one out signals
   * done_cv. `how` and `stop` are written under mu before the broadcast. */
  pthread_mutex_t mu;
  pthread_cond_t go_cv, done_cv;
  uint64_t gen;
  int running;
  enum how how;
  bool stop;
};

/* ---- the streaming copy ---- */

typedef void (*stream_fn)(unsigned char *d, const unsigned char *s, size_t n);

#if defined(__x86_64__)
#include <immintrin.h>

/* n a multiple of 64, d 64-byte aligned. */
static void stream_sse2(unsigned char *d, const unsigned char *s, size_t n)
{
  for (size_t i = 0; i < n; i += 64) {
    __m128i a = _mm_loadu_si128((const __m128i *)(s + i));
    __m128i b = _mm_loadu_si128((const __m128i *)(s + i + 16));
    __m128i c = _mm_loadu_si128((const __m128i *)(s + i + 32));
    __m128i e = _mm_loadu_si128((const __m128i *)(s + i + 48));
    _mm_stream_si128((__m128i *)(d + i), a);
    _mm_stream_si128((__m128i *)(d + i + 16), b);
    _mm_stream_si128((__m128i *)(d + i + 32), c);
    _mm_stream_si128((__m128i *)(d + i + 48), e);
  }
}

__attribute__((target("avx2"))) static void
stream_avx2(unsigned char *d, const unsigned char *s, size_t n)
{
  for (size_t i = 0; i < n; i += 64) {
    __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
    __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
    _mm256_stream_si256((__m256i *)(d + i), a);
    _mm256_stream_si256((__m256i *)(d + i + 32), b);
  }
}

static stream_fn stream_pick(void)
{
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") ? stream_avx2 : stream_sse2;
}

static void stream_fence(void)
{
  _mm_sfence();
}

bool bench_limit_has_stream(void)
{
  return true;
}
#else
static void stream_plain(unsigned char *d, const unsigned char *s, size_t n)
{
  memcpy(d, s, n);
}

static stream_fn stream_pick(void)
{
  return stream_plain;
}

static void stream_fence(void)
{
}

bool bench_limit_has_stream(void)
{
  return false;
}
#endif

static stream_fn stream_body;

static void copy_stream(unsigned char *d, const unsigned char *s, size_t n)
{
  size_t head = (size_t)(-(uintptr_t)d & 63);
  if (head > n)
    head = n;
  memcpy(d, s, head);
  size_t body = (n - head) & ~(size_t)63;
  stream_body(d + head, s + head, body);
  memcpy(d + head + body, s + head + body, n - head - body);
}

/* ---- copying a range of the segments ---- */

static void copy_piece(enum how how, unsigned char *d, const unsigned char *s, size_t n)
{
  switch (how) {
  case HOW_MEMCPY:
    memcpy(d, s, n);
    break;
  case HOW_PIECES:
    for (size_t o = 0; o < n; o += PIECE)
      memcpy(d + o, s + o, n - o < PIECE ? n - o : PIECE);
    break;
  case HOW_STREAM:
    copy_stream(d, s, n);
    break;
  }
}

/* Copies bytes [lo, hi) of the segments laid end to end. */
static void copy_range(const struct bench_limit *l, enum how how, uint64_t lo, uint64_t hi)
{
  uint64_t base = 0;
  for (size_t i = 0; i < l->nseg && base < hi; i++) {
    const struct bench_copy_seg *g = &l->seg[i];
    uint64_t a = lo > base ? lo : base;
    uint64_t b = hi < base + g->bytes ? hi : base + g->bytes;
    if (a < b)
      copy_piece(how, (unsigned char *)g->dst + (a - base),
                 (const unsigned char *)g->src + (a - base), (size_t)(b - a));
    base += g->bytes;
  }
  if (how == HOW_STREAM)
    stream_fence();
}

static void *worker_main(void *arg)
{
  struct worker *w = arg;
  struct bench_limit *l = w->l;
  uint64_t seen = 0;

  pthread_mutex_lock(&l->mu);
  for (;;) {
    while (!l->stop && l->gen == seen)
      pthread_cond_wait(&l->go_cv, &l->mu);
    if (l->stop)
      break;
    seen = l->gen;
    enum how how = l->how;
    pthread_mutex_unlock(&l->mu);
    copy_range(l, how, w->lo, w->hi);
    pthread_mutex_lock(&l->mu);
    if (--l->running == 0)
      pthread_cond_signal(&l->done_cv);
  }
  pthread_mutex_unlock(&l->mu);
  return NULL;
}

/* ---- the API of bench.h ---- */

const char *bench_limit_name(int which)
{
  return which >= 0 && which < BENCH_LIMIT_COUNT ? lim_names[which] : "?";
}

const char *bench_limit_text(int which)
{
  return which >= 0 && which < BENCH_LIMIT_COUNT ? lim_texts[which] : "?";
}

int bench_limit_new(struct bench_limit **out, const struct bench_copy_seg *seg, size_t n,
                    int threads)
{
  struct bench_limit *l;
  sigset_t all, old;
  int rc = 0;

  *out = NULL;
  if (n == 0 || n > MAX_SEGS || threads < 1 || threads > MAX_THREADS)
    return -EINVAL;
  l = calloc(1, sizeof(*l));
  if (l == NULL)
    return -ENOMEM;
  if (stream_body == NULL)
    stream_body = stream_pick();
  memcpy(l->seg, seg, n * sizeof(*seg));
  l->nseg = n;
  for (size_t i = 0; i < n; i++)
    l->bytes += seg[i].bytes;
  l->nthreads = threads;
  pthread_mutex_init(&l->mu, NULL);
  pthread_cond_init(&l->go_cv, NULL);
  pthread_cond_init(&l->done_cv, NULL);

  /* Contiguous ranges cut on 4 KiB boundaries, the last taking the rest.
   * The threads block every signal, so ptbench's cleanup handler runs in
   * the main thread. */
  uint64_t each = (l->bytes / (uint64_t)threads) & ~(uint64_t)4095;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 0; i < threads; i++) {
    struct worker *w = &l->w[i];
    w->l = l;
    w->lo = (uint64_t)i * each;
    w->hi = i + 1 == threads ? l->bytes : (uint64_t)(i + 1) * each;
    rc = -pthread_create(&w->th, NULL, worker_main, w);
    if (rc < 0)
      break;
    l->started++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0) {
    bench_limit_free(l);
    return rc;
  }
  *out = l;
  return 0;
}

void bench_limit_free(struct bench_limit *l)
{
  if (l == NULL)
    return;
  pthread_mutex_lock(&l->mu);
  l->stop = true;
  pthread_cond_broadcast(&l->go_cv);
  pthread_mutex_unlock(&l->mu);
  for (int i = 0; i < l->started; i++)
    pthread_join(l->w[i].th, NULL);
  pthread_cond_destroy(&l->done_cv);
  pthread_cond_destroy(&l->go_cv);
  pthread_mutex_destroy(&l->mu);
  free(l);
}

double bench_limit_time(struct bench_limit *l, int which)
{
  static const enum how how_of[BENCH_LIMIT_COUNT] = {
    [BENCH_LIMIT_MEMCPY] = HOW_MEMCPY, [BENCH_LIMIT_MEMCPY_1M] = HOW_PIECES,
    [BENCH_LIMIT_STREAM] = HOW_STREAM, [BENCH_LIMIT_MEMCPY_THREADS] = HOW_MEMCPY,
    [BENCH_LIMIT_MEMCPY_1M_THREADS] = HOW_PIECES, [BENCH_LIMIT_STREAM_THREADS] = HOW_STREAM,
  };
  enum how how = how_of[which];
  double t0 = bench_now();

  if (which < BENCH_LIMIT_MEMCPY_THREADS) {
    copy_range(l, how, 0, l->bytes);
  } else {
    pthread_mutex_lock(&l->mu);
    l->how = how;
    l->running = l->started;
    l->gen++;
    pthread_cond_broadcast(&l->go_cv);
    while (l->running > 0)
      pthread_cond_wait(&l->done_cv, &l->mu);
    pthread_mutex_unlock(&l->mu);
  }
  return bench_now() - t0;
}
