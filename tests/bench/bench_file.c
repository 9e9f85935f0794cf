/*
 * bench_file.c — the baseline users have today: the trainer stops, writes its
 * whole state synchronously to a file on local disk, fsyncs it, and only then
 * goes on. Each repetition writes a fresh file (open, write, fsync, close) in
 * a private directory under --file-dir that is removed afterwards; the figure
 * is the median time the caller is blocked.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/statfs.h>
#include <unistd.h>

#include "pt.h"
#include "tests/bench/bench.h"

#define WRITE_CHUNK ((size_t)64 << 20)

static const char *fs_name(long type)
{
  switch ((unsigned long)type) {
  case 0xEF53: return "ext4";
  case 0x58465342: return "xfs";
  case 0x9123683E: return "btrfs";
  case 0x01021994: return "tmpfs";
  case 0x794C7630: return "overlayfs";
  case 0x6969: return "nfs";
  case 0x2FC12FC1: return "zfs";
  case 0x65735546: return "fuse";
  default: return "other";
  }
}

static int write_all(int fd, const unsigned char *p, size_t n)
{
  while (n > 0) {
    ssize_t w = write(fd, p, n < WRITE_CHUNK ? n : WRITE_CHUNK);
    if (w < 0) {
      if (errno == EINTR)
        continue;
      return -errno;
    }
    p += w;
    n -= (size_t)w;
  }
  return 0;
}

/* One checkpoint: OUT: the times of write, fsync and the whole. */
static int one_ckpt(const char *path, const void *buf, size_t bytes, double *t_write,
                    double *t_fsync, double *t_all, char *errbuf, size_t errlen)
{
  int rc;
  double t0 = bench_now();
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600); /* the checkpoint */
  if (fd < 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot create '%s': %s", path, strerror(errno));
    return rc;
  }
  rc = write_all(fd, buf, bytes);
  double t1 = bench_now();
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot write '%s': %s", path, strerror(-rc));
    goto out_close;
  }
  if (fsync(fd) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot fsync '%s': %s", path, strerror(errno));
    goto out_close;
  }
  double t2 = bench_now();
  if (close(fd) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot close '%s': %s", path, strerror(errno));
    unlink(path);
    return rc;
  }
  *t_all = bench_now() - t0;
  *t_write = t1 - t0;
  *t_fsync = t2 - t1;
  unlink(path);
  return 0;
out_close:
  close(fd);
  unlink(path);
  return rc;
}

int bench_file_run(const struct bench_opts *o, const void *buf, size_t bytes,
                   struct bench_file_result *r, char *errbuf, size_t errlen)
{
  char dir[512], path[600];
  struct statfs sf;
  int n = o->file_reps, rc;
  double *tw = NULL, *tf = NULL, *ta = NULL;

  memset(r, 0, sizeof(*r));
  if (statfs(o->file_dir, &sf) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot use '%s' for the file checkpoint: %s", o->file_dir,
             strerror(errno));
    return rc;
  }
  snprintf(r->fs_type, sizeof(r->fs_type), "%s", fs_name((long)sf.f_type));
  uint64_t avail = (uint64_t)sf.f_bavail * (uint64_t)sf.f_bsize;
  if (avail < (uint64_t)bytes + (64u << 20)) {
    snprintf(errbuf, errlen, "'%s' has %llu bytes free; the file checkpoint needs %llu "
             "(use --file-dir)", o->file_dir, (unsigned long long)avail,
             (unsigned long long)bytes + (64u << 20));
    return -ENOSPC;
  }
  if ((uint64_t)snprintf(dir, sizeof(dir), "%s/ptbench.XXXXXX", o->file_dir) >= sizeof(dir)) {
    snprintf(errbuf, errlen, "--file-dir path too long");
    return -ENAMETOOLONG;
  }
  if (mkdtemp(dir) == NULL) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot create a directory in '%s': %s", o->file_dir,
             strerror(errno));
    return rc;
  }
  bench_cleanup_dir(dir);
  snprintf(path, sizeof(path), "%s/state.ckpt", dir);

  tw = calloc((size_t)n, sizeof(double));
  tf = calloc((size_t)n, sizeof(double));
  ta = calloc((size_t)n, sizeof(double));
  if (!tw || !tf || !ta) {
    rc = -ENOMEM;
    snprintf(errbuf, errlen, "out of memory");
    goto out_rmdir;
  }
  for (int i = 0; i < n; i++) {
    rc = one_ckpt(path, buf, bytes, &tw[i], &tf[i], &ta[i], errbuf, errlen);
    if (rc < 0)
      goto out_rmdir;
    if (o->verbose)
      fprintf(stderr, "ptbench: file checkpoint %d: write %.1f ms, fsync %.1f ms\n", i,
              tw[i] * 1e3, tf[i] * 1e3);
  }
  r->reps = n;
  r->blocking_ms = bench_median(ta, (size_t)n) * 1e3;
  r->write_ms = bench_median(tw, (size_t)n) * 1e3;
  r->fsync_ms = bench_median(tf, (size_t)n) * 1e3;
  rc = 0;
out_rmdir:
  rmdir(dir);
  free(tw);
  free(tf);
  free(ta);
  return rc;
}
