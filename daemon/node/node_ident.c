/*
 * node_ident.c — which job instance a starting `ptd node` runs, decided
 * before it spawns anything.
 *
 * A job instance is one run of a job: a random id (16 bytes, libsodium)
 * made when it starts, recorded in node.state and in the header of every
 * shm object its SMPs create (ptd smp --instance). An SMP never uses an
 * object of another instance; the node decides here which instance runs:
 *
 *   node.state of this job says "running"   the node itself died (crash,
 *                                           kill, watchdog): continue that
 *                                           instance without a flag and
 *                                           re-adopt what still runs (the
 *                                           systemd restart path)
 *   --resume                                continue the instance recorded
 *                                           in node.state ("ended": stopped,
 *                                           failed or kept); its objects
 *                                           must be of that instance
 *   --fresh                                 unlink every shm object of this
 *                                           job and prefix (any rank), start
 *                                           a new instance; refused while an
 *                                           SMP of the job and prefix runs
 *                                           (another node's live objects)
 *   neither, and no object of this job      a new instance
 *   neither, and some object exists         refused (exit 2), naming the
 *                                           object, its instance and both
 *                                           flags
 *
 * A recorded instance continued with another --ranks is refused (world
 * size mismatch); --fresh starts over with any --ranks.
 *
 * Adoption after the node's own death: the pids in node.state are adopted
 * only when provably the children recorded (start time, and the instance
 * in the command line or environment, node_proc.c). A rank node.state
 * records no process for (the node died between a spawn and its write) is
 * searched for in /proc by that identity, so a trainer spawned just before
 * the node died is adopted, not duplicated.
 */
#include <ctype.h>
#include <dirent.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#include <sodium.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"

#define SHM_DIR "/dev/shm"

/* Any process recorded in s still alive as the same process? */
static int live_pid(const struct node_saved *s)
{
  for (uint32_t i = 0; i < s->ranks; i++) {
    const struct node_saved_proc *p[2] = {&s->rank[i].smp,
                                          &s->rank[i].trainer};
    for (int k = 0; k < 2; k++) {
      uint64_t t;
      if (p[k]->pid > 0 && node_proc_start_ticks(p[k]->pid, &t) == PT_OK &&
          t == p[k]->start_ticks)
        return p[k]->pid;
    }
  }
  return 0;
}

static bool same_cmd(const struct node *n, const struct node_saved *s)
{
  if (s->ncmd != (uint32_t)n->cfg.ncmd)
    return false;
  for (uint32_t i = 0; i < s->ncmd; i++)
    if (strcmp(s->cmd[i], n->cfg.cmd[i]) != 0)
      return false;
  return true;
}

/* ---- the job's shm objects ---- */

/* Calls fn for every object in /dev/shm named "<prefix>pt.<job>.<rank>"
 * (any rank), with its shm name ("/..."). Stops at a non-zero return. */
static int each_object(const struct node *n,
                       int (*fn)(const struct node *n, const char *name,
                                 void *arg),
                       void *arg)
{
  char head[256];
  int rc = 0;

  int hl = snprintf(head, sizeof(head), "%spt.%s.", n->cfg.shm_prefix,
                    n->cfg.job);
  if (hl < 0 || (size_t)hl >= sizeof(head))
    return 0;
  DIR *d = opendir(SHM_DIR);
  if (d == NULL)
    return 0;
  struct dirent *e;
  while (rc == 0 && (e = readdir(d)) != NULL) {
    const char *tail = e->d_name + hl;
    if (strncmp(e->d_name, head, (size_t)hl) != 0 || *tail == '\0' ||
        strlen(tail) > 5)
      continue;
    bool digits = true;
    for (const char *c = tail; *c != '\0'; c++)
      digits = digits && isdigit((unsigned char)*c);
    if (!digits)
      continue;
    /* Cluster mode: only this node's ranks (another node of the job may
     * run on this machine, with ranks of its own). */
    unsigned long rk = strtoul(tail, NULL, 10);
    if (n->cfg.cluster &&
        (rk < n->cfg.first_rank || rk >= n->cfg.first_rank + n->cfg.ranks))
      continue;
    char name[300];
    snprintf(name, sizeof(name), "/%s", e->d_name);
    rc = fn(n, name, arg);
  }
  closedir(d);
  return rc;
}

/* Refuses a start over old objects: names the first one found. */
static int refuse_object(const struct node *n, const char *name, void *arg)
{
  struct snap_store *st = NULL;
  char err[256] = "", hex[33];

  (void)arg;
  int rc = snap_store_open(&st, name, err, sizeof(err));
  if (rc == PT_OK) {
    snap_store_instance_hex(snap_store_instance(st), hex);
    log_error("shm object '%s' exists, of job instance %s (job '%s', %" PRIu32
              " ranks): start with --resume to continue the instance "
              "recorded in '%s', or with --fresh to discard the job's old "
              "snapshots and start a new instance",
              name, hex, LOG_ESC(snap_store_job(st)), snap_store_world(st),
              n->state_path);
    snap_store_close(st);
  } else if (rc == -EPERM) {
    log_error("shm object '%s' exists and is not this user's to use: %s; "
              "remove it, or give the job another --shm-prefix or --job",
              name, err[0] != '\0' ? err : pt_strerror(rc));
  } else {
    log_error("shm object '%s' exists (its header cannot be read: %s): "
              "start with --fresh to discard the job's old snapshots, or "
              "--resume to continue the instance recorded in '%s'",
              name, err[0] != '\0' ? err : pt_strerror(rc), n->state_path);
  }
  return -EEXIST;
}

/* --resume: every object must be of the instance resumed, and of its world
 * size. A damaged object is left to the SMP (it is quarantined there). */
static int check_resumed(const struct node *n, const char *name, void *arg)
{
  const struct node_saved *s = arg;
  struct snap_store *st = NULL;
  char err[256] = "", hex[33], want[33];
  int rc = snap_store_open(&st, name, err, sizeof(err));

  if (rc != PT_OK) {
    log_warn("shm object '%s' cannot be read (%s): its SMP will set it "
             "aside",
             name, err[0] != '\0' ? err : pt_strerror(rc));
    return 0;
  }
  snap_store_instance_hex(snap_store_instance(st), hex);
  snap_store_instance_hex(s->instance, want);
  rc = 0;
  if (strcmp(hex, want) != 0) {
    log_error("--resume: shm object '%s' is of job instance %s (job '%s'), "
              "not of the instance %s recorded in '%s': use --fresh to "
              "discard it",
              name, hex, LOG_ESC(snap_store_job(st)), want, n->state_path);
    rc = -EEXIST;
  } else if (snap_store_world(st) != n->cfg.ranks) {
    log_error("--resume: shm object '%s' was made for %" PRIu32
              " ranks, not --ranks %" PRIu32 " (world size mismatch)",
              name, snap_store_world(st), n->cfg.ranks);
    rc = -EINVAL;
  }
  snap_store_close(st);
  return rc;
}

/* --fresh: unlinks one object, logged with its instance. */
static int discard_object(const struct node *n, const char *name, void *arg)
{
  struct snap_store *st = NULL;
  char hex[33] = "unknown";

  (void)n;
  (void)arg;
  char err[256] = "";
  int rc = snap_store_open(&st, name, err, sizeof(err));
  if (rc == PT_OK) {
    snap_store_instance_hex(snap_store_instance(st), hex);
    snap_store_close(st);
  } else if (rc == -EPERM) {
    /* Another user's object (or one open to others) is not ours to
     * remove, even for root. */
    log_error("--fresh: shm object '%s' is not this user's: %s; remove it "
              "by hand, or give the job another --shm-prefix or --job",
              name, err[0] != '\0' ? err : pt_strerror(rc));
    return rc;
  }
  rc = snap_store_unlink(name);
  if (rc == PT_OK)
    log_notice("--fresh: removed shm object '%s' of job instance %s", name,
               hex);
  else if (rc != -ENOENT)
    log_warn("--fresh: cannot remove shm object '%s': %s", name,
             pt_strerror(rc));
  return 0;
}

struct kept {
  bool found, mixed;
  uint8_t instance[SNAP_INSTANCE_BYTES];
};

static int kept_object(const struct node *n, const char *name, void *arg)
{
  struct kept *k = arg;
  struct snap_store *st = NULL;

  if (snap_store_open(&st, name, NULL, 0) != PT_OK)
    return 0; /* unreadable: its SMP sets it aside */
  if (strcmp(snap_store_job(st), n->cfg.job) == 0) {
    if (!k->found)
      memcpy(k->instance, snap_store_instance(st), sizeof(k->instance));
    else if (memcmp(k->instance, snap_store_instance(st),
                    sizeof(k->instance)) != 0)
      k->mixed = true;
    k->found = true;
  }
  snap_store_close(st);
  return 0;
}

bool node_ident_kept(struct node *n)
{
  struct kept k = {.found = false};

  (void)each_object(n, kept_object, &k);
  if (!k.found || k.mixed)
    return false;
  memcpy(n->instance, k.instance, sizeof(n->instance));
  snap_store_instance_hex(n->instance, n->instance_hex);
  return true;
}

/* A running `ptd smp` of this job and shm prefix (another node's, or one
 * left by this state dir's previous node): its objects are live. OUT: sock
 * (its --socket). 0: none. */
static int live_smp_of_job(const struct node *n, char *sock, size_t cap)
{
  DIR *d = opendir("/proc");
  int found = 0;

  if (d == NULL)
    return 0;
  struct dirent *e;
  while (found == 0 && (e = readdir(d)) != NULL) {
    char *end, buf[4096];
    const char *args[64];
    size_t len = 0, nargs = 0;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == (long)getpid() ||
        node_proc_cmdline((int)pid, buf, sizeof(buf), &len) != PT_OK)
      continue;
    for (size_t i = 0; i < len && nargs < 64;) {
      size_t l = strnlen(buf + i, len - i);
      if (i + l >= len)
        break;
      args[nargs++] = buf + i;
      i += l + 1;
    }
    if (nargs < 2 || strcmp(args[1], "smp") != 0)
      continue;
    const char *job = NULL, *prefix = "", *socket = "", *rank = "0";
    for (size_t i = 2; i + 1 < nargs; i++) {
      if (strcmp(args[i], "--job") == 0)
        job = args[i + 1];
      else if (strcmp(args[i], "--rank") == 0)
        rank = args[i + 1];
      else if (strcmp(args[i], "--shm-prefix") == 0)
        prefix = args[i + 1];
      else if (strcmp(args[i], "--socket") == 0)
        socket = args[i + 1];
    }
    unsigned long rk = strtoul(rank, NULL, 10);
    bool mine = !n->cfg.cluster || (rk >= n->cfg.first_rank &&
                                    rk < n->cfg.first_rank + n->cfg.ranks);
    if (job != NULL && strcmp(job, n->cfg.job) == 0 &&
        strcmp(prefix, n->cfg.shm_prefix) == 0 && mine) {
      found = (int)pid;
      snprintf(sock, cap, "%s", socket);
    }
  }
  closedir(d);
  return found;
}

/* Is pid a running `ptd node` other than this one? The node that wrote a
 * node.state marked running and still runs means the file was copied here
 * from that node's state dir (the lock keeps two nodes out of one dir):
 * its instance is that node's to continue. */
static bool live_node(int pid)
{
  char buf[512];
  size_t len = 0;

  if (pid <= 0 || pid == (int)getpid() ||
      node_proc_cmdline(pid, buf, sizeof(buf), &len) != PT_OK)
    return false;
  size_t l0 = strnlen(buf, len);
  if (l0 >= len)
    return false;
  const char *base = strrchr(buf, '/');
  base = base != NULL ? base + 1 : buf;
  const char *arg1 = buf + l0 + 1;
  return strcmp(base, "ptd") == 0 && len - (l0 + 1) >= 5 &&
         strncmp(arg1, "node", 5) == 0;
}

/* ---- the decision ---- */

static void take(struct node *n, const struct node_saved *s)
{
  memcpy(n->instance, s->instance, sizeof(n->instance));
  snap_store_instance_hex(n->instance, n->instance_hex);
  if (!same_cmd(n, s))
    log_notice("the trainer command differs from the one in '%s'; "
               "restarts use the new one",
               n->state_path);
  n->restarts = s->restarts;
  n->commits = s->commits;
  n->restores = s->restores;
  n->has_committed = s->has_committed;
  n->committed = s->committed;
  n->committed_unix_ms = s->committed_unix_ms;
  for (uint32_t i = 0; i < n->cfg.ranks && i < s->ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    const struct node_saved_rank *sr = &s->rank[i];
    r->smp_restarts = sr->smp.restarts;
    r->restarts = sr->trainer.restarts;
    r->starts = sr->trainer.pid != 0 || r->restarts > 0 ? r->restarts + 1 : 0;
  }
}

int node_ident_start(struct node *n)
{
  struct node_saved s;
  char err[200] = "", hex[33], sock[NODE_PATH_MAX + 32] = "";
  int rc, pid;

  if (sodium_init() < 0) {
    log_error("libsodium cannot be initialised");
    return -EIO;
  }
  /* s is all zero unless a node.state of this job was read. */
  rc = node_state_read(n->state_path, &s, err, sizeof(err));
  if (rc != PT_OK && rc != -ENOENT)
    log_warn("ignoring '%s': %s", n->state_path,
             err[0] != '\0' ? err : pt_strerror(rc));
  bool have = rc == PT_OK;
  if (have && strcmp(s.job, n->cfg.job) != 0) {
    pid = s.ended ? 0 : live_pid(&s);
    if (pid != 0) {
      log_error("'%s' belongs to job '%s' with %" PRIu32
                " ranks, whose process %d still runs: stop it or use "
                "another --state-dir",
                n->state_path, s.job, s.ranks, pid);
      rc = -EEXIST;
      goto out;
    }
    log_notice("ignoring '%s' of job '%s': its processes are gone",
               n->state_path, s.job);
    node_state_saved_release(&s);
    have = false;
  }
  if (have && !s.ended && n->cfg.resume_from[0] != '\0') {
    snap_store_instance_hex(s.instance, hex);
    log_error("--resume-from: '%s' records job '%s' instance %s as still "
              "running: end it (ptctl stop) or give another --state-dir",
              n->state_path, s.job, hex);
    rc = -EEXIST;
    goto out;
  }
  if (have && !n->cfg.fresh && s.ranks != n->cfg.ranks) {
    snap_store_instance_hex(s.instance, hex);
    log_error("job '%s' instance %s recorded in '%s' runs %" PRIu32
              " ranks, not --ranks %" PRIu32 " (world size mismatch): give "
              "--ranks %" PRIu32 " to continue it, or --fresh to discard "
              "its snapshots and start over",
              s.job, hex, n->state_path, s.ranks, n->cfg.ranks, s.ranks);
    rc = -EINVAL;
    goto out;
  }
  if (have && !s.ended && live_node(s.node_pid)) {
    snap_store_instance_hex(s.instance, hex);
    log_error("job '%s' instance %s recorded in '%s' is run by ptd node pid "
              "%d, which still runs (with another state dir: this "
              "node.state was copied from it): that node still runs the "
              "instance; stop it first, or give this node a state dir of "
              "its own",
              s.job, hex, n->state_path, s.node_pid);
    rc = -EBUSY;
    goto out;
  }
  if (have && !s.ended && !n->cfg.fresh && !n->cfg.resume &&
      !same_cmd(n, &s)) {
    /* The same arguments are systemd restarting a node that died; another
     * trainer command is another run, which must not silently continue
     * this one's state. */
    snap_store_instance_hex(s.instance, hex);
    log_error("job '%s' instance %s recorded in '%s' is still marked running "
              "(its node ended without ending it), but with another trainer "
              "command: give the same command to continue it, --resume to "
              "continue it with this one, or --fresh to discard its "
              "snapshots and start over",
              s.job, hex, n->state_path);
    rc = -EEXIST;
    goto out;
  }
  if (have && !s.ended && !n->cfg.fresh) {
    /* The node died without ending the instance: carry on with it. */
    take(n, &s);
    log_notice("continuing job instance %s: its node ended without ending "
               "it",
               n->instance_hex);
    node_ident_adopt(n, &s);
    rc = node_save(n);
    goto out;
  }
  if (n->cfg.resume) {
    if (!have) {
      log_error("--resume: '%s' records no job instance of job '%s': "
                "nothing to resume (start without --resume for a new "
                "instance)",
                n->state_path, n->cfg.job);
      rc = -ENOENT;
      goto out;
    }
    rc = each_object(n, check_resumed, &s);
    if (rc != 0)
      goto out;
    take(n, &s);
    if (s.has_committed)
      log_notice("resuming job instance %s from step %" PRIu64,
                 n->instance_hex, s.committed);
    else
      log_notice("resuming job instance %s: no committed step",
                 n->instance_hex);
    rc = node_save(n);
    goto out;
  }
  if (n->cfg.fresh) {
    pid = have && !s.ended ? live_pid(&s) : 0;
    if (pid != 0) {
      log_error("--fresh: process %d of the job instance recorded in '%s' "
                "still runs: stop it first",
                pid, n->state_path);
      rc = -EBUSY;
      goto out;
    }
    pid = live_smp_of_job(n, sock, sizeof(sock));
    if (pid != 0) {
      log_error("--fresh: the shm objects of job '%s' are in use: ptd smp "
                "pid %d (socket '%s') runs for it; stop that job first",
                n->cfg.job, pid, sock);
      rc = -EBUSY;
      goto out;
    }
    rc = each_object(n, discard_object, NULL);
    if (rc != 0)
      goto out;
  } else {
    rc = each_object(n, refuse_object, NULL);
    if (rc != 0)
      goto out;
  }
  if (n->cfg.resume_from[0] != '\0') {
    char why[1400];
    rc = node_persist_restore_instance(n, why, sizeof(why));
    if (rc != PT_OK) {
      log_error("refusing to start: %s", why);
      goto out;
    }
    log_notice("%s", why);
    rc = node_save(n);
    goto out;
  }
  randombytes_buf(n->instance, sizeof(n->instance));
  snap_store_instance_hex(n->instance, n->instance_hex);
  log_info("new job instance %s", n->instance_hex);
  rc = node_save(n);
out:
  node_state_saved_release(&s);
  return rc;
}

/* Cluster mode: the job instance of a part about to start (n->cfg set
 * from its JOB_ASSIGN). continuing: n->instance is the job's (an earlier
 * epoch ran here); when node.state records this instance running (the
 * node itself died), its counters are taken and its processes re-adopted.
 * Otherwise a new instance: this node's ranks' old objects of the job are
 * discarded (refused while an SMP of them runs). Writes node.state. */
int node_ident_part(struct node *n, bool continuing)
{
  struct node_saved s;
  char err[200] = "", sock[NODE_PATH_MAX + 32] = "";
  int rc;

  if (sodium_init() < 0)
    return -EIO;
  if (continuing) {
    snap_store_instance_hex(n->instance, n->instance_hex);
    rc = node_state_read(n->state_path, &s, err, sizeof(err));
    if (rc != PT_OK && rc != -ENOENT)
      log_warn("ignoring '%s': %s", n->state_path,
               err[0] != '\0' ? err : pt_strerror(rc));
    if (rc == PT_OK && !s.ended && strcmp(s.job, n->cfg.job) == 0 &&
        memcmp(s.instance, n->instance, sizeof(n->instance)) == 0 &&
        s.ranks == n->cfg.ranks) {
      take(n, &s);
      log_notice("continuing job '%s' instance %s: its node ended without "
                 "ending it", n->cfg.job, n->instance_hex);
      node_ident_adopt(n, &s);
    }
    node_state_saved_release(&s);
    return node_save(n);
  }
  int pid = live_smp_of_job(n, sock, sizeof(sock));
  if (pid != 0) {
    log_error("the shm objects of job '%s' ranks %" PRIu32 "..%" PRIu32
              " are in use: ptd smp pid %d (socket '%s') runs for them",
              n->cfg.job, n->cfg.first_rank,
              n->cfg.first_rank + n->cfg.ranks - 1, pid, sock);
    return -EBUSY;
  }
  rc = each_object(n, discard_object, NULL);
  if (rc != 0)
    return rc;
  randombytes_buf(n->instance, sizeof(n->instance));
  snap_store_instance_hex(n->instance, n->instance_hex);
  log_info("job '%s': new job instance %s", n->cfg.job, n->instance_hex);
  return node_save(n);
}

/* ---- adoption ---- */

static void adopt_one(struct node *n, struct node_rank *r, enum node_role role,
                      int pid, uint64_t ticks, const char *how)
{
  struct node_child *c;

  if (node_proc_child_adopt(n, r, role, pid, ticks, &c) != PT_OK)
    return;
  if (role == NODE_ROLE_SMP) {
    r->smp = c;
    r->smp_adopted = true;
  } else {
    r->trainer = c;
    r->tstate = NODE_TR_RUNNING;
    node_smp_announce(n, r); /* when its SMP is subscribed already */
  }
  n->adopting = true;
  log_info("adopted %s rank %s (pid %d%s)",
           role == NODE_ROLE_SMP ? "smp" : "trainer", NODE_RANK(n, r->rank),
           c->pid, how);
}

void node_ident_adopt(struct node *n, const struct node_saved *s)
{
  bool missing = false;

  for (uint32_t i = 0; i < n->cfg.ranks && i < s->ranks; i++) {
    struct node_rank *r = &n->ranks[i];
    const struct node_saved_rank *sr = &s->rank[i];

    if (sr->smp.pid > 0)
      adopt_one(n, r, NODE_ROLE_SMP, sr->smp.pid, sr->smp.start_ticks, "");
    if (sr->trainer.pid > 0)
      adopt_one(n, r, NODE_ROLE_TRAINER, sr->trainer.pid,
                sr->trainer.start_ticks, "");
    missing = missing || r->smp == NULL || r->trainer == NULL;
  }
  /* Spawned but not recorded (the node died before writing node.state):
   * found in one pass over /proc by their identity. */
  DIR *d = missing ? opendir("/proc") : NULL;
  struct dirent *e;
  while (d != NULL && (e = readdir(d)) != NULL) {
    char *end, path[64];
    struct stat st;
    enum node_role role;
    uint32_t rank;
    uint64_t ticks;
    long pid = strtol(e->d_name, &end, 10);
    if (*end != '\0' || pid <= 0 || pid == (long)getpid())
      continue;
    snprintf(path, sizeof(path), "/proc/%ld", pid);
    if (stat(path, &st) != 0 || st.st_uid != geteuid() ||
        !node_proc_identify(n, (int)pid, &role, &rank))
      continue;
    struct node_rank *r = &n->ranks[rank];
    if ((role == NODE_ROLE_SMP ? r->smp : r->trainer) != NULL ||
        node_proc_start_ticks((int)pid, &ticks) != PT_OK)
      continue;
    adopt_one(n, r, role, (int)pid, ticks, ", found by its identity");
    if (role == NODE_ROLE_TRAINER && r->trainer != NULL && r->starts == 0)
      r->starts = 1;
  }
  if (d != NULL)
    closedir(d);
  if (!n->adopting)
    log_info("'%s': no process of the previous node survived",
             n->state_path);
}
