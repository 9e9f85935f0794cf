#!/usr/bin/env bash
# A snapshot object left by an earlier run (--keep) that is larger than the
# budget of the next run: the node refuses it before any trainer starts
# (exit 1, naming the bytes held and the budget) instead of using it.
set -u
. "$(dirname "$0")/../lib.sh"

ARGS=(--steps 5 --state-mb 8 --log-every 1)
t_node_start "$T_DIR/sd" 2 --keep -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "first run: ptd node exited with $T_NODE_RC"
held=$(stat -c %s /dev/shm/"$T_PREFIX"pt."$T_JOB".0) || fail "the first run kept no object"
say "the first run kept objects of $held bytes"
: >"$T_DIR/node.log"
# a budget above the smallest object but below what the kept objects hold
t_node_start "$T_DIR/sd" 2 --resume --memory-budget $(( (held - 1) * 2 )) -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 1 ] || fail "second run: expected exit 1, got $T_NODE_RC"
grep -Eq "snapshot object holds $held bytes, more than its share of --memory-budget" "$T_DIR/node.log" \
  || fail "no message naming the bytes held and the budget"
! grep -q 'started trainer' "$T_DIR/node.log" || fail "a trainer was started"
say "ok: the kept object over the budget was refused before training"
