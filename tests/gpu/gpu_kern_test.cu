/*
 * gpu_kern_test.cu — the CUDA copy backend against the CPU oracle.
 *
 * The oracle is kern_crc_blocks() (ISA-L crc32_iscsi on the host, the same
 * code the CPU backend uses) and the host copy of the data. Checked:
 * 1. on any machine: the kernel's arithmetic, run on the host thread by
 *    thread (kcrc_blocks_emulate), equals the oracle for odd sizes and
 *    alignments;
 * 2. with a GPU: the CRC tables and data of device->host saves of random
 *    data of odd sizes (aligned and not, mixed with host sources), the
 *    host->device restore round trip, detection of a flipped byte (the
 *    device region is then left alone), PT_EINFLIGHT and the wait deadline;
 *    and it prints the save throughput with and without checksums.
 *
 * Exit status: 0 pass, 1 fail, 77 skip when no GPU is usable (after part 1
 * passed), with "skip: no usable GPU: <reason>" as the last line.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <cuda_runtime.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "kernels/kernels_crc.cuh"

#define MIB ((size_t)1 << 20)

static int failures;

#define CHECK(cond, ...)                                                       \
  do {                                                                         \
    if (!(cond)) {                                                             \
      fprintf(stderr, "FAIL %s:%d: %s: ", __FILE__, __LINE__, #cond);          \
      fprintf(stderr, __VA_ARGS__);                                            \
      fputc('\n', stderr);                                                     \
      failures++;                                                              \
    }                                                                          \
  } while (0)

#define CUDA_OK(call)                                                          \
  do {                                                                         \
    cudaError_t err_ = (call);                                                 \
    if (err_ != cudaSuccess) {                                                 \
      fprintf(stderr, "FAIL %s:%d: %s: %s\n", __FILE__, __LINE__, #call,       \
              cudaGetErrorString(err_));                                       \
      exit(1);                                                                 \
    }                                                                          \
  } while (0)

static uint64_t rng = 0x2545F4914F6CDD1Dull;

static void fill_random(unsigned char *p, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    if ((i & 7) == 0) {
      rng ^= rng << 13;
      rng ^= rng >> 7;
      rng ^= rng << 17;
    }
    p[i] = (unsigned char)(rng >> (8 * (i & 7)));
  }
}

static double now_s(void)
{
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return (double)t.tv_sec + (double)t.tv_nsec * 1e-9;
}

static const size_t odd_sizes[] = {
    1, 7, 4095, 4097, 65537, MIB - 1, MIB, MIB + 1, 3 * MIB + 4096 * 5 + 3,
    33 * MIB + 12345,
};
#define N_ODD (sizeof(odd_sizes) / sizeof(odd_sizes[0]))

/* ---- 1. host emulation of the kernel ------------------------------------ */

static void test_emulation(void)
{
  size_t cap = 33 * MIB + 12345 + 8;
  unsigned char *buf = (unsigned char *)malloc(cap);
  unsigned char zeros[4096] = {0};
  fill_random(buf, cap);
  for (size_t k = 0; k < N_ODD; k++) {
    for (size_t off = 0; off < 8; off += 3) {
      size_t n = odd_sizes[k], nb = kern_nblocks(n);
      uint32_t *got = (uint32_t *)malloc(nb * 4), *want = (uint32_t *)malloc(nb * 4);
      kcrc_blocks_emulate(buf + off, n, got);
      kern_crc_blocks(buf + off, n, want);
      for (size_t b = 0; b < nb; b++)
        CHECK(got[b] == want[b], "emulated size %zu offset %zu block %zu: %08x, oracle %08x",
              n, off, b, got[b], want[b]);
      free(got);
      free(want);
    }
  }
  /* Shifting over n zero bytes is feeding n zero bytes. */
  for (size_t n = 1; n <= sizeof(zeros); n = n * 3 + 1) {
    uint32_t c = 0x9A3C5E71u;
    struct kcrc_tables tb;
    for (uint32_t i = 0; i < 256; i++)
      tb.t[0][i] = kcrc_table0_entry(i);
    for (uint32_t i = 0; i < 256; i++)
      kcrc_tables_fill_column(&tb, i);
    CHECK(kcrc_mul(kcrc_xpow8n(n), c) == kcrc_update(&tb, c, zeros, n),
          "shift over %zu zero bytes", n);
  }
  free(buf);
  printf("%s: host emulation of the CRC kernel against the oracle\n",
         failures ? "FAIL" : "ok");
}

/* ---- 2. on the device ---------------------------------------------------- */

/* Host memory registered with the engine; n rounded up to pages. */
static unsigned char *pinned_new(struct kern_engine *e, size_t n)
{
  size_t cap = (n + 4095) & ~(size_t)4095;
  unsigned char *p = (unsigned char *)aligned_alloc(4096, cap);
  if (p == NULL) {
    fprintf(stderr, "FAIL: out of host memory\n");
    exit(1);
  }
  memset(p, 0, cap);
  CHECK(kern_host_register(e, p, cap) == PT_OK, "register %zu bytes", cap);
  return p;
}

static void pinned_free(struct kern_engine *e, unsigned char *p)
{
  CHECK(kern_host_unregister(e, p) == PT_OK, "unregister");
  free(p);
}

/* Saves random data of every odd size from the device (offset by `skew`
 * bytes, and with one host-source transfer alongside), checks tables and
 * data, restores to the device and checks, then damages one byte. */
static void test_round_trip(struct kern_engine *e, size_t skew)
{
  for (size_t k = 0; k < N_ODD; k++) {
    size_t n = odd_sizes[k], nb = kern_nblocks(n);
    unsigned char *host = (unsigned char *)malloc(n);
    unsigned char *back = (unsigned char *)malloc(n);
    unsigned char *snap = pinned_new(e, n), *snap2 = pinned_new(e, n);
    uint32_t *crcs = (uint32_t *)pinned_new(e, (nb + 1) * 4);
    uint32_t *crcs2 = (uint32_t *)malloc((nb + 1) * 4);
    uint32_t *want = (uint32_t *)malloc(nb * 4);
    unsigned char *dev_base;
    fill_random(host, n);
    kern_crc_blocks(host, n, want);
    crcs[nb] = 0xDEADBEEFu;
    CUDA_OK(cudaMalloc(&dev_base, n + skew));
    unsigned char *dev = dev_base + skew;
    CUDA_OK(cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice));

    struct kern_xfer x[2];
    memset(x, 0, sizeof(x));
    x[0].dst = snap;
    x[0].src = dev;
    x[0].bytes = n;
    x[0].crcs = crcs;
    x[0].src_mem = KERN_MEM_DEVICE;
    x[1].dst = snap2;
    x[1].src = host;
    x[1].bytes = n;
    x[1].crcs = crcs2;
    CHECK(kern_save_start(e, x, 2, true) == PT_OK, "save %zu", n);
    CHECK(kern_save_wait(e, 60000) == PT_OK, "save wait %zu", n);
    CHECK(!kern_save_is_busy(e), "busy after wait");
    CHECK(memcmp(snap, host, n) == 0, "device save data, size %zu skew %zu", n, skew);
    CHECK(memcmp(snap2, host, n) == 0, "host save data, size %zu", n);
    for (size_t b = 0; b < nb; b++) {
      CHECK(crcs[b] == want[b], "device crc size %zu skew %zu block %zu: %08x, oracle %08x",
            n, skew, b, crcs[b], want[b]);
      CHECK(crcs2[b] == want[b], "host crc size %zu block %zu", n, b);
    }
    CHECK(crcs[nb] == 0xDEADBEEFu, "table overrun, size %zu", n);

    /* Restore to the device, and back to the host to compare. */
    struct kern_xfer r;
    size_t bx = 99, bb = 99;
    memset(&r, 0, sizeof(r));
    r.dst = dev;
    r.src = snap;
    r.bytes = n;
    r.crcs = crcs;
    r.dst_mem = KERN_MEM_DEVICE;
    CUDA_OK(cudaMemset(dev, 0, n));
    CHECK(kern_restore(e, &r, 1, &bx, &bb) == PT_OK, "restore %zu", n);
    CUDA_OK(cudaMemcpy(back, dev, n, cudaMemcpyDeviceToHost));
    CHECK(memcmp(back, host, n) == 0, "restored data, size %zu", n);

    /* A flipped byte in the last block: reported, device left alone. */
    snap[n - 1] ^= 0x20;
    CUDA_OK(cudaMemset(dev, 0, n));
    CHECK(kern_restore(e, &r, 1, &bx, &bb) == PT_ECHECKSUM, "damage, size %zu", n);
    CHECK(bx == 0 && bb == nb - 1, "bad block %zu/%zu, want 0/%zu", bx, bb, nb - 1);
    CUDA_OK(cudaMemcpy(back, dev, n < 4096 ? n : 4096, cudaMemcpyDeviceToHost));
    bool zero = true;
    for (size_t i = 0; i < (n < 4096 ? n : 4096); i++)
      zero &= back[i] == 0;
    CHECK(zero, "device written from a damaged snapshot, size %zu", n);

    CUDA_OK(cudaFree(dev_base));
    pinned_free(e, (unsigned char *)crcs);
    pinned_free(e, snap2);
    pinned_free(e, snap);
    free(want);
    free(crcs2);
    free(back);
    free(host);
  }
  printf("%s: device save/restore round trip, skew %zu\n", failures ? "FAIL" : "ok", skew);
}

/* A big save: EINFLIGHT, the zero deadline, then throughput. */
static void test_big(struct kern_engine *e)
{
  size_t n = (size_t)1 << 30, nb = kern_nblocks(n);
  unsigned char *dev, *snap = pinned_new(e, n);
  uint32_t *crcs = (uint32_t *)pinned_new(e, nb * 4);
  uint32_t *want = (uint32_t *)malloc(nb * 4);
  CUDA_OK(cudaMalloc(&dev, n));
  unsigned char *host = (unsigned char *)malloc(n);
  fill_random(host, 64 * MIB);
  for (size_t o = 64 * MIB; o < n; o += 64 * MIB)
    memcpy(host + o, host, 64 * MIB);
  host[n - 5] ^= 1;
  CUDA_OK(cudaMemcpy(dev, host, n, cudaMemcpyHostToDevice));
  kern_crc_blocks(host, n, want);

  struct kern_xfer x;
  memset(&x, 0, sizeof(x));
  x.dst = snap;
  x.src = dev;
  x.bytes = n;
  x.crcs = crcs;
  x.src_mem = KERN_MEM_DEVICE;
  /* Warm up (the kernel may be compiled from PTX at first launch). */
  CHECK(kern_save_start(e, &x, 1, true) == PT_OK, "warm-up save");
  CHECK(kern_save_wait(e, 60000) == PT_OK, "warm-up wait");

  CHECK(kern_save_start(e, &x, 1, true) == PT_OK, "save 1 GiB");
  int second = kern_save_start(e, &x, 1, true);
  int rc0 = kern_save_wait(e, 0);
  /* 1 GiB takes milliseconds over PCIe; these calls take microseconds. */
  CHECK(second == PT_EINFLIGHT, "second save: %s", pt_err_name(second));
  CHECK(rc0 == -ETIMEDOUT, "wait 0: %s", pt_err_name(rc0));
  CHECK(kern_save_wait(e, 60000) == PT_OK, "wait");
  bool same = memcmp(snap, host, n) == 0;
  CHECK(same, "1 GiB data");
  for (size_t b = 0; b < nb; b++)
    CHECK(crcs[b] == want[b], "1 GiB block %zu", b);

  for (int crc = 0; crc < 2; crc++) {
    double best = 0;
    for (int rep = 0; rep < 5; rep++) {
      double t0 = now_s();
      CHECK(kern_save_start(e, &x, 1, crc != 0) == PT_OK, "timed save");
      CHECK(kern_save_wait(e, 60000) == PT_OK, "timed wait");
      double t = now_s() - t0;
      if ((double)n / t > best)
        best = (double)n / t;
    }
    printf("info: device->pinned host save of 1 GiB, crc %s: %.1f GB/s\n",
           crc ? "on" : "off", best / 1e9);
  }
  double t0 = now_s();
  struct kern_xfer r = x;
  r.dst = dev;
  r.src = snap;
  r.src_mem = KERN_MEM_HOST;
  r.dst_mem = KERN_MEM_DEVICE;
  CHECK(kern_restore(e, &r, 1, NULL, NULL) == PT_OK, "restore 1 GiB");
  printf("info: verified restore of 1 GiB to the device: %.1f GB/s\n",
         (double)n / (now_s() - t0) / 1e9);

  CUDA_OK(cudaFree(dev));
  pinned_free(e, (unsigned char *)crcs);
  pinned_free(e, snap);
  free(want);
  free(host);
  printf("%s: 1 GiB save, in-flight and deadline\n", failures ? "FAIL" : "ok");
}

/* Spins for about `cycles` clocks, then writes v into every byte of p:
 * work still queued on the caller's stream when the save starts. */
static __global__ void late_fill(unsigned char *p, size_t n, unsigned char v,
                                 long long cycles)
{
  long long t0 = clock64();
  while (clock64() - t0 < cycles)
    ;
  for (size_t i = blockIdx.x * blockDim.x + threadIdx.x; i < n;
       i += (size_t)gridDim.x * blockDim.x)
    p[i] = v;
}

/* kern_save_after(): the save's copies wait for the caller's stream, so
 * the snapshot holds what a kernel still running there writes; and the
 * table is that of those bytes. */
static void test_after_stream(struct kern_engine *e)
{
  size_t n = 8 * MIB + 123, nb = kern_nblocks(n);
  unsigned char *dev, *snap = pinned_new(e, n), *want = (unsigned char *)malloc(n);
  uint32_t *crcs = (uint32_t *)pinned_new(e, nb * 4), *wcrc = (uint32_t *)malloc(nb * 4);
  cudaStream_t user;
  CUDA_OK(cudaStreamCreateWithFlags(&user, cudaStreamNonBlocking));
  CUDA_OK(cudaMalloc(&dev, n));
  CUDA_OK(cudaMemset(dev, 1, n));
  CUDA_OK(cudaDeviceSynchronize());
  memset(want, 7, n);
  kern_crc_blocks(want, n, wcrc);
  late_fill<<<64, 256, 0, user>>>(dev, n, 7, 200000000LL); /* ~0.1 s */
  CUDA_OK(cudaGetLastError());
  struct kern_xfer x;
  memset(&x, 0, sizeof(x));
  x.dst = snap;
  x.src = dev;
  x.bytes = n;
  x.crcs = crcs;
  x.src_mem = KERN_MEM_DEVICE;
  CHECK(kern_save_after(e, user) == PT_OK, "save after");
  CHECK(kern_save_start(e, &x, 1, true) == PT_OK, "save");
  CHECK(kern_save_wait(e, 60000) == PT_OK, "save wait");
  CHECK(memcmp(snap, want, n) == 0, "the save did not wait for the caller's stream");
  CHECK(memcmp(crcs, wcrc, nb * 4) == 0, "table of other bytes than the saved ones");
  CHECK(kern_save_after(e, NULL) == PT_OK, "none again");
  CHECK(kern_save_after(NULL, NULL) == -EINVAL, "NULL engine");
  CUDA_OK(cudaStreamSynchronize(user));
  CUDA_OK(cudaStreamDestroy(user));
  CUDA_OK(cudaFree(dev));
  pinned_free(e, (unsigned char *)crcs);
  pinned_free(e, snap);
  free(wcrc);
  free(want);
  printf("%s: a save waits for the caller's stream\n", failures ? "FAIL" : "ok");
}

static void test_args(struct kern_engine *e)
{
  unsigned char a[64];
  CHECK(kern_host_register(e, a, 0) == -EINVAL, "zero-byte register");
  CHECK(kern_host_unregister(e, a) == -ENOENT, "unregister unknown");
  CHECK(strcmp(kern_backend_name(), "cuda") == 0, "backend name");
  CHECK(kern_backend_has_device(), "has device");
  struct kern_xfer x;
  memset(&x, 0, sizeof(x));
  x.dst = a;
  x.src = a;
  x.bytes = 64;
  x.dst_mem = KERN_MEM_DEVICE;
  CHECK(kern_save_start(e, &x, 1, true) == -EINVAL, "save to device memory");
  CHECK(kern_save_wait(e, 0) == PT_OK, "wait with nothing in flight");
  printf("%s: arguments\n", failures ? "FAIL" : "ok");
}

int main(void)
{
  int ndev = 0;

  test_emulation();
  cudaError_t err = cudaGetDeviceCount(&ndev);
  if (err != cudaSuccess || ndev == 0) {
    if (failures)
      return 1;
    printf("skip: no usable GPU: %s\n",
           err != cudaSuccess ? cudaGetErrorString(err) : "no device found");
    return 77;
  }
  struct cudaDeviceProp prop;
  CUDA_OK(cudaGetDeviceProperties(&prop, 0));
  printf("info: device 0: %s, %d SMs\n", prop.name, prop.multiProcessorCount);

  struct kern_engine *e = NULL;
  int rc = kern_engine_new(&e, 2);
  if (rc != PT_OK) {
    fprintf(stderr, "FAIL: kern_engine_new: %s\n", pt_strerror(rc));
    return 1;
  }
  test_args(e);
  test_round_trip(e, 0);
  test_round_trip(e, 3);
  test_after_stream(e);
  test_big(e);
  kern_engine_free(e);
  printf("%s: %d failure(s)\n", failures ? "FAIL" : "PASS", failures);
  return failures ? 1 : 0;
}
