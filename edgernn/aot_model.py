"""AOT modules built for one model: that model's generated kernels, compiled natively ahead of time.

``edgernn aot MODEL.ernn`` (:func:`build`) generates the model's kernels (``kernels/codegen.py``: its
``step``, ``step_batch`` and ``seq``, with sizes, offsets and activations as constants) and compiles them
with ``numba.pycc`` into ``_edgernn_m_<key><EXT_SUFFIX>``, where ``<key>`` is
:func:`edgernn.kernels.codegen.source_key` of the generated source. The module records that key, the
kernels fingerprint and its target CPU (:mod:`edgernn.aot`, :mod:`edgernn.aot_target`).

At load, the runtime generates the model's source again (pure Python: no numba, a few milliseconds),
computes its key and looks for ``_edgernn_m_<key>*`` in, first hit that loads wins (:func:`search_dirs`):

1. ``$EDGERNN_AOT_DIR``,
2. the directory of the model file (``edgernn aot MODEL.ernn`` writes there by default),
3. the installed ``edgernn`` package directory.

The key covers everything the generated code depends on in the model (sizes, offsets, activations, the
``nonfinite`` choice), so a module built for one model is never used for another; weights are not part of
the key (they are passed at each call), so retrained weights of the same architecture reuse the module.
"""

from __future__ import annotations

import glob
import importlib.machinery
import os

import numpy as np

from . import aot
from .errors import EdgeRNNError, MissingDependencyError

#: File-name prefix of a per-model module (then the 24 hex digits of the source key).
PREFIX = "_edgernn_m_"


def module_name(key: str) -> str:
    """The extension module name of the model whose generated source has key ``key``."""
    if not (len(key) == 24 and all(c in "0123456789abcdef" for c in key)):
        raise EdgeRNNError(f"not a generated source key: {key!r}")
    return PREFIX + key


def generated(wf: np.ndarray) -> tuple[str, str]:
    """``(source, key)`` of the kernels generated for the packed model ``wf`` (float32 buffer).

    Needs no numba: the generator writes text from the packed numbers."""
    from .kernels import codegen

    src = codegen.source(wf)
    return src, codegen.source_key(src)


def search_dirs(model_path: str | None = None) -> list[str]:
    """Where the runtime looks for a model's module, in order: ``$EDGERNN_AOT_DIR``, the directory of
    ``model_path`` (the ``.ernn`` file, when the model was loaded from one), the edgernn package."""
    out = []
    env = os.environ.get("EDGERNN_AOT_DIR")
    if env:
        out.append(os.path.abspath(env))
    if model_path:
        out.append(os.path.dirname(os.path.abspath(model_path)))
    out.append(aot.package_dir())
    return list(dict.fromkeys(out))


def candidates(key: str, model_path: str | None = None) -> list[str]:
    """Every file of the module for ``key`` that this Python can load, in search order."""
    name = module_name(key)
    out = []
    for d in search_dirs(model_path):
        for suffix in importlib.machinery.EXTENSION_SUFFIXES:
            p = os.path.join(d, name + suffix)
            if os.path.isfile(p):
                out.append(p)
    return out


def any_built(model_path: str | None = None) -> bool:
    """Whether any per-model module lies in the search directories (cheap: one listing per directory);
    the runtime skips generating the source for the lookup when there is none."""
    return any(glob.glob(os.path.join(glob.escape(d), PREFIX + "*")) for d in search_dirs(model_path))


def load(wf: np.ndarray, model_path: str | None = None) -> tuple[aot.Kernels | None, str, str, list[str]]:
    """The module of the packed model ``wf``: ``(kernels or None, source, key, refusals)``.

    Tries each candidate file in search order; ``refusals`` says why each one that was found could not be
    used (stale kernels, another CPU, an insecure directory), so the caller can report it."""
    src, key = generated(wf)
    refusals = []
    for path in candidates(key, model_path):
        try:
            return aot.load_module(path, key=key), src, key, refusals
        except EdgeRNNError as e:
            refusals.append(str(e))
    return None, src, key, refusals


def missing_message(key: str, model_path: str | None, refusals: list[str]) -> str:
    """The one-line error for ``backend="aot"`` on a model without a usable module."""
    where = ", ".join(search_dirs(model_path))
    model = model_path or "MODEL.ernn"
    why = f" ({refusals[0]})" if refusals else ""
    return (
        f"no usable AOT module for this model (source key {key}, file {module_name(key)}*) in {where}{why}; "
        f"build one with: edgernn aot {model} (or load with backend=None to fall back to numba/numpy)"
    )


def build(
    model_path: str,
    out_dir: str | None = None,
    cpu: str = "host",
    nonfinite: str = "raise",
    verbose: bool = False,
) -> str:
    """Compile the kernels generated for the model in ``model_path`` (an ``.ernn`` file) into
    ``out_dir/_edgernn_m_<key><EXT_SUFFIX>`` and return the module's path.

    ``out_dir`` defaults to the model file's directory (where the runtime looks without configuration).
    ``cpu`` as for :func:`edgernn.aot.build`. ``nonfinite``: the mode the model will be loaded with
    (``"raise"``, the default of :func:`edgernn.load`, or ``"propagate"``: a different generated source, so
    a different module). Needs numba, setuptools, gcc and g++; a few seconds per model here.
    """
    from . import runtime

    try:
        m = runtime.load(model_path, backend="numpy", nonfinite=nonfinite)  # packed as the runtime packs it
    except OSError as e:
        raise EdgeRNNError(f"cannot read {model_path}: {e.strerror or e}") from None
    return build_packed(m._packed.wf, out_dir or os.path.dirname(os.path.abspath(model_path)), cpu, verbose)


def build_packed(wf: np.ndarray, out_dir: str, cpu: str = "host", verbose: bool = False) -> str:
    """:func:`build` from a packed model buffer ``wf`` (float32) into ``out_dir``; returns the path."""
    src, key = generated(wf)
    try:
        from .kernels import codegen

        mod = codegen._module(src)  # the generated @njit functions (their Python bodies are compiled)
    except ImportError as e:  # pragma: no cover - the generated module imports numba
        raise MissingDependencyError(f"building an AOT module needs numba ({e})") from e
    return aot.build(
        out_dir,
        cpu=cpu,
        verbose=verbose,
        source=mod,
        name=module_name(key),
        records={aot.KEY_RECORD: key.encode()},
    )


class Entries:
    """The three entry points the runtime uses for one model, and its generated source."""

    def __init__(self, k: aot.Kernels, source: str):
        self.step, self.step_batch, self.seq, self.source, self.path = (
            k.step,
            k.step_batch,
            k.seq,
            source,
            k.path,
        )


def entries(wf: np.ndarray, model_path: str | None = None, forced: bool = False) -> Entries | None:
    """The AOT entry points for the packed model ``wf``: its own module (looked up by the key of its
    generated source), else None.

    ``forced`` (``backend="aot"``): no module raises :class:`EdgeRNNError` naming the command to run. A
    module built for this model but refused (stale kernels, another CPU) is named in that error, or, when
    not forced, in a warning before the caller falls back (it was built for this model: worth saying)."""
    refusals: list[str] = []
    key = None
    if forced or any_built(model_path):
        k, src, key, refusals = load(wf, model_path)
        if k is not None:
            return Entries(k, src)
        if refusals and not forced:
            import warnings

            warnings.warn(f"edgernn: {refusals[0]}; falling back to numba/numpy", stacklevel=5)
    if forced:
        raise EdgeRNNError(missing_message(key or "?", model_path, refusals))
    return None


def available() -> bool:
    """Per-model modules lie in the search directories (each is checked against its model when that model
    is loaded)."""
    return any_built()
