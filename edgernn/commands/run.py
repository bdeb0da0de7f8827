"""``edgernn run MODEL.ernn INPUT [-o OUT]``: stream samples through a model, one step per row.

INPUT is a ``.npy`` file (T, input_size), a CSV file (one sample per line, comma or whitespace
separated; a header line is skipped), or ``-`` for stdin, read line by line so each prediction is
printed as soon as its sample arrives (a pipe from a sensor works).
"""

from __future__ import annotations

import argparse
import sys

import numpy as np

HELP = "stream samples (.npy, .csv or - for stdin) through a .ernn model, one step per row"


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn run``."""
    p.add_argument("model", help="the .ernn artifact")
    p.add_argument("input", help="samples: .npy (T, input_size), .csv, or - for stdin (one sample per line)")
    p.add_argument("-o", "--out", help="write outputs to this .npy or .csv file instead of stdout")
    p.add_argument("--backend", choices=["aot", "numba", "numpy"], help="force a backend")
    p.add_argument("--labels", action="store_true", help="print the arg-max label instead of the outputs")


def _parse_line(line: str) -> list[float] | None:
    s = line.strip()
    if not s or s.startswith("#"):
        return None
    parts = s.replace(",", " ").split()
    try:
        return [float(v) for v in parts]
    except ValueError:
        return None  # a header line


def _rows(path: str):
    if path == "-":
        for line in sys.stdin:
            row = _parse_line(line)
            if row is not None:
                yield np.asarray(row, np.float32)
        return
    if path.endswith(".npy"):
        arr = np.load(path, allow_pickle=False)
        yield from (np.asarray(r, np.float32).reshape(-1) for r in (arr if arr.ndim > 1 else arr[:, None]))
        return
    with open(path) as f:
        for line in f:
            row = _parse_line(line)
            if row is not None:
                yield np.asarray(row, np.float32)


def run(args: argparse.Namespace) -> int:
    """Stream the rows through one stream; print or save the outputs."""
    import edgernn

    model = edgernn.load(args.model, backend=args.backend)
    s = model.stream()
    labels = model.info["labels"]
    outs = []
    to_file = args.out is not None
    for t, x in enumerate(_rows(args.input)):
        try:
            y = s.step(x)
        except edgernn.InputError as e:
            raise edgernn.InputError(f"row {t}: {e}") from None
        if to_file:
            outs.append(y)
        elif args.labels:
            k = int(np.argmax(y))
            print(labels[k] if labels else k, flush=True)
        else:
            print(",".join(f"{v:.7g}" for v in y), flush=True)
    if to_file:
        Y = np.stack(outs) if outs else np.zeros((0, model.output_size), np.float32)
        if args.out.endswith(".npy"):
            np.save(args.out, Y)
        else:
            np.savetxt(args.out, Y, delimiter=",", fmt="%.7g")
    return 0
