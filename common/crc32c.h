/*
 * crc32c.h — CRC32C as the whole project computes it: ISA-L's crc32_iscsi
 * (the reflected Castagnoli polynomial) with seed CRC32C_SEED and no final
 * inversion, over any length, and the arithmetic that joins the CRCs of
 * adjacent pieces (that of zlib's crc32_combine). The shm object's records,
 * the snapshot's block checksums (kernels/), the code's member checksums
 * (ec/) and the CUDA kernel's host side all use these.
 */
#ifndef PT_CRC32C_H
#define PT_CRC32C_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CRC32C_SEED 0xFFFFFFFFu

/* crc32_iscsi over any length (ISA-L takes an int), chained from crc: start
 * with CRC32C_SEED, or with a previous piece's result. */
uint32_t crc32c_update(uint32_t crc, const void *buf, size_t len);

/* crc32c_update(CRC32C_SEED, buf, len). */
uint32_t crc32c(const void *buf, size_t len);

/* The operator that appends `bytes` bytes to a CRC (x^(8*bytes) modulo the
 * polynomial, bit 31 being x^0), and its application:
 *   crc(init, A || B) = crc32c_shift(crc(init, A), crc32c_shift_op(|B|))
 *                       ^ crc(0, B). */
uint32_t crc32c_shift_op(size_t bytes);
uint32_t crc32c_shift(uint32_t crc, uint32_t op);

/* crc(init, A || B) from crc_a = crc(init, A), crc_b = crc(0, B) and |B|. */
uint32_t crc32c_combine(uint32_t crc_a, uint32_t crc_b, size_t len_b);

#ifdef __cplusplus
}
#endif

#endif /* PT_CRC32C_H */
