/*
 * ptctl_jobs.c — the controller's jobs: `start` (JOB_START), `stop JOB`
 * (JOB_STOP), `restore JOB [--step N]` (JOB_RESTORE), each answered with
 * JOB_REPLY; `status [JOB]` and `jobs` (JOBS_QUERY, JOBS_REPLY).
 *
 * Everything the operator typed is checked before anything is sent; the
 * trainer's command after `--` goes out exactly as given. An option given
 * twice is a usage error (which one would win is not obvious in a script).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/ptctl.h"
#include "pt.h"
#include "rpc/rpc.h"

#define START_TRIES 3 /* names drawn when a default name is taken */

/* "refused to VERB job 'JOB'", or "refused to VERB" when the controller's
 * message names the job already. OUT: buf. */
static const char *refusal(char *buf, size_t len, const char *verb,
                           const char *job, const char *msg)
{
  char q[PTCTL_JOB_MAX + 3];

  snprintf(q, sizeof(q), "'%s'", job);
  if (msg != NULL && strstr(msg, q) != NULL)
    snprintf(buf, len, "%s", verb);
  else
    snprintf(buf, len, "%s job %s", verb, q);
  return buf;
}

/* ---- start ---- */

enum start_opt {
  O_JOB, O_NODES, O_RPN, O_SLOTS, O_CODE, O_BUDGET, O_MAXR, O_WINDOW,
  O_BACKOFF, O_NODEWAIT, O_PORT, O_COUNT_
};
static const char *const START_OPTS[O_COUNT_] = {
    "--job",           "--nodes",      "--ranks-per-node",
    "--slots",         "--code",       "--memory-budget",
    "--max-restarts",  "--restart-window-ms", "--backoff-ms",
    "--node-wait-ms",  "--master-port",
};

static int start_opt(Pt__JobSpec *s, enum start_opt k, const char *flag,
                     const char *v)
{
  switch (k) {
  case O_JOB:
    if (ptctl_args_job(flag, v) != PT_OK)
      return -EINVAL;
    s->name = (char *)v;
    return PT_OK;
  case O_NODES:
    return ptctl_args_u32(flag, v, 1, 65536, &s->nodes);
  case O_RPN:
    return ptctl_args_u32(flag, v, 1, 65536, &s->ranks_per_node);
  case O_SLOTS:
    s->has_slots = true;
    return ptctl_args_u32(flag, v, 2, 8, &s->slots);
  case O_CODE:
    s->has_code_k = s->has_code_m = true;
    return ptctl_args_code(flag, v, &s->code_k, &s->code_m);
  case O_BUDGET:
    s->has_memory_budget = true;
    return ptctl_args_bytes(flag, v, &s->memory_budget);
  case O_MAXR:
    s->has_max_restarts = true;
    return ptctl_args_u32(flag, v, 0, 1000000, &s->max_restarts);
  case O_WINDOW:
    s->has_restart_window_ms = true;
    return ptctl_args_u32(flag, v, 0, 2592000000u, &s->restart_window_ms);
  case O_BACKOFF:
    s->has_backoff_ms = true;
    return ptctl_args_u32(flag, v, 0, 3600000, &s->backoff_ms);
  case O_NODEWAIT:
    s->has_node_wait_ms = true;
    return ptctl_args_u32(flag, v, 1, 3600000, &s->node_wait_ms);
  case O_PORT:
    s->has_master_port = true;
    return ptctl_args_u32(flag, v, 0, 65535, &s->master_port);
  case O_COUNT_:
    break;
  }
  return -EINVAL;
}

/* The spec from start's arguments. OUT: s (its strings point into argv);
 * PTCTL_EXIT_OK or PTCTL_EXIT_USAGE (said on stderr). */
static int start_parse(int argc, char **argv, Pt__JobSpec *s)
{
  bool seen[O_COUNT_] = {false};
  int i;

  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--") == 0)
      break;
    int k = 0;
    while (k < O_COUNT_ && strcmp(a, START_OPTS[k]) != 0)
      k++;
    if (k == O_COUNT_) {
      if (a[0] == '-')
        fprintf(stderr, "ptctl: start: unknown option '%s' (see ptctl "
                        "start --help)\n",
                a);
      else
        fprintf(stderr, "ptctl: start: unexpected argument '%s': the "
                        "trainer's command goes after '--'\n",
                a);
      return PTCTL_EXIT_USAGE;
    }
    if (seen[k]) {
      fprintf(stderr, "ptctl: start: %s given twice\n", a);
      return PTCTL_EXIT_USAGE;
    }
    seen[k] = true;
    if (i + 1 >= argc || strcmp(argv[i + 1], "--") == 0) {
      fprintf(stderr, "ptctl: start: option '%s' needs a value\n", a);
      return PTCTL_EXIT_USAGE;
    }
    if (start_opt(s, (enum start_opt)k, a, argv[++i]) != PT_OK)
      return PTCTL_EXIT_USAGE;
  }
  if (!seen[O_NODES] || !seen[O_RPN]) {
    fprintf(stderr, "ptctl: start: %s is required\n",
            !seen[O_NODES] ? "--nodes N" : "--ranks-per-node R");
    return PTCTL_EXIT_USAGE;
  }
  if ((uint64_t)s->nodes * s->ranks_per_node > INT32_MAX) {
    fprintf(stderr, "ptctl: start: --nodes %" PRIu32 " x --ranks-per-node %"
                    PRIu32 " is over the largest world size (%d ranks)\n",
            s->nodes, s->ranks_per_node, INT32_MAX);
    return PTCTL_EXIT_USAGE;
  }
  /* A coding group is K + M nodes: a job of fewer cannot have one (the
   * controller checks again, and how its nodes split into groups). */
  if (s->has_code_k && (uint64_t)s->code_k + s->code_m > s->nodes) {
    fprintf(stderr, "ptctl: start: --code %" PRIu32 "+%" PRIu32 " needs at "
                    "least %" PRIu32 " nodes; the job has %" PRIu32
                    " (--nodes)\n",
            s->code_k, s->code_m, s->code_k + s->code_m, s->nodes);
    return PTCTL_EXIT_USAGE;
  }
  if (i >= argc) {
    fprintf(stderr, "ptctl: start: no trainer command: give it after "
                    "'--' (ptctl start ... -- CMD ARGS...)\n");
    return PTCTL_EXIT_USAGE;
  }
  if (i + 1 >= argc || argv[i + 1][0] == '\0') {
    fprintf(stderr, "ptctl: start: the command after '--' is %s\n",
            i + 1 >= argc ? "missing" : "empty");
    return PTCTL_EXIT_USAGE;
  }
  s->argv = &argv[i + 1];
  s->n_argv = (size_t)(argc - i - 1);
  return PTCTL_EXIT_OK;
}

int ptctl_jobs_start(const struct ptctl_opts *o, int argc, char **argv)
{
  Pt__JobSpec spec = PT__JOB_SPEC__INIT;
  Pt__JobStart req = PT__JOB_START__INIT;
  char name[64];
  int code = start_parse(argc, argv, &spec);

  if (code != PTCTL_EXIT_OK)
    return code;
  bool generated = spec.name == NULL;
  req.spec = &spec;
  for (int tries = 0;; tries++) {
    ProtobufCMessage *msg = NULL;
    if (generated) {
      ptctl_args_default_job(name, sizeof(name), spec.argv, spec.n_argv);
      spec.name = name;
    }
    code = ptctl_ctl_call(o, RPC_JOB_START, &req.base, RPC_JOB_REPLY, &msg);
    if (code != PTCTL_EXIT_OK)
      return code;
    const Pt__JobReply *m = (const Pt__JobReply *)msg;
    const char *job = m->job != NULL && m->job[0] != '\0' ? m->job : spec.name;
    if (m->status == -EEXIST && generated && tries + 1 < START_TRIES) {
      protobuf_c_message_free_unpacked(msg, NULL);
      continue; /* the drawn name is taken: draw another */
    }
    if (m->status != 0) {
      char what[PTCTL_JOB_MAX + 40];
      code = ptctl_ctl_refused(o,
                               refusal(what, sizeof(what), "refused to start",
                                       spec.name, m->message),
                               m->status, m->message);
    } else if (o->json) {
      fputs("{\"controller\":", stdout);
      ptctl_out_json_str(stdout, o->controller);
      fputs(",\"job\":", stdout);
      ptctl_out_json_str(stdout, job);
      fputs(",\"epoch\":", stdout);
      ptctl_out_json_u64(stdout, m->has_epoch, m->epoch);
      fprintf(stdout, ",\"nodes\":%" PRIu32 ",\"ranks_per_node\":%" PRIu32
                      ",\"world_size\":%" PRIu64 ",\"message\":",
              spec.nodes, spec.ranks_per_node,
              (uint64_t)spec.nodes * spec.ranks_per_node);
      ptctl_out_json_str(stdout, m->message);
      fputs("}\n", stdout);
    } else {
      printf("job %s started: epoch %" PRIu64 ", %" PRIu32 " node%s x %" PRIu32
             " rank%s (world size %" PRIu64 ")\n",
             job, m->has_epoch ? m->epoch : 1, spec.nodes,
             spec.nodes == 1 ? "" : "s", spec.ranks_per_node,
             spec.ranks_per_node == 1 ? "" : "s",
             (uint64_t)spec.nodes * spec.ranks_per_node);
      if (m->message != NULL && m->message[0] != '\0') {
        fputs("  ", stdout);
        ptctl_out_line(stdout, m->message);
        putchar('\n');
      }
    }
    protobuf_c_message_free_unpacked(msg, NULL);
    return ptctl_ctl_flush(code);
  }
}

/* ---- stop, restore ---- */

/* JOB and, for restore, --step N, for stop --keep. OUT: *job, *step,
 * *has_step, *keep (keep may be NULL where --keep is not an option). */
static int job_args(int argc, char **argv, bool step_ok, const char **job,
                    uint64_t *step, bool *has_step, bool *keep)
{
  const char *cmd = argv[0];

  *job = NULL;
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (keep != NULL && strcmp(a, "--keep") == 0) {
      *keep = true;
    } else if (step_ok && strcmp(a, "--step") == 0) {
      if (*has_step) {
        fprintf(stderr, "ptctl: %s: --step given twice\n", cmd);
        return PTCTL_EXIT_USAGE;
      }
      if (i + 1 >= argc) {
        fprintf(stderr, "ptctl: %s: option '--step' needs a value\n", cmd);
        return PTCTL_EXIT_USAGE;
      }
      if (ptctl_args_u64("--step", argv[++i], 0, UINT64_MAX, step) != PT_OK)
        return PTCTL_EXIT_USAGE;
      *has_step = true;
    } else if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "ptctl: %s: unknown option '%s' (see ptctl %s --help)\n",
              cmd, a, cmd);
      return PTCTL_EXIT_USAGE;
    } else if (*job == NULL) {
      if (ptctl_args_job("JOB", a) != PT_OK)
        return PTCTL_EXIT_USAGE;
      *job = a;
    } else {
      fprintf(stderr, "ptctl: %s: unexpected argument '%s' (one JOB)\n", cmd,
              a);
      return PTCTL_EXIT_USAGE;
    }
  }
  if (*job == NULL) {
    fprintf(stderr, "ptctl: %s: which job? (ptctl %s JOB%s)\n", cmd, cmd,
            step_ok ? " [--step N]" : "");
    return PTCTL_EXIT_USAGE;
  }
  return PTCTL_EXIT_OK;
}

int ptctl_jobs_stop(const struct ptctl_opts *o, int argc, char **argv)
{
  Pt__JobStop req = PT__JOB_STOP__INIT;
  ProtobufCMessage *msg = NULL;
  const char *job;
  uint64_t step = 0;
  bool has_step = false, keep = false;
  int code = job_args(argc, argv, false, &job, &step, &has_step, &keep);

  if (code != PTCTL_EXIT_OK)
    return code;
  req.job = (char *)job;
  req.has_keep = keep;
  req.keep = keep;
  code = ptctl_ctl_call(o, RPC_JOB_STOP, &req.base, RPC_JOB_REPLY, &msg);
  if (code != PTCTL_EXIT_OK)
    return code;
  const Pt__JobReply *m = (const Pt__JobReply *)msg;
  if (m->status != 0) {
    char what[PTCTL_JOB_MAX + 40];
    code = ptctl_ctl_refused(
        o, refusal(what, sizeof(what), "refused to stop", job, m->message),
        m->status, m->message);
  } else if (o->json) {
    fputs("{\"controller\":", stdout);
    ptctl_out_json_str(stdout, o->controller);
    fputs(",\"job\":", stdout);
    ptctl_out_json_str(stdout, job);
    fputs(",\"epoch\":", stdout);
    ptctl_out_json_u64(stdout, m->has_epoch, m->epoch);
    fputs(",\"stopping\":true,\"snapshots\":", stdout);
    ptctl_out_json_str(stdout, keep ? "kept" : "removed");
    fputs(",\"message\":", stdout);
    ptctl_out_json_str(stdout, m->message);
    fputs("}\n", stdout);
  } else {
    printf("job %s is stopping", job);
    if (m->has_epoch)
      printf(" (epoch %" PRIu64 ")", m->epoch);
    printf(keep ? "; its snapshots are kept on its nodes"
                : "; its snapshots are removed from its nodes");
    if (m->message != NULL && m->message[0] != '\0') {
      fputs(": ", stdout);
      ptctl_out_line(stdout, m->message);
    }
    putchar('\n');
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return ptctl_ctl_flush(code);
}

int ptctl_jobs_restore(const struct ptctl_opts *o, int argc, char **argv)
{
  Pt__JobRestore req = PT__JOB_RESTORE__INIT;
  ProtobufCMessage *msg = NULL;
  const char *job;
  uint64_t step = 0;
  bool has_step = false;
  int code = job_args(argc, argv, true, &job, &step, &has_step, NULL);

  if (code != PTCTL_EXIT_OK)
    return code;
  req.job = (char *)job;
  req.has_step = has_step;
  req.step = step;
  code = ptctl_ctl_call(o, RPC_JOB_RESTORE, &req.base, RPC_JOB_REPLY, &msg);
  if (code != PTCTL_EXIT_OK)
    return code;
  const Pt__JobReply *m = (const Pt__JobReply *)msg;
  if (m->status != 0) {
    char verb[64], what[PTCTL_JOB_MAX + 100];
    if (has_step)
      snprintf(verb, sizeof(verb), "refused to restore from step %" PRIu64,
               step);
    else
      snprintf(verb, sizeof(verb), "refused to restore");
    code = ptctl_ctl_refused(
        o, refusal(what, sizeof(what), verb, job, m->message), m->status,
        m->message);
  } else if (o->json) {
    fputs("{\"controller\":", stdout);
    ptctl_out_json_str(stdout, o->controller);
    fputs(",\"job\":", stdout);
    ptctl_out_json_str(stdout, job);
    fputs(",\"epoch\":", stdout);
    ptctl_out_json_u64(stdout, m->has_epoch, m->epoch);
    fputs(",\"step\":", stdout);
    ptctl_out_json_u64(stdout, m->has_step, m->step);
    fputs(",\"message\":", stdout);
    ptctl_out_json_str(stdout, m->message);
    fputs("}\n", stdout);
  } else {
    /* No step in the answer: nothing is committed yet, so every rank
     * starts fresh. */
    if (m->has_step)
      printf("job %s restoring step %" PRIu64, job, m->step);
    else
      printf("job %s restarting fresh (no committed step)", job);
    if (m->has_epoch)
      printf(" in epoch %" PRIu64, m->epoch);
    if (m->message != NULL && m->message[0] != '\0') {
      fputs(": ", stdout);
      ptctl_out_line(stdout, m->message);
    }
    putchar('\n');
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return ptctl_ctl_flush(code);
}

/* ---- status, jobs ---- */

static void spec_json(FILE *f, const Pt__JobSpec *s)
{
  if (s == NULL) {
    fputs("null", f);
    return;
  }
  fputs("{\"argv\":[", f);
  for (size_t i = 0; i < s->n_argv; i++) {
    if (i > 0)
      fputc(',', f);
    ptctl_out_json_str(f, s->argv[i]);
  }
  fprintf(f, "],\"nodes\":%" PRIu32 ",\"ranks_per_node\":%" PRIu32
             ",\"slots\":",
          s->nodes, s->ranks_per_node);
  ptctl_out_json_u64(f, s->has_slots, s->slots);
  fputs(",\"memory_budget\":", f);
  ptctl_out_json_u64(f, s->has_memory_budget, s->memory_budget);
  fputs(",\"max_restarts\":", f);
  ptctl_out_json_u64(f, s->has_max_restarts, s->max_restarts);
  fputs(",\"restart_window_ms\":", f);
  ptctl_out_json_u64(f, s->has_restart_window_ms, s->restart_window_ms);
  fputs(",\"backoff_ms\":", f);
  ptctl_out_json_u64(f, s->has_backoff_ms, s->backoff_ms);
  fputs(",\"code_k\":", f);
  ptctl_out_json_u64(f, s->has_code_k, s->code_k);
  fputs(",\"code_m\":", f);
  ptctl_out_json_u64(f, s->has_code_m, s->code_m);
  fputs(",\"master_port\":", f);
  ptctl_out_json_u64(f, s->has_master_port, s->master_port);
  fputs(",\"node_wait_ms\":", f);
  ptctl_out_json_u64(f, s->has_node_wait_ms, s->node_wait_ms);
  fputc('}', f);
}

static void part_json(FILE *f, const Pt__JobPartInfo *p)
{
  fputs("{\"node\":", f);
  ptctl_out_json_str(f, p->node_id);
  fprintf(f, ",\"node_index\":%" PRIu32 ",\"node_state\":", p->node_index);
  ptctl_out_json_str(f, p->node_state);
  fputs(",\"heartbeat_age_ms\":", f);
  ptctl_out_json_u64(f, p->has_heartbeat_age_ms, p->heartbeat_age_ms);
  fputs(",\"part_state\":", f);
  ptctl_out_json_str(f, p->part_state);
  fprintf(f, ",\"first_rank\":%" PRIu32 ",\"last_rank\":", p->first_rank);
  ptctl_out_json_u64(f, p->ranks > 0,
                     (uint64_t)p->first_rank + p->ranks - (p->ranks > 0));
  fprintf(f, ",\"ranks\":%" PRIu32 ",\"bytes_held\":", p->ranks);
  ptctl_out_json_u64(f, p->has_bytes_held, p->bytes_held);
  fputs(",\"last_sealed\":", f);
  ptctl_out_json_u64(f, p->has_last_sealed, p->last_sealed);
  fputs(",\"held\":[", f);
  for (size_t i = 0; i < p->n_held; i++)
    fprintf(f, "%s%" PRIu64, i > 0 ? "," : "", p->held[i]);
  fputs("]}", f);
}

/* The job's coding groups: node group g's local rank r is coding group
 * g x ranks_per_node + r (rpc/pt.proto, "Coding groups"). Health (losses
 * each group can absorb, the age of its newest PROTECTED step) is not
 * measured yet: null, never a made-up value. */
static void groups_json(FILE *f, const Pt__JobInfo *j)
{
  uint32_t rpn = j->spec != NULL ? j->spec->ranks_per_node : 1;
  bool first = true;

  fputs(",\"code\":", f);
  if (j->spec != NULL && j->spec->has_code_k && j->spec->code_k > 0)
    fprintf(f, "{\"k\":%" PRIu32 ",\"m\":%" PRIu32 "}", j->spec->code_k,
            j->spec->code_m);
  else
    fputs("null", f);
  fputs(",\"groups\":[", f);
  for (size_t g = 0; g < j->n_groups; g++) {
    const Pt__NodeGroup *ng = j->groups[g];
    for (uint32_t r = 0; r < rpn; r++) {
      fprintf(f, "%s{\"group\":%" PRIu64 ",\"node_group\":%" PRIu32
                 ",\"local_rank\":%" PRIu32 ",\"k\":%" PRIu32
                 ",\"m\":%" PRIu32 ",\"members\":[",
              first ? "" : ",", (uint64_t)ng->index * rpn + r, ng->index, r,
              ng->k, ng->m);
      first = false;
      for (size_t x = 0; x < ng->n_members; x++) {
        const Pt__GroupMember *mb = ng->members[x];
        fprintf(f, "%s{\"member\":%zu,\"node\":", x > 0 ? "," : "", x);
        ptctl_out_json_str(f, mb->node_id);
        fprintf(f, ",\"node_index\":%" PRIu32 ",\"local_rank\":%" PRIu32
                   ",\"rank\":%" PRIu64 ",\"address\":",
                mb->node_index, r, (uint64_t)mb->node_index * rpn + r);
        ptctl_out_json_str(f, mb->advertise);
        fputc('}', f);
      }
      fputs("],\"health\":null}", f);
    }
  }
  fputc(']', f);
}

static void jobs_json(FILE *f, const char *addr, const Pt__JobsReply *m)
{
  fputs("{\"controller\":", f);
  ptctl_out_json_str(f, addr);
  fputs(",\"jobs\":[", f);
  for (size_t i = 0; i < m->n_jobs; i++) {
    const Pt__JobInfo *j = m->jobs[i];
    fputs(i > 0 ? ",{\"job\":" : "{\"job\":", f);
    ptctl_out_json_str(f, j->name);
    fputs(",\"state\":", f);
    ptctl_out_json_str(f, j->state);
    fprintf(f, ",\"epoch\":%" PRIu64 ",\"committed_step\":", j->epoch);
    ptctl_out_json_u64(f, j->has_committed_step, j->committed_step);
    fputs(",\"commit_age_ms\":", f);
    ptctl_out_json_u64(f, j->has_commit_age_ms, j->commit_age_ms);
    fprintf(f, ",\"restarts\":%" PRIu32 ",\"commits\":%" PRIu64
               ",\"bytes_held\":%" PRIu64 ",\"reason\":",
            j->restarts, j->commits, j->bytes_held);
    ptctl_out_json_str(f, j->reason);
    fputs(",\"spec\":", f);
    spec_json(f, j->spec);
    groups_json(f, j);
    fputs(",\"parts\":[", f);
    for (size_t k = 0; k < j->n_parts; k++) {
      if (k > 0)
        fputc(',', f);
      part_json(f, j->parts[k]);
    }
    fputs("]}", f);
  }
  fputs("]}\n", f);
}

/* "a..b", "a" for one rank, "-" for none. OUT: buf. */
static const char *rank_range(char *buf, size_t len, uint32_t first,
                              uint32_t n)
{
  if (n == 0)
    snprintf(buf, len, "-");
  else if (n == 1)
    snprintf(buf, len, "%" PRIu32, first);
  else
    snprintf(buf, len, "%" PRIu32 "..%" PRIu64, first,
             (uint64_t)first + n - 1);
  return buf;
}

/* The command as a shell would take it back: an argument with anything
 * but [A-Za-z0-9_./=:,+@%-] in single quotes. */
static void print_argv(FILE *f, char *const *argv, size_t n)
{
  for (size_t i = 0; i < n; i++) {
    const char *a = argv[i];
    if (i > 0)
      fputc(' ', f);
    if (a[0] != '\0' &&
        strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
                  "0123456789_./=:,+@%-") == strlen(a)) {
      fputs(a, f);
      continue;
    }
    fputc('\'', f);
    for (const char *p = a; *p != '\0'; p++) {
      if (*p == '\'')
        fputs("'\\''", f);
      else if (*p == '\n')
        fputs("\\n", f); /* keep the line a line */
      else
        fputc(*p, f);
    }
    fputc('\'', f);
  }
}

static void spec_line(FILE *f, const Pt__JobSpec *s)
{
  char b[32];

  fprintf(f, "spec        %" PRIu32 " node%s x %" PRIu32 " rank%s",
          s->nodes, s->nodes == 1 ? "" : "s", s->ranks_per_node,
          s->ranks_per_node == 1 ? "" : "s");
  if (s->has_slots)
    fprintf(f, ", %" PRIu32 " slots", s->slots);
  if (s->has_code_k && s->code_k > 0)
    fprintf(f, ", code %" PRIu32 "+%" PRIu32, s->code_k, s->code_m);
  if (s->has_memory_budget && s->memory_budget > 0)
    fprintf(f, ", budget %s", ptctl_out_bytes(b, sizeof(b), s->memory_budget));
  if (s->has_max_restarts) {
    fprintf(f, ", at most %" PRIu32 " restarts", s->max_restarts);
    if (s->has_restart_window_ms && s->restart_window_ms > 0)
      fprintf(f, " in %" PRIu32 " ms", s->restart_window_ms);
  }
  if (s->has_master_port && s->master_port > 0)
    fprintf(f, ", master port %" PRIu32, s->master_port);
  if (s->has_node_wait_ms)
    fprintf(f, ", waits %" PRIu32 " ms for a dead node", s->node_wait_ms);
  fputc('\n', f);
  fputs("command     ", f);
  print_argv(f, s->argv, s->n_argv);
  fputc('\n', f);
}

/* The code and the coding groups, members as NODE/LOCAL-RANK. */
static void groups_block(FILE *f, const Pt__JobInfo *j)
{
  uint32_t rpn = j->spec != NULL ? j->spec->ranks_per_node : 1;
  static const char *const head[] = {"GROUP", "CODE", "MEMBERS"};

  if (j->spec == NULL || !j->spec->has_code_k || j->spec->code_k == 0) {
    fputs("code        none: a lost node's snapshots are not rebuilt\n", f);
    return;
  }
  fprintf(f, "code        %" PRIu32 "+%" PRIu32 ", %zu node group%s x %"
             PRIu32 " local rank%s = %" PRIu64 " coding group%s\n",
          j->spec->code_k, j->spec->code_m, j->n_groups,
          j->n_groups == 1 ? "" : "s", rpn, rpn == 1 ? "" : "s",
          (uint64_t)j->n_groups * rpn, j->n_groups * rpn == 1 ? "" : "s");
  /* Health is not measured yet: no value rather than a made-up one. */
  fputs("protection  not measured yet (losses each group absorbs, newest "
        "protected step)\n", f);
  if (j->n_groups == 0)
    return;
  struct ptctl_table t;
  ptctl_table_init(&t, 3);
  fputc('\n', f);
  ptctl_table_row(&t, head);
  for (size_t g = 0; g < j->n_groups; g++) {
    const Pt__NodeGroup *ng = j->groups[g];
    for (uint32_t r = 0; r < rpn; r++) {
      char idx[24], code[24], members[4096];
      size_t n = 0;
      snprintf(idx, sizeof(idx), "%" PRIu64, (uint64_t)ng->index * rpn + r);
      snprintf(code, sizeof(code), "%" PRIu32 "+%" PRIu32, ng->k, ng->m);
      members[0] = '\0';
      for (size_t x = 0; x < ng->n_members && n < sizeof(members); x++)
        n += (size_t)snprintf(members + n, sizeof(members) - n, "%s%s/%"
                              PRIu32, x > 0 ? " " : "",
                              ng->members[x]->node_id, r);
      const char *row[] = {idx, code, members};
      ptctl_table_row(&t, row);
    }
  }
  ptctl_table_print(&t, f);
}

static void job_block(FILE *f, const Pt__JobInfo *j)
{
  char b1[32], b2[32];
  static const char *const head[] = {"NODE",  "STATE",  "HEARTBEAT", "RANKS",
                                     "PART",  "SEALED", "HELD"};

  fprintf(f, "job         %s\n", j->name);
  fprintf(f, "state       %s, epoch %" PRIu64 "\n", j->state, j->epoch);
  if (j->has_committed_step)
    fprintf(f, "committed   step %" PRIu64 " (%s)\n", j->committed_step,
            j->has_commit_age_ms
                ? ptctl_out_age(b1, sizeof(b1), j->commit_age_ms)
                : "age unknown");
  else
    fputs("committed   none yet\n", f);
  fprintf(f, "restarts    %" PRIu32 " (commits %" PRIu64 ")\n", j->restarts,
          j->commits);
  fprintf(f, "held        %s in shared memory\n",
          ptctl_out_bytes(b2, sizeof(b2), j->bytes_held));
  /* The committed steps every part holds: what restore --step may take. */
  if (j->n_parts > 0 && j->parts[0]->n_held > 0) {
    bool any = false;
    for (size_t k = 0; k < j->parts[0]->n_held; k++) {
      uint64_t s = j->parts[0]->held[k];
      bool all = true;
      for (size_t p = 1; p < j->n_parts && all; p++) {
        bool has = false;
        for (size_t i = 0; i < j->parts[p]->n_held && !has; i++)
          has = j->parts[p]->held[i] == s;
        all = has;
      }
      if (all) {
        fprintf(f, "%s%" PRIu64, any ? ", " : "restorable  committed steps held by every node: ", s);
        any = true;
      }
    }
    if (any)
      fputc('\n', f);
  }
  if (j->reason != NULL && j->reason[0] != '\0') {
    fputs("reason      ", f);
    ptctl_out_line(f, j->reason);
    fputc('\n', f);
  }
  if (j->spec != NULL)
    spec_line(f, j->spec);
  if (j->n_parts == 0) {
    groups_block(f, j);
    return;
  }
  struct ptctl_table t;
  ptctl_table_init(&t, 7);
  fputc('\n', f);
  ptctl_table_row(&t, head);
  for (size_t k = 0; k < j->n_parts; k++) {
    const Pt__JobPartInfo *p = j->parts[k];
    char age[32], ranks[32], sealed[24], held[32];
    if (p->has_last_sealed)
      snprintf(sealed, sizeof(sealed), "%" PRIu64, p->last_sealed);
    const char *row[] = {
        p->node_id,
        p->node_state,
        p->has_heartbeat_age_ms
            ? ptctl_out_age(age, sizeof(age), p->heartbeat_age_ms)
            : NULL,
        rank_range(ranks, sizeof(ranks), p->first_rank, p->ranks),
        p->part_state,
        p->has_last_sealed ? sealed : NULL,
        p->has_bytes_held ? ptctl_out_bytes(held, sizeof(held), p->bytes_held)
                          : NULL};
    ptctl_table_row(&t, row);
  }
  ptctl_table_print(&t, f);
  fputc('\n', f);
  groups_block(f, j);
}

static void jobs_table(FILE *f, const Pt__JobsReply *m)
{
  static const char *const head[] = {"JOB",      "STATE", "EPOCH",
                                     "NODES",    "COMMITTED", "AGE",
                                     "RESTARTS", "HELD",  "REASON"};
  struct ptctl_table t;

  if (m->n_jobs == 0) {
    fputs("no jobs\n", f);
    return;
  }
  ptctl_table_init(&t, 9);
  ptctl_table_row(&t, head);
  for (size_t i = 0; i < m->n_jobs; i++) {
    const Pt__JobInfo *j = m->jobs[i];
    char ep[24], nodes[40], step[24], age[32], rs[16], held[32];
    snprintf(ep, sizeof(ep), "%" PRIu64, j->epoch);
    if (j->spec != NULL)
      snprintf(nodes, sizeof(nodes), "%" PRIu32 "x%" PRIu32, j->spec->nodes,
               j->spec->ranks_per_node);
    else
      snprintf(nodes, sizeof(nodes), "%zu", j->n_parts);
    if (j->has_committed_step)
      snprintf(step, sizeof(step), "%" PRIu64, j->committed_step);
    snprintf(rs, sizeof(rs), "%" PRIu32, j->restarts);
    const char *row[] = {
        j->name,
        j->state,
        ep,
        nodes,
        j->has_committed_step ? step : NULL,
        j->has_commit_age_ms ? ptctl_out_age(age, sizeof(age), j->commit_age_ms)
                             : NULL,
        rs,
        ptctl_out_bytes(held, sizeof(held), j->bytes_held),
        j->reason};
    ptctl_table_row(&t, row);
  }
  ptctl_table_print(&t, f);
}

/* status [JOB] (list false) or jobs (list true). */
static int query(const struct ptctl_opts *o, int argc, char **argv, bool list)
{
  Pt__JobsQuery req = PT__JOBS_QUERY__INIT;
  ProtobufCMessage *msg = NULL;
  const char *job = NULL;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "ptctl: %s: unknown option '%s' (see ptctl %s --help)\n",
              argv[0], a, argv[0]);
      return PTCTL_EXIT_USAGE;
    }
    if (list || job != NULL) {
      fprintf(stderr, "ptctl: %s: unexpected argument '%s'%s\n", argv[0], a,
              list ? " (ptctl status JOB shows one job)" : " (one JOB)");
      return PTCTL_EXIT_USAGE;
    }
    if (ptctl_args_job("JOB", a) != PT_OK)
      return PTCTL_EXIT_USAGE;
    job = a;
  }
  req.job = (char *)job;
  int code = ptctl_ctl_call(o, RPC_JOBS_QUERY, &req.base, RPC_JOBS_REPLY, &msg);
  if (code != PTCTL_EXIT_OK)
    return code;
  const Pt__JobsReply *m = (const Pt__JobsReply *)msg;
  if (m->status != 0) {
    char what[PTCTL_JOB_MAX + 40];
    if (job != NULL)
      refusal(what, sizeof(what), "answered", job, m->message);
    else
      snprintf(what, sizeof(what), "refused to list the jobs");
    code = ptctl_ctl_refused(o, what, m->status, m->message);
  } else if (job != NULL && m->n_jobs == 0) {
    fprintf(stderr, "ptctl: ptd controller at %s has no job '%s'\n",
            o->controller, job);
    code = PTCTL_EXIT_FAILED;
  } else if (o->json) {
    jobs_json(stdout, o->controller, m);
  } else if (list) {
    jobs_table(stdout, m);
  } else if (m->n_jobs == 0) {
    fputs("no jobs\n", stdout);
  } else {
    for (size_t i = 0; i < m->n_jobs; i++) {
      if (i > 0)
        fputc('\n', stdout);
      job_block(stdout, m->jobs[i]);
    }
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return ptctl_ctl_flush(code);
}

int ptctl_jobs_status(const struct ptctl_opts *o, int argc, char **argv)
{
  return query(o, argc, argv, false);
}

int ptctl_jobs_list(const struct ptctl_opts *o, int argc, char **argv)
{
  return query(o, argc, argv, true);
}
