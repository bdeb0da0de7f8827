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
    assert "np.uint8" in m.kernel_source or "dot4_s8_panel(" in m.kernel_source
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
    assert "np.uint8" in m.kernel_source or "dot4_s8_panel(" in m.kernel_source
    X = _inputs(150)
    s = m.stream()
    got = np.stack([s.step(x) for x in X])
    ref = reference_esn_dynamic(qt, float(np.float32(qplan["layers"][0]["leak_rate"])), X)
    np.testing.assert_allclose(got, ref, atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(m.stream().run(X), got, atol=1e-6, rtol=1e-6)


# --- AVX2 int8 panels (vnni.dot4_s8_panel) and GRU layers --------------------------------------------------


def _need_avx2():
    from edgernn.kernels import vnni

    if not vnni.have_avx2():
        pytest.skip("no AVX2 on this CPU: the int8 panel product is not generated here")


@pytest.mark.parametrize("rows,cols", [(8, 32), (12, 72), (1024, 256), (500, 500)])
def test_s8_panel_product_is_the_integer_matmul(rows, cols):
    """dot4_s8_panel over panelize_i8's layout equals the exact int64 product W·q (q ∈ [−127, 127]), the
    extremes included, whatever the bytes of q past its columns hold (the panel's padding is 0)."""
    _need_avx2()
    from edgernn.kernels.vnni import PCHUNK, dot4_s8_panel, panelize_i8
    from numba import njit

    rng = np.random.default_rng(rows + cols)
    W = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
    W[0, :] = 127
    W[1, :] = -127
    cp = cols + (-cols % PCHUNK)
    q = rng.integers(-128, 128, cp).astype(np.int8)  # past cols: any byte, −128 included
    q[:cols] = rng.integers(-127, 128, cols)
    q[: min(cols, 32)] = -127
    P = panelize_i8(W)
    assert P.size == rows * cp

    @njit
    def run(P, q, y):
        for i in range(0, rows, 4):
            y[i], y[i + 1], y[i + 2], y[i + 3] = dot4_s8_panel(P, i * cp, q, cp)

    y = np.zeros(rows, np.int32)
    run(P, q, y)
    np.testing.assert_array_equal(y, W.astype(np.int64) @ q[:cols].astype(np.int64))


def _product_kernel(mode: str, W: np.ndarray, ws: np.ndarray, qcap_floats: int):
    """A jitted f(v, wf, wb, M) made by the generator's own emitters: quantize v into M[0:qcap_floats]
    and add the dynamic int8 product W·v into y = M[qcap_floats:] (zero before), with mode ``mode``;
    returns (f, wf, wb)."""
    from edgernn.kernels.ops import _qemit
    from edgernn.kernels.ops._emit import Code
    from edgernn.kernels.ops.record import Matrix

    rows, cols = W.shape
    wb = np.zeros(rows * cols + 64, np.int8)
    wb[: rows * cols] = W.ravel()
    wf = np.zeros(16 + rows, np.float32)
    wf[16:] = ws
    m = Matrix(True, 0, rows, cols, cols, 16)
    c = Code()
    c.qmode = mode
    if mode == "avx2":
        table, where = _qemit.panel_table_for(m, W)
        if where:
            base = len(wb) + (-len(wb) % 64)
            wb = np.concatenate([wb, np.zeros(base - len(wb), np.int8), table])
            c.qpanels = {0: base}
    c.depth = 1
    c(f"qf = M[0:{qcap_floats}]")
    qb, s = _qemit.quantize(c, "v", cols, "qf")
    c(f"y = M[{qcap_floats}:]")
    _qemit.gemv_dyn(c, m, 0, cols, 0, rows, qb, s, "y", 0, qcap=4 * qcap_floats)
    c(f"return {s}")
    consts = "\n".join(f"{k} = {v}" for k, v in c.consts.items())
    src = (
        "import numpy as np\nfrom numba import njit\nfrom edgernn.kernels.config import FASTMATH\n"
        "from edgernn.kernels.vnni import dot4_s8_panel\nZ = np.float32(0.0)\n"
        f"{consts}\n@njit(fastmath=set(FASTMATH))\ndef f(v, wf, wb, M):\n" + "\n".join(c.lines) + "\n"
    )
    ns: dict = {}
    exec(compile(src, "<dynamic product>", "exec"), ns)
    return ns["f"], wf, wb, "dot4_s8_panel(" in src


def _kernel_q(M, nq, cols, mode):
    q = M[:nq].view(np.int8 if mode == "avx2" else np.uint8)[:cols].astype(np.int64)
    return q if mode == "avx2" else q - 128


@pytest.mark.parametrize("mode", ["avx2", "loop"])
@pytest.mark.parametrize("rows,cols", [(1024, 256), (10, 72), (3, 40), (8, 20), (500, 500)])
def test_dynamic_product_exact_against_numpy(mode, rows, cols):
    """The generated quantization and product against numpy. With v integer-valued and max |v| = 127
    (s = 1, q = v) and unit row scales, y is the integer sum Σ q·W itself, bit for bit. In general q is the
    reference's floor(v/s + 1/2) (off by one only on a rounding tie) and, with the kernel's own q,
    y = (Σ q·W) · s · ws to float32 rounding of that final scaling (two roundings: 2 ulp)."""
    if mode == "avx2":
        _need_avx2()
    rng = np.random.default_rng(rows * 7 + cols)
    W = rng.integers(-127, 128, (rows, cols)).astype(np.int8)
    nq = (cols + 63) // 4 + 16
    f, wf, wb, used_panel = _product_kernel(mode, W, np.ones(rows, np.float32), nq)
    assert used_panel is (mode == "avx2" and rows >= 4 and cols >= 32)
    v = rng.integers(-127, 128, cols).astype(np.float32)
    v[1] = -127.0
    M = np.zeros(nq + rows, np.float32)
    assert f(v, wf, wb, M) == 1.0
    np.testing.assert_array_equal(_kernel_q(M, nq, cols, mode), v.astype(np.int64))
    exact = W.astype(np.int64) @ v.astype(np.int64)
    assert np.abs(exact).max() < 2**24
    np.testing.assert_array_equal(M[nq:], exact.astype(np.float32))

    ws = rng.uniform(1e-3, 2e-2, rows).astype(np.float32)
    f, wf, wb, _ = _product_kernel(mode, W, ws, nq)
    v = (rng.standard_normal(cols) * 0.7).astype(np.float32)
    v[3] = -np.abs(v).max() * 1.5  # the extreme is negative: q = −127 there
    M = np.zeros(nq + rows, np.float32)
    s = f(v, wf, wb, M)
    amax = np.float32(np.abs(v).max())
    assert s == amax * np.float32(1.0 / 127.0)
    q = _kernel_q(M, nq, cols, mode)
    scaled = v.astype(np.float64) * (127.0 / float(amax))
    qref = np.floor(scaled + 0.5)
    tie = np.abs(scaled + 0.5 - np.round(scaled + 0.5)) < 1e-4
    assert np.all((q == qref) | (tie & (np.abs(q - qref) == 1)))
    assert q.min() == -127 and q.max() <= 127
    ref = (W.astype(np.int64) @ q).astype(np.float64) * float(s) * ws.astype(np.float64)
    np.testing.assert_allclose(M[nq:], ref, rtol=2.0**-22, atol=0)


def test_dynamic_product_refuses_minus_128_panels():
    """A weight of −128 (which vpsignb cannot negate) keeps that matrix off the panels: the loop's sum."""
    _need_avx2()
    rng = np.random.default_rng(3)
    W = rng.integers(-127, 128, (16, 64)).astype(np.int8)
    W[5, 7] = -128
    f, wf, wb, used_panel = _product_kernel("avx2", W, np.ones(16, np.float32), 48)
    assert not used_panel
    v = rng.standard_normal(64).astype(np.float32)
    M = np.zeros(48 + 16, np.float32)
    s = f(v, wf, wb, M)
    q = M[:48].view(np.int8)[:64].astype(np.int64)
    np.testing.assert_array_equal(M[48:], (W.astype(np.int64) @ q).astype(np.float32) * np.float32(s))


def reference_gru_dynamic(tensors: dict, lbr: int, X: np.ndarray) -> np.ndarray:
    """GRU (ONNX gate order z, r, h) + Dense head, int8 weights dequantized, each recurrent product on its
    vector quantized per step as in :func:`reference_dynamic`: h for z and r (and the candidate when
    linear_before_reset), r⊙h for the candidate otherwise."""
    Wq, Ws = tensors["rec.W"][0].astype(np.float64), tensors["rec.W_scale"][0].astype(np.float64)
    Rq, Rs = tensors["rec.R"][0].astype(np.int64), tensors["rec.R_scale"][0].astype(np.float64)
    B = tensors["rec.B"][0].astype(np.float64)
    H = Rq.shape[1]
    Wb, Rb = B[: 3 * H], B[3 * H :]
    hq, hs, hb = tensors["head.W"].astype(np.float64), tensors["head.W_scale"], tensors["head.b"]

    def qprod(rows, v):
        amax = np.abs(v).max()
        q = np.floor(v * (127.0 / amax) + 0.5).astype(np.int64) if amax > 0 else np.zeros(H, np.int64)
        return Rs[rows] * (amax / 127.0) * (Rq[rows] @ q)

    h = np.zeros(H)
    out = []
    for x in X.astype(np.float64):
        wx = (Wq * Ws[:, None]) @ x + Wb
        zr = _sig(wx[: 2 * H] + Rb[: 2 * H] + qprod(slice(0, 2 * H), h))
        z, r = zr[:H], zr[H:]
        if lbr:
            cand = r * (qprod(slice(2 * H, 3 * H), h) + Rb[2 * H :])
        else:
            cand = qprod(slice(2 * H, 3 * H), r * h) + Rb[2 * H :]
        h = (1 - z) * np.tanh(wx[2 * H :] + cand) + z * h
        out.append((hq * hs[:, None]) @ h + hb)
    return np.array(out)


@pytest.mark.parametrize("lbr", [1, 0])
@pytest.mark.parametrize("hidden", [64, 65])  # 65: the candidate rows start at 2H = 130, not a multiple of 4
def test_gru_dynamic_matches_numpy_reference(lbr, hidden, tmp_path, monkeypatch):
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    plan, tensors = synthetic("gru", 8, hidden, 1, seed=4)
    qplan, qt = quantize_int8(plan, tensors)
    qplan["layers"][0]["linear_before_reset"] = lbr
    path = str(tmp_path / "gru.int8.ernn")
    artifact.write(path, qplan, qt)
    m = edgernn.load(path, dynamic_int8=True)
    src = m.kernel_source
    assert src.count("np.floor(") == 2 if lbr == 0 else src.count("np.floor(") >= 1
    X = _inputs(150)
    s = m.stream()
    got = np.stack([s.step(x) for x in X])
    np.testing.assert_allclose(got, reference_gru_dynamic(qt, lbr, X), atol=2e-5, rtol=1e-4)
    np.testing.assert_allclose(m.stream().run(X), got, atol=1e-6, rtol=1e-6)


@pytest.mark.parametrize("cell", ["lstm", "gru", "esn"])
def test_avx2_panels_and_portable_loop_agree(cell, tmp_path, monkeypatch):
    """The same model with the AVX2 int8 panels and with the integer loop: exact integer sums on both,
    one float epilogue: the outputs agree to float32 rounding."""
    _need_avx2()
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    plan, tensors = synthetic(cell, 8, 100, 1, seed=6)
    qplan, qt = quantize_int8(plan, tensors)
    path = str(tmp_path / f"{cell}.int8.ernn")
    artifact.write(path, qplan, qt)
    fast = edgernn.load(path, dynamic_int8=True)
    monkeypatch.setenv("EDGERNN_INT8_PANELS", "0")
    loop = edgernn.load(path, dynamic_int8=True)
    assert "dot4_s8_panel(" in fast.kernel_source and "dot4_s8_panel(" not in loop.kernel_source
    X = _inputs(200)
    np.testing.assert_allclose(fast.stream().run(X), loop.stream().run(X), rtol=1e-6, atol=1e-7)


def _sines(n=2000, i=8):
    rng = np.random.default_rng(0)
    t = np.arange(n)[:, None]
    f, ph = rng.uniform(0.005, 0.05, i)[None, :], rng.uniform(0, 2 * np.pi, i)[None, :]
    return (np.sin(2 * np.pi * f * t + ph) + 0.1 * rng.standard_normal((n, i))).astype(np.float32)


@pytest.mark.slow  # three models compiled twice each: 20-30 s apiece here
@pytest.mark.parametrize("cell,hidden", [("lstm", 256), ("gru", 256), ("esn", 500)])
def test_dynamic_error_on_noisy_sines(cell, hidden, tmp_path, monkeypatch):
    """2,000 steps of noisy sines: dynamic int8's error against the float32 model is of the order of
    weight-only int8's (measured here: within 1.12x of it, and under 1% of the output's range)."""
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    plan, tensors = synthetic(cell, 8, hidden, 1, seed=0)
    qplan, qt = quantize_int8(plan, tensors)
    p32, p8 = str(tmp_path / "m.ernn"), str(tmp_path / "m.int8.ernn")
    artifact.write(p32, plan, tensors)
    artifact.write(p8, qplan, qt)
    S = _sines()
    ref = edgernn.load(p32).stream().run(S)
    w8 = edgernn.load(p8).stream().run(S)
    dyn = edgernn.load(p8, dynamic_int8=True).stream().run(S)
    scale = np.abs(ref).max()
    err_w8, err_dyn = np.abs(w8 - ref).max(), np.abs(dyn - ref).max()
    assert err_dyn <= 1.5 * err_w8 and err_dyn <= 2e-2 * scale, (err_dyn, err_w8, scale)
