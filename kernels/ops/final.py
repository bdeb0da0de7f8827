"""``final``: each direction's final step of a recurrent op's output — what ONNX calls ``Y_h``.

Over a sequence of T steps, the forward direction's last step is t = T−1 and the reverse direction's is
t = 0 (it runs from T−1 down to 0). The op reads the output of a ``reverse`` or ``bidirectional``
recurrent op (fields ``hidden_size`` H and ``direction``, the same as that op's; size D·H) and writes, at
every step t,

    y_t[k] = x_t[k]   for the forward units k < H of a bidirectional op,
    y_t[k] = x_0[k]   for the reverse units (all D·H units of a reverse op, the last H of a bidirectional),

so y at the last step, t = T−1, is [h_fwd(T−1); h_bwd(0)] = ``Y_h``, and a many-to-one model reading it
(``Model.predict``) returns the readout of ``Y_h``. It needs the whole sequence (x_0 of the reverse
direction is its state after all T steps): a sequence-only op, run by the layer-by-layer ``seq``
kernel (``emit_seq``/``numpy_seq``), never by ``step``.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._graph import choice
from .record import Layer

KIND = L.K_FINAL
NAME = "final"
RECURRENT = False
INPUTS = 1
#: runs only over a whole sequence (the layer-by-layer ``seq``): a model holding it cannot stream
SEQUENCE_ONLY = True
DIRECTIONS = ("reverse", "bidirectional")


def check(where: str, layer: dict, P) -> int:
    """``hidden_size`` H and ``direction`` (``reverse`` | ``bidirectional``) with D·H = input_size; the
    output has the input's size."""
    h = P._int(where, layer, "hidden_size")
    d = choice(where, layer, "direction", DIRECTIONS, P)
    n = (2 if d == "bidirectional" else 1) * h
    if n != layer["input_size"]:
        raise P._fail(
            "bad size",
            f"{where}: a {d} output of hidden_size {h} has {n} values; the op reads {layer['input_size']}",
        )
    return n


def tensor_specs(layer: dict) -> dict:
    """No tensors."""
    return {}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """No tensors to check."""


def pack(layer: dict, ctx) -> None:
    """The first reverse unit (H for bidirectional, 0 for reverse) in the aux block."""
    ctx.aux([layer["hidden_size"] if layer["direction"] == "bidirectional" else 0])


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def emit_seq(c: Code, lay: Layer, src: str, dst: str, W: int) -> None:
    """Over the chunk in ``src`` (rows of width W, T rows) into ``dst``: forward units row by row, the
    reverse units from row 0."""
    r0 = lay.aux(c.wf, 1)[0]
    n = lay.nout
    k = c.fresh("k")
    with c.block("for t in range(T):"):
        if r0 > 0:
            with c.block(f"for {k} in range({I(r0)}):"):
                c(f"{dst}[t * {I(W)} + {k}] = {src}[t * {I(W)} + {k}]")
        with c.block(f"for {k} in range({I(r0)}, {I(n)}):"):
            c(f"{dst}[t * {I(W)} + {k}] = {src}[{k}]")


def numpy_seq(lay: Layer, wf, wb, M, cur: list) -> list:
    """The numpy implementation over the chunk's rows ``cur`` (a list of T arrays)."""
    r0 = lay.aux(wf, 1)[0]
    out = []
    for x in cur:
        y = np.array(x, np.float32)
        y[r0:] = cur[0][r0:]
        out.append(y)
    return out
