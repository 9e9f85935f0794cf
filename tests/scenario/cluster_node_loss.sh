#!/usr/bin/env bash
# A whole node lost and rebuilt from its coding group: a controller and 3
# cluster-mode nodes on loopback, a job of 3 nodes x 1 rank of pt-train with
# code 2+1 (one coding group of the 3 nodes' SMPs). After some commits node
# b is lost entirely: SIGKILL of its ptd, its SMP and its trainer, and its
# snapshot object removed from /dev/shm. Then `ptd node` b starts again on
# the same state dir (same node id, memory empty). The controller restarts
# the job in a new epoch restoring the committed step R; b's SMP holds no
# slot of R and rebuilds it from the two survivors (their data chunk and
# parity row of each stripe, over its peer links), verifies it against its
# checksum table (kept by the survivors) and serves the restore. The job
# runs to its end with every digest equal to a fault-free run, and b's log
# says "step R rebuilt from members x,y: S bytes in T ms, B bytes received",
# B at most 1.2 S (repair pipelining: a sum along a chain of the survivors).
#
# 2. b's own copy of the step to restore damaged (ptctl fault corrupt): its
# SMP rebuilds it from the group, digests equal.
#
# 3. the same loss with a survivor's piece damaged: a byte of the parity
# row of R flipped in both survivors' objects before b comes back. The
# rebuilt bytes fail their checksums (2+1 has no other survivor): never
# restored; b's SMP says so, and the job never ends with other digests
# than the fault-free run's (it fails, or ends equal after an older step).
#
# 4. two of the group's three members lost at once: a clear error naming
# the group, the members lost and what 2+1 tolerates; the job fails.
set -u
. "$(dirname "$0")/../lib.sh"
. "$(dirname "$0")/../cluster.sh"

"$PTCTL" start --help 2>&1 | grep -q -- --code || skip "this build's ptctl has no --code"
trap 'c_nodes_term; c_cleanup; t_cleanup' EXIT
unset RANK PT_RANK WORLD_SIZE PT_WORLD_SIZE MASTER_ADDR MASTER_PORT PT_JOB
STEPS=${NL_STEPS:-120}
ARGS=(--steps $STEPS --state-mb ${NL_STATE_MB:-2} --batch 2 --log-every 10 ${NL_VERBOSE:+--verbose})
t_reference 3 "${ARGS[@]}"

c_ctl_start --heartbeat-ms 200 --dead-after-ms 2000 --node-wait-ms 60000
for id in a b c; do c_node_start "$id" --capacity 1 --shm-prefix "$T_PREFIX" --allow-faults; done
for id in a b c; do c_wait_node_state "$id" alive 10; done

# ---- 1. a node lost and rebuilt ----
c_ptctl start --job nl --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start.out")"
c_wait_committed nl 10 >/dev/null
c_lose_node b nl
c_wait_node_state b dead 20
R=$(c_job_field nl committed_step)
# (NL_B_TIMEOUT_MS: the request deadline of b's restarted trainers, libpt's
# PT_TIMEOUT_MS; NL_STALL_MS: the survivors' SMPs stopped that long as b's
# SMP learns it must rebuild, so that the rebuild takes at least as long)
if [ -n "${NL_STALL_MS:-}" ]; then
  mark_a=$(( $(wc -l <"$T_DIR/node.a.log") + 1 )) mark_c=$(( $(wc -l <"$T_DIR/node.c.log") + 1 ))
fi
if [ -n "${NL_B_TIMEOUT_MS:-}" ]; then
  PT_TIMEOUT_MS=$NL_B_TIMEOUT_MS c_node_start b --capacity 1 --shm-prefix "$T_PREFIX" --allow-faults
else
  c_node_start b --capacity 1 --shm-prefix "$T_PREFIX" --allow-faults
fi
if [ -n "${NL_STALL_MS:-}" ]; then
  # the survivors' SMPs of the new epoch, stopped as they start
  deadline=$(( $(date +%s) + 30 )) stall_smps=
  until [ "$(wc -w <<<"$stall_smps")" -eq 2 ]; do
    [ "$(date +%s)" -lt "$deadline" ] || c_fail "nodes a and c started no SMPs for the new epoch"
    stall_smps=$( (tail -n +"$mark_a" "$T_DIR/node.a.log"; tail -n +"$mark_c" "$T_DIR/node.c.log") |
      sed -n 's/.*started smp rank .* (pid \([0-9]*\))$/\1/p' | sort -u | tr '\n' ' ')
    [ "$(wc -w <<<"$stall_smps")" -ge 1 ] && kill -STOP $stall_smps 2>/dev/null
    sleep 0.005
  done
  sleep "$(awk "BEGIN { print $NL_STALL_MS / 1000 }")"
  kill -CONT $stall_smps
  say "the survivors' SMPs of the new epoch ($stall_smps) stopped for $NL_STALL_MS ms as they started"
fi
c_wait_node_state b alive 10
c_wait_job_state nl done 120
t_check_digests 3
# The controller counted b as a lost member until a newer step committed.
c_ctl_wait_log "node 'b' rebuilt its snapshots from its coding groups: they count it as lost until a newer step commits" 5
line=$(grep -E "step [0-9]+ rebuilt from members [0-9,]+: [0-9]+ bytes in [0-9]+ ms, [0-9]+ bytes received" \
  "$T_DIR/node.b.log" | tail -n 1)
[ -n "$line" ] || c_fail "node b logged no rebuild: $(grep -iE 'rebuil|restore' "$T_DIR/node.b.log" | tail -n 10)"
rstep=$(sed -n 's/.*step \([0-9]*\) rebuilt from.*/\1/p' <<<"$line")
[ "$rstep" -ge "$R" ] || c_fail "node b rebuilt step $rstep, older than step $R committed at the loss"
say "node b: ${line#*: }"
bytes=$(sed -n 's/.*: \([0-9]*\) bytes in.*/\1/p' <<<"$line")
[ "$bytes" -gt $(( ${NL_STATE_MB:-2} << 20 )) ] || c_fail "rebuilt only $bytes bytes of a ${NL_STATE_MB:-2} MiB state"
if grep -E 'fails its checksums|cannot rebuild|pipelined fetch .* failed' "$T_DIR/node.b.log"; then
  c_fail "the rebuild refused something in a fault-free loss"
fi
# Repair pipelining: the replacement receives about one byte per byte it
# rebuilds (the survivors sum their terms along a chain), not k = 2.
recv=$(sed -n 's/.*ms, \([0-9]*\) bytes received.*/\1/p' <<<"$line")
awk -v r="$recv" -v b="$bytes" 'BEGIN { exit !(r <= 1.2 * b) }' \
  || c_fail "node b received $recv bytes to rebuild $bytes: more than 1.2 per byte (no repair pipelining?)"

# (NL_ONLY_LOSS=1: this case only, e.g. to measure a larger --state-mb
# with NL_STATE_MB)
if [ -n "${NL_ONLY_LOSS:-}" ]; then
  say "ok: node b lost and rebuilt (step $rstep), digests equal the fault-free run"
  exit 0
fi

# ---- 2. a rank's own copy of the step to restore damaged ----
# (ptctl fault corrupt: b's trainer killed, a byte of its slot of the
# restore step flipped before the restore). b's node finds it damaged and
# its SMP rebuilds the step from the group instead of restoring it.
for f in "$T_DIR"/out.*; do rm -f "$f"; done
c_ptctl start --job nc --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start1.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start1.out")"
c_wait_committed nc 10 >/dev/null
c_ptctl fault inject nc corrupt --node b >"$T_DIR/corrupt.out" 2>&1 \
  || c_fail "ptctl fault inject corrupt failed: $(cat "$T_DIR/corrupt.out")"
say "$(tail -n 1 "$T_DIR/corrupt.out")"
c_wait_job_state nc done 120
t_check_digests 3
grep -qE "step [0-9]+, the step to restore, fails its checksums here: its smp rebuilds it" "$T_DIR/node.b.log" \
  || c_fail "node b did not hand its damaged step to its SMP: $(grep -iE 'checksum|rebuil' "$T_DIR/node.b.log" | tail -n 5)"
n=$(grep -cE "step [0-9]+ rebuilt from members [0-9,]+: [0-9]+ bytes in" "$T_DIR/node.b.log")
[ "$n" -ge 2 ] || c_fail "node b did not rebuild its damaged step: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
say "ok: b's damaged copy rebuilt from the group: $(grep -E "rebuilt from members" "$T_DIR/node.b.log" | tail -n 1 | sed 's/.*: step/step/')"

# ---- 3. a survivor's piece damaged ----
for f in "$T_DIR"/out.*; do rm -f "$f"; done
c_ptctl start --job nd --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start2.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start2.out")"
c_wait_committed nd 10 >/dev/null
before=$(grep -c 'fails its checksums' "$T_DIR/node.b.log")
c_lose_node b nd
c_wait_node_state b dead 20
R=$(c_job_field nd committed_step)
for id in a c; do
  for r in $(c_job_ranks_on "$id" nd); do
    slot=$(c_flip_parity "/dev/shm/${T_PREFIX}pt.nd.$r" "$R") || c_fail "cannot damage rank $r's parity of step $R"
    say "rank $r (node $id): a byte of its parity of step $R flipped (slot $slot)"
  done
done
c_node_start b --capacity 1 --shm-prefix "$T_PREFIX" --allow-faults
deadline=$(( $(date +%s) + 120 ))
until s=$(c_job_field nd state) && { [ "$s" = done ] || [ "$s" = failed ]; }; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job nd is '$s', neither done nor failed, after 120 s"
  sleep 0.2
done
after=$(grep -c 'fails its checksums' "$T_DIR/node.b.log")
[ "$after" -gt "$before" ] || c_fail "node b's rebuild from damaged pieces did not fail its checksums: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
grep -E "step $R rebuilt from members [0-9,]+ fails its checksums at block [0-9]+.*never restored" "$T_DIR/node.b.log" >/dev/null \
  || c_fail "no clear error for the damaged rebuild of step $R: $(grep -iE 'rebuil' "$T_DIR/node.b.log" | tail -n 5)"
if [ "$s" = done ]; then
  t_check_digests 3
  say "ok: a damaged survivor piece never restored; job nd ended equal to the fault-free run"
else
  say "job nd failed: $(c_job_field nd reason)"
  # the part's failure carries the SMP's words
  grep -q "node 'b' part failed: .*step $R rebuilt from members [0-9,]* fails its checksums" "$C_CTL_LOG" \
    || c_fail "the controller never heard why b's part failed: $(grep "part failed" "$C_CTL_LOG" | tail -n 3)"
  for f in "$T_DIR"/out.*; do
    [ -s "$f" ] || continue
    cmp -s "$f" "$T_DIR/ref.${f##*.}" || c_fail "rank ${f##*.} wrote digest $(cat "$f"), not the fault-free run's"
  done
  say "ok: a damaged survivor piece never restored; job nd failed, no wrong digest"
fi

# ---- 4. two members of the group lost at once: beyond 2+1 ----
for f in "$T_DIR"/out.*; do rm -f "$f"; done
c_ptctl start --job n2 --nodes 3 --ranks-per-node 1 --slots 3 --code 2+1 --master-port "$T_PORT" \
  -- "$TRAIN" "${ARGS[@]}" --step-delay-ms 60 --digest-file "$T_DIR/out.%r" >"$T_DIR/start3.out" 2>&1 \
  || c_fail "ptctl start failed: $(cat "$T_DIR/start3.out")"
c_wait_committed n2 10 >/dev/null
procs_c=$(c_node_pids c)
c_lose_node b n2
c_lose_node c n2 "$procs_c"
c_wait_node_state b dead 20
c_wait_node_state c dead 20
R=$(c_job_field n2 committed_step)
c_node_start b --capacity 1 --shm-prefix "$T_PREFIX" --allow-faults
c_node_start c --capacity 1 --shm-prefix "$T_PREFIX" --allow-faults
deadline=$(( $(date +%s) + 120 ))
until s=$(c_job_field n2 state) && { [ "$s" = done ] || [ "$s" = failed ]; }; do
  [ "$(date +%s)" -lt "$deadline" ] || c_fail "job n2 is '$s', neither done nor failed, after 120 s"
  sleep 0.2
done
[ "$s" = failed ] || c_fail "job n2 ended '$s' with 2 of a 2+1 group's 3 members lost"
# (said by the controller, or by the SMPs that tried: the group, the
# members lost, what the code tolerates)
grep -hE "(cannot rebuild step $R of coding group 0: members [0-9],[0-9] lost, code 2\+1 tolerates 1)|(lost.*tolerates)" \
  "$T_DIR"/node.b.log "$T_DIR"/node.c.log "$C_CTL_LOG" | tail -n 1 | grep -q . \
  || c_fail "no clear error for 2 members of 2+1 lost: $(grep -hiE 'rebuil|lost' "$T_DIR"/node.[bc].log | tail -n 5)"
say "job n2 (2 of 3 members lost): $(grep -hoE "(cannot rebuild step $R of coding group 0: members [0-9],[0-9] lost, code 2\+1 tolerates 1)|(coding group 0 lost .*tolerates 1)" "$T_DIR"/node.[bc].log "$C_CTL_LOG" | tail -n 1)"
for f in "$T_DIR"/out.*; do
  [ -s "$f" ] || continue
  cmp -s "$f" "$T_DIR/ref.${f##*.}" || c_fail "rank ${f##*.} wrote digest $(cat "$f"), not the fault-free run's"
done
say "ok: node b lost and rebuilt (step $rstep), digests equal the fault-free run; a damaged piece and 2 lost members never restored"
