"""State pairs of a step graph (``x_t`` + state in, ``y_t`` + state out).

* :func:`classify_inputs`: the inputs of the state pairs (:mod:`.pairing`) and any graph input that
  reaches only ``initial_h``/``initial_c`` (through plumbing) are state; the one other input is the data.
* :func:`propagate`: a state value flowing through plumbing stays state; its positions are followed
  (a :class:`~..values.Bcast` of flat state positions) so the wiring can be checked.
* :func:`check_wiring`: the output of each state pair must return, position by position, the state
  that its input fed into the recurrent layers (the stream feeds each layer's state back to itself).
* :func:`slot_inputs`: the state inputs read as data, which become state slots (:mod:`.slots`).
"""

from __future__ import annotations

from typing import Any

import numpy as np

from ..errors import CompileError, where
from ..fold import constant
from ..graph import attrs
from ..ops import PLUMBING, handler
from ..ops.recurrent import RECURRENT_OPS, STATE_SLOTS
from ..values import Bcast, Const, State, Sym, state_code
from .pairing import slot_use

__all__ = ["WiringError", "check_wiring", "classify_inputs", "propagate", "slot_inputs", "state_index"]


def classify_inputs(
    used_inputs: list, nodes: list, output: str | list[str], paired: set | None = None
) -> tuple[list, list]:
    """Split the graph inputs the output depends on into (data inputs, state inputs).

    ``used_inputs``: ``ValueInfoProto`` of the non-initializer inputs reached from ``output``; ``nodes``: the
    live nodes in graph order; ``paired``: the inputs of the state pairs (:mod:`.pairing`), state whatever
    they feed. An input reaching only ``initial_h``/``initial_c`` (through plumbing) is state too. Raises
    :class:`CompileError` unless exactly one data input remains and no unpaired input is used both ways."""
    paired = paired or set()
    as_state, as_data = slot_use([i.name for i in used_inputs], nodes)
    as_data |= {x for x in _roots(used_inputs, nodes, output)}
    for i in used_inputs:
        if i.name in as_state and i.name in as_data and i.name not in paired:
            raise CompileError(f"graph input {i.name!r} is used both as data and as recurrent initial state")
    data_inputs = [
        i for i in used_inputs if i.name not in paired and (i.name in as_data or i.name not in as_state)
    ]
    if len(data_inputs) != 1:
        names = [i.name for i in data_inputs]
        raise CompileError(
            f"expected exactly one data input, found {names or 'none'}: bind the inputs that are neither "
            "data nor state with --set NAME=VALUE, or name the state pairs with --state IN=OUT"
            if len(names) > 1
            else f"expected exactly one data input, found {names or 'none'}"
        )
    return data_inputs, [i for i in used_inputs if i not in data_inputs]


def slot_inputs(g, nodes: list, outputs: list[str], pairs: list, inits: dict) -> set:
    """The inputs of state ``pairs`` that become state slots (:mod:`.slots`): read as data by some node
    (not only through plumbing into recurrent state slots), or reaching a compiled output or a state
    output other than through recurrent state slots (``s' = s + x``, a delay line ``y = s``)."""
    paired = {i for i, _ in pairs}
    if not paired:
        return set()
    ins = [i for i in g.input if i.name not in inits]
    _, as_data = slot_use([i.name for i in ins], nodes)
    reach = _roots(ins, nodes, list(outputs) + [o for _, o in pairs])
    return paired & (as_data | reach)


def _roots(used_inputs: list, nodes: list, output: str | list[str]) -> set:
    """The inputs whose values (not only shapes) flow into ``output`` (a name, or a list of names)."""
    roots_of: dict[str, set] = {i.name: {i.name} for i in used_inputs}
    for n in nodes:
        if n.op_type in ("Shape", "Size"):
            continue
        src: set = set()
        for slot, name in enumerate(n.input):
            if n.op_type in RECURRENT_OPS and slot in STATE_SLOTS:
                continue
            src |= roots_of.get(name, set())
        if src:
            for o in n.output:
                roots_of[o] = set(src)
    names = [output] if isinstance(output, str) else list(output)
    return set().union(*(roots_of.get(o, set()) for o in names))


def state_index(vi) -> Bcast | None:
    """Positions of a state input [..., batch, ...] as a Bcast (the symbolic batch axis collapsed)."""
    dims = []
    for d in vi.type.tensor_type.shape.dim:
        dims.append(d.dim_value if d.HasField("dim_value") else Sym(f"{vi.name}:state"))
    if sum(isinstance(d, Sym) for d in dims) > 1:
        return None
    shape = [1 if isinstance(d, Sym) else d for d in dims]
    return Bcast(np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape), dims)


def propagate(cx, node, vals: list) -> list[State]:
    """The outputs of plumbing ``node`` some of whose inputs are state: state of the same source, with
    positions followed when every state input has them and they share one source."""
    if node.op_type not in PLUMBING:
        raise CompileError(f"{where(node)}: state input used by a non-plumbing op")
    present = [v for v in vals if v is not None]
    src = next(v for v in present if isinstance(v, State)).src
    states = [v for v in vals if isinstance(v, State)]
    fn = handler(node.op_type)
    if fn is not None and all(v.ix is not None for v in states) and len({v.src for v in states}) == 1:
        sub = [v.ix if isinstance(v, State) else v for v in vals]
        try:
            res = fn(cx, node, sub, attrs(node))
        except (CompileError, AttributeError, ValueError, IndexError):
            pass  # positions not followed: the wiring check will say it cannot follow them
        else:
            res = res if isinstance(res, list) else [res]
            return [State(src, r if isinstance(r, Bcast) else None) for r in res]
    return [State(src)] * len(node.output)


class WiringError(CompileError):
    """A state output that does not return the state its input fed into recurrent layers: the compiler
    can rewire them (``inputs``: those state inputs) so each layer's state is set from the state output
    at the end of every step (:func:`.slots.resolve_recurrent`)."""

    def __init__(self, msg: str, inputs: set):
        super().__init__(msg)
        self.inputs = set(inputs)


def check_wiring(cx, prod: dict) -> None:
    """The step graph's contract: the state output of each state pair (``cx.state_pairs``) returns, at each
    position, the state that the same position of its state input fed (the stream keeps each layer's own
    state). State inputs without a state output are noted in ``cx.notes``, their wiring unchecked."""
    fed = {f[0] for f in cx.state_feeds}
    # a state slot's write-back is its contract (:mod:`.slots`): only the pairs that feed recurrent
    # layers are checked here (a slot that also feeds one: its recurrent positions)
    pairs = [(i, o) for i, o in cx.state_pairs if i in cx.state_inputs and (i not in cx.slots or i in fed)]
    pairs = [(i, o) for i, o in pairs if i not in cx.rewire]  # set from their state outputs
    unpaired = [i for i in cx.state_inputs if i not in dict(cx.state_pairs)]
    if unpaired:
        cx.notes.append(
            f"state inputs {unpaired} have no state output among {cx.ignored_outputs}: "
            "the state wiring was not checked"
        )
    env: dict[str, Any] = {k: v for k, v in cx.env.items() if isinstance(v, Const)}
    env.update(cx.state_codes)
    for sin, sout in pairs:
        feeds = [f for f in cx.state_feeds if f[0] == sin]
        traced = all(f[3] is not None for f in feeds)
        try:
            got = _eval_codes(cx, sout, prod, env)
        except CompileError as e:
            msg = f"state output {sout!r}: cannot follow it back to the recurrent nodes: {e}"
            raise (WiringError(msg, {sin}) if traced else CompileError(msg)) from None
        if not isinstance(got, Bcast) or not traced:
            if traced:
                raise WiringError(f"state output {sout!r} is not plumbing over Y_h/Y_c", {sin})
            raise CompileError(f"state input {sin!r} / output {sout!r}: cannot follow the state wiring")
        gi = np.asarray(got.arr)
        expected = np.full(gi.size, -1, np.int64)
        for _, li, which, ix in feeds:
            nd, h = ix.shape
            codes = state_code(li, which, np.arange(nd * h)).reshape(nd, h)
            if ix.max() >= expected.size:
                raise CompileError(f"state output {sout!r} is smaller than state input {sin!r}")
            expected[ix.ravel()] = codes.ravel()
        used = expected >= 0
        if gi.size != expected.size or np.any(gi.ravel()[used] != expected[used]):
            raise WiringError(
                f"state output {sout!r} does not return, position by position, the states that input "
                f"{sin!r} feeds into the recurrent layers",
                {sin},
            )


def _eval_codes(cx, name: str, prod: dict, env: dict) -> Any:
    """The value of ``name`` evaluated over the state codes of Y_h/Y_c (``env``) through plumbing nodes
    and the ``Constant`` nodes they use."""
    if name in env:
        return env[name]
    node = prod.get(name)
    if node is not None and node.op_type == "Constant" and (node.domain or "") == "":
        env[node.output[0]] = Const(constant(node))
        return env[name]
    fn = handler(node.op_type) if node is not None else None
    if node is None or node.op_type not in PLUMBING or fn is None:
        raise CompileError(f"{name!r} is not plumbing over Y_h/Y_c")
    vals = [_eval_codes(cx, i, prod, env) if i else None for i in node.input]
    if node.op_type == "Concat" and all(isinstance(v, Bcast) for v in vals):
        axis = attrs(node)["axis"]
        res = [Bcast(np.concatenate([v.arr for v in vals], axis=axis), list(vals[0].dims))]
        r = len(vals[0].dims)
        res[0].dims[axis % r] = sum(v.dims[axis % r] for v in vals)
    else:
        res = fn(cx, node, vals, attrs(node))
        res = res if isinstance(res, list) else [res]
    for o, v in zip(node.output, res, strict=False):
        env[o] = v
    return env.get(name)
