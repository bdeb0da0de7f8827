"""``edgernn bench``: latency, throughput, start-up and memory of edgernn next to ONNX Runtime and PyTorch.

The harness is numpy-only; the baselines (``edgernn.baselines``) import onnx/onnxruntime/torch inside
functions, only when those backends are asked for and installed. Also home of :func:`synthetic`, the
random-weight models the benchmark suite and the tests of ``edgernn bench`` use.
"""

from __future__ import annotations

import json
import math
import os
import platform
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Mapping
from typing import Any

import numpy as np

# ------------------------------------------------------------------------------------- model factory


def synthetic(
    cell: str,
    input_size: int = 8,
    hidden_size: int = 64,
    output_size: int = 1,
    density: float = 1.0,
    leak_rate: float = 0.3,
    seed: int = 0,
) -> tuple[dict, dict[str, np.ndarray]]:
    """A random-weight model ``cell`` (``lstm``, ``gru``, ``rnn``, ``esn``) input_size -> hidden_size,
    followed by a linear Dense hidden_size -> output_size. Returns ``(plan, tensors)`` for
    :func:`edgernn.artifact.write`, float32.

    Recurrent weights are uniform(-1/sqrt(H), 1/sqrt(H)) as PyTorch initializes them; the ESN reservoir is
    normal, ``density`` of its entries kept (stored as CSR when ``density < 1``) and scaled to spectral
    radius 0.9, leak rate ``leak_rate``. The GRU is ``linear_before_reset = 1`` (PyTorch's convention).
    """
    rng = np.random.default_rng(seed)
    i, h, o = input_size, hidden_size, output_size
    tensors: dict[str, np.ndarray] = {}
    k = 1.0 / math.sqrt(h)

    def u(*shape):
        return rng.uniform(-k, k, size=shape).astype(np.float32)

    if cell in ("lstm", "gru", "rnn"):
        g = {"lstm": 4, "gru": 3, "rnn": 1}[cell]
        tensors.update({"rec.W": u(1, g * h, i), "rec.R": u(1, g * h, h), "rec.B": u(1, 2 * g * h)})
        layer: dict[str, Any] = {
            "kind": cell,
            "name": "rec",
            "input_size": i,
            "hidden_size": h,
            "tensors": {"W": "rec.W", "R": "rec.R", "B": "rec.B"},
        }
        if cell == "gru":
            layer["linear_before_reset"] = 1
    elif cell == "esn":
        n = h
        w = rng.standard_normal((n, n))
        if density < 1.0:
            w *= rng.random((n, n)) < density
        radius = float(np.max(np.abs(np.linalg.eigvals(w)))) or 1.0
        w = (w * (0.9 / radius)).astype(np.float32)
        tensors["rec.W_in"] = rng.uniform(-1, 1, size=(n, i)).astype(np.float32)
        tensors["rec.b"] = rng.uniform(-0.2, 0.2, size=n).astype(np.float32)
        layer = {
            "kind": "esn",
            "name": "rec",
            "input_size": i,
            "reservoir_size": n,
            "leak_rate": leak_rate,
            "readout_input": "state",
            "tensors": {"W_in": "rec.W_in", "b": "rec.b"},
        }
        if density < 1.0:
            rows, cols = np.nonzero(w)
            tensors["rec.W_data"] = w[rows, cols].astype(np.float32)
            tensors["rec.W_indices"] = cols.astype(np.int32)
            tensors["rec.W_indptr"] = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(
                np.int32
            )
            layer.update(sparse=True, nnz=int(len(rows)))
            layer["tensors"].update(W_data="rec.W_data", W_indices="rec.W_indices", W_indptr="rec.W_indptr")
        else:
            tensors["rec.W"] = w
            layer["tensors"]["W"] = "rec.W"
        k = 1.0 / math.sqrt(n)
    else:
        raise ValueError(f"synthetic: unknown cell {cell!r} (lstm, gru, rnn, esn)")
    tensors["head.W"] = u(o, h)
    tensors["head.b"] = u(o)
    head = {"kind": "dense", "name": "head", "input_size": h, "output_size": o, "activation": "linear"}
    head["tensors"] = {"W": "head.W", "b": "head.b"}
    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {"name": "edgernn.bench.synthetic", "cell": cell, "seed": seed},
        "input": {"kind": "features", "size": i},
        "output": {"size": o, "sequence": "many_to_many", "labels": None},
        "quantization": "none",
        "layers": [layer, head],
    }
    return plan, tensors


def quantize_int8(plan: dict, tensors: Mapping[str, np.ndarray]) -> tuple[dict, dict[str, np.ndarray]]:
    """Symmetric per-output-row int8 quantization of every quantizable matrix of a float32 plan.

    The project's quantizer (``edgernn.export.quantize``, numpy only): w ~= q * scale with
    scale = max|row| / 127, q in [-127, 127]; CSR reservoir values get one scale per reservoir row.
    Returns a new ``(plan, tensors)``.
    """
    from .export.quantize import quantize_plan

    return quantize_plan(plan, tensors, "int8")


# ------------------------------------------------------------------------------------------ figures


def machine() -> dict[str, Any]:
    """The machine and software the numbers were taken on (no heavy import: versions from metadata)."""
    from importlib import metadata

    cpu = platform.processor() or platform.machine()
    try:
        with open("/proc/cpuinfo", encoding="utf-8") as f:
            for line in f:
                if line.lower().startswith(("model name", "hardware", "cpu model")):
                    cpu = line.split(":", 1)[1].strip()
                    break
    except OSError:
        pass
    versions = {}
    for pkg in ("edgernn", "numpy", "numba", "onnxruntime", "onnx", "torch"):
        try:
            versions[pkg] = metadata.version(pkg)
        except metadata.PackageNotFoundError:
            versions[pkg] = None
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # pragma: no cover - not Linux
        usable = os.cpu_count()
    try:
        load = [round(v, 2) for v in os.getloadavg()]
    except OSError:  # pragma: no cover
        load = None
    return {
        "cpu": cpu,
        "arch": platform.machine(),
        "cores": os.cpu_count(),
        "usable_cores": usable,
        "os": platform.platform(),
        "python": platform.python_version(),
        "load_average": load,
        "versions": versions,
    }


def model_cost(plan: dict, tensors: Mapping[str, np.ndarray]) -> dict[str, int]:
    """Work per step of one stream: ``flops`` (2 x multiply-adds of the matrix products; elementwise work
    not counted), ``weight_bytes`` (bytes of the matrices as stored: int8 1, float 4 -- fp16 is widened to
    float32 at load -- plus int8 scales and CSR indices) and ``parameters`` (weight elements)."""
    flops = wbytes = params = 0
    for layer in plan["layers"]:
        names = layer["tensors"]
        for role, name in names.items():
            arr = tensors[name]
            params += int(arr.size) if not role.endswith("_scale") else 0
            item = 1 if np.dtype(arr.dtype) == np.int8 else 4
            if (
                role in ("W", "R", "W_in", "W_data", "table")
                or role.endswith("_scale")
                or role.startswith("W_ind")
            ):
                if layer["kind"] == "embedding" and role == "table":
                    wbytes += item * int(arr.shape[-1])  # one row read per step
                    continue
                wbytes += item * int(arr.size)
            if role in ("W", "R", "W_in", "W_data") and layer["kind"] not in ("embedding",):
                flops += 2 * int(arr.size)
    return {"flops": flops, "weight_bytes": wbytes, "parameters": params}


def summarize(ns: np.ndarray) -> dict[str, float]:
    """Latency statistics of per-call times ``ns`` (nanoseconds) in microseconds."""
    us = np.asarray(ns, dtype=np.float64) / 1e3
    q = np.percentile(us, [50, 90, 99, 99.9])
    return {
        "p50_us": float(q[0]),
        "p90_us": float(q[1]),
        "p99_us": float(q[2]),
        "p99.9_us": float(q[3]),
        "max_us": float(us.max()),
        "mean_us": float(us.mean()),
        "min_us": float(us.min()),
        "count": int(us.size),
    }


def timer_overhead_ns(n: int = 20000) -> float:
    """Median cost of one back-to-back ``time.perf_counter_ns()`` pair, nanoseconds (included in per-step
    latencies, which are timed one call at a time)."""
    pc = time.perf_counter_ns
    d = np.empty(n, np.int64)
    for k in range(n):
        t0 = pc()
        d[k] = pc() - t0
    return float(np.median(d))


def time_each(
    fn: Callable[[np.ndarray], Any], X: np.ndarray, tick: Callable[[int], None] | None = None
) -> np.ndarray:
    """Call ``fn(x)`` for each row of X, timing every call on its own; returns nanoseconds per call."""
    pc = time.perf_counter_ns
    out = np.empty(len(X), np.int64)
    chunk = max(1, len(X) // 50)
    for k in range(len(X)):
        x = X[k]
        t0 = pc()
        fn(x)
        out[k] = pc() - t0
        if tick is not None and k % chunk == chunk - 1:
            tick(chunk)
    return out


def time_loop(fn: Callable[[np.ndarray], Any], X: np.ndarray, repeats: int = 3) -> float:
    """Best over ``repeats`` of the mean time of ``fn(x)`` over the rows of X in one loop, microseconds."""
    best = math.inf
    for _ in range(repeats):
        t0 = time.perf_counter()
        for x in X:
            fn(x)
        best = min(best, time.perf_counter() - t0)
    return best / len(X) * 1e6


def time_call(fn: Callable[[], Any], min_time: float = 0.05, max_calls: int = 100000) -> float:
    """Best-of-3 mean time of ``fn()``, microseconds; each round repeats it for about ``min_time`` seconds."""
    t0 = time.perf_counter()
    fn()
    once = max(time.perf_counter() - t0, 1e-7)
    calls = int(min(max_calls, max(1, min_time / once)))
    best = math.inf
    for _ in range(3):
        t0 = time.perf_counter()
        for _ in range(calls):
            fn()
        best = min(best, (time.perf_counter() - t0) / calls)
    return best * 1e6


class Progress:
    """A one-line text progress bar on stderr: ``Progress(total).advance(units, label)``."""

    def __init__(self, total: int, enabled: bool = True, width: int = 30, stream=None):
        self.total, self.done, self.width = max(1, total), 0, width
        self.enabled = enabled
        self.stream = stream or sys.stderr
        self.label = ""
        self._last = 0.0

    def advance(self, units: float = 1, label: str | None = None) -> None:
        """Count ``units`` of work done (and switch the label); redraws at most 20 times a second."""
        self.done = min(self.total, self.done + units)
        if label is not None:
            self.label = label
        now = time.monotonic()
        if self.enabled and (now - self._last > 0.05 or self.done == self.total or label is not None):
            self._last = now
            frac = self.done / self.total
            bar = "#" * int(frac * self.width)
            self.stream.write(f"\r[{bar:<{self.width}}] {frac * 100:5.1f}%  {self.label[:50]:<50}")
            self.stream.flush()

    def close(self) -> None:
        """Finish the line."""
        if self.enabled:
            self.stream.write("\n")
            self.stream.flush()


# ------------------------------------------------------------------------------------------ backends


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


def _ort_backend(plan: dict, tensors: Mapping, onnx_path: str | None) -> tuple[Backend, Any]:
    from . import baselines as bl

    if onnx_path:
        graph = bl.step_graph_from_file(onnx_path)
        source = onnx_path
        streams = None
    else:
        graph = bl.onnx_step_model(plan, tensors)
        source = "ORT step graph, artifact weights"

        def streams(n: int):
            return bl.OrtStep(bl.onnx_step_model(plan, tensors, batch=n)).step

    o = bl.OrtStep(graph)
    seqs: dict[int, Any] = {}
    run_kind = "step loop"
    if not onnx_path:
        try:  # ORT's chunk mode: one sequence graph per T, state carried over like the step graph's
            bl.onnx_step_model(plan, tensors, seq_len=2)
            run_kind = "sequence graph"
        except bl.Unsupported:
            pass

    def run(X: np.ndarray) -> np.ndarray:
        if run_kind == "step loop" or len(X) < 2:
            return np.stack([o.step(x) for x in X])
        r = seqs.get(len(X))
        if r is None:
            r = seqs[len(X)] = bl.OrtStep(bl.onnx_step_model(plan, tensors, seq_len=len(X)))
        # continue the state of the step graph's stream
        cur = o._sa if o._phase == 0 else o._sb
        for a, v in zip(r._sa, cur, strict=True):
            a[...] = v
        r._phase = 0
        y = r.step(X)
        for a, v in zip(cur, r._sb, strict=True):
            a[...] = v
        return y

    b = Backend("onnxruntime", o.step, o.reset, run, run_kind, streams, source)
    b.onnx_bytes = None if onnx_path else graph.model.SerializeToString()
    return b, graph


def _ort_int8_backend(plan: dict, tensors: Mapping) -> Backend:
    from . import baselines as bl

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
    from . import baselines as bl

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

    from . import baselines as bl
    from .models import load as load_checkpoint

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


_COLD_SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
try:  # a forked child starts with its parent's RSS high-water mark: reset it (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
which, path = sys.argv[1], sys.argv[2]
import numpy as np
if which in ("edgernn", "numpy"):
    import edgernn
    m = edgernn.load(path, backend="numpy") if which == "numpy" else edgernn.load(path)
    y = m.stream().step(np.zeros(m.info["input_size"], np.float32))
elif which == "onnxruntime":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    feeds = {i.name: np.zeros([d if isinstance(d, int) else 1 for d in i.shape], np.float32)
             for i in sess.get_inputs()}
    y = sess.run(None, feeds)[0]
elif which == "torch":
    from edgernn import artifact
    from edgernn.baselines import TorchBaseline
    plan, tensors = artifact.read(path)
    plan = artifact.chain_plan(plan)
    y = TorchBaseline(plan, tensors).step(np.zeros(plan["input"]["size"], np.float32))
t1 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration, ValueError):
    pass
print(json.dumps({"in_process_s": t1 - t0, "peak_rss_kb": rss}), flush=True)
"""


def cold_start(which: str, path: str, cache_dir: str | None, timeout: float = 600) -> dict[str, float]:
    """Start a fresh Python process that imports ``which`` (edgernn, numpy, onnxruntime, torch), loads
    ``path`` and computes one output. Returns ``wall_s`` (process launch to the first output),
    ``in_process_s`` (imports + load + first step) and ``peak_rss_mb`` of that process. ``cache_dir``, when
    given, is the process's kernel cache (EDGERNN_CACHE_DIR and NUMBA_CACHE_DIR)."""
    env = dict(os.environ)
    if cache_dir is not None:  # edgernn reads EDGERNN_CACHE_DIR first, then NUMBA_CACHE_DIR
        env["EDGERNN_CACHE_DIR"] = env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-c", _COLD_SCRIPT, which, path],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    line = p.stdout.readline()
    wall = time.perf_counter() - t0
    _, err = p.communicate(timeout=timeout)
    if p.returncode != 0 or not line.strip():
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"cold start of {which} failed: {tail[0]}")
    d = json.loads(line)
    return {"wall_s": wall, "in_process_s": d["in_process_s"], "peak_rss_mb": d["peak_rss_kb"] / 1024.0}


# --------------------------------------------------------------------------------------------- bench

#: Tolerance of the agreement check, |a - e| <= atol + rtol * |e| (int8 artifacts: the baselines run the
#: dequantized float32 weights, so the same bound applies unless the runtime quantizes activations).
CHECK_TOL = {"none": (1e-4, 1e-3), "fp16": (1e-4, 1e-3), "int8": (5e-3, 1e-2), "ort-int8": (2e-2, 5e-2)}


def _agree(got: np.ndarray, ref: np.ndarray, quant: str) -> dict[str, Any]:
    atol, rtol = CHECK_TOL.get(quant, CHECK_TOL["none"])
    got, ref = np.asarray(got, np.float64), np.asarray(ref, np.float64)
    if got.shape != ref.shape:
        return {"agree": False, "max_abs_diff": None, "note": f"shape {got.shape} != {ref.shape}"}
    diff = np.abs(got - ref)
    return {
        "agree": bool(np.all(diff <= atol + rtol * np.abs(ref))),
        "max_abs_diff": float(diff.max(initial=0)),
    }


def _installed(module: str) -> bool:
    """True when ``module`` can be imported (checked without importing it)."""
    import importlib.util

    if module in sys.modules:
        return sys.modules[module] is not None
    try:
        return importlib.util.find_spec(module) is not None
    except (ImportError, ValueError):
        return False


def stream_counts(max_streams: int) -> list[int]:
    """1, 4, 16, ... (powers of 4) up to ``max_streams``, with ``max_streams`` itself last."""
    ns, n = [], 1
    while n < max_streams:
        ns.append(n)
        n *= 4
    return ns + [max_streams]


def bench(
    path: str,
    backends: list[str] | None = None,
    onnx_path: str | None = None,
    checkpoint: str | None = None,
    steps: int = 10000,
    warmup: int = 1000,
    rate: float = 16000.0,
    chunk: int = 1000,
    max_streams: int = 4096,
    separate: int = 1024,
    cold_runs: int = 3,
    check_steps: int = 200,
    progress: bool = True,
    seed: int = 0,
) -> dict[str, Any]:
    """Benchmark the artifact at ``path`` on every available backend; returns the results dict.

    ``backends``: names among ``edgernn`` (numba kernels), ``numpy`` (edgernn's numpy fallback),
    ``onnxruntime``, ``torch``; None = edgernn plus whichever of onnxruntime/torch is installed and can
    express the model. Per backend: per-step latency (``steps`` calls after ``warmup``, each timed alone,
    microseconds), x real-time at ``rate`` Hz with the count of steps over the 1/rate deadline, chunk
    throughput over ``chunk`` steps, throughput of n = 1, 4, ... ``max_streams`` streams stepped at once,
    ``separate`` single streams stepped one by one (edgernn), cold start (fresh process to the first output)
    with an empty and a warm kernel cache (median of ``cold_runs`` warm runs; 0 skips it), peak RSS,
    achieved GFLOP/s and weight GB/s, and the agreement of its outputs with edgernn's over ``check_steps``
    steps (checked after timing).
    """

    from . import artifact

    plan, tensors = artifact.read(path)
    plan = artifact.chain_plan(plan)  # the layer chain of either format version
    quant = plan["quantization"]
    cost = model_cost(plan, tensors)
    in_size = plan["input"]["size"]
    explicit = backends is not None
    if backends is None:
        backends = ["edgernn"]
        if _installed("onnxruntime") and _installed("onnx"):
            backends.append("onnxruntime")
            if plan["quantization"] == "int8":
                backends.append("onnxruntime-int8")
        if _installed("torch"):
            backends.append("torch")
    if checkpoint is None and path.endswith(".ernn") and os.path.exists(path[: -len(".ernn")] + ".pt"):
        checkpoint = path[: -len(".ernn")] + ".pt"
    if checkpoint is not None and "torch-checkpoint" not in backends:
        backends.append("torch-checkpoint")
    if onnx_path is None:
        for cand in (path[: -len(".ernn")] + ".step.onnx",) if path.endswith(".ernn") else ():
            if os.path.exists(cand):
                onnx_path = cand
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((warmup + steps, in_size)).astype(np.float32)
    Xc = rng.standard_normal((chunk, in_size)).astype(np.float32)
    Xk = rng.standard_normal((check_steps, in_size)).astype(np.float32)
    ns = stream_counts(max_streams) if max_streams >= 1 else []
    res: dict[str, Any] = {
        "edgernn_version": machine()["versions"]["edgernn"],
        "machine": machine(),
        "model": {
            "path": os.path.abspath(path),
            "size_bytes": os.path.getsize(path),
            "quantization": quant,
            "layers": [f"{ly['kind']} {ly['input_size']}->{ly['output_size']}" for ly in plan["layers"]],
            **cost,
        },
        "settings": {
            "steps": steps,
            "warmup": warmup,
            "rate_hz": rate,
            "deadline_us": 1e6 / rate,
            "chunk": chunk,
            "streams": ns,
            "separate": separate,
            "cold_runs": cold_runs,
            "check_steps": check_steps,
            "timer_overhead_ns": timer_overhead_ns(),
        },
        "backends": {},
        "skipped": {},
    }
    units_per_backend = 50 + 3 + len(ns) + cold_runs + (cold_runs > 0) + 1
    bar = Progress(len(backends) * units_per_backend + 2, enabled=progress)
    latency: dict[str, np.ndarray] = {}
    made: dict[str, Backend] = {}
    for name in backends:
        bar.advance(0, f"{name}: building")
        try:
            if name in ("edgernn", "numpy"):
                b = _edgernn_backend(path, name, "numpy" if name == "numpy" else None)
            elif name == "onnxruntime":
                b, _ = _ort_backend(plan, tensors, onnx_path)
            elif name == "onnxruntime-int8":
                b = _ort_int8_backend(plan, tensors)
            elif name == "torch":
                b = _torch_backend(plan, tensors)
            elif name == "torch-checkpoint":
                b = _checkpoint_backend(checkpoint, plan, tensors)
            else:
                raise ValueError(f"unknown backend {name!r} (edgernn, numpy, onnxruntime, torch)")
        except ImportError as e:
            res["skipped"][name] = f"not installed: {e.name or e}"
            bar.advance(units_per_backend)
            continue
        except Exception as e:  # an unsupported model for this baseline: say so, keep benchmarking
            if explicit and name in ("edgernn",):
                raise
            res["skipped"][name] = f"{type(e).__name__}: {e}"
            bar.advance(units_per_backend)
            continue
        made[name] = b
        out: dict[str, Any] = {"source": b.source}
        # --- per-step latency
        bar.advance(0, f"{name}: step latency")
        b.reset()
        for x in X[:warmup]:
            b.step(x)
        lat = time_each(b.step, X[warmup:], tick=lambda k: bar.advance(50.0 * k / max(steps, 1)))
        latency[name] = lat
        st = summarize(lat)
        st["loop_us"] = time_loop(b.step, X[warmup : warmup + min(steps, 2000)])
        st["deadline_us"] = 1e6 / rate
        st["over_deadline"] = int(np.sum(lat > 1e9 / rate))
        st["realtime_x"] = (1e6 / rate) / st["loop_us"]
        st["gflops"] = cost["flops"] / (st["loop_us"] * 1e3)
        wbytes = cost["weight_bytes"] if b.elem_bytes == 1 else _float_weight_bytes(plan, tensors)
        st["weight_gbps"] = wbytes / (st["loop_us"] * 1e3)
        out["step"] = st
        # --- chunk throughput
        if b.run is not None and chunk > 0:
            bar.advance(1, f"{name}: run over {chunk} steps")
            b.reset()
            us = time_call(lambda b=b: b.run(Xc), min_time=0.05) / chunk
            out["run"] = {"T": chunk, "kind": b.run_kind, "us_per_step": us, "steps_per_s": 1e6 / us}
        # --- many streams
        if b.streams is not None and ns:
            rows = []
            for n in ns:
                bar.advance(1, f"{name}: {n} streams")
                Xn = rng.standard_normal((n, in_size)).astype(np.float32)
                try:
                    stepper = b.streams(n)
                except Exception as e:  # pragma: no cover - e.g. out of memory at large n
                    rows.append({"n": n, "error": f"{type(e).__name__}: {e}"})
                    continue
                us = time_call(lambda s=stepper, x=Xn: s(x), min_time=0.05)
                rows.append(
                    {
                        "n": n,
                        "us_per_call": us,
                        "us_per_stream_step": us / n,
                        "stream_steps_per_s": n * 1e6 / us,
                        "gflops": n * cost["flops"] / (us * 1e3),
                        "weight_gbps": (
                            cost["weight_bytes"] if b.elem_bytes == 1 else _float_weight_bytes(plan, tensors)
                        )
                        / (us * 1e3),
                    }
                )
            out["streams"] = rows
            b.reset()
        if name in ("edgernn", "numpy") and separate > 0:
            bar.advance(1, f"{name}: {separate} separate streams")
            import edgernn

            m = edgernn.load(path, backend="numpy" if name == "numpy" else None)
            many = [m.stream() for _ in range(separate)]
            Xs = rng.standard_normal((separate, in_size)).astype(np.float32)

            def sep(many=many, Xs=Xs):
                for s, x in zip(many, Xs, strict=True):
                    s.step(x)

            us = time_call(sep, min_time=0.05)
            out["separate"] = {
                "n": separate,
                "us_per_call": us,
                "us_per_stream_step": us / separate,
                "stream_steps_per_s": separate * 1e6 / us,
            }
            if out.get("streams"):
                batched = [r for r in out["streams"] if r.get("n") == separate and "us_per_call" in r]
                if batched:
                    out["separate"]["streams_speedup"] = us / batched[0]["us_per_call"]
        res["backends"][name] = out
    # --- agreement with edgernn, after all timing
    bar.advance(1, "checking outputs")
    ref = made.get("edgernn") or made.get("numpy")
    if ref is not None:
        ref.reset()
        ys = np.stack([np.array(ref.step(x), copy=True) for x in Xk])
        ref.reset()
        k4 = rng.standard_normal((4, in_size)).astype(np.float32)
        ystr = np.array(ref.streams(4)(k4), copy=True) if ref.streams is not None else None
        for name, b in made.items():
            chk: dict[str, Any] = {"reference": "edgernn step" if b is not ref else "edgernn step (self)"}
            q = "ort-int8" if name == "onnxruntime-int8" else quant  # ORT's own activation quantization
            b.reset()
            chk["step"] = _agree(np.stack([np.array(b.step(x), copy=True) for x in Xk]), ys, q)
            if b.run is not None:
                b.reset()
                yr = np.asarray(b.run(Xk))
                chk["run"] = _agree(yr, ys[-1:] if yr.shape[0] == 1 < len(ys) else ys, q)
            if b.streams is not None and ystr is not None:
                chk["streams"] = _agree(b.streams(4)(k4), ystr, q)
                b.reset()
            chk["agree"] = all(v["agree"] for v in chk.values() if isinstance(v, dict))
            res["backends"][name]["check"] = chk
    # --- cold start and memory, in fresh processes
    for name in made if cold_runs > 0 else ():
        if name == "torch-checkpoint":
            continue  # same process start as the torch column
        bar.advance(0, f"{name}: cold start")
        target, which = path, name
        onnx_bytes = getattr(made[name], "onnx_bytes", None)
        if name == "onnxruntime" and onnx_path:
            target = onnx_path
        elif onnx_bytes is not None:
            fd, target = tempfile.mkstemp(suffix=".onnx")
            os.close(fd)
            with open(target, "wb") as f:
                f.write(onnx_bytes)
            which = "onnxruntime"
        try:
            with tempfile.TemporaryDirectory(prefix="edgernn-bench-cache-") as cache:
                runs = []
                for _ in range(cold_runs + 1):
                    runs.append(cold_start(which, target, cache))
                    bar.advance(1)
            cold = runs[0]
            warm = {k: float(np.median([r[k] for r in runs[1:]])) for k in runs[0]}
            res["backends"][name]["cold_start"] = {
                "empty_cache": cold,
                "warm_cache": warm,
                "runs": len(runs) - 1,
            }
            # the device case: a warm kernel cache (a cold start's compile needs more, reported with it)
            res["backends"][name]["peak_rss_mb"] = warm["peak_rss_mb"]
        except Exception as e:
            res["backends"][name]["cold_start"] = {"error": str(e)}
        finally:
            if target not in (path, onnx_path):
                os.unlink(target)
    bar.advance(1, "done")
    bar.close()
    res["_latency_ns"] = latency
    return res


def _float_weight_bytes(plan: dict, tensors: Mapping[str, np.ndarray]) -> int:
    """Weight bytes per step when every matrix is float32 (the baselines run dequantized weights)."""
    f32 = {k: (v.astype(np.float32) if v.dtype == np.int8 else v) for k, v in tensors.items()}
    for layer in plan["layers"]:
        for role, name in layer["tensors"].items():
            if role.endswith("_scale"):
                f32[name] = np.zeros(0, np.float32)
    return model_cost(plan, f32)["weight_bytes"]


# ------------------------------------------------------------------------------------------- output


def _fmt(v: Any, digits: int = 3) -> str:
    if v is None:
        return "-"
    if isinstance(v, bool):
        return "yes" if v else "NO"
    if isinstance(v, int):
        return f"{v:,}"
    if isinstance(v, float):
        if v == 0:
            return "0"
        if abs(v) >= 1e5:
            return f"{v:,.0f}"
        return f"{v:.{digits}g}" if abs(v) < 1000 else f"{v:,.0f}"
    return str(v)


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]

    def line(r: list[str]) -> str:
        cells = zip(r, widths, strict=True)
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(cells))

    return "\n".join([line(header), "  ".join("-" * w for w in widths), *map(line, rows)])


def format_table(res: Mapping[str, Any]) -> str:
    """The human-readable report of :func:`bench` results (plain text tables)."""
    mdl, mach, st = res["model"], res["machine"], res["settings"]
    names = list(res["backends"])
    bk = res["backends"]
    lines = [
        f"model   {mdl['path']}  ({', '.join(mdl['layers'])}; {mdl['quantization']}; "
        f"{mdl['parameters']:,} weights; {mdl['size_bytes']:,} bytes)",
        f"machine {mach['cpu']} ({mach['arch']}, {mach['usable_cores']}/{mach['cores']} cores, load "
        f"{mach['load_average']}); python {mach['python']}, "
        + ", ".join(f"{k} {v}" for k, v in mach["versions"].items() if v),
        f"work    {mdl['flops'] / 1e3:,.1f} kFLOP and {mdl['weight_bytes'] / 1e3:,.1f} kB of weights/step; "
        f"{st['steps']:,} timed steps after {st['warmup']:,} warm-up; timer overhead "
        f"{st['timer_overhead_ns']:.0f} ns per step included in the percentiles",
        "",
    ]

    def get(name, *keys):
        d = bk[name]
        for k in keys:
            if not isinstance(d, Mapping) or k not in d:
                return None
            d = d[k]
        return d

    rows = [["runs"] + [str(bk[n].get("source", ""))[:40] for n in names]]
    spec = [
        ("step p50 (us)", ("step", "p50_us")),
        ("step p90 (us)", ("step", "p90_us")),
        ("step p99 (us)", ("step", "p99_us")),
        ("step p99.9 (us)", ("step", "p99.9_us")),
        ("step max (us)", ("step", "max_us")),
        ("step mean, plain loop (us)", ("step", "loop_us")),
        (f"x real-time at {st['rate_hz']:g} Hz", ("step", "realtime_x")),
        (f"steps over the {st['deadline_us']:.3g} us deadline", ("step", "over_deadline")),
        ("achieved GFLOP/s (step)", ("step", "gflops")),
        ("weight GB/s (step)", ("step", "weight_gbps")),
        (f"chunk run(T={st['chunk']}) (us/step)", ("run", "us_per_step")),
        ("chunk run kind", ("run", "kind")),
        ("cold start, empty kernel cache (s)", ("cold_start", "empty_cache", "wall_s")),
        ("cold start, warm kernel cache (s)", ("cold_start", "warm_cache", "wall_s")),
        ("peak RSS, warm cache (MB)", ("peak_rss_mb",)),
        ("peak RSS, empty cache (MB)", ("cold_start", "empty_cache", "peak_rss_mb")),
        ("outputs agree with edgernn", ("check", "agree")),
        ("max |diff| vs edgernn (step)", ("check", "step", "max_abs_diff")),
    ]
    for label, keys in spec:
        rows.append([label] + [_fmt(get(n, *keys)) for n in names])
    rows.append(["artifact size (bytes)", _fmt(mdl["size_bytes"])] + ["" for _ in names[1:]])
    lines.append(_table(["", *names], rows))
    ns = st["streams"]
    if ns and any(bk[n].get("streams") for n in names):
        lines += ["", "many streams: microseconds per stream-step (stream-steps per second)"]
        srows = []
        for n in ns:
            row = [f"n = {n:,}"]
            for name in names:
                r = next((r for r in bk[name].get("streams", []) if r.get("n") == n), None)
                if r is None or "us_per_call" not in r:
                    row.append("-")
                else:
                    row.append(f"{r['us_per_stream_step']:.3g} ({r['stream_steps_per_s']:,.0f}/s)")
            srows.append(row)
        lines.append(_table(["streams", *names], srows))
        for name in names:
            sep = bk[name].get("separate")
            if sep:
                msg = (
                    f"{name}: {sep['n']:,} separate Stream.step calls take "
                    f"{sep['us_per_stream_step']:.3g} us per stream-step"
                )
                if "streams_speedup" in sep:
                    msg += f"; streams({sep['n']:,}).step is {sep['streams_speedup']:.1f}x faster"
                lines.append(msg)
    for name, why in res.get("skipped", {}).items():
        lines.append(f"skipped {name}: {why}")
    return "\n".join(lines)


def to_json(res: Mapping[str, Any]) -> str:
    """The results as JSON (without the raw per-step latencies)."""
    return json.dumps({k: v for k, v in res.items() if not k.startswith("_")}, indent=2)


def plot(res: Mapping[str, Any], path: str) -> None:
    """Write a PNG: per-step latency distribution per backend (left) and throughput against the number of
    streams (right). Needs matplotlib (the ``bench`` extra)."""
    from .errors import require

    require("matplotlib", "bench")
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    lat = res.get("_latency_ns", {})
    fig, (ax1, ax2) = plt.subplots(1, 2, figsize=(13, 5))
    allus = np.concatenate([np.asarray(v, np.float64) / 1e3 for v in lat.values()]) if lat else np.ones(1)
    lo, hi = max(allus.min() * 0.8, 1e-3), allus.max() * 1.2
    bins = np.geomspace(lo, hi, 120)
    colors = {}
    for name, ns_ in lat.items():
        us = np.asarray(ns_, np.float64) / 1e3
        (line,) = ax1.plot([], [])
        c = line.get_color()
        colors[name] = c
        ax1.hist(us, bins=bins, histtype="step", color=c, linewidth=1.5, label=name)
        st = res["backends"][name]["step"]
        ax1.axvline(st["p50_us"], color=c, linestyle="-", alpha=0.6)
        ax1.axvline(st["p99_us"], color=c, linestyle=":", alpha=0.9)
    ax1.set_xscale("log")
    ax1.set_yscale("log")
    ax1.set_xlabel("per-step latency (us), log scale; solid line p50, dotted p99")
    ax1.set_ylabel("steps")
    ax1.set_title(f"Stream.step latency, {res['settings']['steps']:,} steps")
    ax1.legend()
    for name, b in res["backends"].items():
        rows = [r for r in b.get("streams", []) if "stream_steps_per_s" in r]
        if rows:
            ax2.plot(
                [r["n"] for r in rows],
                [r["stream_steps_per_s"] for r in rows],
                "o-",
                label=f"{name} batched",
                color=colors.get(name),
            )
        sep = b.get("separate")
        if sep:
            ax2.plot(
                [sep["n"]],
                [sep["stream_steps_per_s"]],
                "x",
                markersize=10,
                color=colors.get(name),
                label=f"{name}: {sep['n']} separate step calls",
            )
    ax2.set_xscale("log")
    ax2.set_yscale("log")
    ax2.set_xlabel("streams stepped per call (n)")
    ax2.set_ylabel("stream-steps per second")
    ax2.set_title("throughput against streams")
    ax2.grid(True, which="both", alpha=0.3)
    if ax2.lines:
        ax2.legend()
    mdl = res["model"]
    fig.suptitle(
        f"edgernn bench: {os.path.basename(mdl['path'])} ({', '.join(mdl['layers'])}, "
        f"{mdl['quantization']}) on {res['machine']['cpu']}",
        fontsize=10,
    )
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)
