"""The parity proof of an export, for :func:`.exporter.export`: every written backend against torch.

:func:`_verify` runs torch, the ONNX graphs (sequence and step, fp32 and int8) and the ``.ernn`` files
(every runtime route) on the example input and on synthetic sequences like it (:func:`_random_inputs`),
fills the report's comparisons, and names the first layer where a float32 backend that disagrees with
torch diverges. :func:`_json_safe` keeps ``report.json`` strict JSON.
"""

from __future__ import annotations

import os

import numpy as np

from . import parity
from .staging import FAILED_REPORT


def _random_inputs(example, tokens: bool, vocab: int | None, seed: int = 0) -> dict[str, np.ndarray]:
    rng = np.random.default_rng(seed)
    ex = example.numpy()
    T = max(ex.shape[1], 4) + 3
    if tokens:
        return {
            "random": rng.integers(0, vocab, size=(3, T)).astype(np.int64),
            "random_short": ex[:1, :1].copy(),
        }
    mean = ex.reshape(-1, ex.shape[-1]).mean(0)
    std = ex.reshape(-1, ex.shape[-1]).std(0) + 0.1
    X = (mean + std * rng.standard_normal((3, T, ex.shape[-1]))).astype(np.float32)
    return {"random": X, "random_short": X[:2, :1].copy()}


def _json_safe(obj):
    """Non-finite floats as strings ("inf", "nan"): report.json stays strict JSON."""
    if isinstance(obj, float) and not np.isfinite(obj):
        return str(obj)
    if isinstance(obj, dict):
        return {k: _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    return obj


def _verify(report, wrapper, desc, files, example, quantize, direct_ernn, seed, out_dir):
    import torch

    many_to_one = desc.many_to_one
    inputs = {"example": example.numpy()}
    inputs.update(_random_inputs(example, desc.tokens, desc.plan["input"].get("vocab_size"), seed))

    def torch_fn(X):
        with parity.torch_reference():
            return wrapper(torch.from_numpy(X)).numpy()

    backends = {"torch": torch_fn, "onnx": parity.ort_sequence(files["model.onnx"])}
    if "model.step.onnx" in files:
        backends["onnx_step"] = parity.ort_step(files["model.step.onnx"], many_to_one)
    fp32 = ["onnx", "onnx_step"]
    runtime_note = None
    try:
        import edgernn

        has_runtime = hasattr(edgernn, "load")
    except ImportError:  # pragma: no cover
        has_runtime = False
    if has_runtime:
        b = parity.ernn_backends(files["model.ernn"], many_to_one, desc.streamable, "ernn")
        backends.update(b)
        fp32 += list(b)
        if direct_ernn:
            b = parity.ernn_backends(direct_ernn, many_to_one, False, "ernn_torch")
            backends.update(b)
            fp32 += list(b)
    else:
        runtime_note = "edgernn runtime (edgernn.load) not available: .ernn files written but not run"
        report["notes"].append(runtime_note)
    int8 = []
    if quantize == "int8":
        backends["onnx_int8"] = parity.ort_sequence(files["model.int8.onnx"])
        int8.append("onnx_int8")
        if "model.step.int8.onnx" in files:
            backends["onnx_step_int8"] = parity.ort_step(files["model.step.int8.onnx"], many_to_one)
            int8.append("onnx_step_int8")
        if has_runtime:
            b = parity.ernn_backends(files["model.int8.ernn"], many_to_one, desc.streamable, "ernn_int8")
            backends.update(b)
            int8 += list(b)
    pairs, outputs, errors = parity.run_parity(backends, inputs)
    report["inputs"] = {k: list(v.shape) for k, v in inputs.items()}
    report["backends"] = list(backends)
    report["pairs"] = pairs
    if errors:
        report["backend_errors"] = errors
    checks = {}
    failed = []
    for name in fp32:
        if name not in backends:
            continue
        if name in errors:
            checks[name] = {"ok": False, "error": errors[name]}
            failed.append(name)
            continue
        c = pairs[f"{name}|torch"]
        checks[name] = {"ok": c["tol_ratio"] <= 1.0, **c}
        if c["tol_ratio"] > 1.0:
            failed.append(name)
    report["fp32_vs_torch"] = checks
    scale = max(float(np.max(np.abs(o))) for o in outputs["torch"].values())
    q = {}
    for name in int8:
        if name in errors:
            q[name] = {"ok": False, "error": errors[name]}
            continue
        c = pairs[f"{name}|torch"]
        q[name] = {"within_bound": c["max_abs"] <= parity.INT8_ATOL + parity.INT8_RTOL * scale, **c}
    if q:
        report["int8_vs_torch"] = q
    # streaming semantics: a many-to-one model's step returns the prediction for the prefix seen so far
    if many_to_one and desc.streamable:
        X = inputs["random"]
        with torch.no_grad():
            prefix = np.stack([torch_fn(X[:, : t + 1]) for t in range(X.shape[1])], axis=1)
        so_far = {"onnx_step": parity.ort_step(files["model.step.onnx"], True, every_step=True)(X)}
        if has_runtime:
            import edgernn

            m = edgernn.load(files["model.ernn"])
            so_far["ernn_step"] = np.stack([m.stream().run(X[b]) for b in range(X.shape[0])])
        report["step_so_far_vs_torch_prefixes"] = {}
        for name, Y in so_far.items():
            c = parity.compare(Y, prefix)
            report["step_so_far_vs_torch_prefixes"][name] = {"ok": c["tol_ratio"] <= 1.0, **c}
            if c["tol_ratio"] > 1.0:
                failed.append(f"{name} (prediction so far)")
    if not failed:
        return True, None
    first = failed[0].split(" ")[0]
    with parity.tmpdir() as tmp:
        where = parity.locate_divergence(desc, inputs["random"], first, tmp, module=wrapper)
    detail = checks.get(first, {})
    msg = (
        f"export parity failed: {', '.join(failed)} disagree with torch beyond "
        f"|a - e| <= {parity.ATOL} + {parity.RTOL}·|e|"
    )
    if "max_abs" in detail:
        msg += f" (max abs error {detail['max_abs']:.3g})"
    if "error" in detail:
        msg += f" ({detail['error']})"
    msg += f"; first divergence: {where}. See {os.path.join(out_dir, FAILED_REPORT)} (nothing else written)"
    report["failure"] = msg
    return False, msg
