"""The results as a PNG (:func:`plot`): latency distributions and throughput against streams."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


def plot(res: Mapping[str, Any], path: str) -> None:
    """Write a PNG: per-step latency distribution per backend (left) and throughput against the number of
    streams (right). Needs matplotlib (the ``bench`` extra)."""
    from ..errors import require

    require("matplotlib", "bench")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = res.get("_latency_ns", {})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    allus = np.concatenate([np.asarray(v, np.float64) / 1e3 for v in lat.values()]) if lat else np.ones(1)
    lo, hi = max(allus.min() * 0.8, 1e-3), allus.max() * 1.2
    bins = np.geomspace(lo, hi, 120)
    colors = {}
    for name, ns_ in lat.items():
        us = np.asarray(ns_, np.float64) / 1e3
        (line,) = ax1.plot([], [])
        c = line.get_color()
        colors[name] = c
        ax1.hist(us, bins=bins, histtype="step", color=c, linewidth=1.5, label=name)
        st = res["backends"][name]["step"]
        ax1.axvline(st["p50_us"], color=c, linestyle="-", alpha=0.6)
        ax1.axvline(st["p99_us"], color=c, linestyle=":", alpha=0.9)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("per-step latency (us), log scale; solid line p50, dotted p99")
    ax1.set_ylabel("steps")
    ax1.set_title(f"Stream.step latency, {res['settings']['steps']:,} steps")
    ax1.legend()
    for name, b in res["backends"].items():
        rows = [r for r in b.get("streams", []) if "stream_steps_per_s" in r]
        if rows:
            ax2.plot(
                [r["n"] for r in rows],
                [r["stream_steps_per_s"] for r in rows],
                "o-",
                label=f"{name} batched",
                color=colors.get(name),
            )
        sep = b.get("separate")
        if sep:
            ax2.plot(
                [sep["n"]],
                [sep["stream_steps_per_s"]],
                "x",
                markersize=10,
                color=colors.get(name),
                label=f"{name}: {sep['n']} separate step calls",
            )
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("streams stepped per call (n)")
    ax2.set_ylabel("stream-steps per second")
    ax2.set_title("throughput against streams")
    ax2.grid(True, which="both", alpha=0.3)
    if ax2.lines:
        ax2.legend()
    mdl = res["model"]
    fig.suptitle(
        f"edgernn bench: {os.path.basename(mdl['path'])} ({', '.join(mdl['layers'])}, "
        f"{mdl['quantization']}) on {res['machine']['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
