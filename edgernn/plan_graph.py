"""Validation of a format-2 plan: a dataflow graph of named values and ops (docs/ARTIFACT.md).

The graph checks (each a named :class:`~edgernn.ArtifactError`): ``unknown value``, ``duplicate value``,
``cycle``, ``bad graph``, ``dangling output``, ``unused value``, ``shape mismatch``, and for a plan of several
outputs (``outputs``) ``duplicate output``. A ``state`` op (a stream state slot) reads no value when it runs;
its attribute ``next`` names the value the slot takes at the end of every step (checked here: a value some
op writes, of the slot's size; it counts as read), and a graph holding one must stream. Each op is then
checked as the format-1 layer it stands for, by the same code as format 1 (:mod:`edgernn.plan`).
"""

from __future__ import annotations

from .plan import (
    GRAPH_KINDS,
    LAYER_KINDS,
    MAX_DIM,
    MAX_OPS,
    MAX_OUTPUTS,
    MAX_VALUE_NAME,
    MAX_VALUES,
    NOT_ATTRS,
    OP_ARITY,
    OP_KEYS,
    OUTPUT_KEYS,
    _fail,
    _int,
    _layer_fields,
    _name,
    _short,
    _token_layer,
    check_final_source,
    op_layer,
    op_module,
)

TOKEN_KINDS = ("embedding", "onehot")


def validate_graph(plan: dict, inp: dict, out: dict) -> None:
    """Check the graph of a format-2 ``plan`` in place (``input``/``output`` already checked), filling in
    defaults: ``attrs`` and ``tensors`` of every op are normalized like a format-1 layer's fields."""
    if "layers" in plan:
        raise _fail("bad plan", "a format-2 plan has 'values' and 'ops', not 'layers'")
    iv = _name(inp.get("value"), "input 'value'", MAX_VALUE_NAME)
    ov = _name(out.get("value"), "output 'value'", MAX_VALUE_NAME)
    values = _values(plan)
    for key, v, size in (("input", iv, inp["size"]), ("output", ov, out["size"])):
        if v not in values:
            raise _fail("unknown value", f"the model {key} {_short(v)} is not in 'values'")
        if values[v]["shape"] != [size]:
            raise _fail(
                "shape mismatch",
                f"the model {key} {_short(v)} has shape {values[v]['shape']}, {key}.size {size}",
            )
    outs = _outputs(plan, out, values)
    ops = plan.get("ops")
    if not isinstance(ops, list) or not ops:
        raise _fail("bad plan", "'ops' must be a non-empty list")
    if len(ops) > MAX_OPS:
        raise _fail("bad plan", f"{len(ops)} ops (at most {MAX_OPS})")
    if "outputs" in plan:  # the runtime adds 2 ops and 2 values per output (edgernn/outputs.py)
        extra = 2 * len(plan["outputs"])
        if len(ops) + extra > MAX_OPS or len(values) + extra > MAX_VALUES:
            raise _fail(
                "bad plan",
                f"{len(ops)} ops and {len(values)} values with {len(plan['outputs'])} outputs (at most "
                f"{MAX_OPS} ops and {MAX_VALUES} values, 2 of each per output included)",
            )
    producer = {iv: -1}  # value -> index of the op writing it (-1: the model input)
    names: set[str] = set()
    for idx, op in enumerate(ops):
        where = _structure(idx, op, values, names)
        for v in op["outputs"]:
            if v in producer:
                p = producer[v]
                by = "the model input" if p < 0 else f"op {p} ({_short(ops[p]['name'])})"
                raise _fail("duplicate value", f"{where} writes {_short(v)}, already written by {by}")
            producer[v] = idx
    readers: dict[str, list[int]] = {v: [] for v in values}
    for idx, op in enumerate(ops):
        for v in op["inputs"]:
            if v not in producer:
                raise _fail(
                    "unknown value",
                    f"{_where(idx, op)} reads {_short(v)}, which no op writes and is not the model input",
                )
            readers[v].append(idx)
    for idx, op in enumerate(ops):
        if op["kind"] == "state":
            readers[_state_next(idx, op, values, producer)].append(idx)
        for v in _recurrent_next(idx, op, values, producer):
            readers[v].append(idx)
    _check_order(ops, producer)
    for o in outs:
        if producer.get(o, -1) < 0:
            raise _fail("dangling output", f"the model output {_short(o)} is not written by any op")
    for v, r in readers.items():
        if not r and v not in outs:
            p = producer.get(v)
            by = (
                "nobody writes it"
                if p is None
                else "the model input"
                if p < 0
                else f"written by {_where(p, ops[p])}"
            )
            raise _fail("unused value", f"value {_short(v)} is not read by any op ({by})")
    for idx, op in enumerate(ops):
        _check_op(idx, op, plan, inp)
    _check_streams(ops)
    for idx, op in enumerate(ops):
        if op["kind"] == "final":
            p = producer[op["inputs"][0]]
            src = op_layer(plan, ops[p]) if p >= 0 else None
            check_final_source(_where(idx, op), op_layer(plan, op), src)
    if inp["kind"] == "tokens":
        for r in readers[iv]:
            if ops[r]["kind"] not in TOKEN_KINDS:
                raise _fail(
                    "bad layer", f"{_where(r, ops[r])}: a token input is read by embedding or onehot ops only"
                )


def _state_next(idx: int, op: dict, values: dict, producer: dict) -> str:
    """The value a ``state`` op's slot takes at the end of every step (its attribute ``next``): a value
    some op writes (or the model input), of the slot's own size."""
    where = _where(idx, op)
    attrs = op["attrs"]
    nxt = attrs.get("next")
    if not isinstance(nxt, str) or not nxt:
        raise _fail("bad field", f"{where}: 'next' must name the value the slot takes, got {_short(nxt)}")
    if nxt not in values or nxt not in producer:
        raise _fail(
            "unknown value", f"{where}: the slot's next value {_short(nxt)} is not a value any op writes"
        )
    have, want = values[nxt]["shape"], values[op["outputs"][0]]["shape"]
    if have != want:
        raise _fail(
            "shape mismatch",
            f"{where}: the slot has shape {want} but its next value {_short(nxt)} has shape {have}",
        )
    return nxt


def _recurrent_next(idx: int, op: dict, values: dict, producer: dict) -> list[str]:
    """The values a forward recurrent op's h (``h_next``) and an lstm's c (``c_next``) take at the end of
    every step (a step graph whose state output is computed from the layer's output): values some op
    writes, of hidden_size each."""
    where = _where(idx, op)
    attrs = op["attrs"]
    out = []
    for key in ("h_next", "c_next"):
        v = attrs.get(key)
        if v is None:
            continue
        if op["kind"] not in ("rnn", "lstm", "gru") or (key == "c_next" and op["kind"] != "lstm"):
            raise _fail("bad field", f"{where}: '{key}' is a field of recurrent ops (c_next: lstm)")
        if not isinstance(v, str) or not v:
            raise _fail("bad field", f"{where}: '{key}' must name a value, got {_short(v)}")
        if attrs.get("direction", "forward") != "forward":
            raise _fail("bad field", f"{where}: '{key}' needs a forward direction")
        if v not in values or v not in producer:
            raise _fail("unknown value", f"{where}: {key} {_short(v)} is not a value any op writes")
        h = attrs.get("hidden_size")
        if values[v]["shape"] != [h]:
            raise _fail(
                "shape mismatch",
                f"{where}: {key} {_short(v)} has shape {values[v]['shape']}, hidden_size {_short(h)}",
            )
        out.append(v)
    return out


def _check_streams(ops: list) -> None:
    """A graph holding ``state`` slots runs step by step: no op of it may need the whole sequence."""
    slots = [
        idx
        for idx, op in enumerate(ops)
        if op["kind"] == "state" or any(op["attrs"].get(k) is not None for k in ("h_next", "c_next"))
    ]
    if not slots:
        return
    for idx, op in enumerate(ops):
        direction = op["attrs"].get("direction", "forward")
        if op["kind"] == "final" or (op["kind"] in ("rnn", "lstm", "gru") and direction != "forward"):
            raise _fail(
                "bad graph",
                f"{_where(idx, op)} needs the whole sequence, but {_where(slots[0], ops[slots[0]])} is a "
                "state slot, which runs step by step",
            )


def _outputs(plan: dict, out: dict, values: dict) -> set[str]:
    """Check ``outputs`` (several model outputs, in order; ``output`` is the first) and fill in each
    entry's defaults; returns the values the model outputs."""
    if "outputs" not in plan:
        return {out["value"]}
    outs = plan["outputs"]
    if not isinstance(outs, list) or not 2 <= len(outs) <= MAX_OUTPUTS:
        raise _fail("bad plan", f"'outputs' must be a list of 2 to {MAX_OUTPUTS} outputs, got {_short(outs)}")
    names: set[str] = set()
    for k, o in enumerate(outs):
        what = f"outputs[{k}]"
        if not isinstance(o, dict):
            raise _fail("bad field", f"{what} is not an object")
        extra = sorted(key for key in o if key not in OUTPUT_KEYS)
        if extra:
            raise _fail(
                "bad field", f"{what}: unknown key(s) {_short(extra)} (known: {', '.join(OUTPUT_KEYS)})"
            )
        v = _name(o.get("value"), f"{what} 'value'", MAX_VALUE_NAME)
        name = _name(o.setdefault("name", v), f"{what} 'name'", MAX_VALUE_NAME)
        if name in names:
            raise _fail("duplicate output", f"{what}: two outputs are named {_short(name)}")
        names.add(name)
        size = _int(what, o, "size")
        seq = o.setdefault("sequence", "many_to_many")
        if seq not in ("many_to_one", "many_to_many"):
            raise _fail("bad field", f"{what}: sequence {_short(seq)}")
        labels = o.setdefault("labels", None)
        if labels is not None and (
            not isinstance(labels, list) or len(labels) != size or not all(isinstance(x, str) for x in labels)
        ):
            raise _fail("bad field", f"{what}: labels must be a list of {size} strings")
        if v not in values:
            raise _fail("unknown value", f"{what}: the model output {_short(v)} is not in 'values'")
        if values[v]["shape"] != [size]:
            raise _fail(
                "shape mismatch",
                f"{what}: the model output {_short(v)} has shape {values[v]['shape']}, size {size}",
            )
    first = outs[0]
    for key in ("value", "size", "sequence", "labels"):
        if first[key] != out[key]:
            raise _fail(
                "bad field",
                f"'output' must be outputs[0]: its {key} is {_short(out[key])}, not {_short(first[key])}",
            )
    return {o["value"] for o in outs}


def _where(idx: int, op: dict) -> str:
    return f"op {idx} ({_short(op['name'])}, {op['kind']})"


def _values(plan: dict) -> dict:
    values = plan.get("values")
    if not isinstance(values, dict) or not values:
        raise _fail("bad plan", "'values' must be a non-empty object")
    if len(values) > MAX_VALUES:
        raise _fail("bad plan", f"{len(values)} values (at most {MAX_VALUES})")
    for name, v in values.items():
        what = f"value {_short(name)}"
        _name(name, what, MAX_VALUE_NAME)
        if not isinstance(v, dict) or set(v) != {"shape"}:
            raise _fail("bad field", f"{what} must be an object {{'shape': [n]}}, got {_short(v)}")
        shape = v["shape"]
        if not isinstance(shape, list) or len(shape) != 1:
            raise _fail("bad field", f"{what}: shape {_short(shape)} is not a 1-D shape [n]")
        n = shape[0]
        if isinstance(n, bool) or not isinstance(n, int):
            raise _fail("bad field", f"{what}: shape {_short(shape)} must hold integers")
        if not 1 <= n <= MAX_DIM:
            raise _fail("bad size", f"{what}: shape {_short(shape)} is outside [1, {MAX_DIM}]")
    return values


def _structure(idx: int, op: object, values: dict, names: set[str]) -> str:
    """Check an op's keys, name, kind, inputs and outputs; returns its description for messages."""
    if not isinstance(op, dict):
        raise _fail("bad graph", f"op {idx} is not an object")
    extra = sorted(k for k in op if k not in OP_KEYS)
    if extra:
        raise _fail("bad field", f"op {idx}: unknown key(s) {_short(extra)} (known: {', '.join(OP_KEYS)})")
    name = _name(op.get("name"), f"op {idx}")
    kind = op.get("kind")
    if kind not in LAYER_KINDS:  # a tuple: unhashable kinds compare, never raise
        raise _fail("unknown op kind", f"op {idx}: {_short(kind)} (known: {', '.join(LAYER_KINDS)})")
    where = _where(idx, op)
    if name in names:
        raise _fail("bad field", f"duplicate op name {_short(name)}")
    names.add(name)
    for key, n in zip(("inputs", "outputs"), OP_ARITY[kind], strict=True):
        lst = op.get(key)
        if not isinstance(lst, list) or len(lst) != n or not all(isinstance(s, str) for s in lst):
            raise _fail(
                "bad graph", f"{where}: '{key}' must be a list of {n} value name(s), got {_short(lst)}"
            )
        if key == "outputs" and len(set(lst)) != len(lst):  # an op may read one value twice (x * x)
            raise _fail("bad graph", f"{where}: '{key}' names a value twice")
        for v in lst:
            if v not in values:
                raise _fail("unknown value", f"{where}: {key[:-1]} {_short(v)} is not in 'values'")
    attrs = op.setdefault("attrs", {})
    if not isinstance(attrs, dict):
        raise _fail("bad field", f"{where}: 'attrs' must be an object")
    held = [k for k in NOT_ATTRS if k in attrs]
    if held:
        raise _fail(
            "bad field",
            f"{where}: {held} are not attributes (kind, name, tensors: op keys; sizes: from values)",
        )
    if not isinstance(op.setdefault("tensors", {}), dict):
        raise _fail("bad field", f"{where}: 'tensors' must be an object")
    return where


def _check_order(ops: list, producer: dict) -> None:
    """Every op reads only values written before it: refuse a cycle, then any other order."""
    preds = [[producer[v] for v in op["inputs"] if producer[v] >= 0] for op in ops]
    for idx, ps in enumerate(preds):
        late = [p for p in ps if p >= idx]
        if late:
            cyc = _find_cycle(preds)
            if cyc:
                path = " -> ".join(_short(ops[i]["name"]) for i in cyc + cyc[:1])
                raise _fail("cycle", f"ops {path} depend on each other")
            raise _fail(
                "bad graph",
                f"ops are not in topological order: {_where(idx, ops[idx])} reads a value written by "
                f"the later {_where(late[0], ops[late[0]])}",
            )


def _find_cycle(preds: list[list[int]]) -> list[int]:
    """Op indices on one cycle, in dataflow order, or [] (Kahn's algorithm, then a walk back)."""
    n = len(preds)
    succ: list[list[int]] = [[] for _ in range(n)]
    indeg = [0] * n
    for j, ps in enumerate(preds):
        for p in ps:
            succ[p].append(j)
            indeg[j] += 1
    ready = [j for j in range(n) if indeg[j] == 0]
    while ready:
        p = ready.pop()
        for j in succ[p]:
            indeg[j] -= 1
            if indeg[j] == 0:
                ready.append(j)
    left = {j for j in range(n) if indeg[j] > 0}
    if not left:
        return []
    seen: dict[int, int] = {}
    path: list[int] = []
    node = min(left)
    while node not in seen:  # every op left has a predecessor left: the walk must close a loop
        seen[node] = len(path)
        path.append(node)
        node = next(p for p in preds[node] if p in left)
    return path[seen[node] :][::-1]


def _check_op(idx: int, op: dict, plan: dict, inp: dict) -> None:
    """Check one op as the format-1 layer it stands for; write its normalized attributes back."""
    layer = op_layer(plan, op)
    where = _where(idx, op)
    sizes = {plan["values"][v]["shape"][0] for v in op["inputs"]}
    sized = op["kind"] in GRAPH_KINDS and hasattr(op_module(op["kind"]), "input_sizes")
    if op["kind"] in GRAPH_KINDS and op["inputs"] and not sized and len(sizes) != 1:
        raise _fail("shape mismatch", f"{where} reads values of different sizes {sorted(sizes)}")
    o = _layer_fields(where, layer, bool(op["inputs"]) and op["inputs"][0] == inp["value"])
    if sized:  # inputs of different sizes (matmul): each against the op's fields
        got = [plan["values"][v]["shape"][0] for v in op["inputs"]]
        want = op_module(op["kind"]).input_sizes(layer)
        if got != want:
            raise _fail("shape mismatch", f"{where} reads values of sizes {got}; its fields need {want}")
    if o != layer["output_size"]:
        v = op["outputs"][0]
        raise _fail(
            "shape mismatch",
            f"{where} produces {o} values per step but its output {_short(v)} has shape "
            f"{plan['values'][v]['shape']}",
        )
    if op["kind"] in TOKEN_KINDS:
        _token_layer(where, layer, inp)
    op["attrs"] = {k: x for k, x in layer.items() if k not in NOT_ATTRS}
    op["tensors"] = layer["tensors"]
