"""Baselines on the same weights as an ``.ernn`` artifact: a PyTorch module and an ONNX Runtime step graph.

Host-side code (``edgernn.export.baselines``), used by ``edgernn bench`` and by ``benchmarks/``; the device
path never imports it, and torch, onnx and onnxruntime are imported inside the functions that need them.
Modules: ``common`` (plan check, dequantized weights), ``torch_cells``, ``onnx_step`` (step and sequence
graphs), ``ort`` (ONNX Runtime runners), ``source`` (the ONNX file an artifact was compiled from, as a
step graph: graph plans' ONNX Runtime baseline).

Both baselines are built from a validated plan and its tensors (see ``docs/ARTIFACT.md``) so that every
backend runs the very same model: int8 and fp16 weights are dequantized (``w = q * scale``) to float32, which
is the model the edgernn runtime computes. Supported: forward ``rnn``/``lstm``/``gru`` layers with the
standard activations (PyTorch also needs ``linear_before_reset = 1`` for GRU, no clip and no peepholes),
``esn`` (dense or CSR), ``dense``, ``normalize``, ``affine`` and ``activation`` layers. Anything else raises
:class:`Unsupported` naming the layer.

* :class:`TorchBaseline` -- ``step(x)`` runs the cells one step at a time (``nn.LSTMCell``/``GRUCell``/
  ``RNNCell`` + ``nn.Linear``), ``run(X)`` the fused modules (``nn.LSTM``/``GRU``/``RNN``) over a whole
  sequence, ``streams_step(X)`` the batched cells for n streams; one thread, ``inference_mode``.
* :func:`onnx_step_model` -- an ONNX step graph (x_t + states in -> y_t + states out) made with
  ``onnx.helper``: ONNX ``LSTM``/``GRU``/``RNN`` with seq_len 1 and ``initial_h``/``initial_c`` inputs, a
  ``Gemm`` head, the ESN as ``MatMul``/``Add``/``Tanh``/``Mul``.
* :class:`OrtStep` -- runs a step graph at its best: one intra-op and one inter-op thread, sequential
  execution, IOBinding over preallocated buffers with two alternating (ping-pong) state sets, and no
  ``RunOptions`` (ORT 1.32 adds ~25 us of internal exception handling per call when they are passed).
"""

from .common import SUPPORTED, Unsupported, dequantized
from .onnx_step import StateSpec, StepGraph, onnx_step_model, step_graph_from_file
from .ort import OrtSequence, OrtStep, ort_dynamic_int8, ort_session
from .source import file_sha256, source_beside, step_graph_from_source
from .torch_cells import TorchBaseline

__all__ = [
    "SUPPORTED",
    "OrtSequence",
    "OrtStep",
    "StateSpec",
    "StepGraph",
    "TorchBaseline",
    "Unsupported",
    "dequantized",
    "file_sha256",
    "onnx_step_model",
    "ort_dynamic_int8",
    "ort_session",
    "source_beside",
    "step_graph_from_file",
    "step_graph_from_source",
]
