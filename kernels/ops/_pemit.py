"""Panel GEMV of generated code (``kernels/simd.py``): which float32 matrices get a panel copy, the copy
itself (made at load, appended to ``wf``), and the emitter that reads it."""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ..simd import LANES, panelize
from ._emit import Code, I
from .record import Matrix, read_header, read_layer

#: fewer columns than this stay row loops (the W·x of 8 inputs, small heads)
MIN_COLS = 64


def panel_parts(wf: np.ndarray) -> list[tuple[Matrix, int, int]]:
    """(matrix, first column, columns) of every float32 product a step reads row by row that a panel
    serves: recurrent layers' R·h (or their fused [W | R]·[x; h]) and dense ESN reservoirs."""
    out = []
    for i in range(read_header(wf).n_layers):
        lay = read_layer(wf, i)
        if lay.kind in (L.K_LSTM, L.K_GRU, L.K_RNN):
            for d in range(lay.directions):
                if lay.has(L.F_FUSED):
                    m = lay.mats[2 * d]
                    out.append((m, lay.nin, lay.hidden))  # h_acc's R part (the XT layout)
                    if not lay.has(L.F_XT):
                        out.append((m, 0, lay.nin + lay.hidden))  # one product over [x; h]
                elif not lay.mats[2 * d + 1].int8:
                    out.append((lay.mats[2 * d + 1], 0, lay.hidden))
        elif lay.kind == L.K_ESN and not lay.has(L.F_SPARSE) and not lay.mats[1].int8:
            out.append((lay.mats[1], 0, lay.hidden))
    return [(m, c0, n) for m, c0, n in out if m.rows >= 4 and n >= MIN_COLS]


def panel_table(wf: np.ndarray) -> tuple[np.ndarray, dict[tuple[int, int], int]]:
    """The panel copies of :func:`panel_parts` (rows in whole blocks of 4, columns in whole chunks of 16;
    the rest stays row loops) as one float32 array to append to ``wf``, and (matrix offset, first column)
    -> index of its panel in that array."""
    parts, where, n = [], {}, 0
    for m, c0, cols in panel_parts(wf):
        if (m.off, c0) in where:
            continue
        r4, cv = m.rows - m.rows % 4, cols - cols % LANES
        rows = wf[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld)[:r4, c0 : c0 + cv]
        parts.append(panelize(rows))
        where[(m.off, c0)] = n
        n += r4 * cv
    return (np.concatenate(parts) if parts else np.zeros(0, np.float32)), where


def gemv_panel(c: Code, m: Matrix, col0: int, cols: int, r0: int, nrows: int, x: str, y: str, y0: int) -> int:
    """Emit y[y0+i] += W[r0+i, col0:col0+cols]·x for the whole 4-row blocks of rows when ``m`` has a panel
    here; returns how many rows it covered (0: none, the caller writes row loops)."""
    p = c.panels.get((m.off, col0)) if c.panels else None
    n4 = nrows - nrows % 4
    if p is None or c.lanes is not None or m.int8 or r0 % 4 or n4 == 0:
        return 0
    cv = cols - cols % LANES
    i, b, k, xv = c.fresh("i"), c.fresh("b"), c.fresh("k"), c.fresh("xv")
    a = [c.fresh("p") for _ in range(4)]
    with c.block(f"for {i} in range(0, {I(n4)}, 4):"):
        c(f"{', '.join(a)} = dot4_panel(wf, {I(p + r0 * cv)} + {i} * {I(cv)}, {x}, 0, {I(cv)})")
        if cols > cv:
            c(f"{b} = {I(m.off + col0 + r0 * m.ld)} + {i} * {I(m.ld)}")
            with c.block(f"for {k} in range({I(cv)}, {I(cols)}):"):
                c(f"{xv} = {x}[{k}]")
                for j in range(4):
                    c(f"{a[j]} += wf[{b} + {I(j * m.ld)} + {k}] * {xv}")
        for j in range(4):
            c(f"{y}[{I(y0)} + {i} + {I(j)}] += {a[j]}")
    return n4
