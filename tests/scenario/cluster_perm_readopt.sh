#!/usr/bin/env bash
# A permanent failure survives the node daemon's own restart: a trainer
# exits 78 (EX_CONFIG: no restart cures it) while its part's other trainer
# ignores SIGTERM, so the node is still stopping the part when its ptd is
# killed with SIGKILL; started again, the node takes the part up (its
# part.state says the failure was permanent), ends it failed permanently,
# and the controller fails the job in epoch 1 without a restart, the
# trainer's exit named. Before part.state kept the flag, the restarted
# node reported a plain failure and the job was restarted.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT

cat >"$T_DIR/trainer.sh" <<'EOF'
#!/bin/sh
if [ "$LOCAL_RANK" = 0 ]; then sleep 1; exit 78; fi
trap '' TERM
while :; do sleep 0.1; done
EOF
chmod +x "$T_DIR/trainer.sh"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 4000
c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
c_wait_node_state a alive 10
c_ptctl start --job perm --nodes 1 --ranks-per-node 2 --master-port "$T_PORT" \
  -- "$T_DIR/trainer.sh" >"$T_DIR/start.out" 2>&1 || c_fail "ptctl start: $(cat "$T_DIR/start.out")"
deadline=$(( $(date +%s) + 20 ))
until grep -Eq "trainer rank 0 \(local 0 on node a\) \(pid [0-9]+\) exited with status 78" "$T_DIR/node.a.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "trainer rank 0 did not exit 78: $(tail -n 20 "$T_DIR/node.a.log")"
  sleep 0.05
done
# The kill comes once part.state holds the flag (the node writes it, with
# an fsync, right after the exit): a kill before that is a node lost before
# it knew, and the job is restarted as for any failure.
until grep -q "part failing permanently, recorded in" "$T_DIR/node.a.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node a did not record the permanent failure: $(tail -n 20 "$T_DIR/node.a.log")"
  sleep 0.05
done
# Within the 5 s the other trainer is given to stop.
c_node_kill a KILL
grep -q "part failed" "$T_DIR/node.a.log" && c_fail "the part ended before the node was killed: $(tail -n 20 "$T_DIR/node.a.log")"
say "trainer rank 0 exited 78; node a's ptd killed while its part stops"

c_node_start a --capacity 2 --shm-prefix "$T_PREFIX"
deadline=$(( $(date +%s) + 10 ))
until grep -q "taking it up again, to end it: a permanent failure" "$T_DIR/node.a.log"; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "node a did not take the failing part up: $(tail -n 20 "$T_DIR/node.a.log")"
  sleep 0.1
done
c_wait_job_state perm failed 30
st=$(c_ptctl status perm --json) || c_fail "status perm: $st"
python3 -c '
import json, sys
j = json.loads(sys.argv[1])["jobs"][0]
assert j["epoch"] == 1 and j["restarts"] == 0, "restarted: %s" % j
assert "exited with status 78" in j["reason"], j["reason"]
assert "not restarted (a permanent error)" in j["reason"], j["reason"]
' "$st" || c_fail "perm: $st"
say "ok: the job failed in epoch 1, not restarted: $(c_job_field perm reason)"
