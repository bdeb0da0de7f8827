"""ONNX Runtime's dynamic quantization of matrix products: ``DynamicQuantizeLinear`` + ``MatMulInteger``
+ ``Cast`` + ``Mul`` (by the data scale times the weight scale), and ``com.microsoft.DynamicQuantizeMatMul``.
Both become a float ``dense`` layer with dequantized weights; weights the source already stored as
symmetric int8 are recorded in ``cx.plan.exact_int8`` so ``--quantize int8`` keeps them exactly."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, QScale, QZero, is_identity, whole_features
from .registry import register


def _exact_int8_ok(wq: np.ndarray, zp: np.ndarray, ident: bool) -> bool:
    """Symmetric int8 weights (zero point 0, no -128) whose input features reach the layer unpermuted."""
    return wq.dtype == np.int8 and bool(np.all(zp == 0)) and wq.min() >= -127 and ident


@register("DynamicQuantizeLinear")
def dynamic_quantize_linear(cx, node, vals, at):
    v = vals[0]
    if not isinstance(v, Data) or v.quant is not None:
        raise CompileError(f"{where(node)}: DynamicQuantizeLinear of an unsupported value")
    q = Data(v.axes, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, "q", v.fin)
    return [q, QScale(), QZero()]


@register("MatMulInteger")
def matmul_integer(cx, node, vals, at):
    a, b = vals[0], vals[1]
    azp = vals[2] if len(vals) > 2 else None
    bzp = vals[3] if len(vals) > 3 else None
    if not (isinstance(a, Data) and a.quant == "q" and isinstance(b, Const)):
        raise CompileError(f"{where(node)}: only DynamicQuantizeLinear(data) x constant is supported")
    if azp is not None and not isinstance(azp, QZero):
        raise CompileError(f"{where(node)}: the data zero point must come from DynamicQuantizeLinear")
    wq = np.asarray(b.arr)
    zp = np.zeros(1) if bzp is None else np.asarray(bzp.arr, np.float64)
    if wq.ndim != 2:
        raise CompileError(f"{where(node)}: the quantized weight must be a matrix")
    w = wq.astype(np.float64) - zp.reshape(1, -1) if zp.size > 1 else wq.astype(np.float64) - zp.ravel()[0]
    v = Data(a.axes, a.perm, a.bad, a.pos, a.last, a.step, a.tokens, a.why, None, a.fin)
    n = whole_features(v, node)
    if w.shape[0] != n:
        raise CompileError(f"{where(node)}: weight {w.shape} does not match {n} features")
    # the source's int8 values stay exact only if the input features reach the layer unpermuted
    ident = is_identity(v.perm, cx.plan.value_size(v.pos)) and not v.bad.any()
    out = cx.plan.dense(where(node), v, w.T, None, fold_affine=False)
    cx.pending_q[out.pos] = (cx.plan.layers[-1], wq, zp, ident)
    out.quant = "int"
    return out


def apply_qscale(cx, node, v: Data, s: QScale) -> Data:
    """``Mul`` of the unscaled MatMulInteger result by its scale: scales the dense layer's rows."""
    plan = cx.plan
    pending = cx.pending_q.pop(v.pos, None)
    if pending is None or pending[0] is not plan.layers[v.pos - 1]:
        raise CompileError(f"{where(node)}: the quantized MatMul result is not a MatMulInteger's own layer")
    layer, wq, zp, ident = pending
    coef = np.asarray(s.coef, np.float64).reshape(-1)
    o = layer["output_size"]
    if coef.size not in (1, o):
        raise CompileError(f"{where(node)}: weight scale of size {coef.size} for {o} outputs")
    coef = np.broadcast_to(coef, (o,))
    wn = layer["tensors"]["W"]
    plan.tensors[wn] = (plan.tensors[wn].astype(np.float64) * coef[:, None]).astype(np.float32)
    if _exact_int8_ok(wq, zp, ident):
        q = np.ascontiguousarray(wq.T)
        if q.shape == plan.tensors[wn].shape:
            plan.exact_int8[wn] = (q, coef.astype(np.float32))
    return Data(v.axes, v.perm, v.bad, v.pos, v.last, v.step)


@register("DynamicQuantizeMatMul")
def dynamic_quantize_matmul(cx, node, vals, at):
    a, b, bs = vals[0], vals[1], vals[2]
    bzp = vals[3] if len(vals) > 3 else None
    bias = vals[4] if len(vals) > 4 else None
    if not (isinstance(a, Data) and isinstance(b, Const) and isinstance(bs, Const)):
        raise CompileError(f"{where(node)}: only DynamicQuantizeMatMul(data, constant, ...) is supported")
    wq = np.asarray(b.arr)
    zp = np.zeros(1) if bzp is None else np.asarray(bzp.arr, np.float64).reshape(-1)
    sc = np.asarray(bs.arr, np.float64).reshape(-1)
    w = (wq.astype(np.float64) - zp.reshape(1, -1)) * sc.reshape(1, -1)
    n = whole_features(a, node)
    if w.shape[0] != n:
        raise CompileError(f"{where(node)}: weight {w.shape} does not match {n} features")
    bv = None if bias is None else np.asarray(bias.arr, np.float64)
    ident = is_identity(a.perm, cx.plan.tip_size()) and not a.bad.any()
    out = cx.plan.dense(where(node), a, w.T, bv, fold_affine=False)
    if _exact_int8_ok(wq, zp, ident):
        cx.plan.exact_int8[cx.plan.layers[-1]["tensors"]["W"]] = (
            np.ascontiguousarray(wq.T),
            np.broadcast_to(sc, (w.shape[1],)).astype(np.float32),
        )
    return out
