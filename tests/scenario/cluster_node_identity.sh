#!/usr/bin/env bash
# A node id is bound to the node's identity (node.id in its state dir, made
# at its first start): once node b is dead, another `ptd node --node-id b`
# with another state dir is refused (a clear line naming both identities),
# before and after a controller restart (the binding is journaled), while
# the real b started again in its own state dir registers as a restart; a
# state dir of one node refuses another node id; `--replace` takes the id
# over for the new identity, after which the old one is refused in turn.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
c_node_start a
c_node_start b
c_wait_node_state a alive 10
c_wait_node_state b alive 10
[ -f "$T_DIR/node.b/node.id" ] || c_fail "no node.id in node b's state dir"
ident_b=$(sed -n 's/^identity //p' "$T_DIR/node.b/node.id")
[ "${#ident_b}" = 32 ] || c_fail "node.id of b: $(cat "$T_DIR/node.b/node.id")"
say "nodes a and b alive; b's identity $ident_b"

c_node_kill b KILL
c_wait_node_state b dead 10

# Another machine (another state dir) given b's id.
other() { # other LOGNAME [OPTS...]: a ptd node as b in $T_DIR/node.b-other
  local log=$1; shift
  "$PTD" node --controller "$C_CTL_ADDR" --node-id b --key "$C_KEY" \
    --state-dir "$T_DIR/node.b-other" --advertise 127.0.0.2 \
    --log-level 7 "$@" >>"$T_DIR/$log" 2>&1 &
  OTHER_PID=$!
}
other_stop() { kill -KILL "$OTHER_PID" 2>/dev/null; wait "$OTHER_PID" 2>/dev/null; OTHER_PID=; }
trap 'other_stop 2>/dev/null; c_cleanup; t_cleanup' EXIT
other other.log
deadline=$(( $(date +%s) + 10 ))
until grep -q "refused the registration: node id 'b' is bound to identity $ident_b" "$T_DIR/other.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "the other b was not refused: $(tail -n 5 "$T_DIR/other.log")"
  sleep 0.1
done
grep -q "ptd node --replace" "$T_DIR/other.log" || c_fail "the refusal does not say how to replace: $(tail -n 3 "$T_DIR/other.log")"
sleep 1
[ "$(c_node_state b)" = dead ] || c_fail "node b is $(c_node_state b) with another identity"
other_stop
say "another state dir as b: refused, b stays dead"

# The real b, in its own state dir: a restart.
c_node_start b
c_wait_node_state b alive 10
c_ctl_wait_log "node 'b' .*restarted \(new incarnation\)" 5
say "the real b is back"

# A state dir is one node's.
"$PTD" node --controller "$C_CTL_ADDR" --node-id c --key "$C_KEY" \
  --state-dir "$T_DIR/node.b-other" --advertise 127.0.0.1 >"$T_DIR/c.log" 2>&1 &
cpid=$!
for _ in $(seq 100); do kill -0 $cpid 2>/dev/null || break; sleep 0.1; done
kill -KILL $cpid 2>/dev/null
wait $cpid; rc=$?
[ "$rc" = 2 ] || c_fail "node c in a state dir of b's exited $rc: $(cat "$T_DIR/c.log")"
grep -q "belongs to node 'b', not 'c'" "$T_DIR/c.log" || c_fail "node c: $(cat "$T_DIR/c.log")"
say "a state dir of b's refuses node id c"

# The binding survives a controller restart (journaled).
c_node_kill b KILL
kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
c_wait_node_state a alive 15
: >"$T_DIR/other.log"
other other.log
deadline=$(( $(date +%s) + 10 ))
until grep -q "refused the registration: node id 'b' is bound to identity $ident_b" "$T_DIR/other.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "after the controller's restart, the other b was not refused: $(tail -n 5 "$T_DIR/other.log")"
  sleep 0.1
done
other_stop
say "after a controller restart: still refused"

# --replace: the operator says the old b is gone.
other other.log --replace
c_wait_node_state b alive 10
c_ctl_wait_log "node 'b' .*replaced \(identity [0-9a-f]{32} in place of $ident_b" 5
ident_new=$(sed -n 's/^identity //p' "$T_DIR/node.b-other/node.id")
[ "$ident_new" != "$ident_b" ] || c_fail "the replacement has b's old identity"
other_stop
c_wait_node_state b dead 10
c_node_start b
deadline=$(( $(date +%s) + 10 ))
until grep -q "node id 'b' is bound to identity $ident_new" "$T_DIR/node.b.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "the old b was not refused after the replacement: $(tail -n 5 "$T_DIR/node.b.log")"
  sleep 0.1
done
say "ok: --replace took b over; the old b is refused in turn"
