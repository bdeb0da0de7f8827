"""The elementwise layers as generated code: normalize, affine, activation.

normalize:  y = (x − mean) / std        affine:  y = x·scale + shift        activation:  y = act(x)
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I, activate, fill
from .record import Layer

RECURRENT = False


class Normalize:
    """``normalize``: mean in vector slot 0, std in slot 1."""

    KIND = L.K_NORMALIZE
    NAME = "normalize"
    RECURRENT = False

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = (x − mean) / std."""
        with c.block(f"for k in range({I(lay.nout)}):"):
            c(f"{y}[k] = ({x}[k] - wf[{I(lay.vecs[0])} + k]) / wf[{I(lay.vecs[1])} + k]")

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: (x − mean) / std."""
        n = lay.nin
        return ((x - _np.vec(wf, lay.vecs[0], n)) / _np.vec(wf, lay.vecs[1], n)).astype(np.float32)


class Affine:
    """``affine``: scale in vector slot 0, shift in slot 1."""

    KIND = L.K_AFFINE
    NAME = "affine"
    RECURRENT = False

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = x·scale + shift."""
        with c.block(f"for k in range({I(lay.nout)}):"):
            c(f"{y}[k] = {x}[k] * wf[{I(lay.vecs[0])} + k] + wf[{I(lay.vecs[1])} + k]")

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: x·scale + shift."""
        n = lay.nin
        return (x * _np.vec(wf, lay.vecs[0], n) + _np.vec(wf, lay.vecs[1], n)).astype(np.float32)


class Activation:
    """``activation``: one ONNX activation (softmax over the vector)."""

    KIND = L.K_ACTIVATION
    NAME = "activation"
    RECURRENT = False

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = act(x)."""
        fill(c, y, 0, lay.nout, x)
        a = lay.act(0, 0)
        activate(c, a.code, a.alpha, a.beta, y, 0, lay.nout)

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: act(x)."""
        return _np.act_of(lay, 0, 0, x)
