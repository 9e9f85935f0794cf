/*
 * kernels_crc.cuh — the arithmetic of the CUDA CRC32C kernel, written once
 * for the device and the host.
 *
 * The kernel (kernels_cuda.cu) gives each KERN_BLOCK_SIZE block one thread
 * block of KCRC_THREADS threads. Thread t computes the CRC32C of its
 * KCRC_SLICE-byte slice of the block with a slicing-by-8 table; thread 0
 * starts from CRC32C_SEED, every other thread from 0. The slice CRCs are
 * then folded in log2(KCRC_THREADS) levels: a left group's CRC is shifted
 * over the right group's length (the CRC of the left group followed by that
 * many zero bytes) and xored with the right group's CRC. The result is what
 * ISA-L's crc32_iscsi(block, len, 0xFFFFFFFF) returns: the reflected
 * Castagnoli CRC with that seed and no final xor. kcrc_blocks_emulate() runs
 * the same steps on the host, thread by thread, so the arithmetic is checked
 * on machines without a GPU (tests/gpu/gpu_kern_test.cu).
 *
 * Polynomials are 32-bit values in reflected order: bit 31 is x^0, bit 0 is
 * x^31. Shifting a CRC over n zero bytes multiplies it by x^(8n) modulo the
 * polynomial (the arithmetic of zlib's crc32_combine).
 */
#ifndef PT_KERNELS_CRC_CUH
#define PT_KERNELS_CRC_CUH

#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "kernels/kernels.h"

#if defined(__CUDACC__)
#define KCRC_HD __host__ __device__
#else
#define KCRC_HD
#endif

#define KCRC_POLY 0x82F63B78u
#define KCRC_THREADS 256u
#define KCRC_SLICE (KERN_BLOCK_SIZE / KCRC_THREADS)
#define KCRC_LEVELS 8 /* log2(KCRC_THREADS) */

struct kcrc_tables {
  uint32_t t[8][256];
};

/* Shift constants of the full-size groups: level l folds groups of
 * (1 << l) slices, so it multiplies by x^(8 * KCRC_SLICE << l). */
struct kcrc_shifts {
  uint32_t level[KCRC_LEVELS];
};

/* Row 0 of the tables, entry i. */
KCRC_HD static inline uint32_t kcrc_table0_entry(uint32_t i)
{
  uint32_t c = i;
  for (int k = 0; k < 8; k++)
    c = (c >> 1) ^ (KCRC_POLY & (0u - (c & 1u)));
  return c;
}

/* Rows 1..7 of column i, once row 0 is complete: row k maps a byte to its
 * CRC followed by k zero bytes. */
KCRC_HD static inline void kcrc_tables_fill_column(struct kcrc_tables *tb,
                                                   uint32_t i)
{
  for (int k = 1; k < 8; k++)
    tb->t[k][i] = (tb->t[k - 1][i] >> 8) ^ tb->t[0][tb->t[k - 1][i] & 0xffu];
}

KCRC_HD static inline uint32_t kcrc_byte(const struct kcrc_tables *tb,
                                         uint32_t crc, uint8_t b)
{
  return (crc >> 8) ^ tb->t[0][(crc ^ b) & 0xffu];
}

/* An aligned 8-byte load: a plain load on the device, memcpy on the host
 * (where the cast would break strict aliasing). */
#if defined(__CUDA_ARCH__)
KCRC_HD static inline uint64_t kcrc_load64(const uint8_t *p)
{
  return *(const uint64_t *)p;
}
#else
KCRC_HD static inline uint64_t kcrc_load64(const uint8_t *p)
{
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}
#endif

/* The CRC of n bytes at p, continuing from crc: bytes up to 8-byte
 * alignment, then 8 at a time, then the rest. Little-endian loads. */
KCRC_HD static inline uint32_t kcrc_update(const struct kcrc_tables *tb,
                                           uint32_t crc, const uint8_t *p,
                                           size_t n)
{
  while (n > 0 && ((uintptr_t)p & 7u) != 0) {
    crc = kcrc_byte(tb, crc, *p++);
    n--;
  }
  for (; n >= 8; n -= 8, p += 8) {
    uint64_t v = kcrc_load64(p);
    uint32_t lo = crc ^ (uint32_t)v;
    uint32_t hi = (uint32_t)(v >> 32);
    crc = tb->t[7][lo & 0xffu] ^ tb->t[6][(lo >> 8) & 0xffu] ^
          tb->t[5][(lo >> 16) & 0xffu] ^ tb->t[4][lo >> 24] ^
          tb->t[3][hi & 0xffu] ^ tb->t[2][(hi >> 8) & 0xffu] ^
          tb->t[1][(hi >> 16) & 0xffu] ^ tb->t[0][hi >> 24];
  }
  while (n > 0) {
    crc = kcrc_byte(tb, crc, *p++);
    n--;
  }
  return crc;
}

/* a * b modulo the polynomial. */
KCRC_HD static inline uint32_t kcrc_mul(uint32_t a, uint32_t b)
{
  uint32_t m = 1u << 31, p = 0;

  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0)
        break;
    }
    m >>= 1;
    b = (b & 1u) ? (b >> 1) ^ KCRC_POLY : b >> 1;
  }
  return p;
}

/* x^(8n) modulo the polynomial: the shift over n zero bytes. */
KCRC_HD static inline uint32_t kcrc_xpow8n(uint64_t n)
{
  uint32_t r = 1u << 31;     /* x^0 */
  uint32_t sq = 1u << 23;    /* x^8 */

  while (n != 0) {
    if (n & 1u)
      r = kcrc_mul(sq, r);
    sq = kcrc_mul(sq, sq);
    n >>= 1;
  }
  return r;
}

/* On the host: the shift operators of common/crc32c.h, the same arithmetic
 * the rest of the project joins CRCs with. */
static inline struct kcrc_shifts kcrc_shifts_make(void)
{
  struct kcrc_shifts s;
  for (int l = 0; l < KCRC_LEVELS; l++)
    s.level[l] = crc32c_shift_op((size_t)KCRC_SLICE << l);
  return s;
}

/* Thread t's slice CRC in a block of len bytes at p. */
KCRC_HD static inline uint32_t kcrc_slice(const struct kcrc_tables *tb,
                                          const uint8_t *p, size_t len,
                                          uint32_t t)
{
  size_t s0 = (size_t)t * KCRC_SLICE;
  size_t s1 = s0 + KCRC_SLICE < len ? s0 + KCRC_SLICE : len;
  uint32_t crc = t == 0 ? CRC32C_SEED : 0u;

  return s0 < s1 ? kcrc_update(tb, crc, p + s0, s1 - s0) : crc;
}

/* Level l of the fold, for thread t: part[t] covers the groups of
 * (1 << l) slices starting at t; when t starts a pair, fold in its right
 * neighbour. Within a level no thread reads what another writes. */
KCRC_HD static inline void kcrc_fold(uint32_t *part, size_t len,
                                     const struct kcrc_shifts *sh, int l,
                                     uint32_t t)
{
  uint32_t w = 1u << l;
  if ((t & (2 * w - 1)) != 0)
    return;
  size_t r0 = (size_t)(t + w) * KCRC_SLICE;
  if (r0 >= len)
    return;
  size_t r1 = (size_t)(t + 2 * w) * KCRC_SLICE;
  if (r1 > len)
    r1 = len;
  uint32_t x = r1 - r0 == (size_t)w * KCRC_SLICE ? sh->level[l]
                                                  : kcrc_xpow8n(r1 - r0);
  part[t] = kcrc_mul(x, part[t]) ^ part[t + w];
}

/* The kernel's computation on the host, thread by thread. OUT: crcs,
 * kern_nblocks(bytes) entries. */
static inline void kcrc_blocks_emulate(const void *buf, size_t bytes,
                                       uint32_t *crcs)
{
  struct kcrc_tables tb;
  uint32_t part[KCRC_THREADS];
  struct kcrc_shifts sh = kcrc_shifts_make();
  const uint8_t *p = (const uint8_t *)buf;

  for (uint32_t i = 0; i < 256; i++)
    tb.t[0][i] = kcrc_table0_entry(i);
  for (uint32_t i = 0; i < 256; i++)
    kcrc_tables_fill_column(&tb, i);
  for (size_t b = 0; b < kern_nblocks(bytes); b++) {
    size_t off = b * KERN_BLOCK_SIZE;
    size_t len = bytes - off < KERN_BLOCK_SIZE ? bytes - off : KERN_BLOCK_SIZE;
    for (uint32_t t = 0; t < KCRC_THREADS; t++)
      part[t] = kcrc_slice(&tb, p + off, len, t);
    for (int l = 0; l < KCRC_LEVELS; l++)
      for (uint32_t t = 0; t < KCRC_THREADS; t++)
        kcrc_fold(part, len, &sh, l, t);
    crcs[b] = part[0];
  }
}

#endif /* PT_KERNELS_CRC_CUH */
