/*
 * controller.c — `ptd controller`: set-up, the loop, teardown (see controller.h
 * for the file map).
 *
 * Start-up, in order, each refusal one line and exit 2: the arguments and
 * the timeouts as a set (ctl_args.c); the cluster key (rpc_key_load: mode
 * 0600, ours, no symlink); the state directory (created if missing, then
 * refused unless it is a real directory owned by this user and closed to
 * group and others) and its lock, <state-dir>/controller.lock, held with
 * flock for the process's life, so a second controller on the same
 * directory is refused; the journal, <state-dir>/journal, replayed into the
 * job table (ctl_journal.c: a torn last record dropped with one warning,
 * any other damage refused naming the journal and the offset); then the
 * authenticated listener. Once it listens,
 * one line says where, in a form scripts parse:
 *
 *   listening on 127.0.0.1:41234
 *   listening on [::1]:41234
 *
 * and systemd is told READY=1 (when NOTIFY_SOCKET is set); WATCHDOG=1 goes
 * out every half WATCHDOG_USEC (when the unit sets WatchdogSec=). SIGTERM
 * and SIGINT stop it: the listener and every connection are closed, the
 * loop drains, exit 0.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sodium.h>
#include <systemd/sd-daemon.h>
#include <unistd.h>

#include "pt.h"
#include "common/journal.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/roles.h"

/* ---- the state directory ---- */

static int mkdir_p(const char *path)
{
  char buf[CTL_PATH_MAX];

  if (snprintf(buf, sizeof(buf), "%s", path) >= (int)sizeof(buf))
    return -ENAMETOOLONG;
  for (char *p = buf + 1; *p != '\0'; p++) {
    if (*p != '/')
      continue;
    *p = '\0';
    if (mkdir(buf, 0700) != 0 && errno != EEXIST)
      return -errno;
    *p = '/';
  }
  if (mkdir(buf, 0700) != 0 && errno != EEXIST)
    return -errno;
  return PT_OK;
}

/* Another user's directory, or one others may write in, could hold a
 * planted journal or symlinks: refused. */
static int state_dir_check(const char *dir)
{
  struct stat st;

  if (lstat(dir, &st) != 0) {
    int rc = -errno;
    log_error("cannot stat state directory '%s': %s", dir, pt_strerror(rc));
    return rc;
  }
  if (S_ISLNK(st.st_mode)) {
    log_error("state directory '%s' is a symbolic link: give its target",
              dir);
    return -EPERM;
  }
  if (!S_ISDIR(st.st_mode)) {
    log_error("state directory '%s' is not a directory", dir);
    return -ENOTDIR;
  }
  if (st.st_uid != geteuid()) {
    log_error("state directory '%s' is owned by uid %u, not by this user "
              "(uid %u): refusing it",
              dir, (unsigned)st.st_uid, (unsigned)geteuid());
    return -EPERM;
  }
  if ((st.st_mode & 022) != 0) {
    log_error("state directory '%s' is writable by group or others (mode "
              "%03o): refusing it (chmod go-w)",
              dir, (unsigned)(st.st_mode & 0777));
    return -EPERM;
  }
  return PT_OK;
}

static int state_dir_open(struct controller *ctl)
{
  const char *dir = ctl->cfg.state_dir;
  char lock_path[CTL_PATH_MAX + 32];
  int rc = mkdir_p(dir);

  if (rc != PT_OK) {
    log_error("cannot create state directory '%s': %s", dir, pt_strerror(rc));
    return rc;
  }
  rc = state_dir_check(dir);
  if (rc != PT_OK)
    return rc;
  snprintf(lock_path, sizeof(lock_path), "%s/controller.lock", dir);
  ctl->lock_fd = open(lock_path, O_RDWR | O_CREAT | O_NOFOLLOW | O_CLOEXEC,
                      0600);
  if (ctl->lock_fd < 0) {
    rc = -errno;
    log_error("cannot open '%s': %s", lock_path, pt_strerror(rc));
    return rc;
  }
  if (flock(ctl->lock_fd, LOCK_EX | LOCK_NB) != 0) {
    rc = -errno;
    if (rc == -EWOULDBLOCK)
      log_error("another ptd controller runs with state directory '%s': "
                "refusing to start a second one",
                dir);
    else
      log_error("cannot lock '%s': %s", lock_path, pt_strerror(rc));
    return rc;
  }
  return PT_OK;
}

/* The journal, replayed into the job table. A torn last record is dropped
 * with one warning; any other damage refuses to start. */
static int journal_load(struct controller *ctl)
{
  char path[CTL_PATH_MAX + 16], err[1024];
  uint64_t dropped = 0;

  snprintf(path, sizeof(path), "%s/journal", ctl->cfg.state_dir);
  int rc = ctl_journal_open(&ctl->journal, path, &ctl->jobs, &dropped, err,
                            sizeof(err));
  if (rc != PT_OK) {
    log_error("%s: refusing to start (move it aside to start empty, which "
              "forgets every job)", err);
    return rc;
  }
  if (dropped > 0)
    log_warn("journal '%s': dropped a torn last record (%" PRIu64 " bytes): "
             "a crash in the middle of an append; that decision never took "
             "effect", path, dropped);
  ctl_jobs_replay_done(&ctl->jobs, rpc_now_ms());
  log_info("journal '%s': %" PRIu64 " records, %zu live jobs, %zu ended",
           path, journal_records(ctl->journal), ctl->jobs.nlive,
           ctl->jobs.nended);
  return PT_OK;
}

/* ---- timers, signals, systemd ---- */

/* The membership's deadlines. A deadline that is due is judged only
 * when the timer finds it due a second time, 1 ms after the first, with
 * one poll of the sockets between the two: a controller that was itself
 * held up (descheduled on a loaded machine, stopped, a slow write) wakes
 * with the nodes' heartbeats of that time unread in its sockets, and libuv
 * runs a due timer before it polls them (at once after a stop, which
 * interrupts epoll_wait). Judged then, every node would look silent for as
 * long as the controller was: unreachable, or dead with its connection
 * closed, while it heartbeat all along. */
static void on_timer(uv_timer_t *t);

static void members_run(struct controller *ctl, bool from_timer)
{
  struct ctl_members *m = &ctl->members;
  uint64_t now = rpc_now_ms();

  if (ctl->stopping)
    return;
  uint64_t next = ctl_members_next_ms(m, now);
  if (next == 0 && from_timer && ctl->members_due && m->n > 0) {
    void **dead = calloc(m->n, sizeof(*dead));
    size_t nd = ctl_members_tick(m, now, dead, dead != NULL ? m->n : 0);
    for (size_t i = 0; dead != NULL && i < nd; i++)
      rpc_conn_close(dead[i], -ETIMEDOUT);
    free(dead);
    next = ctl_members_next_ms(m, now);
  }
  ctl->members_due = from_timer && next == 0;
  if (next == UINT64_MAX) {
    uv_timer_stop(&ctl->timer);
    return;
  }
  /* At least 1 ms: a deadline due now cannot spin the loop, and the loop
   * polls the sockets before the timer fires again. */
  uv_timer_start(&ctl->timer, on_timer, next > 0 ? next : 1, 0);
}

static void on_timer(uv_timer_t *t)
{
  members_run(t->data, true);
}

void controller_members_timer_run(struct controller *ctl)
{
  members_run(ctl, false);
}

static void on_watchdog(uv_timer_t *t)
{
  (void)t;
  sd_notify(0, "WATCHDOG=1");
}

static void on_log_timer(uv_timer_t *t)
{
  (void)t;
  rpc_log_flush();
}

/* A controller that did not run (SIGSTOP, a paused VM, a starved CPU) finds
 * on waking that every node was silent meanwhile, and its membership timer
 * runs before it has read what the nodes sent (or before they reconnected
 * to it): it would declare them all dead and restart every job. So the loop
 * watches itself: the poll waits at most until the next timer (the jobs'
 * timer comes every CTL_JOBS_TICK_MS), and a turn of the loop's callbacks
 * takes milliseconds; beyond that by CTL_STALL_MS it was away, and that
 * time is not held against the nodes. */
#define CTL_STALL_MS 1000u

static void stall_excuse(struct controller *ctl, uint64_t gap, uint64_t now)
{
  log_warn("the controller did not run for %" PRIu64 " ms (stopped, or "
           "starved of CPU): the nodes' silence meanwhile is not held "
           "against them", gap);
  ctl_members_excuse(&ctl->members, gap, now);
}

static void on_stall_prepare(uv_prepare_t *h)
{
  struct controller *ctl = h->data;
  uint64_t now = rpc_now_ms();

  if (ctl->loop_ran_ms != 0 && now > ctl->loop_ran_ms + CTL_STALL_MS)
    stall_excuse(ctl, now - ctl->loop_ran_ms, now);
  ctl->loop_poll_ms = now;
}

static void on_stall_check(uv_check_t *h)
{
  struct controller *ctl = h->data;
  uint64_t now = rpc_now_ms();

  if (ctl->loop_poll_ms != 0 &&
      now > ctl->loop_poll_ms + CTL_JOBS_TICK_MS + CTL_STALL_MS)
    stall_excuse(ctl, now - ctl->loop_poll_ms - CTL_JOBS_TICK_MS, now);
  ctl->loop_ran_ms = now;
}

static void close_handle(uv_handle_t *h)
{
  if (h->loop != NULL && !uv_is_closing(h))
    uv_close(h, NULL);
}

void controller_stop(struct controller *ctl, const char *why)
{
  if (ctl->stopping)
    return;
  ctl->stopping = true;
  log_notice("stopping (%s)", why);
  sd_notify(0, "STOPPING=1");
  if (ctl->listener != NULL) {
    rpc_listener_close(ctl->listener);
    ctl->listener = NULL;
  }
  ctl_conn_close_all(ctl);
  close_handle((uv_handle_t *)&ctl->timer);
  close_handle((uv_handle_t *)&ctl->watchdog);
  close_handle((uv_handle_t *)&ctl->log_timer);
  close_handle((uv_handle_t *)&ctl->jobs_timer);
  close_handle((uv_handle_t *)&ctl->stall_prepare);
  close_handle((uv_handle_t *)&ctl->stall_check);
  close_handle((uv_handle_t *)&ctl->sigterm);
  close_handle((uv_handle_t *)&ctl->sigint);
}

static void on_signal(uv_signal_t *s, int signum)
{
  controller_stop(s->data, signum == SIGINT ? "SIGINT" : "SIGTERM");
}

/* ---- set-up and teardown ---- */

/* One descriptor per node and per ptctl: a thousand-node cluster needs more
 * than the usual soft limit of 1024, so it is raised to the hard limit
 * (capped at CTL_NOFILE_WANT). */
#define CTL_NOFILE_WANT 65536u
static void raise_nofile(void)
{
  struct rlimit rl;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0 || rl.rlim_cur >= CTL_NOFILE_WANT)
    return;
  rlim_t want = rl.rlim_max < CTL_NOFILE_WANT ? rl.rlim_max : CTL_NOFILE_WANT;
  if (want <= rl.rlim_cur)
    return;
  rlim_t was = rl.rlim_cur;
  rl.rlim_cur = want;
  if (setrlimit(RLIMIT_NOFILE, &rl) == 0)
    log_debug("raised the open file limit from %llu to %llu",
              (unsigned long long)was, (unsigned long long)want);
  else
    log_warn("cannot raise the open file limit from %llu: at most about "
             "that many nodes can connect",
             (unsigned long long)was);
}

static int setup(struct controller *ctl)
{
  char err[512];
  int rc;

  raise_nofile();
  rc = rpc_key_load(ctl->cfg.key_path, ctl->auth.key, err, sizeof(err));
  if (rc != PT_OK) {
    log_error("%s", err);
    return rc;
  }
  ctl->auth.role = PT__PEER_ROLE__PEER_ROLE_CONTROLLER;
  snprintf(ctl->auth.node_id, sizeof(ctl->auth.node_id), "controller");
  rc = state_dir_open(ctl);
  if (rc != PT_OK)
    return rc;
  ctl_members_init(&ctl->members, &ctl->cfg.t, ctl_conn_log_change, ctl);
  ctl_jobs_init(&ctl->jobs, &ctl->members, &ctl_job_conn_ops, ctl);
  rc = journal_load(ctl);
  if (rc != PT_OK)
    return rc;

  ctl->loop = malloc(sizeof(*ctl->loop));
  if (ctl->loop == NULL)
    return -ENOMEM;
  rc = uv_loop_init(ctl->loop);
  if (rc != 0) {
    free(ctl->loop);
    ctl->loop = NULL;
    return rc;
  }
  uv_timer_init(ctl->loop, &ctl->timer);
  ctl->timer.data = ctl;
  uv_timer_init(ctl->loop, &ctl->watchdog);
  ctl->watchdog.data = ctl;
  uv_timer_init(ctl->loop, &ctl->log_timer);
  ctl_job_conn_timer_start(ctl);
  uv_prepare_init(ctl->loop, &ctl->stall_prepare);
  ctl->stall_prepare.data = ctl;
  uv_prepare_start(&ctl->stall_prepare, on_stall_prepare);
  uv_check_init(ctl->loop, &ctl->stall_check);
  ctl->stall_check.data = ctl;
  uv_check_start(&ctl->stall_check, on_stall_check);
  uv_signal_init(ctl->loop, &ctl->sigterm);
  ctl->sigterm.data = ctl;
  uv_signal_init(ctl->loop, &ctl->sigint);
  ctl->sigint.data = ctl;
  uv_signal_start(&ctl->sigterm, on_signal, SIGTERM);
  uv_signal_start(&ctl->sigint, on_signal, SIGINT);

  rc = rpc_listen_tcp(ctl->loop, ctl->cfg.listen_host, ctl->cfg.listen_port,
                      &ctl_conn_ops, &ctl->auth, ctl_conn_accept, ctl,
                      &ctl->listener);
  if (rc != PT_OK) {
    log_error("cannot listen on %s%s%s:%d: %s%s",
              strchr(ctl->cfg.listen_host, ':') ? "[" : "",
              ctl->cfg.listen_host,
              strchr(ctl->cfg.listen_host, ':') ? "]" : "",
              ctl->cfg.listen_port, pt_strerror(rc),
              rc == -EADDRINUSE ? " (another process holds the port)" : "");
    return rc;
  }
  return PT_OK;
}

static void teardown(struct controller *ctl)
{
  if (ctl->loop != NULL) {
    controller_stop(ctl, "start-up failed");
    uv_run(ctl->loop, UV_RUN_DEFAULT);
    if (uv_loop_close(ctl->loop) != 0)
      log_warn("the event loop still had open handles at exit");
    free(ctl->loop);
  }
  ctl_jobs_release(&ctl->jobs);
  ctl_members_release(&ctl->members);
  if (ctl->journal != NULL)
    journal_close(ctl->journal);
  if (ctl->lock_fd >= 0)
    close(ctl->lock_fd);
  sodium_memzero(ctl->auth.key, sizeof(ctl->auth.key));
  free(ctl);
}

int controller_main(int argc, char **argv)
{
  char err[512];
  int rc;
  uint64_t usec = 0;

  struct controller *ctl = calloc(1, sizeof(*ctl));
  if (ctl == NULL) {
    fprintf(stderr, "ptd controller: out of memory\n");
    return CTL_EXIT_FAILED;
  }
  ctl->lock_fd = -1;
  rc = ctl_args_parse(&ctl->cfg, argc, argv, err, sizeof(err));
  if (rc == CTL_ARGS_HELP) {
    ctl_args_usage(stdout);
    free(ctl);
    return CTL_EXIT_OK;
  }
  if (rc != PT_OK) {
    fprintf(stderr, "ptd controller: %s\n(see 'ptd controller --help')\n",
            err);
    free(ctl);
    return CTL_EXIT_USAGE;
  }
  const char *fault = getenv("PT_FAULT");
  ctl->fault_after_commit =
      fault != NULL && strcmp(fault, "ctl_after_commit_journal") == 0;
  log_max_level = ctl->cfg.log_level;
  log_set_role("ptd controller");
  rpc_log_route();
  signal(SIGPIPE, SIG_IGN);

  rc = setup(ctl);
  if (rc != PT_OK) {
    teardown(ctl);
    return CTL_EXIT_USAGE;
  }
  int port = rpc_listener_port(ctl->listener);
  bool v6 = strchr(ctl->cfg.listen_host, ':') != NULL;
  log_notice("listening on %s%s%s:%d", v6 ? "[" : "", ctl->cfg.listen_host,
             v6 ? "]" : "", port);
  log_info("state in '%s'; heartbeat %" PRIu32 " ms, unreachable after %" PRIu32
           " ms, dead after %" PRIu32 " ms, grace %" PRIu32 " ms, jobs wait "
           "%" PRIu32 " ms for a dead node",
           ctl->cfg.state_dir, ctl->cfg.t.heartbeat_ms,
           ctl_args_timeouts_unreachable_ms(&ctl->cfg.t), ctl->cfg.t.dead_after_ms,
           ctl->cfg.t.grace_ms, ctl->cfg.t.node_wait_ms);
  if (sd_watchdog_enabled(0, &usec) > 0 && usec >= 2000) {
    uv_timer_start(&ctl->watchdog, on_watchdog, usec / 2000, usec / 2000);
    log_debug("systemd watchdog: a ping every %" PRIu64 " ms", usec / 2000);
  }
  /* A flood of strangers is logged one line per LOG_LIMIT_MS; the count
   * of the rest comes out within that even when the flood stops. */
  uv_timer_start(&ctl->log_timer, on_log_timer, LOG_LIMIT_MS, LOG_LIMIT_MS);
  sd_notifyf(0, "READY=1\nSTATUS=listening on port %d", port);
  uv_run(ctl->loop, UV_RUN_DEFAULT);
  int code = ctl->exit_code;
  teardown(ctl);
  return code;
}
