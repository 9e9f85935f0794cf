/*
 * test_ptctl.c — ptctl against a stand-in controller: a blocking TCP
 * listener on 127.0.0.1 port 0 in the test process that speaks the real
 * handshake (the acceptor's side, rpc_handshake_next, with a fresh cluster
 * key), takes one request per connection and answers what the test
 * scripted. ptctl itself runs as ptctl_main() in a forked child, its
 * stdout and stderr in files, so what it sent, printed and exited with are
 * all checked.
 *
 * start sends the spec exactly as given (argv after `--` untouched, every
 * number, the code, the byte suffixes) and derives a default name (drawn
 * again when it is taken); stop, restore, status and jobs send the right
 * messages; the tables line up and --json parses (python3's json); a
 * refusal exits 1 with the controller's message; a bad flag exits 2
 * naming it, with nothing sent; no controller, or a silent one, exits 3
 * within --timeout; PT_CONTROLLER and PT_KEY are honoured, the flags win.
 */
#include <check.h>
#include <errno.h>
#include <fcntl.h>
#include <netinet/in.h>
#include <poll.h>
#include <regex.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#include <sanitizer/lsan_interface.h>
#endif

#include "client/ptctl.h"
#include "pt.h"
#include "rpc/rpc.h"
#include "tests/unit/tsess.h"
#include "tests/unit/unit.h"

#define MAX_CONN 4

static struct {
  char dir[64], key[128], other_key[128], out[128], err[128], addr[64];
  uint8_t keyb[RPC_KEY_BYTES];
  int lfd, port;
} T;

/* What the stand-in answers, connection by connection, and what it got. */
struct fake {
  uint32_t reply_type;                 /* 0: answer nothing (silent) */
  const ProtobufCMessage *reply[MAX_CONN];
  int nreply;                          /* replies given; the last repeats */
  bool wrong_key;                      /* authenticate with another key */
  bool hang_up;                        /* close once the request is in */
  int nconn;                           /* OUT */
  uint32_t req_type[MAX_CONN];         /* OUT */
  ProtobufCMessage *req[MAX_CONN];     /* OUT: free with fake_release */
};

static void fake_release(struct fake *f)
{
  for (int i = 0; i < f->nconn; i++)
    if (f->req[i] != NULL)
      protobuf_c_message_free_unpacked(f->req[i], NULL);
  memset(f->req, 0, sizeof(f->req));
}

static void listen_local(void);

static void setup(void)
{
  char err[256];

  snprintf(T.dir, sizeof(T.dir), "/tmp/pt-ptctl.XXXXXX");
  ck_assert_ptr_nonnull(mkdtemp(T.dir));
  snprintf(T.key, sizeof(T.key), "%s/cluster.key", T.dir);
  snprintf(T.other_key, sizeof(T.other_key), "%s/other.key", T.dir);
  snprintf(T.out, sizeof(T.out), "%s/out", T.dir);
  snprintf(T.err, sizeof(T.err), "%s/err", T.dir);
  ck_assert_int_eq(rpc_key_write(T.key, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(rpc_key_write(T.other_key, err, sizeof(err)), PT_OK);
  ck_assert_int_eq(rpc_key_load(T.key, T.keyb, err, sizeof(err)), PT_OK);
  listen_local();
}

/* T.lfd: a listener on 127.0.0.1, a free port; T.addr says where. */
static void listen_local(void)
{
  struct sockaddr_in sa = {.sin_family = AF_INET,
                           .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  T.lfd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0);
  ck_assert_int_ge(T.lfd, 0);
  ck_assert_int_eq(bind(T.lfd, (struct sockaddr *)&sa, sizeof(sa)), 0);
  ck_assert_int_eq(listen(T.lfd, 16), 0);
  ck_assert_int_eq(getsockname(T.lfd, (struct sockaddr *)&sa, &sl), 0);
  T.port = ntohs(sa.sin_port);
  snprintf(T.addr, sizeof(T.addr), "127.0.0.1:%d", T.port);
}

static void teardown(void)
{
  char cmd[128];

  if (T.lfd >= 0)
    close(T.lfd);
  snprintf(cmd, sizeof(cmd), "rm -rf '%s'", T.dir);
  if (system(cmd) != 0)
    fprintf(stderr, "cannot remove %s\n", T.dir);
}

/* The acceptor's side of the handshake, as the controller does it. */
static int serve_handshake(int fd, const uint8_t *key, uint64_t dl)
{
  struct rpc_auth self = {.role = PT__PEER_ROLE__PEER_ROLE_CONTROLLER};
  struct rpc_handshake hs;
  int rc;

  memcpy(self.key, key, RPC_KEY_BYTES);
  snprintf(self.node_id, sizeof(self.node_id), "controller");
  rc = rpc_handshake_init(&hs, &self, false);
  while (rc == PT_OK) {
    struct rpc_hdr h;
    ProtobufCMessage *in = NULL;
    const ProtobufCMessage *out;
    uint32_t ot;
    rc = rpc_sock_session_recv(tsess(fd), RPC_AUTH_MAX_BODY, dl, &h, &in);
    if (rc != PT_OK)
      break;
    rc = rpc_handshake_next(&hs, h.type, in, &ot, &out);
    protobuf_c_message_free_unpacked(in, NULL);
    if (rc >= 0 && out != NULL && rpc_sock_session_send(tsess(fd), ot, 0, out, dl) != PT_OK)
      rc = -EPIPE;
    if (rc == RPC_HANDSHAKE_DONE) {
      ck_assert_uint_eq(hs.peer_role, PT__PEER_ROLE__PEER_ROLE_CTL);
      ck_assert_int_eq(tsess_start(fd, &hs), PT_OK);
      rc = 1;
    }
  }
  rpc_handshake_release(&hs);
  return rc == 1 ? PT_OK : rc;
}

static void serve_one(int fd, struct fake *f)
{
  uint64_t dl = rpc_now_ms() + 5000;
  uint8_t other[RPC_KEY_BYTES];
  char err[256];
  int i = f->nconn++;
  struct rpc_hdr h;

  ck_assert_int_lt(i, MAX_CONN);
  if (f->wrong_key) {
    ck_assert_int_eq(rpc_key_load(T.other_key, other, err, sizeof(err)),
                     PT_OK);
    ck_assert_int_ne(serve_handshake(fd, other, dl), PT_OK);
    return;
  }
  ck_assert_int_eq(serve_handshake(fd, T.keyb, dl), PT_OK);
  ck_assert_int_eq(rpc_sock_session_recv(tsess(fd), 0, dl, &h, &f->req[i]), PT_OK);
  f->req_type[i] = h.type;
  if (f->hang_up)
    return;
  if (f->reply_type == 0) {
    /* silent: hold the connection until ptctl gives up */
    unit_closed_by_peer(fd, 10000);
    return;
  }
  const ProtobufCMessage *r = f->reply[i < f->nreply ? i : f->nreply - 1];
  ck_assert_int_eq(rpc_sock_session_send(tsess(fd), f->reply_type, h.request_id, r, dl),
                   PT_OK);
}

/* Runs ptctl with args (NULL-terminated; "@" stands for the stand-in's
 * address) and env ("NAME=VALUE" strings, NULL-terminated; PT_CONTROLLER
 * and PT_KEY are unset otherwise), serving f (NULL: nothing accepted).
 * Returns its exit status; stdout in T.out, stderr in T.err. */
static int run_env(struct fake *f, const char *const *env,
                   const char *const *args)
{
  char *argv[64];
  int n = 0;

  argv[n++] = "ptctl";
  for (; args[n - 1] != NULL; n++) {
    ck_assert_int_lt(n, 63);
    argv[n] = strcmp(args[n - 1], "@") == 0 ? T.addr : (char *)args[n - 1];
  }
  argv[n] = NULL;
  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    int o = open(T.out, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    int e = open(T.err, O_WRONLY | O_CREAT | O_TRUNC, 0600);
    if (o < 0 || e < 0 || dup2(o, 1) < 0 || dup2(e, 2) < 0)
      _exit(99);
    close(T.lfd);
    unsetenv("PT_CONTROLLER");
    unsetenv("PT_KEY");
    unsetenv("PT_STATE_DIR");
    for (int i = 0; env != NULL && env[i] != NULL; i++)
      putenv((char *)env[i]);
    int rc = ptctl_main(n, argv);
    fflush(stdout);
#if defined(__SANITIZE_ADDRESS__)
    /* _exit skips LeakSanitizer's own check at exit: run it here. */
    if (__lsan_do_recoverable_leak_check() != 0)
      rc = 98;
#endif
    fflush(stderr);
    _exit(rc);
  }
  /* Serve until ptctl exits (within 20 s). */
  uint64_t dl = rpc_now_ms() + 20000;
  int st = 0;
  for (;;) {
    pid_t w = waitpid(pid, &st, WNOHANG);
    ck_assert_int_ge(w, 0);
    struct pollfd p = {.fd = T.lfd, .events = POLLIN};
    int pr = poll(&p, 1, w == pid ? 0 : 20);
    if (pr == 1 && f != NULL) {
      int fd = accept4(T.lfd, NULL, NULL, SOCK_CLOEXEC);
      ck_assert_int_ge(fd, 0);
      serve_one(fd, f);
      close(fd);
      continue;
    }
    if (pr == 1)
      usleep(10000); /* a connection left pending on purpose */
    if (w == pid)
      break;
    if (rpc_now_ms() > dl) {
      kill(pid, SIGKILL);
      waitpid(pid, &st, 0);
      ck_abort_msg("ptctl did not exit within 20 s");
    }
  }
  ck_assert(WIFEXITED(st));
  return WEXITSTATUS(st);
}

static int run(struct fake *f, const char *const *args)
{
  return run_env(f, NULL, args);
}

#define ARGS(...) ((const char *const[]){__VA_ARGS__, NULL})

static const char *slurp(const char *path)
{
  static char buf[2][1 << 16];
  static int which;
  char *b = buf[which ^= 1];
  int fd = open(path, O_RDONLY);
  ssize_t n = fd >= 0 ? read(fd, b, sizeof(buf[0]) - 1) : -1;

  if (fd >= 0)
    close(fd);
  b[n > 0 ? n : 0] = '\0';
  return b;
}
#define OUT() slurp(T.out)
#define ERR() slurp(T.err)

/* python3 checks the JSON in T.out: it must parse as one object, and the
 * expression expr (over d) must be true. */
static void json_check(const char *expr)
{
  static const char prog[] =
      "import json, sys\n"
      "d = json.load(open(sys.argv[1]))\n"
      "assert isinstance(d, dict), d\n"
      "assert eval(sys.argv[2]), d\n";
  int st;

  fflush(stdout);
  fflush(stderr);
  pid_t pid = fork();
  ck_assert_int_ge(pid, 0);
  if (pid == 0) {
    execlp("python3", "python3", "-c", prog, T.out, expr, (char *)NULL);
    _exit(127);
  }
  ck_assert_int_eq(waitpid(pid, &st, 0), pid);
  ck_assert_msg(WIFEXITED(st) && WEXITSTATUS(st) == 0,
                "JSON check failed: %s\n%s", expr, OUT());
}

static bool matches(const char *re, const char *s)
{
  regex_t r;
  ck_assert_int_eq(regcomp(&r, re, REG_EXTENDED | REG_NEWLINE), 0);
  bool m = regexec(&r, s, 0, NULL, 0) == 0;
  regfree(&r);
  return m;
}

static Pt__JobReply job_ok(const char *job, uint64_t epoch)
{
  Pt__JobReply r = PT__JOB_REPLY__INIT;
  r.status = 0;
  r.job = (char *)job;
  r.has_epoch = true;
  r.epoch = epoch;
  return r;
}

/* ---- start ---- */

START_TEST(start_sends_spec_as_given)
{
  Pt__JobReply ok = job_ok("llm", 1);
  struct fake f = {.reply_type = RPC_JOB_REPLY, .reply = {&ok.base},
                   .nreply = 1};
  int rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start",
                        "--job", "llm", "--nodes", "3", "--ranks-per-node",
                        "2", "--slots", "4", "--code", "2+1",
                        "--memory-budget", "8G", "--max-restarts", "5",
                        "--restart-window-ms", "60000", "--backoff-ms", "250",
                        "--node-wait-ms", "30000", "--master-port", "29500",
                        "--", "python3", "train.py", "--json", "--timeout",
                        "7", "a b", "", "--", "--job", "x'y\"z"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_int_eq(f.nconn, 1);
  ck_assert_uint_eq(f.req_type[0], RPC_JOB_START);
  const Pt__JobSpec *s = ((Pt__JobStart *)f.req[0])->spec;
  ck_assert_str_eq(s->name, "llm");
  static const char *const want[] = {"python3", "train.py", "--json",
                                     "--timeout", "7", "a b", "", "--",
                                     "--job", "x'y\"z"};
  ck_assert_uint_eq(s->n_argv, sizeof(want) / sizeof(want[0]));
  for (size_t i = 0; i < s->n_argv; i++)
    ck_assert_str_eq(s->argv[i], want[i]);
  ck_assert_uint_eq(s->nodes, 3);
  ck_assert_uint_eq(s->ranks_per_node, 2);
  ck_assert(s->has_slots && s->slots == 4);
  ck_assert(s->has_code_k && s->code_k == 2 && s->has_code_m &&
            s->code_m == 1);
  ck_assert(s->has_memory_budget && s->memory_budget == 8ull << 30);
  ck_assert(s->has_max_restarts && s->max_restarts == 5);
  ck_assert(s->has_restart_window_ms && s->restart_window_ms == 60000);
  ck_assert(s->has_backoff_ms && s->backoff_ms == 250);
  ck_assert(s->has_node_wait_ms && s->node_wait_ms == 30000);
  ck_assert(s->has_master_port && s->master_port == 29500);
  ck_assert_msg(strstr(OUT(), "job llm started: epoch 1, 3 nodes x 2 ranks") !=
                    NULL,
                "%s", OUT());
  fake_release(&f);

  /* The minimum: what is not given is absent (the controller's default). */
  f = (struct fake){.reply_type = RPC_JOB_REPLY, .reply = {&ok.base},
                    .nreply = 1};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--job",
                    "llm", "--nodes", "1", "--ranks-per-node", "1", "--json",
                    "--", "/bin/true"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  s = ((Pt__JobStart *)f.req[0])->spec;
  ck_assert(!s->has_slots && !s->has_code_k && !s->has_code_m &&
            !s->has_memory_budget && !s->has_max_restarts &&
            !s->has_restart_window_ms && !s->has_backoff_ms &&
            !s->has_node_wait_ms && !s->has_master_port);
  ck_assert_uint_eq(s->n_argv, 1);
  json_check("d['job']=='llm' and d['epoch']==1 and d['world_size']==1 and "
             "d['controller'].startswith('127.0.0.1:') and "
             "d['message'] is None");
  fake_release(&f);

  /* --code none: sent as 0+0, so the controller's default does not apply. */
  static const char *const nones[] = {"none", "0+0"};
  for (size_t i = 0; i < 2; i++) {
    f = (struct fake){.reply_type = RPC_JOB_REPLY, .reply = {&ok.base},
                      .nreply = 1};
    rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--job",
                      "llm", "--nodes", "4", "--ranks-per-node", "1",
                      "--code", nones[i], "--", "/bin/true"));
    ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
    s = ((Pt__JobStart *)f.req[0])->spec;
    ck_assert(s->has_code_k && s->has_code_m && s->code_k == 0 &&
              s->code_m == 0);
    fake_release(&f);
  }
}
END_TEST

START_TEST(start_default_name)
{
  Pt__JobReply ok = {0};
  char first[64];

  ok = (Pt__JobReply)PT__JOB_REPLY__INIT;
  ok.has_epoch = true;
  ok.epoch = 1;
  struct fake f = {.reply_type = RPC_JOB_REPLY, .reply = {&ok.base},
                   .nreply = 1};
  int rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start",
                        "--nodes", "2", "--ranks-per-node", "1", "--",
                        "/usr/bin/python3", "-u", "/srv/models/train.py",
                        "--lr", "0.1"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  const char *name = ((Pt__JobStart *)f.req[0])->spec->name;
  ck_assert_msg(matches("^train-[a-z0-9]{6}$", name), "%s", name);
  ck_assert(ptctl_args_job_ok(name));
  snprintf(first, sizeof(first), "%s", name);
  char line[128];
  snprintf(line, sizeof(line), "job %s started", name);
  ck_assert_msg(strstr(OUT(), line) != NULL, "%s", OUT());
  fake_release(&f);

  /* Drawn again: another suffix. */
  f = (struct fake){.reply_type = RPC_JOB_REPLY, .reply = {&ok.base},
                    .nreply = 1};
  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "start",
                                "--nodes", "2", "--ranks-per-node", "1", "--",
                                "python3", "train.py")),
                   0);
  ck_assert_str_ne(((Pt__JobStart *)f.req[0])->spec->name, first);
  fake_release(&f);

  /* A drawn name that is taken is drawn again; the new one is printed. */
  Pt__JobReply taken = PT__JOB_REPLY__INIT;
  taken.status = -EEXIST;
  taken.message = "job name in use";
  f = (struct fake){.reply_type = RPC_JOB_REPLY,
                    .reply = {&taken.base, &ok.base},
                    .nreply = 2};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--nodes",
                    "2", "--ranks-per-node", "1", "--json", "--",
                    "./bin/pt-train", "--steps", "5"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_int_eq(f.nconn, 2);
  const char *n0 = ((Pt__JobStart *)f.req[0])->spec->name;
  const char *n1 = ((Pt__JobStart *)f.req[1])->spec->name;
  ck_assert_msg(matches("^pt-train-[a-z0-9]{6}$", n1), "%s", n1);
  ck_assert_str_ne(n0, n1);
  char expr[160];
  snprintf(expr, sizeof(expr), "d['job']=='%s'", n1);
  json_check(expr);
  fake_release(&f);

  /* A name the operator gave is never changed: taken is a refusal. */
  f = (struct fake){.reply_type = RPC_JOB_REPLY, .reply = {&taken.base},
                    .nreply = 1};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--job",
                    "mine", "--nodes", "2", "--ranks-per-node", "1", "--",
                    "x"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_int_eq(f.nconn, 1);
  ck_assert_msg(strstr(ERR(), "refused to start job 'mine': job name in use") &&
                    strstr(ERR(), "EEXIST"),
                "%s", ERR());
  ck_assert_str_eq(OUT(), "");
  fake_release(&f);
}
END_TEST

START_TEST(default_names)
{
  static const struct {
    const char *argv[4];
    size_t n;
    const char *re;
  } C[] = {
      {{"python3", "train.py"}, 2, "^train-[a-z0-9]{6}$"},
      {{"python3.11", "-m", "pkg.run"}, 3, "^pkg-[a-z0-9]{6}$"},
      {{"/opt/x/my.model.py"}, 1, "^my\\.model-[a-z0-9]{6}$"},
      {{"./run me.sh"}, 1, "^run-me-[a-z0-9]{6}$"},
      {{".hidden"}, 1, "^hidden-[a-z0-9]{6}$"},
      {{"/"}, 1, "^job-[a-z0-9]{6}$"},
      {{"bash", "-c"}, 2, "^bash-[a-z0-9]{6}$"},
      {{"\xc3\xa9t\xc3\xa9"}, 1, "^t-[a-z0-9]{6}$"},
      {{"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa"}, 1,
       "^a{40}-[a-z0-9]{6}$"},
  };
  char out[64];

  for (size_t i = 0; i < sizeof(C) / sizeof(C[0]); i++) {
    ptctl_args_default_job(out, sizeof(out), (char *const *)C[i].argv,
                           C[i].n);
    ck_assert_msg(matches(C[i].re, out), "%zu: %s", i, out);
    ck_assert_msg(ptctl_args_job_ok(out), "%s", out);
  }
}
END_TEST

START_TEST(parsers)
{
  uint64_t v;
  uint32_t k, m, u;

  ck_assert_ptr_nonnull(freopen("/dev/null", "w", stderr)); /* the refusals */

  ck_assert_int_eq(ptctl_args_bytes("-b", "8G", &v), 0);
  ck_assert_uint_eq(v, 8ull << 30);
  ck_assert_int_eq(ptctl_args_bytes("-b", "1KiB", &v), 0);
  ck_assert_uint_eq(v, 1024);
  ck_assert_int_eq(ptctl_args_bytes("-b", "3t", &v), 0);
  ck_assert_uint_eq(v, 3ull << 40);
  ck_assert_int_eq(ptctl_args_bytes("-b", "18446744073709551615", &v), 0);
  ck_assert_uint_eq(v, UINT64_MAX);
  static const char *const bad_bytes[] = {
      "", "-1", "+1", " 1", "1 ", "1X", "1GG", "0x10", "18446744073709551616",
      "16777216T", "1.5G"};
  for (size_t i = 0; i < sizeof(bad_bytes) / sizeof(bad_bytes[0]); i++)
    ck_assert_msg(ptctl_args_bytes("-b", bad_bytes[i], &v) == -EINVAL, "%s",
                  bad_bytes[i]);
  ck_assert_int_eq(ptctl_args_u32("-n", "4294967295", 0, UINT32_MAX, &u), 0);
  ck_assert_uint_eq(u, UINT32_MAX);
  ck_assert_int_eq(ptctl_args_u32("-n", "4294967296", 0, UINT32_MAX, &u),
                   -EINVAL);
  ck_assert_int_eq(ptctl_args_u32("-n", "-0", 0, 9, &u), -EINVAL);
  ck_assert_int_eq(ptctl_args_code("-c", "4+2", &k, &m), 0);
  ck_assert(k == 4 && m == 2);
  ck_assert_int_eq(ptctl_args_code("-c", "0+0", &k, &m), 0);
  ck_assert(k == 0 && m == 0);
  static const char *const bad_code[] = {"4", "4+", "+2", "4-2", "0+2", "4+0",
                                         "31+2", "4+2+1", "a+b", " 4+2",
                                         "99999999999999999999+1"};
  for (size_t i = 0; i < sizeof(bad_code) / sizeof(bad_code[0]); i++)
    ck_assert_msg(ptctl_args_code("-c", bad_code[i], &k, &m) == -EINVAL, "%s",
                  bad_code[i]);
  char big[300];
  memset(big, 'a', sizeof(big));
  big[PTCTL_JOB_MAX] = '\0';
  ck_assert(ptctl_args_job_ok(big));
  big[PTCTL_JOB_MAX] = 'a';
  big[PTCTL_JOB_MAX + 1] = '\0';
  ck_assert(!ptctl_args_job_ok(big));
  ck_assert(ptctl_args_job_ok("a.B_c-9"));
  static const char *const bad_job[] = {"", ".a", "-a", "a/b", "a b", "a\n",
                                        "\xc3\xa9", "a:b"};
  for (size_t i = 0; i < sizeof(bad_job) / sizeof(bad_job[0]); i++)
    ck_assert_msg(!ptctl_args_job_ok(bad_job[i]), "%s", bad_job[i]);
}
END_TEST

/* ---- stop, restore, status, jobs: what goes out ---- */

START_TEST(job_commands_send_their_messages)
{
  Pt__JobReply ok = job_ok("j1", 4);
  ok.has_step = true;
  ok.step = 42;
  struct fake f = {.reply_type = RPC_JOB_REPLY, .reply = {&ok.base},
                   .nreply = 1};
  int rc;

  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "stop", "j1"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_uint_eq(f.req_type[0], RPC_JOB_STOP);
  ck_assert_str_eq(((Pt__JobStop *)f.req[0])->job, "j1");
  ck_assert(!((Pt__JobStop *)f.req[0])->has_keep);
  ck_assert_msg(strstr(OUT(), "job j1 is stopping (epoch 4); its snapshots are "
                              "removed") != NULL, "%s", OUT());
  fake_release(&f);

  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "stop", "j1",
                    "--json"));
  ck_assert_int_eq(rc, 0);
  json_check("d['job']=='j1' and d['stopping'] is True and d['epoch']==4 and "
             "d['snapshots']=='removed'");
  fake_release(&f);

  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "stop", "--keep", "j1"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert(((Pt__JobStop *)f.req[0])->has_keep && ((Pt__JobStop *)f.req[0])->keep);
  ck_assert_msg(strstr(OUT(), "its snapshots are kept") != NULL, "%s", OUT());
  fake_release(&f);

  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "restore", "j1",
                    "--step", "42"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_uint_eq(f.req_type[0], RPC_JOB_RESTORE);
  const Pt__JobRestore *r = (Pt__JobRestore *)f.req[0];
  ck_assert_str_eq(r->job, "j1");
  ck_assert(r->has_step && r->step == 42);
  ck_assert_msg(strstr(OUT(), "job j1 restoring step 42 in epoch 4") != NULL,
                "%s", OUT());
  fake_release(&f);

  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "--json", "restore",
                    "j1"));
  ck_assert_int_eq(rc, 0);
  ck_assert(!((Pt__JobRestore *)f.req[0])->has_step);
  json_check("d['job']=='j1' and d['step']==42 and d['epoch']==4");
  fake_release(&f);

  /* Nothing committed yet: the answer has no step, every rank starts
   * fresh. */
  Pt__JobReply fresh = job_ok("j1", 5);
  f = (struct fake){.reply_type = RPC_JOB_REPLY, .reply = {&fresh.base},
                    .nreply = 1};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "restore", "j1"));
  ck_assert_int_eq(rc, 0);
  ck_assert_msg(strstr(OUT(), "job j1 restarting fresh (no committed step) "
                              "in epoch 5") != NULL,
                "%s", OUT());
  fake_release(&f);
  f = (struct fake){.reply_type = RPC_JOB_REPLY, .reply = {&fresh.base},
                    .nreply = 1};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "restore", "j1",
                    "--json"));
  ck_assert_int_eq(rc, 0);
  json_check("d['step'] is None and d['epoch']==5");
  fake_release(&f);

  Pt__JobsReply none = PT__JOBS_REPLY__INIT;
  f = (struct fake){.reply_type = RPC_JOBS_REPLY, .reply = {&none.base},
                    .nreply = 1};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "jobs"));
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(f.req_type[0], RPC_JOBS_QUERY);
  ck_assert_ptr_null(((Pt__JobsQuery *)f.req[0])->job);
  ck_assert_str_eq(OUT(), "no jobs\n");
  fake_release(&f);

  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "status"));
  ck_assert_int_eq(rc, 0);
  ck_assert_uint_eq(f.req_type[0], RPC_JOBS_QUERY);
  ck_assert_ptr_null(((Pt__JobsQuery *)f.req[0])->job);
  fake_release(&f);

  /* status JOB asks for that job; none in the answer is not found. */
  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "status", "j1"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_str_eq(((Pt__JobsQuery *)f.req[0])->job, "j1");
  ck_assert_msg(strstr(ERR(), "no job 'j1'") != NULL, "%s", ERR());
  fake_release(&f);

  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "jobs", "--json"));
  ck_assert_int_eq(rc, 0);
  json_check("d['jobs']==[]");
  fake_release(&f);
}
END_TEST

/* ---- what is printed ---- */

static Pt__JobPartInfo part(const char *node, uint32_t idx, uint32_t first,
                            uint32_t ranks, const char *ps)
{
  Pt__JobPartInfo p = PT__JOB_PART_INFO__INIT;
  p.node_id = (char *)node;
  p.node_index = idx;
  p.node_state = "alive";
  p.has_heartbeat_age_ms = true;
  p.heartbeat_age_ms = 300 + idx;
  p.part_state = (char *)ps;
  p.first_rank = first;
  p.ranks = ranks;
  p.has_bytes_held = true;
  p.bytes_held = 3ull << 29;
  p.has_last_sealed = true;
  p.last_sealed = 1210;
  return p;
}

START_TEST(status_and_jobs_output)
{
  static char *argv0[] = {"python3", "train.py", "--name", "it's \"x\""};
  Pt__JobSpec spec = PT__JOB_SPEC__INIT;
  spec.name = "llm";
  spec.n_argv = 4;
  spec.argv = argv0;
  spec.nodes = 2;
  spec.ranks_per_node = 2;
  spec.has_code_k = spec.has_code_m = true;
  spec.code_k = 1;
  spec.code_m = 1;
  Pt__JobPartInfo p0 = part("node-a", 0, 0, 2, "running");
  Pt__JobPartInfo p1 = part("a-much-longer-node-name", 1, 2, 2, "running");
  p1.node_state = "unreachable";
  p1.has_last_sealed = false;
  Pt__JobPartInfo *parts[] = {&p0, &p1};
  Pt__JobInfo j0 = PT__JOB_INFO__INIT;
  j0.name = "llm";
  j0.state = "running";
  j0.epoch = 3;
  j0.has_committed_step = true;
  j0.committed_step = 1200;
  j0.has_commit_age_ms = true;
  j0.commit_age_ms = 3200;
  j0.restarts = 2;
  j0.commits = 120;
  j0.bytes_held = 3ull << 30;
  j0.reason = "rank 3 on \"b\"\nexited 1 \xff";
  j0.n_parts = 2;
  j0.parts = parts;
  j0.spec = &spec;
  /* One node group of both nodes: coding groups 0 and 1 (local ranks). */
  Pt__GroupMember gm[2] = {PT__GROUP_MEMBER__INIT, PT__GROUP_MEMBER__INIT};
  Pt__GroupMember *gmp[2] = {&gm[0], &gm[1]};
  gm[0].node_index = 0;
  gm[0].node_id = "node-a";
  gm[0].advertise = "10.0.0.1";
  gm[1].node_index = 1;
  gm[1].node_id = "a-much-longer-node-name";
  Pt__NodeGroup ng = PT__NODE_GROUP__INIT;
  ng.index = 0;
  ng.k = 1;
  ng.m = 1;
  ng.n_members = 2;
  ng.members = gmp;
  /* its second node is unreachable: no more losses absorbed */
  ng.has_tolerates = true;
  ng.tolerates = 0;
  ng.has_protected_step = true;
  ng.protected_step = 1200;
  ng.has_protected_age_ms = true;
  ng.protected_age_ms = 3200;
  Pt__NodeGroup *ngp[] = {&ng};
  j0.n_groups = 1;
  j0.groups = ngp;
  Pt__JobSpec spec1 = spec;
  spec1.name = "a-second-job-with-a-long-name";
  spec1.nodes = 1;
  spec1.has_code_k = spec1.has_code_m = false;
  Pt__JobInfo j1 = PT__JOB_INFO__INIT;
  j1.name = spec1.name;
  j1.state = "failed";
  j1.epoch = 12;
  j1.restarts = 3;
  j1.reason = "node c dead for 30 s";
  j1.spec = &spec1;
  Pt__JobInfo *jobs[] = {&j0, &j1};
  Pt__JobsReply rep = PT__JOBS_REPLY__INIT;
  rep.n_jobs = 2;
  rep.jobs = jobs;
  struct fake f = {.reply_type = RPC_JOBS_REPLY, .reply = {&rep.base},
                   .nreply = 1};

  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "status",
                                "--json")),
                   0);
  json_check(
      "len(d['jobs'])==2 and d['jobs'][0]['job']=='llm' and "
      "d['jobs'][0]['epoch']==3 and d['jobs'][0]['committed_step']==1200 and "
      "d['jobs'][0]['commit_age_ms']==3200 and d['jobs'][0]['restarts']==2 "
      "and d['jobs'][0]['bytes_held']==3*2**30 and "
      "d['jobs'][0]['reason']==u'rank 3 on \"b\"\\nexited 1 \\ufffd' and "
      "d['jobs'][0]['spec']['argv'][3]==\"it\\x27s \\\"x\\\"\" and "
      "d['jobs'][0]['spec']['code_k']==1 and "
      "d['jobs'][0]['spec']['slots'] is None and "
      "d['jobs'][0]['parts'][1]['node']=='a-much-longer-node-name' and "
      "d['jobs'][0]['parts'][1]['first_rank']==2 and "
      "d['jobs'][0]['parts'][1]['last_rank']==3 and "
      "d['jobs'][0]['parts'][1]['last_sealed'] is None and "
      "d['jobs'][0]['parts'][1]['node_state']=='unreachable' and "
      "d['jobs'][0]['parts'][0]['heartbeat_age_ms']==300 and "
      "d['jobs'][1]['committed_step'] is None and d['jobs'][1]['parts']==[] "
      "and d['jobs'][0]['code']=={'k':1,'m':1} and "
      "[g['group'] for g in d['jobs'][0]['groups']]==[0,1] and "
      "d['jobs'][0]['groups'][1]['local_rank']==1 and "
      "d['jobs'][0]['groups'][1]['k']==1 and "
      "d['jobs'][0]['groups'][1]['members'][1]=={'member':1,"
      "'node':'a-much-longer-node-name','node_index':1,'local_rank':1,"
      "'rank':3,'address':None} and "
      "d['jobs'][0]['groups'][0]['members'][0]['address']=='10.0.0.1' and "
      "d['jobs'][0]['groups'][0]['health']=={'tolerates':0,"
      "'protected_step':1200,'protected_age_ms':3200} and "
      "d['jobs'][1]['code'] is None and d['jobs'][1]['groups']==[]");
  fake_release(&f);

  /* The human form: the job's lines, its parts lined up. */
  f.nconn = 0;
  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "status",
                                "llm")),
                   0);
  const char *o = OUT();
  ck_assert_msg(strstr(o, "state       running, epoch 3\n") &&
                    strstr(o, "committed   step 1200 (3.2 s ago)\n") &&
                    strstr(o, "restarts    2 (commits 120)\n") &&
                    strstr(o, "held        3.0 GiB in shared memory\n") &&
                    strstr(o, "spec        2 nodes x 2 ranks, code 1+1\n") &&
                    strstr(o, "command     python3 train.py --name "
                              "'it'\\''s \"x\"'\n"),
                "%s", o);
  /* The reason's newline does not break the output into a fake line. */
  ck_assert_msg(strstr(o, "\nexited 1") == NULL, "%s", o);
  const char *hdr = strstr(o, "NODE ");
  ck_assert_ptr_nonnull(hdr);
  const char *r0 = strstr(hdr, "\nnode-a ");
  const char *r1 = strstr(hdr, "\na-much-longer-node-name ");
  ck_assert(r0 != NULL && r1 != NULL);
  r0++;
  r1++;
  /* Column RANKS starts at the same offset on every line. */
  long col = strstr(hdr, "RANKS") - hdr;
  ck_assert_msg(strncmp(r0 + col, "0..1 ", 5) == 0 &&
                    strncmp(r1 + col, "2..3 ", 5) == 0,
                "%s", o);
  long pcol = strstr(hdr, "PART") - hdr;
  ck_assert(strncmp(r1 + pcol, "running", 7) == 0);
  ck_assert(matches("^node-a +alive +0\\.3 s ago +0\\.\\.1 +running +1210 +"
                    "1\\.5 GiB$",
                    o));
  ck_assert(matches("^a-much-longer-node-name +unreachable +0\\.3 s ago +"
                    "2\\.\\.3 +running +- +1\\.5 GiB$",
                    o));
  /* The code and its groups, members as node/local rank, with what each
   * absorbs now and its newest protected step. */
  ck_assert_msg(strstr(o, "code        1+1, 1 node group x 2 local ranks = "
                          "2 coding groups\n") != NULL,
                "%s", o);
  ck_assert_msg(matches("^GROUP +CODE +TOLERATES +PROTECTED +MEMBERS$", o),
                "%s", o);
  ck_assert_msg(matches("^0 +1\\+1 +0 of 1 node +step 1200 \\(3\\.2 s ago\\) +"
                        "node-a/0 a-much-longer-node-name/0$", o),
                "%s", o);
  ck_assert_msg(matches("^1 +1\\+1 +0 of 1 node +step 1200 \\(3\\.2 s ago\\) +"
                        "node-a/1 a-much-longer-node-name/1$", o),
                "%s", o);
  fake_release(&f);
  f.nconn = 0;
  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "status",
                                "a-second-job-with-a-long-name")),
                   0);
  ck_assert_msg(strstr(OUT(), "code        none") != NULL, "%s", OUT());
  fake_release(&f);

  f.nconn = 0;
  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "jobs")),
                   0);
  o = OUT();
  hdr = o;
  ck_assert_msg(strncmp(o, "JOB ", 4) == 0, "%s", o);
  r0 = strstr(o, "\nllm ");
  r1 = strstr(o, "\na-second-job-with-a-long-name ");
  ck_assert(r0 != NULL && r1 != NULL);
  r0++;
  r1++;
  col = strstr(hdr, "STATE") - hdr;
  ck_assert_msg(strncmp(r0 + col, "running", 7) == 0 &&
                    strncmp(r1 + col, "failed", 6) == 0,
                "%s", o);
  ck_assert_msg(matches("^llm +running +3 +2x2 +1200 +3\\.2 s ago +2 +3\\.0 GiB "
                        "+rank 3 on \"b\" exited 1",
                        o),
                "%s", o);
  ck_assert_msg(matches("^a-second-job-with-a-long-name +failed +12 +1x2 +- +- "
                        "+3 +0 B +node c dead for 30 s$",
                        o),
                "%s", o);
  fake_release(&f);

  f.nconn = 0;
  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "jobs",
                                "--json")),
                   0);
  json_check("[j['job'] for j in d['jobs']]==['llm', "
             "'a-second-job-with-a-long-name']");
  fake_release(&f);
}
END_TEST

START_TEST(nodes_output)
{
  Pt__NodeInfo a = PT__NODE_INFO__INIT, b = PT__NODE_INFO__INIT;
  a.node_id = "a";
  a.state = "alive";
  a.advertise = "10.0.0.1";
  a.capacity = 8;
  a.has_heartbeat_age_ms = true;
  a.heartbeat_age_ms = 1500;
  a.job = "llm";
  b.node_id = "node-with-a-long-name";
  b.state = "dead";
  b.advertise = "10.0.0.2";
  b.capacity = 4;
  b.failure_domain = "rack\t2";
  Pt__NodeInfo *nodes[] = {&a, &b};
  Pt__NodesReply rep = PT__NODES_REPLY__INIT;
  rep.n_nodes = 2;
  rep.nodes = nodes;
  struct fake f = {.reply_type = RPC_NODES_REPLY, .reply = {&rep.base},
                   .nreply = 1};

  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "nodes")),
                   0);
  ck_assert_uint_eq(f.req_type[0], RPC_NODES_QUERY);
  ck_assert_msg(matches("^a +alive +10\\.0\\.0\\.1 +8 +- +1\\.5 s ago +llm$",
                        OUT()) &&
                    matches("^node-with-a-long-name +dead +10\\.0\\.0\\.2 +4 "
                            "+rack 2 +- +-$",
                            OUT()),
                "%s", OUT());
  fake_release(&f);
  f.nconn = 0;
  ck_assert_int_eq(run(&f, ARGS("--controller", "@", "--key", T.key, "nodes",
                                "--json")),
                   0);
  json_check("d['nodes'][1]['failure_domain']=='rack\\t2' and "
             "d['nodes'][1]['heartbeat_age_ms'] is None and "
             "d['nodes'][1]['job'] is None and d['nodes'][0]['capacity']==8");
  fake_release(&f);
}
END_TEST

/* ---- failures ---- */

START_TEST(refused_exits_1_with_the_message)
{
  Pt__JobReply no = PT__JOB_REPLY__INIT;
  no.status = -ENOSPC;
  no.message = "too few spare nodes: 1 of 3 can take 2 ranks";
  struct fake f = {.reply_type = RPC_JOB_REPLY, .reply = {&no.base},
                   .nreply = 1};

  int rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--job",
                        "big", "--nodes", "3", "--ranks-per-node", "2",
                        "--json", "--", "x"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_msg(strstr(ERR(), "refused to start job 'big': too few spare "
                              "nodes: 1 of 3 can take 2 ranks (ENOSPC: ") !=
                    NULL,
                "%s", ERR());
  ck_assert_str_eq(OUT(), "");
  fake_release(&f);

  /* A message that names the job already: not named twice. */
  no.message = "job 'big' needs 3 spare nodes: 1 free";
  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--job",
                    "big", "--nodes", "3", "--ranks-per-node", "2", "--",
                    "x"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_msg(strstr(ERR(), "refused to start: job 'big' needs 3 spare "
                              "nodes: 1 free (ENOSPC: ") != NULL,
                "%s", ERR());
  fake_release(&f);

  /* No message: the code's text. */
  no.message = NULL;
  no.status = PT_EEPOCH;
  f.nconn = 0;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "restore", "j"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_msg(strstr(ERR(), "refused to restore job 'j': decision of another "
                              "epoch of the job (PT_EEPOCH)") != NULL,
                "%s", ERR());
  fake_release(&f);

  Pt__JobsReply nf = PT__JOBS_REPLY__INIT;
  nf.status = -ENOENT;
  nf.message = "no job 'zz'";
  f = (struct fake){.reply_type = RPC_JOBS_REPLY, .reply = {&nf.base},
                    .nreply = 1};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "status", "zz",
                    "--json"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_msg(strstr(ERR(), "no job 'zz' (ENOENT") != NULL, "%s", ERR());
  ck_assert_str_eq(OUT(), "");
  fake_release(&f);

  /* A wrong key is a refusal too. */
  f = (struct fake){.wrong_key = true};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "jobs"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_int_eq(f.nconn, 1);
  ck_assert_msg(strstr(ERR(), "refused (is --key the cluster's key?)") != NULL,
                "%s", ERR());
}
END_TEST

START_TEST(bad_flags_exit_2_naming_the_flag)
{
  char long_job[PTCTL_JOB_MAX + 2];
  memset(long_job, 'j', sizeof(long_job) - 1);
  long_job[sizeof(long_job) - 1] = '\0';
#define S "--controller", "@", "--key", T.key, "start"
#define NR "--nodes", "2", "--ranks-per-node", "2"
  const struct {
    const char *args[24];
    const char *says;
  } C[] = {
      {{S, "--nodes", "-1", "--ranks-per-node", "2", "--", "x"}, "--nodes '-1'"},
      {{S, "--nodes", "2x", "--ranks-per-node", "2", "--", "x"}, "--nodes '2x'"},
      {{S, "--nodes", "99999999999999999999", "--ranks-per-node", "2", "--",
        "x"},
       "--nodes '99999999999999999999'"},
      {{S, "--nodes", "0", "--ranks-per-node", "2", "--", "x"}, "--nodes '0'"},
      {{S, "--nodes", "", "--ranks-per-node", "2", "--", "x"}, "--nodes ''"},
      {{S, "--nodes", "2", "--ranks-per-node", "0", "--", "x"},
       "--ranks-per-node '0'"},
      {{S, NR, "--slots", "9", "--", "x"}, "--slots '9'"},
      {{S, "--nodes", "65537", "--ranks-per-node", "2", "--", "x"},
       "--nodes '65537'"},
      {{S, "--nodes", "65536", "--ranks-per-node", "65536", "--", "x"},
       "over the largest world size"},
      {{S, "--nodes", "3", "--ranks-per-node", "1", "--code", "2+2", "--",
        "x"},
       "--code 2+2 needs at least 4 nodes; the job has 3"},
      {{S, NR, "--node-wait-ms", "0", "--", "x"}, "--node-wait-ms '0'"},
      {{S, NR, "--restart-window-ms", "2592000001", "--", "x"},
       "--restart-window-ms '2592000001'"},
      {{S, NR, "--code", "4-2", "--", "x"}, "--code '4-2'"},
      {{S, NR, "--code", "4+", "--", "x"}, "--code '4+'"},
      {{S, NR, "--code", "40+2", "--", "x"}, "--code '40+2'"},
      {{S, NR, "--code", "31+2", "--", "x"}, "K + M <= 32"},
      {{S, NR, "--code", "0+1", "--", "x"}, "--code '0+1'"},
      {{S, NR, "--code", "2+0", "--", "x"}, "--code '2+0'"},
      {{S, NR, "--code", "+", "--", "x"}, "--code '+'"},
      {{S, NR, "--code", "None", "--", "x"}, "--code 'None'"},
      {{S, NR, "--code", "2+1 ", "--", "x"}, "--code '2+1 '"},
      {{S, "--nodes", "3", "--ranks-per-node", "1", "--code", "4+2", "--",
        "x"},
       "--code 4+2 needs at least 6 nodes; the job has 3"},
      {{S, NR, "--memory-budget", "8Q", "--", "x"}, "--memory-budget '8Q'"},
      {{S, NR, "--memory-budget", "-1G", "--", "x"}, "--memory-budget '-1G'"},
      {{S, NR, "--memory-budget", "99999999999T", "--", "x"},
       "--memory-budget '99999999999T'"},
      {{S, NR, "--max-restarts", "-3", "--", "x"}, "--max-restarts '-3'"},
      {{S, NR, "--restart-window-ms", "4294967296", "--", "x"},
       "--restart-window-ms '4294967296'"},
      {{S, NR, "--node-wait-ms", "1e3", "--", "x"}, "--node-wait-ms '1e3'"},
      {{S, NR, "--master-port", "65536", "--", "x"}, "--master-port '65536'"},
      {{S, NR, "--backoff-ms", " 5", "--", "x"}, "--backoff-ms ' 5'"},
      {{S, NR, "--job", "a/b", "--", "x"}, "--job 'a/b'"},
      {{S, NR, "--job", ".x", "--", "x"}, "--job '.x'"},
      {{S, NR, "--job", "", "--", "x"}, "--job ''"},
      {{S, NR, "--job", long_job, "--", "x"}, "--job 'jjjj"},
      {{S, NR, "--job", "--", "x"}, "'--job' needs a value"},
      {{S, NR, "--nodes", "3", "--", "x"}, "--nodes given twice"},
      {{S, NR, "x"}, "the trainer's command goes after '--'"},
      {{S, NR}, "no trainer command"},
      {{S, NR, "--"}, "after '--' is missing"},
      {{S, NR, "--", ""}, "after '--' is empty"},
      {{S, "--nodes", "2", "--", "x"}, "--ranks-per-node R is required"},
      {{S, "--ranks-per-node", "2", "--", "x"}, "--nodes N is required"},
      {{S, NR, "--bogus", "1", "--", "x"}, "unknown option '--bogus'"},
      {{"--controller", "@", "--key", T.key, "restore", "j", "--step", "x"},
       "--step 'x'"},
      {{"--controller", "@", "--key", T.key, "restore", "j", "--step"},
       "'--step' needs a value"},
      {{"--controller", "@", "--key", T.key, "restore"}, "which job?"},
      {{"--controller", "@", "--key", T.key, "stop"}, "which job?"},
      {{"--controller", "@", "--key", T.key, "stop", "a", "b"},
       "unexpected argument 'b'"},
      {{"--controller", "@", "--key", T.key, "stop", "a b"}, "JOB 'a b'"},
      {{"--controller", "@", "--key", T.key, "status", "x/y"}, "JOB 'x/y'"},
      {{"--controller", "@", "--key", T.key, "jobs", "x"},
       "unexpected argument 'x'"},
      {{"--controller", "@", "--key", T.key, "nodes", "x"},
       "unexpected argument 'x'"},
      {{"--controller", "@", "--key", T.key, "--timeout", "0", "jobs"},
       "--timeout '0'"},
      {{"--controller", "@", "--key", T.key, "--timeout", "5s", "jobs"},
       "--timeout '5s'"},
      {{"--controller", "127.0.0.1", "--key", T.key, "jobs"},
       "--controller '127.0.0.1'"},
      {{"--controller", "127.0.0.1:99999", "--key", T.key, "jobs"},
       "--controller '127.0.0.1:99999'"},
      {{"--controller", "@", "jobs"}, "needs --key FILE"},
      {{"--key", T.key, "jobs"}, "needs --controller HOST:PORT"},
      {{"--controller", "@", "--key", T.key, "--state-dir", "/tmp", "status"},
       "not both"},
      {{"--state-dir", "/tmp", "jobs"}, "not --state-dir"},
      {{"--controller", "@", "--key", T.key, "launch"},
       "unknown command 'launch'"},
      {{"--frobnicate", "jobs"}, "unknown option '--frobnicate'"},
  };
#undef S
#undef NR
  for (size_t i = 0; i < sizeof(C) / sizeof(C[0]); i++) {
    struct fake f = {.reply_type = RPC_JOB_REPLY};
    int rc = run(&f, C[i].args);
    ck_assert_msg(rc == PTCTL_EXIT_USAGE, "case %zu (%s): rc %d: %s", i,
                  C[i].says, rc, ERR());
    ck_assert_msg(strstr(ERR(), C[i].says) != NULL,
                  "case %zu: wanted '%s' in: %s", i, C[i].says, ERR());
    ck_assert_msg(f.nconn == 0, "case %zu: sent something", i);
    ck_assert_str_eq(OUT(), "");
  }
}
END_TEST

START_TEST(unreachable_exits_3_within_timeout)
{
  /* Nobody listening: refused at once. */
  char addr[64];
  snprintf(addr, sizeof(addr), "%s", T.addr);
  close(T.lfd);
  T.lfd = -1;
  uint64_t t0 = rpc_now_ms();
  int rc = run(NULL, ARGS("--controller", addr, "--key", T.key, "--timeout",
                          "3000", "jobs"));
  ck_assert_int_eq(rc, PTCTL_EXIT_UNREACHABLE);
  ck_assert_msg(strstr(ERR(), "cannot reach ptd controller at") != NULL, "%s",
                ERR());
  ck_assert_uint_lt(rpc_now_ms() - t0, 2500);

  /* Listening but never accepting (the kernel completes the connect): the
   * handshake times out within --timeout. */
  listen_local(); /* a fresh listener, never served */
  t0 = rpc_now_ms();
  rc = run(NULL, ARGS("--controller", "@", "--key", T.key, "--timeout",
                      "600", "status", "j"));
  uint64_t took = rpc_now_ms() - t0;
  ck_assert_int_eq(rc, PTCTL_EXIT_UNREACHABLE);
  ck_assert_msg(took >= 550 && took < 2500, "took %llu ms",
                (unsigned long long)took);
  ck_assert_msg(strstr(ERR(), "timed out") != NULL, "%s", ERR());

  /* Authenticated, then silent: no answer within --timeout (a fresh
   * listener: the last one holds ptctl's abandoned connection). */
  close(T.lfd);
  listen_local();
  struct fake f = {.reply_type = 0};
  t0 = rpc_now_ms();
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "--timeout", "700",
                    "jobs"));
  took = rpc_now_ms() - t0;
  ck_assert_int_eq(rc, PTCTL_EXIT_UNREACHABLE);
  ck_assert_int_eq(f.nconn, 1);
  ck_assert_msg(took >= 650 && took < 2500, "took %llu ms",
                (unsigned long long)took);
  ck_assert_msg(strstr(ERR(), "no answer from ptd controller") != NULL, "%s",
                ERR());
  fake_release(&f);

  /* Authenticated, then closed without an answer (a controller that does
   * not know the request): said so, the same code. */
  f = (struct fake){.hang_up = true};
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "stop", "j"));
  ck_assert_int_eq(rc, PTCTL_EXIT_UNREACHABLE);
  ck_assert_uint_eq(f.req_type[0], RPC_JOB_STOP);
  ck_assert_msg(strstr(ERR(), "closed the connection without answering "
                              "JOB_STOP") != NULL,
                "%s", ERR());
  fake_release(&f);

  /* A standalone node that is not there: the same code. */
  rc = run(NULL, ARGS("--state-dir", T.dir, "status"));
  ck_assert_int_eq(rc, PTCTL_EXIT_UNREACHABLE);
  ck_assert_msg(strstr(ERR(), "cannot reach ptd node") != NULL, "%s", ERR());
}
END_TEST

START_TEST(environment_honoured_flags_win)
{
  Pt__JobsReply none = PT__JOBS_REPLY__INIT;
  struct fake f = {.reply_type = RPC_JOBS_REPLY, .reply = {&none.base},
                   .nreply = 1};
  char ctl[96], key[192], bad_ctl[64] = "PT_CONTROLLER=127.0.0.1:1",
                          bad_key[64] = "PT_KEY=/nonexistent/key";
  snprintf(ctl, sizeof(ctl), "PT_CONTROLLER=%s", T.addr);
  snprintf(key, sizeof(key), "PT_KEY=%s", T.key);

  int rc = run_env(&f, (const char *const[]){ctl, key, NULL}, ARGS("jobs"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_int_eq(f.nconn, 1);
  fake_release(&f);

  /* status and stop go to the controller when PT_CONTROLLER is set... */
  f.nconn = 0;
  rc = run_env(&f, (const char *const[]){ctl, key, NULL}, ARGS("status"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_uint_eq(f.req_type[0], RPC_JOBS_QUERY);
  fake_release(&f);

  /* ... unless --state-dir says the standalone node. */
  f.nconn = 0;
  rc = run_env(&f, (const char *const[]){ctl, key, NULL},
               ARGS("--state-dir", T.dir, "status"));
  ck_assert_int_eq(rc, PTCTL_EXIT_UNREACHABLE);
  ck_assert_int_eq(f.nconn, 0);
  ck_assert_msg(strstr(ERR(), "ptd node") != NULL, "%s", ERR());

  /* The flags win over the environment. */
  f.nconn = 0;
  rc = run_env(&f, (const char *const[]){bad_ctl, bad_key, NULL},
               ARGS("--controller", "@", "--key", T.key, "jobs"));
  ck_assert_msg(rc == 0, "rc %d: %s", rc, ERR());
  ck_assert_int_eq(f.nconn, 1);
  fake_release(&f);

  /* And the environment is used: a wrong PT_KEY fails. */
  f.nconn = 0;
  rc = run_env(&f, (const char *const[]){ctl, bad_key, NULL}, ARGS("jobs"));
  ck_assert_int_eq(rc, PTCTL_EXIT_FAILED);
  ck_assert_int_eq(f.nconn, 0);
  ck_assert_msg(strstr(ERR(), "/nonexistent/key") != NULL, "%s", ERR());
}
END_TEST

START_TEST(help_everywhere)
{
  static const char *const cmds[] = {"start", "stop",  "restore",
                                     "status", "jobs", "nodes"};
  int rc = run(NULL, ARGS("--help"));
  ck_assert_int_eq(rc, 0);
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++)
    ck_assert_msg(strstr(OUT(), cmds[i]) != NULL, "%s", cmds[i]);
  ck_assert(strstr(OUT(), "3 the daemon cannot be reached") != NULL);
  for (size_t i = 0; i < sizeof(cmds) / sizeof(cmds[0]); i++) {
    char want[64];
    snprintf(want, sizeof(want), "%s", cmds[i]);
    rc = run(NULL, ARGS(cmds[i], "--help"));
    ck_assert_int_eq(rc, 0);
    ck_assert_msg(strstr(OUT(), "usage:") && strstr(OUT(), want) &&
                      strstr(OUT(), "exit status: 0 success"),
                  "%s: %s", cmds[i], OUT());
    rc = run(NULL, ARGS("help", cmds[i]));
    ck_assert_int_eq(rc, 0);
  }
  /* --help after '--' is the trainer's. */
  struct fake f = {.reply_type = RPC_JOB_REPLY};
  Pt__JobReply ok = job_ok("h", 1);
  f.reply[0] = &ok.base;
  f.nreply = 1;
  rc = run(&f, ARGS("--controller", "@", "--key", T.key, "start", "--job", "h",
                    "--nodes", "1", "--ranks-per-node", "1", "--", "t",
                    "--help"));
  ck_assert_int_eq(rc, 0);
  ck_assert_int_eq(f.nconn, 1);
  ck_assert_str_eq(((Pt__JobStart *)f.req[0])->spec->argv[1], "--help");
  fake_release(&f);
}
END_TEST

int main(void)
{
  Suite *s = suite_create("ptctl");
  TCase *tc = tcase_create("ptctl");

  tcase_set_timeout(tc, 60);
  tcase_add_checked_fixture(tc, setup, teardown);
  tcase_add_test(tc, start_sends_spec_as_given);
  tcase_add_test(tc, start_default_name);
  tcase_add_test(tc, default_names);
  tcase_add_test(tc, parsers);
  tcase_add_test(tc, job_commands_send_their_messages);
  tcase_add_test(tc, status_and_jobs_output);
  tcase_add_test(tc, nodes_output);
  tcase_add_test(tc, refused_exits_1_with_the_message);
  tcase_add_test(tc, bad_flags_exit_2_naming_the_flag);
  tcase_add_test(tc, unreachable_exits_3_within_timeout);
  tcase_add_test(tc, environment_honoured_flags_win);
  tcase_add_test(tc, help_everywhere);
  suite_add_tcase(s, tc);
  return unit_run(s);
}
