#!/usr/bin/env bash
# Repair pipelining given way to piece-by-piece fetches: the loss of
# cluster_node_loss (3 cluster-mode nodes on loopback, 3 x 1 rank of
# pt-train, code 2+1; node b lost entirely and started again empty), with
# node a's SMPs started with PT_REPAIR_PIPELINE=0, so that they refuse to
# relay sums. Every stripe b rebuilds has a and c as its sources: b's first
# pipelined fetch is refused (by a itself, or by c, passing on a's
# refusal), b says so, fetches each survivor's pieces itself (about k = 2
# bytes received per byte rebuilt), and the job ends with every digest
# equal to a fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --code || skip "this build's ptctl has no --code"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB PT_REPAIR_PIPELINE
STEPS=100
ARGS=(--steps $STEPS --state-mb 2 --batch 2 --log-every 10)
t_reference 3 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000 --node-wait-ms 60000
PT_REPAIR_PIPELINE=0 c_node_start a --capacity 1 --shm-prefix "$T_PREFIX"
for id in b c; do c_node_start "$id" --capacity 1 --shm-prefix "$T_PREFIX"; done
for id in a b c; do c_wait_node_state "$id" alive 10; done

c_ptctl start --job nu --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
c_wait_committed nu 10 >/dev/null
c_lose_node b nu
c_wait_node_state b dead 20
c_node_start b --capacity 1 --shm-prefix "$T_PREFIX"
c_wait_node_state b alive 10
c_wait_job_state nu done 120
t_check_digests 3

log=$T_DIR/node.b.log
why=$(grep -m1 -E "rebuild of step [0-9]+: a pipelined fetch through member [0-9]+ \(node '[a-z]'\) failed: .*relays no sums \(PT_REPAIR_PIPELINE=0\).*; fetching each survivor's pieces instead" "$log") \
  || c_fail "b never gave up a refused pipelined fetch: $(grep -iE 'rebuil|pipelin' "$log" | tail -n 5)"
say "node b: ${why#*ptd smp *: }"
line=$(grep -E "step [0-9]+ rebuilt from members [0-9,]+: [0-9]+ bytes in [0-9]+ ms, [0-9]+ bytes received" "$log" | tail -n 1)
[ -n "$line" ] || c_fail "b never rebuilt its step: $(grep -iE 'rebuil' "$log" | tail -n 5)"
say "node b: ${line#*: }"
bytes=$(sed -n 's/.*: \([0-9]*\) bytes in.*/\1/p' <<<"$line")
recv=$(sed -n 's/.*ms, \([0-9]*\) bytes received.*/\1/p' <<<"$line")
# piece by piece after the refusal: about 2 bytes per byte (fewer when a
# sum came in before it)
awk -v r="$recv" -v b="$bytes" 'BEGIN { exit !(r >= 1.5 * b) }' \
  || c_fail "b received $recv bytes for $bytes rebuilt: it did not fetch piece by piece"
if grep -E 'fails its checksums|cannot rebuild' "$log"; then
  c_fail "the rebuild refused something it should not have"
fi
say "ok: a refused pipelined fetch gave way to piece-by-piece fetches; digests equal the fault-free run"
