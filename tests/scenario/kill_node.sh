#!/usr/bin/env bash
# kill -9 of ptd node itself: trainers and SMPs run on; a new ptd node started
# with the same state directory re-adopts them, commits again, handles a
# trainer crash after adoption, and the job ends as the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 120 --state-mb 8 --batch 4 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
sleep 0.4
old=$T_NODE_PID
kill -KILL "$old"; wait "$old" 2>/dev/null; T_NODE_PID=
say "kill -9 ptd node (pid $old)"
sleep 0.5
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_wait_log 'adopted' 20
n=$(grep -c 'commit step' "$T_DIR/node.log")
deadline=$(( $(date +%s) + 20 ))
until [ "$(grep -c 'commit step' "$T_DIR/node.log")" -gt $((n + 2)) ]; do
  [ "$(date +%s)" -lt $deadline ] || fail "no commits after re-adoption"
  sleep 0.1
done
tp=$(t_pid "$T_DIR/sd" 0 trainer)
[ -n "$tp" ] && [ "$tp" != 0 ] || fail "no trainer pid after adoption"
kill -KILL "$tp"; say "kill -9 adopted trainer rank 0 (pid $tp)"
t_wait_log "restore from step" 30
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "restarted ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
t_check_redone
