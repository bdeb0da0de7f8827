"""The plan interpreter: one jitted call runs a whole model for one step, n streams, or a sequence.

Entry points (all return a status: 0 ok, else ``ST_*`` — in batch mode ``code | row << 3``; inputs are
checked before any state is touched, so a rejected call leaves every stream as it was):

* ``step(x, wf, wb, M)``: x (I,) float32 → the model output at ``M[out_off:out_off+O]``.
* ``step_batch(X, wf, wb, MB)``: X (n, I), MB (n, len(M)): n independent streams, one call.
* unless the model was loaded with ``nonfinite="propagate"``, a step (or sequence) that leaves NaN/Inf in
  the state or the output although its input was finite returns ``ST_OVERFLOW`` with the state restored
  from a backup copy kept at the end of M.
* ``seq(X, wf, wb, M, Y, buf)``: X (T, I) → Y (T, O), layer by layer over the whole sequence (the only
  mode for reverse and bidirectional layers); continues the state in M (forward directions).
"""

from __future__ import annotations

import math

from .attention import attention_update
from .config import njit
from .dense import (
    activation_apply,
    affine_apply,
    dense_apply,
    embedding_apply,
    normalize_apply,
    onehot_apply,
)
from .esn import esn_cell
from .gru import gru_cell
from .guard import all_finite
from .layout import (
    F_EXTENDED,
    F_REVERSE,
    H_FLAGS,
    H_IN,
    H_NIN,
    H_NLAYERS,
    H_NOUT,
    H_NSTATE,
    H_OUT,
    H_SEQW,
    H_VOCAB,
    HEADER,
    K_ACTIVATION,
    K_AFFINE,
    K_ATTENTION,
    K_DENSE,
    K_EMBEDDING,
    K_ESN,
    K_GRU,
    K_LSTM,
    K_NORMALIZE,
    K_ONEHOT,
    K_RNN,
    R_D,
    R_FLAGS,
    R_H,
    R_IN,
    R_KIND,
    R_NIN,
    R_NOUT,
    R_OUT,
    R_SCR,
    R_ST,
    REC,
)
from .linalg import off2, vec
from .lstm import lstm_cell
from .rnn import rnn_cell

ST_OK = 0
ST_SIZE = 1
ST_NONFINITE = 2
ST_TOKEN = 3
ST_OVERFLOW = 4  # a finite input drove the state or output to NaN/Inf; the state was restored

_GATES = (0, 0, 0, 0, 0, 1, 4, 5)  # scratch gate rows per hidden unit, by kind (rnn 1, lstm 4, gru 5)


@njit
def _check(x, wf):
    if x.shape[0] != int(wf[H_NIN]):
        return ST_SIZE
    vocab = int(wf[H_VOCAB])
    if vocab > 0:
        t = x[0]
        if not (t >= 0.0 and t < vocab and t == math.floor(t)):
            return ST_TOKEN
        return ST_OK
    if int(wf[H_FLAGS]) & 1:
        return ST_OK
    for k in range(x.shape[0]):
        if not math.isfinite(x[k]):
            return ST_NONFINITE
    return ST_OK


@njit
def _layer_step(wf, wb, rec, M, xin, out):
    """Run the layer whose record starts at ``rec`` for one step on the stream buffer M."""
    kind = int(wf[rec + R_KIND])
    st = off2(wf, rec + R_ST)
    scr = off2(wf, rec + R_SCR)
    H = int(wf[rec + R_H])
    nin = xin.shape[0]
    if kind == K_LSTM:
        lstm_cell(
            wf,
            wb,
            rec,
            0,
            xin,
            M[st : st + H],
            M[st + H : st + 2 * H],
            M[scr : scr + 5 * H],
            M[scr + 5 * H : scr + 6 * H + nin],
        )
        for k in range(H):
            out[k] = M[st + k]
    elif kind == K_GRU:
        gru_cell(
            wf, wb, rec, 0, xin, M[st : st + H], M[scr : scr + 5 * H], M[scr + 5 * H : scr + 6 * H + nin]
        )
        for k in range(H):
            out[k] = M[st + k]
    elif kind == K_RNN:
        rnn_cell(wf, wb, rec, 0, xin, M[st : st + H], M[scr : scr + H], M[scr + H : scr + 2 * H + nin])
        for k in range(H):
            out[k] = M[st + k]
    elif kind == K_DENSE:
        dense_apply(wf, wb, rec, xin, out)
    elif kind == K_ESN:
        esn_cell(wf, wb, rec, xin, M[st : st + H], M[scr : scr + H], out)
        if not (int(wf[rec + R_FLAGS]) & F_EXTENDED):
            for k in range(H):
                out[k] = M[st + k]
    elif kind == K_ATTENTION:
        attention_update(wf, wb, rec, xin, M[st : st + nin + 2], M[scr : scr + H], out)
    elif kind == K_NORMALIZE:
        normalize_apply(wf, rec, xin, out)
    elif kind == K_AFFINE:
        affine_apply(wf, rec, xin, out)
    elif kind == K_ACTIVATION:
        activation_apply(wf, rec, xin, out)
    elif kind == K_EMBEDDING:
        embedding_apply(wf, wb, rec, xin, out)
    elif kind == K_ONEHOT:
        onehot_apply(xin, out)


@njit
def _run_step(x, wf, wb, M):
    nl = int(wf[H_NLAYERS])
    i0 = off2(wf, H_IN)
    n = x.shape[0]
    for k in range(n):
        M[i0 + k] = x[k]
    for l in range(nl):
        rec = HEADER + l * REC
        io = off2(wf, rec + R_IN)
        oo = off2(wf, rec + R_OUT)
        _layer_step(wf, wb, rec, M, M[io : io + int(wf[rec + R_NIN])], M[oo : oo + int(wf[rec + R_NOUT])])


@njit
def _guarded(wf):
    """Whether the overflow guard is on (nonfinite='raise', the default)."""
    return (int(wf[H_FLAGS]) & 1) == 0


@njit
def _backup(wf, M):
    """Copy the state to the backup region at the end of M."""
    ns = off2(wf, H_NSTATE)
    b0 = M.shape[0] - ns
    for k in range(ns):
        M[b0 + k] = M[k]


@njit
def _restore(wf, M):
    ns = off2(wf, H_NSTATE)
    b0 = M.shape[0] - ns
    for k in range(ns):
        M[k] = M[b0 + k]


_all_finite = all_finite


@njit
def _state_out_finite(wf, M):
    o = off2(wf, H_OUT)
    return _all_finite(M[0 : off2(wf, H_NSTATE)]) and _all_finite(M[o : o + int(wf[H_NOUT])])


@njit
def step(x, wf, wb, M):
    """Advance one stream by one step; see the module doc."""
    st = _check(x, wf)
    if st != ST_OK:
        return st
    if _guarded(wf):
        _backup(wf, M)
        _run_step(x, wf, wb, M)
        if not _state_out_finite(wf, M):
            _restore(wf, M)
            return ST_OVERFLOW
        return ST_OK
    _run_step(x, wf, wb, M)
    return ST_OK


@njit
def step_batch(X, wf, wb, MB):
    """Advance n streams (rows of MB) by one step each with the rows of X; see the module doc."""
    n = X.shape[0]
    if n != MB.shape[0]:
        return ST_SIZE
    for i in range(n):
        st = _check(X[i], wf)
        if st != ST_OK:
            return st | (i << 3)
    guard = _guarded(wf)
    for i in range(n):
        if guard:
            _backup(wf, MB[i])
        _run_step(X[i], wf, wb, MB[i])
        if guard and not _state_out_finite(wf, MB[i]):
            for j in range(i + 1):
                _restore(wf, MB[j])
            return ST_OVERFLOW | (i << 3)
    return ST_OK


@njit
def _seq_recurrent(wf, wb, rec, M, src, dst, T, W, tmp):
    """A recurrent layer over the whole sequence: src/dst hold T rows of width W."""
    kind = int(wf[rec + R_KIND])
    H = int(wf[rec + R_H])
    D = int(wf[rec + R_D])
    nin = int(wf[rec + R_NIN])
    st = off2(wf, rec + R_ST)
    scr = off2(wf, rec + R_SCR)
    rev_flag = int(wf[rec + R_FLAGS]) & F_REVERSE
    for d in range(D):
        reverse = d == 1 or rev_flag != 0
        if reverse:  # not a streamable direction: fresh state from the initial-state slots
            h = tmp[0:H]
            c = tmp[H : 2 * H]
            h0 = vec(wf, rec, 4 + d, H)
            for k in range(H):
                h[k] = h0[k]
            if kind == K_LSTM:
                c0 = vec(wf, rec, 6 + d, H)
                for k in range(H):
                    c[k] = c0[k]
        else:
            h = M[st : st + H]
            c = M[st + H : st + 2 * H]
        for i in range(T):
            t = T - 1 - i if reverse else i
            x = src[t * W : t * W + nin]
            if kind == K_LSTM:
                lstm_cell(wf, wb, rec, d, x, h, c, M[scr : scr + 5 * H], M[scr + 5 * H : scr + 6 * H + nin])
            elif kind == K_GRU:
                gru_cell(wf, wb, rec, d, x, h, M[scr : scr + 5 * H], M[scr + 5 * H : scr + 6 * H + nin])
            else:
                rnn_cell(wf, wb, rec, d, x, h, M[scr : scr + H], M[scr + H : scr + 2 * H + nin])
            o = t * W + d * H
            for k in range(H):
                dst[o + k] = h[k]


@njit
def seq(X, wf, wb, M, Y, buf):
    """Run a sequence X (T, I) through the model into Y (T, O); see the module doc."""
    T = X.shape[0]
    for t in range(T):
        st = _check(X[t], wf)
        if st != ST_OK:
            return st | (t << 3)
    W = int(wf[H_SEQW])
    nl = int(wf[H_NLAYERS])
    guard = _guarded(wf)
    if guard:
        _backup(wf, M)
    a = buf[0 : T * W]
    b = buf[T * W : 2 * T * W]
    tmp = buf[2 * T * W :]
    nin0 = X.shape[1]
    for t in range(T):
        for k in range(nin0):
            a[t * W + k] = X[t, k]
    for l in range(nl):
        rec = HEADER + l * REC
        kind = int(wf[rec + R_KIND])
        nin = int(wf[rec + R_NIN])
        nout = int(wf[rec + R_NOUT])
        if kind == K_LSTM or kind == K_GRU or kind == K_RNN:
            _seq_recurrent(wf, wb, rec, M, a, b, T, W, tmp)
        else:
            for t in range(T):
                _layer_step(wf, wb, rec, M, a[t * W : t * W + nin], b[t * W : t * W + nout])
        a, b = b, a
    nout = Y.shape[1]
    for t in range(T):
        for k in range(nout):
            Y[t, k] = a[t * W + k]
    if guard:
        for t in range(T):
            if not _all_finite(Y[t]):
                _restore(wf, M)
                return ST_OVERFLOW | (t << 3)
        if not _all_finite(M[0 : off2(wf, H_NSTATE)]):
            _restore(wf, M)
            return ST_OVERFLOW | ((T - 1) << 3)
    return ST_OK
