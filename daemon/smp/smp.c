/*
 * smp.c — ptd smp: the snapshot management process of one rank.
 *
 * It owns the rank's shm object (snapshot/snap_store.h) and is the only
 * process that changes slot states. It serves, on one Unix socket, its
 * trainer (libpt: HELLO, SLOT_ACQUIRE, SEAL, RESTORE_QUERY, BYE) and its node
 * (SUBSCRIBE, STATE_QUERY, PIN, COMMIT, UNPIN, SET_RESTORE); the
 * messages are those of rpc/pt.proto and the exchange is the one of the
 * project's protocol notes.
 * This file starts, listens and stops; the files smp_internal.h lists
 * answer the requests.
 *
 * Invariants kept here:
 *   - Roles (smp_serve.c): a connection has none until an accepted HELLO
 *     (the trainer: SO_PEERCRED uid ours, HELLO's pid its sender's) or a
 *     valid SUBSCRIBE (the node: the 32 bytes of --secret-file, compared in
 *     constant time, or without that file a peer that is our parent). Each
 *     request of another role, or of none, is refused with PT_EROLE and
 *     logged; a role-less connection is closed after its refusal.
 *   - One trainer at a time: the connection whose HELLO was accepted is the
 *     trainer until it says BYE or closes; another HELLO meanwhile gets -EBUSY.
 *   - Every slot a connection acquired and has not sealed is remembered with
 *     that connection; when the connection goes, those slots are aborted, so
 *     a dead trainer never leaves a slot WRITING.
 *   - The object outlives this process. At start-up an existing object is
 *     re-opened and recovered (WRITING slots freed); a damaged one is renamed
 *     aside and the next HELLO creates a fresh one. An object that is not
 *     this job instance's (another instance id, job or rank), of another
 *     world size, or another user's is never used and never renamed: every
 *     HELLO is refused with the reason until it goes away.
 *   - The SMP holds an exclusive flock on its object for as long as it has
 *     it mapped, so that a second SMP (a second node with the same job and
 *     shm prefix) cannot drive the same slots: it gets -EBUSY naming the pid.
 *   - A truncated, overwritten, unlinked or replaced object is noticed
 *     (snap_store_check: a size check before every request that touches it,
 *     a full check at every HELLO and every CHECK_INTERVAL_MS; a SIGBUS from
 *     the mapping in between is caught by smp_guarded) and dropped, never
 *     touched again: the SMP survives, says why, and the next trainer gets a
 *     fresh object.
 *   - The trainer is the process that connected (SO_PEERCRED), watched by
 *     pidfd: its exit ends the trainer role even when a child it forked
 *     still holds the connection.
 *   - The SMP never touches a GPU and never blocks on a peer: every request is
 *     answered from memory (STATE_QUERY{verify} reads the slots, which is the
 *     point of asking for it).
 */
#include <errno.h>
#include <getopt.h>
#include <inttypes.h>
#include <setjmp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <unistd.h>

#include <uv.h>

#include "pt.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/roles.h"
#include "daemon/smp/smp_internal.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"

/* How often the object is re-validated (header, name, size) while no request
 * asks: an unlinked or overwritten object is noticed within this. */
#define CHECK_INTERVAL_MS 1000

/* ---- the object ---- */

/* A standing refusal of the object; logged when it first appears or
 * changes, not on every HELLO. */
static int refuse(struct smp *smp, int rc, const char *msg)
{
  if (smp->refuse_rc != rc || strcmp(smp->refuse_msg, msg) != 0)
    log_error("%s", msg);
  smp->refuse_rc = rc;
  snprintf(smp->refuse_msg, sizeof(smp->refuse_msg), "%s", msg);
  return rc;
}

static void refuse_clear(struct smp *smp)
{
  smp->refuse_rc = 0;
  smp->refuse_msg[0] = '\0';
}

/* Sets a damaged object of ours aside, unless another SMP holds it. */
static int set_aside(struct smp *smp, const char *why)
{
  char msg[768], aside[300] = "";
  int rc;

  rc = snap_store_lock_probe(smp->shm_name, msg, sizeof(msg));
  if (rc != 0)
    return refuse(smp, rc, msg);
  rc = snap_store_quarantine(smp->shm_name, aside, sizeof(aside));
  if (rc == -ENOENT)
    return 0;
  if (rc != 0) {
    snprintf(msg, sizeof(msg), "cannot set damaged object '%s' aside: %s",
             smp->shm_name, pt_strerror(rc));
    return refuse(smp, rc, msg);
  }
  log_error("snapshot object '%s' is unusable (%s): renamed to '%s'; "
            "starting with no snapshot", smp->shm_name, why, aside);
  return 0;
}

int smp_store_load(struct smp *smp)
{
  char err[400] = "", msg[768], ours[2 * SNAP_INSTANCE_BYTES + 1],
       theirs[2 * SNAP_INSTANCE_BYTES + 1];
  struct snap_store *s = NULL;
  int rc;

  if (smp->store != NULL)
    return 0;
  rc = snap_store_open(&s, smp->shm_name, err, sizeof(err));
  if (rc == -ENOENT) {
    refuse_clear(smp);
    return 0;
  }
  if (rc == PT_EFORMAT || rc == PT_EVERSION) {
    rc = set_aside(smp, err[0] ? err : pt_strerror(rc));
    if (rc == 0)
      refuse_clear(smp);
    return rc;
  }
  if (rc != 0) {
    /* Another user's object (-EPERM) is not ours to set aside. */
    snprintf(msg, sizeof(msg), "cannot use snapshot object '%s': %s",
             smp->shm_name, err[0] ? err : pt_strerror(rc));
    return refuse(smp, rc, msg);
  }
  snap_store_instance_hex(smp->instance, ours);
  snap_store_instance_hex(snap_store_instance(s), theirs);
  if (memcmp(snap_store_instance(s), smp->instance, SNAP_INSTANCE_BYTES) != 0 ||
      strcmp(snap_store_job(s), smp->job) != 0 ||
      snap_store_rank(s) != smp->rank) {
    snprintf(msg, sizeof(msg),
             "snapshot object '%s' belongs to job '%s' rank %u instance %s, "
             "not to this job instance (%s): it is left untouched",
             smp->shm_name, LOG_ESC(snap_store_job(s)), snap_store_rank(s),
             theirs, ours);
    rc = PT_EFOREIGN;
    goto out_refuse;
  }
  if (snap_store_world(s) != smp->world) {
    snprintf(msg, sizeof(msg),
             "snapshot object '%s' (instance %s) was taken with world size "
             "%u, this SMP serves a world of %u: it is left untouched",
             smp->shm_name, theirs, snap_store_world(s), smp->world);
    rc = PT_EWORLD;
    goto out_refuse;
  }
  uint32_t k, m;
  snap_store_code(s, &k, &m);
  if (k != smp->group.k || m != smp->group.m) { /* 0+0: no code */
    char code[2][32] = {"no erasure code", "no erasure code"};
    if (k != 0)
      snprintf(code[0], sizeof(code[0]), "the erasure code %u+%u", k, m);
    if (smp->group.k != 0)
      snprintf(code[1], sizeof(code[1]), "the erasure code %u+%u",
               smp->group.k, smp->group.m);
    snprintf(msg, sizeof(msg), "snapshot object '%s' (instance %s) was made "
             "for %s, this SMP serves a job with %s: it is left untouched",
             smp->shm_name, theirs, code[0], code[1]);
    rc = PT_ECONFIG;
    goto out_refuse;
  }
  rc = snap_store_lock(s, smp->shm_name, err, sizeof(err));
  if (rc != 0) {
    snprintf(msg, sizeof(msg), "cannot use snapshot object: %s", err);
    goto out_refuse;
  }
  char bad[1024];
  if (snap_slot_bad_records(s, bad, sizeof(bad)) > 0)
    log_error("%s; the slot is freed", bad);
  rc = snap_slot_recover(s);
  if (rc > 0)
    log_notice("'%s': freed %d slot(s) left WRITING by a crash",
               smp->shm_name, rc);
  log_info("re-opened snapshot object '%s' (%" PRIu64 " bytes, %u slots)",
           smp->shm_name, snap_store_total_bytes(s), snap_store_nslots(s));
  smp->store = s;
  refuse_clear(smp);
  return 0;

out_refuse:
  snap_store_close(s);
  return refuse(smp, rc, msg);
}

/* The store may not be touched any more (why, rc as snap_store_check). */
static void store_drop(struct smp *smp, int rc, const char *why)
{
  struct smp_conn *sc;

  log_error("dropping snapshot object: %s; the next trainer gets a fresh "
            "object", why[0] ? why : pt_strerror(rc));
  /* Nothing of the old mapping may be touched any more: its slots in flight
   * are forgotten, not aborted. */
  for (sc = smp->conns; sc != NULL; sc = sc->next)
    sc->nwriting = 0;
  smp_peer_rebuild_store_gone(smp);
  smp_peer_store_gone(smp);
  snap_store_close(smp->store);
  smp->store = NULL;
  /* A damaged object that is still ours (same name, same inode) goes aside;
   * an unlinked or replaced one is no longer ours to touch. */
  if (rc == PT_EFORMAT)
    set_aside(smp, why);
  /* The trainer's mapping is of the dropped object: its next call
   * reconnects, says HELLO again and maps the new one. */
  if (smp->trainer != NULL)
    rpc_conn_close(smp->trainer->conn, 0);
}

bool smp_store_guard(struct smp *smp, bool full)
{
  char why[400] = "";
  int rc;

  if (smp->store == NULL)
    return false;
  rc = snap_store_check(smp->store, smp->shm_name, full, why, sizeof(why));
  if (rc == 0)
    return true;
  store_drop(smp, rc, why);
  return false;
}

/* ---- faults of the mapping ----
 *
 * The size check before each request leaves a window: an object truncated
 * while a request reads it (a verify reads whole slots) faults. A SIGBUS
 * whose address lies in the store's mapping, raised inside smp_guarded(),
 * returns there instead of killing the process; any other SIGBUS still
 * does. Nothing the guarded code does between the object's reads holds a
 * lock or allocates, so leaving it in the middle is safe. */

static struct smp *bus_smp;
static sigjmp_buf *bus_env; /* set while guarded code runs */

static void on_sigbus(int sig, siginfo_t *si, void *uc)
{
  const struct snap_store *s = bus_smp != NULL ? bus_smp->store : NULL;
  const uint8_t *a = si->si_addr;

  (void)uc;
  (void)snap_fault_catch(a); /* a helper thread's guarded read: no return */
  if (bus_env != NULL && s != NULL) {
    const uint8_t *base = snap_store_base(s);
    if (a >= base && a < base + snap_store_total_bytes(s))
      siglongjmp(*bus_env, 1);
  }
  signal(sig, SIG_DFL);
  raise(sig);
}

static int sigbus_install(struct smp *smp)
{
  struct sigaction sa;

  memset(&sa, 0, sizeof(sa));
  sa.sa_sigaction = on_sigbus;
  sa.sa_flags = SA_SIGINFO | SA_NODEFER;
  sigemptyset(&sa.sa_mask);
  bus_smp = smp;
  return sigaction(SIGBUS, &sa, NULL) == 0 ? 0 : -errno;
}

int smp_guarded(struct smp *smp, int (*fn)(void *arg), void *arg)
{
  sigjmp_buf env, *outer = bus_env;
  int rc;

  if (sigsetjmp(env, 1) != 0) {
    bus_env = outer;
    store_drop(smp, PT_EFORMAT,
               "a read of its mapping faulted (SIGBUS): the object shrank "
               "under the SMP");
    return -EIO;
  }
  bus_env = &env;
  rc = fn(arg);
  bus_env = outer;
  return rc;
}

void smp_fault_unwind(struct smp *smp)
{
  if (bus_env != NULL)
    siglongjmp(*bus_env, 1);
  store_drop(smp, PT_EFORMAT,
             "a read of its mapping faulted (SIGBUS): the object shrank "
             "under the SMP");
}

static int check_full(void *arg)
{
  smp_store_guard(arg, true);
  return 0;
}

static void on_check_timer(uv_timer_t *t)
{
  struct smp *smp = t->data;

  if (smp->store != NULL)
    smp_guarded(smp, check_full, smp);
}

/* ---- connections ---- */

struct msg_call {
  struct rpc_conn *c;
  const struct rpc_hdr *h;
  ProtobufCMessage *msg;
};

static int msg_call(void *arg)
{
  struct msg_call *mc = arg;
  return smp_serve_on_msg(mc->c, mc->h, mc->msg);
}

/* Every request runs guarded: one that faults closes its connection. */
static int on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                  ProtobufCMessage *msg)
{
  struct smp_conn *sc = rpc_conn_data(c);
  struct msg_call mc = { c, h, msg };

  if (sc == NULL)
    return PT_ESTATE;
  return smp_guarded(sc->smp, msg_call, &mc);
}

static int conn_gone(void *arg)
{
  smp_serve_conn_gone(arg);
  return 0;
}

static void on_close(struct rpc_conn *c, int err)
{
  struct smp_conn *sc = rpc_conn_data(c);
  struct smp *smp;

  if (sc == NULL)
    return;
  smp = sc->smp;
  if (err == -ENOMEM)
    log_warn("closed the connection from pid %d: its partial frame took the "
             "bytes buffered past the cap", rpc_conn_peer_pid(c));
  else if (err != 0 && err != -ECONNRESET && err != -EPIPE)
    log_debug("connection closed: %s", pt_strerror(err));
  smp_guarded(smp, conn_gone, sc);
  if (sc->prev != NULL)
    sc->prev->next = sc->next;
  else
    smp->conns = sc->next;
  if (sc->next != NULL)
    sc->next->prev = sc->prev;
  rpc_conn_set_data(c, NULL);
  free(sc);
}

/* A role-less connection that started a frame or sent a request and then
 * went quiet is closed; a silent one (libpt before its HELLO) is kept. */
static int on_idle(struct rpc_conn *c)
{
  struct smp_conn *sc = rpc_conn_data(c);

  if (sc == NULL)
    return 1;
  if (sc->role != ROLE_NONE)
    return 0;
  if (rpc_conn_partial_bytes(c) == 0 && sc->nframes == 0)
    return 0;
  log_warn("closing the connection from pid %d: no role and nothing sent "
           "for %u s%s", rpc_conn_peer_pid(c), SMP_ROLELESS_IDLE_MS / 1000,
           rpc_conn_partial_bytes(c) > 0 ? " inside a frame" : "");
  return 1;
}

/* Keeps the role-less connections below SMP_ROLELESS_MAX by closing the
 * one idle longest. */
static void roleless_trim(struct smp *smp)
{
  struct smp_conn *oldest = NULL;
  uint32_t n = 0;

  for (struct smp_conn *sc = smp->conns; sc != NULL; sc = sc->next) {
    if (sc->role != ROLE_NONE || sc->closing)
      continue;
    n++;
    if (oldest == NULL ||
        rpc_conn_idle_ms(sc->conn) > rpc_conn_idle_ms(oldest->conn))
      oldest = sc;
  }
  if (n < SMP_ROLELESS_MAX || oldest == NULL)
    return;
  /* A connection flood must not flood the log: rate-limited. */
  static struct log_limit lim;
  log_limited(&lim, LOG_LVL_WARN,
              "%u connections without a role: closing the one idle longest "
              "(pid %d, %" PRIu64 " ms)", n, rpc_conn_peer_pid(oldest->conn),
              rpc_conn_idle_ms(oldest->conn));
  oldest->closing = true;
  rpc_conn_close(oldest->conn, -ETIMEDOUT);
}

static int on_accept(struct rpc_listener *l, struct rpc_conn *c)
{
  struct smp *smp = rpc_listener_data(l);
  struct smp_conn *sc;

  if (smp->stopping)
    return -ESHUTDOWN;
  roleless_trim(smp);
  sc = calloc(1, sizeof(*sc));
  if (sc == NULL)
    return -ENOMEM;
  sc->smp = smp;
  sc->conn = c;
  sc->next = smp->conns;
  if (smp->conns != NULL)
    smp->conns->prev = sc;
  smp->conns = sc;
  rpc_conn_set_data(c, sc);
  return 0;
}

/* ---- stopping ---- */

static void smp_stop(struct smp *smp)
{
  struct smp_conn *sc, *next;

  if (smp->stopping)
    return;
  smp->stopping = true;
  if (smp->listener != NULL)
    rpc_listener_close(smp->listener);
  smp->listener = NULL;
  for (sc = smp->conns; sc != NULL; sc = next) {
    next = sc->next;
    rpc_conn_close(sc->conn, 0);
  }
  smp_trainer_pid_announce_clear(smp);
  smp_peer_rebuild_stop(smp);
  smp_peer_stop(smp);
  smp_persist_stop(smp);
  smp_persist_load_stop(smp);
  uv_timer_stop(&smp->check_timer);
  if (!uv_is_closing((uv_handle_t *)&smp->check_timer))
    uv_close((uv_handle_t *)&smp->check_timer, NULL);
  uv_signal_stop(&smp->sig_term);
  uv_signal_stop(&smp->sig_int);
  if (!uv_is_closing((uv_handle_t *)&smp->sig_term))
    uv_close((uv_handle_t *)&smp->sig_term, NULL);
  if (!uv_is_closing((uv_handle_t *)&smp->sig_int))
    uv_close((uv_handle_t *)&smp->sig_int, NULL);
}

static void on_signal(uv_signal_t *h, int signum)
{
  struct smp *smp = h->data;

  log_info("stopping on %s", strsignal(signum));
  smp_stop(smp);
}

/* ---- main ---- */

static void close_walk_cb(uv_handle_t *h, void *arg)
{
  (void)arg;
  if (!uv_is_closing(h))
    uv_close(h, NULL);
}

int smp_main(int argc, char **argv)
{
  static struct smp smp_storage;
  struct smp *smp = &smp_storage;
  struct rpc_conn_ops ops = { .on_msg = on_msg, .on_close = on_close,
                              .max_body = RPC_MAX_BODY_HELLO,
                              .idle_ms = SMP_ROLELESS_IDLE_MS,
                              .on_idle = on_idle };
  char role[48], comm[16];
  int rc, status = 1;

  memset(smp, 0, sizeof(*smp));
  rc = smp_args_parse(smp, argc, argv);
  if (rc > 0)
    return 0; /* --help */
  if (rc < 0)
    return 2;

  snprintf(role, sizeof(role), "ptd smp %u", smp->rank);
  log_set_role(role);
  rpc_log_route();
  /* Spawned through /proc/self/exe, the process would show as "exe". */
  snprintf(comm, sizeof(comm), "ptd-smp-%u", smp->rank);
  prctl(PR_SET_NAME, comm, 0, 0, 0);
  signal(SIGPIPE, SIG_IGN);
  rc = sigbus_install(smp);
  if (rc != 0)
    log_warn("cannot catch SIGBUS: %s", pt_strerror(rc));

  if (smp->secret_file != NULL) {
    char err[512];
    rc = node_secret_read(smp->secret_file, smp->secret, err, sizeof(err));
    if (rc != 0) {
      log_error("refusing to start: the node's secret is unusable: %s", err);
      return 2;
    }
    smp->has_secret = true;
  }

  rc = snap_store_name(smp->shm_name, sizeof(smp->shm_name), smp->prefix,
                       smp->job, smp->rank);
  if (rc != 0) {
    log_error("invalid snapshot object name for job '%s': %s", smp->job,
              pt_strerror(rc));
    return 2;
  }
  rc = uv_loop_init(&smp->loop);
  if (rc != 0) {
    log_error("cannot start the event loop: %s", uv_strerror(rc));
    return 1;
  }
  /* A refusal (another instance's object, ...) is kept and answers every
   * HELLO; only the process's own failures stop it. */
  smp_store_load(smp);
  uv_timer_init(&smp->loop, &smp->check_timer);
  smp->check_timer.data = smp;
  uv_timer_start(&smp->check_timer, on_check_timer, CHECK_INTERVAL_MS,
                 CHECK_INTERVAL_MS);

  uv_signal_init(&smp->loop, &smp->sig_term);
  uv_signal_init(&smp->loop, &smp->sig_int);
  smp->sig_term.data = smp;
  smp->sig_int.data = smp;
  uv_signal_start(&smp->sig_term, on_signal, SIGTERM);
  uv_signal_start(&smp->sig_int, on_signal, SIGINT);

  rc = rpc_listen_unix(&smp->loop, smp->socket_path, &ops, on_accept, smp,
                       &smp->listener);
  if (rc != 0) {
    log_error("cannot listen on '%s': %s", smp->socket_path, pt_strerror(rc));
    smp_stop(smp);
    uv_run(&smp->loop, UV_RUN_DEFAULT);
    goto out_store;
  }
  log_info("serving job '%s' rank %u on '%s' (object '%s', %u slots%s)",
           smp->job, smp->rank, smp->socket_path, smp->shm_name, smp->nslots,
           smp->autocommit ? ", autocommit" : "");
  if (smp->group.k != 0)
    log_info("member %u of coding group %u (code %u+%u, %u members)",
             smp->group.member, smp->group.group, smp->group.k, smp->group.m,
             smp->group.n);
  rc = smp_peer_start(smp);
  if (rc == 0)
    rc = smp_persist_start(smp);
  if (rc != 0) {
    smp_stop(smp);
    uv_run(&smp->loop, UV_RUN_DEFAULT);
    status = 2;
    goto out_store;
  }

  uv_run(&smp->loop, UV_RUN_DEFAULT);
  status = 0;
  log_info("stopped");

out_store:
  smp_persist_free(smp);
  smp_persist_load_free(smp);
  smp_peer_rebuild_store_gone(smp);
  smp_peer_store_gone(smp);
  snap_store_close(smp->store);
  smp->store = NULL;
  if (uv_loop_close(&smp->loop) == UV_EBUSY) {
    uv_walk(&smp->loop, close_walk_cb, NULL);
    uv_run(&smp->loop, UV_RUN_DEFAULT);
    uv_loop_close(&smp->loop);
  }
  return status;
}
