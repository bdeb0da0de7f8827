"""What device code looks like: load an artifact, read sensor samples at a fixed rate, print predictions.

Imports only the core package (numpy + edgernn; no torch, no onnx). Samples come from a CSV file or from
stdin (``-``), one sample per line, ``input_size`` numbers separated by commas, semicolons, tabs or spaces
(detected, or ``--delimiter``; a first line of names is a header; any other bad line stops the loop with
an error naming its line number). The loop ticks at ``--rate`` Hz: at each tick it reads one sample,
steps the model, and prints the prediction (for a model with labels, the most likely label too). A sample
whose prediction is printed after its deadline (the next tick, or ``--deadline-ms`` after its tick) counts
as an overrun; those whose own work (step + print) fit the deadline are counted apart, as "woke up late"
(the OS ran the loop late: other processes, or a virtual CPU descheduled by its host; ``--realtime`` asks
for SCHED_FIFO). At the end a summary goes to stderr: samples, overruns, per-step latency p50/p99/max in
microseconds. Run::

    python examples/device_loop.py model.ernn samples.csv --rate 100
    some_sensor_reader | python examples/device_loop.py model.ernn - --rate 50
"""

from __future__ import annotations

import argparse
import os
import sys
import time
from collections.abc import Iterator
from typing import TextIO

import numpy as np

import edgernn
from edgernn.textrows import DELIMITERS, read_rows


def samples(f: TextIO, input_size: int, delimiter: str | None = None) -> Iterator[np.ndarray]:
    """Yield one float32 sample (input_size,) per sample line of ``f`` (``edgernn.textrows`` rules: one
    header line of names allowed, separator detected or given; any bad line raises InputError naming it)."""
    for _, x in read_rows(f, input_size, delimiter):
        yield x


def run(
    artifact: str,
    source: TextIO,
    rate: float,
    deadline_ms: float | None = None,
    out: TextIO = sys.stdout,
    max_samples: int | None = None,
    delimiter: str | None = None,
) -> dict:
    """Stream ``source`` through ``artifact`` at ``rate`` Hz; return the summary (counts, latency in µs)."""
    model = edgernn.load(artifact)
    labels = model.info.get("labels")
    stream = model.stream()
    period = 1.0 / rate
    deadline = period if deadline_ms is None else deadline_ms / 1000.0
    step_us: list[float] = []
    overruns = 0
    woke_late = 0  # overruns whose own work (step + print) fit the deadline: the loop started late
    late_us = 0.0  # the latest start after a tick
    n = 0
    start = time.perf_counter()
    for x in samples(source, model.info["input_size"], delimiter):
        tick = start + n * period
        t0 = time.perf_counter()
        y = stream.step(x)
        t1 = time.perf_counter()
        text = " ".join(f"{v:.6g}" for v in y)
        if labels:
            text += f" {labels[int(np.argmax(y))]}"
        print(f"{n} {text}", file=out, flush=True)
        t2 = time.perf_counter()
        late_us = max(late_us, (t0 - tick) * 1e6)
        if t2 - tick > deadline:
            overruns += 1
            woke_late += t2 - t0 <= deadline
        step_us.append((t1 - t0) * 1e6)
        n += 1
        if max_samples is not None and n >= max_samples:
            break
        wait = start + n * period - time.perf_counter()
        if wait > 0:
            time.sleep(wait)
    lat = np.array(step_us) if step_us else np.zeros(1)
    return {
        "samples": n,
        "rate_hz": rate,
        "deadline_ms": deadline * 1000.0,
        "overruns": overruns,
        "overruns_woke_late": woke_late,
        "latest_start_us": late_us,
        "step_us_p50": float(np.percentile(lat, 50)),
        "step_us_p99": float(np.percentile(lat, 99)),
        "step_us_max": float(lat.max()),
        "elapsed_s": time.perf_counter() - start,
    }


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("artifact", help="model.ernn")
    ap.add_argument("input", help="CSV file of samples, or - for stdin")
    ap.add_argument("--rate", type=float, default=100.0, help="samples per second (default 100)")
    ap.add_argument("--deadline-ms", type=float, default=None, help="deadline per sample (default 1/rate)")
    ap.add_argument("--max-samples", type=int, default=None, help="stop after this many samples")
    ap.add_argument("--delimiter", choices=sorted(DELIMITERS), default=None, metavar="SEP", help="separator")
    ap.add_argument(
        "--realtime",
        action="store_true",
        help="ask for real-time scheduling (SCHED_FIFO, needs root or CAP_SYS_NICE): the loop then wakes "
        "on time even when other processes keep the CPUs busy",
    )
    args = ap.parse_args(argv)
    if not args.rate > 0:
        ap.error(f"--rate must be > 0 Hz, got {args.rate}")
    if args.realtime:
        try:
            os.sched_setscheduler(
                0, os.SCHED_FIFO, os.sched_param(min(50, os.sched_get_priority_max(os.SCHED_FIFO)))
            )
        except (AttributeError, OSError) as e:
            print(f"note: --realtime not granted ({e}); normal scheduling", file=sys.stderr)
    try:
        if args.input == "-":
            summary = run(
                args.artifact,
                sys.stdin,
                args.rate,
                args.deadline_ms,
                max_samples=args.max_samples,
                delimiter=args.delimiter,
            )
        else:
            with open(args.input) as f:
                summary = run(
                    args.artifact,
                    f,
                    args.rate,
                    args.deadline_ms,
                    max_samples=args.max_samples,
                    delimiter=args.delimiter,
                )
    except (edgernn.ArtifactError, edgernn.InputError, OSError) as e:
        print(f"error: {e}", file=sys.stderr)
        return 2
    print(
        "summary: {samples} samples at {rate_hz:g} Hz, {overruns} overruns (deadline {deadline_ms:.3g} ms; "
        "{overruns_woke_late} of them woke up late, latest start {latest_start_us:.0f} us after its tick), "
        "step p50 {step_us_p50:.1f} us, p99 {step_us_p99:.1f} us, max {step_us_max:.1f} us, "
        "{elapsed_s:.2f} s".format(**summary),
        file=sys.stderr,
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
