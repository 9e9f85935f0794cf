/*
 * node.c — `ptd node`, standalone mode: one per machine, supervising one SMP
 * and one trainer per local rank (see daemon/node/node.h for the file map and
 * node_job.c for the job's phases).
 *
 * This file sets the node up and takes it down: arguments, the state
 * directory (refused unless owned by the user and closed to others) and its
 * lock (one node per directory: a second one would steal the sockets), the
 * node secret, and writing node.state; node_ident.c decides the job
 * instance and re-adopts. How
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

#include <sodium.h>
#include <systemd/sd-daemon.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/node_secret.h"
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

int node_save(struct node *n)
{
  static bool warned;
  struct node_saved s;
  int rc;

  n->state_dirty = false;
  memset(&s, 0, sizeof(s));
  snprintf(s.job, sizeof(s.job), "%s", n->cfg.job);
  memcpy(s.instance, n->instance, sizeof(s.instance));
  s.ended = n->instance_ended;
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
    return PT_OK;
  }
out_warn:
  if (!warned)
    log_warn("cannot write '%s': %s (a restarted node could not re-adopt)",
             n->state_path, pt_strerror(rc));
  warned = true;
  return rc;
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

void node_ranks_abandon(struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    node_smp_disconnect(r);
    if (r->smp != NULL) {
      node_proc_child_abandon(r->smp);
      r->smp = NULL;
    }
    if (r->trainer != NULL) {
      node_proc_child_abandon(r->trainer);
      r->trainer = NULL;
    }
  }
}

void node_ranks_start(struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->smp == NULL)
      r->smp_respawn_at = 1; /* due now */
    else
      node_smp_connect(n, r);
  }
  n->phase = NODE_PH_STARTING;
  n->state_dirty = true;
}

void node_shutdown(struct node *n)
{
  node_ctl_close(n);
  node_ranks_abandon(n);
  close_handle((uv_handle_t *)&n->timer);
  close_handle((uv_handle_t *)&n->io_prepare);
  close_handle((uv_handle_t *)&n->io_check);
  close_handle((uv_handle_t *)&n->watchdog);
  close_handle((uv_handle_t *)&n->sigterm);
  close_handle((uv_handle_t *)&n->sigint);
}

/* The state directory, checked and locked: one node per directory. */
static int hold_state_dir(struct node *n)
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
  /* Another user's directory, or one others may write in, could hold a
   * planted node.state or symlinks: refused. */
  char derr[256];
  rc = node_state_dir_check(n->cfg.state_dir, derr, sizeof(derr));
  if (rc != PT_OK) {
    log_error("%s", derr);
    return rc;
  }
  snprintf(n->ctl_path, sizeof(n->ctl_path), "%s/ptd.sock", n->cfg.state_dir);
  snprintf(n->state_path, sizeof(n->state_path), "%s/node.state",
           n->cfg.state_dir);
  snprintf(lock_path, sizeof(lock_path), "%s/ptd.lock", n->cfg.state_dir);
  /* Held for the node's life: one node per state directory. */
  n->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                    0600);
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
  return PT_OK;
}

static int setup(struct node *n)
{
  int rc = hold_state_dir(n);
  if (rc != PT_OK)
    return rc;
  /* After the lock: one node makes the secret its SMPs check. */
  rc = node_secret_load_or_create(n->cfg.state_dir, n->secret_path,
                                  sizeof(n->secret_path), n->secret);
  if (rc != PT_OK)
    return rc;
  rc = node_proc_env_base(&n->env);
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
  node_job_io_clock_open(n);
  node_ctl_signals_open(n);

  rc = node_ctl_open(n);
  if (rc != PT_OK)
    return rc;
  rc = node_ident_start(n);
  if (rc != PT_OK)
    return rc;
  char perr[1200] = "";
  rc = node_persist_open(n, perr, sizeof(perr));
  if (rc != PT_OK) {
    log_error("refusing to start: %s", perr);
    return rc;
  }
  /* After node.state: the decider starts from the job's committed step. */
  rc = n->decider->open(n);
  if (rc != PT_OK)
    log_error("cannot set up the %s commit decider: %s", n->decider->name,
              pt_strerror(rc));
  return rc;
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
  node_proc_env_free(n->env);
  node_persist_close(n);
  n->decider->close(n);
  free(n->restart_log.at);
  free(n->ranks);
  free(n);
}

/* Cluster mode: the state directory held as in standalone mode, the
 * control socket, signals, and the link to the controller
 * (node_cluster.c). The job parts it is given run in node_part.c. */
static int cluster_main(struct node *n)
{
  uint8_t key[RPC_KEY_BYTES];
  char kerr[512];
  int rc, code = NODE_EXIT_USAGE;

  rc = rpc_key_load(n->cfg.key_path, key, kerr, sizeof(kerr));
  if (rc != PT_OK) {
    log_error("%s", kerr);
    free(n);
    return NODE_EXIT_USAGE;
  }
  rc = hold_state_dir(n);
  if (rc != PT_OK)
    goto out;
  n->loop = malloc(sizeof(*n->loop));
  if (n->loop == NULL || uv_loop_init(n->loop) != 0) {
    free(n->loop);
    n->loop = NULL;
    log_error("cannot start the event loop");
    goto out;
  }
  uv_timer_init(n->loop, &n->timer);
  n->timer.data = n;
  node_job_io_clock_open(n);
  node_ctl_signals_open(n);
  /* What the parts' SMPs and trainers need, as standalone. */
  rc = node_secret_load_or_create(n->cfg.state_dir, n->secret_path,
                                  sizeof(n->secret_path), n->secret);
  if (rc == PT_OK)
    rc = node_proc_env_base(&n->env);
  if (rc == PT_OK)
    rc = node_ctl_open(n);
  /* A part recorded running (this node died) is taken up first. */
  if (rc == PT_OK)
    rc = node_part_open(n);
  if (rc == PT_OK) {
    rc = node_cluster_open(n, key);
    if (rc != PT_OK)
      log_error("cannot start the controller link: %s", pt_strerror(rc));
  }
  if (rc != PT_OK) {
    node_shutdown(n);
  } else {
    node_ctl_watchdog_start(n);
    sd_notifyf(0, "READY=1\nSTATUS=cluster node '%s': connecting",
               n->cfg.node_id);
    code = NODE_EXIT_FAILED;
  }
  uv_run(n->loop, UV_RUN_DEFAULT);
  if (rc == PT_OK)
    code = n->phase == NODE_PH_EXIT ? n->exit_code : NODE_EXIT_FAILED;
  if (uv_loop_close(n->loop) != 0)
    log_warn("the event loop still had open handles at exit");
  free(n->loop);
out:
  sodium_memzero(key, sizeof(key));
  if (n->lock_fd >= 0)
    close(n->lock_fd);
  if (n->decider_data != NULL)
    n->decider->close(n);
  node_part_close(n);
  node_proc_env_free(n->env);
  free(n->restart_log.at);
  free(n->ranks);
  free(n);
  return code;
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
  /* Standalone: this node decides its commits and restores. */
  n->decider = &node_decider_local;
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
  rpc_log_route();
  signal(SIGPIPE, SIG_IGN);
  if (n->cfg.cluster) {
    /* The controller decides for the cluster (node_decide_remote.c). */
    n->decider = &node_decider_remote;
    return cluster_main(n);
  }
  if (node_check_preflight(&n->cfg, NULL, 0) != PT_OK) {
    free(n);
    return NODE_EXIT_USAGE;
  }

  rc = setup(n);
  if (rc != PT_OK) {
    teardown(n);
    return NODE_EXIT_USAGE;
  }
  log_info("job '%s' instance %s: %" PRIu32 " ranks, state in '%s', "
           "trainer '%s'",
           n->cfg.job, n->instance_hex, n->cfg.ranks, n->cfg.state_dir,
           n->cfg.cmd[0]);
  node_ctl_watchdog_start(n);
  node_ranks_start(n);
  node_ctl_notify(n, false);
  node_job_drive(n);
  uv_run(n->loop, UV_RUN_DEFAULT);
  code = n->phase == NODE_PH_EXIT ? n->exit_code : NODE_EXIT_FAILED;
  teardown(n);
  return code;
}
