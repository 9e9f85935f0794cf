/*
 * rpc_sock.c — blocking frame I/O with deadlines over a connected stream
 * socket, for the processes that must not run an event loop: libpt inside
 * the trainer, and ptctl.
 *
 * Every wait is a poll() bounded by the caller's deadline on the
 * CLOCK_MONOTONIC clock of rpc_now_ms(); the socket itself stays blocking but
 * every send/recv is MSG_DONTWAIT, so no call can block past its deadline.
 * Sends use MSG_NOSIGNAL: a peer that went away yields -EPIPE, never SIGPIPE
 * in the trainer. EINTR restarts the wait with the time that is left.
 *
 * After any error other than -ETIMEDOUT before the first byte of a frame, the
 * stream position is unknown and the caller closes the descriptor.
 */
#include <errno.h>
#include <arpa/inet.h>
#include <fcntl.h>
#include <limits.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "common/monotime.h"
#include "rpc/rpc.h"

uint64_t rpc_now_ms(void)
{
  return monotime_ms();
}

/* Waits until fd is ready for events or the deadline passes. 0, -ETIMEDOUT,
 * or a negated errno from poll. */
static int wait_fd(int fd, short events, uint64_t deadline_ms)
{
  for (;;) {
    uint64_t now = rpc_now_ms();
    if (now >= deadline_ms)
      return -ETIMEDOUT;
    uint64_t left = deadline_ms - now;
    struct pollfd pfd = {.fd = fd, .events = events};
    int n = poll(&pfd, 1, left > INT_MAX ? INT_MAX : (int)left);
    if (n > 0)
      return 0; /* readable, writable, or an error the next call reports */
    if (n < 0 && errno != EINTR)
      return -errno;
  }
}

/* A non-blocking stream socket of family, connect() to sa begun (EINTR
 * retried). OUT: *s, or -1 when no socket was made (the error returned).
 * PT_OK when connected, else a negated errno (-EINPROGRESS: under way). */
static int connect_begin(int family, const struct sockaddr *sa, socklen_t len,
                         int *s)
{
  int rc;

  *s = socket(family, SOCK_STREAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
  if (*s < 0)
    return -errno;
  do
    rc = connect(*s, sa, len);
  while (rc < 0 && errno == EINTR);
  return rc < 0 ? -errno : PT_OK;
}

/* The end of both connects: when rc is PT_OK, s goes back to blocking and
 * to the caller (OUT: *fd); else, or when that fails, s is closed. */
static int connect_end(int s, int rc, int *fd)
{
  if (rc == PT_OK) {
    int fl = fcntl(s, F_GETFL);
    if (fl < 0 || fcntl(s, F_SETFL, fl & ~O_NONBLOCK) < 0)
      rc = -errno;
  }
  if (rc != PT_OK) {
    close(s);
    return rc;
  }
  *fd = s;
  return PT_OK;
}

int rpc_sock_connect_unix(const char *path, int *fd)
{
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  size_t plen = strlen(path);
  int s;

  *fd = -1;
  if (plen >= sizeof(sa.sun_path))
    return -ENAMETOOLONG;
  memcpy(sa.sun_path, path, plen + 1);

  /* Non-blocking for the connect alone: a listener whose backlog is full
   * answers EAGAIN at once instead of blocking with no deadline. */
  int rc = connect_begin(AF_UNIX, (const struct sockaddr *)&sa, sizeof(sa), &s);
  if (s < 0)
    return rc;
  return connect_end(s, rc, fd);
}

int rpc_sock_connect_tcp(const char *host, int port, int timeout_ms, int *fd)
{
  struct sockaddr_storage ss;
  socklen_t len;
  uint64_t deadline = rpc_now_ms() + (uint64_t)(timeout_ms > 0 ? timeout_ms : 1);
  int rc, s, one = 1;

  *fd = -1;
  memset(&ss, 0, sizeof(ss));
  if (port < 0 || port > 65535)
    return -EINVAL;
  struct sockaddr_in *v4 = (struct sockaddr_in *)&ss;
  struct sockaddr_in6 *v6 = (struct sockaddr_in6 *)&ss;
  if (inet_pton(AF_INET, host, &v4->sin_addr) == 1) {
    v4->sin_family = AF_INET;
    v4->sin_port = htons((uint16_t)port);
    len = sizeof(*v4);
  } else if (inet_pton(AF_INET6, host, &v6->sin6_addr) == 1) {
    v6->sin6_family = AF_INET6;
    v6->sin6_port = htons((uint16_t)port);
    len = sizeof(*v6);
  } else {
    return -EINVAL;
  }
  rc = connect_begin(ss.ss_family, (const struct sockaddr *)&ss, len, &s);
  if (s < 0)
    return rc;
  if (rc == -EINPROGRESS) {
    int soerr = 0;
    socklen_t sl = sizeof(soerr);
    rc = wait_fd(s, POLLOUT, deadline);
    if (rc == 0 && getsockopt(s, SOL_SOCKET, SO_ERROR, &soerr, &sl) != 0)
      soerr = errno;
    if (rc == 0)
      rc = -soerr;
  }
  if (rc == PT_OK)
    (void)setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  return connect_end(s, rc, fd);
}

/* Writes all len bytes before the deadline, resuming after partial writes. */
int rpc_sock_write_all(int fd, const void *data, size_t len,
                       uint64_t deadline_ms)
{
  const uint8_t *buf = data;

  while (len > 0) {
    ssize_t n = send(fd, buf, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    int rc = wait_fd(fd, POLLOUT, deadline_ms);
    if (rc < 0)
      return rc;
  }
  return PT_OK;
}

/* Reads exactly len bytes before the deadline; -ECONNRESET on EOF. */
int rpc_sock_read_all(int fd, void *data, size_t len, uint64_t deadline_ms)
{
  uint8_t *buf = data;

  while (len > 0) {
    ssize_t n = recv(fd, buf, len, MSG_DONTWAIT);
    if (n > 0) {
      buf += n;
      len -= (size_t)n;
      continue;
    }
    if (n == 0)
      return -ECONNRESET;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    int rc = wait_fd(fd, POLLIN, deadline_ms);
    if (rc < 0)
      return rc;
  }
  return PT_OK;
}

int rpc_sock_send(int fd, uint32_t type, uint64_t request_id,
                  const ProtobufCMessage *msg, uint64_t deadline_ms)
{
  uint8_t *frame;
  size_t len;
  int rc = rpc_frame_pack(&frame, &len, type, request_id, msg);

  if (rc < 0)
    return rc;
  rc = rpc_sock_write_all(fd, frame, len, deadline_ms);
  free(frame);
  return rc;
}

int rpc_sock_recv(int fd, uint32_t max_body, uint64_t deadline_ms,
                  struct rpc_hdr *h, ProtobufCMessage **msg)
{
  uint8_t hdr[RPC_HDR_BYTES];
  uint8_t *body = NULL;
  int rc;

  *msg = NULL;
  if (max_body == 0)
    max_body = RPC_MAX_BODY_DEFAULT;
  rc = rpc_sock_read_all(fd, hdr, sizeof(hdr), deadline_ms);
  if (rc < 0)
    return rc;
  rc = rpc_hdr_decode(hdr, max_body, h);
  if (rc < 0)
    return rc;
  if (h->length > 0) {
    body = malloc(h->length);
    if (body == NULL)
      return -ENOMEM;
    rc = rpc_sock_read_all(fd, body, h->length, deadline_ms);
    if (rc < 0)
      goto out_free_body;
  }
  rc = rpc_body_unpack(h->type, body, h->length, msg);

out_free_body:
  free(body);
  return rc;
}

uint64_t rpc_sock_next_id(void)
{
  /* Process-wide, never 0 (0 marks events): a late reply to a call that
   * timed out carries an older id and is skipped by the next call. */
  static uint64_t next_id;

  return __atomic_add_fetch(&next_id, 1, __ATOMIC_RELAXED);
}
