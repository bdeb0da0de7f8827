"""LSTM cell with ONNX semantics (gate order i, o, f, c; optional peepholes, input_forget, clip)::

    i = f(clip(Wi x + Ri h + Pi⊙c + bi))      f_ = 1 − i if input_forget else f(clip(Wf x + Rf h + Pf⊙c + bf))
    c̃ = g(clip(Wc x + Rc h + bc))             c ← f_⊙c + i⊙c̃
    o = f(clip(Wo x + Ro h + Po⊙c + bo))      h ← o⊙h_(c)

with b = Wb + Rb, f = sigmoid, g = h_ = tanh by default (any ONNX activation with alpha/beta). The
default configuration runs one fused, vectorized loop; anything else goes through the general path.
"""

from __future__ import annotations

import numpy as np

from .activations import A_SIGMOID, A_TANH, activate_vec, clip_vec, fast_sigmoid, fast_tanh
from .config import kernel
from .layout import F_CLIP, F_INPUT_FORGET, F_PEEPHOLE, R_FLAGS, R_H
from .linalg import vec
from .recurrent import act_params, clip_value, gates_acc, load_xh

_ONE = np.float32(1.0)


@kernel
def lstm_cell(wf, wb, rec, d, x, h, c, g, xh):
    """One step of direction ``d``: x (I,), h and c (H,) updated in place; g (5H,), xh (I+H,) scratch."""
    H = int(wf[rec + R_H])
    flags = int(wf[rec + R_FLAGS])
    b = vec(wf, rec, d, 4 * H)
    for k in range(4 * H):
        g[k] = b[k]
    load_xh(x, h, xh)
    gates_acc(wf, wb, rec, d, 0, 4 * H, x, h, xh, g)
    fc, fa, fb = act_params(wf, rec, d, 0)
    gc, ga, gb = act_params(wf, rec, d, 1)
    hc, ha, hb = act_params(wf, rec, d, 2)
    special = flags & (F_CLIP | F_INPUT_FORGET | F_PEEPHOLE)
    if special == 0 and fc == A_SIGMOID and gc == A_TANH and hc == A_TANH:
        # simple in-place passes: each vectorizes (one fused loop over five slices of M does not)
        s3 = g[0 : 3 * H]
        for k in range(3 * H):
            s3[k] = fast_sigmoid(s3[k])
        gg = g[3 * H : 4 * H]
        t = g[4 * H : 5 * H]
        for k in range(H):
            gg[k] = fast_tanh(gg[k])
        for k in range(H):
            t[k] = g[2 * H + k] * c[k] + g[k] * gg[k]
        for k in range(H):
            c[k] = t[k]
        for k in range(H):
            t[k] = fast_tanh(t[k])
        for k in range(H):
            h[k] = g[H + k] * t[k]
        return
    clip = clip_value(wf, rec)
    do_clip = flags & F_CLIP
    gi = g[0:H]
    go = g[H : 2 * H]
    gf = g[2 * H : 3 * H]
    gg = g[3 * H : 4 * H]
    t = g[4 * H : 5 * H]
    if flags & F_PEEPHOLE:
        P = vec(wf, rec, 2 + d, 3 * H)
        for k in range(H):
            gi[k] += P[k] * c[k]
            gf[k] += P[2 * H + k] * c[k]
    if do_clip:
        clip_vec(gi, clip)
        clip_vec(gf, clip)
        clip_vec(gg, clip)
    activate_vec(fc, gi, fa, fb)
    if flags & F_INPUT_FORGET:
        for k in range(H):
            gf[k] = _ONE - gi[k]
    else:
        activate_vec(fc, gf, fa, fb)
    activate_vec(gc, gg, ga, gb)
    for k in range(H):
        c[k] = gf[k] * c[k] + gi[k] * gg[k]
    if flags & F_PEEPHOLE:
        P = vec(wf, rec, 2 + d, 3 * H)
        for k in range(H):
            go[k] += P[H + k] * c[k]
    if do_clip:
        clip_vec(go, clip)
    activate_vec(fc, go, fa, fb)
    for k in range(H):
        t[k] = c[k]
    activate_vec(hc, t, ha, hb)
    for k in range(H):
        h[k] = go[k] * t[k]
