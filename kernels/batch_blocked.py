"""Blocked many-stream step: each weight row is loaded once per block of ``BLK`` streams.

A single-stream step run n times re-reads every weight row n times. Here the streams go through in
blocks of ``BLK`` = 16: a layer's inputs for the block are gathered
into a *panel* P[b, k] (row b = stream b's [x; h]), and each weight row, loaded once into L1, is dotted
with the panel rows of four streams at a time (one weight load feeds four FMAs; the reduction over k
vectorizes). The elementwise parts (gates, leaky integration, activations) run per stream on the panels;
states are copied from and back to each stream's buffer.

Supported here (the common streaming models): forward LSTM with the default activations and no clip,
peepholes or input_forget; forward GRU (sigmoid/tanh, either ``linear_before_reset``, no clip); forward RNN
(tanh/relu, no clip); ESN (dense or CSR, state or extended readout); dense (linear/relu/tanh/sigmoid);
float32 or int8 weights (``blocked_supported``). Any other model gets the generated per-model
``step_batch`` (kernels/codegen.py), whose arguments and status codes this kernel shares (plus the work
buffer ``W``); so does a call with fewer than two streams (the runtime routes it there).

The numba backend's ``step_batch`` (``Model.streams(n).step``) is this kernel, behind
:class:`LazyStepBatch`: compiling it takes longer than the single-stream step, so it compiles on the first
batched call of a process (or loads from the kernel cache; ``edgernn warmup`` compiles it ahead). Its
sums run in a different order than the single-stream GEMV, so ``streams(n)`` equals n separate streams
to float32 rounding (~3e-8 here), not bit for bit. An AOT module has the generated ``step_batch`` only.
"""

from __future__ import annotations

import numpy as np

from .activations import A_LINEAR, A_RELU, A_SIGMOID, A_TANH, fast_sigmoid, fast_tanh
from .config import kernel, njit
from .layout import (
    F_BIAS,
    F_CLIP,
    F_EXTENDED,
    F_FUSED,
    F_INPUT_FORGET,
    F_LBR,
    F_PEEPHOLE,
    F_REVERSE,
    F_SPARSE,
    H_NIN,
    H_NLAYERS,
    H_NOUT,
    H_OUT,
    H_VOCAB,
    HEADER,
    K_DENSE,
    K_ESN,
    K_GRU,
    K_LSTM,
    K_RNN,
    M_LD,
    M_OFF,
    M_Q,
    M_SOFF,
    MAT,
    P_LEAK,
    R_ACT,
    R_D,
    R_FLAGS,
    R_FP,
    R_H,
    R_KIND,
    R_MAT,
    R_NIN,
    R_NOUT,
    R_ST,
    R_VEC,
    REC,
)
from .linalg import off2, vec
from .streamcheck import (
    ST_NOT_STREAMABLE,
    ST_OK,
    ST_OVERFLOW,
    ST_SIZE,
    backup,
    check_row,
    guarded,
    restore,
    state_out_finite,
)

BLK = 16  # streams per block: one AVX-512 register, two AVX2 registers of float32
_Z = np.float32(0.0)
_ONE = np.float32(1.0)


@kernel
def _supported(wf):
    """True when every layer has a blocked implementation (see the module doc)."""
    if int(wf[H_VOCAB]) > 0:
        return False
    for l in range(int(wf[H_NLAYERS])):
        rec = HEADER + l * REC
        kind = int(wf[rec + R_KIND])
        flags = int(wf[rec + R_FLAGS])
        a0 = int(wf[rec + R_ACT])
        a1 = int(wf[rec + R_ACT + 1])
        a2 = int(wf[rec + R_ACT + 2])
        if kind == K_LSTM or kind == K_GRU or kind == K_RNN:
            if int(wf[rec + R_D]) != 1 or flags & (F_REVERSE | F_CLIP | F_INPUT_FORGET | F_PEEPHOLE):
                return False
            if kind == K_LSTM and not (a0 == A_SIGMOID and a1 == A_TANH and a2 == A_TANH):
                return False
            if kind == K_GRU and not (a0 == A_SIGMOID and a1 == A_TANH):
                return False
            if kind == K_RNN and not (a0 == A_TANH or a0 == A_RELU):
                return False
        elif kind == K_DENSE:
            if not (a0 == A_LINEAR or a0 == A_RELU or a0 == A_TANH or a0 == A_SIGMOID):
                return False
        elif kind != K_ESN:
            return False
    return True


@kernel
def _mk44_f32(W, b0, ld, cols, P, b, p0, G, g, s0, s1, s2, s3):
    """4 weight rows (W[b0 + r*ld :][:cols], float32) x 4 panel rows (streams b..b+3) -> G[b.., g..]."""
    w0 = W[b0 : b0 + cols]
    w1 = W[b0 + ld : b0 + ld + cols]
    w2 = W[b0 + 2 * ld : b0 + 2 * ld + cols]
    w3 = W[b0 + 3 * ld : b0 + 3 * ld + cols]
    x0 = P[b, p0 : p0 + cols]
    x1 = P[b + 1, p0 : p0 + cols]
    x2 = P[b + 2, p0 : p0 + cols]
    x3 = P[b + 3, p0 : p0 + cols]
    a00 = a01 = a02 = a03 = _Z
    a10 = a11 = a12 = a13 = _Z
    a20 = a21 = a22 = a23 = _Z
    a30 = a31 = a32 = a33 = _Z
    for k in range(cols):
        v0 = x0[k]
        v1 = x1[k]
        v2 = x2[k]
        v3 = x3[k]
        u = w0[k]
        a00 += u * v0
        a01 += u * v1
        a02 += u * v2
        a03 += u * v3
        u = w1[k]
        a10 += u * v0
        a11 += u * v1
        a12 += u * v2
        a13 += u * v3
        u = w2[k]
        a20 += u * v0
        a21 += u * v1
        a22 += u * v2
        a23 += u * v3
        u = w3[k]
        a30 += u * v0
        a31 += u * v1
        a32 += u * v2
        a33 += u * v3
    G[b, g] += a00 * s0
    G[b + 1, g] += a01 * s0
    G[b + 2, g] += a02 * s0
    G[b + 3, g] += a03 * s0
    G[b, g + 1] += a10 * s1
    G[b + 1, g + 1] += a11 * s1
    G[b + 2, g + 1] += a12 * s1
    G[b + 3, g + 1] += a13 * s1
    G[b, g + 2] += a20 * s2
    G[b + 1, g + 2] += a21 * s2
    G[b + 2, g + 2] += a22 * s2
    G[b + 3, g + 2] += a23 * s2
    G[b, g + 3] += a30 * s3
    G[b + 1, g + 3] += a31 * s3
    G[b + 2, g + 3] += a32 * s3
    G[b + 3, g + 3] += a33 * s3


@kernel
def _mk44_i8(Q, b0, ld, cols, P, b, p0, G, g, s0, s1, s2, s3):
    """As :func:`_mk44_f32` for int8 weight rows (widened in the loop; s0..s3 are the row scales)."""
    w0 = Q[b0 : b0 + cols]
    w1 = Q[b0 + ld : b0 + ld + cols]
    w2 = Q[b0 + 2 * ld : b0 + 2 * ld + cols]
    w3 = Q[b0 + 3 * ld : b0 + 3 * ld + cols]
    x0 = P[b, p0 : p0 + cols]
    x1 = P[b + 1, p0 : p0 + cols]
    x2 = P[b + 2, p0 : p0 + cols]
    x3 = P[b + 3, p0 : p0 + cols]
    a00 = a01 = a02 = a03 = _Z
    a10 = a11 = a12 = a13 = _Z
    a20 = a21 = a22 = a23 = _Z
    a30 = a31 = a32 = a33 = _Z
    for k in range(cols):
        v0 = x0[k]
        v1 = x1[k]
        v2 = x2[k]
        v3 = x3[k]
        u = np.float32(w0[k])
        a00 += u * v0
        a01 += u * v1
        a02 += u * v2
        a03 += u * v3
        u = np.float32(w1[k])
        a10 += u * v0
        a11 += u * v1
        a12 += u * v2
        a13 += u * v3
        u = np.float32(w2[k])
        a20 += u * v0
        a21 += u * v1
        a22 += u * v2
        a23 += u * v3
        u = np.float32(w3[k])
        a30 += u * v0
        a31 += u * v1
        a32 += u * v2
        a33 += u * v3
    G[b, g] += a00 * s0
    G[b + 1, g] += a01 * s0
    G[b + 2, g] += a02 * s0
    G[b + 3, g] += a03 * s0
    G[b, g + 1] += a10 * s1
    G[b + 1, g + 1] += a11 * s1
    G[b + 2, g + 1] += a12 * s1
    G[b + 3, g + 1] += a13 * s1
    G[b, g + 2] += a20 * s2
    G[b + 1, g + 2] += a21 * s2
    G[b + 2, g + 2] += a22 * s2
    G[b + 3, g + 2] += a23 * s2
    G[b, g + 3] += a30 * s3
    G[b + 1, g + 3] += a31 * s3
    G[b + 2, g + 3] += a32 * s3
    G[b + 3, g + 3] += a33 * s3


@kernel
def _panel_acc(wf, wb, rec, j, col0, cols, r0, nrows, P, p0, G, g0):
    """G[b, g0 + i] += W_j[r0 + i, col0 : col0 + cols] . P[b, p0 : p0 + cols] for i < nrows, b < BLK.

    W_j is matrix descriptor ``j`` of the record: float32 in ``wf`` or int8 in ``wb`` with per-row scales.
    Register-blocked: 4 weight rows x 4 streams per inner loop (16 accumulators; each load feeds 4 FMAs).
    """
    p = rec + R_MAT + j * MAT
    off = off2(wf, p + M_OFF) + col0
    ld = int(wf[p + M_LD])
    q = int(wf[p + M_Q])
    soff = off2(wf, p + M_SOFF) + r0
    i = 0
    while i < nrows:
        # a tail of 1-3 rows reuses the 4-row kernel on rows i-..: recompute overlap-free by stepping back
        r = i if i + 4 <= nrows else nrows - 4
        if r < 0:  # fewer than 4 rows in all: one row at a time
            for rr in range(nrows):
                b0 = off + (r0 + rr) * ld
                s = _ONE if q == 0 else wf[soff + rr]
                for b in range(BLK):
                    x = P[b, p0 : p0 + cols]
                    acc = _Z
                    if q == 0:
                        for k in range(cols):
                            acc += wf[b0 + k] * x[k]
                    else:
                        for k in range(cols):
                            acc += np.float32(wb[b0 + k]) * x[k]
                    G[b, g0 + rr] += acc * s
            return
        b0 = off + (r0 + r) * ld
        # rows below i were already accumulated: give them a zero scale when stepping back
        z0 = _ONE if r >= i else _Z
        z1 = _ONE if r + 1 >= i else _Z
        z2 = _ONE if r + 2 >= i else _Z
        if q == 0:
            s0, s1, s2, s3 = z0, z1, z2, _ONE
            for b in range(0, BLK, 4):
                _mk44_f32(wf, b0, ld, cols, P, b, p0, G, g0 + r, s0, s1, s2, s3)
        else:
            s0 = wf[soff + r] * z0
            s1 = wf[soff + r + 1] * z1
            s2 = wf[soff + r + 2] * z2
            s3 = wf[soff + r + 3]
            for b in range(0, BLK, 4):
                _mk44_i8(wb, b0, ld, cols, P, b, p0, G, g0 + r, s0, s1, s2, s3)
        i = r + 4


@kernel
def _fill(G, g0, n, v):
    """G[b, g0 + i] = v[i] for every row b (a bias for each stream of the block)."""
    for b in range(BLK):
        r = G[b, g0 : g0 + n]
        for i in range(n):
            r[i] = v[i]


@kernel
def _zero(G, g0, n):
    for b in range(BLK):
        r = G[b, g0 : g0 + n]
        for i in range(n):
            r[i] = _Z


@kernel
def _gather(MB, s0, nb, off, n, P, p0):
    """P[b, p0 + k] = MB[s0 + b, off + k] (zeros for b >= nb)."""
    for b in range(BLK):
        dst = P[b, p0 : p0 + n]
        if b < nb:
            src = MB[s0 + b, off : off + n]
            for k in range(n):
                dst[k] = src[k]
        else:
            for k in range(n):
                dst[k] = _Z


@kernel
def _scatter(MB, s0, nb, off, n, P, p0):
    """MB[s0 + b, off + k] = P[b, p0 + k] for b < nb."""
    for b in range(nb):
        dst = MB[s0 + b, off : off + n]
        src = P[b, p0 : p0 + n]
        for k in range(n):
            dst[k] = src[k]


@kernel
def _act(code, v):
    n = v.shape[0]
    if code == A_TANH:
        for k in range(n):
            v[k] = fast_tanh(v[k])
    elif code == A_SIGMOID:
        for k in range(n):
            v[k] = fast_sigmoid(v[k])
    elif code == A_RELU:
        for k in range(n):
            v[k] = v[k] if v[k] > _Z else _Z * v[k]


@kernel
def _block(wf, wb, MB, s0, nb, A, Bp, XH, G, S, ST, tmp):
    """Run every layer for streams s0 .. s0+nb-1; the block's inputs are in panel A columns [0, nin)."""
    nl = int(wf[H_NLAYERS])
    for l in range(nl):
        rec = HEADER + l * REC
        kind = int(wf[rec + R_KIND])
        nin = int(wf[rec + R_NIN])
        nout = int(wf[rec + R_NOUT])
        flags = int(wf[rec + R_FLAGS])
        H = int(wf[rec + R_H])
        st = off2(wf, rec + R_ST)
        if kind == K_LSTM or kind == K_GRU or kind == K_RNN:
            for b in range(BLK):  # XH = [x; h]
                src = A[b, 0:nin]
                dst = XH[b, 0:nin]
                for k in range(nin):
                    dst[k] = src[k]
            _gather(MB, s0, nb, st, H, XH, nin)
            fused = flags & F_FUSED
            if kind == K_LSTM:
                _fill(G, 0, 4 * H, vec(wf, rec, 0, 4 * H))
                if fused:
                    _panel_acc(wf, wb, rec, 0, 0, nin + H, 0, 4 * H, XH, 0, G, 0)
                else:
                    _panel_acc(wf, wb, rec, 0, 0, nin, 0, 4 * H, XH, 0, G, 0)
                    _panel_acc(wf, wb, rec, 1, 0, H, 0, 4 * H, XH, nin, G, 0)
                _gather(MB, s0, nb, st + H, H, S, 0)  # c
                for b in range(nb):
                    g = G[b]
                    c = S[b, 0:H]
                    h = Bp[b, 0:H]
                    s3 = g[0 : 3 * H]
                    for k in range(3 * H):
                        s3[k] = fast_sigmoid(s3[k])
                    gg = g[3 * H : 4 * H]
                    for k in range(H):
                        gg[k] = fast_tanh(gg[k])
                    for k in range(H):
                        c[k] = g[2 * H + k] * c[k] + g[k] * gg[k]
                    for k in range(H):
                        h[k] = g[H + k] * fast_tanh(c[k])
                _scatter(MB, s0, nb, st, H, Bp, 0)
                _scatter(MB, s0, nb, st + H, H, S, 0)
            elif kind == K_GRU:
                wbias = vec(wf, rec, 0, 3 * H)
                rbias = vec(wf, rec, 2, 3 * H)
                for b in range(BLK):
                    zr = G[b, 0 : 2 * H]
                    for i in range(2 * H):
                        zr[i] = wbias[i] + rbias[i]
                _fill(G, 2 * H, H, wbias[2 * H : 3 * H])  # xs = Wh x + Wbh
                _fill(G, 3 * H, H, rbias[2 * H : 3 * H])  # rs = Rh (.) + Rbh
                if fused:
                    _panel_acc(wf, wb, rec, 0, 0, nin + H, 0, 2 * H, XH, 0, G, 0)
                    _panel_acc(wf, wb, rec, 0, 0, nin, 2 * H, H, XH, 0, G, 2 * H)
                else:
                    _panel_acc(wf, wb, rec, 0, 0, nin, 0, 2 * H, XH, 0, G, 0)
                    _panel_acc(wf, wb, rec, 1, 0, H, 0, 2 * H, XH, nin, G, 0)
                    _panel_acc(wf, wb, rec, 0, 0, nin, 2 * H, H, XH, 0, G, 2 * H)
                for b in range(BLK):
                    _act(A_SIGMOID, G[b, 0 : 2 * H])  # z, r
                if flags & F_LBR:
                    if fused:
                        _panel_acc(wf, wb, rec, 0, nin, H, 2 * H, H, XH, nin, G, 3 * H)
                    else:
                        _panel_acc(wf, wb, rec, 1, 0, H, 2 * H, H, XH, nin, G, 3 * H)
                    for b in range(nb):
                        g = G[b]
                        for k in range(H):
                            g[3 * H + k] *= g[H + k]
                else:  # Rh (r . h): panel S holds r . h
                    for b in range(BLK):
                        g = G[b]
                        sb = S[b, 0:H]
                        hb = XH[b, nin : nin + H]
                        for k in range(H):
                            sb[k] = g[H + k] * hb[k]
                    if fused:
                        _panel_acc(wf, wb, rec, 0, nin, H, 2 * H, H, S, 0, G, 3 * H)
                    else:
                        _panel_acc(wf, wb, rec, 1, 0, H, 2 * H, H, S, 0, G, 3 * H)
                for b in range(nb):
                    g = G[b]
                    hb = XH[b, nin : nin + H]
                    h = Bp[b, 0:H]
                    for k in range(H):
                        z = g[k]
                        h[k] = (_ONE - z) * fast_tanh(g[2 * H + k] + g[3 * H + k]) + z * hb[k]
                _scatter(MB, s0, nb, st, H, Bp, 0)
            else:  # RNN
                _fill(G, 0, H, vec(wf, rec, 0, H))
                if fused:
                    _panel_acc(wf, wb, rec, 0, 0, nin + H, 0, H, XH, 0, G, 0)
                else:
                    _panel_acc(wf, wb, rec, 0, 0, nin, 0, H, XH, 0, G, 0)
                    _panel_acc(wf, wb, rec, 1, 0, H, 0, H, XH, nin, G, 0)
                code = int(wf[rec + R_ACT])
                for b in range(nb):
                    g = G[b, 0:H]
                    _act(code, g)
                    h = Bp[b, 0:H]
                    for k in range(H):
                        h[k] = g[k]
                _scatter(MB, s0, nb, st, H, Bp, 0)
        elif kind == K_DENSE:
            if flags & F_BIAS:
                _fill(Bp, 0, nout, vec(wf, rec, 0, nout))
            else:
                _zero(Bp, 0, nout)
            _panel_acc(wf, wb, rec, 0, 0, nin, 0, nout, A, 0, Bp, 0)
            code = int(wf[rec + R_ACT])
            for b in range(nb):
                _act(code, Bp[b, 0:nout])
        else:  # ESN
            N = H
            a = wf[off2(wf, rec + R_FP) + P_LEAK]
            if flags & F_BIAS:
                _fill(G, 0, N, vec(wf, rec, 0, N))
            else:
                _zero(G, 0, N)
            _panel_acc(wf, wb, rec, 0, 0, nin, 0, N, A, 0, G, 0)
            _gather(MB, s0, nb, st, N, S, 0)
            if flags & F_SPARSE:
                p = rec + R_MAT + MAT
                doff = off2(wf, p + M_OFF)
                wi = wb.view(np.int32)
                io = off2(wf, rec + R_VEC + 2)
                po = off2(wf, rec + R_VEC + 4)
                q = int(wf[p + M_Q])
                soff = off2(wf, p + M_SOFF)
                for k in range(N):  # state panel transposed: ST[k, b], 16 streams per row
                    for b in range(BLK):
                        ST[k, b] = S[b, k]
                for r in range(N):
                    for b in range(BLK):
                        tmp[b] = _Z
                    for j in range(wi[po + r], wi[po + r + 1]):
                        w = wf[doff + j] if q == 0 else np.float32(wb[doff + j])
                        xr = ST[wi[io + j]]
                        for b in range(BLK):
                            tmp[b] += w * xr[b]
                    s = _ONE if q == 0 else wf[soff + r]
                    for b in range(BLK):
                        G[b, r] += tmp[b] * s
            else:
                _panel_acc(wf, wb, rec, 1, 0, N, 0, N, S, 0, G, 0)
            one_minus_a = _ONE - a
            for b in range(nb):
                g = G[b, 0:N]
                x = S[b, 0:N]
                for k in range(N):
                    x[k] = one_minus_a * x[k] + a * fast_tanh(g[k])
            _scatter(MB, s0, nb, st, N, S, 0)
            for b in range(nb):
                y = Bp[b]
                x = S[b]
                if flags & F_EXTENDED:
                    y[0] = _ONE
                    for k in range(nin):
                        y[1 + k] = A[b, k]
                    for k in range(N):
                        y[1 + nin + k] = x[k]
                else:
                    for k in range(N):
                        y[k] = x[k]
        A, Bp = Bp, A
    return A


@kernel
def _sizes(wf):
    """(panel width, gate rows) the blocked path needs for this model."""
    width = int(wf[H_NIN])
    gates = 1
    for l in range(int(wf[H_NLAYERS])):
        rec = HEADER + l * REC
        nin = int(wf[rec + R_NIN])
        nout = int(wf[rec + R_NOUT])
        H = int(wf[rec + R_H])
        width = max(width, nin + H + 1, nout + 1)
        gates = max(gates, 4 * H, nout)
    return width, gates


@njit
def work_size(wf):
    """Floats of work buffer ``step_batch`` needs for this model: five BLK x width panels (A, Bp, XH, S and
    the transposed ST), the BLK x gates panel G and BLK scratch floats, in that order (see ``_blocks``)."""
    width, gates = _sizes(wf)
    return 5 * BLK * width + BLK * gates + BLK


@njit
def step_batch(X, wf, wb, MB, W):
    """Advance n streams (rows of MB) by one step each with the rows of X (same contract and status codes
    as the generated ``step_batch``); blocks of BLK streams share every weight row load. ``W``: a float32 work
    buffer of at least :func:`work_size` floats (its contents are overwritten; nothing is allocated)."""
    n = X.shape[0]
    if n != MB.shape[0] or W.shape[0] < work_size(wf):
        return ST_SIZE
    if not _supported(wf):  # the runtime gives such models the generated step_batch
        return ST_NOT_STREAMABLE
    for i in range(n):
        st = check_row(X[i], wf)
        if st != ST_OK:
            return st | (i << 3)
    guard = guarded(wf)
    if guard:
        for i in range(n):
            backup(wf, MB[i])
    if n > 0:
        _blocks(X, wf, wb, MB, W)
    if guard:  # a finite input drove some stream to NaN/Inf: no stream advances
        for i in range(n):
            if not state_out_finite(wf, MB[i]):
                for j in range(n):
                    restore(wf, MB[j])
                return ST_OVERFLOW | (i << 3)
    return ST_OK


@kernel
def _blocks(X, wf, wb, MB, W):
    """All n streams through the blocked layers, BLK at a time; the panels live in W (zeroed here)."""
    n = X.shape[0]
    width, gates = _sizes(wf)
    used = work_size(wf)
    for k in range(used):
        W[k] = _Z
    pw = BLK * width
    A = W[0:pw].reshape((BLK, width))
    Bp = W[pw : 2 * pw].reshape((BLK, width))
    XH = W[2 * pw : 3 * pw].reshape((BLK, width))
    S = W[3 * pw : 4 * pw].reshape((BLK, width))
    ST = W[4 * pw : 5 * pw].reshape((width, BLK))  # transposed state panel (CSR reservoirs)
    G = W[5 * pw : 5 * pw + BLK * gates].reshape((BLK, gates))
    tmp = W[5 * pw + BLK * gates : used]
    nin0 = int(wf[H_NIN])
    oo = off2(wf, H_OUT)
    nout = int(wf[H_NOUT])
    for s0 in range(0, n, BLK):
        nb = min(BLK, n - s0)
        for b in range(BLK):
            r = A[b, 0:nin0]
            if b < nb:
                x = X[s0 + b]
                for k in range(nin0):
                    r[k] = x[k]
            else:
                for k in range(nin0):
                    r[k] = _Z
        out = _block(wf, wb, MB, s0, nb, A, Bp, XH, G, S, ST, tmp)
        _scatter(MB, s0, nb, oo, nout, out, 0)


def blocked_supported(wf: np.ndarray) -> bool:
    """Whether the packed model ``wf`` runs blocked here (the rule of ``_supported``, read in Python so
    that asking compiles nothing): the runtime gives other models the generated per-model step_batch."""
    from .ops.record import read_header, read_layer

    head = read_header(wf)
    if head.vocab > 0:
        return False
    for i in range(head.n_layers):
        lay = read_layer(wf, i)
        a0, a1, a2 = (lay.acts[j].code for j in range(3))
        if lay.kind in (K_LSTM, K_GRU, K_RNN):
            if lay.directions != 1 or lay.flags & (F_REVERSE | F_CLIP | F_INPUT_FORGET | F_PEEPHOLE):
                return False
            if lay.kind == K_LSTM and not (a0 == A_SIGMOID and a1 == A_TANH and a2 == A_TANH):
                return False
            if lay.kind == K_GRU and not (a0 == A_SIGMOID and a1 == A_TANH):
                return False
            if lay.kind == K_RNN and a0 not in (A_TANH, A_RELU):
                return False
        elif lay.kind == K_DENSE:
            if a0 not in (A_LINEAR, A_RELU, A_TANH, A_SIGMOID):
                return False
        elif lay.kind != K_ESN:
            return False
    return True


class LazyStepBatch:
    """``step_batch`` compiled on its first call, for exactly the types ``sig`` (then any other argument
    types raise TypeError, as the eagerly compiled entry points do). Compiling the blocked kernel takes
    longer than the single-stream step, so a process that never steps a batch never pays for it; with a
    kernel cache the compiled code is reused by later processes."""

    def __init__(self, sig):
        self._sig = sig
        self._fn = None

    @staticmethod
    def work(wf: np.ndarray) -> np.ndarray:
        """A work buffer for this packed model (allocate once per Streams, pass to every call)."""
        return np.zeros(int(work_size(wf)), np.float32)

    def compile(self):
        """Compile (or load from the kernel cache) now; returns the compiled dispatcher."""
        if self._fn is None:
            if not step_batch.signatures:
                step_batch.compile(self._sig)
            step_batch.disable_compile()
            self._fn = step_batch
        return self._fn

    def __call__(self, X, wf, wb, MB, W=None):
        fn = self._fn
        if fn is None:
            fn = self.compile()
        if W is None:  # a caller without its own buffer (tests, one-off calls): allocate one
            W = self.work(wf)
        return fn(X, wf, wb, MB, W)


__all__ = ["BLK", "LazyStepBatch", "blocked_supported", "step_batch", "work_size"]
