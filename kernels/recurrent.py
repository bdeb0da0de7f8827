"""Shared pieces of the recurrent cells (rnn, lstm, gru): gate products and per-direction parameters.

Matrix descriptors of a recurrent record: for direction d, descriptor ``2d`` is either the fused
float32 block ``[W | R]`` (rows G·H, columns I+H, flag ``F_FUSED``) used with the input ``xh = [x; h]``,
or, for int8 weights, ``W`` (G·H × I) with descriptor ``2d+1`` holding ``R`` (G·H × H).
"""

from __future__ import annotations

from .config import inline, kernel
from .layout import F_FUSED, P_ALPHA, P_BETA, P_CLIP, R_ACT, R_FLAGS, R_FP
from .linalg import matvec_acc, matvec_part_acc, off2


@kernel
def load_xh(x, h, xh):
    """xh = [x; h]."""
    n = x.shape[0]
    for k in range(n):
        xh[k] = x[k]
    for k in range(h.shape[0]):
        xh[n + k] = h[k]


@inline
def gates_acc(wf, wb, rec, d, r0, nrows, x, h, xh, y):
    """y[:nrows] += W[r0:r0+nrows]·x + R[r0:r0+nrows]·h (xh = [x; h] when the block is fused)."""
    if int(wf[rec + R_FLAGS]) & F_FUSED:
        matvec_part_acc(wf, wb, rec, 2 * d, 0, xh.shape[0], r0, nrows, xh, y)
    else:
        matvec_acc(wf, wb, rec, 2 * d, r0, nrows, x, y)
        matvec_acc(wf, wb, rec, 2 * d + 1, r0, nrows, h, y)


@inline
def x_part_acc(wf, wb, rec, d, r0, nrows, x, y):
    """y[:nrows] += W[r0:r0+nrows]·x."""
    if int(wf[rec + R_FLAGS]) & F_FUSED:
        matvec_part_acc(wf, wb, rec, 2 * d, 0, x.shape[0], r0, nrows, x, y)
    else:
        matvec_acc(wf, wb, rec, 2 * d, r0, nrows, x, y)


@inline
def h_part_acc(wf, wb, rec, d, r0, nrows, nin, h, y):
    """y[:nrows] += R[r0:r0+nrows]·h (``nin`` = input size, the column where R starts when fused)."""
    if int(wf[rec + R_FLAGS]) & F_FUSED:
        matvec_part_acc(wf, wb, rec, 2 * d, nin, h.shape[0], r0, nrows, h, y)
    else:
        matvec_acc(wf, wb, rec, 2 * d + 1, r0, nrows, h, y)


@inline
def act_params(wf, rec, d, j):
    """(code, alpha, beta) of activation ``j`` of direction ``d``."""
    fp = off2(wf, rec + R_FP)
    i = 3 * d + j
    return int(wf[rec + R_ACT + i]), wf[fp + P_ALPHA + i], wf[fp + P_BETA + i]


@inline
def clip_value(wf, rec):
    """The cell clip, or +inf when none."""
    return wf[off2(wf, rec + R_FP) + P_CLIP]
