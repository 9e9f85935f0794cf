/*
 * node_events.c — what the SMPs say to `ptd node`: their STATE_REPLYs,
 * replies to requests, requests that failed without an answer, and events
 * (a step sealed, a trainer refused or gone). On the loop thread; each
 * handler changes the node's view and leaves the rest to node_job_drive().
 * What concerns commits goes to the decider (node_decider.h).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"

void node_events_on_state_reply(struct node *n, struct node_rank *r,
                         enum node_req_kind kind, const Pt__StateReply *m)
{
  /* The SMP serves the job's rank first_rank + local rank (cluster mode:
   * global ranks; standalone: first_rank 0). */
  if (m->rank != n->cfg.first_rank + r->rank)
    log_warn("smp of rank %s reports rank %" PRIu32, NODE_RANK(n, r->rank),
             m->rank);
  r->has_store = m->has_has_store && m->has_store;
  uint32_t port = m->has_peer_port ? m->peer_port : 0;
  if (port != r->peer_port) {
    r->peer_port = port;
    n->peer_ports_dirty = true; /* the controller hears it */
  }
  if (m->has_bytes_held)
    r->bytes_held = m->bytes_held;
  r->trainer_done_reported = m->has_trainer_done && m->trainer_done;
  r->trainer_pid_reported = m->has_trainer_pid ? m->trainer_pid : 0;
  r->nview = 0;
  for (size_t k = 0; k < m->n_slots && r->nview < SNAP_MAX_SLOTS; k++) {
    const Pt__SlotInfo *s = m->slots[k];
    r->view[r->nview++] = (struct node_slot_view){
        .step = s->step, .state = s->state, .verified = s->has_intact,
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
  /* A fresh view: the last step it sealed (for ptctl), and what the
   * decider learns from it. */
  for (uint32_t k = 0; k < r->nview; k++) {
    const struct node_slot_view *v = &r->view[k];
    bool newer = !n->has_committed || v->step > n->committed;
    if (snap_state_awaits_commit(v->state) && newer &&
        (!r->has_last_sealed || v->step > r->last_sealed)) {
      r->has_last_sealed = true;
      r->last_sealed = v->step;
    }
  }
  n->decider->on_view(n, r);
}

void node_events_on_reply(struct node *n, struct node_rank *r,
                   const struct node_req *q, int status, const char *message)
{
  const char *text = message != NULL && message[0] != '\0'
                         ? message : pt_strerror(status);

  switch (q->kind) {
  case NODE_REQ_PIN:
  case NODE_REQ_COMMIT:
  case NODE_REQ_UNPIN:
  case NODE_REQ_RECOMMIT:
  case NODE_REQ_STALE_UNPIN:
    n->decider->on_answer(n, r, q, true, status, text);
    return;
  case NODE_REQ_SET_RESTORE:
    break;
  case NODE_REQ_PEERS_SET:
    if (status < 0)
      log_warn("smp rank %" PRIu32 " did not take its group's addresses: %s",
               r->rank, LOG_ESC(text));
    return;
  case NODE_REQ_RECOVER:
    node_recover_on_reply(n, r, status, text);
    return;
  case NODE_REQ_TRAINER_SET:
    /* -ESRCH: the trainer exited already; its exit is handled anyway. */
    if (status < 0)
      log_info("smp rank %s did not take the trainer's announcement: "
               "%s", NODE_RANK(n, r->rank), LOG_ESC(text));
    return;
  default:
    return;
  }
  if (n->phase != NODE_PH_SET_RESTORE)
    return;
  if (status < 0) {
    log_error("smp rank %s cannot set the restore point: %s",
              NODE_RANK(n, r->rank), text);
    n->attempt_failed = true;
  } else {
    r->set_restore_ok = true;
  }
}

void node_events_on_req_failed(struct node *n, struct node_rank *r,
                        const struct node_req *q, int err)
{
  if ((q->kind == NODE_REQ_VERIFY && n->phase == NODE_PH_QUERY) ||
      (q->kind == NODE_REQ_SET_RESTORE && n->phase == NODE_PH_SET_RESTORE)) {
    log_warn("smp rank %s: restore request failed: %s", NODE_RANK(n, r->rank),
             pt_strerror(err));
    n->attempt_failed = true;
  } else if (q->kind == NODE_REQ_PIN || q->kind == NODE_REQ_COMMIT ||
             q->kind == NODE_REQ_UNPIN || q->kind == NODE_REQ_RECOMMIT ||
             q->kind == NODE_REQ_STALE_UNPIN) {
    n->decider->on_answer(n, r, q, false, err, pt_strerror(err));
  } else if (q->kind == NODE_REQ_DRAIN) {
    r->drained = true; /* nothing more will come from it */
  } else if (q->kind == NODE_REQ_PEERS_SET) {
    r->peers_due = true; /* again when it answers */
  } else if (q->kind == NODE_REQ_RECOVER) {
    node_recover_on_reply(n, r, err, pt_strerror(err));
  }
}

void node_events_on_event(struct node *n, struct node_rank *r, const Pt__Event *e)
{
  if (e->rank != n->cfg.first_rank + r->rank)
    log_warn("smp of rank %s sent an event for rank %" PRIu32,
             NODE_RANK(n, r->rank), e->rank);
  if (e->kind == PT__EVENT_KIND__EVENT_SEALED && e->has_step) {
    log_debug("rank %s sealed step %" PRIu64, NODE_RANK(n, r->rank), e->step);
    r->progress_at = rpc_now_ms();
    r->ncommitted_held = 0;
    for (size_t k = 0; k < e->n_committed_held && k < SNAP_MAX_SLOTS; k++)
      r->committed_held[r->ncommitted_held++] = e->committed_held[k];
    if (!r->has_last_sealed || e->step > r->last_sealed) {
      r->has_last_sealed = true;
      r->last_sealed = e->step;
    }
    node_fault_on_sealed(n, e->step);
    if (n->phase != NODE_PH_RUNNING && n->phase != NODE_PH_STARTING)
      return;
    /* The shm object appeared with the first snapshot: learn its size. */
    bool asking = false;
    for (uint32_t k = 0; k < r->nreqs; k++)
      asking = asking || r->reqs[k].kind == NODE_REQ_STATE;
    if (r->bytes_held == 0 && r->subscribed && !asking)
      node_smp_request(n, r, NODE_REQ_STATE, 0, NULL);
    n->decider->on_sealed(n, r, e->step);
  } else if (e->kind == PT__EVENT_KIND__EVENT_HELLO_REFUSED) {
    /* The trainer's regions do not fit the budget or /dev/shm: no restart
     * can cure that, whatever the trainer does with the error. */
    int status = e->has_status ? e->status : 0;
    char why[sizeof(n->why)];
    snprintf(why, sizeof(why),
             "smp rank %s refused its trainer: %s (not "
             "restarted: raise --memory-budget or make room in /dev/shm)",
             NODE_RANK(n, r->rank),
             e->message != NULL ? e->message : pt_strerror(status));
    if ((status == PT_EBUDGET || status == -ENOSPC) &&
        n->phase <= NODE_PH_RUNNING)
      node_life_fail_permanent(n, "%s", why);
    else if ((status == PT_EBUDGET || status == -ENOSPC) &&
             n->outcome == NODE_OUT_FAILED && n->permanent &&
             n->phase < NODE_PH_EXIT)
      /* Its trainer's exit 78 came first: the SMP's words have the
       * numbers (bytes needed, the budget). */
      memcpy(n->why, why, sizeof(why));
  } else if (e->kind == PT__EVENT_KIND__EVENT_REBUILD_STARTED) {
    log_debug("rank %s: its smp rebuilds step %" PRIu64 " from its group",
              NODE_RANK(n, r->rank), e->step);
    if (n->part != NULL) {
      n->rebuilt_epoch = node_part_epoch(n);
      n->report_owed = true; /* the controller counts the group's health */
    }
    node_fault_on_rebuild(n, e->step);
  } else if (e->kind == PT__EVENT_KIND__EVENT_REBUILD_FAILED) {
    /* The step to restore could not be rebuilt here: the trainer's
     * failure that follows says why. */
    snprintf(r->smp_words, sizeof(r->smp_words), "%s",
             e->message != NULL ? e->message : pt_strerror(e->status));
    /* Too few of the group hold it (PT_ENOFRAG), none its checksum table
     * (-ENOENT), or, rebuilt, it failed its checksums with no survivor to
     * spare (PT_ECHECKSUM: a survivor's piece is damaged, or the spare
     * was erased for a fault that may pass): memory cannot serve the
     * step now. The controller restores from disk where the job has a
     * complete step there, else restarts as for any failure. */
    if (n->cfg.cluster && e->has_status &&
        (e->status == PT_ENOFRAG || e->status == -ENOENT ||
         e->status == PT_ECHECKSUM))
      n->why_status = PT_ENOFRAG;
  } else if (e->kind == PT__EVENT_KIND__EVENT_RECOVERED) {
    node_recover_on_event(n, r, e);
  } else if (e->kind == PT__EVENT_KIND__EVENT_PERSISTED) {
    node_persist_on_event(n, r, e);
  } else if (e->kind == PT__EVENT_KIND__EVENT_LOAD_FAILED) {
    node_persist_restore_load_failed(n, r, e);
    snprintf(r->smp_words, sizeof(r->smp_words), "%s",
             e->message != NULL ? e->message : pt_strerror(e->status));
  } else if (e->kind == PT__EVENT_KIND__EVENT_TRAINER_GONE) {
    r->gone_seen = true;
    r->gone_done = e->has_done && e->done;
    log_debug("rank %s: trainer gone (done=%d)", NODE_RANK(n, r->rank),
              (int)r->gone_done);
    if (r->tstate == NODE_TR_GONE_WAIT) {
      r->tstate = r->gone_done ? NODE_TR_DONE : NODE_TR_FAILED;
      if (!r->gone_done)
        snprintf(r->why, sizeof(r->why),
                 "trainer rank %s ended without saying it finished",
                 NODE_RANK(n, r->rank));
      n->drive_again = true;
    }
  }
}
