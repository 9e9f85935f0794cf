"""Recovery of a PyTorch job, measured: kill -9 of one rank's trainer to
the job's next completed step, with recovery in place (only the dead rank
restarted; the others restore without exiting) and without it (ptd node
restarts every rank), in the same run on the same job.

  PT_BUILD=build python tests/python/bench_recover.py [--ranks 2] [--kills 3]

Each mode runs torch_trainer.py (a small transformer LM, DDP over gloo)
under its own ptd node, kills a random rank --kills times, and reports the
median and the range of kill -> the first step completed after it, and
for reference the time a new process takes to import torch here (the part
of a restart that recovery in place saves on the survivors)."""
import argparse
import os
import random
import re
import statistics
import subprocess
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from ptdtest import ENV0, PTD, status, wait  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
TRAINER = os.path.join(HERE, "torch_trainer.py")


def run(mode, ranks, kills, port, rnd):
    tmp = tempfile.mkdtemp(prefix="pt-bench-recover.")
    sd, logf = os.path.join(tmp, "sd"), os.path.join(tmp, "node.log")
    job = "bre%d%s" % (os.getpid(), mode[:2])
    args = [TRAINER, "--steps", "100000", "--out", os.path.join(tmp, "out"),
            "--step-delay-ms", "20"] + (["--recover-in-place"] if mode == "in place" else [])
    with open(logf, "w") as log:
        node = subprocess.Popen([PTD, "node", "--ranks", str(ranks), "--job", job,
                                 "--state-dir", sd, "--shm-prefix", job + "-",
                                 "--master-port", str(port), "--backoff-ms", "10",
                                 "--", sys.executable] + args,
                                stdout=log, stderr=subprocess.STDOUT, env=ENV0)
    text = lambda: open(logf).read()
    times = []
    try:
        for _ in range(kills):
            mark = len(text())
            wait(lambda: text()[mark:].count(" loss ") >= ranks * 8, 240, "steps")
            pid = status(sd)["ranks"][rnd.randrange(ranks)]["trainer_pid"]
            mark = len(text())
            t0 = time.monotonic()
            os.kill(pid, 9)
            # the first step completed after the restore point was set
            def stepped():
                t = text()[mark:]
                at = t.find("restore from step")
                return at >= 0 and re.search(r"^step \d+ loss ", t[at:], re.M)
            wait(stepped, 120, "the step after the kill")
            times.append((time.monotonic() - t0) * 1000)
    finally:
        node.terminate()
        node.wait(timeout=30)
    return times


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--ranks", type=int, default=2)
    ap.add_argument("--kills", type=int, default=3)
    a = ap.parse_args()
    rnd = random.Random(1)
    t0 = time.monotonic()
    subprocess.run([sys.executable, "-c", "import torch, torch.distributed"], check=True)
    imp = (time.monotonic() - t0) * 1000
    port = 20000 + os.getpid() % 10000
    res = {m: run(m, a.ranks, a.kills, port + 100 * i, rnd)
           for i, m in enumerate(["in place", "restart all"])}
    print("recovery of %d DDP ranks (gloo, CPU), kill -9 to the next step, %d kills each:"
          % (a.ranks, a.kills))
    for m, ts in res.items():
        print("  %-12s median %7.0f ms  (%.0f-%.0f)" % (m, statistics.median(ts), min(ts),
                                                        max(ts)))
    print("  import torch in a new process: %.0f ms" % imp)


if __name__ == "__main__":
    main()
