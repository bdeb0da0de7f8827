"""Extrema on the data: ``Max``/``Min`` (variadic, data or constant operands), ``Clip`` and
``ReduceMax``/``ReduceMin`` over feature axes, all as ``binary`` ``max``/``min`` layers (exact; NaN
propagates as in ONNX Runtime):

* ``Max(a, b, c, ...)`` folds pairwise; a constant operand becomes a plan value (:func:`.logic.const_value`);
* ``Clip(x, min, max)`` (bounds: constant inputs, opset ≥ 11, or the ``min``/``max`` attributes before it;
  a missing bound is no bound) is ``Min(Max(x, min), max)``;
* ``ReduceMax``/``ReduceMin`` is a halving tree over the reduced positions: each level takes the extreme
  of the first ⌈n/2⌉ and the last ⌈n/2⌉ of them (they overlap by one when n is odd, which the max of a
  set does not mind), so n positions take ⌈log₂ n⌉ layers.
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, Sym, feat_index, select
from .logic import _any_data, _operand
from .math import data_binary, reduce_axes
from .registry import register


@register("Max", "Min")
def max_min(cx, node, vals, at):
    vals = [v for v in vals if v is not None]
    if not vals:
        raise CompileError(f"{where(node)}: {node.op_type} of no operands")
    _any_data(node, vals)
    op = node.op_type.lower()
    if len(vals) == 1:
        return vals[0]
    acc = _operand(cx, node, vals[0])
    for v in vals[1:]:
        acc = data_binary(cx, node, acc, _operand(cx, node, v), op)
    return acc


def _bound(node, v, name: str) -> float | None:
    if v is None:
        return None
    if not isinstance(v, Const) or np.asarray(v.arr).size != 1:
        raise CompileError(f"{where(node)}: Clip's {name} must be a constant scalar")
    b = float(np.asarray(v.arr, np.float64).reshape(()))
    return None if np.isinf(b) and (b < 0) == (name == "min") else b


@register("Clip")
def clip(cx, node, vals, at):
    vals = list(vals) + [None] * (3 - len(vals))
    x = vals[0]
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: Clip of a value that does not depend on the input")
    if cx.opset.get("", 13) < 11:
        lo = _bound(node, Const(np.float32(at["min"])) if "min" in at else None, "min")
        hi = _bound(node, Const(np.float32(at["max"])) if "max" in at else None, "max")
    else:
        lo, hi = _bound(node, vals[1], "min"), _bound(node, vals[2], "max")
    if lo is not None and hi is not None and lo > hi:  # ONNX: every output is max
        lo = hi
    for b, op in ((lo, "max"), (hi, "min")):
        if b is not None:
            x = data_binary(cx, node, x, _operand(cx, node, Const(np.float32(b))), op)
    return x


@register("ReduceMax", "ReduceMin")
def reduce_extreme(cx, node, vals, at):
    v = vals[0]
    spec = reduce_axes(node, vals, at)
    if spec is None:
        return v
    axes, out_axes = spec
    idx, fpos = feat_index(v)
    red = [fpos.index(a) for a in axes]
    kept = [k for k in range(idx.ndim) if k not in red]
    m = int(np.prod([idx.shape[k] for k in kept], dtype=np.int64))
    cur = idx.transpose(kept + red).reshape(m, -1)  # [kept positions, reduced positions]
    syms = [d for d in v.axes if isinstance(d, Sym)]
    op = "max" if node.op_type == "ReduceMax" else "min"
    while cur.shape[1] > 1:
        n = cur.shape[1]
        c = -(-n // 2)
        a = select(v, cur[:, :c], [*syms, m, c])
        b = select(v, cur[:, n - c :], [*syms, m, c])
        v = data_binary(cx, node, a, b, op)
        cur = np.arange(m * c).reshape(m, c)
    return select(v, cur[:, 0], out_axes)
