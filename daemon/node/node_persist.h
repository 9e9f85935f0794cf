/*
 * node_persist.h — the persistent tier of a standalone `ptd node`
 * (node_persist.c): which commits are written to disk, the manifests that
 * make a step complete, the pruning of old steps, and what ptctl shows.
 */
#ifndef PT_NODE_PERSIST_H
#define PT_NODE_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/pt.pb-c.h"
#include "snapshot/snap_store.h"

struct node;
struct node_rank;

#define NODE_MANIFEST_MAX (64 * 1024) /* bytes of a MANIFEST at most */
#define NODE_PERSIST_LIST_MAX 4096    /* step directories looked at */
#define NODE_PERSIST_PENDING_MS 600000u /* a marked step's answers, due */

/* A MANIFEST as read (node_persist.c names its lines). */
struct node_manifest {
  char job[SNAP_JOB_MAX];
  char instance_hex[33];
  uint64_t step, unix_ms, mark;
  uint32_t world;
  uint64_t bytes[1024]; /* per rank: its file's bytes (NODE_MAX_RANKS) */
};

struct node_persist_status {
  bool on, has_complete;
  uint64_t complete, complete_unix_ms; /* the newest complete step */
  uint64_t persisted, failures;        /* since the node started */
  char last_error[600];
  char dir[1100];
};

/* At start: checks --persist-dir, makes and checks <dir>/<job>, removes a
 * crash's leftovers. PT_OK without --persist-dir; else a sentence in err. */
int node_persist_open(struct node *n, char *err, size_t len);
/* After the loop ended. */
void node_persist_close(struct node *n);
/* <dir>/<job>, passed to every SMP as --persist-dir; NULL: none. */
const char *node_persist_job_dir(const struct node *n);
/* A step committed (the verdict, before its COMMITs go out): every
 * --persist-every'th is marked. */
void node_persist_on_commit(struct node *n, uint64_t step);
/* A restore to step (has: else a fresh start): the marked step (if any)
 * is not waited for. */
void node_persist_restored(struct node *n, bool has, uint64_t step);
/* Whether the COMMIT of step asks the SMP to write it; OUT: *mark, the
 * flush's id (may be NULL). */
bool node_persist_marked(const struct node *n, uint64_t step, uint64_t *mark);
/* The MANIFEST mark of the step the last pick chose (SetRestore). */
uint64_t node_persist_restore_mark(const struct node *n);
/* An SMP's EVENT_PERSISTED. */
void node_persist_on_event(struct node *n, struct node_rank *r,
                           const Pt__Event *e);
void node_persist_status(const struct node *n, struct node_persist_status *st);

/* The restore's choice on disk: the newest complete step whose manifest
 * names this job, instance and world, and which no restore found damaged
 * here. False: none. why: a sentence for the log. */
bool node_persist_restore_pick(struct node *n, uint64_t *step, char *why, size_t len);
/* --resume-from: the job instance of the newest complete step under
 * <dir>/<job> becomes n's (n->instance, instance_hex). Refused (a sentence
 * in why) when there is none, or its world is not --ranks. PT_OK: why says
 * what was found. */
int node_persist_restore_instance(struct node *n, char *why, size_t len);
/* The directory of step on disk (SetRestore.from_disk). */
int node_persist_restore_step_dir(const struct node *n, uint64_t step, char *out,
                          size_t len);
/* An SMP's EVENT_LOAD_FAILED: the step is not picked again. */
void node_persist_restore_load_failed(struct node *n, struct node_rank *r,
                                 const Pt__Event *e);

/* ---- a cluster's part (node_persist_cluster.c) ---- */

/* node_persist_probe.c: the controller's DISK_PROBE (request id id),
 * answered with DISK_PROBE_REPLY once the directory is read on libuv's
 * pool; a malformed one is refused at once. */
void node_persist_probe_on_msg(struct node *n, uint64_t id,
                               const Pt__DiskProbe *m);

/* JOB_COMMIT{persist, mark} of step: the COMMITs to the SMPs carry it. */
void node_persist_cluster_mark(struct node *n, uint64_t step, uint64_t mark);
/* Every local rank wrote the marked step (status PT_OK) or one failed:
 * STEP_PERSISTED to the controller. */
void node_persist_cluster_report(struct node *n, int status, const char *msg);
/* The link (re)registered: a STEP_PERSISTED it did not take goes again. */
void node_persist_cluster_link_up(struct node *n);
/* JOB_PERSISTED: step is complete; this node's files of steps older than
 * keep_from are removed (on the pool). */
void node_persist_cluster_complete(struct node *n, uint64_t step,
                                   uint64_t mark, uint64_t keep_from);
/* The assignment restores step from disk, the files of flush mark. */
void node_persist_cluster_restore(struct node *n, uint64_t step,
                                  uint64_t mark, bool resume);

/* One step directory on disk, for ptctl snapshots. */
struct node_disk_step {
  uint64_t step, bytes, age_ms;
  uint32_t files;
  bool complete, ours;
  char why[240];
};
/* The newest cap step directories under --persist-dir, oldest first
 * (reads the directory and each MANIFEST: for ptctl, not the hot path).
 * Returns how many. */
uint32_t node_persist_restore_list(const struct node *n,
                                   struct node_disk_step *out, uint32_t cap);

/* The MANIFEST text of a step into buf: its length, or -E2BIG. bytes:
 * world entries. */
int node_persist_manifest_format(char *buf, size_t cap, const char *job,
                                 const char *instance_hex, uint64_t step,
                                 uint32_t world, uint64_t unix_ms,
                                 uint64_t mark, const uint64_t *bytes);
/* Parses and checks a MANIFEST (its checksum line, every field once, one
 * line per rank in order). PT_EFORMAT with a sentence. */
int node_persist_manifest_parse(const char *buf, size_t len,
                                struct node_manifest *m, char *err,
                                size_t errlen);
/* MANIFEST of the step directory stepfd. -ENOENT: none (incomplete). */
int node_persist_manifest_read(int stepfd, struct node_manifest *m, char *err,
                               size_t errlen);

#endif /* PT_NODE_PERSIST_H */
