#!/usr/bin/env bash
# A trainer's helpers must not outlive it. The trainer is a wrapper script
# (the process ptd node spawns, leader of its own process group) that starts
# pt-train and a background `sleep 600` (a stand-in for a data-loader worker
# or any helper: same process group). First pt-train itself is killed with
# SIGKILL (the wrapper then exits 137); after the restart the wrapper itself
# is killed with SIGKILL while its pt-train still runs (an orphan that holds
# the old object's memory and the SMP's socket). Each time the node must
# SIGKILL what is left of the trainer's process group before it restarts the
# job. Then the node itself is killed, a new one adopts the trainers, and
# the adopted wrapper is killed: its leftovers are found (same process group
# and session, this job instance and rank in their environment) and killed.
# The job completes as the fault-free run, and no sleep or orphan pt-train
# is left.
set -u
. "$(dirname "$0")/../lib.sh"

RANKS=2
ARGS=(--steps 400 --state-mb 4 --batch 4 --log-every 1 --step-delay-ms 15)
t_reference $RANKS "${ARGS[@]}"

cat >"$T_DIR/wrap.sh" <<WRAP
#!/usr/bin/env bash
sleep 600 >/dev/null 2>&1 &
echo \$! >"$T_DIR/sleep.\$PT_RANK.\$PT_RESTART"
"$TRAIN" "\$@" &
child=\$!
echo \$child >"$T_DIR/train.\$PT_RANK.\$PT_RESTART"
echo \$\$ >"$T_DIR/wrap.\$PT_RANK.\$PT_RESTART"
wait \$child
exit \$?
WRAP
chmod +x "$T_DIR/wrap.sh"
TRAIN=$T_DIR/wrap.sh
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"

# waits for a file that names a pid; prints the pid
pid_of() {
  local f=$T_DIR/$1
  for _ in $(seq 300); do [ -s "$f" ] && { cat "$f"; return; }; sleep 0.05; done
  fail "no $1"
}
# alive: running, not a zombie (a killed orphan waits for its reaper as one)
alive_now() {
  local st
  st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null | cut -d' ' -f1) || return 1
  [ -n "$st" ] && [ "$st" != Z ] && [ "$st" != X ]
}
# alive: still running 2 s from now (SIGKILL takes a moment)
alive() {
  for _ in $(seq 40); do alive_now "$1" || return 1; sleep 0.05; done
  return 0
}

t_wait_log 'commit step [0-9]+' 30
train0=$(pid_of train.0.0); sleep0=$(pid_of sleep.0.0)
restores=$(t_count_log 'restore from step|no snapshot: starting fresh')
kill -KILL "$train0" || fail "cannot kill pt-train pid $train0"
say "kill -9 pt-train rank 0 (pid $train0); its helper is sleep pid $sleep0"
t_wait_count 'restore from step|no snapshot: starting fresh' "$restores" 30
alive "$sleep0" && fail "the helper (sleep pid $sleep0) outlived its trainer's restart"

n=$(t_count_log '^step [0-9]+ loss')
t_wait_count '^step [0-9]+ loss' "$((n + 5))" 30
wrap1=$(pid_of wrap.0.1); train1=$(pid_of train.0.1); sleep1=$(pid_of sleep.0.1)
restores=$(t_count_log 'restore from step|no snapshot: starting fresh')
kill -KILL "$wrap1" || fail "cannot kill the wrapper pid $wrap1"
say "kill -9 the wrapper of rank 0 (pid $wrap1); left: pt-train $train1, sleep $sleep1"
t_wait_count 'restore from step|no snapshot: starting fresh' "$restores" 30

# the adopted-trainer path: a new node adopts the wrapper; killing it leaves
# its pt-train and sleep, which the node must find and kill
n=$(t_count_log '^step [0-9]+ loss')
t_wait_count '^step [0-9]+ loss' "$((n + 5))" 30
wrap2=$(pid_of wrap.0.2); train2=$(pid_of train.0.2); sleep2=$(pid_of sleep.0.2)
old=$T_NODE_PID
kill -KILL "$old"; wait "$old" 2>/dev/null; T_NODE_PID=
say "kill -9 ptd node (pid $old)"
t_node_start "$T_DIR/sd" $RANKS --backoff-ms 50 -- "${ARGS[@]}"
t_wait_log 'adopted' 20
adopted=$(t_pid "$T_DIR/sd" 0 trainer)
[ "$adopted" = "$wrap2" ] || fail "the new node adopted pid '$adopted', not the wrapper $wrap2"
restores=$(t_count_log 'restore from step|no snapshot: starting fresh')
kill -KILL "$wrap2" || fail "cannot kill the adopted wrapper pid $wrap2"
say "kill -9 the adopted wrapper of rank 0 (pid $wrap2); left: pt-train $train2, sleep $sleep2"
t_wait_count 'restore from step|no snapshot: starting fresh' "$restores" 30
for p in "$train2" "$sleep2"; do
  alive "$p" && fail "pid $p outlived its adopted trainer's restart"
done

t_node_wait 90
[ "$T_NODE_RC" = 0 ] || fail "ptd node exited with $T_NODE_RC"
for p in "$sleep0" "$sleep1" "$train1" $(cat "$T_DIR"/sleep.* "$T_DIR"/train.*); do
  alive "$p" && fail "pid $p ($(tr '\0' ' ' </proc/$p/cmdline 2>/dev/null)) outlived the job"
done
grep -Eq 'killed [0-9]+ process(es)? left in its process group' "$T_DIR/node.log" \
  || fail "the node logged no kill of a trainer's process group"
t_check_digests $RANKS
say "ok: no helper outlived its trainer; the job completed as the fault-free run"
