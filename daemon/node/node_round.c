/*
 * node_round.c — commit rounds in `ptd node`, on the loop thread.
 *
 * Commits are rounds of two phases (node_plan.c): PROTECT{N} pins N on
 * every SMP, then COMMIT{N} goes to all, or ABORT{N} when some SMP no longer
 * held N. A pin outlives the node and the SMP (it lives in the shm object),
 * so pins that a round left behind, seen when an SMP (re)subscribes, are
 * resolved once every SMP is back: committed again, left to the next round,
 * or aborted. A restart's SET_RESTORE clears every pin.
 */
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"

/* A round is for a step newer than this: the committed step or the last
 * round's, whichever is newer. */
bool node_round_floor(const struct node *n, uint64_t *floor)
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
  has_floor = node_round_floor(n, &floor);
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
void node_round_vote(struct node *n, struct node_rank *r,
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
void node_commit_drive(struct node *n)
{
  uint64_t target = 0;
  bool has_target;

  if (n->phase != NODE_PH_RUNNING || !node_all_subscribed(n))
    return;
  has_target = round_target(n, &target);
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (n->ranks[i].pins_unresolved)
      resolve_pins(n, &n->ranks[i], has_target, target);
  if (!n->round.active && has_target)
    round_start(n, target);
}
