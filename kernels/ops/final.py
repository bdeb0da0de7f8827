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

It may also read the [h; c] output of an lstm op with ``cell_output`` (size 2·D·H): the rule applies to
each of the two blocks of D·H units, so the c block at the last step is [c_fwd(T−1); c_bwd(0)] = ``Y_c``.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._graph import choice
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_FINAL
NAME = "final"
RECURRENT = False
INPUTS = 1
#: runs only over a whole sequence (the layer-by-layer ``seq``): a model holding it cannot stream
SEQUENCE_ONLY = True
DIRECTIONS = ("reverse", "bidirectional")


def check(where: str, layer: dict, P) -> int:
    """``hidden_size`` H and ``direction`` (``reverse`` | ``bidirectional``) with input_size D·H (or 2·D·H:
    an lstm's [h; c] output); the output has the input's size."""
    h = P._int(where, layer, "hidden_size")
    d = choice(where, layer, "direction", DIRECTIONS, P)
    n = (2 if d == "bidirectional" else 1) * h
    if layer["input_size"] not in (n, 2 * n):
        raise P._fail(
            "bad size",
            f"{where}: a {d} output of hidden_size {h} has {n} values; the op reads {layer['input_size']} "
            f"(an lstm's [h; c] output: {2 * n})",
        )
    return layer["input_size"]


def tensor_specs(layer: dict) -> dict:
    """No tensors."""
    return {}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """No tensors to check."""


def pack(layer: dict, ctx) -> None:
    """The first reverse unit of a block (H for bidirectional, 0 for reverse) and the block width D·H in
    the aux block; the op needs the whole sequence."""
    h = layer["hidden_size"]
    bi = layer["direction"] == "bidirectional"
    ctx.aux([h if bi else 0, (2 if bi else 1) * h])
    name = layer["name"]
    ctx.not_streamable(f"op {name!r} reads the final step of a reverse direction: Model.predict(X) only")


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def emit_seq(c: Code, lay: Layer, src: str, dst: str, W: int) -> None:
    """Over the chunk in ``src`` (rows of width W, T rows) into ``dst``: in each block of D·H units, the
    forward units row by row, the reverse units from row 0."""
    r0, n = lay.aux(c.wf, 2)
    k = c.fresh("k")
    with c.block("for t in range(T):"):
        for b0 in range(0, lay.nout, n):
            if r0 > 0:
                with c.block(f"for {k} in range({I(b0)}, {I(b0 + r0)}):"):
                    c(f"{dst}[t * {I(W)} + {k}] = {src}[t * {I(W)} + {k}]")
            with c.block(f"for {k} in range({I(b0 + r0)}, {I(b0 + n)}):"):
                c(f"{dst}[t * {I(W)} + {k}] = {src}[{k}]")


def numpy_seq(lay: Layer, wf, wb, M, cur: list) -> list:
    """The numpy implementation over the chunk's rows ``cur`` (a list of T arrays)."""
    r0, n = lay.aux(wf, 2)
    out = []
    for x in cur:
        y = np.array(x, np.float32)
        for b0 in range(0, lay.nout, n):
            y[b0 + r0 : b0 + n] = cur[0][b0 + r0 : b0 + n]
        out.append(y)
    return out
