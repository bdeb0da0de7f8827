"""The elementwise layers as generated code: normalize, affine, activation.

normalize:  y = (x − mean) / std        affine:  y = x·scale + shift        activation:  y = act(x)
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I, activate, fill
from ._pack import Stateless
from .record import Layer

RECURRENT = False


class Normalize(Stateless):
    """``normalize``: mean in vector slot ``V_MEAN``, std in ``V_STD``."""

    KIND = L.K_NORMALIZE
    NAME = "normalize"
    RECURRENT = False
    V_MEAN, V_STD = 0, 1

    @staticmethod
    def check(where: str, layer: dict, P) -> int:
        """No fields; the output is the input size."""
        return layer["input_size"]

    @staticmethod
    def tensor_specs(layer: dict) -> dict:
        """``mean`` [I], ``std`` [I]."""
        i = layer["input_size"]
        return {"mean": ((i,), True), "std": ((i,), True)}

    @staticmethod
    def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
        """std > 0."""
        if not np.all(tensors[roles["std"]] > 0):
            raise P._fail("bad weights", f"{where}: std must be > 0")

    @staticmethod
    def pack(layer: dict, ctx) -> None:
        """mean and std."""
        ctx.vector(Normalize.V_MEAN, ctx.tensor("mean"))
        ctx.vector(Normalize.V_STD, ctx.tensor("std"))

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = (x − mean) / std."""
        m, s = lay.vecs[Normalize.V_MEAN], lay.vecs[Normalize.V_STD]
        with c.block(f"for k in range({I(lay.nout)}):"):
            c(f"{y}[k] = ({x}[k] - wf[{I(m)} + k]) / wf[{I(s)} + k]")

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: (x − mean) / std."""
        n = lay.nin
        m, s = _np.vec(wf, lay.vecs[Normalize.V_MEAN], n), _np.vec(wf, lay.vecs[Normalize.V_STD], n)
        return ((x - m) / s).astype(np.float32)


class Affine(Stateless):
    """``affine``: scale in vector slot ``V_SCALE``, shift in ``V_SHIFT``."""

    KIND = L.K_AFFINE
    NAME = "affine"
    RECURRENT = False
    V_SCALE, V_SHIFT = 0, 1

    @staticmethod
    def check(where: str, layer: dict, P) -> int:
        """No fields; the output is the input size."""
        return layer["input_size"]

    @staticmethod
    def tensor_specs(layer: dict) -> dict:
        """``scale`` [I], ``shift`` [I]."""
        i = layer["input_size"]
        return {"scale": ((i,), True), "shift": ((i,), True)}

    @staticmethod
    def pack(layer: dict, ctx) -> None:
        """scale and shift."""
        ctx.vector(Affine.V_SCALE, ctx.tensor("scale"))
        ctx.vector(Affine.V_SHIFT, ctx.tensor("shift"))

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = x·scale + shift."""
        a, b = lay.vecs[Affine.V_SCALE], lay.vecs[Affine.V_SHIFT]
        with c.block(f"for k in range({I(lay.nout)}):"):
            c(f"{y}[k] = {x}[k] * wf[{I(a)} + k] + wf[{I(b)} + k]")

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: x·scale + shift."""
        n = lay.nin
        a, b = _np.vec(wf, lay.vecs[Affine.V_SCALE], n), _np.vec(wf, lay.vecs[Affine.V_SHIFT], n)
        return (x * a + b).astype(np.float32)


class Activation(Stateless):
    """``activation``: one ONNX activation (softmax over the vector)."""

    KIND = L.K_ACTIVATION
    NAME = "activation"
    RECURRENT = False

    @staticmethod
    def check(where: str, layer: dict, P) -> int:
        """The activation (default linear, with its alpha/beta); the output is the input size."""
        P._act1(where, layer)
        return layer["input_size"]

    @staticmethod
    def tensor_specs(layer: dict) -> dict:
        """No tensors."""
        return {}

    @staticmethod
    def pack(layer: dict, ctx) -> None:
        """The activation."""
        ctx.params([layer["activation"]], [layer["alpha"]], [layer["beta"]])

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
