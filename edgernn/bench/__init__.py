"""``edgernn bench``: latency, throughput, start-up and memory of edgernn next to ONNX Runtime and PyTorch.

The harness is numpy-only; the baselines (``edgernn.export.baselines``) import onnx/onnxruntime/torch
inside functions, only when those backends are asked for and installed. Also home of :func:`synthetic`, the
random-weight models the benchmark suite and the tests of ``edgernn bench`` use.

Modules: ``models`` (synthetic models, int8, work per step), ``timing`` (timers, statistics, machine,
progress), ``backends`` (edgernn, ONNX Runtime, PyTorch), ``coldstart`` (fresh-process start-up and
memory), ``run`` (:func:`bench`), ``report`` (tables, JSON), ``plot`` (PNG).
"""

from __future__ import annotations

from .backends import Backend
from .coldstart import cold_start
from .models import model_cost, quantize_int8, synthetic
from .plot import plot
from .report import format_table, to_json
from .run import CHECK_TOL, bench, check_extras, defaults_note, not_installed_defaults, stream_counts
from .timing import Progress, machine, summarize, time_call, time_each, time_loop, timer_overhead_ns

__all__ = [
    "CHECK_TOL",
    "Backend",
    "Progress",
    "bench",
    "check_extras",
    "defaults_note",
    "cold_start",
    "format_table",
    "machine",
    "model_cost",
    "not_installed_defaults",
    "plot",
    "quantize_int8",
    "stream_counts",
    "summarize",
    "synthetic",
    "time_call",
    "time_each",
    "time_loop",
    "timer_overhead_ns",
    "to_json",
]
