"""Vanilla RNN cell (ONNX ``RNN``) as generated code: h ← f(clip(W·x + R·h + Wb + Rb))."""

from __future__ import annotations

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


def emit_cell(c: Code, lay: Layer, d: int, x: str, h: str, cc: str | None, g: str, xh: str) -> None:
    """One step of direction ``d``: x (I,), h (H,) updated in place; g (H,), xh (I+H,) scratch."""
    H = lay.hidden
    fill(c, g, 0, H, "wf", lay.vecs[d])
    recurrent.load_xh(c, lay, x, h, xh)
    recurrent.gates_acc(c, lay, d, 0, H, x, h, xh, g, 0)
    _tail(c, lay, d, h, g)


def proj_bias(lay: Layer, d: int) -> list[tuple[int, int, int]]:
    """Chunk mode: the bias segments (wf offset, first row, rows) folded into the input projection."""
    return [(lay.vecs[d], 0, lay.hidden)]


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
    return _np.act_of(lay, d, 0, _np.clipped(lay, W @ x + R @ h + _np.vec(wf, lay.vecs[d], lay.hidden))), c
