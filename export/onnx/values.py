"""Shape/value tracking: what every value of the ONNX graph is while it is evaluated symbolically.

* :class:`Const`: initializers, ``Constant`` outputs and everything folded from them;
* :class:`ShapeVal`: the output of ``Shape`` and of arithmetic on it, entries int or :class:`Sym`;
* :class:`Bcast`: a constant broadcast over a shape with symbolic dims (the zero initial state the
  exporters build from the batch size);
* :class:`State`: a value derived only from a state graph input (kept by the stream at run time);
* :class:`Data`: the activations flowing from the model's input, as an index map into the output vector
  of the plan built so far;
* :class:`Multi`: a Concat of data values, only usable by a Gather/Slice picking inside one part;
* :class:`QScale`/:class:`QZero`: the scale and zero point outputs of ``DynamicQuantizeLinear``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import numpy as np

from .errors import CompileError, where

__all__ = [
    "INT_BIG",
    "Bcast",
    "Const",
    "Data",
    "Multi",
    "QScale",
    "QZero",
    "ShapeVal",
    "State",
    "Sym",
    "TimePadded",
    "axes_desc",
    "feat_index",
    "ints",
    "is_identity",
    "last_step",
    "select",
    "shape_like",
    "shapeval",
    "state_code",
    "whole_features",
]

#: clamp for Slice ends (ONNX writes INT64_MAX for "to the end")
INT_BIG = 2**62


class Sym:
    """A symbolic (run-time sized) axis of the input: the batch or the time axis."""

    def __init__(self, name: str, static: int | None = None):
        self.name = name
        self.static = static  # the size declared in the graph input, if any (a hint, never trusted)
        self.role: str | None = None  # "T" | "B" | None (not yet known)

    def __repr__(self) -> str:
        return f"Sym({self.name}{'/' + self.role if self.role else ''})"

    def __mul__(self, other: Any) -> Any:
        if isinstance(other, (int, np.integer)) and int(other) == 1:
            return self
        raise CompileError(f"arithmetic on the symbolic axis {self.name} ({self} * {other!r})")

    __rmul__ = __mul__


@dataclass
class Const:
    arr: np.ndarray


@dataclass
class ShapeVal:
    """A 0-d or 1-d integer tensor some of whose entries are symbolic axes (an object array)."""

    arr: np.ndarray


@dataclass
class Bcast:
    """A constant broadcast over a shape with symbolic dims: ``arr`` has size 1 on every symbolic dim."""

    arr: np.ndarray
    dims: list


@dataclass
class State:
    """A value derived only from a state graph input (the stream keeps the state at run time).

    ``ix`` is a :class:`Bcast` of the flat positions (batch axis collapsed) of the state input each
    element comes from, or None when the plumbing could not be followed.
    """

    src: str
    ix: Any = None


@dataclass
class Data:
    """The activations. ``axes``: Sym or int per axis; features = row-major flatten of the int axes.

    Feature k of this value is output ``perm[k]`` of the plan built so far (``pos`` layers); ``bad[k]``
    marks a feature the plan cannot produce (a reverse final state, a cell state).
    """

    axes: list
    perm: np.ndarray
    bad: np.ndarray
    pos: int
    last: bool = False
    step: bool = False  # time runs one step per call (a step graph)
    tokens: bool = False
    why: str = ""
    quant: str | None = None  # "q" (DynamicQuantizeLinear output), "int" (MatMulInteger result, unscaled)
    #: a recurrent node's Y_h over a time axis: the position of that node's output, whose reverse units
    #: (marked ``bad`` until then) a ``final`` op selects at their last step, time 0, when they are used
    #: (:meth:`~.plan.PlanBuilder.resolve_final`)
    fin: int | None = None


@dataclass
class Multi:
    """A Concat of data values along an int axis; only Gather/Slice picking inside one part may use it."""

    parts: list
    axis: int

    def locate(self, idx: np.ndarray, node) -> tuple[Any, np.ndarray]:
        """The part that indices ``idx`` (along the Concat axis) fall in, and the indices inside it."""
        sizes = [p.axes[self.axis] for p in self.parts]
        total = sum(sizes)
        idx = np.where(idx < 0, idx + total, idx)
        starts = np.cumsum([0] + sizes)
        which = {int(np.searchsorted(starts, i, side="right") - 1) for i in idx.ravel()}
        if len(which) != 1 or np.any(idx < 0) or np.any(idx >= total):
            raise CompileError(f"{where(node)}: selects across parts of a Concat of data-dependent tensors")
        k = which.pop()
        return self.parts[k], idx - starts[k]


@dataclass
class TimePadded:
    """``data`` zero-padded by ``left`` steps at the start of its time axis (a causal convolution's input):
    only ``Conv`` over time may use it, as its left padding."""

    data: Data
    left: int


@dataclass
class QScale:
    """``scale`` output of DynamicQuantizeLinear times a constant ``coef`` (per output column or scalar)."""

    coef: np.ndarray = field(default_factory=lambda: np.ones((), np.float32))


@dataclass
class QZero:
    """``zero_point`` output of DynamicQuantizeLinear."""


# ---------------------------------------------------------------------------------------------- helpers


def is_identity(perm: np.ndarray, n: int) -> bool:
    """``perm`` is exactly 0..n-1."""
    return len(perm) == n and bool(np.all(perm == np.arange(n)))


def shapeval(arr) -> Const | ShapeVal:
    """An integer array (or scalar) whose entries may be :class:`Sym`: a Const when none is."""
    if not isinstance(arr, np.ndarray):
        a = np.empty((), dtype=object)
        a[()] = arr
        arr = a
    if all(isinstance(x, (int, np.integer)) for x in arr.ravel()):
        return Const(arr.astype(np.int64))
    return ShapeVal(arr)


def shape_like(v, node) -> list:
    """A shape operand (constant or computed from shapes) as a list of int / :class:`Sym`."""
    if isinstance(v, Const):
        return [int(x) for x in np.asarray(v.arr).ravel()]
    if isinstance(v, ShapeVal):
        return [x if isinstance(x, Sym) else int(x) for x in v.arr.ravel()]
    raise CompileError(f"{where(node)}: the shape operand must be constant or computed from shapes")


def ints(v, node, what: str) -> np.ndarray | None:
    """A constant integer operand (None when absent); anything else is an error naming ``what``."""
    if v is None:
        return None
    if isinstance(v, Const):
        return np.asarray(v.arr).astype(np.int64)
    raise CompileError(f"{where(node)}: {what} must be constant")


def feat_index(v: Data) -> tuple[np.ndarray, list[int]]:
    """Index array over the feature axes (shape = the int axes) and the positions of those axes."""
    pos = [k for k, d in enumerate(v.axes) if not isinstance(d, Sym)]
    shape = [v.axes[k] for k in pos]
    return np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape), pos


def select(v: Data, idx: np.ndarray, axes: list, **kw) -> Data:
    """``v`` with its features re-indexed by ``idx`` (an array from :func:`feat_index`) and new axes."""
    flat = idx.ravel()
    last = kw.get("last", v.last)
    return Data(axes, v.perm[flat], v.bad[flat], v.pos, last, v.step, v.tokens, v.why, v.quant, v.fin)


def whole_features(v: Data, node) -> int:
    """Check the features all sit on the last axis (other int axes size 1); return their count."""
    if not v.axes or isinstance(v.axes[-1], Sym):
        raise CompileError(f"{where(node)}: the last axis is not a feature axis")
    others = [d for d in v.axes[:-1] if not isinstance(d, Sym)]
    if any(d != 1 for d in others):
        raise CompileError(
            f"{where(node)}: operates on the last axis ({v.axes[-1]}) but the features span axes {v.axes}"
        )
    return v.axes[-1]


def last_step(d: Sym, node) -> None:
    """Selecting the last element of symbolic axis ``d``: it must be (and becomes) the time axis."""
    if d.role == "B":
        raise CompileError(f"{where(node)}: selecting one element of the batch axis")
    if d.role is None:
        d.role = "T"


def axes_desc(axes: list) -> list:
    """Axis roles for the io description: "T", "B", "N" (a symbolic axis of unknown role) or a size."""
    return [(d.role or "N") if isinstance(d, Sym) else int(d) for d in axes]


def state_code(layer: int, which: str, unit: np.ndarray) -> np.ndarray:
    """An integer naming (layer, h|c, unit) for the state wiring check."""
    return (layer * 2 + (which == "c")) * (1 << 24) + unit
