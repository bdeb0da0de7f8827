"""``edgernn inspect FILE``: what is inside an ``.ernn`` artifact or an ONNX model.

For ``.ernn``: format, producer, input/output, quantization, labels, every layer (format 1) or every value
and op with its inputs and outputs (format 2) with kind, sizes, direction or activation, parameters, bytes
and dtypes, and the quantization report when the artifact has one. Names from the file are printed escaped
when they hold unprintable characters. Reading the artifact uses the strict reader only (no kernels are
compiled). For ``.onnx``: opsets, inputs/outputs, operator counts, the recurrent nodes with their
attributes, parameter count, and whether (and into what) it compiles.
"""

from __future__ import annotations

import argparse
import json
import os
from collections import Counter

HELP = "show the layers, sizes, parameters, bytes and quantization of an .ernn or .onnx file"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn inspect``."""
    p.add_argument("file", help="an .ernn artifact or an .onnx model")
    p.add_argument("--json", action="store_true", help="print the information as JSON")
    p.add_argument(
        "--source",
        action="store_true",
        help="print the kernel source generated for this .ernn model (numba backend) instead",
    )
    from .compile import add_graph_arguments

    add_graph_arguments(p)
    p.add_argument(
        "--write-folded",
        default=None,
        metavar="OUT.onnx",
        help="write the graph the compiler reads (bindings and shapes applied, If inlined, cells fused) "
        "as an ONNX file ONNX Runtime runs",
    )


def describe_ernn(path: str) -> dict:
    """Information about an ``.ernn`` file as a JSON-able dict (raises ArtifactError if it is invalid).

    Format 1: ``layers``. Format 2: ``values`` (name -> shape) and ``ops``, each also with its
    ``inputs`` and ``outputs``."""
    import numpy as np

    from ..artifact import dtype_name, plan_layers, read

    plan, tensors = read(path)
    layers = []
    total = 0
    ops = plan.get("ops")
    for idx, (_, layer) in enumerate(plan_layers(plan)):
        names = list(layer["tensors"].values())
        params = int(sum(tensors[n].size for n in names if not n.endswith("_scale")))
        nbytes = int(sum(tensors[n].nbytes for n in names))
        total += params
        d = {
            "name": layer["name"],
            "kind": layer["kind"],
            "input_size": layer["input_size"],
            "output_size": layer["output_size"],
            "parameters": params,
            "bytes": nbytes,
            "dtypes": sorted({dtype_name(tensors[n]) for n in names}),
        }
        qrec = (plan.get("quantization_layers") or {}).get(layer["name"])
        if qrec is not None:  # the budget's choice and the measured sensitivity (validated at load)
            d["precision"] = qrec["precision"]
            if qrec.get("sensitivity"):
                d["sensitivity"] = qrec["sensitivity"]
        if ops is not None:
            d["inputs"], d["outputs"] = list(ops[idx]["inputs"]), list(ops[idx]["outputs"])
        for key in DETAILS:
            if key in layer and layer[key] is not None:
                d[key] = layer[key]
        roles = sorted(layer["tensors"])
        d["tensors"] = {r: list(np.shape(tensors[layer["tensors"][r]])) for r in roles}
        layers.append(d)
    info = {
        "file": path,
        "type": "ernn",
        "bytes": os.path.getsize(path),
        "format_version": plan["format_version"],
        "producer": plan.get("producer", {}),
        "input": plan["input"],
        "output": plan["output"],
        "outputs": plan.get("outputs", [plan["output"]]),
        "quantization": plan["quantization"],
        "parameters": total,
        "layers" if ops is None else "ops": layers,
        "quantization_report": plan.get("quantization_report"),
        "quantization_rounding": plan.get("quantization_rounding"),
        "source_io": plan.get("source_io"),
    }
    if ops is not None:
        info["values"] = {v: list(e["shape"]) for v, e in plan["values"].items()}
    return info


#: Layer fields shown by ``inspect`` when present.
DETAILS = (
    "hidden_size",
    "direction",
    "activation",
    "activations",
    "clip",
    "linear_before_reset",
    "cell_output",
    "input_forget",
    "reservoir_size",
    "leak_rate",
    "vocab_size",
    "attention_size",
    "next",
)


def _show(name: str) -> str:
    """A name from a file, safe to print on a terminal: escaped unless every character is printable."""
    return name if name.isprintable() else repr(name)[1:-1]


def _graph_weights(onnx, g) -> tuple[int, int]:
    """(values, bytes) of the tensors in ONNX graph ``g``: initializers and Constant nodes, in ``g`` and in
    every subgraph (If branches, Loop bodies: Silero VAD keeps its weights in If branches)."""
    params = nbytes = 0
    tensors = list(g.initializer)
    for n in g.node:
        for a in n.attribute:
            if a.type == onnx.AttributeProto.TENSOR and n.op_type == "Constant":
                tensors.append(a.t)
            elif a.type == onnx.AttributeProto.GRAPH:
                p, b = _graph_weights(onnx, a.g)
                params, nbytes = params + p, nbytes + b
            elif a.type == onnx.AttributeProto.GRAPHS:
                for sub in a.graphs:
                    p, b = _graph_weights(onnx, sub)
                    params, nbytes = params + p, nbytes + b
    for t in tensors:
        n = 1
        for d in t.dims:
            n *= d
        params += n
        nbytes += (
            len(t.raw_data) if t.raw_data else n * onnx.helper.tensor_dtype_to_np_dtype(t.data_type).itemsize
        )
    return params, nbytes


def describe_onnx(
    path: str,
    bind: dict | None = None,
    shapes: dict | None = None,
    state: dict | None = None,
    write_folded: str | None = None,
) -> dict:
    """Information about an ONNX model as a JSON-able dict, including how its inputs are read (the data
    input, the state pairs, the inputs bound with ``bind``, the shapes fixed with ``shapes``) and whether
    it compiles. ``write_folded``: a path to save the graph the compiler reads (an ONNX file)."""
    from ..errors import EdgeRNNError, require

    onnx = require("onnx", "export")
    from ..export.onnx import compile_graph, front_end, load_model

    model = load_model(path)
    g = model.graph
    init_names = {t.name for t in g.initializer}

    def shape(vi) -> list:
        return [
            d.dim_param or (d.dim_value if d.HasField("dim_value") else "?")
            for d in vi.type.tensor_type.shape.dim
        ]

    params, nbytes = _graph_weights(onnx, g)
    rec = []
    for n in g.node:
        if n.op_type in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM"):
            at = {}
            for a in n.attribute:
                v = onnx.helper.get_attribute_value(a)
                if isinstance(v, bytes):
                    v = v.decode()
                elif isinstance(v, list):
                    v = [x.decode() if isinstance(x, bytes) else x for x in v]
                at[a.name] = v
            rec.append({"op": n.op_type, "name": n.name, "attributes": at})
    info = {
        "file": path,
        "type": "onnx",
        "bytes": os.path.getsize(path),
        "opsets": {(o.domain or "ai.onnx"): o.version for o in model.opset_import},
        "inputs": [{"name": i.name, "shape": shape(i)} for i in g.input if i.name not in init_names],
        "outputs": [{"name": o.name, "shape": shape(o)} for o in g.output],
        "ops": dict(Counter(n.op_type for n in g.node)),
        "recurrent_nodes": rec,
        "parameters": params,
        "weight_bytes": nbytes,
    }
    try:
        fe = front_end(model, bind=bind, shapes=shapes, state=state)
    except EdgeRNNError as e:
        info.update(compiles=False, compile_error=str(e))
        return info
    if write_folded:
        onnx.save(fe["model"], write_folded)
        info["folded_graph"] = write_folded
    keys = ("data_input", "state_pairs", "state_inputs", "bound", "shapes", "folded_ifs", "fused_cells")
    info.update({k: fe[k] for k in keys})
    if fe["data_input"] is None:
        info.update(compiles=False, compile_error=fe["data_error"])
        return info
    if fe["specialized"] or fe["fused_cells"]:
        info["specialized_ops"] = dict(Counter(n.op_type for n in fe["model"].graph.node))
    try:
        res = compile_graph(fe["model"], source=os.path.basename(path), state=state)
        info["compiles"] = True
        from ..plan import plan_layers

        info["compiled_layers"] = [  # a chain's layers, or a graph plan's ops
            {k: layer[k] for k in ("name", "kind", "input_size", "output_size")}
            for _, layer in plan_layers(res["plan"])
        ]
        info["compiled_sequence"] = res["plan"]["output"]["sequence"]
    except EdgeRNNError as e:
        info["compiles"] = False
        info["compile_error"] = str(e)
    return info


def _print_ernn(info: dict) -> None:
    prod = info["producer"]
    print(
        f"{info['file']}: .ernn v{info['format_version']}, {info['bytes']} bytes, "
        f"quantization {info['quantization']}"
    )
    if prod:
        src = f" from {prod.get('source')}" if prod.get("source") else ""
        print(_show(f"  producer: {prod.get('name', '?')} {prod.get('version', '')}{src}"))
    inp, out = info["input"], info["output"]
    kind = inp.get("kind", "features")
    extra = f", vocab {inp['vocab_size']}" if kind == "tokens" else ""
    iv = f", value {_show(inp['value'])}" if "value" in inp else ""
    ov = f", value {_show(out['value'])}" if "value" in out else ""
    print(f"  input:  {kind} {inp['size']}{extra}{iv}")
    if len(info.get("outputs", ())) > 1:  # several model outputs, in order (predict returns a tuple)
        for k, o in enumerate(info["outputs"]):
            print(_show(f"  output {k}: {o['name']} {o['size']} ({o['sequence']}), value {o['value']}"))
    else:
        print(f"  output: {out['size']} ({out['sequence']}){ov}")
    if out.get("labels"):
        print(f"  labels: {', '.join(_show(v) for v in out['labels'])}")
    print(f"  parameters: {info['parameters']}")
    if "values" in info:
        print(
            f"  values ({len(info['values'])}): "
            + ", ".join(f"{_show(v)}{shape}" for v, shape in info["values"].items())
        )
    rows = info.get("layers", info.get("ops", []))
    head = "layer" if "layers" in info else "op"
    print(f"  {head:<14} {'kind':<10} {'in':>6}  {'out':<6} {'params':>9} {'bytes':>9}  dtype  details")
    for layer in rows:
        det = []
        keys = ("hidden_size", "direction", "activation", "activations", "clip", "linear_before_reset")
        for key in keys + ("cell_output",):
            if key in layer:
                det.append(f"{key}={layer[key]}")
        if layer["kind"] == "state" and isinstance(layer.get("next"), str):  # a name: data, escaped
            det.append(f"next={_show(layer['next'])} (written back after each step)")
        print(
            f"  {_show(layer['name']):<14} {layer['kind']:<10} "
            f"{layer['input_size']:>6}->{layer['output_size']:<6} "
            f"{layer['parameters']:>9} {layer['bytes']:>9}  "
            f"{'/'.join(layer['dtypes']) or '-':<5}  {' '.join(det)}"
        )
        if "inputs" in layer:
            ins = ", ".join(_show(v) for v in layer["inputs"])
            outs = ", ".join(_show(v) for v in layer["outputs"])
            print(f"  {'':<14} {ins} -> {outs}")
    prec = [ly for ly in rows if "precision" in ly]
    if prec:
        print("  per-layer precision (int8 budget; sensitivity: max error of that layer alone quantized):")
        for ly in prec:
            sens = ", ".join(
                f"{k} {v:.3g}" if isinstance(v, (int, float)) else f"{k} {v}"
                for k, v in (ly.get("sensitivity") or {}).items()
            )
            print(f"    {_show(ly['name']):<14} {ly['precision']:<5}" + (f"  ({sens})" if sens else ""))
    rnd = info.get("quantization_rounding")
    if isinstance(rnd, dict):
        how = "nearest" if rnd.get("method") != "gptq" else "error-compensated (GPTQ)"
        n = rnd.get("calibration_vectors", 0)
        print(f"  int8 rounding: {how}" + (f" on {n} calibration vectors" if n else ""))
        for key, why in (rnd.get("matrices") or {}).items():
            if why != "gptq":
                print(f"    {key}: {why}")
    rep = info.get("quantization_report")
    if rep:
        print("  quantization report:")
        print(
            f"    size {rep['bytes']} bytes vs float32 {rep['float32_bytes']} (ratio {rep['size_ratio']:.3f})"
        )
        print(
            f"    output error vs float32 on {rep['data']} data "
            f"({rep.get('n_sequences')} x {rep.get('steps')} steps): "
            f"max {rep['max_abs_error']:.3g}, mean {rep['mean_abs_error']:.3g}"
        )
        if "accuracy_change_pp" in rep:
            print(
                f"    accuracy {rep['accuracy_float32']:.4f} -> {rep['accuracy']:.4f} "
                f"({rep['accuracy_change_pp']:+.2f} pp)"
            )
        if rep.get("rmse_change_pct") is not None:
            print(
                f"    RMSE {rep['rmse_float32']:.4g} -> {rep['rmse']:.4g} ({rep['rmse_change_pct']:+.2f} %)"
            )


def _print_onnx(info: dict) -> None:
    ops = ", ".join(f"{k}×{v}" for k, v in sorted(info["ops"].items()))
    print(f"{info['file']}: ONNX, {info['bytes']} bytes, opsets {info['opsets']}")
    for i in info["inputs"]:
        print(f"  input  {i['name']}: {i['shape']}")
    for o in info["outputs"]:
        print(f"  output {o['name']}: {o['shape']}")
    print(f"  parameters: {info['parameters']} ({info['weight_bytes']} weight bytes)")
    print(f"  ops: {ops}")
    for r in info["recurrent_nodes"]:
        print(f"  {r['op']} {r['name']!r}: {r['attributes']}")
    for name, value in (info.get("bound") or {}).items():
        print(_show(f"  bound: {name} = {value}"))
    for name, dims in (info.get("shapes") or {}).items():
        print(_show(f"  shape fixed: {name} = {dims}"))
    if info.get("folded_ifs"):
        print(f"  If nodes replaced by their taken branch: {info['folded_ifs']}")
    if info.get("folded_graph"):
        print(_show(f"  graph the compiler reads written to {info['folded_graph']}"))
    if info.get("fused_cells"):
        print(f"  recurrent steps written as plain ops, fused into LSTM/GRU/RNN nodes: {info['fused_cells']}")
    if "specialized_ops" in info:
        ops2 = ", ".join(f"{k}×{v}" for k, v in sorted(info["specialized_ops"].items()))
        print(f"  ops once specialized: {ops2}")
    if info.get("data_input"):
        print(_show(f"  data input: {info['data_input']}"))
        pairs = {i: o for i, o in info.get("state_pairs", [])}
        for i in info.get("state_inputs", []):
            print(_show(f"  state: {i} <- {pairs[i]}" if i in pairs else f"  state: {i} (no state output)"))
    if info["compiles"]:
        layers = " -> ".join(
            f"{lyr['kind']}({lyr['input_size']}->{lyr['output_size']})" for lyr in info["compiled_layers"]
        )
        print(f"  compiles to ({info['compiled_sequence']}): {layers}")
    else:
        print(f"  does not compile: {info['compile_error']}")


def kernel_source(path: str) -> str:
    """The Python source of the kernels generated for the ``.ernn`` model at ``path`` (what the numba
    backend compiles; made from the packed numbers only, no string from the file)."""
    from ..artifact import read
    from ..backends import _batch_panels, _panels
    from ..kernels import codegen
    from ..pack import pack

    plan, tensors = read(path)
    packed = pack(plan, tensors)
    panels = _panels(packed)  # the step's panels and step_batch's GEMM panels, as the numba backend
    return codegen.source(packed.wf, panels=panels, batch=_batch_panels(packed))


def run(args: argparse.Namespace) -> int:
    """Print the description of ``args.file``; returns the exit code."""
    from ..errors import InputError

    path = args.file
    if not os.path.isfile(path):
        raise InputError(f"no such file: {path}")
    with open(path, "rb") as f:
        head = f.read(16)
    is_onnx = path.endswith(".onnx") or (not path.endswith(".ernn") and head[:1] == b"\x08")
    if getattr(args, "source", False):
        if is_onnx:
            raise InputError(f"--source shows the kernels of an .ernn model; compile {path} first")
        print(kernel_source(path), end="")
        return 0
    if is_onnx:
        from .compile import graph_options

        info = describe_onnx(path, **graph_options(args), write_folded=getattr(args, "write_folded", None))
    else:
        if any(getattr(args, k, None) for k in ("set", "shape", "state", "write_folded")):
            raise InputError(
                "--set, --shape, --state and --write-folded apply to an .onnx model, not an .ernn artifact"
            )
        info = describe_ernn(path)
    if args.json:
        print(json.dumps(info, indent=1, default=str))
    elif is_onnx:
        _print_onnx(info)
    else:
        _print_ernn(info)
    return 0
