"""GRU and vanilla RNN steps written as plain ops, fused back into ``GRU`` / ``RNN`` nodes (a graph rewrite
on the ONNX model, before the compiler evaluates it; the LSTM step is :mod:`.cells`).

torch's ``nn.GRUCell`` (and Keras with ``reset_after``) spells one GRU step as::

    r_x, z_x, n_x = Split(x·W_ihᵀ + b_ih, 3)        r_h, z_h, n_h = Split(h·W_hhᵀ + b_hh, 3)
    r = Sigmoid(r_x + r_h)      z = Sigmoid(z_x + z_h)      n = Tanh(n_x + r * n_h)
    h' = n + z * (h − n)                                   (= (1 − z)·n + z·h)

and ``nn.RNNCell`` as ``h' = Tanh(x·W_ihᵀ + b_ih + h·W_hhᵀ + b_hh)`` (or ``Relu``). Each such step becomes
``Unsqueeze`` → ``GRU`` (``linear_before_reset = 1``, gates reordered to ONNX's z, r, h) or ``RNN`` with
``initial_h = h`` → ``Squeeze`` of ``Y_h``, writing the name h' had: the same numbers, and a node the
compiler runs as one fused cell kernel, streamed with its state. Which operand is x and which is h is
settled by dependence, as for the LSTM: h must not depend on the graph's first input (the data), x must.
A step that does not match exactly (another gate order, extra readers of an intermediate value, the
candidate reset before the product) is left as it is.
"""

from __future__ import annotations

import numpy as np

from .cells import (
    _ancestors,
    _attr,
    _linear_terms,
    _Match,
    _one_user,
    cell_nodes,
    index,
    rewrite,
    state_private,
)

__all__ = ["fuse_gru_rnn_cells"]


def _sum_of(users, prod, a: str, b: str):
    """The ``Add`` node whose inputs are exactly {a, b} and the only reader of both, or None."""
    n = _one_user(users, a, "Add")
    if n is None or set(n.input) != {a, b} or _one_user(users, b, "Add") is not n:
        return None
    return n


def _split3(prod, users, consts, g, name):
    """(split node, its three outputs, the linear terms of its input) when ``name`` is an output of a
    3-way Split along the last axis of a single-operand linear map, else None."""
    sp = prod.get(name)
    if sp is None or sp.op_type != "Split" or len(sp.output) != 3 or (sp.domain or "") != "":
        return None
    m = _Match()
    if not _linear_terms(g, sp.input[0], prod, users, consts, m) or len(m.terms) != 1:
        return None
    ((operand, w),) = m.terms.items()
    rows = w.shape[0]
    if rows % 3 or _attr(sp, "axis", 0) not in (1, -1):
        return None
    sizes = consts.get(sp.input[1]) if len(sp.input) > 1 and sp.input[1] else _attr(sp, "split")
    if sizes is not None and list(np.asarray(sizes).ravel()) != [rows // 3] * 3:
        return None
    bias = np.zeros(rows) if m.bias is None else np.broadcast_to(m.bias, (rows,))
    return sp, list(sp.output), operand, w, bias, m.nodes


def _match_gru(g, tanh, prod, users, consts, data: str):
    """The GRU step whose candidate gate is ``tanh`` (n = Tanh(n_x + r * n_h)), or None."""
    pre = prod.get(tanh.input[0])
    if pre is None or pre.op_type != "Add" or len(pre.input) != 2 or users.get(pre.output[0]) != [tanh]:
        return None
    mul = next((prod.get(i) for i in pre.input if prod.get(i) is not None and prod[i].op_type == "Mul"), None)
    if mul is None or users.get(mul.output[0]) != [pre]:
        return None
    n_x = next(i for i in pre.input if i != mul.output[0])
    sx = _split3(prod, users, consts, g, n_x)
    if sx is None or sx[1][2] != n_x:
        return None
    r_sig = next(
        (prod.get(i) for i in mul.input if prod.get(i) is not None and prod[i].op_type == "Sigmoid"), None
    )
    if r_sig is None:
        return None
    n_h = next(i for i in mul.input if i != r_sig.output[0])
    sh = _split3(prod, users, consts, g, n_h)
    if sh is None or sh[1][2] != n_h or sh[0] is sx[0]:
        return None
    (_, xo, x, wx, bx, xnodes), (_, ho, h, wh, bh, hnodes) = sx, sh
    r_add = prod.get(r_sig.input[0])
    if (
        r_add is None
        or _sum_of(users, prod, xo[0], ho[0]) is not r_add
        or users.get(r_add.output[0]) != [r_sig]
    ):
        return None
    z_add = _sum_of(users, prod, xo[1], ho[1])
    z_sig = _one_user(users, z_add.output[0], "Sigmoid") if z_add is not None else None
    if z_sig is None or users.get(r_sig.output[0]) != [mul] or users.get(n_h) != [mul]:
        return None
    # h' = n + z * (h - n)
    n_ = tanh.output[0]
    sub = next((u for u in users.get(n_, []) if u is not None and u.op_type == "Sub"), None)
    if sub is None or list(sub.input) != [h, n_]:
        return None
    zm = _one_user(users, sub.output[0], "Mul")
    if zm is None or set(zm.input) != {sub.output[0], z_sig.output[0]} or users.get(z_sig.output[0]) != [zm]:
        return None
    out = _one_user(users, zm.output[0], "Add")
    if out is None or set(out.input) != {zm.output[0], n_} or len(users.get(n_, [])) != 2:
        return None
    hh = wh.shape[1]
    if wx.shape[0] != 3 * hh or wh.shape[0] != 3 * hh:
        return None
    if data not in _ancestors(g, x) or data in _ancestors(g, h):
        return None
    nodes = xnodes + hnodes + [sx[0], sh[0], r_add, r_sig, z_add, z_sig, mul, pre, tanh, sub, zm, out]
    return nodes, x, h, out.output[0], wx, wh, bx, bh


def _match_rnn(g, act, prod, users, consts, data: str):
    """The RNN step ``act`` (Tanh or Relu) of a sum of one x term and one h term, or None."""
    m = _Match()
    if not _linear_terms(g, act.input[0], prod, users, consts, m) or len(m.terms) != 2 or not m.nodes:
        return None
    dep = {v: data in _ancestors(g, v) for v in m.terms}
    xs = [v for v in m.terms if dep[v]]
    hs = [v for v in m.terms if not dep[v]]
    if len(xs) != 1 or len(hs) != 1:
        return None
    wx, wh = m.terms[xs[0]], m.terms[hs[0]]
    hh = wx.shape[0]
    if wh.shape != (hh, hh):
        return None
    bias = np.zeros(hh) if m.bias is None else np.broadcast_to(m.bias, (hh,))
    return m.nodes + [act], xs[0], hs[0], act.output[0], wx, wh, bias, act.op_type


def fuse_gru_rnn_cells(model) -> tuple:
    """``model`` with every plain-op GRU and RNN step (module docstring) replaced by a ``GRU``/``RNN``
    node; returns ``(model', count)``. ``model`` itself is returned when nothing matched."""
    g = model.graph
    init = {t.name for t in g.initializer}
    ins = [i.name for i in g.input if i.name not in init]
    if not ins or not any(n.op_type in ("Tanh", "Relu") for n in g.node):
        return model, 0
    consts, prod, users, opset = index(model)
    found, taken = [], set()
    for n in g.node:
        if (n.domain or "") != "" or id(n) in taken:
            continue
        r = None
        if n.op_type == "Tanh":
            r = _match_gru(g, n, prod, users, consts, ins[0])
            if r is not None:
                r = ("gru", *r)
        if r is None and n.op_type in ("Tanh", "Relu"):
            r = _match_rnn(g, n, prod, users, consts, ins[0])
            if r is not None:
                r = ("rnn", *r)
        if r is not None and not state_private(users, [r[3]], r[1]):
            r = None
        if r is not None and not any(id(k) in taken for k in r[1]):
            taken.update(id(k) for k in r[1])
            found.append(r)
    if not found:
        return model, 0
    cells = []
    for k, r in enumerate(found):
        kind, x, h, h_out = r[0], r[2], r[3], r[4]
        if kind == "gru":
            wx, wh, bx, bh = r[5:9]
            hh = wh.shape[1]
            order = np.concatenate([np.arange(hh, 2 * hh), np.arange(0, hh), np.arange(2 * hh, 3 * hh)])
            weights = (wx[order][None], wh[order][None], np.concatenate([bx[order], bh[order]])[None])
            attrs = {"hidden_size": hh, "linear_before_reset": 1}
        else:
            wx, wh, bias, act = r[5:9]
            hh = wh.shape[0]
            weights = (wx[None], wh[None], np.concatenate([bias, np.zeros(hh)])[None])
            attrs = {"hidden_size": hh, "activations": [act]}
        nodes, inits = cell_nodes(f"{kind}_cell{k}", kind.upper(), x, [(h, h_out)], weights, opset, **attrs)
        cells.append((nodes, inits, (h_out,)))
    return rewrite(model, taken, cells), len(found)
