#!/usr/bin/env bash
# Hostile peers on the controller's port while a real job runs across two
# nodes (tests/ctl_hostile.py makes the raw connections):
#
#   1. a node started with a wrong cluster key: refused, with a line in its
#      own log and one in the controller's naming it; it never registers,
#      so a job wanting 3 nodes is refused; ptctl with a wrong key: exit 1
#      (ptctl --help: "a wrong cluster key is a refusal") and a sentence;
#   2. with the key: oversized, truncated, garbage, bad-version,
#      unknown-type, undecodable, out-of-role frames, a second handshake
#      and a bulk frame: each connection closed with its own line naming
#      it and what was wrong;
#   3. without the key: the same kinds, a wrong proof, a slow-loris (closed
#      at the 10 s handshake deadline), an authenticated node stalled in a
#      frame (closed 10 s after its last byte, with a line), and 300 silent
#      connections at once (the oldest beyond 64 dropped at once; ptctl
#      still gets in). These refusals are logged rate-limited (one line per
#      10 s, the rest counted in the next line): every one is counted.
#
# After each, the controller is alive and answers ptctl status. The job
# commits all along, never restarts, ends in epoch 1 with its last step
# committed, and every rank's digest equals a fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --ranks-per-node || skip "this build's ptctl has no 'start'"
command -v python3 >/dev/null || skip "no python3"
trap 'c_nodes_term; c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.hj.* 2>/dev/null; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
HOSTILE=$(dirname "$0")/../ctl_hostile.py
STEPS=700 # 700 x 25 ms: the job outlives the hostile phases (about 15 s)
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 100)
# The delay only sleeps: the reference runs without it.
t_reference 4 "${ARGS[@]}" --step-delay-ms 0
ARGS+=(--step-delay-ms 25)

hostile() { # hostile PHASE: tests/ctl_hostile.py against the controller
  python3 "$HOSTILE" "$1" --port "$C_CTL_PORT" --key "$C_KEY" --log "$C_CTL_LOG" \
    --pid "$C_CTL_PID" --ptctl "$PTCTL" >"$T_DIR/hostile.$1" 2>&1
  local rc=$?
  cat "$T_DIR/hostile.$1"
  [ $rc = 0 ] || c_fail "hostile $1: exit $rc"
}
committed() { c_job_field hj committed_step; }

c_ctl_start --heartbeat-ms 200 --dead-after-ms 5000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_node_start b --capacity 2 --shm-prefix "$T_PREFIX"
# 1. the wrong key
"$PTD" keygen "$T_DIR/wrong.key" || fail "ptd keygen failed"
"$PTD" node --controller "$C_CTL_ADDR" --node-id w --key "$T_DIR/wrong.key" \
  --state-dir "$T_DIR/node.w" --advertise 127.0.0.1 --capacity 2 --shm-prefix "$T_PREFIX" \
  --log-level 7 >>"$T_DIR/node.w.log" 2>&1 &
C_NODE_PID[w]=$!
c_wait_node_state a alive 10
c_wait_node_state b alive 10
deadline=$(( $(date +%s) + 10 ))
until grep -q "authentication failed (the controller does not hold our cluster key" "$T_DIR/node.w.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node w's log says nothing of its key: $(cat "$T_DIR/node.w.log")"
  sleep 0.05
done
c_ctl_wait_log "refusing connection from 127\.0\.0\.1:[0-9]+ on 127\.0\.0\.1:$C_CTL_PORT \(it said role 1, node id 'w'\): authentication failed: closed before the handshake ended, after our challenge and without its proof, as a peer without the cluster key does" 10
kill -0 "${C_NODE_PID[w]}" 2>/dev/null || c_fail "node w exited: it should retry (the key may be fixed)"
[ -z "$(c_node_state w)" ] || c_fail "node w with a wrong key is listed: $(c_node_state w)"
c_ptctl start --job hj3 --nodes 3 --ranks-per-node 2 -- "$TRAIN" "${ARGS[@]}" >"$T_DIR/start3.out" 2>&1 \
  && c_fail "a 3-node job started with node w refused: $(cat "$T_DIR/start3.out")"
grep -q "needs 3 spare nodes of capacity >= 2 ranks: 2 free (2 alive, 2 registered)" "$T_DIR/start3.out" \
  || c_fail "3-node job: $(cat "$T_DIR/start3.out")"
"$PTCTL" --controller "$C_CTL_ADDR" --key "$T_DIR/wrong.key" status >"$T_DIR/wrong.out" 2>&1
rc=$?
[ $rc = 1 ] || c_fail "ptctl with a wrong key: exit $rc, expected 1"
grep -q "ptctl: cannot authenticate to ptd controller at $C_CTL_ADDR: refused (is --key the cluster's key?)" \
  "$T_DIR/wrong.out" || c_fail "ptctl with a wrong key: $(cat "$T_DIR/wrong.out")"
"$PTCTL" --help 2>&1 | grep -q "a wrong cluster key is a refusal" || c_fail "ptctl --help does not document it"
say "wrong key: node w refused and named in both logs, never registered; ptctl exit 1"

c_ptctl start --job hj --nodes 2 --ranks-per-node 2 --slots 3 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 40 ))
until c=$(committed) && [ -n "$c" ] && [ "$c" -ge 5 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job hj committed nothing by step 5"
  sleep 0.1
done
say "job hj committed step $c; node w still knocking"
# 2. and 3. (node w goes on retrying with its wrong key all along)
hostile postauth
c2=$(committed)
hostile preauth
c3=$(committed)
[ -n "$c2" ] && [ -n "$c3" ] && [ "$c3" -gt "$c2" ] && [ "$c2" -gt "$c" ] \
  || c_fail "commits did not go on through the hostile phases: $c, $c2, $c3"
[ "$(c_job_field hj state)" = running ] || c_fail "job hj is '$(c_job_field hj state)' after the hostile phases (it must outlive them)"
say "commits went on through them: steps $c -> $c2 -> $c3"
c_node_kill w TERM
[ -z "$(c_node_state w)" ] || c_fail "node w got registered"

c_wait_job_state hj done 90
t_check_digests 4
final=$(committed)
[ "$final" = "$STEPS" ] || c_fail "committed step $final at the end, not $STEPS"
[ "$(c_job_field hj epoch)" = 1 ] || c_fail "job hj left epoch 1: $(c_job_field hj epoch)"
[ "$(c_job_field hj restarts)" = 0 ] || c_fail "job hj restarted $(c_job_field hj restarts) times"
for id in a b; do
  ! grep -q "ptd node: restore from step" "$T_DIR/node.$id.log" || c_fail "node $id restored a step"
done
grep -q "connection lost" "$T_DIR/node.a.log" "$T_DIR/node.b.log" && c_fail "a node lost the controller during the hostile phases"

# Every refusal before the handshake is counted in the log: written, or
# in a count, "(N more like it dropped ...)" on the next one written or
# "rpc: N more connections refused or dropped ..." from the controller's
# timer once the 10 s window has passed (no refusal need follow).
want=$(sed -n 's/^refusals \([0-9]*\)$/\1/p' "$T_DIR/hostile.preauth")
python3 - "$C_CTL_LOG" "$want" <<'PY' || c_fail "refusals missing from the controller's log after 25 s"
import re, sys, time
want, end = int(sys.argv[2]), time.monotonic() + 25
while True:
    text = open(sys.argv[1], errors="replace").read()
    lines = re.findall(r"rpc: (?:refusing connection|dropping the connection) from ", text)
    more = sum(int(m) for m in re.findall(r"\((\d+) more like it dropped in the last", text))
    flushed = sum(int(m) for m in re.findall(r"rpc: (\d+) more connections refused or dropped in the last", text))
    total = len(lines) + more + flushed
    # node w's refusals and ptctl's come on top of this run's hostile ones
    if total >= want + 2 and flushed > 0 or time.monotonic() > end:
        break
    time.sleep(0.2)
print(f"cluster_hostile: refusals in the log: {len(lines)} lines + {more} + {flushed} counted = "
      f"{total} (this run's hostile ones: {want}, plus node w's and ptctl's)")
sys.exit(0 if total >= want + 2 and flushed > 0 else 1)
PY
kill -0 "$C_CTL_PID" || c_fail "the controller is gone"
c_ctl_stop
[ "$C_CTL_RC" = 0 ] || c_fail "controller exit status $C_CTL_RC at SIGTERM"
say "ok: job done (epoch 1, committed $final, no restart), digests equal the fault-free run"
