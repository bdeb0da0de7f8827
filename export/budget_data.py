"""The data the accuracy budget measures on, and how long a model remembers (``export/budget.py``).

See :mod:`edgernn.export.budget` (its step 1) for the rules: calibration data capped at
:data:`MAX_STEPS` evenly spaced steps, else the example input plus :data:`SYNTHETIC_SEQUENCES`
Gaussian sequences like it; an ESN's memory ``ln(MEMORY_DECAY) / ln(1 − a·(1 − ρ))`` steps.
"""

from __future__ import annotations

import math
from collections.abc import Mapping

import numpy as np

from .quantize import check_data

__all__ = ["MAX_MEMORY", "MAX_STEPS", "MEMORY_DECAY", "SYNTHETIC_SEQUENCES", "memory_steps"]

#: an ESN's memory is the steps until an error decays below this fraction of itself
MEMORY_DECAY = 1e-3
#: longest memory measured (steps); also the memory of a reservoir with spectral radius >= 1
MAX_MEMORY = 2000
#: at most this many time steps of data are measured (evenly spaced whole sequences, labels with them)
MAX_STEPS = 5_000
#: synthetic sequences added when there is no calibration data
SYNTHETIC_SEQUENCES = 8


def _spectral_radius(layer: Mapping, tensors: Mapping[str, np.ndarray]) -> float:
    roles = layer["tensors"]
    n = layer["reservoir_size"]
    if "W" in roles:
        W = np.asarray(tensors[roles["W"]], np.float64)
    else:
        W = np.zeros((n, n))
        ptr = np.asarray(tensors[roles["W_indptr"]], np.int64)
        rows = np.repeat(np.arange(n), np.diff(ptr))
        np.add.at(W, (rows, np.asarray(tensors[roles["W_indices"]], np.int64)), tensors[roles["W_data"]])
    if n > 2048:  # power iteration on WᵀW: an upper bound (the largest singular value)
        v = np.random.default_rng(0).standard_normal(n)
        for _ in range(100):
            v = W.T @ (W @ v)
            v /= np.linalg.norm(v) or 1.0
        return float(np.linalg.norm(W @ v))
    return float(np.max(np.abs(np.linalg.eigvals(W)))) if n else 0.0


def memory_steps(plan: Mapping, tensors: Mapping[str, np.ndarray]) -> int:
    """Time steps a float32 plan remembers an error for: the largest ESN memory (``ln(MEMORY_DECAY) /
    ln(1 − a·(1 − ρ))``, capped at :data:`MAX_MEMORY`), 0 when the plan has no reservoir."""
    steps = 0
    from ..artifact import plan_layers

    for _, layer in plan_layers(plan):
        if layer["kind"] != "esn":
            continue
        a, rho = float(layer["leak_rate"]), _spectral_radius(layer, tensors)
        c = 1.0 - a * (1.0 - rho)
        m = MAX_MEMORY if c >= 1.0 else (1 if c <= 0.0 else math.ceil(math.log(MEMORY_DECAY) / math.log(c)))
        steps = max(steps, min(MAX_MEMORY, m))
    return steps


def _measure_data(
    plan: Mapping, data, example, memory: int, seed: int = 0
) -> tuple[list[np.ndarray], dict, np.ndarray | None]:
    """The inputs every measurement runs: [main data (B, T, I), optional memory probe (1, L, I)]."""
    tokens = plan["input"].get("kind") == "tokens"
    keep = None
    if data is not None:
        x = check_data(plan, data)
        if x.shape[0] * x.shape[1] > MAX_STEPS:  # evenly spaced whole sequences (one long one: its start)
            n = max(1, MAX_STEPS // x.shape[1])
            keep = np.unique(np.linspace(0, x.shape[0] - 1, n).round().astype(int))
            x = x[keep, :MAX_STEPS]
        source = "calibration"
        xs = [x]
    else:
        rng = np.random.default_rng(seed)
        ex = check_data(plan, example, "example input") if example is not None else None
        steps = max(64, memory, ex.shape[1] if ex is not None else 0)
        if tokens:
            syn = rng.integers(0, plan["input"]["vocab_size"], (SYNTHETIC_SEQUENCES, steps, 1))
            syn = syn.astype(np.float32)
        else:
            flat = ex.reshape(-1, ex.shape[-1]) if ex is not None else None
            mean = flat.mean(0) if flat is not None else 0.0
            std = flat.std(0) + 0.1 if flat is not None else 1.0
            syn = mean + std * rng.standard_normal((SYNTHETIC_SEQUENCES, steps, plan["input"]["size"]))
            syn = syn.astype(np.float32)
        xs = [ex, syn] if ex is not None else [syn]
        source = "example + synthetic" if ex is not None else "synthetic"
        x = xs[0]
    info = {"source": source, "sequences": int(x.shape[0]), "steps": int(x.shape[1]), "memory_steps": memory}
    if data is not None and memory > x.shape[1]:
        joined = x.reshape(-1, x.shape[-1])
        joined = np.tile(joined, (math.ceil(memory / len(joined)), 1))[: max(memory, x.shape[1])]
        xs.append(joined[None])
        info["memory_probe_steps"] = int(len(joined))
    if keep is not None:
        info["of_sequences"] = int(np.asarray(data).shape[0])
    return xs, info, keep


def measurement(
    plan: Mapping, tensors: Mapping[str, np.ndarray], data, example, labels
) -> tuple[list[np.ndarray], dict, np.ndarray | None]:
    """``(xs, info, labels)``: the inputs every budget measurement runs (:func:`_measure_data`, over the
    model's memory :func:`memory_steps`) and the labels of the sequences kept of ``data``."""
    xs, info, keep = _measure_data(plan, data, example, memory_steps(plan, tensors))
    if labels is not None and keep is not None:
        lab = np.asarray(labels)
        if lab.ndim >= 1 and lab.shape[0] == info["of_sequences"]:
            labels = (
                lab[keep]
                if lab.ndim == 1 or plan["output"]["sequence"] == "many_to_one"
                else lab[keep, :MAX_STEPS]
            )
    return xs, info, labels
