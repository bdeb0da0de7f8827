"""Benchmark models: :func:`synthetic` random-weight models, :func:`quantize_int8`, and the work a
model does per step (:func:`model_cost`). numpy only."""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import numpy as np


def synthetic(
    cell: str,
    input_size: int = 8,
    hidden_size: int = 64,
    output_size: int = 1,
    density: float = 1.0,
    leak_rate: float = 0.3,
    seed: int = 0,
) -> tuple[dict, dict[str, np.ndarray]]:
    """A random-weight model ``cell`` (``lstm``, ``gru``, ``rnn``, ``esn``) input_size -> hidden_size,
    followed by a linear Dense hidden_size -> output_size. Returns ``(plan, tensors)`` for
    :func:`edgernn.artifact.write`, float32.

    Recurrent weights are uniform(-1/sqrt(H), 1/sqrt(H)) as PyTorch initializes them; the ESN reservoir is
    normal, ``density`` of its entries kept (stored as CSR when ``density < 1``) and scaled to spectral
    radius 0.9, leak rate ``leak_rate``. The GRU is ``linear_before_reset = 1`` (PyTorch's convention).
    """
    rng = np.random.default_rng(seed)
    i, h, o = input_size, hidden_size, output_size
    tensors: dict[str, np.ndarray] = {}
    k = 1.0 / math.sqrt(h)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(np.float32)

    if cell in ("lstm", "gru", "rnn"):
        g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        tensors.update({"rec.W": u(1, g * h, i), "rec.R": u(1, g * h, h), "rec.B": u(1, 2 * g * h)})
        layer: dict[str, Any] = {
            "kind": cell,
            "name": "rec",
            "input_size": i,
            "hidden_size": h,
            "tensors": {"W": "rec.W", "R": "rec.R", "B": "rec.B"},
        }
        if cell == "gru":
            layer["linear_before_reset"] = 1
    elif cell == "esn":
        n = h
        w = rng.standard_normal((n, n))
        if density < 1.0:
            w *= rng.random((n, n)) < density
        radius = float(np.max(np.abs(np.linalg.eigvals(w)))) or 1.0
        w = (w * (0.9 / radius)).astype(np.float32)
        tensors["rec.W_in"] = rng.uniform(-1, 1, size=(n, i)).astype(np.float32)
        tensors["rec.b"] = rng.uniform(-0.2, 0.2, size=n).astype(np.float32)
        layer = {
            "kind": "esn",
            "name": "rec",
            "input_size": i,
            "reservoir_size": n,
            "leak_rate": leak_rate,
            "readout_input": "state",
            "tensors": {"W_in": "rec.W_in", "b": "rec.b"},
        }
        if density < 1.0:
            rows, cols = np.nonzero(w)
            tensors["rec.W_data"] = w[rows, cols].astype(np.float32)
            tensors["rec.W_indices"] = cols.astype(np.int32)
            tensors["rec.W_indptr"] = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(
                np.int32
            )
            layer.update(sparse=True, nnz=int(len(rows)))
            layer["tensors"].update(W_data="rec.W_data", W_indices="rec.W_indices", W_indptr="rec.W_indptr")
        else:
            tensors["rec.W"] = w
            layer["tensors"]["W"] = "rec.W"
        k = 1.0 / math.sqrt(n)
    else:
        raise ValueError(f"synthetic: unknown cell {cell!r} (lstm, gru, rnn, esn)")
    tensors["head.W"] = u(o, h)
    tensors["head.b"] = u(o)
    head = {"kind": "dense", "name": "head", "input_size": h, "output_size": o, "activation": "linear"}
    head["tensors"] = {"W": "head.W", "b": "head.b"}
    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {"name": "edgernn.bench.synthetic", "cell": cell, "seed": seed},
        "input": {"kind": "features", "size": i},
        "output": {"size": o, "sequence": "many_to_many", "labels": None},
        "quantization": "none",
        "layers": [layer, head],
    }
    return plan, tensors


def quantize_int8(plan: dict, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Symmetric per-output-row int8 quantization of every quantizable matrix of a float32 plan.

    The project's quantizer (``edgernn.export.quantize``, numpy only): w ~= q * scale with
    scale = max|row| / 127, q in [-127, 127]; CSR reservoir values get one scale per reservoir row.
    Returns a new ``(plan, tensors)``.
    """
    from ..export.quantize import quantize_plan

    return quantize_plan(plan, tensors, "int8")


def model_cost(plan: dict, tensors: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Work per step of one stream: ``flops`` (2 x multiply-adds of the matrix products; elementwise work
    not counted), ``weight_bytes`` (bytes of the matrices as stored: int8 1, float 4 -- fp16 is widened to
    float32 at load -- plus int8 scales and CSR indices) and ``parameters`` (weight elements). ``plan``: a
    layer chain (format 1) or a graph (format 2: its ops; a ``conv1d`` applies its kernel at every output
    position of the step)."""
    flops = wbytes = params = 0
    for layer in _layers(plan):
        names = layer["tensors"]
        reuse = 1  # times each weight is used per step
        if layer["kind"] == "conv1d" and layer.get("out_channels"):
            reuse = max(1, int(layer["output_size"]) // int(layer["out_channels"]))
        for role, name in names.items():
            arr = tensors[name]
            params += int(arr.size) if not role.endswith("_scale") else 0
            item = 1 if np.dtype(arr.dtype) == np.int8 else 4
            if (
                role in ("W", "R", "W_in", "W_data", "table")
                or role.endswith("_scale")
                or role.startswith("W_ind")
            ):
                if layer["kind"] == "embedding" and role == "table":
                    wbytes += item * int(arr.shape[-1])  # one row read per step
                    continue
                wbytes += item * int(arr.size)
            if role in ("W", "R", "W_in", "W_data") and layer["kind"] not in ("embedding",):
                flops += 2 * int(arr.size) * reuse
    return {"flops": flops, "weight_bytes": wbytes, "parameters": params}


def _float_weight_bytes(plan: dict, tensors: Mapping[str, np.ndarray]) -> int:
    """Weight bytes per step when every matrix is float32 (the baselines run dequantized weights)."""
    f32 = {k: (v.astype(np.float32) if v.dtype == np.int8 else v) for k, v in tensors.items()}
    for layer in _layers(plan):
        for role, name in layer["tensors"].items():
            if role.endswith("_scale"):
                f32[name] = np.zeros(0, np.float32)
    return model_cost(plan, f32)["weight_bytes"]


def _layers(plan: dict) -> list[dict]:
    """The layers of a format-1 plan, or the layer views of a (validated) format-2 plan's ops."""
    if plan.get("format_version", 1) == 1:
        return plan["layers"]
    from ..plan import plan_layers

    return [layer for _, layer in plan_layers(plan)]
