"""int8 with an accuracy budget (``export/budget.py``, issue 15): mixed int8/fp16/fp32 files, per-layer
sensitivity, the greedy choice, and the budget met on real data.

Oracles: the float32 model's own metric computed here (PyTorch / numpy on the held-out split), the numpy
reference cells of ``tests/reference.py`` for mixed-precision files, the ONNX spec's node types for the
ORT files, and numpy's eigenvalues for the ESN memory rule. Never the code under test's own report.
Real data: the monthly El Niño sea surface temperatures shipped with statsmodels (1950-2010), the UEA
BasicMotions IMU set shipped in ``examples/data``, and the sine example of ``examples/sine_forecast.py``.
"""

from __future__ import annotations

import json
import math
import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import builders  # noqa: E402
from reference import reference_predict  # noqa: E402

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _rmse(a, b) -> float:
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


# ------------------------------------------------------------------------- the artifact: mixed files


def _mixed_model():
    """gru 3->8 int8, dense 8->6 fp16, dense 6->2 fp32 (quantized here, independently of the project)."""
    rng = np.random.default_rng(0)
    plan, t = builders.model(
        [
            builders.recurrent(rng, "gru", "g", 3, 8, linear_before_reset=1),
            builders.dense(rng, "d1", 8, 6, "tanh"),
            builders.dense(rng, "d2", 6, 2),
        ],
        3,
    )
    q8, t8 = builders.quantize_int8(plan, t)
    mixed = dict(q8, layers=[q8["layers"][0], plan["layers"][1], plan["layers"][2]])
    tensors = {n: t8[n] for n in q8["layers"][0]["tensors"].values()}
    tensors.update({n: t[n] for n in plan["layers"][2]["tensors"].values()})
    tensors["d1.W"] = t["d1.W"].astype(np.float16)
    tensors["d1.b"] = t["d1.b"]
    return mixed, tensors


def test_a_file_with_int8_fp16_and_fp32_matrices_loads_and_runs(tmp_path):
    import edgernn
    from edgernn import artifact

    plan, tensors = _mixed_model()
    path = tmp_path / "mixed.ernn"
    artifact.write(path, plan, tensors)
    X = np.random.default_rng(1).normal(size=(20, 3)).astype(np.float32)
    exp = reference_predict(plan, tensors, X)  # q·scale, fp16 widened: the numpy reference
    for backend in ("numpy",):  # the numba kernels read the same packed (fp16-widened) buffers
        m = edgernn.load(path, backend=backend)
        np.testing.assert_allclose(m.predict(X), exp, atol=1e-5, rtol=1e-4)
        np.testing.assert_allclose(m.stream().run(X), exp, atol=1e-5, rtol=1e-4)


def test_the_loader_checks_the_mix_and_the_precision_record(tmp_path):
    from edgernn import ArtifactError, artifact

    plan, tensors = _mixed_model()
    bad = dict(tensors, **{"d1.b": tensors["d1.b"].astype(np.float16)})  # fp16 outside a matrix role
    with pytest.raises(ArtifactError, match="^dtype not allowed"):
        artifact.write(tmp_path / "a.ernn", plan, bad)
    rec = {"g": {"precision": "int8"}, "d1": {"precision": "fp16", "sensitivity": {"int8_nearest": 0.01}}}
    artifact.write(tmp_path / "ok.ernn", dict(plan, quantization_layers=rec), tensors)
    assert artifact.read(tmp_path / "ok.ernn")[0]["quantization_layers"] == rec
    for wrong in (
        {"d1": {"precision": "int8"}},  # d1's matrix is float16
        {"d2": {"precision": "fp16"}},  # d2's is float32
        {"nope": {"precision": "fp32"}},  # no such layer
        {"g": {"precision": "int4"}},
        {"g": {"precision": "int8", "sensitivity": {"x": [1]}}},
        {"g": {"precision": "int8", "extra": 1}},
    ):
        with pytest.raises(ArtifactError, match="^bad field: quantization_layers"):
            artifact.write(tmp_path / "b.ernn", dict(plan, quantization_layers=wrong), tensors)


# ------------------------------------------------------------------------------- the memory rule


@pytest.mark.parametrize(("leak", "rho"), [(0.5, 0.9), (0.1, 0.95), (1.0, 0.5), (0.3, 1.2)])
def test_esn_memory_follows_leak_and_spectral_radius(leak, rho):
    from edgernn.export.budget import MAX_MEMORY, memory_steps

    rng = np.random.default_rng(3)
    layer, t = builders.esn(rng, "r", 2, 40, leak=leak)
    W = t["r.W"].astype(np.float64)
    t["r.W"] = (W * rho / np.max(np.abs(np.linalg.eigvals(W)))).astype(np.float32)
    plan, t = builders.model([(layer, t), builders.dense(rng, "o", 40, 1)], 2)
    true_rho = float(np.max(np.abs(np.linalg.eigvals(t["r.W"].astype(np.float64)))))
    c = 1 - leak * (1 - true_rho)
    want = MAX_MEMORY if c >= 1 else min(MAX_MEMORY, math.ceil(math.log(1e-3) / math.log(c)))
    assert memory_steps(plan, t) == want
    # the error of a perturbed state really decays by ~1e-3 over that many steps (linear regime)
    if c < 1:
        d = rng.normal(size=40) * 1e-6
        W = t["r.W"].astype(np.float64)
        for _ in range(want):
            d = (1 - leak) * d + leak * (W @ d)
        assert np.linalg.norm(d) / 1e-6 / np.sqrt(40) < 0.05


# ------------------------------------------------------------------ budget mechanics on a small model


def _small_plan():
    rng = np.random.default_rng(7)
    return builders.model(
        [builders.recurrent(rng, "gru", "g", 4, 12, linear_before_reset=1), builders.dense(rng, "d", 12, 3)],
        4,
        sequence="many_to_one",
    )


def test_an_unreachable_budget_writes_the_float32_weights_and_says_so(tmp_path):
    from edgernn.export.budget import quantize_with_budget

    plan, t = _small_plan()
    x = np.random.default_rng(0).normal(size=(6, 20, 4)).astype(np.float32)
    qp, qt, rep = quantize_with_budget(plan, t, calibration=x, max_error=0.0)
    assert rep["met"] is False and "float32" in rep["outcome"]
    assert qp["quantization"] == "none"
    for name, arr in t.items():
        assert qt[name].dtype == np.float32 and np.array_equal(qt[name], arr), name
    assert [ly["choice"] for ly in rep["layers"]] == ["fp32", "fp32"]
    # and no budget at all (inf) is pure int8
    qp, qt, rep = quantize_with_budget(plan, t, calibration=x, max_error=float("inf"))
    assert rep["met"] and qp["quantization"] == "int8"
    assert all(qt[qp["layers"][i]["tensors"]["W"]].dtype == np.int8 for i in (0, 1))


def test_the_greedy_choice_meets_the_budget_end_to_end_on_the_data():
    """The final error is the whole mixed model's error on the data (not a sum of per-layer figures):
    recomputed here with the numpy reference cells, and within the limit. The model is many-to-one and
    streams: its prediction at every step counts, not only the last one's."""
    from edgernn.export.budget import quantize_with_budget

    plan, t = _small_plan()
    x = np.random.default_rng(1).normal(size=(8, 24, 4)).astype(np.float32)
    yf = np.stack([reference_predict(plan, t, s) for s in x])
    _, _, free = quantize_with_budget(plan, t, calibration=x, max_error=float("inf"))
    pure = free["final"]["max_error"]
    for limit in (pure / 2, pure / 8):  # fp16 everywhere: 0.08 x pure
        qp, qt, rep = quantize_with_budget(plan, t, calibration=x, max_error=limit)
        yq = np.stack([reference_predict(qp, qt, s) for s in x])
        err = float(np.max(np.abs(yq - yf)) / np.max(np.abs(yf)))
        assert err <= limit * 1.01 + 1e-6, (err, limit)
        assert rep["met"] and rep["final"]["max_error"] == pytest.approx(err, rel=0.02, abs=1e-6)
        # the file's dtypes are what the report says each layer is
        for ly, layer in zip(rep["layers"], qp["layers"], strict=True):
            want = {"int8": np.int8, "fp16": np.float16, "fp32": np.float32}[ly["choice"]]
            assert qt[layer["tensors"]["W"]].dtype == want
        assert any(ly["choice"] != "int8" for ly in rep["layers"])


# --------------------------------------------------------------------- real data: ESN on El Niño


def _elnino():
    sm = pytest.importorskip("statsmodels.api")
    df = sm.datasets.elnino.load_pandas().data
    s = df.iloc[:, 1:].to_numpy(np.float32).ravel()  # monthly SST, 1950-2010: 732 months
    split = 500
    z = (s - s[:split].mean()) / s[:split].std()
    return z[:-1, None], z[1:, None], split


@pytest.fixture(scope="module")
def esn_elnino():
    from edgernn.export.from_torch import describe

    from edgernn.models import ESN

    x, y, split = _elnino()
    esn = ESN(1, 200, 1, leak_rate=0.5, spectral_radius=0.9, seed=0, ridge=1e-3)
    esn.fit(x[None, :split], y[None, :split], washout=50)
    with torch.no_grad():
        ref = esn(torch.from_numpy(x[None]))[0].numpy()
    desc = describe(esn, example_output_ndim=3)
    return desc.plan, desc.tensors, x, y, split, ref


@pytest.mark.parametrize("targets", [True, False])
def test_esn_on_a_real_monthly_series_within_2pct_rmse(esn_elnino, tmp_path, targets):
    from edgernn.export.budget import quantize_with_budget
    from edgernn.export.quantize import quantize_plan

    import edgernn
    from edgernn import artifact

    plan, t, x, y, split, ref = esn_elnino
    rf = _rmse(ref[split:], y[split:])  # the float32 (torch) model on the held-out months
    cal = x[None, :split]
    kw = {"labels": y[None, :split]} if targets else {}
    qp, qt, rep = quantize_with_budget(plan, t, calibration=cal, **kw)
    artifact.write(tmp_path / "m.ernn", qp, qt)
    artifact.write(tmp_path / "f.ernn", plan, t)
    yq = edgernn.load(tmp_path / "m.ernn", backend="numpy").predict(x)
    assert _rmse(yq[split:], y[split:]) <= 1.02 * rf, (_rmse(yq[split:], y[split:]), rf, rep["outcome"])
    assert os.path.getsize(tmp_path / "m.ernn") < os.path.getsize(tmp_path / "f.ernn")
    assert rep["data"]["memory_steps"] > 100  # leak 0.5, radius 0.9: ~135 steps
    # the test can fail: nearest int8 everywhere misses +2 % on this model
    np_plan, np_t = quantize_plan(plan, t, "int8")
    artifact.write(tmp_path / "n.ernn", np_plan, np_t)
    yn = edgernn.load(tmp_path / "n.ernn", backend="numpy").predict(x)
    assert _rmse(yn[split:], y[split:]) > 1.05 * rf


def test_esn_int8_onnx_meets_the_budget_in_onnx_runtime(esn_elnino, tmp_path):
    """ORT's dynamic int8 quantizes activations at run time too, which the .ernn measurement does not
    see: the exporter measures model.int8.onnx in ORT on the budget's data and keeps more layers float
    until it meets the budget. Oracle: ORT itself, on both ONNX files, against the targets."""
    from edgernn.export import export
    from edgernn.export.parity import ort_sequence

    from edgernn.models import ESN

    x, y, split = _elnino()
    esn = ESN(1, 200, 1, leak_rate=0.5, spectral_radius=0.9, seed=0, ridge=1e-3)
    esn.fit(x[None, :split], y[None, :split], washout=50)
    cal, tgt = x[None, :split], y[None, :split]
    rep = export(esn, tmp_path, cal[:, :64], quantize="int8", calibration=cal, calibration_labels=tgt)
    fin = rep["quantization_budget"]["onnx_int8_final"]
    assert fin["met"], fin
    yf = ort_sequence(str(tmp_path / "model.onnx"))(cal)
    yq = ort_sequence(str(tmp_path / "model.int8.onnx"))(cal)
    assert _rmse(yq, tgt) <= 1.02 * _rmse(yf, tgt), (_rmse(yq, tgt), _rmse(yf, tgt), fin)
    # the check matters: ORT's int8 of the layers the .ernn keeps int8 misses the budget in ORT
    from edgernn.export.ort_budget import quantize_onnx

    plan, t = esn_elnino[:2]
    kept8 = [ly["name"] for ly in rep["quantization_budget"]["layers"] if ly["choice"] == "int8"]
    assert kept8 and set(fin["widened"]) <= set(kept8)
    if fin["widened"]:
        src = _onnx_of(plan, t, tmp_path / "mm.onnx", "matmul")
        quantize_onnx(src, str(tmp_path / "raw8.onnx"))
        yr = ort_sequence(str(tmp_path / "raw8.onnx"))(cal)
        assert _rmse(yr, tgt) > 1.02 * _rmse(yf, tgt)


# ----------------------------------------------------------------- real data: GRU on BasicMotions


def _basic_motions():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from imu_activity import read_ts

    d = os.path.join(ROOT, "examples", "data", "BasicMotions")
    Xtr, ytr, _ = read_ts(os.path.join(d, "BasicMotions_TRAIN.ts"))
    Xte, yte, _ = read_ts(os.path.join(d, "BasicMotions_TEST.ts"))
    return Xtr, ytr, Xte, yte


def test_gru_classifier_on_basicmotions_within_half_a_point(tmp_path):
    from edgernn.export.budget import quantize_with_budget
    from edgernn.export.from_torch import describe

    import edgernn
    from edgernn import artifact, models, train

    Xtr, ytr, Xte, yte = _basic_motions()
    torch.manual_seed(0)
    torch.set_num_threads(1)
    mean, std = Xtr.reshape(-1, 6).mean(0), Xtr.reshape(-1, 6).std(0) + 1e-6
    m = models.SequenceModel("gru", 6, 12, 4, input_mean=mean, input_std=std)
    train.fit(m, Xtr, ytr, loss="cross_entropy", lr=0.02, epochs=8, batch_size=8, progress=False)
    m.eval()
    with torch.no_grad():
        acc_f = float(np.mean(m(torch.from_numpy(Xte)).numpy().argmax(-1) == yte))
    desc = describe(m, example_output_ndim=2)
    qp, qt, rep = quantize_with_budget(desc.plan, desc.tensors, calibration=Xtr, labels=ytr)
    assert rep["limits"] == {"max_accuracy_drop": 0.5}
    artifact.write(tmp_path / "m.ernn", qp, qt)
    acc_q = float(np.mean(edgernn.load(tmp_path / "m.ernn", backend="numpy").predict(Xte).argmax(-1) == yte))
    assert 100 * (acc_f - acc_q) <= 0.5, (acc_f, acc_q, rep["outcome"])
    assert acc_f >= 0.5  # a real classifier, not chance (4 classes)


# ---------------------------------------------------------------------- the sine example, export()


@pytest.fixture(scope="module")
def sine_model():
    sys.path.insert(0, os.path.join(ROOT, "examples"))
    from sine_forecast import make_data

    from edgernn import models, train

    torch.manual_seed(0)
    torch.set_num_threads(1)
    _, X, Y = make_data()
    split = int(0.8 * len(X))
    m = models.SequenceModel("lstm", 1, 12, 1)
    train.fit(m, X[:split], Y[:split], loss="mse", lr=0.01, epochs=5, batch_size=32, progress=False)
    m.eval()
    with torch.no_grad():
        ref = m(torch.from_numpy(X[split:])).numpy()
    return m, X, Y, split, ref


def test_sine_example_without_calibration_within_2pct_rmse(sine_model, tmp_path):
    """No calibration data: measured on the example input (4 training windows) plus the synthetic
    fallback; the held-out RMSE of the file stays within +2 % of the float32 model's."""
    from edgernn.export.budget import quantize_with_budget
    from edgernn.export.from_torch import describe
    from edgernn.export.quantize import quantize_plan

    import edgernn
    from edgernn import artifact

    m, X, Y, split, ref = sine_model
    rf = _rmse(ref, Y[split:])
    desc = describe(m, example_output_ndim=2)
    qp, qt, rep = quantize_with_budget(desc.plan, desc.tensors, example=X[:4])
    assert rep["data"]["source"] == "example + synthetic" and rep["limits_from"] == "default"
    artifact.write(tmp_path / "m.ernn", qp, qt)
    artifact.write(tmp_path / "f.ernn", desc.plan, desc.tensors)
    yq = edgernn.load(tmp_path / "m.ernn", backend="numpy").predict(X[split:])
    assert _rmse(yq, Y[split:]) <= 1.02 * rf, (_rmse(yq, Y[split:]), rf, rep["outcome"])
    assert os.path.getsize(tmp_path / "m.ernn") < os.path.getsize(tmp_path / "f.ernn")
    # the test can fail: nearest int8 everywhere misses +2 % on this model
    artifact.write(tmp_path / "n.ernn", *quantize_plan(desc.plan, desc.tensors, "int8"))
    yn = edgernn.load(tmp_path / "n.ernn", backend="numpy").predict(X[split:])
    assert _rmse(yn, Y[split:]) > 1.02 * rf


@pytest.fixture(scope="module")
def sine(sine_model, tmp_path_factory):
    from edgernn.export import export

    m, X, Y, split, ref = sine_model
    out = tmp_path_factory.mktemp("sine")
    report = export(m, out, X[:4], quantize="int8")  # no calibration data: the default budget
    return m, out, report, X, Y, split, ref


def test_sine_export_without_calibration_within_2pct_rmse(sine):
    import edgernn

    m, out, report, X, Y, split, ref = sine
    rf = _rmse(ref, Y[split:])
    yq = edgernn.load(out / "model.int8.ernn").predict(X[split:])
    assert _rmse(yq, Y[split:]) <= 1.02 * rf, (_rmse(yq, Y[split:]), rf)
    rep = json.load(open(out / "report.json"))["quantization_budget"]
    assert rep["data"]["source"] == "example + synthetic" and rep["limits_from"] == "default"
    sizes = rep["sizes"]
    assert sizes["mixed_bytes"] == os.path.getsize(out / "model.int8.ernn")
    assert sizes["fp32_bytes"] == os.path.getsize(out / "model.ernn")
    assert sizes["mixed_bytes"] < sizes["fp32_bytes"]


def test_the_int8_onnx_files_follow_the_layer_choice(sine, tmp_path):
    """Layers the budget keeps wide are excluded from ORT's quantizer: with every layer fp32 the int8 ONNX
    file has no integer op, with none kept wide it has them (ONNX node types are the oracle)."""
    from edgernn.export import export

    m, _, _, X, _, _, _ = sine

    def ops(d):
        return {n.op_type for n in onnx.load(os.path.join(d, "model.int8.onnx")).graph.node}

    wide = export(m, tmp_path / "wide", X[:4], quantize="int8", max_error=0.0)
    assert not ops(tmp_path / "wide") & {"DynamicQuantizeLSTM", "MatMulInteger", "DynamicQuantizeLinear"}
    lstm, dense = (ly["name"] for ly in wide["quantization_budget"]["layers"])
    assert "fp32" in wide["quantization_budget"]["onnx_int8"][lstm]
    free = export(m, tmp_path / "free", X[:4], quantize="int8", max_error=float("inf"))
    assert "DynamicQuantizeLSTM" in ops(tmp_path / "free")
    notes = free["quantization_budget"]["onnx_int8"]
    assert notes[lstm] == "int8 (LSTM)" and notes[dense] == "int8 (Gemm)", notes


def _onnx_of(plan, tensors, path, form):
    from edgernn.export.onnx_graph import sequence_graph

    onnx.save(sequence_graph(plan, tensors, form), str(path))
    return str(path)


def test_ort_excludes_exactly_the_layers_kept_wide(tmp_path):
    """The MatMul form of a GRU + dense model through ORT's quantizer: a layer kept fp16/fp32 keeps its
    float32 weights in the int8 ONNX file, the others become int8 (the file's initializers are the
    oracle)."""
    from edgernn.export.exporter import _int8_onnx
    from onnx import numpy_helper

    plan, t = _small_plan()
    src = _onnx_of(plan, t, tmp_path / "m.onnx", "matmul")

    def floats(path):
        return [numpy_helper.to_array(x) for x in onnx.load(path).graph.initializer]

    def kept(path, w):  # w (or its transpose) still stored as float32
        return any(
            a.dtype == np.float32 and a.size == w.size and np.array_equal(a.T, w) for a in floats(path)
        )

    gW = t[plan["layers"][0]["tensors"]["W"]][0]
    dW = t[plan["layers"][1]["tensors"]["W"]]
    for choice in ({"g": "int8", "d": "int8"}, {"g": "fp16", "d": "int8"}, {"g": "int8", "d": "fp32"}):
        dst = str(tmp_path / f"{choice['g']}{choice['d']}.onnx")
        notes = _int8_onnx(src, dst, plan, t, choice)
        assert kept(dst, gW) == (choice["g"] != "int8"), (choice, notes)
        assert kept(dst, dW) == (choice["d"] != "int8"), (choice, notes)
        assert notes["g"].startswith("int8") == (choice["g"] == "int8")
    # ORT's limit, said: a native GRU node is not quantized
    native = _onnx_of(plan, t, tmp_path / "n.onnx", "native")
    notes = _int8_onnx(native, str(tmp_path / "n8.onnx"), plan, t, {"g": "int8", "d": "int8"})
    assert "does not quantize GRU" in notes["g"] and notes["d"].startswith("int8")
    assert kept(str(tmp_path / "n8.onnx"), dW) is False


def test_cli_compile_with_a_budget_and_inspect_show_the_layers(tmp_path):
    plan, t = _small_plan()
    src = _onnx_of(plan, t, tmp_path / "m.onnx", "native")
    env = dict(os.environ, PYTHONPATH=ROOT)
    exe = [sys.executable, "-m", "edgernn.cli"]
    dst = tmp_path / "m.int8.ernn"
    cal = tmp_path / "cal.npy"
    np.save(cal, np.random.default_rng(0).normal(size=(8, 20, 4)).astype(np.float32))
    r = subprocess.run(
        [*exe, "compile", src, "-o", str(dst), "--quantize", "int8", "--calibration", str(cal)]
        + ["--max-error", "0.004"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode == 0, r.stderr
    out = r.stdout
    assert "int8 budget (user): max_error 0.004" in out and "final: max error" in out, out
    assert "size:" in out and "pure int8" in out
    r = subprocess.run([*exe, "inspect", str(dst)], capture_output=True, text=True, env=env)
    assert r.returncode == 0, r.stderr
    assert "per-layer precision" in r.stdout and "int8_nearest" in r.stdout, r.stdout
    r = subprocess.run(
        [*exe, "compile", src, "-o", str(tmp_path / "x.ernn"), "--max-error", "0.05"],
        capture_output=True,
        text=True,
        env=env,
    )
    assert r.returncode != 0 and "--max-error" in r.stderr and "Traceback" not in r.stderr
