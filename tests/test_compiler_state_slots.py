"""Step graphs whose state is read as data: state slots (the ``state`` op, ``kernels/ops/state.py``;
compiler: ``export/onnx/passes/slots.py``).

Oracle: ONNX Runtime running the same step graph with its state outputs fed back as its state inputs,
step by step from zeros. Checked for each graph: ``Stream.step``, ``Stream.run`` (in two chunks),
``Model.predict``, ``streams(n)`` (n independent streams), the numpy backend, ``reset``; plus the
overflow guard, the artifact checks of the new op and the compile errors of bad graphs.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export.onnx import CompileError, compile_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402
from edgernn.artifact import ArtifactError, validate_plan  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
F = TensorProto.FLOAT


def close(a, e) -> bool:
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    return a.shape == e.shape and bool(np.all(np.abs(a - e) <= ATOL + RTOL * np.abs(e)))


def _vi(name, n):
    return helper.make_tensor_value_info(name, F, ["batch", n if n else "k"])


def _const(name, arr):
    return numpy_helper.from_array(np.asarray(arr, np.float32), name)


def _save(path, nodes, inputs, outputs, inits=()) -> str:
    g = helper.make_graph(nodes, "step", inputs, outputs, list(inits))
    m = helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)])
    onnx.checker.check_model(m)
    onnx.save(m, str(path))
    return str(path)


def rnn_by_matmul(path, rng) -> str:
    """s' = tanh(x W + s U + b) (no RNN node), y = s' V."""
    W, U, b, V = (rng.normal(0, 0.5, sh) for sh in ((3, 5), (5, 5), (5,), (5, 2)))
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("MatMul", ["s", "U"], ["su"]),
        helper.make_node("Add", ["xw", "su"], ["a"]),
        helper.make_node("Add", ["a", "b"], ["a2"]),
        helper.make_node("Tanh", ["a2"], ["s_out"]),
        helper.make_node("MatMul", ["s_out", "V"], ["y"]),
    ]
    inits = [_const("W", W), _const("U", U), _const("b", b), _const("V", V)]
    return _save(path, nodes, [_vi("x", 3), _vi("s", 5)], [_vi("y", 2), _vi("s_out", 5)], inits)


def leaky_rnn_by_matmul(path, rng) -> str:
    """s' = 0.5 s + 0.5 tanh(x W + s U + b) (s read twice: no cell to fuse), y = s'."""
    W, U, b = (rng.normal(0, 0.5, sh) for sh in ((3, 5), (5, 5), (5,)))
    nodes = [
        helper.make_node("MatMul", ["x", "W"], ["xw"]),
        helper.make_node("MatMul", ["s", "U"], ["su"]),
        helper.make_node("Add", ["xw", "su"], ["a"]),
        helper.make_node("Add", ["a", "b"], ["a2"]),
        helper.make_node("Tanh", ["a2"], ["t"]),
        helper.make_node("Mul", ["t", "half"], ["t2"]),
        helper.make_node("Mul", ["s", "half"], ["s2"]),
        helper.make_node("Add", ["s2", "t2"], ["s_out"]),
        helper.make_node("Identity", ["s_out"], ["y"]),
    ]
    inits = [_const("W", W), _const("U", U), _const("b", b), _const("half", [0.5])]
    return _save(path, nodes, [_vi("x", 3), _vi("s", 5)], [_vi("y", 5), _vi("s_out", 5)], inits)


def ema(path, rng) -> str:
    """s' = a s + (1 - a) x, y = s' (per-feature a)."""
    a = rng.uniform(0.5, 0.95, 4)
    nodes = [
        helper.make_node("Mul", ["s", "a"], ["as"]),
        helper.make_node("Mul", ["x", "one_minus_a"], ["bx"]),
        helper.make_node("Add", ["as", "bx"], ["s_out"]),
        helper.make_node("Identity", ["s_out"], ["y"]),
    ]
    inits = [_const("a", a), _const("one_minus_a", 1 - a)]
    return _save(path, nodes, [_vi("x", 4), _vi("s", 4)], [_vi("y", 4), _vi("s_out", 4)], inits)


def counter(path, rng) -> str:
    """c' = c + 1, y = x * c' (the step count scales the input)."""
    nodes = [
        helper.make_node("Add", ["c", "one"], ["c_out"]),
        helper.make_node("Mul", ["x", "c_out"], ["y"]),
    ]
    return _save(
        path, nodes, [_vi("x", 3), _vi("c", 1)], [_vi("y", 3), _vi("c_out", 1)], [_const("one", [1.0])]
    )


def shift_register(path, rng) -> str:
    """A delay line in one state of the last 3 inputs: y = x(t-3) + x, s' = [s[2:], x]."""
    nodes = [
        helper.make_node("Slice", ["s", "st2", "en", "ax"], ["rest"]),
        helper.make_node("Concat", ["rest", "x"], ["s_out"], axis=1),
        helper.make_node("Slice", ["s", "st0", "st2", "ax"], ["old"]),
        helper.make_node("Add", ["old", "x"], ["y"]),
    ]
    ints = [
        numpy_helper.from_array(np.array([v], np.int64), n)
        for n, v in (("st0", 0), ("st2", 2), ("en", 6), ("ax", 1))
    ]
    return _save(path, nodes, [_vi("x", 2), _vi("s", 6)], [_vi("y", 2), _vi("s_out", 6)], ints)


def delay_chain(path, rng) -> str:
    """Two slots, y = s2 (x two steps ago): s1' = x, s2' = s1 (pairs named: s1' is not computed from s1)."""
    nodes = [
        helper.make_node("Identity", ["x"], ["s1_out"]),
        helper.make_node("Identity", ["s1"], ["s2_out"]),
        helper.make_node("Identity", ["s2"], ["y"]),
    ]
    ins = [_vi("x", 3), _vi("s1", 3), _vi("s2", 3)]
    return _save(path, nodes, ins, [_vi("y", 3), _vi("s1_out", 3), _vi("s2_out", 3)])


def lstm_and_arithmetic(path, rng) -> str:
    """h feeds an LSTM's initial_h (a recurrent state) and arithmetic: y = Y_h + 0.5 h; h' = Y_h, c' = Y_c."""
    H, I = 4, 3
    W, R, B = (
        rng.normal(0, 0.5, (1, 4 * H, I)),
        rng.normal(0, 0.5, (1, 4 * H, H)),
        rng.normal(0, 0.3, (1, 8 * H)),
    )
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax0"], ["x3"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["h3"]),
        helper.make_node("Unsqueeze", ["c", "ax0"], ["c3"]),
        helper.make_node("LSTM", ["x3", "W", "R", "B", "", "h3", "c3"], ["Y", "Yh", "Yc"], hidden_size=H),
        helper.make_node("Squeeze", ["Yh", "ax0"], ["h_out"]),
        helper.make_node("Squeeze", ["Yc", "ax0"], ["c_out"]),
        helper.make_node("Mul", ["h", "half"], ["hh"]),
        helper.make_node("Add", ["h_out", "hh"], ["y"]),
    ]
    inits = [_const("W", W), _const("R", R), _const("B", B), _const("half", [0.5])]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    ins = [_vi("x", I), _vi("h", H), _vi("c", H)]
    return _save(path, nodes, ins, [_vi("y", H), _vi("h_out", H), _vi("c_out", H)], inits)


def ort_steps(path, X, pairs) -> np.ndarray:
    """ONNX Runtime on the step graph, one stream (X: (T, I)), state fed back from zeros: (T, O)."""
    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])
    outs = [o.name for o in sess.get_outputs()]
    st = {i.name: np.zeros((1, i.shape[1]), np.float32) for i in sess.get_inputs()[1:]}
    ys = []
    for x in X:
        res = dict(zip(outs, sess.run(None, {"x": x[None], **st}), strict=True))
        ys.append(res[outs[0]][0])
        st = {i: res[o] for i, o in pairs}
    return np.stack(ys)


def check_streams(path, tmp_path, X, state=None) -> edgernn.Model:
    """The compiled artifact streams X (n, T, I) as ONNX Runtime does, on every entry point and both
    backends; returns the numba model."""
    out = tmp_path / "m.ernn"
    res = compile_onnx(path, out, state=state)
    pairs = res["state_pairs"]
    want = np.stack([ort_steps(path, x, pairs) for x in X])
    for backend in ("numba", "numpy"):
        m = edgernn.load(out, backend=backend)
        for b in range(len(X)):
            s = m.stream()
            assert close(np.stack([s.step(x) for x in X[b]]), want[b]), (backend, "step", b)
            s.reset()
            assert close(s.step(X[b, 0]), want[b, 0]), (backend, "reset")
            s2 = m.stream()
            k = X.shape[1] // 3
            assert close(np.concatenate([s2.run(X[b, :k]), s2.run(X[b, k:])]), want[b]), (backend, "run")
            last = m.plan["output"]["sequence"] == "many_to_one"  # predict: the last step's output
            assert close(m.predict(X[b]), want[b, -1] if last else want[b]), (backend, "predict")
        many = m.streams(len(X))
        got = np.stack([many.step(X[:, t]) for t in range(X.shape[1])], 1)
        assert close(got, want), (backend, "streams")
    return edgernn.load(out)


GRAPHS = [rnn_by_matmul, leaky_rnn_by_matmul, ema, counter, shift_register, lstm_and_arithmetic]


@pytest.mark.parametrize("build", GRAPHS, ids=[g.__name__ for g in GRAPHS])
def test_step_graph_with_state_read_as_data_streams_like_ort(build, tmp_path):
    rng = np.random.default_rng(abs(hash(build.__name__)) % 2**32)
    path = build(tmp_path / "g.onnx", rng)
    I = onnx.load(path).graph.input[0].type.tensor_type.shape.dim[1].dim_value
    X = rng.normal(size=(18, 13, I)).astype(np.float32)  # 18 streams: a full block of 16 and two more
    check_streams(path, tmp_path, X)


def test_slots_are_state_ops_and_the_lstm_keeps_its_state(tmp_path):
    """The EMA's state is a slot (a state op written back from the output); in the mixed graph h is a
    slot (read by Mul) and also the LSTM's own state, whose wiring is still checked."""
    rng = np.random.default_rng(1)
    m = check_streams(ema(tmp_path / "e.onnx", rng), tmp_path, rng.normal(size=(2, 6, 4)).astype(np.float32))
    ops = m.plan["ops"]
    st = [op for op in ops if op["kind"] == "state"]
    assert len(st) == 1 and st[0]["attrs"]["next"] in m.plan["values"]
    assert "recurrent" not in [op["kind"] for op in ops]
    res = compile_onnx(lstm_and_arithmetic(tmp_path / "l.onnx", rng), tmp_path / "l.ernn")
    kinds = [op["kind"] for op in res["plan"]["ops"]]
    assert "lstm" in kinds and kinds.count("state") == 1


def test_delay_line_of_two_slots_with_named_pairs(tmp_path):
    """s1' = x is not computed from s1: the pairs are named (--state); y is x from two steps before."""
    rng = np.random.default_rng(2)
    X = rng.normal(size=(3, 9, 3)).astype(np.float32)
    path = delay_chain(tmp_path / "d.onnx", rng)
    m = check_streams(path, tmp_path, X, state={"s1": "s1_out", "s2": "s2_out"})
    s = m.stream()
    ys = np.stack([s.step(x) for x in X[0]])
    assert np.array_equal(ys[2:], X[0, :-2]) and not ys[:2].any()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_overflow_guard_restores_the_slot(tmp_path, backend):
    """s' = s + x·x: a finite input near FLT_MAX drives the slot to +Inf; the step raises and the slot
    keeps its value, in one stream and in streams(n)."""
    nodes = [helper.make_node("Mul", ["x", "x"], ["xx"]), helper.make_node("Add", ["s", "xx"], ["s_out"])]
    nodes.append(helper.make_node("Identity", ["s_out"], ["y"]))
    path = _save(tmp_path / "o.onnx", nodes, [_vi("x", 2), _vi("s", 2)], [_vi("y", 2), _vi("s_out", 2)])
    compile_onnx(path, tmp_path / "o.ernn")
    m = edgernn.load(tmp_path / "o.ernn", backend=backend)
    s, b = m.stream(), m.streams(2)
    s.step(np.ones(2, np.float32))
    b.step(np.ones((2, 2), np.float32))
    before, bbefore = s.state, b.state
    big = np.full(2, 3.0e38, np.float32)
    with pytest.raises(edgernn.InputError, match="overflowed"):
        s.step(big)
    with pytest.raises(edgernn.InputError, match="overflowed"):
        b.step(np.stack([np.ones(2, np.float32), big]))
    assert np.array_equal(s.state, before) and np.array_equal(b.state, bbefore)
    assert close(s.step(np.ones(2, np.float32)), [2.0, 2.0])


def test_bad_step_graphs_give_one_line_errors(tmp_path):
    """A state output of another shape than its input; a state read as data with no state output."""
    nodes = [
        helper.make_node("Slice", ["s", "st0", "st3", "ax"], ["s3"]),
        helper.make_node("Add", ["s3", "x"], ["s_out"]),
        helper.make_node("Identity", ["s_out"], ["y"]),
    ]
    ints = [
        numpy_helper.from_array(np.array([v], np.int64), n) for n, v in (("st0", 0), ("st3", 3), ("ax", 1))
    ]
    path = _save(
        tmp_path / "b.onnx", nodes, [_vi("x", 3), _vi("s", 4)], [_vi("y", 3), _vi("s_out", None)], ints
    )
    with pytest.raises(
        CompileError, match=r"state output 's_out' has feature shape \[3\], its state input 's' \[4\]"
    ) as e:
        compile_onnx(path, tmp_path / "b.ernn")
    assert "\n" not in str(e.value)
    nodes = [helper.make_node("Add", ["s", "x"], ["y"])]
    path = _save(tmp_path / "c.onnx", nodes, [_vi("x", 3), _vi("s", 3)], [_vi("y", 3)])
    with pytest.raises(CompileError, match="expected exactly one data input") as e:
        compile_onnx(path, tmp_path / "c.ernn")
    assert "\n" not in str(e.value)


def test_artifact_checks_the_state_op(tmp_path):
    """Format 2 refuses a state op whose next value is unknown, of another size, or missing, and a state op
    in a graph that cannot stream; format 1 has no state op."""
    rng = np.random.default_rng(3)
    res = compile_onnx(ema(tmp_path / "e.onnx", rng), tmp_path / "e.ernn")
    plan = res["plan"]
    k = next(i for i, op in enumerate(plan["ops"]) if op["kind"] == "state")
    validate_plan(plan)

    def bad(mutate, match):
        p = validate_plan(plan)
        mutate(p)
        with pytest.raises(ArtifactError, match=match):
            validate_plan(p)

    bad(lambda p: p["ops"][k]["attrs"].update(next="nowhere"), "unknown value: .*next value 'nowhere'")

    def other_size(p):
        p["values"]["extra"] = {"shape": [3]}
        gx = {"kind": "gather", "name": "gx", "inputs": [p["input"]["value"]], "outputs": ["extra"]}
        p["ops"].append(gx | {"tensors": {"index": "gx.i"}})
        p["ops"][k]["attrs"]["next"] = "extra"

    bad(other_size, "shape mismatch: .*has shape \\[4\\] but its next value 'extra' has shape \\[3\\]")
    bad(lambda p: p["ops"][k]["attrs"].pop("next"), "bad field: .*'next'")
    bad(
        lambda p: p["ops"][k].update(inputs=[p["input"]["value"]]),
        "bad graph: .*'inputs' must be a list of 0",
    )
    one = {"format": "ernn", "format_version": 1, "input": {"size": 4}, "output": {"size": 4},
           "layers": [{"kind": "state", "name": "s", "input_size": 4, "next": "x"}]}  # fmt: skip
    with pytest.raises(ArtifactError, match="bad layer: layer 0: a state op reads no value"):
        validate_plan(one)


# ------------------------------------------------------------------ MatMul of two data values


def _reshape(name, src, shape, nodes, inits):
    inits.append(numpy_helper.from_array(np.array(shape, np.int64), f"{name}.shape"))
    nodes.append(helper.make_node("Reshape", [src, f"{name}.shape"], [name]))


def data_matmul(path, rng, lead=()) -> str:
    """y = (x W1 as [.., 2, 3]) @ (x W2 as [.., 3, 4]) flattened; ``lead``: extra leading feature axes."""
    nb = int(np.prod(lead)) if lead else 1
    nodes, inits = (
        [],
        [_const("W1", rng.normal(size=(6, 6 * nb))), _const("W2", rng.normal(size=(6, 12 * nb)))],
    )
    nodes += [helper.make_node("MatMul", ["x", "W1"], ["p"]), helper.make_node("MatMul", ["x", "W2"], ["q"])]
    _reshape("a", "p", [-1, *lead, 2, 3], nodes, inits)
    _reshape("b", "q", [-1, *lead, 3, 4], nodes, inits)
    nodes.append(helper.make_node("MatMul", ["a", "b"], ["ab"]))
    _reshape("y", "ab", [-1, 8 * nb], nodes, inits)
    return _save(path, nodes, [_vi("x", 6)], [_vi("y", 8 * nb)], inits)


def multiplicative_rnn(path, rng) -> str:
    """s' = tanh(s @ M(x)), M(x) = x W as [4, 4]: the state times a matrix made from the input; y = s'."""
    nodes, inits = (
        [helper.make_node("MatMul", ["x", "W"], ["xw"])],
        [_const("W", rng.normal(0, 0.4, (3, 16)))],
    )
    _reshape("mx", "xw", [-1, 4, 4], nodes, inits)
    _reshape("s3", "s", [-1, 1, 4], nodes, inits)
    nodes.append(helper.make_node("MatMul", ["s3", "mx"], ["sm"]))
    _reshape("pre", "sm", [-1, 4], nodes, inits)
    nodes += [helper.make_node("Add", ["pre", "xb"], ["pre2"]), helper.make_node("Tanh", ["pre2"], ["s_out"])]
    nodes.append(helper.make_node("Identity", ["s_out"], ["y"]))
    inits.append(_const("xb", rng.normal(size=4)))
    return _save(path, nodes, [_vi("x", 3), _vi("s", 4)], [_vi("y", 4), _vi("s_out", 4)], inits)


@pytest.mark.parametrize("lead", [(), (2,), (2, 3)])
def test_matmul_of_two_data_values_matches_ort(tmp_path, lead):
    """MatMul between two computed tensors is a matmul op (leading feature axes batched); each row of a
    batch through step equals ONNX Runtime on the batch, on both backends."""
    rng = np.random.default_rng(5)
    path = data_matmul(tmp_path / "mm.onnx", rng, lead)
    res = compile_onnx(path, tmp_path / "mm.ernn")
    mm = [op for op in res["plan"]["ops"] if op["kind"] == "matmul"]
    assert len(mm) == 1 and mm[0]["attrs"]["batch"] == (int(np.prod(lead)) if lead else 1)
    X = rng.normal(size=(7, 6)).astype(np.float32)
    want = ort.InferenceSession(path, providers=["CPUExecutionProvider"]).run(None, {"x": X})[0]
    for backend in ("numba", "numpy"):
        s = edgernn.load(tmp_path / "mm.ernn", backend=backend).stream()
        assert close(np.stack([s.step(x) for x in X]), want), backend


def test_matmul_of_the_state_and_the_input_streams_like_ort(tmp_path):
    """A state slot read by a data MatMul: s' = tanh(s @ M(x) + b)."""
    rng = np.random.default_rng(6)
    check_streams(
        multiplicative_rnn(tmp_path / "m.onnx", rng), tmp_path, rng.normal(size=(17, 9, 3)).astype(np.float32)
    )


def test_matmul_over_the_batch_axis_is_refused(tmp_path):
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0]),
        helper.make_node("MatMul", ["xt", "x"], ["y"]),
    ]
    out = helper.make_tensor_value_info("y", F, [6, 6])
    path = _save(tmp_path / "t.onnx", nodes, [_vi("x", 6)], [out])
    with pytest.raises(CompileError, match="MatMul over a batch or time axis") as e:
        compile_onnx(path, tmp_path / "t.ernn")
    assert "\n" not in str(e.value)


# ------------------------------------------------------- a recurrent state set from the graph


def lstm_state_transformed(path, rng) -> str:
    """An LSTM step whose state outputs are computed from Y_h/Y_c: h' = 0.5 Y_h + 0.5 h, c' = tanh(Y_c);
    y = Y_h. The layer's state is set from h', c' at the end of each step."""
    H, I = 4, 3
    W, R = rng.normal(0, 0.5, (1, 4 * H, I)), rng.normal(0, 0.5, (1, 4 * H, H))
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax0"], ["x3"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["h3"]),
        helper.make_node("Unsqueeze", ["c", "ax0"], ["c3"]),
        helper.make_node("LSTM", ["x3", "W", "R", "", "", "h3", "c3"], ["Y", "Yh", "Yc"], hidden_size=H),
        helper.make_node("Squeeze", ["Yh", "ax0"], ["yh"]),
        helper.make_node("Squeeze", ["Yc", "ax0"], ["yc"]),
        helper.make_node("Mul", ["yh", "half"], ["a"]),
        helper.make_node("Mul", ["h", "half"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["h_out"]),
        helper.make_node("Tanh", ["yc"], ["c_out"]),
        helper.make_node("Identity", ["yh"], ["y"]),
    ]
    inits = [_const("W", W), _const("R", R), _const("half", [0.5])]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    ins = [_vi("x", I), _vi("h", H), _vi("c", H)]
    return _save(path, nodes, ins, [_vi("y", H), _vi("h_out", H), _vi("c_out", H)], inits)


def gru_state_normalized(path, rng) -> str:
    """A GRU step whose state output is a LayerNormalization of Y_h: h' = LN(Y_h)."""
    H, I = 6, 3
    W, R = rng.normal(0, 0.5, (1, 3 * H, I)), rng.normal(0, 0.5, (1, 3 * H, H))
    nodes = [
        helper.make_node("Unsqueeze", ["x", "ax0"], ["x3"]),
        helper.make_node("Unsqueeze", ["h", "ax0"], ["h3"]),
        helper.make_node(
            "GRU", ["x3", "W", "R", "", "", "h3"], ["Y", "Yh"], hidden_size=H, linear_before_reset=1
        ),
        helper.make_node("Squeeze", ["Yh", "ax0"], ["yh"]),
        helper.make_node("LayerNormalization", ["yh", "g", "bb"], ["h_out"], axis=-1),
        helper.make_node("Identity", ["h_out"], ["y"]),
    ]
    inits = [
        _const("W", W),
        _const("R", R),
        _const("g", rng.uniform(0.5, 1.5, H)),
        _const("bb", rng.normal(size=H)),
    ]
    inits.append(numpy_helper.from_array(np.array([0], np.int64), "ax0"))
    return _save(path, nodes, [_vi("x", I), _vi("h", H)], [_vi("y", H), _vi("h_out", H)], inits)


@pytest.mark.parametrize("build", [lstm_state_transformed, gru_state_normalized])
def test_recurrent_state_set_from_the_graph_streams_like_ort(build, tmp_path):
    """A state output that is not the recurrent layer's own Y_h/Y_c: the layer's h (and c) take it at the
    end of every step (h_next/c_next), so step/run/streams(n)/numpy follow ONNX Runtime."""
    rng = np.random.default_rng(9)
    path = build(tmp_path / "g.onnx", rng)
    m = check_streams(path, tmp_path, rng.normal(size=(17, 10, 3)).astype(np.float32))
    rec = [op for op in m.plan["ops"] if op["kind"] in ("lstm", "gru")]
    assert len(rec) == 1 and rec[0]["attrs"].get("h_next") in m.plan["values"]


def test_artifact_checks_h_next(tmp_path):
    """h_next/c_next name a value of hidden_size that some op writes; format 1 has none."""
    rng = np.random.default_rng(10)
    res = compile_onnx(lstm_state_transformed(tmp_path / "l.onnx", rng), tmp_path / "l.ernn")
    plan = validate_plan(res["plan"])
    k = next(i for i, op in enumerate(plan["ops"]) if op["kind"] == "lstm")
    for key, value, match in (
        ("h_next", "nowhere", "unknown value: .*h_next 'nowhere'"),
        ("c_next", plan["input"]["value"], "shape mismatch: .*c_next"),
        ("h_next", 3, "bad field: .*'h_next' must name a value"),
    ):
        p = validate_plan(plan)
        p["ops"][k]["attrs"][key] = value
        with pytest.raises(ArtifactError, match=match):
            validate_plan(p)
    one = {"format": "ernn", "format_version": 1, "input": {"size": 3}, "output": {"size": 4},
           "layers": [{"kind": "rnn", "name": "r", "input_size": 3, "hidden_size": 4, "h_next": "x",
                       "tensors": {}}]}  # fmt: skip
    with pytest.raises(ArtifactError, match="bad layer: .*need a format-2 plan"):
        validate_plan(one)
