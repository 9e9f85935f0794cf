"""pt.torch against real `ptd node`s on CPU torch: a small transformer LM
with AdamW, data-parallel over gloo and DDP, killed with -9 at random
moments, ends bit-for-bit as a run that never used pt; and each friction
case of PyTorch state (lazy optimizer state, copies of RNG state, tensors
that cannot be registered, another model's snapshot) has its test.

PT_BUILD names the build folder (default ../../build)."""
import os
import random
import socket
import subprocess
import sys
import time

import pytest

if os.environ.get("PT_REQUIRE_TORCH"):
    import torch  # the python_client scenario installed it: no skipping
else:
    torch = pytest.importorskip("torch")

import pt  # noqa: E402
from ptdtest import ENV0, PTD, status as _status, wait as _wait  # noqa: E402
import pt.torch  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(HERE, "torch_trainer.py")


def _port():
    """A free port below the ephemeral range (32768 and up on Linux), so that
    no connection's own port takes it between this check and its use."""
    while True:
        p = random.randrange(20000, 32000)
        s = socket.socket()
        try:
            s.bind(("127.0.0.1", p))
            return p
        except OSError:
            continue
        finally:
            s.close()


def _reference(tmp_path, ranks, steps, extra=()):
    """The run that never used pt: RANK/WORLD_SIZE set by hand, no SMP."""
    ref = str(tmp_path / "ref")
    port = str(_port())
    procs = [subprocess.Popen([sys.executable, TRAINER, "--steps", str(steps), "--out", ref]
                              + list(extra),
                              env=dict(ENV0, RANK=str(r), WORLD_SIZE=str(ranks),
                                       MASTER_ADDR="127.0.0.1", MASTER_PORT=port),
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
             for r in range(ranks)]
    for p in procs:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out[-3000:]
        assert "no SMP" in out, out[-3000:]
    return [open("%s.%d" % (ref, r)).read() for r in range(ranks)]


def _node(tmp_path, ranks, args, name="node"):
    sd = str(tmp_path / (name + ".sd"))
    logf = str(tmp_path / (name + ".log"))
    job = "pyt%d%s" % (os.getpid(), name)
    log = open(logf, "w")
    p = subprocess.Popen([PTD, "node", "--ranks", str(ranks), "--job", job,
                          "--state-dir", sd, "--shm-prefix", job + "-",
                          "--master-port", str(_port()), "--backoff-ms", "50",
                          "--", sys.executable] + args,
                         stdout=log, stderr=subprocess.STDOUT, env=ENV0)
    log.close()
    return p, sd, lambda: open(logf).read()


@pytest.mark.parametrize("ranks,first,shard", [(2, None, False), (3, None, False),
                                               (3, 1, False), (3, None, True),
                                               (2, None, "net")])
def test_ddp_kill_9_resumes_bit_exact(tmp_path, ranks, first, shard):
    """first: the first kill after that many steps (1: in the second step,
    when DDP has just rebuilt its buckets and the first step was not
    snapshotted), else at random. shard: each replica snapshots its share
    of the replicated tensors, rebuilt on restore from all of them (read
    from the other replicas' snapshot objects on this machine; "net": all
    over gloo's broadcasts, as from other machines)."""
    steps = 60
    ref = _reference(tmp_path, ranks, steps)
    out = str(tmp_path / "out")
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    node, sd, logtext = _node(tmp_path, ranks, [TRAINER, "--steps", str(steps), "--out", out,
                                                "--step-delay-ms", "30"]
                              + (["--shard"] if shard else [])
                              + (["--shard-net"] if shard == "net" else []))
    starts = lambda t: t.count("fresh start") + t.count("restored step")
    try:
        mark = 0  # where the log of the running incarnation begins
        for kill in range(2):
            # a random moment: some steps into this incarnation, then a
            # random rank, at a random time within a step
            at = first if kill == 0 and first else rnd.randrange(3, 12)
            _wait(lambda: logtext()[mark:].count("loss") >= ranks * at, 240, "steps")
            time.sleep(rnd.random() * 0.05)
            st = _wait(lambda: _status(sd), 10, "status")
            os.kill(st["ranks"][rnd.randrange(ranks)]["trainer_pid"], 9)
            _wait(lambda: starts(logtext()) >= ranks * (kill + 2), 240,
                  "the restart (seed %d)" % seed)
            mark = len(logtext())
        assert node.wait(timeout=300) == 0, logtext()[-3000:]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    text = logtext()
    assert starts(text) == 3 * ranks, text[-3000:]
    if not first:
        assert text.count("restored step") >= 2 * ranks, text[-3000:]
    if shard:
        # the path each restore took for the other replicas' shares
        others = str(list(range(1, ranks)))
        near, sent = ("[]", others) if shard == "net" else (others, "[]")
        assert "rank 0: shares of replicas %s read here, of %s broadcast" % (near, sent) \
            in text, text[-3000:]
    got = [open("%s.%d" % (out, r)).read() for r in range(ranks)]
    assert got == ref, "seed %d: the resumed run differs from the run without pt" % seed


@pytest.mark.parametrize("ranks", [2, 3])
def test_recover_in_place_bit_exact(tmp_path, ranks):
    """State.run() with recover_in_place: each kill -9 of a random rank at
    a random moment restarts that rank alone; the others keep their
    processes, re-form the process group and DDP's reducer with it,
    restore in place and go on. The run ends as the run without pt."""
    steps = 50
    ref = _reference(tmp_path, ranks, steps)
    out = str(tmp_path / "out")
    seed = random.randrange(1 << 30)
    rnd = random.Random(seed)
    node, sd, logtext = _node(tmp_path, ranks, [TRAINER, "--steps", str(steps), "--out", out,
                                                "--step-delay-ms", "30",
                                                "--recover-in-place"])
    done = lambda: logtext().count("every surviving rank restored step")
    try:
        mark = 0
        for kill in range(2):
            at = rnd.randrange(4, 10)
            _wait(lambda: logtext()[mark:].count("loss") >= ranks * at, 240,
                  "steps (seed %d)" % seed)
            time.sleep(rnd.random() * 0.05)
            before = [r["trainer_pid"] for r in _wait(lambda: _status(sd), 10, "status")["ranks"]]
            victim = rnd.randrange(ranks)
            os.kill(before[victim], 9)
            _wait(lambda: done() > kill, 120, "the recovery in place (seed %d)" % seed)
            after = [r["trainer_pid"] for r in _status(sd)["ranks"]]
            for r in range(ranks):
                if r == victim:
                    assert after[r] != before[r], "rank %d was not restarted" % r
                else:
                    assert after[r] == before[r], "surviving rank %d was restarted" % r
            mark = len(logtext())
        assert node.wait(timeout=300) == 0, logtext()[-3000:]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
    text = logtext()
    assert "abandoned" not in text, text[-3000:]
    assert text.count("restored step") >= 2 * (ranks - 1), text[-3000:]
    got = [open("%s.%d" % (out, r)).read() for r in range(ranks)]
    assert got == ref, "seed %d: the run recovered in place differs from the run without pt" % seed


def test_no_smp_trains_on_and_matches(tmp_path):
    """Without ptd: the no-SMP outcome, and State changes nothing of the run
    (its up-front AdamW state included): compare with the same loop that
    does not build a State at all."""
    ref = _reference(tmp_path, 1, 8)
    code = open(TRAINER).read().replace("pt.torch.State(", "_NoState(")
    code = code.replace("import pt.torch\n", "import pt.torch\n" + NOSTATE)
    plain = tmp_path / "plain.py"
    plain.write_text(code)
    p = subprocess.run([sys.executable, str(plain), "--steps", "8", "--out",
                        str(tmp_path / "plain")], env=dict(ENV0, PYTHONPATH=HERE),
                       capture_output=True, text=True, timeout=120)
    assert p.returncode == 0, p.stdout + p.stderr
    assert open(str(tmp_path / "plain") + ".0").read() == ref[0]


NOSTATE = '''
class _NoState:
    def __init__(self, *a, **k): pass
    def restore(self): return None
    def snapshot(self, step): return pt.SKIPPED
    def status(self): return None
    def close(self, done=False): pass
'''


_JOBS = iter(range(1 << 30))


def _in_node(tmp_path, code, ranks=1):
    sd = str(tmp_path / "sd")
    job = "ptf%dx%d" % (os.getpid(), next(_JOBS))  # one job, one name
    p = subprocess.run([PTD, "node", "--ranks", str(ranks), "--job", job, "--state-dir", sd,
                        "--shm-prefix", job + "-", "--", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=120, env=ENV0)
    for f in os.listdir("/dev/shm"):  # a failed job keeps its objects
        if f.startswith(job + "-"):
            os.unlink("/dev/shm/" + f)
    return p.returncode, p.stdout + p.stderr


def test_adamw_state_exists_before_the_first_step(tmp_path):
    rc, out = _in_node(tmp_path, r'''
import torch, pt, pt.torch
m = torch.nn.Linear(4, 3)
opt = torch.optim.AdamW(m.parameters(), lr=0.1, weight_decay=0.5)
w = m.weight.detach().clone()
s = pt.torch.State(m, opt)
assert torch.equal(m.weight, w), "building State changed a parameter"
names = [e.name for e in s.entries]
assert "optim.weight.exp_avg" in names and "optim.weight.exp_avg_sq" in names, names
assert "optim.weight.step" in names, names
assert all(float(v.abs().sum()) == 0 for st in opt.state.values() for v in st.values()), \
    "the up-front state is not what the first step finds"
assert all(p.grad is None for p in m.parameters())
assert s.restore() is None
assert s.snapshot(0) in (pt.OK, pt.SKIPPED)
s.close(done=True)
print("adamw ok")
''')
    assert rc == 0 and "adamw ok" in out, out


def test_refusals(tmp_path):
    rc, out = _in_node(tmp_path, r'''
import torch, pt, pt.torch
m = torch.nn.Linear(4, 3)
try:
    pt.torch.State(m, torch.optim.Rprop(m.parameters()))
    raise SystemExit("an optimizer with lazy state it cannot make was taken")
except TypeError as e:
    assert "Rprop" in str(e), e
# Adagrad makes its state in its constructor: nothing lazy to make
assert pt.torch.State(m, torch.optim.Adagrad(m.parameters())).entries
try:
    pt.torch.State(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
    raise SystemExit("SGD with momentum was taken")
except TypeError as e:
    assert "momentum" in str(e), e
class T(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.register_buffer("t", torch.zeros(4, 6).t())
try:
    pt.torch.State(T())
    raise SystemExit("a non-contiguous tensor was registered")
except ValueError as e:
    assert "not contiguous" in str(e) and "t" in str(e), e
class Big:
    def state_dict(self): return {"b": b"x" * 5000}
    def load_state_dict(self, d): pass
s = pt.torch.State(m, torch.optim.SGD(m.parameters(), lr=0.1), extra={"big": (Big(), 1000)})
assert s.restore() is None
try:
    s.snapshot(0)
    raise SystemExit("an extra over its declared size was taken")
except pt.Error as e:
    assert e.name == "E2BIG" and "big" in str(e), e
s.close(done=True)
print("refusals ok")
''')
    assert rc == 0 and "refusals ok" in out, out


def test_rng_is_captured_not_a_copy(tmp_path):
    """torch.get_rng_state() returns a copy: State reads it at every
    snapshot, so the RNG restored is the one at the step taken."""
    rc, out = _in_node(tmp_path, r'''
import os, random, sys, numpy, torch, pt, pt.torch
m = torch.nn.Linear(2, 2)
s = pt.torch.State(m, torch.optim.AdamW(m.parameters()))
step = s.restore()
if step is None:
    torch.manual_seed(1); random.seed(2); numpy.random.seed(3)
    for i in range(3):
        torch.rand(7); random.random(); numpy.random.rand()
        assert s.snapshot(i) in (pt.OK,)
        s.fence()
    want = (torch.rand(5).tolist(), random.random(), float(numpy.random.rand()))
    open(os.environ["OUTF"], "w").write(repr(want))
    os.kill(os.getpid(), 9)
assert step == 2, step
got = (torch.rand(5).tolist(), random.random(), float(numpy.random.rand()))
assert repr(got) == open(os.environ["OUTF"]).read(), (got,)
s.close(done=True)
print("rng ok")
'''.replace('os.environ["OUTF"]', repr(str(tmp_path / "want"))))
    assert rc == 0 and "rng ok" in out, out


def test_another_models_snapshot_is_refused(tmp_path):
    """Same names and sizes, another dtype (float16, then bfloat16): libpt's
    region table matches, the tensor table in the blob does not."""
    rc, out = _in_node(tmp_path, r'''
import os, torch, pt, pt.torch
flag = %r
m = torch.nn.Linear(4, 4, bias=False,
                    dtype=torch.bfloat16 if os.path.exists(flag) else torch.float16)
s = pt.torch.State(m)
if not os.path.exists(flag):
    assert s.restore() is None
    s.snapshot(0); s.fence()
    open(flag, "w").close()
    os.kill(os.getpid(), 9)
try:
    s.restore()
    raise SystemExit("another model's snapshot was restored")
except pt.Error as e:
    assert "another tensor table" in str(e) and "bfloat16" in str(e), e
s.close(done=True)
print("table ok")
''' % str(tmp_path / "flag"))
    assert rc == 0 and "table ok" in out, out


@pytest.mark.parametrize("shard", [False, True])
def test_export_safetensors(tmp_path, shard):
    """A committed step of a 2-rank job, kept after it completed, written
    as one safetensors file per rank: every tensor under its name, dtype and
    shape, equal to the trainer's final tensors (put together from the
    replicas' shares when sharded)."""
    from safetensors.torch import load_file

    job = "pte%d" % os.getpid()
    out = str(tmp_path / "out")
    p = subprocess.run([PTD, "node", "--ranks", "2", "--job", job, "--state-dir",
                        str(tmp_path / "sd"), "--shm-prefix", job + "-", "--keep",
                        "--master-port", str(_port()), "--", sys.executable, TRAINER,
                        "--steps", "6", "--out", out, "--dump"] + (["--shard"] if shard else []),
                       capture_output=True, text=True, timeout=180, env=ENV0)
    try:
        assert p.returncode == 0, (p.stdout + p.stderr)[-3000:]
        # what each rank holds: all its tensors, or its half of every one
        from pt import _pt
        for r in range(2):
            snap = _pt.read_committed(_pt.object_name(job + "-", job, r))
            table = pt.torch.read_table(snap["blob"])
            total = sum(t["bytes"] for t in table)
            held = sum(len(b) for _n, b in snap["regions"])
            if shard:
                assert all("share" in t for t in table)
                assert total / 2 - 64 * len(table) <= held <= total / 2 + 64 * len(table), \
                    (held, total)
            else:
                assert held == total, (held, total)
        e = subprocess.run([sys.executable, "-m", "pt.torch", "export", "--job", job,
                            "--shm-prefix", job + "-", "--out", str(tmp_path / "exp")],
                           capture_output=True, text=True, timeout=120)
        assert e.returncode == 0, e.stdout + e.stderr
        assert e.stdout.startswith("step 5:"), e.stdout
        for r in range(2):
            got = load_file(str(tmp_path / "exp" / ("rank%d.safetensors" % r)))
            want = torch.load("%s.%d.pt" % (out, r))
            assert "module.body.layers.0.self_attn.in_proj_weight" in got, sorted(got)
            assert "optim.module.emb.weight.exp_avg_sq" in got, sorted(got)
            for n, t in want.items():
                assert n in got, n
                assert got[n].dtype == t.dtype and got[n].shape == t.shape, n
                assert torch.equal(got[n], t), n
        # a step not held, and an object that is not a snapshot object
        e = subprocess.run([sys.executable, "-m", "pt.torch", "export", "--job", job,
                            "--shm-prefix", job + "-", "--step", "2", "--out",
                            str(tmp_path / "exp2")], capture_output=True, text=True, timeout=60)
        assert e.returncode == 1 and "does not hold step 2" in e.stderr, e.stderr
        bad = "/dev/shm/%s-x-pt.%s.0" % (job, job)
        fd = os.open(bad, os.O_CREAT | os.O_WRONLY, 0o600)
        os.write(fd, os.urandom(1 << 16))
        os.close(fd)
        e = subprocess.run([sys.executable, "-m", "pt.torch", "export", "--job", job,
                            "--shm-prefix", job + "-x-", "--out", str(tmp_path / "exp3")],
                           capture_output=True, text=True, timeout=60)
        assert e.returncode == 1 and "EFORMAT" in e.stderr, e.stderr
        assert not os.path.exists(str(tmp_path / "exp3" / "rank0.safetensors"))
    finally:
        for f in os.listdir("/dev/shm"):
            if f.startswith(job + "-"):
                os.unlink("/dev/shm/" + f)


def _plain(tmp_path, code):
    """code in a process without ptd (no SMP)."""
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True,
                       timeout=120, env=ENV0)
    return p.returncode, p.stdout + p.stderr


def test_mistakes_are_caught_without_ptd_too(tmp_path):
    """What a run without ptd can check, it checks: snapshot() before
    restore(), an extra over its size, declared sizes past the blob, a
    model cast after State was built, a scheduler left out."""
    rc, out = _plain(tmp_path, r'''
import torch, pt, pt.torch
m = torch.nn.Linear(4, 3)
opt = torch.optim.AdamW(m.parameters())
s = pt.torch.State(m, opt)
try:
    s.snapshot(0)
    raise SystemExit("snapshot() before restore() was taken")
except pt.Error as e:
    assert e.name == "PT_ENORESTORE" and "restore() first" not in str(e) and \
        "before restore()" in str(e), e
assert s.restore() is None and s.snapshot(0) == pt.SKIPPED
class Big:
    def state_dict(self): return {"b": b"x" * 5000}
    def load_state_dict(self, d): pass
s = pt.torch.State(m, opt, extra={"big": (Big(), 1000)})
s.restore()
try:
    s.snapshot(0)
    raise SystemExit("an extra over its size was taken without ptd")
except pt.Error as e:
    assert e.name == "E2BIG", e
try:
    pt.torch.State(m, opt, extra={"big": (Big(), 2 << 20)})
    raise SystemExit("declared sizes past the blob were taken")
except pt.torch.ConfigError as e:
    assert "declared sizes" in str(e), e
sched = torch.optim.lr_scheduler.LambdaLR(opt, lambda s: 1.0)
pt.torch.State(m, opt)   # says a warning on stderr
print("plain ok")
''')
    assert rc == 0 and "plain ok" in out, out
    assert "LR scheduler that is not in extra" in out, out


def test_a_configuration_error_is_not_restarted(tmp_path):
    """Under ptd an uncaught ConfigError exits 78: the job fails at once,
    not after --max-restarts restarts."""
    t0 = time.monotonic()
    rc, out = _in_node(tmp_path, r'''
import torch, pt, pt.torch
m = torch.nn.Linear(4, 3)
pt.torch.State(m, torch.optim.SGD(m.parameters(), lr=0.1, momentum=0.9))
''')
    assert rc != 0, out
    assert "exited with status 78" in out and "not restarted" in out, out[-2000:]
    assert out.count("Traceback") == 1, out[-3000:]  # one start, no restart
    assert time.monotonic() - t0 < 60


def test_moved_tensors_and_channels_last(tmp_path):
    """A channels_last convolution (dense, not row-major) is taken and
    restored bit-exact; a model cast to another dtype after State was built
    is refused naming the tensor and the fix."""
    want = str(tmp_path / "want.pt")
    rc, out = _in_node(tmp_path, r'''
import os, torch, pt, pt.torch
torch.manual_seed(0)
m = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last)
assert not m.weight.is_contiguous()
opt = torch.optim.AdamW(m.parameters())
s = pt.torch.State(m, opt)
step = s.restore()
if step is None:
    for i in range(3):
        m(torch.randn(2, 3, 8, 8).to(memory_format=torch.channels_last)).sum().backward()
        opt.step(); opt.zero_grad()
        s.snapshot(i)
    s.fence()
    torch.save({k: v.clone() for k, v in m.state_dict().items()}, %r)
    os.kill(os.getpid(), 9)
assert step == 2, step
w = torch.load(%r)
assert all(torch.equal(w[k], v) for k, v in m.state_dict().items())
assert m.weight.stride() == w["weight"].stride()
m.double()
try:
    s.snapshot(3)
    raise SystemExit("a model cast after State was taken")
except pt.torch.ConfigError as e:
    assert "weight" in str(e) and "float64" in str(e) and "build State after" in str(e), e
s.close(done=True)
print("moved ok")
''' % (want, want))
    assert rc == 0 and "moved ok" in out, out


def test_another_shape_names_the_region(tmp_path):
    """A restart with another model (a layer 16 wide, then 17): libpt's
    refusal names the first region that differs, and the job fails at once
    (PT_EREGIONS is permanent: exit 78), not after restarts."""
    flag = str(tmp_path / "flag")
    rc, out = _in_node(tmp_path, r'''
import os, torch, pt, pt.torch
flag = %r
m = torch.nn.Sequential(torch.nn.Linear(4, 17 if os.path.exists(flag) else 16))
s = pt.torch.State(m)
if not os.path.exists(flag):
    assert s.restore() is None
    s.snapshot(0); s.fence()
    open(flag, "w").close()
    os.kill(os.getpid(), 9)
s.restore()
''' % flag)
    assert rc != 0, out
    assert "PT_EREGIONS" in out and "region 0 is '0.weight' (272 bytes, host) in the " \
        "trainer, '0.weight' (256 bytes, host) in the object" in out, out[-3000:]
    assert "exited with status 78" in out and out.count("Traceback") == 1, out[-3000:]


def test_optimizer_state_kept_frozen_and_optimizer_only_parameters(tmp_path):
    """State made up front only where the first step would make it: a
    parameter already stepped keeps its moments, a frozen one gets none; a
    parameter the optimizer holds but the model does not is snapshotted and
    restored; a parameter group added after State is refused."""
    want = str(tmp_path / "want.pt")
    rc, out = _in_node(tmp_path, r'''
import os, torch, pt, pt.torch
torch.manual_seed(0)
m = torch.nn.Linear(4, 3)
frozen = torch.nn.Linear(3, 3)
frozen.requires_grad_(False)
model = torch.nn.Sequential(m, frozen)
scale = torch.nn.Parameter(torch.ones(3))          # the optimizer's only
opt = torch.optim.AdamW([{"params": list(model.parameters())}, {"params": [scale]}], lr=0.1)
model(torch.randn(2, 4)).sum().backward()          # one step: scale has no grad yet
opt.step(); opt.zero_grad()
assert float(opt.state[m.weight]["step"]) == 1 and scale not in opt.state
s = pt.torch.State(model, opt)
assert float(opt.state[m.weight]["step"]) == 1, "a stepped parameter's state was reset"
assert float(opt.state[m.weight]["exp_avg"].abs().sum()) > 0
assert float(opt.state[scale]["step"]) == 0 and frozen.weight not in opt.state
names = [e.name for e in s.entries]
assert "optparam.1.0" in names and "optim.optparam.1.0.exp_avg" in names, names
step = s.restore()
if step is None:
    for i in range(3):
        (model(torch.randn(2, 4)) * scale).sum().backward()
        opt.step(); opt.zero_grad()
        s.snapshot(i)
    s.fence()
    torch.save(scale.detach().clone(), %r)
    os.kill(os.getpid(), 9)
assert step == 2, step
assert torch.equal(scale.detach(), torch.load(%r)), "the optimizer-only parameter was not restored"
opt.add_param_group({"params": [torch.nn.Parameter(torch.zeros(2))]})
try:
    s.snapshot(3)
    raise SystemExit("a parameter group added after State was taken")
except pt.torch.ConfigError as e:
    assert "parameter groups changed" in str(e), e
s.close(done=True)
print("optimizer ok")
''' % (want, want))
    assert rc == 0 and "optimizer ok" in out, out
