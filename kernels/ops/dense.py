"""Dense layer as generated code: y (O,) = act(W·x + b) for x (I,)."""

from __future__ import annotations

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, activate, fill, gemv_acc
from .record import Layer

KIND = L.K_DENSE
NAME = "dense"
RECURRENT = False
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = act(W·x + b); W is descriptor 0, b vector slot 0 when flagged."""
    n = lay.nout
    fill(c, y, 0, n, "wf" if lay.has(L.F_BIAS) else None, lay.vecs[0])
    gemv_acc(c, lay.mats[0], 0, lay.nin, 0, n, x, y)
    a = lay.act(0, 0)
    activate(c, a.code, a.alpha, a.beta, y, 0, n)


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation: y = act(W·x + b)."""
    y = _np.mat(wf, wb, lay.mats[0]) @ x
    if lay.has(L.F_BIAS):
        y = y + _np.vec(wf, lay.vecs[0], lay.nout)
    return _np.act_of(lay, 0, 0, y)
