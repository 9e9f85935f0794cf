/*
 * node_part_start.c — a cluster-mode node's job part set up from its
 * assignment (node_part.c has the part's life and the controller's
 * decisions): the configuration from the JobSpec, the checks before start,
 * the job's snapshot objects (continued or a new instance), part.state
 * written before anything is spawned, the persistent tier's directory
 * opened, a restore from disk, then the ranks. A part that cannot start is
 * failed and recorded so; nothing of it runs.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_part_int.h"
#include "daemon/node/node_persist.h"

void node_part_start_free_cmd(struct node_part *p)
{
  for (uint32_t i = 0; i < p->ncmd; i++)
    free(p->cmd[i]);
  free(p->cmd);
  p->cmd = NULL;
  p->ncmd = 0;
}

/* The per-job fields of struct node, as a new node has them. */
static void reset_job(struct node *n)
{
  n->phase = NODE_PH_STARTING;
  n->outcome = NODE_OUT_NONE;
  n->why[0] = '\0';
  n->permanent = false;
  n->why_status = 0;
  n->adopting = false;
  n->backoff_until = n->phase_deadline = n->kill_at = 0;
  n->restore_fails = 0;
  n->attempt_failed = n->restore_has = false;
  n->restore_step = 0;
  n->end_deadline = 0;
  n->has_committed = false;
  n->committed = n->committed_unix_ms = 0;
  n->restarts = 0;
  n->commits = n->restores = 0;
  free(n->restart_log.at);
  memset(&n->restart_log, 0, sizeof(n->restart_log));
  n->backoff_attempt = 0;
  n->running_since = 0;
  n->committed_since = false;
  n->commit_logged_ms = 0;
  n->instance_ended = false;
  n->restore_disk = n->restore_disk_assigned = n->restore_disk_failed = false;
  n->restore_disk_mark = 0;
}

/* n->cfg from the assignment. */
static int configure(struct node *n, const Pt__JobAssign *a)
{
  struct node_part *p = node_part_of(n);
  const Pt__JobSpec *s = a->spec;
  struct node_config *c = &n->cfg;

  node_part_start_free_cmd(p);
  p->cmd = calloc(s->n_argv + 1, sizeof(*p->cmd));
  if (p->cmd == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < s->n_argv; i++) {
    p->cmd[i] = strdup(s->argv[i]);
    if (p->cmd[i] == NULL)
      return -ENOMEM;
    p->ncmd++;
  }
  snprintf(c->job, sizeof(c->job), "%s", s->name);
  c->ranks = s->ranks_per_node;
  c->slots = s->has_slots ? s->slots : 3;
  c->memory_budget = s->has_memory_budget ? s->memory_budget : 0;
  c->cmd = p->cmd;
  c->ncmd = (int)p->ncmd;
  c->keep = true; /* JOB_HALT{remove} removes the objects */
  c->first_rank = a->first_rank;
  c->world = a->world_size;
  c->group_rank = a->node_index;
  snprintf(c->master_addr, sizeof(c->master_addr), "%s", a->master_addr);
  c->master_port = a->master_port;
  /* The persistent tier (the controller checked the path and filled the
   * defaults). */
  c->persist_dir[0] = '\0';
  if (s->persist_dir != NULL && s->persist_dir[0] != '\0') {
    /* (as --persist-dir: room for the job and a step under it) */
    if (!conf_path_plain(s->persist_dir, NODE_PERSIST_ROOT_MAX))
      return -ENAMETOOLONG;
    snprintf(c->persist_dir, sizeof(c->persist_dir), "%s", s->persist_dir);
    c->persist_every = s->has_persist_every ? s->persist_every : 100;
    c->persist_keep = s->has_persist_keep ? s->persist_keep : 2;
    c->persist_rate = s->has_persist_rate ? s->persist_rate
                                          : NODE_PERSIST_RATE_DEFAULT;
  }
  /* An earlier run's files, read only when this epoch restores one of
   * them (a cold start, ctl_jobs_probe.c): an archive gone later does not
   * stop the job's next epochs. */
  c->resume_from[0] = '\0';
  if (a->has_restore_disk_resume && a->restore_disk_resume) {
    if (!conf_path_plain(s->resume_from, NODE_PERSIST_ROOT_MAX))
      return -ENAMETOOLONG;
    snprintf(c->resume_from, sizeof(c->resume_from), "%s", s->resume_from);
  }
  return PT_OK;
}

uint64_t node_part_start_first_epoch(const Pt__JobAssign *a)
{
  return a->has_first_epoch && a->first_epoch >= 1 ? a->first_epoch : 1;
}

static void fail_at_start(struct node *n, int rc, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The part could not start: its ranks never ran. */
static void fail_at_start(struct node *n, int rc, const char *fmt, ...)
{
  struct node_part *p = node_part_of(n);
  va_list ap;

  char why[sizeof(p->fail_msg)];

  va_start(ap, fmt);
  vsnprintf(why, sizeof(why), fmt, ap);
  va_end(ap);
  log_error("job '%s' epoch %" PRIu64 ": part failed: %s", p->job, p->epoch,
            why);
  if (p->fail_permanent)
    return; /* a permanent failure recorded before the node's restart */
  snprintf(p->fail_msg, sizeof(p->fail_msg), "%s", why);
  p->fail_status = rc;
  p->fail_disk = false; /* not the files of a step: the part never ran */
}

void node_part_start_run(struct node *n, uint64_t id, bool adopt)
{
  struct node_part *p = node_part_of(n);
  char err[300];
  int rc;

  Pt__JobAssign *a = pt__job_assign__unpack(NULL, p->len, p->buf);
  if (a == NULL) {
    log_error("the recorded assignment cannot be read");
    return;
  }
  /* The part recorded is this job's (an earlier epoch of it ran here)
   * only from its first epoch on: below it, it was an older job of the
   * same name, whose objects are not this one's. */
  bool continuing = p->has && strcmp(p->job, a->spec->name) == 0 &&
                    p->epoch >= node_part_start_first_epoch(a);
  rc = node_plan_assign_check(a, n->cfg.capacity, err, sizeof(err));
  if (rc == PT_OK)
    rc = node_plan_group(a, n->cfg.node_id, &n->cfg.group, err, sizeof(err));
  if (rc != PT_OK) {
    node_part_report_refusal(n, id, a->spec != NULL && a->spec->name != NULL
                              ? a->spec->name : "", a->epoch, rc, err);
    pt__job_assign__free_unpacked(a, NULL);
    return;
  }
  p->has = true;
  snprintf(p->job, sizeof(p->job), "%s", a->spec->name);
  p->epoch = a->epoch;
  p->end = PART_RUNNING;
  p->reported = NULL;
  if (!adopt || !p->fail_permanent) {
    /* (Taken up with a permanent failure recorded: it stands.) */
    p->fail_status = 0;
    p->fail_msg[0] = '\0';
    p->fail_permanent = false;
  }
  p->fail_disk = false;
  p->n_end_held = 0;
  reset_job(n);
  rc = configure(n, a);
  if (rc == PT_OK) {
    n->ranks = calloc(n->cfg.ranks, sizeof(*n->ranks));
    rc = n->ranks == NULL ? -ENOMEM : PT_OK;
  }
  if (rc != PT_OK) {
    n->cfg.ranks = 0;
    fail_at_start(n, rc, "cannot set the part up: %s", pt_strerror(rc));
    goto refused;
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    r->node = n;
    r->rank = i;
    snprintf(r->sock_path, sizeof(r->sock_path), "%s/smp.%" PRIu32 ".sock",
             n->cfg.state_dir, i);
  }
  if (n->cfg.group.k != 0)
    log_info("job '%s': node group %" PRIu32 " (code %" PRIu32 "+%" PRIu32
             "), this node member %" PRIu32 ": local rank r is that member "
             "of coding group %" PRIu32 " x %" PRIu32 " + r", p->job,
             n->cfg.group.group, n->cfg.group.k, n->cfg.group.m,
             n->cfg.group.member, n->cfg.group.group, n->cfg.ranks);
  log_info("job '%s' epoch %" PRIu64 ": %s part %" PRIu32 " of %" PRIu32
           " ranks (global %" PRIu32 "..%" PRIu32 " of %" PRIu32 "), master "
           "%s:%" PRIu32 ", %s, trainer '%s'",
           p->job, p->epoch, adopt ? "taking up" : "starting", a->node_index,
           n->cfg.ranks, a->first_rank, a->first_rank + n->cfg.ranks - 1,
           a->world_size, a->master_addr, a->master_port,
           a->has_restore_step ? "restoring" : "fresh", n->cfg.cmd[0]);
  /* Taken up after a restart, the part runs already: the checks only
   * raise the open file limit it needs. */
  rc = node_check_preflight(&n->cfg, err, sizeof(err));
  if (rc != PT_OK && adopt) {
    log_warn("job '%s': the checks before start failed (%s); the part "
             "runs already", p->job, pt_strerror(rc));
  } else if (rc != PT_OK) {
    /* The budget or the open file limit: the same on every epoch, no
     * restart cures it. The node's numbers go to the controller. */
    fail_at_start(n, rc, "node '%.40s': the checks before start failed: "
                  "%.230s", n->cfg.node_id,
                  err[0] != '\0' ? err : pt_strerror(rc));
    p->fail_permanent = true;
    goto refused;
  }
  /* A restore of a job this node's part.state no longer names (it ran
   * another job's part since, as a revived job's node may have): the
   * instance of the objects it kept of the job goes on, not a new one
   * that would discard them. */
  if (!continuing && !adopt && a->has_restore_step && a->epoch > 1 &&
      node_ident_kept(n)) {
    log_notice("job '%s' epoch %" PRIu64 ": restoring over the kept objects "
               "of instance %s", p->job, p->epoch, n->instance_hex);
    memcpy(p->instance, n->instance, sizeof(p->instance));
    continuing = true;
  }
  if (continuing)
    memcpy(n->instance, p->instance, sizeof(n->instance));
  rc = node_ident_part(n, continuing);
  if (rc != PT_OK) {
    fail_at_start(n, rc, "the job's snapshot objects cannot be used: %s",
                  pt_strerror(rc));
    goto refused;
  }
  memcpy(p->instance, n->instance, sizeof(p->instance));
  if (adopt && !n->adopting) {
    /* Its trainers are gone: starting them again here, in this epoch,
     * would put ranks restored from an older step beside the other nodes'
     * running ones. The controller starts the next epoch. */
    fail_at_start(n, -ESRCH, "no process of the part survived the node's "
                  "restart");
    goto refused;
  }
  /* Recorded before anything is spawned. */
  rc = node_part_record_write(p);
  if (rc != PT_OK) {
    fail_at_start(n, rc, "cannot record the assignment: %s",
                  pt_strerror(rc));
    goto refused;
  }
  /* The persistent tier of this part: the job's directory checked (and
   * made) before any SMP is told to write there. */
  node_persist_close(n);
  char perr[1200] = "";
  rc = node_persist_open(n, perr, sizeof(perr));
  if (rc != PT_OK) {
    fail_at_start(n, rc, "node '%.40s': %.400s", n->cfg.node_id, perr);
    /* A directory that is not fit (a symlink, another's, open to all, not
     * one) is so on every epoch; one not there yet (a file system still
     * mounting) may be there at the next. */
    p->fail_permanent = !adopt && (rc == -EPERM || rc == -ENOTDIR ||
                                   rc == -ELOOP || rc == -ENAMETOOLONG);
    goto refused;
  }
  if (a->has_restore_step && a->has_restore_from_disk &&
      a->restore_from_disk) {
    bool resume = a->has_restore_disk_resume && a->restore_disk_resume;
    if ((node_persist_job_dir(n) == NULL && !resume) ||
        !a->has_restore_disk_mark) {
      fail_at_start(n, -ENOENT, "node '%.40s': the assignment restores step %"
                    PRIu64 " from disk, but the job has no persist dir here",
                    n->cfg.node_id, a->restore_step);
      goto refused;
    }
    n->restore_disk_assigned = true;
    n->restore_disk_mark = a->restore_disk_mark;
    node_persist_cluster_restore(n, a->restore_step, a->restore_disk_mark,
                                 resume);
  }
  rc = n->decider->open(n);
  if (rc != PT_OK) {
    fail_at_start(n, rc, "cannot set up the decider: %s", pt_strerror(rc));
    goto refused;
  }
  if (!n->adopting) {
    n->has_committed = a->has_restore_step;
    n->committed = a->restore_step;
    /* PT_RESTART: the job's restarts are its epochs after the first. */
    n->restarts = (uint32_t)(a->epoch - node_part_start_first_epoch(a));
  }
  node_decide_remote_assigned(n, a->has_restore_step, a->restore_step);
  p->active = true;
  node_ranks_start(n);
  /* committed_step is not used here: a new part restores restore_step;
   * one taken up after the node's restart learns a commit it missed from
   * the controller's JOB_ASSIGN of the same epoch (on_assign). */
  node_part_report_send(n, id, "starting");
  pt__job_assign__free_unpacked(a, NULL);
  node_ctl_notify(n, false);
  node_job_drive(n);
  return;

refused:
  /* Nothing runs: the part is failed, and recorded so. */
  for (uint32_t i = 0; n->ranks != NULL && i < n->cfg.ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    if (r->smp != NULL)
      node_proc_child_abandon(r->smp);
    if (r->trainer != NULL)
      node_proc_child_abandon(r->trainer);
  }
  if (n->decider_data != NULL)
    n->decider->close(n);
  free(p->retired);
  p->retired = n->ranks;
  n->ranks = NULL;
  n->cfg.ranks = 0;
  p->end = PART_FAILED;
  p->active = false;
  n->phase = NODE_PH_EXIT;
  node_part_record_write(p);
  node_part_report_send(n, id, "failed");
  pt__job_assign__free_unpacked(a, NULL);
}
