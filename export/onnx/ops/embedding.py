"""Token inputs: ``Gather`` of a constant table by the token ids (an ``embedding`` layer) and
``OneHot`` of them (a ``onehot`` layer, then an affine map when off/on are not 0/1)."""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..values import Const, Data
from .registry import register


def _on_token_ids(cx, iv) -> bool:
    return isinstance(iv, Data) and iv.tokens and iv.pos == 0 and not cx.plan.layers


def embedding(cx, node, table: np.ndarray, iv: Data, axis: int) -> Data:
    """``Gather(table, token_ids)``: the first layer of a token model. Called by the Gather handler."""
    if not _on_token_ids(cx, iv):
        raise CompileError(f"{where(node)}: Gather of a constant by data is only supported as an embedding")
    if axis != 0 or table.ndim != 2:
        raise CompileError(f"{where(node)}: embedding table must be [vocab, dim] gathered on axis 0")
    v, e = table.shape
    cx.vocab_size = int(v)
    plan = cx.plan
    plan.add_layer(
        {
            "kind": "embedding",
            "name": plan.name("embedding"),
            "input_size": 1,
            "output_size": int(e),
            "vocab_size": int(v),
        },
        {"table": table.astype(np.float32)},
    )
    return Data(list(iv.axes) + [int(e)], np.arange(e), np.zeros(e, bool), len(plan.layers))


@register("OneHot")
def onehot(cx, node, vals, at):
    iv, depth, values = vals
    if not _on_token_ids(cx, iv):
        raise CompileError(f"{where(node)}: OneHot is only supported on the model's token ids")
    if not isinstance(depth, Const) or not isinstance(values, Const):
        raise CompileError(f"{where(node)}: depth and values must be constant")
    axis = at.get("axis", -1)
    if axis not in (-1, len(iv.axes)):
        raise CompileError(f"{where(node)}: OneHot axis {axis} (only the last axis is supported)")
    v = int(np.asarray(depth.arr).ravel()[0])
    off, on = (float(a) for a in np.asarray(values.arr).ravel()[:2])
    cx.vocab_size = v
    plan = cx.plan
    plan.add_layer(
        {"kind": "onehot", "name": plan.name("onehot"), "input_size": 1, "vocab_size": v, "output_size": v},
        {},
    )
    out = Data(list(iv.axes) + [v], np.arange(v), np.zeros(v, bool), len(plan.layers))
    if (off, on) != (0.0, 1.0):
        out = plan.affine(where(node), out, np.full(v, on - off), np.full(v, off))
    return out
