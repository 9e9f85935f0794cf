#!/usr/bin/env bash
# kill -9 of an SMP in the middle of the run: ptd node restarts it, the trainer
# reconnects (the interrupted snapshot is lost, training goes on), and then a
# trainer crash restores from what the restarted SMP re-validated.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 100 --state-mb 8 --batch 4 --log-every 1 --step-delay-ms 15)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
sleep 0.3
pid=$(t_pid "$T_DIR/sd" 1 smp)
[ -n "$pid" ] && [ "$pid" != 0 ] || fail "no smp pid for rank 1"
kill -KILL "$pid"; say "kill -9 smp rank 1 (pid $pid)"
t_wait_log "smp rank 1 \(pid $pid\) (exited|killed)" 20
# the restarted SMP must take part in commits again
n=$(grep -c 'commit step' "$T_DIR/node.log")
t_wait_log "commit step" 5
deadline=$(( $(date +%s) + 20 ))
until [ "$(grep -c 'commit step' "$T_DIR/node.log")" -gt $((n + 3)) ]; do
  [ "$(date +%s)" -lt $deadline ] || fail "no commits after the smp restart"
  sleep 0.1
done
# and a trainer crash afterwards restores from the restarted SMP's slot
tp=$(t_pid "$T_DIR/sd" 1 trainer)
kill -KILL "$tp"; say "kill -9 trainer rank 1 (pid $tp)"
t_wait_log "restore from step" 30
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
t_check_redone
