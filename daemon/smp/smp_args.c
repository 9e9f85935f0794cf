/*
 * smp_args.c — the command line of ptd smp: its options, their checks and
 * --help.
 */
#include <errno.h>
#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "pt.h"
#include "common/conf.h"
#include "common/log.h"
#include "daemon/smp/smp_internal.h"

/* ---- command line ---- */

static int uint_parse(const char *s, uint32_t max, uint32_t *out)
{
  char *end;
  unsigned long v;

  if (s == NULL || *s < '0' || *s > '9')
    return -EINVAL;
  errno = 0;
  v = strtoul(s, &end, 10);
  if (errno != 0 || *end != '\0' || v > max)
    return -EINVAL;
  *out = (uint32_t)v;
  return 0;
}

static void usage(FILE *f)
{
  fprintf(f,
    "usage: ptd smp --job J --rank R --socket PATH [options]\n"
    "\n"
    "Snapshot management process of one rank: owns the rank's shared-memory\n"
    "snapshot object and serves its trainer and its node on a Unix socket.\n"
    "\n"
    "  --job J           job name (required)\n"
    "  --rank R          rank served (required)\n"
    "  --world W         ranks in the job (default 1)\n"
    "  --socket PATH     Unix socket to listen on (required)\n"
    "  --slots N         snapshot slots, 2..%d (default 2)\n"
    "  --budget BYTES    most bytes the object may take (\"4G\", \"512M\";\n"
    "                    default: no budget)\n"
    "  --shm-prefix P    prefix of the shm object's name (default none)\n"
    "  --autocommit      commit every sealed step at once (no node)\n"
    "  --instance HEX    the job instance id (32 hex digits): an object made\n"
    "                    by another instance is refused (default: all zero)\n"
    "  --secret-file F   the node's secret (%d bytes, mode 0600, ours, not a\n"
    "                    symlink): only a SUBSCRIBE carrying it is the node\n"
    "                    (default: only the SMP's parent process may\n"
    "                    subscribe)\n"
    "  --huge-pages      make the object with huge pages where /dev/shm\n"
    "                    allows it (mounted with huge=within_size or\n"
    "                    huge=advise); else 4 KiB pages and one warning\n"
    "  --code K+M --group G --member I --node-id ID\n"
    "  --group-node INDEX:ID=ADDR  (one per member, in member order)\n"
    "                    the coding group this SMP is member I of (all of\n"
    "                    them or none; see daemon/code_group.h)\n"
    "  --key FILE        the cluster key: the group's SMPs link with it and\n"
    "                    protect every sealed step (without it a coded\n"
    "                    SMP protects nothing, and says so)\n"
    "  --peer-listen HOST  numeric address the group's links come to\n"
    "                    (default 0.0.0.0; the port is the kernel's pick)\n"
    "  --protect-timeout-ms N  a step's protection from its seal (default\n"
    "                    %u); past it the step is not committed\n"
    "  --persist-dir DIR the job's directory of the persistent tier: a\n"
    "                    COMMIT marked persist writes the step there, in\n"
    "                    the background (this user's, not a symlink,\n"
    "                    writable by nobody else; default: none)\n"
    "  --persist-rate BYTES  per second at most (\"200M\"; default: no\n"
    "                    limit)\n"
    "  --log-level N     3 errors .. 7 debug (default 6)\n"
    "  --help            this text\n"
    "Environment: PT_REPAIR_PIPELINE=0: no repair pipelining here (the\n"
    "default: a lost member's step is rebuilt from one sum per lost piece,\n"
    "added up along a chain of the survivors): this SMP rebuilds by\n"
    "fetching k pieces per lost piece, and refuses to relay sums\n", SNAP_MAX_SLOTS, NODE_SECRET_BYTES,
    SMP_PROTECT_MS_DEFAULT);
}

enum { OPT_JOB = 256, OPT_RANK, OPT_WORLD, OPT_SOCKET, OPT_SLOTS, OPT_BUDGET,
       OPT_PREFIX, OPT_AUTOCOMMIT, OPT_LOGLEVEL, OPT_INSTANCE, OPT_SECRET,
       OPT_HUGE, OPT_CODE, OPT_GROUP, OPT_MEMBER, OPT_NODE_ID,
       OPT_GROUP_NODE, OPT_KEY, OPT_PEER_LISTEN, OPT_PROTECT_MS, OPT_PERSIST_DIR,
       OPT_PERSIST_RATE, OPT_HELP };

/* The group options: all or none, and a group code_group_check takes. */
static int group_done(struct smp *smp, unsigned given)
{
  char err[600];
  if (given == 0)
    return 0;
  if (given != 0x1f) {
    fprintf(stderr, "ptd smp: a coding group needs --code, --group, "
                    "--member, --node-id and its --group-node list\n");
    return -EINVAL;
  }
  if (code_group_check(&smp->group, smp->node_id, err, sizeof(err)) != 0) {
    fprintf(stderr, "ptd smp: refusing the coding group: %s\n", err);
    return -EINVAL;
  }
  return 0;
}

int smp_args_parse(struct smp *smp, int argc, char **argv)
{
  const char *pipe = getenv("PT_REPAIR_PIPELINE");
  smp->rebuild_chain = pipe == NULL || strcmp(pipe, "0") != 0;
  static const struct option opts[] = {
    { "job", required_argument, NULL, OPT_JOB },
    { "rank", required_argument, NULL, OPT_RANK },
    { "world", required_argument, NULL, OPT_WORLD },
    { "socket", required_argument, NULL, OPT_SOCKET },
    { "slots", required_argument, NULL, OPT_SLOTS },
    { "budget", required_argument, NULL, OPT_BUDGET },
    { "shm-prefix", required_argument, NULL, OPT_PREFIX },
    { "autocommit", no_argument, NULL, OPT_AUTOCOMMIT },
    { "log-level", required_argument, NULL, OPT_LOGLEVEL },
    { "instance", required_argument, NULL, OPT_INSTANCE },
    { "secret-file", required_argument, NULL, OPT_SECRET },
    { "huge-pages", no_argument, NULL, OPT_HUGE },
    { "code", required_argument, NULL, OPT_CODE },
    { "group", required_argument, NULL, OPT_GROUP },
    { "member", required_argument, NULL, OPT_MEMBER },
    { "node-id", required_argument, NULL, OPT_NODE_ID },
    { "group-node", required_argument, NULL, OPT_GROUP_NODE },
    { "key", required_argument, NULL, OPT_KEY },
    { "peer-listen", required_argument, NULL, OPT_PEER_LISTEN },
    { "protect-timeout-ms", required_argument, NULL, OPT_PROTECT_MS },
    { "persist-dir", required_argument, NULL, OPT_PERSIST_DIR },
    { "persist-rate", required_argument, NULL, OPT_PERSIST_RATE },
    { "help", no_argument, NULL, OPT_HELP },
    { NULL, 0, NULL, 0 },
  };
  bool has_rank = false;
  uint32_t v;
  unsigned group_given = 0;
  char err[600];
  int o, li = 0;

  smp->world = 1;
  smp->nslots = 2;
  smp->prefix = "";
  smp->protect_ms = SMP_PROTECT_MS_DEFAULT;
  optind = 0; /* full re-initialisation: the role may run more than once */
  opterr = 0;
  while ((o = getopt_long(argc, argv, "", opts, &li)) != -1) {
    switch (o) {
    case OPT_JOB:
      smp->job = optarg;
      break;
    case OPT_RANK:
      if (uint_parse(optarg, INT32_MAX, &smp->rank) != 0)
        goto bad_value;
      has_rank = true;
      break;
    case OPT_WORLD:
      if (uint_parse(optarg, INT32_MAX, &smp->world) != 0 || smp->world == 0)
        goto bad_value;
      break;
    case OPT_SOCKET:
      smp->socket_path = optarg;
      break;
    case OPT_SLOTS:
      if (uint_parse(optarg, SNAP_MAX_SLOTS, &smp->nslots) != 0 ||
          smp->nslots < 2)
        goto bad_value;
      break;
    case OPT_BUDGET:
      if (conf_parse_bytes(optarg, &smp->budget) != 0)
        goto bad_value;
      break;
    case OPT_PREFIX:
      smp->prefix = optarg;
      break;
    case OPT_AUTOCOMMIT:
      smp->autocommit = true;
      break;
    case OPT_LOGLEVEL:
      if (uint_parse(optarg, 7, &v) != 0)
        goto bad_value;
      log_max_level = (int)v;
      break;
    case OPT_INSTANCE:
      if (!snap_store_instance_parse(optarg, smp->instance))
        goto bad_value;
      break;
    case OPT_SECRET:
      smp->secret_file = optarg;
      break;
    case OPT_HUGE:
      smp->huge_pages = true;
      break;
    case OPT_CODE:
      if (code_group_code_parse(optarg, &smp->group.k, &smp->group.m) != 0)
        goto bad_value;
      group_given |= 1;
      break;
    case OPT_GROUP:
      if (uint_parse(optarg, UINT32_MAX, &smp->group.group) != 0)
        goto bad_value;
      group_given |= 2;
      break;
    case OPT_MEMBER:
      if (uint_parse(optarg, RS_MAX_MEMBERS - 1, &smp->group.member) != 0)
        goto bad_value;
      group_given |= 4;
      break;
    case OPT_NODE_ID:
      smp->node_id = optarg;
      group_given |= 8;
      break;
    case OPT_GROUP_NODE:
      if (smp->group.n >= RS_MAX_MEMBERS) {
        fprintf(stderr, "ptd smp: more than %u --group-node\n",
                RS_MAX_MEMBERS);
        return -EINVAL;
      }
      if (code_group_member_parse(optarg,
                                  &smp->group.members[smp->group.n], err,
                                  sizeof(err)) != 0) {
        fprintf(stderr, "ptd smp: --group-node: %s\n", err);
        return -EINVAL;
      }
      smp->group.n++;
      group_given |= 16;
      break;
    case OPT_KEY:
      smp->key_file = optarg;
      break;
    case OPT_PEER_LISTEN:
      smp->peer_listen = optarg;
      break;
    case OPT_PROTECT_MS:
      if (uint_parse(optarg, 3600000, &smp->protect_ms) != 0 ||
          smp->protect_ms == 0)
        goto bad_value;
      break;
    case OPT_PERSIST_DIR:
      if (optarg[0] == '\0')
        goto bad_value;
      smp->persist_dir = optarg;
      break;
    case OPT_PERSIST_RATE:
      if (conf_parse_bytes(optarg, &smp->persist_rate) != 0)
        goto bad_value;
      break;
    case OPT_HELP:
      usage(stdout);
      return 1;
    default:
      fprintf(stderr, "ptd smp: unknown or incomplete option '%s'\n",
              argv[optind - 1]);
      usage(stderr);
      return -EINVAL;
    }
  }
  if (optind < argc) {
    fprintf(stderr, "ptd smp: unexpected argument '%s'\n", argv[optind]);
    return -EINVAL;
  }
  if (smp->job == NULL || smp->job[0] == '\0' || !has_rank ||
      smp->socket_path == NULL || smp->socket_path[0] == '\0') {
    fprintf(stderr, "ptd smp: --job, --rank and --socket are required\n");
    usage(stderr);
    return -EINVAL;
  }
  if (smp->rank >= smp->world) {
    fprintf(stderr, "ptd smp: rank %u is not below world size %u\n", smp->rank,
            smp->world);
    return -EINVAL;
  }
  return group_done(smp, group_given);

bad_value:
  fprintf(stderr, "ptd smp: invalid value '%s' for --%s\n", optarg,
          opts[li].name);
  return -EINVAL;
}

