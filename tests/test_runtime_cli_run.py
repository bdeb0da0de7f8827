"""`edgernn run` end to end in a subprocess, against Model.predict on the same samples."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from builders import dense, model, recurrent

import edgernn


def _cli(*args, stdin=None):
    return subprocess.run(
        [sys.executable, "-m", "edgernn.cli", *args], input=stdin, capture_output=True, text=True, timeout=600
    )


def test_run_npy_csv_and_stdin_agree_with_predict(tmp_path):
    rng = np.random.default_rng(0)
    plan, tensors = model([recurrent(rng, "gru", "g", 3, 8), dense(rng, "d", 8, 2)], 3)
    path = tmp_path / "m.ernn"
    edgernn.artifact.write(path, plan, tensors)
    X = rng.normal(size=(25, 3)).astype(np.float32)
    ref = edgernn.load(path).predict(X)
    np.save(tmp_path / "x.npy", X)
    r = _cli("run", str(path), str(tmp_path / "x.npy"), "-o", str(tmp_path / "y.npy"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.load(tmp_path / "y.npy"), ref, rtol=1e-6, atol=1e-7)
    csv = "a,b,c\n" + "\n".join(",".join(repr(float(v)) for v in row) for row in X) + "\n"
    (tmp_path / "x.csv").write_text(csv)
    r = _cli("run", str(path), str(tmp_path / "x.csv"))
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(r.stdout.splitlines(), delimiter=","), ref, rtol=1e-5, atol=1e-6)
    r = _cli("run", str(path), "-", stdin=csv)
    assert r.returncode == 0, r.stderr
    np.testing.assert_allclose(np.loadtxt(r.stdout.splitlines(), delimiter=","), ref, rtol=1e-5, atol=1e-6)


def test_run_reports_bad_row_and_bad_file(tmp_path):
    rng = np.random.default_rng(0)
    plan, tensors = model([recurrent(rng, "rnn", "r", 2, 4)], 2)
    path = tmp_path / "m.ernn"
    edgernn.artifact.write(path, plan, tensors)
    r = _cli("run", str(path), "-", stdin="1,2\n3,4,5\n")
    assert r.returncode == 1 and "line 2:" in r.stderr and "3 values, the model takes 2" in r.stderr
    (tmp_path / "bad.ernn").write_bytes(b"\x10\x00\x00\x00\x00\x00\x00\x00{not json}      ")
    r = _cli("run", str(tmp_path / "bad.ernn"), "-", stdin="")
    assert r.returncode == 1 and "header not JSON" in r.stderr
