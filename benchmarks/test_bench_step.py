"""Stream.step, one stream, 1000 steps per round: edgernn vs ONNX Runtime (step graph, IOBinding) vs torch
(cell per step), each on the same weights, fp32 and int8. Outputs are compared with edgernn after timing."""

from __future__ import annotations

import numpy as np
import pytest
from benchlib import MODELS, QUANT, STEPS, TARGETS_US, assert_agree, edgernn_step_outputs, make_baseline

CASES = [(m, q) for m in MODELS for q in QUANT]
IDS = [f"{m}-{q}" for m, q in CASES]


def _loop(step, X):
    def go():
        for x in X:
            step(x)

    return go


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
def test_step_edgernn(benchmark, artifacts, inputs, model, quant):
    import edgernn

    path, plan, tensors = artifacts[model, quant]
    X, Xk = inputs
    s = edgernn.load(path).stream()
    benchmark.group = f"step {model} {quant}"
    benchmark.extra_info.update(
        backend="edgernn",
        model=model,
        quant=quant,
        mode="step",
        steps=STEPS,
        target_us=TARGETS_US.get((model, quant)),
    )
    benchmark.pedantic(_loop(s.step, X), rounds=30, iterations=1, warmup_rounds=3)
    # after timing: edgernn against an independent oracle on the same (dequantized) weights
    ref = make_baseline("ort", plan, tensors)
    assert_agree(edgernn_step_outputs(path, Xk), np.stack([ref.step(x) for x in Xk]), quant, "edgernn vs ORT")


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
@pytest.mark.parametrize("backend", ["ort", "ort-int8", "torch"])
def test_step_baseline(benchmark, artifacts, inputs, model, quant, backend):
    if backend == "ort-int8" and quant != "int8":
        pytest.skip("ORT's own int8 is compared with int8 artifacts")
    path, plan, tensors = artifacts[model, quant]
    X, Xk = inputs
    b = make_baseline(backend, plan, tensors)
    benchmark.group = f"step {model} {quant}"
    benchmark.extra_info.update(backend=backend, model=model, quant=quant, mode="step", steps=STEPS)
    benchmark.pedantic(_loop(b.step, X), rounds=10, iterations=1, warmup_rounds=1)
    fresh = make_baseline(backend, plan, tensors)
    assert_agree(
        np.stack([fresh.step(x) for x in Xk]), edgernn_step_outputs(path, Xk), quant, f"{backend} step"
    )


@pytest.mark.parametrize("model", [m for m in MODELS if MODELS[m][0] in ("lstm", "gru", "esn")])
def test_step_cpp(benchmark, artifacts, inputs, model):
    """The plain C++ loop (edgernn/bench/floor.cpp, g++ -O3 -march=native at benchmark time): the
    hardware's own reference, fp32, one call per 1,000 steps (no per-step call overhead)."""
    from edgernn.bench import cpp as cppfloor

    problem = cppfloor.compiler_problem()
    if problem:
        pytest.skip(f"no C++ baseline: {problem}")
    path, plan, tensors = artifacts[model, "fp32"]
    X, Xk = inputs
    try:
        f = cppfloor.CppFloor.for_model(plan, tensors)
    except cppfloor.Unsupported as e:
        pytest.skip(str(e))
    Y = np.empty((len(X), f.O), np.float32)
    benchmark.group = f"step {model} fp32"
    benchmark.extra_info.update(backend="cpp", model=model, quant="fp32", mode="step", steps=STEPS)
    benchmark.pedantic(f.run, args=(X, Y), rounds=30, iterations=1, warmup_rounds=3)
    f.reset()
    assert_agree(f.run(Xk), edgernn_step_outputs(path, Xk), "fp32", "C++ loop")
