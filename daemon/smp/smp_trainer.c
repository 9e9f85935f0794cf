/*
 * smp_trainer.c — ptd smp's answers to its trainer: HELLO, SLOT_ACQUIRE,
 * SEAL, RELEASE, RESTORE_QUERY and BYE, as the project's protocol notes
 * define them.
 * Who may say HELLO is smp_trainer_pid.c's to decide.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"

/* ---- trainer requests ---- */

/* --huge-pages: one line saying whether the new object got them, and when
 * it did not, which setting to change. */
static void huge_pages_report(struct smp *smp)
{
  uint64_t huge = snap_store_huge_bytes(smp->store);
  uint64_t total = snap_store_total_bytes(smp->store);
  char why[256];

  if (huge > 0) {
    log_info("snapshot object '%s': %" PRIu64 " of %" PRIu64 " bytes in huge "
             "pages", smp->shm_name, huge, total);
    return;
  }
  snap_huge_pages_why(why, sizeof(why));
  log_warn("huge pages unavailable for '%s', using 4 KiB pages: %s",
           smp->shm_name, why[0] ? why : "the kernel gave none (memory too "
           "fragmented, or no free huge pages)");
}

/* The first difference between the trainer's regions and the object's, as
 * a phrase for the refusal. */
static void smp_regions_diff(const struct snap_store *st,
                             const struct snap_region_desc *descs, uint32_t n,
                             char *out, size_t len)
{
  uint32_t have = snap_store_nregions(st);

  for (uint32_t i = 0; i < n && i < have; i++) {
    const struct snap_region *r = snap_store_region(st, i);
    if (strcmp(r->name, descs[i].name) == 0 && r->bytes == descs[i].bytes &&
        r->kind == descs[i].kind)
      continue;
    snprintf(out, len,
             "region %u is '%.100s' (%" PRIu64 " bytes, %s) in the trainer, "
             "'%.100s' (%" PRIu64 " bytes, %s) in the object",
             i, LOG_ESC(descs[i].name), descs[i].bytes,
             descs[i].kind ? "device" : "host", LOG_ESC(r->name), r->bytes,
             r->kind ? "device" : "host");
    return;
  }
  if (n != have)
    snprintf(out, len, "the first %u are the same, then the %s has %u more",
             n < have ? n : have, n < have ? "object" : "trainer",
             n < have ? have - n : n - have);
  else
    snprintf(out, len, "no region differs");
}

/* The object for a HELLO: the one held (re-validated first: a trainer must
 * never be sent to a name that no longer refers to our mapping), else the
 * one under the name (smp_store_load), else a new one for these regions. On
 * a refusal msg says why. */
static int store_for_hello(struct smp *smp, const struct snap_region_desc *descs,
                           uint32_t n, char *msg, size_t len)
{
  int rc;

  for (int attempt = 0; attempt < 2; attempt++) {
    if (smp->store != NULL)
      smp_store_guard(smp, true);
    if (smp->store == NULL && (rc = smp_store_load(smp)) != 0) {
      snprintf(msg, len, "%s", smp->refuse_msg);
      return rc;
    }
    if (smp->store != NULL) {
      if (snap_store_regions_match(smp->store, descs, n))
        return 0;
      char diff[320];
      smp_regions_diff(smp->store, descs, n, diff, sizeof(diff));
      snprintf(msg, len,
               "the trainer's %u regions differ from the %u regions of "
               "snapshot object '%s': %s", n, snap_store_nregions(smp->store),
               smp->shm_name, diff);
      return PT_EREGIONS;
    }
    /* Under a code, each slot gets the parity area snap_store sizes from
     * this member's own slot data S: m chunks of ceil(S / k) rounded up to
     * 64 bytes, which is exactly what ec/rs.h's layout needs when no member
     * of the group has a larger chunk (rs_layout's C comes from the
     * largest member: equal-sized members, such as the replicas of a
     * data-parallel job or its padded equal shards, always fit). The SMP
     * does not know its peers' sizes when its trainer says HELLO, and the
     * area cannot grow under a trainer that maps the object, so it is
     * sized from what is known; a group whose largest member needs a
     * larger chunk is refused when protection starts (smp_protect.h:
     * PT_ECONFIG naming both sizes), never protected into too small an
     * area. The limit: members whose S differ by more than what rounding
     * to k*64 bytes absorbs are not protected. */
    struct snap_params p = {
      .job = smp->job, .rank = smp->rank, .world = smp->world,
      .nslots = smp->nslots, .regions = descs, .nregions = n,
      .ec_k = smp->group.k, .ec_m = smp->group.m, /* 0+0: no code */
      .budget_bytes = smp->budget,
      .instance = smp->instance, .lock = true,
      .huge_pages = smp->huge_pages,
    };
    rc = snap_store_create(&smp->store, smp->shm_name, &p, msg, len);
    if (rc == -EEXIST)
      continue; /* made meanwhile (another SMP?): load it */
    if (rc != 0) {
      if (msg[0] == '\0')
        snprintf(msg, len, "cannot create '%s': %s", smp->shm_name,
                 pt_strerror(rc));
      smp->store = NULL;
      log_error("cannot create snapshot object '%s': %s", smp->shm_name, msg);
      return rc;
    }
    log_info("created snapshot object '%s' (%" PRIu64 " bytes, %u slots, "
             "%u regions)", smp->shm_name, snap_store_total_bytes(smp->store),
             snap_store_nslots(smp->store), n);
    if (smp->huge_pages)
      huge_pages_report(smp);
    return 0;
  }
  snprintf(msg, len, "snapshot object '%s' keeps changing under the SMP",
           smp->shm_name);
  return -EAGAIN;
}


int smp_trainer_on_hello(struct smp_conn *sc, uint64_t id, const Pt__Hello *m)
{
  struct smp *smp = sc->smp;
  Pt__HelloReply r = PT__HELLO_REPLY__INIT;
  struct snap_region_desc *descs = NULL;
  char msg[768] = "";
  bool quiet = false;
  uint32_t cslot;
  uint64_t cstep;
  int rc = 0;
  int peer_pid = rpc_conn_peer_pid(sc->conn);

  /* The trainer runs as the SMP's user and names itself truly. */
  if (rpc_conn_peer_uid(sc->conn) != (int)geteuid()) {
    snprintf(msg, sizeof(msg), "hello from uid %d: only uid %u may train here",
             rpc_conn_peer_uid(sc->conn), (unsigned)geteuid());
    rc = PT_EROLE;
    goto out_reply;
  }
  if (peer_pid <= 0 || m->pid != peer_pid) {
    snprintf(msg, sizeof(msg), "hello names pid %d but comes from pid %d",
             (int)m->pid, peer_pid);
    rc = PT_EROLE;
    goto out_reply;
  }
  rc = smp_trainer_pid_hello_peer_check(smp, peer_pid, msg, sizeof(msg));
  if (rc == -EAGAIN) {
    /* Not a refusal: the trainer's libpt asks again. Said once per
     * connection, and not to the node (it is the one being waited for). */
    if (!sc->wait_logged)
      log_debug("hello from pid %d waits: %s", peer_pid, msg);
    sc->wait_logged = true;
    goto out_wait;
  }
  if (rc != 0)
    goto out_reply;
  if (strcmp(m->job, smp->job) != 0 || m->rank != smp->rank) {
    snprintf(msg, sizeof(msg),
             "hello from job '%s' rank %u reached the SMP of job '%s' rank %u",
             LOG_ESC(m->job), m->rank, smp->job, smp->rank);
    rc = PT_ECONFIG;
    goto out_reply;
  }
  if (m->world != smp->world) {
    snprintf(msg, sizeof(msg),
             "hello from a trainer of world size %u reached the SMP of a job "
             "of %u ranks", m->world, smp->world);
    rc = PT_EWORLD;
    goto out_reply;
  }
  if (m->n_regions == 0 || m->n_regions > SNAP_MAX_REGIONS) {
    snprintf(msg, sizeof(msg), "hello with %zu regions (1 to %d allowed)",
             m->n_regions, SNAP_MAX_REGIONS);
    rc = -EINVAL;
    goto out_reply;
  }
  descs = calloc(m->n_regions, sizeof(*descs));
  if (descs == NULL) {
    rc = -ENOMEM;
    goto out_reply;
  }
  for (size_t i = 0; i < m->n_regions; i++) {
    const Pt__Region *pr = m->regions[i];
    size_t len = strlen(pr->name);
    if (len == 0 || len >= SNAP_NAME_MAX || pr->bytes == 0 || pr->kind > 1) {
      snprintf(msg, sizeof(msg), "hello: region %zu ('%.64s') is invalid", i,
               LOG_ESC(pr->name));
      rc = -EINVAL;
      goto out_reply;
    }
    memcpy(descs[i].name, pr->name, len + 1);
    descs[i].bytes = pr->bytes;
    descs[i].kind = pr->kind;
  }
  rc = store_for_hello(smp, descs, (uint32_t)m->n_regions, msg, sizeof(msg));
  if (rc != 0) {
    quiet = rc == smp->refuse_rc; /* a standing refusal, logged once */
    goto out_reply;
  }
  if (smp->trainer != NULL && smp->trainer != sc) {
    snprintf(msg, sizeof(msg), "another trainer (pid %d) is connected",
             (int)smp->trainer_pid);
    rc = -EBUSY;
    goto out_reply;
  }
  /* The peer's pid is the process that connected; HELLO's is what it says. */
  int peer = rpc_conn_peer_pid(sc->conn);
  int32_t pid = peer > 0 ? (int32_t)peer : m->pid;
  if (smp->trainer != sc) {
    if (peer > 0 && peer != m->pid)
      log_info("trainer pid %d connected (its hello says pid %d)", (int)pid,
               (int)m->pid);
    else
      log_info("trainer pid %d connected", (int)pid);
    /* A committed step that a new trainer process finds must be restored
     * before it snapshots (unless it restored, or started fresh, on an SMP
     * before this one): else a run that never restores overwrites it. */
    sc->restore_owed =
        (snap_slot_newest_committed(smp->store, &cslot, &cstep) == 0 ||
         smp_persist_load_pending(smp)) &&
        !(m->has_reconnect && m->reconnect);
    if (peer > 0) /* a pid that HELLO merely claims is not watched */
      smp_trainer_pid_watch_start(sc, peer);
  }
  smp_serve_conn_role_given(sc, ROLE_TRAINER);
  sc->recover_in_place = m->has_recover_in_place && m->recover_in_place;
  sc->pid = pid;
  sc->gone_sent = false;
  smp->trainer = sc;
  smp->trainer_pid = pid;
  smp->trainer_done = false;
  smp_persist_load_store_ready(smp); /* a restore from disk may begin */

out_reply:
  free(descs);
  if (rc == -EBUSY) {
    /* libpt asks again every few ms while the other trainer goes: one line
     * now and then, and nothing for the node to decide. */
    static struct log_limit busy_lim;
    if (!quiet)
      log_limited(&busy_lim, LOG_LVL_WARN, "hello refused: %s",
                  msg[0] ? msg : pt_strerror(rc));
  } else if (rc != 0) {
    if (!quiet)
      log_warn("hello refused: %s", msg[0] ? msg : pt_strerror(rc));
    /* The node decides whether the job can go on (a budget or /dev/shm too
     * small for the trainer's regions: it cannot). */
    Pt__Event ev = PT__EVENT__INIT;
    ev.kind = PT__EVENT_KIND__EVENT_HELLO_REFUSED;
    ev.rank = smp->rank;
    ev.has_status = true;
    ev.status = rc;
    ev.message = msg[0] != '\0' ? msg : (char *)pt_strerror(rc);
    smp_serve_event_send(smp, &ev);
  }
out_wait:
  r.status = rc;
  if (msg[0] != '\0' && rc != 0)
    r.message = msg;
  if (rc == 0) {
    uint32_t cslot;
    uint64_t cstep;
    r.shm_name = smp->shm_name;
    r.has_shm_bytes = true;
    r.shm_bytes = snap_store_total_bytes(smp->store);
    if (snap_slot_newest_committed(smp->store, &cslot, &cstep) == 0) {
      r.has_committed_step = true;
      r.committed_step = cstep;
    }
  }
  rpc_conn_send(sc->conn, RPC_HELLO_REPLY, id, &r.base);
  return 0;
}

/* The trainer's requests need its accepted HELLO. */
static bool is_trainer(struct smp_conn *sc)
{
  return sc->smp->trainer == sc && sc->smp->store != NULL;
}

/* What holds each slot, for the log of a skip: "slot 0 step 5 pinned,
 * slot 1 step 7 committed, slot 2 step 9 sealed (its group protects it)". */
static void slots_held(struct smp *smp, char *buf, size_t len)
{
  uint32_t busy = smp_peer_busy_slots(smp);
  size_t off = 0;

  buf[0] = '\0';
  for (uint32_t i = 0; i < snap_store_nslots(smp->store) && off < len; i++) {
    struct snap_slot_info si;
    snap_slot_get(smp->store, i, &si);
    int w = snprintf(buf + off, len - off, "%sslot %u step %" PRIu64 " %s%s",
                     i > 0 ? ", " : "", i, si.step, snap_state_name(si.state),
                     i < 32 && (busy & (1u << i)) ? " (its group protects it)"
                                                  : "");
    if (w < 0)
      break;
    off += (size_t)w;
  }
}

int smp_trainer_on_slot_acquire(struct smp_conn *sc, uint64_t id,
                        const Pt__SlotAcquire *m)
{
  struct smp *smp = sc->smp;
  Pt__SlotReply r = PT__SLOT_REPLY__INIT;
  uint32_t slot = 0, cslot;
  uint64_t gen = 0, cstep;
  char msg[200];
  int rc;

  if (!is_trainer(sc)) {
    r.status = PT_ESTATE;
    r.message = "slot request before an accepted hello";
    goto out_reply;
  }
  if (smp->recover_pending) {
    r.status = PT_RECOVER;
    r.message = "the node asks this trainer to restore in place";
    goto out_reply;
  }
  if (snap_slot_newest_committed(smp->store, &cslot, &cstep) == 0) {
    r.has_committed_step = true;
    r.committed_step = cstep;
    if (m->step <= cstep) {
      snprintf(msg, sizeof(msg),
               "step %" PRIu64 " is not newer than the committed step %" PRIu64,
               m->step, cstep);
      r.status = PT_ESTEP;
    } else if (sc->restore_owed) {
      snprintf(msg, sizeof(msg),
               "step %" PRIu64 " refused: step %" PRIu64 " is committed and "
               "this trainer has not called pt_restore()", m->step, cstep);
      r.status = PT_ENORESTORE;
    }
    if (r.status != 0) {
      r.message = msg;
      log_warn("no slot for step %" PRIu64 ": %s", m->step, msg);
      goto out_reply;
    }
  }
  /* One step in flight per coded SMP, and never a slot whose step its
   * group is still protecting: the snapshot is skipped instead (training
   * never waits for protection). */
  if (!smp_peer_may_take(smp, m->step)) {
    r.status = PT_SKIPPED;
    log_debug("step %" PRIu64 " skipped: the group protects an earlier one, "
              "or a member skipped it", m->step);
    goto out_reply;
  }
  rc = snap_slot_acquire_avoiding(smp->store, m->step, smp_peer_busy_slots(smp) | smp_persist_busy_slots(smp),
                                  &slot, &gen);
  r.status = rc;
  if (rc == 0) {
    smp_serve_writing_add(sc, slot, gen);
    r.has_slot = true;
    r.slot = slot;
    r.has_generation = true;
    r.generation = gen;
    smp_peer_slot_begun(smp, slot, m->step);
    log_debug("step %" PRIu64 ": slot %u generation %" PRIu64, m->step, slot,
              gen);
  } else if (rc == PT_SKIPPED) {
    char held[256];
    slots_held(smp, held, sizeof(held));
    log_debug("step %" PRIu64 " skipped: no free slot (%s)", m->step, held);
    smp_peer_skipped(smp, m->step);
  } else {
    r.message = (char *)pt_strerror(rc);
    log_warn("no slot for step %" PRIu64 ": %s", m->step, pt_strerror(rc));
  }

out_reply:
  rpc_conn_send(sc->conn, RPC_SLOT_REPLY, id, &r.base);
  return 0;
}

int smp_trainer_on_seal(struct smp_conn *sc, uint64_t id, const Pt__Seal *m)
{
  struct smp *smp = sc->smp;
  int rc;

  if (!is_trainer(sc)) {
    smp_serve_reply_status(sc, id, PT_ESTATE, "seal before an accepted hello");
    return 0;
  }
  if (!m->ok) {
    /* A failed copy is given back with RELEASE; nothing changes here, and
     * the slot stays the writer's until it is released or the connection
     * closes. */
    log_warn("refusing SEAL of step %" PRIu64 " with ok = false from pid %d: "
             "a failed copy is released with RELEASE", m->step, (int)sc->pid);
    smp_serve_reply_status(sc, id, PT_EPROTO,
                     "SEAL with ok = false is not part of the protocol: a "
                     "slot whose copy failed is given back with RELEASE");
    return 0;
  }
  smp_serve_writing_remove(sc, m->slot, m->generation);
  rc = snap_slot_seal(smp->store, m->slot, m->generation, m->step);
  if (rc != 0) {
    log_warn("cannot seal step %" PRIu64 " in slot %u: %s", m->step, m->slot,
             pt_strerror(rc));
    /* A seal refused for a bad step leaves the slot WRITING: free it. */
    snap_slot_abort(smp->store, m->slot, m->generation);
    smp_serve_reply_status(sc, id, rc, pt_strerror(rc));
    return 0;
  }
  log_debug("sealed step %" PRIu64 " in slot %u", m->step, m->slot);
  Pt__Event ev = PT__EVENT__INIT;
  uint64_t held[SNAP_MAX_SLOTS];
  ev.kind = PT__EVENT_KIND__EVENT_SEALED;
  ev.rank = smp->rank;
  ev.has_step = true;
  ev.step = m->step;
  for (uint32_t i = 0; i < snap_store_nslots(smp->store) && i < SNAP_MAX_SLOTS; i++) {
    struct snap_slot_info si;
    snap_slot_get(smp->store, i, &si);
    if (si.record_ok && si.state == SNAP_COMMITTED)
      held[ev.n_committed_held++] = si.step;
  }
  ev.committed_held = held;
  smp_serve_event_send(smp, &ev);
  smp_peer_sealed(smp, m->slot, m->step);
  if (smp->autocommit)
    smp_serve_commit_step(smp, m->step);
  smp_serve_reply_status(sc, id, 0, NULL);
  return 0;
}

int smp_trainer_on_release(struct smp_conn *sc, uint64_t id, const Pt__Release *m)
{
  struct smp *smp = sc->smp;
  char step[32] = "";

  if (!is_trainer(sc)) {
    smp_serve_reply_status(sc, id, PT_ESTATE, "release before an accepted hello");
    return 0;
  }
  smp_serve_writing_remove(sc, m->slot, m->generation);
  int rc = snap_slot_abort(smp->store, m->slot, m->generation);
  if (rc == 0)
    smp_peer_slot_dropped(smp, m->slot);
  if (m->has_step)
    snprintf(step, sizeof(step), " of step %" PRIu64, m->step);
  if (rc == 0)
    log_warn("slot %u%s released by the trainer: %s", m->slot, step,
             m->reason != NULL      ? LOG_ESC(m->reason)
             : m->has_status        ? pt_strerror(m->status)
                                    : "no reason given");
  else
    log_debug("release of slot %u%s: %s", m->slot, step, pt_strerror(rc));
  smp_serve_reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

int smp_trainer_on_restore_query(struct smp_conn *sc, uint64_t id,
                                 const Pt__RestoreQuery *m)
{
  struct smp *smp = sc->smp;
  Pt__RestoreReply r = PT__RESTORE_REPLY__INIT;
  struct snap_slot_info info;
  uint32_t slot = 0;
  uint64_t step = 0;
  char why[400];
  int rc;

  if (!is_trainer(sc)) {
    r.status = PT_ESTATE;
    r.message = "restore query before an accepted hello";
    goto out_reply;
  }
  if (smp_persist_load_held_query(sc, id, m != NULL && m->has_wait_ms
                                               ? m->wait_ms : 0))
    return 0; /* answered when the read of the step from disk ends */
  if (smp_peer_rebuild_held_query(sc, id, m != NULL && m->has_wait_ms
                                                ? m->wait_ms : 0))
    return 0; /* answered when the rebuild of the step ends (or with its
                 progress, before the trainer's deadline) */
  if (smp_recover_hold_restore(sc, id))
    return 0; /* asked again once the node set the restore point */
  sc->restore_owed = false;
  if (smp->restore_set && !smp->restore_has_step) {
    rc = PT_ENOSNAP;
  } else if (smp->restore_set) {
    /* The node chose this step: missing now (the object was replaced or
     * the slot lost) is an error, never a fresh start that would throw
     * the committed steps away behind the trainer's back. */
    rc = snap_slot_find_step(smp->store, smp->restore_step, &slot);
    if (rc != 0) {
      rc = PT_ESTATE;
      snprintf(why, sizeof(why), "the restore point, step %" PRIu64 ", is "
               "no longer held by '%s'", smp->restore_step, smp->shm_name);
      r.message = why;
      log_error("cannot restore: %s", why);
    }
  } else {
    rc = snap_slot_newest_committed(smp->store, &slot, &step);
  }
  r.status = rc;
  if (rc == 0) {
    snap_slot_get(smp->store, slot, &info);
    r.has_slot = true;
    r.slot = slot;
    r.has_generation = true;
    r.generation = info.generation;
    r.has_step = true;
    r.step = info.step;
    log_info("trainer restores step %" PRIu64 " from slot %u", info.step, slot);
  } else if (rc == PT_ENOSNAP) {
    log_info("no snapshot to restore: the trainer starts fresh");
  }
  smp_recover_restored(smp, rc, rc == 0 ? info.step : 0);

out_reply:
  rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &r.base);
  return 0;
}

int smp_trainer_on_bye(struct smp_conn *sc, uint64_t id, const Pt__Bye *m)
{
  log_info("trainer pid %d says goodbye (done: %s)", (int)sc->pid,
           m->done ? "yes" : "no");
  smp_serve_trainer_release(sc, m->done);
  smp_serve_reply_status(sc, id, 0, NULL);
  return 0;
}
