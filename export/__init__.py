"""Host-side export (installed as ``edgernn.export``): torch -> ONNX -> ``.ernn`` with a parity proof
(:func:`export`), and the ONNX -> ``.ernn`` compiler with quantization (:func:`compile_onnx`).
Imports torch/onnx/onnxruntime lazily, inside the functions that need them."""

from .exporter import ExportParityError, export
from .onnx import compile_onnx

__all__ = ["ExportParityError", "compile_onnx", "export"]
