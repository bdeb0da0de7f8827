"""The run orchestration: :func:`bench` builds every backend, times it, checks its outputs against
edgernn's after timing, and measures cold starts."""

from __future__ import annotations

import os
import sys
import tempfile
from typing import Any

import numpy as np

from .backends import (
    Backend,
    _checkpoint_backend,
    _cpp_backend,
    _edgernn_backend,
    _ort_backend,
    _ort_graph_backend,
    _ort_int8_backend,
    _torch_backend,
)
from .coldstart import cold_start
from .cpp import covers as cpp_covers
from .models import _float_weight_bytes, _layers, model_cost
from .timing import (
    Progress,
    interruptions,
    machine,
    summarize,
    time_call,
    time_each,
    time_loop,
    timer_overhead_ns,
)

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


#: why a graph plan (format 2, a value read by several ops) has no torch / rebuilt-ONNX column
GRAPH_NO_TORCH = "no PyTorch baseline for a graph plan (the torch baselines rebuild layer chains)"
GRAPH_NO_REBUILD = "not for a graph plan (this baseline rebuilds a layer chain from the artifact)"


def _source_beside(path: str, plan: dict) -> tuple[str | None, str]:
    """The recorded source ONNX file of a plan when it sits beside ``path`` with its recorded sha256."""
    if not _installed("onnx"):
        return None, "onnx is not installed"
    from ..export.baselines.source import source_beside

    return source_beside(path, plan)


def _source_mismatch(onnx_path: str, plan: dict) -> list[str]:
    """A note when the ONNX file given for a graph plan is not the file the plan records as its source."""
    from ..export.baselines.source import file_sha256

    sha = (plan.get("producer") or {}).get("source_sha256")
    if sha and file_sha256(onnx_path) != sha:
        src = (plan.get("producer") or {}).get("source")
        return [
            f"--onnx {os.path.basename(onnx_path)} is not the file the artifact was compiled from ({src})"
        ]
    return []


def _cpp_ratio(bk: dict) -> dict[str, float]:
    """edgernn against the plain C++ loop, per step: its step p50 and chunk run over the C++ loop's chunk
    run (no call overhead in the latter: the hardware's own reference)."""
    c = bk["cpp"].get("run", {}).get("us_per_step")
    e = bk["edgernn"]
    out: dict[str, float] = {}
    if c:
        out["cpp_us_per_step"] = c
        out["step_p50"] = e["step"]["p50_us"] / c
        if "run" in e:
            out["run"] = e["run"]["us_per_step"] / c
    return out


#: backend -> (the modules it needs, the extra that installs them)
NEEDS: dict[str, tuple[tuple[str, ...], str]] = {
    "onnxruntime": (("onnxruntime", "onnx"), "export"),
    "onnxruntime-int8": (("onnxruntime", "onnx"), "export"),
    "torch": (("torch",), "export"),
    "torch-checkpoint": (("torch",), "export"),
}


def _missing(wants: list[tuple[str, tuple[str, ...], str]]) -> str | None:
    """One line naming what each ``(what, modules, extra)`` lacks and the pip command; None if nothing."""
    parts, extras = [], []
    for what, modules, extra in wants:
        absent = [m for m in modules if not _installed(m)]
        if absent:
            parts.append(f"{what}: {', '.join(absent)} {'is' if len(absent) == 1 else 'are'} not installed")
            if extra not in extras:
                extras.append(extra)
    if not parts:
        return None
    return "; ".join(parts) + f"; install with: pip install 'edgernn[{','.join(extras)}]'"


def check_extras(
    backends: list[str] | None = None,
    onnx_path: str | None = None,
    checkpoint: str | None = None,
    plot: bool = False,
) -> None:
    """Before any timing: raise :class:`edgernn.errors.MissingDependencyError` (one line naming the extra to
    install) when a piece asked for explicitly cannot run here: a backend of ``backends``, an ONNX file
    ``onnx_path`` (ONNX Runtime), a ``checkpoint`` (torch), a ``plot`` (matplotlib)."""
    from ..errors import MissingDependencyError

    wants = [(f"--backends {b}", *NEEDS[b]) for b in backends or () if b in NEEDS]
    if onnx_path is not None and not any(b.startswith("onnxruntime") for b in backends or ()):
        wants.append(("--onnx", *NEEDS["onnxruntime"]))
    if checkpoint is not None and "torch" not in (backends or ()):
        wants.append(("--checkpoint", *NEEDS["torch-checkpoint"]))
    if plot:
        wants.append(("--plot", ("matplotlib",), "bench"))
    msg = _missing(wants)
    if msg is not None:
        raise MissingDependencyError(msg)


def defaults_note() -> str | None:
    """One line naming the default baselines (onnxruntime, torch) this install lacks and the extra to
    install; None when every one is there."""
    return _missing([(name, *NEEDS[name]) for name in ("onnxruntime", "torch")])


def not_installed_defaults(quantization: str = "none") -> dict[str, str]:
    """The default baselines this install cannot run: backend -> why, naming the extra to install."""
    names = ["onnxruntime"] + (["onnxruntime-int8"] if quantization == "int8" else []) + ["torch"]
    out = {}
    for name in names:
        msg = _missing([(name, *NEEDS[name])])
        if msg is not None:
            out[name] = msg.split(": ", 1)[1]
    return out


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
    onnx_seq_path: str | None = None,
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

    ONNX Runtime runs ``onnx_path`` (a step graph; default ``MODEL.step.onnx`` beside the artifact) for
    steps and streams and ``onnx_seq_path`` (a sequence graph; default ``MODEL.onnx`` beside it) for
    chunks, and builds whatever is missing from the artifact's weights. A graph plan (format 2, not a
    chain) has no rebuilt baselines: ONNX Runtime runs the original ONNX file, ``onnx_path`` or else the
    source the plan records when it sits beside the artifact with the recorded sha256 (else
    ``MODEL.step.onnx``), with the recorded state pairs fed back and the recorded bindings (steps; chunks
    as a step loop); torch is left out with the reason in ``res["skipped"]``. A backend, file or checkpoint
    asked for explicitly whose extra is not installed raises ``MissingDependencyError`` before any timing;
    default baselines that are not installed are listed in ``res["not_installed"]`` (name -> why).
    """

    from .. import artifact
    from ..errors import ArtifactError, InputError

    explicit = backends is not None
    check_extras(backends, onnx_path=onnx_path, checkpoint=checkpoint)
    for what, f in (("--onnx", onnx_path), ("--onnx-seq", onnx_seq_path), ("--checkpoint", checkpoint)):
        if f is not None and not os.path.isfile(f):
            raise InputError(f"{what}: no such file: {f}")
    plan, tensors = artifact.read(path)
    if len(outs := plan.get("outputs") or []) > 1:  # the rows time and check one output
        names = ", ".join(repr(o["name"]) for o in outs)
        msg = f"the model has {len(outs)} outputs ({names}); edgernn bench times models of one"
        raise InputError(f"{path}: {msg}: compile it again with --graph-output NAME")
    try:
        plan = artifact.chain_plan(plan)  # the layer chain of either format version
        graph = False
    except ArtifactError as e:  # a graph plan: ORT runs the ONNX file it came from, torch has no baseline
        if not str(e).startswith("not a chain"):
            raise
        graph = True
    quant = plan["quantization"]
    cost = model_cost(plan, tensors)
    in_size = plan["input"]["size"]
    not_installed: dict[str, str] = {}
    skipped: dict[str, str] = {}
    if backends is None:
        not_installed = not_installed_defaults(quant)
        backends = ["edgernn"] + [
            b
            for b in ("onnxruntime", "onnxruntime-int8", "torch")
            if b not in not_installed and (b != "onnxruntime-int8" or quant == "int8")
        ]
        if graph and "torch" in backends:
            backends.remove("torch")
            skipped["torch"] = GRAPH_NO_TORCH
        if not graph and cpp_covers(plan) is None:  # the plain C++ loop, for the models floor.cpp has
            backends.append("cpp")
    stem = path[: -len(".ernn")] if path.endswith(".ernn") else None
    source_why, notes = "", []
    if graph:  # ORT's model: --onnx, else the recorded source file beside the artifact (same sha256)
        source, source_why = (onnx_path, "") if onnx_path else _source_beside(path, plan)
        step_file = stem + ".step.onnx" if stem is not None and os.path.exists(stem + ".step.onnx") else None
        if onnx_path and "onnxruntime" in backends:
            notes += _source_mismatch(onnx_path, plan)
        onnx_path = onnx_seq_path = None
    if checkpoint is None and stem is not None and os.path.exists(stem + ".pt") and not graph:
        why = _missing([("torch-checkpoint", *NEEDS["torch-checkpoint"])])
        if why is None:
            checkpoint = stem + ".pt"
        else:
            not_installed["torch-checkpoint"] = why.split(": ", 1)[1]
    if checkpoint is not None and "torch-checkpoint" not in backends:
        backends.append("torch-checkpoint")
    # the ONNX files `edgernn export` writes beside model.ernn: model.step.onnx (steps and streams) and
    # model.onnx (chunks); model.int8.onnx is ORT's own quantization, not the model of the ORT column
    if onnx_path is None and stem is not None and os.path.exists(stem + ".step.onnx"):
        onnx_path = stem + ".step.onnx"
    if onnx_seq_path is None and stem is not None and not stem.endswith(".int8"):
        if os.path.exists(stem + ".onnx"):
            onnx_seq_path = stem + ".onnx"
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
            "layers": [f"{ly['kind']} {ly['input_size']}->{ly['output_size']}" for ly in _layers(plan)],
            "graph": graph,
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
        "skipped": skipped,
        "notes": notes,
        "not_installed": not_installed,
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
            elif name == "onnxruntime" and graph:
                b = _ort_graph_backend(plan, source, step_file, f"no ONNX file to run: {source_why}")
            elif name in ("onnxruntime-int8", "torch", "torch-checkpoint") and graph:
                res["skipped"][name] = GRAPH_NO_TORCH if name == "torch" else GRAPH_NO_REBUILD
                bar.advance(units_per_backend)
                continue
            elif name == "onnxruntime":
                b, _ = _ort_backend(plan, tensors, onnx_path, onnx_seq_path)
            elif name == "onnxruntime-int8":
                b = _ort_int8_backend(plan, tensors)
            elif name == "torch":
                b = _torch_backend(plan, tensors)
            elif name == "cpp" and graph:
                raise ValueError("the C++ loop is one recurrent layer and a Dense head, not a graph plan")
            elif name == "cpp":
                b = _cpp_backend(plan, tensors)
            elif name == "torch-checkpoint":
                b = _checkpoint_backend(checkpoint, plan, tensors)
            else:
                raise ValueError(f"unknown backend {name!r} (edgernn, numpy, onnxruntime, torch, cpp)")
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
        if getattr(b, "files", None):
            out["files"] = b.files
        # --- per-step latency
        bar.advance(0, f"{name}: step latency")
        b.reset()
        for x in X[:warmup]:
            b.step(x)
        before = interruptions()
        lat = time_each(b.step, X[warmup:], tick=lambda k: bar.advance(50.0 * k / max(steps, 1)))
        after = interruptions()
        latency[name] = lat
        st = summarize(lat)
        # the tail's usual causes outside the step: the OS preempting the process, the cyclic collector
        st["preemptions"], st["gc_collections"] = (a - b for a, b in zip(after, before, strict=True))
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
    if "cpp" in res["backends"] and "edgernn" in res["backends"]:
        res["cpp_ratio"] = _cpp_ratio(res["backends"])
    # --- cold start and memory, in fresh processes
    for name in made if cold_runs > 0 else ():
        if name in ("torch-checkpoint", "cpp"):
            continue  # same process start as the torch column; a C++ library has no Python start-up
        bar.advance(0, f"{name}: cold start")
        target, which = path, name
        onnx_bytes = getattr(made[name], "onnx_bytes", None)
        feeds = getattr(made[name], "cold_feeds", None)
        if name == "onnxruntime" and graph:
            target = made[name].files["step"]
        elif name == "onnxruntime" and onnx_path:
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
                    runs.append(cold_start(which, target, cache, feeds=feeds))
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
            if onnx_bytes is not None:
                os.unlink(target)
    bar.advance(1, "done")
    bar.close()
    res["_latency_ns"] = latency
    return res
