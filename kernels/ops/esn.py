"""Echo state network reservoir (leaky integrator) as generated code::

    x ← (1 − a)·x + a·tanh(W_in·u + W·x + b)
    y = x            (readout_input = "state")
    y = [1; u; x]    (readout_input = "extended")

W_in is descriptor ``M_IN`` (and, float32, transposed in ``XT``); W is dense (descriptor ``M_RES``) or
CSR (values in descriptor ``M_RES``; int32 column indices and row pointers in ``wb``'s int32 view at vector
slots ``V_INDICES`` and ``V_INDPTR``), summed by ``kernels.esn._csr_acc``. A CSR reservoir dense enough
is packed dense (:func:`densified`; the file stays CSR).
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from . import _qemit
from ._emit import XT_MAX_INPUTS, Code, I, axpy_acc, fill, gemv_acc
from .record import Layer

KIND = L.K_ESN
NAME = "esn"
RECURRENT = False
LANES = True  # its products can be blocked over many streams (kernels/lanes.py)
M_IN, M_RES = 0, 1  # matrix descriptors: W_in, the reservoir W
PROJ_MAT = M_IN  # chunk mode: the input projection's matrix
V_BIAS, V_INDICES, V_INDPTR = 0, 1, 2  # vector slots: b (flag F_BIAS); CSR column indices, row pointers
#: a CSR reservoir at least this dense is packed as a dense matrix (the file stays CSR): from ~4% nonzeros
#: on, one vectorized pass over all N² weights beats the gathers (500 units at 10%: 32 -> 16 µs per step)
DENSIFY_MIN_DENSITY = 0.05
#: ... unless the dense matrix would take more than this many bytes
DENSIFY_MAX_BYTES = 4 << 20


def check(where: str, layer: dict, P) -> int:
    """``reservoir_size`` N, ``leak_rate`` in (0, 1], ``readout_input`` (state, the default, or extended
    [1; u; x]), ``sparse`` (default false) with ``nnz`` in [0, N²]. The output is N (or 1 + I + N) per
    step."""
    n = P._int(where, layer, "reservoir_size")
    a = P._num(where, layer.get("leak_rate"), "leak_rate")
    if not 0.0 < a <= 1.0:
        raise P._fail("bad field", f"{where}: leak_rate {a} is outside (0, 1]")
    ro = layer.setdefault("readout_input", "state")
    if ro not in ("state", "extended"):
        raise P._fail("bad field", f"{where}: readout_input {P._short(ro)}")
    if P._bool(where, layer, "sparse"):
        P._int(where, layer, "nnz", 0, n * n)
    return n if ro == "state" else 1 + layer["input_size"] + n


def tensor_specs(layer: dict) -> dict:
    """``W_in`` [N, I], optional ``b`` [N], and the reservoir: ``W`` [N, N], or CSR ``W_data`` [nnz],
    ``W_indices`` [nnz], ``W_indptr`` [N+1] when sparse."""
    n = layer["reservoir_size"]
    spec = {"W_in": ((n, layer["input_size"]), True), "b": ((n,), False)}
    if layer.get("sparse"):
        nnz = layer["nnz"]
        spec.update({"W_data": ((nnz,), True), "W_indices": ((nnz,), True), "W_indptr": ((n + 1,), True)})
    else:
        spec["W"] = ((n, n), True)
    return spec


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The reservoir state x (N)."""
    return (("x", layer["reservoir_size"]),)


def scratch(layer: dict) -> int:
    """The pre-activation (N), and the quantized state of dynamic_int8 (N bytes, and a 68-byte copy of its
    last chunk)."""
    n = layer["reservoir_size"]
    return n + (n + 3) // 4 + 17


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """A CSR reservoir's row pointer runs from 0 to nnz without decreasing; its column indices are in
    [0, N)."""
    if not layer["sparse"]:
        return
    n, nnz = layer["reservoir_size"], layer["nnz"]
    ptr = tensors[roles["W_indptr"]].astype(np.int64)
    ind = tensors[roles["W_indices"]].astype(np.int64)
    if ptr[0] != 0 or ptr[-1] != nnz or np.any(np.diff(ptr) < 0):
        raise P._fail("bad weights", f"{where}: W_indptr is not a valid CSR row pointer for nnz={nnz}")
    if nnz and (ind.min() < 0 or ind.max() >= n):
        raise P._fail("bad weights", f"{where}: W_indices out of range [0, {n})")


def densified(n: int, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> np.ndarray | None:
    """The (n, n) dense form of a CSR reservoir (same dtype: float32, or int8 with the same per-row scales),
    or None when it is too sparse or too large for that to pay (see DENSIFY_MIN_DENSITY)."""
    item = 1 if data.dtype == np.int8 else 4
    if n == 0 or data.size < DENSIFY_MIN_DENSITY * n * n or n * n * item > DENSIFY_MAX_BYTES:
        return None
    rows = np.repeat(np.arange(n), np.diff(np.asarray(indptr, np.int64)))
    cols = np.asarray(indices, np.int64)
    if np.unique(rows * n + cols).size != cols.size:
        return None  # repeated (row, col) entries add up in CSR; keep that form (int8 sums could overflow)
    dense = np.zeros((n, n), np.int8 if item == 1 else np.float32)
    dense[rows, cols] = data if item == 1 else np.asarray(data, np.float32)
    return dense


def pack(layer: dict, ctx) -> None:
    """W_in (and its transpose when float32), the reservoir (dense, densified CSR or CSR), b, the readout
    flag and the leak rate."""
    n = layer["reservoir_size"]
    ctx.set_field(L.R_H, n)
    w_in = ctx.tensor("W_in")
    ctx.matrix(M_IN, "W_in", w_in)
    if w_in.dtype != np.int8:  # the step's layout of W_in (kernels/layout.py F_XT)
        ctx.matrix(L.XT, "W_in", np.ascontiguousarray(np.asarray(w_in, np.float32).T))
        ctx.set_flag(L.F_XT)
    elif w_in.shape[1] <= XT_MAX_INPUTS:  # int8: dequantized and transposed, as recurrent cells do
        ctx.matrix(L.XT, "W_in", np.ascontiguousarray(np.asarray(ctx.dequantized("W_in"), np.float32).T))
        ctx.set_flag(L.F_XT)
    data = ctx.tensor("W_data") if layer["sparse"] else None
    dense = None if data is None else densified(n, data, ctx.tensor("W_indices"), ctx.tensor("W_indptr"))
    if dense is not None:
        ctx.matrix(M_RES, "W_data", dense)
        ctx.mark("dense_reservoirs")
    elif layer["sparse"]:
        ctx.set_flag(L.F_SPARSE)
        ctx.matrix(M_RES, "W_data", data, dims=(n, n, 0))
        ctx.index_vector(V_INDICES, ctx.tensor("W_indices"))
        ctx.index_vector(V_INDPTR, ctx.tensor("W_indptr"))
    else:
        ctx.matrix(M_RES, "W", ctx.tensor("W"))
    b = ctx.tensor("b")
    if b is not None:
        ctx.set_flag(L.F_BIAS)
        ctx.vector(V_BIAS, b)
    if layer["readout_input"] == "extended":
        ctx.set_flag(L.F_EXTENDED)
    ctx.params([], None, None, leak=layer["leak_rate"])


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """One reservoir step on the state in M; y is the layer output."""
    N = lay.hidden
    st, g = lay.state_off, lay.scratch_off
    xs = c.view("xs", "M", st, st + N)
    gs = c.view("g", "M", g, g + N)
    fill(c, gs, 0, N, "wf" if lay.has(L.F_BIAS) else None, lay.vecs[V_BIAS])
    if lay.has(L.F_XT):
        axpy_acc(c, lay.mats[L.XT], 0, N, x, gs)
    else:
        gemv_acc(c, lay.mats[M_IN], 0, lay.nin, 0, N, x, gs)
    _tail(c, lay, x, y, xs, gs)


def proj_bias(lay: Layer, d: int) -> list[tuple[int, int, int]]:
    """Chunk mode: the bias segments (wf offset, first row, rows) folded into the input projection."""
    return [(lay.vecs[V_BIAS], 0, lay.hidden)] if lay.has(L.F_BIAS) else []


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
    m = lay.mats[M_RES]
    if lay.has(L.F_SPARSE):
        vals = "wb" if m.int8 else "wf"
        soff = m.soff if m.int8 else -1
        c(
            f"csr_acc({vals}, {I(m.off)}, wb.view(np.int32), {I(lay.vecs[V_INDICES])}, "
            f"{I(lay.vecs[V_INDPTR])}, {I(N)}, {xs}, {gs}, wf, {I(soff)})"
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
    g = _np.mat(wf, wb, lay.mats[M_IN]) @ u
    if lay.has(L.F_BIAS):
        g = g + _np.vec(wf, lay.vecs[V_BIAS], N)
    m = lay.mats[M_RES]
    if lay.has(L.F_SPARSE):
        wi = wb.view(np.int32)
        ptr = wi[lay.vecs[V_INDPTR] : lay.vecs[V_INDPTR] + N + 1]
        nnz = int(ptr[-1])
        ind = wi[lay.vecs[V_INDICES] : lay.vecs[V_INDICES] + nnz]
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
