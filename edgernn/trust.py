"""Who may change a directory edgernn loads code from (numba's kernel cache, the AOT module's folder).

numba unpickles its cache index and the AOT module is native code: either directory, if another user
can write it (or rename it away, through a parent), is a way to run code as us. The rule is OpenSSH's
StrictModes. Numpy-free and numba-free: the AOT path uses it before anything else is imported.
"""

from __future__ import annotations

import os
import stat


def insecure_dir(path: str) -> str | None:
    """Why another user could change what is loaded from ``path`` (an existing directory), or None.

    The directory must be ours and not writable by group/others, and no directory above it may let
    another user rename or replace it: each must be owned by us or root, and not group/other-writable
    unless it has the sticky bit (like /tmp). The same rule as OpenSSH's StrictModes.
    """
    if not hasattr(os, "getuid"):  # pragma: no cover - no POSIX modes (Windows)
        return None
    uid = os.getuid()
    st = os.stat(path)
    if st.st_uid != uid:
        return f"{path} is owned by uid {st.st_uid}, not by this user (uid {uid})"
    if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is writable by group or others (code is loaded from it): chmod go-w it"
    return insecure_above(path, False)


def insecure_above(path: str, include_self: bool) -> str | None:
    if not hasattr(os, "getuid"):  # pragma: no cover
        return None
    uid = os.getuid()
    for p in dict.fromkeys((os.path.abspath(path), os.path.realpath(path))):
        d = p if include_self else os.path.dirname(p)
        while True:
            st = os.stat(d)
            if st.st_uid not in (0, uid):
                return f"{d}, at or above the directory, is owned by uid {st.st_uid}"
            if st.st_mode & (stat.S_IWGRP | stat.S_IWOTH) and not st.st_mode & stat.S_ISVTX:
                return f"{d}, at or above the directory, is writable by group or others"
            up = os.path.dirname(d)
            if up == d:
                break
            d = up
    return None
