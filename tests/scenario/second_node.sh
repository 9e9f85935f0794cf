#!/usr/bin/env bash
# A second `ptd node` with the same --job and --shm-prefix but its own state
# dir (two users' default job name on one machine): its SMPs find the first
# job's live objects and must neither restore from them nor drive their
# slots. The second job fails with a message naming the object; the first
# one completes untouched, bit-exact.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=1
ARGS=(--steps 150 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 30)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30

say "second node on job $T_JOB, prefix $T_PREFIX, another state dir"
timeout 60 "$PTD" node --ranks $RANKS --job "$T_JOB" --state-dir "$T_DIR/sd2" \
  --shm-prefix "$T_PREFIX" --master-port $((T_PORT + 1)) --max-restarts 1 \
  --backoff-ms 50 -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/second.%r" \
  >"$T_DIR/second.log" 2>&1
rc=$?
[ $rc != 124 ] || fail "the second node did not end within 60 s"
[ $rc != 0 ] || { tail -n 20 "$T_DIR/second.log"; fail "the second node completed a job on the first one's objects"; }
grep -Eq "pt\.$T_JOB\.0.*(in use by another SMP|belongs to|exists, of job instance)" "$T_DIR/second.log" ||
  { tail -n 20 "$T_DIR/second.log"; fail "no message naming the object and why it is not the second job's"; }
! grep -Eq 'restored step|restores step' "$T_DIR/second.log" ||
  { tail -n 20 "$T_DIR/second.log"; fail "the second job restored the first one's state"; }
say "second node refused (exit $rc): $(grep -Eo "'[^']*pt\.$T_JOB\.0' (is in use by another SMP[^;]*|belongs to[^:]*|exists, of job instance [0-9a-f]*)" "$T_DIR/second.log" | head -n 1)"

# Told to take the objects over, it must still not: they are live.
for flag in --fresh --resume; do
  timeout 60 "$PTD" node --ranks $RANKS --job "$T_JOB" --state-dir "$T_DIR/sd3" \
    --shm-prefix "$T_PREFIX" --master-port $((T_PORT + 2)) --max-restarts 1 \
    --backoff-ms 50 $flag -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/third.%r" \
    >"$T_DIR/third.log" 2>&1
  rc=$?
  [ $rc != 124 ] || fail "a node with $flag did not end within 60 s"
  [ $rc != 0 ] || { tail -n 20 "$T_DIR/third.log"; fail "a node with $flag completed a job on the live objects"; }
  ! grep -Eq 'restored step|restores step' "$T_DIR/third.log" ||
    { tail -n 20 "$T_DIR/third.log"; fail "a node with $flag restored the live job's state"; }
  say "node with $flag refused (exit $rc)"
done

t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "the first ptd node exited with $T_NODE_RC"
t_check_digests $RANKS
