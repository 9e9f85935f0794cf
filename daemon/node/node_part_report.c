/*
 * node_part_report.c — what the controller hears of a cluster-mode node's
 * job part: JOB_PART_STATE on every change of the part and after every
 * registration, with the bytes held, the newest step every rank sealed and
 * the steps every rank holds verified; a refused assignment's answer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "common/crc32c.h"
#include "common/log.h"
#include "common/state_file.h"
#include "daemon/node/node.h"
#include "daemon/node/node_part_int.h"
#include "daemon/node/node_persist.h"

const char *node_part_report_state_now(const struct node *n)
{
  const struct node_part *p = node_part_of(n);

  if (!p->active)
    return node_part_report_end_name(p->end);
  if (n->phase == NODE_PH_RUNNING)
    return "running";
  if (n->phase < NODE_PH_RUNNING)
    return "starting";
  return NULL; /* stopping: said once its ranks are gone */
}

size_t node_part_report_held(const struct node *n, uint64_t *held,
                             size_t cap)
{
  size_t nheld = 0;

  if (n->ranks == NULL || n->cfg.ranks == 0)
    return 0;
  /* Steps every rank holds intact. While the trainers run, the slots
   * move on from what the SMPs last reported: the committed step (every
   * SMP committed it; a newer commit supersedes it). Otherwise what
   * every SMP's verified report holds. */
  const struct node_rank *r0 = &n->ranks[0];
  bool moving = n->phase == NODE_PH_RUNNING;
  if (moving && n->has_committed && cap > 0)
    held[nheld++] = n->committed;
  for (uint32_t k = 0; !moving && k < r0->nview && nheld < cap;
       k++) {
    const struct node_slot_view *v = &r0->view[k];
    bool all = true;
    for (uint32_t i = 0; i < n->cfg.ranks && all; i++) {
      const struct node_rank *r = &n->ranks[i];
      bool has = false;
      for (uint32_t j = 0; j < r->nview && !has; j++)
        has = r->view[j].step == v->step && r->view[j].intact &&
              snap_state_holds_data(r->view[j].state);
      all = has && r->view_verified;
    }
    if (all)
      held[nheld++] = v->step;
  }
  return nheld;
}

/* JOB_PART_STATE of the part recorded, as the answer to id (0:
 * unsolicited). */
void node_part_report_send(struct node *n, uint64_t id, const char *state)
{
  struct node_part *p = node_part_of(n);
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;
  uint64_t held[SNAP_MAX_SLOTS];
  size_t nheld = 0;
  uint32_t ports[NODE_MAX_RANKS];

  if (!p->has)
    return;
  m.job = p->job;
  m.epoch = p->epoch;
  m.state = (char *)state;
  if (strcmp(state, "failed") == 0) {
    m.has_status = true;
    m.status = p->fail_status != 0 ? p->fail_status : -EIO;
    m.message = p->fail_msg;
    m.has_permanent = p->fail_permanent;
    m.permanent = p->fail_permanent;
    m.has_disk_failed = m.disk_failed = p->fail_disk;
  }
  if (p->active && n->cfg.ranks > 0) {
    m.has_bytes_held = true;
    for (uint32_t i = 0; i < n->cfg.ranks; i++)
      m.bytes_held += n->ranks[i].bytes_held;
    uint64_t s;
    if (node_decide_remote_last_sealed(n, &s)) {
      m.has_last_sealed = true;
      m.last_sealed = s;
    }
    nheld = node_part_report_held(n, held, SNAP_MAX_SLOTS);
    m.n_held = nheld;
    m.held = held;
    /* A coded job's SMPs: where their group's links come to. */
    if (n->cfg.group.k != 0) {
      for (uint32_t i = 0; i < n->cfg.ranks && i < NODE_MAX_RANKS; i++)
        ports[i] = n->ranks[i].peer_port;
      m.n_peer_ports = n->cfg.ranks;
      m.peer_ports = ports;
      m.has_rebuilt = n->rebuilt_epoch != 0 && n->rebuilt_epoch == p->epoch;
      m.rebuilt = m.has_rebuilt;
    }
  } else if (p->end == PART_FAILED && p->n_end_held > 0) {
    m.n_held = p->n_end_held;
    m.held = p->end_held;
  }
  n->peer_ports_dirty = false;
  n->report_owed = false;
  int rc = node_cluster_send(n, RPC_JOB_PART_STATE, id, &m.base);
  if (rc == PT_OK)
    log_debug("job '%s' epoch %" PRIu64 ": part %s", p->job, p->epoch, state);
  p->reported = state;
}

int node_part_report_persisted(struct node *n, uint64_t step, uint64_t mark,
                               int status, const char *msg, uint64_t bytes)
{
  struct node_part *p = node_part_of(n);
  Pt__StepPersisted m = PT__STEP_PERSISTED__INIT;

  if (p == NULL || !p->has)
    return -ENOENT;
  m.job = p->job;
  m.epoch = p->epoch;
  m.step = step;
  m.mark = mark;
  m.status = status;
  m.message = (char *)msg;
  m.has_bytes = status == PT_OK;
  m.bytes = bytes;
  return node_cluster_send(n, RPC_STEP_PERSISTED, 0, &m.base);
}

void node_part_report_refusal(struct node *n, uint64_t id, const char *job,
                           uint64_t epoch, int status, const char *why)
{
  Pt__JobPartState m = PT__JOB_PART_STATE__INIT;

  log_warn("job '%s' epoch %" PRIu64 ": assignment refused: %s", job, epoch,
           why);
  m.job = (char *)job;
  m.epoch = epoch;
  m.state = "failed";
  m.has_status = true;
  m.status = status;
  m.message = (char *)why;
  node_cluster_send(n, RPC_JOB_PART_STATE, id, &m.base);
}

void node_part_report_after_drive(struct node *n)
{
  struct node_part *p = node_part_of(n);

  if (p == NULL || !p->active)
    return;
  const char *s = node_part_report_state_now(n);
  if (s != NULL && (s != p->reported || n->peer_ports_dirty || n->report_owed))
    node_part_report_send(n, 0, s);
  node_peers_drive(n);
}

void node_part_report_registered(struct node *n)
{
  struct node_part *p = node_part_of(n);

  if (p == NULL || !p->has)
    return;
  const char *s = node_part_report_state_now(n);
  node_part_report_send(n, 0, s != NULL ? s : "running");
  if (p->active) {
    node_decide_remote_link_up(n);
    node_persist_cluster_link_up(n); /* a STEP_PERSISTED the link lost */
  }
}

const char *node_part_report_end_name(enum part_end e)
{
  switch (e) {
  case PART_RUNNING:
    return "running";
  case PART_STOPPED:
    return "stopped";
  case PART_FAILED:
    return "failed";
  case PART_DONE:
    return "done";
  }
  return "?";
}

const char *node_part_report_state_name(const struct node *n)
{
  const struct node_part *p = node_part_of(n);

  if (p == NULL || !p->has)
    return "spare";
  if (p->active)
    return node_life_phase_name(n);
  return node_part_report_end_name(p->end);
}
