"""What the recurrent cells (rnn, lstm, gru) share in generated code: their gate products.

For direction d a packed recurrent layer holds either one fused float32 block ``[W | R]`` (descriptor 2d,
rows G·H, columns I+H; flag ``F_FUSED``) used with ``xh = [x; h]``, or int8 ``W`` (descriptor 2d) and
``R`` (descriptor 2d+1) with per-row scales.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _qemit
from ._emit import Code, axpy_acc, fill, gemv_acc
from .record import Layer


def writes(lay: Layer) -> list[tuple[int, int]]:
    """The end-of-step write-backs of a forward recurrent layer whose state is set from the graph (plan
    attributes ``h_next``/``c_next``, flags ``F_HNEXT``/``F_CNEXT``): [(offset of h or c in M, offset of
    the value it takes)]. A step graph whose state output is not the layer's own Y_h/Y_c (``s' = f(Y_h)``)
    runs the cell from that state at the next step, as ONNX with ``initial_h = s`` does."""
    out = []
    if lay.has(L.F_HNEXT):
        out.append((lay.state_off, lay.in2_off))
    if lay.has(L.F_CNEXT):
        out.append((lay.state_off + lay.hidden, lay.aux_off))
    return out


def emit_write(c: Code, lay: Layer, src_of) -> None:
    """The write-backs of :func:`writes` (``src_of(offset, n)``: the array holding the value there)."""
    for st, off in writes(lay):
        fill(c, "M", st, lay.hidden, src_of(off, lay.hidden), 0)


def numpy_write(lay: Layer, M, vals: dict) -> None:
    """The write-backs of :func:`writes` in numpy (``vals``: offset -> that value of the step)."""
    for st, off in writes(lay):
        M[st : st + lay.hidden] = np.asarray(vals[off], np.float32)


def _fused_xh(c: Code, lay: Layer) -> bool:
    """Whether the gates are one product with ``xh = [x; h]``: the fused layout without the transposed
    input part, or in a block of many streams (one blocked product beats a per-stream axpy there)."""
    return lay.has(L.F_FUSED) and (not lay.has(L.F_XT) or (c.lanes is not None and c.lanes.blocking))


def load_xh(c: Code, lay: Layer, x: str, h: str, xh: str) -> None:
    """xh = [x; h] (only the fused single-product layout reads it)."""
    if _fused_xh(c, lay):
        fill(c, xh, 0, lay.nin, x)
        fill(c, xh, lay.nin, lay.hidden, h)


def gates_acc(
    c: Code, lay: Layer, d: int, r0: int, nrows: int, x: str, h: str, xh: str, y: str, y0: int
) -> None:
    """y[y0:y0+nrows] += W[r0:r0+nrows]·x + R[r0:r0+nrows]·h."""
    if _fused_xh(c, lay):
        gemv_acc(c, lay.mats[2 * d], 0, lay.nin + lay.hidden, r0, nrows, xh, y, y0)
    elif lay.has(L.F_XT):
        x_acc(c, lay, d, r0, nrows, x, y, y0)
        h_acc(c, lay, d, r0, nrows, h, y, y0)
    else:
        gemv_acc(c, lay.mats[2 * d], 0, lay.nin, r0, nrows, x, y, y0)
        R = lay.mats[2 * d + 1]
        if dynamic(c, lay) and R.int8:
            qb, s = _qemit.quantize(c, h, lay.hidden, xh)
            qcap = 4 * (lay.nin + lay.hidden)  # bytes of the [x; h] scratch
            _qemit.gemv_dyn(c, R, 0, lay.hidden, r0, nrows, qb, s, y, y0, qcap=qcap)
        else:
            gemv_acc(c, R, 0, lay.hidden, r0, nrows, h, y, y0)


def dynamic(c: Code, lay: Layer) -> bool:
    """Whether this layer's R·h runs on a per-step quantized h (``load(..., dynamic_int8=True)``): one
    stream (not a block of streams), an LSTM or RNN (whose one ``gates_acc`` covers every gate row)."""
    return c.qmode is not None and c.lanes is None and lay.kind in (L.K_LSTM, L.K_RNN)


def x_acc(c: Code, lay: Layer, d: int, r0: int, nrows: int, x: str, y: str, y0: int) -> None:
    """y[y0:y0+nrows] += W[r0:r0+nrows]·x."""
    if lay.has(L.F_XT):
        axpy_acc(c, lay.mats[L.XT], r0, nrows, x, y, y0)
        return
    gemv_acc(c, lay.mats[2 * d], 0, lay.nin, r0, nrows, x, y, y0)


def h_acc(c: Code, lay: Layer, d: int, r0: int, nrows: int, h: str, y: str, y0: int) -> None:
    """y[y0:y0+nrows] += R[r0:r0+nrows]·h."""
    if lay.has(L.F_FUSED):
        gemv_acc(c, lay.mats[2 * d], lay.nin, lay.hidden, r0, nrows, h, y, y0)
    else:
        gemv_acc(c, lay.mats[2 * d + 1], 0, lay.hidden, r0, nrows, h, y, y0)
