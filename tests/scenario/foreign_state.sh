#!/usr/bin/env bash
# A running job's node.state copied into another state dir must not let a
# node started there take the job over. While the node that wrote it runs,
# the second node refuses to start (exit 2, naming that node). With the
# file's node pid made stale, the second node continues the recorded
# instance but adopts none of the first job's processes: the SMPs' sockets
# and the trainers' PT_SMP_SOCKET lie in the first state dir, not its own;
# so it signals none of them when it stops. The first job completes with
# the digests of a fault-free run.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 150 --state-mb 1 --batch 4 --log-every 1 --step-delay-ms 30)
t_reference $RANKS "${ARGS[@]}"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_wait_log 'commit step [0-9]+' 30
tr0=$(t_pid "$T_DIR/sd" 0 trainer); tr1=$(t_pid "$T_DIR/sd" 1 trainer)
[ -n "$tr0" ] && [ -n "$tr1" ] || fail "no trainer pids from ptctl"

second() { # second STATEDIR LOG: the hostile node, same job, prefix, command
  timeout 40 "$PTD" node --ranks $RANKS --job "$T_JOB" --state-dir "$1" \
    --shm-prefix "$T_PREFIX" --master-port "$T_PORT" --log-level 7 \
    --max-restarts 0 --backoff-ms 50 -- "$TRAIN" "${ARGS[@]}" \
    --digest-file "$T_DIR/out.%r" >"$2" 2>&1
}

# 1. The node that wrote the copied node.state still runs: refused.
mkdir -m 0700 "$T_DIR/sd2"
cp "$T_DIR/sd/node.state" "$T_DIR/sd2/"
second "$T_DIR/sd2" "$T_DIR/second.log"; rc=$?
[ "$rc" = 2 ] || { cat "$T_DIR/second.log"; fail "a node over a copied node.state exited with $rc, not 2"; }
grep -q "is run by ptd node pid $T_NODE_PID, which still runs" "$T_DIR/second.log" ||
  { cat "$T_DIR/second.log"; fail "no clear refusal naming the running node"; }
! grep -q "adopted" "$T_DIR/second.log" || fail "the refused node adopted a process"
say "copied node.state of a running node refused (exit 2)"

# 2. The same file with a stale node pid: nothing of the first job adopted.
mkdir -m 0700 "$T_DIR/sd3"
sed 's/^node_pid .*/node_pid 1/' "$T_DIR/sd/node.state" >"$T_DIR/sd3/node.state"
chmod 0600 "$T_DIR/sd3/node.state"
second "$T_DIR/sd3" "$T_DIR/third.log"; rc=$?
[ "$rc" != 124 ] || fail "the second node did not end within 40 s"
! grep -q "adopted trainer" "$T_DIR/third.log" ||
  { grep adopted "$T_DIR/third.log"; fail "the second node adopted a trainer of the first job"; }
! grep -q "adopted smp" "$T_DIR/third.log" || fail "the second node adopted an smp of the first job"
for p in "$tr0" "$tr1"; do
  kill -0 "$p" 2>/dev/null || fail "trainer pid $p of the first job is gone after the second node"
done
say "stale copied node.state: no process of the first job adopted or signalled (second node exit $rc)"

t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "the first ptd node exited with $T_NODE_RC"
grep -Eq "trainer rank [0-9] \(pid [0-9]+\) (exited with status [1-9]|killed)" "$T_DIR/node.log" &&
  fail "a trainer of the first job failed"
t_check_digests $RANKS
say "ok"
