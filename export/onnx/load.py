"""Loading an ONNX file, with external data read only from inside the model's own folder."""

from __future__ import annotations

import os

from ...errors import require
from .errors import CompileError, where

__all__ = ["load_model"]

#: control flow the compiler cannot specialize away (an ``If`` with a constant condition is inlined, a
#: forward ``Scan`` over the time axis compiled as its step: :mod:`.ops.scan`)
_CONTROL_FLOW = ("Loop",)


def _inline_external(t, base: str) -> None:
    """Replace the external data reference of tensor ``t`` by its bytes, checking the reference is a plain
    relative path to a file inside ``base`` and the byte range lies inside that file."""
    from onnx import TensorProto

    if t.data_location != TensorProto.EXTERNAL:
        return
    info = {e.key: e.value for e in t.external_data}
    loc = info.get("location", "")
    if (
        not loc
        or os.path.isabs(loc)
        or loc.startswith(("/", "\\"))
        or ".." in loc.replace("\\", "/").split("/")
    ):
        raise CompileError(f"tensor {t.name!r}: external data location {loc!r} is not a plain relative path")
    full = os.path.realpath(os.path.join(base, loc))
    if os.path.commonpath([full, base]) != base:
        raise CompileError(f"tensor {t.name!r}: external data {loc!r} resolves outside the model's folder")
    if not os.path.isfile(full):
        raise CompileError(f"tensor {t.name!r}: external data file {loc!r} does not exist")
    size = os.path.getsize(full)
    try:
        offset = int(info.get("offset", 0) or 0)
        length = int(info["length"]) if info.get("length") else size - offset
    except ValueError:
        raise CompileError(
            f"tensor {t.name!r}: external data offset/length {info.get('offset')!r}/"
            f"{info.get('length')!r} are not integers"
        ) from None
    if offset < 0 or length < 0 or offset + length > size:
        raise CompileError(
            f"tensor {t.name!r}: bytes [{offset}, {offset + length}) outside {loc!r} ({size} B)"
        )
    with open(full, "rb") as f:
        f.seek(offset)
        t.raw_data = f.read(length)
    del t.external_data[:]
    t.data_location = TensorProto.DEFAULT


def _nodes(g):
    """The nodes of graph ``g`` and of its subgraphs (``If`` branches), depth first."""
    for n in g.node:
        yield n
        for a in n.attribute:
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                yield from _nodes(sub)


def _inline_graph(g, base: str) -> None:
    """Inline the external data of every tensor of ``g`` and of its subgraphs."""
    for t in g.initializer:
        _inline_external(t, base)
    for n in g.node:
        for a in n.attribute:
            if a.HasField("t"):
                _inline_external(a.t, base)
            for t in a.tensors:
                _inline_external(t, base)
            for sub in ([a.g] if a.HasField("g") else []) + list(a.graphs):
                _inline_graph(sub, base)


def load_model(path: str):
    """Load the ONNX model at ``path`` (an ``onnx.ModelProto``), reading external data only from files
    inside the model's own folder (no absolute paths, no ``..``, no symlink leaving the folder, byte
    ranges inside the file), in subgraphs too. ``Loop`` is refused here (a ``Scan`` compiles:
    :mod:`.ops.scan`); an ``If`` is left to :mod:`.passes.specialize`, which inlines it when its condition
    is constant."""
    onnx = require("onnx", "export")

    try:
        model = onnx.load(path, load_external_data=False)
    except Exception as e:  # noqa: BLE001 - protobuf raises several types
        raise CompileError(f"cannot read {path!r} as an ONNX model: {e}") from None
    base = os.path.realpath(os.path.dirname(os.path.abspath(path)))
    _inline_graph(model.graph, base)
    flow = next((n for n in _nodes(model.graph) if n.op_type in _CONTROL_FLOW), None)
    if flow is not None:
        raise CompileError(f"unsupported op {flow.op_type!r} ({where(flow)}): control flow is not compiled")
    return model
