/*
 * node.h — internals shared by the files of `ptd node`. Who decides commits
 * and restores is behind one seam (node_decider.h); standalone, the node
 * decides itself (node_decide_local.c); in cluster mode the controller
 * decides (node_decide_remote.c) and the ranks are a job part it assigned
 * (node_part.c), run by the same supervision.
 *
 *   node.c        node_main: set-up, the state directory, node.state, the
 *                 end
 *   node_job.c    the job's phases (node_job_drive) and children's exits
 *   node_life.c   moves between phases: the end, restarts, spawning; the
 *                 names of phases and rank states
 *   node_decider.h the seam for who decides commits and restores; the
 *                 supervision files call only its operations
 *   node_decide_local.c the standalone decider: the commit module
 *                 (daemon/commit/) over the node's SMPs, pins left behind,
 *                 the restore step from the ranks' verified slots
 *   node_decide_remote.c the cluster-mode decider: STEP_SEALED to the
 *                 controller, its JOB_PIN/COMMIT/UNPIN relayed to the SMPs,
 *                 the restore step of the JOB_ASSIGN
 *   node_cluster.c cluster mode's link to `ptd controller`: register,
 *                 heartbeat, reconnect with backoff
 *   node_part.c   cluster mode's job part: JOB_ASSIGN (the torchrun
 *                 environment), the epoch fence, JOB_HALT, taking the part
 *                 up after a restart (node_part_int.h: what it shares with
 *                 node_part_record.c, <state-dir>/part.state, and
 *                 node_part_report.c, JOB_PART_STATE)
 *   node_events.c what the SMPs say: STATE_REPLY, replies, failed
 *                 requests, events
 *   node_ident.c  the job instance at start-up, re-adopting processes
 *   node_args.c   command line (a pure parser, unit-tested)
 *   node_plan.c   pure decisions: pins left behind, restore step,
 *                 backoff, restart window, open files, budget
 *   node_state.c  <state-dir>/node.state: format, atomic write, strict parse
 *   node_proc.c   children: spawn with libuv, adopt with pidfd, signal,
 *                 identity checks through /proc
 *   node_smp.c    the node's connection to each SMP: connect with retry,
 *                 SUBSCRIBE, requests with deadlines, events
 *   node_ctl.c    the control socket for ptctl (STATUS_QUERY, STOP),
 *                 signals, systemd notify and watchdog
 *   node_check.c  checks before anything is spawned: open files, budget
 *   node_fault.c  fault injection the controller relays (--allow-faults)
 *   node_recover.c recovery in place: a failed trainer restarted alone,
 *                 the others restoring without exiting
 *
 * Every child process has one owner: the node_rank that spawned or adopted
 * it, through a heap node_child freed when its libuv handle is closed.
 * Every wait is a deadline in milliseconds on the rpc_now_ms() clock; one
 * timer is armed for the earliest of them and node_job_drive() re-evaluates
 * everything whenever something happened (a child exited, a frame arrived,
 * the timer fired). node_job_drive() is re-entrant-safe.
 */
#ifndef PT_NODE_H
#define PT_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <uv.h>

#include "daemon/code_group.h"
#include "daemon/commit/commit.h"
#include "daemon/node/node_decider.h"
#include "daemon/node_secret.h"
#include "rpc/rpc.h"
#include "snapshot/snap_store.h"

#define NODE_MAX_RANKS 1024
#define NODE_REQ_MAX 16          /* requests in flight per SMP connection */
#define NODE_PATH_MAX 108        /* sun_path: every socket must fit */
/* The persistent tier's defaults (plain numbers: --help prints them). */
#define NODE_PERSIST_EVERY_DEFAULT 100
#define NODE_PERSIST_KEEP_DEFAULT 2
#define NODE_PERSIST_RATE_DEFAULT (256ull << 20)
#define NODE_PERSIST_PATH_MAX 1024 /* --persist-dir, with room for
                                    * /<job>/step-<N>/rank-<r>.pts */
/* A persist dir or resume-from root, shorter than this (room for the
 * job and a step's file under it). */
#define NODE_PERSIST_ROOT_MAX (NODE_PERSIST_PATH_MAX - SNAP_JOB_MAX - 64)
#define NODE_XSTR_(x) #x
#define NODE_STR(x) NODE_XSTR_(x)
#define NODE_EX_CONFIG 78        /* trainer exit status: permanent failure */
#define NODE_BACKOFF_CAP_MS 5000u
#define NODE_TERM_GRACE_MS 5000u /* SIGTERM, then SIGKILL after this */
#define NODE_KILL_GRACE_MS 2000u /* after SIGKILL, give up waiting */
#define NODE_CONNECT_MS 10000u   /* an SMP must answer within this */
#define NODE_RETRY_MS 50u        /* between connection attempts */
#define NODE_VERIFY_MS 120000u   /* STATE_QUERY{verify} reads every slot */
#define NODE_REQ_MS 10000u       /* every other request to an SMP */
#define NODE_GONE_WAIT_MS 2000u  /* adopted trainer gone: wait for its SMP */
#define NODE_SMP_FAILS_MAX 5     /* consecutive SMP deaths before subscribing */
#define NODE_CTL_MAX 32          /* ptctl connections served at once */
#define NODE_CTL_IDLE_MS 30000u  /* a ptctl connection idle this long closes */
#define NODE_END_ROUNDS_MS 25000u /* job done: commit rounds may end until */
#define NODE_PROBE_EVERY_MS 1000u /* liveness probe of each subscribed SMP */
#define NODE_PROBE_BUSY_MS 600000u /* a busy SMP (running, not stopped or
                                      asleep) may miss probes this long */
#define NODE_HEALTHY_MS 60000u   /* up this long, with a commit: backoff reset */
#define NODE_COMMIT_LOG_MS 60000u /* "commit step" at info at most this often */

enum node_exit {
  NODE_EXIT_OK = 0,      /* job completed */
  NODE_EXIT_FAILED = 1,  /* job failed */
  NODE_EXIT_USAGE = 2,   /* usage or configuration error */
  NODE_EXIT_STOPPED = 3, /* stopped by SIGTERM, SIGINT or ptctl stop */
};

/* ---- configuration (node_args.c) ---- */

struct node_config {
  char job[SNAP_JOB_MAX];
  char state_dir[NODE_PATH_MAX];
  char shm_prefix[32];
  uint32_t ranks;          /* required, 1..NODE_MAX_RANKS */
  uint32_t slots;          /* 2..SNAP_MAX_SLOTS */
  uint32_t max_restarts;
  uint32_t backoff_ms;     /* first restart delay; doubles up to 5 s */
  uint32_t master_port;
  uint64_t memory_budget;  /* per node; 0: none */
  uint64_t state_bytes;    /* per rank, --state-bytes; 0: not given */
  uint32_t smp_timeout_ms; /* liveness probe deadline; 0: no probe */
  uint32_t restart_window_ms;   /* --max-restarts counts in it; 0: life */
  uint32_t progress_timeout_ms; /* no seal from a rank that long: restart;
                                   0: off */
  uint32_t recover_timeout_ms;  /* recovery in place: survivors restore by
                                   then, else all restart; 0: off */
  bool keep;               /* keep the shm objects after success */
  /* The job instance at start-up (node_ident.c): --resume continues the
   * instance recorded in the state dir, --fresh unlinks the job's old shm
   * objects and starts a new one; with neither, old objects refuse. */
  bool resume, fresh;
  bool huge_pages;         /* --huge-pages: passed to every SMP */
  /* The persistent tier (node_persist.c): --persist-dir (the root; the
   * job's files go to <root>/<job>; "": none), --persist-every (commits),
   * --persist-keep (complete steps), --persist-rate (bytes/s per rank). */
  char persist_dir[NODE_PERSIST_PATH_MAX];
  uint32_t persist_every, persist_keep;
  uint64_t persist_rate;
  bool persist_given;
  /* --resume-from: a persist dir (root) to start the job from cold; its
   * newest complete step's instance becomes the job's. "": none. */
  char resume_from[NODE_PERSIST_PATH_MAX];
  int log_level;           /* LOG_LVL_* */
  char **cmd;              /* points into argv; cmd[ncmd] == NULL */
  int ncmd;
  /* Cluster mode (--controller): registers with `ptd controller`, runs
   * no ranks of its own command (no --ranks, no trainer command). */
  bool cluster;
  char controller_host[64];  /* numeric IPv4 or IPv6 ("[::1]" unwrapped) */
  int controller_port;
  char node_id[RPC_NODE_ID_MAX + 1];
  char key_path[4096];
  char advertise[256];       /* default: the host's name */
  char failure_domain[128];  /* "" : none */
  uint32_t capacity;         /* ranks it can run; default the CPUs, or 8 */
  bool allow_faults;         /* --allow-faults: FAULT requests are carried
                                out (node_fault.c); else refused */
  bool replace;              /* --replace: take the node id over from the
                                identity the controller binds it to */
  /* Where this node's ranks stand in the job (cluster mode: from the
   * controller's JOB_ASSIGN, node_part.c). Standalone: first_rank 0, world
   * 0 (the job is this node's: --ranks), group_rank 0, master_addr "". Every
   * rank the SMPs, the shm names and the trainers see is first_rank + the
   * local rank. */
  uint32_t first_rank, world, group_rank;
  char master_addr[256];
  /* Its node group (cluster mode, JOB_ASSIGN.group; k 0: the job has no
   * code): group.group is the node group's index, group.member this
   * node's place in it; local rank r is that member of coding group
   * group.group x ranks + r (node_plan_smp_group), which each SMP is told
   * on its command line (daemon/code_group.h). */
  struct code_group group;
};

/* The job's world size: cfg->world, or cfg->ranks standalone. */
uint32_t node_plan_world(const struct node_config *cfg);

#define NODE_ARGS_HELP 1
/* Parses `ptd node` arguments (argv[0] is the role name). Defaults: job
 * "job", state dir $PT_STATE_DIR or /run/pt, 2 slots, 10 restarts, 200 ms,
 * port 29500, log level info, a restart window of 600 s, an SMP probe
 * deadline of 5 s, no progress timeout. Returns PT_OK, NODE_ARGS_HELP for
 * --help, or -EINVAL with a sentence in err. cfg->cmd points into argv. */
int node_args_parse(struct node_config *cfg, int argc, char **argv, char *err,
                    size_t errlen);
/* The default --capacity: the CPUs online, or NODE_CAPACITY_DEFAULT when
 * they cannot be counted. */
#define NODE_CAPACITY_DEFAULT 8u
uint32_t node_args_default_capacity(void);
void node_args_usage(FILE *f);

/* ---- pure decisions (node_plan.c): daemon/node/node_plan.h ---- */
#include "daemon/node/node_plan.h"

/* ---- node.state (node_state.c) ---- */

struct node_saved_proc {
  int pid;              /* 0: none */
  uint64_t start_ticks; /* /proc/PID/stat field 22 at spawn */
  uint32_t restarts;
};
struct node_saved_rank {
  struct node_saved_proc smp, trainer;
};
struct node_saved {
  char job[SNAP_JOB_MAX];
  uint8_t instance[SNAP_INSTANCE_BYTES]; /* the job instance */
  bool ended;                 /* the instance's node ended (stopped, failed,
                                 or completed with --keep): no process of it
                                 runs; only --resume continues it */
  uint32_t ranks;
  int node_pid;
  bool has_committed;
  uint64_t committed;
  uint64_t committed_unix_ms; /* when it was committed; 0 unknown */
  uint32_t restarts;
  uint64_t commits, restores;
  char **cmd;                 /* heap, ncmd strings */
  uint32_t ncmd;
  struct node_saved_rank *rank; /* heap, `ranks` entries */
};
/* Formats s. OUT: *text (malloc'd, NUL-terminated), *len. */
int node_state_format(const struct node_saved *s, char **text, size_t *len);
/* Parses text strictly; anything unexpected is PT_EFORMAT with a sentence
 * in err. OUT: *s, released with node_state_saved_release() (also on failure). */
int node_state_parse(const char *text, size_t len, struct node_saved *s,
                     char *err, size_t errlen);
/* Writes path atomically: a temporary file (created new with O_EXCL and
 * O_NOFOLLOW after removing a stale one, so a planted symlink is never
 * followed), fsync, rename, fsync of the directory. */
int node_state_write(const char *path, const struct node_saved *s);
/* -ENOENT when absent; PT_EFORMAT with err for a damaged file, a symlink
 * (never followed) or a file not owned by the effective uid. */
int node_state_read(const char *path, struct node_saved *s, char *err,
                    size_t errlen);
void node_state_saved_release(struct node_saved *s);
/* The state directory may be used: a directory (not a symlink) owned by the
 * effective uid and not writable by group or others, in a parent owned by
 * the euid or root and not writable by group or others unless sticky (as
 * /tmp). -EPERM (or -ENOTDIR, -errno) with a sentence in err. */
int node_state_dir_check(const char *dir, char *err, size_t errlen);

/* ---- the running node ---- */

struct node;
struct node_rank;

enum node_role { NODE_ROLE_SMP, NODE_ROLE_TRAINER };

/* A child process, spawned (libuv owns its SIGCHLD) or adopted (watched
 * through a pidfd). Freed when its handle is closed after the exit. */
struct node_child {
  union {
    uv_process_t proc;
    uv_poll_t poll;
  } h;
  struct node_rank *rank;
  enum node_role role;
  bool adopted;
  bool exited;
  int pid;
  int pidfd;            /* adopted: the pidfd watched by h.poll; else -1 */
  uint64_t start_ticks;
  bool term_sent, kill_sent;
};

enum node_trainer_state {
  NODE_TR_IDLE = 0,  /* not started, or stopped for a restart */
  NODE_TR_RUNNING,
  NODE_TR_DONE,      /* said Bye(done) to its SMP, and (when spawned)
                        exited 0 */
  NODE_TR_FAILED,
  NODE_TR_GONE_WAIT, /* adopted, exited; waiting for its SMP's word */
};

/* What NODE_REQ_VERIFY asks the SMP to read: every slot that holds data,
 * or the newest step first until one slot is intact (StateQuery). */
#define NODE_VERIFY_ALL 0u
#define NODE_VERIFY_NEWEST_FIRST 1u

enum node_req_kind {
  NODE_REQ_SUBSCRIBE = 1, /* -> STATE_REPLY */
  NODE_REQ_STATE,         /* STATE_QUERY -> STATE_REPLY */
  NODE_REQ_VERIFY,        /* STATE_QUERY{verify} -> STATE_REPLY; its
                             argument NODE_VERIFY_ALL or _NEWEST_FIRST */
  NODE_REQ_DRAIN,         /* STATE_QUERY at the job's end -> STATE_REPLY,
                             after every event the SMP sent before */
  NODE_REQ_PIN,           /* a commit round's phases -> REPLY, each a */
  NODE_REQ_COMMIT,        /* vote (the decider's, node_decider.h) */
  NODE_REQ_UNPIN,
  NODE_REQ_RECOMMIT,      /* COMMIT of a step left pinned -> REPLY */
  NODE_REQ_STALE_UNPIN,   /* UNPIN of a pin left behind -> REPLY */
  NODE_REQ_SET_RESTORE,   /* -> REPLY */
  NODE_REQ_PROBE,         /* STATE_QUERY, liveness only -> STATE_REPLY,
                             whose contents are not used */
  NODE_REQ_TRAINER_SET,   /* the rank's trainer (r->trainer) -> REPLY */
  NODE_REQ_PEERS_SET,     /* where the group's SMPs listen -> REPLY */
  NODE_REQ_RECOVER,       /* restore in place (node_recover.c) -> REPLY */
};

struct node_req {
  uint64_t id;
  enum node_req_kind kind;
  uint64_t step;
  uint64_t deadline_ms;
  uint64_t sent_ms;
};

struct node_rank {
  struct node *node;
  uint32_t rank;
  char sock_path[NODE_PATH_MAX + 32]; /* fits in NODE_PATH_MAX: args check */

  /* The SMP process and the node's subscribed connection to it. */
  struct node_child *smp;
  uint32_t smp_restarts;
  uint32_t smp_fails;        /* consecutive deaths before subscribing */
  uint64_t smp_respawn_at;   /* when to spawn a missing SMP */
  bool smp_adopted;          /* this SMP was adopted (saw the old trainer) */
  struct rpc_conn *conn;
  bool subscribed;
  uint64_t connect_deadline; /* the SMP must be subscribed by then */
  uint64_t retry_at;         /* next connection attempt; 0 none */
  struct node_req reqs[NODE_REQ_MAX];
  uint32_t nreqs;
  uint64_t probe_at;         /* next liveness probe; 0 none */
  /* A coded job: the port its SMP takes its group's chunks on (0: none
   * reported), and whether it is owed the group's addresses (PEERS_SET:
   * after each SUBSCRIBE and each new JOB_PEERS). */
  uint32_t peer_port;
  bool peers_due;

  /* What the SMP last reported. */
  bool has_store;
  uint64_t bytes_held;
  bool trainer_done_reported;
  int trainer_pid_reported;
  struct node_slot_view view[SNAP_MAX_SLOTS];
  uint32_t nview;
  bool view_verified;        /* view came from STATE_QUERY{verify} */
  bool set_restore_ok;
  bool has_last_sealed;
  uint64_t last_sealed;
  /* The committed steps its SMP's slots held at its last seal (EVENT_SEALED):
   * what a restore to an older step may choose while the job runs. */
  uint64_t committed_held[SNAP_MAX_SLOTS];
  uint32_t ncommitted_held;
  bool drained;              /* job's end: every event of the SMP is in */

  /* The trainer. */
  struct node_child *trainer;
  enum node_trainer_state tstate;
  uint32_t restarts;         /* times this rank's trainer was restarted */
  uint32_t starts;           /* times it was started */
  bool permanent;            /* its failure must not be retried */
  char why[384];             /* how it ended */
  char smp_words[256];       /* its SMP's EVENT_REBUILD_FAILED, this restore */
  bool restore_rebuild;      /* its copy of the step to restore is damaged:
                              * its SMP rebuilds it (a coded job) */
  bool gone_seen, gone_done; /* EVENT_TRAINER_GONE since it was started */
  uint64_t gone_deadline;
  uint64_t progress_at;      /* its last seal, or its start; --progress-timeout */
  /* Recovery in place (node_recover.c): its trainer was asked to restore
   * in place (RECOVER), the SMP took the request, the trainer restored. */
  bool recover_asked, recover_acked, recovered;
};

enum node_phase {
  NODE_PH_STARTING,       /* SMPs spawned or adopted; waiting for them */
  NODE_PH_RESTART,        /* stopping trainers, backoff, SMPs back */
  NODE_PH_QUERY,          /* STATE_QUERY{verify} sent to every SMP */
  NODE_PH_SET_RESTORE,    /* SET_RESTORE sent to every SMP */
  NODE_PH_RUNNING,
  NODE_PH_STOP_TRAINERS,  /* the end: trainers first */
  NODE_PH_STOP_SMPS,      /* then the SMPs */
  NODE_PH_EXIT,
};

enum node_outcome { NODE_OUT_NONE, NODE_OUT_DONE, NODE_OUT_FAILED,
                    NODE_OUT_STOPPED };

struct node {
  struct node_config cfg;
  uv_loop_t *loop;
  uv_timer_t timer;          /* armed for the earliest deadline */
  uv_timer_t watchdog;
  bool watchdog_on;
  /* Deadlines are judged only against what the loop has read: io_prepare
   * notes the time before each poll for I/O, io_check (after the poll)
   * makes it io_read_ms. A deadline at or before io_read_ms passed with
   * every frame that had arrived by then read (node_job_overdue). */
  uv_prepare_t io_prepare;
  uv_check_t io_check;
  uint64_t io_poll_ms, io_read_ms;
  uv_signal_t sigterm, sigint;
  struct rpc_listener *ctl;
  struct rpc_conn *ctl_conns[NODE_CTL_MAX]; /* open ptctl connections */
  uint32_t n_ctl;
  int lock_fd;
  char self_exe[4096];
  char ctl_path[NODE_PATH_MAX + 32];  /* fits in NODE_PATH_MAX: args check */
  char state_path[NODE_PATH_MAX + 32];
  char secret_path[NODE_PATH_MAX + 32]; /* <state-dir>/node.secret */
  uint8_t secret[NODE_SECRET_BYTES]; /* its bytes, sent in SUBSCRIBE */
  uint8_t instance[SNAP_INSTANCE_BYTES]; /* the job instance */
  char instance_hex[33];
  bool instance_ended;       /* node.state says "ended" (finish_exit) */
  char **env;                /* environ less the names set per child */
  struct node_rank *ranks;

  enum node_phase phase;
  enum node_outcome outcome;
  char why[640];             /* the failure, for the log and ptctl */
  bool permanent;            /* the failure is one no restart can cure */
  int why_status;            /* the failure's code when it has one of its
                                own (PT_ECHECKSUM: the restore step is
                                damaged here); 0: -EIO */
  bool adopting;             /* started from a node.state with live pids */
  bool ready_sent;
  uint64_t backoff_until;
  uint64_t phase_deadline;   /* NODE_PH_RESTART: SMPs back by then */
  uint64_t kill_at;          /* stop phases: SIGKILL at, give up 2 s later */
  uint32_t restore_fails;    /* consecutive failed restore attempts */
  bool attempt_failed;       /* the restore attempt under way failed */
  bool verify_all;           /* this attempt's QUERY reads every slot */
  bool restore_has;          /* the step chosen by the attempt under way */
  uint64_t restore_step;
  bool restore_disk;         /* ... read from the persistent tier */
  bool restore_disk_assigned; /* cluster: the assignment says from disk, */
  uint64_t restore_disk_mark; /*   the files of this flush */
  bool restore_disk_failed;  /* cluster: a rank's file of it failed */
  char restore_reason[480];  /* the last restore's tier and why (status) */

  /* Who decides commits and restores (node_decider.h), and its state,
   * which only the decider's own file reads. */
  const struct node_decider *decider;
  void *decider_data;
  /* A coded job: the controller's JOB_PEERS (node_peers.c; NULL: none
   * yet), and the SMPs' ports changed since the last JOB_PART_STATE. */
  struct node_peers *peers;
  bool peer_ports_dirty;
  uint64_t end_deadline;      /* every trainer done: commits end by then */

  bool has_committed;
  uint64_t committed;
  uint64_t committed_unix_ms;
  uint32_t restarts;
  uint64_t commits, restores;
  struct node_restart_log restart_log; /* --restart-window */
  uint32_t backoff_attempt;  /* restarts since the job last ran healthy */
  uint64_t running_since;    /* trainers (re)started at; 0 not running */
  bool committed_since;      /* a step committed since running_since */
  uint64_t commit_logged_ms; /* the last "commit step" line at info */

  /* A "corrupt" fault waiting for the next restore (node_fault.c): the
   * request to answer, the rank whose newest committed slot it damages. */
  struct {
    bool on;
    uint64_t id;
    uint32_t rank;
    char job[SNAP_JOB_MAX];
  } fault_corrupt;
  /* A "parity" fault waiting for the next epoch's assignment: the rank
   * whose parity row of the restore step it damages. */
  struct {
    bool on;
    uint32_t rank;
    uint64_t id, armed_ms;
    char job[SNAP_JOB_MAX];
  } fault_parity;
  /* A "protecting" fault waiting for the next seal, a "rebuilding" one
   * for the next rebuild: its request. */
  bool fault_protecting, fault_rebuilding;
  uint64_t fault_protecting_id, fault_rebuilding_id, fault_armed_ms;
  /* A coded part: a local SMP began rebuilding the restore step of epoch
   * rebuilt_epoch (JobPartState.rebuilt); report_owed: say so at once. */
  uint64_t rebuilt_epoch;
  bool report_owed;
  struct node_persist *persist; /* the persistent tier (node_persist.c);
                                 * NULL: none */
  void *ctl_listing;            /* a ptctl snapshots listing on the pool
                                 * (node_ctl_snapshots.c); NULL: none */
  struct node_cluster *cluster; /* cluster mode: the controller link */
  struct node_part *part;       /* cluster mode: the job part (node_part.c) */

  /* Recovery in place (node_recover.c): the restart under way keeps the
   * surviving trainers; its generation (MASTER_PORT's offset), when it
   * began, the deadline for every survivor's restore (0: not yet set). */
  bool recovering;
  uint64_t recover_gen, recover_began, recover_deadline;
  uint64_t recoveries;       /* ended with every survivor restored */

  uint64_t next_req_id;
  bool in_drive, drive_again;
  bool state_dirty;
  int exit_code;
};

/* node_recover.c: recovery in place. begin: a trainer failed; true when
 * the survivors are asked to restore in place (the restart then keeps
 * them). ready: RESTART may go on (every RECOVER answered; a refusal
 * falls back to a full restart). spawned: the failed ranks are started
 * again: the survivors' deadline runs. check: in RUNNING, a survivor past
 * its deadline restarts the whole job. abandon: every rank restarts after
 * all (why, logged; in a restore phase or RUNNING, the restart begins
 * here); cancel: the same, quietly, for a caller that restarts itself. on_reply / on_failed: RECOVER's answer;
 * on_event: EVENT_RECOVERED. trainer_gone: rank r's trainer exited. */
bool node_recover_begin(struct node *n, uint64_t now);
bool node_recover_ready(struct node *n);
void node_recover_spawned(struct node *n, uint64_t now);
void node_recover_check(struct node *n, uint64_t now);
void node_recover_abandon(struct node *n, const char *why);
void node_recover_cancel(struct node *n);
void node_recover_on_reply(struct node *n, struct node_rank *r, int status,
                           const char *text);
void node_recover_on_event(struct node *n, struct node_rank *r,
                           const Pt__Event *e);
void node_recover_trainer_gone(struct node *n, struct node_rank *r);

/* node_job.c */
void node_job_drive(struct node *n);
/* True when deadline (0: none) had passed before the loop last read its
 * sockets: an answer that was waiting then has been processed, so a
 * request still pending really missed it. After SIGSTOP/SIGCONT of the
 * node, timers run before the sockets are read: this defers the verdict
 * by one poll. */
bool node_job_overdue(const struct node *n, uint64_t deadline);
/* Starts io_prepare and io_check (unreferenced: they keep nothing alive). */
void node_job_io_clock_open(struct node *n);
/* A child's exit (known: status/signal are real; adopted children: false). */
void node_job_child_exited(struct node *n, struct node_child *c, bool known,
                       int64_t status, int term_signal);
/* Unlinks the shm objects of ranks first_rank.. first_rank+count-1 of job
 * (n's shm prefix) that belong to instance, leaving (with a warning) any
 * of another instance; each removal logged at level. */
void node_job_shm_remove(const struct node *n, const char *job,
                         uint32_t first_rank, uint32_t count,
                         const uint8_t instance[SNAP_INSTANCE_BYTES],
                         int level);

/* node_life.c */
/* Stops the job (exit 3). A repeated request with escalate (a second
 * SIGTERM or SIGINT) sends SIGKILL to what is left at once. */
void node_life_request_stop(struct node *n, const char *by, bool escalate);
const char *node_life_phase_name(const struct node *n);
const char *node_life_rank_state_name(const struct node *n,
                                 const struct node_rank *r);
void node_life_set_phase(struct node *n, enum node_phase ph);
bool node_life_all_subscribed(const struct node *n);
/* Ends the job: trainers are stopped, then SMPs, then the node exits. */
__attribute__((format(printf, 3, 4))) void
node_life_finish(struct node *n, enum node_outcome out, const char *fmt, ...);
/* The same, failed, for a failure no restart can cure (n->permanent): a
 * trainer's exit 78, PT_EBUDGET at HELLO, a trainer that cannot be
 * started. Standalone, the node does not restart it; in cluster mode the
 * controller hears it is permanent and ends the job. */
__attribute__((format(printf, 2, 3))) void
node_life_fail_permanent(struct node *n, const char *fmt, ...);
/* SIGTERM to every live child of role, SIGKILL at n->kill_at, and after
 * NODE_KILL_GRACE_MS more the node stops waiting. True when none is left. */
bool node_life_stop_role(struct node *n, enum node_role role, uint64_t now);
/* To RESTART: trainers are stopped; counted: one of --max-restarts, after
 * a backoff (or the job fails when none is left). */
void node_life_begin_restart(struct node *n, uint64_t now, bool counted,
                        const char *why);
/* A restore attempt failed: back to RESTART, a few times, then the job
 * fails. */
void node_life_retry_restore(struct node *n, uint64_t now, const char *why);
void node_life_spawn_smp(struct node *n, struct node_rank *r, uint64_t now);
/* Every rank's trainer; node.state written at once. */
void node_life_spawn_trainers(struct node *n);

/* node_events.c */
/* Frames from a subscribed SMP, after its request bookkeeping. */
void node_events_on_state_reply(struct node *n, struct node_rank *r,
                         enum node_req_kind kind, const Pt__StateReply *m);
void node_events_on_reply(struct node *n, struct node_rank *r,
                   const struct node_req *q, int status, const char *message);
void node_events_on_event(struct node *n, struct node_rank *r, const Pt__Event *e);
/* A request failed without an answer (connection gone or deadline). */
void node_events_on_req_failed(struct node *n, struct node_rank *r,
                        const struct node_req *q, int err);

/* node.c */
uint64_t node_unix_ms(void);
/* Writes node.state now (node_save) or at the end of this drive. Logs a
 * failure once; returns it. */
int node_save(struct node *n);
/* Closes every handle so that uv_run returns. */
void node_shutdown(struct node *n);
/* Disconnects every rank's SMP and forgets its children (SMP, trainer),
 * which the node no longer waits for (they would not die). */
void node_ranks_abandon(struct node *n);
/* The job's start (or a part's): every rank's SMP connected (spawned next
 * drive where there is none), phase STARTING, node.state to be written. */
void node_ranks_start(struct node *n);

/* node_ident.c */
/* Decides the job instance before anything is spawned (see node_ident.c):
 * continues a running instance after the node's own crash (re-adopting its
 * processes), resumes a recorded one (--resume), or starts a new one
 * (--fresh unlinks old objects; without it old objects refuse). Writes
 * node.state. Non-zero: refused, already logged (exit 2). */
int node_ident_start(struct node *n);
/* Adopts the processes a previous node of this instance left running:
 * those node.state records, and (for a rank it records none for) a
 * process found by its identity in /proc: an SMP by its command line, a
 * trainer (session leader) by PT_INSTANCE and PT_RANK in its environment. */
void node_ident_adopt(struct node *n, const struct node_saved *s);
/* Cluster mode's instance of a part (see node_ident.c). */
int node_ident_part(struct node *n, bool continuing);
/* Cluster mode: this node's objects of n->cfg.job (its ranks), all of one
 * job instance: n->instance is set to it (true). false: none, or mixed. */
bool node_ident_kept(struct node *n);

/* node_proc.c */
int node_proc_child_spawn(struct node *n, struct node_rank *r, enum node_role role,
                     struct node_child **out);
/* Adopts pid if it is alive and is provably the child recorded: the same
 * start time, and the job instance in its identity (an SMP's command line
 * names role smp, the rank's socket and --instance; a trainer's environment
 * holds PT_INSTANCE and PT_RANK). -ESRCH when it is gone or not the same. */
int node_proc_child_adopt(struct node *n, struct node_rank *r, enum node_role role,
                     int pid, uint64_t start_ticks, struct node_child **out);
int node_proc_child_signal(struct node_child *c, int sig);
/* Forgets a child that would not die (the handle is closed). */
void node_proc_child_abandon(struct node_child *c);
/* /proc/PID/stat field 22. -ESRCH when gone. */
int node_proc_start_ticks(int pid, uint64_t *out);
/* /proc/PID/cmdline, NULs kept. OUT: buf, *len. */
int node_proc_cmdline(int pid, char *buf, size_t cap, size_t *len);
/* Whether pid is provably this node's role child of rank r: its command
 * line (SMP) or environment (trainer) names this instance and rank. */
bool node_proc_is_ours(const struct node *n, const struct node_rank *r,
                       enum node_role role, int pid);
/* Which child of this instance pid is, by the same identity (n->ranks
 * set up). OUT: *role, *rank. False: none of them. */
bool node_proc_identify(const struct node *n, int pid, enum node_role *role,
                        uint32_t *rank);
/* environ less the PT_/torchrun/systemd names the node sets for children.
 * OUT: *out, NULL-terminated array freed with node_proc_env_free. */
int node_proc_env_base(char ***out);
void node_proc_env_free(char **env);

/* node_smp.c */
void node_smp_connect(struct node *n, struct node_rank *r);
void node_smp_disconnect(struct node_rank *r);
/* Tells a subscribed SMP which trainer is the rank's (TRAINER_SET with
 * r->trainer's pid and start time); nothing without one. */
void node_smp_announce(struct node *n, struct node_rank *r);
/* Sends one request with its deadline. OUT: *id (may be NULL), the
 * request id its answer (node_events_on_reply, node_events_on_state_reply) or its failure
 * (node_events_on_req_failed) comes with. -ENOTCONN when not connected, -EBUSY
 * when NODE_REQ_MAX requests wait already. */
int node_smp_request(struct node *n, struct node_rank *r,
                     enum node_req_kind kind, uint64_t step, uint64_t *id);
/* Connection retries and request deadlines that are due. */
void node_smp_tick(struct node *n, uint64_t now);
uint64_t node_smp_next_deadline(const struct node_rank *r);

/* node_peers.c: a coded job's SMP links (see there). */
struct node_peers;
void node_peers_on_job_peers(struct node *n, const Pt__JobPeers *m);
/* PEERS_SET to every subscribed SMP owed one. */
void node_peers_drive(struct node *n);
/* r's PEERS_SET: addrs and ptrs have room for RS_MAX_MEMBERS. -ENOENT: no
 * table yet. */
int node_peers_msg(const struct node *n, const struct node_rank *r,
                   Pt__PeersSet *out, Pt__PeerAddr *addrs,
                   Pt__PeerAddr **ptrs);
void node_peers_forget(struct node *n);

/* node_check.c */
/* The checks before anything is spawned (open files, --memory-budget);
 * may raise the soft open file limit. Logs why and returns an error when
 * the job cannot run, with the sentence (its numbers) in err (errlen 0:
 * none). */
int node_check_preflight(const struct node_config *cfg, char *err,
                         size_t errlen);

/* node_cluster.c: cluster mode's link to the controller */
#define NODE_CL_INCARNATION_BYTES 16u
#define NODE_CL_CONNECT_MS 5000u     /* connect plus handshake */
#define NODE_CL_REGISTER_MS 5000u    /* NODE_REGISTER_REPLY due within */
#define NODE_CL_RETRY_FIRST_MS 100u  /* first retry; doubles per failure */
#define NODE_CL_RETRY_CAP_MS 5000u
#define NODE_CL_STABLE_MS 5000u      /* registered this long: backoff reset */
#define NODE_CL_HB_DEFAULT_MS 1000u  /* when the reply names none */
#define NODE_CL_DEAD_DEFAULT_MS 10000u
#define NODE_CL_HB_MIN_MS 10u        /* a reply outside these is refused */
#define NODE_CL_HB_MAX_MS 60000u
#define NODE_CL_DEAD_MAX_MS 600000u
#define NODE_CL_IDENTITY_BYTES 16u
struct node_cluster;
/* This node's identity: <state_dir>/node.id ("node ID\nidentity HEX\n"),
 * made (16 random bytes) at the first start in state_dir and read at every
 * other; the controller binds node_id to it. PT_EFORMAT with err for a
 * damaged file or one of another node id (the state dir is that node's).
 * OUT: out, *made (true: made now). */
int node_cluster_identity(const char *state_dir, const char *node_id,
                          uint8_t out[NODE_CL_IDENTITY_BYTES], bool *made,
                          char *err, size_t errlen);
/* Starts the link (dials at once); key is copied. PT_EFORMAT (logged) when
 * the identity cannot be read or made (node_cluster_identity). */
int node_cluster_open(struct node *n, const uint8_t key[RPC_KEY_BYTES]);
/* Ends the link and closes every handle so that uv_run returns (exit 3). */
void node_cluster_stop(struct node *n, const char *by);
/* The delay before retry `attempt` (1-based): NODE_CL_RETRY_FIRST_MS
 * doubled per attempt up to NODE_CL_RETRY_CAP_MS (d), drawn in [d/2, d]
 * by rnd (any 32-bit random value). */
uint32_t node_cluster_retry_ms(uint32_t attempt, uint32_t rnd);
/* The timings a NODE_REGISTER_REPLY gives: PT_OK, or -EINVAL with a
 * sentence in err. */
int node_cluster_timing_check(uint32_t heartbeat_ms, uint32_t dead_after_ms,
                              char *err, size_t len);
struct node_cluster_view {
  char controller[96];
  const char *link;          /* "connecting", "registering", "registered",
                                "retrying", "stopping" */
  uint64_t link_ms;          /* in that state this long */
  char error[640];           /* why the link is down; "" */
  uint64_t registrations;
};
void node_cluster_status(const struct node *n, struct node_cluster_view *v);
/* Sends a frame to the controller: -ENOTCONN unless registered. */
int node_cluster_send(struct node *n, uint32_t type, uint64_t id,
                      const ProtobufCMessage *msg);
bool node_cluster_registered(const struct node *n);

/* node_fault.c: a FAULT the controller relayed (request id id): carried
 * out when --allow-faults allows it, answered with FAULT_REPLY either way
 * (rpc/pt.proto, message Fault). */
void node_fault_on_msg(struct node *n, uint64_t id, const Pt__Fault *m);
/* Before the slots are read for a restore: a pending "corrupt" damages
 * its rank's newest committed slot now, so that this restore meets it,
 * and is answered. */
void node_fault_before_restore(struct node *n);
/* The job's epoch was assigned and checked (restoring step restore, from
 * memory unless from_disk): a pending "parity" of that job damages its
 * rank's parity row of that step now, before any SMP of the epoch runs,
 * and is answered. */
void node_fault_on_assign(struct node *n, const char *job, uint64_t epoch,
                          bool has_restore, uint64_t restore, bool from_disk);
/* A rank sealed a step: a pending "protecting" loses the node now, as that
 * step's protection begins, and is answered. */
void node_fault_on_sealed(struct node *n, uint64_t step);
/* A rank's SMP began rebuilding step: a pending "rebuilding" loses the
 * node now, in the middle of it, and is answered. */
void node_fault_on_rebuild(struct node *n, uint64_t step);

/* node_part.c: cluster mode's job part (JOB_ASSIGN, JOB_HALT, the epoch
 * fence, JOB_PART_STATE, <state-dir>/part.state) */
struct node_part;
/* At start, before the link: reads part.state and, when it records a part
 * that was running, takes it up again, re-adopting its processes.
 * Non-zero: the node cannot run. */
int node_part_open(struct node *n);
void node_part_close(struct node *n);
/* A frame from the controller of types JOB_ASSIGN .. JOB_UNPIN. */
void node_part_on_msg(struct node *n, const struct rpc_hdr *h,
                      const ProtobufCMessage *msg);
/* node_part_report.c: the link (re)registered: JOB_PART_STATE for the
 * part it has. */
void node_part_report_registered(struct node *n);
/* node_part_report.c: STEP_PERSISTED of the part's flush mark of step;
 * PT_OK once sent. */
int node_part_report_persisted(struct node *n, uint64_t step, uint64_t mark,
                               int status, const char *msg, uint64_t bytes);
/* node_part_report.c: after every node_job_drive, JOB_PART_STATE when the
 * part's state changed. */
void node_part_report_after_drive(struct node *n);
/* The part's ranks are all stopped (node_job.c's end, in cluster mode): the
 * node stays, a spare or the next epoch's. */
void node_part_ended(struct node *n);
/* A permanent failure was decided (node_life_fail_permanent, cluster
 * mode): recorded in part.state at once, while the ranks stop, so that a
 * node restarted meanwhile still ends the part failed permanently. The
 * first one recorded stands. */
void node_part_failing(struct node *n);
/* Ranks run (or are being started or stopped) for a part. */
bool node_part_active(const struct node *n);
/* The epoch of the part (0: none). */
uint64_t node_part_epoch(const struct node *n);
/* Stop the part's ranks, then the node (SIGTERM, ptctl stop). False: no
 * ranks run; the caller stops the node now. */
bool node_part_stop_node(struct node *n, const char *by);
/* For STATUS_REPLY: the part's job and state ("spare" without one). */
const char *node_part_report_state_name(const struct node *n);

/* node_ctl.c */
int node_ctl_open(struct node *n);
void node_ctl_notify(struct node *n, bool ready);
void node_ctl_close(struct node *n);
/* SIGTERM/SIGINT handlers and the watchdog timer (initialised, idle). */
void node_ctl_signals_open(struct node *n);
/* Starts WATCHDOG=1 pings when systemd asked for them. */
void node_ctl_watchdog_start(struct node *n);

#endif /* PT_NODE_H */
