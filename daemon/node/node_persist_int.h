/*
 * node_persist_int.h — what node_persist.c and node_persist_restore.c
 * share: the tier's state and the listing of step directories. Not an
 * interface (that is node_persist.h).
 */
#ifndef PT_NODE_PERSIST_INT_H
#define PT_NODE_PERSIST_INT_H

#include <stdbool.h>
#include <stdint.h>

#include <uv.h>

#include "daemon/node/node.h"

struct node_persist {
  struct node *n;
  int rootfd, jobfd;         /* --persist-dir and its job directory; -1:
                              * none (only --resume-from) */
  int resumefd;              /* --resume-from's job directory; -1: none */
  char resume_dir[NODE_PERSIST_PATH_MAX + SNAP_JOB_MAX + 1];
  bool picked_resume;        /* the last pick came from resumefd */
  char job_dir[NODE_PERSIST_PATH_MAX + SNAP_JOB_MAX + 1];
  uint64_t commits;          /* since start: every K-th is marked */
  bool has_marked;
  uint64_t marked;           /* the step whose files are being written */
  uint32_t nok;              /* ranks whose file of marked is durable */
  uint64_t ok_bytes;         /* ... and their data bytes */
  /* a cluster's STEP_PERSISTED the link did not take: sent again when it
   * is back (the controller waits for it) */
  bool owed;
  int owed_status;
  uint64_t owed_step, owed_mark, owed_bytes;
  char owed_msg[300];
  bool *ok;                  /* per local rank */
  bool failed;               /* some rank could not write marked */
  uint64_t marked_until;     /* its ranks' answers are due by then */
  uint64_t mark, mark_seq;   /* the marked step's flush id; ids made */
  uint64_t w_mark;           /* the flush whose manifest is being written */
  uint64_t picked_mark;      /* the MANIFEST mark of the last pick */
  bool has_complete;
  uint64_t complete;         /* the newest complete step on disk */
  uint64_t complete_unix_ms;
  uint64_t persisted, failures;
  char last_error[600];
  /* complete steps whose files failed a restore (EVENT_LOAD_FAILED):
   * never picked again by this node */
  uint64_t bad[16];
  uint32_t nbad;
  /* the manifest's work on the pool */
  uv_work_t work;
  bool busy;
  bool orphan;               /* closed while busy: freed when it ends */
  uint32_t w_nremoved;       /* a cluster's pruning: steps it removed */
  uint32_t w_first_rank, w_ranks; /* ... of these ranks' files (the part
                              * as it was queued: n->cfg changes) */
  uint64_t w_step;
  int w_rc;
  char w_msg[400];
};

#define PS(n) ((n)->persist)

/* Frees a tier no node points to (its work ended). */
void node_persist_free(struct node_persist *ps);

/* Whether step's MANIFEST under jobfd names instance_hex (false: none,
 * unreadable, another's); whether a MANIFEST is there and names another
 * instance. */
bool node_persist_ours(int jobfd, uint64_t step, const char *instance_hex);
bool node_persist_complete_foreign(int jobfd, uint64_t step,
                                   const char *instance_hex);
/* Removes the files of step's directory under jobfd that mine(name, arg)
 * claims (mine NULL: every file, MANIFEST first, so that the step is
 * incomplete from the first unlink on), then the directory once it is
 * empty. OUT *any (may be NULL): a file was removed. PT_OK: the directory
 * is gone; else -errno (-ENOTEMPTY: files mine did not claim are left). */
int node_persist_step_remove(int jobfd, uint64_t step,
                             bool (*mine)(const char *name, const void *arg),
                             const void *arg, bool *any);
/* "step-<20 digits>". */
void node_persist_step_name(char *out, size_t len, uint64_t step);
/* The step directories under jobfd: OUT steps[] (ascending), complete[]
 * (a MANIFEST is there); returns how many (at most cap). */
uint32_t node_persist_steps_list(int jobfd, uint64_t *steps, bool *complete,
                                 uint32_t cap);

#endif /* PT_NODE_PERSIST_INT_H */
