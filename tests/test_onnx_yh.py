"""``Y_h`` of reverse and bidirectional recurrent nodes (issue 13, deliverable 4): the compiler adds a
``final`` op (each direction's final step: forward t = T−1, reverse t = 0) and ``predict`` serves the
readout. Oracles: PyTorch (the module itself), ONNX Runtime (the exported file) and, for the op, the
numpy reference of tests/reference.py. ``Y_c`` read the same way compiles too."""

from __future__ import annotations

import numpy as np
import pytest
from builders import dense, model, recurrent

import edgernn
from edgernn.artifact import chain_layers, validate_plan

torch = pytest.importorskip("torch")
onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from edgernn.export import compile_onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

ATOL = 1e-5


class Classifier(torch.nn.Module):
    """The common case: a bidirectional recurrent layer whose final states feed a linear head."""

    def __init__(self, cell: str, layers: int, readout: str = "both"):
        super().__init__()
        kind = {"lstm": torch.nn.LSTM, "gru": torch.nn.GRU, "rnn": torch.nn.RNN}[cell]
        self.cell, self.readout = cell, readout
        self.rnn = kind(3, 5, num_layers=layers, batch_first=True, bidirectional=True)
        self.fc = torch.nn.Linear(10 if readout == "both" else 5, 2)

    def forward(self, x):
        if self.cell == "lstm":
            _, (h, _c) = self.rnn(x)
        else:
            _, h = self.rnn(x)
        if self.readout == "forward":  # only the forward direction's final state: no final op needed
            return self.fc(h[-2])
        return self.fc(torch.cat([h[-2], h[-1]], 1))


class TwoReadouts(Classifier):
    """Y_h read twice, or with Y's last step: the plan is a graph (values read by several ops)."""

    def __init__(self, both: bool):
        super().__init__("gru", 1)
        self.both = both
        self.fc2 = torch.nn.Linear(10, 2)

    def forward(self, x):
        y, h = self.rnn(x)
        hh = torch.cat([h[-2], h[-1]], 1)
        if self.both:
            return self.fc(hh) + self.fc2(y[:, -1])
        return torch.tanh(self.fc(hh)) * self.fc2(hh)


def _export(module, path, T: int = 7) -> None:
    x = torch.randn(1, T, 3)
    torch.onnx.export(
        module,
        (x,),
        str(path),
        dynamo=False,
        input_names=["x"],
        output_names=["y"],
        dynamic_axes={"x": {0: "B", 1: "T"}},
    )


def _ort(path, feeds: dict) -> np.ndarray:
    s = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return s.run(None, feeds)[0]


@pytest.mark.parametrize(("cell", "layers"), [("lstm", 1), ("gru", 2), ("rnn", 1)])
def test_bidirectional_classifier_reading_y_h(tmp_path, cell, layers):
    torch.manual_seed(layers)
    m = Classifier(cell, layers).eval()
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    _export(m, src)
    res = compile_onnx(str(src), str(out))
    kinds = [ly["kind"] for ly in chain_layers(res["plan"])]
    assert kinds.count("final") == 1 and kinds[-1] == "dense"
    assert res["plan"]["output"]["sequence"] == "many_to_one"
    rng = np.random.default_rng(0)
    X = rng.normal(size=(3, 11, 3)).astype(np.float32)  # a longer sequence than the export's example
    want_ort = _ort(src, {"x": X})
    with torch.no_grad():
        want_torch = m(torch.from_numpy(X)).numpy()
    for backend in ("numba", "numpy"):
        got = edgernn.load(str(out), backend=backend).predict(X)
        assert got.shape == (3, 2)
        np.testing.assert_allclose(got, want_ort, atol=ATOL, rtol=1e-4, err_msg=backend)
        np.testing.assert_allclose(got, want_torch, atol=ATOL, rtol=1e-4, err_msg=backend)
    # the reverse half really is the state after the whole sequence: a last step read instead differs
    with torch.no_grad():
        y, _ = m.rnn(torch.from_numpy(X))
        wrong = m.fc(y[:, -1]).numpy()
    assert np.abs(wrong - want_torch).max() > 1e-3


@pytest.mark.parametrize("both", [True, False])
def test_graph_plans_reading_y_h_run_through_predict(tmp_path, both):
    torch.manual_seed(4)
    m = TwoReadouts(both).eval()
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    _export(m, src)
    res = compile_onnx(str(src), str(out))
    assert res["plan"]["format_version"] == 2 and "final" in [op["kind"] for op in res["plan"]["ops"]]
    X = np.random.default_rng(2).normal(size=(2, 10, 3)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(X)).numpy()
    np.testing.assert_allclose(_ort(src, {"x": X}), want, atol=ATOL, rtol=1e-4)
    for backend in ("numba", "numpy"):
        got = edgernn.load(str(out), backend=backend).predict(X)
        np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4, err_msg=backend)


def test_forward_half_of_y_h_needs_no_final_op(tmp_path):
    torch.manual_seed(3)
    m = Classifier("gru", 1, readout="forward").eval()
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    _export(m, src)
    res = compile_onnx(str(src), str(out))
    assert "final" not in [ly["kind"] for ly in chain_layers(res["plan"])]
    X = np.random.default_rng(1).normal(size=(2, 9, 3)).astype(np.float32)
    np.testing.assert_allclose(edgernn.load(str(out)).predict(X), _ort(src, {"x": X}), atol=ATOL, rtol=1e-4)


def _recurrent_graph(op: str, direction: str, T: int, readout: str, rng) -> onnx.ModelProto:
    """X [T, 1, 4] -> an ``op`` node (hidden 6) -> Y_h [D, 1, 6] -> Transpose/Reshape -> Gemm -> [1, 3].
    ``readout``: "y_h" or "y_c" (the LSTM's cell state)."""
    d = 2 if direction == "bidirectional" else 1
    g = {"RNN": 1, "GRU": 3, "LSTM": 4}[op]
    H, I = 6, 4
    init = [
        helper.make_tensor("W", TensorProto.FLOAT, [d, g * H, I], rng.normal(0, 0.5, d * g * H * I)),
        helper.make_tensor("R", TensorProto.FLOAT, [d, g * H, H], rng.normal(0, 0.5, d * g * H * H)),
        helper.make_tensor("B", TensorProto.FLOAT, [d, 2 * g * H], rng.normal(0, 0.3, d * 2 * g * H)),
        helper.make_tensor("Wo", TensorProto.FLOAT, [d * H, 3], rng.normal(0, 0.5, d * H * 3)),
        helper.make_tensor("shape", TensorProto.INT64, [2], [1, d * H]),
    ]
    outs = ["Y", "Y_h", "Y_c"] if op == "LSTM" else ["Y", "Y_h"]
    nodes = [
        helper.make_node(op, ["X", "W", "R", "B"], outs, hidden_size=H, direction=direction),
        helper.make_node("Transpose", ["Y_c" if readout == "y_c" else "Y_h"], ["hT"], perm=[1, 0, 2]),
        helper.make_node("Reshape", ["hT", "shape"], ["hf"]),
        helper.make_node("Gemm", ["hf", "Wo"], ["out"]),
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 1, I])],
        [helper.make_tensor_value_info("out", TensorProto.FLOAT, [1, 3])],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


@pytest.mark.parametrize(
    ("op", "direction"), [("GRU", "reverse"), ("LSTM", "reverse"), ("RNN", "bidirectional")]
)
def test_onnx_node_y_h_through_plumbing(tmp_path, op, direction):
    rng = np.random.default_rng(7)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_recurrent_graph(op, direction, 8, "y_h", rng), str(src))
    res = compile_onnx(str(src), str(out))
    fin = [ly for ly in chain_layers(res["plan"]) if ly["kind"] == "final"]
    assert len(fin) == 1 and fin[0]["direction"] == direction
    for T in (1, 5, 13):
        X = rng.normal(size=(T, 1, 4)).astype(np.float32)
        want = _ort(src, {"X": X})[0]
        for backend in ("numba", "numpy"):
            got = edgernn.load(str(out), backend=backend).predict(X[:, 0])
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4, err_msg=f"{backend} T={T}")


def test_y_c_readout_compiles(tmp_path):
    """Y_c (the final cell state) read through plumbing and a Gemm: the lstm op writes [h; c] and the
    final op selects both blocks (tests/test_onnx_outputs.py covers Y_c as a model output)."""
    rng = np.random.default_rng(0)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_recurrent_graph("LSTM", "bidirectional", 8, "y_c", rng), str(src))
    res = compile_onnx(str(src), str(out))
    assert chain_layers(res["plan"])[0]["cell_output"] is True
    X = rng.normal(size=(9, 1, 4)).astype(np.float32)
    for backend in ("numba", "numpy"):
        got = edgernn.load(str(out), backend=backend).predict(X[:, 0])
        np.testing.assert_allclose(got, _ort(src, {"X": X})[0], atol=ATOL, rtol=1e-4, err_msg=backend)


def test_stream_is_refused_predict_works(tmp_path):
    torch.manual_seed(0)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    _export(Classifier("lstm", 1).eval(), src)
    compile_onnx(str(src), str(out))
    for backend in ("numba", "numpy"):
        m = edgernn.load(str(out), backend=backend)
        assert m.info["streamable"] is False
        for fn in (m.stream, lambda m=m: m.streams(2)):
            with pytest.raises(edgernn.EdgeRNNError, match=r"cannot stream this model: .*Model\.predict"):
                fn()
        assert m.predict(np.zeros((4, 3), np.float32)).shape == (2,)


# ---------------------------------------------------------------------------------------- the plan


def _final(n: int, h: int, direction: str) -> tuple[dict, dict]:
    return {"kind": "final", "name": "f", "input_size": n, "output_size": n, "hidden_size": h,
            "direction": direction}, {}  # fmt: skip


def _plan(first, fin):
    rng = np.random.default_rng(0)
    return model([first(rng), fin, dense(rng, "d", fin[0]["input_size"], 2)], 4, sequence="many_to_one")


def test_final_plan_versions_agree_with_the_reference():
    from reference import recurrent_layer

    rng = np.random.default_rng(2)
    plan, tensors = _plan(
        lambda r: recurrent(r, "gru", "g", 4, 6, "bidirectional"), _final(12, 6, "bidirectional")
    )
    X = rng.normal(size=(9, 4)).astype(np.float32)
    Y = recurrent_layer(plan["layers"][0], tensors, X.astype(np.float64))
    yh = np.concatenate([Y[-1, :6], Y[0, 6:]])  # ONNX Y_h by definition
    want = tensors["d.W"].astype(np.float64) @ yh + tensors.get("d.b", 0)
    from edgernn.artifact import upgrade

    for p in (plan, upgrade(plan)):
        for backend in ("numba", "numpy"):
            got = edgernn.Model(p, tensors, backend=backend).predict(X)
            np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)


def _good():
    return _plan(lambda r: recurrent(r, "gru", "g", 4, 6, "bidirectional"), _final(12, 6, "bidirectional"))[0]


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        ({"direction": "reverse", "hidden_size": 12}, r"bad layer: .*not a gru op \(.bidirectional."),
        ({"hidden_size": 4}, r"bad size: .*hidden_size 4 has 8 values; the op reads 12"),
        ({"direction": "forward"}, r"bad field: .*'direction' must be one of reverse, bidirectional"),
        ({"direction": None}, r"bad field: .*'direction'"),
        ({"hidden_size": "6"}, r"bad field: .*'hidden_size' must be an integer"),
    ],
)  # fmt: skip
def test_malformed_final_ops_are_refused(change, msg):
    from edgernn.artifact import upgrade

    plan = _good()
    plan["layers"][1].update(change)
    with pytest.raises(edgernn.ArtifactError, match=msg):
        validate_plan(plan)
    g = upgrade(_good())  # the same checks on a format-2 graph
    g["ops"][1]["attrs"].update(change)
    with pytest.raises(edgernn.ArtifactError, match=msg):
        validate_plan(g)


def test_final_must_read_a_recurrent_op():
    plan = _good()
    rng = np.random.default_rng(0)
    plan["layers"][0] = dense(rng, "d0", 4, 12)[0]
    with pytest.raises(edgernn.ArtifactError, match=r"bad layer: layer 1 .*not a dense op"):
        validate_plan(plan)
    first = _good()
    first["input"]["size"] = 12
    first["layers"] = first["layers"][1:]
    with pytest.raises(edgernn.ArtifactError, match="bad layer: .*not the model input"):
        validate_plan(first)
    g = {
        **{k: v for k, v in first.items() if k != "layers"},
        "format_version": 2,
        "input": {"kind": "features", "size": 12, "value": "x"},
        "output": {"size": 12, "sequence": "many_to_one", "labels": None, "value": "y"},
        "values": {"x": {"shape": [12]}, "y": {"shape": [12]}},
        "ops": [{"kind": "final", "name": "f", "inputs": ["x"], "outputs": ["y"],
                 "attrs": {"hidden_size": 6, "direction": "bidirectional"}}],
    }  # fmt: skip
    with pytest.raises(edgernn.ArtifactError, match=r"bad layer: op 0 .*not the model input"):
        validate_plan(g)


def test_export_of_a_module_reading_y_h(tmp_path):
    """``edgernn.export.export`` of the user's module: the plan mapped from torch (the parity check's
    second artifact) takes its readout from the traced graph, and every backend agrees with torch."""
    from edgernn.export import export

    torch.manual_seed(5)
    m = Classifier("gru", 1).eval()
    rep = export(m, str(tmp_path / "out"), torch.randn(2, 9, 3))
    assert rep["ok"] and any("final op" in n for n in rep["notes"])
    assert [ly["kind"] for ly in rep["model"]["layers"]] == ["gru", "final", "dense"]
    X = np.random.default_rng(4).normal(size=(2, 13, 3)).astype(np.float32)
    with torch.no_grad():
        want = m(torch.from_numpy(X)).numpy()
    got = edgernn.load(str(tmp_path / "out" / "model.ernn")).predict(X)
    np.testing.assert_allclose(got, want, atol=ATOL, rtol=1e-4)
    np.testing.assert_allclose(
        _ort(tmp_path / "out" / "model.onnx", {"input": X}), want, atol=ATOL, rtol=1e-4
    )
