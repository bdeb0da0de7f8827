"""Sine forecast, end to end: train an LSTM, export (ONNX + int8 + .ernn), stream it sample by sample.

The classic exercise: 1,000 points of sin(t) for t in [0, 100]; from a window of 50 samples predict the
next one. An LSTM with 50 units + Dense(1), Adam, MSE, up to 50 epochs with early stopping, trained with
``edgernn.train.fit``; exported with ``edgernn.export.export(..., quantize="int8")``; then every test window
is streamed one sample at a time through ``edgernn.load(...).stream()`` (fp32 and int8 artifacts). Prints
the test RMSE of PyTorch, ONNX Runtime, edgernn fp32 and edgernn int8, and saves a PNG of actual vs
predicted. Needs the ``export`` and ``examples`` extras::

    python examples/sine_forecast.py [-o OUT_DIR] [--quick]

``--quick`` (for CI): a smaller LSTM and a few epochs.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

WINDOW = 50


def make_data(n: int = 1000, window: int = WINDOW) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Return ``t`` (n,), windows ``X`` (n - window, window, 1) and next values ``Y`` (n - window, 1)."""
    t = np.linspace(0.0, 100.0, n)
    s = np.sin(t).astype(np.float32)
    X = np.stack([s[i : i + window] for i in range(n - window)])[:, :, None]
    Y = s[window:, None]
    return t, X, Y


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="sine_out", help="output directory")
    ap.add_argument("--quick", action="store_true", help="small model, few epochs (CI)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import onnxruntime as ort
    import torch
    from edgernn.export import export

    import edgernn
    from edgernn import models, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    t, X, Y = make_data()
    split = int(0.8 * len(X))  # chronological: the last 20% of the windows are the test set
    Xtr, Ytr, Xte, Yte = X[:split], Y[:split], X[split:], Y[split:]
    hidden, epochs = (16, 6) if args.quick else (50, 50)

    model = models.SequenceModel("lstm", 1, hidden, 1)
    t0 = time.perf_counter()
    hist = train.fit(model, Xtr, Ytr, loss="mse", lr=0.01 if args.quick else 0.005, epochs=epochs,
                     batch_size=32, validation_split=0.2, patience=5, progress=False)  # fmt: skip
    train_s = time.perf_counter() - t0

    with torch.no_grad():
        pred_torch = model(torch.from_numpy(Xte)).numpy()
    report = export(model, args.out, Xtr[:4], quantize="int8", calibration=Xtr)

    sess = ort.InferenceSession(os.path.join(args.out, "model.onnx"), providers=["CPUExecutionProvider"])
    pred_ort = sess.run(None, {sess.get_inputs()[0].name: Xte})[0].reshape(-1, 1)

    def stream_windows(artifact: str) -> tuple[np.ndarray, float]:
        """Each test window streamed sample by sample from a reset state; the last step is the forecast."""
        stream = edgernn.load(os.path.join(args.out, artifact)).stream()
        out = np.empty_like(Yte)
        n_steps, t0 = 0, time.perf_counter()
        for i, w in enumerate(Xte):
            stream.reset()
            for x in w:
                y = stream.step(x)
            out[i] = y
            n_steps += len(w)
        return out, (time.perf_counter() - t0) / n_steps * 1e6

    pred_fp32, us_fp32 = stream_windows("model.ernn")
    pred_int8, us_int8 = stream_windows("model.int8.ernn")

    naive_zero = np.zeros_like(Yte)  # the mean of a sine: RMSE = its RMS ≈ 0.707
    persistence = Xte[:, -1, :]  # "next = last": the naive one-step baseline
    results = {
        "mode": "quick" if args.quick else "full",
        "hidden": hidden,
        "epochs_run": hist["epochs"],
        "best_epoch": hist["best_epoch"],
        "train_seconds": round(train_s, 1),
        "test_windows": len(Xte),
        "rmse": {
            "pytorch": train.rmse(Yte, pred_torch),
            "onnxruntime": train.rmse(Yte, pred_ort),
            "edgernn_fp32": train.rmse(Yte, pred_fp32),
            "edgernn_int8": train.rmse(Yte, pred_int8),
            "baseline_zero": train.rmse(Yte, naive_zero),
            "baseline_persistence": train.rmse(Yte, persistence),
        },
        "max_abs_vs_pytorch": {
            "onnxruntime": float(np.abs(pred_ort - pred_torch).max()),
            "edgernn_fp32": float(np.abs(pred_fp32 - pred_torch).max()),
            "edgernn_int8": float(np.abs(pred_int8 - pred_torch).max()),
        },
        "step_us_python_loop": {"edgernn_fp32": round(us_fp32, 2), "edgernn_int8": round(us_int8, 2)},
        "files_bytes": report["files"],
    }

    fig, (ax, ax2) = plt.subplots(2, 1, figsize=(10, 6), sharex=True)
    tt = t[WINDOW:][split:]
    ax.plot(tt, Yte[:, 0], "k-", lw=2, label="actual")
    ax.plot(tt, pred_torch[:, 0], "--", label="PyTorch")
    ax.plot(tt, pred_fp32[:, 0], ":", label="edgernn fp32 (streamed)")
    ax.plot(tt, pred_int8[:, 0], "-.", label="edgernn int8 (streamed)")
    ax.set_ylabel("sin(t)")
    rmse8 = results["rmse"]["edgernn_int8"]
    ax.set_title(f"Sine forecast, test windows: LSTM {hidden} units, edgernn int8 RMSE {rmse8:.4f}")
    ax.legend(loc="upper right")
    # the curves overlap at this scale: the errors show the differences
    ax2.plot(tt, pred_torch[:, 0] - Yte[:, 0], "--", label="PyTorch")
    ax2.plot(tt, pred_ort[:, 0] - Yte[:, 0], "-", lw=0.8, label="ONNX Runtime")
    ax2.plot(tt, pred_fp32[:, 0] - Yte[:, 0], ":", label="edgernn fp32")
    ax2.plot(tt, pred_int8[:, 0] - Yte[:, 0], "-.", label="edgernn int8")
    ax2.axhline(0, color="gray", lw=0.5)
    ax2.set_xlabel("t")
    ax2.set_ylabel("predicted - actual")
    ax2.legend(loc="upper right", fontsize=8)
    fig.tight_layout()
    png = os.path.join(args.out, "sine_forecast.png")
    fig.savefig(png, dpi=100)
    results["plot"] = png
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
