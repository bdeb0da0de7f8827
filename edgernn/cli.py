"""The ``edgernn`` command line: one entry point, one module per command in ``edgernn/commands/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports (torch, onnx, onnxruntime) happen inside ``run`` only.
"""

from __future__ import annotations

import argparse
import importlib
import sys

#: command name -> module under edgernn.commands
COMMANDS = {
    "demo": "demo",
    "export": "export",
    "compile": "compile",
    "inspect": "inspect",
    "run": "run",
    "bench": "bench",
    "warmup": "warmup",
    "aot": "aot",
    "serve": "serve",
}


def build_parser() -> argparse.ArgumentParser:
    """The argument parser of every available command."""
    from . import __version__

    parser = argparse.ArgumentParser(prog="edgernn", description="Compile and stream recurrent networks.")
    parser.add_argument("--version", action="version", version=f"edgernn {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for name, modname in COMMANDS.items():
        try:
            mod = importlib.import_module(f"edgernn.commands.{modname}")
        except ModuleNotFoundError as e:
            if e.name == f"edgernn.commands.{modname}":
                continue  # command not built yet
            raise
        p = sub.add_parser(name, help=mod.HELP, description=mod.HELP)
        mod.add_arguments(p)
        p.set_defaults(_run=mod.run)
    return parser


def main(argv: list[str] | None = None) -> int:
    """Entry point of the ``edgernn`` console command; returns the process exit code."""
    from .errors import EdgeRNNError

    parser = build_parser()
    args = parser.parse_args(argv)
    if not getattr(args, "_run", None):
        parser.print_help()
        return 2
    try:
        return int(args._run(args) or 0)
    except EdgeRNNError as e:
        print(f"edgernn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
