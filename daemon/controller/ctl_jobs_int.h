/*
 * ctl_jobs_int.h — what ctl_jobs.c shares with ctl_jobs_replay.c, its
 * rebuild from the journal, its other parts (commit, node, tick, revive),
 * and with nothing else.
 */
#ifndef PT_CTL_JOBS_INT_H
#define PT_CTL_JOBS_INT_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "daemon/controller/controller.h"

/* The live (not ended) job of that name; NULL when none. */
struct ctl_job *ctl_jobs_find_live(struct ctl_jobs *js, const char *name);
/* A new job in the table, in state STARTING, its parts unbound (node ids
 * empty, epoch 0): the caller names them. -ENOMEM. */
int ctl_jobs_job_new(struct ctl_jobs *js, const Pt__JobSpec *spec,
                     struct ctl_job **out);
/* Part p of j runs on member node (an index in js->m->nodes). */
void ctl_jobs_bind_node(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                        size_t node);
/* Drops the jobs that ended first beyond CTL_ENDED_KEEP, never keep. */
void ctl_jobs_trim_ended(struct ctl_jobs *js, const struct ctl_job *keep);
/* A deep copy (protobuf-c unpacked; free with
 * protobuf_c_message_free_unpacked); NULL when out of memory. */
Pt__JobSpec *ctl_jobs_spec_copy(const Pt__JobSpec *s);

/* The node of part p is connected and not dead: it can be sent to. */
bool ctl_jobs_part_connected(struct ctl_jobs *js, const struct ctl_job *j,
                             uint32_t p);

/* Why j ended or restarts, for ptctl and the END record. */
void ctl_jobs_reason_set(struct ctl_job *j, const char *fmt, ...)
    __attribute__((format(printf, 2, 3)));
/* Sends part p its assignment of j's epoch (JOB_ASSIGN), with a deadline
 * for its answer. */
void ctl_jobs_assign_part(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                          uint64_t now);
/* JOB_HALT to every part (except_down: not to those whose node is down). */
void ctl_jobs_halt_all(struct ctl_jobs *js, struct ctl_job *j, bool remove,
                       uint64_t now, bool except_down);
/* The next epoch of j, from step from (has_from) or fresh: journaled, then
 * every part assigned. */
int ctl_jobs_begin_epoch(struct ctl_jobs *js, struct ctl_job *j, bool has_from,
                         uint64_t from, uint64_t now);

/* The member node part p of j runs on; NULL when it has not registered. */
struct ctl_node *ctl_jobs_part_node(struct ctl_jobs *js,
                                    const struct ctl_job *j, uint32_t p);
/* j ends in state st: journaled (END), its parts halted, its nodes freed. */
void ctl_jobs_end_job(struct ctl_jobs *js, struct ctl_job *j,
                      enum ctl_job_state st, uint64_t now);
/* A restart of j is due (why): counted in its window, then after the
 * backoff a new epoch, or the end when no restarts are left. */
void ctl_jobs_restart_counted(struct ctl_jobs *js, struct ctl_job *j,
                              uint64_t now, const char *why);

/* ctl_jobs_persist.c: part of j failed (m, why): the tier's part of the
 * verdict. True: decided (restarted from an older step on disk, or ended
 * with none left); false: the caller goes on (a disk step may have been
 * chosen for the next epoch). */
bool ctl_jobs_persist_part_failed(struct ctl_jobs *js, struct ctl_job *j,
                                  const Pt__JobPartState *m, const char *why,
                                  uint64_t now);

/* ctl_jobs_node.c: every node of j is registered and alive. */
bool ctl_jobs_node_all_alive(struct ctl_jobs *js, const struct ctl_job *j);

/* ctl_jobs_revive.c: the step a restore's epoch restores (OUT *has,
 * *from: the committed step, or step when asked: committed, and held by
 * every part as its last report said), or -ENOENT with err. */
int ctl_jobs_revive_pick_step(const struct ctl_job *j, bool has_step,
                              uint64_t step, bool *has, uint64_t *from,
                              char *err, size_t errlen);
/* ptctl restore of the ended job j: refused (what it is, and why) unless
 * its snapshots are kept and its nodes are alive and free; then live again
 * in a new epoch, its restarts' budget and backoff started over. */
int ctl_jobs_revive_job(struct ctl_jobs *js, struct ctl_job *j, bool has_step,
                        uint64_t step, uint64_t now, bool *has_restored,
                        uint64_t *restored, char *err, size_t errlen);

/* ctl_jobs_revive.c: part pt of j failed with PT_ECHECKSUM (the epoch's
 * restore step is damaged there; m its report, why the reason so far):
 * the next epoch restores the newest older step pt holds intact
 * (j->has_fallback), or, with none, j fails. False when j ended. */
bool ctl_jobs_revive_damaged(struct ctl_jobs *js, struct ctl_job *j,
                             const struct ctl_part *pt,
                             const Pt__JobPartState *m, const char *why,
                             uint64_t now);

/* ctl_jobs_commit.c: the commit module's seam. */
extern const struct commit_ops ctl_jobs_commit_ops;
/* A part's newest sealed step + 1 (0: none), what the gate compares. */
uint64_t ctl_jobs_commit_seal_of(const struct ctl_part *pt);
/* Starts a round for j when one is possible (every part sealed a step
 * newer than the floor, none open). */
void ctl_jobs_commit_drive(struct ctl_job *j, uint64_t now);
/* A coded job's part p reported step pinned: when another part holds a pin
 * of another step (each node holds one at a time, each SMP protects one
 * step at a time and skips the rest: two node groups fell out of step),
 * neither can commit; both are let go of on every part (JOB_UNPIN), which
 * frees every SMP of the job at one moment for the same next step. */
void ctl_jobs_commit_realign(struct ctl_jobs *js, struct ctl_job *j,
                             uint32_t p, uint64_t step);
/* ctl_jobs_spare.c: part p's node came back empty under its own id (its
 * SMPs rebuilt the restore step): a lost member of its groups until the
 * next commit, as an empty spare is. */
void ctl_jobs_spare_rebuilt(struct ctl_job *j, uint32_t p);

/* ctl_jobs_spare.c: a node group of j lost more members (dead nodes,
 * empty spares) than its code tolerates while a step is committed: j ends
 * failed, naming them (true). */
bool ctl_jobs_spare_lost_check(struct ctl_jobs *js, struct ctl_job *j,
                               uint64_t now);
/* Every dead node of the coded job j gets a spare (or none does: false):
 * placed, journaled with a new epoch restoring the committed step, assigned
 * (true). */
bool ctl_jobs_spare_take(struct ctl_jobs *js, struct ctl_job *j, uint64_t now);
/* j rebuilt from the journal, a node of it not registered again within
 * dead-after: as a dead node, a spare in its place (or the job fails, its
 * group having lost too many). True when j moved on (or ended). */
bool ctl_jobs_spare_recovering(struct ctl_jobs *js, struct ctl_job *j,
                               uint64_t now);
/* A step committed after the spares' placement: none is empty any more. */
void ctl_jobs_spare_protected(struct ctl_job *j);

#endif /* PT_CTL_JOBS_INT_H */
