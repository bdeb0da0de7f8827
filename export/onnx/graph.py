"""Reading an ONNX graph: node attributes, producers, and the nodes an output depends on."""

from __future__ import annotations

__all__ = ["attrs", "live_nodes", "producers"]


def attrs(node) -> dict:
    """The node's attributes as Python values (bytes decoded to str)."""
    from onnx import helper

    out = {}
    for a in node.attribute:
        v = helper.get_attribute_value(a)
        if isinstance(v, bytes):
            v = v.decode("utf-8")
        elif isinstance(v, list) and v and isinstance(v[0], bytes):
            v = [s.decode("utf-8") for s in v]
        out[a.name] = v
    return out


def producers(nodes: list) -> dict:
    """Value name -> the node that outputs it."""
    return {o: n for n in nodes for o in n.output if o}


def live_nodes(nodes: list, prod: dict, output: str | list[str]) -> tuple[list, set]:
    """The nodes ``output`` (a value name, or a list of names) depends on (in graph order) and the names of
    every value it reaches back to."""
    needed: set[int] = set()
    stack = [output] if isinstance(output, str) else list(output)
    seen: set[str] = set()
    while stack:
        name = stack.pop()
        if name in seen or not name:
            continue
        seen.add(name)
        n = prod.get(name)
        if n is not None and id(n) not in needed:
            needed.add(id(n))
            stack.extend(n.input)
    return [n for n in nodes if id(n) in needed], seen
