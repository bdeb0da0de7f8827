"""Parity proof of an export: the same inputs through every backend, errors of every pair.

Backends (each yields the model's final output for a batch of sequences: ``(B, O)`` many-to-one,
``(B, T, O)`` many-to-many):

* ``torch`` — the module itself (the reference ``e`` of the float32 checks);
* ``onnx``, ``onnx_step`` (ONNX Runtime, ``model.onnx`` / a loop over ``model.step.onnx``) and their
  ``*_int8`` twins;
* ``ernn_predict``, ``ernn_step``, ``ernn_run`` (the edgernn runtime on ``model.ernn``) and their
  ``*_int8`` twins; ``ernn_torch`` when ``model.ernn`` came from the ONNX compiler and the directly
  mapped artifact is checked beside it.

float32 backends must agree with torch within ``|a - e| <= ATOL + RTOL * |e|`` (ONNX Runtime's own
float32 tolerance); int8 backends are reported against the stated :data:`INT8_BOUND`.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
import warnings
from collections.abc import Callable

import numpy as np

ATOL = 1e-5
RTOL = 1e-4
#: int8 backends are expected within ``|a - e| <= INT8_ATOL + INT8_RTOL * max|e|`` (reported, not fatal).
INT8_ATOL, INT8_RTOL = 0.02, 0.05
INT8_BOUND = f"|a - e| <= {INT8_ATOL} + {INT8_RTOL} * max|e|"


@contextlib.contextmanager
def torch_reference():
    """``no_grad`` with oneDNN off: its LSTM re-plans for every new input shape (~0.1 s each), ATen's own
    kernels compute the same cells without that cost."""
    import torch

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        with torch.no_grad(), torch.backends.mkldnn.flags(enabled=False):
            yield


def compare(a: np.ndarray, e: np.ndarray) -> dict:
    """Max abs error, max rel error (``|a-e| / max(|e|, 1e-6)``) and max tolerance ratio (<= 1 passes)."""
    a = np.asarray(a, dtype=np.float64)
    e = np.asarray(e, dtype=np.float64)
    if a.shape != e.shape:
        return {
            "max_abs": float("inf"),
            "max_rel": float("inf"),
            "tol_ratio": float("inf"),
            "shape": str(a.shape),
        }
    if a.size == 0:
        return {"max_abs": 0.0, "max_rel": 0.0, "tol_ratio": 0.0}
    diff = np.abs(a - e)
    bad = ~np.isfinite(a) | ~np.isfinite(e)
    diff = np.where(bad & (a != e), np.inf, np.where(bad, 0.0, diff))
    return {
        "max_abs": float(diff.max()),
        "max_rel": float((diff / np.maximum(np.abs(e), 1e-6)).max()),
        "tol_ratio": float((diff / (ATOL + RTOL * np.abs(e))).max()),
    }


def ort_session(path: str):
    import onnxruntime as ort

    opts = ort.SessionOptions()
    opts.intra_op_num_threads = 1
    opts.inter_op_num_threads = 1
    return ort.InferenceSession(path, opts, providers=["CPUExecutionProvider"])


def ort_sequence(path: str) -> Callable[[np.ndarray], np.ndarray]:
    sess = ort_session(path)
    return lambda X: sess.run(["output"], {"input": X})[0]


def ort_step(path: str, many_to_one: bool, every_step: bool = False) -> Callable[[np.ndarray], np.ndarray]:
    """A loop over a step graph; returns the last output (many-to-one) or every output."""
    sess = ort_session(path)
    ins = [i.name for i in sess.get_inputs()]
    outs = [o.name for o in sess.get_outputs()]
    states = [(i.name, i.shape[1]) for i in sess.get_inputs()[1:]]

    def run(X: np.ndarray) -> np.ndarray:
        st = {n: np.zeros((X.shape[0], k), np.float32) for n, k in states}
        ys = []
        for t in range(X.shape[1]):
            res = sess.run(outs, {ins[0]: X[:, t], **st})
            ys.append(res[0])
            st = {n: v for (n, _), v in zip(states, res[1:], strict=True)}
        Y = np.stack(ys, axis=1)
        return Y[:, -1] if many_to_one and not every_step else Y

    return run


def _batched(X: np.ndarray) -> np.ndarray:
    """(B, T) token ids -> (B, T, 1): unambiguous for ``predict`` (a (1, 1) array could be (T, I))."""
    return X[..., None] if X.ndim == 2 else X


def ernn_backends(path: str, many_to_one: bool, streamable: bool, prefix: str) -> dict[str, Callable]:
    """``predict``, ``step`` and ``run`` of the edgernn runtime on one artifact."""
    import edgernn

    model = edgernn.load(path)
    out: dict[str, Callable] = {f"{prefix}_predict": lambda X: np.asarray(model.predict(_batched(X)))}
    if not streamable:
        return out

    def step(X):
        res = []
        for b in range(X.shape[0]):
            s = model.stream()
            ys = np.stack([s.step(X[b, t]) for t in range(X.shape[1])])
            res.append(ys[-1] if many_to_one else ys)
        return np.stack(res)

    def run(X):
        res = []
        for b in range(X.shape[0]):
            ys = model.stream().run(X[b])
            res.append(ys[-1] if many_to_one else ys)
        return np.stack(res)

    out[f"{prefix}_step"] = step
    out[f"{prefix}_run"] = run
    return out


def _hooked_outputs(desc, module, X: np.ndarray) -> dict[int, np.ndarray]:
    """Outputs of the user module's own submodules (forward hooks), batch-first, per plan layer index."""
    import torch

    if module is None or not any(desc.sources):
        return {}
    calls: dict[int, list] = {}
    hooks = []
    for src in desc.sources:
        if src is not None and id(src[0]) not in calls:
            key = id(src[0])
            calls[key] = []

            def hook(mod, inp, out, key=key):
                calls[key].append(out[0] if isinstance(out, (tuple, list)) else out)

            hooks.append(src[0].register_forward_hook(hook))
    try:
        with torch_reference():
            module(torch.from_numpy(X))
    finally:
        for h in hooks:
            h.remove()
    found = {}
    for k, src in enumerate(desc.sources):
        if src is not None and src[1] < len(calls[id(src[0])]):
            y = calls[id(src[0])][src[1]]
            if desc.time_first and y.dim() == 3:
                y = y.transpose(0, 1)
            found[k] = y.numpy()
    return found


def locate_divergence(desc, X: np.ndarray, backend: str, workdir: str, module=None) -> str:
    """Name the first plan layer whose output (torch vs. the same prefix of the plan) diverges.

    The torch side of layer k is the output of the user module's own submodule when ``module`` (the
    batch-first wrapper) is given and a forward hook sees it, else the torch stage of that plan layer.
    The prefix of the plan runs in the edgernn runtime for ``ernn_*`` backends, else as an ONNX graph built
    from the plan (ONNX Runtime).
    """
    import torch

    hooked = _hooked_outputs(desc, module, X)

    from ..artifact import write
    from .onnx_graph import sequence_graph

    plan, tensors = desc.plan, desc.tensors
    with torch_reference():
        h = torch.from_numpy(X)
        for k, (layer, stage) in enumerate(zip(plan["layers"], desc.stages, strict=True)):
            h = stage(h)
            ref = hooked.get(k, h.numpy())
            sub = dict(plan, layers=plan["layers"][: k + 1], quantization="none")
            sub["output"] = {"size": layer["output_size"], "sequence": "many_to_many", "labels": None}
            names = {n for lay in sub["layers"] for n in lay["tensors"].values()}
            subt = {n: tensors[n] for n in names}
            try:
                if backend.startswith("ernn"):
                    import edgernn

                    p = os.path.join(workdir, f"prefix{k}.ernn")
                    write(p, sub, subt)
                    got = np.asarray(edgernn.load(p).predict(_batched(X)))
                else:
                    got = ort_sequence_model(sequence_graph(sub, subt, "native"))(X)
            except Exception as e:  # noqa: BLE001 - report, do not mask the parity failure
                return f"layer {k} ({layer['name']!r}, {layer['kind']}) could not be checked alone: {e}"
            if ref.ndim == 2 and got.ndim == 3:  # the module's submodule saw only the last step
                got = got[:, -1]
            c = compare(got, ref)
            if c["tol_ratio"] > 1.0:
                return (
                    f"layer {k} ({layer['name']!r}, {layer['kind']}): max abs error {c['max_abs']:.3g} "
                    f"against torch at that layer's output"
                )
    return "no single layer diverges when checked layer by layer; the difference is in the whole graph"


def ort_sequence_model(model) -> Callable[[np.ndarray], np.ndarray]:
    import onnxruntime as ort

    sess = ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"])
    return lambda X: sess.run(["output"], {"input": X})[0]


def run_parity(
    backends: dict[str, Callable[[np.ndarray], np.ndarray]],
    inputs: dict[str, np.ndarray],
    reference: str = "torch",
) -> tuple[dict, dict[str, dict[str, np.ndarray]], dict[str, str]]:
    """Run every backend on every input. Returns (pairs, outputs, errors).

    ``pairs["a|b"]`` holds the worst :func:`compare` of a against b over all inputs.
    """
    outputs: dict[str, dict[str, np.ndarray]] = {}
    errors: dict[str, str] = {}
    for name, fn in backends.items():
        outputs[name] = {}
        for iname, X in inputs.items():
            try:
                outputs[name][iname] = np.asarray(fn(X), dtype=np.float32)
            except Exception as e:  # noqa: BLE001 - a crashing backend is a reported failure
                errors[name] = f"{type(e).__name__}: {e}"
                break
    ok = [n for n in backends if n not in errors]
    pairs: dict[str, dict] = {}
    for i, a in enumerate(ok):
        for b in ok[i + 1 :]:
            worst: dict = {}
            for iname in inputs:
                # a against b with b as the expected value; the reference is always the expected side
                x, e = (
                    (outputs[a][iname], outputs[b][iname])
                    if a != reference
                    else (outputs[b][iname], outputs[a][iname])
                )
                c = compare(x, e)
                for k, v in c.items():
                    if isinstance(v, float):
                        worst[k] = max(worst.get(k, 0.0), v)
            key = f"{b}|{a}" if a == reference else f"{a}|{b}"
            pairs[key] = worst
    return pairs, outputs, errors


def tmpdir():
    return tempfile.TemporaryDirectory(prefix="edgernn-parity-")
