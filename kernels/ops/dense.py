"""Dense layer as generated code: y (O,) = act(W·x + b) for x (I,)."""

from __future__ import annotations

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, activate, fill, gemv_acc
from ._pack import no_scratch as scratch  # noqa: F401 - the op's packing hooks
from ._pack import no_state as state  # noqa: F401
from ._pack import no_values as check_values  # noqa: F401
from .record import Layer

KIND = L.K_DENSE
NAME = "dense"
RECURRENT = False
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)
M_W = 0  # matrix descriptor: W (O, I)
V_BIAS = 0  # vector slot: b (flag F_BIAS)


def check(where: str, layer: dict, P) -> int:
    """``output_size`` O (required) and the activation (default linear, with its alpha/beta)."""
    o = P._int(where, layer, "output_size")
    P._act1(where, layer)
    return o


def tensor_specs(layer: dict) -> dict:
    """``W`` [O, I], optional ``b`` [O]."""
    o = layer["output_size"]
    return {"W": ((o, layer["input_size"]), True), "b": ((o,), False)}


def pack(layer: dict, ctx) -> None:
    """W, b (when given) and the activation."""
    ctx.matrix(M_W, "W", ctx.tensor("W"))
    b = ctx.tensor("b")
    if b is not None:
        ctx.set_flag(L.F_BIAS)
        ctx.vector(V_BIAS, b)
    ctx.params([layer["activation"]], [layer["alpha"]], [layer["beta"]])


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = act(W·x + b); W is descriptor 0, b vector slot 0 when flagged."""
    n = lay.nout
    fill(c, y, 0, n, "wf" if lay.has(L.F_BIAS) else None, lay.vecs[V_BIAS])
    gemv_acc(c, lay.mats[M_W], 0, lay.nin, 0, n, x, y)
    a = lay.act(0, 0)
    activate(c, a.code, a.alpha, a.beta, y, 0, n)


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation: y = act(W·x + b)."""
    y = _np.mat(wf, wb, lay.mats[M_W]) @ x
    if lay.has(L.F_BIAS):
        y = y + _np.vec(wf, lay.vecs[V_BIAS], lay.nout)
    return _np.act_of(lay, 0, 0, y)
