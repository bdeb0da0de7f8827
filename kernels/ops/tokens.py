"""The token layers as generated code: embedding (a table row) and one-hot.

The id in x[0] was range-checked before any state changed (the step's input check).
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I
from ._pack import Stateless
from .record import Layer


class Embedding(Stateless):
    """``embedding``: y = table[int(x[0])], table is descriptor ``M_TABLE`` (float32, or int8 with row
    scales)."""

    KIND = L.K_EMBEDDING
    NAME = "embedding"
    RECURRENT = False
    #: reads the model's tokens: the first layer, with input_size 1
    TOKENS = True
    M_TABLE = 0

    @staticmethod
    def check(where: str, layer: dict, P) -> int:
        """``vocab_size`` V and ``output_size`` O (both required)."""
        P._int(where, layer, "vocab_size")
        return P._int(where, layer, "output_size")

    @staticmethod
    def tensor_specs(layer: dict) -> dict:
        """``table`` [V, O]."""
        return {"table": ((layer["vocab_size"], layer["output_size"]), True)}

    @staticmethod
    def pack(layer: dict, ctx) -> None:
        """The table."""
        ctx.matrix(Embedding.M_TABLE, "table", ctx.tensor("table"))

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = table[int(x[0])]."""
        m = lay.mats[Embedding.M_TABLE]
        r = c.fresh("r")
        c(f"{r} = int({x}[0])")
        if m.int8:
            s = c.fresh("s")
            c(f"{s} = wf[{I(m.soff)} + {r}]")
            with c.block(f"for k in range({I(m.cols)}):"):
                c(f"{y}[k] = np.float32(wb[{I(m.off)} + {r} * {I(m.ld)} + k]) * {s}")
        else:
            with c.block(f"for k in range({I(m.cols)}):"):
                c(f"{y}[k] = wf[{I(m.off)} + {r} * {I(m.ld)} + k]")

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: the table row of id x[0]."""
        return np.array(_np.mat(wf, wb, lay.mats[Embedding.M_TABLE])[int(x[0])], np.float32)


class OneHot(Stateless):
    """``onehot``: y = one-hot(int(x[0]))."""

    KIND = L.K_ONEHOT
    NAME = "onehot"
    RECURRENT = False
    #: reads the model's tokens: the first layer, with input_size 1
    TOKENS = True

    @staticmethod
    def check(where: str, layer: dict, P) -> int:
        """``vocab_size`` V (required); the output is V."""
        return P._int(where, layer, "vocab_size")

    @staticmethod
    def tensor_specs(layer: dict) -> dict:
        """No tensors."""
        return {}

    @staticmethod
    def pack(layer: dict, ctx) -> None:
        """Nothing to pack."""

    @staticmethod
    def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
        """y = one-hot(int(x[0]))."""
        with c.block(f"for k in range({I(lay.nout)}):"):
            c(f"{y}[k] = Z")
        c(f"{y}[int({x}[0])] = ONE")

    @staticmethod
    def numpy_apply(lay: Layer, wf, wb, M, x):
        """The numpy implementation: one-hot of id x[0]."""
        y = np.zeros(lay.nout, np.float32)
        y[int(x[0])] = 1
        return y
