/*
 * ptctl_jobs.c — the controller's jobs: `start` (JOB_START), `stop JOB`
 * (JOB_STOP), `restore JOB [--step N]` (JOB_RESTORE), each answered with
 * JOB_REPLY. `status [JOB]` and `jobs` are ptctl_jobs_show.c's.
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

const char *ptctl_jobs_refusal(char *buf, size_t len, const char *verb,
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
  O_BACKOFF, O_NODEWAIT, O_PORT, O_PDIR, O_PEVERY, O_PKEEP, O_PRATE, O_RESUME,
  O_COUNT_
};
static const char *const START_OPTS[O_COUNT_] = {
    "--job",           "--nodes",      "--ranks-per-node",
    "--slots",         "--code",       "--memory-budget",
    "--max-restarts",  "--restart-window-ms", "--backoff-ms",
    "--node-wait-ms",  "--master-port", "--persist-dir",
    "--persist-every", "--persist-keep", "--persist-rate",
    "--resume-from",
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
  case O_PDIR:
    if (v[0] != '/' || strlen(v) >= 1024) {
      fprintf(stderr, "ptctl: start: %s '%s': expected an absolute path "
                      "under 1024 bytes (the same on every node)\n", flag, v);
      return -EINVAL;
    }
    s->persist_dir = (char *)v;
    return PT_OK;
  case O_PEVERY:
    s->has_persist_every = true;
    return ptctl_args_u32(flag, v, 1, 100000000, &s->persist_every);
  case O_PKEEP:
    s->has_persist_keep = true;
    return ptctl_args_u32(flag, v, 1, 15, &s->persist_keep);
  case O_PRATE:
    s->has_persist_rate = true;
    return ptctl_args_bytes(flag, v, &s->persist_rate);
  case O_RESUME:
    if (v[0] != '/' || strlen(v) >= 1024) {
      fprintf(stderr, "ptctl: start: %s '%s': expected an absolute path "
                      "under 1024 bytes (the same on every node)\n", flag, v);
      return -EINVAL;
    }
    s->resume_from = (char *)v;
    return PT_OK;
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
  if (!seen[O_PDIR] && (seen[O_PEVERY] || seen[O_PKEEP] || seen[O_PRATE])) {
    fprintf(stderr, "ptctl: start: --persist-every, --persist-keep and "
                    "--persist-rate need --persist-dir\n");
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
                               ptctl_jobs_refusal(what, sizeof(what), "refused to start",
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
        o, ptctl_jobs_refusal(what, sizeof(what), "refused to stop", job, m->message),
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
        o, ptctl_jobs_refusal(what, sizeof(what), verb, job, m->message), m->status,
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
