#!/usr/bin/env bash
# A job across nodes: a controller and two cluster-mode ptd nodes on
# loopback, `ptctl start` of 2 nodes x 2 ranks of pt-train (one shm prefix
# for both nodes: the objects are named by the job's global ranks). The job
# runs to its end: every rank's final digest equals a fault-free run of
# pt-train with 4 ranks and no pt (its all-reduce spans both nodes), steps
# were committed across the nodes (the job's committed step is its last
# step), and the controller says the job is done. Then a second job whose
# trainer on node b (not rank 0's) is killed: the node reports its part
# failed, the controller restarts the job in a new epoch from the committed
# step, and the digests again equal the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

# The jobs' objects too (named by job, not by $T_JOB).
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.c[jk].* 2>/dev/null; t_cleanup' EXIT
# The job commands of ptctl and the controller come from their branches.
"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=120
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 10)
# Job ck must still be running when the test kills its trainer, after it
# has seen step 10 committed: three rounds of ptctl + python3 between the
# two, each about a second on a loaded 2-core machine (load 10+), which at
# 20 ms a step let the job finish first (the kill then hit an exited
# trainer, or node b had no ranks left to name one). At 100 ms a step the
# ~11 s from step 10 to the end leave room; the step delay does not enter
# the digests, so the fault-free reference stays the same.
CJ_ARGS=("${ARGS[@]}" --step-delay-ms 20)
CK_ARGS=("${ARGS[@]}" --step-delay-ms 100)
t_reference 4 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10



# 1. fault-free across the two nodes
c_ptctl start --job cj --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${CJ_ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
# It was running before done: said by the controller's log, since a poll
# of `ptctl status` on a loaded machine can miss the 2.4 s it runs.
c_wait_job_state cj done 90
grep -q "job 'cj' epoch 1 running on every node" "$C_CTL_LOG" || c_fail "job cj was never running"
t_check_digests 4
committed=$(c_job_field cj committed_step)
[ "$committed" = "$STEPS" ] || c_fail "job cj: committed step '$committed', expected $STEPS"
# The job ended: the controller halts its parts with remove, and the
# nodes delete its snapshot objects.
deadline=$(( $(date +%s) + 15 ))
while ls /dev/shm/"$T_PREFIX"pt.cj.* >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job cj done, its objects still in /dev/shm: $(ls /dev/shm/"$T_PREFIX"pt.cj.*)"
  sleep 0.1
done
say "job across 2 nodes done: committed step $committed, digests equal, objects removed"

# 2. a trainer killed on node b: the whole job restarts in a new epoch
rm -f "$T_DIR"/out.*
c_ptctl start --job ck --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  --backoff-ms 100 -- "$TRAIN" "${CK_ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start2.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start2.out")"
c_wait_job_state ck running 30
deadline=$(( $(date +%s) + 30 ))
until c=$(c_job_field ck committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ck committed nothing by step 10"
  sleep 0.1
done
victim=$("$PTCTL" --state-dir "$T_DIR/node.b" status --json | python3 -c '
import json, sys
r = json.load(sys.stdin)["ranks"]
print(r[1]["trainer_pid"] if len(r) > 1 else "")')
[ -n "$victim" ] && [ "$victim" -gt 0 ] \
  || c_fail "no trainer pid on node b (job ck: $(c_job_field ck state), committed step $(c_job_field ck committed_step))"
kill -KILL "$victim"
say "killed trainer pid $victim on node b after commit $c"
deadline=$(( $(date +%s) + 30 ))
until e=$(c_job_field ck epoch) && [ "${e:-1}" -ge 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job ck did not move to a new epoch"
  sleep 0.1
done
c_wait_job_state ck done 90
t_check_digests 4
# No restore redid more steps than were uncommitted: every node of epoch 2
# restored a step at least the one committed before the kill.
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -n "$r" ] && [ "$r" -ge "$c" ] \
    || c_fail "node $id restored step '${r}', older than step $c committed before the kill"
  restored="${restored:-}$id:$r "
done
# The SMPs of the second node serve global ranks 2 and 3: the node compares
# them with first_rank + its local rank, and warns of nothing.
! grep -E "reports rank|sent an event for rank" "$T_DIR"/node.*.log \
  || c_fail "a node mistook its SMPs' global ranks for a mismatch"
say "ok: restarted in epoch $e from steps ${restored}(committed before the kill: $c), digests equal the fault-free run"
