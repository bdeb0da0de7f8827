"""Several model outputs (a format-2 plan's ``outputs``, docs/ARTIFACT.md): what the runtime executes and
how it hands the outputs back.

The kernels write one output vector per step (the last op's value). A plan of several outputs runs as
its graph plus a concatenation of its output values, built from ops the kernels already have: each output
value is copied by a ``gather`` op into its slot of a zero-padded vector of the total width (index −1
gives 0), and ``binary`` ``add`` ops sum those vectors (x + 0 = x exactly). The runtime then splits each
output row back into the outputs, in order. The plan as loaded (``Model.plan``) is unchanged; only the
packed, executed plan holds the extra ops, and their names are made here (names are data: never code).
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

__all__ = ["executed", "specs", "splitter"]


def specs(plan: dict) -> list[dict]:
    """The model outputs of a validated plan, in order: ``name``, ``value``, ``size``, ``sequence``,
    ``labels`` each. One output (no ``outputs`` key): named after the source graph's output when the
    compiler recorded it (``source_io``), else ``"output"`` (the same for a plan and its upgrade)."""
    if "outputs" in plan:
        return [dict(o) for o in plan["outputs"]]
    out = plan["output"]
    src = plan.get("source_io")
    name = src.get("output") if isinstance(src, dict) else None
    if not isinstance(name, str) or not 1 <= len(name) <= 512:
        name = "output"
    return [{"name": name, "value": out.get("value"), **{k: out[k] for k in ("size", "sequence", "labels")}}]


def _fresh(taken: set, stem: str) -> str:
    """A name not in ``taken`` (added to it)."""
    k = 0
    while f"{stem}{k}" in taken:
        k += 1
    taken.add(f"{stem}{k}")
    return f"{stem}{k}"


def executed(plan: dict, tensors: dict[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """The plan the runtime packs and its tensors: ``plan`` itself for one output; for several, the graph
    followed by the concatenation of the output values (see the module docstring) as its last value.

    ``plan`` is validated (format 2 when it has several outputs); the result is validated again."""
    if "outputs" not in plan:
        return plan, tensors
    from .plan import validate_plan

    outs = plan["outputs"]
    total = sum(o["size"] for o in outs)
    values = dict(plan["values"])
    ops = list(plan["ops"])
    tensors = dict(tensors)
    vnames, onames, tnames = set(values), {op["name"] for op in ops}, set(tensors)
    parts, at = [], 0
    for o in outs:
        index = np.full(total, -1.0, np.float32)
        index[at : at + o["size"]] = np.arange(o["size"], dtype=np.float32)
        at += o["size"]
        v, t = _fresh(vnames, "\x00out:part"), _fresh(tnames, "\x00out.index")
        tensors[t] = index
        values[v] = {"shape": [total]}
        ops.append(
            {
                "kind": "gather",
                "name": _fresh(onames, "\x00out:gather"),
                "inputs": [o["value"]],
                "outputs": [v],
            }
            | {"attrs": {}, "tensors": {"index": t}}
        )
        parts.append(v)
    acc = parts[0]
    for v in parts[1:]:
        s = _fresh(vnames, "\x00out:sum")
        values[s] = {"shape": [total]}
        ops.append(
            {"kind": "binary", "name": _fresh(onames, "\x00out:add"), "inputs": [acc, v], "outputs": [s]}
            | {"attrs": {"op": "add"}, "tensors": {}}
        )
        acc = s
    new = {k: x for k, x in plan.items() if k != "outputs"}
    new.update(values=values, ops=ops)
    new["output"] = {"size": total, "sequence": "many_to_many", "labels": None, "value": acc}
    return validate_plan(new), tensors


def splitter(outs: list[dict]) -> Callable[[np.ndarray], tuple[np.ndarray, ...]] | None:
    """None for one output; for several, a function from an array whose last axis is the concatenated
    outputs to the tuple of views of each output's part (in order)."""
    if len(outs) < 2:
        return None
    cuts = np.cumsum([0] + [o["size"] for o in outs]).tolist()
    sl = tuple(slice(a, b) for a, b in zip(cuts[:-1], cuts[1:], strict=True))

    def split(y: np.ndarray) -> tuple[np.ndarray, ...]:
        return tuple(y[..., s] for s in sl)

    return split
