/*
 * smp_trainer_pid.c — which process is ptd smp's trainer: the trainer's own
 * process, watched through a pidfd, and the trainer the node announced
 * (TRAINER_SET), whose session alone may say HELLO.
 */
#include <errno.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/proc.h"
#include "daemon/smp/smp_internal.h"

/* ---- the trainer's process ----
 *
 * A trainer that forks without exec (a data-loader worker) leaves its SMP
 * connection open in the child when it dies, so the connection's end is no
 * sign of the trainer's. The trainer's pid (the peer's SO_PEERCRED pid) is
 * watched through a pidfd: when it exits, the connection stops being the
 * trainer's and is closed, whoever still holds its other end. */

struct pid_watch {
  uv_poll_t poll;
  int fd;
  void *owner; /* NULL once the owner stopped watching */
  void (*fired)(void *owner);
};

static void watch_free(uv_handle_t *h)
{
  struct pid_watch *w = h->data;

  close(w->fd);
  free(w);
}

static void pidw_close(struct pid_watch *w)
{
  if (w == NULL)
    return;
  w->owner = NULL;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watch_free);
}

static void on_pidw(uv_poll_t *h, int status, int events)
{
  struct pid_watch *w = h->data;

  (void)status;
  (void)events;
  if (w->owner != NULL)
    w->fired(w->owner);
}

/* Watches the process behind pidfd fd (taken over: closed with the watch);
 * fired(owner) runs once it exits. NULL when it cannot (fd closed). */
static struct pid_watch *pidw_open(uv_loop_t *loop, int fd,
                                   void (*fired)(void *), void *owner)
{
  struct pid_watch *w = calloc(1, sizeof(*w));

  if (w == NULL || uv_poll_init(loop, &w->poll, fd) != 0) {
    close(fd);
    free(w);
    return NULL;
  }
  w->fd = fd;
  w->owner = owner;
  w->fired = fired;
  w->poll.data = w;
  if (uv_poll_start(&w->poll, UV_READABLE, on_pidw) != 0) {
    uv_close((uv_handle_t *)&w->poll, watch_free);
    return NULL;
  }
  return w;
}

void smp_trainer_pid_watch_stop(struct smp_conn *sc)
{
  struct pid_watch *w = sc->watch;

  sc->watch = NULL;
  pidw_close(w);
}

static int abort_all(void *arg)
{
  smp_serve_writing_abort_all(arg);
  return 0;
}

static void on_trainer_exit(void *owner)
{
  struct smp_conn *sc = owner;

  smp_trainer_pid_watch_stop(sc);
  if (sc->smp->trainer != sc)
    return;
  /* Usually the connection's end follows at once; when a child the
   * trainer forked holds it open, it never would. Either way the trainer
   * is gone now. */
  log_info("trainer pid %d exited: its connection is closed, whoever still "
           "holds it", (int)sc->pid);
  smp_guarded(sc->smp, abort_all, sc);
  smp_serve_trainer_release(sc, false);
  sc->role = ROLE_NONE;
  rpc_conn_close(sc->conn, 0);
}

void smp_trainer_pid_watch_start(struct smp_conn *sc, int pid)
{
  int fd;

  smp_trainer_pid_watch_stop(sc);
  fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    log_debug("cannot watch trainer pid %d: %s", pid, strerror(errno));
    return;
  }
  sc->watch = pidw_open(&sc->smp->loop, fd, on_trainer_exit, sc);
}

/* ---- the trainer the node announced ----
 *
 * Any process of the SMP's user can reach its socket; only the trainer the
 * node started may train here. The node names it (TRAINER_SET, on its
 * secret-proven connection): the leader of the session it was spawned in.
 * A HELLO is accepted from that session only (the SO_PEERCRED pid's field
 * 6 of /proc/PID/stat), so a wrapper script's or torchrun's children are
 * accepted and a pt-train started by hand, with the job's environment
 * copied, is not. */

/* Field want (>= 3) of /proc/PID/stat; -1 when unreadable. */
static long long stat_num(int pid, int want)
{
  uint64_t v;
  return proc_stat_field(pid, want, &v) == PT_OK ? (long long)v : -1;
}

void smp_trainer_pid_announce_clear(struct smp *smp)
{
  struct pid_watch *w = smp->announce_watch;

  smp->announce_watch = NULL;
  smp->announced = false;
  smp->announced_pid = 0;
  pidw_close(w);
}

static void on_announced_exit(void *owner)
{
  struct smp *smp = owner;

  log_debug("trainer pid %d (announced by the node) exited: a HELLO now "
           "waits for the node's next announcement", (int)smp->announced_pid);
  smp_trainer_pid_announce_clear(smp);
}

int smp_trainer_pid_on_trainer_set(struct smp_conn *sc, uint64_t id,
                       const Pt__TrainerSet *m)
{
  struct smp *smp = sc->smp;
  char msg[200] = "";
  int rc = 0;

  if (m->pid <= 0) {
    if (smp->announced)
      log_info("the node withdrew trainer pid %d", (int)smp->announced_pid);
    smp_trainer_pid_announce_clear(smp);
    smp_serve_reply_status(sc, id, 0, NULL);
    return 0;
  }
  if (smp->announced && smp->announced_pid == m->pid) {
    smp_serve_reply_status(sc, id, 0, NULL); /* again (a node subscribed anew) */
    return 0;
  }
  /* The pidfd first: the checks then hold for the process it refers to. */
  int fd = (int)syscall(SYS_pidfd_open, (int)m->pid, 0);
  long long ticks = fd >= 0 ? stat_num(m->pid, 22) : -1;
  long long sid = fd >= 0 ? stat_num(m->pid, 6) : -1;
  struct pollfd pfd = { fd, POLLIN, 0 };
  if (fd < 0 || ticks < 0 || sid < 0)
    snprintf(msg, sizeof(msg), "trainer pid %d is gone", (int)m->pid);
  else if (poll(&pfd, 1, 0) > 0) /* exited, not yet reaped (a zombie) */
    snprintf(msg, sizeof(msg), "trainer pid %d has exited", (int)m->pid);
  else if (m->has_start_ticks && m->start_ticks != 0 &&
           (uint64_t)ticks != m->start_ticks)
    snprintf(msg, sizeof(msg), "pid %d is no longer the trainer the node "
             "started (its start time differs)", (int)m->pid);
  else if (sid != m->pid)
    snprintf(msg, sizeof(msg), "trainer pid %d leads no session (its "
             "session is %lld)", (int)m->pid, sid);
  if (msg[0] != '\0') {
    if (fd >= 0)
      close(fd);
    log_info("trainer announcement refused: %s", msg);
    smp_serve_reply_status(sc, id, -ESRCH, msg);
    return 0;
  }
  smp_trainer_pid_announce_clear(smp);
  smp->announce_watch = pidw_open(&smp->loop, fd, on_announced_exit, smp);
  if (smp->announce_watch == NULL)
    rc = -ENOMEM;
  if (rc == 0) {
    smp->announced = true;
    smp->announced_pid = m->pid;
    log_debug("the node announced trainer pid %d: HELLO is accepted from its "
             "session only", (int)m->pid);
  }
  smp_serve_reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

/* Whether the HELLO of peer pid may go on: 0, -EAGAIN while no trainer is
 * announced (with --secret-file; without, only an announcement restricts),
 * PT_EROLE from outside the announced session. OUT: msg when not. */
int smp_trainer_pid_hello_peer_check(struct smp *smp, int peer, char *msg, size_t len)
{
  if (smp->announced && smp->announce_watch != NULL) {
    struct pollfd pfd = { smp->announce_watch->fd, POLLIN, 0 };
    if (poll(&pfd, 1, 0) > 0) /* exited; its event is still to come */
      on_announced_exit(smp);
  }
  if (!smp->announced) {
    if (!smp->has_secret)
      return 0;
    snprintf(msg, len, "waiting for the node to announce its trainer");
    return -EAGAIN;
  }
  long long sid = stat_num(peer, 6);
  if (sid == smp->announced_pid)
    return 0;
  snprintf(msg, len, "hello from pid %d (session %lld): only the session of "
           "trainer pid %d, which the node started, may train here", peer, sid,
           (int)smp->announced_pid);
  return PT_EROLE;
}
