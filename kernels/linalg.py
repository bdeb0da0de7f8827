"""Reading the packed buffer inside kernels: 2-field offsets and a record's vectors."""

from __future__ import annotations

from .config import inline
from .layout import R_VEC, TWO24


@inline
def off2(wf, p):
    """A 2-field offset stored at ``wf[p], wf[p+1]`` as ``hi * 2**24 + lo``."""
    return int(wf[p]) * TWO24 + int(wf[p + 1])


@inline
def vec(wf, rec, slot, n):
    """The float32 vector of length ``n`` whose offset is vector slot ``slot`` of the record."""
    o = off2(wf, rec + R_VEC + 2 * slot)
    return wf[o : o + n]
