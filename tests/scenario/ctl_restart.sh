#!/usr/bin/env bash
# The controller killed and started again while a job runs across two
# nodes, and its journal damaged:
#
#   1. kill -9 of the controller in the middle of a job, started again on
#      its state directory and port: the nodes reconnect, the job carries on
#      in the same epoch from where it was (its committed step never goes
#      back), runs to its end, and every rank's digest equals a fault-free
#      run;
#   1b. ptctl restore: a new epoch from the newest committed step, equal
#      digests; a step no longer held everywhere refused;
#   2. the fault point PT_FAULT=ctl_after_commit_journal: the controller
#      exits (9) right after journaling a commit and before telling any
#      node; started again, it tells the nodes that step (no committed step
#      lost or invented) and the job ends with equal digests;
#   3. the journal with a torn last record: dropped with one warning, the
#      controller starts; with a flipped byte in the middle: exit 2, the
#      message naming the journal and the offset.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

trap 'c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.cr[123].* 2>/dev/null; t_cleanup' EXIT
"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
"$PTD" node --help 2>&1 | grep -q -- --controller || skip "this build's ptd node has no cluster mode"
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB PT_FAULT
# 150 x 60 ms: each job must still run when the controller is killed (and
# be running after it is back). At 20 ms a step (3 s) a loaded 2-core
# machine (load 6) let the job end first: the test's poll of ptctl +
# python3 lags the controller by seconds there (it saw step 75 while the
# controller had committed 150), or the job ended while the controller
# was away, its last steps never committed.
STEPS=150
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50)
t_reference 4 "${ARGS[@]}" # the delay only sleeps: not in the digests
ARGS+=(--step-delay-ms 60)

ctl_again() { # the controller started again on its state dir and port
  cp "$C_CTL_LOG" "$C_CTL_LOG.$1"
  C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
}

start_job() { # start_job NAME [nowait]
  rm -f "$T_DIR"/out.*
  c_ptctl start --job "$1" --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
    -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.$1" 2>&1 \
    || c_fail "ptctl start failed: $(cat "$T_DIR/start.$1")"
  [ "${2:-}" = nowait ] || c_wait_job_state "$1" running 30
}

c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10

# 1. kill -9 mid-job
start_job cr1
before=$(c_wait_committed cr1 20 30)
epoch=$(c_job_field cr1 epoch)
kill -KILL "$C_CTL_PID"
wait "$C_CTL_PID" 2>/dev/null
C_CTL_PID=
say "controller killed (-9) at committed step $before, epoch $epoch"
sleep 0.5
ctl_again kill9
c_ctl_wait_log "job 'cr1' epoch $epoch rebuilt from the journal \(committed step [0-9]+" 5
replayed=$(sed -n "s/.*job 'cr1' epoch $epoch rebuilt from the journal (committed step \([0-9]*\)).*/\1/p" "$C_CTL_LOG" | head -n 1)
[ -n "$replayed" ] && [ "$replayed" -ge "$before" ] \
  || c_fail "replayed committed step '$replayed' is older than $before, seen before the kill"
c_wait_job_state cr1 done 90
t_check_digests 4
[ "$(c_job_field cr1 epoch)" = "$epoch" ] || c_fail "job cr1 changed epoch across the controller's restart: $(c_job_field cr1 epoch)"
[ "$(c_job_field cr1 committed_step)" = "$STEPS" ] || c_fail "job cr1 ended at committed step $(c_job_field cr1 committed_step)"
say "killed controller: replayed step $replayed (>= $before), same epoch, job done, digests equal"

# 1b. ptctl restore: every rank again from the newest committed step, in a
# new epoch; a step no longer held everywhere is refused
start_job cr3
before=$(c_wait_committed cr3 20 30)
c_ptctl restore cr3 >"$T_DIR/restore.out" 2>&1 || c_fail "ptctl restore failed: $(cat "$T_DIR/restore.out")"
[ "$(c_job_field cr3 epoch)" = 2 ] || c_fail "job cr3 not in epoch 2 after restore: $(c_job_field cr3 epoch)"
c_ptctl restore cr3 --step 1 >"$T_DIR/restore1.out" 2>&1 && c_fail "restore from step 1 accepted: $(cat "$T_DIR/restore1.out")"
grep -q "step 1 of job 'cr3' is no longer held" "$T_DIR/restore1.out" || c_fail "restore --step 1: $(cat "$T_DIR/restore1.out")"
c_wait_job_state cr3 done 90
t_check_digests 4
say "ptctl restore at committed step >= $before: epoch 2, job done, digests equal; an unheld step refused"

# 2. the fault point: exit between the journal and the broadcast
c_ctl_stop
export PT_FAULT=ctl_after_commit_journal
ctl_again stop1
unset PT_FAULT
c_wait_node_state a alive 15
c_wait_node_state b alive 15
start_job cr2 nowait # the first commit ends this controller
deadline=$(( $(date +%s) + 30 ))
while kill -0 "$C_CTL_PID" 2>/dev/null; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "the fault point did not fire within 30 s"
  sleep 0.05
done
wait "$C_CTL_PID"; rc=$?
C_CTL_PID=
[ "$rc" = 9 ] || c_fail "controller exit status $rc at the fault point, expected 9"
step=$(sed -n "s/.*fault point ctl_after_commit_journal: exiting after the COMMIT of step \([0-9]*\) of job 'cr2'.*/\1/p" "$C_CTL_LOG" | head -n 1)
[ -n "$step" ] || c_fail "no fault point line in the controller's log"
ctl_again fault
c_ctl_wait_log "job 'cr2' epoch 1 rebuilt from the journal \(committed step $step\)" 5
c_wait_job_state cr2 done 90
t_check_digests 4
c=$(c_job_field cr2 committed_step)
[ "$c" = "$STEPS" ] || c_fail "job cr2 ended at committed step $c"
say "fault point after the journal: step $step journaled, not sent; replayed and told; job done, digests equal"

# 3. the journal damaged
c_ctl_stop
[ "$C_CTL_RC" = 0 ] || c_fail "controller exit status $C_CTL_RC at SIGTERM"
J=$C_CTL_DIR/journal
size=$(stat -c %s "$J")
truncate -s $(( size - 2 )) "$J"
ctl_again torn
c_ctl_wait_log "dropped a torn last record" 5
c_ctl_stop
python3 - "$J" <<'EOF'
import sys
p = sys.argv[1]
b = bytearray(open(p, "rb").read())
b[len(b) // 2] ^= 0x10
open(p, "wb").write(bytes(b))
EOF
cp "$C_CTL_LOG" "$C_CTL_LOG.torn2"
: >"$C_CTL_LOG"
"$PTD" controller --listen 127.0.0.1:0 --state-dir "$C_CTL_DIR" --key "$C_KEY" >>"$C_CTL_LOG" 2>&1
rc=$?
[ "$rc" = 2 ] || c_fail "controller with a damaged journal: exit $rc, expected 2"
grep -q "journal '$J'.*offset.*refusing to start" "$C_CTL_LOG" \
  || c_fail "no line naming the journal and the offset: $(cat "$C_CTL_LOG")"
say "journal: torn last record dropped; a flipped byte refused (exit 2): $(grep -o "offset [0-9]*" "$C_CTL_LOG" | head -n 1)"
say "ok"
