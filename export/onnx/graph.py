"""Reading an ONNX graph: node attributes, producers, and the nodes an output depends on."""

from __future__ import annotations

__all__ = ["attrs", "live_nodes", "producers", "reader_counts"]

#: ops that may pass a value on without computing a new one (a view of the same numbers): their readers
#: count as the readers of their input (a generous list only overcounts, which only stops a fusion)
VIEW_OPS = frozenset(
    {
        "Reshape",
        "Squeeze",
        "Unsqueeze",
        "Flatten",
        "Transpose",
        "Identity",
        "Dropout",
        "Slice",
        "Split",
        "Gather",
        "GatherElements",
        "Concat",
        "Cast",
        "CastLike",
        "Expand",
        "Tile",
        "Pad",
        "DepthToSpace",
        "SpaceToDepth",
        "Optional",
        "OptionalGetElement",
        "SequenceConstruct",
        "If",
    }
)


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
            stack.extend(outer_reads(n))
    return [n for n in nodes if id(n) in needed], seen


def outer_reads(node) -> list[str]:
    """The names a node's subgraphs (a ``Scan`` body, ``If`` branches) read from the enclosing scope."""
    out: list[str] = []
    for a in node.attribute:
        for g in ([a.g] if a.HasField("g") else []) + list(a.graphs):
            local = {i.name for i in g.input} | {t.name for t in g.initializer}
            local |= {o for n in g.node for o in n.output}
            for n in g.node:
                out += [i for i in list(n.input) + outer_reads(n) if i and i not in local]
            out += [o.name for o in g.output if o.name not in local]
    return out


def reader_counts(nodes: list, outputs: list[str]) -> dict[str, int]:
    """Value name -> how many computations read the numbers it holds: each consumer among ``nodes``
    counts once, a view op (:data:`VIEW_OPS`) as many as its outputs' readers (at least one), each graph
    output in ``outputs`` once; and a view's count is at least its source's (a slice of a value read
    elsewhere is shared too). A fusion that rewrites a layer in place (an activation or affine op folded
    into the dense layer before it) is only exact when the value it reads has one reader."""
    consumers: dict[str, list] = {}
    for n in nodes:
        for name in set(n.input):
            if name:
                consumers.setdefault(name, []).append(n)
    memo: dict[str, int] = {}

    def count(name: str, depth: int = 0) -> int:
        if name in memo:
            return memo[name]
        memo[name] = 2  # a cycle (not in a valid graph) or a very deep chain: assume shared
        total = outputs.count(name)
        for n in consumers.get(name, ()):
            if n.op_type in VIEW_OPS and depth < 256:
                total += max(1, sum(count(o, depth + 1) for o in n.output if o))
            else:
                total += 1
        memo[name] = total
        return total

    counts = {name: count(name) for name in consumers} | {o: count(o) for o in outputs}
    for n in nodes:  # graph order: a view's sources are final before it
        if n.op_type not in VIEW_OPS:
            continue
        srcs = [i for i in (n.input if n.op_type == "Concat" else n.input[:1]) if i]
        shared = max((counts.get(i, 0) for i in srcs), default=0)
        for o in n.output:
            if o:
                counts[o] = max(counts.get(o, 0), shared)
    return counts
