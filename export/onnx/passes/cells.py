"""Recurrent cells written as plain ops, fused back into ``LSTM`` nodes (a graph rewrite on the ONNX
model, before the compiler evaluates it).

Exporters (``silero_vad_op18_ifless.onnx``, torch's ``nn.LSTMCell``, Keras) spell one LSTM step as::

    gates = x·Wᵀ + b_x + h·Rᵀ + b_h            (Gemm / MatMul, Add of constants, in any grouping)
    i, f, g, o = Split(gates, 4, axis=-1)      (PyTorch and Keras gate order)
    c' = Sigmoid(f) * c + Sigmoid(i) * Tanh(g)
    h' = Sigmoid(o) * Tanh(c')

with x [B, I], h and c [B, H]. :func:`fuse_lstm_cells` finds each such step and replaces it with
``Unsqueeze`` → ``LSTM`` (weights reordered to ONNX's i, o, f, c; ``initial_h``/``initial_c`` = h, c) →
``Squeeze`` of ``Y_h``/``Y_c``, writing the same names h' and c' had. Which operand is x and which is h
is settled by dependence: h and c must not depend on the graph's first input (the data), x must.
A step that does not match exactly (another gate order, peepholes, extra consumers of the gates) is left
as it is.
"""

from __future__ import annotations

import numpy as np

__all__ = ["cell_nodes", "fuse_lstm_cells", "index", "rewrite"]


def _consts(g) -> dict:
    from onnx import numpy_helper

    from ..fold import constant

    out = {t.name: numpy_helper.to_array(t) for t in g.initializer}
    for n in g.node:
        if n.op_type == "Constant" and (n.domain or "") == "" and len(n.attribute) == 1:
            try:
                out[n.output[0]] = constant(n)
            except Exception:  # noqa: BLE001 - an attribute kind folding does not read: not a weight
                pass
    return out


def _ancestors(g, name: str) -> set:
    prod = {o: n for n in g.node for o in n.output if o}
    seen: set[str] = set()
    stack = [name]
    while stack:
        v = stack.pop()
        if v in seen:
            continue
        seen.add(v)
        n = prod.get(v)
        if n is not None:
            stack.extend(i for i in n.input if i)
    return seen


def _attr(n, name, default=None):
    from onnx import helper

    for a in n.attribute:
        if a.name == name:
            return helper.get_attribute_value(a)
    return default


class _Match:
    """One LSTM step found in the graph: its nodes, operands and weights."""

    def __init__(self) -> None:
        self.nodes: list = []
        self.terms: dict[str, np.ndarray] = {}  # operand value -> [4H, in] weight
        self.bias: np.ndarray | None = None


def _linear_terms(g, name, prod, users, consts, m: _Match, depth=0) -> bool:
    """Collect the sum tree at ``name`` into ``m``: operand -> weight [4H, in], constants into the bias."""
    if depth > 8:
        return False
    if name in consts:
        b = np.asarray(consts[name], np.float64).reshape(-1)
        m.bias = b if m.bias is None else m.bias + b
        return True
    n = prod.get(name)
    if n is None or len(users.get(name, [])) != 1 or (n.domain or "") != "":
        return False
    if n.op_type == "Add" and len(n.input) == 2:
        m.nodes.append(n)
        return all(_linear_terms(g, i, prod, users, consts, m, depth + 1) for i in n.input)
    if n.op_type == "MatMul" and n.input[1] in consts:
        w = np.asarray(consts[n.input[1]], np.float64)
        if w.ndim != 2:
            return False
        w = w.T
    elif n.op_type == "Gemm" and n.input[1] in consts and not _attr(n, "transA", 0):
        w = np.asarray(consts[n.input[1]], np.float64)
        if w.ndim != 2:
            return False
        w = (w if _attr(n, "transB", 0) else w.T) * float(_attr(n, "alpha", 1.0))
        if len(n.input) > 2 and n.input[2]:
            if n.input[2] not in consts:
                return False
            b = np.asarray(consts[n.input[2]], np.float64) * float(_attr(n, "beta", 1.0))
            if b.size not in (1, w.shape[0]) or (b.ndim == 2 and b.shape[0] != 1):
                return False
            b = np.broadcast_to(b.reshape(-1), (w.shape[0],))
            m.bias = b if m.bias is None else m.bias + b
    else:
        return False
    m.nodes.append(n)
    x = n.input[0]
    m.terms[x] = m.terms[x] + w if x in m.terms else w
    return True


def _one_user(users, name, op):
    us = users.get(name, [])
    if len(us) != 1 or us[0] is None or us[0].op_type != op:
        return None
    return us[0]


def _match(g, split, prod, users, consts, data: str):
    """The LSTM step whose gates ``split`` splits, or None."""
    if len(split.output) != 4 or len(split.input) < 1:
        return None
    m = _Match()
    if not _linear_terms(g, split.input[0], prod, users, consts, m) or len(m.terms) != 2:
        return None
    acts = []
    for k, op in enumerate(("Sigmoid", "Sigmoid", "Tanh", "Sigmoid")):
        a = _one_user(users, split.output[k], op)
        if a is None:
            return None
        acts.append(a)
    i_, f_, g_, o_ = (a.output[0] for a in acts)
    # c' = f*c + i*g
    mf = _one_user(users, f_, "Mul")
    mi = _one_user(users, i_, "Mul")
    if mf is None or mi is None or mf is mi or g_ not in mi.input:
        return None
    if [u for u in users.get(g_, [])] != [mi]:
        return None
    c_in = mf.input[1] if mf.input[0] == f_ else mf.input[0]
    add = _one_user(users, mf.output[0], "Add")
    if add is None or set(add.input) != {mf.output[0], mi.output[0]} or users.get(mi.output[0]) != [add]:
        return None
    c_out = add.output[0]
    tc = [u for u in users.get(c_out, []) if u is not None and u.op_type == "Tanh"]
    mo = _one_user(users, o_, "Mul")
    if len(tc) != 1 or mo is None or set(mo.input) != {o_, tc[0].output[0]}:
        return None
    if users.get(tc[0].output[0]) != [mo]:
        return None
    h_out = mo.output[0]
    operands = list(m.terms)
    dep = {v: data in _ancestors(g, v) for v in operands + [c_in]}
    xs = [v for v in operands if dep[v]]
    hs = [v for v in operands if not dep[v]]
    if len(xs) != 1 or len(hs) != 1 or dep[c_in]:
        return None
    wx, wh = m.terms[xs[0]], m.terms[hs[0]]
    h4 = wx.shape[0]
    if h4 % 4 or wh.shape != (h4, h4 // 4):
        return None
    axis = _attr(split, "axis", 0)
    if axis not in (1, -1) or (len(split.input) > 1 and split.input[1]):
        sizes = (
            consts.get(split.input[1]) if len(split.input) > 1 and split.input[1] else _attr(split, "split")
        )
        if axis not in (1, -1) or sizes is None or list(np.asarray(sizes).ravel()) != [h4 // 4] * 4:
            return None
    bias = np.zeros(h4) if m.bias is None else np.broadcast_to(m.bias, (h4,))
    m.nodes += [split, *acts, mf, mi, add, tc[0], mo]
    return m, xs[0], hs[0], c_in, h_out, c_out, wx, wh, bias


def state_private(users: dict, states: list[str], nodes: list) -> bool:
    """Whether the cell's state inputs ``states`` are read by the cell's own ``nodes`` only: a state also
    read by other ops (``s' = 0.5 s + 0.5 tanh(...)``) is not that cell's own state — the compiler reads
    it from a state slot (:mod:`.slots`), so the step is left as plain ops."""
    ids = {id(n) for n in nodes}
    return all(u is not None and id(u) in ids for h in states for u in users.get(h, []))


def index(model) -> tuple[dict, dict, dict, int]:
    """The lookups a cell matcher reads: constants (initializers and ``Constant`` nodes), value -> its
    producing node, value -> the nodes reading it (``None`` for a graph output: a reader outside), and the
    default domain's opset."""
    g = model.graph
    prod = {o: n for n in g.node for o in n.output if o}
    users: dict[str, list] = {}
    for n in g.node:
        for i in n.input:
            users.setdefault(i, []).append(n)
    for o in g.output:
        users.setdefault(o.name, []).append(None)  # a graph output has a consumer outside
    opset = next((o.version for o in model.opset_import if (o.domain or "") == ""), 13)
    return _consts(g), prod, users, opset


def cell_nodes(p: str, op: str, x: str, states: list, weights: tuple, opset: int, **attrs) -> tuple:
    """One fused step: ``Unsqueeze`` of x and each state input, the recurrent node ``op`` (named ``p``,
    weights ``(W, R, B)`` as [1, ...] arrays, ``initial_h``/``initial_c`` = the states), ``Squeeze`` of
    its ``Y_h``/``Y_c`` into the state outputs. ``states``: (state input, state output) pairs, h first.
    Returns (nodes, initializers)."""
    from onnx import helper, numpy_helper

    inits = [
        numpy_helper.from_array(np.asarray(a, np.float32), f"{p}.{r}")
        for r, a in zip("WRB", weights, strict=True)
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), f"{p}.axes"))

    def sq(o, src, dst):
        if opset >= 13:
            return helper.make_node(o, [src, f"{p}.axes"], [dst], name=f"{p}/{o}/{dst}")
        return helper.make_node(o, [src], [dst], axes=[0], name=f"{p}/{o}/{dst}")

    init_names = [f"{p}.h0", f"{p}.c0"][: len(states)]
    outs = [f"{p}.Yh", f"{p}.Yc"][: len(states)]
    nodes = [sq("Unsqueeze", x, f"{p}.x")]
    nodes += [sq("Unsqueeze", si, n0) for (si, _), n0 in zip(states, init_names, strict=True)]
    ins = [f"{p}.x", f"{p}.W", f"{p}.R", f"{p}.B", "", *init_names]
    nodes.append(helper.make_node(op, ins, ["", *outs], name=p, **attrs))
    nodes += [sq("Squeeze", y, so) for (_, so), y in zip(states, outs, strict=True)]
    return nodes, inits


def rewrite(model, drop: set, cells: list) -> object:
    """A copy of ``model`` without the nodes whose ids are in ``drop``, each fused cell of ``cells``
    ((nodes, initializers, the values it writes)) inserted where its last operand is available: right
    before the first node reading what it writes."""
    import onnx

    out = onnx.ModelProto()
    out.CopyFrom(model)
    keep = [n for n in model.graph.node if id(n) not in drop]
    for nodes, _inits, writes in cells:
        first = next((j for j, n in enumerate(keep) if any(w in n.input for w in writes)), len(keep))
        keep[first:first] = nodes
    del out.graph.node[:]
    out.graph.node.extend(keep)
    out.graph.initializer.extend(i for _, inits, _ in cells for i in inits)
    return out


def fuse_lstm_cells(model) -> tuple:
    """``model`` with every plain-op LSTM step (module docstring) replaced by an ``LSTM`` node; returns
    ``(model', count)``. ``model`` itself is returned when nothing matched."""
    g = model.graph
    if not any(n.op_type == "Split" for n in g.node):
        return model, 0
    init = {t.name for t in g.initializer}
    ins = [i.name for i in g.input if i.name not in init]
    if not ins:
        return model, 0
    consts, prod, users, opset = index(model)
    found = []
    for n in g.node:
        if n.op_type == "Split" and (n.domain or "") == "":
            r = _match(g, n, prod, users, consts, ins[0])
            if r is not None and state_private(users, [r[2], r[3]], r[0].nodes):
                found.append(r)
    if not found:
        return model, 0
    cells = []
    for k, (_m, x, h, c, h_out, c_out, wx, wh, bias) in enumerate(found):
        hh = wh.shape[1]
        # torch/Keras i, f, g, o -> ONNX i, o, f, c
        order = np.concatenate([np.arange(0, hh), np.arange(3 * hh, 4 * hh), np.arange(hh, 3 * hh)])
        B = np.concatenate([bias[order], np.zeros(4 * hh)])[None]
        weights = (wx[order][None], wh[order][None], B)
        nodes, inits = cell_nodes(
            f"lstm_cell{k}", "LSTM", x, [(h, h_out), (c, c_out)], weights, opset, hidden_size=hh
        )
        cells.append((nodes, inits, (h_out, c_out)))
    drop = {id(n) for r in found for n in r[0].nodes}
    return rewrite(model, drop, cells), len(found)
