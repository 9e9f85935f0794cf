/*
 * node_decide_local.c — the standalone decider of `ptd node`
 * (node_decider.h): the node itself decides its commits and its restores.
 *
 * Commits are rounds of the commit module (daemon/commit/commit.h) over
 * the node's SMPs, one voter per local rank: PIN{N} pins N on every SMP,
 * then COMMIT{N} goes to all, or UNPIN{N} when some SMP no longer held N.
 * The module decides; this file sends its requests (node_smp_request, each
 * answered by the request id the module keeps as its ticket), feeds back
 * the answers and records the verdict in struct node.
 *
 * A pin outlives the node and the SMP (it lives in the shm object), so
 * pins that a round left behind, seen when an SMP (re)subscribes, are
 * resolved once every SMP is back (node_plan_pin): committed again, left
 * to the next round, or released. A restart's SET_RESTORE clears every
 * pin. The restore step is the largest step every rank holds intact
 * (node_plan_restore_step).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/commit/commit.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"

struct local {
  struct node *n;
  struct commit c;
  bool *pins_unresolved; /* per rank: its SUBSCRIBE view's pins wait for
                            node_plan_pin once every SMP is back */
};

static struct local *L(const struct node *n)
{
  return n->decider_data;
}

/* ---- what the commit module asks for ---- */

static int on_send(void *ctx, uint32_t voter, enum commit_phase phase,
                   uint64_t round, uint64_t step, uint64_t *ticket)
{
  struct local *l = ctx;
  struct node_rank *r = &l->n->ranks[voter];
  enum node_req_kind kind = phase == COMMIT_PH_PIN      ? NODE_REQ_PIN
                            : phase == COMMIT_PH_COMMIT ? NODE_REQ_COMMIT
                                                        : NODE_REQ_UNPIN;
  (void)round;
  if (!r->subscribed)
    return -ENOTCONN;
  return node_smp_request(l->n, r, kind, step, ticket);
}

/* The pin phase is over. Committed: every rank holds the step (pinned or
 * committed) until the COMMITs arrive, and a node started later finds
 * those pins and commits them again, so it counts as committed now. */
static void on_verdict(void *ctx, const struct commit_outcome *o)
{
  struct local *l = ctx;
  struct node *n = l->n;

  if (!o->committed) {
    char why[COMMIT_WHY_MAX + 64];
    if (o->voter == UINT32_MAX)
      snprintf(why, sizeof(why), "no rank answered");
    else if (o->vote == COMMIT_VOTE_NO)
      snprintf(why, sizeof(why), "rank %" PRIu32 " no longer holds it",
               o->voter);
    else
      snprintf(why, sizeof(why), "smp rank %" PRIu32 " %s (%s)", o->voter,
               o->sent ? "did not answer" : "could not be asked", o->text);
    /* A rank whose slot went to a newer step meanwhile is the usual race
     * between rounds and snapshots: debug. An SMP that did not answer is
     * not. */
    bool benign = !o->any_lost && o->voter != UINT32_MAX;
    log_at_(benign ? LOG_LVL_DEBUG : LOG_LVL_NOTICE,
            "step %" PRIu64 " not committed: %s", o->step, why);
    return;
  }
  n->has_committed = true;
  n->committed = o->step;
  n->committed_unix_ms = node_unix_ms();
  n->commits++;
  n->committed_since = true;
  node_persist_on_commit(n, o->step); /* before its COMMITs go out */
  n->state_dirty = true;
  /* Per-step lines are debug; at the default level the first commit after
   * a (re)start says training is under way, then one line a minute. */
  uint64_t now = rpc_now_ms();
  if (n->commit_logged_ms == 0 ||
      now >= n->commit_logged_ms + NODE_COMMIT_LOG_MS) {
    log_info("commit step %" PRIu64, o->step);
    n->commit_logged_ms = now;
  } else {
    log_debug("commit step %" PRIu64, o->step);
  }
  node_ctl_notify(n, false);
}

static void on_commit_missed(void *ctx, uint32_t voter, uint64_t step,
                             const char *text)
{
  (void)ctx;
  /* Its pin stays; the commit is sent again when it subscribes. */
  log_warn("smp rank %" PRIu32 " did not take the commit of step %" PRIu64
           " (%s); it keeps the step pinned until it is back",
           voter, step, text);
}

static void on_ended(void *ctx, uint64_t round, uint64_t step)
{
  struct local *l = ctx;
  (void)round;
  (void)step;
  l->n->drive_again = true;
}

static const struct commit_ops local_commit_ops = {
    .send = on_send,
    .verdict = on_verdict,
    .commit_missed = on_commit_missed,
    .ended = on_ended,
    .strerror = pt_strerror,
};

/* ---- the seam ---- */

static void local_free(struct local *l)
{
  commit_release(&l->c);
  free(l->pins_unresolved);
  free(l);
}

static int local_open(struct node *n)
{
  struct local *l = calloc(1, sizeof(*l));

  if (l == NULL)
    return -ENOMEM;
  l->n = n;
  l->pins_unresolved = calloc(n->cfg.ranks, sizeof(*l->pins_unresolved));
  int rc = l->pins_unresolved == NULL
               ? -ENOMEM
               : commit_init(&l->c, n->cfg.ranks, NODE_REQ_MS,
                             &local_commit_ops, l);
  if (rc != PT_OK) {
    local_free(l);
    return rc;
  }
  commit_reset(&l->c, n->has_committed, n->committed);
  n->decider_data = l;
  return PT_OK;
}

static void local_close(struct node *n)
{
  struct local *l = L(n);

  if (l == NULL)
    return;
  local_free(l);
  n->decider_data = NULL;
}

static void local_on_view(struct node *n, struct node_rank *r)
{
  struct local *l = L(n);
  uint64_t floor;

  l->pins_unresolved[r->rank] = true;
  if (n->phase != NODE_PH_STARTING && n->phase != NODE_PH_RUNNING)
    return; /* a restore point is being chosen: its SET_RESTORE decides */
  /* A fresh view: what this rank holds sealed and not committed, and (when
   * adopting) a commit the SMPs took that node.state did not record in
   * time. */
  commit_sealed_clear(&l->c, r->rank);
  for (uint32_t k = 0; k < r->nview; k++) {
    const struct node_slot_view *v = &r->view[k];
    bool has_floor = commit_floor(&l->c, &floor);
    bool newer = !has_floor || v->step > floor;
    if (snap_state_awaits_commit(v->state))
      commit_sealed(&l->c, r->rank, v->step);
    if (v->state == SNAP_COMMITTED && newer && n->phase == NODE_PH_STARTING &&
        n->adopting) {
      log_info("adopted committed step %" PRIu64 " from smp rank %" PRIu32,
               v->step, r->rank);
      n->has_committed = true;
      n->committed = v->step;
      n->committed_unix_ms = 0;
      commit_note_committed(&l->c, v->step);
      n->state_dirty = true;
    }
  }
  n->drive_again = true;
}

static void local_drive(struct node *n, uint64_t now);

static void local_on_sealed(struct node *n, struct node_rank *r,
                            uint64_t step)
{
  if (n->phase != NODE_PH_RUNNING && n->phase != NODE_PH_STARTING)
    return;
  commit_sealed(&L(n)->c, r->rank, step);
  local_drive(n, rpc_now_ms());
}

static void local_on_answer(struct node *n, struct node_rank *r,
                            const struct node_req *q, bool answered,
                            int status, const char *text)
{
  struct local *l = L(n);

  switch (q->kind) {
  case NODE_REQ_PIN:
  case NODE_REQ_COMMIT:
  case NODE_REQ_UNPIN:
    commit_reply(&l->c, r->rank, q->id,
                 !answered     ? COMMIT_VOTE_LOST
                 : status == 0 ? COMMIT_VOTE_YES
                               : COMMIT_VOTE_NO,
                 text, rpc_now_ms());
    break;
  case NODE_REQ_RECOMMIT:
    if (answered && status < 0)
      log_warn("smp rank %" PRIu32 " did not take the commit of step %" PRIu64
               " again: %s",
               r->rank, q->step, text);
    break;
  case NODE_REQ_STALE_UNPIN:
    if (answered && status < 0)
      log_debug("smp rank %" PRIu32 ": step %" PRIu64 " was no longer "
                "pinned: %s", r->rank, q->step, text);
    break;
  default:
    break;
  }
}

/* The pins an SMP reported when it subscribed (r->view), once every SMP is
 * subscribed: see node_plan_pin. */
static void resolve_pins(struct node *n, struct node_rank *r, bool has_round,
                         uint64_t round_step)
{
  L(n)->pins_unresolved[r->rank] = false;
  for (uint32_t k = 0; k < r->nview; k++) {
    const struct node_slot_view *v = &r->view[k];
    switch (node_plan_pin(v->state, v->step, n->has_committed, n->committed,
                          has_round, round_step)) {
    case NODE_PIN_NONE:
      break;
    case NODE_PIN_COMMIT:
      log_info("smp rank %" PRIu32 ": completing the commit of step %" PRIu64,
               r->rank, v->step);
      node_smp_request(n, r, NODE_REQ_RECOMMIT, v->step, NULL);
      break;
    case NODE_PIN_UNPIN:
      log_info("smp rank %" PRIu32 ": releasing step %" PRIu64
               ", pinned by a commit that did not finish",
               r->rank, v->step);
      node_smp_request(n, r, NODE_REQ_STALE_UNPIN, v->step, NULL);
      break;
    }
  }
}

/* Deadlines, then pins left behind, then a round when none runs and a step
 * newer than the floor is sealed by every rank. */
static void local_drive(struct node *n, uint64_t now)
{
  struct local *l = L(n);
  uint64_t target = 0;
  bool has_target;

  /* io_read_ms: a deadline counts as missed only once the loop has read
   * what arrived before it (node_job_overdue). */
  commit_tick(&l->c, n->io_read_ms);
  if (n->phase != NODE_PH_RUNNING || !node_life_all_subscribed(n))
    return;
  has_target = commit_target(&l->c, &target);
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (l->pins_unresolved[i])
      resolve_pins(n, &n->ranks[i], has_target, target);
  if (commit_drive(&l->c, now))
    log_debug("commit round %" PRIu64 ": pinning step %" PRIu64, l->c.round,
              l->c.step);
}

static bool local_busy(const struct node *n, uint64_t *step)
{
  const struct local *l = L(n);

  if (!commit_is_open(&l->c))
    return false;
  *step = l->c.step;
  return true;
}

static void local_drop(struct node *n)
{
  commit_cancel(&L(n)->c);
}

static int local_restore_step(struct node *n,
                              const struct node_rank_slots *views,
                              uint32_t nranks, bool *has, uint64_t *step)
{
  (void)n;
  *has = node_plan_restore_step(views, nranks, step);
  return PT_OK;
}

static void local_restored(struct node *n)
{
  struct local *l = L(n);

  commit_reset(&l->c, n->has_committed, n->committed);
  memset(l->pins_unresolved, 0, n->cfg.ranks * sizeof(*l->pins_unresolved));
}

static uint64_t local_next_deadline(const struct node *n)
{
  return commit_next_deadline(&L(n)->c);
}

const struct node_decider node_decider_local = {
    .name = "local",
    .restarts_ranks = true,
    .verify_newest_first = true,
    .open = local_open,
    .close = local_close,
    .on_view = local_on_view,
    .on_sealed = local_on_sealed,
    .on_answer = local_on_answer,
    .drive = local_drive,
    .busy = local_busy,
    .drop = local_drop,
    .restore_step = local_restore_step,
    .restored = local_restored,
    .next_deadline = local_next_deadline,
};
