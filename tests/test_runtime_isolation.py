"""`import edgernn` and the device path must not import torch, onnx or onnxruntime."""

from __future__ import annotations

import subprocess
import sys

import numpy as np
from builders import dense, model, recurrent

import edgernn

HEAVY = ("torch", "onnx", "onnxruntime", "onnxscript")


def _run(code: str) -> str:
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stderr
    return r.stdout.strip()


def test_import_edgernn_leaves_heavy_modules_unimported():
    out = _run(f"import sys, edgernn; print(sorted(m for m in {HEAVY!r} if m in sys.modules))")
    assert out == "[]", f"imported: {out}"


def test_load_and_step_leave_heavy_modules_unimported(tmp_path):
    rng = np.random.default_rng(0)
    plan, tensors = model([recurrent(rng, "lstm", "l", 4, 8), dense(rng, "d", 8, 2)], 4)
    path = tmp_path / "m.ernn"
    edgernn.artifact.write(path, plan, tensors)
    code = (
        "import sys, numpy as np, edgernn\n"
        f"m = edgernn.load({str(path)!r}); s = m.stream(); s.step(np.zeros(4, np.float32))\n"
        "m.predict(np.zeros((3, 4)))\n"
        f"print(sorted(x for x in {HEAVY!r} if x in sys.modules))"
    )
    assert _run(code) == "[]"
    cli = _run(
        "import sys; from edgernn import cli; cli.build_parser(); print(sorted(m for m in "
        f"{HEAVY!r} if m in sys.modules))"
    )
    assert cli == "[]"


def test_numba_disabled_runs_on_numpy_with_same_results(tmp_path):
    rng = np.random.default_rng(1)
    plan, tensors = model([recurrent(rng, "gru", "g", 4, 8, linear_before_reset=1), dense(rng, "d", 8, 2)], 4)
    path = tmp_path / "m.ernn"
    edgernn.artifact.write(path, plan, tensors)
    X = rng.normal(size=(50, 4)).astype(np.float32)
    np.save(tmp_path / "x.npy", X)
    code = (
        "import sys, numpy as np, edgernn\n"
        f"m = edgernn.load({str(path)!r}); X = np.load({str(tmp_path / 'x.npy')!r})\n"
        "s = m.stream(); Y = np.stack([s.step(x) for x in X])\n"
        f"np.save({str(tmp_path / 'y.npy')!r}, Y); print(m.info['backend'])"
    )
    import os

    env = {**os.environ, "NUMBA_DISABLE_JIT": "1"}
    r = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stderr
    assert r.stdout.strip() == "numpy"
    Y_jit = edgernn.load(path, backend="numba").stream().run(X)
    from reference import assert_close

    assert_close(np.load(tmp_path / "y.npy"), Y_jit, what="numpy backend vs numba")
