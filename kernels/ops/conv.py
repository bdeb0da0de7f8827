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
that buffer, in register blocks of 4 output channels × 4 output positions (× 2 when Lout is not a
multiple of 4: each weight load feeds four or two FMAs, each buffer load four), the activation applied
as each result is stored. No allocation. An int8 W (``W_scale``: one float32 scale per output channel)
is widened in the loop and scaled once per output; the numpy implementation dequantizes it.

**Folded filter banks.** A one-channel convolution (Cin = G = 1, d = 1, K even) whose every weight row is
periodic-symmetric or -antisymmetric about K/2 (W[n] = ±W[K − n] for 0 < n < K/2, to 1e-6 of the largest
weight: a windowed DFT basis — Silero's STFT — or any linear-phase filter bank) is packed folded: rows
hold [W[0], W[1..K/2−1], W[K/2]] (pairs averaged) and the receptive fields [x₀, x_n ± x_{K−n}, x_{K/2}],
which halves the multiply–adds. Rows of each kind must come in at most 8 runs; otherwise no folding.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I, act_scalar
from ._graph import act_fields
from ._pack import no_state as state  # noqa: F401 - the op has no stream state
from .record import Layer

KIND = L.K_CONV
NAME = "conv1d"
RECURRENT = False
INPUTS = 1
_N_AUX = 10
M_W = 0  # matrix descriptor: W as [Cout, Cin/G·K] (or folded)
V_BIAS = 0  # vector slot: b (flag F_BIAS)


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


#: aux layout: the geometry, then fold (0/1), the number of row runs, and (first, end, sign) per run
_N_FOLD = 2
_MAX_RUNS = 8


def fold_runs(w: np.ndarray) -> list[tuple[int, int, int]] | None:
    """Row runs (first, end, 0 symmetric | 1 antisymmetric) of a [Cout, K] bank that folds, or None."""
    cout, k = w.shape
    h = k // 2
    if k % 2 or k < 8:
        return None
    a, b = w[:, 1:h].astype(np.float64), w[:, k - 1 : h : -1].astype(np.float64)
    tol = 1e-6 * max(float(np.abs(w).max()), 1e-30)
    sym = np.all(np.abs(a - b) <= tol, axis=1)
    anti = np.all(np.abs(a + b) <= tol, axis=1)
    if not np.all(sym | anti):
        return None
    runs: list[list[int]] = []
    for r in range(cout):
        kind = (runs[-1][2] if runs else 0) if (sym[r] and anti[r]) else (0 if sym[r] else 1)
        if runs and runs[-1][2] == kind:
            runs[-1][1] = r + 1
        else:
            runs.append([r, r + 1, kind])
    return [tuple(x) for x in runs] if len(runs) <= _MAX_RUNS else None


def _foldable(layer: dict, w: np.ndarray) -> list | None:
    cin, _, _, k, _, d, _, _, g, _ = geometry(layer)
    if cin != 1 or g != 1 or d != 1:
        return None
    # an int8 bank folds only when its q are exactly symmetric (the tolerance is below one step), so the
    # folded q are integers again
    return fold_runs(np.asarray(w, np.float32).reshape(w.shape[0], k))


def pack(layer: dict, ctx) -> None:
    """W as a [Cout, Cin/G·K] matrix (descriptor ``M_W``; folded to [Cout, K/2 + 1] when the bank folds),
    b in slot ``V_BIAS``, the geometry and the fold runs in the aux block."""
    w = ctx.tensor("W")
    runs = _foldable(layer, w)
    if runs is None:
        ctx.matrix(M_W, "W", np.asarray(w).reshape(w.shape[0], -1))
    else:
        k = layer["kernel_size"]
        h = k // 2
        w2 = np.asarray(w, np.float64).reshape(w.shape[0], k)
        f = np.zeros((w2.shape[0], h + 1))
        f[:, 0], f[:, h] = w2[:, 0], w2[:, h]
        for r0, r1, sign in runs:
            mid = w2[r0:r1, 1:h] + (-1 if sign else 1) * w2[r0:r1, k - 1 : h : -1]
            f[r0:r1, 1:h] = mid / 2
        ctx.matrix(M_W, "W", f.astype(np.int8 if w.dtype == np.int8 else np.float32))
    b = ctx.tensor("b")
    if b is not None:
        ctx.set_flag(L.F_BIAS)
        ctx.vector(V_BIAS, b)
    ctx.params([layer["activation"]], [layer["alpha"]], [layer["beta"]])
    fold = [] if runs is None else [v for run in runs for v in run]
    ctx.aux(list(geometry(layer)) + [int(runs is not None), len(fold) // 3] + fold)


def scratch(layer: dict) -> int:
    """The im2col buffer: Lout·Cin·K values (2·Lout·(K/2 + 1) when folded)."""
    cin, _, _, k, _, _, _, _, _, lout = geometry(layer)
    return max(lout * cin * k, 2 * lout * (k // 2 + 1))


def _runs(wf, lay: Layer) -> list[tuple[int, int, int]] | None:
    aux = lay.aux(wf, _N_AUX + _N_FOLD)
    if not aux[_N_AUX]:
        return None
    v = lay.aux(wf, _N_AUX + _N_FOLD + 3 * aux[_N_AUX + 1])[_N_AUX + _N_FOLD :]
    return [tuple(v[j : j + 3]) for j in range(0, len(v), 3)]


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = act(conv(x) + b) through the im2col scratch."""
    cin, n, cout, k, s, d, pb, _, g, lout = lay.aux(c.wf, _N_AUX)
    runs = _runs(c.wf, lay)
    m = lay.mats[M_W]
    a = lay.act(0, 0)
    bias = lay.has(L.F_BIAS)
    col = c.fresh("col")
    if runs is not None:
        h = k // 2
        ck = h + 1
        c(f"{col} = M[{I(lay.scratch_off)} : {I(lay.scratch_off + 2 * lout * ck)}]")
        t, j, p0 = c.fresh("t"), c.fresh("j"), c.fresh("p")
        u, v = c.fresh("u"), c.fresh("v")

        def X(e: str) -> str:
            return f"({x}[{e}] if {e} >= 0 and {e} < {I(n)} else Z)"

        with c.block(f"for {t} in range({I(lout)}):"):
            c(f"{p0} = {t} * {I(s)} - {I(pb)}")
            for sign in (0, 1):
                base = f"({t} + {I(sign * lout)}) * {I(ck)}"
                c(f"{col}[{base}] = {X(p0)}")
                c(f"{col}[{base} + {I(h)}] = {X(f'{p0} + {I(h)}')}")
            with c.block(f"for {j} in range(1, {I(h)}):"):
                c(f"{u} = {X(f'{p0} + {j}')}")
                c(f"{v} = {X(f'{p0} + {I(k)} - {j}')}")
                c(f"{col}[{t} * {I(ck)} + {j}] = {u} + {v}")
                c(f"{col}[({t} + {I(lout)}) * {I(ck)} + {j}] = {u} - {v}")
        for r0, r1, sign in runs:
            _emit_blocks(c, lay, m, col, y, I(r0), r1 - r0, I(sign * lout), ck, lout, bias, a)
        return
    cg, og, ck = cin // g, cout // g, (cin // g) * k
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
    gv = c.fresh("gg")
    with c.block(f"for {gv} in range({I(g)}):"):
        _emit_blocks(c, lay, m, col, y, f"{gv} * {I(og)}", og, f"{gv} * {I(lout)}", ck, lout, bias, a)


def _emit_blocks(
    c: Code, lay: Layer, m, col: str, y: str, row0: str, nrows: int, cbase: str, ck: int, lout: int, bias, a
) -> None:
    """Rows row0 .. row0 + nrows of the output against im2col rows (cbase + t): register blocks of
    4 channels × 4 positions when Lout is a multiple of 4 (else × 2), the remainders one by one. An int8
    row is widened to float32 as it is loaded, once per block: with 4 positions each widened weight
    feeds four FMAs (measured here on Silero's convolutions, Lout = 4: 4 × 4 made int8 ~20 % faster
    than 4 × 2, and float32 ~15 %; widening whole rows into scratch first was slower than both)."""
    W = "wb" if m.int8 else "wf"
    cast = "np.float32" if m.int8 else ""

    def block(rows: list[str], ts: list[str]) -> None:
        ws = [c.fresh("w") for _ in rows]
        cs = [c.fresh("cv") for _ in ts]
        acc = [[c.fresh("a") for _ in ts] for _ in rows]
        for w, r in zip(ws, rows, strict=True):
            c(f"{w} = {W}[{I(m.off)} + ({r}) * {I(m.ld)} : {I(m.off)} + ({r}) * {I(m.ld)} + {I(ck)}]")
        for cv, t in zip(cs, ts, strict=True):
            c(f"{cv} = {col}[({cbase} + {t}) * {I(ck)} : ({cbase} + {t} + 1) * {I(ck)}]")
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
                    e = f"{e} + wf[{I(lay.vecs[V_BIAS])} + {r}]"
                c(f"{val} = {e}")
                c(f"{y}[({r}) * {I(lout)} + {t}] = {act_scalar(c, a.code, a.alpha, a.beta, val)}")

    RB, TB = 4, (4 if lout % 4 == 0 else 2)
    r4 = nrows - nrows % RB
    t2 = lout - lout % TB
    rb, tb = c.fresh("r"), c.fresh("t")

    def over_t(rows: list[str]) -> None:
        if t2:
            with c.block(f"for {tb} in range(0, {I(t2)}, {I(TB)}):"):
                block(rows, [tb] + [f"{tb} + {I(j)}" for j in range(1, TB)])
        for t in range(t2, lout):
            block(rows, [I(t)])

    if r4:
        with c.block(f"for {rb} in range(0, {I(r4)}, {I(RB)}):"):
            base = f"{row0} + {rb}"
            over_t([base] + [f"{base} + {I(j)}" for j in range(1, RB)])
    for r in range(r4, nrows):
        over_t([f"{row0} + {I(r)}"])


def weights(lay: Layer, wf, wb) -> np.ndarray:
    """The layer's weights as [Cout, Cin/G, K] float64 (unfolded when packed folded)."""
    cin, _, cout, k, _, _, _, _, g, _ = lay.aux(wf, _N_AUX)
    m = _np.mat(wf, wb, lay.mats[M_W]).astype(np.float64)
    runs = _runs(wf, lay)
    if runs is None:
        return m.reshape(cout, cin // g, k)
    h = k // 2
    w = np.zeros((cout, k))
    w[:, 0], w[:, h], w[:, 1:h] = m[:, 0], m[:, h], m[:, 1:h]
    for r0, r1, sign in runs:
        w[r0:r1, k - 1 : h : -1] = (-1 if sign else 1) * m[r0:r1, 1:h]
    return w.reshape(cout, 1, k)


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation (float64 accumulation)."""
    cin, n, cout, k, s, d, pb, pe, g, lout = lay.aux(wf, _N_AUX)
    w = weights(lay, wf, wb)
    xp = np.zeros((cin, n + pb + pe + s * lout + d * k), np.float64)
    xp[:, pb : pb + n] = np.asarray(x, np.float64).reshape(cin, n)
    cg, og = cin // g, cout // g
    y = np.zeros((cout, lout), np.float64)
    for gi in range(g):
        for t in range(lout):
            win = xp[gi * cg : (gi + 1) * cg, t * s : t * s + d * (k - 1) + 1 : d]  # [cg, k]
            y[gi * og : (gi + 1) * og, t] = np.einsum("oik,ik->o", w[gi * og : (gi + 1) * og], win)
    if lay.has(L.F_BIAS):
        y += _np.vec(wf, lay.vecs[V_BIAS], cout).astype(np.float64)[:, None]
    return _np.act_of(lay, 0, 0, y.ravel().astype(np.float32))
