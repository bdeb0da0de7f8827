"""Device-side checks that matter on 64-bit Arm (run natively here and under qemu by .ci/aarch64.sh).

* every cell type (float32, and int8 for the quantizable cells) against the numpy reference,
* load / step / run / streams / state agree with each other,
* artifacts written on x86-64 give the same outputs here (``EDGERNN_ARM_FIXTURES=DIR`` written by
  ``python tests/arm_cases.py write DIR`` on the host; skipped when not set),
* the AOT module built here (``EDGERNN_ARM_AOT=1``, cached in ``EDGERNN_ARM_AOT_DIR``) matches too.

Small models on purpose: under emulation every kernel compile is emulated.
"""

from __future__ import annotations

import json
import os
import platform

import arm_cases as cases
import numpy as np
import pytest
from reference import assert_close

import edgernn
from edgernn import artifact

_HERE = os.path.dirname(os.path.abspath(__file__))


#: x86-64 vs aarch64 on the same kernels: only summation order (vector width) and FMA use differ;
#: against the reference the project's float32 tolerance applies (reference.assert_close defaults)
XARCH_ATOL, XARCH_RTOL = 2e-6, 1e-5

CASES = cases.cases()
IDS = [cases.case_id(c, q) for c, q in CASES]


@pytest.fixture(scope="module")
def artifacts(tmp_path_factory):
    d = tmp_path_factory.mktemp("arm_cases")
    out = {}
    for cell, q in CASES:
        plan, tensors = cases.build(cell, q)
        p = d / (cases.case_id(cell, q) + ".ernn")
        artifact.write(p, plan, tensors)
        out[cases.case_id(cell, q)] = str(p)
    return out


def test_every_cell_type_has_a_case():
    from edgernn.artifact import QUANTIZABLE, RECURRENT_GATES

    covered = {cases.CELLS[c]["kind"] for c, _ in CASES}
    for kind in (*RECURRENT_GATES, "esn", "dense", "attention"):
        assert kind in covered, f"cell type {kind!r} has no aarch64 case"
    int8 = {cases.CELLS[c]["kind"] for c, q in CASES if q == "int8"}
    assert {"lstm", "gru", "rnn", "esn"} <= int8 and int8 <= set(QUANTIZABLE)


@pytest.mark.parametrize("cid", IDS)
def test_cell_matches_numpy_reference(artifacts, cid):
    m = edgernn.load(artifacts[cid])
    X = cases.inputs()
    want = cases.reference_run(artifacts[cid], X)
    assert_close(m.stream().run(X), want, what=f"{cid} run")
    assert_close(m.predict(X), want, what=f"{cid} predict")


@pytest.mark.parametrize("cid", ["lstm", "gru.int8", "esn_sparse", "attention"])
def test_step_run_streams_and_state_agree(artifacts, cid):
    m = edgernn.load(artifacts[cid])
    X = cases.inputs(seed=3, t=10)
    s = m.stream()
    ys = np.stack([s.step(x) for x in X[:6]])
    snap = s.state
    rest = s.run(X[6:])
    full = m.stream().run(X)
    np.testing.assert_allclose(np.concatenate([ys, rest]), full, rtol=1e-5, atol=1e-6)
    s.state = snap  # restoring the snapshot replays the same outputs
    np.testing.assert_allclose(s.run(X[6:]), rest, rtol=0, atol=0)
    s.reset()
    np.testing.assert_allclose(s.step(X[0]), full[0], rtol=1e-5, atol=1e-6)
    # three independent streams in one call, each fed its own sequence
    Xs = np.stack([X, X[::-1].copy(), cases.inputs(seed=4, t=10)])
    b = m.streams(3)
    got = np.stack([b.step(np.ascontiguousarray(Xs[:, t])) for t in range(X.shape[0])], axis=1)
    for i in range(3):
        np.testing.assert_allclose(got[i], m.stream().run(Xs[i]), rtol=1e-5, atol=1e-6)


def _fixture_dir():
    d = os.environ.get("EDGERNN_ARM_FIXTURES")
    if not d:
        pytest.skip("EDGERNN_ARM_FIXTURES not set (the aarch64 CI job sets it)")
    return d


def _fixture_ids():
    d = os.environ.get("EDGERNN_ARM_FIXTURES")
    if not d or not os.path.isfile(os.path.join(d, "cases.json")):
        return ["none"]
    with open(os.path.join(d, "cases.json")) as f:
        return json.load(f)


@pytest.mark.parametrize("cid", _fixture_ids())
def test_artifact_written_on_x86_64_gives_same_outputs(cid):
    d = _fixture_dir()
    fx = np.load(os.path.join(d, cid + ".npz"))
    m = edgernn.load(os.path.join(d, cid + ".ernn"))
    y = m.stream().run(fx["X"])
    assert_close(y, fx["y_ref"], what=f"{cid} vs reference")  # the oracle, computed on the host
    assert_close(y, fx["y_host"], atol=XARCH_ATOL, rtol=XARCH_RTOL, what=f"{cid} vs x86-64")
    print(f"{cid}: {platform.machine()} [{m.info['backend']}] vs {fx['machine']} [{fx['backend']}] ok")


@pytest.fixture(scope="module")
def aot_here(artifacts):
    """Per-model AOT modules of ``cases.AOT_CASES``, built here (cached in ``EDGERNN_ARM_AOT_DIR``)."""
    if os.environ.get("EDGERNN_ARM_AOT", "0") in ("", "0"):
        pytest.skip("EDGERNN_ARM_AOT not set (tests/test_aot_model.py covers AOT on the host)")
    base = os.environ.get("EDGERNN_ARM_AOT_DIR") or os.path.join(_HERE, "..", "build", "aot")
    return {cid: cases.aot_module(artifacts[cid], base) for cid in cases.AOT_CASES}


@pytest.mark.parametrize("cid", cases.AOT_CASES)
def test_aot_module_built_here_matches_reference(artifacts, aot_here, cid, monkeypatch):
    monkeypatch.setenv("EDGERNN_AOT_DIR", os.path.dirname(aot_here[cid]))
    cases.check_aot(artifacts[cid], cases.inputs())
