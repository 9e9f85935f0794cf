#!/usr/bin/env bash
# The examples in systemd/ptd.default and systemd/ptd-controller.default are
# command lines ptd takes: every PTD_ARGS and PTD_CONTROLLER_ARGS line there
# (commented out or not) is run, with its paths, addresses and trainer
# pointed at this test's own (the key made with `ptd keygen`, the build's
# pt-train, loopback, a private state dir, job and shm prefix), and must
# still be running after a second and a half: a usage or configuration
# error exits 2 at once. Then it is stopped with SIGTERM.
set -u
. "$(dirname "$0")/../lib.sh"
cd "$(dirname "$0")/../.."

"$PTD" keygen "$T_DIR/cluster.key" >/dev/null || fail "ptd keygen failed"

# args_of FILE VAR: every value of VAR= in FILE, one per line, '#' dropped.
args_of() {
  sed -n "s/^#\{0,1\}$2=\"\(.*\)\"$/\1/p" "$1"
}

run_line() { # run_line LABEL ROLE ARGS...
  local label=$1 role=$2; shift 2
  local log="$T_DIR/$label.log"
  "$PTD" "$role" "$@" >"$log" 2>&1 &
  local pid=$! waited=0
  while [ $waited -lt 15 ]; do
    kill -0 $pid 2>/dev/null || break
    sleep 0.1; waited=$((waited + 1))
  done
  if ! kill -0 $pid 2>/dev/null; then
    wait $pid; local rc=$?
    fail "ptd $role with the example of $label exited $rc at once: $(tail -n 3 "$log")"
  fi
  kill -TERM $pid; wait $pid 2>/dev/null
  say "ok: ptd $role $* (the example of $label) runs"
}

n=0
while IFS= read -r line; do
  [ -n "$line" ] || continue
  # shellcheck disable=SC2206
  a=(${line//\/etc\/pt\/cluster.key/$T_DIR/cluster.key})
  for i in "${!a[@]}"; do
    case "${a[$i]}" in
      /usr/local/bin/pt-train) a[$i]=$TRAIN ;;
      10.0.0.1:*) a[$i]=127.0.0.1:1 ;;      # nobody listens: the node retries
      10.0.0.*) a[$i]=127.0.0.1 ;;
      demo) [ "${a[$((i - 1))]:-}" = --job ] && a[$i]=$T_JOB ;;
      /var/lib/pt) mkdir -p -m 700 "$T_DIR/persist"; a[$i]=$T_DIR/persist ;;
    esac
  done
  n=$((n + 1))
  # This test's own state dir and shm prefix go before the trainer command.
  own=(--state-dir "$T_DIR/node$n" --shm-prefix "$T_PREFIX")
  b=()
  for x in "${a[@]}"; do
    [ "$x" = -- ] && [ ${#own[@]} -gt 0 ] && { b+=("${own[@]}"); own=(); }
    b+=("$x")
  done
  b+=("${own[@]}")
  run_line "ptd.default#$n" node "${b[@]}"
  # a standalone example's trainers must have started and run
  if [ "${b[0]}" != --controller ]; then
    grep -q 'started trainer rank 0' "$T_DIR/ptd.default#$n.log" \
      || fail "the example of ptd.default#$n started no trainer: $(tail -n 5 "$T_DIR/ptd.default#$n.log")"
    ! grep -q 'exited with status 2' "$T_DIR/ptd.default#$n.log" \
      || fail "the example of ptd.default#$n: its trainer refused its arguments"
    # an example with the persistent tier made the job's directory
    if printf '%s\n' "${b[@]}" | grep -qx -- --persist-dir; then
      [ -d "$T_DIR/persist/$T_JOB" ] \
        || fail "the example of ptd.default#$n made no '$T_DIR/persist/$T_JOB'"
    fi
    # its stopped job's objects stay (as after any stop): the next example
    # is another job start
    rm -f /dev/shm/"$T_PREFIX"pt."$T_JOB".*
  fi
done < <(args_of systemd/ptd.default PTD_ARGS)
[ $n -ge 3 ] || fail "expected two standalone and a cluster PTD_ARGS in systemd/ptd.default, found $n"

m=0
while IFS= read -r line; do
  # shellcheck disable=SC2206
  a=(${line//\/etc\/pt\/cluster.key/$T_DIR/cluster.key})
  for i in "${!a[@]}"; do
    case "${a[$i]}" in 0.0.0.0:*) a[$i]=127.0.0.1:0 ;; esac
  done
  m=$((m + 1))
  run_line "ptd-controller.default#$m" controller "${a[@]}" --state-dir "$T_DIR/ctl$m"
done < <(args_of systemd/ptd-controller.default PTD_CONTROLLER_ARGS)
[ $m -ge 1 ] || fail "no PTD_CONTROLLER_ARGS in systemd/ptd-controller.default"
say "ok: $n ptd node and $m ptd controller example(s)"
