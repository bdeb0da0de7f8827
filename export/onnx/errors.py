"""The compiler's error type and how it names a node in messages."""

from __future__ import annotations

from ...errors import EdgeRNNError

__all__ = ["CompileError", "where"]


class CompileError(EdgeRNNError, ValueError):
    """The ONNX graph uses something the compiler cannot map onto an ``.ernn`` plan exactly."""


def where(node) -> str:
    """``"<OpType> node '<name>'"``: how an error message names the ONNX node it is about."""
    return f"{node.op_type} node {node.name or '(unnamed)'!r}"
