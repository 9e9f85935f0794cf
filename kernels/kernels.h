/*
 * kernels.h — the functions a copy backend must implement.
 *
 * libpt moves a rank's state between its registered regions and a slot of the
 * shared-memory snapshot object through this interface, computing (on save)
 * or checking (on restore) one CRC32C per KERN_BLOCK_SIZE block on the way.
 * Two implementations exist: kernels_cpu.c (copy threads, ISA-L crc32_iscsi),
 * always built and used by the tests, and kernels_cuda.cu (a copy stream,
 * cudaMemcpyAsync into registered host memory, a CRC32C kernel), built where
 * nvcc exists. The Makefile picks the file; nothing here is #ifdef'd.
 *
 * Checksums are those of ISA-L's crc32_iscsi() with seed 0xFFFFFFFF over each
 * block, a block being KERN_BLOCK_SIZE bytes from the start of a transfer (the
 * last one shorter). Both backends produce identical tables; the CPU one is
 * the oracle for the CUDA one.
 */
#ifndef PT_KERNELS_H
#define PT_KERNELS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "common/crc32c.h"

#ifdef __cplusplus
extern "C" {
#endif

#define KERN_BLOCK_SIZE ((size_t)1 << 20)

/* Number of checksum blocks covering `bytes`. */
static inline size_t kern_nblocks(size_t bytes)
{
  return (bytes + KERN_BLOCK_SIZE - 1) / KERN_BLOCK_SIZE;
}

enum kern_mem { KERN_MEM_HOST = 0, KERN_MEM_DEVICE = 1 };

/* One region's worth of copying. bytes may be 0: nothing is copied and no
 * checksum written. dst and src must not be NULL when bytes > 0. */
struct kern_xfer {
  void *dst;
  const void *src;
  size_t bytes;
  uint32_t *crcs;    /* save: OUT, kern_nblocks(bytes) entries; NULL: none */
  int src_mem;       /* enum kern_mem */
  int dst_mem;       /* enum kern_mem */
};

/* An engine is not safe for concurrent calls. A save may be started on one
 * thread and waited for on another, as long as the caller orders every call
 * on the engine (its own lock around the hand-over), so that no two overlap. */
struct kern_engine;

/* "cpu" or "cuda". */
const char *kern_backend_name(void);
/* True when the backend can copy device memory. */
bool kern_backend_has_device(void);

/* OUT: *out, freed with kern_engine_free(). threads: copy threads (CPU
 * backend; clamped to 1..64); the CUDA backend uses them only for transfers
 * whose source is host memory. CUDA: the engine belongs to the device current
 * at this call; PT_EGPU when no device is usable. */
int kern_engine_new(struct kern_engine **out, int threads);
/* Waits for any copy in flight, then frees. e may be NULL. */
void kern_engine_free(struct kern_engine *e);

/* Prepares a thread of the caller's own that waits for saves started on
 * another thread (kern_save_wait() there): CUDA makes the engine's device
 * current in it, so that its waits create no context on another device;
 * CPU: nothing. Call once, in that thread, before it waits. PT_OK, PT_EGPU,
 * -EINVAL for a NULL engine. */
int kern_thread_bind(struct kern_engine *e);

/* Makes [p, p+bytes) a valid fast copy target (cudaHostRegister on CUDA; a
 * no-op on CPU). Once per mapping, at start: it is slow. bytes must be > 0
 * (-EINVAL). kern_host_unregister() takes the p given here; the CUDA engine
 * unregisters what is left when freed. */
int kern_host_register(struct kern_engine *e, void *p, size_t bytes);
int kern_host_unregister(struct kern_engine *e, void *p);

/* Starts copying every xfer, computing its checksum table, and returns at
 * once. The xfer array is copied; the buffers must stay valid and unmodified
 * until kern_save_wait() returns. One save in flight per engine:
 * PT_EINFLIGHT otherwise. crc false: copy only (benchmark baseline).
 * dst must be host memory. CUDA: device sources are copied on the engine's
 * own non-blocking stream, which waits for no other stream; the device data
 * must be final when this is called (the caller records an event after the
 * optimizer step and synchronises on it first). dst and crcs belong in
 * memory given to kern_host_register(): copies into other memory are
 * synchronous. */
int kern_save_start(struct kern_engine *e, const struct kern_xfer *x, size_t n,
                    bool crc);
/* The stream whose work every following save's device copies wait for:
 * CUDA records an event on it at each kern_save_start() and makes the
 * engine's copy stream wait on that event (so the caller need not
 * synchronise after its update; stream is a cudaStream_t of the engine's
 * device, e.g. PyTorch's current stream; NULL: none, the caller orders the
 * save itself). CPU: remembered, unused. PT_OK, -EINVAL for a NULL engine. */
int kern_save_after(struct kern_engine *e, void *stream);

/* True while a save started by kern_save_start() has not completed. */
bool kern_save_is_busy(struct kern_engine *e);
/* Waits for the save in flight (timeout_ms < 0: forever) and returns its
 * result; PT_OK when none is in flight; -ETIMEDOUT when the deadline passes
 * (the save goes on). */
int kern_save_wait(struct kern_engine *e, int timeout_ms);

/* Synchronous restore: copies every xfer's src (host memory) to dst and checks
 * each block against xfer->crcs (IN). Every block is checked before the call
 * returns; on a mismatch returns PT_ECHECKSUM and, when bad_xfer/bad_block are
 * not NULL, the first damaged block (lowest xfer, then lowest block).
 * crcs is required (-EINVAL when NULL and bytes > 0). PT_EINFLIGHT while a
 * save is in flight. A device dst (CUDA) is written only when all its blocks
 * check out; a host dst is written whole either way. */
int kern_restore(struct kern_engine *e, const struct kern_xfer *x, size_t n,
                 size_t *bad_xfer, size_t *bad_block);

/* Host-only helpers, identical on every backend (whole-buffer CRCs are
 * common/crc32c.h's crc32c()). */
/* OUT: crcs, kern_nblocks(bytes) entries. */
void kern_crc_blocks(const void *buf, size_t bytes, uint32_t *crcs);

#ifdef __cplusplus
}
#endif

#endif /* PT_KERNELS_H */
