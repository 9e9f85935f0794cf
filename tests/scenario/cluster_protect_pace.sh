#!/usr/bin/env bash
# A coded job at full speed: 3 nodes x 1 rank of pt-train, code 2+1, a
# snapshot every step and no sleep between steps. Each SMP protects one
# step at a time and skips its trainer's snapshots meanwhile; the group's
# members must take the same steps (a member's skip is every member's),
# or the steps each one protects are never the others' and nothing
# commits. The job must commit steps all along and at its end, and no
# step may wait out its protection deadline.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=100
ARGS=(--steps $STEPS --state-mb 8 --batch 2 --log-every 20)
t_reference 3 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 3000
for id in a b c; do c_node_start "$id" --capacity 1 --shm-prefix "$T_PREFIX"; done
for id in a b c; do c_wait_node_state "$id" alive 10; done

c_ptctl start --job fast --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
c_wait_job_state fast done 180
t_check_digests 3

# Commits all along: at least one step in six (one step in flight per SMP,
# each protected in a few steps' time here), and one near the end.
commits=$(c_job_field fast commits)
[ -n "$commits" ] && [ "$commits" -ge $(( STEPS / 6 )) ] \
  || c_fail "job fast: only '$commits' commits of $STEPS steps"
committed=$(c_job_field fast committed_step)
[ -n "$committed" ] && [ "$committed" -ge $(( STEPS - 20 )) ] \
  || c_fail "job fast: committed step '$committed', expected at least $(( STEPS - 20 ))"
# No step waited for a member that had skipped it, or for its deadline.
if grep -E 'not protected: not done within|never said it is ready' "$T_DIR"/node.*.log; then
  c_fail "a step waited out its protection deadline"
fi
say "ok: coded job at full speed: $commits commits of $STEPS steps, committed step $committed"
