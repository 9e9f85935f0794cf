/*
 * node_decide_remote.c — the cluster-mode decider of `ptd node`
 * (node_decider.h): the controller decides commits and restores for every
 * node of the job; this node is one voter of its rounds.
 *
 *   sealed    each local rank's sealed-but-uncommitted steps
 *             (commit_plan_* sets); when every local rank sealed step S of
 *             the part's epoch, S is reported to the controller once
 *             (node_plan_seal_report): when no pin waits for a verdict
 *             here, the node first pins S on every local SMP (its local
 *             round, the first phase) and reports STEP_SEALED{S, pinned},
 *             which the controller takes as this node's vote; otherwise,
 *             or when the pin fails, STEP_SEALED{S} unpinned (a round for S
 *             then asks with JOB_PIN);
 *   JOB_PIN   PIN{S} on every local SMP; once every one answered, JOB_VOTE
 *             with the pin's request id: 0 when all pinned, -ENOENT when
 *             one no longer holds S, another error otherwise
 *             (node_plan_vote); when not all pinned, the ranks that did
 *             are unpinned at once;
 *   JOB_COMMIT COMMIT{S} on every local SMP; S is recorded as the part's
 *             committed step (struct node: has_committed, committed,
 *             commits, which node.state persists);
 *   JOB_UNPIN UNPIN{S} on every local SMP.
 *
 * A step this node pinned and voted for waits for the controller's verdict
 * (held). Without a verdict within NODE_RM_HOLD_MS of the controller being
 * there (its round vanished) the pins are released, as node_decide_local.c
 * releases pins a round left behind. While the controller is away the pin
 * is kept: it may have journaled COMMIT(S) before it went, and the node
 * learns that from its JOB_ASSIGN on reconnect, when S must still be held.
 * Meanwhile the trainers keep running and snapshotting: nothing is
 * committed.
 *
 * The restore step is the JOB_ASSIGN's (node_decide_remote_assigned;
 * -EINPROGRESS until one came). Nothing here blocks: every SMP request has
 * its deadline (node_smp_request), and the frames to the controller are
 * queued on its connection or dropped when it is down.
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

#define NODE_RM_HOLD_MS 30000u /* a pinned step waits this long for the
                                  controller's verdict */
#define NODE_RM_END_MS 3000u   /* the job's end waits this long for the
                                  verdict on the step reported last */

struct remote {
  struct node *n;
  struct commit_sealed_set *sealed; /* per rank */
  bool has_sent;
  uint64_t sent;                    /* the last STEP_SEALED step */
  uint64_t sent_ms;                 /*   and when it went */
  /* The pin round under way (one at a time): the controller's (JOB_PIN
   * pin_id), or this node's own before it reports the step (pin_self; a
   * JOB_PIN of the same step meanwhile is answered too: pin_vote). */
  bool pin_open, pin_cancelled, pin_self, pin_vote;
  uint64_t pin_id, pin_step;
  int *pin_status;                  /* per rank: NODE_PLAN_NO_ANSWER, 0, <0 */
  uint64_t *pin_ticket;             /* per rank: the PIN's request id */
  /* A step pinned everywhere here, waiting for JOB_COMMIT or JOB_UNPIN. */
  bool held;
  uint64_t held_step, held_deadline;
  /* The assignment's restore point. */
  bool assigned, restore_has;
  uint64_t restore_step;
};

static struct remote *R(const struct node *n)
{
  return n->decider_data;
}

/* ---- to the controller ---- */

static void send_vote(struct node *n, uint64_t id, uint64_t step, int status,
                      const char *text)
{
  Pt__JobVote v = PT__JOB_VOTE__INIT;

  v.job = n->cfg.job;
  v.epoch = node_part_epoch(n);
  v.step = step;
  v.status = status;
  if (status != 0 && text != NULL)
    v.message = (char *)text;
  int rc = node_cluster_send(n, RPC_JOB_VOTE, id, &v.base);
  if (rc != PT_OK)
    log_debug("job '%s': vote on step %" PRIu64 " not sent: %s", n->cfg.job,
              step, pt_strerror(rc));
}

static int send_sealed(struct node *n, uint64_t step, bool pinned)
{
  Pt__StepSealed s = PT__STEP_SEALED__INIT;

  s.job = n->cfg.job;
  s.epoch = node_part_epoch(n);
  s.step = step;
  s.has_pinned = pinned;
  s.pinned = pinned;
  s.has_bytes_held = true;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    s.bytes_held += n->ranks[i].bytes_held;
  /* The committed steps every local rank still holds. */
  uint64_t held[SNAP_MAX_SLOTS];
  const struct node_rank *r0 = n->cfg.ranks > 0 ? &n->ranks[0] : NULL;
  for (uint32_t k = 0; r0 != NULL && k < r0->ncommitted_held; k++) {
    bool all = true;
    for (uint32_t i = 1; i < n->cfg.ranks && all; i++) {
      bool has = false;
      for (uint32_t j = 0; j < n->ranks[i].ncommitted_held && !has; j++)
        has = n->ranks[i].committed_held[j] == r0->committed_held[k];
      all = has;
    }
    if (all)
      held[s.n_held++] = r0->committed_held[k];
  }
  s.held = held;
  int rc = node_cluster_send(n, RPC_STEP_SEALED, 0, &s.base);
  if (rc == PT_OK)
    R(n)->sent_ms = rpc_now_ms();
  if (rc != PT_OK)
    /* The controller is away: the newest step (and a pin held) is
     * reported when it is back (node_decide_remote_link_up). */
    log_debug("job '%s': step %" PRIu64 " sealed; not reported: %s",
              n->cfg.job, step, pt_strerror(rc));
  else
    log_debug("job '%s': every local rank sealed step %" PRIu64 "%s",
              n->cfg.job, step, pinned ? " and pinned it" : "");
  return rc;
}

static void pin_start(struct node *n, uint64_t step);

/* The newest step every local rank sealed, not reported yet and newer than
 * the committed step: pinned first when nothing else is, then reported. */
static void report_sealed(struct node *n)
{
  struct remote *m = R(n);
  const struct commit_sealed_set *sets[NODE_MAX_RANKS];
  uint64_t step;

  /* Not while this node's own pin is under way: a newer step reported
   * before it would let the controller's round pass the pinned one by. */
  if (n->phase != NODE_PH_RUNNING || n->cfg.ranks == 0 ||
      (m->pin_open && m->pin_self) || !node_cluster_registered(n))
    return; /* unregistered: reported at node_decide_remote_link_up */
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    sets[i] = &m->sealed[i];
  if (!node_plan_seal_report(sets, n->cfg.ranks, n->has_committed,
                             n->committed, m->has_sent, m->sent, &step))
    return;
  m->has_sent = true;
  m->sent = step;
  if (!m->pin_open && !m->held && node_life_all_subscribed(n)) {
    m->pin_self = true;
    m->pin_vote = false;
    m->pin_id = 0;
    pin_start(n, step); /* STEP_SEALED{pinned} when every rank answered */
    return;
  }
  if (send_sealed(n, step, false) != PT_OK)
    m->has_sent = false;
}

/* ---- to the SMPs ---- */

static void to_every_smp(struct node *n, enum node_req_kind kind,
                         uint64_t step)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    int rc = r->subscribed ? node_smp_request(n, r, kind, step, NULL)
                           : -ENOTCONN;
    if (rc != PT_OK)
      log_warn("smp rank %s: cannot send %s of step %" PRIu64
               ": %s",
               NODE_RANK(n, r->rank),
               kind == NODE_REQ_COMMIT ? "the commit" : "the unpin",
               step, pt_strerror(rc));
  }
}

/* The pin round is over once every rank answered: the vote, and the
 * unpins when not every rank pinned (or the controller gave up). */
static void pin_maybe_done(struct node *n)
{
  struct remote *m = R(n);

  if (!m->pin_open)
    return;
  int v = node_plan_vote(m->pin_status, n->cfg.ranks);
  if (v == NODE_PLAN_NO_ANSWER)
    return;
  m->pin_open = false;
  char text[384] = "";
  if (v != 0) {
    for (uint32_t i = 0; i < n->cfg.ranks; i++)
      if (m->pin_status[i] != 0) {
        snprintf(text, sizeof(text), "rank %s: %s", NODE_RANK(n, i),
                 pt_strerror(m->pin_status[i]));
        break;
      }
    log_debug("job '%s': step %" PRIu64 " not pinned here: %s", n->cfg.job,
              m->pin_step, text);
  }
  if (!m->pin_cancelled && (!m->pin_self || m->pin_vote))
    send_vote(n, m->pin_id, m->pin_step, v, text);
  if (m->pin_self && !m->pin_cancelled)
    /* Its report: pinned (this node's vote), or not (a round asks). */
    (void)send_sealed(n, m->pin_step, v == 0);
  n->drive_again = true; /* steps sealed meanwhile are reported now */
  if (v == 0 && !m->pin_cancelled) {
    if (m->held && m->held_step != m->pin_step)
      to_every_smp(n, NODE_REQ_STALE_UNPIN, m->held_step);
    m->held = true;
    m->held_step = m->pin_step;
    m->held_deadline = rpc_now_ms() + NODE_RM_HOLD_MS;
    return;
  }
  /* Not every rank pinned: those that did (or may have) let go. */
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (m->pin_status[i] == -ENOENT || !r->subscribed)
      continue;
    node_smp_request(n, r, NODE_REQ_UNPIN, m->pin_step, NULL);
  }
}

void node_decide_remote_pin(struct node *n, uint64_t id, uint64_t step)
{
  struct remote *m = R(n);

  if (m == NULL || n->phase != NODE_PH_RUNNING ||
      !node_life_all_subscribed(n)) {
    send_vote(n, id, step, -EAGAIN, "the part is not running");
    return;
  }
  if (m->pin_open && m->pin_self && m->pin_step == step && !m->pin_vote) {
    m->pin_vote = true; /* this node's own pin of it: answered at its end */
    m->pin_id = id;
    return;
  }
  if (m->pin_open) {
    send_vote(n, id, step, -EBUSY, "a pin of another step is under way");
    return;
  }
  if (n->has_committed && step <= n->committed) {
    send_vote(n, id, step, PT_ESTEP, "not newer than the committed step");
    return;
  }
  if (m->held && m->held_step == step) {
    send_vote(n, id, step, 0, NULL); /* pinned here already */
    return;
  }
  m->pin_self = false;
  m->pin_vote = false;
  m->pin_id = id;
  pin_start(n, step);
}

/* PIN{step} on every local SMP; pin_maybe_done ends the round. */
static void pin_start(struct node *n, uint64_t step)
{
  struct remote *m = R(n);

  m->pin_open = true;
  m->pin_cancelled = false;
  m->pin_step = step;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    m->pin_status[i] = NODE_PLAN_NO_ANSWER;
    int rc = node_smp_request(n, &n->ranks[i], NODE_REQ_PIN, step,
                              &m->pin_ticket[i]);
    if (rc != PT_OK)
      m->pin_status[i] = rc;
  }
  pin_maybe_done(n);
}

void node_decide_remote_commit(struct node *n, uint64_t step)
{
  struct remote *m = R(n);

  if (m == NULL || (n->has_committed && step <= n->committed))
    return;
  to_every_smp(n, NODE_REQ_COMMIT, step);
  if (m->held && m->held_step <= step)
    m->held = false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    commit_plan_sealed_prune(&m->sealed[i], step);
  n->has_committed = true;
  n->committed = step;
  n->committed_unix_ms = node_unix_ms();
  n->commits++;
  n->committed_since = true;
  n->state_dirty = true;
  uint64_t now = rpc_now_ms();
  if (n->commit_logged_ms == 0 ||
      now >= n->commit_logged_ms + NODE_COMMIT_LOG_MS) {
    log_info("job '%s' epoch %" PRIu64 ": commit step %" PRIu64, n->cfg.job,
             node_part_epoch(n), step);
    n->commit_logged_ms = now;
  } else {
    log_debug("job '%s': commit step %" PRIu64, n->cfg.job, step);
  }
  node_ctl_notify(n, false);
  n->drive_again = true;
}

void node_decide_remote_unpin(struct node *n, uint64_t step)
{
  struct remote *m = R(n);

  if (m == NULL)
    return;
  if (m->pin_open && m->pin_step == step) {
    m->pin_cancelled = true; /* its pins go when the round ends */
    return;
  }
  if (m->held && m->held_step == step)
    m->held = false;
  to_every_smp(n, NODE_REQ_UNPIN, step);
}

void node_decide_remote_assigned(struct node *n, bool has, uint64_t step)
{
  struct remote *m = R(n);

  if (m == NULL)
    return;
  m->assigned = true;
  m->restore_has = has;
  m->restore_step = step;
}

void node_decide_remote_link_up(struct node *n)
{
  struct remote *m = R(n);

  if (m == NULL)
    return;
  m->has_sent = false;
  /* A pin held across the absence is this node's vote again. */
  if (m->held && (!n->has_committed || m->held_step > n->committed) &&
      send_sealed(n, m->held_step, true) == PT_OK) {
    m->has_sent = true;
    m->sent = m->held_step;
  }
  report_sealed(n);
}

bool node_decide_remote_last_sealed(const struct node *n, uint64_t *step)
{
  const struct remote *m = R(n);
  const struct commit_sealed_set *sets[NODE_MAX_RANKS];

  if (m == NULL || n->cfg.ranks == 0)
    return false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    sets[i] = &m->sealed[i];
  return commit_plan_step(sets, n->cfg.ranks, false, 0, step);
}

/* ---- the seam ---- */

static void remote_free(struct remote *m)
{
  free(m->sealed);
  free(m->pin_status);
  free(m->pin_ticket);
  free(m);
}

static int remote_open(struct node *n)
{
  struct remote *m = calloc(1, sizeof(*m));
  uint32_t nr = n->cfg.ranks > 0 ? n->cfg.ranks : 1;

  if (m == NULL)
    return -ENOMEM;
  m->n = n;
  m->sealed = calloc(nr, sizeof(*m->sealed));
  m->pin_status = calloc(nr, sizeof(*m->pin_status));
  m->pin_ticket = calloc(nr, sizeof(*m->pin_ticket));
  if (m->sealed == NULL || m->pin_status == NULL || m->pin_ticket == NULL) {
    remote_free(m);
    return -ENOMEM;
  }
  n->decider_data = m;
  return PT_OK;
}

static void remote_close(struct node *n)
{
  struct remote *m = R(n);

  if (m == NULL)
    return;
  remote_free(m);
  n->decider_data = NULL;
}

static void remote_on_view(struct node *n, struct node_rank *r)
{
  struct remote *m = R(n);

  if (n->phase != NODE_PH_STARTING && n->phase != NODE_PH_RUNNING)
    return; /* a restore point is being set: SET_RESTORE decides */
  m->sealed[r->rank].n = 0;
  for (uint32_t k = 0; k < r->nview; k++) {
    const struct node_slot_view *v = &r->view[k];
    bool newer = !n->has_committed || v->step > n->committed;
    if (snap_state_awaits_commit(v->state) && newer)
      commit_plan_sealed_add(&m->sealed[r->rank], v->step);
    if (v->state == SNAP_COMMITTED && newer && n->phase == NODE_PH_STARTING &&
        n->adopting) {
      log_info("adopted committed step %" PRIu64 " from smp rank %s",
               v->step, NODE_RANK(n, r->rank));
      n->has_committed = true;
      n->committed = v->step;
      n->committed_unix_ms = 0;
      n->state_dirty = true;
    }
    /* A pin a round left behind (the node restarted within it): it waits
     * for the controller's verdict like a pin of this node's own round. */
    if (snap_state_pinned(v->state) && newer &&
        !(m->pin_open && m->pin_step == v->step)) {
      if (m->held && m->held_step != v->step) {
        node_smp_request(n, r, NODE_REQ_STALE_UNPIN,
                         v->step < m->held_step ? v->step : m->held_step,
                         NULL);
        if (v->step < m->held_step)
          continue;
      }
      m->held = true;
      m->held_step = v->step;
      m->held_deadline = rpc_now_ms() + NODE_RM_HOLD_MS;
    } else if (snap_state_pinned(v->state) && n->has_committed &&
               v->step == n->committed) {
      node_smp_request(n, r, NODE_REQ_RECOMMIT, v->step, NULL);
    }
  }
  n->drive_again = true;
}

/* A coded part's local ranks are members of different coding groups, and
 * each group picks the steps it protects (one in flight per SMP, the next
 * one its trainer snapshots once free). When two ranks fall apart (one
 * sealed a step the other passed over, so that one step can never be
 * reported), no step of theirs can be until they are in step again: both
 * steps are given up on every local SMP (UNPIN: each SMP gives up the
 * step's protection and tells its group), so that every group here is
 * free for the same next step. */
static void realign(struct node *n, uint32_t rank, uint64_t step)
{
  struct remote *m = R(n);

  if (n->cfg.group.k == 0 || n->cfg.ranks < 2)
    return;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    const struct commit_sealed_set *o = &m->sealed[i];
    if (i == rank || o->n == 0)
      continue;
    uint64_t last = o->steps[o->n - 1];
    if ((last < step && !commit_plan_sealed_has(&m->sealed[rank], last)) ||
        (last > step && !commit_plan_sealed_has(o, step))) {
      log_debug("job '%s': local ranks %s and %s sealed steps %" PRIu64
                " and %" PRIu64 ", which the other never seals: both given "
                "up", n->cfg.job, NODE_RANK(n, i), NODE_RANK(n, rank), last,
                step);
      to_every_smp(n, NODE_REQ_UNPIN, last);
      to_every_smp(n, NODE_REQ_UNPIN, step);
      return;
    }
  }
}

static void remote_on_sealed(struct node *n, struct node_rank *r,
                             uint64_t step)
{
  struct remote *m = R(n);

  if (n->phase != NODE_PH_RUNNING && n->phase != NODE_PH_STARTING)
    return;
  if (n->has_committed && step <= n->committed)
    return;
  commit_plan_sealed_add(&m->sealed[r->rank], step);
  realign(n, r->rank, step);
  report_sealed(n);
}

static void remote_on_answer(struct node *n, struct node_rank *r,
                             const struct node_req *q, bool answered,
                             int status, const char *text)
{
  struct remote *m = R(n);

  switch (q->kind) {
  case NODE_REQ_PIN:
    if (m->pin_open && m->pin_step == q->step &&
        m->pin_ticket[r->rank] == q->id &&
        m->pin_status[r->rank] == NODE_PLAN_NO_ANSWER) {
      m->pin_status[r->rank] = node_plan_pin_status(answered, status);
      pin_maybe_done(n);
    }
    break;
  case NODE_REQ_COMMIT:
  case NODE_REQ_RECOMMIT:
    if (!answered || status < 0)
      log_warn("smp rank %s did not take the commit of step %" PRIu64
               " (%s); it keeps the step pinned until it is back",
               NODE_RANK(n, r->rank), q->step, text);
    break;
  case NODE_REQ_UNPIN:
  case NODE_REQ_STALE_UNPIN:
    if (answered && status < 0)
      log_debug("smp rank %s: step %" PRIu64 " was no longer "
                "pinned: %s", NODE_RANK(n, r->rank), q->step, text);
    break;
  default:
    break;
  }
}

static void remote_drive(struct node *n, uint64_t now)
{
  struct remote *m = R(n);

  /* While the controller is away its verdict may be journaled and on its
   * way: the pin is kept (the trainers still have the other slots), and
   * its deadline runs from when the controller is back. */
  if (m->held && !node_cluster_registered(n) &&
      m->held_deadline < now + NODE_RM_HOLD_MS)
    m->held_deadline = now + NODE_RM_HOLD_MS;
  if (m->held && node_job_overdue(n, m->held_deadline)) {
    log_notice("job '%s': releasing step %" PRIu64 ", pinned for a round the "
               "controller did not finish within %u ms",
               n->cfg.job, m->held_step, NODE_RM_HOLD_MS);
    m->held = false;
    to_every_smp(n, NODE_REQ_STALE_UNPIN, m->held_step);
  }
  report_sealed(n);
}

static bool remote_busy(const struct node *n, uint64_t *step)
{
  const struct remote *m = R(n);

  if (m->pin_open) {
    *step = m->pin_step;
    return true;
  }
  /* Reported (pinned or not) and not committed yet, while the controller
   * listens: its round, when every part reported the step, ends within
   * moments. A step some part never reported has no round: not waited
   * for past NODE_RM_END_MS (a coded job's groups may have protected
   * different last steps). */
  bool fresh = rpc_now_ms() < m->sent_ms + NODE_RM_END_MS;
  if (m->held && fresh) {
    *step = m->held_step;
    return true;
  }
  if (m->has_sent && (!n->has_committed || m->sent > n->committed) &&
      node_cluster_registered(n) && fresh) {
    *step = m->sent;
    return true;
  }
  return false;
}

static void remote_drop(struct node *n)
{
  struct remote *m = R(n);

  if (m->pin_open && !m->pin_cancelled && (!m->pin_self || m->pin_vote))
    send_vote(n, m->pin_id, m->pin_step, -ECANCELED,
              "the part's ranks are stopping");
  m->pin_open = false;
  m->held = false;
}

static int remote_restore_step(struct node *n,
                               const struct node_rank_slots *views,
                               uint32_t nranks, bool *has, uint64_t *step)
{
  struct remote *m = R(n);

  (void)views;
  (void)nranks;
  if (!m->assigned)
    return -EINPROGRESS;
  *has = m->restore_has;
  *step = m->restore_step;
  return PT_OK;
}

static void remote_restored(struct node *n)
{
  struct remote *m = R(n);

  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    m->sealed[i].n = 0;
  m->pin_open = false;
  m->held = false;
  m->has_sent = false;
}

static uint64_t remote_next_deadline(const struct node *n)
{
  const struct remote *m = R(n);

  return m->held ? m->held_deadline : UINT64_MAX;
}

const struct node_decider node_decider_remote = {
    .name = "remote",
    .restarts_ranks = false,
    .verify_newest_first = false,
    .open = remote_open,
    .close = remote_close,
    .on_view = remote_on_view,
    .on_sealed = remote_on_sealed,
    .on_answer = remote_on_answer,
    .drive = remote_drive,
    .busy = remote_busy,
    .drop = remote_drop,
    .restore_step = remote_restore_step,
    .restored = remote_restored,
    .next_deadline = remote_next_deadline,
};
