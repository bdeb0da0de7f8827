"""Echo state network reservoir (leaky integrator) as generated code::

    x ← (1 − a)·x + a·tanh(W_in·u + W·x + b)
    y = x            (readout_input = "state")
    y = [1; u; x]    (readout_input = "extended")

W_in is descriptor ``M_IN`` (and, float32, transposed in ``XT``); W is dense (descriptor ``M_RES``) or
sparse (flag ``F_SPARSE``). A sparse reservoir is packed, by density (the file stays CSR):

* dense (:func:`densified`) from ``DENSIFY_MIN_DENSITY`` nonzeros on;
* below that, SELL-8 (flag ``F_SELL``, ``kernels/sparse.py``): float32 values in descriptor ``M_RES``
  (an int8 file's q·scale), uint16 column indices in ``wb``'s uint16 view at vector slot ``V_INDICES``,
  the slices' first slots and the lanes' rows in its int32 view at ``V_INDPTR`` and ``V_ROWS``, summed by
  ``kernels.sparse.sell8_acc``;
* CSR when N > 65536 (values in ``M_RES``; int32 column indices and row pointers at ``V_INDICES`` and
  ``V_INDPTR``), summed by ``kernels.esn._csr_acc``.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from .. import sparse
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
#: vector slots: b (flag F_BIAS); column indices, row pointers (CSR) or slices' first slots (SELL-8); the
#: lanes' rows (SELL-8)
V_BIAS, V_INDICES, V_INDPTR, V_ROWS = 0, 1, 2, 3
#: a CSR reservoir at least this dense is packed as a dense matrix (the file stays CSR), below it SELL-8.
#: Measured on a Zen 1 (AVX2, benchmarks/sparse_gemv.py, W·x of N = 500, µs): dense panels 21.5-23.5 at
#: any density; SELL-8 2.4 at 1 %, 3.3 at 2 %, 5.2 at 5 %, 9.1 at 10 %, 15.9 at 20 %, 22.8 at 30 %, 29.5 at
#: 40 %; the scalar CSR loop 7.0, 19.9, 23.8, 42, 116 (20 %). (The previous cut, 5 %, was CSR against
#: AVX-512 dense on an Intel host, where dense panels are ~2x faster relative to gathers: the crossover
#: there is likely lower, unmeasured.)
DENSIFY_MIN_DENSITY = 0.30
#: False: sparse reservoirs below the dense cut stay CSR (the before, for benchmarks/sparse_gemv.py-style
#: comparisons)
SELL = True
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
    """W_in (and its transpose when float32), the reservoir (dense, densified CSR, SELL-8 or CSR), b, the
    readout flag and the leak rate."""
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
    elif layer["sparse"] and SELL and n <= sparse.MAX_N:
        ind, ptr = ctx.tensor("W_indices"), ctx.tensor("W_indptr")
        if (
            data.dtype == np.int8
        ):  # float32 q·scale: an int8 SELL-8 measured 1.1-1.2x slower (sitofp per slot)
            rows = np.repeat(np.arange(n), np.diff(np.asarray(ptr, np.int64)))
            data = data.astype(np.float32) * np.asarray(ctx.tensor("W_data_scale"), np.float32)[rows]
            ctx.mark("dequantized")
        vals, cols, first, lanes = sparse.sell_pack(n, np.asarray(data, np.float32), ind, ptr)
        ctx.set_flag(L.F_SPARSE)
        ctx.set_flag(L.F_SELL)
        ctx.matrix(M_RES, "W_data", vals, dims=(n, n, 0))
        ctx.index_vector(V_INDICES, cols, np.uint16)
        ctx.index_vector(V_INDPTR, first)
        ctx.index_vector(V_ROWS, lanes)
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
    if lay.has(L.F_SELL):
        c(
            f"sell8_acc(wf, {I(m.off)}, wb.view(np.uint16), {I(lay.vecs[V_INDICES])}, wb.view(np.int32), "
            f"{I(lay.vecs[V_INDPTR])}, {I(lay.vecs[V_ROWS])}, {I(N)}, {xs}, {gs})"
        )
    elif lay.has(L.F_SPARSE):
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
    if lay.has(L.F_SELL):
        g = g + _sell_product(lay, wf, wb, x)
    elif lay.has(L.F_SPARSE):
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


def _sell_product(lay: Layer, wf, wb, x) -> np.ndarray:
    """W·x (N,) float32 of the SELL-8 reservoir of ``lay`` (``kernels/sparse.py``), in numpy."""
    N, S = lay.hidden, sparse.SLICE
    wi = wb.view(np.int32)
    ns = -(-N // S)
    first = wi[lay.vecs[V_INDPTR] : lay.vecs[V_INDPTR] + ns + 1]
    n = int(first[-1]) * S
    vals = wf[lay.mats[M_RES].off : lay.mats[M_RES].off + n]
    cols = wb.view(np.uint16)[lay.vecs[V_INDICES] : lay.vecs[V_INDICES] + n]
    lanes = wi[lay.vecs[V_ROWS] : lay.vecs[V_ROWS] + ns * S]
    slice_of = np.repeat(np.arange(ns), np.diff(first))  # the slice of each slot
    rows = lanes[(slice_of[:, None] * S + np.arange(S)).ravel()]  # N: a padding lane
    return np.bincount(rows, weights=vals * x[cols], minlength=N + 1)[:N].astype(np.float32)
