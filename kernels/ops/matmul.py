"""``matmul``: a matrix product of two values, both computed per step (ONNX ``MatMul`` between two
data tensors, e.g. attention scores ``q·kᵀ`` or a state read as a matrix)::

    a = x  as [B, M, K]  (row-major),   b = x2 as [B, K, N]
    y[β, i, j] = Σ_k a[β, i, k] · b[β, k, j]            y as [B, M, N]

Fields: ``batch`` B (1), ``m`` M, ``k`` K, ``n`` N; input_size = B·M·K, the second input has B·K·N values,
the output B·M·N. No tensors. The kernel runs one axpy per (β, i, k) over the N outputs of the row
(vectorizable, no horizontal sums); sums in float32 in k order.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, I
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_MATMUL
NAME = "matmul"
RECURRENT = False
INPUTS = 2


def check(where: str, layer: dict, P) -> int:
    """``batch``, ``m``, ``k``, ``n`` positive; input_size = B·M·K. Returns B·M·N."""
    layer.setdefault("batch", 1)
    b = P._int(where, layer, "batch")
    m, k, n = (P._int(where, layer, key) for key in ("m", "k", "n"))
    if layer["input_size"] != b * m * k:
        raise P._fail("bad size", f"{where}: input_size {layer['input_size']} != batch·m·k = {b * m * k}")
    return b * m * n


def input_sizes(layer: dict) -> list[int]:
    """The sizes of the two values the op reads: B·M·K and B·K·N."""
    b, m, k, n = (layer[key] for key in ("batch", "m", "k", "n"))
    return [b * m * k, b * k * n]


def tensor_specs(layer: dict) -> dict:
    """No tensors."""
    return {}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """No tensors to check."""


def pack(layer: dict, ctx) -> None:
    """[B, M, K, N] in the aux block."""
    ctx.aux([layer["batch"], layer["m"], layer["k"], layer["n"]])


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def in2_size(lay: Layer, wf) -> int:
    """The size of the second input (B·K·N) of packed layer ``lay``."""
    b, _, k, n = lay.aux(wf, 4)
    return b * k * n


def emit_apply2(c: Code, lay: Layer, x: str, x2: str, y: str) -> None:
    """y = a·b per batch entry: for each row i, y[i, :] = Σ_k a[i, k]·b[k, :] (one axpy per k)."""
    bt, m, k, n = lay.aux(c.wf, 4)
    q, i, kk, j, av, r0, b0 = (c.fresh(s) for s in ("q", "i", "kk", "j", "av", "r0", "b0"))
    with c.block(f"for {q} in range({I(bt)}):"):
        with c.block(f"for {i} in range({I(m)}):"):
            c(f"{r0} = ({q} * {I(m)} + {i}) * {I(n)}")
            with c.block(f"for {j} in range({I(n)}):"):
                c(f"{y}[{r0} + {j}] = Z")
            with c.block(f"for {kk} in range({I(k)}):"):
                c(f"{av} = {x}[({q} * {I(m)} + {i}) * {I(k)} + {kk}]")
                c(f"{b0} = ({q} * {I(k)} + {kk}) * {I(n)}")
                with c.block(f"for {j} in range({I(n)}):"):
                    c(f"{y}[{r0} + {j}] += {av} * {x2}[{b0} + {j}]")


def numpy_apply2(lay: Layer, wf, wb, M, x, x2):
    """The numpy implementation (float64 products, rounded once)."""
    bt, m, k, n = lay.aux(wf, 4)
    a = np.asarray(x, np.float64).reshape(bt, m, k)
    b = np.asarray(x2, np.float64).reshape(bt, k, n)
    with np.errstate(all="ignore"):
        return np.matmul(a, b).reshape(-1).astype(np.float32)
