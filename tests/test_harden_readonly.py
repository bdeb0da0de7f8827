"""Read-only boards (issue 6, part 7), each in a subprocess:

* a copy of the package made read-only, HOME read-only, no cache variable: ``import edgernn``, load and
  step work (kernels compile in memory) and nothing is written anywhere;
* ``edgernn warmup --cache-dir C`` compiles into C, and a later process with ``EDGERNN_CACHE_DIR=C``
  loads the kernels from C (numba's cache hit counters) without compiling, package and HOME read-only;
* a cache directory another user could write to (group/other-writable, below a group/other-writable
  parent, owned by someone else) is refused: the kernels compile in memory, a warning names the
  problem, ``edgernn warmup`` fails with it, and nothing is written into that directory;
* the default cache directory is created private (0700).

"Read-only" is enforced with file modes. As root (CI) modes alone do not stop writes, so the subprocess
drops CAP_DAC_OVERRIDE/CAP_DAC_READ_SEARCH/CAP_FOWNER from its bounding set before exec (prctl), and
then the modes bind it like any user.
"""

from __future__ import annotations

import json
import os
import shutil
import stat
import subprocess
import sys
import tempfile

import pytest

sys.path.insert(0, os.path.dirname(__file__))
import harden_common as hc  # noqa: E402

import edgernn  # noqa: E402
from edgernn import artifact  # noqa: E402

PKG = os.path.dirname(os.path.abspath(edgernn.__file__))
REPO = os.path.dirname(PKG)
IS_ROOT = hasattr(os, "getuid") and os.getuid() == 0
pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="POSIX modes + prctl (Linux)")

_PR_CAPBSET_DROP = 24
_CAPS = (1, 2, 3)  # CAP_DAC_OVERRIDE, CAP_DAC_READ_SEARCH, CAP_FOWNER


def _drop_caps():  # runs in the child between fork and exec
    import ctypes

    libc = ctypes.CDLL(None, use_errno=True)
    for cap in _CAPS:
        if libc.prctl(_PR_CAPBSET_DROP, cap, 0, 0, 0) != 0:
            raise OSError(ctypes.get_errno(), "prctl(PR_CAPBSET_DROP)")


def run_py(code: str, env: dict, *args: str, timeout: int = 1800) -> subprocess.CompletedProcess:
    """Run ``python -c code`` with ``env`` only (plus PATH), unable to write where modes forbid it."""
    full = {"PATH": os.environ.get("PATH", "/usr/bin:/bin"), **env}
    return subprocess.run(
        [sys.executable, "-c", code, *args],
        env=full,
        capture_output=True,
        text=True,
        timeout=timeout,
        cwd="/",  # `python -c` puts the cwd first on sys.path: never the repo
        preexec_fn=_drop_caps if IS_ROOT else None,
    )


def snapshot(root: str) -> dict:
    """path -> (mode, size, mtime_ns) of everything under root."""
    out = {}
    for d, dirs, files in os.walk(root):
        for n in dirs + files:
            p = os.path.join(d, n)
            st = os.lstat(p)
            out[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return out


def make_readonly(root: str) -> None:
    for d, _, files in os.walk(root):
        for n in files:
            os.chmod(os.path.join(d, n), 0o444)
    for d, _, _ in sorted(os.walk(root), key=lambda t: -len(t[0])):
        os.chmod(d, 0o555)


def make_writable(root: str) -> None:
    for d, _, files in os.walk(root):
        os.chmod(d, 0o755)
        for n in files:
            os.chmod(os.path.join(d, n), 0o644)


@pytest.fixture(scope="module")
def board():
    """A world-readable scratch tree: a read-only copy of the package, a read-only HOME, a model file."""
    base = tempfile.mkdtemp(prefix="edgernn-board-")
    os.chmod(base, 0o755)
    site = os.path.join(base, "site")
    # the installed layout: kernels/ and export/ live inside the package (setuptools package-dir)
    shutil.copytree(PKG, os.path.join(site, "edgernn"), ignore=shutil.ignore_patterns("__pycache__"))
    for sub in ("kernels", "export"):
        src = os.path.join(REPO, sub)
        dst = os.path.join(site, "edgernn", sub)
        if os.path.isdir(src) and not os.path.exists(dst):
            shutil.copytree(src, dst, ignore=shutil.ignore_patterns("__pycache__"))
    home = os.path.join(base, "home")
    os.makedirs(home)
    model = os.path.join(base, "model.ernn")
    artifact.write(model, *hc.model("gru"))
    os.chmod(model, 0o444)
    make_readonly(site)
    make_readonly(home)
    yield {"base": base, "site": site, "home": home, "model": model}
    make_writable(base)
    shutil.rmtree(base, ignore_errors=True)


_INFER = r"""
import json, sys
import numpy as np
import edgernn
from edgernn.kernels import config
m = edgernn.load(sys.argv[1])
s = m.stream()
ys = [s.step(np.full(3, 0.1 * k, np.float32)).tolist() for k in range(5)]
step = m._backend.step  # the kernels generated for this model
print(json.dumps({
    "file": edgernn.__file__, "backend": m.backend, "cache": config.CACHE, "problem": config.CACHE_PROBLEM,
    "cache_dir": config.CACHE_DIR, "y": ys,
    "hits": sum(step.stats.cache_hits.values()),
    "misses": sum(step.stats.cache_misses.values()),
}))
"""


def _expected(model):
    m = edgernn.load(model, backend="numpy")
    s = m.stream()
    import numpy as np

    return np.array([s.step(np.full(3, 0.1 * k, np.float32)) for k in range(5)])


def test_readonly_package_and_home_compile_in_memory(board):
    """No cache variable, HOME and package read-only: the kernels compile in memory and inference works."""
    import numpy as np

    before = snapshot(board["base"])
    env = {"HOME": board["home"], "PYTHONPATH": board["site"]}
    r = run_py(_INFER, env, board["model"])
    assert r.returncode == 0, r.stderr[-4000:]
    out = json.loads(r.stdout.strip().splitlines()[-1])
    assert out["file"].startswith(board["site"])  # the read-only copy, not the editable install
    assert out["backend"] == "numba"
    assert out["cache"] is False and "cannot use" in out["problem"]
    np.testing.assert_allclose(np.array(out["y"]), _expected(board["model"]), rtol=1e-4, atol=1e-5)
    assert snapshot(board["base"]) == before  # nothing written: no __pycache__, no cache, no HOME files
    assert "warn" not in r.stderr.lower()  # the default location failing is the documented, silent case


def test_warmup_then_load_from_cache(board):
    """`edgernn warmup --cache-dir C` compiles into C; a later read-only process loads from it."""
    import numpy as np

    cache = os.path.join(board["base"], "cache")
    os.makedirs(cache, mode=0o700)
    try:
        env = {"HOME": board["home"], "PYTHONPATH": board["site"]}
        r = run_py(
            "from edgernn.cli import main; raise SystemExit(main())",
            env,
            "warmup",
            "--cache-dir",
            cache,
            board["model"],
        )
        assert r.returncode == 0, r.stdout + r.stderr[-4000:]
        assert "kernels ready in " + cache in r.stdout
        files = [f for _, _, fs in os.walk(cache) for f in fs]
        assert any(f.endswith(".nbi") for f in files) and any(f.endswith(".nbc") for f in files), files
        for d, _, _ in os.walk(cache):
            if d != cache:
                assert not os.stat(d).st_mode & stat.S_IWOTH, d
        kdir = [d for d in os.listdir(cache) if d.startswith("kernels-")]
        assert len(kdir) == 1 and stat.S_IMODE(os.stat(os.path.join(cache, kdir[0])).st_mode) == 0o700

        before = snapshot(board["base"])
        r = run_py(_INFER, {**env, "EDGERNN_CACHE_DIR": cache}, board["model"])
        assert r.returncode == 0, r.stderr[-4000:]
        out = json.loads(r.stdout.strip().splitlines()[-1])
        assert out["cache"] is True and out["cache_dir"].startswith(cache)
        assert out["hits"] >= 1 and out["misses"] == 0, out  # loaded, not compiled
        np.testing.assert_allclose(np.array(out["y"]), _expected(board["model"]), rtol=1e-4, atol=1e-5)
        assert snapshot(board["base"]) == before  # loading from the cache writes nothing
    finally:
        shutil.rmtree(cache, ignore_errors=True)


_CONFIG = r"""
import json, warnings
with warnings.catch_warnings(record=True) as w:
    warnings.simplefilter("always")
    from edgernn.kernels import config
print(json.dumps({"cache": config.CACHE, "problem": config.CACHE_PROBLEM, "dir": config.CACHE_DIR,
                  "warnings": [str(x.message) for x in w]}))
"""


def _config(env: dict) -> dict:
    r = run_py(_CONFIG, env)
    assert r.returncode == 0, r.stderr[-3000:]
    return json.loads(r.stdout.strip().splitlines()[-1])


@pytest.mark.parametrize(
    "case",
    ["base-777", "base-770", "leaf-777", "leaf-707", "parent-777", "other-owner"],
)
def test_insecure_cache_dir_refused(tmp_path, case):
    if case == "other-owner" and not IS_ROOT:
        pytest.skip("needs root to chown")
    base = tmp_path / "cache"
    base.mkdir(mode=0o700)
    target = base
    if case.startswith("leaf"):  # a pre-made kernels-<digest> directory inside a private base
        probe = _config({"EDGERNN_CACHE_DIR": str(base), "HOME": str(tmp_path)})
        leaf = probe["dir"]
        os.chmod(leaf, 0o777 if case == "leaf-777" else 0o707)
    elif case == "base-777":
        os.chmod(base, 0o777)
    elif case == "base-770":
        os.chmod(base, 0o770)
    elif case == "parent-777":
        os.chmod(tmp_path, 0o777)  # someone else could rename `cache` away and put their own in its place
    elif case == "other-owner":
        os.chown(base, 65534, 65534)
    before = snapshot(str(target))
    env = {"EDGERNN_CACHE_DIR": str(base), "HOME": str(tmp_path)}
    out = _config(env)
    assert out["cache"] is False, out
    reasons = ("writable by group or others", "owned by uid") + (
        ("cannot use",) if case == "other-owner" else ()
    )
    assert any(r in out["problem"] for r in reasons), out
    assert any("kernel cache off" in w for w in out["warnings"]), out
    if case.startswith(("base", "parent", "other")):
        assert snapshot(str(target)) == before  # not even the version subdirectory was made inside
    r = run_py("from edgernn.cli import main; raise SystemExit(main())", env, "warmup")
    assert r.returncode == 1 and "no usable kernel cache" in r.stderr, r.stdout + r.stderr
    os.chmod(tmp_path, 0o700)


def test_sticky_world_writable_parent_is_fine(tmp_path):
    """/tmp-like parents (sticky bit) cannot have our directory renamed away: accepted."""
    os.chmod(tmp_path, 0o1777)
    try:
        out = _config({"EDGERNN_CACHE_DIR": str(tmp_path / "cache"), "HOME": str(tmp_path)})
        assert out["cache"] is True, out
    finally:
        os.chmod(tmp_path, 0o700)


def test_default_cache_dir_is_private(tmp_path):
    home = tmp_path / "home"
    home.mkdir()
    out = _config({"HOME": str(home)})
    assert out["cache"] is True, out
    assert out["dir"].startswith(str(home / ".cache" / "edgernn"))
    assert stat.S_IMODE(os.stat(out["dir"]).st_mode) == 0o700
    assert out["warnings"] == []


def test_unwritable_explicit_cache_dir_warns(board):
    """An explicitly configured cache that cannot be created: in-memory compile, with a warning."""
    out = _config({"EDGERNN_CACHE_DIR": os.path.join(board["home"], "c"), "HOME": board["home"]})
    assert out["cache"] is False and "cannot use" in out["problem"]
    assert any("kernel cache off" in w for w in out["warnings"])
