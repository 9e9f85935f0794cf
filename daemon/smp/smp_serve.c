/*
 * smp_serve.c — how ptd smp takes a request: the helpers that the trainer's
 * requests (smp_trainer.c) and the node's (smp_node.c) share, and the
 * dispatch that hands each request to its handler.
 *
 * Roles: smp_serve_on_msg serves a request only on a connection of the role that
 * may send it (trainer: after an accepted HELLO; node: after a SUBSCRIBE with
 * the node's secret); anything else is answered PT_EROLE and logged. Text
 * from clients is logged through LOG_ESC. A HELLO must come from the session
 * of the trainer the node announced (TRAINER_SET, smp_trainer_pid.c).
 *
 * Every request is answered at once from the object's slot table; nothing
 * here waits on another process. Slot states change only through
 * snapshot/snap_store.h's state machine. A reply that cannot be queued (the
 * peer is gone) is dropped: the connection's close cleans up.
 */
#include <inttypes.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"

/* ---- helpers ---- */

void smp_serve_reply_status(struct smp_conn *sc, uint64_t id, int status,
                      const char *message)
{
  Pt__Reply r = PT__REPLY__INIT;

  r.status = status;
  r.message = (char *)message;
  rpc_conn_send(sc->conn, RPC_REPLY, id, &r.base);
}

void smp_serve_event_send(struct smp *smp, Pt__Event *ev)
{
  if (smp->node != NULL)
    rpc_conn_send(smp->node->conn, RPC_EVENT, 0, &ev->base);
}

void smp_serve_event_outcome(struct smp *smp, Pt__EventKind kind,
                             uint64_t step, int status, const char *msg,
                             const uint64_t *mark)
{
  Pt__Event ev = PT__EVENT__INIT;
  ev.kind = kind;
  ev.rank = smp->rank;
  ev.has_step = true;
  ev.step = step;
  ev.has_status = true;
  ev.status = status;
  ev.message = (char *)(msg != NULL ? msg : "");
  ev.has_mark = mark != NULL;
  ev.mark = mark != NULL ? *mark : 0;
  smp_serve_event_send(smp, &ev);
}

/* Remembers a slot sc acquired. A slot has one current generation, so an
 * older entry for the same slot is replaced. */
void smp_serve_writing_add(struct smp_conn *sc, uint32_t slot, uint64_t gen)
{
  for (uint32_t i = 0; i < sc->nwriting; i++) {
    if (sc->writing[i].slot == slot) {
      sc->writing[i].generation = gen;
      return;
    }
  }
  if (sc->nwriting < SNAP_MAX_SLOTS) {
    sc->writing[sc->nwriting].slot = slot;
    sc->writing[sc->nwriting].generation = gen;
    sc->nwriting++;
  }
}

void smp_serve_writing_remove(struct smp_conn *sc, uint32_t slot, uint64_t gen)
{
  for (uint32_t i = 0; i < sc->nwriting; i++) {
    if (sc->writing[i].slot == slot && sc->writing[i].generation == gen) {
      sc->writing[i] = sc->writing[--sc->nwriting];
      return;
    }
  }
}

/* Frees every slot this connection acquired and did not seal. */
void smp_serve_writing_abort_all(struct smp_conn *sc)
{
  struct smp *smp = sc->smp;

  for (uint32_t i = 0; i < sc->nwriting; i++) {
    if (smp->store == NULL)
      break;
    int rc = snap_slot_abort(smp->store, sc->writing[i].slot,
                             sc->writing[i].generation);
    if (rc == 0) {
      log_notice("slot %u freed: its writer went away before sealing",
                 sc->writing[i].slot);
      smp_peer_slot_dropped(smp, sc->writing[i].slot);
    }
  }
  sc->nwriting = 0;
}

/* The trainer role of sc ends (BYE or close): tell the node once. */
void smp_serve_trainer_release(struct smp_conn *sc, bool done)
{
  struct smp *smp = sc->smp;

  if (smp->trainer == sc) {
    smp->trainer = NULL;
    smp->trainer_pid = 0;
    smp->trainer_done = done;
    smp_recover_trainer_gone(smp);
  }
  if (!sc->gone_sent) {
    Pt__Event ev = PT__EVENT__INIT;
    sc->gone_sent = true;
    ev.kind = PT__EVENT_KIND__EVENT_TRAINER_GONE;
    ev.rank = smp->rank;
    ev.has_done = true;
    ev.done = done;
    smp_serve_event_send(smp, &ev);
  }
}

int smp_serve_commit_step(struct smp *smp, uint64_t step)
{
  int rc = snap_slot_commit(smp->store, step);

  if (rc == 0) {
    smp->restore_set = false;
    log_debug("committed step %" PRIu64, step);
  } else {
    log_warn("cannot commit step %" PRIu64 ": %s", step, pt_strerror(rc));
  }
  return rc;
}

/* ---- dispatch ---- */

/* Which role may send a request; ROLE_NONE: HELLO and SUBSCRIBE, which
 * give one. -1: a type no peer sends to an SMP. */
static int role_of_request(uint32_t type)
{
  switch (type) {
  case RPC_HELLO:
  case RPC_SUBSCRIBE:
    return ROLE_NONE;
  case RPC_SLOT_ACQUIRE:
  case RPC_SEAL:
  case RPC_RELEASE:
  case RPC_RESTORE_QUERY:
  case RPC_RECOVER_QUERY:
  case RPC_BYE:
    return ROLE_TRAINER;
  case RPC_STATE_QUERY:
  case RPC_PIN:
  case RPC_COMMIT:
  case RPC_UNPIN:
  case RPC_SET_RESTORE:
  case RPC_TRAINER_SET:
  case RPC_PEERS_SET:
  case RPC_RECOVER:
    return ROLE_NODE;
  default:
    return -1;
  }
}

static const char *role_name(int role)
{
  return role == ROLE_TRAINER ? "the trainer's"
         : role == ROLE_NODE  ? "the node's"
                              : "a role-less";
}

/* Answers a request the connection's role may not send with PT_EROLE, in
 * the reply type the sender waits for. A connection with no role is closed
 * after the answer: it has nothing else to do here. */
static int refuse_role(struct smp_conn *sc, const struct rpc_hdr *h)
{
  static char msg[] = "request refused: not allowed for this connection's role";
  uint64_t id = h->request_id;

  log_warn("refusing %s from pid %d on %s connection%s",
           rpc_type_name(h->type), rpc_conn_peer_pid(sc->conn),
           role_name(sc->role),
           sc->role == ROLE_NONE ? "; closing it" : "");
  switch (h->type) {
  case RPC_HELLO: {
    Pt__HelloReply r = PT__HELLO_REPLY__INIT;
    r.status = PT_EROLE;
    r.message = msg;
    rpc_conn_send(sc->conn, RPC_HELLO_REPLY, id, &r.base);
    break;
  }
  case RPC_SLOT_ACQUIRE: {
    Pt__SlotReply r = PT__SLOT_REPLY__INIT;
    r.status = PT_EROLE;
    r.message = msg;
    rpc_conn_send(sc->conn, RPC_SLOT_REPLY, id, &r.base);
    break;
  }
  case RPC_RESTORE_QUERY: {
    Pt__RestoreReply r = PT__RESTORE_REPLY__INIT;
    r.status = PT_EROLE;
    r.message = msg;
    rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &r.base);
    break;
  }
  case RPC_SUBSCRIBE:
  case RPC_STATE_QUERY: {
    Pt__StateReply r = PT__STATE_REPLY__INIT;
    r.status = PT_EROLE;
    r.message = msg;
    r.rank = sc->smp->rank;
    rpc_conn_send(sc->conn, RPC_STATE_REPLY, id, &r.base);
    break;
  }
  default:
    smp_serve_reply_status(sc, id, PT_EROLE, msg);
    break;
  }
  if (sc->role == ROLE_NONE)
    rpc_conn_close(sc->conn, PT_EROLE);
  return 0;
}

int smp_serve_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
               ProtobufCMessage *msg)
{
  struct smp_conn *sc = rpc_conn_data(c);
  uint64_t id = h->request_id;

  if (sc == NULL)
    return PT_ESTATE;
  sc->nframes++;
  int need = role_of_request(h->type);
  if (need < 0) {
    log_debug("closing a connection that sent an unexpected %s",
              rpc_type_name(h->type));
    return PT_EPROTO;
  }
  /* HELLO and SUBSCRIBE may repeat on the connection they gave a role to,
   * but never turn a trainer into the node or the node into a trainer. */
  if (need == ROLE_NONE ? (sc->role != ROLE_NONE &&
                           sc->role != (h->type == RPC_HELLO ? ROLE_TRAINER
                                                             : ROLE_NODE))
                        : sc->role != need)
    return refuse_role(sc, h);
  /* Every request but HELLO (which checks for itself) may touch the
   * mapping: a truncated object is dropped here, before it can fault. */
  if (h->type != RPC_HELLO && sc->smp->store != NULL)
    smp_store_guard(sc->smp, false);
  /* The node decides the restore point from what the SMP reports: with no
   * store held (dropped, or refused at start-up), the object now under the
   * name is what a trainer's HELLO would map, so it is what the state and
   * the restore point must be about. */
  if ((h->type == RPC_STATE_QUERY || h->type == RPC_SET_RESTORE ||
       h->type == RPC_SUBSCRIBE) &&
      sc->smp->store == NULL && sc->role == ROLE_NODE)
    smp_store_load(sc->smp);
  switch (h->type) {
  case RPC_HELLO:
    return smp_trainer_on_hello(sc, id, (Pt__Hello *)msg);
  case RPC_SLOT_ACQUIRE:
    return smp_trainer_on_slot_acquire(sc, id, (Pt__SlotAcquire *)msg);
  case RPC_SEAL:
    return smp_trainer_on_seal(sc, id, (Pt__Seal *)msg);
  case RPC_RELEASE:
    return smp_trainer_on_release(sc, id, (Pt__Release *)msg);
  case RPC_RESTORE_QUERY:
    return smp_trainer_on_restore_query(sc, id, (Pt__RestoreQuery *)msg);
  case RPC_BYE:
    return smp_trainer_on_bye(sc, id, (Pt__Bye *)msg);
  case RPC_SUBSCRIBE:
    return smp_node_on_subscribe(sc, id, (Pt__Subscribe *)msg);
  case RPC_STATE_QUERY:
  {
    const Pt__StateQuery *q = (const Pt__StateQuery *)msg;
    smp_node_state_reply(sc, id, q->verify, q->has_newest_first && q->newest_first);
    return 0;
  }
  case RPC_PIN:
    return smp_node_on_pin(sc, id, (Pt__Pin *)msg);
  case RPC_COMMIT:
    return smp_node_on_commit(sc, id, (Pt__Commit *)msg);
  case RPC_UNPIN:
    return smp_node_on_unpin(sc, id, (Pt__Unpin *)msg);
  case RPC_SET_RESTORE:
    return smp_node_on_set_restore(sc, id, (Pt__SetRestore *)msg);
  case RPC_TRAINER_SET:
    return smp_trainer_pid_on_trainer_set(sc, id, (Pt__TrainerSet *)msg);
  case RPC_PEERS_SET:
    return smp_peer_link_on_peers_set(sc, id, (Pt__PeersSet *)msg);
  case RPC_RECOVER:
    return smp_recover_on_recover(sc, id, (Pt__Recover *)msg);
  case RPC_RECOVER_QUERY:
    return smp_recover_on_query(sc, id);
  default:
    return PT_EPROTO;
  }
}

void smp_serve_conn_role_given(struct smp_conn *sc, int role)
{
  sc->role = role;
  rpc_conn_set_idle(sc->conn, 0);
  rpc_conn_set_trusted(sc->conn, true);
}

void smp_serve_conn_gone(struct smp_conn *sc)
{
  struct smp *smp = sc->smp;

  smp_trainer_pid_watch_stop(sc);
  smp_serve_writing_abort_all(sc);
  if (smp->trainer == sc) {
    log_info("trainer pid %d disconnected", (int)sc->pid);
    smp_serve_trainer_release(sc, false);
  }
  if (smp->node == sc)
    smp->node = NULL;
  smp_peer_conn_gone(smp, sc);
  smp_peer_rebuild_held_conn_gone(smp, sc);
  smp_persist_load_conn_gone(smp, sc);
}
