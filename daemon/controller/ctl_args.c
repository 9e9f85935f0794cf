/*
 * ctl_args.c — the command line of `ptd controller` and its timeouts.
 *
 * Pure: no I/O but the usage text. Every error names the option it is
 * about; the timeouts are judged as one ordered set, after every option has
 * been read, so a user learns the order they must keep at start, not from
 * a cluster that flaps.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/log.h"
#include "daemon/controller/controller.h"

void ctl_args_usage(FILE *f)
{
  fputs("usage: ptd controller --listen ADDR:PORT --state-dir DIR --key FILE\n"
        "                      [--heartbeat-ms MS] [--dead-after-ms MS]\n"
        "                      [--grace-ms MS] [--node-wait-ms MS]\n"
        "                      [--log-level N] [--allow-faults]\n"
        "\n"
        "The cluster's controller: nodes (ptd node --controller) register\n"
        "and heartbeat here; ptctl --controller starts, stops, restores and\n"
        "queries jobs. It places each job's parts on spare nodes, commits a\n"
        "step when every node of the job holds it, restarts the whole job\n"
        "from its newest committed step when a part fails, and journals\n"
        "every decision in DIR/journal before any node hears of it (replayed\n"
        "at start: a controller killed at any moment carries on). One per\n"
        "cluster.\n"
        "\n"
        "options:\n"
        "  --listen ADDR:PORT   numeric address to listen on: 127.0.0.1:7000,\n"
        "                       0.0.0.0:7000, [::1]:7000, [::]:7000; port 0\n"
        "                       takes any free port (the log says which)\n"
        "  --state-dir DIR      the controller's directory (created if\n"
        "                       missing; owned by this user, not writable by\n"
        "                       group or others, not a symbolic link); one\n"
        "                       controller per directory\n"
        "  --key FILE           the cluster key (ptd keygen FILE), mode 0600\n"
        "  --heartbeat-ms MS    how often nodes heartbeat (default 1000)\n"
        "  --dead-after-ms MS   a node silent this long is dead (default\n"
        "                       10000)\n"
        "  --grace-ms MS        a node whose connection broke and did not\n"
        "                       come back within this is dead (default: the\n"
        "                       dead-after value)\n"
        "  --node-wait-ms MS    a job whose node is dead stops and waits this\n"
        "                       long for it before it fails; the default of\n"
        "                       jobs that do not say (default 60000, or twice\n"
        "                       dead-after when that is longer)\n"
        "  --log-level N        3 errors .. 7 debug (default 6)\n"
        "  --allow-faults       `ptctl fault JOB controller` may kill this\n"
        "                       controller (drills and tests; its supervisor\n"
        "                       restarts it); else refused. The nodes' kinds\n"
        "                       are relayed either way: each node decides\n"
        "  --help\n"
        "\n"
        "The timeouts must keep this order: 10 <= heartbeat-ms,\n"
        "2 x heartbeat-ms <= dead-after-ms, 0 < grace-ms <= dead-after-ms,\n"
        "dead-after-ms < node-wait-ms, each at most 3600000. A node that\n"
        "misses 3 heartbeats (never more than dead-after) is shown\n"
        "unreachable.\n"
        "\n"
        "environment: PT_FAULT=ctl_after_commit_journal makes it exit with\n"
        "status 9 right after a commit is journaled, before any node is told\n"
        "(a fault point for tests).\n"
        "\n"
        "exit status: 0 stopped by SIGTERM/SIGINT, 1 failure (the journal\n"
        "could not be written), 2 usage or configuration error (a damaged\n"
        "journal included: the message names it and the offset)\n",
        f);
}

int ctl_args_timeouts_check(const struct ctl_timeouts *t, char *err, size_t errlen)
{
  const char *order = "the timeouts must keep 10 <= heartbeat-ms, "
                      "2 x heartbeat-ms <= dead-after-ms, "
                      "0 < grace-ms <= dead-after-ms <= 3600000, "
                      "dead-after-ms < node-wait-ms <= 3600000";

  if (t->heartbeat_ms < CTL_HEARTBEAT_MS_MIN ||
      t->dead_after_ms > CTL_TIMEOUT_MS_MAX ||
      (uint64_t)t->heartbeat_ms * 2u > t->dead_after_ms || t->grace_ms == 0 ||
      t->grace_ms > t->dead_after_ms ||
      (t->node_wait_ms != 0 && (t->node_wait_ms <= t->dead_after_ms ||
                                t->node_wait_ms > CTL_TIMEOUT_MS_MAX))) {
    snprintf(err, errlen,
             "%s; got heartbeat-ms %" PRIu32 ", dead-after-ms %" PRIu32
             ", grace-ms %" PRIu32 ", node-wait-ms %" PRIu32,
             order, t->heartbeat_ms, t->dead_after_ms, t->grace_ms,
             t->node_wait_ms);
    return -EINVAL;
  }
  return PT_OK;
}

uint32_t ctl_args_timeouts_unreachable_ms(const struct ctl_timeouts *t)
{
  uint64_t ms = (uint64_t)t->heartbeat_ms * CTL_MISSED_HEARTBEATS;

  return ms < t->dead_after_ms ? (uint32_t)ms : t->dead_after_ms;
}

int ctl_args_addr_parse(const char *s, char *host, size_t hostlen, int *port,
                        char *err, size_t errlen)
{
  char why[160];
  int rc = rpc_addr_parse(s, 0, host, hostlen, port, why, sizeof(why));

  if (rc != PT_OK)
    snprintf(err, errlen, "--listen '%s': %s", LOG_ESC(s), why);
  return rc;
}

static int parse_ms(const char *opt, const char *v, uint32_t *out, char *err,
                    size_t errlen)
{
  char *end;

  errno = 0;
  unsigned long long x = strtoull(v, &end, 10);
  if (v[0] < '0' || v[0] > '9' || *end != '\0' || errno != 0 ||
      x > CTL_TIMEOUT_MS_MAX) {
    snprintf(err, errlen, "%s '%s': expected milliseconds, 0..%u", opt,
             LOG_ESC(v), CTL_TIMEOUT_MS_MAX);
    return -EINVAL;
  }
  *out = (uint32_t)x;
  return PT_OK;
}

static int copy_path(const char *opt, const char *v, char *dst, size_t cap,
                     char *err, size_t errlen)
{
  if (v[0] == '\0' || strlen(v) >= cap) {
    snprintf(err, errlen, "%s: %s", opt,
             v[0] == '\0' ? "the path is empty" : "the path is too long");
    return -EINVAL;
  }
  memcpy(dst, v, strlen(v) + 1);
  return PT_OK;
}

int ctl_args_parse(struct ctl_config *cfg, int argc, char **argv, char *err,
                   size_t errlen)
{
  bool has_listen = false, has_grace = false, has_wait = false;
  int rc;

  memset(cfg, 0, sizeof(*cfg));
  cfg->t.heartbeat_ms = CTL_HEARTBEAT_MS_DEFAULT;
  cfg->t.dead_after_ms = CTL_DEAD_AFTER_MS_DEFAULT;
  cfg->log_level = LOG_LVL_INFO;

  for (int i = 1; i < argc; i++) {
    const char *a = argv[i], *val;
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      return CTL_ARGS_HELP;
    if (strcmp(a, "--allow-faults") == 0) {
      cfg->allow_faults = true;
      continue;
    }
    static const char *const with_value[] = {
        "--listen",     "--state-dir", "--key",       "--heartbeat-ms",
        "--dead-after-ms", "--grace-ms", "--node-wait-ms", "--log-level",
        NULL};
    size_t k;
    for (k = 0; with_value[k] != NULL; k++)
      if (strcmp(a, with_value[k]) == 0)
        break;
    if (with_value[k] == NULL) {
      snprintf(err, errlen, "%s '%s'",
               a[0] == '-' ? "unknown option" : "unexpected argument",
               LOG_ESC(a));
      return -EINVAL;
    }
    if (i + 1 >= argc) {
      snprintf(err, errlen, "option '%s' needs a value", a);
      return -EINVAL;
    }
    val = argv[++i];
    if (strcmp(a, "--listen") == 0) {
      rc = ctl_args_addr_parse(val, cfg->listen_host, sizeof(cfg->listen_host),
                          &cfg->listen_port, err, errlen);
      has_listen = true;
    } else if (strcmp(a, "--state-dir") == 0) {
      rc = copy_path(a, val, cfg->state_dir, sizeof(cfg->state_dir), err,
                     errlen);
    } else if (strcmp(a, "--key") == 0) {
      rc = copy_path(a, val, cfg->key_path, sizeof(cfg->key_path), err,
                     errlen);
    } else if (strcmp(a, "--heartbeat-ms") == 0) {
      rc = parse_ms(a, val, &cfg->t.heartbeat_ms, err, errlen);
    } else if (strcmp(a, "--dead-after-ms") == 0) {
      rc = parse_ms(a, val, &cfg->t.dead_after_ms, err, errlen);
    } else if (strcmp(a, "--grace-ms") == 0) {
      rc = parse_ms(a, val, &cfg->t.grace_ms, err, errlen);
      has_grace = true;
    } else if (strcmp(a, "--node-wait-ms") == 0) {
      rc = parse_ms(a, val, &cfg->t.node_wait_ms, err, errlen);
      if (rc == PT_OK && cfg->t.node_wait_ms == 0)
        rc = -EINVAL;
      if (rc != PT_OK)
        snprintf(err, errlen, "--node-wait-ms '%s': expected milliseconds, "
                 "1..%u", LOG_ESC(val), CTL_TIMEOUT_MS_MAX);
      has_wait = true;
    } else {
      uint32_t lvl;
      rc = parse_ms(a, val, &lvl, err, errlen);
      if (rc == PT_OK && (lvl < LOG_LVL_ERR || lvl > LOG_LVL_DEBUG))
        rc = -EINVAL;
      if (rc != PT_OK)
        snprintf(err, errlen, "--log-level '%s': expected %d..%d",
                 LOG_ESC(val), LOG_LVL_ERR, LOG_LVL_DEBUG);
      else
        cfg->log_level = (int)lvl;
    }
    if (rc != PT_OK)
      return rc;
  }
  if (!has_listen) {
    snprintf(err, errlen, "--listen ADDR:PORT is required");
    return -EINVAL;
  }
  if (cfg->state_dir[0] == '\0') {
    snprintf(err, errlen, "--state-dir DIR is required");
    return -EINVAL;
  }
  if (cfg->key_path[0] == '\0') {
    snprintf(err, errlen, "--key FILE is required (make one with "
                          "'ptd keygen FILE')");
    return -EINVAL;
  }
  if (!has_grace)
    cfg->t.grace_ms = cfg->t.dead_after_ms;
  if (!has_wait) {
    uint64_t w = (uint64_t)cfg->t.dead_after_ms * 2u;
    cfg->t.node_wait_ms = cfg->t.dead_after_ms < CTL_NODE_WAIT_MS_DEFAULT
                              ? CTL_NODE_WAIT_MS_DEFAULT
                          : w > CTL_TIMEOUT_MS_MAX ? CTL_TIMEOUT_MS_MAX
                                                   : (uint32_t)w;
  }
  return ctl_args_timeouts_check(&cfg->t, err, errlen);
}
