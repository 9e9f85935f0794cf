/*
 * bench_train.c — what a snapshot at every step costs a real training loop:
 * the reference trainer (pt-train --timing --state-mb M) runs under
 * `ptd node --ranks 1` with libpt snapshotting every step, and on its own
 * with --no-pt, and the ratio of their steady-state step times
 * ("timing step_ms_avg=X", pt-train's own figure, warm-up steps excluded) is
 * the overhead. Runs alternate (without, with, with, without, ...) so that a
 * change in the machine's background load falls on both alike; each mode's
 * figure is the median of its runs. Both runs must end with the same digest:
 * snapshots must not change what is trained.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>

#include "pt.h"
#include "tests/bench/bench.h"

struct train_run {
  double step_ms, fence_ms, snap_ms;
  char digest[32];
};

/* Reads pt-train's last timing figure and its digest from the log. */
static int log_scan(const char *path, struct train_run *tr, char *errbuf, size_t errlen)
{
  FILE *f = fopen(path, "r"); /* the node's and the trainer's output */
  char line[1024];
  bool have_timing = false;

  if (f == NULL) {
    snprintf(errbuf, errlen, "cannot read '%s': %s", path, strerror(errno));
    return -errno;
  }
  tr->digest[0] = '\0';
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *p = strstr(line, "timing step_ms_avg=");
    if (p != NULL) {
      char *end;
      double v = strtod(p + strlen("timing step_ms_avg="), &end);
      if (end != p + strlen("timing step_ms_avg=") && v > 0) {
        tr->step_ms = v;
        have_timing = true;
      }
      const char *q = strstr(p, "fence_ms_avg=");
      tr->fence_ms = q ? strtod(q + strlen("fence_ms_avg="), NULL) : 0;
      q = strstr(p, "snapshot_call_ms_avg=");
      tr->snap_ms = q ? strtod(q + strlen("snapshot_call_ms_avg="), NULL) : 0;
    }
    const char *d = strstr(line, "digest ");
    char hex[32];
    if (d != NULL && (d == line || d[-1] == ' ' || d[-1] == ']') &&
        sscanf(d + 7, "%31[0-9a-f]", hex) == 1 && strlen(hex) == 16)
      snprintf(tr->digest, sizeof(tr->digest), "%s", hex);
  }
  fclose(f);
  if (have_timing && tr->digest[0] == '\0') {
    snprintf(errbuf, errlen, "no 'digest' line in '%s'", path);
    return PT_EPROTO;
  }
  if (!have_timing) {
    snprintf(errbuf, errlen, "no 'timing step_ms_avg=' line with a positive value in '%s'",
             path);
    return PT_EPROTO;
  }
  return 0;
}

static int one_run(const struct bench_opts *o, int idx, bool with_pt,
                   const char *persist_dir, int state_mb, int steps,
                   int timeout_ms, struct train_run *tr, char *errbuf,
                   size_t errlen)
{
  char sd[512], log[512], job[64], mb[16], st[16];
  pid_t pid;
  int status, rc;

  snprintf(sd, sizeof(sd), "%s/node%d", o->tmp_dir, idx);
  snprintf(log, sizeof(log), "%s/train%d-%s.log", o->tmp_dir, idx, with_pt ? "pt" : "nopt");
  snprintf(job, sizeof(job), "%st%d", o->job, idx);
  snprintf(mb, sizeof(mb), "%d", state_mb);
  snprintf(st, sizeof(st), "%d", steps);
  if (mkdir(sd, 0700) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot create '%s': %s", sd, strerror(errno));
    return rc;
  }
  char *argv[] = {
    (char *)o->ptd, "node", "--ranks", "1", "--job", job, "--state-dir", sd,
    "--shm-prefix", (char *)o->shm_prefix, "--", (char *)o->pt_train, "--timing",
    "--state-mb", mb, "--steps", st, "--log-every", "1000000", NULL,
  };
  /* With a flush always running beside (bench_persist.c): three slots, as
   * the README advises with persistence, every commit marked. */
  char *argv_persist[] = {
    (char *)o->ptd, "node", "--ranks", "1", "--job", job, "--state-dir", sd,
    "--shm-prefix", (char *)o->shm_prefix, "--slots", "3", "--persist-dir",
    (char *)persist_dir, "--persist-every", "1", "--", (char *)o->pt_train,
    "--timing", "--state-mb", mb, "--steps", st, "--log-every", "1000000",
    NULL,
  };
  /* Without pt the trainer runs on its own, with the environment ptd node
   * would give its one rank: ptd node restarts a trainer that exits without
   * telling its SMP it finished, and one that never uses libpt cannot. */
  char *argv_nopt[] = {
    "/usr/bin/env", "PT_RANK=0", "PT_WORLD_SIZE=1", "RANK=0", "WORLD_SIZE=1",
    "LOCAL_RANK=0", "LOCAL_WORLD_SIZE=1", "MASTER_ADDR=127.0.0.1",
    (char *)o->pt_train, "--timing", "--state-mb", mb, "--steps", st,
    "--log-every", "1000000", "--no-pt", NULL,
  };
  rc = bench_child_spawn(&pid, persist_dir != NULL ? argv_persist
                               : with_pt           ? argv
                                                   : argv_nopt,
                         log, errbuf, errlen);
  if (rc < 0)
    return rc;
  rc = bench_child_wait(pid, timeout_ms, &status);
  if (rc == -ETIMEDOUT) {
    bench_child_stop(pid, 5000);
    snprintf(errbuf, errlen, "pt-train (%s) did not finish within %d s",
             with_pt ? "with snapshots" : "--no-pt", timeout_ms / 1000);
    bench_log_tail(log, 20);
    return rc;
  }
  if (rc < 0) {
    snprintf(errbuf, errlen, "cannot wait for ptd node: %s", strerror(-rc));
    return rc;
  }
  if (!WIFEXITED(status) || WEXITSTATUS(status) != 0) {
    char how[64];
    snprintf(errbuf, errlen, "pt-train (%s) %s",
             with_pt ? "with snapshots" : "--no-pt", bench_wait_text(how, sizeof(how), status));
    bench_log_tail(log, 20);
    return PT_ESTATE;
  }
  rc = log_scan(log, tr, errbuf, errlen);
  if (rc < 0)
    bench_log_tail(log, 20);
  if (o->verbose)
    fprintf(stderr, "ptbench: pt-train %s: step %.3f ms, digest %s\n",
            with_pt ? "with snapshots" : "without pt", tr->step_ms, tr->digest);
  return rc;
}

int bench_train_run(const struct bench_opts *o, struct bench_train_result *r,
                    char *errbuf, size_t errlen)
{
  int pairs = o->quick ? 1 : 2;
  double pt_ms[2], nopt_ms[2], fence_ms[2], snap_ms[2];
  char digest[32] = "";
  int idx = 0;

  memset(r, 0, sizeof(*r));
  r->state_mb = (int)((o->bytes + (1u << 20) - 1) >> 20);
  if (r->state_mb < 1)
    r->state_mb = 1;
  /* Enough steps for a steady state past pt-train's warm-up steps, few
   * enough that a large state stays within the run's time. */
  r->steps = o->quick ? 24 : (r->state_mb >= 512 ? 15 : 40);
  int timeout_ms = o->quick ? 60000 : 600000;

  for (int p = 0; p < pairs; p++) {
    for (int k = 0; k < 2; k++) {
      bool with_pt = (p + k) % 2 == 1; /* without, with, with, without */
      struct train_run tr;
      int rc = one_run(o, idx++, with_pt, NULL, r->state_mb, r->steps,
                       timeout_ms, &tr, errbuf, errlen);
      if (rc < 0)
        return rc;
      if (digest[0] == '\0') {
        snprintf(digest, sizeof(digest), "%s", tr.digest);
      } else if (strcmp(digest, tr.digest) != 0) {
        snprintf(errbuf, errlen, "pt-train ended with digest %s in one run and %s in "
                 "another: snapshots changed the training", digest, tr.digest);
        return PT_ECHECKSUM;
      }
      (with_pt ? pt_ms : nopt_ms)[p] = tr.step_ms;
      if (with_pt) {
        fence_ms[p] = tr.fence_ms;
        snap_ms[p] = tr.snap_ms;
      }
    }
  }
  r->step_ms_pt = bench_median(pt_ms, (size_t)pairs);
  r->step_ms_nopt = bench_median(nopt_ms, (size_t)pairs);
  r->step_overhead_ratio = r->step_ms_pt / r->step_ms_nopt;
  r->fence_ms = bench_median(fence_ms, (size_t)pairs);
  r->snapshot_call_ms = bench_median(snap_ms, (size_t)pairs);
  return 0;
}

int bench_train_one_ms(const struct bench_opts *o, int idx,
                       const char *persist_dir, double *step_ms, char *errbuf,
                       size_t errlen)
{
  struct train_run tr;
  int state_mb = (int)((o->bytes + (1u << 20) - 1) >> 20);
  if (state_mb < 1)
    state_mb = 1;
  int steps = o->quick ? 24 : (state_mb >= 512 ? 15 : 40);
  int rc = one_run(o, idx, true, persist_dir, state_mb, steps,
                   o->quick ? 60000 : 600000, &tr, errbuf, errlen);
  if (rc == 0)
    *step_ms = tr.step_ms;
  return rc;
}
