"""The benchmark baselines (edgernn.export.baselines) compute the model of the plan: ONNX Runtime's step
graph and the PyTorch cells / fused modules / batched cells against the float64 numpy reference
(tests/reference.py), which shares no code with them. Without this, a benchmark could compare edgernn with
a different model.
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import dense, esn, model, quantize_int8, recurrent
from reference import assert_close, reference_predict

pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")
pytest.importorskip("torch")

from edgernn.export.baselines import OrtStep, TorchBaseline, Unsupported, onnx_step_model  # noqa: E402


def _cases():
    rng = np.random.default_rng(7)
    yield "lstm", model([recurrent(rng, "lstm", "l", 5, 12), dense(rng, "d", 12, 3)], 5)
    yield (
        "lstm-init",
        model([recurrent(rng, "lstm", "l", 5, 8, initial_h=True, initial_c=True), dense(rng, "d", 8, 2)], 5),
    )
    yield (
        "gru-lbr1",
        model([recurrent(rng, "gru", "g", 5, 10, linear_before_reset=1), dense(rng, "d", 10, 2)], 5),
    )
    yield (
        "rnn-tanh",
        model([recurrent(rng, "rnn", "r", 5, 9), dense(rng, "d", 9, 2, activation="sigmoid")], 5),
    )
    yield (
        "rnn-relu",
        model([recurrent(rng, "rnn", "r", 5, 9, activations=["relu"]), dense(rng, "d", 9, 2)], 5),
    )
    yield (
        "stack",
        model(
            [
                recurrent(rng, "lstm", "a", 5, 8),
                recurrent(rng, "gru", "b", 8, 6, linear_before_reset=1),
                dense(rng, "d", 6, 4, activation="softmax"),
            ],
            5,
        ),
    )
    yield "esn-dense", model([esn(rng, "e", 5, 30), dense(rng, "d", 30, 2)], 5)
    yield (
        "esn-sparse-ext",
        model([esn(rng, "e", 5, 30, sparse=True, readout_input="extended"), dense(rng, "d", 36, 2)], 5),
    )


CASES = list(_cases())


@pytest.mark.parametrize("quant", ["fp32", "int8"])
@pytest.mark.parametrize(("name", "pt"), CASES, ids=[c[0] for c in CASES])
def test_baselines_match_reference(name, pt, quant):
    plan, tensors = pt
    if quant == "int8":
        plan, tensors = quantize_int8(plan, tensors)
    X = np.random.default_rng(1).standard_normal((40, plan["input"]["size"])).astype(np.float32)
    ref = reference_predict(plan, tensors, X)  # the int8 reference dequantizes: w = q * scale

    o = OrtStep(onnx_step_model(plan, tensors))
    assert_close(np.stack([o.step(x) for x in X]), ref, what=f"{name} ORT step")
    tb = TorchBaseline(plan, tensors)
    assert_close(np.stack([tb.step(x) for x in X]), ref, what=f"{name} torch step")
    tb.reset()
    assert_close(tb.run(X[:25]), ref[:25], what=f"{name} torch fused run")
    assert_close(tb.run(X[25:]), ref[25:], what=f"{name} torch run continues the state")
    if "esn" not in name:  # ORT's sequence graph (chunk mode), state carried from the step graph's
        seq = OrtStep(onnx_step_model(plan, tensors, seq_len=len(X)))
        assert_close(seq.step(X), ref, what=f"{name} ORT sequence graph")
    # three streams: stream j sees X scaled by (j + 1)
    scales = np.array([1.0, 0.5, -1.0], np.float32)[:, None]
    refs = [reference_predict(plan, tensors, X * s) for s in scales[:, 0]]
    tb.reset(3)
    o3 = OrtStep(onnx_step_model(plan, tensors, batch=3))
    for t in range(len(X)):
        xs = X[t] * scales
        want = np.stack([r[t] for r in refs])
        assert_close(tb.streams_step(xs), want, what=f"{name} torch batched t={t}")
        assert_close(o3.step(xs), want, what=f"{name} ORT batch 3 t={t}")


def test_ort_gru_onnx_default_convention():
    """linear_before_reset = 0 (ONNX's default) has an ORT baseline; torch cannot express it."""
    rng = np.random.default_rng(3)
    plan, tensors = model([recurrent(rng, "gru", "g", 4, 7, linear_before_reset=0), dense(rng, "d", 7, 1)], 4)
    X = rng.standard_normal((30, 4)).astype(np.float32)
    o = OrtStep(onnx_step_model(plan, tensors))
    assert_close(np.stack([o.step(x) for x in X]), reference_predict(plan, tensors, X), what="ORT gru lbr=0")
    with pytest.raises(Unsupported, match="linear_before_reset"):
        TorchBaseline(plan, tensors)


def test_unsupported_layers_are_named():
    rng = np.random.default_rng(4)
    plan, tensors = model(
        [recurrent(rng, "lstm", "bi", 3, 4, direction="bidirectional"), dense(rng, "d", 8, 1)], 3
    )
    with pytest.raises(Unsupported, match="'bi'.*bidirectional"):
        onnx_step_model(plan, tensors)
    with pytest.raises(Unsupported, match="'bi'"):
        TorchBaseline(plan, tensors)
    plan, tensors = model([esn(rng, "e", 3, 10), dense(rng, "d", 10, 1)], 3)
    with pytest.raises(Unsupported, match="ESN has no ONNX sequence op"):
        onnx_step_model(plan, tensors, seq_len=5)
