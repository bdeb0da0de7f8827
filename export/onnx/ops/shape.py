"""Shape plumbing: ``Shape``, ``ConstantOfShape``, ``Expand``, ``Reshape``, ``Flatten``, ``Squeeze``,
``Unsqueeze``, ``Identity``, ``Dropout``, ``Cast``. They change axes (or the symbolic shape values the
exporters compute), never the features themselves, so they emit no layers."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Bcast, Const, Data, QScale, QZero, ShapeVal, Sym, ints, shape_like, shapeval
from .registry import register


@register("Shape", plumbing=True)
def shape_op(cx, node, vals, at):
    v = vals[0]
    if isinstance(v, Data):
        dims = list(v.axes)
    elif isinstance(v, Bcast):
        dims = list(v.dims)
    elif isinstance(v, ShapeVal):
        dims = list(v.arr.shape)
    else:
        raise CompileError(f"{where(node)}: Shape of an unsupported value")
    r = len(dims)
    s = at.get("start", 0)
    e = at.get("end", r)
    s = max(0, min(r, s + r if s < 0 else s))
    e = max(0, min(r, e + r if e < 0 else e))
    return shapeval(np.array(dims[s:e], dtype=object))


@register("Identity", plumbing=True)
def identity(cx, node, vals, at):
    return vals[0]


@register("Dropout", plumbing=True)
def dropout(cx, node, vals, at):
    return [vals[0], None]


@register("Cast", plumbing=True)
def cast(cx, node, vals, at):
    v = vals[0]
    if isinstance(v, Data):
        if at.get("to") not in (1, 11, 10, 16) and v.quant != "int" and not v.tokens:
            raise CompileError(f"{where(node)}: casting the data to a non-float type")
        return v
    if isinstance(v, ShapeVal):
        return v
    if isinstance(v, Bcast):
        from onnx import helper

        return Bcast(v.arr.astype(helper.tensor_dtype_to_np_dtype(at["to"])), v.dims)
    if isinstance(v, (QScale, QZero)):
        return v
    raise CompileError(f"{where(node)}: Cast of an unsupported value")


def _axes_arg(node, vals, at, rank):
    """The ``axes`` operand (input 1, or the attribute of older opsets), made non-negative for ``rank``."""
    if len(vals) > 1 and vals[1] is not None:
        axes = ints(vals[1], node, "axes")
    else:
        axes = at.get("axes")
    if axes is None:
        return None
    return [int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).ravel()]


@register("Unsqueeze", plumbing=True)
def unsqueeze(cx, node, vals, at):
    v = vals[0]
    rank_of = len(v.axes) if isinstance(v, Data) else (len(v.dims) if isinstance(v, Bcast) else v.arr.ndim)
    axes = _axes_arg(node, vals, at, 0)
    if axes is None:
        raise CompileError(f"{where(node)}: Unsqueeze without axes")
    out_rank = rank_of + len(axes)
    axes = sorted(a + out_rank if a < 0 else a for a in axes)
    if isinstance(v, ShapeVal):
        arr = v.arr
        for a in axes:
            arr = np.expand_dims(arr, a)
        return ShapeVal(arr)
    if isinstance(v, Bcast):
        arr, dims = v.arr, list(v.dims)
        for a in axes:
            arr = np.expand_dims(arr, a)
            dims.insert(a, 1)
        return Bcast(arr, dims)
    if isinstance(v, Data):
        axs = list(v.axes)
        for a in axes:
            axs.insert(a, 1)
        return Data(axs, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant, v.fin)
    raise CompileError(f"{where(node)}: Unsqueeze of an unsupported value")


@register("Squeeze", plumbing=True)
def squeeze(cx, node, vals, at):
    v = vals[0]
    if isinstance(v, ShapeVal):
        axes = _axes_arg(node, vals, at, v.arr.ndim)
        return ShapeVal(np.squeeze(v.arr, axis=tuple(axes) if axes is not None else None))
    if isinstance(v, Bcast):
        axes = _axes_arg(node, vals, at, len(v.dims))
        if axes is None:
            axes = [k for k, d in enumerate(v.dims) if d == 1]
        if any(v.dims[a] != 1 for a in axes):
            raise CompileError(f"{where(node)}: Squeeze of a non-unit axis")
        return Bcast(np.squeeze(v.arr, axis=tuple(axes)), [d for k, d in enumerate(v.dims) if k not in axes])
    if isinstance(v, Data):
        axes = _axes_arg(node, vals, at, len(v.axes))
        if axes is None:
            axes = [k for k, d in enumerate(v.axes) if d == 1]
        for a in axes:
            if v.axes[a] != 1:
                raise CompileError(f"{where(node)}: Squeeze of axis {a} ({v.axes[a]}) which is not size 1")
        axs = [d for k, d in enumerate(v.axes) if k not in axes]
        return Data(axs, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant, v.fin)
    raise CompileError(f"{where(node)}: Squeeze of an unsupported value")


@register("ConstantOfShape", plumbing=True)
def constant_of_shape(cx, node, vals, at):
    from onnx import numpy_helper

    dims = shape_like(vals[0], node)
    val = numpy_helper.to_array(node.attribute[0].t) if node.attribute else np.zeros(1, np.float32)
    shape = [1 if isinstance(d, Sym) else d for d in dims]
    return Bcast(np.full(shape, val.ravel()[0], dtype=val.dtype), dims)


@register("Expand", plumbing=True)
def expand(cx, node, vals, at):
    v = vals[0]
    dims = shape_like(vals[1], node)
    if not isinstance(v, Const):
        raise CompileError(f"{where(node)}: Expand of the data is not supported")
    arr = np.asarray(v.arr)
    r = max(arr.ndim, len(dims))
    arr = arr.reshape((1,) * (r - arr.ndim) + arr.shape)
    dims = [1] * (r - len(dims)) + list(dims)
    out_dims, shape = [], []
    for a, d in zip(arr.shape, dims, strict=False):
        if isinstance(d, Sym):
            if a != 1:
                raise CompileError(f"{where(node)}: Expand of a non-broadcast axis to {d}")
            out_dims.append(d)
            shape.append(1)
        else:
            out_dims.append(max(a, d))
            shape.append(max(a, d))
    return Bcast(np.broadcast_to(arr, shape).copy(), out_dims)


@register("Reshape", plumbing=True)
def reshape_op(cx, node, vals, at):
    v = vals[0]
    target = shape_like(vals[1], node)
    if isinstance(v, ShapeVal):
        return ShapeVal(v.arr.reshape([int(t) for t in target]))
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: Reshape of an unsupported value")
    return reshape(cx, node, v, target, allowzero=at.get("allowzero", 0))


def _segments(lst: list) -> list[list]:
    """The runs of int axes between (and around) the symbolic axes of ``lst``."""
    segs, cur = [], []
    for d in lst:
        if isinstance(d, Sym):
            segs.append(cur)
            cur = []
        else:
            cur.append(d)
    segs.append(cur)
    return segs


def reshape(cx, node, v: Data, target: list, allowzero: int = 0) -> Data:
    """Reshape the data ``v`` to ``target`` (ints, 0, -1 or Sym): feature axes may be regrouped between the
    batch/time axes, which must keep their order."""
    axes = v.axes
    tg = []
    for k, t in enumerate(target):
        if isinstance(t, Sym):
            tg.append(t)
        elif t == 0 and not allowzero:
            if k >= len(axes):
                raise CompileError(f"{where(node)}: 0 in the target shape beyond the input rank")
            tg.append(axes[k])
        else:
            tg.append(int(t))
    syms_in = [d for d in axes if isinstance(d, Sym)]
    if sum(isinstance(d, Sym) for d in tg) < len(syms_in):
        # exporters sometimes bake the traced batch/time size into a Reshape target
        for k, t in enumerate(tg):
            d = axes[k] if k < len(axes) else None
            if (
                isinstance(d, Sym)
                and not isinstance(t, Sym)
                and t > 0
                and d.static in (None, t)
                and not any(x is d for x in tg)
            ):
                tg[k] = d
                cx.notes.append(
                    f"{where(node)}: the static size {t} in the Reshape target is taken as the symbolic "
                    f"axis {d.name} ({d.role or 'batch/time'}); the compiled model accepts any size"
                )
    syms_out = [d for d in tg if isinstance(d, Sym)]
    n_neg = sum(1 for d in tg if not isinstance(d, Sym) and d == -1)
    if n_neg > 1:
        raise CompileError(f"{where(node)}: more than one -1 in the target shape")
    if len(syms_out) == len(syms_in) - 1 and n_neg == 1:
        # the -1 stands for the missing symbolic axis
        missing = [s for s in syms_in if not any(s is o for o in syms_out)]
        if len(missing) != 1:
            raise CompileError(f"{where(node)}: cannot match the symbolic axes of the reshape")
        tg = [missing[0] if (not isinstance(d, Sym) and d == -1) else d for d in tg]
        syms_out = [d for d in tg if isinstance(d, Sym)]
    if len(syms_out) != len(syms_in) or any(a is not b for a, b in zip(syms_in, syms_out, strict=False)):
        raise CompileError(
            f"{where(node)}: Reshape {axes} -> {target} would merge, split or reorder the batch/time axes"
        )
    out_segs = []
    for a, b in zip(_segments(axes), _segments(tg), strict=False):
        pa = int(np.prod(a, dtype=np.int64)) if a else 1
        if -1 in b:
            rest = int(np.prod([x for x in b if x != -1], dtype=np.int64)) if len(b) > 1 else 1
            if rest == 0 or pa % rest:
                raise CompileError(f"{where(node)}: cannot infer -1 in Reshape {axes} -> {target}")
            b = [pa // rest if x == -1 else x for x in b]
        pb = int(np.prod(b, dtype=np.int64)) if b else 1
        if pa != pb:
            raise CompileError(
                f"{where(node)}: Reshape {axes} -> {target} moves features across batch/time axes"
            )
        out_segs.append(b)
    new_axes: list = []
    for k, seg in enumerate(out_segs):
        new_axes.extend(seg)
        if k < len(syms_in):
            new_axes.append(syms_in[k])
    return Data(new_axes, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant, v.fin)


@register("Flatten", plumbing=True)
def flatten(cx, node, vals, at):
    v = vals[0]
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: Flatten of an unsupported value")
    axis = at.get("axis", 1)
    r = len(v.axes)
    axis = axis + r if axis < 0 else axis
    left, right = v.axes[:axis], v.axes[axis:]
    ls = [d for d in left if isinstance(d, Sym)]
    if any(isinstance(d, Sym) for d in right) or len(ls) > 1:
        raise CompileError(f"{where(node)}: Flatten would merge the batch/time axes with features")
    lp = int(np.prod([d for d in left if not isinstance(d, Sym)], dtype=np.int64))
    if ls and lp != 1:
        raise CompileError(f"{where(node)}: Flatten would merge features into the batch axis")
    target = [ls[0] if ls else lp, int(np.prod(right, dtype=np.int64))]
    return reshape(cx, node, v, target, allowzero=1)
