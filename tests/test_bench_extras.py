"""``edgernn bench`` with optional pieces missing or present: refusals before any timing on a core install,
the ONNX Runtime columns with whichever ONNX files sit beside the artifact, and what the PNG shows.

Oracles: the core install is simulated in a child process (``sys.modules[m] = None`` blocks the import);
the ORT columns are checked against edgernn's outputs (an independent implementation) and the files' own
interfaces; the PNG's ticks and notes are read from matplotlib's objects against hand-written values.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np
import pytest
from builders import dense, model, recurrent

from edgernn import artifact
from edgernn.bench import synthetic

HAVE_ORT = (
    importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None

FAST = dict(steps=200, warmup=10, chunk=40, max_streams=16, separate=16, cold_runs=0, progress=False)
CORE = "import sys\nfor m in ('torch', 'onnx', 'onnxruntime', 'onnxscript', 'matplotlib'):\n"
CORE += "    sys.modules[m] = None\n"
CORE += "from edgernn.cli import main\nsys.exit(main(sys.argv[1:]))\n"


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_extras")
    plan, tensors = synthetic("lstm", 8, 16, 2, seed=3)
    path = d / "lstm.ernn"
    artifact.write(path, plan, tensors)
    return path


def _core_bench(*args: str) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-c", CORE, "bench", *args], capture_output=True, text=True, timeout=600
    )


@pytest.mark.parametrize(
    ("args", "extra", "names"),
    [
        (["--backends", "onnxruntime"], "edgernn[export]", ["onnxruntime", "onnx"]),
        (["--backends", "edgernn,onnxruntime-int8"], "edgernn[export]", ["onnxruntime"]),
        (["--backends", "edgernn,torch"], "edgernn[export]", ["torch"]),
        (["--plot", "PNG"], "edgernn[bench]", ["matplotlib"]),
        (["--backends", "torch", "--plot", "PNG"], "edgernn[export,bench]", ["torch", "matplotlib"]),
        (["--onnx", "ONNX"], "edgernn[export]", ["onnxruntime"]),
        (["--checkpoint", "PT"], "edgernn[export]", ["torch"]),
    ],
)
def test_core_install_refuses_a_missing_extra_before_any_timing(lstm, tmp_path, args, extra, names):
    (tmp_path / "m.onnx").write_bytes(b"an onnx file")
    (tmp_path / "m.pt").write_bytes(b"a checkpoint")
    subst = {"PNG": str(tmp_path / "r.png"), "ONNX": str(tmp_path / "m.onnx"), "PT": str(tmp_path / "m.pt")}
    args = [subst.get(a, a) for a in args]
    out = tmp_path / "r.json"
    p = _core_bench(str(lstm), "--json", str(out), "--cold-runs", "0", *args)  # progress bar on
    assert p.returncode == 1, (p.stdout, p.stderr)
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("edgernn bench: error:"), p.stderr
    assert f"pip install '{extra}'" in lines[0]
    for n in names:
        assert f"{n} " in lines[0] or f"{n}," in lines[0], lines[0]
    # nothing ran: no progress bar, no table, no results, no plot
    assert "%" not in p.stderr and p.stdout == ""
    assert not out.exists() and not (tmp_path / "r.png").exists()


@pytest.mark.parametrize(
    ("args", "says"),
    [
        (["--onnx", "MISSING"], "--onnx: no such file"),
        (["--onnx-seq", "MISSING"], "--onnx-seq: no such file"),
        (["--checkpoint", "MISSING"], "--checkpoint: no such file"),
        (["--json", "NODIR"], "--json: no such directory"),
        (["--plot", "NODIR"], "--plot: no such directory"),
        (["--json", "DIR"], "--json: "),
    ],
)
def test_bad_paths_are_one_line_before_any_timing(lstm, tmp_path, args, says):
    subst = {
        "MISSING": str(tmp_path / "missing.onnx"),
        "NODIR": str(tmp_path / "no" / "r.out"),
        "DIR": str(tmp_path),
    }
    p = _core_bench(str(lstm), "--cold-runs", "0", *[subst.get(a, a) for a in args])
    assert p.returncode == 1 and p.stdout == ""
    lines = p.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith(f"edgernn bench: error: {says}"), p.stderr


def test_core_install_names_the_default_baselines_it_leaves_out(lstm, tmp_path):
    out = tmp_path / "r.json"
    p = _core_bench(str(lstm), "--json", str(out), "--cold-runs", "0", "--no-progress", "--steps", "50")
    assert p.returncode == 0, p.stderr
    note = p.stderr.strip().splitlines()[0]
    assert note.startswith("edgernn bench: note: no column for onnxruntime") and "torch" in note
    assert "pip install 'edgernn[export]'" in note
    r = json.loads(out.read_text())
    assert list(r["backends"]) == ["edgernn"] and r["skipped"] == {}
    assert set(r["not_installed"]) == {"onnxruntime", "torch"}
    assert "not run onnxruntime:" in p.stdout and "not run torch:" in p.stdout


def _write_onnx(path, which: set[str]) -> None:
    """The ONNX files ``edgernn export`` writes beside model.ernn, made by the graph builders it uses."""
    import onnx
    from edgernn.export.onnx_graph import sequence_graph, step_graph

    plan, tensors = artifact.read(path)
    stem = str(path)[: -len(".ernn")]
    if "step" in which:
        onnx.save(step_graph(plan, tensors, "native"), stem + ".step.onnx")
    if "seq" in which:
        onnx.save(sequence_graph(plan, tensors, "native"), stem + ".onnx")


@pytest.mark.skipif(not HAVE_ORT, reason="needs the export extra")
@pytest.mark.parametrize("which", ["", "step", "seq", "step+seq"])
def test_ort_columns_whichever_onnx_files_sit_beside(tmp_path, which):
    from edgernn.bench import bench

    plan, tensors = synthetic("lstm", 8, 16, 2, seed=5)
    path = tmp_path / "model.ernn"
    artifact.write(path, plan, tensors)
    _write_onnx(path, set(which.split("+")))
    r = bench(str(path), backends=["edgernn", "onnxruntime"], **FAST)
    assert r["skipped"] == {}
    o = r["backends"]["onnxruntime"]
    step_file, seq_file = str(tmp_path / "model.step.onnx"), str(tmp_path / "model.onnx")
    # steps and streams: the step file when there is one (its batch dimension set to n), else built
    assert o["files"]["step"] == (step_file if "step" in which else "built from the artifact")
    assert o["files"]["streams"] == (step_file if "step" in which else "built from the artifact")
    assert [s["n"] for s in o["streams"]] == [1, 4, 16]
    assert all(s["us_per_call"] > 0 for s in o["streams"])
    # chunks: the sequence file when there is one, else a sequence graph built from the weights
    if "seq" in which:
        assert o["files"]["sequence"] == seq_file and o["run"]["kind"] == "sequence graph (model.onnx)"
    else:
        assert o["files"]["sequence"] == "built from the artifact" and o["run"]["kind"] == "sequence graph"
    assert o["run"]["T"] == 40 and o["run"]["us_per_step"] > 0
    chk = o["check"]
    assert chk["step"]["agree"] and chk["run"]["agree"] and chk["streams"]["agree"], chk


@pytest.mark.skipif(not HAVE_ORT, reason="needs the export extra")
def test_ort_chunks_of_an_esn_come_from_its_sequence_file(tmp_path):
    """An ESN has no ONNX sequence op to build (a step loop before); export's model.onnx (a Scan) has one."""
    from edgernn.bench import bench

    plan, tensors = synthetic("esn", 4, 40, 1, seed=2)
    path = tmp_path / "model.ernn"
    artifact.write(path, plan, tensors)
    r = bench(str(path), backends=["edgernn", "onnxruntime"], **FAST)
    assert r["backends"]["onnxruntime"]["run"]["kind"] == "step loop"
    _write_onnx(path, {"seq"})
    r = bench(str(path), backends=["edgernn", "onnxruntime"], **FAST)
    o = r["backends"]["onnxruntime"]
    assert o["run"]["kind"] == "sequence graph (model.onnx)"
    assert o["check"]["run"]["agree"], o["check"]


@pytest.mark.skipif(not HAVE_TORCH, reason="needs torch")
def test_table_when_no_backend_ran(tmp_path):
    """A clipped LSTM has no torch baseline: the only backend asked for is skipped, the table says so."""
    from edgernn.bench import bench, format_table

    rng = np.random.default_rng(0)
    plan, tensors = model([recurrent(rng, "lstm", "l", 4, 8, clip=2.0), dense(rng, "d", 8, 1)], 4)
    path = tmp_path / "clip.ernn"
    artifact.write(path, plan, tensors)
    r = bench(str(path), backends=["torch"], **FAST)
    assert r["backends"] == {} and "clip" in r["skipped"]["torch"]
    text = format_table(r)
    assert "no backend ran" in text and "skipped torch: Unsupported" in text


# ------------------------------------------------------------------------------------------------ PNG


def _results(rng) -> dict:
    """Results as bench returns them: edgernn around 2.5 us with streams, ORT around 15 us without."""
    lat = {
        "edgernn": (2300 + rng.gamma(2.0, 150.0, 2000)).astype(np.int64),
        "onnxruntime": (14000 + rng.gamma(2.0, 1500.0, 2000)).astype(np.int64),
    }

    def step(ns):
        return {"p50_us": float(np.median(ns / 1e3)), "p99_us": float(np.percentile(ns / 1e3, 99))}

    rows = [{"n": n, "us_per_call": 3.0 * n, "stream_steps_per_s": 1e6 / 3.0} for n in (1, 4, 16)]
    return {
        "_latency_ns": lat,
        "backends": {
            "edgernn": {"step": step(lat["edgernn"]), "streams": rows},
            "onnxruntime": {"step": step(lat["onnxruntime"])},
        },
        "skipped": {},
        "not_installed": {"torch": "torch is not installed; install with: pip install 'edgernn[export]'"},
        "settings": {"steps": 2000},
        "model": {"path": "/m/model.ernn", "layers": ["lstm 8->16", "dense 16->2"], "quantization": "none"},
        "machine": {"cpu": "a cpu"},
    }


@pytest.mark.skipif(not HAVE_MPL, reason="needs the bench extra")
def test_png_notes_what_it_leaves_out_and_ticks_the_latencies(tmp_path):
    from edgernn.bench import plot
    from edgernn.bench.plot import figure

    res = _results(np.random.default_rng(0))
    png = tmp_path / "r.png"
    plot(res, str(png))
    assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
    fig = figure(res)
    fig.canvas.draw()
    lat_ax, thr_ax = fig.axes
    # the throughput panel names ORT (no batched run) and torch (not installed); latency names torch
    thr_notes = " ".join(t.get_text() for t in thr_ax.texts)
    assert "onnxruntime" in thr_notes and "torch" in thr_notes and "not shown" in thr_notes
    lat_notes = " ".join(t.get_text() for t in lat_ax.texts)
    assert "torch" in lat_notes and "onnxruntime" not in lat_notes
    # latency axis: log, labelled 1-2-5 ticks inside the limits, one within a factor 1.6 of every p50
    assert lat_ax.get_xscale() == "log"
    lo, hi = lat_ax.get_xlim()
    labelled = {
        float(t.get_position()[0]): t.get_text()
        for t in lat_ax.get_xticklabels()
        if t.get_text() and lo <= t.get_position()[0] <= hi
    }
    assert sorted(labelled) == [1.0, 2.0, 5.0, 10.0, 20.0, 50.0]
    assert [labelled[v] for v in sorted(labelled)] == ["1", "2", "5", "10", "20", "50"]
    for name, b in res["backends"].items():
        p50 = b["step"]["p50_us"]
        assert min(max(t / p50, p50 / t) for t in labelled) <= 1.6, (name, p50, labelled)
    assert len(lat_ax.xaxis.get_minorticklocs()) == 0


@pytest.mark.skipif(not HAVE_MPL, reason="needs the bench extra")
def test_png_latency_ticks_on_a_wide_axis_still_label_every_p50():
    """One 300 ms outlier stretches the axis over six decades: decades and the ticks at the p50s are
    labelled, every other tick is a bare line."""
    from edgernn.bench.plot import figure

    res = _results(np.random.default_rng(2))
    res["_latency_ns"]["onnxruntime"][7] = 300_000_000
    fig = figure(res)
    fig.canvas.draw()
    ax = fig.axes[0]
    lo, hi = ax.get_xlim()
    assert lo <= 2.0 and hi >= 300_000
    labelled = [t.get_position()[0] for t in ax.get_xticklabels() if t.get_text()]
    assert {1.0, 10.0, 100.0, 1000.0, 10000.0} <= set(labelled)
    assert len(labelled) < len(ax.get_xticks())
    for b in res["backends"].values():
        p50 = b["step"]["p50_us"]
        assert min(max(t / p50, p50 / t) for t in labelled) <= 1.6, (p50, labelled)


@pytest.mark.skipif(not HAVE_MPL, reason="needs the bench extra")
def test_png_with_every_backend_has_no_note():
    from edgernn.bench.plot import figure

    res = _results(np.random.default_rng(1))
    res["not_installed"] = {}
    res["backends"]["onnxruntime"]["streams"] = [{"n": 1, "us_per_call": 9.0, "stream_steps_per_s": 1e6 / 9}]
    fig = figure(res)
    assert [t.get_text() for ax in fig.axes for t in ax.texts] == []


def test_log_ticks_are_the_1_2_5_values_around_the_data():
    from edgernn.bench.plot import log_ticks, tick_label

    assert log_ticks(2.1, 2.9) == [2.0, 5.0]
    assert log_ticks(0.8, 30.0) == pytest.approx([0.5, 1, 2, 5, 10, 20, 50])
    assert log_ticks(1.0, 10.0) == pytest.approx([1, 2, 5, 10])
    labels = [tick_label(v) for v in (0.05, 0.2, 2.0, 500.0, 2000.0, 1e6)]
    assert labels == ["0.05", "0.2", "2", "500", "2 ms", "1,000 ms"]
    with pytest.raises(ValueError):
        log_ticks(0.0, 1.0)


@pytest.mark.skipif(not HAVE_ORT, reason="needs the export extra")
def test_int8_artifact_does_not_take_ort_int8_file_for_the_float_column(tmp_path):
    """model.int8.onnx beside model.int8.ernn is ORT's own quantization: the float ORT column ignores it."""
    from edgernn.bench import bench, quantize_int8

    plan, tensors = quantize_int8(*synthetic("gru", 4, 8, 1, seed=1))
    path = tmp_path / "model.int8.ernn"
    artifact.write(path, plan, tensors)
    (tmp_path / "model.int8.onnx").write_bytes(b"not read")
    r = bench(str(path), backends=["onnxruntime"], **FAST)
    assert r["backends"]["onnxruntime"]["files"]["sequence"] == "built from the artifact"
    assert os.path.exists(tmp_path / "model.int8.onnx")


def test_bench_package_is_numpy_only_and_baselines_live_on_the_host_side():
    code = (
        "import sys, importlib.util, edgernn.bench, edgernn.commands.bench\n"
        "print(sorted(m for m in ('torch', 'onnx', 'onnxruntime', 'matplotlib') if m in sys.modules))\n"
        "print(importlib.util.find_spec('edgernn.baselines') is None)\n"
        "print(importlib.util.find_spec('edgernn.export.baselines') is not None)"
    )
    p = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert p.returncode == 0, p.stderr
    assert p.stdout.split() == ["[]", "True", "True"]
