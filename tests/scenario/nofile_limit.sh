#!/usr/bin/env bash
# RLIMIT_NOFILE too low for the node: it refuses at once (exit 2) with a
# message naming the limit and what it needs, instead of aborting (6) or
# exiting silently (8). A soft limit that is too low under a hard limit
# that suffices is raised, and the job runs.
set -u
. "$(dirname "$0")/../lib.sh"

for lim in 6 8; do
  : >"$T_DIR/node.log"
  ( ulimit -n $lim
    "$PTD" node --ranks 2 --job "$T_JOB" --state-dir "$T_DIR/sd$lim" --shm-prefix "$T_PREFIX" \
      --master-port "$T_PORT" -- "$TRAIN" --steps 5 ) >>"$T_DIR/node.log" 2>&1
  rc=$?
  [ $rc = 2 ] || fail "ulimit -n $lim: expected exit 2, got $rc"
  grep -Eq "open files.*need [0-9]+.*limit is $lim" "$T_DIR/node.log" \
    || fail "ulimit -n $lim: no message naming the need and the limit"
  say "ulimit -n $lim: refused: $(grep -o 'too few.*' "$T_DIR/node.log" | head -1)"
done

hard=$(ulimit -Hn)
if [ "$hard" != unlimited ] && [ "$hard" -lt 200 ]; then
  skip "skip: hard open file limit $hard is too low to test raising (refusals passed)"
fi
: >"$T_DIR/node.log"
( ulimit -Sn 8
  "$PTD" node --ranks 2 --job "$T_JOB" --state-dir "$T_DIR/sdr" --shm-prefix "$T_PREFIX" \
    --master-port "$T_PORT" -- "$TRAIN" --steps 5 --digest-file "$T_DIR/out.%r" ) >>"$T_DIR/node.log" 2>&1
rc=$?
[ $rc = 0 ] || fail "soft limit 8 under hard $hard: expected the limit raised and exit 0, got $rc"
grep -q 'raised the open file limit' "$T_DIR/node.log" || fail "no log line about raising the limit"
say "ok: soft limit 8 raised; the job completed"
