"""AOT modules per model (host CPU, generic CPU) vs numba's generated kernels: per-step latency, threads.

    python benchmarks/aot_native.py [--rounds 40] [--json OUT]

For each model the per-model module is built twice (``edgernn aot MODEL.ernn --cpu host`` and
``--cpu generic``, a few seconds each). Everything is measured in this one
process, rounds interleaved across the backends so that a change of machine load hits them alike; each
figure is the best round. The baseline is the numba backend, which runs the same generated source
(``kernels/codegen.py``) compiled by the JIT.

* per step: ``Stream.step``, microseconds per step (best of many rounds of 500 steps; wall clock, and the
  stepping thread's CPU time, which leaves out the time the machine's other work kept it off a core),
  for LSTM 8->64 + Dense, GRU 8->64 + Dense, LSTM 8->256 + Dense and ESN 500 + Dense (float32), with each
  backend's ratio to numba;
* thread scaling: two streams of the same model advanced over the same steps, by one thread (one stream
  after the other, step by step) and by two threads (one stream each); scaling = time of one thread /
  time of two threads (2.0 = perfect on two idle cores, 1.0 = no gain, below 1 = contention), for
  ``Stream.step`` loops and for ``Stream.run`` chunks. A backend that holds the GIL while its kernel
  runs cannot exceed ~1.0. Beside it, the CPU-seconds the two threads used per second of wall clock
  (up to 2.0): above 1.0 the two kernels ran at the same time, which no GIL-holding backend can do.

The load average is printed before and after: on a machine whose cores are busy with other work, thread
scaling measures that work too.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import tempfile
import threading
import time

import numpy as np

import edgernn
from edgernn import aot, aot_model, artifact
from edgernn.bench import synthetic

MODELS = {  # name -> (cell, input, hidden)
    "lstm_8x64": ("lstm", 8, 64),
    "gru_8x64": ("gru", 8, 64),
    "lstm_8x256": ("lstm", 8, 256),
    "esn_500": ("esn", 8, 500),
}
SCALING_MODELS = ("lstm_8x256", "esn_500")  # a step of >= 10 us
STEPS = 2000  # steps per stream in a thread-scaling round
ROUND = 500  # steps in a per-step latency round: short rounds, many of them, the best one kept


def _load(path: str, backend: str, dirs: dict[str, str]) -> edgernn.Model:
    """The model on ``backend``: ``aot-host``, ``aot-generic`` (the model's module built for that CPU) or
    ``numba``."""
    if backend == "numba":
        return edgernn.load(path, backend="numba")
    os.environ["EDGERNN_AOT_DIR"] = dirs[backend]  # searched first (the model's own directory has none)
    m = edgernn.load(path, backend="aot")
    del os.environ["EDGERNN_AOT_DIR"]
    assert m.kernel_source is not None, f"{path} {backend}: the runtime picked the wrong module"
    return m


def _step_loop(s, X) -> tuple[float, float]:
    """(wall seconds, this thread's CPU seconds) of ``s.step`` over the rows of X."""
    step = s.step
    c0, t0 = time.thread_time(), time.perf_counter()
    for x in X:
        step(x)
    return time.perf_counter() - t0, time.thread_time() - c0


def _one_thread(s1, s2, X, mode: str) -> float:
    t0 = time.perf_counter()
    if mode == "run":
        s1.run(X)
        s2.run(X)
    else:
        a, b = s1.step, s2.step
        for x in X:
            a(x)
            b(x)
    return time.perf_counter() - t0


def _two_threads(s1, s2, X, mode: str) -> tuple[float, float]:
    """(wall seconds, CPU seconds of the two threads together) for one stream per thread."""
    barrier = threading.Barrier(3)
    cpu = [0.0, 0.0]

    def work(s, i):
        barrier.wait()
        c0 = time.thread_time()
        if mode == "run":
            s.run(X)
        else:
            step = s.step
            for x in X:
                step(x)
        cpu[i] = time.thread_time() - c0

    ts = [threading.Thread(target=work, args=(s, i)) for i, s in enumerate((s1, s2))]
    for t in ts:
        t.start()
    barrier.wait()
    t0 = time.perf_counter()
    for t in ts:
        t.join()
    return time.perf_counter() - t0, sum(cpu)


def main(argv: list[str] | None = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--rounds", type=int, default=40, help=f"per-step rounds (of {ROUND} steps)")
    ap.add_argument("--thread-rounds", type=int, default=15, help=f"thread-scaling rounds (of {STEPS})")
    ap.add_argument("--json", default=None)
    a = ap.parse_args(argv)

    tmp = tempfile.mkdtemp(prefix="edgernn-aotbench-")
    os.chmod(tmp, 0o700)
    dirs = {"aot-host": os.path.join(tmp, "host"), "aot-generic": os.path.join(tmp, "generic")}
    backends = (*dirs, "numba")

    rng = np.random.default_rng(0)
    X = rng.standard_normal((STEPS, 8)).astype(np.float32)
    models: dict[tuple[str, str], edgernn.Model] = {}
    build_s: dict[str, dict[str, float]] = {}
    last: dict[str, str] = {}  # the last module built for each CPU
    for name, (cell, i, h) in MODELS.items():
        p = os.path.join(tmp, name + ".ernn")
        artifact.write(p, *synthetic(cell, i, h, 1, seed=0))
        build_s[name] = {}
        for key, cpu in (("aot-host", "host"), ("aot-generic", "generic")):
            t0 = time.perf_counter()
            last[key] = aot_model.build(p, dirs[key], cpu=cpu)
            build_s[name][cpu] = time.perf_counter() - t0
        print(
            f"{name}: built {os.path.basename(last['aot-host'])} for host and generic in "
            f"{build_s[name]['host']:.0f} s / {build_s[name]['generic']:.0f} s",
            flush=True,
        )
        for b in backends:
            models[name, b] = m = _load(p, b, dirs)
            assert m.info["backend"] == ("numba" if b == "numba" else "aot")
        ref = models[name, "numba"].stream().run(X[:300])
        for b in backends[:-1]:  # same source (or the same plan), same flags: agree with the JIT to rounding
            got = models[name, b].stream().run(X[:300])
            np.testing.assert_allclose(got, ref, rtol=1e-4, atol=1e-5, err_msg=f"{name} {b}")
    for key, path in last.items():
        print(f"{key}: {aot.describe(path)['cpu']}")
    print(f"load average {os.getloadavg()[0]:.2f} (cores: {os.cpu_count()})", flush=True)

    # ------------------------------------------------------------------ per-step latency
    wall = {k: np.inf for k in models}
    cpu = {k: np.inf for k in models}
    streams = {k: m.stream() for k, m in models.items()}
    for r in range(a.rounds):
        Xr = X[(r * ROUND) % STEPS :][:ROUND]
        for k, s in streams.items():
            w, c = _step_loop(s, Xr)
            wall[k], cpu[k] = min(wall[k], w), min(cpu[k], c)
    out: dict = {
        "per_step_us": {},
        "per_step_cpu_us": {},
        "scaling": {},
        "cores_used": {},
        "build_s": build_s,
    }
    for title, best, key in (
        ("wall clock", wall, "per_step_us"),
        ("CPU time of the stepping thread (time not running on a core excluded)", cpu, "per_step_cpu_us"),
    ):
        print(f"\nStream.step, us per step, {title}; best of {a.rounds} rounds of {ROUND} steps")
        print(f"{'model':12s}" + "".join(f"{b:>20s}" for b in backends))
        for name in MODELS:
            us = {b: best[name, b] / ROUND * 1e6 for b in backends}
            out[key][name] = us
            cells = "".join(f"{us[b]:12.2f} ({us[b] / us['numba']:4.2f}x)" + " " * 2 for b in backends)
            print(f"{name:12s}{cells}")

    # ------------------------------------------------------------------ thread scaling
    print(
        f"\nthread scaling, 2 streams x {STEPS} steps: time on 1 thread / on 2 threads "
        f"(best of {a.thread_rounds} rounds)"
    )
    print(
        "  (in brackets: the most CPU-seconds per second the two threads used together in a round; a\n"
        "   backend holding the GIL in its kernel stays at ~1.0 whatever the machine's load)"
    )
    print(f"{'model':12s}{'mode':6s}" + "".join(f"{b:>14s}" for b in backends))
    for name in SCALING_MODELS:
        for mode in ("step", "run"):
            t1 = {b: np.inf for b in backends}
            t2 = {b: np.inf for b in backends}
            cores = {b: 0.0 for b in backends}
            for _ in range(a.thread_rounds):
                for b in backends:
                    m = models[name, b]
                    t1[b] = min(t1[b], _one_thread(m.stream(), m.stream(), X, mode))
                    w, c = _two_threads(m.stream(), m.stream(), X, mode)
                    t2[b], cores[b] = min(t2[b], w), max(cores[b], c / w)
            sc = {b: t1[b] / t2[b] for b in backends}
            out["scaling"][f"{name} {mode}"] = sc
            out["cores_used"][f"{name} {mode}"] = cores
            print(f"{name:12s}{mode:6s}" + "".join(f"{sc[b]:7.2f}x ({cores[b]:3.1f})" for b in backends))
    print(f"\nload average {os.getloadavg()[0]:.2f} after the run")
    if a.json:
        with open(a.json, "w") as f:
            json.dump(out, f, indent=1)
    return 0


if __name__ == "__main__":
    sys.exit(main())
