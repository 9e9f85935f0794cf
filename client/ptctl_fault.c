/*
 * ptctl_fault.c — `ptctl fault`: fault injection against a running job, for
 * drills and tests (README "Fault injection").
 *
 *   ptctl fault classes                 what each class does
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
 *   - parity, at m = 1: memory cannot rebuild the lost member without the
 *     damaged row, so the epoch that resumed must have restored from disk;
 *     at m >= 2 it may have rebuilt without that row;
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
#include "client/ptctl_fault_int.h"
#include "pt.h"
#include "rpc/rpc.h"

#define CORRUPT_TIMEOUT_MS 70000 /* past a node's armed wait, 60 s */

void ptctl_fault_sleep_ms(uint32_t ms)
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

bool ptctl_fault_loses_node(int cls)
{
  return cls == PTCTL_FAULT_NODE || cls == PTCTL_FAULT_GROUP ||
         cls == PTCTL_FAULT_PROTECTING || cls == PTCTL_FAULT_REBUILDING ||
         cls == PTCTL_FAULT_BEYOND || cls == PTCTL_FAULT_PARITY;
}

void ptctl_fault_job_read(const struct ptctl_opts *o, const char *job,
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
    v->persist = j->spec->persist_dir != NULL && j->spec->persist_dir[0];
    v->has_disk = j->has_disk_step;
    v->disk_step = j->disk_step;
    v->restore_disk = j->has_restore_from_disk && j->restore_from_disk;
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

bool ptctl_fault_job_ended(const struct job_view *v)
{
  return strcmp(v->state, "done") == 0 || strcmp(v->state, "failed") == 0 ||
         strcmp(v->state, "stopped") == 0;
}

/* One FAULT. OUT: *pid (0 none), *step (corrupt), msg. Prints nothing
 * unless the controller cannot be reached. Returns the exit status:
 * PTCTL_EXIT_FAILED with msg when refused. */
int ptctl_fault_send(const struct ptctl_opts *o, const char *job,
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
  if ((strcmp(kind, "corrupt") == 0 || strcmp(kind, "parity") == 0 ||
       strcmp(kind, "protecting") == 0 ||
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
uint32_t ptctl_fault_stop_ms_default(const struct ptctl_opts *o)
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
  if (c == PTCTL_FAULT_GROUP || c == PTCTL_FAULT_BEYOND) {
    fprintf(stderr, "ptctl: fault inject: '%s' loses several nodes of a "
                    "group: a campaign's class (ptctl fault campaign JOB "
                    "--classes %s), or inject 'node' on each\n",
            k->name, k->name);
    return PTCTL_EXIT_USAGE;
  }
  if (c != PTCTL_FAULT_CONTROLLER && node == NULL && !has_rank)
    has_rank = true; /* rank 0's node */
  if (c == PTCTL_FAULT_STOP && ms == 0)
    ms = ptctl_fault_stop_ms_default(o);
  int pid;
  bool has_step;
  uint64_t step = 0;
  char msg[1024];
  int code = ptctl_fault_send(o, job, k->name, c == PTCTL_FAULT_CONTROLLER ? NULL : node,
                        has_rank && c != PTCTL_FAULT_CONTROLLER, rank, ms,
                        &pid, &has_step, &step, msg, sizeof(msg));
  if (code == PTCTL_EXIT_FAILED && msg[0] != '\0')
    fprintf(stderr, "ptctl: fault %s refused: %s\n", k->name, msg);
  else if (code == PTCTL_EXIT_OK)
    printf("%s\n", msg);
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
    return ptctl_fault_campaign(o, argc, argv);
  fprintf(stderr, "ptctl: fault: no subcommand '%s' (inject, campaign, "
                  "classes)\n",
          sub);
  return PTCTL_EXIT_USAGE;
}
