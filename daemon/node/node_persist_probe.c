/*
 * node_persist_probe.c — a cold start's question to a cluster node
 * (DISK_PROBE; the controller's side is daemon/controller/ctl_jobs_probe.c):
 * which steps under <dir>/<job> hold a file of every global rank the node
 * will run, written by a job of the same world size, all of one flush?
 *
 * Asked before the job's first epoch, while the node may run nothing of
 * it: the directory is read on libuv's pool (a shared file system may be
 * slow), only the files' headers (snap_file_open: magic, version, header
 * CRC, every count and offset, the size on disk), newest step first, and
 * the answer (DISK_PROBE_REPLY, the same request id) lists at most
 * PROBE_MAX steps, ascending. The data is verified block by block when
 * the step is restored. Nothing under the directory is written.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/node/node_persist_int.h"
#include "daemon/node/node_plan.h"
#include "snapshot/snap_file.h"

#define PROBE_MAX 16u          /* steps in an answer (the controller's) */
#define PROBE_RANKS_MAX 65536u /* ranks of one node (a job's limit) */

struct probe {
  uv_work_t work;
  struct node *n;
  uint64_t id, epoch;
  char job[SNAP_JOB_MAX];
  char dir[NODE_PERSIST_PATH_MAX + SNAP_JOB_MAX + 2];
  uint32_t first, ranks, world;
  /* the answer */
  int status;
  char msg[600];
  uint64_t step[PROBE_MAX], mark[PROBE_MAX], bytes[PROBE_MAX];
  uint32_t nsteps;
  uint32_t other_world;
  uint64_t other_step;
};

/* Whether every rank's file of step (in sfd) is there, of one flush:
 * OUT *mark, *bytes. A file of another world size: false, and *world. */
static bool step_usable(struct probe *pr, int sfd, uint64_t step,
                        uint64_t *mark, uint64_t *bytes, uint32_t *world)
{
  *bytes = 0;
  *world = 0;
  for (uint32_t i = 0; i < pr->ranks; i++) {
    char name[40], err[300];
    uint32_t g = pr->first + i;
    snprintf(name, sizeof(name), "rank-%" PRIu32 ".pts", g);
    struct snap_file *f = NULL;
    if (snap_file_open(&f, sfd, name, err, sizeof(err)) != PT_OK)
      return false;
    const struct snap_file_info *fi = snap_file_info(f);
    bool ok = strcmp(fi->job, pr->job) == 0 && fi->rank == g &&
              fi->step == step && (i == 0 || fi->mark == *mark);
    if (ok && fi->world != pr->world) {
      *world = fi->world;
      ok = false;
    }
    *mark = fi->mark;
    *bytes += fi->file_bytes;
    snap_file_close(f);
    if (!ok)
      return false;
  }
  return true;
}

static void probe_work(uv_work_t *req)
{
  struct probe *pr = req->data;
  uint64_t *steps = malloc(NODE_PERSIST_LIST_MAX * sizeof(*steps));
  bool *complete = malloc(NODE_PERSIST_LIST_MAX * sizeof(*complete));
  int fd = -1;
  uint64_t found[PROBE_MAX][3];
  uint32_t nf = 0;

  pr->status = PT_OK;
  if (steps == NULL || complete == NULL) {
    pr->status = -ENOMEM;
    snprintf(pr->msg, sizeof(pr->msg), "no memory");
    goto out;
  }
  fd = open(pr->dir, O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
  if (fd < 0) {
    pr->status = -errno;
    snprintf(pr->msg, sizeof(pr->msg), "cannot open '%.400s': %s%s", pr->dir,
             strerror(errno), errno == ELOOP || errno == ENOTDIR
                                  ? " (a symbolic link or not a directory)"
                                  : "");
    goto out;
  }
  uint32_t ns = node_persist_steps_list(fd, steps, complete,
                                        NODE_PERSIST_LIST_MAX);
  for (uint32_t i = ns; i-- > 0 && nf < PROBE_MAX;) {
    char name[40];
    node_persist_step_name(name, sizeof(name), steps[i]);
    int sfd = openat(fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW |
                     O_CLOEXEC);
    if (sfd < 0)
      continue;
    uint64_t mark = 0, bytes = 0;
    uint32_t world = 0;
    if (step_usable(pr, sfd, steps[i], &mark, &bytes, &world)) {
      found[nf][0] = steps[i];
      found[nf][1] = mark;
      found[nf][2] = bytes;
      nf++;
    } else if (world != 0 && pr->other_world == 0) {
      pr->other_world = world;
      pr->other_step = steps[i];
    }
    close(sfd);
  }
  for (uint32_t k = 0; k < nf; k++) { /* ascending */
    pr->step[k] = found[nf - 1 - k][0];
    pr->mark[k] = found[nf - 1 - k][1];
    pr->bytes[k] = found[nf - 1 - k][2];
  }
  pr->nsteps = nf;
out:
  if (fd >= 0)
    close(fd);
  free(steps);
  free(complete);
}

static void probe_done(uv_work_t *req, int status)
{
  struct probe *pr = req->data;
  Pt__DiskProbeReply m = PT__DISK_PROBE_REPLY__INIT;
  Pt__ProbeStep st[PROBE_MAX], *sp[PROBE_MAX];

  (void)status;
  m.job = pr->job;
  m.epoch = pr->epoch;
  m.status = pr->status;
  m.message = pr->msg[0] != '\0' ? pr->msg : NULL;
  for (uint32_t i = 0; i < pr->nsteps; i++) {
    pt__probe_step__init(&st[i]);
    st[i].step = pr->step[i];
    st[i].mark = pr->mark[i];
    st[i].has_bytes = true;
    st[i].bytes = pr->bytes[i];
    sp[i] = &st[i];
  }
  m.n_steps = pr->nsteps;
  m.steps = sp;
  m.has_other_world = m.has_other_world_step = pr->other_world != 0;
  m.other_world = pr->other_world;
  m.other_world_step = pr->other_step;
  if (pr->status != PT_OK)
    log_warn("job '%s': the controller's cold start: %s", pr->job, pr->msg);
  else
    log_info("job '%s': the controller's cold start: %" PRIu32 " usable "
             "step%s of ranks %" PRIu32 "..%" PRIu32 " under '%s'%s%s",
             pr->job, pr->nsteps, pr->nsteps == 1 ? "" : "s", pr->first,
             pr->first + pr->ranks - 1, pr->dir,
             pr->nsteps > 0 ? ", the newest " : "",
             pr->nsteps > 0 ? "listed in the answer" : "");
  int rc = node_cluster_send(pr->n, RPC_DISK_PROBE_REPLY, pr->id, &m.base);
  if (rc != PT_OK)
    log_notice("job '%s': the answer to the controller's probe was not sent "
               "(%s); it asks again when the link is back", pr->job,
               pt_strerror(rc));
  free(pr);
}

/* A refusal, sent at once. */
static void refuse(struct node *n, uint64_t id, const Pt__DiskProbe *m,
                   const char *why)
{
  Pt__DiskProbeReply r = PT__DISK_PROBE_REPLY__INIT;
  r.job = m->job != NULL ? m->job : "";
  r.epoch = m->epoch;
  r.status = -EINVAL;
  r.message = (char *)why;
  log_warn("refusing the controller's DISK_PROBE: %s", why);
  (void)node_cluster_send(n, RPC_DISK_PROBE_REPLY, id, &r.base);
}

void node_persist_probe_on_msg(struct node *n, uint64_t id,
                               const Pt__DiskProbe *m)
{
  char why[300];
  size_t dl = m->dir != NULL ? strlen(m->dir) : 0;

  if (!node_plan_job_name_ok(m->job)) {
    refuse(n, id, m, "the job name is not 1..255 of [A-Za-z0-9._-]");
    return;
  }
  if (!conf_path_plain(m->dir, NODE_PERSIST_ROOT_MAX)) {
    snprintf(why, sizeof(why), "dir '%.200s' (%zu bytes): expected an "
             "absolute path without . or .. parts, under %d bytes",
             m->dir != NULL ? m->dir : "", dl, NODE_PERSIST_ROOT_MAX);
    refuse(n, id, m, why);
    return;
  }
  if (m->ranks == 0 || m->ranks > PROBE_RANKS_MAX || m->world == 0 ||
      m->first_rank >= m->world || m->ranks > m->world - m->first_rank) {
    snprintf(why, sizeof(why), "ranks %" PRIu32 "..+%" PRIu32 " of a world "
             "of %" PRIu32, m->first_rank, m->ranks, m->world);
    refuse(n, id, m, why);
    return;
  }
  struct probe *pr = calloc(1, sizeof(*pr));
  if (pr == NULL) {
    refuse(n, id, m, "no memory");
    return;
  }
  pr->n = n;
  pr->id = id;
  pr->epoch = m->epoch;
  snprintf(pr->job, sizeof(pr->job), "%s", m->job);
  snprintf(pr->dir, sizeof(pr->dir), "%s/%s", m->dir, m->job);
  pr->first = m->first_rank;
  pr->ranks = m->ranks;
  pr->world = m->world;
  pr->work.data = pr;
  int rc = uv_queue_work(n->loop, &pr->work, probe_work, probe_done);
  if (rc != 0) {
    free(pr);
    snprintf(why, sizeof(why), "cannot queue the work: %s", uv_strerror(rc));
    refuse(n, id, m, why);
  }
}
