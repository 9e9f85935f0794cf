/*
 * train_comm.c — pt-train's data parallelism: the gradients and the loss of
 * every rank averaged over TCP, a deterministic all-reduce in a star around
 * rank 0.
 *
 * Rank 0 listens on MASTER_ADDR:MASTER_PORT; ranks 1..W-1 connect to it
 * (retrying with backoff until the deadline, since rank 0 may start later)
 * and introduce themselves. Then, once per step, every rank sends rank 0 its
 * gradient and loss; rank 0 adds them to its own in rank order 0, 1, 2, ...
 * (whatever order they arrived in, the additions are always the same, so the
 * sum is the same bits in every run), divides by W, and sends the mean back.
 * Every rank, rank 0 included, then holds the very same bytes, so identical
 * parameters and Adam moments stay identical on every rank.
 *
 * Every wait has a deadline (poll() before each non-blocking send/recv on
 * otherwise blocking sockets): a peer that dies closes its connection and the
 * survivors fail at once; a peer that hangs makes them fail when the deadline
 * passes. Either way the caller gets an error after one line on stderr that
 * names the peer and the step; nothing waits forever. World size 1 opens no
 * socket at all.
 *
 * Wire format, native byte order and float32 (ranks must share both; a
 * foreign byte order shows as a bad magic):
 *
 *   HELLO, rank r -> rank 0, 40 bytes
 *     0   u64  COMM_HELLO_MAGIC
 *     8   u32  world size
 *     12  u32  rank
 *     16  u64  config hash (what the ranks must agree on, see train.h)
 *     24  u64  start step (the first step this rank will train)
 *     32  u64  floats per exchange
 *   WELCOME, rank 0 -> rank r, 40 bytes: rank 0's own values, and its verdict
 *     0   u64  COMM_WELCOME_MAGIC
 *     8   u32  status: WELCOME_OK, WELCOME_CONFIG, WELCOME_RANK, WELCOME_STEP
 *     12  u32  world size
 *     16  u64  config hash
 *     24  u64  start step
 *     32  u64  floats per exchange
 *   STEP, both ways, once per step: 32 bytes, then the floats
 *     0   u64  COMM_STEP_MAGIC
 *     8   u64  step
 *     16  u64  floats that follow
 *     24  f64  loss: the sender's own (to rank 0) or the mean (from rank 0)
 *
 * A HELLO that rank 0 refuses for another configuration or a rank that is
 * taken does not stop rank 0 (a stranger on the port, say): it answers with
 * its verdict and goes on waiting for the ranks it lacks. A rank that starts
 * at another step than rank 0 stops both: their restored states disagree.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <netdb.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "train.h"

#define COMM_HELLO_MAGIC 0x316f6c6c65687470ull   /* "pthello1" */
#define COMM_WELCOME_MAGIC 0x31636c6577687470ull /* "pthwelc1" */
#define COMM_STEP_MAGIC 0x3170657473687470ull    /* "pthstep1" */
#define HELLO_BYTES 40
#define STEP_HEADER_BYTES 32
#define HANDSHAKE_MAX_MS 5000 /* one connection's HELLO, at most */
#define BACKOFF_FIRST_MS 20
#define BACKOFF_MAX_MS 500

enum { WELCOME_OK = 0, WELCOME_CONFIG = 1, WELCOME_RANK = 2, WELCOME_STEP = 3 };

/* The fields of a HELLO or a WELCOME (status is 0 in a HELLO's place of the
 * rank, see the table above). */
struct hello {
  uint64_t magic;
  uint32_t world;
  uint32_t rank_or_status;
  uint64_t config_hash;
  uint64_t start_step;
  uint64_t n_floats;
};

static int64_t now_ms(void)
{
  struct timespec ts;
  clock_gettime(CLOCK_MONOTONIC, &ts);
  return (int64_t)ts.tv_sec * 1000 + ts.tv_nsec / 1000000;
}

static void sleep_ms(int64_t ms)
{
  struct timespec ts = {.tv_sec = ms / 1000, .tv_nsec = (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* Waits until fd is ready for `events` or the deadline passes: 0, -ETIMEDOUT,
 * or a negated errno value. */
static int wait_fd(int fd, short events, int64_t deadline)
{
  for (;;) {
    int64_t left = deadline - now_ms();
    if (left <= 0)
      return -ETIMEDOUT;
    struct pollfd p = {.fd = fd, .events = events};
    int n = poll(&p, 1, left > 60000 ? 60000 : (int)left);
    if (n > 0)
      return 0; /* ready, or an error/hang-up that the next call reports */
    if (n < 0 && errno != EINTR)
      return -errno;
  }
}

/* Sends all of buf before the deadline: 0, -ETIMEDOUT, -EPIPE, -ECONNRESET... */
static int send_all(int fd, const void *buf, size_t len, int64_t deadline)
{
  const char *p = buf;
  while (len > 0) {
    ssize_t n = send(fd, p, len, MSG_NOSIGNAL | MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n < 0 && errno == EINTR)
      continue;
    if (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    int rc = wait_fd(fd, POLLOUT, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

/* Receives exactly len bytes before the deadline: 0, -ETIMEDOUT, -ECONNRESET,
 * or -EPIPE when the peer closed the connection. */
static int recv_all(int fd, void *buf, size_t len, int64_t deadline)
{
  char *p = buf;
  while (len > 0) {
    ssize_t n = recv(fd, p, len, MSG_DONTWAIT);
    if (n > 0) {
      p += n;
      len -= (size_t)n;
      continue;
    }
    if (n == 0)
      return -EPIPE;
    if (errno == EINTR)
      continue;
    if (errno != EAGAIN && errno != EWOULDBLOCK)
      return -errno;
    int rc = wait_fd(fd, POLLIN, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

static void put_u32(unsigned char *p, uint32_t v)
{
  memcpy(p, &v, sizeof(v));
}

static void put_u64(unsigned char *p, uint64_t v)
{
  memcpy(p, &v, sizeof(v));
}

static uint32_t get_u32(const unsigned char *p)
{
  uint32_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

static uint64_t get_u64(const unsigned char *p)
{
  uint64_t v;
  memcpy(&v, p, sizeof(v));
  return v;
}

static void hello_encode(unsigned char *b, const struct hello *h)
{
  put_u64(b, h->magic);
  put_u32(b + 8, h->world);
  put_u32(b + 12, h->rank_or_status);
  put_u64(b + 16, h->config_hash);
  put_u64(b + 24, h->start_step);
  put_u64(b + 32, h->n_floats);
}

static void hello_decode(const unsigned char *b, struct hello *h)
{
  h->magic = get_u64(b);
  h->world = get_u32(b + 8);
  h->rank_or_status = get_u32(b + 12);
  h->config_hash = get_u64(b + 16);
  h->start_step = get_u64(b + 24);
  h->n_floats = get_u64(b + 32);
}

static int hello_send(int fd, const struct hello *h, int64_t deadline)
{
  unsigned char b[HELLO_BYTES];
  hello_encode(b, h);
  return send_all(fd, b, sizeof(b), deadline);
}

static int hello_recv(int fd, struct hello *h, int64_t deadline)
{
  unsigned char b[HELLO_BYTES];
  int rc = recv_all(fd, b, sizeof(b), deadline);
  if (rc == 0)
    hello_decode(b, h);
  return rc;
}

/* The sentence for a failed send/recv with a peer. */
static const char *io_error_text(int err)
{
  switch (err) {
  case -EPIPE:
  case -ECONNRESET:
    return "closed the connection (exited or was killed)";
  case -ETIMEDOUT:
    return "did not answer within the deadline (hung or stopped)";
  default:
    return pt_strerror(err);
  }
}

static int socket_tune(int fd)
{
  int one = 1;
  if (setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one)) != 0)
    return -errno;
  return 0;
}

/* OUT: *res, the address of MASTER_ADDR:port (freeaddrinfo by the caller). */
static int address_resolve(const struct train_comm_config *cfg, struct addrinfo **res)
{
  struct addrinfo hints = {.ai_family = AF_UNSPEC, .ai_socktype = SOCK_STREAM,
                           .ai_flags = AI_NUMERICSERV};
  char port[16];
  snprintf(port, sizeof(port), "%u", cfg->port);
  int rc = getaddrinfo(cfg->addr, port, &hints, res);
  if (rc != 0) {
    fprintf(stderr, "pt-train: cannot resolve MASTER_ADDR '%s': %s\n", cfg->addr,
            gai_strerror(rc));
    return PT_ECONFIG;
  }
  return 0;
}

/* Says how two ranks' HELLO/WELCOME values differ: "world size 2 vs 3",
 * else "model size ...", else "flags or job". */
static void difference_describe(char *buf, size_t len, const struct hello *theirs,
                                const struct train_comm_config *mine)
{
  if (theirs->world != (uint32_t)mine->world)
    snprintf(buf, len, "world size %" PRIu32 " there, %d here", theirs->world,
             mine->world);
  else if (theirs->n_floats != mine->n_floats)
    snprintf(buf, len, "%" PRIu64 " parameters there, %zu here", theirs->n_floats,
             mine->n_floats);
  else
    snprintf(buf, len, "the flags that decide training, --steps or PT_JOB differ: "
             "config %016" PRIx64 " there, %016" PRIx64 " here",
             theirs->config_hash, mine->config_hash);
}

/* Sleeps the backoff, never past the deadline; doubles it for next time. */
static void backoff_sleep(int64_t *backoff, int64_t deadline)
{
  int64_t left = deadline - now_ms();
  sleep_ms(*backoff < left ? *backoff : left > 0 ? left : 0);
  *backoff = *backoff * 2 > BACKOFF_MAX_MS ? BACKOFF_MAX_MS : *backoff * 2;
}

/* ---- rank 0 --------------------------------------------------------------- */

/* Binds and listens on the master address, retrying while the port is still
 * held (by the previous incarnation of this job, say) until the deadline.
 * OUT: *out_fd, non-blocking. */
static int listener_open(const struct train_comm_config *cfg, int64_t deadline, int *out_fd)
{
  struct addrinfo *ai;
  int rc = address_resolve(cfg, &ai);
  if (rc != 0)
    return rc;

  int64_t backoff = BACKOFF_FIRST_MS;
  bool said = false;
  for (;;) {
    int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                    ai->ai_protocol);
    if (fd < 0) {
      rc = -errno;
      fprintf(stderr, "pt-train: cannot create the listening socket: %s\n", pt_strerror(rc));
      break;
    }
    int one = 1;
    if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) == 0 &&
        bind(fd, ai->ai_addr, ai->ai_addrlen) == 0 && listen(fd, cfg->world + 8) == 0) {
      *out_fd = fd;
      rc = 0;
      break;
    }
    rc = -errno;
    close(fd);
    if (rc != -EADDRINUSE || now_ms() >= deadline) {
      fprintf(stderr, "pt-train: rank 0 cannot listen on %s:%u: %s%s\n", cfg->addr,
              cfg->port, pt_strerror(rc),
              rc == -EADDRINUSE ? " (another process holds the port; choose another "
                                  "with --master-port or MASTER_PORT)"
                                : "");
      break;
    }
    if (!said) {
      fprintf(stderr, "pt-train: port %u is in use; rank 0 retries until the deadline\n",
              cfg->port);
      said = true;
    }
    backoff_sleep(&backoff, deadline);
  }
  freeaddrinfo(ai);
  return rc;
}

/* Reads one newcomer's HELLO and answers it. Returns 0 with the connection
 * kept in c->fds (accepted) or closed (refused: rank 0 goes on waiting), or
 * a negative code when the job cannot go on (the newcomer starts at another
 * step). *refusals counts refused ranks, for the message if one never
 * arrives. */
static int newcomer_greet(struct train_comm *c, const struct train_comm_config *cfg,
                          int fd, int64_t deadline, unsigned *refusals)
{
  struct hello h;
  int64_t hs_deadline = now_ms() + HANDSHAKE_MAX_MS;
  int rc = hello_recv(fd, &h, hs_deadline < deadline ? hs_deadline : deadline);
  if (rc != 0) {
    fprintf(stderr, "pt-train: rank 0 dropped a connection on port %u that sent no "
                    "greeting: %s\n", cfg->port, pt_strerror(rc));
    close(fd);
    return 0;
  }
  if (h.magic != COMM_HELLO_MAGIC) {
    fprintf(stderr, "pt-train: rank 0 dropped a connection on port %u that is not a "
                    "pt-train rank\n", cfg->port);
    close(fd);
    return 0;
  }

  struct hello w = {.magic = COMM_WELCOME_MAGIC, .world = (uint32_t)cfg->world,
                    .rank_or_status = WELCOME_OK, .config_hash = cfg->config_hash,
                    .start_step = cfg->start_step, .n_floats = cfg->n_floats};
  uint32_t r = h.rank_or_status;
  if (h.world != (uint32_t)cfg->world || h.config_hash != cfg->config_hash ||
      h.n_floats != cfg->n_floats) {
    char diff[160];
    difference_describe(diff, sizeof(diff), &h, cfg);
    fprintf(stderr, "pt-train: rank 0 refused rank %" PRIu32 ": it runs another "
                    "configuration (%s)\n", r, diff);
    w.rank_or_status = WELCOME_CONFIG;
  } else if (r == 0 || r >= (uint32_t)cfg->world || c->fds[r] >= 0) {
    fprintf(stderr, "pt-train: rank 0 refused rank %" PRIu32 ": %s\n", r,
            r != 0 && r < (uint32_t)cfg->world ? "that rank has joined already"
                                               : "no such rank in this job");
    w.rank_or_status = WELCOME_RANK;
  } else if (h.start_step != cfg->start_step) {
    fprintf(stderr,
            "pt-train: rank %" PRIu32 " starts at step %" PRIu64 " but rank 0 at step "
            "%" PRIu64 ": the ranks restored different steps\n",
            r, h.start_step, cfg->start_step);
    w.rank_or_status = WELCOME_STEP;
  }

  rc = hello_send(fd, &w, deadline);
  if (w.rank_or_status == WELCOME_STEP) {
    close(fd);
    return PT_ESTATE;
  }
  if (rc != 0 || w.rank_or_status != WELCOME_OK) {
    if (rc != 0)
      fprintf(stderr, "pt-train: rank %" PRIu32 " %s during the handshake\n", r,
              io_error_text(rc));
    (*refusals)++;
    close(fd);
    return 0;
  }
  rc = socket_tune(fd);
  if (rc != 0) {
    close(fd);
    return rc; /* reported by the caller */
  }
  c->fds[r] = fd;
  return 0;
}

/* Accepts ranks 1..W-1 until all are in or the deadline passes. */
static int ranks_accept(struct train_comm *c, const struct train_comm_config *cfg,
                        int64_t deadline)
{
  int lfd = -1;
  int rc = listener_open(cfg, deadline, &lfd);
  if (rc != 0)
    return rc;

  int missing = cfg->world - 1;
  unsigned refusals = 0;
  while (missing > 0) {
    rc = wait_fd(lfd, POLLIN, deadline);
    if (rc != 0)
      break;
    int fd = accept4(lfd, NULL, NULL, SOCK_CLOEXEC); /* a blocking socket */
    if (fd < 0) {
      if (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR ||
          errno == ECONNABORTED)
        continue;
      rc = -errno;
      break;
    }
    rc = newcomer_greet(c, cfg, fd, deadline, &refusals);
    if (rc != 0)
      break;
    missing = 0;
    for (int r = 1; r < cfg->world; r++)
      missing += c->fds[r] < 0;
  }
  close(lfd); /* all in: a later incarnation of the job may bind the port */

  if (rc == -ETIMEDOUT) {
    char list[256];
    size_t n = 0;
    list[0] = '\0';
    for (int r = 1; r < cfg->world && n + 16 < sizeof(list); r++)
      if (c->fds[r] < 0)
        n += (size_t)snprintf(list + n, sizeof(list) - n, "%s%d", n ? ", " : "", r);
    fprintf(stderr,
            "pt-train: rank 0: rank%s %s did not join within %u s on %s:%u%s\n",
            missing > 1 ? "s" : "", list, cfg->timeout_s, cfg->addr, cfg->port,
            refusals ? " (connections were refused, see above)" : "");
  } else if (rc != 0 && rc != PT_ESTATE) {
    fprintf(stderr, "pt-train: rank 0 cannot accept ranks: %s\n", pt_strerror(rc));
  }
  return rc;
}

/* ---- ranks 1..W-1 --------------------------------------------------------- */

/* May a later attempt succeed after this error (rank 0 not listening yet,
 * or the previous one going away)? */
static bool is_retryable(int err)
{
  return err == -ECONNREFUSED || err == -ECONNRESET || err == -EPIPE ||
         err == -ETIMEDOUT || err == -EHOSTUNREACH || err == -ENETUNREACH ||
         err == -ECONNABORTED || err == -EAGAIN || err == -EADDRNOTAVAIL;
}

/* One connection attempt, bounded by the deadline. OUT: *out_fd, blocking.
 * Returns 0 or a negated errno value. */
static int connect_once(const struct addrinfo *ai, int64_t deadline, int *out_fd)
{
  int fd = socket(ai->ai_family, ai->ai_socktype | SOCK_NONBLOCK | SOCK_CLOEXEC,
                  ai->ai_protocol);
  if (fd < 0)
    return -errno;
  int rc = 0;
  if (connect(fd, ai->ai_addr, ai->ai_addrlen) != 0) {
    rc = -errno;
    if (rc == -EINPROGRESS) {
      rc = wait_fd(fd, POLLOUT, deadline);
      int err = 0;
      socklen_t len = sizeof(err);
      if (rc == 0 && getsockopt(fd, SOL_SOCKET, SO_ERROR, &err, &len) != 0)
        err = errno;
      if (rc == 0)
        rc = -err;
    }
  }
  /* On loopback a connect to a port nobody listens on can meet itself when
   * the kernel picks that very port as the local one: not rank 0. */
  if (rc == 0) {
    struct sockaddr_storage self, peer;
    socklen_t ls = sizeof(self), lp = sizeof(peer);
    if (getsockname(fd, (struct sockaddr *)&self, &ls) == 0 &&
        getpeername(fd, (struct sockaddr *)&peer, &lp) == 0 && ls == lp &&
        memcmp(&self, &peer, ls) == 0)
      rc = -ECONNREFUSED;
  }
  if (rc == 0) {
    int flags = fcntl(fd, F_GETFL);
    if (flags < 0 || fcntl(fd, F_SETFL, flags & ~O_NONBLOCK) != 0)
      rc = -errno;
  }
  if (rc == 0)
    rc = socket_tune(fd);
  if (rc != 0) {
    close(fd);
    return rc;
  }
  *out_fd = fd;
  return 0;
}

/* Connects to rank 0 and introduces this rank, retrying until the deadline. */
static int master_join(struct train_comm *c, const struct train_comm_config *cfg,
                       int64_t deadline)
{
  struct addrinfo *ai;
  int rc = address_resolve(cfg, &ai);
  if (rc != 0)
    return rc;

  struct hello h = {.magic = COMM_HELLO_MAGIC, .world = (uint32_t)cfg->world,
                    .rank_or_status = (uint32_t)cfg->rank,
                    .config_hash = cfg->config_hash, .start_step = cfg->start_step,
                    .n_floats = cfg->n_floats};
  struct hello w;
  int64_t backoff = BACKOFF_FIRST_MS;
  int fd = -1, last = 0;
  for (;;) {
    rc = connect_once(ai, deadline, &fd);
    if (rc == 0) {
      rc = hello_send(fd, &h, deadline);
      if (rc == 0)
        rc = hello_recv(fd, &w, deadline);
      if (rc == 0)
        break;
      close(fd);
      fd = -1;
    }
    /* Rank 0 not there yet, or the previous one going away: try again. */
    if (rc != -ETIMEDOUT || last == 0)
      last = rc; /* the cause, rather than the deadline that ended the wait */
    if (!is_retryable(rc) || now_ms() >= deadline)
      break;
    backoff_sleep(&backoff, deadline);
  }
  freeaddrinfo(ai);
  if (rc != 0) {
    fprintf(stderr,
            "pt-train: rank %d cannot join rank 0 at %s:%u within %u s: %s (is rank 0 "
            "running, with the same MASTER_ADDR and MASTER_PORT?)\n",
            cfg->rank, cfg->addr, cfg->port, cfg->timeout_s, pt_strerror(last));
    return rc;
  }

  if (w.magic != COMM_WELCOME_MAGIC) {
    fprintf(stderr, "pt-train: rank %d: the peer at %s:%u is not pt-train's rank 0\n",
            cfg->rank, cfg->addr, cfg->port);
    rc = PT_EPROTO;
  } else if (w.rank_or_status == WELCOME_CONFIG) {
    char diff[160];
    difference_describe(diff, sizeof(diff), &w, cfg);
    fprintf(stderr,
            "pt-train: rank %d: rank 0 at %s:%u runs another configuration (%s); the "
            "ranks must run with the same flags and environment, and no other job may "
            "use this port\n",
            cfg->rank, cfg->addr, cfg->port, diff);
    rc = PT_ECONFIG;
  } else if (w.rank_or_status == WELCOME_RANK) {
    fprintf(stderr, "pt-train: rank %d: rank 0 refused this rank: it has joined already, "
                    "or the job has no such rank\n", cfg->rank);
    rc = PT_ECONFIG;
  } else if (w.rank_or_status == WELCOME_STEP) {
    fprintf(stderr,
            "pt-train: rank %d starts at step %" PRIu64 " but rank 0 at step %" PRIu64
            ": the ranks restored different steps\n",
            cfg->rank, cfg->start_step, w.start_step);
    rc = PT_ESTATE;
  } else if (w.rank_or_status != WELCOME_OK) {
    fprintf(stderr, "pt-train: rank %d: rank 0 answered with unknown status %" PRIu32 "\n",
            cfg->rank, w.rank_or_status);
    rc = PT_EPROTO;
  }
  if (rc != 0) {
    close(fd);
    return rc;
  }
  c->fds[0] = fd;
  return 0;
}

/* ---- the interface -------------------------------------------------------- */

int train_comm_open(struct train_comm *c, const struct train_comm_config *cfg)
{
  memset(c, 0, sizeof(*c));
  c->rank = cfg->rank;
  c->world = cfg->world;
  c->n_floats = cfg->n_floats;
  c->timeout_s = cfg->timeout_s;
  if (cfg->world <= 1)
    return 0;

  c->fds = malloc(sizeof(*c->fds) * (size_t)cfg->world);
  if (c->fds == NULL)
    return -ENOMEM;
  for (int r = 0; r < cfg->world; r++)
    c->fds[r] = -1;
  if (cfg->rank == 0) {
    c->scratch = malloc(cfg->n_floats ? sizeof(float) * cfg->n_floats : 1);
    if (c->scratch == NULL) {
      train_comm_close(c);
      return -ENOMEM;
    }
  }

  int64_t deadline = now_ms() + (int64_t)cfg->timeout_s * 1000;
  int rc = cfg->rank == 0 ? ranks_accept(c, cfg, deadline) : master_join(c, cfg, deadline);
  if (rc != 0)
    train_comm_close(c);
  return rc;
}

static void step_header_encode(unsigned char *b, uint64_t step, uint64_t n, double loss)
{
  put_u64(b, COMM_STEP_MAGIC);
  put_u64(b + 8, step);
  put_u64(b + 16, n);
  memcpy(b + 24, &loss, sizeof(loss));
}

/* Receives one STEP message of step `step` from rank `peer` into buf.
 * Returns 0 or a negative code after one line on stderr. */
static int step_recv(const struct train_comm *c, int peer, uint64_t step, float *buf,
                     double *loss, int64_t deadline)
{
  unsigned char b[STEP_HEADER_BYTES];
  int fd = c->fds[peer];
  int rc = recv_all(fd, b, sizeof(b), deadline);
  if (rc == 0) {
    uint64_t got = get_u64(b + 8), n = get_u64(b + 16);
    if (get_u64(b) != COMM_STEP_MAGIC || n != c->n_floats) {
      fprintf(stderr,
              "pt-train: rank %d: all-reduce of step %" PRIu64 ": rank %d sent a "
              "malformed message\n",
              c->rank, step, peer);
      return PT_EPROTO;
    }
    if (got != step) {
      fprintf(stderr,
              "pt-train: rank %d: all-reduce of step %" PRIu64 ": rank %d is at step "
              "%" PRIu64 "; the ranks disagree on the step\n",
              c->rank, step, peer, got);
      return PT_ESTATE;
    }
    memcpy(loss, b + 24, sizeof(*loss));
    rc = recv_all(fd, buf, sizeof(float) * c->n_floats, deadline);
  }
  if (rc != 0) {
    if (rc == -ETIMEDOUT && c->rank != 0)
      fprintf(stderr,
              "pt-train: rank %d: all-reduce of step %" PRIu64 ": no result from rank 0 "
              "within %u s (a rank hung or stopped)\n",
              c->rank, step, c->timeout_s);
    else if (rc == -ETIMEDOUT)
      fprintf(stderr,
              "pt-train: rank %d: all-reduce of step %" PRIu64 ": rank %d sent nothing "
              "within %u s (hung or stopped)\n",
              c->rank, step, peer, c->timeout_s);
    else
      fprintf(stderr, "pt-train: rank %d: all-reduce of step %" PRIu64 ": rank %d %s\n",
              c->rank, step, peer, io_error_text(rc));
  }
  return rc;
}

static int step_send(const struct train_comm *c, int peer, uint64_t step,
                     const float *buf, double loss, int64_t deadline)
{
  unsigned char b[STEP_HEADER_BYTES];
  step_header_encode(b, step, c->n_floats, loss);
  int rc = send_all(c->fds[peer], b, sizeof(b), deadline);
  if (rc == 0)
    rc = send_all(c->fds[peer], buf, sizeof(float) * c->n_floats, deadline);
  if (rc != 0)
    fprintf(stderr, "pt-train: rank %d: all-reduce of step %" PRIu64 ": rank %d %s\n",
            c->rank, step, peer,
            rc == -ETIMEDOUT ? "took nothing within the deadline (hung or stopped)"
                             : io_error_text(rc));
  return rc;
}

int train_comm_allreduce_mean(struct train_comm *c, uint64_t step, float *buf,
                              double *loss)
{
  if (c->world <= 1)
    return 0;
  int64_t deadline = now_ms() + (int64_t)c->timeout_s * 1000;
  int rc;

  if (c->rank != 0) {
    rc = step_send(c, 0, step, buf, *loss, deadline);
    if (rc == 0)
      rc = step_recv(c, 0, step, buf, loss, deadline);
    return rc;
  }

  /* Rank 0: buf holds its own gradient; add the others' in rank order. */
  double loss_sum = *loss;
  for (int r = 1; r < c->world; r++) {
    double lr;
    rc = step_recv(c, r, step, c->scratch, &lr, deadline);
    if (rc != 0)
      return rc;
    for (size_t i = 0; i < c->n_floats; i++)
      buf[i] += c->scratch[i];
    loss_sum += lr;
  }
  float wf = (float)c->world;
  for (size_t i = 0; i < c->n_floats; i++)
    buf[i] /= wf;
  *loss = loss_sum / (double)c->world;
  for (int r = 1; r < c->world; r++) {
    rc = step_send(c, r, step, buf, *loss, deadline);
    if (rc != 0)
      return rc;
  }
  return 0;
}

void train_comm_close(struct train_comm *c)
{
  if (c->fds != NULL)
    for (int r = 0; r < c->world; r++)
      if (c->fds[r] >= 0)
        close(c->fds[r]);
  free(c->fds);
  free(c->scratch);
  c->fds = NULL;
  c->scratch = NULL;
}
