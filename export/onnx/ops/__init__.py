"""ONNX op handlers, one module per op family, registered by op type in :mod:`.registry`.

Adding an op: write ``@register("OpType") def handler(cx, node, vals, at)`` in the module of its family
(or a new module imported below); the compiler dispatches to it by ``node.op_type``.
"""

# importing the family modules registers their handlers
from . import (  # noqa: F401
    activations,
    attention,
    conv,
    convtranspose,
    elementwise,
    embedding,
    extrema,
    indexing,
    linear,
    logic,
    math,
    norm,
    quantized,
    recurrent,
    scan,
    shape,
)
from .registry import OPS, PLUMBING, Handler, handler, register

__all__ = ["OPS", "PLUMBING", "Handler", "handler", "register"]
