"""``Stream.step`` and ``Stream.run`` of the sparse ESN 8->500 + Dense at several densities, each packed
every way the runtime can (in one process, rounds interleaved): SELL-8 (the default below
``esn.DENSIFY_MIN_DENSITY``), dense (what >= 5 % packed as before), CSR (what < 5 % packed as before);
beside them the dense ESN 500 and its C++ loop (the C++ loop has no sparse reservoir).

    python benchmarks/sparse_esn_step.py               # 1, 2, 5, 10, 20 %; fp32 and int8; 15 rounds
    python benchmarks/sparse_esn_step.py -d 0.1 -q fp32 -r 31 --hoist

``--hoist``: also ``run`` with the input projection W_in·u hoisted out of the time loop
(``kernels.codegen.HOIST``) for the SELL-8 model. Prints µs per step (the minimum of the rounds; the median
with ``--median``) and ratios; asserts nothing about speed.
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


def _load(path: str, how: str):
    """The model at ``path`` with its sparse reservoir packed ``how`` (sell | dense | csr)."""
    from edgernn.kernels.ops import esn

    import edgernn

    saved = esn.DENSIFY_MIN_DENSITY, esn.SELL
    esn.DENSIFY_MIN_DENSITY = {"dense": 0.0, "sell": saved[0], "csr": 2.0}[how]
    esn.SELL = how != "csr"
    try:
        return edgernn.load(path)
    finally:
        esn.DENSIFY_MIN_DENSITY, esn.SELL = saved


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from edgernn.kernels import codegen

    from edgernn import artifact
    from edgernn.bench import cpp as cppfloor
    from edgernn.bench import quantize_int8, synthetic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-d", "--density", type=float, action="append")
    ap.add_argument("-q", "--quant", action="append", choices=("fp32", "int8"))
    ap.add_argument("-r", "--rounds", type=int, default=15)
    ap.add_argument("--median", action="store_true")
    ap.add_argument("--hoist", action="store_true", help="also run() with the hoisted input projection")
    args = ap.parse_args(argv)
    dens = args.density or [0.01, 0.02, 0.05, 0.10, 0.20]
    X = np.random.default_rng(0).standard_normal((1000, 8)).astype(np.float32)
    d = tempfile.mkdtemp(prefix="edgernn-sparse-esn-")
    timers: dict[str, object] = {}

    def add(label, fn):
        def go() -> float:
            t0 = time.perf_counter()
            fn()
            return (time.perf_counter() - t0) / len(X) * 1e6

        timers[label] = go

    def step_loop(s):
        def f():
            st = s.step
            for x in X:
                st(x)

        return f

    quants = args.quant or ["fp32", "int8"]
    for q in quants:
        plan, tensors = synthetic("esn", 8, 500, 1, density=1.0, seed=0)
        if q == "int8":
            plan, tensors = quantize_int8(plan, tensors)
        p = os.path.join(d, f"dense.{q}.ernn")
        artifact.write(p, plan, tensors)
        add(f"{q} dense ESN 500: step", step_loop(_load(p, "sell").stream()))
        if q == "fp32":
            f = cppfloor.CppFloor.for_model(plan, tensors)
            Yc = np.empty((len(X), f.O), np.float32)
            add(f"{q} dense ESN 500: C++ loop", lambda f=f, Yc=Yc: f.run(X, Yc))
    for dn in dens:
        for q in quants:
            plan, tensors = synthetic("esn", 8, 500, 1, density=dn, seed=0)
            if q == "int8":
                plan, tensors = quantize_int8(plan, tensors)
            p = os.path.join(d, f"esn{dn}.{q}.ernn")
            artifact.write(p, plan, tensors)
            ref = None
            for how in ("sell", "dense", "csr"):
                m = _load(p, how)
                Y = m.stream().run(X[:50])
                ref = Y if ref is None else ref
                np.testing.assert_allclose(Y, ref, rtol=1e-4, atol=1e-5)  # every packing, the same outputs
                add(f"{dn:.0%} {q} {how}: step", step_loop(m.stream()))
                if how == "sell":
                    s2 = m.stream()
                    add(f"{dn:.0%} {q} {how}: run", lambda s2=s2: s2.run(X))
            if args.hoist:
                codegen.HOIST = True
                try:
                    m = _load(p, "sell")
                    np.testing.assert_allclose(m.stream().run(X[:50]), ref, rtol=1e-4, atol=1e-5)
                    s3 = m.stream()
                    add(f"{dn:.0%} {q} sell: run, hoisted W_in·u", lambda s3=s3: s3.run(X))
                finally:
                    codegen.HOIST = False
    for fn in timers.values():
        fn()
    got = {k: [] for k in timers}
    for _ in range(args.rounds):
        for k, fn in timers.items():
            got[k].append(fn())
    stat = np.median if args.median else np.min
    us = {k: float(stat(v)) for k, v in got.items()}
    print(
        f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; "
        f"{'median' if args.median else 'minimum'} of {args.rounds} interleaved rounds of 1,000 steps"
    )
    print()
    print("| timed | µs/step | vs SELL-8 step |")
    print("|---|---:|---:|")
    for k, v in us.items():
        base = us.get(k.split(" ")[0] + " " + k.split(" ")[1] + " sell: step")
        print(f"| {k} | {v:.2f} | {'' if base is None else f'{v / base:.2f}x'} |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
