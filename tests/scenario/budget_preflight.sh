#!/usr/bin/env bash
# --memory-budget that no job could meet is refused before anything is
# spawned (exit 2), naming the bytes needed and available: a budget below
# the smallest snapshot object per rank (it used to mean "no budget" when
# below one byte per rank), and a budget larger than /dev/shm can hold.
# With --state-bytes (what each trainer will register) the objects for that
# state are checked too, against the budget and against /dev/shm. (Without
# it, a budget too small for the trainers' regions is refused at their
# HELLO: small_shm.sh.)
set -u
. "$(dirname "$0")/../lib.sh"

run() {
  : >"$T_DIR/node.log"
  "$PTD" node --ranks 2 --job "$T_JOB" --state-dir "$T_DIR/sd" --shm-prefix "$T_PREFIX" \
    --master-port "$T_PORT" "$@" -- "$TRAIN" --steps 5 >>"$T_DIR/node.log" 2>&1
}

run --memory-budget 1
rc=$?
[ $rc = 2 ] || fail "budget 1: expected exit 2, got $rc"
grep -Eq 'memory-budget 1 bytes gives each of the 2 ranks 0 bytes; the smallest snapshot object needs [0-9]+ bytes' \
  "$T_DIR/node.log" || fail "budget 1: no message naming the bytes needed"
! grep -q 'started trainer\|serving job' "$T_DIR/node.log" || fail "budget 1: something was started"
say "budget below one byte per rank refused: $(grep -o 'memory-budget.*' "$T_DIR/node.log" | head -1)"

run --memory-budget 4K
rc=$?
[ $rc = 2 ] || fail "budget 4K: expected exit 2, got $rc"
grep -q 'smallest snapshot object needs' "$T_DIR/node.log" || fail "budget 4K: no message"

free=$(df -B1 --output=avail /dev/shm | tail -1 | tr -d ' ')
run --memory-budget $((free / 1024 / 1024 + 4096))M
rc=$?
[ $rc = 2 ] || fail "budget above /dev/shm: expected exit 2, got $rc"
grep -Eq 'cannot be met: /dev/shm has [0-9]+ bytes available' "$T_DIR/node.log" \
  || fail "budget above /dev/shm: no message naming the bytes available"
! grep -q 'started trainer\|serving job' "$T_DIR/node.log" || fail "budget above /dev/shm: something was started"
say "ok: budget above /dev/shm refused: $(grep -o 'memory-budget.*' "$T_DIR/node.log" | head -1)"

# --state-bytes: the objects for what the trainers will register are checked
# before anything is spawned, against the budget and against /dev/shm.
run --memory-budget 64M --state-bytes 40M
rc=$?
[ $rc = 2 ] || fail "state 40M in a 64M budget for 2 ranks: expected exit 2, got $rc"
grep -Eq 'gives each of the 2 ranks 33554432 bytes; --state-bytes 41943040 needs a snapshot object of [0-9]+ bytes per rank' \
  "$T_DIR/node.log" || fail "state over budget: no message naming the bytes"
! grep -q 'started trainer\|serving job' "$T_DIR/node.log" || fail "state over budget: something was started"
say "state over the budget refused: $(grep -o 'memory-budget.*' "$T_DIR/node.log" | head -1)"

run --state-bytes $((free / 1024 / 1024 / 2 + 1024))M
rc=$?
[ $rc = 2 ] || fail "state above /dev/shm: expected exit 2, got $rc"
grep -Eq 'state-bytes [0-9]+ needs 2 snapshot objects of [0-9]+ bytes \([0-9]+ bytes\); /dev/shm has [0-9]+ bytes available' \
  "$T_DIR/node.log" || fail "state above /dev/shm: no message naming the bytes"
! grep -q 'started trainer\|serving job' "$T_DIR/node.log" || fail "state above /dev/shm: something was started"
say "state above /dev/shm refused: $(grep -o 'state-bytes.*' "$T_DIR/node.log" | head -1)"

# And one that fits runs (pt-train's default state is well under 2 MiB).
run --memory-budget 64M --state-bytes 2M
rc=$?
[ $rc = 0 ] || fail "state 2M in a 64M budget: expected exit 0, got $rc"
say "ok: a job whose state fits runs"
