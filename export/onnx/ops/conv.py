"""Convolution front-ends: ``Conv`` (1-D, over the step's own input window [N, C, L]) and ``Pad``.

* ``Conv`` becomes a ``conv1d`` layer (stride, dilation, pads, groups, bias; a following activation is
  fused into it), or a ``dense`` layer when it produces a single position (a 1×1 decoder, a full-window
  kernel): the same linear map, and the dense layer's folding rules apply.
* ``Pad`` in ``reflect`` or ``edge`` mode is an index map of the features (no layer); in ``constant``
  mode with value 0 it is a ``gather`` layer whose padded positions are zero.
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data, Sym, feat_index, ints, select
from .registry import register


def _conv_dims(node, x: Data) -> tuple[int, int]:
    if len(x.axes) != 3:
        raise CompileError(
            f"{where(node)}: only 1-D convolutions over [N, C, L] are compiled, got axes {x.axes}"
        )
    n, c, ln = x.axes
    if not (isinstance(n, Sym) or n == 1) or isinstance(c, Sym) or isinstance(ln, Sym):
        raise CompileError(
            f"{where(node)}: the convolution's channel and length axes must be static, with a batch of 1 "
            f"(axes {x.axes})"
        )
    return int(c), int(ln)


def _pads(node, at, k: int, d: int, s: int, n: int) -> tuple[int, int]:
    auto = at.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    if auto in ("NOTSET", ""):
        p = list(at.get("pads", [0, 0]))
        if len(p) != 2 or min(p) < 0:
            raise CompileError(f"{where(node)}: pads {p} (two non-negative values for a 1-D convolution)")
        return int(p[0]), int(p[1])
    if auto == "VALID":
        return 0, 0
    if auto in ("SAME_UPPER", "SAME_LOWER"):
        out = -(-n // s)
        total = max(0, (out - 1) * s + d * (k - 1) + 1 - n)
        small, big = total // 2, total - total // 2
        return (small, big) if auto == "SAME_UPPER" else (big, small)
    raise CompileError(f"{where(node)}: auto_pad {auto!r}")


@register("Conv")
def conv(cx, node, vals, at):
    vals = list(vals) + [None] * (3 - len(vals))
    x, wv, bv = vals[:3]
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: input X does not depend on the model input")
    if not isinstance(wv, Const) or (bv is not None and not isinstance(bv, Const)):
        raise CompileError(f"{where(node)}: W and B must be constant")
    w = np.asarray(wv.arr, np.float64)
    if w.ndim != 3:
        raise CompileError(f"{where(node)}: only 1-D convolutions are compiled (W has shape {w.shape})")
    cin, n = _conv_dims(node, x)
    cout, cg, k = w.shape
    g = int(at.get("group", 1))
    s = int(list(at.get("strides", [1]))[0])
    d = int(list(at.get("dilations", [1]))[0])
    if list(at.get("kernel_shape", [k])) != [k]:
        raise CompileError(f"{where(node)}: kernel_shape {at['kernel_shape']} but W has kernel {k}")
    if g < 1 or cin != cg * g or cout % g:
        raise CompileError(f"{where(node)}: W {w.shape} does not fit {cin} input channels in {g} groups")
    if s < 1 or d < 1:
        raise CompileError(f"{where(node)}: strides {s} and dilations {d} must be positive")
    pb, pe = _pads(node, at, k, d, s, n)
    lout = (n + pb + pe - d * (k - 1) - 1) // s + 1
    if lout < 1:
        raise CompileError(f"{where(node)}: the kernel is longer than the padded input ({n} + {pb + pe})")
    b = None if bv is None else np.asarray(bv.arr, np.float64).reshape(-1)
    if b is not None and b.shape != (cout,):
        raise CompileError(f"{where(node)}: B has shape {b.shape}, expected ({cout},)")
    plan = cx.plan
    if lout == 1 and g == 1:  # one output position: a dense layer over the window
        wd = np.zeros((cout, cin * n))
        for kk in range(k):
            p = kk * d - pb
            if 0 <= p < n:
                wd[:, np.arange(cin) * n + p] += w[:, :, kk]
        r = plan.dense(where(node), x, wd, b)
        return Data([x.axes[0], cout, 1], r.perm, r.bad, r.pos, r.last, r.step)
    pos = plan.value_input(x, where(node))
    layer = {
        "kind": "conv1d",
        "name": plan.name("conv1d"),
        "input_size": cin * n,
        "output_size": cout * lout,
        "in_channels": cin,
        "out_channels": cout,
        "kernel_size": k,
        "stride": s,
        "dilation": d,
        "pads": [pb, pe],
        "groups": g,
        "activation": "linear",
    }
    tensors = {"W": w}
    if b is not None and np.any(b != 0):
        tensors["b"] = b
    plan.add_layer(layer, tensors, inputs=[pos])
    m = cout * lout
    return Data([x.axes[0], cout, lout], np.arange(m), np.zeros(m, bool), len(plan.layers), x.last, x.step)


@register("Pad")
def pad(cx, node, vals, at):
    vals = list(vals) + [None] * (4 - len(vals))
    x = vals[0]
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: Pad of a value that does not depend on the model input")
    mode = at.get("mode", "constant")
    mode = mode.decode() if isinstance(mode, bytes) else mode
    p = ints(vals[1], node, "pads") if len(node.input) > 1 and node.input[1] else None
    if p is None:
        p = np.asarray(at.get("pads", []), np.int64)
    r = len(x.axes)
    p = p.ravel()
    if vals[3] is not None:
        axes = [int(a) % r for a in ints(vals[3], node, "axes").ravel()]
        full = np.zeros(2 * r, np.int64)
        for j, a in enumerate(axes):
            full[a], full[r + a] = p[j], p[len(axes) + j]
        p = full
    if p.size != 2 * r:
        raise CompileError(f"{where(node)}: pads has {p.size} values for a rank-{r} input")
    if np.any(p < 0):
        raise CompileError(f"{where(node)}: negative pads (cropping) are not supported")
    idx, fpos = feat_index(x)
    for k, dim in enumerate(x.axes):
        if isinstance(dim, Sym) and (p[k] or p[r + k]):
            raise CompileError(f"{where(node)}: pads the batch/time axis {k}")
    widths = [(int(p[k]), int(p[r + k])) for k in fpos]
    axes = [d if isinstance(d, Sym) else int(d + p[k] + p[r + k]) for k, d in enumerate(x.axes)]
    if mode in ("reflect", "edge"):
        for (a, b), k in zip(widths, fpos, strict=True):
            if mode == "reflect" and max(a, b) >= x.axes[k]:
                raise CompileError(f"{where(node)}: reflect pads of {max(a, b)} on an axis of {x.axes[k]}")
        return select(x, np.pad(idx, widths, mode=mode), axes)
    if mode != "constant":
        raise CompileError(f"{where(node)}: pad mode {mode!r}")
    cv = vals[2]
    if cv is not None and (not isinstance(cv, Const) or np.any(np.asarray(cv.arr) != 0)):
        raise CompileError(f"{where(node)}: constant padding with a value other than 0")
    sel = np.pad(idx, widths, mode="constant", constant_values=-1).ravel()
    plan = cx.plan
    src = x.pos
    if x.bad[sel[sel >= 0]].any():
        raise CompileError(f"{where(node)}: uses {x.why or 'a value the plan cannot produce'}")
    index = np.where(sel >= 0, x.perm[np.maximum(sel, 0)], -1)
    layer = {
        "kind": "gather",
        "name": plan.name("gather"),
        "input_size": plan.value_size(src),
        "output_size": len(index),
    }
    plan.add_layer(layer, {"index": index.astype(np.float32)}, inputs=[src])
    m = len(index)
    return Data(axes, np.arange(m), np.zeros(m, bool), len(plan.layers), x.last, x.step)
