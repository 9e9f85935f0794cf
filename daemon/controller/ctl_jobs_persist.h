/*
 * ctl_jobs_persist.h — the persistent tier of a cluster job as the
 * controller keeps it (ctl_jobs_persist.c; pure, as ctl_jobs.c): the
 * per-job state inside struct ctl_job, and what the jobs' table, the
 * journal and the connections call. Part of controller.h.
 */
#ifndef PT_CTL_JOBS_PERSIST_H
#define PT_CTL_JOBS_PERSIST_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "rpc/pt.pb-c.h"

struct ctl_job;
struct ctl_jobs;

/* The persistent tier of a job (ctl_jobs_persist.c). */
#define CTL_DISK_MAX 16u            /* complete steps remembered */
#define CTL_PERSIST_PATH_MAX 896u   /* bytes of persist_dir, less than: a
                                     * node's --persist-dir limit */
#define CTL_PERSIST_EVERY_DEFAULT 100u
#define CTL_PERSIST_KEEP_DEFAULT 2u
#define CTL_PERSIST_RATE_DEFAULT (256ull << 20)
#define CTL_PERSIST_PENDING_MS 600000u /* a marked step's reports, due */

struct ctl_disk_step {
  uint64_t step, mark, unix_ms;
  uint64_t bytes;         /* every rank's data */
  bool bad;               /* a restore from it failed on some node */
  bool resumed;           /* of an earlier run, under spec.resume_from */
};
struct ctl_probe_step {
  uint64_t step, mark, bytes;
};
struct ctl_persist {
  uint64_t commits;       /* since the last mark: every K-th is marked */
  bool has_marked;
  uint64_t marked, mark;  /* the step being written, its flush id */
  uint64_t marked_until;  /* its reports are due by then */
  uint32_t nok;           /* parts that reported it durable */
  uint64_t ok_bytes;      /* ... their data bytes */
  bool *ok;               /* per part */
  bool failed;            /* some part could not write it */
  struct ctl_disk_step disk[CTL_DISK_MAX]; /* complete, ascending */
  uint32_t ndisk;
  uint64_t persisted;     /* steps made complete by this controller */
  char error[300];        /* the last flush that failed, why */
  bool next_disk;         /* the next epoch restores this step from disk */
  uint64_t next_step, next_mark;
  uint32_t rec;           /* the disk[] entry a PERSISTED record names */
  char why[256];          /* why memory could not serve */
  /* A cold start (spec.resume_from; ctl_jobs_probe.c): before the first
   * epoch, what every part's DISK_PROBE answer holds in common. */
  bool probing;
  bool *probed;           /* per part: answered */
  uint32_t nprobed;
  bool has_cand;          /* a first answer taken */
  struct ctl_probe_step cand[CTL_DISK_MAX]; /* ascending */
  uint32_t ncand;
  uint32_t other_world;   /* the newest step of another world size, */
  uint64_t other_step;    /*   as a node found it (0: none) */
  uint32_t emptied_by;    /* part + 1 whose answer left no step in
                             common; 0: none */
};

/* The wall clock, in ms since the epoch. */
uint64_t ctl_jobs_persist_unix_ms(void);
/* The job has a persist dir. */
bool ctl_jobs_persist_on(const struct ctl_job *j);
/* Step committed (journaled, before its JOB_COMMITs): every
 * persist_every'th is marked for disk. */
void ctl_jobs_persist_on_commit(struct ctl_job *j, uint64_t step);
/* Whether step's JOB_COMMIT asks for a flush; OUT *mark, its id. */
bool ctl_jobs_persist_marked(const struct ctl_job *j, uint64_t step,
                             uint64_t *mark);
/* STEP_PERSISTED of part p: once every part's files of the marked step are
 * durable, PERSISTED is journaled and JOB_PERSISTED goes to every part.
 * PT_OK, or the journal's error. */
int ctl_jobs_persist_report(struct ctl_jobs *js, struct ctl_job *j,
                            uint32_t p, uint64_t step, uint64_t mark,
                            int status, const char *msg, uint64_t bytes);
/* Part p missed the JOB_COMMIT of step: a marked step stays incomplete. */
void ctl_jobs_persist_missed(struct ctl_job *j, uint32_t p, uint64_t step);
/* Memory cannot serve the next epoch (why): it restores the newest
 * complete step on disk not found bad. False: there is none. */
bool ctl_jobs_persist_fallback(struct ctl_job *j, const char *why);
/* A part could not restore this epoch's step from disk: that step is bad;
 * the next epoch restores the complete one before it (true) or none is
 * left (false). */
bool ctl_jobs_persist_disk_failed(struct ctl_jobs *js, struct ctl_job *j,
                                  const char *why);
/* ptctl restore or revive: the operator's step, from memory (a part that
 * cannot serve it sends the job to disk again). */
void ctl_jobs_persist_operator(struct ctl_job *j);
/* The job goes back to step: the complete steps after it are dropped
 * (of a history it left). */
void ctl_jobs_persist_rollback(struct ctl_job *j, uint64_t step);
/* ctl_jobs_begin_epoch: the restore point of the next epoch (a disk step
 * when one was chosen: j->restore_disk, restore_mark), the mark dropped.
 * Until a step commits, every next epoch restores from disk too (one that
 * failed before memory held the job whole again). */
void ctl_jobs_persist_epoch(struct ctl_job *j, bool *has_from,
                            uint64_t *from);
/* The journal's EPOCH record restored from disk: so does the next epoch
 * until a step commits. */
void ctl_jobs_persist_replay_epoch(struct ctl_job *j);
/* The oldest complete step kept (JobPersisted.keep_from); 0: none. */
uint64_t ctl_jobs_persist_keep_from(const struct ctl_job *j);
/* The newest complete step on disk; NULL: none. */
const struct ctl_disk_step *ctl_jobs_persist_newest(const struct ctl_job *j);
/* The entry a PERSISTED record being journaled names (complete, or
 * found bad); NULL: none. */
const struct ctl_disk_step *ctl_jobs_persist_rec(const struct ctl_job *j);
/* The journal's PERSISTED record (bad: a restore found it damaged;
 * resumed: of an earlier run). PT_EFORMAT (why) for an unknown job. */
int ctl_jobs_persist_replay(struct ctl_jobs *js, const char *job,
                            uint64_t step, uint64_t mark, uint64_t ms,
                            uint64_t bytes, bool bad, bool resumed,
                            char *why, size_t len);
/* A step of an earlier run every part holds (a cold start): complete, as
 * the newest; journaled (PERSISTED, resumed). PT_OK or the journal's
 * error (not taken). */
int ctl_jobs_persist_found(struct ctl_jobs *js, struct ctl_job *j,
                           uint64_t step, uint64_t mark, uint64_t bytes);
/* Whether the step this epoch restores from disk is an earlier run's
 * (JobAssign.restore_disk_resume). */
bool ctl_jobs_persist_restore_resumed(const struct ctl_job *j);

/* ---- a cold start (ctl_jobs_probe.c) ---- */
#define CTL_PROBE_MS 60000u  /* a DISK_PROBE unanswered this long: the job
                                fails, naming the node */
/* Every part is asked (again) which steps its ranks' files hold. */
void ctl_jobs_probe_begin(struct ctl_jobs *js, struct ctl_job *j,
                          uint64_t now);
/* Part p is asked, when its node is connected and it has not answered. */
void ctl_jobs_probe_send(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                         uint64_t now);
/* Part p's DISK_PROBE_REPLY: once every part answered, the first epoch
 * restores the newest step they all hold, or the job fails saying why.
 * PT_EEPOCH: not this job's probe (ignored). */
int ctl_jobs_probe_reply(struct ctl_jobs *js, struct ctl_job *j, uint32_t p,
                         uint64_t epoch, const Pt__DiskProbeReply *m,
                         uint64_t now);
/* A probe's deadline (the job fails): true when the job is probing (its
 * other deadlines wait). */
bool ctl_jobs_probe_tick(struct ctl_jobs *js, struct ctl_job *j,
                         uint64_t now);

#endif /* PT_CTL_JOBS_PERSIST_H */
