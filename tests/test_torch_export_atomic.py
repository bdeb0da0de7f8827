"""A failed export leaves its output folder as it was (plus report.failed.json); a good one replaces it.

The failure is a real one, caught by the parity proof: a forward that scales the GRU output between the
layers, which the exported graphs cannot see.
"""

from __future__ import annotations

import json
import os

import numpy as np
import pytest

torch = pytest.importorskip("torch")
pytest.importorskip("onnxruntime")

from edgernn.export import ExportParityError, export  # noqa: E402
from torch import nn  # noqa: E402

from edgernn.models import SequenceModel  # noqa: E402


class Hidden(nn.Module):
    def __init__(self):
        super().__init__()
        self.gru = nn.GRU(3, 8, batch_first=True)
        self.fc = nn.Linear(8, 2)

    def forward(self, x):
        return self.fc(2.0 * self.gru(x)[0])


def _snapshot(d):
    return {n: (d / n).read_bytes() for n in sorted(os.listdir(d))}


def _no_staging_left(parent):
    return [n for n in os.listdir(parent) if ".export-" in n] == []


def test_failed_export_leaves_out_as_it_was(tmp_path):
    torch.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    out = tmp_path / "out"
    good = SequenceModel("gru", 3, 8, 2, many_to_many=True).eval()
    export(good, out, X, quantize="int8")
    (out / "notes.txt").write_text("the user's own file\n")
    before = _snapshot(out)
    assert {"model.ernn", "model.int8.ernn", "model.onnx", "report.json"} <= set(before)

    with pytest.raises(ExportParityError, match="report.failed.json") as e:
        export(Hidden().eval(), out, X, quantize="int8")
    after = _snapshot(out)
    failed = json.loads(after.pop("report.failed.json"))
    assert after == before  # every file byte for byte, nothing added but the failed report
    assert failed["ok"] is False and failed["failure"] == str(e.value)
    assert _no_staging_left(tmp_path)

    # a good export after it: the failed report and the earlier int8 files (not written now) go
    export(good, out, X)
    names = set(os.listdir(out))
    assert "report.failed.json" not in names and "model.int8.ernn" not in names
    assert {"model.ernn", "model.onnx", "report.json", "notes.txt"} <= names
    assert json.loads((out / "report.json").read_text())["ok"] is True
    assert _no_staging_left(tmp_path)


def test_failed_export_into_a_new_folder_writes_only_the_failed_report(tmp_path):
    X = np.random.default_rng(1).normal(size=(2, 5, 3)).astype(np.float32)
    with pytest.raises(ExportParityError):
        export(Hidden().eval(), tmp_path / "new", X)
    assert os.listdir(tmp_path / "new") == ["report.failed.json"]
    assert _no_staging_left(tmp_path)
