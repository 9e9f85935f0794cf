/*
 * pt_client.c — libpt: the trainer's side of pt (the contract is client/pt.h).
 *
 * A client holds one blocking Unix-socket connection to its rank's SMP, the
 * region table the trainer registered, a copy engine (kernels/kernels.h), a
 * sealer thread and, once the table is frozen, a read-write mapping of the
 * SMP's shm object.
 *
 * Invariants kept here:
 *   - Two threads of ours use a client: the trainer's (every pt_* call) and
 *     the sealer, started at the first pt_snapshot() and joined by
 *     pt_client_close(); plus the copy engine's own. The sealer waits for the
 *     copy in flight to complete and at once sends its SEAL, so the node can
 *     commit the step during the trainer's next forward and backward pass
 *     instead of during the optimizer step between pt_fence() and the next
 *     pt_snapshot().
 *   - One more thread, started with each new mapping of the object and
 *     stopped before it is unmapped, fills this process's page tables for
 *     it, the slot in use first (snapshot/snap_populate.h); it only reads.
 *   - conn_mu serialises the connection: every request and its reply, every
 *     connect and HELLO, and fd / epoch / hello_ok. It is never held while
 *     data is copied, and never taken while mu is held (the sealer's log
 *     path takes no lock at all), so the two cannot deadlock.
 *   - mu and cv guard the pending snapshot's phase (IDLE -> COPYING ->
 *     SEALING -> DONE -> IDLE). Only the trainer's thread starts a snapshot
 *     (IDLE -> COPYING) and collects an outcome (DONE -> IDLE); only the
 *     sealer moves COPYING -> SEALING -> DONE. The trainer's thread sends
 *     requests (SLOT_ACQUIRE, RESTORE_QUERY, HELLO, BYE) and calls the engine
 *     only in IDLE, so the engine sees one caller at a time and the sealer's
 *     seal never races a reconnect that would renumber its connection.
 *     pt_snapshot() and pt_restore() refuse while a copy runs (PT_EINFLIGHT)
 *     but wait for a seal already on its way, as a finished copy was always
 *     sealed before they went on.
 *   - Every exchange with the SMP has a deadline (timeout_ms). Training never
 *     waits for protection: pt_snapshot() waits on the SMP at most
 *     snap_timeout_ms (a seal still on its way, the slot request), else the
 *     step is PT_SKIPPED; pt_fence() waits for a seal's answer at most
 *     snap_timeout_ms past the copy's end. Only a client's first HELLO (the
 *     SMP may create and pre-fault its object) takes the whole timeout_ms.
 *     The sealer's seal is answered or given up within timeout_ms of the
 *     copy's end.
 *   - A request that timed out before any byte of its reply came keeps the
 *     connection: its reply is owed (owed[]), read before the next request
 *     is sent, so a stopped SMP gets one request, not one per step; a slot
 *     that a late SLOT_REPLY assigned is handed back at once. Every other
 *     failure closes the connection.
 *   - The region table is frozen by the first pt_snapshot() or pt_restore():
 *     that call sends HELLO, maps the object the SMP names and checks that its
 *     region table equals ours.
 *   - A broken connection (the SMP died or restarted) is closed and forgotten;
 *     the next call reconnects and says HELLO again within its own deadline.
 *     A HELLO answered -EAGAIN (the SMP waits for its node to name the
 *     trainer it started) is asked again, within the same deadline.
 *     A snapshot whose connection broke before its seal is reported as failed:
 *     the SMP freed its slot. Nothing here is ever fatal to the trainer.
 *   - libpt never prints: messages go to the application's log callback, and
 *     the last failure's text is kept for pt_last_error(). The sealer keeps
 *     its messages with the outcome; the trainer's thread hands them on when
 *     it collects the outcome, so the callback and last_error are only ever
 *     touched by the application's thread.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "rpc/rpc.h"
#include "snapshot/snap_populate.h"
#include "snapshot/snap_store.h"

#define DEFAULT_TIMEOUT_MS 10000
/* How long pt_snapshot() (and pt_fence(), for a seal) waits on the SMP. */
#define DEFAULT_SNAPSHOT_TIMEOUT_MS 100
#define CONNECT_RETRY_MS 20
/* Requests sent whose reply is still owed (they timed out on a connection
 * that stays up); one more, and the connection is closed instead. */
#define OWED_MAX 4
/* How long a HELLO answered -EBUSY is retried: the SMP may not yet have seen
 * the close of this trainer's previous connection. */
#define BUSY_RETRY_MS 1000
/* A HELLO answered -EAGAIN (the SMP waits for its node to say which trainer
 * it started, or its object changed under it) is asked again this often,
 * until the call's deadline. */
#define WAIT_RETRY_MS 50
/* pt_fence() waits this much past the seal's own deadline before it gives
 * up on the sealer: the sealer's request keeps that deadline itself. */
#define SEAL_GRACE_MS 1000
/* Messages the sealer keeps for one snapshot; a further one replaces the
 * last, so the outcome's own message is always kept. */
#define SEAL_MSG_MAX 4

struct region {
  char name[SNAP_NAME_MAX];
  void *ptr;
  size_t bytes;
  int kind; /* enum pt_mem */
};

/* Where the pending snapshot stands (pt_client.phase, under mu). */
enum seal_phase {
  PHASE_IDLE = 0, /* nothing pending, or its outcome was collected */
  PHASE_COPYING,  /* the copy runs; the sealer waits for it */
  PHASE_SEALING,  /* the copy is done; the sealer's SEAL is on its way */
  PHASE_DONE,     /* outcome recorded in seal_rc, not yet collected */
};

struct seal_msg {
  int level;
  char text[512];
};

/* A request that timed out before any byte of its reply came: the reply is
 * still owed and is settled when it arrives (owed_settle()). */
struct owed {
  uint64_t id;
  uint32_t type;
  uint64_t step; /* SLOT_ACQUIRE, SEAL: the step asked for */
};

struct pt_client {
  /* configuration */
  char *socket_path;
  char job[SNAP_JOB_MAX];
  uint32_t rank, world;
  int copy_threads;
  int timeout_ms;
  int snap_timeout_ms; /* the bound of pt_snapshot() and of a fence's wait */
  pt_log_fn log_fn;
  void *log_arg;
  char last_error[512];
  /* the process that opened the client: its threads, locks and connection
   * are that process's; a forked child may not use them (foreign_process) */
  pid_t owner_pid;
  /* retries of a session (a refused or failed HELLO tried again until the
   * deadline): the first failure is logged, the repeats only counted and
   * summed up once the retries end (quiet_end). Trainer's thread. */
  bool quiet;
  int quiet_count, quiet_level;
  uint64_t quiet_since;
  char quiet_last[512];

  /* connection to the SMP, under conn_mu */
  pthread_mutex_t conn_mu;
  int fd;          /* -1: disconnected */
  uint64_t epoch;  /* incremented at every connect */
  bool hello_ok;   /* HELLO accepted on the current connection */
  bool had_session; /* a HELLO was accepted once: later ones are bounded */
  uint64_t next_id; /* request ids on this client's connections, never 0 */
  struct owed owed[OWED_MAX];
  int nowed;

  /* region table, in registration order, plus an index sorted by address */
  struct region *regions;
  size_t *by_addr;
  size_t nregions, cap;
  /* index of the names: open addressing, entries hold a region's index + 1
   * (0: empty); names_cap is a power of two above twice nregions */
  uint32_t *names;
  size_t names_cap;
  uint64_t total_bytes;
  bool frozen;
  struct snap_region_desc *descs;
  struct kern_xfer *xfers;

  /* copy engine and the mapped object */
  struct kern_engine *engine;
  struct snap_store *store;
  void *reg_base; /* registered with the engine */
  /* fills this process's page tables for the mapping in the background,
   * the slot in use first (snapshot/snap_populate.h); NULL when it could
   * not start. Started and stopped with the mapping, trainer's thread. */
  struct snap_populate *populate;
  uint64_t store_ctime;
  char shm_name[256];

  /* the pending snapshot: p_* are written by the trainer's thread in IDLE
   * and read by the sealer after it took the job under mu */
  uint32_t p_slot;
  uint64_t p_gen, p_step, p_epoch;

  /* the sealer; phase, seal_*, stop under mu; cv (CLOCK_MONOTONIC) is
   * broadcast at every change of them */
  pthread_mutex_t mu;
  pthread_cond_t cv;
  pthread_t sealer;
  bool sealer_started;    /* trainer's thread only */
  bool stop;
  enum seal_phase phase;
  int seal_rc;            /* the outcome, in PHASE_DONE */
  uint64_t seal_deadline; /* rpc_now_ms() limit of the SEAL, from SEALING */
  uint64_t seal_sent;     /* rpc_now_ms() when the copy ended, from SEALING */
  bool seal_abandoned;    /* pt_fence() gave up on it: already counted */
  /* the sealer's messages of the pending snapshot: written by the sealer
   * before DONE, read by the trainer's thread after it */
  struct seal_msg seal_msgs[SEAL_MSG_MAX];
  int seal_nmsgs;

  bool has_last_step;
  uint64_t last_step;
  bool restore_called; /* pt_restore() answered PT_OK or PT_ENOSNAP */
  bool found_committed; /* the first accepted HELLO named a committed step:
                         * an earlier run's, not one of this client's */
  uint64_t hang_skips;  /* snapshots skipped in a row: the SMP is slow */

  uint64_t started, skipped, failed;
  bool has_committed;
  uint64_t committed_step;

  /* the blob: the one pt_snapshot() stores (set by pt_blob_set() or the
   * last restore) and the one the last pt_restore() brought back; each
   * buffer PT_BLOB_MAX bytes once allocated. Trainer's thread only. */
  uint8_t *blob;
  size_t blob_len;
  uint8_t *rblob;
  size_t rblob_len;
  bool rblob_ok; /* a pt_restore() succeeded: rblob holds its blob */
  bool had_hello;         /* a HELLO was accepted once (conn_mu) */
};

_Static_assert(PT_BLOB_MAX == SNAP_BLOB_MAX,
               "pt.h's blob limit is the snapshot object's blob area");
_Static_assert(PT_MAX_REGIONS == SNAP_MAX_REGIONS &&
                   PT_REGION_NAME_MAX + 1 == SNAP_NAME_MAX,
               "pt.h's region limits are the snapshot object's");
_Static_assert(SNAP_MAX_REGIONS <= UINT32_MAX - 1,
               "the name index holds a region's index + 1 in 32 bits");
_Static_assert((uint64_t)SNAP_MAX_REGIONS * (SNAP_NAME_MAX + 22) + 4096 <=
                   RPC_MAX_BODY_HELLO,
               "a HELLO with the largest region table fits the SMP's frames");

/* ---- messages ---- */

static void client_log(pt_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

/* The client whose sealer runs on this thread; NULL on every other thread. */
static _Thread_local pt_client *tls_sealer_of;

static void client_log(pt_client *c, int level, const char *fmt, ...)
{
  char msg[sizeof(c->last_error)];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (tls_sealer_of == c) {
    /* Kept with the outcome; the trainer's thread hands it on. */
    int i = c->seal_nmsgs < SEAL_MSG_MAX ? c->seal_nmsgs++ : SEAL_MSG_MAX - 1;
    c->seal_msgs[i].level = level;
    memcpy(c->seal_msgs[i].text, msg, sizeof(msg));
    return;
  }
  if (level <= PT_LOG_WARN)
    memcpy(c->last_error, msg, sizeof(msg));
  if (c->quiet && level <= PT_LOG_WARN) {
    c->quiet_count++;
    if (level < c->quiet_level)
      c->quiet_level = level;
    memcpy(c->quiet_last, msg, sizeof(msg));
    return;
  }
  if (c->log_fn != NULL)
    c->log_fn(c->log_arg, level, msg);
}

/* From the first retry of a failed session on: messages are counted, not
 * logged. Returns whether this call began it (only that caller ends it). */
static bool quiet_begin(pt_client *c)
{
  if (c->quiet)
    return false;
  c->quiet = true;
  c->quiet_count = 0;
  c->quiet_level = PT_LOG_WARN;
  c->quiet_since = rpc_now_ms();
  c->quiet_last[0] = '\0';
  return true;
}

/* Ends the retries' silence: one line sums up the failures not logged. */
static void quiet_end(pt_client *c, bool began)
{
  if (!began)
    return;
  c->quiet = false;
  unsigned long long ms = rpc_now_ms() - c->quiet_since;
  if (c->quiet_count == 1)
    client_log(c, c->quiet_level, "%s (after %llu ms of retries)",
               c->quiet_last, ms);
  else if (c->quiet_count > 1)
    client_log(c, c->quiet_level,
               "%s (the last of %d more failures in %llu ms of retries, "
               "not logged each)", c->quiet_last, c->quiet_count, ms);
}

/* Hands the sealer's messages of a collected outcome to the application.
 * Trainer's thread, after it saw PHASE_DONE. */
static void seal_msgs_flush(pt_client *c)
{
  for (int i = 0; i < c->seal_nmsgs; i++) {
    if (c->seal_msgs[i].level <= PT_LOG_WARN)
      memcpy(c->last_error, c->seal_msgs[i].text, sizeof(c->last_error));
    if (c->log_fn != NULL)
      c->log_fn(c->log_arg, c->seal_msgs[i].level, c->seal_msgs[i].text);
  }
  c->seal_nmsgs = 0;
}

/* ---- time ---- */

static uint64_t deadline_after(const pt_client *c)
{
  return rpc_now_ms() + (uint64_t)c->timeout_ms;
}

static int ms_left(uint64_t deadline)
{
  uint64_t now = rpc_now_ms();

  if (now >= deadline)
    return 0;
  uint64_t d = deadline - now;
  return d > INT_MAX ? INT_MAX : (int)d;
}

/* OUT: *ts, the CLOCK_MONOTONIC time of an rpc_now_ms() deadline. */
static void deadline_timespec(uint64_t deadline, struct timespec *ts)
{
  ts->tv_sec = (time_t)(deadline / 1000u);
  ts->tv_nsec = (long)(deadline % 1000u) * 1000000L;
}

static void sleep_ms(int ms)
{
  struct timespec ts = { ms / 1000, (long)(ms % 1000) * 1000000L };

  while (nanosleep(&ts, &ts) != 0 && errno == EINTR)
    ;
}

/* ---- options ---- */

static int env_int(const char *name, int *out, bool *found)
{
  const char *s = getenv(name);
  char *end;
  long v;

  *found = false;
  if (s == NULL || *s == '\0')
    return 0;
  errno = 0;
  v = strtol(s, &end, 10);
  if (errno != 0 || *end != '\0' || v < 0 || v > INT_MAX)
    return PT_ECONFIG;
  *out = (int)v;
  *found = true;
  return 0;
}

/* The first of the environment variables a, b that is set. */
static int env_int2(const char *a, const char *b, int *out, bool *found)
{
  int rc = env_int(a, out, found);

  if (rc != 0 || *found || b == NULL)
    return rc;
  return env_int(b, out, found);
}

static int options_apply(pt_client *c, const struct pt_options *o)
{
  const char *path = o->socket_path ? o->socket_path : getenv("PT_SMP_SOCKET");
  const char *job = o->job ? o->job : getenv("PT_JOB");
  bool found;
  int v, rc;

  if (job == NULL || *job == '\0')
    job = "job";
  if (strlen(job) >= sizeof(c->job) || strchr(job, '/') != NULL) {
    client_log(c, PT_LOG_ERROR, "pt: invalid job name '%s'", job);
    return PT_ECONFIG;
  }
  snprintf(c->job, sizeof(c->job), "%s", job);

  if (path == NULL || *path == '\0') {
    client_log(c, PT_LOG_ERROR,
               "pt: no SMP socket: set pt_options.socket_path or PT_SMP_SOCKET");
    return PT_ECONFIG;
  }
  c->socket_path = strdup(path);
  if (c->socket_path == NULL)
    return -ENOMEM;

  if (o->rank_set || o->rank != 0) {
    if (o->rank < 0)
      goto bad_rank;
    c->rank = (uint32_t)o->rank;
  } else {
    v = 0;
    if ((rc = env_int2("PT_RANK", "RANK", &v, &found)) != 0)
      goto bad_rank;
    c->rank = (uint32_t)v;
  }

  if (o->world > 0) {
    c->world = (uint32_t)o->world;
  } else {
    v = 1;
    rc = env_int2("PT_WORLD_SIZE", "WORLD_SIZE", &v, &found);
    if (rc != 0 || v < 1) {
      client_log(c, PT_LOG_ERROR, "pt: invalid world size in the environment");
      return PT_ECONFIG;
    }
    c->world = (uint32_t)v;
  }
  if (c->rank >= c->world) {
    client_log(c, PT_LOG_ERROR, "pt: rank %u is not below world size %u",
               c->rank, c->world);
    return PT_ECONFIG;
  }

  if (o->copy_threads > 0) {
    c->copy_threads = o->copy_threads;
  } else {
    v = 1;
    rc = env_int("PT_COPY_THREADS", &v, &found);
    if (rc != 0 || v < 1) {
      client_log(c, PT_LOG_ERROR, "pt: invalid PT_COPY_THREADS");
      return PT_ECONFIG;
    }
    c->copy_threads = v;
  }
  c->timeout_ms = o->timeout_ms > 0 ? o->timeout_ms : DEFAULT_TIMEOUT_MS;

  if (o->snapshot_timeout_ms > 0) {
    c->snap_timeout_ms = o->snapshot_timeout_ms;
  } else {
    v = DEFAULT_SNAPSHOT_TIMEOUT_MS;
    rc = env_int("PT_SNAPSHOT_TIMEOUT_MS", &v, &found);
    if (rc != 0 || v < 1) {
      client_log(c, PT_LOG_ERROR, "pt: invalid PT_SNAPSHOT_TIMEOUT_MS");
      return PT_ECONFIG;
    }
    c->snap_timeout_ms = v;
  }
  if (c->snap_timeout_ms > c->timeout_ms)
    c->snap_timeout_ms = c->timeout_ms;
  return 0;

bad_rank:
  client_log(c, PT_LOG_ERROR, "pt: invalid rank");
  return PT_ECONFIG;
}

/* True (the call must return PT_ESTATE at once) when the caller is not the
 * process that opened c: a child forked without exec inherits a copy of the
 * client whose copy engine and sealer threads do not exist in it, whose
 * locks may be held by threads of the parent, and whose connection is the
 * parent's. Such a call touches none of them: it only writes the reason
 * into this process's copy of last_error (no log callback either: the
 * application's logger may hold a lock of the parent's threads). */
static bool foreign_process(pt_client *c)
{
  pid_t me = getpid();

  if (me == c->owner_pid)
    return false;
  snprintf(c->last_error, sizeof(c->last_error),
           "pt: the client belongs to process %d: a forked child must open "
           "its own client (this is process %d)", (int)c->owner_pid, (int)me);
  return true;
}

/* ---- the connection ---- */

static bool is_conn_error(int rc)
{
  return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN ||
         rc == -ECONNREFUSED || rc == -ECONNABORTED || rc == -ENOENT;
}

/* Failures of a connection attempt that a new SMP, about to listen on the
 * socket (the node replaces a dead one within milliseconds), cures: no
 * socket file yet, no listener behind it, a full backlog, or a connection
 * that the dying SMP's listener took and reset. */
static bool is_retryable_connect(int rc)
{
  return rc == -ENOENT || rc == -ECONNREFUSED || rc == -EAGAIN ||
         rc == -ECONNRESET || rc == -EPIPE || rc == -ECONNABORTED;
}

static void conn_drop(pt_client *c)
{
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->hello_ok = false;
  c->nowed = 0;
}

/* Connects, retrying while the SMP is not listening yet, until deadline. */
static int conn_open(pt_client *c, uint64_t deadline)
{
  int rc, fd;

  for (;;) {
    rc = rpc_sock_connect_unix(c->socket_path, &fd);
    if (rc == 0)
      break;
    if (!is_retryable_connect(rc)) {
      client_log(c, PT_LOG_ERROR, "pt: cannot connect to the SMP at '%s': %s",
                 c->socket_path, pt_strerror(rc));
      return rc;
    }
    int left = ms_left(deadline);
    if (left == 0) {
      client_log(c, PT_LOG_ERROR,
                 "pt: cannot reach the SMP at '%s' within %d ms: %s",
                 c->socket_path, c->timeout_ms, pt_strerror(rc));
      return rc;
    }
    sleep_ms(left < CONNECT_RETRY_MS ? left : CONNECT_RETRY_MS);
  }
  c->fd = fd;
  c->epoch++;
  c->hello_ok = false;
  return 0;
}

/* Waits until fd has something to read (or an error to report): 0, or
 * -ETIMEDOUT when nothing came by deadline, the stream being intact. */
static int wait_readable(int fd, uint64_t deadline)
{
  for (;;) {
    struct pollfd pfd = { .fd = fd, .events = POLLIN };
    int n = poll(&pfd, 1, ms_left(deadline));
    if (n > 0)
      return 0;
    if (n == 0)
      return -ETIMEDOUT;
    if (errno != EINTR)
      return -errno;
  }
}

/* Reads the next frame, under conn_mu. OUT: *h, *m (free with
 * protobuf_c_message_free_unpacked), *intact: true when it failed with
 * -ETIMEDOUT before the frame's first byte, so that the connection can stay. */
static int conn_recv(pt_client *c, uint64_t deadline, struct rpc_hdr *h,
                     ProtobufCMessage **m, bool *intact)
{
  int rc = wait_readable(c->fd, deadline);

  *m = NULL;
  *intact = rc == -ETIMEDOUT;
  if (rc != 0)
    return rc;
  return rpc_sock_recv(c->fd, RPC_MAX_BODY_DEFAULT, deadline, h, m);
}

static bool owed_add(pt_client *c, uint64_t id, uint32_t type, uint64_t step)
{
  if (c->nowed >= OWED_MAX)
    return false;
  c->owed[c->nowed++] = (struct owed){ .id = id, .type = type, .step = step };
  return true;
}

/* Settles a frame that answers an owed request (removing it; OUT: *taken),
 * under conn_mu. A slot that a late SLOT_REPLY assigned is given back at once
 * (SEAL with ok false), as nothing will ever be copied into it. Returns 0 or
 * the error of that give-back. */
static int owed_settle(pt_client *c, const struct rpc_hdr *h,
                       const ProtobufCMessage *m, uint64_t deadline,
                       bool *taken)
{
  struct owed o;
  int i;

  *taken = false;
  for (i = 0; i < c->nowed && c->owed[i].id != h->request_id; i++)
    ;
  if (h->request_id == 0 || i == c->nowed)
    return 0;
  o = c->owed[i];
  c->owed[i] = c->owed[--c->nowed];
  *taken = true;
  if (o.type != RPC_SLOT_ACQUIRE || h->type != RPC_SLOT_REPLY)
    return 0;
  const Pt__SlotReply *r = (const Pt__SlotReply *)m;
  if (r->status != 0 || !r->has_slot || !r->has_generation)
    return 0;
  Pt__Seal back = PT__SEAL__INIT;
  uint64_t id = ++c->next_id;
  back.slot = r->slot;
  back.generation = r->generation;
  back.step = o.step;
  back.ok = false;
  int rc = rpc_sock_send(c->fd, RPC_SEAL, id, &back.base, deadline);
  if (rc == 0 && !owed_add(c, id, RPC_SEAL, o.step))
    rc = -ENOBUFS;
  client_log(c, PT_LOG_DEBUG,
             "pt: slot %u, given late for skipped step %llu, handed back",
             r->slot, (unsigned long long)o.step);
  return rc;
}

/* Reads until every owed reply has come, or deadline. */
static int owed_drain(pt_client *c, uint64_t deadline, bool *intact)
{
  *intact = true;
  while (c->nowed > 0) {
    struct rpc_hdr h;
    ProtobufCMessage *m;
    bool taken;
    int rc = conn_recv(c, deadline, &h, &m, intact);
    if (rc != 0)
      return rc;
    rc = owed_settle(c, &h, m, deadline, &taken);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != 0) {
      *intact = false;
      return rc;
    }
  }
  return 0;
}

/* The step a request is about, for owed_settle(). */
static uint64_t request_step(uint32_t type, const ProtobufCMessage *req)
{
  if (type == RPC_SLOT_ACQUIRE)
    return ((const Pt__SlotAcquire *)req)->step;
  if (type == RPC_SEAL)
    return ((const Pt__Seal *)req)->step;
  return 0;
}

/* One request and its reply on the current connection; the caller holds
 * conn_mu. Replies still owed to earlier requests are read first: while the
 * SMP has not answered those, no new request is sent. A timeout before any
 * byte of the reply keeps the connection (the reply is owed and settled
 * when it comes, which a stopped SMP's SIGCONT brings), except for HELLO;
 * every other failure closes it. OUT: *reply, freed with
 * protobuf_c_message_free_unpacked(). */
static int conn_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                     uint32_t reply_type, uint64_t deadline,
                     ProtobufCMessage **reply)
{
  bool intact = false, sent = false;
  uint64_t id = 0;
  int rc;

  *reply = NULL;
  if (c->fd < 0)
    return -ENOTCONN;
  rc = owed_drain(c, deadline, &intact);
  if (rc == 0) {
    id = ++c->next_id;
    rc = rpc_sock_send(c->fd, type, id, req, deadline);
    intact = false; /* a send cut short leaves part of a frame */
    sent = rc == 0;
  }
  while (rc == 0) {
    struct rpc_hdr h;
    ProtobufCMessage *m;
    bool taken;
    rc = conn_recv(c, deadline, &h, &m, &intact);
    if (rc != 0)
      break;
    if (h.type == RPC_EVENT) {
      protobuf_c_message_free_unpacked(m, NULL);
      continue;
    }
    if (h.request_id == id) {
      if (h.type != reply_type) {
        protobuf_c_message_free_unpacked(m, NULL);
        rc = PT_EPROTO;
        intact = false;
        break;
      }
      *reply = m;
      return 0;
    }
    rc = owed_settle(c, &h, m, deadline, &taken);
    protobuf_c_message_free_unpacked(m, NULL);
    if (rc != 0)
      intact = false;
  }
  if (rc == -ETIMEDOUT && intact && type != RPC_HELLO &&
      (!sent || owed_add(c, id, type, request_step(type, req)))) {
    client_log(c, type == RPC_SEAL ? PT_LOG_WARN : PT_LOG_DEBUG,
               "pt: %s to the SMP at '%s' timed out: the SMP has not "
               "answered %s", rpc_type_name(type), c->socket_path,
               sent ? "yet" : "an earlier request yet");
    return rc;
  }
  client_log(c, is_conn_error(rc) ? PT_LOG_WARN : PT_LOG_ERROR,
             "pt: %s to the SMP at '%s' failed: %s", rpc_type_name(type),
             c->socket_path, pt_strerror(rc));
  conn_drop(c);
  return rc;
}

/* ---- the region table and the object ---- */

static int table_freeze(pt_client *c)
{
  if (c->frozen)
    return 0;
  if (c->nregions == 0) {
    client_log(c, PT_LOG_ERROR, "pt: no region registered");
    return PT_ESTATE;
  }
  c->descs = calloc(c->nregions, sizeof(*c->descs));
  c->xfers = calloc(c->nregions, sizeof(*c->xfers));
  if (c->descs == NULL || c->xfers == NULL) {
    free(c->descs);
    free(c->xfers);
    c->descs = NULL;
    c->xfers = NULL;
    return -ENOMEM;
  }
  for (size_t i = 0; i < c->nregions; i++) {
    memcpy(c->descs[i].name, c->regions[i].name, SNAP_NAME_MAX);
    c->descs[i].bytes = c->regions[i].bytes;
    c->descs[i].kind = (uint32_t)c->regions[i].kind;
  }
  c->frozen = true;
  return 0;
}

static void store_release(pt_client *c)
{
  if (c->store == NULL)
    return;
  /* No copy may run into a mapping that goes away. */
  kern_save_wait(c->engine, -1);
  if (c->reg_base != NULL)
    kern_host_unregister(c->engine, c->reg_base);
  c->reg_base = NULL;
  snap_populate_stop(c->populate);
  c->populate = NULL;
  snap_store_close(c->store);
  c->store = NULL;
}

/* Maps the object the SMP named, unless the mapping we hold is that very
 * object (same name, size and creation time). */
static int store_attach(pt_client *c, const char *name, uint64_t bytes)
{
  struct snap_store *s;
  char err[256] = "";
  int rc;

  rc = snap_store_open(&s, name, err, sizeof(err));
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot open snapshot object '%s': %s",
               name, err[0] ? err : pt_strerror(rc));
    return rc;
  }
  if (bytes != 0 && snap_store_total_bytes(s) != bytes) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot object '%s' holds %llu bytes, the SMP said %llu",
               name, (unsigned long long)snap_store_total_bytes(s),
               (unsigned long long)bytes);
    rc = PT_EFORMAT;
    goto out_close;
  }
  if (!snap_store_regions_match(s, c->descs, (uint32_t)c->nregions)) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot object '%s' was made for another region table",
               name);
    rc = PT_EREGIONS;
    goto out_close;
  }
  if (c->store != NULL && strcmp(c->shm_name, name) == 0 &&
      snap_store_total_bytes(c->store) == snap_store_total_bytes(s) &&
      c->store_ctime == snap_store_ctime_ns(s)) {
    snap_store_close(s); /* the same object: keep the registered mapping */
    return 0;
  }
  store_release(c);
  rc = kern_host_register(c->engine, snap_store_base(s),
                          snap_store_total_bytes(s));
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot register '%s' for copying: %s",
               name, pt_strerror(rc));
    goto out_close;
  }
  c->store = s;
  c->reg_base = snap_store_base(s);
  c->store_ctime = snap_store_ctime_ns(s);
  snprintf(c->shm_name, sizeof(c->shm_name), "%s", name);
  /* A fresh mapping has empty page tables: one fault per page on the first
   * copy into each slot. Fill them in the background instead; without it
   * the copies still work, only slower. */
  rc = snap_populate_start(&c->populate, snap_store_base(s),
                           snap_store_total_bytes(s));
  if (rc != 0)
    client_log(c, PT_LOG_DEBUG, "pt: no background populating of '%s': %s",
               name, pt_strerror(rc));
  return 0;

out_close:
  snap_store_close(s);
  return rc;
}

static int hello(pt_client *c, uint64_t deadline)
{
  Pt__Hello req = PT__HELLO__INIT;
  Pt__Region *rv, **rp;
  ProtobufCMessage *m = NULL;
  uint64_t busy_until = rpc_now_ms() + BUSY_RETRY_MS;
  bool quiet_began = false; /* refusals retried: logged once (quiet_end) */
  bool waited = false;
  int rc;

  rv = calloc(c->nregions, sizeof(*rv));
  rp = calloc(c->nregions, sizeof(*rp));
  if (rv == NULL || rp == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  for (size_t i = 0; i < c->nregions; i++) {
    pt__region__init(&rv[i]);
    rv[i].name = c->regions[i].name;
    rv[i].bytes = c->regions[i].bytes;
    rv[i].kind = (uint32_t)c->regions[i].kind;
    rp[i] = &rv[i];
  }
  req.job = c->job;
  req.rank = c->rank;
  req.world = c->world;
  req.pid = (int32_t)getpid();
  /* A reconnect owes the SMP no RESTORE_QUERY: this process restored (or
   * started fresh) on its first session. */
  req.has_reconnect = c->had_hello;
  req.reconnect = c->had_hello;
  req.n_regions = c->nregions;
  req.regions = rp;

  for (;;) {
    rc = conn_call(c, RPC_HELLO, &req.base, RPC_HELLO_REPLY, deadline, &m);
    if (rc != 0)
      goto out_free;
    Pt__HelloReply *r = (Pt__HelloReply *)m;
    rc = r->status;
    if (rc == -EBUSY && rpc_now_ms() < busy_until && ms_left(deadline) > 0) {
      protobuf_c_message_free_unpacked(m, NULL);
      m = NULL;
      if (!quiet_began)
        quiet_began = quiet_begin(c);
      sleep_ms(CONNECT_RETRY_MS);
      continue;
    }
    if (rc == -EAGAIN && ms_left(deadline) > 0) {
      if (!waited)
        client_log(c, PT_LOG_INFO, "pt: the SMP asks to wait: %s",
                   r->message ? r->message : pt_strerror(rc));
      waited = true;
      protobuf_c_message_free_unpacked(m, NULL);
      m = NULL;
      int left = ms_left(deadline);
      sleep_ms(left < WAIT_RETRY_MS ? left : WAIT_RETRY_MS);
      continue;
    }
    if (rc < 0) {
      client_log(c, PT_LOG_ERROR, "pt: the SMP refused hello: %s",
                 r->message ? r->message : pt_strerror(rc));
      goto out_free;
    }
    if (r->shm_name == NULL || r->shm_name[0] == '\0') {
      client_log(c, PT_LOG_ERROR, "pt: the SMP's hello reply names no object");
      rc = PT_EPROTO;
      goto out_free;
    }
    rc = store_attach(c, r->shm_name, r->has_shm_bytes ? r->shm_bytes : 0);
    if (rc == 0) {
      c->hello_ok = c->had_hello = true;
      if (!c->had_session && r->has_committed_step)
        c->found_committed = true;
      c->had_session = true;
      if (r->has_committed_step) {
        c->has_committed = true;
        c->committed_step = r->committed_step;
      }
    }
    goto out_free;
  }

out_free:
  quiet_end(c, quiet_began);
  if (m != NULL)
    protobuf_c_message_free_unpacked(m, NULL);
  free(rp);
  free(rv);
  return rc;
}

/* A connection that has said HELLO (the table being frozen); the caller
 * holds conn_mu. */
static int session_ensure(pt_client *c, uint64_t deadline)
{
  int rc;

  if (c->fd < 0 && (rc = conn_open(c, deadline)) != 0)
    return rc;
  if (!c->hello_ok)
    return hello(c, deadline);
  return 0;
}

/* A request on a ready session, under conn_mu. When the connection turns
 * out to be dead (the SMP restarted since the last call), reconnects, says
 * HELLO again and retries, all before deadline: a new connection that breaks
 * too (reset by the listener of an SMP that was dying as it connected) is
 * retried after CONNECT_RETRY_MS, as a refused one is. Only for requests
 * that are safe to repeat: whatever a dead SMP did for a try, it undid.
 * OUT: *epoch (may be NULL), the connection that answered. */
static int session_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                        uint32_t reply_type, uint64_t deadline,
                        ProtobufCMessage **reply, uint64_t *epoch)
{
  int rc = 0;

  bool began = false;

  pthread_mutex_lock(&c->conn_mu);
  for (;;) {
    bool fresh = c->fd < 0;
    rc = session_ensure(c, deadline);
    if (rc == 0)
      rc = conn_call(c, type, req, reply_type, deadline, reply);
    if (rc == 0 || !is_conn_error(rc))
      break;
    conn_drop(c);
    int left = ms_left(deadline);
    if (left == 0)
      break;
    if (!began)
      began = quiet_begin(c);
    if (fresh)
      sleep_ms(left < CONNECT_RETRY_MS ? left : CONNECT_RETRY_MS);
  }
  quiet_end(c, began);
  if (epoch != NULL)
    *epoch = c->epoch;
  pthread_mutex_unlock(&c->conn_mu);
  return rc;
}

/* A session (connection and accepted HELLO) before deadline, retried as
 * session_call() retries. */
static int session_open(pt_client *c, uint64_t deadline)
{
  int rc;

  bool began = false;

  pthread_mutex_lock(&c->conn_mu);
  for (;;) {
    bool fresh = c->fd < 0;
    rc = session_ensure(c, deadline);
    if (rc == 0 || !is_conn_error(rc))
      break;
    conn_drop(c);
    int left = ms_left(deadline);
    if (left == 0)
      break;
    if (!began)
      began = quiet_begin(c);
    if (fresh)
      sleep_ms(left < CONNECT_RETRY_MS ? left : CONNECT_RETRY_MS);
  }
  quiet_end(c, began);
  pthread_mutex_unlock(&c->conn_mu);
  return rc;
}

/* conn_call() under conn_mu, on whatever connection is up. */
static int conn_call_locked(pt_client *c, uint32_t type,
                            const ProtobufCMessage *req, uint32_t reply_type,
                            uint64_t deadline, ProtobufCMessage **reply)
{
  int rc;

  pthread_mutex_lock(&c->conn_mu);
  rc = conn_call(c, type, req, reply_type, deadline, reply);
  pthread_mutex_unlock(&c->conn_mu);
  return rc;
}

/* ---- open / register ---- */

/* Mutexes and the condition variable, on CLOCK_MONOTONIC like every
 * deadline here. */
static int sync_init(pt_client *c)
{
  pthread_condattr_t ca;
  int rc;

  rc = -pthread_mutex_init(&c->conn_mu, NULL);
  if (rc < 0)
    return rc;
  rc = -pthread_mutex_init(&c->mu, NULL);
  if (rc < 0)
    goto out_conn_mu;
  rc = -pthread_condattr_init(&ca);
  if (rc < 0)
    goto out_mu;
  rc = -pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
  if (rc == 0)
    rc = -pthread_cond_init(&c->cv, &ca);
  pthread_condattr_destroy(&ca);
  if (rc < 0)
    goto out_mu;
  return 0;

out_mu:
  pthread_mutex_destroy(&c->mu);
out_conn_mu:
  pthread_mutex_destroy(&c->conn_mu);
  return rc;
}

static void sync_destroy(pt_client *c)
{
  pthread_cond_destroy(&c->cv);
  pthread_mutex_destroy(&c->mu);
  pthread_mutex_destroy(&c->conn_mu);
}

uint32_t pt_version(void)
{
  return PT_VERSION;
}

/* The smallest struct pt_options: the first one with a size field. */
#define OPTIONS_SIZE_MIN (offsetof(struct pt_options, log_arg) + sizeof(void *))

/* The caller's options as a whole struct of ours, fields past its size zero.
 * PT_ECONFIG for a size we cannot read. */
static int options_copy(struct pt_options *o, const struct pt_options *opts)
{
  size_t n;

  memset(o, 0, sizeof(*o));
  if (opts == NULL)
    return 0;
  n = opts->size == 0 ? sizeof(*o) : opts->size;
  if (n > sizeof(*o) || n < OPTIONS_SIZE_MIN)
    return PT_ECONFIG;
  memcpy(o, opts, n);
  o->size = sizeof(*o);
  return 0;
}

int pt_client_open(pt_client **out, const struct pt_options *user_opts)
{
  struct pt_options copy;
  const struct pt_options *opts = &copy;
  pt_client *c;
  int rc;

  if (out == NULL)
    return -EINVAL;
  *out = NULL;
  if ((rc = options_copy(&copy, user_opts)) != 0)
    return rc;
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->fd = -1;
  c->owner_pid = getpid();
  c->phase = PHASE_IDLE;
  c->log_fn = opts->log_fn;
  c->log_arg = opts->log_arg;

  rc = sync_init(c);
  if (rc != 0)
    goto out_free;
  rc = options_apply(c, opts);
  if (rc != 0)
    goto out_sync;
  rc = kern_engine_new(&c->engine, c->copy_threads);
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot start the copy engine: %s",
               pt_strerror(rc));
    goto out_sync;
  }
  pthread_mutex_lock(&c->conn_mu);
  rc = conn_open(c, deadline_after(c));
  pthread_mutex_unlock(&c->conn_mu);
  if (rc != 0)
    goto out_engine;
  client_log(c, PT_LOG_DEBUG, "pt: rank %u of %u connected to '%s' (%s backend)",
             c->rank, c->world, c->socket_path, kern_backend_name());
  *out = c;
  return 0;

out_engine:
  kern_engine_free(c->engine);
out_sync:
  sync_destroy(c);
out_free:
  free(c->socket_path);
  free(c);
  return rc;
}

/* ---- the name index ---- */

static uint64_t name_hash(const char *s)
{
  uint64_t h = 0xcbf29ce484222325ull; /* FNV-1a */

  for (; *s != '\0'; s++)
    h = (h ^ (unsigned char)*s) * 0x100000001b3ull;
  return h;
}

/* The region called name; SIZE_MAX when none. */
static size_t name_find(const pt_client *c, const char *name)
{
  if (c->names_cap == 0)
    return SIZE_MAX;
  size_t mask = c->names_cap - 1;
  for (size_t k = name_hash(name) & mask;; k = (k + 1) & mask) {
    uint32_t e = c->names[k];
    if (e == 0)
      return SIZE_MAX;
    if (strcmp(c->regions[e - 1].name, name) == 0)
      return e - 1;
  }
}

/* Adds region i (its name unique) to an index with room for it. */
static void names_put(pt_client *c, size_t i)
{
  size_t mask = c->names_cap - 1;
  size_t k = name_hash(c->regions[i].name) & mask;

  while (c->names[k] != 0)
    k = (k + 1) & mask;
  c->names[k] = (uint32_t)(i + 1);
}

/* Room in the index for n regions (at most half full). */
static int names_reserve(pt_client *c, size_t n)
{
  if (n * 2 <= c->names_cap)
    return 0;
  size_t cap = c->names_cap ? c->names_cap : 64;
  while (cap < n * 2)
    cap *= 2;
  uint32_t *t = calloc(cap, sizeof(*t));
  if (t == NULL)
    return -ENOMEM;
  free(c->names);
  c->names = t;
  c->names_cap = cap;
  for (size_t i = 0; i < c->nregions; i++)
    names_put(c, i);
  return 0;
}

/* ---- the address index ---- */

static void by_addr_insert(pt_client *c, size_t pos, size_t i)
{
  memmove(&c->by_addr[pos + 1], &c->by_addr[pos],
          (c->nregions - pos) * sizeof(*c->by_addr));
  c->by_addr[pos] = i;
}

static void by_addr_remove(pt_client *c, size_t pos)
{
  memmove(&c->by_addr[pos], &c->by_addr[pos + 1],
          (c->nregions - pos - 1) * sizeof(*c->by_addr));
}

/* Index in by_addr where a region starting at p would go. */
static size_t addr_lower_bound(const pt_client *c, uintptr_t p)
{
  size_t lo = 0, hi = c->nregions;

  while (lo < hi) {
    size_t mid = lo + (hi - lo) / 2;
    if ((uintptr_t)c->regions[c->by_addr[mid]].ptr < p)
      lo = mid + 1;
    else
      hi = mid;
  }
  return lo;
}

static bool overlaps(const struct region *r, uintptr_t p, size_t bytes)
{
  uintptr_t a = (uintptr_t)r->ptr;

  return p < a + r->bytes && a < p + bytes;
}

/* The region [p, p+bytes) would overlap, given pos = addr_lower_bound(p)
 * (regions do not overlap each other, so only the neighbours can); NULL
 * when none. */
static const struct region *overlap_at(const pt_client *c, size_t pos,
                                       uintptr_t p, size_t bytes)
{
  if (pos < c->nregions && overlaps(&c->regions[c->by_addr[pos]], p, bytes))
    return &c->regions[c->by_addr[pos]];
  if (pos > 0 && overlaps(&c->regions[c->by_addr[pos - 1]], p, bytes))
    return &c->regions[c->by_addr[pos - 1]];
  return NULL;
}

int pt_region_register(pt_client *c, const char *name, void *ptr, size_t bytes,
                       enum pt_mem kind)
{
  size_t len, pos;
  uintptr_t p = (uintptr_t)ptr;

  if (c == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  if (name == NULL || ptr == NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region name and pointer are required");
    return -EINVAL;
  }
  if (c->frozen) {
    client_log(c, PT_LOG_ERROR,
               "pt: cannot register '%s': the region table is frozen by the "
               "first snapshot or restore", name);
    return PT_ESTATE;
  }
  len = strlen(name);
  if (len == 0 || len >= SNAP_NAME_MAX) {
    client_log(c, PT_LOG_ERROR,
               "pt: region name '%s' must have 1 to %d bytes", name,
               SNAP_NAME_MAX - 1);
    return len == 0 ? -EINVAL : -ENAMETOOLONG;
  }
  if (bytes == 0 || p + bytes < p) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' has an invalid size %zu",
               name, bytes);
    return -EINVAL;
  }
  if (kind != PT_MEM_HOST && kind != PT_MEM_DEVICE) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' has an unknown kind %d", name,
               (int)kind);
    return -EINVAL;
  }
  if (kind == PT_MEM_DEVICE && !kern_backend_has_device()) {
    client_log(c, PT_LOG_ERROR,
               "pt: region '%s' is device memory, and libpt's '%s' backend "
               "copies host memory only", name, kern_backend_name());
    return PT_ENODEVICE;
  }
  if (c->nregions >= SNAP_MAX_REGIONS) {
    client_log(c, PT_LOG_ERROR, "pt: cannot register '%s': at most %d regions",
               name, SNAP_MAX_REGIONS);
    return -E2BIG;
  }
  if (name_find(c, name) != SIZE_MAX) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' is already registered", name);
    return -EEXIST;
  }
  pos = addr_lower_bound(c, p);
  const struct region *o = overlap_at(c, pos, p, bytes);
  if (o != NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' overlaps region '%s'", name,
               o->name);
    return PT_EOVERLAP;
  }
  if (names_reserve(c, c->nregions + 1) != 0)
    return -ENOMEM;

  if (c->nregions == c->cap) {
    size_t cap = c->cap ? c->cap * 2 : 8;
    struct region *r = realloc(c->regions, cap * sizeof(*r));
    if (r == NULL)
      return -ENOMEM;
    c->regions = r;
    size_t *b = realloc(c->by_addr, cap * sizeof(*b));
    if (b == NULL)
      return -ENOMEM;
    c->by_addr = b;
    c->cap = cap;
  }
  struct region *r = &c->regions[c->nregions];
  memset(r, 0, sizeof(*r));
  memcpy(r->name, name, len + 1);
  r->ptr = ptr;
  r->bytes = bytes;
  r->kind = kind;
  by_addr_insert(c, pos, c->nregions);
  names_put(c, c->nregions);
  c->nregions++;
  c->total_bytes += bytes;
  return 0;
}

int pt_region_update(pt_client *c, const char *name, void *ptr)
{
  uintptr_t p = (uintptr_t)ptr;
  size_t i, at, pos;
  bool copying;

  if (c == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  if (name == NULL || ptr == NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region name and pointer are required");
    return -EINVAL;
  }
  i = name_find(c, name);
  if (i == SIZE_MAX) {
    client_log(c, PT_LOG_ERROR, "pt: cannot update '%s': no such region",
               name);
    return -ENOENT;
  }
  struct region *r = &c->regions[i];
  if (p + r->bytes < p) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' cannot move to %p: its %zu "
               "bytes would wrap around", name, ptr, r->bytes);
    return -EINVAL;
  }
  pthread_mutex_lock(&c->mu);
  copying = c->phase == PHASE_COPYING;
  pthread_mutex_unlock(&c->mu);
  if (copying) {
    client_log(c, PT_LOG_ERROR,
               "pt: cannot update '%s': the copy of step %llu is in flight "
               "(call pt_fence first)", name, (unsigned long long)c->p_step);
    return PT_EINFLIGHT;
  }
  if (r->ptr == ptr)
    return 0;
  /* Out of the address index, checked against the others, back in. */
  at = addr_lower_bound(c, (uintptr_t)r->ptr);
  while (c->by_addr[at] != i)
    at++;
  by_addr_remove(c, at);
  c->nregions--; /* the index now holds the others only */
  pos = addr_lower_bound(c, p);
  const struct region *o = overlap_at(c, pos, p, r->bytes);
  if (o != NULL) {
    client_log(c, PT_LOG_ERROR, "pt: region '%s' cannot move to %p: it would "
               "overlap region '%s'", name, ptr, o->name);
    by_addr_insert(c, at, i);
    c->nregions++;
    return PT_EOVERLAP;
  }
  r->ptr = ptr;
  by_addr_insert(c, pos, i);
  c->nregions++;
  return 0;
}

/* ---- the sealer ---- */

/* Tells the SMP to seal the snapshot's slot (or, when its copy failed, to
 * free it) on the connection that acquired the slot, and returns the
 * snapshot's outcome. Sealer thread. */
static int seal_send(pt_client *c, uint32_t slot, uint64_t gen, uint64_t step,
                     uint64_t epoch, int copy_rc, uint64_t deadline)
{
  Pt__Seal req = PT__SEAL__INIT;
  ProtobufCMessage *m = NULL;
  int rc;

  req.slot = slot;
  req.generation = gen;
  req.step = step;
  req.ok = copy_rc == 0;
  pthread_mutex_lock(&c->conn_mu);
  if (c->fd < 0 || epoch != c->epoch) {
    rc = -ECONNRESET;
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu is lost: the connection to the SMP "
               "broke before it was sealed", (unsigned long long)step);
  } else {
    rc = conn_call(c, RPC_SEAL, &req.base, RPC_REPLY, deadline, &m);
  }
  pthread_mutex_unlock(&c->conn_mu);
  if (rc != 0)
    return rc;
  Pt__Reply *r = (Pt__Reply *)m;
  if (copy_rc != 0) {
    rc = copy_rc;
    client_log(c, PT_LOG_ERROR, "pt: copy of step %llu failed: %s",
               (unsigned long long)step, pt_strerror(copy_rc));
  } else if (r->status != 0) {
    rc = r->status;
    client_log(c, PT_LOG_ERROR, "pt: the SMP refused to seal step %llu: %s",
               (unsigned long long)step,
               r->message ? r->message : pt_strerror(rc));
  }
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* The sealer: for every snapshot posted (PHASE_COPYING), waits for its copy,
 * seals it at once and records the outcome (PHASE_DONE). Finishes the
 * snapshot in hand before it honours stop. */
static void *sealer_main(void *arg)
{
  pt_client *c = arg;
  struct sched_param sp = { .sched_priority = 0 };

  tls_sealer_of = c;
  pthread_setname_np(pthread_self(), "pt-seal");
  /* SCHED_BATCH, as the copy workers: woken by pt_snapshot(), the sealer
   * does not preempt the trainer's thread, which returns at once. */
  pthread_setschedparam(pthread_self(), SCHED_BATCH, &sp);
  int rc = kern_thread_bind(c->engine);
  if (rc != 0)
    client_log(c, PT_LOG_WARN, "pt: the sealer cannot use the copy "
               "engine's device: %s", pt_strerror(rc));

  pthread_mutex_lock(&c->mu);
  for (;;) {
    while (!c->stop && c->phase != PHASE_COPYING)
      pthread_cond_wait(&c->cv, &c->mu);
    if (c->phase != PHASE_COPYING)
      break;
    uint32_t slot = c->p_slot;
    uint64_t gen = c->p_gen, step = c->p_step, epoch = c->p_epoch;
    pthread_mutex_unlock(&c->mu);

    int copy_rc = kern_save_wait(c->engine, -1);
    uint64_t deadline = deadline_after(c);
    pthread_mutex_lock(&c->mu);
    c->phase = PHASE_SEALING;
    c->seal_deadline = deadline;
    c->seal_sent = rpc_now_ms();
    pthread_cond_broadcast(&c->cv);
    pthread_mutex_unlock(&c->mu);

    rc = seal_send(c, slot, gen, step, epoch, copy_rc, deadline);

    pthread_mutex_lock(&c->mu);
    c->seal_rc = rc;
    c->phase = PHASE_DONE;
    pthread_cond_broadcast(&c->cv);
  }
  pthread_mutex_unlock(&c->mu);
  return NULL;
}

/* Starts the sealer unless it runs. Trainer's thread. */
static int sealer_ensure(pt_client *c)
{
  sigset_t all, old;
  int rc;

  if (c->sealer_started)
    return 0;
  /* The sealer blocks every signal: handlers run in the application's
   * threads. */
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old);
  rc = -pthread_create(&c->sealer, NULL, sealer_main, c);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot start the sealer thread: %s",
               pt_strerror(rc));
    return rc;
  }
  c->sealer_started = true;
  return 0;
}

/* Lets the sealer finish the snapshot in hand, then joins it. Bounded: the
 * copy completes and the seal keeps its deadline. */
static void sealer_stop(pt_client *c)
{
  if (!c->sealer_started)
    return;
  pthread_mutex_lock(&c->mu);
  c->stop = true;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  pthread_join(c->sealer, NULL);
  c->sealer_started = false;
}

/* Collects the recorded outcome (under mu, in PHASE_DONE); the phase goes
 * back to IDLE. OUT: *abandoned, true when pt_fence() gave up on this
 * snapshot and reported and counted it already. */
static int outcome_take_locked(pt_client *c, bool *abandoned)
{
  *abandoned = c->seal_abandoned;
  c->seal_abandoned = false;
  c->phase = PHASE_IDLE;
  return c->seal_rc;
}

/* After outcome_take_locked(), with mu released: hands the sealer's messages
 * on and counts a failure. */
static void outcome_report(pt_client *c, int rc, bool abandoned)
{
  seal_msgs_flush(c);
  if (rc != 0 && !abandoned)
    c->failed++;
}

/* Waits, under mu, while the seal of a finished copy is on its way, until
 * the rpc_now_ms() time until at most. The seal keeps its own deadline;
 * SEAL_GRACE_MS past it only guards against a sealer that would not. */
static void seal_wait_locked(pt_client *c, uint64_t until)
{
  struct timespec limit;

  if (until > c->seal_deadline + SEAL_GRACE_MS)
    until = c->seal_deadline + SEAL_GRACE_MS;
  deadline_timespec(until, &limit);
  while (c->phase == PHASE_SEALING) {
    if (pthread_cond_timedwait(&c->cv, &c->mu, &limit) == ETIMEDOUT)
      break;
  }
}

/* Before a request of the trainer's own. PT_EINFLIGHT (nothing changed)
 * while the pending snapshot's copy runs. A finished copy is sealed before
 * the call goes on, as it always was: a seal on its way is waited for, until
 * the rpc_now_ms() time until at most; PT_SKIPPED when it is still on its way
 * then (the SMP does not answer). An outcome that nobody fenced is then
 * collected, logged and counted, and the call goes on (0). OUT: *busy_step,
 * the step in flight. */
static int pending_settle(pt_client *c, uint64_t *busy_step, uint64_t until)
{
  bool abandoned = false;
  bool done;
  int rc = 0;

  pthread_mutex_lock(&c->mu);
  seal_wait_locked(c, until);
  if (c->phase == PHASE_COPYING || c->phase == PHASE_SEALING) {
    rc = c->phase == PHASE_COPYING ? PT_EINFLIGHT : PT_SKIPPED;
    *busy_step = c->p_step;
    pthread_mutex_unlock(&c->mu);
    return rc;
  }
  done = c->phase == PHASE_DONE;
  if (done)
    rc = outcome_take_locked(c, &abandoned);
  pthread_mutex_unlock(&c->mu);
  if (done)
    outcome_report(c, rc, abandoned);
  return 0;
}

/* ---- snapshot ---- */

static int snapshot_fail(pt_client *c, int rc)
{
  c->failed++;
  return rc;
}

/* The SMP did not answer within snap_timeout_ms: the step is skipped, as
 * when no slot is free, and training goes on. Said once per spell. */
static int snapshot_skip_slow(pt_client *c, uint64_t step, const char *what)
{
  c->skipped++;
  c->has_last_step = true;
  c->last_step = step;
  client_log(c, c->hang_skips == 0 ? PT_LOG_WARN : PT_LOG_DEBUG,
             "pt: step %llu skipped: the SMP at '%s' has not answered %s "
             "within %d ms; training goes on, and steps are skipped while it "
             "stays so", (unsigned long long)step, c->socket_path, what,
             c->snap_timeout_ms);
  c->hang_skips++;
  return PT_SKIPPED;
}

/* Refuses a step that could never be committed: a trainer that did not ask
 * pt_restore() while a committed step exists (it would overwrite that run's
 * state with a new one from its start), or a step at or below the committed
 * one (the node commits only newer steps). */
static int snapshot_order_check(pt_client *c, uint64_t step)
{
  if (!c->has_committed)
    return 0;
  if (c->found_committed && !c->restore_called) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu refused: step %llu is committed "
               "and pt_restore() was not called; restore first, or start the "
               "job fresh", (unsigned long long)step,
               (unsigned long long)c->committed_step);
    return PT_ENORESTORE;
  }
  if (step <= c->committed_step) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu refused: step %llu is committed "
               "already, and only a newer step can be",
               (unsigned long long)step,
               (unsigned long long)c->committed_step);
    return PT_ESTEP;
  }
  return 0;
}

/* Gives a slot back that will not be written (SEAL with ok false). */
static void slot_give_back(pt_client *c, uint32_t slot, uint64_t gen,
                           uint64_t step, uint64_t deadline)
{
  Pt__Seal back = PT__SEAL__INIT;
  ProtobufCMessage *m = NULL;

  back.slot = slot;
  back.generation = gen;
  back.step = step;
  back.ok = false;
  if (conn_call_locked(c, RPC_SEAL, &back.base, RPC_REPLY, deadline, &m) == 0)
    protobuf_c_message_free_unpacked(m, NULL);
}

int pt_snapshot(pt_client *c, uint64_t step)
{
  Pt__SlotAcquire req = PT__SLOT_ACQUIRE__INIT;
  ProtobufCMessage *m = NULL;
  Pt__SlotReply *r;
  uint32_t slot;
  uint64_t gen, epoch = 0, busy_step = 0, bound, deadline;
  int rc;

  if (c == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  bound = rpc_now_ms() + (uint64_t)c->snap_timeout_ms;
  if ((rc = snapshot_order_check(c, step)) != 0)
    return snapshot_fail(c, rc);
  if (c->has_last_step && step <= c->last_step) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot step %llu does not follow step %llu",
               (unsigned long long)step, (unsigned long long)c->last_step);
    return snapshot_fail(c, -EINVAL);
  }
  rc = pending_settle(c, &busy_step, bound);
  if (rc == PT_EINFLIGHT) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu refused: the copy of step %llu is "
               "in flight (call pt_fence first)",
               (unsigned long long)step, (unsigned long long)busy_step);
    return snapshot_fail(c, PT_EINFLIGHT);
  }
  if (rc == PT_SKIPPED)
    return snapshot_skip_slow(c, step, "the seal of the previous step");
  if ((rc = table_freeze(c)) != 0)
    return snapshot_fail(c, rc);
  if ((rc = sealer_ensure(c)) != 0)
    return snapshot_fail(c, rc);

  /* Only the first HELLO, which may make the SMP create and pre-fault its
   * object, may take the whole request deadline. */
  deadline = c->had_session ? bound : deadline_after(c);
  if (!c->had_session) {
    if ((rc = session_open(c, deadline)) != 0)
      return snapshot_fail(c, rc);
    if ((rc = snapshot_order_check(c, step)) != 0)
      return snapshot_fail(c, rc);
  }
  req.step = step;
  rc = session_call(c, RPC_SLOT_ACQUIRE, &req.base, RPC_SLOT_REPLY, deadline,
                    &m, &epoch);
  if (rc == -ETIMEDOUT && c->had_session)
    return snapshot_skip_slow(c, step, "the slot request");
  if (rc != 0)
    return snapshot_fail(c, rc);
  r = (Pt__SlotReply *)m;
  rc = r->status;
  if (r->has_committed_step) {
    c->has_committed = true;
    c->committed_step = r->committed_step;
  }
  int order = snapshot_order_check(c, step);
  if (order != 0) {
    if (rc == 0 && r->has_slot && r->has_generation)
      slot_give_back(c, r->slot, r->generation, step, bound);
    protobuf_c_message_free_unpacked(m, NULL);
    return snapshot_fail(c, order);
  }
  if (c->hang_skips > 0) {
    client_log(c, PT_LOG_INFO, "pt: the SMP answers again, after %llu "
               "skipped steps", (unsigned long long)c->hang_skips);
    c->hang_skips = 0;
  }
  if (rc == PT_SKIPPED) {
    c->skipped++;
    c->has_last_step = true;
    c->last_step = step;
    protobuf_c_message_free_unpacked(m, NULL);
    return PT_SKIPPED;
  }
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP gave no slot for step %llu: %s",
               (unsigned long long)step,
               r->message ? r->message : pt_strerror(rc));
    protobuf_c_message_free_unpacked(m, NULL);
    return snapshot_fail(c, rc);
  }
  if (!r->has_slot || !r->has_generation ||
      r->slot >= snap_store_nslots(c->store)) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP's slot reply is malformed");
    protobuf_c_message_free_unpacked(m, NULL);
    pthread_mutex_lock(&c->conn_mu);
    conn_drop(c); /* its slot is freed when the connection closes */
    pthread_mutex_unlock(&c->conn_mu);
    return snapshot_fail(c, PT_EPROTO);
  }
  slot = r->slot;
  gen = r->generation;
  protobuf_c_message_free_unpacked(m, NULL);

  char *data = snap_slot_data(c->store, slot);
  uint32_t *crcs = snap_slot_crcs(c->store, slot);
  /* The blob goes in now, with its length and CRC in the table's trailer
   * (covered by the table CRC the SMP records at seal): at most PT_BLOB_MAX
   * bytes, so a copy here costs microseconds and frees the caller's buffer
   * at once. */
  uint8_t *blob_dst = snap_slot_blob(c->store, slot);
  uint32_t nblocks = snap_store_nblocks(c->store);
  if (c->blob_len > 0)
    memcpy(blob_dst, c->blob, c->blob_len);
  crcs[nblocks] = (uint32_t)c->blob_len;
  crcs[nblocks + 1] = kern_crc32c(blob_dst, c->blob_len);
  /* This slot's pages first: the populating runs ahead of the copy. */
  snap_populate_hint(c->populate, data, snap_store_slot_bytes(c->store));
  for (size_t i = 0; i < c->nregions; i++) {
    const struct snap_region *sr = snap_store_region(c->store, (uint32_t)i);
    c->xfers[i] = (struct kern_xfer){
      .dst = data + sr->offset,
      .src = c->regions[i].ptr,
      .bytes = c->regions[i].bytes,
      .crcs = crcs + sr->first_block,
      .src_mem = c->regions[i].kind == PT_MEM_DEVICE ? KERN_MEM_DEVICE
                                                      : KERN_MEM_HOST,
      .dst_mem = KERN_MEM_HOST,
    };
  }
  rc = kern_save_start(c->engine, c->xfers, c->nregions, true);
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot start the copy of step %llu: %s",
               (unsigned long long)step, pt_strerror(rc));
    slot_give_back(c, slot, gen, step, rpc_now_ms() + c->snap_timeout_ms);
    return snapshot_fail(c, rc);
  }
  /* The sealer takes it from here. */
  pthread_mutex_lock(&c->mu);
  c->p_slot = slot;
  c->p_gen = gen;
  c->p_step = step;
  c->p_epoch = epoch;
  c->phase = PHASE_COPYING;
  pthread_cond_broadcast(&c->cv);
  pthread_mutex_unlock(&c->mu);
  c->has_last_step = true;
  c->last_step = step;
  c->started++;
  return 0;
}

int pt_fence(pt_client *c)
{
  bool abandoned, first;
  uint64_t step, until;
  int rc;

  if (c == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  pthread_mutex_lock(&c->mu);
  /* The copy always completes: the engine finishes what it started. */
  while (c->phase == PHASE_COPYING)
    pthread_cond_wait(&c->cv, &c->mu);
  if (c->phase == PHASE_SEALING && c->seal_abandoned) {
    /* An earlier pt_fence() reported it already. */
    pthread_mutex_unlock(&c->mu);
    return PT_OK;
  }
  /* Training does not wait for protection: the seal's answer is waited for
   * snap_timeout_ms past the copy's end (or this call) at most. */
  until = rpc_now_ms();
  if (c->phase == PHASE_SEALING && c->seal_sent > until)
    until = c->seal_sent;
  seal_wait_locked(c, until + (uint64_t)c->snap_timeout_ms);
  switch (c->phase) {
  case PHASE_SEALING:
    first = !c->seal_abandoned;
    c->seal_abandoned = true;
    step = c->p_step;
    pthread_mutex_unlock(&c->mu);
    client_log(c, PT_LOG_ERROR,
               "pt: the SMP at '%s' has not answered the SEAL of step %llu "
               "within %d ms; counted as failed", c->socket_path,
               (unsigned long long)step, c->snap_timeout_ms);
    if (first)
      c->failed++;
    return -ETIMEDOUT;
  case PHASE_DONE:
    rc = outcome_take_locked(c, &abandoned);
    pthread_mutex_unlock(&c->mu);
    outcome_report(c, rc, abandoned);
    return abandoned ? PT_OK : rc;
  default:
    pthread_mutex_unlock(&c->mu);
    return PT_OK;
  }
}

/* ---- restore ---- */

static bool slot_is_readable(uint32_t state)
{
  return state == SNAP_SEALED || state == SNAP_PROTECTED ||
         state == SNAP_COMMITTED;
}

int pt_restore(pt_client *c, uint64_t *step)
{
  Pt__RestoreQuery req = PT__RESTORE_QUERY__INIT;
  ProtobufCMessage *m = NULL;
  Pt__RestoreReply *r;
  struct snap_slot_info info;
  uint32_t slot;
  uint64_t gen, s, busy_step = 0;
  size_t bad_x = 0, bad_b = 0;
  int rc;

  if (c == NULL || step == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  if (pending_settle(c, &busy_step, UINT64_MAX) != 0) {
    client_log(c, PT_LOG_ERROR,
               "pt: restore refused: the copy of step %llu is in flight "
               "(call pt_fence first)", (unsigned long long)busy_step);
    return PT_EINFLIGHT;
  }
  if ((rc = table_freeze(c)) != 0)
    return rc;

  rc = session_call(c, RPC_RESTORE_QUERY, &req.base, RPC_RESTORE_REPLY,
                    deadline_after(c), &m, NULL);
  if (rc != 0)
    return rc;
  r = (Pt__RestoreReply *)m;
  rc = r->status;
  if (rc == PT_ENOSNAP) {
    client_log(c, PT_LOG_INFO, "pt: no snapshot to restore: a fresh start");
    c->restore_called = true;
    c->has_committed = false; /* the node chose a fresh start */
    goto out_free;
  }
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP cannot name a step to restore: %s",
               r->message ? r->message : pt_strerror(rc));
    goto out_free;
  }
  if (!r->has_slot || !r->has_generation || !r->has_step ||
      r->slot >= snap_store_nslots(c->store)) {
    client_log(c, PT_LOG_ERROR, "pt: the SMP's restore reply is malformed");
    rc = PT_EPROTO;
    goto out_free;
  }
  slot = r->slot;
  gen = r->generation;
  s = r->step;

  snap_slot_get(c->store, slot, &info);
  if (!info.record_ok) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u of '%s' fails its record checksum (its step, "
               "generation or state was changed): step %llu is not restored",
               slot, c->shm_name, (unsigned long long)s);
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  if (!slot_is_readable(info.state) || info.generation != gen ||
      info.step != s) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u no longer holds step %llu (state %s, step %llu)",
               slot, (unsigned long long)s, snap_state_name(info.state),
               (unsigned long long)info.step);
    rc = PT_ESTALE;
    goto out_free;
  }
  const char *data = snap_slot_data(c->store, slot);
  uint32_t *crcs = snap_slot_crcs(c->store, slot);
  snap_populate_hint(c->populate, data, snap_store_slot_bytes(c->store));
  for (size_t i = 0; i < c->nregions; i++) {
    const struct snap_region *sr = snap_store_region(c->store, (uint32_t)i);
    c->xfers[i] = (struct kern_xfer){
      .dst = c->regions[i].ptr,
      .src = data + sr->offset,
      .bytes = c->regions[i].bytes,
      .crcs = crcs + sr->first_block,
      .src_mem = KERN_MEM_HOST,
      .dst_mem = c->regions[i].kind == PT_MEM_DEVICE ? KERN_MEM_DEVICE
                                                      : KERN_MEM_HOST,
    };
  }
  c->rblob_ok = false; /* whatever a failure leaves, it is no blob */
  rc = kern_restore(c->engine, c->xfers, c->nregions, &bad_x, &bad_b);
  if (rc == PT_ECHECKSUM) {
    client_log(c, PT_LOG_ERROR,
               "pt: step %llu is damaged: region '%s' block %zu fails its "
               "checksum; the regions must not be used",
               (unsigned long long)s,
               bad_x < c->nregions ? c->regions[bad_x].name : "?", bad_b);
    goto out_free;
  }
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: restore of step %llu failed: %s",
               (unsigned long long)s, pt_strerror(rc));
    goto out_free;
  }
  /* The blob, into a private buffer first, then checked there. */
  if (info.blob_bytes > snap_store_blob_max(c->store)) {
    client_log(c, PT_LOG_ERROR,
               "pt: step %llu records a blob of %u bytes, more than %u",
               (unsigned long long)s, info.blob_bytes,
               snap_store_blob_max(c->store));
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  if (c->rblob == NULL && (c->rblob = malloc(PT_BLOB_MAX)) == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  memcpy(c->rblob, snap_slot_blob(c->store, slot), info.blob_bytes);
  if (kern_crc32c(c->rblob, info.blob_bytes) != info.blob_crc) {
    client_log(c, PT_LOG_ERROR,
               "pt: step %llu is damaged: its blob of %u bytes fails its "
               "checksum; the regions must not be used",
               (unsigned long long)s, info.blob_bytes);
    c->rblob_ok = false;
    rc = PT_ECHECKSUM;
    goto out_free;
  }
  /* The slot must still be the one we read: a writer reusing it meanwhile
   * would have changed its generation. */
  snap_slot_get(c->store, slot, &info);
  if (!info.record_ok || !slot_is_readable(info.state) ||
      info.generation != gen) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u was reassigned while step %llu was read",
               slot, (unsigned long long)s);
    rc = PT_ESTALE;
    goto out_free;
  }
  *step = s;
  c->restore_called = true;
  c->rblob_len = info.blob_bytes;
  c->rblob_ok = true;
  /* The restored blob is also the one the next snapshots store, until
   * pt_blob_set() replaces it. */
  if (c->blob == NULL && (c->blob = malloc(PT_BLOB_MAX)) == NULL) {
    rc = -ENOMEM;
    goto out_free;
  }
  memcpy(c->blob, c->rblob, c->rblob_len);
  c->blob_len = c->rblob_len;
  c->has_last_step = true;
  c->last_step = s;
  c->has_committed = true;
  c->committed_step = s;
  client_log(c, PT_LOG_INFO, "pt: restored step %llu from '%s' slot %u",
             (unsigned long long)s, c->shm_name, slot);

out_free:
  protobuf_c_message_free_unpacked(m, NULL);
  return rc;
}

/* ---- the blob ---- */

int pt_blob_set(pt_client *c, const void *data, size_t len)
{
  if (c == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  if (data == NULL && len > 0) {
    client_log(c, PT_LOG_ERROR, "pt: blob of %zu bytes without data", len);
    return -EINVAL;
  }
  if (len > PT_BLOB_MAX) {
    client_log(c, PT_LOG_ERROR, "pt: blob of %zu bytes: at most %zu allowed",
               len, (size_t)PT_BLOB_MAX);
    return PT_ETOOBIG;
  }
  if (len > 0 && c->blob == NULL && (c->blob = malloc(PT_BLOB_MAX)) == NULL)
    return -ENOMEM;
  if (len > 0)
    memcpy(c->blob, data, len);
  c->blob_len = len;
  return PT_OK;
}

int pt_blob_get(pt_client *c, void *buf, size_t cap, size_t *len)
{
  if (c == NULL || len == NULL || (buf == NULL && cap > 0))
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  if (!c->rblob_ok) {
    *len = 0;
    return PT_ENOSNAP;
  }
  *len = c->rblob_len;
  if (cap < c->rblob_len)
    return -ENOBUFS;
  if (c->rblob_len > 0)
    memcpy(buf, c->rblob, c->rblob_len);
  return PT_OK;
}

/* ---- status / close ---- */

int pt_status_get(pt_client *c, struct pt_status *st)
{
  if (c == NULL || st == NULL)
    return -EINVAL;
  if (foreign_process(c))
    return PT_ESTATE;
  memset(st, 0, sizeof(*st));
  st->rank = c->rank;
  st->world = c->world;
  st->regions = c->nregions;
  st->bytes = c->total_bytes;
  st->snapshots_started = c->started;
  st->snapshots_skipped = c->skipped;
  st->snapshots_failed = c->failed;
  st->has_committed = c->has_committed;
  st->committed_step = c->committed_step;
  pthread_mutex_lock(&c->mu);
  st->in_flight = c->phase != PHASE_IDLE && !c->seal_abandoned;
  pthread_mutex_unlock(&c->mu);
  st->backend = kern_backend_name();
  return 0;
}

const char *pt_last_error(pt_client *c)
{
  return c != NULL ? c->last_error : "";
}

void pt_client_close(pt_client *c, bool done)
{
  bool abandoned = false, done_late;
  int rc = 0;

  if (c == NULL)
    return;
  /* A forked child's copy: the threads, the locks and the connection are
   * the parent's, which goes on using them; nothing is released here (the
   * child's copy of the memory goes with the child). */
  if (foreign_process(c))
    return;
  pt_fence(c);
  sealer_stop(c);
  /* A seal that pt_fence() gave up on has ended by now: the sealer is gone. */
  pthread_mutex_lock(&c->mu);
  done_late = c->phase == PHASE_DONE;
  if (done_late)
    rc = outcome_take_locked(c, &abandoned);
  pthread_mutex_unlock(&c->mu);
  if (done_late)
    outcome_report(c, rc, abandoned);

  pthread_mutex_lock(&c->conn_mu);
  if (c->fd >= 0) {
    Pt__Bye req = PT__BYE__INIT;
    ProtobufCMessage *m = NULL;
    req.done = done;
    if (conn_call(c, RPC_BYE, &req.base, RPC_REPLY, deadline_after(c), &m) == 0)
      protobuf_c_message_free_unpacked(m, NULL);
  }
  conn_drop(c);
  pthread_mutex_unlock(&c->conn_mu);
  store_release(c);
  kern_engine_free(c->engine);
  free(c->blob);
  free(c->rblob);
  free(c->xfers);
  free(c->descs);
  free(c->by_addr);
  free(c->names);
  free(c->regions);
  free(c->socket_path);
  sync_destroy(c);
  free(c);
}
