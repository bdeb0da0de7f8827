"""``conv1d``: a 1-D convolution over the step's own input window (ONNX ``Conv`` on [C, L]), with a fused
elementwise activation::

    x: [Cin, L] flattened channel-major (x[ci·L + p]);   y: [Cout, Lout] flattened channel-major
    y[co, t] = act(b[co] + Σ_{ci in co's group} Σ_k W[co, ci, k] · x[ci, t·s + k·d − pad_begin])
    Lout = ⌊(L + pad_begin + pad_end − d·(K − 1) − 1) / s⌋ + 1      (x outside [0, L) is 0)

Fields: ``in_channels`` Cin, ``out_channels`` Cout, ``kernel_size`` K, ``stride`` s, ``dilation`` d,
``pads`` [begin, end], ``groups`` G (Cin and Cout multiples of G), ``activation``/``alpha``/``beta``.
Tensors ``W`` [Cout, Cin/G, K] (ONNX layout), optional ``b`` [Cout].

The kernel first gathers the receptive fields (im2col: Lout rows of Cin/G·K values per group, zeros for
the padding) into scratch, then computes every output as a dot product of one weight row with one row of
that buffer, in register blocks of 4 output channels × 2 output positions (each weight load feeds two
FMAs, each buffer load four), the activation applied as each result is stored. No allocation.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I, act_scalar
from ._graph import act_fields
from .record import Layer

KIND = L.K_CONV
NAME = "conv1d"
RECURRENT = False
INPUTS = 1
_N_AUX = 10


def geometry(layer: dict) -> tuple[int, ...]:
    """(Cin, L, Cout, K, s, d, pad_begin, pad_end, G, Lout) of a validated layer."""
    cin, cout, k = layer["in_channels"], layer["out_channels"], layer["kernel_size"]
    s, d, g = layer["stride"], layer["dilation"], layer["groups"]
    pb, pe = layer["pads"]
    n = layer["input_size"] // cin
    lout = (n + pb + pe - d * (k - 1) - 1) // s + 1
    return cin, n, cout, k, s, d, pb, pe, g, lout


def check(where: str, layer: dict, P) -> int:
    """Validate the fields; returns Cout·Lout."""
    cin = P._int(where, layer, "in_channels")
    cout = P._int(where, layer, "out_channels")
    k = P._int(where, layer, "kernel_size")
    for key in ("stride", "dilation", "groups"):
        layer.setdefault(key, 1)
        P._int(where, layer, key)
    pads = layer.setdefault("pads", [0, 0])
    if (
        not isinstance(pads, list)
        or len(pads) != 2
        or not all(isinstance(p, int) and not isinstance(p, bool) and 0 <= p <= P.MAX_DIM for p in pads)
    ):
        raise P._fail("bad field", f"{where}: 'pads' must be two non-negative integers, got {P._short(pads)}")
    g = layer["groups"]
    if cin % g or cout % g:
        raise P._fail(
            "bad field", f"{where}: in_channels {cin} and out_channels {cout} must be multiples of groups {g}"
        )
    if layer["input_size"] % cin:
        raise P._fail(
            "bad size", f"{where}: input_size {layer['input_size']} is not a multiple of in_channels {cin}"
        )
    act_fields(where, layer, P)
    lout = geometry(layer)[9]
    if lout < 1:
        raise P._fail(
            "bad size",
            f"{where}: the kernel ({k}, dilation {layer['dilation']}) is longer than the padded input",
        )
    return cout * lout


def tensor_specs(layer: dict) -> dict:
    """``W`` [Cout, Cin/G, K], optional ``b`` [Cout]."""
    cin, cout, g, k = layer["in_channels"], layer["out_channels"], layer["groups"], layer["kernel_size"]
    return {"W": ((cout, cin // g, k), True), "b": ((cout,), False)}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def pack(layer: dict, ctx) -> None:
    """W as a [Cout, Cin/G·K] matrix (descriptor 0), b in slot 0, the geometry in the aux block."""
    w = ctx.tensor("W")
    ctx.matrix(0, "W", np.asarray(w).reshape(w.shape[0], -1))
    b = ctx.tensor("b")
    if b is not None:
        ctx.set_flag(L.F_BIAS)
        ctx.vector(0, b)
    ctx.params([layer["activation"]], [layer["alpha"]], [layer["beta"]])
    ctx.aux(list(geometry(layer)))


def scratch(layer: dict) -> int:
    """The im2col buffer: Lout·Cin·K values."""
    cin, _, _, k, _, _, _, _, _, lout = geometry(layer)
    return lout * cin * k


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = act(conv(x) + b) through the im2col scratch."""
    cin, n, cout, k, s, d, pb, _, g, lout = lay.aux(c.wf, _N_AUX)
    cg, og, ck = cin // g, cout // g, (cin // g) * k
    m = lay.mats[0]
    col = c.fresh("col")
    c(f"{col} = M[{I(lay.scratch_off)} : {I(lay.scratch_off + g * lout * ck)}]")
    gi, t, ci, kk, p = c.fresh("g"), c.fresh("t"), c.fresh("ci"), c.fresh("k"), c.fresh("p")
    with c.block(f"for {gi} in range({I(g)}):"):
        with c.block(f"for {t} in range({I(lout)}):"):
            with c.block(f"for {ci} in range({I(cg)}):"):
                with c.block(f"for {kk} in range({I(k)}):"):
                    c(f"{p} = {t} * {I(s)} + {kk} * {I(d)} - {I(pb)}")
                    dst = f"{col}[({gi} * {I(lout)} + {t}) * {I(ck)} + {ci} * {I(k)} + {kk}]"
                    src = f"{x}[({gi} * {I(cg)} + {ci}) * {I(n)} + {p}]"
                    c(f"{dst} = {src} if {p} >= 0 and {p} < {I(n)} else Z")
    a = lay.act(0, 0)
    bias = lay.has(L.F_BIAS)
    gv = c.fresh("gg")
    with c.block(f"for {gv} in range({I(g)}):"):
        _emit_blocks(c, lay, m, col, y, gv, og, ck, lout, bias, a)


def _emit_blocks(
    c: Code, lay: Layer, m, col: str, y: str, gv: str, og: int, ck: int, lout: int, bias: bool, a
) -> None:
    """Register blocks of 4 channels × 2 positions over group ``gv``; the remainders one by one."""
    W = "wb" if m.int8 else "wf"
    cast = "np.float32" if m.int8 else ""

    def block(rows: list[str], ts: list[str]) -> None:
        ws = [c.fresh("w") for _ in rows]
        cs = [c.fresh("cv") for _ in ts]
        acc = [[c.fresh("a") for _ in ts] for _ in rows]
        for w, r in zip(ws, rows, strict=True):
            c(f"{w} = {W}[{I(m.off)} + ({r}) * {I(m.ld)} : {I(m.off)} + ({r}) * {I(m.ld)} + {I(ck)}]")
        for cv, t in zip(cs, ts, strict=True):
            c(f"{cv} = {col}[({gv} * {I(lout)} + {t}) * {I(ck)} : ({gv} * {I(lout)} + {t} + 1) * {I(ck)}]")
        for row in acc:
            for name in row:
                c(f"{name} = Z")
        kk, xv = c.fresh("k"), [c.fresh("xv") for _ in ts]
        with c.block(f"for {kk} in range({I(ck)}):"):
            for v, cv in zip(xv, cs, strict=True):
                c(f"{v} = {cv}[{kk}]")
            for w, row in zip(ws, acc, strict=True):
                wv = f"{cast}({w}[{kk}])"
                for name, v in zip(row, xv, strict=True):
                    c(f"{name} += {wv} * {v}")
        for r, row in zip(rows, acc, strict=True):
            for name, t in zip(row, ts, strict=True):
                val = c.fresh("v")
                e = name
                if m.int8:
                    e = f"{e} * wf[{I(m.soff)} + {r}]"
                if bias:
                    e = f"{e} + wf[{I(lay.vecs[0])} + {r}]"
                c(f"{val} = {e}")
                c(f"{y}[({r}) * {I(lout)} + {t}] = {act_scalar(c, a.code, a.alpha, a.beta, val)}")

    r4 = og - og % 4
    t2 = lout - lout % 2
    rb, tb = c.fresh("r"), c.fresh("t")

    def over_t(rows: list[str]) -> None:
        if t2:
            with c.block(f"for {tb} in range(0, {I(t2)}, 2):"):
                block(rows, [tb, f"{tb} + 1"])
        if lout % 2:
            block(rows, [I(lout - 1)])

    if r4:
        with c.block(f"for {rb} in range(0, {I(r4)}, 4):"):
            base = f"{gv} * {I(og)} + {rb}"
            over_t([base, f"{base} + 1", f"{base} + 2", f"{base} + 3"])
    for r in range(r4, og):
        over_t([f"{gv} * {I(og)} + {I(r)}"])


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation (float64 accumulation)."""
    cin, n, cout, k, s, d, pb, pe, g, lout = lay.aux(wf, _N_AUX)
    w = _np.mat(wf, wb, lay.mats[0]).astype(np.float64).reshape(cout, cin // g, k)
    xp = np.zeros((cin, n + pb + pe + s * lout + d * k), np.float64)
    xp[:, pb : pb + n] = np.asarray(x, np.float64).reshape(cin, n)
    cg, og = cin // g, cout // g
    y = np.zeros((cout, lout), np.float64)
    for gi in range(g):
        for t in range(lout):
            win = xp[gi * cg : (gi + 1) * cg, t * s : t * s + d * (k - 1) + 1 : d]  # [cg, k]
            y[gi * og : (gi + 1) * og, t] = np.einsum("oik,ik->o", w[gi * og : (gi + 1) * og], win)
    if lay.has(L.F_BIAS):
        y += _np.vec(wf, lay.vecs[0], cout).astype(np.float64)[:, None]
    return _np.act_of(lay, 0, 0, y.ravel().astype(np.float32))
