/*
 * bench_recover.c — what a trainer's death costs: the reference trainer
 * (pt-train --state-mb M, batch 1) runs under `ptd node --ranks 1` with a
 * short restart backoff; once it has committed a few steps it is killed with
 * SIGKILL, and the figure is the time from the kill to the first step the
 * restarted trainer completes (a new process: start, map, restore, verify,
 * one training step, whose update is done when pt-train calls pt_snapshot
 * and prints "step N loss"): training goes on from there as if nothing had
 * happened. The commit of that step comes one snapshot copy later (the copy,
 * seal and commit, which in steady state overlap the next step's compute):
 * that time is reported beside it. The node's own restart delay
 * ("restarting job ... in D ms" in its log, else the --backoff-ms given) is
 * subtracted from both and reported apart, and the steady step time before
 * the kill is reported beside them, as one step is part of every recovery.
 * The figure is also split where the new trainer appears in the node's
 * status: the node's part (death notice, restore-point choice, spawn) and
 * the trainer's (its own start-up and initialisation, pt_restore, one step).
 *
 * The node is watched through its control socket (the STATUS request ptctl
 * sends) and the trainer through the lines it prints into the node's log
 * (--log-every 1, line-buffered), both polled every POLL_MS: the figures
 * carry that much resolution.
 */
#include <errno.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"
#include "tests/bench/bench.h"

#define POLL_MS 2
#define BACKOFF_MS 10
#define STATUS_TIMEOUT_MS 2000

/* What one STATUS answer says about the job and its rank 0. */
struct node_view {
  bool has_committed;
  uint64_t committed;
  uint32_t restarts;
  int trainer_pid;
};

static int status_get(const char *sock, struct node_view *v)
{
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ProtobufCMessage *m = NULL;
  int fd, rc;

  rc = rpc_sock_connect_unix(sock, &fd);
  if (rc != 0)
    return rc;
  rc = rpc_sock_call(fd, RPC_STATUS_QUERY, &q.base, RPC_STATUS_REPLY,
                     STATUS_TIMEOUT_MS, &m);
  close(fd);
  if (rc != 0)
    return rc;
  const Pt__StatusReply *r = (const Pt__StatusReply *)m;
  rc = r->status;
  if (rc == 0) {
    v->has_committed = r->has_committed_step;
    v->committed = r->committed_step;
    v->restarts = r->restarts;
    v->trainer_pid = r->n_ranks > 0 ? r->ranks[0]->trainer_pid : 0;
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* The delay of the node's first restart, from its log line "restarting job
 * (restart 1 of N) in D ms"; -1 when there is none. */
static double backoff_from_log(const char *path)
{
  FILE *f = fopen(path, "r");
  char line[1024];
  double d = -1;

  if (f == NULL)
    return -1;
  while (fgets(line, sizeof(line), f) != NULL) {
    const char *p = strstr(line, "restarting job");
    const char *in = p ? strstr(p, ") in ") : NULL;
    unsigned ms;
    if (in != NULL && sscanf(in, ") in %u ms", &ms) == 1) {
      d = ms;
      break;
    }
  }
  fclose(f);
  return d;
}

/* The lines appended to the node's log since off (the restarted trainer's
 * "step N loss"): reads what is new, one line at a time; a line not yet
 * complete waits for the next call. */
struct log_follow {
  const char *path;
  long off;
  char line[512];
  size_t len;
};

/* Whether a line "step N loss ..." with N == step arrived since the last
 * call. */
static bool log_follow_step(struct log_follow *lf, uint64_t step)
{
  FILE *f = fopen(lf->path, "r");
  bool found = false;
  int c;

  if (f == NULL)
    return false;
  if (fseek(f, lf->off, SEEK_SET) != 0) {
    fclose(f);
    return false;
  }
  while (!found && (c = fgetc(f)) != EOF) {
    lf->off++;
    if (c != '\n') {
      if (lf->len < sizeof(lf->line) - 1)
        lf->line[lf->len++] = (char)c;
      continue;
    }
    lf->line[lf->len] = '\0';
    lf->len = 0;
    unsigned long long n;
    if (sscanf(lf->line, "step %llu loss", &n) == 1 && n == step)
      found = true;
  }
  fclose(f);
  return found;
}

static long file_size(const char *path)
{
  struct stat st;
  return stat(path, &st) == 0 ? (long)st.st_size : 0;
}

/* Polls until pred holds or the node exits or deadline_ms passes. */
struct wait_ctx {
  const char *sock, *log;
  pid_t node;
  uint64_t deadline_ms;
};

static int poll_once(struct wait_ctx *w, struct node_view *v, const char *what,
                     char *errbuf, size_t errlen)
{
  int st;

  if (!bench_child_is_alive(w->node, &st)) {
    char how[64];
    snprintf(errbuf, errlen, "ptd node %s while waiting for %s",
             bench_wait_text(how, sizeof(how), st), what);
    bench_log_tail(w->log, 20);
    return -ECHILD;
  }
  if (bench_now_ms() >= w->deadline_ms) {
    snprintf(errbuf, errlen, "no %s within the deadline", what);
    bench_log_tail(w->log, 20);
    return -ETIMEDOUT;
  }
  int rc = status_get(w->sock, v);
  if (rc != 0)
    memset(v, 0, sizeof(*v)); /* not listening yet: nothing seen */
  return 0;
}

int bench_recover_run(const struct bench_opts *o, struct bench_recover_result *r,
                      char *errbuf, size_t errlen)
{
  char sd[512], log[512], sock[600], job[64], mb[16], bo[16], shm[256];
  struct node_view v;
  pid_t node;
  int rc;

  memset(r, 0, sizeof(*r));
  r->state_mb = (int)((o->bytes + (1u << 20) - 1) >> 20);
  if (r->state_mb < 1)
    r->state_mb = 1;
  snprintf(sd, sizeof(sd), "%s/recover", o->tmp_dir);
  snprintf(log, sizeof(log), "%s/recover.log", o->tmp_dir);
  snprintf(sock, sizeof(sock), "%s/ptd.sock", sd);
  snprintf(job, sizeof(job), "%sr", o->job);
  snprintf(mb, sizeof(mb), "%d", r->state_mb);
  snprintf(bo, sizeof(bo), "%d", BACKOFF_MS);
  if (snap_store_name(shm, sizeof(shm), o->shm_prefix, job, 0) == 0)
    bench_cleanup_shm(shm);
  if (mkdir(sd, 0700) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot create '%s': %s", sd, strerror(errno));
    return rc;
  }
  char *argv[] = {
    (char *)o->ptd, "node", "--ranks", "1", "--job", job, "--state-dir", sd,
    "--shm-prefix", (char *)o->shm_prefix, "--backoff-ms", bo,
    "--max-restarts", "3", "--", (char *)o->pt_train, "--state-mb", mb,
    "--batch", "1", "--steps", "100000000", "--log-every", "1", NULL,
  };
  rc = bench_child_spawn(&node, argv, log, errbuf, errlen);
  if (rc < 0)
    return rc;
  struct wait_ctx w = { sock, log, node, bench_now_ms() + (o->quick ? 60000 : 180000) };

  /* Steady state: a trainer that committed a few steps; the last interval
   * between two commits is the step time. */
  uint64_t seen = 0, t_seen = 0;
  double step_ms = 0;
  int changes = 0;
  for (;;) {
    if ((rc = poll_once(&w, &v, "the first committed steps", errbuf, errlen)) != 0)
      goto out_stop;
    if (v.has_committed && v.committed != seen) {
      uint64_t now = bench_now_ms();
      if (changes > 0)
        step_ms = (double)(now - t_seen) / (double)(v.committed - seen);
      seen = v.committed;
      t_seen = now;
      changes++;
    }
    if (changes >= 3 && v.trainer_pid > 0)
      break;
    bench_sleep_ms(POLL_MS);
  }
  r->step_ms = step_ms;

  pid_t victim = v.trainer_pid;
  uint32_t restarts0 = v.restarts;
  /* What the victim printed stays behind; the restarted trainer's lines
   * come after this. (A line the victim was writing at the kill ends the
   * first line read: too short to match.) */
  struct log_follow lf = {.path = log, .off = file_size(log)};
  double t_kill = bench_now();
  if (kill(victim, SIGKILL) != 0) {
    rc = -errno;
    snprintf(errbuf, errlen, "cannot kill pt-train (pid %d): %s", (int)victim,
             strerror(errno));
    goto out_stop;
  }
  /* The restart: a new trainer; what is committed then is its restore
   * point R; its first completed step is R+1 (the line it prints), and
   * the next commit is that step's. */
  bool restarted = false, stepped = false;
  uint64_t restore_step = 0;
  double t_start = 0, t_step = 0;
  for (;;) {
    if ((rc = poll_once(&w, &v, "a step committed after the restart", errbuf,
                        errlen)) != 0)
      goto out_stop;
    if (!restarted && v.restarts > restarts0 && v.trainer_pid > 0 &&
        v.trainer_pid != victim) {
      restarted = true;
      t_start = bench_now();
      restore_step = v.has_committed ? v.committed : 0;
    }
    if (restarted && !stepped && log_follow_step(&lf, restore_step + 1)) {
      stepped = true;
      t_step = bench_now();
    }
    if (restarted && v.has_committed && v.committed > restore_step) {
      if (!stepped) { /* committed before its line was read */
        stepped = log_follow_step(&lf, restore_step + 1);
        t_step = bench_now();
      }
      break;
    }
    bench_sleep_ms(POLL_MS);
  }
  double t_commit = bench_now();
  if (!stepped) {
    rc = -EPROTO;
    snprintf(errbuf, errlen, "the restarted pt-train committed step %llu but "
             "never printed 'step %llu loss'", (unsigned long long)v.committed,
             (unsigned long long)restore_step + 1);
    goto out_stop;
  }
  r->total_ms = (t_step - t_kill) * 1e3;
  r->restored_step = restore_step;
  r->backoff_ms = backoff_from_log(log);
  if (r->backoff_ms < 0)
    r->backoff_ms = BACKOFF_MS;
  r->recovery_ms = r->total_ms - r->backoff_ms;
  r->commit_ms = (t_commit - t_kill) * 1e3 - r->backoff_ms;
  r->node_ms = (t_start - t_kill) * 1e3 - r->backoff_ms;
  r->trainer_ms = r->total_ms - (t_start - t_kill) * 1e3;
  if (o->verbose)
    fprintf(stderr, "ptbench: recovery: %.1f ms from kill -9 to step %llu done "
            "(restored %llu), %.1f ms to its commit: %.0f ms backoff, %.1f ms "
            "node, %.1f ms trainer; step %.1f ms\n", r->total_ms,
            (unsigned long long)restore_step + 1, (unsigned long long)restore_step,
            r->commit_ms + r->backoff_ms, r->backoff_ms, r->node_ms,
            r->trainer_ms, r->step_ms);
  rc = 0;

out_stop:
  bench_child_stop(node, 10000);
  snap_store_unlink(shm); /* a stopped job keeps its snapshots */
  return rc;
}
