/*
 * test_snap_store.c — the snapshot object itself: names, sizes, the byte
 * layout against the table in snap_store.h (recomputed here from the table's
 * rules, independently of snapshot/), create/open round trips, every refusal
 * of create, every kind of damaged or foreign object that open must reject
 * without crashing, and quarantine.
 *
 * Every object this binary creates is named /pt-tsnap.<runner pid>.<tag>;
 * main() removes whatever a failed test left behind.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/statvfs.h>
#include <time.h>
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
  snprintf(out, len, "/pt-tsnap.%d.%s", (int)runner_pid, tag);
}

/* The oracle: ISA-L called directly, not through common/crc32c.c. */
static uint32_t oracle_crc(const void *p, size_t n)
{
  return crc32_iscsi((unsigned char *)p, (int)n, 0xFFFFFFFFu);
}

static uint32_t rd32(const uint8_t *p)
{
  uint32_t v;
  memcpy(&v, p, 4);
  return v;
}
static uint64_t rd64(const uint8_t *p)
{
  uint64_t v;
  memcpy(&v, p, 8);
  return v;
}

static struct snap_region_desc desc(const char *name, uint64_t bytes,
                                    uint32_t kind)
{
  struct snap_region_desc d;
  memset(&d, 0, sizeof(d));
  snprintf(d.name, sizeof(d.name), "%s", name);
  d.bytes = bytes;
  d.kind = kind;
  return d;
}

/* Four regions whose sizes hit every rounding rule: 1 byte, one block plus
 * one byte, 3 bytes, five whole blocks. */
static struct snap_region_desc four[4];

static struct snap_params params4(uint32_t nslots)
{
  four[0] = desc("params", 1, 0);
  four[1] = desc("adam.m", MIB + 1, 1);
  four[2] = desc("rng", 3, 0);
  four[3] = desc("adam.v", 5 * MIB, 0);
  struct snap_params p = {
      .job = "job7", .rank = 2, .world = 4, .nslots = nslots,
      .regions = four, .nregions = 4,
  };
  return p;
}

/* A small object: 2 slots of one 64 KiB region. */
static struct snap_region_desc one[1];
static struct snap_params params_small(void)
{
  one[0] = desc("state", 65536, 0);
  struct snap_params p = {
      .job = "small", .rank = 0, .world = 1, .nslots = 2,
      .regions = one, .nregions = 1,
  };
  return p;
}

/* The layout table's rules, written out again here. */
struct expect {
  uint64_t off[SNAP_MAX_REGIONS];
  uint32_t first[SNAP_MAX_REGIONS], nb[SNAP_MAX_REGIONS];
  uint32_t nblocks;
  uint64_t slot_bytes, stride, region_off, slot_off, crc_off, crc_stride;
  uint64_t blob_off;
  uint64_t data_off, parity_off, parity_bytes, parity_stride, total;
};

#define HDR_CRC_AT 232 /* the header CRC, over bytes 0..231 */

static uint64_t up(uint64_t v, uint64_t a)
{
  return v % a == 0 ? v : v + (a - v % a);
}

static void expect_layout(struct expect *e, const struct snap_params *p)
{
  uint64_t cur = 0;
  uint32_t blocks = 0;
  for (uint32_t i = 0; i < p->nregions; i++) {
    e->off[i] = cur;
    e->first[i] = blocks;
    e->nb[i] = (uint32_t)((p->regions[i].bytes + MIB - 1) / MIB);
    blocks += e->nb[i];
    cur = up(cur + p->regions[i].bytes, 64);
  }
  e->nblocks = blocks;
  e->blob_off = cur;
  e->slot_bytes = cur + MIB; /* the blob area */
  e->stride = up(e->slot_bytes, 2 * MIB);
  e->region_off = 4096;
  e->slot_off = 4096 + 320 * (uint64_t)p->nregions;
  e->crc_off = up(e->slot_off + 64 * (uint64_t)p->nslots, 64);
  e->crc_stride = up(4 * ((uint64_t)blocks + 2), 64);
  e->data_off = up(e->crc_off + p->nslots * e->crc_stride, 2 * MIB);
  e->parity_off = e->data_off + p->nslots * e->stride;
  /* m chunks of ceil(slot bytes / k), each rounded up to 64 bytes. */
  uint64_t chunk = p->ec_k == 0
                       ? 0
                       : up((e->slot_bytes + p->ec_k - 1) / p->ec_k, 64);
  e->parity_bytes = p->ec_m * chunk;
  e->parity_stride = up(e->parity_bytes, 2 * MIB);
  e->total = e->parity_off + p->nslots * e->parity_stride;
}

static bool shm_exists(const char *name)
{
  int fd = shm_open(name, O_RDONLY, 0);
  if (fd >= 0)
    close(fd);
  return fd >= 0;
}

/* Writes len bytes at off of an existing object. */
static void poke(const char *name, uint64_t off, const void *buf, size_t len)
{
  int fd = shm_open(name, O_RDWR, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pwrite(fd, buf, len, (off_t)off), (ssize_t)len);
  close(fd);
}

static void peek(const char *name, uint64_t off, void *buf, size_t len)
{
  int fd = shm_open(name, O_RDONLY, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(pread(fd, buf, len, (off_t)off), (ssize_t)len);
  close(fd);
}

/* Replaces the object with exactly these bytes. */
static void write_raw(const char *name, const void *buf, size_t len)
{
  int fd = shm_open(name, O_RDWR | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(ftruncate(fd, 0), 0);
  if (len > 0)
    ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
  close(fd);
}

static void make_small(const char *name)
{
  struct snap_params p = params_small();
  struct snap_store *s = NULL;
  char err[256] = "";
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  snap_store_close(s);
}

/* Rewrites the header CRC after a test changed header fields. */
static void fix_header_crc(const char *name)
{
  uint8_t h[HDR_CRC_AT];
  peek(name, 0, h, sizeof(h));
  uint32_t c = oracle_crc(h, sizeof(h));
  poke(name, HDR_CRC_AT, &c, 4);
}

static void fix_region_crc(const char *name, uint32_t i)
{
  uint8_t e[316];
  peek(name, 4096 + 320 * (uint64_t)i, e, sizeof(e));
  uint32_t c = oracle_crc(e, sizeof(e));
  poke(name, 4096 + 320 * (uint64_t)i + 316, &c, 4);
}

static int open_rc(const char *name, char *err, size_t len)
{
  struct snap_store *s = NULL;
  err[0] = '\0';
  int rc = snap_store_open(&s, name, err, len);
  if (rc == 0) {
    ck_assert_ptr_nonnull(s);
    snap_store_close(s);
  } else {
    ck_assert_ptr_null(s);
    ck_assert_msg(err[0] != '\0', "rc %d without a message", rc);
  }
  return rc;
}

/* ------------------------------------------------------------------------ */

START_TEST(test_name)
{
  char buf[64];
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), NULL, "job", 3), 0);
  ck_assert_str_eq(buf, "/pt.job.3");
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), "", "job", 3), 0);
  ck_assert_str_eq(buf, "/pt.job.3");
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), "n1.", "j", 4000000000u), 0);
  ck_assert_str_eq(buf, "/n1.pt.j.4000000000");
  ck_assert_int_eq(snap_store_name(buf, 9, NULL, "job", 3), -ENAMETOOLONG);
  ck_assert_int_eq(snap_store_name(buf, 10, NULL, "job", 3), 0);
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), NULL, "a/b", 0), -EINVAL);
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), "x/", "a", 0), -EINVAL);
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), NULL, NULL, 0), -EINVAL);
  ck_assert_int_eq(snap_store_name(buf, sizeof(buf), NULL, "", 0), -EINVAL);
}
END_TEST

START_TEST(test_state_names)
{
  ck_assert_str_eq(snap_state_name(SNAP_FREE), "FREE");
  ck_assert_str_eq(snap_state_name(SNAP_WRITING), "WRITING");
  ck_assert_str_eq(snap_state_name(SNAP_SEALED), "SEALED");
  ck_assert_str_eq(snap_state_name(SNAP_PINNED), "PINNED");
  ck_assert_str_eq(snap_state_name(SNAP_PROTECTED), "PROTECTED");
  ck_assert_str_eq(snap_state_name(SNAP_COMMITTED), "COMMITTED");
  ck_assert_str_eq(snap_state_name(77), "UNKNOWN");
  ck_assert_str_eq(snap_state_name(SNAP_STATE_MAX + 1), "UNKNOWN");
  /* The values are stored in the object (format version 4). */
  ck_assert_uint_eq(SNAP_FREE, 0);
  ck_assert_uint_eq(SNAP_WRITING, 1);
  ck_assert_uint_eq(SNAP_SEALED, 2);
  ck_assert_uint_eq(SNAP_PINNED, 3);
  ck_assert_uint_eq(SNAP_PROTECTED, 4);
  ck_assert_uint_eq(SNAP_COMMITTED, 5);
  ck_assert_uint_eq(SNAP_STATE_MAX, SNAP_COMMITTED);
  ck_assert_uint_eq(SNAP_VERSION, 4);
  /* The one test of "this slot holds a step" that every layer uses. */
  for (uint32_t st = 0; st <= SNAP_STATE_MAX + 2; st++)
    ck_assert_msg(snap_state_holds_data(st) ==
                      (st == SNAP_SEALED || st == SNAP_PINNED ||
                       st == SNAP_PROTECTED || st == SNAP_COMMITTED),
                  "state %u", st);
  ck_assert(!snap_state_holds_data(SNAP_STATE_BUSY | SNAP_SEALED));
}
END_TEST

START_TEST(test_bytes_needed)
{
  struct expect e;
  for (uint32_t n = 2; n <= SNAP_MAX_SLOTS; n++) {
    struct snap_params p = params4(n);
    expect_layout(&e, &p);
    ck_assert_uint_eq(snap_store_bytes_needed(&p), e.total);
  }
  /* Worked by hand for 3 slots: regions at 0, 64, 1 MiB + 128, 1 MiB + 192;
   * the blob area at 6 MiB + 192; slot data 7 MiB + 192, stride 8 MiB; data
   * at 2 MiB. */
  struct snap_params p = params4(3);
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 2 * MIB + 3 * 8 * MIB);
  /* Code 4+2: a chunk is (7 MiB + 192) / 4 = 1835056, rounded up to 64:
   * 1835072; two of them, 3670144 bytes, take 4 MiB a slot. */
  p.ec_k = 4;
  p.ec_m = 2;
  ck_assert_uint_eq(snap_store_bytes_needed(&p),
                    2 * MIB + 3 * 8 * MIB + 3 * 4 * MIB);
  /* Codes that are none or out of range: 0. */
  p.ec_k = 4;
  p.ec_m = 0;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p.ec_k = 0;
  p.ec_m = 2;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p.ec_k = 30;
  p.ec_m = 3;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p.ec_k = 30;
  p.ec_m = 2;
  ck_assert_uint_ne(snap_store_bytes_needed(&p), 0);

  /* Every invalid parameter gives 0. */
  ck_assert_uint_eq(snap_store_bytes_needed(NULL), 0);
  p = params4(1);
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(SNAP_MAX_SLOTS + 1);
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  p.nregions = 0;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  p.nregions = SNAP_MAX_REGIONS + 1;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  four[2].bytes = 0;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  four[1].kind = 2;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  strcpy(four[3].name, "params");
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  four[0].name[0] = '\0';
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  memset(four[0].name, 'x', sizeof(four[0].name));
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  p.job = NULL;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p.job = "";
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  char longjob[80];
  memset(longjob, 'j', 64);
  longjob[64] = '\0';
  p.job = longjob;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  longjob[63] = '\0';
  ck_assert_uint_ne(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  p.rank = 4;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p.world = 0;
  p.rank = 0;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
  p = params4(2);
  four[3].bytes = UINT64_MAX - 10;
  ck_assert_uint_eq(snap_store_bytes_needed(&p), 0);
}
END_TEST

START_TEST(test_create_open_accessors)
{
  char name[64], err[256] = "";
  shm_name(name, sizeof(name), "rt");
  struct snap_params p = params4(3);
  struct expect e;
  expect_layout(&e, &p);
  struct snap_store *s = NULL, *o = NULL;

  struct timespec t0, t1;
  clock_gettime(CLOCK_REALTIME, &t0);
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  clock_gettime(CLOCK_REALTIME, &t1);
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  /* the creation time is the create call's, and the same through open */
  uint64_t ns0 = (uint64_t)t0.tv_sec * 1000000000u + (uint64_t)t0.tv_nsec;
  uint64_t ns1 = (uint64_t)t1.tv_sec * 1000000000u + (uint64_t)t1.tv_nsec;
  ck_assert_uint_ge(snap_store_ctime_ns(s), ns0);
  ck_assert_uint_le(snap_store_ctime_ns(s), ns1);
  ck_assert_uint_eq(snap_store_ctime_ns(o), snap_store_ctime_ns(s));
  struct snap_store *both[2] = {s, o};
  for (int k = 0; k < 2; k++) {
    struct snap_store *x = both[k];
    ck_assert_str_eq(snap_store_job(x), "job7");
    ck_assert_uint_eq(snap_store_rank(x), 2);
    ck_assert_uint_eq(snap_store_world(x), 4);
    ck_assert_uint_eq(snap_store_nslots(x), 3);
    ck_assert_uint_eq(snap_store_nregions(x), 4);
    ck_assert_uint_eq(snap_store_nblocks(x), e.nblocks);
    ck_assert_uint_eq(snap_store_nblocks(x), 1 + 2 + 1 + 5);
    ck_assert_uint_eq(snap_store_total_bytes(x), e.total);
    ck_assert_uint_eq(snap_store_slot_bytes(x), e.slot_bytes);
    uint8_t *base = snap_store_base(x);
    ck_assert_ptr_nonnull(base);
    for (uint32_t i = 0; i < 4; i++) {
      const struct snap_region *r = snap_store_region(x, i);
      ck_assert_ptr_nonnull(r);
      ck_assert_str_eq(r->name, four[i].name);
      ck_assert_uint_eq(r->bytes, four[i].bytes);
      ck_assert_uint_eq(r->kind, four[i].kind);
      ck_assert_uint_eq(r->offset, e.off[i]);
      ck_assert_uint_eq(r->first_block, e.first[i]);
      ck_assert_uint_eq(r->nblocks, e.nb[i]);
    }
    ck_assert_ptr_null(snap_store_region(x, 4));
    for (uint32_t i = 0; i < 3; i++) {
      ck_assert_ptr_eq(snap_slot_data(x, i), base + e.data_off + i * e.stride);
      ck_assert_ptr_eq((uint8_t *)snap_slot_crcs(x, i),
                       base + e.crc_off + i * e.crc_stride);
      struct snap_slot_info info;
      snap_slot_get(x, i, &info);
      ck_assert_uint_eq(info.state, SNAP_FREE);
      ck_assert_uint_eq(info.generation, 0);
    }
    ck_assert_ptr_null(snap_slot_data(x, 3));
    ck_assert_ptr_null(snap_slot_crcs(x, 3));
    ck_assert(snap_store_regions_match(x, four, 4));
  }
  ck_assert_ptr_ne(snap_store_base(s), snap_store_base(o));

  /* Both mappings show one object. */
  memset(snap_slot_data(s, 1), 0x5a, 4096);
  ck_assert_int_eq(((uint8_t *)snap_slot_data(o, 1))[4095], 0x5a);

  /* regions_match compares count, names, sizes, kinds and order. */
  struct snap_region_desc d[4];
  memcpy(d, four, sizeof(d));
  ck_assert(!snap_store_regions_match(s, d, 3));
  ck_assert(!snap_store_regions_match(s, NULL, 4));
  d[2].bytes++;
  ck_assert(!snap_store_regions_match(s, d, 4));
  memcpy(d, four, sizeof(d));
  d[1].kind = 0;
  ck_assert(!snap_store_regions_match(s, d, 4));
  memcpy(d, four, sizeof(d));
  strcpy(d[0].name, "paramz");
  ck_assert(!snap_store_regions_match(s, d, 4));
  memcpy(d, four, sizeof(d));
  d[0] = four[2];
  d[2] = four[0];
  ck_assert(!snap_store_regions_match(s, d, 4));

  snap_store_close(o);
  snap_store_close(s);
  snap_store_close(NULL);

  /* The data outlives every mapping. */
  ck_assert_int_eq(snap_store_open(&o, name, err, sizeof(err)), 0);
  ck_assert_int_eq(((uint8_t *)snap_slot_data(o, 1))[0], 0x5a);
  snap_store_close(o);
  ck_assert_int_eq(snap_store_unlink(name), 0);
  ck_assert_int_eq(snap_store_unlink(name), -ENOENT);
  ck_assert_int_eq(snap_store_open(&o, name, err, sizeof(err)), -ENOENT);
  ck_assert_ptr_nonnull(strstr(err, name));
}
END_TEST

START_TEST(test_layout_bytes)
{
  char name[64], err[256] = "";
  shm_name(name, sizeof(name), "layout");
  struct snap_params p = params4(4);
  p.ec_k = 4;
  p.ec_m = 2;
  struct expect e;
  expect_layout(&e, &p);
  struct snap_store *s = NULL;
  struct timespec t0, t1;
  clock_gettime(CLOCK_REALTIME, &t0);
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  clock_gettime(CLOCK_REALTIME, &t1);
  const uint8_t *b = snap_store_base(s);

  struct stat st;
  char path[128];
  snprintf(path, sizeof(path), "/dev/shm%s", name);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_uint_eq((uint64_t)st.st_size, e.total);

  ck_assert_int_eq(memcmp(b, "PTSNAP\0\1", 8), 0);
  ck_assert_uint_eq(rd32(b + 8), SNAP_VERSION);
  ck_assert_uint_eq(rd32(b + 12), 4096);
  ck_assert_uint_eq(rd64(b + 16), e.total);
  ck_assert_str_eq((const char *)b + 24, "job7");
  for (int i = 4; i < 64; i++)
    ck_assert_int_eq(b[24 + i], 0);
  ck_assert_uint_eq(rd32(b + 88), 2);
  ck_assert_uint_eq(rd32(b + 92), 4);
  ck_assert_uint_eq(rd32(b + 96), 4);
  ck_assert_uint_eq(rd32(b + 100), 4);
  ck_assert_uint_eq(rd32(b + 104), KERN_BLOCK_SIZE);
  ck_assert_uint_eq(rd32(b + 108), e.nblocks);
  ck_assert_uint_eq(rd64(b + 112), e.slot_bytes);
  ck_assert_uint_eq(rd64(b + 120), e.stride);
  ck_assert_uint_eq(rd64(b + 128), e.region_off);
  ck_assert_uint_eq(rd64(b + 136), e.slot_off);
  ck_assert_uint_eq(rd64(b + 144), e.crc_off);
  ck_assert_uint_eq(rd64(b + 152), e.data_off);
  ck_assert_uint_eq(rd64(b + 160), e.parity_off);
  ck_assert_uint_eq(rd64(b + 168), e.parity_bytes);
  ck_assert_uint_gt(e.parity_bytes, 0);
  uint64_t t0ns = (uint64_t)t0.tv_sec * 1000000000u + (uint64_t)t0.tv_nsec;
  uint64_t t1ns = (uint64_t)t1.tv_sec * 1000000000u + (uint64_t)t1.tv_nsec;
  ck_assert_uint_ge(rd64(b + 176), t0ns);
  ck_assert_uint_le(rd64(b + 176), t1ns);
  for (int i = 184; i < 200; i++) /* no instance given: all zero */
    ck_assert_int_eq(b[i], 0);
  ck_assert_uint_eq(rd64(b + 200), MIB);
  ck_assert_uint_eq(rd64(b + 208), e.blob_off);
  ck_assert_uint_eq(rd64(b + 208) % 64, 0);
  ck_assert_uint_eq(rd32(b + 216), 4);
  ck_assert_uint_eq(rd32(b + 220), 2);
  ck_assert_uint_eq(rd64(b + 224), e.parity_stride);
  ck_assert_uint_eq(rd32(b + 232), oracle_crc(b, 232));
  for (int i = 236; i < 4096; i++)
    ck_assert_int_eq(b[i], 0);

  /* Alignment rules of the table. */
  ck_assert_uint_eq(e.data_off % (2 * MIB), 0);
  ck_assert_uint_eq(e.stride % (2 * MIB), 0);
  ck_assert_uint_eq(e.parity_off % (2 * MIB), 0);
  ck_assert_uint_eq(e.parity_stride % (2 * MIB), 0);
  ck_assert_uint_eq(e.total, e.parity_off + 4 * e.parity_stride);
  ck_assert_uint_eq(e.crc_off % 64, 0);
  for (uint32_t i = 0; i < 4; i++)
    ck_assert_uint_eq((uint64_t)((uint8_t *)snap_slot_crcs(s, i) - b) % 64, 0);

  for (uint32_t i = 0; i < 4; i++) {
    const uint8_t *r = b + 4096 + 320 * i;
    ck_assert_str_eq((const char *)r, four[i].name);
    for (size_t k = strlen(four[i].name); k < 256; k++)
      ck_assert_int_eq(r[k], 0);
    ck_assert_uint_eq(rd64(r + 256), four[i].bytes);
    ck_assert_uint_eq(rd64(r + 264), e.off[i]);
    ck_assert_uint_eq(rd64(r + 264) % 64, 0);
    if (i > 0)
      ck_assert_uint_ge(rd64(r + 264), rd64(r - 320 + 264) + four[i - 1].bytes);
    ck_assert_uint_eq(rd32(r + 272), four[i].kind);
    ck_assert_uint_eq(rd32(r + 276), e.first[i]);
    ck_assert_uint_eq(rd32(r + 280), e.nb[i]);
    for (int k = 284; k < 316; k++)
      ck_assert_int_eq(r[k], 0);
    ck_assert_uint_eq(rd32(r + 316), oracle_crc(r, 316));
  }
  /* Every slot record FREE with zero fields, its CRC over the state and
   * bytes 8..63. */
  for (uint32_t i = 0; i < 4; i++) {
    const uint8_t *r = b + e.slot_off + 64 * i;
    uint8_t rec[60];
    memcpy(rec, r, 4);
    memcpy(rec + 4, r + 8, 56);
    ck_assert_uint_eq(rd32(r), SNAP_FREE);
    ck_assert_uint_eq(rd32(r + 4), oracle_crc(rec, sizeof(rec)));
    for (int k = 8; k < 64; k++)
      ck_assert_int_eq(r[k], 0);
  }

  snap_store_close(s);
  ck_assert_int_eq(snap_store_unlink(name), 0);
}
END_TEST

START_TEST(test_mode_and_exists)
{
  char name[64], err[256] = "";
  shm_name(name, sizeof(name), "mode");
  struct snap_params p = params_small();
  struct snap_store *s = NULL, *t = NULL;
  /* A umask that would leave 0400 must not change the object's mode. */
  umask(0277);
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  umask(022);
  char path[128];
  struct stat st;
  snprintf(path, sizeof(path), "/dev/shm%s", name);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 07777, 0600);
  ck_assert_uint_eq(st.st_uid, geteuid());

  ck_assert_int_eq(snap_store_create(&t, name, &p, err, sizeof(err)), -EEXIST);
  ck_assert_ptr_null(t);
  ck_assert_ptr_nonnull(strstr(err, name));
  /* The refusal left the first object alone. */
  snap_store_close(s);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);

  /* Bad parameters are refused before anything exists. */
  char other[64];
  shm_name(other, sizeof(other), "mode-bad");
  p.nslots = 1;
  ck_assert_int_eq(snap_store_create(&t, other, &p, err, sizeof(err)), -EINVAL);
  ck_assert(!shm_exists(other));
  ck_assert_int_eq(snap_store_create(&t, other, NULL, NULL, 0), -EINVAL);
  ck_assert(!shm_exists(other));
  ck_assert_int_eq(snap_store_unlink(name), 0);
}
END_TEST

START_TEST(test_budget)
{
  char name[64], err[256] = "";
  shm_name(name, sizeof(name), "budget");
  struct snap_params p = params4(2);
  uint64_t need = snap_store_bytes_needed(&p);
  ck_assert_uint_gt(need, 0);
  p.budget_bytes = need - 1;
  struct snap_store *s = NULL;
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)), PT_EBUDGET);
  ck_assert_ptr_null(s);
  char num[32];
  snprintf(num, sizeof(num), "%" PRIu64, need);
  ck_assert_msg(strstr(err, num) != NULL, "'%s' lacks %s", err, num);
  snprintf(num, sizeof(num), "%" PRIu64, need - 1);
  ck_assert_msg(strstr(err, num) != NULL, "'%s' lacks %s", err, num);
  ck_assert(!shm_exists(name));

  p.budget_bytes = need;
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  snap_store_close(s);
  ck_assert_int_eq(snap_store_unlink(name), 0);
}
END_TEST

START_TEST(test_no_space)
{
  char name[64], err[256] = "";
  shm_name(name, sizeof(name), "nospace");
  struct statvfs v;
  ck_assert_int_eq(statvfs("/dev/shm", &v), 0);
  uint64_t avail = (uint64_t)v.f_bavail * v.f_frsize;
  struct snap_region_desc big = desc("huge", avail / 2 + 64 * MIB, 0);
  struct snap_params p = {.job = "j", .world = 1, .nslots = 2,
                          .regions = &big, .nregions = 1};
  uint64_t need = snap_store_bytes_needed(&p);
  ck_assert_uint_gt(need, avail);

  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  struct snap_store *s = NULL;
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)), -ENOSPC);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  ck_assert_ptr_null(s);
  char num[32];
  snprintf(num, sizeof(num), "%" PRIu64, need);
  ck_assert_msg(strstr(err, num) != NULL, "'%s' lacks %s", err, num);
  ck_assert_msg(strstr(err, "available") != NULL, "'%s'", err);
  ck_assert(!shm_exists(name));
  /* Refused before allocating: nowhere near the time to fill tmpfs. */
  double ms = (t1.tv_sec - t0.tv_sec) * 1e3 + (t1.tv_nsec - t0.tv_nsec) / 1e6;
  ck_assert_msg(ms < 500, "refusal took %.1f ms", ms);
}
END_TEST

/* n regions of `bytes` each, named with 255 bytes: a long common prefix
 * (as framework names have) and a distinct tail. Caller frees. */
static struct snap_region_desc *many(uint32_t n, uint64_t bytes)
{
  struct snap_region_desc *d = calloc(n, sizeof(*d));
  ck_assert_ptr_nonnull(d);
  for (uint32_t i = 0; i < n; i++) {
    memset(d[i].name, 'm', SNAP_NAME_MAX - 1);
    char tail[16];
    snprintf(tail, sizeof(tail), ".%08" PRIu32, i);
    memcpy(d[i].name + SNAP_NAME_MAX - 1 - strlen(tail), tail, strlen(tail));
    d[i].bytes = bytes;
  }
  return d;
}

/* The table grows with the region count: 65,536 regions with 255-byte
 * names are created, re-opened and matched; duplicates among them are
 * found; one more is refused. A 4-byte region costs 64 bytes a slot, not a
 * page (10,000 of them: 640,000 bytes of slot data besides the blob area,
 * against 40 MB at 4 KiB each before). */
START_TEST(test_many_regions)
{
  char name[64], err[1024] = "";
  shm_name(name, sizeof(name), "many");
  uint32_t n = SNAP_MAX_REGIONS;
  ck_assert_uint_eq(n, 65536);
  struct snap_region_desc *d = many(n + 1, 4);
  ck_assert_uint_eq(strlen(d[n - 1].name), 255);
  struct snap_params p = {.job = "many", .world = 1, .nslots = 2,
                          .regions = d, .nregions = n};
  struct snap_store *s = NULL, *o = NULL;
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  ck_assert_msg(snap_store_open(&o, name, err, sizeof(err)) == 0, "%s", err);
  ck_assert_uint_eq(snap_store_nregions(o), n);
  ck_assert(snap_store_regions_match(o, d, n));
  ck_assert_str_eq(snap_store_region(o, n - 1)->name, d[n - 1].name);
  ck_assert_uint_eq(snap_store_region(o, n - 1)->offset, 64 * (uint64_t)(n - 1));
  ck_assert_uint_eq(snap_store_slot_bytes(o), 64 * (uint64_t)n + MIB);
  snap_store_close(o);
  snap_store_close(s);
  ck_assert_int_eq(snap_store_unlink(name), 0);

  p.nregions = n + 1;
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)), -EINVAL);
  ck_assert(!shm_exists(name));
  p.nregions = n;
  memcpy(d[n - 7].name, d[12].name, SNAP_NAME_MAX);
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)), -EINVAL);
  ck_assert_msg(strstr(err, "declared twice") != NULL, "%s", err);
  ck_assert(!shm_exists(name));
  free(d);

  d = many(10000, 4);
  p.regions = d;
  p.nregions = 10000;
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s", err);
  ck_assert_uint_le(snap_store_slot_bytes(s), 10000 * 64 + MIB);
  /* every region 64-byte aligned and after the one before */
  for (uint32_t i = 1; i < 10000; i++) {
    const struct snap_region *r = snap_store_region(s, i);
    ck_assert_uint_eq(r->offset % 64, 0);
    ck_assert_uint_ge(r->offset, snap_store_region(s, i - 1)->offset + 4);
  }
  snap_store_close(s);
  ck_assert_int_eq(snap_store_unlink(name), 0);
  free(d);
}
END_TEST

/* ---- objects that open must reject -------------------------------------- */

START_TEST(test_open_missing)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "missing");
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), -ENOENT);
  struct snap_store *s = NULL;
  ck_assert_int_eq(snap_store_open(&s, name, NULL, 0), -ENOENT);
  ck_assert_int_eq(snap_store_open(NULL, name, NULL, 0), -EINVAL);
}
END_TEST

START_TEST(test_open_truncated)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "trunc");
  uint8_t buf[100];
  memset(buf, 0, sizeof(buf));
  memcpy(buf, "PTSNAP\0\1", 8);
  write_raw(name, buf, sizeof(buf));
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  char want[128];
  snprintf(want, sizeof(want), "'%s': truncated: 100 bytes, header needs 4096", name);
  ck_assert_str_eq(err, want);

  write_raw(name, NULL, 0);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_ptr_nonnull(strstr(err, "truncated: 0 bytes"));

  /* A valid header on an object cut short. */
  shm_unlink(name);
  make_small(name);
  int fd = shm_open(name, O_RDWR, 0);
  ck_assert_int_ge(fd, 0);
  struct stat st;
  ck_assert_int_eq(fstat(fd, &st), 0);
  ck_assert_int_eq(ftruncate(fd, st.st_size - 2 * (off_t)MIB), 0);
  close(fd);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "truncated") != NULL, "%s", err);

  /* ... or grown. */
  fd = shm_open(name, O_RDWR, 0);
  ck_assert_int_eq(ftruncate(fd, st.st_size + 4096), 0);
  close(fd);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  shm_unlink(name);
}
END_TEST

START_TEST(test_open_random)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "random");
  size_t n = 256 * 1024;
  uint8_t *buf = malloc(n);
  ck_assert_ptr_nonnull(buf);
  srand(12345);
  for (size_t i = 0; i < n; i++)
    buf[i] = (uint8_t)rand();
  write_raw(name, buf, n);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "magic") != NULL, "%s", err);

  /* Random bytes behind a right magic and version: the header CRC. */
  memcpy(buf, "PTSNAP\0\1", 8);
  uint32_t v = SNAP_VERSION;
  memcpy(buf + 8, &v, 4);
  write_raw(name, buf, n);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "checksum") != NULL, "%s", err);

  /* ... and with a CRC that matches the random header. */
  uint32_t c = oracle_crc(buf, HDR_CRC_AT);
  memcpy(buf + HDR_CRC_AT, &c, 4);
  write_raw(name, buf, n);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  free(buf);
  shm_unlink(name);
}
END_TEST

START_TEST(test_open_bad_magic_version_crc)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "hdr");
  make_small(name);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);

  uint8_t b = 'Q';
  poke(name, 0, &b, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "magic") != NULL, "%s", err);
  b = 'P';
  poke(name, 0, &b, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);

  uint32_t v = 2; /* the format before slot record CRCs and blobs */
  poke(name, 8, &v, 4);
  fix_header_crc(name);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EVERSION);
  ck_assert_msg(strstr(err, "version 2") && strstr(err, "version 4"), "%s", err);
  /* Version 3: the format whose state 3 was called PROTECTED and meant what
   * PINNED means now, and whose COMMITTED was 4. Its states would be read
   * wrong, so it is refused, naming both versions and the object. */
  v = 3;
  poke(name, 8, &v, 4);
  fix_header_crc(name);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EVERSION);
  ck_assert_msg(strstr(err, "version 3") && strstr(err, "only version 4") &&
                    strstr(err, name + 1),
                "%s", err);
  /* A newer version is refused before its header CRC means anything. */
  v = 7;
  poke(name, 8, &v, 4);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EVERSION);
  v = SNAP_VERSION;
  poke(name, 8, &v, 4);
  fix_header_crc(name);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);

  /* One byte of the job name changed, the CRC not updated. */
  b = 'X';
  poke(name, 24, &b, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "header checksum") != NULL, "%s", err);
  fix_header_crc(name);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);
  /* The stored CRC itself damaged. */
  uint32_t c;
  peek(name, HDR_CRC_AT, &c, 4);
  c ^= 0x100;
  poke(name, HDR_CRC_AT, &c, 4);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  shm_unlink(name);
}
END_TEST

/* Header fields rewritten with a correct CRC: each must still be refused. */
START_TEST(test_open_bad_fields)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "fields");
  make_small(name);
  uint8_t orig[4096];
  peek(name, 0, orig, sizeof(orig));
  struct {
    unsigned off, width;
    uint64_t value;
  } cases[] = {
      {12, 4, 8192},            /* header bytes */
      {16, 8, 1},               /* total bytes */
      {88, 4, 1},               /* rank == world */
      {92, 4, 0},               /* world 0 */
      {96, 4, 1},               /* one slot */
      {96, 4, 9},               /* too many slots */
      {96, 4, 3},               /* more slots than the layout holds */
      {100, 4, 0},              /* no regions */
      {100, 4, 65537},          /* too many regions */
      {100, 4, 2},              /* a region more than the table holds */
      {104, 4, 4096},           /* block size */
      {108, 4, 2},              /* nblocks */
      {112, 8, 8192},           /* slot data bytes */
      {120, 8, 4 * MIB},        /* stride */
      {128, 8, 0},              /* region table over the header */
      {128, 8, UINT64_MAX},     /* region table far out */
      {136, 8, 4096},           /* slot table over the region table */
      {144, 8, 1u << 30},       /* checksum tables out of range */
      {152, 8, 0},              /* data over the header */
      {152, 8, UINT64_MAX - 4095},
      {160, 8, 2 * MIB},        /* parity over slot data */
      {168, 8, 64 * MIB},       /* parity bytes beyond the object */
      {200, 8, 2 * MIB},        /* another blob area size */
      {208, 8, 0},              /* the blob area over the regions */
  };
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    poke(name, 0, orig, sizeof(orig));
    poke(name, cases[i].off, &cases[i].value, cases[i].width);
    fix_header_crc(name);
    int rc = open_rc(name, err, sizeof(err));
    ck_assert_msg(rc == PT_EFORMAT, "field at %u = %" PRIu64 ": rc %d (%s)",
                  cases[i].off, cases[i].value, rc, err);
  }
  /* An unterminated job name. */
  poke(name, 0, orig, sizeof(orig));
  uint8_t job[64];
  memset(job, 'j', sizeof(job));
  poke(name, 24, job, sizeof(job));
  fix_header_crc(name);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  /* Restored, it opens again. */
  poke(name, 0, orig, sizeof(orig));
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);
  shm_unlink(name);
}
END_TEST

START_TEST(test_open_bad_regions)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "regions");
  struct snap_params p = params4(2);
  struct snap_store *s = NULL;
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)), 0);
  uint64_t total = snap_store_total_bytes(s);
  snap_store_close(s);
  uint8_t orig[4096 + 4 * 320];
  peek(name, 0, orig, sizeof(orig));
  uint64_t r1 = 4096 + 320;

  struct {
    unsigned off, width;
    uint64_t value;
  } cases[] = {
      {264, 8, 0},             /* region 1 over region 0 */
      {264, 8, 2 * 4096},      /* region 1 moved */
      {264, 8, 0},             /* (again, with region 0 intact) */
      {264, 8, 0},
      {264, 8, 0},
      {256, 8, 0},             /* zero bytes */
      {256, 8, 1u << 30},      /* bigger than the slot */
      {256, 8, UINT64_MAX},
      {272, 4, 2},             /* unknown kind */
      {276, 4, 0},             /* first block */
      {276, 4, UINT32_MAX},
      {280, 4, 1},             /* block count */
      {280, 4, UINT32_MAX},
  };
  cases[3].value = total * 2; /* region offsets out of range */
  cases[4].value = UINT64_MAX - 4095;
  for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
    poke(name, 0, orig, sizeof(orig));
    poke(name, r1 + cases[i].off, &cases[i].value, cases[i].width);
    fix_region_crc(name, 1);
    int rc = open_rc(name, err, sizeof(err));
    ck_assert_msg(rc == PT_EFORMAT, "region field %u = %" PRIu64 ": rc %d (%s)",
                  cases[i].off, cases[i].value, rc, err);
  }
  /* An entry changed without its CRC. */
  poke(name, 0, orig, sizeof(orig));
  uint64_t off = 8192;
  poke(name, r1 + 264, &off, 8);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "region 1 entry checksum") != NULL, "%s", err);
  /* An unterminated and an empty name, each with a valid CRC. */
  poke(name, 0, orig, sizeof(orig));
  uint8_t nm[256];
  memset(nm, 'n', sizeof(nm));
  poke(name, r1, nm, sizeof(nm));
  fix_region_crc(name, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  poke(name, 0, orig, sizeof(orig));
  nm[0] = 0;
  poke(name, r1, nm, 1);
  fix_region_crc(name, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);

  poke(name, 0, orig, sizeof(orig));
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);
  shm_unlink(name);
}
END_TEST

/* Writes slot i's record CRC for the state and fields it holds now. */
static void fix_slot_crc(const char *name, uint64_t slot_off, uint32_t i)
{
  uint8_t r[64], rec[60];
  peek(name, slot_off + 64 * (uint64_t)i, r, sizeof(r));
  memcpy(rec, r, 4);
  memcpy(rec + 4, r + 8, 56);
  uint32_t c = oracle_crc(rec, sizeof(rec));
  poke(name, slot_off + 64 * (uint64_t)i + 4, &c, 4);
}

START_TEST(test_open_bad_slot_state)
{
  char name[64], err[256], msg[512];
  shm_name(name, sizeof(name), "slotstate");
  make_small(name);
  uint64_t slot_off = 4096 + 320;
  struct snap_store *s = NULL;
  struct snap_slot_info info;

  /* An unknown state with a matching record CRC: the object is malformed. */
  uint32_t st = SNAP_STATE_MAX + 1;
  poke(name, slot_off + 64, &st, 4);
  fix_slot_crc(name, slot_off, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "slot 1 has unknown state 6") != NULL, "%s", err);
  /* PROTECTED (4) is a known state, though nothing sets it yet. */
  st = SNAP_PROTECTED;
  poke(name, slot_off + 64, &st, 4);
  fix_slot_crc(name, slot_off, 1);
  ck_assert_int_eq(open_rc(name, err, sizeof(err)), 0);

  /* A state changed without its CRC: the object opens, and that slot is
   * named as damaged and holds nothing; the other slot is untouched. */
  st = SNAP_COMMITTED;
  poke(name, slot_off + 64, &st, 4);
  ck_assert_int_eq(snap_store_open(&s, name, err, sizeof(err)), 0);
  ck_assert_uint_eq(snap_slot_bad_records(s, msg, sizeof(msg)), 1);
  ck_assert_msg(strstr(msg, name) && strstr(msg, "slot 1 record fails its "
                                                "checksum"), "%s", msg);
  snap_slot_get(s, 1, &info);
  ck_assert(!info.record_ok);
  ck_assert_uint_eq(info.state, SNAP_FREE);
  snap_slot_get(s, 0, &info);
  ck_assert(info.record_ok);
  ck_assert_int_eq(snap_slot_newest_committed(s, NULL, NULL), PT_ENOSNAP);
  uint32_t bad = 0;
  ck_assert_int_eq(snap_slot_verify(s, 1, &bad), PT_ECHECKSUM);
  ck_assert_uint_eq(bad, SNAP_BAD_RECORD(snap_store_nblocks(s)));
  /* recover frees it with a valid record */
  ck_assert_int_eq(snap_slot_recover(s), 1);
  ck_assert_uint_eq(snap_slot_bad_records(s, NULL, 0), 0);
  snap_slot_get(s, 1, &info);
  ck_assert(info.record_ok);
  ck_assert_uint_eq(info.state, SNAP_FREE);
  snap_store_close(s);

  /* A busy bit left by an SMP that died in a transition: damaged too. */
  st = SNAP_SEALED | SNAP_STATE_BUSY;
  poke(name, slot_off, &st, 4);
  fix_slot_crc(name, slot_off, 0);
  ck_assert_int_eq(snap_store_open(&s, name, err, sizeof(err)), 0);
  ck_assert_uint_eq(snap_slot_bad_records(s, NULL, 0), 1);
  snap_slot_get(s, 0, &info);
  ck_assert(!info.record_ok);
  snap_store_close(s);
  shm_unlink(name);
}
END_TEST

/* Random damage to the header, region table and slot table, half the time
 * with the CRCs made to match: open answers, never crashes. */
START_TEST(test_open_fuzz)
{
  char name[64], err[256];
  shm_name(name, sizeof(name), "fuzz");
  struct snap_params p = params4(2);
  struct snap_store *s = NULL;
  ck_assert_int_eq(snap_store_create(&s, name, &p, err, sizeof(err)), 0);
  snap_store_close(s);
  enum { META = 4096 + 4 * 320 + 2 * 64 };
  uint8_t orig[META], buf[META];
  peek(name, 0, orig, sizeof(orig));
  srand(4242);
  int accepted = 0;
  for (int it = 0; it < 400; it++) {
    memcpy(buf, orig, sizeof(buf));
    int flips = 1 + rand() % 4;
    for (int k = 0; k < flips; k++) {
      /* Mostly in the fields that mean something. */
      size_t at = (rand() % 4 != 0) ? (size_t)(rand() % HDR_CRC_AT)
                                    : (size_t)(rand() % META);
      buf[at] ^= (uint8_t)(1u << (rand() % 8));
    }
    if (rand() % 2) {
      uint32_t c = oracle_crc(buf, HDR_CRC_AT);
      memcpy(buf + HDR_CRC_AT, &c, 4);
      for (int r = 0; r < 4; r++) {
        c = oracle_crc(buf + 4096 + 320 * r, 316);
        memcpy(buf + 4096 + 320 * r + 316, &c, 4);
      }
    }
    poke(name, 0, buf, sizeof(buf));
    int rc = open_rc(name, err, sizeof(err));
    ck_assert_msg(rc == 0 || rc == PT_EFORMAT || rc == PT_EVERSION,
                  "iteration %d: rc %d (%s)", it, rc, err);
    accepted += rc == 0;
  }
  /* Flips in bytes nobody checks (ctime, job tail, zero areas) are fine;
   * most flips must have been caught. */
  ck_assert_int_lt(accepted, 200);
  shm_unlink(name);
}
END_TEST

START_TEST(test_quarantine)
{
  char name[64], err[256], q1[128], q2[128];
  shm_name(name, sizeof(name), "quar");
  make_small(name);
  long long before = (long long)time(NULL);
  ck_assert_int_eq(snap_store_quarantine(name, q1, sizeof(q1)), 0);
  long long after = (long long)time(NULL);
  size_t nl = strlen(name);
  ck_assert_int_eq(strncmp(q1, name, nl), 0);
  ck_assert_int_eq(strncmp(q1 + nl, ".bad-", 5), 0);
  long long t = atoll(q1 + nl + 5);
  ck_assert(t >= before && t <= after);
  ck_assert(!shm_exists(name));
  /* Nothing was lost: the renamed object is whole. */
  ck_assert_int_eq(open_rc(q1, err, sizeof(err)), 0);

  /* The name is free again; a second quarantine gets its own name. */
  make_small(name);
  ck_assert_int_eq(snap_store_quarantine(name, q2, sizeof(q2)), 0);
  ck_assert_str_ne(q1, q2);
  ck_assert(shm_exists(q1) && shm_exists(q2));

  ck_assert_int_eq(snap_store_quarantine(name, NULL, 0), -ENOENT);
  ck_assert_int_eq(snap_store_quarantine("no-slash", NULL, 0), -EINVAL);
  ck_assert_int_eq(snap_store_quarantine("/a/b", NULL, 0), -EINVAL);
  /* Too small a buffer: refused, nothing renamed. */
  make_small(name);
  ck_assert_int_eq(snap_store_quarantine(name, q2, 8), -ENAMETOOLONG);
  ck_assert(shm_exists(name));
  ck_assert_int_eq(snap_store_quarantine(name, NULL, 0), 0);
  ck_assert(!shm_exists(name));
  shm_unlink(q1);
  shm_unlink(q2);
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *su = suite_create("snap_store");
  TCase *tc = tcase_create("store");
  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, test_name);
  tcase_add_test(tc, test_state_names);
  tcase_add_test(tc, test_bytes_needed);
  tcase_add_test(tc, test_create_open_accessors);
  tcase_add_test(tc, test_layout_bytes);
  tcase_add_test(tc, test_mode_and_exists);
  tcase_add_test(tc, test_budget);
  tcase_add_test(tc, test_no_space);
  tcase_add_test(tc, test_many_regions);
  suite_add_tcase(su, tc);
  TCase *bad = tcase_create("open");
  tcase_set_timeout(bad, 30);
  tcase_add_test(bad, test_open_missing);
  tcase_add_test(bad, test_open_truncated);
  tcase_add_test(bad, test_open_random);
  tcase_add_test(bad, test_open_bad_magic_version_crc);
  tcase_add_test(bad, test_open_bad_fields);
  tcase_add_test(bad, test_open_bad_regions);
  tcase_add_test(bad, test_open_bad_slot_state);
  tcase_add_test(bad, test_open_fuzz);
  tcase_add_test(bad, test_quarantine);
  suite_add_tcase(su, bad);

  int rc = unit_run(su);
  /* Every object a test of this run left behind. */
  unit_shm_sweep("pt-tsnap.%d.", (int)runner_pid);
  return rc;
}
