"""Parsing and validation of the ``{prefix}/{device}/in`` payloads (JSON objects).

``{"seq": n, "x": [...]}`` one sample; ``{"seq": n, "X": [[...], ...]}`` several, in order;
``{"reset": true}`` (optionally with ``seq``, and with ``x``/``X`` to restart then step). Anything else is
refused with a one-line reason, before any state is touched.
"""

from __future__ import annotations

import json
import math
from dataclasses import dataclass

import numpy as np

_KEYS = {"seq", "x", "X", "reset"}
_F32_MAX = float(np.finfo(np.float32).max)
MAX_SAMPLES = 4096  #: samples per message
MAX_SEQ = (1 << 63) - 1


class PayloadError(ValueError):
    """A payload that cannot be applied; the message says why, ``seq`` is the payload's if it had one."""

    def __init__(self, msg: str, seq: int | None = None):
        super().__init__(msg)
        self.seq = seq


@dataclass
class Request:
    """A valid input message: ``X`` (k, input_size) float32 (k = 0 for a reset alone)."""

    seq: int | None
    X: np.ndarray
    single: bool  # answered with "y" (one sample sent as "x") rather than "Y"
    reset: bool
    raw: str  # the payload as received (kept in snapshots while the request waits)
    Y: np.ndarray | None = None  # the outputs, once applied


def _number_row(row, i: int, width: int, tokens: int) -> list[float]:
    if not isinstance(row, list):
        raise ValueError(f"sample {i} is not a list of numbers")
    if len(row) != width:
        raise ValueError(f"sample {i} has {len(row)} values, the model takes {width}")
    for v in row:
        if type(v) not in (int, float):
            raise ValueError(f"sample {i} has a non-number value {v!r}")
        if not math.isfinite(v):
            raise ValueError(f"sample {i} has a non-finite value {v!r}")
        if abs(v) > _F32_MAX:
            raise ValueError(f"sample {i} has a value beyond the float32 range")
        if tokens and not (0 <= v < tokens and v == int(v)):
            raise ValueError(f"sample {i}: token id {v!r} is not an integer in [0, {tokens})")
    return row


def parse(raw: bytes | str, input_size: int, vocab: int = 0) -> Request:
    """A :class:`Request` from a raw payload, or :class:`PayloadError`."""
    if isinstance(raw, str):
        raw = raw.encode()
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError) as e:
        raise PayloadError(f"payload is not JSON: {e}") from None
    if not isinstance(obj, dict):
        raise PayloadError(f"payload must be a JSON object, got {type(obj).__name__}")
    seq = obj.get("seq")
    if seq is not None and (type(seq) is not int or not 0 <= seq <= MAX_SEQ):
        raise PayloadError(f"seq must be an integer in [0, 2**63), got {seq!r}")
    unknown = sorted(set(obj) - _KEYS)
    if unknown:
        raise PayloadError(f"unknown fields {unknown}; expected seq, x or X, reset", seq)
    reset = obj.get("reset", False)
    if type(reset) is not bool:
        raise PayloadError(f"reset must be true or false, got {reset!r}", seq)
    if "x" in obj and "X" in obj:
        raise PayloadError("give x (one sample) or X (several), not both", seq)
    if "x" not in obj and "X" not in obj:
        if not reset:
            raise PayloadError("payload has no samples: give x, X or reset", seq)
        return Request(seq, np.zeros((0, input_size), np.float32), False, True, raw.decode())
    if seq is None:
        raise PayloadError("samples need a seq (an integer, increasing per device)")
    try:
        if "x" in obj:
            x = obj["x"]
            if input_size == 1 and type(x) in (int, float):
                x = [x]
            rows = [_number_row(x, 0, input_size, vocab)]
        else:
            X = obj["X"]
            if not isinstance(X, list) or not X:
                raise ValueError("X must be a non-empty list of samples")
            if len(X) > MAX_SAMPLES:
                raise ValueError(f"X has {len(X)} samples, at most {MAX_SAMPLES} per message")
            rows = [_number_row(r, i, input_size, vocab) for i, r in enumerate(X)]
    except ValueError as e:
        raise PayloadError(str(e), seq) from None
    X = np.asarray(rows, np.float32).reshape(len(rows), input_size)
    return Request(seq, X, "x" in obj, reset, raw.decode())


def answer_seq(raw: bytes) -> int | None:
    """The seq of a payload seen on an ``/out`` topic (the echo of an answer), or None."""
    try:
        obj = json.loads(raw)
    except (ValueError, UnicodeDecodeError):
        return None
    seq = obj.get("seq") if isinstance(obj, dict) else None
    return seq if type(seq) is int else None
