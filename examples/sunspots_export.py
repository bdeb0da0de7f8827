"""Sunspots, end to end: train a GRU and an ESN forecaster, export both (ONNX + int8 + .ernn), stream them.

Data: the yearly sunspot numbers 1700-2008 shipped with statsmodels (``pip install 'edgernn[examples]'``).
Task: predict next year's number from the years so far (many-to-many, one-step-ahead). The first 250
years train, the rest test. Run::

    python examples/sunspots_export.py [OUT_DIR]
"""

from __future__ import annotations

import json
import os
import sys

import numpy as np


def main(out_dir: str = "sunspots_out") -> int:
    import statsmodels.api as sm
    import torch
    from edgernn.export import export

    import edgernn
    from edgernn import models, train

    s = sm.datasets.sunspots.load_pandas().data["SUNACTIVITY"].to_numpy(np.float32)
    x, y = s[:-1, None], s[1:, None]
    split = 250
    mean, std = float(x[:split].mean()), float(x[:split].std())
    # training windows of 40 years; the targets are scaled like the inputs
    win = 40
    starts = range(0, split - win)
    Xw = np.stack([x[i : i + win] for i in starts])
    Yw = np.stack([(y[i : i + win] - mean) / std for i in starts])

    torch.manual_seed(0)
    gru = models.SequenceModel("gru", 1, 32, 1, many_to_many=True, input_mean=[mean], input_std=[std])
    hist = train.fit(gru, Xw, Yw, loss="mse", lr=0.01, epochs=60, batch_size=32, validation_split=0.2,
                     patience=10, clip_grad_norm=1.0, progress=False)  # fmt: skip
    esn = models.ESN(1, 200, 1, leak_rate=0.5, spectral_radius=0.9, input_scaling=1.0 / std, seed=0,
                     ridge=1e-3)  # fmt: skip
    esn.fit(x[None, :split], (y[None, :split] - mean) / std, washout=20)

    results = {}
    for name, model in (("gru", gru), ("esn", esn)):
        with torch.no_grad():
            pred = model(torch.from_numpy(x[None]))[0].numpy() * std + mean
        test_pred, test_true = pred[split:], y[split:]
        d = os.path.join(out_dir, name)
        report = export(model, d, x[None, :60], quantize="int8", calibration=x[None, :split])
        # stream the test years through the edgernn runtime, one sample per step
        stream = edgernn.load(os.path.join(d, "model.ernn")).stream()
        streamed = np.stack([stream.step(v) for v in x])[split:] * std + mean
        results[name] = {
            "test_rmse": train.rmse(test_true, test_pred),
            "test_mae": train.mae(test_true, test_pred),
            "test_r2": train.r2(test_true, test_pred),
            "streamed_vs_torch_max_abs": float(np.abs(streamed - test_pred).max()),
            "int8_onnx_size_ratio": report["size_ratio_int8_vs_fp32"].get("model.int8.onnx"),
            "fp32_max_abs_vs_torch": max(c["max_abs"] for c in report["fp32_vs_torch"].values()),
        }
    results["gru"]["epochs"] = hist["epochs"]
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:2]))
