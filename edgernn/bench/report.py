"""The results as text tables (:func:`format_table`) and JSON (:func:`to_json`)."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_table(res: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`bench` results (plain text tables)."""
    mdl, mach, st = res["model"], res["machine"], res["settings"]
    names = list(res["backends"])
    bk = res["backends"]
    lines = [
        f"model   {mdl['path']}  ({', '.join(mdl['layers'])}; {mdl['quantization']}; "
        f"{mdl['parameters']:,} weights; {mdl['size_bytes']:,} bytes)",
        f"machine {mach['cpu']} ({mach['arch']}, {mach['usable_cores']}/{mach['cores']} cores, load "
        f"{mach['load_average']}); python {mach['python']}, "
        + ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v),
        f"work    {mdl['flops'] / 1e3:,.1f} kFLOP and {mdl['weight_bytes'] / 1e3:,.1f} kB of weights/step; "
        f"{st['steps']:,} timed steps after {st['warmup']:,} warm-up; timer overhead "
        f"{st['timer_overhead_ns']:.0f} ns per step included in the percentiles",
        "",
    ]

    def get(name, *keys):
        d = bk[name]
        for k in keys:
            if not isinstance(d, Mapping) or k not in d:
                return None
            d = d[k]
        return d

    rows = [["runs"] + [str(bk[n].get("source", ""))[:40] for n in names]]
    spec = [
        ("step p50 (us)", ("step", "p50_us")),
        ("step p90 (us)", ("step", "p90_us")),
        ("step p99 (us)", ("step", "p99_us")),
        ("step p99.9 (us)", ("step", "p99.9_us")),
        ("step max (us)", ("step", "max_us")),
        ("p99.9 / p50", ("step", "tail_ratio")),
        ("preemptions during step timing", ("step", "preemptions")),
        ("gc collections during step timing", ("step", "gc_collections")),
        ("step mean, plain loop (us)", ("step", "loop_us")),
        (f"x real-time at {st['rate_hz']:g} Hz", ("step", "realtime_x")),
        (f"steps over the {st['deadline_us']:.3g} us deadline", ("step", "over_deadline")),
        ("achieved GFLOP/s (step)", ("step", "gflops")),
        ("weight GB/s (step)", ("step", "weight_gbps")),
        (f"chunk run(T={st['chunk']}) (us/step)", ("run", "us_per_step")),
        ("chunk run kind", ("run", "kind")),
        ("cold start, empty kernel cache (s)", ("cold_start", "empty_cache", "wall_s")),
        ("cold start, warm kernel cache (s)", ("cold_start", "warm_cache", "wall_s")),
        ("peak RSS, warm cache (MB)", ("peak_rss_mb",)),
        ("peak RSS, empty cache (MB)", ("cold_start", "empty_cache", "peak_rss_mb")),
        ("outputs agree with edgernn", ("check", "agree")),
        ("max |diff| vs edgernn (step)", ("check", "step", "max_abs_diff")),
    ]
    for label, keys in spec:
        rows.append([label] + [_fmt(get(n, *keys)) for n in names])
    if names:
        rows.append(["artifact size (bytes)", _fmt(mdl["size_bytes"])] + ["" for _ in names[1:]])
        lines.append(_table(["", *names], rows))
    else:
        lines.append("no backend ran")
    ns = st["streams"]
    if ns and any(bk[n].get("streams") for n in names):
        lines += ["", "many streams: microseconds per stream-step (stream-steps per second)"]
        srows = []
        for n in ns:
            row = [f"n = {n:,}"]
            for name in names:
                r = next((r for r in bk[name].get("streams", []) if r.get("n") == n), None)
                if r is None or "us_per_call" not in r:
                    row.append("-")
                else:
                    row.append(f"{r['us_per_stream_step']:.3g} ({r['stream_steps_per_s']:,.0f}/s)")
            srows.append(row)
        lines.append(_table(["streams", *names], srows))
        for name in names:
            sep = bk[name].get("separate")
            if sep:
                msg = (
                    f"{name}: {sep['n']:,} separate Stream.step calls take "
                    f"{sep['us_per_stream_step']:.3g} us per stream-step"
                )
                if "streams_speedup" in sep:
                    msg += f"; streams({sep['n']:,}).step is {sep['streams_speedup']:.1f}x faster"
                lines.append(msg)
    cr = res.get("cpp_ratio") or {}
    if "step_p50" in cr:
        msg = (
            f"edgernn vs the plain C++ loop ({cr['cpp_us_per_step']:.3g} us/step in one call per chunk): "
            f"step p50 {cr['step_p50']:.2f}x"
        )
        if "run" in cr:
            msg += f", chunk run {cr['run']:.2f}x"
        lines.append(msg)
    for note in res.get("notes", []):
        lines.append(f"note: {note}")
    for name, why in res.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    for name, why in res.get("not_installed", {}).items():
        lines.append(f"not run {name}: {why}")
    return "\n".join(lines)


def to_json(res: Mapping[str, Any]) -> str:
    """The results as JSON (without the raw per-step latencies)."""
    return json.dumps({k: v for k, v in res.items() if not k.startswith("_")}, indent=2)
