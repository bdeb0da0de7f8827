"""The registry of op handlers, by ONNX op type.

A handler is ``handler(cx, node, vals, at) -> value | list[value]``: ``cx`` is the
:class:`~..compiler.Compiler` (its value table ``cx.env``, the plan being built ``cx.plan``, ``cx.notes``,
``cx.opset``), ``node`` the ONNX node, ``vals`` the values of its inputs (None for an absent optional
input), ``at`` its attributes. It returns the values of the node's outputs (one, or a list in output
order) and appends whatever plan layers they need through ``cx.plan``.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

__all__ = ["OPS", "PLUMBING", "Handler", "handler", "register"]

Handler = Callable[[Any, Any, list, dict], Any]

#: op type -> handler
OPS: dict[str, Handler] = {}
#: ops that only move values around (no arithmetic): a state value may flow through them, and the
#: state-wiring check follows them. ``Constant`` is evaluated by the compiler itself.
PLUMBING: set[str] = {"Constant"}


def register(*op_types: str, plumbing: bool = False) -> Callable[[Handler], Handler]:
    """Decorator: ``fn`` handles ``op_types``; ``plumbing`` marks them as value plumbing."""

    def deco(fn: Handler) -> Handler:
        for t in op_types:
            if t in OPS:
                raise RuntimeError(f"two handlers for ONNX op {t!r}")
            OPS[t] = fn
            if plumbing:
                PLUMBING.add(t)
        return fn

    return deco


def handler(op_type: str) -> Handler | None:
    """The handler registered for ``op_type``, or None."""
    return OPS.get(op_type)
