"""Baselines on the same weights as an ``.ernn`` artifact (PyTorch module, ONNX Runtime step graph).

The code lives in :mod:`edgernn.export.baselines` (host side) so that the installed ``edgernn bench`` command
can build the baselines too; this module is the benchmark suite's handle on it. torch/onnx/onnxruntime are
imported inside its functions.
"""

from edgernn.export.baselines import (  # noqa: F401
    OrtStep,
    StateSpec,
    StepGraph,
    TorchBaseline,
    Unsupported,
    dequantized,
    onnx_step_model,
    ort_session,
)

from edgernn.bench import quantize_int8, synthetic  # noqa: F401
