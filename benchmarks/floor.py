"""Side by side in one process: edgernn ``Stream.step`` and ``Stream.run`` against the plain C++ loop
(``edgernn/bench/floor.cpp``), ONNX Runtime (step graph; sequence graph for run) and torch (cell per step;
fused ``nn.LSTM``/``nn.GRU`` for run), on the benchmark models, fp32. Rounds of every backend are
interleaved so a loaded machine slows all of them alike; the ratios are the figures to read.

    python benchmarks/floor.py                 # all models, 15 rounds of 1,000 steps
    python benchmarks/floor.py -m lstm_8x64 -r 31
    python benchmarks/floor.py --streams 1024  # also streams(n).step per stream vs torch/ORT batched

Prints a Markdown table (µs per step, median of the rounds) and edgernn's ratio against each reference.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _timer(fn, steps: int):
    def go() -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) / steps * 1e6

    return go


def backends(name: str, path: str, plan: dict, tensors: dict, X: np.ndarray, streams: int) -> dict:
    """label -> a function timing one round (µs per step); references missing here are left out."""
    import edgernn
    from edgernn.bench import cpp as cppfloor

    m = edgernn.load(path)
    s = m.stream()
    out = {}

    def step_loop():
        st = s.step
        for x in X:
            st(x)

    out["edgernn step"] = _timer(step_loop, len(X))
    s2 = m.stream()
    out["edgernn run"] = _timer(lambda: s2.run(X), len(X))
    try:
        f = cppfloor.CppFloor.for_model(plan, tensors)
        Yc = np.empty((len(X), f.O), np.float32)
        out["C++ loop"] = _timer(lambda: f.run(X, Yc), len(X))
    except cppfloor.Unsupported as e:
        print(f"# {name}: no C++ loop ({e})", file=sys.stderr)
    try:
        from edgernn.export.baselines import OrtStep, TorchBaseline, onnx_step_model

        o = OrtStep(onnx_step_model(plan, tensors))

        def ort_loop():
            for x in X:
                o.step(x)

        out["ORT step"] = _timer(ort_loop, len(X))
        if not name.startswith("esn"):
            osq = OrtStep(onnx_step_model(plan, tensors, seq_len=len(X)))
            out["ORT seq"] = _timer(lambda: osq.step(X), len(X))
        tb = TorchBaseline(plan, tensors)
        tb.reset(1)

        def torch_loop():
            for x in X:
                tb.step(x)

        out["torch step"] = _timer(torch_loop, len(X))
        tr = TorchBaseline(plan, tensors)
        tr.reset(1)
        out["torch run"] = _timer(lambda: tr.run(X), len(X))
        if streams:
            Xn = np.random.default_rng(1).standard_normal((streams, X.shape[1])).astype(np.float32)
            b = m.streams(streams)
            out[f"edgernn streams({streams})"] = _timer(lambda: b.step(Xn), streams)
            tbn = TorchBaseline(plan, tensors)
            tbn.reset(streams)
            out["torch batched"] = _timer(lambda: tbn.streams_step(Xn), streams)
            obn = OrtStep(onnx_step_model(plan, tensors, batch=streams))
            out["ORT batched"] = _timer(lambda: obn.step(Xn), streams)
    except ImportError as e:
        print(f"# no ORT/torch references ({e})", file=sys.stderr)
    return out


def work(name: str) -> tuple[float, float]:
    """(weight bytes read, floating-point operations) of one fp32 step of benchmark model ``name``: every
    weight once (a multiply and an add each), the Dense head included; activations not counted."""
    from benchlib import MODELS

    cell, i, h, density = MODELS[name]
    if cell == "esn":
        n = i * h + h * h * (density if density < 0.05 else 1.0) + h  # reservoirs ≥ 5% are packed dense
    else:
        n = {"lstm": 4, "gru": 3, "rnn": 1}[cell] * h * (i + h) + h
    return 4.0 * n, 2.0 * n


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from benchlib import MODELS

    from edgernn import artifact
    from edgernn.bench import synthetic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", choices=sorted(MODELS))
    ap.add_argument("-r", "--rounds", type=int, default=15)
    ap.add_argument("--streams", type=int, default=0, help="also time streams(n).step (per stream)")
    ap.add_argument(
        "--stat", choices=("median", "min"), default="median", help="min is steadier on a loaded machine"
    )
    args = ap.parse_args(argv)
    X = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    d = tempfile.mkdtemp(prefix="edgernn-floor-")
    rows = []
    for name in args.model or MODELS:
        cell, i, h, density = MODELS[name]
        plan, tensors = synthetic(cell, i, h, 1, density=density, seed=0)
        path = os.path.join(d, f"{name}.ernn")
        artifact.write(path, plan, tensors)
        plan, tensors = artifact.read(path)
        bs = backends(name, path, plan, tensors, X, args.streams)
        for fn in bs.values():  # warm up (compiles, first-call costs)
            fn()
        times = {k: [] for k in bs}
        for _ in range(args.rounds):
            for k, fn in bs.items():
                times[k].append(fn())
        stat = np.median if args.stat == "median" else np.min
        rows.append((name, {k: float(stat(v)) for k, v in times.items()}))
    cols = sorted({k for _, r in rows for k in r}, key=lambda k: (not k.startswith("edgernn"), k))
    print(f"load average {os.getloadavg()[0]:.2f}; µs per step (per stream for streams), {args.stat} of "
          f"{args.rounds} interleaved rounds")  # fmt: skip
    print("| model | " + " | ".join(cols) + " | step / C++ | run / C++ | run / ORT seq | run / torch run |")
    print("|---|" + "---:|" * (len(cols) + 4))
    for name, r in rows:

        def ratio(a, b, r=r):
            return f"{r[a] / r[b]:.2f}" if a in r and b in r else "–"

        cells = " | ".join(f"{r[k]:.3g}" if k in r else "–" for k in cols)
        print(
            f"| {name} | {cells} | {ratio('edgernn step', 'C++ loop')} | {ratio('edgernn run', 'C++ loop')} "
            f"| {ratio('edgernn run', 'ORT seq')} | {ratio('edgernn run', 'torch run')} |"
        )
    print()
    print("roofline: achieved GB/s of weights read and GFLOP/s (2 per weight) per backend")
    print("| model | weights KB | " + " | ".join(cols) + " |")
    print("|---|---:|" + "---:|" * len(cols))
    for name, r in rows:
        b, f = work(name)
        cells = " | ".join(f"{b / r[k] / 1e3:.0f} / {f / r[k] / 1e3:.1f}" if k in r else "–" for k in cols)
        print(f"| {name} | {b / 1e3:.0f} | {cells} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
