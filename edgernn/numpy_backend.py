"""The numpy backend: the model's op list run with each op's numpy implementation (``kernels/ops``).

Used when numba is missing or disabled (``NUMBA_DISABLE_JIT=1``/``EDGERNN_DISABLE_JIT=1``) or asked
for with ``load(..., backend="numpy")``. It reads the same packed buffers and keeps the same stream
state layout as the generated kernels, so states move freely between backends; activations are exact
(``np.tanh``), so results agree with the kernels within the fast activations' stated error.
Same entry points and status codes as the generated kernels (``kernels/codegen.py``): :func:`for_model`
decodes a packed model once and returns its ``step``, ``step_batch`` and ``seq``.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from .kernels import layout as L
from .kernels.ops import REGISTRY, recurrent, steps
from .kernels.ops.record import Header, Layer, read_header, read_layer

_F32 = np.dtype(np.float32)


def _require(a, ndim):
    if type(a) is not np.ndarray or a.dtype != _F32 or a.ndim != ndim or not a.flags.c_contiguous:
        raise TypeError("expects a C-contiguous float32 array")


class ModelFunctions:
    """``step``, ``step_batch`` and ``seq`` of one packed model, in numpy (contracts of the generated
    kernels: inputs checked before any state changes; the overflow guard restores the state)."""

    def __init__(self, wf: np.ndarray):
        self.head: Header = read_header(wf)
        self.layers: list[Layer] = [read_layer(wf, i) for i in range(self.head.n_layers)]
        self.ops = [REGISTRY[lay.kind] for lay in self.layers]
        #: optional ``trace(index, x, y)`` called after every layer of a step with its input and output
        #: (the host-side calibration of graph plans reads the values through it; None on the device)
        self.trace: Callable | None = None
        prev, self._chained = self.head.in_off, True
        for lay, op in zip(self.layers, self.ops, strict=True):
            if lay.in_off != prev or getattr(op, "INPUTS", 1) != 1:
                self._chained = False
            if getattr(op, "WRITES", False) and recurrent.writes(lay):
                self._chained = False  # its state is set at the end of each step: step by step
            prev = lay.out_off

    # ------------------------------------------------------------------------------- pieces
    def _check(self, x: np.ndarray) -> int:
        h = self.head
        if x.shape[0] != h.nin:
            return 1
        if h.vocab:
            t = float(x[0])
            return 0 if (0 <= t < h.vocab and t == int(t)) else 3
        if h.propagate:
            return 0
        return 0 if np.all(np.isfinite(x)) else 2

    def _run(self, x: np.ndarray, wf, wb, M: np.ndarray) -> None:
        out = x
        vals = {self.head.in_off: x}  # every value by its offset in M (a layer may read any earlier one)
        with np.errstate(over="ignore", invalid="ignore"):
            for lay, op in zip(self.layers, self.ops, strict=True):
                if getattr(op, "INPUTS", 1) == 0:  # a state slot: its value from before the step
                    out = vals[lay.out_off] = op.numpy_apply(lay, wf, wb, M, None)
                    if self.trace is not None:
                        self.trace(lay.index, None, out)
                    continue
                src = vals[lay.in_off]
                if getattr(op, "INPUTS", 1) == 2:
                    out = op.numpy_apply2(lay, wf, wb, M, src, vals[lay.in2_off])
                    vals[lay.out_off] = out
                    continue
                out = src
                if op.RECURRENT:
                    H, st = lay.hidden, lay.state_off
                    h = M[st : st + H]
                    c = M[st + H : st + 2 * H]
                    hn, cn = op.numpy_cell(lay, wf, wb, 0, out, h, c)
                    h[:] = hn
                    if op.NAME == "lstm":
                        c[:] = cn
                    out = np.concatenate([hn, cn]) if lay.has(L.F_CELL) else hn
                else:
                    out = op.numpy_apply(lay, wf, wb, M, out)
                vals[lay.out_off] = out
                if self.trace is not None:
                    self.trace(lay.index, src, out)
        for lay, op in zip(self.layers, self.ops, strict=True):
            if hasattr(op, "numpy_write"):  # the end of the step: each slot takes its next value
                op.numpy_write(lay, M, vals[lay.in_off])
            elif getattr(op, "WRITES", False):  # a recurrent state set from the graph (h_next/c_next)
                recurrent.numpy_write(lay, M, vals)
        o = self.head.out_off
        M[o : o + out.shape[0]] = out

    def run_layers(self, x: np.ndarray, wf, wb, M: np.ndarray) -> None:
        """One step of every layer on stream buffer M, x (I,) float32 not checked (host-side tools:
        :attr:`trace` sees each layer's input and output)."""
        self._run(x, wf, wb, M)

    def _finite(self, M: np.ndarray) -> bool:
        h = self.head
        return bool(
            np.isfinite(M[: h.n_state]).all() and np.isfinite(M[h.out_off : h.out_off + h.nout]).all()
        )

    @property
    def streamable(self) -> bool:
        """Whether every recurrent layer runs forward only and no op is sequence-only (``final``)."""
        return all(steps(lay) for lay in self.layers)

    # ------------------------------------------------------------------------- entry points
    def step(self, x, wf, wb, M) -> int:
        """Advance one stream by one step; returns a status."""
        _require(x, 1)
        if not self.streamable:
            return 5
        st = self._check(x)
        if st:
            return st
        ns = self.head.n_state
        saved = None if self.head.propagate else M[:ns].copy()
        self._run(x, wf, wb, M)
        if saved is not None and not self._finite(M):
            M[:ns] = saved
            return 4
        return 0

    def step_batch(self, X, wf, wb, MB) -> int:
        """Advance n streams (rows of MB); returns a status | row << 3. An overflow in any stream: none
        advances."""
        _require(X, 2)
        if not self.streamable:
            return 5
        if X.shape[0] != MB.shape[0]:
            return 1
        for i in range(X.shape[0]):
            st = self._check(X[i])
            if st:
                return st | (i << 3)
        ns = self.head.n_state
        saved = None if self.head.propagate else MB[:, :ns].copy()
        for i in range(X.shape[0]):
            self._run(X[i], wf, wb, MB[i])
        if saved is not None:
            for i in range(X.shape[0]):
                if not self._finite(MB[i]):
                    MB[:, :ns] = saved
                    return 4 | (i << 3)
        return 0

    def seq(self, X, wf, wb, M, Y, buf) -> int:
        """Run a chunk X (T, I) layer by layer into Y (T, O); continues the state in M."""
        _require(X, 2)
        for t in range(X.shape[0]):
            st = self._check(X[t])
            if st:
                return st | (t << 3)
        cur = [X[t] for t in range(X.shape[0])]
        T = len(cur)
        ns = self.head.n_state
        saved = None if self.head.propagate else M[:ns].copy()
        if not self._chained and self.streamable:  # a streamable graph: step by step
            for t in range(T):
                self._run(cur[t], wf, wb, M)
                o = self.head.out_off
                Y[t] = M[o : o + self.head.nout]
            cur = None
        vals = {self.head.in_off: cur}  # layer by layer: every value's rows by its offset in M
        with np.errstate(over="ignore", invalid="ignore"):
            for lay, op in zip(self.layers, self.ops, strict=True) if cur is not None else ():
                src = vals[lay.in_off]
                if op.RECURRENT:
                    cur = self._seq_recurrent(lay, op, src, wf, wb, M)
                elif hasattr(op, "numpy_seq"):  # reads other rows than its own (``final``)
                    cur = op.numpy_seq(lay, wf, wb, M, src)
                elif getattr(op, "INPUTS", 1) == 2:
                    cur = [
                        op.numpy_apply2(lay, wf, wb, M, a, b)
                        for a, b in zip(src, vals[lay.in2_off], strict=True)
                    ]
                else:
                    cur = [op.numpy_apply(lay, wf, wb, M, x) for x in src]
                vals[lay.out_off] = cur
            if cur is not None:
                cur = vals[self.head.out_off]
        for t in range(T if cur is not None else 0):
            Y[t] = cur[t]
        if saved is not None:
            bad = np.flatnonzero(~np.isfinite(Y).all(axis=1)) if T else []
            if len(bad) or not np.isfinite(M[:ns]).all():
                M[:ns] = saved
                return 4 | (int(bad[0] if len(bad) else T - 1) << 3)
        return 0

    @staticmethod
    def _seq_recurrent(lay: Layer, op, cur: list, wf, wb, M) -> list:
        H, D, st = lay.hidden, lay.directions, lay.state_off
        lstm = op.NAME == "lstm"
        T = len(cur)
        cells = lay.has(L.F_CELL)  # the output is [h_0..h_D-1; c_0..c_D-1]
        outs = np.zeros((T, (2 if cells else 1) * D * H), np.float32)
        for d in range(D):
            reverse = d == 1 or lay.has(L.F_REVERSE)
            if reverse:  # a fresh state from the initial-state slots
                h0, c0 = lay.vecs[recurrent.V_H0 + d], lay.vecs[recurrent.V_C0 + d]
                h = wf[h0 : h0 + H].copy()
                c = wf[c0 : c0 + H].copy() if lstm else None
            else:
                h = M[st : st + H].copy()
                c = M[st + H : st + 2 * H].copy() if lstm else None
            for t in range(T - 1, -1, -1) if reverse else range(T):
                h, c = op.numpy_cell(lay, wf, wb, d, cur[t], h, c)
                outs[t, d * H : (d + 1) * H] = h
                if cells:
                    outs[t, (D + d) * H : (D + d + 1) * H] = c
            if not reverse:
                M[st : st + H] = h
                if lstm:
                    M[st + H : st + 2 * H] = c
        return list(outs)


def for_model(wf: np.ndarray) -> tuple[Callable, Callable, Callable]:
    """(step, step_batch, seq) of the packed model ``wf``: the same contracts as the generated kernels."""
    f = ModelFunctions(wf)
    return f.step, f.step_batch, f.seq
