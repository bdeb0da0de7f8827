"""The kernels' fast tanh/sigmoid against float64 references over the whole float32 range."""

from __future__ import annotations

import numpy as np
import pytest
from edgernn.kernels import activations as A


def _apply(code, x, out):
    out[:] = x
    A.activate_vec(code, out, np.float32(0.0), np.float32(0.0))


def _all_floats(step: int) -> np.ndarray:
    """Every ``step``-th float32 bit pattern (both signs, denormals, ±Inf, NaN included)."""
    bits = np.arange(0, 1 << 32, step, dtype=np.uint64).astype(np.uint32)
    specials = np.array(
        [0.0, -0.0, np.inf, -np.inf, np.nan, 1e-45, -1e-45, 7.9053111, -7.9053111], np.float32
    )
    return np.concatenate([bits.view(np.float32), specials])


@pytest.mark.parametrize(
    "code,ref,bound",
    [
        (A.A_TANH, np.tanh, A.TANH_MAX_ABS_ERROR),
        (A.A_SIGMOID, lambda x: 0.5 * (1 + np.tanh(0.5 * x)), A.SIGMOID_MAX_ABS_ERROR),
    ],
)
def test_fast_activation_error_bound_over_float_range(code, ref, bound):
    x = _all_floats(step=997)  # ~4.3 M values spread over every exponent; the slow test covers all
    out = np.empty_like(x)
    _apply(code, x, out)
    expected = ref(x.astype(np.float64))
    nan = np.isnan(x)
    assert np.all(np.isnan(out[nan])), "NaN must propagate"
    err = np.abs(out[~nan].astype(np.float64) - expected[~nan])
    assert err.max() <= bound, f"max error {err.max():.3g} at x={x[~nan][np.argmax(err)]!r}"
    assert out[x == np.inf][0] == pytest.approx(1.0, abs=bound)
    lo = -1.0 if code == A.A_TANH else 0.0
    assert out[x == -np.inf][0] == pytest.approx(lo, abs=bound)
    assert np.all(np.isfinite(out[~nan]))


@pytest.mark.slow
@pytest.mark.parametrize(
    "code,bound", [(A.A_TANH, A.TANH_MAX_ABS_ERROR), (A.A_SIGMOID, A.SIGMOID_MAX_ABS_ERROR)]
)
def test_fast_activation_every_float(code, bound):
    for start in range(0, 1 << 32, 1 << 24):  # 16 M values a chunk: ~0.5 GB of temporaries
        bits = np.arange(start, start + (1 << 24), dtype=np.uint64).astype(np.uint32)
        x = bits.view(np.float32)
        out = np.empty_like(x)
        _apply(code, x, out)
        xd = x.astype(np.float64)
        ref = np.tanh(xd) if code == A.A_TANH else 0.5 * (1 + np.tanh(0.5 * xd))
        ok = np.isnan(x)
        assert np.all(np.isnan(out[ok]))
        assert np.abs(out[~ok] - ref[~ok]).max() <= bound


@pytest.mark.parametrize(
    "name,code,alpha,beta",
    [
        ("relu", A.A_RELU, 0.0, 0.0),
        ("leaky_relu", A.A_LEAKY_RELU, 0.1, 0.0),
        ("affine", A.A_AFFINE, 0.7, -0.2),
        ("thresholded_relu", A.A_THRESHOLDED_RELU, 0.5, 0.0),
        ("scaled_tanh", A.A_SCALED_TANH, 1.5, 0.5),
        ("hard_sigmoid", A.A_HARD_SIGMOID, 0.2, 0.5),
        ("elu", A.A_ELU, 0.9, 0.0),
        ("softsign", A.A_SOFTSIGN, 0.0, 0.0),
        ("softplus", A.A_SOFTPLUS, 0.0, 0.0),
    ],
)
def test_onnx_activations_match_reference(name, code, alpha, beta):
    from reference import act

    x = np.concatenate([np.linspace(-30, 30, 2001), [np.inf, -np.inf, np.nan, 0.0]]).astype(np.float32)
    out = x.copy()
    A.activate_vec(code, out, np.float32(alpha), np.float32(beta))
    ref = act(name, x.astype(np.float64), alpha, beta)
    finite = np.isfinite(ref)
    np.testing.assert_allclose(out[finite], ref[finite], rtol=1e-5, atol=2e-6)
    nan_in = np.isnan(x)
    np.testing.assert_array_equal(np.isnan(out[nan_in]), np.isnan(ref[nan_in]))  # as the ONNX formula


def test_softmax_sums_to_one_and_propagates_nan():
    x = np.array([1000.0, 1.0, -3.0, 999.0], np.float32)
    out = np.empty_like(x)
    _apply(A.A_SOFTMAX, x, out)
    e = np.exp(x.astype(np.float64) - 1000)
    np.testing.assert_allclose(out, e / e.sum(), rtol=1e-5, atol=1e-7)
    x[2] = np.nan
    _apply(A.A_SOFTMAX, x, out)
    assert np.isnan(out).all()
