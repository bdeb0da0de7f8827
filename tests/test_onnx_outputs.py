"""Every output of a recurrent node, and several graph outputs (issue 13, item 4).

``Y_c`` (the final cell state) of forward, reverse and bidirectional LSTM nodes compiles (the lstm op's
``cell_output``: it writes [h; c] per step, and a ``final`` op selects the reverse units at t = 0), and a
graph of several outputs compiles to a plan of several outputs (format 2 ``outputs``) that
``Model.predict`` returns as a tuple in graph order. Oracles: ONNX Runtime on the same file, and PyTorch
(``nn.LSTM``'s (out, (h_n, c_n))). Both backends: ``numpy`` and the default (generated numba kernels).
"""

from __future__ import annotations

import copy

import numpy as np
import pytest

import edgernn
from edgernn.artifact import chain_layers, validate_plan

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")
from edgernn.export import compile_onnx  # noqa: E402
from edgernn.export.onnx import CompileError  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402

ATOL = 1e-5
H, I = 5, 3
BACKENDS = ("numpy", None)  # None: the default backend (numba's generated kernels here)


def _ort(path, feeds: dict, names: list[str] | None = None) -> list[np.ndarray]:
    return ort.InferenceSession(str(path), providers=["CPUExecutionProvider"]).run(names, feeds)


def _lstm_graph(direction: str, outputs: list[str], rng, head: bool = False) -> onnx.ModelProto:
    """X [T, 1, I] -> LSTM (hidden H) with graph outputs ``outputs`` (of "Y", "Y_h", "Y_c"; with ``head``
    also "logits" = Gemm(Y_h as [1, D·H]), listed first)."""
    d = 2 if direction == "bidirectional" else 1
    init = [
        helper.make_tensor("W", TensorProto.FLOAT, [d, 4 * H, I], rng.normal(0, 0.5, d * 4 * H * I)),
        helper.make_tensor("R", TensorProto.FLOAT, [d, 4 * H, H], rng.normal(0, 0.5, d * 4 * H * H)),
        helper.make_tensor("B", TensorProto.FLOAT, [d, 8 * H], rng.normal(0, 0.3, d * 8 * H)),
    ]
    nodes = [
        helper.make_node(
            "LSTM", ["X", "W", "R", "B"], ["Y", "Y_h", "Y_c"], hidden_size=H, direction=direction
        )
    ]
    shapes = {"Y": ["T", d, 1, H], "Y_h": [d, 1, H], "Y_c": [d, 1, H], "logits": [1, 2]}
    if head:
        init += [
            helper.make_tensor("Wo", TensorProto.FLOAT, [d * H, 2], rng.normal(0, 0.5, d * H * 2)),
            helper.make_tensor("bo", TensorProto.FLOAT, [2], rng.normal(0, 0.5, 2)),
            helper.make_tensor("shape", TensorProto.INT64, [2], [1, d * H]),
        ]
        nodes += [
            helper.make_node("Transpose", ["Y_h"], ["hT"], perm=[1, 0, 2]),
            helper.make_node("Reshape", ["hT", "shape"], ["hf"]),
            helper.make_node("Gemm", ["hf", "Wo", "bo"], ["logits"]),
        ]
        outputs = ["logits"] + outputs
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("X", TensorProto.FLOAT, ["T", 1, I])],
        [helper.make_tensor_value_info(o, TensorProto.FLOAT, shapes[o]) for o in outputs],
        init,
    )
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def _per_sample(name: str, arr: np.ndarray, T: int) -> np.ndarray:
    """An ORT output of the [T, 1, I] graph as edgernn returns it for one sequence: Y (T, D·H) in the
    ONNX feature order [D, H], Y_h/Y_c (D·H,), logits (2,)."""
    if name == "Y":
        return arr[:, :, 0, :].reshape(T, -1)
    return arr.reshape(-1)


def _check(src, out, names, rng, Ts=(1, 6, 11)):
    for T in Ts:
        X = rng.normal(size=(T, 1, I)).astype(np.float32)
        want = [_per_sample(n, a, T) for n, a in zip(names, _ort(src, {"X": X}, names), strict=True)]
        for backend in BACKENDS:
            m = edgernn.load(str(out), backend=backend)
            assert m.output_names == tuple(names)
            got = m.predict(X[:, 0])
            if len(names) == 1:
                assert isinstance(got, np.ndarray)
                got = (got,)
            assert isinstance(got, tuple) and len(got) == len(names)
            for n, g, w in zip(names, got, want, strict=True):
                assert g.shape == w.shape, (n, g.shape, w.shape)
                np.testing.assert_allclose(g, w, atol=ATOL, rtol=1e-4, err_msg=f"{backend} {n} T={T}")


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_y_c_alone_matches_ort(tmp_path, direction):
    rng = np.random.default_rng(1)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph(direction, ["Y_c"], rng), str(src))
    res = compile_onnx(str(src), str(out))
    assert "outputs" not in res["plan"]  # one output: the plan as before
    lstm = next(ly for ly in chain_layers(res["plan"]) if ly["kind"] == "lstm")
    assert lstm["cell_output"] is True and lstm["output_size"] == 2 * lstm["hidden_size"] * (
        2 if direction == "bidirectional" else 1
    )
    assert res["plan"]["output"]["sequence"] == "many_to_one"
    _check(src, out, ["Y_c"], rng)


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_y_y_h_y_c_are_three_outputs_in_graph_order(tmp_path, direction):
    rng = np.random.default_rng(2)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph(direction, ["Y", "Y_h", "Y_c"], rng), str(src))
    res = compile_onnx(str(src), str(out))
    plan = res["plan"]
    assert plan["format_version"] == 2 and res["ignored_outputs"] == []
    assert [(o["name"], o["sequence"]) for o in plan["outputs"]] == [
        ("Y", "many_to_many"),
        ("Y_h", "many_to_one"),
        ("Y_c", "many_to_one"),
    ]
    assert {k: plan["output"][k] for k in ("value", "size", "sequence")} == {
        k: plan["outputs"][0][k] for k in ("value", "size", "sequence")
    }
    _check(src, out, ["Y", "Y_h", "Y_c"], rng)
    m = edgernn.load(str(out))
    assert m.output_sizes == (m.output_size,) * 3 and m.info["outputs"][2]["name"] == "Y_c"
    # a batch axis: each output stacked over the batch
    Xb = rng.normal(size=(3, 7, I)).astype(np.float32)
    got = m.predict(Xb)
    assert [g.shape for g in got] == [(3, 7, m.output_size), (3, m.output_size), (3, m.output_size)]
    one = m.predict(Xb[1])
    for g, o in zip(got, one, strict=True):
        np.testing.assert_array_equal(g[1], o)
    empty = m.predict(np.zeros((0, 7, I), np.float32))
    assert [e.shape for e in empty] == [(0, 7, m.output_size), (0, m.output_size), (0, m.output_size)]


@pytest.mark.parametrize("direction", ["bidirectional", "reverse"])
def test_classifier_reading_y_h_through_a_gemm(tmp_path, direction):
    """The common case, logits only (one output, as before) and (logits, Y_h): two outputs."""
    for outs in ([], ["Y_h"]):
        rng = np.random.default_rng(3)
        src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
        onnx.save(_lstm_graph(direction, outs, rng, head=True), str(src))
        res = compile_onnx(str(src), str(out))
        assert "final" in [op["kind"] for op in res["plan"].get("ops", res["plan"].get("layers"))]
        assert ("outputs" in res["plan"]) == bool(outs)
        _check(src, out, ["logits"] + outs, rng)
        m = edgernn.load(str(out))
        with pytest.raises(edgernn.EdgeRNNError, match="cannot stream this model"):
            m.stream()


def test_one_output_picked_by_name(tmp_path):
    rng = np.random.default_rng(4)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph("bidirectional", ["Y", "Y_h", "Y_c"], rng), str(src))
    res = compile_onnx(str(src), str(out), output="Y_c")
    assert "outputs" not in res["plan"] and res["ignored_outputs"] == ["Y", "Y_h"]
    X = rng.normal(size=(5, 1, I)).astype(np.float32)
    got = edgernn.load(str(out), backend="numpy").predict(X[:, 0])
    np.testing.assert_allclose(got, _ort(src, {"X": X})[2].reshape(-1), atol=ATOL, rtol=1e-4)


@pytest.mark.parametrize("quantize", ["int8", "fp16"])
def test_quantizing_several_outputs_is_one_clear_error(tmp_path, quantize):
    """The quantizer measures one output: a model of several is refused before anything is written,
    naming the outputs and --graph-output; one picked by name quantizes."""
    rng = np.random.default_rng(6)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph("forward", ["Y", "Y_h"], rng), str(src))
    with pytest.raises(CompileError, match=r"2 outputs \('Y', 'Y_h'\).*--graph-output"):
        compile_onnx(str(src), str(out), quantize=quantize)
    assert not out.exists()
    res = compile_onnx(str(src), str(out), quantize=quantize, output="Y_h")
    assert res["quantization_report"] and out.exists()


def test_bench_of_several_outputs_is_one_clear_error(tmp_path):
    """edgernn bench times one output: a model of several is refused in one line naming them."""
    from edgernn.bench import bench

    rng = np.random.default_rng(8)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph("forward", ["Y", "Y_h"], rng), str(src))
    compile_onnx(str(src), str(out))
    with pytest.raises(edgernn.InputError, match=r"2 outputs \('Y', 'Y_h'\).*--graph-output"):
        bench(str(out), steps=20, warmup=2, chunk=4, max_streams=2, separate=2, cold_runs=0, progress=False)


def test_an_output_that_cannot_compile_leaves_the_first(tmp_path):
    """By default every output is compiled; when another output cannot be (here: a constant), the first
    alone is, as before several outputs, and the notes say which outputs were left and why."""
    rng = np.random.default_rng(12)
    m = _lstm_graph("bidirectional", ["Y_c"], rng)
    m.graph.node.append(helper.make_node("Identity", ["B"], ["B_copy"]))
    m.graph.output.append(helper.make_tensor_value_info("B_copy", TensorProto.FLOAT, [2, 8 * H]))
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(m, str(src))
    res = compile_onnx(str(src), str(out))
    assert "outputs" not in res["plan"] and res["ignored_outputs"] == ["B_copy"]
    assert any(
        "['B_copy'] not compiled" in n and "does not depend on the model input" in n for n in res["notes"]
    )
    with pytest.raises(CompileError, match="does not depend on the model input"):
        compile_onnx(str(src), str(out), output=["Y_c", "B_copy"])  # asked for: an error
    _check(src, out, ["Y_c"], rng, Ts=(4,))


def test_stream_of_a_multi_output_model_returns_tuples(tmp_path):
    """A forward model streams: step, run and Streams.step return a tuple in graph order, and agree
    with predict (Y at every step; Y_h and Y_c so far, the state after the last step)."""
    rng = np.random.default_rng(5)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph("forward", ["Y", "Y_h", "Y_c"], rng), str(src))
    compile_onnx(str(src), str(out))
    X = rng.normal(size=(8, I)).astype(np.float32)
    for backend in BACKENDS:
        m = edgernn.load(str(out), backend=backend)
        Y, Yh, Yc = m.predict(X)
        s = m.stream()
        steps = [s.step(x) for x in X]
        assert all(isinstance(y, tuple) and len(y) == 3 for y in steps)
        np.testing.assert_allclose(np.stack([y[0] for y in steps]), Y, atol=1e-6)
        np.testing.assert_allclose(steps[-1][1], Yh, atol=1e-6)
        np.testing.assert_allclose(steps[-1][2], Yc, atol=1e-6)
        np.testing.assert_allclose(steps[-1][2], s.state[H : 2 * H], atol=0)  # c is the stream's state
        buf = np.zeros(sum(m.output_sizes), np.float32)
        s.reset()
        got = s.step(X[0], out=buf)
        assert all(np.shares_memory(g, buf) for g in got)
        np.testing.assert_array_equal(np.concatenate(got), np.concatenate(steps[0]))
        s.reset()
        R = s.run(X)
        assert [r.shape for r in R] == [(8, H)] * 3
        np.testing.assert_allclose(R[0], Y, atol=1e-6)
        np.testing.assert_allclose(R[2][-1], Yc, atol=1e-6)
        b = m.streams(2)
        B = b.step(np.stack([X[0], X[0]]))
        assert [y.shape for y in B] == [(2, H)] * 3
        np.testing.assert_allclose(B[2][1], steps[0][2], atol=1e-6)
        rows = b.step(X[1:2], rows=[1])
        np.testing.assert_allclose(rows[0][0], steps[1][0], atol=1e-6)


def _step_graph(rng) -> onnx.ModelProto:
    """A stateful step graph (the Silero shape): x [1, 1, I], h, c [1, 1, H] -> y = Y·Wo, hn, cn."""
    init = [
        helper.make_tensor("W", TensorProto.FLOAT, [1, 4 * H, I], rng.normal(0, 0.5, 4 * H * I)),
        helper.make_tensor("R", TensorProto.FLOAT, [1, 4 * H, H], rng.normal(0, 0.5, 4 * H * H)),
        helper.make_tensor("Wo", TensorProto.FLOAT, [H, 2], rng.normal(0, 0.5, 2 * H)),
        helper.make_tensor("axes", TensorProto.INT64, [1], [1]),
    ]
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "", "", "h", "c"], ["Y", "hn", "cn"], hidden_size=H),
        helper.make_node("Squeeze", ["Y", "axes"], ["yf"]),
        helper.make_node("MatMul", ["yf", "Wo"], ["y"]),
    ]
    vi, F = helper.make_tensor_value_info, TensorProto.FLOAT
    graph = helper.make_graph(
        nodes,
        "step",
        [vi("x", F, [1, 1, I]), vi("h", F, [1, 1, H]), vi("c", F, [1, 1, H])],
        [vi("y", F, [1, 1, 2]), vi("hn", F, [1, 1, H]), vi("cn", F, [1, 1, H])],
        init,
    )  # fmt: skip
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 14)])


def test_state_outputs_of_a_step_graph_stay_state(tmp_path):
    rng = np.random.default_rng(6)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_step_graph(rng), str(src))
    res = compile_onnx(str(src), str(out))
    assert "outputs" not in res["plan"] and sorted(map(tuple, res["state_pairs"])) == [
        ("c", "cn"),
        ("h", "hn"),
    ]
    assert "cell_output" not in chain_layers(res["plan"])[0]
    m = edgernn.load(str(out))
    assert m.output_names == ("y",)
    s = m.stream()
    h = c = np.zeros((1, 1, H), np.float32)
    for _ in range(4):
        x = rng.normal(size=(1, 1, I)).astype(np.float32)
        y, h, c = _ort(src, {"x": x, "h": h, "c": c})
        got = s.step(x[0, 0])
        assert isinstance(got, np.ndarray)
        np.testing.assert_allclose(got, y[0, 0], atol=ATOL, rtol=1e-4)


def test_inspect_lists_the_outputs(tmp_path, capsys):
    from edgernn.cli import main

    rng = np.random.default_rng(7)
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    onnx.save(_lstm_graph("bidirectional", ["Y_h", "Y_c"], rng, head=True), str(src))
    compile_onnx(str(src), str(out))
    assert main(["inspect", str(out)]) == 0
    text = capsys.readouterr().out
    assert "output 0: 'logits' 2 (many_to_one)" in text or "output 0: logits 2 (many_to_one)" in text
    assert "output 2: Y_c 10 (many_to_one)" in text and "cell_output=True" in text
    picked = tmp_path / "picked.ernn"  # compile --graph-output, repeated: those outputs in that order
    assert (
        main(["compile", str(src), "-o", str(picked), "--graph-output", "Y_c", "--graph-output", "logits"])
        == 0
    )
    assert "output 1: 'logits' 2 (many_to_one)" in capsys.readouterr().out
    assert edgernn.load(str(picked), backend="numpy").output_names == ("Y_c", "logits")


# ------------------------------------------------------------------------------ PyTorch nn.LSTM


@pytest.mark.parametrize(("bidirectional", "layers"), [(False, 1), (True, 1), (False, 2), (True, 2)])
def test_torch_lstm_returning_out_h_n_c_n(tmp_path, bidirectional, layers):
    """h_n/c_n of a 2-layer LSTM are a Concat of the layers' Y_h/Y_c: one output value of the plan."""
    torch = pytest.importorskip("torch")

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.lstm = torch.nn.LSTM(I, H, num_layers=layers, batch_first=True, bidirectional=bidirectional)

        def forward(self, x):
            out, (h, c) = self.lstm(x)
            return out, h, c

    torch.manual_seed(8)
    net = Net().eval()
    src, out = tmp_path / "m.onnx", tmp_path / "m.ernn"
    torch.onnx.export(
        net,
        (torch.randn(1, 6, I),),
        str(src),
        dynamo=False,
        input_names=["x"],
        output_names=["out", "h_n", "c_n"],
        dynamic_axes={"x": {0: "B", 1: "T"}, "out": {0: "B", 1: "T"}, "h_n": {1: "B"}, "c_n": {1: "B"}},
    )
    res = compile_onnx(str(src), str(out))
    assert [o["name"] for o in res["plan"]["outputs"]] == ["out", "h_n", "c_n"]
    d = 2 if bidirectional else 1
    X = np.random.default_rng(9).normal(size=(2, 9, I)).astype(np.float32)
    with torch.no_grad():
        t_out, t_h, t_c = (a.numpy() for a in net(torch.from_numpy(X)))
    o_out, o_h, o_c = _ort(src, {"x": X})
    final = [(np.transpose(a, (1, 0, 2)).reshape(2, -1)) for a in (t_h, o_h, t_c, o_c)]  # [L·D, B, H]
    for backend in BACKENDS:
        got = edgernn.load(str(out), backend=backend).predict(X)
        assert [g.shape for g in got] == [(2, 9, d * H), (2, layers * d * H), (2, layers * d * H)]
        for g, t, o in ((got[0], t_out, o_out), (got[1], *final[:2]), (got[2], *final[2:])):
            np.testing.assert_allclose(g, o, atol=ATOL, rtol=1e-4, err_msg=backend)
            np.testing.assert_allclose(g, t, atol=ATOL, rtol=1e-4, err_msg=backend)
    one = tmp_path / "c_n.ernn"  # c_n alone: one output, the same value
    compile_onnx(str(src), str(one), output="c_n")
    got = edgernn.load(str(one), backend="numpy").predict(X)
    np.testing.assert_allclose(got, final[3], atol=ATOL, rtol=1e-4)


# ------------------------------------------------------------------------------ hostile plans


@pytest.fixture(scope="module")
def good(tmp_path_factory):
    d = tmp_path_factory.mktemp("good")
    rng = np.random.default_rng(10)
    src, out = d / "m.onnx", d / "m.ernn"
    onnx.save(_lstm_graph("bidirectional", ["Y", "Y_h", "Y_c"], rng), str(src))
    compile_onnx(str(src), str(out))
    from edgernn.artifact import read

    return read(str(out))


def _bad(plan, change):
    p = copy.deepcopy(plan)
    change(p)
    return p


def _set(path, value):
    def change(p):
        obj = p
        for k in path[:-1]:
            obj = obj[k]
        obj[path[-1]] = value

    return change


def _outputs_the_input(p):
    p["outputs"][1].update(value="input", size=p["input"]["size"])


@pytest.mark.parametrize(
    ("change", "msg"),
    [
        (_set(["outputs", 1, "value"], "nope"), r"^unknown value: outputs\[1\]"),
        (_set(["outputs", 2, "name"], "Y_h"), r"^duplicate output: outputs\[2\]: two .* named 'Y_h'"),
        (_set(["outputs", 1, "size"], 3), r"^shape mismatch: outputs\[1\]"),
        (_set(["outputs", 1, "sequence"], "many_to_few"), r"^bad field: outputs\[1\]: sequence"),
        (_set(["outputs", 1, "labels"], ["a"]), r"^bad field: outputs\[1\]: labels"),
        (_set(["outputs", 1, "extra"], 1), r"^bad field: outputs\[1\]: unknown key"),
        (_set(["outputs", 1, "name"], ""), r"^bad field: outputs\[1\] 'name'"),
        (_set(["outputs", 1], "Y_h"), r"^bad field: outputs\[1\] is not an object"),
        (_set(["outputs"], []), r"^bad plan: 'outputs' must be a list of 2 to 64"),
        (_set(["outputs"], {"Y": 1}), r"^bad plan: 'outputs' must be a list"),
        (_set(["output", "sequence"], "many_to_one"), r"^bad field: 'output' must be outputs\[0\]"),
        (_outputs_the_input, r"^dangling output: .*'input'"),
    ],
)  # fmt: skip
def test_hostile_outputs_are_refused(good, change, msg):
    plan, tensors = good
    bad = _bad(plan, change)
    with pytest.raises(edgernn.ArtifactError, match=msg):
        validate_plan(bad)
    with pytest.raises(edgernn.ArtifactError, match=msg):
        edgernn.Model(bad, tensors, backend="numpy")


def test_hostile_outputs_in_a_file_are_refused(good, tmp_path):
    """The loader checks a file's plan: a raw safetensors file whose plan names an unknown output."""
    import json

    from safetensors.numpy import save_file

    plan, tensors = good
    bad = _bad(plan, _set(["outputs", 2, "value"], "ghost"))
    path = tmp_path / "bad.ernn"
    save_file(dict(tensors), str(path), metadata={"edgernn.plan": json.dumps(bad)})
    with pytest.raises(edgernn.ArtifactError, match=r"^unknown value: outputs\[2\]"):
        edgernn.load(str(path), backend="numpy")


def test_outputs_leave_room_for_the_runtime_concatenation(good, monkeypatch):
    import edgernn.plan_graph as pg

    plan, _ = good
    validate_plan(plan)
    monkeypatch.setattr(pg, "MAX_OPS", len(plan["ops"]) + 2 * len(plan["outputs"]) - 1)
    with pytest.raises(edgernn.ArtifactError, match=r"^bad plan: .* 2 of each per output included"):
        validate_plan(plan)


def test_outputs_need_format_2(good):
    plan, _ = good
    from edgernn.artifact import chain_plan

    one = {k: v for k, v in plan.items() if k not in ("outputs",)}
    with pytest.raises(edgernn.ArtifactError, match="not a chain|unused value"):
        chain_plan(one)  # without 'outputs' the other output values are unread
    f1 = {"format": "ernn", "format_version": 1, "input": {"size": 1}, "output": {"size": 1}}
    f1 |= {"layers": [{"kind": "activation", "name": "a", "input_size": 1, "activation": "tanh"}]}
    f1["outputs"] = [{"value": "a", "size": 1}, {"value": "b", "size": 1}]
    with pytest.raises(edgernn.ArtifactError, match=r"^bad plan: several model outputs"):
        validate_plan(f1)


def test_existing_single_output_plans_are_unchanged():
    """A format-1 plan and its format-2 upgrade: one output, an array from predict, named 'output'."""
    from builders import dense, model, recurrent

    from edgernn.artifact import upgrade

    rng = np.random.default_rng(11)
    plan, tensors = model([recurrent(rng, "lstm", "l", 4, 6), dense(rng, "d", 6, 2)], 4)
    X = rng.normal(size=(5, 4)).astype(np.float32)
    ys = []
    for p in (plan, upgrade(plan)):
        m = edgernn.Model(p, tensors, backend="numpy")
        assert "outputs" not in m.plan and m.output_names == ("output",) and m.output_sizes == (2,)
        y = m.predict(X)
        assert isinstance(y, np.ndarray) and y.shape == (5, 2)
        ys.append(y)
    np.testing.assert_array_equal(ys[0], ys[1])
