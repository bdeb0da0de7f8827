"""The graph ops (``conv1d``, ``gather``, ``binary``, ``unary``) and the ONNX ops that become them
(``Conv``, ``Pad``, data-data ``Add``/``Sub``/``Mul``/``Div``/``Max``/``Min``/``Pow``, ``Sqrt`` and the other
unary math ops, ``ReduceMean``/``ReduceSum``), each on a tiny ONNX graph with a per-step input [1, F]:
compiled by :func:`edgernn.export.compile_onnx` (what ``edgernn compile`` runs) and stepped on both
backends (the generated numba kernels and the numpy implementations), against ONNX Runtime.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from compiler_common import mismatch  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import compile_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402
from edgernn import artifact  # noqa: E402


def _const(name: str, arr) -> onnx.TensorProto:
    return numpy_helper.from_array(np.asarray(arr), name)


def _model(nodes, n_in: int, out_shape: list, inits=()) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, out_shape)],
        initializer=list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _check(tmp_path, model, X: np.ndarray, kinds: set[str] | None = None) -> dict:
    """Compile ``model``, step X (T, F) through both backends and compare each step with ORT."""
    p = tmp_path / "m.onnx"
    onnx.save(model, p)
    res = compile_onnx(str(p), str(tmp_path / "m.ernn"))
    plan, _ = artifact.read(tmp_path / "m.ernn")
    got = {lay["kind"] for lay in artifact.graph_layers(plan)[0]}
    if kinds is not None:
        assert kinds <= got, f"expected layer kinds {kinds}, the plan has {got}"
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
    want = [sess.run(None, {"x": x[None]})[0].ravel() for x in X]
    for backend in ("numpy", "numba"):
        s = edgernn.load(tmp_path / "m.ernn", backend=backend).stream()
        for t, x in enumerate(X):
            err = mismatch(s.step(x), want[t])
            assert err is None, f"{backend} step {t}: {err}"
    return res


@pytest.mark.parametrize(
    "cin,cout,k,stride,dil,pads,groups,act",
    [
        (3, 5, 3, 2, 1, [1, 2], 1, "Relu"),
        (4, 6, 3, 1, 2, [2, 0], 2, None),
        (1, 9, 8, 4, 1, [0, 0], 1, None),  # an STFT-like frame conv: one channel, long kernel
    ],
)
def test_conv1d_against_ort(tmp_path, cin, cout, k, stride, dil, pads, groups, act):
    """Conv 1-D over [1, C, L] (stride, dilation, pads, groups, bias, a fused ReLU) = ONNX Runtime."""
    rng = np.random.default_rng(0)
    L = 16
    w = rng.normal(size=(cout, cin // groups, k)).astype(np.float32)
    b = rng.normal(size=cout).astype(np.float32)
    lout = (L + sum(pads) - dil * (k - 1) - 1) // stride + 1
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),
        helper.make_node(
            "Conv",
            ["x3", "W", "B"],
            ["c"],
            kernel_shape=[k],
            strides=[stride],
            dilations=[dil],
            pads=pads,
            group=groups,
        ),
    ]
    last = "c"
    if act:
        nodes.append(helper.make_node(act, ["c"], ["a"]))
        last = "a"
    nodes.append(helper.make_node("Flatten", [last], ["y"]))
    inits = [_const("shp", np.array([1, cin, L], np.int64)), _const("W", w), _const("B", b)]
    m = _model(nodes, cin * L, [1, cout * lout], inits)
    res = _check(tmp_path, m, rng.normal(size=(3, cin * L)).astype(np.float32), {"conv1d"})
    if act:  # fused into the convolution
        assert not any(lay["kind"] == "activation" for lay in artifact.graph_layers(res["plan"])[0])


@pytest.mark.parametrize("mode", ["reflect", "edge", "constant"])
def test_pad_against_ort(tmp_path, mode):
    """Pad (reflect, edge, zero constant) on the length axis, then a convolution reading the padded
    window, = ONNX Runtime."""
    rng = np.random.default_rng(1)
    w = rng.normal(size=(2, 2, 3)).astype(np.float32)
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),
        helper.make_node("Pad", ["x3", "pads"], ["p"], mode=mode),
        helper.make_node("Conv", ["p", "W"], ["c"], kernel_shape=[3]),
        helper.make_node("Flatten", ["c"], ["y"]),
    ]
    inits = [
        _const("shp", np.array([1, 2, 8], np.int64)),
        _const("pads", np.array([0, 0, 3, 0, 0, 2], np.int64)),
        _const("W", w),
    ]
    m = _model(nodes, 16, [1, 2 * 11], inits)
    _check(tmp_path, m, rng.normal(size=(3, 16)).astype(np.float32), {"conv1d"})


@pytest.mark.parametrize("op", ["Add", "Sub", "Mul", "Div", "Max", "Min", "Pow"])
def test_binary_between_values_against_ort(tmp_path, op):
    """A op B of two data-dependent values, B broadcast over A's channel axis, = ONNX Runtime."""
    rng = np.random.default_rng(2)
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),  # [1, 3, 4]
        helper.make_node("Slice", ["x3", "s0", "s1", "ax"], ["a"]),  # [1, 2, 4]
        helper.make_node("Slice", ["x3", "s1", "s2", "ax"], ["b"]),  # [1, 1, 4]
        helper.make_node(op, ["a", "b"], ["c"]),
        helper.make_node("Flatten", ["c"], ["y"]),
    ]
    inits = [
        _const("shp", np.array([1, 3, 4], np.int64)),
        _const("s0", np.array([0], np.int64)),
        _const("s1", np.array([2], np.int64)),
        _const("s2", np.array([3], np.int64)),
        _const("ax", np.array([1], np.int64)),
    ]
    m = _model(nodes, 12, [1, 8], inits)
    X = rng.uniform(0.5, 2.0, size=(3, 12)).astype(np.float32)  # positive: Div and Pow are defined
    _check(tmp_path, m, X, {"binary"})


@pytest.mark.parametrize(
    "second",
    [
        ("Add", ["a", "r"]),  # a + relu(a): a residual around an activation
        ("Tanh", ["a"]),  # relu(a) + tanh(a)
        ("Mul", ["a", "two"]),  # relu(a) + 2a: an affine op on the shared value
        ("Split", ["a"]),  # relu of one half of a times the other half
    ],
    ids=["residual", "two-activations", "affine", "split"],
)
def test_a_value_with_two_readers_keeps_its_own_numbers(tmp_path, second):
    """A dense output read by an activation and by another node: the activation (or affine op) is not
    folded into the dense layer, which would hand the other reader the activated numbers."""
    rng = np.random.default_rng(4)
    op, ins = second
    nodes = [helper.make_node("MatMul", ["x", "W"], ["a"]), helper.make_node("Relu", ["a"], ["r"])]
    if op == "Add":
        nodes.append(helper.make_node("Add", ins, ["y"]))
    elif op == "Split":
        nodes[1] = helper.make_node("Split", ["a", "half"], ["a0", "a1"], axis=1)
        nodes += [
            helper.make_node("Relu", ["a0"], ["r0"]),
            helper.make_node("Mul", ["r0", "a1"], ["y"]),
        ]
    else:
        nodes += [helper.make_node(op, ins, ["t"]), helper.make_node("Add", ["r", "t"], ["y"])]
    inits = [
        _const("W", rng.normal(size=(4, 6)).astype(np.float32)),
        _const("two", np.array([2.0], np.float32)),
        _const("half", np.array([3, 3], np.int64)),
    ]
    m = _model(nodes, 4, [1, 3 if op == "Split" else 6], inits)
    _check(tmp_path, m, rng.normal(size=(4, 4)).astype(np.float32))


@pytest.mark.parametrize("basis", ["random", "hann_dft"])
def test_stft_magnitude_against_ort(tmp_path, basis):
    """Silero's STFT magnitude: one conv whose output halves are squared, added and square-rooted (the
    conv output read by two consumers) = ONNX Runtime; with a Hann-windowed DFT basis (the real part's
    rows symmetric, the imaginary part's antisymmetric) the packer folds the bank (half the MACs)."""
    from edgernn.kernels.ops.conv import fold_runs

    rng = np.random.default_rng(3)
    n = 16
    if basis == "random":
        w = rng.normal(size=(18, 1, n)).astype(np.float32)
    else:
        t, k = np.arange(n), np.arange(9)[:, None]
        win = 0.5 - 0.5 * np.cos(2 * np.pi * t / n)
        w = np.concatenate([win * np.cos(2 * np.pi * k * t / n), -win * np.sin(2 * np.pi * k * t / n)])
        w = w[:, None, :].astype(np.float32)
    assert (fold_runs(w[:, 0]) is not None) == (basis == "hann_dft")
    nodes = [
        helper.make_node("Unsqueeze", ["x", "one"], ["x3"]),  # [1, 1, 40]
        helper.make_node("Conv", ["x3", "W"], ["c"], kernel_shape=[n], strides=[8]),  # [1, 18, 4]
        helper.make_node("Slice", ["c", "z", "half", "one"], ["re"]),
        helper.make_node("Slice", ["c", "half", "full", "one"], ["im"]),
        helper.make_node("Pow", ["re", "two"], ["re2"]),
        helper.make_node("Pow", ["im", "two"], ["im2"]),
        helper.make_node("Add", ["re2", "im2"], ["s"]),
        helper.make_node("Sqrt", ["s"], ["mag"]),
        helper.make_node("ReduceMean", ["mag"], ["y"], axes=[2], keepdims=0),  # [1, 3]
    ]
    inits = [
        _const("one", np.array([1], np.int64)),
        _const("z", np.array([0], np.int64)),
        _const("half", np.array([9], np.int64)),
        _const("full", np.array([18], np.int64)),
        _const("two", np.array(2.0, np.float32)),
        _const("W", w),
    ]
    m = _model(nodes, 40, [1, 9], inits)
    _check(tmp_path, m, rng.normal(size=(3, 40)).astype(np.float32), {"conv1d", "unary", "binary"})


@pytest.mark.parametrize("op", ["Sqrt", "Abs", "Neg", "Exp", "Log", "Reciprocal"])
def test_unary_against_ort(tmp_path, op):
    """Elementwise math of a data value = ONNX Runtime."""
    rng = np.random.default_rng(4)
    nodes = [helper.make_node(op, ["x"], ["y"])]
    m = _model(nodes, 5, [1, 5])
    _check(tmp_path, m, rng.uniform(0.1, 3.0, size=(3, 5)).astype(np.float32), {"unary"})


@pytest.mark.parametrize(
    "op,axes,keep", [("ReduceMean", [2], 0), ("ReduceSum", [1], 1), ("ReduceMean", [1, 2], 0)]
)
def test_reduce_against_ort(tmp_path, op, axes, keep):
    """ReduceMean/ReduceSum over feature axes of [1, 3, 4] = ONNX Runtime."""
    rng = np.random.default_rng(5)
    x3 = [1, 3, 4]
    out = (
        [1 if k in axes else d for k, d in enumerate(x3)]
        if keep
        else [d for k, d in enumerate(x3) if k not in axes]
    )
    inits = [_const("shp", np.array(x3, np.int64))]
    if op == "ReduceSum":  # axes is an input from opset 13 on
        red = helper.make_node(op, ["x3", "axes"], ["r"], keepdims=keep)
        inits.append(_const("axes", np.array(axes, np.int64)))
    else:
        red = helper.make_node(op, ["x3"], ["r"], axes=axes, keepdims=keep)
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),
        red,
        helper.make_node("Flatten", ["r"], ["y"]),
    ]
    m = _model(nodes, 12, [1, int(np.prod(out))], inits)
    _check(tmp_path, m, rng.normal(size=(3, 12)).astype(np.float32))


def test_graph_plan_refuses_bad_graph_ops(tmp_path):
    """The loader's named checks on graph ops: a gather index out of range, a binary op in a format-1
    chain, a binary op over values of different sizes."""
    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"size": 4},
        "output": {"size": 3},
        "layers": [
            {"kind": "gather", "name": "g", "input_size": 4, "output_size": 3, "tensors": {"index": "g.i"}}
        ],
    }
    with pytest.raises(edgernn.ArtifactError, match="bad weights"):
        artifact.write(tmp_path / "a.ernn", plan, {"g.i": np.array([0, 4, 1], np.float32)})
    bad = dict(plan, layers=[{"kind": "binary", "name": "b", "input_size": 4, "op": "add"}])
    with pytest.raises(edgernn.ArtifactError, match="bad layer"):
        artifact.validate_plan(bad)
    g2 = {
        "format": "ernn",
        "format_version": 2,
        "input": {"size": 4, "value": "in"},
        "output": {"size": 4, "value": "c"},
        "values": {"in": {"shape": [4]}, "u": {"shape": [3]}, "c": {"shape": [4]}},
        "ops": [
            {"kind": "gather", "name": "g", "inputs": ["in"], "outputs": ["u"], "tensors": {"index": "g.i"}},
            {"kind": "binary", "name": "b", "inputs": ["in", "u"], "outputs": ["c"], "attrs": {"op": "add"}},
        ],
    }
    with pytest.raises(edgernn.ArtifactError, match="shape mismatch"):
        artifact.validate_plan(g2)
    g2["values"]["u"]["shape"] = [4]
    artifact.validate_plan(g2)  # now well formed
    g2["ops"][1]["attrs"]["op"] = "__import__('os')"
    with pytest.raises(edgernn.ArtifactError, match="bad field"):
        artifact.validate_plan(g2)


HOSTILE = ['"); __import__("os").getcwd(); ("', "x\n    pwned = 1\n", "a\\'b", "M[0]", "wf"]


def test_no_string_from_a_graph_plan_reaches_the_generated_source(tmp_path):
    """A format-2 graph of gather, conv1d, unary and binary ops whose op, value and tensor names are
    hostile strings loads, computes sqrt(relu(conv(pad(x)))) * relu(conv(pad(x))) on both backends
    (against numpy written here), and none of the names reaches the generated code."""
    rng = np.random.default_rng(6)
    names = [f"{h}{k}" for k, h in enumerate(HOSTILE)]
    v_in, v_g, v_c, v_u, v_b = names
    w = rng.normal(size=(2, 2, 3)).astype(np.float32)
    shapes = {v_in: 8, v_g: 10, v_c: 6, v_u: 6, v_b: 6}
    conv_attrs = {"in_channels": 2, "out_channels": 2, "kernel_size": 3, "activation": "relu"}
    plan = {
        "format": "ernn",
        "format_version": 2,
        "input": {"size": 8, "value": v_in},
        "output": {"size": 6, "value": v_b},
        "values": {v: {"shape": [n]} for v, n in shapes.items()},
        "ops": [
            {
                "kind": "gather",
                "name": names[1],
                "inputs": [v_in],
                "outputs": [v_g],
                "tensors": {"index": names[0]},
            },
            {
                "kind": "conv1d",
                "name": names[2],
                "inputs": [v_g],
                "outputs": [v_c],
                "attrs": conv_attrs,
                "tensors": {"W": names[3]},
            },
            {"kind": "unary", "name": names[3], "inputs": [v_c], "outputs": [v_u], "attrs": {"func": "sqrt"}},
            {
                "kind": "binary",
                "name": names[4],
                "inputs": [v_u, v_c],
                "outputs": [v_b],
                "attrs": {"op": "mul"},
            },
        ],
    }
    index = np.array([1, 0, 1, 2, 3, 5, 4, 5, 6, 7], np.float32)  # reflect-pad each channel of [2, 4] by 1
    tensors = {names[0]: index, names[3]: w}
    artifact.write(tmp_path / "h.ernn", plan, tensors)
    m = edgernn.load(tmp_path / "h.ernn", backend="numba")
    src = m.kernel_source
    for h in HOSTILE[:3]:
        for piece in (h, h[:8], "pwned", "getcwd"):
            assert piece not in src, f"{piece!r} reached the generated source"
    X = rng.normal(size=(4, 8)).astype(np.float32)
    xp = X[:, index.astype(int)].astype(np.float64).reshape(4, 2, 5)
    conv = np.einsum(
        "oik,ntik->not", w.astype(np.float64), np.stack([xp[:, :, t : t + 3] for t in range(3)], 1)
    )
    c = np.maximum(conv, 0).reshape(4, 6)
    want = np.sqrt(c) * c
    for backend in ("numba", "numpy"):
        s = edgernn.load(tmp_path / "h.ernn", backend=backend).stream()
        for x, e in zip(X, want, strict=True):
            err = mismatch(s.step(x), e)
            assert err is None, f"{backend}: {err}"


@pytest.mark.parametrize("order", ["conv-bn", "bn-conv"])
def test_batchnorm_folds_into_conv_against_ort(tmp_path, order):
    """BatchNormalization (inference) after a Conv folds into its weights and bias (no layer of its own);
    before a Conv it is an affine layer. Both = ONNX Runtime."""
    rng = np.random.default_rng(7)
    w = rng.normal(size=(4, 3, 3)).astype(np.float32)
    c = 4 if order == "conv-bn" else 3
    bn = [rng.normal(size=c), rng.normal(size=c), rng.normal(size=c), rng.uniform(0.5, 2, size=c)]
    bn_names = ["s", "bb", "mu", "var"]
    if order == "conv-bn":
        nodes = [
            helper.make_node("Reshape", ["x", "shp"], ["x3"]),
            helper.make_node("Conv", ["x3", "W"], ["c"], kernel_shape=[3], pads=[1, 1]),
            helper.make_node("BatchNormalization", ["c", *bn_names], ["n"], epsilon=1e-3),
            helper.make_node("Relu", ["n"], ["r"]),
            helper.make_node("Flatten", ["r"], ["y"]),
        ]
    else:
        nodes = [
            helper.make_node("Reshape", ["x", "shp"], ["x3"]),
            helper.make_node("BatchNormalization", ["x3", *bn_names], ["n"], epsilon=1e-3),
            helper.make_node("Conv", ["n", "W"], ["c"], kernel_shape=[3], pads=[1, 1]),
            helper.make_node("Flatten", ["c"], ["y"]),
        ]
    inits = [_const("shp", np.array([1, 3, 6], np.int64)), _const("W", w)]
    inits += [_const(n, a.astype(np.float32)) for n, a in zip(bn_names, bn, strict=True)]
    m = _model(nodes, 18, [1, 24], inits)
    res = _check(tmp_path, m, rng.normal(size=(3, 18)).astype(np.float32), {"conv1d"})
    kinds = [lay["kind"] for lay in artifact.graph_layers(res["plan"])[0]]
    assert ("affine" in kinds) == (order == "bn-conv"), kinds


@pytest.mark.parametrize("form", ["op", "decomposed"])
def test_layernorm_against_ort(tmp_path, form):
    """LayerNormalization over the last axis of [1, 3, 8] (the op, and the ReduceMean/Sub/Pow/Add/Sqrt/Div
    form older exporters write) = ONNX Runtime."""
    rng = np.random.default_rng(8)
    g, b = rng.normal(size=8).astype(np.float32), rng.normal(size=8).astype(np.float32)
    inits = [_const("shp", np.array([1, 3, 8], np.int64)), _const("g", g), _const("b", b)]
    nodes = [helper.make_node("Reshape", ["x", "shp"], ["x3"])]
    if form == "op":
        nodes.append(helper.make_node("LayerNormalization", ["x3", "g", "b"], ["n"], axis=-1, epsilon=1e-5))
    else:
        inits += [_const("two", np.array(2.0, np.float32)), _const("eps", np.array(1e-5, np.float32))]
        nodes += [
            helper.make_node("ReduceMean", ["x3"], ["mu"], axes=[-1]),
            helper.make_node("Sub", ["x3", "mu"], ["d"]),
            helper.make_node("Pow", ["d", "two"], ["d2"]),
            helper.make_node("ReduceMean", ["d2"], ["var"], axes=[-1]),
            helper.make_node("Add", ["var", "eps"], ["ve"]),
            helper.make_node("Sqrt", ["ve"], ["sd"]),
            helper.make_node("Div", ["d", "sd"], ["z"]),
            helper.make_node("Mul", ["z", "g"], ["zg"]),
            helper.make_node("Add", ["zg", "b"], ["n"]),
        ]
    nodes.append(helper.make_node("Flatten", ["n"], ["y"]))
    m = _model(nodes, 24, [1, 24], inits)
    X = (rng.normal(size=(3, 24)) * 3 + 1).astype(np.float32)
    _check(tmp_path, m, X, {"layernorm"} if form == "op" else {"binary", "unary"})


def test_quantizing_a_graph_plan_without_weights_is_one_clear_error(tmp_path):
    """--quantize on a graph plan with no weights: one QuantizationError saying so, no file (graph plans
    with weights quantize: tests/test_graph_quantize.py)."""
    from edgernn.export.quantize import QuantizationError

    nodes = [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    p = tmp_path / "m.onnx"
    onnx.save(_model(nodes, 4, [1, 4]), p)
    with pytest.raises(QuantizationError, match="no matrix to quantize"):
        compile_onnx(str(p), str(tmp_path / "m.ernn"), quantize="int8")
    assert not (tmp_path / "m.ernn").exists()


def test_causal_conv_over_time_then_lstm_streams_like_ort(tmp_path):
    """A PyTorch causal Conv1d over time (F.pad of (k-1)·d zeros on the left) + ReLU + LSTM + Linear,
    exported by torch.onnx: compiles to a streamed ``tconv`` op whose state is the last (k-1)·d inputs;
    ``step`` over a sequence, ``run`` and ORT on the whole sequence agree, on both backends."""
    pytest.importorskip("torch")
    from compiler_common import export_causal_convlstm

    p = tmp_path / "m.onnx"
    export_causal_convlstm(p, hidden=8)
    res = compile_onnx(str(p), str(tmp_path / "m.ernn"))
    assert "tconv" in {lay["kind"] for lay in artifact.graph_layers(res["plan"])[0]}
    X = np.random.default_rng(9).normal(size=(25, 3)).astype(np.float32)
    want = ort.InferenceSession(str(p), providers=["CPUExecutionProvider"]).run(None, {"x": X[None]})[0][0]
    for backend in ("numba", "numpy"):
        m = edgernn.load(tmp_path / "m.ernn", backend=backend)
        s = m.stream()
        steps = np.stack([s.step(x) for x in X])
        assert mismatch(steps, want) is None, f"{backend} step: {mismatch(steps, want)}"
        s2 = m.stream()
        chunks = np.concatenate([s2.run(X[:10]), s2.run(X[10:])])
        assert mismatch(chunks, want) is None, f"{backend} run: {mismatch(chunks, want)}"
        s.reset()
        assert mismatch(s.step(X[0]), want[0]) is None  # reset empties the history
