#!/usr/bin/env bash
# Recovery in place: 3 ranks of pt-train --recover-in-place under ptd node.
# Each kill -9 of one trainer restarts that trainer alone; the two others
# keep their processes (same pids), restore the node's step in place and
# meet the restarted one at a new rendezvous. The run ends bit-for-bit as
# the fault-free one. Then the same job without --recover-in-place in the
# trainers: the node restarts every rank, as before (its RECOVER refused).
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=3 KILLS=${KILLS:-3}
ARGS=(--steps 400 --state-mb 8 --batch 2 --log-every 1 --step-delay-ms 15
      --comm-timeout-s 20)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 10 --max-restarts 20 -- \
  "${ARGS[@]}" --recover-in-place
t_wait_log 'commit step [0-9]+' 30

RANDOM=$$
for ((k = 0; k < KILLS; k++)); do
  sleep "0.$((RANDOM % 5 + 3))"
  kill -0 "$T_NODE_PID" 2>/dev/null || fail "the job ended after $k kills; make it longer"
  last=$(grep -Eo '^step [0-9]+ loss' "$T_DIR/node.log" | tail -n 1 | cut -d' ' -f2)
  [ "${last:-0}" -lt 300 ] || fail "only $k kills before step 300; make the job longer"
  victim=$((RANDOM % RANKS))
  declare -A before=()
  for ((r = 0; r < RANKS; r++)); do before[$r]=$(t_pid "$T_DIR/sd" $r trainer); done
  done_n=$(t_count_log 'every surviving rank restored step')
  n=$(t_count_log '^step [0-9]+ loss')
  kill -KILL "${before[$victim]}" || fail "cannot kill trainer rank $victim"
  say "kill -9 trainer rank $victim (pid ${before[$victim]})"
  t_wait_count 'every surviving rank restored step' "$done_n" 30
  t_wait_count '^step [0-9]+ loss' "$((n + 3))" 30
  for ((r = 0; r < RANKS; r++)); do
    now=$(t_pid "$T_DIR/sd" $r trainer)
    if [ "$r" = "$victim" ]; then
      [ "$now" != "${before[$r]}" ] || fail "rank $r was not restarted"
    else
      [ "$now" = "${before[$r]}" ] || fail "surviving rank $r was restarted (pid ${before[$r]} -> $now)"
    fi
  done
done
t_node_wait 180
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
inplace=$(t_count_log 'restored step [0-9]+ in place$')
[ "$inplace" -ge $((2 * KILLS)) ] || fail "only $inplace in-place restores logged by the trainers"
grep -q 'recovery [0-9]* in place abandoned' "$T_DIR/node.log" && fail "a recovery in place was abandoned"
say "ok: $KILLS kills, each recovered in place by the $((RANKS - 1)) survivors"

# The trainers cannot recover in place: every rank restarts.
: >"$T_DIR/node.log"
rm -f "$T_DIR"/out.*
t_node_start "$T_DIR/sd2" 2 --backoff-ms 10 -- --steps 60 --state-mb 1 \
  --log-every 1 --step-delay-ms 10
t_wait_log 'commit step [0-9]+' 30
p0=$(t_pid "$T_DIR/sd2" 0 trainer) p1=$(t_pid "$T_DIR/sd2" 1 trainer)
kill -KILL "$p1"
t_wait_log 'restore from step|no snapshot: starting fresh' 30
t_wait_log 'abandoned \(smp rank 0: the trainer cannot restore in place' 30
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
grep -Eq "trainer rank 0 \(pid $p0\) (killed by signal SIGTERM|exited)" "$T_DIR/node.log" \
  || fail "rank 0 (pid $p0) was not restarted with rank 1"
say "ok: trainers without recover_in_place are all restarted"
