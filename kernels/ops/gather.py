"""``gather``: y[k] = x[index[k]] (index −1: y[k] = 0) — the copy that makes any index map of a value a
value of its own (a slice, a transpose, a broadcast, a reflect/edge/zero padding).

Tensor ``index`` [O] holds integers in [−1, I) as float32. The generated code copies runs: maximal
stretches where the source index steps by a constant (+1, −1, 0 or any stride) become one loop each.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_GATHER
NAME = "gather"
RECURRENT = False
INPUTS = 1
V_INDEX = 0  # vector slot: the index table (O)
#: more runs than this and the copy reads its index table instead
MAX_RUNS = 64


def check(where: str, layer: dict, P) -> int:
    """The output size (``output_size``, required)."""
    return P._int(where, layer, "output_size")


def tensor_specs(layer: dict) -> dict:
    """``index`` [O] (integers in [−1, I) as float32)."""
    return {"index": ((layer["output_size"],), True)}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Every index is an integer in [−1, input_size)."""
    ix = np.asarray(tensors[roles["index"]], np.float64)
    if np.any(ix != np.floor(ix)) or np.any(ix < -1) or np.any(ix >= layer["input_size"]):
        raise P._fail("bad weights", f"{where}: index must hold integers in [-1, {layer['input_size']})")


def pack(layer: dict, ctx) -> None:
    """The index table in vector slot ``V_INDEX``."""
    ctx.vector(V_INDEX, ctx.tensor("index"))


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def runs(ix: np.ndarray) -> list[tuple[int, int, int, int]]:
    """(dst, src, count, step) runs covering ``ix`` (src −1 with step 0: zeros)."""
    out: list[tuple[int, int, int, int]] = []
    n = len(ix)
    k = 0
    while k < n:
        s0 = int(ix[k])
        if k + 1 < n and (s0 < 0) == (int(ix[k + 1]) < 0):
            st = 0 if s0 < 0 else int(ix[k + 1]) - s0
        else:
            st = 0
        j = k + 1
        while j < n and (int(ix[j]) == s0 + st * (j - k) if s0 >= 0 else int(ix[j]) < 0):
            j += 1
        out.append((k, s0, j - k, st))
        k = j
    return out


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = x[index] as run copies (or an index-table loop when there are many runs)."""
    # the packer wrote the table; the generator reads it back as integers
    ix = c.wf[lay.vecs[V_INDEX] : lay.vecs[V_INDEX] + lay.nout]
    rs = runs(ix)
    if len(rs) > MAX_RUNS:
        k, j = c.fresh("k"), c.fresh("j")
        with c.block(f"for {k} in range({I(lay.nout)}):"):
            c(f"{j} = int(wf[{I(lay.vecs[V_INDEX])} + {k}])")
            c(f"{y}[{k}] = {x}[{j}] if {j} >= 0 else Z")
        return
    for d0, s0, n, st in rs:
        k = c.fresh("k")
        with c.block(f"for {k} in range({I(n)}):"):
            if s0 < 0:
                c(f"{y}[{I(d0)} + {k}] = Z")
            else:
                c(f"{y}[{I(d0)} + {k}] = {x}[{I(s0)} + {k} * {I(st)}]")


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation: x[index], zeros where index is −1."""
    ix = wf[lay.vecs[V_INDEX] : lay.vecs[V_INDEX] + lay.nout].astype(np.int64)
    y = np.zeros(lay.nout, np.float32)
    ok = ix >= 0
    y[ok] = x[ix[ok]]
    return y
