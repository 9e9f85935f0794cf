/*
 * node_life.c — the moves of the job between its phases in `ptd node`: the
 * end (node_life_finish, a stop request, stopping the children of a role), a
 * restart and a restore attempt that failed, spawning SMPs and trainers;
 * and the names of phases and rank states that ptctl and node.state show.
 * Everything here runs on the loop thread; the phases are in node_job.c.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"

#define NODE_RESTORE_TRIES 3u    /* failed restore attempts before giving up */

static const char *role_name(enum node_role role)
{
  return role == NODE_ROLE_SMP ? "smp" : "trainer";
}

const char *node_life_phase_name(const struct node *n)
{
  switch (n->phase) {
  case NODE_PH_STARTING:
    return "starting";
  case NODE_PH_RESTART:
  case NODE_PH_QUERY:
  case NODE_PH_SET_RESTORE:
    return "restoring";
  case NODE_PH_RUNNING:
    return "running";
  case NODE_PH_STOP_TRAINERS:
  case NODE_PH_STOP_SMPS:
  case NODE_PH_EXIT:
    break;
  }
  switch (n->outcome) {
  case NODE_OUT_DONE:
    return "done";
  case NODE_OUT_FAILED:
    return "failed";
  default:
    return "stopping";
  }
}

const char *node_life_rank_state_name(const struct node *n,
                                 const struct node_rank *r)
{
  switch (r->tstate) {
  case NODE_TR_RUNNING:
    return r->trainer != NULL && r->trainer->term_sent ? "stopping"
                                                       : "running";
  case NODE_TR_DONE:
    return "done";
  case NODE_TR_FAILED:
    return "failed";
  case NODE_TR_GONE_WAIT:
    return "exiting";
  case NODE_TR_IDLE:
    break;
  }
  switch (n->phase) {
  case NODE_PH_STARTING:
    return "starting";
  case NODE_PH_RESTART:
  case NODE_PH_QUERY:
  case NODE_PH_SET_RESTORE:
    return "restoring";
  case NODE_PH_RUNNING:
    return "idle";
  default:
    return "stopped";
  }
}

void node_life_set_phase(struct node *n, enum node_phase ph)
{
  if (n->phase == ph)
    return;
  log_debug("phase %s -> %d", node_life_phase_name(n), (int)ph);
  n->phase = ph;
  n->drive_again = true;
  n->state_dirty = true;
}

bool node_life_all_subscribed(const struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (!n->ranks[i].subscribed)
      return false;
  return true;
}

/* Ends the job: trainers are stopped, then SMPs, then the node exits. */
static void vfinish(struct node *n, enum node_outcome out, bool permanent,
                    const char *fmt, va_list ap)
{
  if (n->phase >= NODE_PH_STOP_TRAINERS)
    return;
  n->outcome = out;
  n->permanent = permanent;
  vsnprintf(n->why, sizeof(n->why), fmt, ap);
  n->kill_at = rpc_now_ms() + NODE_TERM_GRACE_MS;
  if (permanent && n->cfg.cluster)
    node_part_failing(n);
  n->decider->drop(n); /* answers still to come are ignored */
  node_life_set_phase(n, NODE_PH_STOP_TRAINERS);
  node_ctl_notify(n, false);
}

void node_life_finish(struct node *n, enum node_outcome out, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vfinish(n, out, false, fmt, ap);
  va_end(ap);
}

void node_life_fail_permanent(struct node *n, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  vfinish(n, NODE_OUT_FAILED, true, fmt, ap);
  va_end(ap);
}

void node_life_request_stop(struct node *n, const char *by, bool escalate)
{
  if (n->phase >= NODE_PH_STOP_TRAINERS) {
    if (escalate && n->outcome == NODE_OUT_STOPPED && n->phase < NODE_PH_EXIT) {
      log_notice("stop requested again (%s): killing what is left now", by);
      n->kill_at = rpc_now_ms();
    }
  } else {
    log_info("stopping the job (%s)", by);
    node_life_finish(n, NODE_OUT_STOPPED, "stopped by %s", by);
  }
  node_job_drive(n);
}

/* SIGTERM to every live child of role, SIGKILL at n->kill_at, and after
 * NODE_KILL_GRACE_MS more the node stops waiting. True when none is left. */
bool node_life_stop_role(struct node *n, enum node_role role, uint64_t now)
{
  bool none = true;

  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    struct node_child *c = role == NODE_ROLE_SMP ? r->smp : r->trainer;

    if (c == NULL || c->exited)
      continue;
    if (!c->term_sent) {
      c->term_sent = true;
      node_proc_child_signal(c, SIGTERM);
      none = false;
    } else if (!c->kill_sent && now >= n->kill_at) {
      log_warn("%s rank %s (pid %d) did not stop within %u ms; "
               "sending SIGKILL",
               role_name(role), NODE_RANK(n, r->rank),
               c->pid, NODE_TERM_GRACE_MS);
      c->kill_sent = true;
      node_proc_child_signal(c, SIGKILL);
      none = false;
    } else if (c->kill_sent && now >= n->kill_at + NODE_KILL_GRACE_MS) {
      log_error("%s rank %s (pid %d) did not exit after SIGKILL; "
                "no longer waiting for it",
                role_name(role), NODE_RANK(n, r->rank), c->pid);
      if (role == NODE_ROLE_SMP)
        r->smp = NULL;
      else
        r->trainer = NULL;
      node_proc_child_abandon(c);
    } else {
      none = false;
    }
  }
  return none;
}

void node_life_begin_restart(struct node *n, uint64_t now, bool counted,
                        const char *why)
{
  n->backoff_until = 0;
  if (counted) {
    struct node_restart_log *l = &n->restart_log;
    uint32_t win = n->cfg.restart_window_ms;

    if (l->at == NULL && n->cfg.max_restarts > 0) {
      l->at = calloc(n->cfg.max_restarts, sizeof(*l->at));
      l->cap = l->at != NULL ? n->cfg.max_restarts : 0;
    }
    uint32_t recent = node_plan_restarts_recent(l, now, win);
    if (recent >= n->cfg.max_restarts) {
      if (win != 0)
        node_life_finish(n, NODE_OUT_FAILED, "%s; no restarts left (%" PRIu32
                    " in the last %" PRIu32 " s: --max-restarts %" PRIu32
                    ", --restart-window %" PRIu32 ")",
                    why, recent, win / 1000u, n->cfg.max_restarts, win / 1000u);
      else
        node_life_finish(n, NODE_OUT_FAILED, "%s; no restarts left (--max-restarts %"
                    PRIu32 ")", why, n->cfg.max_restarts);
      return;
    }
    if (node_plan_healthy(n->committed_since, n->running_since, now,
                          NODE_HEALTHY_MS) && n->backoff_attempt > 0) {
      log_info("the job ran healthy since its last restart: backoff starts "
               "again from %" PRIu32 " ms", n->cfg.backoff_ms);
      n->backoff_attempt = 0;
    }
    node_plan_restart_note(l, now);
    n->restarts++;
    n->backoff_attempt++;
    uint32_t d = node_plan_backoff_ms(n->cfg.backoff_ms, n->backoff_attempt,
                                      NODE_BACKOFF_CAP_MS);
    if (win != 0)
      log_info("restarting job (restart %" PRIu32 ", %" PRIu32 " of at most %"
               PRIu32 " in %" PRIu32 " s) in %" PRIu32 " ms",
               n->restarts, recent + 1, n->cfg.max_restarts, win / 1000u, d);
    else
      log_info("restarting job (restart %" PRIu32 " of %" PRIu32 ") in %"
               PRIu32 " ms", n->restarts, n->cfg.max_restarts, d);
    n->backoff_until = now + d;
  }
  n->running_since = 0;
  n->committed_since = false;
  n->commit_logged_ms = 0;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->tstate != NODE_TR_RUNNING)
      r->tstate = NODE_TR_IDLE;
  }
  /* A commit under way is dropped (answers still to come are ignored): the
   * restore point's SET_RESTORE clears its pins. */
  n->decider->drop(n);
  n->end_deadline = 0;
  n->kill_at = now + NODE_TERM_GRACE_MS;
  n->phase_deadline = 0;
  node_life_set_phase(n, NODE_PH_RESTART);
  node_ctl_notify(n, false);
}

/* A restore attempt failed (an SMP died or refused): try again a few
 * times, then give up. */
void node_life_retry_restore(struct node *n, uint64_t now, const char *why)
{
  n->restore_fails++;
  if (n->restore_fails > NODE_RESTORE_TRIES) {
    node_life_finish(n, NODE_OUT_FAILED, "restore failed %" PRIu32 " times: %s",
                n->restore_fails, why);
    return;
  }
  uint32_t d = node_plan_backoff_ms(n->cfg.backoff_ms, n->restore_fails,
                                    NODE_BACKOFF_CAP_MS);
  log_warn("restore attempt failed (%s); retrying in %" PRIu32 " ms", why, d);
  n->backoff_until = now + d;
  n->phase_deadline = 0;
  node_life_set_phase(n, NODE_PH_RESTART);
}

void node_life_spawn_smp(struct node *n, struct node_rank *r, uint64_t now)
{
  struct node_child *c = NULL;
  int rc = node_proc_child_spawn(n, r, NODE_ROLE_SMP, &c);

  r->smp_respawn_at = 0;
  if (rc != PT_OK) {
    r->smp_fails++;
    log_error("cannot start smp rank %s: %s", NODE_RANK(n, r->rank),
              pt_strerror(rc));
    if (r->smp_fails > NODE_SMP_FAILS_MAX)
      node_life_finish(n, NODE_OUT_FAILED, "cannot start smp rank %s: %s",
                  NODE_RANK(n, r->rank), pt_strerror(rc));
    else
      r->smp_respawn_at =
          now + node_plan_backoff_ms(n->cfg.backoff_ms, r->smp_fails,
                                     NODE_BACKOFF_CAP_MS);
    return;
  }
  r->smp = c;
  r->smp_adopted = false;
  log_debug("started smp rank %s (pid %d)", NODE_RANK(n, r->rank), c->pid);
  n->state_dirty = true;
  node_smp_connect(n, r);
}

void node_life_spawn_trainers(struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    struct node_child *c = NULL;

    r->gone_seen = r->gone_done = false;
    r->permanent = false;
    r->why[0] = '\0';
    if (r->tstate == NODE_TR_RUNNING && r->trainer != NULL)
      continue; /* a survivor restoring in place (node_recover.c) */
    int rc = node_proc_child_spawn(n, r, NODE_ROLE_TRAINER, &c);
    if (rc != PT_OK) {
      /* The command cannot be run (no such file, not executable): no
       * restart cures it, standalone or in a cluster. */
      node_life_fail_permanent(n, "cannot start trainer rank %s ('%s'): %s "
                               "(not restarted)", NODE_RANK(n, r->rank),
                               n->cfg.cmd[0], pt_strerror(rc));
      return;
    }
    if (r->starts > 0)
      r->restarts++;
    r->starts++;
    r->trainer = c;
    r->tstate = NODE_TR_RUNNING;
    r->progress_at = rpc_now_ms();
    log_info("started trainer rank %s (pid %d)", NODE_RANK(n, r->rank), c->pid);
    node_smp_announce(n, r);
  }
  /* A test's fault point: the node dies between spawning the trainers and
   * recording them; its successor finds them by their identity
   * (node_ident.c). */
  const char *fault = getenv("PT_NODE_TEST_FAULT");
  if (fault != NULL && strcmp(fault, "kill-after-spawn") == 0)
    raise(SIGKILL);
  /* Recorded at once, not at the end of this drive. */
  node_save(n);
}
