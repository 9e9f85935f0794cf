/*
 * ptctl_jobs_show.c — what the controller says of its jobs: `status [JOB]`
 * and `jobs` (JOBS_QUERY, JOBS_REPLY), as tables or --json; a job's block
 * (state, committed step, restorable steps, reason, spec, parts, coding
 * groups).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdlib.h>
#include <string.h>

#include "client/ptctl.h"
#include "pt.h"
#include "rpc/rpc.h"

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
  fputs(",\"persist_dir\":", f);
  ptctl_out_json_str(f, s->persist_dir);
  fputs(",\"persist_every\":", f);
  ptctl_out_json_u64(f, s->has_persist_every, s->persist_every);
  fputs(",\"persist_keep\":", f);
  ptctl_out_json_u64(f, s->has_persist_keep, s->persist_keep);
  fputs(",\"persist_rate\":", f);
  ptctl_out_json_u64(f, s->has_persist_rate, s->persist_rate);
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
 * g x ranks_per_node + r (rpc/pt.proto, "Coding groups"), each with its
 * health: the node losses it can absorb now, its newest PROTECTED step
 * and that step's age (null when the controller did not say). */
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
      fputs("],\"health\":", f);
      if (!ng->has_tolerates) {
        fputs("null}", f);
        continue;
      }
      fprintf(f, "{\"tolerates\":%" PRIu32 ",\"protected_step\":",
              ng->tolerates);
      ptctl_out_json_u64(f, ng->has_protected_step, ng->protected_step);
      fputs(",\"protected_age_ms\":", f);
      ptctl_out_json_u64(f, ng->has_protected_age_ms, ng->protected_age_ms);
      fputs("}}", f);
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
    fputs(",\"restore_step\":", f);
    ptctl_out_json_u64(f, j->has_restore_step, j->restore_step);
    fprintf(f, ",\"restored_from\":\"%s\"",
            !j->has_restore_step ? "none"
            : j->has_restore_from_disk && j->restore_from_disk ? "disk"
                                                              : "memory");
    fputs(",\"disk_step\":", f);
    ptctl_out_json_u64(f, j->has_disk_step, j->disk_step);
    fputs(",\"disk_age_ms\":", f);
    ptctl_out_json_u64(f, j->has_disk_age_ms, j->disk_age_ms);
    fputs(",\"persisted\":", f);
    ptctl_out_json_u64(f, j->has_persisted, j->persisted);
    fputs(",\"persist_error\":", f);
    ptctl_out_json_str(f, j->persist_error);
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
  if (s->persist_dir != NULL && s->persist_dir[0] != '\0')
    fprintf(f, ", to disk every %" PRIu32 " commits (keeps %" PRIu32 ")",
            s->persist_every, s->persist_keep);
  fputc('\n', f);
  fputs("command     ", f);
  print_argv(f, s->argv, s->n_argv);
  fputc('\n', f);
}

/* The code and the coding groups, members as NODE/LOCAL-RANK. */
static void groups_block(FILE *f, const Pt__JobInfo *j)
{
  uint32_t rpn = j->spec != NULL ? j->spec->ranks_per_node : 1;
  static const char *const head[] = {"GROUP", "CODE", "TOLERATES",
                                     "PROTECTED", "MEMBERS"};

  if (j->spec == NULL || !j->spec->has_code_k || j->spec->code_k == 0) {
    fputs("code        none: a lost node's snapshots are not rebuilt\n", f);
    return;
  }
  fprintf(f, "code        %" PRIu32 "+%" PRIu32 ", %zu node group%s x %"
             PRIu32 " local rank%s = %" PRIu64 " coding group%s\n",
          j->spec->code_k, j->spec->code_m, j->n_groups,
          j->n_groups == 1 ? "" : "s", rpn, rpn == 1 ? "" : "s",
          (uint64_t)j->n_groups * rpn, j->n_groups * rpn == 1 ? "" : "s");
  if (j->n_groups == 0)
    return;
  struct ptctl_table t;
  ptctl_table_init(&t, 5);
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
      /* The node losses it absorbs now, and its newest protected step. */
      char tol[48] = "-", prot[64] = "none yet";
      if (ng->has_tolerates)
        snprintf(tol, sizeof(tol), "%" PRIu32 " of %" PRIu32 " node%s",
                 ng->tolerates, ng->m, ng->m == 1 ? "" : "s");
      if (ng->has_protected_step && ng->has_protected_age_ms)
        snprintf(prot, sizeof(prot), "step %" PRIu64 " (%.1f s ago)",
                 ng->protected_step, ng->protected_age_ms / 1000.0);
      else if (ng->has_protected_step)
        snprintf(prot, sizeof(prot), "step %" PRIu64, ng->protected_step);
      const char *row[] = {idx, code, tol, prot, members};
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
  if (j->has_restore_step)
    fprintf(f, "restored    step %" PRIu64 " from %s in this epoch\n",
            j->restore_step,
            j->has_restore_from_disk && j->restore_from_disk ? "disk"
                                                             : "memory");
  if (j->spec != NULL && j->spec->persist_dir != NULL &&
      j->spec->persist_dir[0] != '\0') {
    fputs("disk        ", f);
    if (j->has_disk_step)
      fprintf(f, "step %" PRIu64 " complete (%s)", j->disk_step,
              j->has_disk_age_ms ? ptctl_out_age(b1, sizeof(b1),
                                                 j->disk_age_ms)
                                 : "age unknown");
    else
      fputs("no complete step yet", f);
    fprintf(f, ", %" PRIu64 " made complete; under ", j->persisted);
    ptctl_out_line(f, j->spec->persist_dir);
    fputc('\n', f);
    if (j->persist_error != NULL && j->persist_error[0] != '\0') {
      fputs("disk error  ", f);
      ptctl_out_line(f, j->persist_error);
      fputc('\n', f);
    }
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

enum query_mode { Q_STATUS, Q_LIST, Q_SNAPSHOTS };

/* status [JOB], jobs, or snapshots JOB. */
static int query(const struct ptctl_opts *o, int argc, char **argv,
                 enum query_mode mode)
{
  bool list = mode == Q_LIST;
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
  if (mode == Q_SNAPSHOTS && job == NULL) {
    fprintf(stderr, "ptctl: snapshots needs JOB (ptctl jobs lists them)\n");
    return PTCTL_EXIT_USAGE;
  }
  req.job = (char *)job;
  int code = ptctl_ctl_call(o, RPC_JOBS_QUERY, &req.base, RPC_JOBS_REPLY, &msg);
  if (code != PTCTL_EXIT_OK)
    return code;
  const Pt__JobsReply *m = (const Pt__JobsReply *)msg;
  if (m->status != 0) {
    char what[PTCTL_JOB_MAX + 40];
    if (job != NULL)
      ptctl_jobs_refusal(what, sizeof(what), "answered", job, m->message);
    else
      snprintf(what, sizeof(what), "refused to list the jobs");
    code = ptctl_ctl_refused(o, what, m->status, m->message);
  } else if (job != NULL && m->n_jobs == 0) {
    fprintf(stderr, "ptctl: ptd controller at %s has no job '%s'\n",
            o->controller, job);
    code = PTCTL_EXIT_FAILED;
  } else if (mode == Q_SNAPSHOTS) {
    ptctl_jobs_snapshots_print(stdout, o, m->jobs[0]);
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
  return query(o, argc, argv, Q_STATUS);
}

int ptctl_jobs_list(const struct ptctl_opts *o, int argc, char **argv)
{
  return query(o, argc, argv, Q_LIST);
}

int ptctl_jobs_snapshots(const struct ptctl_opts *o, int argc, char **argv)
{
  return query(o, argc, argv, Q_SNAPSHOTS);
}
