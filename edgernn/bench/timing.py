"""Timing and statistics: per-call and loop timers, latency percentiles, the timer's own overhead, the
machine the figures were taken on, and a progress bar. numpy only."""

from __future__ import annotations

import math
import os
import platform
import sys
import time
from collections.abc import Callable
from typing import Any

import numpy as np


def machine() -> dict[str, Any]:
    """The machine and software the numbers were taken on (no heavy import: versions from metadata)."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for pkg in ("edgernn", "numpy", "numba", "onnxruntime", "onnx", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": load,
        "versions": versions,
    }


def summarize(ns: np.ndarray) -> dict[str, float]:
    """Latency statistics of per-call times ``ns`` (nanoseconds) in microseconds."""
    us = np.asarray(ns, dtype=np.float64) / 1e3
    q = np.percentile(us, [50, 90, 99, 99.9])
    return {
        "p50_us": float(q[0]),
        "p90_us": float(q[1]),
        "p99_us": float(q[2]),
        "p99.9_us": float(q[3]),
        "tail_ratio": float(q[3] / q[0]) if q[0] > 0 else float("inf"),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
        "min_us": float(us.min()),
        "count": int(us.size),
    }


def interruptions() -> tuple[int, int]:
    """(involuntary context switches of this process so far, Python gc collections so far): read before
    and after a timed loop, their differences say how often the OS preempted it and the collector ran."""
    import gc

    try:
        import resource

        nivcsw = int(resource.getrusage(resource.RUSAGE_SELF).ru_nivcsw)
    except (ImportError, OSError):  # pragma: no cover - not Unix
        nivcsw = 0
    return nivcsw, sum(int(g["collections"]) for g in gc.get_stats())


def timer_overhead_ns(n: int = 20000) -> float:
    """Median cost of one back-to-back ``time.perf_counter_ns()`` pair, nanoseconds (included in per-step
    latencies, which are timed one call at a time)."""
    pc = time.perf_counter_ns
    d = np.empty(n, np.int64)
    for k in range(n):
        t0 = pc()
        d[k] = pc() - t0
    return float(np.median(d))


def time_each(
    fn: Callable[[np.ndarray], Any], X: np.ndarray, tick: Callable[[int], None] | None = None
) -> np.ndarray:
    """Call ``fn(x)`` for each row of X, timing every call on its own; returns nanoseconds per call."""
    pc = time.perf_counter_ns
    out = np.empty(len(X), np.int64)
    chunk = max(1, len(X) // 50)
    for k in range(len(X)):
        x = X[k]
        t0 = pc()
        fn(x)
        out[k] = pc() - t0
        if tick is not None and k % chunk == chunk - 1:
            tick(chunk)
    return out


def time_loop(fn: Callable[[np.ndarray], Any], X: np.ndarray, repeats: int = 3) -> float:
    """Best over ``repeats`` of the mean time of ``fn(x)`` over the rows of X in one loop, microseconds."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in X:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(X) * 1e6


def time_call(fn: Callable[[], Any], min_time: float = 0.05, max_calls: int = 100000) -> float:
    """Best-of-3 mean time of ``fn()``, microseconds; each round repeats it for about ``min_time`` seconds."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = int(min(max_calls, max(1, min_time / once)))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


class Progress:
    """A one-line text progress bar on stderr: ``Progress(total).advance(units, label)``."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30, stream=None):
        self.total, self.done, self.width = max(1, total), 0, width
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.label = ""
        self._last = 0.0

    def advance(self, units: float = 1, label: str | None = None) -> None:
        """Count ``units`` of work done (and switch the label); redraws at most 20 times a second."""
        self.done = min(self.total, self.done + units)
        if label is not None:
            self.label = label
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.05 or self.done == self.total or label is not None):
            self._last = now
            frac = self.done / self.total
            bar = "#" * int(frac * self.width)
            self.stream.write(f"\r[{bar:<{self.width}}] {frac * 100:5.1f}%  {self.label[:50]:<50}")
            self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()
