/*
 * controller.h — `ptd controller`: one per cluster. It owns the cluster's
 * membership (and, in later steps, every job's lifecycle and the commit of
 * steps across nodes). Nodes and ptctl reach it over the authenticated TCP
 * transport (rpc/rpc.h); everything runs on one libuv loop.
 *
 * Files:
 *
 *   ctl_args.c     the command line and the timeouts, checked as one
 *                  ordered set (pure; unit-tested)
 *   ctl_members.c  membership: nodes, their states and the timers' verdicts
 *                  (pure, no sockets, no clock: the caller passes now;
 *                  unit-tested)
 *   ctl_conn.c     the connections: roles, NODE_REGISTER, HEARTBEAT,
 *                  NODES_QUERY; hostile input refused and logged
 *   controller.c   set-up and teardown: key, state directory and its lock,
 *                  listener, signals, systemd notify and watchdog, the
 *                  membership timer
 *
 * Roles on the controller's port (Pt__PeerRole, proved by the handshake):
 * PEER_ROLE_NODE connections must send NODE_REGISTER first, then
 * HEARTBEATs; PEER_ROLE_CTL connections (ptctl) may query. Any other role,
 * or a frame outside the connection's role, closes the connection with one
 * log line; the controller itself is never affected.
 *
 * Node states: ALIVE (registered, heard from), UNREACHABLE (its connection
 * broke, or it has missed heartbeats), DEAD (silent for dead-after, or its
 * connection lost and not back within grace). Deciding that a node is dead
 * is the membership timer's job alone; what a job does about it is a later,
 * separate decision.
 *
 * Exit status: 0 stopped by SIGTERM or SIGINT, 1 a failure while running,
 * 2 usage or configuration error (bad option, key, state directory, a
 * second controller on the same state directory, an address in use).
 */
#ifndef PT_CONTROLLER_H
#define PT_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "rpc/rpc.h"

#define CTL_EXIT_OK 0
#define CTL_EXIT_FAILED 1
#define CTL_EXIT_USAGE 2

#define CTL_PATH_MAX 4096u
#define CTL_ADVERTISE_MAX 255u      /* bytes of an advertised address */
#define CTL_DOMAIN_MAX 255u         /* bytes of a failure-domain label */
#define CTL_JOB_MAX 255u
#define CTL_CAPACITY_MAX 65536u     /* ranks one node may offer */
#define CTL_INCARNATION_MAX 32u     /* bytes; ptd node sends 16 */

/* ---- timeouts (ctl_args.c) ---- */

struct ctl_timeouts {
  uint32_t heartbeat_ms;  /* a node heartbeats this often (default 1000) */
  uint32_t dead_after_ms; /* silent this long: dead (default 10000) */
  uint32_t grace_ms;      /* connection lost this long and not back: dead
                             (default: dead_after_ms) */
};
#define CTL_HEARTBEAT_MS_DEFAULT 1000u
#define CTL_DEAD_AFTER_MS_DEFAULT 10000u
#define CTL_HEARTBEAT_MS_MIN 10u
#define CTL_TIMEOUT_MS_MAX 3600000u /* an hour */
/* Heartbeats missed before a connected node counts as unreachable. */
#define CTL_MISSED_HEARTBEATS 3u

/* Checks the timeouts as one ordered set:
 *   10 ms <= heartbeat-ms < dead-after-ms, 2 x heartbeat-ms <= dead-after-ms,
 *   0 < grace-ms <= dead-after-ms, every one at most an hour.
 * PT_OK, or -EINVAL with err naming the order and the values given. */
int ctl_args_timeouts_check(const struct ctl_timeouts *t, char *err, size_t errlen);

/* A connected node silent this long is unreachable: CTL_MISSED_HEARTBEATS
 * heartbeats, never past dead-after. */
uint32_t ctl_args_timeouts_unreachable_ms(const struct ctl_timeouts *t);

/* ---- the command line (ctl_args.c) ---- */

struct ctl_config {
  char listen_host[64];  /* numeric IPv4 or IPv6, without brackets */
  int listen_port;       /* 0: any free port */
  char state_dir[CTL_PATH_MAX];
  char key_path[CTL_PATH_MAX];
  struct ctl_timeouts t;
  int log_level;
};

#define CTL_ARGS_HELP 1
/* Parses argv (argv[0] is "controller"). PT_OK, CTL_ARGS_HELP for --help,
 * or -EINVAL with err naming the option. The timeouts are checked as a set
 * (ctl_args_timeouts_check). OUT: *cfg. */
int ctl_args_parse(struct ctl_config *cfg, int argc, char **argv, char *err,
                   size_t errlen);
void ctl_args_usage(FILE *f);
/* Splits "ADDR:PORT" ("127.0.0.1:7000", "[::1]:7000", "[::]:0") into a
 * numeric host (checked with inet_pton) and a port 0..65535. PT_OK or
 * -EINVAL with err. OUT: host (hostlen bytes), *port. */
int ctl_args_addr_parse(const char *s, char *host, size_t hostlen, int *port,
                   char *err, size_t errlen);

/* ---- membership (ctl_members.c; pure) ---- */

enum ctl_node_state {
  CTL_NODE_ALIVE = 1,
  CTL_NODE_UNREACHABLE,
  CTL_NODE_DEAD,
};
const char *ctl_members_node_state_name(enum ctl_node_state s); /* never NULL */

struct ctl_node {
  char id[RPC_NODE_ID_MAX + 1];
  char advertise[CTL_ADVERTISE_MAX + 1];
  char failure_domain[CTL_DOMAIN_MAX + 1]; /* "" when none */
  char job[CTL_JOB_MAX + 1];               /* "" when spare */
  uint32_t capacity;
  uint8_t incarnation[CTL_INCARNATION_MAX];
  size_t incarnation_len;
  enum ctl_node_state state;
  void *conn;                 /* the caller's connection; NULL when lost */
  uint64_t registered_ms;     /* this incarnation's first registration */
  uint64_t last_heard_ms;     /* registration or last heartbeat */
  uint64_t lost_ms;           /* when conn was lost (conn == NULL) */
  uint64_t heartbeats;        /* on the current connection */
};

/* What a node sends at registration; strings are NUL-terminated (protobuf-c
 * gives them so). */
struct ctl_register {
  const char *node_id;
  const char *handshake_id; /* the node id the handshake proved */
  const char *advertise;
  const char *failure_domain; /* may be NULL */
  uint32_t capacity;
  const uint8_t *incarnation;
  size_t incarnation_len;
};

/* Checks a registration for what protobuf cannot: the node id equal to the
 * handshake's and at most RPC_NODE_ID_MAX bytes, an advertised address of
 * 1..CTL_ADVERTISE_MAX printable bytes, a failure domain of at most
 * CTL_DOMAIN_MAX printable bytes, capacity 1..CTL_CAPACITY_MAX, an
 * incarnation of 1..CTL_INCARNATION_MAX bytes. PT_OK, or -EINVAL with err
 * (the text a peer sent is escaped in it). */
int ctl_members_register_check(const struct ctl_register *r, char *err,
                       size_t errlen);

enum ctl_reg_kind {
  CTL_REG_NEW = 1,   /* a node id not seen before */
  CTL_REG_RECONNECT, /* the same incarnation, on a new connection */
  CTL_REG_RESTART,   /* a new incarnation: the node's ptd restarted */
};

/* Called for every state change, once per change (the controller logs one
 * line per call). from is 0 for a node seen for the first time. why is a
 * short phrase ("registered", "connection lost", "silent for 10000 ms"). */
typedef void (*ctl_change_fn)(void *arg, const struct ctl_node *n,
                              enum ctl_node_state from, const char *why);

struct ctl_members {
  struct ctl_node *nodes; /* registration order; never shrinks */
  size_t n, cap;
  struct ctl_timeouts t;
  ctl_change_fn on_change; /* may be NULL */
  void *arg;
};

void ctl_members_init(struct ctl_members *m, const struct ctl_timeouts *t,
                      ctl_change_fn on_change, void *arg);
void ctl_members_release(struct ctl_members *m);
struct ctl_node *ctl_members_find(struct ctl_members *m, const char *id);

/* Registers r (checked by ctl_members_register_check first) on conn at now.
 * -EEXIST when the node is ALIVE on another connection (the first keeps
 * it: err says so); -EINVAL as ctl_members_register_check; -ENOMEM. A node that was
 * UNREACHABLE or DEAD is taken over: OUT *old_conn is its previous
 * connection, if it still had one, which the caller closes (its loss is then
 * not reported, as conn no longer matches). OUT: *kind. */
int ctl_members_register(struct ctl_members *m, const struct ctl_register *r,
                         void *conn, uint64_t now, enum ctl_reg_kind *kind,
                         void **old_conn, char *err, size_t errlen);
/* A heartbeat from the node registered on conn: it is heard from now (an
 * UNREACHABLE node is ALIVE again). -ENOENT when no node is on conn. */
int ctl_members_heartbeat(struct ctl_members *m, void *conn, uint64_t now);
/* The node registered on conn lost it: UNREACHABLE. No-op when no node is
 * on conn (it never registered, or was taken over). */
void ctl_members_lost(struct ctl_members *m, void *conn, uint64_t now);
/* Applies the timers at now: a connected node silent for
 * ctl_args_timeouts_unreachable_ms becomes UNREACHABLE; one silent for
 * dead-after, or without a connection for grace, becomes DEAD. OUT (may be
 * NULL; at most ncap entries): the connections of nodes that became DEAD
 * while still connected, which the caller closes. Returns how many such
 * connections there were. */
size_t ctl_members_tick(struct ctl_members *m, uint64_t now, void **dead_conns,
                        size_t ncap);
/* Milliseconds from now until the next tick can change a state;
 * UINT64_MAX when none can (no nodes, or all dead). */
uint64_t ctl_members_next_ms(const struct ctl_members *m, uint64_t now);

/* ---- the process (controller.c, ctl_conn.c) ---- */

struct ctl_peer;

struct controller {
  struct ctl_config cfg;
  uv_loop_t *loop;
  struct rpc_listener *listener;
  struct rpc_auth auth;
  struct ctl_members members;
  struct ctl_peer *peers; /* every open connection, a list */
  int lock_fd;
  bool stopping;
  int exit_code;
  uv_timer_t timer;    /* the membership timer: decides unreachable, dead */
  uv_timer_t watchdog; /* systemd's watchdog pings */
  uv_signal_t sigterm, sigint;
};

/* ptd controller: the role's entry point (daemon/roles.h). */
int controller_main(int argc, char **argv);

/* ctl_conn.c: what the listener does with its connections. */
int ctl_conn_accept(struct rpc_listener *l, struct rpc_conn *c);
extern const struct rpc_conn_ops ctl_conn_ops;
/* Closes every connection (at stop). */
void ctl_conn_close_all(struct controller *ctl);
/* Runs the membership timers now, closes the connections of nodes they
 * declared dead, and re-arms the timer for the next deadline (controller.c). */
void controller_members_timer_run(struct controller *ctl);
/* The membership's change callback: one log line per change (ctl_conn.c). */
void ctl_conn_log_change(void *arg, const struct ctl_node *n,
                    enum ctl_node_state from, const char *why);

#endif /* PT_CONTROLLER_H */
