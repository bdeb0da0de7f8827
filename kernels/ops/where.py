"""``where``: y = a where cond else b, elementwise (ONNX ``Where``). The op reads two values: ``cond``
(n values, true where non-zero) and the branches joined, [a; b] (2n values: a in the first n, b in the
last n; the compiler joins them, a constant branch being a value too). A select, not a blend: the
branch not taken is never read into the result, so an Inf or NaN there does not reach y."""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_WHERE
NAME = "where"
RECURRENT = False
INPUTS = 2


def check(where: str, layer: dict, P) -> int:
    """No fields; the output has the condition's size (the second input twice that)."""
    return layer["input_size"]


def input_sizes(layer: dict) -> list[int]:
    """The sizes of the two inputs: cond n, [a; b] 2n."""
    n = layer["output_size"]
    return [n, 2 * n]


def tensor_specs(layer: dict) -> dict:
    """No tensors."""
    return {}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """No tensors to check."""


def pack(layer: dict, ctx) -> None:
    """Nothing to pack: the sizes are the record's."""


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def in2_size(lay: Layer, wf) -> int:
    """The size of the second input: the two branches, 2n."""
    return 2 * lay.nout


def emit_apply2(c: Code, lay: Layer, x: str, x2: str, y: str) -> None:
    """y[k] = x2[k] if x[k] != 0 else x2[n + k]."""
    n = lay.nout
    k = c.fresh("k")
    with c.block(f"for {k} in range({I(n)}):"):
        with c.block(f"if {x}[{k}] != 0.0:"):
            c(f"{y}[{k}] = {x2}[{k}]")
        with c.block("else:"):
            c(f"{y}[{k}] = {x2}[{I(n)} + {k}]")


def numpy_apply2(lay: Layer, wf, wb, M, x, x2):
    """The numpy implementation."""
    n = lay.nout
    x2 = np.asarray(x2, np.float32)
    return np.where(np.asarray(x) != 0, x2[:n], x2[n:]).astype(np.float32)
