/*
 * test_node_ctl.c — `ptd node` as a whole, in a forked child of the test:
 * its control socket survives garbage, oversized, truncated, undecodable
 * and wrong-type frames while a good client still gets STATUS_REPLY and
 * STOP; and the job's ends give the documented exit status (0 completed,
 * 1 failed, 2 configuration, 3 stopped), with restarts bounded and
 * EX_CONFIG never retried; a second node on the same state directory is
 * refused; a node killed with SIGKILL is replaced by one that re-adopts
 * its SMP and trainer.
 *
 * The node spawns its SMPs as /proc/self/exe with argv[1] "smp": this test
 * binary, whose main() then runs smp_main, just as ptd would.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"
#include "tests/unit/unit.h"

struct env {
  char dir[64], sock[128], log[128], job[32], prefix[32];
};

/* This binary's path: run as "SELF trainer-done" it is a trainer that
 * finishes properly (see main()). */
static char self_exe[4096];

static const char *self(void)
{
  ssize_t n = readlink("/proc/self/exe", self_exe, sizeof(self_exe) - 1);
  ck_assert_int_gt(n, 0);
  self_exe[n] = '\0';
  return self_exe;
}

/* A trainer that tells its SMP it finished: HELLO (through pt_restore),
 * then Bye(done). Exit 0 alone does not count as finished. */
static int trainer_done(void)
{
  static uint64_t state[8];
  pt_client *c = NULL;
  uint64_t step = 0;

  if (pt_client_open(&c, NULL) != PT_OK)
    return 1;
  if (pt_region_register(c, "state", state, sizeof(state), PT_MEM_HOST) !=
      PT_OK) {
    pt_client_close(c, false);
    return 1;
  }
  int rc = pt_restore(c, &step);
  pt_client_close(c, rc == PT_OK || rc == PT_ENOSNAP);
  return rc == PT_OK || rc == PT_ENOSNAP ? 0 : 1;
}

static void env_init(struct env *e)
{
  snprintf(e->dir, sizeof(e->dir), "/tmp/pt-test-node.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(e->dir));
  snprintf(e->sock, sizeof(e->sock), "%s/ptd.sock", e->dir);
  snprintf(e->log, sizeof(e->log), "%s/node.log", e->dir);
  snprintf(e->job, sizeof(e->job), "tn%d", (int)getpid());
  snprintf(e->prefix, sizeof(e->prefix), "tn%d-", (int)getpid());
}

static void env_cleanup(struct env *e)
{
  char cmd[256];
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'; rm -f /dev/shm/%spt.*", e->dir,
           e->prefix);
  if (system(cmd) != 0)
    fprintf(stderr, "cleanup of %s failed\n", e->dir);
}

/* Forks a node: `ptd node --job J --state-dir D --shm-prefix P EXTRA...`,
 * where EXTRA ends with NULL. Its stderr and stdout go to e->log. */
static pid_t node_start(struct env *e, ...)
{
  char *argv[40];
  int argc = 0;
  va_list ap;

  argv[argc++] = "node";
  argv[argc++] = "--job";
  argv[argc++] = e->job;
  argv[argc++] = "--state-dir";
  argv[argc++] = e->dir;
  argv[argc++] = "--shm-prefix";
  argv[argc++] = e->prefix;
  va_start(ap, e);
  for (char *a; (a = va_arg(ap, char *)) != NULL && argc < 39;)
    argv[argc++] = a;
  va_end(ap);
  argv[argc] = NULL;

  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int fd = open(e->log, O_WRONLY | O_CREAT | O_APPEND, 0600);
    if (fd >= 0) {
      dup2(fd, STDOUT_FILENO);
      dup2(fd, STDERR_FILENO);
      close(fd);
    }
    exit(node_main(argc, argv));
  }
  return pid;
}

/* Waits for pid with a deadline; returns its exit status, or -1 when it was
 * killed by a signal or did not exit in time (it is then killed). */
static int node_wait(pid_t pid, int timeout_ms)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  int st;

  for (;;) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    if (w == pid)
      return WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (rpc_now_ms() >= deadline) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      return -1;
    }
    usleep(10000);
  }
}

static bool log_has(const struct env *e, const char *needle)
{
  char buf[1 << 16];
  int fd = open(e->log, O_RDONLY);
  if (fd < 0)
    return false;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return false;
  buf[n] = '\0';
  return strstr(buf, needle) != NULL;
}

static int log_count(const struct env *e, const char *needle)
{
  char buf[1 << 16];
  int fd = open(e->log, O_RDONLY), count = 0;
  if (fd < 0)
    return 0;
  ssize_t n = read(fd, buf, sizeof(buf) - 1);
  close(fd);
  if (n <= 0)
    return 0;
  buf[n] = '\0';
  for (char *p = buf; (p = strstr(p, needle)) != NULL; p++)
    count++;
  return count;
}

/* One STATUS_QUERY; OUT: *reply (caller frees). */
static int status(const struct env *e, Pt__StatusReply **reply)
{
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ProtobufCMessage *m = NULL;
  int fd, rc;

  /* As ptctl does: a full backlog (-EAGAIN) is asked again, for 3 s. */
  for (int k = 0; k < 300; k++) {
    if ((rc = rpc_sock_connect_unix(e->sock, &fd)) != -EAGAIN)
      break;
    usleep(10000);
  }
  if (rc != PT_OK)
    return rc;
  rc = rpc_sock_call(fd, RPC_STATUS_QUERY, &q.base, RPC_STATUS_REPLY, 3000, &m);
  close(fd);
  *reply = (Pt__StatusReply *)m;
  return rc;
}

/* Polls STATUS until the job state is `want` (deadline). OUT: the last
 * reply, or NULL. */
static Pt__StatusReply *status_wait(const struct env *e, const char *want,
                                    int timeout_ms)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  Pt__StatusReply *r = NULL;

  for (;;) {
    if (status(e, &r) == PT_OK) {
      if (strcmp(r->state, want) == 0 && r->n_ranks > 0 &&
          r->ranks[0]->trainer_pid > 0)
        return r;
      protobuf_c_message_free_unpacked(&r->base, NULL);
      r = NULL;
    }
    if (rpc_now_ms() >= deadline)
      return NULL;
    usleep(20000);
  }
}

static int stop(const struct env *e)
{
  Pt__Stop q = PT__STOP__INIT;
  ProtobufCMessage *m = NULL;
  int fd, rc;

  rc = rpc_sock_connect_unix(e->sock, &fd);
  if (rc != PT_OK)
    return rc;
  rc = rpc_sock_call(fd, RPC_STOP, &q.base, RPC_REPLY, 3000, &m);
  close(fd);
  if (rc == PT_OK) {
    rc = ((Pt__Reply *)m)->status;
    protobuf_c_message_free_unpacked(m, NULL);
  }
  return rc;
}

static void hdr(uint8_t out[RPC_HDR_BYTES], uint32_t type, uint32_t len)
{
  struct rpc_hdr h = {.type = type, .length = len, .request_id = 7};
  rpc_hdr_encode(out, &h);
}

/* Sends bytes on a fresh connection (then, if half_close, shuts down the
 * write side) and expects the node to close it within 5 s. */
static void bad_client(const struct env *e, const char *what,
                       const uint8_t *data, size_t len, bool half_close)
{
  int fd;
  char buf[4096];

  ck_assert_int_eq(rpc_sock_connect_unix(e->sock, &fd), PT_OK);
  ck_assert_msg(send(fd, data, len, MSG_NOSIGNAL) == (ssize_t)len,
                "%s: send failed", what);
  if (half_close)
    shutdown(fd, SHUT_WR);
  uint64_t deadline = rpc_now_ms() + 5000;
  for (;;) {
    ssize_t n = recv(fd, buf, sizeof(buf), MSG_DONTWAIT);
    if (n == 0 || (n < 0 && errno != EAGAIN && errno != EWOULDBLOCK))
      break; /* closed (EOF or reset) */
    ck_assert_msg(rpc_now_ms() < deadline, "%s: connection not closed", what);
    usleep(10000);
  }
  close(fd);
}

/* pid (a child, or an orphan this test reaps as subreaper) has exited. */
static void assert_gone(pid_t pid)
{
  uint64_t deadline = rpc_now_ms() + 3000;
  int st;
  while (waitpid(pid, &st, WNOHANG) != pid && kill(pid, 0) == 0) {
    ck_assert_msg(rpc_now_ms() < deadline, "pid %d still alive", (int)pid);
    usleep(10000);
  }
}

START_TEST(control_socket_survives_bad_frames)
{
  struct env e;
  uint8_t frame[RPC_HDR_BYTES + 64];

  env_init(&e);
  pid_t node = node_start(&e, "--ranks", "1", "--", "/bin/sleep", "30", NULL);
  Pt__StatusReply *r = status_wait(&e, "running", 10000);
  ck_assert_msg(r != NULL, "the node never reported 'running'");
  ck_assert_str_eq(r->job, e.job);
  ck_assert_int_eq(r->node_pid, node);
  ck_assert_uint_eq(r->n_ranks, 1);
  ck_assert_int_gt(r->ranks[0]->smp_pid, 0);
  pid_t trainer = r->ranks[0]->trainer_pid;
  protobuf_c_message_free_unpacked(&r->base, NULL);

  /* Garbage. */
  uint8_t junk[4096];
  srand(5);
  for (size_t i = 0; i < sizeof(junk); i++)
    junk[i] = (uint8_t)rand();
  bad_client(&e, "garbage", junk, sizeof(junk), false);
  /* Oversized: a header announcing 2 GiB. */
  hdr(frame, RPC_STATUS_QUERY, 0x7fffffffu);
  bad_client(&e, "oversized", frame, RPC_HDR_BYTES, false);
  /* Truncated: 100 body bytes announced, 10 sent, then EOF. */
  hdr(frame, RPC_STATUS_QUERY, 100);
  memset(frame + RPC_HDR_BYTES, 0x0a, 10);
  bad_client(&e, "truncated", frame, RPC_HDR_BYTES + 10, true);
  /* A body that does not decode as its type. */
  hdr(frame, RPC_HELLO, 16);
  memset(frame + RPC_HDR_BYTES, 0xff, 16);
  bad_client(&e, "undecodable", frame, RPC_HDR_BYTES + 16, false);
  /* A well-formed frame of a type the control socket does not serve. */
  Pt__Bye bye = PT__BYE__INIT;
  uint8_t *packed = NULL;
  size_t plen = 0;
  ck_assert_int_eq(rpc_frame_pack(&packed, &plen, RPC_BYE, 9, &bye.base), PT_OK);
  bad_client(&e, "wrong type", packed, plen, false);
  free(packed);

  /* Still serving, and still the same job. */
  ck_assert_int_eq(status(&e, &r), PT_OK);
  ck_assert_str_eq(r->state, "running");
  ck_assert_int_eq(r->ranks[0]->trainer_pid, trainer);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  ck_assert(log_has(&e, "refusing a BYE frame"));

  ck_assert_int_eq(stop(&e), PT_OK);
  ck_assert_int_eq(node_wait(node, 15000), 3);
  assert_gone(trainer);
  ck_assert(log_has(&e, "job stopped"));
  ck_assert(log_has(&e, "killed by signal SIGTERM"));
  env_cleanup(&e);
}
END_TEST

/* Idle clients cannot lock ptctl out: with 40 connections open that never
 * speak (more than the node serves at once), a new client still gets its
 * status, again and again, and a stop still works; a burst of 500 more
 * gets one log line, not 500 (rate-limited). */
START_TEST(idle_clients_do_not_lock_out_ptctl)
{
  struct env e;
  int idle[40];

  env_init(&e);
  pid_t node = node_start(&e, "--ranks", "1", "--", "/bin/sleep", "30", NULL);
  Pt__StatusReply *r = status_wait(&e, "running", 10000);
  ck_assert_msg(r != NULL, "the node never reported 'running'");
  protobuf_c_message_free_unpacked(&r->base, NULL);
  for (int i = 0; i < 40; i++)
    ck_assert_int_eq(rpc_sock_connect_unix(e.sock, &idle[i]), PT_OK);
  for (int k = 0; k < 5; k++) {
    ck_assert_int_eq(status(&e, &r), PT_OK);
    ck_assert_str_eq(r->job, e.job);
    protobuf_c_message_free_unpacked(&r->base, NULL);
  }
  ck_assert(log_has(&e, "closing the one idle longest"));
  /* 500 more in a burst: served the same way, with one log line for all
   * (rate-limited), not one per connection closed. */
  static int burst[500];
  for (int i = 0; i < 500; i++) {
    int rc = -EAGAIN;
    for (int k = 0; k < 500 && rc == -EAGAIN; k++) /* backlog full: retry */
      if ((rc = rpc_sock_connect_unix(e.sock, &burst[i])) == -EAGAIN)
        usleep(2000);
    ck_assert_int_eq(rc, PT_OK);
  }
  ck_assert_int_eq(status(&e, &r), PT_OK);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  ck_assert_int_le(log_count(&e, "connections open; closing the one idle "
                                 "longest"), 2);
  for (int i = 0; i < 500; i++)
    close(burst[i]);
  ck_assert_int_eq(stop(&e), PT_OK);
  ck_assert_int_eq(node_wait(node, 15000), 3);
  for (int i = 0; i < 40; i++)
    close(idle[i]);
  env_cleanup(&e);
}
END_TEST

START_TEST(completes_with_status_0)
{
  struct env e;

  env_init(&e);
  pid_t node = node_start(&e, "--ranks", "2", "--", self(), "trainer-done",
                          NULL);
  ck_assert_int_eq(node_wait(node, 15000), 0);
  ck_assert(log_has(&e, "no snapshot: starting fresh"));
  ck_assert_int_eq(log_count(&e, "exited with status 0"), 2 + 2);
  ck_assert(log_has(&e, "job completed"));
  /* node.state is gone with the job; the control socket too. */
  char path[160];
  struct stat st;
  snprintf(path, sizeof(path), "%s/node.state", e.dir);
  ck_assert_int_eq(stat(path, &st), -1);
  ck_assert_int_eq(stat(e.sock, &st), -1);
  env_cleanup(&e);
}
END_TEST

START_TEST(failure_restarts_bounded)
{
  struct env e;

  env_init(&e);
  pid_t node = node_start(&e, "--ranks", "1", "--max-restarts", "2",
                          "--backoff-ms", "10", "--", "/bin/false", NULL);
  ck_assert_int_eq(node_wait(node, 20000), 1);
  ck_assert(log_has(&e, "restarting job (restart 1, 1 of at most 2 in 600 s) "
                        "in 10 ms"));
  ck_assert(log_has(&e, "restarting job (restart 2, 2 of at most 2 in 600 s) "
                        "in 20 ms"));
  ck_assert(!log_has(&e, "restart 3"));
  ck_assert_int_eq(log_count(&e, "exited with status 1\n"), 3);
  ck_assert(log_has(&e, "job failed: trainer rank 0"));
  env_cleanup(&e);
}
END_TEST

/* --max-restarts counts within --restart-window: failures further apart
 * than the window never use the budget up. A trainer that fails three
 * times, 1.2 s after each start, then finishes: with one restart per 1 s
 * window the job completes (counted over its whole life it would fail at
 * the second failure). */
START_TEST(restarts_counted_in_window)
{
  struct env e;
  char cmd[4600];

  env_init(&e);
  snprintf(cmd, sizeof(cmd),
           "n=$(cat %s/count 2>/dev/null || echo 0); echo $((n + 1)) > "
           "%s/count; if [ $n -lt 3 ]; then sleep 1.2; exit 1; fi; "
           "exec %s trainer-done",
           e.dir, e.dir, self());
  pid_t node = node_start(&e, "--ranks", "1", "--max-restarts", "1",
                          "--restart-window", "1", "--backoff-ms", "10", "--",
                          "/bin/sh", "-c", cmd, NULL);
  ck_assert_int_eq(node_wait(node, 30000), 0);
  ck_assert_int_eq(log_count(&e, "exited with status 1\n"), 3);
  ck_assert(log_has(&e, "restarting job (restart 3, 1 of at most 1 in 1 s)"));
  ck_assert(log_has(&e, "job completed"));
  env_cleanup(&e);

  /* Within the window, the second failure ends the job. */
  env_init(&e);
  pid_t again = node_start(&e, "--ranks", "1", "--max-restarts", "1",
                           "--restart-window", "60", "--backoff-ms", "10",
                           "--", "/bin/false", NULL);
  ck_assert_int_eq(node_wait(again, 20000), 1);
  ck_assert(log_has(&e, "no restarts left (1 in the last 60 s"));
  env_cleanup(&e);
}
END_TEST

START_TEST(ex_config_not_retried)
{
  struct env e;

  env_init(&e);
  pid_t node = node_start(&e, "--ranks", "2", "--backoff-ms", "10", "--",
                          "/bin/sh", "-c",
                          "if [ \"$PT_RANK\" = 1 ]; then exit 78; fi; sleep 30",
                          NULL);
  ck_assert_int_eq(node_wait(node, 20000), 1);
  ck_assert(log_has(&e, "exited with status 78"));
  ck_assert(!log_has(&e, "restarting job"));
  ck_assert(log_has(&e, "job failed: trainer rank 1"));
  ck_assert(log_has(&e, "configuration error"));
  env_cleanup(&e);
}
END_TEST

START_TEST(environment_for_trainers)
{
  struct env e;
  char out[160], cmd[4600];

  env_init(&e);
  snprintf(out, sizeof(out), "%s/env", e.dir);
  snprintf(cmd, sizeof(cmd),
           "echo \"$PT_JOB $PT_RANK $PT_WORLD_SIZE $RANK $WORLD_SIZE "
           "$LOCAL_RANK $LOCAL_WORLD_SIZE $MASTER_ADDR $MASTER_PORT "
           "$PT_RESTART ${NOTIFY_SOCKET-unset} $PT_SMP_SOCKET\" > %s.$PT_RANK"
           " && exec %s trainer-done",
           out, self());
  setenv("NOTIFY_SOCKET", "/nonexistent/notify", 1);
  pid_t node = node_start(&e, "--ranks", "2", "--master-port", "4321", "--",
                          "/bin/sh", "-c", cmd, NULL);
  unsetenv("NOTIFY_SOCKET");
  ck_assert_int_eq(node_wait(node, 15000), 0);
  for (int r = 0; r < 2; r++) {
    char path[200], line[400], want[400];
    snprintf(path, sizeof(path), "%s.%d", out, r);
    FILE *f = fopen(path, "r");
    ck_assert_ptr_nonnull(f);
    ck_assert_ptr_nonnull(fgets(line, sizeof(line), f));
    fclose(f);
    snprintf(want, sizeof(want),
             "%s %d 2 %d 2 %d 2 127.0.0.1 4321 0 unset %s/smp.%d.sock\n",
             e.job, r, r, r, e.dir, r);
    ck_assert_str_eq(line, want);
  }
  env_cleanup(&e);
}
END_TEST

START_TEST(sigterm_and_lock)
{
  struct env e;

  env_init(&e);
  pid_t node = node_start(&e, "--ranks", "1", "--", "/bin/sleep", "30", NULL);
  Pt__StatusReply *r = status_wait(&e, "running", 10000);
  ck_assert_ptr_nonnull(r);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  /* A second node on the same state directory is refused at once. */
  pid_t second = node_start(&e, "--ranks", "1", "--", "/bin/true", NULL);
  ck_assert_int_eq(node_wait(second, 10000), 2);
  ck_assert(log_has(&e, "another ptd node runs with state directory"));
  /* The first one still serves, and SIGTERM stops it with status 3. */
  ck_assert_int_eq(status(&e, &r), PT_OK);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  kill(node, SIGTERM);
  ck_assert_int_eq(node_wait(node, 15000), 3);
  ck_assert(log_has(&e, "stopping the job (SIGTERM)"));
  env_cleanup(&e);
}
END_TEST

START_TEST(readopts_after_sigkill)
{
  struct env e;

  env_init(&e);
  /* The node's children become ours when it dies, so that we can reap them. */
  ck_assert_int_eq(prctl(PR_SET_CHILD_SUBREAPER, 1), 0);
  pid_t node = node_start(&e, "--ranks", "1", "--", "/bin/sleep", "30", NULL);
  Pt__StatusReply *r = status_wait(&e, "running", 10000);
  ck_assert_ptr_nonnull(r);
  pid_t trainer = r->ranks[0]->trainer_pid, smp = r->ranks[0]->smp_pid;
  protobuf_c_message_free_unpacked(&r->base, NULL);

  kill(node, SIGKILL);
  ck_assert_int_eq(node_wait(node, 5000), -1);
  ck_assert_int_eq(kill(trainer, 0), 0); /* both survive the node */
  ck_assert_int_eq(kill(smp, 0), 0);

  node = node_start(&e, "--ranks", "1", "--", "/bin/sleep", "30", NULL);
  r = status_wait(&e, "running", 10000);
  ck_assert_ptr_nonnull(r);
  ck_assert_int_eq(r->ranks[0]->trainer_pid, trainer);
  ck_assert_int_eq(r->ranks[0]->smp_pid, smp);
  ck_assert_int_eq(r->node_pid, node);
  protobuf_c_message_free_unpacked(&r->base, NULL);
  ck_assert(log_has(&e, "adopted smp rank 0"));
  ck_assert(log_has(&e, "adopted trainer rank 0"));

  ck_assert_int_eq(stop(&e), PT_OK);
  ck_assert_int_eq(node_wait(node, 15000), 3);
  assert_gone(trainer);
  assert_gone(smp);
  env_cleanup(&e);
}
END_TEST

/* Reads datagrams from fd until one contains want (deadline). */
static bool notify_seen(int fd, const char *want, int timeout_ms)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  char buf[1024];

  while (rpc_now_ms() < deadline) {
    ssize_t n = recv(fd, buf, sizeof(buf) - 1, MSG_DONTWAIT);
    if (n > 0) {
      buf[n] = '\0';
      if (strstr(buf, want) != NULL)
        return true;
      continue;
    }
    usleep(5000);
  }
  return false;
}

START_TEST(systemd_notifications)
{
  struct env e;
  struct sockaddr_un a = {.sun_family = AF_UNIX};

  env_init(&e);
  snprintf(a.sun_path, sizeof(a.sun_path), "%s/notify", e.dir);
  int fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(fd, 0);
  ck_assert_int_eq(bind(fd, (struct sockaddr *)&a, sizeof(a)), 0);
  setenv("NOTIFY_SOCKET", a.sun_path, 1);
  setenv("WATCHDOG_USEC", "100000", 1); /* a ping every 50 ms */
  pid_t node = node_start(&e, "--ranks", "1", "--", "/bin/sleep", "30", NULL);
  unsetenv("NOTIFY_SOCKET");
  unsetenv("WATCHDOG_USEC");

  ck_assert_msg(notify_seen(fd, "READY=1", 10000), "no READY=1");
  ck_assert_msg(notify_seen(fd, "WATCHDOG=1", 2000), "no WATCHDOG=1");
  ck_assert_msg(notify_seen(fd, "WATCHDOG=1", 2000), "one WATCHDOG=1 only");
  ck_assert_int_eq(stop(&e), PT_OK);
  ck_assert_msg(notify_seen(fd, "STOPPING=1", 5000), "no STOPPING=1");
  ck_assert_int_eq(node_wait(node, 15000), 3);
  close(fd);
  env_cleanup(&e);
}
END_TEST

int main(int argc, char **argv)
{
  /* The node spawns its SMPs as "/proc/self/exe smp ...". */
  if (argc > 1 && strcmp(argv[1], "smp") == 0)
    return smp_main(argc - 1, argv + 1);
  if (argc > 1 && strcmp(argv[1], "trainer-done") == 0)
    return trainer_done();

  Suite *s = suite_create("node_ctl");
  TCase *tc = tcase_create("node");
  tcase_set_timeout(tc, 60);
  tcase_add_test(tc, control_socket_survives_bad_frames);
  tcase_add_test(tc, completes_with_status_0);
  tcase_add_test(tc, idle_clients_do_not_lock_out_ptctl);
  tcase_add_test(tc, failure_restarts_bounded);
  tcase_add_test(tc, restarts_counted_in_window);
  tcase_add_test(tc, ex_config_not_retried);
  tcase_add_test(tc, environment_for_trainers);
  tcase_add_test(tc, sigterm_and_lock);
  tcase_add_test(tc, readopts_after_sigkill);
  tcase_add_test(tc, systemd_notifications);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
