/*
 * node_persist_cluster.c — the persistent tier of a cluster node's part
 * (the controller's side: daemon/controller/ctl_jobs_persist.c).
 *
 * The controller marks the commits to write (JOB_COMMIT{persist, mark});
 * the node passes the mark to its SMPs' COMMITs as a standalone node does,
 * and once every local rank's file is durable (EVENT_PERSISTED), or at the
 * first that failed, it answers STEP_PERSISTED. The controller journals a
 * step complete when every part said so and then sends JOB_PERSISTED: the
 * node removes its own ranks' files (and their temporary files) of every
 * step older than the oldest complete step kept, on libuv's pool, and the
 * step directory once it is empty. Only its own ranks' files: on a shared
 * file system the other nodes' are theirs to remove, and a crash's
 * leftovers go with their step.
 *
 * No MANIFEST is written in a cluster: the controller's journal is the
 * record of which steps are complete. A restore from disk is the
 * controller's choice too (JobAssign.restore_from_disk, the flush's mark):
 * the SMPs read their rank's file of that flush, whatever job instance
 * wrote it (a spare restores the files a lost node wrote), every block
 * verified; a rank whose file is missing, damaged or of another flush
 * fails the part with disk_failed, and the controller goes to the
 * complete step before it.
 */
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/node/node_persist_int.h"
#include "snapshot/snap_file.h"

void node_persist_cluster_mark(struct node *n, uint64_t step, uint64_t mark)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || ps->jobfd < 0) {
    log_warn("persist: the controller asks for step %" PRIu64 " on disk, "
             "but this part has no persist dir", step);
    return;
  }
  if (ps->has_marked && !ps->failed && ps->nok < n->cfg.ranks)
    log_notice("persist: step %" PRIu64 " given up: %" PRIu32 " of %" PRIu32
               " local ranks wrote it before the controller marked step %"
               PRIu64, ps->marked, ps->nok, n->cfg.ranks, step);
  ps->has_marked = true;
  ps->marked = step;
  ps->mark = mark;
  ps->marked_until = rpc_now_ms() + NODE_PERSIST_PENDING_MS;
  ps->nok = 0;
  ps->ok_bytes = 0;
  ps->failed = false;
  memset(ps->ok, 0, n->cfg.ranks * sizeof(*ps->ok));
  log_debug("persist: step %" PRIu64 " marked by the controller (flush %"
            PRIu64 ")", step, mark);
}

void node_persist_cluster_report(struct node *n, int status, const char *msg)
{
  struct node_persist *ps = PS(n);
  if (node_part_report_persisted(n, ps->marked, ps->mark, status, msg,
                                 ps->ok_bytes) != PT_OK) {
    log_notice("persist: the link to the controller is down: step %" PRIu64
               " (%s here) is said again when it is back", ps->marked,
               status == PT_OK ? "durable" : "not durable");
    ps->owed = true;
    ps->owed_status = status;
    ps->owed_step = ps->marked;
    ps->owed_mark = ps->mark;
    ps->owed_bytes = ps->ok_bytes;
    snprintf(ps->owed_msg, sizeof(ps->owed_msg), "%s", msg != NULL ? msg : "");
  }
  if (status == PT_OK)
    ps->has_marked = false;
}

void node_persist_cluster_link_up(struct node *n)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || !ps->owed)
    return;
  if (node_part_report_persisted(n, ps->owed_step, ps->owed_mark,
                                 ps->owed_status, ps->owed_msg,
                                 ps->owed_bytes) == PT_OK)
    ps->owed = false;
}

/* ---- removing the old steps ---- */

/* Whether name is the file of one of the ranks the pruning was queued
 * for, or one of its temporary files. */
static bool own_file(const char *name, const void *arg)
{
  const struct node_persist *ps = arg;
  for (uint32_t i = 0; i < ps->w_ranks; i++) {
    char f[40];
    int l = snprintf(f, sizeof(f), "rank-%" PRIu32 ".pts",
                     ps->w_first_rank + i);
    if (strcmp(name, f) == 0)
      return true;
    size_t nl = strlen(name), sl = strlen(SNAP_FILE_TMP_SUFFIX);
    if (name[0] == '.' && strncmp(name + 1, f, (size_t)l) == 0 &&
        name[1 + l] == '.' && nl > sl &&
        strcmp(name + nl - sl, SNAP_FILE_TMP_SUFFIX) == 0)
      return true;
  }
  return false;
}

static void prune_work(uv_work_t *req)
{
  struct node_persist *ps = req->data;
  uint64_t *steps = malloc(NODE_PERSIST_LIST_MAX * sizeof(*steps));
  bool *complete = malloc(NODE_PERSIST_LIST_MAX * sizeof(*complete));
  uint32_t removed = 0;

  ps->w_rc = PT_OK;
  if (steps == NULL || complete == NULL) {
    ps->w_rc = -ENOMEM;
    goto out;
  }
  uint32_t ns = node_persist_steps_list(ps->jobfd, steps, complete,
                                        NODE_PERSIST_LIST_MAX);
  for (uint32_t i = 0; i < ns && steps[i] < ps->w_step; i++) {
    /* The directory goes once every node removed its own files. */
    bool any = false;
    if (node_persist_step_remove(ps->jobfd, steps[i], own_file, ps, &any) ==
            PT_OK || any)
      removed++;
  }
out:
  ps->w_nremoved = removed;
  free(steps);
  free(complete);
}

static void prune_done(uv_work_t *req, int status)
{
  struct node_persist *ps = req->data;
  (void)status;
  ps->busy = false;
  if (ps->orphan) {
    node_persist_free(ps);
    return;
  }
  if (ps->w_nremoved > 0)
    log_debug("persist: this node's files of %" PRIu32 " steps older than "
              "step %" PRIu64 " removed", ps->w_nremoved, ps->w_step);
}

void node_persist_cluster_complete(struct node *n, uint64_t step,
                                   uint64_t mark, uint64_t keep_from)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL || ps->jobfd < 0)
    return;
  if (ps->has_marked && ps->marked == step && ps->mark == mark)
    ps->has_marked = false;
  ps->has_complete = true;
  ps->complete = step;
  ps->complete_unix_ms = node_unix_ms();
  ps->persisted++;
  n->state_dirty = true;
  log_info("step %" PRIu64 " is complete on disk (the controller: every "
           "rank's file is durable under '%s')", step, ps->job_dir);
  if (ps->busy || keep_from == 0)
    return; /* the next one removes what this one would have */
  ps->w_step = keep_from;
  ps->w_first_rank = n->cfg.first_rank;
  ps->w_ranks = n->cfg.ranks;
  int rc = uv_queue_work(n->loop, &ps->work, prune_work, prune_done);
  if (rc != 0) {
    log_warn("persist: cannot remove old steps: %s", uv_strerror(rc));
    return;
  }
  ps->busy = true;
}

void node_persist_cluster_restore(struct node *n, uint64_t step,
                                  uint64_t mark, bool resume)
{
  struct node_persist *ps = PS(n);
  if (ps == NULL)
    return;
  ps->picked_resume = resume;
  ps->picked_mark = mark;
  if (resume)
    snprintf(n->restore_reason, sizeof(n->restore_reason), "step %" PRIu64
             " from disk under '%.300s', an earlier run's: a cold start "
             "(--resume-from)", step, ps->resume_dir);
  else
    snprintf(n->restore_reason, sizeof(n->restore_reason), "step %" PRIu64
             " from disk, the controller's choice: memory could not serve "
             "it (see ptctl status of the job)", step);
}
