"""The ONNX -> ``.ernn`` compiler, as a package (being moved here from ``onnx_compiler.py``)."""
