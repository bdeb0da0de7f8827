"""Ahead-of-time device mode: the engine's kernels as a native extension module (``numba.pycc``).

``build()`` (or ``edgernn aot``) compiles the three entry points of the plan interpreter in
``edgernn.kernels.engine`` (``step``, ``step_batch``, ``seq``) into one CPython extension module,
``_edgernn_aot``. A board then runs models with numpy + safetensors only: importing the module loads
neither numba nor llvmlite, and nothing is compiled at start-up.

Where the runtime looks for the module (first hit wins), see :func:`find`:

1. ``$EDGERNN_AOT_DIR/_edgernn_aot*.so`` (or ``.pyd``),
2. the installed ``edgernn`` package directory (``edgernn aot`` writes there by default).

A module records a fingerprint of the kernel sources it was built from (:func:`kernels_fingerprint`);
:func:`load_module` refuses a module built from other kernels, so a stale build is never used silently.

The module is built for the machine's architecture with LLVM's generic CPU model by default (it runs on
any x86-64, or any aarch64), or for a named CPU (``cpu="host"`` for this machine only). It uses the same
fast-math flags as the JIT kernels (``edgernn.kernels.config``).
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.machinery
import importlib.util
import os
import platform
import sys
import tempfile
import warnings
from typing import Any

import numpy as np

from .errors import EdgeRNNError, MissingDependencyError

#: Name of the extension module (its file is ``_edgernn_aot<EXT_SUFFIX>``).
MODULE = "_edgernn_aot"

#: Entry points of ``edgernn.kernels.engine`` and their exported signatures. Every array is C-contiguous:
#: x (I,), X (n|T, I), wf float32 (weights + plan records), wb int8, M float32 stream buffer,
#: MB (n, len(M)), Y (T, O), buf float32 sequence scratch. Each returns a status (0 = ok).
ENTRIES: dict[str, str] = {
    "step": "i8(f4[::1], f4[::1], i1[::1], f4[::1])",
    "step_batch": "i8(f4[:, ::1], f4[::1], i1[::1], f4[:, ::1])",
    "seq": "i8(f4[:, ::1], f4[::1], i1[::1], f4[::1], f4[:, ::1], f4[::1])",
}


def kernels_dir() -> str:
    """Directory of the installed kernel sources (``edgernn.kernels``), found without importing them."""
    spec = importlib.util.find_spec("edgernn.kernels")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeRNNError("edgernn.kernels is not installed")
    return list(spec.submodule_search_locations)[0]


def kernels_fingerprint() -> int:
    """A 60-bit hash of the kernel sources (``edgernn/kernels/*.py``, names and bytes).

    Cheap (reads ~50 kB, imports nothing): the runtime compares it with the one built into the module.
    """
    h = hashlib.sha256()
    d = kernels_dir()
    for path in sorted(glob.glob(os.path.join(d, "*.py"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return int(h.hexdigest()[:15], 16)


def package_dir() -> str:
    """Directory of the installed ``edgernn`` package (the default output of :func:`build`)."""
    return os.path.dirname(os.path.abspath(__file__))


def module_files(directory: str) -> list[str]:
    """Every ``_edgernn_aot`` extension file in ``directory`` that this Python can load."""
    out = []
    for suffix in importlib.machinery.EXTENSION_SUFFIXES:
        p = os.path.join(directory, MODULE + suffix)
        if os.path.isfile(p):
            out.append(p)
    return out


def find() -> str | None:
    """Path of the AOT module the runtime would use, or None (see the module doc for the search order)."""
    env = os.environ.get("EDGERNN_AOT_DIR")
    for d in ([env] if env else []) + [package_dir()]:
        files = module_files(d)
        if files:
            return files[0]
    return None


class Kernels:
    """The AOT module's entry points behind argument checks: ``step``, ``step_batch``, ``seq``.

    A pycc function reinterprets whatever buffer it is given (a float64 array is read as float32, a
    strided view as contiguous, a list crashes the process), where the JIT dispatcher raises
    ``TypeError``. These wrappers raise ``TypeError`` for anything but what the JIT entry accepts, so
    the runtime's convert-and-retry path works unchanged, and check the row count of batch buffers.
    """

    def __init__(self, module: Any, path: str):
        self.module = module
        self.path = path
        raw_step, raw_batch, raw_seq = module.step, module.step_batch, module.seq
        f32, i8, nd = np.dtype(np.float32), np.dtype(np.int8), np.ndarray

        def ok(a, ndim, dt=f32):
            return type(a) is nd and a.dtype == dt and a.ndim == ndim and a.flags.c_contiguous

        def bufs(wf, wb):
            if not (ok(wf, 1) and ok(wb, 1, i8)):
                raise TypeError("wf must be a C-contiguous float32 vector and wb an int8 vector")

        def step(x, wf, wb, M):
            """x (I,) float32; M (len,) float32 stream buffer. Returns the status (0 = ok)."""
            if not (ok(x, 1) and ok(M, 1) and M.flags.writeable):
                raise TypeError("x and M must be C-contiguous float32 vectors (M writable)")
            bufs(wf, wb)
            return raw_step(x, wf, wb, M)

        def step_batch(X, wf, wb, MB):
            """X (n, I) float32; MB (n, len) float32. Returns the status (0 = ok)."""
            if not (ok(X, 2) and ok(MB, 2) and MB.flags.writeable and X.shape[0] == MB.shape[0]):
                raise TypeError("X (n, I) and MB (n, len) must be C-contiguous float32 with n rows each")
            bufs(wf, wb)
            return raw_batch(X, wf, wb, MB)

        def seq(X, wf, wb, M, Y, buf):
            """X (T, I); M stream buffer; Y (T, O) output; buf scratch; all float32. Returns the status."""
            if not (
                ok(X, 2)
                and ok(M, 1)
                and ok(Y, 2)
                and ok(buf, 1)
                and Y.shape[0] == X.shape[0]
                and M.flags.writeable
                and Y.flags.writeable
                and buf.flags.writeable
            ):
                raise TypeError("seq: X, M, Y, buf must be C-contiguous float32 (Y with X's rows)")
            bufs(wf, wb)
            return raw_seq(X, wf, wb, M, Y, buf)

        self.step, self.step_batch, self.seq = step, step_batch, seq

    def __repr__(self) -> str:
        return f"<edgernn AOT kernels {self.path}>"


_LOADED: dict[str, Kernels] = {}


def load_module(path: str | None = None) -> Kernels:
    """Import the AOT module at ``path`` (default :func:`find`) and check it matches the kernels.

    Returns a :class:`Kernels` whose ``step``/``step_batch``/``seq`` take the same arguments as the JIT
    entry points of ``edgernn.kernels.engine``. Raises :class:`MissingDependencyError` when there is no
    module, :class:`EdgeRNNError` when it cannot be loaded or was built from other kernel sources.
    """
    path = path or find()
    if path is None:
        raise MissingDependencyError(
            "no AOT kernel module found (looked in $EDGERNN_AOT_DIR and the edgernn package); "
            "build one with: edgernn aot"
        )
    path = os.path.abspath(path)
    from .trust import insecure_dir

    why = insecure_dir(os.path.dirname(path))
    if why is None and os.stat(path).st_mode & 0o022:
        why = f"{path} is writable by group or others"
    if why:  # native code: loading it from a place another user controls would run their code
        raise EdgeRNNError(f"refusing the AOT module {path}: {why}")
    k = _LOADED.get(path)
    if k is not None:
        _check_fingerprint(k.module, path)
        return k
    loader = importlib.machinery.ExtensionFileLoader(MODULE, path)
    spec = importlib.util.spec_from_file_location(MODULE, path, loader=loader)
    if spec is None:  # pragma: no cover - the loader is given
        raise EdgeRNNError(f"cannot load {path}")
    try:
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
    except ImportError as e:
        raise EdgeRNNError(f"AOT module {path} cannot be loaded here: {e}") from e
    missing = [n for n in (*ENTRIES, "kernels_fingerprint") if not hasattr(mod, n)]
    if missing:
        raise EdgeRNNError(f"AOT module {path} lacks {missing}; rebuild it with: edgernn aot")
    _check_fingerprint(mod, path)
    k = _LOADED[path] = Kernels(mod, path)
    return k


def _check_fingerprint(mod: Any, path: str) -> None:
    built, now = int(mod.kernels_fingerprint()), kernels_fingerprint()
    if built != now:
        raise EdgeRNNError(
            f"AOT module {path} was built from other kernel sources (fingerprint {built:x}, the installed "
            f"kernels are {now:x}); rebuild it with: edgernn aot"
        )


@contextlib.contextmanager
def _kernel_flags():
    """Compile pycc's exported functions with the JIT kernels' flags (fast-math, numpy error model).

    ``numba.pycc`` builds its entries with default ``Flags``; the kernels' helpers are inlined into the
    entries, so without this they would lose fast-math (slower, not wrong).
    """
    import numba.pycc.compiler as pc
    from numba.core.cpu import FastMathOptions

    from .kernels import config

    base = pc.Flags

    class KernelFlags(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.fastmath = FastMathOptions(set(config.FASTMATH))
            self.error_model = "numpy"
            self.boundscheck = bool(config.BOUNDSCHECK)

    pc.Flags = KernelFlags
    try:
        yield
    finally:
        pc.Flags = base


def build(out_dir: str | None = None, cpu: str = "", verbose: bool = False) -> str:
    """Compile the kernels into ``out_dir/_edgernn_aot<EXT_SUFFIX>`` and return the file's path.

    ``out_dir`` defaults to :func:`package_dir` (where the runtime finds the module without
    configuration). ``cpu``: LLVM CPU name; ``""`` = generic for this architecture (portable),
    ``"host"`` = this machine's CPU. Needs numba, setuptools, gcc and g++; takes 15-30 s on the CI machine.
    """
    try:
        with warnings.catch_warnings():  # "pending deprecation" since numba 0.57; no replacement yet
            warnings.simplefilter("ignore")
            from numba.pycc import CC
    except ImportError as e:
        raise MissingDependencyError(
            f"building the AOT module needs numba, setuptools and a C compiler ({e}); "
            "install them with: pip install numba setuptools"
        ) from e

    from .kernels import engine

    out_dir = os.path.abspath(out_dir or package_dir())
    os.makedirs(out_dir, exist_ok=True)
    if not os.access(out_dir, os.W_OK):
        raise EdgeRNNError(
            f"{out_dir} is not writable; pass -o DIR and set EDGERNN_AOT_DIR=DIR on the device"
        )
    fp = kernels_fingerprint()
    ns: dict[str, Any] = {}
    exec(f"def kernels_fingerprint():\n    return {fp}\n", ns)  # a constant the module returns

    try:
        cc = CC(MODULE)  # checks for the C/C++ toolchain
    except RuntimeError as e:
        raise MissingDependencyError(
            f"building the AOT module needs a C and a C++ compiler and the Python headers ({e}); on "
            "Debian/Ubuntu: apt install gcc g++ python3-dev"
        ) from e
    cc.output_dir = out_dir
    cc.verbose = verbose
    if cpu:
        if cpu == "host":
            import llvmlite.binding as llvm

            cpu = llvm.get_host_cpu_name()
        cc.target_cpu = cpu
    for name, sig in ENTRIES.items():
        cc.export(name, sig)(getattr(engine, name).py_func)
    cc.export("kernels_fingerprint", "i8()")(ns["kernels_fingerprint"])
    # pycc writes the final file in place; build elsewhere and move it, so a loaded module is never
    # overwritten mid-flight and an interrupted build leaves no half-written module behind.
    with tempfile.TemporaryDirectory(prefix="edgernn-aot-", dir=out_dir) as tmp:
        cc.output_dir = tmp
        with _kernel_flags():
            cc.compile()
        built = module_files(tmp)
        if not built:  # pragma: no cover - pycc names the file with this Python's suffix
            raise EdgeRNNError(f"numba.pycc produced no {MODULE} module in {tmp}")
        final = os.path.join(out_dir, os.path.basename(built[0]))
        os.replace(built[0], final)
    return final


def describe(path: str) -> dict:
    """Facts about a built module: path, size in bytes, fingerprint, whether it matches the kernels."""
    try:
        load_module(path)
        ok, why = True, ""
    except EdgeRNNError as e:
        ok, why = False, str(e)
    return {
        "path": path,
        "bytes": os.path.getsize(path),
        "python": sys.implementation.cache_tag,
        "machine": platform.machine(),
        "matches_kernels": ok,
        "problem": why,
    }
