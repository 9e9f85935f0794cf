/*
 * ctl_spec.c — a job's spec and where it runs (pure, as ctl_jobs.c): the
 * spec checked and its defaults filled (the code: ctl_groups.c), the
 * spare nodes it is placed on, its MASTER_PORT.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/controller/controller.h"
#include "snapshot/snap_store.h"

/* ---- the spec ---- */

static bool name_ok(const char *s)
{
  size_t n = strlen(s);
  if (n == 0 || n > CTL_JOB_MAX)
    return false;
  for (; *s != '\0'; s++) {
    char c = *s;
    if (!((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
          (c >= '0' && c <= '9') || c == '.' || c == '_' || c == '-'))
      return false;
  }
  return true;
}

static int bad(char *err, size_t errlen, const char *fmt, ...)
    __attribute__((format(printf, 3, 4)));
static int bad(char *err, size_t errlen, const char *fmt, ...)
{
  va_list ap;
  va_start(ap, fmt);
  vsnprintf(err, errlen, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

int ctl_spec_check(const struct ctl_jobs *js, Pt__JobSpec *s, char *err,
                        size_t errlen)
{
  uint32_t dead_after = js->m != NULL ? js->m->t.dead_after_ms : 0;

  if (s->name == NULL || !name_ok(s->name))
    return bad(err, errlen,
               "job name '%s': 1..%u bytes of A-Z a-z 0-9 . _ -",
               s->name != NULL ? LOG_ESC(s->name) : "", CTL_JOB_MAX);
  if (s->n_argv == 0 || s->argv[0] == NULL || s->argv[0][0] == '\0')
    return bad(err, errlen, "job '%s': no command (argv is empty)", s->name);
  if (s->n_argv > CTL_ARGV_MAX)
    return bad(err, errlen, "job '%s': %zu arguments (at most %u)", s->name,
               s->n_argv, CTL_ARGV_MAX);
  for (size_t i = 0; i < s->n_argv; i++)
    if (s->argv[i] == NULL || strlen(s->argv[i]) > CTL_ARG_MAX)
      return bad(err, errlen, "job '%s': argument %zu is over %u bytes",
                 s->name, i, CTL_ARG_MAX);
  if (s->nodes < 1 || s->nodes > CTL_JOB_NODES_MAX)
    return bad(err, errlen, "job '%s': nodes %" PRIu32 " (1..%u)", s->name,
               s->nodes, CTL_JOB_NODES_MAX);
  if (s->ranks_per_node < 1 || s->ranks_per_node > CTL_CAPACITY_MAX)
    return bad(err, errlen, "job '%s': ranks per node %" PRIu32 " (1..%u)",
               s->name, s->ranks_per_node, CTL_CAPACITY_MAX);
  if ((uint64_t)s->nodes * s->ranks_per_node > INT32_MAX)
    return bad(err, errlen, "job '%s': %" PRIu32 " x %" PRIu32
               " ranks is over the largest world size", s->name, s->nodes,
               s->ranks_per_node);
  if (!s->has_slots || s->slots == 0) {
    s->has_slots = true;
    s->slots = CTL_SLOTS_DEFAULT;
  }
  if (s->slots < 2 || s->slots > SNAP_MAX_SLOTS)
    return bad(err, errlen, "job '%s': slots %" PRIu32 " (2..%u)", s->name,
               s->slots, SNAP_MAX_SLOTS);
  /* The code: absent, the default for the number of nodes; one half of it
   * absent counts as 0 (and is refused). */
  uint32_t k = s->has_code_k ? s->code_k : 0, mm = s->has_code_m ? s->code_m : 0;
  char why[300];
  if (!s->has_code_k && !s->has_code_m)
    ctl_groups_default_code(s->nodes, &k, &mm);
  if (ctl_groups_code_check(s->nodes, k, mm, why, sizeof(why)) != PT_OK)
    return bad(err, errlen, "job '%s': %s", s->name, why);
  s->has_code_k = s->has_code_m = true;
  s->code_k = k;
  s->code_m = mm;
  if (s->has_master_port && s->master_port > 65535)
    return bad(err, errlen, "job '%s': master port %" PRIu32 " (1..65535, "
               "0: the controller picks)", s->name, s->master_port);
  if (!s->has_max_restarts) {
    s->has_max_restarts = true;
    s->max_restarts = CTL_MAX_RESTARTS_DEFAULT;
  }
  if (!s->has_restart_window_ms) {
    s->has_restart_window_ms = true;
    s->restart_window_ms = CTL_RESTART_WINDOW_MS_DEFAULT;
  }
  if (!s->has_backoff_ms) {
    s->has_backoff_ms = true;
    s->backoff_ms = CTL_BACKOFF_MS_DEFAULT;
  }
  if (s->backoff_ms > CTL_TIMEOUT_MS_MAX || s->restart_window_ms > 30u *
      86400u * 1000u || s->max_restarts > 1000000u)
    return bad(err, errlen, "job '%s': restart policy out of range (backoff "
               "at most %u ms, window at most 30 days, at most 1000000 "
               "restarts)", s->name, CTL_TIMEOUT_MS_MAX);
  if (!s->has_node_wait_ms || s->node_wait_ms == 0) {
    s->has_node_wait_ms = true;
    s->node_wait_ms = js->m != NULL && js->m->t.node_wait_ms != 0
                          ? js->m->t.node_wait_ms
                          : CTL_NODE_WAIT_MS_DEFAULT;
  }
  /* The persistent tier, and the files a cold start resumes from. */
  if (s->resume_from != NULL && s->resume_from[0] != '\0' &&
      !conf_path_plain(s->resume_from, CTL_PERSIST_PATH_MAX))
    return bad(err, errlen, "job '%s': resume from '%.200s': expected an "
               "absolute path of at most %u bytes, without . or .. parts",
               s->name, s->resume_from, CTL_PERSIST_PATH_MAX - 1);
  if (s->persist_dir != NULL && s->persist_dir[0] != '\0') {
    if (!conf_path_plain(s->persist_dir, CTL_PERSIST_PATH_MAX))
      return bad(err, errlen, "job '%s': persist dir '%.200s': expected an "
                 "absolute path of at most %u bytes, without . or .. parts",
                 s->name, s->persist_dir, CTL_PERSIST_PATH_MAX - 1);
    if (!s->has_persist_every || s->persist_every == 0) {
      s->has_persist_every = true;
      s->persist_every = CTL_PERSIST_EVERY_DEFAULT;
    }
    if (!s->has_persist_keep || s->persist_keep == 0) {
      s->has_persist_keep = true;
      s->persist_keep = CTL_PERSIST_KEEP_DEFAULT;
    }
    if (!s->has_persist_rate) {
      s->has_persist_rate = true;
      s->persist_rate = CTL_PERSIST_RATE_DEFAULT;
    }
    if (s->persist_every > 100000000u || s->persist_keep > CTL_DISK_MAX - 1)
      return bad(err, errlen, "job '%s': persist every %" PRIu32 " (1..100000000"
                 "), keep %" PRIu32 " (1..%u)", s->name, s->persist_every,
                 s->persist_keep, CTL_DISK_MAX - 1);
  } else if (s->has_persist_every || s->has_persist_keep ||
             s->has_persist_rate) {
    return bad(err, errlen, "job '%s': persist every, keep and rate need a "
               "persist dir", s->name);
  }
  if (s->node_wait_ms <= dead_after || s->node_wait_ms > CTL_TIMEOUT_MS_MAX)
    return bad(err, errlen, "job '%s': node wait %" PRIu32 " ms must be "
               "longer than the controller's dead-after (%" PRIu32 " ms) and "
               "at most %u ms: heartbeat < dead-after < node wait", s->name,
               s->node_wait_ms, dead_after, CTL_TIMEOUT_MS_MAX);
  return PT_OK;
}

/* ---- placement ---- */

static bool spare(const struct ctl_node *n, uint32_t rpn)
{
  return n->state == CTL_NODE_ALIVE && n->job[0] == '\0' && n->jobp == NULL &&
         n->capacity >= rpn;
}

int ctl_spec_place(const struct ctl_jobs *js, const Pt__JobSpec *spec,
                   size_t *idx, char *err, size_t errlen)
{
  const struct ctl_members *m = js->m;
  uint32_t want = spec->nodes, got = 0;
  size_t free_n = 0, alive = 0;

  for (size_t i = 0; i < m->n; i++) {
    alive += m->nodes[i].state == CTL_NODE_ALIVE;
    free_n += spare(&m->nodes[i], spec->ranks_per_node);
  }
  if (free_n < want) {
    snprintf(err, errlen,
             "job '%s' needs %" PRIu32 " spare nodes of capacity >= %" PRIu32
             " ranks: %zu free (%zu alive, %zu registered)",
             spec->name, want, spec->ranks_per_node, free_n, alive, m->n);
    return -ENOSPC;
  }
  bool *taken = calloc(m->n, sizeof(*taken));
  if (taken == NULL)
    return -ENOMEM;
  /* Round by round, one node of each failure domain not yet exhausted,
   * in registration order (a node without a label is a domain of its
   * own): the job spans as many domains as there are, and every domain
   * gives it as few nodes as it can, so that its coding groups
   * (ctl_groups.c) can keep their members apart. */
  while (got < want) {
    uint32_t round_start = got;
    for (size_t i = 0; i < m->n && got < want; i++) {
      const struct ctl_node *n = &m->nodes[i];
      if (taken[i] || !spare(n, spec->ranks_per_node))
        continue;
      bool dup = false;
      for (uint32_t k = round_start; k < got && n->failure_domain[0] != '\0';
           k++)
        if (strcmp(m->nodes[idx[k]].failure_domain, n->failure_domain) == 0) {
          dup = true;
          break;
        }
      if (dup)
        continue;
      taken[i] = true;
      idx[got++] = i;
    }
  }
  free(taken);
  return PT_OK;
}

int ctl_spec_pick_spare(const struct ctl_jobs *js, const struct ctl_job *j,
                        uint32_t p, const bool *taken, size_t *idx,
                        bool *apart)
{
  const struct ctl_members *m = js->m;
  const struct ctl_groups *g = &j->groups;
  size_t first = SIZE_MAX;

  for (size_t i = 0; i < m->n; i++) {
    const struct ctl_node *n = &m->nodes[i];
    if ((taken != NULL && taken[i]) || !spare(n, j->spec->ranks_per_node))
      continue;
    if (first == SIZE_MAX)
      first = i;
    bool clash = false;
    if (n->failure_domain[0] != '\0' && g->n > 0) {
      uint32_t gi = g->group_of[p];
      for (uint32_t x = g->first[gi]; x < g->first[gi + 1] && !clash; x++) {
        uint32_t q = g->member[x];
        size_t qn = j->parts[q].node;
        clash = q != p && qn < m->n &&
                strcmp(m->nodes[qn].failure_domain, n->failure_domain) == 0;
      }
    }
    if (!clash) {
      *idx = i;
      *apart = true;
      return PT_OK;
    }
  }
  if (first == SIZE_MAX)
    return -ENOSPC;
  *idx = first;
  *apart = false;
  return PT_OK;
}

/* j's coding groups over its placed nodes idx[], their failure domains
 * apart where the labels allow (logged when they do not). */
int ctl_spec_groups(const struct ctl_jobs *js, struct ctl_job *j,
                    const size_t *idx, char *err, size_t errlen)
{
  const char **doms = calloc(j->nparts, sizeof(*doms));
  char why[512];
  uint32_t worst = 0;

  if (doms == NULL) {
    snprintf(err, errlen, "out of memory");
    return -ENOMEM;
  }
  for (uint32_t p = 0; p < j->nparts; p++)
    doms[p] = js->m->nodes[idx[p]].failure_domain;
  int rc = ctl_groups_form(&j->groups, j->nparts, doms, j->spec->code_k,
                           j->spec->code_m, &worst, why, sizeof(why));
  free(doms);
  if (rc != PT_OK) {
    snprintf(err, errlen, "job '%s': %s", j->spec->name,
             rc == -ENOMEM ? "out of memory" : why);
    return rc;
  }
  if (worst > 1)
    log_warn("job '%s': coding groups share failure domains: %s",
             j->spec->name, why);
  return PT_OK;
}

uint32_t ctl_spec_pick_port(const struct ctl_jobs *js, uint32_t want)
{
  if (want != 0)
    return want;
  for (uint32_t k = 0; k < CTL_MASTER_PORT_SPAN; k++) {
    uint32_t port = CTL_MASTER_PORT_BASE + k;
    bool used = false;
    for (const struct ctl_job *j = js->jobs; j != NULL && !used; j = j->next)
      used = !ctl_jobs_ended(j->state) && j->master_port == port;
    if (!used)
      return port;
  }
  return 0;
}
