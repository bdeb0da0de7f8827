"""Comparisons, logic, ``Where`` (``export/onnx/ops/logic.py``; kernels ``binary``/``unary``/``where``) and
``Scan`` (``export/onnx/ops/scan.py``) on hand-built ONNX graphs.

Oracle: ONNX Runtime on the same graph. Row graphs ``[batch, F]`` are compared over their rows
(``predict`` and ``run``); the Scan graphs ``[batch, T, F]`` one sequence at a time: ``Stream.run`` over
the T rows, ``step`` by step and ``predict`` against ORT's whole sequence; the numpy backend too.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export.onnx import CompileError, compile_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
F = TensorProto.FLOAT
BACKENDS = ["numba", "numpy"]


def close(a, e) -> bool:
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    same = (np.abs(a - e) <= ATOL + RTOL * np.abs(e)) | (a == e)  # a == e: equal infinities
    return a.shape == e.shape and bool(np.all(same))


def _c(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _save(path, nodes, inputs, outputs, inits=(), opset=17) -> str:
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return str(path)


def _ort(path, X) -> np.ndarray:
    s = ort.InferenceSession(path)
    return s.run(None, {s.get_inputs()[0].name: X})[0]


def _rows_graph(tmp_path, name, nodes, inits, n_out) -> str:
    x = helper.make_tensor_value_info("x", F, ["batch", 4])
    y = helper.make_tensor_value_info("y", F, ["batch", n_out])
    return _save(tmp_path / f"{name}.onnx", nodes, [x], [y], inits)


def _check_rows(path, X, backend):
    ref = _ort(path, X)
    res = compile_onnx(path, path + ".ernn")
    m = edgernn.load(res["path"], backend=backend)
    assert close(m.predict(X), ref)
    assert close(m.stream().run(X), ref)
    return m


# ----------------------------------------------------------------------------------------- comparisons

CMP = ["Greater", "Less", "GreaterOrEqual", "LessOrEqual", "Equal"]


@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("op", CMP)
def test_comparison_against_constants_and_between_values_broadcast(tmp_path, op, backend):
    """op(x, c) (per-feature constant), op(c, x) (scalar constant first), and op between two data
    values broadcast [batch, 4, 1] against [batch, 1, 3]; ties are on purpose (integer inputs)."""
    rng = np.random.default_rng(3)
    W = np.round(rng.normal(0, 1, (4, 3)))
    nodes = [
        helper.make_node(op, ["x", "c"], ["b1"]),
        helper.make_node(op, ["k", "x"], ["b2"]),
        helper.make_node("MatMul", ["x", "W"], ["u"]),
        helper.make_node("Unsqueeze", ["x", "ax2"], ["xu"]),
        helper.make_node("Unsqueeze", ["u", "ax1"], ["uu"]),
        helper.make_node(op, ["xu", "uu"], ["b3"]),
        helper.make_node("Flatten", ["b3"], ["b3f"], axis=1),
        helper.make_node("Concat", ["b1", "b2", "b3f"], ["b"], axis=1),
        helper.make_node("Cast", ["b"], ["y"], to=F),
    ]
    inits = [_c("c", [0.0, 1.0, -1.0, 2.0]), _c("k", 1.0), _c("W", W)]
    inits += [numpy_helper.from_array(np.array([a], np.int64), f"ax{a}") for a in (1, 2)]
    path = _rows_graph(tmp_path, op, nodes, inits, 4 + 4 + 12)
    X = rng.integers(-2, 3, (64, 4)).astype(np.float32)
    _check_rows(path, X, backend)


@pytest.mark.parametrize("backend", BACKENDS)
def test_and_or_not(tmp_path, backend):
    nodes = [
        helper.make_node("Greater", ["x", "z"], ["a"]),
        helper.make_node("Less", ["x", "h"], ["b"]),
        helper.make_node("And", ["a", "b"], ["p"]),
        helper.make_node("Not", ["b"], ["nb"]),
        helper.make_node("Or", ["a", "nb"], ["q"]),
        helper.make_node("Not", ["q"], ["r"]),
        helper.make_node("Concat", ["p", "q", "r"], ["o"], axis=1),
        helper.make_node("Cast", ["o"], ["y"], to=F),
    ]
    path = _rows_graph(tmp_path, "logic", nodes, [_c("z", 0.0), _c("h", [0.5, 1.0, -0.5, 0.0])], 12)
    _check_rows(path, np.random.default_rng(4).normal(size=(50, 4)).astype(np.float32), backend)


# ----------------------------------------------------------------------------------------------- Where


@pytest.mark.parametrize("backend", BACKENDS)
def test_where_selects_and_never_leaks_the_other_branch(tmp_path, backend):
    """Where(x > 0, log x, -1): log x is NaN/-Inf where x <= 0; Where(x < 0.5, exp(100 x), x): exp is
    Inf where x >= 0.5; Where(cond [batch,4,1], a [batch,1,3], b [batch,4,3]) broadcast; a constant
    first branch. None of the unselected Inf/NaN may reach the output."""
    nodes = [
        helper.make_node("Greater", ["x", "z"], ["pos"]),
        helper.make_node("Log", ["x"], ["lx"]),
        helper.make_node("Where", ["pos", "lx", "m1"], ["w1"]),
        helper.make_node("Less", ["x", "h"], ["small"]),
        helper.make_node("Mul", ["x", "k100"], ["x100"]),
        helper.make_node("Exp", ["x100"], ["ex"]),
        helper.make_node("Where", ["small", "ex", "x"], ["w2"]),
        helper.make_node("Unsqueeze", ["pos", "ax2"], ["pu"]),
        helper.make_node("MatMul", ["x", "W"], ["u"]),
        helper.make_node("Unsqueeze", ["u", "ax1"], ["uu"]),
        helper.make_node("MatMul", ["x", "W4"], ["v"]),
        helper.make_node("Reshape", ["v", "sh"], ["vv"]),
        helper.make_node("Where", ["pu", "uu", "vv"], ["w3"]),
        helper.make_node("Flatten", ["w3"], ["w3f"], axis=1),
        helper.make_node("Where", ["small", "cst", "x"], ["w4"]),
        helper.make_node("Concat", ["w1", "w2", "w3f", "w4"], ["y"], axis=1),
    ]
    rng = np.random.default_rng(5)
    inits = [_c("z", 0.0), _c("m1", -1.0), _c("h", 0.5), _c("k100", 100.0), _c("cst", [7.0, -7.0, 1e30, 0])]
    inits += [_c("W", rng.normal(size=(4, 3))), _c("W4", rng.normal(size=(4, 12)))]
    inits += [numpy_helper.from_array(np.array([a], np.int64), f"ax{a}") for a in (1, 2)]
    inits += [numpy_helper.from_array(np.array([-1, 4, 3], np.int64), "sh")]
    path = _rows_graph(tmp_path, "where", nodes, inits, 4 + 4 + 12 + 4)
    X = rng.normal(0, 2, (80, 4)).astype(np.float32)
    X[:, 0] = np.where(X[:, 0] > 3, 0.0, X[:, 0])  # x = 0: log gives -Inf in the unselected branch
    ref = _ort(path, X)
    assert np.isfinite(ref).all() and (X <= 0).any() and (X >= 0.5).any()
    _check_rows(path, X, backend)


def test_a_constant_operand_holding_inf_is_refused(tmp_path):
    nodes = [helper.make_node("Less", ["x", "c"], ["b"]), helper.make_node("Cast", ["b"], ["y"], to=F)]
    path = _rows_graph(tmp_path, "inf", nodes, [_c("c", [0, 1, np.inf, 2])], 4)
    with pytest.raises(CompileError, match="Inf or NaN"):
        compile_onnx(path, path + ".ernn")


def test_where_of_constants_only_needs_data(tmp_path):
    nodes = [helper.make_node("Where", ["cb", "a", "b"], ["y"])]
    inits = [numpy_helper.from_array(np.array([True, False, True, False]), "cb"), _c("a", 1), _c("b", 2)]
    x = helper.make_tensor_value_info("x", F, ["batch", 4])
    nodes.append(helper.make_node("Add", ["x", "y"], ["out"]))
    out = helper.make_tensor_value_info("out", F, ["batch", 4])
    path = _save(tmp_path / "wc.onnx", nodes, [x], [out], inits)  # folds: x + [1, 2, 1, 2]
    X = np.random.default_rng(0).normal(size=(5, 4)).astype(np.float32)
    m = edgernn.load(compile_onnx(path, path + ".ernn")["path"])
    assert close(m.predict(X), _ort(path, X))


# ------------------------------------------------------------------------------------------------ Scan


def _scan_graph(tmp_path, rng, name="scan", input_axes=(1,), output_axes=(0, 1), directions=None) -> str:
    """x [batch, T, 3] scanned along axis 1. Two state variables: s1 [1, 4] (a non-zero constant start)
    s1' = tanh(x_t W + s1 U), and s2 [1, 2] (zeros) s2' = s2 + s1' V; two scan outputs: y1 = s1'
    (stacked on axis 0: [T, batch, 4]) and y2 = Where(s2' > 0, s2', 0.5 s2') (axis 1: [batch, T, 2]).
    Graph outputs: y = y2, y1t = y1 transposed to [batch, T, 4], and the final s2."""
    body = helper.make_graph(
        [
            helper.make_node("MatMul", ["x_t", "W"], ["xw"]),
            helper.make_node("MatMul", ["s1", "U"], ["su"]),
            helper.make_node("Add", ["xw", "su"], ["a"]),
            helper.make_node("Tanh", ["a"], ["s1n"]),
            helper.make_node("MatMul", ["s1n", "V"], ["sv"]),
            helper.make_node("Add", ["s2", "sv"], ["s2n"]),
            helper.make_node("Greater", ["s2n", "zero"], ["p"]),
            helper.make_node("Mul", ["s2n", "half"], ["s2h"]),
            helper.make_node("Where", ["p", "s2n", "s2h"], ["y2"]),
            helper.make_node("Identity", ["s1n"], ["y1"]),
        ],
        "body",
        [
            helper.make_tensor_value_info("s1", F, [1, 4]),
            helper.make_tensor_value_info("s2", F, [1, 2]),
            helper.make_tensor_value_info("x_t", F, [1, 3]),
        ],
        [helper.make_tensor_value_info(n, F, None) for n in ("s1n", "s2n", "y1", "y2")],
        [_c("zero", 0.0), _c("half", 0.5)],
    )
    kw = {"scan_input_axes": list(input_axes), "scan_output_axes": list(output_axes)}
    if directions is not None:
        kw["scan_input_directions"] = list(directions)
    nodes = [
        helper.make_node("Scan", ["s1_0", "s2_0", "x"], ["s1f", "s2f", "y1", "y"], body=body,
                         num_scan_inputs=1, **kw),
        helper.make_node("Transpose", ["y1"], ["y1t"], perm=[1, 0, 2]),
    ]  # fmt: skip
    inits = [_c("W", rng.normal(0, 0.7, (3, 4))), _c("U", rng.normal(0, 0.5, (4, 4)))]
    inits += [
        _c("V", rng.normal(0, 0.5, (4, 2))),
        _c("s1_0", rng.normal(0, 0.5, (1, 4))),
        _c("s2_0", [[0, 0]]),
    ]
    x = helper.make_tensor_value_info("x", F, [1, "time", 3])
    outs = [
        helper.make_tensor_value_info("y", F, [1, "time", 2]),
        helper.make_tensor_value_info("y1t", F, [1, "time", 4]),
        helper.make_tensor_value_info("s2f", F, [1, 2]),
    ]
    return _save(tmp_path / f"{name}.onnx", nodes, [x], outs, inits)


@pytest.mark.parametrize("backend", BACKENDS)
def test_scan_two_states_two_scan_outputs_matches_ort(tmp_path, backend):
    rng = np.random.default_rng(6)
    path = _scan_graph(tmp_path, rng)
    X = rng.normal(size=(1, 25, 3)).astype(np.float32)
    s = ort.InferenceSession(path)
    y, y1t, s2f = s.run(None, {"x": X})
    for out, ref in (("y", y[0]), ("y1t", y1t[0])):
        res = compile_onnx(path, str(tmp_path / f"{out}.ernn"), output=out)
        assert res["io"]["output_axes"] == ["N", "T", ref.shape[1]]
        m = edgernn.load(res["path"], backend=backend)
        assert close(m.stream().run(X[0]), ref)
        st = m.stream()
        assert close(np.stack([st.step(x) for x in X[0, :10]]), ref[:10])
        assert close(st.run(X[0, 10:]), ref[10:])  # the stream continues its state
        assert close(m.predict(X[0]), ref)
    res = compile_onnx(path, str(tmp_path / "s2f.ernn"), output="s2f")
    m = edgernn.load(res["path"], backend=backend)
    assert close(m.stream().run(X[0])[-1], s2f[0])  # many_to_one: the final state after the last step


def test_scan_on_axis_zero_of_a_transposed_input(tmp_path):
    """scan_input_axes / scan_output_axes omitted (axis 0): the input transposed to [T, batch, 3]."""
    rng = np.random.default_rng(7)
    p = _scan_graph(tmp_path, rng, "inner", input_axes=(0,), output_axes=(0, 0))
    m = onnx.load(p)
    g = m.graph
    scan = g.node[0]
    for a in list(scan.attribute):
        if a.name in ("scan_input_axes", "scan_output_axes"):
            scan.attribute.remove(a)
    scan.input[2] = "xt"
    scan.output[3] = "yt"
    g.node.insert(0, helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]))
    g.node.append(helper.make_node("Transpose", ["yt"], ["y"], perm=[1, 0, 2]))
    onnx.save(m, p)
    X = rng.normal(size=(1, 20, 3)).astype(np.float32)
    ref = _ort(p, X)[0]
    mm = edgernn.load(compile_onnx(p, p + ".ernn", output="y")["path"])
    assert close(mm.stream().run(X[0]), ref)


def test_reverse_scan_is_refused_naming_the_attribute(tmp_path):
    path = _scan_graph(tmp_path, np.random.default_rng(8), "rev", directions=(1,))
    with pytest.raises(CompileError, match="scan_input_directions") as e:
        compile_onnx(path, str(tmp_path / "r.ernn"), output="y")
    assert "\n" not in str(e.value)


def test_scan_over_a_static_axis_is_refused(tmp_path):
    path = _scan_graph(tmp_path, np.random.default_rng(9), "static", input_axes=(2,), output_axes=(0, 1))
    with pytest.raises(CompileError, match="scan_input_axes"):
        compile_onnx(path, str(tmp_path / "s.ernn"), output="y")


def test_scan_survives_specializing_a_bound_input(tmp_path):
    """A graph input bound with ``bind`` (the graph is specialized first): the Scan is copied through."""
    rng = np.random.default_rng(10)
    p = _scan_graph(tmp_path, rng, "bound")
    m = onnx.load(p)
    m.graph.input.append(helper.make_tensor_value_info("gain", F, [1]))
    m.graph.node.append(helper.make_node("Mul", ["y", "gain"], ["yg"]))
    m.graph.output.append(helper.make_tensor_value_info("yg", F, [1, "time", 2]))
    onnx.save(m, p)
    X = rng.normal(size=(1, 15, 3)).astype(np.float32)
    s = ort.InferenceSession(p)
    ref = s.run(["yg"], {"x": X, "gain": np.array([2.0], np.float32)})[0][0]
    res = compile_onnx(p, p + ".ernn", output="yg", bind={"gain": 2.0})
    assert close(edgernn.load(res["path"]).stream().run(X[0]), ref)
