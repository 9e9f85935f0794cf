/*
 * ctl_members.c — the cluster's membership, as a pure state machine: no
 * sockets, no clock (every call is given now, in milliseconds of one
 * monotonic clock), connections as opaque tokens of the caller's.
 *
 *   register            -> ALIVE (new node, reconnect, or restart)
 *   heartbeat           -> ALIVE (from UNREACHABLE)
 *   connection lost     -> UNREACHABLE
 *   tick: connected, silent for unreachable-ms  -> UNREACHABLE
 *   tick: silent for dead-after-ms              -> DEAD
 *   tick: no connection for grace-ms            -> DEAD
 *
 * Invariants: at most one node per id and one connection per node; a node
 * is ALIVE only while it has a connection; every state change is reported
 * once through on_change. A node is never forgotten (a dead one can come
 * back by registering again).
 *
 * Identity: a node id is bound to the identity its first registration
 * carried (made once at the node's first start, kept in its state dir), and
 * only that identity registers the id again, alive or dead, so that another
 * machine or state directory given the id of a dead node does not take its
 * job part over as though it were that node. The operator replaces a node
 * explicitly (ptd node --replace: NodeRegister.replace), and only while
 * the old one is not alive on a connection.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"

const char *ctl_members_node_state_name(enum ctl_node_state s)
{
  switch (s) {
  case CTL_NODE_ALIVE:
    return "alive";
  case CTL_NODE_UNREACHABLE:
    return "unreachable";
  case CTL_NODE_DEAD:
    return "dead";
  }
  return "unknown";
}

/* Printable ASCII only: these strings end up in logs, tables and JSON. */
static bool printable(const char *s)
{
  for (; *s != '\0'; s++)
    if ((unsigned char)*s < 0x21 || (unsigned char)*s > 0x7e)
      return false;
  return true;
}

int ctl_members_register_check(const struct ctl_register *r, char *err,
                       size_t errlen)
{
  size_t len;

  if (r->node_id == NULL || r->advertise == NULL) {
    snprintf(err, errlen, "registration without a node id or an address");
    return -EINVAL;
  }
  len = strlen(r->node_id);
  if (len == 0 || len > RPC_NODE_ID_MAX) {
    snprintf(err, errlen, "node id of %zu bytes (1..%u)", len,
             RPC_NODE_ID_MAX);
    return -EINVAL;
  }
  if (r->handshake_id == NULL || strcmp(r->node_id, r->handshake_id) != 0) {
    snprintf(err, errlen,
             "registers as node '%s' but authenticated as '%s'",
             LOG_ESC(r->node_id), LOG_ESC(r->handshake_id));
    return -EINVAL;
  }
  len = strlen(r->advertise);
  if (len == 0 || len > CTL_ADVERTISE_MAX || !printable(r->advertise)) {
    snprintf(err, errlen,
             "advertised address of %zu bytes (1..%u printable bytes)", len,
             CTL_ADVERTISE_MAX);
    return -EINVAL;
  }
  if (r->failure_domain != NULL &&
      (strlen(r->failure_domain) > CTL_DOMAIN_MAX ||
       !printable(r->failure_domain))) {
    snprintf(err, errlen,
             "failure domain of %zu bytes (0..%u printable bytes)",
             strlen(r->failure_domain), CTL_DOMAIN_MAX);
    return -EINVAL;
  }
  if (r->capacity == 0 || r->capacity > CTL_CAPACITY_MAX) {
    snprintf(err, errlen, "capacity %" PRIu32 " (1..%u ranks)", r->capacity,
             CTL_CAPACITY_MAX);
    return -EINVAL;
  }
  if (r->incarnation_len == 0 || r->incarnation_len > CTL_INCARNATION_MAX ||
      r->incarnation == NULL) {
    snprintf(err, errlen, "incarnation of %zu bytes (1..%u)",
             r->incarnation_len, CTL_INCARNATION_MAX);
    return -EINVAL;
  }
  return PT_OK;
}

void ctl_members_init(struct ctl_members *m, const struct ctl_timeouts *t,
                      ctl_change_fn on_change, void *arg)
{
  memset(m, 0, sizeof(*m));
  m->t = *t;
  m->on_change = on_change;
  m->arg = arg;
}

void ctl_members_release(struct ctl_members *m)
{
  free(m->nodes);
  free(m->idents);
  memset(m, 0, sizeof(*m));
}

struct ctl_node *ctl_members_find(struct ctl_members *m, const char *id)
{
  for (size_t i = 0; i < m->n; i++)
    if (strcmp(m->nodes[i].id, id) == 0)
      return &m->nodes[i];
  return NULL;
}

const struct ctl_ident *ctl_members_identity(const struct ctl_members *m,
                                             const char *id)
{
  for (size_t i = 0; i < m->nident; i++)
    if (strcmp(m->idents[i].id, id) == 0)
      return &m->idents[i];
  return NULL;
}

int ctl_members_identity_set(struct ctl_members *m, const char *id,
                             const uint8_t *tok, size_t len)
{
  struct ctl_ident *e = (struct ctl_ident *)ctl_members_identity(m, id);

  if (strlen(id) == 0 || strlen(id) > RPC_NODE_ID_MAX || len == 0 ||
      len > CTL_IDENTITY_MAX)
    return -EINVAL;
  if (e == NULL) {
    if (m->nident == m->identcap) {
      size_t cap = m->identcap == 0 ? 16 : m->identcap * 2;
      struct ctl_ident *p = realloc(m->idents, cap * sizeof(*p));
      if (p == NULL)
        return -ENOMEM;
      m->idents = p;
      m->identcap = cap;
    }
    e = &m->idents[m->nident++];
    memset(e, 0, sizeof(*e));
    snprintf(e->id, sizeof(e->id), "%s", id);
  }
  memcpy(e->tok, tok, len);
  e->len = len;
  return PT_OK;
}

/* "1f2e3d..." (at most CTL_IDENTITY_MAX bytes), or "none". */
static const char *hex(const uint8_t *b, size_t len, char *out, size_t cap)
{
  static const char digits[] = "0123456789abcdef";
  size_t k = 0;

  if (len == 0 || b == NULL) {
    snprintf(out, cap, "none");
    return out;
  }
  for (size_t i = 0; i < len && k + 2 < cap; i++) {
    out[k++] = digits[b[i] >> 4];
    out[k++] = digits[b[i] & 15];
  }
  out[k] = '\0';
  return out;
}

static struct ctl_node *find_conn(struct ctl_members *m, void *conn)
{
  if (conn == NULL)
    return NULL;
  for (size_t i = 0; i < m->n; i++)
    if (m->nodes[i].conn == conn)
      return &m->nodes[i];
  return NULL;
}

static void set_state(struct ctl_members *m, struct ctl_node *n,
                      enum ctl_node_state to, const char *why)
{
  enum ctl_node_state from = n->state;

  if (from == to)
    return;
  n->state = to;
  if (m->on_change != NULL)
    m->on_change(m->arg, n, from, why);
}

int ctl_members_register_prepare(const struct ctl_members *m,
                                 const struct ctl_register *r, void *conn,
                                 bool *bind, char *err, size_t errlen)
{
  int rc = ctl_members_register_check(r, err, errlen);
  const struct ctl_node *n;
  const struct ctl_ident *e;
  char a[2 * CTL_IDENTITY_MAX + 1], b[2 * CTL_IDENTITY_MAX + 1];

  *bind = false;
  if (rc != PT_OK)
    return rc;
  if (r->identity_len > CTL_IDENTITY_MAX ||
      (r->identity_len > 0 && r->identity == NULL)) {
    snprintf(err, errlen, "identity of %zu bytes (0..%u)", r->identity_len,
             CTL_IDENTITY_MAX);
    return -EINVAL;
  }
  n = ctl_members_find((struct ctl_members *)m, r->node_id);
  if (n != NULL && n->state == CTL_NODE_ALIVE && n->conn != NULL &&
      n->conn != conn) {
    snprintf(err, errlen,
             "node '%s' is already registered and alive on another "
             "connection: refused (the first one keeps the id)",
             LOG_ESC(r->node_id));
    return -EEXIST;
  }
  e = ctl_members_identity(m, r->node_id);
  if (e != NULL && e->len == r->identity_len &&
      memcmp(e->tok, r->identity, e->len) == 0)
    return PT_OK; /* the node it is bound to */
  if (e != NULL && !r->replace) {
    snprintf(err, errlen,
             "node id '%s' is bound to identity %s, and this registration "
             "carries identity %s (another machine or state directory, or a "
             "wiped one): refused; `ptd node --replace` makes it node '%s' "
             "in place of the old one",
             LOG_ESC(r->node_id), hex(e->tok, e->len, a, sizeof(a)),
             hex(r->identity, r->identity_len, b, sizeof(b)),
             LOG_ESC(r->node_id));
    return -EPERM;
  }
  /* Its first identity, or a replacement; a registration without one
   * (a node from before identities) binds nothing. */
  *bind = r->identity_len > 0;
  return PT_OK;
}

int ctl_members_register(struct ctl_members *m, const struct ctl_register *r,
                         void *conn, uint64_t now, enum ctl_reg_kind *kind,
                         void **old_conn, char *err, size_t errlen)
{
  bool bind;
  int rc = ctl_members_register_prepare(m, r, conn, &bind, err, errlen);
  struct ctl_node *n;
  const struct ctl_ident *e;
  bool replaced;
  char was[2 * CTL_IDENTITY_MAX + 1], now_id[2 * CTL_IDENTITY_MAX + 1];

  *old_conn = NULL;
  if (rc != PT_OK)
    return rc;
  n = ctl_members_find(m, r->node_id);
  e = ctl_members_identity(m, r->node_id);
  replaced = bind && e != NULL;
  hex(e != NULL ? e->tok : NULL, e != NULL ? e->len : 0, was, sizeof(was));
  hex(r->identity, r->identity_len, now_id, sizeof(now_id));
  if (bind) {
    rc = ctl_members_identity_set(m, r->node_id, r->identity,
                                  r->identity_len);
    if (rc != PT_OK) {
      snprintf(err, errlen, "out of memory");
      return rc;
    }
  }
  if (n == NULL) {
    if (m->n == m->cap) {
      size_t cap = m->cap == 0 ? 16 : m->cap * 2;
      struct ctl_node *p = realloc(m->nodes, cap * sizeof(*p));
      if (p == NULL) {
        snprintf(err, errlen, "out of memory");
        return -ENOMEM;
      }
      m->nodes = p;
      m->cap = cap;
    }
    n = &m->nodes[m->n++];
    memset(n, 0, sizeof(*n)); /* state 0: "new" to on_change */
    snprintf(n->id, sizeof(n->id), "%s", r->node_id);
    *kind = CTL_REG_NEW;
  } else if (replaced) {
    *kind = CTL_REG_REPLACE;
  } else if (n->incarnation_len == r->incarnation_len &&
             memcmp(n->incarnation, r->incarnation, r->incarnation_len) ==
                 0) {
    *kind = CTL_REG_RECONNECT;
  } else {
    *kind = CTL_REG_RESTART;
  }
  if (n->conn != NULL && n->conn != conn)
    *old_conn = n->conn;
  snprintf(n->advertise, sizeof(n->advertise), "%s", r->advertise);
  snprintf(n->failure_domain, sizeof(n->failure_domain), "%s",
           r->failure_domain != NULL ? r->failure_domain : "");
  n->capacity = r->capacity;
  memcpy(n->incarnation, r->incarnation, r->incarnation_len);
  n->incarnation_len = r->incarnation_len;
  n->conn = conn;
  if (*kind != CTL_REG_RECONNECT)
    n->registered_ms = now;
  n->last_heard_ms = now;
  n->lost_ms = 0;
  n->heartbeats = 0;
  /* The line of a registration says what the node is. */
  char why[CTL_ADVERTISE_MAX * 4 + CTL_DOMAIN_MAX * 4 + 256];
  char rep[4 * CTL_IDENTITY_MAX + 96];
  snprintf(rep, sizeof(rep),
           "replaced (identity %s in place of %s, ptd node --replace)",
           now_id, was);
  snprintf(why, sizeof(why),
           "%s; advertise %s, capacity %" PRIu32 ", failure domain %s",
           replaced                     ? rep
           : *kind == CTL_REG_NEW       ? "registered"
           : *kind == CTL_REG_RECONNECT ? "reconnected (same incarnation)"
                                        : "restarted (new incarnation)",
           LOG_ESC(n->advertise), n->capacity,
           n->failure_domain[0] != '\0' ? LOG_ESC(n->failure_domain)
                                        : "none");
  set_state(m, n, CTL_NODE_ALIVE, why);
  return PT_OK;
}

int ctl_members_heartbeat(struct ctl_members *m, void *conn, uint64_t now)
{
  return ctl_members_heartbeat_at(m, SIZE_MAX, conn, now);
}

int ctl_members_heartbeat_at(struct ctl_members *m, size_t hint, void *conn,
                             uint64_t now)
{
  struct ctl_node *n = hint < m->n && conn != NULL &&
                               m->nodes[hint].conn == conn
                           ? &m->nodes[hint]
                           : find_conn(m, conn);

  if (n == NULL)
    return -ENOENT;
  n->last_heard_ms = now;
  n->heartbeats++;
  set_state(m, n, CTL_NODE_ALIVE, "heard from again");
  return PT_OK;
}

void ctl_members_lost(struct ctl_members *m, void *conn, uint64_t now)
{
  struct ctl_node *n = find_conn(m, conn);

  if (n == NULL)
    return;
  n->conn = NULL;
  n->lost_ms = now;
  if (n->state == CTL_NODE_ALIVE)
    set_state(m, n, CTL_NODE_UNREACHABLE, "connection lost");
}

void ctl_members_excuse(struct ctl_members *m, uint64_t ms, uint64_t now)
{
  for (size_t i = 0; i < m->n; i++) {
    struct ctl_node *n = &m->nodes[i];
    if (n->state == CTL_NODE_DEAD)
      continue;
    n->last_heard_ms = n->last_heard_ms + ms < now ? n->last_heard_ms + ms : now;
    if (n->conn == NULL)
      n->lost_ms = n->lost_ms + ms < now ? n->lost_ms + ms : now;
  }
}

size_t ctl_members_tick(struct ctl_members *m, uint64_t now, void **dead_conns,
                        size_t ncap)
{
  uint32_t unreach = ctl_args_timeouts_unreachable_ms(&m->t);
  size_t nd = 0;
  char why[96];

  for (size_t i = 0; i < m->n; i++) {
    struct ctl_node *n = &m->nodes[i];
    uint64_t silent = now > n->last_heard_ms ? now - n->last_heard_ms : 0;
    if (n->state == CTL_NODE_DEAD)
      continue;
    if (silent >= m->t.dead_after_ms) {
      snprintf(why, sizeof(why), "silent for %" PRIu64 " ms (dead after %" PRIu32 ")",
               silent, m->t.dead_after_ms);
    } else if (n->conn == NULL && now >= n->lost_ms + m->t.grace_ms) {
      snprintf(why, sizeof(why),
               "connection lost %" PRIu64 " ms ago and not back (grace %" PRIu32 " ms)",
               now - n->lost_ms, m->t.grace_ms);
    } else {
      if (n->state == CTL_NODE_ALIVE && silent >= unreach) {
        snprintf(why, sizeof(why), "silent for %" PRIu64 " ms", silent);
        set_state(m, n, CTL_NODE_UNREACHABLE, why);
      }
      continue;
    }
    if (n->conn != NULL) {
      if (dead_conns != NULL && nd < ncap)
        dead_conns[nd] = n->conn;
      nd++;
      n->conn = NULL;
      n->lost_ms = now;
    }
    set_state(m, n, CTL_NODE_DEAD, why);
  }
  return nd;
}

uint64_t ctl_members_next_ms(const struct ctl_members *m, uint64_t now)
{
  uint32_t unreach = ctl_args_timeouts_unreachable_ms(&m->t);
  uint64_t best = UINT64_MAX;

  for (size_t i = 0; i < m->n; i++) {
    const struct ctl_node *n = &m->nodes[i];
    uint64_t at[3];
    size_t k = 0;
    if (n->state == CTL_NODE_DEAD)
      continue;
    at[k++] = n->last_heard_ms + m->t.dead_after_ms;
    if (n->conn == NULL)
      at[k++] = n->lost_ms + m->t.grace_ms;
    else if (n->state == CTL_NODE_ALIVE)
      at[k++] = n->last_heard_ms + unreach;
    for (size_t j = 0; j < k; j++) {
      uint64_t d = at[j] > now ? at[j] - now : 0;
      if (d < best)
        best = d;
    }
  }
  return best;
}
