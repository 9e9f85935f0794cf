/*
 * ptctl_main.c — ptctl's command line: the global options (anywhere before
 * a `--`), which daemon the command asks, and the dispatch.
 *
 * The global options are taken out wherever they stand; what is left (the
 * command's own options and arguments, and everything from `--` on,
 * untouched) goes to the command. A command option's value is passed on
 * with it, so a value is never read as a global option.
 *
 * `status` and `stop` ask the controller when --controller or --key is
 * given, when they have a JOB argument, or when PT_CONTROLLER is set and
 * neither --state-dir nor --socket is; otherwise the standalone node, as
 * before the cluster.
 */
#include <stdlib.h>
#include <string.h>

#include "client/ptctl.h"
#include "pt.h"

/* Command options that take a value. */
static const char *const CMD_VALUED[] = {
    "--job",           "--nodes",      "--ranks-per-node",
    "--slots",         "--code",       "--memory-budget",
    "--max-restarts",  "--restart-window-ms", "--backoff-ms",
    "--node-wait-ms",  "--master-port", "--step",
    /* ptctl fault */
    "--node", "--rank", "--ms", "--seed", "--count", "--classes",
    "--timeout-s", "--stop-ms", "--restart-node", "--restart-controller",
    "--wait-done",
};

static bool is_cmd_valued(const char *a)
{
  for (size_t i = 0; i < sizeof(CMD_VALUED) / sizeof(CMD_VALUED[0]); i++)
    if (strcmp(a, CMD_VALUED[i]) == 0)
      return true;
  return false;
}

static const char *env(const char *name)
{
  const char *v = getenv(name);

  return v != NULL && v[0] != '\0' ? v : NULL;
}

struct cmdline {
  const char *state_dir, *sock, *controller, *key, *cmd;
  bool help;
  int nrest;
  char **rest; /* rest[0] is the command */
};

/* Returns -1 to go on, else the exit status. */
static int parse(int argc, char **argv, struct ptctl_opts *o,
                 struct cmdline *c)
{
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (c->cmd != NULL && strcmp(a, "--") == 0) {
      while (i < argc)
        c->rest[c->nrest++] = argv[i++];
      break;
    }
    if (strcmp(a, "--help") == 0 || strcmp(a, "-h") == 0) {
      c->help = true;
    } else if (strcmp(a, "--version") == 0) {
      printf("ptctl %d.%d\n", PT_VERSION_MAJOR, PT_VERSION_MINOR);
      return PTCTL_EXIT_OK;
    } else if (strcmp(a, "--json") == 0) {
      o->json = true;
    } else if (strcmp(a, "--controller") == 0 || strcmp(a, "--key") == 0 ||
               strcmp(a, "--state-dir") == 0 || strcmp(a, "--socket") == 0 ||
               strcmp(a, "--timeout") == 0) {
      if (i + 1 >= argc) {
        fprintf(stderr, "ptctl: option '%s' needs a value\n", a);
        return PTCTL_EXIT_USAGE;
      }
      const char *v = argv[++i];
      if (strcmp(a, "--controller") == 0) {
        c->controller = v;
      } else if (strcmp(a, "--key") == 0) {
        c->key = v;
      } else if (strcmp(a, "--state-dir") == 0) {
        c->state_dir = v;
      } else if (strcmp(a, "--socket") == 0) {
        c->sock = v;
      } else {
        uint32_t t;
        if (ptctl_args_u32("--timeout", v, 1, 3600000, &t) != PT_OK)
          return PTCTL_EXIT_USAGE;
        o->timeout_ms = (int)t;
      }
    } else if (c->cmd != NULL && is_cmd_valued(a)) {
      c->rest[c->nrest++] = argv[i];
      if (i + 1 < argc && strcmp(argv[i + 1], "--") != 0)
        c->rest[c->nrest++] = argv[++i];
    } else if (c->cmd == NULL && a[0] == '-' && a[1] != '\0') {
      fprintf(stderr, "ptctl: unknown option '%s' (see ptctl --help)\n", a);
      return PTCTL_EXIT_USAGE;
    } else {
      if (c->cmd == NULL)
        c->cmd = a;
      c->rest[c->nrest++] = argv[i];
    }
  }
  c->rest[c->nrest] = NULL;
  return -1;
}

static int help(const struct cmdline *c)
{
  const char *cmd = c->cmd;

  if (cmd != NULL && strcmp(cmd, "help") == 0)
    cmd = c->nrest > 1 ? c->rest[1] : NULL;
  if (cmd == NULL) {
    ptctl_help_usage(stdout);
    return PTCTL_EXIT_OK;
  }
  if (ptctl_help_cmd(stdout, cmd))
    return PTCTL_EXIT_OK;
  fprintf(stderr, "ptctl: no command '%s' (see ptctl --help)\n", cmd);
  return PTCTL_EXIT_USAGE;
}

static int to_controller(struct ptctl_opts *o, const struct cmdline *c)
{
  const char *cmd = c->cmd;

  if (c->state_dir != NULL || c->sock != NULL) {
    fprintf(stderr, "ptctl: '%s' asks the controller: give --controller, "
                    "not --state-dir or --socket\n",
            cmd);
    return PTCTL_EXIT_USAGE;
  }
  o->controller = c->controller != NULL ? c->controller : env("PT_CONTROLLER");
  o->key = c->key != NULL ? c->key : env("PT_KEY");
  if (o->controller == NULL || o->controller[0] == '\0') {
    fprintf(stderr, "ptctl: '%s' needs --controller HOST:PORT (or "
                    "PT_CONTROLLER)\n",
            cmd);
    return PTCTL_EXIT_USAGE;
  }
  if (o->key == NULL || o->key[0] == '\0') {
    fprintf(stderr, "ptctl: '%s' needs --key FILE (or PT_KEY), the "
                    "cluster key\n",
            cmd);
    return PTCTL_EXIT_USAGE;
  }
  if (strcmp(cmd, "start") == 0)
    return ptctl_jobs_start(o, c->nrest, c->rest);
  if (strcmp(cmd, "stop") == 0)
    return ptctl_jobs_stop(o, c->nrest, c->rest);
  if (strcmp(cmd, "restore") == 0)
    return ptctl_jobs_restore(o, c->nrest, c->rest);
  if (strcmp(cmd, "status") == 0)
    return ptctl_jobs_status(o, c->nrest, c->rest);
  if (strcmp(cmd, "jobs") == 0)
    return ptctl_jobs_list(o, c->nrest, c->rest);
  if (strcmp(cmd, "snapshots") == 0)
    return ptctl_jobs_snapshots(o, c->nrest, c->rest);
  if (strcmp(cmd, "fault") == 0)
    return ptctl_fault_main(o, c->nrest, c->rest);
  return ptctl_ctl_nodes(o, c->nrest, c->rest);
}

static int to_node(struct ptctl_opts *o, const struct cmdline *c)
{
  static char path[4096];
  const char *state_dir = c->state_dir;

  if (c->nrest > 1) {
    fprintf(stderr, "ptctl: %s: unexpected argument '%s' (a standalone "
                    "node's %s takes none)\n",
            c->cmd, c->rest[1], c->cmd);
    return PTCTL_EXIT_USAGE;
  }
  if (state_dir != NULL && c->sock != NULL) {
    fprintf(stderr, "ptctl: give --state-dir or --socket, not both\n");
    return PTCTL_EXIT_USAGE;
  }
  o->sock = c->sock;
  if (o->sock == NULL) {
    if (state_dir == NULL) {
      state_dir = env("PT_STATE_DIR");
      if (state_dir == NULL)
        state_dir = "/run/pt";
    }
    if (snprintf(path, sizeof(path), "%s/ptd.sock", state_dir) >=
        (int)sizeof(path)) {
      fprintf(stderr, "ptctl: --state-dir is too long\n");
      return PTCTL_EXIT_USAGE;
    }
    o->sock = path;
  }
  if (strcmp(c->cmd, "status") == 0)
    return ptctl_node_status(o);
  if (strcmp(c->cmd, "snapshots") == 0)
    return ptctl_node_snapshots(o);
  return ptctl_node_stop(o);
}

int ptctl_main(int argc, char **argv)
{
  struct ptctl_opts o = {.timeout_ms = PTCTL_DEFAULT_TIMEOUT_MS};
  struct cmdline c = {0};
  int code;

  c.rest = calloc((size_t)argc + 1, sizeof(*c.rest));
  if (c.rest == NULL) {
    fputs("ptctl: out of memory\n", stderr);
    return PTCTL_EXIT_FAILED;
  }
  code = parse(argc, argv, &o, &c);
  if (code >= 0)
    goto out;
  if (c.help || (c.cmd != NULL && strcmp(c.cmd, "help") == 0)) {
    code = help(&c);
    goto out;
  }
  if (c.cmd == NULL) {
    ptctl_help_usage(stderr);
    code = PTCTL_EXIT_USAGE;
    goto out;
  }
  const char *cmd = c.cmd;
  if (strcmp(cmd, "fault") == 0 && c.nrest > 1 &&
      strcmp(c.rest[1], "classes") == 0) {
    code = ptctl_fault_classes(stdout); /* no daemon asked */
    goto out;
  }
  bool ctl_only = strcmp(cmd, "nodes") == 0 || strcmp(cmd, "start") == 0 ||
                  strcmp(cmd, "restore") == 0 || strcmp(cmd, "jobs") == 0 ||
                  strcmp(cmd, "fault") == 0;
  bool either = strcmp(cmd, "status") == 0 || strcmp(cmd, "stop") == 0 ||
                strcmp(cmd, "snapshots") == 0;
  if (!ctl_only && !either) {
    fprintf(stderr, "ptctl: unknown command '%s' (start, stop, restore, "
                    "status, snapshots, jobs, nodes, fault; see ptctl "
                    "--help)\n",
            cmd);
    code = PTCTL_EXIT_USAGE;
    goto out;
  }
  bool node_flags = c.state_dir != NULL || c.sock != NULL;
  bool ctl_flags = c.controller != NULL || c.key != NULL;
  if (either && node_flags && ctl_flags) {
    fprintf(stderr, "ptctl: give --controller (the cluster) or --state-dir "
                    "or --socket (a standalone node), not both\n");
    code = PTCTL_EXIT_USAGE;
  } else if (ctl_only || ctl_flags ||
             (!node_flags && (c.nrest > 1 || env("PT_CONTROLLER") != NULL))) {
    code = to_controller(&o, &c);
  } else {
    code = to_node(&o, &c);
  }
out:
  free(c.rest);
  return code;
}
