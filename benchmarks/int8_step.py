"""int8 against float32 steps, in one process: µs per ``Stream.step`` of each variant and its speed-up
over the float32 model, interleaved rounds, plus each variant's error against float32 on noisy sines.

    python benchmarks/int8_step.py                 # lstm/gru 8->256, esn 500; 21 rounds of 1000 steps
    python benchmarks/int8_step.py -m lstm_8x256 -r 31

Each variant is timed as ``Stream.step`` (a Python call per step) and as ``Stream.run`` over the 1,000
steps (the same step kernel in one jitted loop). Variants (the same synthetic model, seed 0):

* ``fp32``: the float32 artifact (panel GEMV, ``kernels/simd.py``);
* ``int8 w-only``: the int8 artifact, default load (weights widened to float32 in the step);
* ``int8 dyn loop``: ``load(..., dynamic_int8=True)`` with the portable integer loop
  (``EDGERNN_INT8_PANELS=0``: what a CPU without AVX2 or VNNI runs);
* ``int8 dyn``: ``load(..., dynamic_int8=True)`` as chosen for this CPU (VNNI, else AVX2 int8 panels).

And the recurrent product alone (1024×256, LSTM 8->256's R): the float32 panel against the AVX2 int8
panel (``vnni.dot4_s8_panel``), where AVX2 is there. The error columns: max |y − y_fp32| over 2,000 steps
of noisy sines (8 channels), and that over max |y_fp32|. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time

import numpy as np

MODELS = {"lstm_8x256": ("lstm", 8, 256), "gru_8x256": ("gru", 8, 256), "esn_8x500": ("esn", 8, 500)}


def sines(n: int = 2000, i: int = 8, seed: int = 0) -> np.ndarray:
    """(n, i) float32: sines of different frequencies and phases plus 0.1 Gaussian noise."""
    rng = np.random.default_rng(seed)
    t = np.arange(n)[:, None]
    f = rng.uniform(0.005, 0.05, i)[None, :]
    ph = rng.uniform(0, 2 * np.pi, i)[None, :]
    return (np.sin(2 * np.pi * f * t + ph) + 0.1 * rng.standard_normal((n, i))).astype(np.float32)


def variants(name: str, d: str) -> dict:
    """label -> loaded edgernn Model for one benchmark model."""
    import edgernn
    from edgernn import artifact
    from edgernn.bench import quantize_int8, synthetic

    cell, i, h = MODELS[name]
    plan, tensors = synthetic(cell, i, h, 1, seed=0)
    qplan, qt = quantize_int8(plan, tensors)
    p32, p8 = os.path.join(d, f"{name}.ernn"), os.path.join(d, f"{name}.int8.ernn")
    artifact.write(p32, plan, tensors)
    artifact.write(p8, qplan, qt)
    out = {"fp32": edgernn.load(p32), "int8 w-only": edgernn.load(p8)}
    os.environ["EDGERNN_INT8_PANELS"] = "0"
    try:
        out["int8 dyn loop"] = edgernn.load(p8, dynamic_int8=True)
    finally:
        os.environ.pop("EDGERNN_INT8_PANELS", None)
    out["int8 dyn"] = edgernn.load(p8, dynamic_int8=True)
    return out


def _step_timer(model, X: np.ndarray):
    s = model.stream()

    def go() -> float:
        st = s.step
        t0 = time.perf_counter()
        for x in X:
            st(x)
        return (time.perf_counter() - t0) / len(X) * 1e6

    return go


def _run_timer(model, X: np.ndarray):
    """µs per step of ``Stream.run(X)``: the same step kernel in one jitted loop, no Python between steps."""
    s = model.stream()

    def go() -> float:
        t0 = time.perf_counter()
        s.run(X)
        return (time.perf_counter() - t0) / len(X) * 1e6

    return go


def gemv_timers() -> dict:
    """label -> timer (µs per product) of the 1024×256 recurrent product alone, float32 and int8 panels."""
    from edgernn.kernels import simd, vnni
    from numba import njit

    if not (simd.have_simd() and vnni.have_avx2()):
        return {}
    rows, n, reps = 1024, 256, 50
    rng = np.random.default_rng(0)
    P = simd.panelize(rng.standard_normal((rows, n)).astype(np.float32))
    x = rng.standard_normal(n).astype(np.float32)
    Q = vnni.panelize_i8(rng.integers(-127, 128, (rows, n)).astype(np.int8))
    q = rng.integers(-127, 128, n).astype(np.int8)
    y, yi = np.zeros(rows, np.float32), np.zeros(rows, np.int32)

    @njit(fastmath=True)
    def f32(P, x, y, reps):
        for _ in range(reps):
            for i in range(0, rows, 4):
                y[i], y[i + 1], y[i + 2], y[i + 3] = simd.dot4_panel(P, i * n, x, 0, n)
        return y[0]

    @njit
    def i8(Q, q, y, reps):
        for _ in range(reps):
            for i in range(0, rows, 4):
                y[i], y[i + 1], y[i + 2], y[i + 3] = vnni.dot4_s8_panel(Q, i * n, q, n)
        return y[0]

    def timer(fn, *a):
        def go() -> float:
            t0 = time.perf_counter()
            fn(*a, reps)
            return (time.perf_counter() - t0) / reps * 1e6

        return go

    return {"R·h 1024x256 fp32 panel": timer(f32, P, x, y), "R·h 1024x256 int8 panel": timer(i8, Q, q, yi)}


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-m", "--model", action="append", choices=sorted(MODELS))
    ap.add_argument("-r", "--rounds", type=int, default=21)
    args = ap.parse_args(argv)
    from edgernn.kernels import vnni

    d = tempfile.mkdtemp(prefix="edgernn-int8-")
    X = np.random.default_rng(1).standard_normal((1000, 8)).astype(np.float32)
    S = sines()
    names = args.model or list(MODELS)
    timers, errs, srcs = {}, {}, {}
    for name in names:
        ms = variants(name, d)
        ref = ms["fp32"].stream().run(S)
        for k, m in ms.items():
            timers[(name, k)] = _step_timer(m, X)
            timers[(name, k, "run")] = _run_timer(m, X)
            s = m.stream()
            y = np.stack([np.array(s.step(x)) for x in S])
            errs[(name, k)] = float(np.abs(y - ref).max()), float(np.abs(ref).max())
            src = m.kernel_source or ""
            srcs[(name, k)] = "vnni" if "dot4_u8s8(" in src else "avx2" if "dot4_s8_panel(" in src else "loop"
    g = gemv_timers()
    for k, fn in g.items():
        timers[(k, "")] = fn
    for fn in timers.values():
        fn()
    got = {k: [] for k in timers}
    for _ in range(args.rounds):
        for k, fn in timers.items():
            got[k].append(fn())
    print(
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {args.rounds} interleaved rounds "
        f"of 1000 steps; vnni={vnni.have_vnni()} avx2={vnni.have_avx2()}"
    )
    print()
    print(
        "| model | variant | step µs min | median | fp32 / variant (min) | (median) "
        "| run µs/step min | fp32 / variant (min) | max err | rel err |"
    )
    print("|---|---|---:|---:|---:|---:|---:|---:|---:|---:|")
    for name in names:
        b, br = got[(name, "fp32")], got[(name, "fp32", "run")]
        for k in ("fp32", "int8 w-only", "int8 dyn loop", "int8 dyn"):
            v, vr = got[(name, k)], got[(name, k, "run")]
            e, scale = errs[(name, k)]
            tag = f" ({srcs[(name, k)]})" if k.startswith("int8 dyn") else ""
            print(
                f"| {name} | {k}{tag} | {min(v):.1f} | {np.median(v):.1f} | {min(b) / min(v):.2f} "
                f"| {np.median(b) / np.median(v):.2f} | {min(vr):.1f} | {min(br) / min(vr):.2f} "
                f"| {e:.2e} | {e / scale:.2e} |"
            )
    if g:
        print()
        a, b = (got[(k, "")] for k in g)
        print(f"recurrent product alone: fp32 panel {min(a):.1f} µs, int8 panel {min(b):.1f} µs "
              f"(x{min(a) / min(b):.2f} min, x{np.median(a) / np.median(b):.2f} median)")  # fmt: skip
    return 0


if __name__ == "__main__":
    sys.exit(main())
