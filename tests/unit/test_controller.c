/*
 * test_controller.c — `ptd controller` as a process: started in a child
 * (controller_main) on 127.0.0.1 port 0 with a fresh key and state
 * directory, its port read back from its log; blocking clients
 * (rpc_sock_connect_tcp, then tsess_handshake: rpc_sock_session_handshake)
 * play nodes and ptctl.
 *
 * Two fake nodes register and heartbeat, NODES_QUERY as ctl sees them;
 * one stops heartbeating and is seen unreachable then dead within the
 * deadline, its connection closed; a wrong key, a duplicate node id, a
 * wrong role and hostile frames are refused with the controller
 * unaffected; a node that never registers is closed with a line; a lost connection coming back is a reconnect, a new
 * incarnation a restart; a second controller on the same state directory
 * is refused; SIGTERM ends it with exit 0.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/controller/controller.h"
#include "rpc/rpc.h"
#include "tests/unit/tsess.h"
#include "tests/unit/unit.h"

static struct {
  char dir[64], key[128], sd[128], log[128];
  pid_t pid;
  int port;
} C;

static char *read_log(void)
{
  static char buf[1 << 18];
  int fd = open(C.log, O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, buf, sizeof(buf) - 1) : 0;
  if (fd >= 0)
    close(fd);
  buf[n > 0 ? n : 0] = '\0';
  return buf;
}

/* True once the log holds s (within ms). */
static bool wait_log(const char *s, int ms)
{
  uint64_t dl = rpc_now_ms() + (uint64_t)ms;
  do {
    if (strstr(read_log(), s) != NULL)
      return true;
    usleep(10000);
  } while (rpc_now_ms() < dl);
  return false;
}

static pid_t spawn(const char *logpath, const char *sd, const char *hb,
                   const char *dead, const char *grace)
{
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(logpath, O_WRONLY | O_CREAT | O_APPEND, 0600);
    dup2(fd, 2);
    char *argv[] = {"controller", "--listen", "127.0.0.1:0", "--state-dir",
                    (char *)sd, "--key", C.key, "--heartbeat-ms", (char *)hb,
                    "--dead-after-ms", (char *)dead, "--grace-ms",
                    (char *)grace, "--log-level", "7", NULL};
    exit(controller_main(15, argv)); /* exit: LeakSanitizer checks it */
  }
  return pid;
}

static void ctl_start(const char *hb, const char *dead, const char *grace)
{
  snprintf(C.dir, sizeof(C.dir), "/tmp/pt-test-ctl.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(C.dir));
  snprintf(C.key, sizeof(C.key), "%s/key", C.dir);
  snprintf(C.sd, sizeof(C.sd), "%s/state", C.dir);
  snprintf(C.log, sizeof(C.log), "%s/ctl.log", C.dir);
  ck_assert_int_eq(rpc_key_write(C.key, NULL, 0), PT_OK);
  C.pid = spawn(C.log, C.sd, hb, dead, grace);
  ck_assert_msg(wait_log("listening on 127.0.0.1:", 5000), "no port: %s",
                read_log());
  const char *p = strstr(read_log(), "listening on 127.0.0.1:");
  C.port = atoi(p + strlen("listening on 127.0.0.1:"));
  ck_assert_int_gt(C.port, 0);
}

/* SIGTERM, exit 0 within 5 s; removes the directory. */
static void ctl_stop(void)
{
  int st = 0;
  ck_assert_int_eq(kill(C.pid, SIGTERM), 0);
  uint64_t dl = rpc_now_ms() + 5000;
  pid_t w;
  while ((w = waitpid(C.pid, &st, WNOHANG)) == 0 && rpc_now_ms() < dl)
    usleep(10000);
  if (w == 0) {
    kill(C.pid, SIGKILL);
    waitpid(C.pid, &st, 0);
    ck_abort_msg("controller still running 5 s after SIGTERM");
  }
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0, "status %d: %s", st,
                read_log());
  char cmd[128];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", C.dir);
  ck_assert_int_eq(system(cmd), 0);
}

static int dial_key(uint32_t role, const char *id, const char *keypath,
                    int *rc_out)
{
  struct rpc_auth a = {.role = role};
  int fd;
  snprintf(a.node_id, sizeof(a.node_id), "%s", id);
  ck_assert_int_eq(rpc_key_load(keypath, a.key, NULL, 0), PT_OK);
  ck_assert_int_eq(rpc_sock_connect_tcp("127.0.0.1", C.port, 2000, &fd),
                   PT_OK);
  *rc_out = tsess_handshake(fd, &a, 5000, NULL, NULL);
  return fd;
}

static int dial(uint32_t role, const char *id)
{
  int rc, fd = dial_key(role, id, C.key, &rc);
  ck_assert_int_eq(rc, PT_OK);
  return fd;
}

/* Registers as id on fd; returns the reply's status. */
static int reg_full(int fd, const char *id, const char *adv, uint32_t cap,
                    uint8_t inc, char *msg, size_t msglen)
{
  Pt__NodeRegister r = PT__NODE_REGISTER__INIT;
  uint8_t incb[16] = {inc};
  ProtobufCMessage *out = NULL;

  r.node_id = (char *)id;
  r.advertise = (char *)adv;
  r.capacity = cap;
  r.failure_domain = "rack-a";
  r.incarnation.data = incb;
  r.incarnation.len = sizeof(incb);
  int rc = rpc_sock_session_call(tsess(fd), RPC_NODE_REGISTER, &r.base,
                         RPC_NODE_REGISTER_REPLY, 5000, &out);
  if (rc != PT_OK)
    return rc;
  const Pt__NodeRegisterReply *m = (const Pt__NodeRegisterReply *)out;
  rc = m->status;
  if (msg != NULL)
    snprintf(msg, msglen, "%s", m->message != NULL ? m->message : "");
  if (rc == PT_OK) {
    ck_assert(m->has_heartbeat_ms && m->has_dead_after_ms);
    ck_assert_uint_gt(m->dead_after_ms, m->heartbeat_ms);
  }
  protobuf_c_message_free_unpacked(out, NULL);
  return rc;
}

static int node(const char *id, uint8_t inc)
{
  int fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, id);
  ck_assert_int_eq(reg_full(fd, id, "127.0.0.1", 2, inc, NULL, 0), PT_OK);
  return fd;
}

static void heartbeat(int fd, uint64_t seq)
{
  Pt__Heartbeat h = PT__HEARTBEAT__INIT;
  h.seq = seq;
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_HEARTBEAT, 0, &h.base,
                                 rpc_now_ms() + 2000),
                   PT_OK);
}

/* NODES_QUERY as ctl. OUT: the reply (free it). */
static Pt__NodesReply *query(void)
{
  int fd = dial(PT__PEER_ROLE__PEER_ROLE_CTL, "ptctl");
  Pt__NodesQuery q = PT__NODES_QUERY__INIT;
  ProtobufCMessage *out = NULL;
  ck_assert_int_eq(rpc_sock_session_call(tsess(fd), RPC_NODES_QUERY, &q.base, RPC_NODES_REPLY,
                                 5000, &out),
                   PT_OK);
  close(fd);
  Pt__NodesReply *r = (Pt__NodesReply *)out;
  ck_assert_int_eq(r->status, 0);
  return r;
}

/* The state the controller reports for id ("" when unknown). */
static const char *state_of(const char *id)
{
  static char st[32];
  Pt__NodesReply *r = query();
  st[0] = '\0';
  for (size_t i = 0; i < r->n_nodes; i++)
    if (strcmp(r->nodes[i]->node_id, id) == 0)
      snprintf(st, sizeof(st), "%s", r->nodes[i]->state);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  return st;
}

START_TEST(two_nodes_one_dies)
{
  ctl_start("100", "800", "800");
  Pt__NodesReply *r = query();
  ck_assert_uint_eq(r->n_nodes, 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);

  int a = node("node-a", 1), b = node("node-b", 1);
  for (uint64_t s = 1; s <= 3; s++) {
    heartbeat(a, s);
    heartbeat(b, s);
    usleep(100000);
  }
  r = query();
  ck_assert_uint_eq(r->n_nodes, 2);
  for (size_t i = 0; i < 2; i++) {
    ck_assert_str_eq(r->nodes[i]->state, "alive");
    ck_assert_str_eq(r->nodes[i]->advertise, "127.0.0.1");
    ck_assert_uint_eq(r->nodes[i]->capacity, 2);
    ck_assert_str_eq(r->nodes[i]->failure_domain, "rack-a");
    ck_assert(r->nodes[i]->has_heartbeat_age_ms);
    ck_assert_uint_lt(r->nodes[i]->heartbeat_age_ms, 300);
    ck_assert_ptr_null(r->nodes[i]->job);
  }
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* b stops heartbeating (its connection stays open): unreachable after 3
   * missed heartbeats, dead at 800 ms; a heartbeats on. */
  uint64_t t0 = rpc_now_ms(), seen_unreach = 0, seen_dead = 0;
  for (uint64_t s = 4; rpc_now_ms() < t0 + 3000 && seen_dead == 0; s++) {
    heartbeat(a, s);
    const char *st = state_of("node-b");
    if (strcmp(st, "unreachable") == 0 && seen_unreach == 0)
      seen_unreach = rpc_now_ms() - t0;
    if (strcmp(st, "dead") == 0)
      seen_dead = rpc_now_ms() - t0;
    ck_assert_str_eq(state_of("node-a"), "alive");
    usleep(50000);
  }
  ck_assert_msg(seen_unreach > 0 && seen_dead > seen_unreach,
                "unreachable at %llu ms, dead at %llu ms",
                (unsigned long long)seen_unreach,
                (unsigned long long)seen_dead);
  ck_assert_uint_ge(seen_dead, 600); /* not before its deadline */
  ck_assert_uint_le(seen_dead, 1500);
  ck_assert(unit_closed_by_peer(b, 2000)); /* the controller hung up */
  ck_assert(wait_log("node 'node-b' alive -> unreachable: silent", 100));
  ck_assert(wait_log("node 'node-b' unreachable -> dead: silent", 100));
  close(a);
  close(b);
  ctl_stop();
}
END_TEST

START_TEST(lost_reconnect_restart)
{
  ctl_start("100", "2000", "500");
  int a = node("node-a", 1);
  close(a);
  ck_assert(wait_log("node 'node-a' alive -> unreachable: connection lost",
                     2000));
  ck_assert_str_eq(state_of("node-a"), "unreachable");
  /* back within the grace, same incarnation: a reconnect */
  a = node("node-a", 1);
  ck_assert(wait_log("unreachable -> alive: reconnected (same incarnation)",
                     2000));
  ck_assert_str_eq(state_of("node-a"), "alive");
  close(a);
  /* not back within the grace (500 ms): dead, long before dead-after */
  ck_assert(wait_log("unreachable -> dead: connection lost", 1500));
  ck_assert_str_eq(state_of("node-a"), "dead");
  /* a new incarnation: a restart */
  a = node("node-a", 2);
  ck_assert(wait_log("dead -> alive: restarted (new incarnation)", 2000));
  close(a);
  ctl_stop();
}
END_TEST

/* A node whose old connection went silent (a half-open TCP after its
 * host rebooted, say) comes back on a new one: the new one takes over,
 * the old one is closed. */
START_TEST(takeover_of_silent_conn)
{
  ctl_start("100", "5000", "5000");
  int a = node("node-a", 1);
  ck_assert(wait_log("node 'node-a' alive -> unreachable: silent", 2000));
  int b = node("node-a", 2);
  ck_assert(wait_log("unreachable -> alive: restarted (new incarnation)",
                     2000));
  ck_assert(unit_closed_by_peer(a, 2000));
  heartbeat(b, 1);
  ck_assert_str_eq(state_of("node-a"), "alive");
  close(a);
  close(b);
  ctl_stop();
}
END_TEST

/* The controller itself held up (here SIGSTOPped; on a loaded machine,
 * descheduled or in a slow write) for longer than dead-after while the
 * node heartbeats on: the heartbeats wait in its socket, and once it runs
 * again it reads them before it judges anyone silent. The node stays
 * alive and keeps its connection: the controller's own stall is not the
 * node's silence. */
START_TEST(stalled_controller_reads_first)
{
  ctl_start("100", "800", "800"); /* unreachable at 300 ms, dead at 800 */
  int a = node("node-a", 1);
  uint64_t s = 1;
  heartbeat(a, s++);
  ck_assert_str_eq(state_of("node-a"), "alive");
  /* Stopped for sure before the first heartbeat of the stall is sent (one
   * that woke it first would be read with all the rest once continued). */
  int st;
  ck_assert_int_eq(kill(C.pid, SIGSTOP), 0);
  ck_assert_int_eq(waitpid(C.pid, &st, WUNTRACED), C.pid);
  ck_assert(WIFSTOPPED(st));
  for (uint64_t t0 = rpc_now_ms(); rpc_now_ms() < t0 + 1200;) {
    heartbeat(a, s++); /* into the socket's buffer */
    usleep(50000);
  }
  ck_assert_int_eq(kill(C.pid, SIGCONT), 0);
  for (uint64_t t0 = rpc_now_ms(); rpc_now_ms() < t0 + 400;) {
    Pt__Heartbeat h = PT__HEARTBEAT__INIT;
    h.seq = s++;
    ck_assert_msg(rpc_sock_session_send(tsess(a), RPC_HEARTBEAT, 0, &h.base,
                                rpc_now_ms() + 2000) == PT_OK,
                  "the controller closed the node's connection: %s",
                  read_log());
    usleep(50000);
  }
  ck_assert_str_eq(state_of("node-a"), "alive");
  ck_assert_msg(strstr(read_log(), "node 'node-a' alive ->") == NULL,
                "the stalled controller blamed the node: %s", read_log());
  ck_assert(!unit_closed_by_peer(a, 100));
  close(a);
  ctl_stop();
}
END_TEST

START_TEST(refusals)
{
  char msg[512];
  int rc;

  ctl_start("100", "5000", "5000");
  int a = node("node-a", 1);

  /* a wrong key: the handshake fails, nothing registers */
  char other[160];
  snprintf(other, sizeof(other), "%s/other.key", C.dir);
  ck_assert_int_eq(rpc_key_write(other, NULL, 0), PT_OK);
  int fd = dial_key(PT__PEER_ROLE__PEER_ROLE_NODE, "node-x", other, &rc);
  ck_assert_int_ne(rc, PT_OK);
  close(fd);
  ck_assert(wait_log("authentication failed", 2000));

  /* a duplicate node id: refused with a reply, the first keeps it */
  fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, "node-a");
  ck_assert_int_eq(reg_full(fd, "node-a", "127.0.0.2", 2, 9, msg, sizeof(msg)),
                   -EEXIST);
  ck_assert_ptr_nonnull(strstr(msg, "already registered"));
  ck_assert(unit_closed_by_peer(fd, 2000));
  close(fd);

  /* register as another id than the handshake's */
  fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, "node-y");
  ck_assert_int_eq(reg_full(fd, "node-z", "127.0.0.1", 2, 1, msg, sizeof(msg)),
                   -EINVAL);
  ck_assert(unit_closed_by_peer(fd, 2000));
  close(fd);

  /* capacity 0, an oversized advertised address */
  fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, "node-y");
  ck_assert_int_eq(reg_full(fd, "node-y", "127.0.0.1", 0, 1, msg, sizeof(msg)),
                   -EINVAL);
  ck_assert_ptr_nonnull(strstr(msg, "capacity 0"));
  close(fd);
  char big[400];
  memset(big, 'a', sizeof(big) - 1);
  big[sizeof(big) - 1] = '\0';
  fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, "node-y");
  ck_assert_int_eq(reg_full(fd, "node-y", big, 1, 1, msg, sizeof(msg)),
                   -EINVAL);
  close(fd);

  /* a frame other than NODE_REGISTER first */
  fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, "node-y");
  heartbeat(fd, 1);
  ck_assert(unit_closed_by_peer(fd, 2000));
  close(fd);
  ck_assert(wait_log("sent HEARTBEAT before NODE_REGISTER", 2000));

  /* a node asking NODES_QUERY, a second NODE_REGISTER */
  fd = node("node-y", 1);
  Pt__NodesQuery q = PT__NODES_QUERY__INIT;
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), RPC_NODES_QUERY, 7, &q.base,
                                 rpc_now_ms() + 2000),
                   PT_OK);
  ck_assert(unit_closed_by_peer(fd, 2000));
  close(fd);

  /* ptctl sending a node's frame; a role with no business here */
  fd = dial(PT__PEER_ROLE__PEER_ROLE_CTL, "ptctl");
  heartbeat(fd, 1);
  ck_assert(unit_closed_by_peer(fd, 2000));
  close(fd);
  fd = dial(PT__PEER_ROLE__PEER_ROLE_SMP, "smp");
  ck_assert(unit_closed_by_peer(fd, 2000));
  close(fd);
  ck_assert(wait_log("has nothing to do on the controller's port", 2000));

  /* the controller is unaffected: node-a is still alive on its conn */
  heartbeat(a, 1);
  ck_assert_str_eq(state_of("node-a"), "alive");
  ck_assert_str_eq(state_of("node-z"), "");
  close(a);
  ctl_stop();
}
END_TEST

/* A peer with the key, as a node, that never registers (part of a frame,
 * then silence): closed 10 s after its last byte, with a line naming it. */
START_TEST(unregistered_node_closed)
{
  ctl_start("1000", "10000", "10000");
  int fd = dial(PT__PEER_ROLE__PEER_ROLE_NODE, "lazy");
  static const uint8_t part[10] = {0x50, 0x54, 0x52, 0x46};
  ck_assert_int_eq(write(fd, part, sizeof(part)), (ssize_t)sizeof(part));
  uint64_t t0 = rpc_now_ms();
  ck_assert(unit_closed_by_peer(fd, 15000));
  ck_assert_uint_ge(rpc_now_ms() - t0, 9000);
  ck_assert_msg(wait_log("('lazy'): it did not register within 10000 ms of "
                         "its last byte", 1000), "%s", read_log());
  close(fd);
  ctl_stop();
}
END_TEST

START_TEST(second_controller_refused)
{
  ctl_start("1000", "10000", "10000");
  char log2[sizeof(C.log)];
  int st;
  ck_assert_int_lt(snprintf(log2, sizeof(log2), "%s/second.log", C.dir),
                   (int)sizeof(log2));
  pid_t p2 = spawn(log2, C.sd, "1000", "10000", "10000");
  ck_assert_int_eq(waitpid(p2, &st, 0), p2);
  ck_assert(WIFEXITED(st));
  ck_assert_int_eq(WEXITSTATUS(st), CTL_EXIT_USAGE);
  snprintf(C.log, sizeof(C.log), "%s", log2);
  ck_assert_msg(wait_log("another ptd controller runs with state directory",
                         100),
                "%s", read_log());
  snprintf(C.log, sizeof(C.log), "%s/ctl.log", C.dir);
  Pt__NodesReply *r = query(); /* the first still answers */
  ck_assert_uint_eq(r->n_nodes, 0);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  ctl_stop();
}
END_TEST

int main(void)
{
  Suite *s = suite_create("controller");
  TCase *tc = tcase_create("controller");

  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, two_nodes_one_dies);
  tcase_add_test(tc, lost_reconnect_restart);
  tcase_add_test(tc, takeover_of_silent_conn);
  tcase_add_test(tc, stalled_controller_reads_first);
  tcase_add_test(tc, refusals);
  tcase_add_test(tc, unregistered_node_closed);
  tcase_add_test(tc, second_controller_refused);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
