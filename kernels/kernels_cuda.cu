/*
 * kernels_cuda.cu — the CUDA copy backend of kernels.h (C++17, C linkage).
 *
 * An engine belongs to the device current when it was made and holds:
 * - one non-blocking copy stream and one completion event. A save of device
 *   memory enqueues, per transfer, the CRC32C kernel (one thread block per
 *   KERN_BLOCK_SIZE block, writing a device-side table), the device-to-host
 *   copy of the data and the copy of the table into xfer->crcs, then records
 *   the event. Before them the stream waits on an event recorded on the
 *   caller's stream (kern_save_after(): PyTorch's current stream), so the
 *   copy follows the optimizer step without the caller synchronising; with
 *   none, ordering the save after the update is the caller's business.
 * - a host copy pool (kernels_host.c) for transfers whose source is host
 *   memory, and for checking a snapshot before it is copied to the device.
 * - the host ranges registered with kern_host_register(), registered in
 *   pieces of at most REG_CHUNK bytes.
 *
 * Completion of a save is polled (cudaEventQuery, short sleeps) so that every
 * wait keeps its deadline. Every CUDA error is returned as PT_EGPU; libpt
 * logs nothing here. A failure after work was enqueued first drains the
 * stream, so no copy touches the caller's buffers after an error returns.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "kernels/kernels_crc.cuh"
#include "kernels/kernels_host.h"

/* cudaHostRegister is given at most this much at once. */
#define REG_CHUNK ((size_t)64 << 30)
/* Thread blocks per kernel launch; each loops over the blocks it is given. */
#define CRC_GRID_MAX 65535u
/* kern_save_wait() sleeps between event queries, growing to this. */
#define POLL_MAX_NS 500000L

struct host_reg {
  void *p;
  size_t bytes;
};

struct kern_engine {
  int device;
  cudaStream_t stream;
  cudaEvent_t done;      /* recorded after the device part of a save */
  cudaEvent_t ready;     /* recorded on `after` before a save's copies */
  cudaStream_t after;    /* kern_save_after(); NULL: none */
  bool has_after;
  bool gpu_busy;         /* done recorded and not yet seen complete */
  int gpu_result;        /* outcome of the device part, until waited */
  uint32_t *dev_crcs;    /* device CRC tables of the save in flight */
  size_t dev_crcs_cap;   /* entries */
  struct kern_pool *pool;
  struct host_reg *regs;
  size_t nregs, regs_cap;
  struct kcrc_shifts shifts;
};

/* ---- the CRC32C kernel -------------------------------------------------- */

static __global__ void __launch_bounds__(KCRC_THREADS)
    crc_blocks_kernel(const uint8_t *src, size_t bytes, uint32_t *crcs,
                      struct kcrc_shifts sh)
{
  __shared__ struct kcrc_tables tb;
  __shared__ uint32_t part[KCRC_THREADS];
  uint32_t t = threadIdx.x;
  size_t nblocks = (bytes + KERN_BLOCK_SIZE - 1) / KERN_BLOCK_SIZE;

  tb.t[0][t] = kcrc_table0_entry(t);
  __syncthreads();
  kcrc_tables_fill_column(&tb, t);
  __syncthreads();

  /* Every thread of a block takes the same trips round this loop, so the
   * barriers inside are reached by all. */
  for (size_t b = blockIdx.x; b < nblocks; b += gridDim.x) {
    size_t off = b * KERN_BLOCK_SIZE;
    size_t len = bytes - off < KERN_BLOCK_SIZE ? bytes - off : KERN_BLOCK_SIZE;
    part[t] = kcrc_slice(&tb, src + off, len, t);
    __syncthreads();
    for (int l = 0; l < KCRC_LEVELS; l++) {
      kcrc_fold(part, len, &sh, l, t);
      __syncthreads();
    }
    if (t == 0)
      crcs[b] = part[0];
    __syncthreads();
  }
}

/* ---- helpers ------------------------------------------------------------ */

static int gpu_err(cudaError_t err)
{
  if (err == cudaSuccess)
    return PT_OK;
  (void)cudaGetLastError(); /* clears a non-sticky error */
  return PT_EGPU;
}

/* Makes the engine's device current; OUT: *old, the device to go back to. */
static int device_enter(const struct kern_engine *e, int *old)
{
  if (cudaGetDevice(old) != cudaSuccess)
    return gpu_err(cudaErrorUnknown);
  if (*old != e->device && cudaSetDevice(e->device) != cudaSuccess)
    return gpu_err(cudaErrorUnknown);
  return PT_OK;
}

static void device_leave(const struct kern_engine *e, int old)
{
  if (old != e->device)
    cudaSetDevice(old);
}

/* True while the device part of a save runs; records its outcome once it
 * has finished. */
static bool gpu_poll(struct kern_engine *e)
{
  if (!e->gpu_busy)
    return false;
  cudaError_t q = cudaEventQuery(e->done);
  if (q == cudaErrorNotReady)
    return true;
  e->gpu_busy = false;
  if (q != cudaSuccess)
    e->gpu_result = gpu_err(q);
  return false;
}

/* Waits until the device part of a save has finished or *deadline (NULL:
 * none) has passed: PT_OK or -ETIMEDOUT. */
static int gpu_wait(struct kern_engine *e, const struct timespec *deadline)
{
  long sleep_ns = 20000;

  while (gpu_poll(e)) {
    if (deadline != NULL && kern_deadline_is_past(deadline))
      return -ETIMEDOUT;
    struct timespec ts = {0, sleep_ns};
    nanosleep(&ts, NULL);
    if (sleep_ns < POLL_MAX_NS)
      sleep_ns *= 2;
  }
  return PT_OK;
}

/* Waits for whatever was enqueued, after a failure part way through. */
static void gpu_drain(struct kern_engine *e)
{
  cudaStreamSynchronize(e->stream);
  (void)cudaGetLastError();
}

static bool mem_is_valid(int m)
{
  return m == KERN_MEM_HOST || m == KERN_MEM_DEVICE;
}

static int dev_crcs_reserve(struct kern_engine *e, size_t entries)
{
  void *p;

  if (entries <= e->dev_crcs_cap)
    return PT_OK;
  if (e->dev_crcs != NULL) {
    cudaFree(e->dev_crcs);
    e->dev_crcs = NULL;
    e->dev_crcs_cap = 0;
  }
  if (cudaMalloc(&p, entries * sizeof(uint32_t)) != cudaSuccess)
    return gpu_err(cudaErrorMemoryAllocation);
  e->dev_crcs = (uint32_t *)p;
  e->dev_crcs_cap = entries;
  return PT_OK;
}

/* ---- backend ------------------------------------------------------------ */

extern "C" const char *kern_backend_name(void)
{
  return "cuda";
}

extern "C" bool kern_backend_has_device(void)
{
  return true;
}

extern "C" int kern_engine_new(struct kern_engine **out, int threads)
{
  struct kern_engine *e;
  int rc;

  if (out == NULL)
    return -EINVAL;
  e = (struct kern_engine *)calloc(1, sizeof(*e));
  if (e == NULL)
    return -ENOMEM;
  e->shifts = kcrc_shifts_make();
  rc = gpu_err(cudaGetDevice(&e->device));
  if (rc < 0)
    goto out_free;
  rc = gpu_err(cudaStreamCreateWithFlags(&e->stream, cudaStreamNonBlocking));
  if (rc < 0)
    goto out_free;
  rc = gpu_err(cudaEventCreateWithFlags(&e->done, cudaEventDisableTiming));
  if (rc < 0)
    goto out_stream;
  rc = gpu_err(cudaEventCreateWithFlags(&e->ready, cudaEventDisableTiming));
  if (rc < 0)
    goto out_event;
  rc = kern_pool_new(&e->pool, threads);
  if (rc < 0)
    goto out_ready;
  *out = e;
  return PT_OK;

out_ready:
  cudaEventDestroy(e->ready);
out_event:
  cudaEventDestroy(e->done);
out_stream:
  cudaStreamDestroy(e->stream);
out_free:
  free(e);
  return rc;
}

/* Unregisters the pieces of one registration, the first `pieces` of them
 * (all: SIZE_MAX). */
static int reg_undo(void *p, size_t bytes, size_t pieces)
{
  int rc = PT_OK;

  for (size_t off = 0, i = 0; off < bytes && i < pieces;
       off += REG_CHUNK, i++)
    if (cudaHostUnregister((char *)p + off) != cudaSuccess)
      rc = gpu_err(cudaErrorUnknown);
  return rc;
}

extern "C" void kern_engine_free(struct kern_engine *e)
{
  int old;

  if (e == NULL)
    return;
  kern_pool_free(e->pool); /* waits for the host part */
  bool entered = device_enter(e, &old) == PT_OK;
  gpu_drain(e);
  for (size_t i = 0; i < e->nregs; i++)
    reg_undo(e->regs[i].p, e->regs[i].bytes, SIZE_MAX);
  free(e->regs);
  if (e->dev_crcs != NULL)
    cudaFree(e->dev_crcs);
  cudaEventDestroy(e->ready);
  cudaEventDestroy(e->done);
  cudaStreamDestroy(e->stream);
  if (entered)
    device_leave(e, old);
  free(e);
}

/* A thread without a current device would query the engine's event in a
 * context it creates on device 0; make the engine's device its own. */
extern "C" int kern_thread_bind(struct kern_engine *e)
{
  if (e == NULL)
    return -EINVAL;
  return gpu_err(cudaSetDevice(e->device));
}

extern "C" int kern_host_register(struct kern_engine *e, void *p, size_t bytes)
{
  size_t off, pieces = 0;
  int rc;

  if (e == NULL || p == NULL || bytes == 0)
    return -EINVAL;
  if (e->nregs == e->regs_cap) {
    size_t cap = e->regs_cap ? 2 * e->regs_cap : 8;
    struct host_reg *r =
        (struct host_reg *)realloc(e->regs, cap * sizeof(*r));
    if (r == NULL)
      return -ENOMEM;
    e->regs = r;
    e->regs_cap = cap;
  }
  for (off = 0; off < bytes; off += REG_CHUNK, pieces++) {
    size_t m = bytes - off < REG_CHUNK ? bytes - off : REG_CHUNK;
    rc = gpu_err(cudaHostRegister((char *)p + off, m, cudaHostRegisterPortable));
    if (rc < 0)
      goto out_unregister;
  }
  e->regs[e->nregs].p = p;
  e->regs[e->nregs].bytes = bytes;
  e->nregs++;
  return PT_OK;

out_unregister:
  reg_undo(p, bytes, pieces);
  return rc;
}

extern "C" int kern_host_unregister(struct kern_engine *e, void *p)
{
  if (e == NULL || p == NULL)
    return -EINVAL;
  for (size_t i = 0; i < e->nregs; i++) {
    if (e->regs[i].p != p)
      continue;
    int rc = reg_undo(p, e->regs[i].bytes, SIZE_MAX);
    e->regs[i] = e->regs[--e->nregs];
    return rc;
  }
  return -ENOENT;
}

static bool is_busy(struct kern_engine *e)
{
  return gpu_poll(e) || kern_pool_is_busy(e->pool);
}

/* Enqueues the device part of a save: kernel, data, table per transfer. */
static int save_enqueue(struct kern_engine *e, const struct kern_xfer *x,
                        size_t n, bool crc)
{
  size_t entries = 0, at = 0;
  int rc;

  for (size_t i = 0; i < n; i++)
    if (x[i].src_mem == KERN_MEM_DEVICE && crc && x[i].crcs != NULL)
      entries += kern_nblocks(x[i].bytes);
  rc = dev_crcs_reserve(e, entries);
  if (rc < 0)
    return rc;
  if (e->has_after) {
    /* The caller's queued work (the optimizer step) first. */
    rc = gpu_err(cudaEventRecord(e->ready, e->after));
    if (rc < 0)
      return rc;
    rc = gpu_err(cudaStreamWaitEvent(e->stream, e->ready, 0));
    if (rc < 0)
      return rc;
  }
  for (size_t i = 0; i < n; i++) {
    if (x[i].src_mem != KERN_MEM_DEVICE || x[i].bytes == 0)
      continue;
    size_t nb = kern_nblocks(x[i].bytes);
    if (crc && x[i].crcs != NULL) {
      unsigned grid = nb < CRC_GRID_MAX ? (unsigned)nb : CRC_GRID_MAX;
      crc_blocks_kernel<<<grid, KCRC_THREADS, 0, e->stream>>>(
          (const uint8_t *)x[i].src, x[i].bytes, e->dev_crcs + at, e->shifts);
      rc = gpu_err(cudaGetLastError());
      if (rc < 0)
        return rc;
    }
    rc = gpu_err(cudaMemcpyAsync(x[i].dst, x[i].src, x[i].bytes,
                                 cudaMemcpyDeviceToHost, e->stream));
    if (rc < 0)
      return rc;
    if (crc && x[i].crcs != NULL) {
      rc = gpu_err(cudaMemcpyAsync(x[i].crcs, e->dev_crcs + at,
                                   nb * sizeof(uint32_t),
                                   cudaMemcpyDeviceToHost, e->stream));
      if (rc < 0)
        return rc;
      at += nb;
    }
  }
  return gpu_err(cudaEventRecord(e->done, e->stream));
}

extern "C" int kern_save_start(struct kern_engine *e, const struct kern_xfer *x,
                               size_t n, bool crc)
{
  struct kern_task *t = NULL;
  bool any_device = false;
  int old, rc;

  if (e == NULL || (n > 0 && x == NULL))
    return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (!mem_is_valid(x[i].src_mem) || x[i].dst_mem != KERN_MEM_HOST)
      return -EINVAL;
    if (x[i].bytes > 0 && (x[i].src == NULL || x[i].dst == NULL))
      return -EINVAL;
    any_device |= x[i].src_mem == KERN_MEM_DEVICE && x[i].bytes > 0;
  }
  if (is_busy(e))
    return PT_EINFLIGHT;
  rc = kern_tasks_make(&t, x, n, crc ? KERN_OP_SAVE : KERN_OP_COPY);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    if (x[i].src_mem == KERN_MEM_DEVICE)
      t[i].op = KERN_OP_SKIP; /* the stream copies it */
  if (any_device) {
    rc = device_enter(e, &old);
    if (rc < 0)
      goto out_tasks;
    rc = save_enqueue(e, x, n, crc);
    device_leave(e, old);
    if (rc < 0) {
      gpu_drain(e);
      goto out_tasks;
    }
    e->gpu_busy = true;
    e->gpu_result = PT_OK;
  }
  rc = kern_pool_start(e->pool, t, n);
  if (rc < 0 && any_device) {
    gpu_wait(e, NULL);
    e->gpu_result = PT_OK;
  }

out_tasks:
  free(t);
  return rc;
}

extern "C" int kern_save_after(struct kern_engine *e, void *stream)
{
  if (e == NULL)
    return -EINVAL;
  e->after = (cudaStream_t)stream;
  e->has_after = stream != NULL;
  return PT_OK;
}

extern "C" bool kern_save_is_busy(struct kern_engine *e)
{
  return e != NULL && is_busy(e);
}

extern "C" int kern_save_wait(struct kern_engine *e, int timeout_ms)
{
  struct timespec deadline, *dl = NULL;
  int rc;

  if (e == NULL)
    return -EINVAL;
  if (timeout_ms >= 0) {
    kern_deadline_set(&deadline, timeout_ms);
    dl = &deadline;
  }
  rc = gpu_wait(e, dl);
  if (rc < 0)
    return rc;
  rc = kern_pool_wait(e->pool, dl);
  if (rc == -ETIMEDOUT)
    return rc;
  if (e->gpu_result < 0)
    rc = e->gpu_result;
  e->gpu_result = PT_OK;
  return rc;
}

extern "C" int kern_restore(struct kern_engine *e, const struct kern_xfer *x,
                            size_t n, size_t *bad_xfer, size_t *bad_block)
{
  struct kern_task *t = NULL;
  bool any_device = false;
  int old, rc;

  if (e == NULL || (n > 0 && x == NULL))
    return -EINVAL;
  for (size_t i = 0; i < n; i++) {
    if (x[i].src_mem != KERN_MEM_HOST || !mem_is_valid(x[i].dst_mem))
      return -EINVAL;
    if (x[i].bytes > 0 &&
        (x[i].src == NULL || x[i].dst == NULL || x[i].crcs == NULL))
      return -EINVAL;
    any_device |= x[i].dst_mem == KERN_MEM_DEVICE && x[i].bytes > 0;
  }
  if (is_busy(e))
    return PT_EINFLIGHT;
  rc = kern_tasks_make(&t, x, n, KERN_OP_VERIFY_COPY);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n; i++)
    if (x[i].dst_mem == KERN_MEM_DEVICE)
      t[i].op = KERN_OP_VERIFY; /* checked here, copied by the stream */
  /* Every block is checked on the host first; device regions are written
   * only from a snapshot that checked out. */
  rc = kern_pool_run(e->pool, t, n, bad_xfer, bad_block);
  free(t);
  if (rc < 0 || !any_device)
    return rc;

  rc = device_enter(e, &old);
  if (rc < 0)
    return rc;
  for (size_t i = 0; i < n && rc == PT_OK; i++)
    if (x[i].dst_mem == KERN_MEM_DEVICE && x[i].bytes > 0)
      rc = gpu_err(cudaMemcpyAsync(x[i].dst, x[i].src, x[i].bytes,
                                   cudaMemcpyHostToDevice, e->stream));
  cudaError_t s = cudaStreamSynchronize(e->stream);
  if (rc == PT_OK)
    rc = gpu_err(s);
  else
    (void)cudaGetLastError();
  device_leave(e, old);
  return rc;
}
