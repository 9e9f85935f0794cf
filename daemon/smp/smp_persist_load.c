/*
 * smp_persist_load.c — a restore from the persistent tier in ptd smp: the
 * node's SET_RESTORE names a complete step on disk (from_disk: its
 * directory), and the SMP loads <dir>/rank-<r>.pts into a slot, every block
 * checked against the file's checksum table (snapshot/snap_file.h), then
 * seals and commits it there, so that the trainer restores it as any
 * committed step.
 *
 * The object exists once the trainer said HELLO (its regions make it): the
 * load begins then, or at once when the object is already there, and runs
 * on libuv's pool into a mapping of the worker's own (snap_store_open; its
 * reads and writes of the mapping guarded by snap_fault_run), so the loop
 * may drop its store meanwhile: the slot is sealed only when the loop's
 * store is still the object the load began in. A file of another job,
 * instance, rank, world or layout, and a block that fails its checksum,
 * fail the load: the slot is freed, EVENT_LOAD_FAILED tells the node (which
 * then takes an older complete step), and the trainer's RESTORE_QUERY gets
 * the error. A query that comes while the load runs is held, and answered
 * with the progress (-EINPROGRESS) before half the trainer's wait is over,
 * as a rebuild's is (smp_peer_rebuild_held.c).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "snapshot/snap_file.h"

#define LOAD_ANSWER_MS 4000u /* a held query's progress, at most this late */

enum load_state { LOAD_NONE, LOAD_WAIT, LOAD_RUN, LOAD_DONE, LOAD_FAILED };

struct smp_persist_load {
  struct smp *smp;
  enum load_state state;
  uint64_t step, mark; /* mark: the manifest's, which the file must bear */
  bool any_instance;   /* a cluster's: the mark binds the file */
  char dir[1100];
  /* the load under way */
  uint32_t slot;
  uint64_t generation, store_ctime, t_start;
  uv_work_t work;
  bool busy;
  atomic_bool cancel;
  int rc;
  char msg[1400];
  /* the worker's own: the loop reads them only after the work ended */
  int w_rc;
  char w_msg[1400];
  struct snap_file_stats st;
  /* the trainer's query held meanwhile */
  bool held;
  struct smp_conn *held_sc;
  uint64_t held_id;
  uv_timer_t timer;
  bool timer_open;
  /* A SET_RESTORE that came while the read ran (packed): applied, and
   * answered, once the read stopped (its cancel is set). */
  uint8_t *deferred;
  size_t deferred_len;
  struct smp_conn *deferred_sc;
  uint64_t deferred_id;
};

static struct smp_persist_load *LD(const struct smp *smp) { return smp->load; }

static struct smp_conn *take_held(struct smp_persist_load *l)
{
  struct smp_conn *sc = l->held ? l->held_sc : NULL;
  l->held = false;
  l->held_sc = NULL;
  if (l->timer_open)
    uv_timer_stop(&l->timer);
  return sc != NULL && !sc->closing ? sc : NULL;
}

static void answer_held(struct smp_persist_load *l)
{
  uint64_t id = l->held_id;
  struct smp_conn *sc = take_held(l);
  if (sc == NULL)
    return;
  if (l->state == LOAD_DONE) {
    smp_trainer_on_restore_query(sc, id, NULL); /* as usual now */
    return;
  }
  Pt__RestoreReply m = PT__RESTORE_REPLY__INIT;
  m.status = l->rc != 0 ? l->rc : PT_ESTATE;
  m.message = l->msg;
  rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &m.base);
}

static void on_progress(uv_timer_t *t)
{
  struct smp_persist_load *l = t->data;
  uint64_t id = l->held_id;
  struct smp_conn *sc = take_held(l);
  char msg[200];
  if (sc == NULL)
    return;
  Pt__RestoreReply m = PT__RESTORE_REPLY__INIT;
  m.status = -EINPROGRESS;
  snprintf(msg, sizeof(msg), "step %" PRIu64 " is being read from disk "
           "for %" PRIu64 " ms", l->step, rpc_now_ms() - l->t_start);
  m.message = msg;
  rpc_conn_send(sc->conn, RPC_RESTORE_REPLY, id, &m.base);
}

static void fail(struct smp_persist_load *l, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static void fail(struct smp_persist_load *l, int rc, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(l->msg, sizeof(l->msg), fmt, ap);
  va_end(ap);
  l->rc = rc;
  l->state = LOAD_FAILED;
  log_error("cannot restore step %" PRIu64 " from disk: %s (%s)", l->step,
            l->msg, pt_err_name(rc));
  smp_serve_event_outcome(l->smp, PT__EVENT_KIND__EVENT_LOAD_FAILED, l->step,
                          rc, l->msg, NULL);
  answer_held(l);
}

struct load_arg {
  struct smp_persist_load *l;
  struct snap_store *s;
  struct snap_file *f;
};

static int load_guarded(void *arg)
{
  struct load_arg *a = arg;
  struct snap_file_opts o = {.cancel = &a->l->cancel,
                             .any_instance = a->l->any_instance};
  return snap_file_load(a->f, a->s, a->l->slot, &o, &a->l->st, a->l->w_msg,
                        sizeof(a->l->w_msg));
}

static void work_cb(uv_work_t *req)
{
  struct smp_persist_load *l = req->data;
  struct smp *smp = l->smp;
  struct load_arg a = {.l = l};
  char name[32];
  int dfd = -1, rc;

  l->w_msg[0] = '\0';
  rc = snap_store_open(&a.s, smp->shm_name, l->w_msg, sizeof(l->w_msg));
  if (rc != PT_OK) {
    /* The object, not the file: nothing is wrong with the step on disk. */
    if (rc == -ENOENT)
      rc = PT_ESTALE;
    goto out;
  }
  if (snap_store_ctime_ns(a.s) != l->store_ctime) {
    rc = PT_ESTALE;
    snprintf(l->w_msg, sizeof(l->w_msg), "'%s' was replaced", smp->shm_name);
    goto out;
  }
  dfd = open(l->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (dfd < 0) {
    rc = -errno;
    snprintf(l->w_msg, sizeof(l->w_msg), "cannot open '%s': %s", l->dir,
             strerror(-rc));
    goto out;
  }
  snprintf(name, sizeof(name), "rank-%" PRIu32 ".pts", smp->rank);
  rc = snap_file_open(&a.f, dfd, name, l->w_msg, sizeof(l->w_msg));
  if (rc == PT_OK && (snap_file_info(a.f)->step != l->step ||
                      snap_file_info(a.f)->mark != l->mark)) {
    rc = PT_EFORMAT;
    snprintf(l->w_msg, sizeof(l->w_msg), "'%s/%s' holds step %" PRIu64
             " of flush %" PRIu64 ", not step %" PRIu64 " of flush %" PRIu64
             " (the manifest's)", l->dir, name, snap_file_info(a.f)->step,
             snap_file_info(a.f)->mark, l->step, l->mark);
  }
  if (rc == PT_OK)
    rc = snap_fault_run(a.s, load_guarded, &a);
  if (rc == -EFAULT)
    snprintf(l->w_msg, sizeof(l->w_msg), "'%s' shrank under the load",
             smp->shm_name);
out:
  snap_file_close(a.f);
  if (dfd >= 0)
    close(dfd);
  snap_store_close(a.s);
  l->w_rc = rc;
}

static void finish(struct smp_persist_load *l, int status);

/* The deferred SET_RESTORE, now that nothing writes into a slot. */
static void run_deferred(struct smp_persist_load *l)
{
  if (l->deferred == NULL)
    return;
  uint8_t *buf = l->deferred;
  struct smp_conn *sc = l->deferred_sc;
  uint64_t id = l->deferred_id;
  Pt__SetRestore *m = pt__set_restore__unpack(NULL, l->deferred_len, buf);
  l->deferred = NULL;
  l->deferred_sc = NULL;
  free(buf);
  if (m != NULL && sc != NULL && !sc->closing)
    smp_node_on_set_restore(sc, id, m);
  if (m != NULL)
    pt__set_restore__free_unpacked(m, NULL);
}

static void after_cb(uv_work_t *req, int status)
{
  finish(req->data, status);
  run_deferred(req->data);
}

static void finish(struct smp_persist_load *l, int status)
{
  struct smp *smp = l->smp;

  l->busy = false;
  if (status == UV_ECANCELED && l->w_rc == PT_OK)
    l->w_rc = -ECANCELED;
  bool same = smp->store != NULL &&
              snap_store_ctime_ns(smp->store) == l->store_ctime;
  if (l->state != LOAD_RUN || l->w_rc != PT_OK) {
    /* The slot is freed whatever happened (its generation says whether it
     * is still the one the read took). */
    if (same)
      snap_slot_abort(smp->store, l->slot, l->generation);
    if (l->state == LOAD_RUN)
      fail(l, l->w_rc, "%s", l->w_msg[0] ? l->w_msg : pt_strerror(l->w_rc));
    return;
  }
  if (!same) {
    fail(l, PT_ESTALE, "the snapshot object was dropped while step %" PRIu64
         " was read", l->step);
    return;
  }
  int rc = snap_slot_seal(smp->store, l->slot, l->generation, l->step);
  if (rc == PT_OK)
    rc = snap_slot_commit(smp->store, l->step);
  if (rc != PT_OK) {
    snap_slot_abort(smp->store, l->slot, l->generation);
    fail(l, rc, "cannot seal the slot read from disk: %s", pt_strerror(rc));
    return;
  }
  l->state = LOAD_DONE;
  double s = (double)l->st.ns / 1e9;
  log_info("step %" PRIu64 " read from disk into slot %" PRIu32 ": %" PRIu64
           " bytes in %.3f s (%.2f GB/s%s), every block verified", l->step,
           l->slot, l->st.bytes, s,
           s > 0 ? (double)l->st.bytes / s / 1e9 : 0.0,
           l->st.direct ? ", O_DIRECT" : ", buffered");
  answer_held(l);
}

static void begin(struct smp_persist_load *l)
{
  struct smp *smp = l->smp;
  if (l->state != LOAD_WAIT || smp->store == NULL || l->busy)
    return;
  snap_slot_set_restore_missing(smp->store, l->step);
  int rc = snap_slot_acquire(smp->store, l->step, &l->slot, &l->generation);
  if (rc != PT_OK) {
    fail(l, rc == PT_SKIPPED ? -EBUSY : rc, "no slot to read step %" PRIu64
         " into: %s", l->step, pt_strerror(rc));
    return;
  }
  l->store_ctime = snap_store_ctime_ns(smp->store);
  l->t_start = rpc_now_ms();
  l->rc = l->w_rc = PT_OK;
  l->w_msg[0] = '\0';
  atomic_store(&l->cancel, false);
  rc = uv_queue_work(&smp->loop, &l->work, work_cb, after_cb);
  if (rc != 0) {
    snap_slot_abort(smp->store, l->slot, l->generation);
    fail(l, -EAGAIN, "cannot start the reader: %s", uv_strerror(rc));
    return;
  }
  l->busy = true;
  l->state = LOAD_RUN;
  log_info("restoring step %" PRIu64 " from disk ('%s')", l->step, l->dir);
}

int smp_persist_load_set(struct smp *smp, uint64_t step, const char *dir,
                         uint64_t mark, bool any_instance, char *err,
                         size_t len)
{
  struct smp_persist_load *l = LD(smp);
  if (any_instance && mark == 0) {
    snprintf(err, len, "a restore from disk of any instance needs the "
             "flush's mark");
    return -EINVAL;
  }
  if (dir[0] != '/' || strlen(dir) >= sizeof(l->dir)) {
    snprintf(err, len, "the step directory '%.200s' is not an absolute path "
             "of at most %zu bytes", dir, sizeof(l->dir) - 1);
    return -EINVAL;
  }
  if (l == NULL) {
    l = calloc(1, sizeof(*l));
    if (l == NULL)
      return -ENOMEM;
    l->smp = smp;
    l->work.data = l;
    uv_timer_init(&smp->loop, &l->timer);
    l->timer.data = l;
    l->timer_open = true;
    smp->load = l;
  }
  if (l->busy) {
    snprintf(err, len, "the read of step %" PRIu64 " from disk is still "
             "under way", l->step);
    return -EBUSY;
  }
  l->state = LOAD_WAIT;
  l->step = step;
  l->mark = mark;
  l->any_instance = any_instance;
  snprintf(l->dir, sizeof(l->dir), "%s", dir);
  begin(l); /* or at the trainer's HELLO, which makes the object */
  return PT_OK;
}

int smp_persist_load_clear(struct smp *smp)
{
  struct smp_persist_load *l = LD(smp);
  if (l == NULL || l->state == LOAD_NONE)
    return PT_OK;
  if (l->busy)
    return -EBUSY; /* the worker writes into its slot: never under it */
  l->state = LOAD_NONE;
  l->rc = PT_ESTATE;
  snprintf(l->msg, sizeof(l->msg), "a newer restore point was set");
  answer_held(l);
  return PT_OK;
}

void smp_persist_load_store_ready(struct smp *smp)
{
  if (LD(smp) != NULL)
    begin(LD(smp));
}

bool smp_persist_load_pending(const struct smp *smp)
{
  const struct smp_persist_load *l = LD(smp);
  return l != NULL && (l->state == LOAD_WAIT || l->state == LOAD_RUN);
}

bool smp_persist_load_held_query(struct smp_conn *sc, uint64_t id,
                                 uint32_t wait_ms)
{
  struct smp_persist_load *l = LD(sc->smp);
  if (l == NULL || (l->state != LOAD_RUN && l->state != LOAD_WAIT &&
                    l->state != LOAD_FAILED))
    return false;
  if (l->held && l->held_sc != sc) {
    uint64_t old_id = l->held_id;
    struct smp_conn *old = take_held(l);
    if (old != NULL) {
      Pt__RestoreReply m = PT__RESTORE_REPLY__INIT;
      m.status = PT_ESTATE;
      m.message = "another restore query came";
      rpc_conn_send(old->conn, RPC_RESTORE_REPLY, old_id, &m.base);
    }
  }
  l->held = true;
  l->held_sc = sc;
  l->held_id = id;
  if (l->state == LOAD_FAILED) {
    answer_held(l);
    return true;
  }
  uint32_t answer_ms = LOAD_ANSWER_MS;
  if (wait_ms > 0 && wait_ms / 2 < answer_ms)
    answer_ms = wait_ms / 2 > 0 ? wait_ms / 2 : 1;
  if (wait_ms > 0)
    uv_timer_start(&l->timer, on_progress, answer_ms, 0);
  return true;
}

void smp_persist_load_conn_gone(struct smp *smp, struct smp_conn *sc)
{
  struct smp_persist_load *l = LD(smp);
  if (l != NULL && l->deferred_sc == sc)
    l->deferred_sc = NULL; /* applied all the same, answered to nobody */
  if (l != NULL && l->held && l->held_sc == sc) {
    l->held = false;
    l->held_sc = NULL;
    uv_timer_stop(&l->timer);
  }
}

void smp_persist_load_stop(struct smp *smp)
{
  struct smp_persist_load *l = LD(smp);
  if (l == NULL)
    return;
  atomic_store(&l->cancel, true);
  if (l->busy)
    uv_cancel((uv_req_t *)&l->work);
  l->held = false;
  l->held_sc = NULL;
  if (l->timer_open) {
    uv_timer_stop(&l->timer);
    uv_close((uv_handle_t *)&l->timer, NULL);
    l->timer_open = false;
  }
}

void smp_persist_load_free(struct smp *smp)
{
  struct smp_persist_load *l = LD(smp);
  if (l == NULL || l->busy || l->timer_open)
    return; /* the loop ran until both ended; else leak, never race */
  free(l->deferred);
  free(l);
  smp->load = NULL;
}

bool smp_persist_load_defer(struct smp_conn *sc, uint64_t id,
                            const Pt__SetRestore *m)
{
  struct smp_persist_load *l = LD(sc->smp);
  if (l == NULL || !l->busy)
    return false;
  size_t n = pt__set_restore__get_packed_size(m);
  uint8_t *buf = malloc(n > 0 ? n : 1);
  if (buf == NULL)
    return false; /* refused by the caller, as busy */
  pt__set_restore__pack(m, buf);
  if (l->deferred != NULL) {
    /* A newer one replaces it: the older is answered as superseded. */
    if (l->deferred_sc != NULL && !l->deferred_sc->closing)
      smp_serve_reply_status(l->deferred_sc, l->deferred_id, PT_ESTALE,
                             "a newer restore point came");
    free(l->deferred);
  }
  l->deferred = buf;
  l->deferred_len = n;
  l->deferred_sc = sc;
  l->deferred_id = id;
  atomic_store(&l->cancel, true);
  log_info("a new restore point waits for the read of step %" PRIu64
           " from disk to stop", l->step);
  return true;
}
