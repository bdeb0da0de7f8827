"""The compiler package (``edgernn.export.onnx``): every op family the docs list has a registered handler,
and the state-wiring check of a step graph follows the ``Constant`` nodes its state outputs use (it used
to fail with an AttributeError when such a node was used only on the state path)."""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
onnx = pytest.importorskip("onnx")
from edgernn.export import compile_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

#: the ONNX ops docs/COMPILER.md ("What compiles") says are compiled
DOCUMENTED = """LSTM GRU RNN DynamicQuantizeLSTM Gemm MatMul DynamicQuantizeLinear MatMulInteger
DynamicQuantizeMatMul Add Sub Mul Div Relu Tanh Sigmoid LeakyRelu Elu HardSigmoid Softsign Softplus
ThresholdedRelu Softmax Gather OneHot Identity Dropout Cast Squeeze Unsqueeze Reshape Flatten Transpose
Slice Split Concat Shape ConstantOfShape Expand""".split()


def test_every_documented_op_has_a_handler():
    from edgernn.export.onnx.ops import OPS

    missing = [op for op in DOCUMENTED if op not in OPS]
    assert not missing, f"documented ops without a registered handler: {missing}"


def _step_graph(reverse_units: bool):
    """x_t [B, 3] + h [1, B, 4] -> one GRU step -> y [B, 4]; h_out is Y_h passed through Squeeze/Unsqueeze
    (or a Slice reversing the hidden units) whose axes come from Constant nodes used only there."""
    rng = np.random.default_rng(3)
    i, h = 3, 4
    inits = [
        numpy_helper.from_array(rng.normal(size=(1, 3 * h, i)).astype(np.float32), "W"),
        numpy_helper.from_array(rng.normal(size=(1, 3 * h, h)).astype(np.float32), "R"),
        numpy_helper.from_array(np.array([0], np.int64), "zero"),
    ]

    def const(name, values):
        return helper.make_node(
            "Constant", [], [name], value=numpy_helper.from_array(np.array(values, np.int64))
        )

    nodes = [
        helper.make_node("Unsqueeze", ["x", "zero"], ["x1"]),
        helper.make_node("GRU", ["x1", "W", "R", "", "", "h"], ["Y", "Yh"], hidden_size=h, name="gru"),
        helper.make_node("Squeeze", ["Y", "zero"], ["y0"]),
        helper.make_node("Squeeze", ["y0", "zero"], ["y"]),
        const("ax", [0]),
    ]
    if reverse_units:
        nodes += [
            const("st", [-1]),
            const("en", [-(2**62)]),
            const("ax2", [2]),
            const("step", [-1]),
            helper.make_node("Slice", ["Yh", "st", "en", "ax2", "step"], ["h_out"]),
        ]
    else:
        nodes += [
            helper.make_node("Squeeze", ["Yh", "ax"], ["hs"]),
            helper.make_node("Unsqueeze", ["hs", "ax"], ["h_out"]),
        ]
    g = helper.make_graph(
        nodes,
        "step",
        [
            helper.make_tensor_value_info("x", TensorProto.FLOAT, ["b", i]),
            helper.make_tensor_value_info("h", TensorProto.FLOAT, [1, "b", h]),
        ],
        [
            helper.make_tensor_value_info("y", TensorProto.FLOAT, None),
            helper.make_tensor_value_info("h_out", TensorProto.FLOAT, None),
        ],
        inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


def _compile(tmp_path, model):
    p = os.path.join(str(tmp_path), "m.onnx")
    onnx.save(model, p)
    return compile_onnx(p, os.path.join(str(tmp_path), "m.ernn"))


def test_state_wiring_through_constant_nodes(tmp_path):
    """The stream's step() follows ONNX Runtime fed with the graph's own state output; so does a state
    output that reverses the hidden units (the layer's h is set from it at the end of each step)."""
    ort = pytest.importorskip("onnxruntime")
    from compiler_common import mismatch

    import edgernn

    for rev in (False, True):
        m = _step_graph(reverse_units=rev)
        res = _compile(tmp_path, m)
        assert res["state_inputs"] == ["h"] and res["ignored_outputs"] == ["h_out"]
        assert not any("not checked" in n for n in res["notes"])
        sess = ort.InferenceSession(m.SerializeToString(), providers=["CPUExecutionProvider"])
        s = edgernn.load(res["path"]).stream()
        h = np.zeros((1, 1, 4), np.float32)
        xs = np.random.default_rng(0).normal(size=(10, 1, 3)).astype(np.float32)
        for t in range(10):
            y, h = sess.run(None, {"x": xs[t], "h": h})
            assert mismatch(s.step(xs[t, 0]), y[0]) is None, f"reversed {rev} step {t}"
