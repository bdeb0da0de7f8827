"""What every baseline shares: the plan check (:class:`Unsupported` for what a baseline cannot express)
and the float32 weights (:func:`dequantized`: int8 ``q * scale`` per output row, fp16 widened, CSR made
dense). numpy only."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...errors import EdgeRNNError


class Unsupported(EdgeRNNError):
    """The plan has a layer this baseline cannot express; the message names the layer and why."""


# ------------------------------------------------------------------------------------------ weights


def _f32(tensors: Mapping[str, np.ndarray], layer: dict, role: str) -> np.ndarray | None:
    """The float32 value of a role: int8 ``q * scale`` per output row, fp16 widened; None when absent."""
    name = layer["tensors"].get(role)
    if name is None:
        return None
    arr = np.asarray(tensors[name])
    if arr.dtype == np.int8:
        scale = np.asarray(tensors[layer["tensors"][role + "_scale"]], dtype=np.float32)
        if role == "W_data":  # CSR values: one scale per reservoir row
            ptr = np.asarray(tensors[layer["tensors"]["W_indptr"]], dtype=np.int64)
            scale = np.repeat(scale, np.diff(ptr))
            return arr.astype(np.float32) * scale
        return arr.astype(np.float32) * scale[..., None]
    return arr.astype(np.float32)


def dequantized(layer: dict, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every role of ``layer`` as float32 (int8 dequantized, fp16 widened; a CSR reservoir made dense, ``W``).

    Returns role -> array in the ONNX layouts of ``docs/ARTIFACT.md`` (e.g. LSTM ``W`` [D, 4H, I]).
    """
    out: dict[str, np.ndarray] = {}
    for role in layer["tensors"]:
        if role.endswith("_scale") or role in ("W_indices", "W_indptr", "W_data"):
            continue
        out[role] = _f32(tensors, layer, role)
    if layer["kind"] == "esn" and layer.get("sparse"):
        n = layer["reservoir_size"]
        data = _f32(tensors, layer, "W_data")
        ind = np.asarray(tensors[layer["tensors"]["W_indices"]], dtype=np.int64)
        ptr = np.asarray(tensors[layer["tensors"]["W_indptr"]], dtype=np.int64)
        w = np.zeros((n, n), np.float32)
        rows = np.repeat(np.arange(n), np.diff(ptr))
        np.add.at(w, (rows, ind), data)
        out["W"] = w
    return out


def _check_recurrent(layer: dict, torch: bool) -> None:
    kind, name = layer["kind"], layer["name"]
    if layer["direction"] != "forward":
        raise Unsupported(
            f"layer {name!r}: direction {layer['direction']!r} (streaming baselines are forward)"
        )
    std = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"], "rnn": None}[kind]
    if torch:
        if std is not None and layer["activations"] != std:
            raise Unsupported(f"layer {name!r}: torch cells only have the default activations")
        if kind == "rnn" and layer["activations"][0] not in ("tanh", "relu"):
            raise Unsupported(f"layer {name!r}: torch RNN cells are tanh or relu")
        if layer.get("clip") is not None:
            raise Unsupported(f"layer {name!r}: torch cells have no clip")
        if kind == "lstm" and ("P" in layer["tensors"] or layer.get("input_forget")):
            raise Unsupported(f"layer {name!r}: torch LSTM has no peepholes / input_forget")
        if kind == "gru" and layer.get("linear_before_reset") != 1:
            raise Unsupported(f"layer {name!r}: torch GRU is linear_before_reset = 1 only")


SUPPORTED = ("normalize", "affine", "activation", "rnn", "lstm", "gru", "esn", "dense")


def _check_plan(plan: dict, torch: bool) -> None:
    if plan["input"].get("kind", "features") != "features":
        raise Unsupported("token inputs are not supported by the baselines")
    for layer in plan["layers"]:
        if layer["kind"] not in SUPPORTED:
            raise Unsupported(f"layer {layer['name']!r}: kind {layer['kind']!r} has no baseline")
        if layer["kind"] in ("rnn", "lstm", "gru"):
            _check_recurrent(layer, torch)
