"""``edgernn aot [-o DIR]``: compile the kernels into a native module, so a board needs no numba."""

from __future__ import annotations

import argparse
import os
import time

HELP = "compile the kernels ahead of time into a native module (device runs without numba/LLVM)"


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """-o DIR (default: inside the installed edgernn package), --cpu NAME, --verbose."""
    parser.add_argument(
        "-o",
        "--output",
        metavar="DIR",
        default=None,
        help="where to write _edgernn_aot*.so (default: the edgernn package directory, where the "
        "runtime finds it; elsewhere, point EDGERNN_AOT_DIR at DIR on the device)",
    )
    parser.add_argument(
        "--cpu",
        default="host",
        metavar="CPU",
        help="CPU to build for. 'host' (default): this machine's CPU and every instruction set extension "
        "it has (AVX2, AVX-512, NEON dot product...), as fast as the numba JIT; the runtime refuses such "
        "a module on another CPU (it falls back to numba/numpy). 'generic': the architecture's baseline "
        "(any x86-64, any aarch64), portable but about 1.5x slower per step. Or an LLVM CPU name (e.g. "
        "cortex-a72, x86-64-v3): its nominal features, not checked at load",
    )
    parser.add_argument("--verbose", action="store_true", help="show the compiler and linker commands")


def run(args: argparse.Namespace) -> int:
    """Build the module, check it loads and matches the kernel sources; print where it is."""
    from .. import aot

    t0 = time.perf_counter()
    print(
        f"edgernn aot: compiling step, step_batch and seq for the {args.cpu} CPU (about a minute; longer "
        "on a small board)..."
    )
    path = aot.build(args.output, cpu=args.cpu, verbose=args.verbose)
    dt = time.perf_counter() - t0
    info = aot.describe(path)
    print(f"wrote {path} ({info['bytes'] / 1e6:.1f} MB, {info['machine']}, {info['python']}) in {dt:.0f} s")
    print(f"target CPU: {info['cpu']}")
    if not info["matches_kernels"]:
        print(f"edgernn aot: error: the module does not load: {info['problem']}")
        return 1
    pkg = aot.package_dir()
    if os.path.dirname(path) != pkg:
        print(f"the runtime finds it with: export EDGERNN_AOT_DIR={os.path.dirname(path)}")
    print("edgernn.load(...).info['backend'] is now 'aot' (numpy + safetensors at run time, no numba)")
    return 0
