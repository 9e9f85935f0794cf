/*
 * node_decider.h — the one seam of `ptd node` for who decides commits and
 * restores.
 *
 * Supervision (node_job.c, node_life.c, node_events.c) tells the decider
 * what the SMPs report and asks it what to do, through these operations
 * only; it never asks which decider it has. Today there is one:
 *
 *   node_decider_local  standalone (node_decide_local.c): the node runs the
 *                       commit module (daemon/commit/) over its SMPs, one
 *                       voter per local rank, and picks the restore step
 *                       from its own ranks' verified slots.
 *   node_decider_remote cluster mode (node_decide_remote.c): the
 *                       controller decides for the cluster; the node
 *                       forwards sealed steps (STEP_SEALED), relays the
 *                       controller's JOB_PIN, JOB_COMMIT and JOB_UNPIN to
 *                       the SMPs and their answers back (JOB_VOTE), and
 *                       answers restore_step with the JOB_ASSIGN's step.
 *
 * Every operation runs on the loop thread, inside node_job_drive() or a frame
 * handler that calls node_job_drive() afterwards. What a decider commits it
 * records in struct node (has_committed, committed, commits, ...), which
 * node.state persists and ptctl shows.
 */
#ifndef PT_NODE_DECIDER_H
#define PT_NODE_DECIDER_H

#include <stdbool.h>
#include <stdint.h>

struct node;
struct node_rank;
struct node_req;
struct node_rank_slots;

struct node_decider {
  const char *name;
  /* Whether the node restarts failed ranks by itself (standalone), or a
   * failure ends the ranks and goes to whoever decides (the controller:
   * the node reports its part failed and the controller picks the next
   * epoch). */
  bool restarts_ranks;
  /* Whether restore_step needs only the newest step every local rank holds
   * intact (standalone: the node decides from its own ranks), so that the
   * SMPs may verify their slots newest first and stop at the first intact
   * one; the node reads the rest only when that cannot decide. False where
   * others decide from every step the node holds (the controller). */
  bool verify_newest_first;
  /* Once, after node.state was read (n->has_committed, n->committed are
   * the job's): sets up n->decider_data. Non-zero: the node cannot run. */
  int (*open)(struct node *n);
  void (*close)(struct node *n);

  /* Rank r (re)subscribed: r->view is what its SMP holds now. */
  void (*on_view)(struct node *n, struct node_rank *r);
  /* Rank r sealed step (its SMP's EVENT_SEALED). */
  void (*on_sealed)(struct node *n, struct node_rank *r, uint64_t step);
  /* The end of a request the decider sent (kinds NODE_REQ_PIN, _COMMIT,
   * _UNPIN, _RECOMMIT, _STALE_UNPIN): answered with status (text: its
   * message or the code's), or, answered false, no answer will come (the
   * connection went or the deadline passed; status is the cause). */
  void (*on_answer)(struct node *n, struct node_rank *r,
                    const struct node_req *q, bool answered, int status,
                    const char *text);
  /* The job runs (NODE_PH_RUNNING, or STARTING with adopted trainers):
   * moves commits on: rounds, deadlines, pins that rounds left behind. */
  void (*drive)(struct node *n, uint64_t now);
  /* A commit of step is under way (the job's end waits for it). */
  bool (*busy)(const struct node *n, uint64_t *step);
  /* A restart or the end: the commit under way is dropped without a word;
   * answers still to come are ignored. */
  void (*drop)(struct node *n);

  /* The step to restore from, given every rank's verified slots (nranks
   * entries). PT_OK: decided; OUT: *has (false: start fresh), *step.
   * -EINPROGRESS: not yet (node_job_drive runs again when it is). */
  int (*restore_step)(struct node *n, const struct node_rank_slots *views,
                      uint32_t nranks, bool *has, uint64_t *step);
  /* Every SMP took SET_RESTORE: n->has_committed/n->committed is the
   * restore point, every pin and every newer step is gone. */
  void (*restored)(struct node *n);

  /* When drive has something to do by itself; UINT64_MAX: never. */
  uint64_t (*next_deadline)(const struct node *n);
};

extern const struct node_decider node_decider_local;
extern const struct node_decider node_decider_remote;

/* What the controller link (node_part.c) tells the remote decider, once
 * the epoch fence let the decision through (it names the part's epoch). */
/* JOB_PIN{step} with request id: PIN on every local SMP, then JOB_VOTE. */
void node_decide_remote_pin(struct node *n, uint64_t id, uint64_t step);
/* JOB_COMMIT{step} (or a JOB_ASSIGN's committed_step): COMMIT on every
 * local SMP, recorded as the committed step. */
void node_decide_remote_commit(struct node *n, uint64_t step);
/* JOB_UNPIN{step}: UNPIN on every local SMP. */
void node_decide_remote_unpin(struct node *n, uint64_t step);
/* The assignment's restore point (has false: start fresh). */
void node_decide_remote_assigned(struct node *n, bool has, uint64_t step);
/* The node (re)registered: the newest step every local rank sealed is
 * reported again. */
void node_decide_remote_link_up(struct node *n);
/* The newest step every local rank sealed in this epoch. */
bool node_decide_remote_last_sealed(const struct node *n, uint64_t *step);

#endif /* PT_NODE_DECIDER_H */
