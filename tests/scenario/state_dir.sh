#!/usr/bin/env bash
# The state directory is trusted only when it is the user's own: one that
# group or others may write in, or a symlink, or one in a parent that others
# may write in without the sticky bit, is refused (exit 2) before
# anything is read from it; a symlink planted as node.state.tmp is never
# written through; and a forged node.state naming another process of the
# user's gets it neither adopted nor signalled.
set -u
. "$(dirname "$0")/../lib.sh"

ARGS=(--steps 10 --hidden 64 --batch 4 --log-every 1)

# 1. Group-writable: refused.
mkdir -m 0770 "$T_DIR/gw"
chmod 0770 "$T_DIR/gw"
t_node_start "$T_DIR/gw" 1 -- "${ARGS[@]}"
t_node_wait 20
[ "$T_NODE_RC" = 2 ] || fail "a group-writable state dir: exit $T_NODE_RC, not 2"
grep -q "writable by group or others" "$T_DIR/node.log" || fail "no reason given for the group-writable state dir"
[ ! -e "$T_DIR/gw/ptd.lock" ] || fail "the refused state dir was written to"
say "group-writable state dir refused"

# 1b. A good state dir in a parent others may write in, not sticky (they
# could swap it: mv sd sd.old; mkdir sd): refused. A sticky one is fine.
mkdir -m 0777 "$T_DIR/open"; chmod 0777 "$T_DIR/open"
mkdir -m 0700 "$T_DIR/open/sd"
: >"$T_DIR/node.log"
t_node_start "$T_DIR/open/sd" 1 -- "${ARGS[@]}"
t_node_wait 20
[ "$T_NODE_RC" = 2 ] || fail "a state dir in a world-writable, non-sticky parent: exit $T_NODE_RC, not 2"
grep -q "writable by group or others and not sticky" "$T_DIR/node.log" || fail "no reason given for the unsafe parent"
[ ! -e "$T_DIR/open/sd/ptd.lock" ] || fail "the state dir in an unsafe parent was written to"
say "state dir in a world-writable, non-sticky parent refused"

# 2. A symlink to a good directory: refused.
mkdir -m 0700 "$T_DIR/real"
ln -s "$T_DIR/real" "$T_DIR/link"
: >"$T_DIR/node.log"
t_node_start "$T_DIR/link" 1 -- "${ARGS[@]}"
t_node_wait 20
[ "$T_NODE_RC" = 2 ] || fail "a symlinked state dir: exit $T_NODE_RC, not 2"
grep -q "symbolic link" "$T_DIR/node.log" || fail "no reason given for the symlinked state dir"
say "symlinked state dir refused"

# 3. A forged node.state (status running) naming a process of ours that is
# no SMP or trainer of this job, and a planted node.state.tmp symlink.
sleep 60 &
victim=$!
ticks=$(awk '{print $22}' "/proc/$victim/stat")
mkdir -m 0700 "$T_DIR/sd"
printf 'precious\n' >"$T_DIR/precious"
ln -s "$T_DIR/precious" "$T_DIR/sd/node.state.tmp"
# The command t_node_start gives, so that the node takes the forged file as
# its own crashed instance (a changed command would refuse it outright).
cmdlines=$(for a in "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r"; do
  printf 'cmd %s\n' "$(printf '%s' "$a" | sed 's/%/%25/g')"; done)
cat >"$T_DIR/sd/node.state" <<EOF
ptd-node-state 2
job $T_JOB
instance 00112233445566778899aabbccddeeff
status running
ranks 1
node_pid 1
committed none
committed_unix_ms 0
restarts 0
commits 0
restores 0
$cmdlines
smp 0 $victim $ticks 0
trainer 0 $victim $ticks 0
end
EOF
chmod 0600 "$T_DIR/sd/node.state"
: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd" 1 -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "the job over a forged node.state exited with $T_NODE_RC"
kill -0 "$victim" 2>/dev/null || fail "the process named by the forged node.state (pid $victim) was killed"
grep -q "not adopting smp rank 0: pid $victim" "$T_DIR/node.log" || fail "the forged smp pid was not refused"
grep -q "not adopting trainer rank 0: pid $victim" "$T_DIR/node.log" || fail "the forged trainer pid was not refused"
[ "$(cat "$T_DIR/precious")" = precious ] || fail "node.state.tmp was written through its symlink"
kill "$victim"; wait "$victim" 2>/dev/null
say "forged node.state: pid $victim neither adopted nor signalled; symlinked node.state.tmp not followed"

# 4. An shm object of the job planted by another user: neither used nor, with
# --fresh, removed (not ours to delete, even for root).
if [ "$(id -u)" = 0 ]; then
  job2="${T_JOB}u"
  planted=/dev/shm/${T_PREFIX}pt.$job2.0
  head -c 8192 /dev/zero >"$planted"; chown 65534:65534 "$planted"; chmod 0600 "$planted"
  for flag in "" --fresh; do
    rc=0
    timeout 20 "$PTD" node --ranks 1 --job "$job2" --state-dir "$T_DIR/sd4" \
      --shm-prefix "$T_PREFIX" $flag -- "$TRAIN" "${ARGS[@]}" >"$T_DIR/planted.log" 2>&1 || rc=$?
    [ "$rc" = 2 ] || { rm -f "$planted"; fail "a start ${flag:-without a flag} over another user's object exited with $rc, not 2"; }
    grep -q "not this user's" "$T_DIR/planted.log" || { rm -f "$planted"; fail "no clear refusal of another user's object: $(cat "$T_DIR/planted.log")"; }
    [ -f "$planted" ] || fail "another user's object was removed (${flag:-no flag})"
  done
  rm -f "$planted"
  say "another user's object refused, also with --fresh, and left in place"
else
  say "not root: the planted-object check needs chown (skipped, the rest ran)"
fi
say "ok"
