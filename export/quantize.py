"""Quantize a ``(plan, tensors)`` pair, and measure what quantization costs.

int8: every matrix role listed in docs/ARTIFACT.md (``W``/``R`` of rnn/lstm/gru, ``W_in``/``W``/``W_data``
of esn, ``W`` of dense, attention, conv1d and tconv, ``table`` of embedding), in a chain (format 1) or a
graph plan (format 2), becomes int8 with one symmetric float32 scale per output row (per output channel
of a convolution's ``W`` [Cout, Cin/G, K]: its Cin/G·K weights are the row)::

    scale[r] = max_j |w[r, j]| / 127          q[r, j] = round(w[r, j] / scale[r]) in [-127, 127]
    w[r, j] ≈ q[r, j] * scale[r]             |w - q*scale| <= scale[r] / 2

(rows of an all-zero matrix row get scale 1 and q = 0). That is nearest rounding. With ``calibration``
data, the q of the recurrent, dense, attention and dense-ESN matrices are instead chosen on the same grid
to minimise the output error on that data (error-compensated rounding, ``export/calibrate.py``; a weight
may then be more than scale/2 from its float value). Biases, peepholes, states and the other float
tensors stay float32. fp16: every float tensor is stored as IEEE float16 (round to nearest; a value
outside ±65504 is an error, never a silent Inf), except a gather's ``index`` (integers, which float16
holds exactly only up to 2048).

:func:`quantization_report` runs both artifacts through the edgernn runtime on the same input and
reports the file-size ratio and the output error (max/mean absolute; accuracy or RMSE change when labels
or targets are given).
"""

from __future__ import annotations

import os
import tempfile
from collections.abc import Mapping

import numpy as np

from ..artifact import (
    FLOAT32_ROLES,
    PER_CHANNEL_SCALE,
    QUANTIZABLE,
    plan_layers,
    scale_shape,
    upgrade,
    validate_plan,
    write,
)
from ..errors import EdgeRNNError

__all__ = [
    "quantize_plan",
    "quantize_rows",
    "quantize_role",
    "quantization_report",
    "calibrated_int8",
    "check_data",
    "QuantizationError",
]

FP16_MAX = 65504.0


class QuantizationError(EdgeRNNError, ValueError):
    """A tensor cannot be stored in the requested precision."""


def quantize_rows(w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric int8 quantization of ``w`` (..., cols) with one scale per row (all axes but the last).

    Returns ``(q, scale)``: q int8 of w's shape in [-127, 127], scale float32 of shape ``w.shape[:-1]``,
    with ``w ≈ q * scale[..., None]`` and ``|w - q*scale| <= scale/2`` elementwise.
    """
    w = np.asarray(w, np.float64)
    if not np.all(np.isfinite(w)):
        raise QuantizationError("cannot quantize non-finite weights")
    amax = np.max(np.abs(w), axis=-1) if w.shape[-1] else np.zeros(w.shape[:-1])
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.rint(w / scale.astype(np.float64)[..., None])
    q = np.clip(q, -127, 127).astype(np.int8)
    return q, scale


def quantize_role(layer: Mapping, role: str, w: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """:func:`quantize_rows` of matrix role ``role`` of a validated layer (or format-2 op view), on its
    scale's grid (:func:`edgernn.artifact.scale_shape`): one scale per output row, or per output channel of
    a convolution's ``W`` [Cout, Cin/G, K] (the max over that channel's Cin/G·K weights). Returns ``(q,
    scale)``: q int8 of w's shape, scale float32 of the scale shape."""
    w = np.asarray(w)
    sshape = scale_shape(layer, role, w.shape)
    q, s = quantize_rows(w.reshape(sshape + (-1,)))
    return q.reshape(w.shape), s


def _quantize_csr(data: np.ndarray, indptr: np.ndarray, n: int) -> tuple[np.ndarray, np.ndarray]:
    """Per-reservoir-row int8 scales of CSR ``data`` (row r owns data[indptr[r]:indptr[r+1]])."""
    data = np.asarray(data, np.float64)
    rows = np.repeat(np.arange(n), np.diff(indptr.astype(np.int64)))
    amax = np.zeros(n)
    if data.size:
        np.maximum.at(amax, rows, np.abs(data))
    scale = np.where(amax > 0, amax / 127.0, 1.0).astype(np.float32)
    q = np.clip(np.rint(data / scale.astype(np.float64)[rows]), -127, 127).astype(np.int8)
    return q, scale


def _exact_pair(
    arr: np.ndarray | None, pair: tuple[np.ndarray, np.ndarray]
) -> tuple[np.ndarray, np.ndarray] | None:
    """A source model's (int8 q, per-row scale), used only if it dequantizes to these very weights."""
    if arr is None:
        return None
    arr = np.asarray(arr)
    q, s = np.asarray(pair[0]), np.asarray(pair[1], np.float32)
    if q.dtype.kind not in "iu" or q.shape != arr.shape or s.shape != arr.shape[:-1]:
        return None
    if q.size and (q.min() < -127 or q.max() > 127):
        return None
    deq = q.astype(np.float64) * s.astype(np.float64)[..., None]
    if not np.allclose(deq, arr, rtol=1e-6, atol=1e-30):
        return None
    return q.astype(np.int8), s


def check_data(plan: Mapping, data: np.ndarray, what: str = "calibration data") -> np.ndarray:
    """``data`` as float32 (B, T, input_size): accepts (T, I) or (B, T, I); finite values, T >= 1."""
    x = np.asarray(data)
    if x.dtype.kind not in "fiu":
        raise QuantizationError(f"{what} must be numeric, got dtype {x.dtype}")
    x = x.astype(np.float32)
    if x.ndim == 2:
        x = x[None]
    size = plan["input"]["size"]
    if x.ndim != 3 or x.shape[-1] != size or x.shape[1] == 0:
        raise QuantizationError(f"{what} must be (T, {size}) or (B, T, {size}) with T >= 1, got {x.shape}")
    if not np.all(np.isfinite(x)):
        raise QuantizationError(f"{what} has NaN/Inf values")
    return x


def calibrated_int8(
    plan: Mapping, tensors: Mapping[str, np.ndarray], data: np.ndarray, skip: frozenset[str] = frozenset()
) -> tuple[dict[str, tuple[np.ndarray, np.ndarray]], dict]:
    """Error-compensated int8 of the plan's matrices on calibration ``data`` ((T, I) or (B, T, I)).

    Returns ``(qs, info)``: tensor name -> (int8 q, float32 per-row scale) for the matrices that got
    compensated rounding (the scales are :func:`quantize_rows`'s, unchanged), and ``info`` —
    ``{"method", "calibration_vectors", "matrices": {"layer.roles[dir]": "gptq" | "nearest: why"}}``.
    Tensors named in ``skip`` are left out.
    """
    from .calibrate import gptq_folded, gptq_round, hessian, layer_activations, matrix_groups, rounding_error

    plan = validate_plan(dict(plan))
    x = check_data(plan, data)
    acts = layer_activations(plan, tensors, x)
    qs: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    matrices: dict[str, str] = {}
    n_max = 0
    for _, layer in plan_layers(plan):
        if layer["name"] not in acts:
            if any(r in layer["tensors"] for r in QUANTIZABLE.get(layer["kind"], ())):
                matrices[f"{layer['name']}.W"] = "nearest: not measured (a graph that does not stream)"
            continue
        X, Y = acts[layer["name"]]
        groups = matrix_groups(layer, tensors, X, Y)
        if not groups and layer["kind"] == "conv1d":  # a folded filter bank (matrix_groups: none)
            key = f"{layer['name']}.W"
            wname = layer["tensors"]["W"]
            w = np.asarray(tensors[wname])
            if wname in skip:
                matrices[key] = "nearest: int8 weights taken from the source model"
                continue
            q, scale = quantize_role(layer, "W", w)
            qg, n, matrices[key] = gptq_folded(layer, w, q, scale, X)
            n_max = max(n_max, n)
            if qg is not None:
                qs[wname] = (qg.astype(np.int8), scale)
            continue
        per_channel = layer["kind"] in PER_CHANNEL_SCALE
        for roles, d, Z in groups:
            at = f"[rows {d.start}:{d.stop}]" if isinstance(d, slice) else f"[{d}]" if d is not None else ""
            key = f"{layer['name']}.{'+'.join(roles)}{at}"
            names = [layer["tensors"][r] for r in roles]
            if any(n in skip for n in names):
                matrices[key] = "nearest: int8 weights taken from the source model"
                continue
            rounded = {  # q so far, scales
                nm: qs.get(nm) or quantize_role(layer, r, tensors[nm])
                for nm, r in zip(names, roles, strict=True)
            }
            sel = d if d is not None else Ellipsis

            def as2d(a: np.ndarray, sel=sel, per_channel=per_channel) -> np.ndarray:  # what GPTQ rounds
                return a.reshape(a.shape[0], -1)[sel] if per_channel else a[sel]

            mats = [as2d(np.asarray(tensors[n], np.float64)) for n in names]
            if not np.all(np.isfinite(Z)):
                matrices[key] = "nearest: non-finite activations on the calibration data"
                continue
            H, n = hessian(Z)
            n_max = max(n_max, n)
            W = np.concatenate(mats, 1)
            if n < W.shape[1]:
                matrices[key] = f"nearest: {n} calibration vectors for {W.shape[1]} columns"
                continue
            S = np.concatenate(
                [
                    np.repeat(rounded[nm][1][sel][:, None], m.shape[1], 1)
                    for nm, m in zip(names, mats, strict=True)
                ],
                1,
            ).astype(np.float64)
            try:
                Qg = gptq_round(W, S, H)
            except np.linalg.LinAlgError:
                matrices[key] = "nearest: the calibration vectors' Gram matrix is not positive definite"
                continue
            Qn = np.clip(np.rint(W / S), -127, 127)
            if rounding_error(W, Qg * S, H) >= rounding_error(W, Qn * S, H):
                matrices[key] = "nearest: compensated rounding was no better on the calibration data"
                continue
            matrices[key] = "gptq"
            col = 0
            for name, m in zip(names, mats, strict=True):
                q, scale = rounded[name]
                as2d(q)[...] = Qg[:, col : col + m.shape[1]].astype(np.int8)
                qs[name] = (q, scale)
                col += m.shape[1]
    method = "gptq" if any(v == "gptq" for v in matrices.values()) else "nearest"
    return qs, {"method": method, "calibration_vectors": int(n_max), "matrices": matrices}


def quantize_plan(
    plan: Mapping,
    tensors: Mapping[str, np.ndarray],
    mode: str,
    exact_int8: Mapping[str, tuple[np.ndarray, np.ndarray]] | None = None,
    calibration: np.ndarray | None = None,
) -> tuple[dict, dict[str, np.ndarray]]:
    """Return a quantized copy ``(plan, tensors)`` of a float32 plan; ``mode`` is ``"int8"`` or ``"fp16"``.

    ``exact_int8`` maps a tensor name to an (int8 q, float32 per-row scale) pair to use instead of
    re-quantizing (weights that were already symmetric int8 in an ORT-quantized source model).
    ``calibration``: representative inputs, (T, I) or (B, T, I) in the model's input units; with it, int8
    rounding minimises the output error on them (see :func:`calibrated_int8`), without it every weight is
    rounded to nearest. How each matrix was rounded is recorded in the plan's ``quantization_rounding``.
    """
    if mode not in ("int8", "fp16"):
        raise QuantizationError(f"mode must be 'int8' or 'fp16', got {mode!r}")
    plan = validate_plan(dict(plan))
    if plan["quantization"] != "none":
        raise QuantizationError(f"the plan is already quantized ({plan['quantization']})")
    exact = {name: _exact_pair(tensors.get(name), pair) for name, pair in (exact_int8 or {}).items()}
    exact_int8 = {name: pair for name, pair in exact.items() if pair is not None}
    out: dict[str, np.ndarray] = {}
    calibrated: dict[str, tuple[np.ndarray, np.ndarray]] = {}
    if mode == "int8":
        plan["quantization_rounding"] = {"method": "nearest", "calibration_vectors": 0}
        if calibration is not None:
            calibrated, plan["quantization_rounding"] = calibrated_int8(
                plan, tensors, calibration, frozenset(exact_int8)
            )
    plan["quantization"] = mode
    plan.pop("quantization_report", None)
    for _, layer in plan_layers(plan):  # a format-2 op's view shares the op's "tensors" object
        roles = layer["tensors"]
        qroles = QUANTIZABLE.get(layer["kind"], ())
        keep32 = FLOAT32_ROLES.get(layer["kind"], ())
        for role, name in list(roles.items()):
            arr = np.asarray(tensors[name])
            if arr.dtype.kind != "f" or role in keep32:
                out[name] = arr
                continue
            if mode == "fp16":
                if np.any(np.abs(arr) > FP16_MAX):
                    raise QuantizationError(
                        f"tensor {name!r} has values beyond the float16 range (±{FP16_MAX})"
                    )
                out[name] = arr.astype(np.float16)
            elif role in qroles:
                exact = exact_int8.get(name)
                if exact is not None:
                    q, s = exact
                elif name in calibrated:
                    q, s = calibrated[name]
                elif role == "W_data":
                    q, s = _quantize_csr(arr, np.asarray(tensors[roles["W_indptr"]]), layer["reservoir_size"])
                else:
                    q, s = quantize_role(layer, role, arr)
                out[name] = q
                sname = f"{name}_scale"
                out[sname] = s
                roles[f"{role}_scale"] = sname
            else:
                out[name] = arr.astype(np.float32)
    if mode == "int8" and not any(np.asarray(a).dtype == np.int8 for a in out.values()):
        raise QuantizationError("int8 requested but the plan has no matrix to quantize")
    if mode == "fp16" and not any(np.asarray(a).dtype == np.float16 for a in out.values()):
        raise QuantizationError("fp16 requested but the plan has no weights to store in float16")
    return plan, out


def _artifact_bytes(plan: Mapping, tensors: Mapping[str, np.ndarray]) -> int:
    """The size of the file the writers make of ``plan`` (format 2, either version given) in bytes."""
    with tempfile.TemporaryDirectory() as d:
        p = os.path.join(d, "m.ernn")
        write(p, upgrade(plan), tensors)
        return os.path.getsize(p)


def default_input(plan: Mapping, batch: int = 8, steps: int = 32, seed: int = 0) -> np.ndarray:
    """A deterministic input for the report when no data is given: (batch, steps, input_size)."""
    rng = np.random.default_rng(seed)
    inp = plan["input"]
    if inp.get("kind") == "tokens":
        return rng.integers(0, inp["vocab_size"], size=(batch, steps, 1)).astype(np.float32)
    return rng.standard_normal((batch, steps, inp["size"])).astype(np.float32)


def quantization_report(
    plan: Mapping,
    tensors: Mapping[str, np.ndarray],
    qplan: Mapping,
    qtensors: Mapping[str, np.ndarray],
    data: np.ndarray | None = None,
    labels: np.ndarray | None = None,
) -> dict:
    """Compare a quantized artifact with its float32 original through the edgernn runtime.

    ``data``: (T, I) or (B, T, I) input (default: :func:`default_input`, described as ``"random"``).
    ``labels``: class ids (one per sequence for many_to_one, per step for many_to_many) when the output is
    a classifier (more than one output), else regression targets of the output's shape.
    Returns a JSON-able dict: ``mode``, ``float32_bytes``, ``bytes``, ``size_ratio``, ``data``,
    ``max_abs_error``, ``mean_abs_error``, ``max_abs_output`` and, with labels, ``accuracy_float32`` /
    ``accuracy`` / ``accuracy_change_pp`` or ``rmse_float32`` / ``rmse`` / ``rmse_change_pct``.
    """
    import edgernn

    fbytes = _artifact_bytes(plan, tensors)
    qbytes = _artifact_bytes(qplan, qtensors)
    source = "user" if data is not None else "random"
    x = check_data(plan, data if data is not None else default_input(plan), "report data")
    with tempfile.TemporaryDirectory() as d:
        pf, pq = os.path.join(d, "f.ernn"), os.path.join(d, "q.ernn")
        write(pf, plan, tensors)
        write(pq, qplan, qtensors)
        # a graph plan (Silero VAD: ~30 s of numba compile per model here) is measured on the numpy
        # backend, which runs the same packed weights; chains on the default backend
        backend = "numpy" if plan["format_version"] != 1 else None
        kw = {"backend": backend} if backend else {}
        yf = np.asarray(edgernn.load(pf, **kw).predict(x), np.float64)
        yq = np.asarray(edgernn.load(pq, **kw).predict(x), np.float64)
    err = np.abs(yq - yf)
    rep = {
        "mode": qplan["quantization"],
        "float32_bytes": int(fbytes),
        "bytes": int(qbytes),
        "size_ratio": round(qbytes / fbytes, 4),
        "data": source,
        "n_sequences": int(x.shape[0]),
        "steps": int(x.shape[1]),
        "max_abs_error": float(np.nanmax(err)) if err.size else 0.0,
        "mean_abs_error": float(np.nanmean(err)) if err.size else 0.0,
        "max_abs_output": float(np.nanmax(np.abs(yf))) if yf.size else 0.0,
    }
    if backend:
        rep["backend"] = backend
    rounding = qplan.get("quantization_rounding")
    if isinstance(rounding, Mapping):
        rep["rounding"] = rounding.get("method")
        rep["calibration_vectors"] = rounding.get("calibration_vectors", 0)
    if labels is not None:
        lab = np.asarray(labels)
        n_out = plan["output"]["size"]
        if n_out > 1 and lab.shape == yf.shape[:-1]:
            af = float(np.mean(np.argmax(yf, -1) == lab))
            aq = float(np.mean(np.argmax(yq, -1) == lab))
            rep.update(
                {"accuracy_float32": af, "accuracy": aq, "accuracy_change_pp": round(100 * (aq - af), 4)}
            )
        else:
            if lab.size != yf.size:
                raise QuantizationError(
                    f"labels of shape {lab.shape} fit neither class ids {yf.shape[:-1]} "
                    f"nor targets {yf.shape}"
                )
            tgt = lab.astype(np.float64).reshape(yf.shape)
            rf = float(np.sqrt(np.mean((yf - tgt) ** 2)))
            rq = float(np.sqrt(np.mean((yq - tgt) ** 2)))
            rep.update(
                {
                    "rmse_float32": rf,
                    "rmse": rq,
                    "rmse_change_pct": round(100 * (rq - rf) / rf, 4) if rf > 0 else None,
                }
            )
    return rep
