"""Echo state network reservoir (leaky integrator) as generated code::

    x ← (1 − a)·x + a·tanh(W_in·u + W·x + b)
    y = x            (readout_input = "state")
    y = [1; u; x]    (readout_input = "extended")

W is dense (descriptor 1) or CSR (values in descriptor 1; int32 column indices and row pointers in
``wb``'s int32 view at vector slots 1 and 2), summed by ``kernels.esn._csr_acc``.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from . import _qemit
from ._emit import Code, I, axpy_acc, fill, gemv_acc
from .record import Layer

KIND = L.K_ESN
NAME = "esn"
RECURRENT = False
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """One reservoir step on the state in M; y is the layer output."""
    N = lay.hidden
    st, g = lay.state_off, lay.scratch_off
    xs = c.view("xs", "M", st, st + N)
    gs = c.view("g", "M", g, g + N)
    fill(c, gs, 0, N, "wf" if lay.has(L.F_BIAS) else None, lay.vecs[0])
    if lay.has(L.F_XT):
        axpy_acc(c, lay.mats[L.XT], 0, N, x, gs)
    else:
        gemv_acc(c, lay.mats[0], 0, lay.nin, 0, N, x, gs)
    _tail(c, lay, x, y, xs, gs)


def proj_bias(lay: Layer, d: int) -> list[tuple[int, int, int]]:
    """Chunk mode: the bias segments (wf offset, first row, rows) folded into the input projection."""
    return [(lay.vecs[0], 0, lay.hidden)] if lay.has(L.F_BIAS) else []


def proj_rows(lay: Layer) -> int:
    """Chunk mode: rows of the input projection W_in·u."""
    return lay.hidden


def emit_apply_proj(c: Code, lay: Layer, p: str, x: str, y: str) -> None:
    """One reservoir step whose input part p (N,) = W_in·u + b was computed for the whole chunk (x is u,
    read only by the extended readout)."""
    N = lay.hidden
    st, g = lay.state_off, lay.scratch_off
    xs, gs = c.fresh("xs"), c.fresh("g")
    c(f"{xs} = M[{I(st)} : {I(st + N)}]")
    c(f"{gs} = M[{I(g)} : {I(g + N)}]")
    fill(c, gs, 0, N, p)
    _tail(c, lay, x, y, xs, gs)


def _tail(c: Code, lay: Layer, x: str, y: str, xs: str, gs: str) -> None:
    """gs += W·xs, then the leaky update of the state xs and the output y."""
    N = lay.hidden
    m = lay.mats[1]
    if lay.has(L.F_SPARSE):
        vals = "wb" if m.int8 else "wf"
        soff = m.soff if m.int8 else -1
        c(
            f"csr_acc({vals}, {I(m.off)}, wb.view(np.int32), {I(lay.vecs[1])}, {I(lay.vecs[2])}, {I(N)}, "
            f"{xs}, {gs}, wf, {I(soff)})"
        )
    elif m.int8 and c.qmode is not None and c.lanes is None:  # load(..., dynamic_int8=True)
        nq = (N + 3) // 4 + _qemit.TAIL_BYTES // 4  # pack.py's scratch of an ESN
        qbuf = c.view("qf", "M", lay.scratch_off + N, lay.scratch_off + N + nq)
        qb, s = _qemit.quantize(c, xs, N, qbuf)
        _qemit.gemv_dyn(c, m, 0, N, 0, N, qb, s, gs, 0, qcap=4 * nq)
    else:
        gemv_acc(c, m, 0, N, 0, N, xs, gs)
    a, ia = c.f32(lay.leak), c.f32(1.0 - lay.leak)  # the leak is a float32 value: 1 − a is exact here
    with c.block(f"for k in range({I(N)}):"):
        c(f"{xs}[k] = {ia} * {xs}[k] + {a} * fast_tanh({gs}[k])")
    if lay.has(L.F_EXTENDED):
        c(f"{y}[0] = ONE")
        fill(c, y, 1, lay.nin, x)
        fill(c, y, 1 + lay.nin, N, xs)
    else:
        fill(c, y, 0, N, xs)


def numpy_apply(lay: Layer, wf, wb, M, u):
    """The numpy implementation of one reservoir step (state in M updated); returns y."""
    N, st = lay.hidden, lay.state_off
    x = M[st : st + N]
    g = _np.mat(wf, wb, lay.mats[0]) @ u
    if lay.has(L.F_BIAS):
        g = g + _np.vec(wf, lay.vecs[0], N)
    m = lay.mats[1]
    if lay.has(L.F_SPARSE):
        wi = wb.view(np.int32)
        ptr = wi[lay.vecs[2] : lay.vecs[2] + N + 1]
        nnz = int(ptr[-1])
        ind = wi[lay.vecs[1] : lay.vecs[1] + nnz]
        rows = np.repeat(np.arange(N), np.diff(ptr))
        if m.int8:
            data = wb[m.off : m.off + nnz].astype(np.float32) * wf[m.soff : m.soff + N][rows]
        else:
            data = wf[m.off : m.off + nnz]
        # per-row sums; rows without entries (also trailing ones) add nothing
        g = g + np.bincount(rows, weights=data * x[ind], minlength=N).astype(np.float32)
    else:
        g = g + _np.mat(wf, wb, m) @ x
    a = np.float32(lay.leak)
    x[:] = (1 - a) * x + a * np.tanh(g)
    if lay.has(L.F_EXTENDED):
        return np.concatenate([[1.0], u, x]).astype(np.float32)
    return x.copy()
