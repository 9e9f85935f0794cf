/*
 * ptctl — the operator's command line for a running `ptd node`, over the
 * node's control socket (<state-dir>/ptd.sock): `status` shows the job and
 * every rank, `stop` stops the job as SIGTERM would. A human table by
 * default; with --json, exactly one JSON object per command on stdout.
 *
 * Blocking calls with a deadline (rpc_sock_call): ptctl never hangs on a
 * node that does not answer. Exit status: 0 success, 1 error (one line on
 * stderr naming the socket and the cause), 2 usage.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "pt.h"
#include "rpc/rpc.h"

#define PTCTL_DEFAULT_TIMEOUT_MS 5000

static void usage(FILE *f)
{
  fputs("usage: ptctl [--state-dir DIR | --socket PATH] [--timeout MS] "
        "COMMAND [--json]\n"
        "\n"
        "commands:\n"
        "  status     the job, its committed step and snapshot age, bytes\n"
        "             held in shared memory, restarts, and one row per rank\n"
        "  stop       stop the job: trainers, then snapshot processes\n"
        "             (snapshots are kept)\n"
        "\n"
        "options:\n"
        "  --state-dir DIR   the node's state directory (default:\n"
        "                    $PT_STATE_DIR, else /run/pt); the socket is\n"
        "                    DIR/ptd.sock\n"
        "  --socket PATH     the control socket itself\n"
        "  --timeout MS      how long to wait for the node (default: 5000)\n"
        "  --json            one JSON object instead of a table\n"
        "  --help, --version\n"
        "\n"
        "exit status: 0 success, 1 error, 2 usage\n",
        f);
}

/* ---- JSON output ---- */

/* Writes s as a JSON string: quotes, backslash and control characters
 * escaped; bytes that are not valid UTF-8 become U+FFFD so the output is
 * always valid JSON. */
static void json_str(FILE *f, const char *s)
{
  const unsigned char *p = (const unsigned char *)(s != NULL ? s : "");

  fputc('"', f);
  while (*p != '\0') {
    unsigned char c = *p;
    if (c == '"' || c == '\\') {
      fputc('\\', f);
      fputc(c, f);
      p++;
    } else if (c == '\n') {
      fputs("\\n", f);
      p++;
    } else if (c == '\t') {
      fputs("\\t", f);
      p++;
    } else if (c == '\r') {
      fputs("\\r", f);
      p++;
    } else if (c < 0x20 || c == 0x7f) {
      fprintf(f, "\\u%04x", c);
      p++;
    } else if (c < 0x80) {
      fputc(c, f);
      p++;
    } else {
      /* A UTF-8 sequence: its length from the lead byte, then each
       * continuation byte checked (overlong and surrogate forms refused). */
      size_t len = c >= 0xf0 && c <= 0xf4 ? 4 : c >= 0xe0 ? 3 : c >= 0xc2 && c <= 0xdf ? 2 : 0;
      bool ok = len > 0;
      for (size_t i = 1; ok && i < len; i++)
        ok = (p[i] & 0xc0) == 0x80;
      if (ok && len == 3)
        ok = !(c == 0xe0 && p[1] < 0xa0) && !(c == 0xed && p[1] >= 0xa0);
      if (ok && len == 4)
        ok = !(c == 0xf0 && p[1] < 0x90) && !(c == 0xf4 && p[1] >= 0x90);
      if (ok) {
        fwrite(p, 1, len, f);
        p += len;
      } else {
        fputs("\\ufffd", f);
        p++;
      }
    }
  }
  fputc('"', f);
}

static void json_opt_u64(FILE *f, bool has, uint64_t v)
{
  if (has)
    fprintf(f, "%" PRIu64, v);
  else
    fputs("null", f);
}

static void status_json(FILE *f, const char *sock, const Pt__StatusReply *m)
{
  fputs("{\"socket\":", f);
  json_str(f, sock);
  fputs(",\"job\":", f);
  json_str(f, m->job);
  fputs(",\"state\":", f);
  json_str(f, m->state);
  fprintf(f, ",\"node_pid\":%" PRId32 ",\"committed_step\":", m->node_pid);
  json_opt_u64(f, m->has_committed_step, m->committed_step);
  fputs(",\"commit_age_ms\":", f);
  json_opt_u64(f, m->has_commit_age_ms, m->commit_age_ms);
  fprintf(f,
          ",\"bytes_held\":%" PRIu64 ",\"restarts\":%" PRIu32
          ",\"commits\":%" PRIu64 ",\"restores\":%" PRIu64 ",\"message\":",
          m->bytes_held, m->restarts, m->commits, m->restores);
  if (m->message != NULL)
    json_str(f, m->message);
  else
    fputs("null", f);
  if (m->mode != NULL) {
    fputs(",\"mode\":", f);
    json_str(f, m->mode);
    fputs(",\"node_id\":", f);
    json_str(f, m->node_id != NULL ? m->node_id : "");
    fputs(",\"controller\":", f);
    json_str(f, m->controller != NULL ? m->controller : "");
    fputs(",\"controller_link\":", f);
    json_str(f, m->controller_link != NULL ? m->controller_link : "");
    fprintf(f, ",\"controller_link_ms\":%" PRIu64 ",\"controller_error\":",
            m->controller_link_ms);
    if (m->controller_error != NULL)
      json_str(f, m->controller_error);
    else
      fputs("null", f);
  }
  fputs(",\"ranks\":[", f);
  for (size_t i = 0; i < m->n_ranks; i++) {
    const Pt__RankStatus *r = m->ranks[i];
    fprintf(f,
            "%s{\"rank\":%" PRIu32 ",\"trainer_pid\":%" PRId32
            ",\"smp_pid\":%" PRId32 ",\"state\":",
            i > 0 ? "," : "", r->rank, r->trainer_pid, r->smp_pid);
    json_str(f, r->state);
    fprintf(f, ",\"restarts\":%" PRIu32 ",\"smp_restarts\":%" PRIu32
               ",\"last_sealed\":",
            r->restarts, r->smp_restarts);
    json_opt_u64(f, r->has_last_sealed, r->last_sealed);
    fputs(",\"bytes_held\":", f);
    json_opt_u64(f, r->has_bytes_held, r->bytes_held);
    fputc('}', f);
  }
  fputs("]}\n", f);
}

/* ---- human output ---- */

static const char *human_bytes(char *buf, size_t len, uint64_t b)
{
  static const char *const unit[] = {"B", "KiB", "MiB", "GiB", "TiB"};
  double v = (double)b;
  int u = 0;

  while (v >= 1024.0 && u < 4) {
    v /= 1024.0;
    u++;
  }
  if (u == 0)
    snprintf(buf, len, "%" PRIu64 " B", b);
  else
    snprintf(buf, len, "%.1f %s", v, unit[u]);
  return buf;
}

static const char *human_age(char *buf, size_t len, uint64_t ms)
{
  if (ms < 10000)
    snprintf(buf, len, "%.1f s ago", (double)ms / 1000.0);
  else if (ms < 120000)
    snprintf(buf, len, "%" PRIu64 " s ago", ms / 1000);
  else if (ms < 7200000)
    snprintf(buf, len, "%" PRIu64 " min ago", ms / 60000);
  else
    snprintf(buf, len, "%" PRIu64 " h ago", ms / 3600000);
  return buf;
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
            m->has_commit_age_ms ? human_age(b1, sizeof(b1), m->commit_age_ms)
                                 : "age unknown");
  else
    fprintf(f, "committed   none yet\n");
  fprintf(f, "held        %s in shared memory\n",
          human_bytes(b2, sizeof(b2), m->bytes_held));
  fprintf(f, "restarts    %" PRIu32 " (commits %" PRIu64 ", restores %" PRIu64
             ")\n",
          m->restarts, m->commits, m->restores);
  fprintf(f, "node pid    %" PRId32 "\n", m->node_pid);
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
            human_bytes(b1, sizeof(b1),
                        r->has_bytes_held ? r->bytes_held : 0));
  }
}

/* ---- the calls ---- */

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
    return rc;
  }
  uint64_t now = rpc_now_ms();
  int left = now < deadline ? (int)(deadline - now) : 1;
  rc = rpc_sock_call(fd, type, req, reply_type, left, reply);
  close(fd);
  if (rc != PT_OK)
    fprintf(stderr, "ptctl: no answer from ptd node at '%s': %s\n", sock,
            rc == -ETIMEDOUT ? "timed out" : pt_strerror(rc));
  return rc;
}

static int cmd_status(const char *sock, int timeout_ms, bool json)
{
  Pt__StatusQuery q = PT__STATUS_QUERY__INIT;
  ProtobufCMessage *msg = NULL;

  if (call(sock, timeout_ms, RPC_STATUS_QUERY, &q.base, RPC_STATUS_REPLY,
           &msg) != PT_OK)
    return 1;
  const Pt__StatusReply *m = (const Pt__StatusReply *)msg;
  int code = 0;
  if (m->status < 0) {
    fprintf(stderr, "ptctl: ptd node at '%s' answered: %s\n", sock,
            m->message != NULL ? m->message : pt_strerror(m->status));
    code = 1;
  } else if (json) {
    status_json(stdout, sock, m);
  } else {
    status_table(stdout, m);
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  if (fflush(stdout) != 0)
    code = 1;
  return code;
}

static int cmd_stop(const char *sock, int timeout_ms, bool json)
{
  Pt__Stop q = PT__STOP__INIT;
  ProtobufCMessage *msg = NULL;

  if (call(sock, timeout_ms, RPC_STOP, &q.base, RPC_REPLY, &msg) != PT_OK)
    return 1;
  const Pt__Reply *m = (const Pt__Reply *)msg;
  int code = 0;
  if (m->status < 0) {
    fprintf(stderr, "ptctl: ptd node at '%s' refused to stop: %s\n", sock,
            m->message != NULL ? m->message : pt_strerror(m->status));
    code = 1;
  } else if (json) {
    fputs("{\"socket\":", stdout);
    json_str(stdout, sock);
    fprintf(stdout, ",\"status\":%" PRId32 ",\"stopping\":true}\n", m->status);
  } else {
    printf("ptd node at '%s' is stopping the job\n", sock);
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  if (fflush(stdout) != 0)
    code = 1;
  return code;
}

int main(int argc, char **argv)
{
  const char *state_dir = NULL, *sock = NULL, *cmd = NULL;
  char path[4096];
  int timeout_ms = PTCTL_DEFAULT_TIMEOUT_MS;
  bool json = false;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      usage(stdout);
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      printf("ptctl %d.%d\n", PT_VERSION_MAJOR, PT_VERSION_MINOR);
      return 0;
    }
    if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (strcmp(a, "--state-dir") == 0 || strcmp(a, "--socket") == 0 ||
               strcmp(a, "--timeout") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ptctl: option '%s' needs a value\n", a);
        return 2;
      }
      const char *v = argv[++i];
      if (a[2] == 's' && a[3] == 't')
        state_dir = v;
      else if (a[2] == 's')
        sock = v;
      else {
        char *end;
        long t = strtol(v, &end, 10);
        if (*end != '\0' || t <= 0 || t > 3600000) {
          fprintf(stderr, "ptctl: --timeout '%s': expected 1..3600000 ms\n", v);
          return 2;
        }
        timeout_ms = (int)t;
      }
    } else if (a[0] == '-') {
      fprintf(stderr, "ptctl: unknown option '%s'\n", a);
      usage(stderr);
      return 2;
    } else if (cmd == NULL) {
      cmd = a;
    } else {
      fprintf(stderr, "ptctl: unexpected argument '%s'\n", a);
      return 2;
    }
  }
  if (cmd == NULL) {
    usage(stderr);
    return 2;
  }
  if (state_dir != NULL && sock != NULL) {
    fprintf(stderr, "ptctl: give --state-dir or --socket, not both\n");
    return 2;
  }
  if (sock == NULL) {
    if (state_dir == NULL) {
      state_dir = getenv("PT_STATE_DIR");
      if (state_dir == NULL || state_dir[0] == '\0')
        state_dir = "/run/pt";
    }
    if (snprintf(path, sizeof(path), "%s/ptd.sock", state_dir) >=
        (int)sizeof(path)) {
      fprintf(stderr, "ptctl: --state-dir is too long\n");
      return 2;
    }
    sock = path;
  }
  if (strcmp(cmd, "status") == 0)
    return cmd_status(sock, timeout_ms, json);
  if (strcmp(cmd, "stop") == 0)
    return cmd_stop(sock, timeout_ms, json);
  fprintf(stderr, "ptctl: unknown command '%s' (status or stop)\n", cmd);
  return 2;
}
