"""Matrix-vector products over the flat weight buffers: float32 and int8 with per-row scales.

Rows are processed four at a time so each load of ``x`` feeds four dot products, and every row is
taken as a slice so that numba sees non-negative indices and LLVM vectorizes the inner loop.
int8 weights are widened to float32 inside the loop (no float copy of the weights exists).
"""

from __future__ import annotations

import numpy as np

from .config import inline, kernel
from .layout import M_COLS, M_LD, M_OFF, M_Q, M_ROWS, M_SOFF, MAT, R_MAT, R_VEC, TWO24

_Z = np.float32(0.0)


@inline
def off2(wf, p):
    """A 2-field offset stored at ``wf[p], wf[p+1]`` as ``hi * 2**24 + lo``."""
    return int(wf[p]) * TWO24 + int(wf[p + 1])


@inline
def vec(wf, rec, slot, n):
    """The float32 vector of length ``n`` whose offset is vector slot ``slot`` of the record."""
    o = off2(wf, rec + R_VEC + 2 * slot)
    return wf[o : o + n]


@kernel
def gemv_f32_acc(W, off, ld, r0, nrows, cols, x, y):
    """y[i] += W[r0+i, :cols] · x  for i < nrows; row r starts at W[off + r*ld]."""
    i = 0
    while i + 4 <= nrows:
        b = off + (r0 + i) * ld
        w0 = W[b : b + cols]
        w1 = W[b + ld : b + ld + cols]
        w2 = W[b + 2 * ld : b + 2 * ld + cols]
        w3 = W[b + 3 * ld : b + 3 * ld + cols]
        a0 = _Z
        a1 = _Z
        a2 = _Z
        a3 = _Z
        for k in range(cols):
            xv = x[k]
            a0 += w0[k] * xv
            a1 += w1[k] * xv
            a2 += w2[k] * xv
            a3 += w3[k] * xv
        y[i] += a0
        y[i + 1] += a1
        y[i + 2] += a2
        y[i + 3] += a3
        i += 4
    while i < nrows:
        b = off + (r0 + i) * ld
        w0 = W[b : b + cols]
        a0 = _Z
        for k in range(cols):
            a0 += w0[k] * x[k]
        y[i] += a0
        i += 1


@kernel
def gemv_i8_acc(Q, off, ld, r0, nrows, cols, S, soff, x, y):
    """y[i] += S[soff+r0+i] · (Q[r0+i, :cols] · x) for int8 Q, float32 scales S."""
    i = 0
    while i + 4 <= nrows:
        b = off + (r0 + i) * ld
        w0 = Q[b : b + cols]
        w1 = Q[b + ld : b + ld + cols]
        w2 = Q[b + 2 * ld : b + 2 * ld + cols]
        w3 = Q[b + 3 * ld : b + 3 * ld + cols]
        a0 = _Z
        a1 = _Z
        a2 = _Z
        a3 = _Z
        for k in range(cols):
            xv = x[k]
            a0 += np.float32(w0[k]) * xv
            a1 += np.float32(w1[k]) * xv
            a2 += np.float32(w2[k]) * xv
            a3 += np.float32(w3[k]) * xv
        s = soff + r0 + i
        y[i] += a0 * S[s]
        y[i + 1] += a1 * S[s + 1]
        y[i + 2] += a2 * S[s + 2]
        y[i + 3] += a3 * S[s + 3]
        i += 4
    while i < nrows:
        b = off + (r0 + i) * ld
        w0 = Q[b : b + cols]
        a0 = _Z
        for k in range(cols):
            a0 += np.float32(w0[k]) * x[k]
        y[i] += a0 * S[soff + r0 + i]
        i += 1


@inline
def matvec_acc(wf, wb, rec, j, r0, nrows, x, y):
    """y[:nrows] += rows [r0, r0+nrows) of matrix descriptor ``j`` of the record times x."""
    matvec_part_acc(wf, wb, rec, j, 0, int(wf[rec + R_MAT + j * MAT + M_COLS]), r0, nrows, x, y)


@inline
def matvec_part_acc(wf, wb, rec, j, col0, cols, r0, nrows, x, y):
    """y[:nrows] += W[r0:r0+nrows, col0:col0+cols] · x[:cols] for matrix descriptor ``j``."""
    p = rec + R_MAT + j * MAT
    off = off2(wf, p + M_OFF) + col0
    ld = int(wf[p + M_LD])
    if int(wf[p + M_Q]) == 0:
        gemv_f32_acc(wf, off, ld, r0, nrows, cols, x, y)
    else:
        gemv_i8_acc(wb, off, ld, r0, nrows, cols, wf, off2(wf, p + M_SOFF), x, y)


@inline
def mat_rows(wf, rec, j):
    """Number of rows of matrix descriptor ``j``."""
    return int(wf[rec + R_MAT + j * MAT + M_ROWS])


@kernel
def mat_row(wf, wb, rec, j, r, out):
    """Copy (dequantized) row ``r`` of matrix descriptor ``j`` into ``out``."""
    p = rec + R_MAT + j * MAT
    off = off2(wf, p + M_OFF) + r * int(wf[p + M_LD])
    cols = int(wf[p + M_COLS])
    if int(wf[p + M_Q]) == 0:
        for k in range(cols):
            out[k] = wf[off + k]
    else:
        s = wf[off2(wf, p + M_SOFF) + r]
        for k in range(cols):
            out[k] = np.float32(wb[off + k]) * s
