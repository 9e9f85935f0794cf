/*
 * pt_client_conn.c — libpt: the client's messages (the application's log
 * callback and pt_last_error()), its deadlines, and its one connection to
 * the SMP: requests and their replies, replies still owed, and the session
 * (a connection whose HELLO was accepted), reopened when the SMP restarts.
 * See pt_client_internal.h for the invariants.
 */
#include <errno.h>
#include <limits.h>
#include <poll.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include "pt_client_internal.h"

#define CONNECT_RETRY_MS 20
/* How long a HELLO answered -EBUSY is retried: the SMP may not yet have seen
 * the close of this trainer's previous connection. */
#define BUSY_RETRY_MS 1000
/* A HELLO answered -EAGAIN (the SMP waits for its node to say which trainer
 * it started, or its object changed under it) is asked again after
 * WAIT_RETRY_FIRST_MS, then twice as long each time up to WAIT_RETRY_MS,
 * until the call's deadline: a trainer's HELLO usually beats the node's
 * word about it by a millisecond or two, which a restart should not turn
 * into a long sleep. */
#define WAIT_RETRY_FIRST_MS 2
#define WAIT_RETRY_MS 50

/* ---- messages ---- */

/* The client whose sealer runs on this thread; NULL on every other thread. */
_Thread_local pt_client *client_tls_sealer_of;

void client_log(pt_client *c, int level, const char *fmt, ...)
{
  char msg[sizeof(c->last_error)];
  va_list ap;

  va_start(ap, fmt);
  vsnprintf(msg, sizeof(msg), fmt, ap);
  va_end(ap);
  if (client_tls_sealer_of == c) {
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
void client_seal_msgs_flush(pt_client *c)
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

uint64_t client_deadline_after(const pt_client *c)
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
void client_deadline_timespec(uint64_t deadline, struct timespec *ts)
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

void client_conn_drop(pt_client *c)
{
  if (c->fd >= 0)
    close(c->fd);
  c->fd = -1;
  c->hello_ok = false;
  c->nowed = 0;
}

/* Connects, retrying while the SMP is not listening yet, until deadline. */
int client_conn_open(pt_client *c, uint64_t deadline)
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

void client_release_init(Pt__Release *m, uint32_t slot, uint64_t gen,
                         uint64_t step, int status, const char *reason)
{
  pt__release__init(m);
  m->slot = slot;
  m->generation = gen;
  m->has_step = true;
  m->step = step;
  m->has_status = status != 0;
  m->status = status;
  m->reason = (char *)reason;
}

/* Settles a frame that answers an owed request (removing it; OUT: *taken),
 * under conn_mu. A slot that a late SLOT_REPLY assigned is given back at once
 * (RELEASE), as nothing will ever be copied into it. Returns 0 or the error
 * of that give-back. */
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
  Pt__Release back;
  uint64_t id = ++c->next_id;
  client_release_init(&back, r->slot, r->generation, o.step, PT_SKIPPED,
                      "the slot came after its step was skipped");
  int rc = rpc_sock_send(c->fd, RPC_RELEASE, id, &back.base, deadline);
  if (rc == 0 && !owed_add(c, id, RPC_RELEASE, o.step))
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
  if (type == RPC_RELEASE)
    return ((const Pt__Release *)req)->step;
  return 0;
}

/* One request and its reply on the current connection; the caller holds
 * conn_mu. Replies still owed to earlier requests are read first: while the
 * SMP has not answered those, no new request is sent. A timeout before any
 * byte of the reply keeps the connection (the reply is owed and settled
 * when it comes, which a stopped SMP's SIGCONT brings), except for HELLO;
 * every other failure closes it. OUT: *reply, freed with
 * protobuf_c_message_free_unpacked(). */
int client_conn_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
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
  client_conn_drop(c);
  return rc;
}
/* ---- the session ---- */

static int hello(pt_client *c, uint64_t deadline)
{
  Pt__Hello req = PT__HELLO__INIT;
  Pt__Region *rv, **rp;
  ProtobufCMessage *m = NULL;
  uint64_t busy_until = rpc_now_ms() + BUSY_RETRY_MS;
  bool quiet_began = false; /* refusals retried: logged once (quiet_end) */
  bool waited = false;
  int wait_ms = WAIT_RETRY_FIRST_MS;
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
  req.has_recover_in_place = c->recover_in_place;
  req.recover_in_place = c->recover_in_place;
  req.n_regions = c->nregions;
  req.regions = rp;

  for (;;) {
    rc = client_conn_call(c, RPC_HELLO, &req.base, RPC_HELLO_REPLY, deadline, &m);
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
      sleep_ms(left < wait_ms ? left : wait_ms);
      wait_ms = wait_ms * 2 > WAIT_RETRY_MS ? WAIT_RETRY_MS : wait_ms * 2;
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
    rc = client_store_attach(c, r->shm_name, r->has_shm_bytes ? r->shm_bytes : 0);
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

  if (c->fd < 0 && (rc = client_conn_open(c, deadline)) != 0)
    return rc;
  if (!c->hello_ok)
    return hello(c, deadline);
  return 0;
}

/* Under conn_mu: a session (connection and accepted HELLO) and, when req is
 * not NULL, the call on it, before deadline; a connection error drops the
 * connection and tries again (quietly, pausing before a fresh connect). */
static int session_run(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                       uint32_t reply_type, uint64_t deadline,
                       ProtobufCMessage **reply)
{
  bool began = false;
  int rc;

  for (;;) {
    bool fresh = c->fd < 0;
    rc = session_ensure(c, deadline);
    if (rc == 0 && req != NULL)
      rc = client_conn_call(c, type, req, reply_type, deadline, reply);
    if (rc == 0 || !is_conn_error(rc))
      break;
    client_conn_drop(c);
    int left = ms_left(deadline);
    if (left == 0)
      break;
    if (!began)
      began = quiet_begin(c);
    if (fresh)
      sleep_ms(left < CONNECT_RETRY_MS ? left : CONNECT_RETRY_MS);
  }
  quiet_end(c, began);
  return rc;
}

/* A request on a ready session, under conn_mu. When the connection turns
 * out to be dead (the SMP restarted since the last call), reconnects, says
 * HELLO again and retries, all before deadline: a new connection that breaks
 * too (reset by the listener of an SMP that was dying as it connected) is
 * retried after CONNECT_RETRY_MS, as a refused one is. Only for requests
 * that are safe to repeat: whatever a dead SMP did for a try, it undid.
 * OUT: *epoch (may be NULL), the connection that answered. */
int client_session_call(pt_client *c, uint32_t type, const ProtobufCMessage *req,
                        uint32_t reply_type, uint64_t deadline,
                        ProtobufCMessage **reply, uint64_t *epoch)
{
  pthread_mutex_lock(&c->conn_mu);
  int rc = session_run(c, type, req, reply_type, deadline, reply);
  if (epoch != NULL)
    *epoch = c->epoch;
  pthread_mutex_unlock(&c->conn_mu);
  return rc;
}

/* A session (connection and accepted HELLO) before deadline, retried as
 * client_session_call() retries. */
int client_session_open(pt_client *c, uint64_t deadline)
{
  pthread_mutex_lock(&c->conn_mu);
  int rc = session_run(c, 0, NULL, 0, deadline, NULL);
  pthread_mutex_unlock(&c->conn_mu);
  return rc;
}

/* client_conn_call() under conn_mu, on whatever connection is up. */
int client_conn_call_locked(pt_client *c, uint32_t type,
                            const ProtobufCMessage *req, uint32_t reply_type,
                            uint64_t deadline, ProtobufCMessage **reply)
{
  int rc;

  pthread_mutex_lock(&c->conn_mu);
  rc = client_conn_call(c, type, req, reply_type, deadline, reply);
  pthread_mutex_unlock(&c->conn_mu);
  return rc;
}
