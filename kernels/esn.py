"""Echo state network reservoir (leaky integrator)::

    x ← (1 − a)·x + a·tanh(W_in·u + W·x + b)
    y = x            (readout_input = "state")
    y = [1; u; x]    (readout_input = "extended")

W is dense (descriptor 1) or CSR (descriptor 1 holds the values; int32 column indices and row
pointers live in ``wb``'s int32 view at vector slots 1 and 2). A following ``dense`` layer is the readout.
"""

from __future__ import annotations

import numpy as np

from .activations import fast_tanh
from .config import kernel
from .layout import (
    F_BIAS,
    F_EXTENDED,
    F_SPARSE,
    M_OFF,
    M_Q,
    M_SOFF,
    MAT,
    P_LEAK,
    R_FLAGS,
    R_FP,
    R_H,
    R_MAT,
    R_VEC,
)
from .linalg import matvec_acc, off2, vec

_ONE = np.float32(1.0)


@kernel
def _csr_acc(vals, doff, wi, io, po, N, x, g, wf, soff):
    """g[r] += Σ_j vals[doff + j]·x[ind[j]] over CSR row r (times wf[soff + r] when soff >= 0: int8 rows).

    Four accumulators per row: the gathered products of one row do not wait on each other's adds (one
    chain is bound by the add latency: 1.7x slower on a 500-unit reservoir at 10% density)."""
    for r in range(N):
        a0 = np.float32(0.0)
        a1 = np.float32(0.0)
        a2 = np.float32(0.0)
        a3 = np.float32(0.0)
        j = wi[po + r]
        e = wi[po + r + 1]
        while j + 4 <= e:
            a0 += np.float32(vals[doff + j]) * x[wi[io + j]]
            a1 += np.float32(vals[doff + j + 1]) * x[wi[io + j + 1]]
            a2 += np.float32(vals[doff + j + 2]) * x[wi[io + j + 2]]
            a3 += np.float32(vals[doff + j + 3]) * x[wi[io + j + 3]]
            j += 4
        while j < e:
            a0 += np.float32(vals[doff + j]) * x[wi[io + j]]
            j += 1
        acc = (a0 + a1) + (a2 + a3)
        if soff >= 0:
            acc *= wf[soff + r]
        g[r] += acc


@kernel
def esn_cell(wf, wb, rec, u, x, g, y):
    """One reservoir step: u (I,), x (N,) updated in place, g (N,) scratch, y the layer output."""
    N = int(wf[rec + R_H])
    flags = int(wf[rec + R_FLAGS])
    a = wf[off2(wf, rec + R_FP) + P_LEAK]
    if flags & F_BIAS:
        b = vec(wf, rec, 0, N)
        for k in range(N):
            g[k] = b[k]
    else:
        for k in range(N):
            g[k] = 0.0
    matvec_acc(wf, wb, rec, 0, 0, N, u, g)
    if flags & F_SPARSE:
        p = rec + R_MAT + MAT
        doff = off2(wf, p + M_OFF)
        wi = wb.view(np.int32)
        io = off2(wf, rec + R_VEC + 2)  # vector slot 1: column indices (int32 units)
        po = off2(wf, rec + R_VEC + 4)  # vector slot 2: row pointers
        if int(wf[p + M_Q]) == 0:
            _csr_acc(wf, doff, wi, io, po, N, x, g, wf, -1)
        else:
            _csr_acc(wb, doff, wi, io, po, N, x, g, wf, off2(wf, p + M_SOFF))
    else:
        matvec_acc(wf, wb, rec, 1, 0, N, x, g)
    one_minus_a = _ONE - a
    for k in range(N):
        x[k] = one_minus_a * x[k] + a * fast_tanh(g[k])
    if flags & F_EXTENDED:
        n_in = u.shape[0]
        y[0] = _ONE
        for k in range(n_in):
            y[1 + k] = u[k]
        for k in range(N):
            y[1 + n_in + k] = x[k]
