"""The ``.ernn`` artifact: a safetensors file whose metadata holds the plan (see docs/ARTIFACT.md).

:func:`write` validates a plan and its tensors and writes them; :func:`read` parses a file with its own
strict safetensors reader (never pickle, never a size it has not checked against the file) and returns
the same validated ``(plan, tensors)`` pair. Every rejection is an :class:`~edgernn.ArtifactError` whose
message starts with the name of the failed check.
"""

from __future__ import annotations

import json
import math
import os
import stat
import struct
from collections.abc import Mapping
from typing import Any

import numpy as np

from .errors import ArtifactError

FORMAT = "ernn"
FORMAT_VERSION = 1
PLAN_KEY = "edgernn.plan"

#: Largest header accepted (bytes); safetensors itself uses the same cap.
MAX_HEADER_BYTES = 100_000_000
#: Default cap on the total number of weight elements in one artifact.
MAX_PARAMETERS = 256_000_000
#: Largest size any single layer dimension may have.
MAX_DIM = 1 << 24
#: Most tensor entries a header may list (1024 layers with a handful of roles each).
MAX_TENSORS = 16_384

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1"), "I32": np.dtype("<i4")}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}

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
LAYER_KINDS = (
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
#: Roles that may be stored as int8 with a ``<role>_scale`` tensor.
QUANTIZABLE = {
    "rnn": ("W", "R"),
    "lstm": ("W", "R"),
    "gru": ("W", "R"),
    "esn": ("W_in", "W", "W_data"),
    "dense": ("W",),
    "attention": ("W",),
    "embedding": ("table",),
}


def _fail(check: str, msg: str) -> ArtifactError:
    return ArtifactError(f"{check}: {msg}")


# --------------------------------------------------------------------------------------------- plan


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


def _short(v: Any, n: int = 80) -> str:
    """repr() of a value from a file, cut to ``n`` characters (a hostile value can be megabytes)."""
    try:
        r = repr(v)
    except (ValueError, RecursionError):  # e.g. an int with more digits than Python will print
        r = f"<{type(v).__name__}>"
    return r if len(r) <= n else r[: n - 3] + "..."


def _loads(text: str, what: str) -> Any:
    """Strict JSON: no duplicate keys (two tools must never see two different files), no NaN/Infinity."""

    def pairs(items: list) -> dict:
        d = dict(items)
        if len(d) != len(items):
            seen: set = set()
            dup = next(k for k, _ in items if k in seen or seen.add(k))
            raise _fail("duplicate key", f"{what}: key {_short(dup)} appears more than once")
        return d

    def constant(name: str) -> Any:
        raise _fail(f"{what} not JSON", f"{name} is not JSON")

    try:
        return json.loads(text, object_pairs_hook=pairs, parse_constant=constant)
    except ArtifactError:
        raise
    except (ValueError, RecursionError) as e:
        raise _fail(f"{what} not JSON", str(e)[:200]) from None


def _bool(layer: str, d: dict, key: str) -> bool:
    v = d.setdefault(key, False)
    if not isinstance(v, bool):
        raise _fail("bad field", f"{layer}: '{key}' must be true or false, got {_short(v)}")
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


def layer_tensor_specs(layer: dict) -> dict[str, tuple[tuple[int, ...], bool]]:
    """Expected tensors of a validated layer: role -> (shape, required). Float roles unless noted."""
    k = layer["kind"]
    i, o = layer["input_size"], layer["output_size"]
    if k in ("normalize",):
        return {"mean": ((i,), True), "std": ((i,), True)}
    if k == "affine":
        return {"scale": ((i,), True), "shift": ((i,), True)}
    if k in ("activation", "onehot"):
        return {}
    if k == "embedding":
        return {"table": ((layer["vocab_size"], o), True)}
    if k in RECURRENT_GATES:
        g, h = RECURRENT_GATES[k], layer["hidden_size"]
        d = DIRECTIONS[layer["direction"]]
        spec = {
            "W": ((d, g * h, i), True),
            "R": ((d, g * h, h), True),
            "B": ((d, 2 * g * h), False),
            "initial_h": ((d, h), False),
        }
        if k == "lstm":
            spec["P"] = ((d, 3 * h), False)
            spec["initial_c"] = ((d, h), False)
        return spec
    if k == "esn":
        n = layer["reservoir_size"]
        spec = {"W_in": ((n, i), True), "b": ((n,), False)}
        if layer.get("sparse"):
            nnz = layer["nnz"]
            spec.update({"W_data": ((nnz,), True), "W_indices": ((nnz,), True), "W_indptr": ((n + 1,), True)})
        else:
            spec["W"] = ((n, n), True)
        return spec
    if k == "dense":
        return {"W": ((o, i), True), "b": ((o,), False)}
    if k == "attention":
        a = layer["attention_size"]
        return {"W": ((a, i), True), "b": ((a,), True), "v": ((a,), True)}
    raise _fail("unknown layer kind", repr(k))  # pragma: no cover - validate_plan checks first


def _validate_layer(idx: int, layer: Any, in_size: int) -> int:
    if not isinstance(layer, dict):
        raise _fail("bad layer", f"layer {idx} is not an object")
    kind = layer.get("kind")
    name = layer.get("name", f"layer{idx}")
    if not isinstance(name, str) or not name:
        raise _fail("bad field", f"layer {idx}: 'name' must be a non-empty string")
    where = f"layer {idx} ({_short(name)}, {kind})"
    if kind not in LAYER_KINDS:
        raise _fail("unknown layer kind", f"layer {idx}: {_short(kind)} (known: {', '.join(LAYER_KINDS)})")
    i = _int(where, layer, "input_size")
    if i != in_size:
        raise _fail("layers do not chain", f"{where}: input_size {i} but the previous output is {in_size}")
    if kind in ("normalize", "affine"):
        o = i
    elif kind == "activation":
        _act1(where, layer)
        o = i
    elif kind in ("embedding", "onehot"):
        if idx != 0 or i != 1:
            raise _fail("bad layer", f"{where}: token layers must come first, with input_size 1")
        v = _int(where, layer, "vocab_size")
        o = v if kind == "onehot" else _int(where, layer, "output_size")
    elif kind in RECURRENT_GATES:
        h = _int(where, layer, "hidden_size")
        direction = layer.setdefault("direction", "forward")
        if not isinstance(direction, str) or direction not in DIRECTIONS:
            raise _fail("bad field", f"{where}: direction {_short(direction)}")
        d = DIRECTIONS[direction]
        _acts(where, layer, d * len(CELL_ACTIVATIONS[kind]), CELL_ACTIVATIONS[kind], False)
        clip = layer.get("clip")
        if clip is not None and (_num(where, clip, "clip") <= 0):
            raise _fail("bad field", f"{where}: clip must be positive")
        if kind == "lstm":
            _bool(where, layer, "input_forget")
        if kind == "gru":
            lbr = layer.setdefault("linear_before_reset", 0)
            if type(lbr) is not int or lbr not in (0, 1):
                raise _fail("bad field", f"{where}: linear_before_reset must be 0 or 1")
        o = d * h
    elif kind == "esn":
        n = _int(where, layer, "reservoir_size")
        a = _num(where, layer.get("leak_rate"), "leak_rate")
        if not 0.0 < a <= 1.0:
            raise _fail("bad field", f"{where}: leak_rate {a} is outside (0, 1]")
        ro = layer.setdefault("readout_input", "state")
        if ro not in ("state", "extended"):
            raise _fail("bad field", f"{where}: readout_input {_short(ro)}")
        if _bool(where, layer, "sparse"):
            _int(where, layer, "nnz", 0, n * n)
        o = n if ro == "state" else 1 + i + n
    elif kind == "dense":
        o = _int(where, layer, "output_size")
        _act1(where, layer)
    elif kind == "attention":
        _int(where, layer, "attention_size")
        o = i
    got = layer.get("output_size", o)
    if got != o:
        raise _fail("bad size", f"{where}: output_size {_short(got)} but the layer produces {o}")
    layer["output_size"] = o
    layer["name"] = name
    if not isinstance(layer.get("tensors", {}), dict):
        raise _fail("bad field", f"{where}: 'tensors' must be an object")
    layer.setdefault("tensors", {})
    return o


def validate_plan(plan: Any) -> dict:
    """Check a plan (see docs/ARTIFACT.md) and fill in defaults; returns a normalized deep copy.

    Raises :class:`ArtifactError` naming the first failed check.
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
    if plan.get("format_version") != FORMAT_VERSION:
        raise _fail(
            "unknown format version",
            f"{_short(plan.get('format_version'))}; this edgernn reads version {FORMAT_VERSION}",
        )
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
    layers = plan.get("layers")
    if not isinstance(layers, list) or not layers:
        raise _fail("bad plan", "'layers' must be a non-empty list")
    if len(layers) > 1024:
        raise _fail("bad plan", f"{len(layers)} layers (at most 1024)")
    size = in_size
    names = set()
    for idx, layer in enumerate(layers):
        size = _validate_layer(idx, layer, size)
        if layer["name"] in names:
            raise _fail("bad field", f"duplicate layer name {_short(layer['name'])}")
        names.add(layer["name"])
        if layer["kind"] in ("embedding", "onehot"):
            if inp["kind"] != "tokens" or layer["vocab_size"] != inp["vocab_size"]:
                raise _fail(
                    "bad layer", f"layer {idx}: token layer needs a token input of the same vocab_size"
                )
    if inp["kind"] == "tokens" and layers[0]["kind"] not in ("embedding", "onehot"):
        raise _fail("bad layer", "a token input must be followed by an embedding or onehot layer")
    if size != out_size:
        raise _fail(
            "layers do not chain", f"the last layer produces {size} values but output.size is {out_size}"
        )
    plan.setdefault("producer", {})
    return plan


def validate_tensors(
    plan: dict, tensors: Mapping[str, np.ndarray], max_parameters: int = MAX_PARAMETERS
) -> None:
    """Check that ``tensors`` holds exactly what the validated ``plan`` needs, with sane values."""
    used: set[str] = set()
    quant = plan["quantization"]
    total = 0
    for idx, layer in enumerate(plan["layers"]):
        where = f"layer {idx} ({_short(layer['name'])}, {layer['kind']})"
        spec = layer_tensor_specs(layer)
        roles = layer["tensors"]
        qroles = QUANTIZABLE.get(layer["kind"], ())
        for role in roles:
            base = role[: -len("_scale")] if role.endswith("_scale") else None
            if role not in spec and not (base in spec and base in qroles):
                raise _fail("unexpected tensor", f"{where}: unknown role {_short(role)}")
        for role, (shape, required) in spec.items():
            name = roles.get(role)
            if name is None:
                if required:
                    raise _fail("tensor missing", f"{where}: role {_short(role)} is not given")
                continue
            if not isinstance(name, str) or name not in tensors:
                raise _fail(
                    "tensor missing",
                    f"{where}: tensor {_short(name)} (role {_short(role)}) is not in the file",
                )
            if name in used:
                raise _fail("bad plan", f"{where}: tensor {_short(name)} is used twice")
            used.add(name)
            arr = tensors[name]
            if tuple(arr.shape) != tuple(shape):
                raise _fail(
                    "shape mismatch", f"tensor {_short(name)}: shape {tuple(arr.shape)} != expected {shape}"
                )
            total += int(np.prod(shape, dtype=object))
            if total > max_parameters:
                raise _fail("too many parameters", f"more than {max_parameters} weights")
            dt = np.dtype(arr.dtype)
            is_int_role = role in ("W_indices", "W_indptr")
            if is_int_role:
                allowed = {np.dtype("<i4")}
            elif role in qroles and quant == "int8":
                allowed = {np.dtype("<f4"), np.dtype("i1")}
            elif quant == "fp16":
                allowed = {np.dtype("<f4"), np.dtype("<f2")}
            else:
                allowed = {np.dtype("<f4")}
            if dt not in allowed:
                raise _fail(
                    "dtype not allowed",
                    f"tensor {_short(name)} (role {_short(role)}, {quant} artifact) is {dt}, allowed: "
                    + ", ".join(sorted(_DTYPE_NAMES.get(a, str(a)) for a in allowed)),
                )
            scale_role = role + "_scale"
            if dt == np.dtype("i1"):
                sname = roles.get(scale_role)
                if not isinstance(sname, str) or sname not in tensors:
                    raise _fail(
                        "tensor missing",
                        f"{where}: int8 role {_short(role)} needs tensor role {_short(scale_role)}",
                    )
                if sname in used:
                    raise _fail("bad plan", f"{where}: tensor {_short(sname)} is used twice")
                used.add(sname)
                sarr = tensors[sname]
                sshape = (layer["reservoir_size"],) if role == "W_data" else tuple(shape[:-1])
                if tuple(sarr.shape) != sshape or np.dtype(sarr.dtype) != np.dtype("<f4"):
                    raise _fail(
                        "shape mismatch",
                        f"scale {_short(sname)}: {sarr.dtype}{tuple(sarr.shape)} != expected float32{sshape}",
                    )
                if not np.all(np.isfinite(sarr)) or np.any(sarr < 0):
                    raise _fail(
                        "non-finite weights", f"scale {_short(sname)} has non-finite or negative values"
                    )
            elif scale_role in roles:
                raise _fail(
                    "unexpected tensor", f"{where}: {_short(scale_role)} given but {_short(role)} is not int8"
                )
            if dt.kind == "f" and not np.all(np.isfinite(arr)):
                raise _fail("non-finite weights", f"tensor {_short(name)} has NaN or Inf values")
        _check_values(where, layer, roles, tensors)
    extra = set(tensors) - used
    if extra:
        raise _fail("unexpected tensor", f"tensors not used by any layer: {sorted(extra)[:5]}")
    has_q = any(np.dtype(tensors[n].dtype) == np.dtype("i1") for n in used)
    has_h = any(np.dtype(tensors[n].dtype) == np.dtype("<f2") for n in used)
    if quant == "int8" and not has_q:
        raise _fail("bad plan", "quantization is 'int8' but no tensor is int8")
    if quant == "fp16" and not has_h:
        raise _fail("bad plan", "quantization is 'fp16' but no tensor is float16")


def _check_values(where: str, layer: dict, roles: Mapping, tensors: Mapping) -> None:
    k = layer["kind"]
    if k == "normalize" and not np.all(tensors[roles["std"]] > 0):
        raise _fail("bad weights", f"{where}: std must be > 0")
    if k == "esn" and layer["sparse"]:
        n, nnz = layer["reservoir_size"], layer["nnz"]
        ptr = tensors[roles["W_indptr"]].astype(np.int64)
        ind = tensors[roles["W_indices"]].astype(np.int64)
        if ptr[0] != 0 or ptr[-1] != nnz or np.any(np.diff(ptr) < 0):
            raise _fail("bad weights", f"{where}: W_indptr is not a valid CSR row pointer for nnz={nnz}")
        if nnz and (ind.min() < 0 or ind.max() >= n):
            raise _fail("bad weights", f"{where}: W_indices out of range [0, {n})")


# ------------------------------------------------------------------------------------------- writer


def write(path: str | os.PathLike, plan: Mapping, tensors: Mapping[str, np.ndarray]) -> dict:
    """Validate ``plan`` and ``tensors`` and write them as one ``.ernn`` (safetensors) file.

    ``tensors`` maps names to numpy arrays (float32, float16, int8 or int32 as the plan allows).
    Returns the normalized plan that was written. Raises :class:`ArtifactError` on any inconsistency.
    """
    plan = validate_plan(dict(plan))
    tensors = {str(k): np.ascontiguousarray(v) for k, v in tensors.items()}
    for name, arr in tensors.items():
        if (
            np.dtype(arr.dtype).newbyteorder("<") not in _DTYPE_NAMES
            and np.dtype(arr.dtype) not in _DTYPE_NAMES
        ):
            raise _fail("dtype not allowed", f"tensor {_short(name)} has dtype {arr.dtype}")
    tensors = {k: v.astype(np.dtype(v.dtype).newbyteorder("<"), copy=False) for k, v in tensors.items()}
    validate_tensors(plan, tensors)
    header: dict[str, Any] = {"__metadata__": {PLAN_KEY: json.dumps(plan, separators=(",", ":"))}}
    offset = 0
    names = sorted(tensors)
    for name in names:
        arr = tensors[name]
        header[name] = {
            "dtype": _DTYPE_NAMES[np.dtype(arr.dtype)],
            "shape": list(arr.shape),
            "data_offsets": [offset, offset + arr.nbytes],
        }
        offset += arr.nbytes
    hbytes = json.dumps(header, separators=(",", ":")).encode("utf-8")
    hbytes += b" " * (-(len(hbytes) + 8) % 8)
    tmp = f"{os.fspath(path)}.tmp{os.getpid()}"
    try:
        with open(tmp, "wb") as f:
            f.write(struct.pack("<Q", len(hbytes)))
            f.write(hbytes)
            for name in names:
                f.write(tensors[name].tobytes())
            f.flush()
            os.fsync(f.fileno())  # a power cut during an update leaves the old file or the new one
        os.replace(tmp, path)
        if hasattr(os, "O_DIRECTORY"):  # make the rename itself durable
            fd = os.open(os.path.dirname(os.path.abspath(path)), os.O_RDONLY | os.O_DIRECTORY)
            try:
                os.fsync(fd)
            finally:
                os.close(fd)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)
    return plan


# ------------------------------------------------------------------------------------------- reader


def _looks_like_onnx(data: bytes) -> bool:
    """The start of a serialized ONNX ModelProto: field 1 (ir_version, a small varint), then another
    field of the message (producer_name, graph, opset_import, ...): ``08 <1..63> <tag>``."""
    return len(data) >= 3 and data[0] == 0x08 and 1 <= data[1] < 64 and data[2] in _ONNX_TAGS


#: wire tags of ModelProto's fields 2-8 and 14 (length-delimited, or varint for model_version)
_ONNX_TAGS = frozenset({0x12, 0x1A, 0x22, 0x28, 0x32, 0x3A, 0x42, 0x72})


def parse(data: bytes, max_parameters: int = MAX_PARAMETERS) -> tuple[dict, dict[str, np.ndarray]]:
    """Parse and validate the bytes of an ``.ernn`` file; returns ``(plan, tensors)``."""
    n = len(data)
    if n < 8:
        raise _fail("truncated file", f"{n} bytes, fewer than the 8-byte header length")
    (hlen,) = struct.unpack("<Q", data[:8])
    if (hlen > MAX_HEADER_BYTES or 8 + hlen > n) and _looks_like_onnx(data):
        raise _fail(
            "not an edgernn artifact", "this is not an .ernn file (it looks like ONNX: use `edgernn compile`)"
        )
    if hlen > MAX_HEADER_BYTES:
        raise _fail("header too large", f"{hlen} bytes (cap {MAX_HEADER_BYTES})")
    if 8 + hlen > n:
        raise _fail("truncated file", f"header length {hlen} runs past the end of the {n}-byte file")
    try:
        text = bytes(data[8 : 8 + hlen]).decode("utf-8")
    except UnicodeDecodeError as e:
        raise _fail("header not UTF-8", str(e)) from None
    header = _loads(text, "header")
    if not isinstance(header, dict):
        raise _fail("header not JSON", "the header is not a JSON object")
    meta = header.pop("__metadata__", None)
    if not isinstance(meta, dict) or not isinstance(meta.get(PLAN_KEY), str):
        raise _fail("not an edgernn artifact", f"no '{PLAN_KEY}' entry in the safetensors metadata")
    plan = validate_plan(_loads(meta[PLAN_KEY], "plan"))
    if len(header) > MAX_TENSORS:
        raise _fail("too many tensors", f"{len(header)} tensor entries (at most {MAX_TENSORS})")
    body = n - 8 - hlen
    base = 8 + hlen
    ranges = []
    tensors: dict[str, np.ndarray] = {}
    total = 0
    for name, info in header.items():
        if not isinstance(info, dict) or set(info) != {"dtype", "shape", "data_offsets"}:
            raise _fail("bad tensor entry", f"tensor {_short(name)}: expected dtype, shape and data_offsets")
        dt = _DTYPES.get(info["dtype"]) if isinstance(info["dtype"], str) else None
        if dt is None:
            raise _fail("dtype not allowed", f"tensor {_short(name)}: dtype {_short(info['dtype'])}")
        shape, offs = info["shape"], info["data_offsets"]
        if (
            not isinstance(shape, list)
            or len(shape) > 4
            or not all(isinstance(s, int) and not isinstance(s, bool) and 0 <= s <= MAX_DIM for s in shape)
        ):
            raise _fail("bad tensor entry", f"tensor {_short(name)}: shape {_short(shape)}")
        count = math.prod(shape)
        total += count
        if total > max_parameters:
            raise _fail("too many parameters", f"more than {max_parameters} elements")
        if (
            not isinstance(offs, list)
            or len(offs) != 2
            or not all(isinstance(o, int) and not isinstance(o, bool) for o in offs)
        ):
            raise _fail("bad tensor entry", f"tensor {_short(name)}: data_offsets {_short(offs)}")
        begin, end = offs
        if not 0 <= begin <= end:
            raise _fail("tensor out of bounds", f"tensor {_short(name)}: bytes [{begin}, {end})")
        if end > body:
            raise _fail(
                "truncated file",
                f"tensor {_short(name)} needs bytes [{begin}, {end}) of a {body}-byte data section",
            )
        if end - begin != count * dt.itemsize:
            raise _fail(
                "shape mismatch",
                f"tensor {_short(name)}: {end - begin} bytes for shape {shape} of {info['dtype']}",
            )
        ranges.append((begin, end, name))
        arr = np.frombuffer(data, dtype=dt, count=count, offset=base + begin).reshape(shape)
        if not arr.flags.aligned:  # an unpadded header: give the kernels aligned memory
            arr = arr.copy()
        tensors[name] = arr
    ranges.sort()
    pos = 0
    for begin, end, name in ranges:
        if begin < pos:
            raise _fail(
                "overlapping tensors", f"tensor {_short(name)} starts at {begin}, inside the previous tensor"
            )
        if begin > pos:
            raise _fail("gap between tensors", f"{begin - pos} unused bytes before tensor {_short(name)}")
        pos = end
    if pos != body:
        raise _fail("trailing bytes", f"{body - pos} bytes after the last tensor")
    validate_tensors(plan, tensors, max_parameters)
    return plan, tensors


def read(path: str | os.PathLike, max_parameters: int = MAX_PARAMETERS) -> tuple[dict, dict[str, np.ndarray]]:
    """Read and validate an ``.ernn`` file; returns ``(plan, tensors)`` or raises :class:`ArtifactError`."""
    try:
        with open(path, "rb") as f:
            st = os.fstat(f.fileno())
            if not stat.S_ISREG(st.st_mode):  # a FIFO or /dev/zero would block or never end
                raise _fail("not a regular file", f"{_short(os.fspath(path))}")
            size = st.st_size
            if size > 8 * max_parameters + MAX_HEADER_BYTES + 8:
                raise _fail("file too large", f"{size} bytes")
            data = f.read(size)  # never more than the size checked above, even if the file grows
    except OSError as e:
        raise ArtifactError(f"cannot read {_short(os.fspath(path))}: {e.strerror or e}") from None
    return parse(data, max_parameters)


def dtype_name(arr: np.ndarray) -> str:
    """The safetensors dtype name (F32, F16, I8, I32) of an array."""
    return _DTYPE_NAMES[np.dtype(arr.dtype).newbyteorder("<")]
