/*
 * crc32c.c — see crc32c.h. The CRC of a whole is assembled from the CRCs of
 * its pieces (ec/'s decoder checks a member's block from the slices its
 * threads touched, while those bytes were still in cache):
 *
 * crc(init, A || B) = shift(crc(init, A), |B|) ^ crc(0, B), where shift
 * multiplies by x^(8|B|) modulo the (reflected) Castagnoli polynomial; the
 * powers x^(2^n) are tabulated once, as zlib's crc32_combine does.
 */
#include <pthread.h>

#include <isa-l/crc.h>

#include "common/crc32c.h"

#define CRC32C_POLY 0x82F63B78u /* reflected */

static uint32_t x2n_table[32];
static pthread_once_t x2n_once = PTHREAD_ONCE_INIT;

/* a * b modulo the polynomial, both reflected. */
static uint32_t multmodp(uint32_t a, uint32_t b)
{
  uint32_t m = 1u << 31, p = 0;

  for (;;) {
    if (a & m) {
      p ^= b;
      if ((a & (m - 1)) == 0)
        break;
    }
    m >>= 1;
    b = b & 1 ? (b >> 1) ^ CRC32C_POLY : b >> 1;
  }
  return p;
}

static void x2n_init(void)
{
  uint32_t p = 1u << 30; /* x^1 */

  x2n_table[0] = p;
  for (int n = 1; n < 32; n++)
    x2n_table[n] = p = multmodp(p, p);
}

uint32_t crc32c_shift_op(size_t bytes)
{
  uint32_t p = 1u << 31; /* x^0 */
  unsigned k = 3;        /* bytes -> bits */

  pthread_once(&x2n_once, x2n_init);
  while (bytes) {
    if (bytes & 1)
      p = multmodp(x2n_table[k & 31], p);
    bytes >>= 1;
    k++;
  }
  return p;
}

uint32_t crc32c_shift(uint32_t crc, uint32_t op)
{
  return multmodp(op, crc);
}

uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len)
{
  const unsigned char *p = buf;

  while (len > 0) {
    size_t n = len > (1u << 30) ? (1u << 30) : len;
    crc = crc32_iscsi((unsigned char *)p, (int)n, crc);
    p += n;
    len -= n;
  }
  return crc;
}

uint32_t crc32c(const void *buf, size_t len)
{
  return crc32c_update(CRC32C_SEED, buf, len);
}

uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b)
{
  return crc32c_shift(crc_a, crc32c_shift_op(len_b)) ^ crc_b;
}
