"""Replica-aware shards, measured: snapshot bytes per rank and the time of a
snapshot's copy (snapshot() then fence()) with and without sharding, beside
a plain copy of the same bytes in the same process (the machine's limit).

Run under ptd node, one process per rank (DDP over gloo):
  ptd node --ranks R --job J --state-dir D --shm-prefix J- -- \\
      python tests/python/bench_shards.py --mib 64 [--shard]
Rank 0 prints one line: R, sharded or not, bytes per rank, copy ms (median
of the steps), plain copy ms of those bytes, the ratio, and the time of a
restore of the newest committed step in place (with the gather, sharded)."""
import argparse
import os
import statistics
import time

import torch
import torch.distributed as dist
import torch.nn as nn

import pt.torch

ap = argparse.ArgumentParser()
ap.add_argument("--mib", type=int, default=64, help="MiB of parameters")
ap.add_argument("--steps", type=int, default=8)
ap.add_argument("--shard", action="store_true")
a = ap.parse_args()
rank, world = int(os.environ["RANK"]), int(os.environ["WORLD_SIZE"])
torch.set_num_threads(1)
if world > 1:
    dist.init_process_group("gloo")
width = 1024
layers = max(1, a.mib * (1 << 20) // (width * width * 4))
torch.manual_seed(0)
model = nn.Sequential(*[nn.Linear(width, width, bias=False) for _ in range(layers)])
net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
state = pt.torch.State(net, opt, buffers_change=False,
                       replicas=True if a.shard and world > 1 else None)
assert state.restore() is None
held = state.status()["bytes"]
x = torch.randn(8, width)
copy_ms, plain_ms = [], []
for step in range(a.steps):
    net(x).sum().backward()
    opt.step()
    opt.zero_grad(set_to_none=True)
    t0 = time.perf_counter()
    rc = state.snapshot(step)
    state.fence()
    t1 = time.perf_counter()
    if rc == pt.OK:
        copy_ms.append((t1 - t0) * 1e3)
    # the limit: one plain copy of the same bytes, from the same tensors
    src = [e.get() for e in state.entries]
    t0 = time.perf_counter()
    for e, t in zip(state.entries, src):
        f = t.detach().reshape(-1).view(torch.uint8)
        f[e.lo:e.hi].clone()
    plain_ms.append((time.perf_counter() - t0) * 1e3)
# a restore in place of the newest committed step (every rank's share,
# then, sharded, the broadcasts that put the tensors together)
time.sleep(0.5)  # the last step's commit
if world > 1:
    dist.barrier()
t0 = time.perf_counter()
restored = state.restore()
restore_ms = (time.perf_counter() - t0) * 1e3
if world > 1:
    dist.barrier()
if rank == 0:
    c, p = statistics.median(copy_ms), statistics.median(plain_ms)
    print("shards: R=%d %s bytes_per_rank=%d copy_ms=%.1f plain_copy_ms=%.1f ratio=%.2f "
          "restore_ms=%.1f (step %s; %d snapshots)"
          % (world, "sharded" if a.shard and world > 1 else "whole", held, c, p,
             c / p if p else 0, restore_ms, restored, len(copy_ms)), flush=True)
state.close(done=True)
if world > 1:
    dist.destroy_process_group()
