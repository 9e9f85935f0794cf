/*
 * ctl_jobs_persist.c — the persistent tier of a cluster job, as the
 * controller runs it (pure, as ctl_jobs.c; DESIGN.md, "Persistent tier").
 *
 *   - Every spec.persist_every'th commit is marked: its JOB_COMMITs carry
 *     persist and the flush's id (mark), and each node's SMPs write the step
 *     to <persist_dir>/<job>/step-<N>/rank-<global rank>.pts beside
 *     training. Each node answers STEP_PERSISTED once its ranks' files are
 *     durable (or with the first failure).
 *   - Once every part said so the step is complete: PERSISTED(job, step,
 *     mark) is journaled (durable on return) before anything else hears
 *     of it, then JOB_PERSISTED goes to every node, which removes its
 *     ranks' files of the steps older than the oldest complete one kept
 *     (spec.persist_keep). The journal is the cluster's manifest: a step
 *     is complete when its PERSISTED record is there, and only a complete
 *     step is ever restored from disk.
 *   - One step is marked at a time: the next mark comes at the first
 *     commit at least persist_every commits after the last one that finds
 *     the marked step done, failed, or overdue (CTL_PERSIST_PENDING_MS), so
 *     a slow disk makes marks rarer and never leaves every step incomplete.
 *     A new epoch drops the mark (its late reports name the old one).
 *   - Restore: where memory cannot serve (more of a node group lost than
 *     its code tolerates, the restore step gone or damaged on every copy),
 *     the next epoch restores the newest complete step no restore found
 *     damaged, from disk, and says so (ctl_jobs_persist_fallback); a node
 *     whose files of it fail (missing, damaged, foreign: disk_failed) marks
 *     it bad and the next epoch takes the complete step before it. None
 *     left: the job fails and says why.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <sodium.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

static uint64_t clock_ms(clockid_t id)
{
  struct timespec ts;
  clock_gettime(id, &ts);
  return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
#define unix_ms() clock_ms(CLOCK_REALTIME)

uint64_t ctl_jobs_persist_unix_ms(void)
{
  return unix_ms();
}

bool ctl_jobs_persist_on(const struct ctl_job *j)
{
  return j->spec->persist_dir != NULL && j->spec->persist_dir[0] != '\0';
}

void ctl_jobs_persist_on_commit(struct ctl_job *j, uint64_t step)
{
  struct ctl_persist *ps = &j->persist;
  /* (The commit module's verdict carries no time: the deadline is
   * minutes, the monotonic clock serves.) */
  uint64_t now = clock_ms(CLOCK_MONOTONIC);
  ps->next_disk = false; /* memory holds the job whole again */
  if (!ctl_jobs_persist_on(j) || ++ps->commits < j->spec->persist_every)
    return;
  if (ps->has_marked && !ps->failed && now < ps->marked_until) {
    log_debug("job '%s': step %" PRIu64 " not marked for disk: step %"
              PRIu64 " is still being written (%" PRIu32 " of %" PRIu32
              " nodes done)", j->spec->name, step, ps->marked, ps->nok,
              j->nparts);
    return;
  }
  if (ps->has_marked && !ps->failed)
    log_notice("job '%s': step %" PRIu64 " given up on disk: %" PRIu32 " of %"
               PRIu32 " nodes wrote it in %u s", j->spec->name, ps->marked,
               ps->nok, j->nparts, CTL_PERSIST_PENDING_MS / 1000u);
  ps->commits = 0;
  ps->has_marked = true;
  ps->marked = step;
  ps->marked_until = now + CTL_PERSIST_PENDING_MS;
  /* Bound into every file: unique across the controller's restarts and
   * the controllers that share a directory, and not guessable (a file
   * of another instance is taken by its mark alone). Never 0. */
  if (sodium_init() < 0) /* (once; idempotent) */
    ps->mark = unix_ms() * 1000u + ps->commits; /* (never: as at start) */
  else
    do
      randombytes_buf(&ps->mark, sizeof(ps->mark));
    while (ps->mark == 0);
  ps->nok = 0;
  ps->ok_bytes = 0;
  ps->failed = false;
  memset(ps->ok, 0, j->nparts * sizeof(*ps->ok));
  log_debug("job '%s': step %" PRIu64 " marked for disk (flush %" PRIu64 ")",
            j->spec->name, step, ps->mark);
}

bool ctl_jobs_persist_marked(const struct ctl_job *j, uint64_t step,
                             uint64_t *mark)
{
  const struct ctl_persist *ps = &j->persist;
  bool yes = ps->has_marked && !ps->failed && ps->marked == step;
  *mark = yes ? ps->mark : 0;
  return yes;
}

/* The oldest n entries of disk[] go. */
static void disk_drop(struct ctl_persist *ps, uint32_t n)
{
  memmove(ps->disk, ps->disk + n, (ps->ndisk - n) * sizeof(*ps->disk));
  ps->ndisk -= n;
}

/* A complete step: the newest, after the persist_keep newest good ones
 * before it are kept (bad ones do not count: they are never restored),
 * and what is older goes (the nodes remove their files). */
static void disk_add(struct ctl_job *j, uint64_t step, uint64_t mark,
                     uint64_t ms, uint64_t bytes, bool resumed)
{
  struct ctl_persist *ps = &j->persist;
  /* A job taken back to an older step writes its steps again: what is
   * newer than the new one is no longer the job's history. */
  while (ps->ndisk > 0 && ps->disk[ps->ndisk - 1].step >= step)
    ps->ndisk--;
  uint32_t keep = j->spec->has_persist_keep && j->spec->persist_keep > 0
                      ? j->spec->persist_keep
                      : CTL_PERSIST_KEEP_DEFAULT;
  if (keep > CTL_DISK_MAX - 1)
    keep = CTL_DISK_MAX - 1;
  /* keep - 1 good ones before the new one, and the bad ones among them */
  uint32_t good = 0, from = ps->ndisk;
  while (from > 0 && good < keep - 1)
    good += !ps->disk[--from].bad;
  disk_drop(ps, from);
  if (ps->ndisk == CTL_DISK_MAX)
    disk_drop(ps, 1);
  ps->disk[ps->ndisk++] = (struct ctl_disk_step){
      .step = step, .mark = mark, .unix_ms = ms, .bytes = bytes,
      .resumed = resumed};
}

/* The entry of step's flush mark; NULL: not (or no longer) complete. */
static struct ctl_disk_step *disk_find(struct ctl_persist *ps, uint64_t step,
                                       uint64_t mark)
{
  for (uint32_t i = 0; i < ps->ndisk; i++)
    if (ps->disk[i].step == step && ps->disk[i].mark == mark)
      return &ps->disk[i];
  return NULL;
}

int ctl_jobs_persist_report(struct ctl_jobs *js, struct ctl_job *j,
                            uint32_t p, uint64_t step, uint64_t mark,
                            int status, const char *msg, uint64_t bytes)
{
  struct ctl_persist *ps = &j->persist;
  if (!ps->has_marked || ps->marked != step || ps->mark != mark ||
      p >= j->nparts) {
    log_debug("job '%s': node '%s' reported flush %" PRIu64 " of step %"
              PRIu64 ", not the marked one", j->spec->name,
              p < j->nparts ? j->parts[p].node_id : "?", mark, step);
    return PT_OK;
  }
  if (status != PT_OK) {
    if (!ps->failed) {
      snprintf(ps->error, sizeof(ps->error), "step %" PRIu64 ": node '%.64s': "
               "%.180s", step, j->parts[p].node_id,
               msg != NULL && msg[0] != '\0' ? msg : pt_strerror(status));
      log_warn("job '%s': %s; the step stays incomplete on disk, training "
               "goes on", j->spec->name, LOG_ESC(ps->error));
    }
    ps->failed = true;
    return PT_OK;
  }
  if (!ps->ok[p]) {
    ps->ok[p] = true;
    ps->nok++;
    ps->ok_bytes += bytes;
  }
  if (ps->failed || ps->nok < j->nparts)
    return PT_OK;
  ps->has_marked = false;
  struct ctl_persist was = *ps;
  disk_add(j, step, mark, unix_ms(), ps->ok_bytes, false);
  ps->rec = ps->ndisk - 1;
  int rc = js->ops->journal(js->ctx, j, CTL_REC_PERSISTED);
  if (rc != PT_OK) {
    /* Not durable: not complete. */
    memcpy(ps->disk, was.disk, sizeof(ps->disk));
    ps->ndisk = was.ndisk;
    snprintf(ps->error, sizeof(ps->error), "step %" PRIu64 ": the journal "
             "did not take it (%s)", step, pt_strerror(rc));
    log_warn("job '%s': %s", j->spec->name, ps->error);
    return rc;
  }
  ps->persisted++;
  log_info("job '%s': step %" PRIu64 " is complete on disk (every rank's "
           "file under '%s/%s')", j->spec->name, step,
           LOG_ESC(j->spec->persist_dir), j->spec->name);
  for (uint32_t q = 0; q < j->nparts; q++)
    if (ctl_jobs_part_connected(js, j, q))
      (void)js->ops->persisted(js->ctx, j, q);
  return PT_OK;
}

void ctl_jobs_persist_missed(struct ctl_job *j, uint32_t p, uint64_t step)
{
  struct ctl_persist *ps = &j->persist;
  if (!ps->has_marked || ps->marked != step || ps->failed || p >= j->nparts)
    return;
  ps->failed = true;
  snprintf(ps->error, sizeof(ps->error), "step %" PRIu64 ": node '%.64s' "
           "did not get its commit (and the mark)", step, j->parts[p].node_id);
  log_notice("job '%s': %s; the step stays incomplete on disk",
             j->spec->name, ps->error);
}

bool ctl_jobs_persist_fallback(struct ctl_job *j, const char *why)
{
  struct ctl_persist *ps = &j->persist;
  for (uint32_t i = ps->ndisk; i-- > 0;) {
    const struct ctl_disk_step *d = &ps->disk[i];
    if (d->bad)
      continue;
    if (!ps->next_disk || ps->next_step != d->step || ps->next_mark != d->mark)
      log_notice("job '%s': %s: the next epoch restores step %" PRIu64
                 " from disk (the newest complete one)", j->spec->name, why,
                 d->step);
    ps->next_disk = true;
    ps->next_step = d->step;
    ps->next_mark = d->mark;
    snprintf(ps->why, sizeof(ps->why), "%s", why);
    /* Nothing completes meanwhile (the mark goes): the step chosen is
     * never pruned before its epoch. */
    ps->has_marked = false;
    return true;
  }
  return false;
}

bool ctl_jobs_persist_disk_failed(struct ctl_jobs *js, struct ctl_job *j,
                                  const char *why)
{
  struct ctl_persist *ps = &j->persist;
  struct ctl_disk_step *d =
      j->restore_disk ? disk_find(ps, j->restore_step, j->restore_mark) : NULL;
  if (d != NULL && !d->bad) {
    d->bad = true;
    log_warn("job '%s': step %" PRIu64 " on disk cannot be restored (%s); "
             "never tried again", j->spec->name, j->restore_step,
             LOG_ESC(why));
    /* Journaled: a restarted controller does not try it again. */
    ps->rec = (uint32_t)(d - ps->disk);
    (void)js->ops->journal(js->ctx, j, CTL_REC_PERSISTED);
  }
  ps->next_disk = false;
  return ctl_jobs_persist_fallback(j, "the restore from disk failed");
}

void ctl_jobs_persist_operator(struct ctl_job *j)
{
  /* Her step, from memory; a part that cannot serve it sends the job to
   * disk again (PT_ENOFRAG). */
  j->persist.next_disk = false;
}

void ctl_jobs_persist_rollback(struct ctl_job *j, uint64_t step)
{
  struct ctl_persist *ps = &j->persist;
  /* The steps after it are done again: their files are of a history the
   * job left (the nodes remove them as newer ones complete). */
  while (ps->ndisk > 0 && ps->disk[ps->ndisk - 1].step > step)
    ps->ndisk--;
}

bool ctl_jobs_persist_part_failed(struct ctl_jobs *js, struct ctl_job *j,
                                  const Pt__JobPartState *m, const char *why,
                                  uint64_t now)
{
  /* Memory holds too little of the restore step (a group lost more than
   * its code rebuilds, every copy gone): the disk's, when it has one. */
  if (m->has_status && m->status == PT_ENOFRAG && j->has_restore &&
      !j->restore_disk) {
    (void)ctl_jobs_persist_fallback(j, why);
    return false; /* restarted as any failure */
  }
  if (!m->has_disk_failed || !m->disk_failed || !j->restore_disk)
    return false;
  /* Its files of the step failed: the complete step before it. */
  if (!ctl_jobs_persist_disk_failed(js, j, why)) {
    commit_cancel(&j->commit);
    ctl_jobs_reason_set(j, "%s; no older complete step on disk: not "
                        "restarted (never from damaged state)", why);
    ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
    return true;
  }
  ctl_jobs_restart_counted(js, j, now, why);
  return true;
}

void ctl_jobs_persist_epoch(struct ctl_job *j, bool *has_from, uint64_t *from)
{
  struct ctl_persist *ps = &j->persist;
  /* A new epoch: the marked step's late reports are not waited for. */
  ps->has_marked = false;
  ps->commits = 0;
  j->restore_disk = false;
  j->restore_mark = 0;
  if (!ps->next_disk)
    return;
  const struct ctl_disk_step *d = disk_find(ps, ps->next_step, ps->next_mark);
  if (d == NULL || d->bad) {
    /* (never: nothing completes while a disk step is chosen) */
    ps->next_disk = false;
    if (!ctl_jobs_persist_fallback(j, ps->why))
      return;
    d = disk_find(ps, ps->next_step, ps->next_mark);
  }
  *has_from = true;
  *from = d->step;
  j->restore_disk = true;
  j->restore_mark = d->mark;
  ctl_jobs_reason_set(j, "%s; restoring step %" PRIu64 " from disk, the "
                      "newest complete step there", ps->why, *from);
}

void ctl_jobs_persist_replay_epoch(struct ctl_job *j)
{
  struct ctl_persist *ps = &j->persist;
  ps->next_disk = false;
  const struct ctl_disk_step *d =
      j->restore_disk ? disk_find(ps, j->restore_step, j->restore_mark) : NULL;
  if (d != NULL && !d->bad) {
    ps->next_disk = true;
    ps->next_step = d->step;
    ps->next_mark = d->mark;
    snprintf(ps->why, sizeof(ps->why), "memory could not serve the job");
  } else if (j->restore_disk) {
    (void)ctl_jobs_persist_fallback(j, "memory could not serve the job");
  }
}

uint64_t ctl_jobs_persist_keep_from(const struct ctl_job *j)
{
  const struct ctl_persist *ps = &j->persist;
  return ps->ndisk > 0 ? ps->disk[0].step : 0;
}

const struct ctl_disk_step *ctl_jobs_persist_newest(const struct ctl_job *j)
{
  const struct ctl_persist *ps = &j->persist;
  return ps->ndisk > 0 ? &ps->disk[ps->ndisk - 1] : NULL;
}

int ctl_jobs_persist_replay(struct ctl_jobs *js, const char *job,
                            uint64_t step, uint64_t mark, uint64_t ms,
                            uint64_t bytes, bool bad, bool resumed,
                            char *why, size_t len)
{
  struct ctl_job *j = ctl_jobs_find(js, job);
  if (j == NULL) {
    snprintf(why, len, "PERSISTED of unknown job '%s'", job);
    return PT_EFORMAT;
  }
  struct ctl_persist *ps = &j->persist;
  struct ctl_disk_step *d = disk_find(ps, step, mark);
  if (d == NULL) {
    /* A record of a step older than the newest one held is of a history
     * the replay already dropped: ignored (a compaction writes them in
     * order). */
    if (ps->ndisk > 0 && ps->disk[ps->ndisk - 1].step >= step)
      return PT_OK;
    disk_add(j, step, mark, ms, bytes, resumed);
    d = &ps->disk[ps->ndisk - 1];
    /* A compaction's copy of the step the epoch restores from disk, no
     * step committed since: the next epoch restores it again. */
    if (j->restore_disk && !d->bad && !bad && step == j->restore_step &&
        mark == j->restore_mark &&
        !(j->has_committed && j->committed > j->restore_step)) {
      ps->next_disk = true;
      ps->next_step = step;
      ps->next_mark = mark;
      snprintf(ps->why, sizeof(ps->why), "memory could not serve the job");
    }
  }
  d->bad = d->bad || bad;
  /* The epoch replayed before chose it: the next one takes the one before
   * (as the live controller did). */
  bool chosen = ps->next_disk && ps->next_step == step && ps->next_mark == mark;
  bool restored = j->restore_disk && step == j->restore_step &&
                  mark == j->restore_mark &&
                  !(j->has_committed && j->committed > j->restore_step);
  if (bad && (chosen || restored)) {
    ps->next_disk = false;
    (void)ctl_jobs_persist_fallback(j, "the restore from disk failed");
  }
  return PT_OK;
}

const struct ctl_disk_step *ctl_jobs_persist_rec(const struct ctl_job *j)
{
  const struct ctl_persist *ps = &j->persist;
  return ps->rec < ps->ndisk ? &ps->disk[ps->rec] : NULL;
}

int ctl_jobs_persist_found(struct ctl_jobs *js, struct ctl_job *j,
                           uint64_t step, uint64_t mark, uint64_t bytes)
{
  struct ctl_persist *ps = &j->persist;
  struct ctl_persist was = *ps;
  disk_add(j, step, mark, unix_ms(), bytes, true);
  ps->rec = ps->ndisk - 1;
  int rc = js->ops->journal(js->ctx, j, CTL_REC_PERSISTED);
  if (rc != PT_OK) {
    memcpy(ps->disk, was.disk, sizeof(ps->disk));
    ps->ndisk = was.ndisk;
  }
  return rc;
}

bool ctl_jobs_persist_restore_resumed(const struct ctl_job *j)
{
  struct ctl_persist *ps = (struct ctl_persist *)&j->persist;
  const struct ctl_disk_step *d =
      j->restore_disk ? disk_find(ps, j->restore_step, j->restore_mark) : NULL;
  return d != NULL && d->resumed;
}
