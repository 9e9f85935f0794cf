/*
 * node.c — `ptd node`, standalone mode: one per machine, supervising one SMP
 * and one trainer per local rank (see daemon/node.h for the file map and
 * node_job.c for the job's phases).
 *
 * This file sets the node up and takes it down: arguments, the state
 * directory and its lock (one node per directory: a second one would steal
 * the sockets), re-adoption from node.state, and writing node.state. How
 * the node is controlled from outside (ptctl, signals, systemd) lives in
 * node_ctl.c.
 *
 * Exit status: 0 job completed, 1 job failed, 2 usage or configuration
 * error, 3 stopped by request.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "daemon/log.h"
#include "daemon/node.h"
#include "daemon/roles.h"

uint64_t node_unix_ms(void)
{
  struct timespec ts;

  clock_gettime(CLOCK_REALTIME, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}

/* ---- node.state ---- */

static void fill_proc(struct node_saved_proc *p, const struct node_child *c,
                      uint32_t restarts)
{
  p->restarts = restarts;
  if (c != NULL && !c->exited) {
    p->pid = c->pid;
    p->start_ticks = c->start_ticks;
  }
}

void node_save(struct node *n)
{
  static bool warned;
  struct node_saved s;
  int rc;

  n->state_dirty = false;
  memset(&s, 0, sizeof(s));
  snprintf(s.job, sizeof(s.job), "%s", n->cfg.job);
  s.ranks = n->cfg.ranks;
  s.node_pid = (int)getpid();
  s.has_committed = n->has_committed;
  s.committed = n->committed;
  s.committed_unix_ms = n->committed_unix_ms;
  s.restarts = n->restarts;
  s.commits = n->commits;
  s.restores = n->restores;
  s.cmd = n->cfg.cmd;
  s.ncmd = (uint32_t)n->cfg.ncmd;
  s.rank = calloc(n->cfg.ranks, sizeof(*s.rank));
  if (s.rank == NULL) {
    rc = -ENOMEM;
    goto out_warn;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    const struct node_rank *r = &n->ranks[i];
    fill_proc(&s.rank[i].smp, r->smp, r->smp_restarts);
    fill_proc(&s.rank[i].trainer, r->trainer, r->restarts);
  }
  rc = node_state_write(n->state_path, &s);
  free(s.rank);
  if (rc == PT_OK) {
    warned = false;
    return;
  }
out_warn:
  if (!warned)
    log_warn("cannot write '%s': %s (a restarted node could not re-adopt)",
             n->state_path, pt_strerror(rc));
  warned = true;
}

/* Any process recorded in s still alive as the same process? */
static int live_pid(const struct node_saved *s)
{
  for (uint32_t i = 0; i < s->ranks; i++) {
    const struct node_saved_proc *p[2] = {&s->rank[i].smp, &s->rank[i].trainer};
    for (int k = 0; k < 2; k++) {
      uint64_t t;
      if (p[k]->pid > 0 && node_proc_start_ticks(p[k]->pid, &t) == PT_OK &&
          t == p[k]->start_ticks)
        return p[k]->pid;
    }
  }
  return 0;
}

static bool same_cmd(const struct node *n, const struct node_saved *s)
{
  if (s->ncmd != (uint32_t)n->cfg.ncmd)
    return false;
  for (uint32_t i = 0; i < s->ncmd; i++)
    if (strcmp(s->cmd[i], n->cfg.cmd[i]) != 0)
      return false;
  return true;
}

/* Re-adopts what a previous node of the same job left running. -EEXIST when
 * node.state belongs to another job whose processes still run. */
static int adopt_from_state(struct node *n)
{
  struct node_saved s;
  char err[200] = "";
  int rc, pid;
  bool any = false;

  rc = node_state_read(n->state_path, &s, err, sizeof(err));
  if (rc == -ENOENT)
    return PT_OK;
  if (rc != PT_OK) {
    log_warn("ignoring '%s': %s", n->state_path,
             err[0] != '\0' ? err : pt_strerror(rc));
    return PT_OK;
  }
  if (strcmp(s.job, n->cfg.job) != 0 || s.ranks != n->cfg.ranks) {
    pid = live_pid(&s);
    if (pid != 0) {
      log_error("'%s' belongs to job '%s' with %" PRIu32
                " ranks, whose process %d still runs: stop it or use "
                "another --state-dir",
                n->state_path, s.job, s.ranks, pid);
      node_saved_release(&s);
      return -EEXIST;
    }
    log_notice("ignoring '%s' of job '%s': its processes are gone",
               n->state_path, s.job);
    node_saved_release(&s);
    return PT_OK;
  }
  if (!same_cmd(n, &s))
    log_notice("the trainer command differs from the one in '%s'; "
               "restarts use the new one",
               n->state_path);
  n->restarts = s.restarts;
  n->commits = s.commits;
  n->restores = s.restores;
  n->has_committed = s.has_committed;
  n->committed = s.committed;
  n->committed_unix_ms = s.committed_unix_ms;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    const struct node_saved_rank *sr = &s.rank[i];
    struct node_child *c;

    r->smp_restarts = sr->smp.restarts;
    r->restarts = sr->trainer.restarts;
    r->starts = sr->trainer.pid != 0 || r->restarts > 0 ? r->restarts + 1 : 0;
    if (sr->smp.pid > 0 &&
        node_child_adopt(n, r, NODE_ROLE_SMP, sr->smp.pid,
                         sr->smp.start_ticks, &c) == PT_OK) {
      r->smp = c;
      r->smp_adopted = true;
      any = true;
      log_info("adopted smp rank %" PRIu32 " (pid %d)", r->rank, c->pid);
    }
    if (sr->trainer.pid > 0 &&
        node_child_adopt(n, r, NODE_ROLE_TRAINER, sr->trainer.pid,
                         sr->trainer.start_ticks, &c) == PT_OK) {
      r->trainer = c;
      r->tstate = NODE_TR_RUNNING;
      any = true;
      log_info("adopted trainer rank %" PRIu32 " (pid %d)", r->rank, c->pid);
    }
  }
  n->adopting = any;
  if (!any)
    log_info("'%s': no process of the previous node survived",
             n->state_path);
  node_saved_release(&s);
  return PT_OK;
}

/* ---- set-up and tear-down ---- */

static int mkdir_p(const char *path)
{
  char buf[NODE_PATH_MAX];

  snprintf(buf, sizeof(buf), "%s", path);
  for (char *p = buf + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, 0755) != 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  if (mkdir(buf, 0700) != 0 && errno != EEXIST)
    return -errno;
  struct stat st;
  if (stat(buf, &st) != 0)
    return -errno;
  return S_ISDIR(st.st_mode) ? PT_OK : -ENOTDIR;
}

static void close_handle(uv_handle_t *h)
{
  if (h->loop != NULL && !uv_is_closing(h))
    uv_close(h, NULL);
}

void node_shutdown(struct node *n)
{
  node_ctl_close(n);
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    node_smp_disconnect(r);
    /* Children the node no longer waits for (they would not die). */
    if (r->smp != NULL) {
      node_child_abandon(r->smp);
      r->smp = NULL;
    }
    if (r->trainer != NULL) {
      node_child_abandon(r->trainer);
      r->trainer = NULL;
    }
  }
  close_handle((uv_handle_t *)&n->timer);
  close_handle((uv_handle_t *)&n->io_prepare);
  close_handle((uv_handle_t *)&n->io_check);
  close_handle((uv_handle_t *)&n->watchdog);
  close_handle((uv_handle_t *)&n->sigterm);
  close_handle((uv_handle_t *)&n->sigint);
}

static int setup(struct node *n)
{
  char lock_path[NODE_PATH_MAX + 32];
  ssize_t len;
  int rc;

  len = readlink("/proc/self/exe", n->self_exe, sizeof(n->self_exe) - 1);
  if (len <= 0)
    snprintf(n->self_exe, sizeof(n->self_exe), "ptd");
  else
    n->self_exe[len] = '\0';
  rc = mkdir_p(n->cfg.state_dir);
  if (rc != PT_OK) {
    log_error("cannot create state directory '%s': %s", n->cfg.state_dir,
              pt_strerror(rc));
    return rc;
  }
  snprintf(n->ctl_path, sizeof(n->ctl_path), "%s/ptd.sock", n->cfg.state_dir);
  snprintf(n->state_path, sizeof(n->state_path), "%s/node.state",
           n->cfg.state_dir);
  snprintf(lock_path, sizeof(lock_path), "%s/ptd.lock", n->cfg.state_dir);
  /* Held for the node's life: one node per state directory. */
  n->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
  if (n->lock_fd < 0) {
    rc = -errno;
    log_error("cannot open '%s': %s", lock_path, pt_strerror(rc));
    return rc;
  }
  if (flock(n->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = -errno;
    if (rc == -EWOULDBLOCK)
      log_error("another ptd node runs with state directory '%s'",
                n->cfg.state_dir);
    else
      log_error("cannot lock '%s': %s", lock_path, pt_strerror(rc));
    return rc;
  }
  rc = node_env_base(&n->env);
  if (rc != PT_OK)
    return rc;
  n->ranks = calloc(n->cfg.ranks, sizeof(*n->ranks));
  if (n->ranks == NULL)
    return -ENOMEM;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    r->node = n;
    r->rank = i;
    snprintf(r->sock_path, sizeof(r->sock_path), "%s/smp.%" PRIu32 ".sock",
             n->cfg.state_dir, i);
  }

  n->loop = malloc(sizeof(*n->loop));
  if (n->loop == NULL)
    return -ENOMEM;
  rc = uv_loop_init(n->loop);
  if (rc != 0) {
    free(n->loop);
    n->loop = NULL;
    return rc;
  }
  uv_timer_init(n->loop, &n->timer);
  n->timer.data = n;
  node_io_clock_open(n);
  node_signals_open(n);

  rc = node_ctl_open(n);
  if (rc != PT_OK)
    return rc;
  return adopt_from_state(n);
}

static void teardown(struct node *n)
{
  if (n->loop != NULL) {
    if (n->phase != NODE_PH_EXIT)
      node_shutdown(n);
    uv_run(n->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(n->loop) != 0)
      log_warn("the event loop still had open handles at exit");
    free(n->loop);
  }
  if (n->lock_fd >= 0)
    close(n->lock_fd);
  node_env_free(n->env);
  free(n->restart_log.at);
  free(n->ranks);
  free(n);
}

int node_main(int argc, char **argv)
{
  char err[256];
  int rc, code;

  struct node *n = calloc(1, sizeof(*n));
  if (n == NULL) {
    fprintf(stderr, "ptd node: out of memory\n");
    return NODE_EXIT_FAILED;
  }
  n->lock_fd = -1;
  rc = node_args_parse(&n->cfg, argc, argv, err, sizeof(err));
  if (rc == NODE_ARGS_HELP) {
    node_args_usage(stdout);
    free(n);
    return NODE_EXIT_OK;
  }
  if (rc != PT_OK) {
    fprintf(stderr, "ptd node: %s\n(see 'ptd node --help')\n", err);
    free(n);
    return NODE_EXIT_USAGE;
  }
  log_max_level = n->cfg.log_level;
  log_set_role("ptd node");
  signal(SIGPIPE, SIG_IGN);
  if (node_preflight(&n->cfg) != PT_OK) {
    free(n);
    return NODE_EXIT_USAGE;
  }

  rc = setup(n);
  if (rc != PT_OK) {
    teardown(n);
    return NODE_EXIT_USAGE;
  }
  log_info("job '%s': %" PRIu32 " ranks, state in '%s', trainer '%s'",
           n->cfg.job, n->cfg.ranks, n->cfg.state_dir, n->cfg.cmd[0]);
  node_watchdog_start(n);
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->smp == NULL)
      r->smp_respawn_at = 1; /* due now */
    else
      node_smp_connect(n, r);
  }
  n->phase = NODE_PH_STARTING;
  n->state_dirty = true;
  node_notify(n, false);
  node_drive(n);
  uv_run(n->loop, UV_RUN_DEFAULT);
  code = n->phase == NODE_PH_EXIT ? n->exit_code : NODE_EXIT_FAILED;
  teardown(n);
  return code;
}
