"""Additive attention pooling, streamed exactly.

Scores s_τ = v·tanh(W x_τ + b); the output at step t is Σ_τ≤t softmax(s)_τ x_τ. The state keeps the
running max m, the running sum S = Σ exp(s_τ − m) and the running weighted sum A = Σ exp(s_τ − m) x_τ,
rescaled when the max changes, so y_t = A / S equals the full softmax pooling at every step.
State layout: [m, S, A (H values)]; S = 0 means no step seen yet.
"""

from __future__ import annotations

import math

import numpy as np

from .activations import fast_tanh
from .config import kernel
from .layout import R_H
from .linalg import matvec_acc, vec

_ONE = np.float32(1.0)


@kernel
def attention_update(wf, wb, rec, x, st, g, y):
    """Fold x (H,) into the pooling state st (H+2,); y (H,) = the pooled vector; g (A,) scratch."""
    A = int(wf[rec + R_H])
    H = x.shape[0]
    b = vec(wf, rec, 0, A)
    v = vec(wf, rec, 1, A)
    for k in range(A):
        g[k] = b[k]
    matvec_acc(wf, wb, rec, 0, 0, A, x, g)
    s = np.float32(0.0)
    for k in range(A):
        s += v[k] * fast_tanh(g[k])
    acc = st[2 : 2 + H]
    if st[1] == 0.0:
        st[0] = s
        st[1] = _ONE
        for k in range(H):
            acc[k] = x[k]
    elif s > st[0]:
        scale = np.float32(math.exp(st[0] - s))
        st[0] = s
        st[1] = st[1] * scale + _ONE
        for k in range(H):
            acc[k] = acc[k] * scale + x[k]
    else:
        e = np.float32(math.exp(s - st[0]))
        st[1] += e
        for k in range(H):
            acc[k] += e * x[k]
    inv = _ONE / st[1]
    for k in range(H):
        y[k] = acc[k] * inv
