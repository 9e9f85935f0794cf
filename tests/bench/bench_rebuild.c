/*
 * bench_rebuild.c — `ptbench --cluster`'s rebuild figures, taken on the
 * protection job of bench_protect.c once its window is over: one of its 3
 * nodes is lost whole (`ptctl fault`'s "node": its shm objects removed, its
 * ptd, trainer and SMP SIGKILLed), its ptd is started again on the same
 * state dir (the same node id, its memory empty), and its SMP rebuilds the
 * committed step from the other two members of the 2+1 group before its
 * trainer restores it.
 *
 *   rebuild_s           the rebuild's own time, as the SMP logs it ("step R
 *                       rebuilt from members ...: S bytes in T ms, B bytes
 *                       received"): from its first fetch to the verified,
 *                       committed slot
 *   rebuild_bytes_ratio B / S: what the replacement received before its
 *                       trainer could restore, over the state it rebuilt
 *   rebuild_ingest_s    the limit: S bytes received over one loopback TCP
 *                       connection (1 MiB writes and reads, two threads),
 *                       measured here in the same run
 *   rebuild_disk_s      what a disk checkpoint would cost instead: S bytes
 *                       read back with O_DIRECT from a file in --file-dir
 *                       (written and fsynced first)
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "pt.h"
#include "tests/bench/bench.h"

#define PIECE ((size_t)1 << 20)

/* ---- the ingest limit ---- */

struct sink {
  int fd;
  size_t bytes;
  int rc;
};

static void *sink_run(void *a)
{
  struct sink *s = a;
  uint8_t *buf = malloc(PIECE);
  size_t got = 0;

  s->rc = buf == NULL ? -ENOMEM : 0;
  while (s->rc == 0 && got < s->bytes) {
    ssize_t n = read(s->fd, buf, PIECE);
    if (n > 0)
      got += (size_t)n;
    else if (n == 0)
      s->rc = -EPIPE;
    else if (errno != EINTR)
      s->rc = -errno;
  }
  free(buf);
  return NULL;
}

int bench_rebuild_ingest(size_t bytes, double *secs)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  int lfd = socket(AF_INET, SOCK_STREAM, 0), cfd = -1, afd = -1, rc = 0;
  uint8_t *buf = calloc(1, PIECE);

  *secs = NAN;
  if (lfd < 0 || buf == NULL || bind(lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      listen(lfd, 1) != 0 || getsockname(lfd, (struct sockaddr *)&sa, &sl) != 0 ||
      (cfd = socket(AF_INET, SOCK_STREAM, 0)) < 0 ||
      connect(cfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      (afd = accept(lfd, NULL, NULL)) < 0) {
    rc = buf == NULL ? -ENOMEM : -errno;
    goto out;
  }
  struct sink s = {.fd = afd, .bytes = bytes};
  pthread_t th;
  if (pthread_create(&th, NULL, sink_run, &s) != 0) {
    rc = -EAGAIN;
    goto out;
  }
  double t0 = bench_now();
  size_t sent = 0;
  while (rc == 0 && sent < bytes) {
    size_t len = bytes - sent < PIECE ? bytes - sent : PIECE;
    ssize_t n = write(cfd, buf, len);
    if (n > 0)
      sent += (size_t)n;
    else if (n < 0 && errno != EINTR)
      rc = -errno;
  }
  pthread_join(th, NULL);
  if (rc == 0)
    rc = s.rc;
  if (rc == 0)
    *secs = bench_now() - t0;
out:
  if (afd >= 0)
    close(afd);
  if (cfd >= 0)
    close(cfd);
  if (lfd >= 0)
    close(lfd);
  free(buf);
  return rc;
}

/* ---- the disk checkpoint ---- */

int bench_rebuild_disk(const char *dir, size_t bytes, double *secs, char *why,
                       size_t whylen)
{
  char path[512];
  size_t len = (bytes + 4095) & ~(size_t)4095;
  void *buf = NULL;
  int fd = -1, rc = 0;

  *secs = NAN;
  snprintf(path, sizeof(path), "%s/ptbench-rebuild.%d", dir, (int)getpid());
  if (posix_memalign(&buf, 4096, PIECE) != 0) {
    snprintf(why, whylen, "out of memory");
    return -ENOMEM;
  }
  memset(buf, 0x5a, PIECE);
  fd = open(path, O_WRONLY | O_CREAT | O_TRUNC | O_DIRECT, 0600);
  if (fd < 0) {
    rc = -errno;
    snprintf(why, whylen, "cannot open '%s' with O_DIRECT: %s", path, strerror(errno));
    goto out;
  }
  for (size_t off = 0; off < len && rc == 0; off += PIECE) {
    size_t n = len - off < PIECE ? len - off : PIECE;
    if (pwrite(fd, buf, n, (off_t)off) != (ssize_t)n) {
      rc = errno != 0 ? -errno : -EIO;
      snprintf(why, whylen, "writing '%s': %s", path, strerror(-rc));
    }
  }
  if (rc == 0 && fsync(fd) != 0) {
    rc = -errno;
    snprintf(why, whylen, "fsync '%s': %s", path, strerror(errno));
  }
  close(fd);
  fd = -1;
  if (rc != 0)
    goto out;
  fd = open(path, O_RDONLY | O_DIRECT);
  if (fd < 0) {
    rc = -errno;
    snprintf(why, whylen, "cannot open '%s' with O_DIRECT: %s", path, strerror(errno));
    goto out;
  }
  double t0 = bench_now();
  for (size_t off = 0; off < len && rc == 0; off += PIECE) {
    size_t n = len - off < PIECE ? len - off : PIECE;
    if (pread(fd, buf, n, (off_t)off) != (ssize_t)n) {
      rc = errno != 0 ? -errno : -EIO;
      snprintf(why, whylen, "reading '%s': %s", path, strerror(-rc));
    }
  }
  if (rc == 0)
    *secs = bench_now() - t0;
out:
  if (fd >= 0)
    close(fd);
  unlink(path);
  free(buf);
  return rc;
}

/* ---- the SMP's own account ---- */

int bench_rebuild_logged(const char *log, uint64_t *step, uint64_t *bytes,
                         uint64_t *ms, uint64_t *received)
{
  FILE *f = fopen(log, "r");
  char line[1024];
  int rc = -ENOENT;

  if (f == NULL)
    return -errno;
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *s = strstr(line, ": step ");
    if (s == NULL || strstr(s, " rebuilt from members ") == NULL)
      continue;
    const char *c = strstr(s, ": ");
    c = c != NULL ? strstr(c + 2, ": ") : NULL; /* past "members x,y" */
    uint64_t st, b, t, r;
    if (sscanf(s, ": step %" SCNu64, &st) == 1 && c != NULL &&
        sscanf(c, ": %" SCNu64 " bytes in %" SCNu64 " ms, %" SCNu64 " bytes received",
               &b, &t, &r) == 3) {
      *step = st;
      *bytes = b;
      *ms = t;
      *received = r;
      rc = PT_OK; /* the last one counts */
    }
  }
  fclose(f);
  return rc;
}
