/*
 * snap_internal.h — what the snapshot/ files share and nothing outside them
 * sees: the open store, the computed layout of an object, and the byte
 * offsets of snap_store.h's layout table as named constants.
 *
 * Invariant: a struct snap_store exists only for a mapping whose header,
 * region table and slot states were validated (snap_layout_parse), so every
 * offset cached in it lies inside the mapping.
 */
#ifndef PT_SNAP_INTERNAL_H
#define PT_SNAP_INTERNAL_H

#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdint.h>
#include <string.h>

#include "common/crc32c.h"
#include "snapshot/snap_store.h"

/* Integers in the object are little-endian and the slot states are native
 * atomics in the mapping, so the host must be little-endian too. */
_Static_assert(__BYTE_ORDER__ == __ORDER_LITTLE_ENDIAN__,
               "the snapshot layout assumes a little-endian host");
_Static_assert(ATOMIC_INT_LOCK_FREE == 2 && ATOMIC_LLONG_LOCK_FREE == 2,
               "slot-table atomics must be lock-free to work across processes");

/* Header fields (offsets from the start of the object). */
enum {
  HDR_MAGIC = 0,
  HDR_VERSION = 8,
  HDR_HEADER_BYTES = 12,
  HDR_TOTAL = 16,
  HDR_JOB = 24,
  HDR_RANK = 88,
  HDR_WORLD = 92,
  HDR_NSLOTS = 96,
  HDR_NREGIONS = 100,
  HDR_BLOCK_SIZE = 104,
  HDR_NBLOCKS = 108,
  HDR_SLOT_BYTES = 112,
  HDR_STRIDE = 120,
  HDR_REGION_OFF = 128,
  HDR_SLOT_OFF = 136,
  HDR_CRC_OFF = 144,
  HDR_DATA_OFF = 152,
  HDR_PARITY_OFF = 160,
  HDR_PARITY_BYTES = 168,
  HDR_CTIME = 176,
  HDR_INSTANCE = 184, /* SNAP_INSTANCE_BYTES */
  HDR_BLOB_MAX = 200,
  HDR_BLOB_OFF = 208,
  HDR_EC_K = 216,
  HDR_EC_M = 220,
  HDR_PARITY_STRIDE = 224,
  HDR_CRC = 232,
  HDR_CRC_COVERS = 232, /* bytes 0..231 */
};

/* Region table entry fields. */
enum {
  REG_ENTRY_BYTES = 320,
  REG_NAME = 0, /* SNAP_NAME_MAX */
  REG_BYTES = 256,
  REG_OFFSET = 264,
  REG_KIND = 272,
  REG_FIRST_BLOCK = 276,
  REG_NBLOCKS = 280,
  REG_CRC = 316,
  REG_CRC_COVERS = 316, /* bytes 0..315 */
};

/* Slot table entry fields. */
enum {
  SLOT_ENTRY_BYTES = 64,
  SLOT_WORD = 0,       /* u64 atomic: state (low half), record CRC (high) */
  SLOT_STATE = 0,
  SLOT_RECORD_CRC = 4,
  SLOT_STEP = 8,
  SLOT_GENERATION = 16,
  SLOT_T_WRITING = 24,
  SLOT_T_SEALED = 32,
  SLOT_T_COMMITTED = 40,
  SLOT_TABLE_CRC = 48,
  SLOT_BLOB_BYTES = 52,
  SLOT_BLOB_CRC = 56,
  SLOT_PAD = 60,
  SLOT_CRC_COVERS = 60, /* the state, then bytes 8..63 */
};

#define SNAP_CRC_TABLE_ALIGN 64u
/* Caps that keep every size computation far from overflow and every
 * checksum table shorter than ISA-L's int length argument. */
#define SNAP_MAX_TOTAL_BYTES ((uint64_t)1 << 60)
#define SNAP_MAX_NBLOCKS ((uint32_t)1 << 28)

/* Where everything lies in an object; computed from the slot count, the
 * region sizes and the code k+m alone. */
struct snap_layout {
  uint32_t nslots, nregions, nblocks;
  uint64_t region_off, slot_off, crc_off, crc_stride;
  uint64_t data_off, slot_bytes, stride;
  uint64_t blob_off, blob_max; /* within a slot's data */
  uint32_t ec_k, ec_m;         /* the code; both 0: none */
  uint64_t parity_off;         /* slot 0's parity area */
  uint64_t parity_bytes;       /* per slot: m chunks (snap_store.h) */
  uint64_t parity_stride;      /* per slot, rounded up to SNAP_ALIGN */
  uint64_t total;
};

struct snap_store {
  uint8_t *base;
  char name[256]; /* the object's name, for messages */
  struct snap_layout lay;
  struct snap_region *regions; /* nregions decoded entries */
  char job[SNAP_JOB_MAX];
  uint8_t instance[SNAP_INSTANCE_BYTES];
  uint32_t rank, world;
  int fd;                            /* the object, open for the store's life */
  uint64_t dev, ino;                 /* its identity, from fstat at open */
  uint8_t hdr[HDR_CRC + 4];          /* the immutable header as validated */
  uint64_t huge_bytes; /* mapped with huge pages, measured at creation */
};

/* Little-endian field access (the host is little-endian, asserted above). */
static inline uint32_t snap_get32(const uint8_t *p)
{
  uint32_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}
static inline uint64_t snap_get64(const uint8_t *p)
{
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}
static inline void snap_put32(uint8_t *p, uint32_t v) { memcpy(p, &v, sizeof(v)); }
static inline void snap_put64(uint8_t *p, uint64_t v) { memcpy(p, &v, sizeof(v)); }

/* Writes a sentence into errbuf (may be NULL) and returns err. */
static inline int snap_err(char *errbuf, size_t errlen, int err,
                           const char *fmt, ...)
    __attribute__((format(printf, 4, 5)));
static inline int snap_err(char *errbuf, size_t errlen, int err,
                           const char *fmt, ...)
{
  if (errbuf != NULL && errlen > 0) {
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(errbuf, errlen, fmt, ap);
    va_end(ap);
  }
  return err;
}


/* Fills lay and, for each region i, regs[i].offset, .first_block and
 * .nblocks from regs[i].bytes (INOUT). -EINVAL (with a sentence) when the
 * counts or the code are out of range or the sizes pass the caps above. */
int snap_layout_compute(struct snap_layout *lay, uint32_t nslots,
                        uint32_t nregions, struct snap_region *regs,
                        uint32_t ec_k, uint32_t ec_m, char *errbuf,
                        size_t errlen);

/* The parity chunk of a slot of slot_bytes data bytes under a code with k
 * data chunks: ceil(slot_bytes / k) rounded up to SNAP_PARITY_CHUNK_ALIGN
 * (never less than that); 0 when k is 0. */
uint64_t snap_layout_parity_chunk(uint64_t slot_bytes, uint32_t k);

/* Checks params (job, rank, counts, region names, sizes, kinds) and computes
 * their layout. OUT: lay, regions (p->nregions entries, caller-allocated). */
int snap_layout_params(const struct snap_params *p, struct snap_layout *lay,
                       struct snap_region *regions, char *errbuf,
                       size_t errlen);

/* Writes the header, the region table and an all-FREE slot table into a
 * zeroed mapping of lay->total bytes; the header CRC is written last. */
void snap_layout_write(uint8_t *base, const struct snap_layout *lay,
                       const struct snap_params *p,
                       const struct snap_region *regions);

/* Validates a header read from an object of file_bytes bytes (hdr holds at
 * least SNAP_HEADER_BYTES). PT_EFORMAT / PT_EVERSION with a sentence that
 * starts with the quoted object name. */
int snap_layout_check_header(const uint8_t *hdr, uint64_t file_bytes,
                             const char *name, char *errbuf, size_t errlen);

/* Validates the rest of a mapping of total bytes whose header hdr (a private
 * copy of its first SNAP_HEADER_BYTES) passed snap_layout_check_header, and fills s:
 * layout, decoded regions (allocated here), job, rank, world. Checks each
 * region entry and its CRC, that the layout those entries imply is what the
 * header says, and that every slot state is known. Every byte of the mapping
 * is read once into a private copy before it is trusted, so a concurrent
 * writer can make the checks fail but never lead them out of range. */
int snap_layout_parse(struct snap_store *s, const uint8_t *hdr, uint8_t *base,
                      uint64_t total, const char *name, char *errbuf,
                      size_t errlen);

/* The record CRC of slot i's fields (bytes 8..63, read as relaxed atomics)
 * under state (without the busy bit). */
uint32_t snap_slot_record_crc(const struct snap_store *s, uint32_t i,
                              uint32_t state);

/* The slot-table entry fields as atomics in the mapping. */
static inline uint8_t *snap_slot_entry(const struct snap_store *s, uint32_t i)
{
  return s->base + s->lay.slot_off + (uint64_t)i * SLOT_ENTRY_BYTES;
}
static inline _Atomic uint64_t *snap_slot_word_ptr(const struct snap_store *s,
                                                   uint32_t i)
{
  return (_Atomic uint64_t *)(void *)(snap_slot_entry(s, i) + SLOT_WORD);
}
static inline _Atomic uint64_t *snap_slot_u64_ptr(const struct snap_store *s,
                                                  uint32_t i, unsigned field)
{
  return (_Atomic uint64_t *)(void *)(snap_slot_entry(s, i) + field);
}
static inline _Atomic uint32_t *snap_slot_u32_ptr(const struct snap_store *s,
                                                  uint32_t i, unsigned field)
{
  return (_Atomic uint32_t *)(void *)(snap_slot_entry(s, i) + field);
}

#endif /* PT_SNAP_INTERNAL_H */
