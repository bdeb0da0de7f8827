"""The installed package list covers every package folder (a wheel install must not lose a subpackage)."""

from __future__ import annotations

import os

import tomllib

REPO = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def test_every_package_folder_is_listed_in_pyproject():
    with open(os.path.join(REPO, "pyproject.toml"), "rb") as f:
        tool = tomllib.load(f)["tool"]["setuptools"]
    listed = set(tool["packages"])
    roots = {folder: name for name, folder in tool["package-dir"].items()}
    found = set()
    for folder, name in roots.items():
        for d, _, files in os.walk(os.path.join(REPO, folder)):
            if "__init__.py" in files and "__pycache__" not in d:
                rel = os.path.relpath(d, os.path.join(REPO, folder))
                found.add(name if rel == "." else name + "." + rel.replace(os.sep, "."))
    assert found - listed == set(), (
        f"package folders missing from pyproject's packages: {sorted(found - listed)}"
    )
    assert listed - found == set(), f"listed packages without a folder: {sorted(listed - found)}"
