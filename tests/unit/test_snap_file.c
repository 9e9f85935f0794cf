/*
 * test_snap_file.c — a rank's step as a file of the persistent tier
 * (snapshot/snap_file.h): written from a slot and loaded into a slot of
 * another object, every byte equal and verified; damaged, truncated,
 * garbage, foreign and other-version files refused with the right code; a
 * cancelled write leaves nothing; the sweep removes a dead writer's
 * leftovers; the rate bound holds; the check without a slot finds what the
 * load finds, whatever the piece size.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/magic.h>
#include <sys/stat.h>
#include <sys/vfs.h>
#include <time.h>
#include <unistd.h>

#include <isa-l/crc.h>

#include "pt.h"
#include "snapshot/snap_file.h"
#include "snapshot/snap_store.h"
#include "tests/unit/unit.h"

#define MIB ((uint64_t)1 << 20)

static pid_t runner_pid;
static struct snap_region_desc regs[3];
static const uint8_t inst_a[SNAP_INSTANCE_BYTES] = {1, 2, 3, 4, 5, 6, 7, 8,
                                                    9, 10, 11, 12, 13, 14, 15};
static const uint8_t inst_b[SNAP_INSTANCE_BYTES] = {9, 9, 9};

static uint32_t oracle_crc(const void *p, size_t n)
{
  return crc32_iscsi((unsigned char *)p, (int)n, 0xFFFFFFFFu);
}

/* Three regions: a block plus 5 bytes, three pages plus 7, two blocks;
 * bigger (extra bytes on region 2) for a layout that differs. */
static struct snap_store *make(const char *tag, const uint8_t *inst,
                               uint32_t world, uint64_t extra, char *name,
                               size_t len)
{
  memset(regs, 0, sizeof(regs));
  strcpy(regs[0].name, "params");
  regs[0].bytes = MIB + 5;
  strcpy(regs[1].name, "rng");
  regs[1].bytes = 3 * 4096 + 7;
  strcpy(regs[2].name, "moments");
  regs[2].bytes = 2 * MIB + extra;
  struct snap_params p = {.job = "files", .rank = 0, .world = world,
                          .nslots = 2, .regions = regs, .nregions = 3,
                          .instance = inst};
  snprintf(name, len, "/pt-tsnap-file.%d.%s", (int)runner_pid, tag);
  struct snap_store *s = NULL;
  char err[256] = "";
  ck_assert_msg(snap_store_create(&s, name, &p, err, sizeof(err)) == 0, "%s",
                err);
  return s;
}

static uint8_t pattern(uint64_t step, uint32_t r, uint64_t at)
{
  return (uint8_t)(step * 131 + r * 17 + at * 7 + (at >> 12));
}

/* A sealed and committed step in a slot of s, as libpt would leave it. */
static uint32_t put_step(struct snap_store *s, uint64_t step)
{
  uint32_t slot;
  uint64_t gen;
  ck_assert_int_eq(snap_slot_acquire(s, step, &slot, &gen), 0);
  uint8_t *data = snap_slot_data(s, slot), *blob = snap_slot_blob(s, slot);
  uint32_t *crcs = snap_slot_crcs(s, slot);
  uint32_t nb = 100 + (uint32_t)(step % 50);
  for (uint32_t k = 0; k < nb; k++)
    blob[k] = (uint8_t)(step * 3 + k);
  crcs[snap_store_nblocks(s)] = nb;
  crcs[snap_store_nblocks(s) + 1] = oracle_crc(blob, nb);
  for (uint32_t r = 0; r < snap_store_nregions(s); r++) {
    const struct snap_region *reg = snap_store_region(s, r);
    for (uint64_t k = 0; k < reg->bytes; k++)
      data[reg->offset + k] = pattern(step, r, k);
    for (uint32_t b = 0; b < reg->nblocks; b++) {
      uint64_t off = b * MIB, n = reg->bytes - off < MIB ? reg->bytes - off : MIB;
      crcs[reg->first_block + b] = oracle_crc(data + reg->offset + off, n);
    }
  }
  ck_assert_int_eq(snap_slot_seal(s, slot, gen, step), 0);
  ck_assert_int_eq(snap_slot_commit(s, step), 0);
  return slot;
}

static bool holds_step(const struct snap_store *s, uint32_t slot, uint64_t step)
{
  const uint8_t *data = snap_slot_data(s, slot);
  for (uint32_t r = 0; r < snap_store_nregions(s); r++) {
    const struct snap_region *reg = snap_store_region(s, r);
    for (uint64_t k = 0; k < reg->bytes; k++)
      if (data[reg->offset + k] != pattern(step, r, k))
        return false;
  }
  return true;
}

static char dir[256];
static int dfd = -1;

static void dir_setup(void)
{
  snprintf(dir, sizeof(dir), "/tmp/pt-tsnap-file.%d.XXXXXX", (int)getpid());
  ck_assert_ptr_nonnull(mkdtemp(dir));
  dfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  ck_assert_int_ge(dfd, 0);
}

static void dir_teardown(void)
{
  char cmd[300];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", dir);
  close(dfd);
}

/* tmpfs before Linux 6.6 refuses O_DIRECT; any other file system here
 * takes it. */
static bool on_tmpfs(void)
{
  struct statfs sf;
  ck_assert_int_eq(fstatfs(dfd, &sf), 0);
  return sf.f_type == TMPFS_MAGIC;
}

static uint64_t file_size(const char *name)
{
  struct stat sb;
  ck_assert_int_eq(fstatat(dfd, name, &sb, 0), 0);
  return (uint64_t)sb.st_size;
}

static void flip(const char *name, uint64_t at)
{
  int fd = openat(dfd, name, O_RDWR);
  ck_assert_int_ge(fd, 0);
  uint8_t b;
  ck_assert_int_eq(pread(fd, &b, 1, (off_t)at), 1);
  b ^= 0x40;
  ck_assert_int_eq(pwrite(fd, &b, 1, (off_t)at), 1);
  close(fd);
}

static int load_into(const char *name, struct snap_store *d, char *err,
                     size_t len, uint32_t *slot_out, uint64_t *gen_out,
                     const struct snap_file_opts *o)
{
  struct snap_file *f = NULL;
  int rc = snap_file_open(&f, dfd, name, err, len);
  if (rc != PT_OK)
    return rc;
  uint64_t step = snap_file_info(f)->step;
  uint32_t slot;
  uint64_t gen;
  ck_assert_int_eq(snap_slot_acquire(d, step, &slot, &gen), 0);
  rc = snap_file_load(f, d, slot, o, NULL, err, len);
  snap_file_close(f);
  if (rc != PT_OK) {
    snap_slot_abort(d, slot, gen);
    return rc;
  }
  *slot_out = slot;
  *gen_out = gen;
  return PT_OK;
}

START_TEST(test_roundtrip)
{
  char na[128], nb[128], err[512] = "";
  dir_setup();
  struct snap_store *a = make("rt-a", inst_a, 4, 0, na, sizeof(na));
  struct snap_store *b = make("rt-b", inst_a, 4, 0, nb, sizeof(nb));
  put_step(a, 5);
  uint32_t slot = put_step(a, 7);
  for (int buffered = 0; buffered < 2; buffered++) {
    struct snap_file_opts o = {.buffered = buffered != 0};
    struct snap_file_stats st;
    ck_assert_msg(snap_file_write(a, slot, dfd, "rank-0.pts", &o, &st, err,
                                  sizeof(err)) == PT_OK, "%s", err);
    if (buffered)
      ck_assert(!st.direct);
    else if (!on_tmpfs())
      ck_assert_msg(st.direct, "%s takes O_DIRECT: it must be used", dir);
    uint64_t sz = file_size("rank-0.pts");
    ck_assert_uint_eq(sz % SNAP_FILE_ALIGN, 0);
    ck_assert_uint_ge(sz, snap_store_slot_bytes(a));
    ck_assert_uint_ge(st.bytes, snap_store_slot_bytes(a));

    struct snap_file *f = NULL;
    ck_assert_msg(snap_file_open(&f, dfd, "rank-0.pts", err, sizeof(err)) ==
                  PT_OK, "%s", err);
    const struct snap_file_info *in = snap_file_info(f);
    ck_assert_str_eq(in->job, "files");
    ck_assert_uint_eq(in->step, 7);
    ck_assert_uint_eq(in->world, 4);
    ck_assert_uint_eq(in->rank, 0);
    ck_assert_uint_eq(in->nregions, 3);
    ck_assert_uint_eq(in->file_bytes, sz);
    ck_assert_int_eq(memcmp(in->instance, inst_a, SNAP_INSTANCE_BYTES), 0);
    ck_assert_str_eq(snap_file_region(f, 1)->name, "rng");
    ck_assert_ptr_null(snap_file_region(f, 3));
    ck_assert_msg(snap_file_verify(f, NULL, NULL, err, sizeof(err)) == PT_OK,
                  "%s", err);
    snap_file_close(f);

    uint32_t ds;
    uint64_t gen;
    ck_assert_msg(load_into("rank-0.pts", b, err, sizeof(err), &ds, &gen,
                            &o) == PT_OK, "%s", err);
    ck_assert_int_eq(snap_slot_seal(b, ds, gen, 7), 0);
    ck_assert_int_eq(snap_slot_commit(b, 7), 0);
    ck_assert_int_eq(snap_slot_verify(b, ds, NULL), PT_OK);
    ck_assert(holds_step(b, ds, 7));
    struct snap_slot_info si;
    snap_slot_get(b, ds, &si);
    ck_assert_uint_eq(si.blob_bytes, 100 + 7 % 50);
    ck_assert_int_eq(memcmp(snap_slot_blob(b, ds), snap_slot_blob(a, slot),
                            si.blob_bytes), 0);
    snap_slot_set_restore(b, false, 0); /* empty again for the next round */
  }
  /* No temporary name left behind. */
  ck_assert_int_eq(snap_file_sweep(dfd), 0);
  snap_store_close(a);
  snap_store_close(b);
  snap_store_unlink(na);
  snap_store_unlink(nb);
  dir_teardown();
}
END_TEST

START_TEST(test_damaged)
{
  char na[128], nb[128], err[512] = "";
  dir_setup();
  struct snap_store *a = make("dm-a", inst_a, 1, 0, na, sizeof(na));
  struct snap_store *b = make("dm-b", inst_a, 1, 0, nb, sizeof(nb));
  uint32_t slot = put_step(a, 9);
  ck_assert_msg(snap_file_write(a, slot, dfd, "f", NULL, NULL, err,
                                sizeof(err)) == PT_OK, "%s", err);
  struct snap_file *f = NULL;
  ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_OK);
  uint64_t h = snap_file_info(f)->header_bytes, sz = snap_file_info(f)->file_bytes;
  const struct snap_region *r2 = snap_file_region(f, 2);
  uint64_t at = h + r2->offset + MIB + 77; /* region 2, block 1 */
  snap_file_close(f);

  /* A data byte: the load and the check both find it and name the block. */
  flip("f", at);
  uint32_t ds;
  uint64_t gen;
  err[0] = '\0';
  ck_assert_int_eq(load_into("f", b, err, sizeof(err), &ds, &gen, NULL),
                   PT_ECHECKSUM);
  ck_assert_msg(strstr(err, "moments") != NULL, "%s", err);
  for (uint32_t chunk = 4096; chunk <= 8 * MIB; chunk *= 8) {
    struct snap_file_opts o = {.chunk_bytes = chunk};
    ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_OK);
    ck_assert_int_eq(snap_file_verify(f, &o, NULL, err, sizeof(err)),
                     PT_ECHECKSUM);
    snap_file_close(f);
  }
  flip("f", at);
  for (uint32_t chunk = 4096; chunk <= 8 * MIB; chunk *= 8) {
    struct snap_file_opts o = {.chunk_bytes = chunk};
    ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_OK);
    ck_assert_msg(snap_file_verify(f, &o, NULL, err, sizeof(err)) == PT_OK,
                  "chunk %u: %s", chunk, err);
    snap_file_close(f);
  }
  /* The blob. */
  ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_OK);
  uint64_t blob_at = h + snap_file_info(f)->blob_off + 3;
  snap_file_close(f);
  flip("f", blob_at);
  ck_assert_int_eq(load_into("f", b, err, sizeof(err), &ds, &gen, NULL),
                   PT_ECHECKSUM);
  ck_assert_msg(strstr(err, "blob") != NULL, "%s", err);
  flip("f", blob_at);

  /* The header, the region table, the checksum table. */
  uint64_t hdr_bytes[] = {20, 30, 113, 192 + 5, 192 + 320 + 260,
                          192 + 3 * 320 + 8};
  for (size_t i = 0; i < sizeof(hdr_bytes) / sizeof(hdr_bytes[0]); i++) {
    flip("f", hdr_bytes[i]);
    ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_EFORMAT);
    ck_assert_ptr_null(f);
    flip("f", hdr_bytes[i]);
  }
  ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_OK);
  snap_file_close(f);
  /* Another version. */
  flip("f", 8);
  ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_EVERSION);
  flip("f", 8);
  /* Truncated: a crash before the rename cannot leave this, a copy can. */
  int fd = openat(dfd, "f", O_RDWR);
  ck_assert_int_eq(ftruncate(fd, (off_t)(sz - 4096)), 0);
  close(fd);
  err[0] = '\0';
  ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "truncated") != NULL, "%s", err);
  /* Garbage, and an empty file, and a directory. */
  fd = openat(dfd, "g", O_WRONLY | O_CREAT, 0600);
  uint8_t junk[8192];
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (uint8_t)(i * 37 + 1);
  ck_assert_int_eq(write(fd, junk, sizeof(junk)), (ssize_t)sizeof(junk));
  close(fd);
  ck_assert_int_eq(snap_file_open(&f, dfd, "g", err, sizeof(err)), PT_EFORMAT);
  fd = openat(dfd, "e", O_WRONLY | O_CREAT, 0600);
  close(fd);
  ck_assert_int_eq(snap_file_open(&f, dfd, "e", err, sizeof(err)), PT_EFORMAT);
  ck_assert_int_eq(mkdirat(dfd, "d", 0700), 0);
  ck_assert_int_eq(snap_file_open(&f, dfd, "d", err, sizeof(err)), PT_EFORMAT);
  ck_assert_int_eq(snap_file_open(&f, dfd, "none", err, sizeof(err)), -ENOENT);
  /* A symlink is not followed. */
  ck_assert_int_eq(symlinkat("g", dfd, "l"), 0);
  ck_assert_int_lt(snap_file_open(&f, dfd, "l", err, sizeof(err)), 0);
  snap_store_close(a);
  snap_store_close(b);
  snap_store_unlink(na);
  snap_store_unlink(nb);
  dir_teardown();
}
END_TEST

START_TEST(test_foreign)
{
  char na[128], nb[128], err[512] = "";
  dir_setup();
  struct snap_store *a = make("fo-a", inst_a, 2, 0, na, sizeof(na));
  uint32_t slot = put_step(a, 3);
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "f", NULL, NULL, err,
                                   sizeof(err)), PT_OK);
  struct {
    const char *tag;
    const uint8_t *inst;
    uint32_t world;
    uint64_t extra;
    int rc;
  } cases[] = {{"fo-i", inst_b, 2, 0, PT_EFOREIGN},
               {"fo-w", inst_a, 3, 0, PT_EWORLD},
               {"fo-r", inst_a, 2, 4096, PT_EREGIONS}};
  for (size_t i = 0; i < 3; i++) {
    struct snap_store *b = make(cases[i].tag, cases[i].inst, cases[i].world,
                                cases[i].extra, nb, sizeof(nb));
    uint32_t ds;
    uint64_t gen;
    ck_assert_int_eq(load_into("f", b, err, sizeof(err), &ds, &gen, NULL),
                     cases[i].rc);
    /* Nothing written into the slot: it was aborted, the object is empty. */
    uint32_t sl;
    uint64_t st;
    ck_assert_int_eq(snap_slot_newest_committed(b, &sl, &st), PT_ENOSNAP);
    snap_store_close(b);
    snap_store_unlink(nb);
  }
  snap_store_close(a);
  snap_store_unlink(na);
  dir_teardown();
}
END_TEST

START_TEST(test_cancel_sweep_rate)
{
  char na[128], err[512] = "";
  dir_setup();
  struct snap_store *a = make("cs-a", inst_a, 1, 0, na, sizeof(na));
  uint32_t slot = put_step(a, 4);
  /* Cancelled: no file, no temporary. */
  atomic_bool stop = true;
  struct snap_file_opts o = {.cancel = &stop};
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "f", &o, NULL, err,
                                   sizeof(err)), -ECANCELED);
  ck_assert_int_eq(faccessat(dfd, "f", F_OK, 0), -1);
  ck_assert_int_eq(snap_file_sweep(dfd), 0);
  /* A writer killed in the middle leaves its temporary: swept. */
  int fd = openat(dfd, ".f.123.tmp", O_WRONLY | O_CREAT, 0600);
  close(fd);
  fd = openat(dfd, "keep.tmp", O_WRONLY | O_CREAT, 0600); /* not ours */
  close(fd);
  ck_assert_int_eq(snap_file_sweep(dfd), 1);
  ck_assert_int_eq(faccessat(dfd, "keep.tmp", F_OK, 0), 0);
  /* An unwritable place: a name in a directory that is gone. */
  int gone = openat(dfd, ".", O_RDONLY | O_DIRECTORY);
  ck_assert_int_eq(mkdirat(dfd, "sub", 0700), 0);
  int sub = openat(dfd, "sub", O_RDONLY | O_DIRECTORY);
  ck_assert_int_eq(unlinkat(dfd, "sub", AT_REMOVEDIR), 0);
  err[0] = '\0';
  ck_assert_int_eq(snap_file_write(a, slot, sub, "f", NULL, NULL, err,
                                   sizeof(err)), -ENOENT);
  ck_assert_msg(strstr(err, "cannot create") != NULL, "%s", err);
  close(sub);
  close(gone);
  /* The rate bound: 4 MiB+ of data at 40 MB/s takes 0.1 s at least. */
  struct snap_file_opts slow = {.rate_bps = 40000000, .chunk_bytes = 1 << 20};
  struct timespec t0, t1;
  clock_gettime(CLOCK_MONOTONIC, &t0);
  struct snap_file_stats st;
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "f", &slow, &st, err,
                                   sizeof(err)), PT_OK);
  clock_gettime(CLOCK_MONOTONIC, &t1);
  double secs = (double)(t1.tv_sec - t0.tv_sec) + (t1.tv_nsec - t0.tv_nsec) / 1e9;
  double floor_s = (double)st.bytes / 40e6 * 0.95;
  ck_assert_msg(secs >= floor_s, "%.3f s for %llu bytes at 40 MB/s (at least "
                "%.3f)", secs, (unsigned long long)st.bytes, floor_s);
  snap_store_close(a);
  snap_store_unlink(na);
  dir_teardown();
}
END_TEST

/* A header whose counts are forged and whose CRC is made right (it is no
 * secret): refused before anything is walked or allocated from them. */
static void forge(const char *name, uint32_t off, uint32_t value)
{
  int fd = openat(dfd, name, O_RDWR);
  ck_assert_int_ge(fd, 0);
  uint8_t pre[192];
  ck_assert_int_eq(pread(fd, pre, sizeof(pre), 0), (ssize_t)sizeof(pre));
  uint32_t hbytes;
  memcpy(&hbytes, pre + 12, 4);
  uint8_t *h = malloc(hbytes);
  ck_assert_int_eq(pread(fd, h, hbytes, 0), (ssize_t)hbytes);
  memcpy(h + off, &value, 4);
  uint32_t c = crc32_iscsi(h, 188, 0xFFFFFFFFu);
  c = crc32_iscsi(h + 192, (int)(hbytes - 192), c);
  memcpy(h + 188, &c, 4);
  ck_assert_int_eq(pwrite(fd, h, hbytes, 0), (ssize_t)hbytes);
  free(h);
  close(fd);
}

START_TEST(test_forged_and_marked)
{
  char na[128], err[512] = "";
  dir_setup();
  struct snap_store *a = make("fg-a", inst_a, 1, 0, na, sizeof(na));
  uint32_t slot = put_step(a, 6);
  struct snap_file_opts o = {.mark = 0x1234567890abcdefull};
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "f", &o, NULL, err,
                                   sizeof(err)), PT_OK);
  struct snap_file *f = NULL;
  ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)), PT_OK);
  ck_assert_uint_eq(snap_file_info(f)->mark, 0x1234567890abcdefull);
  snap_file_close(f);
  /* 60000 regions, 0 regions, 2^31 blocks: each with a right CRC. */
  const struct {
    uint32_t off, value;
  } forged[] = {{120, 60000}, {120, 0}, {128, 1u << 31}, {120, 4}};
  for (size_t i = 0; i < sizeof(forged) / sizeof(forged[0]); i++) {
    ck_assert_int_eq(snap_file_write(a, slot, dfd, "f", NULL, NULL, err,
                                     sizeof(err)), PT_OK);
    forge("f", forged[i].off, forged[i].value);
    err[0] = '\0';
    ck_assert_int_eq(snap_file_open(&f, dfd, "f", err, sizeof(err)),
                     PT_EFORMAT);
    ck_assert_msg(err[0] != '\0', "no sentence");
  }
  /* A slot damaged in memory after its seal is never written. */
  ((uint8_t *)snap_slot_data(a, slot))[snap_store_region(a, 1)->offset + 9] ^= 1;
  err[0] = '\0';
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "g", NULL, NULL, err,
                                   sizeof(err)), PT_ECHECKSUM);
  ck_assert_msg(strstr(err, "rng") != NULL, "%s", err);
  ck_assert_int_eq(faccessat(dfd, "g", F_OK, 0), -1);
  ck_assert_int_eq(snap_file_sweep(dfd), 0);
  ((uint8_t *)snap_slot_data(a, slot))[snap_store_region(a, 1)->offset + 9] ^= 1;
  ((uint8_t *)snap_slot_blob(a, slot))[3] ^= 4; /* now the blob */
  err[0] = '\0';
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "g", NULL, NULL, err,
                                   sizeof(err)), PT_ECHECKSUM);
  ck_assert_msg(strstr(err, "blob") != NULL, "%s", err);
  ck_assert_int_eq(faccessat(dfd, "g", F_OK, 0), -1);
  ((uint8_t *)snap_slot_blob(a, slot))[3] ^= 4;
  ck_assert_int_eq(snap_file_write(a, slot, dfd, "g", NULL, NULL, err,
                                   sizeof(err)), PT_OK);
  snap_store_close(a);
  snap_store_unlink(na);
  dir_teardown();
}
END_TEST

int main(void)
{
  runner_pid = getpid();
  Suite *su = suite_create("snap_file");
  TCase *tc = tcase_create("file");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, test_roundtrip);
  tcase_add_test(tc, test_damaged);
  tcase_add_test(tc, test_foreign);
  tcase_add_test(tc, test_cancel_sweep_rate);
  tcase_add_test(tc, test_forged_and_marked);
  suite_add_tcase(su, tc);
  int rc = unit_run(su);
  unit_shm_sweep("pt-tsnap-file.%d.", (int)runner_pid);
  return rc;
}
