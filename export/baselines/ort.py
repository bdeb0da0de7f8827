"""Running ONNX graphs in ONNX Runtime at their best: :func:`ort_session`, :class:`OrtStep` (IOBinding,
ping-pong state buffers) and :func:`ort_dynamic_int8` (ORT's own dynamic quantization of a step graph).
onnxruntime is imported inside the functions."""

from __future__ import annotations

import numpy as np

from .common import Unsupported
from .onnx_step import StepGraph


def ort_session(model, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` at its best for one stream: ``threads`` intra-op threads, one
    inter-op thread, sequential execution, all graph optimizations, CPU provider. ``model`` is a path,
    bytes or an ``onnx.ModelProto``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class OrtStep:
    """Runs an ONNX step graph one step at a time with IOBinding and ping-pong state buffers.

    ``step(x)``: x (input_size,) or (batch, input_size) float32 -> y (output_size,) / (batch, output_size),
    a new array (for a sequence graph: X (T, input_size) -> Y (T, output_size)).
    States live in two preallocated buffer sets, A and B: even steps read A and write B, odd
    steps read B and write A, through two IOBindings made once; the input and output are preallocated too.
    ``run_with_iobinding`` is called on the session's C++ object directly, with no ``RunOptions``.
    """

    def __init__(self, graph: StepGraph, threads: int = 1, session=None):
        self.graph = graph
        self.sess = session if session is not None else ort_session(graph.model, threads)
        self._x = np.zeros(graph.x_shape, np.float32)
        self._y = np.zeros(graph.y_shape, np.float32)
        self._sa = [np.zeros(s.shape, np.float32) for s in graph.states]
        self._sb = [np.zeros(s.shape, np.float32) for s in graph.states]
        self._bind = [self._binding(self._sa, self._sb), self._binding(self._sb, self._sa)]
        self._raw = [b._iobinding for b in self._bind]
        self._run = self.sess._sess.run_with_iobinding
        self._x2 = self._x.reshape(-1, graph.x_shape[-1])  # (batch or T, input_size)
        self._y2 = self._y.reshape(-1, graph.y_shape[-1])
        self._x1, self._y1 = self._x2[0], self._y2[0]
        self.reset()

    def _binding(self, src: list[np.ndarray], dst: list[np.ndarray]):
        b = self.sess.io_binding()
        g = self.graph
        b.bind_input(g.x, "cpu", 0, np.float32, list(self._x.shape), self._x.ctypes.data)
        b.bind_output(g.y, "cpu", 0, np.float32, list(self._y.shape), self._y.ctypes.data)
        for s, a_in, a_out in zip(g.states, src, dst, strict=True):
            b.bind_input(s.name_in, "cpu", 0, np.float32, list(a_in.shape), a_in.ctypes.data)
            b.bind_output(s.name_out, "cpu", 0, np.float32, list(a_out.shape), a_out.ctypes.data)
        for name, arr in g.consts.items():  # bound inputs (e.g. a sample rate), the graph holds them
            b.bind_cpu_input(name, arr)
        return b

    def reset(self) -> None:
        """Every stream back to the initial state (zeros or the layers' initial_h/initial_c)."""
        for s, a in zip(self.graph.states, self._sa, strict=True):
            a[...] = s.initial
        self._phase = 0

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step: x (input_size,) or (batch, input_size) -> y (output_size,) or (batch, output_size)."""
        if x.ndim == 1:
            self._x1[:] = x
        else:
            self._x2[:] = x
        self._run(self._raw[self._phase], None)
        self._phase ^= 1
        return self._y1.copy() if x.ndim == 1 else self._y2.copy()

    @property
    def state(self) -> list[np.ndarray]:
        """The current states (copies), in the order of ``graph.states``."""
        cur = self._sa if self._phase == 0 else self._sb
        return [a.copy() for a in cur]


class OrtSequence:
    """Runs a sequence graph over one stream from its initial state: ``edgernn export``'s ``model.onnx``, one
    float input ``(batch, time, features)`` and the output first, ``(batch, time, output_size)`` (or
    ``(batch, output_size)`` for a many-to-one model). ``run(X)``: X (T, features) -> (T, output_size)
    (``(1, output_size)`` for many-to-one). One intra-op thread as :func:`ort_session` sets it up.
    Raises :class:`Unsupported` when the graph has another interface or another input size than
    ``input_size``.
    """

    def __init__(self, model, input_size: int | None = None, threads: int = 1):
        self.sess = ort_session(model, threads)
        ins, outs = self.sess.get_inputs(), self.sess.get_outputs()
        where = model if isinstance(model, str) else "sequence graph"
        if len(ins) != 1 or ins[0].type != "tensor(float)" or len(ins[0].shape) != 3:
            got = ", ".join(f"{i.name} {i.type} {i.shape}" for i in ins)
            raise Unsupported(
                f"{where}: not a sequence graph with one float (batch, time, features) input: {got}"
            )
        f = ins[0].shape[2]
        if input_size is not None and isinstance(f, int) and f != input_size:
            raise Unsupported(f"{where}: {f} input features, the artifact has {input_size}")
        self._in, self._out = ins[0].name, outs[0].name

    def run(self, X: np.ndarray) -> np.ndarray:
        """X (T, features) float32 -> (T, output_size), or (1, output_size) for a many-to-one graph."""
        y = self.sess.run([self._out], {self._in: np.ascontiguousarray(X, np.float32)[None]})[0][0]
        return y if y.ndim == 2 else y[None]


def ort_dynamic_int8(graph: StepGraph) -> StepGraph:
    """The step graph quantized by ONNX Runtime's own ``quantize_dynamic`` (int8 weights, per channel;
    activations quantized at run time; LSTM -> DynamicQuantizeLSTM, MatMul/Gemm -> integer kernels, GRU/RNN
    stay float). Its outputs differ from edgernn's int8 model by ORT's activation quantization error."""
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="edgernn-ortq-") as d:
        src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "int8.onnx")
        onnx.save(graph.model, src)
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        model = onnx.load(dst)
    return StepGraph(model, graph.x, graph.y, graph.x_shape, graph.y_shape, list(graph.states))
