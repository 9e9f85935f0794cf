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
 *
 * A remote decider (the controller deciding for a cluster of nodes) fills
 * the same table: it forwards sealed steps, relays the controller's PIN,
 * COMMIT and UNPIN to the SMPs and their answers back, and answers
 * restore_step once the controller chose (-EINPROGRESS until then).
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

#endif /* PT_NODE_DECIDER_H */
