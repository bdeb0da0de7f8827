"""Compiling a generated model module, and its on-disk cache: ``kernels.codegen`` writes the source,
this module turns it into compiled entry points (:class:`Kernels`), one module per source per process.

With the kernel cache on, the source is written to ``<cache>/models/m_<hash>.py`` (private directory, see
``kernels/config.py``) and imported from there, so numba caches its machine code beside it; with the
cache off it is executed in memory.
"""

from __future__ import annotations

import hashlib
import importlib.util
import os
import sys
import threading
from types import ModuleType

import numpy as np

from . import config

#: bump when the shape of the generated code changes in a way its text would not show
GENERATOR_VERSION = 2

_MODULES: dict[str, ModuleType | dict] = {}
_LOCK = threading.RLock()


def source_key(src: str) -> str:
    """The cache key of a generated source: its hash with the generator version."""
    return hashlib.sha256(f"{GENERATOR_VERSION}\0{src}".encode()).hexdigest()[:24]


def _write_atomic(path: str, text: str) -> None:
    tmp = f"{path}.tmp{os.getpid()}.{threading.get_ident()}"
    fd = os.open(tmp, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as f:
            f.write(text)
        os.replace(tmp, path)
    finally:
        if os.path.exists(tmp):
            os.unlink(tmp)


def _module(src: str):
    """The generated module of ``src``: imported from the cache directory (numba caches its code there
    too), or executed in memory when the kernel cache is off. One per source per process."""
    key = source_key(src)
    with _LOCK:
        mod = _MODULES.get(key)
        if mod is not None:
            return mod
        name = f"_edgernn_model_{key}"
        if config.CACHE:
            d = os.path.join(config.CACHE_DIR, "models")
            os.makedirs(d, mode=0o700, exist_ok=True)
            path = os.path.join(d, f"m_{key}.py")
            try:
                with open(path, encoding="utf-8") as f:
                    same = f.read() == src
            except OSError:
                same = False
            if not same:
                _write_atomic(path, src)
            spec = importlib.util.spec_from_file_location(name, path)
            mod = importlib.util.module_from_spec(spec)
            sys.modules[name] = mod
            spec.loader.exec_module(mod)
        else:
            mod = ModuleType(name)
            exec(compile(src, f"<edgernn generated {key}>", "exec"), mod.__dict__)
        _MODULES[key] = mod
        return mod


class Kernels:
    """The compiled entry points of one generated model: ``step`` (compiled now) and ``seq`` (compiled on
    its first call). Both accept exactly C-contiguous float32/int8 arrays; other types raise TypeError."""

    def __init__(self, src: str):
        from numba import types as nt

        self.source = src
        self.key = source_key(src)
        mod = _module(src)
        f32v = nt.Array(nt.float32, 1, "C")
        f32m = nt.Array(nt.float32, 2, "C")
        i8v = nt.Array(nt.int8, 1, "C")
        self._seq_sig = (f32m, f32v, i8v, f32v, f32m, f32v)
        self._batch_sig = (f32m, f32v, i8v, f32m)
        self._batch = None
        self._mod = mod
        with _LOCK:
            if not mod.step.signatures:
                mod.step.compile((f32v, f32v, i8v, f32v))
            mod.step.disable_compile()
        self.step = mod.step
        self._seq = None

    def _lazy(self, name: str, sig: tuple):
        with _LOCK:
            fn = getattr(self._mod, name)
            if not fn.signatures:
                fn.compile(sig)
            fn.disable_compile()
            return fn

    def seq(self, X, wf, wb, M, Y, buf):
        """The generated ``seq`` (compiled, or loaded from the cache, on the first call)."""
        fn = self._seq
        if fn is None:
            fn = self._seq = self._lazy("seq", self._seq_sig)
        return fn(X, wf, wb, M, Y, buf)

    def step_batch(self, X, wf, wb, MB):
        """The generated ``step_batch`` (compiled, or loaded from the cache, on the first call)."""
        fn = self._batch
        if fn is None:
            fn = self._batch = self._lazy("step_batch", self._batch_sig)
        return fn(X, wf, wb, MB)


def kernels(
    wf: np.ndarray,
    dynamic_int8: bool = False,
    rowsums: dict | None = None,
    panels: dict | None = None,
    qpanels: dict | None = None,
    batch=None,
) -> Kernels:
    """Generate, compile (or load from the cache) the kernels of the packed model ``wf`` (``dynamic_int8``,
    ``rowsums``, ``panels``, ``qpanels``, ``batch``: see :func:`~.codegen.source`)."""
    from .codegen import source

    return Kernels(source(wf, dynamic_int8, rowsums=rowsums, panels=panels, qpanels=qpanels, batch=batch))
