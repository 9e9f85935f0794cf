/*
 * test_snap_parity.c — the parity area of each slot (snap_store.h,
 * "Parity"): none without a code; under k+m, m chunks of ceil(slot data
 * bytes / k) rounded up to 64 bytes, each slot's area 2 MiB aligned, apart
 * from every other area and from every slot's data and checksum table;
 * recorded in the header, so that a changed code cannot pass for the
 * object's own. Nothing fills the areas yet: the tests write them
 * themselves.
 *
 * Objects are named /pt-tpar.<runner pid>.<tag>; main() removes leftovers.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "kernels/kernels.h"
#include "pt.h"
#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

#define MIB ((uint64_t)1 << 20)

static pid_t runner_pid;

static void shm_name(char *out, size_t len, const char *tag)
{
  snprintf(out, len, "/pt-tpar.%d.%s", (int)runner_pid, tag);
}

static uint64_t up(uint64_t v, uint64_t a)
{
  return v % a == 0 ? v : v + (a - v % a);
}

/* Two regions whose slot data (3 MiB + 7 + 4100, 64-aligned, then the
 * 1 MiB blob area) divides by no k of interest. */
static struct snap_region_desc regs[2];

static struct snap_params params(uint32_t nslots, uint32_t k, uint32_t m)
{
  memset(regs, 0, sizeof(regs));
  strcpy(regs[0].name, "params");
  regs[0].bytes = 3 * MIB + 7;
  strcpy(regs[1].name, "moments");
  regs[1].bytes = 4100;
  struct snap_params p = {.job = "par", .rank = 0, .world = 1,
                          .nslots = nslots, .regions = regs, .nregions = 2,
                          .ec_k = k, .ec_m = m};
  return p;
}

static struct snap_store *make(const char *tag, uint32_t nslots, uint32_t k,
                               uint32_t m, char *name, size_t len)
{
  struct snap_params p = params(nslots, k, m);
  struct snap_store *s = NULL;
  char err[256] = "";
  shm_name(name, len, tag);
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s",
                err);
  return s;
}

static uint64_t off_of(const struct snap_store *s, const void *p)
{
  return (uint64_t)((const uint8_t *)p - (const uint8_t *)snap_store_base(s));
}

static bool apart(uint64_t a, uint64_t alen, uint64_t b, uint64_t blen)
{
  return a + alen <= b || b + blen <= a;
}

/* Without a code: no parity area, and not one byte of the object for it. */
START_TEST(test_no_code)
{
  char name[64];
  struct snap_store *s = make("none", 3, 0, 0, name, sizeof(name));
  uint32_t k = 9, m = 9;
  snap_store_code(s, &k, &m);
  ck_assert_uint_eq(k, 0);
  ck_assert_uint_eq(m, 0);
  ck_assert_uint_eq(snap_store_parity_chunk(s), 0);
  for (uint32_t i = 0; i < 4; i++) {
    uint64_t len = 77;
    ck_assert_ptr_null(snap_store_parity(s, i, &len));
    ck_assert_uint_eq(len, 0);
  }
  /* The object ends with the last slot's data area. */
  uint64_t last = off_of(s, snap_slot_data(s, 2));
  ck_assert_uint_eq(snap_store_total_bytes(s),
                    last + up(snap_store_slot_bytes(s), 2 * MIB));
  const uint8_t *b = snap_store_base(s);
  uint64_t v;
  memcpy(&v, b + 168, 8);
  ck_assert_uint_eq(v, 0); /* parity bytes per slot */
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* Code 4+2, and 3+1 (a slot size no 3 divides): the size, the chunk, the
 * alignment, the header fields, and the object size they add up to. */
START_TEST(test_size_and_alignment)
{
  static const uint32_t codes[][2] = {{4, 2}, {3, 1}, {1, 1}, {16, 16}};
  for (size_t c = 0; c < sizeof(codes) / sizeof(codes[0]); c++) {
    char name[64], tag[16];
    uint32_t k = codes[c][0], m = codes[c][1];
    snprintf(tag, sizeof(tag), "size%zu", c);
    struct snap_store *s = make(tag, 3, k, m, name, sizeof(name));
    uint64_t sb = snap_store_slot_bytes(s);
    uint64_t chunk = up((sb + k - 1) / k, 64);
    ck_assert_uint_ge(chunk * k, sb); /* k chunks hold the slot */
    ck_assert_uint_lt(chunk * k, sb + 64 * (uint64_t)k);
    ck_assert_uint_eq(snap_store_parity_chunk(s), chunk);
    uint32_t gk = 0, gm = 0;
    snap_store_code(s, &gk, &gm);
    ck_assert_uint_eq(gk, k);
    ck_assert_uint_eq(gm, m);
    uint64_t stride = up(m * chunk, 2 * MIB);
    for (uint32_t i = 0; i < 3; i++) {
      uint64_t len = 0;
      void *a = snap_store_parity(s, i, &len);
      ck_assert_ptr_nonnull(a);
      ck_assert_uint_eq(len, m * chunk);
      ck_assert_uint_eq(off_of(s, a) % (2 * MIB), 0);
      ck_assert_uint_le(off_of(s, a) + len, snap_store_total_bytes(s));
      ck_assert_ptr_eq(snap_store_parity(s, i, NULL), a);
    }
    ck_assert_ptr_null(snap_store_parity(s, 3, NULL));
    /* The areas follow the slot data, one stride each, to the end. */
    uint64_t p0 = off_of(s, snap_store_parity(s, 0, NULL));
    ck_assert_uint_eq(p0, off_of(s, snap_slot_data(s, 2)) + up(sb, 2 * MIB));
    ck_assert_uint_eq(snap_store_total_bytes(s), p0 + 3 * stride);
    const uint8_t *b = snap_store_base(s);
    uint64_t v;
    uint32_t w;
    memcpy(&v, b + 160, 8);
    ck_assert_uint_eq(v, p0);
    memcpy(&v, b + 168, 8);
    ck_assert_uint_eq(v, m * chunk);
    memcpy(&w, b + 216, 4);
    ck_assert_uint_eq(w, k);
    memcpy(&w, b + 220, 4);
    ck_assert_uint_eq(w, m);
    memcpy(&v, b + 224, 8);
    ck_assert_uint_eq(v, stride);
    struct snap_params p = params(3, k, m);
    ck_assert_uint_eq(snap_store_bytes_needed(&p), snap_store_total_bytes(s));
    snap_store_close(s);
    snap_store_unlink(name);
  }
  /* 4+2 worked by hand: slot data 3 MiB + 7 -> 3 MiB + 64, + 4100 -> 3 MiB
   * + 4224, + 1 MiB blob = 4 MiB + 4224; a quarter is 1 MiB + 1056, and a
   * chunk, rounded up to 64, 1 MiB + 1088; two are 2 MiB + 2176, so 4 MiB
   * a slot. */
  char name[64];
  struct snap_store *s = make("byhand", 2, 4, 2, name, sizeof(name));
  ck_assert_uint_eq(snap_store_slot_bytes(s), 4 * MIB + 4224);
  ck_assert_uint_eq(snap_store_parity_chunk(s), MIB + 1088);
  uint64_t len = 0;
  ck_assert_ptr_nonnull(snap_store_parity(s, 1, &len));
  ck_assert_uint_eq(len, 2 * MIB + 2176);
  ck_assert_uint_eq(off_of(s, snap_store_parity(s, 1, NULL)) -
                        off_of(s, snap_store_parity(s, 0, NULL)),
                    4 * MIB);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

/* No area overlaps another, a slot's data, its blob or a checksum table;
 * bytes written into every parity area leave sealed slots intact (they
 * verify) and come back from a second mapping. */
START_TEST(test_areas_apart)
{
  char name[64], err[256];
  enum { N = 4 };
  struct snap_store *s = make("apart", N, 4, 2, name, sizeof(name));
  uint64_t sb = snap_store_slot_bytes(s);
  uint64_t tab = ((uint64_t)snap_store_nblocks(s) + 2) * 4;
  for (uint32_t i = 0; i < N; i++) {
    uint64_t li, lj;
    uint64_t pi = off_of(s, snap_store_parity(s, i, &li));
    ck_assert_uint_ge(pi, 4096);
    for (uint32_t j = 0; j < N; j++) {
      uint64_t pj = off_of(s, snap_store_parity(s, j, &lj));
      if (i != j)
        ck_assert(apart(pi, li, pj, lj));
      ck_assert(apart(pi, li, off_of(s, snap_slot_data(s, j)), sb));
      ck_assert(apart(pi, li, off_of(s, snap_slot_crcs(s, j)), tab));
    }
  }

  /* Seal every slot with real data and checksums, then fill the parity. */
  for (uint32_t n = 0; n < N; n++) {
    uint32_t slot;
    uint64_t gen;
    ck_assert_int_eq(snap_slot_acquire(s, 10 + n, &slot, &gen), 0);
    uint8_t *d = snap_slot_data(s, slot);
    uint32_t *crcs = snap_slot_crcs(s, slot);
    for (uint32_t r = 0; r < snap_store_nregions(s); r++) {
      const struct snap_region *reg = snap_store_region(s, r);
      for (uint64_t k = 0; k < reg->bytes; k++)
        d[reg->offset + k] = (uint8_t)(n * 31 + r * 7 + k);
      kern_crc_blocks(d + reg->offset, reg->bytes, crcs + reg->first_block);
    }
    crcs[snap_store_nblocks(s)] = 0;
    crcs[snap_store_nblocks(s) + 1] =
        crc32_iscsi(snap_slot_blob(s, slot), 0, 0xFFFFFFFFu);
    ck_assert_int_eq(snap_slot_seal(s, slot, gen, 10 + n), 0);
  }
  for (uint32_t i = 0; i < N; i++) {
    uint64_t len;
    uint8_t *a = snap_store_parity(s, i, &len);
    memset(a, 0xA0 + (int)i, len);
  }
  for (uint32_t i = 0; i < N; i++)
    ck_assert_int_eq(snap_slot_verify(s, i, NULL), 0);
  struct snap_store *o = NULL;
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  for (uint32_t i = 0; i < N; i++) {
    uint64_t len;
    const uint8_t *a = snap_store_parity(o, i, &len);
    ck_assert_uint_eq(len, 2 * snap_store_parity_chunk(o));
    ck_assert_uint_eq(a[0], 0xA0 + i);
    ck_assert_uint_eq(a[len - 1], 0xA0 + i);
    ck_assert_int_eq(snap_slot_verify(o, i, NULL), 0);
  }
  snap_store_close(o);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

static void poke(const char *name, uint64_t off, const void *buf, size_t len)
{
  int fd = shm_open(name, O_RDWR, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
  close(fd);
}

static void fix_header_crc(const char *name)
{
  uint8_t h[232];
  int fd = shm_open(name, O_RDONLY, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pread(fd, h, sizeof(h), 0), (ssize_t)sizeof(h));
  close(fd);
  uint32_t c = crc32_iscsi(h, sizeof(h), 0xFFFFFFFFu);
  poke(name, 232, &c, 4);
}

/* The code is part of the object: it opens under the code it was made
 * with, and a header whose code was rewritten (checksum fixed) is refused,
 * as the areas it implies are not the object's. Which code a job uses is
 * the SMP's to compare (test_smp_object's test_code_mismatch). */
START_TEST(test_other_code_refused)
{
  char name[64], err[256] = "";
  struct snap_store *s = make("code", 2, 4, 2, name, sizeof(name));
  snap_store_close(s);
  struct snap_store *o = NULL;
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  uint32_t k, m;
  snap_store_code(o, &k, &m);
  ck_assert_uint_eq(k, 4);
  ck_assert_uint_eq(m, 2);
  snap_store_close(o);

  static const uint32_t other[][2] = {{4, 3}, {8, 2}, {0, 0}, {0, 2},
                                      {40, 2}, {2, 4}};
  for (size_t i = 0; i < sizeof(other) / sizeof(other[0]); i++) {
    poke(name, 216, &other[i][0], 4);
    poke(name, 220, &other[i][1], 4);
    fix_header_crc(name);
    o = NULL;
    err[0] = '\0';
    int rc = snap_store_open(&o, name, err, sizeof(err));
    ck_assert_msg(rc == PT_EFORMAT, "code %u+%u: %s (%s)", other[i][0],
                  other[i][1], pt_strerror(rc), err);
    ck_assert_ptr_null(o);
    ck_assert_msg(strstr(err, name) != NULL, "%s", err);
    ck_assert_msg(strstr(err, "parity") != NULL || strstr(err, "code") != NULL,
                  "%s", err);
  }
  /* Back to 4+2: it opens again. */
  static const uint32_t mine[2] = {4, 2};
  poke(name, 216, &mine[0], 4);
  poke(name, 220, &mine[1], 4);
  fix_header_crc(name);
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  snap_store_close(o);
  snap_store_unlink(name);
}
END_TEST

/* The parity counts in the memory budget. */
START_TEST(test_budget_counts_parity)
{
  char name[64], err[256] = "";
  struct snap_params p = params(2, 0, 0);
  uint64_t plain = snap_store_bytes_needed(&p);
  p = params(2, 4, 2);
  uint64_t coded = snap_store_bytes_needed(&p);
  ck_assert_uint_eq(coded, plain + 2 * 4 * MIB);
  p.budget_bytes = plain;
  shm_name(name, sizeof(name), "budget");
  struct snap_store *s = NULL;
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)),
                   PT_EBUDGET);
  ck_assert_ptr_null(s);
  p.budget_bytes = coded;
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s",
                err);
  snap_store_close(s);
  snap_store_unlink(name);
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *su = suite_create("snap_parity");
  TCase *tc = tcase_create("parity");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_no_code);
  tcase_add_test(tc, test_size_and_alignment);
  tcase_add_test(tc, test_areas_apart);
  tcase_add_test(tc, test_other_code_refused);
  tcase_add_test(tc, test_budget_counts_parity);
  suite_add_tcase(su, tc);

  int rc = unit_run(su);
  unit_shm_sweep("pt-tpar.%d.", (int)runner_pid);
  return rc;
}
