"""The packing interface every op kind implements: the op module is the single owner of its plan fields,
its tensors' shapes, its stream state, its scratch, the layout of its tensors in its record, and the checks
of its tensors' values.

Every entry of the op registry (``kernels/ops/__init__.py``) defines

* ``check(where, layer, P) -> int``: validate and normalize the op's fields in place (defaults set with
  ``setdefault``; ``P`` is :mod:`edgernn.plan`, whose ``_int``/``_num``/``_bool``/``_acts``/``_act1``/
  ``_fail`` helpers make the named errors); returns the number of values the op produces per step. An op
  with ``TOKENS = True`` reads the model's tokens: the plan requires it first, with input_size 1;
* ``tensor_specs(layer) -> {role: (shape, required)}``: the tensors of the validated layer;
* ``state(layer) -> tuple[tuple[str, int], ...]``: the op's parts of the stream state, in order, as
  (name, number of float32 values): ``(("h", H), ("c", H))`` for an lstm, ``()`` for a stateless op. The
  packer places them one after the other at the op's state offset and names them ``<op name>.<part>``;
* ``scratch(layer) -> int``: float32 values of the scratch region of M the op's kernel uses (shared by
  all ops: the packer allocates the largest);
* ``pack(layer, ctx)``: fill the op's record through a :class:`PackContext` — matrices, vectors, flags,
  activation parameters, the initial state, and whether the op streams;
* ``check_values(where, layer, roles, tensors, P)``: refuse tensor values the kernels cannot run on (a
  CSR row pointer that is not one, a zero std) with ``P._fail`` (``P`` is :mod:`edgernn.plan`); the loader
  has checked shapes, dtypes and finiteness already.

``layer`` is a validated format-1 layer or the layer view of a format-2 op (``edgernn.plan.plan_layers``).
"""

from __future__ import annotations

import numpy as np


class PackContext:
    """The packer's services for one op's record (implemented by ``edgernn/pack.py``).

    Matrix descriptors, vector slots and record fields are addressed by the names of
    ``kernels/layout.py`` and of the op's own module (``recurrent.w_mat(d)``, ``esn.V_INDPTR``, ...)."""

    #: an int8 recurrent op whose fused float32 [W | R] block takes at most this many bytes per direction
    #: is packed as float32 (``edgernn.pack.dequantize_max_bytes``)
    dequantize_max_bytes: int = 0

    def tensor(self, role: str) -> np.ndarray | None:
        """The op's tensor of ``role`` as stored in the file (None when the plan gives none)."""
        raise NotImplementedError

    def dequantized(self, role: str) -> np.ndarray:
        """The tensor of ``role``, an int8 one as ``q · scale`` in float32 (a float one as it is)."""
        raise NotImplementedError

    def matrix(
        self, j: int, role: str, m: np.ndarray, d: int | None = None, dims: tuple[int, int, int] | None = None
    ) -> None:
        """Descriptor ``j`` <- the 2-D matrix ``m`` (float32, or int8 with the per-row scales of ``role``:
        row ``d`` of them for a per-direction tensor). ``dims`` (rows, cols, ld) describes a flat ``m``
        (CSR values) instead of its shape."""
        raise NotImplementedError

    def vector(self, slot: int, arr: np.ndarray) -> None:
        """Vector slot ``slot`` <- the float32 values ``arr`` (in ``wf``)."""
        raise NotImplementedError

    def index_vector(self, slot: int, arr: np.ndarray, dtype=np.int32) -> None:
        """Vector slot ``slot`` <- the integers ``arr`` as ``dtype`` (int32, or uint16) in ``wb``; the slot
        holds the offset in wb's view of that dtype."""
        raise NotImplementedError

    def aux(self, ints: list[int]) -> None:
        """The op's integer parameters (small ints stored as float32, ``Layer.aux``)."""
        raise NotImplementedError

    def params(
        self,
        acts: list[str],
        alphas: list[float] | None,
        betas: list[float] | None,
        clip: float | None = None,
        leak: float = 0.0,
        per_direction: int = 1,
    ) -> None:
        """The float parameter block: activation i of direction i // per_direction (ONNX names, alpha/beta
        or their defaults when None), the cell clip (None: none) and the leak rate."""
        raise NotImplementedError

    def set_flag(self, flag: int) -> None:
        """Set ``layout.F_*`` bit ``flag`` of the record."""
        raise NotImplementedError

    def set_field(self, field: int, value: int) -> None:
        """Record field ``field`` (a one-field ``layout.R_*`` name: ``R_H``, ``R_D``) <- ``value``."""
        raise NotImplementedError

    def set_offset(self, field: int, off: int) -> None:
        """Record offset field ``field`` (a two-field ``layout.R_*`` name: R_IN2, R_AUX) <- ``off``."""
        raise NotImplementedError

    def value_offset(self, name: str) -> int:
        """The offset in M of the format-2 value ``name`` (what an op writes back into its state from)."""
        raise NotImplementedError

    def init_state(self, offset: int, values: np.ndarray) -> None:
        """The state after reset(): ``values`` at ``offset`` within the op's state."""
        raise NotImplementedError

    def not_streamable(self, reason: str) -> None:
        """The op needs the whole sequence (``Model.predict`` only); ``reason`` says why, in one line."""
        raise NotImplementedError

    def seq_scratch(self, n: int) -> None:
        """The layer-by-layer sequence kernel needs ``n`` float32 values of its own scratch for this op."""
        raise NotImplementedError

    def mark(self, what: str) -> None:
        """Record that the op was packed in a changed form: ``"dequantized"`` (int8 packed as float32) or
        ``"dense_reservoirs"`` (a CSR reservoir packed dense); ``model.info`` reports them."""
        raise NotImplementedError


def no_state(layer: dict) -> tuple[tuple[str, int], ...]:
    """No stream state."""
    return ()


def no_scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def no_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes, dtypes and finiteness the loader checks."""


class Stateless:
    """The hooks of an op class with no state, no scratch and no values to check (it defines ``pack``)."""

    state = staticmethod(no_state)
    scratch = staticmethod(no_scratch)
    check_values = staticmethod(no_values)
