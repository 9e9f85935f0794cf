/*
 * node_part_int.h — what the files of a cluster-mode node's job part share
 * (node_part.c, its life and the controller's decisions;
 * node_part_start.c, its start from the assignment;
 * node_part_record.c, <state-dir>/part.state; node_part_report.c,
 * JOB_PART_STATE), and nothing else does.
 */
#ifndef PT_NODE_PART_INT_H
#define PT_NODE_PART_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/node/node.h"

#define PART_MAGIC "PTPART01"
#define PART_VERSION 2u /* 1: without the failure's tail (still read) */
#define PART_HEAD (8u + 4u + 4u + SNAP_INSTANCE_BYTES + 4u + 4u)
#define PART_TAIL_FIXED (4u + 4u + 4u + 4u) /* flags, status, length, CRC */
#define PART_F_PERMANENT 1u /* fail_permanent */
#define PART_MAX (1u << 20)

enum part_end { PART_RUNNING = 0, PART_STOPPED, PART_FAILED, PART_DONE };

struct node_part {
  struct node *n;
  char path[NODE_PATH_MAX + 32];
  /* The part recorded (has): its job, epoch and assignment. */
  bool has;
  char job[SNAP_JOB_MAX];
  uint64_t epoch;
  uint8_t instance[SNAP_INSTANCE_BYTES];
  uint8_t *buf; /* the JobAssign, packed */
  size_t len;
  enum part_end end;
  bool active;  /* ranks allocated and supervised */
  const char *reported; /* the last state reported; NULL: none */
  int fail_status;
  char fail_msg[300];
  bool fail_permanent; /* no restart cures it: the job fails */
  bool fail_disk;      /* the restore of its step from disk failed */
  /* A failed part: the steps its ranks held intact when it ended (what
   * JOB_PART_STATE says once its ranks are gone). */
  uint64_t end_held[SNAP_MAX_SLOTS];
  size_t n_end_held;
  /* Waiting for the active part's ranks to stop. */
  uint8_t *next_buf; /* an assignment of a newer epoch */
  size_t next_len;
  uint64_t next_id;
  bool halt_pending, halt_remove;
  uint64_t halt_id;
  bool stop_node;
  char stop_by[64];
  /* Ranks of ended parts: freed one part later, when no callback of
   * theirs can come any more. */
  struct node_rank *retired;
  char **cmd;
  uint32_t ncmd;
};

static inline struct node_part *node_part_of(const struct node *n)
{
  return n->part;
}

/* node_part_start.c: starts the part of the assignment in p->buf
 * (request id: its answer; adopt: the node's own restart, the part
 * recorded running); the job's first epoch (absent: 1, a controller from
 * before it); the trainer command freed. */
void node_part_start_run(struct node *n, uint64_t id, bool adopt);
uint64_t node_part_start_first_epoch(const Pt__JobAssign *a);
void node_part_start_free_cmd(struct node_part *p);

/* "running", "stopped", "failed", "done". */
const char *node_part_report_end_name(enum part_end e);

/* node_part_record.c: part.state written atomically from p (its
 * assignment and end), and read back (PT_OK, -ENOENT when none, else an
 * error with a sentence in err). */
int node_part_record_write(struct node_part *p);
int node_part_record_read(struct node_part *p, char *err, size_t errlen);

/* node_part_report.c: the part's state as the controller hears it now
 * (NULL while its ranks stop); JOB_PART_STATE of it as the answer to id
 * (0: unsolicited); a refused assignment's. */
const char *node_part_report_state_now(const struct node *n);
void node_part_report_send(struct node *n, uint64_t id, const char *state);
/* The steps every rank of the active part holds intact (newest last as
 * the SMPs reported them; while trainers run, the committed step).
 * OUT: held (cap entries). Returns how many. */
size_t node_part_report_held(const struct node *n, uint64_t *held,
                             size_t cap);
void node_part_report_refusal(struct node *n, uint64_t id, const char *job,
                              uint64_t epoch, int status, const char *why);

#endif /* PT_NODE_PART_INT_H */
