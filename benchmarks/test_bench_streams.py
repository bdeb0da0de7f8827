"""Many streams (issue 5.4): ``streams(1024).step`` vs 1,024 separate ``Stream.step`` calls vs torch's
batched cell vs ONNX Runtime's step graph with batch 1,024, one thread each; one round = one step of all
1,024 streams. Outputs compared with edgernn after timing."""

from __future__ import annotations

import numpy as np
import pytest
from benchlib import MODELS, assert_agree, make_baseline

N = 1024
CASES = [(m, q) for m in MODELS for q in ("fp32", "int8")]
IDS = [f"{m}-{q}" for m, q in CASES]


def _X(n=N):
    return np.random.default_rng(1).standard_normal((n, 8)).astype(np.float32)


def _edgernn_batched(path, X):
    import edgernn

    return edgernn.load(path).streams(len(X)).step(X)


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
def test_streams_edgernn(benchmark, artifacts, model, quant):
    import edgernn

    path, plan, tensors = artifacts[model, quant]
    X = _X()
    b = edgernn.load(path).streams(N)
    benchmark.group = f"streams{N} {model} {quant}"
    benchmark.extra_info.update(backend="edgernn", model=model, quant=quant, mode=f"streams{N}", steps=N)
    benchmark.pedantic(b.step, args=(X,), rounds=30, iterations=1, warmup_rounds=3)
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


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
@pytest.mark.parametrize("backend", ["torch", "ort"])
def test_streams_baseline(benchmark, artifacts, model, quant, backend):
    path, plan, tensors = artifacts[model, quant]
    X = _X()
    b = make_baseline(backend, plan, tensors, batch=N)
    step = b.streams_step if backend == "torch" else b.step
    benchmark.group = f"streams{N} {model} {quant}"
    benchmark.extra_info.update(backend=backend, model=model, quant=quant, mode=f"streams{N}", steps=N)
    benchmark.pedantic(step, args=(X,), rounds=10, iterations=1, warmup_rounds=1)
    fresh = make_baseline(backend, plan, tensors, batch=N)
    got = fresh.streams_step(X) if backend == "torch" else fresh.step(X)
    assert_agree(got, _edgernn_batched(path, X), quant, f"{backend} batched")
