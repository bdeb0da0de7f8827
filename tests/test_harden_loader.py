"""Loader rejection checks (issue 6, part 1): one crafted bad file per named check.

Each test starts from a valid file packed by hand (tests/harden_common.py, not edgernn's writer), checks the
valid file loads, changes exactly one thing, and asserts ``ArtifactError`` whose message starts with the
check's name (the loader's message format is ``"<check name>: <detail>"``).
"""

from __future__ import annotations

import json
import os
import re
import struct
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harden_common as hc  # noqa: E402

from edgernn import ArtifactError  # noqa: E402
from edgernn import artifact as A  # noqa: E402


def rejects(check: str, data: bytes, **kw) -> str:
    """Assert that parsing ``data`` fails with the named check; return the message."""
    with pytest.raises(ArtifactError, match=rf"^{re.escape(check)}: ") as ei:
        A.parse(data, **kw)
    return str(ei.value)


def valid(plan=None, tensors=None) -> tuple[dict, dict, bytes]:
    if plan is None:
        plan, tensors = hc.model("lstm")
    data = hc.pack(plan, tensors)
    A.parse(data)  # the control: the unmutated file loads
    return plan, tensors, data


def with_header(data: bytes, fn) -> bytes:
    """Repack ``data`` after ``fn(header)`` edits the header dict in place (the body is kept)."""
    header, body = hc.split(data)
    fn(header)
    return hc.pack_raw(json.dumps(header).encode(), body)


def with_plan(data: bytes, fn) -> bytes:
    def edit(h):
        plan = json.loads(h["__metadata__"]["edgernn.plan"])
        fn(plan)
        h["__metadata__"]["edgernn.plan"] = json.dumps(plan)

    return with_header(data, edit)


# ------------------------------------------------------------------------------ framing


@pytest.mark.parametrize("keep", [0, 7])
def test_truncated_before_header_length(keep):
    _, _, data = valid()
    rejects("truncated file", data[:keep])


def test_truncated_inside_header():
    _, _, data = valid()
    (n,) = struct.unpack("<Q", data[:8])
    rejects("truncated file", data[: 8 + n // 2])


def test_truncated_inside_tensor_data():
    _, _, data = valid()
    msg = rejects("truncated file", data[:-3])
    assert "data section" in msg


def test_truncated_file_on_disk(tmp_path):
    _, _, data = valid()
    p = tmp_path / "m.ernn"
    p.write_bytes(data[: len(data) // 2])
    with pytest.raises(ArtifactError, match=r"^truncated file: "):
        A.read(p)


def test_header_length_beyond_file():
    _, _, data = valid()
    rejects("truncated file", struct.pack("<Q", len(data)) + data[8:])


@pytest.mark.parametrize("hlen", [A.MAX_HEADER_BYTES + 1, 2**63, 2**64 - 1])
def test_header_length_beyond_cap(hlen):
    _, _, data = valid()
    rejects("header too large", struct.pack("<Q", hlen) + data[8:])


def test_header_not_utf8():
    _, _, data = valid()
    header, body = hc.split(data)
    raw = json.dumps(header).encode().replace(b'"__metadata__"', b'"__meta\xff\xfe__"', 1)
    assert b"\xff" in raw
    rejects("header not UTF-8", hc.pack_raw(raw, body))


@pytest.mark.parametrize(
    "raw",
    [b"", b"{", b'{"a": 1,}', b"[1, 2]", b'"just a string"', b"[" * 100_000 + b"]" * 100_000, b'{"x": NaN}'],
    ids=["empty", "unclosed", "trailing-comma", "list", "string", "deep-nesting", "nan-constant"],
)
def test_header_not_json(raw):
    rejects("header not JSON", hc.pack_raw(raw, b""))


def test_duplicate_header_key():
    """Two tensors with one name: tools that keep the first and tools that keep the last would disagree."""
    _, _, data = valid()
    header, body = hc.split(data)
    text = json.dumps(header)
    entry = json.dumps(header["head.b"])
    raw = text[:-1] + ', "head.b": ' + entry + "}"
    rejects("duplicate key", hc.pack_raw(raw.encode(), body))


def test_plan_missing_is_not_an_artifact():
    plan, tensors, _ = valid()
    rejects("not an edgernn artifact", hc.pack(None, tensors))


def test_plan_not_json():
    plan, tensors, _ = valid()
    rejects("plan not JSON", hc.pack('{"format": "ernn", ', tensors))


def test_plan_duplicate_key():
    plan, tensors, _ = valid()
    text = json.dumps(plan)[:-1] + ', "quantization": "int8"}'
    rejects("duplicate key", hc.pack(text, tensors))


def test_not_a_regular_file(tmp_path):
    fifo = tmp_path / "pipe.ernn"
    os.mkfifo(fifo)
    # opening a FIFO for reading blocks until a writer appears: give it one that writes nothing
    fd = os.open(fifo, os.O_RDWR | os.O_NONBLOCK)
    try:
        with pytest.raises(ArtifactError, match=r"^not a regular file: "):
            A.read(fifo)
    finally:
        os.close(fd)
    with pytest.raises(ArtifactError, match=r"^not a regular file: "):
        A.read("/dev/zero")


def test_missing_file_is_artifact_error(tmp_path):
    with pytest.raises(ArtifactError, match="cannot read"):
        A.read(tmp_path / "nope.ernn")


# ------------------------------------------------------------------------------ plan


@pytest.mark.parametrize("version", [0, 3, "1", None, 1.5])  # 2 is known now (docs/ARTIFACT.md)
def test_unknown_format_version(version):
    _, _, data = valid()
    rejects("unknown format version", with_plan(data, lambda p: p.__setitem__("format_version", version)))


def test_not_ernn_format():
    _, _, data = valid()
    rejects("not an edgernn artifact", with_plan(data, lambda p: p.__setitem__("format", "onnx")))


@pytest.mark.parametrize("kind", ["transformer", "LSTM", "", None, ["lstm"]])
def test_unknown_layer_kind(kind):
    _, _, data = valid()
    rejects("unknown layer kind", with_plan(data, lambda p: p["layers"][0].__setitem__("kind", kind)))


def test_unknown_activation():
    _, _, data = valid()
    rejects("unknown activation", with_plan(data, lambda p: p["layers"][1].__setitem__("activation", "gelu")))


def test_layers_do_not_chain_between_layers():
    _, _, data = valid()
    # the dense head claims 6 inputs, the lstm produces 5
    rejects("layers do not chain", with_plan(data, lambda p: p["layers"][1].__setitem__("input_size", 6)))


def test_layers_do_not_chain_with_input_size():
    _, _, data = valid()
    rejects("layers do not chain", with_plan(data, lambda p: p["input"].__setitem__("size", 4)))


def test_layers_do_not_chain_with_output_size():
    _, _, data = valid()
    rejects("layers do not chain", with_plan(data, lambda p: p["output"].__setitem__("size", 3)))


@pytest.mark.parametrize(
    "key,value",
    [
        ("direction", ["forward"]),  # unhashable: once a TypeError
        ("direction", "sideways"),
        ("clip", -1.0),
        ("clip", 10**400),  # once an OverflowError in math.isfinite
        ("hidden_size", 2.5),
        ("hidden_size", True),
        ("hidden_size", "HUGE"),  # 5000 digits, more than int() parses: the JSON itself is refused
        ("input_forget", "no"),  # once truthy -> True
        ("activation_alpha", [float("inf")] * 3),
    ],
)
def test_bad_recurrent_fields(key, value):
    _, _, data = valid()
    if value == "HUGE":  # json.dumps cannot write the int itself: craft the text by hand
        plan, tensors = hc.model("lstm")
        text = json.dumps(plan).replace('"hidden_size": 5', '"hidden_size": ' + "9" * 5000)
        text_plan_data = hc.pack(text, tensors)
    else:
        text_plan_data = with_plan(data, lambda p: p["layers"][0].__setitem__(key, value))
    with pytest.raises(ArtifactError) as ei:
        A.parse(text_plan_data)
    assert re.match(r"^(bad field|bad size|plan not JSON): ", str(ei.value)), str(ei.value)


def test_gru_linear_before_reset_must_be_int():
    plan, tensors = hc.model("gru")
    _, _, data = valid(plan, tensors)
    rejects("bad field", with_plan(data, lambda p: p["layers"][0].__setitem__("linear_before_reset", 1.0)))


def test_esn_sparse_flag_must_be_bool():
    plan, tensors = hc.model("esn")
    _, _, data = valid(plan, tensors)
    rejects("bad field", with_plan(data, lambda p: p["layers"][0].__setitem__("sparse", "yes")))


def test_long_values_are_cut_in_messages():
    _, _, data = valid()
    msg = rejects(
        "unknown layer kind", with_plan(data, lambda p: p["layers"][0].__setitem__("kind", "x" * 10**6))
    )
    assert len(msg) < 1000


# ------------------------------------------------------------------------------ tensors


def test_tensor_missing_from_file():
    plan, tensors, _ = valid()
    del tensors["lstm0.R"]
    rejects("tensor missing", hc.pack(plan, tensors))


def test_tensor_role_missing_from_plan():
    _, _, data = valid()
    msg = rejects(
        "tensor missing",
        with_plan(data, lambda p: p["layers"][0]["tensors"].pop("R")),
    )
    assert "'R'" in msg


def test_int8_scale_role_missing():
    plan, tensors = hc.quantize_int8(*hc.model("lstm"))
    _, _, data = valid(plan, tensors)
    rejects("tensor missing", with_plan(data, lambda p: p["layers"][0]["tensors"].pop("W_scale")))


def test_int8_scale_role_not_a_string():
    plan, tensors = hc.quantize_int8(*hc.model("lstm"))
    _, _, data = valid(plan, tensors)
    # a list as the scale's tensor name was once an unhashable-type TypeError
    rejects(
        "tensor missing", with_plan(data, lambda p: p["layers"][0]["tensors"].__setitem__("W_scale", [1]))
    )


def test_unexpected_tensor_in_file():
    plan, tensors, _ = valid()
    tensors["stowaway"] = np.zeros(3, np.float32)
    rejects("unexpected tensor", hc.pack(plan, tensors))


def test_unexpected_role_in_plan():
    _, _, data = valid()
    rejects(
        "unexpected tensor", with_plan(data, lambda p: p["layers"][0]["tensors"].__setitem__("Q", "lstm0.B"))
    )


def test_scale_for_a_float_tensor():
    plan, tensors, _ = valid()
    plan["layers"][0]["tensors"]["W_scale"] = "s"
    tensors["s"] = np.ones((1, 20), np.float32)
    rejects("unexpected tensor", hc.pack(plan, tensors))


def test_too_many_tensor_entries():
    _, _, data = valid()
    extra = {
        f"z{i}": {"dtype": "F32", "shape": [0], "data_offsets": [0, 0]} for i in range(A.MAX_TENSORS + 1)
    }
    rejects("too many tensors", with_header(data, lambda h: h.update(extra)))


@pytest.mark.parametrize("dtype", ["F64", "BF16", "BOOL", "U8", "I64", "f32", 4])
def test_dtype_unknown(dtype):
    _, _, data = valid()
    rejects("dtype not allowed", with_header(data, lambda h: h["lstm0.W"].__setitem__("dtype", dtype)))


@pytest.mark.parametrize(
    "plan_fn,name,new",
    [
        (lambda: hc.model("lstm"), "lstm0.W", np.int8),  # int8 in a float artifact
        (lambda: hc.model("lstm"), "lstm0.W", np.float16),  # fp16 in a float artifact
        (lambda: hc.model("lstm"), "lstm0.R", np.int32),  # int32 for a float role
        (lambda: hc.quantize_int8(*hc.model("lstm")), "lstm0.B", np.int8),  # bias is never quantized
        (lambda: hc.quantize_int8(*hc.model("lstm")), "head.b", np.int8),
        (lambda: hc.model("esn"), "esn0.W_in", np.int32),
        (lambda: hc.tokens_model(), "emb.table", np.int32),
    ],
)
def test_dtype_not_allowed_for_role(plan_fn, name, new):
    plan, tensors = plan_fn()
    valid(plan, tensors)
    tensors[name] = np.zeros(tensors[name].shape, new)
    msg = rejects("dtype not allowed", hc.pack(plan, tensors))
    assert name in msg


def test_csr_indices_must_be_int32():
    p, t = hc.esn("res", 3, 6, sparse=True)
    d, td = hc.dense("head", 6, 2)
    plan, tensors = hc.base_plan(3, 2, [p, d]), {**t, **td}
    valid(plan, tensors)
    tensors["res.W_indices"] = tensors["res.W_indices"].astype(np.float32)
    rejects("dtype not allowed", hc.pack(plan, tensors))


def test_scale_must_be_float32():
    plan, tensors = hc.quantize_int8(*hc.model("lstm"))
    valid(plan, tensors)
    tensors["lstm0.W_scale"] = tensors["lstm0.W_scale"].astype(np.float16)
    with pytest.raises(ArtifactError, match=r"^(shape mismatch|dtype not allowed): "):
        A.parse(hc.pack(plan, tensors))


@pytest.mark.parametrize("name", ["lstm0.W", "lstm0.R", "lstm0.B", "head.W"])
def test_shape_disagrees_with_plan(name):
    plan, tensors, _ = valid()
    tensors[name] = np.ascontiguousarray(tensors[name].reshape(-1)[::-1].reshape(tensors[name].shape[::-1]))
    if tensors[name].shape == hc.model("lstm")[1][name].shape:  # a symmetric shape: add an axis instead
        tensors[name] = tensors[name][None]
    rejects("shape mismatch", hc.pack(plan, tensors))


def test_scale_shape_disagrees_with_plan():
    plan, tensors = hc.quantize_int8(*hc.model("lstm"))
    valid(plan, tensors)
    tensors["lstm0.W_scale"] = tensors["lstm0.W_scale"][:, :-1].copy()
    rejects("shape mismatch", hc.pack(plan, tensors))


def test_byte_count_disagrees_with_shape():
    _, _, data = valid()
    rejects("shape mismatch", with_header(data, lambda h: h["lstm0.W"].__setitem__("shape", [1, 20, 2])))


@pytest.mark.parametrize(
    "shape", [[1, 2**24, 2**24], [2**24] * 4, [2**24, 2**24, 2**24, 16]], ids=["2^48", "2^96", "2^76"]
)
def test_size_product_overflow(shape):
    """Products past int32/int64 are computed exactly and refused before any buffer is made."""
    _, _, data = valid()
    rejects("too many parameters", with_header(data, lambda h: h["lstm0.W"].__setitem__("shape", shape)))


def test_size_product_in_plan_overflow():
    """A plan asking for hidden 2^22 with matching header shapes: refused on the product, not on the bytes."""
    _, _, data = valid()

    def edit(h):
        plan = json.loads(h["__metadata__"]["edgernn.plan"])
        plan["layers"][0]["hidden_size"] = 2**22
        plan["layers"][0]["output_size"] = 2**22
        plan["layers"][1]["input_size"] = 2**22
        h["__metadata__"]["edgernn.plan"] = json.dumps(plan)
        h["lstm0.R"]["shape"] = [1, 2**24, 2**22]

    rejects("too many parameters", with_header(data, edit))


def test_dimension_beyond_cap():
    _, _, data = valid()
    rejects("bad tensor entry", with_header(data, lambda h: h["lstm0.W"].__setitem__("shape", [1, 2**25, 3])))
    rejects("bad size", with_plan(data, lambda p: p["layers"][0].__setitem__("hidden_size", 2**25)))


def test_parameter_budget():
    plan, tensors, data = valid()
    n = sum(a.size for a in tensors.values())
    A.parse(data, max_parameters=n)
    rejects("too many parameters", data, max_parameters=n - 1)


@pytest.mark.parametrize(
    "name,value", [("lstm0.W", np.nan), ("lstm0.R", np.inf), ("lstm0.B", -np.inf), ("head.W", np.nan)]
)
def test_non_finite_weights(name, value):
    plan, tensors, _ = valid()
    tensors[name] = tensors[name].copy()
    tensors[name].flat[1] = value
    rejects("non-finite weights", hc.pack(plan, tensors))


def test_non_finite_fp16_weights():
    plan, tensors = hc.to_fp16(*hc.model("gru"))
    valid(plan, tensors)
    tensors["gru0.W"] = tensors["gru0.W"].copy()
    tensors["gru0.W"].flat[0] = np.float16(np.inf)
    rejects("non-finite weights", hc.pack(plan, tensors))


@pytest.mark.parametrize("value", [np.nan, np.inf, -1.0])
def test_non_finite_or_negative_scales(value):
    plan, tensors = hc.quantize_int8(*hc.model("lstm"))
    valid(plan, tensors)
    tensors["lstm0.R_scale"] = tensors["lstm0.R_scale"].copy()
    tensors["lstm0.R_scale"].flat[2] = value
    rejects("non-finite weights", hc.pack(plan, tensors))


def test_normalize_std_must_be_positive():
    plan, tensors = hc.everything()
    valid(plan, tensors)
    tensors["norm.std"] = tensors["norm.std"].copy()
    tensors["norm.std"][1] = 0.0
    rejects("bad weights", hc.pack(plan, tensors))


@pytest.mark.parametrize("what", ["indptr-start", "indptr-decreasing", "index-range", "index-negative"])
def test_csr_structure(what):
    p, t = hc.esn("res", 3, 6, sparse=True)
    d, td = hc.dense("head", 6, 2)
    plan, tensors = hc.base_plan(3, 2, [p, d]), {**t, **td}
    valid(plan, tensors)
    ptr, ind = tensors["res.W_indptr"].copy(), tensors["res.W_indices"].copy()
    if what == "indptr-start":
        ptr[0] = 1
    elif what == "indptr-decreasing":
        ptr[2], ptr[3] = ptr[3], ptr[2] - 1
    elif what == "index-range":
        ind[0] = 6
    else:
        ind[-1] = -1
    tensors["res.W_indptr"], tensors["res.W_indices"] = ptr, ind
    rejects("bad weights", hc.pack(plan, tensors))


# ------------------------------------------------------------------------------ byte ranges


def _ranges(h):
    return sorted((v["data_offsets"][0], k) for k, v in h.items() if k != "__metadata__")


def test_overlapping_tensors():
    _, _, data = valid()

    def edit(h):
        (_, a), (start_b, b) = _ranges(h)[:2]
        # b and everything after it move 4 bytes back: b starts inside a, the rest stays contiguous
        for k, v in h.items():
            if k != "__metadata__" and v["data_offsets"][0] >= start_b:
                v["data_offsets"] = [v["data_offsets"][0] - 4, v["data_offsets"][1] - 4]

    header, body = hc.split(with_header(data, edit))
    rejects("overlapping tensors", hc.pack_raw(json.dumps(header).encode(), body[:-4]))


def test_two_tensors_sharing_bytes():
    """Aliasing: two names for the same bytes."""
    plan, tensors, _ = valid()
    header, body = hc.split(hc.pack(plan, tensors))
    header["lstm0.R"]["data_offsets"] = list(header["lstm0.W"]["data_offsets"])  # same size? not needed
    header["lstm0.R"]["shape"] = header["lstm0.W"]["shape"]
    with pytest.raises(ArtifactError, match=r"^(overlapping tensors|gap between tensors|trailing bytes): "):
        A.parse(hc.pack_raw(json.dumps(header).encode(), body))


def test_gap_between_tensors():
    _, _, data = valid()
    header, body = hc.split(data)
    first = _ranges(header)[0][1]
    b0, b1 = header[first]["data_offsets"]
    # shift every later tensor by 4 bytes and put 4 junk bytes after the first one
    for k, v in header.items():
        if k != "__metadata__" and v["data_offsets"][0] >= b1:
            v["data_offsets"] = [v["data_offsets"][0] + 4, v["data_offsets"][1] + 4]
    body = body[:b1] + b"JUNK" + body[b1:]
    rejects("gap between tensors", hc.pack_raw(json.dumps(header).encode(), body))


def test_gap_before_first_tensor():
    _, _, data = valid()
    header, body = hc.split(data)
    for k, v in header.items():
        if k != "__metadata__":
            v["data_offsets"] = [v["data_offsets"][0] + 8, v["data_offsets"][1] + 8]
    rejects("gap between tensors", hc.pack_raw(json.dumps(header).encode(), b"\0" * 8 + body))


def test_trailing_bytes():
    _, _, data = valid()
    rejects("trailing bytes", data + b"\0" * 4)


@pytest.mark.parametrize("offs", [[-4, 0], [8, 4], [0], [0, 1.5], "0-4", [True, 4]])
def test_bad_offsets(offs):
    _, _, data = valid()
    with pytest.raises(ArtifactError, match=r"^(tensor out of bounds|bad tensor entry): "):
        A.parse(with_header(data, lambda h: h["lstm0.W"].__setitem__("data_offsets", offs)))


def test_offsets_beyond_end():
    _, _, data = valid()
    rejects(
        "truncated file", with_header(data, lambda h: h["lstm0.W"].__setitem__("data_offsets", [0, 2**62]))
    )


# ------------------------------------------------------------------------------ valid corner cases


def test_unpadded_header_gives_aligned_arrays():
    """A header whose length is not a multiple of 4 is legal: the arrays still come out aligned."""
    plan, tensors = hc.model("lstm")
    data = hc.pack(plan, tensors, pad=False)
    (n,) = struct.unpack("<Q", data[:8])
    if (8 + n) % 4 == 0:  # make it odd
        header, body = hc.split(data)
        header["__metadata__"]["x"] = "y"
        data = hc.pack_raw(json.dumps(header).encode(), body, pad=False)
        (n,) = struct.unpack("<Q", data[:8])
    assert (8 + n) % 4 != 0
    _, got = A.parse(data)
    for name, arr in got.items():
        assert arr.flags.aligned
        np.testing.assert_array_equal(arr, tensors[name])


@pytest.mark.parametrize(
    "build",
    [
        lambda: hc.model("lstm"),
        lambda: hc.model("gru"),
        lambda: hc.model("rnn"),
        lambda: hc.model("esn"),
        hc.everything,
        hc.tokens_model,
        lambda: hc.quantize_int8(*hc.everything()),
        lambda: hc.to_fp16(*hc.everything()),
    ],
    ids=["lstm", "gru", "rnn", "esn", "everything", "tokens", "int8", "fp16"],
)
def test_valid_files_round_trip(build, tmp_path):
    """The hand-packed files and edgernn's writer agree, byte for byte on the tensors."""
    plan, tensors = build()
    p1, t1 = A.parse(hc.pack(plan, tensors))
    A.write(tmp_path / "m.ernn", plan, tensors)
    p2, t2 = A.read(tmp_path / "m.ernn")
    assert p1 == p2
    assert set(t1) == set(t2) == set(tensors)
    for k in tensors:
        assert t1[k].dtype == t2[k].dtype == tensors[k].dtype
        np.testing.assert_array_equal(t1[k], tensors[k])
        np.testing.assert_array_equal(t2[k], tensors[k])


def test_writer_leaves_no_temp_file_on_failure(tmp_path):
    plan, tensors = hc.model("lstm")
    tensors["lstm0.W"] = tensors["lstm0.W"].copy()
    tensors["lstm0.W"][0, 0, 0] = np.nan
    with pytest.raises(ArtifactError, match="^non-finite weights: "):
        A.write(tmp_path / "m.ernn", plan, tensors)
    assert os.listdir(tmp_path) == []
