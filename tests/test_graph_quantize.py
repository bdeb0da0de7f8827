"""int8 and fp16 graph plans (format 2): ``compile_onnx(..., quantize=...)`` on a model whose ops carry
weights inside a graph (a value read by two ops).

A synthetic step graph (ONNX helper API): x [1, 64] as [4, 16] → Conv 4→8 (k 3, pads 1) → |c| +
Relu(c) (c read twice: a graph) → Gemm 128→32 + Relu → one LSTM step (H 24, state h/c fed back) → Gemm
24→3 → Sigmoid. Oracles: a float64 numpy implementation of that network written here, run on the
*dequantized* weights read back from the artifact (the kernels must compute exactly that network, so
the bound is tight: ONNX Runtime's float32 tolerance), and ONNX Runtime on the float32 ONNX file (a
loose bound: the quantization error itself). Then the loader's strictness on int8/fp16 tensors of
graph ops, the accuracy budget inside a graph, and Silero VAD int8 against ONNX Runtime fp32 on a
synthesized recording.
"""

from __future__ import annotations

import os
import subprocess
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
from compiler_common import mismatch  # noqa: E402

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import compile_onnx  # noqa: E402
from onnx import TensorProto, helper, numpy_helper  # noqa: E402

import edgernn  # noqa: E402
from edgernn import ArtifactError, artifact  # noqa: E402

H = 24
#: |int8 output - ORT float32| on this model's sigmoid outputs (measured 3.7e-4), fp16 (measured 8.4e-5)
INT8_VS_FLOAT, FP16_VS_FLOAT = 5e-3, 1e-3


def _model(seed: int = 0) -> onnx.ModelProto:
    rng = np.random.default_rng(seed)

    def w(*shape):
        fan = int(np.prod(shape[1:]))
        return (rng.normal(size=shape) / np.sqrt(fan)).astype(np.float32)

    arrays = {
        "W1": w(8, 4, 3),
        "b1": w(8, 1)[:, 0],
        "Wd": w(32, 128),
        "bd": w(32, 1)[:, 0],
        "Wl": w(1, 4 * H, 32),
        "Rl": w(1, 4 * H, H),
        "Bl": (0.1 * rng.normal(size=(1, 8 * H))).astype(np.float32),
        "Wh": w(3, H),
        "bh": w(3, 1)[:, 0],
        "s1": np.array([1, 4, 16], np.int64),
        "s2": np.array([1, 128], np.int64),
        "s3": np.array([1, 1, 32], np.int64),
        "s4": np.array([1, H], np.int64),
    }
    node = helper.make_node
    nodes = [
        node("Reshape", ["x", "s1"], ["x3"]),
        node("Conv", ["x3", "W1", "b1"], ["c"], kernel_shape=[3], pads=[1, 1]),
        node("Abs", ["c"], ["cc"]),  # c's first reader is not an activation: c stays linear
        node("Relu", ["c"], ["r"]),
        node("Add", ["r", "cc"], ["z"]),
        node("Reshape", ["z", "s2"], ["zf"]),
        node("Gemm", ["zf", "Wd", "bd"], ["d"], transB=1),
        node("Relu", ["d"], ["dr"]),
        node("Reshape", ["dr", "s3"], ["ds"]),
        node("LSTM", ["ds", "Wl", "Rl", "Bl", "", "h", "c0"], ["Y", "hn", "cn"], hidden_size=H),
        node("Reshape", ["hn", "s4"], ["hf"]),
        node("Gemm", ["hf", "Wh", "bh"], ["o"], transB=1),
        node("Sigmoid", ["o"], ["y"]),
    ]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(
        nodes,
        "g",
        [
            vi("x", TensorProto.FLOAT, [1, 64]),
            vi("h", TensorProto.FLOAT, [1, 1, H]),
            vi("c0", TensorProto.FLOAT, [1, 1, H]),
        ],
        [
            vi("y", TensorProto.FLOAT, [1, 3]),
            vi("hn", TensorProto.FLOAT, [1, 1, H]),
            vi("cn", TensorProto.FLOAT, [1, 1, H]),
        ],
        initializer=[numpy_helper.from_array(a, n) for n, a in arrays.items()],
    )
    return helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8)


@pytest.fixture(scope="module")
def files(tmp_path_factory) -> dict:
    """The ONNX file and its fp32, int8 (pure: max_error inf) and fp16 artifacts."""
    d = tmp_path_factory.mktemp("gq")
    p = d / "m.onnx"
    onnx.save(_model(), p)
    out = {"onnx": str(p)}
    for mode, kw in (("fp32", {}), ("int8", {"max_error": float("inf")}), ("fp16", {})):
        out[mode] = str(d / f"m.{mode}.ernn")
        out[mode + "_res"] = compile_onnx(str(p), out[mode], quantize=None if mode == "fp32" else mode, **kw)
    return out


def _X(n: int = 30, seed: int = 1) -> np.ndarray:
    return (np.random.default_rng(seed).normal(size=(n, 64)) * 1.5).astype(np.float32)


def _ort(path: str, X: np.ndarray) -> np.ndarray:
    sess = ort.InferenceSession(path, providers=["CPUExecutionProvider"])
    h = c = np.zeros((1, 1, H), np.float32)
    out = []
    for x in X:
        y, h, c = sess.run(None, {"x": x[None], "h": h, "c0": c})
        out.append(y.ravel())
    return np.asarray(out)


def _reference(w: dict, X: np.ndarray) -> np.ndarray:
    """The network in float64 numpy, step by step from a zero state (ONNX Conv/Gemm/LSTM semantics)."""

    def sig(v):
        return 1 / (1 + np.exp(-v))

    assert set(w) == {
        ("conv1d", "W"),
        ("conv1d", "b"),
        ("dense", "W"),
        ("dense", "b"),
        ("lstm", "W"),
        ("lstm", "R"),
        ("lstm", "B"),
        ("dense", "W_head"),
        ("dense", "b_head"),
    }, sorted(w)  # the plan holds only these weights: the reference uses every one
    W1, b1 = w[("conv1d", "W")], w[("conv1d", "b")]
    Wd, bd = w[("dense", "W")], w[("dense", "b")]
    h = np.zeros(H)
    c = np.zeros(H)
    out = []
    for x in np.asarray(X, np.float64):
        xp = np.pad(x.reshape(4, 16), ((0, 0), (1, 1)))
        conv = np.stack([np.einsum("oik,ik->o", W1, xp[:, p : p + 3]) for p in range(16)], 1) + b1[:, None]
        z = np.maximum(conv, 0) + np.abs(conv)
        d = np.maximum(Wd @ z.ravel() + bd, 0)
        g = w[("lstm", "W")][0] @ d + w[("lstm", "R")][0] @ h + w[("lstm", "B")][0, : 4 * H]
        g = g + w[("lstm", "B")][0, 4 * H :]
        i, o, f, cc = sig(g[:H]), sig(g[H : 2 * H]), sig(g[2 * H : 3 * H]), np.tanh(g[3 * H :])
        c = f * c + i * cc
        h = o * np.tanh(c)
        out.append(sig(w[("dense", "W_head")] @ h + w[("dense", "b_head")]))
    return np.asarray(out)


def _weights(path: str) -> dict:
    """The artifact's weights by (op kind, role), float64: int8 q · scale (broadcast over the axes the
    scale does not have), float16 widened; the second dense op (the head) has roles W_head/b_head."""
    plan, t = artifact.read(path)
    dense = [op["name"] for op in plan["ops"] if op["kind"] == "dense"]
    w = {}
    for op in plan["ops"]:
        for role, name in op["tensors"].items():
            if role.endswith("_scale") or op["kind"] == "gather":  # the gather only moves values
                continue
            a = np.asarray(t[name], np.float64)
            if t[name].dtype == np.int8:
                s = np.asarray(t[op["tensors"][role + "_scale"]], np.float64)
                a = a * s.reshape(s.shape + (1,) * (a.ndim - s.ndim))
            w[(op["kind"], role + ("_head" if op["name"] == dense[1] else ""))] = a
    return w


def test_the_model_is_a_graph_plan_with_weights_in_conv_dense_and_lstm(files):
    """The fixture is what it claims: format 2, the conv/dense/LSTM weights int8 with per-output-channel
    (conv) and per-row scales, fp16 everything float but the scales; float32 matches ORT."""
    plan, t = artifact.read(files["int8"])
    assert plan["format_version"] == 2 and plan["quantization"] == "int8"
    kinds = {op["kind"]: op for op in plan["ops"]}
    assert {"conv1d", "dense", "lstm", "binary"} <= set(kinds)
    conv = kinds["conv1d"]["tensors"]
    assert t[conv["W"]].dtype == np.int8 and t[conv["W_scale"]].shape == (8,)
    lstm = kinds["lstm"]["tensors"]
    assert t[lstm["W"]].dtype == np.int8 and t[lstm["R_scale"]].shape == (1, 4 * H)
    assert all(
        plan["quantization_layers"][op["name"]]["precision"] == "int8"
        for op in plan["ops"]
        if op["kind"] in ("conv1d", "dense", "lstm")
    )
    plan16, t16 = artifact.read(files["fp16"])
    assert plan16["quantization"] == "fp16"
    for op in plan16["ops"]:  # a gather's index (integers) stays float32
        for role, n in op["tensors"].items():
            assert t16[n].dtype == (np.float32 if role == "index" else np.float16), (op["name"], role)
    X = _X()
    got = edgernn.load(files["fp32"], backend="numpy").stream().run(X)
    assert mismatch(got, _ort(files["onnx"], X)) is None


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("mode", ["int8", "fp16"])
def test_kernels_compute_the_network_on_the_dequantized_weights(files, mode, backend, monkeypatch):
    """Both backends equal the numpy float64 network on the artifact's dequantized weights within ORT's
    float32 tolerance (1e-5 + 1e-4·|e|), step by step and over a chunk; and ORT on the float32 file
    within the quantization error bound (int8 5e-3, fp16 1e-3). EDGERNN_DEQUANTIZE_MAX_BYTES=0 keeps
    the small int8 LSTM in int8 in the kernels too (by default it is computed from float32 copies)."""
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")
    X = _X()
    want = _reference(_weights(files[mode]), X)
    m = edgernn.load(files[mode], backend=backend)
    if mode == "int8":
        assert not m.info.get("dequantized")
    s = m.stream()
    steps = np.stack([s.step(x) for x in X])
    assert mismatch(steps, want) is None, f"{mode} {backend} step: {mismatch(steps, want)}"
    chunk = m.stream().run(X)
    assert mismatch(chunk, want) is None, f"{mode} {backend} run: {mismatch(chunk, want)}"
    float_err = float(np.abs(steps - _ort(files["onnx"], X)).max())
    assert float_err <= (INT8_VS_FLOAT if mode == "int8" else FP16_VS_FLOAT), float_err
    assert float_err > 0  # the weights did change


def test_sizes_and_report(files):
    """int8 stores the weights in ~1/4 of the bytes (scales and the plan on top: < 0.45 of the float32
    file), fp16 in ~1/2 (< 0.6); each file carries its quantization report, whose error figure is what
    the file computes."""
    f32 = os.path.getsize(files["fp32"])
    for mode, cap in (("int8", 0.45), ("fp16", 0.6)):
        size = os.path.getsize(files[mode])
        assert size < cap * f32, (mode, size, f32)
        rep = files[mode + "_res"]["quantization_report"]
        assert rep["mode"] == mode and rep["bytes"] == size and rep["float32_bytes"] == f32
        assert 0 < rep["max_abs_error"] < (INT8_VS_FLOAT if mode == "int8" else FP16_VS_FLOAT)
        assert edgernn.load(files[mode]).info["quantization"] == mode


def _rewrite(src: str, dst: str, change) -> None:
    """Write ``src``'s plan and tensors, changed by ``change(plan, tensors)``, with the raw writer (no
    validation), so that the loader sees the hostile file."""
    import json
    import struct

    plan, t = artifact.read(src)
    t = {k: np.array(v) for k, v in t.items()}
    change(plan, t)
    header = {"__metadata__": {artifact.PLAN_KEY: json.dumps(plan)}}
    off, names = 0, sorted(t)
    for n in names:
        header[n] = {
            "dtype": artifact.dtype_name(t[n]),
            "shape": list(t[n].shape),
            "data_offsets": [off, off + t[n].nbytes],
        }
        off += t[n].nbytes
    hb = json.dumps(header).encode()
    hb += b" " * (-(len(hb) + 8) % 8)
    with open(dst, "wb") as f:
        f.write(struct.pack("<Q", len(hb)) + hb + b"".join(t[n].tobytes() for n in names))


def _op(plan, kind):
    return next(op for op in plan["ops"] if op["kind"] == kind)


@pytest.mark.parametrize(
    "what,change,check",
    [
        (
            "conv scale per row of the last axis",
            lambda p, t: t.update({_op(p, "conv1d")["tensors"]["W_scale"]: np.ones((8, 4), np.float32)}),
            "shape mismatch",
        ),
        (
            "conv scale float16",
            lambda p, t: t.update({_op(p, "conv1d")["tensors"]["W_scale"]: np.ones(8, np.float16)}),
            "shape mismatch",
        ),
        (
            "conv int8 without its scale",
            lambda p, t: _op(p, "conv1d")["tensors"].pop("W_scale"),
            "tensor missing",
        ),
        (
            "negative conv scale",
            lambda p, t: t.update({_op(p, "conv1d")["tensors"]["W_scale"]: -np.ones(8, np.float32)}),
            "non-finite weights",
        ),
        (
            "a scale for a float role",
            lambda p, t: (
                _op(p, "conv1d")["tensors"].update(b_scale="xs"),
                t.update(xs=np.ones(1, np.float32)),
            ),
            "unexpected tensor",
        ),
        (
            "int8 conv bias",
            lambda p, t: t.update({_op(p, "conv1d")["tensors"]["b"]: np.ones(8, np.int8)}),
            "dtype not allowed",
        ),
        ("int8 conv in an fp16 artifact", lambda p, t: p.update(quantization="fp16"), "dtype not allowed"),
    ],
)
def test_loader_refuses_bad_int8_tensors_of_graph_ops(files, tmp_path, what, change, check):
    """A hostile int8 graph artifact: one ArtifactError naming the check, for each case."""
    bad = str(tmp_path / "bad.ernn")
    _rewrite(files["int8"], bad, change)
    with pytest.raises(ArtifactError, match=check):
        edgernn.load(bad)


def test_loader_keeps_a_gather_index_float32(files, tmp_path):
    """An fp16 artifact stores the weights as F16 but not a gather's index (integers, which F16 holds
    exactly only up to 2048): the quantizer keeps it F32, and the loader refuses an F16 one (dtype not
    allowed)."""
    plan, t = artifact.read(files["fp16"])
    ix = _op(plan, "gather")["tensors"]["index"]
    assert t[ix].dtype == np.float32

    def to16(pl, tt):
        tt[ix] = tt[ix].astype(np.float16)

    _rewrite(files["fp16"], str(tmp_path / "bad.ernn"), to16)
    with pytest.raises(ArtifactError, match="dtype not allowed"):
        edgernn.load(tmp_path / "bad.ernn")


def test_budget_keeps_a_sensitive_graph_op_wider(files, tmp_path):
    """With a budget between the ops' int8 errors, the budget leaves at least one op fp16/fp32, keeps the
    others int8, meets the budget end to end, and records every op's choice in the file."""
    res = files["int8_res"]
    layers = res["quantization_budget"]["layers"]
    errs = sorted(ly["sensitivity"]["int8_nearest"]["max_error"] for ly in layers)
    limit = float(np.sqrt(errs[0] * errs[1]))  # the least sensitive op alone fits, not two together
    out = compile_onnx(files["onnx"], str(tmp_path / "b.ernn"), quantize="int8", max_error=limit)
    bud = out["quantization_budget"]
    choice = {ly["name"]: ly["choice"] for ly in bud["layers"]}
    assert bud["met"] and bud["final"]["max_error"] <= limit
    assert "int8" in choice.values() and set(choice.values()) - {"int8"}, choice
    plan, _ = artifact.read(tmp_path / "b.ernn")
    assert {k: v["precision"] for k, v in plan["quantization_layers"].items()} == choice
    assert "quantization_report" in plan
    X = _X()
    want = _reference(_weights(str(tmp_path / "b.ernn")), X)
    assert mismatch(edgernn.load(tmp_path / "b.ernn", backend="numpy").stream().run(X), want) is None


def test_calibration_compensates_the_rounding_of_graph_ops(files, tmp_path):
    """With calibration data, the conv, dense and LSTM matrices of a graph get error-compensated rounding
    (GPTQ on the values recorded while the data streams through the graph), which lowers the error on
    held-out inputs; the kernels still compute the network on the dequantized weights."""
    cal = _X(400, seed=5)[None]
    out = compile_onnx(
        files["onnx"], str(tmp_path / "c.ernn"), quantize="int8", calibration=cal, max_error=float("inf")
    )
    plan, _ = artifact.read(tmp_path / "c.ernn")
    mats = plan["quantization_rounding"]["matrices"]
    assert any(k.endswith(".W") and v == "gptq" for k, v in mats.items()), mats
    assert any("W+R" in k and v == "gptq" for k, v in mats.items()), mats
    X = _X(200, seed=9)
    ref = _ort(files["onnx"], X)
    err = {}
    for name, path in (("nearest", files["int8"]), ("compensated", str(tmp_path / "c.ernn"))):
        got = edgernn.load(path, backend="numpy").stream().run(X)
        assert mismatch(got, _reference(_weights(path), X)) is None
        err[name] = float(np.abs(got - ref).mean())
    assert err["compensated"] < err["nearest"], err
    assert out["quantization_budget"]["layers"]


def test_no_weights_is_one_clear_error(tmp_path):
    """A graph with nothing to quantize: one QuantizationError per mode, no file."""
    from edgernn.export.quantize import QuantizationError

    nodes = [helper.make_node("Sqrt", ["x"], ["s"]), helper.make_node("Mul", ["s", "x"], ["y"])]
    vi = helper.make_tensor_value_info
    g = helper.make_graph(
        nodes, "g", [vi("x", TensorProto.FLOAT, [1, 4])], [vi("y", TensorProto.FLOAT, [1, 4])]
    )
    p = tmp_path / "m.onnx"
    onnx.save(helper.make_model(g, opset_imports=[helper.make_opsetid("", 17)], ir_version=8), p)
    for mode in ("int8", "fp16"):
        with pytest.raises(QuantizationError, match="requested but the plan has no"):
            compile_onnx(str(p), str(tmp_path / "m.ernn"), quantize=mode)
        assert not (tmp_path / "m.ernn").exists()


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_tconv_int8_computes_the_causal_convolution_on_the_dequantized_weights(tmp_path, backend):
    """A causal convolution over time (``tconv``, Cin 3 → Cout 5, K 3, dilation 2) + dense head as a
    graph plan, quantized int8 (W: one scale per output channel, packed tap-major): step by step from a
    zero history it equals the float64 causal convolution on q · scale, within ORT's float32 tolerance."""
    from edgernn.export.quantize import quantize_plan

    rng = np.random.default_rng(3)
    W = rng.normal(size=(5, 3, 3)).astype(np.float32)
    b = rng.normal(size=5).astype(np.float32)
    Wd = rng.normal(size=(2, 5)).astype(np.float32)
    tc = {"kind": "tconv", "name": "tc", "input_size": 3, "in_channels": 3, "out_channels": 5,
          "kernel_size": 3, "dilation": 2, "activation": "tanh",
          "tensors": {"W": "tc.W", "b": "tc.b"}}  # fmt: skip
    head = {"kind": "dense", "name": "head", "input_size": 5, "output_size": 2, "tensors": {"W": "head.W"}}
    plan = artifact.upgrade(
        {"format": "ernn", "format_version": 1, "input": {"size": 3},
         "output": {"size": 2, "sequence": "many_to_many"}, "layers": [tc, head]}
    )  # fmt: skip
    qplan, qt = quantize_plan(plan, {"tc.W": W, "tc.b": b, "head.W": Wd}, "int8")
    tc = _op(qplan, "tconv")["tensors"]
    assert qt[tc["W"]].dtype == np.int8 and qt[tc["W_scale"]].shape == (5,)
    artifact.write(tmp_path / "t.ernn", qplan, qt)
    Wq = qt[tc["W"]].astype(np.float64) * qt[tc["W_scale"]].astype(np.float64)[:, None, None]
    Wdq = qt["head.W"].astype(np.float64) * qt["head.W_scale"].astype(np.float64)[:, None]
    X = rng.normal(size=(12, 3))
    Xp = np.concatenate([np.zeros((4, 3)), X])  # (K - 1)·d = 4 zeros before the start
    want = np.stack(
        [Wdq @ np.tanh(b + sum(Wq[:, :, k] @ Xp[t + 4 - (2 - k) * 2] for k in range(3))) for t in range(12)]
    )
    s = edgernn.load(tmp_path / "t.ernn", backend=backend).stream()
    got = np.stack([s.step(x.astype(np.float32)) for x in X])
    assert mismatch(got, want) is None, mismatch(got, want)


# ------------------------------------------------------------------------------------------ Silero VAD

import test_silero_vad as vad  # noqa: E402

#: the files tested int8: the one that compiles as is, and one needing the front end (--set/--shape)
VAD_INT8 = ["openvino", "op15"]


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> np.ndarray:
    """tests/test_silero_vad.py's recording (~13 s of espeak-ng speech with silence around it)."""
    return vad.synthesize(tmp_path_factory.mktemp("speech"), vad.SPEECH_TEXT)


@pytest.fixture(scope="module")
def calibration_speech(tmp_path_factory) -> np.ndarray:
    """Another recording for calibration (other words, another voice, rate and pitch), so that the test
    recording stays held out: (n, 576) chunks, ~23 s (with half as much, 341 chunks, the LSTM's 256
    columns had 341 vectors and op15 agreed on 99.5 % only)."""
    text = (
        "The quick brown fox jumps over the lazy dog. Numbers like seven hundred and twelve are read "
        "aloud here, and then there is a pause before the last sentence. A second speaker would sound "
        "different, so this one changes pitch and speed: sensors report temperature, pressure and humidity "
        "every minute, and the gateway forwards them to the server. Thank you for listening."
    )
    audio = vad.synthesize(
        tmp_path_factory.mktemp("cal"), text, ("-v", "en-us", "-s", "170", "-p", "30"), ("0.7", "0.8")
    )
    return vad._chunks(audio)


@pytest.fixture(scope="module")
def vad_int8(tmp_path_factory, calibration_speech) -> dict:
    """Each VAD_INT8 file compiled ``--quantize int8 --max-error inf --calibration cal.npy`` (pure int8,
    error-compensated on the calibration recording) through the CLI, once."""
    d = tmp_path_factory.mktemp("vad8")
    cal = d / "cal.npy"
    np.save(cal, calibration_speech[None])
    done = {}

    def get(name):
        if name not in done:
            out = d / f"{name}.int8.ernn"
            cli = [sys.executable, "-m", "edgernn.cli", "compile", vad._model_path(name), "-o", str(out)]
            cli += vad.FILES[name][1] + [
                "--quantize",
                "int8",
                "--max-error",
                "inf",
                "--calibration",
                str(cal),
            ]
            r = subprocess.run(cli, capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
            done[name] = str(out)
        return done[name]

    return get


def _vad_check(vad_int8, recording, name, backend):
    X = vad._chunks(recording)
    want = vad._ort_probs(vad._model_path(name), X)
    assert (want > 0.5).sum() > 50 and (want < 0.5).sum() > 50, "speech and silence"
    path = vad_int8(name)
    plan, t = artifact.read(path)
    assert plan["format_version"] == 2 and plan["quantization"] == "int8"
    kinds = {op["kind"] for op in plan["ops"] if any(t[n].dtype == np.int8 for n in op["tensors"].values())}
    assert {"conv1d", "dense", "lstm"} <= kinds, kinds
    from edgernn.kernels.ops.conv import fold_runs

    stft = next(op for op in plan["ops"] if op["kind"] == "conv1d" and op["attrs"]["in_channels"] == 1)
    q = t[stft["tensors"]["W"]]
    assert fold_runs(q.reshape(q.shape[0], -1)) is not None  # compensated, and still an int8 folded bank
    assert plan["quantization_rounding"]["matrices"][f"{stft['name']}.W"] == "gptq"
    s = edgernn.load(path, backend=backend).stream()
    got = np.array([s.step(x)[0] for x in X])
    agree = float(np.mean((got > 0.5) == (want > 0.5)))
    assert agree >= 0.995, f"{name} {backend}: the decision agrees on {100 * agree:.2f}% of {len(X)} chunks"


@pytest.mark.parametrize("name", VAD_INT8)
def test_silero_int8_decides_like_ort_fp32(vad_int8, recording, name):
    """Silero VAD int8 (conv, dense and LSTM weights int8): the speech decision p > 0.5 on every chunk of
    the held-out recording agrees with ONNX Runtime on the float32 file on ≥ 99.5 % of chunks (numpy
    backend; the generated kernels in the slow test)."""
    _vad_check(vad_int8, recording, name, "numpy")


@pytest.mark.slow
@pytest.mark.parametrize("name", VAD_INT8)
def test_silero_int8_kernels_decide_like_ort_fp32(vad_int8, recording, name):
    """The same through the generated numba kernels."""
    _vad_check(vad_int8, recording, name, "numba")
