"""``export(module, out_dir, example_input, quantize=None)``: one trained module -> every deployable file.

Writes into ``out_dir``:

* ``model.onnx`` — the sequence graph, ``input`` ``(batch, time, features)`` (int64 ``(batch, time)`` for
  token models) -> ``output``, dynamic batch and time. torch's legacy exporter (``dynamo=False``: plain
  ``LSTM``/``GRU``/``RNN`` nodes, weights as initializers, no side data file); an ESN (a Python loop in
  torch) gets a graph built from its plan with a ``Scan`` over time. A time-first user module is wrapped
  so that every file takes batch-first inputs.
* ``model.step.onnx`` — one step, ``x`` plus every layer's state in, ``y`` plus the new states out, all
  states starting at zeros (not written for bidirectional models: a reverse direction needs the whole
  sequence).
* ``model.ernn`` — the edgernn artifact (the ONNX compiler's output when it is available and handles the
  model, else the weights mapped straight from torch).
* with ``quantize="int8"``: ``model.int8.onnx`` and ``model.step.int8.onnx`` (ONNX Runtime dynamic
  quantization; for GRU/RNN/ESN models of the MatMul form of the cells, which the quantizer handles where
  it leaves GRU/RNN nodes float) and ``model.int8.ernn`` (per-row symmetric int8 weights).
* ``report.json`` — files and sizes, int8/fp32 size ratios, and the error of every pair of backends.

Any float32 backend farther than ``1e-5 + 1e-4·|e|`` from torch raises :class:`ExportParityError` naming
the first layer where the outputs diverge. The files are written into a staging folder next to ``out_dir``
and moved into place only when that proof passes (a successful export also removes the files of this list
that an earlier export left and this one did not write); a failed export leaves ``out_dir`` as it was, plus
``report.failed.json`` (the report of the failed proof).

This module is the pipeline and the ONNX files it writes; the module's layout and its example input are
read by :mod:`.exporter_inputs`, the parity proof is :mod:`.exporter_proof`.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
import warnings
from typing import Any

import numpy as np

from ..errors import EdgeRNNError, InputError
from . import parity
from .exporter_inputs import _as_input, _is_token_module, _time_first, _wrap
from .exporter_proof import _json_safe, _verify
from .staging import staged

#: ONNX Runtime dynamic quantization per channel? Per-tensor keeps the int8 files small (one scale per
#: weight instead of one per column) at a negligible accuracy cost for these models.
PER_CHANNEL = False


class ExportParityError(EdgeRNNError):
    """An exported float32 backend disagrees with the PyTorch module beyond tolerance."""


def _torch_export(wrapper, example, path: str, many_to_one: bool) -> None:
    import onnx
    import torch

    axes = {
        "input": {0: "batch", 1: "time"},
        "output": {0: "batch"} if many_to_one else {0: "batch", 1: "time"},
    }
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(
            wrapper,
            (example,),
            path,
            dynamo=False,
            opset_version=17,
            input_names=["input"],
            output_names=["output"],
            dynamic_axes=axes,
            do_constant_folding=True,
        )
    model = onnx.load(path)
    onnx.checker.check_model(model, full_check=True)
    for node in model.graph.node:
        if node.op_type == "GRU":
            lbr = [a.i for a in node.attribute if a.name == "linear_before_reset"]
            if lbr != [1]:
                raise ExportParityError(f"exported GRU node {node.name!r} lacks linear_before_reset=1")
    if os.path.exists(path + ".data") or any(
        t.data_location == onnx.TensorProto.EXTERNAL for t in model.graph.initializer
    ):
        raise ExportParityError(f"{path} is not self-contained (external data)")


def _save_onnx(model, path: str) -> None:
    import onnx

    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, path)


def _compile_onnx():
    """The ONNX compiler (``export/onnx_compiler.py``, issue 4) when it is present, else None."""
    try:
        from .onnx import compile_onnx
    except ImportError:
        return None
    return compile_onnx


def _int8_onnx(src: str, dst: str, plan: dict, tensors: dict, choices: dict) -> dict[str, str]:
    """ORT int8 of ``src`` with the layers the budget kept wider excluded; layer -> what the file holds."""
    import onnx

    from .ort_budget import name_nodes, nodes_of_layers, ort_layer_notes, quantize_onnx

    model = onnx.load(src)
    name_nodes(model)
    exclude, notes = ort_layer_notes(choices, nodes_of_layers(model, plan, tensors))
    quantize_onnx(src, dst, exclude, PER_CHANNEL)
    return notes


def export(
    module,
    out_dir: str | os.PathLike,
    example_input: Any,
    quantize: str | None = None,
    verify: bool = True,
    seed: int = 0,
    calibration: Any = None,
    calibration_labels: Any = None,
    max_error: float | None = None,
    max_accuracy_drop: float | None = None,
    max_rmse_increase: float | None = None,
) -> dict:
    """Export a trained module to ONNX (sequence + step, fp32 and int8) and ``.ernn``, and prove parity.

    Parameters
    ----------
    module : an :class:`edgernn.models.SequenceModel` / :class:`~edgernn.models.ESN`, or a user's
        ``nn.Module`` built from ``nn.Embedding``, ``nn.RNN/LSTM/GRU`` and ``nn.Linear`` (+ activations).
    out_dir : directory to write (created if needed).
    example_input : ``(batch, time, features)`` floats, or ``(batch, time)`` token ids — always batch-first,
        also for a time-first module.
    quantize : ``None`` or ``"int8"``.
    verify : run the parity proof (always on in the CLI's ``--verify``; the proof is cheap for small inputs).
    calibration : representative inputs, in ``example_input``'s layout (a few hundred sequences, or a few
        long ones, of real data): with ``quantize="int8"`` the ``.ernn`` weights are rounded to minimise the
        output error on them (error-compensated, per matrix; ``export/calibrate.py``); the artifact records
        how each matrix was rounded (``quantization_rounding``). Without it: nearest rounding.
    calibration_labels : class ids (one per sequence, or per step for many-to-many) or regression targets
        of ``calibration``, for the task budgets below.
    max_error, max_accuracy_drop, max_rmse_increase : the int8 files' accuracy budget
        (``export/budget.py``): the max output error as a fraction of the float32 output's largest
        magnitude, the accuracy drop in percentage points, the RMSE increase in percent (the last two on
        ``calibration_labels``). Layers too sensitive for int8 stay fp16 or fp32 in ``model.int8.ernn``
        (and fp32 in the int8 ONNX files) until the whole model meets it. Default budget: 0.5 pp /
        2 % with labels, else 2 × the error of fp16 everywhere (at least 0.01 %). Measured on
        ``calibration`` (else ``example_input`` plus synthetic sequences like it);
        ``report["quantization_budget"]`` shows per-layer sensitivity and choices.

    Returns the report (also written to ``out_dir/report.json``). Raises :class:`ExportParityError` when a
    float32 backend disagrees with torch beyond ``1e-5 + 1e-4·|e|``: then nothing in ``out_dir`` changes
    but ``out_dir/report.failed.json``.
    """
    if quantize not in (None, "int8"):
        raise ValueError(f"quantize must be None or 'int8', got {quantize!r}")
    budget = {
        "max_error": max_error,
        "max_accuracy_drop": max_accuracy_drop,
        "max_rmse_increase": max_rmse_increase,
    }
    if quantize is None and any(v is not None for v in budget.values()):
        raise InputError("max_error / max_accuracy_drop / max_rmse_increase are budgets of quantize='int8'")
    budget["labels"] = calibration_labels
    out_dir = os.fspath(out_dir)
    scratch = tempfile.mkdtemp(prefix="edgernn-export-")
    try:
        with staged(out_dir, ExportParityError) as stage:  # out_dir changes only if the proof passes
            return _export(
                module, stage, example_input, quantize, verify, seed, scratch, calibration, out_dir, budget
            )
    finally:
        shutil.rmtree(scratch, ignore_errors=True)


def _export(
    module,
    out_dir,
    example_input,
    quantize,
    verify,
    seed,
    scratch,
    calibration=None,
    final_dir=None,
    budget=None,
) -> dict:
    """Write every file into ``out_dir`` (the staging folder); messages name ``final_dir``."""
    import torch

    from .. import artifact
    from ..artifact import write
    from ..models import ESN
    from .from_torch import describe
    from .onnx_graph import sequence_graph, step_graph
    from .readout import with_compiled_readout

    module = module.eval()
    tokens = _is_token_module(module)
    example = _as_input(example_input, tokens)
    cal = None
    if calibration is not None:
        cal = _as_input(calibration, tokens).numpy().astype(np.float32)
        cal = cal[..., None] if tokens else cal
    time_first = _time_first(module)
    wrapper = _wrap(module, time_first)
    with torch.no_grad():
        y_ex = wrapper(example)
    desc = describe(module, example_output_ndim=y_ex.dim())
    plan, tensors = desc.plan, desc.tensors
    many_to_one = desc.many_to_one
    notes: list[str] = []
    files: dict[str, str] = {}

    def path(name: str) -> str:
        files[name] = os.path.join(out_dir, name)
        return files[name]

    kinds = {lay["kind"] for lay in plan["layers"]}
    # ---- ONNX fp32
    if isinstance(module, ESN):
        _save_onnx(sequence_graph(plan, tensors, "native"), path("model.onnx"))
        notes.append("model.onnx: ESN reservoir as an ONNX Scan over time, built from the plan")
    else:
        _torch_export(wrapper, example, path("model.onnx"), many_to_one)
    if desc.streamable:
        _save_onnx(step_graph(plan, tensors, "native"), path("model.step.onnx"))
    else:
        notes.append(
            "no model.step.onnx: the model has a bidirectional layer, whose reverse direction needs the "
            "whole sequence; it runs through the sequence graph / Model.predict only"
        )
    # ---- .ernn
    compile_onnx = _compile_onnx()
    ernn_direct = path("model.ernn")
    compiled_from_onnx = False
    labels = plan["output"].get("labels")
    if compile_onnx is not None and not (kinds & {"esn", "attention"}):
        try:
            compile_onnx(files["model.onnx"], ernn_direct, labels=labels)
            compiled_from_onnx = True
            notes.append(
                "model.ernn compiled from model.onnx (ONNX is the source of truth); checked against an "
                "artifact mapped straight from the torch weights (ernn_torch_predict)"
            )
            mapped = desc
            desc = with_compiled_readout(desc, artifact.read(ernn_direct)[0])
            if desc is not mapped:
                plan, tensors = desc.plan, desc.tensors
                notes.append(
                    "the module's head reads the final states of a reverse direction (ONNX Y_h): the "
                    "plan mapped from torch reads them through a final op, as the compiled one does"
                )
        except Exception as e:  # noqa: BLE001 - fall back to the direct mapping, say so
            notes.append(f"compile_onnx failed ({type(e).__name__}: {e}); model.ernn mapped from torch")
    if not compiled_from_onnx:
        write(ernn_direct, artifact.upgrade(plan), tensors)
    # ---- int8: the .ernn first (the budget's per-layer choice), then ORT's files with the same choice
    budget_report = None
    if quantize == "int8":
        budget = dict(budget or {})
        labels_cal = budget.pop("labels", None)
        if compiled_from_onnx:
            res = compile_onnx(
                files["model.onnx"],
                path("model.int8.ernn"),
                "int8",
                labels=labels,
                calibration=cal,
                calibration_labels=labels_cal,
                example=example.numpy()[..., None] if tokens else example.numpy(),
                **budget,
            )
            budget_report = res["quantization_budget"]
        else:
            from .budget import quantize_with_budget

            qplan, qtensors, budget_report = quantize_with_budget(
                plan,
                tensors,
                calibration=cal,
                labels=labels_cal,
                example=example.numpy()[..., None] if tokens else example.numpy(),
                **budget,
            )
            write(path("model.int8.ernn"), artifact.upgrade(qplan), qtensors)
        choices = {ly["name"]: ly["choice"] for ly in budget_report["layers"]}
        budget_report["sizes"]["mixed_bytes"] = os.path.getsize(files["model.int8.ernn"])
        # the layer names of the choice are the plan's the budget ran on (the compiled one when compiled)
        mplan, mtensors = artifact.read(ernn_direct) if compiled_from_onnx else (plan, tensors)
        native_ok = kinds.isdisjoint({"rnn", "gru", "esn"})
        if native_ok:
            int8_seq_src = files["model.onnx"]
            step_src = files.get("model.step.onnx")
        else:
            int8_seq_src = os.path.join(scratch, "model.matmul.onnx")
            _save_onnx(sequence_graph(plan, tensors, "matmul"), int8_seq_src)
            step_src = None
            if desc.streamable:
                step_src = os.path.join(scratch, "model.step.matmul.onnx")
                _save_onnx(step_graph(plan, tensors, "matmul"), step_src)
            notes.append(
                "int8 ONNX from the MatMul form of the cells "
                "(ONNX Runtime's quantizer leaves GRU/RNN nodes float)"
            )
        from .budget_data import measurement
        from .ort_budget import onnx_int8_within_budget

        ex = example.numpy()[..., None] if tokens else example.numpy()
        xs, _, lab = measurement(mplan, mtensors, cal, ex, labels_cal)
        ort8 = onnx_int8_within_budget(
            int8_seq_src, path("model.int8.onnx"), mplan, mtensors, budget_report, xs, lab, PER_CHANNEL
        )
        budget_report["onnx_int8"] = ort8["layers"]
        budget_report["onnx_int8_final"] = {**ort8["final"], "met": ort8["met"], "widened": ort8["widened"]}
        if ort8["widened"]:
            notes.append(
                "model.int8.onnx: ORT's run-time activation quantization missed the budget; kept float32 "
                f"there too: {', '.join(ort8['widened'])}"
            )
        if step_src:  # the same layers excluded (its nodes are found by their weights, as above)
            wide = {**choices, **dict.fromkeys(ort8["widened"], "fp32")}
            _int8_onnx(step_src, path("model.step.int8.onnx"), mplan, mtensors, wide)
        if not budget_report["met"]:
            notes.append(f"model.int8.ernn: {budget_report['outcome']}")
    # ---- parity
    report: dict[str, Any] = {
        "model": {
            "class": type(module).__name__,
            "layers": [
                {k: lay[k] for k in ("name", "kind", "input_size", "output_size")} for lay in plan["layers"]
            ],
            "input": plan["input"],
            "output": plan["output"],
            "parameters": int(sum(v.size for v in tensors.values())),
            "time_first_module": time_first,
            "streamable": desc.streamable,
        },
        "tolerance": {"fp32": f"|a - e| <= {parity.ATOL} + {parity.RTOL} * |e|", "int8": parity.INT8_BOUND},
        "notes": notes,
    }
    ok = True
    failure = None
    if verify:
        direct = None
        if compiled_from_onnx:
            direct = os.path.join(scratch, "model.torch.ernn")
            write(direct, plan, tensors)
        ok, failure = _verify(
            report, wrapper, desc, files, example, quantize, direct, seed, final_dir or out_dir
        )
    sizes = {name: os.path.getsize(p) for name, p in files.items()}
    report["files"] = sizes
    ratios = {}
    for q, f in (
        ("model.int8.onnx", "model.onnx"),
        ("model.step.int8.onnx", "model.step.onnx"),
        ("model.int8.ernn", "model.ernn"),
    ):
        if q in sizes and f in sizes:
            ratios[q] = round(sizes[q] / sizes[f], 4)
    report["size_ratio_int8_vs_fp32"] = ratios
    if budget_report is not None:
        report["quantization_budget"] = budget_report
    report["ok"] = ok
    with open(os.path.join(out_dir, "report.json"), "w") as f:
        json.dump(_json_safe(report), f, indent=2, allow_nan=False)
        f.write("\n")
    if not ok:
        raise ExportParityError(failure)
    return report
