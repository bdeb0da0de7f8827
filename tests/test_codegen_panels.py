"""Panel GEMV (kernels/simd.py, kernels/ops/_pemit.py): the panel copy's layout, and the step reading it
against the independent numpy reference (tests/reference.py) and against the row loops."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

from edgernn.kernels import simd  # noqa: E402
from reference import reference_predict  # noqa: E402

import edgernn  # noqa: E402
from edgernn.bench import synthetic  # noqa: E402


def test_panelize_layout():
    rng = np.random.default_rng(0)
    A = rng.standard_normal((8, 48)).astype(np.float32)
    P = simd.panelize(A)
    for r in range(8):
        for k in range(48):  # block r // 4, chunk k // 16, row r % 4 in the block, lane k % 16
            assert P[(r // 4) * 4 * 48 + (k // 16) * 64 + (r % 4) * 16 + k % 16] == A[r, k]


@pytest.mark.parametrize(
    "cell,hidden",
    [("lstm", 128), ("gru", 64), ("rnn", 96), ("esn", 100), ("esn", 72)],  # 100, 72: a remainder
)
def test_panel_step_matches_reference(cell, hidden, monkeypatch):
    if not simd.have_simd():
        pytest.skip("panels are used on x86-64 with AVX2+FMA only")
    plan, tensors = synthetic(cell, 8, hidden, 1, seed=11)
    m = edgernn.Model(plan, tensors)
    assert "dot4_panel(" in m.kernel_source
    monkeypatch.setenv("EDGERNN_PANELS", "0")
    rows = edgernn.Model(plan, tensors)
    assert "dot4_panel(" not in rows.kernel_source
    X = np.random.default_rng(2).standard_normal((120, 8)).astype(np.float32)
    s, s0 = m.stream(), rows.stream()
    got = np.stack([s.step(x) for x in X])
    np.testing.assert_allclose(got, np.stack([s0.step(x) for x in X]), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(got, reference_predict(plan, tensors, X), atol=1e-5, rtol=1e-4)
    np.testing.assert_allclose(m.stream().run(X), got, atol=1e-6, rtol=1e-6)
