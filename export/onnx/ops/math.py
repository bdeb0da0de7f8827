"""Elementwise math between data values and reductions over feature axes:

* ``Add``/``Sub``/``Mul``/``Div``/``Pow`` of two data tensors (with ONNX broadcasting, materialized as
  index maps; ``Max``/``Min``: :mod:`.extrema`) become a ``binary`` layer (the constant cases stay
  affine maps: :mod:`.elementwise`);
* ``Sqrt``, ``Abs``, ``Neg``, ``Exp``, ``Log``, ``Reciprocal`` and ``Pow`` by the constant 2 (or ½) become
  a ``unary`` layer;
* ``ReduceMean``/``ReduceSum`` over feature axes are linear: a ``dense`` layer (no layer at all when the
  reduced axes have size 1).
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, Sym, feat_index, ints, select
from .registry import register

BINARY = {"Add": "add", "Sub": "sub", "Mul": "mul", "Div": "div", "Pow": "pow", "Max": "max", "Min": "min"}
UNARY = {"Sqrt": "sqrt", "Abs": "abs", "Neg": "neg", "Exp": "exp", "Log": "log", "Reciprocal": "reciprocal"}


def _broadcast(node, a: Data, b: Data) -> list:
    r = max(len(a.axes), len(b.axes))
    A = [1] * (r - len(a.axes)) + list(a.axes)
    B = [1] * (r - len(b.axes)) + list(b.axes)
    out = []
    for x, y in zip(A, B, strict=True):
        if isinstance(x, Sym) or isinstance(y, Sym):
            if isinstance(x, Sym) and isinstance(y, Sym):
                if x is not y:
                    raise CompileError(f"{where(node)}: operands with different batch/time axes {x} and {y}")
                out.append(x)
                continue
            s, other = (x, y) if isinstance(x, Sym) else (y, x)
            if other != 1:
                raise CompileError(f"{where(node)}: broadcasts a feature axis of {other} along {s}")
            out.append(s)
        elif x == y or 1 in (x, y):
            out.append(max(x, y))
        else:
            raise CompileError(f"{where(node)}: shapes {a.axes} and {b.axes} do not broadcast")
    return out


def _expand(v: Data, out: list) -> Data:
    """``v`` broadcast to axes ``out`` (an index map, no layer)."""
    r = len(out)
    padded = [1] * (r - len(v.axes)) + list(v.axes)
    idx, _ = feat_index(v)
    idx = idx.reshape([1 if isinstance(d, Sym) else d for d in padded])
    keep = [k for k, d in enumerate(out) if not isinstance(d, Sym)]
    idx = idx.reshape([idx.shape[k] for k in keep]) if keep else idx.reshape(())
    return select(v, np.broadcast_to(idx, [out[k] for k in keep]), out)


def data_binary(cx, node, a: Data, b: Data, op: str) -> Data:
    """``a op b`` of two data values (any broadcastable axes) as a ``binary`` layer."""
    out = _broadcast(node, a, b)
    plan = cx.plan
    pa = plan.value_input(_expand(a, out), where(node))
    pb = plan.value_input(_expand(b, out), where(node))
    n = plan.value_size(pa)
    layer = {"kind": "binary", "name": plan.name("binary"), "input_size": n, "output_size": n, "op": op}
    plan.add_layer(layer, {}, inputs=[pa, pb])
    return Data(out, np.arange(n), np.zeros(n, bool), len(plan.layers), a.last or b.last, a.step or b.step)


def data_unary(cx, node, v: Data, func: str) -> Data:
    """``func(v)`` as a ``unary`` layer; a value that is a permutation of a whole earlier value is
    computed in that value's order (no copy) and keeps its index map."""
    plan = cx.plan
    if v.quant is not None or v.tokens:
        raise CompileError(f"{where(node)}: {node.op_type} of a quantized value or of token ids")
    size = plan.value_size(v.pos)
    if len(v.perm) == size and not v.bad.any() and len(np.unique(v.perm)) == size:
        pos, perm = v.pos, v.perm
    else:
        pos, perm = plan.value_input(v, where(node)), np.arange(len(v.perm))
    n = plan.value_size(pos)
    layer = {"kind": "unary", "name": plan.name("unary"), "input_size": n, "output_size": n, "func": func}
    plan.add_layer(layer, {}, inputs=[pos])
    return Data(list(v.axes), perm, np.zeros(len(perm), bool), len(plan.layers), v.last, v.step)


@register("Pow")
def pow_op(cx, node, vals, at):
    a, b = vals
    if isinstance(a, Data) and isinstance(b, Data):
        return data_binary(cx, node, a, b, "pow")
    if isinstance(a, Data) and isinstance(b, Const):
        e = np.unique(np.asarray(b.arr, np.float64))
        if e.size == 1 and e[0] == 1.0:
            return a
        if e.size == 1 and e[0] in (2.0, 0.5):
            return data_unary(cx, node, a, "square" if e[0] == 2.0 else "sqrt")
        raise CompileError(f"{where(node)}: Pow by the constant {b.arr!r} (1, 2 and 0.5 are compiled)")
    raise CompileError(f"{where(node)}: Pow of a constant by the data is not supported")


@register(*UNARY)
def unary_op(cx, node, vals, at):
    v = vals[0]
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: {node.op_type} of a value that does not depend on the input")
    return data_unary(cx, node, v, UNARY[node.op_type])


def reduce_axes(node, vals, at) -> tuple[list[int], list] | None:
    """(reduced axes, output axes) of a Reduce* node over the data ``vals[0]`` (axes from the input or the
    attribute, keepdims); None when it reduces nothing (``noop_with_empty_axes``). Refuses a reduction
    over the batch/time axis."""
    v = vals[0]
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: {node.op_type} of a value that does not depend on the input")
    r = len(v.axes)
    axes = ints(vals[1], node, "axes") if len(vals) > 1 and vals[1] is not None else None
    if axes is None:
        axes = np.asarray(at["axes"], np.int64) if "axes" in at else None
    if axes is None or axes.size == 0:
        if at.get("noop_with_empty_axes", 0):
            return None
        axes = np.arange(r)
    axes = sorted({int(a) % r for a in axes.ravel()})
    keep = int(at.get("keepdims", 1))
    for a in axes:
        if isinstance(v.axes[a], Sym):
            raise CompileError(f"{where(node)}: {node.op_type} over the batch/time axis {a}")
    out_axes = (
        [1 if k in axes else d for k, d in enumerate(v.axes)]
        if keep
        else [d for k, d in enumerate(v.axes) if k not in axes]
    )
    return axes, out_axes


@register("ReduceMean", "ReduceSum")
def reduce_op(cx, node, vals, at):
    v = vals[0]
    spec = reduce_axes(node, vals, at)
    if spec is None:
        return v
    axes, out_axes = spec
    idx, fpos = feat_index(v)
    if all(v.axes[a] == 1 for a in axes):
        return select(v, idx, out_axes)
    count = int(np.prod([v.axes[a] for a in axes]))
    red = tuple(fpos.index(a) for a in axes)
    osh = [1 if k in red else s for k, s in enumerate(idx.shape)]
    oidx = np.arange(int(np.prod(osh))).reshape(osh)
    target = np.broadcast_to(oidx, idx.shape).ravel()
    w = np.zeros((oidx.size, idx.size))
    w[target, idx.ravel()] = 1.0 / count if node.op_type == "ReduceMean" else 1.0
    res = cx.plan.dense(where(node), v, w, None)
    return Data(out_axes, res.perm, res.bad, res.pos, v.last, v.step)
