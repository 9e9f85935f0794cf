/*
 * kernels_host.h — the host copy pool shared by both backends (internal).
 *
 * A pool owns worker threads that sleep until a job arrives. A job is a list
 * of tasks, each a host-to-host transfer cut into KERN_BLOCK_SIZE blocks; the
 * workers (and, for a synchronous job, the calling thread) claim blocks from
 * one atomic counter, so the work spreads evenly whatever the task sizes. Per
 * block a task copies, copies and computes the block's CRC32C, or checks the
 * source against a stored CRC32C (and copies). One job runs at a time.
 *
 * kernels_cpu.c implements kernels.h with one pool; kernels_cuda.cu uses one
 * for host-resident transfers and for checking data before it goes to the
 * device. Nothing here touches device memory.
 */
#ifndef PT_KERNELS_HOST_H
#define PT_KERNELS_HOST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "kernels/kernels.h"

#ifdef __cplusplus
extern "C" {
#endif

enum kern_op {
  KERN_OP_SKIP = 0,    /* nothing; the task has no blocks */
  KERN_OP_COPY,        /* dst <- src */
  KERN_OP_SAVE,        /* dst <- src; crcs[b] <- CRC32C of the copied block
                        * (computed on dst right after copying it); crcs
                        * NULL: a plain copy */
  KERN_OP_VERIFY_COPY, /* CRC32C of the src block checked against crcs[b],
                        * then dst <- src (the block is copied even when bad) */
  KERN_OP_VERIFY,      /* CRC32C of the src block checked; dst unused */
};

struct kern_task {
  void *dst;
  const void *src;
  size_t bytes;   /* 0: no blocks */
  uint32_t *crcs; /* kern_nblocks(bytes) entries; OUT for SAVE, IN to VERIFY* */
  int op;         /* enum kern_op */
};

struct kern_pool;

/* OUT: *out, freed with kern_pool_free(). threads is clamped to 1..64. The
 * workers block every signal, so handlers run in the application's threads. */
int kern_pool_new(struct kern_pool **out, int threads);
/* Waits for the job in flight, stops and joins the workers, frees. p may be
 * NULL. */
void kern_pool_free(struct kern_pool *p);

/* Starts tasks t[0..n) on the workers and returns at once (the array is
 * copied). PT_EINFLIGHT while another job runs. A job without blocks
 * completes at once and leaves nothing in flight. */
int kern_pool_start(struct kern_pool *p, const struct kern_task *t, size_t n);
/* True while a job started by kern_pool_start() has not completed. */
bool kern_pool_is_busy(struct kern_pool *p);
/* Waits until the started job completes or the CLOCK_MONOTONIC time
 * *deadline passes (NULL: no deadline). Returns the job's result (PT_OK when
 * nothing is in flight) or -ETIMEDOUT, the job going on. */
int kern_pool_wait(struct kern_pool *p, const struct timespec *deadline);

/* Runs tasks t[0..n) with the workers and the calling thread, and returns when
 * every block is done: PT_OK, PT_EINFLIGHT (another job runs; nothing done),
 * or PT_ECHECKSUM with the lowest bad (task, block) in *bad_task, *bad_block
 * (each may be NULL). */
int kern_pool_run(struct kern_pool *p, const struct kern_task *t, size_t n,
                  size_t *bad_task, size_t *bad_block);

/* OUT: *out, n tasks doing op on x[0..n) (NULL when n is 0); free() it.
 * PT_OK or -ENOMEM. */
int kern_tasks_make(struct kern_task **out, const struct kern_xfer *x,
                    size_t n, int op);

/* OUT: *deadline, timeout_ms from now on CLOCK_MONOTONIC. */
void kern_deadline_set(struct timespec *deadline, int timeout_ms);
/* True once CLOCK_MONOTONIC has reached *deadline. */
bool kern_deadline_is_past(const struct timespec *deadline);

#ifdef __cplusplus
}
#endif

#endif /* PT_KERNELS_HOST_H */
