#!/usr/bin/env bash
# A /dev/shm too small for the snapshots, and a memory budget too small: the
# job is refused before training starts, with an error naming the bytes needed
# and available, and nothing crashes.
set -u
. "$(dirname "$0")/../lib.sh"

ARGS=(--steps 20 --state-mb 48 --log-every 1)

# 1. memory budget
t_node_start "$T_DIR/sd1" 1 --memory-budget 32M -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 1 ] || fail "budget: expected exit 1, got $T_NODE_RC"
grep -Eq 'budget' "$T_DIR/node.log" || fail "budget: no message about the budget"
grep -Eq '[0-9]{6,} bytes' "$T_DIR/node.log" || fail "budget: message does not name the bytes"
! grep -q '^step 1 loss' "$T_DIR/node.log" || fail "budget: training started"
! grep -Eq 'restarting job' "$T_DIR/node.log" || fail "budget: a permanent error was retried"
say "memory budget refusal ok"

# 2. a small /dev/shm, in a private mount namespace
[ "$(id -u)" = 0 ] && command -v unshare >/dev/null || skip "skip: a private /dev/shm needs root and unshare (budget case passed)"
: >"$T_DIR/node.log"
unshare -m bash -c '
  mount -t tmpfs -o size=64m tmpfs /dev/shm || exit 90
  "$0" node --ranks 1 --job "$1" --state-dir "$2" --shm-prefix "$3" -- "$4" "${@:5}"
' "$PTD" "$T_JOB" "$T_DIR/sd2" "$T_PREFIX" "$TRAIN" "${ARGS[@]}" >>"$T_DIR/node.log" 2>&1
rc=$?
[ $rc = 90 ] && skip "skip: cannot mount a tmpfs here (budget case passed)"
[ $rc = 1 ] || fail "small /dev/shm: expected exit 1, got $rc"
grep -Eqi 'no space|/dev/shm' "$T_DIR/node.log" || fail "small /dev/shm: no clear message"
grep -Eq '[0-9]{6,} bytes' "$T_DIR/node.log" || fail "small /dev/shm: message does not name the bytes"
! grep -q '^step 1 loss' "$T_DIR/node.log" || fail "small /dev/shm: training started"
! grep -q 'SIGBUS' "$T_DIR/node.log" || fail "small /dev/shm: SIGBUS"
say "small /dev/shm refusal ok"
