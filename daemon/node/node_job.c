/*
 * node_job.c — the job's life in `ptd node`: its phases and its children's
 * exits. Everything here runs on the loop thread, driven by node_job_drive().
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
 * Where the decider does not restart ranks (cluster mode: the controller
 * restarts the whole job in a new epoch), a failed trainer, a stuck one or
 * a dead SMP ends the job part instead (node_life_finish, FAILED), and its
 * end leaves the node running (node_part_ended) rather than exiting.
 *
 * The moves between phases (the end, a restart, spawning) are in
 * node_life.c, what the SMPs say in node_events.c. Commits and the restore
 * step are the decider's (node_decider.h): this file asks it, and never
 * which one it is.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"

#define NODE_SMP_BACK_MS 60000u  /* RESTART: SMPs subscribed again by then */

/* ---- children ---- */

void node_job_child_exited(struct node *n, struct node_child *c, bool known,
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
    log_info("smp rank %s (pid %d) %s", NODE_RANK(n, r->rank), c->pid, how);
    r->smp_adopted = false;
    node_smp_disconnect(r);
    node_recover_abandon(n, "an smp exited");
    if (n->phase <= NODE_PH_RUNNING) {
      bool config = known && term_signal == 0 &&
                    (status == NODE_EXIT_USAGE || status == NODE_EX_CONFIG);
      r->smp_fails++;
      if (config)
        node_life_fail_permanent(n, "smp rank %s %s (configuration)",
                                 NODE_RANK(n, r->rank), how);
      else if (!n->decider->restarts_ranks)
        /* Whoever decides restarts every rank of the job. */
        node_life_finish(n, NODE_OUT_FAILED, "smp rank %s (pid %d) %s",
                    NODE_RANK(n, r->rank), c->pid, how);
      else if (r->smp_fails > NODE_SMP_FAILS_MAX)
        node_life_finish(n, NODE_OUT_FAILED,
                    "smp rank %s died %" PRIu32
                    " times before answering",
                    NODE_RANK(n, r->rank), r->smp_fails);
      else {
        uint32_t d = r->smp_fails <= 1
                         ? 0
                         : node_plan_backoff_ms(n->cfg.backoff_ms,
                                                r->smp_fails - 1,
                                                NODE_BACKOFF_CAP_MS);
        r->smp_restarts++;
        log_info("restarting smp rank %s in %" PRIu32 " ms",
                 NODE_RANK(n, r->rank), d);
        r->smp_respawn_at = rpc_now_ms() + d;
      }
    }
    node_job_drive(n);
    return;
  }

  if (r->trainer == c)
    r->trainer = NULL;
  log_info("trainer rank %s (pid %d) %s", NODE_RANK(n, r->rank), c->pid, how);
  node_recover_trainer_gone(n, r);
  if (n->phase != NODE_PH_STARTING && n->phase != NODE_PH_RUNNING) {
    /* Stopped on purpose (a restart or the end). */
    r->tstate = NODE_TR_IDLE;
  } else if (!known) {
    if (r->gone_seen) {
      r->tstate = r->gone_done ? NODE_TR_DONE : NODE_TR_FAILED;
      snprintf(r->why, sizeof(r->why), "trainer rank %s (pid %d) %s",
               NODE_RANK(n, r->rank),
               c->pid, r->gone_done ? "finished" : "ended unfinished");
    } else {
      r->tstate = NODE_TR_GONE_WAIT;
      r->gone_deadline = rpc_now_ms() + NODE_GONE_WAIT_MS;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %s (pid %d) ended without telling its "
               "smp it was done",
               NODE_RANK(n, r->rank), c->pid);
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
               "trainer rank %s (pid %d) exited with status 0 but "
               "left its smp without saying it finished",
               NODE_RANK(n, r->rank), c->pid);
    } else {
      r->tstate = NODE_TR_GONE_WAIT;
      r->gone_deadline = rpc_now_ms() + NODE_GONE_WAIT_MS;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %s (pid %d) exited with status 0 "
               "without telling its smp it finished",
               NODE_RANK(n, r->rank), c->pid);
    }
  } else {
    r->tstate = NODE_TR_FAILED;
    r->permanent = term_signal == 0 && status == NODE_EX_CONFIG;
    snprintf(r->why, sizeof(r->why), "trainer rank %s (pid %d) %s%s%s%.300s",
             NODE_RANK(n, r->rank), c->pid, how,
             r->permanent ? " (configuration error: not restarted)" : "",
             r->smp_words[0] != '\0' ? ": " : "", r->smp_words);
  }
  node_job_drive(n);
}

/* ---- phases ---- */

static void step_starting(struct node *n, uint64_t now)
{
  if (!node_life_all_subscribed(n))
    return;
  if (!n->adopting) {
    node_life_begin_restart(n, now, false, "");
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
      log_info("trainer rank %s finished while the node was away",
               NODE_RANK(n, r->rank));
      r->tstate = NODE_TR_DONE;
    } else {
      r->tstate = NODE_TR_FAILED;
      snprintf(r->why, sizeof(r->why),
               "trainer rank %s was gone when the node restarted",
               NODE_RANK(n, r->rank));
    }
  }
  n->adopting = false;
  n->running_since = now;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    n->ranks[i].progress_at = now;
  node_life_set_phase(n, NODE_PH_RUNNING);
  n->decider->drive(n, now); /* the pins the SMPs reported first */
  node_ctl_notify(n, true);
}

/* QUERY: every SMP verifies its slots (n->verify_all), or newest step
 * first until one is intact. */
static void query_slots(struct node *n)
{
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    r->view_verified = false;
    r->set_restore_ok = false;
    r->smp_words[0] = '\0';
    r->restore_rebuild = false;
    if (node_smp_request(n, r, NODE_REQ_VERIFY,
                         n->verify_all ? NODE_VERIFY_ALL : NODE_VERIFY_NEWEST_FIRST,
                         NULL) != PT_OK)
      n->attempt_failed = true;
  }
}

static void step_restart(struct node *n, uint64_t now)
{
  /* Recovery in place keeps the surviving trainers running. */
  if (!node_recover_ready(n))
    return;
  if ((!n->recovering && !node_life_stop_role(n, NODE_ROLE_TRAINER, now)) ||
      now < n->backoff_until)
    return;
  if (!node_life_all_subscribed(n)) {
    if (n->phase_deadline == 0)
      n->phase_deadline = now + NODE_SMP_BACK_MS;
    else if (now >= n->phase_deadline)
      node_life_finish(n, NODE_OUT_FAILED, "the smps did not answer within %u ms",
                  NODE_SMP_BACK_MS);
    return;
  }
  n->phase_deadline = 0;
  n->attempt_failed = false;
  n->verify_all = !n->decider->verify_newest_first;
  node_fault_before_restore(n);
  query_slots(n);
  node_life_set_phase(n, NODE_PH_QUERY);
}

static void step_query(struct node *n, uint64_t now)
{
  struct node_rank_slots views[NODE_MAX_RANKS];

  if (n->attempt_failed) {
    node_life_retry_restore(n, now, "a state query failed");
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
      node_life_finish(n, NODE_OUT_FAILED,
                  "rank %s: its snapshot object holds %" PRIu64
                  " bytes, more than its share of --memory-budget (%" PRIu64
                  " bytes of %" PRIu64
                  "): raise the budget or start the job fresh",
                  NODE_RANK(n, r->rank),
                  r->bytes_held, share, n->cfg.memory_budget);
      return;
    }
  }
  int rc = n->decider->restore_step(n, views, n->cfg.ranks, &n->restore_has,
                                    &n->restore_step);
  if (rc == -EINPROGRESS)
    return; /* the decider answers later; node_job_drive runs again then */
  if (rc != PT_OK) {
    node_life_retry_restore(n, now, "no restore step was decided");
    return;
  }
  /* Read newest first, the slots may not decide: a newer step left unread
   * on one rank could be intact on every rank. Then every slot is read. */
  if (!n->verify_all &&
      !node_plan_restore_decided(views, n->cfg.ranks, n->restore_has,
                                 n->restore_step)) {
    log_info("the newest step is not intact on every rank: reading every "
             "snapshot slot");
    n->verify_all = true;
    query_slots(n);
    return;
  }
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
                       snap_state_name(v->state),
                       !v->verified ? " (not read)" : v->intact ? "" : " (damaged)");
      if (w > 0)
        used += (size_t)w < sizeof(held) - used ? (size_t)w : sizeof(held) - used - 1;
    }
    log_info("rank %s holds %s", NODE_RANK(n, r->rank),
             used > 0 ? held : "no snapshot");
    for (uint32_t k = 0; k < r->nview; k++) {
      const struct node_slot_view *v = &r->view[k];
      if (!snap_state_holds_data(v->state) || !v->verified || v->intact)
        continue;
      log_warn("rank %s: step %" PRIu64
               " is not intact (checksum mismatch); never restored",
               NODE_RANK(n, r->rank), v->step);
      if (damaged[0] == '\0')
        snprintf(damaged, sizeof(damaged),
                 "rank %s step %" PRIu64 " fails its checksums",
                 NODE_RANK(n, r->rank), v->step);
    }
  }
  /* The persistent tier: a complete step on disk newer than what memory
   * holds intact on every rank (or memory holds none). */
  n->restore_disk = false;
  uint64_t dstep;
  char dwhy[1400];
  if (node_persist_restore_pick(n, &dstep, dwhy, sizeof(dwhy)) &&
      (!n->restore_has || dstep > n->restore_step)) {
    char mem[96];
    if (n->restore_has)
      snprintf(mem, sizeof(mem), "memory holds step %" PRIu64 " at best",
               n->restore_step);
    else
      snprintf(mem, sizeof(mem), "memory holds no step intact on every rank");
    log_notice("restore from disk: %s, and %s", dwhy, mem);
    snprintf(n->restore_reason, sizeof(n->restore_reason), "%.300s, and %s",
             dwhy, mem);
    n->restore_has = true;
    n->restore_step = dstep;
    n->restore_disk = true;
  }
  /* Cluster mode: the controller chose a step on disk (memory could not
   * serve it). */
  if (n->restore_disk_assigned && n->restore_has) {
    log_notice("restore from disk: step %" PRIu64 ", the controller's choice "
               "(flush %" PRIu64 ")", n->restore_step, n->restore_disk_mark);
    n->restore_disk = true;
  }
  /* The step to restore is damaged here (the controller chose it, in
   * cluster mode): never restored. The part fails with PT_ECHECKSUM and
   * the steps it holds intact, so the controller restores an older one. */
  for (uint32_t i = 0; i < n->cfg.ranks && n->restore_has; i++) {
    struct node_rank *r = &n->ranks[i];
    bool bad = false, good = false;
    for (uint32_t k = 0; k < r->nview; k++) {
      const struct node_slot_view *v = &r->view[k];
      if (n->restore_disk || v->step != n->restore_step ||
          !snap_state_holds_data(v->state) || !v->verified)
        continue;
      good = good || v->intact;
      bad = bad || !v->intact;
    }
    if (bad && !good && n->cfg.group.k != 0) {
      /* A coded job: the rank's SMP rebuilds it from its coding group
       * (SET_RESTORE{rebuild}), and verifies what it rebuilt. */
      log_warn("rank %s: step %" PRIu64 ", the step to restore, fails its "
               "checksums here: its smp rebuilds it from its coding group",
               NODE_RANK(n, r->rank), n->restore_step);
      r->restore_rebuild = true;
      continue;
    }
    if (bad && !good) {
      n->why_status = PT_ECHECKSUM;
      node_life_finish(n, NODE_OUT_FAILED,
                       "rank %" PRIu32 ": step %" PRIu64 ", the step to "
                       "restore, fails its checksums; never restored (an "
                       "older intact step must be restored)",
                       r->rank + n->cfg.first_rank, n->restore_step);
      return;
    }
  }
  if (!n->restore_has && damaged[0] != '\0') {
    node_life_finish(n, NODE_OUT_FAILED,
                "no snapshot step is intact on every rank (%s); refusing to "
                "restore damaged state or to start over",
                damaged);
    return;
  }
  /* A committed step that no longer stands on every rank (a rank's object
   * was lost, replaced, or its slot records fail their checksums): starting
   * over would throw the job's work away behind one info line. */
  if (!n->restore_has && n->has_committed) {
    char lost[384] = "";
    for (uint32_t i = 0; i < n->cfg.ranks && lost[0] == '\0'; i++) {
      const struct node_rank *r = &n->ranks[i];
      bool has = false;
      for (uint32_t k = 0; k < r->nview; k++)
        has = has || (r->view[k].step == n->committed && r->view[k].intact &&
                      r->view[k].state != SNAP_FREE &&
                      r->view[k].state != SNAP_WRITING);
      if (!has)
        snprintf(lost, sizeof(lost), "rank %s no longer holds it%s",
                 NODE_RANK(n, r->rank),
                 r->has_store ? "" : " (no snapshot object)");
    }
    if (n->cfg.cluster) /* no copy in memory: the controller's next tier */
      n->why_status = PT_ENOFRAG;
    node_life_finish(n, NODE_OUT_FAILED,
                "committed step %" PRIu64 " is not held intact by every rank "
                "(%s), and no older step is; refusing to start over and lose "
                "it: start with --fresh to train from the beginning",
                n->committed, lost[0] != '\0' ? lost : "no common step");
    return;
  }
  if (n->recovering && n->restore_disk) {
    /* The SMPs read a step from disk only for a new trainer's HELLO. */
    node_recover_abandon(n, "the restore point is read from disk");
    return;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    uint64_t arg = n->restore_has ? n->restore_step : UINT64_MAX;
    if (node_smp_request(n, &n->ranks[i], NODE_REQ_SET_RESTORE, arg, NULL) !=
        PT_OK)
      n->attempt_failed = true;
  }
  node_life_set_phase(n, NODE_PH_SET_RESTORE);
}

static void step_set_restore(struct node *n, uint64_t now)
{
  if (n->attempt_failed) {
    node_life_retry_restore(n, now, "setting the restore point failed");
    return;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (!n->ranks[i].set_restore_ok)
      return;
  n->restore_fails = 0;
  if (n->restore_has) {
    log_info("restore from step %" PRIu64 "%s", n->restore_step,
             n->restore_disk ? " (from disk)" : "");
    if (!n->restore_disk)
      snprintf(n->restore_reason, sizeof(n->restore_reason), "step %" PRIu64
               " is the newest step every rank holds intact in memory",
               n->restore_step);
    if (!n->has_committed || n->committed != n->restore_step)
      n->committed_unix_ms = 0; /* an older step: its age is unknown */
    n->has_committed = true;
    n->committed = n->restore_step;
    n->restores++;
  } else {
    log_info("no snapshot: starting fresh");
    n->restore_reason[0] = '\0';
    n->has_committed = false;
    n->committed_unix_ms = 0;
  }
  /* SET_RESTORE cleared every pin and every newer step. */
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    n->ranks[i].has_last_sealed = false;
  n->decider->restored(n);
  node_persist_restored(n, n->restore_has, n->restore_step);
  node_life_set_phase(n, NODE_PH_RUNNING);
  n->running_since = now;
  n->committed_since = false;
  node_life_spawn_trainers(n);
  node_recover_spawned(n, now);
  if (n->phase == NODE_PH_RUNNING)
    node_ctl_notify(n, true);
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
    if (node_job_overdue(n, progress_deadline(n, &n->ranks[i])))
      return &n->ranks[i];
  return NULL;
}

static void step_running(struct node *n, uint64_t now)
{
  n->decider->drive(n, now);
  struct node_rank *failed = NULL;
  bool all_done = true;
  struct node_rank *stuck = stuck_rank(n);

  if (stuck != NULL) {
    char why[384];
    snprintf(why, sizeof(why),
             "trainer rank %s (pid %d) made no progress: no "
             "snapshot sealed for %" PRIu32 " s (--progress-timeout)",
             NODE_RANK(n, stuck->rank), stuck->trainer->pid,
             n->cfg.progress_timeout_ms / 1000u);
    if (!n->decider->restarts_ranks) {
      node_life_finish(n, NODE_OUT_FAILED, "%s", why);
      return;
    }
    log_warn("%s; restarting the job", why);
    node_recover_cancel(n);
    node_life_begin_restart(n, now, true, why);
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
    if (failed->permanent) {
      node_life_fail_permanent(n, "%s", failed->why);
    } else if (!n->decider->restarts_ranks) {
      node_life_finish(n, NODE_OUT_FAILED, "%s", failed->why);
    } else {
      node_recover_cancel(n); /* a failure during one: all of it again */
      node_recover_begin(n, now);
      node_life_begin_restart(n, now, true, failed->why);
      if (n->phase != NODE_PH_RESTART)
        node_recover_cancel(n); /* no restarts left: the job ends */
    }
    return;
  }
  node_recover_check(n, now);
  if (n->phase != NODE_PH_RUNNING)
    return;
  if (all_done) {
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
                     node_smp_request(n, r, NODE_REQ_DRAIN, 0, NULL) != PT_OK;
      }
    }
    for (uint32_t i = 0; i < n->cfg.ranks; i++)
      heard = heard && n->ranks[i].drained;
    uint64_t step = 0;
    bool busy = n->decider->busy(n, &step);
    if ((busy || !heard) && now < n->end_deadline)
      return;
    if (busy)
      log_warn("the commit of step %" PRIu64 " did not end within %u ms of "
               "the job's end; stopping anyway",
               step, NODE_END_ROUNDS_MS);
    node_life_finish(n, NODE_OUT_DONE, "job completed");
  }
}

void node_job_shm_remove(const struct node *n, const char *job,
                         uint32_t first_rank, uint32_t count,
                         const uint8_t instance[SNAP_INSTANCE_BYTES],
                         int level)
{
  for (uint32_t i = 0; i < count; i++) {
    char name[256];
    if (snap_store_name(name, sizeof(name), n->cfg.shm_prefix, job,
                        first_rank + i) != PT_OK)
      continue;
    /* Only this instance's own objects: a name reused by another job
     * instance (another state dir) is not ours to remove. */
    struct snap_store *st = NULL;
    int rc = snap_store_open(&st, name, NULL, 0);
    if (rc == -ENOENT)
      continue;
    bool ours = rc == PT_OK && memcmp(snap_store_instance(st), instance,
                                      SNAP_INSTANCE_BYTES) == 0;
    snap_store_close(st);
    if (!ours) {
      log_warn("left shm object '%s' in place: %s", name,
               rc == PT_OK ? "it belongs to another job instance"
                           : pt_strerror(rc));
      continue;
    }
    rc = snap_store_unlink(name);
    char meta[sizeof(name) + 8]; /* the group's tables beside it (smp) */
    snprintf(meta, sizeof(meta), "%s.meta", name);
    (void)snap_store_unlink(meta);
    if (rc != PT_OK && rc != -ENOENT)
      log_warn("cannot remove shm object '%s': %s", name, pt_strerror(rc));
    else if (rc == PT_OK)
      log_at_(level, "removed shm object '%s'", name);
  }
}

static void finish_exit(struct node *n)
{
  if (n->outcome == NODE_OUT_DONE && !n->cfg.keep)
    node_job_shm_remove(n, n->cfg.job, n->cfg.first_rank, n->cfg.ranks,
                        n->instance, LOG_LVL_DEBUG);
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
    /* Cluster mode: this node's part failed; the controller decides what
     * the job does next (most often a restart in a new epoch). */
    if (n->cfg.cluster)
      log_warn("job part failed (the controller decides what follows): %s",
               n->why);
    else
      log_error("job failed: %s", n->why);
    n->exit_code = NODE_EXIT_FAILED;
    break;
  }
  n->phase = NODE_PH_EXIT;
  if (n->cfg.cluster)
    node_part_ended(n); /* the node stays: a spare, or the next epoch's */
  else
    node_shutdown(n);
}

static void step(struct node *n, uint64_t now)
{
  for (uint32_t i = 0; i < n->cfg.ranks && n->phase <= NODE_PH_RUNNING; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->smp == NULL && r->smp_respawn_at != 0 && now >= r->smp_respawn_at)
      node_life_spawn_smp(n, r, now);
    if (r->tstate == NODE_TR_GONE_WAIT && node_job_overdue(n, r->gone_deadline))
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
    if (node_life_stop_role(n, NODE_ROLE_TRAINER, now)) {
      n->kill_at = now + NODE_TERM_GRACE_MS;
      node_life_set_phase(n, NODE_PH_STOP_SMPS);
    }
    break;
  case NODE_PH_STOP_SMPS:
    if (node_life_stop_role(n, NODE_ROLE_SMP, now))
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
  if (n->phase == NODE_PH_RUNNING) {
    CONSIDER(n->end_deadline);
    CONSIDER(n->recover_deadline);
    uint64_t c = n->decider->next_deadline(n);
    if (c != UINT64_MAX)
      CONSIDER(c);
  }
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
  node_job_drive(t->data);
}

bool node_job_overdue(const struct node *n, uint64_t deadline)
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

void node_job_io_clock_open(struct node *n)
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

void node_job_drive(struct node *n)
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
  if (n->cfg.cluster)
    node_part_report_after_drive(n);
  uint64_t d = next_deadline(n, now);
  n->timer.data = n;
  if (d == UINT64_MAX) {
    uv_timer_stop(&n->timer);
  } else {
    now = rpc_now_ms();
    uv_timer_start(&n->timer, on_timer, d > now ? d - now : 1, 0);
  }
}
