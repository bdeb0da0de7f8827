"""``tconv``: a causal 1-D convolution over *time*, streamed: each step takes one input vector x_t (Cin)
and returns one output vector y_t (Cout)::

    y_t = act(b + Σ_{k<K} W[:, :, k] · x_{t − (K−1−k)·d})        (x_τ = 0 for τ < 0)

which is ONNX ``Conv`` over the time axis with stride 1 and left padding (K−1)·d. The stream keeps the
last (K−1)·d inputs (the op's state, zeros after ``reset``), so ``step``, ``run`` and ``predict`` agree.
Fields: ``in_channels`` Cin (= input_size), ``out_channels`` Cout (= output_size), ``kernel_size`` K,
``dilation`` d, ``activation``/``alpha``/``beta``. Tensors ``W`` [Cout, Cin, K], optional ``b`` [Cout].
The window [x_{t−(K−1)d}, …, x_t] (taps only) is gathered into scratch and multiplied by W packed tap-major
([Cout, K·Cin]) in one GEMV; then the history shifts by one step.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from . import _numpy as _np
from ._emit import Code, I, activate, fill, gemv_acc
from ._graph import act_fields
from .record import Layer

KIND = L.K_TCONV
NAME = "tconv"
RECURRENT = False
INPUTS = 1
M_W = 0  # matrix descriptor: W tap-major [Cout, K·Cin]
V_BIAS = 0  # vector slot: b (flag F_BIAS)


def causal_fix(history: int) -> str:
    """How to write the streamable (causal) convolution whose history is ``history`` = (K−1)·d steps."""
    return (
        f"Make it causal: nn.Conv1d(..., padding=0) on F.pad(z, ({history}, 0)) (z: batch, channels, time), "
        f"so that output t reads inputs t-{history}..t"
    )


def causal_refusal(left: int, right: int, history: int) -> str | None:
    """Why a convolution over time with ``left`` zeros before the start and ``right`` after it is not
    this op (which needs exactly ``history`` = (K−1)·d before and none after), with the fix; None when
    it is. The one wording of the PyTorch exporter and the ONNX compiler."""
    if not right and left == history:
        return None
    if right:
        why = (
            f"it pads {right} step(s) after the end of the time axis (centred padding: output t needs "
            f"{right} future step(s)), which a stream does not have yet"
        )
    elif left == 0:
        why = (
            f"with no padding ('valid') it drops the first {history} outputs, so the ops after it see a "
            f"sequence {history} steps shorter than the stream"
        )
    else:
        why = f"it pads {left} step(s) before the start; a causal kernel needs exactly {history}"
    return f"{why}. {causal_fix(history)}"


def check(where: str, layer: dict, P) -> int:
    """Validate the fields; returns Cout."""
    cin = P._int(where, layer, "in_channels")
    cout = P._int(where, layer, "out_channels")
    P._int(where, layer, "kernel_size")
    layer.setdefault("dilation", 1)
    P._int(where, layer, "dilation")
    if layer["input_size"] != cin:
        raise P._fail("bad size", f"{where}: input_size {layer['input_size']} != in_channels {cin}")
    act_fields(where, layer, P)
    return cout


def tensor_specs(layer: dict) -> dict:
    """``W`` [Cout, Cin, K], optional ``b`` [Cout]."""
    return {
        "W": ((layer["out_channels"], layer["in_channels"], layer["kernel_size"]), True),
        "b": ((layer["out_channels"],), False),
    }


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The history: (K−1)·d input vectors."""
    return (("history", (layer["kernel_size"] - 1) * layer["dilation"] * layer["in_channels"]),)


def pack(layer: dict, ctx) -> None:
    """W tap-major as [Cout, K·Cin] (descriptor ``M_W``), b in slot ``V_BIAS``, [Cin, Cout, K, d] in the
    aux block."""
    w = np.asarray(ctx.tensor("W"))
    ctx.matrix(M_W, "W", np.ascontiguousarray(np.transpose(w, (0, 2, 1)).reshape(w.shape[0], -1)))
    b = ctx.tensor("b")
    if b is not None:
        ctx.set_flag(L.F_BIAS)
        ctx.vector(V_BIAS, b)
    ctx.params([layer["activation"]], [layer["alpha"]], [layer["beta"]])
    ctx.aux([layer["in_channels"], layer["out_channels"], layer["kernel_size"], layer["dilation"]])


def scratch(layer: dict) -> int:
    """The window: K·Cin values."""
    return layer["kernel_size"] * layer["in_channels"]


def emit_apply(c: Code, lay: Layer, x: str, y: str) -> None:
    """y = act(b + W·window); then the history shifts and takes x."""
    cin, cout, k, d = lay.aux(c.wf, 4)
    hn = (k - 1) * d
    st = lay.state_off
    win = c.fresh("win")
    c(f"{win} = M[{I(lay.scratch_off)} : {I(lay.scratch_off + k * cin)}]")
    for kk in range(k):
        row = kk * d  # row of [history; x]: the history holds rows 0 .. hn-1, oldest first
        if row < hn:
            fill(c, win, kk * cin, cin, "M", st + row * cin)
        else:
            fill(c, win, kk * cin, cin, x, 0)
    fill(c, y, 0, cout, "wf" if lay.has(L.F_BIAS) else None, lay.vecs[V_BIAS])
    gemv_acc(c, lay.mats[M_W], 0, k * cin, 0, cout, win, y)
    a = lay.act(0, 0)
    activate(c, a.code, a.alpha, a.beta, y, 0, cout)
    if hn > 1:
        fill(c, "M", st, (hn - 1) * cin, "M", st + cin)
    if hn > 0:
        fill(c, "M", st + (hn - 1) * cin, cin, x, 0)


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation; advances the history in M."""
    cin, cout, k, d = lay.aux(wf, 4)
    hn = (k - 1) * d
    st = lay.state_off
    rows = np.concatenate([M[st : st + hn * cin].reshape(hn, cin), np.asarray(x, np.float32)[None]])
    win = rows[np.arange(k) * d]
    w = _np.mat(wf, wb, lay.mats[M_W]).astype(np.float64)
    yv = w @ win.astype(np.float64).reshape(-1)
    if lay.has(L.F_BIAS):
        yv = yv + _np.vec(wf, lay.vecs[V_BIAS], cout)
    if hn:
        M[st : st + hn * cin] = rows[1:].reshape(-1)
    return _np.act_of(lay, 0, 0, yv.astype(np.float32))
