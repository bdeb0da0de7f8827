"""Cold start and memory: a fresh Python process per run, from launch to the first output."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time

_COLD_SCRIPT = r"""
import json, resource, sys, time
t0 = time.perf_counter()
try:  # a forked child starts with its parent's RSS high-water mark: reset it (Linux >= 4.0)
    with open("/proc/self/clear_refs", "w") as f:
        f.write("5")
except OSError:
    pass
which, path = sys.argv[1], sys.argv[2]
import numpy as np
if which in ("edgernn", "numpy"):
    import edgernn
    m = edgernn.load(path, backend="numpy") if which == "numpy" else edgernn.load(path)
    y = m.stream().step(np.zeros(m.info["input_size"], np.float32))
elif which == "onnxruntime":
    import onnxruntime as ort
    so = ort.SessionOptions(); so.intra_op_num_threads = 1; so.inter_op_num_threads = 1
    sess = ort.InferenceSession(path, so, providers=["CPUExecutionProvider"])
    given = json.loads(sys.argv[3]) if len(sys.argv) > 3 else {}
    bound, sizes = given.get("bound", {}), given.get("shapes", {})
    types = {"tensor(int64)": np.int64, "tensor(int32)": np.int32, "tensor(double)": np.float64}
    feeds = {}
    for i in sess.get_inputs():
        dt = types.get(i.type, np.float32)
        shape = sizes.get(i.name) or [d if isinstance(d, int) else 1 for d in i.shape]
        feeds[i.name] = np.array(bound[i.name], dt) if i.name in bound else np.zeros(shape, dt)
    y = sess.run(None, feeds)[0]
elif which == "torch":
    from edgernn import artifact
    from edgernn.export.baselines import TorchBaseline
    plan, tensors = artifact.read(path)
    plan = artifact.chain_plan(plan)
    y = TorchBaseline(plan, tensors).step(np.zeros(plan["input"]["size"], np.float32))
t1 = time.perf_counter()
rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
try:
    with open("/proc/self/status") as f:
        rss = next(int(line.split()[1]) for line in f if line.startswith("VmHWM:"))
except (OSError, StopIteration, ValueError):
    pass
print(json.dumps({"in_process_s": t1 - t0, "peak_rss_kb": rss}), flush=True)
"""


def cold_start(
    which: str, path: str, cache_dir: str | None, timeout: float = 600, feeds: dict | None = None
) -> dict[str, float]:
    """Start a fresh Python process that imports ``which`` (edgernn, numpy, onnxruntime, torch), loads
    ``path`` and computes one output (ONNX Runtime: zeros, except ``feeds["bound"]`` (input -> value,
    e.g. a sample rate bound at compile time) and the sizes ``feeds["shapes"]`` (input -> shape)).
    Returns ``wall_s`` (process launch to the first output),
    ``in_process_s`` (imports + load + first step) and ``peak_rss_mb`` of that process. ``cache_dir``, when
    given, is the process's kernel cache (EDGERNN_CACHE_DIR and NUMBA_CACHE_DIR)."""
    env = dict(os.environ)
    if cache_dir is not None:  # edgernn reads EDGERNN_CACHE_DIR first, then NUMBA_CACHE_DIR
        env["EDGERNN_CACHE_DIR"] = env["NUMBA_CACHE_DIR"] = cache_dir
    t0 = time.perf_counter()
    p = subprocess.Popen(
        [sys.executable, "-c", _COLD_SCRIPT, which, path, *([json.dumps(feeds)] if feeds else [])],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        env=env,
        text=True,
    )
    line = p.stdout.readline()
    wall = time.perf_counter() - t0
    _, err = p.communicate(timeout=timeout)
    if p.returncode != 0 or not line.strip():
        tail = (err or "").strip().splitlines()[-1:] or ["no output"]
        raise RuntimeError(f"cold start of {which} failed: {tail[0]}")
    d = json.loads(line)
    return {"wall_s": wall, "in_process_s": d["in_process_s"], "peak_rss_mb": d["peak_rss_kb"] / 1024.0}
