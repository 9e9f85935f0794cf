/*
 * node_persist.c — the persistent tier as a standalone `ptd node` runs it
 * (DESIGN.md, "Persistent tier"; the rank files: snapshot/snap_file.h).
 *
 * Every --persist-every'th commit is marked: its COMMIT tells each SMP to
 * write the step to <root>/<job>/step-<N>/rank-<r>.pts beside training
 * (daemon/smp/smp_persist.c), and each answers EVENT_PERSISTED. Once every
 * rank's file is durable the node checks each file's header (job,
 * instance, rank, step, world) and writes the step's MANIFEST last, by the
 * same discipline (temporary name, fsync, rename, directory fsync): a step
 * is complete when its MANIFEST is there, and only a complete step is ever
 * restored. Then steps are pruned: the newest --persist-keep complete ones
 * stay; an older complete one loses its MANIFEST first (so a crash in the
 * middle leaves an incomplete step, never a complete one with files
 * missing), then its files; an incomplete step older than the newest
 * complete one goes too. The manifest and the pruning run on libuv's pool:
 * fsync never holds the loop.
 *
 * One step is marked at a time: the next mark comes at the first commit
 * that is at least --persist-every commits after the last mark and finds
 * that step's files done (or failed, or overdue by NODE_PERSIST_PENDING_MS:
 * an SMP that died with its flush), so a slow disk makes marks rarer and
 * never leaves every step incomplete. A marked step that a rank could not
 * write (disk full, an SMP gone) stays incomplete and is logged. Nothing
 * waits on the disk.
 *
 * The root must exist and be a directory, not a symlink, writable by no
 * one else unless sticky (a shared /scratch); the job's directory is made
 * here (0700) and must be this user's and writable by nobody else. At
 * start, the leftovers of a crash are cleaned: incomplete steps, and the
 * temporary files of writers that died.
 *
 * MANIFEST, text, one field per line:
 *   pt-manifest 1
 *   job <name>
 *   instance <32 hex digits>
 *   step <N>
 *   world <ranks>
 *   written_unix_ms <ms>
 *   mark <id>                    (the flush's id, in every rank's file)
 *   rank <r> <file bytes>        (one line per rank, in order)
 *   crc32c <8 hex digits>        (of every byte before this line)
 */
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/node/node_persist_int.h"
#include "snapshot/snap_file.h"


void node_persist_step_name(char *out, size_t len, uint64_t step)
{
  snprintf(out, len, "step-%020" PRIu64, step);
}

static bool step_parse(const char *name, uint64_t *step)
{
  if (strncmp(name, "step-", 5) != 0 || strlen(name) != 25)
    return false;
  uint64_t v = 0;
  for (const char *p = name + 5; *p; p++) {
    if (*p < '0' || *p > '9' || v > (UINT64_MAX - 9) / 10)
      return false;
    v = v * 10 + (uint64_t)(*p - '0');
  }
  *step = v;
  return true;
}

/* ---- removing a step ---- */

int node_persist_step_remove(int jobfd, uint64_t step,
                             bool (*mine)(const char *name, const void *arg),
                             const void *arg, bool *any)
{
  char name[40];
  bool removed = false;
  node_persist_step_name(name, sizeof(name), step);
  int fd = openat(jobfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0)
    return -errno;
  /* The whole step: incomplete from the first unlink on. */
  if (mine == NULL && unlinkat(fd, "MANIFEST", 0) == 0)
    fsync(fd);
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return -errno;
  }
  struct dirent *e;
  while ((e = readdir(d)) != NULL)
    if (strcmp(e->d_name, ".") != 0 && strcmp(e->d_name, "..") != 0 &&
        (mine == NULL || mine(e->d_name, arg)) &&
        unlinkat(fd, e->d_name, 0) == 0)
      removed = true;
  if (removed)
    fsync(fd);
  closedir(d);
  if (any != NULL)
    *any = removed;
  /* (ENOTEMPTY: the files of other nodes' ranks are theirs to remove) */
  if (unlinkat(jobfd, name, AT_REMOVEDIR) != 0)
    return -errno;
  fsync(jobfd);
  return PT_OK;
}

/* The steps under jobfd: OUT steps[] (ascending), complete[] (a manifest
 * is there); returns how many (at most cap). */
uint32_t node_persist_steps_list(int jobfd, uint64_t *steps, bool *complete,
                           uint32_t cap)
{
  int fd = openat(jobfd, ".", O_RDONLY | O_DIRECTORY | O_CLOEXEC);
  if (fd < 0)
    return 0;
  DIR *d = fdopendir(fd);
  if (d == NULL) {
    close(fd);
    return 0;
  }
  uint32_t n = 0;
  struct dirent *e;
  /* The newest cap of them, whatever the directory's order: once full, a
   * step above the oldest kept one takes its place. */
  while ((e = readdir(d)) != NULL && cap > 0) {
    uint64_t s;
    if (!step_parse(e->d_name, &s))
      continue;
    if (n == cap) {
      if (s <= steps[0])
        continue;
      memmove(steps, steps + 1, (size_t)(n - 1) * sizeof(*steps));
      n--;
    }
    uint32_t at = n++;
    while (at > 0 && steps[at - 1] > s) { /* insertion, ascending */
      steps[at] = steps[at - 1];
      at--;
    }
    steps[at] = s;
  }
  closedir(d);
  for (uint32_t i = 0; i < n; i++) {
    char name[64];
    node_persist_step_name(name, sizeof(name), steps[i]);
    strcat(name, "/MANIFEST");
    complete[i] = faccessat(jobfd, name, F_OK, AT_SYMLINK_NOFOLLOW) == 0;
  }
  return n;
}

/* Keeps the newest keep complete steps and what is newer than the newest
 * complete one (being written); removes the rest. */
/* Whether the complete step's MANIFEST names this job instance. */
bool node_persist_ours(int jobfd, uint64_t step, const char *instance_hex)
{
  char name[40], err[200];
  struct node_manifest *m = malloc(sizeof(*m));
  bool yes = false;
  node_persist_step_name(name, sizeof(name), step);
  int fd = openat(jobfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (m != NULL && fd >= 0 &&
      node_persist_manifest_read(fd, m, err, sizeof(err)) == PT_OK)
    yes = strcmp(m->instance_hex, instance_hex) == 0;
  if (fd >= 0)
    close(fd);
  free(m);
  return yes;
}

/* Keeps the newest keep complete steps of this instance and what is newer
 * than its newest complete one (being written); removes its older
 * complete steps, incomplete steps older than its newest complete one, and
 * Another instance's steps
 * are left alone. */
static void prune(int jobfd, uint32_t keep, const char *instance_hex)
{
  uint64_t steps[NODE_PERSIST_LIST_MAX];
  bool complete[NODE_PERSIST_LIST_MAX];
  uint32_t n = node_persist_steps_list(jobfd, steps, complete, NODE_PERSIST_LIST_MAX);
  uint32_t kept = 0;
  bool newer_complete = false;
  for (uint32_t i = n; i-- > 0;) {
    if (complete[i] && !node_persist_ours(jobfd, steps[i], instance_hex))
      continue;
    bool drop = complete[i] ? kept >= keep : newer_complete;
    if (complete[i]) {
      kept++;
      newer_complete = true;
    }
    if (drop) {
      int rc = node_persist_step_remove(jobfd, steps[i], NULL, NULL, NULL);
      if (rc == PT_OK)
        log_debug("persist: removed step %" PRIu64 " (%s)", steps[i],
                  complete[i] ? "older than the kept ones" : "incomplete");
    }
  }
}

/* ---- the manifest's work ---- */

static void manifest_work(uv_work_t *req)
{
  struct node_persist *ps = req->data;
  struct node *n = ps->n;
  uint32_t world = n->cfg.ranks;
  uint64_t *bytes = calloc(world, sizeof(*bytes));
  char name[40], *buf = malloc(NODE_MANIFEST_MAX);
  int stepfd = -1, rc = PT_OK;

  ps->w_msg[0] = '\0';
  if (bytes == NULL || buf == NULL) {
    rc = -ENOMEM;
    snprintf(ps->w_msg, sizeof(ps->w_msg), "no memory");
    goto out;
  }
  node_persist_step_name(name, sizeof(name), ps->w_step);
  stepfd = openat(ps->jobfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                  O_CLOEXEC);
  if (stepfd < 0) {
    rc = -errno;
    snprintf(ps->w_msg, sizeof(ps->w_msg), "cannot open '%s': %s", name,
             strerror(-rc));
    goto out;
  }
  /* Every rank's file is the one it should be before the manifest says
   * so. */
  for (uint32_t r = 0; r < world && rc == PT_OK; r++) {
    char fname[32], why[300] = "";
    struct snap_file *f = NULL;
    snprintf(fname, sizeof(fname), "rank-%" PRIu32 ".pts", r);
    rc = snap_file_open(&f, stepfd, fname, why, sizeof(why));
    if (rc == PT_OK) {
      const struct snap_file_info *in = snap_file_info(f);
      if (strcmp(in->job, n->cfg.job) != 0 ||
          memcmp(in->instance, n->instance, SNAP_INSTANCE_BYTES) != 0 ||
          in->rank != r || in->step != ps->w_step || in->world != world ||
          in->mark != ps->w_mark) {
        rc = PT_EFOREIGN;
        snprintf(why, sizeof(why), "'%s' holds rank %" PRIu32 " step %"
                 PRIu64 " of another job, instance, world or flush (mark %"
                 PRIu64 ", not %" PRIu64 ")", fname, in->rank, in->step,
                 in->mark, ps->w_mark);
      } else {
        bytes[r] = in->file_bytes;
      }
    }
    snap_file_close(f);
    if (rc != PT_OK)
      snprintf(ps->w_msg, sizeof(ps->w_msg), "%s", why);
  }
  if (rc != PT_OK)
    goto out;
  int len = node_persist_manifest_format(buf, NODE_MANIFEST_MAX, n->cfg.job,
                                         n->instance_hex, ps->w_step, world,
                                         node_unix_ms(), ps->w_mark, bytes);
  if (len < 0) {
    rc = len;
    snprintf(ps->w_msg, sizeof(ps->w_msg), "the manifest does not fit in %d "
             "bytes", NODE_MANIFEST_MAX);
    goto out;
  }
  int fd = openat(stepfd, ".MANIFEST" SNAP_FILE_TMP_SUFFIX,
                  O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC, 0600);
  ssize_t wrote = fd >= 0 ? write(fd, buf, (size_t)len) : -1;
  if (fd < 0 || wrote != len || fsync(fd) != 0) {
    rc = fd < 0 || wrote < 0 || wrote == len ? -errno : -ENOSPC;
    if (rc == 0)
      rc = -EIO;
    if (fd >= 0)
      close(fd);
    unlinkat(stepfd, ".MANIFEST" SNAP_FILE_TMP_SUFFIX, 0);
    snprintf(ps->w_msg, sizeof(ps->w_msg), "cannot write the manifest of "
             "'%s': %s", name, strerror(-rc));
    goto out;
  }
  close(fd);
  errno = 0;
  bool renamed = renameat(stepfd, ".MANIFEST" SNAP_FILE_TMP_SUFFIX, stepfd,
                          "MANIFEST") == 0;
  if (!renamed || fsync(stepfd) != 0) {
    rc = errno != 0 ? -errno : -EIO;
    /* Not durable: no manifest at all, rather than one the node did not
     * count (a crash could keep it or not). */
    unlinkat(stepfd, renamed ? "MANIFEST" : ".MANIFEST" SNAP_FILE_TMP_SUFFIX, 0);
    snprintf(ps->w_msg, sizeof(ps->w_msg), "cannot put the manifest of "
             "'%s' in place: %s", name, strerror(-rc));
    goto out;
  }
  prune(ps->jobfd, n->cfg.persist_keep, n->instance_hex);
out:
  if (stepfd >= 0)
    close(stepfd);
  free(bytes);
  free(buf);
  ps->w_rc = rc;
}

static void manifest_done(uv_work_t *req, int status)
{
  struct node_persist *ps = req->data;
  (void)status;
  ps->busy = false;
  if (ps->orphan) {
    node_persist_free(ps);
    return;
  }
  if (ps->w_rc == PT_OK) {
    ps->has_complete = true;
    ps->complete = ps->w_step;
    ps->complete_unix_ms = node_unix_ms();
    ps->persisted++;
    log_info("step %" PRIu64 " is on disk, complete, under '%s'", ps->w_step,
             ps->job_dir);
  } else {
    ps->failures++;
    snprintf(ps->last_error, sizeof(ps->last_error), "%s", ps->w_msg);
    log_warn("step %" PRIu64 " not made complete on disk: %s; training "
             "goes on", ps->w_step, ps->w_msg);
  }
  ps->n->state_dirty = true;
}

/* ---- the node's hooks ---- */

static int root_check(const char *root, char *err, size_t len)
{
  struct stat sb;
  if (lstat(root, &sb) != 0) {
    int rc = -errno;
    snprintf(err, len, "--persist-dir '%s': %s", root, strerror(-rc));
    return rc;
  }
  if (S_ISLNK(sb.st_mode)) {
    snprintf(err, len, "--persist-dir '%s' is a symbolic link: give its "
             "target", root);
    return -EPERM;
  }
  if (!S_ISDIR(sb.st_mode)) {
    snprintf(err, len, "--persist-dir '%s' is not a directory", root);
    return -ENOTDIR;
  }
  if ((sb.st_mode & S_IWOTH) != 0 && (sb.st_mode & S_ISVTX) == 0) {
    snprintf(err, len, "--persist-dir '%s' has mode %04o: anyone may "
             "replace what is in it (not sticky); refusing it", root,
             (unsigned)(sb.st_mode & 07777));
    return -EPERM;
  }
  return PT_OK;
}

void node_persist_free(struct node_persist *ps)
{
  if (ps->jobfd >= 0)
    close(ps->jobfd);
  if (ps->rootfd >= 0)
    close(ps->rootfd);
  if (ps->resumefd >= 0)
    close(ps->resumefd);
  free(ps->ok);
  free(ps);
}

int node_persist_open(struct node *n, char *err, size_t len)
{
  if (n->cfg.persist_dir[0] == '\0' && n->cfg.resume_from[0] == '\0')
    return PT_OK;
  int rc = n->cfg.persist_dir[0] != '\0'
               ? root_check(n->cfg.persist_dir, err, len)
               : PT_OK;
  if (rc != PT_OK)
    return rc;
  struct node_persist *ps = calloc(1, sizeof(*ps));
  bool *ok = calloc(n->cfg.ranks, sizeof(*ok));
  if (ps == NULL || ok == NULL) {
    free(ps);
    free(ok);
    snprintf(err, len, "no memory");
    return -ENOMEM;
  }
  ps->n = n;
  ps->ok = ok;
  ps->work.data = ps;
  ps->jobfd = ps->rootfd = ps->resumefd = -1;
  if (n->cfg.resume_from[0] != '\0') {
    snprintf(ps->resume_dir, sizeof(ps->resume_dir), "%s/%s",
             n->cfg.resume_from, n->cfg.job);
    ps->resumefd = open(ps->resume_dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (ps->resumefd < 0) {
      rc = -errno;
      snprintf(err, len, "--resume-from: cannot open '%s': %s",
               ps->resume_dir, strerror(-rc));
      goto fail;
    }
  }
  if (n->cfg.persist_dir[0] == '\0') {
    n->persist = ps; /* a source to restore from, nothing written */
    return PT_OK;
  }
  snprintf(ps->job_dir, sizeof(ps->job_dir), "%s/%s", n->cfg.persist_dir,
           n->cfg.job);
  ps->rootfd = open(n->cfg.persist_dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                    O_CLOEXEC);
  if (ps->rootfd < 0) {
    rc = -errno;
    snprintf(err, len, "cannot open --persist-dir '%s': %s",
             n->cfg.persist_dir, strerror(-rc));
    goto fail;
  }
  if (mkdirat(ps->rootfd, n->cfg.job, 0700) == 0)
    fsync(ps->rootfd);
  else if (errno != EEXIST) {
    rc = -errno;
    snprintf(err, len, "cannot make '%s': %s", ps->job_dir, strerror(-rc));
    goto fail;
  }
  ps->jobfd = openat(ps->rootfd, n->cfg.job, O_RDONLY | O_DIRECTORY |
                     O_NOFOLLOW | O_CLOEXEC);
  struct stat sb;
  if (ps->jobfd < 0 || fstat(ps->jobfd, &sb) != 0) {
    rc = -errno;
    snprintf(err, len, "cannot open '%s': %s%s", ps->job_dir, strerror(-rc),
             rc == -ELOOP || rc == -ENOTDIR ? " (a symbolic link or not a "
                                              "directory: refusing it)" : "");
    goto fail;
  }
  if (sb.st_uid != geteuid() || (sb.st_mode & 022) != 0) {
    rc = -EPERM;
    snprintf(err, len, "refusing '%s': owned by uid %u, mode %04o (it must "
             "be this user's, uid %u, and writable by nobody else)",
             ps->job_dir, (unsigned)sb.st_uid, (unsigned)(sb.st_mode & 07777),
             (unsigned)geteuid());
    goto fail;
  }
  if (n->cfg.cluster) {
    /* A cluster's directory may be shared by every node: what is not
     * this node's is never touched, and its own old files go as steps
     * complete (node_persist_cluster.c). */
    n->persist = ps;
    log_info("job '%s': persisting the steps the controller marks to '%s'",
             n->cfg.job, ps->job_dir);
    return PT_OK;
  }
  /* A crash's leftovers: incomplete steps, temporary files. */
  uint64_t steps[NODE_PERSIST_LIST_MAX];
  bool complete[NODE_PERSIST_LIST_MAX];
  uint32_t ns = node_persist_steps_list(ps->jobfd, steps, complete, NODE_PERSIST_LIST_MAX);
  uint32_t swept = 0;
  for (uint32_t i = 0; i < ns; i++) {
    if (!complete[i]) {
      if (node_persist_step_remove(ps->jobfd, steps[i], NULL, NULL, NULL) ==
          PT_OK)
        swept++;
      continue;
    }
    char name[40];
    node_persist_step_name(name, sizeof(name), steps[i]);
    int fd = openat(ps->jobfd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                    O_CLOEXEC);
    if (fd >= 0) {
      swept += (uint32_t)snap_file_sweep(fd);
      close(fd);
    }
    if (node_persist_ours(ps->jobfd, steps[i], n->instance_hex)) {
      ps->has_complete = true;
      ps->complete = steps[i];
    }
  }
  swept += (uint32_t)snap_file_sweep(ps->jobfd);
  if (swept > 0)
    log_notice("persist: removed %" PRIu32 " leftovers of an earlier run "
               "under '%s' (incomplete steps, temporary files)", swept,
               ps->job_dir);
  n->persist = ps;
  char newest[32] = "none";
  if (ps->has_complete)
    snprintf(newest, sizeof(newest), "step %" PRIu64, ps->complete);
  log_info("persisting every %" PRIu32 " commits to '%s' (keeping %" PRIu32
           " complete steps%s; newest complete: %s)", n->cfg.persist_every,
           ps->job_dir, n->cfg.persist_keep,
           n->cfg.persist_rate ? "" : ", unthrottled", newest);
  return PT_OK;
fail:
  node_persist_free(ps);
  return rc;
}

void node_persist_close(struct node *n)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL)
    return;
  n->persist = NULL;
  if (ps->busy)
    ps->orphan = true; /* freed when its work ends */
  else
    node_persist_free(ps);
}

const char *node_persist_job_dir(const struct node *n)
{
  return PS(n) != NULL && PS(n)->jobfd >= 0 ? PS(n)->job_dir : NULL;
}

bool node_persist_marked(const struct node *n, uint64_t step, uint64_t *mark)
{
  const struct node_persist *ps = PS(n);
  bool yes = ps != NULL && ps->has_marked && ps->marked == step;
  if (mark != NULL)
    *mark = yes ? ps->mark : 0;
  return yes;
}

void node_persist_on_commit(struct node *n, uint64_t step)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || ps->jobfd < 0 || ++ps->commits < n->cfg.persist_every)
    return;
  /* One marked step at a time: a slow disk makes the marks rarer, never
   * leaves every step incomplete. An SMP that never answers (it died with
   * its flush) holds the next mark back until the deadline. */
  uint64_t now = rpc_now_ms();
  if (ps->has_marked && !ps->failed && now < ps->marked_until) {
    log_debug("persist: step %" PRIu64 " not marked: step %" PRIu64 " is "
              "still being written (%" PRIu32 " of %" PRIu32 " ranks done)",
              step, ps->marked, ps->nok, n->cfg.ranks);
    return;
  }
  if (ps->busy)
    return; /* the manifest of the last one is being written */
  if (ps->has_marked && !ps->failed)
    log_notice("persist: step %" PRIu64 " given up: %" PRIu32 " of %" PRIu32
               " ranks wrote it in %u s", ps->marked, ps->nok, n->cfg.ranks,
               NODE_PERSIST_PENDING_MS / 1000u);
  ps->commits = 0;
  ps->marked_until = now + NODE_PERSIST_PENDING_MS;
  ps->has_marked = true;
  ps->marked = step;
  /* A flush of its own: unique in this directory across the node's
   * restarts, and bound into every file and the manifest. */
  ps->mark = node_unix_ms() * 1000u + (++ps->mark_seq % 1000u);
  /* An older flush of the same step (a job that went back) loses its
   * manifest first: the new files never sit under the old one. */
  char name[48];
  node_persist_step_name(name, sizeof(name), step);
  if (node_persist_complete_foreign(ps->jobfd, step, n->instance_hex)) {
    log_notice("persist: step %" PRIu64 " not written: '%s/%s' is a complete "
               "step of another job instance", step, ps->job_dir, name);
    ps->has_marked = false;
    return;
  }
  strcat(name, "/MANIFEST");
  if (unlinkat(ps->jobfd, name, 0) == 0)
    log_debug("persist: an older manifest of step %" PRIu64 " removed",
              step);
  ps->nok = 0;
  ps->failed = false;
  memset(ps->ok, 0, n->cfg.ranks * sizeof(*ps->ok));
  log_debug("persist: step %" PRIu64 " marked", step);
}

void node_persist_on_event(struct node *n, struct node_rank *r,
                           const Pt__Event *e)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || !e->has_step || !ps->has_marked || e->step != ps->marked ||
      !e->has_mark || e->mark != ps->mark || r->rank >= n->cfg.ranks) {
    log_debug("persist: rank %s reported step %" PRIu64 ", not the marked "
              "one", NODE_RANK(n, r->rank), e->step);
    return;
  }
  int status = e->has_status ? e->status : -EIO;
  if (status != PT_OK) {
    if (!ps->failed) {
      ps->failures++;
      snprintf(ps->last_error, sizeof(ps->last_error), "rank %s: %s",
               NODE_RANK(n, r->rank),
               e->message != NULL && e->message[0] ? e->message
                                                   : pt_strerror(status));
      log_at_(status == -EBUSY ? LOG_LVL_NOTICE : LOG_LVL_WARN,
              "persist: step %" PRIu64 " stays incomplete on disk: %s",
              e->step, ps->last_error);
      if (n->cfg.cluster)
        node_persist_cluster_report(n, status, ps->last_error);
    }
    ps->failed = true;
    return;
  }
  if (!ps->ok[r->rank]) {
    ps->ok[r->rank] = true;
    ps->nok++;
    ps->ok_bytes += e->has_bytes ? e->bytes : 0;
  }
  if (ps->failed || ps->nok < n->cfg.ranks)
    return;
  if (n->cfg.cluster) {
    node_persist_cluster_report(n, PT_OK, NULL); /* the controller's call */
    return;
  }
  if (ps->busy) {
    log_notice("persist: step %" PRIu64 " written by every rank while the "
               "manifest of step %" PRIu64 " is still being written; it "
               "stays incomplete", e->step, ps->w_step);
    return;
  }
  ps->has_marked = false;
  ps->w_step = e->step;
  ps->w_mark = ps->mark;
  int rc = uv_queue_work(n->loop, &ps->work, manifest_work, manifest_done);
  if (rc != 0) {
    log_warn("persist: cannot write the manifest of step %" PRIu64 ": %s",
             e->step, uv_strerror(rc));
    return;
  }
  ps->busy = true;
}

void node_persist_status(const struct node *n, struct node_persist_status *st)
{
  const struct node_persist *ps = PS(n);
  memset(st, 0, sizeof(*st));
  if (ps == NULL)
    return;
  st->on = ps->jobfd >= 0;
  st->has_complete = ps->has_complete;
  st->complete = ps->complete;
  st->complete_unix_ms = ps->complete_unix_ms;
  st->persisted = ps->persisted;
  st->failures = ps->failures;
  snprintf(st->last_error, sizeof(st->last_error), "%s", ps->last_error);
  snprintf(st->dir, sizeof(st->dir), "%s", ps->job_dir);
}

void node_persist_restored(struct node *n, bool has, uint64_t step)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL)
    return;
  /* The SMPs' flushes of the marked step are not waited for (a late answer
   * carries its old mark). */
  ps->has_marked = false;
  ps->commits = 0;
  (void)has;
  (void)step;
}

bool node_persist_complete_foreign(int jobfd, uint64_t step,
                                   const char *instance_hex)
{
  char name[48];
  node_persist_step_name(name, sizeof(name), step);
  strcat(name, "/MANIFEST");
  if (faccessat(jobfd, name, F_OK, AT_SYMLINK_NOFOLLOW) != 0)
    return false;
  return !node_persist_ours(jobfd, step, instance_hex);
}
