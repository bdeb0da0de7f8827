"""Real exports: nn.LSTM/GRU/RNN models exported by both torch exporters (legacy ``dynamo=False`` and
dynamo, with its ``.onnx.data`` side file) compile, and the compiled model reproduces torch (the oracle)
and ONNX Runtime on the same input. Also: a step graph (x_t + state in, y_t + state out) compiles into a
streaming model whose ``step`` follows torch step by step; ORT's int8 model (DynamicQuantizeLSTM +
MatMulInteger) compiles.
"""

from __future__ import annotations

import os
import sys
import warnings

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from compiler_common import input_to_btf, mismatch, output_to_bf, predict  # noqa: E402

from edgernn import artifact as A  # noqa: E402
from edgernn.artifact import chain_layers  # noqa: E402

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")


class SeqNet(torch.nn.Module):
    """A recurrent stack + Linear head, many-to-one (last step or h_n) or many-to-many."""

    def __init__(self, cell, i, h, o, layers=1, bi=False, batch_first=True, mode="last", act="relu"):
        super().__init__()
        cls = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN, "rnn_relu": torch.nn.RNN}[
            cell
        ]
        kw = {"nonlinearity": "relu"} if cell == "rnn_relu" else {}
        self.rnn = cls(i, h, num_layers=layers, bidirectional=bi, batch_first=batch_first, **kw)
        self.fc = torch.nn.Linear(h * (2 if bi else 1) if mode != "h_n" else h, o)
        self.bf, self.mode, self.act, self.cell = batch_first, mode, act, cell

    def forward(self, x):
        y, state = self.rnn(x)
        if self.mode == "last":
            y = y[:, -1] if self.bf else y[-1]
        elif self.mode == "h_n":
            h = state[0] if self.cell == "lstm" else state
            y = h[-1] if self.rnn.bidirectional is False else h[-2]  # last layer, forward direction
        y = self.fc(y)
        if self.act == "relu":
            y = torch.relu(y)
        elif self.act == "softmax":
            y = torch.softmax(y, -1)
        elif self.act == "tanh":
            y = torch.tanh(y)
        return y


def _export(model, x, path, dynamo):
    kw = {}
    if dynamo:
        b, t = torch.export.Dim("b"), torch.export.Dim("t")
        kw["dynamic_shapes"] = ({0: b, 1: t} if model.bf else {0: t, 1: b},)
    else:
        kw["dynamic_axes"] = {"x": {0: "b", 1: "t"} if model.bf else {0: "t", 1: "b"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(model, (x,), path, input_names=["x"], output_names=["y"], dynamo=dynamo, **kw)


def _check(model, tmp, dynamo, t=7, b=3):
    from edgernn.export import compile_onnx

    torch.manual_seed(1)
    i = model.rnn.input_size
    x = torch.randn(b, t, i) if model.bf else torch.randn(t, b, i)
    path = os.path.join(tmp, "m.onnx")
    _export(model, x, path, dynamo)
    res = compile_onnx(path, os.path.join(tmp, "m.ernn"))
    x2 = torch.randn(b + 1, t + 3, i) if model.bf else torch.randn(t + 3, b + 1, i)  # other sizes than traced
    with torch.no_grad():
        ref = model(x2).numpy()
    got = predict(res["path"], input_to_btf(x2.numpy(), res["io"]["input_axes"]))
    exp = output_to_bf(ref, res["io"]["output_axes"])
    msg = mismatch(got, exp)
    assert msg is None, f"vs torch: {msg}"
    # ORT on the traced sizes (a dynamo export may bake the traced sequence length into a Reshape)
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    e2 = output_to_bf(sess.run(None, {"x": x.numpy()})[0], res["io"]["output_axes"])
    got2 = predict(res["path"], input_to_btf(x.numpy(), res["io"]["input_axes"]))
    assert mismatch(got2, e2) is None, f"vs ORT: {mismatch(got2, e2)}"
    return res


LEGACY = [
    ("lstm", dict(layers=2, bi=True, mode="last", act="softmax")),
    ("gru", dict(layers=2, bi=True, mode="last", act="relu")),
    ("rnn", dict(layers=1, bi=False, mode="seq", act="tanh")),
    ("rnn_relu", dict(layers=2, bi=False, mode="last", act="none")),
    ("lstm", dict(layers=1, bi=False, batch_first=False, mode="seq", act="none")),
    ("gru", dict(layers=1, bi=True, batch_first=False, mode="seq", act="relu")),
    ("lstm", dict(layers=2, bi=False, mode="h_n", act="none")),
    ("gru", dict(layers=1, bi=False, mode="h_n", act="tanh")),
    ("lstm", dict(layers=1, bi=True, mode="h_n", act="none")),
]


@pytest.mark.parametrize("cell,kw", LEGACY, ids=[f"{c}-{i}" for i, (c, _) in enumerate(LEGACY)])
def test_legacy_export(cell, kw, tmp_path):
    torch.manual_seed(0)
    model = SeqNet(cell, 4, 6, 3, **kw).eval()
    res = _check(model, str(tmp_path), dynamo=False)
    expect = "many_to_many" if kw.get("mode") == "seq" else "many_to_one"
    assert res["plan"]["output"]["sequence"] == expect


DYNAMO = [
    ("lstm", dict(layers=2, bi=True, mode="last", act="softmax")),
    ("gru", dict(layers=1, bi=False, mode="seq", act="relu")),
    ("lstm", dict(layers=1, bi=False, batch_first=False, mode="seq", act="tanh")),
]


@pytest.mark.parametrize("cell,kw", DYNAMO, ids=[f"{c}-{i}" for i, (c, _) in enumerate(DYNAMO)])
def test_dynamo_export(cell, kw, tmp_path):
    torch.manual_seed(0)
    model = SeqNet(cell, 4, 6, 3, **kw).eval()
    _check(model, str(tmp_path), dynamo=True)


def test_dynamo_unrolled_rnn_is_a_clear_error(tmp_path):
    """torch's dynamo exporter unrolls nn.RNN over time: refused with an error naming the node."""
    from edgernn.export import compile_onnx
    from edgernn.export.onnx import CompileError

    torch.manual_seed(0)
    model = SeqNet("rnn", 4, 6, 3, mode="last").eval()
    path = os.path.join(str(tmp_path), "m.onnx")
    _export(model, torch.randn(2, 5, 4), path, dynamo=True)
    with pytest.raises(CompileError, match="node .*unrolled over time"):
        compile_onnx(path, os.path.join(str(tmp_path), "m.ernn"))


class StepNet(torch.nn.Module):
    """One step: (x_t [B, I], h [L, B, H], c [L, B, H]) -> (y_t [B, O], h', c')."""

    def __init__(self, i=4, h=8, o=2, layers=2):
        super().__init__()
        self.lstm = torch.nn.LSTM(i, h, num_layers=layers, batch_first=True)
        self.fc = torch.nn.Linear(h, o)

    def forward(self, x, h, c):
        y, (h2, c2) = self.lstm(x.unsqueeze(1), (h, c))
        return torch.tanh(self.fc(y[:, 0])), h2, c2


@pytest.mark.parametrize("dynamo", [False, True])
def test_step_graph_streams_like_torch(dynamo, tmp_path):
    from edgernn.export import compile_onnx

    import edgernn

    torch.manual_seed(0)
    net = StepNet().eval()
    h0, c0 = torch.zeros(2, 1, 8), torch.zeros(2, 1, 8)
    path = os.path.join(str(tmp_path), "step.onnx")
    kw = {}
    if not dynamo:
        kw["dynamic_axes"] = {"x": {0: "b"}, "h": {1: "b"}, "c": {1: "b"}}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(1, 4), h0, c0),
            path,
            input_names=["x", "h", "c"],
            output_names=["y", "h_out", "c_out"],
            dynamo=dynamo,
            **kw,
        )
    res = compile_onnx(path, os.path.join(str(tmp_path), "step.ernn"))
    assert sorted(res["state_inputs"]) == ["c", "h"]
    s = edgernn.load(res["path"]).stream()
    xs = torch.randn(12, 1, 4)
    h, c = h0, c0
    for t in range(12):
        with torch.no_grad():
            y, h, c = net(xs[t], h, c)
        got = s.step(xs[t, 0].numpy())
        assert mismatch(got, y[0].numpy()) is None, f"step {t}"


def test_ort_int8_lstm_compiles(tmp_path):
    """ORT's quantize_dynamic output (DynamicQuantizeLSTM + DynamicQuantizeLinear/MatMulInteger) compiles;
    the float compile matches ORT's int8 model within ORT's own activation-quantization error, and the
    int8 compile keeps ORT's int8 weights exactly."""
    from edgernn.export import compile_onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    from edgernn import artifact

    torch.manual_seed(0)
    model = SeqNet("lstm", 4, 16, 3, layers=1, bi=True, mode="last", act="none").eval()
    f32 = os.path.join(str(tmp_path), "m.onnx")
    q8 = os.path.join(str(tmp_path), "m.int8.onnx")
    _export(model, torch.randn(2, 6, 4), f32, dynamo=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        # 7-bit weights (reduce_range): ORT's u8s8 int8 kernels on x86 without VNNI saturate the int16
        # sums of weight pairs, which makes the oracle itself off by ~0.03 there
        quantize_dynamic(f32, q8, weight_type=QuantType.QInt8, reduce_range=True)
    ops = {n.op_type for n in onnx.load(q8).graph.node}
    assert "DynamicQuantizeLSTM" in ops and "MatMulInteger" in ops
    x = np.random.default_rng(0).normal(size=(3, 9, 4)).astype(np.float32)
    ort_q = ort.InferenceSession(q8, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    res = compile_onnx(q8, os.path.join(str(tmp_path), "q.ernn"))
    got = predict(res["path"], x)
    # ORT also quantizes the activations to uint8 at run time; edgernn keeps them float
    assert np.max(np.abs(got - ort_q)) < 0.02 * max(1.0, float(np.max(np.abs(ort_q))))
    res8 = compile_onnx(q8, os.path.join(str(tmp_path), "q8.ernn"), quantize="int8")
    plan, tensors = artifact.read(res8["path"])
    lstm = chain_layers(plan)[0]
    wq = tensors[lstm["tensors"]["W"]]
    assert wq.dtype == np.int8
    src = {t.name: onnx.numpy_helper.to_array(t) for t in onnx.load(q8).graph.initializer}
    qname = next(n for n in src if n.endswith("_quantized") and src[n].ndim == 3 and src[n].shape[1] == 4)
    np.testing.assert_array_equal(wq, np.transpose(src[qname], (0, 2, 1)))
    got8 = predict(res8["path"], x)
    assert mismatch(got8, got, atol=1e-4, rtol=1e-3) is None


class TokenNet(torch.nn.Module):
    """Token ids [B, T] -> Embedding or one-hot -> GRU -> Linear per step."""

    def __init__(self, vocab=13, onehot=False):
        super().__init__()
        self.vocab, self.onehot = vocab, onehot
        self.emb = torch.nn.Embedding(vocab, 5)
        self.rnn = torch.nn.GRU(vocab if onehot else 5, 6, batch_first=True)
        self.fc = torch.nn.Linear(6, 2)

    def forward(self, ids):
        x = torch.nn.functional.one_hot(ids, self.vocab).float() if self.onehot else self.emb(ids)
        return self.fc(self.rnn(x)[0])


@pytest.mark.parametrize("onehot", [False, True])
def test_token_models(onehot, tmp_path):
    from edgernn.export import compile_onnx

    torch.manual_seed(0)
    net = TokenNet(onehot=onehot).eval()
    ids = torch.randint(0, 13, (3, 8))
    path = os.path.join(str(tmp_path), "tok.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (ids,),
            path,
            input_names=["ids"],
            output_names=["y"],
            dynamo=False,
            dynamic_axes={"ids": {0: "b", 1: "t"}},
        )
    res = compile_onnx(path, os.path.join(str(tmp_path), "tok.ernn"))
    assert A.chain_plan(res["plan"])["input"] == {"kind": "tokens", "size": 1, "vocab_size": 13}
    assert chain_layers(res["plan"])[0]["kind"] == ("onehot" if onehot else "embedding")
    ids2 = torch.randint(0, 13, (2, 11))
    with torch.no_grad():
        ref = net(ids2).numpy()
    got = predict(res["path"], ids2.numpy()[..., None].astype(np.float32))
    assert mismatch(got, ref) is None


@pytest.mark.parametrize("opset", [9, 11, 13, 20])
def test_legacy_export_opsets(opset, tmp_path):
    """Older opsets (Squeeze/Unsqueeze/Slice attributes, opset < 13 Softmax) compile the same."""
    from edgernn.export import compile_onnx

    torch.manual_seed(0)
    model = SeqNet("lstm", 4, 6, 3, layers=2, bi=True, mode="last", act="softmax").eval()
    x = torch.randn(3, 7, 4)
    path = os.path.join(str(tmp_path), "m.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            model,
            (x,),
            path,
            input_names=["x"],
            output_names=["y"],
            dynamo=False,
            opset_version=opset,
            dynamic_axes={"x": {0: "b", 1: "t"}},
        )
    res = compile_onnx(path, os.path.join(str(tmp_path), "m.ernn"))
    x2 = torch.randn(2, 9, 4)
    with torch.no_grad():
        ref = model(x2).numpy()
    assert mismatch(predict(res["path"], x2.numpy()), ref) is None


@pytest.mark.parametrize("weight_type,per_channel", [("QUInt8", False), ("QUInt8", True), ("QInt8", True)])
def test_ort_quantized_variants(weight_type, per_channel, tmp_path):
    """uint8 weights with zero points and per-channel scales dequantize correctly: the compiled model
    matches the float32 model within the weight-quantization error ORT itself shows."""
    from edgernn.export import compile_onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    torch.manual_seed(0)
    model = SeqNet("lstm", 4, 16, 3, layers=1, bi=True, mode="last", act="none").eval()
    f32 = os.path.join(str(tmp_path), "m.onnx")
    q8 = os.path.join(str(tmp_path), "m.int8.onnx")
    _export(model, torch.randn(2, 6, 4), f32, dynamo=False)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        quantize_dynamic(f32, q8, weight_type=getattr(QuantType, weight_type), per_channel=per_channel)
    x = np.random.default_rng(0).normal(size=(3, 9, 4)).astype(np.float32)
    ref = ort.InferenceSession(f32, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    ort_q = ort.InferenceSession(q8, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    got = predict(compile_onnx(q8, os.path.join(str(tmp_path), "q.ernn"))["path"], x)
    ort_err = float(np.max(np.abs(ort_q - ref)))
    assert np.max(np.abs(got - ref)) <= 2 * ort_err + 1e-4
    assert np.max(np.abs(got - ort_q)) <= 2 * ort_err + 1e-4


class AttnNet(torch.nn.Module):
    """GRU -> additive attention pooling softmax_t(tanh(h W^T + b) · v) -> Linear."""

    def __init__(self, i=4, h=8, a=5, o=3, vec=True):
        super().__init__()
        self.rnn = torch.nn.GRU(i, h, batch_first=True)
        self.proj = torch.nn.Linear(h, a)
        self.v = torch.nn.Parameter(torch.randn(a) / a**0.5) if vec else None
        self.vlin = None if vec else torch.nn.Linear(a, 1, bias=False)
        self.fc = torch.nn.Linear(h, o)
        self.bf = True

    def forward(self, x):
        h, _ = self.rnn(x)
        t = torch.tanh(self.proj(h))
        s = t @ self.v if self.v is not None else self.vlin(t).squeeze(-1)
        alpha = torch.softmax(s, dim=1)
        return self.fc((alpha.unsqueeze(-1) * h).sum(dim=1))


@pytest.mark.parametrize("vec,dynamo", [(True, False), (False, False), (True, True)])
def test_attention_pooling(vec, dynamo, tmp_path):
    torch.manual_seed(0)
    res = _check(AttnNet(vec=vec).eval(), str(tmp_path), dynamo=dynamo)
    assert [lyr["kind"] for lyr in chain_layers(res["plan"])] == ["gru", "attention", "dense"]
    assert res["plan"]["output"]["sequence"] == "many_to_one"
