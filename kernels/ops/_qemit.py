"""The dynamically quantized int8 GEMV of generated code (``load(..., dynamic_int8=True)``).

Per step the vector v (the recurrent state h) is quantized with one scale, like ONNX Runtime's dynamic
quantization of activations: ``s = max|v| / 127``, ``q = floor(v / s + 1/2)`` in [−127, 127] (all zero
when v is), stored as ``q + 128`` in uint8 in the layer's scratch (a recurrent cell's ``[x; h]`` buffer,
which its int8 layout does not otherwise use; an ESN's scratch past its N gate values). Each row of the
int8 weights W (per-row scale ``ws``) then gets ``y += ws·s·Σ q·W`` with the sum in exact int32
arithmetic: by ``vnni.dot4_u8s8`` (vpdpbusd) when the code is generated for a CPU with AVX512-VNNI
(``Code.qmode == "vnni"``), else by ``vnni.dot4_s8_panel`` (AVX2 ``vpsignb``/``vpmaddubsw``/``vpmaddwd``
over an int8 panel copy of the matrix made at load, :func:`panel_table`; ``"avx2"``: q is stored as
int8 then, not ``q + 128``), else by a plain integer loop (``"loop"``) with the same result.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ..vnni import CHUNK, PCHUNK, panelize_i8
from ._emit import Code, I, row_blocks
from .record import Matrix, read_header, read_layer


def vnni_cols(cols: int) -> int:
    """The columns of a product ``dot4_u8s8`` sums (its row sums cover them): all of them from 64 on (whole
    64-byte chunks, then one last chunk ending at the last column over a copy of q whose columns the
    chunks before already counted are 0), none below."""
    return cols if cols >= CHUNK else 0


#: bytes past the quantized vector a product with a last partial chunk needs in its scratch (the copy)
TAIL_BYTES = 4 + CHUNK


def dynamic_matrices(wf: np.ndarray) -> list[Matrix]:
    """The int8 matrices the dynamic products read: R of LSTM/GRU/RNN layers, W of dense ESN reservoirs."""
    out = []
    for i in range(read_header(wf).n_layers):
        lay = read_layer(wf, i)
        if lay.kind in (L.K_LSTM, L.K_GRU, L.K_RNN) and not lay.has(L.F_FUSED):
            out += [lay.mats[2 * d + 1] for d in range(lay.directions) if lay.mats[2 * d + 1].int8]
        elif lay.kind == L.K_ESN and not lay.has(L.F_SPARSE) and lay.mats[1].int8:
            out.append(lay.mats[1])
    return out


def row_sums(wf: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """Per row of each :func:`dynamic_matrices` matrix, the sum of its first :func:`vnni_cols` weights (as
    float32: exact, |sum| < 2**24), to take the +128 offset of the quantized vector off ``vpdpbusd``'s
    sums: a float32 array to append to ``wf``, and matrix offset -> index of its first sum in that array."""
    parts, where, n = [], {}, 0
    for m in dynamic_matrices(wf):
        nv = vnni_cols(m.cols)
        w = wb[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld)[:, :nv]
        parts.append(w.astype(np.int64).sum(axis=1).astype(np.float32))
        where[m.off] = n
        n += m.rows
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), where


def panel_table(wf: np.ndarray, wb: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """The AVX2 int8 panels (``vnni.panelize_i8``) of the whole 4-row blocks of each
    :func:`dynamic_matrices` matrix of at least 4 rows and PCHUNK columns whose weights avoid −128 (which
    ``vpsignb`` cannot negate): one int8 array to append to ``wb`` (each panel a whole number of 64-byte
    lines), and matrix offset -> index of its panel in that array."""
    parts, where, n = [], {}, 0
    for m in dynamic_matrices(wf):
        if m.off in where:
            continue
        p, w = panel_table_for(m, wb[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld)[:, : m.cols])
        if w:
            parts.append(p)
            where[m.off] = n
            n += len(p)
    return (np.concatenate(parts) if parts else np.zeros(0, np.int8)), where


def panel_table_for(m: Matrix, w: np.ndarray) -> tuple[np.ndarray, dict[int, int]]:
    """The panel of one int8 matrix ``m`` whose weights are ``w`` (rows, cols) as :func:`panel_table`
    makes it ({m.off: 0}), or an empty array and {} when it takes the loop."""
    r4 = m.rows - m.rows % 4
    if r4 == 0 or m.cols < PCHUNK or w.min() == -128:
        return np.zeros(0, np.int8), {}
    p = panelize_i8(w[:r4])
    return np.concatenate([p, np.zeros(-len(p) % 64, np.int8)]), {m.off: 0}


def padded_cols(cols: int) -> int:
    """Bytes of the quantized vector a panel product reads (its columns rounded up to whole chunks)."""
    return cols + (-cols % PCHUNK)


def quantize(c: Code, v: str, n: int, qbuf: str) -> tuple[str, str]:
    """Emit the quantization of v[0:n] into the uint8 view of ``qbuf`` (a float32 scratch of at least n/4
    values; the int8 view in ``"avx2"`` mode, q itself, the bytes past n left as they are: the panels'
    padding weights are 0); returns (the view, the float32 scale s)."""
    amax, k, a, inv, s, qb = (c.fresh(t) for t in ("amax", "k", "a", "inv", "s", "qb"))
    c(f"{amax} = Z")
    with c.block(f"for {k} in range({I(n)}):"):
        c(f"{a} = abs({v}[{k}])")
        c(f"{amax} = {a} if {a} > {amax} else {amax}")
    c(f"{inv} = {c.f32(127.0)} / {amax} if {amax} > Z else Z")
    c(f"{s} = {amax} * {c.f32(1.0 / 127.0)}")
    if c.qmode == "avx2":
        c(f"{qb} = {qbuf}.view(np.int8)")
        with c.block(f"for {k} in range({I(n)}):"):
            c(f"{qb}[{k}] = np.int8(np.int32(np.floor({v}[{k}] * {inv} + {c.f32(0.5)})))")
        return qb, s
    c(f"{qb} = {qbuf}.view(np.uint8)")
    with c.block(f"for {k} in range({I(n)}):"):
        c(f"{qb}[{k}] = np.uint8(np.int32(np.floor({v}[{k}] * {inv} + {c.f32(0.5)})) + 128)")
    return qb, s


def gemv_dyn(
    c: Code,
    m: Matrix,
    col0: int,
    cols: int,
    r0: int,
    nrows: int,
    qb: str,
    s: str,
    y: str,
    y0: int,
    qcap: int = 0,
) -> None:
    """y[y0+i] += ws[r0+i] · s · Σ_k (qb[k] − 128) · W[r0+i, col0+k] for i < nrows (``m`` int8); ``qcap``:
    bytes the view ``qb`` holds (room past the vector for the last chunk's copy of q, TAIL_BYTES; for a
    panel product, its padded columns). In ``"avx2"`` mode qb holds q itself (see :func:`quantize`)."""
    if c.qmode == "avx2":
        _gemv_dyn_panel(c, m, col0, cols, r0, nrows, qb, s, y, y0, qcap)
        return
    ld, base = m.ld, m.off + col0 + r0 * m.ld
    rs = c.rowsums.get(m.off) if c.qmode == "vnni" and c.rowsums and col0 == 0 else None
    rem = cols % CHUNK
    t0 = cols + (-cols % 4)  # the copy's first byte
    if rs is None or vnni_cols(cols) == 0 or (rem and t0 + CHUNK > qcap):
        rs = None
    nv = cols - rem if rs is not None else 0
    i, b, k, qv, qt = c.fresh("i"), c.fresh("b"), c.fresh("k"), c.fresh("qv"), c.fresh("qt")
    a = [c.fresh("s") for _ in range(4)]
    t = [c.fresh("t") for _ in range(4)]
    n4 = nrows - nrows % 4
    if nv and rem and n4:  # the last chunk's q: 0 where the whole chunks already counted the column
        c(f"{qt} = {qb}[{I(t0)} : {I(t0 + CHUNK)}]")
        with c.block(f"for {k} in range({I(CHUNK)}):"):
            c(f"{qt}[{k}] = {qb}[{I(cols - CHUNK)} + {k}] if {k} >= {I(CHUNK - rem)} else np.uint8(0)")

    def body(nr: int, row: str) -> None:
        c(f"{b} = {I(base)} + ({row}) * {I(ld)}")
        if nv and nr == 4:
            c(f"{', '.join(a)} = dot4_u8s8(wb, {b}, {I(ld)}, {qb}, {I(nv)})")
            if rem:
                c(f"{', '.join(t)} = dot4_u8s8(wb, {b} + {I(cols - CHUNK)}, {I(ld)}, {qt}, {I(CHUNK)})")
            for j in range(nr):  # Σ (q + 128)·w − 128 Σ w (exact)
                tj = f" + {t[j]}" if rem else ""
                sj = f"np.int32(wf[{I(rs + r0)} + {row} + {I(j)}])"
                c(f"{a[j]} = np.int32({a[j]}{tj} - {sj} * np.int32(128))")
        else:
            for j in range(nr):
                c(f"{a[j]} = np.int32(0)")
        start = cols if nv and nr == 4 else 0
        if cols > start:
            with c.block(f"for {k} in range({I(start)}, {I(cols)}):"):
                c(f"{qv} = np.int32({qb}[{k}]) - np.int32(128)")
                for j in range(nr):
                    c(f"{a[j]} = np.int32({a[j]} + {qv} * np.int32(wb[{b} + {I(j * ld)} + {k}]))")
        for j in range(nr):
            ws = f"wf[{I(m.soff + r0)} + {row} + {I(j)}]"
            c(f"{y}[{I(y0)} + {row} + {I(j)}] += np.float32({a[j]}) * ({s} * {ws})")

    row_blocks(c, i, nrows, body)


def _gemv_dyn_panel(
    c: Code, m: Matrix, col0: int, cols: int, r0: int, nrows: int, qb: str, s: str, y: str, y0: int, qcap: int
) -> None:
    """:func:`gemv_dyn` on q stored as int8: the whole 4-row blocks from the matrix's AVX2 panel when it has
    one (``Code.qpanels``; the panel covers all its columns, so ``col0`` 0 and ``cols`` all of them, and
    blocks start at a row that is a multiple of 4), the other rows (or all) as an integer loop."""
    p = c.qpanels.get(m.off) if col0 == 0 and cols == m.cols else None
    cp = padded_cols(cols)
    n4 = nrows - nrows % 4
    if p is None or r0 % 4 or cp > qcap or n4 == 0:
        n4 = 0
    i, k, qv = c.fresh("i"), c.fresh("k"), c.fresh("qv")
    a = [c.fresh("s") for _ in range(4)]
    if n4:
        with c.block(f"for {i} in range(0, {I(n4)}, 4):"):
            c(f"{', '.join(a)} = dot4_s8_panel(wb, {I(p + r0 * cp)} + {i} * {I(cp)}, {qb}, {I(cp)})")
            for j in range(4):
                ws = f"wf[{I(m.soff + r0)} + {i} + {I(j)}]"
                c(f"{y}[{I(y0)} + {i} + {I(j)}] += np.float32({a[j]}) * ({s} * {ws})")
    r1, y1 = r0 + n4, y0 + n4  # the rows the loop does
    ld, base = m.ld, m.off + col0 + r1 * m.ld
    b = c.fresh("b")

    def body(nr: int, row: str) -> None:
        c(f"{b} = {I(base)} + ({row}) * {I(ld)}")
        for j in range(nr):
            c(f"{a[j]} = np.int32(0)")
        with c.block(f"for {k} in range({I(cols)}):"):
            c(f"{qv} = np.int32({qb}[{k}])")
            for j in range(nr):
                c(f"{a[j]} = np.int32({a[j]} + {qv} * np.int32(wb[{b} + {I(j * ld)} + {k}]))")
        for j in range(nr):
            ws = f"wf[{I(m.soff + r1)} + {row} + {I(j)}]"
            c(f"{y}[{I(y1)} + {row} + {I(j)}] += np.float32({a[j]}) * ({s} * {ws})")

    row_blocks(c, c.fresh("i"), nrows - n4, body)
