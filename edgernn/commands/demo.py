"""``edgernn demo``: the pipeline on a built-in default, with nothing to download.

With the ``export`` extra (torch, onnx, onnxruntime): trains a small LSTM (edgernn.train) to forecast a
noisy two-tone sensor signal one step ahead, exports it (ONNX, int8 ONNX, ``.ernn``, int8 ``.ernn``, with
the parity proof), streams held-out windows through the runtime sample by sample, prints the forecast
error of every backend, and benchmarks the artifact against ONNX Runtime and PyTorch.

On the core install (or with ``--core``): fits an echo state network (ridge readout, numpy only) to the
same task, writes it as ``.ernn``, streams the held-out signal and prints the error and the step latency.
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
    p.add_argument("--core", action="store_true", help="the numpy-only ESN demo even when torch is installed")
    p.add_argument("--epochs", type=int, default=8, help="LSTM training epochs (default 8)")


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
    import importlib.util

    have_export = all(importlib.util.find_spec(m) for m in ("torch", "onnx", "onnxruntime"))
    if have_export and not args.core:
        return _run_pipeline(args)
    return _run_core(args)


def _windows(sig: np.ndarray, w: int) -> tuple[np.ndarray, np.ndarray]:
    idx = np.arange(len(sig) - w)[:, None] + np.arange(w)
    return sig[idx][..., None].astype(np.float32), sig[w:, None].astype(np.float32)


def _run_pipeline(args: argparse.Namespace) -> int:
    """Train → export (+int8) → stream → benchmark, on the built-in signal."""
    import torch

    import edgernn
    from edgernn.bench import bench, format_table
    from edgernn.export import export
    from edgernn.models import SequenceModel
    from edgernn.train import fit

    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    sig = _signal(3000, rng)
    w = 32
    X, Y = _windows(sig[:2000], w)
    Xt, Yt = _windows(sig[2000:], w)
    out = args.out or tempfile.mkdtemp(prefix="edgernn-demo-")
    print(
        f"edgernn {edgernn.__version__} demo: train → export → quantize → stream → benchmark   (out: {out})"
    )
    m = SequenceModel(cell="lstm", input_size=1, hidden_size=32, output_size=1)
    t0 = time.perf_counter()
    hist = fit(
        m,
        X,
        Y,
        loss="mse",
        optimizer="adam",
        lr=5e-3,
        epochs=args.epochs,
        batch_size=64,
        validation_split=0.1,
        patience=3,
        progress=False,
    )
    print(
        f"1. trained  LSTM 1→32 + Dense on {len(X)} windows of {w}: {len(hist['loss'])} epochs in "
        f"{time.perf_counter() - t0:.1f} s, final val loss {hist['val_loss'][-1]:.2e}"
    )
    t0 = time.perf_counter()
    report = export(m, out, Xt[:4], quantize="int8", calibration=X)
    sizes = {f: os.path.getsize(os.path.join(out, f)) for f in sorted(os.listdir(out)) if "." in f}
    print(
        f"2. exported in {time.perf_counter() - t0:.1f} s: "
        + ", ".join(f"{f} ({n / 1024:.1f} KiB)" for f, n in sizes.items() if not f.endswith(".json"))
    )
    fp32 = report["fp32_vs_torch"]
    worst = max(v["max_abs"] for v in fp32.values())
    ratios = ", ".join(f"{f} {r:.2f}x" for f, r in report["size_ratio_int8_vs_fp32"].items())
    print(
        f"   parity proof: {len(fp32)} fp32 backends vs PyTorch, worst |Δ| {worst:.1e} (tolerance "
        f"1e-5 + 1e-4·|e|); int8 size vs fp32: {ratios}"
    )
    with torch.inference_mode():
        ref = m(torch.from_numpy(Xt)).numpy()[:, 0]
    rows = [("PyTorch", ref)]
    for name in ("model.ernn", "model.int8.ernn"):
        model = edgernn.load(os.path.join(out, name))
        s = model.stream()
        preds = np.empty(len(Xt), np.float32)
        for i, window in enumerate(Xt):  # one stream, reset per window, one step per sample
            s.reset()
            for x in window:
                y = s.step(x)
            preds[i] = y[0]
        rows.append((f"edgernn {name}", preds))
    naive = float(np.sqrt(np.mean((Xt[:, -1, 0] - Yt[:, 0]) ** 2)))
    print(f"3. streamed {len(Xt)} held-out windows sample by sample; one-step forecast RMSE:")
    for name, p in rows:
        rmse = float(np.sqrt(np.mean((p - Yt[:, 0]) ** 2)))
        diff = float(np.abs(p - ref).max())
        print(f"     {name:24s} {rmse:.4f}   (max |Δ| vs PyTorch {diff:.1e})")
    print(f"     {'repeat-last-value':24s} {naive:.4f}")
    print("4. benchmark (edgernn vs ONNX Runtime vs PyTorch, same weights, one thread):")
    res = bench(
        os.path.join(out, "model.ernn"),
        steps=min(args.steps, 3000),
        warmup=300,
        chunk=500,
        max_streams=64,
        separate=64,
        cold_runs=0,
        progress=False,
    )
    print(format_table(res))
    return 0


def _run_core(args: argparse.Namespace) -> int:
    """The numpy-only ESN demo."""
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
    edgernn.artifact.write(path, edgernn.artifact.upgrade(plan), tensors)  # format 2, as every writer
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
