"""Fuzzing the loader (issue 6, part 1): hypothesis mutations of valid artifacts.

Seeds: one valid file per model family in tests/harden_common.py (every layer kind, int8, fp16, tokens,
bidirectional). Mutations: byte flips, truncation/extension, edits anywhere in the header JSON or the
plan JSON inside it, and tensor shape/offset/dtype edits. The only allowed outcomes are:

* ``ArtifactError`` from the loader, or
* a successful load, after which a stream ``step`` (or ``predict`` for a non-streamable model) runs and
  returns an array of the model's output shape.

Any other exception fails, and so does an example that runs past a watchdog (a hang) or whose parse
allocates more than a fixed budget (tracemalloc peak; numpy reports its buffers to tracemalloc).
At least 2,000 examples run per CI run (the counts are asserted and printed). Under ``CI=true`` the
examples are derandomized so CI is reproducible; locally each run explores new ones.
"""

from __future__ import annotations

import collections
import json
import os
import signal
import struct
import sys
import tracemalloc

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

sys.path.insert(0, os.path.dirname(__file__))
import harden_common as hc  # noqa: E402

from edgernn import ArtifactError  # noqa: E402
from edgernn import artifact as A  # noqa: E402

SEEDS = {k: hc.pack(*f()) for k, f in hc.SEEDS.items()}
NAMES = sorted(SEEDS)
PARSE_MEMORY_BUDGET = 32 << 20  # bytes; the seeds are < 10 kB
WATCHDOG_S = 60  # a hang, not a timing budget: one example normally takes milliseconds

FUZZ = settings(
    deadline=None,
    database=None,
    derandomize=os.environ.get("CI", "") not in ("", "0", "false"),
    suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large],
    print_blob=True,
)


class Hang(Exception):
    pass


def _alarm(signum, frame):
    raise Hang(f"one example ran for more than {WATCHDOG_S} s")


def outcome(data: bytes) -> str:
    """Load ``data`` and run one step; return ``"rejected"`` or ``"ran"``. Anything else propagates."""
    from edgernn.runtime import Model

    old = signal.signal(signal.SIGALRM, _alarm)
    signal.alarm(WATCHDOG_S)
    try:
        tracemalloc.start()  # only around the parse: tracing everything would slow hypothesis down 2-3x
        try:
            plan, tensors = A.parse(data)
        except ArtifactError as e:
            assert str(e).split(":", 1)[0] and ": " in str(e), f"message without a check name: {e}"
            return "rejected"
        finally:
            peak = tracemalloc.get_traced_memory()[1]
            tracemalloc.stop()
            assert peak < PARSE_MEMORY_BUDGET, f"parse of {len(data)} bytes peaked at {peak} bytes"
        try:
            m = Model(plan, tensors)
        except ArtifactError:
            return "rejected"
        o = m.output_size
        if m.plan["input"]["kind"] == "tokens":
            x = np.array([min(1, m.plan["input"]["vocab_size"] - 1)], np.float32)
        else:
            x = np.linspace(-1, 1, m.input_size).astype(np.float32)
        if m.info["streamable"]:
            y = m.stream().step(x)
            assert y.shape == (o,) and y.dtype == np.float32
        y = m.predict(np.stack([x, x, x]))
        assert y.shape == ((3, o) if m.plan["output"]["sequence"] == "many_to_many" else (o,))
        return "ran"
    finally:
        signal.alarm(0)
        signal.signal(signal.SIGALRM, old)


@pytest.fixture(scope="module", autouse=True)
def _compiled():
    from edgernn.runtime import get_backend

    get_backend()  # compile (or load from the cache) before the watchdog is on


def _run(fn, n: int, stats: collections.Counter) -> None:
    fn()
    total = sum(stats.values())
    print(f"{fn.__name__}: {total} examples, {dict(stats)}")
    assert total >= n, f"only {total} examples ran"


# ------------------------------------------------------------------------------ strategies

seed_names = st.sampled_from(NAMES)


def _json_paths(obj, prefix=()):
    """Every (path, value) in a JSON tree, the plan string inside __metadata__ decoded as a subtree."""
    yield prefix, obj
    if isinstance(obj, dict):
        for k, v in obj.items():
            yield from _json_paths(v, prefix + (k,))
    elif isinstance(obj, list):
        for i, v in enumerate(obj):
            yield from _json_paths(v, prefix + (i,))


def _decoded(data: bytes):
    header, body = hc.split(data)
    header["__metadata__"]["edgernn.plan"] = json.loads(header["__metadata__"]["edgernn.plan"])
    return header, body


def _encoded(header, body) -> bytes:
    meta = header.get("__metadata__")
    if isinstance(meta, dict) and not isinstance(meta.get("edgernn.plan"), str):
        meta["edgernn.plan"] = json.dumps(meta.get("edgernn.plan"))
    return hc.pack_raw(json.dumps(header).encode(), body)


INTS = st.sampled_from([0, 1, -1, 2, 3, 4, 7, 8, 255, 2**24, 2**24 + 1, 2**31, 2**32, 2**63, 2**64, -(2**63)])
SCALARS = st.one_of(
    INTS,
    st.integers(-(10**6), 10**6),
    st.floats(allow_nan=False, allow_infinity=False),
    st.sampled_from([0.5, 1.0, 1e-45, 1e38, 1e300, -0.0]),
    st.booleans(),
    st.none(),
    st.sampled_from(["", "F32", "F16", "I8", "I32", "F64", "lstm", "gru", "rnn", "esn", "dense", "tokens"]),
    st.sampled_from(["forward", "reverse", "bidirectional", "many_to_one", "int8", "fp16", "none"]),
    st.sampled_from(["softmax", "relu", "tanh", "extended", "state", "attention", "onehot", "embedding"]),
    st.text(max_size=8),
)
JSON_VALUES = st.recursive(
    SCALARS,
    lambda c: st.lists(c, max_size=4) | st.dictionaries(st.text(max_size=6), c, max_size=3),
    max_leaves=8,
)


@st.composite
def header_edits(draw):
    name = draw(seed_names)
    header, body = _decoded(SEEDS[name])
    for _ in range(draw(st.integers(1, 3))):
        paths = [p for p, _ in _json_paths(header) if p]  # again: the last edit may have changed the tree
        if not paths:
            break
        path = draw(st.sampled_from(paths))
        parent = header
        for k in path[:-1]:
            parent = parent[k]
        key = path[-1]
        op = draw(st.sampled_from(["set", "set", "set", "delete", "add", "numeric"]))
        if op == "delete":
            del parent[key]
        elif op == "add" and isinstance(parent, dict):
            parent[draw(st.text(max_size=10))] = draw(JSON_VALUES)
        elif op == "add":
            parent.insert(key, draw(JSON_VALUES))
        elif op == "numeric" and isinstance(parent[key], int) and not isinstance(parent[key], bool):
            parent[key] = parent[key] + draw(st.sampled_from([-2, -1, 1, 2, 4, 8, 2**24, -(2**24)]))
        else:
            parent[key] = draw(JSON_VALUES)
    return _encoded(header, body)


@st.composite
def tensor_edits(draw):
    name = draw(seed_names)
    header, body = hc.split(SEEDS[name])
    tnames = sorted(k for k in header if k != "__metadata__")
    for _ in range(draw(st.integers(1, 2))):
        t = draw(st.sampled_from(tnames))
        e = header[t]
        op = draw(
            st.sampled_from(["dim", "add_dim", "drop_dim", "shift", "end", "swap", "dtype", "same_bytes"])
        )
        if op == "dim" and e["shape"]:
            i = draw(st.integers(0, len(e["shape"]) - 1))
            e["shape"][i] = max(0, e["shape"][i] + draw(st.sampled_from([-1, 1, 2, 2**20, 2**24])))
        elif op == "add_dim":
            e["shape"].insert(draw(st.integers(0, len(e["shape"]))), draw(st.sampled_from([0, 1, 2])))
        elif op == "drop_dim" and e["shape"]:
            e["shape"].pop(draw(st.integers(0, len(e["shape"]) - 1)))
        elif op == "shift":
            d = draw(st.sampled_from([-4, -2, -1, 1, 2, 4, 8, len(body), -len(body)]))
            e["data_offsets"] = [e["data_offsets"][0] + d, e["data_offsets"][1] + d]
        elif op == "end":
            e["data_offsets"][1] += draw(st.sampled_from([-4, -1, 1, 4]))
        elif op == "swap":
            u = header[draw(st.sampled_from(tnames))]
            e["data_offsets"], u["data_offsets"] = u["data_offsets"], e["data_offsets"]
        elif op == "dtype":
            e["dtype"] = draw(st.sampled_from(["F32", "F16", "I8", "I32"]))
        elif op == "same_bytes":
            # reshape keeping the byte count: passes every size check, must fail on the plan's shape
            n = int(np.prod(e["shape"])) if e["shape"] else 1
            e["shape"] = draw(st.sampled_from([[n], [1, n], [n, 1], [1, 1, n]]))
    return hc.pack_raw(json.dumps(header).encode(), body)


@st.composite
def byte_flips(draw):
    data = bytearray(SEEDS[draw(seed_names)])
    region = draw(st.sampled_from(["any", "length", "body", "body"]))
    (hlen,) = struct.unpack("<Q", data[:8])
    lo, hi = {"any": (0, len(data)), "length": (0, 8), "body": (8 + hlen, len(data))}[region]
    for _ in range(draw(st.integers(1, 8))):
        pos = draw(st.integers(lo, hi - 1))
        data[pos] ^= draw(st.integers(1, 255))
    return bytes(data)


@st.composite
def truncations(draw):
    data = SEEDS[draw(seed_names)]
    cut = draw(st.integers(0, len(data)))
    return data[:cut] + draw(st.binary(max_size=16))


# ------------------------------------------------------------------------------ tests


def test_fuzz_byte_flips():
    stats = collections.Counter()

    @settings(FUZZ, max_examples=700)
    @given(byte_flips())
    def byte_flip_examples(data):
        stats[outcome(data)] += 1

    _run(byte_flip_examples, 700, stats)
    assert stats["ran"] > 0 and stats["rejected"] > 0  # both outcomes are really exercised


def test_fuzz_truncation():
    stats = collections.Counter()

    @settings(FUZZ, max_examples=300)
    @given(truncations())
    def truncation_examples(data):
        stats[outcome(data)] += 1

    _run(truncation_examples, 300, stats)


def test_fuzz_header_json():
    stats = collections.Counter()

    @settings(FUZZ, max_examples=700)
    @given(header_edits())
    def header_examples(data):
        stats[outcome(data)] += 1

    _run(header_examples, 700, stats)
    assert stats["rejected"] > 0


def test_fuzz_shapes_and_offsets():
    stats = collections.Counter()

    @settings(FUZZ, max_examples=500)
    @given(tensor_edits())
    def tensor_examples(data):
        stats[outcome(data)] += 1

    _run(tensor_examples, 500, stats)
    assert stats["rejected"] > 0


@pytest.mark.parametrize("name", NAMES)
def test_seeds_run(name):
    """The control: every unmutated seed loads and steps (so 'ran' above means something)."""
    assert outcome(SEEDS[name]) == "ran"
