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

bool node_plan_restore_decided(const struct node_rank_slots *ranks,
                               uint32_t nranks, bool has, uint64_t step)
{
  for (uint32_t r = 0; r < nranks; r++)
    for (uint32_t i = 0; i < ranks[r].n; i++) {
      const struct node_slot_view *v = &ranks[r].slots[i];
      if (snap_state_holds_data(v->state) && !v->verified &&
          (!has || v->step > step))
        return false;
    }
  return true;
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

const char *node_plan_rank_name(char *buf, size_t len, bool cluster,
                                uint32_t first, const char *node_id,
                                uint32_t local)
{
  if (!cluster)
    snprintf(buf, len, "%" PRIu32, local);
  else
    snprintf(buf, len, "%" PRIu32 " (local %" PRIu32 " on node %s)",
             first + local, local, node_id);
  return buf;
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

/* ---- cluster mode: the part's ranks, the remote decider ---- */

uint32_t node_plan_world(const struct node_config *cfg)
{
  return cfg->world != 0 ? cfg->world : cfg->ranks;
}

void node_plan_rank_env(const struct node_config *cfg, uint32_t local_rank,
                        struct node_rank_env *out)
{
  out->rank = cfg->first_rank + local_rank;
  out->world = node_plan_world(cfg);
  out->local_rank = local_rank;
  out->local_world = cfg->ranks;
  out->group_rank = cfg->group_rank;
  out->master_port = cfg->master_port;
  out->master_addr =
      cfg->master_addr[0] != '\0' ? cfg->master_addr : "127.0.0.1";
}

bool node_plan_job_name_ok(const char *s)
{
  size_t n = s != NULL ? strlen(s) : 0;

  if (n == 0 || n >= SNAP_JOB_MAX || s[0] == '.')
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    bool ok = (ch >= 'a' && ch <= 'z') || (ch >= 'A' && ch <= 'Z') ||
              (ch >= '0' && ch <= '9') || ch == '_' || ch == '-' || ch == '.';
    if (!ok)
      return false;
  }
  return true;
}

int node_plan_assign_check(const Pt__JobAssign *a, uint32_t capacity,
                           char *err, size_t len)
{
  const Pt__JobSpec *s = a->spec;

  if (s == NULL || !node_plan_job_name_ok(s->name)) {
    snprintf(err, len, "job name '%.80s' is not 1..%d characters of "
             "[A-Za-z0-9_.-]", s != NULL && s->name != NULL ? s->name : "",
             SNAP_JOB_MAX - 1);
    return -EINVAL;
  }
  if (s->n_argv == 0 || s->argv[0] == NULL || s->argv[0][0] == '\0') {
    snprintf(err, len, "job '%s' has no trainer command", s->name);
    return -EINVAL;
  }
  if (s->ranks_per_node == 0 || s->ranks_per_node > NODE_MAX_RANKS) {
    snprintf(err, len, "ranks_per_node %" PRIu32 " is outside 1..%d",
             s->ranks_per_node, NODE_MAX_RANKS);
    return -EINVAL;
  }
  if (s->ranks_per_node > capacity) {
    snprintf(err, len, "%" PRIu32 " ranks are more than this node's "
             "capacity of %" PRIu32, s->ranks_per_node, capacity);
    return -ENOSPC;
  }
  if (s->has_slots && (s->slots < 2 || s->slots > SNAP_MAX_SLOTS)) {
    snprintf(err, len, "slots %" PRIu32 " is outside 2..%d", s->slots,
             SNAP_MAX_SLOTS);
    return -EINVAL;
  }
  if (a->epoch == 0) {
    snprintf(err, len, "epoch 0 (epochs start at 1)");
    return -EINVAL;
  }
  if (a->world_size == 0 || a->first_rank >= a->world_size ||
      s->ranks_per_node > a->world_size - a->first_rank) {
    snprintf(err, len, "ranks %" PRIu32 "..%" PRIu64 " do not fit in world "
             "size %" PRIu32, a->first_rank,
             (uint64_t)a->first_rank + s->ranks_per_node - 1, a->world_size);
    return -EINVAL;
  }
  if (a->master_port == 0 || a->master_port > 65535 ||
      a->master_addr == NULL || a->master_addr[0] == '\0' ||
      strlen(a->master_addr) >= 256) {
    snprintf(err, len, "master '%.80s:%" PRIu32 "' is not an address and a "
             "port 1..65535", a->master_addr != NULL ? a->master_addr : "",
             a->master_port);
    return -EINVAL;
  }
  return PT_OK;
}

int node_plan_group(const Pt__JobAssign *a, const char *self,
                    struct code_group *out, char *err, size_t len)
{
  const Pt__JobSpec *s = a->spec;
  const Pt__NodeGroup *g = a->group;
  bool coded = s->has_code_k && s->code_k != 0;

  memset(out, 0, sizeof(*out));
  if (g == NULL && !coded)
    return PT_OK;
  if (g == NULL || !coded) {
    snprintf(err, len, "job '%s' %s", s->name,
             g == NULL ? "has a code but the assignment names no coding "
                         "group"
                       : "has no code but the assignment names a coding "
                         "group");
    return -EINVAL;
  }
  if (g->m != s->code_m || g->k < s->code_k ||
      g->n_members != (size_t)g->k + g->m || g->n_members > RS_MAX_MEMBERS ||
      (uint64_t)(g->index + 1) * s->ranks_per_node > UINT32_MAX) {
    snprintf(err, len, "node group %" PRIu32 " of %zu members coded %" PRIu32
             "+%" PRIu32 " does not fit the job's code %" PRIu32 "+%" PRIu32
             " (m the same, k at least, k + m members, at most %u)",
             g->index, g->n_members, g->k, g->m, s->code_k, s->code_m,
             RS_MAX_MEMBERS);
    return -EINVAL;
  }
  out->k = g->k;
  out->m = g->m;
  out->group = g->index;
  out->n = (uint32_t)g->n_members;
  bool found = false;
  for (uint32_t i = 0; i < out->n; i++) {
    const Pt__GroupMember *m = g->members[i];
    struct code_group_member *o = &out->members[i];
    if (m->node_index >= s->nodes || m->node_id == NULL ||
        m->node_id[0] == '\0' || strlen(m->node_id) > RPC_NODE_ID_MAX ||
        (m->advertise != NULL &&
         strlen(m->advertise) > CODE_GROUP_ADDR_MAX)) {
      snprintf(err, len, "member %" PRIu32 " of node group %" PRIu32
               " is not a node of the job (index %" PRIu32 " of %" PRIu32
               ", an id of 1..%u bytes, an address of at most %u)", i,
               g->index, m->node_index, s->nodes, RPC_NODE_ID_MAX,
               CODE_GROUP_ADDR_MAX);
      return -EINVAL;
    }
    o->node_index = m->node_index;
    snprintf(o->node_id, sizeof(o->node_id), "%s", m->node_id);
    snprintf(o->addr, sizeof(o->addr), "%s",
             m->advertise != NULL ? m->advertise : "");
    for (const char *p = o->addr; *p != '\0'; p++)
      if ((unsigned char)*p < 0x21 || (unsigned char)*p > 0x7e) {
        snprintf(err, len, "member %" PRIu32 " of node group %" PRIu32
                 ": its address is not printable", i, g->index);
        return -EINVAL;
      }
    if (m->node_index == a->node_index) {
      found = true;
      out->member = i;
    }
  }
  if (!found) {
    snprintf(err, len, "this node (index %" PRIu32 ") is not in its node "
             "group %" PRIu32, a->node_index, g->index);
    return -EINVAL;
  }
  return code_group_check(out, self, err, len);
}

void node_plan_smp_group(const struct node_config *cfg, uint32_t local_rank,
                         struct code_group *out)
{
  *out = cfg->group;
  if (out->k != 0)
    out->group = cfg->group.group * cfg->ranks + local_rank;
}

bool node_plan_seal_report(const struct commit_sealed_set *const *sets,
                           uint32_t n, bool has_committed, uint64_t committed,
                           bool has_sent, uint64_t sent, uint64_t *step)
{
  bool has_floor = has_committed || has_sent;
  uint64_t floor = 0;

  if (has_committed)
    floor = committed;
  if (has_sent && (!has_committed || sent > floor))
    floor = sent;
  return commit_plan_step(sets, n, has_floor, floor, step);
}

int node_plan_vote(const int *status, uint32_t n)
{
  int first = 0;
  bool missing = false;

  if (n == 0)
    return -ENOENT;
  for (uint32_t i = 0; i < n; i++) {
    if (status[i] == NODE_PLAN_NO_ANSWER)
      missing = true;
    else if (status[i] == -ENOENT)
      return -ENOENT;
    else if (status[i] != 0 && first == 0)
      first = status[i];
  }
  return first != 0 ? first : missing ? NODE_PLAN_NO_ANSWER : 0;
}

int node_plan_pin_status(bool answered, int status)
{
  if (!answered)
    return status < 0 ? status : -ETIMEDOUT;
  return status > 0 ? PT_EPROTO : status;
}

enum node_fence node_plan_fence(const char *part_job, uint64_t part_epoch,
                                const char *job, uint64_t epoch)
{
  if (part_job == NULL)
    return NODE_FENCE_NONE;
  if (job == NULL || strcmp(part_job, job) != 0)
    return NODE_FENCE_OTHER_JOB;
  if (epoch < part_epoch)
    return NODE_FENCE_OLDER;
  return epoch == part_epoch ? NODE_FENCE_SAME : NODE_FENCE_NEWER;
}
