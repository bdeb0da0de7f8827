"""Calibrated int8 rounding (``export/calibrate.py``): GPTQ-style error compensation on representative data.

Oracles: numpy (the output error ``‖(W − Wq) zᵀ‖²`` computed here from the vectors themselves, nearest
rounding computed here with ``np.rint``) and the float32 numpy reference model (tests/reference.py) run
on held-out sequences that the calibration never saw. PyTorch for the exported-model case.

The data: inputs that live on a low-dimensional manifold, as sensor streams do (a few sinusoids of random
phase mixed into all input channels). On such data the compensated rounding should have a clearly lower
output error than nearest rounding — on the calibration data by construction, on held-out data of the
same process because the error was moved into directions the inputs do not take.
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import builders  # noqa: E402
from edgernn.export.calibrate import gptq_round, rounding_error  # noqa: E402
from edgernn.export.quantize import QuantizationError, quantize_plan  # noqa: E402
from reference import reference_predict  # noqa: E402

import edgernn  # noqa: E402
from edgernn import artifact  # noqa: E402


def sensor_data(rng, batch, steps, size, tones=2, phase_seed=None):
    """(batch, steps, size) float32: ``tones`` sinusoids (random phases per sequence) mixed into ``size``."""
    mix = np.random.default_rng(7).normal(0, 1, (tones, size))  # the same mixing for every call
    freqs = np.linspace(0.07, 0.31, tones)
    t = np.arange(steps)
    ph = (phase_seed or rng).uniform(0, 2 * np.pi, (batch, tones))
    s = np.sin(freqs[None, None, :] * t[None, :, None] + ph[:, None, :])
    return (s @ mix).astype(np.float32)


def rms(a, b):
    return float(np.sqrt(np.mean((np.asarray(a, np.float64) - np.asarray(b, np.float64)) ** 2)))


# ------------------------------------------------------------------ the rounding itself, against numpy


def test_gptq_lowers_the_output_error_on_low_rank_inputs_and_stays_on_the_grid():
    rng = np.random.default_rng(0)
    rows, cols = 24, 40
    W = rng.normal(0, 0.3, (rows, cols))
    Z = rng.normal(0, 1, (500, 3)) @ rng.normal(0, 1, (3, cols))  # inputs in a 3-D subspace
    s = np.abs(W).max(1) / 127
    S = np.repeat(s[:, None], cols, 1)
    q = gptq_round(W, S, Z.T @ Z)
    assert np.array_equal(q, np.rint(q)) and q.min() >= -127 and q.max() <= 127
    q_near = np.clip(np.rint(W / S), -127, 127)
    err_g = float(np.sum(((W - q * S) @ Z.T) ** 2))
    err_n = float(np.sum(((W - q_near * S) @ Z.T) ** 2))
    assert err_g < 0.05 * err_n, (err_g, err_n)
    assert rounding_error(W, q * S, Z.T @ Z) == pytest.approx(err_g, rel=1e-9)
    # held-out vectors of the same subspace: the error stays as low
    Z2 = rng.normal(0, 1, (500, 3)) @ np.linalg.qr(Z.T)[0][:, :3].T * np.linalg.norm(Z) / np.sqrt(500 * 3)
    assert np.sum(((W - q * S) @ Z2.T) ** 2) < 0.05 * np.sum(((W - q_near * S) @ Z2.T) ** 2)


def test_gptq_on_white_inputs_is_nearest_rounding():
    """With uncorrelated inputs of equal energy (H = c·I) there is nothing to compensate into: the
    Cholesky factor of H⁻¹ is diagonal, so every column is rounded to nearest and nothing moves."""
    rng = np.random.default_rng(1)
    W = rng.normal(0, 1, (8, 16))
    S = np.repeat((np.abs(W).max(1) / 127)[:, None], 16, 1)
    q = gptq_round(W, S, 3.0 * np.eye(16))
    assert np.array_equal(q, np.clip(np.rint(W / S), -127, 127))


def test_gptq_leaves_columns_without_input_energy_at_nearest_rounding():
    rng = np.random.default_rng(2)
    W = rng.normal(0, 1, (6, 10))
    Z = rng.normal(0, 1, (200, 10))
    Z[:, [3, 7]] = 0.0  # two inputs never move in the calibration data
    S = np.repeat((np.abs(W).max(1) / 127)[:, None], 10, 1)
    q = gptq_round(W, S, Z.T @ Z)
    near = np.clip(np.rint(W / S), -127, 127)
    assert np.array_equal(q[:, [3, 7]], near[:, [3, 7]])


@pytest.mark.parametrize("direction", ["forward", "reverse", "bidirectional"])
def test_the_vectors_a_recurrent_layer_multiplies_reproduce_its_outputs(direction):
    """For an ONNX RNN cell (tanh), y_t = tanh([W | R]·[x_t; h_prev] + Wb + Rb) per direction: the
    calibration vectors must be exactly those [x_t; h_prev] (reverse: h_prev is the step t + 1, the
    first one initial_h)."""
    from edgernn.export.calibrate import layer_activations, matrix_groups

    rng = np.random.default_rng(6)
    layer, t = builders.recurrent(rng, "rnn", "r", 3, 5, direction=direction, initial_h=True)
    plan, tensors = builders.model([(layer, t)], 3)
    x = sensor_data(rng, 2, 9, 3)
    X, Y = layer_activations(plan, tensors, x)["r"]
    ref = np.stack([reference_predict(plan, tensors, xi) for xi in x])
    np.testing.assert_allclose(Y, ref, atol=2e-6)
    groups = matrix_groups(plan["layers"][0], tensors, X, Y)
    assert len(groups) == (2 if direction == "bidirectional" else 1)
    for roles, d, Z in groups:
        assert roles == ("W", "R")
        WR = np.concatenate([tensors["r.W"][d], tensors["r.R"][d]], 1).astype(np.float64)
        B = tensors["r.B"][d].astype(np.float64)
        y = np.tanh(Z @ WR.T + B[:5] + B[5:]).reshape(2, 9, 5)
        np.testing.assert_allclose(y, ref[..., d * 5 : (d + 1) * 5], atol=2e-6)


# ------------------------------------------------------------------ whole models, held-out data

CASES = {
    "lstm": lambda rng: [builders.recurrent(rng, "lstm", "l0", 6, 24), builders.dense(rng, "d", 24, 3)],
    "gru": lambda rng: [
        builders.recurrent(rng, "gru", "l0", 6, 24, linear_before_reset=1),
        builders.dense(rng, "d", 24, 3),
    ],
    "gru_lbr0": lambda rng: [builders.recurrent(rng, "gru", "l0", 6, 24), builders.dense(rng, "d", 24, 3)],
    "rnn": lambda rng: [builders.recurrent(rng, "rnn", "l0", 6, 24), builders.dense(rng, "d", 24, 3)],
    "lstm_bidirectional_stacked": lambda rng: [
        builders.recurrent(rng, "lstm", "l0", 6, 16, direction="bidirectional", initial_h=True),
        builders.recurrent(rng, "gru", "l1", 32, 16, direction="reverse", linear_before_reset=1),
        builders.dense(rng, "d", 16, 2),
    ],
    "esn_dense": lambda rng: [builders.esn(rng, "e", 6, 40, leak=0.5), builders.dense(rng, "d", 40, 2)],
    "attention": lambda rng: [
        builders.recurrent(rng, "gru", "l0", 6, 16, linear_before_reset=1),
        builders.attention(rng, "a", 16, 8),
        builders.dense(rng, "d", 16, 2),
    ],
}


@pytest.mark.parametrize("case", sorted(CASES))
def test_calibrated_int8_beats_nearest_on_held_out_sequences(case, tmp_path):
    rng = np.random.default_rng(10)
    plan, tensors = builders.model(CASES[case](rng), 6)
    cal = sensor_data(rng, 24, 60, 6)
    held_out = sensor_data(rng, 8, 60, 6)
    ref = np.stack([reference_predict(plan, tensors, x) for x in held_out])

    near_plan, near_t = quantize_plan(plan, tensors, "int8")
    cal_plan, cal_t = quantize_plan(plan, tensors, "int8", calibration=cal)
    info = cal_plan["quantization_rounding"]
    assert info["method"] == "gptq" and info["calibration_vectors"] == 24 * 60
    assert all(v == "gptq" for v in info["matrices"].values()), info
    assert near_plan["quantization_rounding"] == {"method": "nearest", "calibration_vectors": 0}

    outs = {}
    for tag, (p, t) in {"nearest": (near_plan, near_t), "calibrated": (cal_plan, cal_t)}.items():
        # the int8 file holds the same per-row scales either way (the grid does not change)
        for name in t:
            if name.endswith("_scale"):
                np.testing.assert_array_equal(t[name], near_t[name])
        path = str(tmp_path / f"{tag}.ernn")
        artifact.write(path, p, t)
        y = edgernn.load(path).predict(held_out)
        # the runtime's int8 kernels compute the dequantized model (the numpy reference reads q·scale)
        deq = np.stack([reference_predict(p, t, x) for x in held_out])
        np.testing.assert_allclose(y, deq, atol=2e-5, rtol=1e-4)
        outs[tag] = y
    e_near, e_cal = rms(outs["nearest"], ref), rms(outs["calibrated"], ref)
    assert e_cal < 0.7 * e_near, (case, e_cal, e_near)


def test_too_little_calibration_data_falls_back_to_nearest_rounding_and_says_so():
    rng = np.random.default_rng(3)
    plan, tensors = builders.model([builders.recurrent(rng, "lstm", "l0", 4, 32)], 4)
    cal = sensor_data(rng, 1, 20, 4)  # 20 vectors for 36 columns
    qp, qt = quantize_plan(plan, tensors, "int8", calibration=cal)
    why = qp["quantization_rounding"]["matrices"]["l0.W+R[0]"]
    assert why.startswith("nearest") and "20 calibration vectors for 36 columns" in why
    for role in ("W", "R"):
        w = np.asarray(tensors[f"l0.{role}"], np.float64)
        s = np.abs(w).max(-1, keepdims=True) / 127
        np.testing.assert_array_equal(qt[f"l0.{role}"], np.clip(np.rint(w / s), -127, 127))


def test_embedding_tables_and_csr_reservoirs_keep_nearest_rounding():
    rng = np.random.default_rng(4)
    emb = {"kind": "embedding", "name": "emb", "input_size": 1, "output_size": 6, "vocab_size": 20}
    emb["tensors"] = {"table": "emb.table"}
    plan, tensors = builders.model(
        [(emb, {"emb.table": rng.normal(0, 1, (20, 6)).astype(np.float32)}),
         builders.esn(rng, "e", 6, 30, sparse=True), builders.dense(rng, "d", 30, 2)],
        1, tokens=20,
    )  # fmt: skip
    cal = rng.integers(0, 20, (10, 30, 1)).astype(np.float32)
    qp, qt = quantize_plan(plan, tensors, "int8", calibration=cal)
    assert set(qp["quantization_rounding"]["matrices"]) == {"e.W_in", "d.W"}
    table = np.asarray(tensors["emb.table"], np.float64)
    s = np.abs(table).max(-1, keepdims=True) / 127
    np.testing.assert_array_equal(qt["emb.table"], np.rint(table / s))
    data = np.asarray(tensors["e.W_data"], np.float64)  # CSR data: one scale per reservoir row
    rows = np.repeat(np.arange(30), np.diff(np.asarray(tensors["e.W_indptr"], np.int64)))
    amax = np.zeros(30)
    np.maximum.at(amax, rows, np.abs(data))
    np.testing.assert_array_equal(qt["e.W_data"], np.rint(data / (amax[rows] / 127)))


@pytest.mark.parametrize(
    "bad, msg",
    [
        (np.zeros((2, 10, 5), np.float32), r"\(T, 6\) or \(B, T, 6\)"),
        (np.zeros((2, 0, 6), np.float32), r"T >= 1"),
        (np.full((2, 10, 6), np.nan, np.float32), "NaN/Inf"),
        (np.array([["a"] * 6] * 3), "numeric"),
    ],
)
def test_bad_calibration_data_is_refused_with_a_clear_error(bad, msg):
    rng = np.random.default_rng(5)
    plan, tensors = builders.model([builders.recurrent(rng, "gru", "l0", 6, 8)], 6)
    with pytest.raises(QuantizationError, match=msg):
        quantize_plan(plan, tensors, "int8", calibration=bad)


def test_long_calibration_data_is_capped_to_whole_sequences_first(monkeypatch):
    from edgernn.export import calibrate

    monkeypatch.setattr(calibrate, "MAX_STEPS", 300)
    rng = np.random.default_rng(8)
    plan, tensors = builders.model([builders.recurrent(rng, "gru", "l0", 6, 8, linear_before_reset=1)], 6)
    for data, used in ((sensor_data(rng, 10, 100, 6), 300), (sensor_data(rng, 1, 1000, 6), 300),
                       (sensor_data(rng, 4, 70, 6), 280)):  # fmt: skip
        qp, _ = quantize_plan(plan, tensors, "int8", calibration=data)
        assert qp["quantization_rounding"]["calibration_vectors"] == used


def _conv_plan(kind: str, rng):
    """A graph plan of one grouped ``conv1d`` (Cin 4 → Cout 6 in 2 groups, K 3, stride 2, pads [1, 1],
    L 9) or one ``tconv`` (Cin 3 → Cout 5, K 3, dilation 2), linear, + a dense head."""
    if kind == "conv1d":
        op = {"kind": "conv1d", "name": "cv", "input_size": 36, "in_channels": 4, "out_channels": 6,
              "kernel_size": 3, "stride": 2, "pads": [1, 1], "groups": 2, "activation": "linear",
              "tensors": {"W": "cv.W", "b": "cv.b"}}  # fmt: skip
        W, n_in, n_out = rng.normal(size=(6, 2, 3)), 36, 30
    else:
        op = {"kind": "tconv", "name": "cv", "input_size": 3, "in_channels": 3, "out_channels": 5,
              "kernel_size": 3, "dilation": 2, "activation": "linear",
              "tensors": {"W": "cv.W", "b": "cv.b"}}  # fmt: skip
        W, n_in, n_out = rng.normal(size=(5, 3, 3)), 3, 5
    b = rng.normal(size=W.shape[0])
    head = {
        "kind": "dense",
        "name": "head",
        "input_size": n_out,
        "output_size": 2,
        "tensors": {"W": "head.W"},
    }
    plan = artifact.upgrade(
        {"format": "ernn", "format_version": 1, "input": {"size": n_in},
         "output": {"size": 2, "sequence": "many_to_many"}, "layers": [op, head]}
    )  # fmt: skip
    t = {"cv.W": W, "cv.b": b, "head.W": rng.normal(size=(2, n_out))}
    return plan, {k: np.asarray(v, np.float32) for k, v in t.items()}


@pytest.mark.parametrize("kind", ["conv1d", "tconv"])
def test_the_vectors_a_convolution_multiplies_reproduce_its_outputs(kind):
    """A grouped convolution (per group) and a causal convolution over time: each group's rows of W (as
    [Cout, Cin/G·K]) times its calibration vectors, plus b, are exactly the op's recorded outputs; so GPTQ
    minimises the error of the products the kernels compute, and compensated rounding is taken."""
    from edgernn.export.calibrate import layer_activations, matrix_groups

    rng = np.random.default_rng(11)
    plan, tensors = _conv_plan(kind, rng)
    x = sensor_data(rng, 3, 40, plan["input"]["size"])
    layer = next(ly for _, ly in artifact.plan_layers(plan) if ly["name"] == "cv")
    X, Y = layer_activations(plan, tensors, x)["cv"]
    cout = tensors["cv.W"].shape[0]
    w = tensors["cv.W"].astype(np.float64).reshape(cout, -1)
    y = Y.reshape(-1, cout, Y.shape[-1] // cout)  # [n, Cout, Lout]
    groups = matrix_groups(layer, tensors, X, Y)
    assert len(groups) == (2 if kind == "conv1d" else 1)
    rows = []
    for roles, sel, Z in groups:
        assert roles == ("W",)
        r = range(cout)[sel if sel is not None else slice(None)]
        rows += list(r)
        got = Z @ w[r.start : r.stop].T + tensors["cv.b"][r.start : r.stop]  # (n·Lout, rows)
        want = y[:, r.start : r.stop].transpose(0, 2, 1).reshape(-1, len(r))
        np.testing.assert_allclose(got, want, atol=2e-5)
    assert rows == list(range(cout))
    # calibrated int8: the conv's product error on the calibration vectors is below nearest rounding's
    errs = []
    for calib in (x, None):
        qplan, qt = quantize_plan(plan, tensors, "int8", calibration=calib)
        qcv = next(ly for _, ly in artifact.plan_layers(qplan) if ly["name"] == "cv")["tensors"]
        wq = (
            qt[qcv["W"]].astype(np.float64).reshape(cout, -1) * qt[qcv["W_scale"]].astype(np.float64)[:, None]
        )
        errs.append(sum(float(np.sum(((w - wq)[sel if sel is not None else slice(None)] @ Z.T) ** 2))
                        for _, sel, Z in groups))  # fmt: skip
    how = quantize_plan(plan, tensors, "int8", calibration=x)[0]["quantization_rounding"]
    conv_keys = [k for k in how["matrices"] if k.startswith("cv.")]
    assert len(conv_keys) == len(groups), how
    assert "gptq" in [how["matrices"][k] for k in conv_keys], how
    assert errs[0] < errs[1], errs
