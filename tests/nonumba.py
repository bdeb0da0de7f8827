"""A Python prelude for child processes that play a device without numba: importing numba or llvmlite
raises ImportError there. Tests append their own body and run it with ``python -c``."""

import textwrap

PRELUDE = textwrap.dedent(
    """
    import importlib.abc, json, sys
    import numpy as np

    class Block(importlib.abc.MetaPathFinder):
        def find_spec(self, name, path=None, target=None):
            if name.split(".")[0] in ("numba", "llvmlite"):
                raise ImportError(f"{name} is blocked: the device has no numba")
            return None

    sys.meta_path.insert(0, Block())
    import edgernn
    """
)

#: appended last: which numba/llvmlite modules the child imported (it must be none)
MODULES = 'out["_modules"] = sorted(n for n in sys.modules if n.split(".")[0] in ("numba", "llvmlite"))\n'


def script(body: str) -> str:
    """The prelude, ``body`` (dedented; it fills a dict ``out``), the imported-modules record, and a
    ``print(json.dumps(out))``."""
    return PRELUDE + textwrap.dedent(body) + MODULES + "print(json.dumps(out))\n"
