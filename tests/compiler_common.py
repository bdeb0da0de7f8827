"""Helpers shared by the compiler tests (tests/test_compiler_*.py): layout conversion and comparison.

``io`` is the dict :func:`edgernn.export.compile_onnx` returns: the axis roles of the ONNX input and
output ("T" time, "B" batch, "N" independent rows, integers = feature axes).
"""

from __future__ import annotations

import numpy as np

#: ONNX Runtime's own float32 tolerance (|a - e| <= ATOL + RTOL * |e|).
ATOL, RTOL = 1e-5, 1e-4


def input_to_btf(x: np.ndarray, axes: list) -> np.ndarray:
    """ONNX input ``x`` (axes roles ``axes``) -> the (B, T, I) array ``Model.predict`` takes."""
    roles = [a if isinstance(a, str) else "F" for a in axes]
    order = [k for k, r in enumerate(roles) if r in ("B", "N")]
    order += [k for k, r in enumerate(roles) if r == "T"]
    order += [k for k, r in enumerate(roles) if r == "F"]
    y = np.transpose(x, order)
    has_t = "T" in roles
    b = int(np.prod([x.shape[k] for k, r in enumerate(roles) if r in ("B", "N")], dtype=np.int64))
    if not has_t:
        return y.reshape(b, 1, -1)
    return y.reshape(b, x.shape[roles.index("T")], -1)


def output_to_bf(y: np.ndarray, axes: list) -> np.ndarray:
    """ONNX output ``y`` (axes roles ``axes``) -> (B, T, F) if it has a time axis, else (B, F)."""
    roles = [a if isinstance(a, str) else "F" for a in axes]
    order = [k for k, r in enumerate(roles) if r in ("B", "N")]
    order += [k for k, r in enumerate(roles) if r == "T"]
    order += [k for k, r in enumerate(roles) if r == "F"]
    z = np.transpose(y, order)
    b = int(np.prod([y.shape[k] for k, r in enumerate(roles) if r in ("B", "N")], dtype=np.int64))
    if "T" in roles:
        return z.reshape(b, y.shape[roles.index("T")], -1)
    return z.reshape(b, -1)


def mismatch(actual: np.ndarray, expected: np.ndarray, atol: float = ATOL, rtol: float = RTOL) -> str | None:
    """None when ``actual`` matches ``expected`` (NaN matches NaN, ±Inf match exactly), else a message."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    if a.shape != e.shape:
        return f"shape {a.shape} != expected {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    if np.any(nan_a != nan_e):
        return f"NaN pattern differs ({int(nan_a.sum())} vs {int(nan_e.sum())} NaNs)"
    inf = np.isinf(e) | np.isinf(a)
    if np.any(a[inf] != e[inf]):
        return "Inf values differ"
    ok = ~(nan_e | inf)
    err = np.abs(a[ok] - e[ok])
    bound = atol + rtol * np.abs(e[ok])
    if np.any(err > bound):
        k = int(np.argmax(err - bound))
        ex = float((err - bound)[k])
        return f"max excess error {ex:.3g} (|a-e| = {float(err[k]):.3g}, e = {float(e[ok][k]):.4g})"
    return None


def predict(path: str, x_btf: np.ndarray) -> np.ndarray:
    """Run ``x_btf`` (B, T, I) through ``edgernn.load(path).predict``.

    Loaded with ``nonfinite="propagate"``: random graphs can overflow, and ONNX Runtime then returns
    NaN/Inf, which must match ours (the default policy would raise instead).
    """
    import edgernn

    m = edgernn.load(path, nonfinite="propagate")
    return np.asarray(m.predict(np.ascontiguousarray(x_btf, np.float32)))


def predict_onnx_layout(path: str, x: np.ndarray, io: dict) -> tuple[np.ndarray, callable]:
    """Predict on an ONNX-layout input; returns the (B, T, O) / (B, O) output and the converter
    that brings an ONNX output to the same layout. A graph without a time axis is run as one step
    per row (T = 1), and its output compared without the step axis."""
    y = predict(path, input_to_btf(x, io["input_axes"]))
    roles = [a if isinstance(a, str) else "F" for a in io["output_axes"]]
    if "T" not in roles and y.ndim == 3 and y.shape[1] == 1:
        y = y[:, 0]
    return y, lambda e: output_to_bf(e, io["output_axes"])


def export_causal_convlstm(path, hidden: int = 8) -> None:
    """Write to ``path`` a PyTorch causal Conv1d over time (F.pad of (k-1)·d = 4 zeros on the left, k 3,
    dilation 2, 3 -> 6 channels) + ReLU + LSTM 6 -> ``hidden`` + Linear -> 2, exported by torch.onnx
    (dynamo=False, x [B, T, 3] -> y [B, T, 2]); seeded. Needs torch."""
    import torch

    class ConvLSTM(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.conv = torch.nn.Conv1d(3, 6, kernel_size=3, dilation=2)
            self.lstm = torch.nn.LSTM(6, hidden, batch_first=True)
            self.head = torch.nn.Linear(hidden, 2)

        def forward(self, x):  # x [B, T, 3]
            z = torch.nn.functional.pad(x.transpose(1, 2), (4, 0))
            z = torch.relu(self.conv(z)).transpose(1, 2)
            return self.head(self.lstm(z)[0])

    torch.manual_seed(0)
    with torch.no_grad():
        torch.onnx.export(
            ConvLSTM().eval(),
            (torch.zeros(1, 7, 3),),
            str(path),
            input_names=["x"],
            output_names=["y"],
            dynamic_axes={"x": {0: "b", 1: "t"}, "y": {0: "b", 1: "t"}},
            opset_version=17,
            dynamo=False,
        )
