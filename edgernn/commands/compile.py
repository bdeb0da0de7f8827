"""``edgernn compile MODEL.onnx -o MODEL.ernn [--quantize int8|fp16] [--max-error E ...]``: the ONNX →
``.ernn`` compiler (int8 meets an accuracy budget, see ``export/budget.py``)."""

from __future__ import annotations

import argparse
import json
import os

HELP = (
    "compile an ONNX model (recurrent cells, conv/norm front-ends, step graphs such as Silero VAD) "
    "into an .ernn artifact, optionally int8 or fp16"
)


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn compile``."""
    p.add_argument("model", help="the ONNX model (.onnx; external data must sit in the same folder)")
    p.add_argument(
        "-o", "--output", default=None, help="the .ernn to write (default: MODEL.ernn, MODEL.int8.ernn, ...)"
    )
    p.add_argument("--quantize", choices=("int8", "fp16"), default=None, help="weight precision")
    p.add_argument(
        "--graph-output",
        action="append",
        default=None,
        metavar="NAME",
        help="a graph output to compile; repeat for several, in order (default: every output that is not "
        "a state output: a model of several outputs, predict returns them in that order)",
    )
    p.add_argument("--labels", default=None, help="class names: comma-separated, or a file with one per line")
    p.add_argument(
        "--calibration",
        default=None,
        metavar="X.npy",
        help="representative input (T, I) or (B, T, I): calibrates int8 rounding (error-compensated on it) "
        "and is the data of the quantization report (default: nearest rounding, report on a random input)",
    )
    p.add_argument(
        "--calibration-labels",
        default=None,
        metavar="Y.npy",
        help="class ids or regression targets of --calibration (adds accuracy / RMSE change)",
    )
    add_graph_arguments(p)
    from .export import add_budget_arguments

    add_budget_arguments(p)
    p.add_argument("--json", action="store_true", help="print the compile result as JSON")


def add_graph_arguments(p: argparse.ArgumentParser) -> None:
    """``--set``, ``--shape``, ``--state``: how an ONNX graph is specialized (shared with ``inspect``)."""
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="bind graph input NAME to VALUE (a number or comma-separated numbers) at compile time; "
        "it is folded, and an If on it keeps only the branch taken (repeatable)",
    )
    p.add_argument(
        "--shape",
        action="append",
        default=[],
        metavar="NAME=D1,D2,...",
        help="fix the shape of graph input NAME where the file leaves it open, e.g. input=1,576 (repeatable)",
    )
    p.add_argument(
        "--state",
        action="append",
        default=[],
        metavar="IN=OUT",
        help="state pair of a step graph: input IN is fed back from output OUT (repeatable; "
        "default: found automatically)",
    )


def graph_options(args: argparse.Namespace) -> dict:
    """``bind``, ``shapes``, ``state`` for :func:`~edgernn.export.compile_onnx` from ``--set``/``--shape``/
    ``--state`` (``NAME=VALUE`` each; a malformed one is an InputError naming it)."""
    from ..errors import InputError

    out: dict = {}
    for opt, key in (("--set", "bind"), ("--shape", "shapes"), ("--state", "state")):
        table: dict = {}
        for spec in getattr(args, opt[2:], None) or []:
            name, eq, value = spec.partition("=")
            name, value = name.strip(), value.strip()
            if not eq or not name or not value:
                raise InputError(f"{opt} {spec}: expected NAME=VALUE")
            if name in table:
                raise InputError(f"{opt} {name} given twice")
            table[name] = value
        out[key] = table or None
    return out


def _labels(spec: str | None) -> list[str] | None:
    if spec is None:
        return None
    if os.path.isfile(spec):
        from ..errors import InputError

        try:
            with open(spec, encoding="utf-8") as f:
                return [line.strip() for line in f if line.strip()]
        except UnicodeDecodeError as e:
            raise InputError(
                f"--labels {spec}: not a UTF-8 text file ({e.reason} at byte {e.start})"
            ) from None
    return [s.strip() for s in spec.split(",")]


def run(args: argparse.Namespace) -> int:
    """Compile, print a summary; returns the exit code (errors surface as EdgeRNNError)."""
    from ..errors import InputError
    from ..export import compile_onnx
    from .export import _load_npy, budget_kwargs

    if not os.path.isfile(args.model):
        raise InputError(f"no such file: {args.model}")
    budget = budget_kwargs(args)
    out = args.output
    if out is None:
        stem = args.model[:-5] if args.model.endswith(".onnx") else args.model
        out = stem + (f".{args.quantize}" if args.quantize else "") + ".ernn"
    cal = _load_npy(args.calibration, "--calibration") if args.calibration else None
    cal_y = _load_npy(args.calibration_labels, "--calibration-labels") if args.calibration_labels else None
    res = compile_onnx(
        args.model,
        out,
        quantize=args.quantize,
        output=args.graph_output[0]
        if args.graph_output and len(args.graph_output) == 1
        else args.graph_output,
        labels=_labels(args.labels),
        calibration=cal,
        calibration_labels=cal_y,
        **graph_options(args),
        **budget,
    )
    if args.json:
        from ..artifact import graph_layers

        layers = graph_layers(res["plan"])[0]
        print(json.dumps({k: v for k, v in res.items() if k != "plan"} | {"layers": layers}))
        return 0
    plan = res["plan"]
    from ..artifact import graph_layers

    print(f"{args.model} -> {res['path']} ({res['bytes']} bytes, {plan['quantization']})")
    print(f"  input {plan['input']['size']}, output {plan['output']['size']} ({plan['output']['sequence']})")
    for k, o in enumerate(plan.get("outputs", [])):
        print(f"  output {k}: {o['name']!r} {o['size']} ({o['sequence']})")
    for layer in graph_layers(plan)[0]:
        extra = (
            layer.get("direction") or layer.get("activation") or layer.get("op") or layer.get("func") or ""
        )
        print(
            f"  {layer['name']:<14} {layer['kind']:<10} "
            f"{layer['input_size']:>6} -> {layer['output_size']:<6} {extra}"
        )
    for name, value in res.get("bound", {}).items():
        print(f"  bound input {name} = {value}")
    for name, dims in res.get("shapes", {}).items():
        print(f"  input {name} shape fixed to {dims}")
    if res["state_inputs"]:
        pairs = dict(res.get("state_pairs", []))
        shown = [f"{i} <- {pairs[i]}" if i in pairs else i for i in res["state_inputs"]]
        print(f"  state inputs (kept by the stream): {', '.join(shown)}")
    if res["ignored_outputs"]:
        print(f"  graph outputs not compiled: {', '.join(res['ignored_outputs'])}")
    for note in res["notes"]:
        print(f"  note: {note}")
    rep = res.get("quantization_report")
    if rep:
        print(
            f"  quantization: size ratio {rep['size_ratio']:.3f} vs float32, output error max "
            f"{rep['max_abs_error']:.3g} mean {rep['mean_abs_error']:.3g} ({rep['data']} data)"
        )
        if "accuracy_change_pp" in rep:
            print(
                f"  accuracy {rep['accuracy_float32']:.4f} -> {rep['accuracy']:.4f} "
                f"({rep['accuracy_change_pp']:+.2f} pp)"
            )
        if rep.get("rmse_change_pct") is not None:
            print(f"  RMSE {rep['rmse_float32']:.4g} -> {rep['rmse']:.4g} ({rep['rmse_change_pct']:+.2f} %)")
    if res.get("quantization_budget"):
        from ..export.budget import format_budget

        print("\n".join(format_budget(res["quantization_budget"])))
    return 0
