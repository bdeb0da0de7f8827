"""The kernel backends of the runtime: the numba JIT (kernels generated for each model), per-model AOT
modules, and the numpy backend, each a :class:`_Backend` of three entry points (``step``,
``step_batch``, ``seq``) specialised to one packed model by ``for_model``; :func:`get_backend` picks and
caches them, :func:`available_backends` lists what loads here.
"""

from __future__ import annotations

import os
import threading
from typing import Any

from .errors import EdgeRNNError
from .pack import Packed

_BACKENDS: dict[str, Any] = {}
_BACKENDS_LOCK = threading.RLock()


class _Backend:
    """The three kernel entry points of one implementation (numba JIT, AOT module or numpy)."""

    def __init__(self, name: str, step, step_batch, seq, per_model=None):
        self.name = name
        self.step = step
        self.step_batch = step_batch  # (X, wf, wb, MB)
        self.seq = seq
        self._per_model = per_model
        self.source: str | None = None  # the generated source of a per-model backend
        self.batch = None  # step_batch's GEMM panels (kernels.lanes.BatchPanels), not yet in wf

    def prepare_batch(self, packed: Packed) -> None:
        """Append the panels step_batch reads to ``packed.wf`` where its source reads them, once (the
        first ``Streams`` of the model; ``Stream`` users never hold them)."""
        if self.batch is None:  # None only once packed.wf holds them
            return
        with _BACKENDS_LOCK:
            batch = self.batch
            if batch is None:  # another thread appended them meanwhile
                return
            base = _append(packed, batch.table())
            if base != batch.base:  # pragma: no cover - nothing else appends after load
                raise EdgeRNNError("internal error: step_batch panels misplaced")
            self.batch = None

    def for_model(self, packed: Packed, path: str | None = None) -> _Backend:
        """The entry points for one packed model (loaded from the file ``path``, if any): kernels generated
        for it (numba), its AOT module, or these ones."""
        return self if self._per_model is None else self._per_model(self, packed, path)


def _append(packed: Packed, extra) -> int:
    """Append float32 values to ``packed.wf`` (read-only like the rest; numba signatures take mutable
    arrays); returns the offset of the first."""
    import numpy as np

    base = len(packed.wf) + (-len(packed.wf) % 16)  # whole 64-byte lines: the panels' loads never split
    n = base + len(extra)
    raw = np.zeros(n + 16, np.float32)
    start = (-raw.ctypes.data % 64) // 4  # wf itself starts on a 64-byte boundary
    wf = raw[start : start + n]
    wf[: len(packed.wf)] = packed.wf
    wf[base:] = extra
    packed.wf = wf
    return base


def _append_wb(packed: Packed, extra) -> int:
    """Append int8 values to ``packed.wb`` at a 64-byte boundary (the buffer itself starting on one, its
    length staying a multiple of 4 for its int32 view); returns the offset of the first."""
    import numpy as np

    base = len(packed.wb) + (-len(packed.wb) % 64)
    n = base + len(extra)
    n += -n % 4
    raw = np.zeros(n + 64, np.int8)
    start = -raw.ctypes.data % 64
    wb = raw[start : start + n]
    wb[: len(packed.wb)] = packed.wb
    wb[base : base + len(extra)] = extra
    packed.wb = wb
    return base


def _panels(packed: Packed) -> dict | None:
    """Panel copies of the step's float32 row products (kernels/simd.py), appended to wf where they are
    used (x86-64 with AVX2+FMA; ``EDGERNN_PANELS=0`` turns them off); None otherwise."""
    from .kernels import simd
    from .kernels.ops import _pemit

    if os.environ.get("EDGERNN_PANELS", "1") == "0" or not simd.have_simd():
        return None
    table, where = _pemit.panel_table(packed.wf)
    if not len(table):
        return None
    base = _append(packed, table)
    return {key: base + i for key, i in where.items()}


def _batch_panels(packed: Packed):
    """A :class:`~.kernels.lanes.BatchPanels` for the source about to be generated from ``packed.wf``
    (its panels go right after wf, appended by :meth:`_Backend.prepare_batch` for the first ``Streams``),
    or None with ``EDGERNN_BATCH_GEMM=0`` or off x86-64 with AVX2+FMA (step_batch then keeps the portable
    blocked loops: the tiles are generic vector IR, but measured and tested only there so far)."""
    from .kernels import bgemm, lanes, simd

    if os.environ.get("EDGERNN_BATCH_GEMM", "1") == "0" or not simd.have_simd():
        return None
    n = len(packed.wf)
    return lanes.BatchPanels(packed.wf, packed.wb, n + (-n % 16), bgemm.vector_width())


def _numba_for_model(base: _Backend, packed: Packed, path: str | None = None) -> _Backend:
    from .kernels import codegen

    panels = _panels(packed)
    batch = _batch_panels(packed)
    # step compiled now (or cached); seq, step_batch later
    k = codegen.kernels(packed.wf, panels=panels, batch=batch)
    b = _Backend("numba", k.step, k.step_batch, k.seq)
    b.source = k.source
    b.batch = batch if batch is not None and batch.n else None
    return b


def numba_dynamic_int8(packed: Packed) -> _Backend:
    """The numba kernels of ``packed`` with ``dynamic_int8`` (``kernels/ops/_qemit.py``): the int8 R·h of
    LSTM/GRU/RNN layers and dense reservoirs on h quantized per step, by VNNI instructions (row sums
    appended to wf), else AVX2 ones (int8 panel copies appended to wb; ``EDGERNN_INT8_PANELS=0`` turns
    them off), else a plain integer loop; needs numba (no AOT module or numpy backend has it)."""
    get_backend("numba")  # a clear error when numba is missing
    from .kernels import codegen, vnni
    from .kernels.ops import _qemit

    rowsums = qpanels = None
    if vnni.have_vnni():  # the row sums the VNNI sums need, appended to wf
        sums, where = _qemit.row_sums(packed.wf, packed.wb)
        if len(sums):
            base = _append(packed, sums)
            rowsums = {off: base + i for off, i in where.items()}
    elif vnni.have_avx2() and os.environ.get("EDGERNN_INT8_PANELS", "1") != "0":
        table, where = _qemit.panel_table(packed.wf, packed.wb)
        if len(table):
            base = _append_wb(packed, table)
            qpanels = {off: base + i for off, i in where.items()}
    panels = _panels(packed)
    batch = _batch_panels(packed)
    k = codegen.kernels(
        packed.wf, dynamic_int8=True, rowsums=rowsums, panels=panels, qpanels=qpanels, batch=batch
    )
    b = _Backend("numba", k.step, k.step_batch, k.seq)
    b.source = k.source
    b.batch = batch if batch is not None and batch.n else None
    return b


def _numba_backend() -> _Backend:
    # step, seq and step_batch are generated for each model (kernels/codegen.py); step_batch (streams(n):
    # blocks of 16 streams share every weight row load, kernels/lanes.py) compiles on the first
    # Streams.step of the process (or loads from the kernel cache): single-stream users never pay
    return _Backend("numba", None, None, None, per_model=_numba_for_model)


def _numpy_for_model(base: _Backend, packed: Packed, path: str | None = None) -> _Backend:
    from . import numpy_backend as nb

    step, step_batch, seq = nb.for_model(packed.wf)
    return _Backend("numpy", step, step_batch, seq)


def _numpy_backend() -> _Backend:
    return _Backend("numpy", None, None, None, per_model=_numpy_for_model)


def _aot_kernels(packed: Packed, path: str | None, forced: bool) -> _Backend | None:
    """The model's AOT module, else None (see ``edgernn.aot_model.entries``)."""
    from . import aot_model  # imports no numba

    e = aot_model.entries(packed.wf, path, forced)
    if e is None:
        return None
    b = _Backend("aot", e.step, e.step_batch, e.seq)
    b.source = e.source
    return b


def _aot_for_model(base: _Backend, packed: Packed, path: str | None = None) -> _Backend:
    b = _aot_kernels(packed, path, forced=True)
    assert b is not None
    return b


def _aot_backend() -> _Backend:
    return _Backend("aot", None, None, None, per_model=_aot_for_model)


def _auto_for_model(base: _Backend, packed: Packed, path: str | None = None) -> _Backend:
    """The best backend for one model: its AOT module, else numba, else numpy."""
    b = _aot_kernels(packed, path, forced=False)  # first, and before kernels.config imports numba
    if b is not None:
        return b
    from .kernels.config import DISABLE_JIT, HAVE_NUMBA

    for cand in (["numba"] if HAVE_NUMBA and not DISABLE_JIT else []) + ["numpy"]:
        try:
            return get_backend(cand).for_model(packed, path)
        except (ImportError, OSError, EdgeRNNError):
            continue
    raise EdgeRNNError("no backend could be loaded")  # pragma: no cover - numpy always loads


def _auto_backend() -> _Backend:
    return _Backend("auto", None, None, None, per_model=_auto_for_model)


_FACTORIES = {"numba": _numba_backend, "numpy": _numpy_backend, "aot": _aot_backend, "auto": _auto_backend}


def available_backends() -> list[str]:
    """Names of the backends that load on this machine, in the order ``load`` prefers them (``"aot"``:
    per-model AOT modules were found; each is used only for its own model)."""
    from . import aot_model

    out = ["aot"] if aot_model.available() else []
    for name in ("numba", "numpy"):
        try:
            get_backend(name)
            out.append(name)
        except Exception:
            pass
    return out


def get_backend(name: str | None = None) -> _Backend:
    """The backend ``name`` (``"aot"``, ``"numba"``, ``"numpy"``), or the best available one.

    ``None`` picks ``$EDGERNN_BACKEND`` if set, else ``"auto"``: chosen per model at load, the model's own
    AOT module (``edgernn aot MODEL.ernn``) when built, else
    numba (unless numba is missing or ``NUMBA_DISABLE_JIT``/``EDGERNN_DISABLE_JIT`` is set), else numpy.
    ``"aot"`` on a model without its module raises :class:`EdgeRNNError` naming the command to run.
    """
    if name is None:
        name = os.environ.get("EDGERNN_BACKEND") or "auto"
    if name not in _FACTORIES:
        choices = sorted(set(_FACTORIES) - {"auto"})
        raise EdgeRNNError(f"unknown backend {name!r}; choose one of {choices}")
    if name not in _BACKENDS:
        with _BACKENDS_LOCK:  # first loads from several threads: compile once, then disable_compile
            if name not in _BACKENDS:
                _BACKENDS[name] = _FACTORIES[name]()
    return _BACKENDS[name]
