/*
 * smp_recover.c — recovery in place, the SMP's part: the node's RECOVER
 * (another rank's trainer died; this one, alive and able to, restores
 * instead of being restarted), the trainer's RECOVER_QUERY, and the hold
 * on its RESTORE_QUERY until the node's SET_RESTORE names the step.
 *
 * While a recovery is pending the trainer gets no slot (SLOT_ACQUIRE
 * answers PT_RECOVER): nothing it writes can be mistaken for a step of the
 * run the node restores. The first RESTORE_QUERY answered after the
 * SET_RESTORE ends it, and EVENT_RECOVERED tells the node, which restarts
 * the whole job instead when that does not come in time.
 */
#include <errno.h>
#include <inttypes.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"

int smp_recover_on_recover(struct smp_conn *sc, uint64_t id,
                           const Pt__Recover *m)
{
  struct smp *smp = sc->smp;
  struct smp_conn *t = smp->trainer;

  if (t == NULL || smp->store == NULL) {
    smp_serve_reply_status(sc, id, PT_ESTATE, "no trainer is connected");
    return 0;
  }
  if (!t->recover_in_place) {
    smp_serve_reply_status(sc, id, PT_ESTATE, "the trainer cannot restore "
                           "in place (it did not open its client with "
                           "recover_in_place)");
    return 0;
  }
  smp->recover_pending = true;
  smp->recover_point = false;
  smp->recover_gen = m->generation;
  /* The restore point comes with the node's next SET_RESTORE. */
  smp->restore_set = false;
  log_info("the node asks trainer pid %d to restore in place (recovery %"
           PRIu64 ")", (int)t->pid, m->generation);
  smp_serve_reply_status(sc, id, 0, NULL);
  return 0;
}

int smp_recover_on_query(struct smp_conn *sc, uint64_t id)
{
  struct smp *smp = sc->smp;

  if (smp->trainer != sc) {
    smp_serve_reply_status(sc, id, PT_ESTATE,
                           "recover query before an accepted hello");
    return 0;
  }
  Pt__Reply r = PT__REPLY__INIT;
  r.status = smp->recover_pending ? PT_RECOVER : 0;
  r.has_generation = smp->recover_pending;
  r.generation = smp->recover_gen;
  rpc_conn_send(sc->conn, RPC_REPLY, id, &r.base);
  return 0;
}

bool smp_recover_hold_restore(struct smp_conn *sc, uint64_t id)
{
  struct smp *smp = sc->smp;

  if (!smp->recover_pending || smp->recover_point)
    return false;
  Pt__RestoreReply r = PT__RESTORE_REPLY__INIT;
  r.status = -EINPROGRESS;
  r.message = "waiting for the node's restore point";
  rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &r.base);
  return true;
}

void smp_recover_restored(struct smp *smp, int rc, uint64_t step)
{
  if (!smp->recover_pending || !smp->recover_point)
    return;
  smp->recover_pending = false;
  smp->recover_point = false;
  if (rc != 0 && rc != PT_ENOSNAP) {
    log_warn("recovery %" PRIu64 " in place: the restore point could not be "
             "given (%s)", smp->recover_gen, pt_strerror(rc));
    return; /* no event: the node's deadline restarts the job */
  }
  Pt__Event ev = PT__EVENT__INIT;
  ev.kind = PT__EVENT_KIND__EVENT_RECOVERED;
  ev.rank = smp->rank;
  ev.has_step = rc == 0;
  ev.step = step;
  smp_serve_event_send(smp, &ev);
}

void smp_recover_set_restore(struct smp *smp)
{
  if (smp->recover_pending)
    smp->recover_point = true;
}

void smp_recover_trainer_gone(struct smp *smp)
{
  smp->recover_pending = false;
  smp->recover_point = false;
}
