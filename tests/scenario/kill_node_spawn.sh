#!/usr/bin/env bash
# ptd node killed between spawning the trainers and recording them in
# node.state (a fault point): the trainers run on unrecorded. The next node
# finds them by their identity (PT_INSTANCE and PT_RANK of this job
# instance) and adopts them instead of starting a second trainer per rank
# that its SMP would refuse; the job ends as the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 80 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
export PT_NODE_TEST_FAULT=kill-after-spawn
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
unset PT_NODE_TEST_FAULT
t_node_wait 30
[ "$T_NODE_RC" = 137 ] || fail "the fault point did not kill ptd node (exit $T_NODE_RC)"
grep -q "started trainer rank 1" "$T_DIR/node.log" || fail "no trainer was started before the fault"
for r in 0 1; do
  grep -q "^trainer $r 0 " "$T_DIR/sd/node.state" || fail "node.state records trainer $r: the fault point is not between spawn and record"
done
say "ptd node killed after spawning its trainers, before recording them"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
for r in 0 1; do
  t_wait_log "adopted trainer rank $r \(pid [0-9]+, found by its identity\)" 20
done
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "the next ptd node exited with $T_NODE_RC"
n=$(grep -c "started trainer rank" "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected only the $RANKS trainers started before the fault, saw $n starts"
t_check_digests $RANKS
say "ok"
