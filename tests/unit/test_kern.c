/*
 * test_kern.c — the CPU copy backend (kernels_cpu.c, kernels_host.c).
 *
 * Checksums are checked against a table-driven CRC32C written here from the
 * polynomial (itself checked bit by bit and against the published check
 * value), not against the code under test. Copies are checked byte for byte.
 * Buffers are offset from their allocations so that no test depends on
 * alignment.
 */
#include <check.h>
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <isa-l/crc.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "tests/unit/unit.h"

#define MIB ((size_t)1 << 20)

/* ---- reference CRC32C (Castagnoli, reflected, no final xor) ------------- */

#define POLY 0x82F63B78u

static uint32_t ref_table[256];

static uint32_t ref_bitwise(const unsigned char *p, size_t n, uint32_t crc)
{
  for (size_t i = 0; i < n; i++) {
    crc ^= p[i];
    for (int k = 0; k < 8; k++)
      crc = (crc >> 1) ^ (POLY & (0u - (crc & 1)));
  }
  return crc;
}

static void ref_init(void)
{
  for (uint32_t i = 0; i < 256; i++) {
    unsigned char b = (unsigned char)i;
    ref_table[i] = ref_bitwise(&b, 1, 0);
  }
}

static uint32_t ref_crc(const unsigned char *p, size_t n, uint32_t crc)
{
  for (size_t i = 0; i < n; i++)
    crc = (crc >> 8) ^ ref_table[(crc ^ p[i]) & 0xff];
  return crc;
}

static void ref_blocks(const unsigned char *p, size_t bytes, uint32_t *crcs)
{
  for (size_t b = 0; b * MIB < bytes; b++) {
    size_t len = bytes - b * MIB < MIB ? bytes - b * MIB : MIB;
    crcs[b] = ref_crc(p + b * MIB, len, CRC32C_SEED);
  }
}

/* ---- buffers ------------------------------------------------------------ */

static uint64_t rng_state = 0x9E3779B97F4A7C15ull;

static uint64_t rng_next(void)
{
  rng_state ^= rng_state << 13;
  rng_state ^= rng_state >> 7;
  rng_state ^= rng_state << 17;
  return rng_state;
}

static void fill_random(unsigned char *p, size_t n)
{
  size_t i = 0;
  for (; i + 8 <= n; i += 8) {
    uint64_t v = rng_next();
    memcpy(p + i, &v, 8);
  }
  for (; i < n; i++)
    p[i] = (unsigned char)rng_next();
}

/* A buffer of n bytes at offset `skew` into its allocation, followed by one
 * zero byte. */
struct buf {
  unsigned char *base;
  unsigned char *p;
  size_t n;
};

static struct buf buf_new(size_t n, size_t skew, int fill)
{
  struct buf b = {.n = n};
  b.base = malloc(n + skew + 1);
  ck_assert_ptr_nonnull(b.base);
  b.p = b.base + skew;
  b.p[n] = 0; /* a sentinel past the end */
  if (fill < 0)
    fill_random(b.p, n);
  else
    memset(b.p, fill, n);
  return b;
}

static void buf_free(struct buf *b)
{
  free(b->base);
  b->base = b->p = NULL;
}

static uint32_t *crcs_new(size_t bytes)
{
  size_t nb = kern_nblocks(bytes) + 1;
  uint32_t *c = malloc(nb * sizeof(*c));
  ck_assert_ptr_nonnull(c);
  for (size_t i = 0; i < nb; i++)
    c[i] = 0xDEADBEEFu;
  return c;
}

static struct kern_engine *engine_new(int threads)
{
  struct kern_engine *e = NULL;
  ck_assert_int_eq(kern_engine_new(&e, threads), PT_OK);
  ck_assert_ptr_nonnull(e);
  return e;
}

static const int thread_counts[] = {1, 3};

/* Odd sizes around block and sub-chunk boundaries. */
static const size_t odd_sizes[] = {
    1, 63, 4097, MIB - 1, MIB, MIB + 1, (256 << 10) + 7, 3 * MIB + 12345,
    5 * MIB - 17,
};
#define N_ODD (sizeof(odd_sizes) / sizeof(odd_sizes[0]))

/* ---- checksum helpers --------------------------------------------------- */

START_TEST(test_reference_crc)
{
  static const unsigned char check[] = "123456789";
  ref_init();
  /* The published CRC-32C check value, with the final xor undone. */
  ck_assert_uint_eq(ref_bitwise(check, 9, 0xFFFFFFFFu), ~0xE3069283u);
  ck_assert_uint_eq(ref_crc(check, 9, 0xFFFFFFFFu), ~0xE3069283u);
  ck_assert_uint_eq(crc32c(check, 9), ~0xE3069283u);
  ck_assert_uint_eq(crc32c(check, 0), CRC32C_SEED);
}
END_TEST

/* Chaining crc32_iscsi across sub-chunks, as the save path does, gives the
 * CRC of the whole block, for any split. */
START_TEST(test_crc_chaining)
{
  static const size_t subs[] = {1, 4096, 128 << 10, 256 << 10, 333333};
  struct buf b = buf_new(MIB + 5, 3, -1);
  ref_init();
  uint32_t whole = crc32_iscsi(b.p, (int)MIB, CRC32C_SEED);
  ck_assert_uint_eq(whole, ref_crc(b.p, MIB, CRC32C_SEED));
  for (size_t k = 0; k < sizeof(subs) / sizeof(subs[0]); k++) {
    uint32_t c = CRC32C_SEED;
    for (size_t o = 0; o < MIB; o += subs[k]) {
      size_t m = MIB - o < subs[k] ? MIB - o : subs[k];
      c = crc32_iscsi(b.p + o, (int)m, c);
    }
    ck_assert_uint_eq(c, whole);
  }
  ck_assert_uint_eq(crc32c(b.p, MIB + 5),
                    ref_crc(b.p, MIB + 5, CRC32C_SEED));
  buf_free(&b);
}
END_TEST

START_TEST(test_crc_blocks)
{
  ref_init();
  for (size_t k = 0; k < N_ODD; k++) {
    size_t n = odd_sizes[k];
    struct buf b = buf_new(n, k % 7, -1);
    uint32_t *got = crcs_new(n), *want = crcs_new(n);
    kern_crc_blocks(b.p, n, got);
    ref_blocks(b.p, n, want);
    for (size_t i = 0; i <= kern_nblocks(n); i++)
      ck_assert_msg(got[i] == want[i], "size %zu block %zu", n, i);
    free(got);
    free(want);
    buf_free(&b);
  }
}
END_TEST

/* ---- save --------------------------------------------------------------- */

/* Every odd size in one save: tables equal the reference, data equal. */
START_TEST(test_save_tables)
{
  int threads = thread_counts[_i];
  struct kern_engine *e = engine_new(threads);
  struct buf src[N_ODD], dst[N_ODD];
  struct kern_xfer x[N_ODD];
  ref_init();
  for (size_t k = 0; k < N_ODD; k++) {
    src[k] = buf_new(odd_sizes[k], k % 5, -1);
    dst[k] = buf_new(odd_sizes[k], (k * 13) % 64, 0);
    x[k] = (struct kern_xfer){.dst = dst[k].p, .src = src[k].p,
                              .bytes = odd_sizes[k],
                              .crcs = crcs_new(odd_sizes[k])};
  }
  ck_assert_int_eq(kern_save_start(e, x, N_ODD, true), PT_OK);
  ck_assert_int_eq(kern_save_wait(e, 30000), PT_OK);
  ck_assert(!kern_save_is_busy(e));
  for (size_t k = 0; k < N_ODD; k++) {
    size_t n = odd_sizes[k], nb = kern_nblocks(n);
    uint32_t *want = crcs_new(n);
    ref_blocks(src[k].p, n, want);
    ck_assert_msg(memcmp(dst[k].p, src[k].p, n) == 0, "size %zu data", n);
    for (size_t i = 0; i < nb; i++)
      ck_assert_msg(x[k].crcs[i] == want[i], "size %zu block %zu", n, i);
    ck_assert_uint_eq(x[k].crcs[nb], 0xDEADBEEFu); /* no write past */
    free(want);
    free(x[k].crcs);
    buf_free(&src[k]);
    buf_free(&dst[k]);
  }
  kern_engine_free(e);
}
END_TEST

/* crc false copies and leaves tables alone; a zero-byte xfer and one
 * without a table ride along. */
START_TEST(test_save_nocrc_mixed)
{
  struct kern_engine *e = engine_new(thread_counts[_i]);
  struct buf s0 = buf_new(2 * MIB + 3, 1, -1), d0 = buf_new(2 * MIB + 3, 2, 0);
  struct buf s1 = buf_new(777, 0, -1), d1 = buf_new(777, 5, 0);
  uint32_t *c0 = crcs_new(s0.n), zero_crc = 0x12345678u;
  unsigned char z = 0x5A;
  struct kern_xfer x[3] = {
      {.dst = d0.p, .src = s0.p, .bytes = s0.n, .crcs = c0},
      {.dst = &z, .src = s1.p, .bytes = 0, .crcs = &zero_crc},
      {.dst = d1.p, .src = s1.p, .bytes = s1.n, .crcs = NULL},
  };
  ck_assert_int_eq(kern_save_start(e, x, 3, false), PT_OK);
  ck_assert_int_eq(kern_save_wait(e, -1), PT_OK);
  ck_assert(memcmp(d0.p, s0.p, s0.n) == 0);
  ck_assert(memcmp(d1.p, s1.p, s1.n) == 0);
  for (size_t i = 0; i <= kern_nblocks(s0.n); i++)
    ck_assert_uint_eq(c0[i], 0xDEADBEEFu);
  ck_assert_uint_eq(zero_crc, 0x12345678u);
  ck_assert_uint_eq(z, 0x5A);

  /* The same with crc true: table filled, NULL table and 0 bytes fine. */
  memset(d0.p, 0, d0.n);
  memset(d1.p, 0, d1.n);
  ck_assert_int_eq(kern_save_start(e, x, 3, true), PT_OK);
  ck_assert_int_eq(kern_save_wait(e, -1), PT_OK);
  ck_assert(memcmp(d0.p, s0.p, s0.n) == 0);
  ck_assert(memcmp(d1.p, s1.p, s1.n) == 0);
  ref_init();
  ck_assert_uint_eq(c0[2], ref_crc(s0.p + 2 * MIB, 3, CRC32C_SEED));
  ck_assert_uint_eq(zero_crc, 0x12345678u);
  free(c0);
  buf_free(&s0);
  buf_free(&d0);
  buf_free(&s1);
  buf_free(&d1);
  kern_engine_free(e);
}
END_TEST

START_TEST(test_save_empty)
{
  struct kern_engine *e = engine_new(1);
  ck_assert_int_eq(kern_save_wait(e, 0), PT_OK); /* nothing in flight */
  ck_assert_int_eq(kern_save_start(e, NULL, 0, true), PT_OK);
  ck_assert(!kern_save_is_busy(e));
  ck_assert_int_eq(kern_save_wait(e, 0), PT_OK);
  kern_engine_free(e);
}
END_TEST

/* A save that cannot finish in the wait's zero milliseconds. Completion is a
 * race the test cannot rule out, so it retries a few times. */
START_TEST(test_save_wait_timeout)
{
  size_t n = 64 * MIB;
  struct kern_engine *e = engine_new(1);
  struct buf s = buf_new(n, 0, -1), d = buf_new(n, 0, 0);
  uint32_t *c = crcs_new(n);
  struct kern_xfer x = {.dst = d.p, .src = s.p, .bytes = n, .crcs = c};
  bool timed_out = false;
  for (int attempt = 0; attempt < 10 && !timed_out; attempt++) {
    memset(d.p, 0, n);
    ck_assert_int_eq(kern_save_start(e, &x, 1, true), PT_OK);
    int rc = kern_save_wait(e, 0);
    if (rc == -ETIMEDOUT) {
      timed_out = true;
    } else {
      ck_assert_int_eq(rc, PT_OK);
      continue;
    }
    ck_assert_int_eq(kern_save_wait(e, 30000), PT_OK);
    ck_assert(!kern_save_is_busy(e));
    ck_assert(memcmp(d.p, s.p, n) == 0);
    ref_init();
    ck_assert_uint_eq(c[63], ref_crc(s.p + 63 * MIB, MIB, CRC32C_SEED));
  }
  ck_assert_msg(timed_out, "a 64 MiB save never outlasted a 0 ms wait");
  free(c);
  buf_free(&s);
  buf_free(&d);
  kern_engine_free(e);
}
END_TEST

START_TEST(test_save_inflight)
{
  size_t n = 64 * MIB;
  struct kern_engine *e = engine_new(1);
  struct buf s = buf_new(n, 0, -1), d = buf_new(n, 0, 0);
  struct buf s2 = buf_new(100, 0, -1), d2 = buf_new(100, 0, 0);
  uint32_t *c = crcs_new(n);
  struct kern_xfer x = {.dst = d.p, .src = s.p, .bytes = n, .crcs = c};
  struct kern_xfer x2 = {.dst = d2.p, .src = s2.p, .bytes = 100};
  size_t bx = 99, bb = 99;
  bool refused = false;
  for (int attempt = 0; attempt < 10 && !refused; attempt++) {
    ck_assert_int_eq(kern_save_start(e, &x, 1, true), PT_OK);
    int rc = kern_save_start(e, &x2, 1, true);
    if (rc == PT_EINFLIGHT) {
      refused = true;
      /* A restore must not run beside the save either. */
      ck_assert_int_eq(kern_restore(e, &x, 1, &bx, &bb), PT_EINFLIGHT);
      ck_assert_uint_eq(bx, 99);
    } else {
      ck_assert_int_eq(rc, PT_OK); /* the first had already completed */
    }
    ck_assert_int_eq(kern_save_wait(e, 30000), PT_OK);
  }
  ck_assert_msg(refused, "a second save never met the first in flight");
  ck_assert(memcmp(d.p, s.p, n) == 0);
  /* Once complete, the next save is accepted. */
  ck_assert_int_eq(kern_save_start(e, &x2, 1, true), PT_OK);
  ck_assert_int_eq(kern_save_wait(e, 30000), PT_OK);
  ck_assert(memcmp(d2.p, s2.p, 100) == 0);
  free(c);
  buf_free(&s);
  buf_free(&d);
  buf_free(&s2);
  buf_free(&d2);
  kern_engine_free(e);
}
END_TEST

START_TEST(test_nodevice)
{
  struct kern_engine *e = engine_new(1);
  unsigned char a[64] = {1}, b[64] = {0};
  uint32_t crc = crc32c(a, 64);
  struct kern_xfer ok = {.dst = b, .src = a, .bytes = 64, .crcs = &crc};
  struct kern_xfer x[2] = {ok, ok};
  ck_assert(!kern_backend_has_device());
  ck_assert_str_eq(kern_backend_name(), "cpu");
  x[1].src_mem = KERN_MEM_DEVICE;
  ck_assert_int_eq(kern_save_start(e, x, 2, true), PT_ENODEVICE);
  ck_assert(!kern_save_is_busy(e));
  ck_assert_int_eq(kern_restore(e, x, 2, NULL, NULL), PT_ENODEVICE);
  x[1].src_mem = KERN_MEM_HOST;
  x[1].dst_mem = KERN_MEM_DEVICE;
  ck_assert_int_eq(kern_save_start(e, x, 2, false), PT_ENODEVICE);
  ck_assert_int_eq(kern_restore(e, x, 2, NULL, NULL), PT_ENODEVICE);
  /* Nothing was copied by the refused calls. */
  ck_assert_uint_eq(b[0], 0);
  x[1].dst_mem = 7;
  ck_assert_int_eq(kern_save_start(e, x, 2, false), -EINVAL);
  kern_engine_free(e);
}
END_TEST

START_TEST(test_bad_args)
{
  struct kern_engine *e = engine_new(1);
  unsigned char a[16] = {0}, b[16];
  struct kern_xfer x = {.dst = b, .src = NULL, .bytes = 16};
  ck_assert_int_eq(kern_engine_new(NULL, 1), -EINVAL);
  ck_assert_int_eq(kern_save_start(NULL, &x, 1, true), -EINVAL);
  ck_assert_int_eq(kern_save_start(e, NULL, 1, true), -EINVAL);
  ck_assert_int_eq(kern_save_start(e, &x, 1, true), -EINVAL);
  x.src = a;
  /* Restore needs a table to check against. */
  ck_assert_int_eq(kern_restore(e, &x, 1, NULL, NULL), -EINVAL);
  ck_assert_int_eq(kern_host_register(e, a, 0), -EINVAL);
  ck_assert_int_eq(kern_host_register(e, NULL, 16), -EINVAL);
  ck_assert_int_eq(kern_host_register(e, a, sizeof(a)), PT_OK);
  ck_assert_int_eq(kern_host_unregister(e, a), PT_OK);
  ck_assert(!kern_save_is_busy(NULL));
  kern_engine_free(NULL);
  kern_engine_free(e);
  /* Thread counts out of range are clamped, not refused. */
  e = engine_new(0);
  kern_engine_free(e);
  e = engine_new(1000);
  x.crcs = NULL;
  ck_assert_int_eq(kern_save_start(e, &x, 1, false), PT_OK);
  ck_assert_int_eq(kern_save_wait(e, -1), PT_OK);
  ck_assert(memcmp(a, b, 16) == 0);
  kern_engine_free(e);
}
END_TEST

/* Freeing the engine while a save runs waits for it and leaks nothing. */
START_TEST(test_free_while_busy)
{
  size_t n = 48 * MIB;
  struct buf s = buf_new(n, 0, -1), d = buf_new(n, 0, 0);
  uint32_t *c = crcs_new(n);
  struct kern_xfer x = {.dst = d.p, .src = s.p, .bytes = n, .crcs = c};
  for (int k = 0; k < 2; k++) {
    struct kern_engine *e = engine_new(thread_counts[k]);
    memset(d.p, 0, n);
    ck_assert_int_eq(kern_save_start(e, &x, 1, true), PT_OK);
    kern_engine_free(e);
    ck_assert(memcmp(d.p, s.p, n) == 0);
    ref_init();
    ck_assert_uint_eq(c[47], ref_crc(s.p + 47 * MIB, MIB, CRC32C_SEED));
  }
  free(c);
  buf_free(&s);
  buf_free(&d);
}
END_TEST

/* ---- restore ------------------------------------------------------------ */

struct saved {
  struct buf src[3], shm[3], out[3];
  struct kern_xfer save[3], restore[3];
};

static const size_t saved_sizes[3] = {7 * MIB + 5, 333, 4 * MIB};

/* Saves three regions into "shm" buffers; restore xfers point back. */
static void saved_make(struct saved *sv, struct kern_engine *e)
{
  for (int k = 0; k < 3; k++) {
    size_t n = saved_sizes[k];
    sv->src[k] = buf_new(n, (size_t)k, -1);
    sv->shm[k] = buf_new(n, (size_t)k * 3, 0);
    sv->out[k] = buf_new(n, (size_t)k * 5 + 1, 0);
    sv->save[k] = (struct kern_xfer){.dst = sv->shm[k].p, .src = sv->src[k].p,
                                     .bytes = n, .crcs = crcs_new(n)};
    sv->restore[k] = (struct kern_xfer){.dst = sv->out[k].p,
                                        .src = sv->shm[k].p, .bytes = n,
                                        .crcs = sv->save[k].crcs};
  }
  ck_assert_int_eq(kern_save_start(e, sv->save, 3, true), PT_OK);
  ck_assert_int_eq(kern_save_wait(e, 30000), PT_OK);
}

static void saved_free(struct saved *sv)
{
  for (int k = 0; k < 3; k++) {
    free(sv->save[k].crcs);
    buf_free(&sv->src[k]);
    buf_free(&sv->shm[k]);
    buf_free(&sv->out[k]);
  }
}

START_TEST(test_restore_exact)
{
  struct kern_engine *e = engine_new(thread_counts[_i]);
  struct saved sv;
  size_t bx = 99, bb = 99;
  saved_make(&sv, e);
  ck_assert_int_eq(kern_restore(e, sv.restore, 3, &bx, &bb), PT_OK);
  ck_assert_uint_eq(bx, 99); /* untouched on success */
  for (int k = 0; k < 3; k++) {
    ck_assert(memcmp(sv.out[k].p, sv.src[k].p, saved_sizes[k]) == 0);
    /* No byte written past the end. */
    ck_assert_uint_eq(sv.out[k].p[saved_sizes[k]], 0);
  }
  ck_assert(!kern_save_is_busy(e));
  saved_free(&sv);
  kern_engine_free(e);
}
END_TEST

START_TEST(test_restore_flipped_byte)
{
  struct kern_engine *e = engine_new(thread_counts[_i]);
  struct saved sv;
  size_t bx, bb;
  saved_make(&sv, e);

  /* One flipped bit in the short last block of xfer 0. */
  sv.shm[0].p[7 * MIB + 4] ^= 0x10;
  bx = bb = 99;
  ck_assert_int_eq(kern_restore(e, sv.restore, 3, &bx, &bb), PT_ECHECKSUM);
  ck_assert_uint_eq(bx, 0);
  ck_assert_uint_eq(bb, 7);
  /* Every other block was still copied. */
  ck_assert(memcmp(sv.out[2].p, sv.src[2].p, saved_sizes[2]) == 0);
  sv.shm[0].p[7 * MIB + 4] ^= 0x10;

  /* Damage in xfer 2 block 3 and xfer 1 block 0: the lowest is reported,
   * every time, whichever thread sees which first. */
  sv.shm[2].p[3 * MIB] ^= 1;
  sv.shm[1].p[332] ^= 0x80;
  for (int rep = 0; rep < 5; rep++) {
    bx = bb = 99;
    ck_assert_int_eq(kern_restore(e, sv.restore, 3, &bx, &bb), PT_ECHECKSUM);
    ck_assert_uint_eq(bx, 1);
    ck_assert_uint_eq(bb, 0);
  }
  sv.shm[1].p[332] ^= 0x80;
  bx = bb = 99;
  ck_assert_int_eq(kern_restore(e, sv.restore, 3, &bx, &bb), PT_ECHECKSUM);
  ck_assert_uint_eq(bx, 2);
  ck_assert_uint_eq(bb, 3);
  ck_assert_int_eq(kern_restore(e, sv.restore, 3, NULL, NULL), PT_ECHECKSUM);
  sv.shm[2].p[3 * MIB] ^= 1;

  /* A damaged table entry is caught the same way. */
  sv.restore[0].crcs[2] ^= 4;
  ck_assert_int_eq(kern_restore(e, sv.restore, 3, &bx, &bb), PT_ECHECKSUM);
  ck_assert_uint_eq(bx, 0);
  ck_assert_uint_eq(bb, 2);
  sv.restore[0].crcs[2] ^= 4;
  ck_assert_int_eq(kern_restore(e, sv.restore, 3, &bx, &bb), PT_OK);
  saved_free(&sv);
  kern_engine_free(e);
}
END_TEST

/* A restore after a restore, and a save after a restore, reuse the pool. */
START_TEST(test_pool_reuse)
{
  struct kern_engine *e = engine_new(3);
  struct saved sv;
  saved_make(&sv, e);
  for (int rep = 0; rep < 20; rep++) {
    memset(sv.out[0].p, 0, saved_sizes[0]);
    ck_assert_int_eq(kern_restore(e, sv.restore, 3, NULL, NULL), PT_OK);
    ck_assert(memcmp(sv.out[0].p, sv.src[0].p, saved_sizes[0]) == 0);
    ck_assert_int_eq(kern_save_start(e, sv.save, 3, rep % 2 == 0), PT_OK);
    ck_assert_int_eq(kern_save_wait(e, 30000), PT_OK);
  }
  saved_free(&sv);
  kern_engine_free(e);
}
END_TEST

static Suite *kern_suite(void)
{
  Suite *s = suite_create("kern");
  TCase *tc = tcase_create("crc");
  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, test_reference_crc);
  tcase_add_test(tc, test_crc_chaining);
  tcase_add_test(tc, test_crc_blocks);
  suite_add_tcase(s, tc);

  tc = tcase_create("save");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_save_tables, 0, 2);
  tcase_add_loop_test(tc, test_save_nocrc_mixed, 0, 2);
  tcase_add_test(tc, test_save_empty);
  tcase_add_test(tc, test_save_wait_timeout);
  tcase_add_test(tc, test_save_inflight);
  tcase_add_test(tc, test_nodevice);
  tcase_add_test(tc, test_bad_args);
  tcase_add_test(tc, test_free_while_busy);
  suite_add_tcase(s, tc);

  tc = tcase_create("restore");
  tcase_set_timeout(tc, 60);
  tcase_add_loop_test(tc, test_restore_exact, 0, 2);
  tcase_add_loop_test(tc, test_restore_flipped_byte, 0, 2);
  tcase_add_test(tc, test_pool_reuse);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(kern_suite());
}
