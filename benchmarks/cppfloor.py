"""The plain C++ loop baseline (``benchmarks/cpp/floor.cpp``): compiled at benchmark time with the system
compiler, called through ctypes, one call per run of T steps (so no per-step call overhead is timed).

``CppFloor.for_model(plan, tensors)`` builds the loop for a benchmark model (LSTM, GRU with
``linear_before_reset = 1``, dense-reservoir ESN; each followed by a Dense head) from float32 tensors;
``compiler_problem()`` says why there is none (no ``g++``/``$CXX``, or the compile failed), and the
benchmarks skip with that note.
"""

from __future__ import annotations

import ctypes
import hashlib
import os
import shutil
import subprocess
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
SOURCE = os.path.join(HERE, "cpp", "floor.cpp")
FLAGS = ["-O3", "-march=native", "-ffast-math", "-shared", "-fPIC"]
_LIB: list = []  # [CDLL] or [str problem], once per process

_P = ctypes.POINTER(ctypes.c_float)


def _lib():
    if _LIB:
        return _LIB[0]
    cxx = os.environ.get("CXX") or shutil.which("g++") or shutil.which("clang++")
    if not cxx:
        _LIB.append("no C++ compiler (g++, clang++ or $CXX) on this machine")
        return _LIB[0]
    with open(SOURCE, "rb") as f:
        key = hashlib.sha256(f.read() + " ".join([cxx, *FLAGS]).encode()).hexdigest()[:16]
    out = os.path.join(tempfile.gettempdir(), f"edgernn-cppfloor-{os.getuid()}-{key}.so")
    if not os.path.exists(out):
        tmp = f"{out}.{os.getpid()}"
        r = subprocess.run([cxx, *FLAGS, SOURCE, "-o", tmp], capture_output=True, text=True)
        if r.returncode:
            _LIB.append(f"{cxx} failed: {r.stderr.strip()[:300]}")
            return _LIB[0]
        os.replace(tmp, out)
    _LIB.append(ctypes.CDLL(out))
    return _LIB[0]


def compiler_problem() -> str | None:
    """Why the C++ baseline is not available here, or None when it is."""
    lib = _lib()
    return lib if isinstance(lib, str) else None


def _p(a: np.ndarray):
    return a.ctypes.data_as(_P)


def _c(a) -> np.ndarray:
    return np.ascontiguousarray(a, dtype=np.float32)


class Unsupported(Exception):
    """The model has no C++ loop here (a sparse reservoir, an unknown layer)."""


class CppFloor:
    """One benchmark model as a plain C++ loop: ``run(X)`` (T, I) float32 → Y (T, O), state carried over."""

    def __init__(self, kind: str, args: dict, I: int, H: int, O: int):  # noqa: E741
        self.kind, self.a, self.I, self.H, self.O = kind, args, I, H, O
        self.lib = _lib()
        if isinstance(self.lib, str):
            raise Unsupported(self.lib)
        self.reset()

    @classmethod
    def for_model(cls, plan: dict, tensors: dict) -> CppFloor:
        """The loop of a (recurrent or ESN layer, Dense head) benchmark plan with float32 ``tensors``."""
        rec, head = plan["layers"]
        t = {k: tensors[v] for k, v in rec["tensors"].items()}
        D = _c(tensors[head["tensors"]["W"]])
        db = _c(tensors[head["tensors"]["b"]])
        kind, I = rec["kind"], rec["input_size"]  # noqa: E741
        if kind in ("lstm", "gru"):
            H = rec["hidden_size"]
            W, R, B = t["W"][0], t["R"][0], t["B"][0]
            WR = _c(np.concatenate([W, R], axis=1))
            g = W.shape[0]
            if kind == "lstm":
                args = {"WR": WR, "B": _c(B[:g] + B[g:])}
            else:
                if rec.get("linear_before_reset", 0) != 1:
                    raise Unsupported("the C++ GRU loop is linear_before_reset = 1")
                args = {"WR": WR, "Bw": _c(B[:g]), "Br": _c(B[g:])}
        elif kind == "esn" and not rec.get("sparse"):
            H = rec["reservoir_size"]
            args = {
                "Win": _c(t["W_in"]),
                "W": _c(t["W"]),
                "b": _c(t["b"]) if "b" in t else np.zeros(H, np.float32),
                "a": float(rec["leak_rate"]),
            }
        else:
            raise Unsupported(f"no C++ loop for {kind}{' (sparse)' if rec.get('sparse') else ''}")
        args.update(D=D, db=db)
        return cls(kind, args, I, H, D.shape[0])

    def reset(self) -> None:
        """Zero state."""
        self.h = np.zeros(self.H, np.float32)
        self.c = np.zeros(self.H, np.float32)
        self.scratch = np.zeros(6 * self.H + self.I + self.H, np.float32)

    def run(self, X: np.ndarray, Y: np.ndarray | None = None) -> np.ndarray:
        """Step through X (T, I) float32 C-contiguous; returns Y (T, O)."""
        T = X.shape[0]
        if Y is None:
            Y = np.empty((T, self.O), np.float32)
        a, L, i, H, O = self.a, self.lib, ctypes.c_int, self.H, self.O
        if self.kind == "lstm":
            rc = L.lstm_run(
                _p(a["WR"]),
                _p(a["B"]),
                _p(a["D"]),
                _p(a["db"]),
                i(self.I),
                i(H),
                i(O),
                _p(X),
                i(T),
                _p(Y),
                _p(self.h),
                _p(self.c),
                _p(self.scratch),
            )
        elif self.kind == "gru":
            rc = L.gru_run(
                _p(a["WR"]),
                _p(a["Bw"]),
                _p(a["Br"]),
                _p(a["D"]),
                _p(a["db"]),
                i(self.I),
                i(H),
                i(O),
                _p(X),
                i(T),
                _p(Y),
                _p(self.h),
                _p(self.scratch),
            )
        else:
            rc = L.esn_run(
                _p(a["Win"]),
                _p(a["W"]),
                _p(a["b"]),
                ctypes.c_float(a["a"]),
                _p(a["D"]),
                _p(a["db"]),
                i(self.I),
                i(H),
                i(O),
                _p(X),
                i(T),
                _p(Y),
                _p(self.h),
                _p(self.scratch),
            )
        if rc:
            raise Unsupported(f"floor.cpp has no {self.kind} instance of size {self.I} -> {self.H}")
        return Y
