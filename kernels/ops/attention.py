"""Additive attention pooling, streamed exactly, as generated code; see ``kernels/attention.py``.

Scores s_τ = v·tanh(W x_τ + b); y_t = Σ_τ≤t softmax(s)_τ x_τ, from a state [m, S, A (H values)]
(running max, running sum of exp(s − m), running weighted sum), rescaled when the max changes.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I, fill, gemv_acc
from ._pack import no_values as check_values  # noqa: F401 - the op's packing hooks
from .record import Layer

KIND = L.K_ATTENTION
NAME = "attention"
RECURRENT = False
M_W = 0  # matrix descriptor: W (A, H)
V_BIAS, V_SCORE = 0, 1  # vector slots: b (A), v (A)


def check(where: str, layer: dict, P) -> int:
    """``attention_size`` A (required); the output is the pooled input (I values)."""
    P._int(where, layer, "attention_size")
    return layer["input_size"]


def tensor_specs(layer: dict) -> dict:
    """``W`` [A, I], ``b`` [A], ``v`` [A]."""
    a = layer["attention_size"]
    return {"W": ((a, layer["input_size"]), True), "b": ((a,), True), "v": ((a,), True)}


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The pooling state [m, S, A (H values)]."""
    return (("pool", layer["input_size"] + 2),)


def scratch(layer: dict) -> int:
    """W x + b (A)."""
    return layer["attention_size"]


def pack(layer: dict, ctx) -> None:
    """W, b and v."""
    ctx.set_field(L.R_H, layer["attention_size"])
    ctx.matrix(M_W, "W", ctx.tensor("W"))
    ctx.vector(V_BIAS, ctx.tensor("b"))
    ctx.vector(V_SCORE, ctx.tensor("v"))


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """Fold x (H,) into the pooling state; y (H,) = the pooled vector."""
    A, H = lay.hidden, lay.nin
    st, g = lay.state_off, lay.scratch_off
    ps, gs, s, e, inv = c.fresh("st"), c.fresh("g"), c.fresh("s"), c.fresh("e"), c.fresh("inv")
    c(f"{ps} = M[{I(st)} : {I(st + H + 2)}]")
    c(f"{gs} = M[{I(g)} : {I(g + A)}]")
    fill(c, gs, 0, A, "wf", lay.vecs[V_BIAS])
    gemv_acc(c, lay.mats[M_W], 0, H, 0, A, x, gs)
    c(f"{s} = Z")
    with c.block(f"for k in range({I(A)}):"):
        c(f"{s} += wf[{I(lay.vecs[V_SCORE])} + k] * fast_tanh({gs}[k])")
    with c.block(f"if {ps}[1] == Z:"):
        c(f"{ps}[0] = {s}")
        c(f"{ps}[1] = ONE")
        fill(c, ps, 2, H, x)
    with c.block(f"elif {s} > {ps}[0]:"):
        c(f"{e} = np.float32(math.exp({ps}[0] - {s}))")
        c(f"{ps}[0] = {s}")
        c(f"{ps}[1] = {ps}[1] * {e} + ONE")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{ps}[2 + k] = {ps}[2 + k] * {e} + {x}[k]")
    with c.block("else:"):
        c(f"{e} = np.float32(math.exp({s} - {ps}[0]))")
        c(f"{ps}[1] += {e}")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{ps}[2 + k] += {e} * {x}[k]")
    c(f"{inv} = ONE / {ps}[1]")
    with c.block(f"for k in range({I(H)}):"):
        c(f"{y}[k] = {ps}[2 + k] * {inv}")


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation: fold x into the pooling state in M; returns the pooled vector."""
    A, n = lay.hidden, lay.nin
    s = float(
        _np.vec(wf, lay.vecs[V_SCORE], A)
        @ np.tanh(_np.mat(wf, wb, lay.mats[M_W]) @ x + _np.vec(wf, lay.vecs[V_BIAS], A))
    )
    pool = M[lay.state_off : lay.state_off + n + 2]
    acc = pool[2:]
    if pool[1] == 0:
        pool[0], pool[1] = s, 1.0
        acc[:] = x
    elif s > pool[0]:
        sc = np.exp(pool[0] - s)
        pool[0] = s
        pool[1] = pool[1] * sc + 1
        acc[:] = acc * sc + x
    else:
        e = np.exp(s - pool[0])
        pool[1] += e
        acc += e * x
    return (acc / pool[1]).astype(np.float32)
