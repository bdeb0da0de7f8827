"""``ConvTranspose`` (1-D, over the step's own input window [N, C, L]): the decoders' upsampling layer.

A transposed convolution is a convolution of the zero-stuffed input: between consecutive samples of x go
s − 1 zeros, then (K−1)·d − pad_begin zeros before and (K−1)·d − pad_end + output_padding after (a
negative count crops), and the kernel is W with its in/out channel axes swapped (per group) and its taps
reversed::

    y[co, t] = b[co] + Σ_ci Σ_k W[ci, co', k] · x[ci, (t + pad_begin − k·d) / s]   (when that divides)
    Lout = s·(L − 1) + output_padding + (K − 1)·d + 1 − pad_begin − pad_end

So it compiles to a ``gather`` layer (the stuffed, padded input; index −1 is a zero) and a ``conv1d``
layer (stride 1). The convolution also multiplies the stuffed zeros: s times the multiply–adds of a
direct transposed kernel, which is what a stride-2 decoder of a streaming model can afford.
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, Sym, feat_index
from .conv import _conv_dims, _conv_layer, _gather
from .registry import register


def _ints(at: dict, key: str, default: list[int]) -> list[int]:
    return [int(v) for v in at.get(key, default)]


def _pads(node, at: dict, n: int, s: int, k: int, d: int, op: int) -> tuple[int, int]:
    """(pad_begin, pad_end) from ``pads``, ``output_shape`` or ``auto_pad`` (ONNX ConvTranspose rules)."""
    auto = at.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    full = s * (n - 1) + op + (k - 1) * d + 1
    shape = _ints(at, "output_shape", [])
    if shape:
        if len(shape) != 1 or shape[0] < 1:
            raise CompileError(f"{where(node)}: output_shape {shape} (one positive length for 1-D)")
        total = full - shape[0]
        if total < 0:
            raise CompileError(
                f"{where(node)}: output_shape {shape[0]} is longer than the full output ({full})"
            )
        small, big = total // 2, total - total // 2  # the odd zero goes first unless SAME_UPPER
        return (small, big) if auto == "SAME_UPPER" else (big, small)
    if auto in ("NOTSET", ""):
        p = _ints(at, "pads", [0, 0])
        if len(p) != 2 or min(p) < 0:
            raise CompileError(f"{where(node)}: pads {p} (two non-negative values for a 1-D convolution)")
        return p[0], p[1]
    if auto == "VALID":
        return 0, 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):  # output length L·s
        total = max(0, full - n * s)
        small, big = total // 2, total - total // 2
        return (small, big) if auto == "SAME_UPPER" else (big, small)
    raise CompileError(f"{where(node)}: auto_pad {auto!r}")


@register("ConvTranspose")
def conv_transpose(cx, node, vals, at):
    vals = list(vals) + [None] * (3 - len(vals))
    x, wv, bv = vals[:3]
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: input X does not depend on the model input")
    if len(x.axes) == 3 and isinstance(x.axes[2], Sym):
        raise CompileError(
            f"{where(node)}: a transposed convolution over the time axis (only over the step's own window "
            "[N, C, L] with a static L)"
        )
    if not isinstance(wv, Const) or (bv is not None and not isinstance(bv, Const)):
        raise CompileError(f"{where(node)}: W and B must be constant")
    w = np.asarray(wv.arr, np.float64)
    if w.ndim != 3:
        raise CompileError(f"{where(node)}: only 1-D transposed convolutions are compiled (W {w.shape})")
    cin, n = _conv_dims(node, x)
    g = int(at.get("group", 1))
    if g < 1 or w.shape[0] != cin or cin % g:
        raise CompileError(f"{where(node)}: W {w.shape} does not fit {cin} input channels in {g} groups")
    _, og, k = w.shape
    cg, cout = cin // g, og * g
    if _ints(at, "kernel_shape", [k]) != [k]:
        raise CompileError(f"{where(node)}: kernel_shape {at['kernel_shape']} but W has kernel {k}")
    (s,), (d,) = _ints(at, "strides", [1]), _ints(at, "dilations", [1])
    (op,) = _ints(at, "output_padding", [0])
    if s < 1 or d < 1:
        raise CompileError(f"{where(node)}: strides {s} and dilations {d} must be positive")
    if not 0 <= op < max(s, d):
        raise CompileError(f"{where(node)}: output_padding {op} must be smaller than the stride or dilation")
    pb, pe = _pads(node, at, n, s, k, d, op)
    left, right = (k - 1) * d - pb, (k - 1) * d - pe + op
    span = s * (n - 1) + 1
    lz = span + left + right
    if lz - (k - 1) * d < 1:
        raise CompileError(f"{where(node)}: pads {pb} + {pe} crop the whole output")
    q = np.arange(lz) - left  # position in the stuffed input
    src = np.where((q >= 0) & (q < span) & (q % s == 0), q // s, -1)
    idx, _ = feat_index(x)
    idx = idx.reshape(cin, n)
    sel = np.where(src[None, :] >= 0, idx[:, np.maximum(src, 0)], -1)
    z = _gather(cx, node, x, sel.ravel(), [x.axes[0], cin, lz]) if (left, right, s) != (0, 0, 1) else x
    # the convolution kernel: [Cout, Cin/G, K], out channel go·og + o reads in channels go·cg + ci
    wc = np.zeros((cout, cg, k))
    for go in range(g):
        blk = w[go * cg : (go + 1) * cg]  # [cg, og, K]
        wc[go * og : (go + 1) * og] = blk.transpose(1, 0, 2)[:, :, ::-1]
    b = None if bv is None else np.asarray(bv.arr, np.float64).reshape(-1)
    return _conv_layer(cx, node, z, wc, b, g, 1, d, 0, 0)
