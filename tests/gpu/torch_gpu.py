"""pt.torch on a GPU: a model of a few GB of state, AdamW, deterministic
CUDA kernels. Run by tests/gpu/check.sh, with the package built against
libpt's CUDA backend (PT_CUDA=1).

  torch_gpu.py train --steps N --out PREFIX [--gib G] [--step-delay-ms MS]
      trains; at the end writes PREFIX.RANK (a digest of every parameter
      and optimizer tensor, and the RNGs). Under ptd node it snapshots
      every step; killed -9 and restarted, it must end with the digest of
      the run without pt (started without ptd: no SMP).
  torch_gpu.py bench [--gib G]   (under ptd node, one rank)
      prints, in one run: the D2H copy of a snapshot (snapshot() to
      fence(), the CRC on the device included) in GB/s beside
      cudaMemcpyAsync of the same bytes into pinned memory, and the step
      time with a snapshot every step divided by the step time without.
"""
import argparse
import hashlib
import os
import statistics
import sys
import time

os.environ.setdefault("CUBLAS_WORKSPACE_CONFIG", ":4096:8")
import torch  # noqa: E402
import torch.nn as nn  # noqa: E402

import pt  # noqa: E402
import pt.torch  # noqa: E402


def model_of(gib):
    """Linear layers of width 4096: gib GiB of fp32 parameters (AdamW makes
    it three times that in state)."""
    width = 4096
    layers = max(1, int(gib * (1 << 30)) // (width * width * 4))
    torch.manual_seed(0)
    return nn.Sequential(*[nn.Sequential(nn.Linear(width, width, bias=False), nn.GELU())
                           for _ in range(layers)]).cuda(), width


def one_step(net, opt, width, g):
    x = torch.randn(64, width, device="cuda", generator=g)
    loss = net(x).pow(2).mean()
    opt.zero_grad(set_to_none=True)
    loss.backward()
    opt.step()
    return loss


def train(a):
    torch.use_deterministic_algorithms(True)
    net, width = model_of(a.gib)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator(device="cuda").manual_seed(7)

    class Data:  # the data position: the generator's state
        def state_dict(self):
            return {"g": g.get_state()}

        def load_state_dict(self, d):
            g.set_state(d["g"])

    state = pt.torch.State(net, opt, extra={"data": Data()}, buffers_change=False)
    start = state.restore()
    print("rank 0: %s" % ("fresh start" if start is None else "restored step %d" % start),
          flush=True)
    for step in range(0 if start is None else start + 1, a.steps):
        loss = one_step(net, opt, width, g)
        state.snapshot(step)
        print("step %d loss %.6f" % (step, loss.item()), flush=True)
        if a.step_delay_ms:
            time.sleep(a.step_delay_ms / 1000.0)
    state.fence()
    h = hashlib.sha256()
    for p in net.parameters():
        h.update(p.detach().cpu().numpy().tobytes())
    for st in opt.state.values():
        for k in sorted(st):
            v = st[k]
            h.update(v.cpu().numpy().tobytes() if isinstance(v, torch.Tensor)
                     else repr(v).encode())
    h.update(g.get_state().numpy().tobytes())
    with open(a.out + ".0", "w") as f:
        f.write(h.hexdigest() + "\n")
    state.close(done=True)


def bench(a):
    net, width = model_of(a.gib)
    opt = torch.optim.AdamW(net.parameters(), lr=1e-4)
    g = torch.Generator(device="cuda").manual_seed(7)
    state = pt.torch.State(net, opt, buffers_change=False)
    assert state.restore() is None
    st = state.status()
    assert st["backend"] == "cuda", "the package was built without the CUDA backend"
    nbytes = st["bytes"]
    sync = torch.cuda.synchronize
    steps = 8

    def timed(snap):
        ts = []
        for step in range(steps):
            sync()
            t0 = time.perf_counter()
            one_step(net, opt, width, g)
            if snap:
                state.snapshot(bench.step)
                bench.step += 1
            sync()
            ts.append(time.perf_counter() - t0)
        state.fence()
        return statistics.median(ts[2:])
    bench.step = 0
    plain, snapped = timed(False), timed(True)
    # the copy alone: snapshot() to fence(), the CRC kernel included
    copies = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        state.snapshot(bench.step)
        bench.step += 1
        state.fence()
        copies.append(time.perf_counter() - t0)
    copy_s = statistics.median(copies)
    # the limit: cudaMemcpyAsync of the same bytes into pinned memory
    src = [e.ref for e in state.entries if e.ref.is_cuda]
    dst = [torch.empty(t.shape, dtype=t.dtype, pin_memory=True) for t in src]
    limits = []
    for _ in range(5):
        sync()
        t0 = time.perf_counter()
        for s_, d_ in zip(src, dst):
            d_.copy_(s_, non_blocking=True)
        sync()
        limits.append(time.perf_counter() - t0)
    limit_s = statistics.median(limits)
    dev_bytes = sum(t.numel() * t.element_size() for t in src)
    print("gpu: %s, %.2f GB of state (%.2f GB on the device)"
          % (torch.cuda.get_device_name(), nbytes / 1e9, dev_bytes / 1e9))
    print("D2H snapshot (with device CRC)  %6.2f GB/s   cudaMemcpyAsync to pinned %6.2f GB/s"
          "   ratio %.2f (target >= 0.9)" % (dev_bytes / copy_s / 1e9, dev_bytes / limit_s / 1e9,
                                            limit_s / copy_s))
    print("step with a snapshot every step %7.1f ms   without %7.1f ms   ratio %.3f "
          "(target <= 1.02)" % (snapped * 1e3, plain * 1e3, snapped / plain))
    state.close(done=True)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["train", "bench"])
    ap.add_argument("--steps", type=int, default=30)
    ap.add_argument("--out", default="/tmp/pt-gpu-out")
    ap.add_argument("--gib", type=float, default=1.0)
    ap.add_argument("--step-delay-ms", type=int, default=0)
    a = ap.parse_args()
    if not torch.cuda.is_available():
        sys.exit("torch_gpu.py: no CUDA device")
    (train if a.mode == "train" else bench)(a)


if __name__ == "__main__":
    main()
