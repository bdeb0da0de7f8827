"""One place for the numba flags of every kernel, and the kernel cache directory.

* ``FASTMATH``: reassociation and contraction (so reductions vectorize and FMAs are used), but *not*
  ``nnan``/``ninf``: the activations must propagate NaN and handle ±Inf as the tests require.
* ``CACHE``: on-disk caching of compiled kernels, on only when a private writable cache directory exists.
  The directory is a per-kernel-version subdirectory (see :func:`cache_dir`) of ``$EDGERNN_CACHE_DIR``,
  else ``$NUMBA_CACHE_DIR``, else ``~/.cache/edgernn``.
  A directory writable by group or others, owned by another user, or below a directory another user
  could rename it in, is refused (numba unpickles its cache index), and so is one we cannot create:
  then kernels compile in memory at first use, which works on read-only boards (``CACHE_PROBLEM`` says
  why; a warning too when the directory was set explicitly).
* ``EDGERNN_DISABLE_JIT=1`` or ``NUMBA_DISABLE_JIT=1``: the runtime uses its numpy backend.
"""

from __future__ import annotations

import os

from ..trust import insecure_above as _insecure_above
from ..trust import insecure_dir as _insecure

FASTMATH = {"reassoc", "contract", "arcp", "nsz", "afn"}
BOUNDSCHECK = False
DISABLE_JIT = os.environ.get("EDGERNN_DISABLE_JIT", "0") not in ("", "0") or os.environ.get(
    "NUMBA_DISABLE_JIT", "0"
) not in ("", "0")


def _kernels_digest() -> str:
    """Hash of the kernel sources: numba's cache only watches the file of the cached function, not
    the files of the kernels it calls, so each version of the kernels gets its own cache subdirectory."""
    import hashlib

    h = hashlib.sha256()
    here = os.path.dirname(os.path.abspath(__file__))
    for sub in ("", "ops"):  # the kernels and the op emitters of the code generator
        d = os.path.join(here, sub)
        for name in sorted(os.listdir(d)) if os.path.isdir(d) else ():
            if name.endswith(".py"):
                with open(os.path.join(d, name), "rb") as f:
                    h.update(f"{sub}/{name}".encode() + b"\0" + f.read())
    return h.hexdigest()[:16]


def cache_dir() -> str:
    """The kernel cache directory (may not exist yet): a per-kernel-version subdirectory of
    ``$EDGERNN_CACHE_DIR``, else ``$NUMBA_CACHE_DIR``, else ``~/.cache/edgernn``."""
    d = os.environ.get("EDGERNN_CACHE_DIR") or os.environ.get("NUMBA_CACHE_DIR")
    if not d:
        d = os.path.join(os.path.expanduser("~"), ".cache", "edgernn")
    sub = "kernels-" + _kernels_digest()
    if os.path.basename(os.path.normpath(d)) == sub:
        # already ours: a child process inherits the NUMBA_CACHE_DIR set below (not a nested, cold cache)
        return os.path.abspath(d)
    return os.path.join(os.path.abspath(d), sub)


def cache_problem(path: str) -> str | None:
    """Why ``path`` cannot be the kernel cache (created if missing, mode 0700), or None if it can.

    Nothing is created inside a directory that fails the checks."""
    try:
        existing = path
        while not os.path.isdir(existing) and os.path.dirname(existing) != existing:
            existing = os.path.dirname(existing)
        why = _insecure_above(existing, True) if existing != path else None
        if why:
            return why
        os.makedirs(path, mode=0o700, exist_ok=True)
        why = _insecure(path)
    except OSError as e:
        return f"cannot use {path}: {e.strerror or e}"
    if why:
        return why
    if not os.access(path, os.W_OK | os.X_OK):
        return f"{path} is not writable"
    return None


CACHE_DIR = cache_dir()
#: Why the on-disk cache is off (None when it is on, or when JIT is disabled).
CACHE_PROBLEM = None if DISABLE_JIT else cache_problem(CACHE_DIR)
CACHE = (not DISABLE_JIT) and CACHE_PROBLEM is None
if CACHE_PROBLEM and (os.environ.get("EDGERNN_CACHE_DIR") or os.environ.get("NUMBA_CACHE_DIR")):
    import warnings

    warnings.warn(f"edgernn: kernel cache off, kernels compile in memory: {CACHE_PROBLEM}", stacklevel=2)
if CACHE:
    # numba reads this when the first cached function is compiled
    os.environ["NUMBA_CACHE_DIR"] = CACHE_DIR

try:  # the device may run without numba: the numpy backend takes over
    import numba as _numba

    HAVE_NUMBA = True
    if CACHE:
        _numba.config.CACHE_DIR = CACHE_DIR
except ImportError:  # pragma: no cover - exercised in a subprocess test
    _numba = None
    HAVE_NUMBA = False


def njit(*args, **kw):
    """``numba.njit`` with the project's flags (``inline="always"`` etc. may be added per function)."""
    kw.setdefault("fastmath", set(FASTMATH))
    kw.setdefault("boundscheck", BOUNDSCHECK)
    kw.setdefault("cache", CACHE)
    kw.setdefault("nogil", True)
    kw.setdefault("error_model", "numpy")
    if not HAVE_NUMBA:

        def deco(f):
            return f

        return deco(args[0]) if args and callable(args[0]) else deco
    return _numba.njit(*args, **kw)


def inline(f):
    """A tiny helper inlined into its callers at numba IR level (scalar activations, offsets).

    numba does not inline across ``@njit`` functions at the LLVM level, so a per-element call would
    block vectorization; but IR-level inlining multiplies compile time, so only tiny helpers use it.
    """
    return njit(inline="always", cache=False)(f)


def kernel(f):
    """A helper kernel called from other kernels (one call per layer or block: its cost is negligible)."""
    return njit(f)
