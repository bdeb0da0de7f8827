"""Concurrency (issue 6, part 6): separate streams driven from separate threads give exactly the results
of sequential runs (the kernels release the GIL, so the threads really overlap).

What is and is not thread-safe is written down in docs/DEVICE.md.
"""

from __future__ import annotations

import os
import subprocess
import sys
import textwrap
import threading

import numpy as np
import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harden_common as hc  # noqa: E402

from edgernn.runtime import Model  # noqa: E402

N_THREADS = 4
T = 3000


def inputs(m, seed):
    rng = np.random.default_rng(seed)
    if m.plan["input"]["kind"] == "tokens":
        return rng.integers(0, m.plan["input"]["vocab_size"], (T, 1)).astype(np.float32)
    return rng.standard_normal((T, m.input_size)).astype(np.float32)


def in_threads(fn, n=N_THREADS):
    """Run fn(i) in n threads started together; re-raise the first error."""
    out, errs = [None] * n, []
    gate = threading.Barrier(n)

    def body(i):
        try:
            gate.wait()
            out[i] = fn(i)
        except BaseException as e:  # noqa: BLE001 - reported below
            errs.append(e)

    ts = [threading.Thread(target=body, args=(i,)) for i in range(n)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    if errs:
        raise errs[0]
    return out


@pytest.mark.parametrize("name", ["lstm", "gru", "everything", "attention", "int8", "tokens"])
@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_streams_in_threads_match_sequential(name, backend):
    m = Model(*hc.SEEDS[name](), backend=backend)
    Xs = [inputs(m, i) for i in range(N_THREADS)]

    def drive(i):
        s = m.stream()
        ys = np.stack([s.step(x) for x in Xs[i][: T // 2]])
        return np.concatenate([ys, s.run(Xs[i][T // 2 :])]), s.state

    seq = [drive(i) for i in range(N_THREADS)]
    for _ in range(2):
        par = in_threads(drive)
        for (y1, s1), (y2, s2) in zip(seq, par, strict=True):
            np.testing.assert_array_equal(y1, y2)
            np.testing.assert_array_equal(s1, s2)


def test_batched_streams_and_predict_in_threads():
    m = Model(*hc.SEEDS["gru"](), backend="numba")
    Xs = [inputs(m, 10 + i).reshape(T // 3, 3, m.input_size) for i in range(N_THREADS)]

    def drive(i):
        b = m.streams(3)
        Y = np.stack([b.step(X) for X in Xs[i]])
        P = m.predict(Xs[i].transpose(1, 0, 2))
        return Y, P

    seq = [drive(i) for i in range(N_THREADS)]
    par = in_threads(drive)
    for (y1, p1), (y2, p2) in zip(seq, par, strict=True):
        np.testing.assert_array_equal(y1, y2)
        np.testing.assert_array_equal(p1, p2)
        # and batched streams agree with predict (the same sequences, many_to_many)
        np.testing.assert_allclose(y1.transpose(1, 0, 2), p1, rtol=1e-4, atol=1e-5)


def test_first_load_from_many_threads(tmp_path):
    """A fresh process whose first load happens in 4 threads at once (backend set-up races)."""
    from edgernn import artifact

    path = tmp_path / "m.ernn"
    artifact.write(path, *hc.model("lstm"))
    script = textwrap.dedent(
        """
        import sys, threading
        import numpy as np
        import edgernn
        path = sys.argv[1]
        res, errs = [None] * 4, []
        gate = threading.Barrier(4)
        def body(i):
            try:
                gate.wait()
                s = edgernn.load(path).stream()
                res[i] = np.stack([s.step(np.full(3, 0.1 * k, np.float32)) for k in range(200)])
            except BaseException as e:
                errs.append(repr(e))
        ts = [threading.Thread(target=body, args=(i,)) for i in range(4)]
        [t.start() for t in ts]
        [t.join() for t in ts]
        assert not errs, errs
        assert all(np.array_equal(r, res[0]) for r in res)
        print("ok", edgernn.load(path).backend)
        """
    )
    r = subprocess.run(
        [sys.executable, "-c", script, str(path)], capture_output=True, text=True, timeout=1200
    )
    assert r.returncode == 0, r.stderr[-3000:]
    assert r.stdout.split() == ["ok", "numba"]
