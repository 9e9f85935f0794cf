#!/usr/bin/env bash
# An SMP busy for longer than --smp-timeout (pre-faulting a new 1 GiB
# snapshot object at the trainer's HELLO) is not hung: the liveness probe
# sees it running and gives it more time instead of killing it. (A stopped
# SMP is killed: smp_hang.sh.)
set -u
. "$(dirname "$0")/../lib.sh"

free=$(df -B1 --output=avail /dev/shm | tail -1 | tr -d ' ')
[ "$free" -gt $((3 << 30)) ] || skip "skip: /dev/shm has less than 3 GiB free"
t_node_start "$T_DIR/sd" 1 --smp-timeout 0.2 -- --steps 3 --state-mb 512 --log-every 1
t_node_wait 120
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
! grep -q 'in time; killing it' "$T_DIR/node.log" || fail "a busy smp was killed"
grep -q 'is busy (state [RD]): its liveness probe gets more time' "$T_DIR/node.log" \
  || skip "skip: the object was made within 0.2 s here; the probe never had to wait"
say "ok: the busy smp was given time and the job completed"
