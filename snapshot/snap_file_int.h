/*
 * snap_file_int.h — what the reader (snap_file.c) and the writer
 * (snap_file_write.c) of a step file share: the header's field offsets, the
 * open file, and the helpers both use. Not an interface (snap_file.h is).
 */
#ifndef PT_SNAP_FILE_INT_H
#define PT_SNAP_FILE_INT_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "snapshot/snap_file.h"
#include "snapshot/snap_internal.h"

enum {
  F_MAGIC = 0,
  F_VERSION = 8,
  F_HEADER_BYTES = 12,
  F_FILE_BYTES = 16,
  F_JOB = 24,
  F_INSTANCE = 88,
  F_RANK = 104,
  F_WORLD = 108,
  F_STEP = 112,
  F_NREGIONS = 120,
  F_BLOCK_SIZE = 124,
  F_NBLOCKS = 128,
  F_BLOB_BYTES = 132,
  F_BLOB_CRC = 136,
  F_SLOT_BYTES = 144,
  F_BLOB_OFF = 152,
  F_TIME = 160,
  F_MARK = 168,
  F_CRC = 188,
};
_Static_assert(F_CRC + 4 == SNAP_FILE_PREAMBLE, "the preamble's last field");
_Static_assert(F_JOB + SNAP_JOB_MAX == F_INSTANCE, "job name field");

#define CHUNK_DEFAULT ((uint32_t)8 << 20)

struct snap_file {
  int fd;
  char name[256];       /* for messages */
  uint8_t *hdr;         /* header_bytes, as read and checked */
  struct snap_file_info info;
  struct snap_region *regions;
  const uint32_t *table; /* into hdr: nblocks + SNAP_TABLE_TRAILER */
};

static inline uint64_t snap_file_align_up(uint64_t v, uint64_t a) { return (v + a - 1) / a * a; }

static inline uint64_t snap_file_now_ns(clockid_t c)
{
  struct timespec ts;
  clock_gettime(c, &ts);
  return (uint64_t)ts.tv_sec * 1000000000ull + (uint64_t)ts.tv_nsec;
}

static inline uint64_t snap_file_header_bytes(uint32_t nregions, uint32_t nblocks)
{
  return snap_file_align_up(SNAP_FILE_PREAMBLE + (uint64_t)nregions * REG_ENTRY_BYTES +
                      ((uint64_t)nblocks + SNAP_TABLE_TRAILER) * 4,
                  SNAP_FILE_ALIGN);
}

static inline bool snap_file_cancelled(const struct snap_file_opts *o)
{
  return o != NULL && o->cancel != NULL && atomic_load(o->cancel);
}

static inline uint32_t snap_file_chunk(const struct snap_file_opts *o)
{
  uint32_t c = o != NULL && o->chunk_bytes > 0 ? o->chunk_bytes : CHUNK_DEFAULT;
  return (uint32_t)snap_file_align_up(c, SNAP_FILE_ALIGN);
}

/* CRC32C of the header (the preamble less its CRC field, then the tables
 * and padding up to hbytes). */
uint32_t snap_file_header_crc(const uint8_t *h, uint64_t hbytes);
/* Sleeps as long as moving done bytes since t0 (CLOCK_MONOTONIC ns) at
 * o->rate_bps calls for; at once when cancelled. */
void snap_file_pace(const struct snap_file_opts *o, uint64_t t0, uint64_t done);
/* pread (write false) or pwrite of all len bytes at off: PT_OK, -errno,
 * -ENODATA (a read past the end), -EIO (a write that wrote nothing). */
int snap_file_io(int fd, void *buf, size_t len, uint64_t off, bool write);

/* Reads (and writes) of a store's mapping, each under snap_fault_run,
 * holding nothing a jump out of them would leak: -EFAULT when the object
 * shrank. blocks: the blocks of f's regions that lie wholly in data[0,
 * have) and are not checked yet (*next, in order), against f's table:
 * PT_ECHECKSUM with a sentence. */
int snap_file_guarded_copy(const struct snap_store *s, void *dst,
                           const void *src, size_t n);
int snap_file_guarded_get(const struct snap_store *s, uint32_t slot,
                          struct snap_slot_info *out);
int snap_file_guarded_blocks(const struct snap_store *s,
                             const struct snap_file *f, const uint8_t *data,
                             uint64_t have, uint32_t *next, char *err,
                             size_t errlen);

#endif /* PT_SNAP_FILE_INT_H */
