"""``edgernn aot MODEL.ernn... [-o DIR]``: compile models' kernels into native modules, so a board needs no
numba.

Each model's generated kernels go into its own module ``_edgernn_m_<key>`` (written next to the model by
default, where the runtime looks).
"""

from __future__ import annotations

import argparse
import os
import sys
import time

HELP = "compile a model's kernels ahead of time into a native module (device runs without numba/LLVM)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """MODEL.ernn..., -o DIR, --cpu NAME, --nonfinite, --verbose."""
    parser.add_argument(
        "models",
        nargs="+",
        metavar="MODEL.ernn",
        help="models to compile, one module each (_edgernn_m_<key>*.so, used only for that model)",
    )
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="where to write the modules (default: next to each model). The runtime looks in "
        "$EDGERNN_AOT_DIR, then the model file's directory, then the edgernn package directory",
    )
    parser.add_argument(
        "--cpu",
        default="host",
        metavar="CPU",
        help="CPU to build for. 'host' (default): this machine's CPU and every instruction set extension "
        "it has (AVX2, AVX-512, NEON dot product...), as fast as the numba JIT; the runtime refuses such "
        "a module on another CPU (it falls back to numba/numpy). 'generic': the architecture's baseline "
        "(any x86-64, any aarch64), portable but slower per step. Or an LLVM CPU name (e.g. "
        "cortex-a72, x86-64-v3): its nominal features, not checked at load",
    )
    parser.add_argument(
        "--nonfinite",
        choices=("raise", "propagate"),
        default="raise",
        help="the nonfinite mode the models will be loaded with (edgernn.load's argument; default raise): "
        "each mode has its own generated kernels",
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler and linker commands")


def run(args: argparse.Namespace) -> int:
    """Build the modules, check each loads and matches its model; print where they are."""
    import edgernn

    from .. import aot, aot_model
    from ..errors import EdgeRNNError

    for m in args.models:
        if not os.path.isfile(m):
            print(f"edgernn aot: error: {m}: no such file", file=sys.stderr)
            return 1
    print(
        f"edgernn aot: compiling step, step_batch and seq of {len(args.models)} model(s) "
        f"for the {args.cpu} CPU..."
    )
    dirs = set()
    for model in args.models:
        t0 = time.perf_counter()
        path = aot_model.build(
            model, args.output, cpu=args.cpu, nonfinite=args.nonfinite, verbose=args.verbose
        )
        dt = time.perf_counter() - t0
        info = aot.describe(path)
        print(
            f"wrote {path} ({info['bytes'] / 1e6:.1f} MB, {info['machine']}, {info['python']}) in {dt:.0f} s"
        )
        if not info["matches_kernels"]:
            print(f"edgernn aot: error: the module does not load: {info['problem']}", file=sys.stderr)
            return 1
        if os.path.dirname(path) in aot_model.search_dirs(model):
            try:  # the runtime's own lookup picks it for this model
                m = edgernn.load(model, backend="aot", nonfinite=args.nonfinite)
            except EdgeRNNError as e:
                print(
                    f"edgernn aot: error: the runtime does not use the module for {model}: {e}",
                    file=sys.stderr,
                )
                return 1
        dirs.add(os.path.dirname(path))
    print(f"target CPU: {info['cpu']}")
    for d in sorted(dirs):
        if args.output:
            print(f"the runtime finds it with: export EDGERNN_AOT_DIR={d}")
    print("edgernn.load(...).info['backend'] is now 'aot' (numpy + safetensors at run time, no numba)")
    return 0
