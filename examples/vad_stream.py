"""Voice activity detection, streamed: Silero VAD compiled by edgernn, chunk by chunk, against ONNX Runtime.

The model is ``silero_vad_openvino_16k.onnx`` from the installed ``silero-vad`` package (MIT; the
``examples`` extra). The recording is speech synthesized offline with espeak-ng (a Debian package) and
resampled to 16 kHz with sox, with silence around and between the sentences, or your own 16 kHz mono WAV
(``--wav``). Every 512-sample chunk (plus the 64 samples before it, as the package's own wrapper feeds)
goes through ``stream.step`` and, with the state fed back, through ONNX Runtime (one thread). Prints the
speech segments, the per-chunk latency of both and their largest probability difference, and saves a PNG of
the waveform and the speech probability::

    python examples/vad_stream.py [-o OUT_DIR] [--wav FILE.wav] [--quick]

``--quick`` (for CI): the first 4 seconds only.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
import wave

import numpy as np

SR = 16000
CHUNK, CONTEXT = 512, 64
SENTENCES = (
    "Voice activity detection finds the parts of a recording where someone is speaking.",
    "After a pause, the speaker talks again about streaming models on small boards.",
)


def synthesize(path: str) -> None:
    """Write 16 kHz mono speech with silences (0.6 s before, 1.2 s between, 0.8 s after) to ``path``."""
    for tool in ("espeak-ng", "sox"):
        if not shutil.which(tool):
            raise SystemExit(
                f"vad_stream: {tool} is needed to synthesize the recording (apt-get install {tool})"
            )
    with tempfile.TemporaryDirectory() as d:
        parts = []
        for k, text in enumerate(SENTENCES):
            raw, part = os.path.join(d, f"raw{k}.wav"), os.path.join(d, f"p{k}.wav")
            subprocess.run(["espeak-ng", "-v", "en", "-s", "150", "-w", raw, text], check=True)
            pad = ["pad", "0.6", "0"] if k == 0 else ["pad", "1.2", "0.8"]
            subprocess.run(["sox", "-V1", raw, "-r", str(SR), "-c", "1", "-b", "16", part, *pad], check=True)
            parts.append(part)
        subprocess.run(["sox", "-V1", *parts, path], check=True)


def read_wav(path: str) -> np.ndarray:
    """A 16 kHz mono 16-bit WAV as float32 in [-1, 1)."""
    with wave.open(path) as w:
        if w.getframerate() != SR or w.getnchannels() != 1 or w.getsampwidth() != 2:
            raise SystemExit(f"vad_stream: {path} must be 16 kHz mono 16-bit PCM")
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


def chunks(audio: np.ndarray) -> np.ndarray:
    """(n, 576) float32: each 512-sample chunk with the 64 samples before it (zeros before the start)."""
    n = len(audio) // CHUNK
    padded = np.concatenate([np.zeros(CONTEXT, np.float32), audio[: n * CHUNK]])
    return np.stack([padded[i * CHUNK : i * CHUNK + CHUNK + CONTEXT] for i in range(n)]).astype(np.float32)


def segments(
    p: np.ndarray, on: float = 0.5, off: float = 0.35, min_gap: int = 3
) -> list[tuple[float, float]]:
    """Speech segments (start, end) in seconds: on above ``on``, off below ``off``, gaps < min_gap merged."""
    out: list[list[int]] = []
    active = False
    for i, v in enumerate(p):
        if not active and v > on:
            if out and i - out[-1][1] < min_gap:
                out[-1][1] = i + 1
            else:
                out.append([i, i + 1])
            active = True
        elif active:
            if v < off:
                active = False
            else:
                out[-1][1] = i + 1
    return [(a * CHUNK / SR, b * CHUNK / SR) for a, b in out]


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-o", "--out", default="vad_out", help="output directory")
    ap.add_argument("--wav", help="a 16 kHz mono WAV to use instead of the synthesized speech")
    ap.add_argument("--quick", action="store_true", help="the first 4 seconds only (CI)")
    args = ap.parse_args(argv)
    os.makedirs(args.out, exist_ok=True)

    import importlib.resources

    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import onnxruntime as ort
    from edgernn.export import compile_onnx

    import edgernn

    onnx_path = str(importlib.resources.files("silero_vad") / "data" / "silero_vad_openvino_16k.onnx")
    if args.wav:
        wav, source = args.wav, f"file {args.wav}"
    else:
        wav, source = os.path.join(args.out, "speech16k.wav"), "espeak-ng speech (en, 150 wpm), sox to 16 kHz"
        synthesize(wav)
    audio = read_wav(wav)
    if args.quick:
        audio = audio[: 4 * SR]
    X = chunks(audio)

    ernn = os.path.join(args.out, "silero_vad.ernn")
    compile_onnx(onnx_path, ernn)
    stream = edgernn.load(ernn).stream()
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    so.inter_op_num_threads = 1
    sess = ort.InferenceSession(onnx_path, so, providers=["CPUExecutionProvider"])

    p_e = np.empty(len(X), np.float32)
    p_o = np.empty(len(X), np.float32)
    t_e = np.empty(len(X))
    t_o = np.empty(len(X))
    state = np.zeros((2, 1, 128), np.float32)
    stream.step(X[0])
    stream.reset()  # the first call finishes loading the kernels: not part of the figures
    for i, x in enumerate(X):
        t0 = time.perf_counter()
        p_e[i] = stream.step(x)[0]
        t1 = time.perf_counter()
        out, state = sess.run(None, {"input": x[None], "state": state})
        t2 = time.perf_counter()
        p_o[i] = out.ravel()[0]
        t_e[i], t_o[i] = t1 - t0, t2 - t1
    segs = segments(p_e)
    us_e, us_o = float(np.median(t_e) * 1e6), float(np.median(t_o) * 1e6)
    results = {
        "recording": source,
        "seconds": round(len(audio) / SR, 3),
        "chunks": len(X),
        "speech_segments_s": [[round(a, 3), round(b, 3)] for a, b in segs],
        "speech_segments_ort_s": [[round(a, 3), round(b, 3)] for a, b in segments(p_o)],
        "max_abs_diff_vs_ort": float(np.abs(p_e - p_o).max()),
        "us_per_chunk_edgernn": round(us_e, 1),
        "us_per_chunk_ort": round(us_o, 1),
        "ratio": round(us_o / us_e, 2),
        "machine_load": round(os.getloadavg()[0], 2),
    }
    fig, (a1, a2) = plt.subplots(2, 1, figsize=(10, 5), sharex=True)
    a1.plot(np.arange(len(audio)) / SR, audio, lw=0.4)
    a1.set_ylabel("waveform")
    tc = (np.arange(len(X)) + 0.5) * CHUNK / SR
    a2.plot(tc, p_o, label="ONNX Runtime", lw=2, alpha=0.5)
    a2.plot(tc, p_e, "--", label="edgernn", lw=1)
    for a, b in segs:
        a1.axvspan(a, b, color="tab:green", alpha=0.2)
    a2.set_ylabel("speech probability")
    a2.set_xlabel("time (s)")
    a2.legend(loc="upper right")
    fig.tight_layout()
    fig.savefig(os.path.join(args.out, "vad.png"), dpi=100)
    with open(os.path.join(args.out, "results.json"), "w") as f:
        json.dump(results, f, indent=2)
    print(json.dumps(results, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
