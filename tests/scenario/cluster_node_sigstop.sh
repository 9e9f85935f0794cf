#!/usr/bin/env bash
# A node SIGSTOPped past the controller's dead deadline, then continued: the
# controller declares it dead and halts the job's other parts; when the
# node is back (a reconnect) its ranks of the old epoch are stale (they
# end when their all-reduce peers went, or the controller's newer epoch
# stops them): every one of them has exited before the node starts its part
# of the new epoch, and the job goes on in that epoch to its end, every
# rank's digest equal to a fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.ns.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=150
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50 --step-delay-ms 20)
t_reference 4 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10

c_ptctl start --job ns --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  --node-wait-ms 20000 -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(c_job_field ns committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ns committed nothing by step 10"
  sleep 0.1
done
stale=$(c_node_pids b trainer)
[ -n "$stale" ] || c_fail "node b shows no trainers"
kill -STOP "${C_NODE_PID[b]}"
say "node b's ptd stopped after commit $c (trainers $stale)"
c_wait_node_state b dead 10
kill -CONT "${C_NODE_PID[b]}"
say "node b declared dead, continued"
deadline=$(( $(date +%s) + 30 ))
until e=$(c_job_field ns epoch) && [ "${e:-1}" -ge 2 ] && grep -q "part of epoch $e\|epoch $e: starting part" "$T_DIR/node.b.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node b did not start a newer epoch: $(tail -n 20 "$T_DIR/node.b.log")"
  sleep 0.1
done
# The stale trainers were stopped before that epoch's part started: the
# part's "starting" line comes after every old trainer's exit line.
python3 - "$T_DIR/node.b.log" "$e" $stale <<'PY' || c_fail "a stale trainer outlived the new epoch's start"
import re, sys
log, epoch, pids = sys.argv[1], sys.argv[2], sys.argv[3:]
lines = open(log, errors="replace").read().splitlines()
start = next(i for i, l in enumerate(lines) if re.search(rf"epoch {epoch}: starting part", l))
for p in pids:
    ex = [i for i, l in enumerate(lines) if re.search(rf"trainer rank \d+ \(local \d+ on node [^)]+\) \(pid {p}\) (exited|killed)", l)]
    assert ex and ex[0] < start, f"trainer {p}: exit line {ex[:1]}, epoch {epoch} started at line {start}"
PY
for p in $stale; do kill -0 "$p" 2>/dev/null && c_fail "stale trainer $p still runs"; done
say "node b stopped its stale ranks ($stale) before epoch $e started"
deadline=$(( $(date +%s) + 90 ))
until s=$(c_job_field ns state) && [ "$s" = done ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ns is '$s', not done, after 90 s"
  sleep 0.2
done
t_check_digests 4
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -n "$r" ] && [ "$r" -ge "$c" ] || c_fail "node $id restored step '$r', older than step $c committed before the stop"
done
say "ok: job done in epoch $(c_job_field ns epoch), digests equal the fault-free run"
