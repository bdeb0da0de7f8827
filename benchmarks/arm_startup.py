"""Cold start and memory of each device mode: time to the first output and peak RSS (issue 8).

    python benchmarks/arm_startup.py MODEL.ernn [--aot-dir DIR] [--repeat 5] [--json OUT]

Each measurement is a fresh Python process that imports edgernn, loads the model, creates a stream and
calls ``step`` once; it reports the time from the moment the process was spawned to that first output
(interpreter start-up included) and its peak resident memory (``ru_maxrss``). Modes:

* ``aot``: the AOT module (``EDGERNN_AOT_DIR``), numba and llvmlite blocked from importing;
* ``numba-warm``: numba JIT with its kernel cache already filled (a board after its first run);
* ``numba-cold``: numba JIT with an empty cache (the first run on a board: the kernels compile);
* ``numpy``: the numpy backend, numba blocked;
* ``baseline``: ``import numpy`` alone, the floor under every mode (interpreter + numpy start-up).

The median over ``--repeat`` runs is printed (numba-cold runs once). Timings under qemu emulation say
nothing about a real board; measure on the board itself.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
import time

CHILD = r"""
import sys, time, resource
t0 = time.perf_counter()
if sys.argv[3] == "baseline":
    import numpy
    print("0.0 none", time.perf_counter() - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss, 0)
    sys.exit(0)
if sys.argv[2] == "1":
    import importlib.abc
    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("numba", "llvmlite"):
                raise ImportError(name + " blocked")
    sys.meta_path.insert(0, Block())
import numpy as np
import edgernn
m = edgernn.load(sys.argv[1], backend=sys.argv[3])
s = m.stream()
y = s.step(np.zeros(m.info["input_size"], np.float32))
t1 = time.perf_counter()
print(repr(float(y[0])), m.info["backend"], t1 - t0, resource.getrusage(resource.RUSAGE_SELF).ru_maxrss,
      int(any(k.split(".")[0] in ("numba", "llvmlite") for k in sys.modules)), flush=True)
"""

MODES = {  # name -> (block numba, backend, fresh cache)
    "aot": (True, "aot", False),
    "numba-warm": (False, "numba", False),
    "numba-cold": (False, "numba", True),
    "numpy": (True, "numpy", False),
    "baseline": (True, "baseline", False),
}


def measure(model: str, mode: str, env: dict) -> dict:
    """One fresh process in ``mode``: wall seconds to first output, in-process seconds, peak RSS MB."""
    block, backend, fresh = MODES[mode]
    env = dict(env)
    with tempfile.TemporaryDirectory(prefix="edgernn-cold-") as tmp:
        if fresh:
            env["EDGERNN_CACHE_DIR"] = tmp
        t = time.perf_counter()
        out = subprocess.run(
            [sys.executable, "-c", CHILD, model, "1" if block else "0", backend],
            capture_output=True,
            text=True,
            env=env,
        )
        wall = time.perf_counter() - t
    if out.returncode != 0:
        raise RuntimeError(f"{mode}: {out.stderr.strip().splitlines()[-1:]}")
    _, got_backend, inproc, rss_kb, numba_loaded = out.stdout.split()
    return {
        "mode": mode,
        "backend": got_backend,
        "first_output_s": wall,
        "in_process_s": float(inproc),
        "peak_rss_mb": int(rss_kb) / 1024,
        "numba_imported": bool(int(numba_loaded)),
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("model")
    ap.add_argument("--aot-dir", default=os.environ.get("EDGERNN_AOT_DIR"))
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument("--modes", default=",".join(MODES))
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)
    env = {k: v for k, v in os.environ.items() if k != "EDGERNN_BACKEND"}
    if a.aot_dir:
        env["EDGERNN_AOT_DIR"] = a.aot_dir
    rows = []
    for mode in a.modes.split(","):
        if mode == "numba-warm":
            measure(a.model, mode, env)  # fill the cache
        runs = [measure(a.model, mode, env) for _ in range(1 if mode == "numba-cold" else a.repeat)]
        row = dict(runs[0])
        for k in ("first_output_s", "in_process_s", "peak_rss_mb"):
            row[k] = statistics.median(r[k] for r in runs)
        row["runs"] = len(runs)
        rows.append(row)
        print(
            f"{mode:11s} backend={row['backend']:6s} first output {row['first_output_s']:7.3f} s "
            f"(in-process {row['in_process_s']:.3f} s)  peak RSS {row['peak_rss_mb']:6.1f} MB  "
            f"numba imported: {row['numba_imported']}  (median of {row['runs']})",
            flush=True,
        )
    if a.json:
        with open(a.json, "w") as f:
            json.dump({"model": a.model, "python": sys.version.split()[0], "rows": rows}, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
