"""The ``.ernn`` artifact: a safetensors file whose metadata holds the plan (see docs/ARTIFACT.md).

:func:`write` validates a plan and its tensors and writes them; :func:`read` parses a file with its own
strict safetensors reader (never pickle, never a size it has not checked against the file) and returns
the same validated ``(plan, tensors)`` pair, for a plan of either format version (the plan itself is
checked by :mod:`edgernn.plan`, whose names this module re-exports). Every rejection is an
:class:`~edgernn.ArtifactError` whose message starts with the name of the failed check.
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
from .plan import (  # noqa: F401 - the plan's names, re-exported: artifact.validate_plan etc.
    ACTIVATION_DEFAULTS,
    ACTIVATIONS,
    CELL_ACTIVATIONS,
    DIRECTIONS,
    FLOAT32_ROLES,
    FORMAT,
    FORMAT_VERSION,
    FORMAT_VERSIONS,
    GRAPH_KINDS,
    LAYER_KINDS,
    MAX_DIM,
    MAX_NAME,
    MAX_OPS,
    MAX_VALUE_NAME,
    PER_CHANNEL_SCALE,
    QUANTIZABLE,
    RECURRENT_GATES,
    _fail,
    _short,
    layer_tensor_specs,
    op_layer,
    op_module,
    plan_layers,
    scale_shape,
    validate_plan,
)
from .plan_convert import chain_layers, chain_plan, graph_layers, upgrade  # noqa: F401 - re-exported

PLAN_KEY = "edgernn.plan"

#: Largest header accepted (bytes); safetensors itself uses the same cap.
MAX_HEADER_BYTES = 100_000_000
#: Default cap on the total number of weight elements in one artifact.
MAX_PARAMETERS = 256_000_000
#: Most tensor entries a header may list (1024 layers with a handful of roles each).
MAX_TENSORS = 16_384

_DTYPES = {"F32": np.dtype("<f4"), "F16": np.dtype("<f2"), "I8": np.dtype("i1"), "I32": np.dtype("<i4")}
_DTYPE_NAMES = {v: k for k, v in _DTYPES.items()}


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


def validate_tensors(
    plan: dict, tensors: Mapping[str, np.ndarray], max_parameters: int = MAX_PARAMETERS
) -> None:
    """Check that ``tensors`` holds exactly what the validated ``plan`` needs, with sane values."""
    used: set[str] = set()
    quant = plan["quantization"]
    total = 0
    for where, layer in plan_layers(plan):
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
            elif role in FLOAT32_ROLES.get(layer["kind"], ()):
                allowed = {np.dtype("<f4")}
            elif role in qroles and quant == "int8":  # mixed precision: int8, fp16 or fp32 per matrix
                allowed = {np.dtype("<f4"), np.dtype("i1"), np.dtype("<f2")}
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
                sshape = scale_shape(layer, role, tuple(shape))
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
        if plan["format_version"] == 1:
            raise _fail(
                "unexpected tensor", f"tensors not used by any layer: {_short(sorted(extra)[:5], 300)}"
            )
        raise _fail("unused tensor", f"tensors not used by any op: {_short(sorted(extra)[:5], 300)}")
    has_q = any(np.dtype(tensors[n].dtype) == np.dtype("i1") for n in used)
    has_h = any(np.dtype(tensors[n].dtype) == np.dtype("<f2") for n in used)
    if quant == "int8" and not has_q:
        raise _fail("bad plan", "quantization is 'int8' but no tensor is int8")
    if quant == "fp16" and not has_h:
        raise _fail("bad plan", "quantization is 'fp16' but no tensor is float16")
    if "quantization_layers" in plan:
        _check_precisions(plan, tensors)


#: precisions a ``quantization_layers`` record may state, and the dtype a layer's matrices then have
_PRECISION_DTYPES = {"int8": np.dtype("i1"), "fp16": np.dtype("<f2"), "fp32": np.dtype("<f4")}


def _check_precisions(plan: dict, tensors: Mapping[str, np.ndarray]) -> None:
    """The informational ``quantization_layers`` record (docs/ARTIFACT.md) is small and true: layer name ->
    ``{"precision": "int8"|"fp16"|"fp32", "sensitivity": {name: number or "inf"/"nan"}}``, matching the
    dtypes of that layer's matrices."""
    rec = plan["quantization_layers"]
    layers = {ly["name"]: ly for _, ly in plan_layers(plan)}
    if not isinstance(rec, dict) or len(rec) > len(layers):
        raise _fail("bad field", "quantization_layers must be an object with at most one entry per layer")
    for name, entry in rec.items():
        layer = layers.get(name)
        if layer is None or not isinstance(entry, dict) or set(entry) - {"precision", "sensitivity"}:
            raise _fail("bad field", f"quantization_layers entry {_short(name)}: not a layer or bad keys")
        prec = entry.get("precision")
        if prec not in _PRECISION_DTYPES:
            raise _fail("bad field", f"quantization_layers {_short(name)}: precision {_short(prec)}")
        sens = entry.get("sensitivity", {})
        if (
            not isinstance(sens, dict)
            or len(sens) > 8
            or not all(
                isinstance(k, str) and len(k) <= 32 and (type(v) in (int, float) or v in ("inf", "nan"))
                for k, v in sens.items()
            )
        ):
            raise _fail("bad field", f"quantization_layers {_short(name)}: bad sensitivity record")
        qroles = QUANTIZABLE.get(layer["kind"], ())
        dts = {np.dtype(tensors[layer["tensors"][r]].dtype) for r in qroles if r in layer["tensors"]}
        if (
            prec == "int8"
            and _PRECISION_DTYPES["int8"] not in dts
            or prec != "int8"
            and dts != {_PRECISION_DTYPES[prec]}
        ):
            raise _fail(
                "bad field",
                f"quantization_layers {_short(name)}: precision {prec} but its matrices are "
                + "/".join(sorted(_DTYPE_NAMES.get(d, str(d)) for d in dts)),
            )


def _check_values(where: str, layer: dict, roles: Mapping, tensors: Mapping) -> None:
    """The value checks of the layer's kind (its ``kernels/ops`` module: CSR structure, std > 0, ...)."""
    from . import plan as plan_mod

    op_module(layer["kind"]).check_values(where, layer, roles, tensors, plan_mod)


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
