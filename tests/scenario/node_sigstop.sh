#!/usr/bin/env bash
# SIGSTOP of ptd node itself for longer than its SMP request deadlines, then
# SIGCONT: the SMPs answered meanwhile, their answers wait in the node's
# sockets; the node must read them before it judges its deadlines, so no SMP
# is killed (no smp restart in ptctl status) and the job ends as the
# fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 400 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 --smp-timeout 3 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
# A request must be in flight when the node stops: hold SMP rank 0 still
# until a liveness probe (one a second) waits on it, stop the node, let the
# SMP answer, and resume the node after the probe's deadline passed.
smp=$(t_pid "$T_DIR/sd" 0 smp)
[ -n "$smp" ] && [ "$smp" != 0 ] || fail "no smp pid for rank 0"
kill -STOP "$smp"
sleep 1.5
kill -STOP "$T_NODE_PID"; say "SIGSTOP ptd node (pid $T_NODE_PID), a probe waiting on smp rank 0"
kill -CONT "$smp"
sleep 4
kill -CONT "$T_NODE_PID"; say "SIGCONT ptd node"
sleep 1
"$PTCTL" --state-dir "$T_DIR/sd" status --json >"$T_DIR/status.json" \
  || fail "ptctl status failed (the job must still run here)"
smp_restarts=$(python3 -c '
import json, sys
print(sum(r["smp_restarts"] for r in json.load(open(sys.argv[1]))["ranks"]))' "$T_DIR/status.json")
[ "$smp_restarts" = 0 ] || fail "$smp_restarts smp restarts after the node was resumed"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
! grep -q 'in time; killing it' "$T_DIR/node.log" || fail "the resumed node killed an smp"
t_check_digests $RANKS
say "ok: no smp was killed after the node was resumed"
