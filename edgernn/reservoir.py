"""Echo state networks with numpy only: reservoir initialization, ridge readout, and the ``.ernn`` plan.

Device-safe (numpy only), so an ESN can be built, fitted and written on the board itself.
"""

from __future__ import annotations

import numpy as np


def reservoir_weights(
    input_size: int,
    reservoir_size: int,
    spectral_radius: float = 0.9,
    input_scaling: float = 1.0,
    density: float = 0.1,
    bias_scaling: float = 0.1,
    seed: int = 0,
) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """A random reservoir: W_in (N, I) uniform in ±input_scaling, W (N, N) with ``density`` non-zeros
    rescaled to the given spectral radius, b (N,) uniform in ±bias_scaling. All float32."""
    rng = np.random.default_rng(seed)
    n = reservoir_size
    W_in = rng.uniform(-input_scaling, input_scaling, (n, input_size))
    W = rng.normal(0, 1, (n, n)) * (rng.random((n, n)) < density)
    rho = float(np.abs(np.linalg.eigvals(W)).max()) if n > 0 else 0.0
    if rho > 0:
        W *= spectral_radius / rho
    b = rng.uniform(-bias_scaling, bias_scaling, n)
    return W_in.astype(np.float32), W.astype(np.float32), b.astype(np.float32)


def fit_readout(
    states: np.ndarray, targets: np.ndarray, ridge: float = 1e-6
) -> tuple[np.ndarray, np.ndarray]:
    """Ridge regression readout: targets (T, O) ≈ states (T, F) @ W.T + b; returns W (O, F), b (O,).

    Solved in closed form in float64: W = Y^T X (X^T X + ridge·I)^-1 on centred data.
    """
    X = np.asarray(states, np.float64)
    Y = np.asarray(targets, np.float64)
    if Y.ndim == 1:
        Y = Y[:, None]
    xm, ym = X.mean(0), Y.mean(0)
    Xc, Yc = X - xm, Y - ym
    A = Xc.T @ Xc + ridge * len(X) * np.eye(X.shape[1])
    W = np.linalg.solve(A, Xc.T @ Yc).T
    return W.astype(np.float32), (ym - W @ xm).astype(np.float32)


def esn_plan(
    W_in: np.ndarray,
    W: np.ndarray,
    b: np.ndarray | None,
    leak_rate: float,
    readout: np.ndarray,
    readout_bias: np.ndarray | None = None,
    extended: bool = False,
    sparse: bool | None = None,
    sequence: str = "many_to_many",
) -> tuple[dict, dict[str, np.ndarray]]:
    """The ``.ernn`` plan + tensors of an ESN (``esn`` layer + ``dense`` readout).

    W_in (N, I), W (N, N) (stored as CSR when ``sparse``, default: when under 30% dense), readout (O, F)
    with F = N, or 1 + I + N when ``extended`` (readout on [1; u; x]).
    """
    n, i = W_in.shape
    if sparse is None:
        sparse = np.count_nonzero(W) < 0.3 * W.size
    t: dict[str, np.ndarray] = {"esn.W_in": np.asarray(W_in, np.float32)}
    roles = {"W_in": "esn.W_in"}
    layer: dict = {
        "kind": "esn",
        "name": "esn",
        "input_size": i,
        "reservoir_size": n,
        "leak_rate": float(leak_rate),
        "readout_input": "extended" if extended else "state",
    }
    if sparse:
        rows, cols = np.nonzero(W)
        ptr = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
        t.update(
            {
                "esn.W_data": np.asarray(W[rows, cols], np.float32),
                "esn.W_indices": cols.astype(np.int32),
                "esn.W_indptr": ptr,
            }
        )
        roles.update({"W_data": "esn.W_data", "W_indices": "esn.W_indices", "W_indptr": "esn.W_indptr"})
        layer.update(sparse=True, nnz=int(len(rows)))
    else:
        t["esn.W"] = np.asarray(W, np.float32)
        roles["W"] = "esn.W"
    if b is not None:
        t["esn.b"] = np.asarray(b, np.float32)
        roles["b"] = "esn.b"
    layer["tensors"] = roles
    feats = 1 + i + n if extended else n
    o = readout.shape[0]
    t["readout.W"] = np.asarray(readout, np.float32).reshape(o, feats)
    head = {
        "kind": "dense",
        "name": "readout",
        "input_size": feats,
        "output_size": o,
        "tensors": {"W": "readout.W"},
    }
    if readout_bias is not None:
        t["readout.b"] = np.asarray(readout_bias, np.float32)
        head["tensors"]["b"] = "readout.b"
    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"kind": "features", "size": i},
        "output": {"size": o, "sequence": sequence, "labels": None},
        "layers": [layer, head],
    }
    return plan, t
