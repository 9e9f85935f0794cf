/*
 * ptctl_node.c — a standalone `ptd node` over its control socket
 * (<state-dir>/ptd.sock): `status` shows the job and every rank, `stop`
 * stops the job as SIGTERM would. Blocking calls with a deadline
 * (rpc_sock_call): ptctl never hangs on a node that does not answer.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "client/ptctl.h"
#include "pt.h"
#include "rpc/rpc.h"

static void status_json(FILE *f, const char *sock, const Pt__StatusReply *m)
{
  fputs("{\"socket\":", f);
  ptctl_out_json_str(f, sock);
  fputs(",\"job\":", f);
  ptctl_out_json_str(f, m->job);
  fputs(",\"state\":", f);
  ptctl_out_json_str(f, m->state);
  fprintf(f, ",\"node_pid\":%" PRId32 ",\"committed_step\":", m->node_pid);
  ptctl_out_json_u64(f, m->has_committed_step, m->committed_step);
  fputs(",\"commit_age_ms\":", f);
  ptctl_out_json_u64(f, m->has_commit_age_ms, m->commit_age_ms);
  fprintf(f,
          ",\"bytes_held\":%" PRIu64 ",\"restarts\":%" PRIu32
          ",\"commits\":%" PRIu64 ",\"restores\":%" PRIu64 ",\"message\":",
          m->bytes_held, m->restarts, m->commits, m->restores);
  if (m->message != NULL)
    ptctl_out_json_str(f, m->message);
  else
    fputs("null", f);
  if (m->mode != NULL) {
    fputs(",\"mode\":", f);
    ptctl_out_json_str(f, m->mode);
    fputs(",\"node_id\":", f);
    ptctl_out_json_str(f, m->node_id != NULL ? m->node_id : "");
    fputs(",\"controller\":", f);
    ptctl_out_json_str(f, m->controller != NULL ? m->controller : "");
    fputs(",\"controller_link\":", f);
    ptctl_out_json_str(f, m->controller_link != NULL ? m->controller_link : "");
    fprintf(f, ",\"controller_link_ms\":%" PRIu64 ",\"controller_error\":",
            m->controller_link_ms);
    if (m->controller_error != NULL)
      ptctl_out_json_str(f, m->controller_error);
    else
      fputs("null", f);
  }
  fputs(",\"persist_dir\":", f);
  if (m->persist_dir != NULL)
    ptctl_out_json_str(f, m->persist_dir);
  else
    fputs("null", f);
  fputs(",\"persist_step\":", f);
  ptctl_out_json_u64(f, m->has_persist_step, m->persist_step);
  fputs(",\"persist_age_ms\":", f);
  ptctl_out_json_u64(f, m->has_persist_age_ms, m->persist_age_ms);
  fputs(",\"persisted\":", f);
  ptctl_out_json_u64(f, m->has_persisted, m->persisted);
  fputs(",\"persist_failures\":", f);
  ptctl_out_json_u64(f, m->has_persist_failures, m->persist_failures);
  fputs(",\"persist_error\":", f);
  if (m->persist_error != NULL)
    ptctl_out_json_str(f, m->persist_error);
  else
    fputs("null", f);
  fputs(",\"restored_from\":", f);
  if (m->restored_from != NULL)
    ptctl_out_json_str(f, m->restored_from);
  else
    fputs("null", f);
  fputs(",\"restore_reason\":", f);
  if (m->restore_reason != NULL)
    ptctl_out_json_str(f, m->restore_reason);
  else
    fputs("null", f);
  fputs(",\"ranks\":[", f);
  for (size_t i = 0; i < m->n_ranks; i++) {
    const Pt__RankStatus *r = m->ranks[i];
    fprintf(f,
            "%s{\"rank\":%" PRIu32 ",\"trainer_pid\":%" PRId32
            ",\"smp_pid\":%" PRId32 ",\"state\":",
            i > 0 ? "," : "", r->rank, r->trainer_pid, r->smp_pid);
    ptctl_out_json_str(f, r->state);
    if (r->has_global_rank) /* cluster mode: "rank" is the local one */
      fprintf(f, ",\"global_rank\":%" PRIu32, r->global_rank);
    fprintf(f, ",\"restarts\":%" PRIu32 ",\"smp_restarts\":%" PRIu32
               ",\"last_sealed\":",
            r->restarts, r->smp_restarts);
    ptctl_out_json_u64(f, r->has_last_sealed, r->last_sealed);
    fputs(",\"bytes_held\":", f);
    ptctl_out_json_u64(f, r->has_bytes_held, r->bytes_held);
    fputc('}', f);
  }
  fputs("]}\n", f);
}

static void status_table(FILE *f, const Pt__StatusReply *m)
{
  char b1[32], b2[32];

  if (m->mode != NULL) {
    /* A cluster-mode node: what it is and its controller link. */
    fprintf(f, "mode        %s, node %s\n", m->mode,
            m->node_id != NULL ? m->node_id : "?");
    fprintf(f, "state       %s\n", m->state);
    fprintf(f, "controller  %s: %s (%" PRIu64 " ms)\n",
            m->controller != NULL ? m->controller : "?",
            m->controller_link != NULL ? m->controller_link : "?",
            m->controller_link_ms);
    if (m->controller_error != NULL)
      fprintf(f, "link error  %s\n", m->controller_error);
    fprintf(f, "node pid    %" PRId32 "\n", m->node_pid);
    return;
  }
  fprintf(f, "job         %s\n", m->job);
  fprintf(f, "state       %s\n", m->state);
  if (m->has_committed_step)
    fprintf(f, "committed   step %" PRIu64 " (%s)\n", m->committed_step,
            m->has_commit_age_ms ? ptctl_out_age(b1, sizeof(b1), m->commit_age_ms)
                                 : "age unknown");
  else
    fprintf(f, "committed   none yet\n");
  fprintf(f, "held        %s in shared memory\n",
          ptctl_out_bytes(b2, sizeof(b2), m->bytes_held));
  fprintf(f, "restarts    %" PRIu32 " (commits %" PRIu64 ", restores %" PRIu64
             ")\n",
          m->restarts, m->commits, m->restores);
  fprintf(f, "node pid    %" PRId32 "\n", m->node_pid);
  if (m->persist_dir != NULL) {
    if (m->has_persist_step)
      fprintf(f, "on disk     step %" PRIu64 " complete (%s) under %s\n",
              m->persist_step,
              m->has_persist_age_ms ? ptctl_out_age(b1, sizeof(b1), m->persist_age_ms)
                                    : "from an earlier run",
              m->persist_dir);
    else
      fprintf(f, "on disk     no complete step yet under %s\n", m->persist_dir);
    if (m->persist_failures > 0)
      fprintf(f, "            %" PRIu64 " marked step(s) left incomplete; last: "
              "%s\n", m->persist_failures,
              m->persist_error != NULL ? m->persist_error : "?");
  }
  if (m->restored_from != NULL)
    fprintf(f, "restored    from %s: %s\n", m->restored_from,
            m->restore_reason != NULL ? m->restore_reason : "");
  if (m->message != NULL && m->message[0] != '\0')
    fprintf(f, "message     %s\n", m->message);
  fprintf(f, "\n%-5s %-12s %-9s %-10s %-9s %-12s %s\n", "RANK", "TRAINER PID",
          "SMP PID", "STATE", "RESTARTS", "LAST SEALED", "HELD");
  for (size_t i = 0; i < m->n_ranks; i++) {
    const Pt__RankStatus *r = m->ranks[i];
    char tp[16] = "-", sp[16] = "-", ls[24] = "-", rs[24];
    if (r->trainer_pid > 0)
      snprintf(tp, sizeof(tp), "%" PRId32, r->trainer_pid);
    if (r->smp_pid > 0)
      snprintf(sp, sizeof(sp), "%" PRId32, r->smp_pid);
    if (r->has_last_sealed)
      snprintf(ls, sizeof(ls), "%" PRIu64, r->last_sealed);
    if (r->smp_restarts > 0)
      snprintf(rs, sizeof(rs), "%" PRIu32 " (smp %" PRIu32 ")", r->restarts,
               r->smp_restarts);
    else
      snprintf(rs, sizeof(rs), "%" PRIu32, r->restarts);
    fprintf(f, "%-5" PRIu32 " %-12s %-9s %-10s %-9s %-12s %s\n", r->rank, tp,
            sp, r->state, rs, ls,
            ptctl_out_bytes(b1, sizeof(b1),
                        r->has_bytes_held ? r->bytes_held : 0));
  }
}

/* Returns a PTCTL_EXIT_* code; OUT: *reply on PTCTL_EXIT_OK. */
static int call(const char *sock, int timeout_ms, uint32_t type,
                const ProtobufCMessage *req, uint32_t reply_type,
                ProtobufCMessage **reply)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  int fd, rc;

  /* A full backlog (the node busy, or a burst of clients) is -EAGAIN: the
   * node drains it soon, so ask again until the deadline. */
  while ((rc = rpc_sock_connect_unix(sock, &fd)) == -EAGAIN &&
         rpc_now_ms() + 10 < deadline)
    usleep(10000);
  if (rc != PT_OK) {
    fprintf(stderr, "ptctl: cannot reach ptd node at '%s': %s%s\n", sock,
            pt_strerror(rc),
            rc == -ENOENT || rc == -ECONNREFUSED ? " (is ptd node running?)"
                                                 : "");
    return rc == -ENAMETOOLONG ? PTCTL_EXIT_USAGE : PTCTL_EXIT_UNREACHABLE;
  }
  uint64_t now = rpc_now_ms();
  int left = now < deadline ? (int)(deadline - now) : 1;
  rc = rpc_sock_call(fd, type, req, reply_type, left, reply);
  close(fd);
  if (rc == PT_OK)
    return PTCTL_EXIT_OK;
  fprintf(stderr, "ptctl: no answer from ptd node at '%s': %s\n", sock,
          rc == -ETIMEDOUT ? "timed out" : pt_strerror(rc));
  return rc == PT_EPROTO || rc == PT_ETOOBIG ? PTCTL_EXIT_FAILED
                                             : PTCTL_EXIT_UNREACHABLE;
}

/* STATUS_QUERY (snapshots: with the listing). PTCTL_EXIT_OK: *out is the
 * reply (free with protobuf_c_message_free_unpacked), its status not
 * negative; else the refusal was said. */
static int status_query(const struct ptctl_opts *o, bool snapshots,
                        Pt__StatusReply **out)
{
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ProtobufCMessage *msg = NULL;
  q.has_snapshots = q.snapshots = snapshots;
  int code = call(o->sock, o->timeout_ms, RPC_STATUS_QUERY, &q.base,
                  RPC_STATUS_REPLY, &msg);
  if (code != PTCTL_EXIT_OK)
    return code;
  Pt__StatusReply *m = (Pt__StatusReply *)msg;
  if (m->status < 0) {
    fprintf(stderr, "ptctl: ptd node at '%s' answered: %s\n", o->sock,
            m->message != NULL ? m->message : pt_strerror(m->status));
    protobuf_c_message_free_unpacked(msg, NULL);
    return PTCTL_EXIT_FAILED;
  }
  *out = m;
  return PTCTL_EXIT_OK;
}

int ptctl_node_status(const struct ptctl_opts *o)
{
  Pt__StatusReply *m = NULL;
  int code = status_query(o, false, &m);

  if (code != PTCTL_EXIT_OK)
    return ptctl_ctl_flush(code);
  if (o->json) {
    status_json(stdout, o->sock, m);
  } else {
    status_table(stdout, m);
  }
  protobuf_c_message_free_unpacked(&m->base, NULL);
  return ptctl_ctl_flush(code);
}

int ptctl_node_stop(const struct ptctl_opts *o)
{
  Pt__Stop q = PT__STOP__INIT;
  ProtobufCMessage *msg = NULL;
  int code = call(o->sock, o->timeout_ms, RPC_STOP, &q.base, RPC_REPLY, &msg);

  if (code != PTCTL_EXIT_OK)
    return code;
  const Pt__Reply *m = (const Pt__Reply *)msg;
  if (m->status < 0) {
    fprintf(stderr, "ptctl: ptd node at '%s' refused to stop: %s\n", o->sock,
            m->message != NULL ? m->message : pt_strerror(m->status));
    code = PTCTL_EXIT_FAILED;
  } else if (o->json) {
    fputs("{\"socket\":", stdout);
    ptctl_out_json_str(stdout, o->sock);
    fprintf(stdout, ",\"status\":%" PRId32 ",\"stopping\":true}\n", m->status);
  } else {
    if (m->message != NULL && strcmp(m->message, "stopping") != 0)
      printf("ptd node at '%s' is %s\n", o->sock, m->message);
    else
      printf("ptd node at '%s' is stopping the job\n", o->sock);
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  return ptctl_ctl_flush(code);
}

/* ---- snapshots ---- */

static void snapshots_json(FILE *f, const char *sock, const Pt__StatusReply *m)
{
  fputs("{\"socket\":", f);
  ptctl_out_json_str(f, sock);
  fputs(",\"job\":", f);
  ptctl_out_json_str(f, m->job);
  fputs(",\"instance\":", f);
  if (m->instance != NULL)
    ptctl_out_json_str(f, m->instance);
  else
    fputs("null", f);
  fputs(",\"committed_step\":", f);
  ptctl_out_json_u64(f, m->has_committed_step, m->committed_step);
  fputs(",\"memory_error\":", f);
  if (m->memory_error != NULL)
    ptctl_out_json_str(f, m->memory_error);
  else
    fputs("null", f);
  fputs(",\"memory\":[", f);
  for (size_t i = 0; i < m->n_slots; i++) {
    const Pt__SlotView *v = m->slots[i];
    fprintf(f, "%s{\"rank\":%" PRIu32 ",\"slot\":%" PRIu32 ",\"state\":",
            i > 0 ? "," : "", v->rank, v->slot);
    ptctl_out_json_str(f, v->state);
    fputs(",\"step\":", f);
    ptctl_out_json_u64(f, v->has_step, v->step);
    fprintf(f, ",\"record_ok\":%s}",
            !v->has_record_ok ? "null" : v->record_ok ? "true" : "false");
  }
  fputs("],\"persist_dir\":", f);
  if (m->persist_dir != NULL)
    ptctl_out_json_str(f, m->persist_dir);
  else
    fputs("null", f);
  fputs(",\"disk\":", f);
  ptctl_out_disk_json(f, m->disk_steps, m->n_disk_steps);
  fputs("}\n", f);
}

static void snapshots_table(FILE *f, const Pt__StatusReply *m)
{
  fprintf(f, "job         %s (instance %s)\n", m->job,
          m->instance != NULL ? m->instance : "?");
  if (m->has_committed_step)
    fprintf(f, "committed   step %" PRIu64 "\n", m->committed_step);
  else
    fprintf(f, "committed   none yet\n");
  fprintf(f, "\nin memory (each slot's record; the data is checked at restore)\n");
  fprintf(f, "%-6s %-5s %-10s %s\n", "RANK", "SLOT", "STATE", "STEP");
  for (size_t i = 0; i < m->n_slots; i++) {
    const Pt__SlotView *v = m->slots[i];
    char st[24] = "-";
    if (v->has_step)
      snprintf(st, sizeof(st), "%" PRIu64, v->step);
    fprintf(f, "%-6" PRIu32 " %-5" PRIu32 " %-10.10s %s%s\n", v->rank,
            v->slot, v->state, st,
            v->has_record_ok && !v->record_ok ? " (record damaged)" : "");
  }
  if (m->memory_error != NULL) {
    fputs("not read: ", f);
    ptctl_out_line(f, m->memory_error);
    fputc('\n', f);
  }
  if (m->persist_dir == NULL) {
    fprintf(f, "\non disk: no --persist-dir\n");
    return;
  }
  fputs("\non disk under ", f);
  ptctl_out_line(f, m->persist_dir);
  fputc('\n', f);
  if (m->n_disk_steps == 0) {
    fprintf(f, "no step yet\n");
    return;
  }
  ptctl_out_disk_table(f, m->disk_steps, m->n_disk_steps);
}

int ptctl_node_snapshots(const struct ptctl_opts *o)
{
  Pt__StatusReply *m = NULL;
  int code = status_query(o, true, &m);

  if (code != PTCTL_EXIT_OK)
    return ptctl_ctl_flush(code);
  if (m->mode == NULL && m->instance == NULL) {
    fprintf(stderr, "ptctl: snapshots: ptd node at '%s' is older than this "
                    "ptctl and does not list its snapshots\n", o->sock);
    code = PTCTL_EXIT_FAILED;
  } else if (m->mode != NULL) {
    fprintf(stderr, "ptctl: snapshots: '%s' is a cluster-mode node: a "
                    "cluster job's snapshots come from the controller "
                    "(ptctl --controller HOST:PORT --key FILE snapshots "
                    "JOB)\n",
            o->sock);
    code = PTCTL_EXIT_USAGE;
  } else if (o->json) {
    snapshots_json(stdout, o->sock, m);
  } else {
    snapshots_table(stdout, m);
  }
  protobuf_c_message_free_unpacked(&m->base, NULL);
  return ptctl_ctl_flush(code);
}
