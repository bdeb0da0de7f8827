"""The device-side runtime: :func:`load`, :class:`Model`, :class:`Stream`, :class:`Streams`.

Imports numpy (and numba through the kernels) only. A model is packed once at load into read-only
flat buffers; each stream owns one float32 buffer holding its state and work memory, so ``step`` makes
exactly one jitted call and allocates nothing inside the kernel.

Thread safety: a :class:`Model` may be shared by threads (its buffers are never written after load);
each :class:`Stream`/:class:`Streams` must be driven by one thread at a time (the kernels release the
GIL, so streams in different threads run in parallel).
"""

from __future__ import annotations

import os
import threading
from typing import Any

import numpy as np

from . import artifact
from . import outputs as _outputs
from .errors import EdgeRNNError, InputError
from .pack import Packed, pack

_F32 = np.dtype(np.float32)
_MAX_EXACT_INT = 1 << 24

_BACKENDS: dict[str, Any] = {}
_BACKENDS_LOCK = threading.RLock()


# --------------------------------------------------------------------------------------- backends


class _Backend:
    """The three kernel entry points of one implementation (numba JIT, AOT module or numpy)."""

    def __init__(self, name: str, step, step_batch, seq, per_model=None):
        self.name = name
        self.step = step
        self.step_batch = step_batch  # (X, wf, wb, MB)
        self.seq = seq
        self._per_model = per_model
        self.source: str | None = None  # the generated source of a per-model backend

    def for_model(self, packed: Packed, path: str | None = None) -> _Backend:
        """The entry points for one packed model (loaded from the file ``path``, if any): kernels generated
        for it (numba), its AOT module, or these ones."""
        return self if self._per_model is None else self._per_model(self, packed, path)


def _numba_for_model(base: _Backend, packed: Packed, path: str | None = None) -> _Backend:
    from .kernels import codegen

    k = codegen.kernels(packed.wf)  # step compiled now (or from the cache); seq, step_batch on first use
    b = _Backend("numba", k.step, k.step_batch, k.seq)
    b.source = k.source
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


# -------------------------------------------------------------------------------------------- load


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    nonfinite: str = "raise",
    max_parameters: int = artifact.MAX_PARAMETERS,
) -> Model:
    """Load and validate an ``.ernn`` artifact.

    Parameters
    ----------
    path : the ``.ernn`` file.
    backend : ``"aot"``, ``"numba"``, ``"numpy"`` or ``None`` (best available for this model, see
        :func:`get_backend`; the model's AOT module is looked up next to ``path`` too).
    nonfinite : ``"raise"`` (default: a NaN/Inf input raises :class:`InputError` before any state
        changes) or ``"propagate"`` (let it through; the state then holds NaN until ``reset``).
    max_parameters : refuse files with more weights than this.

    Raises :class:`~edgernn.ArtifactError` naming the failed check for any malformed file.
    """
    plan, tensors = artifact.read(path, max_parameters=max_parameters)
    return Model(plan, tensors, backend=backend, nonfinite=nonfinite, source=os.fspath(path))


class Model:
    """A loaded model. Create streams with :meth:`stream`/:meth:`streams`, or run :meth:`predict`.

    ``Model(plan, tensors)`` validates like :func:`load` (plan and tensors as in docs/ARTIFACT.md).
    """

    def __init__(
        self,
        plan: dict,
        tensors: dict[str, np.ndarray],
        backend: str | None = None,
        nonfinite: str = "raise",
        source: str | None = None,
    ):
        plan = artifact.validate_plan(plan)
        artifact.validate_tensors(plan, tensors)
        if nonfinite not in ("raise", "propagate"):
            raise EdgeRNNError(f"nonfinite must be 'raise' or 'propagate', got {nonfinite!r}")
        self.plan = plan
        self.source = source
        self.nonfinite = nonfinite
        self._layers, _ = artifact.graph_layers(plan)  # what runs: the layers, each reading earlier values
        self._outputs = _outputs.specs(plan)
        self._split = _outputs.splitter(self._outputs)  # None: one output, returned as an array
        self._packed: Packed = pack(*_outputs.executed(plan, tensors))  # several: concatenated last
        p = self._packed
        if nonfinite == "propagate":
            from .kernels.layout import H_FLAGS

            p.wf[H_FLAGS] = 1
        p.wf.flags.writeable = True  # numba signatures take mutable arrays; never written after this
        self._backend = get_backend(backend).for_model(p, source)
        self._m0 = np.zeros(p.m_size, np.float32)
        self._m0[: p.n_state] = p.state0
        self._tokens = plan["input"]["kind"] == "tokens"
        self._vocab = plan["input"].get("vocab_size", 0)
        self._n_params = int(sum(np.prod(t.shape) for t in tensors.values()))
        self._bytes = int(sum(t.nbytes for t in tensors.values()))
        self._warm()

    def _warm(self) -> None:
        """Run the backend's step once on a scratch copy of the initial buffer, with a valid input (zeros;
        token id 0): the first real ``step`` then costs what the others do (numba finishes loading a
        cached kernel on its first call). No stream state is touched; the status is ignored. A model that
        cannot stream (a reverse direction) warms its sequence kernel on one row instead; a streamable
        model's sequence kernel is left to its first use (step-only users do not pay for it)."""
        p = self._packed
        x = np.zeros(p.in_size, np.float32)
        if p.streamable:
            self._backend.step(x, p.wf, p.wb, self._m0.copy())
            return
        buf = np.empty(2 * p.seq_width + p.seq_extra + 1, np.float32)  # as _run_seq sizes it for T = 1
        Y = np.empty((1, p.out_size), np.float32)
        self._backend.seq(x[None, :], p.wf, p.wb, self._m0.copy(), Y, buf)

    # ------------------------------------------------------------------ info
    @property
    def input_size(self) -> int:
        """Features per step (1 for token inputs: the id)."""
        return self._packed.in_size

    @property
    def output_size(self) -> int:
        """Values per output step (of the first output, when the model has several)."""
        return self._outputs[0]["size"]

    @property
    def output_names(self) -> tuple[str, ...]:
        """The names of the model's outputs, in order (the source graph's output names when compiled
        from ONNX). A model of several outputs returns a tuple of arrays in this order from
        :meth:`predict`, :meth:`Stream.step`, :meth:`Stream.run` and :meth:`Streams.step`."""
        return tuple(o["name"] for o in self._outputs)

    @property
    def output_sizes(self) -> tuple[int, ...]:
        """Values per step of each output, in the order of :attr:`output_names`."""
        return tuple(o["size"] for o in self._outputs)

    @property
    def state_size(self) -> int:
        """Length of the flat float32 state vector of one stream."""
        return self._packed.n_state

    @property
    def backend(self) -> str:
        """``"aot"``, ``"numba"`` or ``"numpy"``."""
        return self._backend.name

    @property
    def kernel_source(self) -> str | None:
        """The Python source of the kernels generated for this model (numba backend), else None."""
        return self._backend.source

    @property
    def info(self) -> dict:
        """A summary: sizes, layers, parameter count, quantization, labels, backend, streamability.

        ``output_size``, ``sequence`` and ``labels`` describe the first output; ``outputs`` lists every
        output (``name``, ``size``, ``sequence``, ``labels``), in the order predict returns them.

        How a layer is held in memory when that differs from the file: a sparse reservoir dense enough to
        run faster as a dense matrix says ``"packed_dense": True``; a small int8 recurrent layer computed
        from float32 q·scale (faster than int8 while it fits in cache) says ``"packed_float32": True``."""
        p = self.plan
        dense = set(self._packed.dense_reservoirs)
        deq = set(self._packed.dequantized)
        return {
            "input_size": self.input_size,
            "input_kind": p["input"]["kind"],
            "vocab_size": p["input"].get("vocab_size"),
            "output_size": self.output_size,
            "sequence": p["output"]["sequence"],
            "labels": p["output"]["labels"],
            "outputs": [{k: o[k] for k in ("name", "size", "sequence", "labels")} for o in self._outputs],
            "layers": [
                _layer_summary(layer)
                | ({"packed_dense": True} if layer["name"] in dense else {})
                | ({"packed_float32": True} if layer["name"] in deq else {})
                for layer in self._layers
            ],
            "format_version": p["format_version"],
            "parameters": self._n_params,
            "weight_bytes": self._bytes,
            "quantization": p["quantization"],
            "backend": self.backend,
            "streamable": self._packed.streamable,
            "state_size": self.state_size,
            "state_layout": [{"name": n, "offset": o, "size": s} for n, o, s in self._packed.state_layout],
            "nonfinite": self.nonfinite,
            "producer": p.get("producer", {}),
            "source": self.source,
        }

    def __repr__(self) -> str:
        kinds = "+".join(layer["kind"] for layer in self._layers)
        return f"<edgernn.Model {kinds} {self.input_size}->{self.output_size} [{self.backend}]>"

    # ---------------------------------------------------------------- streams
    def _check_streamable(self) -> None:
        if not self._packed.streamable:
            raise EdgeRNNError(f"cannot stream this model: {self._packed.not_streamable_reason}")

    def stream(self) -> Stream:
        """A new stream with its own state (after ``reset``)."""
        self._check_streamable()
        return Stream(self)

    def streams(self, n: int) -> Streams:
        """``n`` independent streams advanced together: ``step(X)`` with X of shape (n, input_size)."""
        self._check_streamable()
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"streams(n) needs a positive integer, got {n!r}")
        return Streams(self, int(n))

    def predict(self, X: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Whole-sequence inference from a fresh state.

        X: (T, input_size) or (B, T, input_size) (token models: (T,) or (B, T) ids also accepted).
        Returns (T, output_size) for many-to-many models, (output_size,) for many-to-one; with a
        batch axis, (B, T, output_size) or (B, output_size). A model of several outputs
        (:attr:`output_names`) returns a tuple of such arrays, one per output in that order, each shaped
        by its own size and sequence mode (``info["outputs"]``): e.g. (Y (T, 2H), Y_h (2H,)).
        """
        X = np.asarray(X) if not isinstance(X, np.ndarray) else X
        if self._tokens and X.ndim in (1, 2) and (X.ndim == 1 or X.shape[-1] != 1):
            X = X[..., None]
        if X.ndim == 3:
            if not len(X):
                return self._empty_batch(X)
            got = [self.predict(x) for x in X]
            return (
                np.stack(got) if self._split is None else tuple(np.stack(g) for g in zip(*got, strict=True))
            )
        X = self._coerce(X, 2)
        M = self._m0.copy()
        Y = self._run_seq(X, M)
        if len(Y) == 0 and any(o["sequence"] == "many_to_one" for o in self._outputs):
            raise InputError("a many-to-one prediction needs at least one time step")
        if self._split is not None:
            return tuple(
                y[-1].copy() if o["sequence"] == "many_to_one" else np.ascontiguousarray(y)
                for o, y in zip(self._outputs, self._split(Y), strict=True)
            )
        if self.plan["output"]["sequence"] == "many_to_one":
            return Y[-1].copy()
        return Y

    def _empty_batch(self, X: np.ndarray) -> np.ndarray | tuple[np.ndarray, ...]:
        got = tuple(
            np.zeros(
                (0, o["size"]) if o["sequence"] == "many_to_one" else (0, X.shape[1], o["size"]), np.float32
            )
            for o in self._outputs
        )
        return got[0] if self._split is None else got

    # ------------------------------------------------------------ internals
    #: time steps per seq-kernel call: bounds the work buffers (2 x chunk x widest layer) for long inputs
    SEQ_CHUNK = 4096

    def _run_seq(self, X: np.ndarray, M: np.ndarray) -> np.ndarray:
        """Run X (T, I) layer by layer from the state in M (updated); Y (T, O).

        Streamable models go in chunks of ``SEQ_CHUNK`` steps (memory bounded whatever T is); if a row
        is rejected, the state is restored, so nothing is consumed. Models with reverse directions need
        the whole sequence in one call.
        """
        p = self._packed
        T = X.shape[0]
        Y = np.empty((T, p.out_size), np.float32)
        if T == 0:
            return Y
        chunk = self.SEQ_CHUNK if p.streamable else T
        n = min(T, chunk)
        buf = np.empty(2 * n * p.seq_width + p.seq_extra + 1, np.float32)
        saved = M[: p.n_state].copy() if T > chunk else None
        for t0 in range(0, T, chunk):
            t1 = min(T, t0 + chunk)
            st = self._backend.seq(X[t0:t1], p.wf, p.wb, M, Y[t0:t1], buf)
            if st:
                if saved is not None:
                    M[: p.n_state] = saved
                t = t0 + (st >> 3)
                self._raise_status(st & 7, X[t], f" at time step {t}")
        return Y

    def _coerce(self, x: Any, ndim: int) -> np.ndarray:
        """x as a C-contiguous float32 array with ``ndim`` dims and the right last axis, or InputError."""
        what = "x" if ndim == 1 else "X"
        try:
            a = np.asarray(x)
        except Exception as e:
            raise InputError(f"{what} is not array-like: {e}") from None
        if a.dtype.kind not in "fiu":
            raise InputError(f"{what} must be real numbers (float or int), got dtype {a.dtype}")
        if ndim == 1 and a.ndim == 0 and self.input_size == 1:
            a = a.reshape(1)
        if ndim == 2 and a.ndim == 1 and self.input_size == 1 and not self._tokens:
            a = a.reshape(-1, 1)
        want = "(input_size,)" if ndim == 1 else "(T, input_size)"
        if a.ndim != ndim or a.shape[-1] != self.input_size:
            raise InputError(
                f"{what} must have shape {want} = {'(' if ndim == 1 else '(T, '}{self.input_size},), "
                f"got shape {a.shape}".replace(",)", ")")
            )
        if a.dtype.kind in "iu":
            if a.size and (a.max() > _MAX_EXACT_INT or a.min() < -_MAX_EXACT_INT):
                raise InputError(f"{what} has integers beyond ±2**24, which float32 cannot hold exactly")
        elif a.dtype.itemsize > 4:
            finite = np.isfinite(a)
            if np.any(np.abs(a[finite]) > np.finfo(np.float32).max):
                raise InputError(f"{what} has values beyond the float32 range")
        a = np.ascontiguousarray(a, dtype=np.float32)
        return a if a.flags.writeable else a.copy()  # the kernels' signatures take writeable arrays

    def _raise_status(self, code: int, x: np.ndarray, where: str = "") -> None:
        if code == 1:
            raise InputError(f"x must have {self.input_size} values, got {x.shape[0]}{where}")
        if code == 2:
            bad = np.flatnonzero(~np.isfinite(x))
            raise InputError(
                f"non-finite input (NaN/Inf at index {bad.tolist()[:8]}){where}; the state is unchanged "
                "(load with nonfinite='propagate' to let such values through)"
            )
        if code == 3:
            v = float(x[0])
            shown = str(int(v)) if v.is_integer() else repr(v)  # 20, 20.5, nan: not np.float32(20.0)
            raise InputError(f"token id {shown} is not an integer in [0, {self._vocab}){where}")
        if code == 4:
            raise InputError(
                "the model overflowed to NaN/Inf (in its state or output) on a finite but extreme "
                f"input{where}; the state is unchanged "
                "(load with nonfinite='propagate' to let such values through)"
            )
        raise EdgeRNNError(f"kernel status {code}{where}")  # pragma: no cover


def _layer_summary(layer: dict) -> dict:
    keep = (
        "kind",
        "name",
        "input_size",
        "output_size",
        "hidden_size",
        "direction",
        "activation",
        "activations",
        "reservoir_size",
        "attention_size",
        "vocab_size",
        "leak_rate",
        "sparse",
    )
    return {k: layer[k] for k in keep if k in layer}


class Stream:
    """One stream: persistent state advanced by :meth:`step` (one sample) or :meth:`run` (a chunk)."""

    __slots__ = ("_model", "_M", "_y", "_k", "_wf", "_wb", "_n_state", "_split")

    def __init__(self, model: Model):
        p = model._packed
        self._model = model
        self._M = model._m0.copy()
        self._y = self._M[p.out_off : p.out_off + p.out_size]
        self._k = model._backend.step
        self._wf = p.wf
        self._wb = p.wb
        self._n_state = p.n_state
        self._split = model._split

    def step(self, x: Any, out: np.ndarray | None = None) -> np.ndarray | tuple[np.ndarray, ...]:
        """Feed one sample x (input_size,) (a token id for token models); returns y (output_size,).

        For many-to-one models y is the prediction for the sequence seen so far. A new array is
        returned unless ``out`` (float32, (output_size,)) is given, which is filled and returned.
        A model of several outputs returns a tuple with each output's y at this step (in the order of
        ``model.output_names``, each its (size,) so far, many-to-one outputs included), views of one new
        array, or of ``out`` (float32, (sum(model.output_sizes),)) when given.
        Raises :class:`InputError` (state unchanged) for a wrong shape/dtype, NaN/Inf or a bad token id.
        """
        try:
            st = self._k(x, self._wf, self._wb, self._M)
        except (TypeError, ValueError):  # not a C-contiguous float32 vector (numba: "[]" is a ValueError)
            x = self._model._coerce(x, 1)
            st = self._k(x, self._wf, self._wb, self._M)
        if st:
            self._model._raise_status(st, np.asarray(x, np.float32).reshape(-1))
        if out is None:
            y = self._y.copy()
        else:
            out[...] = self._y
            y = out
        return y if self._split is None else self._split(y)

    def run(self, X: Any) -> np.ndarray | tuple[np.ndarray, ...]:
        """Feed a chunk X (T, input_size); returns Y (T, output_size) and keeps the state after X.

        Equivalent to T calls of :meth:`step`; if any row is invalid nothing is consumed. A model of
        several outputs returns a tuple of (T, size) arrays, one per output (every step of each).
        """
        m = self._model
        Xc = m._coerce(X[..., None] if m._tokens and np.ndim(X) == 1 else X, 2)
        Y = m._run_seq(Xc, self._M)
        return Y if self._split is None else tuple(np.ascontiguousarray(y) for y in self._split(Y))

    def reset(self) -> None:
        """Back to the initial state (zeros, or the model's initial states)."""
        self._M[:] = self._model._m0

    @property
    def state(self) -> np.ndarray:
        """A copy of the flat float32 state (layout in ``model.info['state_layout']``)."""
        return self._M[: self._n_state].copy()

    @state.setter
    def state(self, value: Any) -> None:
        v = np.asarray(value)
        if v.shape != (self._n_state,) or v.dtype.kind != "f":
            raise InputError(
                f"state must be a float array of shape ({self._n_state},), got {v.dtype}{v.shape}"
            )
        if not np.all(np.isfinite(v)):
            raise InputError("state has NaN/Inf values")
        self._M[: self._n_state] = v

    @property
    def model(self) -> Model:
        """The model this stream runs."""
        return self._model


class Streams:
    """``n`` independent streams advanced by one call: ``step(X)`` with X (n, input_size).

    For servers: ``step(X, rows)`` advances only the listed rows, ``reset(rows)``, per-row
    ``get_state(row)``/``set_state(row, value)``, and ``resize(n)`` grows or shrinks the block without
    disturbing the rows that stay.
    """

    def __init__(self, model: Model, n: int):
        p = model._packed
        self._model = model
        self.n = n
        self._MB = np.tile(model._m0, (n, 1))
        self._k = model._backend.step_batch
        self._wf = p.wf
        self._wb = p.wb
        self._o = slice(p.out_off, p.out_off + p.out_size)
        self._n_state = p.n_state
        self._split = model._split

    def __len__(self) -> int:
        return self.n

    def _coerce_X(self, X: Any, n: int) -> np.ndarray:
        """X as C-contiguous float32 (n, input_size), or InputError saying (n, input_size)."""
        m = self._model
        try:
            Xa = np.asarray(X)
        except Exception as e:
            raise InputError(f"X is not array-like: {e}") from None
        if Xa.ndim == 1 and (m._tokens or m.input_size == 1):
            Xa = Xa[:, None]
        if Xa.shape != (n, m.input_size):  # n streams, not T steps: say (n, input_size)
            raise InputError(f"X must have one row per stream: shape ({n}, {m.input_size}), got {Xa.shape}")
        return m._coerce(Xa, 2)

    def step(self, X: Any, rows: Any = None, out: np.ndarray | None = None) -> np.ndarray | tuple:
        """Feed one sample per stream, X (n, input_size); returns Y (n, output_size) (a model of several
        outputs: a tuple of (n, size) views of one array, or of ``out``, (n, sum of the sizes)).

        With ``rows`` (distinct row indices, k of them): X is (k, input_size), only those rows advance
        (the others are untouched) and Y is (k, output_size), row i of Y for stream ``rows[i]``.
        If any row is invalid (or ``rows`` is), :class:`InputError` names it and no stream advances.
        """
        if rows is not None:
            return self._step_rows(X, self._check_rows(rows), out)
        try:
            st = self._k(X, self._wf, self._wb, self._MB)
        except (TypeError, ValueError):  # not C-contiguous float32 (n, I): convert (or refuse), retry
            X = self._coerce_X(X, self.n)
            st = self._k(X, self._wf, self._wb, self._MB)
        if st:
            m = self._model
            if (st & 7) == 1 and np.shape(X)[0] != self.n:
                raise InputError(
                    f"X must have one row per stream: shape ({self.n}, {m.input_size}), got {X.shape}"
                )
            m._raise_status(st & 7, np.asarray(X, np.float32)[st >> 3], f" (stream {st >> 3})")
        if out is None:
            Y = self._MB[:, self._o].copy()
        else:
            out[...] = self._MB[:, self._o]
            Y = out
        return Y if self._split is None else self._split(Y)

    def _step_rows(self, X: Any, idx: np.ndarray, out: np.ndarray | None) -> np.ndarray:
        X = self._coerce_X(X, len(idx))
        if len(idx) == 0:
            Y = np.zeros((0, self._o.stop - self._o.start), np.float32) if out is None else out
            return Y if self._split is None else self._split(Y)
        block = self._MB[idx]  # gather: a compact C-contiguous (k, m_size) copy
        st = self._k(X, self._wf, self._wb, block)
        if st:
            r = st >> 3
            self._model._raise_status(st & 7, X[r], f" (stream {int(idx[r])})")
        self._MB[idx] = block  # scatter back only after the kernel accepted every row
        if out is None:
            Y = block[:, self._o].copy()
        else:
            out[...] = block[:, self._o]
            Y = out
        return Y if self._split is None else self._split(Y)

    def _check_rows(self, rows: Any) -> np.ndarray:
        """rows as distinct int64 indices in [0, n), or InputError."""
        try:
            r = np.asarray(rows)
        except Exception as e:
            raise InputError(f"rows is not array-like: {e}") from None
        if r.ndim == 0:
            r = r.reshape(1)
        if r.ndim != 1 or (r.size and r.dtype.kind not in "iu"):
            raise InputError(f"rows must be a 1-D sequence of integers, got {r.dtype}{r.shape}")
        r = r.astype(np.int64)
        if r.size and (r.min() < 0 or r.max() >= self.n):
            bad = r[(r < 0) | (r >= self.n)]
            raise InputError(f"rows {bad.tolist()[:8]} out of range [0, {self.n})")
        if len(np.unique(r)) != len(r):
            u, c = np.unique(r, return_counts=True)
            raise InputError(f"rows must be distinct, got {u[c > 1].tolist()[:8]} more than once")
        return r

    def _check_row(self, row: Any) -> int:
        if isinstance(row, bool) or not isinstance(row, (int, np.integer)):
            raise InputError(f"row must be an integer, got {row!r}")
        if not 0 <= row < self.n:
            raise InputError(f"row {row} out of range [0, {self.n})")
        return int(row)

    def reset(self, rows: Any = None) -> None:
        """Reset every stream, or only the given rows."""
        if rows is None:
            self._MB[:] = self._model._m0
        else:
            self._MB[self._check_rows(rows)] = self._model._m0

    def get_state(self, row: int) -> np.ndarray:
        """A copy of stream ``row``'s flat float32 state, (state_size,)."""
        return self._MB[self._check_row(row), : self._n_state].copy()

    def set_state(self, row: int, value: Any) -> None:
        """Set stream ``row``'s state (finite floats, (state_size,)); the other rows are untouched."""
        r = self._check_row(row)
        v = np.asarray(value)
        if v.shape != (self._n_state,) or v.dtype.kind != "f":
            raise InputError(
                f"state must be a float array of shape ({self._n_state},), got {v.dtype}{v.shape}"
            )
        if not np.all(np.isfinite(v)):
            raise InputError("state has NaN/Inf values")
        self._MB[r, : self._n_state] = v

    def resize(self, n: int) -> None:
        """Grow (new rows start from the initial state) or shrink (rows >= n dropped) to ``n`` rows.

        Rows below ``min(old n, n)`` keep their state and index."""
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
            raise InputError(f"resize(n) needs a positive integer, got {n!r}")
        n = int(n)
        if n > self.n:
            self._MB = np.concatenate([self._MB, np.tile(self._model._m0, (n - self.n, 1))])
        elif n < self.n:
            self._MB = self._MB[:n].copy()
        self.n = n

    @property
    def state(self) -> np.ndarray:
        """Copy of the states, (n, state_size)."""
        return self._MB[:, : self._n_state].copy()

    @state.setter
    def state(self, value: Any) -> None:
        v = np.asarray(value)
        if v.shape != (self.n, self._n_state) or v.dtype.kind != "f" or not np.all(np.isfinite(v)):
            raise InputError(f"state must be finite floats of shape ({self.n}, {self._n_state})")
        self._MB[:, : self._n_state] = v
