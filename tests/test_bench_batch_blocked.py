"""The blocked many-stream kernel (kernels/batch_blocked.py) against n separate single-stream steps.

The kernel runs on a ``Streams`` object's own buffers; every supported layer kind, odd sizes (rows not a
multiple of 4, streams not a multiple of 16) and int8 weights must give what n separate ``Stream.step``
calls give, up to float32 summation order. The models it does not cover (clip, peepholes, attention...)
it refuses untouched, and ``Streams.step`` runs them through the generated per-model kernel: the same
property holds for them there.
"""

from __future__ import annotations

import numpy as np
import pytest
from builders import attention, dense, esn, model, quantize_int8, recurrent
from edgernn.kernels import batch_blocked
from reference import assert_close

import edgernn
from edgernn import artifact


def _cases():
    rng = np.random.default_rng(11)
    yield "lstm-odd", model([recurrent(rng, "lstm", "l", 3, 9), dense(rng, "d", 9, 5)], 3)
    yield (
        "lstm-init",
        model([recurrent(rng, "lstm", "l", 3, 8, initial_h=True, initial_c=True), dense(rng, "d", 8, 2)], 3),
    )
    yield (
        "gru-lbr1",
        model([recurrent(rng, "gru", "g", 4, 10, linear_before_reset=1), dense(rng, "d", 10, 3)], 4),
    )
    yield (
        "gru-lbr0",
        model([recurrent(rng, "gru", "g", 4, 7, linear_before_reset=0), dense(rng, "d", 7, 1)], 4),
    )
    yield (
        "rnn-relu",
        model(
            [
                recurrent(rng, "rnn", "r", 2, 6, activations=["relu"]),
                dense(rng, "d", 6, 2, activation="tanh"),
            ],
            2,
        ),
    )
    yield (
        "stack",
        model(
            [
                recurrent(rng, "lstm", "a", 5, 6),
                recurrent(rng, "gru", "b", 6, 5, linear_before_reset=1),
                dense(rng, "h", 5, 7, activation="relu"),
                dense(rng, "d", 7, 3, activation="sigmoid"),
            ],
            5,
        ),
    )
    yield "esn-dense", model([esn(rng, "e", 3, 21), dense(rng, "d", 21, 2)], 3)
    yield (
        "esn-sparse-ext",
        model([esn(rng, "e", 3, 30, sparse=True, readout_input="extended"), dense(rng, "d", 34, 2)], 3),
    )
    # not covered: the generated step_batch
    yield "lstm-clip", model([recurrent(rng, "lstm", "l", 3, 5, clip=0.5), dense(rng, "d", 5, 1)], 3)
    yield "lstm-peephole", model([recurrent(rng, "lstm", "l", 3, 5, P=True), dense(rng, "d", 5, 1)], 3)
    yield (
        "attention",
        model(
            [
                recurrent(rng, "gru", "g", 3, 6, linear_before_reset=1),
                attention(rng, "a", 6, 4),
                dense(rng, "d", 6, 2, activation="softmax"),
            ],
            3,
        ),
    )


CASES = list(_cases())


@pytest.mark.parametrize("n", [1, 5, 16, 37])
@pytest.mark.parametrize("quant", ["fp32", "int8"])
@pytest.mark.parametrize(("name", "pt"), CASES, ids=[c[0] for c in CASES])
def test_streams_equal_separate_streams(tmp_path, name, pt, quant, n):
    plan, tensors = pt
    if quant == "int8":
        plan, tensors = quantize_int8(plan, tensors)
    path = tmp_path / "m.ernn"
    artifact.write(path, plan, tensors)
    m = edgernn.load(path, backend="numba")
    batch = m.streams(n)
    single = [m.stream() for _ in range(n)]
    rng = np.random.default_rng(n)
    blocked = batch_blocked.blocked_supported(batch._wf)
    assert blocked == (name not in ("lstm-clip", "lstm-peephole", "attention"))
    for t in range(6):
        X = rng.standard_normal((n, plan["input"]["size"])).astype(np.float32)
        if blocked:
            assert batch_blocked.step_batch(X, batch._wf, batch._wb, batch._MB, _work(batch)) == 0
            got = batch._MB[:, batch._o]
        else:
            before = batch._MB.copy()
            assert batch_blocked.step_batch(X, batch._wf, batch._wb, batch._MB, _work(batch)) == 5
            np.testing.assert_array_equal(batch._MB, before)  # refused, nothing written
            got = batch.step(X)
        want = np.stack([s.step(x) for s, x in zip(single, X, strict=True)])
        assert_close(got, want, atol=1e-5, rtol=1e-4, what=f"{name} {quant} n={n} t={t}")
    assert_close(batch.state, np.stack([s.state for s in single]), atol=1e-5, rtol=1e-4, what="states")


def _work(streams):
    return batch_blocked.LazyStepBatch.work(streams._wf)


def test_too_small_work_buffer_is_refused(tmp_path):
    plan, tensors = CASES[0][1]
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    b = edgernn.load(tmp_path / "m.ernn", backend="numba").streams(20)
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    before = b.state
    W = _work(b)
    assert batch_blocked.step_batch(X, b._wf, b._wb, b._MB, W[:-1]) == 1  # ST_SIZE, nothing written
    np.testing.assert_array_equal(b.state, before)


def test_bad_row_leaves_every_stream_untouched(tmp_path):
    plan, tensors = CASES[0][1]
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    b = edgernn.load(tmp_path / "m.ernn", backend="numba").streams(20)
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    assert batch_blocked.step_batch(X, b._wf, b._wb, b._MB, _work(b)) == 0
    before = b.state
    X[17, 1] = np.nan
    status = batch_blocked.step_batch(X, b._wf, b._wb, b._MB, _work(b))
    assert status >> 3 == 17 and status & 7 == 2  # ST_NONFINITE in row 17, as the generated kernels report
    np.testing.assert_array_equal(b.state, before)
    bad = np.zeros((19, 3), np.float32)
    assert batch_blocked.step_batch(bad, b._wf, b._wb, b._MB, _work(b)) == 1  # ST_SIZE: one row per stream
