"""Conversions between the two plan formats (docs/ARTIFACT.md): :func:`upgrade` turns a format-1 chain
into the equivalent format-2 graph, :func:`graph_layers` gives the layers any plan runs with the values
each reads, :func:`chain_layers` / :func:`chain_plan` turn a graph of chained layer kinds back into a
chain. Each validates its input with :func:`edgernn.plan.validate_plan`; a graph that is not a chain is
an :class:`~edgernn.ArtifactError` ``"not a chain: ..."``.
"""

from __future__ import annotations

from collections.abc import Mapping

from .plan import GRAPH_KINDS, LAYER_KINDS, NOT_ATTRS, _fail, _short, op_layer, validate_plan

__all__ = ["chain_layers", "chain_plan", "graph_layers", "upgrade"]


def upgrade(plan: Mapping) -> dict:
    """A format-1 plan as the equivalent format-2 graph (a format-2 plan is returned validated).

    Value names are deterministic: ``"input"`` for the model input, ``"<layer name>:y"`` for each layer's
    output; op names are the layer names. Raises :class:`ArtifactError` if ``plan`` is invalid.
    """
    plan = validate_plan(dict(plan))
    if plan["format_version"] == 2:
        return plan
    prev = "input"
    values = {prev: {"shape": [plan["input"]["size"]]}}
    ops = []
    for layer in plan["layers"]:
        v = f"{layer['name']}:y"
        values[v] = {"shape": [layer["output_size"]]}
        ops.append(
            {
                "kind": layer["kind"],
                "name": layer["name"],
                "inputs": [prev],
                "outputs": [v],
                "attrs": {k: x for k, x in layer.items() if k not in NOT_ATTRS},
                "tensors": dict(layer["tensors"]),
            }
        )
        prev = v
    new = {k: v for k, v in plan.items() if k != "layers"}
    new.update(
        format_version=2,
        input={**plan["input"], "value": "input"},
        output={**plan["output"], "value": prev},
        values=values,
        ops=ops,
    )
    return validate_plan(new)


def graph_layers(plan: Mapping) -> tuple[list[dict], list[list[int]]]:
    """The layers a plan of either version runs, in order, and for each the values it reads, as
    positions: 0 the model input, j + 1 the output of layer j (``plan`` validated here).

    A format-1 plan is a chain (layer i reads position i). A format-2 op reads any earlier value, and
    every op writes one value: its output (the op order is the execution order). A ``state`` op reads
    no value when it runs; its entry is the position of its ``next`` value, which the slot takes at the
    end of the step (any position: the value may be written after the state op)."""
    plan = validate_plan(dict(plan))
    if plan["format_version"] == 1:
        return plan["layers"], [[i] for i in range(len(plan["layers"]))]
    pos = {plan["input"]["value"]: 0}
    layers, inputs = [], []
    for idx, op in enumerate(plan["ops"]):
        if len(op["outputs"]) != 1:  # pragma: no cover - every kind has one output today
            raise _fail("bad graph", f"op {idx}: one output expected")
        if op["kind"] not in GRAPH_KINDS and len(op["inputs"]) != 1:
            raise _fail(
                "not a chain",
                f"op {idx} ({_short(op['name'])}, {op['kind']}) reads {len(op['inputs'])} values; only the "
                f"graph ops ({', '.join(GRAPH_KINDS)}) read more than one",
            )
        layers.append(op_layer(plan, op))
        inputs.append([pos[v] for v in op["inputs"]])
        pos[op["outputs"][0]] = idx + 1
    for idx, op in enumerate(plan["ops"]):
        if op["kind"] == "state":
            inputs[idx] = [pos[op["attrs"]["next"]]]
    return layers, inputs


def chain_layers(plan: Mapping) -> list[dict]:
    """The format-1 layer list of a plan of either version (validated here).

    A format-2 graph qualifies when it is a chain: every op of a format-1 layer kind, with one input and
    one output, the first reading the model input, each next one reading the previous op's output, the
    last writing the model output. Otherwise raises :class:`ArtifactError` ``"not a chain: ..."``.
    """
    return _chain(validate_plan(dict(plan)))


def _chain(plan: dict) -> list[dict]:
    """:func:`chain_layers` of a validated plan."""
    if plan["format_version"] == 1:
        return plan["layers"]
    cur = plan["input"]["value"]
    layers = []
    for idx, op in enumerate(plan["ops"]):
        where = f"op {idx} ({_short(op['name'])}, {op['kind']})"
        if op["kind"] not in LAYER_KINDS or len(op["inputs"]) != 1 or len(op["outputs"]) != 1:
            raise _fail("not a chain", f"{where} is not a one-input one-output layer")
        if op["inputs"][0] != cur:
            raise _fail("not a chain", f"{where} reads {_short(op['inputs'][0])}, not {_short(cur)}")
        layers.append(op_layer(plan, op))
        cur = op["outputs"][0]
    if cur != plan["output"]["value"]:  # pragma: no cover - validate_graph refuses unused values
        raise _fail("not a chain", f"the last op writes {_short(cur)}, not the model output")
    return layers


def chain_plan(plan: Mapping) -> dict:
    """The format-1 plan of a plan of either version (see :func:`chain_layers`), validated."""
    plan = validate_plan(dict(plan))
    if plan["format_version"] == 1:
        return plan
    layers = _chain(plan)
    new = {k: v for k, v in plan.items() if k not in ("values", "ops")}
    new["format_version"] = 1
    new["input"] = {k: v for k, v in plan["input"].items() if k != "value"}
    new["output"] = {k: v for k, v in plan["output"].items() if k != "value"}
    new["layers"] = layers
    return validate_plan(new)
