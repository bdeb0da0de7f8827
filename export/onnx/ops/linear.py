"""Matrix ops: ``MatMul`` (data @ constant matrix) and ``Gemm`` (data, constant, constant) become
``dense`` layers (a preceding affine op folds into them); ``MatMul`` of two data values becomes a
``matmul`` op (``kernels/ops/matmul.py``)."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, Sym, whole_features
from .registry import register


def _data_matmul(cx, node, a: Data, b: Data) -> Data:
    """``a @ b`` of two data values: the last two axes of each are the matrices ([.., M, K] @ [.., K, N],
    feature axes); the leading axes are the same on both (symbolic batch/time axes, or equal sizes)."""
    if a.tokens or b.tokens or a.quant is not None or b.quant is not None:
        raise CompileError(f"{where(node)}: MatMul of token ids or of a quantized value")
    if len(a.axes) < 2 or len(b.axes) < 2:
        raise CompileError(f"{where(node)}: MatMul of two data tensors needs matrices (rank 2 or more)")
    if any(isinstance(d, Sym) for d in a.axes[-2:] + b.axes[-2:]):
        raise CompileError(f"{where(node)}: MatMul over a batch or time axis ({a.axes} @ {b.axes})")
    (m, k), (k2, n) = a.axes[-2:], b.axes[-2:]
    if k != k2:
        raise CompileError(f"{where(node)}: shapes {a.axes} and {b.axes} do not multiply")
    r = max(len(a.axes), len(b.axes))
    la = [1] * (r - len(a.axes)) + list(a.axes[:-2])
    lb = [1] * (r - len(b.axes)) + list(b.axes[:-2])
    lead = []
    for x, y in zip(la, lb, strict=True):
        if x is y or (not isinstance(x, Sym) and not isinstance(y, Sym) and x == y):
            lead.append(x)
        else:
            raise CompileError(
                f"{where(node)}: MatMul of {a.axes} and {b.axes}: the leading axes must be the same on both"
            )
    nb = int(np.prod([d for d in lead if not isinstance(d, Sym)], dtype=np.int64))
    plan = cx.plan
    pa = plan.value_input(a, where(node))
    pb = plan.value_input(b, where(node))
    layer = {"kind": "matmul", "name": plan.name("matmul"), "input_size": nb * m * k}
    layer.update(output_size=nb * m * n, batch=nb, m=int(m), k=int(k), n=int(n))
    plan.add_layer(layer, {}, inputs=[pa, pb])
    size = nb * m * n
    last, step = a.last or b.last, a.step or b.step
    return Data(lead + [m, n], np.arange(size), np.zeros(size, bool), len(plan.layers), last, step)


@register("MatMul")
def matmul(cx, node, vals, at):
    a, b = vals
    if isinstance(a, Data) and isinstance(b, Data):
        return _data_matmul(cx, node, a, b)
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
