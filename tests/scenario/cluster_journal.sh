#!/usr/bin/env bash
# The controller's journal damaged while a real job runs across two nodes
# (tests/ctl_journal.py reads and damages STATE_DIR/journal):
#
#   1. a torn last record: kill -9 of the controller mid-job, a few bytes
#      cut off the journal's last record (a COMMIT), the controller started
#      again on its state dir and port: it drops the torn record with a
#      warning and rebuilds the job at the newest whole COMMIT, no newer
#      (the torn one is not taken) and no older (nothing whole is lost),
#      and that step is one every rank held; the nodes reconnect and the
#      job carries on in the same epoch with the same trainers;
#   2. a flipped bit in the middle of the journal, in a record's payload and
#      then in its length field (a length that runs past the end must not
#      pass for a torn tail): the controller refuses to start, exit 2, with
#      a line naming the journal and the damaged record's offset, and
#      leaves the file as it was; the operator puts the journal back, the
#      controller starts, the nodes reconnect, and the job runs to its end.
#
# The job never restarts (epoch 1), its last step is committed, and every
# rank's digest equals a fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
command -v python3 >/dev/null || skip "no python3"
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.kj.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB PT_FAULT
JT=$(dirname "$0")/../ctl_journal.py
# 500 x 60 ms: still running after both outages. At 25 ms a step (12.5 s)
# the job ended before the journal was put back on a loaded 2-core machine
# (load 6: every poll of ptctl + python3 takes up to a second, and there
# are dozens between the start and that check).
STEPS=500
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 100)
t_reference 4 "${ARGS[@]}" --step-delay-ms 0 # the delay only sleeps
ARGS+=(--step-delay-ms 60)
J=$C_CTL_DIR/journal
CTL_OPTS=(--heartbeat-ms 200 --dead-after-ms 5000)

held_min() { # the oldest of the newest steps the ranks of nodes a and b hold
  for id in a b; do "$PTCTL" --state-dir "$T_DIR/node.$id" status --json 2>/dev/null; echo; done | python3 -c '
import json, sys
steps = [r.get("last_sealed") for l in sys.stdin if l.strip() for r in json.loads(l)["ranks"]]
print(min(s for s in steps if s is not None) if steps and None not in steps else "")'
}
ctl_kill9() {
  kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
}
ctl_again() { # the controller started again on its state dir and port
  cp "$C_CTL_LOG" "$C_CTL_LOG.$1"
  C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start "${CTL_OPTS[@]}"
  c_wait_node_state a alive 15
  c_wait_node_state b alive 15
}
replayed() { # the committed step the controller rebuilt job kj at
  sed -n "s/.*job 'kj' epoch 1 rebuilt from the journal (committed step \([0-9]*\)).*/\1/p" "$C_CTL_LOG" | head -n 1
}

c_ctl_start "${CTL_OPTS[@]}"
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_wait_node_state b alive 10
c_ptctl start --job kj --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"

# 1. a torn last record
c=$(c_wait_committed kj 20 40)
trainers="$(c_node_pids a trainer) $(c_node_pids b trainer)"
ctl_kill9
held=$(held_min)
python3 "$JT" tear "$J" 3 >"$T_DIR/tear.out" || c_fail "cannot tear the journal: $(cat "$T_DIR/tear.out")"
read -r _ _ torn_type torn_step < <(grep '^torn ' "$T_DIR/tear.out")
last=$(sed -n 's/^last_commit //p' "$T_DIR/tear.out")
[ "$torn_type" = COMMIT ] && [ "$last" != - ] || c_fail "the journal's last record: $(cat "$T_DIR/tear.out")"
say "controller killed (-9) at committed step >= $c; torn: the COMMIT of step $torn_step; newest whole COMMIT: step $last; the ranks held up to step $held at least"
ctl_again torn
grep -q "journal '$J': dropped a torn last record (" "$C_CTL_LOG" || c_fail "no warning for the torn record"
x=$(replayed)
[ "$x" = "$last" ] || c_fail "rebuilt at committed step '$x', not $last, the newest whole COMMIT (the torn one: $torn_step)"
[ -n "$held" ] && [ "$x" -le "$held" ] || c_fail "committed step $x after restart, newer than step $held that every rank held (invented)"
c2=$(c_wait_committed kj $((torn_step + 10)) 30)
[ "$(c_job_field kj epoch)" = 1 ] || c_fail "job kj left epoch 1 after the torn record: $(c_job_field kj epoch)"
now="$(c_node_pids a trainer) $(c_node_pids b trainer)"
[ "$now" = "$trainers" ] || c_fail "trainers were respawned: $trainers -> $now"
say "torn record dropped: rebuilt at step $x (<= $held held everywhere); nodes back, commits go on (step $c2), same epoch and trainers"

# 2. a flipped bit in the middle, in a payload and in a length
ctl_kill9
cp -p "$J" "$T_DIR/journal.good"
good_last=$(python3 "$JT" records "$J" | awk '$4 == "COMMIT" { s = $7 } END { print s }')
for where in payload length; do
  python3 "$JT" flip "$J" $where >"$T_DIR/flip.$where" || c_fail "cannot flip: $(cat "$T_DIR/flip.$where")"
  read -r _ rec off _ <"$T_DIR/flip.$where"
  cp -p "$J" "$T_DIR/journal.bad"
  # (a controller that takes the journal would serve: the timeout ends it)
  timeout -k 2 10 "$PTD" controller --listen 127.0.0.1:0 --state-dir "$C_CTL_DIR" --key "$C_KEY" \
    >"$T_DIR/bad.$where.log" 2>&1
  rc=$?
  [ "$rc" = 2 ] || c_fail "controller with a flipped bit in record $rec's $where: exit $rc, expected 2: $(cat "$T_DIR/bad.$where.log")"
  grep -q "journal '$J': record $rec at offset $off is damaged (.*refusing to start" "$T_DIR/bad.$where.log" \
    || c_fail "no line naming record $rec at offset $off: $(cat "$T_DIR/bad.$where.log")"
  cmp -s "$J" "$T_DIR/journal.bad" || c_fail "the refused journal was changed"
  say "flipped bit in record $rec's $where: refused, exit 2: $(grep -o "record $rec at offset $off is damaged ([^)]*)" "$T_DIR/bad.$where.log")"
  cp -p "$T_DIR/journal.good" "$J" # the operator puts it back
done
ctl_again restored
y=$(replayed)
[ "$y" = "$good_last" ] || c_fail "rebuilt at committed step '$y', not $good_last, the journal's newest COMMIT"
c3=$(c_wait_committed kj $((y + 10)) 30)
[ "$(c_job_field kj state)" = running ] || c_fail "job kj is '$(c_job_field kj state)', not running, after the journal was put back"
say "journal put back: rebuilt at step $y, commits go on (step $c3)"

c_wait_job_state kj done 90
t_check_digests 4
final=$(c_job_field kj committed_step)
[ "$final" = "$STEPS" ] || c_fail "committed step $final at the end, not $STEPS"
[ "$(c_job_field kj epoch)" = 1 ] || c_fail "job kj left epoch 1: $(c_job_field kj epoch)"
[ "$(c_job_field kj restarts)" = 0 ] || c_fail "job kj restarted $(c_job_field kj restarts) times"
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -z "$r" ] || c_fail "node $id restored step $r: no rank should have restarted"
done
say "ok: job done (epoch 1, committed $final, no restart), digests equal the fault-free run"
