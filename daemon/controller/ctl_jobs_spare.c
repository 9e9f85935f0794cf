/*
 * ctl_jobs_spare.c — a lost node's place given to a spare (pure, as
 * ctl_jobs.c), and the loss a coding group cannot survive.
 *
 *   - A node of a live coded job is declared dead and an ALIVE spare is
 *     registered (in no job, capacity >= ranks_per_node; preferably in none
 *     of the failure domains of the other members of the dead node's node
 *     group: ctl_spec_pick_spare): the spare takes the dead node's place,
 *     its node index, so the same member number in every coding group and
 *     the same global ranks (the groups never change over a job's epochs),
 *     and the job restarts in a new epoch restoring the newest committed
 *     step R on every part, the spare's SMPs rebuilding theirs from the
 *     group. The new placement rides in that epoch's EPOCH record
 *     (CtlRecEpoch.placed), journaled before any node hears of it; a torn
 *     record loses the new epoch and the new placement together.
 *     Every dead part gets a spare, or none does: a job that must wait for
 *     one of its nodes anyway waits for all of them (ctl_jobs_node.c).
 *   - Such a spare holds nothing of the job (ctl_part.empty) until a step
 *     commits after its placement: the group is then fully protected again
 *     (ctl_jobs_spare_protected, from the commit's verdict).
 *   - A node group one of whose members is lost (its node dead, or an empty
 *     spare) more than m times over, while a committed step exists, cannot
 *     rebuild that step: the job ends failed, naming the group, the nodes
 *     whose data is gone and the code, its snapshots kept (what survives,
 *     for the persistent tier), and is never restarted into garbage.
 *   - After the controller's restart, a node of a coded job that has not
 *     registered again within dead-after counts as dead here: a spare takes
 *     its place as above (ctl_jobs_spare_recovering, from the jobs' tick).
 *   - A job without a code cannot rebuild a lost node's state: it waits for
 *     the node as before (ctl_jobs_node.c).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "daemon/controller/ctl_jobs_int.h"

/* Part p's node is declared dead, or, after the controller's restart, has
 * not registered again within dead-after. */
static bool part_dead(struct ctl_jobs *js, const struct ctl_job *j,
                      uint32_t p, uint64_t now)
{
  struct ctl_node *n = ctl_jobs_part_node(js, j, p);
  if (n == NULL)
    return j->recovering && j->parts[p].node == SIZE_MAX &&
           now >= j->recover_dead_ms;
  return n->state == CTL_NODE_DEAD;
}

/* Member p of its node group is lost: its node dead, or an empty spare. */
static bool part_lost(struct ctl_jobs *js, const struct ctl_job *j,
                      uint32_t p, uint64_t now)
{
  return j->parts[p].empty || part_dead(js, j, p, now);
}

bool ctl_jobs_spare_recovering(struct ctl_jobs *js, struct ctl_job *j,
                               uint64_t now)
{
  if (!j->recovering || j->groups.n == 0 || now < j->recover_dead_ms)
    return false;
  bool any = false;
  for (uint32_t p = 0; p < j->nparts && !any; p++)
    any = j->parts[p].node == SIZE_MAX;
  if (!any)
    return false;
  return ctl_jobs_spare_lost_check(js, j, now) || ctl_jobs_spare_take(js, j, now);
}

bool ctl_jobs_spare_lost_check(struct ctl_jobs *js, struct ctl_job *j,
                               uint64_t now)
{
  const struct ctl_groups *g = &j->groups;
  /* Nothing committed: nothing to rebuild, every part starts fresh. */
  if (g->n == 0 || !j->has_committed)
    return false;
  for (uint32_t i = 0; i < g->n; i++) {
    uint32_t lost = 0, size = ctl_groups_size(g, i);
    char names[CTL_REASON_MAX / 2];
    size_t off = 0;
    names[0] = '\0';
    for (uint32_t x = g->first[i]; x < g->first[i + 1]; x++) {
      uint32_t p = g->member[x];
      if (!part_lost(js, j, p, now))
        continue;
      const struct ctl_part *pt = &j->parts[p];
      /* An empty spare's loss is the data of the node it replaced. */
      const char *who = pt->empty && pt->lost_id[0] != '\0' ? pt->lost_id
                                                             : pt->node_id;
      if (off < sizeof(names)) {
        int w = snprintf(names + off, sizeof(names) - off, "%s%s",
                         lost > 0 ? ", " : "", who);
        off += w > 0 ? (size_t)w : 0;
      }
      lost++;
    }
    if (lost <= g->m)
      continue;
    uint32_t rpn = j->spec->ranks_per_node;
    char grp[64];
    if (rpn == 1)
      snprintf(grp, sizeof(grp), "coding group %" PRIu32, i);
    else
      snprintf(grp, sizeof(grp), "coding groups %" PRIu32 "..%" PRIu32
               " (node group %" PRIu32 ")", i * rpn, i * rpn + rpn - 1, i);
    /* The persistent tier: every part restores a complete step from disk
     * (a spare's files on a shared file system, or none). */
    char why[CTL_REASON_MAX];
    snprintf(why, sizeof(why), "%s lost %" PRIu32 " of %" PRIu32 " members "
             "(%s), more than code %" PRIu32 "+%" PRIu32 " rebuilds", grp,
             lost, size, names, ctl_groups_k(g, i), g->m);
    if (ctl_jobs_persist_fallback(j, why))
      return false;
    commit_cancel(&j->commit);
    ctl_jobs_reason_set(j, "%s lost %" PRIu32 " of %s %" PRIu32 " members "
                        "(node%s %s); code %" PRIu32 "+%" PRIu32
                        " tolerates %" PRIu32 ": step %" PRIu64 " cannot be "
                        "rebuilt; what survives is kept", grp, lost,
                        rpn == 1 ? "its" : "their", size,
                        lost == 1 ? "" : "s", names, ctl_groups_k(g, i), g->m,
                        g->m, j->committed);
    log_error("job '%s' epoch %" PRIu64 ": %s", j->spec->name, j->epoch,
              j->reason);
    ctl_jobs_end_job(js, j, CTL_JOB_FAILED, now);
    return true;
  }
  return false;
}

bool ctl_jobs_spare_take(struct ctl_jobs *js, struct ctl_job *j, uint64_t now)
{
  struct ctl_members *m = js->m;
  uint32_t ndead = 0;

  if (j->groups.n == 0 || ctl_jobs_ended(j->state) ||
      j->state == CTL_JOB_STOPPING)
    return false;
  for (uint32_t p = 0; p < j->nparts; p++)
    ndead += part_dead(js, j, p, now);
  if (ndead == 0)
    return false;
  bool *taken = calloc(m->n, sizeof(*taken));
  size_t *pick = calloc(j->nparts, sizeof(*pick));
  bool *apart = calloc(j->nparts, sizeof(*apart));
  if (taken == NULL || pick == NULL || apart == NULL) {
    free(taken);
    free(pick);
    free(apart);
    return false;
  }
  bool all = true;
  for (uint32_t p = 0; p < j->nparts && all; p++) {
    pick[p] = SIZE_MAX;
    if (!part_dead(js, j, p, now))
      continue;
    all = ctl_spec_pick_spare(js, j, p, taken, &pick[p], &apart[p]) == PT_OK;
    if (all)
      taken[pick[p]] = true;
  }
  free(taken);
  if (!all) {
    free(pick);
    free(apart);
    return false;
  }
  /* The new placement, in memory first; the EPOCH record carries it (every
   * empty part); undone when that record cannot be written. */
  struct ctl_part *was = malloc(j->nparts * sizeof(*was));
  if (was == NULL) {
    free(pick);
    free(apart);
    return false;
  }
  memcpy(was, j->parts, j->nparts * sizeof(*was));
  for (uint32_t p = 0; p < j->nparts; p++) {
    struct ctl_part *pt = &j->parts[p];
    if (pick[p] == SIZE_MAX)
      continue;
    if (!pt->empty) /* an empty spare lost again: still that node's data */
      snprintf(pt->lost_id, sizeof(pt->lost_id), "%s", pt->node_id);
    pt->empty = true;
    snprintf(pt->node_id, sizeof(pt->node_id), "%s", m->nodes[pick[p]].id);
  }
  /* ctl_jobs_begin_epoch sends the assignments (after the EPOCH record)
   * to the parts' nodes and finds the master on part 0's: the spares'. */
  size_t *old_node = calloc(j->nparts, sizeof(*old_node));
  for (uint32_t p = 0; old_node != NULL && p < j->nparts; p++) {
    old_node[p] = j->parts[p].node;
    if (pick[p] != SIZE_MAX)
      j->parts[p].node = pick[p];
  }
  j->restarts++;
  uint32_t first = UINT32_MAX;
  for (uint32_t p = 0; p < j->nparts && first == UINT32_MAX; p++)
    if (pick[p] != SIZE_MAX)
      first = p;
  if (ndead == 1)
    ctl_jobs_reason_set(j, "node '%s' lost; spare '%s' took its place",
                        was[first].node_id, j->parts[first].node_id);
  else
    ctl_jobs_reason_set(j, "%" PRIu32 " nodes lost; spares took their places",
                        ndead);
  for (uint32_t p = 0; p < j->nparts; p++) {
    const struct ctl_part *pt = &j->parts[p];
    if (pick[p] == SIZE_MAX)
      continue;
    const struct ctl_persist *ps = &j->persist;
    bool disk = ps->next_disk;
    if (j->has_committed || disk)
      log_notice("job '%s': node '%s' lost; spare '%s' takes its place (node "
                 "index %" PRIu32 "), restoring step %" PRIu64 "%s",
                 j->spec->name, was[p].node_id, pt->node_id, p,
                 disk ? ps->next_step : j->committed,
                 disk ? " from disk" : "");
    else
      log_notice("job '%s': node '%s' lost; spare '%s' takes its place (node "
                 "index %" PRIu32 "), starting fresh (nothing committed)",
                 j->spec->name, was[p].node_id, pt->node_id, p);
    if (!apart[p])
      log_warn("job '%s': spare '%s' shares a failure domain ('%s') with "
               "another member of node group %" PRIu32 ": no spare keeps "
               "them apart", j->spec->name, pt->node_id,
               m->nodes[pick[p]].failure_domain, j->groups.group_of[p]);
  }
  int rc = old_node == NULL ? -ENOMEM
                            : ctl_jobs_begin_epoch(js, j, j->has_committed,
                                                   j->committed, now);
  if (rc != PT_OK) {
    for (uint32_t p = 0; p < j->nparts; p++) {
      struct ctl_part *pt = &j->parts[p];
      if (pick[p] == SIZE_MAX)
        continue;
      pt->empty = was[p].empty;
      memcpy(pt->lost_id, was[p].lost_id, sizeof(pt->lost_id));
      memcpy(pt->node_id, was[p].node_id, sizeof(pt->node_id));
      if (old_node != NULL)
        pt->node = old_node[p];
    }
    j->restarts--;
    log_error("job '%s': cannot journal the spares' placement (%s); it "
              "waits for its nodes", j->spec->name, pt_strerror(rc));
    free(old_node);
    free(was);
    free(pick);
    free(apart);
    return false;
  }
  /* Durable (and assigned): the dead nodes leave the job, the spares are
   * bound to it; every part is on a registered node again. */
  j->recovering = false;
  for (uint32_t p = 0; p < j->nparts; p++) {
    struct ctl_part *pt = &j->parts[p];
    if (pick[p] == SIZE_MAX)
      continue;
    struct ctl_node *dn = old_node[p] < m->n ? &m->nodes[old_node[p]] : NULL;
    if (dn != NULL && dn->jobp == j) {
      dn->jobp = NULL;
      dn->job[0] = '\0';
    }
    ctl_jobs_bind_node(js, j, p, pick[p]);
    free(pt->peer_ports);
    pt->peer_ports = NULL;
    pt->npeer_ports = 0;
    pt->nheld = 0;
    pt->bytes_held = 0;
  }
  free(old_node);
  free(was);
  free(pick);
  free(apart);
  return true;
}

void ctl_jobs_spare_rebuilt(struct ctl_job *j, uint32_t p)
{
  struct ctl_part *pt = &j->parts[p];
  pt->empty = true;
  snprintf(pt->lost_id, sizeof(pt->lost_id), "%s", pt->node_id);
  log_notice("job '%s' epoch %" PRIu64 ": node '%s' rebuilt its snapshots "
             "from its coding groups: they count it as lost until a newer "
             "step commits", j->spec->name, j->epoch, pt->node_id);
}

void ctl_jobs_spare_protected(struct ctl_job *j)
{
  bool any = false;
  for (uint32_t p = 0; p < j->nparts; p++) {
    any |= j->parts[p].empty;
    j->parts[p].empty = false;
    j->parts[p].lost_id[0] = '\0';
  }
  j->has_empty_floor = false;
  if (any)
    log_notice("job '%s': step %" PRIu64 " committed on every node, the "
               "spares included: its coding groups are fully protected "
               "again", j->spec->name, j->committed);
}
