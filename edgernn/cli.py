"""The ``edgernn`` command line: one entry point, one module per command in ``edgernn/commands/``.

Each command module defines ``HELP`` (one line), ``add_arguments(parser)`` and ``run(args) -> int``;
heavy imports (torch, onnx, onnxruntime) happen inside ``run`` only.
"""

from __future__ import annotations

import argparse
import errno
import importlib
import os
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


#: command -> the attributes of its parsed arguments that name a file it writes (checked before it runs)
OUTPUT_FILES = {
    "run": ("out",),
    "compile": ("output",),
    "inspect": ("write_folded",),
}  # bench checks its own, naming the option
#: command -> the attributes that name a directory it writes into (created if missing)
OUTPUT_DIRS = {"export": ("output",), "demo": ("out",), "aot": ("output",), "warmup": ("cache_dir",)}


def _oserror(code: int, path: str) -> OSError:
    return OSError(code, os.strerror(code), path)


def check_output(path: str, directory: bool = False) -> None:
    """Raise the OSError writing ``path`` would end in, before any work: the nearest existing folder
    above it must be a writable directory (for a file, its own folder must exist), and a file path must
    not be a directory. Works as root too (a path under a regular file fails for everyone)."""
    full = os.path.abspath(path)
    if os.path.isdir(full) and not directory:
        raise _oserror(errno.EISDIR, path)
    if os.path.exists(full) and directory and not os.path.isdir(full):
        raise _oserror(errno.ENOTDIR, path)
    parent = full if directory else os.path.dirname(full)
    while not os.path.exists(parent):
        if not directory:
            raise _oserror(errno.ENOENT, path)
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise _oserror(errno.ENOTDIR, path)
    if not os.access(parent, os.W_OK | os.X_OK):
        raise _oserror(errno.EACCES, path)


def _check_outputs(command: str, args: argparse.Namespace) -> None:
    for attr in OUTPUT_FILES.get(command, ()):
        if getattr(args, attr, None):
            check_output(getattr(args, attr))
    for attr in OUTPUT_DIRS.get(command, ()):
        if getattr(args, attr, None):
            check_output(getattr(args, attr), directory=True)


def _path_error(e: OSError) -> str:
    """``<strerror>: <path>`` (one line) for an OSError raised on a path."""
    text = e.strerror or str(e)
    paths = [p for p in (e.filename, e.filename2) if p is not None]
    if paths:
        text += ": " + " -> ".join(os.fsdecode(p) if isinstance(p, bytes) else str(p) for p in paths)
    return " ".join(text.split("\n"))


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
        _check_outputs(args.command, args)
        return int(args._run(args) or 0)
    except EdgeRNNError as e:
        print(f"edgernn {args.command}: error: {e}", file=sys.stderr)
        return 1
    except BrokenPipeError:
        # the reader of stdout went away (`edgernn run ... | head`): not an error to report
        devnull = os.open(os.devnull, os.O_WRONLY)
        os.dup2(devnull, sys.stdout.fileno())  # Python's final flush must not fail again
        return 1
    except OSError as e:  # a missing input, an unwritable output: one line naming the path
        print(f"edgernn {args.command}: error: {_path_error(e)}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        return 130


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
