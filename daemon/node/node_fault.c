/*
 * node_fault.c — a cluster-mode node's side of fault injection (ptctl
 * fault, README "Fault injection"): the controller relays a FAULT, the
 * node carries it out on its own processes and memory and answers
 * FAULT_REPLY, or refuses.
 *
 * Refused (-EPERM) unless the node was started with --allow-faults: this is
 * a destructive request, for drills and tests. It must name the job of the
 * node's part; a rank (global) must be one of the part's.
 *
 *   trainer   SIGKILL of the rank's trainer
 *   smp       SIGKILL of the rank's SMP
 *   corrupt   SIGKILL of the rank's trainer (so that the job restores);
 *             then, as the next restore begins (node_fault_before_restore,
 *             before the slots are read: the commits of the old epoch are
 *             over, so the newest committed slot is the one the restore
 *             will want), one byte flipped in the middle of region 0 of
 *             the rank's newest COMMITTED slot; answered then, naming the
 *             step.
 *             Nothing else changes: the slot's checksum table says what
 *             the bytes were, so a restore must find it damaged.
 *   parity    armed; as the node is assigned the job's
 *             next epoch (node_fault_on_assign: another member of the
 *             group was lost, and its rebuild is about to begin), one byte
 *             of parity row 0 of the rank's slot of that epoch's restore
 *             step flipped. The rebuild of member (member - k) mod G
 *             reads that row (ec/rs.h): it must find the damage by
 *             checksum and rebuild without it, or not at all. Answered
 *             then, naming the step (or why not, not injected).
 *   ptd       SIGKILL of this ptd, NODE_FAULT_DELAY_MS after the answer
 *   node      the whole node lost, as a power cut would take it: this
 *             ptd, every trainer (its process group) and every SMP of the
 *             part SIGKILLed together NODE_FAULT_DELAY_MS after the
 *             answer, then the part's shm objects (and the group's tables
 *             beside them) removed. Only the state dir on disk survives:
 *             the node's supervisor starts ptd again, and the part's SMPs
 *             rebuild from their groups.
 *   protecting the same, as the next step a rank seals begins its
 *             protection (a coded job's chunks of it in flight); answered
 *             then, naming the step.
 *   rebuilding the node's memory lost now (its trainers and SMPs
 *             SIGKILLed, its shm objects removed; ptd lives), so that the
 *             job's restart makes its SMPs rebuild the restore step from
 *             their groups; as the first of them begins that rebuild, the
 *             whole node is lost as for "node", and answered then.
 *   stop      SIGSTOP of this ptd NODE_FAULT_DELAY_MS after the answer,
 *             SIGCONT ms later
 * The last two are sent by a grandchild (forked twice, so that nobody has
 * to reap it and libuv's SIGCHLD handling is not involved) that holds no
 * descriptor of the node's (all closed) and only sleeps and signals: what
 * an operator's `kill -9` or `kill -STOP` would do, after the answer left.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/node/node.h"
#include "daemon/node/node_part_int.h"

#define NODE_FAULT_DELAY_MS 100u    /* between the answer and the signal */
#define NODE_FAULT_STOP_MAX_MS 600000u
#define NODE_FAULT_ARMED_MS 60000u  /* an armed fault's wait for its moment */
#define NODE_FAULT_PARITY_AT 100u   /* the parity byte "parity" flips */

static void sleep_ms(uint32_t ms)
{
  struct timespec ts = {.tv_sec = ms / 1000u,
                        .tv_nsec = (long)(ms % 1000u) * 1000000L};
  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* sig1 to target after delay1 ms, then sig2 (0: none) delay2 ms later,
 * from a grandchild. Only async-signal-safe calls after fork. */
static int signal_later(pid_t target, int sig1, uint32_t delay1, int sig2,
                        uint32_t delay2)
{
  long maxfd = sysconf(_SC_OPEN_MAX);
  if (maxfd < 0 || maxfd > 65536)
    maxfd = 65536;
  pid_t pid = fork();
  if (pid < 0)
    return -errno;
  if (pid == 0) {
    if (fork() != 0)
      _exit(0);
    for (long fd = 3; fd < maxfd; fd++)
      close((int)fd);
    sleep_ms(delay1);
    kill(target, sig1);
    if (sig2 != 0) {
      sleep_ms(delay2);
      kill(target, sig2);
    }
    _exit(0);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  return PT_OK;
}

static void answer(struct node *n, uint64_t id, int status, int pid,
                   bool has_step, uint64_t step, const char *fmt, ...)
    __attribute__((format(printf, 7, 8)));

static void answer(struct node *n, uint64_t id, int status, int pid,
                   bool has_step, uint64_t step, const char *fmt, ...)
{
  Pt__FaultReply r = PT__FAULT_REPLY__INIT;
  char msg[640];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  r.status = status;
  r.message = msg;
  r.has_pid = pid > 0;
  r.pid = pid > 0 ? (uint32_t)pid : 0;
  r.has_step = has_step;
  r.step = step;
  if (status == PT_OK)
    log_warn("fault injection: %s", msg);
  else
    log_info("fault injection refused: %s", msg);
  int rc = node_cluster_send(n, RPC_FAULT_REPLY, id, &r.base);
  if (rc != PT_OK)
    log_warn("cannot answer a fault request: %s", pt_strerror(rc));
}

static int live_pid(const struct node_child *c)
{
  return c != NULL && !c->exited && c->pid > 0 ? c->pid : 0;
}

/* Rank's object of this job instance, checked. OUT: *s, name. */
static int open_rank(struct node *n, uint32_t rank, struct snap_store **s,
                     char *name, size_t nlen, char *err, size_t len)
{
  int rc = snap_store_name(name, nlen, n->cfg.shm_prefix, n->cfg.job, rank);
  if (rc == PT_OK)
    rc = snap_store_open(s, name, err, len);
  if (rc != PT_OK) {
    if (err[0] == '\0')
      snprintf(err, len, "cannot open '%s': %s", name, pt_strerror(rc));
    return rc;
  }
  if (memcmp(snap_store_instance(*s), n->instance, SNAP_INSTANCE_BYTES) != 0) {
    snprintf(err, len, "'%s' is not this job instance's object", name);
    snap_store_close(*s);
    *s = NULL;
    return -ESTALE;
  }
  rc = snap_store_check(*s, name, false, err, len);
  if (rc != PT_OK) {
    snap_store_close(*s);
    *s = NULL;
  }
  return rc;
}

/* One byte of region 0 of rank's newest COMMITTED slot, flipped.
 * OUT: *step. */
static int corrupt(struct node *n, uint32_t rank, uint64_t *step, char *err,
                   size_t len)
{
  char name[256];
  struct snap_store *s = NULL;
  uint32_t slot;

  int rc = open_rank(n, rank, &s, name, sizeof(name), err, len);
  if (rc != PT_OK)
    return rc;
  /* The slot of the step the restore will want: in cluster mode the
   * assignment's restore step, which may still be PROTECTED here (its
   * commit had not reached this node when the trainer died); else the
   * newest committed one. */
  rc = -ENOENT;
  for (uint32_t i = 0; n->has_committed && i < snap_store_nslots(s); i++) {
    struct snap_slot_info si;
    snap_slot_get(s, i, &si);
    if (si.record_ok && si.step == n->committed &&
        (si.state == SNAP_COMMITTED || si.state == SNAP_PROTECTED ||
         si.state == SNAP_PINNED)) {
      slot = i;
      *step = si.step;
      rc = PT_OK;
    }
  }
  if (rc != PT_OK)
    rc = snap_slot_newest_committed(s, &slot, step);
  if (rc != PT_OK) {
    snprintf(err, len, "rank %" PRIu32 " holds no committed slot", rank);
    goto out_close;
  }
  const struct snap_region *reg = snap_store_region(s, 0);
  if (reg == NULL || reg->bytes == 0) {
    snprintf(err, len, "rank %" PRIu32 "'s object has no region", rank);
    rc = -EINVAL;
    goto out_close;
  }
  volatile uint8_t *b =
      (uint8_t *)snap_slot_data(s, slot) + reg->offset + reg->bytes / 2;
  *b ^= 0x20;
  snprintf(err, len, "flipped a byte of '%.120s' slot %" PRIu32 " (step %"
           PRIu64 ", region '%.60s' byte %" PRIu64 ")", name, slot, *step,
           reg->name,
           reg->bytes / 2);
out_close:
  snap_store_close(s);
  return rc;
}

/* One byte of parity row 0 of rank's slot of step (committed or
 * protected), flipped: byte NODE_FAULT_PARITY_AT of the row (or its middle,
 * in a shorter one). Under the layout of ec/rs.h that row belongs to
 * stripe (member - k) mod G, whose position 0 is that member's chunk 0:
 * its rebuild reads the row, and the damaged byte lands in its first
 * region. OUT: *slot. */
static int flip_parity(struct node *n, uint32_t rank, uint64_t step,
                       uint32_t *slot, char *err, size_t len)
{
  char name[256];
  struct snap_store *s = NULL;
  size_t plen = 0;

  int rc = open_rank(n, rank, &s, name, sizeof(name), err, len);
  if (rc != PT_OK)
    return rc;
  /* The slot a rebuild is served from (smp_peer_serve.c). */
  rc = -ENOENT;
  for (uint32_t i = 0; i < snap_store_nslots(s) && rc != PT_OK; i++) {
    struct snap_slot_info si;
    snap_slot_get(s, i, &si);
    if (si.record_ok && si.step == step &&
        (si.state == SNAP_COMMITTED || si.state == SNAP_PROTECTED)) {
      *slot = i;
      rc = PT_OK;
    }
  }
  if (rc != PT_OK) {
    snprintf(err, len, "rank %" PRIu32 " holds no committed slot of step %"
             PRIu64, rank, step);
    goto out;
  }
  volatile uint8_t *p = snap_store_parity(s, *slot, &plen);
  uint64_t row = snap_store_parity_chunk(s);
  if (p == NULL || plen == 0 || row == 0) {
    snprintf(err, len, "'%s' has no parity area", name);
    rc = -EINVAL;
    goto out;
  }
  uint64_t at = row > NODE_FAULT_PARITY_AT ? NODE_FAULT_PARITY_AT : row / 2;
  p[at] ^= 0x5a;
  snprintf(err, len, "flipped byte %" PRIu64 " of parity row 0 of '%.120s' "
           "slot %" PRIu32 " (step %" PRIu64 ")", at, name, *slot, step);
out:
  snap_store_close(s);
  return rc;
}

/* An armed "parity" whose moment did not come within NODE_FAULT_ARMED_MS
 * is answered so and disarmed, never carried out later. */
static bool parity_expired(struct node *n)
{
  if (!n->fault_parity.on ||
      rpc_now_ms() < n->fault_parity.armed_ms + NODE_FAULT_ARMED_MS)
    return false;
  n->fault_parity.on = false;
  answer(n, n->fault_parity.id, -ETIMEDOUT, 0, false, 0, "node '%s': no new "
         "epoch of job '%s' was assigned within %u ms; rank %" PRIu32 "'s "
         "parity not damaged, not injected", n->cfg.node_id,
         n->fault_parity.job, NODE_FAULT_ARMED_MS, n->fault_parity.rank);
  return true;
}

void node_fault_on_assign(struct node *n, const char *job, uint64_t epoch,
                          bool has_restore, uint64_t restore, bool from_disk)
{
  char err[300] = "";
  uint32_t slot = 0;

  if (!n->fault_parity.on || parity_expired(n) ||
      strcmp(job, n->fault_parity.job) != 0)
    return; /* (another job's assignment: the armed fault waits on) */
  n->fault_parity.on = false;
  uint32_t rank = n->fault_parity.rank;
  int rc = -ENOENT;
  if (!has_restore || from_disk)
    snprintf(err, sizeof(err), "epoch %" PRIu64 " restores %s", epoch,
             has_restore ? "from disk" : "nothing");
  else
    rc = flip_parity(n, rank, restore, &slot, err, sizeof(err));
  if (rc != PT_OK)
    answer(n, n->fault_parity.id, rc, 0, false, 0, "node '%s': rank %" PRIu32
           "'s parity of the restore step not damaged, not injected: %s",
           n->cfg.node_id, rank, err);
  else
    answer(n, n->fault_parity.id, PT_OK, 0, true, restore, "node '%s': %s, "
           "as epoch %" PRIu64 " is assigned", n->cfg.node_id, err, epoch);
}

/* A grandchild that, delay ms from now, sends SIGKILL to every pid of pids
 * (a negative one: a process group), then removes every shm object of
 * names (the processes are gone first, so none recreates one); as
 * signal_later. */
static int kill_all_later(const pid_t *pids, uint32_t n, char (*names)[264],
                          uint32_t nnames, uint32_t delay)
{
  long maxfd = sysconf(_SC_OPEN_MAX);
  if (maxfd < 0 || maxfd > 65536)
    maxfd = 65536;
  pid_t pid = fork();
  if (pid < 0)
    return -errno;
  if (pid == 0) {
    pid_t g = fork();
    if (g != 0)
      _exit(g < 0 ? 1 : 0);
    for (long fd = 3; fd < maxfd; fd++)
      close((int)fd);
    sleep_ms(delay);
    for (uint32_t i = 0; i < n; i++)
      kill(pids[i], SIGKILL);
    for (uint32_t i = 0; i < nnames; i++)
      shm_unlink(names[i]); /* unlink(2) of /dev/shm/NAME: no allocation */
    _exit(0);
  }
  int st;
  while (waitpid(pid, &st, 0) < 0 && errno == EINTR)
    ;
  return WIFEXITED(st) && WEXITSTATUS(st) == 0 ? PT_OK : -EAGAIN;
}

/* The "node" fault (see the top). OUT: *objs, the objects it removes. */
static int lose_node(struct node *n, uint32_t *objs)
{
  uint32_t nr = n->cfg.ranks;
  pid_t *pids = calloc(3u * nr + 1u, sizeof(*pids));
  char (*names)[264] = calloc(2u * nr + 1u, sizeof(*names));
  uint32_t np = 0, nn = 0;

  if (pids == NULL || names == NULL) {
    free(pids);
    free(names);
    return -ENOMEM;
  }
  pids[np++] = getpid(); /* first: nothing of it reacts to the others */
  for (uint32_t i = 0; i < nr; i++) {
    int t = live_pid(n->ranks[i].trainer), s = live_pid(n->ranks[i].smp);
    if (t > 0) {
      pids[np++] = -t; /* its session's group: what it started too */
      pids[np++] = t;
    }
    if (s > 0)
      pids[np++] = s;
  }
  *objs = 0;
  for (uint32_t i = 0; i < nr; i++) {
    char name[256];
    struct snap_store *st = NULL;
    if (snap_store_name(name, sizeof(name), n->cfg.shm_prefix, n->cfg.job,
                        n->cfg.first_rank + i) != PT_OK)
      continue;
    if (snap_store_open(&st, name, NULL, 0) == PT_OK) {
      (*objs)++;
      snap_store_close(st);
    }
    snprintf(names[nn++], sizeof(names[0]), "%s", name);
    snprintf(names[nn++], sizeof(names[0]), "%s.meta", name);
  }
  int rc = kill_all_later(pids, np, names, nn, NODE_FAULT_DELAY_MS);
  free(pids);
  free(names);
  return rc;
}

/* The answer of a node lost: objs objects removed. */
static void answer_lost(struct node *n, uint64_t id, uint32_t objs,
                        bool has_step, uint64_t step)
{
  char at[64] = "";
  if (has_step)
    snprintf(at, sizeof(at), " at step %" PRIu64, step);
  answer(n, id, PT_OK, getpid(), has_step, step, "node '%s' lost%s: %" PRIu32
         " shm object%s removed; ptd (pid %d), its %" PRIu32 " trainer%s and "
         "SMP%s killed (SIGKILL) in %u ms", n->cfg.node_id, at, objs,
         objs == 1 ? "" : "s", (int)getpid(), n->cfg.ranks,
         n->cfg.ranks == 1 ? "" : "s", n->cfg.ranks == 1 ? "" : "s",
         NODE_FAULT_DELAY_MS);
}

/* An armed fault whose moment did not come within NODE_FAULT_ARMED_MS is
 * answered so and disarmed, never carried out later on another epoch. */
static bool armed_expired(struct node *n, bool *armed, uint64_t id)
{
  if (!*armed || rpc_now_ms() < n->fault_armed_ms + NODE_FAULT_ARMED_MS)
    return false;
  *armed = false;
  answer(n, id, -ETIMEDOUT, 0, false, 0, "node '%s': the fault's moment did "
         "not come within %u ms; not injected", n->cfg.node_id,
         NODE_FAULT_ARMED_MS);
  return true;
}

/* An armed fault's moment came: the node is lost now, and the fault
 * answered, naming step. */
static void fire(struct node *n, bool *armed, uint64_t id, uint64_t step)
{
  uint32_t objs = 0;

  if (armed_expired(n, armed, id) || !*armed)
    return;
  *armed = false;
  int rc = lose_node(n, &objs);
  if (rc != PT_OK)
    answer(n, id, rc, 0, false, 0, "node '%s': cannot lose the node: %s",
           n->cfg.node_id, pt_strerror(rc));
  else
    answer_lost(n, id, objs, true, step);
}

void node_fault_on_sealed(struct node *n, uint64_t step)
{
  fire(n, &n->fault_protecting, n->fault_protecting_id, step);
}

void node_fault_on_rebuild(struct node *n, uint64_t step)
{
  fire(n, &n->fault_rebuilding, n->fault_rebuilding_id, step);
}

/* The memory of the node lost, its ptd alive: every trainer and SMP of
 * the part SIGKILLed, then (once each is gone, so that none recreates one)
 * its shm objects removed. */
static int lose_memory(struct node *n, uint32_t *objs)
{
  *objs = 0;
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    int t = live_pid(n->ranks[i].trainer), s = live_pid(n->ranks[i].smp);
    if (t > 0) {
      kill(-t, SIGKILL);
      kill(t, SIGKILL);
    }
    if (s > 0) {
      kill(s, SIGKILL);
      for (int k = 0; k < 200 && kill(s, 0) == 0; k++) {
        /* a zombie until ptd reaps it: gone once /proc says so */
        char path[64], st[64];
        snprintf(path, sizeof(path), "/proc/%d/stat", s);
        FILE *f = fopen(path, "r");
        bool zombie = f != NULL && fgets(st, sizeof(st), f) != NULL &&
                      strstr(st, ") Z") != NULL;
        if (f != NULL)
          fclose(f);
        if (zombie || f == NULL)
          break;
        sleep_ms(5);
      }
    }
  }
  for (uint32_t i = 0; i < n->cfg.ranks; i++) {
    char name[256], meta[sizeof(name) + 8];
    if (snap_store_name(name, sizeof(name), n->cfg.shm_prefix, n->cfg.job,
                        n->cfg.first_rank + i) != PT_OK)
      continue;
    if (snap_store_unlink(name) == PT_OK)
      (*objs)++;
    snprintf(meta, sizeof(meta), "%s.meta", name);
    (void)snap_store_unlink(meta);
  }
  return PT_OK;
}

void node_fault_before_restore(struct node *n)
{
  char err[300] = "";
  uint64_t step = 0;

  if (!n->fault_corrupt.on)
    return;
  n->fault_corrupt.on = false;
  uint32_t rank = n->fault_corrupt.rank;
  /* The same job (a later epoch of it), and still this node's rank. */
  bool same = strcmp(n->cfg.job, n->fault_corrupt.job) == 0 &&
              rank >= n->cfg.first_rank &&
              rank - n->cfg.first_rank < n->cfg.ranks;
  int rc = same ? corrupt(n, rank, &step, err, sizeof(err)) : -ENOENT;
  if (rc != PT_OK)
    answer(n, n->fault_corrupt.id, rc, 0, false, 0, "node '%s': cannot damage "
           "rank %" PRIu32 "'s snapshot: %s", n->cfg.node_id, rank,
           err[0] != '\0' ? err : "the node no longer runs that rank of the job");
  else
    answer(n, n->fault_corrupt.id, PT_OK, 0, true, step, "node '%s': %s, as "
           "the restore begins; its trainer was killed", n->cfg.node_id, err);
}

void node_fault_on_msg(struct node *n, uint64_t id, const Pt__Fault *m)
{
  const struct node_part *p = node_part_of(n);
  const char *self = n->cfg.node_id;

  if (!n->cfg.allow_faults) {
    answer(n, id, -EPERM, 0, false, 0,
           "node '%s' was not started with --allow-faults: it refuses "
           "fault injection", self);
    return;
  }
  if (p == NULL || !p->has || !p->active || n->ranks == NULL ||
      strcmp(p->job, m->job) != 0) {
    answer(n, id, -ENOENT, 0, false, 0,
           "node '%s' runs no part of job '%s' now", self, LOG_ESC(m->job));
    return;
  }
  uint32_t local = 0;
  if (m->has_rank) {
    if (m->rank < n->cfg.first_rank ||
        m->rank - n->cfg.first_rank >= n->cfg.ranks) {
      answer(n, id, -ENOENT, 0, false, 0,
             "node '%s' does not run rank %" PRIu32 " (its ranks: %" PRIu32
             "..%" PRIu32 ")", self, m->rank, n->cfg.first_rank,
             n->cfg.first_rank + n->cfg.ranks - 1);
      return;
    }
    local = m->rank - n->cfg.first_rank;
  }
  struct node_rank *r = &n->ranks[local];
  uint32_t grank = n->cfg.first_rank + local;
  const char *k = m->kind;

  if (strcmp(k, "trainer") == 0 || strcmp(k, "smp") == 0) {
    bool tr = k[0] == 't';
    int pid = live_pid(tr ? r->trainer : r->smp);
    if (pid == 0) {
      answer(n, id, -ESRCH, 0, false, 0, "rank %" PRIu32 " has no running "
             "%s on node '%s'", grank, tr ? "trainer" : "smp", self);
      return;
    }
    if (kill(pid, SIGKILL) != 0) {
      answer(n, id, -errno, pid, false, 0, "cannot kill the %s of rank %"
             PRIu32 " (pid %d): %s", k, grank, pid, strerror(errno));
      return;
    }
    answer(n, id, PT_OK, pid, false, 0, "node '%s': %s of rank %" PRIu32
           " (pid %d) killed (SIGKILL)", self, k, grank, pid);
  } else if (strcmp(k, "corrupt") == 0) {
    if (n->fault_corrupt.on) {
      answer(n, id, -EBUSY, 0, false, 0, "node '%s': a corruption already "
             "waits for the next restore", self);
      return;
    }
    int pid = live_pid(r->trainer);
    if (pid == 0) {
      answer(n, id, -ESRCH, 0, false, 0, "rank %" PRIu32 " has no running "
             "trainer on node '%s'", grank, self);
      return;
    }
    if (kill(pid, SIGKILL) != 0) {
      answer(n, id, -errno, pid, false, 0, "cannot kill the trainer of rank "
             "%" PRIu32 " (pid %d): %s", grank, pid, strerror(errno));
      return;
    }
    /* Answered once the damage is done, as the restore begins. */
    n->fault_corrupt.on = true;
    n->fault_corrupt.id = id;
    n->fault_corrupt.rank = grank;
    snprintf(n->fault_corrupt.job, sizeof(n->fault_corrupt.job), "%s",
             p->job);
    log_warn("fault injection: node '%s': trainer of rank %" PRIu32 " (pid "
             "%d) killed (SIGKILL); its newest committed slot is damaged as "
             "the next restore begins", self, grank, pid);
  } else if (strcmp(k, "ptd") == 0 || strcmp(k, "stop") == 0) {
    bool stop = k[0] == 's';
    if (stop && (!m->has_ms || m->ms == 0 || m->ms > NODE_FAULT_STOP_MAX_MS)) {
      answer(n, id, -EINVAL, 0, false, 0, "a stop needs ms, 1..%u",
             NODE_FAULT_STOP_MAX_MS);
      return;
    }
    int rc = signal_later(getpid(), stop ? SIGSTOP : SIGKILL,
                          NODE_FAULT_DELAY_MS, stop ? SIGCONT : 0,
                          stop ? m->ms : 0);
    if (rc != PT_OK) {
      answer(n, id, rc, 0, false, 0, "cannot fork: %s", pt_strerror(rc));
      return;
    }
    if (stop)
      answer(n, id, PT_OK, getpid(), false, 0, "node '%s': ptd (pid %d) "
             "stopped (SIGSTOP) in %u ms for %" PRIu32 " ms", self,
             (int)getpid(), NODE_FAULT_DELAY_MS, m->ms);
    else
      answer(n, id, PT_OK, getpid(), false, 0, "node '%s': ptd (pid %d) "
             "killed (SIGKILL) in %u ms", self, (int)getpid(),
             NODE_FAULT_DELAY_MS);
  } else if (strcmp(k, "node") == 0) {
    uint32_t objs = 0;
    int rc = lose_node(n, &objs);
    if (rc != PT_OK) {
      answer(n, id, rc, 0, false, 0, "node '%s': cannot lose the node: %s",
             self, pt_strerror(rc));
      return;
    }
    answer_lost(n, id, objs, false, 0);
  } else if (strcmp(k, "rebuilding") == 0) {
    if (n->fault_protecting || n->fault_rebuilding || n->fault_corrupt.on) {
      answer(n, id, -EBUSY, 0, false, 0, "node '%s': a fault already waits "
             "here", self);
      return;
    }
    if (n->cfg.group.k == 0) {
      answer(n, id, -EINVAL, 0, false, 0, "node '%s': job '%s' has no "
             "erasure code: nothing would be rebuilt", self, p->job);
      return;
    }
    uint32_t objs = 0;
    (void)lose_memory(n, &objs);
    n->fault_rebuilding = true; /* answered as the rebuild begins */
    n->fault_rebuilding_id = id;
    n->fault_armed_ms = rpc_now_ms();
    log_warn("fault injection: node '%s' lost its memory (%" PRIu32 " shm "
             "object%s removed, trainers and SMPs killed); the whole node is "
             "lost as its SMPs begin rebuilding", self, objs,
             objs == 1 ? "" : "s");
  } else if (strcmp(k, "parity") == 0) {
    if (n->cfg.group.k == 0) {
      answer(n, id, -EINVAL, 0, false, 0, "node '%s': job '%s' has no "
             "erasure code: it holds no parity", self, p->job);
      return;
    }
    if (!parity_expired(n) && n->fault_parity.on) {
      answer(n, id, -EBUSY, 0, false, 0, "node '%s': a parity fault already "
             "waits for the next epoch", self);
      return;
    }
    n->fault_parity.on = true; /* answered as the next epoch is assigned */
    n->fault_parity.id = id;
    n->fault_parity.rank = grank;
    snprintf(n->fault_parity.job, sizeof(n->fault_parity.job), "%s", p->job);
    n->fault_parity.armed_ms = rpc_now_ms();
    uint32_t g = n->cfg.group.k + n->cfg.group.m;
    uint32_t before = (n->cfg.group.member + g - n->cfg.group.k) % g;
    log_warn("fault injection: node '%s': a byte of rank %" PRIu32 "'s "
             "parity row 0 of the restore step is flipped as the job's next "
             "epoch is assigned; the rebuild of member %" PRIu32 " of its "
             "coding group reads that row", self, grank, before);
  } else if (strcmp(k, "protecting") == 0) {
    if (n->fault_protecting || n->fault_rebuilding || n->fault_corrupt.on) {
      answer(n, id, -EBUSY, 0, false, 0, "node '%s': a fault already waits "
             "here", self);
      return;
    }
    n->fault_protecting = true; /* answered at the next seal */
    n->fault_protecting_id = id;
    n->fault_armed_ms = rpc_now_ms();
    log_warn("fault injection: node '%s' is lost as the next step a rank "
             "seals begins its protection", self);
  } else {
    answer(n, id, -EINVAL, 0, false, 0, "node '%s': no fault kind '%s' "
           "(trainer, smp, ptd, stop, corrupt, parity, node, protecting, "
           "rebuilding)", self, LOG_ESC(k));
  }
}
