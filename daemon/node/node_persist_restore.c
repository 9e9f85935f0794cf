/*
 * node_persist_restore.c — a standalone node's restore from the persistent
 * tier (node_persist.h): the step it picks on disk, where that step lies,
 * the steps whose files a restore found damaged, and the job instance of
 * a cold start (--resume-from).
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/node/node_persist_int.h"

/* ---- restore from disk ---- */

static bool is_bad(const struct node_persist *ps, uint64_t step)
{
  for (uint32_t i = 0; i < ps->nbad; i++)
    if (ps->bad[i] == step)
      return true;
  return false;
}

/* The newest complete step under dirfd whose manifest names this job,
 * world and (instance: NULL, any) instance, and no restore found bad.
 * OUT: *step, m (its manifest). */
static bool newest_usable(const struct node_persist *ps, int dirfd,
                          const char *dir, const struct node *n,
                          const char *instance, uint64_t *step,
                          struct node_manifest *m)
{
  uint64_t steps[NODE_PERSIST_LIST_MAX];
  bool complete[NODE_PERSIST_LIST_MAX];
  uint32_t ns = node_persist_steps_list(dirfd, steps, complete,
                                        NODE_PERSIST_LIST_MAX);
  for (uint32_t i = ns; i-- > 0;) {
    if (!complete[i] || (ps != NULL && is_bad(ps, steps[i])))
      continue;
    char name[40], err[300] = "";
    node_persist_step_name(name, sizeof(name), steps[i]);
    int fd = openat(dirfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                    O_CLOEXEC);
    int rc = fd >= 0 ? node_persist_manifest_read(fd, m, err, sizeof(err))
                     : -errno;
    if (fd >= 0)
      close(fd);
    if (rc == PT_OK && (strcmp(m->job, n->cfg.job) != 0 ||
                        (instance != NULL &&
                         strcmp(m->instance_hex, instance) != 0) ||
                        m->step != steps[i])) {
      rc = PT_EFOREIGN;
      snprintf(err, sizeof(err), "its manifest names job '%s' instance %s, "
               "step %" PRIu64, m->job, m->instance_hex, m->step);
    } else if (rc == PT_OK && m->world != n->cfg.ranks) {
      rc = PT_EWORLD;
      snprintf(err, sizeof(err), "it was written by a job of %" PRIu32
               " ranks, this one has %" PRIu32, m->world, n->cfg.ranks);
    }
    if (rc != PT_OK) {
      log_warn("persist: step %" PRIu64 " under '%s' is not usable: %s",
               steps[i], dir, err[0] ? err : pt_strerror(rc));
      continue;
    }
    *step = steps[i];
    return true;
  }
  return false;
}

bool node_persist_restore_pick(struct node *n, uint64_t *step, char *why,
                               size_t len)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || n->cfg.cluster)
    return false; /* a cluster's: the controller's (JobAssign) */
  struct node_manifest *m = calloc(1, sizeof(*m));
  if (m == NULL)
    return false;
  uint64_t a = 0, b = 0, mark_a = 0;
  bool has_a = ps->jobfd >= 0 && newest_usable(ps, ps->jobfd, ps->job_dir, n,
                                               n->instance_hex, &a, m);
  mark_a = m->mark;
  bool has_b = ps->resumefd >= 0 &&
               newest_usable(ps, ps->resumefd, ps->resume_dir, n,
                             n->instance_hex, &b, m);
  ps->picked_resume = has_b && (!has_a || b > a);
  ps->picked_mark = ps->picked_resume ? m->mark : mark_a;
  free(m);
  if (!has_a && !has_b)
    return false;
  *step = ps->picked_resume ? b : a;
  snprintf(why, len, "step %" PRIu64 " is the newest complete step on disk "
           "(%s)", *step, ps->picked_resume ? ps->resume_dir : ps->job_dir);
  return true;
}

int node_persist_restore_instance(struct node *n, char *why, size_t len)
{
  char dir[NODE_PERSIST_PATH_MAX + SNAP_JOB_MAX + 1];
  struct node_manifest *m = malloc(sizeof(*m));
  if (m == NULL)
    return -ENOMEM;
  snprintf(dir, sizeof(dir), "%s/%s", n->cfg.resume_from, n->cfg.job);
  int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC), rc = PT_OK;
  if (fd < 0) {
    rc = -errno;
    snprintf(why, len, "--resume-from: cannot open '%s': %s", dir,
             strerror(-rc));
    goto out;
  }
  /* The newest complete step of the job, whatever its world, so that
   * another --ranks is named, never skipped. */
  uint64_t steps[NODE_PERSIST_LIST_MAX];
  bool complete[NODE_PERSIST_LIST_MAX];
  uint32_t ns = node_persist_steps_list(fd, steps, complete,
                                        NODE_PERSIST_LIST_MAX);
  rc = -ENOENT;
  for (uint32_t i = ns; i-- > 0 && rc != PT_OK;) {
    char name[40], err[300];
    if (!complete[i])
      continue;
    node_persist_step_name(name, sizeof(name), steps[i]);
    int sfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
    if (sfd >= 0 && node_persist_manifest_read(sfd, m, err, sizeof(err)) ==
                        PT_OK && strcmp(m->job, n->cfg.job) == 0 &&
        m->step == steps[i])
      rc = PT_OK;
    if (sfd >= 0)
      close(sfd);
  }
  if (rc != PT_OK) {
    snprintf(why, len, "--resume-from: no complete step of job '%s' under "
             "'%s'", n->cfg.job, dir);
    goto out;
  }
  if (m->world != n->cfg.ranks) {
    rc = PT_EWORLD;
    snprintf(why, len, "--resume-from: step %" PRIu64 " under '%s' was "
             "written by a job of %" PRIu32 " ranks; this one has --ranks %"
             PRIu32 " (give --ranks %" PRIu32 ")", m->step, dir, m->world,
             n->cfg.ranks, m->world);
    goto out;
  }
  if (!snap_store_instance_parse(m->instance_hex, n->instance)) {
    rc = PT_EFORMAT;
    snprintf(why, len, "--resume-from: the manifest of step %" PRIu64
             " names no valid instance", m->step);
    goto out;
  }
  snap_store_instance_hex(n->instance, n->instance_hex);
  snprintf(why, len, "cold start of job '%s' instance %s from '%s': its "
           "newest complete step is %" PRIu64, n->cfg.job, n->instance_hex,
           dir, m->step);
out:
  if (fd >= 0)
    close(fd);
  free(m);
  return rc;
}

int node_persist_restore_step_dir(const struct node *n, uint64_t step, char *out,
                          size_t len)
{
  const struct node_persist *ps = PS(n);
  if (ps == NULL)
    return -ENOENT;
  int k = snprintf(out, len, "%s/step-%020" PRIu64,
                   ps->picked_resume ? ps->resume_dir : ps->job_dir, step);
  return k > 0 && (size_t)k < len ? PT_OK : -ENAMETOOLONG;
}

void node_persist_restore_load_failed(struct node *n, struct node_rank *r,
                                 const Pt__Event *e)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || !e->has_step)
    return;
  int st = e->has_status ? e->status : -EIO;
  /* What the files are (damaged, foreign, gone, unreadable) is not used
   * again; what the moment was (no memory, a slot busy, the object
   * replaced) may be tried again. */
  bool bad = st == PT_ECHECKSUM || st == PT_EFORMAT || st == PT_EVERSION ||
             st == PT_EFOREIGN || st == PT_EWORLD || st == PT_EREGIONS ||
             st == -ENOENT || st == -EIO || st == -ENOTDIR || st == -ELOOP;
  if (n->cfg.cluster && bad)
    n->restore_disk_failed = true; /* the controller picks another step */
  log_warn("persist: rank %s could not restore step %" PRIu64 " from disk: "
           "%s%s", NODE_RANK(n, r->rank), e->step,
           e->message != NULL ? e->message : pt_strerror(st),
           bad ? "; that step is not used again" : "");
  if (bad && !ps->picked_resume && ps->jobfd >= 0 && !n->cfg.cluster) {
    /* Damaged in our own directory: no longer complete, so that no later
     * start tries it again (the files stay until the next pruning). An
     * archive named by --resume-from is never written to. */
    char name[48];
    node_persist_step_name(name, sizeof(name), e->step);
    int sfd = openat(ps->jobfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                     O_CLOEXEC);
    if (sfd >= 0 && unlinkat(sfd, "MANIFEST", 0) == 0) {
      fsync(sfd);
      log_notice("persist: step %" PRIu64 " is incomplete from now on (its "
                 "manifest removed)", e->step);
    }
    if (sfd >= 0)
      close(sfd);
  }
  if (bad && !is_bad(ps, e->step)) {
    if (ps->nbad == sizeof(ps->bad) / sizeof(ps->bad[0]))
      memmove(ps->bad, ps->bad + 1, sizeof(ps->bad) - sizeof(ps->bad[0]));
    else
      ps->nbad++;
    ps->bad[ps->nbad - 1] = e->step;
  }
}


uint64_t node_persist_restore_mark(const struct node *n)
{
  return PS(n) != NULL ? PS(n)->picked_mark : 0;
}

uint32_t node_persist_restore_list(const struct node *n,
                                   struct node_disk_step *out, uint32_t cap)
{
  const struct node_persist *ps = PS(n);
  if (ps == NULL || ps->jobfd < 0 || cap == 0)
    return 0;
  uint64_t *steps = calloc(NODE_PERSIST_LIST_MAX, sizeof(*steps));
  bool *complete = calloc(NODE_PERSIST_LIST_MAX, sizeof(*complete));
  struct node_manifest *m = malloc(sizeof(*m));
  uint32_t k = 0;
  if (steps == NULL || complete == NULL || m == NULL)
    goto out;
  uint32_t ns = node_persist_steps_list(ps->jobfd, steps, complete,
                                        NODE_PERSIST_LIST_MAX);
  uint32_t first = ns > cap ? ns - cap : 0; /* the newest cap of them */
  uint64_t now = node_unix_ms();
  for (uint32_t i = first; i < ns; i++) {
    struct node_disk_step *d = &out[k++];
    char name[40], err[200] = "";
    memset(d, 0, sizeof(*d));
    d->step = steps[i];
    node_persist_step_name(name, sizeof(name), steps[i]);
    int fd = openat(ps->jobfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                    O_CLOEXEC);
    if (fd < 0) {
      snprintf(d->why, sizeof(d->why), "cannot open: %s", strerror(errno));
      continue;
    }
    for (uint32_t r = 0; r < n->cfg.ranks; r++) {
      char fname[32];
      struct stat sb;
      snprintf(fname, sizeof(fname), "rank-%" PRIu32 ".pts", r);
      if (fstatat(fd, fname, &sb, AT_SYMLINK_NOFOLLOW) == 0 &&
          S_ISREG(sb.st_mode)) {
        d->files++;
        d->bytes += (uint64_t)sb.st_size;
      }
    }
    int rc = complete[i] ? node_persist_manifest_read(fd, m, err, sizeof(err))
                         : -ENOENT;
    close(fd);
    if (rc == PT_OK && (strcmp(m->job, n->cfg.job) != 0 ||
                        m->step != steps[i] || m->world != n->cfg.ranks)) {
      /* What a restore would refuse is not called complete here either. */
      snprintf(d->why, sizeof(d->why), "its manifest names job '%s' step %"
               PRIu64 " of %" PRIu32 " ranks", m->job, m->step, m->world);
    } else if (rc == PT_OK) {
      d->complete = true;
      d->ours = strcmp(m->instance_hex, n->instance_hex) == 0;
      d->age_ms = now > m->unix_ms ? now - m->unix_ms : 0;
    } else if (complete[i]) {
      snprintf(d->why, sizeof(d->why), "its manifest: %s", err);
    } else {
      snprintf(d->why, sizeof(d->why), "no manifest (%" PRIu32 " of %" PRIu32
               " rank files)", d->files, n->cfg.ranks);
    }
  }
out:
  free(steps);
  free(complete);
  free(m);
  return k;
}
