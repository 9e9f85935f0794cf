/*
 * snap_populate.c — the background page-table fill of snap_populate.h.
 *
 * Invariants: mu guards claimed[], hint_*, next, stop and error; a chunk is
 * claimed once, by the thread, and then populated without the lock; the
 * mapping is only read by the kernel on our behalf (MADV_POPULATE_READ),
 * never written. A kernel without MADV_POPULATE_READ (before 5.14) answers
 * EINVAL and populating ends at once: the copies fault their pages in as
 * they always did. No fallback touches the pages itself, because a touch of
 * a truncated object raises SIGBUS, while madvise answers EFAULT.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdlib.h>
#include <sys/mman.h>

#include "snapshot/snap_populate.h"

/* Linux 5.14; older headers lack the name, older kernels answer EINVAL. */
#ifndef MADV_POPULATE_READ
#define MADV_POPULATE_READ 22
#endif

struct snap_populate {
  uint8_t *base;
  uint64_t bytes;
  size_t nchunks;
  pthread_t thread;

  pthread_mutex_t mu;
  unsigned char *claimed; /* one flag per chunk */
  size_t next;            /* every chunk below it is claimed */
  size_t hint_first, hint_end; /* [first, end) asked for next */
  size_t done;            /* chunks finished */
  bool stop;
  bool ended;             /* the thread left its loop */
  int error;
};

/* The next chunk to populate, claimed; nchunks when there is none. Under mu. */
static size_t claim_locked(struct snap_populate *p)
{
  for (size_t i = p->hint_first; i < p->hint_end; i++) {
    if (!p->claimed[i]) {
      p->claimed[i] = 1;
      p->hint_first = i + 1;
      return i;
    }
  }
  p->hint_first = p->hint_end = 0;
  while (p->next < p->nchunks && p->claimed[p->next])
    p->next++;
  if (p->next == p->nchunks)
    return p->nchunks;
  p->claimed[p->next] = 1;
  return p->next++;
}

static int populate_chunk(struct snap_populate *p, size_t i)
{
  uint64_t off = (uint64_t)i * SNAP_POPULATE_CHUNK;
  uint64_t len = p->bytes - off < SNAP_POPULATE_CHUNK ? p->bytes - off
                                                      : SNAP_POPULATE_CHUNK;

  for (int tries = 0; tries < 3; tries++) {
    if (madvise(p->base + off, len, MADV_POPULATE_READ) == 0)
      return 0;
    if (errno != EINTR && errno != EAGAIN)
      break;
  }
  return -errno;
}

static void *populate_main(void *arg)
{
  struct snap_populate *p = arg;
  struct sched_param sp = { .sched_priority = 0 };

  pthread_setname_np(pthread_self(), "pt-populate");
  /* As the copy workers: never preempt the trainer's own threads. */
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  pthread_mutex_lock(&p->mu);
  while (!p->stop) {
    size_t i = claim_locked(p);
    if (i == p->nchunks)
      break;
    pthread_mutex_unlock(&p->mu);
    int rc = populate_chunk(p, i);
    pthread_mutex_lock(&p->mu);
    if (rc != 0) {
      p->error = rc;
      break;
    }
    p->done++;
  }
  p->ended = true;
  pthread_mutex_unlock(&p->mu);
  return NULL;
}

int snap_populate_start(struct snap_populate **out, void *base, uint64_t bytes)
{
  struct snap_populate *p;
  sigset_t all, old;
  int rc;

  *out = NULL;
  if (base == NULL || bytes == 0)
    return -EINVAL;
  p = calloc(1, sizeof(*p));
  if (p == NULL)
    return -ENOMEM;
  p->base = base;
  p->bytes = bytes;
  p->nchunks = (size_t)((bytes + SNAP_POPULATE_CHUNK - 1) / SNAP_POPULATE_CHUNK);
  p->claimed = calloc(p->nchunks, 1);
  if (p->claimed == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  rc = -pthread_mutex_init(&p->mu, NULL);
  if (rc != 0)
    goto out_free;
  /* Handlers run in the application's threads, never in this one. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&p->thread, NULL, populate_main, p);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0)
    goto out_mutex;
  *out = p;
  return 0;

out_mutex:
  pthread_mutex_destroy(&p->mu);
out_free:
  free(p->claimed);
  free(p);
  return rc;
}

void snap_populate_hint(struct snap_populate *p, const void *addr,
                        uint64_t bytes)
{
  const uint8_t *a = addr;

  if (p == NULL || a == NULL || bytes == 0 || a < p->base ||
      a >= p->base + p->bytes)
    return;
  uint64_t off = (uint64_t)(a - p->base);
  uint64_t end = bytes > p->bytes - off ? p->bytes : off + bytes;
  pthread_mutex_lock(&p->mu);
  p->hint_first = (size_t)(off / SNAP_POPULATE_CHUNK);
  p->hint_end = (size_t)((end + SNAP_POPULATE_CHUNK - 1) / SNAP_POPULATE_CHUNK);
  pthread_mutex_unlock(&p->mu);
}

bool snap_populate_is_done(struct snap_populate *p)
{
  bool done;

  if (p == NULL)
    return true;
  pthread_mutex_lock(&p->mu);
  done = p->ended || p->done == p->nchunks;
  pthread_mutex_unlock(&p->mu);
  return done;
}

int snap_populate_error(struct snap_populate *p)
{
  int rc;

  if (p == NULL)
    return 0;
  pthread_mutex_lock(&p->mu);
  rc = p->error;
  pthread_mutex_unlock(&p->mu);
  return rc;
}

void snap_populate_stop(struct snap_populate *p)
{
  if (p == NULL)
    return;
  pthread_mutex_lock(&p->mu);
  p->stop = true;
  pthread_mutex_unlock(&p->mu);
  pthread_join(p->thread, NULL);
  pthread_mutex_destroy(&p->mu);
  free(p->claimed);
  free(p);
}
