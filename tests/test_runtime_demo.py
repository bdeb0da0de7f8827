"""`edgernn demo` end to end in a subprocess: the core (numpy ESN) and the full pipeline."""

from __future__ import annotations

import re
import subprocess
import sys

import pytest


def _demo(*args):
    r = subprocess.run(
        [sys.executable, "-m", "edgernn.cli", "demo", *args], capture_output=True, text=True, timeout=900
    )
    assert r.returncode == 0, r.stderr[-3000:]
    return r.stdout


def test_core_demo_beats_the_naive_forecast(tmp_path):
    out = _demo("--core", "--steps", "300", "--reservoir", "60", "-o", str(tmp_path))
    rmse, naive = map(
        float, re.search(r"RMSE ([\d.]+) \(repeat-last-value baseline ([\d.]+)\)", out).groups()
    )
    assert rmse < naive
    assert (tmp_path / "demo_esn.ernn").exists()


def test_pipeline_demo_trains_exports_streams_and_benchmarks(tmp_path):
    pytest.importorskip("torch")
    pytest.importorskip("onnxruntime")
    out = _demo("--epochs", "2", "--steps", "300", "-o", str(tmp_path))
    for f in (
        "model.onnx",
        "model.step.onnx",
        "model.ernn",
        "model.int8.onnx",
        "model.int8.ernn",
        "report.json",
    ):
        assert (tmp_path / f).exists(), f
    fp32 = re.search(r"edgernn model\.ernn\s+([\d.]+)\s+\(max \|Δ\| vs PyTorch ([\d.e+-]+)\)", out)
    assert fp32 and float(fp32.group(2)) < 1e-4, out
    assert "step p50 (us)" in out and "onnxruntime" in out and "torch" in out
