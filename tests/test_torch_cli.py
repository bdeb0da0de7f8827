"""``edgernn export`` end to end in a subprocess: trained checkpoints of every kind, a user's module."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgernn import models, train  # noqa: E402


def _cli(*args, cwd=None):
    return subprocess.run(
        [sys.executable, "-m", "edgernn.cli", "export", *args],
        capture_output=True,
        text=True,
        cwd=cwd,
        timeout=300,
    )


def _trained(kind):
    torch.manual_seed(0)
    rng = np.random.default_rng(0)
    X = rng.normal(size=(32, 10, 4)).astype(np.float32)
    if kind == "esn":
        m = models.ESN(4, 100, 2, leak_rate=0.5, sparsity=0.9, seed=0)
        return m.fit(X, X.cumsum(1)[..., :2] * 0.1, washout=2)
    kw = {
        "rnn_tanh": dict(cell="rnn_tanh"),
        "rnn_relu": dict(cell="rnn_relu"),
        "lstm": dict(cell="lstm"),
        "gru": dict(cell="gru"),
        "bidirectional": dict(cell="gru", bidirectional=True),
        "stacked": dict(cell="lstm", num_layers=2),
        "attention": dict(cell="gru", attention=True),
    }[kind]
    m = models.SequenceModel(input_size=4, hidden_size=64, output_size=2, **kw)
    y = (X[:, :, 0].sum(1) > 0).astype(np.int64)
    train.fit(m, X, y, loss="cross_entropy", epochs=2, lr=0.01, progress=False)
    return m


@pytest.mark.parametrize(
    "kind", ["rnn_tanh", "rnn_relu", "lstm", "gru", "bidirectional", "stacked", "esn", "attention"]
)
def test_export_trained_checkpoint(tmp_path, kind):
    ck = tmp_path / "model.safetensors"
    models.save(_trained(kind), ck)
    out = tmp_path / "out"
    # --max-error inf: every matrix int8 (the size target below); the budget is test_quant_budget.py's
    r = _cli(str(ck), "-o", str(out), "--quantize", "int8", "--max-error", "inf", "--verify")
    assert r.returncode == 0, r.stderr + r.stdout
    expected = {"model.onnx", "model.ernn", "model.int8.onnx", "model.int8.ernn", "report.json"}
    if kind != "bidirectional":
        expected |= {"model.step.onnx", "model.step.int8.onnx"}
    assert expected <= set(os.listdir(out))
    report = json.loads((out / "report.json").read_text())
    assert report["ok"] and all(c["ok"] for c in report["fp32_vs_torch"].values())
    assert report["size_ratio_int8_vs_fp32"]["model.int8.onnx"] <= 0.35
    assert "size ratio model.int8.onnx" in r.stdout
    # each parity line under the heading of its precision: no int8 backend under "float32 parity"
    lines = r.stdout.splitlines()
    fp32 = lines.index(next(ln for ln in lines if ln.startswith("float32 parity")))
    int8 = lines.index(next(ln for ln in lines if ln.startswith("int8 against torch")))
    assert fp32 < int8
    assert not any("int8" in ln for ln in lines[fp32 + 1 : int8]), lines[fp32:int8]
    assert {ln.split()[0] for ln in lines[int8 + 1 :] if ln.startswith("  ") and "max abs" in ln} == set(
        report["int8_vs_torch"]
    )


USER_MODULE = """
import torch
from torch import nn


class Net(nn.Module):
    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(3, 16)  # time-first
        self.fc = nn.Linear(16, 2)

    def forward(self, x):
        out, _ = self.lstm(x)
        return torch.sigmoid(self.fc(out[-1]))


def build():
    return Net()
"""


@pytest.mark.parametrize("form", ["module", "file"])
def test_export_user_factory(tmp_path, form):
    (tmp_path / "usernet.py").write_text(textwrap.dedent(USER_MODULE))
    sys.path.insert(0, str(tmp_path))
    try:
        import usernet
    finally:
        sys.path.remove(str(tmp_path))
    torch.manual_seed(0)
    from safetensors.torch import save_file

    save_file(usernet.build().state_dict(), str(tmp_path / "w.safetensors"))
    spec = "usernet:build" if form == "module" else str(tmp_path / "usernet.py") + ":build"
    r = _cli("--factory", spec, "--weights", "w.safetensors", "-o", "out", "--quantize", "int8", cwd=tmp_path)
    assert r.returncode == 0, r.stderr + r.stdout
    report = json.loads((tmp_path / "out" / "report.json").read_text())
    assert report["ok"] and report["model"]["time_first_module"] is True
    assert report["model"]["output"]["sequence"] == "many_to_one"


def test_cli_errors(tmp_path):
    r = _cli(str(tmp_path / "missing.safetensors"), "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "no checkpoint file" in r.stderr
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"\x80\x04K\x01.")  # a pickle
    r = _cli(str(bad), "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "not a safetensors checkpoint" in r.stderr
    assert "Traceback" not in r.stderr
    r = _cli("--factory", "nowhere:build", "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "--weights" in r.stderr
    r = _cli("--factory", "no_such_module_xyz:build", "--weights", "w.safetensors", "-o", str(tmp_path / "o"))
    assert r.returncode == 1 and "cannot import" in r.stderr


def test_cli_calibration_needs_int8_and_a_readable_file(tmp_path):
    ck = tmp_path / "m.safetensors"
    ck.write_bytes(b"")
    r = _cli(str(ck), "-o", str(tmp_path / "o"), "--calibration", "x.npy")
    assert r.returncode == 1 and "--quantize int8" in r.stderr and "Traceback" not in r.stderr
    models.save(_trained("gru"), ck)
    r = _cli(
        str(ck), "-o", str(tmp_path / "o"), "--quantize", "int8", "--calibration", str(tmp_path / "no.npy")
    )
    assert r.returncode == 1 and "--calibration" in r.stderr and "Traceback" not in r.stderr


def test_cli_calibrated_export_records_the_rounding(tmp_path):
    from edgernn import artifact

    ck = tmp_path / "m.safetensors"
    models.save(_trained("lstm"), ck)
    rng = np.random.default_rng(1)
    np.save(tmp_path / "cal.npy", rng.normal(size=(16, 20, 4)).astype(np.float32))
    out = tmp_path / "out"
    cal = str(tmp_path / "cal.npy")
    r = _cli(str(ck), "-o", str(out), "--quantize", "int8", "--calibration", cal, "--max-error", "inf")
    assert r.returncode == 0, r.stderr + r.stdout
    plan, _ = artifact.read(out / "model.int8.ernn")
    rounding = plan["quantization_rounding"]
    assert rounding["calibration_vectors"] == 16 * 20 and set(rounding["matrices"]) == {
        "lstm0.W+R[0]",
        "dense1.W",
    }
    assert plan["quantization_report"]["data"] == "user" and plan["quantization_report"]["n_sequences"] == 16
