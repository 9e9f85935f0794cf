/*
 * test_node_cluster.c — `ptd node` in cluster mode (daemon/node/
 * node_cluster.c), in a forked child, against a fake controller: a libuv
 * loop in the test process listening with rpc_listen_tcp on 127.0.0.1
 * port 0 with the cluster key. Checks the registration's fields and the
 * handshake's node id, heartbeats at heartbeat_ms, reconnecting with the
 * same incarnation, a wrong key (retries with backoff, the reason logged
 * once), a refused registration (logged with its message, retried), the
 * status over the control socket, SIGTERM, and a key open to others.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "daemon/node/node.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"
#include "tests/unit/unit.h"

#define MAX_REG 16
#define MAX_HB 256

struct reg_seen {
  char node_id[RPC_NODE_ID_MAX + 1];
  char peer_node[RPC_NODE_ID_MAX + 1];
  uint32_t peer_role;
  char advertise[256];
  char failure_domain[128];
  bool has_fd;
  uint32_t capacity;
  uint8_t incarnation[32];
  size_t inc_len;
  uint8_t identity[32];
  size_t id_len; /* 0: none sent */
  bool replace;
  uint64_t at;
};

/* The fake controller: one per test (Check forks each). */
static struct {
  uv_loop_t loop;
  uv_timer_t tick;
  struct rpc_listener *l;
  struct rpc_conn *conn;
  struct reg_seen reg[MAX_REG];
  int nreg;
  uint64_t hb_seq[MAX_HB], hb_at[MAX_HB];
  int nhb;
  int refusals;         /* RPC_LOG_REFUSE lines: failed handshakes */
  int refuse_regs;      /* registrations to answer with status < 0 */
  bool flap;            /* close each conn just after its registration */
  bool close_due;
  uint32_t heartbeat_ms, dead_after_ms;
  char dir[64], log[128], key[128], key2[128], sock[128];
  pid_t pid;
} fc;

static void on_rpc_log(enum rpc_log_kind kind, int level, const char *line)
{
  (void)level;
  (void)line;
  if (kind == RPC_LOG_REFUSE)
    fc.refusals++;
}

static int fc_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                     ProtobufCMessage *msg)
{
  if (h->type == RPC_NODE_REGISTER && fc.nreg < MAX_REG) {
    const Pt__NodeRegister *m = (const Pt__NodeRegister *)msg;
    struct reg_seen *r = &fc.reg[fc.nreg++];
    snprintf(r->node_id, sizeof(r->node_id), "%s", m->node_id);
    snprintf(r->peer_node, sizeof(r->peer_node), "%s",
             rpc_conn_peer_node(c));
    r->peer_role = rpc_conn_peer_role(c);
    snprintf(r->advertise, sizeof(r->advertise), "%s", m->advertise);
    r->has_fd = m->failure_domain != NULL;
    if (r->has_fd)
      snprintf(r->failure_domain, sizeof(r->failure_domain), "%s",
               m->failure_domain);
    r->capacity = m->capacity;
    r->inc_len = m->incarnation.len;
    memcpy(r->incarnation, m->incarnation.data,
           r->inc_len < 32 ? r->inc_len : 32);
    r->id_len = m->has_identity ? m->identity.len : 0;
    memcpy(r->identity, m->identity.data, r->id_len < 32 ? r->id_len : 32);
    r->replace = m->has_replace && m->replace;
    r->at = rpc_now_ms();
    fc.nhb = 0; /* heartbeats of this connection */

    Pt__NodeRegisterReply rep = PT__NODE_REGISTER_REPLY__INIT;
    if (fc.refuse_regs > 0) {
      fc.refuse_regs--;
      rep.status = -EEXIST;
      rep.message = "node id taken by another incarnation";
    } else {
      rep.status = PT_OK;
      rep.has_heartbeat_ms = true;
      rep.heartbeat_ms = fc.heartbeat_ms;
      rep.has_dead_after_ms = true;
      rep.dead_after_ms = fc.dead_after_ms;
    }
    ck_assert_int_eq(rpc_conn_send(c, RPC_NODE_REGISTER_REPLY, h->request_id,
                                   &rep.base),
                     PT_OK);
    fc.close_due = fc.flap;
    return 0;
  }
  if (h->type == RPC_HEARTBEAT && fc.nhb < MAX_HB) {
    fc.hb_seq[fc.nhb] = ((const Pt__Heartbeat *)msg)->seq;
    fc.hb_at[fc.nhb++] = rpc_now_ms();
  }
  return 0;
}

static void fc_on_close(struct rpc_conn *c, int err)
{
  (void)err;
  if (fc.conn == c)
    fc.conn = NULL;
}

static int fc_on_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  (void)l;
  fc.conn = c;
  return 0;
}

static const struct rpc_conn_ops fc_ops = {
    .on_msg = fc_on_msg,
    .on_close = fc_on_close,
};

static void on_tick(uv_timer_t *t)
{
  (void)t;
  if (fc.close_due && fc.conn != NULL) {
    fc.close_due = false;
    rpc_conn_close(fc.conn, 0);
  }
}

static void write_key(const char *path, uint8_t fill)
{
  uint8_t k[RPC_KEY_BYTES];
  memset(k, fill, sizeof(k));
  int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(write(fd, k, sizeof(k)), (ssize_t)sizeof(k));
  close(fd);
}

/* Listens with the key in file ctl_key; returns the port. */
static int fc_start(const char *ctl_key)
{
  struct rpc_auth auth;
  char err[256];

  signal(SIGPIPE, SIG_IGN);
  rpc_set_log_cb(on_rpc_log);
  memset(&auth, 0, sizeof(auth));
  ck_assert_int_eq(rpc_key_load(ctl_key, auth.key, err, sizeof(err)), PT_OK);
  auth.role = PT__PEER_ROLE__PEER_ROLE_CONTROLLER;
  snprintf(auth.node_id, sizeof(auth.node_id), "controller");
  ck_assert_int_eq(uv_loop_init(&fc.loop), 0);
  uv_timer_init(&fc.loop, &fc.tick);
  uv_timer_start(&fc.tick, on_tick, 5, 5);
  ck_assert_int_eq(rpc_listen_tcp(&fc.loop, "127.0.0.1", 0, &fc_ops, &auth,
                                  fc_on_accept, NULL, &fc.l),
                   PT_OK);
  return rpc_listener_port(fc.l);
}

static void fc_setup(void)
{
  memset(&fc, 0, sizeof(fc));
  fc.heartbeat_ms = 100;
  fc.dead_after_ms = 1000;
  snprintf(fc.dir, sizeof(fc.dir), "/tmp/pt-test-ncl.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(fc.dir));
  snprintf(fc.log, sizeof(fc.log), "%s/node.log", fc.dir);
  snprintf(fc.key, sizeof(fc.key), "%s/key", fc.dir);
  snprintf(fc.key2, sizeof(fc.key2), "%s/key2", fc.dir);
  snprintf(fc.sock, sizeof(fc.sock), "%s/sd/ptd.sock", fc.dir);
  write_key(fc.key, 0x11);
  write_key(fc.key2, 0x22);
}

static void fc_cleanup(void)
{
  char cmd[160];
  if (fc.pid > 0) {
    kill(fc.pid, SIGKILL);
    waitpid(fc.pid, NULL, 0);
  }
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", fc.dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup of %s failed\n", fc.dir);
}

/* Forks `ptd node --controller 127.0.0.1:PORT --node-id tn-a --key KEY
 * --state-dir DIR/sd --advertise 10.1.2.3 --failure-domain rack-1
 * --capacity 3`; its output goes to fc.log. */
static pid_t node_start(int port, const char *key)
{
  char ctl[64];
  char sd[96];

  snprintf(ctl, sizeof(ctl), "127.0.0.1:%d", port);
  snprintf(sd, sizeof(sd), "%s/sd", fc.dir);
  char *argv[] = {"node", "--controller", ctl, "--node-id", "tn-a", "--key",
                  (char *)key, "--state-dir", sd, "--advertise", "10.1.2.3",
                  "--failure-domain", "rack-1", "--capacity", "3",
                  "--log-level", "7", NULL};
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(fc.log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    exit(node_main((int)(sizeof(argv) / sizeof(argv[0])) - 1, argv));
  }
  fc.pid = pid;
  return pid;
}

/* Exit status, or -1 when killed or not exited by the deadline. */
static int node_wait(pid_t pid, int timeout_ms)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  int st;

  for (;;) {
    if (waitpid(pid, &st, WNOHANG) == pid) {
      fc.pid = 0;
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    }
    if (rpc_now_ms() >= deadline)
      return -1;
    usleep(10000);
  }
}

static bool cond_nreg(int want) { return fc.nreg >= want; }

/* Runs the fake controller until fc.nreg >= nreg and fc.nhb >= nhb, or
 * for ms at most. True when reached. */
static bool run_until(int nreg, int nhb, int ms)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)ms;

  while (rpc_now_ms() < deadline) {
    if (nreg > 0 && cond_nreg(nreg) && fc.nhb >= nhb)
      return true;
    uv_run(&fc.loop, UV_RUN_ONCE);
  }
  return nreg > 0 && cond_nreg(nreg) && fc.nhb >= nhb;
}

static void run_for(int ms)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)ms;
  while (rpc_now_ms() < deadline)
    uv_run(&fc.loop, UV_RUN_ONCE);
}

static int log_count(const char *needle)
{
  static char buf[1 << 17];
  int fd = open(fc.log, O_RDONLY);
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  int count = 0;
  for (const char *p = buf; (p = strstr(p, needle)) != NULL; p++)
    count++;
  return count;
}

static Pt__StatusReply *status_query(void)
{
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ProtobufCMessage *rep = NULL;
  int fd;

  ck_assert_int_eq(rpc_sock_connect_unix(fc.sock, &fd), PT_OK);
  ck_assert_int_eq(rpc_sock_call(fd, RPC_STATUS_QUERY, &q.base,
                                 RPC_STATUS_REPLY, 3000, &rep),
                   PT_OK);
  close(fd);
  return (Pt__StatusReply *)rep;
}

static void sigterm_ends(void)
{
  uint64_t t0 = rpc_now_ms();
  ck_assert_int_eq(kill(fc.pid, SIGTERM), 0);
  ck_assert_int_eq(node_wait(fc.pid, 3000), NODE_EXIT_STOPPED);
  ck_assert_uint_lt(rpc_now_ms() - t0, 3000);
}

START_TEST(registers_and_heartbeats)
{
  fc_setup();
  int port = fc_start(fc.key);
  node_start(port, fc.key);
  ck_assert(run_until(1, 8, 5000));

  const struct reg_seen *r = &fc.reg[0];
  ck_assert_str_eq(r->node_id, "tn-a");
  ck_assert_str_eq(r->peer_node, "tn-a");
  ck_assert_uint_eq(r->peer_role, PT__PEER_ROLE__PEER_ROLE_NODE);
  ck_assert_str_eq(r->advertise, "10.1.2.3");
  ck_assert(r->has_fd);
  ck_assert_str_eq(r->failure_domain, "rack-1");
  ck_assert_uint_eq(r->capacity, 3);
  ck_assert_uint_eq(r->inc_len, NODE_CL_INCARNATION_BYTES);
  static const uint8_t zero[NODE_CL_INCARNATION_BYTES];
  ck_assert(memcmp(r->incarnation, zero, sizeof(zero)) != 0);

  /* Heartbeats count up from 1, about heartbeat_ms apart. */
  for (int i = 0; i < fc.nhb; i++)
    ck_assert_uint_eq(fc.hb_seq[i], (uint64_t)i + 1);
  uint64_t span = fc.hb_at[fc.nhb - 1] - fc.hb_at[0];
  uint64_t avg = span / (uint64_t)(fc.nhb - 1);
  ck_assert_uint_ge(avg, 70);
  ck_assert_uint_le(avg, 200);
  /* The first one comes about heartbeat_ms after the registration. */
  ck_assert_uint_ge(fc.hb_at[0] - r->at, 60);

  /* ptctl status over the control socket. */
  Pt__StatusReply *s = status_query();
  ck_assert_int_eq(s->status, PT_OK);
  ck_assert_ptr_nonnull(s->mode);
  ck_assert_str_eq(s->mode, "cluster");
  ck_assert_str_eq(s->node_id, "tn-a");
  ck_assert_str_eq(s->controller_link, "registered");
  ck_assert_str_eq(s->state, "spare");
  ck_assert_uint_eq(s->n_ranks, 0);
  protobuf_c_message_free_unpacked(&s->base, NULL);
  ck_assert_int_eq(log_count("registered as node 'tn-a'"), 1);

  sigterm_ends();
  fc_cleanup();
}
END_TEST

START_TEST(reconnects_same_incarnation)
{
  fc_setup();
  int port = fc_start(fc.key);
  node_start(port, fc.key);
  ck_assert(run_until(1, 2, 5000));
  ck_assert_ptr_nonnull(fc.conn);
  uint64_t t0 = rpc_now_ms();
  rpc_conn_close(fc.conn, 0);
  /* The first retry comes within NODE_CL_RETRY_FIRST_MS (plus a margin). */
  ck_assert(run_until(2, 2, 3000));
  ck_assert_uint_lt(fc.reg[1].at - t0, 1000);
  ck_assert_mem_eq(fc.reg[1].incarnation, fc.reg[0].incarnation,
                   NODE_CL_INCARNATION_BYTES);
  ck_assert_uint_eq(fc.hb_seq[0], 1); /* counted per connection */
  ck_assert_int_eq(log_count("connection lost"), 1);
  ck_assert_int_eq(log_count("registered as node 'tn-a'"), 2);

  /* A new process start is a new incarnation. */
  sigterm_ends();
  node_start(port, fc.key);
  ck_assert(run_until(3, 0, 5000));
  ck_assert(memcmp(fc.reg[2].incarnation, fc.reg[0].incarnation,
                   NODE_CL_INCARNATION_BYTES) != 0);
  /* Its identity, in its state dir, is the same across process starts. */
  ck_assert_uint_eq(fc.reg[0].id_len, NODE_CL_IDENTITY_BYTES);
  ck_assert_uint_eq(fc.reg[2].id_len, NODE_CL_IDENTITY_BYTES);
  ck_assert_mem_eq(fc.reg[2].identity, fc.reg[0].identity,
                   NODE_CL_IDENTITY_BYTES);
  ck_assert(!fc.reg[0].replace);
  sigterm_ends();
  fc_cleanup();
}
END_TEST

START_TEST(wrong_key_backs_off)
{
  fc_setup();
  int port = fc_start(fc.key2);
  node_start(port, fc.key);
  run_for(3000);
  ck_assert_int_eq(fc.nreg, 0);
  /* Retried, with backoff: 100, 200, 400, 800 ms (each in [d/2, d]) put
   * 4 to 6 tries in 3 s; a node hammering would make dozens. */
  ck_assert_int_ge(fc.refusals, 3);
  ck_assert_int_le(fc.refusals, 8);
  /* The reason once, not once per try. */
  ck_assert_int_eq(log_count("authentication failed"), 1);

  Pt__StatusReply *s = status_query();
  ck_assert_str_ne(s->controller_link, "registered");
  ck_assert_ptr_nonnull(s->controller_error);
  ck_assert_ptr_nonnull(strstr(s->controller_error, "authentication"));
  protobuf_c_message_free_unpacked(&s->base, NULL);
  sigterm_ends();
  fc_cleanup();
}
END_TEST

START_TEST(refused_register_retried)
{
  fc_setup();
  fc.refuse_regs = 2;
  int port = fc_start(fc.key);
  node_start(port, fc.key);
  ck_assert(run_until(3, 1, 6000));
  /* Retried later, not at once. */
  ck_assert_uint_ge(fc.reg[1].at - fc.reg[0].at, 40);
  ck_assert_int_ge(log_count("node id taken by another incarnation"), 1);
  ck_assert_int_le(log_count("node id taken by another incarnation"), 2);
  ck_assert_int_eq(log_count("registered as node 'tn-a'"), 1);
  sigterm_ends();
  fc_cleanup();
}
END_TEST

START_TEST(flapping_controller_backs_off)
{
  fc_setup();
  fc.flap = true;
  int port = fc_start(fc.key);
  node_start(port, fc.key);
  ck_assert(run_until(5, 0, 8000));
  /* Each registration dropped at once: the delays keep doubling (the 4th
   * retry waits 400..800 ms) instead of starting over at 100 ms. */
  ck_assert_uint_ge(fc.reg[4].at - fc.reg[3].at, 300);
  sigterm_ends();
  fc_cleanup();
}
END_TEST

START_TEST(absurd_timings_refused)
{
  fc_setup();
  fc.heartbeat_ms = 0; /* absurd */
  int port = fc_start(fc.key);
  node_start(port, fc.key);
  ck_assert(run_until(2, 0, 5000));
  ck_assert_int_eq(log_count("registered as node"), 0);
  ck_assert_int_ge(log_count("heartbeat_ms 0"), 1);
  fc.heartbeat_ms = 100;
  ck_assert(run_until(fc.nreg + 1, 1, 5000));
  sigterm_ends();
  fc_cleanup();
}
END_TEST

START_TEST(key_open_to_others_refused)
{
  fc_setup();
  ck_assert_int_eq(chmod(fc.key, 0644), 0);
  node_start(1, fc.key);
  ck_assert_int_eq(node_wait(fc.pid, 3000), NODE_EXIT_USAGE);
  ck_assert_int_ge(log_count(fc.key), 1);
  fc_cleanup();
}
END_TEST

/* <state-dir>/node.id: made once, read back the same; a state dir of one
 * node id refuses another; a damaged file is refused, saying how to give
 * the node a new identity. */
START_TEST(identity_file)
{
  char dir[] = "/tmp/pt-test-nid.XXXXXX";
  ck_assert_ptr_nonnull(mkdtemp(dir));
  uint8_t a[NODE_CL_IDENTITY_BYTES], b[NODE_CL_IDENTITY_BYTES];
  bool made;
  char err[1024];

  ck_assert_int_eq(node_cluster_identity(dir, "n1", a, &made, err,
                                         sizeof(err)), PT_OK);
  ck_assert(made);
  ck_assert_int_eq(node_cluster_identity(dir, "n1", b, &made, err,
                                         sizeof(err)), PT_OK);
  ck_assert(!made);
  ck_assert_mem_eq(a, b, sizeof(a));
  ck_assert_int_eq(node_cluster_identity(dir, "n2", b, &made, err,
                                         sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "belongs to node 'n1', not 'n2'") != NULL, "%s",
                err);
  char path[128];
  snprintf(path, sizeof(path), "%s/node.id", dir);
  FILE *f = fopen(path, "w");
  ck_assert_ptr_nonnull(f);
  fputs("node n1\nidentity 12zz\n", f);
  fclose(f);
  ck_assert_int_eq(node_cluster_identity(dir, "n1", b, &made, err,
                                         sizeof(err)), PT_EFORMAT);
  ck_assert_msg(strstr(err, "damaged") != NULL &&
                    strstr(err, "--replace") != NULL, "%s", err);
  unlink(path);
  rmdir(dir);
}
END_TEST

START_TEST(retry_delays)
{
  for (uint32_t a = 1; a <= 12; a++) {
    uint32_t lo = node_cluster_retry_ms(a, 0);
    uint32_t hi = node_cluster_retry_ms(a, UINT32_MAX - 1);
    ck_assert_uint_le(hi, NODE_CL_RETRY_CAP_MS);
    ck_assert_uint_ge(lo, hi / 2 - 1);
    for (uint32_t k = 0; k < 100; k++) {
      uint32_t d = node_cluster_retry_ms(a, k * 7919u);
      ck_assert_uint_le(d, NODE_CL_RETRY_CAP_MS);
      ck_assert_uint_ge(d, a == 1 ? NODE_CL_RETRY_FIRST_MS / 2 : 1);
    }
  }
  ck_assert_uint_le(node_cluster_retry_ms(1, 12345), NODE_CL_RETRY_FIRST_MS);
  ck_assert_uint_ge(node_cluster_retry_ms(20, 0), NODE_CL_RETRY_CAP_MS / 2);
  char err[160];
  ck_assert_int_eq(node_cluster_timing_check(1000, 10000, err, sizeof(err)),
                   PT_OK);
  ck_assert_int_eq(node_cluster_timing_check(0, 10000, err, sizeof(err)),
                   -EINVAL);
  ck_assert_int_eq(node_cluster_timing_check(1000, 1000, err, sizeof(err)),
                   -EINVAL);
  ck_assert_int_eq(node_cluster_timing_check(1000, UINT32_MAX, err,
                                             sizeof(err)),
                   -EINVAL);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("node_cluster");
  TCase *tc = tcase_create("cluster");

  tcase_set_timeout(tc, 30);
  tcase_add_test(tc, retry_delays);
  tcase_add_test(tc, identity_file);
  tcase_add_test(tc, registers_and_heartbeats);
  tcase_add_test(tc, reconnects_same_incarnation);
  tcase_add_test(tc, wrong_key_backs_off);
  tcase_add_test(tc, refused_register_retried);
  tcase_add_test(tc, absurd_timings_refused);
  tcase_add_test(tc, flapping_controller_backs_off);
  tcase_add_test(tc, key_open_to_others_refused);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
