"""The compiler's front end on its own: what a graph becomes once its inputs are bound and its shapes
fixed, and how its inputs are read (data, state pairs), without compiling it.

:func:`front_end` is what ``edgernn inspect MODEL.onnx [--set ...] [--shape ...] [--state ...]`` shows,
and what the tests run in ONNX Runtime against the original file (the folded graph must give the same
outputs for the same unbound inputs).
"""

from __future__ import annotations

import os

from .errors import CompileError
from .graph import live_nodes, producers
from .load import load_model
from .passes import pairing
from .passes import state as state_pass
from .passes.cells import fuse_lstm_cells
from .passes.cells_gru import fuse_gru_rnn_cells
from .passes.specialize import needs_specialize, specialize

__all__ = ["front_end", "prepare"]


def prepare(model, bind: dict | None = None, shapes: dict | None = None) -> tuple:
    """The graph the compiler evaluates: ``model`` specialized to ``bind``/``shapes`` (when given, or when
    it holds an ``If``; :mod:`.passes.specialize`) and its plain-op LSTM steps fused into ``LSTM`` nodes
    (:mod:`.passes.cells`). Returns ``(model', info)``, info with ``specialized``, ``folded_ifs``,
    ``bound``, ``shapes`` and ``fused_cells``."""
    info = {"specialized": False, "folded_ifs": 0, "bound": {}, "shapes": {}}
    if bind or shapes or needs_specialize(model):
        model, spec = specialize(model, bind, shapes)
        info.update(spec, specialized=True)
    model, info["fused_cells"] = fuse_lstm_cells(model)
    model, fused = fuse_gru_rnn_cells(model)
    info["fused_cells"] += fused
    return model, info


def front_end(
    model,
    *,
    bind: dict | None = None,
    shapes: dict | None = None,
    state: dict | None = None,
    output: str | None = None,
) -> dict:
    """Specialize ``model`` (an ``onnx.ModelProto`` or a path to an ``.onnx`` file) and read its inputs.

    ``bind``/``shapes``/``state``/``output``: as for :func:`~.api.compile_onnx`. Returns a dict:
    ``model`` (the flat ``If``-free ``onnx.ModelProto`` the compiler reads; the input itself when
    there was nothing to specialize or fuse), ``specialized`` (bool), ``folded_ifs``,
    ``fused_cells``, ``bound`` (input -> value as a list), ``shapes`` (input -> sizes),
    ``state_pairs`` ([input, output] lists), ``output`` (the graph output compiled), ``data_input``
    (its name, or None with the reason in ``data_error``) and ``state_inputs``. Raises
    :class:`CompileError` for bad bindings, shapes or state pairs and for an ``If`` whose condition
    is not constant."""
    if isinstance(model, (str, os.PathLike)):
        model = load_model(os.fspath(model))
    model, info = prepare(model, bind, shapes)
    g = model.graph
    pairs = pairing.choose_pairs(g, state, output)
    outs = [o.name for o in g.output]
    if output is None:
        rest = [o for o in outs if o not in {so for _, so in pairs}]
        output = rest[0] if rest else None
    info.update(model=model, state_pairs=[[i, o] for i, o in pairs], output=output)
    info.update(data_input=None, state_inputs=[])
    if output is None:
        info["data_error"] = "the graph has no outputs"
        return info
    init = {t.name for t in g.initializer}
    nodes, seen = live_nodes(list(g.node), producers(list(g.node)), output)
    used = [i for i in g.input if i.name not in init and i.name in seen]
    try:
        data, st = state_pass.classify_inputs(used, nodes, output, {i for i, _ in pairs})
    except CompileError as e:
        info["data_error"] = str(e)
        return info
    info.update(data_input=data[0].name, state_inputs=[i.name for i in st])
    return info
