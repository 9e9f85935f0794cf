#!/usr/bin/env bash
# A power loss of the whole node, restored from the persistent tier: a
# 3-rank job persists every 10th commit at the default rate; at a random
# moment every process is SIGKILLed and every shm object removed (memory
# gone, only the disk and the state directory survive). Started again, the
# node restores every rank from the newest complete step on disk, verified,
# redoing at most --persist-every steps plus what a flush in flight and the
# uncommitted steps cost; the run ends bit-for-bit equal to a fault-free
# one. Then the same persist directory refuses a cold start with another
# rank count (--resume-from), saying both counts, and --resume-from starts
# the job from it on a fresh state directory.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=3 EVERY=10
ARGS=(--steps 220 --state-mb 4 --batch 2 --log-every 1 --step-delay-ms 20)
t_reference $RANKS "${ARGS[@]}"
P=$T_DIR/persist
mkdir -m 700 "$P"
# Every complete step kept: the checks below look for the restored one.
POPTS=(--slots 3 --persist-dir "$P" --persist-every $EVERY --persist-keep 100)
t_node_start "$T_DIR/sd" $RANKS "${POPTS[@]}" -- "${ARGS[@]}"
t_wait_count 'step [0-9]+ is on disk, complete' 1 60
sleep "0.$((RANDOM % 8 + 1))"
kill -KILL "$T_NODE_PID"
pkill -KILL -f -- "--job $T_JOB( |$)"
pkill -KILL -f -- "pt-train.*$T_DIR"
sleep 0.3
T_NODE_PID=
rm -f /dev/shm/"$T_PREFIX"pt."$T_JOB".*
committed=$(grep -Eo 'ptd node: commit step [0-9]+' "$T_DIR/node.log" | tail -1 | grep -Eo '[0-9]+$')
newest=$(for d in "$P/$T_JOB"/step-*; do [ -f "$d/MANIFEST" ] && basename "$d"; done | sort | tail -1)
newest=$((10#${newest#step-}))
say "power lost with step $committed committed; newest complete on disk: $newest"
cp -a "$P" "$T_DIR/cold" # for the cold start below

t_node_start "$T_DIR/sd" $RANKS "${POPTS[@]}" -- "${ARGS[@]}"
t_wait_count "^restored step $newest$" $((RANKS - 1)) 60
# ptctl status names the tier the restore came from and the disk's state.
"$PTCTL" --state-dir "$T_DIR/sd" status --json >"$T_DIR/status.json" || fail "ptctl status failed"
python3 - "$T_DIR/status.json" "$newest" "$P/$T_JOB" <<'PY' || fail "ptctl status does not show the restore from disk"
import json, sys
st = json.load(open(sys.argv[1]))
assert st["restored_from"] == "disk", st["restored_from"]
assert f"step {sys.argv[2]} is the newest complete step on disk" in st["restore_reason"], st["restore_reason"]
assert st["persist_dir"] == sys.argv[3], st["persist_dir"]
assert st["persist_step"] is not None and st["persist_step"] >= int(sys.argv[2]), st["persist_step"]
PY
"$PTCTL" --state-dir "$T_DIR/sd" status | grep -q "restored    from disk" || fail "ptctl status (table) does not say the restore came from disk"
# ptctl snapshots: every rank's slots, and the step restored among the
# complete ones on disk, this instance's, with every rank's file.
"$PTCTL" --state-dir "$T_DIR/sd" snapshots --json >"$T_DIR/snaps.json" || fail "ptctl snapshots failed"
python3 - "$T_DIR/snaps.json" "$newest" $RANKS <<'PY' || fail "ptctl snapshots is wrong"
import json, sys
d = json.load(open(sys.argv[1]))
step, ranks = int(sys.argv[2]), int(sys.argv[3])
assert d["memory_error"] is None, d["memory_error"]
assert sorted({s["rank"] for s in d["memory"]}) == list(range(ranks)), d["memory"]
assert len(d["memory"]) == 3 * ranks, len(d["memory"])
for r in range(ranks):
    held = [s for s in d["memory"] if s["rank"] == r and s["state"] == "COMMITTED"]
    assert held and all(s["record_ok"] for s in held), (r, d["memory"])
disk = {x["step"]: x for x in d["disk"]}
x = disk.get(step)
assert x is not None and x["complete"] and x["ours"] and x["files"] == ranks and x["bytes"] > 0, x
PY
"$PTCTL" --state-dir "$T_DIR/sd" snapshots | grep -Eq "^$newest +yes +$RANKS " || fail "ptctl snapshots (table) does not list step $newest complete"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
grep -q "restore from disk: step $newest is the newest complete step" "$T_DIR/node.log" \
  || fail "step $newest was not restored from disk"
n=$(grep -Ec "step $newest read from disk into slot [0-9]+: .*every block verified" "$T_DIR/node.log")
[ "$n" -ge $RANKS ] || fail "$n of $RANKS ranks read step $newest from disk"
# Committed steps lost: at most one interval, plus the steps a flush and
# its manifest take (0.3 s at 20 ms a step, on a loaded 2-core machine).
lost=$((committed - newest))
[ $lost -le $((EVERY + 15)) ] || fail "restored step $newest, $lost steps behind the committed $committed"
t_check_digests $RANKS
say "ok: $lost committed steps redone from disk (--persist-every $EVERY)"

# A cold start with another rank count is refused, naming both.
"$PTD" node --ranks 2 --job "$T_JOB" --state-dir "$T_DIR/sd2" --shm-prefix "$T_PREFIX" \
  --resume-from "$P" -- "$TRAIN" --steps 5 >"$T_DIR/cold2.log" 2>&1
rc=$?
[ $rc -ne 0 ] || fail "a cold start of 2 ranks from files of 3 was accepted"
grep -Eq "written by a job of 3 ranks.*2" "$T_DIR/cold2.log" || { cat "$T_DIR/cold2.log"; fail "the refusal does not name the counts"; }
# A cold start on a fresh state directory, from the copy of the disk taken
# at the power loss: the job goes on from its newest complete step to the
# end, bit-exact.
: >"$T_DIR/node.log"
rm -f "$T_DIR"/out.*
last=$newest
t_node_start "$T_DIR/sd3" $RANKS --slots 3 --resume-from "$T_DIR/cold" -- "${ARGS[@]}"
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "the cold start exited with $T_NODE_RC"
[ "$(grep -c "^restored step $last$" "$T_DIR/node.log")" -eq $RANKS ] \
  || fail "the cold start did not restore step $last on every rank"
t_check_digests $RANKS
grep -q "cold start of job '$T_JOB' instance" "$T_DIR/node.log" || fail "the cold start did not say so"
say "ok: a cold start on a fresh state directory resumed at step $last and ran to the end"
