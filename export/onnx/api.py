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
    output: str | list[str] | None = None,
    labels: list[str] | None = None,
    calibration: np.ndarray | None = None,
    calibration_labels: np.ndarray | None = None,
    bind: dict | None = None,
    shapes: dict | None = None,
    state: dict | None = None,
    max_error: float | None = None,
    max_accuracy_drop: float | None = None,
    max_rmse_increase: float | None = None,
    example: np.ndarray | None = None,
) -> dict:
    """Compile the ONNX model at ``onnx_path`` into the ``.ernn`` artifact ``ernn_path``.

    ``quantize``: None (float32 weights), ``"int8"`` (int8 matrices with per-output-row symmetric scales)
    or ``"fp16"`` (float16 storage). ``output`` picks the graph output to compile, or a list of them
    (default: every graph output that is not a state output; several make a model of several outputs,
    returned by ``predict`` as a tuple in that order). ``labels``: optional class names (one per value
    of the first output). ``calibration``: optional representative input
    data, (T, I) or (B, T, I) float in the model's input units; with ``"int8"`` it calibrates the rounding
    (error-compensated on that data, see ``export/calibrate.py``; without it: nearest rounding) and it is
    the data of the quantization report (without it a deterministic random input is used);
    ``calibration_labels``: class ids (many_to_one) or regression targets for accuracy/RMSE change.
    ``bind``: graph inputs fixed at compile time (``{"sr": 16000}``: then folded, an ``If`` on them
    inlined); ``shapes``: sizes of inputs the file leaves open (``{"input": (1, 576)}``), applied after
    the bindings; ``state``: the step graph's state pairs, input -> output (``{"h": "hn"}``; default:
    found automatically, see ``export/onnx/passes/pairing.py``).
    With ``"int8"`` the file meets an accuracy budget (``export/budget.py``): ``max_error`` (a fraction of
    the float32 output's largest magnitude), ``max_accuracy_drop`` (pp) and ``max_rmse_increase`` (%),
    the last two on ``calibration_labels``; layers too sensitive for int8 stay fp16 or fp32 (default
    budget: 0.5 pp / 2 % with labels, else 2 × fp16's error, at least 0.01 %); ``quantization_budget``
    in the result says how.
    ``example``: inputs to measure that on when there is no calibration data (plus synthetic ones).

    Returns a dict: ``path``, ``plan`` (as written), ``io`` (axis roles of the ONNX input/output: "T",
    "B", "N" or feature sizes), ``ignored_outputs``, ``state_inputs``, ``state_pairs``, ``bound``,
    ``shapes``, ``notes``, ``bytes`` and, when
    quantizing, ``quantization_report``. Raises :class:`CompileError` for anything it cannot compile
    exactly, :class:`~edgernn.ArtifactError` if the result fails validation.
    """
    from ... import artifact

    if quantize not in (None, "none", "int8", "fp16"):
        raise CompileError(f"quantize must be None, 'int8' or 'fp16', got {quantize!r}")
    limits = (max_error, max_accuracy_drop, max_rmse_increase)
    if quantize != "int8" and any(v is not None for v in limits):
        raise CompileError("max_error / max_accuracy_drop / max_rmse_increase are budgets of quantize='int8'")
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise CompileError(f"no such file: {onnx_path!r}")
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    model = load_model(onnx_path)
    res = compile_graph(
        model,
        output=output,
        source=os.path.basename(onnx_path),
        sha256=sha,
        bind=bind,
        shapes=shapes,
        state=state,
    )
    plan, tensors = res["plan"], res["tensors"]
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != plan["output"]["size"]:
            raise CompileError(f"{len(labels)} labels for {plan['output']['size']} outputs")
        plan["output"]["labels"] = labels
        if "outputs" in plan:  # several outputs: the labels are the first one's
            plan["outputs"][0]["labels"] = labels
    report = None
    budget = None
    outputs = plan.get("outputs") or []
    if quantize in ("int8", "fp16") and len(outputs) > 1:
        names = ", ".join(repr(o["name"]) for o in outputs)
        raise CompileError(
            f"--quantize {quantize}: this model has {len(outputs)} outputs ({names}), which the quantizer "
            "does not measure yet; compile it without --quantize, or pick one with --graph-output NAME"
        )
    if quantize == "int8":
        from ..budget import quantize_with_budget
        from ..quantize import quantization_report

        qplan, qtensors, budget = quantize_with_budget(
            plan,
            tensors,
            calibration=calibration,
            labels=calibration_labels,
            max_error=max_error,
            max_accuracy_drop=max_accuracy_drop,
            max_rmse_increase=max_rmse_increase,
            exact_int8=res["exact_int8"],
            example=example,
        )
    elif quantize == "fp16":
        from ..quantize import quantization_report, quantize_plan

        qplan, qtensors = quantize_plan(
            plan, tensors, quantize, exact_int8=res["exact_int8"], calibration=calibration
        )
    if quantize in ("int8", "fp16"):
        report = quantization_report(
            artifact.validate_plan(plan), tensors, qplan, qtensors, calibration, calibration_labels
        )
        qplan["quantization_report"] = report
        plan, tensors = qplan, qtensors
    written = artifact.write(ernn_path, artifact.upgrade(plan), tensors)
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
            written = artifact.write(ernn_path, artifact.upgrade(plan), tensors)
        else:  # pragma: no cover - would need a pathological header
            raise CompileError("could not settle the size figure of the quantization report")
        report.pop("pad", None)
    out = dict(res)
    out.pop("tensors")
    out.pop("exact_int8")
    out.update({"path": os.fspath(ernn_path), "plan": written, "bytes": os.path.getsize(ernn_path)})
    if report is not None:
        out["quantization_report"] = report
    if budget is not None:
        budget["sizes"]["mixed_bytes"] = out["bytes"]  # the file as written (with its report)
        out["quantization_budget"] = budget
    return out
