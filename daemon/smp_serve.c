/*
 * smp_serve.c — ptd smp's answers to its trainer (HELLO, SLOT_ACQUIRE, SEAL,
 * RESTORE_QUERY, BYE) and to its node (SUBSCRIBE, STATE_QUERY, PROTECT,
 * COMMIT, ABORT, SET_RESTORE, TRAINER_SET), as the project's protocol notes
 * define them.
 *
 * A commit comes in two phases so that it holds on every rank or on none:
 * PROTECT pins the sealed step's slot (no new snapshot may reuse it), then
 * COMMIT makes it the committed step, or ABORT drops the pin when another
 * rank could not protect the step.
 *
 * Roles: smp_on_msg serves a request only on a connection of the role that
 * may send it (trainer: after an accepted HELLO; node: after a SUBSCRIBE with
 * the node's secret); anything else is answered PT_EROLE and logged. Text
 * from clients is logged through LOG_ESC. A HELLO must come from the session
 * of the trainer the node announced (TRAINER_SET, below).
 *
 * Every request is answered at once from the object's slot table; nothing
 * here waits on another process. Slot states change only through
 * snapshot/snap_store.h's state machine. A reply that cannot be queued (the
 * peer is gone) is dropped: the connection's close cleans up.
 */
#include <errno.h>
#include <inttypes.h>
#include <poll.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "daemon/log.h"
#include "daemon/smp_internal.h"

/* ---- helpers ---- */

static void reply_status(struct smp_conn *sc, uint64_t id, int status,
                         const char *message)
{
  Pt__Reply r = PT__REPLY__INIT;

  r.status = status;
  r.message = (char *)message;
  rpc_conn_send(sc->conn, RPC_REPLY, id, &r.base);
}

static void event_send(struct smp *smp, Pt__Event *ev)
{
  if (smp->node != NULL)
    rpc_conn_send(smp->node->conn, RPC_EVENT, 0, &ev->base);
}

/* Remembers a slot sc acquired. A slot has one current generation, so an
 * older entry for the same slot is replaced. */
static void writing_add(struct smp_conn *sc, uint32_t slot, uint64_t gen)
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

static void writing_remove(struct smp_conn *sc, uint32_t slot, uint64_t gen)
{
  for (uint32_t i = 0; i < sc->nwriting; i++) {
    if (sc->writing[i].slot == slot && sc->writing[i].generation == gen) {
      sc->writing[i] = sc->writing[--sc->nwriting];
      return;
    }
  }
}

/* Frees every slot this connection acquired and did not seal. */
static void writing_abort_all(struct smp_conn *sc)
{
  struct smp *smp = sc->smp;

  for (uint32_t i = 0; i < sc->nwriting; i++) {
    if (smp->store == NULL)
      break;
    int rc = snap_slot_abort(smp->store, sc->writing[i].slot,
                             sc->writing[i].generation);
    if (rc == 0)
      log_notice("slot %u freed: its writer went away before sealing",
                 sc->writing[i].slot);
  }
  sc->nwriting = 0;
}

/* The trainer role of sc ends (BYE or close): tell the node once. */
static void trainer_release(struct smp_conn *sc, bool done)
{
  struct smp *smp = sc->smp;

  if (smp->trainer == sc) {
    smp->trainer = NULL;
    smp->trainer_pid = 0;
    smp->trainer_done = done;
  }
  if (!sc->gone_sent) {
    Pt__Event ev = PT__EVENT__INIT;
    sc->gone_sent = true;
    ev.kind = PT__EVENT_KIND__EVENT_TRAINER_GONE;
    ev.rank = smp->rank;
    ev.has_done = true;
    ev.done = done;
    event_send(smp, &ev);
  }
}

/* ---- the trainer's process ----
 *
 * A trainer that forks without exec (a data-loader worker) leaves its SMP
 * connection open in the child when it dies, so the connection's end is no
 * sign of the trainer's. The trainer's pid (the peer's SO_PEERCRED pid) is
 * watched through a pidfd: when it exits, the connection stops being the
 * trainer's and is closed, whoever still holds its other end. */

struct pid_watch {
  uv_poll_t poll;
  int fd;
  void *owner; /* NULL once the owner stopped watching */
  void (*fired)(void *owner);
};

static void watch_free(uv_handle_t *h)
{
  struct pid_watch *w = h->data;

  close(w->fd);
  free(w);
}

static void pidw_close(struct pid_watch *w)
{
  if (w == NULL)
    return;
  w->owner = NULL;
  uv_poll_stop(&w->poll);
  uv_close((uv_handle_t *)&w->poll, watch_free);
}

static void on_pidw(uv_poll_t *h, int status, int events)
{
  struct pid_watch *w = h->data;

  (void)status;
  (void)events;
  if (w->owner != NULL)
    w->fired(w->owner);
}

/* Watches the process behind pidfd fd (taken over: closed with the watch);
 * fired(owner) runs once it exits. NULL when it cannot (fd closed). */
static struct pid_watch *pidw_open(uv_loop_t *loop, int fd,
                                   void (*fired)(void *), void *owner)
{
  struct pid_watch *w = calloc(1, sizeof(*w));

  if (w == NULL || uv_poll_init(loop, &w->poll, fd) != 0) {
    close(fd);
    free(w);
    return NULL;
  }
  w->fd = fd;
  w->owner = owner;
  w->fired = fired;
  w->poll.data = w;
  if (uv_poll_start(&w->poll, UV_READABLE, on_pidw) != 0) {
    uv_close((uv_handle_t *)&w->poll, watch_free);
    return NULL;
  }
  return w;
}

static void watch_stop(struct smp_conn *sc)
{
  struct pid_watch *w = sc->watch;

  sc->watch = NULL;
  pidw_close(w);
}

static int abort_all(void *arg)
{
  writing_abort_all(arg);
  return 0;
}

static void on_trainer_exit(void *owner)
{
  struct smp_conn *sc = owner;

  watch_stop(sc);
  if (sc->smp->trainer != sc)
    return;
  /* Usually the connection's end follows at once; when a child the
   * trainer forked holds it open, it never would. Either way the trainer
   * is gone now. */
  log_info("trainer pid %d exited: its connection is closed, whoever still "
           "holds it", (int)sc->pid);
  smp_guarded(sc->smp, abort_all, sc);
  trainer_release(sc, false);
  sc->role = ROLE_NONE;
  rpc_conn_close(sc->conn, 0);
}

static void watch_start(struct smp_conn *sc, int pid)
{
  int fd;

  watch_stop(sc);
  fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0) {
    log_debug("cannot watch trainer pid %d: %s", pid, strerror(errno));
    return;
  }
  sc->watch = pidw_open(&sc->smp->loop, fd, on_trainer_exit, sc);
}

/* ---- the trainer the node announced ----
 *
 * Any process of the SMP's user can reach its socket; only the trainer the
 * node started may train here. The node names it (TRAINER_SET, on its
 * secret-proven connection): the leader of the session it was spawned in.
 * A HELLO is accepted from that session only (the SO_PEERCRED pid's field
 * 6 of /proc/PID/stat), so a wrapper script's or torchrun's children are
 * accepted and a pt-train started by hand, with the job's environment
 * copied, is not. */

/* Field want (>= 3) of /proc/PID/stat; -1 when unreadable. */
static long long proc_stat_field(int pid, int want)
{
  char path[64], buf[1024];
  FILE *f;
  size_t len;

  snprintf(path, sizeof(path), "/proc/%d/stat", pid);
  f = fopen(path, "re");
  if (f == NULL)
    return -1;
  len = fread(buf, 1, sizeof(buf) - 1, f);
  fclose(f);
  buf[len] = '\0';
  /* Field 2 (comm) may hold spaces and ')': fields 3.. follow the last ')'. */
  char *p = strrchr(buf, ')');
  if (p == NULL)
    return -1;
  p++;
  for (int field = 3; field <= want; field++) {
    while (*p == ' ')
      p++;
    if (*p == '\0')
      return -1;
    if (field == want) {
      char *end;
      errno = 0;
      long long v = strtoll(p, &end, 10);
      return errno != 0 || end == p || v < 0 ? -1 : v;
    }
    while (*p != ' ' && *p != '\0')
      p++;
  }
  return -1;
}

void smp_announce_clear(struct smp *smp)
{
  struct pid_watch *w = smp->announce_watch;

  smp->announce_watch = NULL;
  smp->announced = false;
  smp->announced_pid = 0;
  pidw_close(w);
}

static void on_announced_exit(void *owner)
{
  struct smp *smp = owner;

  log_debug("trainer pid %d (announced by the node) exited: a HELLO now "
           "waits for the node's next announcement", (int)smp->announced_pid);
  smp_announce_clear(smp);
}

static int on_trainer_set(struct smp_conn *sc, uint64_t id,
                          const Pt__TrainerSet *m)
{
  struct smp *smp = sc->smp;
  char msg[200] = "";
  int rc = 0;

  if (m->pid <= 0) {
    if (smp->announced)
      log_info("the node withdrew trainer pid %d", (int)smp->announced_pid);
    smp_announce_clear(smp);
    reply_status(sc, id, 0, NULL);
    return 0;
  }
  if (smp->announced && smp->announced_pid == m->pid) {
    reply_status(sc, id, 0, NULL); /* again (a node subscribed anew) */
    return 0;
  }
  /* The pidfd first: the checks then hold for the process it refers to. */
  int fd = (int)syscall(SYS_pidfd_open, (int)m->pid, 0);
  long long ticks = fd >= 0 ? proc_stat_field(m->pid, 22) : -1;
  long long sid = fd >= 0 ? proc_stat_field(m->pid, 6) : -1;
  if (fd < 0 || ticks < 0 || sid < 0)
    snprintf(msg, sizeof(msg), "trainer pid %d is gone", (int)m->pid);
  else if (m->has_start_ticks && m->start_ticks != 0 &&
           (uint64_t)ticks != m->start_ticks)
    snprintf(msg, sizeof(msg), "pid %d is no longer the trainer the node "
             "started (its start time differs)", (int)m->pid);
  else if (sid != m->pid)
    snprintf(msg, sizeof(msg), "trainer pid %d leads no session (its "
             "session is %lld)", (int)m->pid, sid);
  if (msg[0] != '\0') {
    if (fd >= 0)
      close(fd);
    log_info("trainer announcement refused: %s", msg);
    reply_status(sc, id, -ESRCH, msg);
    return 0;
  }
  smp_announce_clear(smp);
  smp->announce_watch = pidw_open(&smp->loop, fd, on_announced_exit, smp);
  if (smp->announce_watch == NULL)
    rc = -ENOMEM;
  if (rc == 0) {
    smp->announced = true;
    smp->announced_pid = m->pid;
    log_debug("the node announced trainer pid %d: HELLO is accepted from its "
             "session only", (int)m->pid);
  }
  reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

/* Whether the HELLO of peer pid may go on: 0, -EAGAIN while no trainer is
 * announced (with --secret-file; without, only an announcement restricts),
 * PT_EROLE from outside the announced session. OUT: msg when not. */
static int hello_peer_check(struct smp *smp, int peer, char *msg, size_t len)
{
  if (smp->announced && smp->announce_watch != NULL) {
    struct pollfd pfd = { smp->announce_watch->fd, POLLIN, 0 };
    if (poll(&pfd, 1, 0) > 0) /* exited; its event is still to come */
      on_announced_exit(smp);
  }
  if (!smp->announced) {
    if (!smp->has_secret)
      return 0;
    snprintf(msg, len, "waiting for the node to announce its trainer");
    return -EAGAIN;
  }
  long long sid = proc_stat_field(peer, 6);
  if (sid == smp->announced_pid)
    return 0;
  snprintf(msg, len, "hello from pid %d (session %lld): only the session of "
           "trainer pid %d, which the node started, may train here", peer, sid,
           (int)smp->announced_pid);
  return PT_EROLE;
}

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
      snprintf(msg, len,
               "the trainer's %u regions differ from the %u regions of "
               "snapshot object '%s'", n, snap_store_nregions(smp->store),
               smp->shm_name);
      return PT_EREGIONS;
    }
    struct snap_params p = {
      .job = smp->job, .rank = smp->rank, .world = smp->world,
      .nslots = smp->nslots, .regions = descs, .nregions = n,
      .parity_bytes = 0, .budget_bytes = smp->budget,
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


static int on_hello(struct smp_conn *sc, uint64_t id, const Pt__Hello *m)
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
  rc = hello_peer_check(smp, peer_pid, msg, sizeof(msg));
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
        snap_store_newest_committed(smp->store, &cslot, &cstep) == 0 &&
        !(m->has_reconnect && m->reconnect);
    if (peer > 0) /* a pid that HELLO merely claims is not watched */
      watch_start(sc, peer);
  }
  smp_conn_role_given(sc, ROLE_TRAINER);
  sc->pid = pid;
  sc->gone_sent = false;
  smp->trainer = sc;
  smp->trainer_pid = pid;
  smp->trainer_done = false;

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
    event_send(smp, &ev);
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
    if (snap_store_newest_committed(smp->store, &cslot, &cstep) == 0) {
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

static int on_slot_acquire(struct smp_conn *sc, uint64_t id,
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
  if (snap_store_newest_committed(smp->store, &cslot, &cstep) == 0) {
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
  rc = snap_slot_acquire(smp->store, m->step, &slot, &gen);
  r.status = rc;
  if (rc == 0) {
    writing_add(sc, slot, gen);
    r.has_slot = true;
    r.slot = slot;
    r.has_generation = true;
    r.generation = gen;
    log_debug("step %" PRIu64 ": slot %u generation %" PRIu64, m->step, slot,
              gen);
  } else if (rc == PT_SKIPPED) {
    log_debug("step %" PRIu64 " skipped: no free slot", m->step);
  } else {
    r.message = (char *)pt_strerror(rc);
    log_warn("no slot for step %" PRIu64 ": %s", m->step, pt_strerror(rc));
  }

out_reply:
  rpc_conn_send(sc->conn, RPC_SLOT_REPLY, id, &r.base);
  return 0;
}

static int commit_step(struct smp *smp, uint64_t step)
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

static int on_seal(struct smp_conn *sc, uint64_t id, const Pt__Seal *m)
{
  struct smp *smp = sc->smp;
  int rc;

  if (!is_trainer(sc)) {
    reply_status(sc, id, PT_ESTATE, "seal before an accepted hello");
    return 0;
  }
  writing_remove(sc, m->slot, m->generation);
  if (!m->ok) {
    rc = snap_slot_abort(smp->store, m->slot, m->generation);
    log_warn("step %" PRIu64 " failed in the trainer: slot %u freed", m->step,
             m->slot);
    reply_status(sc, id, rc, NULL);
    return 0;
  }
  rc = snap_slot_seal(smp->store, m->slot, m->generation, m->step);
  if (rc != 0) {
    log_warn("cannot seal step %" PRIu64 " in slot %u: %s", m->step, m->slot,
             pt_strerror(rc));
    /* A seal refused for a bad step leaves the slot WRITING: free it. */
    snap_slot_abort(smp->store, m->slot, m->generation);
    reply_status(sc, id, rc, pt_strerror(rc));
    return 0;
  }
  log_debug("sealed step %" PRIu64 " in slot %u", m->step, m->slot);
  Pt__Event ev = PT__EVENT__INIT;
  ev.kind = PT__EVENT_KIND__EVENT_SEALED;
  ev.rank = smp->rank;
  ev.has_step = true;
  ev.step = m->step;
  event_send(smp, &ev);
  if (smp->autocommit)
    commit_step(smp, m->step);
  reply_status(sc, id, 0, NULL);
  return 0;
}

static int on_restore_query(struct smp_conn *sc, uint64_t id)
{
  struct smp *smp = sc->smp;
  Pt__RestoreReply r = PT__RESTORE_REPLY__INIT;
  struct snap_slot_info info;
  uint32_t slot = 0;
  uint64_t step = 0;
  int rc;

  if (!is_trainer(sc)) {
    r.status = PT_ESTATE;
    r.message = "restore query before an accepted hello";
    goto out_reply;
  }
  sc->restore_owed = false;
  if (smp->restore_set && !smp->restore_has_step) {
    rc = PT_ENOSNAP;
  } else if (smp->restore_set) {
    rc = snap_store_find_step(smp->store, smp->restore_step, &slot);
    if (rc != 0)
      rc = PT_ENOSNAP;
  } else {
    rc = snap_store_newest_committed(smp->store, &slot, &step);
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

out_reply:
  rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &r.base);
  return 0;
}

static int on_bye(struct smp_conn *sc, uint64_t id, const Pt__Bye *m)
{
  log_info("trainer pid %d says goodbye (done: %s)", (int)sc->pid,
           m->done ? "yes" : "no");
  trainer_release(sc, m->done);
  reply_status(sc, id, 0, NULL);
  return 0;
}

/* ---- node requests ---- */

static void state_reply(struct smp_conn *sc, uint64_t id, bool verify)
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
    if (verify && (si.state == SNAP_SEALED || si.state == SNAP_PROTECTED ||
                   si.state == SNAP_COMMITTED))
      check[n_check++] = i;
    ptrs[i] = &infos[i];
  }
  if (n_check > 0) {
    /* Every readable slot, each read in full, on as many cores as there are
     * slots to read (the trainers are stopped while the node asks this). */
    int rcs[SNAP_MAX_SLOTS];
    uint32_t bad[SNAP_MAX_SLOTS];
    long cpus = sysconf(_SC_NPROCESSORS_ONLN);
    uint32_t threads = cpus < 1 ? 1 : cpus > SNAP_MAX_SLOTS ? SNAP_MAX_SLOTS : (uint32_t)cpus;
    snap_slots_verify(smp->store, check, n_check, threads, rcs, bad);
    for (uint32_t k = 0; k < n_check; k++) {
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

static int on_subscribe(struct smp_conn *sc, uint64_t id,
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
  smp_conn_role_given(sc, ROLE_NODE);
  smp->node = sc;
  state_reply(sc, id, false);
  return 0;
}

static int on_commit(struct smp_conn *sc, uint64_t id, const Pt__Commit *m)
{
  int rc = -ENOENT;

  if (sc->smp->store != NULL)
    rc = commit_step(sc->smp, m->step);
  reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

static int on_protect(struct smp_conn *sc, uint64_t id, const Pt__Protect *m)
{
  int rc = -ENOENT;

  if (sc->smp->store != NULL)
    rc = snap_slot_protect(sc->smp->store, m->step);
  if (rc == 0)
    log_debug("protected step %" PRIu64, m->step);
  else
    log_debug("cannot protect step %" PRIu64 ": no slot holds it sealed",
             m->step);
  reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

static int on_abort(struct smp_conn *sc, uint64_t id, const Pt__Abort *m)
{
  int rc = -ENOENT;

  if (sc->smp->store != NULL)
    rc = snap_slot_unprotect(sc->smp->store, m->step);
  if (rc == 0)
    log_debug("commit of step %" PRIu64 " abandoned: its slot is sealed "
              "again", m->step);
  else
    log_debug("abort of step %" PRIu64 ": no slot holds it protected",
             m->step);
  reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
}

static int on_set_restore(struct smp_conn *sc, uint64_t id,
                          const Pt__SetRestore *m)
{
  struct smp *smp = sc->smp;
  int rc = 0;

  if (smp->store != NULL)
    rc = snap_store_set_restore(smp->store, m->has_step, m->step);
  else if (m->has_step)
    rc = -ENOENT;
  if (rc == 0) {
    smp->restore_set = true;
    smp->restore_has_step = m->has_step;
    smp->restore_step = m->step;
    if (m->has_step)
      log_info("restore point: step %" PRIu64, m->step);
    else
      log_info("restore point: none, every slot freed");
  } else {
    log_warn("cannot set restore point step %" PRIu64 ": %s", m->step,
             pt_strerror(rc));
  }
  reply_status(sc, id, rc, rc ? pt_strerror(rc) : NULL);
  return 0;
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
  case RPC_RESTORE_QUERY:
  case RPC_BYE:
    return ROLE_TRAINER;
  case RPC_STATE_QUERY:
  case RPC_PROTECT:
  case RPC_COMMIT:
  case RPC_ABORT:
  case RPC_SET_RESTORE:
  case RPC_TRAINER_SET:
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
    reply_status(sc, id, PT_EROLE, msg);
    break;
  }
  if (sc->role == ROLE_NONE)
    rpc_conn_close(sc->conn, PT_EROLE);
  return 0;
}

int smp_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
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
    return on_hello(sc, id, (Pt__Hello *)msg);
  case RPC_SLOT_ACQUIRE:
    return on_slot_acquire(sc, id, (Pt__SlotAcquire *)msg);
  case RPC_SEAL:
    return on_seal(sc, id, (Pt__Seal *)msg);
  case RPC_RESTORE_QUERY:
    return on_restore_query(sc, id);
  case RPC_BYE:
    return on_bye(sc, id, (Pt__Bye *)msg);
  case RPC_SUBSCRIBE:
    return on_subscribe(sc, id, (Pt__Subscribe *)msg);
  case RPC_STATE_QUERY:
    state_reply(sc, id, ((Pt__StateQuery *)msg)->verify);
    return 0;
  case RPC_PROTECT:
    return on_protect(sc, id, (Pt__Protect *)msg);
  case RPC_COMMIT:
    return on_commit(sc, id, (Pt__Commit *)msg);
  case RPC_ABORT:
    return on_abort(sc, id, (Pt__Abort *)msg);
  case RPC_SET_RESTORE:
    return on_set_restore(sc, id, (Pt__SetRestore *)msg);
  case RPC_TRAINER_SET:
    return on_trainer_set(sc, id, (Pt__TrainerSet *)msg);
  default:
    return PT_EPROTO;
  }
}

void smp_conn_role_given(struct smp_conn *sc, int role)
{
  sc->role = role;
  rpc_conn_set_idle(sc->conn, 0);
  rpc_conn_set_trusted(sc->conn, true);
}

void smp_conn_gone(struct smp_conn *sc)
{
  struct smp *smp = sc->smp;

  watch_stop(sc);
  writing_abort_all(sc);
  if (smp->trainer == sc) {
    log_info("trainer pid %d disconnected", (int)sc->pid);
    trainer_release(sc, false);
  }
  if (smp->node == sc)
    smp->node = NULL;
}
