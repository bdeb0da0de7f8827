"""Silero VAD per 512-sample chunk, one thread: edgernn ``Stream.step`` against ONNX Runtime's ``run`` on the
same ONNX file (state fed back, ``intra_op_num_threads=1``), in one process, printing the ratio.

    .venv/bin/python benchmarks/vad_bench.py [--file silero_vad_openvino_16k.onnx ...] [--chunks 2000]
        [--quantize int8|fp16] [--max-error E]

The chunks are 576-sample windows of a synthetic signal (speech-like bursts of harmonics and noise);
latency does not depend on the values. Also prints max |Δp| between the two over those chunks, and how
often the speech decision (p > 0.5) agrees. ``--quantize`` compiles the edgernn side that way (int8: pure
int8, ``--max-error inf``, unless ``--max-error`` says otherwise; calibrated on a second synthesized
recording when espeak-ng and sox are installed) and also prints the file size; the decision agreement is
then measured on a held-out recording too (tests/test_silero_vad.py's), ONNX Runtime always running the
float32 file. Files
that take ``sr`` or leave the chunk length open are compiled with ``--set sr=16000`` and ``--shape
input=1,576`` (the compiler front end of the Real-models issue; without it they are refused).
"""

from __future__ import annotations

import argparse
import importlib.resources
import os
import tempfile
import time

import numpy as np


def _signal(n: int, seed: int = 0) -> np.ndarray:
    rng = np.random.default_rng(seed)
    t = np.arange(n) / 16000.0
    env = (np.sin(2 * np.pi * 0.7 * t) > 0).astype(np.float32)
    voiced = sum(np.sin(2 * np.pi * f * t) / (k + 1) for k, f in enumerate((140, 280, 420, 700, 1100)))
    return (0.3 * env * voiced + 0.01 * rng.normal(size=n)).astype(np.float32)


def main() -> None:
    """Run the benchmark and print the per-chunk medians and their ratio."""

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--file", nargs="+", default=["silero_vad_openvino_16k.onnx"])
    ap.add_argument("--chunks", type=int, default=2000)
    ap.add_argument("--repeats", type=int, default=5)
    ap.add_argument("--quantize", choices=("int8", "fp16"), default=None)
    ap.add_argument("--max-error", default=None, help="int8 budget (default here: inf, pure int8)")
    a = ap.parse_args()
    for f in a.file:
        bench_file(f, a.chunks, a.repeats, a.quantize, a.max_error)


#: the test recording (tests/test_silero_vad.py) and the calibration one (tests/test_graph_quantize.py)
SPEECH = (
    "Voice activity detection finds the parts of a recording where someone is speaking. "
    "Silence follows. Then the speaker talks again about streaming models on small boards.",
    ("-v", "en", "-s", "150"),
    ("0.5", "1.0"),
)
CALIBRATION = (
    "The quick brown fox jumps over the lazy dog. Numbers like seven hundred and twelve are read "
    "aloud here, and then there is a pause before the last sentence. A second speaker would sound "
    "different, so this one changes pitch and speed: sensors report temperature, pressure and humidity "
    "every minute, and the gateway forwards them to the server. Thank you for listening.",
    ("-v", "en-us", "-s", "170", "-p", "30"),
    ("0.7", "0.8"),
)


def _speech(what: tuple = SPEECH) -> np.ndarray | None:
    """A recording spoken by espeak-ng with silence around it at 16 kHz (None without espeak-ng and sox)."""
    import shutil
    import subprocess
    import wave

    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        return None
    text, voice, pad = what
    with tempfile.TemporaryDirectory() as d:
        raw, wav = os.path.join(d, "raw.wav"), os.path.join(d, "s.wav")
        subprocess.run(["espeak-ng", *voice, "-w", raw, text], check=True)
        subprocess.run(
            ["sox", "-V1", "-D", raw, "-r", "16000", "-c", "1", "-b", "16", wav, "pad", *pad], check=True
        )
        with wave.open(wav) as w:
            return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


def _chunks(audio: np.ndarray) -> np.ndarray:
    """(n, 576) chunks: the last 64 samples of the previous chunk + 512 new ones (zeros before the start)."""
    a = np.concatenate([np.zeros(64, np.float32), audio.astype(np.float32)])
    n = (len(a) - 64) // 512
    return np.stack([a[i * 512 : i * 512 + 576] for i in range(n)])


def _compile(
    path: str, ernn: str, quantize: str | None = None, max_error: str | None = None, cal: str | None = None
) -> None:
    """``edgernn compile`` with the bindings the file needs (``sr``, an open chunk length)."""
    import onnx

    from edgernn.cli import main as cli

    g = onnx.load(path, load_external_data=False).graph
    args = ["compile", path, "-o", ernn]
    names = {i.name: i for i in g.input}
    if "sr" in names:
        args += ["--set", "sr=16000"]
    dims = [d.dim_value for d in names["input"].type.tensor_type.shape.dim]
    if len(dims) != 2 or 0 in dims:
        args += ["--shape", "input=1,576"]
    if quantize:
        args += ["--quantize", quantize]
    if quantize == "int8":
        args += ["--max-error", max_error or "inf"]
        if cal:
            args += ["--calibration", cal]
    if cli(args) != 0:
        raise SystemExit(f"vad_bench: could not compile {path}")


def bench_file(
    name: str, chunks: int, repeats: int, quantize: str | None = None, max_error: str | None = None
) -> None:
    """Benchmark one Silero ONNX file (a name in ``silero_vad/data``), edgernn compiled with ``quantize``."""
    import onnxruntime as ort

    import edgernn

    path = str(importlib.resources.files("silero_vad") / "data" / name)
    with tempfile.TemporaryDirectory() as d:
        ernn = os.path.join(d, "vad.ernn")
        f32 = os.path.join(d, "vad32.ernn")
        cal = None
        if quantize == "int8" and (audio := _speech(CALIBRATION)) is not None:
            cal = os.path.join(d, "cal.npy")
            np.save(cal, _chunks(audio)[None])
        _compile(path, ernn, quantize, max_error, cal)
        if quantize:
            _compile(path, f32)
            size32 = os.path.getsize(f32)
        size = os.path.getsize(ernn)
        m = edgernn.load(ernn)
    a = argparse.Namespace(file=name, chunks=chunks, repeats=repeats)
    audio = _signal(512 * a.chunks + 64)
    X = np.stack([audio[i * 512 : i * 512 + 576] for i in range(a.chunks)]).astype(np.float32)
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    sr = {"sr": np.array(16000, np.int64)} if "sr" in names else {}

    def run_ort(X=X) -> tuple[float, np.ndarray]:
        state = np.zeros((2, 1, 128), np.float32)
        out = np.empty(len(X), np.float32)
        t0 = time.perf_counter()
        for i, x in enumerate(X):
            p, state = sess.run(None, {"input": x[None], "state": state, **sr})
            out[i] = p.ravel()[0]
        return (time.perf_counter() - t0) / len(X), out

    def run_ernn(X=X) -> tuple[float, np.ndarray]:
        s = m.stream()
        out = np.empty(len(X), np.float32)
        step = s.step
        t0 = time.perf_counter()
        for i, x in enumerate(X):
            out[i] = step(x)[0]
        return (time.perf_counter() - t0) / len(X), out

    run_ort(), run_ernn()  # warm both
    to, te = [], []
    for _ in range(a.repeats):  # interleaved: both see the same machine load
        t, po = run_ort()
        to.append(t)
        t, pe = run_ernn()
        te.append(t)
    mo, me = float(np.median(to)) * 1e6, float(np.median(te)) * 1e6
    print(
        f"file {a.file}: {a.chunks} chunks x {a.repeats} repeats, one thread, load {os.getloadavg()[0]:.1f}"
    )
    print(f"  onnxruntime run : {mo:8.1f} us/chunk (min {min(to) * 1e6:.1f})")
    print(f"  edgernn step    : {me:8.1f} us/chunk (min {min(te) * 1e6:.1f})")
    print(f"  ratio           : {mo / me:8.2f}x  (max |dp| {float(np.abs(po - pe).max()):.2e})")
    agree = float(np.mean((po > 0.5) == (pe > 0.5)))
    print(f"  decision p>0.5  : {100 * agree:.2f}% of the {len(X)} synthetic chunks agree with ORT fp32")
    if quantize:
        how = "calibrated on another espeak-ng recording" if cal else "nearest rounding"
        print(f"  file            : {size} bytes {quantize} (float32 {size32}: {size / size32:.3f}x)")
        if quantize == "int8":
            print(f"  int8 rounding   : {how}, budget --max-error {max_error or 'inf'}")
        audio = _speech()
        if audio is None:
            print("  (no espeak-ng/sox: no real recording for the decision agreement)")
        else:
            S = _chunks(audio)
            po, pe = run_ort(S)[1], run_ernn(S)[1]
            agree = float(np.mean((po > 0.5) == (pe > 0.5)))
            print(
                f"  speech recording: {len(S)} chunks, max |dp| {float(np.abs(po - pe).max()):.2e}, decision "
                f"agrees on {100 * agree:.2f}% ({int(np.sum(po > 0.5))} speech chunks by ORT)"
            )


if __name__ == "__main__":
    main()
