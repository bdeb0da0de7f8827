"""The overflow guard's finiteness test, shared by the generated kernels and the interpreter."""

from __future__ import annotations

import numpy as np

from .config import njit

_ZERO = np.float32(0.0)


@njit(fastmath=False)
def all_finite(v):
    """Whether every value of the float32 vector ``v`` is finite.

    v - v is 0 for every finite value and NaN for NaN and ±Inf, so the test is an AND over comparisons:
    a reduction LLVM vectorizes without fast-math (an early exit per element does not vectorize; 51 → ~2 ns
    over 128 values here). Compiled without fast-math: under reassoc/nsz LLVM may fold x - x to 0."""
    ok = True
    for k in range(v.shape[0]):
        ok &= (v[k] - v[k]) == _ZERO
    return ok
