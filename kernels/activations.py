"""Activation functions for the kernels: vectorizable, branch-free, NaN-propagating.

``fast_tanh`` is a clamped rational approximation (odd degree-13 numerator over even degree-6
denominator, the minimax fit used by Eigen) evaluated in float32. Its error against float64
``tanh`` over every float32 input, ±Inf included, is at most ``TANH_MAX_ABS_ERROR``;
``fast_sigmoid(x) = 0.5 + 0.5·fast_tanh(x/2)`` is within ``SIGMOID_MAX_ABS_ERROR``. NaN in gives NaN
out: the clamp is written with comparisons that are false for NaN, and the kernels are compiled
without the ``nnan``/``ninf`` fast-math flags.

Activation codes are the indices in :data:`edgernn.artifact.ACTIVATIONS` (ONNX's names, lower case).
"""

from __future__ import annotations

import math

import numpy as np

from .config import inline, kernel

#: stated bounds, checked by tests/test_activations.py over the whole float32 range
TANH_MAX_ABS_ERROR = 6e-7
SIGMOID_MAX_ABS_ERROR = 3e-7

A_LINEAR = 0
A_RELU = 1
A_TANH = 2
A_SIGMOID = 3
A_SOFTMAX = 4
A_LEAKY_RELU = 5
A_AFFINE = 6
A_THRESHOLDED_RELU = 7
A_SCALED_TANH = 8
A_HARD_SIGMOID = 9
A_ELU = 10
A_SOFTSIGN = 11
A_SOFTPLUS = 12

_CLAMP = np.float32(7.90531110763549805)
_A1 = np.float32(4.89352455891786e-03)
_A3 = np.float32(6.37261928875436e-04)
_A5 = np.float32(1.48572235717979e-05)
_A7 = np.float32(5.12229709037114e-08)
_A9 = np.float32(-8.60467152213735e-11)
_A11 = np.float32(2.00018790482477e-13)
_A13 = np.float32(-2.76076847742355e-16)
_B0 = np.float32(4.89352518554385e-03)
_B2 = np.float32(2.26843463243900e-03)
_B4 = np.float32(1.18534705686654e-04)
_B6 = np.float32(1.19825839466702e-06)
_HALF = np.float32(0.5)
_ONE = np.float32(1.0)
_ZERO = np.float32(0.0)


@inline
def fast_tanh(x):
    """tanh(x) for a float32 scalar; |error| <= TANH_MAX_ABS_ERROR, NaN -> NaN, ±Inf -> ±1."""
    if x > _CLAMP:
        x = _CLAMP
    if x < -_CLAMP:
        x = -_CLAMP
    x2 = x * x
    p = x2 * _A13 + _A11
    p = p * x2 + _A9
    p = p * x2 + _A7
    p = p * x2 + _A5
    p = p * x2 + _A3
    p = p * x2 + _A1
    p = p * x
    q = x2 * _B6 + _B4
    q = q * x2 + _B2
    q = q * x2 + _B0
    return p / q


@inline
def fast_sigmoid(x):
    """1/(1+exp(-x)) for a float32 scalar; |error| <= SIGMOID_MAX_ABS_ERROR, NaN -> NaN."""
    return _HALF + _HALF * fast_tanh(_HALF * x)


@inline
def _elu(x, alpha):
    return alpha * np.float32(math.expm1(x)) if x < _ZERO else x


@inline
def _hard_sigmoid(x, alpha, beta):
    y = alpha * x + beta
    if y > _ONE:
        y = _ONE
    if y < _ZERO:
        y = _ZERO
    return y


@inline
def _softplus(x):
    if x > np.float32(20.0):
        return x
    return np.float32(math.log1p(math.exp(x)))


@kernel
def activate_vec(code, v, alpha, beta):
    """Apply ONNX activation ``code`` to the float32 vector ``v`` in place (softmax over the vector).

    One loop per code, so the common ones (tanh, sigmoid, relu) vectorize.
    """
    n = v.shape[0]
    if code == A_LINEAR:
        return
    if code == A_TANH:
        for k in range(n):
            v[k] = fast_tanh(v[k])
    elif code == A_SIGMOID:
        for k in range(n):
            v[k] = fast_sigmoid(v[k])
    elif code == A_RELU:
        for k in range(n):
            x = v[k]
            v[k] = _ZERO if x < _ZERO else x
    elif code == A_SOFTMAX:
        m = v[0]
        for k in range(1, n):
            if v[k] > m or v[k] != v[k]:
                m = v[k]
        s = np.float32(0.0)
        for k in range(n):
            e = np.float32(math.exp(v[k] - m))
            v[k] = e
            s += e
        inv = _ONE / s
        for k in range(n):
            v[k] *= inv
    elif code == A_LEAKY_RELU:
        for k in range(n):
            x = v[k]
            v[k] = x * alpha if x < _ZERO else x
    elif code == A_AFFINE:
        for k in range(n):
            v[k] = alpha * v[k] + beta
    elif code == A_THRESHOLDED_RELU:
        for k in range(n):  # ONNX/ORT: x if x > alpha else 0 (so NaN -> 0)
            x = v[k]
            v[k] = x if x > alpha else _ZERO
    elif code == A_SCALED_TANH:
        for k in range(n):
            v[k] = alpha * fast_tanh(beta * v[k])
    elif code == A_HARD_SIGMOID:
        for k in range(n):
            x = alpha * v[k] + beta
            if x > _ONE:
                x = _ONE
            if x < _ZERO:
                x = _ZERO
            v[k] = x
    elif code == A_ELU:
        for k in range(n):
            v[k] = _elu(v[k], alpha)
    elif code == A_SOFTSIGN:
        for k in range(n):
            x = v[k]
            v[k] = x / (_ONE + abs(x))
    elif code == A_SOFTPLUS:
        for k in range(n):
            v[k] = _softplus(v[k])


@kernel
def clip_vec(v, clip):
    """Clamp every value of ``v`` to [-clip, clip] in place (NaN stays NaN)."""
    for k in range(v.shape[0]):
        x = v[k]
        if x > clip:
            x = clip
        if x < -clip:
            x = -clip
        v[k] = x
