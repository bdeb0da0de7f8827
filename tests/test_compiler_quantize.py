"""Quantization: int8 per-row symmetric weights and fp16 storage for every layer kind with matrices,
measured against float32 (ONNX Runtime on the float graph, or the float32 artifact through the runtime).

Stated bounds. Analytic, one dense layer (weight-only int8, per output row r):
|y_q − y|_r ≤ (s_r / 2)·‖x‖₁ with s_r = max_j |w_rj| / 127 (test_int8_dense_error_within_the_analytic_bound).
Empirical, for whole models (these tests' models: width ≤ 16, weights ~N(0, 0.6²), inputs ~N(0, 1), tanh
outputs; measured max errors: int8 0.006–0.02, fp16 0.0003–0.0008):

* int8: max |y_int8 − y_float| ≤ INT8_ATOL + INT8_RTOL·max|y_float| (per-row scale s = max|w_row|/127
  puts every weight within s/2 of its float value, ≤ 0.4 % of the row's largest weight);
* fp16: max |y_fp16 − y_float| ≤ FP16_ATOL + FP16_RTOL·max|y_float| (weights rounded to 11 bits).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from compiler_common import predict, predict_onnx_layout  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

INT8_ATOL, INT8_RTOL = 0.02, 0.02
PURE = float("inf")  # an int8 budget every file meets: every matrix int8, as these tests measure
FP16_ATOL, FP16_RTOL = 2e-3, 2e-3


def test_quantize_rows_properties():
    from edgernn.export.quantize import quantize_rows

    rng = np.random.default_rng(0)
    w = rng.normal(0, 1, (3, 7, 33)) * np.logspace(-20, 20, 7)[None, :, None]
    w[1, 2] = 0.0
    q, s = quantize_rows(w)
    assert q.dtype == np.int8 and s.dtype == np.float32 and s.shape == (3, 7)
    assert q.min() >= -127 and q.max() <= 127
    err = np.abs(w - q.astype(np.float64) * s.astype(np.float64)[..., None])
    assert np.all(err <= s[..., None] * (0.5 + 1e-6))
    nz = np.any(w != 0, axis=-1)
    assert np.all(np.max(np.abs(q), axis=-1)[nz] == 127)
    assert np.all(q[1, 2] == 0)


def _model(kind: str, rng: np.random.Generator, i=5, h=16, o=3) -> tuple[onnx.ModelProto, np.ndarray]:
    """x [B, T, I] (or token ids [B, T]) -> (embedding) -> cell -> last step -> Gemm -> Tanh."""
    inits, nodes = [], []

    def c(name, arr):
        inits.append(numpy_helper.from_array(np.asarray(arr), name))
        return name

    if kind == "embedding":
        x_info = helper.make_tensor_value_info("x", TensorProto.INT64, ["b", "t"])
        nodes.append(
            helper.make_node("Gather", [c("table", rng.normal(0, 1, (11, i)).astype(np.float32)), "x"], ["e"])
        )
        cur, cell = "e", "GRU"
    else:
        x_info = helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", i])
        cur, cell = "x", {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU", "dense": None}[kind]
    if cell is None:  # dense only: per-step MLP
        nodes.append(
            helper.make_node("MatMul", [cur, c("w1", rng.normal(0, 0.6, (i, h)).astype(np.float32))], ["m"])
        )
        nodes.append(helper.make_node("Add", ["m", c("b1", rng.normal(0, 0.3, h).astype(np.float32))], ["a"]))
        nodes.append(helper.make_node("Relu", ["a"], ["r"]))
        nodes.append(
            helper.make_node("MatMul", ["r", c("w2", rng.normal(0, 0.3, (h, o)).astype(np.float32))], ["y0"])
        )
        nodes.append(helper.make_node("Tanh", ["y0"], ["y"]))
    else:
        g = {"RNN": 1, "LSTM": 4, "GRU": 3}[cell]
        nodes.append(helper.make_node("Transpose", [cur], ["xt"], perm=[1, 0, 2]))
        ins = [
            "xt",
            c("W", rng.normal(0, 0.6, (1, g * h, i)).astype(np.float32)),
            c("R", rng.normal(0, 0.6 / np.sqrt(h), (1, g * h, h)).astype(np.float32)),
            c("B", rng.normal(0, 0.3, (1, 2 * g * h)).astype(np.float32)),
        ]
        kw = {"linear_before_reset": 1} if cell == "GRU" else {}
        nodes.append(helper.make_node(cell, ins, ["Y"], hidden_size=h, **kw))
        nodes.append(helper.make_node("Squeeze", ["Y", c("ax", np.array([1], np.int64))], ["ys"]))
        nodes.append(helper.make_node("Gather", ["ys", c("last", np.array(-1, np.int64))], ["yl"], axis=0))
        nodes.append(
            helper.make_node(
                "Gemm",
                [
                    "yl",
                    c("fw", rng.normal(0, 0.5, (o, h)).astype(np.float32)),
                    c("fb", np.zeros(o, np.float32)),
                ],
                ["y0"],
                transB=1,
            )
        )
        nodes.append(helper.make_node("Tanh", ["y0"], ["y"]))
    graph = helper.make_graph(
        nodes, "q", [x_info], [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)], inits
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    if kind == "embedding":
        x = rng.integers(0, 11, (4, 9)).astype(np.int64)
    else:
        x = rng.normal(0, 1, (4, 9, i)).astype(np.float32)
    return m, x


KINDS = ["rnn", "lstm", "gru", "dense", "embedding"]


@pytest.mark.parametrize("kind", KINDS)
@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_quantized_every_kind(kind, mode, tmp_path):
    from edgernn.export import compile_onnx

    from edgernn import artifact

    m, x = _model(kind, np.random.default_rng(KINDS.index(kind)))
    path = os.path.join(str(tmp_path), "m.onnx")
    onnx.save(m, path)
    ref = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    pure = {"max_error": PURE} if mode == "int8" else {}  # every matrix int8: no accuracy budget
    res = compile_onnx(path, os.path.join(str(tmp_path), f"m.{mode}.ernn"), quantize=mode, **pure)
    plan, tensors = artifact.read(res["path"])
    assert plan["quantization"] == mode
    quantizable = {"rnn": "W", "lstm": "W", "gru": "W", "dense": "W", "embedding": "table"}
    n_q = 0
    for layer in artifact.chain_layers(plan):
        role = quantizable.get(layer["kind"])
        if role is None:
            continue
        arr = tensors[layer["tensors"][role]]
        if mode == "int8":
            assert arr.dtype == np.int8, f"{layer['name']}.{role} is {arr.dtype}"
            assert tensors[layer["tensors"][role + "_scale"]].dtype == np.float32
            if layer["kind"] in ("rnn", "lstm", "gru"):
                assert tensors[layer["tensors"]["R"]].dtype == np.int8
        else:
            assert arr.dtype == np.float16
        n_q += 1
    assert n_q >= 1
    if kind == "embedding":
        got, exp = predict(res["path"], x[..., None].astype(np.float32)), ref
    else:
        got, conv = predict_onnx_layout(res["path"], x, res["io"])
        exp = conv(ref)
    assert got.shape == exp.shape
    err = float(np.max(np.abs(got - exp)))
    scale = float(np.max(np.abs(exp)))
    atol, rtol = (INT8_ATOL, INT8_RTOL) if mode == "int8" else (FP16_ATOL, FP16_RTOL)
    assert err <= atol + rtol * scale, f"{mode} {kind}: max abs error {err:.4g} (outputs up to {scale:.3g})"
    rep = plan["quantization_report"]
    assert rep["mode"] == mode and rep["size_ratio"] == round(rep["bytes"] / rep["float32_bytes"], 4)
    assert rep["bytes"] == os.path.getsize(res["path"])


def test_int8_size_and_report_lstm_256(tmp_path):
    """The benchmark shape (LSTM 8 -> 256 + Dense): int8 file <= 0.30x float32, fp16 <= 0.51x; the stored
    report agrees with errors measured here through the runtime on the same input."""
    from edgernn.export import compile_onnx
    from edgernn.export.quantize import default_input

    from edgernn import artifact

    m, _ = _model("lstm", np.random.default_rng(5), i=8, h=256, o=4)
    path = os.path.join(str(tmp_path), "m.onnx")
    onnx.save(m, path)
    f32 = compile_onnx(path, os.path.join(str(tmp_path), "m.ernn"))
    i8 = compile_onnx(path, os.path.join(str(tmp_path), "m.int8.ernn"), quantize="int8", max_error=PURE)
    f16 = compile_onnx(path, os.path.join(str(tmp_path), "m.fp16.ernn"), quantize="fp16")
    assert i8["bytes"] <= 0.30 * f32["bytes"], (i8["bytes"], f32["bytes"])
    assert f16["bytes"] <= 0.51 * f32["bytes"]
    rep = i8["quantization_report"]
    assert rep["float32_bytes"] == f32["bytes"]
    plan, _ = artifact.read(i8["path"])
    x = default_input(plan)
    err = np.abs(predict(i8["path"], x) - predict(f32["path"], x))
    assert rep["max_abs_error"] == pytest.approx(float(err.max()), rel=1e-6, abs=1e-9)
    assert rep["mean_abs_error"] == pytest.approx(float(err.mean()), rel=1e-6, abs=1e-9)


def test_report_accuracy_and_rmse(tmp_path):
    """Labels equal to the float32 model's own predictions: float accuracy is 1 and float RMSE is 0 by
    construction, so the report's change figures are the quantized model's own accuracy/RMSE."""
    from edgernn.export import compile_onnx

    m, _ = _model("lstm", np.random.default_rng(3), i=5, h=32, o=4)
    path = os.path.join(str(tmp_path), "m.onnx")
    onnx.save(m, path)
    x = np.random.default_rng(9).normal(size=(64, 12, 5)).astype(np.float32)
    f32 = compile_onnx(path, os.path.join(str(tmp_path), "m.ernn"))
    yf = predict(f32["path"], x)
    cls = np.argmax(yf, -1)
    r1 = compile_onnx(
        path,
        os.path.join(str(tmp_path), "a.ernn"),
        "int8",
        calibration=x,
        calibration_labels=cls,
        max_error=PURE,
    )["quantization_report"]
    assert r1["data"] == "user" and r1["accuracy_float32"] == 1.0
    yq = predict(os.path.join(str(tmp_path), "a.ernn"), x)
    assert r1["accuracy"] == pytest.approx(float(np.mean(np.argmax(yq, -1) == cls)))
    assert r1["accuracy_change_pp"] == pytest.approx(100 * (r1["accuracy"] - 1.0), abs=1e-3)
    r2 = compile_onnx(
        path,
        os.path.join(str(tmp_path), "b.ernn"),
        "int8",
        calibration=x,
        calibration_labels=yf,
        max_error=PURE,
    )["quantization_report"]
    assert r2["rmse_float32"] == 0.0
    yq2 = predict(os.path.join(str(tmp_path), "b.ernn"), x)
    assert r2["rmse"] == pytest.approx(float(np.sqrt(np.mean((yq2 - yf) ** 2))), rel=1e-6)
    from edgernn.export.quantize import QuantizationError

    with pytest.raises(QuantizationError, match="labels"):
        compile_onnx(
            path,
            os.path.join(str(tmp_path), "c.ernn"),
            quantize="int8",
            calibration=x,
            calibration_labels=yf[:3],
        )


def test_fp16_overflow_is_an_error():
    from edgernn.export.quantize import QuantizationError, quantize_plan

    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"size": 2},
        "output": {"size": 1},
        "layers": [
            {"kind": "dense", "name": "d", "input_size": 2, "output_size": 1, "tensors": {"W": "d.W"}}
        ],
    }
    with pytest.raises(QuantizationError, match="float16 range"):
        quantize_plan(plan, {"d.W": np.array([[1e5, 1.0]], np.float32)}, "fp16")
    q, t = quantize_plan(plan, {"d.W": np.array([[3.0, -1.5]], np.float32)}, "int8")
    np.testing.assert_array_equal(t["d.W"], [[127, -64]])  # -1.5 / (3/127) = -63.5 -> round half to even
    with pytest.raises(QuantizationError, match="already quantized"):
        quantize_plan(q, t, "int8")


def _esn_plan(n: int, i: int, sparse: bool, rng: np.random.Generator) -> tuple[dict, dict]:
    w = rng.normal(0, 1, (n, n)) * (rng.random((n, n)) < 0.1)
    w *= 0.9 / max(1e-9, np.max(np.abs(np.linalg.eigvals(w))))
    layer = {"kind": "esn", "name": "esn", "input_size": i, "reservoir_size": n, "leak_rate": 0.3}
    t = {"esn.W_in": rng.uniform(-1, 1, (n, i)).astype(np.float32), "esn.b": rng.uniform(-0.2, 0.2, n)}
    roles = {"W_in": "esn.W_in", "b": "esn.b"}
    if sparse:
        rows, cols = np.nonzero(w)
        layer.update({"sparse": True, "nnz": int(rows.size)})
        t.update(
            {
                "esn.W_data": w[rows, cols],
                "esn.W_indices": cols.astype(np.int32),
                "esn.W_indptr": np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(
                    np.int32
                ),
            }
        )
        roles.update({"W_data": "esn.W_data", "W_indices": "esn.W_indices", "W_indptr": "esn.W_indptr"})
    else:
        t["esn.W"] = w
        roles["W"] = "esn.W"
    layer["tensors"] = roles
    dense = {
        "kind": "dense",
        "name": "ro",
        "input_size": n,
        "output_size": 2,
        "tensors": {"W": "ro.W", "b": "ro.b"},
    }
    t["ro.W"] = rng.normal(0, 0.2, (2, n))
    t["ro.b"] = np.zeros(2)
    t = {k: (v.astype(np.float32) if v.dtype.kind == "f" else v) for k, v in t.items()}
    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"size": i},
        "output": {"size": 2, "sequence": "many_to_many"},
        "layers": [layer, dense],
    }
    return plan, t


@pytest.mark.parametrize("sparse", [False, True])
@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_quantized_esn(sparse, mode, tmp_path):
    """ESN plans (written by the torch side) quantize too: W_in, W / W_data per reservoir row, readout."""
    from edgernn.export.quantize import quantization_report, quantize_plan

    from edgernn import artifact

    plan, t = _esn_plan(200, 3, sparse, np.random.default_rng(1))
    plan = artifact.validate_plan(plan)
    qplan, qt = quantize_plan(plan, t, mode)
    if mode == "int8":
        assert qt["esn.W_in"].dtype == np.int8 and qt["ro.W"].dtype == np.int8
        assert qt["esn.W_data" if sparse else "esn.W"].dtype == np.int8
        assert qt[("esn.W_data" if sparse else "esn.W") + "_scale"].shape == (200,)
    rep = quantization_report(plan, t, qplan, qt)
    atol, rtol = (INT8_ATOL, INT8_RTOL) if mode == "int8" else (FP16_ATOL, FP16_RTOL)
    assert rep["max_abs_error"] <= atol + rtol * rep["max_abs_output"], rep
    # dense W: 1 (int8) or 2 (fp16) bytes per 4; CSR keeps its int32 indices: (1 + 4) / (4 + 4) for int8
    limit = {("int8", False): 0.35, ("fp16", False): 0.55, ("int8", True): 0.7, ("fp16", True): 0.8}
    assert rep["size_ratio"] < limit[(mode, sparse)]
    artifact.write(os.path.join(str(tmp_path), "e.ernn"), qplan, qt)


@pytest.mark.parametrize("width", [4, 64, 512])
def test_int8_dense_error_within_the_analytic_bound(width, tmp_path):
    """One dense layer, weight-only int8: |y_q - y| <= sum_j |w_rj - q_rj s_r| |x_j| <= (s_r / 2) ||x||_1
    for every output row r (plus float32 rounding). Checked through the runtime on random inputs."""
    from edgernn.export.quantize import quantize_plan

    from edgernn import artifact

    rng = np.random.default_rng(width)
    o = 7
    w = (rng.normal(0, 1, (o, width)) * rng.uniform(0.01, 3, (o, 1))).astype(np.float32)
    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"size": width},
        "output": {"size": o, "sequence": "many_to_many"},
        "layers": [
            {"kind": "dense", "name": "d", "input_size": width, "output_size": o, "tensors": {"W": "d.W"}}
        ],
    }
    qplan, qt = quantize_plan(plan, {"d.W": w}, "int8")
    pf, pq = os.path.join(str(tmp_path), "f.ernn"), os.path.join(str(tmp_path), "q.ernn")
    artifact.write(pf, plan, {"d.W": w})
    artifact.write(pq, qplan, qt)
    x = rng.normal(0, 1, (50, width)).astype(np.float32)
    err = np.abs(predict(pq, x).astype(np.float64) - predict(pf, x).astype(np.float64))  # (50, o)
    s = qt["d.W_scale"].astype(np.float64)
    bound = 0.5 * s[None, :] * np.abs(x).sum(1, keepdims=True).astype(np.float64)
    fp_eps = (
        4 * width * np.finfo(np.float32).eps * (np.abs(x) @ np.abs(w).T)
    )  # float32 sum rounding, both sides
    assert np.all(err <= bound + fp_eps), float(np.max(err - bound - fp_eps))
    assert np.max(err) > 0  # it is really quantized


def _builder_models():
    import builders as b

    rng = np.random.default_rng(11)
    return {
        "rnn_bi": b.model(
            [b.recurrent(rng, "rnn", "r", 4, 12, "bidirectional"), b.dense(rng, "d", 24, 3)], 4
        ),
        "lstm_peep": b.model(
            [b.recurrent(rng, "lstm", "l", 4, 12, P=True, initial_h=True), b.dense(rng, "d", 12, 3)], 4
        ),
        "gru_rev": b.model([b.recurrent(rng, "gru", "g", 4, 12, "reverse"), b.dense(rng, "d", 12, 3)], 4),
        "attention": b.model(
            [b.recurrent(rng, "gru", "g", 4, 12), b.attention(rng, "a", 12, 8), b.dense(rng, "d", 12, 3)], 4
        ),
    }


@pytest.mark.parametrize("name", ["rnn_bi", "lstm_peep", "gru_rev", "attention"])
@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_quantized_plan_kinds(name, mode):
    """Plans not compiled from ONNX (bidirectional, peepholes + initial state, reverse, attention pooling)
    quantize too; the report's error is within the stated bound."""
    from edgernn.export.quantize import quantization_report, quantize_plan

    plan, tensors = _builder_models()[name]
    qplan, qt = quantize_plan(plan, tensors, mode)
    if mode == "int8":
        for layer in qplan["layers"]:
            if layer["kind"] in ("rnn", "lstm", "gru", "dense", "attention"):
                assert qt[layer["tensors"]["W"]].dtype == np.int8
    rep = quantization_report(plan, tensors, qplan, qt)
    atol, rtol = (INT8_ATOL, INT8_RTOL) if mode == "int8" else (FP16_ATOL, FP16_RTOL)
    assert 0 < rep["max_abs_error"] <= atol + rtol * rep["max_abs_output"], rep


def test_exact_int8_used_only_when_it_matches_the_weights():
    """Source int8 values are kept when they dequantize to the plan's weights, ignored otherwise."""
    from edgernn.export.quantize import quantize_plan

    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"size": 3},
        "output": {"size": 2},
        "layers": [
            {"kind": "dense", "name": "d", "input_size": 3, "output_size": 2, "tensors": {"W": "d.W"}}
        ],
    }
    q = np.array([[100, -3, 7], [1, 2, -50]], np.int8)
    s = np.array([0.01, 0.02], np.float32)
    w = (q * s[:, None]).astype(np.float32)
    _, t = quantize_plan(plan, {"d.W": w}, "int8", exact_int8={"d.W": (q, s)})
    np.testing.assert_array_equal(t["d.W"], q)  # kept (not re-scaled to use the full [-127, 127])
    _, t2 = quantize_plan(plan, {"d.W": w}, "int8", exact_int8={"d.W": (q[:, ::-1].copy(), s)})
    np.testing.assert_array_equal(np.max(np.abs(t2["d.W"]), axis=1), [127, 127])  # mismatch: re-quantized
