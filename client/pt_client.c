/*
 * pt_client.c — libpt: the trainer's side of pt (the contract is
 * client/pt.h). This file reads the options, opens a client and closes it,
 * and reports its status; struct pt_client, the invariants the client keeps
 * and the map of its other files are in pt_client_internal.h.
 */
#include <errno.h>
#include <limits.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt_client_internal.h"

#define DEFAULT_TIMEOUT_MS 10000
/* How long pt_snapshot() (and pt_fence(), for a seal) waits on the SMP. */
#define DEFAULT_SNAPSHOT_TIMEOUT_MS 100

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

/* *out: the option when set (> 0), else $name, else def; $name must be a
 * whole number of at least 1. */
static int opt_or_env(pt_client *c, int given, const char *name, int def,
                      int *out)
{
  bool found;
  int v = def;

  if (given > 0) {
    *out = given;
    return 0;
  }
  if (env_int(name, &v, &found) != 0 || v < 1) {
    client_log(c, PT_LOG_ERROR, "pt: invalid %s", name);
    return PT_ECONFIG;
  }
  *out = v;
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

  if ((rc = opt_or_env(c, o->copy_threads, "PT_COPY_THREADS", 1,
                       &c->copy_threads)) != 0 ||
      (rc = opt_or_env(c, o->timeout_ms, "PT_TIMEOUT_MS", DEFAULT_TIMEOUT_MS,
                       &c->timeout_ms)) != 0 ||
      (rc = opt_or_env(c, o->snapshot_timeout_ms, "PT_SNAPSHOT_TIMEOUT_MS",
                       DEFAULT_SNAPSHOT_TIMEOUT_MS, &c->snap_timeout_ms)) != 0)
    return rc;
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
bool client_foreign_process(pt_client *c)
{
  pid_t me = getpid();

  if (me == c->owner_pid)
    return false;
  snprintf(c->last_error, sizeof(c->last_error),
           "pt: the client belongs to process %d: a forked child must open "
           "its own client (this is process %d)", (int)c->owner_pid, (int)me);
  return true;
}

/* ---- open ---- */

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
  c->recover_in_place = opts->recover_in_place;

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
  rc = client_conn_open(c, client_deadline_after(c));
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

/* ---- status / close ---- */

int pt_status_get(pt_client *c, struct pt_status *st)
{
  if (c == NULL || st == NULL)
    return -EINVAL;
  if (client_foreign_process(c))
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
  if (client_foreign_process(c))
    return;
  pt_fence(c);
  client_sealer_stop(c);
  /* A seal that pt_fence() gave up on has ended by now: the sealer is gone. */
  pthread_mutex_lock(&c->mu);
  done_late = c->phase == PHASE_DONE;
  if (done_late)
    rc = client_outcome_take_locked(c, &abandoned);
  pthread_mutex_unlock(&c->mu);
  if (done_late)
    client_outcome_report(c, rc, abandoned);

  pthread_mutex_lock(&c->conn_mu);
  if (c->fd >= 0) {
    Pt__Bye req = PT__BYE__INIT;
    ProtobufCMessage *m = NULL;
    req.done = done;
    if (client_conn_call(c, RPC_BYE, &req.base, RPC_REPLY, client_deadline_after(c), &m) == 0)
      protobuf_c_message_free_unpacked(m, NULL);
  }
  client_conn_drop(c);
  pthread_mutex_unlock(&c->conn_mu);
  client_store_release(c);
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
