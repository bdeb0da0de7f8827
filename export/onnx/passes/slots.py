"""State slots: a step graph's state read as data (issue 13, "any stateful step graph").

A state pair (:mod:`.pairing`) whose input only flows through plumbing into recurrent nodes'
``initial_h``/``initial_c`` stays a recurrent state (the layer keeps it; :func:`.state.check_wiring`
checks the graph returns it). Any other use — arithmetic on the state (``Concat(hist, x) -> MatMul``, an
RNN written as ``MatMul/Add/Tanh``, ``a*s + (1-a)*x``, a counter), the state joined with data, the state as
a graph output (a delay line) — reads the input's *state slot*: a ``state`` op (``kernels/ops/state.py``)
whose output is the slot's value from before the step, made when the state is first read as data
(:func:`read`). After the graph is evaluated, :func:`resolve_writes` binds each slot to the value of its
paired state output (``next``: the stream writes it back at the end of every step), checking its size and
feature shape; a state output that reads another state (``s2' = s1``) makes that input a slot too.
"""

from __future__ import annotations

import numpy as np

from ..errors import CompileError
from ..values import Data, Multi, State, Sym, feat_index
from .state import state_index

__all__ = ["read", "resolve_recurrent", "resolve_writes"]


def _slot_shape(cx, src: str) -> list[int]:
    """The feature shape of state input ``src`` (its symbolic batch axis left out)."""
    ix = state_index(cx.state_vis[src])
    if ix is None:
        raise CompileError(f"state input {src!r} has more than one symbolic axis")
    return [int(d) for d in ix.dims if not isinstance(d, Sym)]


def _batch_sym(cx, src: str, d: Sym) -> Sym:
    """The data input's symbolic axis a state input's symbolic (batch) axis stands for."""
    syms = cx.input_syms
    if len(syms) == 1:
        return syms[0]
    batch = [s for s in syms if s.role == "B"]
    if len(batch) == 1:
        return batch[0]
    raise CompileError(
        f"state input {src!r}: cannot tell which axis of the data input {cx.input_name!r} its batch axis is"
    )


def _new_slot(cx, src: str, what: str) -> int:
    """Append the ``state`` op of state input ``src``; returns its position in the plan."""
    if src not in dict(cx.state_pairs):
        raise CompileError(
            f"{what}: state input {src!r} is read as data but has no state output to write back: "
            "name the pair with --state IN=OUT"
        )
    n = int(np.prod(_slot_shape(cx, src), dtype=np.int64))
    plan = cx.plan
    layer = {"kind": "state", "name": plan.name("state"), "input_size": n, "output_size": n, "next": None}
    plan.add_layer(layer, {}, inputs=[])
    cx.slots[src] = len(plan.layers)
    return cx.slots[src]


def read(cx, v: State, what: str) -> Data:
    """State value ``v`` (a state input, maybe through plumbing) as data: its positions of the state
    input's slot, the value of the slot from before the step."""
    src = v.src
    if v.ix is None:
        raise CompileError(
            f"{what}: cannot follow the positions of state input {src!r} through the ops before it"
        )
    pos = cx.slots.get(src) or _new_slot(cx, src, what)
    axes = [_batch_sym(cx, src, d) if isinstance(d, Sym) else int(d) for d in v.ix.dims]
    perm = np.asarray(v.ix.arr, np.int64).ravel()
    return Data(axes, perm, np.zeros(perm.size, bool), pos)


def _output_value(cx, sout: str, what: str):
    """The value of state output ``sout`` as the plan computes it: a state read from its slot, the parts
    of a multi-part value joined (anything else as it is; the callers say what they accept)."""
    v = cx.env.get(sout)
    if isinstance(v, State):
        v = read(cx, v, what)
    if isinstance(v, Multi):
        v = cx._concat_output(v, what)
    return v


def resolve_writes(cx) -> None:
    """Bind every slot to its state output's value (its ``next``), until no new slot appears."""
    pairs = dict(cx.state_pairs)
    done: set[str] = set()
    while len(done) < len(cx.slots):
        for sin in [s for s in cx.slots if s not in done]:
            done.add(sin)
            sout = pairs[sin]
            what = f"state output {sout!r}"
            v = _output_value(cx, sout, what)
            if not isinstance(v, Data):
                raise CompileError(
                    f"{what} (the next value of state input {sin!r}) is "
                    + ("not computed" if v is None else "not computed from the data or the state")
                )
            shape = _slot_shape(cx, sin)
            got = list(feat_index(v)[0].shape)
            if int(np.prod(got, dtype=np.int64)) != int(np.prod(shape, dtype=np.int64)) or (
                [d for d in got if d != 1] != [d for d in shape if d != 1]
            ):
                raise CompileError(
                    f"{what} has feature shape {got}, its state input {sin!r} {shape}: the stream writes "
                    "the output back into the input's slot, so their shapes must agree"
                )
            pos = cx.plan.value_input(v, what)
            cx.plan.layers[cx.slots[sin] - 1]["next"] = pos


def resolve_recurrent(cx) -> None:
    """For each state input in ``cx.rewire`` (its state output is not the recurrent layers' own Y_h/Y_c):
    every recurrent layer it feeds takes, at the end of each step, the state output's value at the
    positions that input fed it (``h_next``/``c_next``), so the next step starts from the state the graph
    returns, as ONNX Runtime fed its own state output does."""
    pairs = dict(cx.state_pairs)
    for sin, li, which, ix in cx.state_feeds:
        if sin not in cx.rewire:
            continue
        sout = pairs[sin]
        what = f"state output {sout!r}"
        layer = cx.plan.layers[li]
        if ix is None or ix.shape[0] != 1 or layer.get("direction") != "forward":
            raise CompileError(
                f"{what}: is not the recurrent layer's own state, and the positions state input {sin!r} "
                "feeds it could not be followed (or the layer is not forward)"
            )
        v = _output_value(cx, sout, what)
        if not isinstance(v, Data):
            raise CompileError(
                f"{what} (the next value of state input {sin!r}) is not computed from the data"
            )
        shape = _slot_shape(cx, sin)
        got = list(feat_index(v)[0].shape)
        if [d for d in got if d != 1] != [d for d in shape if d != 1]:
            raise CompileError(f"{what} has feature shape {got}, its state input {sin!r} {shape}")
        sel = np.asarray(ix[0], np.int64)
        part = Data([int(sel.size)], v.perm[sel], v.bad[sel], v.pos, v.last, v.step, why=v.why, fin=v.fin)
        layer[f"{which}_next"] = cx.plan.value_input(part, what)
