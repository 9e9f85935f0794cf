#!/usr/bin/env bash
# kill -9 of an SMP during a cluster job (on node a): the node
# does not respawn it on its own; it stops its part's ranks and reports the
# part failed naming the rank, the controller restarts the whole job in a
# new epoch from the committed step, and the job ends with every rank's
# digest equal to a fault-free run, no restore older than the step
# committed before the kill.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.ks.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=120
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50 --step-delay-ms 20)
t_reference 4 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10


c_ptctl start --job ks --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  --backoff-ms 100 -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(c_job_field ks committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ks committed nothing by step 10"
  sleep 0.1
done
node=a
smp=$("$PTCTL" --state-dir "$T_DIR/node.$node" status --json | python3 -c '
import json, sys
print(json.load(sys.stdin)["ranks"][1]["smp_pid"])')
[ -n "$smp" ] && [ "$smp" -gt 0 ] || c_fail "no smp pid on node $node"
kill -KILL "$smp"
say "killed smp pid $smp (local rank 1) on node $node after commit $c"
deadline=$(( $(date +%s) + 20 ))
until grep -q "part failed" "$T_DIR/node.$node.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node $node did not report its part failed"
  sleep 0.1
done
grep -Eq "restarting smp rank [0-9]+ \(local 1 on node $node\)" "$T_DIR/node.$node.log" && c_fail "node $node respawned the smp by itself"
grep -Eq "job part failed \(the controller decides what follows\): smp rank [0-9]+ \(local 1 on node $node\) \(pid $smp\) killed by signal SIGKILL" "$T_DIR/node.$node.log" \
  || c_fail "node $node's failure does not name the smp: $(grep 'job part failed' "$T_DIR/node.$node.log")"
deadline=$(( $(date +%s) + 30 ))
until e=$(c_job_field ks epoch) && [ "${e:-1}" -ge 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ks did not move to a new epoch"
  sleep 0.1
done
deadline=$(( $(date +%s) + 90 ))
until s=$(c_job_field ks state) && [ "$s" = done ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ks is '$s', not done, after 90 s"
  sleep 0.2
done
t_check_digests 4
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -n "$r" ] && [ "$r" -ge "$c" ] || c_fail "node $id restored step '$r', older than step $c committed before the kill"
done
say "ok: job done in epoch $(c_job_field ks epoch), digests equal the fault-free run"
