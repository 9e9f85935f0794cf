/*
 * ptctl_help.c — what `ptctl --help` and `ptctl COMMAND --help` print.
 * The exit codes here are the ones ptctl.h defines.
 */
#include <string.h>

#include "client/ptctl.h"

#define EXIT_TEXT                                                              \
  "exit status: 0 success; 1 refused or failed (the daemon's message on\n"     \
  "stderr; a wrong cluster key is a refusal); 2 usage (nothing was sent);\n"   \
  "3 the daemon cannot be reached or did not answer within --timeout\n"

#define CTL_TEXT                                                               \
  "PT_CONTROLLER and PT_KEY stand for --controller and --key (the options\n"   \
  "win).\n"

void ptctl_help_usage(FILE *f)
{
  fputs(
      "usage: ptctl [--state-dir DIR | --socket PATH] [--timeout MS] "
      "COMMAND [--json]\n"
      "       ptctl --controller HOST:PORT --key FILE [--timeout MS] "
      "COMMAND [ARGS] [--json]\n"
      "\n"
      "commands, to a standalone ptd node:\n"
      "  status           the job, its committed step and snapshot age, bytes\n"
      "                   held in shared memory, restarts, one row per rank\n"
      "  stop             stop the job: trainers, then snapshot processes\n"
      "                   (snapshots are kept)\n"
      "  snapshots        the steps held: every rank's slots in memory, and\n"
      "                   the steps on disk (complete or not, size, age)\n"
      "\n"
      "commands, to the cluster's ptd controller:\n"
      "  start [--job NAME] --nodes N --ranks-per-node R [OPTIONS] -- CMD "
      "ARGS...\n"
      "                   start a job across N nodes, R ranks on each\n"
      "  stop JOB         stop every rank of the job and end it\n"
      "  restore JOB [--step N]\n"
      "                   restart every rank from the newest committed step,\n"
      "                   or from an older committed step still held; also\n"
      "                   a failed job, or one stopped with --keep\n"
      "  status [JOB]     per job: epoch, state, committed step and its age,\n"
      "                   restarts, bytes held; per node: state, heartbeat,\n"
      "                   ranks\n"
      "  jobs             every job, one line each\n"
      "  nodes            every registered node: state, address, capacity,\n"
      "                   failure domain, heartbeat, job (none: a spare)\n"
      "  fault inject|campaign|classes\n"
      "                   fault injection for drills and tests (nodes\n"
      "                   started with --allow-faults only)\n"
      "\n"
      "status and stop ask the controller when --controller or --key is\n"
      "given, when they name a JOB, or when PT_CONTROLLER is set and\n"
      "neither --state-dir nor --socket is; otherwise the standalone node.\n"
      "'ptctl COMMAND --help' (or 'ptctl help COMMAND') describes one "
      "command.\n"
      "\n"
      "options:\n"
      "  --controller HOST:PORT  the controller (default: $PT_CONTROLLER);\n"
      "                    HOST numeric, IPv6 in brackets: [::1]:7000\n"
      "  --key FILE        the cluster key (default: $PT_KEY)\n"
      "  --state-dir DIR   the node's state directory (default:\n"
      "                    $PT_STATE_DIR, else /run/pt); the socket is\n"
      "                    DIR/ptd.sock\n"
      "  --socket PATH     the control socket itself\n"
      "  --timeout MS      how long to wait for the daemon, connecting and\n"
      "                    answering together (default: 5000)\n"
      "  --json            one JSON object on stdout instead of a table (on\n"
      "                    failure nothing on stdout: see the exit status)\n"
      "  --help, --version\n"
      "\n" EXIT_TEXT,
      f);
}

static const struct {
  const char *cmd, *text;
} HELP[] = {
    {"status",
     "usage: ptctl [--state-dir DIR | --socket PATH] status [--json]\n"
     "       ptctl --controller HOST:PORT --key FILE status [JOB] [--json]\n"
     "\n"
     "A standalone node's job: state, committed step and its age, bytes\n"
     "held in shared memory, restarts, the persistent tier (the newest\n"
     "complete step on disk and its age, steps left incomplete and why),\n"
     "where the last restore came from (memory or disk) and why, and one\n"
     "row per rank. --json adds \"persist_dir\", \"persist_step\",\n"
     "\"persist_age_ms\", \"persisted\", \"persist_failures\",\n"
     "\"persist_error\", \"restored_from\", \"restore_reason\" (null\n"
     "when absent).\n"
     "\n"
     "The controller's jobs (JOB, or every job): per job its epoch (the\n"
     "incarnation: 1 at start, one more at each restart), state (starting,\n"
     "running, restarting, waiting for a dead node, stopping, done, failed,\n"
     "stopped), committed step and its age, restarts, commits, bytes held,\n"
     "the reason of its last change, its spec; then one row per part: NODE,\n"
     "STATE (of the node: alive, unreachable, dead), HEARTBEAT (age of the\n"
     "node's last one), RANKS (its global ranks, first..last), PART (assigned,\n"
     "running, stopped, failed, done), SEALED (the newest step all its ranks\n"
     "sealed), HELD.\n"
     "--json: {\"controller\": ..., \"jobs\": [{\"job\", \"state\", \"epoch\",\n"
     "\"committed_step\", \"commit_age_ms\", \"restarts\", \"commits\",\n"
     "\"bytes_held\", \"reason\", \"spec\": {...}, \"parts\": [{\"node\",\n"
     "\"node_index\", \"node_state\", \"heartbeat_age_ms\", \"part_state\",\n"
     "\"first_rank\", \"last_rank\", \"ranks\", \"bytes_held\",\n"
     "\"last_sealed\"}]}]}; an absent value is null.\n" CTL_TEXT
     "\n" EXIT_TEXT},
    {"snapshots",
     "usage: ptctl [--state-dir DIR | --socket PATH] snapshots [--json]\n"
     "\n"
     "A standalone node's steps: in memory, every rank's slots as their\n"
     "records say (state: FREE, WRITING, SEALED, PINNED, PROTECTED,\n"
     "COMMITTED; step; a damaged record is said), the data itself being\n"
     "checked at every restore; on disk (--persist-dir), the newest 256\n"
     "step directories: complete (a MANIFEST of this job instance, or of\n"
     "another run), rank files, size, age, and what an incomplete one lacks.\n"
     "--json: {\"job\", \"instance\", \"committed_step\", \"memory\":\n"
     "[{\"rank\", \"slot\", \"state\", \"step\", \"record_ok\"}],\n"
     "\"memory_error\", \"persist_dir\", \"disk\": [{\"step\",\n"
     "\"complete\", \"files\", \"bytes\", \"age_ms\", \"ours\", \"why\"}]};\n"
     "an absent value is null. A cluster job's snapshots are not listed\n"
     "yet.\n"
     "\n" EXIT_TEXT},
    {"stop",
     "usage: ptctl [--state-dir DIR | --socket PATH] stop [--json]\n"
     "       ptctl --controller HOST:PORT --key FILE stop JOB [--keep] [--json]\n"
     "\n"
     "A standalone node: stops its job as SIGTERM would: trainers, then\n"
     "snapshot processes; the snapshots are kept.\n"
     "The controller: stops every rank of JOB on every node and ends the\n"
     "job (state stopped); its nodes become spares and remove the job's\n"
     "snapshots from shared memory; --keep leaves them there (files\n"
     "/dev/shm/<prefix>pt.<job>.<rank>), and 'ptctl restore JOB' can bring\n"
     "the job back from them. A failed job's are always kept.\n"
     "--json: {\"controller\": ..., \"job\": ..., \"epoch\": ...,\n"
     "\"stopping\": true, \"snapshots\": \"removed\" or \"kept\"}.\n" CTL_TEXT
     "\n" EXIT_TEXT},
    {"start",
     "usage: ptctl --controller HOST:PORT --key FILE start [--job NAME]\n"
     "         --nodes N --ranks-per-node R [--slots S]\n"
     "         [--code K+M|none]\n"
     "         [--memory-budget BYTES] [--max-restarts N]\n"
     "         [--restart-window-ms MS] [--backoff-ms MS] [--node-wait-ms MS]\n"
     "         [--master-port P] [--json] -- CMD ARGS...\n"
     "\n"
     "Starts a job on N spare nodes, R ranks on each: global rank = node\n"
     "index x R + local rank, with the torchrun environment (RANK,\n"
     "WORLD_SIZE, LOCAL_RANK, LOCAL_WORLD_SIZE, GROUP_RANK, MASTER_ADDR,\n"
     "MASTER_PORT). Everything after '--' is the trainer's command, as\n"
     "given. Prints the job's name and epoch.\n"
     "\n"
     "  --job NAME            1..255 of [A-Za-z0-9._-], not starting with\n"
     "                        '.' or '-' (default: the command's name and a\n"
     "                        random suffix, e.g. train-k3x9q2)\n"
     "  --nodes N             nodes, 1..65536\n"
     "  --ranks-per-node R    ranks on each node, 1..65536\n"
     "  --slots S             snapshot slots per rank, 2..8 (default: the\n"
     "                        controller's, 3)\n"
     "  --code K+M|none       erasure code over nodes: the same local rank\n"
     "                        on K + M nodes (a coding group, failure\n"
     "                        domains apart) survives M of them lost;\n"
     "                        K, M >= 1, K + M <= 32 and <= --nodes.\n"
     "                        Default: none for 1-2 nodes, 2+1 for 3-5,\n"
     "                        4+2 from 6. Nodes past a multiple of K + M\n"
     "                        join the groups as extra data members (7\n"
     "                        nodes, 2+1: groups 3+1 and 2+1)\n"
     "  --memory-budget BYTES shared memory per node, e.g. 64G (K, M, G, T:\n"
     "                        powers of 1024)\n"
     "  --max-restarts N      restarts within --restart-window-ms, 0..1000000\n"
     "                        (default: the controller's, 3)\n"
     "  --restart-window-ms MS  up to 30 days; 0: over the job's life\n"
     "                        (default: the controller's, 600000)\n"
     "  --backoff-ms MS       the first restart's delay, up to 3600000\n"
     "  --node-wait-ms MS     a dead node: stop the job and wait this long\n"
     "                        for it, then fail the job; 1..3600000 and\n"
     "                        longer than the controller's dead-after\n"
     "                        (default: the controller's, 60000)\n"
     "  --master-port P       MASTER_PORT, 1..65535 (default or 0: the\n"
     "                        controller picks)\n"
     "--json: {\"controller\": ..., \"job\": ..., \"epoch\": ...}.\n" CTL_TEXT
     "\n" EXIT_TEXT},
    {"restore",
     "usage: ptctl --controller HOST:PORT --key FILE restore JOB [--step N]\n"
     "         [--json]\n"
     "\n"
     "Restarts every rank of JOB in a new epoch from its newest committed\n"
     "step, or from step N: an older committed step that every node still\n"
     "holds (refused otherwise). Prints the new epoch and the step.\n"
     "A failed job (its dead node away past --node-wait-ms, or out of\n"
     "restarts) or one stopped with --keep is brought back the same way,\n"
     "once the cause is fixed: on the same nodes, each registered, alive\n"
     "and in no other job (else refused, naming the node), its restart\n"
     "budget and backoff started over. A completed job, or one stopped\n"
     "without --keep, has no snapshots left: refused.\n"
     "--json: {\"controller\": ..., \"job\": ..., \"epoch\": ..., \"step\":\n"
     "...}.\n" CTL_TEXT "\n" EXIT_TEXT},
    {"jobs",
     "usage: ptctl --controller HOST:PORT --key FILE jobs [--json]\n"
     "\n"
     "Every job the controller knows, one row each: JOB, STATE, EPOCH, NODES\n"
     "(x ranks per node), COMMITTED (step), AGE (of the commit), RESTARTS,\n"
     "HELD, REASON. --json: as 'ptctl status --json' with no JOB.\n" CTL_TEXT
     "\n" EXIT_TEXT},
    {"nodes",
     "usage: ptctl --controller HOST:PORT --key FILE nodes [--json]\n"
     "\n"
     "Every node registered with the controller, one row each: NODE,\n"
     "STATE (alive, unreachable: its connection broke or it missed\n"
     "heartbeats, dead: silent past the controller's deadline),\n"
     "ADVERTISE, CAPACITY (ranks), DOMAIN (failure domain), HEARTBEAT\n"
     "(age of the last one), JOB ('-': a spare). --json: one object,\n"
     "{\"controller\": ..., \"nodes\": [{\"node\", \"state\",\n"
     "\"advertise\", \"capacity\", \"failure_domain\",\n"
     "\"heartbeat_age_ms\", \"job\"}, ...]}.\n" CTL_TEXT "\n" EXIT_TEXT},
    {"fault",
     "usage: ptctl fault classes\n"
     "       ptctl --controller HOST:PORT --key FILE fault inject JOB CLASS\n"
     "             [--node ID] [--rank R] [--ms N]\n"
     "       ptctl --controller HOST:PORT --key FILE fault campaign JOB\n"
     "             --seed S --count N [--classes A,B,...] [--timeout-s T]\n"
     "             [--stop-ms MS] [--restart-node CMD]\n"
     "             [--restart-controller CMD] [--wait-done S]\n"
     "\n"
     "Destructive, for drills and tests: a node carries out faults only\n"
     "when started with 'ptd node --allow-faults', the controller kills\n"
     "itself only with 'ptd controller --allow-faults'; otherwise the\n"
     "request is refused and ptctl prints why.\n"
     "\n"
     "classes: trainer, smp (SIGKILL of rank R's process), ptd (SIGKILL of\n"
     "the node's ptd), controller, stop (SIGSTOP of the node's ptd for\n"
     "--ms, default past the controller's dead deadline, then SIGCONT),\n"
     "corrupt (rank R's trainer killed, then a byte of its newest\n"
     "committed snapshot flipped as the restore begins; answered then).\n"
     "'ptctl fault classes' lists them, and the ones this build cannot\n"
     "inject yet (node, group, protecting, rebuilding, parity: they need\n"
     "node-loss recovery).\n"
     "\n"
     "inject: one fault; --rank is a global rank (default: 0), --node the\n"
     "node (default: the one running the rank). Prints what was done.\n"
     "\n"
     "campaign: N seeded injections (the same seed, the same choices; the\n"
     "first picks cover every class once), each once the job runs with a\n"
     "committed step; after each the job must restart from a committed\n"
     "step and commit a newer one within --timeout-s (default 60). ptd and\n"
     "controller need a supervisor to restart them, or --restart-node /\n"
     "--restart-controller CMD (run with /bin/sh -c; PT_FAULT_NODE and\n"
     "PT_FAULT_PID set; a daemon it starts must not keep ptctl's output\n"
     "open). --wait-done S: then the job must complete within S s. Ends\n"
     "with a table: CLASS, INJECTIONS, RESUMED, STEPS REDONE (committed\n"
     "before the fault minus the step restored, summed), RECOVERY P50 S\n"
     "and MAX S (fault to the next committed step).\n"
     "\n"
     "exit status: 0 every injection resumed; 1 one did not within the\n"
     "deadline, the job failed, lost its state or restored a damaged step,\n"
     "or an injection was refused; 2 usage; 3 the controller cannot be\n"
     "reached\n" CTL_TEXT},
};

bool ptctl_help_cmd(FILE *f, const char *cmd)
{
  for (size_t i = 0; i < sizeof(HELP) / sizeof(HELP[0]); i++)
    if (strcmp(HELP[i].cmd, cmd) == 0) {
      fputs(HELP[i].text, f);
      return true;
    }
  return false;
}
