#!/usr/bin/env bash
# The persistent tier of a cluster job: a controller and 5 cluster-mode
# nodes on loopback (a b c run the job, d e are spares), a job of 3 nodes x
# 1 rank of pt-train with code 2+1 and --persist-dir on a directory every
# node sees (as a shared file system), every 3rd commit flushed.
#
# 1. m+1 nodes of the group lost: once a step is complete on disk, b and c
#    are lost whole (processes SIGKILLed, objects removed): 2 of the 2+1
#    group's 3 members, more than the code rebuilds. The controller does
#    not fail the job: spares d and e take their places and the next epoch
#    restores the newest complete step from disk on every part (d and e
#    read the files b and c wrote), said in its log and in ptctl status
#    (restored_from "disk"). The job runs to its end with every digest
#    equal to a fault-free run; the step restored is the newest complete
#    one at the loss; old steps are pruned to --persist-keep.
# 2. a damaged file: the same loss, and a byte of rank 1's file of the
#    newest complete step flipped before the spares read it. The spare's
#    SMP finds it (checksums), its part fails with disk_failed, the
#    controller marks the step bad and restores the complete step before
#    it; digests equal.
# 3. the whole cluster killed (controller, nodes, every process and shm
#    object) and started again on the same state dirs: the newest complete
#    step is restored from disk; digests equal.
# 4. a persist dir the nodes do not have: no part starts, the job fails
#    (once its restarts are spent: a file system still mounting may come)
#    with a clear error naming it (never a job that silently has no disk
#    tier).
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --persist-dir || skip "this build's ptctl start has no --persist-dir"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=${PC_STEPS:-140}
ARGS=(--steps $STEPS --state-mb 2 --batch 2 --log-every 10)
t_reference 3 "${ARGS[@]}"
PDIR=$T_DIR/persist
mkdir -m 0700 "$PDIR"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000 --node-wait-ms 60000
# (each node its own shm prefix, as on 5 machines: a spare never sees the
# lost node's objects)
for id in a b c d e; do
  c_node_start "$id" --capacity 1 --shm-prefix "${T_PREFIX}$id."
  c_wait_node_state "$id" alive 10 # registration order: the job on a b c
done

# Waits until JOB has a complete step on disk that is at least $2; echoes it.
wait_disk() {
  local deadline=$(( $(date +%s) + 60 )) d
  until d=$(c_job_field "$1" disk_step) && [ -n "$d" ] && [ "$d" -ge "$2" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "job '$1' has no complete step on disk past $2 in 60 s (at '$d'): $(grep -E "disk|persist" "$C_CTL_LOG" | tail -n 5)"
    sleep 0.1
  done
  echo "$d"
}

# Nodes X and Y of JOB lost at once, whole: their ptds first (nothing
# respawns), then every process they ran or that names their state dirs;
# LOSS_DISK and LOSS_COMMITTED: the job's newest complete step on disk and
# committed step right then (before the controller can act: it declares
# them dead after 2 s). lose_two_reap: waits for those processes, removes
# the nodes' objects.
lose_two() {
  local x=$1 y=$2
  LOSS_PROCS="$(c_node_pids "$x") $(c_node_pids "$y")"
  c_node_kill "$x" KILL
  c_node_kill "$y" KILL
  LOSS_PROCS="$LOSS_PROCS $(pgrep -f -- "$T_DIR/node\.$x/" | tr '\n' ' ') $(pgrep -f -- "$T_DIR/node\.$y/" | tr '\n' ' ')"
  for p in $LOSS_PROCS; do kill -KILL "$p" 2>/dev/null; done
  LOSS_NODES="$x $y"
  sleep 0.1 # what they said before they died has arrived
  LOSS_DISK=$(c_job_field "$3" disk_step)
  LOSS_COMMITTED=$(c_job_field "$3" committed_step)
}
lose_two_reap() {
  local x y procs=$LOSS_PROCS
  set -- $LOSS_NODES
  x=$1 y=$2
  for p in $procs; do
    for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
    kill -0 "$p" 2>/dev/null && c_fail "process $p of node $x or $y survived SIGKILL"
  done
  rm -f /dev/shm/"${T_PREFIX}$x."* /dev/shm/"${T_PREFIX}$y."*
  say "nodes $x and $y lost: processes $procs killed, their objects removed"
}

run_job() { # JOB: started on the 3 free nodes, persisted every 3rd commit
  rm -f "$T_DIR"/out.*
  c_ptctl start --job "$1" --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 \
    --master-port "$T_PORT" --max-restarts 10 \
    --persist-dir "$PDIR" --persist-every 3 --persist-keep 2 \
    -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 50 --digest-file "$T_DIR/out.%r" \
    >"$T_DIR/start.$1.out" 2>&1 || c_fail "ptctl start $1 failed: $(cat "$T_DIR/start.$1.out")"
}

# ---- 1. two of the group's three members lost: restored from disk ----
run_job pc
c_wait_committed pc 10 >/dev/null
first=$(wait_disk pc 1)
wait_disk pc $(( first + 1 )) >/dev/null
# ptctl snapshots: what the controller knows of the job's steps
c_ptctl snapshots pc --json >"$T_DIR/snaps.json" || c_fail "ptctl snapshots pc failed"
python3 - "$T_DIR/snaps.json" <<'EOF' || c_fail "ptctl snapshots pc is wrong: $(cat "$T_DIR/snaps.json")"
import json, sys
s = json.load(open(sys.argv[1]))
assert s["job"] == "pc" and s["persist_dir"].endswith("/persist"), s
assert [m["node"] for m in s["memory"]] == ["a", "b", "c"], s["memory"]
assert all(m["held"] for m in s["memory"]), s["memory"]   # committed steps held
assert s["groups"][0]["tolerates"] == 1, s["groups"]
done = [d for d in s["disk"] if d["complete"]]
assert 1 <= len(done) <= 2, s["disk"]                     # --persist-keep 2
for d in done:
    assert d["files"] == 3 and d["bytes"] >= 3 * (2 << 20) and d["age_ms"] is not None, d
steps = [d["step"] for d in done]
assert steps == sorted(steps), steps
EOF
c_ptctl snapshots pc | grep -Eq "^[0-9]+ +yes +3 " || c_fail "ptctl snapshots pc (table) lists no complete step: $(c_ptctl snapshots pc)"
lose_two b c pc
D=$LOSS_DISK R=$LOSS_COMMITTED
lose_two_reap
say "lost b and c with step $R committed, step $D complete on disk"
# Steps redone: at most --persist-every committed ones (plus the
# uncommitted ones), and the few committed while the newest marked step's
# files were still being made durable when the loss fell (2 at most here:
# 2 MiB per rank against 50 ms steps).
[ $(( R - D )) -le 5 ] || c_fail "step $R committed at the loss, step $D complete on disk: $(( R - D )) committed steps to redo, more than --persist-every 3 (+2 in flight)"
c_ctl_wait_log "job 'pc': coding group 0 lost 2 of 3 members \\(b, c\\), more than code 2\\+1 rebuilds: the next epoch restores step $D from disk" 20
c_ctl_wait_log "job 'pc' epoch [0-9]+: restoring step $D from disk" 20
c_wait_job_state pc done 150
t_check_digests 3
python3 - "$D" <<EOF || c_fail "status after the restore from disk is wrong: $(c_ptctl status pc --json)"
import json, subprocess, sys
out = subprocess.run(["$PTCTL", "--controller", "$C_CTL_ADDR", "--key", "$C_KEY",
                      "status", "pc", "--json"], capture_output=True, check=True).stdout
job = [x for x in json.loads(out)["jobs"] if x["job"] == "pc"][0]
D = int(sys.argv[1])
assert job["restored_from"] == "disk", job["restored_from"]
assert job["restore_step"] == D, (job["restore_step"], D)
parts = {p["node_index"]: p["node"] for p in job["parts"]}
assert parts[0] == "a" and sorted([parts[1], parts[2]]) == ["d", "e"], parts
assert job["spec"]["persist_dir"] == "$PDIR" and job["spec"]["persist_every"] == 3, job["spec"]
assert job["persisted"] >= 1 and job["disk_step"] >= D, job
EOF
for id in d e; do
  grep -q "restore from disk: step $D, the controller's choice" "$T_DIR/node.$id.log" \
    || c_fail "spare $id did not restore step $D from disk: $(grep -iE 'restor' "$T_DIR/node.$id.log" | tail -n 5)"
done
grep -qE "rank [0-9]+.*could not restore|fails its checksums" "$T_DIR"/node.[ade].log \
  && c_fail "a fault-free restore from disk refused something"
# --persist-keep 2: at most the 2 complete steps and one being written.
n=$(find "$PDIR/pc" -mindepth 1 -maxdepth 1 -name 'step-*' | wc -l)
[ "$n" -le 3 ] || c_fail "$n step directories under $PDIR/pc, --persist-keep 2: $(ls "$PDIR/pc")"
say "ok: 2 of 3 members lost; step $D (committed $R at the loss) restored from disk on a, d, e; digests equal; $n step directories kept"

# ---- 2. the newest complete step's file damaged: the one before it ----
# (the nodes of the job: a d e; the spares now b c, started again empty)
c_node_start b --capacity 1 --shm-prefix "${T_PREFIX}b."
c_node_start c --capacity 1 --shm-prefix "${T_PREFIX}c."
c_wait_node_state b alive 10
c_wait_node_state c alive 10
run_job pd
c_wait_committed pd 10 >/dev/null
first=$(wait_disk pd 1)
wait_disk pd $(( first + 1 )) >/dev/null # two complete steps
on=$(c_ptctl status pd --json | python3 -c '
import json, sys
job = [x for x in json.load(sys.stdin)["jobs"] if x["job"] == "pd"][0]
print(" ".join(p["node"] for p in sorted(job["parts"], key=lambda p: p["node_index"])))')
set -- $on
n1=$2 n2=$3
lose_two "$n1" "$n2" pd
D=$LOSS_DISK
f=$(printf '%s/pd/step-%020d/rank-1.pts' "$PDIR" "$D")
[ -f "$f" ] || c_fail "no file $f of the newest complete step"
python3 - "$f" <<'EOF'
import struct, sys
with open(sys.argv[1], "r+b") as f:
    h = f.read(192)
    hbytes, = struct.unpack_from("<I", h, 12)
    f.seek(hbytes + 4096 + 17)   # in the first region's data
    b = f.read(1)
    f.seek(hbytes + 4096 + 17)
    f.write(bytes([b[0] ^ 0x40]))
EOF
lose_two_reap
say "lost $n1 and $n2; a byte of $f (step $D) flipped"
c_ctl_wait_log "job 'pd': step $D on disk cannot be restored" 40
c_ctl_wait_log "job 'pd': the restore from disk failed: the next epoch restores step [0-9]+ from disk" 20
P=$(sed -n "s/.*job 'pd': the restore from disk failed: the next epoch restores step \([0-9]*\) from disk.*/\1/p" "$C_CTL_LOG" | tail -n 1)
c_ctl_wait_log "job 'pd' epoch [0-9]+: restoring step $P from disk" 20
[ "$P" -lt "$D" ] || c_fail "after step $D failed, the job restored step $P from disk"
c_wait_job_state pd done 150
t_check_digests 3
say "ok: step $D's damaged file refused; step $P, the complete step before it, restored; digests equal"

# ---- 3. the whole cluster killed and started cold ----
# (a power loss: the controller, every node and every process SIGKILLed,
# every shm object gone; the controller's state dir and the persist dir
# survive. Started again, the nodes come back empty: no group can rebuild
# anything, and the controller restores the newest complete step from disk.)
run_job pf
c_wait_committed pf 10 >/dev/null
wait_disk pf 6 >/dev/null
all="$(for id in "${!C_NODE_PID[@]}"; do c_node_pids "$id"; done | tr '\n' ' ')"
for id in a b c d e; do c_node_kill "$id" KILL; done
all="$all $(pgrep -f -- "$T_DIR/node\." | tr '\n' ' ')"
for p in $all; do kill -KILL "$p" 2>/dev/null; done
sleep 0.1
D=$(c_job_field pf disk_step)
kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
for p in $all; do
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
rm -f /dev/shm/"${T_PREFIX}"*
say "the whole cluster killed (controller, nodes, processes $all; every object removed); step $D complete on disk"
cp "$C_CTL_LOG" "$T_DIR/controller.before-cold.log"
C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000 --node-wait-ms 60000
for id in a b c d e; do c_node_start "$id" --capacity 1 --shm-prefix "${T_PREFIX}$id."; done
c_ctl_wait_log "job 'pf' epoch [0-9]+: restoring step $D from disk" 60
c_wait_job_state pf done 150
t_check_digests 3
say "ok: the whole cluster started cold: step $D restored from disk, digests equal"

# ---- 4. a persist dir a node cannot use ----
# (absent on the nodes: root is not kept out by a mode)
c_ptctl start --job pe --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 \
  --master-port "$T_PORT" --persist-dir "$T_DIR/missing" -- "$TRAIN" "${ARGS[@]}" \
  >"$T_DIR/start.pe.out" 2>&1 || true
deadline=$(( $(date +%s) + 30 ))
until s=$(c_job_field pe state) && [ "$s" = failed ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job pe with an unusable persist dir is '$s', not failed"
  sleep 0.2
done
reason=$(c_job_field pe reason)
case "$reason" in
  *"'$T_DIR/missing': No such file or directory"*) ;;
  *) c_fail "job pe failed without naming the persist dir: $reason" ;;
esac
say "ok: an unusable persist dir refused: $reason"
