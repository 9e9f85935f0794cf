/*
 * ptctl_fault_campaign.c — `ptctl fault campaign` (ptctl_fault.c has the
 * rest of `ptctl fault` and the top comment): seeded injections one after
 * the other, each once the job is ready for it, each checked to resume;
 * the summary table.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#include "client/ptctl.h"
#include "client/ptctl_fault_int.h"
#include "pt.h"
#include "rpc/rpc.h"

#define POLL_MS 100u
#define TIMEOUT_S_DEFAULT 60u
/* A parity fault's answer: the node's armed wait (60 s) and some. */
#define ANSWER_WAIT_MS 75000u

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
    ptctl_fault_sleep_ms(20);
  }
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? PT_OK : -ECHILD;
}

/* Node id's restart command (when given), after pid died. */
static bool restart(struct campaign *c, uint32_t i, const char *name,
                    const char *node, int pid)
{
  if (c->restart_node == NULL)
    return true;
  int rc = run_cmd(c->restart_node, node, pid, c->timeout_s);
  if (rc != PT_OK) {
    snprintf(c->why, sizeof(c->why), "the restart command of injection %"
             PRIu32 " (%s, node '%s') failed: %s", i + 1, name, node,
             rc == -ECHILD ? "it exited non-zero" : pt_strerror(rc));
    c->refused = true;
    return false;
  }
  printf("  restarted: %s (node '%s')\n", c->restart_node, node);
  return true;
}

/* Waits until the job runs with every part running and a committed step.
 * False when it ended or the deadline passed (c->why says). */
static bool wait_ready(struct campaign *c, struct job_view *v, int cls)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)c->timeout_s * 1000u;
  for (;;) {
    ptctl_fault_job_read(c->o, c->job, v);
    if (v->ok && ptctl_fault_job_ended(v)) {
      snprintf(c->why, sizeof(c->why), "job '%s' is %s%s%s", c->job,
               v->state, v->reason[0] != '\0' ? ": " : "", v->reason);
      return false;
    }
    /* A node loss waits until every group absorbs one again (the node
     * lost last holds a committed step since): two losses in one group
     * of a code that tolerates one are the job's end, not a test. */
    /* "group+1" waits for every group whole and a complete step on disk:
     * then m + 1 lost is exactly one more than the code rebuilds. */
    uint32_t need = cls == PTCTL_FAULT_GROUP || cls == PTCTL_FAULT_BEYOND
                        ? v->m
                    : ptctl_fault_loses_node(cls) ? 1 : 0;
    /* "parity" at m = 1 is restored from disk: a complete step there. */
    bool disk = cls == PTCTL_FAULT_BEYOND ||
                (cls == PTCTL_FAULT_PARITY && v->m < 2);
    if (v->ok && strcmp(v->state, "running") == 0 && v->parts_running &&
        v->has_committed && (need == 0 || v->tolerates >= need) &&
        (!disk || v->has_disk))
      return true;
    if (rpc_now_ms() >= deadline) {
      snprintf(c->why, sizeof(c->why), "job '%s' was not running with a "
               "committed step within %" PRIu32 " s (%s)", c->job,
               c->timeout_s, v->ok ? v->state : "no answer");
      return false;
    }
    ptctl_fault_sleep_ms(POLL_MS);
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
    ptctl_fault_job_read(c->o, c->job, &v);
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
        if (r->cls == PTCTL_FAULT_BEYOND && (!newer || !v.restore_disk)) {
          /* m + 1 of a group lost: nothing in memory can hold the job */
          snprintf(c->why, sizeof(c->why), "epoch %" PRIu64 " resumed after "
                   "m + 1 nodes of a group were lost, but not from disk",
                   v.epoch);
          c->job_failed = true;
          return false;
        }
        if (r->cls == PTCTL_FAULT_PARITY && v0->m < 2 &&
            (!newer || !v.restore_disk)) {
          /* k + 1: the lost member cannot be rebuilt without the row */
          snprintf(c->why, sizeof(c->why), "epoch %" PRIu64 " resumed from "
                   "memory after a parity row was damaged and the member "
                   "whose rebuild reads it was lost: at code k+1 that "
                   "rebuild cannot have been right", v.epoch);
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
    ptctl_fault_sleep_ms(POLL_MS);
  }
}


/* "group": m nodes of one coding group lost at once (each a "node"), then
 * each restarted; "group+1": m + 1 of them, restored from disk. */
static bool lose_group(struct campaign *c, struct ptctl_fault_picker *pk,
                       uint32_t i, struct job_view *v0, uint64_t t0, int cls)
{
  char msg[1024];
  const char *name = ptctl_fault_class_get(cls)->name;
  uint32_t g = ptctl_fault_pick_below(pk, v0->ngroups);
  uint32_t n = v0->gsize[g];
  uint32_t m = v0->m + (cls == PTCTL_FAULT_BEYOND);
  if (m > n)
    m = n;
  uint32_t first = ptctl_fault_pick_below(pk, n);
  int pids[16];

  printf("#%" PRIu32 " %s: %" PRIu32 " of the %" PRIu32 " nodes of node "
         "group %" PRIu32 " (code %" PRIu32 "+%" PRIu32 "), epoch %" PRIu64
         ", committed %" PRIu64 "", i + 1, name, m, n, g, n - v0->m, v0->m,
         v0->epoch, v0->committed);
  if (cls == PTCTL_FAULT_BEYOND)
    printf(", step %" PRIu64 " complete on disk", v0->disk_step);
  printf("\n");
  fflush(stdout);
  /* m members in a row from a seeded start: distinct nodes */
  for (uint32_t k = 0; k < m; k++) {
    const char *node = v0->gnode[g][(first + k) % n];
    bool has_step;
    uint64_t step;
    int code = ptctl_fault_send(c->o, c->job, "node", node, false, 0, 0, &pids[k],
                          &has_step, &step, msg, sizeof(msg));
    if (code != PTCTL_EXIT_OK) {
      snprintf(c->why, sizeof(c->why), "injection %" PRIu32 " (%s) "
               "refused at node '%s': %s", i + 1, name, node, msg);
      c->refused = true;
      return false;
    }
    printf("  %s\n", msg);
  }
  for (uint32_t k = 0; k < m; k++)
    if (!restart(c, i, name, v0->gnode[g][(first + k) % n], pids[k]))
      return false;
  struct rec *r = &c->recs[c->nrecs++];
  r->cls = cls;
  bool ok = wait_resumed(c, v0, t0, false, 0, r);
  fflush(stdout);
  return ok;
}

/* A FAULT's answer, from a child (send_async). */
struct answer {
  int code, pid;
  bool has_step;
  uint64_t step;
  char msg[1024];
};

/* ptctl_fault_send from a child, so that the campaign goes on while the
 * node holds the answer back. OUT: *fd, where the child writes its struct
 * answer. Returns the child's pid, or -errno. */
static pid_t send_async(struct campaign *c, const char *kind,
                        const char *node, bool has_rank, uint32_t rank,
                        int *fd)
{
  int p[2];
  if (pipe(p) != 0)
    return -errno;
  fflush(stdout);
  fflush(stderr);
  pid_t ch = fork();
  if (ch < 0) {
    int err = -errno;
    close(p[0]);
    close(p[1]);
    return err;
  }
  if (ch == 0) {
    struct answer a;
    memset(&a, 0, sizeof(a));
    close(p[0]);
    a.code = ptctl_fault_send(c->o, c->job, kind, node, has_rank, rank, 0,
                              &a.pid, &a.has_step, &a.step, a.msg,
                              sizeof(a.msg));
    const uint8_t *b = (const uint8_t *)&a;
    size_t done = 0;
    while (done < sizeof(a)) {
      ssize_t n = write(p[1], b + done, sizeof(a) - done);
      if (n < 0 && errno == EINTR)
        continue;
      if (n <= 0)
        break;
      done += (size_t)n;
    }
    _exit(done == sizeof(a) ? 0 : 1);
  }
  close(p[1]);
  *fd = p[0];
  return ch;
}

/* send_async's answer, within ms. False: none (the child killed). */
static bool answer_wait(pid_t ch, int fd, uint32_t ms, struct answer *a)
{
  uint8_t *b = (uint8_t *)a;
  size_t got = 0;
  uint64_t deadline = rpc_now_ms() + ms;
  while (got < sizeof(*a)) {
    uint64_t now = rpc_now_ms();
    if (now >= deadline)
      break;
    struct pollfd pf = {.fd = fd, .events = POLLIN};
    int r = poll(&pf, 1, (int)(deadline - now));
    if (r < 0 && errno == EINTR)
      continue;
    if (r <= 0)
      break;
    ssize_t n = read(fd, b + got, sizeof(*a) - got);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    got += (size_t)n;
  }
  close(fd);
  if (got < sizeof(*a))
    kill(ch, SIGKILL);
  int st;
  while (waitpid(ch, &st, 0) < 0 && errno == EINTR)
    ;
  a->msg[sizeof(a->msg) - 1] = '\0';
  return got == sizeof(*a);
}

/* "parity": one member's parity row of the restore step damaged as the
 * next epoch is assigned (the node answers then, so the request waits in a
 * child), then the member whose rebuild reads that row lost and
 * restarted: member x keeps parity row 0 of stripe (x - k) mod G, whose
 * position 0 is member (x - k) mod G's first chunk (ec/rs.h). */
static bool damage_parity(struct campaign *c, struct ptctl_fault_picker *pk,
                          uint32_t i, struct job_view *v0, uint64_t t0)
{
  const char *name = ptctl_fault_class_get(PTCTL_FAULT_PARITY)->name;
  char msg[1024];
  uint32_t g = ptctl_fault_pick_below(pk, v0->ngroups);
  uint32_t n = v0->gsize[g], k = n - v0->m;
  uint32_t x = ptctl_fault_pick_below(pk, n), y = (x + n - k) % n;
  const char *xn = v0->gnode[g][x], *yn = v0->gnode[g][y];
  bool has_rank = false;
  uint32_t rank = 0;
  for (uint32_t p = 0; p < v0->nparts && p < 64; p++)
    if (strcmp(v0->node[p], xn) == 0) {
      has_rank = true;
      rank = v0->first_rank[p] + ptctl_fault_pick_below(pk, v0->ranks_per_node);
      break;
    }
  printf("#%" PRIu32 " %s: node '%s' (member %" PRIu32 " of node group %"
         PRIu32 ", code %" PRIu32 "+%" PRIu32 ")", i + 1, name, xn, x, g, k,
         v0->m);
  if (has_rank)
    printf(" rank %" PRIu32, rank);
  printf(", then node '%s' (member %" PRIu32 ") lost, epoch %" PRIu64
         ", committed %" PRIu64 "\n", yn, y, v0->epoch, v0->committed);
  fflush(stdout);
  int fd = -1;
  pid_t ch = send_async(c, name, xn, has_rank, rank, &fd);
  if (ch < 0) {
    snprintf(c->why, sizeof(c->why), "injection %" PRIu32 " (%s): cannot "
             "fork: %s", i + 1, name, pt_strerror((int)ch));
    c->refused = true;
    return false;
  }
  int pid;
  bool has_step;
  uint64_t step;
  int code = ptctl_fault_send(c->o, c->job, "node", yn, false, 0, 0, &pid,
                              &has_step, &step, msg, sizeof(msg));
  bool lost = code == PTCTL_EXIT_OK;
  if (lost)
    printf("  %s\n", msg);
  bool back = lost && restart(c, i, name, yn, pid); /* (else c->why says) */
  /* The node answers only once the next epoch comes: without y's loss
   * nothing is waited for. */
  struct answer a;
  bool answered = answer_wait(ch, fd, back ? ANSWER_WAIT_MS : 0, &a);
  if (lost && !back)
    return false;
  if (!lost || !answered || a.code != PTCTL_EXIT_OK) {
    snprintf(c->why, sizeof(c->why), "injection %" PRIu32 " (%s) refused: "
             "%s", i + 1, name,
             !lost      ? msg
             : answered ? a.msg
                        : "no answer from the node");
    c->refused = true;
    return false;
  }
  printf("  %s\n", a.msg);
  struct rec *r = &c->recs[c->nrecs++];
  r->cls = PTCTL_FAULT_PARITY;
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
  if (cls == PTCTL_FAULT_GROUP || cls == PTCTL_FAULT_BEYOND)
    return lose_group(c, pk, i, &v0, rpc_now_ms(), cls);
  if (cls == PTCTL_FAULT_PARITY)
    return damage_parity(c, pk, i, &v0, rpc_now_ms());
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
  int code = ptctl_fault_send(c->o, c->job, k->name, node, on_rank, rank,
                        cls == PTCTL_FAULT_STOP ? c->stop_ms : 0, &pid,
                        &has_step, &step, msg, sizeof(msg));
  if (code != PTCTL_EXIT_OK) {
    snprintf(c->why, sizeof(c->why), "injection %" PRIu32 " (%s) refused: "
             "%s", i + 1, k->name, msg);
    c->refused = true;
    return false;
  }
  printf("  %s\n", msg);
  bool node_gone = cls == PTCTL_FAULT_PTD || ptctl_fault_loses_node(cls);
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
      ptctl_fault_sleep_ms(400);
    for (;;) {
      ptctl_fault_job_read(c->o, c->job, &v1);
      if (v1.ok || rpc_now_ms() >= until)
        break;
      ptctl_fault_sleep_ms(POLL_MS);
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

int ptctl_fault_campaign(const struct ptctl_opts *o, int argc, char **argv)
{
  struct campaign c = {.o = o};
  struct ptctl_fault_picker pk;

  int code = campaign_args(&c, argc, argv);
  if (code != PTCTL_EXIT_OK)
    return code;
  /* The controller answers, and knows the job, before anything. */
  struct job_view v;
  ptctl_fault_job_read(o, c.job, &v);
  if (v.ok && !v.coded)
    for (int cls = 0; cls < PTCTL_FAULT_NCLASS; cls++)
      if (c.set[cls] && ptctl_fault_loses_node(cls)) {
        printf("%s: job '%s' has no erasure code (a lost node's state "
               "cannot be rebuilt), not injected\n",
               ptctl_fault_class_get(cls)->name, c.job);
        c.set[cls] = false;
      }
  if (v.ok && !v.persist && c.set[PTCTL_FAULT_BEYOND]) {
    printf("%s: job '%s' has no persist dir (m + 1 lost nodes would end "
           "it), not injected\n", ptctl_fault_class_get(PTCTL_FAULT_BEYOND)->name,
           c.job);
    c.set[PTCTL_FAULT_BEYOND] = false;
  }
  if (v.ok && v.coded && v.m < 2 && !v.persist && c.set[PTCTL_FAULT_PARITY]) {
    printf("%s: job '%s' has code k+1 and no persist dir (a damaged parity "
           "row and a lost member would end it), not injected\n",
           ptctl_fault_class_get(PTCTL_FAULT_PARITY)->name, c.job);
    c.set[PTCTL_FAULT_PARITY] = false;
  }
  ptctl_fault_pick_init(&pk, c.seed, c.set);
  if (pk.n == 0) {
    fprintf(stderr, "ptctl: fault campaign: no class among --classes can "
                    "be injected into job '%s'\n", c.job);
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
    c.stop_ms = ptctl_fault_stop_ms_default(o);
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
    ptctl_fault_job_read(o, c.job, &v);
    if (v.ok && strcmp(v.state, "done") == 0)
      printf("job '%s' completed after %" PRIu32 " injections\n", c.job, i);
    else
      c.job_failed = true;
  }
  if (c.wait_done && !c.job_failed && !c.refused) {
    uint64_t deadline = rpc_now_ms() + (uint64_t)c.done_s * 1000u;
    for (;;) {
      ptctl_fault_job_read(o, c.job, &v);
      if (v.ok && ptctl_fault_job_ended(&v))
        break;
      if (rpc_now_ms() >= deadline) {
        snprintf(c.why, sizeof(c.why), "job '%s' did not complete within %"
                 PRIu32 " s of the last injection", c.job, c.done_s);
        c.job_failed = true;
        break;
      }
      ptctl_fault_sleep_ms(POLL_MS);
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

