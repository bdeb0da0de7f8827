"""The op registry of the code generator: one module (or class) per layer kind, each the one place that
knows how that kind is written as generated kernel code.

An entry has ``KIND`` (the packed kind code, ``kernels.layout.K_*``), ``NAME`` (the plan's kind name),
``RECURRENT`` and either ``emit_cell(code, layer, d, x, h, c, g, xh)`` (recurrent cells: one step of
direction d on state h/c with scratch g (5H) and xh (I+H)) or ``emit_apply(code, layer, x, y)`` (every
other kind: y from x, state and scratch at the layer's offsets in M).
"""

from __future__ import annotations

from .. import layout as L
from . import (
    attention,
    binary,
    conv,
    dense,
    esn,
    final,
    gather,
    gru,
    layernorm,
    lstm,
    matmul,
    rnn,
    state,
    tconv,
    unary,
    where,
)
from .elementwise import Activation, Affine, Normalize
from .tokens import Embedding, OneHot

#: the graph ops (see ``_graph``); every op, graph or chain, owns its plan fields and tensor roles
#: (``check``, ``tensor_specs``) and its packing (``_pack``)
GRAPH_OPS = (gather, conv, binary, unary, layernorm, tconv, final, state, matmul, where)
#: plan kind name -> graph op module
GRAPH_BY_NAME = {op.NAME: op for op in GRAPH_OPS}

#: kind code -> emitter
REGISTRY = {
    op.KIND: op
    for op in (lstm, gru, rnn, esn, dense, attention, Normalize, Affine, Activation, Embedding, OneHot)
    + GRAPH_OPS
}

#: plan kind name -> emitter
BY_NAME = {op.NAME: op for op in REGISTRY.values()}


def steps(lay) -> bool:
    """Whether packed layer ``lay`` (a :class:`.record.Layer`) runs step by step: no reverse direction and
    not a sequence-only op (``final``). A model streams when every layer does; the generated kernels and
    the numpy backend ask here."""
    op = REGISTRY[lay.kind]
    reverse = op.RECURRENT and (lay.directions != 1 or lay.has(L.F_REVERSE))
    return not reverse and not getattr(op, "SEQUENCE_ONLY", False)


__all__ = ["BY_NAME", "GRAPH_BY_NAME", "GRAPH_OPS", "REGISTRY", "steps"]
