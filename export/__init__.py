"""Host-side export: ONNX → ``.ernn`` compiler and quantization (imports onnx lazily)."""

from .onnx_compiler import compile_onnx

__all__ = ["compile_onnx"]
