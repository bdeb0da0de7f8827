"""Elementwise arithmetic with a constant: ``Add``, ``Sub``, ``Mul``, ``Div`` of the data and a constant
that is per-feature (constant along the batch/time axes) become an affine map, folded into the
neighbouring dense/recurrent layer. ``Mul`` also applies the weight scale of ORT's dynamic quantization
(:mod:`.quantized`)."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, QScale, ShapeVal, Sym, shapeval
from .quantized import apply_qscale
from .registry import register


def _feature_vector(v: Data, c: np.ndarray, node) -> np.ndarray:
    """A constant broadcast against ``v``: its per-feature values in the value's current order."""
    c = np.asarray(c)
    r = len(v.axes)
    if c.ndim > r:
        if np.prod(c.shape[: c.ndim - r]) != 1:
            raise CompileError(f"{where(node)}: constant of shape {c.shape} broadcasts beyond the data")
        c = c.reshape(c.shape[c.ndim - r :])
    c = c.reshape((1,) * (r - c.ndim) + c.shape)
    for k, d in enumerate(v.axes):
        if isinstance(d, Sym) and c.shape[k] != 1:
            raise CompileError(f"{where(node)}: constant varies along the batch/time axis {k}")
    sub = c[tuple(0 if isinstance(d, Sym) else slice(None) for d in v.axes)]
    fshape = [d for d in v.axes if not isinstance(d, Sym)]
    try:
        return np.broadcast_to(sub, fshape).reshape(-1).astype(np.float64)
    except ValueError:
        raise CompileError(
            f"{where(node)}: constant of shape {c.shape} does not broadcast to {v.axes}"
        ) from None


def _binary(cx, node, vals, op):
    a, b = vals
    if isinstance(a, Data) and a.quant == "int" and op == "Mul" and isinstance(b, QScale):
        return apply_qscale(cx, node, a, b)
    if isinstance(b, Data) and b.quant == "int" and op == "Mul" and isinstance(a, QScale):
        return apply_qscale(cx, node, b, a)
    if isinstance(a, QScale) and isinstance(b, Const) and op == "Mul":
        return QScale(a.coef * np.asarray(b.arr, np.float64))
    if isinstance(b, QScale) and isinstance(a, Const) and op == "Mul":
        return QScale(b.coef * np.asarray(a.arr, np.float64))
    if isinstance(a, Data) and isinstance(b, Const):
        v, c, left = a, b.arr, False
    elif isinstance(b, Data) and isinstance(a, Const):
        v, c, left = b, a.arr, True
    elif isinstance(a, Data) and isinstance(b, Data):
        from .math import data_binary

        return data_binary(cx, node, a, b, op.lower())
    else:
        raise CompileError(f"{where(node)}: {op} of these operands is not supported")
    if v.quant is not None:
        raise CompileError(f"{where(node)}: unexpected use of a dynamically quantized value")
    vec = _feature_vector(v, c, node)
    one, zero = np.ones_like(vec), np.zeros_like(vec)
    w = where(node)
    if op == "Add":
        return cx.plan.affine(w, v, one, vec)
    if op == "Sub":
        return cx.plan.affine(w, v, -one, vec) if left else cx.plan.affine(w, v, one, -vec)
    if op == "Mul":
        return cx.plan.affine(w, v, vec, zero)
    # Div
    if left:
        raise CompileError(f"{w}: constant / data is not supported")
    return cx.plan.affine(w, v, 1.0 / vec, zero)


@register("Add")
def add(cx, node, vals, at):
    a, b = vals
    if isinstance(a, (ShapeVal, Const)) and isinstance(b, (ShapeVal, Const)):
        raise CompileError(f"{where(node)}: arithmetic on symbolic shapes")
    return _binary(cx, node, vals, "Add")


@register("Mul")
def mul(cx, node, vals, at):
    a, b = vals
    if isinstance(a, (ShapeVal, Const)) and isinstance(b, (ShapeVal, Const)):
        return shapeval(np.asarray(a.arr, dtype=object) * np.asarray(b.arr, dtype=object))
    return _binary(cx, node, vals, "Mul")


@register("Sub", "Div")
def sub_div(cx, node, vals, at):
    return _binary(cx, node, vals, node.op_type)
