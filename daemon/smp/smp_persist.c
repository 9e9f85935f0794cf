/*
 * smp_persist.c — the persistent tier's writer in ptd smp (DESIGN.md,
 * "Persistent tier"; the file: snapshot/snap_file.h).
 *
 * The node marks a COMMIT "persist" every K-th commit. The SMP then writes
 * the committed step from its slot to <persist dir>/step-<N>/rank-<r>.pts
 * on a thread of libuv's pool, at the rate --persist-rate allows, and tells
 * the node how it went (EVENT_PERSISTED: status 0, or the error and a
 * sentence). One flush at a time: a step marked while one runs is not
 * written (-EBUSY in its event), never queued, so the disk's pace never
 * holds memory or training back.
 *
 * The slot stays readable until its file is durable: snapshot acquisition
 * avoids it (smp_persist_busy_slots), so with too few slots snapshots skip
 * meanwhile; nothing waits. The worker maps the object on its own
 * (snap_store_open), so the loop may drop or replace its store under it;
 * it checks that the slot still holds the step and generation the loop
 * saw, before and after it writes (snap_file_write), and its reads of the
 * mapping are guarded (snap_fault_run): an object truncated under it fails
 * the flush, not the process.
 *
 * The directory is the job's own (the node makes it): opened once, not
 * through a symlink, and refused when it is not this user's or others may
 * write it. The step directories under it are made here (mode 0700,
 * O_NOFOLLOW when opened) and fsync'd into it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"
#include "snapshot/snap_file.h"

struct smp_persist {
  struct smp *smp;
  int dirfd;               /* the job's persist directory */
  bool busy;               /* a flush is on the pool */
  atomic_bool cancel;      /* stop it (the SMP stops) */
  uv_work_t work;
  /* the flush under way */
  uint64_t step, generation, mark;
  uint32_t slot;
  int rc;
  char msg[600];
  struct snap_file_stats st;
};

#define PS(smp) ((smp)->persist)

int smp_persist_dir_open(const char *path, int *out, char *err, size_t len)
{
  struct stat sb;
  int fd = open(path, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    int rc = -errno;
    snprintf(err, len, "cannot open the persist directory '%s': %s%s", path,
             strerror(-rc), rc == -ELOOP || rc == -ENOTDIR
                                ? " (it must be a directory, not a symlink)"
                                : "");
    return rc;
  }
  if (fstat(fd, &sb) != 0 || sb.st_uid != geteuid() ||
      (sb.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
    snprintf(err, len, "refusing the persist directory '%s': owned by uid "
             "%u, mode %04o (it must be this user's, uid %u, and writable "
             "by nobody else)", path, (unsigned)sb.st_uid,
             (unsigned)(sb.st_mode & 07777), (unsigned)geteuid());
    close(fd);
    return -EPERM;
  }
  *out = fd;
  return PT_OK;
}

int smp_persist_start(struct smp *smp)
{
  char err[700];
  if (smp->persist_dir == NULL)
    return PT_OK;
  struct smp_persist *ps = calloc(1, sizeof(*ps));
  if (ps == NULL)
    return -ENOMEM;
  int rc = smp_persist_dir_open(smp->persist_dir, &ps->dirfd, err, sizeof(err));
  if (rc != PT_OK) {
    log_error("%s", err);
    free(ps);
    return rc;
  }
  ps->smp = smp;
  ps->work.data = ps;
  smp->persist = ps;
  if (smp->persist_rate != 0)
    log_info("persisting marked steps under '%s' at %.0f MB/s at most",
             smp->persist_dir, (double)smp->persist_rate / 1e6);
  else
    log_info("persisting marked steps under '%s', unthrottled",
             smp->persist_dir);
  return PT_OK;
}

uint32_t smp_persist_busy_slots(const struct smp *smp)
{
  const struct smp_persist *ps = PS(smp);
  return ps != NULL && ps->busy ? 1u << ps->slot : 0;
}

static void event(struct smp *smp, uint64_t step, uint64_t mark, int status,
                  const char *msg, uint64_t bytes)
{
  Pt__Event ev = PT__EVENT__INIT;
  ev.kind = PT__EVENT_KIND__EVENT_PERSISTED;
  ev.rank = smp->rank;
  ev.has_step = true;
  ev.step = step;
  ev.has_status = true;
  ev.status = status;
  ev.message = (char *)(msg != NULL ? msg : "");
  ev.has_mark = true;
  ev.mark = mark;
  ev.has_bytes = status == PT_OK;
  ev.bytes = bytes;
  smp_serve_event_send(smp, &ev);
}

struct write_arg {
  struct smp_persist *ps;
  struct snap_store *s;
  int stepfd;
  char name[64];
};

static int write_guarded(void *arg)
{
  struct write_arg *w = arg;
  struct smp_persist *ps = w->ps;
  struct snap_slot_info si;

  snap_slot_get(w->s, ps->slot, &si);
  if (!si.record_ok || si.step != ps->step ||
      si.generation != ps->generation || si.state != SNAP_COMMITTED) {
    snprintf(ps->msg, sizeof(ps->msg), "slot %" PRIu32 " no longer holds "
             "step %" PRIu64 " committed", ps->slot, ps->step);
    return PT_ESTALE;
  }
  struct snap_file_opts o = {.rate_bps = ps->smp->persist_rate,
                             .cancel = &ps->cancel, .mark = ps->mark};
  return snap_file_write(w->s, ps->slot, w->stepfd, w->name, &o, &ps->st,
                         ps->msg, sizeof(ps->msg));
}

/* On the pool: nothing here touches the loop or the SMP's store. */
static void work_cb(uv_work_t *req)
{
  struct smp_persist *ps = req->data;
  struct smp *smp = ps->smp;
  struct write_arg w = {.ps = ps, .stepfd = -1};
  char dname[40];
  int rc;

  snprintf(dname, sizeof(dname), "step-%020" PRIu64, ps->step);
  snprintf(w.name, sizeof(w.name), "rank-%" PRIu32 ".pts", smp->rank);
  rc = snap_store_open(&w.s, smp->shm_name, ps->msg, sizeof(ps->msg));
  if (rc != PT_OK)
    goto out;
  if (memcmp(snap_store_instance(w.s), smp->instance, SNAP_INSTANCE_BYTES) != 0) {
    rc = PT_EFOREIGN;
    snprintf(ps->msg, sizeof(ps->msg), "'%s' is no longer this job "
             "instance's object", smp->shm_name);
    goto out;
  }
  if (mkdirat(ps->dirfd, dname, 0700) == 0) {
    if (fsync(ps->dirfd) != 0) {
      rc = -errno;
      snprintf(ps->msg, sizeof(ps->msg), "cannot fsync '%s': %s",
               smp->persist_dir, strerror(-rc));
      goto out;
    }
  } else if (errno != EEXIST) {
    rc = -errno;
    snprintf(ps->msg, sizeof(ps->msg), "cannot make '%s/%s': %s",
             smp->persist_dir, dname, strerror(-rc));
    goto out;
  }
  w.stepfd = openat(ps->dirfd, dname,
                    O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (w.stepfd < 0) {
    rc = -errno;
    snprintf(ps->msg, sizeof(ps->msg), "cannot open '%s/%s': %s",
             smp->persist_dir, dname, strerror(-rc));
    goto out;
  }
  rc = snap_fault_run(w.s, write_guarded, &w);
  if (rc == -EFAULT)
    snprintf(ps->msg, sizeof(ps->msg), "a read of '%s' faulted: the object "
             "shrank under the writer", smp->shm_name);
out:
  if (w.stepfd >= 0)
    close(w.stepfd);
  snap_store_close(w.s);
  ps->rc = rc;
}

static void after_cb(uv_work_t *req, int status)
{
  struct smp_persist *ps = req->data;
  struct smp *smp = ps->smp;

  ps->busy = false;
  if (status == UV_ECANCELED && ps->rc == PT_OK) {
    ps->rc = -ECANCELED;
    snprintf(ps->msg, sizeof(ps->msg), "the SMP stopped first");
  }
  if (ps->rc == PT_OK) {
    double s = (double)ps->st.ns / 1e9;
    snprintf(ps->msg, sizeof(ps->msg), "%" PRIu64 " bytes in %.3f s (%.2f "
             "GB/s%s)", ps->st.bytes, s,
             s > 0 ? (double)ps->st.bytes / s / 1e9 : 0.0,
             ps->st.direct ? ", O_DIRECT" : ", buffered");
    log_debug("step %" PRIu64 " persisted: %s", ps->step, ps->msg);
  } else {
    log_warn("step %" PRIu64 " not persisted: %s (%s); training goes on",
             ps->step, ps->msg, pt_err_name(ps->rc));
  }
  event(smp, ps->step, ps->mark, ps->rc, ps->msg, ps->st.bytes);
}

void smp_persist_committed(struct smp *smp, uint64_t step, uint64_t mark)
{
  struct smp_persist *ps = PS(smp);
  char msg[200];

  if (ps == NULL) {
    snprintf(msg, sizeof(msg), "this SMP was started without a persist "
             "directory");
    event(smp, step, mark, -ENOTSUP, msg, 0);
    return;
  }
  if (ps->busy && ps->step == step && ps->mark == mark)
    return; /* the same COMMIT again (a node that resubscribed): under way */
  if (ps->busy) {
    snprintf(msg, sizeof(msg), "step %" PRIu64 " is still being written",
             ps->step);
    log_notice("step %" PRIu64 " not persisted: %s", step, msg);
    event(smp, step, mark, -EBUSY, msg, 0);
    return;
  }
  uint32_t slot;
  struct snap_slot_info si;
  if (smp->store == NULL || snap_slot_find_step(smp->store, step, &slot) != 0 ||
      (snap_slot_get(smp->store, slot, &si), !si.record_ok) ||
      si.state != SNAP_COMMITTED) {
    snprintf(msg, sizeof(msg), "no slot holds step %" PRIu64 " committed",
             step);
    log_warn("step %" PRIu64 " not persisted: %s", step, msg);
    event(smp, step, mark, -ENOENT, msg, 0);
    return;
  }
  ps->step = step;
  ps->mark = mark;
  ps->slot = slot;
  ps->generation = si.generation;
  ps->rc = PT_OK;
  ps->msg[0] = '\0';
  memset(&ps->st, 0, sizeof(ps->st));
  int rc = uv_queue_work(&smp->loop, &ps->work, work_cb, after_cb);
  if (rc != 0) {
    snprintf(msg, sizeof(msg), "cannot start the writer: %s", uv_strerror(rc));
    event(smp, step, mark, -EAGAIN, msg, 0);
    return;
  }
  ps->busy = true;
  log_debug("persisting step %" PRIu64 " from slot %" PRIu32, step, slot);
}

void smp_persist_stop(struct smp *smp)
{
  struct smp_persist *ps = PS(smp);
  if (ps == NULL)
    return;
  atomic_store(&ps->cancel, true);
  if (ps->busy)
    uv_cancel((uv_req_t *)&ps->work); /* not started yet: never will */
}

void smp_persist_free(struct smp *smp)
{
  struct smp_persist *ps = PS(smp);
  if (ps == NULL || ps->busy)
    return; /* the loop ran until its work ended; busy: leak, never race */
  close(ps->dirfd);
  free(ps);
  smp->persist = NULL;
}
