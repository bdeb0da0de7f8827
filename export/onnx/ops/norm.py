"""Normalization at inference: ``BatchNormalization`` is a per-channel affine map (channel axis 1),
y = (x − mean) / √(var + ε) · scale + B, emitted through :meth:`~..plan.PlanBuilder.affine`, so it folds
into the neighbouring ``dense``/``conv1d`` layer before it or the matrix layer after it
(:mod:`..passes.fuse`). ``LayerNormalization`` becomes a ``layernorm`` layer (its decomposed form,
ReduceMean/Sub/Pow/Sqrt/Div, compiles op by op through :mod:`.math`)."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data
from .elementwise import _feature_vector
from .registry import register


@register("BatchNormalization")
def batch_norm(cx, node, vals, at):
    x = vals[0]
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: BatchNormalization of a value that does not depend on the input")
    if at.get("training_mode", 0):
        raise CompileError(f"{where(node)}: training_mode=1 (batch statistics) is not an inference op")
    if len(node.output) > 1 and any(node.output[1:]):
        raise CompileError(f"{where(node)}: running mean/var outputs are training-only")
    params = vals[1:5]
    if len(params) != 4 or not all(isinstance(p, Const) for p in params):
        raise CompileError(f"{where(node)}: scale, B, mean and var must be constant")
    sc, b, mean, var = (np.asarray(p.arr, np.float64).reshape(-1) for p in params)
    if len(x.axes) < 2:
        raise CompileError(f"{where(node)}: needs an input [N, C, ...]")
    c = x.axes[1]
    if not isinstance(c, (int, np.integer)) or not all(len(p) == c for p in (sc, b, mean, var)):
        raise CompileError(f"{where(node)}: parameters of {len(sc)} channels for a channel axis of {c}")
    eps = float(at.get("epsilon", 1e-5))
    mul = sc / np.sqrt(var + eps)
    add = b - mean * mul
    shape = [1, int(c)] + [1] * (len(x.axes) - 2)
    w = where(node)
    return cx.plan.affine(
        w, x, _feature_vector(x, mul.reshape(shape), node), _feature_vector(x, add.reshape(shape), node)
    )


@register("LayerNormalization")
def layer_norm(cx, node, vals, at):
    """ONNX LayerNormalization over the trailing axes from ``axis`` (feature axes): a ``layernorm``
    layer whose rows are the values of the leading axes."""
    vals = list(vals) + [None] * (3 - len(vals))
    x, sv, bv = vals[:3]
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: LayerNormalization of a value that does not depend on the input")
    if len(node.output) > 1 and any(node.output[1:]):
        raise CompileError(f"{where(node)}: the Mean / InvStdDev outputs are not compiled")
    if not isinstance(sv, Const) or (bv is not None and not isinstance(bv, Const)):
        raise CompileError(f"{where(node)}: Scale and B must be constant")
    r = len(x.axes)
    axis = int(at.get("axis", -1)) % r
    tail = x.axes[axis:]
    if any(not isinstance(d, (int, np.integer)) for d in tail):
        raise CompileError(f"{where(node)}: normalizes over the batch/time axis (axes {x.axes}, axis {axis})")
    n = int(np.prod(tail))
    scale = np.broadcast_to(np.asarray(sv.arr, np.float64), tail).reshape(-1)
    bias = None if bv is None else np.broadcast_to(np.asarray(bv.arr, np.float64), tail).reshape(-1)
    plan = cx.plan
    pos = plan.value_input(x, where(node))
    size = plan.value_size(pos)
    layer = {
        "kind": "layernorm",
        "name": plan.name("layernorm"),
        "input_size": size,
        "output_size": size,
        "size": n,
        "epsilon": float(at.get("epsilon", 1e-5)),
    }
    tensors = {"scale": scale}
    if bias is not None and np.any(bias != 0):
        tensors["bias"] = bias
    plan.add_layer(layer, tensors, inputs=[pos])
    return Data(list(x.axes), np.arange(size), np.zeros(size, bool), len(plan.layers), x.last, x.step)
