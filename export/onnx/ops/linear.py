"""Matrix ops: ``MatMul`` (data @ constant matrix) and ``Gemm`` (data, constant, constant) become
``dense`` layers (a preceding affine op folds into them)."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, whole_features
from .registry import register


@register("MatMul")
def matmul(cx, node, vals, at):
    a, b = vals
    if not isinstance(a, Data) or not isinstance(b, Const):
        raise CompileError(f"{where(node)}: only data @ constant matrix is supported")
    if b.arr.ndim != 2:
        raise CompileError(f"{where(node)}: the constant operand must be a matrix, got shape {b.arr.shape}")
    n = whole_features(a, node)
    if b.arr.shape[0] != n:
        raise CompileError(f"{where(node)}: matrix {b.arr.shape} does not match {n} features")
    return cx.plan.dense(where(node), a, b.arr.T, None)


@register("Gemm")
def gemm(cx, node, vals, at):
    a, b = vals[0], vals[1]
    c = vals[2] if len(vals) > 2 else None
    if not isinstance(a, Data) or not isinstance(b, Const) or (c is not None and not isinstance(c, Const)):
        raise CompileError(f"{where(node)}: only Gemm(data, constant, constant) is supported")
    if at.get("transA", 0):
        raise CompileError(f"{where(node)}: transA=1 on the data is not supported")
    if len(a.axes) != 2:
        raise CompileError(f"{where(node)}: Gemm input must be 2-D, got axes {a.axes}")
    n = whole_features(a, node)
    w = b.arr.T if not at.get("transB", 0) else b.arr  # [O, I]
    if w.shape[1] != n:
        raise CompileError(f"{where(node)}: weight {b.arr.shape} does not match {n} features")
    w = w.astype(np.float64) * at.get("alpha", 1.0)
    bias = None
    if c is not None:
        carr = np.asarray(c.arr, np.float64)
        if carr.size not in (1, w.shape[0]) or (carr.ndim == 2 and carr.shape[0] != 1):
            raise CompileError(f"{where(node)}: bias of shape {carr.shape} varies over the batch")
        bias = np.broadcast_to(carr.reshape(-1), (w.shape[0],)) * at.get("beta", 1.0)
    return cx.plan.dense(where(node), a, w, bias)
