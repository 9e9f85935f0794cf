"""The pt package against a real `ptd node` (CPU, no torch needed).

PT_BUILD names the build folder (default ../../build)."""
import os
import random
import subprocess
import sys

import pytest

import pt
from ptdtest import PTD, status as _status, wait as _wait

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(HERE, "trainer.py")


def test_no_smp_is_an_error_with_code_and_text():
    with pytest.raises(pt.Error) as ei:
        pt.Client(socket_path="/nonexistent/pt.sock", timeout_ms=50)
    e = ei.value
    assert e.code < 0 and e.name == "ENOENT" and e.text
    assert pt.strerror(e.code) == e.text


def test_reference_runs_without_pt(tmp_path):
    out = str(tmp_path / "ref")
    p = subprocess.run([sys.executable, TRAINER, "--steps", "5", "--out", out,
                        "--step-delay-ms", "0"], capture_output=True, text=True,
                       timeout=60, env={k: v for k, v in os.environ.items()
                                        if not k.startswith("PT_")})
    assert p.returncode == 0, p.stderr
    assert "no SMP" in p.stdout
    assert len(open(out + ".0").read().strip()) == 64


@pytest.mark.parametrize("ranks", [2])
def test_kill_9_resumes_bit_exact(tmp_path, ranks):
    steps = 150
    ref = str(tmp_path / "ref")
    env0 = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}
    for r in range(ranks):
        env = dict(env0, RANK=str(r))
        subprocess.run([sys.executable, TRAINER, "--steps", str(steps), "--out", ref,
                        "--step-delay-ms", "0"], check=True, timeout=120, env=env,
                       capture_output=True)
    sd = str(tmp_path / "sd")
    log = open(tmp_path / "node.log", "w")
    job = "py%d" % os.getpid()
    node = subprocess.Popen([PTD, "node", "--ranks", str(ranks), "--job", job,
                             "--state-dir", sd, "--shm-prefix", job + "-",
                             "--master-port", str(20000 + random.randrange(12000)),
                             "--backoff-ms", "50", "--log-level", "7", "--",
                             sys.executable, TRAINER, "--steps", str(steps),
                             "--out", str(tmp_path / "out")],
                            stdout=log, stderr=subprocess.STDOUT, env=env0)
    try:
        logtext = lambda: open(tmp_path / "node.log").read()
        for kill in range(2):
            _wait(lambda: logtext().count("commit step") > 5 * (kill + 1), 60, "commits")
            st = _wait(lambda: _status(sd), 10, "status")
            victim = st["ranks"][kill % ranks]["trainer_pid"]
            os.kill(victim, 9)
            _wait(lambda: logtext().count("restored step") > kill, 60, "a restore")
        assert node.wait(timeout=120) == 0, logtext()[-3000:]
    finally:
        if node.poll() is None:
            node.kill()
            node.wait()
        log.close()
    text = open(tmp_path / "node.log").read()
    assert text.count("restored step") >= 2, text[-3000:]
    for r in range(ranks):
        assert open(ref + ".%d" % r).read() == open(str(tmp_path / "out") + ".%d" % r).read()


def test_register_refuses_what_it_cannot_hold(tmp_path):
    sd = str(tmp_path / "sd")
    job = "pr%d" % os.getpid()
    # a trainer that checks the refusals from inside a real job
    code = r'''
import array, pt, sys
c = pt.Client()
try:
    c.register("ro", b"immutable")
    sys.exit("a read-only buffer was registered")
except ValueError as e:
    assert "writable" in str(e)
a = array.array("d", range(16))
m = memoryview(a)[::2]
try:
    c.register("strided", m)
    sys.exit("a non-contiguous view was registered")
except ValueError as e:
    assert "contiguous" in str(e)
c.register("a", a)
try:
    c.register("a", array.array("d", [1.0]))
    sys.exit("a name was registered twice")
except pt.Error as e:
    assert e.name == "EEXIST", e.name
assert c.restore() is None
assert c.blob_get() is None
rc = c.snapshot(0)
assert rc in (pt.OK, pt.SKIPPED)
c.fence()
st = c.status()
assert st["regions"] == 1 and st["bytes"] == 128, st
try:
    c.snapshot(0)
    sys.exit("a repeated step was accepted")
except pt.Error as e:
    assert e.code < 0
try:
    c.recover_pending()
    sys.exit("recover_pending() answered a client without recover_in_place")
except pt.Error as e:
    assert e.name == "PT_ESTATE", e.name
assert pt.RECOVER == 2 and pt.SKIPPED == 1
c.close(done=True)
r = pt.Client(recover_in_place=True)
assert r.recover_pending(timeout_ms=30) is None  # nobody died
r.close(done=False)
try:
    c.fence()
    sys.exit("a closed client answered")
except ValueError:
    pass
print("refusals ok")
'''
    p = subprocess.run([PTD, "node", "--ranks", "1", "--job", job, "--state-dir", sd,
                        "--shm-prefix", job + "-", "--", sys.executable, "-c", code],
                       capture_output=True, text=True, timeout=60)
    assert p.returncode == 0 and "refusals ok" in p.stdout + p.stderr, p.stdout + p.stderr
