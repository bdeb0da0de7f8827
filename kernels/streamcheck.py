"""The checks around a batched step, read from the packed header: input rows, the overflow guard's state
backup and restore. Used by the blocked many-stream kernel (kernels/batch_blocked.py); the generated
kernels write the same checks with the model's sizes as constants (kernels/codegen.py).

Status codes (``code | row << 3`` in batch mode): ``layout.ST_*``.
"""

from __future__ import annotations

import math

from .config import njit
from .guard import all_finite
from .layout import (
    H_FLAGS,
    H_NIN,
    H_NOUT,
    H_NSTATE,
    H_OUT,
    H_VOCAB,
    ST_NONFINITE,
    ST_NOT_STREAMABLE,
    ST_OK,
    ST_OVERFLOW,
    ST_SIZE,
    ST_TOKEN,
)
from .linalg import off2

__all__ = [
    "ST_NOT_STREAMABLE",
    "ST_OK",
    "ST_OVERFLOW",
    "ST_SIZE",
    "backup",
    "check_row",
    "guarded",
    "restore",
    "state_out_finite",
]


@njit
def check_row(x, wf):
    """The status of input row x (I,) float32 for the packed model wf: size, token or finiteness."""
    if x.shape[0] != int(wf[H_NIN]):
        return ST_SIZE
    vocab = int(wf[H_VOCAB])
    if vocab > 0:
        t = x[0]
        if not (t >= 0.0 and t < vocab and t == math.floor(t)):
            return ST_TOKEN
        return ST_OK
    if int(wf[H_FLAGS]) & 1:
        return ST_OK
    for k in range(x.shape[0]):
        if not math.isfinite(x[k]):
            return ST_NONFINITE
    return ST_OK


@njit
def guarded(wf):
    """Whether the overflow guard is on (nonfinite='raise', the default)."""
    return (int(wf[H_FLAGS]) & 1) == 0


@njit
def backup(wf, M):
    """Copy the state (the first n_state values of stream buffer M) to the backup region at its end."""
    ns = off2(wf, H_NSTATE)
    b0 = M.shape[0] - ns
    for k in range(ns):
        M[b0 + k] = M[k]


@njit
def restore(wf, M):
    """Copy the backup region at the end of M back over the state."""
    ns = off2(wf, H_NSTATE)
    b0 = M.shape[0] - ns
    for k in range(ns):
        M[k] = M[b0 + k]


@njit
def state_out_finite(wf, M):
    """Whether the state and the output in stream buffer M are all finite."""
    o = off2(wf, H_OUT)
    return all_finite(M[0 : off2(wf, H_NSTATE)]) and all_finite(M[o : o + int(wf[H_NOUT])])
