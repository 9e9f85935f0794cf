#!/usr/bin/env bash
# A lost node's place goes to a spare: a controller and 4 cluster-mode
# nodes on loopback (a b c, then spare d, each with its own shm prefix, as
# on 4 machines), a job of 3 nodes x 1 rank of pt-train with code 2+1.
# Once steps are committed, node b is lost whole: its ptd, its SMPs and its
# trainers SIGKILLed, its shm objects removed. The controller declares it
# dead and puts spare d in its place: the same node index (so the same
# member of the coding group, the same rank), a new epoch restoring the
# step committed before the loss, the notice in its log; `ptctl status
# --json` shows d in b's place, and the group's health counts d as a lost
# member until a step commits after it (d holds nothing until then).
#
# What this checks is the controller's side only. Whether the job then
# finishes depends on the SMPs' rebuild of d's snapshot from the group
# (daemon/smp/, built beside this): once that lands, this scenario adds
# the end-to-end check: the job runs to its last step with every rank's
# digest equal to a fault-free run (t_reference 3 / t_check_digests 3), a
# step newer than the restore commits and the group tolerates 1 again.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --code || skip "this build's ptctl has no --code"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB

c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000
# One after the other: the job is placed in registration order, on a b c;
# d, registered last, is the spare.
for id in a b c d; do
  c_node_start "$id" --capacity 1 --shm-prefix "${T_PREFIX}$id."
  c_wait_node_state "$id" alive 10
done

c_ptctl start --job cs --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" --steps 100000 --state-mb 1 --batch 2 --step-delay-ms 40 >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"

parts() { # node ids by node index, of job cs
  c_ptctl status cs --json 2>/dev/null | python3 -c '
import json, sys
job = [x for x in json.load(sys.stdin)["jobs"] if x["job"] == "cs"][0]
print(" ".join(p["node"] for p in sorted(job["parts"], key=lambda p: p["node_index"])))'
}
[ "$(parts)" = "a b c" ] || c_fail "job cs placed on '$(parts)', expected 'a b c'"

deadline=$(( $(date +%s) + 60 ))
until c=$(c_job_field cs committed_step) && [ -n "$c" ] && [ "$c" -ge 5 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job cs committed nothing by step 5 in 60 s"
  sleep 0.1
done
epoch0=$(c_job_field cs epoch)

# Node b lost whole. Its processes are the ones this test started for it:
# its ptd, its trainer and SMP (as its ptd reports them), and any SMP
# naming a file in its state dir.
victims="${C_NODE_PID[b]} $(c_node_pids b all) $(pgrep -f -- "$T_DIR/node\.b/" | tr '\n' ' ')"
victims=$(printf '%s\n' $victims | awk '$1 > 0' | sort -u | tr '\n' ' ')
[ "$(echo $victims | wc -w)" -ge 3 ] || c_fail "node b shows no SMP and trainer besides its ptd ($victims)"
c=$(c_job_field cs committed_step)
kill -KILL $victims 2>/dev/null
wait "${C_NODE_PID[b]}" 2>/dev/null
unset "C_NODE_PID[b]"
for p in $victims; do
  for _ in $(seq 50); do kill -0 "$p" 2>/dev/null || break; sleep 0.1; done
  kill -0 "$p" 2>/dev/null && c_fail "process $p of node b survived SIGKILL"
done
rm -f /dev/shm/"${T_PREFIX}b."* 2>/dev/null
say "node b lost (processes $victims killed, its objects removed) after commit $c"

# Dead after 2 s of silence; d takes index 1, restoring a step at least as
# new as the one committed before the loss.
c_ctl_wait_log "job 'cs': node 'b' lost; spare 'd' takes its place \\(node index 1\\), restoring step [0-9]+" 20
r=$(sed -n "s/.*job 'cs': node 'b' lost; spare 'd' takes its place (node index 1), restoring step \([0-9]*\)$/\1/p" \
  "$C_CTL_LOG" | tail -n 1)
[ -n "$r" ] && [ "$r" -ge "$c" ] || c_fail "the spare restores step '$r', older than step $c committed before the loss"
c_ptctl status cs --json >"$T_DIR/cs.json" || c_fail "ptctl status cs failed"
python3 - "$T_DIR/cs.json" "$epoch0" "$r" <<'EOF' || c_fail "status after the loss is wrong: $(cat "$T_DIR/cs.json")"
import json, sys
job = [x for x in json.load(open(sys.argv[1]))["jobs"] if x["job"] == "cs"][0]
epoch0, r = int(sys.argv[2]), int(sys.argv[3])
assert job["epoch"] > epoch0, ("no new epoch", job["epoch"], epoch0)
parts = {p["node_index"]: p for p in job["parts"]}
assert parts[1]["node"] == "d", parts
assert parts[1]["first_rank"] == 1, parts[1]
assert parts[0]["node"] == "a" and parts[2]["node"] == "c", parts
g = job["groups"][0]
members = [m["node"] for m in g["members"]]
assert members == ["a", "d", "c"], members
# d holds nothing until a step newer than r commits: the group absorbs no
# further loss (once the rebuild lands, a later commit brings it back to 1).
if job["committed_step"] is None or job["committed_step"] <= r:
    assert g["health"]["tolerates"] == 0, g
EOF
# ptctl's table shows it too.
c_ptctl status cs >"$T_DIR/cs.txt" 2>&1 || c_fail "ptctl status cs failed"
grep -Eq '(^|[[:space:]])d([[:space:]]|$)' "$T_DIR/cs.txt" || c_fail "ptctl status does not show node d: $(cat "$T_DIR/cs.txt")"
grep -q "JOB_ASSIGN to node 'd' (index 1" "$C_CTL_LOG" || c_fail "no assignment to d in the controller's log"
# The journal holds the placement: a restarted controller puts d at index 1.
c_ctl_stop
cp "$C_CTL_LOG" "$T_DIR/controller.1.log"
C_CTL_PORT_WANT=$C_CTL_PORT c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000
c_ctl_wait_log "job 'cs' epoch [0-9]+ rebuilt from the journal" 10
[ "$(parts)" = "a d c" ] || c_fail "after the controller's restart job cs is on '$(parts)', expected 'a d c'"
say "ok: spare d took node b's place (index 1) in a new epoch restoring step $r; the placement survived the controller's restart"
