"""Where the time of one step goes: this machine's single-core ceilings, measured with numba in this
process, against the achieved bandwidth and FLOP rate of edgernn's generated step and the C++ loop.

    python benchmarks/roofline.py              # LSTM 8->256 and ESN 8->500, fp32 and int8, 15 rounds
    python benchmarks/roofline.py -r 31 -m lstm_8x64
    python benchmarks/roofline.py --row-loops --load-option dynamic_int8=1   # before/after rows too

Ceilings (numba kernels, one thread): the read bandwidth of a streaming sum over a 1 MiB and a 256 KiB
float32 buffer (L2-resident here when the L2 holds them, like a model's weights between steps), and the
fp32 FMA rate of the generated step's own dot-product form (four rows per pass) on an L1-resident block.
Per model: µs per step of ``Stream.step``, of the jitted step kernel alone (no Python method around it)
and of the C++ loop (fp32 only, one call per 1,000 steps), each as the weight GB/s and GFLOP/s it achieves
(every weight read once per step, 2 FLOP per weight; int8 reads 1 byte per weight plus its row scales).
All rounds are interleaved so a loaded machine slows every column alike; medians of the rounds. Prints
Markdown tables and the ratios against the ceilings; asserts nothing about speed.
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

_FM = {"reassoc", "contract", "arcp", "nsz", "afn"}


def _ceiling_kernels():
    from numba import njit

    @njit(fastmath=_FM, nogil=True)
    def stream_sum(a, reps):
        t = np.float32(0.0)
        for _ in range(reps):
            s = np.float32(0.0)
            for k in range(a.shape[0]):
                s += a[k]
            t += s
        return t

    @njit(fastmath=_FM, nogil=True)
    def fma_l1(W, x, y, reps):
        # the generated step's dot-product form (four rows per pass, each x load feeding four FMAs) on an
        # L1-resident 16 x 256 block: the FMA rate numba's code reaches when loads are not the limit
        for _ in range(reps):
            for i in range(0, 16, 4):
                w0 = W[i * 256 : i * 256 + 256]
                w1 = W[i * 256 + 256 : i * 256 + 512]
                w2 = W[i * 256 + 512 : i * 256 + 768]
                w3 = W[i * 256 + 768 : i * 256 + 1024]
                a0 = a1 = a2 = a3 = np.float32(0.0)
                for k in range(256):
                    xv = x[k]
                    a0 += w0[k] * xv
                    a1 += w1[k] * xv
                    a2 += w2[k] * xv
                    a3 += w3[k] * xv
                y[i] += a0
                y[i + 1] += a1
                y[i + 2] += a2
                y[i + 3] += a3
        return y[0]

    return stream_sum, fma_l1


def _timed(fn, reps: int):
    def go() -> float:
        t0 = time.perf_counter()
        fn()
        return (time.perf_counter() - t0) / reps * 1e6

    return go


def ceilings() -> dict:
    """label -> (timer returning µs per unit, bytes per unit, flops per unit)."""
    stream_sum, fma_l1 = _ceiling_kernels()
    out = {}
    for kib in (1024, 256):
        a = np.random.default_rng(0).random(kib * 256).astype(np.float32)
        reps = 100
        out[f"stream sum {kib} KiB"] = (
            _timed(lambda a=a, r=reps: stream_sum(a, r), reps),
            kib * 1024.0,
            kib * 256.0,
        )
    W = np.random.default_rng(1).random(16 * 256).astype(np.float32)
    x, y = W[:256].copy(), np.zeros(16, np.float32)
    reps = 2000
    out["FMA, L1-resident 4-row dot products"] = (
        _timed(lambda: fma_l1(W, x, y, reps), reps),
        0.0,
        2.0 * W.size,
    )
    return out


def work(name: str, quant: str) -> tuple[float, float]:
    """(weight bytes read, FLOPs) of one step of benchmark model ``name`` (floor.py's count; int8: 1 byte
    per weight plus a float32 scale per row of the recurrent layer)."""
    from benchlib import MODELS
    from floor import work as fwork

    b, f = fwork(name)
    if quant == "int8":
        cell, i, h, _ = MODELS[name]
        rows = {"lstm": 4, "gru": 3, "rnn": 1, "esn": 1}[cell] * h
        b = b / 4 + 4.0 * rows
    return b, f


def model_timers(name: str, quant: str, X: np.ndarray, d: str, **load) -> dict:
    """label -> timer (µs per step) for one benchmark model."""
    from benchlib import MODELS

    import edgernn
    from edgernn import artifact
    from edgernn.bench import cpp as cppfloor
    from edgernn.bench import quantize_int8, synthetic

    cell, i, h, density = MODELS[name]
    plan, tensors = synthetic(cell, i, h, 1, density=density, seed=0)
    if quant == "int8":
        plan, tensors = quantize_int8(plan, tensors)
    path = os.path.join(d, f"{name}.{quant}.ernn")
    artifact.write(path, plan, tensors)
    rows_only = load.pop("row_loops", False)
    if rows_only:  # the step as before panels (kernels/simd.py): EDGERNN_PANELS=0 while it loads
        os.environ["EDGERNN_PANELS"] = "0"
    try:
        m = edgernn.load(path, **load)
    finally:
        os.environ.pop("EDGERNN_PANELS", None)
    s = m.stream()
    out = {}

    def step_loop():
        st = s.step
        for x in X:
            st(x)

    out["Stream.step"] = _timed(step_loop, len(X))
    p = m._packed  # the jitted step on its own buffers: what the kernel costs without the method around it
    kern = m._backend.step
    M = m._m0.copy()
    wf, wb = p.wf, p.wb

    def kernel_loop():
        for x in X:
            kern(x, wf, wb, M)

    out["step kernel"] = _timed(kernel_loop, len(X))
    if quant == "fp32":
        try:
            f = cppfloor.CppFloor.for_model(*artifact.read(path))
            Yc = np.empty((len(X), f.O), np.float32)
            out["C++ loop"] = _timed(lambda: f.run(X, Yc), len(X))
        except cppfloor.Unsupported as e:
            print(f"# {name}: no C++ loop ({e})", file=sys.stderr)
    return out


def rounds(timers: dict, n: int) -> dict:
    """label -> median µs over ``n`` interleaved rounds (after one warm-up round)."""
    for fn in timers.values():
        fn()
    got = {k: [] for k in timers}
    for _ in range(n):
        for k, fn in timers.items():
            got[k].append(fn())
    return {k: float(np.median(v)) for k, v in got.items()}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from benchlib import MODELS

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", choices=sorted(MODELS))
    ap.add_argument("-q", "--quant", action="append", choices=("fp32", "int8"))
    ap.add_argument("-r", "--rounds", type=int, default=15)
    ap.add_argument("--load-option", action="append", default=[], metavar="NAME=VALUE",
                    help="boolean load option for int8 rows (dynamic_int8=1)")  # fmt: skip
    ap.add_argument("--row-loops", action="store_true", help="also the step without panels (the before)")
    args = ap.parse_args(argv)
    X = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    d = tempfile.mkdtemp(prefix="edgernn-roofline-")
    ceil = ceilings()
    timers = {k: v[0] for k, v in ceil.items()}
    rows = []
    variants = [({}, "")]
    if args.row_loops:
        variants.append(({"row_loops": True}, " (row loops)"))
    if args.load_option:
        variants.append(
            (
                {k: v not in ("0", "false", "False") for k, v in (o.split("=", 1) for o in args.load_option)},
                " (" + ", ".join(args.load_option) + ")",
            )
        )
    for name in args.model or ("lstm_8x256", "esn_8x500"):
        for quant in args.quant or ("fp32", "int8"):
            for load, tag in variants:
                if tag.startswith(" (dyn") and quant != "int8":
                    continue  # the load options are int8 choices (dynamic_int8)
                if tag == " (row loops)" and quant != "fp32":
                    continue  # panels serve float32 products only
                for k, fn in model_timers(name, quant, X, d, **load).items():
                    if tag and k == "C++ loop":
                        continue
                    label = f"{name} {quant}{tag}: {k}"
                    timers[label] = fn
                    rows.append((label, *work(name, quant)))
    med = rounds(timers, args.rounds)
    print(
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"median of {args.rounds} interleaved rounds"
    )
    print()
    print("| ceiling | µs | GB/s | GFLOP/s |")
    print("|---|---:|---:|---:|")
    for k, (_, b, f) in ceil.items():
        us = med[k]
        print(f"| {k} | {us:.3g} | {b / us / 1e3:.0f} | {f / us / 1e3:.0f} |")
    bw = ceil_bw = max(ceil["stream sum 1024 KiB"][1] / med["stream sum 1024 KiB"] / 1e3, 1e-9)
    bw256 = ceil["stream sum 256 KiB"][1] / med["stream sum 256 KiB"] / 1e3
    k = "FMA, L1-resident 4-row dot products"
    fl = ceil[k][2] / med[k] / 1e3
    print()
    print("| model: timed | weights KB | µs/step | GB/s | GFLOP/s | of 1 MiB read BW | of 256 KiB read BW "
          "| of FMA peak | bandwidth floor µs |")  # fmt: skip
    print("|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for label, b, f in rows:
        us = med[label]
        gbs, gfl = b / us / 1e3, f / us / 1e3
        ref = bw256 if b <= 300e3 else ceil_bw
        print(f"| {label} | {b / 1e3:.0f} | {us:.3g} | {gbs:.0f} | {gfl:.1f} | {gbs / bw:.2f} "
              f"| {gbs / bw256:.2f} | {gfl / fl:.2f} | {b / ref / 1e3:.2f} |")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
