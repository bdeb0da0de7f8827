"""The plan inside an ``.ernn`` artifact (docs/ARTIFACT.md): its names, limits and validation.

Two versions: format 1, a chain of layers, and format 2, a dataflow graph of named values and ops. Both
are checked by :func:`validate_plan` with the same per-layer code: a format-2 op is checked as the
format-1 layer it stands for (its attributes, plus its kind, name and the sizes of the values it reads and
writes). The conversions between the two (``upgrade``, ``graph_layers``, ``chain_layers``, ``chain_plan``) are
in ``edgernn.plan_convert``. Every rejection is an :class:`~edgernn.ArtifactError`
whose message starts with the name of the failed check.

Names of ops and values are data from the file: they appear in messages (cut, through ``repr``) and are
never used to build code.
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping
from typing import Any

from .errors import ArtifactError

FORMAT = "ernn"
#: Format versions this edgernn reads (and writes).
FORMAT_VERSIONS = (1, 2)
#: The newest format version.
FORMAT_VERSION = 2

#: Largest size any single layer dimension may have.
MAX_DIM = 1 << 24
#: Most layers (format 1) or ops (format 2) in one plan.
MAX_OPS = 1024
#: Most values in one format-2 graph.
MAX_VALUES = 4 * MAX_OPS
#: Longest layer or op name (characters).
MAX_NAME = 256
#: Longest value name (characters): room for an op name and a suffix.
MAX_VALUE_NAME = 2 * MAX_NAME

ACTIVATIONS = (
    "linear",
    "relu",
    "tanh",
    "sigmoid",
    "softmax",
    "leaky_relu",
    "affine",
    "thresholded_relu",
    "scaled_tanh",
    "hard_sigmoid",
    "elu",
    "softsign",
    "softplus",
)
#: ONNX default (alpha, beta) of each activation.
ACTIVATION_DEFAULTS = {
    "leaky_relu": (0.01, 0.0),
    "affine": (1.0, 0.0),
    "thresholded_relu": (1.0, 0.0),
    "scaled_tanh": (1.0, 1.0),
    "hard_sigmoid": (0.2, 0.5),
    "elu": (1.0, 0.0),
}
DIRECTIONS = {"forward": 1, "reverse": 1, "bidirectional": 2}
RECURRENT_GATES = {"rnn": 1, "lstm": 4, "gru": 3}
CELL_ACTIVATIONS = {"rnn": ("tanh",), "lstm": ("sigmoid", "tanh", "tanh"), "gru": ("sigmoid", "tanh")}
#: The original layer kinds (format 1 chains them); with the graph ops below, every kind (LAYER_KINDS).
_CHAIN_KINDS = (
    "normalize",
    "affine",
    "activation",
    "embedding",
    "onehot",
    "rnn",
    "lstm",
    "gru",
    "esn",
    "dense",
    "attention",
)
#: The graph ops: kinds that format 1 cannot chain freely (several inputs, sequence ops, state slots).
#: Every kind's fields, tensors and packing are owned by its module in ``kernels/ops`` (:func:`op_module`).
GRAPH_KINDS = (
    "gather",
    "conv1d",
    "binary",
    "unary",
    "layernorm",
    "tconv",
    "final",
    "state",
    "matmul",
    "where",
)
LAYER_KINDS = _CHAIN_KINDS + GRAPH_KINDS
#: Format 2: (number of inputs, number of outputs) of each op kind.
OP_ARITY = {k: (1, 1) for k in LAYER_KINDS}
OP_ARITY["binary"] = (2, 1)
OP_ARITY["matmul"] = (2, 1)
OP_ARITY["where"] = (2, 1)  # cond, then the branches joined [a; b]
OP_ARITY["state"] = (0, 1)  # a state slot: its write-back is its field 'next'
#: Keys of a format-2 op.
OP_KEYS = ("kind", "name", "inputs", "outputs", "attrs", "tensors")
#: Keys of an entry of a format-2 plan's ``outputs`` (several model outputs).
OUTPUT_KEYS = ("name", "value", "size", "sequence", "labels")
#: Most model outputs of one plan.
MAX_OUTPUTS = 64
#: Layer fields that a format-2 op holds outside ``attrs`` (or derives from its values' shapes).
NOT_ATTRS = ("kind", "name", "input_size", "output_size", "tensors")
#: Roles that may be stored as int8 with a ``<role>_scale`` tensor.
QUANTIZABLE = {
    "rnn": ("W", "R"),
    "lstm": ("W", "R"),
    "gru": ("W", "R"),
    "esn": ("W_in", "W", "W_data"),
    "dense": ("W",),
    "attention": ("W",),
    "embedding": ("table",),
    "conv1d": ("W",),
    "tconv": ("W",),
}
#: Kinds whose int8 scale is one per output channel (the first axis of ``W`` [Cout, Cin/G, K]: the rows of
#: the [Cout, Cin/G·K] matrix ``kernels/ops/conv.py`` and ``tconv.py`` pack) rather than one per row of the
#: last axis.
PER_CHANNEL_SCALE = ("conv1d", "tconv")
#: Float roles that stay float32 in every artifact (integers stored as F32: an F16 index past 2048 would
#: silently become another index).
FLOAT32_ROLES = {"gather": ("index",)}


def scale_shape(layer: Mapping, role: str, shape: tuple[int, ...]) -> tuple[int, ...]:
    """The shape of the float32 scale of int8 role ``role`` (tensor shape ``shape``) of a validated layer:
    one per output row (``shape[:-1]``), one per output channel (``shape[:1]``) for convolutions, one per
    reservoir row for CSR ``W_data``. ``w ≈ q · scale`` broadcast over the axes the scale does not have."""
    if role == "W_data":
        return (layer["reservoir_size"],)
    if layer["kind"] in PER_CHANNEL_SCALE:
        return tuple(shape[:1])
    return tuple(shape[:-1])


def _fail(check: str, msg: str) -> ArtifactError:
    return ArtifactError(f"{check}: {msg}")


def _short(v: Any, n: int = 80) -> str:
    """repr() of a value from a file, cut to ``n`` characters (a hostile value can be megabytes)."""
    try:
        r = repr(v)
    except (ValueError, RecursionError):  # e.g. an int with more digits than Python will print
        r = f"<{type(v).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


# ------------------------------------------------------------------------------------------ fields


def _int(layer: str, d: Mapping, key: str, lo: int = 1, hi: int = MAX_DIM) -> int:
    v = d.get(key)
    if isinstance(v, bool) or not isinstance(v, int):
        raise _fail("bad field", f"{layer}: '{key}' must be an integer, got {_short(v)}")
    if not lo <= v <= hi:
        raise _fail("bad size", f"{layer}: '{key}' = {v} is outside [{lo}, {hi}]")
    return v


def _num(layer: str, v: Any, key: str) -> float:
    ok = not isinstance(v, bool) and isinstance(v, (int, float))
    if ok and isinstance(v, int):
        ok = abs(v) <= 1 << 64  # a huge JSON integer would overflow float() below
    if not ok or not math.isfinite(v):
        raise _fail("bad field", f"{layer}: '{key}' must be a finite number, got {_short(v)}")
    return float(v)


def _bool(layer: str, d: dict, key: str) -> bool:
    v = d.setdefault(key, False)
    if not isinstance(v, bool):
        raise _fail("bad field", f"{layer}: '{key}' must be true or false, got {_short(v)}")
    return v


def _name(v: Any, what: str, cap: int = MAX_NAME) -> str:
    if not isinstance(v, str) or not v:
        raise _fail("bad field", f"{what}: the name must be a non-empty string, got {_short(v)}")
    if len(v) > cap:
        raise _fail("bad field", f"{what}: name {_short(v)} is longer than {cap} characters")
    return v


def _acts(layer: str, d: Mapping, n: int, defaults: tuple[str, ...], allow_softmax: bool) -> None:
    """Normalize ``activations``/``activation_alpha``/``activation_beta`` of a recurrent layer in place."""
    acts = d.get("activations")
    if acts is None:
        acts = list(defaults) * (n // len(defaults))
        d["activations"] = acts
    if not isinstance(acts, list) or len(acts) != n:
        raise _fail("bad field", f"{layer}: 'activations' must be a list of {n} names, got {_short(acts)}")
    for a in acts:
        if a not in ACTIVATIONS or (a == "softmax" and not allow_softmax):
            raise _fail("unknown activation", f"{layer}: {_short(a)}")
    for key, idx in (("activation_alpha", 0), ("activation_beta", 1)):
        vals = d.get(key)
        if vals is None:
            vals = [ACTIVATION_DEFAULTS.get(a, (0.0, 0.0))[idx] for a in acts]
            d[key] = vals
        if not isinstance(vals, list) or len(vals) != n:
            raise _fail("bad field", f"{layer}: '{key}' must be a list of {n} numbers")
        for v in vals:
            _num(layer, v, key)


def _act1(layer: str, d: Mapping) -> None:
    a = d.setdefault("activation", "linear")
    if a not in ACTIVATIONS:
        raise _fail("unknown activation", f"{layer}: {_short(a)}")
    da, db = ACTIVATION_DEFAULTS.get(a, (0.0, 0.0))
    d["alpha"] = _num(layer, d.get("alpha", da), "alpha")
    d["beta"] = _num(layer, d.get("beta", db), "beta")


# ------------------------------------------------------------------------------------------ layers


def layer_tensor_specs(layer: dict) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Expected tensors of a validated layer: role -> (shape, required). Float roles unless noted.

    ``layer`` is a format-1 layer, or the layer view of a format-2 op (:func:`plan_layers`). The kind's
    module in ``kernels/ops`` owns them (its ``tensor_specs``)."""
    return op_module(layer["kind"]).tensor_specs(layer)


def _layer_fields(where: str, layer: dict, first: bool) -> int:
    """Check and normalize the kind-specific fields of a layer whose ``input_size`` is already checked:
    the kind's module in ``kernels/ops`` owns them (its ``check``; this module is its ``P``).

    ``first``: the layer reads the model input (a kind with ``TOKENS`` must). Returns the size the layer
    produces per step.
    """
    import sys

    op = op_module(layer["kind"])
    if getattr(op, "TOKENS", False) and (not first or layer["input_size"] != 1):
        raise _fail("bad layer", f"{where}: token layers must come first, with input_size 1")
    o = op.check(where, layer, sys.modules[__name__])
    if not isinstance(layer.get("tensors", {}), dict):
        raise _fail("bad field", f"{where}: 'tensors' must be an object")
    layer.setdefault("tensors", {})
    return o


def op_module(kind: str):
    """The ``kernels/ops`` module (or class) of op ``kind``, the owner of that kind (imported on first
    use: it imports numba when installed, which ``import edgernn`` must not)."""
    from .kernels.ops import BY_NAME

    return BY_NAME[kind]


def _validate_layer(idx: int, layer: Any, in_size: int) -> int:
    if not isinstance(layer, dict):
        raise _fail("bad layer", f"layer {idx} is not an object")
    kind = layer.get("kind")
    name = _name(layer.get("name", f"layer{idx}"), f"layer {idx}")
    where = f"layer {idx} ({_short(name)}, {kind})"
    if kind not in LAYER_KINDS:
        raise _fail("unknown layer kind", f"layer {idx}: {_short(kind)} (known: {', '.join(LAYER_KINDS)})")
    if OP_ARITY[kind][0] != 1:
        n = OP_ARITY[kind][0]
        reads = "reads no value" if n == 0 else f"reads {n} values"
        raise _fail("bad layer", f"layer {idx}: a {kind} op {reads}: it needs a format-2 plan")
    i = _int(where, layer, "input_size")
    if i != in_size:
        raise _fail("layers do not chain", f"{where}: input_size {i} but the previous output is {in_size}")
    o = _layer_fields(where, layer, idx == 0)
    if any(layer.get(k) is not None for k in ("h_next", "c_next")):
        raise _fail("bad layer", f"{where}: h_next/c_next name values: they need a format-2 plan")
    got = layer.get("output_size", o)
    if got != o:
        raise _fail("bad size", f"{where}: output_size {_short(got)} but the layer produces {o}")
    layer["output_size"] = o
    layer["name"] = name
    return o


# -------------------------------------------------------------------------------------------- plans


def validate_plan(plan: Any) -> dict:
    """Check a format-1 or format-2 plan (see docs/ARTIFACT.md) and fill in defaults.

    Returns a normalized deep copy of the same version. Raises :class:`ArtifactError` naming the first
    failed check.
    """
    if not isinstance(plan, dict):
        raise _fail("bad plan", "the plan is not a JSON object")
    try:
        plan = json.loads(json.dumps(plan, allow_nan=False))  # deep copy, and proves it is plain JSON
    except (TypeError, ValueError, RecursionError) as e:
        raise _fail("bad plan", f"not plain JSON: {str(e)[:200]}") from None
    if plan.get("format") != FORMAT:
        raise _fail(
            "not an edgernn artifact", f"format is {_short(plan.get('format'))}, expected {_short(FORMAT)}"
        )
    version = plan.get("format_version")
    if isinstance(version, bool) or not isinstance(version, int) or version not in FORMAT_VERSIONS:
        raise _fail(
            "unknown format version",
            f"{_short(version)}; this edgernn reads versions {', '.join(map(str, FORMAT_VERSIONS))}",
        )
    inp, out = _validate_io(plan)
    if version == 1:
        if "outputs" in plan:
            raise _fail("bad plan", "several model outputs ('outputs') need a format-2 plan")
        _validate_chain(plan, inp, out)
    else:
        from .plan_graph import validate_graph

        validate_graph(plan, inp, out)
    plan.setdefault("producer", {})
    return plan


def _validate_io(plan: dict) -> tuple[dict, dict]:
    """The fields both versions share: ``input``, ``output``, ``quantization``."""
    inp, out = plan.get("input"), plan.get("output")
    if not isinstance(inp, dict) or not isinstance(out, dict):
        raise _fail("bad plan", "'input' and 'output' must be objects")
    inp.setdefault("kind", "features")
    if inp["kind"] not in ("features", "tokens"):
        raise _fail("bad field", f"input kind {_short(inp['kind'])}")
    in_size = _int("input", inp, "size")
    if inp["kind"] == "tokens":
        _int("input", inp, "vocab_size")
        if in_size != 1:
            raise _fail("bad size", "a token input has size 1 (one id per step)")
    out_size = _int("output", out, "size")
    seq = out.setdefault("sequence", "many_to_many")
    if seq not in ("many_to_one", "many_to_many"):
        raise _fail("bad field", f"output sequence {_short(seq)}")
    labels = out.setdefault("labels", None)
    if labels is not None and (
        not isinstance(labels, list) or len(labels) != out_size or not all(isinstance(s, str) for s in labels)
    ):
        raise _fail("bad field", f"output labels must be a list of {out_size} strings")
    q = plan.setdefault("quantization", "none")
    if q not in ("none", "int8", "fp16"):
        raise _fail("bad field", f"quantization {_short(q)}")
    return inp, out


def _token_layer(where: str, layer: dict, inp: dict) -> None:
    if inp["kind"] != "tokens" or layer["vocab_size"] != inp["vocab_size"]:
        raise _fail("bad layer", f"{where}: token layer needs a token input of the same vocab_size")


def _validate_chain(plan: dict, inp: dict, out: dict) -> None:
    layers = plan.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _fail("bad plan", "'layers' must be a non-empty list")
    if len(layers) > MAX_OPS:
        raise _fail("bad plan", f"{len(layers)} layers (at most {MAX_OPS})")
    size = inp["size"]
    names = set()
    for idx, layer in enumerate(layers):
        size = _validate_layer(idx, layer, size)
        if layer["name"] in names:
            raise _fail("bad field", f"duplicate layer name {_short(layer['name'])}")
        names.add(layer["name"])
        if layer["kind"] in ("embedding", "onehot"):
            _token_layer(f"layer {idx}", layer, inp)
        if layer["kind"] == "final":
            check_final_source(
                f"layer {idx} ({_short(layer['name'])}, final)", layer, layers[idx - 1] if idx else None
            )
    if inp["kind"] == "tokens" and layers[0]["kind"] not in ("embedding", "onehot"):
        raise _fail("bad layer", "a token input must be followed by an embedding or onehot layer")
    if size != out["size"]:
        raise _fail(
            "layers do not chain", f"the last layer produces {size} values but output.size is {out['size']}"
        )


def check_final_source(where: str, layer: dict, src: dict | None) -> None:
    """A ``final`` op reads the output of a recurrent op (``src``: that layer, None for the model input)
    of its own direction and hidden size: its reverse units are that op's reverse direction."""
    ok = (
        src is not None
        and src["kind"] in RECURRENT_GATES
        and src.get("direction") == layer["direction"]
        and src.get("hidden_size") == layer["hidden_size"]
    )
    if not ok:
        what = "the model input" if src is None else f"a {src['kind']} op"
        if src is not None and src["kind"] in RECURRENT_GATES:
            what += f" ({_short(src.get('direction'))}, hidden_size {_short(src.get('hidden_size'))})"
        raise _fail(
            "bad layer",
            f"{where}: a final op reads a recurrent op's output of its own direction "
            f"({layer['direction']}) and hidden_size ({layer['hidden_size']}), not {what}",
        )


def plan_layers(plan: dict) -> list[tuple[str, dict]]:
    """``(where, layer)`` for every layer of a validated plan, in order: a format-1 plan's layers, or the
    layer view of each op of a format-2 graph (the op's attributes with its kind, name, tensors and the
    sizes of the values it reads and writes). ``where`` names the layer or op in messages."""
    if plan["format_version"] == 1:
        return [
            (f"layer {i} ({_short(ly['name'])}, {ly['kind']})", ly) for i, ly in enumerate(plan["layers"])
        ]
    return [
        (f"op {i} ({_short(op['name'])}, {op['kind']})", op_layer(plan, op))
        for i, op in enumerate(plan["ops"])
    ]


def op_layer(plan: dict, op: dict) -> dict:
    """The format-1 layer a format-2 op of a chained kind stands for (sizes from its values' shapes)."""
    vals = plan["values"]
    first = op["inputs"][0] if op["inputs"] else op["outputs"][0]  # a state op reads no value
    return {
        "kind": op["kind"],
        "name": op["name"],
        "input_size": vals[first]["shape"][0],
        "output_size": vals[op["outputs"][0]]["shape"][0],
        **op.get("attrs", {}),
        "tensors": op.get("tensors", {}),
    }
