"""The generic AOT module (``edgernn aot`` without a model): a numba.pycc module of the plan interpreter,
used without numba for any model that has no module of its own (per-model modules: test_aot_model.py).

The module is built once per test session into a temporary directory with ``edgernn aot -o DIR``
(15-30 s on the CI machine: under a minute, so these tests are not marked slow). Oracles: the numpy
reference (tests/reference.py) for every backend, and the JIT kernels for the AOT module (same
kernels, same flags: they must agree to rounding).
"""

from __future__ import annotations

import json
import os
import platform
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


# ------------------------------------------------------------------ target CPU (host / generic)


def _cpuinfo_flags() -> set[str]:
    """The feature flags /proc/cpuinfo lists for the first core (read here, not by edgernn)."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return set(value.split())
    return set()


def test_default_build_is_for_this_cpu(aot_dir):
    """`edgernn aot` with no --cpu records LLVM's name for this CPU, and the features it enabled."""
    llvm = pytest.importorskip("llvmlite.binding")
    (path,) = aot.module_files(aot_dir)
    t = aot.load_module(path).target
    assert t["target"] == "host"
    assert t["cpu"] == llvm.get_host_cpu_name()
    assert t["machine"] == platform.machine()
    if os.path.exists("/proc/cpuinfo"):
        assert set(t["flags"]) <= _cpuinfo_flags()
    try:
        feats = llvm.get_host_cpu_features()
    except RuntimeError:  # LLVM cannot read them here (emulated CPU): nothing to compare
        return
    for llvm_name, flag in (("avx2", "avx2"), ("avx512f", "avx512f"), ("fma", "fma"), ("neon", "asimd")):
        if llvm_name in feats and flag in _cpuinfo_flags():
            assert (flag in t["flags"]) == bool(feats[llvm_name]), llvm_name


@pytest.fixture(scope="module")
def generic_dir(tmp_path_factory):
    """`edgernn aot --cpu generic -o DIR` (a second build: about as long as the first)."""
    from edgernn.cli import main

    d = tmp_path_factory.mktemp("aot_generic")
    assert main(["aot", "--cpu", "generic", "-o", str(d)]) == 0
    return str(d)


def _foreign_cpu(real: dict) -> dict:
    """Another machine's CPU: another model, without AVX-512 / SVE."""
    return dict(
        real,
        model="AuthenticAMD family 25 model 1",
        name="AMD EPYC 7B13 (test)",
        flags=frozenset(real["flags"]) - {"avx512f", "sve"},
    )


def test_generic_build_runs_anywhere_and_matches_reference(artifacts, generic_dir, monkeypatch):
    from edgernn import aot_target

    monkeypatch.setenv("EDGERNN_AOT_DIR", generic_dir)
    (path,) = aot.module_files(generic_dir)
    real = aot_target.host_cpu()
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _foreign_cpu(real))  # portable: not refused
    k = aot.load_module(path)
    assert k.target["target"] == "generic" and k.target["cpu"] == "generic"
    edgernn.runtime._BACKENDS.pop("aot", None)
    try:
        X = cases.inputs(seed=5, t=9)
        for cid, apath in artifacts.items():
            m = edgernn.load(apath, backend="aot")
            assert m.info["backend"] == "aot"
            want = cases.reference_run(apath, X)
            assert_close(m.stream().run(X), want, what=f"{cid} generic aot")
            s = m.stream()
            assert_close(np.stack([s.step(x) for x in X]), want, what=f"{cid} generic aot steps")
    finally:
        edgernn.runtime._BACKENDS.pop("aot", None)


def test_host_module_refused_on_another_cpu(artifacts, aot_dir, monkeypatch):
    """A module built for this CPU, loaded on another one: refused naming both CPUs, runtime falls back."""
    from edgernn import aot_target

    (path,) = aot.module_files(aot_dir)
    built = aot.load_module(path).target  # accepted here (control)
    real = aot_target.host_cpu()
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _foreign_cpu(real))
    with pytest.raises(edgernn.EdgeRNNError) as e:
        aot.load_module(path)
    msg = str(e.value)
    assert built["cpu"] in msg and real["model"] in msg  # the CPU it was built for
    assert "AMD EPYC 7B13 (test)" in msg and "AuthenticAMD family 25 model 1" in msg  # this one
    assert "illegal instruction" in msg and "edgernn aot --cpu generic" in msg
    # same CPU model, but a feature the build used is missing here (a VM hiding it): refused too
    used = sorted(built["flags"])
    if used:
        monkeypatch.setattr(
            aot_target, "host_cpu", lambda: dict(real, flags=frozenset(real["flags"]) - {used[-1]})
        )
        with pytest.raises(edgernn.EdgeRNNError, match=f"lacks {used[-1]}"):
            aot.load_module(path)
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _foreign_cpu(real))
    monkeypatch.setenv("EDGERNN_AOT_DIR", aot_dir)
    monkeypatch.delenv("EDGERNN_BACKEND", raising=False)
    edgernn.runtime._BACKENDS.pop("aot", None)
    try:
        m = edgernn.load(artifacts["lstm"])  # the runtime falls back, as for a stale module
        assert m.info["backend"] in ("numba", "numpy")
        assert "aot" not in edgernn.available_backends()
    finally:
        edgernn.runtime._BACKENDS.pop("aot", None)


def test_target_record_of_a_foreign_build_is_refused_by_the_record_alone():
    """The check needs only the record and this machine's CPU (no numba, no module)."""
    from edgernn import aot_target

    here = aot_target.host_cpu()
    amd = "AuthenticAMD family 25 model 1"
    other = {"target": "host", "cpu": "znver3", "machine": here["machine"], "model": amd}
    other.update(name="AMD EPYC 7763", flags=["avx2"])
    assert aot_target.refusal(other, dict(here, model=amd, flags={"avx2"})) is None
    why = aot_target.refusal(other, dict(here, model="GenuineIntel family 6 model 85", name="Xeon"))
    assert "znver3" in why and "AMD EPYC 7763" in why and "Xeon" in why
    assert "lacks avx2" in aot_target.refusal(other, dict(here, model=other["model"], flags=set()))
    for target in ("generic", "named"):
        assert aot_target.refusal(dict(other, target=target), dict(here, model="x", flags=set())) is None


# ------------------------------------------------------------------ the GIL


def test_aot_seq_releases_the_gil(aot_dir, tmp_path):
    """While one thread is inside one long AOT ``seq`` call, another Python thread runs.

    No clock: a spy thread copies the stream buffer M (the recurrent state, updated in place at every
    step) in a pure-Python loop while the main thread is inside a single native call. A state that is
    neither the one before the call nor the one after can only be seen by a thread that ran during the
    call. With the GIL held for the whole call (the module before this fix) the spy sees only those two,
    in every call; with it released, it sees intermediate ones. Up to 5 calls of 8000 LSTM 8->256 steps
    (0.1-0.3 s each here) give the scheduler ample room to run the spy.
    """
    import threading

    from edgernn.bench import synthetic

    p = tmp_path / "lstm256.ernn"
    artifact.write(p, *synthetic("lstm", 8, 256, 1, seed=0))
    m = edgernn.load(p, backend="numpy")  # only its packed buffers are used
    k = aot.load_module(aot.module_files(aot_dir)[0])
    pk = m._packed
    T = 8000
    X = np.random.default_rng(0).standard_normal((T, 8)).astype(np.float32)

    def intermediate_states_seen() -> int:
        M = m._m0.copy()
        Y = np.empty((T, pk.out_size), np.float32)
        buf = np.empty(2 * T * pk.seq_width + pk.seq_extra + 1, np.float32)
        before, seen = M.tobytes(), set()
        started, done = threading.Event(), threading.Event()

        def spy():
            started.set()
            while not done.is_set() and len(seen) < 2:  # two distinct states: one is not `after`
                b = M.tobytes()
                if b != before:
                    seen.add(b)

        t = threading.Thread(target=spy)
        t.start()
        started.wait()
        assert k.seq(X, pk.wf, pk.wb, M, Y, buf) == 0  # one native call
        after = M.tobytes()
        done.set()
        t.join()
        return len(seen - {after})

    counts = []
    for _ in range(5):
        counts.append(intermediate_states_seen())
        if counts[-1]:
            break
    assert counts[-1] > 0, f"no other thread ran during any of {len(counts)} AOT seq calls: the GIL is held"
