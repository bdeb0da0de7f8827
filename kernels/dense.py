"""Feed-forward layers: dense (y = act(W·x + b)), normalize, affine, activation, embedding, one-hot."""

from __future__ import annotations

import numpy as np

from .activations import activate_vec
from .config import kernel
from .layout import F_BIAS, P_ALPHA, P_BETA, R_ACT, R_FLAGS, R_FP
from .linalg import mat_row, matvec_acc, off2, vec


@kernel
def _act(wf, rec, y):
    fp = off2(wf, rec + R_FP)
    activate_vec(int(wf[rec + R_ACT]), y, wf[fp + P_ALPHA], wf[fp + P_BETA])


@kernel
def dense_apply(wf, wb, rec, x, y):
    """y (O,) = act(W·x + b) for x (I,)."""
    n = y.shape[0]
    if int(wf[rec + R_FLAGS]) & F_BIAS:
        b = vec(wf, rec, 0, n)
        for k in range(n):
            y[k] = b[k]
    else:
        for k in range(n):
            y[k] = 0.0
    matvec_acc(wf, wb, rec, 0, 0, n, x, y)
    _act(wf, rec, y)


@kernel
def normalize_apply(wf, rec, x, y):
    """y = (x − mean) / std."""
    n = y.shape[0]
    mean = vec(wf, rec, 0, n)
    std = vec(wf, rec, 1, n)
    for k in range(n):
        y[k] = (x[k] - mean[k]) / std[k]


@kernel
def affine_apply(wf, rec, x, y):
    """y = x·scale + shift."""
    n = y.shape[0]
    scale = vec(wf, rec, 0, n)
    shift = vec(wf, rec, 1, n)
    for k in range(n):
        y[k] = x[k] * scale[k] + shift[k]


@kernel
def activation_apply(wf, rec, x, y):
    """y = act(x) (softmax over the vector)."""
    for k in range(y.shape[0]):
        y[k] = x[k]
    _act(wf, rec, y)


@kernel
def embedding_apply(wf, wb, rec, x, y):
    """y = table[int(x[0])] (the id was range-checked before any state changed)."""
    mat_row(wf, wb, rec, 0, int(x[0]), y)


@kernel
def onehot_apply(x, y):
    """y = one-hot(int(x[0]))."""
    for k in range(y.shape[0]):
        y[k] = 0.0
    y[int(x[0])] = np.float32(1.0)
