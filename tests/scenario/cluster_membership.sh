#!/usr/bin/env bash
# A test cluster on one machine: a controller and two cluster-mode ptd nodes
# on loopback. Both register (ptctl nodes: alive, with what they
# advertised); a node killed with SIGKILL is unreachable at once (its
# connection broke) and dead once silent for --dead-after-ms; started again
# it is alive with a new incarnation (a restart, not a reconnect); the
# controller killed with SIGKILL and started again finds both nodes back
# (they reconnect by themselves); `ptctl --state-dir` still answers a
# cluster-mode node; SIGTERM ends a node.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
say "controller on $C_CTL_ADDR"
c_node_start a --failure-domain r1 --capacity 2
c_node_start b --failure-domain r2 --capacity 4
c_wait_node_state a alive 10
c_wait_node_state b alive 10
out=$(c_ptctl nodes --json) || c_fail "ptctl nodes failed"
python3 - "$out" <<'PY' || c_fail "ptctl nodes --json: $out"
import json, sys
nodes = {n["node"]: n for n in json.loads(sys.argv[1])["nodes"]}
assert set(nodes) == {"a", "b"}, nodes
assert nodes["a"]["capacity"] == 2 and nodes["b"]["capacity"] == 4, nodes
assert nodes["a"]["failure_domain"] == "r1", nodes
assert nodes["b"]["advertise"] == "127.0.0.1", nodes
PY
c_ptctl nodes | grep -Eq '^b +alive' || c_fail "the table: $(c_ptctl nodes)"
"$PTCTL" --state-dir "$T_DIR/node.a" status >"$T_DIR/status.a" 2>&1 \
  || c_fail "ptctl --state-dir against a cluster-mode node: $(cat "$T_DIR/status.a")"
grep -qi "registered" "$T_DIR/status.a" || c_fail "status of node a: $(cat "$T_DIR/status.a")"
say "both nodes alive"

# SIGKILL: unreachable at once, dead once silent for dead-after.
t0=$(date +%s%N)
c_node_kill b KILL
c_wait_node_state b unreachable 5
c_wait_node_state b dead 10
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
[ "$ms" -ge 1200 ] || c_fail "node b dead after $ms ms, before --dead-after-ms 1500"
[ "$(c_node_state a)" = alive ] || c_fail "node a is $(c_node_state a) while b died"
say "node b killed: dead after $ms ms"

c_node_start b --failure-domain r2 --capacity 4
c_wait_node_state b alive 10
c_ctl_wait_log "node 'b' .*restarted \(new incarnation\)" 5
say "node b back: a restart"

# The controller killed and started again: the nodes come back by themselves.
kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
c_wait_node_state a alive 15
c_wait_node_state b alive 15
say "controller restarted on $C_CTL_ADDR: both nodes registered again"

c_node_kill a TERM
[ "${C_NODE_RC[a]}" = 3 ] || c_fail "node a exited ${C_NODE_RC[a]} on SIGTERM (expected 3: stopped)"
c_wait_node_state a unreachable 5
say "ok: node a stopped on SIGTERM"
