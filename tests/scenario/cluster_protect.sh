#!/usr/bin/env bash
# Erasure-coded protection across nodes: a controller and 3 cluster-mode
# nodes on loopback, a job of 3 nodes x 2 ranks of pt-train with code 2+1
# (two coding groups, one per local rank, each of the 3 nodes' SMPs). Every
# SMP links to the other members of its group (ports through the
# controller's JOB_PEERS), sends its chunks of every sealed step to their
# parity holders, and a step commits only once PROTECTED on every node.
# The job ends bit-exact with a fault-free run, its last step committed;
# the SMPs' logs show steps protected and no chunk refused.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=60
ARGS=(--steps $STEPS --state-mb 2 --batch 2 --log-every 10)
t_reference 6 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
for id in a b c; do c_node_start "$id" --capacity 2 --shm-prefix "$T_PREFIX"; done
for id in a b c; do c_wait_node_state "$id" alive 10; done

c_ptctl start --job cp --nodes 3 --ranks-per-node 2 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
c_wait_job_state cp done 120
t_check_digests 6
# Steps were protected and committed all along: a snapshot is skipped
# while its group still protects an earlier one (training never waits),
# so not every step commits on a loaded machine, nor always the last.
# (Members can also fall out of step near the end, each skipping what its
# busy slots refuse, so the last steps may go uncommitted: the protection's
# known gap, in issue 10's note.)
committed=$(c_job_field cp committed_step)
[ -n "$committed" ] && [ "$committed" -ge $(( STEPS / 2 )) ] \
  || c_fail "job cp: committed step '$committed', expected at least $(( STEPS / 2 ))"
commits=$(c_job_field cp commits)
[ -n "$commits" ] && [ "$commits" -ge $(( STEPS / 3 )) ] || c_fail "job cp: only '$commits' commits of $STEPS steps"
# Every SMP linked to its group and protected steps; none refused a chunk.
n=$(cat "$T_DIR"/node.*.log | grep -c 'taking the group.s chunks on')
[ "$n" -ge 6 ] || c_fail "$n of 6 SMPs listened for their group"
grep -q 'protecting [0-9]* bytes per step' "$T_DIR"/node.*.log || c_fail "no SMP laid out its group"
p=$(cat "$T_DIR"/node.*.log | grep -c 'step [0-9]* protected')
[ "$p" -ge 6 ] || c_fail "only $p protected steps logged"
# No link refused, no piece damaged. A chunk may be refused for a step its
# holder gave up (a step it skipped, or whose deadline passed on a loaded
# machine): that step is then not committed, which the commits above allow.
if grep -E 'failed its CRC|refusing a peer link|not a multiple|out of the' "$T_DIR"/node.*.log; then
  c_fail "a link or a piece was refused"
fi
gaveup=$(cat "$T_DIR"/node.*.log | grep -c 'refused chunk')

# 2. the parity itself: a job stopped with --keep after some commits; every
# coding group's parity for the committed step, in every member's object,
# is the 2+1 code's parity of the members' data (pt-ec-verify recomputes
# it with ec/).
c_ptctl start --job cq --nodes 3 --ranks-per-node 2 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" --steps 100000 --state-mb 2 --batch 2 --step-delay-ms 30 >"$T_DIR/start2.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start2.out")"
deadline=$(( $(date +%s) + 60 ))
until q=$(c_job_field cq committed_step) && [ -n "$q" ] && [ "$q" -ge 8 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job cq committed nothing by step 8"
  sleep 0.2
done

# 3. a hostile client with the cluster key on rank 0's peer port: each
# wrong thing it does is refused (closed, or a PEER_ACK with the refusal),
# and the job goes on committing protected steps.
c_ptctl status cq --json >"$T_DIR/cq.json" || c_fail "ptctl status cq failed"
read -r group member nodes < <(python3 -c '
import json, sys
job = [x for x in json.load(open(sys.argv[1]))["jobs"] if x["job"] == "cq"][0]
for g in job["groups"]:
    for m in g["members"]:
        if m["rank"] == 0:
            print(g["group"], m["member"], " ".join(x["node"] for x in g["members"]))
' "$T_DIR/cq.json")
# Both groups absorb one node loss now, at a protected (committed) step.
python3 -c '
import json, sys
job = [x for x in json.load(open(sys.argv[1]))["jobs"] if x["job"] == "cq"][0]
for g in job["groups"]:
    h = g["health"]
    assert h["tolerates"] == 1, g
    assert h["protected_step"] is not None and h["protected_step"] >= 8, g
    assert h["protected_age_ms"] is not None, g
' "$T_DIR/cq.json" || c_fail "group health wrong: $(cat "$T_DIR/cq.json")"
port=$(grep -h '^<6>ptd smp 0: coding group .*: taking the group.s chunks on 127.0.0.1:' "$T_DIR"/node.*.log \
  | tail -n 1 | sed 's/.*127\.0\.0\.1://')
[ -n "$port" ] && [ -n "$nodes" ] || c_fail "no peer port or group for rank 0 (port '$port', group '$group')"
before=$(c_job_field cq committed_step)
"$BUILD/tests/pt-peer-hostile" --live "$C_KEY" 127.0.0.1 "$port" cq "$group" "$member" 2 1 $nodes >"$T_DIR/hostile.out" 2>&1 \
  || c_fail "a hostile peer was not refused: $(cat "$T_DIR/hostile.out")"
say "hostile peer on rank 0's port while its group runs: $(tail -n 1 "$T_DIR/hostile.out")"
grep -q "node 'not-a-member' is no other member of coding group $group" "$T_DIR"/node.*.log \
  || c_fail "the stranger's refusal was not logged"
grep -q "it authenticated as role [0-9]*, not as an SMP" "$T_DIR"/node.*.log || c_fail "the wrong role's refusal was not logged"
grep -q "refusing a second link from member .*: its link is live" "$T_DIR"/node.*.log \
  || c_fail "the takeover of a live member's link was not refused"
# Every case past the HELLO, on an SMP whose group mates are not running
# (the tool is the only other member linked to it): each refused.
"$PTD" smp --job lone --rank 0 --socket "$T_DIR/lone.sock" --shm-prefix "$T_PREFIX" --code 2+1 \
  --group 0 --member 0 --node-id a --group-node 0:a=127.0.0.1 --group-node 1:b=127.0.0.1 \
  --group-node 2:c=127.0.0.1 --key "$C_KEY" --peer-listen 127.0.0.1 --log-level 7 >"$T_DIR/lone.log" 2>&1 &
lone=$!
deadline=$(( $(date +%s) + 10 ))
until lport=$(sed -n 's/.*taking the group.s chunks on 127\.0\.0\.1:\([0-9]*\)$/\1/p' "$T_DIR/lone.log") && [ -n "$lport" ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "a lone ptd smp did not listen: $(cat "$T_DIR/lone.log")"
  sleep 0.05
done
"$BUILD/tests/pt-peer-hostile" "$C_KEY" 127.0.0.1 "$lport" lone 0 0 2 1 a b c >"$T_DIR/hostile2.out" 2>&1 \
  || c_fail "a hostile peer was not refused: $(cat "$T_DIR/hostile2.out") $(tail -n 20 "$T_DIR/lone.log")"
kill -0 "$lone" 2>/dev/null || c_fail "the lone SMP died under the hostile peer: $(tail -n 20 "$T_DIR/lone.log")"
kill -TERM "$lone"; wait "$lone"
say "hostile peer, every case: $(tail -n 1 "$T_DIR/hostile2.out")"
deadline=$(( $(date +%s) + 60 ))
until q=$(c_job_field cq committed_step) && [ "$q" -ge $(( before + 5 )) ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job cq committed no more after the hostile peer ($q, was $before)"
  sleep 0.2
done
c_ptctl stop cq --keep >"$T_DIR/stop.out" 2>&1 || c_fail "ptctl stop --keep failed: $(cat "$T_DIR/stop.out")"
c_wait_job_state cq stopped 30
q=$(c_job_field cq committed_step)
c_ptctl status cq --json >"$T_DIR/cq.json" || c_fail "ptctl status cq failed"
groups=$(python3 -c '
import json, sys
job = [x for x in json.load(open(sys.argv[1]))["jobs"] if x["job"] == "cq"][0]
for g in job["groups"]:
    print(" ".join(str(m["rank"]) for m in g["members"]))
' "$T_DIR/cq.json") || c_fail "no groups in ptctl status: $(cat "$T_DIR/cq.json")"
[ "$(printf '%s\n' "$groups" | wc -l)" = 2 ] || c_fail "expected 2 coding groups, got: $groups"
while read -r ranks; do
  objs=()
  for r in $ranks; do objs+=("/${T_PREFIX}pt.cq.$r"); done
  "$BUILD/tests/pt-ec-verify" 2 1 "$q" "${objs[@]}" >"$T_DIR/verify.out" 2>&1 \
    || c_fail "parity of ranks $ranks at step $q: $(cat "$T_DIR/verify.out")"
  say "$(cat "$T_DIR/verify.out") (ranks $ranks)"
done <<<"$groups"
# The check tells wrong from right: the same objects in another member
# order are not a group's parity.
set -- $(printf '%s\n' "$groups" | head -n 1)
"$BUILD/tests/pt-ec-verify" 2 1 "$q" "/${T_PREFIX}pt.cq.$2" "/${T_PREFIX}pt.cq.$1" "/${T_PREFIX}pt.cq.$3" \
  >"$T_DIR/verify.out" 2>&1
[ $? = 1 ] || c_fail "pt-ec-verify took members out of order: $(cat "$T_DIR/verify.out")"
say "ok: 3 nodes x 2 ranks, code 2+1: $commits commits, $p protected steps ($gaveup chunks refused for steps given up), digests equal"

