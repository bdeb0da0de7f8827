"""``binary``: y = a ∘ b elementwise between two values of the same size (ONNX ``Add``, ``Sub``, ``Mul``,
``Div``, ``Max``, ``Min``, ``Pow`` between data tensors; the comparisons ``Greater``, ``Less``,
``GreaterOrEqual``, ``LessOrEqual``, ``Equal`` and the logic ops ``And``, ``Or``; the compiler materializes
broadcasting as index maps first, a constant operand as a value). Field ``op``: ``add`` | ``sub`` | ``mul``
| ``div`` | ``max`` | ``min`` | ``pow`` | ``gt`` | ``lt`` | ``ge`` | ``le`` | ``eq`` | ``and`` | ``or``.
``max``/``min`` propagate NaN as ONNX Runtime does. A comparison or logic op writes 1.0 (true) or 0.0
(false): a comparison with NaN is false, ``and``/``or`` read any non-zero as true."""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._graph import choice
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_BINARY
NAME = "binary"
RECURRENT = False
INPUTS = 2
OPS = ("add", "sub", "mul", "div", "max", "min", "pow", "gt", "lt", "ge", "le", "eq", "and", "or")
#: the comparison ops and their Python operators
CMP = {"gt": ">", "lt": "<", "ge": ">=", "le": "<=", "eq": "=="}


def check(where: str, layer: dict, P) -> int:
    """``op`` must be one of :data:`OPS`; the output has the inputs' size."""
    choice(where, layer, "op", OPS, P)
    return layer["input_size"]


def tensor_specs(layer: dict) -> dict:
    """No tensors."""
    return {}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """No tensors to check."""


def pack(layer: dict, ctx) -> None:
    """The op code in the aux block."""
    ctx.aux([OPS.index(layer["op"])])


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def _expr(op: str, a: str, b: str) -> str:
    if op == "add":
        return f"{a} + {b}"
    if op == "sub":
        return f"{a} - {b}"
    if op == "mul":
        return f"{a} * {b}"
    if op == "div":
        return f"{a} / {b}"
    if op == "pow":
        return f"{a} ** {b}"
    if op in CMP:
        return f"(1.0 if {a} {CMP[op]} {b} else 0.0)"
    if op == "and":
        return f"(1.0 if ({a} != 0.0 and {b} != 0.0) else 0.0)"
    if op == "or":
        return f"(1.0 if ({a} != 0.0 or {b} != 0.0) else 0.0)"
    cmp = ">" if op == "max" else "<"
    return f"({a} if ({a} {cmp} {b} or {a} != {a}) else {b})"


def emit_apply2(c: Code, lay: Layer, x: str, x2: str, y: str) -> None:
    """y[k] = x[k] ∘ x2[k]."""
    op = OPS[lay.aux(c.wf, 1)[0]]
    k, a, b = c.fresh("k"), c.fresh("a"), c.fresh("b")
    with c.block(f"for {k} in range({I(lay.nout)}):"):
        c(f"{a} = {x}[{k}]")
        c(f"{b} = {x2}[{k}]")
        c(f"{y}[{k}] = {_expr(op, a, b)}")


def numpy_apply2(lay: Layer, wf, wb, M, x, x2):
    """The numpy implementation."""
    op = OPS[lay.aux(wf, 1)[0]]
    a, b = np.asarray(x, np.float32), np.asarray(x2, np.float32)
    with np.errstate(all="ignore"):
        fn = {
            "add": np.add,
            "sub": np.subtract,
            "mul": np.multiply,
            "div": np.divide,
            "max": np.maximum,
            "min": np.minimum,
            "pow": np.power,
            "gt": np.greater,
            "lt": np.less,
            "ge": np.greater_equal,
            "le": np.less_equal,
            "eq": np.equal,
            "and": lambda p, q: (p != 0) & (q != 0),
            "or": lambda p, q: (p != 0) | (q != 0),
        }[op]
        return fn(a, b).astype(np.float32)
