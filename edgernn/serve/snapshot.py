"""Atomic snapshots of a :class:`~edgernn.serve.Gateway`: one file per shard in the state directory.

``shard-I-of-N.npz`` holds ``states`` (devices, state_size) float32 and ``meta`` (UTF-8 JSON: devices,
last seqs, answers not yet seen on /out, messages waiting). Written to a temporary file in the same
directory, flushed and fsynced, renamed over the old one, then the directory is fsynced: a crash leaves
the old snapshot or the new one, never a torn file.
"""

from __future__ import annotations

import glob
import io
import json
import os
import re

import numpy as np

from ..errors import EdgeRNNError

_NAME = re.compile(r"shard-(\d+)-of-(\d+)\.npz$")


def path_for(state_dir: str, shard: tuple[int, int]) -> str:
    """The snapshot file of shard (I, N)."""
    return os.path.join(state_dir, f"shard-{shard[0]}-of-{shard[1]}.npz")


def write(state_dir: str, shard: tuple[int, int], meta: dict, states: np.ndarray) -> str:
    """Write a snapshot atomically (temp file + fsync + rename + directory fsync); returns its path."""
    os.makedirs(state_dir, exist_ok=True)
    final = path_for(state_dir, shard)
    tmp = f"{final}.tmp-{os.getpid()}"
    buf = io.BytesIO()
    m = np.frombuffer(json.dumps(meta, separators=(",", ":")).encode(), np.uint8)
    np.savez(buf, states=np.ascontiguousarray(states, np.float32), meta=m)
    with open(tmp, "wb") as f:
        f.write(buf.getbuffer())
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, final)
    fd = os.open(state_dir, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
    return final


def read(path: str) -> tuple[dict, np.ndarray]:
    """(meta, states) of one snapshot file; :class:`EdgeRNNError` if it is not one."""
    try:
        with np.load(path, allow_pickle=False) as z:
            meta = json.loads(z["meta"].tobytes().decode())
            states = np.array(z["states"], np.float32)
    except Exception as e:
        raise EdgeRNNError(f"{path}: not a readable serve snapshot ({e})") from None
    if not isinstance(meta, dict) or meta.get("format") != "edgernn-serve-snapshot":
        raise EdgeRNNError(f"{path}: not a serve snapshot")
    if states.shape != (len(meta["devices"]), meta["state_size"]):
        raise EdgeRNNError(f"{path}: states {states.shape} do not match the {len(meta['devices'])} devices")
    return meta, states


def sources_for(state_dir: str, shard: tuple[int, int]) -> list[str]:
    """The snapshots shard (I, N) starts from: its own file if there is one; otherwise every snapshot of
    an earlier layout (another N) in the directory, from which it takes the devices it now owns."""
    own = path_for(state_dir, shard)
    if os.path.exists(own):
        return [own]
    others = []
    for p in sorted(glob.glob(os.path.join(state_dir, "shard-*-of-*.npz"))):
        m = _NAME.search(p)
        if m and int(m.group(2)) != shard[1]:
            others.append(p)
    return others
