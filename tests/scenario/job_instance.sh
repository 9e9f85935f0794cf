#!/usr/bin/env bash
# A snapshot belongs to one job instance. A kept run's objects make a start
# with the same job name in another state directory refuse (exit 2, naming
# the object, its instance and --resume/--fresh) instead of restoring them;
# a changed --ranks is refused as a world size mismatch; --resume continues
# the recorded instance from its committed step (and the run ends as the
# fault-free one); --fresh removes the old objects and starts over; a node
# that died continues its instance only when restarted with its command.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
NODE=(--hidden 96 --batch 8 --log-every 1)
t_reference $RANKS --steps 40 "${NODE[@]}"

# 1. A first run that keeps its snapshots (its instance ends "ended").
t_node_start "$T_DIR/sd1" $RANKS --keep -- --steps 20 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "the first run exited with $T_NODE_RC"
inst=$(sed -n 's/^instance \([0-9a-f]\{32\}\)$/\1/p' "$T_DIR/sd1/node.state")
[ -n "$inst" ] || fail "no instance id in $T_DIR/sd1/node.state"
grep -q '^status ended$' "$T_DIR/sd1/node.state" || fail "node.state does not say the instance ended"
mv "$T_DIR/node.log" "$T_DIR/first.log"

# 2. Same job and prefix, another state dir, no flag: refused, nothing run.
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd2" $RANKS -- --steps 40 "${NODE[@]}"
t_node_wait 20
[ "$T_NODE_RC" = 2 ] || fail "a start over another run's objects exited with $T_NODE_RC, not 2"
grep -q "shm object '/${T_PREFIX}pt.$T_JOB.[01]' exists, of job instance $inst" "$T_DIR/node.log" \
  || fail "the refusal does not name the object and its instance $inst"
grep -q -- "--resume" "$T_DIR/node.log" && grep -q -- "--fresh" "$T_DIR/node.log" \
  || fail "the refusal does not name --resume and --fresh"
! grep -q "restored step" "$T_DIR/node.log" || fail "a trainer restored another run's snapshot"
say "a reused job name in a new state dir refused"

# 3. Resuming with another --ranks: a world size mismatch.
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd1" 1 --resume -- --steps 40 "${NODE[@]}"
t_node_wait 20
[ "$T_NODE_RC" = 2 ] || fail "--resume with --ranks 1 exited with $T_NODE_RC, not 2"
grep -q "world size mismatch" "$T_DIR/node.log" || fail "no world size mismatch error"
say "--ranks change refused"

# 4. --resume: the recorded instance, from its committed step.
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd1" $RANKS --resume --keep -- --steps 40 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "--resume exited with $T_NODE_RC"
step=$(sed -n "s/.*resuming job instance $inst from step \([0-9][0-9]*\)$/\1/p" "$T_DIR/node.log")
[ -n "$step" ] || fail "no 'resuming job instance $inst from step N' line"
last=$(sed -n 's/.*ptd node: commit step \([0-9][0-9]*\)$/\1/p' "$T_DIR/first.log" | tail -n 1)
[ "$step" = "$last" ] || fail "resumed from step $step, the first run last committed $last"
n=$(grep -c "^restored step [0-9]*$" "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS trainers to restore, saw $n"
t_check_digests $RANKS
say "--resume resumed from the committed step $step"

# 5. --fresh in the other state dir: the kept objects go, training starts
# over.
rm -f "$T_DIR"/out.*
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd2" $RANKS --fresh -- --steps 40 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "--fresh exited with $T_NODE_RC"
grep -q "removed shm object '/${T_PREFIX}pt.$T_JOB.0' of job instance" "$T_DIR/node.log" \
  || fail "--fresh did not log the objects it removed"
! grep -q "restored step" "$T_DIR/node.log" || fail "--fresh restored an old snapshot"
n=$(grep -c "summary .*restored_from=none$" "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS fresh summaries, saw $n"
t_check_digests $RANKS
say "--fresh started over"

# 6. The live objects of a running job: --fresh from another state dir is
# refused, and the running job ends unharmed.
rm -f "$T_DIR"/out.*
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd1" $RANKS -- --steps 40 --step-delay-ms 50 "${NODE[@]}"
t_wait_log 'commit step [0-9]+' 30
rc=0
timeout 20 "$PTD" node --ranks $RANKS --job "$T_JOB" --state-dir "$T_DIR/sd2" \
  --shm-prefix "$T_PREFIX" --fresh -- /bin/true >"$T_DIR/second.log" 2>&1 || rc=$?
[ "$rc" = 2 ] || fail "--fresh over a running job's objects exited with $rc, not 2: $(cat "$T_DIR/second.log")"
grep -q "in use" "$T_DIR/second.log" || fail "no 'in use' reason: $(cat "$T_DIR/second.log")"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "the running job exited with $T_NODE_RC after a refused --fresh"
t_check_digests $RANKS
say "--fresh over a running job's objects refused"

# 7. A node killed with everything it ran (node.state still says "running"):
# restarted with the same command (systemd's path) it continues the
# instance; with another trainer command it refuses, since that is another
# run that must not silently restore this one's state.
rm -f "$T_DIR"/out.*
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd3" $RANKS -- --steps 40 --step-delay-ms 100 "${NODE[@]}"
t_wait_log 'commit step [0-9]+' 30
kill -KILL "$T_NODE_PID"; wait "$T_NODE_PID" 2>/dev/null; T_NODE_PID=
pkill -KILL -f -- "--job $T_JOB( |$)"; pkill -KILL -f -- "pt-train.*$T_DIR"
sleep 0.5
grep -q '^status running$' "$T_DIR/sd3/node.state" || fail "node.state of the killed node does not say running"
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd3" $RANKS -- --steps 40 --seed 7 --step-delay-ms 100 "${NODE[@]}"
t_node_wait 20
[ "$T_NODE_RC" = 2 ] || fail "a crashed instance restarted with another trainer command exited with $T_NODE_RC, not 2"
grep -q "still marked running.*another trainer command" "$T_DIR/node.log" || fail "no clear refusal of the changed command"
! grep -q "restored step" "$T_DIR/node.log" || fail "a changed command restored the crashed run's state"
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd3" $RANKS -- --steps 40 --step-delay-ms 100 "${NODE[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "the crashed instance restarted with its own command exited with $T_NODE_RC"
grep -q "continuing job instance" "$T_DIR/node.log" || fail "the crashed instance was not continued"
n=$(grep -c "^restored step [0-9]*$" "$T_DIR/node.log")
[ "$n" = $RANKS ] || fail "expected $RANKS trainers to restore after the crash, saw $n"
t_check_digests $RANKS
say "a crashed instance continues with its own command only"
say "ok"
