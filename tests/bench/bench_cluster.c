/*
 * bench_cluster.c — `ptbench --cluster`: the controller's commit across
 * nodes, on a real `ptd controller` started for the run.
 *
 * Simulated nodes (ctl_N_*): one process, one libuv loop on the calling
 * thread, N authenticated TCP connections to the controller, each as
 * PEER_ROLE_NODE with its own node id, registering (NODE_REGISTER with
 * capacity 1 and a random 16-byte incarnation, as ptd node does) and
 * heartbeating every heartbeat_ms the controller answered, each from its own
 * timer with a random phase. A PEER_ROLE_CTL connection then sends JOB_START
 * for a job of N nodes x 1 rank (its command is never run: the simulated
 * nodes answer JOB_ASSIGN with JOB_PART_STATE "running" and run nothing).
 * Then, every --cluster-step-ms (default BENCH_CLUSTER_STEP_MS, 100; or as
 * soon as the previous step committed, when a commit takes longer), every
 * node sends STEP_SEALED{pinned} for the next step, all in one go (a real
 * node pins the step on its SMPs before it reports it, and the controller
 * takes that report as its vote), answers a JOB_PIN, should one come, with
 * JOB_VOTE{0} at once, and notes the JOB_COMMIT. The commit latency of step s is from the moment the last
 * STEP_SEALED of s was handed to the kernel to the moment the last node
 * received JOB_COMMIT(s); it includes this process's own handling of the
 * N pins and N commits on the same machine. The controller's CPU is its
 * utime + stime (/proc/PID/stat) over the steps, heartbeats included, over
 * the wall time, in percent of one core. A fresh controller (its own state
 * directory and key) serves each size. After each size, the same traffic
 * (the same frames, packed alike, over as many steps) goes through a
 * server with no pt logic (bench_floor.c): its CPU is the kernel's floor
 * under the controller's figure (floor_cpu_pct).
 *
 * Real nodes (commit_p50_ms, commit_p99_ms): a controller, three `ptd node
 * --controller` processes and a job of 3 nodes x 1 rank of pt-train
 * (--state-mb 8, a short sleep after every step, a snapshot every step).
 * Each node reaches the controller through a relay in this process (a
 * libuv thread) that forwards bytes both ways unchanged and reads the
 * frame headers as they pass: STEP_SEALED (a node: every one of its ranks
 * sealed the step) and JOB_COMMIT are timestamped there. The latency of a
 * committed step s is from the last node's first STEP_SEALED of a step >= s
 * to the last JOB_COMMIT(s) forwarded to a node: the commit across nodes,
 * the controller's journal fsync included, from the last node knowing its
 * ranks sealed to every node's socket holding the commit. Not included: the
 * SMP-to-node event before it (a Unix socket) and the node's commit of its
 * own SMPs after it; each relay hop adds a loopback write both ways.
 *
 * A controller that does not serve jobs yet (it closes the connection at
 * JOB_START as a request it does not know) leaves every figure "not
 * measured" with that reason: jobs_supported = false, not a failure. Every
 * wait has a deadline; every process and directory goes on the cleanup list.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <math.h>
#include <pthread.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>
#include <uv.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/bench/bench.h"

#define HEARTBEAT_MS 1000u
#define WARMUP_STEPS 3
#define IDLE_MS 3000       /* heartbeats alone, before the job */
#define IDLE_MS_QUICK 1000
#define MAX_PENDING_HANDSHAKES 32 /* the controller takes 64 at most */
#define CONNECT_MS 10000u
#define REGISTER_DEADLINE_MS 60000u
#define START_DEADLINE_MS 20000u
#define STEP_DEADLINE_MS 10000u
#define LISTEN_DEADLINE_MS 10000
#define STOP_GRACE_MS 5000
#define FD_SPARE 128u

/* ---- the controller ---- */

static int run_keygen(const struct bench_opts *o, const char *key, const char *log,
                      char *errbuf, size_t errlen)
{
  char *argv[] = { (char *)o->ptd, "keygen", (char *)key, NULL };
  pid_t pid;
  int st, rc = bench_child_spawn(&pid, argv, log, errbuf, errlen);
  if (rc < 0)
    return rc;
  rc = bench_child_wait(pid, 10000, &st);
  if (rc < 0) {
    bench_child_stop(pid, 100);
    snprintf(errbuf, errlen, "ptd keygen did not finish within 10 s");
    return rc;
  }
  if (!WIFEXITED(st) || WEXITSTATUS(st) != 0) {
    char w[64];
    snprintf(errbuf, errlen, "ptd keygen %s (log %s)", bench_wait_text(w, sizeof(w), st), log);
    return -EIO;
  }
  return 0;
}

/* The port of "listening on 127.0.0.1:PORT" in the log; 0 while absent. */
static int port_from_log(const char *path)
{
  FILE *f = fopen(path, "r");
  char line[1024];
  int port = 0;
  if (f == NULL)
    return 0;
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *p = strstr(line, "listening on 127.0.0.1:");
    if (p != NULL)
      port = atoi(p + strlen("listening on 127.0.0.1:"));
  }
  fclose(f);
  return port;
}

/* Whether the log holds s. */
static bool log_has(const char *path, const char *s)
{
  FILE *f = fopen(path, "r");
  char line[2048];
  bool found = false;
  if (f == NULL)
    return false;
  while (!found && fgets(line, sizeof(line), f) != NULL)
    found = strstr(line, s) != NULL;
  fclose(f);
  return found;
}

/* A fresh key and controller under base/name. */
int bench_cluster_ctl_start(const struct bench_opts *o, const char *name, struct bench_ctl_proc *cp,
                     char *errbuf, size_t errlen)
{
  char hb[16];
  memset(cp, 0, sizeof(*cp));
  snprintf(cp->dir, sizeof(cp->dir), "%s/%s", o->tmp_dir, name);
  snprintf(cp->key, sizeof(cp->key), "%s/%s.key", o->tmp_dir, name);
  snprintf(cp->log, sizeof(cp->log), "%s/%s.log", o->tmp_dir, name);
  int rc = run_keygen(o, cp->key, cp->log, errbuf, errlen);
  if (rc < 0)
    return rc;
  snprintf(hb, sizeof(hb), "%u", HEARTBEAT_MS);
  char *argv[] = { (char *)o->ptd, "controller", "--listen", "127.0.0.1:0",
                   "--state-dir", cp->dir, "--key", cp->key, "--heartbeat-ms", hb,
                   "--log-level", o->verbose ? "7" : "6", NULL };
  rc = bench_child_spawn(&cp->pid, argv, cp->log, errbuf, errlen);
  if (rc < 0)
    return rc;
  uint64_t deadline = bench_now_ms() + LISTEN_DEADLINE_MS;
  while ((cp->port = port_from_log(cp->log)) == 0) {
    int st;
    if (!bench_child_is_alive(cp->pid, &st)) {
      char w[64];
      snprintf(errbuf, errlen, "ptd controller %s at start (log %s)",
               bench_wait_text(w, sizeof(w), st), cp->log);
      bench_log_tail(cp->log, 10);
      cp->pid = 0;
      return -EIO;
    }
    if (bench_now_ms() >= deadline) {
      snprintf(errbuf, errlen, "ptd controller did not listen within %d ms (log %s)",
               LISTEN_DEADLINE_MS, cp->log);
      bench_log_tail(cp->log, 10);
      bench_child_stop(cp->pid, STOP_GRACE_MS);
      cp->pid = 0;
      return -ETIMEDOUT;
    }
    bench_sleep_ms(10);
  }
  return 0;
}

void bench_cluster_ctl_stop(struct bench_ctl_proc *cp)
{
  if (cp->pid > 0)
    bench_child_stop(cp->pid, STOP_GRACE_MS);
  cp->pid = 0;
}

/* At least need descriptors for this process (and the controller, which
 * inherits the limit). PT_OK, or -EMFILE with why. */
static int fd_limit_raise(rlim_t need, char *why, size_t whylen)
{
  struct rlimit rl;
  if (getrlimit(RLIMIT_NOFILE, &rl) != 0) {
    snprintf(why, whylen, "getrlimit(RLIMIT_NOFILE): %s", strerror(errno));
    return -errno;
  }
  if (rl.rlim_cur >= need)
    return PT_OK;
  struct rlimit want = rl;
  want.rlim_cur = need;
  if (rl.rlim_max != RLIM_INFINITY && rl.rlim_max < need)
    want.rlim_max = need;
  if (setrlimit(RLIMIT_NOFILE, &want) == 0)
    return PT_OK;
  snprintf(why, whylen, "RLIMIT_NOFILE is %llu (hard %llu) and cannot be raised to %llu: %s",
           (unsigned long long)rl.rlim_cur, (unsigned long long)rl.rlim_max,
           (unsigned long long)need, strerror(errno));
  return -EMFILE;
}

/* ---- a blocking ptctl-like call (client/ptctl.c's ctl_call) ---- */

/* PT_OK with *reply, -ENOTSUP when the controller closed the connection
 * without an answer (it does not know the request), or another error. */
int bench_cluster_call(const struct bench_ctl_proc *cp, uint32_t type, const ProtobufCMessage *req,
                    uint32_t reply_type, int timeout_ms, ProtobufCMessage **reply,
                    char *why, size_t whylen)
{
  struct rpc_auth self = { .role = PT__PEER_ROLE__PEER_ROLE_CTL };
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  uint32_t peer_role = 0;
  int fd, rc;

  snprintf(self.node_id, sizeof(self.node_id), "ptbench");
  rc = rpc_key_load(cp->key, self.key, why, whylen);
  if (rc != PT_OK)
    return rc;
  rc = rpc_sock_connect_tcp("127.0.0.1", cp->port, timeout_ms, &fd);
  if (rc != PT_OK) {
    snprintf(why, whylen, "cannot reach the controller: %s", pt_strerror(rc));
    goto out;
  }
  struct rpc_sock_session ss;
  rc = rpc_sock_session_handshake(&ss, fd, &self, timeout_ms, &peer_role, NULL);
  if (rc == PT_OK && peer_role != PT__PEER_ROLE__PEER_ROLE_CONTROLLER)
    rc = PT_EPROTO;
  if (rc != PT_OK) {
    snprintf(why, whylen, "cannot authenticate to the controller: %s", pt_strerror(rc));
    close(fd);
    goto out;
  }
  uint64_t now = rpc_now_ms();
  rc = rpc_sock_session_call(&ss, type, req, reply_type,
                             now < deadline ? (int)(deadline - now) : 1, reply);
  rpc_sock_session_release(&ss);
  close(fd);
  if (rc == -ECONNRESET) {
    snprintf(why, whylen, "the controller closed the connection at %s without an answer",
             rpc_type_name(type));
    rc = -ENOTSUP;
  } else if (rc != PT_OK) {
    snprintf(why, whylen, "%s: no answer from the controller: %s", rpc_type_name(type),
             pt_strerror(rc));
  }
out:
  sodium_memzero(self.key, sizeof(self.key));
  return rc;
}

/* JOB_START of spec. PT_OK with *epoch; -ENOTSUP when the controller does
 * not serve jobs (why says so); another error with why. */
int bench_cluster_job_start(const struct bench_ctl_proc *cp, Pt__JobSpec *spec, uint64_t *epoch,
                     char *why, size_t whylen)
{
  Pt__JobStart js = PT__JOB_START__INIT;
  ProtobufCMessage *m = NULL;
  js.spec = spec;
  int rc = bench_cluster_call(cp, RPC_JOB_START, &js.base, RPC_JOB_REPLY, START_DEADLINE_MS, &m, why,
                    whylen);
  if (rc == -ENOTSUP) {
    size_t l = strlen(why);
    snprintf(why + l, whylen - l, "%s",
             log_has(cp->log, "JOB_START is not a ptctl request")
                 ? ": this controller does not serve jobs yet (JOB_START is an unknown request to it)"
                 : ": taken as a controller that does not serve jobs");
    return rc;
  }
  if (rc != PT_OK)
    return rc;
  const Pt__JobReply *r = (const Pt__JobReply *)m;
  rc = r->status;
  if (rc < 0)
    snprintf(why, whylen, "JOB_START refused: %s",
             r->message != NULL && r->message[0] ? r->message : pt_strerror(rc));
  else
    *epoch = r->has_epoch ? r->epoch : 1;
  protobuf_c_message_free_unpacked(m, NULL);
  return rc < 0 ? rc : PT_OK;
}

/* ---- simulated nodes ---- */

enum sim_phase { SIM_REGISTER, SIM_START, SIM_STEPS, SIM_DONE };

struct sim;

struct sim_node {
  struct sim *s;
  struct rpc_conn *c;
  uint32_t idx;
  char id[32];
  uint8_t incarnation[16];
  uv_timer_t hb;
  bool hb_init;
  uint64_t hb_seq;
  uint64_t reg_req;
  bool registered, running;
  uint64_t committed; /* the last JOB_COMMIT's step */
};

struct sim {
  uv_loop_t loop;
  uv_timer_t guard, step_timer;
  const struct bench_ctl_proc *cp;
  struct rpc_auth auth;
  struct sim_node *nodes;
  uint32_t n, dialled, pending, registered, running, closed;
  uint32_t heartbeat_ms;
  enum sim_phase phase;
  uint64_t phase_deadline;
  char job[64];
  uint64_t epoch;
  uint64_t step;         /* the step being committed */
  uint32_t commits;      /* nodes that got JOB_COMMIT(step) */
  double t_step, t_sealed;
  uint32_t pins;         /* nodes that got JOB_PIN(step) */
  double t_pins, t_votes, t_commit0; /* last pin in, last vote out, first commit in */
  double *part[3];       /* ms per measured step: sealed->pins, votes->commit, commit spread */
  int steps, measured;   /* steps to run; samples taken */
  int step_ms;           /* a step begins this often (or when the last committed) */
  double *lat;           /* ms, one per measured step */
  double cpu0, wall0, cpu1, wall1, self0, self1;
  uint64_t unpins;
  int rc;
  char err[BENCH_ERRLEN];
};

static void sim_fail(struct sim *s, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void sim_end(struct sim *s)
{
  if (s->phase == SIM_DONE)
    return;
  s->phase = SIM_DONE;
  uv_timer_stop(&s->guard);
  uv_timer_stop(&s->step_timer);
  for (uint32_t i = 0; i < s->n; i++) {
    struct sim_node *nd = &s->nodes[i];
    if (nd->hb_init)
      uv_timer_stop(&nd->hb);
    if (nd->c != NULL)
      rpc_conn_close(nd->c, 0);
  }
  uv_stop(&s->loop);
}

static void sim_fail(struct sim *s, int rc, const char *fmt, ...)
{
  va_list ap;
  if (s->rc == 0) {
    s->rc = rc < 0 ? rc : -EIO;
    va_start(ap, fmt);
    vsnprintf(s->err, sizeof(s->err), fmt, ap);
    va_end(ap);
  }
  sim_end(s);
}

static void sim_dial_more(struct sim *s);
static void sim_step_begin(uv_timer_t *t);

static void on_hb(uv_timer_t *t)
{
  struct sim_node *nd = t->data;
  Pt__Heartbeat hb = PT__HEARTBEAT__INIT;
  if (nd->c == NULL)
    return;
  hb.seq = ++nd->hb_seq;
  (void)rpc_conn_send(nd->c, RPC_HEARTBEAT, 0, &hb.base);
}

static void on_idle_end(uv_timer_t *t)
{
  uv_stop(t->loop);
}

static double self_cpu_s(void)
{
  struct rusage ru;
  if (getrusage(RUSAGE_SELF, &ru) != 0)
    return NAN;
  return (double)(ru.ru_utime.tv_sec + ru.ru_stime.tv_sec) +
         (double)(ru.ru_utime.tv_usec + ru.ru_stime.tv_usec) / 1e6;
}

static void sim_all_running(struct sim *s)
{
  s->phase = SIM_STEPS;
  s->step = 0;
  s->cpu0 = bench_proc_cpu_s(s->cp->pid);
  s->self0 = self_cpu_s();
  s->wall0 = bench_now();
  uv_timer_start(&s->step_timer, sim_step_begin, 0, 0);
}

static void sim_step_begin(uv_timer_t *t)
{
  struct sim *s = t->data;
  if (s->phase != SIM_STEPS)
    return;
  if ((int)s->step >= s->steps) {
    s->cpu1 = bench_proc_cpu_s(s->cp->pid);
    s->self1 = self_cpu_s();
    s->wall1 = bench_now();
    sim_end(s);
    return;
  }
  s->step++;
  s->commits = 0;
  s->pins = 0;
  s->t_step = bench_now();
  s->phase_deadline = bench_now_ms() + STEP_DEADLINE_MS;
  Pt__StepSealed m = PT__STEP_SEALED__INIT;
  m.job = s->job;
  m.epoch = s->epoch;
  m.step = s->step;
  m.has_pinned = m.pinned = true;
  for (uint32_t i = 0; i < s->n; i++) {
    int rc = rpc_conn_send(s->nodes[i].c, RPC_STEP_SEALED, 0, &m.base);
    if (rc != PT_OK) {
      sim_fail(s, rc, "node %s: cannot send STEP_SEALED: %s", s->nodes[i].id, pt_strerror(rc));
      return;
    }
  }
  s->t_sealed = bench_now(); /* the last one is in the kernel's hands */
  /* No pin round unless the controller asks (JOB_PIN, sim_on_msg). */
  s->t_pins = s->t_votes = s->t_sealed;
}

static void sim_committed(struct sim *s)
{
  double now = bench_now();
  if ((int)s->step > WARMUP_STEPS)
  {
    s->part[0][s->measured] = (s->t_pins - s->t_sealed) * 1e3;
    s->part[1][s->measured] = (s->t_commit0 - s->t_votes) * 1e3;
    s->part[2][s->measured] = (now - s->t_commit0) * 1e3;
    s->lat[s->measured++] = (now - s->t_sealed) * 1e3;
  }
  double next = s->t_step + s->step_ms / 1e3 - now;
  uv_timer_start(&s->step_timer, sim_step_begin, next > 0 ? (uint64_t)(next * 1e3) : 0, 0);
}

static int sim_on_msg(struct rpc_conn *c, const struct rpc_hdr *h, ProtobufCMessage *msg)
{
  struct sim_node *nd = rpc_conn_data(c);
  struct sim *s = nd->s;

  switch (h->type) {
  case RPC_NODE_REGISTER_REPLY: {
    const Pt__NodeRegisterReply *r = (const Pt__NodeRegisterReply *)msg;
    if (nd->registered || h->request_id != nd->reg_req)
      return 0;
    if (r->status < 0) {
      sim_fail(s, r->status, "node %s: registration refused: %s", nd->id,
               r->message != NULL ? r->message : pt_strerror(r->status));
      return 0;
    }
    nd->registered = true;
    s->registered++;
    s->pending--;
    if (r->has_heartbeat_ms && r->heartbeat_ms > 0)
      s->heartbeat_ms = r->heartbeat_ms;
    uv_timer_init(&s->loop, &nd->hb);
    nd->hb.data = nd;
    nd->hb_init = true;
    /* Each node's own phase, as independent machines would have. */
    uv_timer_start(&nd->hb, on_hb, randombytes_uniform(s->heartbeat_ms) + 1, s->heartbeat_ms);
    if (s->registered == s->n) {
      s->phase = SIM_START; /* the caller sends JOB_START */
      uv_stop(&s->loop);
    } else {
      sim_dial_more(s);
    }
    return 0;
  }
  case RPC_JOB_ASSIGN: {
    const Pt__JobAssign *a = (const Pt__JobAssign *)msg;
    Pt__JobPartState ps = PT__JOB_PART_STATE__INIT;
    ps.job = a->spec->name;
    ps.epoch = a->epoch;
    ps.state = "running";
    (void)rpc_conn_send(c, RPC_JOB_PART_STATE, h->request_id, &ps.base);
    if (!nd->running) {
      nd->running = true;
      s->running++;
      if (s->epoch == 0)
        s->epoch = a->epoch;
      if (s->running == s->n && s->phase == SIM_START)
        sim_all_running(s);
    }
    return 0;
  }
  case RPC_JOB_PIN: {
    const Pt__JobPin *p = (const Pt__JobPin *)msg;
    Pt__JobVote v = PT__JOB_VOTE__INIT;
    v.job = p->job;
    v.epoch = p->epoch;
    v.step = p->step;
    v.status = 0;
    (void)rpc_conn_send(c, RPC_JOB_VOTE, h->request_id, &v.base);
    if (s->phase == SIM_STEPS && p->step == s->step && ++s->pins == s->n)
      s->t_pins = s->t_votes = bench_now(); /* the last pin came, its vote went */
    return 0;
  }
  case RPC_JOB_COMMIT: {
    const Pt__JobCommit *m = (const Pt__JobCommit *)msg;
    if (m->step <= nd->committed)
      return 0;
    nd->committed = m->step;
    if (s->phase == SIM_STEPS && m->step >= s->step) {
      if (s->commits == 0)
        s->t_commit0 = bench_now();
      if (++s->commits == s->n)
        sim_committed(s);
    }
    return 0;
  }
  case RPC_JOB_UNPIN:
    s->unpins++;
    return 0;
  case RPC_JOB_HALT: {
    const Pt__JobHalt *m = (const Pt__JobHalt *)msg;
    sim_fail(s, -ECANCELED, "node %s: the controller halted the job: %s", nd->id,
             m->reason != NULL ? m->reason : "no reason given");
    return 0;
  }
  default:
    return 0;
  }
}

static void sim_on_close(struct rpc_conn *c, int err)
{
  struct sim_node *nd = rpc_conn_data(c);
  struct sim *s = nd->s;
  nd->c = NULL;
  s->closed++;
  if (nd->hb_init)
    uv_timer_stop(&nd->hb);
  if (s->phase != SIM_DONE)
    sim_fail(s, err != 0 ? err : -ECONNRESET, "node %s: the controller closed its "
             "connection: %s", nd->id, err != 0 ? pt_strerror(err) : "end of stream");
}

static void sim_on_ready(struct rpc_conn *c)
{
  struct sim_node *nd = rpc_conn_data(c);
  Pt__NodeRegister reg = PT__NODE_REGISTER__INIT;
  reg.node_id = nd->id;
  reg.advertise = "127.0.0.1";
  reg.capacity = 1;
  reg.incarnation.data = nd->incarnation;
  reg.incarnation.len = sizeof(nd->incarnation);
  nd->reg_req = nd->idx + 1u;
  int rc = rpc_conn_send(c, RPC_NODE_REGISTER, nd->reg_req, &reg.base);
  if (rc != PT_OK)
    sim_fail(nd->s, rc, "node %s: cannot send NODE_REGISTER: %s", nd->id, pt_strerror(rc));
}

static const struct rpc_conn_ops sim_ops = {
  .on_msg = sim_on_msg,
  .on_close = sim_on_close,
  .on_ready = sim_on_ready,
};

static void sim_dial_more(struct sim *s)
{
  while (s->phase == SIM_REGISTER && s->dialled < s->n && s->pending < MAX_PENDING_HANDSHAKES) {
    struct sim_node *nd = &s->nodes[s->dialled];
    struct rpc_auth a = s->auth;
    snprintf(a.node_id, sizeof(a.node_id), "%s", nd->id);
    s->dialled++;
    s->pending++;
    int rc = rpc_conn_connect_tcp(&s->loop, "127.0.0.1", s->cp->port, &sim_ops, &a, CONNECT_MS,
                                  nd, &nd->c);
    sodium_memzero(a.key, sizeof(a.key));
    if (rc != PT_OK) {
      nd->c = NULL;
      sim_fail(s, rc, "node %s: cannot connect: %s", nd->id, pt_strerror(rc));
      return;
    }
  }
}

static void on_guard(uv_timer_t *t)
{
  struct sim *s = t->data;
  if (s->phase == SIM_DONE || bench_now_ms() < s->phase_deadline)
    return;
  switch (s->phase) {
  case SIM_REGISTER:
    sim_fail(s, -ETIMEDOUT, "%u of %u simulated nodes registered within %u ms", s->registered,
             s->n, REGISTER_DEADLINE_MS);
    break;
  case SIM_START:
    sim_fail(s, -ETIMEDOUT, "%u of %u simulated nodes were assigned their part within %u ms",
             s->running, s->n, START_DEADLINE_MS);
    break;
  case SIM_STEPS:
    sim_fail(s, -ETIMEDOUT, "step %" PRIu64 " not committed within %u ms (%u of %u nodes got "
             "JOB_COMMIT; %" PRIu64 " rounds failed)", s->step, STEP_DEADLINE_MS, s->commits,
             s->n, s->unpins);
    break;
  default:
    break;
  }
}

static void sim_drain(struct sim *s)
{
  sim_end(s);
  if (!uv_is_closing((uv_handle_t *)&s->guard))
    uv_close((uv_handle_t *)&s->guard, NULL);
  if (!uv_is_closing((uv_handle_t *)&s->step_timer))
    uv_close((uv_handle_t *)&s->step_timer, NULL);
  for (uint32_t i = 0; i < s->n; i++)
    if (s->nodes[i].hb_init && !uv_is_closing((uv_handle_t *)&s->nodes[i].hb))
      uv_close((uv_handle_t *)&s->nodes[i].hb, NULL);
  /* Every conn's on_close and every handle's close run; a bounded wait. */
  for (int i = 0; i < 1000 && uv_run(&s->loop, UV_RUN_NOWAIT) != 0; i++)
    bench_sleep_ms(1);
  (void)uv_loop_close(&s->loop);
}

/* The same traffic without pt (bench_floor.c): the frames a simulated node
 * and the controller sent, packed alike, over as many steps. A floor that
 * cannot be taken leaves floor_why; the controller's figures stand. */
static void sim_floor(const struct sim *s, struct bench_cluster_size *r)
{
  Pt__StepSealed up = PT__STEP_SEALED__INIT;
  Pt__Heartbeat hb = PT__HEARTBEAT__INIT;
  Pt__JobCommit down = PT__JOB_COMMIT__INIT;
  uint8_t *f_up = NULL, *f_hb = NULL, *f_down = NULL;
  size_t l_up = 0, l_hb = 0, l_down = 0;
  uint64_t mid = (uint64_t)(s->steps / 2 + 1); /* a step number of the run's size */

  up.job = down.job = (char *)s->job;
  up.epoch = down.epoch = s->epoch;
  up.step = down.step = mid;
  up.has_pinned = up.pinned = true;
  hb.seq = mid;
  if (rpc_frame_pack(&f_up, &l_up, RPC_STEP_SEALED, 0, &up.base) != PT_OK ||
      rpc_frame_pack(&f_hb, &l_hb, RPC_HEARTBEAT, 0, &hb.base) != PT_OK ||
      rpc_frame_pack(&f_down, &l_down, RPC_JOB_COMMIT, 0, &down.base) != PT_OK) {
    snprintf(r->floor_why, sizeof(r->floor_why), "cannot pack the frames");
    goto out;
  }
  r->up_bytes = l_up;
  r->hb_bytes = l_hb;
  r->down_bytes = l_down;
  struct bench_floor_spec sp = {
    .nodes = s->n, .steps = s->steps, .step_ms = s->step_ms, .heartbeat_ms = s->heartbeat_ms,
    .up = f_up, .up_len = l_up, .hb = f_hb, .hb_len = l_hb, .down = f_down, .down_len = l_down,
  };
  struct bench_floor_result fr;
  char why[BENCH_ERRLEN];
  if (bench_floor_run(&sp, &fr, why, sizeof(why)) == 0 && fr.measured) {
    r->floor_cpu_pct = fr.cpu_pct;
    r->floor_steps = fr.steps;
  } else {
    snprintf(r->floor_why, sizeof(r->floor_why), "%s", why);
  }
out:
  free(f_up);
  free(f_hb);
  free(f_down);
}

/* One size: n simulated nodes, steps steps. */
static int sim_run(const struct bench_opts *o, uint32_t n, int steps,
                   struct bench_cluster_size *r, char *errbuf, size_t errlen)
{
  struct bench_ctl_proc cp;
  struct sim *s = NULL;
  char name[32], why[BENCH_ERRLEN];
  int rc;

  r->nodes = n;
  r->steps = steps;
  r->p50_ms = r->p99_ms = r->cpu_pct = r->idle_cpu_pct = r->sim_cpu_pct = NAN;
  r->floor_cpu_pct = NAN;
  r->pins_p50_ms = r->journal_p50_ms = r->spread_p50_ms = NAN;
  rc = fd_limit_raise(2 * (rlim_t)n + FD_SPARE, why, sizeof(why));
  if (rc != PT_OK) {
    snprintf(r->why, sizeof(r->why), "%s", why);
    return 0; /* not measured, said so */
  }
  snprintf(name, sizeof(name), "ctl-%u", n);
  rc = bench_cluster_ctl_start(o, name, &cp, errbuf, errlen);
  if (rc < 0)
    return rc;

  s = calloc(1, sizeof(*s));
  if (s == NULL || (s->nodes = calloc(n, sizeof(*s->nodes))) == NULL ||
      (s->lat = calloc((size_t)steps + 1, sizeof(double))) == NULL ||
      (s->part[0] = calloc((size_t)steps + 1, sizeof(double))) == NULL ||
      (s->part[1] = calloc((size_t)steps + 1, sizeof(double))) == NULL ||
      (s->part[2] = calloc((size_t)steps + 1, sizeof(double))) == NULL) {
    snprintf(errbuf, errlen, "out of memory for %u simulated nodes", n);
    rc = -ENOMEM;
    goto out_free;
  }
  s->cp = &cp;
  s->n = n;
  s->steps = steps;
  s->heartbeat_ms = HEARTBEAT_MS;
  s->step_ms = o->cluster_step_ms > 0 ? o->cluster_step_ms : BENCH_CLUSTER_STEP_MS;
  s->auth.role = PT__PEER_ROLE__PEER_ROLE_NODE;
  rc = rpc_key_load(cp.key, s->auth.key, errbuf, errlen);
  if (rc != PT_OK)
    goto out_free;
  for (uint32_t i = 0; i < n; i++) {
    s->nodes[i].s = s;
    s->nodes[i].idx = i;
    snprintf(s->nodes[i].id, sizeof(s->nodes[i].id), "sim-%05u", i);
    randombytes_buf(s->nodes[i].incarnation, sizeof(s->nodes[i].incarnation));
  }
  uv_loop_init(&s->loop);
  uv_timer_init(&s->loop, &s->guard);
  uv_timer_init(&s->loop, &s->step_timer);
  s->guard.data = s->step_timer.data = s;
  uv_timer_start(&s->guard, on_guard, 50, 50);

  /* Register every node. */
  s->phase = SIM_REGISTER;
  s->phase_deadline = bench_now_ms() + REGISTER_DEADLINE_MS;
  double t_reg = bench_now();
  sim_dial_more(s);
  if (s->phase == SIM_REGISTER)
    uv_run(&s->loop, UV_RUN_DEFAULT);
  if (s->rc != 0)
    goto out_sim;
  r->register_s = bench_now() - t_reg;
  if (o->verbose)
    fprintf(stderr, "ptbench: %u simulated nodes registered in %.2f s\n", n, r->register_s);

  /* Heartbeats alone, for reference: the controller's CPU with every node
   * registered and no job. */
  {
    int idle_ms = o->quick ? IDLE_MS_QUICK : IDLE_MS;
    s->phase_deadline = bench_now_ms() + (uint64_t)idle_ms + START_DEADLINE_MS;
    double c0 = bench_proc_cpu_s(cp.pid), w0 = bench_now();
    uv_timer_start(&s->step_timer, on_idle_end, (uint64_t)idle_ms, 0);
    uv_run(&s->loop, UV_RUN_DEFAULT);
    if (s->rc != 0)
      goto out_sim;
    r->idle_cpu_pct = 100.0 * (bench_proc_cpu_s(cp.pid) - c0) / (bench_now() - w0);
  }

  /* The job, from ptctl's side. Blocking: the nodes' loop waits, their
   * heartbeats by a few milliseconds at most. */
  Pt__JobSpec spec = PT__JOB_SPEC__INIT;
  char *argv[] = { "/bin/false", "simulated", NULL };
  snprintf(s->job, sizeof(s->job), "%s%u", o->shm_prefix, n);
  spec.name = s->job;
  spec.n_argv = 2;
  spec.argv = argv;
  spec.nodes = n;
  spec.ranks_per_node = 1;
  uint64_t epoch = 0;
  rc = bench_cluster_job_start(&cp, &spec, &epoch, why, sizeof(why));
  if (rc == -ENOTSUP) {
    snprintf(r->why, sizeof(r->why), "%s", why);
    r->jobs_unsupported = true;
    rc = 0;
    goto out_sim;
  }
  if (rc != PT_OK) {
    snprintf(errbuf, errlen, "%u simulated nodes: %s", n, why);
    goto out_sim;
  }
  if (s->epoch == 0)
    s->epoch = epoch;
  s->phase_deadline = bench_now_ms() + START_DEADLINE_MS;
  if (s->running == s->n)
    sim_all_running(s);
  uv_run(&s->loop, UV_RUN_DEFAULT);
  if (s->rc != 0)
    goto out_sim;
  if (s->measured < 1) {
    snprintf(errbuf, errlen, "%u simulated nodes: no step measured", n);
    rc = -EIO;
    goto out_sim;
  }
  r->samples = s->measured;
  r->p50_ms = bench_percentile(s->lat, (size_t)s->measured, 0.5);
  r->p99_ms = bench_percentile(s->lat, (size_t)s->measured, 0.99);
  r->cpu_pct = 100.0 * (s->cpu1 - s->cpu0) / (s->wall1 - s->wall0);
  r->pins_p50_ms = bench_median(s->part[0], (size_t)s->measured);
  r->journal_p50_ms = bench_median(s->part[1], (size_t)s->measured);
  r->spread_p50_ms = bench_median(s->part[2], (size_t)s->measured);
  r->window_s = s->wall1 - s->wall0;
  r->sim_cpu_pct = 100.0 * (s->self1 - s->self0) / (s->wall1 - s->wall0);
  r->failed_rounds = s->unpins;
  r->measured = true;
  rc = 0;

out_sim:
  if (s->rc != 0) {
    snprintf(errbuf, errlen, "%u simulated nodes: %s", n, s->err);
    rc = s->rc;
    if (!bench_child_is_alive(cp.pid, NULL)) {
      size_t l = strlen(errbuf);
      snprintf(errbuf + l, errlen - l, " (the controller died; log %s)", cp.log);
      bench_log_tail(cp.log, 10);
      cp.pid = 0;
    }
  }
  sim_drain(s);
out_free:
  bench_cluster_ctl_stop(&cp);
  if (rc == 0 && r->measured)
    sim_floor(s, r);
  if (s != NULL) {
    sodium_memzero(s->auth.key, sizeof(s->auth.key));
    free(s->nodes);
    free(s->lat);
    for (int k = 0; k < 3; k++)
      free(s->part[k]);
    free(s);
  }
  return rc;
}

int bench_cluster_sim_run(const struct bench_opts *o, struct bench_cluster_result *r,
                          char *errbuf, size_t errlen)
{
  static const uint32_t sizes[BENCH_CLUSTER_SIZES] = { 10, 100, 1000 };
  static const int steps_full[BENCH_CLUSTER_SIZES] = { 200, 200, 100 };
  static const int steps_quick[BENCH_CLUSTER_SIZES] = { 40, 40, 30 };

  if (sodium_init() < 0) {
    snprintf(errbuf, errlen, "libsodium cannot start");
    return -ENOSYS;
  }
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++) {
    struct bench_cluster_size *z = &r->sim[i];
    memset(z, 0, sizeof(*z));
    z->nodes = sizes[i];
    z->p50_ms = z->p99_ms = z->cpu_pct = z->idle_cpu_pct = z->sim_cpu_pct = NAN;
    z->floor_cpu_pct = NAN;
    z->pins_p50_ms = z->journal_p50_ms = z->spread_p50_ms = NAN;
  }
  for (int i = 0; i < BENCH_CLUSTER_SIZES; i++) {
    struct bench_cluster_size *z = &r->sim[i];
    if (o->verbose)
      fprintf(stderr, "ptbench: controller with %u simulated nodes\n", sizes[i]);
    int rc = sim_run(o, sizes[i], (o->quick ? steps_quick : steps_full)[i] + WARMUP_STEPS, z,
                     errbuf, errlen);
    if (rc < 0)
      return rc;
    if (z->jobs_unsupported) {
      r->jobs_unsupported = true;
      memcpy(r->jobs_why, z->why, sizeof(r->jobs_why)); /* both BENCH_ERRLEN */
      for (int k = i + 1; k < BENCH_CLUSTER_SIZES; k++) {
        r->sim[k].jobs_unsupported = true;
        memcpy(r->sim[k].why, z->why, sizeof(r->sim[k].why));
      }
      return 0;
    }
    if (o->verbose && z->measured)
      fprintf(stderr, "ptbench: %u nodes: commit p50 %.2f ms, p99 %.2f ms, controller %.2f%% "
              "of a core (%.2f%% heartbeats alone), ptbench's nodes %.2f%%; median parts: "
              "sealed->every pin %.2f ms, last vote->first commit %.2f ms, commits first->last "
              "%.2f ms; kernel floor %.2f%%%s%s\n", sizes[i], z->p50_ms, z->p99_ms, z->cpu_pct,
              z->idle_cpu_pct, z->sim_cpu_pct, z->pins_p50_ms, z->journal_p50_ms,
              z->spread_p50_ms, z->floor_cpu_pct, z->floor_why[0] ? ": " : "", z->floor_why);
  }
  return 0;
}

/* ---- real nodes behind a relay ---- */

#define REAL_NODES 3
#define ASSIGN_ANSWER_S 5.0 /* a node answers JOB_ASSIGN ("starting") at once */
#define RELAY_READ 65536u
#define SEALS_MAX 65536u
#define COMMITS_OPEN 64u

struct relay;

/* One node's link: the node's side (down) and the controller's (up). */
struct relay_pipe {
  struct relay *r;
  int node;
  uv_tcp_t down, up;
  uv_connect_t creq;
  struct rpc_parser p_down, p_up; /* frames from the node / from the controller */
  bool parse_down, parse_up;      /* false once a stream did not parse */
  int open;                       /* handles not yet closed */
  bool closing;
  double t;                       /* the read being parsed: when it arrived */
  struct relay_pipe *next, **pprev;
};

struct relay_write {
  uv_write_t req;
  char data[];
};

struct commit_open {
  uint64_t step;
  uint32_t nodes; /* bit i: node i got JOB_COMMIT(step) */
  double t_last;
};

struct relay {
  uv_loop_t loop;
  uv_async_t wake;
  uv_tcp_t lis[REAL_NODES];
  int nlis;                         /* listeners initialised */
  int port[REAL_NODES];
  struct relay_pipe *pipes;         /* open ones */
  int ctl_port;
  pthread_t thread;
  bool started;
  /* under mu: what passed */
  pthread_mutex_t mu;
  bool stop;
  uint32_t registered;              /* bit i: node i's registration accepted */
  uint64_t sealed_frames, part_states, commit_frames;
  struct { uint64_t step; double t; } *seals[REAL_NODES];
  size_t nseals[REAL_NODES];
  uint64_t last_commit[REAL_NODES]; /* the newest JOB_COMMIT forwarded to it */
  struct commit_open open[COMMITS_OPEN];
  double *lat;
  size_t nlat, latcap;
};

static void relay_pipe_closed(uv_handle_t *h)
{
  struct relay_pipe *p = h->data;
  if (--p->open == 0) {
    *p->pprev = p->next;
    if (p->next != NULL)
      p->next->pprev = p->pprev;
    rpc_parser_release(&p->p_down);
    rpc_parser_release(&p->p_up);
    free(p);
  }
}

static void relay_pipe_close(struct relay_pipe *p)
{
  if (p->closing)
    return;
  p->closing = true;
  uv_close((uv_handle_t *)&p->down, relay_pipe_closed);
  uv_close((uv_handle_t *)&p->up, relay_pipe_closed);
}

static void relay_alloc(uv_handle_t *h, size_t want, uv_buf_t *buf)
{
  (void)h;
  (void)want;
  struct relay_write *w = malloc(sizeof(*w) + RELAY_READ);
  *buf = uv_buf_init(w != NULL ? w->data : NULL, w != NULL ? RELAY_READ : 0);
}

static void relay_written(uv_write_t *req, int status)
{
  (void)status;
  free(req->data);
}

/* A committed step every node got: its latency from the last node's first
 * report of a sealed step >= step (under mu). */
static void relay_sample(struct relay *r, const struct commit_open *c)
{
  double last = -1;
  for (int i = 0; i < REAL_NODES; i++) {
    double t = -1;
    for (size_t k = 0; k < r->nseals[i]; k++)
      if (r->seals[i][k].step >= c->step) {
        t = r->seals[i][k].t;
        break;
      }
    if (t < 0)
      return; /* a node that never said it sealed it (a reconnect): no sample */
    if (t > last)
      last = t;
  }
  if (r->nlat == r->latcap) {
    size_t cap = r->latcap ? 2 * r->latcap : 256;
    double *v = realloc(r->lat, cap * sizeof(*v));
    if (v == NULL)
      return;
    r->lat = v;
    r->latcap = cap;
  }
  r->lat[r->nlat++] = (c->t_last - last) * 1e3;
}

static int relay_frame_down(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct relay_pipe *p = arg;
  struct relay *r = p->r;
  ProtobufCMessage *m = NULL;
  /* The node's frames after its handshake proof carry tags (rpc.h). */
  if (h->type == RPC_AUTH_PROOF)
    rpc_parser_set_trailer(&p->p_down, RPC_TAG_BYTES);
  if (h->type != RPC_STEP_SEALED && h->type != RPC_JOB_PART_STATE)
    return 0;
  if (rpc_body_unpack(h->type, body, h->length, &m) != PT_OK)
    return 0;
  pthread_mutex_lock(&r->mu);
  if (h->type == RPC_JOB_PART_STATE) {
    r->part_states++;
  } else {
    const Pt__StepSealed *s = (const Pt__StepSealed *)m;
    int i = p->node;
    r->sealed_frames++;
    if (r->seals[i] != NULL && r->nseals[i] < SEALS_MAX &&
        (r->nseals[i] == 0 || s->step > r->seals[i][r->nseals[i] - 1].step)) {
      r->seals[i][r->nseals[i]].step = s->step;
      r->seals[i][r->nseals[i]].t = p->t;
      r->nseals[i]++;
    }
  }
  pthread_mutex_unlock(&r->mu);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

static int relay_frame_up(void *arg, const struct rpc_hdr *h, const uint8_t *body)
{
  struct relay_pipe *p = arg;
  struct relay *r = p->r;
  ProtobufCMessage *m = NULL;
  /* The controller's frames after its challenge carry tags (rpc.h). */
  if (h->type == RPC_AUTH_CHALLENGE)
    rpc_parser_set_trailer(&p->p_up, RPC_TAG_BYTES);
  if (h->type != RPC_JOB_COMMIT && h->type != RPC_NODE_REGISTER_REPLY)
    return 0;
  if (rpc_body_unpack(h->type, body, h->length, &m) != PT_OK)
    return 0;
  pthread_mutex_lock(&r->mu);
  if (h->type == RPC_NODE_REGISTER_REPLY) {
    if (((const Pt__NodeRegisterReply *)m)->status >= 0)
      r->registered |= 1u << p->node;
  } else {
    uint64_t step = ((const Pt__JobCommit *)m)->step;
    int i = p->node;
    r->commit_frames++;
    if (step > r->last_commit[i]) {
      r->last_commit[i] = step;
      struct commit_open *c = &r->open[step % COMMITS_OPEN];
      if (c->step != step) {
        c->step = step;
        c->nodes = 0;
      }
      c->nodes |= 1u << i;
      c->t_last = p->t;
      if (c->nodes == (1u << REAL_NODES) - 1)
        relay_sample(r, c);
    }
  }
  pthread_mutex_unlock(&r->mu);
  protobuf_c_message_free_unpacked(m, NULL);
  return 0;
}

static void relay_read(uv_stream_t *from, ssize_t nread, const uv_buf_t *buf)
{
  struct relay_pipe *p = from->data;
  struct relay_write *w = buf->base != NULL
                              ? (struct relay_write *)(buf->base - offsetof(struct relay_write, data))
                              : NULL;
  bool down = from == (uv_stream_t *)&p->down;
  if (nread <= 0) {
    free(w);
    if (nread < 0)
      relay_pipe_close(p);
    return;
  }
  p->t = bench_now();
  /* Forwarded first, read after: the relay's own parsing is not on the path. */
  w->req.data = w;
  uv_buf_t out = uv_buf_init(w->data, (unsigned)nread);
  if (uv_write(&w->req, down ? (uv_stream_t *)&p->up : (uv_stream_t *)&p->down, &out, 1,
               relay_written) != 0) {
    free(w);
    relay_pipe_close(p);
    return;
  }
  bool *on = down ? &p->parse_down : &p->parse_up;
  if (*on && rpc_parser_feed(down ? &p->p_down : &p->p_up, (const uint8_t *)w->data,
                             (size_t)nread, down ? relay_frame_down : relay_frame_up, p) != 0)
    *on = false; /* forwarded still; not read any more */
}

static void relay_connected(uv_connect_t *req, int status)
{
  struct relay_pipe *p = req->data;
  if (p->closing)
    return;
  if (status != 0) {
    relay_pipe_close(p);
    return;
  }
  uv_tcp_nodelay(&p->up, 1);
  uv_read_start((uv_stream_t *)&p->down, relay_alloc, relay_read);
  uv_read_start((uv_stream_t *)&p->up, relay_alloc, relay_read);
}

static void relay_accept(uv_stream_t *lis, int status)
{
  struct relay *r = lis->data;
  if (status != 0)
    return;
  struct relay_pipe *p = calloc(1, sizeof(*p));
  if (p == NULL)
    return;
  p->r = r;
  p->node = (int)((uv_tcp_t *)lis - r->lis);
  p->parse_down = p->parse_up = true;
  rpc_parser_init(&p->p_down, RPC_MAX_BODY_HELLO);
  rpc_parser_init(&p->p_up, RPC_MAX_BODY_HELLO);
  uv_tcp_init(&r->loop, &p->down);
  uv_tcp_init(&r->loop, &p->up);
  p->down.data = p->up.data = p;
  p->open = 2;
  p->next = r->pipes;
  if (p->next != NULL)
    p->next->pprev = &p->next;
  p->pprev = &r->pipes;
  r->pipes = p;
  if (uv_accept(lis, (uv_stream_t *)&p->down) != 0) {
    relay_pipe_close(p);
    return;
  }
  uv_tcp_nodelay(&p->down, 1);
  struct sockaddr_in sa;
  uv_ip4_addr("127.0.0.1", r->ctl_port, &sa);
  p->creq.data = p;
  if (uv_tcp_connect(&p->creq, &p->up, (const struct sockaddr *)&sa, relay_connected) != 0)
    relay_pipe_close(p);
}

static void relay_wake(uv_async_t *a)
{
  struct relay *r = a->data;
  for (int i = 0; i < r->nlis; i++)
    uv_close((uv_handle_t *)&r->lis[i], NULL);
  uv_close((uv_handle_t *)&r->wake, NULL);
  for (struct relay_pipe *p = r->pipes; p != NULL; p = p->next)
    relay_pipe_close(p);
}

static void *relay_thread(void *arg)
{
  struct relay *r = arg;
  uv_run(&r->loop, UV_RUN_DEFAULT);
  return NULL;
}

static int relay_start(struct relay *r, int ctl_port, char *errbuf, size_t errlen)
{
  memset(r, 0, sizeof(*r));
  pthread_mutex_init(&r->mu, NULL);
  r->ctl_port = ctl_port;
  uv_loop_init(&r->loop);
  r->loop.data = r;
  uv_async_init(&r->loop, &r->wake, relay_wake);
  r->wake.data = r;
  for (int i = 0; i < REAL_NODES; i++) {
    struct sockaddr_in sa;
    struct sockaddr_storage got;
    int len = sizeof(got);
    r->seals[i] = calloc(SEALS_MAX, sizeof(*r->seals[i]));
    uv_tcp_init(&r->loop, &r->lis[i]);
    r->lis[i].data = r;
    r->nlis = i + 1;
    uv_ip4_addr("127.0.0.1", 0, &sa);
    int rc = uv_tcp_bind(&r->lis[i], (const struct sockaddr *)&sa, 0);
    if (rc == 0)
      rc = uv_listen((uv_stream_t *)&r->lis[i], 16, relay_accept);
    if (rc == 0)
      rc = uv_tcp_getsockname(&r->lis[i], (struct sockaddr *)&got, &len);
    if (rc != 0 || r->seals[i] == NULL) {
      snprintf(errbuf, errlen, "relay: cannot listen on 127.0.0.1: %s",
               rc != 0 ? uv_strerror(rc) : "out of memory");
      return rc != 0 ? rc : -ENOMEM;
    }
    r->port[i] = ntohs(((struct sockaddr_in *)&got)->sin_port);
  }
  if (pthread_create(&r->thread, NULL, relay_thread, r) != 0) {
    snprintf(errbuf, errlen, "relay: cannot start its thread");
    return -EAGAIN;
  }
  r->started = true;
  return 0;
}

static void relay_stop(struct relay *r)
{
  if (r->started) {
    uv_async_send(&r->wake);
    pthread_join(r->thread, NULL);
    r->started = false;
  } else {
    /* Never ran: close what was opened, on this thread. */
    relay_wake(&r->wake);
    uv_run(&r->loop, UV_RUN_DEFAULT);
  }
  (void)uv_loop_close(&r->loop);
  for (int i = 0; i < REAL_NODES; i++)
    free(r->seals[i]);
  free(r->lat);
  pthread_mutex_destroy(&r->mu);
}

/* The relay's figures so far. */
static void relay_counts(struct relay *r, uint32_t *registered, uint64_t *sealed,
                         uint64_t *parts, uint64_t *commits, size_t *samples)
{
  pthread_mutex_lock(&r->mu);
  *registered = r->registered;
  *sealed = r->sealed_frames;
  *parts = r->part_states;
  *commits = r->commit_frames;
  *samples = r->nlat;
  pthread_mutex_unlock(&r->mu);
}

int bench_cluster_job_stop(const struct bench_ctl_proc *cp, const char *job)
{
  Pt__JobStop m = PT__JOB_STOP__INIT;
  ProtobufCMessage *rep = NULL;
  char why[256];
  m.job = (char *)job;
  int rc = bench_cluster_call(cp, RPC_JOB_STOP, &m.base, RPC_JOB_REPLY, 5000, &rep, why, sizeof(why));
  if (rc == PT_OK) {
    rc = ((const Pt__JobReply *)rep)->status;
    protobuf_c_message_free_unpacked(rep, NULL);
  }
  return rc;
}

int bench_cluster_real_run(const struct bench_opts *o, struct bench_cluster_real *r,
                           char *errbuf, size_t errlen)
{
  struct bench_ctl_proc cp;
  struct relay *rl = NULL;
  pid_t node_pid[REAL_NODES] = { 0 };
  char node_log[REAL_NODES][512], why[BENCH_ERRLEN], job[64];
  bool job_started = false;
  int rc;

  memset(r, 0, sizeof(*r));
  r->p50_ms = r->p99_ms = NAN;
  r->nodes = REAL_NODES;
  r->ranks_per_node = 1;
  r->state_mb = 8;
  r->step_delay_ms = 20;
  if (sodium_init() < 0) {
    snprintf(errbuf, errlen, "libsodium cannot start");
    return -ENOSYS;
  }
  rc = bench_cluster_ctl_start(o, "ctl-real", &cp, errbuf, errlen);
  if (rc < 0)
    return rc;
  rl = calloc(1, sizeof(*rl));
  if (rl == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    rc = -ENOMEM;
    goto out;
  }
  rc = relay_start(rl, cp.port, errbuf, errlen);
  if (rc < 0)
    goto out;

  for (int i = 0; i < REAL_NODES; i++) {
    char ctl[64], id[32], dir[512], pfx[64], cap[16];
    snprintf(ctl, sizeof(ctl), "127.0.0.1:%d", rl->port[i]);
    snprintf(id, sizeof(id), "real-%d", i);
    snprintf(dir, sizeof(dir), "%s/node-%d", o->tmp_dir, i);
    snprintf(pfx, sizeof(pfx), "%sn%d-", o->shm_prefix, i);
    snprintf(cap, sizeof(cap), "%d", r->ranks_per_node);
    snprintf(node_log[i], sizeof(node_log[i]), "%s/node-%d.log", o->tmp_dir, i);
    char *argv[] = { (char *)o->ptd, "node", "--controller", ctl, "--node-id", id,
                     "--key", cp.key, "--state-dir", dir, "--advertise", "127.0.0.1",
                     "--capacity", cap, "--shm-prefix", pfx, "--log-level",
                     o->verbose ? "7" : "6", NULL };
    rc = bench_child_spawn(&node_pid[i], argv, node_log[i], errbuf, errlen);
    if (rc < 0)
      goto out;
  }

  /* Every node registered (through its relay). */
  uint64_t deadline = bench_now_ms() + 20000;
  uint32_t reg = 0;
  uint64_t sealed = 0, parts = 0, commits = 0;
  size_t samples = 0;
  for (;;) {
    relay_counts(rl, &reg, &sealed, &parts, &commits, &samples);
    if (reg == (1u << REAL_NODES) - 1)
      break;
    for (int i = 0; i < REAL_NODES; i++) {
      int st;
      if (!bench_child_is_alive(node_pid[i], &st)) {
        char w[64];
        node_pid[i] = 0;
        snprintf(errbuf, errlen, "3 real nodes: ptd node real-%d %s (log %s)", i,
                 bench_wait_text(w, sizeof(w), st), node_log[i]);
        bench_log_tail(node_log[i], 10);
        rc = -EIO;
        goto out;
      }
    }
    if (bench_now_ms() >= deadline) {
      snprintf(errbuf, errlen, "3 real nodes: not all registered with the controller within "
               "20 s (mask %#x; logs in %s)", reg, o->tmp_dir);
      rc = -ETIMEDOUT;
      goto out;
    }
    bench_sleep_ms(20);
  }

  /* The job: pt-train on every node, a snapshot every step. */
  char mb[16], delay[16];
  snprintf(mb, sizeof(mb), "%d", r->state_mb);
  snprintf(delay, sizeof(delay), "%d", r->step_delay_ms);
  char *targv[] = { (char *)o->pt_train, "--state-mb", mb, "--steps", "100000000",
                    "--step-delay-ms", delay, "--log-every", "100000000", NULL };
  Pt__JobSpec spec = PT__JOB_SPEC__INIT;
  snprintf(job, sizeof(job), "%sreal", o->shm_prefix);
  spec.name = job;
  spec.n_argv = sizeof(targv) / sizeof(targv[0]) - 1;
  spec.argv = targv;
  spec.nodes = REAL_NODES;
  spec.ranks_per_node = (uint32_t)r->ranks_per_node;
  /* The commit protocol alone: no code (3 nodes would default to 2+1,
   * whose protection `protect_*` measures on its own). */
  spec.has_code_k = spec.has_code_m = true;
  spec.code_k = spec.code_m = 0;
  uint64_t epoch = 0;
  rc = bench_cluster_job_start(&cp, &spec, &epoch, why, sizeof(why));
  if (rc == -ENOTSUP) {
    r->jobs_unsupported = true;
    snprintf(r->why, sizeof(r->why), "%s", why);
    rc = 0;
    goto out;
  }
  if (rc != PT_OK) {
    snprintf(errbuf, errlen, "3 real nodes: %s", why);
    goto out;
  }
  job_started = true;

  /* Committed steps, until enough or the deadline. */
  size_t want = o->quick ? 30 : 200;
  int wait_ms = o->quick ? 20000 : 60000;
  double t0 = bench_now();
  deadline = bench_now_ms() + (uint64_t)wait_ms;
  for (;;) {
    relay_counts(rl, &reg, &sealed, &parts, &commits, &samples);
    if (samples >= want + WARMUP_STEPS)
      break;
    int dead = -1, st = 0;
    for (int i = 0; i < REAL_NODES && dead < 0; i++)
      if (!bench_child_is_alive(node_pid[i], &st)) {
        dead = i;
        node_pid[i] = 0;
      }
    if (dead >= 0) {
      char w[64];
      snprintf(errbuf, errlen, "3 real nodes: ptd node real-%d %s during the job (log %s)",
               dead, bench_wait_text(w, sizeof(w), st), node_log[dead]);
      bench_log_tail(node_log[dead], 10);
      rc = -EIO;
      goto out;
    }
    if (bench_now_ms() >= deadline ||
        (sealed == 0 && parts == 0 && bench_now() - t0 >= ASSIGN_ANSWER_S))
      break;
    bench_sleep_ms(20);
  }
  r->window_s = bench_now() - t0;
  if (sealed == 0 && parts == 0) {
    /* JOB_ASSIGN reached the nodes and none answered a word of the jobs
     * protocol: ptd node does not run job parts yet. */
    snprintf(r->why, sizeof(r->why), "the nodes never answered JOB_ASSIGN (no JOB_PART_STATE, "
             "no STEP_SEALED in %.0f s): this ptd node does not run cluster job parts yet",
             r->window_s);
    r->nodes_unsupported = true;
    rc = 0;
    goto out;
  }
  if (samples <= WARMUP_STEPS) {
    snprintf(errbuf, errlen, "3 real nodes: %zu steps committed on every node in %.0f s "
             "(%" PRIu64 " STEP_SEALED, %" PRIu64 " JOB_COMMIT frames seen; logs in %s)",
             samples, r->window_s, sealed, commits, o->tmp_dir);
    rc = -ETIMEDOUT;
    goto out;
  }
  pthread_mutex_lock(&rl->mu);
  size_t n = rl->nlat - WARMUP_STEPS;
  double *v = malloc(n * sizeof(*v));
  if (v != NULL)
    memcpy(v, rl->lat + WARMUP_STEPS, n * sizeof(*v));
  pthread_mutex_unlock(&rl->mu);
  if (v == NULL) {
    snprintf(errbuf, errlen, "out of memory");
    rc = -ENOMEM;
    goto out;
  }
  r->samples = (int)n;
  r->p50_ms = bench_percentile(v, n, 0.5);
  r->p99_ms = bench_percentile(v, n, 0.99);
  free(v);
  r->measured = true;
  rc = 0;

out:
  if (job_started && cp.pid > 0)
    (void)bench_cluster_job_stop(&cp, job);
  for (int i = 0; i < REAL_NODES; i++)
    if (node_pid[i] > 0)
      bench_child_stop(node_pid[i], STOP_GRACE_MS);
  bench_cluster_ctl_stop(&cp);
  if (rl != NULL) {
    relay_stop(rl);
    free(rl);
  }
  return rc;
}
