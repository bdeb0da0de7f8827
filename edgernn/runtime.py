"""The device-side runtime: :func:`load`, :class:`Model`, :class:`Stream`, :class:`Streams`.

Imports numpy (and numba through the kernels) only. A model is packed once at load into read-only
flat buffers; each stream owns one float32 buffer holding its state and work memory, so ``step`` makes
exactly one jitted call and allocates nothing inside the kernel.

Thread safety: a :class:`Model` may be shared by threads (its buffers are never written after load);
each :class:`Stream`/:class:`Streams` must be driven by one thread at a time (chunk ``run`` and
``Streams.step`` release the GIL, so streams in different threads run in parallel; a single ``step``
keeps it, since releasing it costs more than the step).

The backends live in ``edgernn.backends``, the stream objects in ``edgernn.streams``; both are
re-exported here.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np

from . import artifact
from . import outputs as _outputs
from .backends import _BACKENDS, _BACKENDS_LOCK, _Backend, available_backends, get_backend
from .errors import EdgeRNNError, InputError
from .pack import Packed, pack
from .streams import Stream, Streams

_F32 = np.dtype(np.float32)
_MAX_EXACT_INT = 1 << 24


# -------------------------------------------------------------------------------------------- load


def load(
    path: str | os.PathLike,
    backend: str | None = None,
    nonfinite: str = "raise",
    max_parameters: int = artifact.MAX_PARAMETERS,
    dynamic_int8: bool = False,
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
    dynamic_int8 : an explicit accuracy/speed trade for int8 models (default off): the int8 recurrent
        products of LSTM/RNN layers run on the hidden state h quantized to int8 at every step with one
        scale, ``max|h| / 127`` (like ONNX Runtime's dynamic quantization), summed in int32 (VNNI
        instructions where the CPU has them). Results then differ from the default weight-only int8 by
        about that rounding (see README, "int8"). numba backend only; ``streams(n)`` keeps weight-only
        int8. Layers computed from float32 at load (small ones) are unchanged.

    Raises :class:`~edgernn.ArtifactError` naming the failed check for any malformed file.
    """
    plan, tensors = artifact.read(path, max_parameters=max_parameters)
    return Model(
        plan, tensors, backend=backend, nonfinite=nonfinite, source=os.fspath(path), dynamic_int8=dynamic_int8
    )


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
        dynamic_int8: bool = False,
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
        if dynamic_int8:
            if backend not in (None, "numba"):
                raise EdgeRNNError(f"dynamic_int8 needs the numba backend, not {backend!r}")
            if plan.get("quantization", "none") != "int8":
                raise EdgeRNNError("dynamic_int8 needs an int8 model (compile with --quantize int8)")
            from .backends import numba_dynamic_int8

            self._backend = numba_dynamic_int8(p)
        else:
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
        from float32 q·scale (faster than int8 while it fits in cache), or an int8 sparse reservoir packed
        SELL-8 (its values as float32 q·scale), says ``"packed_float32": True``."""
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


__all__ = [
    "_BACKENDS",
    "_BACKENDS_LOCK",
    "_Backend",
    "Model",
    "Stream",
    "Streams",
    "available_backends",
    "get_backend",
    "load",
]
