/*
 * bench_net.c — tcp_raw_gbps, the machine's limit for moving snapshot bytes
 * between nodes, measured here on loopback with plain sockets: one thread
 * writes 1 MiB buffers into a TCP connection to 127.0.0.1, another reads
 * them (no framing, no authentication, nothing but write() and read()).
 * The reader reads in 1 MiB and, in other transfers, in 256 KiB pieces (the
 * size rpc_bulk.c reads in: a piece that stays in the cache is faster to
 * read), and the faster is the limit, so that no figure read against it
 * beats it. It reads into the same kind of destination bulk_gbps fills: a
 * pre-faulted shm ring of BENCH_NET_RING bytes, read into in turn, so the
 * bytes land in memory as a bulk transfer's do (tcp_raw_gbps, the limit);
 * and, apart, into one reused 1 MiB buffer that stays in the cache, which
 * is what the network stack alone moves (tcp_raw_hot_gbps, reported, read
 * against nothing). The rate counts payload bytes from the first write
 * until the reader has seen the last byte; one transfer per read size and
 * destination per call: ptbench calls it once per round, each round
 * followed by bench_bulk.c's transfer, and takes medians over the rounds.
 * Every socket call has a deadline.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <unistd.h>

#include "pt.h"
#include "tests/bench/bench.h"

#define NET_BUF ((size_t)1 << 20)
#define NET_TIMEOUT_S 20

static const size_t read_sizes[] = {NET_BUF, (size_t)256 << 10};
#define NREAD (sizeof(read_sizes) / sizeof(read_sizes[0]))

struct reader {
  int lfd;
  size_t piece;  /* bytes per read() */
  uint8_t *dst;  /* read into in turn */
  size_t ring;   /* bytes at dst, a multiple of piece */
  uint64_t expect;
  uint64_t got;
  double t_done;
  int rc;
};

static void set_timeouts(int fd)
{
  struct timeval tv = { .tv_sec = NET_TIMEOUT_S };
  setsockopt(fd, SOL_SOCKET, SO_RCVTIMEO, &tv, sizeof(tv));
  setsockopt(fd, SOL_SOCKET, SO_SNDTIMEO, &tv, sizeof(tv));
}

static void *reader_main(void *arg)
{
  struct reader *rd = arg;
  size_t at = 0;
  int fd = -1;

  fd = accept(rd->lfd, NULL, NULL); /* the listener has a receive deadline */
  if (fd < 0) {
    rd->rc = -errno;
    return NULL;
  }
  set_timeouts(fd);
  while (rd->got < rd->expect) {
    ssize_t n = read(fd, rd->dst + at, rd->piece);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rd->rc = n < 0 ? -errno : -ECONNRESET;
      goto out_close;
    }
    rd->got += (uint64_t)n;
    at += (size_t)n; /* n <= piece, and the ring is whole pieces */
    if (at + rd->piece > rd->ring)
      at = 0;
  }
  rd->t_done = bench_now();
  rd->rc = 0;
out_close:
  close(fd);
  return NULL;
}

/* One transfer of `total` bytes. OUT: seconds. */
static int one_transfer(const unsigned char *buf, uint64_t total, size_t piece,
                        uint8_t *dst, size_t ring,
                        double *secs, char *errbuf, size_t errlen)
{
  struct sockaddr_in sa = { .sin_family = AF_INET,
                            .sin_addr.s_addr = htonl(INADDR_LOOPBACK) };
  socklen_t slen = sizeof(sa);
  struct reader rd = { .lfd = -1, .piece = piece, .dst = dst, .ring = ring,
                       .expect = total };
  pthread_t th;
  double t0 = 0;
  int fd = -1, rc;

  rd.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* the listener */
  if (rd.lfd < 0 || bind(rd.lfd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      listen(rd.lfd, 1) != 0 || getsockname(rd.lfd, (struct sockaddr *)&sa, &slen) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot listen on loopback TCP: %s", strerror(errno));
    goto out_listener;
  }
  set_timeouts(rd.lfd);
  rc = -pthread_create(&th, NULL, reader_main, &rd);
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot start the reader thread: %s", strerror(-rc));
    goto out_listener;
  }
  fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0); /* the writer */
  if (fd < 0 || connect(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot connect to loopback TCP: %s", strerror(errno));
    goto out_join;
  }
  set_timeouts(fd);
  t0 = bench_now();
  for (uint64_t sent = 0; sent < total;) {
    size_t want = total - sent < NET_BUF ? (size_t)(total - sent) : NET_BUF;
    ssize_t n = write(fd, buf, want);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0) {
      rc = n < 0 ? -errno : -EIO;
      snprintf(errbuf, errlen, "loopback TCP write failed: %s", strerror(-rc));
      goto out_join;
    }
    sent += (uint64_t)n;
  }
  rc = 0;
out_join:
  if (fd >= 0)
    shutdown(fd, SHUT_RDWR); /* a failed writer ends the reader at once */
  if (rc < 0)
    shutdown(rd.lfd, SHUT_RDWR); /* and so does one that never connected */
  pthread_join(th, NULL);
  if (rc == 0 && rd.rc < 0) {
    rc = rd.rc;
    snprintf(errbuf, errlen, "loopback TCP read failed: %s", strerror(-rc));
  }
  if (rc == 0)
    *secs = rd.t_done - t0;
  if (fd >= 0)
    close(fd);
out_listener:
  if (rd.lfd >= 0)
    close(rd.lfd);
  return rc;
}

int bench_net_run(const struct bench_opts *o, struct bench_net_result *r,
                  char *errbuf, size_t errlen)
{
  enum { REPS = 1 }; /* per round: ptbench runs the rounds */
  uint64_t total = o->quick ? (256ull << 20) : (1ull << 30);
  double t[2][NREAD][REPS];
  int rc = 0;

  memset(r, 0, sizeof(*r));
  /* The ring: as bench_bulk.c's destination and an SMP's slots are. */
  uint8_t *ring = bench_shm_buffer(o->shm_prefix, "netring", BENCH_NET_RING,
                                   &rc, errbuf, errlen);
  if (ring == NULL)
    return rc;
  unsigned char *buf = malloc(NET_BUF), *hot = malloc(NET_BUF);
  if (buf == NULL || hot == NULL) {
    free(buf);
    free(hot);
    munmap(ring, BENCH_NET_RING);
    return -ENOMEM;
  }
  bench_fill(buf, NET_BUF, 7);
  memset(hot, 0, NET_BUF);
  for (int i = 0; i < REPS && rc == 0; i++) /* interleaved */
    for (size_t k = 0; k < NREAD && rc == 0; k++) {
      rc = one_transfer(buf, total, read_sizes[k], ring, BENCH_NET_RING,
                        &t[0][k][i], errbuf, errlen);
      if (rc == 0)
        rc = one_transfer(buf, total, read_sizes[k], hot, NET_BUF,
                          &t[1][k][i], errbuf, errlen);
    }
  free(buf);
  free(hot);
  munmap(ring, BENCH_NET_RING);
  if (rc < 0)
    return rc;
  r->bytes = total;
  for (size_t k = 0; k < NREAD; k++) {
    double g = (double)total / bench_median(t[0][k], REPS) / 1e9;
    double h = (double)total / bench_median(t[1][k], REPS) / 1e9;
    if (g > r->tcp_raw_gbps)
      r->tcp_raw_gbps = g;
    if (h > r->tcp_raw_hot_gbps)
      r->tcp_raw_hot_gbps = h;
  }
  return 0;
}
