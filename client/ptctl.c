/*
 * ptctl — the operator's command line.
 *
 * Against a standalone `ptd node`, over the node's control socket
 * (<state-dir>/ptd.sock): `status` shows the job and every rank, `stop`
 * stops the job as SIGTERM would.
 *
 * Against the cluster's `ptd controller` (--controller HOST:PORT --key
 * FILE, or PT_CONTROLLER and PT_KEY), over TCP authenticated with the
 * cluster key as PEER_ROLE_CTL: `nodes` lists the registered nodes.
 *
 * A human table by default; with --json, exactly one JSON object per
 * command on stdout. Blocking calls with a deadline (rpc_sock_call): ptctl
 * never hangs on a daemon that does not answer. Exit status: 0 success,
 * 1 error (one line on stderr naming the daemon and the cause), 2 usage.
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
        "       ptctl --controller HOST:PORT --key FILE [--timeout MS] "
        "nodes [--json]\n"
        "\n"
        "commands, to a standalone ptd node:\n"
        "  status     the job, its committed step and snapshot age, bytes\n"
        "             held in shared memory, restarts, and one row per rank\n"
        "  stop       stop the job: trainers, then snapshot processes\n"
        "             (snapshots are kept)\n"
        "\n"
        "commands, to the cluster's ptd controller:\n"
        "  nodes      every registered node: state (alive, unreachable,\n"
        "             dead), advertised address, capacity, failure domain,\n"
        "             age of its last heartbeat, job (none: a spare)\n"
        "\n"
        "'ptctl COMMAND --help' describes one command.\n"
        "\n"
        "options:\n"
        "  --controller HOST:PORT  the controller (default: $PT_CONTROLLER);\n"
        "                    HOST numeric, IPv6 in brackets: [::1]:7000\n"
        "  --key FILE        the cluster key (default: $PT_KEY)\n"
        "  --state-dir DIR   the node's state directory (default:\n"
        "                    $PT_STATE_DIR, else /run/pt); the socket is\n"
        "                    DIR/ptd.sock\n"
        "  --socket PATH     the control socket itself\n"
        "  --timeout MS      how long to wait for the daemon (default: 5000)\n"
        "  --json            one JSON object instead of a table\n"
        "  --help, --version\n"
        "\n"
        "exit status: 0 success, 1 error (the daemon unreachable, a wrong\n"
        "key, a refusal), 2 usage\n",
        f);
}

static void usage_cmd(FILE *f, const char *cmd)
{
  if (strcmp(cmd, "status") == 0)
    fputs("usage: ptctl [--state-dir DIR | --socket PATH] status [--json]\n"
          "\n"
          "The standalone node's job: state, committed step and its age,\n"
          "bytes held in shared memory, restarts, and one row per rank.\n"
          "exit status: 0 success, 1 error, 2 usage\n",
          f);
  else if (strcmp(cmd, "stop") == 0)
    fputs("usage: ptctl [--state-dir DIR | --socket PATH] stop [--json]\n"
          "\n"
          "Stops the standalone node's job as SIGTERM would: trainers, then\n"
          "snapshot processes; the snapshots are kept.\n"
          "exit status: 0 stopping, 1 error, 2 usage\n",
          f);
  else if (strcmp(cmd, "nodes") == 0)
    fputs("usage: ptctl --controller HOST:PORT --key FILE nodes [--json]\n"
          "\n"
          "Every node registered with the controller, one row each: NODE,\n"
          "STATE (alive, unreachable: its connection broke or it missed\n"
          "heartbeats, dead: silent past the controller's deadline),\n"
          "ADVERTISE, CAPACITY (ranks), DOMAIN (failure domain), HEARTBEAT\n"
          "(age of the last one), JOB ('-': a spare). --json: one object,\n"
          "{\"controller\": ..., \"nodes\": [{\"node\", \"state\",\n"
          "\"advertise\", \"capacity\", \"failure_domain\",\n"
          "\"heartbeat_age_ms\", \"job\"}, ...]}.\n"
          "PT_CONTROLLER and PT_KEY stand for the options.\n"
          "exit status: 0 success, 1 error (unreachable, wrong key,\n"
          "refused), 2 usage\n",
          f);
  else
    usage(f);
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

/* ---- the controller ---- */

/* HOST:PORT, IPv6 in brackets. PT_OK or -EINVAL. */
static int ctl_call(const char *addr, const char *key_path, int timeout_ms,
                    uint32_t type, const ProtobufCMessage *req,
                    uint32_t reply_type, ProtobufCMessage **reply)
{
  uint64_t deadline = rpc_now_ms() + (uint64_t)timeout_ms;
  struct rpc_auth self = {.role = PT__PEER_ROLE__PEER_ROLE_CTL};
  char host[64], err[512];
  uint32_t peer_role = 0;
  int port, fd, rc;

  if (rpc_addr_parse(addr, 1, host, sizeof(host), &port, err,
                     sizeof(err)) != PT_OK) {
    fprintf(stderr, "ptctl: --controller '%s': %s\n", addr, err);
    return -EINVAL;
  }
  rc = rpc_key_load(key_path, self.key, err, sizeof(err));
  if (rc != PT_OK) {
    fprintf(stderr, "ptctl: %s\n", err);
    return rc;
  }
  snprintf(self.node_id, sizeof(self.node_id), "ptctl");
  rc = rpc_sock_connect_tcp(host, port, timeout_ms, &fd);
  if (rc != PT_OK) {
    fprintf(stderr, "ptctl: cannot reach ptd controller at %s: %s%s\n", addr,
            pt_strerror(rc),
            rc == -ECONNREFUSED ? " (is ptd controller running?)" : "");
    goto out_wipe;
  }
  uint64_t now = rpc_now_ms();
  int left = now < deadline ? (int)(deadline - now) : 1;
  rc = rpc_sock_handshake(fd, &self, left, &peer_role, NULL);
  if (rc == PT_OK && peer_role != PT__PEER_ROLE__PEER_ROLE_CONTROLLER)
    rc = PT_EPROTO;
  if (rc != PT_OK) {
    fprintf(stderr, "ptctl: cannot authenticate to ptd controller at %s: "
                    "%s\n",
            addr,
            rc == -EACCES || rc == -ECONNRESET
                ? "refused (is --key the cluster's key?)"
            : rc == PT_EPROTO && peer_role != 0
                ? "the peer is not a controller"
                : pt_strerror(rc));
    close(fd);
    goto out_wipe;
  }
  now = rpc_now_ms();
  left = now < deadline ? (int)(deadline - now) : 1;
  rc = rpc_sock_call(fd, type, req, reply_type, left, reply);
  close(fd);
  if (rc != PT_OK)
    fprintf(stderr, "ptctl: no answer from ptd controller at %s: %s\n", addr,
            rc == -ETIMEDOUT ? "timed out" : pt_strerror(rc));
out_wipe:
  memset(self.key, 0, sizeof(self.key));
  return rc;
}

static void nodes_json(FILE *f, const char *addr, const Pt__NodesReply *m)
{
  fputs("{\"controller\":", f);
  json_str(f, addr);
  fputs(",\"nodes\":[", f);
  for (size_t i = 0; i < m->n_nodes; i++) {
    const Pt__NodeInfo *n = m->nodes[i];
    fputs(i > 0 ? ",{\"node\":" : "{\"node\":", f);
    json_str(f, n->node_id);
    fputs(",\"state\":", f);
    json_str(f, n->state);
    fputs(",\"advertise\":", f);
    json_str(f, n->advertise);
    fprintf(f, ",\"capacity\":%" PRIu32 ",\"failure_domain\":", n->capacity);
    if (n->failure_domain != NULL)
      json_str(f, n->failure_domain);
    else
      fputs("null", f);
    fputs(",\"heartbeat_age_ms\":", f);
    json_opt_u64(f, n->has_heartbeat_age_ms, n->heartbeat_age_ms);
    fputs(",\"job\":", f);
    if (n->job != NULL)
      json_str(f, n->job);
    else
      fputs("null", f);
    fputc('}', f);
  }
  fputs("]}\n", f);
}

static void nodes_table(FILE *f, const Pt__NodesReply *m)
{
  char age[32];

  if (m->n_nodes == 0) {
    fputs("no nodes registered\n", f);
    return;
  }
  fprintf(f, "%-20s %-12s %-22s %-9s %-14s %-12s %s\n", "NODE", "STATE",
          "ADVERTISE", "CAPACITY", "DOMAIN", "HEARTBEAT", "JOB");
  for (size_t i = 0; i < m->n_nodes; i++) {
    const Pt__NodeInfo *n = m->nodes[i];
    fprintf(f, "%-20s %-12s %-22s %-9" PRIu32 " %-14s %-12s %s\n",
            n->node_id, n->state, n->advertise, n->capacity,
            n->failure_domain != NULL && n->failure_domain[0] != '\0'
                ? n->failure_domain
                : "-",
            n->has_heartbeat_age_ms
                ? human_age(age, sizeof(age), n->heartbeat_age_ms)
                : "-",
            n->job != NULL && n->job[0] != '\0' ? n->job : "-");
  }
}

static int cmd_nodes(const char *addr, const char *key, int timeout_ms,
                     bool json)
{
  Pt__NodesQuery q = PT__NODES_QUERY__INIT;
  ProtobufCMessage *msg = NULL;

  if (ctl_call(addr, key, timeout_ms, RPC_NODES_QUERY, &q.base,
               RPC_NODES_REPLY, &msg) != PT_OK)
    return 1;
  const Pt__NodesReply *m = (const Pt__NodesReply *)msg;
  int code = 0;
  if (m->status < 0) {
    fprintf(stderr, "ptctl: ptd controller at %s answered: %s\n", addr,
            m->message != NULL ? m->message : pt_strerror(m->status));
    code = 1;
  } else if (json) {
    nodes_json(stdout, addr, m);
  } else {
    nodes_table(stdout, m);
  }
  protobuf_c_message_free_unpacked(msg, NULL);
  if (fflush(stdout) != 0)
    code = 1;
  return code;
}

int main(int argc, char **argv)
{
  const char *state_dir = NULL, *sock = NULL, *cmd = NULL;
  const char *controller = NULL, *key = NULL;
  char path[4096];
  int timeout_ms = PTCTL_DEFAULT_TIMEOUT_MS;
  bool json = false;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      if (cmd != NULL)
        usage_cmd(stdout, cmd);
      else
        usage(stdout);
      return 0;
    }
    if (strcmp(a, "--version") == 0) {
      printf("ptctl %d.%d\n", PT_VERSION_MAJOR, PT_VERSION_MINOR);
      return 0;
    }
    if (strcmp(a, "--json") == 0) {
      json = true;
    } else if (strcmp(a, "--controller") == 0 || strcmp(a, "--key") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ptctl: option '%s' needs a value\n", a);
        return 2;
      }
      if (a[2] == 'c')
        controller = argv[++i];
      else
        key = argv[++i];
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
  if (strcmp(cmd, "nodes") == 0) {
    if (state_dir != NULL || sock != NULL) {
      fprintf(stderr, "ptctl: 'nodes' asks the controller: give "
                      "--controller, not --state-dir or --socket\n");
      return 2;
    }
    if (controller == NULL)
      controller = getenv("PT_CONTROLLER");
    if (key == NULL)
      key = getenv("PT_KEY");
    if (controller == NULL || controller[0] == '\0') {
      fprintf(stderr, "ptctl: 'nodes' needs --controller HOST:PORT (or "
                      "PT_CONTROLLER)\n");
      return 2;
    }
    if (key == NULL || key[0] == '\0') {
      fprintf(stderr, "ptctl: 'nodes' needs --key FILE (or PT_KEY), the "
                      "cluster key\n");
      return 2;
    }
    return cmd_nodes(controller, key, timeout_ms, json);
  }
  if (controller != NULL || key != NULL) {
    fprintf(stderr, "ptctl: '%s' is a standalone node's command: give "
                    "--state-dir or --socket, not --controller or --key\n",
            cmd);
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
  fprintf(stderr, "ptctl: unknown command '%s' (status, stop or nodes)\n",
          cmd);
  return 2;
}
