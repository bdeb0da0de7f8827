"""``load(..., dynamic_int8=True)``: int8 R·h on h quantized per step (kernels/ops/_qemit.py, kernels/vnni.py)
against an independent numpy reference of the same quantization, the VNNI path against the portable
integer loop (exact integer sums; the float epilogue may round differently), and the default left alone."""

from __future__ import annotations

import numpy as np
import pytest

pytest.importorskip("numba")

import edgernn  # noqa: E402
from edgernn import artifact  # noqa: E402
from edgernn.bench import quantize_int8, synthetic  # noqa: E402
from edgernn.errors import EdgeRNNError  # noqa: E402


def _sig(v):
    return 1.0 / (1.0 + np.exp(-v))


def reference_dynamic(tensors: dict, X: np.ndarray) -> np.ndarray:
    """LSTM (ONNX gate order i, o, f, c) + Dense head, int8 weights dequantized, and R·h computed as
    ws_r · s · Σ_k q_k R_q[r, k] with s = max|h| / 127, q = floor(h / s + 1/2) (0 when h is 0), in float64."""
    Wq, Ws = tensors["rec.W"][0].astype(np.float64), tensors["rec.W_scale"][0].astype(np.float64)
    Rq, Rs = tensors["rec.R"][0].astype(np.int64), tensors["rec.R_scale"][0].astype(np.float64)
    B = tensors["rec.B"][0].astype(np.float64)
    H = Rq.shape[1]
    hq, hs, hb = tensors["head.W"].astype(np.float64), tensors["head.W_scale"], tensors["head.b"]
    h, c = np.zeros(H), np.zeros(H)
    out = []
    for x in X.astype(np.float64):
        amax = np.abs(h).max()
        q = np.floor(h * (127.0 / amax) + 0.5).astype(np.int64) if amax > 0 else np.zeros(H, np.int64)
        g = (Wq * Ws[:, None]) @ x + Rs * (amax / 127.0) * (Rq @ q) + B[: 4 * H] + B[4 * H :]
        i, o, f, ct = _sig(g[:H]), _sig(g[H : 2 * H]), _sig(g[2 * H : 3 * H]), np.tanh(g[3 * H :])
        c = f * c + i * ct
        h = o * np.tanh(c)
        out.append((hq * hs[:, None]) @ h + hb)
    return np.array(out)


@pytest.fixture(scope="module", params=[128, 72])  # 72: not a multiple of the 64-byte VNNI chunk
def int8_lstm(request, tmp_path_factory):
    plan, tensors = synthetic("lstm", 8, request.param, 1, seed=3)
    qplan, qt = quantize_int8(plan, tensors)
    d = tmp_path_factory.mktemp("dyn")
    p32, p8 = str(d / "m.ernn"), str(d / "m.int8.ernn")
    artifact.write(p32, plan, tensors)
    artifact.write(p8, qplan, qt)
    return p32, p8, qt


def _inputs(n=200):
    return np.random.default_rng(7).standard_normal((n, 8)).astype(np.float32)


def test_dynamic_matches_numpy_reference(int8_lstm, monkeypatch):
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")  # the int8 kernels for every size
    _, p8, qt = int8_lstm
    m = edgernn.load(p8, dynamic_int8=True)
    assert "np.uint8" in m.kernel_source
    X = _inputs()
    s = m.stream()
    got = np.stack([s.step(x) for x in X])
    ref = reference_dynamic(qt, X)
    # activations are rational approximations (~6e-7) and float32 sums; a q on a rounding tie may differ by 1
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(m.stream().run(X), got, atol=1e-6, rtol=1e-6)


def test_vnni_and_portable_loop_agree(int8_lstm, monkeypatch):
    from edgernn.kernels import compiled, vnni
    from edgernn.kernels.codegen import source

    if not vnni.have_vnni():
        pytest.skip("no AVX512-VNNI on this CPU: only the portable loop runs here")
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    from edgernn.kernels.ops import _qemit

    _, p8, qt = int8_lstm
    m = edgernn.load(p8)
    p = m._packed
    sums, where = _qemit.row_sums(p.wf, p.wb)
    R = qt["rec.R"][0].astype(np.int64)
    nv = R.shape[1] if R.shape[1] >= 64 else 0
    np.testing.assert_array_equal(sums, R[:, :nv].sum(axis=1))  # the row sums, independently
    wf = np.concatenate([p.wf, sums]).astype(np.float32)
    rowsums = {off: len(p.wf) + i for off, i in where.items()}
    outs = []
    for use in (True, False):
        src = source(wf, dynamic_int8=True, vnni=use, rowsums=rowsums)
        assert ("dot4_u8s8(" in src) is (use and nv > 0)
        k = compiled.Kernels(src)
        M = m._m0.copy()
        ys = []
        for x in _inputs(50):
            assert k.step(x, wf, p.wb, M) == 0
            ys.append(np.concatenate([M[: p.n_state], M[p.out_off : p.out_off + 1]]))  # not the scratch
        outs.append(np.stack(ys))
    # the integer sums are exact on both paths; only the float epilogue may contract differently (FMA)
    np.testing.assert_allclose(outs[0], outs[1], rtol=1e-6, atol=1e-7)


def test_accuracy_against_float32(int8_lstm, monkeypatch):
    """The trade in numbers: dynamic int8 stays within a small bound of the float32 model, of the same
    order as weight-only int8's own error."""
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    p32, p8, _ = int8_lstm
    X = _inputs(300)
    ys = {}
    for name, path, kw in (("f32", p32, {}), ("w8", p8, {}), ("dyn", p8, {"dynamic_int8": True})):
        s = edgernn.load(path, **kw).stream()
        ys[name] = np.stack([s.step(x) for x in X])
    err_w8 = np.abs(ys["w8"] - ys["f32"]).max()
    err_dyn = np.abs(ys["dyn"] - ys["f32"]).max()
    scale = np.abs(ys["f32"]).max()
    assert err_dyn <= max(4 * err_w8, 2e-3 * scale), (err_dyn, err_w8, scale)


def test_default_is_unchanged_and_bad_uses_refused(int8_lstm, monkeypatch):
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    p32, p8, _ = int8_lstm
    src = edgernn.load(p8).kernel_source
    assert "uint8" not in src and "dot4_u8s8" not in src
    with pytest.raises(EdgeRNNError, match="int8 model"):
        edgernn.load(p32, dynamic_int8=True)
    with pytest.raises(EdgeRNNError, match="numba backend"):
        edgernn.load(p8, backend="numpy", dynamic_int8=True)


def reference_esn_dynamic(tensors: dict, leak: float, U: np.ndarray) -> np.ndarray:
    """ESN (dense reservoir) + Dense head: x ← (1 − a)x + a·tanh(W_in u + b + ws·s·Σ q W_q), q and s of x as
    in :func:`reference_dynamic`, float64."""
    Wi = tensors["rec.W_in"].astype(np.float64) * tensors["rec.W_in_scale"][:, None]
    Wq, Ws, b = tensors["rec.W"].astype(np.int64), tensors["rec.W_scale"].astype(np.float64), tensors["rec.b"]
    hq, hs, hb = tensors["head.W"].astype(np.float64), tensors["head.W_scale"], tensors["head.b"]
    x = np.zeros(Wq.shape[0])
    out = []
    for u in U.astype(np.float64):
        amax = np.abs(x).max()
        q = np.floor(x * (127.0 / amax) + 0.5).astype(np.int64) if amax > 0 else np.zeros(len(x), np.int64)
        x = (1 - leak) * x + leak * np.tanh(Wi @ u + b + Ws * (amax / 127.0) * (Wq @ q))
        out.append((hq * hs[:, None]) @ x + hb)
    return np.array(out)


@pytest.mark.parametrize("n", [100, 128])
def test_esn_dynamic_matches_numpy_reference(n, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    plan, tensors = synthetic("esn", 8, n, 1, seed=5)
    qplan, qt = quantize_int8(plan, tensors)
    path = str(tmp_path / "esn.int8.ernn")
    artifact.write(path, qplan, qt)
    m = edgernn.load(path, dynamic_int8=True)
    assert "np.uint8" in m.kernel_source
    X = _inputs(150)
    s = m.stream()
    got = np.stack([s.step(x) for x in X])
    ref = reference_esn_dynamic(qt, float(np.float32(qplan["layers"][0]["leak_rate"])), X)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(m.stream().run(X), got, atol=1e-6, rtol=1e-6)
