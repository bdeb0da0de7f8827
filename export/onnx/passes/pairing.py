"""Which graph input is the data and which input/output pairs are the step graph's state.

A step graph maps ``(x_t, state) -> (y_t, state')``. A *state pair* is a graph input and a graph output of
the same element type and compatible shape, the output computed from the input; the stream keeps the
state between calls and feeds ``state'`` back as ``state``. Pairs are named by the user
(``state={"h": "hn"}``, ``--state h=hn``) or found automatically: every candidate pair is scored, and
pairs are taken best first, one per input and per output, never leaving the graph without a data input or
without an output to compile. The score prefers

* name pairs: ``state`` -> ``stateN``, ``h`` -> ``hn``, ``c`` -> ``cn``, ``h`` -> ``h_out``, ``hidden`` ->
  ``hidden_out``, ``x_in`` -> ``x_out`` (+4);
* state-like input names (``state``, ``h``, ``c``, ``h0``, ``hidden``, ``cell``, ``cache``, ...) (+2);
* inputs that reach ``initial_h``/``initial_c`` of a recurrent node through data-movement ops (+3), and
  more (+3 again) when the output is that node's ``Y_h``/``Y_c`` (the same slot) through data movement;
* not the first graph input, which is taken as the data when several inputs fit (-3).

An input no output pairs with but that reaches only recurrent state slots is still state (the stream
keeps it; the wiring is then not checked). The one remaining input the compiled output uses is the data.
"""

from __future__ import annotations

import re

from ..errors import CompileError
from ..ops import PLUMBING
from ..ops.recurrent import RECURRENT_OPS, STATE_SLOTS

__all__ = ["choose_pairs", "slot_use"]

_STATE_WORDS = re.compile(
    r"(^|[_./:])(state|states|h|c|h0|c0|hx|cx|hidden|cell|cache|mem|memory|carry)s?(\d*)$"
)
_OUT_SUFFIXES = ("n", "N", "_n", "_out", "out", "_new", "new", "_next", "next", "1", "_1", "o", "_o")


def _dims(vi) -> list | None:
    tt = vi.type.tensor_type
    if not tt.HasField("shape"):
        return None
    return [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]


def _compatible(a, b) -> bool:
    """Element types equal (or unknown) and shapes agree wherever both are known."""
    ea, eb = a.type.tensor_type.elem_type, b.type.tensor_type.elem_type
    if ea and eb and ea != eb:
        return False
    da, db = _dims(a), _dims(b)
    if da is None or db is None or not db:
        return True
    if len(da) != len(db):
        return False
    return all(x is None or y is None or x == y for x, y in zip(da, db, strict=True))


def _name_pair(i: str, o: str) -> bool:
    if any(o == i + s for s in _OUT_SUFFIXES):
        return True
    for a, b in (("_in", "_out"), ("in", "out"), ("_0", "_n"), ("0", "n"), ("_prev", "_next"), ("_prev", "")):
        if i.endswith(a) and o == i[: len(i) - len(a)] + b:
            return True
    return False


def slot_use(inputs: list[str], nodes: list) -> tuple[set, set]:
    """(inputs that reach ``initial_h``/``initial_c`` of a recurrent node through plumbing, inputs used
    any other way: as data of a non-plumbing op or a recurrent op's ``X``)."""
    roots_of: dict[str, set] = {n: {n} for n in inputs}
    as_state: set = set()
    as_data: set = set()
    for n in nodes:
        if n.op_type in ("Shape", "Size"):
            continue  # only the shape of the value flows on
        src: set = set()
        for slot, name in enumerate(n.input):
            r = roots_of.get(name, set())
            if not r:
                continue
            if n.op_type in RECURRENT_OPS and slot in STATE_SLOTS:
                as_state |= r
                continue
            if n.op_type in RECURRENT_OPS or n.op_type not in PLUMBING:
                as_data |= r
            src |= r
        if src:
            for o in n.output:
                roots_of[o] = set(src)
    return as_state, as_data


def _slot_links(inputs: list[str], outputs: list[str], nodes: list) -> tuple[dict, dict]:
    """(input -> {(recurrent node index, "h"|"c")} it feeds as initial_h/initial_c through plumbing,
    output -> {(recurrent node index, "h"|"c")} it is Y_h/Y_c of, through plumbing)."""
    roots: dict[str, set] = {n: {n} for n in inputs}
    fed: dict[str, set] = {n: set() for n in inputs}
    came: dict[str, set] = {}
    for k, n in enumerate(nodes):
        rec = n.op_type in RECURRENT_OPS
        if rec:
            for slot, which in ((5, "h"), (6, "c")):
                if len(n.input) > slot:
                    for r in roots.get(n.input[slot], ()):
                        fed[r].add((k, which))
            for j, which in ((1, "h"), (2, "c")):
                if len(n.output) > j and n.output[j]:
                    came[n.output[j]] = {(k, which)}
            continue
        if n.op_type not in PLUMBING or n.op_type in ("Shape", "Size"):
            continue
        r = set().union(*[roots.get(i, set()) for i in n.input if i])
        c = set().union(*[came.get(i, set()) for i in n.input if i])
        for o in n.output:
            if r:
                roots[o] = r
            if c:
                came[o] = c
    return fed, {o: came.get(o, set()) for o in outputs}


def _ancestors(nodes: list, name: str) -> set:
    prod = {o: n for n in nodes for o in n.output if o}
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


def choose_pairs(g, explicit: dict | None = None, output: str | None = None) -> list[tuple[str, str]]:
    """The state pairs ``[(input, output), ...]`` of graph ``g`` (an ``onnx.GraphProto``), in graph input
    order: ``explicit`` (input name -> output name) when given, else found automatically (see the module
    docstring). ``output``: the graph output(s) the user asked to compile (a name or a list: never a state
    output). A named pair's output need not be computed from its input (a delay line ``s' = x``); a
    found one is. Raises
    :class:`CompileError` for an explicit pair naming an unknown input/output or contradicting shapes."""
    asked = {output} if isinstance(output, str) else set(output or ())  # a name, or several
    init = {t.name for t in g.initializer}
    ins = [i for i in g.input if i.name not in init]
    outs = list(g.output)
    by_in = {i.name: i for i in ins}
    by_out = {o.name: o for o in outs}
    nodes = list(g.node)
    if explicit:
        pairs = []
        for i, o in explicit.items():
            if i not in by_in:
                raise CompileError(f"--state {i}={o}: the graph has no input named {i!r}")
            if o not in by_out:
                raise CompileError(f"--state {i}={o}: the graph has no output named {o!r}")
            if o in asked:
                raise CompileError(f"--state {i}={o}: {o!r} is the output being compiled")
            if not _compatible(by_in[i], by_out[o]):
                raise CompileError(
                    f"--state {i}={o}: input {i!r} {_dims(by_in[i])} and output {o!r} {_dims(by_out[o])} "
                    "differ in element type or shape"
                )
            # an output not computed from its input is allowed when named: a delay line (s' = x)
            pairs.append((i, o))
        if len({o for _, o in pairs}) != len(pairs):
            raise CompileError("--state: two inputs paired with the same output")
        return sorted(pairs, key=lambda p: [i.name for i in ins].index(p[0]))
    reach, _ = slot_use(list(by_in), nodes)
    fed, came = _slot_links(list(by_in), list(by_out), nodes)
    anc = {o.name: _ancestors(nodes, o.name) for o in outs}
    cands = []
    for k, i in enumerate(ins):
        for j, o in enumerate(outs):
            if o.name in asked or i.name not in anc[o.name] or not _compatible(i, o):
                continue
            if _dims(o) is None and not _name_pair(i.name, o.name):
                continue  # an output of unknown shape pairs only by name
            score = 4 * _name_pair(i.name, o.name) + 2 * bool(_STATE_WORDS.search(i.name))
            score += 3 * (i.name in reach) + 3 * bool(fed[i.name] & came[o.name]) - 3 * (k == 0)
            cands.append((-score, k, j, i.name, o.name))
    cands.sort()
    pairs: list[tuple[str, str]] = []
    used_in: set = set()
    used_out: set = set()
    for _, _, _, i, o in cands:
        if i in used_in or o in used_out:
            continue
        if len(used_in) + 1 >= len(ins) or len(used_out) + 1 >= len(outs):
            continue  # keep one input for the data and one output to compile
        pairs.append((i, o))
        used_in.add(i)
        used_out.add(o)
    return sorted(pairs, key=lambda p: [i.name for i in ins].index(p[0]))
