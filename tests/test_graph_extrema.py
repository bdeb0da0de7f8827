"""``Clip``, variadic ``Max``/``Min`` with constant operands, and ``ReduceMax``/``ReduceMin`` over feature
axes (odd sizes, several axes, keepdims 0/1), against ONNX Runtime on both backends; NaN propagates."""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import compile_onnx  # noqa: E402
from onnx import TensorProto, helper  # noqa: E402
from test_graph_ops import _check, _const  # noqa: E402

import edgernn  # noqa: E402


def _model(nodes, n_in: int, inits=(), opset: int = 17) -> onnx.ModelProto:
    g = helper.make_graph(
        nodes,
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, None)],
        initializer=list(inits),
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", opset)], ir_version=8)


def _flat(src: str) -> list:
    return [helper.make_node("Flatten", [src], ["y"])]


@pytest.mark.parametrize(("lo", "hi"), [(-0.5, 0.7), (-0.3, None), (None, 0.2), (0.4, 0.1)])
def test_clip_against_ort(tmp_path, lo, hi):
    ins = ["x", "lo" if lo is not None else "", "hi" if hi is not None else ""]
    while ins[-1] == "":
        ins.pop()
    inits = [_const(n, np.float32(b)) for n, b in (("lo", lo), ("hi", hi)) if b is not None]
    m = _model([helper.make_node("Clip", ins, ["y"])], 7, inits)
    X = np.random.default_rng(0).normal(size=(4, 7)).astype(np.float32)
    _check(tmp_path, m, X, {"binary"})


def test_clip_opset_6_attributes_against_ort(tmp_path):
    m = _model([helper.make_node("Clip", ["x"], ["y"], min=-0.25, max=0.5)], 6, opset=10)
    _check(tmp_path, m, np.random.default_rng(1).normal(size=(3, 6)).astype(np.float32))


def test_variadic_max_min_with_constants_against_ort(tmp_path):
    """Max(x, c, 2x) then Min(., c2): constants broadcast per feature, folded pairwise."""
    nodes = [
        helper.make_node("Mul", ["x", "two"], ["x2"]),
        helper.make_node("Max", ["x", "c", "x2"], ["mx"]),
        helper.make_node("Min", ["mx", "c2"], ["y"]),
    ]
    rng = np.random.default_rng(2)
    inits = [_const("two", np.float32(2)), _const("c", rng.normal(size=(1, 5)).astype(np.float32))]
    inits.append(_const("c2", np.float32(0.8)))
    _check(tmp_path, _model(nodes, 5, inits), rng.normal(size=(4, 5)).astype(np.float32), {"binary"})


@pytest.mark.parametrize("op", ["ReduceMax", "ReduceMin"])
@pytest.mark.parametrize(
    ("shape", "axes", "keep"), [((3, 7), [2], 1), ((5, 3), [1], 0), ((2, 3, 5), [1, 3], 0)]
)
def test_reduce_extreme_against_ort(tmp_path, op, shape, axes, keep):
    n = int(np.prod(shape))
    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),
        helper.make_node(op, ["x3", "axes"], ["r"], keepdims=keep),
        *_flat("r"),
    ]
    inits = [_const("shp", np.array([1, *shape], np.int64)), _const("axes", np.array(axes, np.int64))]
    m = _model(nodes, n, inits, opset=18)
    _check(tmp_path, m, np.random.default_rng(3).normal(size=(4, n)).astype(np.float32), {"binary"})


def test_reduce_max_propagates_nan_as_the_onnx_spec_says(tmp_path):
    """A NaN among the reduced positions gives NaN, as ``onnx.reference`` (the operator spec's numpy
    semantics) says; ONNX Runtime 1.32 returns NaN only when the NaN comes first (Eigen's maxCoeff), so
    the spec is the oracle here."""
    from onnx.reference import ReferenceEvaluator

    nodes = [
        helper.make_node("Reshape", ["x", "shp"], ["x3"]),
        helper.make_node("ReduceMax", ["x3", "axes"], ["r"], keepdims=0),
        *_flat("r"),
    ]
    inits = [_const("shp", np.array([1, 2, 5], np.int64)), _const("axes", np.array([2], np.int64))]
    model = _model(nodes, 10, inits, opset=18)
    p = tmp_path / "m.onnx"
    onnx.save(model, p)
    compile_onnx(str(p), str(tmp_path / "m.ernn"))
    x = np.arange(10, dtype=np.float32)
    x[3] = np.nan
    want = ReferenceEvaluator(model).run(None, {"x": x[None]})[0].ravel()
    assert np.isnan(want[0]) and want[1] == 9
    for backend in ("numpy", "numba"):
        got = edgernn.load(tmp_path / "m.ernn", backend=backend, nonfinite="propagate").stream().step(x)
        np.testing.assert_array_equal(got, want)
