"""PyTorch convolutional front-ends -> ``.ernn`` plan layers (``tconv``, ``affine``), for ``from_torch``.

A ``nn.Conv1d`` over the time axis streams when it is **causal**: output ``t`` reads inputs
``t-(K-1)·d .. t`` only. In PyTorch that is ``nn.Conv1d(padding=0)`` applied to
``F.pad(z, ((K-1)·d, 0))`` (``z``: ``(batch, channels, time)``): the layer becomes a ``tconv`` whose
stream state is the last ``(K-1)·d`` inputs, zeros after ``reset`` — during the first ``(K-1)·d`` steps
``step`` returns what torch returns on the zero-padded start of the sequence. Any other padding is
refused: centred padding (``padding=K//2``, ``'same'``) reads ``(K-1)·d/2`` *future* samples, and
``padding=0`` without the left pad ('valid') drops the first ``(K-1)·d`` outputs, so the layers after it
see a sequence shorter than the stream.

``nn.BatchNorm1d`` (eval mode: running statistics) directly after a convolution or ``nn.Linear`` with no
activation in between is folded into its weights; elsewhere it is an ``affine`` layer
(``y = x·scale + shift`` per channel). ``nn.LayerNorm`` over the features (the last axis of
``(batch, time, features)``) is a ``layernorm`` layer.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from ..kernels.ops.tconv import causal_fix, causal_refusal
from .from_torch import UnsupportedModuleError, _act_fn, _np


def bn_affine(bn) -> tuple[np.ndarray, np.ndarray]:
    """Eval-mode ``nn.BatchNorm1d`` as ``y = x·scale + shift`` per channel, float64 ``(C,)`` each."""
    if bn.running_mean is None or bn.running_var is None:
        raise UnsupportedModuleError(
            "nn.BatchNorm1d(track_running_stats=False) normalises with the batch's own statistics: "
            "a stream has no batch; train with running statistics"
        )
    var = bn.running_var.detach().double().numpy()
    mean = bn.running_mean.detach().double().numpy()
    scale = 1.0 / np.sqrt(var + bn.eps)
    if bn.affine:
        scale = scale * bn.weight.detach().double().numpy()
        shift = bn.bias.detach().double().numpy() - mean * scale
    else:
        shift = -mean * scale
    return scale, shift


def conv_pads(conv, pad: tuple[int, int] | None, where: str) -> int:
    """Check that ``conv`` (after the explicit ``pad`` (left, right) on time, if any) is causal.

    Returns the history length ``(K-1)·d``; raises :class:`UnsupportedModuleError` saying why not and
    what to change."""
    k, d = int(conv.kernel_size[0]), int(conv.dilation[0])
    hn = (k - 1) * d
    fix = causal_fix(hn)
    if conv.stride[0] != 1 or conv.groups != 1:
        raise UnsupportedModuleError(
            f"{where}: a convolution over time streams with stride 1 and groups=1 "
            f"(got stride {conv.stride[0]}, groups {conv.groups})"
        )
    if conv.padding_mode != "zeros":
        raise UnsupportedModuleError(f"{where}: padding_mode={conv.padding_mode!r}: {fix}")
    if isinstance(conv.padding, str):
        if conv.padding == "same" and hn:
            raise UnsupportedModuleError(
                f"{where}: padding='same' centres the kernel, so output t needs {hn - hn // 2} future "
                f"sample(s): step(x_t) cannot return it. {fix}"
            )
        p = 0
    else:
        p = int(conv.padding[0])
    left, right = (pad or (0, 0))[0] + p, (pad or (0, 0))[1] + p
    why = causal_refusal(left, right, hn)
    if why is not None:
        raise UnsupportedModuleError(f"{where} is not streamable: {why}")
    return hn


def tconv_layer(name: str, conv, pad: tuple[int, int] | None, where: str) -> tuple[dict, dict, Callable]:
    """A causal ``nn.Conv1d`` as a ``tconv`` layer: (layer, tensors, torch stage on (B, T, C))."""
    import torch.nn.functional as F

    hn = conv_pads(conv, pad, where)
    layer = {
        "kind": "tconv",
        "name": name,
        "input_size": int(conv.in_channels),
        "output_size": int(conv.out_channels),
        "in_channels": int(conv.in_channels),
        "out_channels": int(conv.out_channels),
        "kernel_size": int(conv.kernel_size[0]),
        "dilation": int(conv.dilation[0]),
        "activation": "linear",
    }
    tensors = {"W": _np(conv.weight)}
    if conv.bias is not None:
        tensors["b"] = _np(conv.bias)
    pads = pad or (0, 0)

    def stage(x, m=conv, pads=pads):
        return m(F.pad(x.transpose(1, 2), pads)).transpose(1, 2)

    assert hn == (layer["kernel_size"] - 1) * layer["dilation"]
    return layer, tensors, stage


def fold_bn(item: tuple[dict, dict, Callable], bn) -> tuple[dict, dict, Callable]:
    """Fold an eval-mode BatchNorm1d into the preceding linear ``tconv``/``dense`` layer (exact)."""
    layer, tensors, stage = item
    scale, shift = bn_affine(bn)
    w = tensors["W"].astype(np.float64)
    b = tensors.get("b", np.zeros(w.shape[0])).astype(np.float64)
    if w.shape[0] != scale.shape[0]:
        raise UnsupportedModuleError(
            f"nn.BatchNorm1d({scale.shape[0]}) after a layer of {w.shape[0]} channels"
        )
    shape = (-1,) + (1,) * (w.ndim - 1)
    tensors = dict(tensors, W=(w * scale.reshape(shape)).astype(np.float32))
    tensors["b"] = (b * scale + shift).astype(np.float32)
    if layer["kind"] == "tconv":  # stage inputs/outputs are (B, T, C): BN over C

        def folded(x, f=stage, m=bn):
            return m(f(x).transpose(1, 2)).transpose(1, 2)
    else:

        def folded(x, f=stage, m=bn):
            y = f(x)
            return m(y.transpose(1, 2)).transpose(1, 2) if y.dim() == 3 else m(y)

    return layer, tensors, folded


def affine_layer(name: str, size: int, bn) -> tuple[dict, dict, Callable]:
    """An eval-mode BatchNorm1d that cannot be folded: an ``affine`` layer over the features."""
    scale, shift = bn_affine(bn)
    if scale.shape[0] != size:
        raise UnsupportedModuleError(f"nn.BatchNorm1d({scale.shape[0]}) on {size} features")
    layer = {"kind": "affine", "name": name, "input_size": size, "output_size": size}
    tensors = {"scale": scale.astype(np.float32), "shift": shift.astype(np.float32)}
    return layer, tensors, lambda x, m=bn: m(x.transpose(1, 2)).transpose(1, 2)


def with_activation(item: tuple[dict, dict, Callable], act: str) -> tuple[dict, dict, Callable]:
    """Fuse an activation into a linear ``tconv`` layer."""
    layer, tensors, stage = item
    f = _act_fn(act)
    return dict(layer, activation=act), tensors, lambda x, s=stage, f=f: f(s(x))


def layernorm_layer(name: str, size: int, ln) -> tuple[dict, dict, Callable]:
    """``nn.LayerNorm(size)`` over the last axis of ``(batch, time, size)``: a ``layernorm`` layer."""
    if tuple(ln.normalized_shape) != (size,):
        raise UnsupportedModuleError(
            f"nn.LayerNorm{tuple(ln.normalized_shape)} on {size} features: only a LayerNorm over the "
            "feature axis (normalized_shape=(features,)) of (batch, time, features) streams"
        )
    layer = {"kind": "layernorm", "name": name, "input_size": size, "output_size": size, "size": size}
    layer["epsilon"] = float(ln.eps)
    w = _np(ln.weight) if ln.weight is not None else np.ones(size, np.float32)
    tensors = {"scale": w}
    if getattr(ln, "bias", None) is not None:
        tensors["bias"] = _np(ln.bias)
    return layer, tensors, lambda x, m=ln: m(x)
