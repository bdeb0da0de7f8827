"""``edgernn bench MODEL.ernn``: latency, throughput, start-up and memory, next to ONNX Runtime and torch."""

from __future__ import annotations

import argparse
import os

HELP = "benchmark an .ernn model: per-step latency, streams throughput, cold start, memory (vs ORT/torch)"

BACKENDS = ("edgernn", "numpy", "onnxruntime", "onnxruntime-int8", "torch", "cpp")


def add_arguments(p: argparse.ArgumentParser) -> None:
    """Options of ``edgernn bench``."""
    p.add_argument("model", help="the .ernn artifact")
    p.add_argument(
        "--backends",
        default=None,
        help="comma-separated, among: edgernn (numba kernels), numpy (edgernn's numpy fallback), "
        "onnxruntime, onnxruntime-int8 (ORT's own dynamic quantization), torch, cpp (a plain C++ loop, "
        "compiled here with the system compiler). Default: edgernn plus onnxruntime (and onnxruntime-int8 "
        "for an int8 artifact) and torch when installed, and cpp for the models it covers (LSTM/GRU "
        "8->64, 8->256, ESN 8->500, each with a Dense head)",
    )
    p.add_argument(
        "--onnx",
        default=None,
        metavar="FILE.onnx",
        help="ONNX step graph for the onnxruntime column's steps and streams (x + states in, y + states "
        "out); default: MODEL.step.onnx beside the artifact, else one built from the artifact's weights. "
        "For a graph plan: the ONNX file it was compiled from (run with its recorded state pairs and "
        "bindings); default: that file beside the artifact when its sha256 matches the recorded one",
    )
    p.add_argument(
        "--onnx-seq",
        default=None,
        metavar="SEQ.onnx",
        help="ONNX sequence graph (batch, time, features) for the onnxruntime column's chunks; default: "
        "MODEL.onnx beside the artifact (as edgernn export writes it), else one built from the weights",
    )
    p.add_argument(
        "--checkpoint",
        default=None,
        help="PyTorch checkpoint (edgernn.models.save) for a torch-checkpoint column; default: MODEL.pt "
        "beside the artifact if there is one",
    )
    p.add_argument("--steps", type=int, default=10000, help="timed steps per backend (default 10000)")
    p.add_argument("--warmup", type=int, default=1000, help="untimed steps first (default 1000)")
    p.add_argument(
        "--rate",
        type=float,
        default=16000.0,
        help="steps per second for x real-time and the deadline, Hz: the sample rate when a step is one "
        "sample (default 16000); for a model stepped per chunk, chunks per second (Silero VAD, 512 "
        "samples at 16 kHz: 31.25)",
    )
    p.add_argument("--chunk", type=int, default=1000, help="T of the chunk throughput run(X) (default 1000)")
    p.add_argument("--max-streams", type=int, default=4096, help="largest n of streams(n) (default 4096)")
    p.add_argument(
        "--separate", type=int, default=1024, help="separate streams stepped one by one (default 1024)"
    )
    p.add_argument(
        "--cold-runs",
        type=int,
        default=3,
        help="warm-cache cold starts to take the median of (0: no cold start)",
    )
    p.add_argument(
        "--quick", action="store_true", help="fast settings: at most 500 steps, 256 streams, 1 cold run"
    )
    p.add_argument("--json", default=None, metavar="F", help="write the results as JSON to F")
    p.add_argument("--plot", default=None, metavar="F.png", help="write latency/throughput plots to F.png")
    p.add_argument("--no-progress", action="store_true", help="no progress bar")
    p.add_argument("--seed", type=int, default=0, help="seed of the random inputs")


def run(args: argparse.Namespace) -> int:
    """Run the benchmark, print the table, write --json/--plot; returns the exit code."""
    import sys

    from ..bench import bench, check_extras, defaults_note, format_table, plot, to_json
    from ..errors import InputError

    if not os.path.isfile(args.model):
        raise InputError(f"no such file: {args.model}")
    for what, f in (("--onnx", args.onnx), ("--onnx-seq", args.onnx_seq), ("--checkpoint", args.checkpoint)):
        if f is not None and not os.path.isfile(f):
            raise InputError(f"{what}: no such file: {f}")
    for what, f in (("--json", args.json), ("--plot", args.plot)):
        d = os.path.dirname(os.path.abspath(f)) if f else None
        if d is not None and not os.path.isdir(d):
            raise InputError(f"{what}: no such directory: {d} (for {f})")
        if f and os.path.isdir(f):
            raise InputError(f"{what}: {f} is a directory (give a file name)")
    backends = None
    if args.backends:
        backends = [b.strip() for b in args.backends.split(",") if b.strip()]
        bad = [b for b in backends if b not in BACKENDS]
        if bad:
            raise InputError(f"unknown backend(s) {bad}; choose among {', '.join(BACKENDS)}")
    for name in ("steps", "warmup", "chunk", "max_streams", "separate", "cold_runs"):
        if getattr(args, name) < 0:
            raise InputError(f"--{name.replace('_', '-')} must be >= 0")
    if args.steps < 1:
        raise InputError("--steps must be >= 1")
    if not args.rate > 0:
        raise InputError("--rate must be > 0")
    # every missing extra is known before the run: explicit pieces are an error, default baselines a note
    check_extras(backends, onnx_path=args.onnx, checkpoint=args.checkpoint, plot=bool(args.plot))
    note = defaults_note() if backends is None else None
    if note:
        print(f"edgernn bench: note: no column for {note}", file=sys.stderr)
    steps, warmup, max_streams, separate, cold_runs, chunk = (
        args.steps,
        args.warmup,
        args.max_streams,
        args.separate,
        args.cold_runs,
        args.chunk,
    )
    if args.quick:
        steps, warmup = min(steps, 500), min(warmup, 100)
        max_streams, separate, cold_runs, chunk = (
            min(max_streams, 256),
            min(separate, 256),
            min(cold_runs, 1),
            min(chunk, 200),
        )
    res = bench(
        args.model,
        backends=backends,
        onnx_path=args.onnx,
        onnx_seq_path=args.onnx_seq,
        checkpoint=args.checkpoint,
        steps=steps,
        warmup=warmup,
        rate=args.rate,
        chunk=chunk,
        max_streams=max_streams,
        separate=separate,
        cold_runs=cold_runs,
        progress=not args.no_progress,
        seed=args.seed,
    )
    print(format_table(res))
    if args.json:
        with open(args.json, "w", encoding="utf-8") as f:
            f.write(to_json(res))
    if args.plot:
        plot(res, args.plot)
        print(f"plot written to {args.plot}")
    return 0
