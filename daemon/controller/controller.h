/*
 * controller.h — `ptd controller`: one per cluster. It owns the cluster's
 * membership, every job's lifecycle and the commit of steps across nodes,
 * journaled in its state directory. Nodes and ptctl reach it over the authenticated TCP
 * transport (rpc/rpc.h); everything runs on one libuv loop.
 *
 * Files:
 *
 *   ctl_args.c     the command line and the timeouts, checked as one
 *                  ordered set (pure; unit-tested)
 *   ctl_members.c  membership: nodes, their states and the timers' verdicts
 *                  (pure, no sockets, no clock: the caller passes now;
 *                  unit-tested)
 *   ctl_spec.c     a job's spec checked and completed, its placement on
 *                  spare nodes, its MASTER_PORT (pure; unit-tested)
 *   ctl_groups.c   the job's erasure code (its default) and its coding
 *                  groups over the placed nodes, failure domains apart
 *                  (pure; unit-tested)
 *   ctl_jobs.c     jobs: ranks, epochs, the commit across nodes
 *                  (daemon/commit/, a voter per node; a node's pinned
 *                  report is its vote), restarts, waits for dead nodes,
 *                  ends (pure, no sockets, no clock; unit-tested); its
 *                  files share ctl_jobs_int.h
 *   ctl_jobs_parts.c what the nodes say of the parts: a part's state (a
 *                  failed one restarts, fails or goes to the disk tier),
 *                  a step sealed, a commit vote
 *   ctl_jobs_probe.c a cold start from an earlier run's files
 *                  (--resume-from): every node asked which steps its
 *                  ranks' files hold, the first epoch from the newest
 *                  one all of them have
 *   ctl_jobs_spare.c a dead node's place given to a spare (same node
 *                  index), and a coding group that lost more members than
 *                  its code tolerates (the job fails, naming them)
 *   ctl_jobs_tick.c the jobs' deadlines (unanswered assignments, backoffs,
 *                  waits for dead nodes, commit phases) and the next one
 *   ctl_jobs_replay.c the job table rebuilt from the journal's records
 *                  (ctl_jobs_int.h: what it shares with ctl_jobs.c)
 *   ctl_journal.c  <state-dir>/journal: JOB, EPOCH, COMMIT, END records,
 *                  their replay, the compaction
 *   ctl_conn.c     the connections: roles, NODE_REGISTER, HEARTBEAT,
 *                  NODES_QUERY; hostile input refused and logged
 *   ctl_job_conn.c the jobs protocol: JOB_START/STOP/RESTORE, JOBS_QUERY
 *                  from ptctl; JOB_ASSIGN/HALT/PIN/COMMIT/UNPIN to nodes,
 *                  JOB_PART_STATE/STEP_SEALED/JOB_VOTE from them; the jobs'
 *                  timer; the fault point PT_FAULT=ctl_after_commit_journal
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
 * is the membership timer's job alone; what a job does about it is a
 * separate decision with its own deadline (ctl_jobs.c: the job waits
 * node_wait_ms for it).
 *
 * Exit status: 0 stopped by SIGTERM or SIGINT, 1 a failure while running
 * (the journal could not be written), 2 usage or configuration error (bad
 * option, key, state directory, a second controller on the same state
 * directory, an address in use, a damaged journal), 9 the fault point
 * PT_FAULT=ctl_after_commit_journal (ctl_job_conn.c).
 */
#ifndef PT_CONTROLLER_H
#define PT_CONTROLLER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "daemon/commit/commit.h"
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
#define CTL_IDENTITY_MAX 32u        /* bytes; ptd node sends 16 */

/* ---- timeouts (ctl_args.c) ---- */

struct ctl_timeouts {
  uint32_t heartbeat_ms;  /* a node heartbeats this often (default 1000) */
  uint32_t dead_after_ms; /* silent this long: dead (default 10000) */
  uint32_t grace_ms;      /* connection lost this long and not back: dead
                             (default: dead_after_ms) */
  uint32_t node_wait_ms;  /* a job's default wait for a dead node of its
                             (default 60000, or 2 x dead_after_ms when that
                             is longer); 0: CTL_NODE_WAIT_MS_DEFAULT */
};
#define CTL_HEARTBEAT_MS_DEFAULT 1000u
#define CTL_DEAD_AFTER_MS_DEFAULT 10000u
#define CTL_HEARTBEAT_MS_MIN 10u
#define CTL_TIMEOUT_MS_MAX 3600000u /* an hour */
/* Heartbeats missed before a connected node counts as unreachable. */
#define CTL_MISSED_HEARTBEATS 3u

/* Checks the timeouts as one ordered set:
 *   10 ms <= heartbeat-ms < dead-after-ms, 2 x heartbeat-ms <= dead-after-ms,
 *   0 < grace-ms <= dead-after-ms < node-wait-ms (when set), every one at
 *   most an hour.
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
  bool allow_faults; /* --allow-faults: FAULT "controller" kills it */
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

struct ctl_job;

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
  struct ctl_job *jobp;       /* the live job it has a part in, or NULL
                                 (ctl_jobs.c keeps it and job[] in step) */
  uint32_t part;              /* its part's index in jobp */
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
  const uint8_t *identity;  /* NodeRegister.identity; NULL: none */
  size_t identity_len;
  bool replace;             /* ptd node --replace */
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
  CTL_REG_REPLACE,   /* another identity took the id over (--replace) */
};

/* A node id's identity (NodeRegister.identity, made at the node's first
 * start and kept in its state dir): the id is bound to it at the first
 * registration that carries one, journaled (CTL_REC_NODE), and a
 * registration of the id with another identity (another machine or state
 * directory, or one wiped), or with none, is refused unless it says
 * replace (ptd node --replace), which binds the id to the new one. */
struct ctl_ident {
  char id[RPC_NODE_ID_MAX + 1];
  uint8_t tok[CTL_IDENTITY_MAX];
  size_t len;
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
  struct ctl_ident *idents; /* every bound node id, in binding order */
  size_t nident, identcap;
  ctl_change_fn on_change; /* may be NULL */
  void *arg;
};

void ctl_members_init(struct ctl_members *m, const struct ctl_timeouts *t,
                      ctl_change_fn on_change, void *arg);
void ctl_members_release(struct ctl_members *m);
struct ctl_node *ctl_members_find(struct ctl_members *m, const char *id);

/* Would ctl_members_register(r, conn) take r? PT_OK, or what it would
 * refuse with (and err). OUT: *bind, true when r binds its node id to its
 * identity (the first one, or a replacement): the caller journals
 * (CTL_REC_NODE) before it registers r. */
int ctl_members_register_prepare(const struct ctl_members *m,
                                 const struct ctl_register *r, void *conn,
                                 bool *bind, char *err, size_t errlen);
/* The identity node id is bound to; NULL: none. */
const struct ctl_ident *ctl_members_identity(const struct ctl_members *m,
                                             const char *id);
/* Binds id to tok[0..len) (a replay of CTL_REC_NODE, or a registration).
 * -EINVAL for an id or a length out of bounds, -ENOMEM. */
int ctl_members_identity_set(struct ctl_members *m, const char *id,
                             const uint8_t *tok, size_t len);
/* Registers r (checked by ctl_members_register_check first) on conn at now.
 * -EEXIST when the node is ALIVE on another connection (the first keeps
 * it: err says so); -EPERM when its node id is bound to another identity
 * and r does not say replace (err names both); -EINVAL as
 * ctl_members_register_check; -ENOMEM. A node that was
 * UNREACHABLE or DEAD is taken over: OUT *old_conn is its previous
 * connection, if it still had one, which the caller closes (its loss is then
 * not reported, as conn no longer matches). OUT: *kind. */
int ctl_members_register(struct ctl_members *m, const struct ctl_register *r,
                         void *conn, uint64_t now, enum ctl_reg_kind *kind,
                         void **old_conn, char *err, size_t errlen);
/* A heartbeat from the node registered on conn: it is heard from now (an
 * UNREACHABLE node is ALIVE again). -ENOENT when no node is on conn. */
int ctl_members_heartbeat(struct ctl_members *m, void *conn, uint64_t now);
/* The same, O(1) when hint is the node's index (the caller remembers it
 * from the registration); any other hint: as ctl_members_heartbeat. */
int ctl_members_heartbeat_at(struct ctl_members *m, size_t hint, void *conn,
                             uint64_t now);
/* The node registered on conn lost it: UNREACHABLE. No-op when no node is
 * on conn (it never registered, or was taken over). */
void ctl_members_lost(struct ctl_members *m, void *conn, uint64_t now);
/* The controller itself did not run for ms (stopped, or starved of CPU):
 * every node's silence and lost connection are counted from ms later
 * (never later than now), so that nodes are not judged on time the
 * controller could not hear them in. */
void ctl_members_excuse(struct ctl_members *m, uint64_t ms, uint64_t now);
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

/* ---- jobs (ctl_jobs.c; pure) ----
 *
 * The job table and every decision about a job: the spec checked, its
 * nodes picked, its ranks and environment, its epochs, its commits (the
 * commit module over one voter per node), its restarts and its end. No
 * sockets, no clock (now is passed in): what must go to a node or to the
 * journal goes through struct ctl_jobs_ops, whose journal call returns
 * only once the record is durable, before the decision takes effect.
 *
 *   starting    epoch begun, parts assigned; not every part running yet
 *   running     every part running
 *   restarting  every part halted; the next epoch starts after a backoff
 *   waiting     a node of the job is dead and no spare takes its place
 *               (ctl_jobs_spare.c; a coded job only): the other parts
 *               halted; the job waits node_wait_ms for it (or for a spare
 *               to register), then fails
 *   stopping    not entered: ptctl stop ends the job at once (below)
 *   done, failed, stopped   ended: END journaled, every part told to halt
 *               (remove: done only), nodes freed; a node that missed the
 *               halt and reports the job running is told again
 */
#define CTL_SLOTS_DEFAULT 3u
#define CTL_MAX_RESTARTS_DEFAULT 3u
#define CTL_RESTART_WINDOW_MS_DEFAULT 600000u /* as ptd node's */
#define CTL_BACKOFF_MS_DEFAULT 200u
#define CTL_BACKOFF_CAP_MS 5000u
#define CTL_HEALTHY_MS 60000u  /* up this long with a commit: backoff reset */
#define CTL_NODE_WAIT_MS_DEFAULT 60000u
#define CTL_MASTER_PORT_BASE 29500u /* picked MASTER_PORTs: base + 0..span-1 */
#define CTL_MASTER_PORT_SPAN 1000u
#define CTL_ASSIGN_MS 30000u   /* an assignment or halt unanswered this long:
                                  the part failed (halt: counted stopped) */
#define CTL_ROUND_MS 10000u    /* a commit phase's deadline */
#define CTL_ARGV_MAX 4096u     /* arguments of a job's command */
#define CTL_ARG_MAX 65536u     /* bytes of one argument */
#define CTL_JOB_NODES_MAX 65536u
#define CTL_ENDED_KEEP 100u    /* ended jobs remembered (and journaled) */
#define CTL_HELD_MAX 16u       /* held steps kept per part */
#define CTL_REASON_MAX 512u

enum ctl_job_state {
  CTL_JOB_STARTING = 1,
  CTL_JOB_RUNNING,
  CTL_JOB_RESTARTING,
  CTL_JOB_WAITING,
  CTL_JOB_STOPPING,
  CTL_JOB_DONE,
  CTL_JOB_FAILED,
  CTL_JOB_STOPPED,
};
enum ctl_part_state {
  CTL_PART_ASSIGNED = 1, /* this epoch's assignment due or sent */
  CTL_PART_RUNNING,
  CTL_PART_STOPPED,
  CTL_PART_FAILED,
  CTL_PART_DONE,
};
const char *ctl_jobs_state_name(enum ctl_job_state s);   /* never NULL */
const char *ctl_jobs_part_state_name(enum ctl_part_state s);
/* 0 when name is none of them. */
enum ctl_job_state ctl_jobs_state_parse(const char *name);
bool ctl_jobs_ended(enum ctl_job_state s);

struct ctl_part {
  char node_id[RPC_NODE_ID_MAX + 1];
  size_t node;            /* index in ctl_members.nodes; SIZE_MAX: that node
                             has not registered since this controller began */
  enum ctl_part_state state;
  bool sent;              /* this epoch's assignment went out */
  uint64_t deadline;      /* an answer to JOB_ASSIGN / JOB_HALT due; 0 none */
  uint64_t bytes_held;
  bool has_sealed;
  uint64_t last_sealed;   /* in this epoch */
  bool has_pinned;        /* it reported pinned_step pinned everywhere */
  uint64_t pinned_step;   /* (STEP_SEALED{pinned}): its vote for a round */
  uint64_t held[CTL_HELD_MAX]; /* as its last JOB_PART_STATE said */
  uint32_t nheld;
  uint32_t *peer_ports;   /* a coded job: its SMPs' ports by local rank, */
  uint32_t npeer_ports;   /*   as it last reported them (ctl_peers.c) */
  bool empty;             /* its node is a spare that took the place of
                             lost_id and holds nothing of the job until a
                             step commits after (ctl_jobs_spare.c) */
  char lost_id[RPC_NODE_ID_MAX + 1]; /* empty: the node whose data it lost */
};

/* ---- coding groups (ctl_groups.c; pure) ----
 *
 * The job's nodes split into node groups; local rank r of the nodes of
 * node group g is coding group g * ranks_per_node + r, its members in the
 * node group's order (the member numbers of ec/rs.h). The rule for N nodes
 * not a multiple of k + m, and how failure domains are kept apart, are at
 * the top of ctl_groups.c. */
struct ctl_groups {
  uint32_t m;         /* parity members of every group; 0: no code */
  uint32_t n;         /* node groups (0: no code) */
  uint32_t nodes;     /* the job's nodes */
  uint32_t *first;    /* n + 1 entries: group i is member[first[i]..first[i+1]) */
  uint32_t *member;   /* node indexes, group by group, in member order */
  uint32_t *group_of; /* per node index: its group */
  uint32_t *index_of; /* per node index: its member index in that group */
};
static inline uint32_t ctl_groups_size(const struct ctl_groups *g, uint32_t i)
{
  return g->first[i + 1] - g->first[i];
}
/* Group i's data members: its size less m. */
static inline uint32_t ctl_groups_k(const struct ctl_groups *g, uint32_t i)
{
  return ctl_groups_size(g, i) - g->m;
}

/* The code of a job of nodes nodes that names none: 0+0 for 1-2 nodes,
 * 2+1 for 3-5, 4+2 from 6. OUT: *k, *m. */
void ctl_groups_default_code(uint32_t nodes, uint32_t *k, uint32_t *m);
/* 0+0 (none), or k >= 1, m >= 1, k + m <= RS_MAX_MEMBERS, k + m <= nodes,
 * and groups of at most RS_MAX_MEMBERS nodes. PT_OK or -EINVAL with err. */
int ctl_groups_code_check(uint32_t nodes, uint32_t k, uint32_t m, char *err,
                          size_t errlen);
/* Node groups of a job of nodes nodes with code k+m: floor(nodes / (k+m)),
 * 0 for none or too few nodes. */
uint32_t ctl_groups_count(uint32_t nodes, uint32_t k, uint32_t m);
/* The groups of the job's nodes 0..nodes-1 whose failure domains are
 * domains[i] ("" or NULL: a domain of its own; domains may be NULL).
 * OUT: *g (ctl_groups_release), *worst (may be NULL: the most members of a
 * group in one domain; > 1 when the labels do not allow them apart, why
 * then says which domain and group, for the log). -EINVAL (with why) for a
 * code ctl_groups_code_check refuses, -ENOMEM. 0+0: no groups. */
int ctl_groups_form(struct ctl_groups *g, uint32_t nodes,
                    const char *const *domains, uint32_t k, uint32_t m,
                    uint32_t *worst, char *why, size_t whylen);
/* The groups as journaled: lists[i][0..lens[i]) the node indexes of group
 * i in member order. Checked: as many groups as ctl_groups_count, each of
 * k+m..RS_MAX_MEMBERS members, every node in exactly one. PT_EFORMAT with
 * err otherwise. OUT: *g. */
int ctl_groups_set(struct ctl_groups *g, uint32_t nodes, uint32_t k,
                   uint32_t m, const uint32_t *const *lists,
                   const size_t *lens, size_t ngroups, char *err,
                   size_t errlen);
void ctl_groups_release(struct ctl_groups *g);

struct ctl_jobs;

#include "daemon/controller/ctl_jobs_persist.h"

struct ctl_job {
  struct ctl_job *next;
  struct ctl_jobs *js;
  Pt__JobSpec *spec;      /* owned (protobuf-c unpacked), defaults filled */
  enum ctl_job_state state;
  uint64_t epoch;
  uint64_t first_epoch;   /* its first: above every epoch its name had */
  bool has_restore;       /* this epoch's restore step */
  uint64_t restore_step;
  bool restore_disk;      /* ... from the persistent tier, the flush */
  uint64_t restore_mark;  /*   restore_mark */
  struct ctl_persist persist;
  bool has_fallback;      /* a part found the restore step damaged: the */
  uint64_t fallback_step; /* next epoch restores this older step instead */
  bool has_committed;
  uint64_t committed;
  uint64_t committed_ms;  /* when (0: before this controller began) */
  bool has_empty_floor;   /* a replay: a COMMIT of a step newer than */
  uint64_t empty_floor;   /*   this protects the empty parts again */
  uint32_t restarts;
  uint64_t commits;
  uint32_t master_port;
  char master_addr[CTL_ADVERTISE_MAX + 1];
  uint32_t nparts;
  struct ctl_part *parts;
  struct ctl_groups groups; /* the coding groups (journaled with JOB) */
  struct commit commit;   /* one voter per part */
  uint64_t *restart_log;  /* when each recent counted restart began (ring
                             of max_restarts) */
  uint32_t nlog, log_pos;
  uint32_t backoff_attempt;
  uint64_t running_since;
  bool committed_since;   /* a commit since running_since */
  uint64_t due_ms;        /* restarting: the next epoch; waiting, stopping,
                             recovering: the deadline; 0 none */
  uint64_t seal_min;      /* min over parts of last_sealed + 1 (0: some
                             part sealed nothing yet), ... */
  uint32_t n_at_min;      /* ... how many parts are at it ... */
  bool seal_min_stale;    /* ... or to be computed again */
  bool recovering;        /* rebuilt from the journal: its nodes have until
                             due_ms to register again */
  uint64_t recover_dead_ms; /* recovering: a node not registered again by
                             then (dead-after) counts as dead for a spare */
  char reason[CTL_REASON_MAX]; /* why it restarted, waits, failed, stopped */
  bool stop_keep;         /* ptctl stop --keep: its snapshots stay */
  bool removed;           /* ended, its nodes told to remove its snapshots
                           * (completed, or stopped without --keep) */
  uint64_t ended_ms;
};

enum ctl_rec {
  CTL_REC_JOB = 1,    /* spec + placement (Pt__CtlRecJob) */
  CTL_REC_EPOCH = 2,  /* Pt__CtlRecEpoch */
  CTL_REC_COMMIT = 3, /* Pt__CtlRecCommit */
  CTL_REC_END = 4,    /* Pt__CtlRecEnd */
  CTL_REC_NODE = 5,   /* Pt__CtlRecNode: a node id's identity */
  CTL_REC_PERSISTED = 6, /* Pt__CtlRecPersisted: the newest disk[] */
};

struct ctl_jobs_ops {
  /* JOB_ASSIGN of j->epoch to part (its node is connected). Non-zero: not
   * sent. */
  int (*assign)(void *ctx, struct ctl_job *j, uint32_t part);
  /* JOB_HALT of j (epochs up to j->epoch) to part (connected). */
  int (*halt)(void *ctx, struct ctl_job *j, uint32_t part, bool remove);
  /* JOB_PIN / JOB_COMMIT / JOB_UNPIN of step to part. pin: OUT *ticket,
   * the request id its JOB_VOTE will carry. Non-zero: not sent. */
  int (*pin)(void *ctx, struct ctl_job *j, uint32_t part, uint64_t step,
             uint64_t *ticket);
  int (*commit)(void *ctx, struct ctl_job *j, uint32_t part, uint64_t step);
  int (*unpin)(void *ctx, struct ctl_job *j, uint32_t part, uint64_t step);
  /* Appends the record kind describes j as it is now (COMMIT: j->committed
   * in j->epoch) and makes it durable. Non-zero: the decision does not
   * take effect. */
  int (*journal)(void *ctx, const struct ctl_job *j, enum ctl_rec kind);
  /* JOB_PERSISTED of the newest complete step on disk to part. */
  int (*persisted)(void *ctx, struct ctl_job *j, uint32_t part);
  /* DISK_PROBE of spec.resume_from to part (a cold start, before its
   * first epoch). Non-zero: not sent. */
  int (*probe)(void *ctx, struct ctl_job *j, uint32_t part);
};

struct ctl_jobs {
  struct ctl_job *jobs;   /* live and ended, newest first */
  size_t nlive, nended;
  uint64_t replay_ends;   /* END records replayed (their order) */
  struct ctl_members *m;
  const struct ctl_jobs_ops *ops;
  void *ctx;
};

void ctl_jobs_init(struct ctl_jobs *js, struct ctl_members *m,
                   const struct ctl_jobs_ops *ops, void *ctx);
void ctl_jobs_release(struct ctl_jobs *js);
struct ctl_job *ctl_jobs_find(struct ctl_jobs *js, const char *name);

/* Checks spec and fills its defaults (slots 3, max_restarts 3, restart
 * window 600 s, backoff 200 ms, node_wait_ms 60000, the code by the number
 * of nodes: ctl_groups_default_code), against the
 * membership's timeouts (node_wait_ms > dead-after-ms). PT_OK or -EINVAL
 * with err naming the field and its limits. */
int ctl_spec_check(const struct ctl_jobs *js, Pt__JobSpec *spec, char *err,
                   size_t errlen);
/* Picks spec->nodes ALIVE spare nodes of capacity >= ranks_per_node, in
 * rounds of one node per failure domain (registration order within each),
 * so that the job spans as many domains as there are and takes as few
 * nodes of each as it can. OUT: idx[spec->nodes] (indexes in js->m->nodes). -ENOSPC with
 * err saying how many are free and how many are needed. */
int ctl_spec_place(const struct ctl_jobs *js, const Pt__JobSpec *spec,
                   size_t *idx, char *err, size_t errlen);
/* j's coding groups (ctl_groups_form) over its placed nodes idx[] (as
 * ctl_spec_place gave them), with their failure domains; a warning logged
 * when the labels do not allow the members apart. -EINVAL (with err) or
 * -ENOMEM. */
int ctl_spec_groups(const struct ctl_jobs *js, struct ctl_job *j,
                    const size_t *idx, char *err, size_t errlen);
/* A spare for part p of the live coded job j, whose node is lost: an
 * ALIVE node in no job, of capacity >= ranks_per_node, not taken[] (may be
 * NULL; per index in js->m->nodes), preferably in none of the failure
 * domains of the other members of p's node group (a node without a label
 * is a domain of its own), else the first in registration order (OUT
 * *apart false: the labels did not allow it). OUT: *idx. -ENOSPC: none. */
int ctl_spec_pick_spare(const struct ctl_jobs *js, const struct ctl_job *j,
                        uint32_t p, const bool *taken, size_t *idx,
                        bool *apart);
/* The MASTER_PORT of a new job: spec's, or the lowest of
 * CTL_MASTER_PORT_BASE.. no live job uses. 0: none left. */
uint32_t ctl_spec_pick_port(const struct ctl_jobs *js, uint32_t want);

/* ptctl start: checks, places, journals JOB then EPOCH 1, assigns. PT_OK
 * (OUT *out) or -EINVAL/-EEXIST/-ENOSPC/-EADDRINUSE with err, or the
 * journal's error. spec is copied. */
int ctl_jobs_start(struct ctl_jobs *js, const Pt__JobSpec *spec, uint64_t now,
                   struct ctl_job **out, char *err, size_t errlen);
/* ptctl stop: END(stopped) journaled, every part halted, its snapshots
 * removed unless keep. -ENOENT, -EALREADY (ended). */
int ctl_jobs_stop(struct ctl_jobs *js, const char *name, bool keep,
                  uint64_t now, char *err, size_t errlen);
/* ptctl restore (ended jobs: ctl_jobs_revive.c): a new epoch from the newest
 * committed step, or from step (committed at some point, not newer than
 * the committed step, and held by every part as its last report said).
 * An ended job whose snapshots are kept (failed, stopped with --keep) is
 * revived: live again on the same nodes, its restarts and backoff started
 * over. -ENOENT (no such job, no such step, or nothing to restore: a
 * completed job, one stopped without --keep), -EAGAIN (waiting for a dead
 * node; a node of the ended job not registered or not alive), -EBUSY (a
 * node of it in another job), -EADDRINUSE (its master port another
 * job's), -EALREADY (stopping). OUT: *restored (the step; none: fresh). */
int ctl_jobs_restore(struct ctl_jobs *js, const char *name, bool has_step,
                     uint64_t step, uint64_t now, bool *has_restored,
                     uint64_t *restored, char *err, size_t errlen);

/* Global rank of part's local rank 0, and the world size. */
uint32_t ctl_jobs_first_rank(const struct ctl_job *j, uint32_t part);
uint32_t ctl_jobs_world_size(const struct ctl_job *j);

/* From the nodes (the caller found j and part from the connection). Each
 * returns PT_OK, or PT_EEPOCH when epoch is not j's current one (ignored). */
int ctl_jobs_parts_state(struct ctl_jobs *js, struct ctl_job *j,
                         uint32_t part, uint64_t epoch,
                         enum ctl_part_state st, const char *msg,
                         const Pt__JobPartState *m, uint64_t now);
int ctl_jobs_parts_sealed(struct ctl_jobs *js, struct ctl_job *j,
                          uint32_t part, uint64_t epoch, uint64_t step,
                          bool pinned, uint64_t now);
int ctl_jobs_parts_vote(struct ctl_jobs *js, struct ctl_job *j,
                        uint32_t part, uint64_t epoch, uint64_t step,
                        uint64_t ticket, int status, const char *msg,
                        uint64_t now);

/* The membership's news. registered: node m->nodes[node] (re)registered:
 * bound to its part if it has one in a live job, which is told again
 * (JOB_ASSIGN of the current epoch, with the committed step); a waiting
 * job whose nodes are all back restarts in a new epoch. down: the node
 * became UNREACHABLE or DEAD. */
void ctl_jobs_node_registered(struct ctl_jobs *js, size_t node, uint64_t now);
void ctl_jobs_node_down(struct ctl_jobs *js, size_t node, uint64_t now);

/* Deadlines: assignments unanswered, backoffs over, waits over, commit
 * phases. */
void ctl_jobs_tick_all(struct ctl_jobs *js, uint64_t now);
/* Milliseconds from now to the next deadline; UINT64_MAX none. */
uint64_t ctl_jobs_tick_next_ms(const struct ctl_jobs *js, uint64_t now);

/* Replay (ctl_journal.c calls these in record order; nothing is sent).
 * PT_EFORMAT with err for a record that contradicts the ones before. */
/* groups: lists[i][0..lens[i]) the node indexes of node group i
 * (ctl_groups_set checks them); ngroups 0 for a coded job (a record from
 * before groups): the node list cut in groups again, without labels. */
int ctl_jobs_replay_job(struct ctl_jobs *js, const Pt__JobSpec *spec,
                        char *const *node_ids, size_t n, uint32_t master_port,
                        const char *master_addr,
                        const uint32_t *const *lists, const size_t *lens,
                        size_t ngroups, char *err, size_t errlen);
/* first_epoch: the job's first (1 for a record from before it was
 * journaled). */
int ctl_jobs_replay_epoch(struct ctl_jobs *js, const char *job, uint64_t epoch,
                          bool has_restore, uint64_t restore,
                          uint64_t first_epoch, char *err, size_t errlen);
int ctl_jobs_replay_commit(struct ctl_jobs *js, const char *job,
                           uint64_t epoch, uint64_t step, char *err,
                           size_t errlen);
/* An EPOCH's CtlRecPlace (after ctl_jobs_replay_epoch of that record):
 * part node_index of job runs on node_id, empty (a spare in the place of
 * was); has_since: a COMMIT newer than since protects it again. */
int ctl_jobs_replay_place(struct ctl_jobs *js, const char *job,
                          uint32_t node_index, const char *node_id,
                          const char *was, bool has_since, uint64_t since,
                          char *err, size_t errlen);
int ctl_jobs_replay_end(struct ctl_jobs *js, const char *job,
                        enum ctl_job_state st, const char *reason,
                        bool has_removed, bool removed, char *err,
                        size_t errlen);
/* After the last record: every live job waits for its nodes to register
 * again (until now + dead-after + node_wait_ms), then goes on in the epoch
 * it had. */
void ctl_jobs_replay_done(struct ctl_jobs *js, uint64_t now);

/* ---- the journal (ctl_journal.c) ----
 *
 * <state-dir>/journal (common/journal.h): JOB, EPOCH, COMMIT, END and NODE
 * records, each a small protobuf message (rpc/pt.proto, "controller
 * journal records"). Compacted when over CTL_JOURNAL_MAX_BYTES or
 * CTL_JOURNAL_MAX_RECORDS: NODE per bound node id (js->m's identities),
 * JOB + EPOCH (+ COMMIT) per live job, JOB + END per remembered ended
 * job. A replay binds the identities of its NODE records in js->m. */
#define CTL_JOURNAL_MAX_BYTES (1u << 20)
#define CTL_JOURNAL_MAX_RECORDS 10000u

struct journal;
/* Opens (creating) path and replays it into js (empty). PT_OK; PT_EFORMAT
 * with err naming the journal and the offset (or record) for damage; a
 * torn last record is dropped (OUT *dropped: its bytes). */
int ctl_journal_open(struct journal **j, const char *path, struct ctl_jobs *js,
                     uint64_t *dropped, char *err, size_t errlen);
/* Appends kind's record for job, durably. */
int ctl_journal_append(struct journal *jr, const struct ctl_job *job,
                       enum ctl_rec kind);
/* Appends CTL_REC_NODE (node id bound to identity tok[0..len)), durably. */
int ctl_journal_append_node(struct journal *jr, const char *id,
                            const uint8_t *tok, size_t len);
/* Compacts when the journal is over its bounds (or always when force). */
int ctl_journal_compact(struct journal *jr, const struct ctl_jobs *js,
                        bool force);

/* ---- the process (controller.c, ctl_conn.c) ---- */

struct ctl_peer;

struct controller {
  struct ctl_config cfg;
  uv_loop_t *loop;
  struct rpc_listener *listener;
  struct rpc_auth auth;
  struct ctl_members members;
  struct ctl_jobs jobs;
  struct journal *journal; /* <state-dir>/journal */
  uint64_t req_seq;        /* request ids of what it sends nodes */
  bool fault_after_commit; /* PT_FAULT=ctl_after_commit_journal */
  bool compact_due;        /* a record was appended since the last check */
  struct ctl_peer *peers; /* every open connection, a list */
  struct ctl_fault_wait *fault_waits; /* relayed FAULTs (ctl_fault.c) */
  int lock_fd;
  bool stopping;
  int exit_code;
  uv_timer_t timer;    /* the membership timer: decides unreachable, dead */
  bool members_due;    /* it fired with a deadline due and waits one poll */
  uv_timer_t watchdog; /* systemd's watchdog pings */
  uv_timer_t log_timer; /* rpc_log_flush, every LOG_LIMIT_MS */
  uv_timer_t jobs_timer; /* the jobs' deadlines (ctl_job_conn.c) */
  uv_prepare_t stall_prepare; /* before each poll: was the loop away? */
  uv_check_t stall_check;     /* after each poll: did the poll last? */
  uint64_t loop_poll_ms, loop_ran_ms;
  uv_signal_t sigterm, sigint;
};

/* ptd controller: the role's entry point (daemon/roles.h). */
int controller_main(int argc, char **argv);

/* ctl_conn.c: what the listener does with its connections. */
int ctl_conn_accept(struct rpc_listener *l, struct rpc_conn *c);
extern const struct rpc_conn_ops ctl_conn_ops;
/* Closes every connection (at stop). */
void ctl_conn_close_all(struct controller *ctl);
/* Re-arms the membership timer for the next deadline (controller.c); a
 * deadline already due is judged by the timer, after one poll of the
 * sockets. */
void controller_members_timer_run(struct controller *ctl);
/* The membership's change callback: one log line per change, and a node
 * gone unreachable or dead told to its job (ctl_conn.c). */
void ctl_conn_log_change(void *arg, const struct ctl_node *n,
                    enum ctl_node_state from, const char *why);
/* Stops the loop (controller.c): listener and connections closed. */
void controller_stop(struct controller *ctl, const char *why);

/* ctl_peers.c: the ports of a coded job's SMPs, from JOB_PART_STATE to
 * every member of the node's group (JOB_PEERS). */
void ctl_peers_on_part_state(struct controller *ctl, struct ctl_job *j,
                             uint32_t p, const Pt__JobPartState *m);
/* The host a node's group dials it at: its advertised address when that
 * is numeric, else the host of peer_name (its connection's
 * rpc_conn_peer_name, "a.b.c.d:p" or "[v6]:p"; NULL: none). OUT: out, ""
 * when neither gives a numeric host. */
void ctl_peers_host(const char *advertise, const char *peer_name, char *out,
                    size_t len);

/* ctl_job_conn.c: the jobs protocol. */
extern const struct ctl_jobs_ops ctl_job_conn_ops;
/* Starts the jobs' timer (every CTL_JOBS_TICK_MS: deadlines, compaction). */
#define CTL_JOBS_TICK_MS 100u
void ctl_job_conn_timer_start(struct controller *ctl);
/* A ptctl request of the jobs protocol (JOB_START, JOB_STOP, JOB_RESTORE,
 * JOBS_QUERY): answered. PT_EPROTO for another type. */
int ctl_job_conn_on_ctl(struct controller *ctl, struct rpc_conn *c,
                        const struct rpc_hdr *h, ProtobufCMessage *msg);
/* A registered node's frame (node: its index in ctl->members.nodes).
 * PT_OK, or PT_EPROTO with what (the line of the refusal): the caller
 * closes the connection. */
int ctl_job_conn_on_node(struct controller *ctl, struct rpc_conn *c,
                         size_t node, const struct rpc_hdr *h,
                         ProtobufCMessage *msg, char *what, size_t whatlen);

/* ctl_fault.c: fault injection (ptctl fault). A ptctl FAULT: answered at
 * once (kind "controller": answered, then the controller SIGKILLs itself
 * when --allow-faults allows it; a refusal) or relayed to the target's
 * node, whose FAULT_REPLY (ctl_fault_on_node, node: its index) goes back.
 * ctl_fault_conn_closed drops the waits of a closed connection (node: its
 * index when registered), telling ptctl when its node went away. */
struct ctl_fault_wait;
int ctl_fault_on_ctl(struct controller *ctl, struct rpc_conn *c,
                     const struct rpc_hdr *h, const Pt__Fault *m);
int ctl_fault_on_node(struct controller *ctl, size_t node,
                      const struct rpc_hdr *h, const Pt__FaultReply *m);
void ctl_fault_conn_closed(struct controller *ctl, struct rpc_conn *c,
                           bool registered, size_t node);

#endif /* PT_CONTROLLER_H */
