/*
 * ptctl — the operator's command line (client/ptctl.h lists its parts).
 *
 * Against a standalone `ptd node`, over the node's control socket
 * (<state-dir>/ptd.sock): `status`, `stop`. Against the cluster's `ptd
 * controller` (--controller HOST:PORT --key FILE, or PT_CONTROLLER and
 * PT_KEY), over TCP authenticated with the cluster key as PEER_ROLE_CTL:
 * `start`, `stop JOB`, `restore JOB`, `status [JOB]`, `jobs`, `nodes`.
 *
 * A human table by default; with --json, exactly one JSON object per
 * command on stdout. Blocking calls with a deadline: ptctl never hangs on
 * a daemon that does not answer. Exit status: 0 success, 1 refused or
 * failed, 2 usage, 3 the daemon unreachable or silent past --timeout.
 */
#include "client/ptctl.h"

int main(int argc, char **argv)
{
  return ptctl_main(argc, argv);
}
