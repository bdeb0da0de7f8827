"""edgernn.export: every model kind through every export path, checked against torch and ONNX Runtime.

Oracles: the torch module itself, ONNX Runtime running the exported files, and ONNX operator nodes built
here by hand from the ``.ernn`` tensors (so the artifact's layout is checked against the ONNX spec as
ONNX Runtime implements it, not against the exporter's own graph builder).
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import ExportParityError, export  # noqa: E402
from edgernn.export.from_torch import UnsupportedModuleError, describe  # noqa: E402
from edgernn.export.parity import torch_reference  # noqa: E402
from torch import nn  # noqa: E402

import edgernn  # noqa: E402
from edgernn import artifact  # noqa: E402
from edgernn.models import ESN, SequenceModel  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4

KINDS = {
    "rnn_tanh": dict(cell="rnn_tanh", input_size=8, hidden_size=64, output_size=3),
    "rnn_relu": dict(cell="rnn_relu", input_size=8, hidden_size=64, output_size=3, many_to_many=True),
    "lstm": dict(cell="lstm", input_size=8, hidden_size=64, output_size=4, output_activation="softmax"),
    "gru": dict(
        cell="gru",
        input_size=8,
        hidden_size=64,
        output_size=1,
        output_activation="sigmoid",
        input_mean=[0.5] * 8,
        input_std=[2.0] * 8,
    ),  # fmt: skip
    "bidirectional": dict(cell="gru", input_size=8, hidden_size=64, output_size=3, bidirectional=True),
    "stacked": dict(cell="lstm", input_size=8, hidden_size=64, output_size=3, num_layers=2, dropout=0.1),
    "attention": dict(
        cell="lstm", input_size=8, hidden_size=64, output_size=3, attention=True, attention_size=32
    ),
    "tokens_embedding": dict(
        cell="gru",
        input_size=None,
        hidden_size=64,
        output_size=20,
        vocab_size=20,
        many_to_many=True,
        output_activation="softmax",
        labels=[f"t{i}" for i in range(20)],
    ),  # fmt: skip
    "tokens_onehot": dict(
        cell="rnn_tanh", input_size=None, hidden_size=64, output_size=2, vocab_size=30, token_input="onehot"
    ),  # fmt: skip
}


def _model(kind):
    torch.manual_seed(0)
    t = np.arange(400) * 0.05
    U = np.stack([np.sin(t * (k + 1)) for k in range(8)], -1)[None].astype(np.float32)
    if kind == "esn":
        m = ESN(8, 200, 2, leak_rate=0.3, sparsity=0.9, seed=0)
        return m.fit(U[:, :-1], U[:, 1:, :2], washout=20)
    if kind == "esn_extended":  # many-to-one, readout on [1; u; x], a dense reservoir, a bias
        m = ESN(8, 150, 3, leak_rate=0.6, sparsity=0.2, bias_scaling=0.1, readout_input="extended",
                many_to_many=False, output_activation="softmax", seed=1)  # fmt: skip
        windows = np.stack([U[0, i : i + 20] for i in range(0, 300, 10)])
        return m.fit(windows, np.eye(3)[np.arange(len(windows)) % 3])
    return SequenceModel(**KINDS[kind]).eval()


def _example(m, T=12):
    rng = np.random.default_rng(1)
    if getattr(m, "tokens", False):
        return rng.integers(0, m.config["vocab_size"], size=(2, T))
    return rng.normal(size=(2, T, 8)).astype(np.float32)


def _torch(m, X):
    with torch_reference():
        return m(torch.from_numpy(X)).numpy()


def _assert_close(a, e):
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    assert a.shape == e.shape
    assert np.all(np.abs(a - e) <= ATOL + RTOL * np.abs(e)), np.abs(a - e).max()


def _step_loop(path, X, many_to_one):
    sess = ort.InferenceSession(path)
    ins = sess.get_inputs()
    st = {i.name: np.zeros((X.shape[0], i.shape[1]), np.float32) for i in ins[1:]}
    ys = []
    for t in range(X.shape[1]):
        out = sess.run(None, {ins[0].name: X[:, t], **st})
        ys.append(out[0])
        st = dict(zip(st, out[1:], strict=True))
    Y = np.stack(ys, 1)
    return Y[:, -1] if many_to_one else Y


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    cache = {}

    def get(kind):
        if kind not in cache:
            m = _model(kind)
            out = tmp_path_factory.mktemp(kind)
            # max_error=inf: every matrix int8 (the int8 mechanics; the budget is test_quant_budget.py's)
            report = export(m, out, _example(m), quantize="int8", max_error=float("inf"))
            cache[kind] = (m, str(out), report)
        return cache[kind]

    return get


@pytest.mark.parametrize("kind", [*KINDS, "esn", "esn_extended"])
def test_export_every_kind(exported, kind):
    m, out, report = exported(kind)
    bidir = kind == "bidirectional"
    names = ["model.onnx", "model.ernn", "model.int8.onnx", "model.int8.ernn", "report.json"]
    if not bidir:
        names += ["model.step.onnx", "model.step.int8.onnx"]
    for n in names:
        assert os.path.isfile(os.path.join(out, n)), n
    assert not os.path.exists(os.path.join(out, "model.step.onnx")) or not bidir
    assert not [f for f in os.listdir(out) if f.endswith(".data") or f.startswith(".")]
    for n in names:
        if n.endswith(".onnx"):
            model = onnx.load(os.path.join(out, n))
            onnx.checker.check_model(model, full_check=True)
            assert all(t.data_location != onnx.TensorProto.EXTERNAL for t in model.graph.initializer)
    # independent parity: torch vs ONNX Runtime on fresh inputs of another length
    X = _example(m, T=9)
    e = _torch(m, X)
    _assert_close(ort.InferenceSession(os.path.join(out, "model.onnx")).run(None, {"input": X})[0], e)
    many_to_one = not m.many_to_many
    if not bidir:
        _assert_close(_step_loop(os.path.join(out, "model.step.onnx"), X, many_to_one), e)
    # int8: the stated bound, and the size target
    scale = np.abs(e).max()
    q = ort.InferenceSession(os.path.join(out, "model.int8.onnx")).run(None, {"input": X})[0]
    assert np.abs(q - e).max() <= 0.02 + 0.05 * scale
    sizes = report["files"]
    assert sizes["model.int8.onnx"] <= 0.35 * sizes["model.onnx"]
    on_disk = json.load(open(os.path.join(out, "report.json")))
    assert on_disk["ok"] is True and on_disk["files"] == sizes
    assert all(c["ok"] for c in on_disk["fp32_vs_torch"].values())
    assert "onnx|torch" in on_disk["pairs"] and "onnx_int8|torch" in on_disk["pairs"]
    # the edgernn runtime ran every mode it supports on model.ernn and model.int8.ernn
    modes = ["predict"] if bidir else ["predict", "step", "run"]
    for prefix in ("ernn", "ernn_int8"):
        for mode in modes:
            assert f"{prefix}_{mode}|torch" in on_disk["pairs"], (prefix, mode)
    assert all(f"ernn_{mode}" in on_disk["fp32_vs_torch"] for mode in modes)


@pytest.mark.parametrize("kind", [*KINDS, "esn", "esn_extended"])
def test_ernn_against_the_numpy_reference_and_runtime(exported, kind):
    """model.ernn through tests/reference.py (numpy, ONNX semantics) and the runtime equals torch."""
    from reference import reference_predict

    import edgernn

    m, out, _ = exported(kind)
    plan, tensors = artifact.read(os.path.join(out, "model.ernn"))
    X = _example(m, T=8)
    e = _torch(m, X)
    Xr = X[..., None] if X.ndim == 2 else X
    ref = np.stack([reference_predict(plan, tensors, x) for x in Xr])
    model = edgernn.load(os.path.join(out, "model.ernn"))
    got = model.predict(Xr)
    if not m.many_to_many:
        ref = ref[:, -1]
    _assert_close(ref, e)
    _assert_close(got, e)
    if kind != "bidirectional":
        s = model.stream()
        ys = np.stack([s.step(x) for x in Xr[0]])
        _assert_close(ys[-1] if not m.many_to_many else ys, e[0])
    else:
        with pytest.raises(edgernn.EdgeRNNError, match="predict"):
            model.stream()


def test_int8_formulations(exported):
    """ORT's quantizer turns LSTM into DynamicQuantizeLSTM; GRU/RNN models get the MatMul form, quantized."""

    def ops(path):
        found = set()

        def walk(g):
            for n in g.node:
                found.add(n.op_type)
                for a in n.attribute:
                    if a.type == a.GRAPH:
                        walk(a.g)

        walk(onnx.load(path).graph)
        return found

    _, out, _ = exported("lstm")
    assert "DynamicQuantizeLSTM" in ops(os.path.join(out, "model.int8.onnx"))
    for kind in ("gru", "rnn_tanh", "esn"):
        _, out, _ = exported(kind)
        for f in ("model.int8.onnx", "model.step.int8.onnx"):
            found = ops(os.path.join(out, f))
            assert "MatMulInteger" in found and not found & {"GRU", "RNN"}, (kind, f, found)


def test_exported_gru_has_linear_before_reset(exported):
    _, out, _ = exported("gru")
    grus = [n for n in onnx.load(os.path.join(out, "model.onnx")).graph.node if n.op_type == "GRU"]
    assert grus and all([a.i for a in n.attribute if a.name == "linear_before_reset"] == [1] for n in grus)


# ------------------------------------------------------------ the .ernn layout against the ONNX spec


def _onnx_node_model(kind, layer, tensors, T_in):
    from onnx import TensorProto, helper, numpy_helper

    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[kind]
    t = layer["tensors"]
    inits = [numpy_helper.from_array(np.asarray(tensors[t[r]], np.float32), r) for r in ("W", "R", "B")]
    attrs = dict(hidden_size=layer["hidden_size"], direction=layer["direction"])
    if kind == "gru":
        attrs["linear_before_reset"] = 1
    if kind == "rnn":
        attrs["activations"] = [a.capitalize() for a in layer["activations"]]
    n_out = 3 if kind == "lstm" else 2
    node = helper.make_node(op, ["X", "W", "R", "B"], ["Y"] + [f"o{i}" for i in range(n_out - 1)], **attrs)
    g = helper.make_graph(
        [node], "g", [helper.make_tensor_value_info("X", TensorProto.FLOAT, [None, None, T_in])],
        [helper.make_tensor_value_info("Y", TensorProto.FLOAT, None)], initializer=inits,
    )  # fmt: skip
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])


@pytest.mark.parametrize("cls, kw", [(nn.LSTM, {}), (nn.GRU, {}), (nn.RNN, {"nonlinearity": "relu"})])
def test_ernn_weights_are_in_onnx_operator_layout(tmp_path, cls, kw):
    """A hand-built ONNX node fed the .ernn tensors reproduces torch's layer (gate order, biases)."""
    torch.manual_seed(4)
    rnn = cls(5, 6, batch_first=True, bidirectional=True, **kw).eval()

    class M(nn.Module):
        def __init__(self):
            super().__init__()
            self.rnn, self.out = rnn, nn.Linear(12, 2)

        def forward(self, x):
            return self.out(self.rnn(x)[0])

    X = np.random.default_rng(0).normal(size=(3, 7, 5)).astype(np.float32)
    export(M(), tmp_path, X)
    plan, tensors = artifact.read(tmp_path / "model.ernn")
    layer = artifact.chain_layers(plan)[0]
    model = _onnx_node_model(layer["kind"], layer, tensors, 5)
    Y = ort.InferenceSession(model.SerializeToString()).run(None, {"X": X.transpose(1, 0, 2).copy()})[0]
    got = Y.transpose(2, 0, 1, 3).reshape(3, 7, 12)  # (T, D, B, H) -> (B, T, D*H)
    with torch.no_grad():
        _assert_close(got, rnn(torch.from_numpy(X))[0].numpy())


def test_int8_ernn_rows(exported):
    _, out, _ = exported("gru")
    plan, tensors = artifact.read(os.path.join(out, "model.ernn"))
    qplan, qt = artifact.read(os.path.join(out, "model.int8.ernn"))
    assert qplan["quantization"] == "int8"
    for layer, qlayer in zip(artifact.chain_layers(plan), artifact.chain_layers(qplan), strict=True):
        for role in ("W", "R"):
            if role not in layer["tensors"] or layer["kind"] == "dense" and role == "R":
                continue
            w = tensors[layer["tensors"][role]].astype(np.float64)
            q = qt[qlayer["tensors"][role]]
            s = qt[qlayer["tensors"][role + "_scale"]]
            assert q.dtype == np.int8 and s.shape == w.shape[:-1]
            # symmetric per row: the largest |w| of each row maps to 127, every error is at most half a step
            np.testing.assert_allclose(s, np.abs(w).max(-1) / 127, rtol=1e-6)
            assert np.all(np.abs(q * s[..., None] - w) <= s[..., None] * 0.5 + 1e-7)


def test_esn_sparse_reservoir_as_csr(exported):
    m, out, _ = exported("esn")
    plan, tensors = artifact.read(os.path.join(out, "model.ernn"))
    layer = artifact.chain_layers(plan)[0]
    assert layer["sparse"] and layer["nnz"] == int(np.count_nonzero(m.W.numpy()))
    t = layer["tensors"]
    dense = np.zeros((200, 200), np.float32)
    ptr = tensors[t["W_indptr"]]
    for r in range(200):
        dense[r, tensors[t["W_indices"]][ptr[r] : ptr[r + 1]]] = tensors[t["W_data"]][ptr[r] : ptr[r + 1]]
    np.testing.assert_array_equal(dense, m.W.numpy())


# ------------------------------------------------------------------------------------- user modules


class BatchFirstLSTM(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(4, 16, num_layers=2, batch_first=True)
        self.fc1 = nn.Linear(16, 8)
        self.fc2 = nn.Linear(8, 3)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.softmax(self.fc2(torch.relu(self.fc1(out[:, -1]))), dim=-1)


class TimeFirstGRU(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(4, 16)
        self.act = nn.Tanh()
        self.head = nn.Linear(16, 2)

    def forward(self, x):  # (time, batch, features)
        out, _ = self.gru(x)
        return self.head(self.act(out))


class TokenRNN(nn.Module):
    def __init__(self):
        super().__init__()
        self.emb = nn.Embedding(12, 6)
        self.rnn = nn.RNN(6, 10, batch_first=True, nonlinearity="relu")
        self.out = nn.Linear(10, 12)

    def forward(self, ids):
        return self.out(self.rnn(self.emb(ids))[0])


@pytest.mark.parametrize("cls", [BatchFirstLSTM, TimeFirstGRU, TokenRNN])
def test_user_modules(tmp_path, cls):
    torch.manual_seed(5)
    m = cls().eval()
    rng = np.random.default_rng(2)
    tokens = cls is TokenRNN
    X = rng.integers(0, 12, (2, 9)) if tokens else rng.normal(size=(2, 9, 4)).astype(np.float32)
    report = export(m, tmp_path, X, quantize="int8")
    assert report["ok"]
    with torch.no_grad():
        Xt = torch.from_numpy(X)
        e = (m(Xt.transpose(0, 1)).transpose(0, 1) if cls is TimeFirstGRU else m(Xt)).numpy()
    # every exported file takes batch-first inputs, also for a time-first module
    _assert_close(ort.InferenceSession(str(tmp_path / "model.onnx")).run(None, {"input": X})[0], e)
    _assert_close(_step_loop(str(tmp_path / "model.step.onnx"), X, cls is BatchFirstLSTM), e)
    plan, _ = artifact.read(tmp_path / "model.ernn")
    kinds = [lay["kind"] for lay in artifact.chain_layers(plan)]
    expected = {
        BatchFirstLSTM: ["lstm", "lstm", "dense", "dense"],
        TimeFirstGRU: ["gru", "activation", "dense"],
        TokenRNN: ["embedding", "rnn", "dense"],
    }[cls]
    assert kinds == expected
    if cls is BatchFirstLSTM:
        assert [lay.get("activation") for lay in artifact.chain_layers(plan)[2:]] == ["relu", "softmax"]
        assert plan["output"]["sequence"] == "many_to_one"


def test_unsupported_module_is_named():
    class WithConv(nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = nn.Conv1d(4, 4, 3)
            self.gru = nn.GRU(4, 8, batch_first=True)

        def forward(self, x):
            return self.gru(self.conv(x.transpose(1, 2)).transpose(1, 2))[0]

    with pytest.raises(UnsupportedModuleError, match="Conv1d"):
        describe(WithConv(), example_output_ndim=3)


def test_parity_failure_is_loud(tmp_path):
    """A forward the exporter cannot see (a scale between layers) must fail the export, not pass silently."""

    class Hidden(nn.Module):
        def __init__(self):
            super().__init__()
            self.gru = nn.GRU(3, 8, batch_first=True)
            self.fc = nn.Linear(8, 2)

        def forward(self, x):
            return self.fc(2.0 * self.gru(x)[0])

    X = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    with pytest.raises(ExportParityError, match="disagree with torch"):
        export(Hidden().eval(), tmp_path, X)
    assert sorted(os.listdir(tmp_path)) == ["report.failed.json"]  # no model files of a failed export
    report = json.load(open(tmp_path / "report.failed.json"))
    assert report["ok"] is False and "onnx_step" in report["failure"]
    # the module's own nn.Linear output (seen by a forward hook) is where it first differs from the plan
    assert "first divergence: layer 1 ('dense0', dense)" in report["failure"]


def test_divergence_is_located_at_the_changed_layer(tmp_path):
    """locate_divergence names the first layer whose plan output differs from torch's stage output."""
    from edgernn.export import parity

    torch.manual_seed(6)
    m = SequenceModel("gru", 3, 8, 2, num_layers=3, many_to_many=True).eval()
    desc = describe(m)
    bad = dict(desc.tensors)
    name = desc.plan["layers"][1]["tensors"]["R"]
    bad[name] = bad[name] * 1.5  # layer 1 ('gru1') now computes something else
    desc.tensors = bad
    X = np.random.default_rng(0).normal(size=(2, 6, 3)).astype(np.float32)
    msg = parity.locate_divergence(desc, X, "onnx", str(tmp_path))
    assert msg.startswith("layer 1 ('gru1', gru)")


def test_many_to_one_step_is_the_prediction_so_far(exported):
    m, out, report = exported("attention")
    X = _example(m, T=6)
    Y = _step_loop(os.path.join(out, "model.step.onnx"), X, many_to_one=False)
    for t in range(6):
        _assert_close(Y[:, t], _torch(m, X[:, : t + 1]))
    assert all(c["ok"] for c in report["step_so_far_vs_torch_prefixes"].values())


def test_export_rejects_bad_example(tmp_path):
    m = SequenceModel("gru", 3, 4, 2)
    with pytest.raises(ValueError, match=r"\(batch, time, features\)"):
        export(m, tmp_path, np.zeros((5, 3), np.float32))
    with pytest.raises(ValueError, match="quantize"):
        export(m, tmp_path, np.zeros((1, 5, 3), np.float32), quantize="int4")


@pytest.mark.parametrize("kind", ["rnn_tanh", "lstm", "gru", "stacked", "tokens_embedding"])
def test_compiled_and_directly_mapped_artifacts_agree(exported, kind):
    """With the ONNX compiler present, model.ernn comes from model.onnx; the torch mapping must agree."""
    pytest.importorskip("edgernn.export.onnx")
    import edgernn

    if not hasattr(edgernn, "load"):
        pytest.skip("the edgernn runtime is not available")
    m, out, report = exported(kind)
    if "ernn_torch_predict" not in report["backends"]:
        pytest.skip("compile_onnx did not handle this model: " + "; ".join(report["notes"]))
    # independent of the report: compile model.onnx again and compare with the torch mapping in the runtime
    from edgernn.export import compile_onnx

    compiled = os.path.join(out, "recompiled.ernn")
    compile_onnx(os.path.join(out, "model.onnx"), compiled)
    d = describe(m)
    direct = os.path.join(out, "direct.ernn")
    artifact.write(direct, d.plan, d.tensors)
    X = _example(m, T=7)
    a = edgernn.load(compiled).predict(X[..., None] if X.ndim == 2 else X)
    b = edgernn.load(direct).predict(X[..., None] if X.ndim == 2 else X)
    _assert_close(a, b)
    _assert_close(b, _torch(m, X))


@pytest.mark.parametrize("kind", ["lstm", "esn"])
def test_calibrated_int8_export_is_closer_to_torch_on_held_out_data(tmp_path, kind):
    """export(..., calibration=...) : the int8 .ernn error against PyTorch on sequences the calibration
    never saw is lower than with nearest rounding (LSTM: compiled from ONNX; ESN: mapped from torch)."""
    from edgernn import train

    torch.manual_seed(0)
    t = np.arange(400) * 0.1
    rng = np.random.default_rng(0)
    ph = rng.uniform(0, 2 * np.pi, (48, 1))
    seqs = np.stack([np.sin(t[:40] + p) + 0.5 * np.sin(2.7 * t[:40] + 2 * p) for p in ph[:, 0]])[..., None]
    X, held_out = seqs[:32].astype(np.float32), seqs[32:].astype(np.float32)
    if kind == "lstm":
        m = SequenceModel("lstm", 1, 24, 1, many_to_many=True)
        train.fit(m, X[:, :-1], X[:, 1:], loss="mse", epochs=3, lr=0.01, progress=False)
    else:
        m = ESN(1, 60, 1, leak_rate=0.5, seed=0).fit(X[:, :-1], X[:, 1:], washout=5)
    with torch_reference():
        ref = m(torch.from_numpy(held_out)).numpy()
    errs = {}
    for tag, cal in (("nearest", None), ("calibrated", X)):
        export(m, tmp_path / tag, X[:2], quantize="int8", calibration=cal, max_error=float("inf"))
        q = artifact.read(tmp_path / tag / "model.int8.ernn")[0]["quantization_rounding"]
        assert q["method"] == ("gptq" if cal is not None else "nearest")
        y = edgernn.load(tmp_path / tag / "model.int8.ernn").predict(held_out)
        errs[tag] = float(np.sqrt(np.mean((y - ref) ** 2)))
    assert errs["calibrated"] < 0.7 * errs["nearest"], errs
