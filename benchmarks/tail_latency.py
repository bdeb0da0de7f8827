"""Tail latency of ``Stream.step`` (issue 14 item 6: p99.9 within 3x of p50, no allocation, no GIL churn).

For each benchmark model (random weights, ``edgernn.bench.synthetic``): LSTM 8->64 + Dense, GRU 8->64 +
Dense, LSTM 8->256 + Dense, ESN 500 + Dense, one stream, 10^5 ``Stream.step(x, out=y)`` calls after a
warm-up, each timed alone with ``time.perf_counter_ns`` into a preallocated array (the inputs are made
before the loop: the loop itself allocates nothing). Prints p50 / p99 / p99.9 / max (µs) and p99.9/p50,
the timer's own cost, and the same for ``step(x)`` (which returns a new array per call).

Then, in steady state, tracemalloc over 10^4 more steps: the traced memory before and after (growth:
bytes kept per step) and the peak above the start (transient allocation within a step).

    .venv/bin/python benchmarks/tail_latency.py [-n 100000] [--gc on|off|freeze] [-m lstm_8x64 ...]

``--gc``: on (the default: Python's cyclic collector as a user has it), off (``gc.disable()`` during the
loop), freeze (``gc.freeze()`` first: the objects alive at start moved out of the collector's view).
No assertions: the figures are the output (the ratio is flagged when above 3).

Reading the figures: the spin row is a jitted arithmetic loop sized to the model's p50, timed the same way.
When its tail matches the model's and the slow calls of both are spaced alike in *time* (not in calls),
the tail is the machine's (interrupts, a hypervisor, other processes: see the context switches), not the
step's; gc collections and tracemalloc growth would point at the Python side.
"""

from __future__ import annotations

import argparse
import gc
import os
import sys
import tempfile
import time
import tracemalloc

import numpy as np

MODELS = {  # name -> (cell, input size, hidden/reservoir size)
    "lstm_8x64": ("lstm", 8, 64),
    "gru_8x64": ("gru", 8, 64),
    "lstm_8x256": ("lstm", 8, 256),
    "esn_500": ("esn", 8, 500),
}


def timed_steps(step, rows: list, out: np.ndarray | None) -> np.ndarray:
    """Nanoseconds of each ``step(x[, out])`` over ``rows`` (a list of input arrays made beforehand)."""
    pc = time.perf_counter_ns
    ns = np.empty(len(rows), np.int64)
    if out is None:
        for k, x in enumerate(rows):
            t0 = pc()
            step(x)
            ns[k] = pc() - t0
    else:
        for k, x in enumerate(rows):
            t0 = pc()
            step(x, out)
            ns[k] = pc() - t0
    return ns


def stats(ns: np.ndarray) -> dict[str, float]:
    """p50/p99/p99.9/max in microseconds, the ratio p99.9/p50, and the slow calls (> 3 x p50): their
    share and their median spacing in calls and in time (spaced in time, whatever the work: the machine;
    spaced in calls: something the call does every so often)."""
    us = ns / 1e3
    q = np.percentile(us, [50, 99, 99.9])
    slow = np.nonzero(us > 3 * q[0])[0]
    at = np.cumsum(us)[slow]
    return {
        "p50": q[0],
        "p99": q[1],
        "p99.9": q[2],
        "max": us.max(),
        "ratio": q[2] / q[0],
        "slow": len(slow) / len(us),
        "gap_calls": float(np.median(np.diff(slow))) if len(slow) > 1 else float("nan"),
        "gap_us": float(np.median(np.diff(at))) if len(slow) > 1 else float("nan"),
    }


def _spin_kernel():
    """A jitted loop of pure arithmetic on one small array (no memory traffic to speak of): the machine's
    own tail at a given duration, for comparison with the model's."""
    from edgernn.kernels import config

    @config.njit(nogil=False)
    def spin(a, n):
        acc = a[0]
        for k in range(n):
            acc = acc * 0.999999 + a[k & 7]
        a[1] = acc
        return 0

    return spin


def spin_like(p50_us: float, rows: int) -> dict[str, float]:
    """The statistics of the spin loop sized to take about ``p50_us`` per call, timed as the steps are."""
    spin = _spin_kernel()
    a = np.ones(8, np.float32)
    n = 1000
    spin(a, n)
    for _ in range(3):  # calibrate n to the model's p50
        t = np.median(timed_steps(lambda x, n=n: spin(a, n), [None] * 2000, None)) / 1e3
        n = max(1, int(n * p50_us / max(t, 1e-3)))
    return stats(timed_steps(lambda x, n=n: spin(a, n), [None] * rows, None))


def timer_cost(n: int) -> dict[str, float]:
    """The same statistics for an empty timed region (the timer's own cost and jitter)."""
    pc = time.perf_counter_ns
    ns = np.empty(n, np.int64)
    for k in range(n):
        t0 = pc()
        ns[k] = pc() - t0
    return stats(ns)


def allocation(step, rows: list, out: np.ndarray) -> tuple[int, int]:
    """tracemalloc over ``step(x, out)`` for every row: (bytes kept, peak bytes above the start)."""
    tracemalloc.start()
    try:
        for x in rows[:100]:  # the first traced calls settle tracemalloc's own tables
            step(x, out)
        tracemalloc.reset_peak()
        start, _ = tracemalloc.get_traced_memory()
        for x in rows:
            step(x, out)
        end, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    return end - start, peak - start


def _counters(since: dict | None = None) -> dict:
    """gc collections per generation and this process's context switches (since ``since``)."""
    import resource

    ru = resource.getrusage(resource.RUSAGE_SELF)
    now = {
        "gen": [g["collections"] for g in gc.get_stats()],
        "nivcsw": ru.ru_nivcsw,
        "nvcsw": ru.ru_nvcsw,
    }
    if since is None:
        return now
    gen = [a - b for a, b in zip(now["gen"], since["gen"], strict=True)]
    return {
        "gen": gen,
        "gc": sum(gen),
        "nivcsw": now["nivcsw"] - since["nivcsw"],
        "nvcsw": now["nvcsw"] - since["nvcsw"],
    }


def fmt(s: dict[str, float]) -> str:
    flag = "" if s["ratio"] <= 3 else "  (> 3)"
    return (
        f"p50 {s['p50']:7.2f}  p99 {s['p99']:7.2f}  p99.9 {s['p99.9']:7.2f}  max {s['max']:8.1f} us"
        f"  p99.9/p50 {s['ratio']:6.2f}{flag:<6}  slow (>3x p50) {s['slow'] * 100:4.1f}%, every "
        f"~{s['gap_calls']:.0f} calls / {s['gap_us']:.0f} us"
    )


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    import edgernn
    from edgernn import artifact
    from edgernn.bench import synthetic

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", "--steps", type=int, default=100_000)
    ap.add_argument("--warmup", type=int, default=10_000)
    ap.add_argument("--gc", choices=("on", "off", "freeze"), default="on")
    ap.add_argument("-m", "--model", action="append", choices=sorted(MODELS))
    ap.add_argument(
        "--thread",
        action="store_true",
        help="a CPU-bound Python thread runs beside the loop (GIL contention)",
    )
    a = ap.parse_args(argv)
    if a.thread:
        import threading

        stop = threading.Event()

        def busy() -> None:
            k = 0
            while not stop.is_set():
                k += 1

        threading.Thread(target=busy, daemon=True).start()
    print(
        f"load average {os.getloadavg()[0]:.2f}; {a.steps:,} timed Stream.step calls per model after "
        f"{a.warmup:,} warm-up; gc {a.gc}; python {sys.version.split()[0]}, numpy {np.__version__}"
    )
    print(f"timer alone        : {fmt(timer_cost(a.steps))}")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory(prefix="edgernn-tail-") as d:
        for name in a.model or MODELS:
            cell, i, h = MODELS[name]
            path = os.path.join(d, f"{name}.ernn")
            artifact.write(path, *synthetic(cell, i, h, 1, seed=0))
            s = edgernn.load(path).stream()
            X = rng.standard_normal((a.steps, i)).astype(np.float32)
            rows = list(X)  # the views exist before the loop
            out = np.empty(1, np.float32)
            for x in rows[: a.warmup]:
                s.step(x, out)
            if a.gc == "freeze":
                gc.collect()
                gc.freeze()
            if a.gc == "off":
                gc.disable()
            try:
                before = _counters()
                with_out = stats(timed_steps(s.step, rows, out))
                seen = _counters(before)
                new_arr = stats(timed_steps(s.step, rows, None))
            finally:
                gc.enable()
                if a.gc == "freeze":
                    gc.unfreeze()
            kept, peak = allocation(s.step, rows[:10_000], out)
            spin = spin_like(with_out["p50"], a.steps)
            print(f"{name:<11} out=y : {fmt(with_out)}")
            print(
                f"{'':<11}         during it: {seen['gc']} gc collections (gen0/1/2 "
                f"{seen['gen']}), {seen['nivcsw']} involuntary and {seen['nvcsw']} voluntary context switches"
            )
            print(f"{'':<11} new y : {fmt(new_arr)}")
            print(f"{'':<11} spin  : {fmt(spin)}  (a jitted arithmetic loop of the same p50)")
            print(
                f"{'':<11} tracemalloc over 10,000 steady-state step(x, out): {kept} bytes kept "
                f"({kept / 10_000:.3f} per step), peak {peak} bytes above the start"
            )
    return 0


if __name__ == "__main__":
    sys.exit(main())
