"""``streams(n).step`` against torch's batched cell and ORT's batched step graph at several n, interleaved
in one process (one thread each): the figures of issue 14's many-stream goal.

For each model and n: the steps are timed in turns (``--rounds`` rounds, each a burst of calls), so a
busy machine slows them alike; printed per stream-step (µs), the minimum and median of the rounds, and
torch / edgernn and ORT / edgernn of the minima (> 1: edgernn faster; the minimum is the figure least
disturbed by a busy machine). ``--loops``: also the portable blocked loops (``EDGERNN_BATCH_GEMM=0``).
Outputs are compared after timing. Also the first ``streams(n).step`` of the process (its compile, or
the kernel cache's load).

    python benchmarks/streams_sweep.py [--n 64,256,1024,4096] [--models lstm_8x64,gru_8x64] [--quant fp32]
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))

from benchlib import MODELS, assert_agree  # noqa: E402

CLOCK = time.perf_counter


def _timer(f, X: np.ndarray, reps: int) -> float:
    t = CLOCK()
    for _ in range(reps):
        f(X)
    return (CLOCK() - t) / reps


def sweep(
    path: str, plan: dict, tensors: dict, quant: str, ns: list[int], rounds: int, loops: bool = False
) -> list[dict]:
    """One dict per n: µs per stream-step (min and median of the rounds) of each backend present (with
    ``loops``, also the portable blocked loops: ``EDGERNN_BATCH_GEMM=0``, the kernel before the GEMM)."""
    from edgernn.export.baselines import OrtStep, TorchBaseline, onnx_step_model

    import edgernn

    out = []
    for n in ns:
        X = np.random.default_rng(n).standard_normal((n, plan["input"]["size"])).astype(np.float32)
        t0 = time.perf_counter()
        b = edgernn.load(path).streams(n)
        ye = b.step(X)
        first = time.perf_counter() - t0
        fs = {"edgernn": b.step}
        if loops:
            old = os.environ.get("EDGERNN_BATCH_GEMM")
            os.environ["EDGERNN_BATCH_GEMM"] = "0"
            try:
                bl = edgernn.load(path).streams(n)
            finally:
                if old is None:
                    del os.environ["EDGERNN_BATCH_GEMM"]
                else:
                    os.environ["EDGERNN_BATCH_GEMM"] = old
            assert_agree(bl.step(X), ye, quant, f"loops n={n}")
            fs["loops"] = bl.step
        try:
            tb = TorchBaseline(plan, tensors)
            tb.reset(n)
            fs["torch"] = tb.streams_step
            assert_agree(fs["torch"](X), ye, quant, f"torch n={n}")
        except ImportError:
            pass
        try:
            ob = OrtStep(onnx_step_model(plan, tensors, batch=n))
            fs["ort"] = ob.step
            assert_agree(fs["ort"](X), ye, quant, f"ort n={n}")
        except ImportError:
            pass
        per = {k: _timer(f, X, 1) for k, f in fs.items()}  # warm-up; sizes the bursts to ~20 ms each
        reps = {k: max(1, int(0.02 / max(v, 1e-6))) for k, v in per.items()}
        res = {k: [] for k in fs}
        for _ in range(rounds):
            for k, f in fs.items():
                res[k].append(_timer(f, X, reps[k]) / n * 1e6)
        row = {"n": n, "first_s": first}
        for k, v in res.items():
            row[k] = (min(v), float(np.median(v)))
        out.append(row)
    return out


def main(argv: list[str] | None = None) -> int:
    """Entry point; prints one Markdown table; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", default="64,256,1024,4096", help="stream counts, comma-separated")
    ap.add_argument("--models", default="lstm_8x64,gru_8x64,lstm_8x256,esn_8x500", help="benchlib MODELS")
    ap.add_argument("--quant", default="fp32", help="fp32, int8 or both (fp32,int8)")
    ap.add_argument("--rounds", type=int, default=9)
    ap.add_argument("--loops", action="store_true", help="also the portable loops (EDGERNN_BATCH_GEMM=0)")
    ap.add_argument(
        "--cpu-time",
        action="store_true",
        help="time by this thread's CPU time (a machine shared with others)",
    )
    args = ap.parse_args(argv)
    global CLOCK
    if args.cpu_time:
        CLOCK = time.thread_time
    from edgernn import artifact
    from edgernn.bench import machine as _machine
    from edgernn.bench import quantize_int8, synthetic

    ns = [int(v) for v in args.n.split(",")]
    m = _machine()
    clock = "thread CPU time" if args.cpu_time else "wall clock"
    print(
        f"{m['cpu']}, load average {m['load_average']}; µs per stream-step ({clock}), "
        "min / median of the rounds"
    )
    print()
    print(
        "| model | weights | n | streams(n) | torch batched | ORT batched | torch / streams | ORT / streams "
        "| first step |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|")
    d = tempfile.mkdtemp(prefix="edgernn-sweep-")
    for name in args.models.split(","):
        cell, i, h, density = MODELS[name]
        plan, tensors = synthetic(cell, i, h, 1, density=density, seed=0)
        for q in args.quant.split(","):
            p, t = (plan, tensors) if q == "fp32" else quantize_int8(plan, tensors)
            path = os.path.join(d, f"{name}.{q}.ernn")
            artifact.write(path, p, t)
            p, t = artifact.read(path)
            for row in sweep(path, p, t, q, ns, args.rounds, args.loops):
                e = row["edgernn"]

                def cell_(k, row=row):
                    return f"{row[k][0]:.3g} / {row[k][1]:.3g}" if k in row else "–"

                def ratio(k, row=row, e=e):
                    return f"{row[k][0] / e[0]:.2f}×" if k in row else "–"

                print(
                    f"| {name} | {q} | {row['n']} | {cell_('edgernn')} | {cell_('torch')} | {cell_('ort')} "
                    f"| {ratio('torch')} | {ratio('ort')} | {row['first_s']:.2f} s |"
                    + (f" {cell_('loops')} | {ratio('loops')} |" if args.loops else ""),
                    flush=True,
                )
    return 0


if __name__ == "__main__":
    sys.exit(main())
