/*
 * smp_node.c — ptd smp's answers to its node: SUBSCRIBE, STATE_QUERY, PIN,
 * COMMIT, UNPIN and SET_RESTORE, as the project's protocol notes define
 * them (TRAINER_SET is smp_trainer_pid.c's).
 *
 * A commit comes in two phases so that it holds on every rank or on none:
 * PIN pins the sealed step's slot (no new snapshot may reuse it), then
 * COMMIT makes it the committed step, or UNPIN drops the pin when another
 * rank could not pin the step (or a pin was left behind by a commit that
 * did not finish). A PIN this SMP refuses leaves no pin it made (a coded
 * step's PIN, answered once the group protected the step, may be refused
 * with any code, a member's -ENOENT too): only an accepted PIN holds a
 * slot until its COMMIT or UNPIN, and one whose node went while it waited
 * (the node that comes back adopts the pin it finds).
 */
#include <errno.h>
#include <inttypes.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"

/* ---- node requests ---- */

void smp_node_state_reply(struct smp_conn *sc, uint64_t id, bool verify,
                          bool newest_first)
{
  struct smp *smp = sc->smp;
  Pt__StateReply r = PT__STATE_REPLY__INIT;
  Pt__SlotInfo infos[SNAP_MAX_SLOTS], *ptrs[SNAP_MAX_SLOTS];
  uint32_t n = smp->store ? snap_store_nslots(smp->store) : 0;

  if (n > SNAP_MAX_SLOTS)
    n = SNAP_MAX_SLOTS;
  uint32_t check[SNAP_MAX_SLOTS], n_check = 0;
  for (uint32_t i = 0; i < n; i++) {
    struct snap_slot_info si;
    snap_slot_get(smp->store, i, &si);
    pt__slot_info__init(&infos[i]);
    infos[i].slot = i;
    infos[i].state = si.state;
    infos[i].step = si.step;
    infos[i].generation = si.generation;
    if (verify && snap_state_holds_data(si.state))
      check[n_check++] = i;
    ptrs[i] = &infos[i];
  }
  if (n_check > 0) {
    /* The slots to read, each read in full on every core (the trainers are
     * stopped while the node asks this): all of them at once, or newest
     * step first, one at a time, until one is intact. */
    int rcs[SNAP_MAX_SLOTS];
    uint32_t bad[SNAP_MAX_SLOTS];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t threads = cpus < 1 ? 1 : cpus > SNAP_MAX_SLOTS ? SNAP_MAX_SLOTS : (uint32_t)cpus;
    uint32_t n_read = n_check;
    if (newest_first) {
      for (uint32_t a = 1; a < n_check; a++) /* by step, newest first */
        for (uint32_t b = a; b > 0 && infos[check[b]].step > infos[check[b - 1]].step; b--) {
          uint32_t t = check[b];
          check[b] = check[b - 1];
          check[b - 1] = t;
        }
      for (n_read = 0; n_read < n_check; n_read++) {
        snap_slot_verify_many(smp->store, &check[n_read], 1, threads,
                              &rcs[n_read], &bad[n_read]);
        if (rcs[n_read] == 0) {
          n_read++;
          break;
        }
      }
    } else {
      snap_slot_verify_many(smp->store, check, n_check, threads, rcs, bad);
    }
    for (uint32_t k = 0; k < n_read; k++)
      if (rcs[k] == -EFAULT) {
        smp_fault_unwind(smp);
        return; /* not guarded: the store is gone, the node asks again */
      }
    for (uint32_t k = 0; k < n_read; k++) {
      uint32_t i = check[k];
      infos[i].has_intact = true;
      infos[i].intact = rcs[k] == 0;
      if (rcs[k] != 0)
        log_warn("slot %u (step %" PRIu64 ") fails verification at block "
                 "%u: %s", i, infos[i].step, bad[k], pt_strerror(rcs[k]));
    }
  }
  r.status = 0;
  r.rank = smp->rank;
  r.n_slots = n;
  r.slots = ptrs;
  r.has_has_store = true;
  r.has_store = smp->store != NULL;
  r.has_trainer_pid = true;
  r.trainer_pid = smp->trainer ? smp->trainer_pid : 0;
  r.has_trainer_done = true;
  r.trainer_done = smp->trainer_done;
  r.has_bytes_held = true;
  r.bytes_held = smp->store ? snap_store_total_bytes(smp->store) : 0;
  r.has_smp_pid = true;
  r.smp_pid = (int32_t)getpid();
  r.has_peer_port = smp_peer_port(smp) != 0;
  r.peer_port = (uint32_t)smp_peer_port(smp);
  r.has_instance = true;
  r.instance.data = smp->instance;
  r.instance.len = SNAP_INSTANCE_BYTES;
  /* Why there is no store although an object exists (another instance's,
   * world size's, user's or SMP's): the node can say it too. */
  if (smp->store == NULL && smp->refuse_rc != 0)
    r.message = smp->refuse_msg;
  rpc_conn_send(sc->conn, RPC_STATE_REPLY, id, &r.base);
}

/* Whether a SUBSCRIBE comes from this SMP's node: it carries the secret of
 * --secret-file or, for an SMP started without one, comes from its parent
 * process. OUT: why, when not. */
static bool subscribe_valid(struct smp_conn *sc, const Pt__Subscribe *m,
                            const char **why)
{
  struct smp *smp = sc->smp;

  if (smp->has_secret) {
    if (!m->has_secret || m->secret.len != NODE_SECRET_BYTES) {
      *why = "it carries no secret";
      return false;
    }
    if (sodium_memcmp(m->secret.data, smp->secret, NODE_SECRET_BYTES) != 0) {
      *why = "its secret is wrong";
      return false;
    }
    return true;
  }
  pid_t parent = getppid();
  if (parent <= 1 || rpc_conn_peer_pid(sc->conn) != (int)parent) {
    *why = "it does not come from the SMP's parent (no --secret-file)";
    return false;
  }
  return true;
}

int smp_node_on_subscribe(struct smp_conn *sc, uint64_t id,
                     const Pt__Subscribe *m)
{
  struct smp *smp = sc->smp;
  const char *why = NULL;

  if (!subscribe_valid(sc, m, &why)) {
    Pt__StateReply r = PT__STATE_REPLY__INIT;
    log_warn("refusing SUBSCRIBE from pid %d: %s; closing the connection",
             rpc_conn_peer_pid(sc->conn), why);
    r.status = PT_EROLE;
    r.message = "subscribe refused: not this SMP's node";
    r.rank = smp->rank;
    rpc_conn_send(sc->conn, RPC_STATE_REPLY, id, &r.base);
    rpc_conn_close(sc->conn, PT_EROLE);
    return 0;
  }
  if (smp->node != NULL && smp->node != sc) {
    /* A valid SUBSCRIBE replaces the subscriber (a restarted node); the old
     * connection is no longer the node's and is closed. */
    log_info("node '%s' replaces the previous subscriber",
             LOG_ESC(m->node_id));
    smp->node->role = ROLE_NONE;
    rpc_conn_close(smp->node->conn, 0);
  } else if (smp->node != sc) {
    log_info("node '%s' subscribed", LOG_ESC(m->node_id));
  }
  smp_serve_conn_role_given(sc, ROLE_NODE);
  smp->node = sc;
  smp_node_state_reply(sc, id, false, false);
  return 0;
}

int smp_node_on_commit(struct smp_conn *sc, uint64_t id, const Pt__Commit *m)
{
  int rc = -ENOENT;

  if (sc->smp->store != NULL)
    rc = smp_serve_commit_step(sc->smp, m->step);
  smp_peer_committed(sc->smp, m->step); /* the next step may be taken */
  smp_serve_reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  if (m->has_persist && m->persist)
    smp_persist_committed(sc->smp, m->step, m->has_persist_mark
                                                ? m->persist_mark
                                                : 0); /* its event follows */
  return 0;
}

/* Whether a slot holds step pinned (PINNED or PROTECTED) already. */
static bool pinned_already(const struct snap_store *s, uint64_t step)
{
  for (uint32_t i = 0; i < snap_store_nslots(s); i++) {
    struct snap_slot_info si;
    snap_slot_get(s, i, &si);
    if (si.record_ok && si.step == step && snap_state_pinned(si.state))
      return true;
  }
  return false;
}

int smp_node_on_pin(struct smp_conn *sc, uint64_t id, const Pt__Pin *m)
{
  int rc = -ENOENT;
  bool fresh = false;

  if (sc->smp->store != NULL) {
    fresh = !pinned_already(sc->smp->store, m->step);
    rc = snap_slot_pin(sc->smp->store, m->step);
  }
  if (rc == 0) {
    log_debug("pinned step %" PRIu64, m->step);
    /* A coded job answers once the step is protected. */
    if (smp_peer_pin(sc, id, m->step, fresh))
      return 0;
  } else
    log_debug("cannot pin step %" PRIu64 ": no slot holds it sealed",
              m->step);
  smp_serve_reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

int smp_node_on_unpin(struct smp_conn *sc, uint64_t id, const Pt__Unpin *m)
{
  int rc = -ENOENT;

  if (sc->smp->store != NULL)
    rc = snap_slot_unpin(sc->smp->store, m->step);
  /* Not committed, ever: its protection (if under way) is given up. */
  smp_peer_unpinned(sc->smp, m->step);
  if (rc == 0)
    log_debug("step %" PRIu64 " unpinned: its slot is sealed again",
              m->step);
  else
    log_debug("cannot unpin step %" PRIu64 ": no slot holds it pinned",
              m->step);
  smp_serve_reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

int smp_node_on_set_restore(struct smp_conn *sc, uint64_t id,
                       const Pt__SetRestore *m)
{
  struct smp *smp = sc->smp;
  int rc = 0;

  if (smp_persist_load_defer(sc, id, m))
    return 0; /* a read from disk writes into a slot: once it stopped */
  if (m->has_step && m->from_disk != NULL && m->from_disk[0] != '\0') {
    /* From the persistent tier: read once the trainer says HELLO. */
    char err[400] = "";
    rc = smp_persist_load_set(smp, m->step, m->from_disk,
                              m->has_from_disk_mark ? m->from_disk_mark : 0,
                              m->has_from_disk_any_instance &&
                                  m->from_disk_any_instance,
                              err, sizeof(err));
    if (rc == 0) {
      smp->restore_set = true;
      smp->restore_has_step = true;
      smp->restore_step = m->step;
      smp_peer_restore_point(smp, true, m->step);
      log_info("restore point: step %" PRIu64 ", from disk ('%s')", m->step,
               LOG_ESC(m->from_disk));
    } else {
      log_warn("cannot set restore point step %" PRIu64 " from disk: %s",
               m->step, err[0] ? err : pt_strerror(rc));
    }
    smp_serve_reply_status(sc, id, rc, rc ? (err[0] ? err : pt_strerror(rc))
                                          : NULL);
    return 0;
  }
  if (smp_persist_load_clear(smp) != 0) {
    log_warn("cannot set restore point step %" PRIu64 ": a restore from disk "
             "is still reading into a slot", m->step);
    smp_serve_reply_status(sc, id, -EBUSY, "a restore from disk is still "
                           "reading into a slot");
    return 0;
  }
  /* A step not held here, in a coded job: rebuilt from the group once the
   * trainer says HELLO. */
  bool rebuild = smp_peer_rebuild_set_restore(smp, m->has_step, m->step,
                                              m->has_rebuild && m->rebuild);
  if (!rebuild && smp->store != NULL)
    rc = snap_slot_set_restore(smp->store, m->has_step, m->step);
  else if (!rebuild && m->has_step)
    rc = -ENOENT;
  if (rc == 0) {
    smp->restore_set = true;
    smp->restore_has_step = m->has_step;
    smp->restore_step = m->step;
    smp_peer_restore_point(smp, m->has_step, m->step);
    if (rebuild)
      log_info("restore point: step %" PRIu64 ", to be rebuilt from coding "
               "group %u", m->step, smp->group.group);
    else if (m->has_step)
      log_info("restore point: step %" PRIu64, m->step);
    else
      log_info("restore point: none, every slot freed");
    smp_recover_set_restore(smp);
  } else {
    log_warn("cannot set restore point step %" PRIu64 ": %s", m->step,
             pt_strerror(rc));
  }
  smp_serve_reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}
