"""SELL-8 sparse reservoirs (kernels/sparse.py): the layout, the jitted product (every gather form) and the
ESN models packed that way, against float64 oracles (the dense W built from the CSR tensors; the numpy
reference of tests/reference.py)."""

from __future__ import annotations

import llvmlite.binding as ll
import numpy as np
import pytest
from builders import dense, esn, model, quantize_int8
from edgernn.kernels import sparse
from edgernn.kernels.ops import esn as esn_op
from reference import assert_close, reference_predict

import edgernn


def _csr(rng, n: int, density: float, empty_ends: bool = True, repeat: bool = True):
    """A random CSR (data float32, indices, indptr) with empty first/last rows and a repeated entry, and
    its dense float64 form (repeated entries add up, as in CSR)."""
    mask = rng.random((n, n)) < density
    if empty_ends and n > 2:
        mask[0] = mask[-1] = False
    rows, cols = np.nonzero(mask)
    data = rng.standard_normal(rows.size).astype(np.float32)
    if repeat and rows.size >= 2 and rows[0] == rows[1]:
        cols = cols.copy()
        cols[1] = cols[0]
    ptr = np.zeros(n + 1, np.int64)
    np.add.at(ptr, rows + 1, 1)
    ptr = np.cumsum(ptr)
    W = np.zeros((n, n))
    np.add.at(W, (rows, cols), data.astype(np.float64))
    return data, cols.astype(np.int32), ptr.astype(np.int32), W


def _bound(W: np.ndarray, x: np.ndarray) -> np.ndarray:
    """Per row: what float32 reassociation of Σ_j W_rj·x_j can change (a few ulps of Σ |W_rj·x_j|)."""
    return 1e-5 * (np.abs(W) @ np.abs(x.astype(np.float64))) + 1e-30


@pytest.mark.parametrize("sort", [True, False])
@pytest.mark.parametrize(("n", "density"), [(1, 1.0), (8, 0.5), (83, 0.0), (83, 0.02), (83, 0.3), (500, 0.1)])
def test_sell_layout_holds_every_entry_once(n, density, sort):
    """Every CSR entry lands in exactly one lane of one slot of its row's slice; padding is value 0 with
    a valid index; summing the layout by its definition gives W·x."""
    rng = np.random.default_rng(n + int(density * 100))
    data, ind, ptr, W = _csr(rng, n, density)
    vals, cols, first, lanes = sparse.sell_pack(n, data, ind, ptr, sort=sort)
    S = sparse.SLICE
    ns = -(-n // S)
    assert vals.dtype == np.float32 and cols.dtype == np.uint16
    assert first.shape == (ns + 1,) and lanes.shape == (ns * S,) and vals.size == cols.size == first[-1] * S
    assert sorted(lanes[lanes < n].tolist()) == list(range(n)) and np.all(lanes[n:] == n)
    assert cols.size == 0 or cols.max() < n
    x = rng.standard_normal(n)
    g = np.zeros(n + 1)
    for s in range(ns):
        for k in range(first[s], first[s + 1]):
            for r in range(S):
                g[lanes[s * S + r]] += vals[k * S + r] * x[cols[k * S + r]]
    np.testing.assert_allclose(g[:n], W @ x, rtol=1e-12, atol=1e-12)
    assert g[n] == 0.0  # padding lanes add nothing
    assert np.count_nonzero(vals) == np.count_nonzero(data)
    if sort:  # sorted rows minimize the sum of the slices' widths
        assert vals.size <= sparse.sell_pack(n, data, ind, ptr, sort=False)[0].size


def test_sell_pack_refuses_more_rows_than_uint16_indices_hold():
    with pytest.raises(ValueError, match="uint16"):
        sparse.sell_pack(sparse.MAX_N + 1, np.zeros(0, np.float32), np.zeros(0), np.zeros(sparse.MAX_N + 2))


def _modes() -> list[str]:
    feats = ll.get_host_cpu_features().flatten()
    return ["lanes", "masked"] + (["x86"] if "+avx2" in feats.split(",") else [])


@pytest.mark.parametrize("mode", _modes())
@pytest.mark.parametrize(("n", "density"), [(8, 1.0), (83, 0.02), (83, 0.3), (500, 0.1)])
def test_sell8_product_matches_the_dense_product(n, density, mode):
    """The jitted product (each gather form), its arrays at nonzero offsets of larger buffers as in the
    packed model, adds W·x into g to float32 reassociation."""
    rng = np.random.default_rng(7 * n)
    data, ind, ptr, W = _csr(rng, n, density)
    vals, cols, first, lanes = sparse.sell_pack(n, data, ind, ptr)
    kern = sparse.sell8_acc if mode == "lanes" else sparse.make_sell8(sparse.make_gather8(mode))
    wf = np.concatenate([np.full(5, np.nan, np.float32), vals])
    u16 = np.concatenate([np.full(3, 9999, np.uint16), cols])
    wi = np.concatenate([np.full(2, -1, np.int32), first, lanes]).astype(np.int32)
    x = rng.standard_normal(n).astype(np.float32)
    g0 = rng.standard_normal(n).astype(np.float32)
    g = g0.copy()
    kern(wf, 5, u16, 3, wi, 2, 2 + first.size, n, x, g)
    want = g0.astype(np.float64) + W @ x.astype(np.float64)
    assert np.all(np.abs(g - want) <= _bound(W, x) + 1e-6 * np.abs(g0)), np.abs(g - want).max()


def _esn_model(rng, n: int, density: float, quant: str, readout: str = "state"):
    I = 5  # noqa: E741
    out = n if readout == "state" else 1 + I + n
    plan, tensors = model([esn(rng, "e", I, n, sparse=True, density=density, readout_input=readout),
                           dense(rng, "d", out, 2)], I)  # fmt: skip
    return quantize_int8(plan, tensors) if quant == "int8" else (plan, tensors)


@pytest.mark.parametrize("quant", ["fp32", "int8"])
@pytest.mark.parametrize("layout", ["sell", "csr"])
def test_sparse_esn_models_match_the_reference_in_either_layout(layout, quant, monkeypatch):
    """A sparse reservoir below the dense cut runs SELL-8 (or CSR with SELL off, or when its rows do not
    fit uint16 indices): step, run, streams and predict of both backends match the float64 reference;
    the generated step calls the layout's kernel."""
    if layout == "csr":
        monkeypatch.setattr(sparse, "MAX_N", 16)  # 83 rows: more than SELL-8 may hold -> CSR
    rng = np.random.default_rng(21)
    plan, tensors = _esn_model(rng, 83, 0.06, quant, readout="extended")
    X = rng.standard_normal((30, 5)).astype(np.float32)
    ref = reference_predict(plan, tensors, X)
    for backend in ("numba", "numpy"):
        m = edgernn.Model(plan, tensors, backend=backend)
        info = m.info["layers"][0]
        assert "packed_dense" not in info
        assert info.get("packed_float32", False) == (layout == "sell" and quant == "int8")
        if backend == "numba":
            src = m.kernel_source
            assert ("sell8_acc(wf" in src) == (layout == "sell") and ("csr_acc(" in src) == (layout == "csr")
        what = f"{layout} {quant} {backend}"
        s = m.stream()
        assert_close(np.stack([s.step(x) for x in X]), ref, what=f"{what} step")
        assert_close(m.stream().run(X), ref, what=f"{what} run")
        assert_close(m.predict(X), ref, what=f"{what} predict")
        b = m.streams(17)  # one full block of 16 streams (kernels/lanes.py) and one more
        Yb = np.stack([b.step(np.repeat(x[None], 17, 0))[1] for x in X[:8]])
        assert_close(Yb, ref[:8], what=f"{what} streams")


def test_sell_off_keeps_csr(monkeypatch):
    """esn.SELL = False (the benchmarks' before) packs CSR as before; results agree with SELL-8's."""
    rng = np.random.default_rng(22)
    plan, tensors = _esn_model(rng, 40, 0.1, "fp32")
    X = rng.standard_normal((20, 5)).astype(np.float32)
    sell = edgernn.Model(plan, tensors, backend="numba")
    monkeypatch.setattr(esn_op, "SELL", False)
    csr = edgernn.Model(plan, tensors, backend="numba")
    assert "csr_acc(" in csr.kernel_source and "sell8_acc(wf" in sell.kernel_source
    np.testing.assert_allclose(sell.stream().run(X), csr.stream().run(X), rtol=1e-5, atol=1e-6)
