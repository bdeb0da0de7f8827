"""``edgernn export``: a trained checkpoint -> model.onnx, model.step.onnx, model.ernn (+ int8), report.json.

    edgernn export model.safetensors -o out/ [--quantize int8 [--calibration X.npy [--calibration-labels Y]]
                   [--max-error E | --max-accuracy-drop PP | --max-rmse-increase PCT]] [--verify]
    edgernn export --factory mypkg.nets:build --weights w.safetensors -o out/ [--example x.npy]

An edgernn checkpoint (``edgernn.models.save``) carries its own configuration. A user's own module is
built by calling ``--factory`` (``pkg.module:function`` importable from the current directory, or
``path/to/file.py:function``) with no arguments, then loaded with the ``--weights`` safetensors file.
Without ``--example`` the parity proof uses random inputs (``--batch`` x ``--time``). ``--calibration``
(representative real inputs, same layout as ``--example``) makes the int8 ``.ernn`` rounding minimise the
output error on that data instead of rounding each weight to nearest. The int8 files meet an accuracy
budget (``export/budget.py``): layers too sensitive for int8 stay fp16 or fp32, and the printout shows
each layer's measured sensitivity, the choice, the final error and the sizes.
"""

from __future__ import annotations

import argparse
import os
import sys

HELP = "export a PyTorch checkpoint to ONNX (+ step and int8 graphs) and .ernn, with a parity report"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """Arguments of ``edgernn export``."""
    parser.add_argument("checkpoint", nargs="?", help="edgernn checkpoint (edgernn.models.save)")
    parser.add_argument("-o", "--output", required=True, metavar="OUT_DIR", help="directory to write")
    parser.add_argument("--quantize", choices=["int8"], help="also write int8 ONNX and .ernn files")
    parser.add_argument(
        "--verify",
        action="store_true",
        help="also fail when an int8 backend is outside its stated bound, and print every pair's error",
    )
    parser.add_argument("--factory", metavar="MODULE:FUNCTION", help="build a user's nn.Module by this call")
    parser.add_argument("--weights", metavar="W.safetensors", help="state dict for the --factory module")
    parser.add_argument("--example", metavar="X.npy", help="example input (batch, time, features) or ids")
    parser.add_argument(
        "--calibration",
        metavar="X.npy",
        help="representative inputs (batch, time, features) or ids: calibrates the int8 .ernn rounding",
    )
    parser.add_argument(
        "--calibration-labels",
        metavar="Y.npy",
        help="class ids or regression targets of --calibration (for --max-accuracy-drop/--max-rmse-increase)",
    )
    add_budget_arguments(parser)
    parser.add_argument("--batch", type=int, default=2, help="random example batch size (default 2)")
    parser.add_argument("--time", type=int, default=16, help="random example length (default 16)")
    parser.add_argument("--seed", type=int, default=0, help="seed of the random inputs")


def add_budget_arguments(parser: argparse.ArgumentParser) -> None:
    """``--max-error``, ``--max-accuracy-drop``, ``--max-rmse-increase`` (shared with ``edgernn compile``)."""
    parser.add_argument(
        "--max-error",
        type=float,
        metavar="E",
        help="int8 budget: max output error as a fraction of max|y_fp32| (default without labels: "
        "2x the error of fp16 everywhere, at least 1e-4); 'inf': pure int8",
    )
    parser.add_argument(
        "--max-accuracy-drop",
        type=float,
        metavar="PP",
        help="int8 budget: accuracy drop in percentage points on the calibration labels (default 0.5)",
    )
    parser.add_argument(
        "--max-rmse-increase",
        type=float,
        metavar="PCT",
        help="int8 budget: RMSE increase in percent on the calibration targets (default 2)",
    )


def budget_kwargs(args: argparse.Namespace) -> dict:
    """The budget options as keyword arguments; an error if given without ``--quantize int8``."""
    from ..errors import EdgeRNNError

    kw = {k: getattr(args, k) for k in ("max_error", "max_accuracy_drop", "max_rmse_increase")}
    given = [k for k, v in kw.items() if v is not None]
    if given and args.quantize != "int8":
        flags = ", ".join("--" + k.replace("_", "-") for k in given)
        raise EdgeRNNError(f"{flags}: a budget of the int8 files, use it with --quantize int8")
    return kw


def _factory(spec: str):
    import importlib
    import importlib.util

    from ..errors import EdgeRNNError

    mod_name, sep, fn_name = spec.rpartition(":")
    if not sep or not mod_name or not fn_name:
        raise EdgeRNNError(f"--factory must look like pkg.module:function or file.py:function, got {spec!r}")
    try:
        if mod_name.endswith(".py"):
            if not os.path.isfile(mod_name):
                raise EdgeRNNError(f"--factory: no file {mod_name!r}")
            s = importlib.util.spec_from_file_location("_edgernn_user_factory", mod_name)
            mod = importlib.util.module_from_spec(s)
            s.loader.exec_module(mod)
        else:
            if os.getcwd() not in sys.path:
                sys.path.insert(0, os.getcwd())
            mod = importlib.import_module(mod_name)
    except ImportError as e:
        raise EdgeRNNError(f"--factory: cannot import {mod_name!r}: {e}") from None
    fn = getattr(mod, fn_name, None)
    if not callable(fn):
        raise EdgeRNNError(f"--factory: {mod_name!r} has no callable {fn_name!r}")
    return fn()


def _load_npy(path: str, flag: str):
    import numpy as np

    from ..errors import EdgeRNNError

    try:
        return np.load(path, allow_pickle=False)
    except (OSError, ValueError) as e:
        raise EdgeRNNError(f"{flag} {path!r}: {e}") from None


def _example(module, args):
    import numpy as np
    from torch import nn

    from ..errors import EdgeRNNError
    from ..models import ESN, SequenceModel

    if args.example:
        return _load_npy(args.example, "--example")
    if args.batch < 1 or args.time < 1:
        raise EdgeRNNError("--batch and --time must be >= 1")
    rng = np.random.default_rng(args.seed)
    shape = (args.batch, args.time)
    if isinstance(module, SequenceModel):
        cfg = module.config
        if module.tokens:
            return rng.integers(0, cfg["vocab_size"], size=shape)
        x = rng.standard_normal((*shape, cfg["input_size"]))
        if module.normalized:
            x = x * module.input_std.numpy() + module.input_mean.numpy()
        return x.astype(np.float32)
    if isinstance(module, ESN):
        return rng.standard_normal((*shape, module.config["input_size"])).astype(np.float32)
    for m in module.modules():
        if isinstance(m, nn.Embedding):
            return rng.integers(0, m.num_embeddings, size=shape)
        if isinstance(m, nn.RNNBase):
            return rng.standard_normal((*shape, m.input_size)).astype(np.float32)
        if isinstance(m, nn.Linear):
            return rng.standard_normal((*shape, m.in_features)).astype(np.float32)
        if isinstance(m, nn.Conv1d):  # over time: the module takes (batch, time, channels)
            return rng.standard_normal((*shape, m.in_channels)).astype(np.float32)
        if isinstance(m, (nn.LayerNorm, nn.BatchNorm1d)):
            n = m.normalized_shape[-1] if isinstance(m, nn.LayerNorm) else m.num_features
            return rng.standard_normal((*shape, n)).astype(np.float32)
    raise EdgeRNNError("cannot tell the module's input size: pass --example X.npy")


def _load_module(args):
    from ..errors import EdgeRNNError

    if args.factory:
        if args.checkpoint:
            raise EdgeRNNError("give either CHECKPOINT or --factory/--weights, not both")
        if not args.weights:
            raise EdgeRNNError("--factory needs --weights W.safetensors")
        from safetensors.torch import load_file

        module = _factory(args.factory)
        try:
            state = load_file(args.weights)
        except FileNotFoundError:
            raise EdgeRNNError(f"--weights: no file {args.weights!r}") from None
        except Exception as e:  # noqa: BLE001 - safetensors' own error types
            raise EdgeRNNError(f"--weights {args.weights!r} is not a safetensors file: {e}") from None
        try:
            module.load_state_dict(state, strict=True)
        except RuntimeError as e:
            raise EdgeRNNError(f"--weights do not fit the --factory module: {e}") from None
        return module
    if not args.checkpoint:
        raise EdgeRNNError("give a CHECKPOINT, or --factory MODULE:FUNCTION with --weights")
    from .. import models

    if not os.path.isfile(args.checkpoint):
        raise EdgeRNNError(f"no checkpoint file {args.checkpoint!r}")
    try:
        return models.load(args.checkpoint)
    except ValueError as e:
        raise EdgeRNNError(str(e)) from None


def run(args: argparse.Namespace) -> int:
    """Run the export; prints the files, size ratios and parity summary. Returns the exit code."""
    from ..errors import EdgeRNNError, require

    # cheap argument checks first: no torch import for a typo
    if args.factory:
        if args.checkpoint:
            raise EdgeRNNError("give either CHECKPOINT or --factory/--weights, not both")
        if not args.weights:
            raise EdgeRNNError("--factory needs --weights W.safetensors")
    elif not args.checkpoint:
        raise EdgeRNNError("give a CHECKPOINT, or --factory MODULE:FUNCTION with --weights")
    elif not os.path.isfile(args.checkpoint):
        raise EdgeRNNError(f"no checkpoint file {args.checkpoint!r}")
    if args.calibration and args.quantize != "int8":
        raise EdgeRNNError("--calibration calibrates the int8 rounding: use it with --quantize int8")
    if args.calibration_labels and not args.calibration:
        raise EdgeRNNError("--calibration-labels are the labels of --calibration: give both")
    budget = budget_kwargs(args)
    for flag in ("example", "calibration", "calibration_labels"):  # before torch loads: seconds for a typo
        p = getattr(args, flag)
        if p and not os.path.isfile(p):
            raise EdgeRNNError(f"--{flag.replace('_', '-')}: no file {p!r}")
    require("torch", "export")
    require("onnx", "export")
    require("onnxruntime", "export")
    from ..export import export

    module = _load_module(args)
    example = _example(module, args)
    calibration = _load_npy(args.calibration, "--calibration") if args.calibration else None
    cal_labels = (
        _load_npy(args.calibration_labels, "--calibration-labels") if args.calibration_labels else None
    )
    report = export(
        module,
        args.output,
        example,
        quantize=args.quantize,
        seed=args.seed,
        calibration=calibration,
        calibration_labels=cal_labels,
        **budget,
    )
    print(f"wrote {args.output}:")
    for name, size in report["files"].items():
        print(f"  {name:24s} {size:>10d} bytes")
    for name, ratio in report["size_ratio_int8_vs_fp32"].items():
        print(f"  size ratio {name} / fp32: {ratio:.3f}")
    print("float32 parity against torch (|a - e| <= 1e-5 + 1e-4·|e|):")
    for name, c in report.get("fp32_vs_torch", {}).items():
        print(f"  {name:18s} max abs {c.get('max_abs', float('nan')):.3g}  ok")
    bad_int8 = []
    if report.get("int8_vs_torch"):
        print(f"int8 against torch (bound {report['tolerance']['int8']}):")
    for name, c in report.get("int8_vs_torch", {}).items():
        flag = "ok" if c.get("within_bound") else "OUT OF BOUND"
        if not c.get("within_bound"):
            bad_int8.append(name)
        print(f"  {name:18s} max abs {c.get('max_abs', float('nan')):.3g}  {flag}")
    if report.get("quantization_budget"):
        from ..export.budget import format_budget

        print("\n".join(format_budget(report["quantization_budget"])))
    for note in report.get("notes", []):
        print(f"  note: {note}")
    if args.verify:
        print("every pair (max abs / max rel):")
        for pair, c in report.get("pairs", {}).items():
            print(f"  {pair:36s} {c['max_abs']:.3g} / {c['max_rel']:.3g}")
        if bad_int8:
            print(
                f"edgernn export: error: int8 outside {report['tolerance']['int8']}: {', '.join(bad_int8)}",
                file=sys.stderr,
            )
            return 1
    print(f"report: {os.path.join(args.output, 'report.json')}")
    return 0
