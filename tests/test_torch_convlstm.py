"""DeepConvLSTM-style PyTorch models (causal Conv1d [+BatchNorm1d] + ReLU over time -> LSTM -> Linear)
through ``edgernn export``: the ``.ernn``'s ``predict``/``run``/``step`` against PyTorch and ONNX Runtime.

Oracles: the torch module (on the whole sequence, and on every prefix for the streamed prediction so far),
ONNX Runtime on the exported ``model.onnx`` (torch's own ONNX export) and on ``model.step.onnx`` with its
state fed back. Non-streamable convolutions are refused with a message saying why and what to change.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

import torch.nn.functional as F  # noqa: E402
from edgernn.export import export  # noqa: E402
from edgernn.export.from_torch import UnsupportedModuleError, describe  # noqa: E402
from edgernn.export.onnx import CompileError, compile_onnx  # noqa: E402
from torch import nn  # noqa: E402

import edgernn  # noqa: E402
from edgernn import models  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
ROOT = Path(__file__).resolve().parent.parent


def close(a, e) -> bool:
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    return a.shape == e.shape and bool(np.all(np.abs(a - e) <= ATOL + RTOL * np.abs(e)))


class ConvLSTM(nn.Module):
    """Conv(k3, d2) -> BN -> ReLU -> Conv(k3) -> ReLU -> BN (not foldable) -> LSTM -> Linear on the last step;
    ``pad`` (left, right) of the time axis before each convolution, ``padding`` the convolutions' own."""

    def __init__(self, pad=(4, 0), pad2=(2, 0), padding=0, many_to_many=False):
        super().__init__()
        self.pad, self.pad2, self.m2m = pad, pad2, many_to_many
        self.c1 = nn.Conv1d(5, 8, 3, dilation=2, padding=padding)
        self.bn1 = nn.BatchNorm1d(8)
        self.c2 = nn.Conv1d(8, 8, 3)
        self.bn2 = nn.BatchNorm1d(8)
        self.lstm = nn.LSTM(8, 12, batch_first=True)
        self.head = nn.Linear(12, 3)
        g = torch.Generator().manual_seed(3)
        with torch.no_grad():  # eval-mode statistics far from (0, 1): a wrong fold cannot pass
            for bn in (self.bn1, self.bn2):
                bn.running_mean.copy_(torch.rand(8, generator=g) * 2 - 1)
                bn.running_var.copy_(torch.rand(8, generator=g) * 3 + 0.2)
                bn.weight.copy_(torch.rand(8, generator=g) + 0.5)
                bn.bias.copy_(torch.rand(8, generator=g) - 0.5)

    def forward(self, x):  # (B, T, 5)
        z = x.transpose(1, 2)
        if self.pad:
            z = F.pad(z, self.pad)
        z = torch.relu(self.bn1(self.c1(z)))
        z = self.bn2(torch.relu(self.c2(F.pad(z, self.pad2))))
        out = self.lstm(z.transpose(1, 2))[0]
        return self.head(out if self.m2m else out[:, -1])


def _torch(m, X: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return m(torch.from_numpy(X)).numpy()


@pytest.fixture(scope="module")
def exported(tmp_path_factory):
    torch.manual_seed(0)
    m = ConvLSTM().eval()
    out = tmp_path_factory.mktemp("convlstm")
    ex = np.random.default_rng(0).normal(size=(2, 12, 5)).astype(np.float32)
    report = export(m, out, ex)
    return m, out, report


def test_export_report_and_plan(exported):
    """The parity proof passed; the first BatchNorm1d is folded into its convolution, the second (after a
    ReLU) is an affine layer; both convolutions are streamed tconv layers with their history as state."""
    m, out, report = exported
    assert report["ok"] and report["model"]["streamable"]
    assert [ly["kind"] for ly in report["model"]["layers"]] == ["tconv", "tconv", "affine", "lstm", "dense"]
    for name in ("model.onnx", "model.step.onnx", "model.ernn", "report.json"):
        assert (out / name).is_file(), name
    assert all(c["ok"] for c in report["fp32_vs_torch"].values())
    desc = describe(m, example_output_ndim=2)
    assert [ly.get("dilation") for ly in desc.plan["layers"][:2]] == [2, 1]


def test_ernn_predict_run_step_match_torch_and_ort(exported):
    """predict, run (in two chunks) and step-by-step streaming equal torch and ORT on the whole sequence;
    every step's output equals torch on the prefix seen so far (the streamed prediction)."""
    m, out, _ = exported
    X = np.random.default_rng(1).normal(size=(3, 23, 5)).astype(np.float32)
    want = _torch(m, X)
    sess = ort.InferenceSession(str(out / "model.onnx"), providers=["CPUExecutionProvider"])
    got_ort = sess.run(None, {sess.get_inputs()[0].name: X})[0]
    assert close(got_ort, want)
    model = edgernn.load(out / "model.ernn")
    assert close(model.predict(X), want)
    for b in range(len(X)):
        s = model.stream()
        steps = np.stack([s.step(x) for x in X[b]])
        prefixes = np.stack([_torch(m, X[b : b + 1, : t + 1])[0] for t in range(X.shape[1])])
        assert close(steps, prefixes), b
        assert close(steps[-1], got_ort[b])
        s2 = model.stream()
        s2.run(X[b, :9])
        assert close(s2.run(X[b, 9:])[-1], want[b])
        s.reset()  # reset empties the convolutions' history
        assert close(s.step(X[b, 0]), prefixes[0])


def test_step_onnx_with_state_fed_back_matches_sequence(exported):
    """model.step.onnx (state in -> state out, the convolution history included) run by ORT step by step
    equals ORT on model.onnx for every prefix's last output."""
    m, out, _ = exported
    X = np.random.default_rng(2).normal(size=(1, 15, 5)).astype(np.float32)
    step = ort.InferenceSession(str(out / "model.step.onnx"), providers=["CPUExecutionProvider"])
    ins = step.get_inputs()
    assert any(".hist" in i.name for i in ins)
    st = {i.name: np.zeros((1, i.shape[1]), np.float32) for i in ins if i.name != "x"}
    ys = []
    for x in X[0]:
        res = step.run(None, {"x": x[None], **st})
        ys.append(res[0][0])
        st = dict(zip(st, res[1:], strict=True))
    prefixes = np.stack([_torch(m, X[:, : t + 1])[0] for t in range(X.shape[1])])
    assert close(np.stack(ys), prefixes)


def test_step_onnx_compiles_and_streams_like_ort(exported, tmp_path):
    """edgernn's own model.step.onnx (the convolution histories read by Concat(hist, x) -> MatMul: state
    slots; the LSTM's h/c: its recurrent state) compiles; step, run, streams(n) and the numpy backend
    equal ONNX Runtime running the step graph with its state fed back."""
    _, out, _ = exported
    res = compile_onnx(out / "model.step.onnx", tmp_path / "step.ernn")
    kinds = [op["kind"] for op in res["plan"]["ops"]]
    assert kinds.count("state") == 2 and "lstm" in kinds
    X = np.random.default_rng(4).normal(size=(17, 11, 5)).astype(np.float32)
    step = ort.InferenceSession(str(out / "model.step.onnx"), providers=["CPUExecutionProvider"])
    ins = [i.name for i in step.get_inputs()]
    pairs = dict(res["state_pairs"])
    outs = [o.name for o in step.get_outputs()]
    want = np.zeros((17, 11, 3), np.float32)
    for b in range(17):
        st = {
            i: np.zeros((1, step.get_inputs()[k].shape[1]), np.float32) for k, i in enumerate(ins) if i != "x"
        }
        for t in range(11):
            r = dict(zip(outs, step.run(None, {"x": X[b, t][None], **st}), strict=True))
            want[b, t] = r["y"][0]
            st = {i: r[pairs[i]] for i in st}
    for backend in ("numba", "numpy"):
        m = edgernn.load(tmp_path / "step.ernn", backend=backend)
        s = m.stream()
        assert close(np.stack([s.step(x) for x in X[0]]), want[0]), backend
        s2 = m.stream()
        assert close(np.concatenate([s2.run(X[1, :4]), s2.run(X[1, 4:])]), want[1]), backend
        many = m.streams(17)
        assert close(np.stack([many.step(X[:, t]) for t in range(11)], 1), want), backend


def test_many_to_many_streams(tmp_path):
    """A per-step head: step over the sequence equals torch's output sequence."""
    torch.manual_seed(1)
    m = ConvLSTM(many_to_many=True).eval()
    X = np.random.default_rng(3).normal(size=(2, 10, 5)).astype(np.float32)
    assert export(m, tmp_path, X)["ok"]
    s = edgernn.load(tmp_path / "model.ernn").stream()
    assert close(np.stack([s.step(x) for x in X[0]]), _torch(m, X)[0])


class LayerNormGRU(nn.Module):
    """LayerNorm on the input features -> GRU -> LayerNorm -> Linear per step."""

    def __init__(self):
        super().__init__()
        self.ln, self.gru, self.ln2, self.head = (
            nn.LayerNorm(5),
            nn.GRU(5, 12, batch_first=True),
            nn.LayerNorm(12),
            nn.Linear(12, 2),
        )
        with torch.no_grad():
            self.ln.weight.uniform_(0.5, 1.5)
            self.ln.bias.uniform_(-1, 1)

    def forward(self, x):
        return self.head(self.ln2(self.gru(self.ln(x))[0]))


class BatchNormConvGRU(nn.Module):
    """Causal Conv1d (k4) -> BatchNorm1d (folded) -> ReLU -> GRU -> Linear on the last step."""

    def __init__(self):
        super().__init__()
        self.c, self.bn, self.gru, self.head = (
            nn.Conv1d(5, 8, 4),
            nn.BatchNorm1d(8),
            nn.GRU(8, 12, batch_first=True),
            nn.Linear(12, 2),
        )
        with torch.no_grad():
            self.bn.running_mean.uniform_(-1, 1)
            self.bn.running_var.uniform_(0.5, 2)

    def forward(self, x):
        z = torch.relu(self.bn(self.c(F.pad(x.transpose(1, 2), (3, 0)))))
        return self.head(self.gru(z.transpose(1, 2))[0][:, -1])


@pytest.mark.parametrize(
    "cls, kinds",
    [
        (LayerNormGRU, ["layernorm", "gru", "layernorm", "dense"]),
        (BatchNormConvGRU, ["tconv", "gru", "dense"]),
    ],
)
def test_layernorm_gru_and_batchnorm_conv_gru_export_and_stream(tmp_path, cls, kinds):
    """Both pass the parity proof; streaming step by step equals torch on every prefix (many-to-one) or
    on the whole sequence (many-to-many)."""
    torch.manual_seed(2)
    m = cls().eval()
    report = export(m, tmp_path, np.random.default_rng(4).normal(size=(2, 9, 5)).astype(np.float32))
    assert report["ok"] and [ly["kind"] for ly in report["model"]["layers"]] == kinds
    X = np.random.default_rng(5).normal(1.0, 2.0, size=(1, 14, 5)).astype(np.float32)
    s = edgernn.load(tmp_path / "model.ernn").stream()
    steps = np.stack([s.step(x) for x in X[0]])
    if cls is LayerNormGRU:
        assert close(steps, _torch(m, X)[0])
    else:
        assert close(steps, np.stack([_torch(m, X[:, : t + 1])[0] for t in range(X.shape[1])]))


@pytest.mark.parametrize(
    "kw, words",
    [
        (dict(pad=None, padding=2), ["future", "F.pad(z, (4, 0))"]),  # centred: nn.Conv1d(padding=2)
        (dict(pad=(2, 2)), ["future", "F.pad(z, (4, 0))"]),  # centred by hand
        (dict(pad=None), ["valid", "shorter", "F.pad(z, (4, 0))"]),  # padding=0, no left pad
        (dict(pad=(2, 0)), ["exactly 4", "F.pad(z, (4, 0))"]),  # too little history
    ],
)
def test_non_streamable_convolution_refused(tmp_path, kw, words):
    """Non-causal convolutions are refused before anything is written, saying why and what to change."""
    m = ConvLSTM(**kw).eval()
    out = tmp_path / "out"
    with pytest.raises(UnsupportedModuleError) as e:
        export(m, out, np.zeros((1, 12, 5), np.float32))
    msg = str(e.value)
    assert "not streamable" in msg
    for w in words:
        assert w in msg, (w, msg)
    assert not out.exists() or not any(out.iterdir())


def test_same_padding_and_stride_refused():
    conv = nn.Conv1d(5, 8, 3, padding="same")
    m = type(
        "M", (nn.Module,), {"forward": lambda self, x: self.l(self.c(x.transpose(1, 2)).transpose(1, 2))}
    )()
    m.c, m.l = conv, nn.LSTM(8, 4, batch_first=True)
    with pytest.raises(UnsupportedModuleError, match="padding='same'.*future"):
        describe(m, example_output_ndim=3)
    m.c = nn.Conv1d(5, 8, 3, stride=2)
    with pytest.raises(UnsupportedModuleError, match="stride 1"):
        describe(m, example_output_ndim=3)


def test_compile_refuses_centred_onnx_conv(tmp_path):
    """``edgernn compile`` of torch's ONNX of a centred convolution: the same reason and fix."""
    m = ConvLSTM(pad=None, padding=2).eval()
    p = tmp_path / "m.onnx"
    torch.onnx.export(m, (torch.zeros(1, 9, 5),), str(p), dynamo=False, opset_version=17,
                      input_names=["x"], dynamic_axes={"x": {0: "b", 1: "t"}})  # fmt: skip
    with pytest.raises(CompileError, match=r"future step.*F\.pad\(z, \(4, 0\)\)"):
        compile_onnx(str(p), str(tmp_path / "m.ernn"))


def test_builtin_deepconvlstm_trains_saves_and_exports_by_cli(tmp_path):
    """models.deepconvlstm trains through train.fit (loss falls on BasicMotions), round-trips a checkpoint,
    and ``edgernn export CKPT -o OUT`` writes files whose stream equals the torch model."""
    sys.path.insert(0, str(ROOT / "examples"))
    from imu_activity import read_ts

    from edgernn import train

    X, y, classes = read_ts(str(ROOT / "examples" / "data" / "BasicMotions" / "BasicMotions_TRAIN.ts"))
    X = X[:, ::4]  # 25 samples per case: a quick fit
    mean, std = X.reshape(-1, 6).mean(0), X.reshape(-1, 6).std(0) + 1e-6
    torch.manual_seed(0)
    m = models.deepconvlstm(6, 4, (8, 8), 3, 16, input_mean=mean, input_std=std, labels=classes)
    threads = torch.get_num_threads()
    torch.set_num_threads(1)  # small batches: threads only contend
    try:
        hist = train.fit(m, X, y, loss="cross_entropy", lr=0.01, epochs=8, batch_size=8, progress=False)
    finally:
        torch.set_num_threads(threads)
    assert hist["loss"][-1] < 0.8 * hist["loss"][0]
    m.eval()
    ckpt = tmp_path / "dcl.safetensors"
    models.save(m, ckpt)
    m2 = models.load(ckpt)
    assert m2.config["conv_channels"] == [8, 8] and m2.config["conv_batchnorm"]
    want = _torch(m, X[:5])
    assert np.array_equal(_torch(m2, X[:5]), want)
    np.save(tmp_path / "ex.npy", X[:2])
    from edgernn.cli import main

    assert (
        main(["export", str(ckpt), "-o", str(tmp_path / "out"), "--example", str(tmp_path / "ex.npy")]) == 0
    )
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ok"] and [ly["kind"] for ly in report["model"]["layers"]][:3] == [
        "normalize",
        "tconv",
        "tconv",
    ]
    s = edgernn.load(tmp_path / "out" / "model.ernn").stream()
    for b in range(len(want)):
        s.reset()
        for x in X[b]:
            yb = s.step(x)
        assert close(yb, want[b])


@pytest.mark.slow
def test_har_convlstm_example(tmp_path):
    """examples/har_convlstm.py --quick: trains, exports (int8 too), streams the test set sample by sample;
    the stream's accuracy equals PyTorch's and its probabilities are within 1e-5 of PyTorch's."""
    script = str(ROOT / "examples" / "har_convlstm.py")
    r = subprocess.run([sys.executable, script, "--quick", "-o", str(tmp_path)],
                       capture_output=True, text=True, timeout=170, cwd=str(ROOT))  # fmt: skip
    assert r.returncode == 0, r.stderr[-3000:]
    res = json.loads(r.stdout)
    assert res == json.loads((tmp_path / "results.json").read_text())
    assert res["parity_ok"]
    acc = res["test_accuracy"]
    assert acc["pytorch"] >= 0.75  # chance is 0.25
    assert acc["edgernn_stream_fp32"] == acc["pytorch"] == acc["onnxruntime_fp32"]
    assert res["stream_fp32_vs_pytorch_max_abs_prob"] <= 1e-5
    assert res["stream_fp32_vs_onnxruntime_max_abs_prob"] <= 1e-5
    assert os.path.isfile(tmp_path / "model.int8.ernn") and os.path.isfile(tmp_path / "model.int8.onnx")


def test_factory_cli_exports_the_examples_module(tmp_path):
    """``edgernn export --factory examples/har_convlstm.py:build --weights W`` (no --example: the random
    example's width is read from the first Conv1d) passes the parity proof; the stream equals torch."""
    sys.path.insert(0, str(ROOT / "examples"))
    from har_convlstm import build
    from safetensors.torch import save_file

    from edgernn.cli import main

    torch.manual_seed(5)
    m = build().eval()
    save_file({k: v.contiguous() for k, v in m.state_dict().items()}, str(tmp_path / "w.safetensors"))
    spec = f"{ROOT / 'examples' / 'har_convlstm.py'}:build"
    args = [
        "export",
        "--factory",
        spec,
        "--weights",
        str(tmp_path / "w.safetensors"),
        "-o",
        str(tmp_path / "o"),
    ]
    assert main([*args, "--time", "12"]) == 0
    assert json.loads((tmp_path / "o" / "report.json").read_text())["ok"]
    X = np.random.default_rng(6).normal(size=(1, 20, 6)).astype(np.float32)
    s = edgernn.load(tmp_path / "o" / "model.ernn").stream()
    for x in X[0]:
        y = s.step(x)
    assert close(y, _torch(m, X)[0])
