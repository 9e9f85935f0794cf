"""A small trainer over the pt package: deterministic state in a registered
buffer, a blob carrying Python's random state, a snapshot every step.

Usage: trainer.py --steps N --out PREFIX (writes PREFIX.RANK) [--step-delay-ms MS]
Without an SMP (no ptd) it says so and trains without snapshots, which makes
the fault-free reference run."""
import argparse
import array
import hashlib
import os
import pickle
import random
import sys
import time

import pt

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=60)
ap.add_argument("--out", required=True)
ap.add_argument("--step-delay-ms", type=int, default=20)
a = ap.parse_args()
rank = int(os.environ.get("PT_RANK", os.environ.get("RANK", "0")))

state = array.array("Q", range(rank, rank + 8192))  # 64 KiB of state
cursor = array.array("Q", [0])                       # the next step to run
random.seed(1000 + rank)

client = None
try:
    client = pt.Client(timeout_ms=2000 if "PT_SMP_SOCKET" in os.environ else 1)
except pt.Error as e:
    print("rank %d: no SMP (%s): training without snapshots" % (rank, e), flush=True)

if client:
    client.register("state", state)
    client.register("cursor", cursor)
    step = client.restore()
    if step is None:
        print("rank %d: no snapshot: starting fresh" % rank, flush=True)
    else:
        random.setstate(pickle.loads(client.blob_get()))
        print("rank %d: restored step %d" % (rank, step), flush=True)
        assert cursor[0] == step + 1, (cursor[0], step)

while cursor[0] < a.steps:
    s = cursor[0]
    if client:
        client.fence()  # the last snapshot's copy is done before we write
    r = random.getrandbits(63)
    for i in range(0, len(state), 97):
        state[i] = (state[i] * 6364136223846793005 + r + s) & 0xFFFFFFFFFFFFFFFF
    cursor[0] = s + 1
    if client:
        client.blob_set(pickle.dumps(random.getstate()))
        rc = client.snapshot(s)
        print("step %d %s" % (s, "skipped" if rc == pt.SKIPPED else "snapshot"), flush=True)
    time.sleep(a.step_delay_ms / 1000.0)

digest = hashlib.sha256(state.tobytes() + repr(random.getstate()).encode()).hexdigest()
with open("%s.%d" % (a.out, rank), "w") as f:
    f.write(digest + "\n")
if client:
    client.close(done=True)
sys.exit(0)
