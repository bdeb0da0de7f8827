"""Convolution front-ends: ``Conv`` (1-D, over the step's own input window [N, C, L]) and ``Pad``.

* ``Conv`` becomes a ``conv1d`` layer (stride, dilation, pads, groups, bias; a following activation is
  fused into it), or a ``dense`` layer when it produces a single position (a 1×1 decoder, a full-window
  kernel): the same linear map, and the dense layer's folding rules apply.
* ``Pad`` in ``reflect`` or ``edge`` mode is an index map of the features (no layer); in ``constant``
  mode with value 0 it is a ``gather`` layer whose padded positions are zero.
"""

from __future__ import annotations

import numpy as np

from ....kernels.ops.tconv import causal_refusal
from ..errors import CompileError, where
from ..values import Const, Data, Sym, TimePadded, feat_index, ints, select
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
    left = 0
    if isinstance(x, TimePadded):
        x, left = x.data, x.left
    if isinstance(x, Data) and len(x.axes) == 3 and isinstance(x.axes[2], Sym):
        return _conv_over_time(cx, node, x, wv, bv, at, left)
    if left:
        raise CompileError(f"{where(node)}: internal: a time padding reached a convolution over features")
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
    b = None if bv is None else np.asarray(bv.arr, np.float64).reshape(-1)
    return _conv_layer(cx, node, x, w, b, g, s, d, pb, pe)


def _conv_layer(cx, node, x: Data, w: np.ndarray, b, g: int, s: int, d: int, pb: int, pe: int) -> Data:
    """The ``conv1d`` layer (or ``dense`` for one output position) of W [Cout, Cin/G, K] over x [N, C, L]."""
    cin, n = _conv_dims(node, x)
    cout, _, k = w.shape
    lout = (n + pb + pe - d * (k - 1) - 1) // s + 1
    if lout < 1:
        raise CompileError(f"{where(node)}: the kernel is longer than the padded input ({n} + {pb + pe})")
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
    syms = [k for k, dim in enumerate(x.axes) if isinstance(dim, Sym) and (p[k] or p[r + k])]
    if syms == [r - 1] and mode == "constant" and not p[2 * r - 1] and not np.any(np.delete(p, [r - 1])):
        cv = vals[2]
        if cv is None or (isinstance(cv, Const) and np.all(np.asarray(cv.arr) == 0)):
            return TimePadded(x, int(p[r - 1]))  # causal: zeros before the first step, for a Conv over time
    if syms:
        raise CompileError(
            f"{where(node)}: pads the batch/time axis {syms[0]} (only zeros at the start of the time axis, "
            "before a convolution over time, are compiled)"
        )
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
    return _gather(cx, node, x, sel, axes)


def _gather(cx, node, x: Data, sel: np.ndarray, axes: list) -> Data:
    """A ``gather`` layer: feature k of the result is feature ``sel[k]`` of x (−1: zero), axes ``axes``."""
    plan = cx.plan
    plan.resolve_final(x)
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


def _conv_over_time(cx, node, x: Data, wv, bv, at, left: int) -> Data:
    """A causal convolution over the time axis (x axes [N, C, T]): a streamed ``tconv`` layer."""
    n_ax, c, t_ax = x.axes
    if isinstance(c, Sym) or not (isinstance(n_ax, Sym) or n_ax == 1):
        raise CompileError(f"{where(node)}: a convolution over time needs axes [N, C, T] (got {x.axes})")
    if t_ax.role == "B":
        raise CompileError(f"{where(node)}: convolves over the batch axis")
    t_ax.role = "T"
    if isinstance(n_ax, Sym):
        n_ax.role = n_ax.role or "B"
    if not isinstance(wv, Const) or (bv is not None and not isinstance(bv, Const)):
        raise CompileError(f"{where(node)}: W and B must be constant")
    w = np.asarray(wv.arr, np.float64)
    if w.ndim != 3 or w.shape[1] != c:
        raise CompileError(f"{where(node)}: W {w.shape} does not fit {c} input channels (1-D, groups=1)")
    cout, _, k = w.shape
    g = int(at.get("group", 1))
    s = int(list(at.get("strides", [1]))[0])
    d = int(list(at.get("dilations", [1]))[0])
    auto = at.get("auto_pad", "NOTSET")
    auto = auto.decode() if isinstance(auto, bytes) else auto
    pads = list(at.get("pads", [0, 0])) if auto in ("NOTSET", "") else None
    if g != 1 or s != 1 or pads is None:
        raise CompileError(
            f"{where(node)}: a convolution over time streams with groups=1, stride 1 and explicit pads "
            f"(got group {g}, stride {s}, auto_pad {auto!r})"
        )
    pl, pr = int(pads[0]) + left, int(pads[1])
    hn = (k - 1) * d
    why = causal_refusal(pl, pr, hn)
    if why is not None:
        raise CompileError(
            f"{where(node)}: a convolution over time streams when it is causal: (k-1)*d = {hn} zeros "
            f"before the start and none after (got {pl} before, {pr} after): {why}"
        )
    b = None if bv is None else np.asarray(bv.arr, np.float64).reshape(-1)
    plan = cx.plan
    pos = plan.value_input(x, where(node))
    layer = {
        "kind": "tconv",
        "name": plan.name("tconv"),
        "input_size": int(c),
        "output_size": int(cout),
        "in_channels": int(c),
        "out_channels": int(cout),
        "kernel_size": int(k),
        "dilation": d,
        "activation": "linear",
    }
    tensors = {"W": w}
    if b is not None and np.any(b != 0):
        tensors["b"] = b
    plan.add_layer(layer, tensors, inputs=[pos])
    return Data(
        [n_ax, int(cout), t_ax], np.arange(cout), np.zeros(cout, bool), len(plan.layers), x.last, x.step
    )
