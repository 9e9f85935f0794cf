#!/usr/bin/env bash
# kill -9 of a node's ptd during a cluster job: a controller and two
# cluster-mode nodes, a job of 2 x 2 ranks of pt-train; once steps are
# committed, node b's ptd is killed with SIGKILL and started again. Its
# trainers and SMPs kept running meanwhile; the new ptd takes its part up
# from part.state, re-adopts them (the same trainer pids), registers
# again (a new incarnation) and reports the part running. The job ends
# with every rank's digest equal to a fault-free run, and no restore (if
# the controller chose one) older than the step committed before the kill.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.kn.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=100
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 10 --step-delay-ms 25)
t_reference 4 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 5000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10

c_ptctl start --job kn --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(c_job_field kn committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job kn committed nothing by step 10"
  sleep 0.1
done
before=$(c_node_pids b trainer)
[ -n "$before" ] || c_fail "node b shows no trainers"
c_node_kill b KILL
for p in $before; do kill -0 "$p" 2>/dev/null || c_fail "trainer $p died with its node's ptd"; done
say "node b's ptd killed after commit $c; its trainers ($before) run on"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state b alive 10
grep -q "taking it up again" "$T_DIR/node.b.log" || c_fail "node b did not take its part up: $(tail -n 20 "$T_DIR/node.b.log")"
deadline=$(( $(date +%s) + 10 ))
until grep -Eq "adopted trainer rank [0-9]+ \(local 1 on node b\)" "$T_DIR/node.b.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node b did not re-adopt its trainers: $(tail -n 20 "$T_DIR/node.b.log")"
  sleep 0.1
done
say "node b back: re-adopted $(grep -c 'adopted trainer rank' "$T_DIR/node.b.log") trainers"

deadline=$(( $(date +%s) + 90 ))
until s=$(c_job_field kn state) && [ "$s" = done ]; do
  [ "$(date +%s)" -lt "$deadline" ] || {
    tail -n 30 "$T_DIR/node.b.log" | sed 's/^/node b: /'
    c_fail "job kn is '$s', not done, after 90 s"
  }
  sleep 0.2
done
t_check_digests 4
epoch=$(c_job_field kn epoch)
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -z "$r" ] || [ "$r" -ge "$c" ] || c_fail "node $id restored step $r, older than step $c committed before the kill"
done
say "ok: job done in epoch $epoch, digests equal the fault-free run"
