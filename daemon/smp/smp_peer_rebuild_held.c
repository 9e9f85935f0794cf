/*
 * smp_peer_rebuild_held.c — the trainer's RESTORE_QUERY while its SMP
 * rebuilds the step to restore (smp_peer_rebuild.c): held until the
 * rebuild ends and answered then (as usual once the step is here, or with
 * why not), or, for a trainer that said how long it waits (wait_ms),
 * answered before then with the progress (-EINPROGRESS, bytes received of
 * about k per byte of the slot), after which libpt asks again. One query
 * is held at a time: a second one from another connection replaces it.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "daemon/smp/smp_peer_int.h"
#include "daemon/smp/smp_peer_rebuild_int.h"

/* The held query's connection, no longer held; NULL when none or closing. */
static struct smp_conn *take_held(struct smp_peer_rebuild *r)
{
  struct smp_conn *sc = r->held ? r->held_sc : NULL;
  r->held = false;
  r->held_sc = NULL;
  return sc != NULL && !sc->closing ? sc : NULL;
}

static void reply(struct smp_conn *sc, uint64_t id, Pt__RestoreReply *m)
{
  rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &m->base);
}

void smp_peer_rebuild_held_answer(struct smp_peer_rebuild *r)
{
  struct smp_conn *sc = take_held(r);
  if (sc == NULL)
    return;
  if (r->state == RB_DONE) {
    smp_trainer_on_restore_query(sc, r->held_id, NULL); /* as usual now */
    return;
  }
  Pt__RestoreReply m = PT__RESTORE_REPLY__INIT;
  m.status = r->rc != 0 ? r->rc : PT_ESTATE;
  m.message = r->err;
  reply(sc, r->held_id, &m);
}

void smp_peer_rebuild_held_progress(struct smp_peer_rebuild *r)
{
  struct smp *smp = r->p->smp;
  struct smp_conn *sc = take_held(r);
  char msg[200];

  if (sc == NULL)
    return;
  uint64_t total = smp->store != NULL
                       ? snap_store_slot_bytes(smp->store) * smp->group.k
                       : 0;
  Pt__RestoreReply m = PT__RESTORE_REPLY__INIT;
  m.status = -EINPROGRESS;
  snprintf(msg, sizeof(msg), "step %" PRIu64 " is being rebuilt from coding "
           "group %u: %" PRIu64 " of about %" PRIu64 " bytes received in %"
           PRIu64 " ms", r->step, smp->group.group, r->received, total,
           rpc_now_ms() - r->t_start);
  m.message = msg;
  m.has_done_bytes = true;
  m.done_bytes = r->received;
  m.has_total_bytes = total > 0;
  m.total_bytes = total;
  reply(sc, r->held_id, &m);
}

bool smp_peer_rebuild_held_query(struct smp_conn *sc, uint64_t id,
                                 uint32_t wait_ms)
{
  struct smp_peer_rebuild *r = sc->smp->peer != NULL ? sc->smp->peer->rebuild
                                                     : NULL;
  if (r == NULL || (!smp_peer_rebuild_active(r) && r->state != RB_FAILED))
    return false;
  if (r->held && r->held_sc != sc) {
    uint64_t old_id = r->held_id;
    struct smp_conn *old = take_held(r);
    Pt__RestoreReply m = PT__RESTORE_REPLY__INIT;
    m.status = PT_ESTATE;
    m.message = "another restore query came";
    if (old != NULL)
      reply(old, old_id, &m);
  }
  r->held = true;
  r->held_sc = sc;
  r->held_id = id;
  /* A trainer that said how long it waits gets the progress before then;
   * one that did not (an older libpt, which takes -EINPROGRESS for an
   * error) is answered once the rebuild ends. */
  uint32_t answer_ms = REBUILD_ANSWER_MS;
  if (wait_ms / 2 < answer_ms)
    answer_ms = wait_ms / 2 > 0 ? wait_ms / 2 : 1;
  r->held_until = wait_ms > 0 ? rpc_now_ms() + answer_ms : UINT64_MAX;
  if (r->state == RB_FAILED) {
    smp_peer_rebuild_held_answer(r);
  } else if (!r->hold_logged) {
    r->hold_logged = true; /* (its queries again after each progress: not) */
    log_info("the trainer's restore waits for the rebuild of step %" PRIu64,
             r->step);
  }
  return true;
}

void smp_peer_rebuild_held_conn_gone(struct smp *smp, struct smp_conn *sc)
{
  struct smp_peer_rebuild *r = smp->peer != NULL ? smp->peer->rebuild : NULL;
  if (r != NULL && r->held && r->held_sc == sc) {
    r->held = false;
    r->held_sc = NULL;
  }
}
