"""Generated per-model kernels: cold compile, warm start, step latency.

    python benchmarks/codegen_compile.py [--models lstm_8x64,gru_8x64,...] [--json OUT]

For each benchmark model, in fresh Python processes (so nothing is shared but the kernel cache directory):

* ``cold``: an empty kernel cache; ``edgernn.load`` + the first ``Stream.step`` output (and then the first
  ``Stream.run`` output, which compiles the chunk kernel): CPU seconds of the process (user + sys) and
  wall seconds from the start of the import;
* ``warm``: the same again with the cache the cold run filled (a board after its first run).

Then, in this process, the latency of the generated ``step`` kernel (median of several timed loops of
20,000 calls on the model's own buffers) and the max |Δ| of its state after 100 steps against the numpy
backend (the ops' numpy implementations) from the same inputs.

The generic plan interpreter these kernels replaced (``kernels/engine.py``, deleted) compiled for 53 CPU s
on every first load and stepped LSTM 8→64 in 4.4-4.9 µs where the generated step took 2.8 (measured side
by side with this script before its deletion; the table is in the README).
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np

CHILD = r"""
import os, sys, time, resource
t0 = time.perf_counter()
import numpy as np
import edgernn
mod = edgernn.load(sys.argv[1], backend="numba")
s = mod.stream()
y = s.step(np.zeros(mod.input_size, np.float32))
t1 = time.perf_counter()
s.run(np.zeros((4, mod.input_size), np.float32))
t2 = time.perf_counter()
r = resource.getrusage(resource.RUSAGE_SELF)
print(t1 - t0, t2 - t0, r.ru_utime + r.ru_stime, flush=True)
"""


def _models(names: list[str], d: str) -> dict[str, str]:
    from edgernn import artifact
    from edgernn.bench import synthetic

    out = {}
    for name in names:
        if name == "stacked_lstm_2x64":
            plan, t = synthetic("lstm", 8, 64, 1, seed=0)
            plan2, t2 = synthetic("lstm", 64, 64, 1, seed=1)
            second = dict(plan2["layers"][0], name="rec2", tensors={k: "rec2." + k for k in ("W", "R", "B")})
            plan["layers"].insert(1, second)
            t.update({"rec2." + k: t2["rec." + k] for k in ("W", "R", "B")})
        else:
            cell, rest = name.split("_")
            i, h = (int(v) for v in rest.split("x"))
            plan, t = synthetic(cell, i, h, 1, seed=0)
        path = os.path.join(d, f"{name}.ernn")
        artifact.write(path, plan, t)
        out[name] = path
    return out


def _child(path: str, mode: str, cache: str) -> tuple[float, float, float]:
    env = dict(os.environ, EDGERNN_CACHE_DIR=cache)
    env.pop("NUMBA_CACHE_DIR", None)
    r = subprocess.run([sys.executable, "-c", CHILD, path, mode], env=env, capture_output=True, text=True)
    if r.returncode != 0:
        raise SystemExit(f"child failed ({mode} {path}):\n{r.stderr[-2000:]}")
    a, b, c = (float(v) for v in r.stdout.split()[-3:])
    return a, b, c


def _latency(fn, args, n: int = 20000, loops: int = 7) -> float:
    fn(*args)
    best = []
    for _ in range(loops):
        t = time.perf_counter()
        for _ in range(n):
            fn(*args)
        best.append((time.perf_counter() - t) / n)
    return float(np.median(best)) * 1e6


def main(argv: list[str] | None = None) -> int:
    """Run the comparison and print the table; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--models", default="lstm_8x64,gru_8x64,lstm_8x256,esn_8x500,stacked_lstm_2x64")
    ap.add_argument("--json", help="write the figures to this file")
    a = ap.parse_args(argv)
    import edgernn

    res: dict = {"models": {}}
    with tempfile.TemporaryDirectory() as d:
        paths = _models(a.models.split(","), d)
        print(
            f"{'model':<20} {'cold CPU s':>10} {'cold wall s':>11} {'+run s':>7} {'warm wall s':>11} "
            f"{'gen step us':>11} {'max |d| vs numpy':>16}"
        )
        for name, path in paths.items():
            cache = tempfile.mkdtemp(dir=d)
            os.chmod(cache, 0o700)
            cold1, cold2, cold_cpu = _child(path, "gen", cache)
            warm1, _, _ = _child(path, "gen", cache)
            m = edgernn.load(path, backend="numba")
            ref = edgernn.load(path, backend="numpy")
            p = m._packed
            x = np.random.default_rng(0).standard_normal(m.input_size).astype(np.float32)
            gen = _latency(m._backend.step, (x, p.wf, p.wb, m._m0.copy()))
            s1, s2 = m.stream(), ref.stream()  # the same 100 inputs through both, from the same state
            for xt in np.random.default_rng(1).standard_normal((100, m.input_size)).astype(np.float32):
                s1.step(xt)
                s2.step(xt)
            diff = float(np.abs(s1.state - s2.state).max())
            row = dict(
                cold_cpu_s=cold_cpu,
                cold_wall_s=cold1,
                cold_run_wall_s=cold2,
                warm_wall_s=warm1,
                gen_step_us=gen,
                max_abs_diff=diff,
            )
            res["models"][name] = row
            print(
                f"{name:<20} {cold_cpu:>10.2f} {cold1:>11.2f} {cold2 - cold1:>7.2f} {warm1:>11.2f} "
                f"{gen:>11.2f} {diff:>16.1e}"
            )
    if a.json:
        with open(a.json, "w") as f:
            json.dump(res, f, indent=2)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
