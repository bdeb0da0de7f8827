"""``Scan``: a forward scan over the time axis, compiled as its body — the body is the step.

ONNX ``Scan`` (opset ≥ 9) runs its body once per element of the scanned axis: N state variables
(their initial values are the node's first N inputs) and M scan inputs (the data at step t, axis
``scan_input_axes``, 0 by default) in; the N updated state variables and K scan outputs (y_t, stacked
along ``scan_output_axes``) out. edgernn's streams already run one step per time step, so:

* each state variable is a state slot (a ``state`` op, ``kernels/ops/state.py``): the body reads the
  slot's value from before the step, and the slot's ``next`` is the body's state output (its
  ``initial`` tensor the constant initial value, zeros omitted);
* each scan input, scanned along the model's time axis, is that value at step t (the axis removed);
* each scan output is the body's value at step t with the time axis put back at its output axis, and
  each final state output (the node's first N outputs) the state after the last step (``last``).

Refused, naming the attribute or input: a reverse scan (``scan_input_directions`` or
``scan_output_directions`` ≠ 0), a scan over a static axis or the batch axis, an initial state that is
not a constant (or a constant broadcast over the batch axis), a body holding control flow, opset 8's
``Scan`` (batched, with ``sequence_lens``).
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError, where
from ..graph import live_nodes, producers, reader_counts
from ..values import Bcast, Const, Data, Multi, Sym, feat_index
from .registry import register


def _initial(w: str, k: int, name: str, v) -> tuple[list, np.ndarray]:
    """(dims, feature values) of state variable k's initial value: a constant, or one broadcast over
    the symbolic (batch) axes."""
    if isinstance(v, Const):
        arr = np.asarray(v.arr)
        return list(arr.shape), arr.reshape(-1)
    if isinstance(v, Bcast):
        arr = np.asarray(v.arr)
        feats = [int(d) for d in v.dims if not isinstance(d, Sym)]
        return list(v.dims), np.broadcast_to(arr.reshape(feats if feats else ()), feats).reshape(-1)
    raise CompileError(
        f"{w}: the initial value of state variable {k} ({name!r}) is not a constant (an initial state "
        "computed from the data or a graph input is not compiled)"
    )


def _renamer(body, prefix: str):
    """A function mapping a body-scope name to its unique name in the compiler's value table (names the
    body does not define are outer-scope names, kept)."""
    local = {i.name for i in body.input} | {t.name for t in body.initializer}
    local |= {o for n in body.node for o in n.output if o}
    return lambda name: (prefix + name) if name in local else name


def _body_nodes(w: str, body, rename) -> list:
    from onnx import NodeProto

    out = []
    for n in body.node:
        if any(a.HasField("g") or a.graphs for a in n.attribute):
            raise CompileError(f"{w}: the Scan body holds control flow ({n.op_type} {n.name!r})")
        m = NodeProto()
        m.CopyFrom(n)
        del m.input[:]
        del m.output[:]
        m.input.extend(rename(i) if i else "" for i in n.input)
        m.output.extend(rename(o) if o else "" for o in n.output)
        out.append(m)
    return out


def _as_data(cx, v, what: str) -> Data:
    if isinstance(v, Multi):
        v = cx._concat_output(v, what)
    if not isinstance(v, Data):
        raise CompileError(f"{what} is not computed from the data (a constant or a pass-through)")
    return v


def _read(cx, node, j: int) -> bool:
    """Whether output j of the node is read (by a node or as a compiled output)."""
    return j < len(node.output) and bool(node.output[j]) and node.output[j] in cx.used


@register("Scan")
def scan(cx, node, vals, at):
    """The Scan node's outputs: N final states (last step), then K scan outputs (every step)."""
    from onnx import numpy_helper

    w = where(node)
    if cx.opset.get("", 0) < 9:
        raise CompileError(f"{w}: opset {cx.opset.get('', 0)} Scan (batched, sequence_lens) is not compiled")
    body = at["body"]
    m = int(at.get("num_scan_inputs", 0))
    n_state = len(vals) - m
    n_out = len(body.output) - n_state
    if m < 1 or n_state < 0 or n_out < 0 or len(body.input) != n_state + m:
        raise CompileError(f"{w}: num_scan_inputs = {m} does not match the body's inputs and outputs")
    for key, count in (("scan_input_directions", m), ("scan_output_directions", n_out)):
        dirs = [int(d) for d in at.get(key, [0] * count)]
        if any(d != 0 for d in dirs):
            raise CompileError(f"{w}: {key} = {dirs}: a reverse scan is not compiled (only forward scans)")
    in_axes = [int(a) for a in at.get("scan_input_axes", [0] * m)]
    out_axes = [int(a) for a in at.get("scan_output_axes", [0] * n_out)]
    plan = cx.plan
    prefix = f"{plan.name('scan')}/"
    rename = _renamer(body, prefix)
    env = cx.env
    for t in body.initializer:
        env[rename(t.name)] = Const(np.asarray(numpy_helper.to_array(t)))
    # scan inputs: the value at step t, its scanned (time) axis removed
    time = None
    for j, v in enumerate(vals[n_state:]):
        name = node.input[n_state + j]
        if not isinstance(v, Data):
            raise CompileError(f"{w}: scan input {name!r} does not depend on the model input")
        a = in_axes[j] + len(v.axes) if in_axes[j] < 0 else in_axes[j]
        d = v.axes[a] if 0 <= a < len(v.axes) else None
        if not isinstance(d, Sym):
            raise CompileError(
                f"{w}: scan_input_axes[{j}] = {in_axes[j]} scans {name!r} over a static axis ({d}): only "
                "the model's time axis is compiled"
            )
        if d.role == "B" or (time is not None and d is not time):
            raise CompileError(f"{w}: scan_input_axes[{j}] scans {name!r} over the batch axis, not time")
        d.role, time = "T", d
        axes = v.axes[:a] + v.axes[a + 1 :]
        env[rename(body.input[n_state + j].name)] = Data(
            axes, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant, v.fin
        )
    # state variables: state slots
    slots = []
    for k, v in enumerate(vals[:n_state]):
        dims, init = _initial(w, k, node.input[k], v)
        n = int(init.size)
        layer = {"kind": "state", "name": plan.name("state"), "input_size": n, "output_size": n, "next": None}
        tensors = {"initial": init.astype(np.float32)} if np.any(init != 0) else {}
        plan.add_layer(layer, tensors, inputs=[])
        slots.append((len(plan.layers), dims))
        env[rename(body.input[k].name)] = Data(list(dims), np.arange(n), np.zeros(n, bool), len(plan.layers))
    nodes = _body_nodes(w, body, rename)
    outs = [rename(o.name) for o in body.output]
    # the body's nodes that compute its state outputs and the scan outputs read outside
    used = [o for j, o in enumerate(outs) if j < n_state or _read(cx, node, j)]
    nodes = live_nodes(nodes, producers(nodes), used)[0]
    cx.used |= {i for n in nodes for i in n.input if i} | set(used)  # (a recurrent node's Y_c when read)
    for name, c in reader_counts(nodes, outs).items():
        cx.readers[name] = cx.readers.get(name, 0) + c
    for n in nodes:
        cx.eval_node(n)
    res = []
    for k, (pos, dims) in enumerate(slots):
        what = f"{w}: the body's state output {body.output[k].name!r}"
        v = _as_data(cx, env.get(outs[k]), what)
        got = [d for d in feat_index(v)[0].shape if d != 1]
        want = [int(d) for d in dims if not isinstance(d, Sym) and d != 1]
        if got != want:
            raise CompileError(f"{what} has feature shape {got}, its state variable {want}")
        plan.layers[pos - 1]["next"] = plan.value_input(v, what)
        res.append(Data(v.axes, v.perm, v.bad, v.pos, True, v.step, v.tokens, v.why, v.quant, v.fin))
    for j in range(n_out):
        if not _read(cx, node, n_state + j):
            res.append(None)
            continue
        what = f"{w}: the body's scan output {body.output[n_state + j].name!r}"
        v = _as_data(cx, env.get(outs[n_state + j]), what)
        r = len(v.axes) + 1
        a = out_axes[j] + r if out_axes[j] < 0 else out_axes[j]
        if not 0 <= a < r:
            raise CompileError(f"{w}: scan_output_axes[{j}] = {out_axes[j]} is out of range for rank {r}")
        axes = v.axes[:a] + [time] + v.axes[a:]
        res.append(Data(axes, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant, v.fin))
    return res
