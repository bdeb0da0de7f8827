"""Calibrated int8 rounding: GPTQ-style error compensation on representative input data.

Nearest rounding makes every weight's error independent of the data. When the inputs of a matrix live
in a small subspace — the hidden states of a recurrent net almost always do — most of that error can be
moved into directions the inputs never take. For a matrix ``W`` (rows, cols) fed with vectors ``z``
(``y = W z``), this module minimises the output error on calibration data,

    E = Σ_z |(W - Q·s) z|²  =  trace(ΔW H ΔWᵀ),   H = Σ_z z zᵀ,

one column at a time (Frantar et al., "GPTQ", 2022, after Hassibi & Stork's Optimal Brain Surgeon):
column j is rounded to its row's grid, and its rounding error is spread over the columns not yet rounded
with the weights of the Cholesky factor of H⁻¹. Columns are taken in order of decreasing input energy
(``diag(H)``, "act-order"). The grid — one symmetric scale per output row, ``max|w_row| / 127`` — is the
same as nearest rounding's, so the artifact format and kernels do not change.

What each matrix sees (per direction of a recurrent layer; ``x_t`` is the layer's input at step t,
``h_prev`` its own output one step earlier in its direction, ``initial_h`` or 0 at the start):

* ``rnn``/``lstm``/``gru``: ``[W | R]`` together, z = [x_t; h_prev] (for a GRU with
  ``linear_before_reset=0`` the candidate rows of R see r⊙h_prev; h_prev is used for them too);
* ``esn``: ``[W_in | W]`` (dense W) with z = [u_t; x_prev], or ``W_in`` alone (CSR W keeps nearest
  rounding);
* ``dense`` and ``attention``: ``W`` with z = the layer input;
* ``conv1d``: ``W`` as [Cout, Cin/G·K] with z = each output position's receptive field (the im2col
  rows); a grouped convolution per group (its rows against its own input channels' fields); a filter
  bank the packer folds (Silero's STFT) is rounded in its folded form (:func:`gptq_folded`), so that its
  q stay exactly (anti)symmetric and it still folds;
* ``tconv`` (causal convolution over time): ``W`` as [Cout, Cin·K] with z = the window
  [x_{t−(K−1)d}, …, x_t] of each step (zeros before the start), channel-major like W.

In a graph plan (format 2) every op's input and output are recorded while the calibration sequences
stream through the float32 numpy backend (:func:`graph_activations`).

Embedding tables and CSR reservoirs keep nearest rounding. A matrix falls back to nearest rounding (and
says why) when the calibration has fewer vectors than the matrix has columns, when an activation is not
finite, or when compensated rounding does not lower E on the calibration data.
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping

import numpy as np

from ..artifact import validate_plan, write

__all__ = [
    "layer_activations",
    "matrix_groups",
    "hessian",
    "gptq_round",
    "rounding_error",
    "MAX_VECTORS",
    "MAX_STEPS",
    "DAMPING",
]

#: at most this many calibration vectors per matrix (a fixed-seed subsample beyond it)
MAX_VECTORS = 50_000
#: at most this many calibration time steps are run (whole sequences first, then a truncated one)
MAX_STEPS = 100_000
#: H + DAMPING · mean(diag H) · I keeps H invertible (GPTQ's default)
DAMPING = 0.01


def _layer_outputs(plan: Mapping, tensors: Mapping[str, np.ndarray], x: np.ndarray) -> list[np.ndarray]:
    """Outputs of every layer, (B, T, layer output_size) each, run by the float32 edgernn runtime: each
    layer alone on the previous layer's outputs (what it reads from the stream buffer when chained)."""
    import edgernn

    outs = []
    prev = x
    with tempfile.TemporaryDirectory() as d:
        for k, layer in enumerate(plan["layers"]):
            p = copy.deepcopy(dict(plan))
            p["layers"] = [p["layers"][k]]
            if k:  # the first layer keeps the model's input (token ids for an embedding)
                p["input"] = {"kind": "features", "size": layer["input_size"]}
            p["output"] = {"size": layer["output_size"], "sequence": "many_to_many", "labels": None}
            p.pop("quantization_report", None)
            f = os.path.join(d, f"layer{k}.ernn")
            write(f, p, {n: tensors[n] for n in layer["tensors"].values()})
            m = edgernn.load(f, backend="numpy", nonfinite="propagate")  # no compile; deterministic
            prev = np.asarray(m.predict(prev), np.float32)
            outs.append(prev)
    return outs


def layer_activations(
    plan: Mapping, tensors: Mapping[str, np.ndarray], data: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """Each layer's input and output sequences on ``data``: name -> (X (B, T, in), Y (B, T, out)), float32.

    ``data``: (T, input_size) or (B, T, input_size) in the plan's input units (token ids for token models);
    at most :data:`MAX_STEPS` steps of it are used (the first sequences, or the start of a long one).
    """
    plan = validate_plan(dict(plan))
    x = np.asarray(data, np.float32)
    if x.ndim == 2:
        x = x[None]
    if x.shape[0] * x.shape[1] > MAX_STEPS:
        x = x[: max(1, MAX_STEPS // x.shape[1]), :MAX_STEPS]
    if plan["format_version"] != 1:
        return graph_activations(plan, tensors, x)
    outs = _layer_outputs(plan, tensors, x)
    res = {}
    prev = x
    for layer, y in zip(plan["layers"], outs, strict=True):
        res[layer["name"]] = (prev, y)
        prev = y
    return res


def graph_activations(
    plan: Mapping, tensors: Mapping[str, np.ndarray], x: np.ndarray
) -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """:func:`layer_activations` of a streamable format-2 plan, for its weight-bearing ops only: each
    sequence of x (B, T, I) streamed from the initial state through the float32 numpy backend, every op's
    input and output recorded at every step (an op may read any earlier value, so the ops do not run
    one after another over the whole chunk). A graph that does not stream gives {}."""
    from ..artifact import QUANTIZABLE, plan_layers
    from ..numpy_backend import ModelFunctions
    from ..pack import pack

    packed = pack(dict(plan), dict(tensors))
    if not packed.streamable:
        return {}
    layers = [ly for _, ly in plan_layers(plan)]
    keep = [i for i, ly in enumerate(layers) if ly["kind"] in QUANTIZABLE]
    B, T = x.shape[:2]
    X = {i: np.zeros((B, T, layers[i]["input_size"]), np.float32) for i in keep}
    Y = {i: np.zeros((B, T, layers[i]["output_size"]), np.float32) for i in keep}
    f = ModelFunctions(packed.wf)
    at = [0, 0]

    def trace(i: int, xi: np.ndarray, yi: np.ndarray) -> None:
        if i in X:
            X[i][at[0], at[1]] = xi
            Y[i][at[0], at[1]] = yi

    f.trace = trace
    for b in range(B):
        M = np.zeros(packed.m_size, np.float32)
        M[: packed.n_state] = packed.state0
        for t in range(T):
            at[0], at[1] = b, t
            f.run_layers(np.ascontiguousarray(x[b, t]), packed.wf, packed.wb, M)
    return {layers[i]["name"]: (X[i], Y[i]) for i in keep}


def _conv_inputs(layer: Mapping, X: np.ndarray, group: int = 0) -> np.ndarray:
    """The im2col rows (n·Lout, Cin/G·K) that group ``group`` of a ``conv1d``'s W [Cout, Cin/G·K]
    multiplies (its output channels against its own input channels' receptive fields)."""
    from ..kernels.ops import conv

    cin, n, _, k, s, d, pb, pe, g, lout = conv.geometry(layer)
    cg = cin // g
    x = np.asarray(X, np.float32).reshape(-1, cin, n)[:, group * cg : (group + 1) * cg]
    xp = np.zeros((x.shape[0], cg, n + pb + pe + s * lout + d * k), np.float32)
    xp[:, :, pb : pb + n] = x
    wins = [xp[:, :, t * s : t * s + d * (k - 1) + 1 : d].reshape(x.shape[0], cg * k) for t in range(lout)]
    return np.stack(wins, 1).reshape(-1, cg * k)


def _tconv_inputs(layer: Mapping, X: np.ndarray) -> np.ndarray:
    """The windows (B·T, Cin·K) a ``tconv``'s W [Cout, Cin·K] multiplies: z[ci·K + k] = x_{t−(K−1−k)·d}[ci]
    over the sequences X (B, T, Cin), zeros before the start."""
    k, d = layer["kernel_size"], layer["dilation"]
    x = np.asarray(X, np.float32)
    B, T, cin = x.shape
    hist = (k - 1) * d
    xp = np.concatenate([np.zeros((B, hist, cin), np.float32), x], 1)
    taps = np.stack([xp[:, j * d : j * d + T] for j in range(k)], -1)  # (B, T, Cin, K)
    return taps.reshape(B * T, cin * k)


def gptq_folded(
    layer: Mapping, w: np.ndarray, q: np.ndarray, scale: np.ndarray, X: np.ndarray
) -> tuple[np.ndarray | None, int, str]:
    """Error-compensated int8 of a one-channel ``conv1d`` filter bank that folds (``kernels/ops/conv.py``:
    rows periodic-symmetric or -antisymmetric about K/2), in its folded form, so that its q stay exactly
    (anti)symmetric and it still folds: per run of rows of one kind, the folded weights [W₀, W₁..W_{K/2−1},
    W_{K/2}] are rounded against the folded receptive fields [x₀, x_n ± x_{K−n}, x_{K/2}] of the
    calibration inputs X (B, T, L), then unfolded. ``w`` [Cout, 1, K] float, ``q``/``scale`` its nearest
    int8 and per-channel scales. Returns (q or None, calibration vectors, "gptq" or "nearest: why")."""
    from ..kernels.ops import conv

    cout, k = w.shape[0], w.shape[-1]
    h = k // 2
    runs = conv.fold_runs(np.asarray(w, np.float32).reshape(cout, k))
    z = _conv_inputs(layer, X)
    if runs is None or z is None:  # pragma: no cover - the caller checked that the bank folds
        return None, 0, "nearest: not a folded filter bank"
    if not np.all(np.isfinite(z)):
        return None, 0, "nearest: non-finite activations on the calibration data"
    w2 = np.asarray(w, np.float64).reshape(cout, k)
    q2 = np.array(q, np.int8).reshape(cout, k)
    better, n = False, 0
    for r0, r1, sign in runs:
        sg = -1.0 if sign else 1.0
        zf = np.concatenate([z[:, :1], z[:, 1:h] + sg * z[:, k - 1 : h : -1], z[:, h : h + 1]], 1)
        wf = np.concatenate(
            [w2[r0:r1, :1], (w2[r0:r1, 1:h] + sg * w2[r0:r1, k - 1 : h : -1]) / 2, w2[r0:r1, h : h + 1]], 1
        )
        H, n = hessian(zf)
        if n < wf.shape[1]:
            return None, n, f"nearest: {n} calibration vectors for {wf.shape[1]} folded columns"
        S = np.repeat(np.asarray(scale, np.float64)[r0:r1, None], wf.shape[1], 1)
        try:
            qg = gptq_round(wf, S, H)
        except np.linalg.LinAlgError:
            return None, n, "nearest: the calibration vectors' Gram matrix is not positive definite"
        if rounding_error(wf, qg * S, H) >= rounding_error(wf, np.clip(np.rint(wf / S), -127, 127) * S, H):
            continue
        better = True
        q2[r0:r1, 0], q2[r0:r1, h], q2[r0:r1, 1:h] = qg[:, 0], qg[:, h], qg[:, 1:h]
        q2[r0:r1, k - 1 : h : -1] = sg * qg[:, 1:h]
    if not better:
        return None, n, "nearest: compensated rounding was no better on the calibration data"
    return q2.reshape(w.shape), n, "gptq"


def _recurrent_inputs(layer: Mapping, tensors: Mapping, X: np.ndarray, Y: np.ndarray) -> list[np.ndarray]:
    """Per direction, the (n, I + H) vectors [x_t; h_prev] a recurrent layer's [W | R] multiplies."""
    H = layer["hidden_size"]
    D = 2 if layer["direction"] == "bidirectional" else 1
    h0 = layer["tensors"].get("initial_h")
    h0 = np.asarray(tensors[h0], np.float32) if h0 else np.zeros((D, H), np.float32)
    res = []
    for d in range(D):
        h = Y[..., d * H : (d + 1) * H]
        reverse = layer["direction"] == "reverse" or d == 1
        start = np.broadcast_to(h0[d], (h.shape[0], 1, H))
        if reverse:  # the step at t follows the step at t + 1
            hprev = np.concatenate([h[:, 1:], start], 1)
        else:
            hprev = np.concatenate([start, h[:, :-1]], 1)
        res.append(np.concatenate([X, hprev], -1).reshape(-1, X.shape[-1] + H))
    return res


def matrix_groups(
    layer: Mapping, tensors: Mapping[str, np.ndarray], X: np.ndarray, Y: np.ndarray
) -> list[tuple[tuple[str, ...], int | None, np.ndarray]]:
    """The matrices of ``layer`` to round together, and what they multiply.

    Returns [(roles, sel, Z (n, cols))]: the roles' matrices (for a recurrent layer their ``[direction]``,
    ``sel`` the direction index; for a grouped convolution the rows of one group, ``sel`` a row slice of
    W as [Cout, Cin/G·K]; else ``sel`` None) concatenated along columns, times Z's rows, are the layer's
    products.
    """
    kind, roles = layer["kind"], layer["tensors"]
    if kind in ("rnn", "lstm", "gru"):
        return [(("W", "R"), d, z) for d, z in enumerate(_recurrent_inputs(layer, tensors, X, Y))]
    if kind in ("dense", "attention"):
        return [(("W",), None, X.reshape(-1, X.shape[-1]))]
    if kind == "conv1d":
        from ..kernels.ops import conv

        w = np.asarray(tensors[roles["W"]])
        cin, _, cout, k, _, d, _, _, g, _ = conv.geometry(layer)
        if cin == 1 and g == 1 and d == 1 and conv.fold_runs(w.reshape(cout, k)) is not None:
            return []  # rounded folded (gptq_folded)
        if g == 1:
            return [(("W",), None, _conv_inputs(layer, X))]
        og = cout // g
        return [(("W",), slice(j * og, (j + 1) * og), _conv_inputs(layer, X, j)) for j in range(g)]
    if kind == "tconv":
        return [(("W",), None, _tconv_inputs(layer, X))]
    if kind == "esn":
        N = layer["reservoir_size"]
        xs = Y[..., -N:]  # the state is the output's last N values ("state" and "extended" readouts)
        u = X.reshape(-1, X.shape[-1])
        if "W" in roles:
            xprev = np.concatenate([np.zeros_like(xs[:, :1]), xs[:, :-1]], 1).reshape(-1, N)
            return [(("W_in", "W"), None, np.concatenate([u, xprev], -1))]
        return [(("W_in",), None, u)]
    return []


def hessian(Z: np.ndarray, max_vectors: int = MAX_VECTORS, seed: int = 0) -> tuple[np.ndarray, int]:
    """``(Zᵀ Z, n)`` over the rows of Z (n, cols), float64; a fixed-seed subsample of max_vectors rows."""
    if len(Z) > max_vectors:
        Z = Z[np.sort(np.random.default_rng(seed).choice(len(Z), max_vectors, replace=False))]
    Z = np.asarray(Z, np.float64)
    return Z.T @ Z, len(Z)


def gptq_round(W: np.ndarray, S: np.ndarray, H: np.ndarray, damping: float = DAMPING) -> np.ndarray:
    """Error-compensated rounding of ``W`` (rows, cols) to the grid ``q · S`` with q in [-127, 127].

    ``S`` (rows, cols): the grid step of every weight (its row's scale); ``H`` (cols, cols): Σ z zᵀ of the
    vectors W multiplies. Returns q (rows, cols) float64 of integers. Columns with no input energy get
    nearest rounding and take no compensation.
    """
    W = np.array(W, np.float64)
    S = np.asarray(S, np.float64)
    H = np.array(H, np.float64)
    n = W.shape[1]
    order = np.argsort(-np.diag(H), kind="stable")
    W, S, H = W[:, order], S[:, order], H[np.ix_(order, order)]
    dead = np.diag(H) <= 0
    H[dead, :] = 0.0
    H[:, dead] = 0.0
    mean_diag = float(np.mean(np.diag(H))) if n else 0.0
    H[np.diag_indices(n)] += damping * (mean_diag if mean_diag > 0 else 1.0)
    H[dead, dead] = max(mean_diag, 1.0)
    U = np.linalg.cholesky(np.linalg.inv(H)).T  # upper: H⁻¹ = Uᵀ U
    Q = np.empty_like(W)
    for j in range(n):
        q = np.clip(np.rint(W[:, j] / S[:, j]), -127, 127)
        Q[:, j] = q
        err = (W[:, j] - q * S[:, j]) / U[j, j]
        W[:, j + 1 :] -= np.outer(err, U[j, j + 1 :])
    out = np.empty_like(Q)
    out[:, order] = Q
    return out


def rounding_error(W: np.ndarray, Wq: np.ndarray, H: np.ndarray) -> float:
    """``trace((W - Wq) H (W - Wq)ᵀ)``: the summed squared output error over the calibration vectors."""
    E = np.asarray(W, np.float64) - np.asarray(Wq, np.float64)
    return float(np.einsum("ij,jk,ik->", E, H, E))
