#!/usr/bin/env bash
# tests/demo_cluster.sh — the main job, `make demo`: a cluster on one
# machine. A ptd controller, three cluster-mode ptd nodes and a spare on
# loopback (each node with shared memory of its own, as on 4 machines);
# `ptctl start` runs a job of three nodes x two ranks of the reference
# trainer (its all-reduce spans the nodes) at erasure code 2+1, a snapshot
# every step, a step committed when it is PROTECTED on every node. Then a
# trainer on a node other than rank 0's is killed with SIGKILL (the whole
# job restarts in a new epoch from the committed step); the controller
# itself is killed with SIGKILL and started again on its state dir (the
# nodes reconnect, the trainers never stopped, no committed step is lost
# or invented); and a whole node is lost, its processes and its memory:
# the spare takes its place and its SMPs rebuild the lost node's snapshots
# from their coding groups. `ptctl status` is shown at each point; the
# final digests are compared with a fault-free run without pt, and a
# summary says what the failures cost, what the rebuild moved, and what
# reading a disk checkpoint of the same state would have cost.
#
# Usage: tests/demo_cluster.sh [BUILD_DIR]   (the single-node demo is
# tests/demo.sh, `make demo-node`)
set -u
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
T_NAME=demo
. tests/lib.sh
. tests/cluster.sh

NODES=3 RPN=${DEMO_RANKS_PER_NODE:-2} STEPS=${DEMO_STEPS:-300} MB=${DEMO_STATE_MB:-8}
DISK_FILE=${DEMO_DISK_DIR:-/var/tmp}/pt-demo-ckpt.$$
WORLD=$((NODES * RPN))
JOB=demo$$
# 60 ms a step: the job must outlive the controller's outage (step 5 to 6,
# from the kill at half the steps). At 40 ms a loaded 2-core machine (load
# 6) let the job end while the controller was away, its last steps never
# committed, and step 6 waited in vain for a commit.
ARGS=(--steps "$STEPS" --state-mb "$MB" --batch 4 --log-every 1)
trap 'c_cleanup; rm -f /dev/shm/"$T_PREFIX"*pt."$JOB".* 2>/dev/null; rm -f "$DISK_FILE"; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
hr() { printf '%s\n' "------------------------------------------------------------------------"; }
t0=$(date +%s.%N)

job_field() { c_job_field "$JOB" "$1"; } # a field of the job in `ptctl status JOB --json`
wait_until() { # wait_until SECONDS WHAT CMD...: CMD until it succeeds
  local deadline=$(( $(date +%s) + $1 )) what=$2; shift 2
  until "$@"; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "timed out after a while waiting for $what"
    sleep 0.1
  done
}
committed_at_least() { local c; c=$(job_field committed_step); [ -n "$c" ] && [ "$c" -ge "$1" ]; }
epoch_at_least() { local e; e=$(job_field epoch); [ -n "$e" ] && [ "$e" -ge "$1" ]; }
job_is() { [ "$(job_field state)" = "$1" ]; }
show_status() { c_ptctl status "$JOB" | sed 's/^/   /'; }

hr; echo "pt cluster demo: a ptd controller and $NODES ptd nodes on loopback, one job of"
echo "$NODES nodes x $RPN ranks of pt-train, $STEPS steps, ~$MB MiB of state per rank, a snapshot"
echo "every step, committed when every node holds it."; hr
echo "1. fault-free reference digests ($WORLD ranks of pt-train --no-pt, all-reduce over TCP)"
t_reference "$WORLD" "${ARGS[@]}" # (the delay below only sleeps: not in the digests)
ARGS+=(--step-delay-ms 60)
for ((r = 0; r < WORLD; r++)); do echo "   rank $r: $(cat "$T_DIR/ref.$r")"; done

echo "2. ptd controller, and ptd node --controller on nodes a, b, c and a spare, d"
c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
# One after the other: the job is placed in registration order on a b c,
# and d, registered last, is the spare. Each node's shared memory is its
# own (its prefix), as on separate machines.
for id in a b c d; do
  c_node_start "$id" --capacity "$RPN" --shm-prefix "${T_PREFIX}$id."
  c_wait_node_state "$id" alive 10
done
c_ptctl nodes | sed 's/^/   /'

echo "3. ptctl start --job $JOB --nodes $NODES --ranks-per-node $RPN -- pt-train ..."
c_ptctl start --job "$JOB" --nodes "$NODES" --ranks-per-node "$RPN" --slots 3 --code 2+1 --master-port "$T_PORT" \
  --backoff-ms 100 -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" 2>&1 | sed 's/^/   /'
wait_until 30 "the job to run" job_is running
wait_until 60 "a commit at step $((STEPS / 5))" committed_at_least $((STEPS / 5))
show_status

# The victim: the trainer of a node that does not hold rank 0.
read -r victim_node first < <(c_ptctl status "$JOB" --json | python3 -c '
import json, sys
for p in json.load(sys.stdin)["jobs"][0]["parts"]:
    if p["first_rank"] != 0:
        print(p["node"], p["first_rank"]); break')
[ -n "$victim_node" ] || c_fail "no node without rank 0"
pid=$("$PTCTL" --state-dir "$T_DIR/node.$victim_node" status --json | python3 -c '
import json, sys
print(json.load(sys.stdin)["ranks"][0]["trainer_pid"])')
c_before_kill=$(job_field committed_step)
kill -KILL "$pid"
echo "4. kill -9 of the trainer on node $victim_node (pid $pid, global rank $first), committed step $c_before_kill"
wait_until 30 "epoch 2" epoch_at_least 2
wait_until 30 "the job to run again" job_is running
grep -hE 'part .*failed|restore from step' "$T_DIR"/node.?.log | sed 's/^/   /' | head -n 6
show_status

wait_until 90 "a commit at step $((STEPS / 2))" committed_at_least $((STEPS / 2))
c_before_ctl=$(job_field committed_step)
kill -KILL "$C_CTL_PID"; wait "$C_CTL_PID" 2>/dev/null; C_CTL_PID=
echo "5. kill -9 of the controller (committed step $c_before_ctl); the trainers train on:"
sleep 1
for id in a b c; do
  n=$("$PTCTL" --state-dir "$T_DIR/node.$id" status --json | python3 -c '
import json, sys
r = json.load(sys.stdin)["ranks"][0]
print(r["state"], r.get("last_sealed", "-"))')
  echo "   node $id: trainer ${n% *}, last sealed step ${n#* }"
done
c_ptctl status "$JOB" >/dev/null 2>&1; echo "   ptctl status: exit $? (the controller is down)"
C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
c_after=$(job_field committed_step)
echo "6. the controller started again on its state dir: its journal says committed step $c_after;"
echo "   the nodes reconnect"
[ -n "$c_after" ] && [ "$c_after" -ge "$c_before_ctl" ] \
  || c_fail "the restarted controller says committed step '$c_after', older than $c_before_ctl"
for id in a b c; do c_wait_node_state "$id" alive 15; done
wait_until 60 "a commit after the controller's restart" committed_at_least $((c_after + 5))
show_status

# A whole node lost: its ptd, its trainers and SMPs SIGKILLed together,
# its shared memory removed (what a power cut leaves). Its processes are
# the ones its ptd reports.
pids="${C_NODE_PID[b]} $("$PTCTL" --state-dir "$T_DIR/node.b" status --json | python3 -c '
import json, sys
print(" ".join("%d %d" % (r["trainer_pid"], r["smp_pid"]) for r in json.load(sys.stdin)["ranks"]))')"
e_before_loss=$(job_field epoch)
c_before_loss=$(job_field committed_step)
kill -KILL $pids 2>/dev/null
wait "${C_NODE_PID[b]}" 2>/dev/null
unset "C_NODE_PID[b]"
rm -f /dev/shm/"${T_PREFIX}b."* 2>/dev/null
t_loss=$(date +%s.%N)
echo "7. node b lost whole (committed step $c_before_loss): ptd, trainers and SMPs killed"
echo "   (SIGKILL: $pids), its shared memory removed"
c_ctl_wait_log "node 'b' lost; spare 'd' takes its place" 30
grep -hoE "job '$JOB': node 'b' lost; spare 'd' takes its place.*" "$C_CTL_LOG" | tail -n 1 | sed 's/^/   controller: /'
wait_until 60 "the job to run on the spare" epoch_at_least $((e_before_loss + 1))
wait_until 60 "the job to run again" job_is running
t_running=$(date +%s.%N)
grep -hoE "ptd smp [0-9]+: step [0-9]+ rebuilt from members.*" "$T_DIR/node.d.log" | sed 's/^/   node d: /'
wait_until 90 "a commit after the rebuild" committed_at_least $((c_before_loss + 5))
show_status

wait_until 120 "the job to finish" job_is done
echo "8. job done; final digests:"
for ((r = 0; r < WORLD; r++)); do
  if cmp -s "$T_DIR/ref.$r" "$T_DIR/out.$r"; then same="== fault-free run"; else same="DIFFERS from the fault-free run"; fi
  echo "   rank $r: $(cat "$T_DIR/out.$r") $same"
done
t_check_digests "$WORLD" >/dev/null
show_status

c_ptctl status "$JOB" --json >"$T_DIR/final.json"
# What a disk checkpoint of the rebuilt state would have cost to read: the
# same bytes written to a file and read back with O_DIRECT (no page cache).
rb_bytes=$(grep -hoE "rebuilt from members [0-9,]+: [0-9]+ bytes" "$T_DIR/node.d.log" | awk '{s += $(NF-1)} END {print s + 0}')
disk_s=nan
if [ "$rb_bytes" -gt 0 ]; then
  mib=$(( (rb_bytes + 1048575) / 1048576 ))
  if dd if=/dev/zero of="$DISK_FILE" bs=1M count="$mib" oflag=direct conv=fsync status=none 2>/dev/null; then
    disk_s=$(dd if="$DISK_FILE" of=/dev/null bs=1M iflag=direct 2>&1 | sed -n 's/.* copied, \([0-9.]*\) s.*/\1/p')
    [ -n "$disk_s" ] || disk_s=nan
  fi
  rm -f "$DISK_FILE"
fi
python3 - "$T_DIR" "$c_before_kill" "$c_before_ctl" "$c_after" "$(date +%s.%N)" "$t0" "$STEPS" "$RPN" \
  "$c_before_loss" "$t_loss" "$t_running" "$disk_s" "${DEMO_DISK_DIR:-/var/tmp}" <<'PY'
import glob, json, re, sys
d, c_kill, c_ctl, c_after, t1, t0, steps, rpn = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
c_loss, t_loss, t_running, disk_s, disk_dir = int(sys.argv[9]), float(sys.argv[10]), float(sys.argv[11]), float(sys.argv[12]), sys.argv[13]
rb = [tuple(map(int, m.groups())) for m in re.finditer(
    r"step (\d+) rebuilt from members [0-9,]+: (\d+) bytes in (\d+) ms, (\d+) bytes received",
    open(f"{d}/node.d.log", errors="replace").read())]
job = json.load(open(f"{d}/final.json"))["jobs"][0]
restores = []
for log in sorted(glob.glob(f"{d}/node.?.log")):
    for line in open(log, errors="replace"):
        m = re.search(r"restore from step (\d+)", line)
        if m: restores.append(int(m.group(1)))
print("-" * 72)
print("summary")
print(f"  nodes x ranks        3 x {rpn}, {steps} steps")
print(f"  epochs               {job['epoch']} (restarts after the trainer's death and the node's loss)")
print(f"  committed step       {job.get('committed_step')} ({job.get('commits', '-')} commits across the nodes)")
print(f"  trainer killed       at committed step {c_kill}; every node restored step {min(restores) if restores else '-'}")
print(f"  controller killed    at committed step {c_ctl}; restarted, its journal said {c_after}: nothing lost")
if rb:
    S = sum(r[1] for r in rb); B = sum(r[3] for r in rb); ms = max(r[2] for r in rb)
    print(f"  node b lost          at committed step {c_loss}; spare d rebuilt step {rb[0][0]} for {len(rb)} rank(s):")
    print(f"                       {S / 1e6:.1f} MB in {ms} ms (the slowest rank), {B / 1e6:.1f} MB received;")
    print(f"                       the job ran again {t_running - t_loss:.1f} s after the loss (3 s of it the dead deadline)")
    disk = f"{disk_s:.3f} s" if disk_s == disk_s else "not measured (O_DIRECT refused)"
    print(f"  disk checkpoint      reading the same {S / 1e6:.1f} MB with O_DIRECT from {disk_dir}: {disk}")
print(f"  wall time            {t1 - t0:.1f} s")
print("-" * 72)
PY
echo "demo: OK — the resumed run across nodes is bit-for-bit the run that never failed"
