"""Chunk mode over 1000 steps: edgernn ``Stream.run(X)`` vs torch's fused ``nn.LSTM``/``nn.GRU`` (and the
torch ESN with its input projections precomputed) over the same sequence. Outputs compared after timing."""

from __future__ import annotations

import pytest
from benchlib import MODELS, QUANT, STEPS, assert_agree, edgernn_step_outputs, make_baseline

CASES = [(m, q) for m in MODELS for q in QUANT]
IDS = [f"{m}-{q}" for m, q in CASES]


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
def test_run_edgernn(benchmark, artifacts, inputs, model, quant):
    import edgernn

    path, plan, tensors = artifacts[model, quant]
    X, Xk = inputs
    s = edgernn.load(path).stream()
    benchmark.group = f"run {model} {quant}"
    benchmark.extra_info.update(backend="edgernn", model=model, quant=quant, mode="run", steps=STEPS)
    benchmark.pedantic(s.run, args=(X,), rounds=30, iterations=1, warmup_rounds=3)
    s.reset()
    got = s.run(Xk)
    assert_agree(got, edgernn_step_outputs(path, Xk), quant, "edgernn run vs step")
    tb = make_baseline("torch", plan, tensors)
    assert_agree(got, tb.run(Xk), quant, "edgernn run vs torch fused")


@pytest.mark.parametrize(("model", "quant"), CASES, ids=IDS)
def test_run_torch(benchmark, artifacts, inputs, model, quant):
    path, plan, tensors = artifacts[model, quant]
    X, Xk = inputs
    tb = make_baseline("torch", plan, tensors)
    benchmark.group = f"run {model} {quant}"
    benchmark.extra_info.update(backend="torch", model=model, quant=quant, mode="run", steps=STEPS)
    benchmark.pedantic(
        tb.run, args=(X,), rounds=5 if model.startswith("esn") else 20, iterations=1, warmup_rounds=1
    )
    tb.reset(1)
    assert_agree(tb.run(Xk), edgernn_step_outputs(path, Xk), quant, "torch fused run")


@pytest.mark.parametrize(
    ("model", "quant"), [c for c in CASES if not c[0].startswith("esn")], ids=lambda v: v
)
def test_run_ort(benchmark, artifacts, inputs, model, quant):
    """ONNX Runtime's chunk mode: a sequence graph (ONNX LSTM/GRU over all T steps) with IOBinding."""
    pytest.importorskip("onnxruntime")
    from edgernn.export.baselines import OrtStep, onnx_step_model

    path, plan, tensors = artifacts[model, quant]
    X, Xk = inputs
    r = OrtStep(onnx_step_model(plan, tensors, seq_len=len(X)))
    benchmark.group = f"run {model} {quant}"
    benchmark.extra_info.update(backend="ort", model=model, quant=quant, mode="run", steps=STEPS)
    benchmark.pedantic(r.step, args=(X,), rounds=20, iterations=1, warmup_rounds=1)
    fresh = OrtStep(onnx_step_model(plan, tensors, seq_len=len(Xk)))
    assert_agree(fresh.step(Xk), edgernn_step_outputs(path, Xk), quant, "ORT sequence graph")
