#!/usr/bin/env bash
# kill -9 of the controller during a cluster job, then started again on its
# port: meanwhile the nodes' trainers keep running and snapshotting and
# nothing is committed; the nodes reconnect by themselves, report their
# parts, the controller (from its journal) carries the job on with the
# same trainers (its JOB_ASSIGN of the same epoch changes nothing), and it ends
# with every rank's digest equal to a fault-free run and its last step
# committed.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.kc.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
# Long enough to go on well after the controller is back: 300 x 60 ms. At
# 20 ms a step (6 s) the job ended on a loaded 2-core machine (load 5)
# before the test had seen the nodes register again and read the trainer
# pids (each poll of ptctl + python3 takes up to a second there).
STEPS=300
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50)
t_reference 4 "${ARGS[@]}" # the delay only sleeps: not in the digests
ARGS+=(--step-delay-ms 60)

c_ctl_start --heartbeat-ms 200 --dead-after-ms 5000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10

node_committed() { # the committed step node $1 shows
  "$PTCTL" --state-dir "$T_DIR/node.$1" status --json 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin).get("committed_step")
print("" if v is None else v)'
}

c_ptctl start --job kc --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(c_job_field kc committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job kc committed nothing by step 10"
  sleep 0.1
done
before="$(c_node_pids a trainer) $(c_node_pids b trainer)"
kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
say "controller killed after commit $c"
# Away: nothing is committed, the trainers go on.
a1=$(node_committed a)
sleep 1
a2=$(node_committed a)
[ "$a1" = "$a2" ] || c_fail "node a committed $a1 -> $a2 without a controller"
grep -q "connection lost" "$T_DIR/node.a.log" || c_fail "node a did not notice the controller go"
C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 5000
c_wait_node_state a alive 15
c_wait_node_state b alive 15
say "controller restarted: both nodes registered again"
# Its JOB_ASSIGN of the same epoch changed nothing: the same trainers.
deadline=$(( $(date +%s) + 10 ))
until c2=$(c_job_field kc committed_step) && [ -n "$c2" ] && [ "$c2" -gt "$c" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "nothing committed after the controller came back (still $c2)"
  sleep 0.1
done
after="$(c_node_pids a trainer) $(c_node_pids b trainer)"
[ "$after" = "$before" ] || c_fail "trainers were respawned: $before -> $after"
say "commits go on (step $c2) with the same trainers ($after)"
deadline=$(( $(date +%s) + 90 ))
until s=$(c_job_field kc state) && [ "$s" = done ]; do
  [ "$(date +%s)" -lt "$deadline" ] || {
    tail -n 30 "$T_DIR/node.a.log" | sed 's/^/node a: /'
    c_fail "job kc is '$s', not done, after 90 s"
  }
  sleep 0.2
done
t_check_digests 4
final=$(c_job_field kc committed_step)
[ "$final" = "$STEPS" ] || c_fail "committed step $final at the end, not $STEPS (before the kill: $c)"
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -z "$r" ] || [ "$r" -ge "$c" ] || c_fail "node $id restored step $r, older than step $c committed before the kill"
done
say "ok: job done (epoch $(c_job_field kc epoch), committed $final), digests equal the fault-free run"
