#!/usr/bin/env bash
# A process of the job's user that is not the node's trainer cannot become
# an SMP's trainer. kill -9 the trainer; during the restart backoff, start
# pt-train by hand with the job's PT_* environment (copied from the real
# trainer's /proc/PID/environ) against the SMP socket. The SMP answers its
# HELLO "waiting for the node to announce its trainer" (-EAGAIN) until the
# node spawns the real one, then refuses it with PT_EROLE (pt-train exits
# 78); the impostor seals nothing and the job ends as the fault-free run.
# (Before: the impostor was accepted, restored, sealed steps the node then
# chose as the restore point, and the real trainer restored its state.)
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=1
ARGS=(--steps 150 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 3000 --max-restarts 5 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30

pid=$(t_pid "$T_DIR/sd" 0 trainer)
[ -n "$pid" ] && [ "$pid" != 0 ] || fail "no trainer pid"
# The job's environment, as the real trainer got it.
env_vars=()
while IFS= read -r -d '' kv; do
  case $kv in PT_*=*|RANK=*|WORLD_SIZE=*|LOCAL_RANK=*|LOCAL_WORLD_SIZE=*|MASTER_*=*) env_vars+=("$kv") ;; esac
done <"/proc/$pid/environ"
printf '%s\n' "${env_vars[@]}" | grep -q '^PT_SMP_SOCKET=' || fail "no PT_SMP_SOCKET in the trainer's environment"

restarts=$(t_count_log 'restarting job')
kill -KILL "$pid" || fail "cannot kill trainer pid $pid"
say "kill -9 trainer (pid $pid)"
t_wait_count 'restarting job' "$restarts" 10
# The backoff (3 s) runs: start the impostor now, outside the node's session.
env -i PATH="$PATH" "${env_vars[@]}" timeout 60 "$TRAIN" "${ARGS[@]}" --steps 600 \
  --digest-file "$T_DIR/impostor.digest" >"$T_DIR/impostor.log" 2>&1 &
imp=$!
say "impostor pt-train pid $imp started during the backoff"
wait "$imp"; imp_rc=$?
say "impostor exited with $imp_rc: $(grep -m1 "refused hello" "$T_DIR/impostor.log")"
[ "$imp_rc" = 78 ] || { cat "$T_DIR/impostor.log" | tail -n 20; fail "the impostor exited $imp_rc, not 78 (PT_EROLE)"; }
grep -q "request not allowed for this connection's role" "$T_DIR/impostor.log" \
  || fail "the impostor was not refused with PT_EROLE"
! grep -q '^step [0-9]* loss' "$T_DIR/impostor.log" || fail "the impostor trained"
[ ! -s "$T_DIR/impostor.digest" ] || fail "the impostor finished a run"
grep -q "hello refused: hello from pid [0-9]* (session [0-9-]*): only the session of trainer pid [0-9]*" \
  "$T_DIR/node.log" || fail "the SMP logged no refusal of the impostor's hello"

t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
! grep -Eq 'restore point: step (1[5-9][0-9]|[2-9][0-9][0-9])' "$T_DIR/node.log" \
  || fail "a step past the job's end became the restore point"
t_check_digests $RANKS
say "ok: the impostor was refused and the job ended as the fault-free run"
