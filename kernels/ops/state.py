"""``state``: a state slot of the stream, for a step graph whose state is computed by any ops (ONNX
state inputs read by arithmetic: a causal convolution's history ``Concat(hist, x)``, an RNN written as
MatMul/Add/Tanh, a moving average, a counter, a delay line)::

    at the start of step t:  y_t = s              (the op's output: the slot's value before the step)
    at the end of step t:    s   = v_t            (v = the value named by the field ``next``)

The op reads no value; its output (``size`` n = output_size) is an ordinary value any op may read, and
every read of it in a step sees the value from before the step. After every op of the step has run, the
slot takes the value ``next`` names (written by any op of the graph, or the model input itself), so the
write-back closes the loop without a cycle in the graph. The slot is stream state: zeros after ``reset``
(or the optional tensor ``initial`` [n]), covered by the overflow guard, one per stream in
``streams(n)``. A model holding a state op streams step by step (``run`` and ``predict`` step too).

Packed record: ``R_IN`` is the offset of the ``next`` value (the packer resolves the name), ``R_ST`` the
slot; :func:`emit_write`/:func:`numpy_write` are the end-of-step copies the kernels append.
"""

from __future__ import annotations

import numpy as np

from .. import layout as L
from ._emit import Code, fill
from .record import Layer

KIND = L.K_STATE
NAME = "state"
RECURRENT = False
#: reads no value when it runs (``next`` is read at the end of the step, by :func:`emit_write`)
INPUTS = 0
LANES = True


def check(where: str, layer: dict, P) -> int:
    """``next`` must be a value name (checked against the graph by ``edgernn.plan_graph``); the slot has
    input_size = output_size values."""
    nxt = layer.get("next")
    if not isinstance(nxt, str) or not nxt:
        raise P._fail("bad field", f"{where}: 'next' must name the value written back, got {P._short(nxt)}")
    return layer["input_size"]


def tensor_specs(layer: dict) -> dict:
    """Optional ``initial`` [n]: the slot's value after ``reset`` (zeros without it)."""
    return {"initial": ((layer["output_size"],), False)}


def check_values(where: str, layer: dict, roles: dict, tensors: dict, P) -> None:
    """Nothing beyond the shapes and finiteness the loader checks."""


def state(layer: dict) -> tuple[tuple[str, int], ...]:
    """The slot: n values."""
    return (("slot", layer["output_size"]),)


def initial(layer: dict, tensor) -> np.ndarray:
    """The slot after reset: the ``initial`` tensor, or zeros (``tensor``: role -> array or None)."""
    t = tensor("initial")
    n = layer["output_size"]
    return np.zeros(n, np.float32) if t is None else np.asarray(t, np.float32).reshape(n)


def pack(layer: dict, ctx) -> None:
    """Nothing in wf: the slot is the op's state (its value after reset: :func:`initial`), the write-back
    source its record's input offset."""
    ctx.init_state(0, initial(layer, ctx.tensor))


def scratch(layer: dict) -> int:
    """No scratch."""
    return 0


def emit_apply(c: Code, lay: Layer, x: str | None, y: str) -> None:
    """y = the slot (its value from before the step)."""
    fill(c, y, 0, lay.nout, "M", lay.state_off)


def emit_write(c: Code, lay: Layer, src: str) -> None:
    """The end of the step: slot = src (the ``next`` value)."""
    fill(c, "M", lay.state_off, lay.nout, src, 0)


def numpy_apply(lay: Layer, wf, wb, M, x):
    """The numpy implementation: a copy of the slot."""
    return M[lay.state_off : lay.state_off + lay.nout].copy()


def numpy_write(lay: Layer, M, src) -> None:
    """The end of the step in numpy: slot = src."""
    M[lay.state_off : lay.state_off + lay.nout] = np.asarray(src, np.float32)
