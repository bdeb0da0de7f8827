"""Samples from text, one per line: the reader behind ``edgernn run`` and ``examples/device_loop.py``.

Rules (nothing is dropped silently; every refusal is an :class:`~edgernn.InputError` naming the file line,
1-based as an editor shows it):

* blank lines and lines starting with ``#`` are skipped;
* a header is recognised only as the first other line, and only when none of its fields is a number
  (nor numbers joined by another separator, as ``1;2`` read comma-separated);
  a non-numeric line anywhere else, or a first line mixing names and numbers, is an error;
* the separator is given (``delimiter``: ``","``, ``";"``, ``"\\t"``, ``" "`` for any whitespace) or
  detected on the first data line (the first with two values or more): ``;`` if present, else a tab,
  else ``,``, else whitespace;
* every row must have ``width`` values (or, without ``width``, as many as the first row); an empty field
  (``1,,2``, a trailing separator) is an error.

Reads its input line by line (a pipe from a sensor yields each sample as soon as its line arrives).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Iterator

import numpy as np

from .errors import InputError

#: the names ``delimiter`` accepts, and what each splits on (None: runs of whitespace)
DELIMITERS = {",": ",", ";": ";", "\t": "\t", "tab": "\t", " ": None, "space": None, "whitespace": None}


def _number(s: str) -> bool:
    try:
        float(s)
    except ValueError:
        return False
    return True


def _numbers_joined(field: str) -> bool:
    """``1\t2\t3`` read with the wrong separator: numbers only, joined by another separator."""
    tokens = re.split(r"[\s,;]+", field.strip())
    return len(tokens) > 1 and all(_number(t) for t in tokens)


def _detect(line: str) -> str | None:
    for sep in (";", "\t", ","):
        if sep in line:
            return sep
    return None


def _split(line: str, sep: str | None) -> list[str]:
    return line.split() if sep is None else [f.strip() for f in line.split(sep)]


def _sep_name(sep: str | None) -> str:
    return {None: "whitespace", "\t": "tab", ",": "comma", ";": "semicolon"}[sep]


def read_rows(
    lines: Iterable[str], width: int | None = None, delimiter: str | None = None, what: str = "line"
) -> Iterator[tuple[int, np.ndarray]]:
    """Yield ``(line_number, x)`` for each sample line: x float32 (width,), line_number 1-based.

    ``lines``: an open text file, ``sys.stdin`` or any iterable of strings. ``width``: the number of
    values each row must hold (the model's ``input_size``). ``delimiter``: one of :data:`DELIMITERS`
    (None: detect it on the first data line). ``what`` prefixes each error (``"line"`` gives
    ``line 51: ...``; pass ``"data.csv line"`` to name the file too). Raises :class:`InputError`.
    """
    if delimiter is not None and delimiter not in DELIMITERS:
        raise InputError(f"delimiter must be one of {sorted(DELIMITERS)}, got {delimiter!r}")
    sep = DELIMITERS[delimiter] if delimiter is not None else None
    expect = "the model takes" if width is not None else "expected"
    first = True
    detect = delimiter is None
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line or line.startswith("#"):
            continue
        if detect:  # on the first line, again after a header, and until a line shows a separator
            sep = _detect(line)
        fields = _split(line, sep)
        if first:
            first = False
            if not any(_number(f) or _numbers_joined(f) for f in fields):
                continue  # the header: names only
        detect = detect and len(fields) == 1  # one value alone ("0.5") does not show the separator
        values = []
        for k, f in enumerate(fields, 1):
            if not f:
                raise InputError(f"{what} {lineno}: field {k} is empty ({_sep_name(sep)}-separated)")
            try:
                values.append(float(f))
            except ValueError:
                hint = ""
                if sep == ";" and "," in f:
                    hint = " (a decimal comma? write 0.5, not 0,5)"
                elif sep is None or sep not in line:
                    hint = f" (separator: {_sep_name(sep)}; give another with --delimiter)"
                raise InputError(f"{what} {lineno}: field {k} {f[:40]!r} is not a number{hint}") from None
        if width is None:
            width = len(values)
        if len(values) != width:
            raise InputError(
                f"{what} {lineno}: {len(values)} values, {expect} {width} ({_sep_name(sep)}-separated)"
            )
        yield lineno, np.asarray(values, np.float32)
