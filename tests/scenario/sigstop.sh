#!/usr/bin/env bash
# SIGSTOP and SIGCONT of a trainer: nothing times out or restarts, snapshots
# resume, and the run ends as the fault-free one.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 80 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 10)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
pid=$(t_pid "$T_DIR/sd" 0 trainer)
kill -STOP "$pid"; say "SIGSTOP trainer rank 0 (pid $pid)"
sleep 2
kill -CONT "$pid"; say "SIGCONT"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
! grep -q 'restarting job' "$T_DIR/node.log" || fail "a stopped trainer caused a restart"
t_check_digests $RANKS
t_check_redone
