"""Write the valid seed artifacts of tests/harden_common.py into a corpus folder for fuzz_loader.py."""

from __future__ import annotations

import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "tests"))

import harden_common as hc  # noqa: E402


def main(out: str) -> None:
    os.makedirs(out, exist_ok=True)
    for name, build in hc.SEEDS.items():
        with open(os.path.join(out, f"{name}.ernn"), "wb") as f:
            f.write(hc.pack(*build()))
    print(f"{len(hc.SEEDS)} seeds in {out}")


if __name__ == "__main__":
    main(sys.argv[1] if len(sys.argv) > 1 else os.path.join(os.path.dirname(__file__), "corpus"))
