"""GRU cell (ONNX semantics, gate order z, r, h; both ``linear_before_reset``) as generated code::

z = f(clip(Wz x + Rz h + Wbz + Rbz))      r = f(clip(Wr x + Rr h + Wbr + Rbr))
lbr = 0 (ONNX default):  h̃ = g(clip(Wh x + Rh (r⊙h) + Rbh + Wbh))
lbr = 1 (PyTorch):       h̃ = g(clip(Wh x + r⊙(Rh h + Rbh) + Wbh))
h ← (1 − z)⊙h̃ + z⊙h
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ..activations import A_SIGMOID, A_TANH
from . import _numpy as _np
from . import recurrent
from ._emit import Code, I, activate, clip, fill
from .record import Layer

KIND = L.K_GRU
NAME = "gru"
RECURRENT = True
#: end-of-step state write-backs (plan attributes h_next/c_next, ``recurrent.writes``)
WRITES = True
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)
GATES = 3
PROJ_MAT = recurrent.w_mat(0)  # chunk mode: the input projection's matrix (W, or [W | R])
#: vector slots of direction d (``+ d``): Wb and Rb (3H each, kept apart: Rbh may be reset-gated), initial h
V_WBIAS, V_RBIAS, V_H0 = recurrent.V_BIAS, recurrent.V_EXTRA, recurrent.V_H0


def check(where: str, layer: dict, P) -> int:
    """The cell fields (``recurrent.check``) and ``linear_before_reset`` (0 or 1, default 0); the output is
    D·H per step."""
    h, d = recurrent.check(where, layer, P)
    lbr = layer.setdefault("linear_before_reset", 0)
    if type(lbr) is not int or lbr not in (0, 1):
        raise P._fail("bad field", f"{where}: linear_before_reset must be 0 or 1")
    return d * h


def tensor_specs(layer: dict) -> dict:
    """The cell tensors (``recurrent.tensor_specs``), three gates."""
    return recurrent.tensor_specs(layer, GATES)


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The forward direction's h (H)."""
    return recurrent.state(layer)


def scratch(layer: dict) -> int:
    """The gates g (6H, the step uses 5H) and xh = [x; h] (I+H)."""
    return 6 * layer["hidden_size"] + layer["input_size"]


def pack(layer: dict, ctx) -> None:
    """The shared cell packing (``recurrent.pack``), with Wb and Rb apart and the linear_before_reset flag."""
    recurrent.pack(layer, ctx, GATES, _vectors)
    if layer["linear_before_reset"]:
        ctx.set_flag(L.F_LBR)


def _vectors(ctx, d: int, b: np.ndarray) -> None:
    n = len(b) // 2
    ctx.vector(V_WBIAS + d, b[:n])
    ctx.vector(V_RBIAS + d, b[n:])


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def emit_cell(c: Code, lay: Layer, d: int, x: str, h: str, cc: str | None, g: str, xh: str) -> None:
    """One step of direction ``d``: x (I,), h (H,) updated in place; g (5H,), xh (I+H,) scratch."""
    H = lay.hidden
    wbias, rbias = lay.vecs[V_WBIAS + d], lay.vecs[V_RBIAS + d]
    with c.block(f"for k in range({I(2 * H)}):"):
        c(f"{g}[k] = wf[{I(wbias)} + k] + wf[{I(rbias)} + k]")
    recurrent.load_xh(c, lay, x, h, xh)
    recurrent.gates_acc(c, lay, d, 0, 2 * H, x, h, xh, g, 0)
    _zr(c, lay, d, g)
    fill(c, g, 2 * H, H, "wf", wbias + 2 * H)
    recurrent.x_acc(c, lay, d, 2 * H, H, x, g, 2 * H)
    _tail(c, lay, d, h, g, xh)


def proj_bias(lay: Layer, d: int) -> list[tuple[int, int, int]]:
    """Chunk mode: the bias segments (wf offset, first row, rows) folded into the input projection:
    Wb (3H) and Rb of z and r (2H); Rb of the candidate stays in the step (it may be reset-gated)."""
    return [(lay.vecs[V_WBIAS + d], 0, 3 * lay.hidden), (lay.vecs[V_RBIAS + d], 0, 2 * lay.hidden)]


def proj_rows(lay: Layer) -> int:
    """Chunk mode: rows of the input projection W·x (z, r and the candidate)."""
    return 3 * lay.hidden


def emit_cell_proj(c: Code, lay: Layer, d: int, p: str, h: str, cc: str | None, g: str) -> None:
    """One step of direction ``d`` whose input part p (3H,) = W·x + biases was computed for the chunk."""
    H = lay.hidden
    fill(c, g, 0, 3 * H, p)
    recurrent.h_acc(c, lay, d, 0, 2 * H, h, g, 0)
    _zr(c, lay, d, g)
    _tail(c, lay, d, h, g)


def _zr(c: Code, lay: Layer, d: int, g: str) -> None:
    """g[0:2H] (pre-activation z, r) → the gates."""
    H = lay.hidden
    fa = lay.act(d, 0)
    if lay.has(L.F_CLIP):
        clip(c, lay.clip, g, 0, 2 * H)
    activate(c, fa.code, fa.alpha, fa.beta, g, 0, 2 * H)


def _tail(c: Code, lay: Layer, d: int, h: str, g: str, xh: str | None = None) -> None:
    """Gates z, r in g[0:2H] and Wh x + Wbh in g[2H:3H] → the new h (``xh``: the [x; h] scratch, for a
    dynamically quantized R·h)."""
    H = lay.hidden
    rbias = lay.vecs[V_RBIAS + d]
    fa, ga = lay.act(d, 0), lay.act(d, 1)
    do_clip = lay.has(L.F_CLIP)
    xs, rs, rh = 2 * H, 3 * H, 4 * H  # Wh x + Wbh | recurrent part of the candidate | r⊙h
    if lay.has(L.F_LBR):
        fill(c, g, rs, H, "wf", rbias + 2 * H)
        recurrent.h_acc(c, lay, d, 2 * H, H, h, g, rs, xh)
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(rs)} + k] *= {g}[{I(H)} + k]")
    else:
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(rh)} + k] = {g}[{I(H)} + k] * {h}[k]")
            c(f"{g}[{I(rs)} + k] = wf[{I(rbias + 2 * H)} + k]")
        rhv = c.view("rh", g, rh, rh + H)
        recurrent.h_acc(c, lay, d, 2 * H, H, rhv, g, rs, xh)
    with c.block(f"for k in range({I(H)}):"):
        c(f"{g}[{I(xs)} + k] += {g}[{I(rs)} + k]")
    if ga.code == A_TANH and not do_clip and fa.code == A_SIGMOID:
        with c.block(f"for k in range({I(H)}):"):
            c(f"z = {g}[k]")
            c(f"{h}[k] = (ONE - z) * fast_tanh({g}[{I(xs)} + k]) + z * {h}[k]")
        return
    if do_clip:
        clip(c, lay.clip, g, xs, H)
    activate(c, ga.code, ga.alpha, ga.beta, g, xs, H)
    with c.block(f"for k in range({I(H)}):"):
        c(f"z = {g}[k]")
        c(f"{h}[k] = (ONE - z) * {g}[{I(xs)} + k] + z * {h}[k]")


def numpy_cell(lay: Layer, wf, wb, d: int, x, h, c):
    """The numpy implementation of one step of direction ``d``: returns (new h, c unchanged)."""
    H = lay.hidden
    W, R = _np.wr(lay, wf, wb, d)
    wbias, rbias = _np.vec(wf, lay.vecs[V_WBIAS + d], 3 * H), _np.vec(wf, lay.vecs[V_RBIAS + d], 3 * H)
    zr = _np.act_of(
        lay, d, 0, _np.clipped(lay, W[: 2 * H] @ x + R[: 2 * H] @ h + wbias[: 2 * H] + rbias[: 2 * H])
    )
    z, r = zr[:H], zr[H:]
    xs = W[2 * H :] @ x + wbias[2 * H :]
    if lay.has(L.F_LBR):
        rs = r * (R[2 * H :] @ h + rbias[2 * H :])
    else:
        rs = R[2 * H :] @ (r * h) + rbias[2 * H :]
    ht = _np.act_of(lay, d, 1, _np.clipped(lay, xs + rs))
    return ((1 - z) * ht + z * h).astype(np.float32), c
