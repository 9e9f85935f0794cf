#!/usr/bin/env bash
# pt.torch under the controller: a controller and two cluster-mode nodes,
# `ptctl start` of a 2 x 1 job of tests/python/torch_trainer.py (a
# transformer LM with AdamW, DDP over gloo across the nodes, the trainers
# given RANK, WORLD_SIZE, MASTER_ADDR and MASTER_PORT by their nodes); once
# steps are committed, node b's trainer is killed with -9: the job restarts
# in a new epoch from the committed step and ends with both ranks' digests
# equal to the same program run without ptd.
# test-timeout: 1500
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"
. "$(dirname "$0")/../python/venv.sh"

trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.pyc.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB PT_SMP_SOCKET
PY=$VENV/bin/python
TRAINER=$ROOT/tests/python/torch_trainer.py
STEPS=50

# the reference: the same two ranks without ptd
for r in 0 1; do
  RANK=$r WORLD_SIZE=2 MASTER_ADDR=127.0.0.1 MASTER_PORT=$((T_PORT + 1)) \
    "$PY" "$TRAINER" --steps $STEPS --out "$T_DIR/ref" >"$T_DIR/ref.$r.log" 2>&1 &
done
wait || true
for r in 0 1; do [ -s "$T_DIR/ref.$r" ] || fail "reference rank $r: $(tail -n 5 "$T_DIR/ref.$r.log")"; done

c_ctl_start --heartbeat-ms 200 --dead-after-ms 5000
c_node_start a --capacity 1 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 1 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10
c_ptctl start --job pyc --nodes 2 --ranks-per-node 1 --master-port "$T_PORT" \
  -- "$PY" "$TRAINER" --steps $STEPS --out "$T_DIR/out" --step-delay-ms 40 \
  >"$T_DIR/start.out" 2>&1 || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 120 ))
until c=$(c_job_field pyc committed_step) && [ -n "$c" ] && [ "$c" -ge 8 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job pyc committed nothing by step 8"
  sleep 0.1
done
victim=$(c_node_pids b trainer)
[ -n "$victim" ] || c_fail "node b shows no trainer"
kill -9 $victim
say "node b's trainer (pid $victim) killed with -9 after commit $c"
deadline=$(( $(date +%s) + 240 ))
until s=$(c_job_field pyc state) && [ "$s" = done ]; do
  [ "$(date +%s)" -lt "$deadline" ] || {
    tail -n 30 "$T_DIR/node.b.log" | sed 's/^/node b: /'
    c_fail "job pyc is '$s', not done"
  }
  sleep 0.2
done
epoch=$(c_job_field pyc epoch)
[ "$epoch" -ge 2 ] || c_fail "job pyc ended in epoch $epoch: the kill did not restart it"
grep -Eq "rank [01]: restored step" "$T_DIR/node.b.log" \
  || c_fail "node b's rank restored nothing: $(grep -E 'rank [01]:' "$T_DIR/node.b.log")"
for r in 0 1; do
  cmp -s "$T_DIR/ref.$r" "$T_DIR/out.$r" || c_fail "rank $r: the digest differs from the run without ptd"
done
say "ok: $(grep -h 'restored step' "$T_DIR"/node.*.log | tr '\n' ' ')in epoch $epoch; digests equal the run without ptd"
