/*
 * bench_persist.c — the persistent tier against the disk's own limits, in
 * the same run on the same directory (--file-dir):
 *
 *   persist_gbps       one rank's flush of a committed slot (snap_file_write,
 *                      unthrottled: header, data straight from the slot with
 *                      O_DIRECT, every block checked on the way, fsync,
 *                      rename, directory fsync), data bytes per second
 *   persist_raw_gbps   a plain sequential O_DIRECT write of the same bytes
 *                      from the same memory, then fsync
 *   restore_disk_gbps  the load of that file into a slot of another object
 *                      (snap_file_open + snap_file_load: O_DIRECT reads,
 *                      every block verified)
 *   read_raw_gbps      a plain O_DIRECT read of the same file into the same
 *                      slot
 *
 * Rounds alternate the order of the writes, each into a new file (as the
 * SMP writes into a new step directory: no older file is freed inside the
 * figure), and each ratio is the median of the rounds' ratios, so that the
 * load of a shared machine weighs on both sides. Then
 * persist_step_overhead_ratio: pt-train's step time under ptd node with
 * snapshots at every step and a flush always running at the default rate
 * (--persist-every 1) ÷ the same without --persist-dir (bench_train.c's
 * runs, alternated).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "kernels/kernels.h"
#include "snapshot/snap_file.h"
#include "snapshot/snap_store.h"
#include "tests/bench/bench.h"

#define CHUNK ((size_t)8 << 20)
#define NREG 4

static struct snap_store *make_store(const struct bench_opts *o, const char *tag,
                                     char *name, size_t len, char *errbuf,
                                     size_t errlen)
{
  struct snap_region_desc regs[NREG];
  static const uint8_t inst[SNAP_INSTANCE_BYTES] = {7, 7, 7};
  memset(regs, 0, sizeof(regs));
  for (int i = 0; i < NREG; i++) {
    snprintf(regs[i].name, sizeof(regs[i].name), "part%d", i);
    regs[i].bytes = o->bytes / NREG + (i == 0 ? o->bytes % NREG : 0);
  }
  snprintf(name, len, "/%spersist-%s", o->shm_prefix, tag);
  struct snap_params p = {.job = "bench", .rank = 0, .world = 1, .nslots = 2,
                          .regions = regs, .nregions = NREG, .instance = inst};
  struct snap_store *s = NULL;
  if (snap_store_create(&s, name, &p, errbuf, errlen) != PT_OK)
    return NULL;
  bench_cleanup_shm(name);
  return s;
}

/* A committed step as libpt leaves it: data, block CRCs, the trailer. */
static int fill(struct snap_store *s, uint32_t *slot_out)
{
  uint32_t slot;
  uint64_t gen;
  int rc = snap_slot_acquire(s, 1, &slot, &gen);
  if (rc != PT_OK)
    return rc;
  uint8_t *data = snap_slot_data(s, slot);
  uint32_t *crcs = snap_slot_crcs(s, slot);
  uint64_t x = 0x9E3779B97F4A7C15ull;
  for (uint32_t r = 0; r < snap_store_nregions(s); r++) {
    const struct snap_region *reg = snap_store_region(s, r);
    uint8_t *d = data + reg->offset;
    for (uint64_t k = 0; k + 8 <= reg->bytes; k += 8) {
      x ^= x << 13, x ^= x >> 7, x ^= x << 17;
      memcpy(d + k, &x, 8);
    }
    for (uint32_t b = 0; b < reg->nblocks; b++) {
      uint64_t off = (uint64_t)b * KERN_BLOCK_SIZE;
      uint64_t n = reg->bytes - off < KERN_BLOCK_SIZE ? reg->bytes - off
                                                      : KERN_BLOCK_SIZE;
      crcs[reg->first_block + b] = crc32c(d + off, (size_t)n);
    }
  }
  crcs[snap_store_nblocks(s)] = 0;
  crcs[snap_store_nblocks(s) + 1] = crc32c(snap_slot_blob(s, slot), 0);
  rc = snap_slot_seal(s, slot, gen, 1);
  if (rc == PT_OK)
    rc = snap_slot_commit(s, 1);
  *slot_out = slot;
  return rc;
}

static int raw_write(int dirfd, const uint8_t *src, size_t bytes, double *secs,
                     char *errbuf, size_t errlen)
{
  double t0 = bench_now();
  int fd = openat(dirfd, "raw.bin", O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC,
                  0600);
  /* O_DIRECT where the file system takes it, as the flush does. */
  if (fd >= 0)
    (void)fcntl(fd, F_SETFL, fcntl(fd, F_GETFL) | O_DIRECT);
  if (fd < 0) {
    int rc = -errno;
    snprintf(errbuf, errlen, "raw O_DIRECT write: %s", strerror(errno));
    if (fd >= 0)
      close(fd);
    return rc;
  }
  for (size_t off = 0; off < bytes; off += CHUNK) {
    size_t n = bytes - off < CHUNK ? bytes - off : CHUNK;
    if (pwrite(fd, src + off, n, (off_t)off) != (ssize_t)n) {
      int rc = -errno;
      snprintf(errbuf, errlen, "raw O_DIRECT write: %s", strerror(errno));
      close(fd);
      return rc;
    }
  }
  int rc = fsync(fd) == 0 ? 0 : -errno;
  close(fd);
  *secs = bench_now() - t0;
  unlinkat(dirfd, "raw.bin", 0);
  if (rc != 0)
    snprintf(errbuf, errlen, "raw fsync: %s", strerror(-rc));
  return rc;
}

static int raw_read(int dirfd, const char *name, uint64_t off0, uint8_t *dst,
                    size_t bytes, double *secs, char *errbuf, size_t errlen)
{
  double t0 = bench_now();
  int fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC | O_DIRECT);
  if (fd < 0 && errno == EINVAL)
    fd = openat(dirfd, name, O_RDONLY | O_CLOEXEC); /* as the load does */
  if (fd < 0) {
    snprintf(errbuf, errlen, "raw O_DIRECT read: %s", strerror(errno));
    return -errno;
  }
  for (size_t off = 0; off < bytes; off += CHUNK) {
    size_t n = bytes - off < CHUNK ? bytes - off : CHUNK;
    if (pread(fd, dst + off, n, (off_t)(off0 + off)) != (ssize_t)n) {
      int rc = -errno;
      snprintf(errbuf, errlen, "raw O_DIRECT read: %s", strerror(errno));
      close(fd);
      return rc != 0 ? rc : -EIO;
    }
  }
  close(fd);
  *secs = bench_now() - t0;
  return 0;
}

int bench_persist_run(const struct bench_opts *o, struct bench_persist_result *r,
                      char *errbuf, size_t errlen)
{
  enum { ROUNDS_MAX = 5 };
  char na[128], nb[128], dir[600];
  struct snap_store *a = NULL, *b = NULL;
  int rounds = o->quick ? 3 : ROUNDS_MAX, rc, dirfd = -1;
  double w[ROUNDS_MAX], wr[ROUNDS_MAX], l[ROUNDS_MAX], lr[ROUNDS_MAX];
  double rw[ROUNDS_MAX], rl[ROUNDS_MAX];

  memset(r, 0, sizeof(*r));
  r->persist_gbps = r->persist_raw_gbps = r->restore_disk_gbps = NAN;
  r->read_raw_gbps = r->persist_ratio = r->restore_ratio = NAN;
  r->persist_step_overhead_ratio = NAN;
  a = make_store(o, "a", na, sizeof(na), errbuf, errlen);
  b = a != NULL ? make_store(o, "b", nb, sizeof(nb), errbuf, errlen) : NULL;
  if (a == NULL || b == NULL) {
    rc = -ENOMEM;
    goto out;
  }
  uint32_t slot;
  if ((rc = fill(a, &slot)) != PT_OK) {
    snprintf(errbuf, errlen, "cannot fill a slot: %s", pt_strerror(rc));
    goto out;
  }
  snprintf(dir, sizeof(dir), "%s/ptbench-persist.XXXXXX", o->file_dir);
  if (mkdtemp(dir) == NULL) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot make a directory in '%s': %s",
             o->file_dir, strerror(errno));
    goto out;
  }
  bench_cleanup_dir(dir);
  dirfd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  const size_t dbytes = (snap_store_slot_bytes(a) + SNAP_FILE_ALIGN - 1) /
                        SNAP_FILE_ALIGN * SNAP_FILE_ALIGN;
  r->bytes = dbytes;
  for (int i = 0; i < rounds; i++) {
    struct snap_file_stats st;
    double secs = NAN;
    /* A new file each time, as the SMP writes into a new step directory
     * (no older file to free at the rename); the order alternates. */
    unlinkat(dirfd, "rank-0.pts", 0);
    for (int k = 0; k < 2; k++) {
      if ((k == 0) == (i % 2 == 0)) {
        rc = snap_file_write(a, slot, dirfd, "rank-0.pts", NULL, &st, errbuf,
                             errlen);
        if (rc != PT_OK)
          goto out;
        r->direct = st.direct;
        w[i] = (double)st.bytes / ((double)st.ns / 1e9) / 1e9;
      } else {
        if ((rc = raw_write(dirfd, snap_slot_data(a, slot), dbytes, &secs,
                            errbuf, errlen)) != 0)
          goto out;
        wr[i] = (double)dbytes / secs / 1e9;
      }
    }
    /* The load into the other object's slot, verified; then a plain read
     * of the same bytes into the same slot. */
    struct snap_file *f = NULL;
    uint32_t bs;
    uint64_t gen;
    double t0 = bench_now();
    rc = snap_file_open(&f, dirfd, "rank-0.pts", errbuf, errlen);
    if (rc == PT_OK && (rc = snap_slot_acquire(b, 1 + (uint64_t)i, &bs, &gen)) ==
                           PT_OK) {
      rc = snap_file_load(f, b, bs, NULL, &st, errbuf, errlen);
      double t1 = bench_now();
      l[i] = (double)st.bytes / (t1 - t0) / 1e9;
      uint64_t hbytes = snap_file_info(f)->header_bytes;
      if (rc == PT_OK)
        rc = raw_read(dirfd, "rank-0.pts", hbytes, snap_slot_data(b, bs),
                      dbytes, &secs, errbuf, errlen);
      lr[i] = (double)dbytes / secs / 1e9;
      snap_slot_abort(b, bs, gen);
    }
    snap_file_close(f);
    if (rc != PT_OK)
      goto out;
    rw[i] = w[i] / wr[i];
    rl[i] = l[i] / lr[i];
    if (o->verbose)
      fprintf(stderr, "ptbench: persist round %d: flush %.2f GB/s, raw write "
              "%.2f GB/s; load %.2f GB/s, raw read %.2f GB/s\n", i + 1, w[i],
              wr[i], l[i], lr[i]);
  }
  r->rounds = rounds;
  r->persist_gbps = bench_median(w, (size_t)rounds);
  r->persist_raw_gbps = bench_median(wr, (size_t)rounds);
  r->restore_disk_gbps = bench_median(l, (size_t)rounds);
  r->read_raw_gbps = bench_median(lr, (size_t)rounds);
  r->persist_ratio = bench_median(rw, (size_t)rounds);
  r->restore_ratio = bench_median(rl, (size_t)rounds);
  unlinkat(dirfd, "rank-0.pts", 0);
  snap_store_close(a);
  snap_store_close(b);
  snap_store_unlink(na);
  snap_store_unlink(nb);
  a = b = NULL;

  /* Training beside a flush that never stops, against training alone. */
  int pairs = o->quick ? 1 : 2;
  double with[2], without[2];
  for (int p = 0; p < pairs; p++) {
    for (int k = 0; k < 2; k++) {
      bool persist = (p + k) % 2 == 1;
      double ms;
      rc = bench_train_one_ms(o, 100 + 2 * p + k, persist ? dir : NULL, &ms,
                              errbuf, errlen);
      if (rc < 0)
        goto out;
      (persist ? with : without)[p] = ms;
    }
  }
  r->step_ms_persist = bench_median(with, (size_t)pairs);
  r->step_ms_pt = bench_median(without, (size_t)pairs);
  r->persist_step_overhead_ratio = r->step_ms_persist / r->step_ms_pt;
  rc = 0;
out:
  if (dirfd >= 0)
    close(dirfd);
  snap_store_close(a); /* (their names: bench_cleanup_run) */
  snap_store_close(b);
  return rc;
}
