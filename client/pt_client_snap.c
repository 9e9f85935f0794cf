/*
 * pt_client_snap.c — libpt: pt_snapshot() and pt_fence(), and the sealer
 * thread that waits for each snapshot's copy and seals it at once.
 * See pt_client_internal.h for the invariants.
 */
#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include "pt_client_internal.h"

/* pt_fence() waits this much past the seal's own deadline before it gives
 * up on the sealer: the sealer's request keeps that deadline itself. */
#define SEAL_GRACE_MS 1000

/* ---- the sealer ---- */

/* Tells the SMP to seal the snapshot's slot (SEAL) or, when its copy
 * failed, to free it (RELEASE) on the connection that acquired the slot,
 * and returns the snapshot's outcome. Sealer thread. */
static int seal_send(pt_client *c, uint32_t slot, uint64_t gen, uint64_t step,
                     uint64_t epoch, int copy_rc, uint64_t deadline)
{
  Pt__Seal seal = PT__SEAL__INIT;
  Pt__Release rel; /* only a failed copy fills it */
  char why[128];
  ProtobufCMessage *m = NULL;
  int rc;

  seal.slot = slot;
  seal.generation = gen;
  seal.step = step;
  seal.ok = true;
  if (copy_rc != 0) {
    snprintf(why, sizeof(why), "the copy failed: %s", pt_strerror(copy_rc));
    client_release_init(&rel, slot, gen, step, copy_rc, why);
  }
  pthread_mutex_lock(&c->conn_mu);
  if (c->fd < 0 || epoch != c->epoch) {
    rc = -ECONNRESET;
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu is lost: the connection to the SMP "
               "broke before it was sealed", (unsigned long long)step);
  } else {
    rc = copy_rc == 0
             ? client_conn_call(c, RPC_SEAL, &seal.base, RPC_REPLY, deadline, &m)
             : client_conn_call(c, RPC_RELEASE, &rel.base, RPC_REPLY, deadline,
                                &m);
  }
  pthread_mutex_unlock(&c->conn_mu);
  if (rc != 0)
    return rc;
  Pt__Reply *r = (Pt__Reply *)m;
  if (copy_rc != 0) {
    rc = copy_rc;
    client_log(c, PT_LOG_ERROR, "pt: copy of step %llu failed: %s",
               (unsigned long long)step, pt_strerror(copy_rc));
  } else if (r->status != 0) {
    rc = r->status;
    client_log(c, PT_LOG_ERROR, "pt: the SMP refused to seal step %llu: %s",
               (unsigned long long)step,
               r->message ? r->message : pt_strerror(rc));
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

void client_test_copy_fault(pt_client *c, int rc)
{
  pthread_mutex_lock(&c->mu);
  c->copy_fault = rc;
  pthread_mutex_unlock(&c->mu);
}

/* The sealer: for every snapshot posted (PHASE_COPYING), waits for its copy,
 * seals it at once and records the outcome (PHASE_DONE). Finishes the
 * snapshot in hand before it honours stop. */
static void *sealer_main(void *arg)
{
  pt_client *c = arg;
  struct sched_param sp = { .sched_priority = 0 };

  client_tls_sealer_of = c;
  pthread_setname_np(pthread_self(), "pt-seal");
  /* SCHED_BATCH, as the copy workers: woken by pt_snapshot(), the sealer
   * does not preempt the trainer's thread, which returns at once. */
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  int rc = kern_thread_bind(c->engine);
  if (rc != 0)
    client_log(c, PT_LOG_WARN, "pt: the sealer cannot use the copy "
               "engine's device: %s", pt_strerror(rc));

  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (!c->stop && c->phase != PHASE_COPYING)
      pthread_cond_wait(&c->cv, &c->mu);
    if (c->phase != PHASE_COPYING)
      break;
    uint32_t slot = c->p_slot;
    uint64_t gen = c->p_gen, step = c->p_step, epoch = c->p_epoch;
    pthread_mutex_unlock(&c->mu);

    int copy_rc = kern_save_wait(c->engine, -1);
    uint64_t deadline = client_deadline_after(c);
    pthread_mutex_lock(&c->mu);
    if (copy_rc == 0 && c->copy_fault != 0) { /* client_test_copy_fault */
      copy_rc = c->copy_fault;
      c->copy_fault = 0;
    }
    c->phase = PHASE_SEALING;
    c->seal_deadline = deadline;
    c->seal_sent = rpc_now_ms();
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);

    rc = seal_send(c, slot, gen, step, epoch, copy_rc, deadline);

    pthread_mutex_lock(&c->mu);
    c->seal_rc = rc;
    c->phase = PHASE_DONE;
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Starts the sealer unless it runs. Trainer's thread. */
static int sealer_ensure(pt_client *c)
{
  sigset_t all, old;
  int rc;

  if (c->sealer_started)
    return 0;
  /* The sealer blocks every signal: handlers run in the application's
   * threads. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&c->sealer, NULL, sealer_main, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot start the sealer thread: %s",
               pt_strerror(rc));
    return rc;
  }
  c->sealer_started = true;
  return 0;
}

/* Lets the sealer finish the snapshot in hand, then joins it. Bounded: the
 * copy completes and the seal keeps its deadline. */
void client_sealer_stop(pt_client *c)
{
  if (!c->sealer_started)
    return;
  pthread_mutex_lock(&c->mu);
  c->stop = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->sealer, NULL);
  c->sealer_started = false;
}

/* Collects the recorded outcome (under mu, in PHASE_DONE); the phase goes
 * back to IDLE. OUT: *abandoned, true when pt_fence() gave up on this
 * snapshot and reported and counted it already. */
int client_outcome_take_locked(pt_client *c, bool *abandoned)
{
  *abandoned = c->seal_abandoned;
  c->seal_abandoned = false;
  c->phase = PHASE_IDLE;
  return c->seal_rc;
}

/* After client_outcome_take_locked(), with mu released: hands the sealer's messages
 * on and counts a failure. */
void client_outcome_report(pt_client *c, int rc, bool abandoned)
{
  client_seal_msgs_flush(c);
  if (rc != 0 && !abandoned)
    c->failed++;
}

/* Waits, under mu, while the seal of a finished copy is on its way, until
 * the rpc_now_ms() time until at most. The seal keeps its own deadline;
 * SEAL_GRACE_MS past it only guards against a sealer that would not. */
static void seal_wait_locked(pt_client *c, uint64_t until)
{
  struct timespec limit;

  if (until > c->seal_deadline + SEAL_GRACE_MS)
    until = c->seal_deadline + SEAL_GRACE_MS;
  client_deadline_timespec(until, &limit);
  while (c->phase == PHASE_SEALING) {
    if (pthread_cond_timedwait(&c->cv, &c->mu, &limit) == ETIMEDOUT)
      break;
  }
}

/* Before a request of the trainer's own. PT_EINFLIGHT (nothing changed)
 * while the pending snapshot's copy runs. A finished copy is sealed before
 * the call goes on, as it always was: a seal on its way is waited for, until
 * the rpc_now_ms() time until at most; PT_SKIPPED when it is still on its way
 * then (the SMP does not answer). An outcome that nobody fenced is then
 * collected, logged and counted, and the call goes on (0). OUT: *busy_step,
 * the step in flight. */
int client_pending_settle(pt_client *c, uint64_t *busy_step, uint64_t until)
{
  bool abandoned = false;
  bool done;
  int rc = 0;

  pthread_mutex_lock(&c->mu);
  seal_wait_locked(c, until);
  if (c->phase == PHASE_COPYING || c->phase == PHASE_SEALING) {
    rc = c->phase == PHASE_COPYING ? PT_EINFLIGHT : PT_SKIPPED;
    *busy_step = c->p_step;
    pthread_mutex_unlock(&c->mu);
    return rc;
  }
  done = c->phase == PHASE_DONE;
  if (done)
    rc = client_outcome_take_locked(c, &abandoned);
  pthread_mutex_unlock(&c->mu);
  if (done)
    client_outcome_report(c, rc, abandoned);
  return 0;
}

/* ---- snapshot ---- */

static int snapshot_fail(pt_client *c, int rc)
{
  c->failed++;
  return rc;
}

/* The SMP did not answer within snap_timeout_ms: the step is skipped, as
 * when no slot is free, and training goes on. Said once per spell. */
static int snapshot_skip_slow(pt_client *c, uint64_t step, const char *what)
{
  c->skipped++;
  c->has_last_step = true;
  c->last_step = step;
  client_log(c, c->hang_skips == 0 ? PT_LOG_WARN : PT_LOG_DEBUG,
             "pt: step %llu skipped: the SMP at '%s' has not answered %s "
             "within %d ms; training goes on, and steps are skipped while it "
             "stays so", (unsigned long long)step, c->socket_path, what,
             c->snap_timeout_ms);
  c->hang_skips++;
  return PT_SKIPPED;
}

/* Refuses a step that could never be committed: a trainer that did not ask
 * pt_restore() while a committed step exists (it would overwrite that run's
 * state with a new one from its start), or a step at or below the committed
 * one (the node commits only newer steps). */
static int snapshot_order_check(pt_client *c, uint64_t step)
{
  if (!c->has_committed)
    return 0;
  if (c->found_committed && !c->restore_called) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu refused: step %llu is committed "
               "and pt_restore() was not called; restore first, or start the "
               "job fresh", (unsigned long long)step,
               (unsigned long long)c->committed_step);
    return PT_ENORESTORE;
  }
  if (step <= c->committed_step) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu refused: step %llu is committed "
               "already, and only a newer step can be",
               (unsigned long long)step,
               (unsigned long long)c->committed_step);
    return PT_ESTEP;
  }
  return 0;
}

/* Gives a slot back that will not be written (RELEASE); why: the pt error
 * that stopped the snapshot. */
static void slot_give_back(pt_client *c, uint32_t slot, uint64_t gen,
                           uint64_t step, int why, uint64_t deadline)
{
  Pt__Release back = PT__RELEASE__INIT;
  ProtobufCMessage *m = NULL;
  char reason[128];

  snprintf(reason, sizeof(reason), "the snapshot stopped before its copy: %s",
           pt_strerror(why));
  client_release_init(&back, slot, gen, step, why, reason);
  if (client_conn_call_locked(c, RPC_RELEASE, &back.base, RPC_REPLY, deadline,
                              &m) == 0)
    protobuf_c_message_free_unpacked(m, NULL);
}

int pt_cuda_stream_set(pt_client *c, void *stream)
{
  if (c == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  return kern_save_after(c->engine, stream);
}

int pt_snapshot(pt_client *c, uint64_t step)
{
  Pt__SlotAcquire req = PT__SLOT_ACQUIRE__INIT;
  ProtobufCMessage *m = NULL;
  Pt__SlotReply *r;
  uint32_t slot;
  uint64_t gen, epoch = 0, busy_step = 0, bound, deadline;
  int rc;

  if (c == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  bound = rpc_now_ms() + (uint64_t)c->snap_timeout_ms;
  if ((rc = snapshot_order_check(c, step)) != 0)
    return snapshot_fail(c, rc);
  if (c->has_last_step && step <= c->last_step) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot step %llu does not follow step %llu",
               (unsigned long long)step, (unsigned long long)c->last_step);
    return snapshot_fail(c, -EINVAL);
  }
  rc = client_pending_settle(c, &busy_step, bound);
  if (rc == PT_EINFLIGHT) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu refused: the copy of step %llu is "
               "in flight (call pt_fence first)",
               (unsigned long long)step, (unsigned long long)busy_step);
    return snapshot_fail(c, PT_EINFLIGHT);
  }
  if (rc == PT_SKIPPED)
    return snapshot_skip_slow(c, step, "the seal of the previous step");
  if ((rc = client_table_freeze(c)) != 0)
    return snapshot_fail(c, rc);
  if ((rc = sealer_ensure(c)) != 0)
    return snapshot_fail(c, rc);

  /* Only the first HELLO, which may make the SMP create and pre-fault its
   * object, may take the whole request deadline. */
  deadline = c->had_session ? bound : client_deadline_after(c);
  if (!c->had_session) {
    if ((rc = client_session_open(c, deadline)) != 0)
      return snapshot_fail(c, rc);
    if ((rc = snapshot_order_check(c, step)) != 0)
      return snapshot_fail(c, rc);
  }
  req.step = step;
  rc = client_session_call(c, RPC_SLOT_ACQUIRE, &req.base, RPC_SLOT_REPLY, deadline,
                    &m, &epoch);
  if (rc == -ETIMEDOUT && c->had_session)
    return snapshot_skip_slow(c, step, "the slot request");
  if (rc != 0)
    return snapshot_fail(c, rc);
  r = (Pt__SlotReply *)m;
  rc = r->status;
  if (r->has_committed_step) {
    c->has_committed = true;
    c->committed_step = r->committed_step;
  }
  int order = snapshot_order_check(c, step);
  if (order != 0) {
    if (rc == 0 && r->has_slot && r->has_generation)
      slot_give_back(c, r->slot, r->generation, step, order, bound);
    protobuf_c_message_free_unpacked(m, NULL);
    return snapshot_fail(c, order);
  }
  if (c->hang_skips > 0) {
    client_log(c, PT_LOG_INFO, "pt: the SMP answers again, after %llu "
               "skipped steps", (unsigned long long)c->hang_skips);
    c->hang_skips = 0;
  }
  if (rc == PT_RECOVER && c->recover_in_place) {
    client_log(c, PT_LOG_INFO, "pt: step %llu not taken: the node asks this "
               "trainer to restore in place", (unsigned long long)step);
    protobuf_c_message_free_unpacked(m, NULL);
    return PT_RECOVER;
  }
  if (rc == PT_SKIPPED) {
    c->skipped++;
    c->has_last_step = true;
    c->last_step = step;
    protobuf_c_message_free_unpacked(m, NULL);
    return PT_SKIPPED;
  }
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP gave no slot for step %llu: %s",
               (unsigned long long)step,
               r->message ? r->message : pt_strerror(rc));
    protobuf_c_message_free_unpacked(m, NULL);
    return snapshot_fail(c, rc);
  }
  if (!r->has_slot || !r->has_generation ||
      r->slot >= snap_store_nslots(c->store)) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP's slot reply is malformed");
    protobuf_c_message_free_unpacked(m, NULL);
    pthread_mutex_lock(&c->conn_mu);
    client_conn_drop(c); /* its slot is freed when the connection closes */
    pthread_mutex_unlock(&c->conn_mu);
    return snapshot_fail(c, PT_EPROTO);
  }
  slot = r->slot;
  gen = r->generation;
  protobuf_c_message_free_unpacked(m, NULL);

  char *data = snap_slot_data(c->store, slot);
  uint32_t *crcs = snap_slot_crcs(c->store, slot);
  /* The blob goes in now, with its length and CRC in the table's trailer
   * (covered by the table CRC the SMP records at seal): at most PT_BLOB_MAX
   * bytes, so a copy here costs microseconds and frees the caller's buffer
   * at once. */
  uint8_t *blob_dst = snap_slot_blob(c->store, slot);
  uint32_t nblocks = snap_store_nblocks(c->store);
  if (c->blob_len > 0)
    memcpy(blob_dst, c->blob, c->blob_len);
  crcs[nblocks] = (uint32_t)c->blob_len;
  crcs[nblocks + 1] = crc32c(blob_dst, c->blob_len);
  /* This slot's pages first: the populating runs ahead of the copy. */
  snap_populate_hint(c->populate, data, snap_store_slot_bytes(c->store));
  for (size_t i = 0; i < c->nregions; i++) {
    const struct snap_region *sr = snap_store_region(c->store, (uint32_t)i);
    c->xfers[i] = (struct kern_xfer){
      .dst = data + sr->offset,
      .src = c->regions[i].ptr,
      .bytes = c->regions[i].bytes,
      .crcs = crcs + sr->first_block,
      .src_mem = c->regions[i].kind == PT_MEM_DEVICE ? KERN_MEM_DEVICE
                                                      : KERN_MEM_HOST,
      .dst_mem = KERN_MEM_HOST,
    };
  }
  rc = kern_save_start(c->engine, c->xfers, c->nregions, true);
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot start the copy of step %llu: %s",
               (unsigned long long)step, pt_strerror(rc));
    slot_give_back(c, slot, gen, step, rc, rpc_now_ms() + c->snap_timeout_ms);
    return snapshot_fail(c, rc);
  }
  /* The sealer takes it from here. */
  pthread_mutex_lock(&c->mu);
  c->p_slot = slot;
  c->p_gen = gen;
  c->p_step = step;
  c->p_epoch = epoch;
  c->phase = PHASE_COPYING;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  c->has_last_step = true;
  c->last_step = step;
  c->started++;
  return 0;
}

int pt_fence(pt_client *c)
{
  bool abandoned, first;
  uint64_t step, until;
  int rc;

  if (c == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
    return PT_ESTATE;
  pthread_mutex_lock(&c->mu);
  /* The copy always completes: the engine finishes what it started. */
  while (c->phase == PHASE_COPYING)
    pthread_cond_wait(&c->cv, &c->mu);
  if (c->phase == PHASE_SEALING && c->seal_abandoned) {
    /* An earlier pt_fence() reported it already. */
    pthread_mutex_unlock(&c->mu);
    return PT_OK;
  }
  /* Training does not wait for protection: the seal's answer is waited for
   * snap_timeout_ms past the copy's end (or this call) at most. */
  until = rpc_now_ms();
  if (c->phase == PHASE_SEALING && c->seal_sent > until)
    until = c->seal_sent;
  seal_wait_locked(c, until + (uint64_t)c->snap_timeout_ms);
  switch (c->phase) {
  case PHASE_SEALING:
    first = !c->seal_abandoned;
    c->seal_abandoned = true;
    step = c->p_step;
    pthread_mutex_unlock(&c->mu);
    client_log(c, PT_LOG_ERROR,
               "pt: the SMP at '%s' has not answered the SEAL of step %llu "
               "within %d ms; counted as failed", c->socket_path,
               (unsigned long long)step, c->snap_timeout_ms);
    if (first)
      c->failed++;
    return -ETIMEDOUT;
  case PHASE_DONE:
    rc = client_outcome_take_locked(c, &abandoned);
    pthread_mutex_unlock(&c->mu);
    client_outcome_report(c, rc, abandoned);
    return abandoned ? PT_OK : rc;
  default:
    pthread_mutex_unlock(&c->mu);
    return PT_OK;
  }
}
