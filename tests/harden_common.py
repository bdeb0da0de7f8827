"""Shared builders for the hardening tests (tests/test_harden_*.py): small valid plans of every layer kind,
and raw safetensors packing so a test can craft exactly the bad bytes it needs.

Everything here is built from docs/ARTIFACT.md by hand, not by the code under test: the tests then mutate
one thing and check that the loader names the right check.
"""

from __future__ import annotations

import json
import os
import struct
import tempfile

import numpy as np

RNG = np.random.default_rng(1234)


def _reseed(seed: int = 1234) -> None:
    """Each top-level builder starts from a fixed seed: the same call gives the same weights in any order."""
    global RNG
    RNG = np.random.default_rng(seed)


def _w(*shape: int, scale: float = 0.3, rng: np.random.Generator | None = None) -> np.ndarray:
    r = RNG if rng is None else rng
    return (r.standard_normal(shape) * scale).astype(np.float32)


def base_plan(in_size: int, out_size: int, layers: list, **over) -> dict:
    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {"name": "edgernn-tests", "version": "0"},
        "input": {"kind": "features", "size": in_size},
        "output": {"size": out_size, "sequence": "many_to_many", "labels": None},
        "quantization": "none",
        "layers": layers,
    }
    plan.update(over)
    return plan


def recurrent(kind: str, name: str, i: int, h: int, direction: str = "forward", bias: bool = True, **extra):
    """A recurrent layer (rnn/lstm/gru) and its float32 tensors in ONNX layout."""
    g = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    d = 2 if direction == "bidirectional" else 1
    t = {f"{name}.W": _w(d, g * h, i), f"{name}.R": _w(d, g * h, h)}
    roles = {"W": f"{name}.W", "R": f"{name}.R"}
    if bias:
        t[f"{name}.B"] = _w(d, 2 * g * h, scale=0.1)
        roles["B"] = f"{name}.B"
    layer = {
        "kind": kind,
        "name": name,
        "input_size": i,
        "output_size": d * h,
        "hidden_size": h,
        "direction": direction,
        "tensors": roles,
    }
    if kind == "gru":
        layer["linear_before_reset"] = 1
    layer.update(extra)
    return layer, t


def dense(name: str, i: int, o: int, activation: str = "linear"):
    layer = {
        "kind": "dense",
        "name": name,
        "input_size": i,
        "output_size": o,
        "activation": activation,
        "tensors": {"W": f"{name}.W", "b": f"{name}.b"},
    }
    return layer, {f"{name}.W": _w(o, i), f"{name}.b": _w(o, scale=0.1)}


def model(cell: str = "lstm", i: int = 3, h: int = 5, o: int = 2) -> tuple[dict, dict]:
    """A streamable model: one recurrent layer (or esn) then a dense readout."""
    _reseed()
    if cell == "esn":
        layer, t = esn("esn0", i, h)
    else:
        layer, t = recurrent(cell, f"{cell}0", i, h)
    d, td = dense("head", layer["output_size"], o)
    return base_plan(i, o, [layer, d]), {**t, **td}


def esn(name: str, i: int, n: int, sparse: bool = False, readout: str = "state", leak: float = 0.5):
    rng = np.random.default_rng(7)
    W = (rng.standard_normal((n, n)) * (0.9 / np.sqrt(n))).astype(np.float32)
    layer = {
        "kind": "esn",
        "name": name,
        "input_size": i,
        "reservoir_size": n,
        "leak_rate": leak,
        "readout_input": readout,
        "sparse": sparse,
        "output_size": n if readout == "state" else 1 + i + n,
        "tensors": {"W_in": f"{name}.W_in", "b": f"{name}.b"},
    }
    t = {f"{name}.W_in": _w(n, i, rng=rng), f"{name}.b": _w(n, scale=0.1, rng=rng)}
    if sparse:
        W[np.abs(W) < 0.3 / np.sqrt(n)] = 0.0
        ptr = [0]
        ind, dat = [], []
        for r in range(n):
            nz = np.nonzero(W[r])[0]
            ind.extend(nz.tolist())
            dat.extend(W[r, nz].tolist())
            ptr.append(len(ind))
        layer["nnz"] = len(ind)
        t[f"{name}.W_data"] = np.array(dat, np.float32)
        t[f"{name}.W_indices"] = np.array(ind, np.int32)
        t[f"{name}.W_indptr"] = np.array(ptr, np.int32)
        layer["tensors"].update(
            {"W_data": f"{name}.W_data", "W_indices": f"{name}.W_indices", "W_indptr": f"{name}.W_indptr"}
        )
    else:
        t[f"{name}.W"] = W
        layer["tensors"]["W"] = f"{name}.W"
    return layer, t


def everything() -> tuple[dict, dict]:
    """normalize -> affine -> lstm -> gru -> rnn -> esn(sparse, extended) -> dense -> activation(softmax)."""
    _reseed()
    i = 3
    layers, tensors = [], {}
    layers.append(
        {
            "kind": "normalize",
            "name": "norm",
            "input_size": i,
            "tensors": {"mean": "norm.mean", "std": "norm.std"},
        }
    )
    tensors["norm.mean"] = _w(i)
    tensors["norm.std"] = (np.abs(_w(i)) + 0.5).astype(np.float32)
    layers.append(
        {
            "kind": "affine",
            "name": "aff",
            "input_size": i,
            "tensors": {"scale": "aff.scale", "shift": "aff.shift"},
        }
    )
    tensors["aff.scale"] = _w(i)
    tensors["aff.shift"] = _w(i)
    for kind, h in (("lstm", 4), ("gru", 3), ("rnn", 4)):
        layer, t = recurrent(kind, kind, i, h)
        layers.append(layer)
        tensors.update(t)
        i = h
    layer, t = esn("res", i, 6, sparse=True, readout="extended")
    layers.append(layer)
    tensors.update(t)
    i = layer["output_size"]
    layer, t = dense("out", i, 3)
    layers.append(layer)
    tensors.update(t)
    layers.append(
        {"kind": "activation", "name": "sm", "input_size": 3, "activation": "softmax", "tensors": {}}
    )
    return base_plan(3, 3, layers), tensors


def tokens_model(vocab: int = 11, e: int = 4, h: int = 3) -> tuple[dict, dict]:
    _reseed()
    emb = {
        "kind": "embedding",
        "name": "emb",
        "input_size": 1,
        "vocab_size": vocab,
        "output_size": e,
        "tensors": {"table": "emb.table"},
    }
    layer, t = recurrent("gru", "gru0", e, h)
    d, td = dense("head", h, 2)
    plan = base_plan(1, 2, [emb, layer, d])
    plan["input"] = {"kind": "tokens", "size": 1, "vocab_size": vocab}
    return plan, {"emb.table": _w(vocab, e), **t, **td}


def quantize_int8(plan: dict, tensors: dict) -> tuple[dict, dict]:
    """Symmetric per-row int8 of every quantizable matrix role (an independent, obvious implementation)."""
    plan = json.loads(json.dumps(plan))
    tensors = dict(tensors)
    qroles = {
        "rnn": ("W", "R"),
        "lstm": ("W", "R"),
        "gru": ("W", "R"),
        "dense": ("W",),
        "embedding": ("table",),
    }
    for layer in plan["layers"]:
        for role in qroles.get(layer["kind"], ()):
            name = layer["tensors"][role]
            w = tensors[name].astype(np.float64)
            amax = np.abs(w).max(axis=-1)
            scale = np.where(amax > 0, amax / 127.0, 1.0)
            q = np.clip(np.round(w / scale[..., None]), -127, 127).astype(np.int8)
            tensors[name] = q
            tensors[name + "_scale"] = scale.astype(np.float32)
            layer["tensors"][role + "_scale"] = name + "_scale"
    plan["quantization"] = "int8"
    return plan, tensors


def to_fp16(plan: dict, tensors: dict) -> tuple[dict, dict]:
    plan = json.loads(json.dumps(plan))
    plan["quantization"] = "fp16"
    return plan, {k: (v.astype(np.float16) if v.dtype == np.float32 else v) for k, v in tensors.items()}


# ------------------------------------------------------------------------------------- raw bytes


DT = {np.dtype("<f4"): "F32", np.dtype("<f2"): "F16", np.dtype("i1"): "I8", np.dtype("<i4"): "I32"}


def pack(
    plan: dict | str | None, tensors: dict, *, header_extra: dict | None = None, pad: bool = True
) -> bytes:
    """Serialize like safetensors, by hand (independent of edgernn.artifact.write): returns the file bytes.

    ``plan`` may be a dict (dumped to JSON), a raw string (stored as is) or None (no metadata).
    """
    header: dict = {}
    if plan is not None:
        header["__metadata__"] = {"edgernn.plan": plan if isinstance(plan, str) else json.dumps(plan)}
    off = 0
    body = b""
    for name in sorted(tensors):
        a = np.ascontiguousarray(tensors[name])
        header[name] = {"dtype": DT[a.dtype], "shape": list(a.shape), "data_offsets": [off, off + a.nbytes]}
        body += a.tobytes()
        off += a.nbytes
    if header_extra:
        header.update(header_extra)
    return pack_raw(json.dumps(header).encode(), body, pad=pad)


def pack_raw(header: bytes, body: bytes, *, pad: bool = True) -> bytes:
    if pad:
        header += b" " * (-(len(header) + 8) % 8)
    return struct.pack("<Q", len(header)) + header + body


def split(data: bytes) -> tuple[dict, bytes]:
    """(header dict, body bytes) of a safetensors file."""
    (n,) = struct.unpack("<Q", data[:8])
    return json.loads(data[8 : 8 + n]), data[8 + n :]


def write_tmp(data: bytes, suffix: str = ".ernn") -> str:
    fd, path = tempfile.mkstemp(suffix=suffix)
    with os.fdopen(fd, "wb") as f:
        f.write(data)
    return path


def attention_model(i: int = 3, h: int = 4, a: int = 3, o: int = 2, head: bool = True) -> tuple[dict, dict]:
    """lstm -> additive attention pooling -> dense (unless ``head`` is false), many_to_one."""
    _reseed()
    layer, t = recurrent("lstm", "enc", i, h)
    att = {
        "kind": "attention",
        "name": "att",
        "input_size": h,
        "output_size": h,
        "attention_size": a,
        "tensors": {"W": "att.W", "b": "att.b", "v": "att.v"},
    }
    t.update({"att.W": _w(a, h), "att.b": _w(a, scale=0.1), "att.v": _w(a)})
    d, td = dense("head", h, o, activation="sigmoid")
    plan = base_plan(i, o, [layer, att, d]) if head else base_plan(i, h, [layer, att])
    plan["output"]["sequence"] = "many_to_one"
    return plan, ({**t, **td} if head else t)


def onehot_model(vocab: int = 7, h: int = 3) -> tuple[dict, dict]:
    _reseed()
    oh = {
        "kind": "onehot",
        "name": "oh",
        "input_size": 1,
        "vocab_size": vocab,
        "output_size": vocab,
        "tensors": {},
    }
    layer, t = recurrent("rnn", "rnn0", vocab, h)
    d, td = dense("head", h, vocab)
    plan = base_plan(
        1,
        vocab,
        [
            oh,
            layer,
            d,
            {"kind": "activation", "name": "sm", "input_size": vocab, "activation": "softmax", "tensors": {}},
        ],
    )
    plan["input"] = {"kind": "tokens", "size": 1, "vocab_size": vocab}
    return plan, {**t, **td}


def bidirectional_model(i: int = 3, h: int = 3) -> tuple[dict, dict]:
    """Not streamable: runs through Model.predict only."""
    _reseed()
    layer, t = recurrent("gru", "bi", i, h, direction="bidirectional")
    d, td = dense("head", 2 * h, 2)
    return base_plan(i, 2, [layer, d]), {**t, **td}


def int8_esn(sparse: bool) -> tuple[dict, dict]:
    """An esn with int8 W_in and W (dense: per-row scales; CSR: one scale per reservoir row)."""
    n = 8
    layer, t = esn("res", 3, n, sparse=sparse)
    for r in ("W_in", "W_data" if sparse else "W"):
        name = layer["tensors"][r]
        w = t[name].astype(np.float64)
        if r == "W_data":
            rows = np.repeat(np.arange(n), np.diff(t["res.W_indptr"]))
            amax = np.zeros(n)
            np.maximum.at(amax, rows, np.abs(w))
        else:
            amax = np.abs(w).max(axis=-1)
        scale = np.where(amax > 0, amax / 127.0, 1.0)
        per = scale[rows] if r == "W_data" else scale[:, None]
        t[name] = np.clip(np.round(w / per), -127, 127).astype(np.int8)
        t[name + "_scale"] = scale.astype(np.float32)
        layer["tensors"][r + "_scale"] = name + "_scale"
    d, td = dense("head", n, 2)
    return base_plan(3, 2, [layer, d], quantization="int8"), {**t, **td}


SEEDS = {
    "lstm": lambda: model("lstm"),
    "gru": lambda: model("gru"),
    "rnn": lambda: model("rnn"),
    "esn": lambda: model("esn"),
    "everything": everything,
    "tokens": tokens_model,
    "onehot": onehot_model,
    "attention": attention_model,
    "bidirectional": bidirectional_model,
    "int8": lambda: quantize_int8(*everything()),
    "int8_tokens": lambda: quantize_int8(*tokens_model()),
    "int8_esn_dense": lambda: int8_esn(False),
    "int8_esn_sparse": lambda: int8_esn(True),
    "fp16": lambda: to_fp16(*everything()),
}
