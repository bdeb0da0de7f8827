"""Export side of edgernn (installed as ``edgernn.export``): torch -> ONNX -> ``.ernn``, with parity proof.

Imports torch/onnx/onnxruntime lazily, inside the functions that need them.
"""

from __future__ import annotations

from .exporter import ExportParityError, export

__all__ = ["ExportParityError", "export"]
