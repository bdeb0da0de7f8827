"""Every cell type through its own AOT module (``edgernn aot MODEL.ernn...``): a numba.pycc module of the
model's generated kernels, used without numba. Lookup, keys and the GIL: test_aot_model.py.

One ``edgernn aot`` call builds the modules of every case (a few seconds each here), a second one two of
them for the generic CPU. Oracles: the numpy reference (tests/reference.py) for every backend, and the
JIT kernels for the AOT modules (same generated source, same flags: they must agree to rounding).
"""

from __future__ import annotations

import json
import os
import platform
import shutil
import subprocess
import sys

import arm_cases as cases
import nonumba
import numpy as np
import pytest
from reference import assert_close

import edgernn
from edgernn import aot, aot_model, artifact

CASES = cases.cases()
IDS = [cases.case_id(c, q) for c, q in CASES]


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


def _key(path: str) -> str:
    """The source key of the kernels generated for the model at ``path``."""
    return aot_model.generated(edgernn.load(path, backend="numpy")._packed.wf)[1]


def _module(path: str, directory: str) -> str:
    """The module file built for the model at ``path`` in ``directory`` (named after its source key)."""
    name = aot_model.module_name(_key(path))
    (p,) = [os.path.join(directory, f) for f in os.listdir(directory) if f.split(".")[0] == name]
    return p


@pytest.fixture(scope="module")
def aot_dir(artifacts, tmp_path_factory):
    """`edgernn aot CASE.ernn... -o DIR`: one module per case, once per test module."""
    from edgernn.cli import main

    d = tmp_path_factory.mktemp("aot")
    assert main(["aot", *artifacts.values(), "-o", str(d)]) == 0
    for path in artifacts.values():
        assert aot.describe(_module(path, str(d)))["matches_kernels"]
    return str(d)


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
    monkeypatch.setenv("EDGERNN_AOT_DIR", str(tmp_path))  # empty (and no module beside the artifacts)
    with pytest.raises(edgernn.EdgeRNNError, match="edgernn aot"):
        edgernn.load(artifacts["lstm"], backend="aot")
    assert edgernn.load(artifacts["lstm"]).info["backend"] in ("numba", "numpy")  # auto falls back
    path = _module(artifacts["lstm"], aot_dir)
    real = aot.kernels_fingerprint()
    monkeypatch.setattr(aot, "kernels_fingerprint", lambda: real ^ 1)  # the kernels changed since
    with pytest.raises(edgernn.EdgeRNNError, match="other kernel sources"):
        aot.load_module(path, _key(artifacts["lstm"]))


def test_wrappers_refuse_what_the_module_would_misread(aot_dir, artifacts, use_aot):
    k = aot.load_module(_module(artifacts["gru"], aot_dir), _key(artifacts["gru"]))
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


_NO_NUMBA = nonumba.script(
    """
    out = {}
    for cid, path in json.loads(sys.argv[1]).items():
        m = edgernn.load(path)
        X = np.load(sys.argv[2])
        out[cid] = {"backend": m.info["backend"], "y": m.stream().run(X).tolist(),
                    "steps": [m.stream().step(X[0]).tolist()]}
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


def test_aot_module_refused_from_group_writable_dir(artifacts, aot_dir, tmp_path):
    """Native code is refused from a directory another user could write (same rule as the cache)."""
    src = _module(artifacts["lstm"], aot_dir)
    key = _key(artifacts["lstm"])
    d = tmp_path / "aot"
    d.mkdir(mode=0o700)
    dst = d / os.path.basename(src)
    shutil.copy(src, dst)
    os.chmod(dst, 0o755)
    aot.load_module(str(dst), key)  # private directory: accepted (control)
    os.chmod(d, 0o777)
    with pytest.raises(edgernn.EdgeRNNError, match="writable by group or others"):
        aot._LOADED.clear()
        aot.load_module(str(dst), key)


# ------------------------------------------------------------------ target CPU (host / generic)


def _cpuinfo_flags() -> set[str]:
    """The feature flags /proc/cpuinfo lists for the first core (read here, not by edgernn)."""
    with open("/proc/cpuinfo") as f:
        for line in f:
            key, _, value = line.partition(":")
            if key.strip().lower() in ("flags", "features"):
                return set(value.split())
    return set()


def test_default_build_is_for_this_cpu(artifacts, aot_dir):
    """`edgernn aot` with no --cpu records LLVM's name for this CPU, and the features it enabled."""
    llvm = pytest.importorskip("llvmlite.binding")
    t = aot.load_module(_module(artifacts["gru"], aot_dir), _key(artifacts["gru"])).target
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


#: the cases built a second time, for the generic CPU
GENERIC_CASES = ("lstm", "gru.int8", "esn_sparse")


@pytest.fixture(scope="module")
def generic_dir(artifacts, tmp_path_factory):
    """`edgernn aot --cpu generic -o DIR` of three cases."""
    from edgernn.cli import main

    d = tmp_path_factory.mktemp("aot_generic")
    assert main(["aot", "--cpu", "generic", "-o", str(d), *(artifacts[c] for c in GENERIC_CASES)]) == 0
    return str(d)


def _foreign_cpu(real: dict) -> dict:
    """Another machine's CPU: another model (whatever this one is), without AVX-512 / SVE."""
    model, name = FOREIGN if real["model"] != FOREIGN[0] else FOREIGN_2
    return dict(real, model=model, name=name, flags=frozenset(real["flags"]) - {"avx512f", "sve"})


#: the model identity and name of the other CPU (the second one when this machine is the first)
FOREIGN = ("AuthenticAMD family 25 model 1", "AMD EPYC 7B13 (test)")
FOREIGN_2 = ("GenuineIntel family 6 model 143", "Intel Xeon Platinum 8480 (test)")


def test_generic_build_runs_anywhere_and_matches_reference(artifacts, generic_dir, monkeypatch):
    from edgernn import aot_target

    monkeypatch.setenv("EDGERNN_AOT_DIR", generic_dir)
    real = aot_target.host_cpu()
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _foreign_cpu(real))  # portable: not refused
    for cid in GENERIC_CASES:
        k = aot.load_module(_module(artifacts[cid], generic_dir), _key(artifacts[cid]))
        assert k.target["target"] == "generic" and k.target["cpu"] == "generic"
    edgernn.runtime._BACKENDS.pop("aot", None)
    try:
        X = cases.inputs(seed=5, t=9)
        for cid in GENERIC_CASES:
            apath = artifacts[cid]
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

    path, key = _module(artifacts["lstm"], aot_dir), _key(artifacts["lstm"])
    built = aot.load_module(path, key).target  # accepted here (control)
    real = aot_target.host_cpu()
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _foreign_cpu(real))
    with pytest.raises(edgernn.EdgeRNNError) as e:
        aot.load_module(path, key)
    msg = str(e.value)
    assert built["cpu"] in msg and real["model"] in msg  # the CPU it was built for
    other = _foreign_cpu(real)
    assert other["name"] in msg and other["model"] in msg  # this one
    assert "illegal instruction" in msg and "edgernn aot --cpu generic" in msg
    # same CPU model, but a feature the build used is missing here (a VM hiding it): refused too
    used = sorted(built["flags"])
    if used:
        monkeypatch.setattr(
            aot_target, "host_cpu", lambda: dict(real, flags=frozenset(real["flags"]) - {used[-1]})
        )
        with pytest.raises(edgernn.EdgeRNNError, match=f"lacks {used[-1]}"):
            aot.load_module(path, key)
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _foreign_cpu(real))
    monkeypatch.setenv("EDGERNN_AOT_DIR", aot_dir)
    monkeypatch.delenv("EDGERNN_BACKEND", raising=False)
    edgernn.runtime._BACKENDS.pop("aot", None)
    try:
        m = edgernn.load(artifacts["lstm"])  # the runtime falls back, as for a stale module
        assert m.info["backend"] in ("numba", "numpy")
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
