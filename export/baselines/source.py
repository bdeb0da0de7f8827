"""The ONNX file an artifact was compiled from, run as a step graph: :func:`step_graph_from_source` reads
how the compiler ran it (recorded in the plan's ``source_io``: the data input and output, their axes, the
state pairs, the inputs bound at compile time, the sizes given to open inputs) and makes a
:class:`StepGraph` of the original file, so ONNX Runtime runs the very model the user compiled, state fed
back step by step. :func:`source_beside` finds that file next to the artifact (name and sha256 as
recorded). onnx is imported inside the functions."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .common import Unsupported
from .onnx_step import StateSpec, StepGraph


def source_beside(artifact_path: str, plan: dict) -> tuple[str | None, str]:
    """The recorded source file of ``plan`` when it sits next to ``artifact_path`` with the recorded
    sha256: ``(path, "")``; else ``(None, why)`` (one line)."""
    prod = plan.get("producer") or {}
    name, sha = prod.get("source"), prod.get("source_sha256")
    if not isinstance(name, str) or not name or os.path.basename(name) != name:
        return None, "the artifact records no source ONNX file"
    path = os.path.join(os.path.dirname(os.path.abspath(artifact_path)), name)
    if not os.path.isfile(path):
        return None, f"its source {name!r} is not beside the artifact (give it with --onnx FILE)"
    if not sha:
        return None, f"the artifact records no sha256 of {name!r} (give it with --onnx FILE)"
    if file_sha256(path) != sha:
        return None, f"{name!r} beside the artifact is not the file it was compiled from (sha256 differs)"
    return path, ""


def file_sha256(path: str) -> str:
    """Hex sha256 of the file at ``path``."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def _axes_shape(axes: list, size: int, what: str) -> tuple[int, ...]:
    """One step's shape from the recorded axis roles: batch ("B") and time ("T") axes are 1."""
    shape = []
    for a in axes:
        if a in ("B", "T"):
            shape.append(1)
        elif isinstance(a, int) and not isinstance(a, bool) and a > 0:
            shape.append(a)
        else:
            raise Unsupported(f"the source's {what} has an axis {a!r} a single step cannot feed")
    if int(np.prod(shape, dtype=np.int64)) != size:
        raise Unsupported(f"the source's {what} axes {axes} do not hold {size} values per step")
    return tuple(shape)


def step_graph_from_source(path: str, plan: dict) -> StepGraph:
    """A :class:`StepGraph` of the ONNX file ``path`` that ``plan`` was compiled from.

    x: the recorded data input, one step (batch and time axes 1), ``plan["input"]["size"]`` float32 values;
    y: the compiled output, ``plan["output"]["size"]`` values; states: the recorded state pairs (input ->
    output, shapes as the file declares them with open sizes 1), starting at zero as the compiled stream
    does; the inputs bound at compile time (``--set sr=16000``) are fed as constants of their declared
    type. Plans compiled before the state pairs were recorded get the pairs the compiler finds on the file
    with the recorded bindings. Raises :class:`Unsupported` (one line) when the file cannot be run so.
    """
    import onnx

    io = plan.get("source_io")
    if not isinstance(io, dict) or not isinstance(io.get("input"), str):
        raise Unsupported("the artifact records no input/output of its source ONNX file")
    if plan["input"].get("kind", "features") != "features":
        raise Unsupported("token-id inputs: no ONNX Runtime step baseline from the source file")
    m = onnx.load(path)
    g = m.graph
    inits = {t.name for t in g.initializer}
    ins = {i.name: i for i in g.input if i.name not in inits}
    outs = {o.name: o for o in g.output}
    bound = io.get("bound") or {}
    pairs = io.get("state_pairs")
    if pairs is None:  # an artifact from before the pairs were recorded: find them as the compiler does
        from ..onnx.frontend import front_end

        pairs = front_end(m, bind=bound or None, shapes=io.get("shapes") or None)["state_pairs"]
    x, y = io["input"], io.get("output")
    if x not in ins or y not in outs:
        raise Unsupported(f"{os.path.basename(path)}: no input {x!r} or output {y!r} (another file?)")
    if ins[x].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
        raise Unsupported(f"{os.path.basename(path)}: input {x!r} is not float32")
    x_shape = _axes_shape(io.get("input_axes", []), plan["input"]["size"], f"input {x!r}")
    y_shape = _axes_shape(io.get("output_axes", []), plan["output"]["size"], f"output {y!r}")

    def declared(v) -> tuple[int, ...]:
        t = v.type.tensor_type
        if not t.HasField("shape"):
            raise Unsupported(f"{os.path.basename(path)}: {v.name!r} has no declared shape")
        return tuple(d.dim_value if d.HasField("dim_value") and d.dim_value > 0 else 1 for d in t.shape.dim)

    states = []
    for si, so in pairs:
        if si not in ins or so not in outs:
            raise Unsupported(f"{os.path.basename(path)}: no state pair {si!r} -> {so!r}")
        if ins[si].type.tensor_type.elem_type != onnx.TensorProto.FLOAT:
            raise Unsupported(f"{os.path.basename(path)}: state {si!r} is not float32")
        shape = declared(ins[si])
        states.append(StateSpec(si, so, shape, np.zeros(shape, np.float32)))
    consts = {}
    for name, value in bound.items():
        if name not in ins:
            raise Unsupported(f"{os.path.basename(path)}: no input {name!r} to bind")
        dtype = onnx.helper.tensor_dtype_to_np_dtype(ins[name].type.tensor_type.elem_type)
        consts[name] = np.ascontiguousarray(np.asarray(value, dtype=dtype).reshape(declared(ins[name])))
    fed = {x, *consts, *(si for si, _ in pairs)}
    rest = [n for n in ins if n not in fed]
    if rest:
        raise Unsupported(f"{os.path.basename(path)}: inputs {rest} are neither data, state nor bound")
    return StepGraph(m, x, y, x_shape, y_shape, states, consts)
