"""``unary``: y = f(x) elementwise, for the math ops that are not activations (ONNX ``Sqrt``, ``Abs``,
``Neg``, ``Exp``, ``Log``, ``Reciprocal``, ``Not``, and ``Pow`` by the constant 2). Field ``func``:
``sqrt`` | ``square`` | ``abs`` | ``neg`` | ``exp`` | ``log`` | ``reciprocal`` | ``not`` (1.0 where x is 0,
else 0.0)."""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._graph import choice
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_UNARY
NAME = "unary"
RECURRENT = False
INPUTS = 1
FUNCS = ("sqrt", "square", "abs", "neg", "exp", "log", "reciprocal", "not")


def check(where: str, layer: dict, P) -> int:
    """``func`` must be one of :data:`FUNCS`; the output has the input's size."""
    choice(where, layer, "func", FUNCS, P)
    return layer["input_size"]


def tensor_specs(layer: dict) -> dict:
    """No tensors."""
    return {}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """No tensors to check."""


def pack(layer: dict, ctx) -> None:
    """The function code in the aux block."""
    ctx.aux([FUNCS.index(layer["func"])])


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def _expr(f: str, v: str) -> str:
    if f == "sqrt":
        return f"np.sqrt({v})"
    if f == "square":
        return f"{v} * {v}"
    if f == "abs":
        return f"abs({v})"
    if f == "neg":
        return f"-{v}"
    if f == "exp":
        return f"np.exp({v})"
    if f == "log":
        return f"np.log({v})"
    if f == "not":
        return f"(1.0 if {v} == 0.0 else 0.0)"
    return f"ONE / {v}"


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y[k] = f(x[k])."""
    f = FUNCS[lay.aux(c.wf, 1)[0]]
    k, v = c.fresh("k"), c.fresh("v")
    with c.block(f"for {k} in range({I(lay.nout)}):"):
        c(f"{v} = {x}[{k}]")
        c(f"{y}[{k}] = {_expr(f, v)}")


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation."""
    f = FUNCS[lay.aux(wf, 1)[0]]
    a = np.asarray(x, np.float32)
    with np.errstate(all="ignore"):
        out = {
            "sqrt": np.sqrt,
            "square": np.square,
            "abs": np.abs,
            "neg": np.negative,
            "exp": np.exp,
            "log": np.log,
            "reciprocal": np.reciprocal,
            "not": lambda v: v == 0,
        }[f](a)
    return out.astype(np.float32)
