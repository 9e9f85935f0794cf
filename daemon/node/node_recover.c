/*
 * node_recover.c — recovery in place in `ptd node`. When a trainer dies,
 * the node restarts every rank (node_life_begin_restart), unless every
 * other rank's trainer is alive and said it can restore in place
 * (pt_options.recover_in_place): then only the failed ranks are restarted
 * and the survivors, asked through their SMPs (RECOVER), stop at a safe
 * point, restore the step the node chooses and go on, keeping their
 * processes (a PyTorch trainer keeps its imported modules and its CUDA
 * context, the bulk of a restart's cost).
 *
 * The restart is the ordinary one (backoff, QUERY, SET_RESTORE), with the
 * survivors left running; they get no snapshot slot meanwhile, so the
 * restore point is chosen over steps they can no longer change. Every
 * survivor must restore (its SMP's EVENT_RECOVERED) within
 * --recover-timeout of the failed ranks' start; one that does not (stuck
 * in a collective with the dead rank, say) makes the node restart every
 * rank as before. So does an SMP that dies meanwhile, a RECOVER refused
 * (a trainer that cannot), or a restore from disk. Standalone only: in
 * cluster mode the controller restarts the whole job in a new epoch.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"

/* A survivor: its trainer runs and is not being stopped. */
static bool alive(const struct node_rank *r)
{
  return r->tstate == NODE_TR_RUNNING && r->trainer != NULL &&
         !r->trainer->exited && !r->trainer->term_sent;
}

bool node_recover_begin(struct node *n, uint64_t now)
{
  uint32_t survivors = 0;

  n->recovering = false;
  /* Without a committed step a survivor would have to be a fresh process
   * (its first parameters are gone): every rank starts again. */
  if (n->cfg.recover_timeout_ms == 0 || n->cfg.cluster ||
      !n->decider->restarts_ranks || !n->has_committed)
    return false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    const struct node_rank *r = &n->ranks[i];
    if (!r->subscribed)
      return false;
    if (alive(r))
      survivors++;
    else if (r->tstate != NODE_TR_FAILED)
      return false; /* done, or on its way out: nothing to recover into */
  }
  if (survivors == 0)
    return false;
  n->recover_gen++;
  n->recover_began = now;
  n->recover_deadline = 0;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    r->recover_asked = r->recover_acked = r->recovered = false;
    if (!alive(r))
      continue;
    if (node_smp_request(n, r, NODE_REQ_RECOVER, n->recover_gen, NULL) !=
        PT_OK)
      return false;
    r->recover_asked = true;
  }
  n->recovering = true;
  log_info("recovery %" PRIu64 " in place: %" PRIu32 " surviving rank(s) "
           "asked to restore without exiting", n->recover_gen, survivors);
  return true;
}

void node_recover_cancel(struct node *n)
{
  n->recovering = false;
  n->recover_deadline = 0;
}

void node_recover_abandon(struct node *n, const char *why)
{
  if (!n->recovering)
    return;
  node_recover_cancel(n);
  log_warn("recovery %" PRIu64 " in place abandoned (%s): restarting every "
           "rank", n->recover_gen, why);
  if (n->phase >= NODE_PH_RESTART && n->phase <= NODE_PH_RUNNING)
    node_life_begin_restart(n, rpc_now_ms(), false, why);
}

bool node_recover_ready(struct node *n)
{
  if (!n->recovering)
    return true;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    const struct node_rank *r = &n->ranks[i];
    if (r->recover_asked && !r->recover_acked && !r->recovered)
      return false; /* RECOVER's deadline bounds this */
  }
  return true;
}

void node_recover_on_reply(struct node *n, struct node_rank *r, int status,
                           const char *text)
{
  if (!n->recovering || !r->recover_asked)
    return;
  if (status != 0) {
    char why[320];
    snprintf(why, sizeof(why), "smp rank %s: %s", NODE_RANK(n, r->rank),
             LOG_ESC(text));
    node_recover_abandon(n, why);
    return;
  }
  r->recover_acked = true;
}

void node_recover_spawned(struct node *n, uint64_t now)
{
  if (!n->recovering)
    return;
  n->recover_deadline = now + n->cfg.recover_timeout_ms;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (n->ranks[i].recover_asked)
      n->ranks[i].progress_at = now;
}

static void done_if_all(struct node *n, uint64_t now)
{
  uint32_t asked = 0;

  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    if (n->ranks[i].recover_asked && !n->ranks[i].recovered)
      return;
    asked += n->ranks[i].recover_asked;
  }
  if (n->phase != NODE_PH_RUNNING)
    return; /* the failed ranks are not started yet */
  n->recovering = false;
  n->recover_deadline = 0;
  if (asked == 0)
    return; /* every survivor exited meanwhile: an ordinary restart */
  n->recoveries++;
  log_info("recovery %" PRIu64 " in place: every surviving rank restored "
           "step %" PRIu64 " without exiting, %" PRIu64 " ms after the "
           "failure", n->recover_gen, n->restore_step, now - n->recover_began);
}

void node_recover_on_event(struct node *n, struct node_rank *r,
                           const Pt__Event *e)
{
  if (!n->recovering || !r->recover_asked || r->recovered)
    return;
  uint64_t want = n->restore_has ? n->restore_step : 0;
  if (e->has_step != n->restore_has || (e->has_step && e->step != want)) {
    char why[160];
    snprintf(why, sizeof(why), "rank %s restored step %" PRIu64
             ", not the restore point", NODE_RANK(n, r->rank),
             e->has_step ? e->step : 0);
    node_recover_abandon(n, why);
    return;
  }
  r->recovered = true;
  log_info("rank %s restored step %" PRIu64 " in place", NODE_RANK(n, r->rank),
           want);
  done_if_all(n, rpc_now_ms());
}

void node_recover_check(struct node *n, uint64_t now)
{
  if (!n->recovering)
    return;
  done_if_all(n, now);
  if (!n->recovering || !node_job_overdue(n, n->recover_deadline))
    return;
  char why[256] = "";
  for (uint32_t i = 0; i < n->cfg.ranks && why[0] == '\0'; i++) {
    const struct node_rank *r = &n->ranks[i];
    if (r->recover_asked && !r->recovered)
      snprintf(why, sizeof(why), "rank %s did not restore in place within "
               "%" PRIu32 " ms (--recover-timeout)", NODE_RANK(n, r->rank),
               n->cfg.recover_timeout_ms);
  }
  node_recover_abandon(n, why);
}

void node_recover_trainer_gone(struct node *n, struct node_rank *r)
{
  if (!n->recovering || !r->recover_asked)
    return;
  /* It restarts with the failed ones (its SMP forgot the request). */
  r->recover_asked = false;
  r->recover_acked = false;
  log_info("rank %s exited before restoring in place: it is restarted with "
           "the failed ranks", NODE_RANK(n, r->rank));
}
