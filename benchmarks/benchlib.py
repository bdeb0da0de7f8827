"""Shared pieces of the benchmark suite: the benchmark models, tolerances, agreement checks, baselines.

Run with ``pytest benchmarks/`` (the default ``pytest`` collects ``tests/`` only). Every benchmark times one
backend on one model and then asserts that the backend's outputs agree with edgernn's on the same inputs.
"""

from __future__ import annotations

import numpy as np
import pytest

#: name -> (cell, input, hidden, density); every model ends in Dense hidden -> 1.
MODELS = {
    "lstm_8x64": ("lstm", 8, 64, 1.0),
    "gru_8x64": ("gru", 8, 64, 1.0),
    "lstm_8x256": ("lstm", 8, 256, 1.0),
    "esn_8x500": ("esn", 8, 500, 1.0),
    "esn_8x500_sparse10": ("esn", 8, 500, 0.1),
}
QUANT = ("fp32", "int8")
#: Issue 2 / issue 4 targets, microseconds per Stream.step (one core, one stream).
TARGETS_US = {
    ("lstm_8x64", "fp32"): 1.0,
    ("gru_8x64", "fp32"): 0.8,
    ("lstm_8x256", "fp32"): 11.0,
    ("esn_8x500", "fp32"): 10.0,
    ("esn_8x500_sparse10", "fp32"): 3.0,
    ("lstm_8x256", "int8"): 5.0,
    ("esn_8x500", "int8"): 5.0,
}
#: The plain C++ fp32 loop of each model on the machine the targets were set on (issue 14's table, µs per
#: step); the sparse ESN's reference is the dense ESN 500 loop. A target is carried to another machine
#: with that model's loop: target x (C++ loop here / C++ loop then), the same ratio to the hardware's own
#: reference.
FILED_CPP_US = {
    "lstm_8x64": 0.74,
    "gru_8x64": 0.56,
    "lstm_8x256": 9.8,
    "esn_8x500": 9.6,
    "esn_8x500_sparse10": 9.6,
}
#: the C++ loop a model's target is scaled with (the sparse ESN has none of its own)
CPP_OF = {"esn_8x500_sparse10": "esn_8x500"}
STEPS = 1000
#: |a - e| <= atol + rtol |e| between a baseline and edgernn (baselines run the dequantized weights)
TOL = {"fp32": (1e-4, 1e-3), "int8": (5e-3, 1e-2), "ort-int8": (2e-2, 5e-2)}  # ort-int8: ORT's own int8


def assert_agree(got, ref, quant: str, what: str) -> None:
    """Assert |got - ref| <= atol + rtol |ref| elementwise, naming the worst element."""
    atol, rtol = TOL[quant]
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    assert got.shape == ref.shape, f"{what}: shape {got.shape} != {ref.shape}"
    diff = np.abs(got - ref)
    bad = diff > atol + rtol * np.abs(ref)
    assert not bad.any(), f"{what}: {bad.sum()} outputs differ from edgernn, max |diff| {diff.max():.3g}"


def edgernn_step_outputs(path: str, X: np.ndarray) -> np.ndarray:
    """edgernn's Stream.step outputs over X from the initial state, (T, output_size)."""
    import edgernn

    s = edgernn.load(path).stream()
    return np.stack([s.step(x) for x in X])


def make_baseline(backend: str, plan: dict, tensors: dict, batch: int = 1):
    """A fresh baseline: ``ort`` (step graph), ``ort-int8`` (ORT's quantize_dynamic of it) or ``torch``;
    skips when not installed."""
    if backend in ("ort", "ort-int8"):
        pytest.importorskip("onnx")
        pytest.importorskip("onnxruntime")
        from edgernn.export.baselines import OrtStep, onnx_step_model, ort_dynamic_int8

        graph = onnx_step_model(plan, tensors, batch=batch)
        return OrtStep(ort_dynamic_int8(graph) if backend == "ort-int8" else graph)
    pytest.importorskip("torch")
    from edgernn.export.baselines import TorchBaseline

    tb = TorchBaseline(plan, tensors)
    tb.reset(batch)
    return tb
