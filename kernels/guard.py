"""The overflow guard's finiteness test, shared by the generated kernels and the interpreter."""

from __future__ import annotations

import math

from .config import njit


@njit(fastmath=False)
def all_finite(v):
    """Whether every value of the float32 vector ``v`` is finite.

    Compiled without fast-math: under reassoc/nsz LLVM may fold the NaN-producing arithmetic away."""
    for k in range(v.shape[0]):
        if not math.isfinite(v[k]):
            return False
    return True
