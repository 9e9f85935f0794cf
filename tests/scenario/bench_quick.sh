#!/usr/bin/env bash
# bench_quick.sh — ptbench --quick --json runs to completion: exit 0, exactly
# one JSON object on stdout, every required figure a positive finite number,
# the copy limit the fastest of the plain copies it names, every target
# reported with a verdict (the start-up and recovery figures
# first_snapshot_ms, snapshot_ms and recovery_ms among them), and nothing of
# the run left behind in /dev/shm. Performance targets are not asserted here (a noisy shared machine):
# the benchmark reports them.
set -u
: "${BUILD:?BUILD must name the build directory}"
BENCH=$BUILD/bin/ptbench
[ -x "$BENCH" ] || { echo "bench_quick: FAIL: $BENCH is not built"; exit 1; }

out=$(mktemp /tmp/pt-bench-quick.XXXXXX)
errf=$(mktemp /tmp/pt-bench-quick-err.XXXXXX)
trap 'rm -f "$out" "$errf"' EXIT

start=$(date +%s)
"$BENCH" --quick --json >"$out" 2>"$errf" &
pid=$!
# A deadline: ptbench cleans up after itself on SIGTERM.
for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"; sleep 5; kill -KILL "$pid" 2>/dev/null
  echo "bench_quick: FAIL: ptbench --quick still running after 120 s"; tail -n 30 "$errf"
  wait "$pid"; exit 1
fi
wait "$pid"
rc=$?
secs=$(( $(date +%s) - start ))
echo "bench_quick: ptbench --quick --json exited $rc after ${secs}s"
if [ "$rc" -ne 0 ]; then
  echo "bench_quick: FAIL: ptbench exited $rc"; tail -n 30 "$errf"; cat "$out"; exit 1
fi

# The run's shm objects carry the prefix "ptb<pid>-": none may be left.
left=$(ls /dev/shm 2>/dev/null | grep -E "^ptb$pid-" || true)
[ -z "$left" ] || { echo "bench_quick: FAIL: shm objects left behind: $left"; exit 1; }

python3 - "$out" <<'PY' || { tail -n 30 "$errf"; exit 1; }
import json, math, sys

text = open(sys.argv[1]).read()
try:
    d = json.loads(text)  # the whole of stdout: exactly one object
except ValueError as e:
    print(f"bench_quick: FAIL: stdout is not one JSON object: {e}\n{text[:2000]}")
    sys.exit(1)
if not isinstance(d, dict):
    print("bench_quick: FAIL: stdout is JSON but not an object"); sys.exit(1)

required = [
    "copy_limit_gbps", "memcpy_gbps", "snapshot_gbps", "snapshot_crc_gbps",
    "snapshot_blocking_ms_p50", "snapshot_blocking_ms_p99", "restore_gbps",
    "file_ckpt_blocking_ms", "snapshot_blocking_vs_file", "step_overhead_ratio",
    "ec_encode_gbps", "ec_decode_gbps", "isal_raw_encode_gbps",
    "ec82_encode_gbps", "ec82_decode_gbps", "ec82_isal_raw_encode_gbps",
    "tcp_raw_gbps", "tcp_raw_hot_gbps", "bytes", "copy_threads",
    "snapshot_ms", "first_snapshot_ms", "second_snapshot_ms",
    "recovery_ms", "recovery_commit_ms", "recovery_backoff_ms", "recovery_total_ms", "recovery_step_ms",
    "recovery_trainer_ms",
]
required += ["bulk_gbps", "bulk_ratio_median", "bulk_ratio_min", "bulk_ratio_max"]  # bench_bulk.c
required += ["persist_gbps", "persist_raw_gbps", "restore_disk_gbps", "read_raw_gbps",
             "persist_step_overhead_ratio", "persist_step_ms", "persist_step_ms_without",
             "persist_bytes"]  # bench_persist.c
bad = []
for k in required:
    v = d.get(k)
    if isinstance(v, bool) or not isinstance(v, (int, float)) or not math.isfinite(v) or v <= 0:
        bad.append(f"{k}={v!r}")
if bad:
    print("bench_quick: FAIL: missing or not a positive finite number: " + ", ".join(bad))
    sys.exit(1)
if d.get("complete") is not True:
    print(f"bench_quick: FAIL: run not complete: {d.get('error')!r}"); sys.exit(1)
if not isinstance(d.get("cpu"), str) or not d["cpu"]:
    print("bench_quick: FAIL: no cpu model string"); sys.exit(1)
if d["bytes"] != 64 << 20:
    print(f"bench_quick: FAIL: --quick measured {d['bytes']} bytes, expected 64 MiB"); sys.exit(1)

if d.get("persist_io") not in ("O_DIRECT", "buffered"):
    print(f"bench_quick: FAIL: persist_io {d.get('persist_io')!r}"); sys.exit(1)
ratio = d["persist_step_ms"] / d["persist_step_ms_without"]
if abs(ratio - d["persist_step_overhead_ratio"]) > 1e-3 * ratio:
    print(f"bench_quick: FAIL: persist_step_overhead_ratio {d['persist_step_overhead_ratio']} "
          f"is not persist_step_ms / persist_step_ms_without = {ratio}"); sys.exit(1)

# Derived figures must agree with the figures they are made of.
ratio = d["file_ckpt_blocking_ms"] / d["snapshot_blocking_ms_p50"]
if abs(ratio - d["snapshot_blocking_vs_file"]) > 1e-3 * ratio:
    print(f"bench_quick: FAIL: snapshot_blocking_vs_file {d['snapshot_blocking_vs_file']} "
          f"is not file_ckpt_blocking_ms / snapshot_blocking_ms_p50 = {ratio}")
    sys.exit(1)
# snapshot_ms is the same median as snapshot_crc_gbps, in milliseconds.
rate = d["bytes"] / (d["snapshot_ms"] / 1e3) / 1e9
if abs(rate - d["snapshot_crc_gbps"]) > 1e-3 * rate:
    print(f"bench_quick: FAIL: snapshot_ms {d['snapshot_ms']} does not match "
          f"snapshot_crc_gbps {d['snapshot_crc_gbps']}"); sys.exit(1)
# recovery_ms is kill to the restarted trainer's first completed step with
# the node's restart backoff taken out; that step's commit comes after it.
if abs(d["recovery_total_ms"] - d["recovery_backoff_ms"] - d["recovery_ms"]) > 1e-3 * d["recovery_total_ms"]:
    print(f"bench_quick: FAIL: recovery_ms {d['recovery_ms']} is not recovery_total_ms "
          f"{d['recovery_total_ms']} - recovery_backoff_ms {d['recovery_backoff_ms']}"); sys.exit(1)
if not d["recovery_commit_ms"] > d["recovery_ms"]:
    print(f"bench_quick: FAIL: recovery_commit_ms {d['recovery_commit_ms']} is not after "
          f"recovery_ms {d['recovery_ms']}"); sys.exit(1)
if d["recovery_node_ms"] is None or abs(d["recovery_node_ms"] + d["recovery_trainer_ms"] - d["recovery_ms"]) > 1e-3 * d["recovery_total_ms"]:
    print(f"bench_quick: FAIL: recovery_node_ms {d['recovery_node_ms']!r} + recovery_trainer_ms "
          f"{d['recovery_trainer_ms']} is not recovery_ms {d['recovery_ms']}"); sys.exit(1)
if d.get("recovery_state_mb") != 64:
    print(f"bench_quick: FAIL: recovery measured {d.get('recovery_state_mb')!r} MiB, expected 64"); sys.exit(1)
# The copy limit is the fastest of the plain copies, one of them named by
# copy_limit_method; memcpy_gbps (one call, one thread) is among them.
cands = {k[len("copy_limit_"):-len("_gbps")]: v for k, v in d.items()
         if k.startswith("copy_limit_") and k.endswith("_gbps") and k != "copy_limit_gbps"}
want_cands = {"memcpy", "memcpy_1m", "stream", "memcpy_threads", "memcpy_1m_threads",
              "stream_threads"}
if set(cands) != want_cands:
    print(f"bench_quick: FAIL: plain copies {sorted(cands)}, expected {sorted(want_cands)}")
    sys.exit(1)
measured = {k: v for k, v in cands.items() if v is not None}
if not {"memcpy", "memcpy_1m", "memcpy_threads", "memcpy_1m_threads"} <= set(measured) \
        or any(not (isinstance(v, (int, float)) and math.isfinite(v) and v > 0)
               for v in measured.values()):
    print(f"bench_quick: FAIL: plain copy rates {cands!r}"); sys.exit(1)
best = max(measured, key=measured.get)
if d.get("copy_limit_method") not in measured or \
        abs(d["copy_limit_gbps"] - measured[best]) > 1e-4 * measured[best] or \
        abs(measured[d["copy_limit_method"]] - measured[best]) > 1e-4 * measured[best]:
    print(f"bench_quick: FAIL: copy_limit_gbps {d['copy_limit_gbps']} "
          f"({d.get('copy_limit_method')!r}) is not the fastest plain copy, {best} "
          f"{measured[best]}"); sys.exit(1)
if abs(d["memcpy_gbps"] - measured["memcpy"]) > 1e-4 * measured["memcpy"]:
    print("bench_quick: FAIL: memcpy_gbps is not copy_limit_memcpy_gbps"); sys.exit(1)
if d.get("copy_limit_threads") != d["copy_threads"]:
    print(f"bench_quick: FAIL: copy_limit_threads {d.get('copy_limit_threads')!r}, "
          f"the snapshot uses {d['copy_threads']}"); sys.exit(1)
if d["snapshot_blocking_ms_p99"] < d["snapshot_blocking_ms_p50"]:
    print("bench_quick: FAIL: blocking p99 below p50"); sys.exit(1)

t = d.get("targets")
if not isinstance(t, dict):
    print("bench_quick: FAIL: no targets object"); sys.exit(1)
expect = {
    "snapshot_vs_copy_limit": d["snapshot_gbps"] / d["copy_limit_gbps"],
    "snapshot_crc_vs_copy_limit": d["snapshot_crc_gbps"] / d["copy_limit_gbps"],
    "restore_vs_copy_limit": d["restore_gbps"] / d["copy_limit_gbps"],
    "snapshot_blocking_ms": d["snapshot_blocking_ms_p50"],
    "step_overhead": d["step_overhead_ratio"],
    # Erasure coding: ratios paired within each fresh allocation of the
    # buffers, then the median over the allocations (bench_ec.h).
    "ec_encode_vs_isal_raw": d["ec_encode_vs_isal_raw_median"],
    "ec_decode_vs_encode": d["ec_decode_vs_encode_median"],
    "ec82_encode_vs_isal_raw": d["ec82_encode_vs_isal_raw_median"],
    "ec82_decode_vs_encode": d["ec82_decode_vs_encode_median"],
    "first_snapshot_vs_steady": d["first_snapshot_ms"] / d["snapshot_ms"],
    "recovery_ms": d["recovery_ms"],
    # The persistent tier: paired rounds, the median of their ratios.
    "persist_vs_raw": d["persist_vs_raw_median"],
    "restore_disk_vs_read_raw": d["restore_disk_vs_read_raw_median"],
    "persist_step_overhead": d["persist_step_overhead_ratio"],
}
# Bulk frames against the plain-socket figure: paired rounds (raw, then
# bulk), the target the median of the rounds' ratios, inside their spread.
expect["bulk_vs_tcp_raw"] = d["bulk_ratio_median"]
lo, mid, hi = (d.get(f"bulk_ratio_{w}") for w in ("min", "median", "max"))
if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in (lo, mid, hi)) \
        or not lo <= mid <= hi:
    print(f"bench_quick: FAIL: bulk/raw min {lo!r}, median {mid!r}, max {hi!r} out of order")
    sys.exit(1)
if not (isinstance(d.get("ec_allocations"), int) and d["ec_allocations"] % 2 == 1
        and d["ec_allocations"] >= 3):
    print(f"bench_quick: FAIL: ec_allocations {d.get('ec_allocations')!r}, expected an odd count >= 3")
    sys.exit(1)
for c in ("ec", "ec82"):
    lo, mid, hi = (d.get(f"{c}_decode_vs_encode_{w}") for w in ("min", "median", "max"))
    if not all(isinstance(x, (int, float)) and math.isfinite(x) and x > 0 for x in (lo, mid, hi)) \
            or not lo <= mid <= hi:
        print(f"bench_quick: FAIL: {c} decode/encode min {lo!r}, median {mid!r}, max {hi!r} "
              "out of order"); sys.exit(1)
for k, want in expect.items():
    v, ok = t.get(k), t.get(k + "_ok")
    if not isinstance(v, (int, float)) or abs(v - want) > 1e-4 * abs(want):
        print(f"bench_quick: FAIL: targets.{k} = {v!r}, the figures give {want:.6g}"); sys.exit(1)
    if not isinstance(ok, bool):
        print(f"bench_quick: FAIL: targets.{k}_ok is not a boolean"); sys.exit(1)

print("bench_quick: " + ", ".join(f"{k}={d[k]:.4g}" for k in required))
print("bench_quick: targets " + ", ".join(f"{k}={'ok' if t[k + '_ok'] else 'MISS'}" for k in expect))
PY

# ptbench --cluster --quick --json: the commit across nodes on a real ptd
# controller. A controller that refuses JOB_START as a request it does not
# know (jobs_supported false), or nodes that never answer JOB_ASSIGN
# (nodes_run_jobs false), skip their keys with the reason ptbench gives.
cstart=$(date +%s)
"$BENCH" --cluster --quick --json >"$out" 2>"$errf" &
pid=$!
for _ in $(seq 1200); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
if kill -0 "$pid" 2>/dev/null; then
  kill -TERM "$pid"; sleep 5; kill -KILL "$pid" 2>/dev/null
  echo "bench_quick: FAIL: ptbench --cluster --quick still running after 120 s"; tail -n 30 "$errf"
  wait "$pid"; exit 1
fi
wait "$pid"
rc=$?
echo "bench_quick: ptbench --cluster --quick --json exited $rc after $(( $(date +%s) - cstart ))s"
if [ "$rc" -ne 0 ]; then
  echo "bench_quick: FAIL: ptbench --cluster exited $rc"; tail -n 30 "$errf"; cat "$out"; exit 1
fi
left=$(ls /dev/shm 2>/dev/null | grep -E "^ptb$pid-" || true)
[ -z "$left" ] || { echo "bench_quick: FAIL: --cluster left shm objects behind: $left"; exit 1; }

python3 - "$out" <<'PY' || { tail -n 30 "$errf"; exit 1; }
import json, math, sys

text = open(sys.argv[1]).read()
try:
    d = json.loads(text)
except ValueError as e:
    print(f"bench_quick: FAIL: --cluster stdout is not one JSON object: {e}\n{text[:2000]}")
    sys.exit(1)
if not isinstance(d, dict) or d.get("mode") != "cluster" or d.get("complete") is not True:
    print(f"bench_quick: FAIL: --cluster run not complete: {d.get('error')!r}"); sys.exit(1)
for k in ("jobs_supported", "nodes_run_jobs"):
    if not isinstance(d.get(k), bool):
        print(f"bench_quick: FAIL: --cluster {k} is not a boolean"); sys.exit(1)

def num(k):
    v = d.get(k)
    return not isinstance(v, bool) and isinstance(v, (int, float)) and math.isfinite(v)

sizes = (10, 100, 1000)
if not d["jobs_supported"]:
    why = d.get("ctl_10_why")
    if not isinstance(why, str) or not why:
        print("bench_quick: FAIL: jobs_supported false without a reason"); sys.exit(1)
    if any(d.get(f"ctl_{n}_{f}") is not None for n in sizes
           for f in ("commit_p50_ms", "commit_p99_ms", "cpu_pct")):
        print("bench_quick: FAIL: figures given for a controller without jobs"); sys.exit(1)
    print(f"bench_quick: --cluster keys skipped: {why}")
    sys.exit(0)

bad = []
for n in sizes:
    if d.get(f"ctl_{n}_why") is not None:
        # Only a limit outside ptbench (descriptors) may leave a size out.
        print(f"bench_quick: ctl_{n}_* not measured: {d[f'ctl_{n}_why']}")
        if "RLIMIT_NOFILE" not in d[f"ctl_{n}_why"]:
            bad.append(f"ctl_{n}_why={d[f'ctl_{n}_why']!r}")
        continue
    for f in ("commit_p50_ms", "commit_p99_ms"):
        if not num(f"ctl_{n}_{f}") or d[f"ctl_{n}_{f}"] <= 0:
            bad.append(f"ctl_{n}_{f}={d.get(f'ctl_{n}_{f}')!r}")
    if not num(f"ctl_{n}_cpu_pct") or d[f"ctl_{n}_cpu_pct"] < 0:
        bad.append(f"ctl_{n}_cpu_pct={d.get(f'ctl_{n}_cpu_pct')!r}")
    # The kernel floor of the same traffic, taken in the same run.
    if not num(f"ctl_{n}_floor_cpu_pct") or d[f"ctl_{n}_floor_cpu_pct"] < 0:
        bad.append(f"ctl_{n}_floor_cpu_pct={d.get(f'ctl_{n}_floor_cpu_pct')!r} "
                   f"({d.get(f'ctl_{n}_floor_why')!r})")
    for f in ("up", "down", "heartbeat"):
        if not isinstance(d.get(f"ctl_{n}_frame_bytes_{f}"), int) or \
                d[f"ctl_{n}_frame_bytes_{f}"] <= 24:
            bad.append(f"ctl_{n}_frame_bytes_{f}={d.get(f'ctl_{n}_frame_bytes_{f}')!r}")
    if num(f"ctl_{n}_commit_p50_ms") and num(f"ctl_{n}_commit_p99_ms") and \
            d[f"ctl_{n}_commit_p99_ms"] < d[f"ctl_{n}_commit_p50_ms"]:
        bad.append(f"ctl_{n}: p99 below p50")
    if not isinstance(d.get(f"ctl_{n}_samples"), int) or d[f"ctl_{n}_samples"] < 10:
        bad.append(f"ctl_{n}_samples={d.get(f'ctl_{n}_samples')!r}")
if d["nodes_run_jobs"]:
    for f in ("commit_p50_ms", "commit_p99_ms"):
        if not num(f) or d[f] <= 0:
            bad.append(f"{f}={d.get(f)!r}")
    if num("commit_p50_ms") and num("commit_p99_ms") and d["commit_p99_ms"] < d["commit_p50_ms"]:
        bad.append("commit: p99 below p50")
else:
    why = d.get("commit_why")
    if not isinstance(why, str) or not why or d.get("commit_p50_ms") is not None:
        bad.append(f"nodes_run_jobs false: commit_why={why!r}, commit_p50_ms={d.get('commit_p50_ms')!r}")
    else:
        print(f"bench_quick: commit_p50_ms/commit_p99_ms skipped: {why}")
if d["nodes_run_jobs"]:
    # protection across 3 nodes at 2+1, beside raw TCP of its pattern
    for f in ("protect_gbps", "protect_tcp_gbps", "protect_train_gbps",
              "cluster_step_ms", "cluster_step_nopt_ms", "cluster_step_overhead_ratio"):
        if not num(f) or d[f] <= 0:
            bad.append(f"{f}={d.get(f)!r}")
    if not isinstance(d.get("protect_trainer_bound"), bool):
        bad.append("protect_trainer_bound is not a boolean")
    if not isinstance(d.get("protect_commits"), int) or d["protect_commits"] < 1:
        bad.append(f"protect_commits={d.get('protect_commits')!r}")
    # a lost node rebuilt from its group, beside its limits
    for f in ("rebuild_s", "rebuild_ingest_s", "rebuild_bytes_ratio"):
        if not num(f) or d[f] <= 0:
            bad.append(f"{f}={d.get(f)!r} ({d.get('rebuild_why')!r})")
    if not (num("rebuild_disk_s") or isinstance(d.get("rebuild_disk_why"), str)):
        bad.append("rebuild_disk_s neither measured nor explained")
    if not isinstance(d.get("rebuild_bytes"), int) or d["rebuild_bytes"] < 1:
        bad.append(f"rebuild_bytes={d.get('rebuild_bytes')!r}")
if bad:
    print("bench_quick: FAIL: --cluster: " + ", ".join(bad)); sys.exit(1)
t = d.get("targets")
for k in ("commit_p50_ms", "ctl_1000_commit_p50_ms", "ctl_1000_cpu_pct", "protect_over_tcp",
          "cluster_step_overhead_ratio", "rebuild_over_ingest", "rebuild_bytes_ratio"):
    if not isinstance(t, dict) or not isinstance(t.get(k + "_ok"), bool):
        print(f"bench_quick: FAIL: --cluster targets.{k}_ok is not a boolean"); sys.exit(1)
print("bench_quick: --cluster " + ", ".join(
    f"{k}={d[k]:.4g}" for k in sorted(d) if (k.startswith("ctl_") or k.startswith("commit_p")
    or k.startswith("protect_") or k.startswith("cluster_step") or k.startswith("rebuild_"))
    and num(k)))
PY
echo "bench_quick: ok"
