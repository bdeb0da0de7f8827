"""Silero VAD (the ``silero-vad`` 6.2.3 package, MIT) compiled by ``edgernn compile`` and streamed chunk by
chunk against ONNX Runtime run on the same file with its state fed back.

The recording is speech synthesized at test time with espeak-ng (a Debian package) and resampled to
16 kHz with sox; the test skips when either tool is missing. Each chunk is 576 samples: 512 new ones and
the last 64 of the previous chunk (what the package's own wrapper feeds).
"""

from __future__ import annotations

import shutil
import subprocess
import sys
import wave

import numpy as np
import pytest

ort = pytest.importorskip("onnxruntime")
pytest.importorskip("silero_vad")

import edgernn  # noqa: E402

#: name -> (file, extra `edgernn compile` arguments). All but the openvino file need the compiler front
#: end's --set / --shape (and If folding); until that is in, their tests skip, naming why.
FILES = {
    "openvino": ("silero_vad_openvino_16k.onnx", []),
    "op15": ("silero_vad_16k_op15.onnx", ["--set", "sr=16000", "--shape", "input=1,576"]),
    "half": ("silero_vad_half.onnx", ["--shape", "input=1,576"]),
    "full": ("silero_vad.onnx", ["--set", "sr=16000", "--shape", "input=1,576"]),
    "op18_ifless": ("silero_vad_op18_ifless.onnx", ["--set", "sr=16000", "--shape", "input=1,576"]),
    "sequence": ("silero_vad_16k_sequence.onnx", []),
}
STEP_FILES = [k for k in FILES if k != "sequence"]


def _model_path(name: str) -> str:
    import importlib.resources

    return str(importlib.resources.files("silero_vad") / "data" / FILES[name][0])


def synthesize(d, text: str, espeak: tuple = ("-v", "en", "-s", "150"), pad=("0.5", "1.0")) -> np.ndarray:
    """``text`` spoken by espeak-ng (options ``espeak``) and resampled to 16 kHz by sox with ``pad``
    seconds of silence before and after, float32 (files in the folder ``d``); skips the calling test when
    either tool is missing. No dither (``-D``): the same recording every run (sox's dither is random,
    and moved a chunk whose probability is near 0.5 across the threshold between runs)."""
    if not (shutil.which("espeak-ng") and shutil.which("sox")):
        pytest.skip("espeak-ng and sox are needed to synthesize the recording")
    raw, wav = d / "raw.wav", d / "speech16k.wav"
    subprocess.run(["espeak-ng", *espeak, "-w", str(raw), text], check=True)
    subprocess.run(
        ["sox", "-V1", "-D", str(raw), "-r", "16000", "-c", "1", "-b", "16", str(wav), "pad", *pad],
        check=True,
    )
    with wave.open(str(wav)) as w:
        assert w.getframerate() == 16000
        return np.frombuffer(w.readframes(w.getnframes()), np.int16).astype(np.float32) / 32768


#: what the test recording says
SPEECH_TEXT = (
    "Voice activity detection finds the parts of a recording where someone is speaking. "
    "Silence follows. Then the speaker talks again about streaming models on small boards."
)


@pytest.fixture(scope="module")
def speech(tmp_path_factory) -> np.ndarray:
    """About 13 s of synthesized English speech with silence around it, float32 at 16 kHz."""
    return synthesize(tmp_path_factory.mktemp("speech"), SPEECH_TEXT)


_FRONT_END: list[bool] = []


def _front_end() -> bool:
    """Whether ``edgernn compile`` has the front end's ``--shape`` (bindings, If folding)."""
    if not _FRONT_END:
        r = subprocess.run(
            [sys.executable, "-m", "edgernn.cli", "compile", "--help"], capture_output=True, text=True
        )
        _FRONT_END.append("--shape" in r.stdout)
    return _FRONT_END[0]


class _Compiled:
    """Each Silero file compiled (once, on first use) through the CLI."""

    def __init__(self, d):
        self.d = d
        self.done: dict[str, str] = {}

    def __getitem__(self, name: str) -> str:
        if name not in self.done:
            ernn = self.d / f"{name}.ernn"
            cli = [sys.executable, "-m", "edgernn.cli", "compile", _model_path(name), "-o", str(ernn)]
            if name != "openvino" and not _front_end():
                pytest.skip(f"{FILES[name][0]} needs the compiler front end's --set/--shape/If folding")
            r = subprocess.run(cli + FILES[name][1], capture_output=True, text=True)
            assert r.returncode == 0, r.stderr[-2000:]
            self.done[name] = str(ernn)
        return self.done[name]


@pytest.fixture(scope="module")
def compiled(tmp_path_factory) -> _Compiled:
    return _Compiled(tmp_path_factory.mktemp("vad"))


def _chunks(audio: np.ndarray, n: int | None = None) -> np.ndarray:
    """(n, 576) float32 chunks: 64 samples of context + 512 new ones."""
    k = len(audio) // 512 if n is None else n
    ctx = np.zeros(64, np.float32)
    rows = []
    for i in range(k):
        ch = audio[i * 512 : (i + 1) * 512]
        rows.append(np.concatenate([ctx, ch]))
        ctx = ch[-64:]
    return np.asarray(rows, np.float32)


def _ort_probs(path: str, X: np.ndarray) -> np.ndarray:
    so = ort.SessionOptions()
    so.intra_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    names = [i.name for i in sess.get_inputs()]
    state = np.zeros((2, 1, 128), np.float32)
    out = []
    for x in X:
        feed = {"input": x[None], "state": state}
        if "sr" in names:
            feed["sr"] = np.array(16000, np.int64)
        p, state = sess.run(None, feed)
        out.append(float(np.ravel(p)[0]))
    return np.asarray(out)


def _check(compiled, speech, name: str, n: int | None, backends=("numba", "numpy")) -> None:
    X = _chunks(speech, n)
    want = _ort_probs(_model_path(name), X)
    assert (want > 0.5).any() and (want < 0.5).any(), "the recording should have speech and silence"
    for backend in backends:
        m = edgernn.load(compiled[name], backend=backend)
        assert m.input_size == 576 and m.output_size == 1
        s = m.stream()
        got = np.asarray([s.step(x) for x in X])
        assert got.shape == (len(X), 1)
        err = float(np.abs(got[:, 0] - want).max())
        assert err <= 1e-4, f"{name} {backend}: max |dp| {err:.3g} over {len(X)} chunks"
        s.reset()
        assert float(np.abs(s.step(X[0])[0] - want[0])) <= 1e-4  # reset restores the zero state


@pytest.mark.parametrize("name", STEP_FILES)
def test_silero_few_chunks(compiled, speech, name):
    """The first 40 chunks (1.3 s, silence then speech onset) on the numpy backend, within 1e-4 of ORT
    (the generated kernels take ~30 s of CPU to compile here: the slow test runs them)."""
    _check(compiled, speech, name, 40, backends=("numpy",))


@pytest.mark.slow
@pytest.mark.parametrize("name", STEP_FILES)
def test_silero_whole_recording(compiled, speech, name):
    """Every chunk of the recording on both backends, within 1e-4 of ORT."""
    _check(compiled, speech, name, None)


@pytest.mark.slow
def test_silero_sequence_file_runs_like_ort(compiled, speech):
    """silero_vad_16k_sequence.onnx (input [T, 576], h, c): ``run`` over all T chunks and ``step`` chunk by
    chunk equal ONNX Runtime on the same T rows from a zero state, within 1e-4."""
    X = _chunks(speech)
    sess = ort.InferenceSession(_model_path("sequence"), providers=["CPUExecutionProvider"])
    z = np.zeros((1, 1, 128), np.float32)
    want = np.ravel(sess.run(None, {"input": X, "h": z, "c": z})[0])
    m = edgernn.load(compiled["sequence"], backend="numpy")
    assert m.input_size == 576
    assert float(np.abs(m.stream().run(X)[:, 0] - want).max()) <= 1e-4
    s = m.stream()
    assert float(np.abs(np.array([s.step(x)[0] for x in X]) - want).max()) <= 1e-4


def test_inspect_counts_the_weights_inside_if_branches(compiled):
    """silero_vad.onnx keeps its weights in If branches (8 kHz and 16 kHz): inspect counts them, so the
    file holds at least what its compiled 16 kHz plan keeps, and more than the 16 kHz-only file."""
    pytest.importorskip("onnx")
    from edgernn.commands.inspect import describe_onnx

    full = describe_onnx(_model_path("full"))["parameters"]
    only16k = describe_onnx(_model_path("op15"))["parameters"]
    plan = edgernn.load(compiled["full"]).info["parameters"]
    assert full > only16k >= plan > 100_000
