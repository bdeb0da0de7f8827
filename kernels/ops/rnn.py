"""Vanilla RNN cell (ONNX ``RNN``) as generated code: h ← f(clip(W·x + R·h + Wb + Rb))."""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from . import recurrent
from ._emit import Code, activate, clip, fill
from .record import Layer

KIND = L.K_RNN
NAME = "rnn"
RECURRENT = True
#: end-of-step state write-backs (plan attributes h_next/c_next, ``recurrent.writes``)
WRITES = True
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)
GATES = 1
PROJ_MAT = recurrent.w_mat(0)  # chunk mode: the input projection's matrix (W, or [W | R])
#: vector slots of direction d (``+ d``): Wb + Rb (H), initial h (H)
V_BIAS, V_H0 = recurrent.V_BIAS, recurrent.V_H0


def check(where: str, layer: dict, P) -> int:
    """The cell fields (``recurrent.check``); the output is D·H per step."""
    h, d = recurrent.check(where, layer, P)
    return d * h


def tensor_specs(layer: dict) -> dict:
    """The cell tensors (``recurrent.tensor_specs``), one gate."""
    return recurrent.tensor_specs(layer, GATES)


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The forward direction's h (H)."""
    return recurrent.state(layer)


def scratch(layer: dict) -> int:
    """The pre-activation g (2H) and xh = [x; h] (I+H)."""
    return 2 * layer["hidden_size"] + layer["input_size"]


def pack(layer: dict, ctx) -> None:
    """The shared cell packing (``recurrent.pack``), with Wb + Rb summed."""
    recurrent.pack(layer, ctx, GATES, _vectors)


def _vectors(ctx, d: int, b: np.ndarray) -> None:
    n = len(b) // 2
    ctx.vector(V_BIAS + d, b[:n] + b[n:])


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def emit_cell(c: Code, lay: Layer, d: int, x: str, h: str, cc: str | None, g: str, xh: str) -> None:
    """One step of direction ``d``: x (I,), h (H,) updated in place; g (H,), xh (I+H,) scratch."""
    H = lay.hidden
    fill(c, g, 0, H, "wf", lay.vecs[V_BIAS + d])
    recurrent.load_xh(c, lay, x, h, xh)
    recurrent.gates_acc(c, lay, d, 0, H, x, h, xh, g, 0)
    _tail(c, lay, d, h, g)


def proj_bias(lay: Layer, d: int) -> list[tuple[int, int, int]]:
    """Chunk mode: the bias segments (wf offset, first row, rows) folded into the input projection."""
    return [(lay.vecs[V_BIAS + d], 0, lay.hidden)]


def proj_rows(lay: Layer) -> int:
    """Chunk mode: rows of the input projection W·x."""
    return lay.hidden


def emit_cell_proj(c: Code, lay: Layer, d: int, p: str, h: str, cc: str | None, g: str) -> None:
    """One step of direction ``d`` whose input part p (H,) = W·x + b was computed for the whole chunk."""
    H = lay.hidden
    fill(c, g, 0, H, p)
    recurrent.h_acc(c, lay, d, 0, H, h, g, 0)
    _tail(c, lay, d, h, g)


def _tail(c: Code, lay: Layer, d: int, h: str, g: str) -> None:
    H = lay.hidden
    if lay.has(L.F_CLIP):
        clip(c, lay.clip, g, 0, H)
    a = lay.act(d, 0)
    activate(c, a.code, a.alpha, a.beta, g, 0, H)
    fill(c, h, 0, H, g)


def numpy_cell(lay: Layer, wf, wb, d: int, x, h, c):
    """The numpy implementation of one step of direction ``d``: returns (new h, c unchanged)."""
    W, R = _np.wr(lay, wf, wb, d)
    b = _np.vec(wf, lay.vecs[V_BIAS + d], lay.hidden)
    return _np.act_of(lay, d, 0, _np.clipped(lay, W @ x + R @ h + b)), c
