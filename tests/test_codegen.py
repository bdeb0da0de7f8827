"""The kernels generated for each model (kernels/codegen.py): what goes into the source, the cache.

Numerical agreement of the generated kernels with the float64 reference is tested for every layer kind
in test_runtime_cells.py (the numba backend runs them); here: the generator's own properties.
"""

from __future__ import annotations

import os
import stat
import subprocess
import sys

import numpy as np
import pytest
from builders import dense, model, recurrent
from edgernn.kernels import codegen
from reference import assert_close, reference_predict

import edgernn
from edgernn import artifact

HOSTILE = [
    "'); import os; os.system('echo pwned') #",
    '"""\nimport os\n"""',
    "__import__('os').getcwd()",
    "x" * 5000,
    "\\\n\r\t\x00end",
    "{I(0)}{0}%s",
]


def _hostile_model(rng):
    layers = [
        recurrent(rng, "gru", HOSTILE[0], 3, 8),
        recurrent(rng, "lstm", HOSTILE[1], 8, 8),
        dense(rng, HOSTILE[2], 8, 2),
    ]
    plan, tensors = model(layers, 3, labels=[HOSTILE[3], HOSTILE[4]])
    # tensor names from the file too
    renamed = {}
    for layer, tag in zip(plan["layers"], HOSTILE, strict=False):
        for role, name in list(layer["tensors"].items()):
            new = f"{tag}|{role}|{HOSTILE[5]}"
            renamed[new] = tensors.pop(name)
            layer["tensors"][role] = new
    tensors.update(renamed)
    plan["producer"] = {"name": HOSTILE[0], "note": HOSTILE[1]}
    return plan, tensors


def test_no_string_from_the_file_reaches_the_generated_source(tmp_path):
    """Names, labels and producer fields of a hostile plan load, run right and never appear in the code."""
    rng = np.random.default_rng(0)
    plan, tensors = _hostile_model(rng)
    path = tmp_path / "hostile.ernn"
    artifact.write(path, plan, tensors)
    m = edgernn.load(path, backend="numba")
    src = m.kernel_source
    assert src and "def step(" in src and "def seq(" in src
    for s in HOSTILE:
        for piece in (s, s[:12], "pwned", "getcwd"):
            assert piece not in src, f"{piece!r} reached the generated source"
    X = rng.normal(size=(20, 3)).astype(np.float32)
    ref = reference_predict(m.plan, tensors, X)
    s = m.stream()
    assert_close(np.stack([s.step(x) for x in X]), ref, what="hostile step")
    assert_close(m.predict(X), ref, what="hostile predict")
    # the source is made of the generator's own text: every identifier and literal is ours
    compile(src, "<generated>", "exec")  # it is valid Python


def test_source_depends_only_on_the_packed_numbers():
    """Two models with the same structure and other names get the same source (one cache entry); another
    size gets another source."""
    rng = np.random.default_rng(1)
    a = edgernn.Model(*model([recurrent(rng, "lstm", "a", 4, 8), dense(rng, "d", 8, 1)], 4))
    b = edgernn.Model(*model([recurrent(rng, "lstm", "other", 4, 8), dense(rng, "zz", 8, 1)], 4))
    c = edgernn.Model(*model([recurrent(rng, "lstm", "a", 4, 9), dense(rng, "d", 9, 1)], 4))
    assert a.kernel_source == b.kernel_source
    assert a.kernel_source != c.kernel_source
    assert edgernn.Model(*model([dense(rng, "d", 4, 1)], 4), backend="numpy").kernel_source is None


def test_generated_module_is_cached_privately(tmp_path):
    """With the kernel cache on, the source is written under <cache>/models, readable by its owner only;
    a second process loads it from there (numba cache hit, nothing recompiled)."""
    rng = np.random.default_rng(2)
    path = tmp_path / "m.ernn"
    artifact.write(path, *model([recurrent(rng, "rnn", "r", 3, 5), dense(rng, "d", 5, 2)], 3))
    cache = tmp_path / "cache"
    cache.mkdir(mode=0o700)
    code = (
        "import sys, json, numpy as np, edgernn\n"
        "m = edgernn.load(sys.argv[1], backend='numba')\n"
        "y = m.stream().step(np.ones(3, np.float32))\n"
        "st = m._backend.step.stats\n"
        "print(json.dumps([sum(st.cache_hits.values()), sum(st.cache_misses.values()), y.tolist()]))\n"
    )
    env = dict(os.environ, EDGERNN_CACHE_DIR=str(cache))
    env.pop("NUMBA_CACHE_DIR", None)
    outs = []
    for _ in range(2):
        r = subprocess.run([sys.executable, "-c", code, str(path)], env=env, capture_output=True, text=True)
        assert r.returncode == 0, r.stderr[-3000:]
        outs.append(r.stdout.strip().splitlines()[-1])
    import json

    (h1, m1, y1), (h2, m2, y2) = (json.loads(o) for o in outs)
    assert m1 >= 1 and h2 >= 1 and m2 == 0, outs  # compiled once, then loaded
    assert y1 == y2
    files = [
        os.path.join(d, f)
        for d, _, fs in os.walk(cache)
        for f in fs
        if f.startswith("m_") and f.endswith(".py")
    ]
    assert len(files) == 1
    assert stat.S_IMODE(os.stat(files[0]).st_mode) & 0o077 == 0
    assert stat.S_IMODE(os.stat(os.path.dirname(files[0])).st_mode) & 0o077 == 0


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_not_streamable_model_step_kernel_refuses(backend):
    """A bidirectional model: stream() is refused before any kernel runs; its step kernel returns a
    status instead of running a direction it cannot stream."""
    rng = np.random.default_rng(3)
    m = edgernn.Model(*model([recurrent(rng, "gru", "g", 3, 4, "bidirectional")], 3), backend=backend)
    with pytest.raises(edgernn.EdgeRNNError, match="cannot stream"):
        m.stream()
    p = m._packed
    M = m._m0.copy()
    assert m._backend.step(np.zeros(3, np.float32), p.wf, p.wb, M) == 5
    assert np.array_equal(M, m._m0)


def test_inspect_source_prints_the_generated_kernels(tmp_path):
    """`edgernn inspect --source MODEL.ernn` prints what the runtime compiles for that model."""
    rng = np.random.default_rng(4)
    plan, tensors = _hostile_model(rng)
    path = tmp_path / "m.ernn"
    artifact.write(path, plan, tensors)
    r = subprocess.run(
        [sys.executable, "-m", "edgernn.cli", "inspect", "--source", str(path)],
        capture_output=True,
        text=True,
    )
    assert r.returncode == 0, r.stderr[-2000:]
    assert r.stdout == edgernn.load(path, backend="numba").kernel_source
    assert "def step(" in r.stdout and all(s[:12] not in r.stdout for s in HOSTILE)


def _chunk_models(rng):
    from builders import esn

    yield "lstm", model([recurrent(rng, "lstm", "r", 3, 8), dense(rng, "d", 8, 2)], 3)
    yield "gru", model([recurrent(rng, "gru", "r", 3, 8, linear_before_reset=1), dense(rng, "d", 8, 2)], 3)
    yield "gru-lbr0", model([recurrent(rng, "gru", "r", 3, 8), dense(rng, "d", 8, 2)], 3)
    yield "rnn", model([recurrent(rng, "rnn", "r", 3, 8), dense(rng, "d", 8, 2)], 3)
    yield "esn-extended", model([esn(rng, "e", 3, 8, readout_input="extended"), dense(rng, "d", 12, 2)], 3)
    yield (
        "lstm-stacked",
        model(
            [recurrent(rng, "lstm", "a", 3, 8), recurrent(rng, "gru", "b", 8, 6), dense(rng, "d", 6, 2)], 3
        ),
    )


def test_chunk_mode_with_hoisted_input_projection_matches_the_reference(monkeypatch):
    """run over 600 steps (layer 0's input projection computed per block of up to 256 steps, so several
    blocks and a partial one), in two uneven chunks, equals the float64 reference over the whole sequence
    for each recurrent kind and a reservoir; the step kernel (transposed input part) agrees as well."""
    monkeypatch.setattr(codegen, "HOIST", True)  # off by default (no faster here), kept correct
    rng = np.random.default_rng(7)
    X = rng.standard_normal((600, 3)).astype(np.float32)
    for name, (plan, tensors) in _chunk_models(rng):
        m = edgernn.Model(plan, tensors, backend="numba")
        assert "P = buf[" in m.kernel_source, name  # the hoisted path was generated
        ref = reference_predict(plan, tensors, X)
        s = m.stream()
        got = np.concatenate([s.run(X[:37]), s.run(X[37:])])
        assert_close(got, ref, atol=2e-5, rtol=2e-4, what=f"{name} run")
        s2 = m.stream()
        assert_close(np.stack([s2.step(x) for x in X[:50]]), ref[:50], atol=2e-5, rtol=2e-4, what=name)
