"""``layernorm``: layer normalization of each row of the value (ONNX ``LayerNormalization``)::

    x: R rows of N values (x[r·N + j]);  μ_r = Σ_j x / N;  σ²_r = Σ_j (x − μ_r)² / N
    y[r·N + j] = (x[r·N + j] − μ_r) / √(σ²_r + ε) · scale[j] + bias[j]

Fields: ``size`` N (the row length; input_size a multiple of it), ``epsilon`` ε > 0. Tensors ``scale``
[N], optional ``bias`` [N]. Two passes per row (mean, then centred variance), as ONNX Runtime computes.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_LAYERNORM
NAME = "layernorm"
RECURRENT = False
INPUTS = 1
V_SCALE, V_BIAS, V_EPS = 0, 1, 2  # vector slots: scale (N), bias (N), ε (1)


def check(where: str, layer: dict, P) -> int:
    """``size`` divides input_size; ``epsilon`` is positive. The output has the input's size."""
    n = P._int(where, layer, "size")
    if layer["input_size"] % n:
        raise P._fail("bad size", f"{where}: input_size {layer['input_size']} is not a multiple of size {n}")
    eps = P._num(where, layer.setdefault("epsilon", 1e-5), "epsilon")
    if eps <= 0:
        raise P._fail("bad field", f"{where}: epsilon must be positive")
    return layer["input_size"]


def tensor_specs(layer: dict) -> dict:
    """``scale`` [N], optional ``bias`` [N]."""
    n = layer["size"]
    return {"scale": ((n,), True), "bias": ((n,), False)}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def pack(layer: dict, ctx) -> None:
    """scale, bias (flag F_BIAS) and ε in slots ``V_SCALE``, ``V_BIAS``, ``V_EPS``; N in the aux block."""
    ctx.vector(V_SCALE, ctx.tensor("scale"))
    b = ctx.tensor("bias")
    if b is not None:
        ctx.set_flag(L.F_BIAS)
        ctx.vector(V_BIAS, b)
    ctx.vector(V_EPS, np.array([layer["epsilon"]], np.float32))
    ctx.aux([layer["size"]])


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = layernorm(x) row by row."""
    n = lay.aux(c.wf, 1)[0]
    rows = lay.nin // n
    r, k, mu, var, inv, d = (c.fresh(s) for s in ("r", "k", "mu", "var", "inv", "d"))
    eps = c.f32(float(c.wf[lay.vecs[V_EPS]]))
    with c.block(f"for {r} in range({I(rows)}):"):
        c(f"{mu} = Z")
        with c.block(f"for {k} in range({I(n)}):"):
            c(f"{mu} += {x}[{r} * {I(n)} + {k}]")
        c(f"{mu} = {mu} / {c.f32(float(n))}")
        c(f"{var} = Z")
        with c.block(f"for {k} in range({I(n)}):"):
            c(f"{d} = {x}[{r} * {I(n)} + {k}] - {mu}")
            c(f"{var} += {d} * {d}")
        c(f"{inv} = ONE / np.sqrt({var} / {c.f32(float(n))} + {eps})")
        with c.block(f"for {k} in range({I(n)}):"):
            e = f"({x}[{r} * {I(n)} + {k}] - {mu}) * {inv} * wf[{I(lay.vecs[V_SCALE])} + {k}]"
            if lay.has(L.F_BIAS):
                e += f" + wf[{I(lay.vecs[V_BIAS])} + {k}]"
            c(f"{y}[{r} * {I(n)} + {k}] = {e}")


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation (float64 statistics)."""
    n = lay.aux(wf, 1)[0]
    eps = float(wf[lay.vecs[V_EPS]])
    v = np.asarray(x, np.float64).reshape(-1, n)
    mu = v.mean(axis=1, keepdims=True)
    var = ((v - mu) ** 2).mean(axis=1, keepdims=True)
    y = (v - mu) / np.sqrt(var + eps) * _np.vec(wf, lay.vecs[V_SCALE], n)
    if lay.has(L.F_BIAS):
        y = y + _np.vec(wf, lay.vecs[V_BIAS], n)
    return y.ravel().astype(np.float32)
