"""The numpy backend: the kernels' plan interpreter written with numpy vector operations.

Used when numba is missing or disabled (``NUMBA_DISABLE_JIT=1``/``EDGERNN_DISABLE_JIT=1``) or asked
for with ``load(..., backend="numpy")``. It reads the same packed buffers and keeps the same stream
state layout as the JIT kernels, so states move freely between backends; activations are exact
(``np.tanh``), so results agree with the kernels within the fast activations' stated error.
Same entry points and status codes as ``kernels/engine.py``.
"""

from __future__ import annotations

import numpy as np

from .kernels import layout as L

_F32 = np.dtype(np.float32)


def _i(wf, p):
    return int(wf[p])


def _off(wf, p):
    return int(wf[p]) * L.TWO24 + int(wf[p + 1])


def _vec(wf, rec, slot, n):
    o = _off(wf, rec + L.R_VEC + 2 * slot)
    return wf[o : o + n]


def _mat(wf, wb, rec, j):
    """Matrix descriptor j as a float32 2-D array (dequantized)."""
    p = rec + L.R_MAT + j * L.MAT
    off, rows, cols, ld = (
        _off(wf, p + L.M_OFF),
        _i(wf, p + L.M_ROWS),
        _i(wf, p + L.M_COLS),
        _i(wf, p + L.M_LD),
    )
    if _i(wf, p + L.M_Q) == 0:
        return wf[off : off + rows * ld].reshape(rows, ld)[:, :cols]
    s = wf[_off(wf, p + L.M_SOFF) : _off(wf, p + L.M_SOFF) + rows]
    return wb[off : off + rows * ld].reshape(rows, ld)[:, :cols].astype(np.float32) * s[:, None]


def _act(code, x, alpha, beta):
    x = np.asarray(x, np.float32)
    with np.errstate(over="ignore", invalid="ignore"):
        if code == 0:
            return x
        if code == 1:
            return np.where(x < 0, np.float32(0), x)
        if code == 2:
            return np.tanh(x)
        if code == 3:
            return (1.0 / (1.0 + np.exp(-x.astype(np.float64)))).astype(np.float32)
        if code == 4:
            e = np.exp(x - np.max(x))
            return (e / e.sum()).astype(np.float32)
        if code == 5:
            return np.where(x < 0, alpha * x, x).astype(np.float32)
        if code == 6:
            return (alpha * x + beta).astype(np.float32)
        if code == 7:
            return np.where(x > alpha, x, np.float32(0)).astype(np.float32)
        if code == 8:
            return (alpha * np.tanh(beta * x)).astype(np.float32)
        if code == 9:
            return np.clip(alpha * x + beta, 0, 1).astype(np.float32)
        if code == 10:
            return np.where(x < 0, alpha * np.expm1(np.minimum(x, 0)), x).astype(np.float32)
        if code == 11:
            return (x / (1 + np.abs(x))).astype(np.float32)
        if code == 12:
            return np.where(x > 20, x, np.log1p(np.exp(np.minimum(x, 20)))).astype(np.float32)
    return x


def _params(wf, rec, d, j):
    fp = _off(wf, rec + L.R_FP)
    i = 3 * d + j
    return _i(wf, rec + L.R_ACT + i), wf[fp + L.P_ALPHA + i], wf[fp + L.P_BETA + i]


def _clip(wf, rec, v):
    c = wf[_off(wf, rec + L.R_FP) + L.P_CLIP]
    return np.clip(v, -c, c) if np.isfinite(c) else v


def _wr(wf, wb, rec, d, nin):
    """(W, R) float32 matrices of direction d."""
    if _i(wf, rec + L.R_FLAGS) & L.F_FUSED:
        m = _mat(wf, wb, rec, 2 * d)
        return m[:, :nin], m[:, nin:]
    return _mat(wf, wb, rec, 2 * d), _mat(wf, wb, rec, 2 * d + 1)


def _cell(wf, wb, rec, kind, d, x, h, c):
    """One recurrent step; returns (h, c) new arrays."""
    H = _i(wf, rec + L.R_H)
    flags = _i(wf, rec + L.R_FLAGS)
    W, R = _wr(wf, wb, rec, d, x.shape[0])
    if kind == L.K_RNN:
        code, a, b = _params(wf, rec, d, 0)
        return _act(code, _clip(wf, rec, W @ x + R @ h + _vec(wf, rec, d, H)), a, b), c
    if kind == L.K_LSTM:
        g = W @ x + R @ h + _vec(wf, rec, d, 4 * H)
        fc, fa, fb = _params(wf, rec, d, 0)
        gc, ga, gb = _params(wf, rec, d, 1)
        hc, ha, hb = _params(wf, rec, d, 2)
        P = _vec(wf, rec, 2 + d, 3 * H) if flags & L.F_PEEPHOLE else np.zeros(3 * H, np.float32)
        i = _act(fc, _clip(wf, rec, g[:H] + P[:H] * c), fa, fb)
        if flags & L.F_INPUT_FORGET:
            f = 1 - i
        else:
            f = _act(fc, _clip(wf, rec, g[2 * H : 3 * H] + P[2 * H :] * c), fa, fb)
        cn = f * c + i * _act(gc, _clip(wf, rec, g[3 * H :]), ga, gb)
        o = _act(fc, _clip(wf, rec, g[H : 2 * H] + P[H : 2 * H] * cn), fa, fb)
        return (o * _act(hc, cn, ha, hb)).astype(np.float32), cn.astype(np.float32)
    # GRU
    wbias, rbias = _vec(wf, rec, d, 3 * H), _vec(wf, rec, 2 + d, 3 * H)
    fc, fa, fb = _params(wf, rec, d, 0)
    gc, ga, gb = _params(wf, rec, d, 1)
    zr = _act(fc, _clip(wf, rec, W[: 2 * H] @ x + R[: 2 * H] @ h + wbias[: 2 * H] + rbias[: 2 * H]), fa, fb)
    z, r = zr[:H], zr[H:]
    xs = W[2 * H :] @ x + wbias[2 * H :]
    if flags & L.F_LBR:
        rs = r * (R[2 * H :] @ h + rbias[2 * H :])
    else:
        rs = R[2 * H :] @ (r * h) + rbias[2 * H :]
    ht = _act(gc, _clip(wf, rec, xs + rs), ga, gb)
    return ((1 - z) * ht + z * h).astype(np.float32), c


def _layer_step(wf, wb, rec, M, xin):
    """One step of the layer at ``rec``; returns its output (and updates state in M)."""
    kind = _i(wf, rec + L.R_KIND)
    st = _off(wf, rec + L.R_ST)
    H = _i(wf, rec + L.R_H)
    fp = _off(wf, rec + L.R_FP)
    flags = _i(wf, rec + L.R_FLAGS)
    if kind in (L.K_RNN, L.K_LSTM, L.K_GRU):
        h = M[st : st + H]
        c = M[st + H : st + 2 * H] if kind == L.K_LSTM else None
        hn, cn = _cell(wf, wb, rec, kind, 0, xin, h, c)
        h[:] = hn
        if c is not None:
            c[:] = cn
        return hn
    if kind == L.K_DENSE:
        n = _i(wf, rec + L.R_NOUT)
        y = _mat(wf, wb, rec, 0) @ xin
        if flags & L.F_BIAS:
            y = y + _vec(wf, rec, 0, n)
        return _act(_i(wf, rec + L.R_ACT), y, wf[fp + L.P_ALPHA], wf[fp + L.P_BETA])
    if kind == L.K_ESN:
        x = M[st : st + H]
        g = _mat(wf, wb, rec, 0) @ xin
        if flags & L.F_BIAS:
            g = g + _vec(wf, rec, 0, H)
        if flags & L.F_SPARSE:
            p = rec + L.R_MAT + L.MAT
            wi = wb.view(np.int32)
            io, po = _off(wf, rec + L.R_VEC + 2), _off(wf, rec + L.R_VEC + 4)
            ptr = wi[po : po + H + 1]
            nnz = int(ptr[-1])
            ind = wi[io : io + nnz]
            doff = _off(wf, p + L.M_OFF)
            rows = np.repeat(np.arange(H), np.diff(ptr))
            if _i(wf, p + L.M_Q) == 0:
                data = wf[doff : doff + nnz]
            else:
                so = _off(wf, p + L.M_SOFF)
                data = wb[doff : doff + nnz].astype(np.float32) * wf[so : so + H][rows]
            # per-row sums; rows without entries (also trailing ones) add nothing
            g = g + np.bincount(rows, weights=data * x[ind], minlength=H).astype(np.float32)
        else:
            g = g + _mat(wf, wb, rec, 1) @ x
        a = wf[fp + L.P_LEAK]
        x[:] = (1 - a) * x + a * np.tanh(g)
        if flags & L.F_EXTENDED:
            return np.concatenate([[1.0], xin, x]).astype(np.float32)
        return x.copy()
    if kind == L.K_ATTENTION:
        n = xin.shape[0]
        s = float(_vec(wf, rec, 1, H) @ np.tanh(_mat(wf, wb, rec, 0) @ xin + _vec(wf, rec, 0, H)))
        pool = M[st : st + n + 2]
        acc = pool[2:]
        if pool[1] == 0:
            pool[0], pool[1] = s, 1.0
            acc[:] = xin
        elif s > pool[0]:
            sc = np.exp(pool[0] - s)
            pool[0] = s
            pool[1] = pool[1] * sc + 1
            acc[:] = acc * sc + xin
        else:
            e = np.exp(s - pool[0])
            pool[1] += e
            acc += e * xin
        return (acc / pool[1]).astype(np.float32)
    if kind == L.K_NORMALIZE:
        n = xin.shape[0]
        return ((xin - _vec(wf, rec, 0, n)) / _vec(wf, rec, 1, n)).astype(np.float32)
    if kind == L.K_AFFINE:
        n = xin.shape[0]
        return (xin * _vec(wf, rec, 0, n) + _vec(wf, rec, 1, n)).astype(np.float32)
    if kind == L.K_ACTIVATION:
        return _act(_i(wf, rec + L.R_ACT), xin, wf[fp + L.P_ALPHA], wf[fp + L.P_BETA])
    if kind == L.K_EMBEDDING:
        return np.array(_mat(wf, wb, rec, 0)[int(xin[0])], np.float32)
    if kind == L.K_ONEHOT:
        y = np.zeros(_i(wf, rec + L.R_NOUT), np.float32)
        y[int(xin[0])] = 1
        return y
    raise ValueError(f"unknown layer kind {kind}")  # pragma: no cover - validated at load


def _check(x, wf):
    if x.shape[0] != _i(wf, L.H_NIN):
        return 1
    vocab = _i(wf, L.H_VOCAB)
    if vocab:
        t = float(x[0])
        return 0 if (0 <= t < vocab and t == int(t)) else 3
    if _i(wf, L.H_FLAGS) & 1:
        return 0
    return 0 if np.all(np.isfinite(x)) else 2


def _require(a, ndim):
    if type(a) is not np.ndarray or a.dtype != _F32 or a.ndim != ndim or not a.flags.c_contiguous:
        raise TypeError("expects a C-contiguous float32 array")


def _run(x, wf, wb, M):
    out = x
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(_i(wf, L.H_NLAYERS)):
            out = _layer_step(wf, wb, L.HEADER + l * L.REC, M, out)
    o = _off(wf, L.H_OUT)
    M[o : o + out.shape[0]] = out


def _guarded(wf):
    return not (_i(wf, L.H_FLAGS) & 1)


def _ns(wf):
    return _off(wf, L.H_NSTATE)


def _finite(wf, M):
    o = _off(wf, L.H_OUT)
    return bool(np.isfinite(M[: _ns(wf)]).all() and np.isfinite(M[o : o + _i(wf, L.H_NOUT)]).all())


def step(x, wf, wb, M):
    """Advance one stream; same contract as ``kernels.engine.step``."""
    _require(x, 1)
    st = _check(x, wf)
    if st:
        return st
    saved = M[: _ns(wf)].copy() if _guarded(wf) else None
    _run(x, wf, wb, M)
    if saved is not None and not _finite(wf, M):
        M[: _ns(wf)] = saved
        return 4
    return 0


def step_batch(X, wf, wb, MB):
    """Advance n streams; same contract as ``kernels.engine.step_batch``."""
    _require(X, 2)
    if X.shape[0] != MB.shape[0]:
        return 1
    for i in range(X.shape[0]):
        st = _check(X[i], wf)
        if st:
            return st | (i << 3)
    saved = MB[:, : _ns(wf)].copy() if _guarded(wf) else None
    for i in range(X.shape[0]):
        _run(X[i], wf, wb, MB[i])
        if saved is not None and not _finite(wf, MB[i]):
            MB[: i + 1, : _ns(wf)] = saved[: i + 1]
            return 4 | (i << 3)
    return 0


def seq(X, wf, wb, M, Y, buf):
    """Run a sequence layer by layer; same contract as ``kernels.engine.seq``."""
    _require(X, 2)
    for t in range(X.shape[0]):
        st = _check(X[t], wf)
        if st:
            return st | (t << 3)
    cur = [X[t] for t in range(X.shape[0])]
    T = len(cur)
    saved = M[: _ns(wf)].copy() if _guarded(wf) else None
    with np.errstate(over="ignore", invalid="ignore"):
        for l in range(_i(wf, L.H_NLAYERS)):
            rec = L.HEADER + l * L.REC
            kind = _i(wf, rec + L.R_KIND)
            if kind in (L.K_RNN, L.K_LSTM, L.K_GRU):
                H, D = _i(wf, rec + L.R_H), _i(wf, rec + L.R_D)
                st_off = _off(wf, rec + L.R_ST)
                rev_flag = _i(wf, rec + L.R_FLAGS) & L.F_REVERSE
                outs = np.zeros((T, D * H), np.float32)
                for d in range(D):
                    reverse = d == 1 or rev_flag
                    if reverse:
                        h = _vec(wf, rec, 4 + d, H).copy()
                        c = _vec(wf, rec, 6 + d, H).copy() if kind == L.K_LSTM else None
                    else:
                        h = M[st_off : st_off + H].copy()
                        c = M[st_off + H : st_off + 2 * H].copy() if kind == L.K_LSTM else None
                    for t in range(T - 1, -1, -1) if reverse else range(T):
                        h, c = _cell(wf, wb, rec, kind, d, cur[t], h, c)
                        outs[t, d * H : (d + 1) * H] = h
                    if not reverse:
                        M[st_off : st_off + H] = h
                        if c is not None:
                            M[st_off + H : st_off + 2 * H] = c
                cur = list(outs)
            else:
                cur = [_layer_step(wf, wb, rec, M, x) for x in cur]
    for t in range(T):
        Y[t] = cur[t]
    if saved is not None:
        bad = np.flatnonzero(~np.isfinite(Y).all(axis=1)) if T else []
        if len(bad) or not np.isfinite(M[: _ns(wf)]).all():
            M[: _ns(wf)] = saved
            return 4 | (int(bad[0] if len(bad) else T - 1) << 3)
    return 0
