/*
 * ptctl_fault.c — `ptctl fault`: fault injection against a running job, for
 * drills and tests (README "Fault injection").
 *
 *   ptctl fault classes                 what each class does, and which
 *                                       this build cannot inject yet
 *   ptctl fault inject JOB CLASS [--node ID] [--rank R] [--ms N]
 *                                       one injection: a FAULT to the
 *                                       controller, which kills itself
 *                                       (controller) or relays it to the
 *                                       node (rpc/pt.proto, message Fault)
 *   ptctl fault campaign JOB --seed S --count N [--classes a,b]
 *                        [--timeout-s T] [--stop-ms MS]
 *                        [--restart-node CMD] [--restart-controller CMD]
 *                        [--wait-done S]
 *                                       seeded injections (the picker in
 *                                       ptctl_fault_plan.c); after each,
 *                                       the job must restart from a
 *                                       committed step and commit a newer
 *                                       one within T s; a table at the end
 *
 * Whether a campaign's job resumed is read from the controller's status
 * (JOBS_QUERY), polled every POLL_MS: the epoch, the committed step and the
 * step the epoch restored. Before each injection the job must be running
 * with every part running and a committed step (E0, C0). After it:
 *   - a class that restarts the job (ptctl_fault_class.restarts) resumed
 *     when the epoch is past E0, the epoch restored a step (a fresh start
 *     after commits is a loss) and committed a step past both C0 and the
 *     restored one; steps redone = C0 - the restored step (0 when newer);
 *   - ptd and controller resumed when a step past C0 is committed (in E0,
 *     or in a later epoch as above);
 *   - corrupt: the epoch that resumed must not have restored the damaged
 *     step (that would be garbage): a failure if it did;
 *   - a job that ends done resumed; failed or stopped is a job failure.
 * Restart commands run with /bin/sh -c, PT_FAULT_NODE (the node id) and
 * PT_FAULT_PID (the killed ptd's or controller's pid) in the environment;
 * a daemon they start must not hold ptctl's stdout or stderr.
 *
 * Exit: 0 every injection resumed and the job did not fail; 1 one did not
 * resume within T, the job failed, or an injection was refused; 2 usage;
 * 3 the controller could not be reached at the start.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "client/ptctl.h"
#include "pt.h"
#include "rpc/rpc.h"

#define POLL_MS 100u
#define TIMEOUT_S_DEFAULT 60u
#define CORRUPT_TIMEOUT_MS 60000

static void sleep_ms(uint32_t ms)
{
  struct timespec ts = {.tv_sec = ms / 1000u,
                        .tv_nsec = (long)(ms % 1000u) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* A controller call whose failure lines are not printed (a campaign
 * polls through a controller's restart). */
static int call_quiet(const struct ptctl_opts *o, uint32_t type,
                      const ProtobufCMessage *req, uint32_t reply_type,
                      ProtobufCMessage **reply)
{
  int saved = dup(STDERR_FILENO);
  int null = open("/dev/null", O_WRONLY | O_CLOEXEC);
  if (saved >= 0 && null >= 0) {
    fflush(stderr);
    dup2(null, STDERR_FILENO);
  }
  int code = ptctl_ctl_call(o, type, req, reply_type, reply);
  if (saved >= 0 && null >= 0) {
    fflush(stderr);
    dup2(saved, STDERR_FILENO);
  }
  if (null >= 0)
    close(null);
  if (saved >= 0)
    close(saved);
  return code;
}

/* What a campaign reads of its job. */
struct job_view {
  bool ok;  /* the controller answered and knows the job */
  char state[32];
  uint64_t epoch;
  bool has_committed, has_restore;
  uint64_t committed, restore;
  bool parts_running; /* every part running on an alive node */
  uint32_t nparts, ranks_per_node;
  char node[64][RPC_NODE_ID_MAX + 1]; /* the first 64 parts' nodes */
  uint32_t first_rank[64];
  char reason[256];
  bool coded;             /* the job has coding groups */
  uint32_t tolerates;     /* the fewest node losses a group absorbs now */
  uint32_t m;             /* the code's m (0: no code) */
  /* the first 8 groups' member nodes, in member order (for "group") */
  uint32_t ngroups, gsize[8];
  char gnode[8][16][RPC_NODE_ID_MAX + 1];
};

static bool loses_node(int cls)
{
  return cls == PTCTL_FAULT_NODE || cls == PTCTL_FAULT_GROUP ||
         cls == PTCTL_FAULT_PROTECTING || cls == PTCTL_FAULT_REBUILDING;
}

static void job_read(const struct ptctl_opts *o, const char *job,
                     struct job_view *v)
{
  Pt__JobsQuery q = PT__JOBS_QUERY__INIT;
  ProtobufCMessage *msg = NULL;

  memset(v, 0, sizeof(*v));
  q.job = (char *)job;
  if (call_quiet(o, RPC_JOBS_QUERY, &q.base, RPC_JOBS_REPLY, &msg) !=
      PTCTL_EXIT_OK)
    return;
  const Pt__JobsReply *r = (const Pt__JobsReply *)msg;
  if (r->status == 0 && r->n_jobs == 1) {
    const Pt__JobInfo *j = r->jobs[0];
    v->ok = true;
    snprintf(v->state, sizeof(v->state), "%s", j->state);
    v->epoch = j->epoch;
    v->has_committed = j->has_committed_step;
    v->committed = j->committed_step;
    v->has_restore = j->has_restore_step;
    v->restore = j->restore_step;
    v->ranks_per_node = j->spec->ranks_per_node;
    v->nparts = j->n_parts < 64 ? (uint32_t)j->n_parts : 64;
    v->parts_running = j->n_parts > 0;
    for (size_t i = 0; i < j->n_parts; i++) {
      const Pt__JobPartInfo *p = j->parts[i];
      if (strcmp(p->part_state, "running") != 0 ||
          strcmp(p->node_state, "alive") != 0)
        v->parts_running = false;
      if (i < 64) {
        snprintf(v->node[i], sizeof(v->node[i]), "%s", p->node_id);
        v->first_rank[i] = p->first_rank;
      }
    }
    snprintf(v->reason, sizeof(v->reason), "%s",
             j->reason != NULL ? j->reason : "");
    v->coded = j->n_groups > 0;
    v->tolerates = UINT32_MAX;
    for (size_t g = 0; g < j->n_groups; g++) {
      const Pt__NodeGroup *ng = j->groups[g];
      uint32_t t = ng->has_tolerates ? ng->tolerates : 0;
      if (t < v->tolerates)
        v->tolerates = t;
      v->m = ng->m;
      if (g < 8) {
        v->ngroups = (uint32_t)g + 1;
        v->gsize[g] = ng->n_members < 16 ? (uint32_t)ng->n_members : 16;
        for (uint32_t k = 0; k < v->gsize[g]; k++)
          snprintf(v->gnode[g][k], sizeof(v->gnode[g][k]), "%s",
                   ng->members[k]->node_id);
      }
    }
  }
  protobuf_c_message_free_unpacked(msg, NULL);
}

static bool job_ended(const struct job_view *v)
{
  return strcmp(v->state, "done") == 0 || strcmp(v->state, "failed") == 0 ||
         strcmp(v->state, "stopped") == 0;
}

/* One FAULT. OUT: *pid (0 none), *step (corrupt), msg. Prints nothing
 * unless the controller cannot be reached. Returns the exit status:
 * PTCTL_EXIT_FAILED with msg when refused. */
static int fault_send(const struct ptctl_opts *o, const char *job,
                      const char *kind, const char *node, bool has_rank,
                      uint32_t rank, uint32_t ms, int *pid, bool *has_step,
                      uint64_t *step, char *msg, size_t len)
{
  Pt__Fault f = PT__FAULT__INIT;
  ProtobufCMessage *rep = NULL;

  f.job = (char *)job;
  f.kind = (char *)kind;
  f.node = (char *)node;
  f.has_rank = has_rank;
  f.rank = rank;
  f.has_ms = ms != 0;
  f.ms = ms;
  *pid = 0;
  *has_step = false;
  msg[0] = '\0';
  /* A corruption is answered once it is done, as the job's next restore
   * begins (after the restart's backoff): that long at least. */
  struct ptctl_opts oc = *o;
  if ((strcmp(kind, "corrupt") == 0 || strcmp(kind, "protecting") == 0 ||
       strcmp(kind, "rebuilding") == 0) &&
      oc.timeout_ms < CORRUPT_TIMEOUT_MS)
    oc.timeout_ms = CORRUPT_TIMEOUT_MS;
  int code = ptctl_ctl_call(&oc, RPC_FAULT, &f.base, RPC_FAULT_REPLY, &rep);
  if (code != PTCTL_EXIT_OK) {
    snprintf(msg, len, "no answer from the controller");
    return code;
  }
  const Pt__FaultReply *r = (const Pt__FaultReply *)rep;
  snprintf(msg, len, "%s", r->message != NULL ? r->message : "");
  if (r->status != 0) {
    size_t l = strlen(msg);
    snprintf(msg + l, len - l, "%s(%s: %s)", l > 0 ? " " : "",
             pt_err_name(r->status), pt_strerror(r->status));
    code = PTCTL_EXIT_FAILED;
  } else {
    *pid = r->has_pid ? (int)r->pid : 0;
    *has_step = r->has_step;
    *step = r->step;
  }
  protobuf_c_message_free_unpacked(rep, NULL);
  return code;
}

/* The controller's timing, for "stop": ms past its dead deadline. */
static uint32_t stop_ms_default(const struct ptctl_opts *o)
{
  Pt__NodesQuery q = PT__NODES_QUERY__INIT;
  ProtobufCMessage *msg = NULL;
  uint32_t ms = 0;

  if (call_quiet(o, RPC_NODES_QUERY, &q.base, RPC_NODES_REPLY, &msg) ==
      PTCTL_EXIT_OK) {
    const Pt__NodesReply *r = (const Pt__NodesReply *)msg;
    if (r->has_dead_after_ms)
      ms = r->dead_after_ms + (r->has_heartbeat_ms ? 2 * r->heartbeat_ms : 0) +
           500u;
    protobuf_c_message_free_unpacked(msg, NULL);
  }
  return ms != 0 ? ms : 12000u; /* 10 s, the controller's default, + 2 s */
}

int ptctl_fault_classes(FILE *f)
{
  for (int c = 0; c < PTCTL_FAULT_NCLASS; c++) {
    const struct ptctl_fault_class *k = ptctl_fault_class_get(c);
    fprintf(f, "%-11s %s\n", k->name, k->what);
    if (!k->available)
      fprintf(f, "%-11s not available: %s, not injected\n", "", k->missing);
  }
  return ptctl_ctl_flush(PTCTL_EXIT_OK);
}

/* ---- inject ---- */

static int inject(const struct ptctl_opts *o, int argc, char **argv)
{
  const char *job = NULL, *kind = NULL, *node = NULL;
  uint32_t rank = 0, ms = 0;
  bool has_rank = false;

  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--node") == 0 || strcmp(a, "--rank") == 0 ||
        strcmp(a, "--ms") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ptctl: fault inject: %s needs a value\n", a);
        return PTCTL_EXIT_USAGE;
      }
      const char *v = argv[++i];
      if (a[2] == 'n') {
        node = v;
      } else if (a[2] == 'r') {
        if (ptctl_args_u32("--rank", v, 0, UINT32_MAX - 1, &rank) != PT_OK)
          return PTCTL_EXIT_USAGE;
        has_rank = true;
      } else if (ptctl_args_u32("--ms", v, 1, 600000, &ms) != PT_OK) {
        return PTCTL_EXIT_USAGE;
      }
    } else if (a[0] == '-') {
      fprintf(stderr, "ptctl: fault inject: unknown option '%s'\n", a);
      return PTCTL_EXIT_USAGE;
    } else if (job == NULL) {
      job = a;
    } else if (kind == NULL) {
      kind = a;
    } else {
      fprintf(stderr, "ptctl: fault inject: unexpected argument '%s'\n", a);
      return PTCTL_EXIT_USAGE;
    }
  }
  if (job == NULL || kind == NULL) {
    fprintf(stderr, "ptctl: fault inject needs JOB and CLASS (see ptctl "
                    "fault --help)\n");
    return PTCTL_EXIT_USAGE;
  }
  if (ptctl_args_job("JOB", job) != PT_OK)
    return PTCTL_EXIT_USAGE;
  int c = ptctl_fault_class_parse(kind);
  if (c < 0) {
    fprintf(stderr, "ptctl: fault inject: no fault class '%s' (see ptctl "
                    "fault classes)\n",
            kind);
    return PTCTL_EXIT_USAGE;
  }
  const struct ptctl_fault_class *k = ptctl_fault_class_get(c);
  if (!k->available) {
    fprintf(stderr, "ptctl: fault class '%s' is not available: %s, not "
                    "injected\n",
            k->name, k->missing);
    return PTCTL_EXIT_FAILED;
  }
  if (c != PTCTL_FAULT_CONTROLLER && node == NULL && !has_rank)
    has_rank = true; /* rank 0's node */
  if (c == PTCTL_FAULT_STOP && ms == 0)
    ms = stop_ms_default(o);
  int pid;
  bool has_step;
  uint64_t step = 0;
  char msg[1024];
  int code = fault_send(o, job, k->name, c == PTCTL_FAULT_CONTROLLER ? NULL : node,
                        has_rank && c != PTCTL_FAULT_CONTROLLER, rank, ms,
                        &pid, &has_step, &step, msg, sizeof(msg));
  if (code == PTCTL_EXIT_FAILED && msg[0] != '\0')
    fprintf(stderr, "ptctl: fault %s refused: %s\n", k->name, msg);
  else if (code == PTCTL_EXIT_OK)
    printf("%s\n", msg);
  return ptctl_ctl_flush(code);
}

/* ---- campaign ---- */

struct rec {
  int cls;
  bool resumed;
  uint64_t redone;
  double secs;
};

struct campaign {
  const struct ptctl_opts *o;
  const char *job;
  uint64_t seed;
  uint32_t count, timeout_s, stop_ms, done_s;
  bool set[PTCTL_FAULT_NCLASS];
  const char *restart_node, *restart_ctl;
  bool wait_done;
  struct rec *recs;
  uint32_t nrecs;
  bool job_failed, refused;
  char why[1200];
};

/* CMD under /bin/sh -c, with PT_FAULT_NODE and PT_FAULT_PID; waits at most
 * timeout_s. */
static int run_cmd(const char *cmd, const char *node, int pid,
                   uint32_t timeout_s)
{
  char pidbuf[24];
  snprintf(pidbuf, sizeof(pidbuf), "%d", pid);
  fflush(stdout);
  fflush(stderr);
  pid_t child = fork();
  if (child < 0)
    return -errno;
  if (child == 0) {
    setenv("PT_FAULT_NODE", node != NULL ? node : "", 1);
    setenv("PT_FAULT_PID", pidbuf, 1);
    execl("/bin/sh", "sh", "-c", cmd, (char *)NULL);
    _exit(127);
  }
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_s * 1000u;
  int st;
  for (;;) {
    pid_t w = waitpid(child, &st, WNOHANG);
    if (w == child)
      break;
    if (w < 0 && errno != EINTR)
      return -errno;
    if (rpc_now_ms() >= deadline) {
      kill(child, SIGKILL);
      waitpid(child, &st, 0);
      return -ETIMEDOUT;
    }
    sleep_ms(20);
  }
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? PT_OK : -ECHILD;
}

/* Waits until the job runs with every part running and a committed step.
 * False when it ended or the deadline passed (c->why says). */
static bool wait_ready(struct campaign *c, struct job_view *v, int cls)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)c->timeout_s * 1000u;
  for (;;) {
    job_read(c->o, c->job, v);
    if (v->ok && job_ended(v)) {
      snprintf(c->why, sizeof(c->why), "job '%s' is %s%s%s", c->job,
               v->state, v->reason[0] != '\0' ? ": " : "", v->reason);
      return false;
    }
    /* A node loss waits until every group absorbs one again (the node
     * lost last holds a committed step since): two losses in one group
     * of a code that tolerates one are the job's end, not a test. */
    uint32_t need = cls == PTCTL_FAULT_GROUP ? v->m : loses_node(cls) ? 1 : 0;
    if (v->ok && strcmp(v->state, "running") == 0 && v->parts_running &&
        v->has_committed && (need == 0 || v->tolerates >= need))
      return true;
    if (rpc_now_ms() >= deadline) {
      snprintf(c->why, sizeof(c->why), "job '%s' was not running with a "
               "committed step within %" PRIu32 " s (%s)", c->job,
               c->timeout_s, v->ok ? v->state : "no answer");
      return false;
    }
    sleep_ms(POLL_MS);
  }
}

/* After an injection at t0 (ms) of E0/C0: waits for the job to resume.
 * OUT: r. False on a job failure (c->job_failed, c->why). */
static bool wait_resumed(struct campaign *c, const struct job_view *v0,
                         uint64_t t0, bool has_bad, uint64_t bad,
                         struct rec *r)
{
  const struct ptctl_fault_class *k = ptctl_fault_class_get(r->cls);
  uint64_t deadline = t0 + (uint64_t)c->timeout_s * 1000u;
  struct job_view v;

  for (;;) {
    job_read(c->o, c->job, &v);
    uint64_t now = rpc_now_ms();
    if (v.ok) {
      bool newer = v.epoch > v0->epoch;
      if (newer && !v.has_restore && v0->has_committed) {
        snprintf(c->why, sizeof(c->why), "epoch %" PRIu64 " started fresh "
                 "after step %" PRIu64 " was committed: the job's state is "
                 "lost", v.epoch, v0->committed);
        c->job_failed = true;
        return false;
      }
      if (strcmp(v.state, "failed") == 0 || strcmp(v.state, "stopped") == 0) {
        snprintf(c->why, sizeof(c->why), "job '%s' %s%s%s", c->job, v.state,
                 v.reason[0] != '\0' ? ": " : "", v.reason);
        c->job_failed = true;
        return false;
      }
      uint64_t floor = v0->committed;
      if (newer && v.has_restore && v.restore > floor)
        floor = v.restore;
      bool done = strcmp(v.state, "done") == 0;
      bool past = v.has_committed && v.committed > floor;
      if ((done || past) && (newer || !k->restarts || done)) {
        if (newer && has_bad && v.has_restore && v.restore == bad) {
          /* Committed past the damaged step after restoring it: the
           * damaged bytes were used. */
          snprintf(c->why, sizeof(c->why), "epoch %" PRIu64 " resumed from "
                   "step %" PRIu64 ", whose snapshot on the injected rank is "
                   "damaged", v.epoch, bad);
          c->job_failed = true;
          return false;
        }
        r->resumed = true;
        r->secs = (double)(now - t0) / 1000.0;
        r->redone = newer && v.has_restore && v.restore < v0->committed
                        ? v0->committed - v.restore
                        : 0;
        printf("  resumed in %.2f s: epoch %" PRIu64 " -> %" PRIu64,
               r->secs, v0->epoch, v.epoch);
        if (newer)
          printf(", restored step %" PRIu64 " (committed %" PRIu64
                 " before: %" PRIu64 " redone)",
                 v.restore, v0->committed, r->redone);
        printf(", committed %" PRIu64 "%s\n", v.committed,
               done ? ", job done" : "");
        return true;
      }
    }
    if (now >= deadline) {
      printf("  NOT resumed within %" PRIu32 " s (%s, epoch %" PRIu64
             ", committed %" PRIu64 ")\n",
             c->timeout_s, v.ok ? v.state : "controller not answering",
             v.epoch, v.committed);
      r->resumed = false;
      r->secs = (double)(now - t0) / 1000.0;
      return true;
    }
    sleep_ms(POLL_MS);
  }
}

static bool wait_resumed(struct campaign *c, const struct job_view *v0,
                         uint64_t t0, bool has_bad, uint64_t bad,
                         struct rec *r);

/* "group": m nodes of one coding group lost at once (each a "node"), then
 * each restarted. */
static bool lose_group(struct campaign *c, struct ptctl_fault_picker *pk,
                       uint32_t i, struct job_view *v0, uint64_t t0)
{
  char msg[1024];
  uint32_t g = ptctl_fault_pick_below(pk, v0->ngroups);
  uint32_t n = v0->gsize[g], m = v0->m < n ? v0->m : n;
  uint32_t first = ptctl_fault_pick_below(pk, n);
  int pids[16];

  printf("#%" PRIu32 " group: %" PRIu32 " of the %" PRIu32 " nodes of node "
         "group %" PRIu32 " (code %" PRIu32 "+%" PRIu32 "), epoch %" PRIu64
         ", committed %" PRIu64 "\n", i + 1, m, n, g, n - v0->m, v0->m,
         v0->epoch, v0->committed);
  fflush(stdout);
  /* m members in a row from a seeded start: distinct nodes */
  for (uint32_t k = 0; k < m; k++) {
    const char *node = v0->gnode[g][(first + k) % n];
    bool has_step;
    uint64_t step;
    int code = fault_send(c->o, c->job, "node", node, false, 0, 0, &pids[k],
                          &has_step, &step, msg, sizeof(msg));
    if (code != PTCTL_EXIT_OK) {
      snprintf(c->why, sizeof(c->why), "injection %" PRIu32 " (group) "
               "refused at node '%s': %s", i + 1, node, msg);
      c->refused = true;
      return false;
    }
    printf("  %s\n", msg);
  }
  for (uint32_t k = 0; k < m && c->restart_node != NULL; k++) {
    const char *node = v0->gnode[g][(first + k) % n];
    int rc = run_cmd(c->restart_node, node, pids[k], c->timeout_s);
    if (rc != PT_OK) {
      snprintf(c->why, sizeof(c->why), "the restart command of injection %"
               PRIu32 " (group, node '%s') failed: %s", i + 1, node,
               rc == -ECHILD ? "it exited non-zero" : pt_strerror(rc));
      c->refused = true;
      return false;
    }
    printf("  restarted: %s (node '%s')\n", c->restart_node, node);
  }
  struct rec *r = &c->recs[c->nrecs++];
  r->cls = PTCTL_FAULT_GROUP;
  bool ok = wait_resumed(c, v0, t0, false, 0, r);
  fflush(stdout);
  return ok;
}

static bool one(struct campaign *c, struct ptctl_fault_picker *pk,
                uint32_t i)
{
  struct job_view v0;
  char msg[1024];

  int cls = ptctl_fault_pick_class(pk);
  if (!wait_ready(c, &v0, cls))
    return false;
  const struct ptctl_fault_class *k = ptctl_fault_class_get(cls);
  uint32_t part = ptctl_fault_pick_below(pk, v0.nparts);
  uint32_t rank = v0.first_rank[part] + ptctl_fault_pick_below(pk, v0.ranks_per_node);
  bool is_ctl = cls == PTCTL_FAULT_CONTROLLER;
  bool on_rank = cls == PTCTL_FAULT_TRAINER || cls == PTCTL_FAULT_SMP ||
                 cls == PTCTL_FAULT_CORRUPT;
  const char *node = is_ctl ? NULL : v0.node[part];
  if (cls == PTCTL_FAULT_GROUP)
    return lose_group(c, pk, i, &v0, rpc_now_ms());
  if (is_ctl)
    printf("#%" PRIu32 " %s: epoch %" PRIu64 ", committed %" PRIu64 "\n",
           i + 1, k->name, v0.epoch, v0.committed);
  else if (on_rank)
    printf("#%" PRIu32 " %s: node '%s' rank %" PRIu32 ", epoch %" PRIu64
           ", committed %" PRIu64 "\n",
           i + 1, k->name, node, rank, v0.epoch, v0.committed);
  else
    printf("#%" PRIu32 " %s: node '%s', epoch %" PRIu64 ", committed %"
           PRIu64 "\n",
           i + 1, k->name, node, v0.epoch, v0.committed);
  fflush(stdout);
  int pid;
  bool has_step;
  uint64_t step = 0;
  uint64_t t0 = rpc_now_ms();
  int code = fault_send(c->o, c->job, k->name, node, on_rank, rank,
                        cls == PTCTL_FAULT_STOP ? c->stop_ms : 0, &pid,
                        &has_step, &step, msg, sizeof(msg));
  if (code != PTCTL_EXIT_OK) {
    snprintf(c->why, sizeof(c->why), "injection %" PRIu32 " (%s) refused: "
             "%s", i + 1, k->name, msg);
    c->refused = true;
    return false;
  }
  printf("  %s\n", msg);
  bool node_gone = cls == PTCTL_FAULT_PTD || loses_node(cls);
  const char *cmd = node_gone ? c->restart_node
                    : is_ctl               ? c->restart_ctl
                                           : NULL;
  if (cmd != NULL) {
    int rc = run_cmd(cmd, node, pid, c->timeout_s);
    if (rc != PT_OK) {
      snprintf(c->why, sizeof(c->why), "the restart command of injection %"
               PRIu32 " (%s) failed: %s", i + 1, k->name,
               rc == -ECHILD ? "it exited non-zero" : pt_strerror(rc));
      c->refused = true;
      return false;
    }
    printf("  restarted: %s\n", cmd);
  }
  if (!k->restarts) {
    /* The commits of rounds under way before the process died are no
     * sign that it came back: the baseline is what is committed once it
     * is gone (ptd: its answer comes NODE_FAULT_DELAY_MS, 100 ms, before
     * the signal; the controller dies as it answers) and, when ptctl
     * restarted it, once it is back. A controller left to its supervisor
     * counts from its first answer. */
    struct job_view v1;
    uint64_t until = rpc_now_ms() + (uint64_t)c->timeout_s * 1000u;
    if (cls == PTCTL_FAULT_PTD)
      sleep_ms(400);
    for (;;) {
      job_read(c->o, c->job, &v1);
      if (v1.ok || rpc_now_ms() >= until)
        break;
      sleep_ms(POLL_MS);
    }
    if (v1.ok && v1.epoch == v0.epoch && v1.has_committed &&
        v1.committed > v0.committed)
      v0.committed = v1.committed;
  }
  struct rec *r = &c->recs[c->nrecs++];
  r->cls = cls;
  /* A coded job rebuilds a damaged copy from its group and restores that
   * same step, rightly: only a job without code must fall back to an
   * older one (the final digests check either). */
  bool ok = wait_resumed(c, &v0, t0,
                         cls == PTCTL_FAULT_CORRUPT && has_step && !v0.coded,
                         step, r);
  fflush(stdout);
  return ok;
}

static void summary(const struct campaign *c, FILE *f)
{
  struct ptctl_table t;
  static const char *const head[] = {"CLASS", "INJECTIONS", "RESUMED",
                                     "STEPS REDONE", "RECOVERY P50 S",
                                     "RECOVERY MAX S"};
  double *secs = calloc(c->nrecs + 1, sizeof(*secs));

  ptctl_table_init(&t, 6);
  ptctl_table_row(&t, head);
  for (int cls = 0; cls < PTCTL_FAULT_NCLASS; cls++) {
    const struct ptctl_fault_class *k = ptctl_fault_class_get(cls);
    if (!c->set[cls])
      continue;
    if (!k->available) {
      char why[200];
      snprintf(why, sizeof(why), "not available: %s, not injected",
               k->missing);
      const char *row[] = {k->name, "-", "-", "-", "-", why};
      ptctl_table_row(&t, row);
      continue;
    }
    uint32_t n = 0, resumed = 0;
    uint64_t redone = 0;
    size_t ns = 0;
    for (uint32_t i = 0; i < c->nrecs; i++) {
      const struct rec *r = &c->recs[i];
      if (r->cls != cls)
        continue;
      n++;
      if (r->resumed) {
        resumed++;
        redone += r->redone;
        if (secs != NULL)
          secs[ns++] = r->secs;
      }
    }
    double p50 = 0, max = 0;
    if (secs != NULL)
      ptctl_fault_figures(secs, ns, &p50, &max);
    char cn[16], cr[16], cd[24], c50[24], cmx[24];
    snprintf(cn, sizeof(cn), "%" PRIu32, n);
    snprintf(cr, sizeof(cr), "%" PRIu32, resumed);
    snprintf(cd, sizeof(cd), "%" PRIu64, redone);
    snprintf(c50, sizeof(c50), "%.2f", p50);
    snprintf(cmx, sizeof(cmx), "%.2f", max);
    const char *row[] = {k->name, cn, cr, cd, ns > 0 ? c50 : "-",
                         ns > 0 ? cmx : "-"};
    ptctl_table_row(&t, row);
  }
  ptctl_table_print(&t, f);
  free(secs);
}

static int campaign_args(struct campaign *c, int argc, char **argv)
{
  const char *classes = NULL;
  bool has_seed = false, has_count = false;
  char err[256];

  c->timeout_s = TIMEOUT_S_DEFAULT;
  for (int i = 2; i < argc; i++) {
    const char *a = argv[i];
    static const char *const valued[] = {
        "--seed", "--count", "--classes", "--timeout-s", "--stop-ms",
        "--restart-node", "--restart-controller", "--wait-done"};
    size_t w;
    for (w = 0; w < sizeof(valued) / sizeof(valued[0]); w++)
      if (strcmp(a, valued[w]) == 0)
        break;
    if (w < sizeof(valued) / sizeof(valued[0])) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ptctl: fault campaign: %s needs a value\n", a);
        return PTCTL_EXIT_USAGE;
      }
      const char *v = argv[++i];
      int rc = PT_OK;
      switch (w) {
      case 0:
        rc = ptctl_args_u64(a, v, 0, UINT64_MAX, &c->seed);
        has_seed = true;
        break;
      case 1:
        rc = ptctl_args_u32(a, v, 1, 100000, &c->count);
        has_count = true;
        break;
      case 2:
        classes = v;
        break;
      case 3:
        rc = ptctl_args_u32(a, v, 1, 3600, &c->timeout_s);
        break;
      case 4:
        rc = ptctl_args_u32(a, v, 1, 600000, &c->stop_ms);
        break;
      case 5:
        c->restart_node = v;
        break;
      case 6:
        c->restart_ctl = v;
        break;
      default:
        rc = ptctl_args_u32(a, v, 1, 86400, &c->done_s);
        c->wait_done = true;
        break;
      }
      if (rc != PT_OK)
        return PTCTL_EXIT_USAGE;
    } else if (a[0] == '-') {
      fprintf(stderr, "ptctl: fault campaign: unknown option '%s'\n", a);
      return PTCTL_EXIT_USAGE;
    } else if (c->job == NULL) {
      c->job = a;
    } else {
      fprintf(stderr, "ptctl: fault campaign: unexpected argument '%s'\n", a);
      return PTCTL_EXIT_USAGE;
    }
  }
  if (c->job == NULL || !has_seed || !has_count) {
    fprintf(stderr, "ptctl: fault campaign needs JOB, --seed S and --count "
                    "N (see ptctl fault --help)\n");
    return PTCTL_EXIT_USAGE;
  }
  if (ptctl_args_job("JOB", c->job) != PT_OK)
    return PTCTL_EXIT_USAGE;
  if (ptctl_fault_classes_parse(classes, c->set, err, sizeof(err)) != PT_OK) {
    fprintf(stderr, "ptctl: fault campaign: %s\n", err);
    return PTCTL_EXIT_USAGE;
  }
  return PTCTL_EXIT_OK;
}

static int campaign(const struct ptctl_opts *o, int argc, char **argv)
{
  struct campaign c = {.o = o};
  struct ptctl_fault_picker pk;

  int code = campaign_args(&c, argc, argv);
  if (code != PTCTL_EXIT_OK)
    return code;
  /* The controller answers, and knows the job, before anything. */
  struct job_view v;
  job_read(o, c.job, &v);
  if (v.ok && !v.coded)
    for (int cls = 0; cls < PTCTL_FAULT_NCLASS; cls++)
      if (c.set[cls] && loses_node(cls) &&
          ptctl_fault_class_get(cls)->available) {
        printf("%s: job '%s' has no erasure code (a lost node's state "
               "cannot be rebuilt), not injected\n",
               ptctl_fault_class_get(cls)->name, c.job);
        c.set[cls] = false;
      }
  ptctl_fault_pick_init(&pk, c.seed, c.set);
  for (int cls = 0; cls < PTCTL_FAULT_NCLASS; cls++) {
    const struct ptctl_fault_class *k = ptctl_fault_class_get(cls);
    if (c.set[cls] && !k->available)
      printf("%s: %s, not injected\n", k->name, k->missing);
  }
  if (pk.n == 0) {
    fprintf(stderr, "ptctl: fault campaign: no class this build can "
                    "inject among --classes\n");
    return PTCTL_EXIT_FAILED;
  }
  if (!v.ok) {
    Pt__JobsQuery q = PT__JOBS_QUERY__INIT;
    ProtobufCMessage *msg = NULL;
    q.job = (char *)c.job;
    code = ptctl_ctl_call(o, RPC_JOBS_QUERY, &q.base, RPC_JOBS_REPLY, &msg);
    if (code == PTCTL_EXIT_OK) {
      const Pt__JobsReply *r = (const Pt__JobsReply *)msg;
      code = ptctl_ctl_refused(o, "has no such job", r->status, r->message);
      protobuf_c_message_free_unpacked(msg, NULL);
    }
    return code;
  }
  if (c.stop_ms == 0)
    c.stop_ms = stop_ms_default(o);
  c.recs = calloc(c.count, sizeof(*c.recs));
  if (c.recs == NULL) {
    fputs("ptctl: out of memory\n", stderr);
    return PTCTL_EXIT_FAILED;
  }
  printf("campaign on job '%s': seed %" PRIu64 ", %" PRIu32 " injections, "
         "deadline %" PRIu32 " s each, stop %" PRIu32 " ms\n",
         c.job, c.seed, c.count, c.timeout_s, c.stop_ms);
  fflush(stdout);
  uint32_t i;
  for (i = 0; i < c.count; i++)
    if (!one(&c, &pk, i))
      break;
  bool ended_early = i < c.count && !c.job_failed && !c.refused;
  if (ended_early) {
    /* wait_ready: the job ended, or never came back to running. */
    job_read(o, c.job, &v);
    if (v.ok && strcmp(v.state, "done") == 0)
      printf("job '%s' completed after %" PRIu32 " injections\n", c.job, i);
    else
      c.job_failed = true;
  }
  if (c.wait_done && !c.job_failed && !c.refused) {
    uint64_t deadline = rpc_now_ms() + (uint64_t)c.done_s * 1000u;
    for (;;) {
      job_read(o, c.job, &v);
      if (v.ok && job_ended(&v))
        break;
      if (rpc_now_ms() >= deadline) {
        snprintf(c.why, sizeof(c.why), "job '%s' did not complete within %"
                 PRIu32 " s of the last injection", c.job, c.done_s);
        c.job_failed = true;
        break;
      }
      sleep_ms(POLL_MS);
    }
    if (!c.job_failed && strcmp(v.state, "done") != 0) {
      snprintf(c.why, sizeof(c.why), "job '%s' %s%s%s", c.job, v.state,
               v.reason[0] != '\0' ? ": " : "", v.reason);
      c.job_failed = true;
    } else if (!c.job_failed) {
      printf("job '%s' completed (epoch %" PRIu64 ", committed %" PRIu64
             ")\n", c.job, v.epoch, v.committed);
    }
  }
  printf("\n");
  summary(&c, stdout);
  uint32_t lost = 0;
  for (uint32_t r = 0; r < c.nrecs; r++)
    lost += !c.recs[r].resumed;
  code = PTCTL_EXIT_OK;
  if (c.job_failed || c.refused) {
    printf("FAILED: %s\n", c.why);
    code = PTCTL_EXIT_FAILED;
  }
  if (lost > 0) {
    printf("FAILED: %" PRIu32 " of %" PRIu32 " injections did not resume "
           "within %" PRIu32 " s\n", lost, c.nrecs, c.timeout_s);
    code = PTCTL_EXIT_FAILED;
  }
  if (code == PTCTL_EXIT_OK)
    printf("ok: %" PRIu32 " injections, every one resumed\n", c.nrecs);
  free(c.recs);
  return ptctl_ctl_flush(code);
}

int ptctl_fault_main(const struct ptctl_opts *o, int argc, char **argv)
{
  const char *sub = argc > 1 ? argv[1] : NULL;

  if (sub == NULL) {
    fprintf(stderr, "ptctl: fault needs inject, campaign or classes (see "
                    "ptctl fault --help)\n");
    return PTCTL_EXIT_USAGE;
  }
  if (strcmp(sub, "classes") == 0)
    return ptctl_fault_classes(stdout);
  if (strcmp(sub, "inject") == 0)
    return inject(o, argc, argv);
  if (strcmp(sub, "campaign") == 0)
    return campaign(o, argc, argv);
  fprintf(stderr, "ptctl: fault: no subcommand '%s' (inject, campaign, "
                  "classes)\n",
          sub);
  return PTCTL_EXIT_USAGE;
}
