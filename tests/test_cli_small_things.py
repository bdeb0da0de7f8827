"""Small user-facing messages and documented figures (issue 17, item 7), each against what it claims."""

from __future__ import annotations

import re
from pathlib import Path

import harden_common as hc
import numpy as np
import pytest
from builders import dense, model, recurrent

import edgernn
from edgernn import ArtifactError, InputError

ROOT = Path(__file__).resolve().parents[1]


def test_boards_md_model_size_is_the_real_file_size(tmp_path):
    text = (ROOT / "docs" / "BOARDS.md").read_text()
    m = re.search(
        r"Model: LSTM \(input 8, hidden 64\) \+ dense head, many-to-one, float32 \((\d+) kB file", text
    )
    assert m, "BOARDS.md no longer describes its benchmark model as expected"
    rng = np.random.default_rng(0)
    plan, tensors = model([recurrent(rng, "lstm", "l", 8, 64), dense(rng, "d", 64, 1)], 8, "many_to_one")
    edgernn.artifact.write(tmp_path / "m.ernn", plan, tensors)
    size = (tmp_path / "m.ernn").stat().st_size
    assert abs(int(m.group(1)) * 1000 - size) <= 500, (m.group(1), size)


def test_streams_shape_error_names_n_streams_not_time():
    mdl = edgernn.Model(*hc.model("gru", i=3, h=4, o=2))
    n, i = 3, mdl.input_size
    b = mdl.streams(n)
    for bad in (np.zeros(i + 1, np.float32), np.zeros((n, 2, i), np.float32), np.zeros((n + 1, i))):
        with pytest.raises(InputError) as e:
            b.step(bad)
        msg = str(e.value)
        assert "(T," not in msg and f"({n}, {i})" in msg, msg


def test_token_errors_print_plain_numbers():
    mdl = edgernn.Model(*hc.tokens_model(vocab=11))
    s = mdl.stream()
    for bad, shown in ((20, "20"), (20.0, "20"), (np.float32(20.5), "20.5"), (-1, "-1")):
        with pytest.raises(InputError) as e:
            s.step(bad)
        assert str(e.value).startswith(f"token id {shown} is not an integer in [0, 11)"), str(e.value)
        assert "np." not in str(e.value)
    with pytest.raises(InputError, match=r"token id 20 is not an integer in \[0, 11\) \(stream 1\)"):
        mdl.streams(2).step(np.array([1, 20]))


def test_loading_an_onnx_file_says_so(tmp_path):
    onnx = pytest.importorskip("onnx")
    from onnx import TensorProto, helper

    graph = helper.make_graph(
        [helper.make_node("Relu", ["x"], ["y"])],
        "g",
        [helper.make_tensor_value_info("x", TensorProto.FLOAT, [1])],
        [helper.make_tensor_value_info("y", TensorProto.FLOAT, [1])],
    )
    for kw in ({}, {"producer_name": "pytorch", "producer_version": "2.5"}):
        path = tmp_path / "m.onnx"
        onnx.save(helper.make_model(graph, **kw), path)
        with pytest.raises(ArtifactError) as e:
            edgernn.load(path)
        assert str(e.value) == (
            "not an edgernn artifact: this is not an .ernn file (it looks like ONNX: use `edgernn compile`)"
        )
    # other junk keeps its own named check
    (tmp_path / "junk.ernn").write_bytes(b"\xff" * 64)
    with pytest.raises(ArtifactError, match="^header too large"):
        edgernn.load(tmp_path / "junk.ernn")
