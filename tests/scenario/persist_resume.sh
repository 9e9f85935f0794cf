#!/usr/bin/env bash
# A cold start of a cluster job from the files of an earlier run
# (ptctl start --resume-from), without the controller's journal of it: a
# controller and 3 cluster-mode nodes on loopback, a job of 3 nodes x 1
# rank of pt-train with code 2+1 and --persist-dir on a directory every
# node sees, every 3rd commit flushed.
#
# 1. The run: two steps complete on disk, then everything is gone — the
#    controller, the nodes, every process and shm object, and the state
#    dirs of the controller (its journal) and of the nodes. Only the
#    persist dir survives (a job resubmitted next week on new machines).
#    A byte of rank 1's file of the newest complete step is flipped.
# 2. A fresh controller and fresh nodes; ptctl start --resume-from DIR of
#    the same job name and shape: every node reads its rank's file
#    headers (DISK_PROBE), the controller finds the steps every rank has
#    of one flush, and the first epoch restores the newest from disk. Its
#    damaged file fails the checks, the controller restores the one
#    before it; the job runs to its end with every digest equal to a
#    fault-free run.
# 3. Another world size (2 nodes) from the same files: refused, naming
#    both sizes. A directory without any step: refused, saying so.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --resume-from || skip "this build's ptctl start has no --resume-from"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=${PR_STEPS:-120}
ARGS=(--steps $STEPS --state-mb 2 --batch 2 --log-every 10)
t_reference 3 "${ARGS[@]}"
PDIR=$T_DIR/persist
mkdir -m 0700 "$PDIR"

cluster_up() {
  C_CTL_PORT_WANT=${1:-0} c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000 --node-wait-ms 60000
  for id in a b c; do
    c_node_start "$id" --capacity 1 --shm-prefix "${T_PREFIX}$id."
    c_wait_node_state "$id" alive 10
  done
}
start_job() { # JOB NODES [ptctl start options...]
  local job=$1 nodes=$2; shift 2
  rm -f "$T_DIR"/out.*
  c_ptctl start --job "$job" --nodes "$nodes" --ranks-per-node 1 --slots 3 \
    --code "$([ "$nodes" = 3 ] && echo 2+1 || echo none)" \
    --master-port "$T_PORT" --max-restarts 10 "$@" \
    -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 50 --digest-file "$T_DIR/out.%r" \
    >"$T_DIR/start.$job.out" 2>&1
}
wait_failed() { # JOB SECONDS
  local deadline=$(( $(date +%s) + $2 )) s
  until s=$(c_job_field "$1" state) && [ "$s" = failed ]; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "job $1 is '$s', not failed, after $2 s"
    sleep 0.2
  done
}

# ---- 1. the earlier run, and everything but its files gone ----
cluster_up
start_job pr 3 --persist-dir "$PDIR" --persist-every 3 --persist-keep 2 \
  || c_fail "ptctl start pr failed: $(cat "$T_DIR/start.pr.out")"
c_wait_committed pr 10 >/dev/null
deadline=$(( $(date +%s) + 60 ))
until n=$(c_ptctl snapshots pr --json | python3 -c '
import json, sys
print(sum(1 for d in json.load(sys.stdin)["disk"] if d["complete"]))') && [ "$n" -ge 2 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job pr has no 2 complete steps on disk in 60 s"
  sleep 0.1
done
all="$(for id in a b c; do c_node_pids "$id"; done | tr '\n' ' ')"
for id in a b c; do c_node_kill "$id" KILL; done
all="$all $(pgrep -f -- "$T_DIR/node\." | tr '\n' ' ')"
for p in $all; do kill -KILL "$p" 2>/dev/null; done
kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
for p in $all; do
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
done
rm -f /dev/shm/"${T_PREFIX}"*
mv "$C_CTL_LOG" "$T_DIR/controller.first.log"
for id in a b c; do mv "$T_DIR/node.$id.log" "$T_DIR/node.$id.first.log"; done
rm -rf "$C_CTL_DIR" "$T_DIR"/node.a "$T_DIR"/node.b "$T_DIR"/node.c
# The steps every rank's file is there for (the run may have been killed
# in the middle of a flush: that step has fewer).
steps=$(for d in "$PDIR"/pr/step-*; do
  [ "$(ls "$d"/rank-*.pts 2>/dev/null | wc -l)" = 3 ] && basename "$d" | sed 's/^step-0*//'
done | sort -n | tr '\n' ' ')
set -- $steps
[ $# -ge 2 ] || c_fail "fewer than 2 steps with every rank's file under $PDIR/pr: $(ls -R "$PDIR/pr")"
D=${!#}
f=$(printf '%s/pr/step-%020d/rank-1.pts' "$PDIR" "$D")
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
say "everything gone but $PDIR/pr (steps with every rank's file: $steps); a byte of step $D's rank 1 flipped"

# ---- 2. a fresh cluster resumes the job from the files ----
cluster_up
start_job pr 3 --resume-from "$PDIR" --persist-dir "$PDIR" --persist-every 3 \
  || c_fail "ptctl start --resume-from failed: $(cat "$T_DIR/start.pr.out")"
c_ctl_wait_log "job 'pr': step $D is the newest step every rank's file under '$PDIR/pr' holds, of one flush" 30
c_ctl_wait_log "job 'pr': step $D on disk cannot be restored" 40
# ptctl snapshots: the steps the probe found, the damaged one said so
# (before the next epoch's own steps complete and replace them)
c_ptctl snapshots pr --json >"$T_DIR/snaps.json" || c_fail "ptctl snapshots pr failed"
python3 - "$T_DIR/snaps.json" "$D" <<'EOF' || c_fail "ptctl snapshots pr after the probe is wrong: $(cat "$T_DIR/snaps.json")"
import json, sys
s, D = json.load(open(sys.argv[1])), int(sys.argv[2])
disk = {d["step"]: d for d in s["disk"] if d["complete"]}
assert D in disk and "a restore from it failed" in disk[D]["why"], disk
older = [d for st, d in disk.items() if st < D]
assert older and all("an earlier run's" in d["why"] for d in older), disk
assert all(d["files"] == 3 and d["bytes"] >= 3 * (2 << 20) for d in disk.values()), disk
EOF
c_ctl_wait_log "job 'pr': the restore from disk failed: the next epoch restores step [0-9]+ from disk" 20
P=$(sed -n "s/.*job 'pr': the restore from disk failed: the next epoch restores step \([0-9]*\) from disk.*/\1/p" "$C_CTL_LOG" | tail -n 1)
[ "$P" -lt "$D" ] || c_fail "after step $D failed, the job restored step $P"
c_ctl_wait_log "job 'pr' epoch [0-9]+: restoring step $P from disk" 20
c_wait_job_state pr done 150
t_check_digests 3
grep -q "restore from disk: step $P" "$T_DIR"/node.[abc].log \
  || c_fail "no node says it restored step $P from disk: $(grep -ih 'restor' "$T_DIR"/node.[abc].log | tail -n 5)"
say "ok: a fresh cluster resumed pr from $PDIR: step $D's damaged file refused, step $P restored; digests equal"

# ---- 3. refusals ----
start_job pr 2 --resume-from "$PDIR" || c_fail "ptctl start pr (2 nodes) failed: $(cat "$T_DIR/start.pr.out")"
wait_failed pr 30
c_job_field pr reason | grep -q "written by a job of 3 ranks; this one has 2" \
  || c_fail "another world size: the reason does not name both: $(c_job_field pr reason)"
mkdir -m 0700 "$T_DIR/empty" "$T_DIR/empty/pq"
start_job pq 3 --resume-from "$T_DIR/empty" || c_fail "ptctl start pq failed: $(cat "$T_DIR/start.pq.out")"
wait_failed pq 30
c_job_field pq reason | grep -q "no step holds a file of every rank" \
  || c_fail "an empty directory: the reason is not clear: $(c_job_field pq reason)"
start_job pm 3 --resume-from "$T_DIR/missing" || c_fail "ptctl start pm failed: $(cat "$T_DIR/start.pm.out")"
wait_failed pm 30
c_job_field pm reason | grep -q "cannot read '$T_DIR/missing/pm'" \
  || c_fail "a missing directory: the reason does not name it: $(c_job_field pm reason)"
say "ok: another world size, an empty and a missing directory refused with clear reasons"
