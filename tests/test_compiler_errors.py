"""The compiler refuses what it cannot compile exactly, with an error naming the op and node, and reads
external data only from inside the model's folder. Also the `edgernn compile` / `edgernn inspect` CLI."""

from __future__ import annotations

import json
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
onnx = pytest.importorskip("onnx")
from edgernn.export import compile_onnx  # noqa: E402
from edgernn.export.onnx import CompileError  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgernn.artifact import chain_layers  # noqa: E402


def _lstm_graph(extra_nodes=(), out="Y", t=5, lstm_inputs=None, lstm_attrs=None, outputs=("Y",), inits=()):
    rng = np.random.default_rng(0)
    i, h = 3, 4
    base = [
        numpy_helper.from_array(rng.normal(size=(1, 4 * h, i)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(1, 4 * h, h)).astype(np.float32), "R"),
    ]
    node = helper.make_node(
        "LSTM",
        lstm_inputs or ["x", "W", "R"],
        list(outputs),
        name="lstm_node",
        hidden_size=h,
        **(lstm_attrs or {}),
    )
    g = helper.make_graph(
        [node, *extra_nodes],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [t, "b", i])],
        [helper.make_tensor_value_info(out, TensorProto.FLOAT, None)],
        base + list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _compile(tmp_path, model, **kw):
    p = os.path.join(str(tmp_path), "m.onnx")
    onnx.save(model, p)
    return compile_onnx(p, os.path.join(str(tmp_path), "m.ernn"), **kw)


def test_unsupported_op_names_op_and_node(tmp_path):
    m = _lstm_graph([helper.make_node("LogSoftmax", ["Y"], ["z"], name="my_logsoftmax")], out="z")
    with pytest.raises(CompileError, match=r"LogSoftmax.*my_logsoftmax"):
        _compile(tmp_path, m)


def test_branching_graph_compiles_as_a_graph(tmp_path):
    """A residual connection (the LSTM output read by Relu and by the Add after it), refused while plans
    were chains, compiles to a format-2 graph plan and matches ONNX Runtime."""
    import onnxruntime as ort
    from compiler_common import mismatch, predict_onnx_layout

    nodes = [
        helper.make_node("Relu", ["Y"], ["r"], name="relu"),
        helper.make_node("Add", ["Y", "r"], ["z"], name="res"),
    ]
    res = _compile(tmp_path, _lstm_graph(nodes, out="z"))
    assert res["plan"]["format_version"] == 2
    x = np.random.default_rng(1).normal(size=(5, 2, 3)).astype(np.float32)
    want = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"]).run(
        None, {"x": x}
    )[0]
    got, conv = predict_onnx_layout(str(tmp_path / "m.ernn"), x, res["io"])
    assert mismatch(got, conv(want)) is None


def test_time_slice_other_than_last_is_refused(tmp_path):
    inits = [numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("s", 0), ("e", 1), ("a", 0))]
    nodes = [helper.make_node("Slice", ["Y", "s", "e", "a"], ["z"], name="first_step")]
    with pytest.raises(CompileError, match="first_step"):
        _compile(tmp_path, _lstm_graph(nodes, out="z", inits=inits))


def test_cell_state_output_compiles_like_onnx_runtime(tmp_path):
    """``Y_c`` (the final cell state) was refused; it compiles now, and predict gives ORT's value."""
    import onnxruntime as ort
    from compiler_common import mismatch, predict_onnx_layout

    res = _compile(tmp_path, _lstm_graph(out="Y_c", outputs=("Y", "Y_h", "Y_c")))
    assert res["plan"]["output"]["sequence"] == "many_to_one"
    x = np.random.default_rng(2).normal(size=(5, 2, 3)).astype(np.float32)
    sess = ort.InferenceSession(str(tmp_path / "m.onnx"), providers=["CPUExecutionProvider"])
    want = sess.run(["Y_c"], {"x": x})[0]
    got, conv = predict_onnx_layout(str(tmp_path / "m.ernn"), x, res["io"])
    assert mismatch(got, conv(want)) is None


def test_forward_y_h_is_many_to_one(tmp_path):
    res = _compile(tmp_path, _lstm_graph(out="Y_h", outputs=("", "Y_h")))
    assert res["plan"]["output"]["sequence"] == "many_to_one"


def test_unknown_attribute_is_refused(tmp_path):
    with pytest.raises(CompileError, match="unknown attribute 'weird'"):
        _compile(tmp_path, _lstm_graph(lstm_attrs={"weird": 1}))


@pytest.mark.parametrize("lens,ok", [([5, 5], True), ([3, 5], False), ([4, 4], False)])
def test_sequence_lens(lens, ok, tmp_path):
    inits = [numpy_helper.from_array(np.array(lens, np.int32), "lens")]
    m = _lstm_graph(lstm_inputs=["x", "W", "R", "", "lens"], inits=inits)
    if ok:
        assert any("sequence_lens" in n for n in _compile(tmp_path, m)["notes"])
    else:
        with pytest.raises(CompileError, match="sequence_lens"):
            _compile(tmp_path, m)


def test_initial_state_differing_per_batch_row_is_refused(tmp_path):
    h0 = np.zeros((1, 2, 4), np.float32)
    h0[0, 1, 0] = 1.0
    m = _lstm_graph(lstm_inputs=["x", "W", "R", "", "", "h0"], inits=[numpy_helper.from_array(h0, "h0")])
    with pytest.raises(CompileError, match="initial_h differs between batch rows"):
        _compile(tmp_path, m)


def test_initial_state_constant_becomes_plan_tensor(tmp_path):
    from edgernn import artifact

    h0 = np.tile(np.arange(4, dtype=np.float32)[None, None], (1, 3, 1))
    m = _lstm_graph(lstm_inputs=["x", "W", "R", "", "", "h0"], inits=[numpy_helper.from_array(h0, "h0")])
    res = _compile(tmp_path, m)
    plan, tensors = artifact.read(res["path"])
    np.testing.assert_array_equal(tensors[chain_layers(plan)[0]["tensors"]["initial_h"]], [[0, 1, 2, 3]])


def _external_model(tmp_path, location: str, data: bytes | None = None):
    """A model whose W initializer points at external data ``location``."""
    m = _lstm_graph()
    w = next(t for t in m.graph.initializer if t.name == "W")
    raw = numpy_helper.to_array(w).tobytes()
    w.ClearField("float_data")
    w.ClearField("raw_data")
    w.data_location = TensorProto.EXTERNAL
    for k, v in (("location", location), ("offset", "0"), ("length", str(len(raw)))):
        e = w.external_data.add()
        e.key, e.value = k, v
    d = os.path.join(str(tmp_path), "model")
    os.makedirs(d, exist_ok=True)
    p = os.path.join(d, "m.onnx")
    with open(p, "wb") as f:
        f.write(m.SerializeToString())
    return p, raw


def test_external_data_inside_folder_is_read(tmp_path):
    p, raw = _external_model(tmp_path, "w.bin")
    with open(os.path.join(os.path.dirname(p), "w.bin"), "wb") as f:
        f.write(raw)
    res = compile_onnx(p, os.path.join(str(tmp_path), "ok.ernn"))
    assert chain_layers(res["plan"])[0]["kind"] == "lstm"


@pytest.mark.parametrize("where", ["absolute", "dotdot", "symlink"])
def test_external_data_outside_folder_is_refused(where, tmp_path):
    outside = os.path.join(str(tmp_path), "secret.bin")
    p, raw = _external_model(tmp_path, "placeholder")
    with open(outside, "wb") as f:
        f.write(raw)
    if where == "absolute":
        loc = outside
    elif where == "dotdot":
        loc = "../secret.bin"
    else:
        loc = "link.bin"
        os.symlink(outside, os.path.join(os.path.dirname(p), "link.bin"))
    p, _ = _external_model(tmp_path, loc)
    why = "resolves outside the model's folder" if where == "symlink" else "not a plain relative path"
    with pytest.raises(CompileError, match=why):
        compile_onnx(p, os.path.join(str(tmp_path), "bad.ernn"))


def test_external_data_past_end_is_refused(tmp_path):
    p, raw = _external_model(tmp_path, "w.bin")
    with open(os.path.join(os.path.dirname(p), "w.bin"), "wb") as f:
        f.write(raw[:-4])
    with pytest.raises(CompileError, match="outside"):
        compile_onnx(p, os.path.join(str(tmp_path), "bad.ernn"))


def test_cli_compile_and_inspect(tmp_path, capsys):
    from edgernn.cli import main

    src = os.path.join(str(tmp_path), "m.onnx")
    onnx.save(_lstm_graph(out="Y_h", outputs=("", "Y_h")), src)
    out = os.path.join(str(tmp_path), "m.int8.ernn")
    # --max-error inf: every matrix int8 (the accuracy budget is test_quant_budget.py's)
    assert (
        main(["compile", src, "-o", out, "--quantize", "int8", "--max-error", "inf", "--labels", "a,b,c,d"])
        == 0
    )
    text = capsys.readouterr().out
    assert "lstm0" in text and "size ratio" in text
    assert main(["inspect", out]) == 0
    text = capsys.readouterr().out
    assert "quantization int8" in text and "labels: a, b, c, d" in text and "quantization report" in text
    assert main(["inspect", out, "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["ops"][0]["dtypes"] == ["F32", "I8"] and info["quantization_report"]["mode"] == "int8"
    assert main(["inspect", src]) == 0
    assert "compiles to (many_to_one): lstm(3->4)" in capsys.readouterr().out
    bad = os.path.join(str(tmp_path), "bad.onnx")
    onnx.save(_lstm_graph([helper.make_node("LogSoftmax", ["Y"], ["z"], name="ls")], out="z"), bad)
    assert main(["compile", bad, "-o", os.path.join(str(tmp_path), "bad.ernn")]) == 1
    assert "LogSoftmax node 'ls'" in capsys.readouterr().err


def test_split_of_bidirectional_output(tmp_path):
    """Split of Y along the direction axis keeps the forward half: compiled and checked against ORT."""
    ort = pytest.importorskip("onnxruntime")
    from compiler_common import mismatch, predict

    rng = np.random.default_rng(1)
    h, i = 3, 2
    inits = [
        numpy_helper.from_array(rng.normal(size=(2, 3 * h, i)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(2, 3 * h, h)).astype(np.float32), "R"),
        numpy_helper.from_array(np.array([1, 1], np.int64), "sp"),
    ]
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xt", "W", "R"], ["Y"], hidden_size=h, direction="bidirectional"),
        helper.make_node("Split", ["Y", "sp"], ["fw", "bw"], axis=1, name="split_dirs"),
        helper.make_node("Transpose", ["fw"], ["fwt"], perm=[2, 0, 1, 3]),
        helper.make_node("Reshape", ["fwt", "shape"], ["y"]),
    ]
    inits.append(numpy_helper.from_array(np.array([0, 0, -1], np.int64), "shape"))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", i])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    res = _compile(tmp_path, m)
    x = rng.normal(size=(2, 5, i)).astype(np.float32)
    exp = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    assert chain_layers(res["plan"])[-1]["kind"] == "dense"  # the selection of the forward half
    assert mismatch(predict(res["path"], x), exp) is None


def _step_graph(swap: bool):
    """x_t [B, I] + h [2, B, H] -> two stacked GRU steps -> y [B, H], h_out [2, B, H]."""
    rng = np.random.default_rng(3)
    i, h = 3, 4
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 3 * h, i)).astype(np.float32), "W0"),
        numpy_helper.from_array(rng.normal(size=(1, 3 * h, h)).astype(np.float32), "R0"),
        numpy_helper.from_array(rng.normal(size=(1, 3 * h, h)).astype(np.float32), "W1"),
        numpy_helper.from_array(rng.normal(size=(1, 3 * h, h)).astype(np.float32), "R1"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
        numpy_helper.from_array(np.array([0], np.int64), "s0"),
        numpy_helper.from_array(np.array([1], np.int64), "s1"),
        numpy_helper.from_array(np.array([2], np.int64), "s2"),
    ]
    nodes = [
        helper.make_node("Unsqueeze", ["x", "zero"], ["x1"]),
        helper.make_node("Slice", ["h", "s0", "s1", "zero"], ["h0"]),
        helper.make_node("Slice", ["h", "s1", "s2", "zero"], ["h1"]),
        helper.make_node("GRU", ["x1", "W0", "R0", "", "", "h0"], ["Y0", "Yh0"], hidden_size=h, name="g0"),
        helper.make_node("Squeeze", ["Y0", "s1"], ["y0"]),
        helper.make_node("GRU", ["y0", "W1", "R1", "", "", "h1"], ["Y1", "Yh1"], hidden_size=h, name="g1"),
        helper.make_node("Squeeze", ["Y1", "s1"], ["y1"]),
        helper.make_node("Squeeze", ["y1", "zero"], ["y"]),
        helper.make_node("Concat", ["Yh1", "Yh0"] if swap else ["Yh0", "Yh1"], ["h_out"], axis=0),
    ]
    g = helper.make_graph(
        nodes,
        "step",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", i]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [2, "b", h]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None),
        ],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def test_step_graph_state_wiring(tmp_path):
    """A step graph compiles to a stream whose step() follows ORT fed with its own state outputs; so does
    a graph that returns the layers' states in swapped positions (each layer's h is then set from the
    state output at the end of every step: h_next)."""
    ort = pytest.importorskip("onnxruntime")
    from compiler_common import mismatch

    import edgernn

    for swap in (False, True):
        m = _step_graph(swap=swap)
        res = _compile(tmp_path, m)
        assert res["state_inputs"] == ["h"] and res["ignored_outputs"] == ["h_out"]
        nexts = [
            op.get("attrs", op).get("h_next") for op in res["plan"].get("ops", res["plan"].get("layers", []))
        ]
        assert any(nexts) == swap
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        s = edgernn.load(res["path"]).stream()
        h = np.zeros((2, 1, 4), np.float32)
        xs = np.random.default_rng(0).normal(size=(10, 1, 3)).astype(np.float32)
        for t in range(10):
            y, h = sess.run(None, {"x": xs[t], "h": h})
            assert mismatch(s.step(xs[t, 0]), y[0]) is None, f"swap {swap} step {t}"


def test_concat_built_weights_with_external_data(tmp_path):
    """Weights built by Concat/Unsqueeze of initializers (as torch's dynamo exporter writes them), stored
    in an .onnx.data side file: folded to constants, compiled, and equal to ORT."""
    ort = pytest.importorskip("onnxruntime")
    from compiler_common import mismatch, predict

    rng = np.random.default_rng(4)
    i, h = 3, 5
    inits, nodes = [], []
    for role, cols in (("W", i), ("R", h)):
        parts = []
        for gate in "iofc":
            n = f"{role}_{gate}"
            inits.append(numpy_helper.from_array(rng.normal(size=(h, cols)).astype(np.float32), n))
            parts.append(n)
        nodes.append(helper.make_node("Concat", parts, [f"{role}2"], axis=0))
        nodes.append(helper.make_node("Unsqueeze", [f"{role}2", "ax0"], [role]))
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    nodes += [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("LSTM", ["xt", "W", "R"], ["Y"], hidden_size=h),
        helper.make_node("Squeeze", ["Y", "ax1"], ["ys"]),
        helper.make_node("Transpose", ["ys"], ["y"], perm=[1, 0, 2]),
    ]
    inits.append(numpy_helper.from_array(np.array([1], np.int64), "ax1"))
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", i])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits,
    )
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    d = os.path.join(str(tmp_path), "model")
    os.makedirs(d)
    p = os.path.join(d, "m.onnx")
    onnx.save_model(
        m,
        p,
        save_as_external_data=True,
        all_tensors_to_one_file=True,
        location="m.onnx.data",
        size_threshold=64,
    )
    stored = onnx.load(p, load_external_data=False)
    assert sum(t.data_location == TensorProto.EXTERNAL for t in stored.graph.initializer) == 8  # the gates
    res = compile_onnx(p, os.path.join(str(tmp_path), "m.ernn"))
    x = rng.normal(size=(2, 6, i)).astype(np.float32)
    exp = ort.InferenceSession(p, providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]
    assert mismatch(predict(res["path"], x), exp) is None


@pytest.mark.parametrize("op", ["RNN", "GRU", "LSTM"])
def test_bidirectional_initial_state(op, tmp_path):
    """Both directions of a bidirectional node start from their own constant initial state (ORT oracle)."""
    ort = pytest.importorskip("onnxruntime")
    from compiler_common import mismatch, predict

    rng = np.random.default_rng(2)
    g, i, h, b = {"RNN": 1, "GRU": 3, "LSTM": 4}[op], 3, 4, 2
    inits = [
        numpy_helper.from_array(rng.normal(size=(2, g * h, i)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(2, g * h, h)).astype(np.float32), "R"),
        numpy_helper.from_array(np.tile(rng.normal(size=(2, 1, h)), (1, b, 1)).astype(np.float32), "h0"),
        numpy_helper.from_array(np.tile(rng.normal(size=(2, 1, h)), (1, b, 1)).astype(np.float32), "c0"),
    ]
    ins = ["xt", "W", "R", "", "", "h0"] + (["c0"] if op == "LSTM" else [])
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node(op, ins, ["Y"], hidden_size=h, direction="bidirectional"),
        helper.make_node("Transpose", ["Y"], ["y"], perm=[2, 0, 1, 3]),  # [B, T, 2, H]
    ]
    graph = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", "t", i])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        inits if op == "LSTM" else inits[:3],
    )
    m = helper.make_model(graph, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)
    res = _compile(tmp_path, m)
    x = rng.normal(size=(b, 5, i)).astype(np.float32)
    exp = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[
        0
    ]
    assert mismatch(predict(res["path"], x), exp.reshape(b, 5, 2 * h)) is None
