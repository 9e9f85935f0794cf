#!/usr/bin/env bash
# The controller stopped (SIGSTOP) for twice its --dead-after-ms during a
# cluster job, then continued: it did not run meanwhile, so the nodes'
# silence is not held against them (it says so in its log), no node is
# declared dead, the job stays in its epoch with the same trainers, and it
# ends with every rank's digest equal to a fault-free run. (Before, the
# controller's membership timer ran first on waking, declared every node
# dead and restarted the job.)
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

trap 'kill -CONT "$C_CTL_PID" 2>/dev/null; c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.cs.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=250
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50 --step-delay-ms 20)
t_reference 4 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10
c_ptctl start --job cs --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(c_job_field cs committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job cs committed nothing by step 10"
  sleep 0.1
done
kill -STOP "$C_CTL_PID"
sleep 3
kill -CONT "$C_CTL_PID"
say "controller stopped for 3 s (dead after 1.5 s) after commit $c, and continued"
c_ctl_wait_log "the controller did not run for [0-9]+ ms" 5
deadline=$(( $(date +%s) + 10 ))
until c2=$(c_job_field cs committed_step) && [ -n "$c2" ] && [ "$c2" -gt "$c" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "nothing committed after the controller continued (still $c2)"
  sleep 0.1
done
! grep -q "alive -> dead" "$C_CTL_LOG" || c_fail "a node was declared dead: $(grep "alive -> dead" "$C_CTL_LOG")"
e=$(c_job_field cs epoch)
[ "$e" = 1 ] || c_fail "the job moved to epoch $e"
c_wait_job_state cs done 90
t_check_digests 4
[ "$(c_job_field cs epoch)" = 1 ] || c_fail "the job ended in epoch $(c_job_field cs epoch)"
say "ok: job done in epoch 1 (commits went on from $c), digests equal the fault-free run"
