"""``edgernn demo``: the pipeline on a built-in default, with nothing to download.

Fits an echo state network (ridge readout, closed form, numpy only) to forecast a noisy two-tone sensor
signal one step ahead, writes it as an ``.ernn`` artifact, loads it back like device code does, streams
the held-out signal through it sample by sample, and prints the forecast error and the step latency.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time

import numpy as np

HELP = "run the built-in demo: fit a small model, write .ernn, stream a signal, print error and latency"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn demo``."""
    p.add_argument("-o", "--out", help="directory for the artifact (default: a temporary directory)")
    p.add_argument("--reservoir", type=int, default=200, help="reservoir size (default 200)")
    p.add_argument("--steps", type=int, default=20000, help="timed step calls (default 20000)")


def _signal(n: int, rng: np.random.Generator) -> np.ndarray:
    t = np.arange(n) * 0.05
    return (np.sin(t) + 0.5 * np.sin(2.7 * t + 1.0) + 0.02 * rng.normal(size=n)).astype(np.float32)


def build_esn_forecaster(signal: np.ndarray, n: int, seed: int = 0, washout: int = 100):
    """Fit a leaky ESN + ridge readout predicting signal[t+1] from signal[..t]; returns (plan, tensors)."""
    from ..reservoir import esn_plan, fit_readout, reservoir_weights

    W_in, W, b = reservoir_weights(1, n, spectral_radius=0.9, input_scaling=0.5, density=0.1, seed=seed)
    plan, tensors = esn_plan(
        W_in,
        W,
        b,
        leak_rate=0.3,
        readout=np.zeros((1, n + 2), np.float32),
        readout_bias=np.zeros(1, np.float32),
        extended=True,
    )
    states = reservoir_states(plan, tensors, signal[:-1, None])  # [1; u; x] per step
    Wout, bout = fit_readout(states[washout:], signal[1 + washout :, None], ridge=1e-6)
    tensors[plan["layers"][-1]["tensors"]["W"]] = Wout
    tensors[plan["layers"][-1]["tensors"]["b"]] = bout
    return plan, tensors


def reservoir_states(plan: dict, tensors: dict, U: np.ndarray) -> np.ndarray:
    """The reservoir layer's outputs over U (T, I), computed by the runtime itself: (T, features)."""
    import edgernn

    head = {**plan, "layers": plan["layers"][:-1]}
    head["output"] = {**plan["output"], "size": plan["layers"][-1]["input_size"], "sequence": "many_to_many"}
    keep = {v for layer in head["layers"] for v in layer["tensors"].values()}
    return edgernn.Model(head, {k: v for k, v in tensors.items() if k in keep}).predict(U)


def run(args: argparse.Namespace) -> int:
    """Run the demo; prints a short report."""
    import edgernn

    rng = np.random.default_rng(0)
    sig = _signal(6000, rng)
    train, test = sig[:4000], sig[4000:]
    t0 = time.perf_counter()
    plan, tensors = build_esn_forecaster(train, args.reservoir)
    fit_s = time.perf_counter() - t0
    out = args.out or tempfile.mkdtemp(prefix="edgernn-demo-")
    os.makedirs(out, exist_ok=True)
    path = os.path.join(out, "demo_esn.ernn")
    edgernn.artifact.write(path, plan, tensors)
    t0 = time.perf_counter()
    model = edgernn.load(path)
    s = model.stream()
    s.step(test[:1])  # first call: kernels compiled or loaded from the cache
    load_s = time.perf_counter() - t0
    s.reset()
    preds = np.array([s.step(test[i : i + 1])[0] for i in range(len(test) - 1)])
    err = preds[100:] - test[101:]
    rmse = float(np.sqrt(np.mean(err**2)))
    naive = float(np.sqrt(np.mean((test[100:-1] - test[101:]) ** 2)))
    x = test[:1].copy()
    n = args.steps
    t0 = time.perf_counter()
    for _ in range(n):
        s.step(x)
    us = (time.perf_counter() - t0) / n * 1e6
    print(f"edgernn {edgernn.__version__} demo — backend: {model.backend}")
    print(f"  model      : ESN {args.reservoir} units (10% sparse) + ridge readout, fitted in {fit_s:.2f} s")
    print(f"  artifact   : {path} ({os.path.getsize(path) / 1024:.1f} KiB)")
    print(f"  load+first : {load_s:.2f} s")
    print(
        f"  forecast   : one step ahead on {len(err)} held-out samples, RMSE {rmse:.4f} "
        f"(repeat-last-value baseline {naive:.4f})"
    )
    print(
        "  first 5    : "
        + ", ".join(f"{p:+.3f}/{t:+.3f}" for p, t in zip(preds[100:105], test[101:106], strict=True))
        + "  (predicted/actual)"
    )
    print(f"  step       : {us:.2f} µs per sample from Python ({n} calls)")
    return 0
