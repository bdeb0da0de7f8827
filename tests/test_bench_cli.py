"""``edgernn bench`` run as a user runs it (a subprocess), with fast settings; no timing assertions.

The JSON is checked for structure and internal consistency: percentiles ordered, counts equal to the
settings, throughput = n / time, FLOP and byte counts equal to the hand-counted sizes of the model, and the
baselines' outputs agreeing with edgernn's (an independent implementation: ONNX Runtime, PyTorch).
"""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys

import numpy as np
import pytest

from edgernn import artifact
from edgernn.bench import quantize_int8, stream_counts, summarize, synthetic

HAVE_ORT = (
    importlib.util.find_spec("onnxruntime") is not None and importlib.util.find_spec("onnx") is not None
)
HAVE_TORCH = importlib.util.find_spec("torch") is not None
HAVE_MPL = importlib.util.find_spec("matplotlib") is not None

FAST = ["--steps", "300", "--warmup", "20", "--chunk", "50", "--max-streams", "16", "--separate", "16"]
FAST += ["--no-progress"]


def _bench(*args: str, timeout: float = 900) -> subprocess.CompletedProcess:
    return subprocess.run(
        [sys.executable, "-m", "edgernn.cli", "bench", *args],
        capture_output=True,
        text=True,
        timeout=timeout,
    )


@pytest.fixture(scope="module")
def lstm(tmp_path_factory):
    d = tmp_path_factory.mktemp("bench_cli")
    plan, tensors = synthetic("lstm", 8, 16, 2, seed=3)
    path = d / "lstm.ernn"
    artifact.write(path, plan, tensors)
    return path


def _check_step(st: dict, steps: int) -> None:
    assert st["count"] == steps
    assert 0 < st["min_us"] <= st["p50_us"] <= st["p90_us"] <= st["p99_us"] <= st["p99.9_us"] <= st["max_us"]
    assert st["min_us"] <= st["mean_us"] <= st["max_us"]
    assert st["tail_ratio"] == pytest.approx(st["p99.9_us"] / st["p50_us"], rel=1e-9)
    assert st["preemptions"] >= 0 and st["gc_collections"] >= 0
    assert 0 <= st["over_deadline"] <= steps
    # over_deadline counts the per-step times above the deadline: consistent with the percentiles
    if st["max_us"] <= st["deadline_us"]:
        assert st["over_deadline"] == 0
    if st["p50_us"] > st["deadline_us"]:
        assert st["over_deadline"] >= steps // 2
    assert st["realtime_x"] == pytest.approx(st["deadline_us"] / st["loop_us"], rel=1e-9)
    assert st["gflops"] > 0 and st["weight_gbps"] > 0


def _check_streams(rows: list, ns: list[int]) -> None:
    assert [r["n"] for r in rows] == ns
    for r in rows:
        assert r["us_per_call"] > 0
        assert r["stream_steps_per_s"] == pytest.approx(r["n"] * 1e6 / r["us_per_call"], rel=1e-9)
        assert r["us_per_stream_step"] == pytest.approx(r["us_per_call"] / r["n"], rel=1e-9)


def test_bench_core_json_and_table(lstm, tmp_path):
    out = tmp_path / "r.json"
    p = _bench(str(lstm), "--backends", "edgernn", "--cold-runs", "0", "--json", str(out), *FAST)
    assert p.returncode == 0, p.stderr
    assert "step p50 (us)" in p.stdout and "edgernn" in p.stdout
    r = json.loads(out.read_text())
    assert set(r) >= {"machine", "model", "settings", "backends", "skipped"}
    assert list(r["backends"]) == ["edgernn"]
    e = r["backends"]["edgernn"]
    _check_step(e["step"], 300)
    # the model's work, counted by hand: LSTM 4H(I+H) weights + Dense O*H, 2 FLOP per weight, 4 bytes each
    weights = 4 * 16 * (8 + 16) + 2 * 16
    assert r["model"]["flops"] == 2 * weights
    assert r["model"]["weight_bytes"] == 4 * weights
    assert r["model"]["size_bytes"] == lstm.stat().st_size
    assert r["settings"]["streams"] == [1, 4, 16]
    _check_streams(e["streams"], [1, 4, 16])
    assert e["separate"]["n"] == 16 and e["separate"]["us_per_call"] > 0
    assert e["run"]["T"] == 50 and e["run"]["us_per_step"] > 0
    assert "cold_start" not in e
    assert e["check"]["agree"] and e["check"]["step"]["max_abs_diff"] == 0.0


@pytest.mark.slow
def test_bench_cold_start(lstm, tmp_path):
    """Fresh processes: one with an empty kernel cache (compiles), one with the cache it left behind."""
    out = tmp_path / "r.json"
    args = ["--backends", "edgernn", "--cold-runs", "1", "--json", str(out), *FAST, "--steps", "20"]
    p = _bench(str(lstm), *args)
    assert p.returncode == 0, p.stderr
    e = json.loads(out.read_text())["backends"]["edgernn"]
    cs = e["cold_start"]
    assert cs["runs"] == 1
    for k in ("empty_cache", "warm_cache"):
        assert cs[k]["wall_s"] >= cs[k]["in_process_s"] > 0
        assert cs[k]["peak_rss_mb"] > 10
    assert e["peak_rss_mb"] == cs["warm_cache"]["peak_rss_mb"]
    assert "cold start, empty kernel cache (s)" in p.stdout


@pytest.mark.skipif(not (HAVE_ORT and HAVE_TORCH and HAVE_MPL), reason="needs the export and bench extras")
def test_bench_baselines_agree_and_plot(tmp_path):
    plan, tensors = quantize_int8(*synthetic("gru", 8, 16, 1, seed=4))
    path = tmp_path / "gru.int8.ernn"
    artifact.write(path, plan, tensors)
    out, png = tmp_path / "r.json", tmp_path / "r.png"
    p = _bench(str(path), "--cold-runs", "0", "--json", str(out), "--plot", str(png), *FAST)
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    # an int8 artifact also gets ORT's own dynamic quantization of the same float weights
    assert list(r["backends"]) == ["edgernn", "onnxruntime", "onnxruntime-int8", "torch"], r["skipped"]
    for name, b in r["backends"].items():
        _check_step(b["step"], 300)
        _check_streams(b["streams"], [1, 4, 16])
        assert "cold_start" not in b
        assert b["check"]["agree"], (name, b["check"])
    # the baselines run the dequantized float32 weights: 4 bytes per weight; edgernn reads int8 + scales
    weights = 3 * 16 * (8 + 16) + 16
    assert r["model"]["weight_bytes"] == weights + 4 * (2 * 3 * 16 + 1)
    assert r["backends"]["torch"]["run"]["kind"].startswith("fused")
    assert r["backends"]["onnxruntime"]["run"]["kind"] == "sequence graph"
    assert r["backends"]["onnxruntime"]["check"]["run"]["agree"]
    head = png.read_bytes()[:24]
    assert head[:8] == b"\x89PNG\r\n\x1a\n"
    width, height = int.from_bytes(head[16:20], "big"), int.from_bytes(head[20:24], "big")
    assert width > 800 and height > 300


def test_bench_errors(tmp_path):
    p = _bench(str(tmp_path / "missing.ernn"), *FAST)
    assert p.returncode == 1 and "no such file" in p.stderr
    bad = tmp_path / "bad.ernn"
    bad.write_bytes(b"not an artifact at all")
    p = _bench(str(bad), *FAST)
    assert p.returncode == 1 and "edgernn bench: error:" in p.stderr
    plan, tensors = synthetic("rnn", 4, 8, 1)
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    p = _bench(str(tmp_path / "m.ernn"), "--backends", "edgernn,tensorflow", *FAST)
    assert p.returncode == 1 and "tensorflow" in p.stderr


def test_summarize_matches_numpy_percentiles():
    rng = np.random.default_rng(0)
    ns = rng.integers(500, 50_000, size=1001)
    s = summarize(ns)
    us = ns / 1e3
    assert s["p50_us"] == pytest.approx(np.median(us))
    assert s["p99.9_us"] == pytest.approx(np.sort(us)[999])  # index 0.999 * 1000, no interpolation
    assert s["max_us"] == us.max() and s["min_us"] == us.min() and s["count"] == 1001


def test_stream_counts():
    assert stream_counts(4096) == [1, 4, 16, 64, 256, 1024, 4096]
    assert stream_counts(100) == [1, 4, 16, 64, 100]
    assert stream_counts(1) == [1]


def test_quantize_int8_error_bound():
    plan, tensors = synthetic("esn", 8, 50, 1, density=0.2)
    qplan, qt = quantize_int8(plan, tensors)
    artifact.validate_tensors(artifact.validate_plan(qplan), qt)
    w, q, sc = tensors["rec.W_data"], qt["rec.W_data"], qt["rec.W_data_scale"]
    rows = np.repeat(np.arange(50), np.diff(tensors["rec.W_indptr"]))
    assert q.dtype == np.int8 and np.abs(q).max() == 127
    assert np.all(np.abs(q * sc[rows] - w) <= sc[rows] / 2 + 1e-7)


def test_bench_on_the_core_install(lstm, tmp_path):
    """Without torch, onnx, onnxruntime and matplotlib (blocked in the child): edgernn's column alone, and
    --plot fails with one line naming the extra to install."""
    block = (
        "import sys\nfor m in ('torch', 'onnx', 'onnxruntime', 'matplotlib'):\n    sys.modules[m] = None\n"
    )
    code = block + "from edgernn.cli import main\nsys.exit(main(sys.argv[1:]))\n"
    out = tmp_path / "r.json"
    args = [str(lstm), "--cold-runs", "0", "--json", str(out), *FAST]
    p = subprocess.run(
        [sys.executable, "-c", code, "bench", *args], capture_output=True, text=True, timeout=900
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    assert list(r["backends"]) == ["edgernn"] and r["skipped"] == {}
    p = subprocess.run(
        [sys.executable, "-c", code, "bench", *args, "--plot", str(tmp_path / "x.png")],
        capture_output=True,
        text=True,
        timeout=900,
    )
    assert p.returncode == 1
    assert "matplotlib is not installed" in p.stderr and "edgernn[bench]" in p.stderr
    assert "Traceback" not in p.stderr
