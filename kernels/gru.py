"""GRU cell with ONNX semantics (gate order z, r, h), both ``linear_before_reset`` conventions::

z = f(clip(Wz x + Rz h + Wbz + Rbz))      r = f(clip(Wr x + Rr h + Wbr + Rbr))
lbr = 0 (ONNX default):  h̃ = g(clip(Wh x + Rh (r⊙h) + Rbh + Wbh))
lbr = 1 (PyTorch):       h̃ = g(clip(Wh x + r⊙(Rh h + Rbh) + Wbh))
h ← (1 − z)⊙h̃ + z⊙h
"""

from __future__ import annotations

import numpy as np

from .activations import A_SIGMOID, A_TANH, activate_vec, clip_vec, fast_tanh
from .config import kernel
from .layout import F_CLIP, F_LBR, R_FLAGS, R_H
from .linalg import vec
from .recurrent import act_params, clip_value, gates_acc, h_part_acc, load_xh, x_part_acc

_ONE = np.float32(1.0)


@kernel
def gru_cell(wf, wb, rec, d, x, h, g, xh):
    """One step of direction ``d``: x (I,), h (H,) updated in place; g (5H,), xh (I+H,) scratch."""
    H = int(wf[rec + R_H])
    nin = x.shape[0]
    flags = int(wf[rec + R_FLAGS])
    do_clip = flags & F_CLIP
    clip = clip_value(wf, rec)
    wbias = vec(wf, rec, d, 3 * H)
    rbias = vec(wf, rec, 2 + d, 3 * H)
    zr = g[0 : 2 * H]
    for k in range(2 * H):
        zr[k] = wbias[k] + rbias[k]
    load_xh(x, h, xh)
    gates_acc(wf, wb, rec, d, 0, 2 * H, x, h, xh, zr)  # z, r pre-activations
    fc, fa, fb = act_params(wf, rec, d, 0)
    gc, ga, gb = act_params(wf, rec, d, 1)
    if do_clip:
        clip_vec(zr, clip)
    activate_vec(fc, zr, fa, fb)
    xs = g[2 * H : 3 * H]  # Wh x + Wbh
    rs = g[3 * H : 4 * H]  # recurrent part of the candidate
    for k in range(H):
        xs[k] = wbias[2 * H + k]
    x_part_acc(wf, wb, rec, d, 2 * H, H, x, xs)
    if flags & F_LBR:
        for k in range(H):
            rs[k] = rbias[2 * H + k]
        h_part_acc(wf, wb, rec, d, 2 * H, H, nin, h, rs)
        for k in range(H):
            rs[k] *= zr[H + k]
    else:
        rh = g[4 * H : 5 * H]
        for k in range(H):
            rh[k] = zr[H + k] * h[k]
            rs[k] = rbias[2 * H + k]
        h_part_acc(wf, wb, rec, d, 2 * H, H, nin, rh, rs)
    for k in range(H):
        xs[k] += rs[k]
    if gc == A_TANH and not do_clip and fc == A_SIGMOID:
        for k in range(H):
            z = zr[k]
            h[k] = (_ONE - z) * fast_tanh(xs[k]) + z * h[k]
        return
    if do_clip:
        clip_vec(xs, clip)
    activate_vec(gc, xs, ga, gb)
    for k in range(H):
        z = zr[k]
        h[k] = (_ONE - z) * xs[k] + z * h[k]
