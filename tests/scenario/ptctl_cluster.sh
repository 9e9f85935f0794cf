#!/usr/bin/env bash
# ptctl against a real `ptd controller` on loopback and one cluster-mode
# node: `nodes` through PT_CONTROLLER/PT_KEY and through the options (the
# options win over a wrong environment), the table and --json; a bad value
# for a job command exits 2 naming the option and reaches nobody (the
# controller logs no connection); a SIGSTOPped controller makes ptctl exit
# 3 within its --timeout, and once continued it answers again; a wrong key
# exits 1; `ptctl --help` and each command's --help list the exit codes.
# Then the jobs: start with the default name (printed), jobs and status as
# table and JSON (the spec as given, each part's global ranks), a start
# refused for want of spare nodes (exit 1, the controller's message),
# restore (epoch 2), stop (the job stopped), an unknown job (exit 1).
# Permanent failures (exit 78, a trainer that cannot be run, the memory
# budget) fail the job in epoch 1 with the node's words, not restarted.
# Then a job of 3 nodes: the default code 2+1, its group in status and
# --json, and every SMP told its group on its command line; restore of
# ended jobs (refused when nothing is kept; one stopped --keep restored);
# a new job of its name on the same nodes with --max-restarts 0 runs and
# completes.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 1500
say "controller on $C_CTL_ADDR"
trap 'c_cleanup; rm -f /dev/shm/"$T_PREFIX"pt.pt-train-* 2>/dev/null; t_cleanup' EXIT
c_node_start a --failure-domain r1 --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10

# The environment stands for the options; the options win.
out=$(PT_CONTROLLER=$C_CTL_ADDR PT_KEY=$C_KEY "$PTCTL" nodes --json) || c_fail "nodes through the environment"
python3 -c 'import json,sys; d=json.loads(sys.argv[1]); assert [n["node"] for n in d["nodes"]]==["a"], d' "$out" \
  || c_fail "nodes --json: $out"
out=$(PT_CONTROLLER=127.0.0.1:1 PT_KEY=/nonexistent c_ptctl nodes) || c_fail "the options did not win: $out"
printf '%s\n' "$out" | grep -Eq '^a +alive +127\.0\.0\.1 +2 +r1 ' || c_fail "the table: $out"
say "nodes: environment and options"

# Bad values: exit 2, the option named, nothing sent.
accepted=$(grep -c "accepted ctl" "$C_CTL_LOG")
check_usage() { # check_usage WHAT ARGS...
  local what=$1; shift
  c_ptctl "$@" >"$T_DIR/u.out" 2>"$T_DIR/u.err"; local rc=$?
  [ $rc -eq 2 ] || c_fail "ptctl $*: exit $rc, not 2: $(cat "$T_DIR/u.err")"
  grep -qF -- "$what" "$T_DIR/u.err" || c_fail "ptctl $*: no '$what' in: $(cat "$T_DIR/u.err")"
  [ ! -s "$T_DIR/u.out" ] || c_fail "ptctl $*: printed $(cat "$T_DIR/u.out")"
}
check_usage "--nodes '-2'" start --nodes -2 --ranks-per-node 1 -- /bin/true
check_usage "--ranks-per-node '1x'" start --nodes 1 --ranks-per-node 1x -- /bin/true
check_usage "--code '2*1'" start --nodes 3 --ranks-per-node 1 --code '2*1' -- /bin/true
check_usage "--code 4+2 needs at least 6 nodes; the job has 3" start --nodes 3 --ranks-per-node 1 --code 4+2 -- /bin/true
check_usage "--memory-budget '12Q'" start --nodes 1 --ranks-per-node 1 --memory-budget 12Q -- /bin/true
check_usage "--job 'my job'" start --job 'my job' --nodes 1 --ranks-per-node 1 -- /bin/true
check_usage "after '--' is missing" start --nodes 1 --ranks-per-node 1 --
check_usage "--step 'latest'" restore j --step latest
check_usage "which job?" stop
sleep 0.3
[ "$(grep -c "accepted ctl" "$C_CTL_LOG")" -eq "$accepted" ] || c_fail "a refused command reached the controller"
say "usage errors: exit 2, the option named, nothing sent"

# A wrong key: refused, exit 1.
"$PTD" keygen "$T_DIR/other.key" || fail "keygen"
"$PTCTL" --controller "$C_CTL_ADDR" --key "$T_DIR/other.key" jobs >/dev/null 2>"$T_DIR/wk.err"; rc=$?
[ $rc -eq 1 ] && grep -q "refused (is --key the cluster's key?)" "$T_DIR/wk.err" \
  || c_fail "wrong key: exit $rc: $(cat "$T_DIR/wk.err")"

# A stopped controller: exit 3 within --timeout; continued, it answers.
kill -STOP "$C_CTL_PID"
t0=$(date +%s%N)
c_ptctl --timeout 700 nodes >/dev/null 2>"$T_DIR/stop.err"; rc=$?
ms=$(( ($(date +%s%N) - t0) / 1000000 ))
kill -CONT "$C_CTL_PID"
[ $rc -eq 3 ] || c_fail "a stopped controller: exit $rc, not 3: $(cat "$T_DIR/stop.err")"
[ $ms -ge 600 ] && [ $ms -lt 3000 ] || c_fail "a stopped controller: ptctl took $ms ms with --timeout 700"
grep -q "timed out" "$T_DIR/stop.err" || c_fail "no 'timed out': $(cat "$T_DIR/stop.err")"
c_ptctl nodes >/dev/null || c_fail "the continued controller does not answer"
say "a stopped controller: exit 3 after $ms ms (--timeout 700)"

# No controller at all: exit 3 at once.
"$PTCTL" --controller 127.0.0.1:1 --key "$C_KEY" --timeout 3000 nodes >/dev/null 2>&1; rc=$?
[ $rc -eq 3 ] || c_fail "no controller: exit $rc, not 3"

# The exit codes are documented where an operator looks.
for cmd in start stop restore status jobs nodes; do
  "$PTCTL" "$cmd" --help | grep -q "3 the daemon cannot be reached" || c_fail "ptctl $cmd --help: no exit codes"
done
"$PTCTL" --help | grep -q "restore JOB" || c_fail "ptctl --help does not list restore"

# Jobs: start with the default name, which is printed; jobs and status
# (table and JSON) as the controller has them; a second job is refused for
# want of spare nodes (exit 1, the controller's message); restore begins
# epoch 2; stop ends the job; an unknown job exits 1.
c_node_start b --failure-domain r2 --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state b alive 10
out=$(c_ptctl start --nodes 2 --ranks-per-node 2 --master-port "$T_PORT" --node-wait-ms 5000 \
      -- "$TRAIN" --steps 100000 --state-mb 1 --step-delay-ms 20 --digest-file "$T_DIR/out.%r") \
  || c_fail "ptctl start: $out"
job=$(printf '%s\n' "$out" | sed -n 's/^job \(pt-train-[a-z0-9]\{6\}\) started: epoch 1, 2 nodes x 2 ranks (world size 4)$/\1/p')
[ -n "$job" ] || c_fail "ptctl start said: $out"
say "started $job"
c_ptctl jobs | grep -Eq "^$job +(starting|running) +1 +2x2 " || c_fail "jobs: $(c_ptctl jobs)"
c_ptctl status --json | python3 -c '
import json, sys
d = json.load(sys.stdin)
j = [j for j in d["jobs"] if j["job"] == sys.argv[1]][0]
assert j["epoch"] == 1 and j["spec"]["argv"][1:3] == ["--steps", "100000"], j
assert j["spec"]["master_port"] == int(sys.argv[2]) and j["spec"]["node_wait_ms"] == 5000, j
ranks = sorted((p["first_rank"], p["last_rank"], p["ranks"]) for p in j["parts"])
assert ranks == [(0, 1, 2), (2, 3, 2)], j
assert sorted(p["node"] for p in j["parts"]) == ["a", "b"], j
' "$job" "$T_PORT" || c_fail "status --json: $(c_ptctl status --json)"
c_ptctl status "$job" | grep -Eq '^(a|b) +alive +[0-9.]+ (s|min) ago +0\.\.1 ' || c_fail "status $job: $(c_ptctl status "$job")"
# What the running job holds is what its nodes' objects take (it was 0 B for
# a job's whole first epoch).
deadline=$(( $(date +%s) + 20 ))
until b=$(c_job_field "$job" bytes_held) && [ "${b:-0}" -gt 0 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job $job holds ${b:-?} bytes while its objects are in /dev/shm"
  sleep 0.1
done
c_ptctl start --job second --nodes 1 --ranks-per-node 1 -- /bin/true >/dev/null 2>"$T_DIR/nospace.err"; rc=$?
[ $rc -eq 1 ] && grep -q "refused to start.*'second'.*(ENOSPC: " "$T_DIR/nospace.err" \
  || c_fail "no spare node: exit $rc: $(cat "$T_DIR/nospace.err")"
c_ptctl restore "$job" --json | python3 -c 'import json,sys; d=json.load(sys.stdin); assert d["epoch"]==2, d' \
  || c_fail "restore: $(c_ptctl status "$job")"
ls /dev/shm/"${T_PREFIX}"pt."$job".* >/dev/null 2>&1 || c_fail "no snapshot objects of $job before its stop"
c_ptctl stop "$job" | grep -q "^job $job is stopping.*; its snapshots are removed" || c_fail "stop"
deadline=$(( $(date +%s) + 20 ))
until c_ptctl jobs | grep -Eq "^$job +stopped +2 "; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "not stopped: $(c_ptctl jobs)"
  sleep 0.1
done
# A stopped job's snapshots leave shared memory (nothing resumes it).
deadline=$(( $(date +%s) + 20 ))
while ls /dev/shm/"${T_PREFIX}"pt."$job".* >/dev/null 2>&1; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "stopped job's snapshots still there: $(ls /dev/shm/"${T_PREFIX}"pt."$job".*)"
  sleep 0.1
done
c_ptctl status nosuch >/dev/null 2>"$T_DIR/nosuch.err"; rc=$?
[ $rc -eq 1 ] && grep -q "no job 'nosuch'" "$T_DIR/nosuch.err" || c_fail "unknown job: exit $rc: $(cat "$T_DIR/nosuch.err")"
say "jobs: start, jobs, status, a refused start, restore, stop"

# Permanent failures are not restarted (as standalone): a trainer's exit
# 78, a trainer command that cannot be run, PT_EBUDGET before start. The
# job fails in epoch 1, no restart, with the node's words (the budget's
# bytes).
perm_check() { # perm_check JOB WANT ARGS... (after the job's start options)
  local job=$1 want=$2; shift 2
  c_ptctl start --job "$job" --nodes 1 --ranks-per-node 1 --master-port "$T_PORT" "$@" \
    >/dev/null 2>"$T_DIR/$job.err" || c_fail "ptctl start $job: $(cat "$T_DIR/$job.err")"
  c_wait_job_state "$job" failed 20
  local st
  st=$(c_ptctl status "$job" --json) || c_fail "status $job: $st"
  python3 -c '
import json, sys
j = json.loads(sys.argv[1])["jobs"][0]
assert j["epoch"] == 1 and j["restarts"] == 0, "restarted: %s" % j
assert sys.argv[2] in j["reason"], "no %r in %r" % (sys.argv[2], j["reason"])
assert "not restarted (a permanent error)" in j["reason"], j["reason"]
' "$st" "$want" || c_fail "$job: $st"
}
perm_check perm78 "exited with status 78" -- sh -c 'sleep 0.3; exit 78'
perm_check permexec "cannot start trainer rank 0 (local 0 on node " -- "$T_DIR/no-such-trainer"
c_job_field permexec reason | grep -qF "('$T_DIR/no-such-trainer')" \
  || c_fail "permexec: the reason does not name the trainer: $(c_job_field permexec reason)"
perm_check permbudget "the checks before start failed: --memory-budget 4194304 bytes gives each of the 1 ranks 4194304 bytes; the smallest snapshot object needs " \
  --memory-budget 4M -- "$TRAIN" --steps 1000 --state-mb 8
perm_check permhello "bytes, more than the memory budget of 33554432 bytes" --memory-budget 32M -- "$TRAIN" --steps 1000 --state-mb 64
say "permanent failures: exit 78, a missing trainer, the budget (before start, at HELLO): failed in epoch 1, not restarted"

# Coding groups: 3 nodes in 3 failure domains take the default code 2+1,
# one group of the three (status, --json), and each SMP is told its group.
c_node_start c --failure-domain r3 --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state c alive 10
c_ptctl start --job coded --nodes 3 --ranks-per-node 1 --master-port "$T_PORT" --node-wait-ms 5000 \
  -- "$TRAIN" --steps 100000 --state-mb 1 --step-delay-ms 20 --digest-file "$T_DIR/coded.%r" >/dev/null \
  || c_fail "ptctl start coded"
st=$(c_ptctl status coded)
printf '%s\n' "$st" | grep -q "^code        2+1, 1 node group x 1 local rank = 1 coding group$" \
  || c_fail "status coded: $st"
# the group's row: its health (losses it absorbs now, its newest protected
# step), then its members as node/local rank
printf '%s\n' "$st" | grep -qE "^GROUP +CODE +TOLERATES +PROTECTED +MEMBERS$" || c_fail "status coded: $st"
members=$(printf '%s\n' "$st" | awk '$1 == "0" && $2 == "2+1" { print $(NF-2), $(NF-1), $NF }')
[ "$(printf '%s\n' "$members" | tr ' ' '\n' | sort | tr '\n' ' ')" = "a/0 b/0 c/0 " ] \
  || c_fail "status coded: group 0 is '$members': $st"
c_ptctl status coded --json | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
assert j["code"] == {"k": 2, "m": 1}, j["code"]
g = j["groups"]
assert len(g) == 1 and g[0]["group"] == 0, g
h = g[0]["health"]
assert isinstance(h, dict) and h["tolerates"] in (0, 1), g
assert sorted(m["node"] for m in g[0]["members"]) == ["a", "b", "c"], g
assert [m["node_index"] for m in g[0]["members"]] == [0, 1, 2], g
assert all(m["address"] == "127.0.0.1" for m in g[0]["members"]), g
' || c_fail "status coded --json: $(c_ptctl status coded --json)"
deadline=$(( $(date +%s) + 20 ))
until [ "$(pgrep -f -- "--code 2\+1 --group 0 --member [0-2] .*--shm-prefix $T_PREFIX|--shm-prefix $T_PREFIX.*--code 2\+1 --group 0 --member [0-2] " | wc -l)" -ge 3 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "the SMPs were not told their group: $(pgrep -af -- "--job coded")"
  sleep 0.1
done
deadline=$(( $(date +%s) + 30 ))
until c=$(c_job_field coded committed_step) && [ -n "$c" ] && [ "$c" -ge 5 ]; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job coded committed nothing by step 5"
  sleep 0.1
done
c_ptctl stop coded --keep | grep -q "its snapshots are kept" || c_fail "stop --keep coded"
deadline=$(( $(date +%s) + 20 ))
until c_ptctl jobs | grep -Eq "^coded +stopped "; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "coded not stopped: $(c_ptctl jobs)"
  sleep 0.1
done
sleep 0.5
# (each with the group's checksum tables beside it, <object>.meta)
[ "$(ls /dev/shm/"${T_PREFIX}"pt.coded.* 2>/dev/null | grep -vc '\.meta$')" -eq 3 ] \
  || c_fail "stop --keep: the snapshots of coded are not all there: $(ls /dev/shm/"${T_PREFIX}"* 2>&1)"
c_ptctl status coded | grep -q "snapshots are kept" || c_fail "status coded after stop --keep: $(c_ptctl status coded)"
say "coding groups: default 2+1 over 3 failure domains, status, --json, the SMPs' group"
say "stop removes a job's snapshots, stop --keep keeps them"

# Restore of an ended job: refused, saying why, for one stopped without
# --keep and for a completed one; a job stopped with --keep is brought
# back on its nodes from its committed step, even after its nodes ran
# another job's parts (their kept objects of it go on).
c_ptctl restore "$job" >/dev/null 2>"$T_DIR/r.err"; rc=$?
[ $rc -eq 1 ] && grep -q "stopped without --keep: its snapshots were removed" "$T_DIR/r.err" \
  && ! grep -q "already in progress" "$T_DIR/r.err" || c_fail "restore of $job: exit $rc: $(cat "$T_DIR/r.err")"
c_ptctl start --job other --nodes 3 --ranks-per-node 1 --master-port "$T_PORT" \
  -- "$TRAIN" --steps 20 --state-mb 1 >/dev/null || c_fail "ptctl start other"
c_wait_job_state other done 60
c_ptctl restore other >/dev/null 2>"$T_DIR/r.err"; rc=$?
[ $rc -eq 1 ] && grep -q "job 'other' completed.*nothing to restore" "$T_DIR/r.err" \
  || c_fail "restore of other: exit $rc: $(cat "$T_DIR/r.err")"
c=$(c_job_field coded committed_step)
out=$(c_ptctl restore coded) || c_fail "restore coded: $out"
[ "$out" = "job coded restoring step $c in epoch 2" ] || c_fail "restore coded said: $out"
c_wait_job_state coded running 30
for id in a b c; do
  grep -q "job 'coded' epoch 2: restoring over the kept objects" "$T_DIR/node.$id.log" \
    || c_fail "node $id did not take its kept objects of coded"
  r=$(sed -n "s/.*ptd node: restore from step \([0-9]*\)$/\1/p" "$T_DIR/node.$id.log" | tail -n 1)
  [ "$r" = "$c" ] || c_fail "node $id restored step '$r', not coded's committed step $c"
done
c_ptctl stop coded >/dev/null || c_fail "stop coded"
# its ranks gone on every node before the next job comes there (a part
# may also end failed: its trainer's all-reduce lost a peer that another
# node stopped first, before this node had the stop)
deadline=$(( $(date +%s) + 20 ))
for id in a b c; do
  until grep -Eq "job 'coded' epoch 2: part (stopped|failed)" "$T_DIR/node.$id.log"; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "node $id did not stop its part of coded"
    sleep 0.1
  done
done
say "restore: refused for a job stopped without --keep and a completed one; a kept one restored step $c"

# A new job with the name of the stopped one, on the same nodes (each
# still records the old part, its snapshots kept), with no restarts: it is
# not confused with the old one (it starts above the old epochs), runs and
# completes.
old_epoch=$(c_job_field coded epoch)
c_ptctl start --job coded --nodes 3 --ranks-per-node 1 --max-restarts 0 --master-port "$T_PORT" \
  -- "$TRAIN" --steps 40 --state-mb 1 --step-delay-ms 20 --digest-file "$T_DIR/coded2.%r" \
  >"$T_DIR/coded2.out" 2>&1 || c_fail "ptctl start coded again: $(cat "$T_DIR/coded2.out")"
c_wait_job_state coded done 60
[ "$(c_job_field coded restarts)" = 0 ] || c_fail "coded again restarted: $(c_ptctl status coded)"
[ "$(c_job_field coded epoch)" -gt "$old_epoch" ] || c_fail "coded again: epoch $(c_job_field coded epoch), the old one's $old_epoch"
say "a new job of a stopped job's name on its nodes: epoch $(c_job_field coded epoch), done, no restart"

# restore --step on a running job: the nodes report the committed steps
# every rank still holds with each seal; status shows them; a restore to an
# older one of them is taken, and the nodes restore that step.
c_ptctl start --job older --nodes 2 --ranks-per-node 1 --slots 4 --master-port "$T_PORT" --node-wait-ms 5000 \
  -- "$TRAIN" --steps 100000 --state-mb 1 --step-delay-ms 300 >/dev/null || c_fail "ptctl start older"
# The held steps move on with every step (300 ms), and a loaded machine
# can take that long between two ptctl calls: a step read from one status
# may be gone from the next, or from the restore. So the three are tried
# together until one choice holds through all of them.
deadline=$(( $(date +%s) + 60 ))
while :; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "no older committed step held by every node through status and restore: $(c_ptctl status older --json)"
  s=$(c_ptctl status older --json | python3 -c '
import json, sys
j = json.load(sys.stdin)["jobs"][0]
common = set(j["parts"][0]["held"])
for p in j["parts"][1:]:
    common &= set(p["held"])
older = sorted(x for x in common if x < (j["committed_step"] or 0))
print(older[-1] if older else "")')
  if [ -z "$s" ]; then sleep 0.2; continue; fi
  c_ptctl status older | grep -q "^restorable  committed steps held by every node: .*\b$s\b" || continue
  out=$(c_ptctl restore older --step "$s") && break
  printf '%s\n' "$out" | grep -qi "hold" || c_fail "restore older --step $s: $out"
done
printf '%s\n' "$out" | grep -q "restoring step $s in epoch 2" || c_fail "restore older --step $s said: $out"
c_wait_job_state older running 30
for id in $(c_ptctl status older --json | python3 -c 'import json,sys; print(" ".join(p["node"] for p in json.load(sys.stdin)["jobs"][0]["parts"]))'); do
  grep -q "restore from step $s\$" "$T_DIR/node.$id.log" || c_fail "node $id did not restore step $s: $(grep 'restore from' "$T_DIR/node.$id.log" | tail -3)"
done
c_ptctl stop older >/dev/null || c_fail "stop older"
c_wait_job_state older stopped 20
say "restore --step of a running job: an older committed step every node holds"

# `ptctl --state-dir` stop of a cluster-mode node in a job: it says the node
# daemon itself stops, and the controller hears the reason from that node at
# once (not from the other node's broken all-reduce, or a silent heartbeat).
c_ptctl start --job leave --nodes 2 --ranks-per-node 1 --master-port "$T_PORT" --node-wait-ms 5000 \
  -- "$TRAIN" --steps 100000 --state-mb 1 --step-delay-ms 20 >/dev/null || c_fail "ptctl start leave"
c_wait_job_state leave running 20
who=$(c_ptctl status leave --json | python3 -c 'import json,sys; print(json.load(sys.stdin)["jobs"][0]["parts"][1]["node"])')
out=$("$PTCTL" --state-dir "$T_DIR/node.$who" stop) || c_fail "ptctl --state-dir stop of node $who"
printf '%s\n' "$out" | grep -q "stopping the node daemon (cluster mode)" || c_fail "ptctl stop of a cluster node said: $out"
c_ctl_wait_log "node '$who' is stopping \(ptctl stop\)" 5
say "ptctl --state-dir stop of a cluster node: it says so, and the controller hears why at once"

c_ctl_stop
say "ok"
