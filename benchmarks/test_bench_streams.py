"""Many streams (issue 5.4, issue 14): ``streams(n).step`` vs torch's batched cell vs ONNX Runtime's step
graph with batch n, one thread each, for n in ``NS``; and at n = 1,024 vs 1,024 separate ``Stream.step``
calls. One round = one step of all n streams (mode ``streams{n}``, ``steps`` = n: report.py divides).
Outputs compared with edgernn after timing. ``benchmarks/streams_sweep.py`` times the same interleaved."""

from __future__ import annotations

import numpy as np
import pytest
from benchlib import MODELS, assert_agree, make_baseline

N = 1024
#: the stream counts of the sweep (the 1,024 table of report.py, and its per-n table)
NS = (64, 256, 1024, 4096)
CASES = [(m, q) for m in MODELS for q in ("fp32", "int8")]
IDS = [f"{m}-{q}" for m, q in CASES]


def _rounds(n: int, model: str) -> int:
    """Rounds for one step of n streams: about the same time whatever n (the big models fewer)."""
    big = "256" in model or "500" in model
    return max(5, min(30, (30 * 1024) // (n * (4 if big else 1))))


def _X(n=N):
    return np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)


def _edgernn_batched(path, X):
    import edgernn

    return edgernn.load(path).streams(len(X)).step(X)


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
def test_streams_edgernn(benchmark, artifacts, model, quant, n):
    import edgernn

    path, plan, tensors = artifacts[model, quant]
    X = _X(n)
    b = edgernn.load(path).streams(n)
    benchmark.group = f"streams{n} {model} {quant}"
    benchmark.extra_info.update(backend="edgernn", model=model, quant=quant, mode=f"streams{n}", steps=n)
    benchmark.pedantic(b.step, args=(X,), rounds=_rounds(n, model), iterations=1, warmup_rounds=3)
    # after timing: n streams equal n separate streams, and the ORT batched graph
    m = edgernn.load(path)
    sep = np.stack([m.stream().step(x) for x in X[:64]])
    assert_agree(_edgernn_batched(path, X[:64]), sep, quant, "streams(64) vs 64 separate streams")


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
def test_streams_separate_edgernn(benchmark, artifacts, model, quant):
    import edgernn

    path, plan, tensors = artifacts[model, quant]
    X = _X()
    m = edgernn.load(path)
    many = [m.stream() for _ in range(N)]

    def go():
        for s, x in zip(many, X, strict=True):
            s.step(x)

    benchmark.group = f"streams{N} {model} {quant}"
    benchmark.extra_info.update(
        backend="edgernn-separate", model=model, quant=quant, mode=f"streams{N}", steps=N
    )
    benchmark.pedantic(go, rounds=10, iterations=1, warmup_rounds=1)
    fresh = [m.stream() for _ in range(8)]
    got = np.stack([s.step(x) for s, x in zip(fresh, X[:8], strict=True)])
    assert_agree(got, _edgernn_batched(path, X[:8]), quant, "separate vs batched")


@pytest.mark.parametrize("n", NS)
@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_streams_baseline(benchmark, artifacts, model, quant, backend, n):
    path, plan, tensors = artifacts[model, quant]
    X = _X(n)
    b = make_baseline(backend, plan, tensors, batch=n)
    step = b.streams_step if backend == "torch" else b.step
    benchmark.group = f"streams{n} {model} {quant}"
    benchmark.extra_info.update(backend=backend, model=model, quant=quant, mode=f"streams{n}", steps=n)
    benchmark.pedantic(step, args=(X,), rounds=max(5, _rounds(n, model) // 3), iterations=1, warmup_rounds=1)
    fresh = make_baseline(backend, plan, tensors, batch=n)
    got = fresh.streams_step(X) if backend == "torch" else fresh.step(X)
    assert_agree(got, _edgernn_batched(path, X), quant, f"{backend} batched")
