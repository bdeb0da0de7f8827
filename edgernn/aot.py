"""Ahead-of-time device mode: one model's generated kernels as a native extension module (``numba.pycc``).

``edgernn aot MODEL.ernn`` (see :mod:`edgernn.aot_model`) compiles the kernels generated for that model
(``kernels/codegen.py``: ``step``, ``step_batch``, ``seq``, sizes and offsets as constants) into
``_edgernn_m_<key>``, named after the generated source's key. The runtime loads it with numpy +
safetensors only (importing it loads neither numba nor llvmlite, and nothing is compiled at start-up),
and only for a model whose generated source has that key. (The generic plan-interpreter module of
earlier versions is gone with the interpreter: every model gets its own module.)

A module records a fingerprint of the kernel sources it was built from (:func:`kernels_fingerprint`),
the CPU it was built for (``aot_target``, see :mod:`edgernn.aot_target`) and the source key;
:func:`load_module` refuses a module built from other kernels, for the host CPU of another machine, or
for another model, so a stale build is never used silently and a module copied to another board never
stops with an illegal instruction.

The module is built for the CPU it runs on by default (``cpu="host"``: LLVM's name for this CPU and its
feature list, as the JIT kernels are), or for the architecture's generic CPU (``cpu="generic"``: runs on
any x86-64, or any aarch64, slower), or for a CPU named explicitly (not checked at load). It uses the
same fast-math flags as the JIT kernels (``edgernn.kernels.config``), and its entry points release the
GIL while they run, as the JIT kernels (``nogil=True``) do.
"""

from __future__ import annotations

import contextlib
import glob
import hashlib
import importlib.machinery
import importlib.util
import json
import os
import platform
import sys
import tempfile
import warnings
import weakref
from types import ModuleType
from typing import Any

import numpy as np

from . import aot_target
from .errors import EdgeRNNError, MissingDependencyError

#: Entry points of a model's generated kernels and their exported signatures. Every array is C-contiguous:
#: x (I,), X (n|T, I), wf float32 (weights + plan records), wb int8, M float32 stream buffer,
#: MB (n, len(M)), Y (T, O), buf float32 sequence scratch. Each returns a status (0 = ok).
ENTRIES: dict[str, str] = {
    "step": "i8(f4[::1], f4[::1], i1[::1], f4[::1])",
    "step_batch": "i8(f4[:, ::1], f4[::1], i1[::1], f4[:, ::1])",
    "seq": "i8(f4[:, ::1], f4[::1], i1[::1], f4[::1], f4[:, ::1], f4[::1])",
}
#: Functions every module exports besides its entry points: what it was built from and for.
META = ("kernels_fingerprint", "aot_target")
#: The record a module exports besides :data:`META`: the key of the generated source.
KEY_RECORD = "source_key"


def kernels_dir() -> str:
    """Directory of the installed kernel sources (``edgernn.kernels``), found without importing them."""
    spec = importlib.util.find_spec("edgernn.kernels")
    if spec is None or not spec.submodule_search_locations:
        raise EdgeRNNError("edgernn.kernels is not installed")
    return list(spec.submodule_search_locations)[0]


#: Version of what a module holds besides the kernels (its records, its wrappers' contract). Part of the
#: fingerprint, so a module built by an older ``edgernn aot`` is refused (and rebuilt into a new
#: directory by tools that name directories after the fingerprint) even when the kernels did not change.
#: 2: the target CPU record (``aot_target``) and entry points that release the GIL.
#: 3: per-model modules (the ``source_key`` record).
#: 4: per-model modules only (no generic interpreter module).
FORMAT = 4


def kernels_fingerprint() -> int:
    """A 60-bit hash of the kernel sources (``edgernn/kernels/*.py``, names and bytes) and :data:`FORMAT`.

    Cheap (reads ~50 kB, imports nothing): the runtime compares it with the one built into the module.
    """
    h = hashlib.sha256(b"edgernn-aot-format-%d\0" % FORMAT)
    d = kernels_dir()
    for path in sorted(glob.glob(os.path.join(d, "*.py"))):
        h.update(os.path.basename(path).encode())
        with open(path, "rb") as f:
            h.update(f.read())
    return int(h.hexdigest()[:15], 16)


def package_dir() -> str:
    """Directory of the installed ``edgernn`` package (the default output of :func:`build`)."""
    return os.path.dirname(os.path.abspath(__file__))


class Kernels:
    """The AOT module's entry points behind argument checks: ``step``, ``step_batch``, ``seq``.

    A pycc function reinterprets whatever buffer it is given (a float64 array is read as float32, a
    strided view as contiguous, a list crashes the process), where the JIT dispatcher raises
    ``TypeError``. These wrappers raise ``TypeError`` for anything but what the JIT entry accepts, so
    the runtime's convert-and-retry path works unchanged, and check the row count of batch buffers.

    The checks cost about as much as the JIT dispatcher's own: the input is checked at every call, the
    weight and state buffers only when they are not the ones of the previous call (a stream's loop
    passes the same arrays each step; they are remembered by weak reference, never kept alive).
    """

    def __init__(self, module: Any, path: str, target: dict):
        self.module = module
        self.path = path
        self.target = target  # what aot_target.record() wrote at build time
        self.key: str | None = None  # the source key of the model whose kernels the module holds
        raw_step, raw_batch, raw_seq = module.step, module.step_batch, module.seq
        f32, i8, nd, ref = np.dtype(np.float32), np.dtype(np.int8), np.ndarray, weakref.ref

        def ok(a, ndim, dt=f32):
            return type(a) is nd and a.dtype == dt and a.ndim == ndim and a.flags.c_contiguous

        def bufs(wf, wb):
            if not (ok(wf, 1) and ok(wb, 1, i8)):
                raise TypeError("wf must be a C-contiguous float32 vector and wb an int8 vector")

        last_step: list = [None]  # weak references to the (wf, wb, M) of the last checked step call
        last_batch: list = [None]  # ... (wf, wb, MB) of step_batch

        def step(x, wf, wb, M):
            """x (I,) float32; M (len,) float32 stream buffer. Returns the status (0 = ok)."""
            if not (type(x) is nd and x.dtype is f32 and x.ndim == 1 and x.flags.c_contiguous):
                if not ok(x, 1):
                    raise TypeError("x must be a C-contiguous float32 vector")
            t = last_step[0]
            if t is None or t[0]() is not wf or t[1]() is not wb or t[2]() is not M:
                if not (ok(M, 1) and M.flags.writeable):
                    raise TypeError("M must be a writable C-contiguous float32 vector")
                bufs(wf, wb)
                last_step[0] = (ref(wf), ref(wb), ref(M))
            return raw_step(x, wf, wb, M)

        def step_batch(X, wf, wb, MB):
            """X (n, I) float32; MB (n, len) float32. Returns the status (0 = ok)."""
            if not ok(X, 2):
                raise TypeError("X must be a C-contiguous float32 (n, I) array")
            t = last_batch[0]
            if t is None or t[0]() is not wf or t[1]() is not wb or t[2]() is not MB:
                if not (ok(MB, 2) and MB.flags.writeable):
                    raise TypeError("MB must be a writable C-contiguous float32 (n, len) array")
                bufs(wf, wb)
                last_batch[0] = (ref(wf), ref(wb), ref(MB))
            if X.shape[0] != MB.shape[0]:
                raise TypeError("X (n, I) and MB (n, len) must have n rows each")
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
        return f"<edgernn AOT kernels {self.path} for {aot_target.describe(self.target)}>"


_LOADED: dict[str, Kernels] = {}


def load_module(path: str, key: str) -> Kernels:
    """Import the AOT module at ``path`` and check it holds the kernels of the model with source ``key``.

    Returns a :class:`Kernels` whose ``step``/``step_batch``/``seq`` take the same arguments as the
    model's generated JIT entry points (``kernels/codegen.py``). Raises :class:`EdgeRNNError` when it
    cannot be loaded, was built from other kernel sources, for another model, or for the host CPU of
    another machine (:func:`edgernn.aot_target.refusal`).
    """
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
        _check_key(k.key, key, path)
        _check_target(k.target, path)
        return k
    name = os.path.basename(path).split(".")[0]  # PyInit_<name>: the name build() was given
    loader = importlib.machinery.ExtensionFileLoader(name, path)
    spec = importlib.util.spec_from_file_location(name, path, loader=loader)
    if spec is None:  # pragma: no cover - the loader is given
        raise EdgeRNNError(f"cannot load {path}")
    try:
        mod = importlib.util.module_from_spec(spec)
        loader.exec_module(mod)
    except ImportError as e:
        raise EdgeRNNError(f"AOT module {path} cannot be loaded here: {e}") from e
    missing = [n for n in (*ENTRIES, *META, KEY_RECORD) if not hasattr(mod, n)]
    if missing:
        raise EdgeRNNError(f"AOT module {path} lacks {missing}; rebuild it with: edgernn aot MODEL.ernn")
    _check_fingerprint(mod, path)
    built_key = read_record(mod, KEY_RECORD).decode()
    _check_key(built_key, key, path)
    target = json.loads(read_record(mod, "aot_target").decode())
    _check_target(target, path)
    k = _LOADED[path] = Kernels(mod, path, target)
    k.key = built_key
    return k


def read_record(mod: Any, name: str) -> bytes:
    """The bytes of a record function ``name`` built into a module (``aot_target``: the target CPU record
    of :func:`edgernn.aot_target.record` as JSON; ``source_key``: a per-model module's source key)."""
    buf = np.zeros(1 << 14, np.uint8)
    n = int(getattr(mod, name)(buf))
    if not 0 < n <= buf.size:
        raise EdgeRNNError(f"AOT module {mod.__file__} has a malformed {name} record; rebuild it")
    return buf[:n].tobytes()


def read_target(mod: Any) -> dict:
    """The target record built into a module (see :func:`edgernn.aot_target.record`)."""
    return json.loads(read_record(mod, "aot_target").decode())


def _check_key(built: str | None, want: str, path: str) -> None:
    if built != want:
        raise EdgeRNNError(
            f"AOT module {path} holds source key {built}, not the model with source key {want}; "
            "rebuild it: edgernn aot MODEL.ernn"
        )


def _check_target(target: dict, path: str) -> None:
    why = aot_target.refusal(target)
    if why:
        raise EdgeRNNError(f"refusing the AOT module {path}: {why}")


def _check_fingerprint(mod: Any, path: str) -> None:
    built, now = int(mod.kernels_fingerprint()), kernels_fingerprint()
    if built != now:
        raise EdgeRNNError(
            f"AOT module {path} was built from other kernel sources (fingerprint {built:x}, the installed "
            f"kernels are {now:x}); rebuild it with: edgernn aot MODEL.ernn"
        )


@contextlib.contextmanager
def _kernel_flags(features: str = ""):
    """Compile pycc's exported functions with the JIT kernels' flags (fast-math, numpy error model,
    GIL released), and give LLVM the target's feature list.

    ``numba.pycc`` builds its entries with default ``Flags``; the kernels' helpers are inlined into the
    entries, so without this they would lose fast-math (slower, not wrong). ``release_gil`` makes the
    CPython wrapper of each export drop the GIL around the native call, as ``nogil=True`` does for the
    JIT (the kernels touch no Python object). pycc's AOT codegen passes LLVM only a CPU name and an empty
    feature string, so a CPU model's nominal features would be assumed (on a VM, AVX-512 or AMX the
    hypervisor hides) and none of the host's actual list: ``features`` replaces that empty string.
    """
    import numba.pycc.compiler as pc
    from numba.core import codegen
    from numba.core.cpu import FastMathOptions

    from .kernels import config

    base = pc.Flags

    class KernelFlags(base):  # type: ignore[misc, valid-type]
        def __init__(self, *a, **kw):
            super().__init__(*a, **kw)
            self.fastmath = FastMathOptions(set(config.FASTMATH))
            self.error_model = "numpy"
            self.boundscheck = bool(config.BOUNDSCHECK)
            self.release_gil = True

    aot_cg = codegen.AOTCPUCodegen
    base_features = aot_cg.__dict__["_customize_tm_features"]
    pc.Flags = KernelFlags
    aot_cg._customize_tm_features = lambda self: features  # type: ignore[method-assign]
    try:
        yield
    finally:
        pc.Flags = base
        aot_cg._customize_tm_features = base_features  # type: ignore[method-assign]


def resolve_cpu(cpu: str) -> tuple[str, str, str]:
    """``(target, llvm_cpu, llvm_features)`` for a ``--cpu`` value: ``"host"`` (this CPU's LLVM name and
    feature list, as the JIT uses), ``"generic"`` (or ``""``: the architecture's baseline), or an LLVM
    CPU name (its nominal features)."""
    if cpu in ("", "generic"):
        return "generic", "", ""
    if cpu != "host":
        return "named", cpu, ""
    import llvmlite.binding as llvm

    try:
        features = llvm.get_host_cpu_features().flatten()
    except RuntimeError:  # LLVM cannot read them here (e.g. under emulation): the CPU name's own
        features = ""
    return "host", llvm.get_host_cpu_name(), features


def build(
    out_dir: str,
    source: str | ModuleType,
    name: str,
    cpu: str = "host",
    verbose: bool = False,
    *,
    entries: dict[str, str] | None = None,
    fingerprint: int | None = None,
    records: dict[str, bytes] | None = None,
) -> str:
    """Compile the functions of ``source`` into ``out_dir/<name><EXT_SUFFIX>`` and return the file's path.

    ``cpu``: ``"host"`` = this machine's CPU and its features (default; refused at load
    on another CPU), ``"generic"`` = the architecture's baseline (portable), or an LLVM CPU name.
    ``entries``: exported name -> numba signature (default :data:`ENTRIES`), each a function of the
    module ``source`` (a module or its import name; ``@njit`` dispatchers or plain functions);
    ``fingerprint``: the 60-bit integer the module reports as ``kernels_fingerprint`` (default
    :func:`kernels_fingerprint`); ``records``: more exported name -> bytes records, read back with
    :func:`read_record` (the model's ``source_key``). Needs numba, setuptools, gcc and g++; a few seconds
    per model here.
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

    src = importlib.import_module(source) if isinstance(source, str) else source
    entries = dict(ENTRIES if entries is None else entries)
    records = dict(records or {})
    clash = sorted((set(entries) | set(records)) & set(META) | set(entries) & set(records))
    if clash:
        raise EdgeRNNError(f"entry names {clash} are reserved for the module's own records")
    out_dir = os.path.abspath(out_dir)
    try:
        os.makedirs(out_dir, exist_ok=True)
    except OSError as e:
        raise EdgeRNNError(
            f"cannot create {out_dir}: {e.strerror or e}; pass -o DIR (a writable directory)"
        ) from None
    if not os.access(out_dir, os.W_OK):
        raise EdgeRNNError(
            f"{out_dir} is not writable; pass -o DIR and set EDGERNN_AOT_DIR=DIR on the device"
        )
    target, llvm_cpu, features = resolve_cpu(cpu)
    fp = kernels_fingerprint() if fingerprint is None else int(fingerprint)
    records["aot_target"] = json.dumps(aot_target.record(target, llvm_cpu, features)).encode()
    ns: dict[str, Any] = {}
    exec(f"def kernels_fingerprint():\n    return {fp}\n", ns)  # constants the module returns
    for rec_name, data in records.items():
        if not rec_name.isidentifier():
            raise EdgeRNNError(f"record name {rec_name!r} is not an identifier")
        ns[f"_R_{rec_name}"] = np.frombuffer(data, np.uint8).copy()  # a global array: a constant
        exec(
            f"def {rec_name}(out):\n"
            f"    n = _R_{rec_name}.size\n"
            "    if out.size < n:\n"
            "        return -n\n"
            "    for i in range(n):\n"
            f"        out[i] = _R_{rec_name}[i]\n"
            "    return n\n",
            ns,
        )

    try:
        cc = CC(name)  # checks for the C/C++ toolchain
    except RuntimeError as e:
        raise MissingDependencyError(
            f"building the AOT module needs a C and a C++ compiler and the Python headers ({e}); on "
            "Debian/Ubuntu: apt install gcc g++ python3-dev"
        ) from e
    cc.verbose = verbose
    cc.target_cpu = llvm_cpu
    for entry, sig in entries.items():
        fn = getattr(src, entry)
        cc.export(entry, sig)(getattr(fn, "py_func", fn))
    cc.export("kernels_fingerprint", "i8()")(ns["kernels_fingerprint"])
    for rec_name in records:
        cc.export(rec_name, "i8(u1[::1])")(ns[rec_name])
    # pycc writes the final file in place; build elsewhere and move it, so a loaded module is never
    # overwritten mid-flight and an interrupted build leaves no half-written module behind.
    with tempfile.TemporaryDirectory(prefix="edgernn-aot-", dir=out_dir) as tmp:
        cc.output_dir = tmp
        with _kernel_flags(features):
            cc.compile()
        built = [
            os.path.join(tmp, name + sfx)
            for sfx in importlib.machinery.EXTENSION_SUFFIXES
            if os.path.isfile(os.path.join(tmp, name + sfx))
        ]
        if not built:  # pragma: no cover - pycc names the file with this Python's suffix
            raise EdgeRNNError(f"numba.pycc produced no {name} module in {tmp}")
        final = os.path.join(out_dir, os.path.basename(built[0]))
        os.replace(built[0], final)
    return final


def describe(path: str) -> dict:
    """Facts about a built module (``_edgernn_m_<key>*``): path, size in bytes, target CPU, source key
    (``key``), whether it matches the kernels and this CPU (``matches_kernels``; ``problem`` says why not)."""
    name = os.path.basename(path).split(".")[0]
    key = name[len("_edgernn_m_") :]
    try:
        if not name.startswith("_edgernn_m_"):
            raise EdgeRNNError(f"{path} is not an edgernn model module (_edgernn_m_<key>)")
        target = load_module(path, key=key).target
        ok, why = True, ""
    except EdgeRNNError as e:
        ok, why, target = False, str(e), {}
    return {
        "cpu": aot_target.describe(target) if target else "?",
        "target": target,
        "path": path,
        "bytes": os.path.getsize(path),
        "python": sys.implementation.cache_tag,
        "machine": platform.machine(),
        "key": key,
        "matches_kernels": ok,
        "problem": why,
    }
