"""Streams of a loaded model: :class:`Stream` (one state, ``step`` per sample, ``run`` per chunk) and
:class:`Streams` (n states advanced by one call, for servers: rows, reset, resize, per-row state).

Each owns float32 buffers laid out by the packer (``edgernn.pack``): state, scratch and output in one
row per stream, so a step is one kernel call that allocates nothing.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import numpy as np

from .errors import InputError

if TYPE_CHECKING:
    from .runtime import Model


def _state_vector(value: Any, n: int) -> np.ndarray:
    """``value`` as one stream's state: finite floats of shape (n,), or :class:`InputError`."""
    v = np.asarray(value)
    if v.shape != (n,) or v.dtype.kind != "f":
        raise InputError(f"state must be a float array of shape ({n},), got {v.dtype}{v.shape}")
    if not np.all(np.isfinite(v)):
        raise InputError("state has NaN/Inf values")
    return v


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
        self._M[: self._n_state] = _state_vector(value, self._n_state)

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
        prepare = getattr(model._backend, "prepare_batch", None)
        if prepare is not None:
            prepare(p)  # the JIT's GEMM panels into wf, for the first Streams of the model
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
        self._MB[r, : self._n_state] = _state_vector(value, self._n_state)

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
