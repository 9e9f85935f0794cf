/*
 * node_proc.c — the node's child processes: one SMP and one trainer per
 * rank.
 *
 * Spawned children run through uv_spawn in a session of their own (setsid:
 * a Ctrl-C on the node's terminal reaches the node only, which then stops
 * everything in order), with stdin on /dev/null and stdout/stderr inherited.
 * libuv owns SIGCHLD for them; the exit callback reports the status and
 * closes the handle. A trainer is signalled as a process group, so helper
 * processes it started go with it, and when it exited whatever is left of
 * its group is SIGKILLed before the node acts on the exit.
 *
 * Adopted children are the previous node's: a restarted node finds their
 * pids in node.state, opens a pidfd (it cannot wait for processes it did not
 * spawn) and watches it with uv_poll; readable means exited, with a status
 * the node cannot know. Before adopting, the pid must still be the same
 * process: its start time (field 22 of /proc/PID/stat) must equal the one
 * recorded at spawn, and it must carry the job instance: an SMP's command
 * line names role "smp", the rank's socket and --instance HEX; a trainer's
 * environment holds PT_INSTANCE=HEX, PT_RANK and PT_SMP_SOCKET, the rank's
 * socket in this state dir (set by the node at spawn;
 * /proc/PID/environ is the environment the process was started with). A
 * forged node.state naming some other process is never adopted or
 * signalled. The pidfd is opened first, so the checks apply to the very
 * process the node then watches.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"
#include "daemon/proc.h"

extern char **environ;

/* Names the node sets for its children (or must not pass on: systemd's
 * notification socket belongs to the node alone). */
static const char *const child_env_names[] = {
    "PT_JOB",     "PT_INSTANCE",      "PT_RANK",          "PT_WORLD_SIZE", "PT_SMP_SOCKET",
    "PT_RESTART", "RANK",             "WORLD_SIZE",    "LOCAL_RANK",
    "LOCAL_WORLD_SIZE", "MASTER_ADDR", "MASTER_PORT",  "NOTIFY_SOCKET",
    "GROUP_RANK",
    "WATCHDOG_PID", "WATCHDOG_USEC",  "LISTEN_PID",    "LISTEN_FDS",
    "LISTEN_FDNAMES", "PT_NODE_TEST_FAULT", "PT_MASTER_PORT_BASE",
    "PT_SHM_PREFIX",
};
#define N_CHILD_ENV (sizeof(child_env_names) / sizeof(child_env_names[0]))

static bool env_is_ours(const char *kv)
{
  for (size_t i = 0; i < N_CHILD_ENV; i++) {
    size_t n = strlen(child_env_names[i]);
    if (strncmp(kv, child_env_names[i], n) == 0 && kv[n] == '=')
      return true;
  }
  return false;
}

int node_proc_env_base(char ***out)
{
  size_t n = 0, k = 0;

  for (char **e = environ; e != NULL && *e != NULL; e++)
    n++;
  char **env = calloc(n + 1, sizeof(*env));
  if (env == NULL)
    return -ENOMEM;
  for (size_t i = 0; i < n; i++) {
    if (env_is_ours(environ[i]))
      continue;
    env[k] = strdup(environ[i]);
    if (env[k] == NULL) {
      node_proc_env_free(env);
      return -ENOMEM;
    }
    k++;
  }
  *out = env;
  return PT_OK;
}

void node_proc_env_free(char **env)
{
  if (env == NULL)
    return;
  for (char **e = env; *e != NULL; e++)
    free(*e);
  free(env);
}

int node_proc_start_ticks(int pid, uint64_t *out)
{
  return proc_stat_field(pid, 22, out);
}

int node_proc_cmdline(int pid, char *buf, size_t cap, size_t *len)
{
  char path[64];
  size_t have = 0;

  snprintf(path, sizeof(path), "/proc/%d/cmdline", pid);
  /* The process's argv, NUL-separated. */
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return errno == ENOENT ? -ESRCH : -errno;
  while (have < cap) {
    ssize_t n = read(fd, buf + have, cap - have);
    if (n < 0 && errno == EINTR)
      continue;
    if (n <= 0)
      break;
    have += (size_t)n;
  }
  close(fd);
  *len = have;
  return PT_OK;
}

/* An SMP of this rank and instance: argv[1] "smp", "--socket" followed by
 * its path and "--instance" followed by the instance id. */
static bool cmdline_is_smp(const char *buf, size_t len, const char *sock,
                           const char *instance)
{
  const char *args[64];
  size_t nargs = 0;

  for (size_t i = 0; i < len && nargs < 64;) {
    const char *a = buf + i;
    size_t l = strnlen(a, len - i);
    if (i + l >= len)
      break; /* the last argument must be NUL-terminated */
    args[nargs++] = a;
    i += l + 1;
  }
  if (nargs < 2 || strcmp(args[1], "smp") != 0)
    return false;
  bool sock_ok = false, inst_ok = false;
  for (size_t i = 2; i + 1 < nargs; i++) {
    if (strcmp(args[i], "--socket") == 0 && strcmp(args[i + 1], sock) == 0)
      sock_ok = true;
    if (strcmp(args[i], "--instance") == 0 &&
        strcmp(args[i + 1], instance) == 0)
      inst_ok = true;
  }
  return sock_ok && inst_ok;
}

/* The identity of a trainer the node spawned: the leader of its own
 * session (spawned with setsid; its helpers inherit the environment but not
 * the leadership) with PT_INSTANCE, PT_RANK and PT_SMP_SOCKET in its
 * environment (as it was started: /proc/PID/environ). The socket lies in
 * the node's state dir, so a node.state copied into another state dir does
 * not make that dir's node take the trainers of the job still running from
 * the first. OUT: inst, rank, sock (the values; sock "" when absent or
 * longer than NODE_PATH_MAX + 32). */
static bool environ_identity(int pid, char inst[40], char rank[16],
                             char sock[NODE_PATH_MAX + 32]);

static bool trainer_identity(int pid, char inst[40], char rank[16],
                             char sock[NODE_PATH_MAX + 32])
{
  uint64_t sid = 0;

  inst[0] = rank[0] = sock[0] = '\0';
  if (proc_stat_field(pid, 6, &sid) != PT_OK || sid != (uint64_t)pid)
    return false;
  return environ_identity(pid, inst, rank, sock);
}

/* PT_INSTANCE, PT_RANK and PT_SMP_SOCKET of pid's environment as it was
 * started (a trainer's helpers inherit them). OUT: inst, rank, sock (""
 * when absent; sock also when longer than NODE_PATH_MAX + 32). */
static bool environ_identity(int pid, char inst[40], char rank[16],
                             char sock[NODE_PATH_MAX + 32])
{
  char path[64];

  inst[0] = rank[0] = sock[0] = '\0';
  snprintf(path, sizeof(path), "/proc/%d/environ", pid);
  int fd = open(path, O_RDONLY | O_CLOEXEC);
  if (fd < 0)
    return false;
  /* Entries are NUL-terminated; read in chunks, keeping a partial entry. */
  char buf[8192];
  size_t have = 0;
  bool skip = false; /* inside an entry longer than buf: not ours */
  for (;;) {
    ssize_t got = read(fd, buf + have, sizeof(buf) - have);
    if (got < 0 && errno == EINTR)
      continue;
    if (got <= 0)
      break;
    have += (size_t)got;
    size_t start = 0;
    for (size_t i = 0; i < have; i++) {
      if (buf[i] != '\0')
        continue;
      const char *e = buf + start;
      if (!skip && strncmp(e, "PT_INSTANCE=", 12) == 0)
        snprintf(inst, 40, "%s", e + 12);
      else if (!skip && strncmp(e, "PT_RANK=", 8) == 0)
        snprintf(rank, 16, "%s", e + 8);
      else if (!skip && strncmp(e, "PT_SMP_SOCKET=", 14) == 0 &&
               strlen(e + 14) < NODE_PATH_MAX + 32)
        snprintf(sock, NODE_PATH_MAX + 32, "%s", e + 14);
      skip = false;
      start = i + 1;
    }
    if (start == 0 && have == sizeof(buf)) {
      start = have;
      skip = true;
    }
    memmove(buf, buf + start, have - start);
    have -= start;
  }
  close(fd);
  return inst[0] != '\0' && rank[0] != '\0';
}

static bool environ_is_trainer(const struct node *n, const struct node_rank *r,
                               int pid)
{
  char inst[40], rank[16], want[16], sock[NODE_PATH_MAX + 32];

  snprintf(want, sizeof(want), "%" PRIu32, n->cfg.first_rank + r->rank);
  return trainer_identity(pid, inst, rank, sock) &&
         strcmp(inst, n->instance_hex) == 0 && strcmp(rank, want) == 0 &&
         strcmp(sock, r->sock_path) == 0;
}

bool node_proc_identify(const struct node *n, int pid, enum node_role *role,
                        uint32_t *rank)
{
  char cmd[4096], inst[40], rk[16], sock[NODE_PATH_MAX + 32];
  size_t len = 0;

  if (node_proc_cmdline(pid, cmd, sizeof(cmd), &len) != PT_OK)
    return false;
  for (uint32_t i = 0; i < n->cfg.ranks; i++)
    if (cmdline_is_smp(cmd, len, n->ranks[i].sock_path, n->instance_hex)) {
      *role = NODE_ROLE_SMP;
      *rank = i;
      return true;
    }
  if (!trainer_identity(pid, inst, rk, sock) ||
      strcmp(inst, n->instance_hex) != 0)
    return false;
  char *end;
  errno = 0;
  unsigned long v = strtoul(rk, &end, 10);
  if (errno != 0 || *end != '\0' || end == rk || v < n->cfg.first_rank)
    return false;
  v -= n->cfg.first_rank;
  if (v >= n->cfg.ranks || strcmp(sock, n->ranks[v].sock_path) != 0)
    return false;
  *role = NODE_ROLE_TRAINER;
  *rank = (uint32_t)v;
  return true;
}

bool node_proc_is_ours(const struct node *n, const struct node_rank *r,
                       enum node_role role, int pid)
{
  if (role == NODE_ROLE_TRAINER)
    return environ_is_trainer(n, r, pid);
  char cmd[4096];
  size_t len = 0;
  return node_proc_cmdline(pid, cmd, sizeof(cmd), &len) == PT_OK &&
         cmdline_is_smp(cmd, len, r->sock_path, n->instance_hex);
}

static void free_child(uv_handle_t *h)
{
  struct node_child *c = h->data;

  if (c->pidfd >= 0)
    close(c->pidfd);
  free(c);
}

/* Processes of process group pgid (and of session pgid: the trainer's own);
 * with verify, only those whose environment carries the job instance, the
 * rank and this node's socket for it, each SIGKILLed through a pidfd opened before the checks.
 * Returns how many were found (verify: killed). */
static int group_scan(const struct node *n, const struct node_rank *r,
                      int pgid, bool verify)
{
  char want[16], inst[40], rank[16], sock[NODE_PATH_MAX + 32];
  int count = 0;
  DIR *d = opendir("/proc");

  if (d == NULL)
    return 0;
  snprintf(want, sizeof(want), "%" PRIu32, n->cfg.first_rank + r->rank);
  struct dirent *e;
  while ((e = readdir(d)) != NULL) {
    char *end;
    long v = strtol(e->d_name, &end, 10);
    if (end == e->d_name || *end != '\0' || v <= 0 || v > INT32_MAX)
      continue;
    int pid = (int)v;
    uint64_t pgrp = 0, sid = 0;
    if (pid == getpid() || proc_stat_field(pid, 5, &pgrp) != PT_OK ||
        pgrp != (uint64_t)pgid || proc_stat_field(pid, 6, &sid) != PT_OK ||
        sid != (uint64_t)pgid)
      continue;
    if (!verify) {
      count++;
      continue;
    }
    int fd = (int)syscall(SYS_pidfd_open, pid, 0);
    if (fd < 0)
      continue;
    if (proc_stat_field(pid, 5, &pgrp) == PT_OK && pgrp == (uint64_t)pgid &&
        environ_identity(pid, inst, rank, sock) &&
        strcmp(inst, n->instance_hex) == 0 && strcmp(rank, want) == 0 &&
        strcmp(sock, r->sock_path) == 0 &&
        syscall(SYS_pidfd_send_signal, fd, SIGKILL, NULL, 0) == 0)
      count++;
    close(fd);
  }
  closedir(d);
  return count;
}

/* A trainer exited: what is left of its process group (helpers it forked,
 * a data loader, a background process of a wrapper script) must not
 * outlive it, holding the old object's memory or the SMP's socket into the
 * restarted or finished job: SIGKILL it. A spawned trainer was reaped just
 * now, so its group cannot name another yet while it has members (a pid
 * that names a live group is not given out again); an adopted one was the
 * previous node's child and was reaped by someone else at some time: only
 * members that carry this job instance and rank are killed, one by one. */
static void trainer_group_kill(struct node_child *c)
{
  struct node *n = c->rank->node;
  int pgid = c->pid, count;

  if (c->role != NODE_ROLE_TRAINER || pgid <= 1)
    return;
  if (c->adopted) {
    count = group_scan(n, c->rank, pgid, true);
  } else {
    if (kill(-pgid, 0) != 0)
      return; /* nothing left */
    count = group_scan(n, c->rank, pgid, false);
    if (kill(-pgid, SIGKILL) != 0)
      return;
    if (count == 0)
      count = 1; /* one at least, or kill() had found no group */
  }
  if (count > 0)
    log_info("trainer rank %s (pid %d) exited: killed %d "
             "process%s left in its process group", NODE_RANK(n, c->rank->rank),
             pgid,
             count, count == 1 ? "" : "es");
}

static void on_spawned_exit(uv_process_t *p, int64_t status, int term_signal)
{
  struct node_child *c = p->data;

  c->exited = true;
  trainer_group_kill(c);
  node_job_child_exited(c->rank->node, c, true, status, term_signal);
  uv_close((uv_handle_t *)p, free_child);
}

static void on_pidfd(uv_poll_t *h, int status, int events)
{
  struct node_child *c = h->data;

  (void)status;
  (void)events;
  uv_poll_stop(h);
  c->exited = true;
  trainer_group_kill(c);
  node_job_child_exited(c->rank->node, c, false, 0, 0);
  uv_close((uv_handle_t *)h, free_child);
}

/* One more argument of an SMP, copied into store. */
static int add_arg(const char *a, char *store, size_t cap, size_t *used,
                   char **argv, size_t *k, size_t maxargs)
{
  size_t l = strlen(a) + 1;
  if (*used + l > cap || *k + 1 >= maxargs)
    return -E2BIG;
  memcpy(store + *used, a, l);
  argv[(*k)++] = store + *used;
  *used += l;
  return PT_OK;
}

/* The coding group of the SMP of r (code_group.h), after its other
 * arguments: --code K+M --group G --member I --node-id ID and one
 * --group-node per member. */
static int group_args(struct node *n, struct node_rank *r, char *store,
                      size_t cap, size_t *used, char **argv, size_t *k,
                      size_t maxargs)
{
  struct code_group g;
  char code[24], grp[16], mem[16], one[1600];
  int rc = PT_OK;

  node_plan_smp_group(&n->cfg, r->rank, &g);
  if (g.k == 0)
    return PT_OK;
  snprintf(code, sizeof(code), "%" PRIu32 "+%" PRIu32, g.k, g.m);
  snprintf(grp, sizeof(grp), "%" PRIu32, g.group);
  snprintf(mem, sizeof(mem), "%" PRIu32, g.member);
  /* The links to the group: the cluster key, and the address they come
   * to (the advertised one when numeric, else every interface). */
  const char *listen = rpc_addr_is_numeric(n->cfg.advertise)
                           ? n->cfg.advertise
                       : strchr(n->cfg.advertise, ':') != NULL ? "::"
                                                               : "0.0.0.0";
  const char *items[] = {"--code", code, "--group", grp, "--member", mem,
                         "--node-id", n->cfg.node_id,
                         "--key", n->cfg.key_path,
                         "--peer-listen", listen};
  for (size_t i = 0; i < sizeof(items) / sizeof(items[0]) && rc == PT_OK; i++)
    rc = add_arg(items[i], store, cap, used, argv, k, maxargs);
  for (uint32_t i = 0; i < g.n && rc == PT_OK; i++) {
    rc = code_group_member_format(&g.members[i], one, sizeof(one));
    if (rc == PT_OK)
      rc = add_arg("--group-node", store, cap, used, argv, k, maxargs);
    if (rc == PT_OK)
      rc = add_arg(one, store, cap, used, argv, k, maxargs);
  }
  return rc;
}

/* argv of an SMP; strings live in store (one NUL-separated buffer). */
static int smp_argv(struct node *n, struct node_rank *r, char *store,
                    size_t cap, char **argv, size_t maxargs)
{
  size_t used = 0, k = 0;
  char budget[32] = "", lvl[8], rank[16], world[16], slots[16];

  snprintf(rank, sizeof(rank), "%" PRIu32, n->cfg.first_rank + r->rank);
  snprintf(world, sizeof(world), "%" PRIu32, node_plan_world(&n->cfg));
  snprintf(slots, sizeof(slots), "%" PRIu32, n->cfg.slots);
  snprintf(lvl, sizeof(lvl), "%d", n->cfg.log_level);
  if (n->cfg.memory_budget > 0)
    snprintf(budget, sizeof(budget), "%" PRIu64,
             n->cfg.memory_budget / n->cfg.ranks);
  const char *items[] = {
      n->self_exe, "smp",     "--job",   n->cfg.job,  "--rank",  rank,
      "--world",   world,     "--socket", r->sock_path, "--slots", slots,
      "--log-level", lvl,
      budget[0] ? "--budget" : NULL, budget,
      n->cfg.shm_prefix[0] ? "--shm-prefix" : NULL, n->cfg.shm_prefix,
      "--instance", n->instance_hex, "--secret-file", n->secret_path,
  };
  for (size_t i = 0; i < sizeof(items) / sizeof(items[0]); i++) {
    if (items[i] == NULL) {
      i++; /* an absent option: skip its value too */
      continue;
    }
    size_t l = strlen(items[i]) + 1;
    if (used + l > cap || k + 1 >= maxargs)
      return -E2BIG;
    memcpy(store + used, items[i], l);
    argv[k++] = store + used;
    used += l;
  }
  if (n->cfg.huge_pages) { /* a flag, without a value to pair it with */
    static const char flag[] = "--huge-pages";
    if (used + sizeof(flag) > cap || k + 1 >= maxargs)
      return -E2BIG;
    memcpy(store + used, flag, sizeof(flag));
    argv[k++] = store + used;
    used += sizeof(flag);
  }
  int rc = group_args(n, r, store, cap, &used, argv, &k, maxargs);
  const char *pdir = node_persist_job_dir(n);
  if (rc == PT_OK && pdir != NULL) {
    char rate[32];
    snprintf(rate, sizeof(rate), "%" PRIu64, n->cfg.persist_rate);
    const char *items[] = {"--persist-dir", pdir, "--persist-rate", rate};
    for (size_t i = 0; i < 4 && rc == PT_OK; i++)
      rc = add_arg(items[i], store, cap, &used, argv, &k, maxargs);
  }
  argv[k] = NULL;
  return rc;
}

/* env of a trainer: the base plus the PT_ and torchrun names. */
static int trainer_env(struct node *n, struct node_rank *r, char ***out)
{
  size_t nbase = 0;
  char **env;

  while (n->env[nbase] != NULL)
    nbase++;
  env = calloc(nbase + 16, sizeof(*env));
  if (env == NULL)
    return -ENOMEM;
  memcpy(env, n->env, nbase * sizeof(*env));
  char *add[15];
  int k = 0, rc = PT_OK;
  struct node_rank_env re;
  node_plan_rank_env(&n->cfg, r->rank, &re);
  /* After a recovery in place, the restarted ranks meet the survivors at
   * a rendezvous of its own (within 64 ports of --master-port, wrapping
   * below 65536). */
  uint32_t port = re.master_port + (uint32_t)(n->recover_gen % 64u);
  if (port > 65535u)
    port -= 64u;
  /* PT_RANK and PT_WORLD_SIZE are the job's (global) rank and size, as
   * the rank's SMP has them. */
  if (asprintf(&add[k++], "PT_JOB=%s", n->cfg.job) < 0 ||
      asprintf(&add[k++], "PT_INSTANCE=%s", n->instance_hex) < 0 ||
      asprintf(&add[k++], "PT_RANK=%" PRIu32, re.rank) < 0 ||
      asprintf(&add[k++], "PT_WORLD_SIZE=%" PRIu32, re.world) < 0 ||
      asprintf(&add[k++], "PT_SMP_SOCKET=%s", r->sock_path) < 0 ||
      asprintf(&add[k++], "PT_SHM_PREFIX=%s", n->cfg.shm_prefix) < 0 ||
      asprintf(&add[k++], "PT_RESTART=%" PRIu32, n->restarts) < 0 ||
      asprintf(&add[k++], "RANK=%" PRIu32, re.rank) < 0 ||
      asprintf(&add[k++], "WORLD_SIZE=%" PRIu32, re.world) < 0 ||
      asprintf(&add[k++], "LOCAL_RANK=%" PRIu32, re.local_rank) < 0 ||
      asprintf(&add[k++], "LOCAL_WORLD_SIZE=%" PRIu32, re.local_world) < 0 ||
      asprintf(&add[k++], "GROUP_RANK=%" PRIu32, re.group_rank) < 0 ||
      asprintf(&add[k++], "MASTER_ADDR=%s", re.master_addr) < 0 ||
      asprintf(&add[k++], "MASTER_PORT=%" PRIu32, port) < 0 ||
      asprintf(&add[k++], "PT_MASTER_PORT_BASE=%" PRIu32, re.master_port) < 0) {
    add[--k] = NULL; /* asprintf leaves it undefined on failure */
    rc = -ENOMEM;
  }
  for (int i = 0; i < k; i++)
    env[nbase + (size_t)i] = add[i];
  if (rc != PT_OK) {
    for (int i = 0; i < k; i++)
      free(add[i]);
    free(env);
    return rc;
  }
  *out = env;
  return PT_OK;
}

static void trainer_env_free(struct node *n, char **env)
{
  size_t nbase = 0;

  while (n->env[nbase] != NULL)
    nbase++;
  for (char **e = env + nbase; *e != NULL; e++)
    free(*e);
  free(env);
}

int node_proc_child_spawn(struct node *n, struct node_rank *r, enum node_role role,
                     struct node_child **out)
{
  uv_process_options_t o;
  uv_stdio_container_t stdio[3];
  /* An SMP's arguments: its own, and its coding group's members (up to
   * RS_MAX_MEMBERS of a node id and an address, %XX-encoded at worst). */
  enum { STORE = 4096 + RS_MAX_MEMBERS * 1600,
         NARGS = 40 + 2 * RS_MAX_MEMBERS };
  char *store = NULL;
  char **argv = NULL;
  char **env = NULL;
  int rc;

  struct node_child *c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->rank = r;
  c->role = role;
  c->pidfd = -1;
  c->h.proc.data = c;

  memset(&o, 0, sizeof(o));
  memset(stdio, 0, sizeof(stdio));
  stdio[0].flags = UV_IGNORE;
  stdio[1].flags = UV_INHERIT_FD;
  stdio[1].data.fd = STDOUT_FILENO;
  stdio[2].flags = UV_INHERIT_FD;
  stdio[2].data.fd = STDERR_FILENO;
  o.stdio = stdio;
  o.stdio_count = 3;
  o.exit_cb = on_spawned_exit;
  o.flags = UV_PROCESS_DETACHED;
  if (role == NODE_ROLE_SMP) {
    store = malloc(STORE);
    argv = calloc(NARGS, sizeof(*argv));
    rc = store == NULL || argv == NULL
             ? -ENOMEM
             : smp_argv(n, r, store, STORE, argv, NARGS);
    if (rc != PT_OK)
      goto out_free;
    o.file = "/proc/self/exe";
    o.args = argv;
    o.env = n->env;
  } else {
    rc = trainer_env(n, r, &env);
    if (rc != PT_OK)
      goto out_free;
    o.file = n->cfg.cmd[0];
    o.args = n->cfg.cmd;
    o.env = env;
  }
  rc = uv_spawn(n->loop, &c->h.proc, &o);
  if (env != NULL)
    trainer_env_free(n, env);
  free(store);
  free(argv);
  if (rc != 0) {
    /* libuv wants the handle closed even when the spawn failed. */
    uv_close((uv_handle_t *)&c->h.proc, free_child);
    return rc;
  }
  c->pid = c->h.proc.pid;
  if (node_proc_start_ticks(c->pid, &c->start_ticks) != PT_OK)
    c->start_ticks = 0; /* exited already; its exit callback follows */
  *out = c;
  return PT_OK;

out_free:
  free(store);
  free(argv);
  free(c);
  return rc;
}

int node_proc_child_adopt(struct node *n, struct node_rank *r, enum node_role role,
                     int pid, uint64_t start_ticks, struct node_child **out)
{
  uint64_t now_ticks = 0;
  int rc;

  if (pid <= 0 || pid == getpid())
    return -ESRCH;
  int fd = (int)syscall(SYS_pidfd_open, pid, 0);
  if (fd < 0)
    return errno == ESRCH ? -ESRCH : -errno;
  rc = node_proc_start_ticks(pid, &now_ticks);
  if (rc != PT_OK || now_ticks != start_ticks) {
    log_info("not adopting %s rank %s: pid %d is %s",
             role == NODE_ROLE_SMP ? "smp" : "trainer", NODE_RANK(n, r->rank),
             pid,
             rc != PT_OK ? "gone" : "another process now");
    rc = -ESRCH;
    goto out_close;
  }
  if (!node_proc_is_ours(n, r, role, pid)) {
    if (role == NODE_ROLE_SMP)
      log_warn("not adopting smp rank %s"
               ": pid %d does not run 'smp --socket %s --instance %s'",
               NODE_RANK(n, r->rank), pid, r->sock_path, n->instance_hex);
    else
      log_warn("not adopting trainer rank %s"
               ": pid %d is not a session leader with PT_INSTANCE=%s, "
               "PT_RANK=%" PRIu32 " and PT_SMP_SOCKET=%s in its environment",
               NODE_RANK(n, r->rank), pid, n->instance_hex,
               n->cfg.first_rank + r->rank, r->sock_path);
    rc = -ESRCH;
    goto out_close;
  }
  struct node_child *c = calloc(1, sizeof(*c));
  if (c == NULL) {
    rc = -ENOMEM;
    goto out_close;
  }
  c->rank = r;
  c->role = role;
  c->adopted = true;
  c->pid = pid;
  c->pidfd = fd;
  c->start_ticks = start_ticks;
  c->h.poll.data = c;
  rc = uv_poll_init(n->loop, &c->h.poll, fd);
  if (rc != 0) {
    free(c);
    goto out_close;
  }
  rc = uv_poll_start(&c->h.poll, UV_READABLE, on_pidfd);
  if (rc != 0) {
    uv_close((uv_handle_t *)&c->h.poll, free_child); /* closes fd */
    return rc;
  }
  *out = c;
  return PT_OK;

out_close:
  close(fd);
  return rc;
}

int node_proc_child_signal(struct node_child *c, int sig)
{
  if (c->exited)
    return -ESRCH;
  if (c->adopted) {
    if (syscall(SYS_pidfd_send_signal, c->pidfd, sig, NULL, 0) != 0)
      return -errno;
    return PT_OK;
  }
  /* A spawned child is not reaped before its exit callback, so its pid (and
   * for a trainer, its process group) cannot name anything else yet. */
  if (c->role == NODE_ROLE_TRAINER && kill(-c->pid, sig) == 0)
    return PT_OK;
  if (kill(c->pid, sig) != 0)
    return -errno;
  return PT_OK;
}

void node_proc_child_abandon(struct node_child *c)
{
  if (c->exited)
    return;
  c->exited = true;
  if (c->adopted) {
    uv_poll_stop(&c->h.poll);
    uv_close((uv_handle_t *)&c->h.poll, free_child);
  } else {
    uv_close((uv_handle_t *)&c->h.proc, free_child);
  }
}
