"""What the recurrent cells (rnn, lstm, gru) share in generated code: their gate products.

For direction d a packed recurrent layer holds either one fused float32 block ``[W | R]`` (descriptor
``w_mat(d)``, rows G·H, columns I+H; flag ``F_FUSED``) used with ``xh = [x; h]``, or int8 ``W``
(descriptor ``w_mat(d)``) and ``R`` (descriptor ``r_mat(d)``) with per-row scales. A one-direction float32
layer also holds Wᵀ in descriptor ``XT`` (flag ``F_XT``). Vector slots ``V_* + d`` hold direction d's
biases, extras and initial state. The packing (:func:`pack`) is shared here too; each cell adds its own
vectors and flags.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _qemit
from ._emit import XT_MAX_INPUTS, Code, axpy_acc, fill, gemv_acc
from .record import Layer

#: vector slots of direction d (slot ``V_* + d``)
V_BIAS = 0  # rnn/lstm: Wb + Rb (G·H); gru: Wb (3H)
V_EXTRA = 2  # lstm: the peepholes P (3H); gru: Rb (3H)
V_H0 = 4  # initial_h (H)
V_C0 = 6  # lstm: initial_c (H)


def w_mat(d: int) -> int:
    """The descriptor of direction d's W (or of its fused [W | R] block)."""
    return 2 * d


def r_mat(d: int) -> int:
    """The descriptor of direction d's R (int8 layout)."""
    return 2 * d + 1


def check(where: str, layer: dict, P) -> tuple[int, int]:
    """The fields every cell has: ``hidden_size`` H, ``direction`` (default forward), ``activations`` and
    their alpha/beta (the cell's ONNX defaults), ``clip`` (positive when given). Returns (H, directions)."""
    kind = layer["kind"]
    h = P._int(where, layer, "hidden_size")
    direction = layer.setdefault("direction", "forward")
    if not isinstance(direction, str) or direction not in P.DIRECTIONS:
        raise P._fail("bad field", f"{where}: direction {P._short(direction)}")
    d = P.DIRECTIONS[direction]
    P._acts(where, layer, d * len(P.CELL_ACTIVATIONS[kind]), P.CELL_ACTIVATIONS[kind], False)
    clip = layer.get("clip")
    if clip is not None and (P._num(where, clip, "clip") <= 0):
        raise P._fail("bad field", f"{where}: clip must be positive")
    return h, d


def tensor_specs(layer: dict, gates: int) -> dict:
    """The tensors every cell has (D directions, G gates, H hidden, I inputs): ``W`` [D, G·H, I], ``R``
    [D, G·H, H], optional ``B`` [D, 2·G·H] and ``initial_h`` [D, H]."""
    from ...plan import DIRECTIONS

    i, h = layer["input_size"], layer["hidden_size"]
    d = DIRECTIONS[layer["direction"]]
    return {
        "W": ((d, gates * h, i), True),
        "R": ((d, gates * h, h), True),
        "B": ((d, 2 * gates * h), False),
        "initial_h": ((d, h), False),
    }


def state(layer: dict, cell: bool = False) -> tuple[tuple[str, int], ...]:
    """The forward direction's h (and c for a cell state): H values each."""
    h = layer["hidden_size"]
    return (("h", h), ("c", h)) if cell else (("h", h),)


def pack(layer: dict, ctx, gates: int, biases, cell: bool = False) -> None:
    """Pack a cell of ``gates`` gates: per direction its matrices (int8, or one fused float32 [W | R] when
    not int8 or small enough to dequantize, see ``PackContext.dequantize_max_bytes``), then
    ``biases(ctx, d, b)`` (the kind's bias and extra vectors from B[d], zeros when absent), initial_h (and
    initial_c when ``cell``); then the activations, the clip and the initial state."""
    g, h, i = gates, layer["hidden_size"], layer["input_size"]
    direction = layer["direction"]
    D = 2 if direction == "bidirectional" else 1
    name = layer["name"]
    ctx.set_field(L.R_D, D)
    ctx.set_field(L.R_H, h)
    if direction != "forward":
        ctx.not_streamable(
            f"layer {name!r} is {direction}: it needs the whole sequence, so the model runs only "
            "through Model.predict(X)"
        )
    if direction == "reverse":
        ctx.set_flag(L.F_REVERSE)
    W, R, B = ctx.tensor("W"), ctx.tensor("R"), ctx.tensor("B")
    quant = W.dtype == np.int8 or R.dtype == np.int8
    if quant and g * h * (i + h) * 4 <= ctx.dequantize_max_bytes:
        W, R = ctx.dequantized("W"), ctx.dequantized("R")
        quant = False
        ctx.mark("dequantized")
    if not quant:
        ctx.set_flag(L.F_FUSED)
    h0, c0 = ctx.tensor("initial_h"), ctx.tensor("initial_c") if cell else None
    for d in range(D):
        if quant:
            ctx.matrix(w_mat(d), "W", W[d], d)
            ctx.matrix(r_mat(d), "R", R[d], d)
            if D == 1 and i <= XT_MAX_INPUTS:  # the input part as float32 W·scale, transposed (F_XT)
                ctx.matrix(L.XT, "W", np.ascontiguousarray(np.asarray(ctx.dequantized("W")[d], np.float32).T))
                ctx.set_flag(L.F_XT)
        else:
            wd = np.asarray(W[d], np.float32)
            ctx.matrix(w_mat(d), "W", np.concatenate([wd, np.asarray(R[d], np.float32)], axis=1))
            if D == 1:  # the step's layout of the input part (kernels/layout.py F_XT)
                ctx.matrix(L.XT, "W", np.ascontiguousarray(wd.T))
                ctx.set_flag(L.F_XT)
        biases(ctx, d, np.zeros(2 * g * h, np.float32) if B is None else np.asarray(B[d], np.float32))
        ctx.vector(V_H0 + d, np.zeros(h, np.float32) if h0 is None else h0[d])
        if cell:
            ctx.vector(V_C0 + d, np.zeros(h, np.float32) if c0 is None else c0[d])
    if layer.get("clip") is not None:
        ctx.set_flag(L.F_CLIP)
    for key, flag, field in (("h_next", L.F_HNEXT, L.R_IN2), ("c_next", L.F_CNEXT, L.R_AUX)):
        if layer.get(key) is not None:  # the state is set from the graph at the end of the step
            ctx.set_flag(flag)
            ctx.set_offset(field, ctx.value_offset(layer[key]))
    acts = layer["activations"]
    alphas, betas = layer["activation_alpha"], layer["activation_beta"]
    ctx.params(acts, alphas, betas, layer.get("clip"), 0.0, len(acts) // D)
    if direction != "reverse":
        for j, s0 in enumerate((h0, c0) if cell else (h0,)):
            if s0 is not None:
                ctx.init_state(j * h, s0[0])
    ctx.seq_scratch(2 * h)


def writes(lay: Layer) -> list[tuple[int, int]]:
    """The end-of-step write-backs of a forward recurrent layer whose state is set from the graph (plan
    attributes ``h_next``/``c_next``, flags ``F_HNEXT``/``F_CNEXT``): [(offset of h or c in M, offset of
    the value it takes)]. A step graph whose state output is not the layer's own Y_h/Y_c (``s' = f(Y_h)``)
    runs the cell from that state at the next step, as ONNX with ``initial_h = s`` does."""
    out = []
    if lay.has(L.F_HNEXT):
        out.append((lay.state_off, lay.in2_off))
    if lay.has(L.F_CNEXT):
        out.append((lay.state_off + lay.hidden, lay.aux_off))
    return out


def emit_write(c: Code, lay: Layer, src_of) -> None:
    """The write-backs of :func:`writes` (``src_of(offset, n)``: the array holding the value there)."""
    for st, off in writes(lay):
        fill(c, "M", st, lay.hidden, src_of(off, lay.hidden), 0)


def numpy_write(lay: Layer, M, vals: dict) -> None:
    """The write-backs of :func:`writes` in numpy (``vals``: offset -> that value of the step)."""
    for st, off in writes(lay):
        M[st : st + lay.hidden] = np.asarray(vals[off], np.float32)


def _fused_xh(c: Code, lay: Layer) -> bool:
    """Whether the gates are one product with ``xh = [x; h]``: the fused layout without the transposed
    input part, or in a block of many streams (one blocked product beats a per-stream axpy there)."""
    return lay.has(L.F_FUSED) and (not lay.has(L.F_XT) or (c.lanes is not None and c.lanes.blocking))


def load_xh(c: Code, lay: Layer, x: str, h: str, xh: str) -> None:
    """xh = [x; h] (only the fused single-product layout reads it)."""
    if _fused_xh(c, lay):
        fill(c, xh, 0, lay.nin, x)
        fill(c, xh, lay.nin, lay.hidden, h)


def gates_acc(
    c: Code, lay: Layer, d: int, r0: int, nrows: int, x: str, h: str, xh: str, y: str, y0: int
) -> None:
    """y[y0:y0+nrows] += W[r0:r0+nrows]·x + R[r0:r0+nrows]·h."""
    if _fused_xh(c, lay):
        gemv_acc(c, lay.mats[w_mat(d)], 0, lay.nin + lay.hidden, r0, nrows, xh, y, y0)
    elif lay.has(L.F_XT):
        x_acc(c, lay, d, r0, nrows, x, y, y0)
        h_acc(c, lay, d, r0, nrows, h, y, y0, xh)
    else:
        gemv_acc(c, lay.mats[w_mat(d)], 0, lay.nin, r0, nrows, x, y, y0)
        _r_acc(c, lay, d, r0, nrows, h, xh, y, y0)


def dynamic(c: Code, lay: Layer) -> bool:
    """Whether this layer's R·h runs on a per-step quantized h (``load(..., dynamic_int8=True)``): one
    stream (not a block of streams), an LSTM, GRU or RNN."""
    return c.qmode is not None and c.lanes is None and lay.kind in (L.K_LSTM, L.K_GRU, L.K_RNN)


def _r_acc(c: Code, lay: Layer, d: int, r0: int, nrows: int, h: str, xh: str | None, y: str, y0: int) -> None:
    """y[y0:y0+nrows] += R[r0:r0+nrows]·h for the unfused layout; dynamically quantized (h into the
    [x; h] scratch ``xh``, which that layout does not otherwise use) when :func:`dynamic`."""
    R = lay.mats[r_mat(d)]
    if dynamic(c, lay) and R.int8 and xh is not None:
        qb, s = _qemit.quantize(c, h, lay.hidden, xh)
        qcap = 4 * (lay.nin + lay.hidden)  # bytes of the [x; h] scratch
        _qemit.gemv_dyn(c, R, 0, lay.hidden, r0, nrows, qb, s, y, y0, qcap=qcap)
    else:
        gemv_acc(c, R, 0, lay.hidden, r0, nrows, h, y, y0)


def x_acc(c: Code, lay: Layer, d: int, r0: int, nrows: int, x: str, y: str, y0: int) -> None:
    """y[y0:y0+nrows] += W[r0:r0+nrows]·x."""
    if lay.has(L.F_XT):
        axpy_acc(c, lay.mats[L.XT], r0, nrows, x, y, y0)
        return
    gemv_acc(c, lay.mats[w_mat(d)], 0, lay.nin, r0, nrows, x, y, y0)


def h_acc(
    c: Code, lay: Layer, d: int, r0: int, nrows: int, h: str, y: str, y0: int, xh: str | None = None
) -> None:
    """y[y0:y0+nrows] += R[r0:r0+nrows]·h (with the [x; h] scratch ``xh``, dynamically quantized when
    :func:`dynamic`)."""
    if lay.has(L.F_FUSED):
        gemv_acc(c, lay.mats[w_mat(d)], lay.nin, lay.hidden, r0, nrows, h, y, y0)
    else:
        _r_acc(c, lay, d, r0, nrows, h, xh, y, y0)
