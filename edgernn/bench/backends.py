"""The runtimes under test, each behind one :class:`Backend` interface: edgernn (numba or numpy), ONNX
Runtime (step graph, sequence graph, its own int8), PyTorch (cells, fused modules, a user checkpoint).
The baselines come from ``edgernn.export.baselines``, imported when a backend is built."""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import Any

import numpy as np


class Backend:
    """One runtime under test: ``step(x)``, ``reset()``, optional ``run(X)`` and ``streams(n) -> step``."""

    def __init__(
        self, name: str, step, reset, run=None, run_kind="run", streams=None, source="", elem_bytes=4
    ):
        self.name, self.step, self.reset, self.run, self.run_kind = name, step, reset, run, run_kind
        self.streams, self.source, self.elem_bytes = streams, source, elem_bytes


def _edgernn_backend(path: str, name: str, kernel_backend: str | None) -> Backend:
    import edgernn

    m = edgernn.load(path, backend=kernel_backend) if kernel_backend else edgernn.load(path)
    s = m.stream()

    def streams(n: int):
        return m.streams(n).step

    quant = m.info.get("quantization", "none") if isinstance(m.info, dict) else "none"
    return Backend(
        name,
        s.step,
        s.reset,
        s.run,
        "Stream.run",
        streams,
        f"edgernn ({m.info.get('backend')})",
        1 if quant == "int8" else 4,
    )


def _ort_backend(
    plan: dict, tensors: Mapping, onnx_path: str | None, seq_path: str | None = None
) -> tuple[Backend, Any]:
    """ONNX Runtime on the same model. Steps: the step graph ``onnx_path`` (``x`` + states in, ``y`` + states
    out, e.g. ``edgernn export``'s ``model.step.onnx``), else one built from the artifact's weights.
    Streams: that file with its symbolic batch dimension set to n, else step graphs for n streams built from
    the weights. Chunks: the sequence graph ``seq_path`` (``model.onnx``: ``(batch, time, features)`` in,
    from the initial state), else a sequence graph built from the weights (continuing the state of a step
    graph built from the weights; from the initial state next to a step graph from a file), else a loop of
    steps. Whatever the files leave out is built from the plan when it can be."""
    from ..export import baselines as bl

    def from_plan(**kw):
        try:
            return bl.onnx_step_model(plan, tensors, **kw)
        except bl.Unsupported:
            return None

    parts = []
    if onnx_path:
        graph = bl.step_graph_from_file(onnx_path)
        parts.append(os.path.basename(onnx_path))
    else:
        graph = bl.onnx_step_model(plan, tensors)
        parts.append("ORT step graph, artifact weights")
    streams, streams_from = None, None
    if onnx_path and bl.step_graph_from_file(onnx_path, batch=2).x_shape != graph.x_shape:
        streams_from = onnx_path

        def streams(n: int):  # the file's own graph, batch dimension n
            return bl.OrtStep(bl.step_graph_from_file(onnx_path, batch=n)).step

    elif not onnx_path or from_plan() is not None:

        def streams(n: int):
            return bl.OrtStep(bl.onnx_step_model(plan, tensors, batch=n)).step

        streams_from = "built from the artifact"
        if onnx_path:
            parts.append("streams built")
    o = bl.OrtStep(graph)
    seq_file = None
    if seq_path:
        try:
            seq_file = bl.OrtSequence(seq_path, input_size=plan["input"]["size"])
        except bl.Unsupported:
            seq_file = None
    seqs: dict[int, Any] = {}
    if seq_file is not None:
        run_kind = f"sequence graph ({os.path.basename(seq_path)})"
        parts.append(f"{os.path.basename(seq_path)} for chunks")
    elif from_plan(seq_len=2) is not None:  # ORT's chunk mode: one sequence graph per T
        run_kind = "sequence graph"
    else:
        run_kind = "step loop"

    def run(X: np.ndarray) -> np.ndarray:
        if seq_file is not None:
            return seq_file.run(X)
        if run_kind == "step loop" or len(X) < 2:
            return np.stack([o.step(x) for x in X])
        r = seqs.get(len(X))
        if r is None:
            r = seqs[len(X)] = bl.OrtStep(bl.onnx_step_model(plan, tensors, seq_len=len(X)))
        if onnx_path:  # a step graph from a file may order its states otherwise: from the initial state
            r.reset()
            return r.step(X)
        # continue the state of the step graph's stream
        cur = o._sa if o._phase == 0 else o._sb
        for a, v in zip(r._sa, cur, strict=True):
            a[...] = v
        r._phase = 0
        y = r.step(X)
        for a, v in zip(cur, r._sb, strict=True):
            a[...] = v
        return y

    b = Backend("onnxruntime", o.step, o.reset, run, run_kind, streams, "; ".join(parts))
    b.onnx_bytes = None if onnx_path else graph.model.SerializeToString()
    b.files = {
        "step": onnx_path or "built from the artifact",
        "streams": streams_from,
        "sequence": seq_path
        if seq_file is not None
        else ("built from the artifact" if run_kind == "sequence graph" else None),
    }
    return b, graph


def _ort_graph_backend(plan: dict, source: str | None, step_file: str | None, why: str) -> Backend:
    """ONNX Runtime for a graph plan: the original ONNX file ``source`` it was compiled from, state fed
    back (:func:`edgernn.export.baselines.step_graph_from_source`), else a step graph file ``step_file``
    (x + states in, y + states out: ``edgernn export``'s ``model.step.onnx``); ``run`` is a loop of steps
    and there is no streams row (a file's batch axis need not be its states'). Neither: raises
    :class:`~edgernn.export.baselines.Unsupported` saying ``why``."""
    from ..export import baselines as bl

    graph = None
    if source is not None:
        try:
            graph = bl.step_graph_from_source(source, plan)
            used = source
        except bl.Unsupported as e:
            if step_file is None:
                raise
            why = str(e)
    if graph is None and step_file is not None:
        graph = bl.step_graph_from_file(step_file)
        used = step_file
    if graph is None:
        raise bl.Unsupported(why)
    o = bl.OrtStep(graph)

    def run(X: np.ndarray) -> np.ndarray:
        return np.stack([o.step(x) for x in X])

    b = Backend("onnxruntime", o.step, o.reset, run, "step loop", None, os.path.basename(used))
    b.onnx_bytes = None
    b.files = {"step": used, "streams": None, "sequence": None}
    b.cold_feeds = {
        "bound": (plan.get("source_io") or {}).get("bound") or {},
        "shapes": {graph.x: list(graph.x_shape), **{s.name_in: list(s.shape) for s in graph.states}},
    }
    return b


def _ort_int8_backend(plan: dict, tensors: Mapping) -> Backend:
    from ..export import baselines as bl

    o = bl.OrtStep(bl.ort_dynamic_int8(bl.onnx_step_model(plan, tensors)))

    def streams(n: int):
        return bl.OrtStep(bl.ort_dynamic_int8(bl.onnx_step_model(plan, tensors, batch=n))).step

    def run(X: np.ndarray) -> np.ndarray:
        return np.stack([o.step(x) for x in X])

    src = "ORT quantize_dynamic (own int8)"
    b = Backend("onnxruntime-int8", o.step, o.reset, run, "step loop", streams, src, elem_bytes=1)
    b.onnx_bytes = o.graph.model.SerializeToString()
    return b


def _torch_backend(plan: dict, tensors: Mapping) -> Backend:
    from ..export import baselines as bl

    tb = bl.TorchBaseline(plan, tensors)

    def streams(n: int):
        tb.reset(n)
        return tb.streams_step

    def reset():
        tb.reset(1)

    return Backend(
        "torch", tb.step, reset, tb.run, "fused nn.LSTM/GRU/RNN", streams, "torch cells + F.linear"
    )


def _checkpoint_backend(ckpt: str, plan: dict, tensors: Mapping) -> Backend:
    """The user's own PyTorch model from ``edgernn.models.save``: ``run(X)`` is its forward over the whole
    sequence (fused nn.LSTM/GRU/RNN, or the ESN module); ``step`` runs the torch cells on the artifact's
    weights (a module's forward has no per-step state). A many-to-one module returns only the last output:
    ``run`` then gives (1, O), which the check compares with edgernn's last step."""
    import torch

    from ..export import baselines as bl
    from ..models import load as load_checkpoint

    module = load_checkpoint(ckpt).eval()
    torch.set_num_threads(1)
    tb = bl.TorchBaseline(plan, tensors)

    def run(X: np.ndarray) -> np.ndarray:
        with torch.inference_mode():
            y = module(torch.from_numpy(np.ascontiguousarray(X, np.float32))[None])[0]
        return y.numpy() if y.dim() == 2 else y.numpy()[None]

    def reset() -> None:
        tb.reset(1)

    return Backend(
        "torch-checkpoint", tb.step, reset, run, f"forward of {os.path.basename(ckpt)}", None, ckpt
    )


def _cpp_backend(plan: dict, tensors: Mapping) -> Backend:
    """The plain C++ loop (``edgernn.bench.cpp``: ``floor.cpp`` compiled here with the system compiler):
    ``run(X)`` is one call for the whole chunk, ``step(x)`` one ctypes call per step (its ~1 us of call
    overhead is in the step figures; the chunk figure has none). Raises ``cpp.Unsupported`` (one line) for
    a model floor.cpp does not cover or when there is no compiler."""
    from . import cpp

    why = cpp.covers(plan)
    if why:
        raise cpp.Unsupported(why)
    f32 = {k: (v.astype(np.float32) if v.dtype == np.float16 else v) for k, v in tensors.items()}
    f = cpp.CppFloor.for_model(plan, f32)
    f.step(np.zeros(f.I, np.float32))  # the instance exists (floor.cpp returns -1 otherwise)
    f.reset()
    src = "C++ loop floor.cpp; step via ctypes"
    return Backend("cpp", f.step, f.reset, f.run, "one C++ call per chunk", None, src)
