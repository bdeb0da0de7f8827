"""Feature indexing: ``Transpose``, ``Slice``, ``Gather``, ``Split``, ``Concat``. On the data they only
change the feature index map (or select the last time step, making the model many_to_one); on shapes and
broadcast constants they compute the result. ``Gather`` of a constant table by the token ids is an
embedding (:mod:`.embedding`)."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import (
    INT_BIG,
    Bcast,
    Const,
    Data,
    Multi,
    ShapeVal,
    Sym,
    feat_index,
    ints,
    last_step,
    select,
    shapeval,
)
from .embedding import embedding
from .registry import register


@register("Transpose", plumbing=True)
def transpose(cx, node, vals, at):
    v = vals[0]
    if isinstance(v, Bcast):
        perm = at.get("perm", list(range(len(v.dims)))[::-1])
        return Bcast(np.transpose(v.arr, perm), [v.dims[p] for p in perm])
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: Transpose of an unsupported value")
    perm = at.get("perm", list(range(len(v.axes)))[::-1])
    idx, fpos = feat_index(v)
    new_axes = [v.axes[p] for p in perm]
    order = [fpos.index(p) for p in perm if p in fpos]
    return select(v, np.transpose(idx, order), new_axes)


def _slice_multi(cx, node, v: Multi, starts, ends, axes, steps):
    r = len(v.parts[0].axes)
    if len(starts) != 1 or (int(axes[0]) + r if int(axes[0]) < 0 else int(axes[0])) != v.axis:
        raise CompileError(f"{where(node)}: Slice of a Concat of data-dependent tensors")
    total = sum(p.axes[v.axis] for p in v.parts)
    rng = np.arange(total)[slice(int(starts[0]), int(max(min(ends[0], INT_BIG), -INT_BIG)), int(steps[0]))]
    if rng.size == 0:
        raise CompileError(f"{where(node)}: empty Slice")
    part, local = v.locate(rng, node)
    if int(steps[0]) != 1:
        raise CompileError(f"{where(node)}: strided Slice of a Concat of data-dependent tensors")
    sub = [part, Const(np.array([local[0]])), Const(np.array([local[-1] + 1])), Const(np.array([v.axis]))]
    return slice_op(cx, node, sub, {})


def _slice_data(node, v: Data, starts, ends, axes, steps) -> Data:
    rank = len(v.axes)
    idx, fpos = feat_index(v)
    new_axes = list(v.axes)
    last = v.last
    isl = [slice(None)] * idx.ndim
    for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
        a = int(a) + rank if int(a) < 0 else int(a)
        s, e, st = int(s), int(e), int(st)
        d = v.axes[a]
        if isinstance(d, Sym):
            if s == 0 and e >= 2**31 - 1 and st == 1:
                continue  # the whole axis
            if s == -1 and e >= 2**31 - 1 and st == 1:
                last_step(d, node)
                new_axes[a] = 1
                last = True
                continue
            raise CompileError(
                f"{where(node)}: slicing [{s}:{e}:{st}] of the symbolic axis {d} is not supported "
                "(only the whole axis or its last element; a graph unrolled over time steps, as "
                "torch's dynamo exporter writes for nn.RNN, cannot be compiled: export "
                "RNN/LSTM/GRU nodes, "
                "e.g. torch.onnx.export(..., dynamo=False))"
            )
        sl = slice(s, max(min(e, INT_BIG), -INT_BIG), st)
        isl[fpos.index(a)] = sl
        new_axes[a] = len(range(*sl.indices(d)))
    return select(v, idx[tuple(isl)], new_axes, last=last)


@register("Slice", plumbing=True)
def slice_op(cx, node, vals, at):
    v = vals[0]
    if len(vals) > 1:
        starts = ints(vals[1], node, "starts")
        ends = ints(vals[2], node, "ends")
        axes = ints(vals[3], node, "axes") if len(vals) > 3 else None
        steps = ints(vals[4], node, "steps") if len(vals) > 4 else None
    else:
        starts, ends, axes = np.array(at["starts"]), np.array(at["ends"]), at.get("axes")
        steps = None
    if axes is None:
        axes = np.arange(len(starts))
    if steps is None:
        steps = np.ones(len(starts), np.int64)
    if isinstance(v, Multi):
        return _slice_multi(cx, node, v, starts, ends, axes, steps)
    if isinstance(v, ShapeVal):
        sl = [slice(None)] * v.arr.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
            sl[int(a)] = slice(int(s), int(min(e, INT_BIG)), int(st))
        return shapeval(v.arr[tuple(sl)])
    if isinstance(v, Bcast):
        rank = len(v.dims)
        sl = [slice(None)] * rank
        dims = list(v.dims)
        for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
            a = int(a) + rank if int(a) < 0 else int(a)
            if isinstance(dims[a], Sym):
                continue
            sl[a] = slice(int(s), int(max(min(e, INT_BIG), -INT_BIG)), int(st))
            dims[a] = len(range(*sl[a].indices(dims[a])))
        return Bcast(v.arr[tuple(sl)], dims)
    if isinstance(v, Data):
        return _slice_data(node, v, starts, ends, axes, steps)
    raise CompileError(f"{where(node)}: Slice of an unsupported value")


@register("Gather", plumbing=True)
def gather(cx, node, vals, at):
    v, iv = vals[0], vals[1]
    axis = at.get("axis", 0)
    if isinstance(v, Multi):
        r = len(v.parts[0].axes)
        if (axis + r if axis < 0 else axis) != v.axis or not isinstance(iv, Const):
            raise CompileError(f"{where(node)}: Gather on a Concat of data-dependent tensors")
        part, local = v.locate(np.asarray(iv.arr).astype(np.int64), node)
        return gather(cx, node, [part, Const(local)], at)
    if isinstance(v, Const) and isinstance(iv, Data):
        return embedding(cx, node, v.arr, iv, axis)
    if isinstance(v, ShapeVal):
        ind = ints(iv, node, "indices")
        return shapeval(np.take(v.arr, ind, axis=axis))
    if not isinstance(iv, Const):
        raise CompileError(f"{where(node)}: Gather with data-dependent indices")
    ind = np.asarray(iv.arr).astype(np.int64)
    if isinstance(v, Bcast):
        r = len(v.dims)
        axis = axis + r if axis < 0 else axis
        dims = list(v.dims)
        if isinstance(dims[axis], Sym):
            arr = np.take(v.arr, np.zeros_like(ind), axis=axis)
            new = dims[:axis] + [1] * ind.ndim + dims[axis + 1 :]
        else:
            arr = np.take(v.arr, ind, axis=axis)
            new = dims[:axis] + list(ind.shape) + dims[axis + 1 :]
        return Bcast(arr, new)
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: Gather of an unsupported value")
    r = len(v.axes)
    axis = axis + r if axis < 0 else axis
    d = v.axes[axis]
    idx, fpos = feat_index(v)
    if isinstance(d, Sym):
        if ind.size != 1 or int(ind.ravel()[0]) != -1:
            raise CompileError(
                f"{where(node)}: Gather of index {ind.tolist()} on the symbolic axis {d}; "
                "only the last time step (-1) can be selected"
            )
        last_step(d, node)
        new_axes = v.axes[:axis] + [1] * ind.ndim + v.axes[axis + 1 :]
        return select(v, idx, new_axes, last=True)
    ind = np.where(ind < 0, ind + d, ind)
    if np.any(ind < 0) or np.any(ind >= d):
        raise CompileError(f"{where(node)}: Gather index out of range")
    sel = np.take(idx, ind, axis=fpos.index(axis))
    new_axes = v.axes[:axis] + list(ind.shape) + v.axes[axis + 1 :]
    return select(v, sel, new_axes)


@register("Split", plumbing=True)
def split(cx, node, vals, at):
    v = vals[0]
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: Split of an unsupported value")
    r = len(v.axes)
    axis = at.get("axis", 0)
    axis = axis + r if axis < 0 else axis
    d = v.axes[axis]
    if isinstance(d, Sym):
        raise CompileError(f"{where(node)}: Split along the batch/time axis {d}")
    n_out = len(node.output)
    if len(vals) > 1 and vals[1] is not None:
        sizes = [int(x) for x in ints(vals[1], node, "split")]
    elif "split" in at:
        sizes = [int(x) for x in at["split"]]
    else:
        k = -(-d // n_out)
        sizes = [min(k, d - k * j) for j in range(n_out)]
    if sum(sizes) != d or len(sizes) != n_out:
        raise CompileError(f"{where(node)}: split sizes {sizes} do not cover axis {axis} of size {d}")
    outs, start = [], 0
    for size in sizes:
        sub = [v, Const(np.array([start])), Const(np.array([start + size])), Const(np.array([axis]))]
        outs.append(slice_op(cx, node, sub, {}))
        start += size
    return outs


def _same_axes(a: list, b: list, axis: int) -> bool:
    """The axes agree except along ``axis`` (symbolic axes: the same axis)."""
    return all(
        k == axis or x is y or (not isinstance(x, Sym) and not isinstance(y, Sym) and x == y)
        for k, (x, y) in enumerate(zip(a, b, strict=True))
    )


def _concat_one_value(vals: list, axis: int) -> Data | None:
    """A Concat of parts of one plan value (``torch.cat([h[-2], h[-1]], 1)`` of a bidirectional Y_h) is
    that value re-indexed; None when the parts come from different values (a :class:`Multi`)."""
    v0 = vals[0]
    key = (v0.pos, v0.last, v0.step, v0.fin)
    for v in vals:
        if (v.pos, v.last, v.step, v.fin) != key or v.tokens or v.quant is not None:
            return None
        if not _same_axes(v.axes, v0.axes, axis):
            return None
    fax = [k for k, d in enumerate(v0.axes) if not isinstance(d, Sym)].index(axis)
    shapes = [feat_index(v)[0].shape for v in vals]
    perm = np.concatenate([v.perm.reshape(sh) for v, sh in zip(vals, shapes, strict=True)], fax)
    bad = np.concatenate([v.bad.reshape(sh) for v, sh in zip(vals, shapes, strict=True)], fax)
    axes = list(v0.axes)
    axes[axis] = sum(v.axes[axis] for v in vals)
    why = next((v.why for v in vals if v.bad.any()), v0.why)
    return Data(axes, perm.ravel(), bad.ravel(), v0.pos, v0.last, v0.step, False, why, None, v0.fin)


@register("Concat", plumbing=True)
def concat(cx, node, vals, at):
    axis = at["axis"]
    if all(isinstance(v, (Const, ShapeVal)) for v in vals):
        arrs = [v.arr.astype(object) if isinstance(v, Const) else v.arr for v in vals]
        return shapeval(np.concatenate(arrs, axis=axis))
    if any(isinstance(v, Data) for v in vals) and all(isinstance(v, Data) for v in vals):
        r = len(vals[0].axes)
        axis = axis + r if axis < 0 else axis
        for v in vals:
            if len(v.axes) != r or isinstance(v.axes[axis], Sym):
                raise CompileError(f"{where(node)}: Concat of data-dependent tensors along {v.axes}")
        merged = _concat_one_value(vals, axis)
        return merged if merged is not None else Multi(list(vals), axis)
    raise CompileError(f"{where(node)}: Concat of data-dependent tensors is not supported")
