"""Random plans + tensors for tests: one builder per layer kind, and int8/fp16 conversion.

Weights are drawn at scales that keep activations in their interesting range (not saturated).
"""

from __future__ import annotations

import numpy as np

PLAN_HEAD = {"format": "ernn", "format_version": 1}


def _n(rng, shape, scale):
    return rng.normal(0.0, scale, shape).astype(np.float32)


def recurrent(rng, kind, name, i, h, direction="forward", **extra):
    """An rnn/lstm/gru layer (ONNX layout) and its tensors."""
    g = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    d = 2 if direction == "bidirectional" else 1
    s = 1.0 / np.sqrt(h)
    t = {
        f"{name}.W": _n(rng, (d, g * h, i), s),
        f"{name}.R": _n(rng, (d, g * h, h), s),
        f"{name}.B": _n(rng, (d, 2 * g * h), 0.1),
    }
    roles = {"W": f"{name}.W", "R": f"{name}.R", "B": f"{name}.B"}
    for role in ("P", "initial_h", "initial_c"):
        if extra.pop(role, False):
            shape = (d, 3 * h) if role == "P" else (d, h)
            t[f"{name}.{role}"] = _n(rng, shape, 0.3)
            roles[role] = f"{name}.{role}"
    layer = {
        "kind": kind,
        "name": name,
        "input_size": i,
        "hidden_size": h,
        "direction": direction,
        "tensors": roles,
        **extra,
    }
    return layer, t


def dense(rng, name, i, o, activation="linear", bias=True, **extra):
    t = {f"{name}.W": _n(rng, (o, i), 1.0 / np.sqrt(i))}
    roles = {"W": f"{name}.W"}
    if bias:
        t[f"{name}.b"] = _n(rng, (o,), 0.1)
        roles["b"] = f"{name}.b"
    layer = {"kind": "dense", "name": name, "input_size": i, "output_size": o, "activation": activation}
    layer.update(extra)
    layer["tensors"] = roles
    return layer, t


def esn(rng, name, i, n, sparse=False, density=0.03, leak=0.3, readout_input="state", bias=True):
    """An esn layer; ``sparse``: CSR. The default density stays below the runtime's densify threshold
    (``edgernn.kernels.ops.esn.DENSIFY_MIN_DENSITY``), so sparse cases run the sparse (SELL-8) kernels."""
    t = {f"{name}.W_in": _n(rng, (n, i), 0.5)}
    roles = {"W_in": f"{name}.W_in"}
    W = rng.normal(0, 1, (n, n)) * (rng.random((n, n)) < density)
    rho = max(np.abs(np.linalg.eigvals(W)).max(), 1e-9)
    W = (W * 0.9 / rho).astype(np.float32)
    layer = {
        "kind": "esn",
        "name": name,
        "input_size": i,
        "reservoir_size": n,
        "leak_rate": leak,
        "readout_input": readout_input,
    }
    if sparse:
        rows, cols = np.nonzero(W)
        ptr = np.zeros(n + 1, np.int32)
        np.add.at(ptr, rows + 1, 1)
        ptr = np.cumsum(ptr).astype(np.int32)
        t.update(
            {
                f"{name}.W_data": W[rows, cols].astype(np.float32),
                f"{name}.W_indices": cols.astype(np.int32),
                f"{name}.W_indptr": ptr,
            }
        )
        roles.update(
            {"W_data": f"{name}.W_data", "W_indices": f"{name}.W_indices", "W_indptr": f"{name}.W_indptr"}
        )
        layer.update(sparse=True, nnz=int(len(rows)))
    else:
        t[f"{name}.W"] = W
        roles["W"] = f"{name}.W"
    if bias:
        t[f"{name}.b"] = _n(rng, (n,), 0.1)
        roles["b"] = f"{name}.b"
    layer["tensors"] = roles
    return layer, t


def attention(rng, name, h, a):
    t = {
        f"{name}.W": _n(rng, (a, h), 1.0 / np.sqrt(h)),
        f"{name}.b": _n(rng, (a,), 0.1),
        f"{name}.v": _n(rng, (a,), 1.0),
    }
    layer = {
        "kind": "attention",
        "name": name,
        "input_size": h,
        "attention_size": a,
        "tensors": {"W": f"{name}.W", "b": f"{name}.b", "v": f"{name}.v"},
    }
    return layer, t


def model(layers_and_tensors, input_size, sequence="many_to_many", tokens=None, labels=None):
    """Assemble a plan from (layer, tensors) pairs; output size is the last layer's."""
    layers, tensors = [], {}
    for layer, t in layers_and_tensors:
        layers.append(layer)
        tensors.update(t)
    from edgernn.artifact import validate_plan

    inp = {"kind": "features", "size": input_size}
    if tokens:
        inp = {"kind": "tokens", "size": 1, "vocab_size": tokens}
    plan = {
        **PLAN_HEAD,
        "input": inp,
        "output": {"size": 0, "sequence": sequence, "labels": labels},
        "layers": layers,
    }
    plan["output"]["size"] = _chain_out(layers, input_size if not tokens else 1)
    return validate_plan(plan), tensors


def _chain_out(layers, size):
    for layer in layers:
        k = layer["kind"]
        if k in ("rnn", "lstm", "gru"):
            size = layer["hidden_size"] * (2 if layer.get("direction") == "bidirectional" else 1)
        elif k == "esn":
            n = layer["reservoir_size"]
            size = n if layer.get("readout_input", "state") == "state" else 1 + size + n
        elif k == "dense":
            size = layer["output_size"]
        elif k == "embedding":
            size = layer["output_size"]
        elif k == "onehot":
            size = layer["vocab_size"]
    return size


def quantize_int8(plan, tensors):
    """Per-row symmetric int8 of every quantizable matrix role (independent of the project's quantizer)."""
    from edgernn.artifact import QUANTIZABLE

    plan = {
        **plan,
        "quantization": "int8",
        "layers": [dict(layer, tensors=dict(layer["tensors"])) for layer in plan["layers"]],
    }
    out = dict(tensors)
    for layer in plan["layers"]:
        for role in QUANTIZABLE.get(layer["kind"], ()):
            name = layer["tensors"].get(role)
            if name is None:
                continue
            w = tensors[name].astype(np.float64)
            if role == "W_data":
                ptr = tensors[layer["tensors"]["W_indptr"]]
                rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
                amax = np.zeros(len(ptr) - 1)
                np.maximum.at(amax, rows, np.abs(w))
                scale = np.where(amax > 0, amax / 127, 1.0)
                q = np.round(w / scale[rows])
            elif layer["kind"] in ("conv1d", "tconv"):  # W [Cout, Cin/G, K]: one scale per output channel
                amax = np.abs(w).reshape(len(w), -1).max(axis=-1)
                scale = np.where(amax > 0, amax / 127, 1.0)
                q = np.round(w / scale[:, None, None])
            else:
                amax = np.abs(w).max(axis=-1)
                scale = np.where(amax > 0, amax / 127, 1.0)
                q = np.round(w / scale[..., None])
            out[name] = np.clip(q, -127, 127).astype(np.int8)
            out[name + ".scale"] = scale.astype(np.float32)
            layer["tensors"][role + "_scale"] = name + ".scale"
    return plan, out


def to_fp16(plan, tensors):
    """Every float tensor stored as float16, but a gather's index (integers: float32 in every artifact)."""
    keep = {ly["tensors"]["index"] for ly in plan.get("layers", ()) if ly["kind"] == "gather"}
    plan = {**plan, "quantization": "fp16"}
    return plan, {
        k: (v.astype(np.float16) if v.dtype == np.float32 and k not in keep else v)
        for k, v in tensors.items()
    }
