"""The plain C++ loop baseline (``floor.cpp``, package data beside this module): the hardware's own
reference, compiled at benchmark time with the system compiler (``$CXX``, else ``g++``, else ``clang++``;
``-O3 -march=native -ffast-math``) into a private cache directory (the kernel cache's ``cppfloor/``,
mode 0700; else a fresh private temporary directory), never into the package, and called through ctypes,
one call per run of T steps (so a run times no per-step call overhead).

:meth:`CppFloor.for_model` builds the loop of a chain plan that ``floor.cpp`` covers (:func:`covers`):
LSTM and GRU (``linear_before_reset = 1``) 8 -> 64 and 8 -> 256, dense-reservoir ESN 8 -> 500, each followed
by a Dense head, from float32 (or fp16, widened) weights; :func:`compiler_problem` says why there is no
compiled library here (no compiler, or the compile failed), and the benchmarks skip with that note.
numpy + ctypes only.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile
from importlib import resources

import numpy as np

FLAGS = ["-O3", "-march=native", "-ffast-math", "-fPIC"]
#: linked in a second step without ``-ffast-math``: with it the driver links ``crtfastmath.o``, whose
#: constructor turns on flush-to-zero/denormals-are-zero for the whole process that loads the library
LINK = ["-shared", "-fPIC"]
#: (kind, input size, hidden/reservoir size) of the instances floor.cpp compiles
SIZES = {("lstm", 8, 64), ("lstm", 8, 256), ("gru", 8, 64), ("gru", 8, 256), ("esn", 8, 500)}
_LIB: list = []  # [CDLL] or [str problem], once per process

_P = ctypes.POINTER(ctypes.c_float)


class Unsupported(Exception):
    """The model has no C++ loop here (another kind or size, int8 weights, no compiler)."""


def source() -> bytes:
    """The text of ``floor.cpp`` (package data)."""
    return resources.files(__package__).joinpath("floor.cpp").read_bytes()


def _build_dir() -> str:
    from ..kernels import config

    d = os.path.join(config.cache_dir(), "cppfloor")
    if config.cache_problem(d) is None:
        return d
    return tempfile.mkdtemp(prefix="edgernn-cppfloor-")  # private (0700), this process only


def _lib():
    if _LIB:
        return _LIB[0]
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        _LIB.append("no C++ compiler (g++, clang++ or $CXX) on this machine")
        return _LIB[0]
    text = source()
    key = hashlib.sha256(text + " ".join([cxx, *FLAGS, "link", *LINK]).encode()).hexdigest()[:16]
    d = _build_dir()
    out = os.path.join(d, f"floor-{key}.so")
    if not os.path.exists(out):
        src = os.path.join(d, f"floor-{key}.{os.getpid()}.cpp")
        obj, tmp = f"{src}.o", f"{out}.{os.getpid()}"
        with open(src, "wb") as f:
            f.write(text)
        try:
            r = subprocess.run([cxx, *FLAGS, "-c", src, "-o", obj], capture_output=True, text=True)
            if not r.returncode:
                r = subprocess.run([cxx, *LINK, obj, "-o", tmp], capture_output=True, text=True)
        except OSError as e:
            r = subprocess.CompletedProcess([], 1, "", str(e))
        finally:
            for f in (src, obj):
                if os.path.exists(f):
                    os.unlink(f)
        if r.returncode:
            line = (r.stderr.strip().splitlines() or ["failed"])[0][:200]
            _LIB.append(f"{os.path.basename(cxx)} could not compile floor.cpp: {line}")
            return _LIB[0]
        os.replace(tmp, out)
    _LIB.append(ctypes.CDLL(out))
    return _LIB[0]


def compiler_problem() -> str | None:
    """Why the C++ baseline is not available here (one line), or None when it is (compiles it once)."""
    lib = _lib()
    return lib if isinstance(lib, str) else None


def covers(plan: dict) -> str | None:
    """None when ``floor.cpp`` has a loop for the chain ``plan`` (either format version), else why not (one
    line)."""
    from ..artifact import chain_layers
    from ..errors import ArtifactError

    try:
        layers = chain_layers(plan)
    except ArtifactError:
        layers = []
    if plan.get("quantization", "none") == "int8":
        return "the C++ loop runs float32 weights; this artifact is int8"
    if len(layers) != 2 or layers[1]["kind"] != "dense" or layers[1].get("activation") != "linear":
        return "the C++ loop is one recurrent layer followed by a linear Dense head"
    rec = layers[0]
    kind, i = rec["kind"], rec["input_size"]
    size = rec.get("reservoir_size") if kind == "esn" else rec.get("hidden_size")
    if kind == "esn" and rec.get("sparse"):
        return "the C++ ESN loop is a dense reservoir"
    if kind == "gru" and rec.get("linear_before_reset", 0) != 1:
        return "the C++ GRU loop is linear_before_reset = 1"
    if kind in ("lstm", "gru") and (rec.get("direction", "forward") != "forward" or rec.get("clip")):
        return f"the C++ {kind} loop is forward, unclipped"
    if kind == "esn" and rec.get("readout_input", "state") != "state":
        return "the C++ ESN loop reads out the state"
    if (kind, i, size) not in SIZES:
        have = ", ".join(f"{k} {a}->{b}" for k, a, b in sorted(SIZES))
        return f"floor.cpp has no {kind} {i}->{size} (it has {have})"
    return None


def _p(a: np.ndarray):
    return a.ctypes.data_as(_P)


def _c(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class CppFloor:
    """One benchmark model as a plain C++ loop: ``run(X)`` (T, I) float32 -> Y (T, O), state carried over."""

    def __init__(self, kind: str, args: dict, I: int, H: int, O: int):  # noqa: E741
        self.kind, self.a, self.I, self.H, self.O = kind, args, I, H, O
        self.lib = _lib()
        if isinstance(self.lib, str):
            raise Unsupported(self.lib)
        self.reset()

    @classmethod
    def for_model(cls, plan: dict, tensors: dict) -> CppFloor:
        """The loop of a (recurrent or ESN layer, Dense head) chain plan; ``tensors`` float32 or fp16."""
        why = covers(plan)
        if why:
            raise Unsupported(why)
        from ..artifact import chain_layers

        rec, head = chain_layers(plan)
        t = {k: tensors[v] for k, v in rec["tensors"].items()}
        D = _c(tensors[head["tensors"]["W"]])
        db = _c(tensors[head["tensors"]["b"]]) if "b" in head["tensors"] else np.zeros(len(D), np.float32)
        kind, I = rec["kind"], rec["input_size"]  # noqa: E741
        if kind in ("lstm", "gru"):
            H = rec["hidden_size"]
            W, R = _c(t["W"][0]), _c(t["R"][0])
            g = W.shape[0]
            B = _c(t["B"][0]) if "B" in t else np.zeros(2 * g, np.float32)
            WR = _c(np.concatenate([W, R], axis=1))
            if kind == "lstm":
                args = {"WR": WR, "B": _c(B[:g] + B[g:])}
            else:
                args = {"WR": WR, "Bw": _c(B[:g]), "Br": _c(B[g:])}
        else:
            H = rec["reservoir_size"]
            args = {
                "Win": _c(t["W_in"]),
                "W": _c(t["W"]),
                "b": _c(t["b"]) if "b" in t else np.zeros(H, np.float32),
                "a": float(rec["leak_rate"]),
            }
        args.update(D=D, db=db)
        return cls(kind, args, I, H, D.shape[0])

    def reset(self) -> None:
        """Zero state (the buffers stay: the argument lists made here point into them)."""
        if not hasattr(self, "h"):
            self.h = np.zeros(self.H, np.float32)
            self.c = np.zeros(self.H, np.float32)
            self.scratch = np.zeros(6 * self.H + self.I + self.H, np.float32)
            self._x1 = np.zeros((1, self.I), np.float32)
            self._y1 = np.zeros((1, self.O), np.float32)
            a = self.a
            if self.kind == "lstm":
                self._fn, w = self.lib.lstm_run, [_p(a["WR"]), _p(a["B"]), _p(a["D"]), _p(a["db"])]
                tail = [_p(self.c), _p(self.scratch)]
            elif self.kind == "gru":
                self._fn = self.lib.gru_run
                w = [_p(a["WR"]), _p(a["Bw"]), _p(a["Br"]), _p(a["D"]), _p(a["db"])]
                tail = [_p(self.scratch)]
            else:
                self._fn = self.lib.esn_run
                w = [_p(a["Win"]), _p(a["W"]), _p(a["b"]), ctypes.c_float(a["a"]), _p(a["D"]), _p(a["db"])]
                tail = [_p(self.scratch)]
            i = ctypes.c_int
            self._head, self._tail = (*w, i(self.I), i(self.H), i(self.O)), (_p(self.h), *tail)
            self._one = (*self._head, _p(self._x1), i(1), _p(self._y1), *self._tail)
        self.h[:] = 0
        self.c[:] = 0
        self.scratch[:] = 0

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step, one ctypes call on preallocated buffers: x (I,) float32 -> y (O,), a new array."""
        self._x1[0] = x
        if self._fn(*self._one):
            raise Unsupported(f"floor.cpp has no {self.kind} instance of size {self.I} -> {self.H}")
        return self._y1[0].copy()

    def run(self, X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
        """Step through X (T, I) float32 C-contiguous; returns Y (T, O)."""
        X = np.ascontiguousarray(X, np.float32)
        T = X.shape[0]
        if Y is None:
            Y = np.empty((T, self.O), np.float32)
        if self._fn(*self._head, _p(X), ctypes.c_int(T), _p(Y), *self._tail):
            raise Unsupported(f"floor.cpp has no {self.kind} instance of size {self.I} -> {self.H}")
        return Y
