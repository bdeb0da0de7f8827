"""``edgernn bench`` of graph plans (format 2: a value read by several ops), run as a user runs it (the CLI
in a subprocess, few steps): edgernn's rows, and ONNX Runtime on the *original* ONNX file with its state
fed back (the state pairs and bindings the compiler recorded in the plan), found through ``--onnx`` or
beside the artifact with the recorded sha256; torch is left out with a one-line reason. ONNX Runtime is the
oracle of the output check. No timing assertions.

Models: a small hand-built branching graph (x read by two MatMuls, x W0 + tanh(x W1), scaled by a bound
input, into a GRU step with state h -> hn) and the Silero VAD files of the installed ``silero-vad``
package (compile flags as in ``benchmarks/vad_bench.py``).
"""

from __future__ import annotations

import importlib.resources
import json
import os
import shutil
import subprocess
import sys

import numpy as np
import pytest

onnx = pytest.importorskip("onnx")
pytest.importorskip("onnxruntime")

from edgernn.export.onnx import compile_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

from edgernn import artifact  # noqa: E402

QUICK = ["--steps", "60", "--warmup", "5", "--chunk", "8", "--max-streams", "4", "--separate", "4"]
QUICK += ["--cold-runs", "0", "--no-progress"]


def _bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgernn.cli", "bench", *args], capture_output=True, text=True, timeout=900
    )


def _graph_model(seed: int = 0, i: int = 3, h: int = 4):
    """x [b, i], h [1, b, h], scale [] -> y [b, h], hn [1, b, h]: s = scale (x W0 + tanh(x W1)); GRU."""
    rng = np.random.default_rng(seed)

    def init(name, arr):
        return numpy_helper.from_array(np.asarray(arr), name)

    nodes = [
        helper.make_node("MatMul", ["x", "W0"], ["a"]),
        helper.make_node("MatMul", ["x", "W1"], ["b0"]),
        helper.make_node("Tanh", ["b0"], ["b"]),
        helper.make_node("Add", ["a", "b"], ["s0"]),
        helper.make_node("Mul", ["s0", "scale"], ["s"]),
        helper.make_node("Unsqueeze", ["s", "zero"], ["s3"]),
        helper.make_node("GRU", ["s3", "W", "R", "", "", "h"], ["Y", "Yh"], hidden_size=h),
        helper.make_node("Squeeze", ["Yh", "zero"], ["y"]),
        helper.make_node("Identity", ["Yh"], ["hn"]),
    ]
    inits = [
        init("W0", rng.normal(0, 0.5, (i, h)).astype(np.float32)),
        init("W1", rng.normal(0, 0.5, (i, h)).astype(np.float32)),
        init("W", rng.normal(0, 0.5, (1, 3 * h, h)).astype(np.float32)),
        init("R", rng.normal(0, 0.5, (1, 3 * h, h)).astype(np.float32)),
        init("zero", np.array([0], np.int64)),
    ]
    vi = helper.make_tensor_value_info
    ins = [
        vi("x", TensorProto.FLOAT, ["b", i]),
        vi("h", TensorProto.FLOAT, [1, "b", h]),
        vi("scale", TensorProto.FLOAT, []),
    ]
    outs = [vi("y", TensorProto.FLOAT, ["b", h]), vi("hn", TensorProto.FLOAT, [1, "b", h])]
    g = helper.make_graph(nodes, "g", ins, outs, inits)
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def graph_ernn(tmp_path_factory):
    """g.onnx and g.ernn (compiled with scale bound to 0.5) side by side."""
    d = tmp_path_factory.mktemp("bench_graph")
    onnx.save(_graph_model(), str(d / "g.onnx"))
    res = compile_onnx(str(d / "g.onnx"), str(d / "g.ernn"), bind={"scale": 0.5})
    assert res["plan"]["format_version"] == 2  # a value read by two ops: not a chain
    return d


def _run_json(tmp_path, *args) -> dict:
    out = tmp_path / "r.json"
    p = _bench(*args, "--json", str(out), *QUICK)
    assert p.returncode == 0, p.stderr
    assert "Traceback" not in p.stderr
    return json.loads(out.read_text()), p.stdout


def test_graph_plan_records_how_to_run_its_source(graph_ernn):
    plan, _ = artifact.read(graph_ernn / "g.ernn")
    io = plan["source_io"]
    assert io["state_pairs"] == [["h", "hn"]] and io["bound"] == {"scale": 0.5}
    assert io["input"] == "x" and io["output"] == "y"


def test_bench_graph_plan_with_its_source_beside(graph_ernn, tmp_path):
    """Default backends: edgernn and ORT on g.onnx beside the artifact (found by name + sha256), which
    agree after timing; edgernn's numpy backend too; torch left out with its reason."""
    r, table = _run_json(
        tmp_path, str(graph_ernn / "g.ernn"), "--backends", "edgernn,numpy,onnxruntime,torch"
    )
    bk = r["backends"]
    assert list(bk) == ["edgernn", "numpy", "onnxruntime"]
    for name in ("edgernn", "numpy"):
        assert bk[name]["step"]["count"] == 60 and "run" in bk[name]
        assert [row["n"] for row in bk[name]["streams"]] == [1, 4]
    ort = bk["onnxruntime"]
    assert ort["files"]["step"] == str(graph_ernn / "g.onnx")
    assert ort["run"]["kind"] == "step loop" and "streams" not in ort
    for name in bk:
        assert bk[name]["check"]["agree"], (name, bk[name]["check"])
    assert bk["onnxruntime"]["check"]["step"]["max_abs_diff"] < 1e-5
    assert "graph plan" in r["skipped"]["torch"]
    assert "skipped torch: no PyTorch baseline for a graph plan" in table
    assert r["model"]["graph"] is True


def test_bench_graph_plan_source_not_beside_or_not_the_same(graph_ernn, tmp_path):
    """Copied alone, the artifact has no ORT column (one line why); a g.onnx beside it with other weights is
    not taken (sha256), and given with --onnx it is run, noted, and the check says it disagrees."""
    alone = tmp_path / "alone"
    alone.mkdir()
    shutil.copy(graph_ernn / "g.ernn", alone / "g.ernn")
    r, _ = _run_json(
        tmp_path, str(alone / "g.ernn"), "--backends", "edgernn,onnxruntime", "--max-streams", "0"
    )
    assert list(r["backends"]) == ["edgernn"]
    assert "is not beside the artifact" in r["skipped"]["onnxruntime"]
    assert "--onnx" in r["skipped"]["onnxruntime"]
    onnx.save(_graph_model(seed=1), str(alone / "g.onnx"))
    r, _ = _run_json(
        tmp_path, str(alone / "g.ernn"), "--backends", "edgernn,onnxruntime", "--max-streams", "0"
    )
    assert "sha256 differs" in r["skipped"]["onnxruntime"]
    r, table = _run_json(
        tmp_path, str(alone / "g.ernn"), "--onnx", str(alone / "g.onnx"), "--max-streams", "0"
    )
    assert r["backends"]["onnxruntime"]["check"]["agree"] is False
    assert "is not the file the artifact was compiled from" in table


def test_source_step_graph_of_an_artifact_without_recorded_pairs(graph_ernn, tmp_path):
    """An artifact written before the state pairs were recorded: the pairs are found on the file as the
    compiler finds them, and ORT fed back its own state follows edgernn's stream."""
    from edgernn.export.baselines import OrtStep, step_graph_from_source

    import edgernn

    plan, tensors = artifact.read(graph_ernn / "g.ernn")
    del plan["source_io"]["state_pairs"]
    artifact.write(tmp_path / "old.ernn", plan, tensors)
    plan, _ = artifact.read(tmp_path / "old.ernn")
    g = step_graph_from_source(str(graph_ernn / "g.onnx"), plan)
    assert [(s.name_in, s.name_out) for s in g.states] == [("h", "hn")] and set(g.consts) == {"scale"}
    o, s = OrtStep(g), edgernn.load(str(tmp_path / "old.ernn")).stream()
    X = np.random.default_rng(2).normal(size=(20, 3)).astype(np.float32)
    np.testing.assert_allclose(np.stack([o.step(x) for x in X]), np.stack([s.step(x) for x in X]), atol=1e-5)


def _silero(name: str) -> str:
    pytest.importorskip("silero_vad")
    path = str(importlib.resources.files("silero_vad") / "data" / name)
    if not os.path.isfile(path):
        pytest.skip(f"{name} not in this silero-vad")
    return path


def test_bench_silero_vad_openvino_beside(tmp_path):
    """The issue's command: compile silero_vad_openvino_16k.onnx, bench the .ernn (source beside it)."""
    d = tmp_path / "vad"
    d.mkdir()
    src = shutil.copy(_silero("silero_vad_openvino_16k.onnx"), d / "silero_vad_openvino_16k.onnx")
    from edgernn.cli import main as cli

    assert cli(["compile", str(src), "-o", str(d / "vad.ernn")]) == 0
    r, table = _run_json(tmp_path, str(d / "vad.ernn"))
    bk = r["backends"]
    assert list(bk)[:2] == ["edgernn", "onnxruntime"]
    assert bk["onnxruntime"]["source"] == "silero_vad_openvino_16k.onnx"
    assert bk["edgernn"]["check"]["agree"] and bk["onnxruntime"]["check"]["agree"]
    assert "torch" not in bk and ("torch" in r["skipped"] or "torch" in r["not_installed"])
    assert "step p99.9 (us)" in table


def test_bench_silero_vad_with_bound_sample_rate(tmp_path):
    """silero_vad.onnx takes sr and an open chunk length: compiled with --set sr=16000 --shape
    input=1,576 (benchmarks/vad_bench.py), benched with --onnx on the original file (sr fed as int64)."""
    src = _silero("silero_vad.onnx")
    from edgernn.cli import main as cli

    ernn = str(tmp_path / "vad.ernn")
    assert cli(["compile", src, "-o", ernn, "--set", "sr=16000", "--shape", "input=1,576"]) == 0
    plan, _ = artifact.read(ernn)
    assert plan["source_io"]["bound"] == {"sr": 16000}
    assert plan["source_io"]["state_pairs"] == [["state", "stateN"]]
    r, _ = _run_json(tmp_path, ernn, "--onnx", src, "--backends", "edgernn,onnxruntime", "--max-streams", "0")
    ort = r["backends"]["onnxruntime"]
    assert ort["files"]["step"] == src
    assert ort["check"]["agree"], ort["check"]
    assert r["notes"] == []
