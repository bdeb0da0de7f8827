"""Compiling an ONNX file into an ``.ernn`` artifact: load, compile, optionally quantize, write."""

from __future__ import annotations

import hashlib
import os

import numpy as np

from .compiler import compile_graph
from .errors import CompileError
from .load import load_model

__all__ = ["compile_onnx"]


def compile_onnx(
    onnx_path: str | os.PathLike,
    ernn_path: str | os.PathLike,
    quantize: str | None = None,
    *,
    output: str | None = None,
    labels: list[str] | None = None,
    calibration: np.ndarray | None = None,
    calibration_labels: np.ndarray | None = None,
) -> dict:
    """Compile the ONNX model at ``onnx_path`` into the ``.ernn`` artifact ``ernn_path``.

    ``quantize``: None (float32 weights), ``"int8"`` (int8 matrices with per-output-row symmetric scales)
    or ``"fp16"`` (float16 storage). ``output`` picks the graph output to compile (default: the first).
    ``labels``: optional class names (one per output). ``calibration``: optional representative input
    data, (T, I) or (B, T, I) float in the model's input units; with ``"int8"`` it calibrates the rounding
    (error-compensated on that data, see ``export/calibrate.py``; without it: nearest rounding) and it is
    the data of the quantization report (without it a deterministic random input is used);
    ``calibration_labels``: class ids (many_to_one) or regression targets for accuracy/RMSE change.

    Returns a dict: ``path``, ``plan`` (as written), ``io`` (axis roles of the ONNX input/output: "T",
    "B", "N" or feature sizes), ``ignored_outputs``, ``state_inputs``, ``notes``, ``bytes`` and, when
    quantizing, ``quantization_report``. Raises :class:`CompileError` for anything it cannot compile
    exactly, :class:`~edgernn.ArtifactError` if the result fails validation.
    """
    from ... import artifact

    if quantize not in (None, "none", "int8", "fp16"):
        raise CompileError(f"quantize must be None, 'int8' or 'fp16', got {quantize!r}")
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise CompileError(f"no such file: {onnx_path!r}")
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    model = load_model(onnx_path)
    res = compile_graph(model, output=output, source=os.path.basename(onnx_path), sha256=sha)
    plan, tensors = res["plan"], res["tensors"]
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != plan["output"]["size"]:
            raise CompileError(f"{len(labels)} labels for {plan['output']['size']} outputs")
        plan["output"]["labels"] = labels
    report = None
    if quantize in ("int8", "fp16") and plan["format_version"] == 2:
        raise CompileError(
            f"--quantize {quantize}: this model compiles to a graph plan (a value read by several ops), "
            "which the quantizer does not handle yet; compile it without --quantize"
        )
    if quantize in ("int8", "fp16"):
        from ..quantize import quantization_report, quantize_plan

        qplan, qtensors = quantize_plan(
            plan, tensors, quantize, exact_int8=res["exact_int8"], calibration=calibration
        )
        report = quantization_report(
            artifact.validate_plan(plan), tensors, qplan, qtensors, calibration, calibration_labels
        )
        qplan["quantization_report"] = report
        plan, tensors = qplan, qtensors
    written = artifact.write(ernn_path, plan, tensors)
    if report is not None:
        # the report is part of the file: settle its own "bytes" figure (converges in 1-2 rounds)
        # (the claimed size only grows; a growing pad field reaches it: at most a few rounds)
        for _ in range(64):
            size = os.path.getsize(ernn_path)
            if report["bytes"] == size:
                break
            if size > report["bytes"]:
                report["bytes"] = size
                report["size_ratio"] = round(size / report["float32_bytes"], 4)
            else:
                report["pad"] = report.get("pad", "") + " "
            plan["quantization_report"] = report
            written = artifact.write(ernn_path, plan, tensors)
        else:  # pragma: no cover - would need a pathological header
            raise CompileError("could not settle the size figure of the quantization report")
        report.pop("pad", None)
    out = dict(res)
    out.pop("tensors")
    out.pop("exact_int8")
    out.update({"path": os.fspath(ernn_path), "plan": written, "bytes": os.path.getsize(ernn_path)})
    if report is not None:
        out["quantization_report"] = report
    return out
