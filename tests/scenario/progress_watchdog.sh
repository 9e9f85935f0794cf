#!/usr/bin/env bash
# A rank alive but stuck (pt-train --hang-at-step: it sleeps instead of
# training, its peer waits in the all-reduce): with --progress-timeout the
# node notices that no snapshot was sealed within the timeout, logs it and
# restarts the job, which then ends as the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 80 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 10)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 --progress-timeout 2 -- \
  "${ARGS[@]}" --hang-at-step 30
t_wait_log 'hanging before step 30' 30
t_wait_log 'made no progress: no snapshot sealed for 2 s' 8
t_wait_log 'restarting job' 5
t_node_wait 90
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
t_check_redone
say "ok: the stuck rank was noticed and the job restarted and completed"
