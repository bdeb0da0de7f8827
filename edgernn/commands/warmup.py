"""``edgernn warmup [MODEL.ernn ...]``: compile the numba kernels once into the kernel cache directory.

With model files, each model's generated kernels (step, chunk run, and its many-stream kernel) are
compiled. Every kernel is generated for one model, so without model files there is nothing to compile:
the command only checks and prepares the cache directory.

On a board, run it once after installing (or as part of the image build) with the cache directory the
device will use; later processes then load the compiled kernels instead of compiling them (seconds to
minutes on a small CPU). The directory is ``--cache-dir``, else ``$EDGERNN_CACHE_DIR``, else
``$NUMBA_CACHE_DIR``, else ``~/.cache/edgernn``; the kernels go into a per-version subdirectory. It must
be private (not writable by group or others, owned by this user): numba unpickles its cache index.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HELP = "compile the kernels ahead of time into the kernel cache directory"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``[MODEL.ernn ...] --cache-dir DIR``."""
    parser.add_argument("models", nargs="*", metavar="MODEL.ernn", help="models whose kernels to compile")
    parser.add_argument(
        "--cache-dir",
        metavar="DIR",
        help="kernel cache directory (default: $EDGERNN_CACHE_DIR, $NUMBA_CACHE_DIR, ~/.cache/edgernn)",
    )


def run(args: argparse.Namespace) -> int:
    """Compile (or load) every kernel entry point with caching on; returns the exit code."""
    if args.cache_dir:
        wanted = os.path.abspath(args.cache_dir)
        loaded = sys.modules.get("edgernn.kernels.config")
        if loaded is not None and not loaded.CACHE_DIR.startswith(wanted + os.sep):
            print("edgernn warmup: error: set EDGERNN_CACHE_DIR instead of --cache-dir here", file=sys.stderr)
            return 2
        os.environ["EDGERNN_CACHE_DIR"] = wanted
    import warnings

    with warnings.catch_warnings():  # the problem is reported below as the error
        warnings.simplefilter("ignore")
        from ..kernels import config

    if config.DISABLE_JIT:
        print(
            "edgernn warmup: error: JIT is disabled (EDGERNN_DISABLE_JIT/NUMBA_DISABLE_JIT)", file=sys.stderr
        )
        return 1
    if not config.HAVE_NUMBA:
        print("edgernn warmup: error: numba is not installed", file=sys.stderr)
        return 1
    if not config.CACHE:
        print(f"edgernn warmup: error: no usable kernel cache: {config.CACHE_PROBLEM}", file=sys.stderr)
        return 1
    t0 = time.perf_counter()
    import numpy as np

    from ..runtime import load

    models = [load(path, backend="numba") for path in args.models]  # validates every file first
    for m in models:  # step is compiled by load; the chunk and many-stream kernels on first use
        X = np.zeros((1, m.input_size), np.float32)
        m.predict(X)
        if m.info["streamable"]:
            m.streams(2).step(np.zeros((2, m.input_size), np.float32))
    dt = time.perf_counter() - t0
    n = sum(len(files) for _, _, files in os.walk(config.CACHE_DIR))
    what = f"{len(models)} model(s)' kernels" if models else "no model given (kernels are per model); cache"
    print(f"{what} ready in {config.CACHE_DIR} ({n} cache files, {dt:.1f} s)")
    return 0
