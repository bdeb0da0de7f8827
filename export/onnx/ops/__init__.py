"""ONNX op handlers, one module per op family, registered by op type in :mod:`.registry`.

Adding an op: write ``@register("OpType") def handler(cx, node, vals, at)`` in the module of its family
(or a new module imported below); the compiler dispatches to it by ``node.op_type``.
"""

# importing the family modules registers their handlers
from . import activations, attention, elementwise, embedding, indexing, linear, quantized, recurrent, shape  # noqa: F401
from .registry import OPS, PLUMBING, Handler, handler, register

__all__ = ["OPS", "PLUMBING", "Handler", "handler", "register"]
