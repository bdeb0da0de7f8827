"""The AOT device mode (``edgernn aot``): a numba.pycc module of the engine, used without numba.

The module is built once per test session into a temporary directory with ``edgernn aot -o DIR``
(15-30 s on the CI machine: under a minute, so these tests are not marked slow). Oracles: the numpy
reference (tests/reference.py) for every backend, and the JIT kernels for the AOT module (same
kernels, same flags: they must agree to rounding).
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import textwrap

import arm_cases as cases
import numpy as np
import pytest
from reference import assert_close

import edgernn
from edgernn import aot, artifact

CASES = cases.cases()
IDS = [cases.case_id(c, q) for c, q in CASES]


@pytest.fixture(scope="session")
def aot_dir(tmp_path_factory):
    """`edgernn aot -o DIR`, once per session (about 15-30 s here)."""
    from edgernn.cli import main

    d = tmp_path_factory.mktemp("aot")
    assert main(["aot", "-o", str(d)]) == 0
    (path,) = aot.module_files(str(d))
    assert aot.describe(path)["matches_kernels"]
    return str(d)


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("aot_cases")
    out = {}
    for cell, q in CASES:
        plan, tensors = cases.build(
            cell, q, sequence="many_to_one" if cell == "attention" else "many_to_many"
        )
        p = d / (cases.case_id(cell, q) + ".ernn")
        artifact.write(p, plan, tensors)
        out[cases.case_id(cell, q)] = str(p)
    return out


@pytest.fixture
def use_aot(aot_dir, monkeypatch):
    monkeypatch.setenv("EDGERNN_AOT_DIR", aot_dir)
    yield aot_dir
    edgernn.runtime._BACKENDS.pop("aot", None)  # later tests choose their backend afresh


def _outputs(m, X):
    """Outputs of every entry point: per-step, chunked run, 2 streams in one call, predict."""
    s = m.stream()
    steps = np.stack([s.step(x) for x in X])
    run = m.stream().run(X)
    b = m.streams(2)
    X2 = np.stack([X, X[::-1]], axis=1)  # (T, 2, I)
    batch = np.stack([b.step(np.ascontiguousarray(x2)) for x2 in X2])  # (T, 2, O)
    return {"steps": steps, "run": run, "batch0": batch[:, 0], "batch1": batch[:, 1], "predict": m.predict(X)}


@pytest.mark.parametrize("cid", IDS)
def test_aot_jit_numpy_give_the_same_outputs(artifacts, use_aot, cid):
    X = cases.inputs(seed=7, t=9)
    want = cases.reference_run(artifacts[cid], X)
    want_rev = cases.reference_run(artifacts[cid], X[::-1].copy())
    outs = {}
    for backend in ("aot", "numba", "numpy"):
        m = edgernn.load(artifacts[cid], backend=backend)
        assert m.info["backend"] == backend
        o = outs[backend] = _outputs(m, X)
        for k in ("steps", "run", "batch0"):
            assert_close(o[k], want)
        assert_close(o["batch1"], want_rev)
        assert_close(o["predict"], want if m.plan["output"]["sequence"] == "many_to_many" else want[-1])
    for k in outs["aot"]:  # same kernels, same flags: AOT and JIT agree to rounding
        np.testing.assert_allclose(outs["aot"][k], outs["numba"][k], rtol=1e-5, atol=1e-6)


def test_runtime_prefers_the_aot_module(artifacts, use_aot, monkeypatch):
    monkeypatch.delenv("EDGERNN_BACKEND", raising=False)
    assert edgernn.load(artifacts["lstm"]).info["backend"] == "aot"
    assert "aot" in edgernn.available_backends()


def test_missing_or_stale_module_is_refused(artifacts, aot_dir, tmp_path, monkeypatch):
    monkeypatch.delenv("EDGERNN_BACKEND", raising=False)
    monkeypatch.setenv("EDGERNN_AOT_DIR", str(tmp_path))  # empty
    if aot.find() is None:  # (a module built into the package directory would be found instead)
        with pytest.raises(edgernn.MissingDependencyError, match="edgernn aot"):
            aot.load_module()
    monkeypatch.setenv("EDGERNN_AOT_DIR", aot_dir)
    real = aot.kernels_fingerprint()
    monkeypatch.setattr(aot, "kernels_fingerprint", lambda: real ^ 1)  # the kernels changed since
    with pytest.raises(edgernn.EdgeRNNError, match="other kernel sources"):
        aot.load_module()


def test_wrappers_refuse_what_the_module_would_misread(aot_dir, artifacts, use_aot):
    k = aot.load_module(aot.module_files(aot_dir)[0])
    m = edgernn.load(artifacts["gru"], backend="aot")
    p = m._packed
    M = m._m0.copy()
    x = cases.inputs()[0]
    for bad in (x.astype(np.float64), np.repeat(x, 2)[::2], list(x), x[None, :]):
        with pytest.raises(TypeError):
            k.step(bad, p.wf, p.wb, M)
    with pytest.raises(TypeError):  # more rows than streams would write past the stream buffers
        k.step_batch(np.zeros((3, x.size), np.float32), p.wf, p.wb, np.zeros((2, M.size), np.float32))
    np.testing.assert_array_equal(M, m._m0)  # nothing ran
    # through the public API the same inputs are converted (or refused) as with the JIT backend
    s, ref = m.stream(), edgernn.load(artifacts["gru"], backend="numba").stream()
    for good in (x.astype(np.float64), np.repeat(x, 2)[::2], list(x)):
        np.testing.assert_allclose(s.step(good), ref.step(good), rtol=1e-5, atol=1e-6)
    with pytest.raises(edgernn.InputError):
        s.step(x[None, :])
    with pytest.raises(edgernn.InputError):
        m.streams(2).step(np.zeros((3, x.size), np.float32))


_NO_NUMBA = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("numba", "llvmlite"):
                raise ImportError(f"{name} is blocked: the device has no numba")
            return None

    sys.meta_path.insert(0, Block())
    import edgernn

    out = {}
    for cid, path in json.loads(sys.argv[1]).items():
        m = edgernn.load(path)
        X = np.load(sys.argv[2])
        out[cid] = {"backend": m.info["backend"], "y": m.stream().run(X).tolist(),
                    "steps": [m.stream().step(X[0]).tolist()]}
    out["_modules"] = sorted(n for n in sys.modules if n.split(".")[0] in ("numba", "llvmlite"))
    print(json.dumps(out))
    """
)


def test_aot_module_runs_every_cell_without_numba(artifacts, aot_dir, tmp_path):
    X = cases.inputs(seed=11, t=8)
    xpath = tmp_path / "X.npy"
    np.save(xpath, X)
    env = {k: v for k, v in os.environ.items() if k != "EDGERNN_BACKEND"}
    env["EDGERNN_AOT_DIR"] = aot_dir
    r = subprocess.run(
        [sys.executable, "-c", _NO_NUMBA, json.dumps(artifacts), str(xpath)],
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out.pop("_modules") == []  # neither numba nor llvmlite was imported
    for cid, path in artifacts.items():
        assert out[cid]["backend"] == "aot"
        jit = edgernn.load(path, backend="numba").stream().run(X)
        np.testing.assert_allclose(out[cid]["y"], jit, rtol=1e-5, atol=1e-6)
        assert_close(out[cid]["y"], cases.reference_run(path, X))


def test_aot_module_refused_from_group_writable_dir(aot_dir, tmp_path):
    """Native code is refused from a directory another user could write (same rule as the cache)."""
    (src,) = aot.module_files(aot_dir)
    d = tmp_path / "aot"
    d.mkdir(mode=0o700)
    dst = d / os.path.basename(src)
    shutil.copy(src, dst)
    os.chmod(dst, 0o755)
    aot.load_module(str(dst))  # private directory: accepted (control)
    os.chmod(d, 0o777)
    with pytest.raises(edgernn.EdgeRNNError, match="writable by group or others"):
        aot._LOADED.clear()
        aot.load_module(str(dst))
