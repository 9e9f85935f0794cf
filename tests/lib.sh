# tests/lib.sh — helpers shared by the scenario scripts and the demo.
# Source it; it expects $BUILD (absolute path of the build dir).
#
# Every scenario runs a small job under a real `ptd node` with its own state
# directory, job name and shm prefix, so scenarios never see each other's
# objects, and removes what it made on exit.

: "${BUILD:?BUILD must name the build directory}"
PTD=$BUILD/bin/ptd
PTCTL=$BUILD/bin/ptctl
TRAIN=$BUILD/bin/pt-train

T_NAME=${T_NAME:-$(basename "$0" .sh)}
T_DIR=$(mktemp -d "/tmp/pt-$T_NAME.XXXXXX")
T_JOB="t$$"
T_PREFIX="ts$$-"
# Rank 0's port for the trainers' gradient all-reduce (MASTER_PORT), one per
# scenario so that scenarios running side by side do not meet.
# below Linux's ephemeral range (32768-60999), so no client socket holds it
T_PORT=$((20000 + RANDOM % 12000))
T_NODE_PID=

t_cleanup() {
  if [ -n "$T_NODE_PID" ] && kill -0 "$T_NODE_PID" 2>/dev/null; then
    kill -TERM "$T_NODE_PID" 2>/dev/null
    for _ in $(seq 50); do kill -0 "$T_NODE_PID" 2>/dev/null || break; sleep 0.1; done
    kill -KILL "$T_NODE_PID" 2>/dev/null
  fi
  # anything of this job still alive (adopted trainers, SMPs)
  pkill -KILL -f -- "--job $T_JOB( |$)" 2>/dev/null
  pkill -KILL -f -- "pt-train.*$T_DIR" 2>/dev/null
  rm -f /dev/shm/"$T_PREFIX"pt."$T_JOB".* 2>/dev/null
  [ -n "${T_KEEP_DIR:-}" ] || rm -rf "$T_DIR"
}
trap t_cleanup EXIT

say() { printf '%s: %s\n' "$T_NAME" "$*"; }
# (a failed scenario keeps its directory, logs and all, and says where)
fail() { printf '%s: FAIL: %s\n' "$T_NAME" "$*"; [ -f "$T_DIR/node.log" ] && tail -n 40 "$T_DIR/node.log"; T_KEEP_DIR=1; printf '%s: logs kept in %s\n' "$T_NAME" "$T_DIR"; exit 1; }
skip() { printf '%s\n' "$*"; exit 77; }

# Reference digests of a fault-free run, computed without pt at all. The
# ranks average their gradients every step, so they all run at once.
# t_reference RANKS TRAIN_ARGS...  -> files $T_DIR/ref.<rank>, logs ref.<rank>.log
t_reference() {
  local ranks=$1; shift
  local r pids=() failed=
  for ((r = 0; r < ranks; r++)); do
    RANK=$r WORLD_SIZE=$ranks PT_RANK=$r PT_WORLD_SIZE=$ranks MASTER_ADDR=127.0.0.1 \
      "$TRAIN" --no-pt --master-port "$T_PORT" "$@" --digest-file "$T_DIR/ref.$r" \
      >"$T_DIR/ref.$r.log" 2>&1 &
    pids+=($!)
  done
  for ((r = 0; r < ranks; r++)); do
    wait "${pids[r]}" || failed+=" $r"
  done
  if [ -n "$failed" ]; then
    for r in $failed; do tail -n 5 "$T_DIR/ref.$r.log" | sed "s/^/rank $r: /"; done
    fail "reference run of rank(s)$failed failed"
  fi
}

# Starts ptd node in the background: t_node_start STATEDIR RANKS [NODE_OPTS...] -- TRAIN_ARGS...
# Output (node and trainers) goes to $T_DIR/node.log.
t_node_start() {
  local sd=$1 ranks=$2; shift 2
  local opts=()
  while [ $# -gt 0 ] && [ "$1" != -- ]; do opts+=("$1"); shift; done
  shift
  # Debug level by default: scenarios follow every commit ("commit step N"
  # is a debug line after the first); T_LOG_LEVEL=6 runs at the default.
  "$PTD" node --ranks "$ranks" --job "$T_JOB" --state-dir "$sd" --shm-prefix "$T_PREFIX" \
    --master-port "$T_PORT" --log-level "${T_LOG_LEVEL:-7}" "${opts[@]}" -- "$TRAIN" "$@" --digest-file "$T_DIR/out.%r" >>"$T_DIR/node.log" 2>&1 &
  T_NODE_PID=$!
}

# Waits for the node to exit (deadline in seconds); sets T_NODE_RC.
t_node_wait() {
  local deadline=$(( $(date +%s) + ${1:-120} ))
  while kill -0 "$T_NODE_PID" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "ptd node still running after ${1:-120}s"
    sleep 0.1
  done
  wait "$T_NODE_PID"; T_NODE_RC=$?
  T_NODE_PID=
}

# Waits until the log matches a regular expression (deadline in seconds).
t_wait_log() {
  local re=$1 deadline=$(( $(date +%s) + ${2:-60} ))
  until grep -Eq -- "$re" "$T_DIR/node.log" 2>/dev/null; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for /$re/ in the log"
    sleep 0.05
  done
}

# Number of log lines matching a regular expression.
t_count_log() { grep -Ec -- "$1" "$T_DIR/node.log" 2>/dev/null || true; }

# Waits until more than N log lines match: t_wait_count RE N [SECONDS]
t_wait_count() {
  local re=$1 n=$2 deadline=$(( $(date +%s) + ${3:-60} ))
  until [ "$(t_count_log "$re")" -gt "$n" ]; do
    [ "$(date +%s)" -lt "$deadline" ] || fail "timed out waiting for more than $n lines /$re/"
    sleep 0.05
  done
}

# Pid of a rank's trainer or SMP from ptctl's JSON: t_pid STATEDIR RANK trainer|smp
t_pid() {
  "$PTCTL" --state-dir "$1" status --json 2>/dev/null | python3 -c '
import json, sys
st = json.load(sys.stdin)
for r in st["ranks"]:
    if r["rank"] == int(sys.argv[1]):
        print(r[sys.argv[2] + "_pid"]); break
' "$2" "$3"
}

# Kills a trainer with SIGKILL while its SMP's slot is WRITING, i.e. while
# the copy of a snapshot into shared memory is running: polls the slot table
# of the rank's shm object (layout in snapshot/snap_store.h) and signals the
# moment a slot turns WRITING. t_kill_mid_copy RANK PID [SECONDS]
t_kill_mid_copy() {
  python3 - "/dev/shm/${T_PREFIX}pt.$T_JOB.$1" "$2" "${3:-10}" <<'PY'
import mmap, os, signal, struct, sys, time
path, pid, secs = sys.argv[1], int(sys.argv[2]), float(sys.argv[3])
with open(path, "rb") as f:
    m = mmap.mmap(f.fileno(), 4096 + 64 * 8, prot=mmap.PROT_READ)
nslots, = struct.unpack_from("<I", m, 96)
slot_off, = struct.unpack_from("<Q", m, 136)
with open(path, "rb") as f:
    t = mmap.mmap(f.fileno(), slot_off + 64 * nslots, prot=mmap.PROT_READ)
deadline = time.monotonic() + secs
while time.monotonic() < deadline:
    for i in range(nslots):
        state, _, step = struct.unpack_from("<IIQ", t, slot_off + 64 * i)
        if state == 1:
            os.kill(pid, signal.SIGKILL)
            after, = struct.unpack_from("<I", t, slot_off + 64 * i)
            print(f"killed pid {pid} while slot {i} was WRITING step {step} (state after: {after})")
            sys.exit(0)
print("no copy seen in flight"); sys.exit(1)
PY
}

# Compares every rank's output digest with the reference.
t_check_digests() {
  local ranks=$1 r
  for ((r = 0; r < ranks; r++)); do
    [ -s "$T_DIR/out.$r" ] || fail "rank $r wrote no digest"
    cmp -s "$T_DIR/ref.$r" "$T_DIR/out.$r" \
      || fail "rank $r digest $(cat "$T_DIR/out.$r") differs from the fault-free $(cat "$T_DIR/ref.$r")"
  done
  say "digests of all $ranks ranks equal the fault-free run"
}

# For every restart after a failure, the restore step must be at least the
# step committed before the failure (a fresh start counts as step 0): no more
# steps redone than were uncommitted. Prints "restores=N redone=R uncommitted=U".
t_check_redone() {
  python3 - "$T_DIR/node.log" <<'PY' || fail "more steps redone than were uncommitted"
import re, sys
committed, last_step, restores, redone, uncommitted, bad = None, 0, 0, 0, 0, False
failed_at = None
for line in open(sys.argv[1], errors="replace"):
    m = re.search(r"ptd node: commit step (\d+)", line)  # not "cannot commit step"
    if m: committed = int(m.group(1))
    m = re.match(r"step (\d+) loss", line)
    if m: last_step = max(last_step, int(m.group(1)))
    if re.search(r"trainer rank \d+ \(pid \d+\) (exited|killed)", line) and failed_at is None:
        failed_at = (committed, last_step)
    m = re.search(r"ptd node: (?:restore from step (\d+)|no snapshot: starting fresh)", line)
    if not m:
        continue
    r = int(m.group(1)) if m.group(1) else 0
    if failed_at is not None:
        c, s = failed_at
        restores += 1
        if c is not None and r < c:
            what = f"restore from {r}" if r else "a fresh start"
            print(f"{what} but step {c} was committed before the failure"); bad = True
        redone += max(0, s - r); uncommitted += max(0, s - (c or 0))
        failed_at = None
    # the restore step is the committed step now, and training goes on from it
    committed, last_step = (r if r else None), r
print(f"restores={restores} redone<={redone} uncommitted<={uncommitted}")
sys.exit(1 if bad else 0)
PY
}
