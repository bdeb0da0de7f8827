"""Sunspots with an echo state network vs an LSTM: one-step and free-running multi-step forecasts.

Data: the yearly sunspot numbers 1700-2008 shipped with statsmodels (the ``examples`` extra). The first
250 years train, the remaining 59 test. Both models read this year's (standardized) number and predict
next year's, many-to-many:

* ESN (``edgernn.models.ESN``): a fixed random leaky reservoir, readout fitted by ridge regression in
  closed form (no backprop);
* LSTM (``edgernn.models.SequenceModel``) trained with ``edgernn.train.fit`` on 40-year windows.

Both are exported (``edgernn.export.export``) and then run by the edgernn runtime: the one-step forecast
streams the true series; the free-running forecast starts from each test year, snapshots the stream's
state, feeds its own predictions back for ``H`` years and restores the state. Prints RMSE (sunspot
units) per horizon next to the naive baselines (persistence, training mean), and saves a plot. Run::

    python examples/esn_forecast.py [-o OUT_DIR] [--quick]
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time

import numpy as np

SPLIT = 250
HORIZON = 11  # one solar cycle


def load_sunspots() -> tuple[np.ndarray, np.ndarray]:
    """Return (years (309,), yearly sunspot numbers (309,) float32) from statsmodels' bundled data."""
    import statsmodels.api as sm

    df = sm.datasets.sunspots.load_pandas().data
    return df["YEAR"].to_numpy(int), df["SUNACTIVITY"].to_numpy(np.float32)


def forecasts(stream, z: np.ndarray, split: int, horizon: int) -> tuple[np.ndarray, np.ndarray]:
    """Run a many-to-many one-step model over standardized ``z`` (T,) with an edgernn stream.

    Returns ``one_step`` (T - 1,): prediction of z[t + 1] from z[:t + 1], and ``free`` (n_origins, horizon):
    from each origin o in [split, T - horizon], the model is fed z[:o] (true values), then its own
    predictions: ``free[k, h]`` forecasts z[o + h] (h = 0 is one step ahead of the last true value z[o - 1]).
    """
    stream.reset()
    one_step = np.empty(len(z) - 1, np.float32)
    n_origins = len(z) - horizon + 1 - split
    free = np.empty((n_origins, horizon), np.float32)
    for t in range(len(z) - 1):
        k = t - (split - 1)  # origin split + k: z[:t + 1] is known, forecast z[t + 1 :]
        if 0 <= k < n_origins:
            snap = stream.state
            pred = float(stream.step(z[t : t + 1])[0])
            free[k, 0] = pred
            for h in range(1, horizon):  # feed the forecast back as the next input
                pred = float(stream.step(np.array([pred], np.float32))[0])
                free[k, h] = pred
            stream.state = snap  # back to the true history
        one_step[t] = stream.step(z[t : t + 1])[0]
    return one_step, free


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="esn_out", help="output directory")
    ap.add_argument("--quick", action="store_true", help="smaller models, fewer epochs (CI)")
    args = ap.parse_args(argv)

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import torch
    from edgernn.export import export

    import edgernn
    from edgernn import models, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    years, s = load_sunspots()
    mean, std = float(s[:SPLIT].mean()), float(s[:SPLIT].std())
    z = ((s - mean) / std).astype(np.float32)
    x, y = z[:-1, None], z[1:, None]  # input this year, target next year
    reservoir = 300  # the ridge fit is cheap: the same reservoir in both modes
    hidden, epochs = (16, 30) if args.quick else (32, 150)

    def make_esn(ridge: float, leak: float) -> models.ESN:
        return models.ESN(1, reservoir, 1, leak_rate=leak, spectral_radius=0.9, input_scaling=0.5, seed=0,
                          ridge=ridge, readout_input="extended", bias_scaling=0.2)  # fmt: skip

    # choose ridge and leak rate on a validation block inside the training years (the last 50 of them),
    # then refit the readout on all training years; the test years are never looked at
    t0 = time.perf_counter()
    val = SPLIT - 50
    scores = {}
    for ridge in (1e-2, 1e-1, 1.0):
        for leak in (0.5, 1.0):
            cand = make_esn(ridge, leak).fit(x[None, : val - 1], y[None, : val - 1], washout=20)
            with torch.no_grad():
                p = cand(torch.from_numpy(x[None, : SPLIT - 1]))[0, :, 0].numpy()
            scores[(ridge, leak)] = float(np.sqrt(((p[val - 1 :] - y[val - 1 : SPLIT - 1, 0]) ** 2).mean()))
    ridge, leak = min(scores, key=scores.get)
    esn = make_esn(ridge, leak).fit(x[None, : SPLIT - 1], y[None, : SPLIT - 1], washout=20)
    esn_s = time.perf_counter() - t0

    win = 40
    starts = range(0, SPLIT - 1 - win)
    Xw = np.stack([x[i : i + win] for i in starts])
    Yw = np.stack([y[i : i + win] for i in starts])
    torch.manual_seed(0)  # the ESN readouts above drew from torch's generator too
    lstm = models.SequenceModel("lstm", 1, hidden, 1, many_to_many=True)
    t0 = time.perf_counter()
    hist = train.fit(lstm, Xw, Yw, loss="mse", lr=0.01, epochs=epochs, batch_size=32, validation_split=0.2,
                     patience=15, clip_grad_norm=1.0, progress=False)  # fmt: skip
    lstm_s = time.perf_counter() - t0

    truth_next = s[1:]  # one_step[t] forecasts s[t + 1]
    test = slice(SPLIT - 1, None)  # the one-step forecasts of years SPLIT .. end
    n_orig = len(s) - HORIZON + 1 - SPLIT
    truth_free = np.stack([s[o : o + HORIZON] for o in range(SPLIT, SPLIT + n_orig)])
    results: dict = {
        "mode": "quick" if args.quick else "full",
        "data": f"yearly sunspots {years[0]}-{years[-1]}, train {years[0]}-{years[SPLIT - 1]}, "
        f"test {years[SPLIT]}-{years[-1]} ({len(s) - SPLIT} years)",
        "esn": {
            "reservoir": reservoir,
            "ridge": ridge,
            "leak_rate": leak,
            "select_and_fit_seconds": round(esn_s, 2),
        },
        "lstm": {"hidden": hidden, "epochs_run": hist["epochs"], "train_seconds": round(lstm_s, 1)},
    }
    curves = {}
    for name, model in (("esn", esn), ("lstm", lstm)):
        d = os.path.join(args.out, name)
        export(model, d, x[None, :60], quantize="int8", calibration=x[None, :SPLIT])
        with torch.no_grad():
            ref = model(torch.from_numpy(x[None]))[0, :, 0].numpy()
        for art in ("model.ernn", "model.int8.ernn"):
            stream = edgernn.load(os.path.join(d, art)).stream()
            one, free = forecasts(stream, z, SPLIT, HORIZON)
            one_u, free_u = one * std + mean, free * std + mean
            tag = "fp32" if art == "model.ernn" else "int8"
            rh = np.sqrt(((free_u - truth_free) ** 2).mean(axis=0))
            results[name][tag] = {
                "one_step_rmse": train.rmse(truth_next[test], one_u[test]),
                "free_running_rmse_by_horizon": {str(h + 1): round(float(rh[h]), 2) for h in range(HORIZON)},
                "streamed_vs_pytorch_max_abs": float(np.abs(one - ref).max() * std),
            }
            curves[(name, tag)] = (one_u, free_u, rh)
        with torch.no_grad():
            results[name]["pytorch_one_step_rmse"] = train.rmse(truth_next[test], ref[test] * std + mean)
    pers_free = np.sqrt(((s[SPLIT - 1 : SPLIT - 1 + n_orig, None] - truth_free) ** 2).mean(axis=0))
    results["baselines"] = {
        "persistence_one_step_rmse": train.rmse(truth_next[test], s[:-1][test]),
        "train_mean_rmse": train.rmse(s[SPLIT:], np.full(len(s) - SPLIT, mean)),
        "persistence_rmse_by_horizon": {str(h + 1): round(float(pers_free[h]), 2) for h in range(HORIZON)},
    }

    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 7))
    yr = years[1:]
    a1.plot(years, s, "k-", lw=1.5, label="actual")
    a1.plot(yr[test], curves[("esn", "fp32")][0][test], "--", label="ESN one-step (edgernn)")
    a1.plot(yr[test], curves[("lstm", "fp32")][0][test], ":", label="LSTM one-step (edgernn)")
    o = 0  # the first free-running trajectory
    for name, style in (("esn", "-."), ("lstm", "-.")):
        a1.plot(years[SPLIT + o : SPLIT + o + HORIZON], curves[(name, "fp32")][1][o], style, lw=2,
                label=f"{name.upper()} free-running {HORIZON} y from {years[SPLIT]}")  # fmt: skip
    a1.axvline(years[SPLIT] - 0.5, color="gray", lw=0.8)
    a1.set_xlim(years[SPLIT - 60], years[-1] + 1)
    a1.set_ylabel("sunspot number")
    a1.legend(fontsize=8, loc="upper left")
    hs = np.arange(1, HORIZON + 1)
    for (name, tag), (_, _, rh) in curves.items():
        a2.plot(hs, rh, "o-" if tag == "fp32" else "x--", label=f"{name.upper()} {tag}")
    a2.plot(hs, pers_free, "k:", label="persistence")
    a2.set_xlabel("forecast horizon (years)")
    a2.set_ylabel("test RMSE")
    a2.legend(fontsize=8)
    fig.tight_layout()
    png = os.path.join(args.out, "esn_forecast.png")
    fig.savefig(png, dpi=100)
    results["plot"] = png
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
