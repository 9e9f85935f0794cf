#!/usr/bin/env bash
# A node's controller connection cut and restored during a cluster job:
# node b reaches the controller through a TCP relay on loopback; the relay
# drops every connection and refuses new ones for a second, then relays
# again. Meanwhile b's trainers keep running and snapshotting, nothing
# more is committed on b; b reconnects by itself (the same incarnation:
# a reconnect), reports its part, and the job ends with every rank's
# digest equal to a fault-free run and its last step committed, no restore
# older than the step committed before the cut.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
RELAY_PID=
trap 'c_nodes_term; c_cleanup; [ -n "$RELAY_PID" ] && kill "$RELAY_PID" 2>/dev/null; rm -f /dev/shm/"$T_PREFIX"pt.lc.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=300
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 50 --step-delay-ms 20)
t_reference 4 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 5000
# The relay: 127.0.0.1:<port in relay.port> -> the controller; while
# $T_DIR/cut exists it holds no connection.
python3 - "$C_CTL_PORT" "$T_DIR/relay.port" "$T_DIR/cut" <<'PY' &
import os, selectors, socket, sys
up, portfile, cut = int(sys.argv[1]), sys.argv[2], sys.argv[3]
ls = socket.socket(); ls.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
ls.bind(("127.0.0.1", 0)); ls.listen(8)
open(portfile + ".tmp", "w").write(str(ls.getsockname()[1])); os.rename(portfile + ".tmp", portfile)
sel = selectors.DefaultSelector(); sel.register(ls, selectors.EVENT_READ)
pairs = {}
def drop(s):
    o = pairs.pop(s, None)
    for x in (s, o):
        if x is not None:
            try: sel.unregister(x)
            except Exception: pass
            x.close(); pairs.pop(x, None)
while True:
    for key, _ in sel.select(0.05):
        s = key.fileobj
        if s is ls:
            c, _ = ls.accept()
            if os.path.exists(cut): c.close(); continue
            try: u = socket.create_connection(("127.0.0.1", up), 2)
            except OSError: c.close(); continue
            pairs[c], pairs[u] = u, c
            sel.register(c, selectors.EVENT_READ); sel.register(u, selectors.EVENT_READ)
        elif s in pairs:
            try: d = s.recv(65536)
            except OSError: d = b""
            if not d: drop(s); continue
            try: pairs[s].sendall(d)
            except OSError: drop(s)
    if os.path.exists(cut):
        for s in list(pairs): drop(s)
PY
RELAY_PID=$!
deadline=$(( $(date +%s) + 10 ))
until [ -s "$T_DIR/relay.port" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "the relay did not start"
  sleep 0.05
done
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
ctl=$C_CTL_ADDR
C_CTL_ADDR=127.0.0.1:$(cat "$T_DIR/relay.port") c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
C_CTL_ADDR=$ctl
c_wait_node_state a alive 10
c_wait_node_state b alive 10

node_committed() {
  "$PTCTL" --state-dir "$T_DIR/node.$1" status --json 2>/dev/null | python3 -c '
import json, sys
v = json.load(sys.stdin).get("committed_step")
print("" if v is None else v)'
}

c_ptctl start --job lc --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(c_job_field lc committed_step) && [ -n "$c" ] && [ "$c" -ge 10 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job lc committed nothing by step 10"
  sleep 0.1
done
: >"$T_DIR/cut"
deadline=$(( $(date +%s) + 5 ))
until grep -q "connection lost" "$T_DIR/node.b.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node b did not notice the cut"
  sleep 0.05
done
b1=$(node_committed b)
sleep 1
b2=$(node_committed b)
[ "$b1" = "$b2" ] || c_fail "node b committed $b1 -> $b2 while cut off"
rm -f "$T_DIR/cut"
say "node b cut off for 1 s after commit $c (committed nothing meanwhile: $b1)"
deadline=$(( $(date +%s) + 15 ))
until [ "$(grep -c "registered as node 'b'" "$T_DIR/node.b.log")" -ge 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node b did not register again"
  sleep 0.05
done
c_ctl_wait_log "node 'b' .*reconnected" 5
deadline=$(( $(date +%s) + 90 ))
until s=$(c_job_field lc state) && [ "$s" = done ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job lc is '$s', not done, after 90 s"
  sleep 0.2
done
t_check_digests 4
final=$(c_job_field lc committed_step)
[ "$final" = "$STEPS" ] || c_fail "committed step $final at the end, not $STEPS"
for id in a b; do
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ -z "$r" ] || [ "$r" -ge "$c" ] || c_fail "node $id restored step $r, older than step $c committed before the cut"
done
say "ok: job done in epoch $(c_job_field lc epoch), committed $final, digests equal the fault-free run"
