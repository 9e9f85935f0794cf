/*
 * bench_protect.c — `ptbench --cluster`'s protection figures: erasure-coded
 * protection across 3 real nodes on loopback, beside raw TCP moving the
 * same bytes in the same pattern.
 *
 * protect_gbps: a controller, three `ptd node --controller` processes and
 * a job of 3 nodes x 1 rank of pt-train with code 2+1 (--state-mb P, no
 * sleep: a snapshot every step, as fast as it trains), slots 3. A coded
 * job commits a step only once it is PROTECTED on every node, so over a
 * window the data bytes made protected per node are the commits in it
 * times P MiB; protect_gbps is that over the window's seconds (10^9 B/s).
 * Training and protection share the machine's cores, as they do in
 * production; the window also gives the trainers' own rate (the newest
 * step every rank sealed), so the reader sees whether the trainer or the
 * protection set the pace (snapshots skipped while protection runs).
 *
 * protect_tcp_gbps: three processes, each with a TCP connection to each
 * other on loopback, each writing P/2 MiB to each of the other two and
 * reading P/2 MiB from each (a 2+1 member sends each of its 2 chunks to the
 * one holder of that chunk's stripe, and holds one parity row that two
 * others' chunks fold into), blocking write() and read() of 1 MiB, one
 * thread per direction; per node: P MiB over the slowest process's wall
 * time. The faster of two runs.
 *
 * cluster_step_overhead_ratio: the job's wall time per trained step over
 * the window, divided by the steady-state step time (pt-train --timing,
 * the slowest rank) of the same 3 ranks run without pt (--no-pt) on the
 * same machine just before.
 */
#include <errno.h>
#include <inttypes.h>
#include <math.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/wait.h>
#include <unistd.h>

#include "pt.h"
#include "rpc/rpc.h"
#include "tests/bench/bench.h"

#define PNODES 3
#define STOP_GRACE_MS 5000

/* ---- the raw TCP pattern ---- */

struct dir_arg {
  int fd;
  size_t bytes;
  bool send;
  uint8_t *buf;
  int rc;
};

static void *dir_run(void *a)
{
  struct dir_arg *d = a;
  size_t done = 0;
  while (done < d->bytes) {
    size_t n = d->bytes - done < (1u << 20) ? d->bytes - done : (1u << 20);
    ssize_t r = d->send ? write(d->fd, d->buf, n) : read(d->fd, d->buf, n);
    if (r <= 0) {
      d->rc = r == 0 ? -EPIPE : -errno;
      return NULL;
    }
    done += (size_t)r;
  }
  return NULL;
}

/* One process of the pattern: fds[j] is its connection to process j (-1
 * for itself); sends and receives bytes on each, both directions at once.
 * Writes its wall seconds to out. */
static void member(const int fds[PNODES], int self, size_t bytes, int out)
{
  struct dir_arg d[2 * PNODES];
  pthread_t t[2 * PNODES];
  int n = 0;
  double t0 = bench_now();
  for (int j = 0; j < PNODES; j++) {
    if (j == self)
      continue;
    for (int s = 0; s < 2; s++) {
      d[n] = (struct dir_arg){.fd = fds[j], .bytes = bytes, .send = s == 0};
      d[n].buf = malloc(1u << 20);
      if (d[n].buf == NULL)
        _exit(3);
      memset(d[n].buf, 0x5a, 1u << 20);
      pthread_create(&t[n], NULL, dir_run, &d[n]);
      n++;
    }
  }
  int bad = 0;
  for (int i = 0; i < n; i++) {
    pthread_join(t[i], NULL);
    bad |= d[i].rc != 0;
  }
  double wall = bench_now() - t0;
  if (write(out, &wall, sizeof(wall)) != (ssize_t)sizeof(wall))
    _exit(3);
  _exit(bad ? 1 : 0);
}

/* One run: PNODES processes over a full mesh of loopback connections. OUT:
 * *wall, the slowest process's seconds. */
static int tcp_pattern_once(size_t bytes, double *wall)
{
  int pair[PNODES][PNODES][2];
  int pipefd[2];
  pid_t pid[PNODES];

  memset(pair, -1, sizeof(pair));
  if (pipe(pipefd) != 0)
    return -errno;
  /* A connected TCP pair per unordered pair of processes. */
  for (int a = 0; a < PNODES; a++)
    for (int b = a + 1; b < PNODES; b++) {
      int ls = socket(AF_INET, SOCK_STREAM, 0), one = 1;
      struct sockaddr_in sa = {.sin_family = AF_INET,
                               .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
      socklen_t sl = sizeof(sa);
      if (ls < 0 || bind(ls, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
          listen(ls, 1) != 0 || getsockname(ls, (struct sockaddr *)&sa, &sl) != 0)
        return -errno;
      int c = socket(AF_INET, SOCK_STREAM, 0);
      if (c < 0 || connect(c, (struct sockaddr *)&sa, sizeof(sa)) != 0)
        return -errno;
      int s = accept(ls, NULL, NULL);
      close(ls);
      if (s < 0)
        return -errno;
      setsockopt(c, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      setsockopt(s, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
      pair[a][b][0] = c; /* a's end */
      pair[a][b][1] = s; /* b's end */
    }
  for (int i = 0; i < PNODES; i++) {
    pid[i] = fork();
    if (pid[i] < 0)
      return -errno;
    if (pid[i] == 0) {
      int fds[PNODES];
      for (int j = 0; j < PNODES; j++)
        fds[j] = j == i ? -1 : i < j ? pair[i][j][0] : pair[j][i][1];
      member(fds, i, bytes, pipefd[1]);
    }
  }
  for (int a = 0; a < PNODES; a++)
    for (int b = a + 1; b < PNODES; b++) {
      close(pair[a][b][0]);
      close(pair[a][b][1]);
    }
  close(pipefd[1]);
  int rc = 0;
  *wall = 0;
  for (int i = 0; i < PNODES; i++) {
    double w;
    if (read(pipefd[0], &w, sizeof(w)) != (ssize_t)sizeof(w))
      rc = -EIO;
    else if (w > *wall)
      *wall = w;
  }
  close(pipefd[0]);
  for (int i = 0; i < PNODES; i++) {
    int st;
    if (waitpid(pid[i], &st, 0) != pid[i] || !WIFEXITED(st) || WEXITSTATUS(st) != 0)
      rc = -EIO;
  }
  return rc;
}

/* ---- pt-train without pt ---- */

/* Holds a free loopback port for rank 0 of pt-train: a socket bound to port
 * 0 with SO_REUSEADDR, not listening, kept open until the ranks are done.
 * While it is bound no other bind and no outgoing connection's ephemeral
 * port can take the port (a port closed at once could be taken before rank
 * 0 binds it), and pt-train, which also sets SO_REUSEADDR, can still bind
 * and listen on it beside a socket that does not listen. Returns the fd
 * (close it after the ranks) or -1; OUT: *port. */
static int port_hold(int *port)
{
  struct sockaddr_in sa = {.sin_family = AF_INET, .sin_addr.s_addr = htonl(INADDR_LOOPBACK)};
  socklen_t sl = sizeof(sa);
  int fd = socket(AF_INET, SOCK_STREAM | SOCK_CLOEXEC, 0), one = 1;

  *port = 0;
  if (fd < 0)
    return -1;
  if (setsockopt(fd, SOL_SOCKET, SO_REUSEADDR, &one, sizeof(one)) != 0 ||
      bind(fd, (struct sockaddr *)&sa, sizeof(sa)) != 0 ||
      getsockname(fd, (struct sockaddr *)&sa, &sl) != 0) {
    int err = errno;
    close(fd);
    errno = err;
    return -1;
  }
  *port = ntohs(sa.sin_port);
  return fd;
}

/* The same 3 ranks of pt-train, --no-pt, on this machine alone: their
 * steady-state step time (the slowest rank's --timing average). */
static int nopt_step_ms(const struct bench_opts *o, int state_mb, int steps, double *ms,
                        char *errbuf, size_t errlen)
{
  char mb[16], st[16], port[16], rank[PNODES][12], log[PNODES][512];
  pid_t pid[PNODES] = {0};
  int rc = 0;

  snprintf(mb, sizeof(mb), "%d", state_mb);
  snprintf(st, sizeof(st), "%d", steps);
  int held_port, held = port_hold(&held_port);
  if (held < 0) {
    int err = -errno;
    snprintf(errbuf, errlen, "no free loopback port for pt-train --no-pt: %s",
             pt_strerror(err));
    return err;
  }
  snprintf(port, sizeof(port), "%d", held_port);
  setenv("WORLD_SIZE", "3", 1);
  setenv("MASTER_ADDR", "127.0.0.1", 1);
  for (int i = 0; i < PNODES && rc == 0; i++) {
    snprintf(rank[i], sizeof(rank[i]), "%d", i);
    snprintf(log[i], sizeof(log[i]), "%s/nopt-%d.log", o->tmp_dir, i);
    char *argv[] = {(char *)o->pt_train, "--no-pt", "--timing", "--state-mb", mb, "--steps",
                    st, "--log-every", "100000000", "--rank", rank[i], "--master-port", port,
                    NULL};
    rc = bench_child_spawn(&pid[i], argv, log[i], errbuf, errlen);
  }
  unsetenv("WORLD_SIZE");
  unsetenv("MASTER_ADDR");
  *ms = NAN;
  for (int i = 0; i < PNODES; i++) {
    int status = 0;
    if (pid[i] <= 0)
      continue;
    if (rc == 0 && bench_child_wait(pid[i], 120000, &status) != 0) {
      snprintf(errbuf, errlen, "pt-train --no-pt rank %d did not end within 120 s", i);
      rc = -ETIMEDOUT;
    }
    bench_child_stop(pid[i], STOP_GRACE_MS);
    FILE *f = rc == 0 ? fopen(log[i], "r") : NULL;
    char line[512];
    double v = NAN;
    while (f != NULL && fgets(line, sizeof(line), f) != NULL)
      if (sscanf(line, "timing step_ms_avg=%lf", &v) == 1)
        break;
    if (f != NULL)
      fclose(f);
    if (rc == 0 && !isfinite(v)) {
      snprintf(errbuf, errlen, "pt-train --no-pt rank %d printed no timing (log %s)", i,
               log[i]);
      rc = -EIO;
    }
    if (rc == 0 && (!isfinite(*ms) || v > *ms))
      *ms = v;
  }
  close(held);
  return rc;
}

/* ---- the rebuild (bench_rebuild.c) ---- */

/* Node `id` of job lost whole, its ptd started again (argv, log) on the
 * same state dir; its SMP's rebuild read from that log. */
static void rebuild_run(const struct bench_opts *o, const struct bench_ctl_proc *cp,
                        const char *job, const char *id, char *const argv[], pid_t *pid,
                        const char *log, struct bench_protect *r)
{
  Pt__Fault f = PT__FAULT__INIT;
  ProtobufCMessage *m = NULL;
  char why[256];

  f.job = (char *)job;
  f.kind = "node";
  f.node = (char *)id;
  int rc = bench_cluster_call(cp, RPC_FAULT, &f.base, RPC_FAULT_REPLY, 10000, &m, why,
                              sizeof(why));
  if (rc == PT_OK) {
    const Pt__FaultReply *fr = (const Pt__FaultReply *)m;
    rc = fr->status;
    if (rc != PT_OK)
      snprintf(why, sizeof(why), "%s", fr->message ? fr->message : pt_strerror(rc));
    protobuf_c_message_free_unpacked(m, NULL);
  }
  if (rc != PT_OK) {
    snprintf(r->rebuild_why, sizeof(r->rebuild_why), "losing node %s: %s", id, why);
    return;
  }
  double t0 = bench_now();
  int st = 0;
  if (bench_child_wait(*pid, 10000, &st) != 0) {
    snprintf(r->rebuild_why, sizeof(r->rebuild_why), "node %s's ptd outlived its loss", id);
    return;
  }
  *pid = 0;
  rc = bench_child_spawn(pid, argv, log, why, sizeof(why));
  if (rc != 0) {
    snprintf(r->rebuild_why, sizeof(r->rebuild_why), "restarting node %s: %s", id, why);
    return;
  }
  uint64_t ms = 0;
  uint64_t deadline = bench_now_ms() + 60000;
  while ((rc = bench_rebuild_logged(log, &r->rebuild_step, &r->rebuild_bytes, &ms,
                                    &r->rebuild_received)) != PT_OK) {
    if (bench_now_ms() >= deadline) {
      snprintf(r->rebuild_why, sizeof(r->rebuild_why), "node %s logged no rebuild within "
               "60 s of its restart (log %.300s)", id, log);
      return;
    }
    bench_sleep_ms(50);
  }
  r->recover_s = bench_now() - t0;
  r->rebuild_s = (double)ms / 1000.0;
  /* The limits, in the same run, for the same bytes. */
  double best = INFINITY;
  for (int i = 0; i < 2; i++) {
    double s = NAN;
    if (bench_rebuild_ingest((size_t)r->rebuild_bytes, &s) == 0 && s < best)
      best = s;
  }
  r->rebuild_ingest_s = isfinite(best) ? best : NAN;
  if (bench_rebuild_disk(o->file_dir, (size_t)r->rebuild_bytes, &r->rebuild_disk_s,
                         r->rebuild_disk_why, sizeof(r->rebuild_disk_why)) != 0)
    r->rebuild_disk_s = NAN;
  r->rebuild_measured = isfinite(r->rebuild_ingest_s) && r->rebuild_bytes > 0;
  if (!r->rebuild_measured)
    snprintf(r->rebuild_why, sizeof(r->rebuild_why), "the loopback ingest limit could not "
             "be measured");
}

/* ---- the job ---- */

/* The job's committed steps and its parts' newest sealed step (the
 * smallest over the parts). */
static int job_poll(const struct bench_ctl_proc *cp, const char *job, uint64_t *commits,
                    uint64_t *sealed)
{
  Pt__JobsQuery q = PT__JOBS_QUERY__INIT;
  ProtobufCMessage *m = NULL;
  char why[256];
  q.job = (char *)job;
  int rc = bench_cluster_call(cp, RPC_JOBS_QUERY, &q.base, RPC_JOBS_REPLY, 5000, &m, why,
                              sizeof(why));
  if (rc != PT_OK)
    return rc;
  const Pt__JobsReply *r = (const Pt__JobsReply *)m;
  rc = r->status < 0 ? r->status : r->n_jobs == 1 ? PT_OK : -ENOENT;
  if (rc == PT_OK) {
    const Pt__JobInfo *j = r->jobs[0];
    *commits = j->commits;
    *sealed = UINT64_MAX;
    for (size_t i = 0; i < j->n_parts; i++) {
      uint64_t s = j->parts[i]->has_last_sealed ? j->parts[i]->last_sealed : 0;
      if (s < *sealed)
        *sealed = s;
    }
    if (j->n_parts == 0)
      *sealed = 0;
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

int bench_protect_run(const struct bench_opts *o, struct bench_protect *r, char *errbuf,
                      size_t errlen)
{
  struct bench_ctl_proc cp;
  pid_t node_pid[PNODES] = {0};
  char node_log[PNODES][512], why[BENCH_ERRLEN], job[64];
  char ctl[64], id[PNODES][32], dir[PNODES][512], pfx[PNODES][64];
  char *nargv[PNODES][20];
  bool started = false;
  int rc;

  memset(r, 0, sizeof(*r));
  r->protect_gbps = r->tcp_gbps = NAN;
  r->state_mb = o->quick ? 16 : 64;
  r->window_s = o->quick ? 6 : 15;
  size_t bytes = (size_t)r->state_mb << 20;

  /* The limit first, on a quiet machine. */
  double best = INFINITY;
  for (int i = 0; i < 2; i++) {
    double w = INFINITY;
    rc = tcp_pattern_once(bytes / 2, &w);
    if (rc != 0) {
      snprintf(errbuf, errlen, "raw TCP pattern: %s", pt_strerror(rc));
      return rc;
    }
    if (w < best)
      best = w;
  }
  r->tcp_gbps = (double)bytes / best / 1e9;
  rc = nopt_step_ms(o, r->state_mb, o->quick ? 40 : 150, &r->nopt_step_ms, errbuf, errlen);
  if (rc != 0)
    return rc;

  rc = bench_cluster_ctl_start(o, "ctl-protect", &cp, errbuf, errlen);
  if (rc < 0)
    return rc;
  snprintf(ctl, sizeof(ctl), "127.0.0.1:%d", cp.port);
  for (int i = 0; i < PNODES; i++) {
    snprintf(id[i], sizeof(id[i]), "prot-%d", i);
    snprintf(dir[i], sizeof(dir[i]), "%s/pnode-%d", o->tmp_dir, i);
    snprintf(pfx[i], sizeof(pfx[i]), "%sp%d-", o->shm_prefix, i);
    snprintf(node_log[i], sizeof(node_log[i]), "%s/pnode-%d.log", o->tmp_dir, i);
    /* --allow-faults: one of them is lost for the rebuild figures */
    char *argv[] = {(char *)o->ptd, "node", "--controller", ctl, "--node-id", id[i], "--key",
                    cp.key, "--state-dir", dir[i], "--advertise", "127.0.0.1", "--capacity",
                    "1", "--shm-prefix", pfx[i], "--log-level", o->verbose ? "7" : "6",
                    "--allow-faults", NULL};
    memcpy(nargv[i], argv, sizeof(argv));
    rc = bench_child_spawn(&node_pid[i], nargv[i], node_log[i], errbuf, errlen);
    if (rc < 0)
      goto out;
  }
  char mb[16];
  snprintf(mb, sizeof(mb), "%d", r->state_mb);
  char *targv[] = {(char *)o->pt_train, "--state-mb", mb, "--steps", "100000000",
                   "--log-every", "100000000", NULL};
  Pt__JobSpec spec = PT__JOB_SPEC__INIT;
  snprintf(job, sizeof(job), "%sprotect", o->shm_prefix);
  spec.name = job;
  spec.n_argv = sizeof(targv) / sizeof(targv[0]) - 1;
  spec.argv = targv;
  spec.nodes = PNODES;
  spec.ranks_per_node = 1;
  spec.has_slots = true;
  spec.slots = 3;
  spec.has_code_k = spec.has_code_m = true;
  spec.code_k = 2;
  spec.code_m = 1;
  /* The nodes register within a few seconds; a start before that is
   * refused for want of spares: try again until the deadline. */
  uint64_t epoch = 0, deadline = bench_now_ms() + 20000;
  for (;;) {
    rc = bench_cluster_job_start(&cp, &spec, &epoch, why, sizeof(why));
    if (rc == PT_OK)
      break;
    if (bench_now_ms() >= deadline) {
      snprintf(errbuf, errlen, "protection job: %s", why);
      goto out;
    }
    bench_sleep_ms(200);
  }
  started = true;
  /* Warm up: the first commit, then one more second. */
  uint64_t c0 = 0, s0 = 0, c1 = 0, s1 = 0;
  deadline = bench_now_ms() + 60000;
  while (job_poll(&cp, job, &c0, &s0) != PT_OK || c0 == 0) {
    if (bench_now_ms() >= deadline) {
      snprintf(errbuf, errlen, "protection job: no step committed in 60 s (logs in %s)",
               o->tmp_dir);
      rc = -ETIMEDOUT;
      goto out;
    }
    bench_sleep_ms(100);
  }
  bench_sleep_ms(1000);
  if ((rc = job_poll(&cp, job, &c0, &s0)) != PT_OK)
    goto poll_failed;
  double t0 = bench_now();
  bench_sleep_ms((unsigned)(r->window_s * 1000));
  if ((rc = job_poll(&cp, job, &c1, &s1)) != PT_OK)
    goto poll_failed;
  double w = bench_now() - t0;
  r->commits = (int)(c1 - c0);
  r->steps = (int)(s1 > s0 ? s1 - s0 : 0);
  r->window_s = w;
  r->protect_gbps = (double)r->commits * (double)bytes / w / 1e9;
  r->train_gbps = (double)r->steps * (double)bytes / w / 1e9;
  r->step_ms = r->steps > 0 ? w * 1000.0 / r->steps : NAN;
  r->measured = true;
  rc = 0;
  {
    char log1[512];
    snprintf(log1, sizeof(log1), "%s/pnode-1-again.log", o->tmp_dir);
    rebuild_run(o, &cp, job, id[1], nargv[1], &node_pid[1], log1, r);
  }
  goto out;

poll_failed:
  snprintf(errbuf, errlen, "protection job: status: %s", pt_strerror(rc));
out:
  if (started)
    (void)bench_cluster_job_stop(&cp, job);
  for (int i = 0; i < PNODES; i++)
    if (node_pid[i] > 0)
      bench_child_stop(node_pid[i], STOP_GRACE_MS);
  bench_cluster_ctl_stop(&cp);
  return rc;
}
