"""Moved to the package :mod:`edgernn.export.onnx`; this name is kept while importers move."""

from .onnx import CompileError, compile_graph, compile_onnx
from .onnx.load import load_model as _load_model

__all__ = ["CompileError", "_load_model", "compile_graph", "compile_onnx"]
