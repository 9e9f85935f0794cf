#!/usr/bin/env bash
# tests/demo_cluster.sh — the main job, `make demo`: a cluster on one
# machine. A ptd controller and three cluster-mode ptd nodes on loopback;
# `ptctl start` runs a job of three nodes x two ranks of the reference
# trainer (its all-reduce spans the nodes), a snapshot every step, a step
# committed when every node holds it. Then a trainer on a node other than
# rank 0's is killed with SIGKILL (the whole job restarts in a new epoch
# from the committed step), and later the controller itself is killed with
# SIGKILL and started again on its state dir (the nodes reconnect, the
# trainers never stopped, no committed step is lost or invented). `ptctl
# status` is shown at each point; the final digests are compared with a
# fault-free run without pt, and a summary says what the failures cost.
#
# Usage: tests/demo_cluster.sh [BUILD_DIR]   (the single-node demo is
# tests/demo.sh, `make demo-node`)
set -u
cd "$(dirname "$0")/.."
BUILD=$(cd "${1:-build}" && pwd)
T_NAME=demo
. tests/lib.sh
. tests/cluster.sh

NODES=3 RPN=${DEMO_RANKS_PER_NODE:-2} STEPS=${DEMO_STEPS:-240} MB=${DEMO_STATE_MB:-16}
WORLD=$((NODES * RPN))
JOB=demo$$
# 60 ms a step: the job must outlive the controller's outage (step 5 to 6,
# from the kill at half the steps). At 40 ms a loaded 2-core machine (load
# 6) let the job end while the controller was away, its last steps never
# committed, and step 6 waited in vain for a commit.
ARGS=(--steps "$STEPS" --state-mb "$MB" --batch 4 --log-every 1 --step-delay-ms 60)
trap 'c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt."$JOB".* 2>/dev/null; t_cleanup' EXIT
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
t_reference "$WORLD" "${ARGS[@]}"
for ((r = 0; r < WORLD; r++)); do echo "   rank $r: $(cat "$T_DIR/ref.$r")"; done

echo "2. ptd controller, and ptd node --controller on nodes a, b, c"
c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
for id in a b c; do c_node_start "$id" --capacity "$RPN" --shm-prefix "$T_PREFIX"; done
for id in a b c; do c_wait_node_state "$id" alive 10; done
c_ptctl nodes | sed 's/^/   /'

echo "3. ptctl start --job $JOB --nodes $NODES --ranks-per-node $RPN -- pt-train ..."
# --code none until node loss is in the demo (issue 10): its kills and the
# controller's outage can leave a coded job's members out of step, and the
# demo's waits for commits then run out (the protection's known gap).
c_ptctl start --job "$JOB" --nodes "$NODES" --ranks-per-node "$RPN" --slots 3 --code none --master-port "$T_PORT" \
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

wait_until 120 "the job to finish" job_is done
echo "7. job done; final digests:"
for ((r = 0; r < WORLD; r++)); do
  if cmp -s "$T_DIR/ref.$r" "$T_DIR/out.$r"; then same="== fault-free run"; else same="DIFFERS from the fault-free run"; fi
  echo "   rank $r: $(cat "$T_DIR/out.$r") $same"
done
t_check_digests "$WORLD" >/dev/null
show_status

c_ptctl status "$JOB" --json >"$T_DIR/final.json"
python3 - "$T_DIR" "$c_before_kill" "$c_before_ctl" "$c_after" "$(date +%s.%N)" "$t0" "$STEPS" "$RPN" <<'PY'
import glob, json, re, sys
d, c_kill, c_ctl, c_after, t1, t0, steps, rpn = sys.argv[1], *map(int, sys.argv[2:5]), float(sys.argv[5]), float(sys.argv[6]), int(sys.argv[7]), int(sys.argv[8])
job = json.load(open(f"{d}/final.json"))["jobs"][0]
restores = []
for log in sorted(glob.glob(f"{d}/node.?.log")):
    for line in open(log, errors="replace"):
        m = re.search(r"restore from step (\d+)", line)
        if m: restores.append(int(m.group(1)))
print("-" * 72)
print("summary")
print(f"  nodes x ranks        3 x {rpn}, {steps} steps")
print(f"  epochs               {job['epoch']} (a restart after the trainer's death)")
print(f"  committed step       {job.get('committed_step')} ({job.get('commits', '-')} commits across the nodes)")
print(f"  trainer killed       at committed step {c_kill}; every node restored step {min(restores) if restores else '-'}")
print(f"  controller killed    at committed step {c_ctl}; restarted, its journal said {c_after}: nothing lost")
print(f"  wall time            {t1 - t0:.1f} s")
print("-" * 72)
PY
echo "demo: OK — the resumed run across nodes is bit-for-bit the run that never failed"
