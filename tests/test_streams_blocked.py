"""The generated many-stream kernel (``step_batch``, kernels/lanes.py) against n separate single-stream steps.

``Streams.step`` runs the model's generated ``step_batch``: blocks of 16 streams with every weight matrix
product blocked over the block, the streams after the last full block stepped one by one. For every layer
kind, odd sizes (rows not a multiple of 4, streams not a multiple of 16), int8 weights, ops the blocking
does not cover (clip, peepholes, attention) and a graph plan (a causal convolution over time feeding an
LSTM), ``Streams.step`` must give what n separate ``Stream.step`` calls give, up to float32 summation
order; a bad row or a size mismatch leaves every stream untouched.
"""

from __future__ import annotations

import re

import numpy as np
import pytest
from builders import attention, dense, esn, model, quantize_int8, recurrent
from edgernn.kernels import codegen, lanes
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


@pytest.mark.parametrize("n", [1, 5, 16, 37, 70])
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
    for t in range(6):
        X = rng.standard_normal((n, plan["input"]["size"])).astype(np.float32)
        got = batch.step(X)
        want = np.stack([s.step(x) for s, x in zip(single, X, strict=True)])
        assert_close(got, want, atol=1e-5, rtol=1e-4, what=f"{name} {quant} n={n} t={t}")
    assert_close(batch.state, np.stack([s.state for s in single]), atol=1e-5, rtol=1e-4, what="states")


@pytest.mark.parametrize(("name", "pt"), CASES, ids=[c[0] for c in CASES])
def test_products_are_blocked_over_the_streams(tmp_path, name, pt):
    """The lstm, gru, rnn, esn and dense products (clip and peepholes included: their extra terms are
    per-stream code between the products) are each one product over a block of 16 streams, weight rows
    read once per block; attention's own products stay per stream, inside the same kernel."""
    plan, tensors = pt
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    wf = edgernn.load(tmp_path / "m.ernn", backend="numpy")._packed.wf
    kinds = [lay["kind"] for lay in plan["layers"]]
    blockable = sum(k in ("lstm", "gru", "rnn", "dense", "esn") for k in kinds)
    src = codegen.source(wf)  # the portable blocked loops
    body = src[src.index("def step_batch") : src.index("def seq")]
    assert body.count(f"range(0, nb, {lanes.SB})") >= blockable
    # with row panels: the float32 products are GEMM tiles over the panels, which the panels table holds
    n = len(wf) + (-len(wf) % 16)
    bp = lanes.BatchPanels(wf, np.zeros(0, np.int8), n, 8)
    src = codegen.source(wf, batch=bp)
    body = src[src.index("def step_batch") : src.index("def seq")]
    assert "GT_" in body and "bgemm_tile(" in src
    assert not re.search(r"MB\[s_\d+ \+ \d+, [^\]]*\] \+=", body)  # no blocked loop product is left
    assert bp.n == len(bp.table()) and bp.n >= sum(k * r for (_, _, k, _, r) in bp.where)


def test_graph_plan_streams_equal_separate_streams(tmp_path):
    """A graph plan (PyTorch causal Conv1d over time + ReLU + LSTM + Linear through ONNX): its convolution
    runs per stream inside the batched kernel, its LSTM and Linear blocked; n streams equal n single ones."""
    pytest.importorskip("torch")
    pytest.importorskip("onnx")
    from compiler_common import export_causal_convlstm
    from edgernn.export import compile_onnx

    p = tmp_path / "m.onnx"
    export_causal_convlstm(p, hidden=9)
    compile_onnx(str(p), str(tmp_path / "m.ernn"))
    m = edgernn.load(tmp_path / "m.ernn", backend="numba")
    n = 21
    batch, single = m.streams(n), [m.stream() for _ in range(n)]
    rng = np.random.default_rng(5)
    for t in range(8):
        X = rng.standard_normal((n, 3)).astype(np.float32)
        want = np.stack([s.step(x) for s, x in zip(single, X, strict=True)])
        assert_close(batch.step(X), want, atol=1e-5, rtol=1e-4, what=f"graph plan t={t}")


def test_bad_row_leaves_every_stream_untouched(tmp_path):
    plan, tensors = CASES[0][1]
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    b = edgernn.load(tmp_path / "m.ernn", backend="numba").streams(20)
    X = np.random.default_rng(0).standard_normal((20, 3)).astype(np.float32)
    b.step(X)
    before = b.state
    X[17, 1] = np.nan
    status = b._k(X, b._wf, b._wb, b._MB)
    assert status >> 3 == 17 and status & 7 == 2  # ST_NONFINITE in row 17
    np.testing.assert_array_equal(b.state, before)
    with pytest.raises(edgernn.InputError, match="stream 17"):
        b.step(X)
    np.testing.assert_array_equal(b.state, before)
    bad = np.zeros((19, 3), np.float32)
    assert b._k(bad, b._wf, b._wb, b._MB) == 1  # ST_SIZE: one row per stream
    np.testing.assert_array_equal(b.state, before)


def test_overflow_in_one_stream_of_a_block_restores_every_stream(tmp_path):
    """A finite input that drives one stream of a full block to Inf (a ReLU RNN with huge weights):
    ``Streams.step`` refuses, naming that stream, and no stream advances."""
    rng = np.random.default_rng(3)
    lay, t = recurrent(rng, "rnn", "r", 2, 6, activations=["relu"])
    for k in t:
        if k.endswith(".W"):
            t[k] = (t[k] * 0 + 1e30).astype(np.float32)
    plan, tensors = model([(lay, t), dense(rng, "d", 6, 1)], 2)
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    b = edgernn.load(tmp_path / "m.ernn", backend="numba").streams(32)
    X = np.zeros((32, 2), np.float32)
    b.step(X)
    before = b.state
    X[21] = 1e10  # W·x = 2e40: +Inf in float32, for stream 21 only
    with pytest.raises(edgernn.InputError, match="stream 21"):
        b.step(X)
    np.testing.assert_array_equal(b.state, before)


@pytest.mark.parametrize(
    ("nvec", "valid", "vw"), [(3, 24, 8), (3, 20, 8), (2, 13, 8), (1, 1, 8), (3, 48, 16), (2, 21, 16)]
)
def test_gemm_tile_against_numpy(nvec, valid, vw):
    """One register-blocked tile (kernels/bgemm.py): 4 streams' rows of a 2-D buffer (row stride not a
    multiple of anything) times a k-major panel, added into ``valid`` floats of each stream's row; the
    floats around them untouched."""
    pytest.importorskip("numba")
    from edgernn.kernels import bgemm
    from numba import njit

    tile = bgemm.tile(4, nvec, valid, vw)  # vw = 16: the AVX-512 panels (legalized for any CPU)

    @njit
    def go(wf, p, X, s, xoff, Y, yoff, K):
        tile(wf, p, X, s, xoff, Y, yoff, K)

    rng = np.random.default_rng(valid)
    K, R = 37, nvec * vw
    W = rng.standard_normal((valid, K)).astype(np.float32)
    wf = np.concatenate([rng.standard_normal(5).astype(np.float32), bgemm.pack_panel(W, R)])
    X = rng.standard_normal((9, 53)).astype(np.float32)
    Y = rng.standard_normal((9, 83)).astype(np.float32)
    want = Y.copy()
    want[3:7, 11 : 11 + valid] += X[3:7, 6 : 6 + K] @ W.T
    go(wf, 5, X, 3, 6, Y, 11, K)
    assert_close(Y, want, atol=1e-5, rtol=1e-5, what=f"tile {nvec}x{vw} valid={valid}")


def test_gemm_panels_made_for_the_first_streams_only(tmp_path):
    """The GEMM panels join wf when the model's first Streams is made (a Stream user holds no copy),
    once, even when threads make their first Streams at the same time; every one steps as a Stream."""
    import threading

    rng = np.random.default_rng(3)
    plan, tensors = model([recurrent(rng, "lstm", "l", 3, 30), dense(rng, "d", 30, 2)], 3)
    artifact.write(tmp_path / "m.ernn", plan, tensors)
    m = edgernn.load(tmp_path / "m.ernn", backend="numba")
    n0 = len(m._packed.wf)
    X = rng.standard_normal((8, 3)).astype(np.float32)
    want = np.stack([m.stream().step(x) for x in X])
    assert len(m._packed.wf) == n0
    got = {}

    def go(i):
        got[i] = m.streams(8).step(X)

    threads = [threading.Thread(target=go, args=(i,)) for i in range(6)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    grown = len(m._packed.wf)
    if m._backend.source is not None and "GT_" in m._backend.source:
        assert grown > n0
    m.streams(4)
    assert len(m._packed.wf) == grown
    for i in range(6):
        assert_close(got[i], want, atol=1e-5, rtol=1e-4, what=f"thread {i}")
