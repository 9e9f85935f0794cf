/*
 * bench_floor.c — the kernel's floor under `ptbench --cluster`'s
 * controller figure (ctl_N_floor_cpu_pct): what the controller's traffic
 * costs with no pt in it.
 *
 * A forked child of ptbench (the floor server: plain epoll, level-triggered,
 * no libuv, no protobuf, no authentication, no journal) accepts N loopback
 * TCP connections with the controller's socket options (TCP_NODELAY,
 * keepalive, TCP_USER_TIMEOUT) and reads them as the controller does: one
 * read(2) of up to 64 KiB per readable connection (a second one only when
 * the first filled the buffer), frame headers walked to find the frames'
 * ends. When the connections have sent N frames of the report's type (one
 * each, as the simulated nodes do per step), it writes the answer frame to
 * every connection, one write(2) each, from inside the same loop turn: the
 * controller's broadcast. Nothing else: no reply to heartbeats (the
 * controller sends none either).
 *
 * The clients, in ptbench's own loop on the calling thread, are the
 * simulated nodes' traffic without pt: the same frames, byte for byte (the
 * caller packs them as the simulated nodes' STEP_SEALED, HEARTBEAT and the
 * controller's JOB_COMMIT are packed), a heartbeat from each connection
 * every heartbeat_ms from its own timer with a random phase, and a step
 * every step_ms (or when the last answer came, if later): the report from
 * every connection in one go. The floor is the server's utime + stime over
 * the steps per wall second, measured as the controller's is.
 *
 * On loopback the sender's write(2) also runs the receiver's TCP receive
 * path (softirq in the sender's context): the server's figure holds the
 * clients' receive of its answers, as the controller's holds the simulated
 * nodes' receive of its commits; the clients' sends carry the server's
 * receive likewise. Every wait has a deadline; the server is on the
 * cleanup list.
 */
#include <errno.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/epoll.h>
#include <sys/socket.h>
#include <unistd.h>

#include <arpa/inet.h>
#include <sodium.h>
#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/bench/bench.h"

#define FLOOR_READ 65536u
#define FLOOR_EVENTS 1024
#define FLOOR_OUT_MAX 4096u
#define FLOOR_CONNECTING 32     /* connects in flight at once */
#define FLOOR_CONNECT_MS 30000u /* every connection up */
#define FLOOR_STEP_MS 10000u    /* a step's answers all in */
#define FLOOR_STOP_GRACE_MS 3000

/* ---- the server (the forked child) ---- */

struct srv_conn {
  int fd;
  uint8_t hdr[RPC_HDR_BYTES];
  size_t hdr_have;
  uint64_t body_left;
  uint8_t out[FLOOR_OUT_MAX]; /* what the kernel did not take at once */
  size_t out_have;
};

struct srv {
  int lfd;
  uint32_t n;
  uint32_t up_type;
  const uint8_t *down;
  size_t down_len;
};

static void srv_send(int ep, struct srv_conn *c, uint32_t i, const uint8_t *p, size_t len)
{
  if (c->fd < 0)
    return;
  if (c->out_have == 0) {
    ssize_t w = write(c->fd, p, len);
    if (w == (ssize_t)len)
      return;
    if (w < 0 && errno != EAGAIN && errno != EWOULDBLOCK)
      return; /* the peer is gone: its read side says so */
    size_t done = w > 0 ? (size_t)w : 0;
    p += done;
    len -= done;
    struct epoll_event ev = { .events = EPOLLIN | EPOLLOUT, .data.u32 = i + 1 };
    (void)epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
  if (c->out_have + len > sizeof(c->out))
    _exit(3); /* a client that stopped reading: the run fails on it */
  memcpy(c->out + c->out_have, p, len);
  c->out_have += len;
}

static void srv_flush(int ep, struct srv_conn *c, uint32_t i)
{
  ssize_t w = write(c->fd, c->out, c->out_have);
  if (w <= 0)
    return;
  memmove(c->out, c->out + w, c->out_have - (size_t)w);
  c->out_have -= (size_t)w;
  if (c->out_have == 0) {
    struct epoll_event ev = { .events = EPOLLIN, .data.u32 = i + 1 };
    (void)epoll_ctl(ep, EPOLL_CTL_MOD, c->fd, &ev);
  }
}

static void srv_sockopts(int fd)
{
  int one = 1, idle = (int)RPC_TCP_KEEPALIVE_S;
  unsigned int ut = RPC_TCP_USER_TIMEOUT_MS;
  (void)setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
  (void)setsockopt(fd, SOL_SOCKET, SO_KEEPALIVE, &one, sizeof(one));
  (void)setsockopt(fd, IPPROTO_TCP, TCP_KEEPIDLE, &idle, sizeof(idle));
  (void)setsockopt(fd, IPPROTO_TCP, TCP_USER_TIMEOUT, &ut, sizeof(ut));
}

/* Walks n bytes of c's stream; returns the frames of type up_type that
 * ended in them. */
static uint32_t srv_parse(struct srv_conn *c, const uint8_t *p, size_t n, uint32_t up_type)
{
  uint32_t ups = 0;
  while (n > 0) {
    if (c->body_left > 0) {
      size_t k = n < c->body_left ? n : (size_t)c->body_left;
      p += k;
      n -= k;
      c->body_left -= k;
      continue;
    }
    size_t k = RPC_HDR_BYTES - c->hdr_have;
    if (k > n)
      k = n;
    memcpy(c->hdr + c->hdr_have, p, k);
    c->hdr_have += k;
    p += k;
    n -= k;
    if (c->hdr_have < RPC_HDR_BYTES)
      break;
    c->hdr_have = 0;
    uint32_t type = (uint32_t)c->hdr[6] | (uint32_t)c->hdr[7] << 8;
    c->body_left = (uint64_t)c->hdr[8] | (uint64_t)c->hdr[9] << 8 |
                   (uint64_t)c->hdr[10] << 16 | (uint64_t)c->hdr[11] << 24;
    ups += type == up_type; /* counted at its header: its body follows */
  }
  return ups;
}

static void srv_main(void *arg)
{
  const struct srv *s = arg;
  static uint8_t rbuf[FLOOR_READ];
  struct epoll_event evs[FLOOR_EVENTS];
  struct srv_conn *cs = calloc(s->n, sizeof(*cs));
  uint32_t accepted = 0, open = 0, ups = 0;
  int ep = epoll_create1(EPOLL_CLOEXEC);

  if (cs == NULL || ep < 0)
    _exit(2);
  struct epoll_event lev = { .events = EPOLLIN, .data.u32 = 0 };
  if (epoll_ctl(ep, EPOLL_CTL_ADD, s->lfd, &lev) != 0)
    _exit(2);
  for (;;) {
    int nev = epoll_wait(ep, evs, FLOOR_EVENTS, -1);
    if (nev < 0) {
      if (errno == EINTR)
        continue;
      _exit(2);
    }
    for (int e = 0; e < nev; e++) {
      uint32_t id = evs[e].data.u32;
      if (id == 0) {
        for (;;) {
          int fd = accept4(s->lfd, NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC);
          if (fd < 0)
            break;
          if (accepted == s->n) {
            close(fd);
            continue;
          }
          srv_sockopts(fd);
          cs[accepted].fd = fd;
          struct epoll_event ev = { .events = EPOLLIN, .data.u32 = accepted + 1 };
          if (epoll_ctl(ep, EPOLL_CTL_ADD, fd, &ev) != 0)
            _exit(2);
          accepted++;
          open++;
        }
        continue;
      }
      uint32_t i = id - 1;
      struct srv_conn *c = &cs[i];
      if (c->fd < 0)
        continue;
      if ((evs[e].events & EPOLLOUT) && c->out_have > 0)
        srv_flush(ep, c, i);
      if (!(evs[e].events & (EPOLLIN | EPOLLHUP | EPOLLERR)))
        continue;
      for (int k = 0; k < 2; k++) {
        ssize_t r = read(c->fd, rbuf, sizeof(rbuf));
        if (r < 0 && (errno == EAGAIN || errno == EWOULDBLOCK || errno == EINTR))
          break;
        if (r <= 0) {
          close(c->fd);
          c->fd = -1;
          if (--open == 0 && accepted == s->n)
            _exit(0); /* every client is done */
          break;
        }
        ups += srv_parse(c, rbuf, (size_t)r, s->up_type);
        if (ups >= s->n) {
          /* Every connection reported: the answer to each. */
          ups -= s->n;
          for (uint32_t j = 0; j < accepted; j++)
            srv_send(ep, &cs[j], j, s->down, s->down_len);
        }
        if ((size_t)r < sizeof(rbuf))
          break;
      }
    }
  }
}

/* ---- the clients (ptbench's loop) ---- */

struct floor_run;

struct cli {
  struct floor_run *f;
  uv_tcp_t t;
  uv_connect_t creq;
  uv_timer_t hb;
  bool open, hb_init;
  uint64_t got;   /* answer bytes received */
  uint64_t steps; /* answers complete */
  uint8_t rbuf[4096];
};

struct floor_run {
  uv_loop_t loop;
  uv_timer_t guard, step_timer;
  const struct bench_floor_spec *sp;
  struct cli *cl;
  int port;
  uint32_t dialled, connected, inflight;
  uint64_t step;
  uint32_t answered; /* clients with the answer of step */
  double t_step, cpu0, cpu1, wall0, wall1;
  uint64_t deadline;
  pid_t srv;
  bool done;
  int rc;
  char err[BENCH_ERRLEN];
};

static void floor_end(struct floor_run *f, int rc, const char *why)
{
  if (f->done)
    return;
  f->done = true;
  if (rc != 0 && f->rc == 0) {
    f->rc = rc;
    snprintf(f->err, sizeof(f->err), "%s", why);
  }
  uv_stop(&f->loop);
}

static void cli_write(struct cli *c, const uint8_t *p, size_t len)
{
  uv_buf_t b = uv_buf_init((char *)p, (unsigned)len);
  int n = uv_try_write((uv_stream_t *)&c->t, &b, 1);
  if (n != (int)len)
    floor_end(c->f, -EIO, "a client's frame was not taken by the kernel at once");
}

static void cli_hb(uv_timer_t *t)
{
  struct cli *c = t->data;
  if (c->open && !c->f->done)
    cli_write(c, c->f->sp->hb, c->f->sp->hb_len);
}

static void floor_step(uv_timer_t *t)
{
  struct floor_run *f = t->data;
  const struct bench_floor_spec *sp = f->sp;
  if (f->done)
    return;
  if ((int)f->step >= sp->steps) {
    f->cpu1 = bench_proc_cpu_s(f->srv);
    f->wall1 = bench_now();
    floor_end(f, 0, NULL);
    return;
  }
  if (f->step == 0) {
    f->cpu0 = bench_proc_cpu_s(f->srv);
    f->wall0 = bench_now();
  }
  f->step++;
  f->answered = 0;
  f->t_step = bench_now();
  f->deadline = bench_now_ms() + FLOOR_STEP_MS;
  for (uint32_t i = 0; i < sp->nodes && !f->done; i++)
    cli_write(&f->cl[i], sp->up, sp->up_len);
}

static void cli_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf)
{
  struct cli *c = h->data;
  (void)want;
  *buf = uv_buf_init((char *)c->rbuf, sizeof(c->rbuf));
}

static void cli_read(uv_stream_t *s, ssize_t n, const uv_buf_t *buf)
{
  struct cli *c = s->data;
  struct floor_run *f = c->f;
  (void)buf;
  if (n == 0 || f->done)
    return;
  if (n < 0) {
    floor_end(f, -ECONNRESET, "the floor server closed a connection");
    return;
  }
  c->got += (uint64_t)n;
  uint64_t whole = c->got / f->sp->down_len;
  if (whole > c->steps) {
    c->steps = whole;
    if (whole >= f->step && ++f->answered == f->sp->nodes) {
      double next = f->t_step + f->sp->step_ms / 1e3 - bench_now();
      uv_timer_start(&f->step_timer, floor_step, next > 0 ? (uint64_t)(next * 1e3) : 0, 0);
    }
  }
}

static void floor_dial_more(struct floor_run *f);

static void cli_connected(uv_connect_t *req, int status)
{
  struct cli *c = req->data;
  struct floor_run *f = c->f;
  f->inflight--;
  if (status != 0) {
    char why[128];
    snprintf(why, sizeof(why), "cannot connect to the floor server: %s", uv_strerror(status));
    floor_end(f, status, why);
    return;
  }
  uv_tcp_nodelay(&c->t, 1);
  uv_tcp_keepalive(&c->t, 1, RPC_TCP_KEEPALIVE_S);
  uv_read_start((uv_stream_t *)&c->t, cli_alloc, cli_read);
  uv_timer_init(&f->loop, &c->hb);
  c->hb.data = c;
  c->hb_init = true;
  uint32_t hb = f->sp->heartbeat_ms;
  uv_timer_start(&c->hb, cli_hb, randombytes_uniform(hb) + 1, hb);
  if (++f->connected == f->sp->nodes)
    uv_timer_start(&f->step_timer, floor_step, 0, 0);
  else
    floor_dial_more(f);
}

static void floor_dial_more(struct floor_run *f)
{
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", f->port, &sa);
  while (!f->done && f->dialled < f->sp->nodes && f->inflight < FLOOR_CONNECTING) {
    struct cli *c = &f->cl[f->dialled++];
    c->f = f;
    uv_tcp_init(&f->loop, &c->t);
    c->t.data = c;
    c->open = true;
    c->creq.data = c;
    f->inflight++;
    int rc = uv_tcp_connect(&c->creq, &c->t, (const struct sockaddr *)&sa, cli_connected);
    if (rc != 0) {
      f->inflight--;
      floor_end(f, rc, "cannot connect to the floor server");
    }
  }
}

static void floor_guard(uv_timer_t *t)
{
  struct floor_run *f = t->data;
  char why[160];
  if (f->done || bench_now_ms() < f->deadline)
    return;
  if (f->connected < f->sp->nodes)
    snprintf(why, sizeof(why), "%u of %u connections to the floor server up within %u ms",
             f->connected, f->sp->nodes, FLOOR_CONNECT_MS);
  else
    snprintf(why, sizeof(why), "step %llu of the floor: %u of %u answers within %u ms",
             (unsigned long long)f->step, f->answered, f->sp->nodes, FLOOR_STEP_MS);
  floor_end(f, -ETIMEDOUT, why);
}

/* A listening socket on 127.0.0.1, any port. */
static int floor_listen(int *port, char *errbuf, size_t errlen)
{
  struct sockaddr_in sa = { .sin_family = AF_INET };
  socklen_t sl = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
  sa.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
  if (fd < 0 || bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 || listen(fd, 1024) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
    int e = errno;
    snprintf(errbuf, errlen, "floor: cannot listen on 127.0.0.1: %s", strerror(e));
    if (fd >= 0)
      close(fd);
    return -e;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

int bench_floor_run(const struct bench_floor_spec *sp, struct bench_floor_result *r,
                    char *errbuf, size_t errlen)
{
  struct floor_run *f = calloc(1, sizeof(*f));
  int rc;

  memset(r, 0, sizeof(*r));
  r->cpu_pct = NAN;
  if (f == NULL || (f->cl = calloc(sp->nodes, sizeof(*f->cl))) == NULL) {
    free(f);
    snprintf(errbuf, errlen, "floor: out of memory for %u connections", sp->nodes);
    return -ENOMEM;
  }
  f->sp = sp;
  int lfd = floor_listen(&f->port, errbuf, errlen);
  if (lfd < 0) {
    free(f->cl);
    free(f);
    return lfd;
  }
  struct srv s = { .lfd = lfd, .n = sp->nodes, .down = sp->down, .down_len = sp->down_len };
  s.up_type = (uint32_t)sp->up[6] | (uint32_t)sp->up[7] << 8;
  rc = bench_child_fork(&f->srv, srv_main, &s, errbuf, errlen);
  close(lfd); /* the server's now */
  if (rc < 0) {
    free(f->cl);
    free(f);
    return rc;
  }

  uv_loop_init(&f->loop);
  uv_timer_init(&f->loop, &f->guard);
  uv_timer_init(&f->loop, &f->step_timer);
  f->guard.data = f->step_timer.data = f;
  f->deadline = bench_now_ms() + FLOOR_CONNECT_MS;
  uv_timer_start(&f->guard, floor_guard, 50, 50);
  floor_dial_more(f);
  if (!f->done)
    uv_run(&f->loop, UV_RUN_DEFAULT);

  int st;
  if (f->rc == 0 && !bench_child_is_alive(f->srv, &st)) {
    char w[64];
    snprintf(f->err, sizeof(f->err), "the floor server %s", bench_wait_text(w, sizeof(w), st));
    f->rc = -EIO;
    f->srv = 0;
  }
  if (f->rc == 0) {
    r->window_s = f->wall1 - f->wall0;
    r->cpu_pct = 100.0 * (f->cpu1 - f->cpu0) / r->window_s;
    r->steps = (int)f->step;
    r->measured = isfinite(r->cpu_pct);
  } else {
    snprintf(errbuf, errlen, "floor of %u connections: %s", sp->nodes, f->err);
  }
  rc = f->rc;

  /* Closing every client ends the server (it exits when all are gone). */
  uv_timer_stop(&f->guard);
  uv_timer_stop(&f->step_timer);
  uv_close((uv_handle_t *)&f->guard, NULL);
  uv_close((uv_handle_t *)&f->step_timer, NULL);
  for (uint32_t i = 0; i < f->dialled; i++) {
    struct cli *c = &f->cl[i];
    if (c->hb_init)
      uv_close((uv_handle_t *)&c->hb, NULL);
    if (!uv_is_closing((uv_handle_t *)&c->t))
      uv_close((uv_handle_t *)&c->t, NULL);
  }
  for (int i = 0; i < 1000 && uv_run(&f->loop, UV_RUN_NOWAIT) != 0; i++)
    bench_sleep_ms(1);
  (void)uv_loop_close(&f->loop);
  if (f->srv > 0)
    bench_child_stop(f->srv, FLOOR_STOP_GRACE_MS);
  free(f->cl);
  free(f);
  return rc;
}
