#!/usr/bin/env bash
# kill -9 of a trainer at random moments, several of them in the middle of a
# copy (the state is large against the step, so the copy thread is busy most
# of the time). Every time ptd node stops all ranks and restarts them from the
# newest committed step; the run must end bit-for-bit as the fault-free one,
# redoing no more steps than were uncommitted.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=3 KILLS=${KILLS:-6}
ARGS=(--steps 120 --state-mb 16 --batch 2 --log-every 1 --step-delay-ms 15)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 --max-restarts 20 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30

RANDOM=$$
for ((i = 1; i <= KILLS; i++)); do
  sleep "0.$((RANDOM % 6 + 2))"
  r=$((RANDOM % RANKS))
  pid=$(t_pid "$T_DIR/sd" $r trainer)
  if [ -z "$pid" ] || [ "$pid" = 0 ]; then sleep 0.3; continue; fi
  kill -KILL "$pid" 2>/dev/null && say "kill -9 trainer rank $r (pid $pid)"
  t_wait_log "restore from step|no snapshot: starting fresh" 30
done
t_node_wait 180
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
restarts=$(grep -c 'restarting job' "$T_DIR/node.log")
[ "$restarts" -ge 5 ] || fail "only $restarts restarts happened; expected at least 5"
t_check_digests $RANKS
t_check_redone
say "ok: $restarts restarts"
