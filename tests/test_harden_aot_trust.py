"""The AOT module is native code: it is refused from a directory another user could write."""

from __future__ import annotations

import os


def test_insecure_dir_rules(tmp_path):
    from edgernn.trust import insecure_dir

    d = tmp_path / "x"
    d.mkdir(mode=0o700)
    os.chmod(tmp_path, 0o700)
    assert insecure_dir(str(d)) is None
    os.chmod(d, 0o770)
    assert "writable by group or others" in insecure_dir(str(d))
    os.chmod(d, 0o700)
    os.chmod(tmp_path, 0o777)  # a parent others can write: they could swap d
    assert "writable by group or others" in insecure_dir(str(d))
    os.chmod(tmp_path, 0o1777)  # sticky, like /tmp: accepted
    assert insecure_dir(str(d)) is None
