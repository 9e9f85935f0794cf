/*
 * bench.h — the parts of ptbench (tests/bench/) that measure one thing each,
 * and the helpers they share: clocks and statistics, child processes with
 * deadlines, and a cleanup list that removes every shm object, socket, file
 * and directory the run made and kills every child it started, on a normal
 * exit, on an error and on SIGINT/SIGTERM/SIGHUP alike.
 *
 * Every measurement function returns 0 or a negative code (pt.h's error
 * space) and, on failure, leaves a sentence in the errbuf it was given. Rates
 * are in GB/s (1e9 bytes per second); times in milliseconds.
 */
#ifndef PT_BENCH_H
#define PT_BENCH_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <sys/types.h>
#include "rpc/rpc.h"

#define BENCH_ERRLEN 512

/* ---- clocks and statistics (bench_util.c) ---- */

/* CLOCK_MONOTONIC in seconds / in milliseconds. */
double bench_now(void);
uint64_t bench_now_ms(void);
void bench_sleep_ms(int ms);
/* Median of v[0..n) (v is reordered). n == 0: NAN. */
double bench_median(double *v, size_t n);
/* Nearest-rank percentile p (0 < p <= 1) of v[0..n) (v is reordered). */
double bench_percentile(double *v, size_t n, double p);
/* "1 GiB", "64 MiB", "1536 KiB" or "N B". OUT: buf. */
const char *bench_fmt_bytes(char *buf, size_t len, uint64_t bytes);
/* The CPU's model name from /proc/cpuinfo, "unknown" when absent. */
void bench_cpu_model(char *buf, size_t len);
/* Fills buf with a reproducible pseudo-random pattern (and so faults every
 * page in). */
void bench_fill(void *buf, size_t bytes, uint64_t seed);

/* A destination as an SMP's slots are: a shm object /<prefix><tag> of
 * bytes, fallocated, mapped shared and touched once, its name already
 * unlinked. NULL with a sentence in errbuf (and *rc) when that fails; freed
 * with munmap(p, bytes). */
void *bench_shm_buffer(const char *prefix, const char *tag, size_t bytes,
                       int *rc, char *errbuf, size_t errlen);

/* ---- cleanup (bench_util.c) ---- */

/* Installs handlers for SIGINT, SIGTERM and SIGHUP that run the cleanup and
 * re-raise the signal, and ignores SIGPIPE. Call once, before anything is
 * registered. */
void bench_cleanup_init(void);
/* Registers things to remove. The strings are copied; registration fails
 * only when the fixed-size list is full (-ENOSPC). */
int bench_cleanup_shm(const char *shm_name);    /* shm_unlink */
int bench_cleanup_shm_prefix(const char *prefix); /* every /dev/shm/<prefix>* */
int bench_cleanup_dir(const char *path);        /* removed with its contents */
/* Kills and reaps every registered child, then removes every registered
 * object. Safe to call more than once and from a signal handler. */
void bench_cleanup_run(void);

/* ---- child processes (bench_util.c) ---- */

/* Starts argv[0] (a path) in a process group of its own, stdin from
 * /dev/null, stdout and stderr appended to log_path (NULL: inherited), and
 * registers it for cleanup. OUT: *pid. */
int bench_child_spawn(pid_t *pid, char *const argv[], const char *log_path,
                      char *errbuf, size_t errlen);
/* Runs fn(arg) in a forked child (its own process group, SIGINT, SIGTERM
 * and SIGHUP at their defaults, SIGPIPE still ignored), which exits 0 when
 * fn returns; registered for cleanup like a spawned one. OUT: *pid. */
int bench_child_fork(pid_t *pid, void (*fn)(void *arg), void *arg, char *errbuf,
                     size_t errlen);
/* utime + stime of a process in seconds (/proc/PID/stat); NAN when
 * unreadable. */
double bench_proc_cpu_s(pid_t pid);
/* True while the child has not exited. Reaps it when it has; its wait status
 * then lands in *status (may be NULL). */
bool bench_child_is_alive(pid_t pid, int *status);
/* Waits up to timeout_ms for the child to exit. OUT: *status (wait status).
 * -ETIMEDOUT when it is still running at the deadline. */
int bench_child_wait(pid_t pid, int timeout_ms, int *status);
/* SIGTERM to the child's process group, SIGKILL after grace_ms, reaped;
 * forgotten by the cleanup list. Returns the wait status, or -ECHILD. */
int bench_child_stop(pid_t pid, int grace_ms);
/* Describes a wait status: "exited with status 3", "killed by signal 9". */
const char *bench_wait_text(char *buf, size_t len, int status);
/* Appends the last `lines` lines of a log file to stderr, indented. */
void bench_log_tail(const char *path, int lines);

/* ---- what ptbench measures ---- */

struct bench_opts {
  uint64_t bytes;        /* state size */
  int copy_threads;      /* libpt's and the raw engine's copy threads */
  int reps;              /* interleaved copy repetitions (after one warm-up) */
  int restore_reps;
  int file_reps;
  bool quick;
  const char *ptd;       /* path of ptd */
  const char *pt_train;  /* path of pt-train */
  const char *file_dir;  /* where the file checkpoint is written */
  const char *tmp_dir;   /* this run's private directory (sockets, logs) */
  const char *shm_prefix;/* this run's unique shm name prefix */
  const char *job;       /* job name for the SMP and the node */
  int cluster_step_ms;   /* --cluster: the simulated nodes' step period */
  bool verbose;
};

/* ---- the copy limit (bench_limit.c) ---- */

/* One piece of the bytes a snapshot copies: a region and its place in the
 * slot. */
struct bench_copy_seg {
  void *dst;
  const void *src;
  size_t bytes;
};

/* The plain copies of the same bytes the limit is the fastest of. The
 * *_THREADS ones run on the limit's own threads (as many as the snapshot's
 * copy threads), each copying one contiguous range; the others run on the
 * caller's thread. */
enum bench_limit_which {
  BENCH_LIMIT_MEMCPY,             /* glibc memcpy, one call per segment */
  BENCH_LIMIT_MEMCPY_1M,          /* glibc memcpy in 1 MiB pieces */
  BENCH_LIMIT_STREAM,             /* non-temporal 64-byte stores */
  BENCH_LIMIT_MEMCPY_THREADS,
  BENCH_LIMIT_MEMCPY_1M_THREADS,
  BENCH_LIMIT_STREAM_THREADS,
  BENCH_LIMIT_COUNT
};

struct bench_limit;

/* Starts `threads` (1..64) copy threads for the segments seg[0..n) (n 1..16,
 * copied), which then sleep until a timed copy. OUT: *out, freed with
 * bench_limit_free(). */
int bench_limit_new(struct bench_limit **out, const struct bench_copy_seg *seg, size_t n,
                    int threads);
/* Stops and joins the threads, frees. l may be NULL. */
void bench_limit_free(struct bench_limit *l);
/* One copy of every segment the way `which` (enum bench_limit_which) says,
 * threads woken included. Returns its seconds. */
double bench_limit_time(struct bench_limit *l, int which);
/* "memcpy", "stream_threads" ...: the figure's JSON name without "_gbps". */
const char *bench_limit_name(int which);
/* "glibc memcpy, 1 MiB pieces, 1 thread" ...: for the table. */
const char *bench_limit_text(int which);
/* False where the streaming copy is a plain memcpy (not x86-64). */
bool bench_limit_has_stream(void);

/* Copies, in the same process on the same region buffers: the plain copies
 * of the copy limit, the raw engine (no checksums), libpt with checksums
 * against a real SMP, restore. */
struct bench_copy_result {
  /* The copy limit: the fastest of the plain copies, each the state size
   * over its median time; limit_which says which one it was. */
  double copy_limit_gbps;
  int limit_which;
  int limit_threads;      /* threads of the *_THREADS copies */
  double limit_gbps[BENCH_LIMIT_COUNT];
  double memcpy_gbps;     /* = limit_gbps[BENCH_LIMIT_MEMCPY] */
  double snapshot_gbps;
  double snapshot_crc_gbps;
  double blocking_ms_p50, blocking_ms_p99, blocking_ms_max;
  double fence_ms_p50;    /* how long pt_fence() waited after a snapshot */
  double snapshot_ms;     /* pt_snapshot + pt_fence, median: the steady state */
  double first_snapshot_ms;  /* a fresh client: open, register, pt_snapshot,
                              * pt_fence (its mapping's page tables empty) */
  double second_snapshot_ms; /* its next one, into the other slot */
  double restore_gbps;
  double restore_fresh_client_ms; /* the first restore of a new client */
  int reps, blocking_samples, restore_reps;
  uint64_t skipped;       /* pt_snapshot() answered PT_SKIPPED (retried) */
  int regions;
};

/* bench_copy.c. The region buffers (o->bytes, contiguous) stay allocated for
 * bench_file_run(). OUT: *state, released with bench_state_free(), also
 * when the run fails. */
int bench_copy_run(const struct bench_opts *o, struct bench_copy_result *r,
                   void **state, char *errbuf, size_t errlen);
void bench_state_free(void *state, uint64_t bytes);

struct bench_file_result {
  double blocking_ms;      /* median of reps: open, write, fsync, close */
  double write_ms, fsync_ms; /* the parts, median */
  char fs_type[32];        /* "ext4", "xfs", "tmpfs" ... */
  int reps;
};
/* bench_file.c: writes buf[0..bytes) to a fresh file in o->file_dir. */
int bench_file_run(const struct bench_opts *o, const void *buf, size_t bytes,
                   struct bench_file_result *r, char *errbuf, size_t errlen);

/* bench_net.c: tcp_raw_gbps, the limit of the network figures (bulk_gbps is
 * read against it): plain sockets over loopback TCP, 1 MiB write() calls to
 * a reading thread (reads of 1 MiB or of 256 KiB, the faster), no framing,
 * no authentication. */
#define BENCH_NET_RING ((size_t)64 << 20) /* bench_bulk.c's ring, too */
struct bench_net_result {
  double tcp_raw_gbps;     /* into a pre-faulted shm ring: the limit */
  double tcp_raw_hot_gbps; /* into one reused 1 MiB buffer (in the cache) */
  uint64_t bytes;         /* per transfer */
};
int bench_net_run(const struct bench_opts *o, struct bench_net_result *r,
                  char *errbuf, size_t errlen);

struct bench_bulk_result {
  double bulk_gbps; /* payload bytes through rpc bulk frames */
  uint64_t bytes;
  size_t piece;     /* bytes per bulk frame */
};
/* bench_bulk.c: bulk frames through the rpc layer over an authenticated
 * loopback TCP connection into a pre-faulted shm buffer. */
int bench_bulk_run(const struct bench_opts *o, struct bench_bulk_result *r,
                   char *errbuf, size_t errlen);

struct bench_train_result {
  double step_ms_pt, step_ms_nopt;
  double step_overhead_ratio;
  double fence_ms, snapshot_call_ms; /* per step, in the runs with pt */
  int state_mb, steps;
};
/* bench_train.c: pt-train under ptd node with and without snapshots. */
int bench_train_run(const struct bench_opts *o, struct bench_train_result *r,
                    char *errbuf, size_t errlen);

/* One pt-train run under ptd node with snapshots at every step, and with
 * persist_dir (non-NULL) a flush always running (--persist-every 1 into
 * it): its steady-state step time. */
int bench_train_one_ms(const struct bench_opts *o, int idx,
                       const char *persist_dir, double *step_ms, char *errbuf,
                       size_t errlen);

/* bench_persist.c: the persistent tier beside the disk's limits. */
struct bench_persist_result {
  double persist_gbps, persist_raw_gbps, persist_ratio;
  double restore_disk_gbps, read_raw_gbps, restore_ratio;
  double step_ms_persist, step_ms_pt, persist_step_overhead_ratio;
  uint64_t bytes; /* data bytes of the file */
  int rounds;
  bool direct;    /* the flush used O_DIRECT */
};
int bench_persist_run(const struct bench_opts *o, struct bench_persist_result *r,
                      char *errbuf, size_t errlen);

/* bench_recover.c: kill -9 of pt-train under `ptd node --ranks 1` to the
 * next step committed after the restart. */
struct bench_recover_result {
  double recovery_ms;   /* kill to the restarted trainer's first completed
                         * step (its update done, pt_snapshot called), the
                         * node's backoff excluded */
  double commit_ms;     /* kill to that step's commit, backoff excluded: the
                         * snapshot's copy and seal on top */
  double backoff_ms;    /* the node's restart delay, reported apart */
  double total_ms;      /* kill to that completed step, backoff included */
  double step_ms;       /* commit to commit before the kill (steady step) */
  double node_ms;       /* kill to the new trainer's start, backoff excluded:
                         * the node's death notice and restore-point choice */
  double trainer_ms;    /* the new trainer's start to its completed step:
                         * its own start-up, pt_restore, one step */
  uint64_t restored_step;
  int state_mb;
};
int bench_recover_run(const struct bench_opts *o, struct bench_recover_result *r,
                      char *errbuf, size_t errlen);

/* bench_cluster.c: `ptbench --cluster`, the commit across nodes on a real
 * ptd controller. A figure that could not be taken for a reason outside
 * ptbench (a controller or node that does not serve jobs yet, a descriptor
 * limit that cannot be raised) is left NAN with measured false and the
 * reason in why; the functions fail (< 0) only for what should have worked. */
#define BENCH_CLUSTER_SIZES 3 /* 10, 100, 1000 simulated nodes */
struct bench_cluster_size {
  uint32_t nodes;
  int steps;              /* run, warm-up included */
  int samples;            /* steps measured */
  double p50_ms, p99_ms;  /* last STEP_SEALED sent -> last JOB_COMMIT in */
  double cpu_pct;         /* the controller's CPU over the steps, % of a core */
  double idle_cpu_pct;    /* its CPU with every node registered, no job:
                           * heartbeats alone */
  double sim_cpu_pct;     /* ptbench's own over the steps (the N nodes) */
  /* Where a commit's time goes, medians over the steps measured: the last
   * STEP_SEALED sent -> the last JOB_PIN in; the last JOB_VOTE out -> the
   * first JOB_COMMIT in (the votes read, the journal's fsync); the first ->
   * the last JOB_COMMIT in (the broadcast). */
  double pins_p50_ms, journal_p50_ms, spread_p50_ms;
  double window_s;        /* the steps' wall time */
  double register_s;      /* every node connected, authenticated, registered */
  uint64_t failed_rounds; /* JOB_UNPIN seen (rounds that did not commit) */
  bool measured, jobs_unsupported;
  char why[BENCH_ERRLEN]; /* not measured: why */
  /* The same traffic without pt (bench_floor.c): the floor server's CPU
   * over as many steps, % of a core; NAN with floor_why when not taken. */
  double floor_cpu_pct;
  int floor_steps;
  size_t up_bytes, hb_bytes, down_bytes; /* the frames' sizes, header included */
  char floor_why[BENCH_ERRLEN];
};
struct bench_cluster_result {
  struct bench_cluster_size sim[BENCH_CLUSTER_SIZES];
  bool jobs_unsupported;  /* the controller refused JOB_START as unknown */
  char jobs_why[BENCH_ERRLEN];
};
/* Simulated nodes: one process, N authenticated connections. */
#define BENCH_CLUSTER_STEP_MS 100 /* simulated nodes seal a step this often
                                   * (default of --cluster-step-ms) */
int bench_cluster_sim_run(const struct bench_opts *o, struct bench_cluster_result *r,
                          char *errbuf, size_t errlen);

/* bench_floor.c: the kernel's floor under the controller's CPU figure, the
 * same connections and frames with no pt logic (the file says exactly). */
struct bench_floor_spec {
  uint32_t nodes;
  int steps;             /* steps measured over */
  int step_ms;           /* a step begins this often, or when the last ended */
  uint32_t heartbeat_ms; /* each connection's heartbeat period */
  const uint8_t *up;     /* a connection's report of a step (a whole frame) */
  size_t up_len;
  const uint8_t *hb;     /* a heartbeat frame */
  size_t hb_len;
  const uint8_t *down;   /* the server's answer to every connection once all reported */
  size_t down_len;
};
struct bench_floor_result {
  double cpu_pct;  /* the server's utime + stime over the steps, % of a core */
  double window_s;
  int steps;
  bool measured;
};
int bench_floor_run(const struct bench_floor_spec *sp, struct bench_floor_result *r,
                    char *errbuf, size_t errlen);

/* bench_protect.c: protection across 3 real nodes at 2+1, beside raw TCP
 * moving the same bytes in the same pattern (bench_protect.c says how). */
struct bench_protect {
  int state_mb;          /* per rank (1 rank per node) */
  double window_s;
  int commits, steps;    /* in the window: committed (= protected) steps,
                            steps every rank trained */
  double protect_gbps;   /* data bytes made PROTECTED per second per node */
  double train_gbps;     /* the same at the trainers' step rate: the pace
                            protection would need to protect every step */
  double tcp_gbps;       /* the raw TCP pattern, per node */
  double step_ms;        /* the job's wall time per trained step */
  double nopt_step_ms;   /* the same 3 ranks without pt (--no-pt --timing) */
  bool measured;
  /* One node of the job lost whole and started again empty: its SMP's
   * rebuild of the committed step (bench_rebuild.c says exactly). */
  bool rebuild_measured;
  char rebuild_why[BENCH_ERRLEN];
  uint64_t rebuild_step, rebuild_bytes, rebuild_received;
  double rebuild_s;        /* the SMP's account of its rebuild */
  double rebuild_ingest_s; /* rebuild_bytes over one loopback connection */
  double rebuild_disk_s;   /* rebuild_bytes read back with O_DIRECT */
  char rebuild_disk_why[BENCH_ERRLEN];
  double recover_s;        /* the loss to the job running again */
};
int bench_protect_run(const struct bench_opts *o, struct bench_protect *r, char *errbuf,
                      size_t errlen);
/* bench_rebuild.c: bytes over one loopback TCP connection (OUT: *secs);
 * bytes read back with O_DIRECT from a file written in dir (why on
 * failure); the last "step R rebuilt from members" line of an SMP's log. */
int bench_rebuild_ingest(size_t bytes, double *secs);
int bench_rebuild_disk(const char *dir, size_t bytes, double *secs, char *why,
                       size_t whylen);
int bench_rebuild_logged(const char *log, uint64_t *step, uint64_t *bytes,
                         uint64_t *ms, uint64_t *received);

/* A ptd controller for a run (bench_cluster.c): its own state dir, key and
 * log under the run's tmp dir, listening on a port of its own. */
struct bench_ctl_proc {
  pid_t pid;
  int port;
  char dir[512];     /* its state dir */
  char key[512];
  char log[512];
};
int bench_cluster_ctl_start(const struct bench_opts *o, const char *name,
                            struct bench_ctl_proc *cp, char *errbuf, size_t errlen);
void bench_cluster_ctl_stop(struct bench_ctl_proc *cp);
/* A blocking ptctl-like request: PT_OK with *reply (freed with
 * protobuf_c_message_free_unpacked), -ENOTSUP when the controller closed
 * without an answer, another error with why. */
int bench_cluster_call(const struct bench_ctl_proc *cp, uint32_t type,
                       const ProtobufCMessage *req, uint32_t reply_type, int timeout_ms,
                       ProtobufCMessage **reply, char *why, size_t whylen);
int bench_cluster_job_start(const struct bench_ctl_proc *cp, Pt__JobSpec *spec,
                            uint64_t *epoch, char *why, size_t whylen);
int bench_cluster_job_stop(const struct bench_ctl_proc *cp, const char *job);

/* 3 real ptd nodes and pt-train; the commit latency seen on a relay in
 * front of each node's controller link (bench_cluster.c says exactly). */
struct bench_cluster_real {
  int nodes, ranks_per_node, state_mb, step_delay_ms;
  int samples;
  double p50_ms, p99_ms;  /* last node's STEP_SEALED -> last JOB_COMMIT out */
  double window_s;
  bool measured;
  bool jobs_unsupported;  /* the controller refused JOB_START as unknown */
  bool nodes_unsupported; /* the nodes never answered JOB_ASSIGN */
  char why[BENCH_ERRLEN];
};
int bench_cluster_real_run(const struct bench_opts *o, struct bench_cluster_real *r,
                           char *errbuf, size_t errlen);

/* ---- ptbench's report (bench_report.c): targets, JSON, the table ---- */

struct target {
  const char *key;      /* JSON name of the ratio */
  const char *label;    /* human row */
  double value;
  bool at_least;        /* value >= bound, else value <= bound */
  double bound;
  const char *note;     /* what the ratio divides */
};
/* The target named key among n; NULL: none. */
const struct target *bench_target_find(const struct target *t, size_t n,
                                       const char *key);
/* Measured, and on the right side of its bound. */
bool bench_target_ok(const struct target *t);

/* One JSON object being printed: "key": value pairs, comma-separated. */
struct bench_json {
  FILE *f;
  bool first;
};
void bench_json_key(struct bench_json *j, const char *k);
void bench_json_num(struct bench_json *j, const char *k, double v); /* NaN: null */
void bench_json_u64(struct bench_json *j, const char *k, uint64_t v);
void bench_json_bool(struct bench_json *j, const char *k, bool v);
void bench_json_str_val(FILE *f, const char *s);
void bench_json_str(struct bench_json *j, const char *k, const char *s);
/* "targets": {key, key_target, key_ok for each of the n}, then
 * "targets_all_ok". */
void bench_json_targets(struct bench_json *j, const struct target *t,
                        size_t n);

/* A row of the table: label, measured, limit, ratio (NaN: "-"), target,
 * result. */
void bench_row(const char *label, const char *measured, const char *limit,
               double ratio, const char *target, const char *result);
/* v formatted with f into buf, "-" when not finite. */
const char *bench_fmt(char *buf, size_t len, const char *f, double v);
/* The row of target t. */
void bench_target_row(const struct target *t, const char *label,
                      const char *measured, const char *limit);

/* ptbench --cluster (bench_cluster_report.c): measures and reports. Exit
 * status as ptbench's. */
int bench_cluster_main(struct bench_opts *o, bool json);

#endif /* PT_BENCH_H */
