"""Attention fusion (a graph rewrite before evaluation): an additive attention pooling subgraph becomes one
``edgernn.AttentionPool`` node, compiled by :mod:`..ops.attention`.

Pattern (what torch exports for ``softmax_t(tanh(h W^T + b) · v)`` pooling)::

    s = MatMul(Tanh(Add(MatMul(h, Wt), b)), v)      (v: [A] or [A, 1] + Squeeze)
    y = ReduceSum(Mul(Unsqueeze(Softmax(s, axis=time)), h), axes=time)
"""

from __future__ import annotations

import numpy as np

from ..graph import attrs, producers

__all__ = ["fuse_attention"]


def _match(red, prod: dict, const, opset: dict) -> tuple[dict, str] | None:
    """The parameters of the pooling that ends in ReduceSum node ``red`` and the name of its input ``h``."""

    def node_of(name, op):
        n = prod.get(name)
        return n if n is not None and n.op_type == op else None

    mul = node_of(red.input[0], "Mul")
    if mul is None:
        return None
    for ui in (0, 1):
        uns = node_of(mul.input[ui], "Unsqueeze")
        h_name = mul.input[1 - ui]
        if uns is None:
            continue
        sm = node_of(uns.input[0], "Softmax")
        if sm is None:
            continue
        sc = prod.get(sm.input[0])
        squeeze = None
        if sc is not None and sc.op_type == "Squeeze":
            squeeze, sc = sc, prod.get(sc.input[0])
        if sc is None or sc.op_type != "MatMul" or const(sc.input[1]) is None:
            continue
        v = np.asarray(const(sc.input[1]), np.float64)
        if not (v.ndim == 1 or (v.ndim == 2 and v.shape[1] == 1 and squeeze is not None)):
            continue
        th = node_of(sc.input[0], "Tanh")
        if th is None:
            continue
        add = prod.get(th.input[0])
        b = None
        mm = add
        if add is not None and add.op_type == "Add":
            for k in (0, 1):
                if const(add.input[k]) is not None:
                    b, mm = np.asarray(const(add.input[k]), np.float64), prod.get(add.input[1 - k])
                    break
        if mm is None or mm.op_type != "MatMul" or mm.input[0] != h_name or const(mm.input[1]) is None:
            continue
        wt = np.asarray(const(mm.input[1]), np.float64)  # [H, A]
        a = wt.shape[-1] if wt.ndim == 2 else -1
        if wt.ndim != 2 or v.reshape(-1).size != a or (b is not None and b.reshape(-1).size != a):
            continue
        at = attrs(red)
        r_axes = const(red.input[1]) if len(red.input) > 1 and red.input[1] else at.get("axes")
        u_axes = const(uns.input[1]) if len(uns.input) > 1 and uns.input[1] else attrs(uns).get("axes")
        if r_axes is None or u_axes is None:
            continue
        params = {
            "W": wt.T,
            "b": np.zeros(a) if b is None else b.reshape(-1),
            "v": v.reshape(-1),
            "softmax_axis": attrs(sm).get("axis", -1 if opset.get("", 13) >= 13 else 1),
            "unsqueeze_axes": [int(x) for x in np.asarray(u_axes).ravel()],
            "reduce_axes": [int(x) for x in np.asarray(r_axes).ravel()],
            "keepdims": int(at.get("keepdims", 1)),
            "nodes": [x.name for x in (mm, add, th, sc, squeeze, sm, uns, mul, red) if x is not None],
        }
        return params, h_name
    return None


def fuse_attention(nodes: list, inits: dict, opset: dict) -> tuple[list, dict]:
    """Replace additive attention pooling subgraphs by ``edgernn.AttentionPool`` nodes.

    ``inits``: initializer name -> array; ``opset``: domain -> version. Returns the new node list (the
    subgraph's other nodes stay; they are dropped later if nothing else uses them) and the parameters of
    each fused node by its name (``W`` [A, H], ``b`` [A], ``v`` [A], the axes, ``nodes`` replaced).
    """
    from onnx import helper, numpy_helper

    prod = producers(nodes)
    consts = dict(inits)
    for n in nodes:
        if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
            consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

    def const(name):
        return consts.get(name) if name else None

    out = list(nodes)
    fused: dict[str, dict] = {}
    for red in nodes:
        if red.op_type != "ReduceSum" or red.domain not in ("", "ai.onnx"):
            continue
        m = _match(red, prod, const, opset)
        if m is None:
            continue
        params, h_name = m
        name = f"edgernn_attention_{len(fused)}"
        fused[name] = params
        out[out.index(red)] = helper.make_node(
            "AttentionPool", [h_name], [red.output[0]], name=name, domain="edgernn"
        )
    return out, fused
