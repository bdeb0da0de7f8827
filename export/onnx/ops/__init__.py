"""ONNX op handlers, one module per op family, registered by op type in :mod:`.registry`."""

from . import activations, attention, elementwise, embedding, indexing, linear, quantized, recurrent, shape
from .registry import OPS, PLUMBING, Handler, handler, register

__all__ = [
    "OPS",
    "PLUMBING",
    "Handler",
    "activations",
    "attention",
    "elementwise",
    "embedding",
    "handler",
    "indexing",
    "linear",
    "quantized",
    "recurrent",
    "register",
    "shape",
]
