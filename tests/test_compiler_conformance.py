"""Conformance: every LSTM/GRU/RNN node case shipped with the ``onnx`` package compiles to ``.ernn`` and
reproduces the case's expected outputs through ``edgernn.load(...).predict``.

The cases come from ``onnx/backend/test/data/node/test_{lstm,gru,rnn,simple_rnn}_*`` (model.onnx +
test_data_set_*/*.pb) when the installed wheel ships them, else from ``onnx.backend.test.case.node``, the
generator those files are written from (same models, same inputs, expected outputs computed by ONNX's own
numpy reference of each operator: an oracle independent of edgernn).

The cases feed W, R, B, P, sequence_lens and initial states as graph inputs; the test binds those to the
data set's values (turns them into initializers) and keeps X as the model input. Outputs:

* ``Y`` and ``Y_h`` compile directly (``Y_h`` many_to_one: the last step of a forward direction; the
  reverse direction's final step, time 0, through a ``final`` op) and match the expected outputs;
* ``Y_c`` (cell state) compiles too (the lstm op's ``cell_output``), and so do all of a case's outputs at
  once: a plan of several outputs whose ``predict`` returns each, in graph order.
"""

from __future__ import annotations

import glob
import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from compiler_common import input_to_btf, mismatch, output_to_bf, predict  # noqa: E402

from edgernn.artifact import chain_layers  # noqa: E402

onnx = pytest.importorskip("onnx")

OPS = ("LSTM", "GRU", "RNN")
PREFIXES = ("test_lstm_", "test_gru_", "test_rnn_", "test_simple_rnn_")


def _cases() -> list[tuple[str, object, list[np.ndarray], list[np.ndarray]]]:
    from onnx import numpy_helper

    out = []
    data_dir = os.path.join(os.path.dirname(onnx.__file__), "backend", "test", "data", "node")
    dirs = sorted(d for p in PREFIXES for d in glob.glob(os.path.join(data_dir, p + "*")))
    if dirs:
        for d in dirs:
            model = onnx.load(os.path.join(d, "model.onnx"))
            for ds in sorted(glob.glob(os.path.join(d, "test_data_set_*"))):

                def load(kind: str, ds: str = ds) -> list[np.ndarray]:
                    files = sorted(
                        glob.glob(os.path.join(ds, f"{kind}_*.pb")), key=lambda f: int(f[:-3].split("_")[-1])
                    )
                    res = []
                    for f in files:
                        t = onnx.TensorProto()
                        with open(f, "rb") as fh:
                            t.ParseFromString(fh.read())
                        res.append(numpy_helper.to_array(t))
                    return res

                out.append(
                    (f"{os.path.basename(d)}/{os.path.basename(ds)}", model, load("input"), load("output"))
                )
        return out
    import warnings

    from onnx.backend.test.case import node

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        cases = node.collect_testcases(None)
    for c in cases:
        if c.model is None or not any(n.op_type in OPS for n in c.model.graph.node):
            continue
        for k, (inputs, outputs) in enumerate(c.data_sets):
            out.append((f"{c.name}/{k}", c.model, list(inputs), list(outputs)))
    return out


CASES = _cases()


def test_cases_found():
    names = {c[0].split("/")[0] for c in CASES}
    # the onnx package ships 6 GRU, 6 LSTM and 6 RNN node cases (onnx >= 1.16)
    assert sum(n.startswith("test_lstm") for n in names) >= 6
    assert sum(n.startswith("test_gru") for n in names) >= 6
    assert sum("rnn" in n for n in names) >= 6


def _frozen(model, inputs: list[np.ndarray], want_y: bool):
    """Copy of ``model`` with every graph input but X bound to its data-set value (an initializer)."""
    from onnx import helper, numpy_helper

    m = onnx.ModelProto()
    m.CopyFrom(model)
    g = m.graph
    x_name = g.input[0].name
    keep = []
    for vi, arr in zip(list(g.input), inputs, strict=True):
        if vi.name == x_name:
            keep.append(vi)
        else:
            g.initializer.append(numpy_helper.from_array(arr, vi.name))
    del g.input[:]
    g.input.extend(keep)
    node = next(n for n in g.node if n.op_type in OPS)
    if want_y and (len(node.output) == 0 or not node.output[0]):
        outs = list(node.output) or [""]
        outs[0] = "Y__conformance"
        del node.output[:]
        node.output.extend(outs)
    if want_y:
        g.output.append(helper.make_tensor_value_info(node.output[0], onnx.TensorProto.FLOAT, None))
    return m, node


def _compile(tmp_path, model, output: str):
    from edgernn.export import compile_onnx

    p = os.path.join(tmp_path, "m.onnx")
    onnx.save(model, p)
    return compile_onnx(p, os.path.join(tmp_path, f"m_{output}.ernn"), output=output)


@pytest.mark.parametrize("case", CASES, ids=[c[0] for c in CASES])
def test_onnx_node_case(case, tmp_path):

    name, model, inputs, outputs = case
    out_names = [o.name for o in model.graph.output]
    node = next(n for n in model.graph.node if n.op_type in OPS)
    attrs = {a.name: onnx.helper.get_attribute_value(a) for a in node.attribute}
    direction = attrs.get("direction", b"forward")
    direction = direction.decode() if isinstance(direction, bytes) else direction
    x = inputs[0]
    checked = 0
    for oname, expected in zip(out_names, outputs, strict=True):
        slot = list(node.output).index(oname)
        m, _ = _frozen(model, inputs, want_y=False)
        res = _compile(str(tmp_path), m, oname)
        if slot in (1, 2) and direction != "forward":  # the reverse direction's final step: a final op
            assert "final" in [ly["kind"] for ly in chain_layers(res["plan"])], name
        if slot == 2:  # Y_c: the lstm op writes [h; c]
            assert chain_layers(res["plan"])[0]["cell_output"] is True, name
        y = predict(res["path"], input_to_btf(x, res["io"]["input_axes"]))
        exp = output_to_bf(expected, res["io"]["output_axes"])
        msg = mismatch(y, exp)
        assert msg is None, f"{name}: {oname}: {msg}"
        checked += 1
    assert checked >= 1
    if len(out_names) > 1:  # every output at once: a plan of several outputs, predict returns them in order
        from edgernn.export import compile_onnx

        import edgernn

        m, _ = _frozen(model, inputs, want_y=False)
        p = os.path.join(str(tmp_path), "all.onnx")
        onnx.save(m, p)
        res = compile_onnx(p, os.path.join(str(tmp_path), "all.ernn"))
        assert [o["name"] for o in res["plan"]["outputs"]] == out_names, name
        got = edgernn.load(res["path"], nonfinite="propagate").predict(
            input_to_btf(x, res["io"]["input_axes"])
        )
        for oname, g, e, axes in zip(out_names, got, outputs, res["io"]["outputs_axes"], strict=True):
            msg = mismatch(g, output_to_bf(e, axes))
            assert msg is None, f"{name}: all outputs: {oname}: {msg}"
