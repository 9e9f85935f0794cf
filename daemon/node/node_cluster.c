/*
 * node_cluster.c — `ptd node` in cluster mode: the link to `ptd controller`.
 *
 * The node dials the controller over the authenticated TCP transport as
 * PEER_ROLE_NODE (the handshake binds its node id), sends NODE_REGISTER
 * (node id, advertised address, capacity, failure domain and the
 * incarnation: 16 random bytes made once per process start, so the
 * controller tells a restart from a reconnect; the identity: 16 random
 * bytes made at the first start in the state dir and kept there in
 * node.id, so the controller tells this node from another given its id;
 * replace: --replace), takes heartbeat_ms and
 * dead_after_ms from the reply and sends HEARTBEAT every heartbeat_ms.
 *
 * Link states: RETRYING (waiting for the next try) -> CONNECTING (connect
 * and handshake, within NODE_CL_CONNECT_MS) -> REGISTERING (NODE_REGISTER
 * sent, the reply due within NODE_CL_REGISTER_MS) -> REGISTERED. A lost
 * connection, a refused or unanswered registration, or absurd timings in
 * the reply go back to RETRYING, after a capped exponential backoff with
 * jitter (NODE_CL_RETRY_FIRST_MS doubling up to NODE_CL_RETRY_CAP_MS, each
 * delay drawn in [d/2, d]); a link that stayed registered for
 * NODE_CL_STABLE_MS resets it, so a flapping controller is not hammered.
 *
 * Log: one line per state change (registered; lost or refused with the
 * reason and the next try). While the controller stays away with the same
 * reason, the tries are counted and said at most every LOG_LIMIT_MS.
 *
 * The job part the controller assigns, and its decisions, are
 * node_part.c's; this file carries their frames.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <sodium.h>
#include <systemd/sd-daemon.h>

#include "pt.h"
#include "common/log.h"
#include "common/state_file.h"
#include "daemon/node/node.h"
#include "daemon/node/node_persist.h"

enum cl_state { CL_RETRYING, CL_CONNECTING, CL_REGISTERING, CL_REGISTERED };

struct node_cluster {
  struct node *n;
  struct rpc_auth auth;
  uint8_t incarnation[NODE_CL_INCARNATION_BYTES];
  uint8_t identity[NODE_CL_IDENTITY_BYTES];
  char ctl_name[96];         /* "HOST:PORT" for log lines */
  struct rpc_conn *conn;
  enum cl_state state;
  uint64_t state_since;      /* rpc_now_ms() */
  uv_timer_t timer;          /* retry, register deadline or heartbeat */
  uint32_t heartbeat_ms, dead_after_ms;
  uint64_t hb_seq;
  uint64_t reg_id;           /* request id of the NODE_REGISTER in flight */
  uint32_t attempt;          /* failed tries since the last registration */
  uint64_t registrations;
  int last_err;              /* the last failure's code; 0 none */
  char last_why[640];        /* its sentence, for the log and ptctl */
  char pending_why[640];     /* set before we close the conn ourselves */
  struct log_limit repeat;   /* "still unreachable" lines */
  bool stopping;
};

static const char *state_name(enum cl_state s)
{
  switch (s) {
  case CL_RETRYING:
    return "retrying";
  case CL_CONNECTING:
    return "connecting";
  case CL_REGISTERING:
    return "registering";
  case CL_REGISTERED:
    return "registered";
  }
  return "?";
}

static void notify(struct node_cluster *cl)
{
  sd_notifyf(0, "STATUS=cluster node '%s': controller %s %s",
             cl->n->cfg.node_id, cl->ctl_name, state_name(cl->state));
}

static void set_state(struct node_cluster *cl, enum cl_state s)
{
  if (cl->state == s)
    return;
  cl->state = s;
  cl->state_since = rpc_now_ms();
  notify(cl);
}

uint32_t node_cluster_retry_ms(uint32_t attempt, uint32_t rnd)
{
  uint32_t d = node_plan_backoff_ms(NODE_CL_RETRY_FIRST_MS, attempt,
                                    NODE_CL_RETRY_CAP_MS);
  uint32_t half = d / 2;

  return half + (half > 0 ? rnd % (d - half + 1) : 0);
}

int node_cluster_timing_check(uint32_t heartbeat_ms, uint32_t dead_after_ms,
                              char *err, size_t len)
{
  if (heartbeat_ms < NODE_CL_HB_MIN_MS || heartbeat_ms > NODE_CL_HB_MAX_MS) {
    snprintf(err, len, "heartbeat_ms %" PRIu32 " is outside %u..%u",
             heartbeat_ms, NODE_CL_HB_MIN_MS, NODE_CL_HB_MAX_MS);
    return -EINVAL;
  }
  if (dead_after_ms <= heartbeat_ms || dead_after_ms > NODE_CL_DEAD_MAX_MS) {
    snprintf(err, len,
             "dead_after_ms %" PRIu32 " must exceed heartbeat_ms %" PRIu32
             " and be at most %u",
             dead_after_ms, heartbeat_ms, NODE_CL_DEAD_MAX_MS);
    return -EINVAL;
  }
  return PT_OK;
}

static void dial(struct node_cluster *cl);

static void on_timer(uv_timer_t *t);

/* The link failed (why: a sentence; err: its code): the next try after the
 * backoff. The first failure of a kind is logged; repeats are counted. */
static void retry_later(struct node_cluster *cl, int err, const char *why)
{
  bool was_up = cl->state == CL_REGISTERED;

  /* A link that stayed up a while starts the backoff again; one that
   * flaps (registered, then dropped at once) keeps backing off. */
  if (was_up && rpc_now_ms() - cl->state_since >= NODE_CL_STABLE_MS)
    cl->attempt = 0;
  uint32_t delay = node_cluster_retry_ms(cl->attempt + 1,
                                         randombytes_random());
  cl->attempt++;
  set_state(cl, CL_RETRYING);
  if (cl->stopping)
    return;
  if (was_up || err != cl->last_err || strcmp(why, cl->last_why) != 0) {
    log_warn("controller %s: %s %s; retrying in %" PRIu32 " ms", cl->ctl_name,
             was_up ? "connection lost:" : "unreachable:", why, delay);
    uint64_t dropped;
    cl->repeat = (struct log_limit){0};
    log_limit_pass(&cl->repeat, rpc_now_ms(), &dropped); /* primes it */
  } else {
    log_limited(&cl->repeat, LOG_LVL_INFO,
                "controller %s: still unreachable after %" PRIu32
                " tries (%s); retrying in %" PRIu32 " ms",
                cl->ctl_name, cl->attempt, why, delay);
  }
  cl->last_err = err;
  snprintf(cl->last_why, sizeof(cl->last_why), "%s", why);
  uv_timer_start(&cl->timer, on_timer, delay, 0);
}

static const char *err_text(int err, char *buf, size_t len)
{
  switch (err) {
  case 0:
    return "the controller closed the connection";
  case -EACCES:
    return "authentication failed (the controller does not hold our "
           "cluster key, or is not a controller)";
  case -ETIMEDOUT:
    snprintf(buf, len, "no answer within the deadline");
    return buf;
  default:
    snprintf(buf, len, "%s", pt_strerror(err));
    return buf;
  }
}

static void cl_on_close(struct rpc_conn *c, int err)
{
  struct node_cluster *cl = rpc_conn_data(c);
  char buf[128];

  if (cl == NULL || cl->conn != c)
    return;
  cl->conn = NULL;
  uv_timer_stop(&cl->timer);
  if (cl->pending_why[0] != '\0') {
    char why[640];
    snprintf(why, sizeof(why), "%s", cl->pending_why);
    cl->pending_why[0] = '\0';
    retry_later(cl, err, why);
    return;
  }
  retry_later(cl, err, err_text(err, buf, sizeof(buf)));
}

/* Closes the conn with a reason of ours: on_close retries. */
static void drop(struct node_cluster *cl, int err, const char *why)
{
  snprintf(cl->pending_why, sizeof(cl->pending_why), "%s", why);
  rpc_conn_close(cl->conn, err);
}

static void send_heartbeat(struct node_cluster *cl)
{
  Pt__Heartbeat hb = PT__HEARTBEAT__INIT;

  hb.seq = ++cl->hb_seq;
  int rc = rpc_conn_send(cl->conn, RPC_HEARTBEAT, 0, &hb.base);
  if (rc != PT_OK)
    log_debug("controller %s: heartbeat %" PRIu64 " not sent: %s",
              cl->ctl_name, hb.seq, pt_strerror(rc));
}

static void on_timer(uv_timer_t *t)
{
  struct node_cluster *cl = t->data;

  switch (cl->state) {
  case CL_RETRYING:
    dial(cl);
    break;
  case CL_CONNECTING: /* the conn's own deadline closes it */
    break;
  case CL_REGISTERING:
    if (cl->conn != NULL)
      drop(cl, -ETIMEDOUT, "the registration was not answered in time");
    break;
  case CL_REGISTERED:
    if (cl->conn != NULL)
      send_heartbeat(cl);
    break;
  }
}

static void on_register_reply(struct node_cluster *cl,
                              const Pt__NodeRegisterReply *m)
{
  char why[640];

  if (m->status < 0) {
    snprintf(why, sizeof(why),
             "the controller refused the registration: %.560s",
             m->message != NULL && m->message[0] != '\0'
                 ? m->message
                 : pt_strerror(m->status));
    drop(cl, m->status, why);
    return;
  }
  uint32_t hb = m->has_heartbeat_ms ? m->heartbeat_ms : NODE_CL_HB_DEFAULT_MS;
  uint32_t dead =
      m->has_dead_after_ms ? m->dead_after_ms : NODE_CL_DEAD_DEFAULT_MS;
  char terr[160];
  if (node_cluster_timing_check(hb, dead, terr, sizeof(terr)) != PT_OK) {
    snprintf(why, sizeof(why), "the controller's reply is refused: %.180s",
             terr);
    drop(cl, PT_EPROTO, why);
    return;
  }
  cl->heartbeat_ms = hb;
  cl->dead_after_ms = dead;
  cl->last_err = 0;
  cl->last_why[0] = '\0';
  cl->registrations++;
  cl->hb_seq = 0;
  set_state(cl, CL_REGISTERED);
  log_info("controller %s: registered as node '%s' (heartbeat every %" PRIu32
           " ms, declared dead after %" PRIu32 " ms silent)",
           cl->ctl_name, cl->n->cfg.node_id, hb, dead);
  uv_timer_start(&cl->timer, on_timer, hb, hb);
  node_part_report_registered(cl->n);
}

static int cl_on_msg(struct rpc_conn *c, const struct rpc_hdr *h,
                     ProtobufCMessage *msg)
{
  struct node_cluster *cl = rpc_conn_data(c);

  if (cl == NULL || cl->conn != c)
    return 1;
  if (h->type == RPC_NODE_REGISTER_REPLY) {
    if (cl->state != CL_REGISTERING || h->request_id != cl->reg_id) {
      log_debug("controller %s: a registration reply out of turn, ignored",
                cl->ctl_name);
      return 0;
    }
    uv_timer_stop(&cl->timer);
    on_register_reply(cl, (const Pt__NodeRegisterReply *)msg);
    return 0;
  }
  switch (h->type) {
  case RPC_JOB_PEERS:
    if (cl->state == CL_REGISTERED) {
      node_peers_on_job_peers(cl->n, (const Pt__JobPeers *)msg);
      return 0;
    }
    break;
  case RPC_JOB_ASSIGN:
  case RPC_JOB_HALT:
  case RPC_JOB_PIN:
  case RPC_JOB_COMMIT:
  case RPC_JOB_UNPIN:
  case RPC_JOB_PERSISTED:
    if (cl->state == CL_REGISTERED) {
      node_part_on_msg(cl->n, h, msg);
      return 0;
    }
    break;
  case RPC_FAULT:
    if (cl->state == CL_REGISTERED) {
      node_fault_on_msg(cl->n, h->request_id, (const Pt__Fault *)msg);
      return 0;
    }
    break;
  case RPC_DISK_PROBE:
    if (cl->state == CL_REGISTERED) {
      node_persist_probe_on_msg(cl->n, h->request_id,
                                (const Pt__DiskProbe *)msg);
      return 0;
    }
    break;
  default:
    break;
  }
  log_debug("controller %s: %s frame ignored", cl->ctl_name,
            rpc_type_name(h->type));
  return 0;
}

static void cl_on_ready(struct rpc_conn *c)
{
  struct node_cluster *cl = rpc_conn_data(c);
  const struct node_config *cfg;
  Pt__NodeRegister reg = PT__NODE_REGISTER__INIT;

  if (cl == NULL || cl->conn != c)
    return;
  cfg = &cl->n->cfg;
  reg.node_id = (char *)cfg->node_id;
  reg.advertise = (char *)cfg->advertise;
  reg.capacity = cfg->capacity;
  if (cfg->failure_domain[0] != '\0')
    reg.failure_domain = (char *)cfg->failure_domain;
  reg.incarnation.data = cl->incarnation;
  reg.incarnation.len = sizeof(cl->incarnation);
  reg.has_identity = true;
  reg.identity.data = cl->identity;
  reg.identity.len = sizeof(cl->identity);
  reg.has_replace = cfg->replace;
  reg.replace = cfg->replace;
  cl->reg_id = ++cl->n->next_req_id;
  set_state(cl, CL_REGISTERING);
  int rc = rpc_conn_send(c, RPC_NODE_REGISTER, cl->reg_id, &reg.base);
  if (rc != PT_OK) {
    char why[128];
    snprintf(why, sizeof(why), "cannot send the registration: %s",
             pt_strerror(rc));
    drop(cl, rc, why);
    return;
  }
  uv_timer_start(&cl->timer, on_timer, NODE_CL_REGISTER_MS, 0);
}

static const struct rpc_conn_ops cl_ops = {
    .on_msg = cl_on_msg,
    .on_close = cl_on_close,
    .on_ready = cl_on_ready,
    .max_body = RPC_MAX_BODY_DEFAULT,
    .max_write_queue = 4u << 20,
};

static void dial(struct node_cluster *cl)
{
  struct node_config *cfg = &cl->n->cfg;
  struct rpc_conn *c = NULL;

  set_state(cl, CL_CONNECTING);
  int rc = rpc_conn_connect_tcp(cl->n->loop, cfg->controller_host,
                                cfg->controller_port, &cl_ops, &cl->auth,
                                NODE_CL_CONNECT_MS, cl, &c);
  if (rc != PT_OK) {
    char why[160];
    snprintf(why, sizeof(why), "cannot connect: %s", pt_strerror(rc));
    retry_later(cl, rc, why);
    return;
  }
  cl->conn = c;
}

#define IDENT_FILE "node.id"

int node_cluster_identity(const char *state_dir, const char *node_id,
                          uint8_t out[NODE_CL_IDENTITY_BYTES], bool *made,
                          char *err, size_t errlen)
{
  char path[NODE_PATH_MAX + 16], hex[2 * NODE_CL_IDENTITY_BYTES + 1];
  char text[RPC_NODE_ID_MAX + 2 * NODE_CL_IDENTITY_BYTES + 32];
  char *data = NULL;
  size_t len = 0;
  char why[256];

  *made = false;
  if (snprintf(path, sizeof(path), "%s/" IDENT_FILE, state_dir) >=
      (int)sizeof(path)) {
    snprintf(err, errlen, "state directory path too long");
    return -ENAMETOOLONG;
  }
  int rc = state_file_read(path, sizeof(text), &data, &len, why, sizeof(why));
  if (rc == -ENOENT) {
    randombytes_buf(out, NODE_CL_IDENTITY_BYTES);
    sodium_bin2hex(hex, sizeof(hex), out, NODE_CL_IDENTITY_BYTES);
    int tl = snprintf(text, sizeof(text), "node %s\nidentity %s\n", node_id,
                      hex);
    rc = state_file_write(path, text, (size_t)tl);
    if (rc != PT_OK) {
      snprintf(err, errlen, "cannot write '%s': %s", path, pt_strerror(rc));
      return rc;
    }
    *made = true;
    return PT_OK;
  }
  if (rc != PT_OK) {
    snprintf(err, errlen, "'%s': %s", path,
             rc == PT_EFORMAT ? why : pt_strerror(rc));
    return rc;
  }
  /* "node ID\nidentity HEX\n", exactly. */
  const char *id = NULL, *ident = NULL;
  size_t idlen = 0, identlen = 0;
  if (strncmp(data, "node ", 5) == 0) {
    id = data + 5;
    const char *nl = strchr(id, '\n');
    if (nl != NULL) {
      idlen = (size_t)(nl - id);
      if (strncmp(nl + 1, "identity ", 9) == 0) {
        ident = nl + 10;
        const char *nl2 = strchr(ident, '\n');
        identlen = nl2 != NULL && nl2[1] == '\0' ? (size_t)(nl2 - ident) : 0;
      }
    }
  }
  size_t got = 0;
  if (id == NULL || ident == NULL || identlen != 2 * NODE_CL_IDENTITY_BYTES ||
      sodium_hex2bin(out, NODE_CL_IDENTITY_BYTES, ident, identlen, NULL, &got,
                     NULL) != 0 ||
      got != NODE_CL_IDENTITY_BYTES) {
    snprintf(err, errlen,
             "'%s' is damaged (expected \"node ID\" and \"identity\" and 32 "
             "hex digits); remove it to give this node a new identity, "
             "which the controller takes only with --replace",
             path);
    free(data);
    return PT_EFORMAT;
  }
  if (idlen != strlen(node_id) || memcmp(id, node_id, idlen) != 0) {
    snprintf(err, errlen,
             "'%s' belongs to node '%.*s', not '%s': this state directory "
             "is that node's (give node '%s' a state directory of its own)",
             path, (int)(idlen > 255 ? 255 : idlen), id, node_id, node_id);
    free(data);
    return PT_EFORMAT;
  }
  free(data);
  return PT_OK;
}

int node_cluster_open(struct node *n, const uint8_t key[RPC_KEY_BYTES])
{
  struct node_cluster *cl = calloc(1, sizeof(*cl));
  const struct node_config *cfg = &n->cfg;
  char ierr[1024];
  bool made = false;

  if (cl == NULL)
    return -ENOMEM;
  if (sodium_init() < 0) {
    free(cl);
    return -ENOSYS;
  }
  int rc = node_cluster_identity(cfg->state_dir, cfg->node_id, cl->identity,
                                 &made, ierr, sizeof(ierr));
  if (rc != PT_OK) {
    log_error("node identity: %s", ierr);
    free(cl);
    return rc;
  }
  cl->n = n;
  memcpy(cl->auth.key, key, RPC_KEY_BYTES);
  cl->auth.role = PT__PEER_ROLE__PEER_ROLE_NODE;
  snprintf(cl->auth.node_id, sizeof(cl->auth.node_id), "%s", cfg->node_id);
  randombytes_buf(cl->incarnation, sizeof(cl->incarnation));
  snprintf(cl->ctl_name, sizeof(cl->ctl_name),
           strchr(cfg->controller_host, ':') != NULL ? "[%s]:%d" : "%s:%d",
           cfg->controller_host, cfg->controller_port);
  uv_timer_init(n->loop, &cl->timer);
  cl->timer.data = cl;
  cl->state = CL_RETRYING;
  cl->state_since = rpc_now_ms();
  n->cluster = cl;
  char hex[2 * NODE_CL_INCARNATION_BYTES + 1];
  char ihex[2 * NODE_CL_IDENTITY_BYTES + 1];
  sodium_bin2hex(hex, sizeof(hex), cl->incarnation, sizeof(cl->incarnation));
  sodium_bin2hex(ihex, sizeof(ihex), cl->identity, sizeof(cl->identity));
  log_info("cluster node '%s' (identity %s%s, incarnation %s): controller "
           "%s, advertising '%s', capacity %" PRIu32 " ranks%s%s; state in "
           "'%s'%s",
           cfg->node_id, ihex, made ? ", made now" : "", hex, cl->ctl_name,
           cfg->advertise, cfg->capacity,
           cfg->failure_domain[0] != '\0' ? ", failure domain " : "",
           cfg->failure_domain, cfg->state_dir,
           cfg->replace ? "; --replace: it takes the node id over" : "");
  dial(cl);
  return PT_OK;
}

static void free_cluster(uv_handle_t *h)
{
  struct node_cluster *cl = h->data;

  sodium_memzero(cl->auth.key, sizeof(cl->auth.key));
  free(cl);
}

/* After the stop's own frames (a ptctl stop's reply) are written. */
static void on_stopped(uv_timer_t *t)
{
  struct node_cluster *cl = t->data;
  struct node *n = cl->n;

  uv_close((uv_handle_t *)&cl->timer, free_cluster);
  node_shutdown(n);
}

void node_cluster_stop(struct node *n, const char *by)
{
  struct node_cluster *cl = n->cluster;

  if (cl == NULL || cl->stopping)
    return;
  /* The part's ranks first; this runs again once they are gone. */
  if (node_part_stop_node(n, by))
    return;
  log_info("stopping (%s)", by);
  sd_notifyf(0, "STOPPING=1\nSTATUS=cluster node '%s': stopping",
             n->cfg.node_id);
  cl->stopping = true;
  n->phase = NODE_PH_EXIT;
  n->outcome = NODE_OUT_STOPPED;
  n->exit_code = NODE_EXIT_STOPPED;
  if (cl->conn != NULL) {
    struct rpc_conn *c = cl->conn;
    cl->conn = NULL;
    rpc_conn_set_data(c, NULL);
    rpc_conn_close(c, 0);
  }
  n->cluster = NULL;
  uv_timer_stop(&cl->timer);
  uv_timer_start(&cl->timer, on_stopped, 0, 0);
}

void node_cluster_status(const struct node *n, struct node_cluster_view *v)
{
  const struct node_cluster *cl = n->cluster;

  memset(v, 0, sizeof(*v));
  if (cl == NULL) {
    v->link = "stopping";
    return;
  }
  snprintf(v->controller, sizeof(v->controller), "%s", cl->ctl_name);
  v->link = state_name(cl->state);
  uint64_t now = rpc_now_ms();
  v->link_ms = now > cl->state_since ? now - cl->state_since : 0;
  if (cl->state != CL_REGISTERED && cl->last_why[0] != '\0')
    snprintf(v->error, sizeof(v->error), "%s", cl->last_why);
  v->registrations = cl->registrations;
}

int node_cluster_send(struct node *n, uint32_t type, uint64_t id,
                      const ProtobufCMessage *msg)
{
  struct node_cluster *cl = n->cluster;

  if (cl == NULL || cl->conn == NULL || cl->state != CL_REGISTERED)
    return -ENOTCONN;
  return rpc_conn_send(cl->conn, type, id, msg);
}

bool node_cluster_registered(const struct node *n)
{
  return n->cluster != NULL && n->cluster->state == CL_REGISTERED &&
         n->cluster->conn != NULL;
}
