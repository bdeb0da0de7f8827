"""Soak (issue 6, part 5): 10^6 steps per cell type in CI, 10^7 behind ``-m slow``.

Each stream runs through ``Stream.run`` in chunks (the same kernels as ``step``, fast enough for 10^6
steps in about a second per cell) on a smooth signal plus noise. Checked:

* the state stays finite, and bounded: tanh-bounded states (rnn/gru h, lstm h, esn x) within [-1, 1];
  the lstm cell c does not drift (its max over the second half is within 2x + 1 of the first half's);
  attention's running pool stays finite and its output (a convex mix of lstm h) stays within [-1, 1];
* a snapshot taken in the middle and restored, into a fresh stream and into the same stream later, gives
  outputs bit-identical to the uninterrupted run;
* the process RSS after the run is within 4 MiB of the RSS after the first chunks (Linux /proc).
"""

from __future__ import annotations

import os
import sys

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harden_common as hc  # noqa: E402

from edgernn.runtime import Model  # noqa: E402

CHUNK = 20_000
CELLS = ["rnn", "lstm", "gru", "esn", "attention"]
TANH_BOUNDED = (".h", ".x")


def rss_bytes() -> int:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")


def signal_chunk(k: int, n: int, i: int) -> np.ndarray:
    t = np.arange(k * n, (k + 1) * n, dtype=np.float64)[:, None]
    freq = np.linspace(0.001, 0.05, i)[None, :]
    noise = np.random.default_rng(k).standard_normal((n, i))
    return (np.sin(t * freq) + 0.3 * noise).astype(np.float32)


@pytest.mark.skipif(not os.path.exists("/proc/self/statm"), reason="RSS read from /proc (Linux)")
@pytest.mark.parametrize("steps", [10**6, pytest.param(10**7, marks=pytest.mark.slow)], ids=["1e6", "1e7"])
@pytest.mark.parametrize("cell", CELLS)
def test_soak(cell, steps):
    build = (lambda: hc.attention_model(head=False)) if cell == "attention" else hc.SEEDS[cell]
    m = Model(*build(), backend="numba")
    layout = {e["name"]: slice(e["offset"], e["offset"] + e["size"]) for e in m.info["state_layout"]}
    s = m.stream()
    chunks = steps // CHUNK
    mid = chunks // 2
    warm = 5
    c_first = c_second = 0.0
    snap = tail = None
    lo = hi = None
    rss0 = None
    for k in range(chunks):
        X = signal_chunk(k, CHUNK, m.input_size)
        if k == mid:
            snap = s.state
            mid_X = [X, signal_chunk(k + 1, CHUNK, m.input_size)]
        Y = s.run(X)
        if k in (mid, mid + 1):
            tail = Y.copy() if k == mid else np.concatenate([tail, Y])
        st = s.state
        assert np.isfinite(st).all(), f"non-finite state after chunk {k}"
        assert np.isfinite(Y).all(), f"non-finite output in chunk {k}"
        for name, sl in layout.items():
            v = np.abs(st[sl]).max()
            if name.endswith(TANH_BOUNDED):
                assert v <= 1.0 + 1e-6, (name, v, k)
            if name.endswith(".c"):
                if k < chunks // 2:
                    c_first = max(c_first, v)
                else:
                    c_second = max(c_second, v)
        if cell == "attention":  # the pooled output is a convex mix of lstm outputs, all within [-1, 1]
            assert np.abs(Y).max() <= 1.0 + 1e-5
        lo = Y.min() if lo is None else min(lo, Y.min())
        hi = Y.max() if hi is None else max(hi, Y.max())
        if k == warm:
            rss0 = rss_bytes()
    if c_first:
        assert c_second <= 2 * c_first + 1.0, (c_first, c_second)
    growth = rss_bytes() - rss0
    print(f"{cell} {steps:.0e} steps: output range [{lo:.3f}, {hi:.3f}], RSS growth {growth / 1024:.0f} KiB")
    assert growth <= 4 << 20, f"RSS grew by {growth} bytes"

    # snapshot restore: a fresh stream, and the same stream after it moved on, reproduce the run exactly
    fresh = m.stream()
    fresh.state = snap
    np.testing.assert_array_equal(np.concatenate([fresh.run(x) for x in mid_X]), tail)
    s.state = snap
    np.testing.assert_array_equal(np.concatenate([s.run(x) for x in mid_X]), tail)
    # and step-by-step from the snapshot agrees with run() (the first 200 steps)
    one = m.stream()
    one.state = snap
    Ys = np.stack([one.step(x) for x in mid_X[0][:200]])
    np.testing.assert_allclose(Ys, tail[:200], rtol=1e-4, atol=1e-5)
