/*
 * ctl_journal.c — the controller's journal, <state-dir>/journal, through
 * common/journal.h: what each record holds (rpc/pt.proto, "controller
 * journal records"), the replay that rebuilds the job table, and the
 * compaction that keeps the file bounded.
 *
 *   JOB     spec (defaults filled), node ids in index order, master port
 *           and address, its coding groups: the job exists, on those
 *           nodes
 *   EPOCH   job, epoch, restore step or none, the job's first epoch: an
 *           incarnation began (compacted: an ended job's too, so that a
 *           new job of its name starts above it); the spares that took
 *           lost nodes' places and hold nothing yet (ctl_jobs_spare.c):
 *           a new placement is journaled in its epoch's record, one
 *           record, so a torn one keeps the old placement whole
 *   COMMIT  job, epoch, step: step is committed
 *   END     job, final state, reason; a job whose snapshots are kept
 *           (failed, stopped with --keep): what each part last reported
 *           holding, so that status and `restore --step` are right
 *           straight after a restart (its nodes do not report again)
 *   NODE    node id, identity: the id is bound to that identity
 *           (ctl_members.c); the last NODE of an id wins (a replacement)
 *
 * An EPOCH after a job's END is its revival (`ptctl restore` of a failed
 * job, or one stopped with --keep); a compaction copies such a job with
 * its EPOCH and COMMIT before its END, so that a revival after it goes on
 * from the same epoch and step.
 *
 * Each is durable (fdatasync) when ctl_journal_append returns, and the
 * controller lets no node hear of a decision before. A torn last record
 * (a crash mid-append) is dropped by journal_open; any other damage, or a
 * record that contradicts the ones before it, refuses the journal.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/journal.h"
#include "common/log.h"
#include "daemon/controller/controller.h"

struct replay {
  struct ctl_jobs *js;
  uint64_t nrec;
  char *err;
  size_t errlen;
};

/* A JOB record: its groups as lists for ctl_jobs_replay_job. */
static int replay_job(struct replay *r, const Pt__CtlRecJob *m, char *why,
                      size_t whylen)
{
  const uint32_t **lists = calloc(m->n_groups + 1, sizeof(*lists));
  size_t *lens = calloc(m->n_groups + 1, sizeof(*lens));
  int rc = -ENOMEM;

  if (lists != NULL && lens != NULL) {
    for (size_t i = 0; i < m->n_groups; i++) {
      lists[i] = m->groups[i]->node_index;
      lens[i] = m->groups[i]->n_node_index;
    }
    rc = ctl_jobs_replay_job(r->js, m->spec, m->node_ids, m->n_node_ids,
                             m->master_port, m->master_addr, lists, lens,
                             m->n_groups, why, whylen);
  }
  free(lists);
  free(lens);
  return rc;
}

/* An END's parts: what each held when the job ended. */
static int replay_parts(struct ctl_job *j, const Pt__CtlRecEnd *m, char *why,
                        size_t whylen)
{
  if (m->n_parts != j->nparts) {
    snprintf(why, whylen, "END of job '%s' with %zu parts; the job has %"
             PRIu32, j->spec->name, m->n_parts, j->nparts);
    return PT_EFORMAT;
  }
  for (uint32_t p = 0; p < j->nparts; p++) {
    const Pt__CtlRecPart *rp = m->parts[p];
    struct ctl_part *pt = &j->parts[p];
    pt->nheld = 0;
    for (size_t i = 0; i < rp->n_held && pt->nheld < CTL_HELD_MAX; i++)
      pt->held[pt->nheld++] = rp->held[i];
    pt->bytes_held = rp->has_bytes_held ? rp->bytes_held : 0;
  }
  return PT_OK;
}

static int on_record(void *arg, uint32_t type, const void *data, size_t len)
{
  struct replay *r = arg;
  char why[512];
  int rc;

  r->nrec++;
  why[0] = '\0';
  switch (type) {
  case CTL_REC_JOB: {
    Pt__CtlRecJob *m = pt__ctl_rec_job__unpack(NULL, len, data);
    if (m == NULL)
      goto undecodable;
    rc = replay_job(r, m, why, sizeof(why));
    pt__ctl_rec_job__free_unpacked(m, NULL);
    break;
  }
  case CTL_REC_EPOCH: {
    Pt__CtlRecEpoch *m = pt__ctl_rec_epoch__unpack(NULL, len, data);
    if (m == NULL)
      goto undecodable;
    rc = ctl_jobs_replay_epoch(r->js, m->job, m->epoch, m->has_restore_step,
                               m->restore_step,
                               m->has_first_epoch ? m->first_epoch : 1, why,
                               sizeof(why));
    /* The spares placed in the job (every empty part, at this epoch). */
    for (size_t i = 0; rc == PT_OK && i < m->n_placed; i++) {
      const Pt__CtlRecPlace *pl = m->placed[i];
      rc = ctl_jobs_replay_place(r->js, m->job, pl->node_index, pl->node_id,
                                 pl->was, pl->has_since_step, pl->since_step,
                                 why, sizeof(why));
    }
    if (rc == PT_OK && m->has_restarts)
      ctl_jobs_find(r->js, m->job)->restarts = m->restarts;
    if (rc == PT_OK) {
      struct ctl_job *j = ctl_jobs_find(r->js, m->job);
      j->restore_disk = m->has_restore_from_disk && m->restore_from_disk &&
                        j->has_restore;
      j->restore_mark = j->restore_disk ? m->restore_disk_mark : 0;
      if (j->has_restore) /* as ctl_jobs_begin_epoch */
        ctl_jobs_persist_rollback(j, j->restore_step);
      ctl_jobs_persist_replay_epoch(j);
    }
    /* Why it restarted, for ptctl status after a controller restart. */
    if (rc == PT_OK && m->reason != NULL && m->reason[0] != '\0') {
      struct ctl_job *j = ctl_jobs_find(r->js, m->job);
      snprintf(j->reason, sizeof(j->reason), "%s", m->reason);
    }
    pt__ctl_rec_epoch__free_unpacked(m, NULL);
    break;
  }
  case CTL_REC_COMMIT: {
    Pt__CtlRecCommit *m = pt__ctl_rec_commit__unpack(NULL, len, data);
    if (m == NULL)
      goto undecodable;
    rc = ctl_jobs_replay_commit(r->js, m->job, m->epoch, m->step, why,
                                sizeof(why));
    if (rc == PT_OK && m->has_commits)
      ctl_jobs_find(r->js, m->job)->commits = m->commits;
    if (rc == PT_OK) { /* a newer step: memory holds the job whole again
                        * (a compaction's COMMIT of the restore step is
                        * not one) */
      struct ctl_job *j = ctl_jobs_find(r->js, m->job);
      if (!j->restore_disk || m->step > j->restore_step)
        j->persist.next_disk = false;
    }
    pt__ctl_rec_commit__free_unpacked(m, NULL);
    break;
  }
  case CTL_REC_PERSISTED: {
    Pt__CtlRecPersisted *m = pt__ctl_rec_persisted__unpack(NULL, len, data);
    if (m == NULL)
      goto undecodable;
    rc = ctl_jobs_persist_replay(r->js, m->job, m->step, m->mark,
                                 m->has_unix_ms ? m->unix_ms : 0,
                                 m->has_bytes ? m->bytes : 0,
                                 m->has_bad && m->bad,
                                 m->has_resumed && m->resumed, why,
                                 sizeof(why));
    pt__ctl_rec_persisted__free_unpacked(m, NULL);
    break;
  }
  case CTL_REC_NODE: {
    Pt__CtlRecNode *m = pt__ctl_rec_node__unpack(NULL, len, data);
    if (m == NULL)
      goto undecodable;
    rc = r->js->m == NULL
             ? PT_OK
             : ctl_members_identity_set(r->js->m, m->node_id,
                                        m->identity.data, m->identity.len);
    if (rc == -EINVAL) {
      snprintf(why, sizeof(why), "node identity of %zu bytes for an id of "
               "%zu bytes", m->identity.len, strlen(m->node_id));
      rc = PT_EFORMAT;
    }
    pt__ctl_rec_node__free_unpacked(m, NULL);
    break;
  }
  case CTL_REC_END: {
    Pt__CtlRecEnd *m = pt__ctl_rec_end__unpack(NULL, len, data);
    if (m == NULL)
      goto undecodable;
    rc = ctl_jobs_replay_end(r->js, m->job, ctl_jobs_state_parse(m->state),
                             m->reason, m->has_removed, m->removed, why,
                             sizeof(why));
    if (rc == PT_OK && m->n_parts > 0)
      rc = replay_parts(ctl_jobs_find(r->js, m->job), m, why, sizeof(why));
    pt__ctl_rec_end__free_unpacked(m, NULL);
    break;
  }
  default:
    snprintf(r->err, r->errlen, "record %" PRIu64 " has unknown type %" PRIu32,
             r->nrec, type);
    return PT_EFORMAT;
  }
  if (rc != PT_OK)
    snprintf(r->err, r->errlen, "record %" PRIu64 ": %s", r->nrec,
             why[0] != '\0' ? why : pt_strerror(rc));
  return rc;
undecodable:
  snprintf(r->err, r->errlen, "record %" PRIu64 " (type %" PRIu32
           ", %zu bytes) does not decode", r->nrec, type, len);
  return PT_EFORMAT;
}

int ctl_journal_open(struct journal **j, const char *path, struct ctl_jobs *js,
                     uint64_t *dropped, char *err, size_t errlen)
{
  char why[768];
  struct replay r = {.js = js, .err = why, .errlen = sizeof(why)};

  why[0] = '\0';
  int rc = journal_open(j, path, on_record, &r, dropped, why, sizeof(why));
  if (rc != PT_OK) {
    /* journal_open's sentences mostly name the file already. */
    if (strncmp(why, "journal '", 9) == 0)
      snprintf(err, errlen, "%s", why);
    else
      snprintf(err, errlen, "journal '%s': %s", path,
               why[0] != '\0' ? why : pt_strerror(rc));
    if (rc != PT_EFORMAT && rc != -EBUSY && why[0] == '\0')
      return rc;
    return rc == -EBUSY ? rc : PT_EFORMAT;
  }
  return PT_OK;
}

/* ---- encoding ---- */

/* The packed record of kind for job. OUT: *buf (free it), *len. */
/* compacting: the record stands for the job as it is now, not for an event
 * (a compaction's copy of the job); otherwise the record is the event. */
static int encode(const struct ctl_job *job, enum ctl_rec kind, bool compacting,
                  uint8_t **buf, size_t *len)
{
  ProtobufCMessage *msg;
  Pt__CtlRecJob rj = PT__CTL_REC_JOB__INIT;
  Pt__CtlRecEpoch re = PT__CTL_REC_EPOCH__INIT;
  Pt__CtlRecCommit rc = PT__CTL_REC_COMMIT__INIT;
  Pt__CtlRecEnd rd = PT__CTL_REC_END__INIT;
  Pt__CtlRecPersisted rp = PT__CTL_REC_PERSISTED__INIT;
  char **ids = NULL;
  const struct ctl_groups *g = &job->groups;
  Pt__CtlRecGroup *grs = NULL, **gps = NULL;
  Pt__CtlRecPart *prs = NULL, **pps = NULL;
  Pt__CtlRecPlace *pls = NULL, **plp = NULL;

  switch (kind) {
  case CTL_REC_JOB:
    ids = calloc(job->nparts, sizeof(*ids));
    grs = calloc(g->n + 1, sizeof(*grs));
    gps = calloc(g->n + 1, sizeof(*gps));
    if (ids == NULL || grs == NULL || gps == NULL) {
      free(ids);
      free(grs);
      free(gps);
      return -ENOMEM;
    }
    for (uint32_t p = 0; p < job->nparts; p++)
      ids[p] = (char *)job->parts[p].node_id;
    for (uint32_t i = 0; i < g->n; i++) {
      pt__ctl_rec_group__init(&grs[i]);
      grs[i].n_node_index = ctl_groups_size(g, i);
      grs[i].node_index = &g->member[g->first[i]];
      gps[i] = &grs[i];
    }
    rj.n_groups = g->n;
    rj.groups = gps;
    rj.spec = job->spec;
    rj.n_node_ids = job->nparts;
    rj.node_ids = ids;
    rj.master_port = job->master_port;
    rj.master_addr = (char *)job->master_addr;
    msg = &rj.base;
    break;
  case CTL_REC_EPOCH:
    re.job = job->spec->name;
    re.epoch = job->epoch;
    re.has_restore_step = job->has_restore;
    re.restore_step = job->restore_step;
    re.has_restarts = true;
    re.restarts = job->restarts;
    re.reason = job->reason[0] != '\0' ? (char *)job->reason : NULL;
    re.has_first_epoch = true;
    re.first_epoch = job->first_epoch;
    re.has_restore_from_disk = re.restore_from_disk = job->restore_disk;
    re.has_restore_disk_mark = job->restore_disk;
    re.restore_disk_mark = job->restore_mark;
    /* A restart waiting out its backoff is counted in memory already, but
     * only its own EPOCH record, still to come, journals it: a copy made
     * meanwhile holds the count without it, or a controller restarted in
     * between would count that one failure twice. */
    if (compacting && job->state == CTL_JOB_RESTARTING && re.restarts > 0)
      re.restarts--;
    /* Every spare that holds nothing yet: the placement of this epoch (a
     * compaction's copy too: its COMMIT, of an older step, does not
     * protect them). */
    for (uint32_t p = 0; p < job->nparts; p++)
      re.n_placed += job->parts[p].empty;
    if (re.n_placed > 0) {
      pls = calloc(re.n_placed, sizeof(*pls));
      plp = calloc(re.n_placed, sizeof(*plp));
      if (pls == NULL || plp == NULL) {
        free(pls);
        free(plp);
        return -ENOMEM;
      }
      size_t x = 0;
      for (uint32_t p = 0; p < job->nparts; p++) {
        const struct ctl_part *pt = &job->parts[p];
        if (!pt->empty)
          continue;
        pt__ctl_rec_place__init(&pls[x]);
        pls[x].node_index = p;
        pls[x].node_id = (char *)pt->node_id;
        pls[x].was = pt->lost_id[0] != '\0' ? (char *)pt->lost_id : NULL;
        pls[x].has_since_step = job->has_committed;
        pls[x].since_step = job->committed;
        plp[x] = &pls[x];
        x++;
      }
      re.placed = plp;
    }
    msg = &re.base;
    break;
  case CTL_REC_COMMIT:
    rc.job = job->spec->name;
    rc.epoch = job->epoch;
    rc.step = job->committed;
    rc.has_commits = true;
    rc.commits = job->commits;
    msg = &rc.base;
    break;
  case CTL_REC_PERSISTED: {
    /* The step made complete, or found bad (a compaction: one record
     * per step kept, encode_persisted). */
    const struct ctl_disk_step *d = ctl_jobs_persist_rec(job);
    if (d == NULL)
      return -EINVAL;
    rp.job = job->spec->name;
    rp.epoch = job->epoch;
    rp.step = d->step;
    rp.mark = d->mark;
    rp.has_unix_ms = true;
    rp.unix_ms = d->unix_ms;
    rp.has_bytes = true;
    rp.bytes = d->bytes;
    rp.has_bad = rp.bad = d->bad;
    rp.has_resumed = rp.resumed = d->resumed;
    msg = &rp.base;
    break;
  }
  case CTL_REC_END:
    rd.job = job->spec->name;
    rd.state = (char *)ctl_jobs_state_name(job->state);
    rd.reason = (char *)job->reason;
    rd.has_removed = true;
    rd.removed = job->removed;
    if (job->state != CTL_JOB_DONE && !job->removed && job->nparts > 0) {
      prs = calloc(job->nparts, sizeof(*prs));
      pps = calloc(job->nparts, sizeof(*pps));
      if (prs == NULL || pps == NULL) {
        free(prs);
        free(pps);
        return -ENOMEM;
      }
      for (uint32_t p = 0; p < job->nparts; p++) {
        pt__ctl_rec_part__init(&prs[p]);
        prs[p].n_held = job->parts[p].nheld;
        prs[p].held = (uint64_t *)job->parts[p].held;
        prs[p].has_bytes_held = true;
        prs[p].bytes_held = job->parts[p].bytes_held;
        pps[p] = &prs[p];
      }
      rd.n_parts = job->nparts;
      rd.parts = pps;
    }
    msg = &rd.base;
    break;
  default:
    return -EINVAL;
  }
  *len = protobuf_c_message_get_packed_size(msg);
  *buf = malloc(*len > 0 ? *len : 1);
  if (*buf != NULL)
    protobuf_c_message_pack(msg, *buf);
  free(ids);
  free(grs);
  free(gps);
  free(prs);
  free(pps);
  free(pls);
  free(plp);
  return *buf != NULL ? PT_OK : -ENOMEM;
}

int ctl_journal_append(struct journal *jr, const struct ctl_job *job,
                       enum ctl_rec kind)
{
  uint8_t *buf;
  size_t len;
  int rc = encode(job, kind, false, &buf, &len);

  if (rc != PT_OK)
    return rc;
  rc = journal_append(jr, kind, buf, len);
  free(buf);
  return rc;
}

/* A compaction's copy of the complete step d of job. */
static int encode_persisted(const struct ctl_job *job,
                            const struct ctl_disk_step *d, uint8_t **buf,
                            size_t *len)
{
  Pt__CtlRecPersisted rp = PT__CTL_REC_PERSISTED__INIT;
  rp.job = job->spec->name;
  rp.epoch = job->epoch;
  rp.step = d->step;
  rp.mark = d->mark;
  rp.has_unix_ms = true;
  rp.unix_ms = d->unix_ms;
  rp.has_bytes = true;
  rp.bytes = d->bytes;
  rp.has_bad = rp.bad = d->bad;
  rp.has_resumed = rp.resumed = d->resumed;
  *len = pt__ctl_rec_persisted__get_packed_size(&rp);
  *buf = malloc(*len > 0 ? *len : 1);
  if (*buf == NULL)
    return -ENOMEM;
  pt__ctl_rec_persisted__pack(&rp, *buf);
  return PT_OK;
}

static int encode_node(const char *id, const uint8_t *tok, size_t tlen,
                       uint8_t **buf, size_t *len)
{
  Pt__CtlRecNode rn = PT__CTL_REC_NODE__INIT;

  rn.node_id = (char *)id;
  rn.identity.data = (uint8_t *)tok;
  rn.identity.len = tlen;
  *len = pt__ctl_rec_node__get_packed_size(&rn);
  *buf = malloc(*len > 0 ? *len : 1);
  if (*buf == NULL)
    return -ENOMEM;
  pt__ctl_rec_node__pack(&rn, *buf);
  return PT_OK;
}

int ctl_journal_append_node(struct journal *jr, const char *id,
                            const uint8_t *tok, size_t tlen)
{
  uint8_t *buf;
  size_t len;
  int rc = encode_node(id, tok, tlen, &buf, &len);

  if (rc != PT_OK)
    return rc;
  rc = journal_append(jr, CTL_REC_NODE, buf, len);
  free(buf);
  return rc;
}

int ctl_journal_compact(struct journal *jr, const struct ctl_jobs *js,
                        bool force)
{
  if (!force && journal_bytes(jr) <= CTL_JOURNAL_MAX_BYTES &&
      journal_records(jr) <= CTL_JOURNAL_MAX_RECORDS)
    return PT_OK;
  size_t nident = js->m != NULL ? js->m->nident : 0;
  size_t cap = (4 + CTL_DISK_MAX) * (js->nlive + js->nended) + nident + 1,
         n = 0;
  struct journal_rec *recs = calloc(cap, sizeof(*recs));
  int rc = recs == NULL ? -ENOMEM : PT_OK;
  const struct ctl_job **order = calloc(js->nlive + js->nended + 1,
                                        sizeof(*order));
  size_t nj = 0;

  if (order == NULL)
    rc = -ENOMEM;
  /* The node ids' identities first (they stand alone). */
  for (size_t i = 0; rc == PT_OK && i < nident; i++) {
    const struct ctl_ident *e = &js->m->idents[i];
    uint8_t *buf;
    size_t len;
    rc = encode_node(e->id, e->tok, e->len, &buf, &len);
    if (rc == PT_OK) {
      recs[n].type = CTL_REC_NODE;
      recs[n].data = buf;
      recs[n].len = len;
      n++;
    }
  }
  /* Oldest first, so that a replay sees them in the order they began. */
  for (const struct ctl_job *j = js->jobs; rc == PT_OK && j != NULL;
       j = j->next)
    order[nj++] = j;
  for (size_t k = nj; rc == PT_OK && k-- > 0;) {
    const struct ctl_job *j = order[k];
    enum ctl_rec kinds[4];
    size_t nk = 0;
    kinds[nk++] = CTL_REC_JOB;
    /* Its epoch always (a job that reuses the name starts above it); an
     * ended job that `ptctl restore` may revive (its snapshots kept) keeps
     * its committed step too: the revival goes on from them. */
    bool ended = ctl_jobs_ended(j->state);
    bool revivable = ended && j->state != CTL_JOB_DONE && !j->removed;
    if (j->epoch > 0)
      kinds[nk++] = CTL_REC_EPOCH;
    if (!ended || revivable) {
      if (j->has_committed && j->epoch > 0)
        kinds[nk++] = CTL_REC_COMMIT;
    }
    if (ended)
      kinds[nk++] = CTL_REC_END;
    for (size_t i = 0; i < nk && rc == PT_OK && n < cap; i++) {
      uint8_t *buf;
      size_t len;
      rc = encode(j, kinds[i], true, &buf, &len);
      if (rc == PT_OK) {
        recs[n].type = kinds[i];
        recs[n].data = buf;
        recs[n].len = len;
        n++;
      }
      /* Its complete steps on disk, after its EPOCH and COMMIT (before an
       * END): the EPOCH's rollback, which undoes a live journal's history
       * left behind, finds none of them to drop, and the one a disk epoch
       * restores is found again as it is replayed
       * (ctl_jobs_persist_replay). */
      bool last = i + 1 == nk || kinds[i + 1] == CTL_REC_END;
      for (uint32_t d = 0; last && rc == PT_OK &&
                           d < j->persist.ndisk && n < cap; d++) {
        rc = encode_persisted(j, &j->persist.disk[d], &buf, &len);
        if (rc == PT_OK) {
          recs[n].type = CTL_REC_PERSISTED;
          recs[n].data = buf;
          recs[n].len = len;
          n++;
        }
      }
    }
  }
  if (rc == PT_OK) {
    uint64_t before = journal_bytes(jr);
    rc = journal_compact(jr, recs, n);
    if (rc == PT_OK)
      log_info("journal compacted: %" PRIu64 " -> %" PRIu64 " bytes, %zu "
               "records", before, journal_bytes(jr), n);
  }
  for (size_t i = 0; i < n; i++)
    free((void *)recs[i].data);
  free(recs);
  free(order);
  return rc;
}
