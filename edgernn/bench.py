"""``edgernn bench``: latency, throughput, start-up and memory of edgernn next to ONNX Runtime and PyTorch.

The harness is numpy-only; the baselines (``edgernn.baselines``) import onnx/onnxruntime/torch inside
functions, only when those backends are asked for and installed. Also home of :func:`synthetic`, the
random-weight models the benchmark suite and the tests of ``edgernn bench`` use.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

from .artifact import QUANTIZABLE

# ------------------------------------------------------------------------------------- model factory


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

    w ~= q * scale with scale = max|row| / 127 (1 for an all-zero row), q = round(w / scale) in [-127, 127];
    CSR reservoir values get one scale per reservoir row. Returns a new ``(plan, tensors)``.
    """
    import copy

    plan = copy.deepcopy(plan)
    out = dict(tensors)
    for layer in plan["layers"]:
        for role in QUANTIZABLE.get(layer["kind"], ()):
            name = layer["tensors"].get(role)
            if name is None:
                continue
            w = np.asarray(tensors[name], dtype=np.float32)
            if role == "W_data":
                ptr = np.asarray(tensors[layer["tensors"]["W_indptr"]], dtype=np.int64)
                rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
                amax = np.zeros(len(ptr) - 1, np.float32)
                np.maximum.at(amax, rows, np.abs(w))
                scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
                q = np.clip(np.rint(w / scale[rows]), -127, 127).astype(np.int8)
            else:
                amax = np.max(np.abs(w), axis=-1)
                scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
                q = np.clip(np.rint(w / scale[..., None]), -127, 127).astype(np.int8)
            out[name] = q
            out[name + "_scale"] = scale
            layer["tensors"][role + "_scale"] = name + "_scale"
    plan["quantization"] = "int8"
    return plan, out
