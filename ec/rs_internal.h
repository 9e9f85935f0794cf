/*
 * rs_internal.h — what the ec/ files share and nobody else sees: the coder's
 * insides, the decode-table cache, the per-call thread runner, the error
 * message of the calling thread and the CRC helper.
 */
#ifndef PT_EC_RS_INTERNAL_H
#define PT_EC_RS_INTERNAL_H

#include <pthread.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>

#include "common/crc32c.h"
#include "ec/rs.h"

#define RS_MAX_THREADS 64
#define RS_CACHE_SLOTS 512u          /* decode-table patterns kept per coder */
#define RS_SLICE_SOURCE_BYTES (256u << 10) /* default: sources per slice */
#define RS_SLICE_MIN 4096u
#define RS_PAR_MIN_BYTES (1u << 20)  /* below this, one thread */

struct rs_cache_entry {
  uint64_t key;          /* src_mask << 32 | out_mask; 0 = empty */
  unsigned char *tbls;   /* 32 * k * popcount(out_mask) bytes */
};

struct rs_coder {
  unsigned k, m, g;
  unsigned threads;
  size_t slice;                        /* bytes per piece per slice */
  unsigned char matrix[RS_MAX_MEMBERS * RS_MAX_MEMBERS]; /* g x k, row-major */
  unsigned char *enc_tbls;             /* 32 * k * m: every parity row */
  unsigned char *zero;                 /* slice bytes of zeros, read-only */
  pthread_mutex_t lock;                /* guards the cache */
  struct rs_cache_entry cache[RS_CACHE_SLOTS];
  unsigned ncached;
};

/* Sets the calling thread's message and returns err. */
int rs_fail(int err, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));

/* Tables for rebuilding the positions of out_mask (ascending) from the
 * positions of src_mask (exactly k bits, ascending). OUT: *tbls, valid for
 * the coder's lifetime, or, when the cache is full, a fresh allocation also
 * stored in *owned for the caller to free(). */
int rs_tables_get(struct rs_coder *c, uint32_t src_mask, uint32_t out_mask,
                  unsigned char **tbls, unsigned char **owned);

/* Per-worker scratch for a parallel call. */
struct rs_worker {
  unsigned char *scratch;
  size_t scratch_bytes;
};

/* Runs fn(arg, t, w) for t = 0..ntasks-1 on up to c->threads threads (one
 * when work_bytes is small). Each worker gets scratch_bytes of 64-byte
 * aligned scratch. The first error a task returns stops the handing out of
 * further tasks and is returned. */
typedef int (*rs_task_fn)(void *arg, size_t task, struct rs_worker *w);
int rs_run(const struct rs_coder *c, size_t ntasks, size_t scratch_bytes,
           uint64_t work_bytes, rs_task_fn fn, void *arg);


/* Shared by rs_group.c and rs_decode.c. */
int rs_group_check(const struct rs_coder *c, const struct rs_layout *l,
                   const struct rs_member *mb, const char *what);
/* Length of slice s of a chunk. */
size_t rs_slice_len(const struct rs_coder *c, const struct rs_layout *l,
                    size_t s);
/* Slice [off, off+len) of data chunk `chunk` of member i (mb[i].data),
 * padding read as zeros: a pointer into the member, the coder's zero slice,
 * or bounce (len bytes) filled with the straddling slice. */
unsigned char *rs_data_in(const struct rs_coder *c, const struct rs_layout *l,
                          const struct rs_member *mb, unsigned i,
                          unsigned chunk, size_t off, size_t len,
                          unsigned char *bounce);

/* 64-byte aligned memory of any size (aligned_alloc wants a multiple of the
 * alignment), released with free(). NULL when out of memory. */
static inline void *rs_alloc(size_t bytes)
{
  void *p = NULL;
  return posix_memalign(&p, RS_ALIGN, bytes ? bytes : RS_ALIGN) == 0 ? p : NULL;
}

static inline unsigned rs_popcount(uint32_t x)
{
  return (unsigned)__builtin_popcount(x);
}

#endif /* PT_EC_RS_INTERNAL_H */
