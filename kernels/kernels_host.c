/*
 * kernels_host.c — the host copy pool (kernels_host.h) and the host CRC32C
 * helpers of kernels.h, compiled into both backends.
 *
 * Invariants:
 * - At most one job is in flight (pool->job); the pool holds a reference on
 *   it until its last block completes, every worker that joined it holds one
 *   until it has left, and the caller of a synchronous job holds one until it
 *   has read the outcome. Whoever drops the last reference frees the job, so a
 *   worker that is slow to leave never touches a later job's memory.
 * - Blocks are claimed from job->next and counted in job->done; the worker
 *   whose increment of done reaches nblocks completes the job. Every write to
 *   a destination and a CRC table happens before that increment (release), so
 *   whoever sees the job complete (under the mutex) sees all data.
 * - The lowest damaged block of a verifying job is kept with an atomic
 *   minimum, so the report does not depend on which thread saw what first.
 *
 * Performance: a plain copy uses non-temporal stores; a save copies
 * SUB_CHUNK bytes with memcpy and computes their CRC32C at once, while the
 * destination is still in L2; a restore computes the CRC32C of a source
 * sub-chunk and then copies it out of cache. On the 2-core development
 * machine (1 GiB, one copy thread, against a 1 GiB memcpy at ~20 GB/s) that
 * gave: plain copy 1.4x memcpy, save 0.8-0.9x, restore 1.1x (worker and
 * caller); sub-chunks of 64 KiB to 512 KiB measured the same.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "kernels/kernels_host.h"

/* Bytes copied before their CRC is computed: small enough that the copied
 * data is still in L2, big enough to amortise ISA-L's per-call setup. */
#define SUB_CHUNK ((size_t)128 << 10)
/* Below this a plain memcpy is as fast as streaming stores. */
#define STREAM_MIN ((size_t)16 << 10)
#define POOL_MAX_THREADS 64
#define NO_BAD_BLOCK SIZE_MAX

struct job {
  atomic_size_t next; /* next global block index to claim */
  atomic_size_t done; /* blocks finished */
  atomic_size_t bad;  /* lowest damaged global block, NO_BAD_BLOCK if none */
  size_t nblocks;
  size_t n;
  int refs; /* under the pool mutex */
  bool async;
  struct kern_task *tasks;
  size_t *first; /* n + 1 entries: global index of task i's first block */
};

struct kern_pool {
  pthread_mutex_t mu;
  pthread_cond_t work_cv; /* workers: a job was posted, or stop */
  pthread_cond_t done_cv; /* on CLOCK_MONOTONIC: the job in flight completed */
  struct job *job;        /* in flight, NULL when idle */
  uint64_t gen;           /* counts posted jobs; a worker joins each once */
  int result;             /* outcome of the last started job, until waited */
  bool stopping;
  int nthreads;
  pthread_t threads[POOL_MAX_THREADS];
};

/* ---- copy primitives ---------------------------------------------------- */

/* Copies n bytes, n a multiple of 64, to a 64-byte aligned d with stores
 * that bypass the cache. */
typedef void (*stream_body_fn)(unsigned char *d, const unsigned char *s,
                               size_t n);

#if defined(__x86_64__)
#include <immintrin.h>

static void stream_body_sse2(unsigned char *d, const unsigned char *s, size_t n)
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
  _mm_sfence();
}

__attribute__((target("avx2"))) static void
stream_body_avx2(unsigned char *d, const unsigned char *s, size_t n)
{
  for (size_t i = 0; i < n; i += 64) {
    __m256i a = _mm256_loadu_si256((const __m256i *)(s + i));
    __m256i b = _mm256_loadu_si256((const __m256i *)(s + i + 32));
    _mm256_stream_si256((__m256i *)(d + i), a);
    _mm256_stream_si256((__m256i *)(d + i + 32), b);
  }
  _mm_sfence();
}

static stream_body_fn stream_body_pick(void)
{
  __builtin_cpu_init();
  return __builtin_cpu_supports("avx2") ? stream_body_avx2 : stream_body_sse2;
}
#else
static void stream_body_memcpy(unsigned char *d, const unsigned char *s,
                               size_t n)
{
  memcpy(d, s, n);
}

static stream_body_fn stream_body_pick(void)
{
  return stream_body_memcpy;
}
#endif

static stream_body_fn stream_body;
static pthread_once_t stream_body_once = PTHREAD_ONCE_INIT;

static void stream_body_init(void)
{
  stream_body = stream_body_pick();
}

/* A copy whose destination is not read again soon: the plain save path. */
static void copy_stream(unsigned char *d, const unsigned char *s, size_t n)
{
  if (n < STREAM_MIN) {
    memcpy(d, s, n);
    return;
  }
  size_t head = (size_t)(-(uintptr_t)d & 63);
  memcpy(d, s, head);
  size_t body = (n - head) & ~(size_t)63;
  stream_body(d + head, s + head, body);
  memcpy(d + head + body, s + head + body, n - head - body);
}

/* Save: copy a sub-chunk, then checksum what landed in dst while it is hot.
 * (Checksumming the source and streaming it out, as restore does, saves
 * faster, 7.3 against 5.2 GB/s at 1 GiB here, but the training step beside
 * it slowed by 1.18-1.20x against 0.98x in paired ptbench runs: a save runs
 * while the trainer computes, a restore does not.) */
static uint32_t copy_crc(unsigned char *d, const unsigned char *s, size_t n)
{
  uint32_t crc = CRC32C_SEED;
  for (size_t o = 0; o < n; o += SUB_CHUNK) {
    size_t m = n - o < SUB_CHUNK ? n - o : SUB_CHUNK;
    memcpy(d + o, s + o, m);
    crc = crc32c_update(crc, d + o, m);
  }
  return crc;
}

/* Restore: checksum a source sub-chunk, which brings it into L2, then copy
 * it out of the cache with streaming stores, so that memory sees each byte
 * read once and written once (a cached store would also read the
 * destination line first). Nothing else runs: the trainer waits for it. */
static uint32_t crc_copy(unsigned char *d, const unsigned char *s, size_t n)
{
  uint32_t crc = CRC32C_SEED;
  for (size_t o = 0; o < n; o += SUB_CHUNK) {
    size_t m = n - o < SUB_CHUNK ? n - o : SUB_CHUNK;
    crc = crc32c_update(crc, s + o, m);
    copy_stream(d + o, s + o, m);
  }
  return crc;
}

/* ---- host CRC helpers of kernels.h ------------------------------------- */

void kern_crc_blocks(const void *buf, size_t bytes, uint32_t *crcs)
{
  const unsigned char *p = buf;

  for (size_t b = 0, off = 0; off < bytes; b++, off += KERN_BLOCK_SIZE) {
    size_t m = bytes - off < KERN_BLOCK_SIZE ? bytes - off : KERN_BLOCK_SIZE;
    crcs[b] = crc32c_update(CRC32C_SEED, p + off, m);
  }
}

/* ---- deadlines ---------------------------------------------------------- */

int kern_tasks_make(struct kern_task **out, const struct kern_xfer *x,
                    size_t n, int op)
{
  struct kern_task *t = NULL;

  if (n > 0) {
    t = calloc(n, sizeof(*t));
    if (t == NULL)
      return -ENOMEM;
  }
  for (size_t i = 0; i < n; i++)
    t[i] = (struct kern_task){.dst = x[i].dst, .src = x[i].src,
                              .bytes = x[i].bytes, .crcs = x[i].crcs,
                              .op = op};
  *out = t;
  return PT_OK;
}

void kern_deadline_set(struct timespec *deadline, int timeout_ms)
{
  clock_gettime(CLOCK_MONOTONIC, deadline);
  if (timeout_ms <= 0)
    return;
  deadline->tv_sec += timeout_ms / 1000;
  deadline->tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
  if (deadline->tv_nsec >= 1000000000L) {
    deadline->tv_sec++;
    deadline->tv_nsec -= 1000000000L;
  }
}

bool kern_deadline_is_past(const struct timespec *deadline)
{
  struct timespec now;

  clock_gettime(CLOCK_MONOTONIC, &now);
  return now.tv_sec > deadline->tv_sec ||
         (now.tv_sec == deadline->tv_sec && now.tv_nsec >= deadline->tv_nsec);
}

/* ---- jobs --------------------------------------------------------------- */

static bool task_is_valid(const struct kern_task *t)
{
  if (t->op < KERN_OP_SKIP || t->op > KERN_OP_VERIFY)
    return false;
  if (t->op == KERN_OP_SKIP || t->bytes == 0)
    return true;
  if (t->src == NULL)
    return false;
  if (t->op != KERN_OP_VERIFY && t->dst == NULL)
    return false;
  if ((t->op == KERN_OP_VERIFY_COPY || t->op == KERN_OP_VERIFY) &&
      t->crcs == NULL)
    return false;
  return true;
}

/* OUT: *out with refs 0, owned by the caller until posted. */
static int job_new(struct job **out, const struct kern_task *t, size_t n,
                   bool async)
{
  if (n > 0 && t == NULL)
    return -EINVAL;
  if (n > (SIZE_MAX - sizeof(struct job)) /
              (sizeof(struct kern_task) + sizeof(size_t)) - 1)
    return -EINVAL;
  for (size_t i = 0; i < n; i++)
    if (!task_is_valid(&t[i]))
      return -EINVAL;

  struct job *j = malloc(sizeof(*j) + n * sizeof(struct kern_task) +
                         (n + 1) * sizeof(size_t));
  if (j == NULL)
    return -ENOMEM;
  j->tasks = (struct kern_task *)(j + 1);
  j->first = (size_t *)(j->tasks + n);
  j->n = n;
  j->refs = 0;
  j->async = async;
  size_t nblocks = 0;
  for (size_t i = 0; i < n; i++) {
    j->tasks[i] = t[i];
    if (j->tasks[i].op == KERN_OP_SAVE && j->tasks[i].crcs == NULL)
      j->tasks[i].op = KERN_OP_COPY;
    j->first[i] = nblocks;
    if (j->tasks[i].op != KERN_OP_SKIP)
      nblocks += kern_nblocks(j->tasks[i].bytes);
  }
  j->first[n] = nblocks;
  j->nblocks = nblocks;
  atomic_init(&j->next, 0);
  atomic_init(&j->done, 0);
  atomic_init(&j->bad, NO_BAD_BLOCK);
  *out = j;
  return PT_OK;
}

static void job_unref_locked(struct job *j)
{
  if (--j->refs == 0)
    free(j);
}

static void job_mark_bad(struct job *j, size_t g)
{
  size_t cur = atomic_load_explicit(&j->bad, memory_order_relaxed);

  while (g < cur && !atomic_compare_exchange_weak_explicit(
                        &j->bad, &cur, g, memory_order_relaxed,
                        memory_order_relaxed))
    ;
}

static void block_do(struct job *j, size_t ti, size_t b, size_t g)
{
  const struct kern_task *t = &j->tasks[ti];
  size_t off = b * KERN_BLOCK_SIZE;
  size_t len = t->bytes - off < KERN_BLOCK_SIZE ? t->bytes - off
                                                : KERN_BLOCK_SIZE;
  const unsigned char *s = (const unsigned char *)t->src + off;

  switch (t->op) {
  case KERN_OP_COPY:
    copy_stream((unsigned char *)t->dst + off, s, len);
    break;
  case KERN_OP_SAVE:
    t->crcs[b] = copy_crc((unsigned char *)t->dst + off, s, len);
    break;
  case KERN_OP_VERIFY_COPY:
    if (crc_copy((unsigned char *)t->dst + off, s, len) != t->crcs[b])
      job_mark_bad(j, g);
    break;
  case KERN_OP_VERIFY:
    if (crc32c_update(CRC32C_SEED, s, len) != t->crcs[b])
      job_mark_bad(j, g);
    break;
  default:
    break;
  }
}

static void job_finish(struct kern_pool *p, struct job *j)
{
  pthread_mutex_lock(&p->mu);
  p->job = NULL;
  if (j->async)
    p->result = PT_OK;
  pthread_cond_broadcast(&p->done_cv);
  job_unref_locked(j);
  pthread_mutex_unlock(&p->mu);
}

/* Claims and runs blocks until none is left; the caller holds a reference. */
static void job_work(struct kern_pool *p, struct job *j)
{
  size_t ti = 0;

  for (;;) {
    size_t g = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
    if (g >= j->nblocks)
      return;
    /* Each participant's claims increase, so its task cursor only advances. */
    while (g >= j->first[ti + 1])
      ti++;
    block_do(j, ti, g - j->first[ti], g);
    if (atomic_fetch_add_explicit(&j->done, 1, memory_order_acq_rel) + 1 ==
        j->nblocks)
      job_finish(p, j);
  }
}

/* Makes j the job in flight, or returns PT_EINFLIGHT. Under the mutex; the
 * caller wakes the workers after unlocking, so that they do not wake only to
 * block on the mutex it still holds. */
static int job_post_locked(struct kern_pool *p, struct job *j)
{
  if (p->job != NULL)
    return PT_EINFLIGHT;
  j->refs = 1;
  p->job = j;
  p->gen++;
  return PT_OK;
}

/* ---- the pool ----------------------------------------------------------- */

static void *worker_main(void *arg)
{
  struct kern_pool *p = arg;
  uint64_t seen = 0;

  pthread_setname_np(pthread_self(), "pt-copy");
  /* SCHED_BATCH: same CPU share, but a woken worker does not preempt the
   * thread that posted the job, so kern_save_start() returns in
   * microseconds even when workers and callers outnumber the cores. */
  struct sched_param sp = {.sched_priority = 0};
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  pthread_mutex_lock(&p->mu);
  for (;;) {
    while (!p->stopping && (p->job == NULL || p->gen == seen))
      pthread_cond_wait(&p->work_cv, &p->mu);
    if (p->stopping)
      break;
    struct job *j = p->job;
    seen = p->gen;
    j->refs++;
    pthread_mutex_unlock(&p->mu);
    job_work(p, j);
    pthread_mutex_lock(&p->mu);
    job_unref_locked(j);
  }
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

static void pool_stop(struct kern_pool *p)
{
  pthread_mutex_lock(&p->mu);
  p->stopping = true;
  pthread_cond_broadcast(&p->work_cv);
  pthread_mutex_unlock(&p->mu);
  for (int i = 0; i < p->nthreads; i++)
    pthread_join(p->threads[i], NULL);
  p->nthreads = 0;
}

int kern_pool_new(struct kern_pool **out, int threads)
{
  pthread_condattr_t ca;
  sigset_t all, old;
  int rc;

  if (out == NULL)
    return -EINVAL;
  pthread_once(&stream_body_once, stream_body_init);
  if (threads < 1)
    threads = 1;
  if (threads > POOL_MAX_THREADS)
    threads = POOL_MAX_THREADS;

  struct kern_pool *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  rc = -pthread_mutex_init(&p->mu, NULL);
  if (rc < 0)
    goto out_free;
  rc = -pthread_cond_init(&p->work_cv, NULL);
  if (rc < 0)
    goto out_mutex;
  rc = -pthread_condattr_init(&ca);
  if (rc < 0)
    goto out_work_cv;
  rc = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (rc == 0)
    rc = -pthread_cond_init(&p->done_cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc < 0)
    goto out_work_cv;

  /* Workers inherit a mask that blocks every signal. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  for (int i = 0; i < threads; i++) {
    rc = -pthread_create(&p->threads[i], NULL, worker_main, p);
    if (rc < 0)
      break;
    p->nthreads++;
  }
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc < 0)
    goto out_threads;
  *out = p;
  return PT_OK;

out_threads:
  pool_stop(p);
  pthread_cond_destroy(&p->done_cv);
out_work_cv:
  pthread_cond_destroy(&p->work_cv);
out_mutex:
  pthread_mutex_destroy(&p->mu);
out_free:
  free(p);
  return rc;
}

void kern_pool_free(struct kern_pool *p)
{
  if (p == NULL)
    return;
  /* A job in flight always completes: the workers finish it. */
  pthread_mutex_lock(&p->mu);
  while (p->job != NULL)
    pthread_cond_wait(&p->done_cv, &p->mu);
  pthread_mutex_unlock(&p->mu);
  pool_stop(p);
  pthread_cond_destroy(&p->done_cv);
  pthread_cond_destroy(&p->work_cv);
  pthread_mutex_destroy(&p->mu);
  free(p);
}

int kern_pool_start(struct kern_pool *p, const struct kern_task *t, size_t n)
{
  struct job *j;
  int rc;

  if (p == NULL)
    return -EINVAL;
  rc = job_new(&j, t, n, true);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&p->mu);
  if (p->job != NULL) {
    rc = PT_EINFLIGHT;
  } else if (j->nblocks == 0) {
    p->result = PT_OK;
    rc = PT_OK;
  } else {
    rc = job_post_locked(p, j);
    j = NULL; /* the pool's now */
  }
  pthread_mutex_unlock(&p->mu);
  if (j == NULL)
    pthread_cond_broadcast(&p->work_cv);
  free(j);
  return rc;
}

bool kern_pool_is_busy(struct kern_pool *p)
{
  bool busy;

  if (p == NULL)
    return false;
  pthread_mutex_lock(&p->mu);
  busy = p->job != NULL && p->job->async;
  pthread_mutex_unlock(&p->mu);
  return busy;
}

int kern_pool_wait(struct kern_pool *p, const struct timespec *deadline)
{
  int rc;

  if (p == NULL)
    return PT_OK;
  pthread_mutex_lock(&p->mu);
  while (p->job != NULL && p->job->async) {
    if (deadline == NULL) {
      pthread_cond_wait(&p->done_cv, &p->mu);
    } else if (pthread_cond_timedwait(&p->done_cv, &p->mu, deadline) ==
                   ETIMEDOUT &&
               p->job != NULL && p->job->async) {
      pthread_mutex_unlock(&p->mu);
      return -ETIMEDOUT;
    }
  }
  rc = p->result;
  p->result = PT_OK;
  pthread_mutex_unlock(&p->mu);
  return rc;
}

int kern_pool_run(struct kern_pool *p, const struct kern_task *t, size_t n,
                  size_t *bad_task, size_t *bad_block)
{
  struct job *j;
  int rc;

  if (p == NULL)
    return -EINVAL;
  rc = job_new(&j, t, n, false);
  if (rc < 0)
    return rc;
  pthread_mutex_lock(&p->mu);
  if (j->nblocks == 0 && p->job == NULL) {
    pthread_mutex_unlock(&p->mu);
    free(j);
    return PT_OK;
  }
  rc = job_post_locked(p, j);
  if (rc < 0) {
    pthread_mutex_unlock(&p->mu);
    free(j);
    return rc;
  }
  j->refs++; /* the caller's */
  pthread_mutex_unlock(&p->mu);
  pthread_cond_broadcast(&p->work_cv);

  job_work(p, j);

  pthread_mutex_lock(&p->mu);
  /* Only blocks already claimed by workers remain: a bounded wait. */
  while (p->job == j)
    pthread_cond_wait(&p->done_cv, &p->mu);
  size_t g = atomic_load_explicit(&j->bad, memory_order_relaxed);
  if (g != NO_BAD_BLOCK) {
    size_t ti = 0;
    while (g >= j->first[ti + 1])
      ti++;
    if (bad_task != NULL)
      *bad_task = ti;
    if (bad_block != NULL)
      *bad_block = g - j->first[ti];
    rc = PT_ECHECKSUM;
  }
  job_unref_locked(j);
  pthread_mutex_unlock(&p->mu);
  return rc;
}
