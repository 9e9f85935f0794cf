"""A small transformer language model trained with AdamW under pt.torch.

Usage: torch_trainer.py --steps N --out PREFIX [--step-delay-ms MS] [--shard]
                        [--recover-in-place] [--dump]

One process per rank (RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT as ptd
or torchrun set them); with WORLD_SIZE > 1 it trains data-parallel with
DistributedDataParallel over gloo. Every source of state a real loop has is
here: parameters and AdamW's moments, dropout (torch's CPU RNG), a sampler
with its own generator (an extra), an LR scheduler (an extra, which also
sets the optimizer's lr), Python's random and NumPy's global RNG (each
steers the step a little). At the end each rank writes a digest of all of
it to PREFIX.RANK; without an SMP it trains without snapshots, which makes
the reference run."""
import argparse
import hashlib
import os
import random
import sys
import time

import numpy
import torch
import torch.distributed as dist
import torch.nn as nn

import pt
import pt.torch

ap = argparse.ArgumentParser()
ap.add_argument("--steps", type=int, default=40)
ap.add_argument("--out", required=True)
ap.add_argument("--step-delay-ms", type=int, default=0)
ap.add_argument("--shard", action="store_true",
                help="replica-aware: each rank snapshots its share of the replicated state")
ap.add_argument("--shard-net", action="store_true",
                help="with --shard: every share over gloo, none read from this machine's "
                     "snapshot objects")
ap.add_argument("--recover-in-place", action="store_true",
                help="State.run() with recover_in_place: when another rank dies, restore "
                     "in place instead of being restarted")
ap.add_argument("--dump", action="store_true",
                help="also write PREFIX.RANK.pt: the final model and optimizer tensors")
a = ap.parse_args()

pt.torch.NEAR_SHARES = not a.shard_net
rank = int(os.environ.get("RANK", "0"))
world = int(os.environ.get("WORLD_SIZE", "1"))
torch.set_num_threads(1)
torch.use_deterministic_algorithms(True)
if world > 1:
    dist.init_process_group("gloo", rank=rank, world_size=world)

VOCAB, DIM, SEQ, BATCH = 61, 32, 16, 4


class TinyLM(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(VOCAB, DIM)
        self.pos = nn.Parameter(torch.randn(SEQ, DIM) * 0.02)
        layer = nn.TransformerEncoderLayer(DIM, 4, 64, dropout=0.1, batch_first=True)
        self.body = nn.TransformerEncoder(layer, 2, enable_nested_tensor=False)
        self.norm = nn.LayerNorm(DIM)
        self.head = nn.Linear(DIM, VOCAB, bias=False)
        self.head.weight = self.emb.weight  # tied, as in GPT-2
        nn.init.normal_(self.emb.weight, std=0.02)
        self.register_buffer("mask", nn.Transformer.generate_square_subsequent_mask(SEQ))

    def forward(self, x):
        h = self.emb(x) + self.pos[: x.shape[1]]
        h = self.body(h, mask=self.mask, is_causal=True)
        return self.head(self.norm(h))


class Sampler:
    """The data position: a generator of token batches, per rank."""

    def __init__(self, seed):
        self.g = torch.Generator().manual_seed(seed)
        self.batches = 0

    def next(self):
        self.batches += 1
        return torch.randint(0, VOCAB, (BATCH, SEQ + 1), generator=self.g)

    def state_dict(self):
        return {"g": self.g.get_state(), "batches": self.batches}

    def load_state_dict(self, d):
        self.g.set_state(d["g"])
        self.batches = d["batches"]


torch.manual_seed(1234)            # the same initial model on every rank
model = TinyLM()
random.seed(77 + rank)
numpy.random.seed(99 + rank)
torch.manual_seed(5000 + rank)     # dropout differs per rank
net = nn.parallel.DistributedDataParallel(model) if world > 1 else model
opt = torch.optim.AdamW(net.parameters(), lr=3e-3, weight_decay=0.1)
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: min(1.0, (s + 1) / 10))
sampler = Sampler(31 + rank)

state = pt.torch.State(net, opt, extra={"sampler": sampler, "sched": (sched, 4096)},
                       buffers_change=False, replicas=a.shard and world > 1 or None,
                       timeout_ms=5000, recover_in_place=a.recover_in_place)


def one_step(step):
    assert sampler.batches == step, (sampler.batches, step)
    tok = sampler.next()
    out = net(tok[:, :-1])
    loss = nn.functional.cross_entropy(out.reshape(-1, VOCAB), tok[:, 1:].reshape(-1))
    loss = loss * (1.0 + 1e-3 * float(numpy.random.rand()))
    opt.zero_grad(set_to_none=True)
    loss.backward()
    nn.utils.clip_grad_norm_(net.parameters(), 1.0 + 0.1 * random.random())
    opt.step()
    sched.step()
    if a.step_delay_ms:
        time.sleep(a.step_delay_ms / 1000.0)
    return loss.item()


if a.recover_in_place:
    said = []

    def logged_step(step):
        if not said:  # the step run() restored, said as the other mode says it
            said.append(step)
            print("rank %d: %s" % (rank, "fresh start" if step == 0 else
                                   "restored step %d" % (step - 1)), flush=True)
        print("step %d loss %.6f" % (step, one_step(step)), flush=True)
    n = state.run(logged_step, a.steps)
    print("rank %d: %d recoveries in place" % (rank, n), flush=True)
else:
    start = state.restore()
    st = state.status()
    print("rank %d: %s (%s bytes registered)" % (rank, "fresh start" if start is None else
                                                 "restored step %d" % start,
                                                 st["bytes"] if st else "no"), flush=True)
    if start is not None and a.shard:
        print("rank %d: shares of replicas %s read here, of %s broadcast"
              % (rank, state.shares_near, state.shares_sent), flush=True)
    for step in range(0 if start is None else start + 1, a.steps):
        loss = one_step(step)
        rc = state.snapshot(step)
        print("step %d loss %.6f %s" % (step, loss, "skipped" if rc == pt.SKIPPED else "ok"),
              flush=True)

h = hashlib.sha256()
for name, p in model.named_parameters():
    h.update(name.encode() + p.detach().numpy().tobytes())
for st in opt.state.values():
    for k in sorted(st):
        v = st[k]
        h.update(k.encode() + (v.numpy().tobytes() if isinstance(v, torch.Tensor) else repr(v).encode()))
h.update(torch.get_rng_state().numpy().tobytes())
h.update(repr(random.getstate()).encode())
h.update(repr(numpy.random.get_state()[1].tolist()).encode())
h.update(sampler.g.get_state().numpy().tobytes())
h.update(repr(sched.state_dict()["last_epoch"]).encode() + repr(opt.param_groups[0]["lr"]).encode())
with open("%s.%d" % (a.out, rank), "w") as f:
    f.write(h.hexdigest() + "\n")
if a.dump:
    names = {id(p): n for n, p in net.named_parameters()}
    d = {n: p.detach().clone() for n, p in net.named_parameters()}
    for p, st in opt.state.items():
        for k, v in st.items():
            d["optim.%s.%s" % (names[id(p)], k)] = v.detach().clone()
    torch.save(d, "%s.%d.pt" % (a.out, rank))
state.close(done=True)
if world > 1:
    dist.destroy_process_group()
sys.exit(0)
