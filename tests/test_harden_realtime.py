"""Real-time safety (issue 6, part 4): no allocation per step after warm-up.

* numba side: NRT allocation statistics (``NUMBA_NRT_STATS=1``, in a subprocess because numba reads it at
  import). Calling a jitted function from Python makes one NRT meminfo per array argument (the dispatcher
  wraps each incoming ndarray), so the test measures two control kernels with the same arguments as each
  entry point: one that only touches its arrays (the dispatcher's fixed cost) and one that allocates a
  temporary (which must show up as one more allocation per call, proving the measurement can see it). The
  step, batch-step and sequence kernels must cost exactly the no-allocation control: they allocate nothing.
* Python side: tracemalloc's traced memory after 10^5 steps is the same as after warm-up (the returned
  arrays are freed; ``step(x, out=buf)`` does not even make them).
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import tracemalloc

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harden_common as hc  # noqa: E402

from edgernn.runtime import Model  # noqa: E402

MODELS = ["lstm", "gru", "rnn", "esn", "everything", "attention", "int8", "int8_esn_sparse", "fp16", "tokens"]

_NRT_SCRIPT = textwrap.dedent(
    r"""
    import json, sys
    import numpy as np
    import numba
    from numba.core.runtime import rtsys
    sys.path.insert(0, sys.argv[1])
    import harden_common as hc
    from edgernn.runtime import Model

    @numba.njit
    def touch4(a, b, c, d):
        d[0] = a[0]
        return 0

    @numba.njit
    def alloc4(a, b, c, d):
        t = np.empty(4, np.float32)
        t[0] = a[0]
        d[0] = t[0]
        return 0

    @numba.njit
    def touch6(a, b, c, d, e, f):
        d[0] = a[0, 0]
        return 0

    @numba.njit
    def alloc6(a, b, c, d, e, f):
        t = np.empty(4, np.float32)
        t[0] = a[0, 0]
        d[0] = t[0]
        return 0

    def per_call(fn, n=2000):
        for _ in range(10):
            fn()  # warm-up (first-call compilation, caches)
        a = rtsys.get_allocation_stats()
        for _ in range(n):
            fn()
        b = rtsys.get_allocation_stats()
        return {f: (getattr(b, f) - getattr(a, f)) / n for f in ("alloc", "free", "mi_alloc", "mi_free")}

    out = {}
    for name in sys.argv[2:]:
        m = Model(*hc.SEEDS[name](), backend="numba")
        p, k = m._packed, m._backend
        tokens = m.plan["input"]["kind"] == "tokens"
        x = np.ones(m.input_size, np.float32) if not tokens else np.array([1.0], np.float32)
        M = m._m0.copy()
        X = np.tile(x, (3, 1))
        MB = np.tile(m._m0, (3, 1))
        T = 5
        XT = np.tile(x, (T, 1))
        Y = np.empty((T, m.output_size), np.float32)
        buf = np.empty(2 * T * p.seq_width + p.seq_extra + 1, np.float32)
        s = m.stream()
        y = np.empty(m.output_size, np.float32)
        out[name] = {
            "step": per_call(lambda: k.step(x, p.wf, p.wb, M)),
            "stream.step(out=)": per_call(lambda: s.step(x, out=y)),
            "step_batch": per_call(lambda: k.step_batch(X, p.wf, p.wb, MB)),
            "touch_batch": per_call(lambda: touch4(X[0], p.wf, p.wb, MB[0])),
            "seq": per_call(lambda: k.seq(XT, p.wf, p.wb, M, Y, buf)),
            "touch4": per_call(lambda: touch4(x, p.wf, p.wb, M)),
            "alloc4": per_call(lambda: alloc4(x, p.wf, p.wb, M)),
            "touch6": per_call(lambda: touch6(XT, p.wf, p.wb, M, Y, buf)),
            "alloc6": per_call(lambda: alloc6(XT, p.wf, p.wb, M, Y, buf)),
        }
    print(json.dumps(out))
    """
)


@pytest.fixture(scope="module")
def nrt_stats():
    env = dict(os.environ, NUMBA_NRT_STATS="1")
    r = subprocess.run(
        [sys.executable, "-c", _NRT_SCRIPT, os.path.dirname(__file__), *MODELS],
        env=env,
        capture_output=True,
        text=True,
        timeout=1800,
    )
    assert r.returncode == 0, r.stderr[-3000:]
    stats = json.loads(r.stdout.strip().splitlines()[-1])
    print(json.dumps(stats, indent=1))
    return stats


@pytest.mark.parametrize("name", MODELS)
def test_controls_can_see_an_allocation(nrt_stats, name):
    s = nrt_stats[name]
    for n in ("4", "6"):
        assert s["alloc" + n]["alloc"] == s["touch" + n]["alloc"] + 1, s
        assert s["alloc" + n]["mi_alloc"] >= s["touch" + n]["mi_alloc"] + 1, s


@pytest.mark.parametrize("name", MODELS)
def test_kernels_allocate_nothing_per_step(nrt_stats, name):
    s = nrt_stats[name]
    for entry, control in (("step", "touch4"), ("step_batch", "touch_batch"), ("seq", "touch6")):
        for field in ("alloc", "mi_alloc"):
            assert s[entry][field] == s[control][field], (entry, field, s[entry], s[control])
        assert s[entry]["alloc"] == s[entry]["free"], (entry, s[entry])  # and nothing leaks
    # the public step, with an output buffer, adds nothing beyond its one kernel call
    assert s["stream.step(out=)"]["alloc"] == s["touch4"]["alloc"], s


@pytest.mark.parametrize("use_out", [True, False], ids=["out-buffer", "new-array"])
@pytest.mark.parametrize("name", ["lstm", "everything", "int8"])
def test_no_python_allocation_growth(name, use_out):
    m = Model(*hc.SEEDS[name](), backend="numba")
    s = m.stream()
    rng = np.random.default_rng(0)
    xs = rng.standard_normal((64, m.input_size)).astype(np.float32)
    y = np.empty(m.output_size, np.float32)
    for i in range(2000):  # warm-up outside tracing
        s.step(xs[i % 64], out=y) if use_out else s.step(xs[i % 64])
    tracemalloc.start()
    try:
        for i in range(1000):
            s.step(xs[i % 64], out=y) if use_out else s.step(xs[i % 64])
        base = tracemalloc.get_traced_memory()[0]
        tracemalloc.reset_peak()
        for i in range(100_000):
            s.step(xs[i % 64], out=y) if use_out else s.step(xs[i % 64])
        cur, peak = tracemalloc.get_traced_memory()
    finally:
        tracemalloc.stop()
    print(f"{name} {'out=' if use_out else 'new'}: +{cur - base} B after 1e5 steps, peak +{peak - base} B")
    assert cur - base <= 4096, f"{cur - base} bytes more after 1e5 steps"
    # new-array mode holds one output array at a time; out= mode holds nothing
    assert peak - base <= 4096 + (0 if use_out else 4 * m.output_size + 512), (peak, base)
    assert np.isfinite(s.state).all()
