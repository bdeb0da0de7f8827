"""Comparisons, logic and ``Where`` on the data:

* ``Greater``, ``Less``, ``GreaterOrEqual``, ``LessOrEqual``, ``Equal`` between two values, data or a
  constant (ONNX broadcasting), and ``And``, ``Or`` become a ``binary`` layer whose output is 1.0 (true)
  or 0.0 (false): the plan holds booleans as float32 0/1; ``Not`` a ``unary`` ``not``;
* ``Where(cond, a, b)`` a ``where`` layer reading ``cond`` and the branches joined ``[a; b]``
  (an exact select: the branch not taken never reaches the result).

A constant operand (per feature: constant along the batch/time axes) becomes a value of the plan: a
``gather`` of zeros (index −1) shifted by an ``affine`` layer (0·1 + c = c exactly); it must be finite
(the artifact holds finite tensors only: an Inf or NaN constant is an error naming the node).
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Bcast, Const, Data, Sym
from .math import _broadcast, _expand, data_binary, data_unary
from .registry import register

COMPARE = {"Greater": "gt", "Less": "lt", "GreaterOrEqual": "ge", "LessOrEqual": "le", "Equal": "eq"}
LOGIC = {"And": "and", "Or": "or"}


def const_value(cx, node, c: np.ndarray) -> Data:
    """Constant ``c`` (ONNX shape, no batch/time axis) as a value of the plan, axes = ``c``'s shape."""
    c = np.asarray(c)
    if c.dtype == bool:
        c = c.astype(np.float32)
    if not np.issubdtype(c.dtype, np.number):
        raise CompileError(f"{where(node)}: a constant operand of type {c.dtype}")
    flat = c.astype(np.float32).reshape(-1)
    n = int(flat.size)
    if n == 0:
        raise CompileError(f"{where(node)}: an empty constant operand")
    if not np.all(np.isfinite(flat)):
        raise CompileError(
            f"{where(node)}: a constant operand holding Inf or NaN (the artifact's tensors are finite)"
        )
    plan = cx.plan
    gl = {"kind": "gather", "name": plan.name("gather"), "input_size": plan.value_size(0), "output_size": n}
    plan.add_layer(gl, {"index": np.full(n, -1.0, np.float32)}, inputs=[0])
    al = {"kind": "affine", "name": plan.name("affine"), "input_size": n, "output_size": n}
    plan.add_layer(al, {"scale": np.ones(n), "shift": flat.astype(np.float64)}, inputs=[len(plan.layers)])
    return Data(list(c.shape), np.arange(n), np.zeros(n, bool), len(plan.layers))


def _operand(cx, node, v) -> Data:
    """An operand as data: data as it is, a constant (or a constant broadcast) as a plan value."""
    if isinstance(v, Data):
        if v.quant is not None or v.tokens:
            raise CompileError(f"{where(node)}: {node.op_type} of a quantized value or of token ids")
        return v
    if isinstance(v, Const):
        return const_value(cx, node, v.arr)
    if isinstance(v, Bcast):  # size 1 on its symbolic dims: one row for every batch/time entry
        arr = np.asarray(v.arr)
        keep = [k for k, d in enumerate(v.dims) if not isinstance(d, Sym)]
        d = const_value(cx, node, arr.reshape([arr.shape[k] for k in keep]))
        return Data(list(v.dims), d.perm, d.bad, d.pos)
    raise CompileError(f"{where(node)}: {node.op_type} of an operand that is neither data nor a constant")


def _any_data(node, vals) -> None:
    if not any(isinstance(v, Data) for v in vals):
        raise CompileError(f"{where(node)}: {node.op_type} of values that do not depend on the input")


@register(*COMPARE, *LOGIC)
def compare(cx, node, vals, at):
    """``a op b`` -> a ``binary`` layer of 0/1."""
    if len(vals) != 2 or any(v is None for v in vals):
        raise CompileError(f"{where(node)}: {node.op_type} needs two operands")
    _any_data(node, vals)
    a, b = (_operand(cx, node, v) for v in vals)
    op = COMPARE.get(node.op_type) or LOGIC[node.op_type]
    return data_binary(cx, node, a, b, op)


@register("Not")
def not_op(cx, node, vals, at):
    """``Not(x)`` -> ``unary`` ``not`` (1.0 where x is 0)."""
    _any_data(node, vals)
    return data_unary(cx, node, vals[0], "not")


@register("Where")
def where_op(cx, node, vals, at):
    """``Where(cond, a, b)``: every operand broadcast to the common shape, then one ``where`` layer."""
    if len(vals) != 3 or any(v is None for v in vals):
        raise CompileError(f"{where(node)}: Where needs three operands")
    _any_data(node, vals)
    cond, a, b = (_operand(cx, node, v) for v in vals)
    out = _broadcast(node, _broadcast_data(node, cond, a), b)
    plan = cx.plan
    w = where(node)
    pc = plan.value_input(_expand(cond, out), w)
    ea, eb = _expand(a, out), _expand(b, out)
    n = plan.value_size(pc)
    pab = plan.concat([ea, eb], w)
    layer = {"kind": "where", "name": plan.name("where"), "input_size": n, "output_size": n}
    plan.add_layer(layer, {}, inputs=[pc, pab])
    last = cond.last or a.last or b.last
    step = cond.step or a.step or b.step
    return Data(out, np.arange(n), np.zeros(n, bool), len(plan.layers), last, step)


def _broadcast_data(node, a: Data, b: Data) -> Data:
    """A stand-in value with the broadcast axes of ``a`` and ``b`` (for a three-way broadcast)."""
    axes = _broadcast(node, a, b)
    n = int(np.prod([d for d in axes if not isinstance(d, Sym)], dtype=np.int64))
    return Data(axes, np.arange(n), np.zeros(n, bool), 0)
