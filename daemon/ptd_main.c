/*
 * ptd_main.c — the ptd binary: one program, several roles. The first argument
 * names the role; the role parses the rest of argv itself (its argv[0] is
 * the role name) and returns the process exit status.
 *
 *   ptd node ...    supervise one SMP and one trainer per local rank
 *   ptd smp ...     hold one rank's snapshots (spawned by ptd node)
 *   ptd controller ...  the cluster's controller
 *   ptd keygen FILE write a new cluster key (rpc_key_write)
 *
 * Exit status 2 for a usage error, as every role does.
 */
#include <stdio.h>
#include <string.h>

#include "pt.h"
#include "daemon/roles.h"
#include "rpc/rpc.h"

/* ptd keygen FILE: 32 random bytes, mode 0600, never over an existing
 * file. */
static int keygen_main(int argc, char **argv)
{
  char err[512];

  if (argc == 2 && (strcmp(argv[1], "--help") == 0 ||
                    strcmp(argv[1], "-h") == 0)) {
    fputs("usage: ptd keygen FILE\n"
          "\n"
          "Writes a new cluster key to FILE: 32 random bytes, mode 0600.\n"
          "FILE must not exist. Every daemon of a cluster reads the same\n"
          "key to authenticate the others over TCP; copy it to each node\n"
          "with its mode kept (a key readable by group or others is\n"
          "refused).\n",
          stdout);
    return 0;
  }
  if (argc != 2 || argv[1][0] == '-') {
    fputs("usage: ptd keygen FILE\n", stderr);
    return 2;
  }
  if (rpc_key_write(argv[1], err, sizeof(err)) != PT_OK) {
    fprintf(stderr, "ptd keygen: %s\n", err);
    return 1;
  }
  return 0;
}

static void usage(FILE *f)
{
  fputs("usage: ptd ROLE [ARGS...]\n"
        "\n"
        "roles:\n"
        "  node     run a training job: one snapshot process (smp) and one\n"
        "           trainer per local rank; see 'ptd node --help'\n"
        "  smp      the snapshot management process of one rank (started by\n"
        "           ptd node); see 'ptd smp --help'\n"
        "  controller  the cluster's controller: nodes register and\n"
        "              heartbeat, ptctl queries; see 'ptd controller --help'\n"
        "  keygen   write a new cluster key: ptd keygen FILE\n"
        "\n"
        "  ptd --help       this text\n"
        "  ptd --version    the version\n",
        f);
}

int main(int argc, char **argv)
{
  if (argc < 2) {
    usage(stderr);
    return 2;
  }
  if (strcmp(argv[1], "node") == 0)
    return node_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "smp") == 0)
    return smp_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "controller") == 0)
    return controller_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "keygen") == 0)
    return keygen_main(argc - 1, argv + 1);
  if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "-h") == 0 ||
      strcmp(argv[1], "help") == 0) {
    usage(stdout);
    return 0;
  }
  if (strcmp(argv[1], "--version") == 0) {
    printf("ptd %d.%d\n", PT_VERSION_MAJOR, PT_VERSION_MINOR);
    return 0;
  }
  fprintf(stderr, "ptd: unknown role '%s'\n", argv[1]);
  usage(stderr);
  return 2;
}
