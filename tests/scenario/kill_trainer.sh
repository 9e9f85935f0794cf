#!/usr/bin/env bash
# kill -9 of a trainer at six random moments, every other one in the middle
# of a copy into shared memory (the test watches the slot table and kills the
# trainer while a slot is WRITING). Every time ptd node stops all ranks and restarts them from the
# newest committed step; the run must end bit-for-bit as the fault-free one,
# redoing no more steps than were uncommitted.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=3 KILLS=${KILLS:-6}
ARGS=(--steps 120 --state-mb 32 --batch 2 --log-every 1 --step-delay-ms 15)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 --max-restarts 20 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30

RANDOM=$$
kills=0 tries=0 midcopy=0
while [ $kills -lt $KILLS ]; do
  tries=$((tries + 1))
  [ $tries -le 100 ] || fail "could only kill $kills trainers"
  kill -0 "$T_NODE_PID" 2>/dev/null || fail "the job ended after $kills kills; make it longer"
  sleep "0.$((RANDOM % 6 + 2))"
  r=$((RANDOM % RANKS))
  pid=$(t_pid "$T_DIR/sd" $r trainer)
  if [ -z "$pid" ] || [ "$pid" = 0 ]; then continue; fi
  n=$(t_count_log '^step [0-9]+ loss')
  restores=$(t_count_log 'restore from step|no snapshot: starting fresh')
  if [ $((kills % 2)) = 0 ]; then
    # every other kill lands in the middle of a copy into shared memory
    out=$(t_kill_mid_copy $r "$pid" 5) || continue
    say "kill -9 trainer rank $r: $out"; midcopy=$((midcopy + 1))
  else
    kill -KILL "$pid" 2>/dev/null || continue
    say "kill -9 trainer rank $r (pid $pid)"
  fi
  kills=$((kills + 1))
  t_wait_count 'restore from step|no snapshot: starting fresh' "$restores" 30
  # the restarted ranks train again before the next kill
  t_wait_count '^step [0-9]+ loss' "$((n + 3))" 30
done
t_node_wait 180
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
restarts=$(grep -c 'restarting job' "$T_DIR/node.log")
[ "$restarts" -ge 5 ] || fail "only $restarts restarts happened; expected at least 5"
t_check_digests $RANKS
t_check_redone
[ $midcopy -ge 3 ] || fail "only $midcopy kills landed in the middle of a copy"
say "ok: $restarts restarts, $midcopy of them killed in the middle of a copy"
