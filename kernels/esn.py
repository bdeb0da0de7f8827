"""The CSR sparse reservoir product the generated ESN kernels call (kernels/ops/esn.py): values in wf or
int8 in wb, int32 column indices and row pointers in wb's int32 view."""

from __future__ import annotations

import numpy as np

from .config import kernel


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
