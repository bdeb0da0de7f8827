"""Shared pieces of the ops' numpy implementations (the numpy backend: no numba, exact activations).

They read the same packed buffers as the generated kernels, through the decoded records
(:mod:`.record`), so states move freely between backends.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import recurrent
from .record import Layer, Matrix


def mat(wf: np.ndarray, wb: np.ndarray, m: Matrix) -> np.ndarray:
    """Matrix ``m`` as a float32 (rows, cols) array: a view of ``wf``, or int8 rows times their scales."""
    if not m.int8:
        return wf[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld)[:, : m.cols]
    s = wf[m.soff : m.soff + m.rows]
    return (
        wb[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld)[:, : m.cols].astype(np.float32) * s[:, None]
    )


def vec(wf: np.ndarray, off: int, n: int) -> np.ndarray:
    """The float32 vector ``wf[off:off+n]``."""
    return wf[off : off + n]


def act(code: int, x: np.ndarray, alpha: float, beta: float) -> np.ndarray:
    """ONNX activation ``code`` (``kernels.activations.A_*``) of x, exact (float64 where it matters)."""
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if code == 0:
            return x
        if code == 1:
            return np.where(x < 0, np.float32(0), x)
        if code == 2:
            return np.tanh(x)
        if code == 3:
            return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
        if code == 4:
            e = np.exp(x - np.max(x))
            return (e / e.sum()).astype(np.float32)
        if code == 5:
            return np.where(x < 0, alpha * x, x).astype(np.float32)
        if code == 6:
            return (alpha * x + beta).astype(np.float32)
        if code == 7:
            return np.where(x > alpha, x, np.float32(0)).astype(np.float32)
        if code == 8:
            return (alpha * np.tanh(beta * x)).astype(np.float32)
        if code == 9:
            return np.clip(alpha * x + beta, 0, 1).astype(np.float32)
        if code == 10:
            return np.where(x < 0, alpha * np.expm1(np.minimum(x, 0)), x).astype(np.float32)
        if code == 11:
            return (x / (1 + np.abs(x))).astype(np.float32)
        if code == 12:
            return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))).astype(np.float32)
    return x


def act_of(lay: Layer, d: int, j: int, x: np.ndarray) -> np.ndarray:
    """Activation ``j`` of direction ``d`` of ``lay`` applied to x."""
    a = lay.act(d, j)
    return act(a.code, x, a.alpha, a.beta)


def clipped(lay: Layer, v: np.ndarray) -> np.ndarray:
    """v clamped to the cell clip (unchanged when the layer has none)."""
    return np.clip(v, -lay.clip, lay.clip) if lay.has(L.F_CLIP) else v


def wr(lay: Layer, wf: np.ndarray, wb: np.ndarray, d: int) -> tuple[np.ndarray, np.ndarray]:
    """(W, R) of direction ``d`` of a recurrent layer as float32 matrices."""
    if lay.has(L.F_FUSED):
        m = mat(wf, wb, lay.mats[recurrent.w_mat(d)])
        return m[:, : lay.nin], m[:, lay.nin :]
    return mat(wf, wb, lay.mats[recurrent.w_mat(d)]), mat(wf, wb, lay.mats[recurrent.r_mat(d)])
