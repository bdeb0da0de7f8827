"""Export side of edgernn (installed as ``edgernn.export``): torch -> ONNX -> ``.ernn`` with a parity
proof, and the ONNX -> ``.ernn`` compiler with quantization.

Imports torch/onnx/onnxruntime lazily, inside the functions that need them.
"""

from __future__ import annotations

from .exporter import ExportParityError, export
from .onnx_compiler import compile_onnx

__all__ = ["ExportParityError", "compile_onnx", "export"]
