"""``Streams`` for servers: rows stepped selectively, per-row reset/state, resize — against n separate
``Stream``s (each an independent single-stream kernel run) on the numba and numpy backends."""

from __future__ import annotations

import builders as B
import numpy as np
import pytest

import edgernn

N, I, H = 7, 3, 8


@pytest.fixture(scope="module", params=["numba", "numpy"])
def model(request):
    rng = np.random.default_rng(3)
    plan, tensors = B.model([B.recurrent(rng, "lstm", "l0", I, H), B.dense(rng, "d0", H, 2)], I)
    return edgernn.Model(plan, tensors, backend=request.param)


def _pair(model, n=N):
    return model.streams(n), [model.stream() for _ in range(n)]


def _assert_same(b, singles):
    for i, s in enumerate(singles):
        np.testing.assert_allclose(b.get_state(i), s.state, rtol=1e-5, atol=1e-6)


def test_step_rows_advances_only_those_rows(model):
    rng = np.random.default_rng(0)
    b, singles = _pair(model)
    for _ in range(30):
        rows = rng.choice(N, size=int(rng.integers(0, N + 1)), replace=False)
        X = rng.normal(size=(len(rows), I)).astype(np.float32)
        Y = b.step(X, rows=rows)
        assert Y.shape == (len(rows), model.output_size)
        for j, r in enumerate(rows):
            np.testing.assert_allclose(Y[j], singles[r].step(X[j]), rtol=1e-5, atol=1e-6)
        _assert_same(b, singles)
    # the full-block step still agrees after selective ones
    X = rng.normal(size=(N, I)).astype(np.float32)
    Y = b.step(X)
    np.testing.assert_allclose(
        Y, np.stack([s.step(x) for s, x in zip(singles, X, strict=True)]), rtol=1e-5, atol=1e-6
    )


@pytest.mark.parametrize(
    "rows, X_rows",
    [([0, 0], 2), ([N], 1), ([-1], 1), ([1.5], 1), ([[0, 1]], 2), ([0, 1], 3), ([True], 1)],
)
def test_bad_rows_are_refused_and_change_nothing(model, rows, X_rows):
    rng = np.random.default_rng(1)
    b, _ = _pair(model)
    b.step(rng.normal(size=(N, I)).astype(np.float32))
    before = b.state
    with pytest.raises(edgernn.InputError):
        b.step(np.ones((X_rows, I), np.float32), rows=rows)
    np.testing.assert_array_equal(b.state, before)
    if X_rows == len(np.ravel(rows)) and rows != [True]:
        with pytest.raises(edgernn.InputError):
            b.reset(rows)
        np.testing.assert_array_equal(b.state, before)


def test_a_bad_sample_in_a_row_subset_leaves_every_row_untouched(model):
    rng = np.random.default_rng(2)
    b, _ = _pair(model)
    b.step(rng.normal(size=(N, I)).astype(np.float32))
    before = b.state
    X = rng.normal(size=(3, I)).astype(np.float32)
    X[2, 1] = np.nan
    with pytest.raises(edgernn.InputError, match="stream 5"):
        b.step(X, rows=[1, 3, 5])
    np.testing.assert_array_equal(b.state, before)
    with pytest.raises(edgernn.InputError):
        b.step(np.ones((3, I + 1), np.float32), rows=[1, 3, 5])
    np.testing.assert_array_equal(b.state, before)


def test_reset_rows_and_per_row_state(model):
    rng = np.random.default_rng(4)
    b, singles = _pair(model)
    X = rng.normal(size=(N, I)).astype(np.float32)
    b.step(X)
    for s, x in zip(singles, X, strict=True):
        s.step(x)
    b.reset([2, 4])
    singles[2].reset()
    singles[4].reset()
    _assert_same(b, singles)
    v = singles[0].state
    b.set_state(6, v)
    singles[6].state = v
    _assert_same(b, singles)
    before = b.state
    for bad in (np.full(model.state_size, np.nan, np.float32), np.zeros(model.state_size + 1, np.float32)):
        with pytest.raises(edgernn.InputError):
            b.set_state(1, bad)
    with pytest.raises(edgernn.InputError):
        b.set_state(N, v)
    with pytest.raises(edgernn.InputError):
        b.get_state(-1)
    np.testing.assert_array_equal(b.state, before)


def test_resize_keeps_live_rows(model):
    rng = np.random.default_rng(5)
    b, singles = _pair(model, 3)
    for _ in range(4):
        X = rng.normal(size=(3, I)).astype(np.float32)
        b.step(X)
        for s, x in zip(singles, X, strict=True):
            s.step(x)
    b.resize(6)
    singles += [model.stream() for _ in range(3)]
    assert len(b) == 6
    _assert_same(b, singles)
    X = rng.normal(size=(2, I)).astype(np.float32)
    b.step(X, rows=[5, 1])
    singles[5].step(X[0])
    singles[1].step(X[1])
    _assert_same(b, singles)
    b.resize(2)
    assert len(b) == 2 and b.state.shape == (2, model.state_size)
    _assert_same(b, singles[:2])
    with pytest.raises(edgernn.InputError):
        b.step(np.ones((1, I), np.float32), rows=[2])
    for bad in (0, -1, 2.0, True):
        with pytest.raises(edgernn.InputError):
            b.resize(bad)
    assert len(b) == 2
