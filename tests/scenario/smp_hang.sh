#!/usr/bin/env bash
# SIGSTOP of an SMP (hung, not dead): the node's liveness probe (--smp-timeout)
# notices that it stopped answering, kills it and starts a new one; the job
# goes on committing and ends as the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 150 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 --smp-timeout 2 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
pid=$(t_pid "$T_DIR/sd" 1 smp)
[ -n "$pid" ] && [ "$pid" != 0 ] || fail "no smp pid for rank 1"
kill -STOP "$pid"; say "SIGSTOP smp rank 1 (pid $pid)"
t_wait_log "smp rank 1 \(pid $pid\) did not answer .* in time; killing it" 6
t_wait_log "smp rank 1 \(pid $pid\) killed by signal SIGKILL" 10
say "the node killed the hung smp"
n=$(t_count_log 'commit step')
t_wait_count 'commit step' $((n + 3)) 30
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
say "ok: the hung smp was replaced and the job completed"
