#!/usr/bin/env bash
# ptd controller on its own: ptd keygen, a controller on a free port,
# `ptctl nodes` (JSON and table) answering an empty list, the same through
# PT_CONTROLLER/PT_KEY; a second controller on the same state dir refused
# (exit 2, a clear line); a wrong key refused; usage errors naming the
# option and the timeout order; systemd notify READY=1, WATCHDOG=1 and
# STOPPING=1 over NOTIFY_SOCKET; SIGTERM ends it with exit 0.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

c_ctl_start
say "controller on $C_CTL_ADDR"

out=$(c_ptctl nodes --json) || c_fail "ptctl nodes --json failed"
[ "$out" = "{\"controller\":\"$C_CTL_ADDR\",\"nodes\":[]}" ] || c_fail "ptctl nodes --json said: $out"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert d["nodes"]==[]' "$out" \
  || c_fail "not valid JSON: $out"
out=$(c_ptctl nodes) || c_fail "ptctl nodes failed"
[ "$out" = "no nodes registered" ] || c_fail "ptctl nodes said: $out"
out=$(PT_CONTROLLER=$C_CTL_ADDR PT_KEY=$C_KEY "$PTCTL" nodes --json) || c_fail "PT_CONTROLLER/PT_KEY not used"
case $out in *'"nodes":[]'*) ;; *) c_fail "env: $out" ;; esac
c_ptctl nodes --help | grep -q "HEARTBEAT" || c_fail "ptctl nodes --help"

# A second controller on the same state directory is refused.
"$PTD" controller --listen 127.0.0.1:0 --state-dir "$C_CTL_DIR" --key "$C_KEY" >"$T_DIR/second.log" 2>&1
rc=$?
[ $rc -eq 2 ] || c_fail "a second controller on the same state dir exited $rc"
grep -q "another ptd controller runs with state directory" "$T_DIR/second.log" \
  || c_fail "no clear refusal: $(cat "$T_DIR/second.log")"
# ... and the first one still answers.
c_ptctl nodes --json >/dev/null || c_fail "the first controller stopped answering"

# A wrong key: refused, exit 1, with a sentence.
"$PTD" keygen "$T_DIR/other.key"
"$PTCTL" --controller "$C_CTL_ADDR" --key "$T_DIR/other.key" nodes >"$T_DIR/wrong.out" 2>&1
rc=$?
[ $rc -eq 1 ] || c_fail "ptctl with a wrong key exited $rc"
grep -q "refused (is --key the cluster's key?)" "$T_DIR/wrong.out" || c_fail "wrong key: $(cat "$T_DIR/wrong.out")"
c_ctl_wait_log "authentication failed"

# Usage errors name the option; the timeouts name their order.
"$PTD" controller --state-dir "$T_DIR/x" --key "$C_KEY" >"$T_DIR/u.log" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q -- "--listen" "$T_DIR/u.log" || c_fail "missing --listen: exit $rc"
"$PTD" controller --listen 127.0.0.1:0 --state-dir "$T_DIR/x" --key "$C_KEY" \
  --heartbeat-ms 6000 >"$T_DIR/u.log" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q "2 x heartbeat-ms <= dead-after-ms" "$T_DIR/u.log" \
  || c_fail "timeout order: exit $rc: $(cat "$T_DIR/u.log")"
"$PTCTL" nodes >"$T_DIR/u.log" 2>&1; rc=$?
[ $rc -eq 2 ] && grep -q -- "--controller" "$T_DIR/u.log" || c_fail "ptctl nodes without a controller: exit $rc"

# systemd: READY=1 once listening, WATCHDOG=1 pings, STOPPING=1 at SIGTERM.
cat >"$T_DIR/notify.py" <<'PY'
import socket, sys, time
s = socket.socket(socket.AF_UNIX, socket.SOCK_DGRAM)
s.bind(sys.argv[1])
s.settimeout(0.2)
out = open(sys.argv[2], "a")
end = time.time() + 20
while time.time() < end:
    try:
        out.write(s.recv(4096).decode() + "\n"); out.flush()
    except socket.timeout:
        pass
PY
python3 "$T_DIR/notify.py" "$T_DIR/notify.sock" "$T_DIR/notify.log" &
npid=$!
for _ in $(seq 100); do [ -S "$T_DIR/notify.sock" ] && break; sleep 0.05; done
NOTIFY_SOCKET=$T_DIR/notify.sock WATCHDOG_USEC=200000 \
  "$PTD" controller --listen '[::1]:0' --state-dir "$T_DIR/ctl2" --key "$C_KEY" >"$T_DIR/ctl2.log" 2>&1 &
p2=$!
deadline=$(( $(date +%s) + 10 ))
until grep -q "READY=1" "$T_DIR/notify.log" 2>/dev/null && grep -q "WATCHDOG=1" "$T_DIR/notify.log"; do
  if [ "$(date +%s)" -ge "$deadline" ]; then
    kill "$p2" "$npid"
    if grep -q "cannot listen on \[::1\]" "$T_DIR/ctl2.log"; then break; fi
    c_fail "no READY=1 and WATCHDOG=1: $(cat "$T_DIR/notify.log" 2>/dev/null)"
  fi
  sleep 0.05
done
if kill -0 "$p2" 2>/dev/null; then
  grep -q 'listening on \[::1\]:[0-9]*$' "$T_DIR/ctl2.log" || c_fail "IPv6 listen line: $(cat "$T_DIR/ctl2.log")"
  kill -TERM "$p2"; wait "$p2"; rc=$?
  [ $rc -eq 0 ] || c_fail "controller under notify exited $rc"
  for _ in $(seq 50); do grep -q "STOPPING=1" "$T_DIR/notify.log" && break; sleep 0.05; done
  grep -q "STOPPING=1" "$T_DIR/notify.log" || c_fail "no STOPPING=1"
  say "notify: READY=1, WATCHDOG=1, STOPPING=1; IPv6 [::1] listener"
else
  say "no IPv6 loopback here: notify checked up to the listen failure"
fi
kill "$npid" 2>/dev/null; wait "$npid" 2>/dev/null

c_ctl_stop
[ "$C_CTL_RC" -eq 0 ] || c_fail "controller exited $C_CTL_RC after SIGTERM"
grep -q "stopping (SIGTERM)" "$C_CTL_LOG" || c_fail "no stop line"
say "ok"
