#!/usr/bin/env bash
# A lost node rebuilt around a damaged survivor piece: 6 cluster-mode nodes
# on loopback, a job of 6 x 1 rank with code 4+2 (one coding group). After
# some commits node b is lost entirely (ptd, SMP, trainer killed, object
# removed) and, before it comes back, a byte of one survivor's parity row
# of the committed step R is flipped: the survivor X whose row is the first
# parity of the stripe holding b's chunk 0, a source of its rebuild. b's
# rebuilt bytes fail their checksums; with a survivor to spare (4+2 lost
# one), b rebuilds again without each source in turn until the bytes
# verify (without X), and the job ends with every digest equal to a
# fault-free run: a damaged piece is an erasure, never restored. Before
# it, the same loss without damage: the rebuild sums every lost slice along
# a chain of 4 survivors (repair pipelining), receives at most 1.2 bytes
# per byte rebuilt, and the digests equal the fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --code || skip "this build's ptctl has no --code"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=200
ARGS=(--steps $STEPS --state-mb 1 --batch 2 --log-every 10)
t_reference 6 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000 --node-wait-ms 60000
NODES=(a b c d e f)
for id in "${NODES[@]}"; do c_node_start "$id" --capacity 1 --shm-prefix "$T_PREFIX"; done
for id in "${NODES[@]}"; do c_wait_node_state "$id" alive 15; done

# ---- 1. a clean loss at 4+2: every lost slice summed along a chain of 4
# survivors (three relays), about one byte received per byte rebuilt ----
c_ptctl start --job nc --nodes 6 --ranks-per-node 1 --slots 3 --code 4+2 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start0.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start0.out")"
c_wait_committed nc 8 >/dev/null
mark=$(( $(wc -l <"$T_DIR/node.b.log") + 1 ))
c_lose_node b nc
c_wait_node_state b dead 20
c_node_start b --capacity 1 --shm-prefix "$T_PREFIX"
c_wait_job_state nc done 150
t_check_digests 6
line=$(tail -n +"$mark" "$T_DIR/node.b.log" | grep -E "step [0-9]+ rebuilt from members [0-9,]+: [0-9]+ bytes in [0-9]+ ms, [0-9]+ bytes received" | tail -n 1)
[ -n "$line" ] || c_fail "b never rebuilt its step at 4+2: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
if tail -n +"$mark" "$T_DIR/node.b.log" | grep -E 'fails its checksums|pipelined fetch .* failed|cannot rebuild'; then
  c_fail "b's clean 4+2 rebuild refused something"
fi
bytes=$(sed -n 's/.*: \([0-9]*\) bytes in.*/\1/p' <<<"$line")
recv=$(sed -n 's/.*ms, \([0-9]*\) bytes received.*/\1/p' <<<"$line")
awk -v r="$recv" -v b="$bytes" 'BEGIN { exit !(r <= 1.2 * b) }' \
  || c_fail "b received $recv bytes to rebuild $bytes at 4+2: more than 1.2 per byte"
say "clean loss, node b: ${line#*: }"
for f in "$T_DIR"/out.*; do rm -f "$f"; done

# ---- 2. the same loss with a survivor's piece damaged ----
c_ptctl start --job nr --nodes 6 --ranks-per-node 1 --slots 3 --code 4+2 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
c_wait_committed nr 8 >/dev/null
c_ptctl status nr --json >"$T_DIR/nr.json" || c_fail "ptctl status nr failed"
# b's member L; X = (L + k) % g holds parity row 0 of stripe L, where b's
# chunk 0 is (ec/rs.h: member M's chunk c is at stripe M - c, position c;
# stripe j's position p is member j + p's)
read -r L X xrank < <(python3 -c '
import json, sys
job = [x for x in json.load(open(sys.argv[1]))["jobs"] if x["job"] == "nr"][0]
g = job["groups"][0]["members"]
L = [m["member"] for m in g if m["node"] == "b"][0]
X = (L + 4) % 6
print(L, X, [m["rank"] for m in g if m["member"] == X][0])
' "$T_DIR/nr.json") || c_fail "no group in ptctl status: $(cat "$T_DIR/nr.json")"
c_lose_node b nr
c_wait_node_state b dead 20
R=$(c_job_field nr committed_step)
slot=$(c_flip_parity "/dev/shm/${T_PREFIX}pt.nr.$xrank" "$R") || c_fail "cannot damage member $X's parity of step $R"
say "member $X (rank $xrank): a byte of its parity row 0 of step $R flipped (slot $slot); b is member $L"
c_node_start b --capacity 1 --shm-prefix "$T_PREFIX"
c_wait_job_state nr done 150
t_check_digests 6
grep -qE "step [0-9]+ rebuilt from members [0-9,]+ fails its checksums at block [0-9]+: rebuilding it again without member" "$T_DIR/node.b.log" \
  || c_fail "b's rebuild never met the damaged piece: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
grep -q "rebuilding it again without member $X\$" "$T_DIR/node.b.log" \
  || c_fail "b never rebuilt without member $X: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
line=$(grep -E "step [0-9]+ rebuilt from members [0-9,]+: [0-9]+ bytes in [0-9]+ ms, [0-9]+ bytes received" "$T_DIR/node.b.log" | tail -n 1)
[ -n "$line" ] || c_fail "b never rebuilt its step: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
from=$(sed -n 's/.*rebuilt from members \([0-9,]*\):.*/\1/p' <<<"$line")
case ",$from," in *",$X,"*) c_fail "b's verified rebuild used the damaged member $X ($line)" ;; esac
say "node b: ${line#*: }"
say "ok: 4+2, a damaged survivor piece was an erasure: rebuilt without member $X, digests equal the fault-free run"
