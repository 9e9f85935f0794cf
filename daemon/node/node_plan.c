/*
 * node_plan.c — the node's decisions as pure functions, so that unit tests
 * can check them without processes or sockets:
 *   - what to do with pins that a commit round left behind (the rounds
 *     themselves are the commit module's, daemon/commit/);
 *   - which step to restore, given every rank's verified slots;
 *   - how long to wait before a restart, when the wait starts over, and
 *     how many restarts the window holds;
 *   - whether the open files and --memory-budget allow the job to start;
 *   - how a process ended, in words the logs and the scenario tests share.
 *
 * Invariants kept by the callers: a step is committed only when every rank
 * pinned it (so that every rank still holds it, pinned, until it is
 * committed everywhere), and restored only when every rank holds it intact.
 * Hence at every moment some step is held by every rank: the committed one,
 * pinned or committed on each.
 */
#include <errno.h>
#include <inttypes.h>
#include <signal.h>
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "daemon/node/node.h"

enum node_pin_action node_plan_pin(uint32_t state, uint64_t step,
                                   bool has_committed, uint64_t committed,
                                   bool has_round, uint64_t round_step)
{
  if (!snap_state_awaits_commit(state)) /* PROTECTED is taken as PINNED */
    return NODE_PIN_NONE;
  if (has_committed && step == committed)
    return NODE_PIN_COMMIT;
  if (state == SNAP_SEALED || (has_round && step == round_step))
    return NODE_PIN_NONE;
  return NODE_PIN_UNPIN;
}

static bool holds_intact(const struct node_rank_slots *r, uint64_t step)
{
  for (uint32_t i = 0; i < r->n; i++) {
    const struct node_slot_view *v = &r->slots[i];
    if (snap_state_holds_data(v->state) && v->intact && v->step == step)
      return true;
  }
  return false;
}

bool node_plan_restore_step(const struct node_rank_slots *ranks,
                            uint32_t nranks, uint64_t *out)
{
  bool found = false;
  uint64_t best = 0;

  if (nranks == 0)
    return false;
  for (uint32_t i = 0; i < ranks[0].n; i++) {
    uint64_t step = ranks[0].slots[i].step;
    bool everywhere = true;

    if (found && step <= best)
      continue;
    for (uint32_t r = 0; r < nranks && everywhere; r++)
      everywhere = holds_intact(&ranks[r], step);
    if (everywhere) {
      best = step;
      found = true;
    }
  }
  if (found)
    *out = best;
  return found;
}

uint32_t node_plan_backoff_ms(uint32_t base_ms, uint32_t attempt,
                              uint32_t cap_ms)
{
  uint64_t d = base_ms;

  if (attempt == 0)
    attempt = 1;
  for (uint32_t i = 1; i < attempt && d < cap_ms; i++)
    d *= 2;
  return d > cap_ms ? cap_ms : (uint32_t)d;
}

void node_plan_restart_note(struct node_restart_log *l, uint64_t now)
{
  if (l->cap == 0 || l->at == NULL)
    return;
  l->at[l->next] = now;
  l->next = (l->next + 1) % l->cap;
  if (l->n < l->cap)
    l->n++;
}

uint32_t node_plan_restarts_recent(const struct node_restart_log *l,
                                   uint64_t now, uint32_t window_ms)
{
  uint32_t k = 0;

  if (window_ms == 0)
    return l->n;
  for (uint32_t i = 0; i < l->n; i++)
    if (l->at[i] + window_ms > now)
      k++;
  return k;
}

bool node_plan_healthy(bool committed_since, uint64_t running_since,
                       uint64_t now, uint32_t healthy_ms)
{
  return committed_since && running_since != 0 &&
         now >= running_since + healthy_ms;
}

#define FDS_FIXED (16u + NODE_CTL_MAX)
#define FDS_PER_RANK 5u

uint64_t node_plan_fds_needed(uint32_t nranks)
{
  return FDS_FIXED + (uint64_t)FDS_PER_RANK * nranks;
}

int node_plan_fds_check(uint32_t nranks, uint64_t soft, uint64_t hard,
                        uint64_t *raise_to, char *err, size_t len)
{
  uint64_t need = node_plan_fds_needed(nranks);

  *raise_to = 0;
  if (soft >= need)
    return PT_OK;
  if (hard >= need) {
    /* What is needed, rounded up to a multiple of 1024, within the hard
     * limit: the children inherit it, and some programs walk every
     * possible descriptor (closing them before exec). */
    uint64_t want = (need + 1023u) / 1024u * 1024u;
    *raise_to = want < hard ? want : hard;
    return PT_OK;
  }
  snprintf(err, len,
           "too few open files allowed: %" PRIu32 " ranks need %" PRIu64
           ", the limit is %" PRIu64 " (hard limit %" PRIu64 "); raise it "
           "(ulimit -n, LimitNOFILE=)",
           nranks, need, soft, hard);
  return -EMFILE;
}

int node_plan_budget_check(uint64_t budget, uint32_t nranks,
                           uint64_t min_object, uint64_t shm_avail, char *err,
                           size_t len)
{
  if (budget == 0 || nranks == 0)
    return PT_OK;
  uint64_t per = budget / nranks;
  if (per < min_object) {
    snprintf(err, len,
             "--memory-budget %" PRIu64 " bytes gives each of the %" PRIu32
             " ranks %" PRIu64 " bytes; the smallest snapshot object needs %"
             PRIu64 " bytes per rank (%" PRIu64 " bytes for the node)",
             budget, nranks, per, min_object, min_object * nranks);
    return PT_EBUDGET;
  }
  if (budget > shm_avail) {
    snprintf(err, len,
             "--memory-budget %" PRIu64 " bytes cannot be met: /dev/shm has "
             "%" PRIu64 " bytes available for this job",
             budget, shm_avail);
    return -ENOSPC;
  }
  return PT_OK;
}

int node_plan_state_check(uint64_t state_bytes, uint64_t object,
                          uint64_t budget, uint32_t nranks, uint64_t shm_avail,
                          char *err, size_t len)
{
  if (state_bytes == 0 || nranks == 0)
    return PT_OK;
  if (budget != 0 && budget / nranks < object) {
    snprintf(err, len,
             "--memory-budget %" PRIu64 " bytes gives each of the %" PRIu32
             " ranks %" PRIu64 " bytes; --state-bytes %" PRIu64 " needs a "
             "snapshot object of %" PRIu64 " bytes per rank (%" PRIu64
             " bytes for the node)",
             budget, nranks, budget / nranks, state_bytes, object,
             object * nranks);
    return PT_EBUDGET;
  }
  if (object > shm_avail / nranks) {
    snprintf(err, len,
             "--state-bytes %" PRIu64 " needs %" PRIu32 " snapshot objects of "
             "%" PRIu64 " bytes (%" PRIu64 " bytes); /dev/shm has %" PRIu64
             " bytes available for this job",
             state_bytes, nranks, object, object * nranks, shm_avail);
    return -ENOSPC;
  }
  return PT_OK;
}

const char *node_plan_exit_text(char *buf, size_t len, int64_t status,
                                int term_signal)
{
  if (term_signal != 0) {
    const char *abbrev = sigabbrev_np(term_signal);
    if (abbrev != NULL)
      snprintf(buf, len, "killed by signal SIG%s", abbrev);
    else
      snprintf(buf, len, "killed by signal %d", term_signal);
  } else {
    snprintf(buf, len, "exited with status %" PRId64, status);
  }
  return buf;
}
