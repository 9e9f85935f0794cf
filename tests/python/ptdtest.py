"""What tests/python's tests share: where the build's ptd and ptctl are
(PT_BUILD names the build folder, default ../../build), the environment
without pt's variables, and waiting on a node."""
import json
import os
import subprocess
import time

HERE = os.path.dirname(os.path.abspath(__file__))
BUILD = os.environ.get("PT_BUILD", os.path.join(HERE, "..", "..", "build"))
PTD = os.path.join(BUILD, "bin", "ptd")
PTCTL = os.path.join(BUILD, "bin", "ptctl")
ENV0 = {k: v for k, v in os.environ.items() if not k.startswith("PT_")}


def status(sd):
    """ptctl status --json of the node with state dir sd, or None."""
    p = subprocess.run([PTCTL, "--state-dir", sd, "status", "--json"],
                       capture_output=True, text=True, timeout=10)
    return json.loads(p.stdout) if p.returncode == 0 else None


def wait(pred, seconds, what):
    """pred()'s first true value within seconds, else AssertionError."""
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        v = pred()
        if v:
            return v
        time.sleep(0.05)
    raise AssertionError("timed out waiting for " + what)
