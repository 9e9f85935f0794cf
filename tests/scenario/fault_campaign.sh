#!/usr/bin/env bash
# A short seeded fault campaign (ptctl fault campaign) against a 3-node
# pt-train job at code 2+1 on a loopback cluster: every class this build
# can inject at least once (trainer, smp, ptd, controller, stop, corrupt,
# node, group, protecting, rebuilding, group+1, parity; the first picks of
# a campaign cover every class), each
# followed by the job restarting from a committed step and committing a
# newer one. A node lost whole (its memory too) comes back empty under its
# own id (the restart command, as its supervisor would) and its SMP
# rebuilds the restore step from the group; m + 1 nodes of the group lost
# at once (group+1) are more than the code rebuilds, and the job restores
# the newest complete step of its persist dir. Then the job must complete
# with every rank's digest equal to a fault-free run. Also: a node without
# --allow-faults refuses, and ptctl says so.
#
#   FAULT_SEED=S FAULT_COUNT=N STEPS=N   override the campaign (tests/soak.sh)
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" fault classes >/dev/null 2>&1 || skip "this build's ptctl has no 'fault'"
SEED=${FAULT_SEED:-7}
CLASSES=${FAULT_CLASSES:-all}
COUNT=${FAULT_COUNT:-12}
STEPS=${STEPS:-1500}
HB=200 DEAD=2000
JOB=fc
ARGS=(--steps "$STEPS" --state-mb 1 --batch 2 --log-every 100)
# The delay only sleeps: not in the digests. The reference runs beside the
# campaign on a port of its own.
REF_PORT=$(( T_PORT < 31000 ? T_PORT + 1 : T_PORT - 1 ))
T_PORT=$REF_PORT t_reference 3 "${ARGS[@]}" &
REF_PID=$!
ARGS+=(--step-delay-ms 25)

stop_all() { # SIGTERM to every node ptd of this test (also those a restart
  # command started), so that each stops its ranks; then the controller's
  local f pid
  for f in "$T_DIR"/node.*.pid; do
    [ -f "$f" ] && kill -TERM "$(cat "$f")" 2>/dev/null
  done
  c_nodes_term
  for f in "$T_DIR"/node.*.pid; do
    [ -f "$f" ] || continue
    pid=$(cat "$f")
    for _ in $(seq 150); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
  done
  [ -f "$T_DIR/ctl.pid" ] && kill -TERM "$(cat "$T_DIR/ctl.pid")" 2>/dev/null
}
trap 'stop_all; c_cleanup; kill "$REF_PID" 2>/dev/null; t_cleanup' EXIT

CTL_OPTS=(--heartbeat-ms $HB --dead-after-ms $DEAD --node-wait-ms 30000 --allow-faults)
c_ctl_start "${CTL_OPTS[@]}"
NODE_OPTS=(--capacity 1 --shm-prefix "$T_PREFIX" --allow-faults)
# What ptctl runs after it killed a node's ptd or the controller: the same
# daemon started again once the old one is gone, its output to its log.
cat >"$T_DIR/restart_node.sh" <<EOF
#!/usr/bin/env bash
id=\$PT_FAULT_NODE
for _ in \$(seq 100); do kill -0 "\$PT_FAULT_PID" 2>/dev/null || break; sleep 0.05; done
"$PTD" node --controller "$C_CTL_ADDR" --node-id "\$id" --key "$C_KEY" \\
  --state-dir "$T_DIR/node.\$id" --advertise 127.0.0.1 --log-level 7 \\
  ${NODE_OPTS[*]} >>"$T_DIR/node.\$id.log" 2>&1 </dev/null &
echo \$! >"$T_DIR/node.\$id.pid"
EOF
cat >"$T_DIR/restart_ctl.sh" <<EOF
#!/usr/bin/env bash
for _ in \$(seq 100); do kill -0 "\$PT_FAULT_PID" 2>/dev/null || break; sleep 0.05; done
n=\$(grep -c 'listening on' "$C_CTL_LOG")
"$PTD" controller --listen "$C_CTL_ADDR" --state-dir "$C_CTL_DIR" --key "$C_KEY" \\
  --log-level 7 ${CTL_OPTS[*]} >>"$C_CTL_LOG" 2>&1 </dev/null &
echo \$! >"$T_DIR/ctl.pid"
for _ in \$(seq 100); do
  [ "\$(grep -c 'listening on' "$C_CTL_LOG")" -gt "\$n" ] && exit 0
  sleep 0.05
done
exit 1
EOF
chmod +x "$T_DIR/restart_node.sh" "$T_DIR/restart_ctl.sh"

# A node started without --allow-faults refuses, and ptctl prints why: a
# probe job on node d alone, then d leaves.
c_node_start d --capacity 1 --shm-prefix "$T_PREFIX"
c_wait_node_state d alive 10
c_ptctl start --job probe --nodes 1 --ranks-per-node 1 --master-port "$T_PORT" \
  -- "$TRAIN" --steps 100000 --state-mb 1 --step-delay-ms 50 >"$T_DIR/probe.out" 2>&1 \
  || c_fail "ptctl start probe failed: $(cat "$T_DIR/probe.out")"
c_wait_job_state probe running 20
c_ptctl fault inject probe trainer >"$T_DIR/refuse.out" 2>&1
rc=$?
[ $rc = 1 ] || c_fail "fault on a node without --allow-faults: exit $rc, not 1: $(cat "$T_DIR/refuse.out")"
grep -q "not started with --allow-faults" "$T_DIR/refuse.out" || c_fail "no clear refusal: $(cat "$T_DIR/refuse.out")"
say "a node without --allow-faults refuses: $(tail -n 1 "$T_DIR/refuse.out")"
c_ptctl stop probe >/dev/null 2>&1
c_wait_job_state probe stopped 20
c_node_kill d TERM

mkdir -m 0700 "$T_DIR/persist" # (every node's: one machine)
for id in a b c; do c_node_start $id "${NODE_OPTS[@]}"; done
for id in a b c; do c_wait_node_state $id alive 10; done
c_ptctl start --job $JOB --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  --max-restarts 100 --backoff-ms 50 --node-wait-ms 30000 \
  --persist-dir "$T_DIR/persist" --persist-every 20 \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"

start=$(date +%s)
c_ptctl fault campaign $JOB --seed "$SEED" --count "$COUNT" --timeout-s 90 --wait-done 120 \
  --classes "$CLASSES" \
  --restart-node "$T_DIR/restart_node.sh" --restart-controller "$T_DIR/restart_ctl.sh" \
  >"$T_DIR/campaign.out" 2>&1
rc=$?
sed 's/^/campaign: /' "$T_DIR/campaign.out"
[ $rc = 0 ] || {
  for f in "$T_DIR"/node.[abc].log; do tail -n 25 "$f" | sed "s|^|$(basename "$f" .log): |"; done
  c_fail "ptctl fault campaign exited $rc"
}
say "campaign of $COUNT injections took $(( $(date +%s) - start )) s"
# Every available class injected at least once, and each resumed.
[ "$CLASSES" = all ] && CLASSES=trainer,smp,ptd,controller,stop,corrupt,node,group,protecting,rebuilding,group+1,parity
for cls in ${CLASSES//,/ }; do
  row=$(grep -E "^${cls//+/\\+} +[0-9]" "$T_DIR/campaign.out") || c_fail "no row for class $cls"
  read -r _ n r _ <<<"$row"
  [ "$n" -ge 1 ] || c_fail "class $cls was not injected"
  [ "$n" = "$r" ] || c_fail "class $cls: $r of $n resumed"
done
# A parity row damaged, then the member whose rebuild reads it lost: at
# 2+1 that rebuild failed its checksums (never restored) and the job came
# back from the persist dir.
if [[ ",$CLASSES," == *",parity,"* ]]; then
  grep -hqE "fault injection: node '[abc]': flipped byte [0-9]+ of parity row 0 of .* as epoch [0-9]+ is assigned" \
    "$T_DIR"/node.[abc].log || c_fail "no node damaged its parity row as the epoch was assigned"
  grep -hqE "step [0-9]+ rebuilt from members [0-9,]+ fails its checksums at block [0-9]+: a survivor's piece is damaged.*never restored" \
    "$T_DIR"/node.[abc].log || c_fail "no rebuild found the damaged parity row"
  say "parity: $(grep -hoE "step [0-9]+ rebuilt from members [0-9,]+ fails its checksums at block [0-9]+" "$T_DIR"/node.[abc].log | head -n 1), then restored from disk"
fi
# A damaged step was found by checksum and never restored as it was: the
# node's SMP rebuilt that rank's copy from its coding group.
if [[ ",$CLASSES," == *",corrupt,"* ]]; then
  grep -hq "the step to restore, fails its checksums here: its smp rebuilds it" "$T_DIR"/node.[abc].log \
    || c_fail "no node refused the damaged snapshot"
  say "the damaged step was rebuilt: $(grep -ho 'step [0-9]* rebuilt from members [0-9,]*: [0-9]* bytes.*' "$T_DIR"/node.[abc].log | head -n 1)"
fi
# A node lost whole came back empty and rebuilt its rank's snapshot.
if [[ ",$CLASSES," =~ ,(node|group|protecting|rebuilding), ]]; then
  grep -hq "rebuilt from members" "$T_DIR"/node.[abc].log || c_fail "no SMP rebuilt a lost node's snapshot"
fi
# m + 1 lost: restored from the persist dir.
if [[ ",$CLASSES," == *",group+1,"* ]]; then
  grep -qE "job '$JOB' epoch [0-9]+: restoring step [0-9]+ from disk" "$C_CTL_LOG" \
    || c_fail "group+1 was injected, but no epoch restored from disk"
  say "m + 1 lost: $(grep -oE "job '$JOB' epoch [0-9]+: restoring step [0-9]+ from disk" "$C_CTL_LOG" | tail -n 1)"
fi
wait "$REF_PID" || fail "the reference run failed"
t_check_digests 3
say "ok: job done, $COUNT injections resumed, digests equal the fault-free run"
