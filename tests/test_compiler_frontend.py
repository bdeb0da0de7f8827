"""The compiler's front end: bindings (``--set``), shapes (``--shape``), ``If`` with a constant condition,
state pairs (``--state``), on small hand-built graphs and on the six Silero VAD files of ``silero-vad``
6.2.3. ONNX Runtime is the oracle: the folded graph must give the original file's outputs."""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from compiler_common import mismatch  # noqa: E402
from edgernn.export.onnx import CompileError, compile_onnx, front_end  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402


def _all_nodes(g):
    for n in g.node:
        yield n
        for a in n.attribute:
            if a.HasField("g"):
                yield from _all_nodes(a.g)


def _sess(model):
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), so, providers=["CPUExecutionProvider"])


def _vi(name, elem, dims):
    return helper.make_tensor_value_info(name, elem, dims)


def _init(name, arr):
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, inputs, outputs, inits=(), opset=17):
    g = helper.make_graph(nodes, "g", inputs, outputs, list(inits))
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


# ----------------------------------------------------------------------------- hand-built graphs


def _branch(name, nodes, outs, inits=()):
    return helper.make_graph(nodes, name, [], [_vi(o, TensorProto.FLOAT, None) for o in outs], list(inits))


def _rate_model(rng, i=6, h=5):
    """x [b, t, i] -> GRU -> Y squeezed -> MatMul head; the head is chosen by ``If(rate == 16000)``, whose
    else branch multiplies x^T [b, i, t] by a [5, 2] matrix (it does not type-check unless t = 5) and
    whose then branch holds a nested ``If`` on ``Shape(x)[2] == i`` (a shape test); a second If's branch
    reuses a name the first one uses."""
    w = rng.normal(0, 0.5, (1, 3 * h, i)).astype(np.float32)
    r = rng.normal(0, 0.5, (1, 3 * h, h)).astype(np.float32)
    head = rng.normal(0, 0.5, (h, 2)).astype(np.float32)
    bad = rng.normal(0, 0.5, (5, 2)).astype(np.float32)
    inner_then = _branch("it", [helper.make_node("MatMul", ["ys", "head"], ["t"])], ["t"])
    inner_else = _branch("ie", [helper.make_node("Neg", ["ys"], ["t2"])], ["t2"])
    then_b = _branch(
        "then",
        [
            helper.make_node("Shape", ["x"], ["sx"]),
            helper.make_node("Gather", ["sx", "two"], ["d2"], axis=0),
            helper.make_node("Equal", ["d2", "isz"], ["same"]),
            helper.make_node("If", ["same"], ["u"], then_branch=inner_then, else_branch=inner_else),
        ],
        ["u"],
    )
    else_b = _branch(
        "else",
        [
            helper.make_node("Transpose", ["x"], ["xT"], perm=[0, 2, 1]),
            helper.make_node("MatMul", ["xT", "bad"], ["t"]),
        ],
        ["t"],
    )
    nodes = [
        helper.make_node("Transpose", ["x"], ["xt"], perm=[1, 0, 2]),
        helper.make_node("GRU", ["xt", "W", "R"], ["Y"], hidden_size=h),
        helper.make_node("Squeeze", ["Y", "one"], ["ys0"]),
        helper.make_node("Transpose", ["ys0"], ["ys"], perm=[1, 0, 2]),
        helper.make_node("Equal", ["rate", "k16"], ["is16"]),
        helper.make_node("If", ["is16"], ["z"], then_branch=then_b, else_branch=else_b),
        # a second If whose branch defines "t" too: the inlined names must not clash
        helper.make_node(
            "If",
            ["is16"],
            ["y"],
            then_branch=_branch("then2", [helper.make_node("Tanh", ["z"], ["t"])], ["t"]),
            else_branch=_branch("else2", [helper.make_node("Identity", ["z"], ["t3"])], ["t3"]),
        ),
    ]
    inits = [
        _init("W", w),
        _init("R", r),
        _init("head", head),
        _init("bad", bad),
        _init("one", np.array([1], np.int64)),
        _init("two", np.array(2, np.int64)),
        _init("isz", np.array(i, np.int64)),
        _init("k16", np.array(16000, np.int64)),
    ]
    inputs = [_vi("x", TensorProto.FLOAT, ["b", "t", i]), _vi("rate", TensorProto.INT64, [])]
    return _model(nodes, inputs, [_vi("y", TensorProto.FLOAT, None)], inits)


def test_if_on_a_bound_input_compiles_and_matches_ort(tmp_path):
    """Binding ``rate`` keeps the taken branch (nested shape-testing If folded, names that would clash
    renamed, the branch that does not type-check at the fixed shape never looked at); the folded graph
    and the compiled model equal ONNX Runtime on the original file fed the same rate."""
    rng = np.random.default_rng(1)
    m = _rate_model(rng)
    p = str(tmp_path / "rate.onnx")
    onnx.save(m, p)
    x = rng.normal(size=(3, 7, 6)).astype(np.float32)
    want = _sess(m).run(None, {"x": x, "rate": np.array(16000, np.int64)})[0]
    for shapes in (None, {"x": (3, 7, 6)}):
        fe = front_end(p, bind={"rate": 16000}, shapes=shapes)
        assert fe["folded_ifs"] == 3 and not [n for n in _all_nodes(fe["model"].graph) if n.op_type == "If"]
        assert [i.name for i in fe["model"].graph.input] == ["x"] and fe["data_input"] == "x"
        assert mismatch(_sess(fe["model"]).run(None, {"x": x})[0], want) is None
    res = compile_onnx(p, str(tmp_path / "rate.ernn"), bind={"rate": 16000})
    assert res["bound"] == {"rate": 16000}
    got = edgernn.load(res["path"]).predict(x)
    assert mismatch(got, want) is None
    # without the binding the If cannot be decided: the error names the node, its condition, the input
    with pytest.raises(CompileError, match=r"If node .*condition 'is16'.*graph input 'rate'"):
        compile_onnx(p, str(tmp_path / "x.ernn"))
    # the other rate takes the else branch, whose MatMul does not fit: an error, not a wrong model
    with pytest.raises(CompileError):
        compile_onnx(p, str(tmp_path / "x.ernn"), bind={"rate": 8000})


def test_binding_and_shape_errors(tmp_path):
    """One clear error for an unknown name, a value that is not a number or not an integer, and a shape
    that contradicts the file (rank or a static size)."""
    m = _rate_model(np.random.default_rng(2))
    p = str(tmp_path / "rate.onnx")
    onnx.save(m, p)
    out = str(tmp_path / "x.ernn")
    cases = [
        ({"bind": {"sr": 16000}}, r"--set sr: the graph has no input named 'sr' \(inputs: x, rate\)"),
        ({"bind": {"rate": "fast"}}, r"--set rate=fast: not a number"),
        ({"bind": {"rate": 16000.5}}, r"integer tensor"),
        ({"bind": {"rate": [1, 2]}}, r"shape \[2\] does not match the input's declared shape \[\]"),
        ({"bind": {"rate": 16000}, "shapes": {"x": (1, 7)}}, r"--shape x=1,7: the file declares rank 3"),
        ({"bind": {"rate": 16000}, "shapes": {"x": (1, 7, 5)}}, r"axis 2 has static size 6"),
        ({"bind": {"rate": 16000}, "shapes": {"x": (1, 0, 6)}}, r"sizes must be positive"),
        ({"bind": {"rate": 16000}, "shapes": {"rate": (1,)}}, r"both bound"),
        ({"bind": {"rate": 16000}, "state": {"h": "y"}}, r"--state h=y: the graph has no input named 'h'"),
    ]
    for kw, pat in cases:
        with pytest.raises(CompileError, match=pat):
            compile_onnx(p, out, **kw)


def _gru_step(rng, names=("x", "h", "y", "hn"), i=3, h=4):
    """A GRU step graph x [b, i], h [1, b, h] -> y = Y_h squeezed [b, h], hn = Y_h [1, b, h]."""
    x, hin, y, hn = names
    nodes = [
        helper.make_node("Unsqueeze", [x, "zero"], ["x3"]),
        helper.make_node("GRU", ["x3", "W", "R", "", "", hin], ["Y", "Yh"], hidden_size=h),
        helper.make_node("Squeeze", ["Yh", "zero"], [y]),
        helper.make_node("Identity", ["Yh"], [hn]),
    ]
    inits = [
        _init("W", rng.normal(0, 0.5, (1, 3 * h, i)).astype(np.float32)),
        _init("R", rng.normal(0, 0.5, (1, 3 * h, h)).astype(np.float32)),
        _init("zero", np.array([0], np.int64)),
    ]
    ins = [_vi(x, TensorProto.FLOAT, ["b", i]), _vi(hin, TensorProto.FLOAT, [1, "b", h])]
    outs = [_vi(y, TensorProto.FLOAT, ["b", h]), _vi(hn, TensorProto.FLOAT, [1, "b", h])]
    return _model(nodes, ins, outs, inits)


def test_state_pair_found_by_name_and_streams_like_ort(tmp_path):
    """x, h -> y, hn: h pairs with hn (name pair, recurrent slot), y is compiled, and the stream follows
    ONNX Runtime fed its own hn; a state output listed first is not taken as the compiled output."""
    rng = np.random.default_rng(3)
    m = _gru_step(rng)
    # put the state output first: the compiled output must still be y
    outs = list(m.graph.output)
    del m.graph.output[:]
    m.graph.output.extend([outs[1], outs[0]])
    p = str(tmp_path / "step.onnx")
    onnx.save(m, p)
    res = compile_onnx(p, str(tmp_path / "step.ernn"))
    assert res["state_pairs"] == [["h", "hn"]] and res["io"]["output"] == "y"
    assert res["state_inputs"] == ["h"] and not any("not checked" in n for n in res["notes"])
    s = edgernn.load(res["path"]).stream()
    sess = _sess(m)
    hs = np.zeros((1, 1, 4), np.float32)
    for t, x in enumerate(rng.normal(size=(8, 1, 3)).astype(np.float32)):
        hs, y = sess.run(None, {"x": x, "h": hs})
        assert mismatch(s.step(x[0]), y[0]) is None, f"step {t}"


def test_explicit_state_pair_and_its_errors(tmp_path):
    """``state=`` names the pair when the names say nothing; naming a missing input/output, the compiled
    output, an output not computed from the input or of another shape is refused."""
    rng = np.random.default_rng(4)
    m = _gru_step(rng, names=("a", "b", "p", "q"))
    p = str(tmp_path / "ab.onnx")
    onnx.save(m, p)
    res = compile_onnx(p, str(tmp_path / "ab.ernn"), state={"b": "q"})
    assert res["state_pairs"] == [["b", "q"]] and res["io"]["input"] == "a" and res["io"]["output"] == "p"
    out = str(tmp_path / "x.ernn")
    for st, pat in [
        ({"zz": "q"}, r"--state zz=q: the graph has no input named 'zz'"),
        ({"b": "zz"}, r"--state b=zz: the graph has no output named 'zz'"),
        ({"a": "q"}, r"--state a=q: input 'a' \['?b'?, 3\]|differ in element type or shape"),
    ]:
        with pytest.raises(CompileError, match=pat):
            compile_onnx(p, out, state=st)
    with pytest.raises(CompileError, match="is the output being compiled"):
        compile_onnx(p, out, state={"b": "p"}, output="p")


def _two_states(names=("h", "c", "hn", "cn")):
    """x [T, 1, 3], h and c [1, 1, 4] -> LSTM -> y; Y_c and Y_h are the outputs ``names[3]``, ``names[2]``."""
    h = 4
    a, b, p, q = names
    nodes = [
        helper.make_node("LSTM", ["x", "W", "R", "", "", a, b], ["Y", "Yh", "Yc"], hidden_size=h),
        helper.make_node("Squeeze", ["Y", "one"], ["y"]),
        helper.make_node("Identity", ["Yc"], [q]),
        helper.make_node("Identity", ["Yh"], [p]),
    ]
    rng = np.random.default_rng(5)
    inits = [
        _init("W", rng.normal(size=(1, 4 * h, 3)).astype(np.float32)),
        _init("R", rng.normal(size=(1, 4 * h, h)).astype(np.float32)),
        _init("one", np.array([1], np.int64)),
    ]
    st = [1, 1, h]
    ins = [_vi("x", TensorProto.FLOAT, ["T", 1, 3]), _vi(a, 1, st), _vi(b, 1, st)]
    outs = [_vi("y", 1, ["T", 1, h]), _vi(q, 1, st), _vi(p, 1, st)]
    return _model(nodes, ins, outs, inits)


def test_two_same_shaped_states_pair_by_name_or_slot(tmp_path):
    """h and c both match hn and cn by shape (as in silero_vad_16k_sequence.onnx): the names decide, or,
    when the names say nothing, the recurrent slots (initial_h <-> Y_h, initial_c <-> Y_c); the stream
    then follows ONNX Runtime fed its own state outputs, chunk by chunk (a sequence model: run(X))."""
    fe = front_end(_two_states())
    assert fe["state_pairs"] == [["h", "hn"], ["c", "cn"]] and fe["data_input"] == "x"
    m = _two_states(("a", "b", "p", "q"))  # a feeds initial_h, b initial_c; p = Y_h, q = Y_c
    fe = front_end(m)
    assert fe["state_pairs"] == [["a", "p"], ["b", "q"]]
    path = str(tmp_path / "ab.onnx")
    onnx.save(m, path)
    res = compile_onnx(path, str(tmp_path / "ab.ernn"))
    assert not any("not checked" in n for n in res["notes"])
    sess, s = _sess(m), edgernn.load(res["path"]).stream()
    hs = cs = np.zeros((1, 1, 4), np.float32)
    for t, x in enumerate(np.random.default_rng(6).normal(size=(4, 3, 1, 3)).astype(np.float32)):
        y, cs, hs = sess.run(None, {"x": x, "a": hs, "b": cs})
        assert mismatch(s.run(x[:, 0]), y[:, 0]) is None, f"chunk {t}"


# ---------------------------------------------------------------------------------- Silero VAD

SILERO = {
    # file: (bindings, shapes, state pairs)
    "silero_vad.onnx": ({"sr": 16000}, {"input": (1, 576)}, [["state", "stateN"]]),
    "silero_vad_16k_op15.onnx": ({"sr": 16000}, {"input": (1, 576)}, [["state", "stateN"]]),
    "silero_vad_half.onnx": ({}, {"input": (1, 576)}, [["state", "stateN"]]),
    "silero_vad_op18_ifless.onnx": ({"sr": 16000}, {"input": (1, 576)}, [["state", "stateN"]]),
    "silero_vad_openvino_16k.onnx": ({}, {}, [["state", "stateN"]]),
    "silero_vad_16k_sequence.onnx": ({}, {}, [["h", "hn"], ["c", "cn"]]),
}
#: ops the front end leaves to the op handlers (added by the convolutional front-end work)
NEW_OPS = ("Pad", "Conv", "Pow", "Sqrt", "ReduceMean", "Add", "Mul", "Gemm", "Split", "Sigmoid", "Tanh")


def _silero(name):
    sv = pytest.importorskip("silero_vad")
    path = os.path.join(os.path.dirname(sv.__file__), "data", name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} not in this silero-vad")
    return path


def _chunks(n, length=576):
    """A deterministic test signal at 16 kHz: a chirp with bursts of noise, in 576-sample chunks."""
    rng = np.random.default_rng(0)
    t = np.arange(n * 512 + 64) / 16000.0
    sig = 0.3 * np.sin(2 * np.pi * (200 + 900 * t) * t) * (np.sin(2 * np.pi * 1.5 * t) > 0)
    sig = sig + 0.02 * rng.normal(size=t.shape)
    return np.stack([sig[k * 512 : k * 512 + length] for k in range(n)]).astype(np.float32)


@pytest.mark.parametrize("name", sorted(SILERO))
def test_silero_front_end_folds_and_matches_ort(name):
    """Once sr is bound and the chunk shape fixed, the folded graph has no If left, its inputs are the
    data and the state, and ONNX Runtime gives the same outputs on it as on the original file over a
    stream of chunks with the state fed back."""
    path = _silero(name)
    bind, shapes, pairs = SILERO[name]
    fe = front_end(path, bind=bind, shapes=shapes)
    g = fe["model"].graph
    assert not [n for n in _all_nodes(g) if n.op_type == "If"]
    assert fe["data_input"] == "input" and fe["state_pairs"] == pairs and fe["bound"] == bind
    assert sorted(fe["state_inputs"]) == sorted(i for i, _ in pairs)
    ops = {n.op_type for n in g.node}
    if name == "silero_vad_op18_ifless.onnx":  # its LSTM step, written as plain ops, is fused
        assert fe["fused_cells"] == 1 and "LSTM" in ops and not ops & {"Split", "Tanh", "Gemm"}
    orig = onnx.load(path)
    a, b = _sess(orig), _sess(fe["model"])
    seq = name.endswith("_sequence.onnx")
    x_all = _chunks(6)
    if seq:
        feeds = {
            "input": x_all,
            "h": np.zeros((1, 1, 128), np.float32),
            "c": np.zeros((1, 1, 128), np.float32),
        }
        for want, got in zip(a.run(None, feeds), b.run(None, feeds), strict=True):
            assert mismatch(got, want, atol=1e-6, rtol=1e-6) is None
        return
    state = np.zeros((2, 1, 128), np.float32)
    sr = {"sr": np.array(16000, np.int64)} if "sr" in bind else {}
    for k, x in enumerate(x_all):
        want = a.run(None, {"input": x[None], "state": state, **sr})
        got = b.run(None, {"input": x[None], "state": state})
        for w, o in zip(want, got, strict=True):
            assert mismatch(o, w, atol=1e-6, rtol=1e-6) is None, f"chunk {k}"
        state = want[1]


@pytest.mark.parametrize("name", sorted(SILERO))
def test_silero_compile_gets_past_the_front_end(name, tmp_path):
    """compile_onnx on every Silero file gets past bindings, If folding, shapes and state pairing: it
    compiles, or stops at one of the convolutional front end's ops with an error naming it."""
    path = _silero(name)
    bind, shapes, pairs = SILERO[name]
    try:
        res = compile_onnx(path, str(tmp_path / "v.ernn"), bind=bind, shapes=shapes)
    except CompileError as e:
        msg = str(e)
        assert any(f"unsupported op '{op}'" in msg for op in NEW_OPS) or "two data-dependent" in msg, msg
    else:
        assert res["state_pairs"] == pairs


def test_silero_cli_inspect_and_compile(tmp_path, capsys):
    """``edgernn inspect`` shows the bound input, the fixed shape, the data input and the state pair;
    ``edgernn compile --set --shape`` passes them on (and names the op it stops at, if any)."""
    from edgernn.cli import main

    path = _silero("silero_vad.onnx")
    assert main(["inspect", path, "--set", "sr=16000", "--shape", "input=1,576"]) == 0
    text = capsys.readouterr().out
    for want in (
        "bound: sr = 16000",
        "shape fixed: input = [1, 576]",
        "data input: input",
        "state: state <- stateN",
    ):
        assert want in text, text
    assert "If nodes replaced by their taken branch: 7" in text
    folded = str(tmp_path / "folded.onnx")
    assert (
        main(["inspect", path, "--set", "sr=16000", "--shape", "input=1,576", "--write-folded", folded]) == 0
    )
    capsys.readouterr()
    x = _chunks(1)
    st = np.zeros((2, 1, 128), np.float32)
    want = _sess(onnx.load(path)).run(None, {"input": x, "state": st, "sr": np.array(16000, np.int64)})
    got = _sess(onnx.load(folded)).run(None, {"input": x, "state": st})
    assert all(mismatch(o, w, atol=1e-6, rtol=1e-6) is None for o, w in zip(got, want, strict=True))
    assert main(["inspect", path, "--set", "sr=16000", "--shape", "input=1,576", "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["state_pairs"] == [["state", "stateN"]] and info["bound"] == {"sr": 16000}
    assert "If" not in info["specialized_ops"]
    rc = main(
        ["compile", path, "-o", str(tmp_path / "v.ernn"), "--set", "sr=16000", "--shape", "input=1,576"]
    )
    err = capsys.readouterr().err
    assert rc == 0 or "unsupported op" in err, err
    assert main(["compile", path, "-o", str(tmp_path / "v.ernn"), "--set", "sr"]) == 1
    assert "--set sr: expected NAME=VALUE" in capsys.readouterr().err
    assert main(["compile", path, "-o", str(tmp_path / "v.ernn"), "--shape", "input=1,576"]) == 1
    assert "If node 'If_0'" in capsys.readouterr().err


def test_silero_8k_branch_folds_too():
    """sr = 8000 keeps the other branch of silero_vad.onnx (288-sample chunks: 256 new + 32 of context);
    the folded graph equals ONNX Runtime on the original file with sr fed."""
    path = _silero("silero_vad.onnx")
    fe = front_end(path, bind={"sr": 8000}, shapes={"input": (1, 288)})
    assert not [n for n in _all_nodes(fe["model"].graph) if n.op_type == "If"]
    a, b = _sess(onnx.load(path)), _sess(fe["model"])
    state = np.zeros((2, 1, 128), np.float32)
    for k, x in enumerate(_chunks(4, 288)):
        want = a.run(None, {"input": x[None], "state": state, "sr": np.array(8000, np.int64)})
        got = b.run(None, {"input": x[None], "state": state})
        for w, o in zip(want, got, strict=True):
            assert mismatch(o, w, atol=1e-6, rtol=1e-6) is None, f"chunk {k}"
        state = want[1]


def test_data_input_and_compiled_output_are_never_paired():
    """An output with the data input's shape (computed from it) is not a state pair: one input stays the
    data and one output the compiled output; the first graph input is preferred as the data."""
    f = TensorProto.FLOAT
    one = _model([helper.make_node("Relu", ["x"], ["y"])], [_vi("x", f, ["b", 4])], [_vi("y", f, ["b", 4])])
    fe = front_end(one)
    assert fe["state_pairs"] == [] and fe["data_input"] == "x" and fe["output"] == "y"
    # two inputs of one shape feeding two outputs of that shape, no names to go by: the second input is
    # the state, paired with the first output it fits (ties go by graph order), the other output compiled
    two = _model(
        [helper.make_node("Add", ["u", "v"], ["w"]), helper.make_node("Relu", ["w"], ["z"])],
        [_vi("u", f, [1, 4]), _vi("v", f, [1, 4])],
        [_vi("z", f, [1, 4]), _vi("w", f, [1, 4])],
    )
    fe = front_end(two)
    assert fe["state_pairs"] == [["v", "z"]] and fe["data_input"] == "u" and fe["output"] == "w"
