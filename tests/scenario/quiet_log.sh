#!/usr/bin/env bash
# At the default log level ptd (node and SMPs) logs events, not steps: a
# 20-step run logs fewer than 20 lines at info or above (it used to log
# three or more per step: commit, pin, abandoned commits), and none of
# the per-step lines; they are all there at --log-level 7.
set -u
. "$(dirname "$0")/../lib.sh"

ARGS=(--steps 20 --state-mb 1 --batch 4 --log-every 100)
T_LOG_LEVEL=6 t_node_start "$T_DIR/sd" 1 -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
n=$(grep -c '^<[0-6]>ptd ' "$T_DIR/node.log")
perstep=$(grep -Ec '^<[0-6]>ptd .*(pinned step|cannot pin step|commit of step|unpinned|cannot unpin step|skipped: no free slot|not committed: rank)' "$T_DIR/node.log")
commits=$(grep -c '^<[0-6]>ptd node: commit step' "$T_DIR/node.log")
say "$n lines at info or above, $perstep per-step lines, $commits commit lines"
[ "$n" -lt 20 ] || fail "$n lines at info or above for 20 steps"
[ "$perstep" = 0 ] || fail "$perstep per-step lines at info or above"
[ "$commits" -le 1 ] || fail "$commits 'commit step' lines at info for a run of seconds"
[ "$commits" = 1 ] || fail "no 'commit step' line at info: training under way is not said"

: >"$T_DIR/node.log"
t_node_start "$T_DIR/sd" 1 -- "${ARGS[@]}"
t_node_wait 60
[ "$T_NODE_RC" = 0 ] || fail "debug run: ptd node exited with $T_NODE_RC"
[ "$(grep -c 'ptd node: commit step' "$T_DIR/node.log")" -gt 1 ] \
  || fail "debug run: the commits are not logged"
[ "$(grep -c 'ptd smp.*: pinned step' "$T_DIR/node.log")" -gt 1 ] \
  || fail "debug run: the SMPs do not log the steps they pin"
say "ok: per-step lines are debug"
