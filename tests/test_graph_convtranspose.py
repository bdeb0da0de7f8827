"""ONNX ``ConvTranspose`` (1-D, over the step's own window [1, C, L]) compiled to a zero-stuffing gather
and a stride-1 convolution: every attribute (strides, dilations, pads, output_padding, output_shape,
auto_pad, group, bias) against ONNX Runtime on both backends, torch's own ``nn.ConvTranspose1d`` export,
int8, and the refusals."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import compile_onnx  # noqa: E402
from edgernn.export.onnx import CompileError  # noqa: E402
from onnx import helper  # noqa: E402
from test_graph_ops import _check, _const, _model  # noqa: E402


def _ort_len(model, n_in: int) -> int:
    """The output length ONNX Runtime computes (the oracle for the shape too)."""
    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return int(sess.run(None, {"x": np.zeros((1, n_in), np.float32)})[0].size)


def _tconv_model(cin, cout, k, L, groups=1, act=None, seed=0, **attrs):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(cin, cout // groups, k)).astype(np.float32)
    b = rng.normal(size=cout).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),
        helper.make_node("ConvTranspose", ["x3", "W", "B"], ["c"], kernel_shape=[k], group=groups, **attrs),
    ]
    last = "c"
    if act:
        nodes.append(helper.make_node(act, ["c"], ["a"]))
        last = "a"
    nodes.append(helper.make_node("Flatten", [last], ["y"]))
    inits = [_const("shp", np.array([1, cin, L], np.int64)), _const("W", w), _const("B", b)]
    m = _model(nodes, cin * L, [1, None], inits)
    return m, rng


CASES = [
    dict(cin=4, cout=3, k=4, L=8, strides=[2], pads=[1, 1]),  # the usual stride-2 decoder: L -> 2L
    dict(cin=3, cout=5, k=3, L=7),  # stride 1, no pads: a full convolution
    dict(cin=2, cout=4, k=3, L=6, strides=[3], dilations=[2], pads=[2, 1], output_padding=[1]),
    dict(cin=4, cout=6, k=5, L=5, groups=2, strides=[2], pads=[0, 3], act="Relu"),
    dict(cin=2, cout=2, k=4, L=6, strides=[2], output_shape=[11]),
    dict(cin=2, cout=3, k=4, L=5, strides=[2], auto_pad="SAME_UPPER"),
    dict(cin=2, cout=3, k=5, L=5, strides=[2], auto_pad="SAME_LOWER"),
    dict(cin=3, cout=2, k=2, L=9, strides=[1], pads=[1, 1]),  # pads that crop the full output
]


@pytest.mark.parametrize("case", CASES, ids=[str(i) for i in range(len(CASES))])
def test_conv_transpose_against_ort(tmp_path, case):
    case = dict(case)
    cin, cout, k, L = (case.pop(key) for key in ("cin", "cout", "k", "L"))
    m, rng = _tconv_model(cin, cout, k, L, **case)
    assert _ort_len(m, cin * L) > 0
    X = rng.normal(size=(3, cin * L)).astype(np.float32)
    res = _check(tmp_path, m, X, {"conv1d"})
    assert res["plan"]["input"]["size"] == cin * L


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_conv_transpose1d_export_compiles(tmp_path, dynamo):
    """torch's own ONNX export (both exporters) of ``nn.ConvTranspose1d`` (an independent writer of the
    node) after a Conv1d encoder: edgernn's step = torch's forward on each window."""
    torch = pytest.importorskip("torch")
    import edgernn

    torch.manual_seed(0)

    class Codec(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.enc = torch.nn.Conv1d(2, 6, 4, stride=2, padding=1)
            self.dec = torch.nn.ConvTranspose1d(6, 2, 4, stride=2, padding=1)

        def forward(self, x):  # x (1, 32) -> (1, 32)
            z = torch.relu(self.enc(x.reshape(1, 2, 16)))
            return self.dec(z).reshape(1, 32)

    m = Codec().eval()
    p = tmp_path / "codec.onnx"
    torch.onnx.export(m, (torch.zeros(1, 32),), str(p), dynamo=dynamo, opset_version=18 if dynamo else 17)
    compile_onnx(str(p), str(tmp_path / "codec.ernn"))
    s = edgernn.load(tmp_path / "codec.ernn").stream()
    X = torch.randn(4, 32)
    with torch.no_grad():
        want = np.stack([m(x[None]).numpy()[0] for x in X])
    got = np.stack([s.step(x.numpy()) for x in X])
    np.testing.assert_allclose(got, want, atol=2e-5, rtol=1e-4)


def test_conv_transpose_int8_is_close_to_ort(tmp_path):
    """``--quantize int8``: the transposed convolution's weights go int8 (per output channel), the outputs
    stay within int8 error of ONNX Runtime's float32 run."""
    import edgernn

    m, rng = _tconv_model(8, 8, 4, 16, strides=[2], pads=[1, 1], seed=3)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    compile_onnx(str(p), str(tmp_path / "m.ernn"), quantize="int8", max_error=float("inf"))
    model = edgernn.load(tmp_path / "m.ernn")
    assert model.info["quantization"] == "int8"
    sess = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"])
    X = rng.normal(size=(4, 128)).astype(np.float32)
    want = np.stack([sess.run(None, {"x": x[None]})[0].ravel() for x in X])
    got = np.stack([model.stream().step(x) for x in X])
    assert np.abs(got - want).max() <= 0.02 * np.abs(want).max()


@pytest.mark.parametrize(
    ("attrs", "words"),
    [
        (dict(output_padding=[2], strides=[2]), "output_padding 2"),
        (dict(pads=[4, 4]), "crop the whole output"),
        (dict(output_shape=[40]), "longer than the full output"),
    ],
)
def test_conv_transpose_refusals_name_the_attribute(tmp_path, attrs, words):
    m, _ = _tconv_model(2, 2, 3, 2, **attrs)
    p = tmp_path / "m.onnx"
    onnx.save(m, p)
    with pytest.raises(CompileError, match=words):
        compile_onnx(str(p), str(tmp_path / "m.ernn"))
