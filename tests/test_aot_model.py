"""AOT modules per model (``edgernn aot MODEL.ernn``): a model's generated kernels compiled natively.

Four models are built once per module with one ``edgernn aot A B C D`` (a few seconds each here): an
LSTM 8->256 + Dense, a GRU + attention + Dense (many-to-one), a bidirectional LSTM + Dense (``predict``
only) and a sparse ESN + Dense (its reservoir packed SELL-8). Oracles: the float64 numpy reference
(tests/reference.py) and the numba backend running the same generated source (same flags: they agree to
rounding). The device side is run in a subprocess where
numba and llvmlite cannot be imported.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import threading

import arm_cases as cases
import nonumba
import numpy as np
import pytest
from builders import attention, dense, esn, model, recurrent
from reference import assert_close, reference_predict

import edgernn
from edgernn import aot, aot_model, aot_target, artifact


def _models() -> dict[str, tuple[dict, dict]]:
    rng = np.random.default_rng(12)
    return {
        "lstm": model(
            [recurrent(rng, "lstm", "l", 8, 256, P=True, initial_h=True), dense(rng, "d", 256, 3)], 8
        ),
        "gru_att": model(
            [recurrent(rng, "gru", "g", 4, 16), attention(rng, "a", 16, 8), dense(rng, "d", 16, 3, "tanh")],
            4,
            sequence="many_to_one",
        ),
        "bilstm": model([recurrent(rng, "lstm", "b", 4, 8, "bidirectional"), dense(rng, "d", 16, 2)], 4),
        # a sparse reservoir packed SELL-8 (kernels/sparse.py: its gather intrinsic compiled ahead of time)
        "esn_sell": model([esn(rng, "e", 4, 45, sparse=True, density=0.1), dense(rng, "d", 45, 2)], 4),
    }


@pytest.fixture(scope="module")
def built(tmp_path_factory):
    """{name: .ernn path}, each with its module next to it (`edgernn aot A B C`, default output)."""
    from edgernn.cli import main

    d = tmp_path_factory.mktemp("aot_model")
    paths = {}
    for name, (plan, tensors) in _models().items():
        paths[name] = str(d / f"{name}.ernn")
        artifact.write(paths[name], plan, tensors)
    assert main(["aot", *paths.values()]) == 0
    return paths


@pytest.fixture(autouse=True)
def _no_env(monkeypatch):
    monkeypatch.delenv("EDGERNN_AOT_DIR", raising=False)
    monkeypatch.delenv("EDGERNN_BACKEND", raising=False)


def _key(path: str, nonfinite: str = "raise") -> str:
    return aot_model.generated(edgernn.load(path, backend="numpy", nonfinite=nonfinite)._packed.wf)[1]


def _module(path: str) -> str:
    (p,) = aot_model.candidates(_key(path), path)
    return p


def _inputs(path: str, seed: int, t: int) -> np.ndarray:
    n = edgernn.load(path, backend="numpy").input_size
    return np.random.default_rng(seed).standard_normal((t, n)).astype(np.float32)


_NO_NUMBA = nonumba.script(
    """
    out = {}
    for name, (path, xpath) in json.loads(sys.argv[1]).items():
        m = edgernn.load(path)
        X = np.load(xpath)
        o = out[name] = {"backend": m.info["backend"], "own": m.kernel_source is not None,
                         "predict": m.predict(X).tolist()}
        if m.info["streamable"]:
            s = m.stream()
            o["steps"] = [s.step(x).tolist() for x in X]
            o["run"] = m.stream().run(X).tolist()
            b = m.streams(2)
            o["batch"] = [b.step(np.stack([x, -x])).tolist() for x in X]
    """
)


def test_modules_run_each_model_without_numba(built, tmp_path):
    """On a device without numba the runtime picks each model's own module (found next to the model
    file) and every entry point matches the reference and the numba backend."""
    args = {}
    for name, path in built.items():
        X = _inputs(path, seed=3, t=9)
        np.save(tmp_path / f"{name}.npy", X)
        args[name] = (path, str(tmp_path / f"{name}.npy"))
    r = subprocess.run(
        [sys.executable, "-c", _NO_NUMBA, json.dumps(args)], capture_output=True, text=True, timeout=600
    )
    assert r.returncode == 0, r.stderr
    out = json.loads(r.stdout)
    assert out.pop("_modules") == []  # neither numba nor llvmlite was imported, not even to generate
    for name, path in built.items():
        o = out[name]
        assert o["backend"] == "aot" and o["own"], name
        X = np.load(args[name][1])
        plan, tensors = artifact.read(path)
        want = np.asarray(reference_predict(plan, tensors, X))
        jit = edgernn.load(path, backend="numba")
        many = plan["output"]["sequence"] == "many_to_many"
        assert_close(o["predict"], want if many else want[-1], what=f"{name} predict")
        np.testing.assert_allclose(o["predict"], jit.predict(X), rtol=1e-5, atol=1e-6)
        if name == "bilstm":
            assert "steps" not in o  # not streamable: predict only
            continue
        for k in ("steps", "run"):
            assert_close(o[k], want, what=f"{name} {k}")
        batch = np.asarray(o["batch"])  # (T, 2, O): stream 0 fed X, stream 1 fed -X
        assert_close(batch[:, 0], want, what=f"{name} streams[0]")
        assert_close(batch[:, 1], np.asarray(reference_predict(plan, tensors, -X)), what=f"{name} streams[1]")
        s = jit.stream()
        np.testing.assert_allclose(o["steps"], [s.step(x) for x in X], rtol=1e-5, atol=1e-6)


def test_module_of_one_model_is_not_used_for_another(built, tmp_path, monkeypatch):
    """Model B next to A's module only: auto falls back, forced 'aot' names the command to run; A's file
    renamed to B's key is refused; so is a module for B's nonfinite='raise' kernels when B is loaded with
    'propagate' (another generated source, another key)."""
    d = tmp_path / "only_lstm"
    d.mkdir(mode=0o700)
    shutil.copy(_module(built["lstm"]), d)
    other = d / "gru_att.ernn"
    shutil.copy(built["gru_att"], other)
    assert edgernn.load(d / "gru_att.ernn").info["backend"] in ("numba", "numpy")
    with pytest.raises(edgernn.EdgeRNNError, match=f"edgernn aot {other}") as e:
        edgernn.load(other, backend="aot")
    assert _key(str(other)) in str(e.value)
    assert edgernn.load(shutil.copy(built["lstm"], d)).info["backend"] == "aot"  # control: A uses it
    # A's module under B's file name: refused (it holds A's kernels, and says so)
    k_b = _key(str(other))
    name_a = os.path.basename(_module(built["lstm"]))
    suffix = name_a[len(aot_model.module_name(_key(built["lstm"]))) :]
    os.rename(d / name_a, d / (aot_model.module_name(k_b) + suffix))
    with pytest.raises(edgernn.EdgeRNNError, match="refus|cannot be loaded|holds source key"):
        edgernn.load(other, backend="aot")
    with pytest.raises(edgernn.EdgeRNNError, match=f"holds source key {_key(built['lstm'])}"):
        aot.load_module(_module(built["lstm"]), key=k_b)
    with pytest.raises(edgernn.EdgeRNNError, match="edgernn aot"):
        edgernn.load(built["gru_att"], backend="aot", nonfinite="propagate")
    assert _key(built["gru_att"], "propagate") != _key(built["gru_att"])


def test_stale_or_foreign_module_is_refused(built, monkeypatch):
    """Other kernel sources, or another machine's CPU: refused naming why (forced), or a warning and a
    fallback (auto); a module in a directory others can write is refused too."""
    path = built["gru_att"]
    assert edgernn.load(path).info["backend"] == "aot"  # control
    real = aot.kernels_fingerprint()
    monkeypatch.setattr(aot, "kernels_fingerprint", lambda: real ^ 1)
    with pytest.raises(edgernn.EdgeRNNError, match="other kernel sources.*edgernn aot"):
        edgernn.load(path, backend="aot")
    with pytest.warns(UserWarning, match="other kernel sources"):
        assert edgernn.load(path).info["backend"] in ("numba", "numpy")
    monkeypatch.setattr(aot, "kernels_fingerprint", lambda: real)
    here = aot_target.host_cpu()
    foreign = dict(here, model="AuthenticAMD family 25 model 1", name="AMD EPYC (test)", flags=frozenset())
    monkeypatch.setattr(aot_target, "host_cpu", lambda: foreign)
    with pytest.raises(edgernn.EdgeRNNError, match="illegal instruction"):
        edgernn.load(path, backend="aot")
    monkeypatch.setattr(aot_target, "host_cpu", lambda: here)
    mod = _module(path)
    os.chmod(os.path.dirname(mod), 0o777)
    try:
        with pytest.raises(edgernn.EdgeRNNError, match="writable by group or others"):
            edgernn.load(path, backend="aot")
    finally:
        os.chmod(os.path.dirname(mod), 0o700)


def test_lookup_order_and_cli_output(built, tmp_path, monkeypatch, capsys):
    """$EDGERNN_AOT_DIR comes before the model's directory; `-o DIR` writes there and says how the
    runtime finds it; a missing model file is a one-line error."""
    from edgernn.cli import main

    path = built["gru_att"]
    env = tmp_path / "env"
    env.mkdir(mode=0o700)
    monkeypatch.setenv("EDGERNN_AOT_DIR", str(env))
    assert aot_model.search_dirs(path)[:2] == [str(env), os.path.dirname(path)]
    shutil.copy(_module(path), env)
    assert aot_model.candidates(_key(path), path)[0].startswith(str(env))
    assert edgernn.load(path, backend="aot").info["backend"] == "aot"
    assert main(["aot", str(tmp_path / "missing.ernn")]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "missing.ernn" in err
    assert main(["aot", path, "-o", "/proc/edgernn-unwritable"]) == 1
    err = capsys.readouterr().err.strip()
    assert err.count("\n") == 0 and "/proc/edgernn-unwritable" in err


def test_wrappers_check_arguments_and_release_the_gil(built):
    """The per-model entry points refuse what the native code would misread (TypeError, so the runtime
    converts and retries), and a long ``seq`` call lets another Python thread run (no clock: a spy thread
    sees a recurrent state that is neither the one before nor the one after the native call)."""
    path = built["lstm"]
    m = edgernn.load(path, backend="aot")
    k = aot.load_module(_module(path), key=_key(path))
    p, x = m._packed, _inputs(path, 0, 1)[0]
    M = m._m0.copy()
    for bad in (x.astype(np.float64), np.repeat(x, 2)[::2], list(x), x[None, :]):
        with pytest.raises(TypeError):
            k.step(bad, p.wf, p.wb, M)
    with pytest.raises(TypeError):
        k.step_batch(np.zeros((3, x.size), np.float32), p.wf, p.wb, np.zeros((2, M.size), np.float32))
    np.testing.assert_array_equal(M, m._m0)
    ref = edgernn.load(path, backend="numba").stream()
    np.testing.assert_allclose(m.stream().step(list(x)), ref.step(x), rtol=1e-5, atol=1e-6)

    T = 8000
    X = _inputs(path, 1, T)
    seen_any = False
    for _ in range(5):
        M = m._m0.copy()
        Y = np.empty((T, p.out_size), np.float32)
        buf = np.empty(2 * T * p.seq_width + p.seq_extra + 1, np.float32)
        before, seen, done, started = M.tobytes(), set(), threading.Event(), threading.Event()

        def spy(M=M, before=before, seen=seen, done=done, started=started):
            started.set()
            while not done.is_set() and len(seen) < 2:
                b = M.tobytes()
                if b != before:
                    seen.add(b)

        t = threading.Thread(target=spy)
        t.start()
        started.wait()
        assert k.seq(X, p.wf, p.wb, M, Y, buf) == 0
        after = M.tobytes()
        done.set()
        t.join()
        if seen - {after}:
            seen_any = True
            break
    assert seen_any, "no other thread ran during any AOT seq call: the GIL is held"


def test_arm_job_aot_path_runs_here(tmp_path):
    """What the aarch64 job runs inside the emulated userland (tests/test_arm_device.py): build the
    per-model module of its first AOT case into a cache directory, reuse it on the second call, check
    it against the reference and numba."""
    cid = cases.AOT_CASES[0]
    cell, q = cid.split(".")[0], (cid.split(".") + ["none"])[1]
    p = tmp_path / f"{cid}.ernn"
    artifact.write(p, *cases.build(cell, q))
    base = tmp_path / "cache"
    first = cases.aot_module(str(p), str(base))
    mtime = os.stat(first).st_mtime_ns
    assert cases.aot_module(str(p), str(base)) == first and os.stat(first).st_mtime_ns == mtime  # reused
    os.environ["EDGERNN_AOT_DIR"] = os.path.dirname(first)
    try:
        cases.check_aot(str(p), cases.inputs())
    finally:
        del os.environ["EDGERNN_AOT_DIR"]
