"""The plain C++ loop baseline of ``edgernn bench`` (``edgernn/bench/cpp.py`` + ``floor.cpp``, package data):
its outputs against the slow numpy reference (``tests/reference.py``) for every kind and size it covers,
state carried over between calls and reset; what it does not cover is said in one line; ``edgernn bench``
lists it as a column with its ratio. Skipped where there is no C++ compiler. No timing assertions."""

from __future__ import annotations

import json
import subprocess
import sys
from importlib import resources

import numpy as np
import pytest
from reference import assert_close, reference_predict

from edgernn import artifact
from edgernn.bench import cpp, synthetic

needs_cxx = pytest.mark.skipif(cpp.compiler_problem() is not None, reason=f"{cpp.compiler_problem()}")


def test_floor_cpp_is_package_data():
    assert b'extern "C"' in resources.files("edgernn.bench").joinpath("floor.cpp").read_bytes()


@needs_cxx
@pytest.mark.parametrize(("kind", "size"), [(k, n) for k, _, n in sorted(cpp.SIZES)])
def test_cpp_loop_matches_the_numpy_reference(kind, size):
    plan, tensors = synthetic(kind, 8, size, 3, seed=7)
    f = cpp.CppFloor.for_model(plan, tensors)
    X = np.random.default_rng(1).standard_normal((40, 8)).astype(np.float32)
    want = reference_predict(plan, tensors, X)
    # -ffast-math: the loop's own exp/tanh; float32 sums in another order than the float64 reference
    assert_close(f.run(X), want, atol=1e-5, rtol=1e-4, what=f"{kind} {size} run")
    f.reset()
    got = np.concatenate([f.run(X[:15]), np.stack([f.step(x) for x in X[15:20]]), f.run(X[20:])])
    assert_close(got, want, atol=1e-5, rtol=1e-4, what=f"{kind} {size} in pieces")


def test_cpp_covers_says_why_not():
    assert "no lstm 8->16" in cpp.covers(synthetic("lstm", 8, 16, 1)[0])
    assert "dense reservoir" in cpp.covers(synthetic("esn", 8, 500, 1, density=0.1)[0])
    p = synthetic("gru", 8, 64, 1)[0]
    p["layers"][0]["linear_before_reset"] = 0
    assert "linear_before_reset" in cpp.covers(p)
    assert cpp.covers(synthetic("esn", 8, 500, 1)[0]) is None


@needs_cxx
def test_bench_lists_the_cpp_column_with_its_ratio(tmp_path):
    plan, tensors = synthetic("gru", 8, 64, 1, seed=2)
    path = tmp_path / "gru.ernn"
    artifact.write(path, plan, tensors)
    out = tmp_path / "r.json"
    fast = ["--steps", "100", "--warmup", "10", "--chunk", "50", "--max-streams", "0", "--separate", "0"]
    p = subprocess.run(
        [sys.executable, "-m", "edgernn.cli", "bench", str(path), "--backends", "edgernn,cpp"]
        + [*fast, "--cold-runs", "0", "--no-progress", "--json", str(out)],
        capture_output=True,
        text=True,
        timeout=600,
    )
    assert p.returncode == 0, p.stderr
    r = json.loads(out.read_text())
    c = r["backends"]["cpp"]
    assert c["check"]["agree"] and c["check"]["run"]["agree"], c["check"]
    assert c["step"]["count"] == 100 and c["run"]["us_per_step"] > 0 and "streams" not in c
    ratio = r["cpp_ratio"]
    assert ratio["step_p50"] == pytest.approx(
        r["backends"]["edgernn"]["step"]["p50_us"] / c["run"]["us_per_step"]
    )
    assert "cpp" in p.stdout.splitlines()[4] and "edgernn vs the plain C++ loop" in p.stdout


def test_bench_default_has_cpp_only_for_models_it_covers(tmp_path):
    """A default run of a model floor.cpp does not cover has no cpp column and no note about it."""
    from edgernn.bench import bench

    plan, tensors = synthetic("lstm", 8, 16, 1, seed=2)
    path = tmp_path / "small.ernn"
    artifact.write(path, plan, tensors)
    fast = dict(steps=20, warmup=2, chunk=5, max_streams=0, separate=0, cold_runs=0, check_steps=10)
    r = bench(str(path), progress=False, **fast)
    assert "cpp" not in r["backends"] and "cpp" not in r["skipped"]


@needs_cxx
def test_loading_the_cpp_loop_keeps_the_process_float_mode():
    """The library is compiled with -ffast-math but linked without it: linking crtfastmath.o would turn on
    flush-to-zero for the whole process that loads it (subnormal float32 products would become 0)."""
    code = (
        "import numpy as np\n"
        "from edgernn.bench import cpp, synthetic\n"
        "f = cpp.CppFloor.for_model(*synthetic('lstm', 8, 64, 3, seed=1))\n"
        "f.run(np.ones((3, 8), np.float32))\n"
        "print(repr(float(np.float32(1e-38) * np.float32(1e-3))))\n"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True).stdout
    assert float(out) == pytest.approx(1e-41, rel=1e-2), out
