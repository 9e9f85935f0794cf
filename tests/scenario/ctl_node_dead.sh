#!/usr/bin/env bash
# A node of a running job declared dead by the controller:
#
#   1. node b SIGSTOPped past the dead deadline: the job halts its other
#      part and waits; b continued within the job's node wait: its stale
#      ranks are stopped, the job goes on in a new epoch from its committed
#      step, and every rank's digest equals a fault-free run;
#   2. node b killed (-9) and not back: after the job's node wait the job
#      fails, and the reason names node b;
#   3. ptctl restore of the failed job is refused while b is away (naming
#      it); b started again, the restore brings the job back in a new epoch
#      from its committed step (every rank's snapshots were kept), and it
#      completes with every rank's digest equal to a fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

trap 'c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.nd[12].* 2>/dev/null; t_cleanup' EXIT
"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
"$PTD" node --help 2>&1 | grep -q -- --controller || skip "this build's ptd node has no cluster mode"
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB PT_FAULT
STEPS=200
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50 --step-delay-ms 20)
t_reference 4 "${ARGS[@]}"



c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10

start_job() { # start_job NAME NODE_WAIT_MS
  rm -f "$T_DIR"/out.*
  c_ptctl start --job "$1" --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
    --node-wait-ms "$2" -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" \
    >"$T_DIR/start.$1" 2>&1 || c_fail "ptctl start failed: $(cat "$T_DIR/start.$1")"
  c_wait_job_state "$1" running 30
  local deadline=$(( $(date +%s) + 30 )) c
  until c=$(c_job_field "$1" committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "job '$1' committed nothing by step 10"
    sleep 0.1
  done
}

# 1. SIGSTOP past the dead deadline, then SIGCONT
start_job nd1 20000
kill -STOP "${C_NODE_PID[b]}"
say "node b stopped at committed step $(c_job_field nd1 committed_step)"
c_wait_node_state b dead 10
c_wait_job_state nd1 waiting 5
reason=$(c_job_field nd1 reason)
case $reason in *"node 'b' is dead"*) ;; *) c_fail "waiting job's reason: '$reason'" ;; esac
sleep 0.5
kill -CONT "${C_NODE_PID[b]}"
c_wait_node_state b alive 15
deadline=$(( $(date +%s) + 20 ))
until e=$(c_job_field nd1 epoch) && [ "${e:-1}" -ge 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job nd1 did not restart in a new epoch after node b came back"
  sleep 0.1
done
c_wait_job_state nd1 done 120
t_check_digests 4
say "node b dead and back: the job went on in epoch $(c_job_field nd1 epoch), digests equal"

# 2. killed and never back: the job fails, naming the node
start_job nd2 3000
c_node_kill b KILL
c_wait_job_state nd2 waiting 10
c_wait_job_state nd2 failed 15
reason=$(c_job_field nd2 reason)
case $reason in
  *"node 'b' did not come back within 3000 ms"*) ;;
  *) c_fail "failed job's reason: '$reason'" ;;
esac
say "node b killed and not back: job failed: $reason"

# 3. the failed job restored once b is back
e_failed=$(c_job_field nd2 epoch)
c_committed=$(c_job_field nd2 committed_step)
[ -n "$c_committed" ] || c_fail "failed job nd2 has no committed step"
out=$(c_ptctl restore nd2 2>&1) && c_fail "restore of nd2 with node b away succeeded: $out"
case $out in
  *"node 'b'"*dead*|*"node 'b'"*disconnected*) ;;
  *) c_fail "refusal of the restore with node b away: '$out'" ;;
esac
case $out in *"already in progress"*) c_fail "refusal says EALREADY: '$out'" ;; esac
say "refused with node b away: $out"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state b alive 15
out=$(c_ptctl restore nd2 2>&1) || c_fail "ptctl restore nd2 failed: $out"
case $out in
  *"restoring step $c_committed in epoch"*) ;;
  *) c_fail "ptctl restore nd2 said '$out' (committed step $c_committed)" ;;
esac
e=$(c_job_field nd2 epoch)
[ "${e:-0}" -gt "$e_failed" ] || c_fail "restored job nd2 in epoch '$e', it failed in $e_failed"
c_wait_job_state nd2 done 120
t_check_digests 4
# restored, not started fresh: both nodes restored the committed step
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ "$r" = "$c_committed" ] || c_fail "node $id restored step '$r', not the committed step $c_committed"
done
say "failed job nd2 restored ($out), done in epoch $(c_job_field nd2 epoch), digests equal"
say "ok"
