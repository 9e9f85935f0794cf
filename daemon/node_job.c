/*
 * node_job.c — the job's life in `ptd node`: phases, commits, restarts, the
 * end. Everything here runs on the loop thread, driven by node_drive().
 *
 * Phases (enum node_phase):
 *
 *   STARTING     SMPs spawned or adopted; wait until every one subscribed.
 *                Adopted trainers keep running (RUNNING); otherwise:
 *   RESTART      stop every trainer (SIGTERM, SIGKILL after 5 s), wait out
 *                the backoff, wait for every SMP to be subscribed;
 *   QUERY        STATE_QUERY{verify} to every SMP; the restore step R is the
 *                largest step every rank holds intact;
 *   SET_RESTORE  SET_RESTORE{R or none} to every SMP; R is now the
 *                committed step; then every trainer is spawned;
 *   RUNNING      commit rounds; a failed trainer (or, with
 *                --progress-timeout, one that sealed nothing that long)
 *                leads back to RESTART (at most --max-restarts within
 *                --restart-window, exponential backoff that starts over
 *                after a healthy period) unless it exited with EX_CONFIG;
 *                a trainer is done only when it said so to its SMP
 *                (Bye(done)), exit 0 alone is not enough; every trainer
 *                done ends the job, once the
 *                commit round under way (and one for the last step sealed
 *                everywhere) ended, within NODE_END_ROUNDS_MS;
 *   STOP_TRAINERS, STOP_SMPS   the end, for success, failure or a stop
 *                request: trainers first, then SMPs; shm objects unlinked
 *                after success unless --keep; then EXIT.
 *
 * A dead SMP is respawned in every phase up to RUNNING, trainers keep
 * running meanwhile; its STATE_REPLY to the new SUBSCRIBE is merged.
 *
 * Commits are rounds of two phases (node_plan.c): PROTECT{N} pins N on
 * every SMP, then COMMIT{N} goes to all, or ABORT{N} when some SMP no longer
 * held N. A pin outlives the node and the SMP (it lives in the shm object),
 * so pins that a round left behind, seen when an SMP (re)subscribes, are
 * resolved once every SMP is back: committed again, left to the next round,
 * or aborted. A restart's SET_RESTORE clears every pin.
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
#include "daemon/log.h"
#include "daemon/node.h"

#define NODE_SMP_BACK_MS 60000u  /* RESTART: SMPs subscribed again by then */
#define NODE_RESTORE_TRIES 3u    /* failed restore attempts before giving up */

static const char *role_name(enum node_role role)
{
  return role == NODE_ROLE_SMP ? "smp" : "trainer";
}

const char *node_phase_name(const struct node *n)
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

const char *node_rank_state_name(const struct node *n,
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

static void set_phase(struct node *n, enum node_phase ph)
{
  if (n->phase == ph)
    return;
  log_debug("phase %s -> %d", node_phase_name(n), (int)ph);
  n->phase = ph;
  n->drive_again = true;
  n->state_dirty = true;
}

static bool all_subscribed(const struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (!n->ranks[i].subscribed)
      return false;
  return true;
}

/* Ends the job: trainers are stopped, then SMPs, then the node exits. */
__attribute__((format(printf, 3, 4))) static void
finish(struct node *n, enum node_outcome out, const char *fmt, ...)
{
  va_list ap;

  if (n->phase >= NODE_PH_STOP_TRAINERS)
    return;
  n->outcome = out;
  va_start(ap, fmt);
  vsnprintf(n->why, sizeof(n->why), fmt, ap);
  va_end(ap);
  n->kill_at = rpc_now_ms() + NODE_TERM_GRACE_MS;
  n->round.active = false; /* answers still to come are ignored */
  set_phase(n, NODE_PH_STOP_TRAINERS);
  node_notify(n, false);
}

void node_request_stop(struct node *n, const char *by, bool escalate)
{
  if (n->phase >= NODE_PH_STOP_TRAINERS) {
    if (escalate && n->outcome == NODE_OUT_STOPPED && n->phase < NODE_PH_EXIT) {
      log_notice("stop requested again (%s): killing what is left now", by);
      n->kill_at = rpc_now_ms();
    }
  } else {
    log_info("stopping the job (%s)", by);
    finish(n, NODE_OUT_STOPPED, "stopped by %s", by);
  }
  node_drive(n);
}

/* SIGTERM to every live child of role, SIGKILL at n->kill_at, and after
 * NODE_KILL_GRACE_MS more the node stops waiting. True when none is left. */
static bool stop_role(struct node *n, enum node_role role, uint64_t now)
{
  bool none = true;

  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    struct node_child *c = role == NODE_ROLE_SMP ? r->smp : r->trainer;

    if (c == NULL || c->exited)
      continue;
    if (!c->term_sent) {
      c->term_sent = true;
      node_child_signal(c, SIGTERM);
      none = false;
    } else if (!c->kill_sent && now >= n->kill_at) {
      log_warn("%s rank %" PRIu32 " (pid %d) did not stop within %u ms; "
               "sending SIGKILL",
               role_name(role), r->rank, c->pid, NODE_TERM_GRACE_MS);
      c->kill_sent = true;
      node_child_signal(c, SIGKILL);
      none = false;
    } else if (c->kill_sent && now >= n->kill_at + NODE_KILL_GRACE_MS) {
      log_error("%s rank %" PRIu32 " (pid %d) did not exit after SIGKILL; "
                "no longer waiting for it",
                role_name(role), r->rank, c->pid);
      if (role == NODE_ROLE_SMP)
        r->smp = NULL;
      else
        r->trainer = NULL;
      node_child_abandon(c);
    } else {
      none = false;
    }
  }
  return none;
}

static void begin_restart(struct node *n, uint64_t now, bool counted,
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
        finish(n, NODE_OUT_FAILED, "%s; no restarts left (%" PRIu32
               " in the last %" PRIu32 " s: --max-restarts %" PRIu32
               ", --restart-window %" PRIu32 ")",
               why, recent, win / 1000u, n->cfg.max_restarts, win / 1000u);
      else
        finish(n, NODE_OUT_FAILED, "%s; no restarts left (--max-restarts %"
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
  /* A round under way is dropped (answers still to come are ignored): the
   * restore point's SET_RESTORE clears its pins. */
  n->round.active = false;
  n->end_deadline = 0;
  n->kill_at = now + NODE_TERM_GRACE_MS;
  n->phase_deadline = 0;
  set_phase(n, NODE_PH_RESTART);
  node_notify(n, false);
}

/* A restore attempt failed (an SMP died or refused): try again a few
 * times, then give up. */
static void retry_restore(struct node *n, uint64_t now, const char *why)
{
  n->restore_fails++;
  if (n->restore_fails > NODE_RESTORE_TRIES) {
    finish(n, NODE_OUT_FAILED, "restore failed %" PRIu32 " times: %s",
           n->restore_fails, why);
    return;
  }
  uint32_t d = node_plan_backoff_ms(n->cfg.backoff_ms, n->restore_fails,
                                    NODE_BACKOFF_CAP_MS);
  log_warn("restore attempt failed (%s); retrying in %" PRIu32 " ms", why, d);
  n->backoff_until = now + d;
  n->phase_deadline = 0;
  set_phase(n, NODE_PH_RESTART);
}

static void spawn_smp(struct node *n, struct node_rank *r, uint64_t now)
{
  struct node_child *c = NULL;
  int rc = node_child_spawn(n, r, NODE_ROLE_SMP, &c);

  r->smp_respawn_at = 0;
  if (rc != PT_OK) {
    r->smp_fails++;
    log_error("cannot start smp rank %" PRIu32 ": %s", r->rank,
              pt_strerror(rc));
    if (r->smp_fails > NODE_SMP_FAILS_MAX)
      finish(n, NODE_OUT_FAILED, "cannot start smp rank %" PRIu32 ": %s",
             r->rank, pt_strerror(rc));
    else
      r->smp_respawn_at =
          now + node_plan_backoff_ms(n->cfg.backoff_ms, r->smp_fails,
                                     NODE_BACKOFF_CAP_MS);
    return;
  }
  r->smp = c;
  r->smp_adopted = false;
  log_debug("started smp rank %" PRIu32 " (pid %d)", r->rank, c->pid);
  n->state_dirty = true;
  node_smp_connect(n, r);
}

static void spawn_trainers(struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    struct node_child *c = NULL;

    r->gone_seen = r->gone_done = false;
    r->permanent = false;
    r->why[0] = '\0';
    int rc = node_child_spawn(n, r, NODE_ROLE_TRAINER, &c);
    if (rc != PT_OK) {
      finish(n, NODE_OUT_FAILED, "cannot start trainer rank %" PRIu32
             " ('%s'): %s", r->rank, n->cfg.cmd[0], pt_strerror(rc));
      return;
    }
    if (r->starts > 0)
      r->restarts++;
    r->starts++;
    r->trainer = c;
    r->tstate = NODE_TR_RUNNING;
    r->progress_at = rpc_now_ms();
    log_info("started trainer rank %" PRIu32 " (pid %d)", r->rank, c->pid);
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

/* ---- commit rounds ---- */

/* A round is for a step newer than this: the committed step or the last
 * round's, whichever is newer. */
static bool round_floor(const struct node *n, uint64_t *floor)
{
  bool has = n->has_committed;

  *floor = n->committed;
  if (n->has_last_round && (!has || n->last_round > *floor))
    *floor = n->last_round;
  return has || n->has_last_round;
}

/* The step of the round under way, or else of the one to start next. */
static bool round_target(const struct node *n, uint64_t *step)
{
  const struct node_sealed_set *sets[NODE_MAX_RANKS];
  uint64_t floor;
  bool has_floor;

  if (n->round.active) {
    *step = n->round.step;
    return true;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    sets[i] = &n->ranks[i].sealed;
  has_floor = round_floor(n, &floor);
  return node_plan_commit_step(sets, n->cfg.ranks, has_floor, floor, step);
}

static void round_votes(const struct node *n, enum node_vote *votes)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    votes[i] = n->ranks[i].vote;
}

static void round_end(struct node *n)
{
  n->round.active = false;
  n->has_last_round = true;
  n->last_round = n->round.step;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    node_sealed_prune(&n->ranks[i].sealed, n->round.step);
  n->drive_again = true;
}

/* Sends the phase's request to every rank whose vote is WAIT; a request
 * that cannot be sent is a LOST vote. */
static void round_send(struct node *n, enum node_req_kind kind)
{
  n->round.phase = kind;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->vote != NODE_VOTE_WAIT)
      continue;
    int rc = node_smp_request(n, r, kind, n->round.step);
    if (rc == PT_OK)
      continue;
    r->vote = NODE_VOTE_LOST;
    if (kind == NODE_REQ_PROTECT && n->round.why[0] == '\0')
      snprintf(n->round.why, sizeof(n->round.why),
               "smp rank %" PRIu32 " could not be asked (%s)", r->rank,
               pt_strerror(rc));
    else if (kind == NODE_REQ_COMMIT)
      log_warn("smp rank %" PRIu32 " did not take the commit of step %" PRIu64
               " (%s); it keeps the step pinned until it is back",
               r->rank, n->round.step, pt_strerror(rc));
  }
}

/* Every rank protected the step: it is committed now. Every rank holds it
 * (pinned or committed) until the COMMITs arrive, and a node started later
 * finds those pins and commits them again, so the step counts as committed
 * from this moment on. */
static void round_commit(struct node *n)
{
  uint64_t step = n->round.step;

  n->has_committed = true;
  n->committed = step;
  n->committed_unix_ms = node_unix_ms();
  n->commits++;
  n->committed_since = true;
  n->state_dirty = true;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    n->ranks[i].vote = NODE_VOTE_WAIT;
  round_send(n, NODE_REQ_COMMIT);
  /* Per-step lines are debug; at the default level the first commit after
   * a (re)start says training is under way, then one line a minute. */
  uint64_t now = rpc_now_ms();
  if (n->commit_logged_ms == 0 ||
      now >= n->commit_logged_ms + NODE_COMMIT_LOG_MS) {
    log_info("commit step %" PRIu64, step);
    n->commit_logged_ms = now;
  } else {
    log_debug("commit step %" PRIu64, step);
  }
  node_notify(n, false);
}

/* Some rank could not protect the step: the pins the others took go. */
static void round_abort(struct node *n)
{
  uint32_t asked = 0;

  /* A rank whose slot went to a newer step meanwhile is the usual race
   * between rounds and snapshots: debug. An SMP that did not answer is not. */
  bool benign = false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    benign = benign || n->ranks[i].vote == NODE_VOTE_NO;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    benign = benign && n->ranks[i].vote != NODE_VOTE_LOST;
  log_at_(benign ? LOG_LVL_DEBUG : LOG_LVL_NOTICE,
          "step %" PRIu64 " not committed: %s", n->round.step,
          n->round.why[0] != '\0' ? n->round.why : "no rank answered");
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    bool to = node_plan_abort_to(r->vote) && r->subscribed;
    r->vote = to ? NODE_VOTE_WAIT : NODE_VOTE_NONE;
    asked += to;
  }
  if (asked > 0)
    round_send(n, NODE_REQ_ABORT);
}

/* Moves the round on once the votes of its phase are in. */
static void round_check(struct node *n)
{
  enum node_vote votes[NODE_MAX_RANKS];

  if (!n->round.active)
    return;
  round_votes(n, votes);
  if (n->round.phase == NODE_REQ_PROTECT) {
    switch (node_plan_protect_verdict(votes, n->cfg.ranks)) {
    case NODE_ROUND_WAIT:
      return;
    case NODE_ROUND_COMMIT:
      round_commit(n);
      break;
    case NODE_ROUND_ABORT:
      round_abort(n);
      break;
    }
    round_votes(n, votes);
  }
  if (node_plan_votes_in(votes, n->cfg.ranks))
    round_end(n);
}

static void round_start(struct node *n, uint64_t step)
{
  n->round.active = true;
  n->round.id = ++n->rounds;
  n->round.step = step;
  n->round.why[0] = '\0';
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    n->ranks[i].vote = NODE_VOTE_WAIT;
  log_debug("commit round %" PRIu64 ": protecting step %" PRIu64,
            n->round.id, step);
  round_send(n, NODE_REQ_PROTECT);
  round_check(n);
}

/* One SMP's answer in the round (or LOST: none will come). */
static void round_vote(struct node *n, struct node_rank *r,
                       const struct node_req *q, enum node_vote vote,
                       const char *text)
{
  if (!n->round.active || q->round != n->round.id ||
      q->kind != n->round.phase || r->vote != NODE_VOTE_WAIT)
    return; /* from a round that is over */
  r->vote = vote;
  if (q->kind == NODE_REQ_PROTECT && vote != NODE_VOTE_YES &&
      n->round.why[0] == '\0') {
    if (vote == NODE_VOTE_NO)
      snprintf(n->round.why, sizeof(n->round.why),
               "rank %" PRIu32 " no longer holds it", r->rank);
    else
      snprintf(n->round.why, sizeof(n->round.why),
               "smp rank %" PRIu32 " did not answer (%s)", r->rank, text);
  } else if (q->kind == NODE_REQ_COMMIT && vote != NODE_VOTE_YES) {
    /* Its pin stays; the commit is sent again when it subscribes. */
    log_warn("smp rank %" PRIu32 " did not take the commit of step %" PRIu64
             " (%s); it keeps the step pinned until it is back",
             r->rank, q->step, text);
  }
  round_check(n);
}

/* The pins an SMP reported when it subscribed (r->view), once every SMP is
 * subscribed: see node_plan_pin. */
static void resolve_pins(struct node *n, struct node_rank *r, bool has_round,
                         uint64_t round_step)
{
  r->pins_unresolved = false;
  for (uint32_t k = 0; k < r->nview; k++) {
    const struct node_slot_view *v = &r->view[k];
    switch (node_plan_pin(v->state, v->step, n->has_committed, n->committed,
                          has_round, round_step)) {
    case NODE_PIN_NONE:
      break;
    case NODE_PIN_COMMIT:
      log_info("smp rank %" PRIu32 ": completing the commit of step %" PRIu64,
               r->rank, v->step);
      node_smp_request(n, r, NODE_REQ_RECOMMIT, v->step);
      break;
    case NODE_PIN_ABORT:
      log_info("smp rank %" PRIu32 ": releasing step %" PRIu64
               ", pinned by a commit that did not finish",
               r->rank, v->step);
      node_smp_request(n, r, NODE_REQ_UNPIN, v->step);
      break;
    }
  }
}

/* Resolves pins left behind, then starts a round when none runs and a step
 * newer than the floor is sealed by every rank. */
static void commit_drive(struct node *n)
{
  uint64_t target = 0;
  bool has_target;

  if (n->phase != NODE_PH_RUNNING || !all_subscribed(n))
    return;
  has_target = round_target(n, &target);
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (n->ranks[i].pins_unresolved)
      resolve_pins(n, &n->ranks[i], has_target, target);
  if (!n->round.active && has_target)
    round_start(n, target);
}

/* ---- what the SMPs say ---- */

void node_on_state_reply(struct node *n, struct node_rank *r,
                         enum node_req_kind kind, const Pt__StateReply *m)
{
  if (m->rank != r->rank)
    log_warn("smp rank %" PRIu32 " reports rank %" PRIu32, r->rank, m->rank);
  r->has_store = m->has_has_store && m->has_store;
  if (m->has_bytes_held)
    r->bytes_held = m->bytes_held;
  r->trainer_done_reported = m->has_trainer_done && m->trainer_done;
  r->trainer_pid_reported = m->has_trainer_pid ? m->trainer_pid : 0;
  r->nview = 0;
  for (size_t k = 0; k < m->n_slots && r->nview < SNAP_MAX_SLOTS; k++) {
    const Pt__SlotInfo *s = m->slots[k];
    r->view[r->nview++] = (struct node_slot_view){
        .step = s->step, .state = s->state,
        .intact = s->has_intact && s->intact};
  }
  if (kind == NODE_REQ_VERIFY) {
    r->view_verified = true;
    return;
  }
  if (kind == NODE_REQ_DRAIN)
    r->drained = true;
  if (kind != NODE_REQ_SUBSCRIBE)
    return; /* after SUBSCRIBE, events tell what is sealed */
  r->pins_unresolved = true;
  if (n->phase != NODE_PH_STARTING && n->phase != NODE_PH_RUNNING)
    return; /* a restore point is being chosen: its SET_RESTORE decides */
  /* A fresh view: what this rank holds sealed and not committed, and (when
   * adopting) a commit the SMPs took that node.state did not record in
   * time. */
  uint64_t floor;
  bool has_floor = round_floor(n, &floor);
  r->sealed.n = 0;
  for (uint32_t k = 0; k < r->nview; k++) {
    const struct node_slot_view *v = &r->view[k];
    bool newer = !has_floor || v->step > floor;
    if ((v->state == SNAP_SEALED || v->state == SNAP_PROTECTED) && newer) {
      node_sealed_add(&r->sealed, v->step);
      if (!r->has_last_sealed || v->step > r->last_sealed) {
        r->has_last_sealed = true;
        r->last_sealed = v->step;
      }
    }
    if (v->state == SNAP_COMMITTED && newer && n->phase == NODE_PH_STARTING &&
        n->adopting) {
      log_info("adopted committed step %" PRIu64 " from smp rank %" PRIu32,
               v->step, r->rank);
      n->has_committed = true;
      n->committed = v->step;
      n->committed_unix_ms = 0;
      for (uint32_t i = 0; i < n->cfg.ranks; i++)
        node_sealed_prune(&n->ranks[i].sealed, v->step);
      n->state_dirty = true;
      has_floor = round_floor(n, &floor);
    }
  }
  n->drive_again = true;
}

void node_on_reply(struct node *n, struct node_rank *r,
                   const struct node_req *q, int status, const char *message)
{
  const char *text = message != NULL && message[0] != '\0'
                         ? message : pt_strerror(status);

  switch (q->kind) {
  case NODE_REQ_PROTECT:
  case NODE_REQ_COMMIT:
  case NODE_REQ_ABORT:
    round_vote(n, r, q, status == 0 ? NODE_VOTE_YES : NODE_VOTE_NO, text);
    return;
  case NODE_REQ_RECOMMIT:
    if (status < 0)
      log_warn("smp rank %" PRIu32 " did not take the commit of step %" PRIu64
               " again: %s",
               r->rank, q->step, text);
    return;
  case NODE_REQ_UNPIN:
    if (status < 0)
      log_debug("smp rank %" PRIu32 ": step %" PRIu64 " was no longer "
                "pinned: %s", r->rank, q->step, text);
    return;
  case NODE_REQ_SET_RESTORE:
    break;
  case NODE_REQ_TRAINER_SET:
    /* -ESRCH: the trainer exited already; its exit is handled anyway. */
    if (status < 0)
      log_info("smp rank %" PRIu32 " did not take the trainer's announcement: "
               "%s", r->rank, LOG_ESC(text));
    return;
  default:
    return;
  }
  if (n->phase != NODE_PH_SET_RESTORE)
    return;
  if (status < 0) {
    log_error("smp rank %" PRIu32 " cannot set the restore point: %s",
              r->rank, text);
    n->attempt_failed = true;
  } else {
    r->set_restore_ok = true;
  }
}

void node_on_req_failed(struct node *n, struct node_rank *r,
                        const struct node_req *q, int err)
{
  if ((q->kind == NODE_REQ_VERIFY && n->phase == NODE_PH_QUERY) ||
      (q->kind == NODE_REQ_SET_RESTORE && n->phase == NODE_PH_SET_RESTORE)) {
    log_warn("smp rank %" PRIu32 ": restore request failed: %s", r->rank,
             pt_strerror(err));
    n->attempt_failed = true;
  } else if (q->kind == NODE_REQ_PROTECT || q->kind == NODE_REQ_COMMIT ||
             q->kind == NODE_REQ_ABORT) {
    round_vote(n, r, q, NODE_VOTE_LOST, pt_strerror(err));
  } else if (q->kind == NODE_REQ_DRAIN) {
    r->drained = true; /* nothing more will come from it */
  }
}

void node_on_event(struct node *n, struct node_rank *r, const Pt__Event *e)
{
  if (e->rank != r->rank)
    log_warn("smp rank %" PRIu32 " sent an event for rank %" PRIu32,
             r->rank, e->rank);
  if (e->kind == PT__EVENT_KIND__EVENT_SEALED && e->has_step) {
    log_debug("rank %" PRIu32 " sealed step %" PRIu64, r->rank, e->step);
    r->progress_at = rpc_now_ms();
    if (!r->has_last_sealed || e->step > r->last_sealed) {
      r->has_last_sealed = true;
      r->last_sealed = e->step;
    }
    if (n->phase != NODE_PH_RUNNING && n->phase != NODE_PH_STARTING)
      return;
    uint64_t floor;
    if (!round_floor(n, &floor) || e->step > floor)
      node_sealed_add(&r->sealed, e->step);
    /* The shm object appeared with the first snapshot: learn its size. */
    bool asking = false;
    for (uint32_t k = 0; k < r->nreqs; k++)
      asking = asking || r->reqs[k].kind == NODE_REQ_STATE;
    if (r->bytes_held == 0 && r->subscribed && !asking)
      node_smp_request(n, r, NODE_REQ_STATE, 0);
    commit_drive(n);
  } else if (e->kind == PT__EVENT_KIND__EVENT_HELLO_REFUSED) {
    /* The trainer's regions do not fit the budget or /dev/shm: no restart
     * can cure that, whatever the trainer does with the error. */
    int status = e->has_status ? e->status : 0;
    if ((status == PT_EBUDGET || status == -ENOSPC) &&
        n->phase <= NODE_PH_RUNNING)
      finish(n, NODE_OUT_FAILED,
             "smp rank %" PRIu32 " refused its trainer: %s (not restarted: "
             "raise --memory-budget or make room in /dev/shm)",
             r->rank, e->message != NULL ? e->message : pt_strerror(status));
  } else if (e->kind == PT__EVENT_KIND__EVENT_TRAINER_GONE) {
    r->gone_seen = true;
    r->gone_done = e->has_done && e->done;
    log_debug("rank %" PRIu32 ": trainer gone (done=%d)", r->rank,
              (int)r->gone_done);
    if (r->tstate == NODE_TR_GONE_WAIT) {
      r->tstate = r->gone_done ? NODE_TR_DONE : NODE_TR_FAILED;
      if (!r->gone_done)
        snprintf(r->why, sizeof(r->why),
                 "trainer rank %" PRIu32 " ended without saying it finished",
                 r->rank);
      n->drive_again = true;
    }
  }
}

/* ---- children ---- */

void node_child_exited(struct node *n, struct node_child *c, bool known,
                       int64_t status, int term_signal)
{
  struct node_rank *r = c->rank;
  char how[64];

  if (known)
    node_plan_exit_text(how, sizeof(how), status, term_signal);
  else
    snprintf(how, sizeof(how), "exited (adopted: status unknown)");
  n->state_dirty = true;

  if (c->role == NODE_ROLE_SMP) {
    if (r->smp == c)
      r->smp = NULL;
    log_info("smp rank %" PRIu32 " (pid %d) %s", r->rank, c->pid, how);
    r->smp_adopted = false;
    node_smp_disconnect(r);
    if (n->phase <= NODE_PH_RUNNING) {
      bool config = known && term_signal == 0 &&
                    (status == NODE_EXIT_USAGE || status == NODE_EX_CONFIG);
      r->smp_fails++;
      if (config)
        finish(n, NODE_OUT_FAILED, "smp rank %" PRIu32 " %s (configuration)",
               r->rank, how);
      else if (r->smp_fails > NODE_SMP_FAILS_MAX)
        finish(n, NODE_OUT_FAILED,
               "smp rank %" PRIu32 " died %" PRIu32 " times before answering",
               r->rank, r->smp_fails);
      else {
        uint32_t d = r->smp_fails <= 1
                         ? 0
                         : node_plan_backoff_ms(n->cfg.backoff_ms,
                                                r->smp_fails - 1,
                                                NODE_BACKOFF_CAP_MS);
        r->smp_restarts++;
        log_info("restarting smp rank %" PRIu32 " in %" PRIu32 " ms", r->rank,
                 d);
        r->smp_respawn_at = rpc_now_ms() + d;
      }
    }
    node_drive(n);
    return;
  }

  if (r->trainer == c)
    r->trainer = NULL;
  log_info("trainer rank %" PRIu32 " (pid %d) %s", r->rank, c->pid, how);
  if (n->phase != NODE_PH_STARTING && n->phase != NODE_PH_RUNNING) {
    /* Stopped on purpose (a restart or the end). */
    r->tstate = NODE_TR_IDLE;
  } else if (!known) {
    if (r->gone_seen) {
      r->tstate = r->gone_done ? NODE_TR_DONE : NODE_TR_FAILED;
      snprintf(r->why, sizeof(r->why), "trainer rank %" PRIu32 " (pid %d) %s",
               r->rank, c->pid, r->gone_done ? "finished" : "ended unfinished");
    } else {
      r->tstate = NODE_TR_GONE_WAIT;
      r->gone_deadline = rpc_now_ms() + NODE_GONE_WAIT_MS;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %" PRIu32 " (pid %d) ended without telling its "
               "smp it was done",
               r->rank, c->pid);
    }
  } else if (status == 0 && term_signal == 0) {
    /* Exit 0 is not enough (a wrapper script exits 0 whatever its trainer
     * did): only a trainer that told its SMP it finished (Bye(done)) is
     * done. The SMP's word may still be on its way. */
    if (r->gone_seen && r->gone_done) {
      r->tstate = NODE_TR_DONE;
    } else if (r->gone_seen) {
      r->tstate = NODE_TR_FAILED;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %" PRIu32 " (pid %d) exited with status 0 but "
               "left its smp without saying it finished",
               r->rank, c->pid);
    } else {
      r->tstate = NODE_TR_GONE_WAIT;
      r->gone_deadline = rpc_now_ms() + NODE_GONE_WAIT_MS;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %" PRIu32 " (pid %d) exited with status 0 "
               "without telling its smp it finished",
               r->rank, c->pid);
    }
  } else {
    r->tstate = NODE_TR_FAILED;
    r->permanent = term_signal == 0 && status == NODE_EX_CONFIG;
    snprintf(r->why, sizeof(r->why), "trainer rank %" PRIu32 " (pid %d) %s%s",
             r->rank, c->pid, how,
             r->permanent ? " (configuration error: not restarted)" : "");
  }
  node_drive(n);
}

/* ---- phases ---- */

static void step_starting(struct node *n, uint64_t now)
{
  if (!all_subscribed(n))
    return;
  if (!n->adopting) {
    begin_restart(n, now, false, "");
    return;
  }
  /* Adopted: a trainer that is gone finished only if its (adopted) SMP
   * heard it say so. */
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->tstate != NODE_TR_IDLE)
      continue;
    if (r->smp_adopted && r->trainer_done_reported &&
        r->trainer_pid_reported == 0) {
      log_info("trainer rank %" PRIu32 " finished while the node was away",
               r->rank);
      r->tstate = NODE_TR_DONE;
    } else {
      r->tstate = NODE_TR_FAILED;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %" PRIu32 " was gone when the node restarted",
               r->rank);
    }
  }
  n->adopting = false;
  n->running_since = now;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    n->ranks[i].progress_at = now;
  set_phase(n, NODE_PH_RUNNING);
  commit_drive(n); /* the pins the SMPs reported first */
  node_notify(n, true);
}

static void step_restart(struct node *n, uint64_t now)
{
  if (!stop_role(n, NODE_ROLE_TRAINER, now) || now < n->backoff_until)
    return;
  if (!all_subscribed(n)) {
    if (n->phase_deadline == 0)
      n->phase_deadline = now + NODE_SMP_BACK_MS;
    else if (now >= n->phase_deadline)
      finish(n, NODE_OUT_FAILED, "the smps did not answer within %u ms",
             NODE_SMP_BACK_MS);
    return;
  }
  n->phase_deadline = 0;
  n->attempt_failed = false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    r->view_verified = false;
    r->set_restore_ok = false;
    if (node_smp_request(n, r, NODE_REQ_VERIFY, 0) != PT_OK)
      n->attempt_failed = true;
  }
  set_phase(n, NODE_PH_QUERY);
}

static void step_query(struct node *n, uint64_t now)
{
  struct node_rank_slots views[NODE_MAX_RANKS];

  if (n->attempt_failed) {
    retry_restore(n, now, "a state query failed");
    return;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    if (!n->ranks[i].view_verified)
      return; /* the request deadlines bound this wait */
    views[i].slots = n->ranks[i].view;
    views[i].n = n->ranks[i].nview;
  }
  /* An object left by an earlier run is used as it is, whatever the
   * budget says now: refuse it before any trainer starts. */
  for (uint32_t i = 0; i < n->cfg.ranks && n->cfg.memory_budget != 0; i++) {
    const struct node_rank *r = &n->ranks[i];
    uint64_t share = n->cfg.memory_budget / n->cfg.ranks;
    if (r->has_store && r->bytes_held > share) {
      finish(n, NODE_OUT_FAILED,
             "rank %" PRIu32 "'s snapshot object holds %" PRIu64 " bytes, "
             "more than its share of --memory-budget (%" PRIu64 " bytes of %"
             PRIu64 "): raise the budget or start the job fresh",
             r->rank, r->bytes_held, share, n->cfg.memory_budget);
      return;
    }
  }
  n->restore_has = node_plan_restore_step(views, n->cfg.ranks,
                                          &n->restore_step);
  /* Damaged snapshots are reported; with nothing intact left the job stops
   * rather than restore bad bytes or silently start over. */
  char damaged[160] = "";
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    const struct node_rank *r = &n->ranks[i];
    char held[256] = "";
    size_t used = 0;
    for (uint32_t k = 0; k < r->nview && used < sizeof(held) - 1; k++) {
      const struct node_slot_view *v = &r->view[k];
      if (v->state == SNAP_FREE || v->state == SNAP_WRITING)
        continue;
      int w = snprintf(held + used, sizeof(held) - used, "%sstep %" PRIu64
                       " %s%s", used > 0 ? ", " : "", v->step,
                       snap_state_name(v->state), v->intact ? "" : " (damaged)");
      if (w > 0)
        used += (size_t)w < sizeof(held) - used ? (size_t)w : sizeof(held) - used - 1;
    }
    log_info("rank %" PRIu32 " holds %s", r->rank,
             used > 0 ? held : "no snapshot");
    for (uint32_t k = 0; k < r->nview; k++) {
      const struct node_slot_view *v = &r->view[k];
      bool kept = v->state == SNAP_SEALED || v->state == SNAP_PROTECTED ||
                  v->state == SNAP_COMMITTED;
      if (!kept || v->intact)
        continue;
      log_warn("rank %" PRIu32 ": step %" PRIu64
               " is not intact (checksum mismatch); never restored",
               r->rank, v->step);
      if (damaged[0] == '\0')
        snprintf(damaged, sizeof(damaged),
                 "rank %" PRIu32 " step %" PRIu64 " fails its checksums",
                 r->rank, v->step);
    }
  }
  if (!n->restore_has && damaged[0] != '\0') {
    finish(n, NODE_OUT_FAILED,
           "no snapshot step is intact on every rank (%s); refusing to "
           "restore damaged state or to start over",
           damaged);
    return;
  }
  /* A committed step that no longer stands on every rank (a rank's object
   * was lost, replaced, or its slot records fail their checksums): starting
   * over would throw the job's work away behind one info line. */
  if (!n->restore_has && n->has_committed) {
    char lost[160] = "";
    for (uint32_t i = 0; i < n->cfg.ranks && lost[0] == '\0'; i++) {
      const struct node_rank *r = &n->ranks[i];
      bool has = false;
      for (uint32_t k = 0; k < r->nview; k++)
        has = has || (r->view[k].step == n->committed && r->view[k].intact &&
                      r->view[k].state != SNAP_FREE &&
                      r->view[k].state != SNAP_WRITING);
      if (!has)
        snprintf(lost, sizeof(lost), "rank %" PRIu32 " no longer holds it%s",
                 r->rank, r->has_store ? "" : " (no snapshot object)");
    }
    finish(n, NODE_OUT_FAILED,
           "committed step %" PRIu64 " is not held intact by every rank "
           "(%s), and no older step is; refusing to start over and lose it: "
           "start with --fresh to train from the beginning",
           n->committed, lost[0] != '\0' ? lost : "no common step");
    return;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    uint64_t arg = n->restore_has ? n->restore_step : UINT64_MAX;
    if (node_smp_request(n, &n->ranks[i], NODE_REQ_SET_RESTORE, arg) != PT_OK)
      n->attempt_failed = true;
  }
  set_phase(n, NODE_PH_SET_RESTORE);
}

static void step_set_restore(struct node *n, uint64_t now)
{
  if (n->attempt_failed) {
    retry_restore(n, now, "setting the restore point failed");
    return;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (!n->ranks[i].set_restore_ok)
      return;
  n->restore_fails = 0;
  if (n->restore_has) {
    log_info("restore from step %" PRIu64, n->restore_step);
    if (!n->has_committed || n->committed != n->restore_step)
      n->committed_unix_ms = 0; /* an older step: its age is unknown */
    n->has_committed = true;
    n->committed = n->restore_step;
    n->restores++;
  } else {
    log_info("no snapshot: starting fresh");
    n->has_committed = false;
    n->committed_unix_ms = 0;
  }
  /* SET_RESTORE cleared every pin and every newer step. */
  n->has_last_round = false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    n->ranks[i].sealed.n = 0;
    n->ranks[i].has_last_sealed = false;
    n->ranks[i].pins_unresolved = false;
  }
  set_phase(n, NODE_PH_RUNNING);
  n->running_since = now;
  n->committed_since = false;
  spawn_trainers(n);
  if (n->phase == NODE_PH_RUNNING)
    node_notify(n, true);
}

/* --progress-timeout: the deadline of a rank whose trainer runs (0 none). */
static uint64_t progress_deadline(const struct node *n,
                                  const struct node_rank *r)
{
  if (n->cfg.progress_timeout_ms == 0 || n->phase != NODE_PH_RUNNING ||
      r->tstate != NODE_TR_RUNNING || r->trainer == NULL ||
      r->trainer->term_sent || r->progress_at == 0)
    return 0;
  return r->progress_at + n->cfg.progress_timeout_ms;
}

/* A rank alive but stuck (no seal within --progress-timeout): the first
 * one, or NULL. */
static struct node_rank *stuck_rank(struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (node_overdue(n, progress_deadline(n, &n->ranks[i])))
      return &n->ranks[i];
  return NULL;
}

static void step_running(struct node *n, uint64_t now)
{
  commit_drive(n);
  struct node_rank *failed = NULL;
  bool all_done = true;
  struct node_rank *stuck = stuck_rank(n);

  if (stuck != NULL) {
    char why[160];
    snprintf(why, sizeof(why),
             "trainer rank %" PRIu32 " (pid %d) made no progress: no "
             "snapshot sealed for %" PRIu32 " s (--progress-timeout)",
             stuck->rank, stuck->trainer->pid,
             n->cfg.progress_timeout_ms / 1000u);
    log_warn("%s; restarting the job", why);
    begin_restart(n, now, true, why);
    return;
  }

  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->tstate == NODE_TR_FAILED && failed == NULL)
      failed = r;
    if (r->tstate != NODE_TR_DONE)
      all_done = false;
  }
  if (failed != NULL) {
    if (failed->permanent)
      finish(n, NODE_OUT_FAILED, "%s", failed->why);
    else
      begin_restart(n, now, true, failed->why);
  } else if (all_done) {
    /* The last steps are committed first. A trainer's last seal may still
     * be on its way from the SMP: a STATE_QUERY to every SMP is answered
     * after every event it sent before, so once all are answered, every
     * seal is known; the rounds for them end within their request
     * deadlines. But no longer than this. */
    bool heard = true;
    if (n->end_deadline == 0) {
      n->end_deadline = now + NODE_END_ROUNDS_MS;
      for (uint32_t i = 0; i < n->cfg.ranks; i++) {
        struct node_rank *r = &n->ranks[i];
        r->drained = !r->subscribed ||
                     node_smp_request(n, r, NODE_REQ_DRAIN, 0) != PT_OK;
      }
    }
    for (uint32_t i = 0; i < n->cfg.ranks; i++)
      heard = heard && n->ranks[i].drained;
    if ((n->round.active || !heard) && now < n->end_deadline)
      return;
    if (n->round.active)
      log_warn("the commit of step %" PRIu64 " did not end within %u ms of "
               "the job's end; stopping anyway",
               n->round.step, NODE_END_ROUNDS_MS);
    finish(n, NODE_OUT_DONE, "job completed");
  }
}

static void finish_exit(struct node *n)
{
  if (n->outcome == NODE_OUT_DONE && !n->cfg.keep) {
    for (uint32_t i = 0; i < n->cfg.ranks; i++) {
      char name[256];
      if (snap_store_name(name, sizeof(name), n->cfg.shm_prefix, n->cfg.job,
                          i) != PT_OK)
        continue;
      /* Only this instance's own objects: a name reused by another job
       * instance (another state dir) is not ours to remove. */
      struct snap_store *st = NULL;
      int rc = snap_store_open(&st, name, NULL, 0);
      if (rc == -ENOENT)
        continue;
      bool ours = rc == PT_OK &&
                  memcmp(snap_store_instance(st), n->instance,
                         SNAP_INSTANCE_BYTES) == 0;
      snap_store_close(st);
      if (!ours) {
        log_warn("left shm object '%s' in place: %s", name,
                 rc == PT_OK ? "it belongs to another job instance"
                             : pt_strerror(rc));
        continue;
      }
      rc = snap_store_unlink(name);
      if (rc != PT_OK && rc != -ENOENT)
        log_warn("cannot remove shm object '%s': %s", name, pt_strerror(rc));
      else if (rc == PT_OK)
        log_debug("removed shm object '%s'", name);
    }
  }
  if (n->outcome == NODE_OUT_DONE && !n->cfg.keep) {
    unlink(n->state_path); /* nothing left to resume */
  } else {
    /* The snapshots stay; only `ptd node --resume` continues them. */
    n->instance_ended = true;
    node_save(n);
  }
  switch (n->outcome) {
  case NODE_OUT_DONE:
    log_info("job completed");
    n->exit_code = NODE_EXIT_OK;
    break;
  case NODE_OUT_STOPPED:
    log_info("job stopped");
    n->exit_code = NODE_EXIT_STOPPED;
    break;
  default:
    log_error("job failed: %s", n->why);
    n->exit_code = NODE_EXIT_FAILED;
    break;
  }
  n->phase = NODE_PH_EXIT;
  node_shutdown(n);
}

static void step(struct node *n, uint64_t now)
{
  for (uint32_t i = 0; i < n->cfg.ranks && n->phase <= NODE_PH_RUNNING; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->smp == NULL && r->smp_respawn_at != 0 && now >= r->smp_respawn_at)
      spawn_smp(n, r, now);
    if (r->tstate == NODE_TR_GONE_WAIT && node_overdue(n, r->gone_deadline))
      r->tstate = NODE_TR_FAILED; /* r->why says so already */
  }
  switch (n->phase) {
  case NODE_PH_STARTING:
    step_starting(n, now);
    break;
  case NODE_PH_RESTART:
    step_restart(n, now);
    break;
  case NODE_PH_QUERY:
    step_query(n, now);
    break;
  case NODE_PH_SET_RESTORE:
    step_set_restore(n, now);
    break;
  case NODE_PH_RUNNING:
    step_running(n, now);
    break;
  case NODE_PH_STOP_TRAINERS:
    if (stop_role(n, NODE_ROLE_TRAINER, now)) {
      n->kill_at = now + NODE_TERM_GRACE_MS;
      set_phase(n, NODE_PH_STOP_SMPS);
    }
    break;
  case NODE_PH_STOP_SMPS:
    if (stop_role(n, NODE_ROLE_SMP, now))
      finish_exit(n);
    break;
  case NODE_PH_EXIT:
    break;
  }
}

/* The earliest moment something is due. */
static uint64_t next_deadline(const struct node *n, uint64_t now)
{
  uint64_t d = UINT64_MAX;
  bool stopping = n->phase == NODE_PH_RESTART ||
                  n->phase == NODE_PH_STOP_TRAINERS ||
                  n->phase == NODE_PH_STOP_SMPS;

#define CONSIDER(t) do { if ((t) != 0 && (t) < d) d = (t); } while (0)
  if (n->phase == NODE_PH_RESTART) {
    if (n->backoff_until > now)
      CONSIDER(n->backoff_until);
    CONSIDER(n->phase_deadline);
  }
  if (n->phase == NODE_PH_RUNNING)
    CONSIDER(n->end_deadline);
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    const struct node_rank *r = &n->ranks[i];
    const struct node_child *kids[2] = {r->trainer, r->smp};
    if (stopping)
      for (int k = 0; k < 2; k++)
        if (kids[k] != NULL && !kids[k]->exited && kids[k]->term_sent)
          CONSIDER(kids[k]->kill_sent ? n->kill_at + NODE_KILL_GRACE_MS
                                      : n->kill_at);
    if (n->phase <= NODE_PH_RUNNING) {
      if (r->smp == NULL)
        CONSIDER(r->smp_respawn_at);
      if (r->tstate == NODE_TR_GONE_WAIT)
        CONSIDER(r->gone_deadline);
      CONSIDER(progress_deadline(n, r));
    }
    uint64_t s = node_smp_next_deadline(r);
    if (s != UINT64_MAX)
      CONSIDER(s);
  }
#undef CONSIDER
  return d;
}

static void on_timer(uv_timer_t *t)
{
  node_drive(t->data);
}

bool node_overdue(const struct node *n, uint64_t deadline)
{
  return deadline != 0 && deadline <= n->io_read_ms;
}

static void on_io_prepare(uv_prepare_t *h)
{
  struct node *n = h->data;

  n->io_poll_ms = rpc_now_ms();
}

static void on_io_check(uv_check_t *h)
{
  struct node *n = h->data;

  n->io_read_ms = n->io_poll_ms;
}

void node_io_clock_open(struct node *n)
{
  uv_prepare_init(n->loop, &n->io_prepare);
  uv_check_init(n->loop, &n->io_check);
  n->io_prepare.data = n;
  n->io_check.data = n;
  uv_prepare_start(&n->io_prepare, on_io_prepare);
  uv_check_start(&n->io_check, on_io_check);
  uv_unref((uv_handle_t *)&n->io_prepare);
  uv_unref((uv_handle_t *)&n->io_check);
}

void node_drive(struct node *n)
{
  uint64_t now;

  if (n->in_drive) {
    n->drive_again = true;
    return;
  }
  n->in_drive = true;
  do {
    n->drive_again = false;
    now = rpc_now_ms();
    if (n->phase != NODE_PH_EXIT)
      node_smp_tick(n, now);
    step(n, now);
  } while (n->drive_again && n->phase != NODE_PH_EXIT);
  n->in_drive = false;
  if (n->phase == NODE_PH_EXIT)
    return;
  if (n->state_dirty)
    node_save(n);
  uint64_t d = next_deadline(n, now);
  n->timer.data = n;
  if (d == UINT64_MAX) {
    uv_timer_stop(&n->timer);
  } else {
    now = rpc_now_ms();
    uv_timer_start(&n->timer, on_timer, d > now ? d - now : 1, 0);
  }
}
