"""What the graph ops (``gather``, ``conv1d``, ``binary``, ``unary``) share: the plan-field helpers.

A graph op module is the single owner of its kind; it defines ``KIND``, ``NAME``, ``RECURRENT`` (False),
``INPUTS`` (1 or 2), and

* ``check(where, layer, P) -> int``: validate and normalize the op's fields in place (``P`` is
  :mod:`edgernn.plan`, whose ``_int``/``_num``/``_fail`` helpers make the named errors); returns the
  number of values the op produces per step;
* ``tensor_specs(layer) -> {role: (shape, required)}``;
* the packing hooks of every op kind (``state``, ``scratch``, ``pack``, ``check_values``: see ``_pack``);
* ``emit_apply(c, lay, x, y)`` (or ``emit_apply2(c, lay, x, x2, y)`` for two inputs) and the matching
  ``numpy_apply(lay, wf, wb, M, x)`` / ``numpy_apply2(lay, wf, wb, M, x, x2)``.
"""

from __future__ import annotations


def act_fields(where: str, layer: dict, P) -> None:
    """The ``activation``/``alpha``/``beta`` fields (the plan's activation names and defaults)."""
    P._act1(where, layer)
    if layer["activation"] == "softmax":
        raise P._fail("unknown activation", f"{where}: softmax is not an elementwise activation")


def choice(where: str, layer: dict, key: str, allowed: tuple[str, ...], P) -> str:
    """A string field that must be one of ``allowed``."""
    v = layer.get(key)
    if not isinstance(v, str) or v not in allowed:
        raise P._fail("bad field", f"{where}: '{key}' must be one of {', '.join(allowed)}, got {P._short(v)}")
    return v
