/*
 * node_check.c — what `ptd node` checks before it spawns anything, so that
 * a job that cannot run is refused at once with the numbers, instead of
 * failing later (or silently):
 *
 *   - file descriptors: the node needs a few per rank (its SMP connection,
 *     pidfds of adopted children, spawn pipes) plus a fixed set (the loop,
 *     signals, the control socket and its connections, the lock, state
 *     files). A soft RLIMIT_NOFILE below that is raised (to the need
 *     rounded up to 1024) when the hard limit allows it, else the node
 *     refuses naming both numbers.
 *   - --memory-budget: each rank gets budget/ranks bytes; below the
 *     smallest snapshot object (one region of one byte in --slots slots) no
 *     snapshot could ever be taken, so it is refused; a budget larger than
 *     /dev/shm can hold (its free space plus this job's existing objects)
 *     is refused too. What the trainers' regions need is known at their
 *     HELLO: the SMP refuses it there (PT_EBUDGET, which a trainer treats
 *     as permanent: exit 78), and the node checks an existing object's
 *     size against the budget before it restores from it (node_job.c).
 *   - --state-bytes (what each trainer will register, when the user says
 *     it): the objects for that much state are checked against the budget
 *     and against /dev/shm before anything is spawned, so such a job is
 *     refused at once rather than at its trainers' HELLO.
 *
 * The decisions are pure functions in node_plan.c (unit-tested); this file
 * gathers the numbers from the system.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/statvfs.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"

static int check_fds(const struct node_config *cfg, char *err, size_t errlen)
{
  struct rlimit rl;
  uint64_t raise_to = 0;

  if (getrlimit(RLIMIT_NOFILE, &rl) != 0)
    return PT_OK; /* nothing to judge by */
  int rc = node_plan_fds_check(cfg->ranks, rl.rlim_cur, rl.rlim_max,
                               &raise_to, err, errlen);
  if (rc != PT_OK) {
    log_error("%s", err);
    return rc;
  }
  if (raise_to != 0) {
    rl.rlim_cur = raise_to;
    if (setrlimit(RLIMIT_NOFILE, &rl) != 0) {
      rc = -errno;
      snprintf(err, errlen, "cannot raise the open file limit to %" PRIu64
               ": %s (the node needs %" PRIu64 " for %" PRIu32 " ranks)",
               raise_to, pt_strerror(rc), node_plan_fds_needed(cfg->ranks),
               cfg->ranks);
      log_error("%s", err);
      return rc;
    }
    log_info("raised the open file limit to %" PRIu64 " (hard limit %" PRIu64
             "): %" PRIu32 " ranks need %" PRIu64,
             raise_to, (uint64_t)rl.rlim_max, cfg->ranks,
             node_plan_fds_needed(cfg->ranks));
  }
  return PT_OK;
}

/* Free bytes of /dev/shm plus what this job's objects hold there already
 * (they are reused or replaced). */
static uint64_t shm_available(const struct node_config *cfg)
{
  struct statvfs vfs;
  uint64_t avail;

  if (statvfs("/dev/shm", &vfs) != 0)
    return UINT64_MAX; /* unknown: the SMP finds out */
  avail = (uint64_t)vfs.f_bavail * (uint64_t)vfs.f_frsize;
  for (uint32_t i = 0; i < cfg->ranks; i++) {
    char name[256], path[300];
    struct stat st;
    if (snap_store_name(name, sizeof(name), cfg->shm_prefix, cfg->job,
                        cfg->first_rank + i) != PT_OK)
      continue;
    snprintf(path, sizeof(path), "/dev/shm%s", name);
    if (stat(path, &st) == 0 && S_ISREG(st.st_mode))
      avail += (uint64_t)st.st_blocks * 512u;
  }
  return avail;
}

static int check_budget(const struct node_config *cfg, char *err,
                        size_t errlen)
{
  struct snap_region_desc one = {.name = "x", .bytes = 1};
  /* Under a code the SMP's objects hold the parity areas too. */
  struct snap_params p = {.job = cfg->job, .rank = 0, .world = node_plan_world(cfg),
                          .nslots = cfg->slots, .regions = &one,
                          .nregions = 1, .ec_k = cfg->group.k,
                          .ec_m = cfg->group.m};

  if (cfg->memory_budget == 0 && cfg->state_bytes == 0)
    return PT_OK;
  uint64_t avail = shm_available(cfg);
  int rc = node_plan_budget_check(cfg->memory_budget, cfg->ranks,
                                  snap_store_bytes_needed(&p), avail, err,
                                  errlen);
  if (rc == PT_OK && cfg->state_bytes != 0) {
    /* As one region: more regions add their table entries and alignment,
     * which the SMP counts at HELLO. */
    one.bytes = cfg->state_bytes;
    rc = node_plan_state_check(cfg->state_bytes, snap_store_bytes_needed(&p),
                               cfg->memory_budget, cfg->ranks, avail, err,
                               errlen);
  }
  if (rc != PT_OK)
    log_error("%s", err);
  return rc;
}

int node_check_preflight(const struct node_config *cfg, char *err,
                         size_t errlen)
{
  char buf[320];

  if (err == NULL || errlen == 0) {
    err = buf;
    errlen = sizeof(buf);
  }
  err[0] = '\0';
  int rc = check_fds(cfg, err, errlen);

  if (rc != PT_OK)
    return rc;
  return check_budget(cfg, err, errlen);
}
