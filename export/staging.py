"""All or nothing for ``export``: files are written into a staging folder next to ``out_dir`` and moved
into place only when the parity proof has passed.

The staging folder sits in ``out_dir``'s parent (the same filesystem, so each move is a rename; inside
``out_dir`` as a hidden folder when the parent is not writable). A failed
export leaves ``out_dir`` as it was, plus :data:`FAILED_REPORT` (the report of the failed proof, when one
was written); a successful one also removes the :data:`EXPORT_FILES` an earlier export left there and this
one did not write (an old ``model.int8.ernn`` beside a new float32 export would be the wrong model).
"""

from __future__ import annotations

import contextlib
import errno
import os
import shutil
import tempfile
from collections.abc import Iterator

#: the files an export may write
EXPORT_FILES = (
    "model.onnx",
    "model.step.onnx",
    "model.ernn",
    "model.int8.onnx",
    "model.step.int8.onnx",
    "model.int8.ernn",
    "report.json",
)
#: the report of a failed export, the only file a failure puts into ``out_dir``
FAILED_REPORT = "report.failed.json"


@contextlib.contextmanager
def staged(out_dir: str, failure: type[BaseException]) -> Iterator[str]:
    """Yield a fresh staging folder for the files of ``out_dir``; on a normal exit move them into place.

    When the body raises ``failure`` (the parity error), the staged ``report.json`` becomes
    ``out_dir/report.failed.json`` and nothing else moves; any other exception moves nothing. The
    staging folder is always removed.
    """
    if os.path.exists(out_dir) and not os.path.isdir(out_dir):
        raise NotADirectoryError(errno.ENOTDIR, os.strerror(errno.ENOTDIR), out_dir)
    full = os.path.abspath(out_dir)
    parent = os.path.dirname(full)
    os.makedirs(parent, exist_ok=True)
    try:
        stage = tempfile.mkdtemp(prefix=f".{os.path.basename(full)}.export-", dir=parent)
    except PermissionError:  # out_dir exists in a folder we may not write (``-o .`` in a read-only parent)
        if not os.path.isdir(out_dir):
            raise
        stage = tempfile.mkdtemp(prefix=".export-", dir=out_dir)  # hidden, removed below
    try:
        try:
            yield stage
        except failure:
            if os.path.isfile(os.path.join(stage, "report.json")):
                os.makedirs(out_dir, exist_ok=True)
                os.replace(os.path.join(stage, "report.json"), os.path.join(out_dir, FAILED_REPORT))
            raise
        _move_into_place(stage, out_dir)
    finally:
        shutil.rmtree(stage, ignore_errors=True)


def _move_into_place(stage: str, out_dir: str) -> None:
    os.makedirs(out_dir, exist_ok=True)
    written = set(os.listdir(stage))
    for name in sorted(written):
        os.replace(os.path.join(stage, name), os.path.join(out_dir, name))
    for name in (*EXPORT_FILES, FAILED_REPORT):
        if name not in written and os.path.isfile(os.path.join(out_dir, name)):
            os.unlink(os.path.join(out_dir, name))
