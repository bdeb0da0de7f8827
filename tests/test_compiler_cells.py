"""Recurrent steps written as plain ops (MatMul/Gemm + Split + Sigmoid/Tanh + Mul + Add) are fused into
LSTM/GRU/RNN nodes: torch's ``nn.LSTMCell`` export (both exporters) and a Keras-style MatMul spelling
compile into an ``lstm`` layer whose stream follows ONNX Runtime on the original graph; torch's
``nn.GRUCell``/``nn.RNNCell`` into ``gru``/``rnn`` layers that follow torch and ORT; a step that does not
match (another gate order, the GRU candidate reset before its product) is left alone."""

from __future__ import annotations

import os
import warnings

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from compiler_common import mismatch  # noqa: E402
from edgernn.export.onnx import compile_onnx, front_end  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402
from edgernn.artifact import chain_layers  # noqa: E402


def _stream_vs_ort(path, res, x_shape, h, steps=8, seed=0):
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    s = edgernn.load(res["path"]).stream()
    hs = np.zeros((1, h), np.float32)
    cs = np.zeros((1, h), np.float32)
    rng = np.random.default_rng(seed)
    for t in range(steps):
        x = rng.normal(size=x_shape).astype(np.float32)
        y, hs, cs = sess.run(None, {"x": x, "h": hs, "c": cs})
        assert mismatch(s.step(x[0]), y[0]) is None, f"step {t}"


@pytest.mark.parametrize("dynamo", [False, True])
def test_torch_lstm_cell_step_is_fused(dynamo, tmp_path):
    torch = pytest.importorskip("torch")

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.cell = torch.nn.LSTMCell(3, 5)
            self.fc = torch.nn.Linear(5, 2)

        def forward(self, x, h, c):
            h2, c2 = self.cell(x, (h, c))
            return self.fc(h2), h2, c2

    torch.manual_seed(0)
    net = Cell().eval()
    path = os.path.join(str(tmp_path), "cell.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(1, 3), torch.zeros(1, 5), torch.zeros(1, 5)),
            path,
            input_names=["x", "h", "c"],
            output_names=["y", "hn", "cn"],
            dynamo=dynamo,
        )
    assert "LSTM" not in {n.op_type for n in onnx.load(path).graph.node}
    res = compile_onnx(path, os.path.join(str(tmp_path), "cell.ernn"))
    assert [ly["kind"] for ly in chain_layers(res["plan"])] == ["lstm", "dense"]
    assert res["state_pairs"] == [["h", "hn"], ["c", "cn"]]
    assert not any("not checked" in n for n in res["notes"])
    _stream_vs_ort(path, res, (1, 3), 5)


def _keras_step(rng, i=4, h=3, order="ifco"):
    """gates = x @ W + h @ U + b; Split(sizes) into the gates in ``order`` (Keras: i, f, c, o)."""
    w = rng.normal(0, 0.5, (i, 4 * h)).astype(np.float32)
    u = rng.normal(0, 0.5, (h, 4 * h)).astype(np.float32)
    b = rng.normal(0, 0.5, (4 * h,)).astype(np.float32)
    act = {"i": "Sigmoid", "f": "Sigmoid", "c": "Tanh", "o": "Sigmoid"}
    parts = [f"s_{g}" for g in order]
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("MatMul", ["h", "U"], ["hu"]),
        helper.make_node("Add", ["xw", "hu"], ["z0"]),
        helper.make_node("Add", ["z0", "b"], ["z"]),
        helper.make_node("Split", ["z", "sizes"], parts, axis=1),
    ]
    nodes += [helper.make_node(act[g], [f"s_{g}"], [f"a_{g}"]) for g in order]
    nodes += [
        helper.make_node("Mul", ["c", "a_f"], ["fc"]),
        helper.make_node("Mul", ["a_i", "a_c"], ["ig"]),
        helper.make_node("Add", ["ig", "fc"], ["cn"]),
        helper.make_node("Tanh", ["cn"], ["tc"]),
        helper.make_node("Mul", ["tc", "a_o"], ["hn"]),
        helper.make_node("Relu", ["hn"], ["y"]),
    ]
    inits = [
        numpy_helper.from_array(w, "W"),
        numpy_helper.from_array(u, "U"),
        numpy_helper.from_array(b, "b"),
        numpy_helper.from_array(np.full(4, h, np.int64), "sizes"),
    ]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes,
        "keras",
        [helper.make_tensor_value_info("x", f, ["b", i])]
        + [helper.make_tensor_value_info(n, f, ["b", h]) for n in ("h", "c")],
        [helper.make_tensor_value_info(n, f, ["b", h]) for n in ("y", "hn", "cn")],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_keras_style_matmul_step_is_fused(tmp_path):
    rng = np.random.default_rng(1)
    m = _keras_step(rng)
    path = os.path.join(str(tmp_path), "k.onnx")
    onnx.save(m, path)
    fe = front_end(path)
    assert fe["fused_cells"] == 1
    assert {n.op_type for n in fe["model"].graph.node} == {"Unsqueeze", "LSTM", "Squeeze", "Relu"}
    res = compile_onnx(path, os.path.join(str(tmp_path), "k.ernn"))
    assert [ly["kind"] for ly in chain_layers(res["plan"])] == ["lstm", "activation"]
    _stream_vs_ort(path, res, (1, 4), 3, seed=2)


def test_other_gate_order_is_not_fused():
    """Gates i, o, f, c (Tanh on the last part) do not spell the PyTorch/Keras step: left as it is."""
    m = _keras_step(np.random.default_rng(3), order="iofc")
    fe = front_end(m)
    assert fe["fused_cells"] == 0 and fe["model"] is m


def _torch_cell_step(tmp_path, kind: str, dynamo: bool = False, nonlinearity: str = "tanh"):
    """A torch ``nn.GRUCell``/``nn.RNNCell`` 3 -> 6 step with a Linear head, exported: x [1, 3], h [1, 6]
    -> y [1, 2], hn [1, 6]. Returns (path, the module)."""
    torch = pytest.importorskip("torch")

    class Cell(torch.nn.Module):
        def __init__(self):
            super().__init__()
            if kind == "gru":
                self.cell = torch.nn.GRUCell(3, 6)
            else:
                self.cell = torch.nn.RNNCell(3, 6, nonlinearity=nonlinearity)
            self.fc = torch.nn.Linear(6, 2)

        def forward(self, x, h):
            h2 = self.cell(x, h)
            return self.fc(h2), h2

    torch.manual_seed(3)
    net = Cell().eval()
    path = os.path.join(str(tmp_path), f"{kind}.onnx")
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            net,
            (torch.randn(1, 3), torch.zeros(1, 6)),
            path,
            input_names=["x", "h"],
            output_names=["y", "hn"],
            dynamo=dynamo,
        )
    return path, net


@pytest.mark.parametrize(
    ("kind", "nonlinearity", "dynamo"),
    [("gru", "tanh", False), ("gru", "tanh", True), ("rnn", "tanh", False), ("rnn", "relu", False)],
    ids=["gru", "gru-dynamo", "rnn-tanh", "rnn-relu"],
)
def test_torch_gru_and_rnn_cell_steps_are_fused(tmp_path, kind, nonlinearity, dynamo):
    """torch's GRUCell / RNNCell step graphs (Gemm + Split + Sigmoid/Tanh/Relu + Mul/Sub/Add: the state
    input read by a Gemm, which the compiler refused) become one GRU/RNN node: a streamed recurrent layer
    whose steps follow torch's cell applied step by step, and ONNX Runtime on the original graph."""
    import torch

    path, net = _torch_cell_step(tmp_path, kind, dynamo, nonlinearity)
    ops = {n.op_type for n in onnx.load(path).graph.node}
    assert not ops & {"GRU", "RNN", "LSTM"}
    fe = front_end(path)
    assert fe["fused_cells"] == 1
    assert {"GRU" if kind == "gru" else "RNN"} <= {n.op_type for n in fe["model"].graph.node}
    res = compile_onnx(path, os.path.join(str(tmp_path), f"{kind}.ernn"))
    assert [ly["kind"] for ly in chain_layers(res["plan"])] == [kind, "dense"]
    assert res["state_pairs"] == [["h", "hn"]]
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    s = edgernn.load(res["path"]).stream()
    rng = np.random.default_rng(5)
    h_t = torch.zeros(1, 6)
    h_o = np.zeros((1, 6), np.float32)
    for t in range(10):
        x = rng.normal(size=(1, 3)).astype(np.float32)
        with torch.no_grad():
            y_t, h_t = net(torch.from_numpy(x), h_t)
        y_o, h_o = sess.run(None, {"x": x, "h": h_o})
        got = s.step(x[0])
        assert mismatch(got, y_t.numpy()[0]) is None, f"step {t} vs torch: {mismatch(got, y_t.numpy()[0])}"
        assert mismatch(got, y_o[0]) is None, f"step {t} vs ORT"


def test_gru_step_with_the_candidate_reset_before_the_product_is_not_fused(tmp_path):
    """n = Tanh(n_x + (r * h)·W_hn): ONNX's linear_before_reset = 0, a different step from torch's; the
    matcher leaves it, and the graph then refuses as before (the state read by a MatMul)."""
    rng = np.random.default_rng(7)
    h, i = 4, 3
    nodes = [
        helper.make_node("MatMul", ["x", "Wx"], ["gx"]),
        helper.make_node("Split", ["gx", "sizes"], ["rx", "zx", "nx"], axis=1),
        helper.make_node("MatMul", ["h", "Wh2"], ["gh"]),
        helper.make_node("Split", ["gh", "sizes2"], ["rh", "zh"], axis=1),
        helper.make_node("Add", ["rx", "rh"], ["ra"]),
        helper.make_node("Sigmoid", ["ra"], ["r"]),
        helper.make_node("Add", ["zx", "zh"], ["za"]),
        helper.make_node("Sigmoid", ["za"], ["z"]),
        helper.make_node("Mul", ["r", "h"], ["rhh"]),
        helper.make_node("MatMul", ["rhh", "Wn"], ["nh"]),
        helper.make_node("Add", ["nx", "nh"], ["na"]),
        helper.make_node("Tanh", ["na"], ["n"]),
        helper.make_node("Sub", ["h", "n"], ["d"]),
        helper.make_node("Mul", ["d", "z"], ["zd"]),
        helper.make_node("Add", ["zd", "n"], ["hn"]),
    ]
    inits = [
        numpy_helper.from_array(rng.normal(size=(i, 3 * h)).astype(np.float32), "Wx"),
        numpy_helper.from_array(rng.normal(size=(h, 2 * h)).astype(np.float32), "Wh2"),
        numpy_helper.from_array(rng.normal(size=(h, h)).astype(np.float32), "Wn"),
        numpy_helper.from_array(np.full(3, h, np.int64), "sizes"),
        numpy_helper.from_array(np.full(2, h, np.int64), "sizes2"),
    ]
    f = TensorProto.FLOAT
    g = helper.make_graph(
        nodes,
        "gru0",
        [helper.make_tensor_value_info("x", f, [1, i]), helper.make_tensor_value_info("h", f, [1, h])],
        [helper.make_tensor_value_info("hn", f, [1, h])],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    fe = front_end(m)
    assert fe["fused_cells"] == 0 and fe["model"] is m
