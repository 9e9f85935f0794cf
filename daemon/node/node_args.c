/*
 * node_args.c — the command line of `ptd node`. A pure parser: it reads
 * argv and the environment ($PT_STATE_DIR) and fills a node_config, or says
 * in one sentence what is wrong. Nothing here touches the file system.
 *
 * Every socket the node creates or dials lives in the state directory, so
 * its path length is checked here against sun_path (libuv would otherwise
 * truncate it silently).
 */
#include <ctype.h>
#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>
#include <arpa/inet.h>

#include "pt.h"
#include "common/log.h"
#include "common/conf.h"
#include "daemon/node/node.h"

void node_args_usage(FILE *f)
{
  fputs(
      "usage: ptd node --ranks N [options] -- COMMAND [ARGS...]\n"
      "       ptd node --controller HOST:PORT --node-id ID --key FILE\n"
      "                [--advertise ADDR] [--failure-domain LABEL]\n"
      "                [--capacity N] [--state-dir DIR] [--replace]\n"
      "\n"
      "Runs COMMAND once per local rank, each beside a snapshot management\n"
      "process (ptd smp) that holds the rank's state in shared memory; commits\n"
      "a step once every rank sealed it; after a trainer dies, restarts every\n"
      "rank from the newest step all of them hold intact.\n"
      "\n"
      "options:\n"
      "  --ranks N            local ranks (required, 1..1024)\n"
      "  --job NAME           job name (default: job)\n"
      "  --state-dir DIR      sockets and node.state (default: $PT_STATE_DIR,\n"
      "                       else /run/pt)\n"
      "  --slots N            snapshot slots per rank, 2..8 (default: 2)\n"
      "  --memory-budget B    shared memory for the whole node, e.g. 8G; each\n"
      "                       rank gets B/ranks (default: no budget). Refused\n"
      "                       at start when a rank's share is below the\n"
      "                       smallest snapshot object or /dev/shm cannot\n"
      "                       hold B; the trainers' regions at their HELLO\n"
      "                       (PT_EBUDGET: the job fails, not restarted)\n"
      "  --state-bytes B      what each trainer will register, when known,\n"
      "                       e.g. 2G: the snapshot objects it needs are\n"
      "                       checked against --memory-budget and /dev/shm\n"
      "                       before anything is spawned\n"
      "  --shm-prefix P       prefix of the shm object names\n"
      "  --max-restarts N     job restarts within --restart-window before\n"
      "                       giving up (default: 10)\n"
      "  --backoff-ms MS      first restart delay, doubled each time up to\n"
      "                       5 s (default: 200); back to MS once the job\n"
      "                       ran healthy (a step committed after the\n"
      "                       restart and 60 s up)\n"
      "  --restart-window SEC --max-restarts counts the restarts of the last\n"
      "                       SEC seconds (default: 600; 0: the job's whole\n"
      "                       life)\n"
      "  --smp-timeout SEC    an SMP that does not answer a liveness probe\n"
      "                       (sent every second, or every SEC if shorter)\n"
      "                       within SEC seconds is killed and replaced\n"
      "                       (default: 5; 0: no probe; a running SMP gets\n"
      "                       more time)\n"
      "  --progress-timeout SEC  restart the job when some rank sealed no\n"
      "                       snapshot for SEC seconds while it runs (a\n"
      "                       rank alive but stuck; counted from the\n"
      "                       trainer's start, so allow for start-up and\n"
      "                       restore; default: 0, off)\n"
      "  --recover-timeout SEC  recovery in place: when a trainer dies and\n"
      "                       the others can restore in place (libpt's\n"
      "                       recover_in_place), only it is restarted and\n"
      "                       they must restore within SEC seconds of its\n"
      "                       start, else every rank restarts (default: 30;\n"
      "                       0: always restart every rank)\n"
      "  --master-port P      MASTER_PORT for the trainers (default: 29500;\n"
      "                       recovery in place N uses P + N % 64, and\n"
      "                       PT_MASTER_PORT_BASE says P)\n"
      "  --keep               keep the shm objects after the job completed\n"
      "  --resume             continue the job instance recorded in the state\n"
      "                       directory (stopped, failed or kept) from its\n"
      "                       committed step\n"
      "  --fresh              discard the job's old shm objects and start a\n"
      "                       new job instance\n"
      "  --huge-pages         snapshot objects in huge pages where /dev/shm\n"
      "                       allows it (mounted with huge=within_size or\n"
      "                       huge=advise); else 4 KiB pages, said once\n"
      "  --persist-dir DIR    the persistent tier: every --persist-every'th\n"
      "                       committed step is written beside training to\n"
      "                       DIR/JOB/step-N/ (a local disk or a file system\n"
      "                       every node mounts; DIR must exist, not be a\n"
      "                       symlink, nor be writable by others unless\n"
      "                       sticky; DIR/JOB, made 0700 when new, must be\n"
      "                       this user's and writable by nobody else)\n"
      "  --persist-every K    commits between persisted steps (default: "
      NODE_STR(NODE_PERSIST_EVERY_DEFAULT) ")\n"
      "  --persist-keep N     complete steps kept on disk; an older one is\n"
      "                       deleted only once a newer one is complete\n"
      "                       (default: " NODE_STR(NODE_PERSIST_KEEP_DEFAULT) ")\n"
      "  --persist-rate B     bytes per second per rank at most, e.g. 256M\n"
      "                       (default: 256M; 0: no limit). Use --slots 3\n"
      "                       or more: the slot being written is not reused\n"
      "                       until its file is durable, and with 2 slots\n"
      "                       snapshots skip meanwhile\n"
      "  --resume-from DIR    a cold start from the persistent tier: the\n"
      "                       newest complete step under DIR/JOB (a\n"
      "                       --persist-dir of an earlier run) is restored\n"
      "                       on every rank, verified, and the job goes on\n"
      "                       as that job instance; another --ranks than the\n"
      "                       files' is refused\n"
      "  --log-level N        3 errors .. 7 debug (default: 6)\n"
      "  --help               this text\n"
      "\n"
      "cluster mode (--controller: the node registers, heartbeats and\n"
      "reconnects, and runs the job parts the controller assigns: no\n"
      "--ranks and no trainer command; --state-dir, --shm-prefix and\n"
      "--log-level apply as above):\n"
      "  --controller HOST:PORT  the `ptd controller` to register with; HOST\n"
      "                       a numeric IPv4 or IPv6 address ([::1]:7070)\n"
      "  --node-id ID         this node's name in the cluster (required,\n"
      "                       1..255 characters of [A-Za-z0-9_.-])\n"
      "  --key FILE           the cluster key (`ptd keygen`; required; mode\n"
      "                       0600, owned by the user)\n"
      "  --advertise ADDR     address this node's ranks are reached at\n"
      "                       (default: the host's name)\n"
      "  --failure-domain L   nodes sharing a label can fail together (a\n"
      "                       rack, a switch; default: none)\n"
      "  --capacity N         ranks this node can run, 1..1024 (default:\n"
      "                       the number of CPUs online, or 8 when unknown)\n"
      "  --allow-faults       carry out `ptctl fault` requests (kill a\n"
      "                       trainer, an SMP, this ptd; stop it; damage a\n"
      "                       snapshot): for drills and tests, never on a\n"
      "                       production node (default: refused)\n"
      "  --replace            take the node id over from the node it is\n"
      "                       bound to (the controller binds a node id to\n"
      "                       the identity in node.id, made at the first\n"
      "                       start in --state-dir, and refuses the id to\n"
      "                       another one): for a node replaced by another\n"
      "                       machine, or started again with its state\n"
      "                       directory wiped; refused while the old one is\n"
      "                       alive\n"
      "Cluster mode takes neither --ranks nor a trainer command: the\n"
      "controller gives the node its job parts.\n"
      "\n"
      "Each job instance has a random id, kept in the state directory and\n"
      "in every shm object. A node restarted after its own crash continues\n"
      "the running instance (re-adopting what still runs); otherwise old\n"
      "shm objects of the job refuse the start unless --resume or --fresh\n"
      "says what to do with them. The state directory must be owned by the\n"
      "user and not writable by group or others.\n"
      "\n"
      "Times in seconds (SEC) may have up to 3 decimals, e.g. 0.25.\n"
      "\n"
      "Each trainer gets PT_JOB, PT_INSTANCE, PT_RANK, PT_WORLD_SIZE, PT_SMP_SOCKET,\n"
      "PT_RESTART, RANK, WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE,\n"
      "MASTER_ADDR and MASTER_PORT.\n"
      "\n"
      "A trainer has finished only when it told its SMP so (libpt's close\n"
      "with done); one that exits 0 without it counts as failed and the job\n"
      "restarts. A trainer exiting 78 (EX_CONFIG) fails the job at once.\n"
      "\n"
      "exit status: 0 job completed, 1 job failed, 2 usage or configuration\n"
      "error, 3 stopped (SIGTERM, SIGINT or `ptctl stop`).\n",
      f);
}

__attribute__((format(printf, 3, 4))) static int
fail(char *err, size_t len, const char *fmt, ...)
{
  va_list ap;

  va_start(ap, fmt);
  if (err != NULL && len > 0)
    vsnprintf(err, len, fmt, ap);
  va_end(ap);
  return -EINVAL;
}

static int parse_u64(const char *s, uint64_t *out)
{
  char *end;

  if (s == NULL || !isdigit((unsigned char)s[0]))
    return -EINVAL;
  errno = 0;
  unsigned long long v = strtoull(s, &end, 10);
  if (errno != 0 || *end != '\0')
    return -EINVAL;
  *out = v;
  return PT_OK;
}

static int parse_u32(const char *s, uint32_t lo, uint32_t hi, uint32_t *out)
{
  uint64_t v;

  if (parse_u64(s, &v) != PT_OK || v < lo || v > hi)
    return -EINVAL;
  *out = (uint32_t)v;
  return PT_OK;
}

/* A job name becomes part of shm object names and socket paths. */
static bool job_name_ok(const char *s)
{
  size_t n = strlen(s);

  if (n == 0 || n >= SNAP_JOB_MAX)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.')
      return false;
  }
  return s[0] != '.';
}

static bool prefix_ok(const char *s, size_t cap)
{
  size_t n = strlen(s);

  if (n >= cap)
    return false;
  for (size_t i = 0; i < n; i++) {
    unsigned char ch = (unsigned char)s[i];
    if (!isalnum(ch) && ch != '_' && ch != '-' && ch != '.')
      return false;
  }
  return true;
}

/* Matches "--name" or "--name=value"; a value missing after "--name" is
 * taken from the next argument. OUT: *val. */
static int opt_value(const char *name, int argc, char **argv, int *i,
                     const char **val, bool *matched)
{
  const char *a = argv[*i];
  size_t n = strlen(name);

  *matched = false;
  if (strncmp(a, name, n) != 0)
    return PT_OK;
  if (a[n] == '=') {
    *matched = true;
    *val = a + n + 1;
    return PT_OK;
  }
  if (a[n] != '\0')
    return PT_OK;
  *matched = true;
  if (*i + 1 >= argc)
    return -EINVAL;
  *val = argv[++*i];
  return PT_OK;
}

/* The persistent tier's options (node_persist.c). */
static int parse_persist(struct node_config *cfg, int argc, char **argv,
                         int *i, bool *matched, char *err, size_t errlen)
{
  static const char *const names[] = {"--persist-dir", "--persist-every",
                                      "--persist-keep", "--persist-rate",
                                      "--resume-from"};
  const char *val = NULL;

  for (size_t k = 0; k < sizeof(names) / sizeof(names[0]); k++) {
    if (opt_value(names[k], argc, argv, i, &val, matched) != PT_OK)
      return fail(err, errlen, "option '%s' needs a value", names[k]);
    if (!*matched)
      continue;
    cfg->persist_given = cfg->persist_given || k < 4;
    switch (k) {
    case 0:
      if (!conf_path_plain(val, NODE_PERSIST_ROOT_MAX))
        return fail(err, errlen, "--persist-dir '%s': expected an absolute "
                    "path of at most %d bytes without . or .. parts", val,
                    NODE_PERSIST_ROOT_MAX - 1);
      snprintf(cfg->persist_dir, sizeof(cfg->persist_dir), "%s", val);
      break;
    case 1:
      if (parse_u32(val, 1, 100000000, &cfg->persist_every) != PT_OK)
        return fail(err, errlen, "--persist-every '%s': expected 1..100000000 "
                    "commits", val);
      break;
    case 2:
      if (parse_u32(val, 1, 1000, &cfg->persist_keep) != PT_OK)
        return fail(err, errlen, "--persist-keep '%s': expected 1..1000 "
                    "complete steps", val);
      break;
    case 3:
      if (conf_parse_bytes(val, &cfg->persist_rate) != PT_OK)
        return fail(err, errlen, "--persist-rate '%s': expected bytes per "
                    "second per rank, e.g. 256M (0: no limit)", val);
      break;
    case 4:
      if (!conf_path_plain(val, NODE_PERSIST_ROOT_MAX))
        return fail(err, errlen, "--resume-from '%s': expected an absolute "
                    "path of at most %d bytes without . or .. parts", val,
                    NODE_PERSIST_ROOT_MAX - 1);
      snprintf(cfg->resume_from, sizeof(cfg->resume_from), "%s", val);
      break;
    }
    return PT_OK;
  }
  return PT_OK;
}

/* "SEC" or "SEC.FFF" (at most 3 decimals), at most hi_ms. OUT: *ms. */
static int parse_ms(const char *s, uint32_t hi_ms, uint32_t *ms)
{
  uint64_t whole = 0, frac = 0;
  int digits = 0;

  if (s == NULL || !isdigit((unsigned char)s[0]))
    return -EINVAL;
  for (; isdigit((unsigned char)*s); s++) {
    whole = whole * 10 + (uint64_t)(*s - '0');
    if (whole > hi_ms / 1000u + 1)
      return -EINVAL;
  }
  if (*s == '.') {
    for (s++; isdigit((unsigned char)*s); s++, digits++) {
      if (digits == 3)
        return -EINVAL;
      frac = frac * 10 + (uint64_t)(*s - '0');
    }
    if (digits == 0)
      return -EINVAL;
    for (int d = digits; d < 3; d++)
      frac *= 10;
  }
  if (*s != '\0' || whole * 1000u + frac > hi_ms)
    return -EINVAL;
  *ms = (uint32_t)(whole * 1000u + frac);
  return PT_OK;
}

/* The supervision options, in seconds with up to 3 decimals (0..one week):
 * --restart-window, --smp-timeout, --progress-timeout. OUT: *matched. */
static int parse_seconds(struct node_config *cfg, int argc, char **argv,
                         int *i, bool *matched, char *err, size_t errlen)
{
  const struct {
    const char *name;
    uint32_t *ms;
  } opts[] = {
      {"--restart-window", &cfg->restart_window_ms},
      {"--smp-timeout", &cfg->smp_timeout_ms},
      {"--progress-timeout", &cfg->progress_timeout_ms},
      {"--recover-timeout", &cfg->recover_timeout_ms},
  };
  const char *val = NULL;

  for (size_t k = 0; k < sizeof(opts) / sizeof(opts[0]); k++) {
    if (opt_value(opts[k].name, argc, argv, i, &val, matched) != PT_OK)
      return fail(err, errlen, "option '%s' needs a value", opts[k].name);
    if (!*matched)
      continue;
    if (parse_ms(val, 86400u * 7u * 1000u, opts[k].ms) != PT_OK)
      return fail(err, errlen,
                  "%s '%s': expected seconds (up to 3 decimals), 0..604800",
                  opts[k].name, val);
    return PT_OK;
  }
  return PT_OK;
}

uint32_t node_args_default_capacity(void)
{
  long n = sysconf(_SC_NPROCESSORS_ONLN);

  if (n < 1)
    return NODE_CAPACITY_DEFAULT;
  return n > NODE_MAX_RANKS ? NODE_MAX_RANKS : (uint32_t)n;
}

/* Printable ASCII without spaces, 1..cap-1 bytes. */
static bool label_ok(const char *s, size_t cap)
{
  size_t n = strlen(s);

  if (n == 0 || n >= cap)
    return false;
  for (size_t i = 0; i < n; i++)
    if (s[i] <= ' ' || s[i] > '~')
      return false;
  return true;
}

/* "A.B.C.D:PORT" or "[V6]:PORT", the host numeric (the transport does no
 * name resolution). */
static int parse_hostport(struct node_config *cfg, const char *val,
                          char *why, size_t whylen)
{
  return rpc_addr_parse(val, 1, cfg->controller_host,
                        sizeof(cfg->controller_host), &cfg->controller_port,
                        why, whylen);
}

/* The cluster options, idx 0 (--controller) .. 5 (--capacity). */
static int parse_cluster_opt(struct node_config *cfg, int idx, const char *val,
                             char *err, size_t errlen)
{
  switch (idx) {
  case 0:
    char why[160];
    if (parse_hostport(cfg, val, why, sizeof(why)) != PT_OK)
      return fail(err, errlen, "--controller '%s': %s", val, why);
    cfg->cluster = true;
    return PT_OK;
  case 1:
    if (!prefix_ok(val, sizeof(cfg->node_id)) || val[0] == '\0')
      return fail(err, errlen,
                  "--node-id '%s': expected 1..%u characters of "
                  "[A-Za-z0-9_.-]",
                  val, RPC_NODE_ID_MAX);
    snprintf(cfg->node_id, sizeof(cfg->node_id), "%s", val);
    return PT_OK;
  case 2:
    if (val[0] == '\0' || strlen(val) >= sizeof(cfg->key_path))
      return fail(err, errlen, "--key '%s': empty or too long", val);
    snprintf(cfg->key_path, sizeof(cfg->key_path), "%s", val);
    return PT_OK;
  case 3:
    if (!label_ok(val, sizeof(cfg->advertise)))
      return fail(err, errlen,
                  "--advertise '%s': expected 1..%zu printable characters "
                  "without spaces",
                  val, sizeof(cfg->advertise) - 1);
    snprintf(cfg->advertise, sizeof(cfg->advertise), "%s", val);
    return PT_OK;
  case 4:
    if (!label_ok(val, sizeof(cfg->failure_domain)))
      return fail(err, errlen,
                  "--failure-domain '%s': expected 1..%zu printable "
                  "characters without spaces",
                  val, sizeof(cfg->failure_domain) - 1);
    snprintf(cfg->failure_domain, sizeof(cfg->failure_domain), "%s", val);
    return PT_OK;
  default:
    if (parse_u32(val, 1, NODE_MAX_RANKS, &cfg->capacity) != PT_OK)
      return fail(err, errlen, "--capacity '%s': expected 1..%d", val,
                  NODE_MAX_RANKS);
    return PT_OK;
  }
}

/* Cluster mode's checks once every option is read; ncmd: arguments left
 * after "--". */
static int finish_cluster(struct node_config *cfg, bool have_ranks, int ncmd,
                          char *err, size_t errlen)
{
  if (have_ranks || ncmd > 0)
    return fail(err, errlen,
                "cluster mode (--controller) takes neither --ranks nor a "
                "trainer command: the controller assigns the job parts");
  if (cfg->node_id[0] == '\0')
    return fail(err, errlen, "cluster mode (--controller) needs --node-id");
  if (cfg->key_path[0] == '\0')
    return fail(err, errlen, "cluster mode (--controller) needs --key FILE");
  if (cfg->capacity == 0)
    cfg->capacity = node_args_default_capacity();
  if (cfg->advertise[0] == '\0') {
    char host[256];
    if (gethostname(host, sizeof(host)) != 0)
      return fail(err, errlen,
                  "cannot read the host's name for --advertise: %s",
                  strerror(errno));
    host[sizeof(host) - 1] = '\0';
    if (!label_ok(host, sizeof(cfg->advertise)))
      return fail(err, errlen,
                  "the host's name '%s' cannot be advertised: give "
                  "--advertise ADDR",
                  host);
    snprintf(cfg->advertise, sizeof(cfg->advertise), "%s", host);
  }
  /* The longest socket path in the state dir: <dir>/ptd.sock. */
  if (strlen(cfg->state_dir) + sizeof("/ptd.sock") > NODE_PATH_MAX)
    return fail(err, errlen,
                "--state-dir '%s' is too long: socket paths in it must fit "
                "in %d bytes",
                cfg->state_dir, NODE_PATH_MAX - 1);
  return PT_OK;
}

int node_args_parse(struct node_config *cfg, int argc, char **argv, char *err,
                    size_t errlen)
{
  static const char *const valued[] = {
      "--ranks",        "--job",        "--state-dir",   "--slots",
      "--memory-budget", "--shm-prefix", "--max-restarts", "--backoff-ms",
      "--master-port",  "--log-level",  "--state-bytes", "--controller",
      "--node-id",      "--key",        "--advertise",   "--failure-domain",
      "--capacity",
  };
  bool have_cluster_opt = false;
  const char *cluster_opt = NULL;
  const char *env_dir = getenv("PT_STATE_DIR");
  bool have_ranks = false;
  int i;

  memset(cfg, 0, sizeof(*cfg));
  snprintf(cfg->job, sizeof(cfg->job), "job");
  snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s",
           env_dir != NULL && env_dir[0] != '\0' ? env_dir : "/run/pt");
  cfg->slots = 2;
  cfg->max_restarts = 10;
  cfg->backoff_ms = 200;
  cfg->master_port = 29500;
  cfg->log_level = LOG_LVL_INFO;
  cfg->restart_window_ms = 600u * 1000u;
  cfg->smp_timeout_ms = 5000u;
  cfg->recover_timeout_ms = 30000u;
  cfg->persist_every = NODE_PERSIST_EVERY_DEFAULT;
  cfg->persist_keep = NODE_PERSIST_KEEP_DEFAULT;
  cfg->persist_rate = NODE_PERSIST_RATE_DEFAULT;
  if (env_dir != NULL && strlen(env_dir) >= sizeof(cfg->state_dir))
    return fail(err, errlen, "PT_STATE_DIR '%s' is too long for a socket path",
                env_dir);

  for (i = 1; i < argc; i++) {
    const char *a = argv[i];
    const char *val = NULL;
    bool matched = false;
    size_t k;

    if (strcmp(a, "--") == 0) {
      i++;
      break;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0)
      return NODE_ARGS_HELP;
    if (strcmp(a, "--keep") == 0) {
      cfg->keep = true;
      continue;
    }
    if (strcmp(a, "--resume") == 0 || strcmp(a, "--fresh") == 0) {
      if (a[2] == 'r')
        cfg->resume = true;
      else
        cfg->fresh = true;
      if (cfg->resume && cfg->fresh)
        return fail(err, errlen, "--resume and --fresh exclude each other");
      continue;
    }
    if (strcmp(a, "--huge-pages") == 0) {
      cfg->huge_pages = true;
      continue;
    }
    if (strcmp(a, "--allow-faults") == 0) {
      cfg->allow_faults = true;
      continue;
    }
    if (strcmp(a, "--replace") == 0) {
      cfg->replace = true;
      have_cluster_opt = true;
      cluster_opt = "--replace";
      continue;
    }
    int rc = parse_seconds(cfg, argc, argv, &i, &matched, err, errlen);
    if (rc == PT_OK && !matched)
      rc = parse_persist(cfg, argc, argv, &i, &matched, err, errlen);
    if (rc != PT_OK)
      return rc;
    if (matched)
      continue;
    for (k = 0; k < sizeof(valued) / sizeof(valued[0]); k++) {
      if (opt_value(valued[k], argc, argv, &i, &val, &matched) != PT_OK)
        return fail(err, errlen, "option '%s' needs a value", valued[k]);
      if (matched)
        break;
    }
    if (!matched) {
      if (a[0] == '-')
        return fail(err, errlen, "unknown option '%s'", a);
      return fail(err, errlen,
                  "unexpected argument '%s' (the trainer command follows '--')",
                  a);
    }
    switch (k) {
    case 0:
      if (parse_u32(val, 1, NODE_MAX_RANKS, &cfg->ranks) != PT_OK)
        return fail(err, errlen, "--ranks '%s': expected 1..%d", val,
                    NODE_MAX_RANKS);
      have_ranks = true;
      break;
    case 1:
      if (!job_name_ok(val))
        return fail(err, errlen,
                    "--job '%s': expected 1..%d characters of [A-Za-z0-9_.-], "
                    "not starting with '.'",
                    val, SNAP_JOB_MAX - 1);
      snprintf(cfg->job, sizeof(cfg->job), "%s", val);
      break;
    case 2:
      if (val[0] == '\0' || strlen(val) >= sizeof(cfg->state_dir))
        return fail(err, errlen, "--state-dir '%s': empty or too long", val);
      snprintf(cfg->state_dir, sizeof(cfg->state_dir), "%s", val);
      break;
    case 3:
      if (parse_u32(val, 2, SNAP_MAX_SLOTS, &cfg->slots) != PT_OK)
        return fail(err, errlen, "--slots '%s': expected 2..%d", val,
                    SNAP_MAX_SLOTS);
      break;
    case 4:
      if (conf_parse_bytes(val, &cfg->memory_budget) != PT_OK ||
          cfg->memory_budget == 0)
        return fail(err, errlen,
                    "--memory-budget '%s': expected bytes, e.g. 8G or 512M",
                    val);
      break;
    case 5:
      if (!prefix_ok(val, sizeof(cfg->shm_prefix)))
        return fail(err, errlen,
                    "--shm-prefix '%s': expected at most %zu characters of "
                    "[A-Za-z0-9_.-]",
                    val, sizeof(cfg->shm_prefix) - 1);
      snprintf(cfg->shm_prefix, sizeof(cfg->shm_prefix), "%s", val);
      break;
    case 6:
      if (parse_u32(val, 0, 1000000, &cfg->max_restarts) != PT_OK)
        return fail(err, errlen, "--max-restarts '%s': expected 0..1000000",
                    val);
      break;
    case 7:
      if (parse_u32(val, 0, 3600000, &cfg->backoff_ms) != PT_OK)
        return fail(err, errlen, "--backoff-ms '%s': expected 0..3600000",
                    val);
      break;
    case 8:
      if (parse_u32(val, 1, 65535, &cfg->master_port) != PT_OK)
        return fail(err, errlen, "--master-port '%s': expected 1..65535", val);
      break;
    case 9: {
      uint32_t lvl;
      if (parse_u32(val, LOG_LVL_ERR, LOG_LVL_DEBUG, &lvl) != PT_OK)
        return fail(err, errlen, "--log-level '%s': expected %d..%d", val,
                    LOG_LVL_ERR, LOG_LVL_DEBUG);
      cfg->log_level = (int)lvl;
      break;
    }
    case 10:
      if (conf_parse_bytes(val, &cfg->state_bytes) != PT_OK ||
          cfg->state_bytes == 0)
        return fail(err, errlen,
                    "--state-bytes '%s': expected bytes, e.g. 8G or 512M", val);
      break;
    default:
      rc = parse_cluster_opt(cfg, (int)k - 11, val, err, errlen);
      if (rc != PT_OK)
        return rc;
      if (k != 11) {
        have_cluster_opt = true;
        cluster_opt = valued[k];
      }
      break;
    }
  }

  if (cfg->resume_from[0] != '\0' && (cfg->resume || cfg->cluster))
    return fail(err, errlen, "--resume-from starts a job instance from its "
                "files on disk: not with --resume, nor in cluster mode");
  if (cfg->cluster && cfg->persist_given)
    return fail(err, errlen, "--persist-* are options of a standalone node; "
                "a cluster job's persistent tier is the job's: ptctl start "
                "--persist-dir DIR ...");
  if (cfg->persist_given && cfg->persist_dir[0] == '\0')
    return fail(err, errlen, "--persist-every, --persist-keep and "
                "--persist-rate need --persist-dir");
  if (cfg->cluster)
    return finish_cluster(cfg, have_ranks, argc - i, err, errlen);
  if (have_cluster_opt)
    return fail(err, errlen, "%s needs --controller (cluster mode)",
                cluster_opt);
  if (!have_ranks)
    return fail(err, errlen, "--ranks is required");
  if (i >= argc)
    return fail(err, errlen, "no trainer command: give it after '--'");
  cfg->cmd = argv + i;
  cfg->ncmd = argc - i;
  if (cfg->cmd[0][0] == '\0')
    return fail(err, errlen, "the trainer command is empty");

  /* The longest socket path: <dir>/smp.<ranks-1>.sock. */
  char probe[NODE_PATH_MAX + 32];
  int plen = snprintf(probe, sizeof(probe), "%s/smp.%" PRIu32 ".sock",
                      cfg->state_dir, cfg->ranks - 1);
  if (plen < 0 || (size_t)plen >= NODE_PATH_MAX)
    return fail(err, errlen,
                "--state-dir '%s' is too long: socket paths in it must fit "
                "in %d bytes",
                cfg->state_dir, NODE_PATH_MAX - 1);
  return PT_OK;
}
