/*
 * pt_client.c — libpt: the trainer's side of pt (the contract is client/pt.h).
 *
 * A client holds one blocking Unix-socket connection to its rank's SMP, the
 * region table the trainer registered, a copy engine (kernels/kernels.h) and,
 * once the table is frozen, a read-write mapping of the SMP's shm object.
 *
 * Invariants kept here:
 *   - No event loop and no threads of our own: the only threads are the copy
 *     engine's. Every exchange with the SMP is one request and one reply with a
 *     deadline (timeout_ms), so pt_snapshot() blocks for one round trip plus
 *     handing the copy to the engine.
 *   - The region table is frozen by the first pt_snapshot() or pt_restore():
 *     that call sends HELLO, maps the object the SMP names and checks that its
 *     region table equals ours.
 *   - At most one snapshot is "pending": acquired from the SMP, its copy
 *     started, not yet sealed. It is sealed by pt_fence(), by the next
 *     pt_snapshot() / pt_restore() once the copy has finished, or by
 *     pt_client_close().
 *   - A broken connection (the SMP died or restarted) is closed and forgotten;
 *     the next call reconnects and says HELLO again within its own deadline.
 *     A snapshot whose connection broke before its seal is reported as failed:
 *     the SMP freed its slot. Nothing here is ever fatal to the trainer.
 *   - libpt never prints: messages go to the application's log callback, and
 *     the last failure's text is kept for pt_last_error().
 */
#include <errno.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pt.h"
#include "kernels/kernels.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"

#define DEFAULT_TIMEOUT_MS 10000
#define CONNECT_RETRY_MS 20
/* How long a HELLO answered -EBUSY is retried: the SMP may not yet have seen
 * the close of this trainer's previous connection. */
#define BUSY_RETRY_MS 1000
/* Offset of the creation time in the object header (snap_store.h layout). */
#define SNAP_OFF_CTIME 176

struct region {
  char name[SNAP_NAME_MAX];
  void *ptr;
  size_t bytes;
  int kind; /* enum pt_mem */
};

struct pt_client {
  /* configuration */
  char *socket_path;
  char job[SNAP_JOB_MAX];
  uint32_t rank, world;
  int copy_threads;
  int timeout_ms;
  pt_log_fn log_fn;
  void *log_arg;
  char last_error[512];

  /* connection to the SMP */
  int fd;          /* -1: disconnected */
  uint64_t epoch;  /* incremented at every connect */
  bool hello_ok;   /* HELLO accepted on the current connection */

  /* region table, in registration order, plus an index sorted by address */
  struct region *regions;
  size_t *by_addr;
  size_t nregions, cap;
  uint64_t total_bytes;
  bool frozen;
  struct snap_region_desc *descs;
  struct kern_xfer *xfers;

  /* copy engine and the mapped object */
  struct kern_engine *engine;
  struct snap_store *store;
  void *reg_base; /* registered with the engine */
  uint64_t store_ctime;
  char shm_name[256];

  /* the pending snapshot */
  bool pending;
  uint32_t p_slot;
  uint64_t p_gen, p_step, p_epoch;

  bool has_last_step;
  uint64_t last_step;

  uint64_t started, skipped, failed;
  bool has_committed;
  uint64_t committed_step;
};

/* ---- messages ---- */

static void client_log(pt_client *c, int level, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));

static void client_log(pt_client *c, int level, const char *fmt, ...)
{
  char msg[sizeof(c->last_error)];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (level <= PT_LOG_WARN)
    memcpy(c->last_error, msg, sizeof(msg));
  if (c->log_fn != NULL)
    c->log_fn(c->log_arg, level, msg);
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
  return 0;

bad_rank:
  client_log(c, PT_LOG_ERROR, "pt: invalid rank");
  return PT_ECONFIG;
}

/* ---- the connection ---- */

static bool is_conn_error(int rc)
{
  return rc == -ECONNRESET || rc == -EPIPE || rc == -ENOTCONN ||
         rc == -ECONNREFUSED || rc == -ECONNABORTED || rc == -ENOENT;
}

static void conn_drop(pt_client *c)
{
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->hello_ok = false;
}

/* Connects, retrying while the SMP is not listening yet, until deadline. */
static int conn_open(pt_client *c, uint64_t deadline)
{
  int rc, fd;

  for (;;) {
    rc = rpc_sock_connect_unix(c->socket_path, &fd);
    if (rc == 0)
      break;
    if (rc != -ENOENT && rc != -ECONNREFUSED && rc != -EAGAIN) {
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

/* One request and its reply on the current connection. A transport failure
 * closes the connection. OUT: *reply, freed with
 * protobuf_c_message_free_unpacked(). */
static int conn_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                     uint32_t reply_type, uint64_t deadline,
                     ProtobufCMessage **reply)
{
  int left = ms_left(deadline);
  int rc;

  *reply = NULL;
  if (c->fd < 0)
    return -ENOTCONN;
  if (left == 0)
    rc = -ETIMEDOUT;
  else
    rc = rpc_sock_call(c->fd, type, req, reply_type, left, reply);
  if (rc != 0) {
    client_log(c, is_conn_error(rc) ? PT_LOG_WARN : PT_LOG_ERROR,
               "pt: %s to the SMP at '%s' failed: %s", rpc_type_name(type),
               c->socket_path, pt_strerror(rc));
    conn_drop(c);
  }
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

static uint64_t store_ctime(const struct snap_store *s)
{
  uint64_t t;

  memcpy(&t, (const char *)snap_store_base(s) + SNAP_OFF_CTIME, sizeof(t));
  return t;
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
      c->store_ctime == store_ctime(s)) {
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
  c->store_ctime = store_ctime(s);
  snprintf(c->shm_name, sizeof(c->shm_name), "%s", name);
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
      sleep_ms(CONNECT_RETRY_MS);
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
    if (rc == 0)
      c->hello_ok = true;
    goto out_free;
  }

out_free:
  if (m != NULL)
    protobuf_c_message_free_unpacked(m, NULL);
  free(rp);
  free(rv);
  return rc;
}

/* A connection that has said HELLO (the table being frozen). */
static int session_ensure(pt_client *c, uint64_t deadline)
{
  int rc;

  if (c->fd < 0 && (rc = conn_open(c, deadline)) != 0)
    return rc;
  if (!c->hello_ok)
    return hello(c, deadline);
  return 0;
}

/* A request on a ready session. When the connection turns out to be dead
 * (the SMP restarted since the last call), reconnects, says HELLO again and
 * retries once, all before deadline. Only for requests that are safe to
 * repeat: whatever the dead SMP did for the first try, it undid. */
static int session_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                        uint32_t reply_type, uint64_t deadline,
                        ProtobufCMessage **reply)
{
  int rc = 0;

  for (int attempt = 0; attempt < 2; attempt++) {
    bool fresh = c->fd < 0;
    rc = session_ensure(c, deadline);
    if (rc == 0)
      rc = conn_call(c, type, req, reply_type, deadline, reply);
    if (rc == 0 || fresh || !is_conn_error(rc))
      return rc;
    conn_drop(c);
  }
  return rc;
}

/* ---- open / register ---- */

int pt_client_open(pt_client **out, const struct pt_options *opts)
{
  struct pt_options none = { 0 };
  pt_client *c;
  int rc;

  if (out == NULL)
    return -EINVAL;
  *out = NULL;
  c = calloc(1, sizeof(*c));
  if (c == NULL)
    return -ENOMEM;
  c->fd = -1;
  if (opts == NULL)
    opts = &none;
  c->log_fn = opts->log_fn;
  c->log_arg = opts->log_arg;

  rc = options_apply(c, opts);
  if (rc != 0)
    goto out_free;
  rc = kern_engine_new(&c->engine, c->copy_threads);
  if (rc != 0) {
    client_log(c, PT_LOG_ERROR, "pt: cannot start the copy engine: %s",
               pt_strerror(rc));
    goto out_free;
  }
  rc = conn_open(c, deadline_after(c));
  if (rc != 0)
    goto out_engine;
  client_log(c, PT_LOG_DEBUG, "pt: rank %u of %u connected to '%s' (%s backend)",
             c->rank, c->world, c->socket_path, kern_backend_name());
  *out = c;
  return 0;

out_engine:
  kern_engine_free(c->engine);
out_free:
  free(c->socket_path);
  free(c);
  return rc;
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

int pt_region_register(pt_client *c, const char *name, void *ptr, size_t bytes,
                       enum pt_mem kind)
{
  size_t len, pos;
  uintptr_t p = (uintptr_t)ptr;

  if (c == NULL)
    return -EINVAL;
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
  for (size_t i = 0; i < c->nregions; i++) {
    if (strcmp(c->regions[i].name, name) == 0) {
      client_log(c, PT_LOG_ERROR, "pt: region '%s' is already registered",
                 name);
      return -EEXIST;
    }
  }
  pos = addr_lower_bound(c, p);
  if ((pos < c->nregions && overlaps(&c->regions[c->by_addr[pos]], p, bytes)) ||
      (pos > 0 && overlaps(&c->regions[c->by_addr[pos - 1]], p, bytes))) {
    const struct region *o =
        pos < c->nregions && overlaps(&c->regions[c->by_addr[pos]], p, bytes)
            ? &c->regions[c->by_addr[pos]]
            : &c->regions[c->by_addr[pos - 1]];
    client_log(c, PT_LOG_ERROR, "pt: region '%s' overlaps region '%s'", name,
               o->name);
    return PT_EOVERLAP;
  }

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
  memmove(&c->by_addr[pos + 1], &c->by_addr[pos],
          (c->nregions - pos) * sizeof(*c->by_addr));
  c->by_addr[pos] = c->nregions;
  c->nregions++;
  c->total_bytes += bytes;
  return 0;
}

/* ---- snapshot ---- */

/* Waits for the pending copy, then tells the SMP to seal (or, when the copy
 * failed, to free) its slot. Returns the snapshot's outcome. */
static int pending_seal(pt_client *c)
{
  Pt__Seal req = PT__SEAL__INIT;
  ProtobufCMessage *m = NULL;
  int copy_rc, rc;

  if (!c->pending)
    return 0;
  copy_rc = kern_save_wait(c->engine, -1);
  c->pending = false;
  if (c->fd < 0 || c->p_epoch != c->epoch) {
    rc = -ECONNRESET;
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot of step %llu is lost: the connection to the SMP "
               "broke before it was sealed", (unsigned long long)c->p_step);
    goto out_failed;
  }
  req.slot = c->p_slot;
  req.generation = c->p_gen;
  req.step = c->p_step;
  req.ok = copy_rc == 0;
  rc = conn_call(c, RPC_SEAL, &req.base, RPC_REPLY, deadline_after(c), &m);
  if (rc != 0)
    goto out_failed;
  Pt__Reply *r = (Pt__Reply *)m;
  if (copy_rc != 0) {
    rc = copy_rc;
    client_log(c, PT_LOG_ERROR, "pt: copy of step %llu failed: %s",
               (unsigned long long)c->p_step, pt_strerror(copy_rc));
  } else if (r->status != 0) {
    rc = r->status;
    client_log(c, PT_LOG_ERROR, "pt: the SMP refused to seal step %llu: %s",
               (unsigned long long)c->p_step,
               r->message ? r->message : pt_strerror(rc));
  }
  protobuf_c_message_free_unpacked(m, NULL);
  if (rc != 0)
    goto out_failed;
  return 0;

out_failed:
  c->failed++;
  return rc;
}

static int snapshot_fail(pt_client *c, int rc)
{
  c->failed++;
  return rc;
}

int pt_snapshot(pt_client *c, uint64_t step)
{
  Pt__SlotAcquire req = PT__SLOT_ACQUIRE__INIT;
  ProtobufCMessage *m = NULL;
  Pt__SlotReply *r;
  uint32_t slot;
  uint64_t gen;
  int rc;

  if (c == NULL)
    return -EINVAL;
  if (c->pending) {
    if (kern_save_is_busy(c->engine)) {
      client_log(c, PT_LOG_ERROR,
                 "pt: snapshot of step %llu refused: the copy of step %llu is "
                 "in flight (call pt_fence first)", (unsigned long long)step,
                 (unsigned long long)c->p_step);
      return snapshot_fail(c, PT_EINFLIGHT);
    }
    pending_seal(c); /* its failure is counted and logged; go on */
  }
  if (c->has_last_step && step <= c->last_step) {
    client_log(c, PT_LOG_ERROR,
               "pt: snapshot step %llu does not follow step %llu",
               (unsigned long long)step, (unsigned long long)c->last_step);
    return snapshot_fail(c, -EINVAL);
  }
  if ((rc = table_freeze(c)) != 0)
    return snapshot_fail(c, rc);

  req.step = step;
  rc = session_call(c, RPC_SLOT_ACQUIRE, &req.base, RPC_SLOT_REPLY,
                    deadline_after(c), &m);
  if (rc != 0)
    return snapshot_fail(c, rc);
  r = (Pt__SlotReply *)m;
  rc = r->status;
  if (r->has_committed_step) {
    c->has_committed = true;
    c->committed_step = r->committed_step;
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
    conn_drop(c); /* its slot is freed when the connection closes */
    return snapshot_fail(c, PT_EPROTO);
  }
  slot = r->slot;
  gen = r->generation;
  protobuf_c_message_free_unpacked(m, NULL);

  char *data = snap_slot_data(c->store, slot);
  uint32_t *crcs = snap_slot_crcs(c->store, slot);
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
    Pt__Seal abort_req = PT__SEAL__INIT;
    client_log(c, PT_LOG_ERROR, "pt: cannot start the copy of step %llu: %s",
               (unsigned long long)step, pt_strerror(rc));
    abort_req.slot = slot;
    abort_req.generation = gen;
    abort_req.step = step;
    abort_req.ok = false;
    if (conn_call(c, RPC_SEAL, &abort_req.base, RPC_REPLY, deadline_after(c),
                  &m) == 0)
      protobuf_c_message_free_unpacked(m, NULL);
    return snapshot_fail(c, rc);
  }
  c->pending = true;
  c->p_slot = slot;
  c->p_gen = gen;
  c->p_step = step;
  c->p_epoch = c->epoch;
  c->has_last_step = true;
  c->last_step = step;
  c->started++;
  return 0;
}

int pt_fence(pt_client *c)
{
  if (c == NULL)
    return -EINVAL;
  return pending_seal(c);
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
  uint64_t gen, s;
  size_t bad_x = 0, bad_b = 0;
  int rc;

  if (c == NULL || step == NULL)
    return -EINVAL;
  if (c->pending) {
    if (kern_save_is_busy(c->engine)) {
      client_log(c, PT_LOG_ERROR,
                 "pt: restore refused: the copy of step %llu is in flight "
                 "(call pt_fence first)", (unsigned long long)c->p_step);
      return PT_EINFLIGHT;
    }
    pending_seal(c);
  }
  if ((rc = table_freeze(c)) != 0)
    return rc;

  rc = session_call(c, RPC_RESTORE_QUERY, &req.base, RPC_RESTORE_REPLY,
                    deadline_after(c), &m);
  if (rc != 0)
    return rc;
  r = (Pt__RestoreReply *)m;
  rc = r->status;
  if (rc == PT_ENOSNAP) {
    client_log(c, PT_LOG_INFO, "pt: no snapshot to restore: a fresh start");
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
  /* The slot must still be the one we read: a writer reusing it meanwhile
   * would have changed its generation. */
  snap_slot_get(c->store, slot, &info);
  if (!slot_is_readable(info.state) || info.generation != gen) {
    client_log(c, PT_LOG_ERROR,
               "pt: slot %u was reassigned while step %llu was read",
               slot, (unsigned long long)s);
    rc = PT_ESTALE;
    goto out_free;
  }
  *step = s;
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

/* ---- status / close ---- */

int pt_status_get(pt_client *c, struct pt_status *st)
{
  if (c == NULL || st == NULL)
    return -EINVAL;
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
  st->in_flight = c->pending;
  st->backend = kern_backend_name();
  return 0;
}

const char *pt_last_error(pt_client *c)
{
  return c != NULL ? c->last_error : "";
}

void pt_client_close(pt_client *c, bool done)
{
  if (c == NULL)
    return;
  pending_seal(c);
  if (c->fd >= 0) {
    Pt__Bye req = PT__BYE__INIT;
    ProtobufCMessage *m = NULL;
    req.done = done;
    if (conn_call(c, RPC_BYE, &req.base, RPC_REPLY, deadline_after(c), &m) == 0)
      protobuf_c_message_free_unpacked(m, NULL);
  }
  conn_drop(c);
  store_release(c);
  kern_engine_free(c->engine);
  free(c->xfers);
  free(c->descs);
  free(c->by_addr);
  free(c->regions);
  free(c->socket_path);
  free(c);
}
