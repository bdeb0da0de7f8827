"""Randomized differential test of branching graphs: random ONNX DAGs (onnx.helper) over feature vectors,
compiled by edgernn and stepped on the numpy backend (no kernel compile per graph), against ONNX Runtime.

Each graph starts from x [1, I] and adds random nodes, each reading one or two earlier values (so values
are read by several nodes): MatMul by a constant, Relu/Tanh/Sigmoid, Mul/Add by a constant vector, Add/
Sub/Mul between two values of one size, Split in halves, Concat of two values; the output combines the last
value with an earlier one. This is where in-place fusions (an activation or affine op folded into the
layer before it) must look at every reader of a value. A graph either compiles and matches ORT
(|a − e| ≤ 1e-5 + 1e-4·|e|), or is refused with a :class:`CompileError`; a few graphs also run on the
numba backend. The test asserts most graphs compile, so it cannot pass by refusing everything.
"""

from __future__ import annotations

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import compile_onnx  # noqa: E402
from edgernn.export.onnx.errors import CompileError  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402

N_GRAPHS = 120
N_NUMBA = 3


def _graph(rng: np.random.Generator):
    """A random DAG: returns (onnx model, input size, output size)."""
    n_in = int(rng.integers(2, 7))
    sizes = {"x": n_in}
    nodes, inits = [], []
    k = 0

    def fresh(base: str) -> str:
        nonlocal k
        k += 1
        return f"{base}{k}"

    def const(arr) -> str:
        name = fresh("c")
        inits.append(numpy_helper.from_array(np.asarray(arr, np.float32), name))
        return name

    for _ in range(int(rng.integers(3, 9))):
        names = list(sizes)
        a = names[int(rng.integers(len(names)))]
        n = sizes[a]
        op = rng.choice(["matmul", "act", "affine", "binary", "split", "concat"])
        if op == "matmul" or (op == "split" and n % 2) or (op == "split" and n < 2):
            m = int(rng.integers(2, 7))
            w = const(rng.normal(size=(n, m)) / np.sqrt(n))
            out = fresh("mm")
            nodes.append(helper.make_node("MatMul", [a, w], [out]))
            sizes[out] = m
        elif op == "act":
            out = fresh("act")
            nodes.append(helper.make_node(str(rng.choice(["Relu", "Tanh", "Sigmoid"])), [a], [out]))
            sizes[out] = n
        elif op == "affine":
            out = fresh("aff")
            c = const(rng.normal(size=(n,)))
            nodes.append(helper.make_node(str(rng.choice(["Mul", "Add"])), [a, c], [out]))
            sizes[out] = n
        elif op == "binary":
            same = [v for v in names if sizes[v] == n]
            b = same[int(rng.integers(len(same)))]
            out = fresh("bin")
            nodes.append(helper.make_node(str(rng.choice(["Add", "Sub", "Mul"])), [a, b], [out]))
            sizes[out] = n
        elif op == "split":
            o1, o2 = fresh("sp"), fresh("sp")
            half = fresh("c")
            inits.append(numpy_helper.from_array(np.array([n // 2, n // 2], np.int64), half))
            nodes.append(helper.make_node("Split", [a, half], [o1, o2], axis=1))
            sizes[o1] = sizes[o2] = n // 2
        else:
            b = names[int(rng.integers(len(names)))]
            out = fresh("cat")
            nodes.append(helper.make_node("Concat", [a, b], [out], axis=1))
            sizes[out] = n + sizes[b]
    last = list(sizes)[-1]
    same = [v for v in sizes if sizes[v] == sizes[last] and v != last]
    if same:  # the output reads the last value and an earlier one: a branch that joins
        other = same[int(rng.integers(len(same)))]
        nodes.append(helper.make_node("Add", [last, other], ["y"]))
    else:
        nodes.append(helper.make_node("Identity", [last], ["y"]))
    g = helper.make_graph(
        nodes,
        "fuzz",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1, n_in])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1, sizes[last]])],
        initializer=inits,
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), n_in, sizes[last]


def test_random_branching_graphs_match_onnx_runtime(tmp_path):
    rng = np.random.default_rng(20261203)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.log_severity_level = 3
    compiled = refused = 0
    for i in range(N_GRAPHS):
        model, n_in, n_out = _graph(rng)
        onnx.checker.check_model(model)
        p = tmp_path / f"g{i}.onnx"
        onnx.save(model, p)
        try:
            compile_onnx(str(p), str(tmp_path / f"g{i}.ernn"))
        except CompileError as e:
            refused += 1
            assert str(e), f"graph {i}: an empty refusal"
            continue
        compiled += 1
        sess = ort.InferenceSession(str(p), so, providers=["CPUExecutionProvider"])
        X = rng.normal(size=(3, n_in)).astype(np.float32)
        want = np.stack([sess.run(None, {"x": x[None]})[0][0] for x in X])
        backends = ["numpy"] + (["numba"] if compiled <= N_NUMBA else [])
        for backend in backends:
            s = edgernn.load(tmp_path / f"g{i}.ernn", backend=backend).stream()
            got = np.stack([s.step(x) for x in X])
            assert got.shape == want.shape, f"graph {i} {backend}: shape {got.shape} != {want.shape}"
            bad = np.abs(got - want) > 1e-5 + 1e-4 * np.abs(want)
            assert not bad.any(), (
                f"graph {i} ({[n.op_type for n in model.graph.node]}) {backend}: max error "
                f"{np.abs(got - want).max():.3g}"
            )
    assert compiled >= N_GRAPHS // 2, f"only {compiled} of {N_GRAPHS} graphs compiled ({refused} refused)"
