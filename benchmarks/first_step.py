"""The first ``step`` after ``load`` against the steady-state step, and deadline overruns of the device loop.

Every figure comes from fresh processes (a first step is a once-per-process event), each run twice in the
same session: as shipped (``load`` warms the model, ``Model._warm``) and with the warm-up switched off
(``Model._warm`` replaced by a no-op in the child): the baseline of the ratios.

1. First step: a child loads the model, times its first five ``Stream.step`` calls and the median of
   1,000 more; printed as microseconds and as first / median. Warm kernel cache (the usual start) and,
   with ``--cold``, an empty kernel cache (``EDGERNN_CACHE_DIR`` a fresh folder: numba compiles first).
2. Device loop: ``examples/device_loop.py MODEL samples.csv --rate 1000`` over 10^4 samples (10 s), its
   summary line (overruns, those that woke up late, step p50/p99/max) for each variant, at normal and at
   real-time priority (``--realtime``).

Run::

    python benchmarks/first_step.py [--cold] [--samples 10000] [--rate 1000] [--repeat 5]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile

import numpy as np

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))

CHILD = r"""
import sys, time
import numpy as np
import edgernn
from edgernn import runtime
if sys.argv[2] == "off":
    runtime.Model._warm = lambda self: None
t0 = time.perf_counter()
m = edgernn.load(sys.argv[1])
t1 = time.perf_counter()
s = m.stream()
x = np.zeros(m.input_size, np.float32) + 0.1
first = []
for _ in range(5):
    a = time.perf_counter(); s.step(x); first.append((time.perf_counter() - a) * 1e6)
rest = []
for _ in range(1000):
    a = time.perf_counter(); s.step(x); rest.append((time.perf_counter() - a) * 1e6)
print(m.backend, t1 - t0, *first, float(np.median(rest)))
"""

DEVICE_LOOP = os.path.join(ROOT, "examples", "device_loop.py")
LOOP = r"""
import runpy, sys
from edgernn import runtime
if sys.argv[1] == "off":
    runtime.Model._warm = lambda self: None
script = sys.argv[2]
sys.argv = [script, *sys.argv[3:]]
runpy.run_path(script, run_name="__main__")
"""


def first_step(path: str, warm: str, cache: str | None) -> dict:
    env = dict(os.environ)
    if cache is not None:
        env["EDGERNN_CACHE_DIR"] = cache
    r = subprocess.run([sys.executable, "-c", CHILD, path, warm], capture_output=True, text=True, env=env)
    if r.returncode:
        raise RuntimeError(r.stderr.strip().splitlines()[-1])
    backend, load_s, *f, median = r.stdout.split()
    return {
        "backend": backend,
        "load_s": float(load_s),
        "first_us": [float(v) for v in f],
        "median_us": float(median),
    }


def device_loop(path: str, samples: str, rate: float, warm: str, realtime: bool) -> str:
    extra = ["--realtime"] if realtime else []
    r = subprocess.run(
        [sys.executable, "-c", LOOP, warm, DEVICE_LOOP, path, samples, "--rate", str(rate), *extra],
        capture_output=True,
        text=True,
    )
    if r.returncode:
        raise RuntimeError(r.stderr.strip()[-500:])
    return r.stderr.strip().splitlines()[-1]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument(
        "--cold", action="store_true", help="also an empty kernel cache (numba compiles: minutes)"
    )
    ap.add_argument("--samples", type=int, default=10_000, help="device loop samples (default 10^4)")
    ap.add_argument("--rate", type=float, default=1000.0, help="device loop rate in Hz (default 1000)")
    ap.add_argument("--repeat", type=int, default=5, help="fresh processes per warm-cache figure")
    a = ap.parse_args(argv)
    from edgernn import artifact
    from edgernn.bench import synthetic

    with tempfile.TemporaryDirectory(prefix="edgernn-first-step-") as tmp:
        models = {
            "gru_6x16x4 (IMU-sized)": synthetic("gru", 6, 16, 4),
            "lstm_8x64": synthetic("lstm", 8, 64, 1),
        }
        paths = {}
        for name, (plan, tensors) in models.items():
            paths[name] = os.path.join(tmp, name.split()[0] + ".ernn")
            artifact.write(paths[name], plan, tensors)
        print("1. first Stream.step after load, fresh processes (microseconds)")
        for name, path in paths.items():
            first_step(path, "on", None)  # fill the kernel cache
            for warm in ("off", "on"):
                runs = [first_step(path, warm, None) for _ in range(a.repeat)]
                f1 = statistics.median(r["first_us"][0] for r in runs)
                f2 = statistics.median(r["first_us"][1] for r in runs)
                med = statistics.median(r["median_us"] for r in runs)
                load = statistics.median(r["load_s"] for r in runs)
                print(
                    f"  {name:24s} warm-up {warm:3s} [warm cache, {runs[0]['backend']}] "
                    f"load {load * 1e3:7.1f} ms"
                    f"  step #1 {f1:8.1f}  #2 {f2:6.1f}  median {med:5.2f}  #1/median {f1 / med:7.1f}x"
                    f"  (median of {a.repeat})",
                    flush=True,
                )
            if a.cold:
                for warm in ("off", "on"):
                    with tempfile.TemporaryDirectory(prefix="edgernn-cold-") as cache:
                        os.chmod(cache, 0o700)
                        r = first_step(path, warm, cache)
                    print(
                        f"  {name:24s} warm-up {warm:3s} [EMPTY cache] load {r['load_s']:7.1f} s   "
                        f"step #1 {r['first_us'][0]:8.1f}  #2 {r['first_us'][1]:6.1f}  "
                        f"median {r['median_us']:5.2f}  #1/median {r['first_us'][0] / r['median_us']:7.1f}x",
                        flush=True,
                    )
        rng = np.random.default_rng(0)
        csv = os.path.join(tmp, "samples.csv")
        np.savetxt(csv, rng.normal(size=(a.samples, 6)).astype(np.float32), delimiter=",", fmt="%.6g")
        print(f"2. examples/device_loop.py --rate {a.rate:g} over {a.samples} samples, {list(paths)[0]}")
        for realtime in (False, True):
            for warm in ("off", "on"):
                line = device_loop(paths[list(paths)[0]], csv, a.rate, warm, realtime)
                print(f"  warm-up {warm:3s}{' --realtime' if realtime else ''}: {line}", flush=True)
        with open("/proc/stat") as f:
            steal = f.readline().split()[8]  # jiffies the host kept this machine's virtual CPUs waiting
        print(
            f"  (machine: load average {os.getloadavg()[0]:.1f} on {os.cpu_count()} CPUs, "
            f"steal {steal} jiffies since boot)"
        )
    return 0


if __name__ == "__main__":
    sys.exit(main())
