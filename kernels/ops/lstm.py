"""LSTM cell (ONNX semantics, gate order i, o, f, c) as generated code; see ``kernels/lstm.py``::

    i = f(clip(Wi x + Ri h + Pi⊙c + bi))      f_ = 1 − i if input_forget else f(clip(Wf x + Rf h + Pf⊙c + bf))
    c̃ = g(clip(Wc x + Rc h + bc))             c ← f_⊙c + i⊙c̃
    o = f(clip(Wo x + Ro h + Po⊙c + bo))      h ← o⊙h_(c)

Flags and activations are resolved when the code is generated: the default configuration emits only the
fused, vectorizable passes; clip, peepholes, input_forget and other activations emit only what they need.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ..activations import A_SIGMOID, A_TANH
from . import _numpy as _np
from . import recurrent
from ._emit import Code, I, activate, clip, fill
from .record import Layer

KIND = L.K_LSTM
NAME = "lstm"
RECURRENT = True
#: end-of-step state write-backs (plan attributes h_next/c_next, ``recurrent.writes``)
WRITES = True
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)
GATES = 4
PROJ_MAT = recurrent.w_mat(0)  # chunk mode: the input projection's matrix (W, or [W | R])
#: vector slots of direction d (``+ d``): Wb + Rb (4H), the peepholes P (3H), initial h and c (H each)
V_BIAS, V_PEEP, V_H0, V_C0 = recurrent.V_BIAS, recurrent.V_EXTRA, recurrent.V_H0, recurrent.V_C0


def check(where: str, layer: dict, P) -> int:
    """The cell fields (``recurrent.check``), ``input_forget`` (default false) and ``cell_output`` (when
    given: the output is [h; c] per step, ONNX Y then the cell states Y_c). The output is D·H per step (2·D·H
    with ``cell_output``)."""
    h, d = recurrent.check(where, layer, P)
    cells = 1
    P._bool(where, layer, "input_forget")
    if "cell_output" in layer and P._bool(where, layer, "cell_output"):
        cells = 2
    return cells * d * h


def tensor_specs(layer: dict) -> dict:
    """The cell tensors (``recurrent.tensor_specs``, four gates), optional peepholes ``P`` [D, 3H] and
    ``initial_c`` [D, H]."""
    spec = recurrent.tensor_specs(layer, GATES)
    d, h = spec["initial_h"][0]
    spec["P"] = ((d, 3 * h), False)
    spec["initial_c"] = ((d, h), False)
    return spec


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The forward direction's h and c (H each)."""
    return recurrent.state(layer, cell=True)


def scratch(layer: dict) -> int:
    """The gates g (6H, the step uses 5H) and xh = [x; h] (I+H)."""
    return 6 * layer["hidden_size"] + layer["input_size"]


def pack(layer: dict, ctx) -> None:
    """The shared cell packing (``recurrent.pack``), with Wb + Rb summed, the peepholes, initial_c and the
    input_forget / cell_output flags."""
    recurrent.pack(layer, ctx, GATES, _vectors, cell=True)
    if layer["input_forget"]:
        ctx.set_flag(L.F_INPUT_FORGET)
    if layer.get("cell_output"):
        ctx.set_flag(L.F_CELL)


def _vectors(ctx, d: int, b: np.ndarray) -> None:
    n = GATES * (len(b) // (2 * GATES))
    ctx.vector(V_BIAS + d, b[:n] + b[n:])
    P = ctx.tensor("P")
    if P is not None:
        ctx.set_flag(L.F_PEEPHOLE)
        ctx.vector(V_PEEP + d, P[d])


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def emit_cell(c: Code, lay: Layer, d: int, x: str, h: str, cc: str, g: str, xh: str) -> None:
    """One step of direction ``d``: x (I,), h and cc (H,) updated in place; g (5H,), xh (I+H,) scratch."""
    H = lay.hidden
    fill(c, g, 0, 4 * H, "wf", lay.vecs[V_BIAS + d])
    recurrent.load_xh(c, lay, x, h, xh)
    recurrent.gates_acc(c, lay, d, 0, 4 * H, x, h, xh, g, 0)
    _tail(c, lay, d, h, cc, g)


def proj_bias(lay: Layer, d: int) -> list[tuple[int, int, int]]:
    """Chunk mode: the bias segments (wf offset, first row, rows) folded into the input projection."""
    return [(lay.vecs[V_BIAS + d], 0, 4 * lay.hidden)]


def proj_rows(lay: Layer) -> int:
    """Chunk mode: rows of the input projection W·x (all four gates)."""
    return 4 * lay.hidden


def emit_cell_proj(c: Code, lay: Layer, d: int, p: str, h: str, cc: str, g: str) -> None:
    """One step of direction ``d`` whose input part p (4H,) = W·x + b was computed for the whole chunk."""
    H = lay.hidden
    fill(c, g, 0, 4 * H, p)
    recurrent.h_acc(c, lay, d, 0, 4 * H, h, g, 0)
    _tail(c, lay, d, h, cc, g)


def _tail(c: Code, lay: Layer, d: int, h: str, cc: str, g: str) -> None:
    """Gates g[0:4H] (pre-activation) → the new c and h."""
    H = lay.hidden
    fa, ga, ha = lay.act(d, 0), lay.act(d, 1), lay.act(d, 2)
    special = lay.flags & (L.F_CLIP | L.F_INPUT_FORGET | L.F_PEEPHOLE)
    if special == 0 and fa.code == A_SIGMOID and ga.code == A_TANH and ha.code == A_TANH:
        # simple in-place passes: each vectorizes
        with c.block(f"for k in range({I(3 * H)}):"):
            c(f"{g}[k] = fast_sigmoid({g}[k])")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(3 * H)} + k] = fast_tanh({g}[{I(3 * H)} + k])")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(4 * H)} + k] = {g}[{I(2 * H)} + k] * {cc}[k] + {g}[k] * {g}[{I(3 * H)} + k]")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{cc}[k] = {g}[{I(4 * H)} + k]")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(4 * H)} + k] = fast_tanh({g}[{I(4 * H)} + k])")
        with c.block(f"for k in range({I(H)}):"):
            c(f"{h}[k] = {g}[{I(H)} + k] * {g}[{I(4 * H)} + k]")
        return
    gi, go, gf, gg, t = 0, H, 2 * H, 3 * H, 4 * H
    peep = lay.has(L.F_PEEPHOLE)
    P = lay.vecs[V_PEEP + d]
    if peep:
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(gi)} + k] += wf[{I(P)} + k] * {cc}[k]")
            c(f"{g}[{I(gf)} + k] += wf[{I(P + 2 * H)} + k] * {cc}[k]")
    if lay.has(L.F_CLIP):
        clip(c, lay.clip, g, gi, H)
        clip(c, lay.clip, g, gf, H)
        clip(c, lay.clip, g, gg, H)
    activate(c, fa.code, fa.alpha, fa.beta, g, gi, H)
    if lay.has(L.F_INPUT_FORGET):
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(gf)} + k] = ONE - {g}[{I(gi)} + k]")
    else:
        activate(c, fa.code, fa.alpha, fa.beta, g, gf, H)
    activate(c, ga.code, ga.alpha, ga.beta, g, gg, H)
    with c.block(f"for k in range({I(H)}):"):
        c(f"{cc}[k] = {g}[{I(gf)} + k] * {cc}[k] + {g}[{I(gi)} + k] * {g}[{I(gg)} + k]")
    if peep:
        with c.block(f"for k in range({I(H)}):"):
            c(f"{g}[{I(go)} + k] += wf[{I(P + H)} + k] * {cc}[k]")
    if lay.has(L.F_CLIP):
        clip(c, lay.clip, g, go, H)
    activate(c, fa.code, fa.alpha, fa.beta, g, go, H)
    fill(c, g, t, H, cc)
    activate(c, ha.code, ha.alpha, ha.beta, g, t, H)
    with c.block(f"for k in range({I(H)}):"):
        c(f"{h}[k] = {g}[{I(go)} + k] * {g}[{I(t)} + k]")


def numpy_cell(lay: Layer, wf, wb, d: int, x, h, c):
    """The numpy implementation of one step of direction ``d``: returns new (h, c) float32 arrays."""
    H = lay.hidden
    W, R = _np.wr(lay, wf, wb, d)
    g = W @ x + R @ h + _np.vec(wf, lay.vecs[V_BIAS + d], 4 * H)
    P = _np.vec(wf, lay.vecs[V_PEEP + d], 3 * H) if lay.has(L.F_PEEPHOLE) else np.zeros(3 * H, np.float32)
    i = _np.act_of(lay, d, 0, _np.clipped(lay, g[:H] + P[:H] * c))
    if lay.has(L.F_INPUT_FORGET):
        f = 1 - i
    else:
        f = _np.act_of(lay, d, 0, _np.clipped(lay, g[2 * H : 3 * H] + P[2 * H :] * c))
    cn = f * c + i * _np.act_of(lay, d, 1, _np.clipped(lay, g[3 * H :]))
    o = _np.act_of(lay, d, 0, _np.clipped(lay, g[H : 2 * H] + P[H : 2 * H] * cn))
    return (o * _np.act_of(lay, d, 2, cn)).astype(np.float32), cn.astype(np.float32)
