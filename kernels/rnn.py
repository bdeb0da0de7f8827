"""Vanilla RNN cell (ONNX ``RNN``): h ← f(clip(W·x + R·h + Wb + Rb)), f = tanh, relu or any ONNX act."""

from __future__ import annotations

from .activations import activate_vec, clip_vec
from .config import kernel
from .layout import F_CLIP, R_FLAGS, R_H
from .linalg import vec
from .recurrent import act_params, clip_value, gates_acc, load_xh


@kernel
def rnn_cell(wf, wb, rec, d, x, h, g, xh):
    """One step of direction ``d``: x (I,), h (H,) updated in place; g (H,), xh (I+H,) scratch."""
    H = int(wf[rec + R_H])
    b = vec(wf, rec, d, H)
    for k in range(H):
        g[k] = b[k]
    load_xh(x, h, xh)
    gates_acc(wf, wb, rec, d, 0, H, x, h, xh, g)
    if int(wf[rec + R_FLAGS]) & F_CLIP:
        clip_vec(g, clip_value(wf, rec))
    code, alpha, beta = act_params(wf, rec, d, 0)
    activate_vec(code, g, alpha, beta)
    for k in range(H):
        h[k] = g[k]
