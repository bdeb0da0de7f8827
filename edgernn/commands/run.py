"""``edgernn run MODEL.ernn INPUT [-o OUT]``: stream samples through a model, one step per row.

INPUT is a ``.npy`` file (T, input_size), a text file (one sample per line), or ``-`` for stdin, read
line by line so each prediction is printed as soon as its sample arrives (a pipe from a sensor works).
Text rules (``edgernn/textrows.py``): ``#`` comments and blank lines are skipped; a header is only a
first line made of names alone; the separator (comma, semicolon, tab or whitespace) is detected on the
first data line or given with ``--delimiter``; any other line that is not exactly ``input_size`` numbers is an
error naming its line number (1-based, as an editor shows it), and the command exits non-zero.
"""

from __future__ import annotations

import argparse
import errno
import os
import sys

import numpy as np

HELP = "stream samples (.npy, .csv or - for stdin) through a .ernn model, one step per row"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn run``."""
    from ..textrows import DELIMITERS

    p.add_argument("model", help="the .ernn artifact")
    p.add_argument("input", help="samples: .npy (T, input_size), .csv, or - for stdin (one sample per line)")
    p.add_argument("-o", "--out", help="write outputs to this .npy or .csv file instead of stdout")
    p.add_argument("--backend", choices=["aot", "numba", "numpy"], help="force a backend")
    p.add_argument("--labels", action="store_true", help="print the arg-max label instead of the outputs")
    p.add_argument(
        "--delimiter",
        choices=sorted(DELIMITERS),
        default=None,
        metavar="SEP",
        help="separator of a text INPUT: ',', ';', tab or whitespace (default: detected on the first data "
        "line: ';' if present, else a tab, else ',', else whitespace)",
    )


def _rows(path: str, width: int, delimiter: str | None):
    """(where, x) per sample: ``where`` names the file line (text) or the array row (.npy)."""
    from ..errors import InputError
    from ..textrows import read_rows

    if path == "-":
        try:
            for lineno, x in read_rows(sys.stdin, width, delimiter, what="stdin line"):
                yield f"stdin line {lineno}", x
        except UnicodeDecodeError as e:
            raise InputError(f"stdin: not text ({e.reason} at byte {e.start})") from None
        return
    if path.endswith(".npy"):
        try:
            arr = np.load(path, allow_pickle=False)
        except ValueError as e:
            raise InputError(f"{path}: not a .npy array file: {e}") from None
        if arr.ndim == 1 and width == 1:
            arr = arr[:, None]
        if arr.ndim != 2:
            raise InputError(f"{path}: an array of shape (T, {width}) is needed, got {arr.shape}")
        for t, r in enumerate(arr):
            yield f"{path} row {t}", r
        return
    with open(path, encoding="utf-8", errors="strict") as f:
        try:
            for lineno, x in read_rows(f, width, delimiter, what=f"{path} line"):
                yield f"{path} line {lineno}", x
        except UnicodeDecodeError as e:
            raise InputError(f"{path}: not a text file ({e.reason} at byte {e.start})") from None


def run(args: argparse.Namespace) -> int:
    """Stream the rows through one stream; print or save the outputs."""
    import edgernn

    if args.input != "-" and not os.path.isfile(args.input):  # before the model loads (and compiles)
        code = errno.EISDIR if os.path.isdir(args.input) else errno.ENOENT
        raise OSError(code, os.strerror(code), args.input)
    model = edgernn.load(args.model, backend=args.backend)
    s = model.stream()
    labels = model.info["labels"]
    outs = []
    to_file = args.out is not None
    for where, x in _rows(args.input, model.input_size, args.delimiter):
        try:
            y = s.step(x)
        except edgernn.InputError as e:
            raise edgernn.InputError(f"{where}: {e}") from None
        if isinstance(y, tuple):  # several outputs: one row holds them all, in model.output_names order
            y = np.concatenate(y)
        if to_file:
            outs.append(y)
        elif args.labels:
            k = int(np.argmax(y[: model.output_size]))  # the labels are the first output's
            print(labels[k] if labels else k, flush=True)
        else:
            print(",".join(f"{v:.7g}" for v in y), flush=True)
    if to_file:
        Y = np.stack(outs) if outs else np.zeros((0, sum(model.output_sizes)), np.float32)
        if args.out.endswith(".npy"):
            np.save(args.out, Y)
        else:
            np.savetxt(args.out, Y, delimiter=",", fmt="%.7g")
    return 0
