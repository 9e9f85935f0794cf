/*
 * test_rpc_sock.c — blocking frame I/O of rpc/rpc.h over socketpairs, with a
 * thread playing the server: replies matched by request id, events and stale
 * replies skipped, deadlines, EOF, partial writes, EINTR, header errors.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/unit/unit.h"

/* ---- helpers --------------------------------------------------------------- */

struct peer {
  int fd;
  int (*fn)(struct peer *);
  pthread_t th;
  int rc;      /* fn's result */
  int n;       /* how many requests to serve */
  int delay_ms;
  uint64_t ids[64];
  int nids;
};

static void *peer_main(void *arg)
{
  struct peer *p = arg;
  p->rc = p->fn(p);
  return NULL;
}

static void pair(int sv[2])
{
  ck_assert_int_eq(socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv), 0);
}

static void peer_start(struct peer *p, int fd, int (*fn)(struct peer *))
{
  p->fd = fd;
  p->fn = fn;
  ck_assert_int_eq(pthread_create(&p->th, NULL, peer_main, p), 0);
}

static int peer_join(struct peer *p)
{
  pthread_join(p->th, NULL);
  return p->rc;
}

static void sleep_ms(int ms)
{
  struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
  while (nanosleep(&ts, &ts) < 0 && errno == EINTR)
    ;
}

/* Receives one SLOT_ACQUIRE. OUT: *h, *step. */
static int recv_acquire(struct peer *p, struct rpc_hdr *h, uint64_t *step)
{
  ProtobufCMessage *m;
  int rc = rpc_sock_recv(p->fd, 0, rpc_now_ms() + 5000, h, &m);
  if (rc < 0)
    return rc;
  if (h->type != RPC_SLOT_ACQUIRE) {
    protobuf_c_message_free_unpacked(m, NULL);
    return -EBADMSG;
  }
  *step = ((Pt__SlotAcquire *)m)->step;
  protobuf_c_message_free_unpacked(m, NULL);
  if (p->nids < 64)
    p->ids[p->nids++] = h->request_id;
  return 0;
}

static int send_slot_reply(int fd, uint64_t id, uint64_t step)
{
  Pt__SlotReply r = PT__SLOT_REPLY__INIT;
  r.status = 0;
  r.has_slot = true;
  r.slot = (uint32_t)(step % 7);
  r.has_generation = true;
  r.generation = step * 2;
  return rpc_sock_send(fd, RPC_SLOT_REPLY, id, &r.base, rpc_now_ms() + 5000);
}

/* Server: answers each request after an event and a stale reply. */
static int serve_noisy(struct peer *p)
{
  for (int i = 0; i < p->n; i++) {
    struct rpc_hdr h;
    uint64_t step;
    int rc = recv_acquire(p, &h, &step);
    if (rc < 0)
      return rc;
    Pt__Event ev = PT__EVENT__INIT;
    ev.kind = PT__EVENT_KIND__EVENT_SEALED;
    ev.rank = 3;
    if ((rc = rpc_sock_send(p->fd, RPC_EVENT, 0, &ev.base, rpc_now_ms() + 5000)) < 0)
      return rc;
    /* A reply to some other request, with a misleading body. */
    if ((rc = send_slot_reply(p->fd, h.request_id + 1000, step + 1)) < 0)
      return rc;
    if (p->delay_ms > 0)
      sleep_ms(p->delay_ms);
    if ((rc = send_slot_reply(p->fd, h.request_id, step)) < 0)
      return rc;
  }
  return 0;
}

static int call_acquire(int fd, uint64_t step, int timeout_ms, Pt__SlotReply **out)
{
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  ProtobufCMessage *m;
  a.step = step;
  int rc = rpc_sock_call(fd, RPC_SLOT_ACQUIRE, &a.base, RPC_SLOT_REPLY,
                         timeout_ms, &m);
  *out = (Pt__SlotReply *)m;
  return rc;
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(call_gets_its_reply)
{
  int sv[2];
  struct peer p = {.n = 50};

  pair(sv);
  peer_start(&p, sv[1], serve_noisy);
  for (int i = 0; i < p.n; i++) {
    Pt__SlotReply *r;
    uint64_t step = 1000u + 13u * (uint64_t)i;
    ck_assert_int_eq(call_acquire(sv[0], step, 5000, &r), PT_OK);
    ck_assert_int_eq(r->status, 0);
    ck_assert_uint_eq(r->slot, step % 7);
    ck_assert_uint_eq(r->generation, step * 2);
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  ck_assert_int_eq(peer_join(&p), 0);
  /* Request ids: never 0, all distinct. */
  for (int i = 0; i < p.nids; i++) {
    ck_assert_uint_ne(p.ids[i], 0);
    for (int j = 0; j < i; j++)
      ck_assert_uint_ne(p.ids[i], p.ids[j]);
  }
  close(sv[0]);
  close(sv[1]);
}
END_TEST

static int serve_silent(struct peer *p)
{
  struct rpc_hdr h;
  uint64_t step;
  int rc = recv_acquire(p, &h, &step);
  /* Holds the connection open without answering until told to stop. */
  char c;
  ssize_t n = read(p->fd, &c, 1);
  (void)n;
  return rc;
}

START_TEST(call_deadline_expires)
{
  int sv[2];
  struct peer p = {0};
  Pt__SlotReply *r = (Pt__SlotReply *)1;

  pair(sv);
  peer_start(&p, sv[1], serve_silent);
  uint64_t t0 = rpc_now_ms();
  ck_assert_int_eq(call_acquire(sv[0], 5, 150, &r), -ETIMEDOUT);
  uint64_t dt = rpc_now_ms() - t0;
  ck_assert_ptr_null(r);
  ck_assert_uint_ge(dt, 150);
  ck_assert_uint_lt(dt, 3000);
  /* An already-passed deadline fails at once. */
  struct rpc_hdr h;
  ProtobufCMessage *m;
  t0 = rpc_now_ms();
  ck_assert_int_eq(rpc_sock_recv(sv[0], 0, t0, &h, &m), -ETIMEDOUT);
  ck_assert_uint_lt(rpc_now_ms() - t0, 1000);
  shutdown(sv[0], SHUT_WR); /* lets the peer's read end */
  ck_assert_int_eq(peer_join(&p), 0);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

static int serve_then_close(struct peer *p)
{
  struct rpc_hdr h;
  uint64_t step;
  int rc = recv_acquire(p, &h, &step);
  if (rc < 0)
    return rc;
  if (p->n == 1) { /* half a reply frame first */
    Pt__SlotReply r = PT__SLOT_REPLY__INIT;
    uint8_t *f;
    size_t len;
    r.status = 0;
    rc = rpc_frame_pack(&f, &len, RPC_SLOT_REPLY, h.request_id, &r.base);
    if (rc < 0)
      return rc;
    ssize_t n = write(p->fd, f, len - 1);
    free(f);
    if (n != (ssize_t)len - 1)
      return -EIO;
  }
  close(p->fd);
  return 0;
}

START_TEST(call_eof_is_econnreset)
{
  for (int variant = 0; variant < 2; variant++) {
    int sv[2];
    struct peer p = {.n = variant};
    Pt__SlotReply *r;

    pair(sv);
    peer_start(&p, sv[1], serve_then_close);
    ck_assert_int_eq(call_acquire(sv[0], 1, 5000, &r), -ECONNRESET);
    ck_assert_int_eq(peer_join(&p), 0);
    /* Sending to the closed peer: -EPIPE, and no SIGPIPE kills us. */
    Pt__Bye bye = PT__BYE__INIT;
    ck_assert_int_eq(rpc_sock_send(sv[0], RPC_BYE, 9, &bye.base,
                                   rpc_now_ms() + 1000), -EPIPE);
    close(sv[0]);
  }
}
END_TEST

START_TEST(recv_checks_header_first)
{
  int sv[2];
  uint8_t b[RPC_HDR_BYTES];
  struct rpc_hdr h = {.type = RPC_HELLO, .length = RPC_MAX_BODY_DEFAULT + 1,
                      .request_id = 1};
  struct rpc_hdr out;
  ProtobufCMessage *m;

  /* Over the default maximum, no body sent: refused from the header alone
   * (a reader that trusted the length would wait for 1 MiB and time out). */
  pair(sv);
  rpc_hdr_encode(b, &h);
  ck_assert_int_eq(write(sv[1], b, sizeof(b)), (ssize_t)sizeof(b));
  ck_assert_int_eq(rpc_sock_recv(sv[0], 0, rpc_now_ms() + 2000, &out, &m),
                   PT_ETOOBIG);
  ck_assert_ptr_null(m);

  /* A caller's own smaller maximum. */
  h.length = 100;
  rpc_hdr_encode(b, &h);
  ck_assert_int_eq(write(sv[1], b, sizeof(b)), (ssize_t)sizeof(b));
  ck_assert_int_eq(rpc_sock_recv(sv[0], 99, rpc_now_ms() + 2000, &out, &m),
                   PT_ETOOBIG);
  close(sv[0]);
  close(sv[1]);

  /* Bad magic. */
  pair(sv);
  memcpy(b, "HTTP/1.1 200 OK\r\n\r\nabcd", RPC_HDR_BYTES);
  ck_assert_int_eq(write(sv[1], b, sizeof(b)), (ssize_t)sizeof(b));
  ck_assert_int_eq(rpc_sock_recv(sv[0], 0, rpc_now_ms() + 2000, &out, &m),
                   PT_EPROTO);
  close(sv[0]);
  close(sv[1]);

  /* A body that is not its type's message. */
  pair(sv);
  static const uint8_t junk[] = {0x0f, 0x0f, 0x0f};
  h.type = RPC_SEAL;
  h.length = sizeof(junk);
  rpc_hdr_encode(b, &h);
  ck_assert_int_eq(write(sv[1], b, sizeof(b)), (ssize_t)sizeof(b));
  ck_assert_int_eq(write(sv[1], junk, sizeof(junk)), (ssize_t)sizeof(junk));
  ck_assert_int_eq(rpc_sock_recv(sv[0], 0, rpc_now_ms() + 2000, &out, &m),
                   PT_EPROTO);
  ck_assert_ptr_null(m);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

static int serve_wrong_type(struct peer *p)
{
  struct rpc_hdr h;
  uint64_t step;
  int rc = recv_acquire(p, &h, &step);
  if (rc < 0)
    return rc;
  Pt__Reply r = PT__REPLY__INIT;
  r.status = -EBUSY;
  return rpc_sock_send(p->fd, RPC_REPLY, h.request_id, &r.base,
                       rpc_now_ms() + 5000);
}

START_TEST(call_wrong_reply_type)
{
  int sv[2];
  struct peer p = {0};
  Pt__SlotReply *r = (Pt__SlotReply *)1;

  pair(sv);
  peer_start(&p, sv[1], serve_wrong_type);
  ck_assert_int_eq(call_acquire(sv[0], 3, 5000, &r), PT_EPROTO);
  ck_assert_ptr_null(r);
  ck_assert_int_eq(peer_join(&p), 0);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

/* Reads a big frame in small, slow pieces, so the sender's writes are
 * partial; decodes it with the incremental parser. */
struct slow {
  struct peer base;
  size_t job_len;
  int frames;
  int bad;
};

static int slow_frame(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct slow *s = arg;
  ProtobufCMessage *m;
  int rc = rpc_body_unpack(h->type, body, h->length, &m);
  if (rc < 0)
    return rc;
  Pt__Hello *hello = (Pt__Hello *)m;
  size_t n = strlen(hello->job);
  if (n != s->job_len)
    s->bad++;
  for (size_t i = 0; i < n; i++)
    if (hello->job[i] != 'a' + (char)(i % 26))
      s->bad++;
  s->frames++;
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

static int serve_slow_reader(struct peer *p)
{
  struct slow *s = (struct slow *)p;
  struct rpc_parser parser;
  uint8_t buf[8192];
  int rc = 0;

  rpc_parser_init(&parser, RPC_MAX_BODY_DEFAULT);
  while (s->frames < 2) {
    ssize_t n = read(p->fd, buf, sizeof(buf));
    if (n <= 0) {
      rc = n == 0 ? -ECONNRESET : -errno;
      break;
    }
    rc = rpc_parser_feed(&parser, buf, (size_t)n, slow_frame, s);
    if (rc < 0)
      break;
    sleep_ms(1);
  }
  rpc_parser_release(&parser);
  return rc;
}

START_TEST(send_survives_partial_writes)
{
  int sv[2];
  struct slow s = {.job_len = 900 * 1024};
  int small = 4096;
  char *job = malloc(s.job_len + 1);
  Pt__Hello hello = PT__HELLO__INIT;

  for (size_t i = 0; i < s.job_len; i++)
    job[i] = (char)('a' + (char)(i % 26));
  job[s.job_len] = 0;
  hello.job = job;
  pair(sv);
  ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  ck_assert_int_eq(setsockopt(sv[1], SOL_SOCKET, SO_RCVBUF, &small, sizeof(small)), 0);
  peer_start(&s.base, sv[1], serve_slow_reader);
  ck_assert_int_eq(rpc_sock_send(sv[0], RPC_HELLO, 1, &hello.base,
                                 rpc_now_ms() + 20000), PT_OK);
  ck_assert_int_eq(rpc_sock_send(sv[0], RPC_HELLO, 2, &hello.base,
                                 rpc_now_ms() + 20000), PT_OK);
  ck_assert_int_eq(peer_join(&s.base), 0);
  ck_assert_int_eq(s.frames, 2);
  ck_assert_int_eq(s.bad, 0);
  free(job);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(send_deadline_expires)
{
  int sv[2];
  int small = 4096;
  size_t len = 512 * 1024;
  char *job = malloc(len + 1);
  Pt__Hello hello = PT__HELLO__INIT;

  memset(job, 'x', len);
  job[len] = 0;
  hello.job = job;
  pair(sv);
  ck_assert_int_eq(setsockopt(sv[0], SOL_SOCKET, SO_SNDBUF, &small, sizeof(small)), 0);
  uint64_t t0 = rpc_now_ms();
  /* Nobody reads sv[1]. */
  ck_assert_int_eq(rpc_sock_send(sv[0], RPC_HELLO, 1, &hello.base, t0 + 150),
                   -ETIMEDOUT);
  uint64_t dt = rpc_now_ms() - t0;
  ck_assert_uint_ge(dt, 150);
  ck_assert_uint_lt(dt, 3000);
  free(job);
  close(sv[0]);
  close(sv[1]);
}
END_TEST

static volatile sig_atomic_t signals_seen;
static void on_usr1(int sig)
{
  (void)sig;
  signals_seen++;
}

struct pester {
  pthread_t target;
  volatile int stop;
};

static void *pester_main(void *arg)
{
  struct pester *ps = arg;
  while (!ps->stop) {
    pthread_kill(ps->target, SIGUSR1);
    sleep_ms(20);
  }
  return NULL;
}

START_TEST(call_survives_eintr)
{
  int sv[2];
  struct peer p = {.n = 3, .delay_ms = 150};
  struct sigaction sa = {.sa_handler = on_usr1}; /* no SA_RESTART */
  struct pester ps = {.target = pthread_self()};
  pthread_t th;

  ck_assert_int_eq(sigaction(SIGUSR1, &sa, NULL), 0);
  pair(sv);
  peer_start(&p, sv[1], serve_noisy);
  ck_assert_int_eq(pthread_create(&th, NULL, pester_main, &ps), 0);
  for (int i = 0; i < p.n; i++) {
    Pt__SlotReply *r;
    ck_assert_int_eq(call_acquire(sv[0], 40u + (uint64_t)i, 5000, &r), PT_OK);
    ck_assert_uint_eq(r->generation, 2u * (40u + (uint64_t)i));
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  ps.stop = 1;
  pthread_join(th, NULL);
  ck_assert_int_eq(peer_join(&p), 0);
  ck_assert_int_gt(signals_seen, 3); /* the waits really were interrupted */
  close(sv[0]);
  close(sv[1]);
}
END_TEST

START_TEST(connect_unix)
{
  char dir[] = "/tmp/pt-rpc-test.XXXXXX";
  char path[200], long_path[200];
  int fd;

  ck_assert_ptr_nonnull(mkdtemp(dir));
  snprintf(path, sizeof(path), "%s/s.sock", dir);

  memset(long_path, 'p', sizeof(long_path) - 1);
  long_path[0] = '/';
  long_path[sizeof(long_path) - 1] = 0;
  ck_assert_int_eq(rpc_sock_connect_unix(long_path, &fd), -ENAMETOOLONG);
  ck_assert_int_eq(fd, -1);
  ck_assert_int_eq(rpc_sock_connect_unix(path, &fd), -ENOENT);

  /* A socket file nobody listens on. */
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  struct sockaddr_un sa = {.sun_family = AF_UNIX};
  strcpy(sa.sun_path, path);
  ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(rpc_sock_connect_unix(path, &fd), -ECONNREFUSED);

  ck_assert_int_eq(listen(s, 4), 0);
  ck_assert_int_eq(rpc_sock_connect_unix(path, &fd), PT_OK);
  ck_assert_int_ge(fd, 0);
  ck_assert(fcntl(fd, F_GETFD) & FD_CLOEXEC);
  ck_assert(!(fcntl(fd, F_GETFL) & O_NONBLOCK));
  /* A frame gets through. */
  int a = accept(s, NULL, NULL);
  ck_assert_int_ge(a, 0);
  ck_assert_int_eq(rpc_sock_send(fd, RPC_STOP, 77, NULL, rpc_now_ms() + 1000), PT_OK);
  struct rpc_hdr h;
  ProtobufCMessage *m;
  ck_assert_int_eq(rpc_sock_recv(a, 0, rpc_now_ms() + 1000, &h, &m), PT_OK);
  ck_assert_uint_eq(h.type, RPC_STOP);
  ck_assert_uint_eq(h.request_id, 77);
  protobuf_c_message_free_unpacked(m, NULL);
  close(a);
  close(fd);
  close(s);
  unlink(path);
  rmdir(dir);
}
END_TEST

static Suite *rpc_sock_suite(void)
{
  Suite *s = suite_create("rpc_sock");
  TCase *tc = tcase_create("sock");

  tcase_set_timeout(tc, 20);
  tcase_add_test(tc, call_gets_its_reply);
  tcase_add_test(tc, call_deadline_expires);
  tcase_add_test(tc, call_eof_is_econnreset);
  tcase_add_test(tc, recv_checks_header_first);
  tcase_add_test(tc, call_wrong_reply_type);
  tcase_add_test(tc, send_survives_partial_writes);
  tcase_add_test(tc, send_deadline_expires);
  tcase_add_test(tc, call_survives_eintr);
  tcase_add_test(tc, connect_unix);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(rpc_sock_suite());
}
