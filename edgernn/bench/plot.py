"""The results as a PNG (:func:`plot`): latency distributions and throughput against streams.

:func:`figure` builds the matplotlib figure (what the PNG shows, inspectable in tests), :func:`plot` writes
it. The latency axis is logarithmic with labelled ticks at 1, 2 and 5 times the decades of the values shown
(decades only, plus the ticks at the p50s, on an axis wider than three decades);
what a panel leaves out (a backend not installed, skipped, or without a batched run) is said in a note.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping
from typing import Any

import numpy as np

#: an axis spanning more decades than this labels its decades and the ticks nearest the marked values
#: only (the other 2 and 5 ticks stay, unlabelled, so that labels do not run into each other)
MAX_LABELLED_DECADES = 3


def log_ticks(lo: float, hi: float) -> list[float]:
    """The 1-2-5 ticks of a log axis showing values in [lo, hi] (lo > 0): every 1, 2 and 5 times a power of
    ten in the range, plus the nearest such tick below ``lo`` and above ``hi``."""
    if not (lo > 0 and hi >= lo and math.isfinite(hi)):
        raise ValueError(f"log_ticks: need 0 < lo <= hi, got {lo}, {hi}")
    k0, k1 = math.floor(math.log10(lo)) - 1, math.ceil(math.log10(hi)) + 1
    cands = [m * 10.0**k for k in range(k0, k1 + 1) for m in (1, 2, 5)]
    below = max(c for c in cands if c <= lo * (1 + 1e-12))
    above = min(c for c in cands if c >= hi * (1 - 1e-12))
    return [c for c in cands if below <= c <= above]


def tick_label(v: float) -> str:
    """A latency tick (microseconds) as people write it: 0.05, 2, 500, then 1 ms, 20 ms, 1,000 ms."""
    if v >= 1000:
        return f"{v / 1000:,.0f} ms"
    if v >= 1:
        return f"{v:,.0f}"
    return f"{v:.10f}".rstrip("0")


def _set_log_ticks(axis, lo: float, hi: float, marks: list[float] = ()) -> tuple[float, float]:
    """Put 1-2-5 ticks with labels on a log ``axis`` (``ax.xaxis``/``ax.yaxis``) for values in [lo, hi]; no
    minor ticks. On a wide axis only the decades and the tick nearest each of ``marks`` are labelled.
    Returns the axis limits to set (the outer ticks)."""
    from matplotlib.ticker import FixedFormatter, FixedLocator, NullFormatter, NullLocator

    ticks = log_ticks(lo, hi)
    keep = set(range(len(ticks)))
    if math.log10(ticks[-1] / ticks[0]) > MAX_LABELLED_DECADES + 1e-9:
        keep = {i for i, t in enumerate(ticks) if f"{t:e}".startswith("1")}
        for m in marks:
            if m > 0:
                keep.add(int(np.argmin([abs(math.log(t / m)) for t in ticks])))
    labels = [tick_label(t) if i in keep else "" for i, t in enumerate(ticks)]
    axis.set_major_locator(FixedLocator(ticks))
    axis.set_major_formatter(FixedFormatter(labels))
    axis.set_minor_locator(NullLocator())
    axis.set_minor_formatter(NullFormatter())
    return ticks[0], ticks[-1]


def left_out(res: Mapping[str, Any]) -> tuple[list[str], list[str]]:
    """What the latency panel and the throughput panel leave out, one line each: ``(latency, throughput)``."""
    gone = [f"{n}: not installed" for n in res.get("not_installed", {})]
    gone += [f"{n}: skipped ({why[:70]})" for n, why in res.get("skipped", {}).items()]
    throughput = list(gone)
    for name, b in res.get("backends", {}).items():
        rows = [r for r in b.get("streams", []) if "stream_steps_per_s" in r]
        if not rows and not b.get("separate"):
            errs = [r["error"] for r in b.get("streams", []) if "error" in r]
            why = f"streams failed ({errs[0][:60]})" if errs else "no batched streams run"
            throughput.append(f"{name}: {why}")
    return gone, throughput


def _note(ax, lines: list[str]) -> None:
    if lines:
        ax.text(
            0.0,
            -0.16,
            "not shown: " + "; ".join(lines),
            transform=ax.transAxes,
            fontsize=8,
            va="top",
            ha="left",
            wrap=True,
            color="firebrick",
        )


def figure(res: Mapping[str, Any]):
    """The figure of :func:`plot` (a ``matplotlib.figure.Figure``, not drawn): axes 0 the per-step latency
    distribution per backend, axes 1 throughput against the number of streams. Needs matplotlib."""
    from ..errors import require

    require("matplotlib", "bench")
    import matplotlib
    from matplotlib.figure import Figure

    palette = matplotlib.rcParams["axes.prop_cycle"].by_key().get("color", ["C0", "C1", "C2", "C3"])
    lat = res.get("_latency_ns", {})
    fig = Figure(figsize=(13, 5.4))
    ax1, ax2 = fig.subplots(1, 2)
    colors = {name: palette[i % len(palette)] for i, name in enumerate(res.get("backends", {}))}
    allus = np.concatenate([np.asarray(v, np.float64) / 1e3 for v in lat.values()]) if lat else np.ones(1)
    lo, hi = max(allus.min() * 0.8, 1e-3), allus.max() * 1.2
    bins = np.geomspace(lo, hi, 120)
    for name, ns_ in lat.items():
        us = np.asarray(ns_, np.float64) / 1e3
        c = colors.get(name)
        ax1.hist(us, bins=bins, histtype="step", color=c, linewidth=1.5, label=name)
        st = res["backends"][name]["step"]
        ax1.axvline(st["p50_us"], color=c, linestyle="-", alpha=0.6)
        ax1.axvline(st["p99_us"], color=c, linestyle=":", alpha=0.9)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    marks = [res["backends"][n]["step"]["p50_us"] for n in lat]
    ax1.set_xlim(*_set_log_ticks(ax1.xaxis, lo, hi, marks))
    ax1.grid(True, which="major", axis="x", alpha=0.3)
    ax1.set_xlabel("per-step latency (us), log scale; solid line p50, dotted p99")
    ax1.set_ylabel("steps")
    ax1.set_title(f"Stream.step latency, {res['settings']['steps']:,} steps")
    if lat:
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
    gone, missing = left_out(res)
    _note(ax1, gone)
    _note(ax2, missing)
    mdl = res["model"]
    fig.suptitle(
        f"edgernn bench: {os.path.basename(mdl['path'])} ({', '.join(mdl['layers'])}, "
        f"{mdl['quantization']}) on {res['machine']['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    return fig


def plot(res: Mapping[str, Any], path: str) -> None:
    """Write a PNG: per-step latency distribution per backend (left) and throughput against the number of
    streams (right), with a note naming what each panel leaves out. Needs matplotlib (the ``bench`` extra)."""
    figure(res).savefig(path, dpi=110)
