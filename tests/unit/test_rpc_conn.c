/*
 * test_rpc_conn.c — libuv connections and listeners of rpc/rpc.h. A server
 * loop runs in a thread of the test process; clients use the blocking
 * rpc_sock_* calls (or dial from the loop with rpc_conn_connect_unix).
 * Misbehaving peers must lose their connection, with one warning logged,
 * while good peers on the same listener go on being served; every conn's
 * on_close runs exactly once and the loop ends with no handle left.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/unit/unit.h"

/* ---- the server fixture ---------------------------------------------------- */

#define MAX_RECS 32

/* What the server saw of one accepted conn. */
struct rec {
  struct rpc_conn *conn; /* NULL once freed */
  int closes;
  int err;
  int msgs;
  int peer_pid;
  int flood_rc;          /* rpc_conn_send's verdict while flooding */
  int idles;             /* on_idle calls */
  int send_after_close;  /* rpc_conn_send after closing in on_msg */
  bool listener_ok;      /* rpc_conn_listener(c) was the listener */
};

struct srv {
  uv_loop_t loop;
  uv_async_t wake;
  pthread_t th;
  struct rpc_listener *l;
  char dir[64], path[128], log[128];
  int log_fd;
  int saved_stderr; /* restored at srv_stop, so sanitizer reports show */
  struct rpc_conn_ops ops;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  /* Under mu: */
  struct rec recs[MAX_RECS];
  int accepted, refused;
  int refuse_next;
  int trust_next;      /* the next accepted conns are made trusted */
  size_t buffered;     /* rpc_buffered_bytes(), read on the loop thread */
  void (*cmd)(struct srv *); /* run once on the loop thread */
  bool cmd_done;
  bool stop;
  /* The dialled conn of the dial tests. */
  struct rpc_conn *dialled;
  int dial_replies, dial_closes, dial_err, dial_bad;
  uint64_t dial_steps[8];
};

static struct srv S; /* one per test process (Check forks each test) */

static void srv_signal(void)
{
  pthread_cond_broadcast(&S.cv);
}

static int send_slot_reply(struct rpc_conn *c, uint64_t id, uint64_t step)
{
  Pt__SlotReply r = PT__SLOT_REPLY__INIT;
  r.has_slot = true;
  r.slot = (uint32_t)(step % 7);
  r.has_generation = true;
  r.generation = step * 2;
  return rpc_conn_send(c, RPC_SLOT_REPLY, id, &r.base);
}

static int srv_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                      ProtobufCMessage *msg)
{
  struct rec *r = rpc_conn_data(c);
  int rc = 0;

  pthread_mutex_lock(&S.mu);
  r->msgs++;
  pthread_mutex_unlock(&S.mu);
  switch (h->type) {
  case RPC_SLOT_ACQUIRE:
    return send_slot_reply(c, h->request_id, ((Pt__SlotAcquire *)msg)->step);
  case RPC_STATE_QUERY: {
    Pt__Event ev = PT__EVENT__INIT;
    Pt__StateReply st = PT__STATE_REPLY__INIT;
    ev.kind = PT__EVENT_KIND__EVENT_SEALED;
    ev.rank = 1;
    st.rank = 4;
    st.has_smp_pid = true;
    st.smp_pid = getpid();
    if ((rc = rpc_conn_send(c, RPC_EVENT, 0, &ev.base)) < 0)
      return rc;
    return rpc_conn_send(c, RPC_STATE_REPLY, h->request_id, &st.base);
  }
  case RPC_STOP:
    return -ECANCELED; /* the handler's verdict: close */
  case RPC_BYE: {
    Pt__Reply rep = PT__REPLY__INIT;
    if ((rc = rpc_conn_send(c, RPC_REPLY, h->request_id, &rep.base)) < 0)
      return rc;
    rpc_conn_close(c, 0); /* from inside on_msg: c stays valid until return */
    rc = rpc_conn_send(c, RPC_REPLY, h->request_id, &rep.base);
    pthread_mutex_lock(&S.mu);
    r->send_after_close = rc;
    pthread_mutex_unlock(&S.mu);
    rpc_conn_close(c, -EIO); /* idempotent: the first err stands */
    return 0;
  }
  case RPC_SUBSCRIBE: {
    /* Floods a peer that never reads. */
    static char big[64 * 1024];
    Pt__StatusReply st = PT__STATUS_REPLY__INIT;
    memset(big, 'z', sizeof(big) - 1);
    st.job = "flood";
    st.state = "running";
    st.message = big;
    for (int i = 0; i < 10000 && rc == 0; i++)
      rc = rpc_conn_send(c, RPC_STATUS_REPLY, 0, &st.base);
    pthread_mutex_lock(&S.mu);
    r->flood_rc = rc;
    pthread_mutex_unlock(&S.mu);
    return 0;
  }
  default:
    return 0;
  }
}

static void srv_on_close(struct rpc_conn *c, int err)
{
  struct rec *r = rpc_conn_data(c);

  pthread_mutex_lock(&S.mu);
  r->closes++;
  r->err = err;
  r->conn = NULL;
  srv_signal();
  pthread_mutex_unlock(&S.mu);
}

static int srv_on_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  int rc = 0;

  ck_assert_ptr_eq(rpc_conn_data(c), &S); /* starts as the listener's */
  ck_assert_ptr_eq(rpc_listener_data(l), &S);
  pthread_mutex_lock(&S.mu);
  if (S.refuse_next > 0) {
    S.refuse_next--;
    S.refused++;
    rc = -EPERM;
  } else {
    ck_assert_int_lt(S.accepted, MAX_RECS);
    struct rec *r = &S.recs[S.accepted++];
    r->conn = c;
    r->peer_pid = rpc_conn_peer_pid(c);
    r->listener_ok = rpc_conn_listener(c) == l;
    rpc_conn_set_data(c, r);
    if (S.trust_next > 0) {
      S.trust_next--;
      rpc_conn_set_trusted(c, true);
    }
  }
  srv_signal();
  pthread_mutex_unlock(&S.mu);
  return rc;
}

static void wake_cb(uv_async_t *a)
{
  (void)a;
  pthread_mutex_lock(&S.mu);
  void (*cmd)(struct srv *) = S.cmd;
  bool stop = S.stop;
  S.cmd = NULL;
  pthread_mutex_unlock(&S.mu);
  if (cmd != NULL) {
    cmd(&S);
    pthread_mutex_lock(&S.mu);
    S.cmd_done = true;
    srv_signal();
    pthread_mutex_unlock(&S.mu);
  }
  if (stop) {
    if (S.l != NULL)
      rpc_listener_close(S.l);
    S.l = NULL;
    for (int i = 0; i < MAX_RECS; i++)
      if (S.recs[i].conn != NULL)
        rpc_conn_close(S.recs[i].conn, 0);
    if (S.dialled != NULL)
      rpc_conn_close(S.dialled, 0);
    uv_close((uv_handle_t *)&S.wake, NULL);
  }
}

static void *loop_main(void *arg)
{
  (void)arg;
  uv_run(&S.loop, UV_RUN_DEFAULT);
  return NULL;
}

/* The process's rpc log callback, as ptd installs one: a line to stderr,
 * tagged with its kind, so that the tests read what an operator would. */
static void test_log(enum rpc_log_kind kind, int level, const char *line)
{
  fprintf(stderr, "<%d>[%d] %s\n", level, (int)kind, line);
}

/* Sets up the loop, the listener and stderr capture; the loop thread starts
 * with srv_run(), so the caller may add handles first. */
static void srv_setup_ops(size_t max_write_queue, uint32_t idle_ms,
                          rpc_idle_cb on_idle)
{
  memset(&S, 0, sizeof(S));
  signal(SIGPIPE, SIG_IGN); /* as ptd does */
  pthread_mutex_init(&S.mu, NULL);
  pthread_cond_init(&S.cv, NULL);
  strcpy(S.dir, "/tmp/pt-rpc-conn.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(S.dir));
  snprintf(S.path, sizeof(S.path), "%s/srv.sock", S.dir);
  snprintf(S.log, sizeof(S.log), "%s/stderr.log", S.dir);
  S.log_fd = open(S.log, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
  ck_assert_int_ge(S.log_fd, 0);
  S.saved_stderr = dup(STDERR_FILENO);
  ck_assert_int_ge(S.saved_stderr, 0);
  ck_assert_int_ge(dup2(S.log_fd, STDERR_FILENO), 0);
  rpc_set_log_cb(test_log);

  ck_assert_int_eq(uv_loop_init(&S.loop), 0);
  ck_assert_int_eq(uv_async_init(&S.loop, &S.wake, wake_cb), 0);
  S.ops.on_msg = srv_on_msg;
  S.ops.on_close = srv_on_close;
  S.ops.max_write_queue = max_write_queue;
  S.ops.idle_ms = idle_ms;
  S.ops.on_idle = on_idle;
  ck_assert_int_eq(rpc_listen_unix(&S.loop, S.path, &S.ops, srv_on_accept, &S,
                                   &S.l), PT_OK);
}

static void srv_setup(size_t max_write_queue)
{
  srv_setup_ops(max_write_queue, 0, NULL);
}

static void srv_run(void)
{
  ck_assert_int_eq(pthread_create(&S.th, NULL, loop_main, NULL), 0);
}

/* Waits (5 s at most) until cond holds; evaluated under S.mu. */
#define WAIT_FOR(cond)                                                         \
  do {                                                                         \
    struct timespec dl_;                                                       \
    clock_gettime(CLOCK_REALTIME, &dl_);                                       \
    dl_.tv_sec += 5;                                                           \
    pthread_mutex_lock(&S.mu);                                                 \
    while (!(cond) &&                                                          \
           pthread_cond_timedwait(&S.cv, &S.mu, &dl_) != ETIMEDOUT)            \
      ;                                                                        \
    bool ok_ = (cond);                                                         \
    pthread_mutex_unlock(&S.mu);                                               \
    ck_assert_msg(ok_, "timed out waiting for " #cond);                        \
  } while (0)

static void srv_do(void (*cmd)(struct srv *))
{
  pthread_mutex_lock(&S.mu);
  S.cmd = cmd;
  S.cmd_done = false;
  pthread_mutex_unlock(&S.mu);
  uv_async_send(&S.wake);
  WAIT_FOR(S.cmd_done);
}

/* Stops the loop, checks every conn was closed exactly once and the loop
 * holds no handle. Returns the captured stderr (caller frees). */
static char *srv_stop(void)
{
  pthread_mutex_lock(&S.mu);
  S.stop = true;
  pthread_mutex_unlock(&S.mu);
  uv_async_send(&S.wake);
  pthread_join(S.th, NULL);
  ck_assert_int_eq(uv_loop_close(&S.loop), 0);
  for (int i = 0; i < S.accepted; i++) {
    ck_assert_int_eq(S.recs[i].closes, 1);
    ck_assert_ptr_null(S.recs[i].conn);
  }
  ck_assert_int_eq(access(S.path, F_OK), -1); /* the listener unlinked it */

  off_t n = lseek(S.log_fd, 0, SEEK_END);
  char *text = calloc(1, (size_t)n + 1);
  ck_assert_int_eq(pread(S.log_fd, text, (size_t)n, 0), n);
  dup2(S.saved_stderr, STDERR_FILENO);
  close(S.saved_stderr);
  close(S.log_fd);
  unlink(S.log);
  rmdir(S.dir);
  return text;
}

/* ---- client helpers ---------------------------------------------------------- */

static int client(void)
{
  int fd;
  ck_assert_int_eq(rpc_sock_connect_unix(S.path, &fd), PT_OK);
  return fd;
}

static void call_ok(int fd, uint64_t step)
{
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  ProtobufCMessage *m;
  a.step = step;
  ck_assert_int_eq(rpc_sock_call(fd, RPC_SLOT_ACQUIRE, &a.base, RPC_SLOT_REPLY,
                                 5000, &m), PT_OK);
  Pt__SlotReply *r = (Pt__SlotReply *)m;
  ck_assert_uint_eq(r->slot, step % 7);
  ck_assert_uint_eq(r->generation, step * 2);
  protobuf_c_message_free_unpacked(m, NULL);
}

/* Reads until EOF (skipping whatever frames come first): true if the peer
 * closed within 5 s. */
static bool sees_eof(int fd)
{
  uint64_t deadline = rpc_now_ms() + 5000;
  char buf[65536];
  for (;;) {
    struct pollfd p = {.fd = fd, .events = POLLIN};
    uint64_t now = rpc_now_ms();
    if (now >= deadline || poll(&p, 1, (int)(deadline - now)) <= 0)
      return false;
    ssize_t n = read(fd, buf, sizeof(buf));
    if (n == 0 || (n < 0 && errno == ECONNRESET))
      return true;
    if (n < 0)
      return false;
  }
}

static void write_all(int fd, const void *buf, size_t len)
{
  ck_assert_int_eq(write(fd, buf, len), (ssize_t)len);
}

/* ---- tests ------------------------------------------------------------------- */

START_TEST(good_clients_are_served)
{
  struct stat st;

  srv_setup(0);
  ck_assert_int_eq(stat(S.path, &st), 0);
  ck_assert(S_ISSOCK(st.st_mode));
  ck_assert_uint_eq(st.st_mode & 0777, 0600);
  srv_run();

  int a = client(), b = client();
  for (uint64_t i = 0; i < 20; i++) {
    call_ok(a, 100 + i);
    call_ok(b, 500 + 3 * i);
  }
  /* A reply preceded by an event: rpc_sock_call skips the event. */
  Pt__StateQuery q = PT__STATE_QUERY__INIT;
  ProtobufCMessage *m;
  ck_assert_int_eq(rpc_sock_call(a, RPC_STATE_QUERY, &q.base, RPC_STATE_REPLY,
                                 5000, &m), PT_OK);
  ck_assert_uint_eq(((Pt__StateReply *)m)->rank, 4);
  ck_assert_int_eq(((Pt__StateReply *)m)->smp_pid, getpid());
  protobuf_c_message_free_unpacked(m, NULL);

  WAIT_FOR(S.accepted == 2);
  pthread_mutex_lock(&S.mu);
  for (int i = 0; i < 2; i++) {
    ck_assert_int_eq(S.recs[i].peer_pid, getpid());
    ck_assert(S.recs[i].listener_ok);
  }
  ck_assert_int_eq(S.recs[0].msgs + S.recs[1].msgs, 41);
  pthread_mutex_unlock(&S.mu);

  close(a);
  close(b);
  WAIT_FOR(S.recs[0].closes == 1 && S.recs[1].closes == 1);
  ck_assert_int_eq(S.recs[0].err, 0); /* clean EOF */
  ck_assert_int_eq(S.recs[1].err, 0);
  char *log = srv_stop();
  ck_assert_ptr_null(strstr(log, "closing connection")); /* nothing to say */
  free(log);
}
END_TEST

/* One bad peer at a time, a good one served between them. */
struct bad_case {
  const char *what;
  int want_err;
  bool wants_reply; /* a valid frame precedes the fault */
};

static void send_bad(int fd, int which)
{
  uint8_t h[RPC_HDR_BYTES];
  struct rpc_hdr hdr = {.request_id = 1};
  uint8_t *f;
  size_t len;

  switch (which) {
  case 0: { /* garbage */
    static const char http[] = "GET / HTTP/1.1\r\nHost: pt\r\n\r\n";
    write_all(fd, http, sizeof(http) - 1);
    break;
  }
  case 1: /* oversized length */
    hdr.type = RPC_HELLO;
    hdr.length = 2u << 20;
    rpc_hdr_encode(h, &hdr);
    write_all(fd, h, sizeof(h));
    break;
  case 2: { /* truncated frame, then our side shuts down */
    Pt__Commit c = PT__COMMIT__INIT;
    c.step = 1ull << 60;
    ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_COMMIT, 1, &c.base), PT_OK);
    write_all(fd, f, len - 3);
    free(f);
    shutdown(fd, SHUT_WR);
    break;
  }
  case 3: { /* a Hello body in a SEAL frame */
    Pt__Hello hello = PT__HELLO__INIT;
    hello.job = "job";
    ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_HELLO, 1, &hello.base), PT_OK);
    f[6] = RPC_SEAL;
    write_all(fd, f, len);
    free(f);
    break;
  }
  case 4: /* on_msg refuses the message */
    ck_assert_int_eq(rpc_sock_send(fd, RPC_STOP, 1, NULL, rpc_now_ms() + 1000),
                     PT_OK);
    break;
  case 5: { /* a good request and garbage in one write */
    Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
    a.step = 6;
    ck_assert_int_eq(rpc_frame_pack(&f, &len, RPC_SLOT_ACQUIRE, 33, &a.base),
                     PT_OK);
    f = realloc(f, len + RPC_HDR_BYTES);
    memset(f + len, 0xee, RPC_HDR_BYTES);
    write_all(fd, f, len + RPC_HDR_BYTES);
    free(f);
    break;
  }
  }
}

START_TEST(bad_clients_are_closed)
{
  static const struct bad_case cases[] = {
      {"garbage", PT_EPROTO, false},
      {"oversized header", PT_ETOOBIG, false},
      {"truncated frame", PT_EPROTO, false},
      {"wrong-type body", PT_EPROTO, false},
      {"on_msg refusal", -ECANCELED, false},
      {"good frame then garbage", PT_EPROTO, true},
  };
  const int ncases = (int)(sizeof(cases) / sizeof(cases[0]));

  srv_setup(0);
  srv_run();
  int good = client();
  call_ok(good, 1);
  for (int i = 0; i < ncases; i++) {
    int bad = client();
    WAIT_FOR(S.accepted == i + 2);
    send_bad(bad, i);
    if (cases[i].wants_reply) {
      struct rpc_hdr h;
      ProtobufCMessage *m;
      ck_assert_int_eq(rpc_sock_recv(bad, 0, rpc_now_ms() + 5000, &h, &m), PT_OK);
      ck_assert_uint_eq(h.request_id, 33);
      ck_assert_uint_eq(((Pt__SlotReply *)m)->generation, 12);
      protobuf_c_message_free_unpacked(m, NULL);
    }
    ck_assert_msg(sees_eof(bad), "%s: connection not closed", cases[i].what);
    WAIT_FOR(S.recs[i + 1].closes == 1);
    pthread_mutex_lock(&S.mu);
    ck_assert_msg(S.recs[i + 1].err == cases[i].want_err, "%s: err %d want %d",
                  cases[i].what, S.recs[i + 1].err, cases[i].want_err);
    pthread_mutex_unlock(&S.mu);
    close(bad);
    call_ok(good, 100 + (uint64_t)i); /* the listener and others go on */
  }
  close(good);
  char *log = srv_stop();
  /* One warning per bad peer, naming its pid and the cause. */
  char want[128];
  int n = 0;
  for (char *p = log; (p = strstr(p, "rpc: closing connection from pid")); p++)
    n++;
  ck_assert_int_eq(n, ncases);
  snprintf(want, sizeof(want), "<4>[%d] rpc: closing connection from pid %d: %s",
           (int)RPC_LOG_CLOSE,
           (int)getpid(), pt_strerror(PT_ETOOBIG));
  ck_assert_msg(strstr(log, want) != NULL, "log lacks '%s':\n%s", want, log);
  free(log);
}
END_TEST

START_TEST(close_from_inside_on_msg)
{
  srv_setup(0);
  srv_run();
  int fd = client();
  call_ok(fd, 9);

  /* SLOT_ACQUIRE, BYE, SLOT_ACQUIRE in one write: the first two are
   * answered, the server closes while handling BYE, the third is never
   * handled. */
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  Pt__Bye bye = PT__BYE__INIT;
  uint8_t *f[3];
  size_t len[3];
  a.step = 21;
  ck_assert_int_eq(rpc_frame_pack(&f[0], &len[0], RPC_SLOT_ACQUIRE, 1, &a.base), 0);
  ck_assert_int_eq(rpc_frame_pack(&f[1], &len[1], RPC_BYE, 2, &bye.base), 0);
  ck_assert_int_eq(rpc_frame_pack(&f[2], &len[2], RPC_SLOT_ACQUIRE, 3, &a.base), 0);
  uint8_t all[512];
  size_t n = 0;
  for (int i = 0; i < 3; i++) {
    memcpy(all + n, f[i], len[i]);
    n += len[i];
    free(f[i]);
  }
  write_all(fd, all, n);

  struct rpc_hdr h;
  ProtobufCMessage *m;
  ck_assert_int_eq(rpc_sock_recv(fd, 0, rpc_now_ms() + 5000, &h, &m), PT_OK);
  ck_assert_uint_eq(h.request_id, 1);
  protobuf_c_message_free_unpacked(m, NULL);
  ck_assert_int_eq(rpc_sock_recv(fd, 0, rpc_now_ms() + 5000, &h, &m), PT_OK);
  ck_assert_uint_eq(h.request_id, 2);
  ck_assert_uint_eq(h.type, RPC_REPLY);
  protobuf_c_message_free_unpacked(m, NULL);
  ck_assert_int_eq(rpc_sock_recv(fd, 0, rpc_now_ms() + 5000, &h, &m), -ECONNRESET);

  WAIT_FOR(S.recs[0].closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.recs[0].err, 0);
  ck_assert_int_eq(S.recs[0].msgs, 3); /* the call, then two of three */
  ck_assert_int_eq(S.recs[0].send_after_close, -EPIPE);
  pthread_mutex_unlock(&S.mu);
  close(fd);
  free(srv_stop());
}
END_TEST

START_TEST(backpressure_closes_stuck_peer)
{
  srv_setup(256 * 1024);
  srv_run();
  int good = client();
  int stuck = client();
  call_ok(good, 1);
  Pt__Subscribe sub = PT__SUBSCRIBE__INIT;
  sub.node_id = "node";
  /* Sends, then never reads. */
  ck_assert_int_eq(rpc_sock_send(stuck, RPC_SUBSCRIBE, 1, &sub.base,
                                 rpc_now_ms() + 1000), PT_OK);
  WAIT_FOR(S.recs[1].closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.recs[1].flood_rc, -ENOBUFS);
  ck_assert_int_eq(S.recs[1].err, -ENOBUFS);
  pthread_mutex_unlock(&S.mu);
  call_ok(good, 2);
  /* What was in the socket buffer arrives, then EOF. */
  ck_assert(sees_eof(stuck));
  close(stuck);
  close(good);
  char *log = srv_stop();
  ck_assert_ptr_nonnull(strstr(log, pt_strerror(-ENOBUFS)));
  free(log);
}
END_TEST

START_TEST(refusals)
{
  srv_setup(0);
  /* Let another user reach the socket, so that SO_PEERCRED decides. */
  ck_assert_int_eq(chmod(S.dir, 0755), 0);
  ck_assert_int_eq(chmod(S.path, 0666), 0);
  srv_run();

  /* on_accept refuses: the peer sees EOF, on_close never runs for it. */
  pthread_mutex_lock(&S.mu);
  S.refuse_next = 1;
  pthread_mutex_unlock(&S.mu);
  int fd = client();
  ck_assert(sees_eof(fd));
  close(fd);
  WAIT_FOR(S.refused == 1);

  /* A peer of another uid (needs root to make one). */
  if (geteuid() == 0) {
    pid_t pid = fork();
    ck_assert_int_ge(pid, 0);
    if (pid == 0) {
      int c;
      if (setgid(65534) < 0 || setuid(65534) < 0)
        _exit(2);
      if (rpc_sock_connect_unix(S.path, &c) < 0)
        _exit(3);
      _exit(sees_eof(c) ? 0 : 4);
    }
    int status;
    ck_assert_int_eq(waitpid(pid, &status, 0), pid);
    ck_assert(WIFEXITED(status));
    ck_assert_int_eq(WEXITSTATUS(status), 0);
  }

  int good = client();
  call_ok(good, 5);
  close(good);
  WAIT_FOR(S.accepted == 1 && S.recs[0].closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.refused, 1); /* the foreign peer never reached on_accept */
  pthread_mutex_unlock(&S.mu);
  char *log = srv_stop();
  if (geteuid() == 0)
    ck_assert_ptr_nonnull(strstr(log, "uid 65534 is not ours"));
  free(log);
}
END_TEST

START_TEST(listen_paths)
{
  uv_loop_t loop;
  struct rpc_listener *l = (struct rpc_listener *)1, *l2;
  struct rpc_conn *c = (struct rpc_conn *)1;
  struct rpc_conn_ops ops = {0};
  char dir[] = "/tmp/pt-rpc-listen.XXXXXX", path[160], longp[200];
  struct stat st;

  ck_assert_int_eq(uv_loop_init(&loop), 0);
  ck_assert_ptr_nonnull(mkdtemp(dir));

  /* Too long for sun_path: refused before anything is created. */
  snprintf(longp, sizeof(longp), "%s/", dir);
  memset(longp + strlen(longp), 'n', sizeof(longp) - strlen(longp) - 1);
  longp[sizeof(longp) - 1] = 0;
  ck_assert_int_eq(rpc_listen_unix(&loop, longp, &ops, NULL, NULL, &l),
                   -ENAMETOOLONG);
  ck_assert_ptr_null(l);
  ck_assert_int_eq(rpc_conn_connect_unix(&loop, longp, &ops, NULL, &c),
                   -ENAMETOOLONG);
  ck_assert_ptr_null(c);
  /* Exactly sizeof(sun_path) - 1 bytes fits. */
  struct sockaddr_un sa;
  longp[sizeof(sa.sun_path) - 1] = 0;
  ck_assert_int_eq(rpc_listen_unix(&loop, longp, &ops, NULL, NULL, &l), PT_OK);
  rpc_listener_close(l);
  ck_assert_int_eq(access(longp, F_OK), -1);

  /* A stale socket file (bound, its owner gone) is replaced. */
  snprintf(path, sizeof(path), "%s/s.sock", dir);
  int s = socket(AF_UNIX, SOCK_STREAM, 0);
  sa = (struct sockaddr_un){.sun_family = AF_UNIX};
  strcpy(sa.sun_path, path);
  ck_assert_int_eq(bind(s, (struct sockaddr *)&sa, sizeof(sa)), 0);
  close(s);
  ck_assert_int_eq(rpc_listen_unix(&loop, path, &ops, NULL, NULL, &l), PT_OK);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert_uint_eq(st.st_mode & 0777, 0600);
  /* A live one is not. */
  ck_assert_int_eq(rpc_listen_unix(&loop, path, &ops, NULL, NULL, &l2),
                   -EADDRINUSE);
  ck_assert_int_eq(stat(path, &st), 0);
  rpc_listener_close(l);
  rpc_listener_close(l); /* idempotent */
  ck_assert_int_eq(access(path, F_OK), -1);

  /* Not a socket: left alone. */
  int fd = open(path, O_CREAT | O_WRONLY, 0600);
  close(fd);
  ck_assert_int_eq(rpc_listen_unix(&loop, path, &ops, NULL, NULL, &l2), -EEXIST);
  ck_assert_int_eq(stat(path, &st), 0);
  ck_assert(S_ISREG(st.st_mode));
  unlink(path);

  ck_assert_int_eq(uv_run(&loop, UV_RUN_DEFAULT), 0);
  ck_assert_int_eq(uv_loop_close(&loop), 0);
  rmdir(dir);
}
END_TEST

/* ---- dialled connections --------------------------------------------------- */

static int dial_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                       ProtobufCMessage *msg)
{
  (void)c;
  pthread_mutex_lock(&S.mu);
  if (h->type != RPC_SLOT_REPLY || S.dial_replies >= 8)
    S.dial_bad++;
  else
    S.dial_steps[S.dial_replies++] = ((Pt__SlotReply *)msg)->generation / 2;
  srv_signal();
  pthread_mutex_unlock(&S.mu);
  return 0;
}

static void dial_on_close(struct rpc_conn *c, int err)
{
  pthread_mutex_lock(&S.mu);
  if (c != S.dialled)
    S.dial_bad++;
  S.dial_closes++;
  S.dial_err = err;
  S.dialled = NULL;
  srv_signal();
  pthread_mutex_unlock(&S.mu);
}

static const struct rpc_conn_ops dial_ops = {.on_msg = dial_on_msg,
                                             .on_close = dial_on_close};

static void queue_three(struct rpc_conn *c)
{
  Pt__SlotAcquire a = PT__SLOT_ACQUIRE__INIT;
  for (uint64_t i = 0; i < 3; i++) {
    a.step = 70 + i;
    ck_assert_int_eq(rpc_conn_send(c, RPC_SLOT_ACQUIRE, i + 1, &a.base), PT_OK);
  }
}

static void cmd_close_dialled(struct srv *s)
{
  ck_assert_int_eq(rpc_conn_peer_pid(s->dialled), getpid());
  rpc_conn_close(s->dialled, 0);
}

START_TEST(dialled_conn_queues_until_connected)
{
  srv_setup(0);
  /* The loop is not running yet: the connect cannot have completed, so
   * these frames wait in the conn's queue. */
  ck_assert_int_eq(rpc_conn_connect_unix(&S.loop, S.path, &dial_ops, &S,
                                         &S.dialled), PT_OK);
  ck_assert_ptr_null(rpc_conn_listener(S.dialled));
  ck_assert_ptr_eq(rpc_conn_data(S.dialled), &S);
  ck_assert_int_eq(rpc_conn_peer_pid(S.dialled), -1);
  queue_three(S.dialled);
  srv_run();
  WAIT_FOR(S.dial_replies == 3);
  pthread_mutex_lock(&S.mu);
  for (int i = 0; i < 3; i++)
    ck_assert_uint_eq(S.dial_steps[i], 70u + (uint64_t)i); /* in order */
  pthread_mutex_unlock(&S.mu);
  srv_do(cmd_close_dialled);
  WAIT_FOR(S.dial_closes == 1 && S.recs[0].closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.dial_err, 0);
  ck_assert_int_eq(S.recs[0].err, 0); /* the server saw a clean EOF */
  ck_assert_int_eq(S.recs[0].msgs, 3);
  ck_assert_int_eq(S.dial_bad, 0);
  pthread_mutex_unlock(&S.mu);
  free(srv_stop());
  ck_assert_int_eq(S.dial_closes, 1);
}
END_TEST

START_TEST(dialled_conn_failures)
{
  char nowhere[200];

  srv_setup(0);
  /* Nobody listens there: on_close reports it, queued frames are freed. */
  snprintf(nowhere, sizeof(nowhere), "%s/nobody.sock", S.dir);
  ck_assert_int_eq(rpc_conn_connect_unix(&S.loop, nowhere, &dial_ops, &S,
                                         &S.dialled), PT_OK);
  queue_three(S.dialled);
  srv_run();
  WAIT_FOR(S.dial_closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.dial_err, -ENOENT);
  ck_assert_int_eq(S.dial_replies, 0);
  pthread_mutex_unlock(&S.mu);
  free(srv_stop());
  ck_assert_int_eq(S.dial_closes, 1);
}
END_TEST

static void cmd_dial_and_close(struct srv *s)
{
  ck_assert_int_eq(rpc_conn_connect_unix(&s->loop, s->path, &dial_ops, s,
                                         &s->dialled), PT_OK);
  queue_three(s->dialled);
  rpc_conn_close(s->dialled, -ECANCELED); /* before the connect completes */
  rpc_conn_close(s->dialled, 0);          /* idempotent */
  Pt__Stop stop = PT__STOP__INIT;
  ck_assert_int_eq(rpc_conn_send(s->dialled, RPC_STOP, 9, &stop.base), -EPIPE);
}

START_TEST(dialled_conn_closed_while_connecting)
{
  srv_setup(0);
  srv_run();
  srv_do(cmd_dial_and_close);
  WAIT_FOR(S.dial_closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.dial_err, -ECANCELED);
  pthread_mutex_unlock(&S.mu);
  /* Give a wrongly repeated on_close a chance to show. */
  struct timespec ts = {0, 100 * 1000000L};
  nanosleep(&ts, NULL);
  free(srv_stop());
  ck_assert_int_eq(S.dial_closes, 1);
  ck_assert_int_eq(S.dial_replies, 0);
}
END_TEST


/* ---- idle deadlines and the buffer cap ---- */

/* A peer that sends nothing for the idle deadline is closed with
 * -ETIMEDOUT, nothing logged; one that keeps talking is served. */
START_TEST(idle_deadline_closes_silent_peer)
{
  srv_setup_ops(0, 200, NULL);
  srv_run();
  int quiet = client();
  WAIT_FOR(S.accepted == 1);
  int busy = client();
  WAIT_FOR(S.accepted == 2);
  for (uint64_t i = 1; i <= 10; i++) { /* 600 ms: three deadlines */
    call_ok(busy, i);
    usleep(60 * 1000);
  }
  WAIT_FOR(S.recs[0].closes == 1);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.recs[0].err, -ETIMEDOUT);
  ck_assert_int_eq(S.recs[1].closes, 0);
  pthread_mutex_unlock(&S.mu);
  ck_assert(sees_eof(quiet));
  call_ok(busy, 11);
  /* once silent, the busy one goes too */
  WAIT_FOR(S.recs[1].closes == 1);
  ck_assert(sees_eof(busy));
  close(quiet);
  close(busy);
  char *log = srv_stop();
  ck_assert_ptr_null(strstr(log, "rpc:")); /* the rpc layer logs nothing */
  free(log);
}
END_TEST

static int keep_twice(struct rpc_conn *c)
{
  struct rec *r = rpc_conn_data(c);
  pthread_mutex_lock(&S.mu);
  int n = ++r->idles;
  pthread_mutex_unlock(&S.mu);
  return n < 3 ? 0 : 1;
}

/* on_idle decides: 0 keeps the conn for another deadline. */
START_TEST(idle_callback_decides)
{
  srv_setup_ops(0, 100, keep_twice);
  srv_run();
  uint64_t t0 = rpc_now_ms();
  int fd = client();
  WAIT_FOR(S.recs[0].closes == 1);
  ck_assert_uint_ge(rpc_now_ms() - t0, 250);
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.recs[0].idles, 3);
  ck_assert_int_eq(S.recs[0].err, -ETIMEDOUT);
  pthread_mutex_unlock(&S.mu);
  ck_assert(sees_eof(fd));
  close(fd);
  free(srv_stop());
}
END_TEST

static void cmd_read_buffered(struct srv *s)
{
  s->buffered = rpc_buffered_bytes();
}

static size_t buffered_now(void)
{
  srv_do(cmd_read_buffered);
  pthread_mutex_lock(&S.mu);
  size_t b = S.buffered;
  pthread_mutex_unlock(&S.mu);
  return b;
}

/* Waits (5 s at most) until the partial frames hold want bytes. */
static void wait_buffered(size_t want)
{
  uint64_t deadline = rpc_now_ms() + 5000;
  size_t b;
  while ((b = buffered_now()) != want && rpc_now_ms() < deadline)
    usleep(1000);
  ck_assert_uint_eq(b, want);
}

#define BIG_BODY (900u * 1024u)

/* One RPC_REPLY frame whose body is about BIG_BODY bytes. */
static uint8_t *big_frame(size_t *len)
{
  Pt__Reply r = PT__REPLY__INIT;
  uint8_t *f = NULL;
  char *text = malloc(BIG_BODY);
  ck_assert_ptr_nonnull(text);
  memset(text, 'x', BIG_BODY - 16);
  text[BIG_BODY - 16] = '\0';
  r.message = text;
  ck_assert_int_eq(rpc_frame_pack(&f, len, RPC_REPLY, 1, &r.base), PT_OK);
  free(text);
  return f;
}

/* Partial frames of all conns together may hold at most the cap: the conn
 * whose partial frame passes it is closed (-ENOMEM), the others keep going,
 * and a trusted conn is served past the cap. A partial frame holds what its
 * peer sent (in doubling chunks), not the length it announced. */
START_TEST(buffer_cap_closes_the_conn_past_it)
{
  size_t len;
  uint8_t *f = big_frame(&len);
  size_t body = len - RPC_HDR_BYTES;
  int fd[4];

  srv_setup(0);
  rpc_buffer_cap_set(2 * BIG_BODY + BIG_BODY / 2);
  srv_run();
  for (int i = 0; i < 4; i++) {
    if (i == 3) {
      pthread_mutex_lock(&S.mu);
      S.trust_next = 1;
      pthread_mutex_unlock(&S.mu);
    }
    fd[i] = client();
    WAIT_FOR(S.accepted == i + 1);
    if (i == 2) { /* closed by the server part-way: a short write */
      size_t off = 0;
      while (off < len - 1) {
        ssize_t w = write(fd[i], f + off, len - 1 - off);
        if (w <= 0)
          break;
        off += (size_t)w;
      }
    } else {
      write_all(fd[i], f, len - 1); /* all but the last body byte */
    }
    if (i < 2)
      wait_buffered((size_t)(i + 1) * body);
  }
  WAIT_FOR(S.recs[2].closes == 1);
  ck_assert(sees_eof(fd[2]));
  pthread_mutex_lock(&S.mu);
  ck_assert_int_eq(S.recs[2].err, -ENOMEM);
  ck_assert_int_eq(S.recs[0].closes + S.recs[1].closes + S.recs[3].closes, 0);
  pthread_mutex_unlock(&S.mu);
  /* the trusted one holds its partial frame past the cap, then completes */
  wait_buffered(3 * body);
  write_all(fd[3], f + len - 1, 1);
  WAIT_FOR(S.recs[3].msgs == 1);
  write_all(fd[0], f + len - 1, 1);
  WAIT_FOR(S.recs[0].msgs == 1);
  ck_assert_uint_eq(buffered_now(), body);
  call_ok(fd[0], 3);
  close(fd[1]);
  WAIT_FOR(S.recs[1].closes == 1);
  ck_assert_uint_eq(buffered_now(), 0);
  /* Announcing a big body and sending one byte of it holds one chunk. */
  int lazy = client();
  WAIT_FOR(S.accepted == 5);
  write_all(lazy, f, RPC_HDR_BYTES + 1);
  wait_buffered(RPC_BODY_CHUNK);
  close(lazy);
  close(fd[0]);
  close(fd[2]);
  close(fd[3]);
  free(f);
  char *log = srv_stop();
  free(log);
}
END_TEST

static Suite *rpc_conn_suite(void)
{
  Suite *s = suite_create("rpc_conn");
  TCase *tc = tcase_create("conn");

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, good_clients_are_served);
  tcase_add_test(tc, bad_clients_are_closed);
  tcase_add_test(tc, close_from_inside_on_msg);
  tcase_add_test(tc, backpressure_closes_stuck_peer);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, listen_paths);
  tcase_add_test(tc, dialled_conn_queues_until_connected);
  tcase_add_test(tc, dialled_conn_failures);
  tcase_add_test(tc, dialled_conn_closed_while_connecting);
  tcase_add_test(tc, idle_deadline_closes_silent_peer);
  tcase_add_test(tc, idle_callback_decides);
  tcase_add_test(tc, buffer_cap_closes_the_conn_past_it);
  suite_add_tcase(s, tc);
  return s;
}

int main(void)
{
  return unit_run(rpc_conn_suite());
}
