"""Artifact format 2 (docs/ARTIFACT.md): a dataflow graph of values and ops.

* a hand-written graph and :func:`upgrade` of the same format-1 plan agree, and the chain view gives back
  the format-1 layers;
* every cell type (the cases of tests/test_runtime_cells.py, float32, int8 and fp16) gives outputs
  identical to its format-1 file through ``step``, ``run`` and ``predict``;
* each graph check rejects a hand-made bad graph with its name;
* every format-1 rejection test of tests/test_harden_loader.py runs again on format-2 files (its plans
  are converted by the small converters below, written from the spec, not by the code under test);
* hostile names load (or are refused with a named check) and never change what the model computes.
"""

from __future__ import annotations

import json
import re
import struct
import zlib

import harden_common as hc
import numpy as np
import pytest
import test_harden_loader as HL
from builders import quantize_int8, to_fp16
from test_runtime_cells import CASES, STREAMABLE, _case, _inputs

import edgernn
from edgernn import ArtifactError
from edgernn import artifact as A

F32 = np.float32
NOT_ATTRS = ("kind", "name", "input_size", "output_size", "tensors")


def rejects(check: str, plan: dict, tensors: dict | None = None) -> str:
    """Assert that the plan (and, if given, the tensors) fail with the named check; return the message."""
    with pytest.raises(ArtifactError, match=rf"^{re.escape(check)}: ") as ei:
        p = A.validate_plan(plan)
        if tensors is not None:
            A.validate_tensors(p, tensors)
    return str(ei.value)


# --------------------------------------------------------------------- converters written from the spec


def graph_raw(p1: dict) -> dict:
    """A format-1 plan (possibly invalid) as a format-2 graph, without validating anything.

    The value between two layers takes the *consumer's* ``input_size``: a chain that does not chain
    becomes a graph whose producer disagrees with its output value's shape. A format version other than 1
    is kept (so an unknown version stays unknown)."""
    layers = p1["layers"]
    names = ["input"] + [f"{ly.get('name')}:y" for ly in layers]
    values = {"input": {"shape": [p1["input"]["size"]]}}
    for i, ly in enumerate(layers):
        size = (
            layers[i + 1]["input_size"]
            if i + 1 < len(layers)
            else ly.get("output_size", p1["output"]["size"])
        )
        values[names[i + 1]] = {"shape": [size]}
    ops = [
        {
            "kind": ly.get("kind"),
            "name": ly.get("name"),
            "inputs": [names[i]],
            "outputs": [names[i + 1]],
            "attrs": {k: v for k, v in ly.items() if k not in NOT_ATTRS},
            "tensors": ly.get("tensors", {}),
        }
        for i, ly in enumerate(layers)
    ]
    p2 = {k: v for k, v in p1.items() if k != "layers"}
    if p1.get("format_version") == 1:
        p2["format_version"] = 2
    p2["input"] = {**p1["input"], "value": "input"}
    p2["output"] = {**p1["output"], "value": names[-1]}
    p2.update(values=values, ops=ops)
    return p2


def chain_raw(p2: dict) -> dict:
    """A chain-shaped format-2 graph as a format-1 plan, without validating anything."""
    shape = {v: e["shape"][0] for v, e in p2["values"].items()}
    layers = [
        {
            "kind": op["kind"],
            "name": op["name"],
            "input_size": shape[op["inputs"][0]],
            "output_size": shape[op["outputs"][0]],
            **op["attrs"],
            "tensors": op["tensors"],
        }
        for op in p2["ops"]
    ]
    p1 = {k: v for k, v in p2.items() if k not in ("values", "ops")}
    p1["format_version"] = 1
    p1["input"] = {k: v for k, v in p2["input"].items() if k != "value"}
    p1["output"] = {k: v for k, v in p2["output"].items() if k != "value"}
    p1["layers"] = layers
    return p1


def lstm_graph() -> tuple[dict, dict]:
    """hc.model("lstm") (lstm 3->5, dense 5->2) written by hand as a graph."""
    _, tensors = hc.model("lstm")
    plan = {
        "format": "ernn",
        "format_version": 2,
        "producer": {"name": "edgernn-tests", "version": "0"},
        "input": {"kind": "features", "size": 3, "value": "x"},
        "output": {"size": 2, "sequence": "many_to_many", "labels": None, "value": "y"},
        "quantization": "none",
        "values": {"x": {"shape": [3]}, "h": {"shape": [5]}, "y": {"shape": [2]}},
        "ops": [
            {
                "kind": "lstm",
                "name": "lstm0",
                "inputs": ["x"],
                "outputs": ["h"],
                "attrs": {"hidden_size": 5, "direction": "forward"},
                "tensors": {"W": "lstm0.W", "R": "lstm0.R", "B": "lstm0.B"},
            },
            {
                "kind": "dense",
                "name": "head",
                "inputs": ["h"],
                "outputs": ["y"],
                "attrs": {"activation": "linear"},
                "tensors": {"W": "head.W", "b": "head.b"},
            },
        ],
    }
    return plan, tensors


def with_side(plan: dict, tensors: dict, reads: str = "x", writes: str = "z") -> tuple[dict, dict]:
    """Add (in place) a dense op ``side`` (3 -> 2) reading ``reads`` and writing ``writes`` (declared [2]
    if new)."""
    plan["values"].setdefault(writes, {"shape": [2]})
    plan["ops"].append(
        {
            "kind": "dense",
            "name": "side",
            "inputs": [reads],
            "outputs": [writes],
            "attrs": {},
            "tensors": {"W": "side.W"},
        }
    )
    tensors["side.W"] = np.ones((2, 3), np.float32)
    return plan, tensors


# ------------------------------------------------------------------------------- the graph and views


def test_hand_written_graph_is_valid_and_equals_upgrade():
    plan, tensors = lstm_graph()
    p2 = A.validate_plan(plan)
    A.validate_tensors(p2, tensors)
    assert p2["format_version"] == 2
    assert p2["ops"][0]["attrs"]["activations"] == ["sigmoid", "tanh", "tanh"]  # defaults filled in
    assert p2["ops"][1]["attrs"]["alpha"] == 0.0
    up = A.upgrade(hc.model("lstm")[0])
    rename = {"x": "input", "h": "lstm0:y", "y": "head:y"}
    assert up["values"] == {rename[k]: v for k, v in p2["values"].items()}
    for a, b in zip(up["ops"], p2["ops"], strict=True):
        assert a["inputs"] == [rename[v] for v in b["inputs"]]
        assert a["outputs"] == [rename[v] for v in b["outputs"]]
        assert (a["kind"], a["name"], a["attrs"], a["tensors"]) == (
            b["kind"],
            b["name"],
            b["attrs"],
            b["tensors"],
        )
    assert up["input"]["value"] == "input" and up["output"]["value"] == "head:y"


@pytest.mark.parametrize("seed", sorted(hc.SEEDS))
def test_views_round_trip(seed):
    p1, tensors = hc.SEEDS[seed]()
    p1 = A.validate_plan(p1)
    p2 = A.upgrade(p1)
    A.validate_tensors(p2, tensors)
    assert p2 == A.validate_plan(graph_raw(p1))  # the library's upgrade matches the spec's
    assert A.chain_layers(p2) == A.chain_layers(p1) == p1["layers"]
    assert A.chain_plan(p2) == p1
    assert A.upgrade(p2) == p2 and A.validate_plan(p2) == p2  # idempotent
    assert json.loads(json.dumps(p2)) == p2


def test_write_and_read_both_versions(tmp_path):
    p1, tensors = hc.everything()
    for version, plan in ((1, p1), (2, A.upgrade(p1))):
        path = tmp_path / f"v{version}.ernn"
        written = A.write(path, plan, tensors)
        got, t = A.read(path)
        assert got == written and got["format_version"] == version
        assert set(t) == set(tensors)
        for k in tensors:
            np.testing.assert_array_equal(t[k], tensors[k])
        assert A.parse(path.read_bytes())[0] == got


def test_not_a_chain(monkeypatch):
    """A graph that is valid but not a chain (a two-input op, as the next op kinds will have)."""
    from edgernn import plan as P

    monkeypatch.setitem(P.OP_ARITY, "dense", (2, 1))
    plan, tensors = lstm_graph()
    plan["ops"][1]["inputs"] = ["h", "x"]
    p = A.validate_plan(plan)
    with pytest.raises(ArtifactError, match=r"^not a chain: op 1 \('head', dense\)"):
        A.chain_layers(p)
    with pytest.raises(ArtifactError, match=r"^not a chain: "):
        edgernn.Model(plan, tensors)


# ---------------------------------------------------------------------------- runtime parity


def _variants():
    for case in CASES:
        if _case(case, np.random.default_rng(0))[0]["format_version"] != 1:
            continue  # already a graph (a binary op): there is no format-1 original to compare with
        for q in ("float32", "int8", "fp16"):
            yield pytest.param(case, q, id=f"{case}-{q}")


def _build(case: str, q: str) -> tuple[dict, dict]:
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    plan, tensors = _case(case, rng)
    if q == "int8":
        plan, tensors = quantize_int8(plan, tensors)
    elif q == "fp16":
        plan, tensors = to_fp16(plan, tensors)
    return plan, tensors


@pytest.mark.parametrize("case,q", list(_variants()))
def test_format2_file_runs_like_format1(case, q, tmp_path):
    plan, tensors = _build(case, q)
    f1, f2 = tmp_path / "m1.ernn", tmp_path / "m2.ernn"
    A.write(f1, plan, tensors)
    A.write(f2, A.upgrade(plan), tensors)
    m1, m2 = edgernn.load(f1, backend="numba"), edgernn.load(f2, backend="numba")
    assert m2.plan["format_version"] == 2 and "ops" in m2.plan  # the plan as loaded
    assert (m1.info["format_version"], m2.info["format_version"]) == (1, 2)
    i1, i2 = dict(m1.info), dict(m2.info)
    for k in ("format_version", "source"):
        i1.pop(k), i2.pop(k)
    assert i1 == i2  # layers, sizes, state layout, quantization...
    rng = np.random.default_rng(5)
    X = _inputs(plan, rng, 23)
    np.testing.assert_array_equal(m2.predict(X), m1.predict(X))
    np.testing.assert_array_equal(m2.predict(np.stack([X, X[::-1]])), m1.predict(np.stack([X, X[::-1]])))
    if case not in STREAMABLE:
        return
    s1, s2 = m1.stream(), m2.stream()
    for x in X[:7]:
        np.testing.assert_array_equal(s2.step(x), s1.step(x))
    np.testing.assert_array_equal(s2.run(X[7:]), s1.run(X[7:]))
    np.testing.assert_array_equal(s2.state, s1.state)


def test_model_from_plan_dict():
    plan, tensors = lstm_graph()
    m = edgernn.Model(plan, tensors, backend="numpy")
    ref = edgernn.Model(hc.model("lstm")[0], tensors, backend="numpy")
    assert m.plan == A.validate_plan(plan) and m.info["format_version"] == 2
    assert [ly["name"] for ly in m.info["layers"]] == ["lstm0", "head"]
    assert repr(m).startswith("<edgernn.Model lstm+dense 3->2")
    X = np.random.default_rng(0).normal(size=(9, 3)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(X), ref.predict(X))


def test_inspect_shows_values_and_ops(tmp_path, capsys):
    from edgernn.cli import main

    plan, tensors = lstm_graph()
    path = tmp_path / "m.ernn"
    A.write(path, plan, tensors)
    assert main(["inspect", str(path), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["format_version"] == 2 and "layers" not in info
    assert info["values"] == {"x": [3], "h": [5], "y": [2]}
    ops = [
        (o["name"], o["kind"], o["inputs"], o["outputs"], o["input_size"], o["output_size"])
        for o in info["ops"]
    ]
    assert ops == [("lstm0", "lstm", ["x"], ["h"], 3, 5), ("head", "dense", ["h"], ["y"], 5, 2)]
    assert info["ops"][0]["parameters"] == 20 * 3 + 20 * 5 + 40 and info["parameters"] == 200 + 12
    assert main(["inspect", str(path)]) == 0
    text = capsys.readouterr().out
    assert "values (3): x[3], h[5], y[2]" in text and "x -> h" in text and "h -> y" in text


# --------------------------------------------------------------------------------- graph checks


def _edit(fn):
    def build():
        plan, tensors = lstm_graph()
        out = fn(plan, tensors)
        return out if out is not None else (plan, tensors)

    return build


def _set_in(plan: dict, path: tuple, value) -> None:
    d = plan
    for k in path[:-1]:
        d = d[k]
    d[path[-1]] = value


def _set(path, value):
    """An edit setting plan[path...] = value."""
    return _edit(lambda plan, tensors: _set_in(plan, path, value))


GRAPH_CASES = [
    # unknown value
    ("unknown value", "reads-undeclared", _set(("ops", 1, "inputs"), ["nope"])),
    ("unknown value", "writes-undeclared", _set(("ops", 1, "outputs"), ["nope"])),
    ("unknown value", "reads-unwritten", _edit(lambda p, t: _reads_unwritten(p, t))),
    ("unknown value", "input-undeclared", _set(("input", "value"), "nope")),
    ("unknown value", "output-undeclared", _set(("output", "value"), "nope")),
    # duplicate value
    ("duplicate value", "two-writers", _edit(lambda p, t: with_side(p, t, writes="y"))),
    ("duplicate value", "writes-model-input", _set(("ops", 1, "outputs"), ["x"])),
    # cycle
    ("cycle", "self-loop", _edit(lambda p, t: p["ops"][1].__setitem__("inputs", ["y"]))),
    ("cycle", "two-ops", _set(("ops", 0, "inputs"), ["y"])),
    # bad graph
    ("bad graph", "not-in-order", _edit(lambda p, t: p["ops"].reverse())),
    ("bad graph", "two-inputs", _set(("ops", 1, "inputs"), ["h", "x"])),
    ("bad graph", "no-outputs", _set(("ops", 1, "outputs"), [])),
    ("bad graph", "inputs-not-a-list", _set(("ops", 1, "inputs"), "h")),
    ("bad graph", "input-not-a-string", _set(("ops", 1, "inputs"), [1])),
    ("bad graph", "op-not-an-object", _set(("ops", 1), ["dense"])),
    # shape mismatch
    ("shape mismatch", "producer-vs-value", _set(("values", "h", "shape"), [6])),
    ("shape mismatch", "input-size", _set(("values", "x", "shape"), [4])),
    ("shape mismatch", "output-size", _set(("output", "size"), 3)),
    ("shape mismatch", "bidirectional-doubles", _set(("ops", 0, "attrs", "direction"), "bidirectional")),
    # dangling output / unused value
    ("dangling output", "output-is-input", _edit(lambda p, t: p["output"].update(value="x", size=3))),
    ("dangling output", "output-unwritten", _edit(lambda p, t: _output_unwritten(p))),
    ("unused value", "dead-op", _edit(lambda p, t: with_side(p, t))),
    ("unused value", "declared-only", _set(("values", "spare"), {"shape": [4]})),
    # bad plan / bad field / unknown op kind
    ("bad plan", "layers-in-v2", _set(("layers",), [])),
    ("bad plan", "no-ops", _set(("ops",), [])),
    ("bad plan", "no-values", _set(("values",), {})),
    ("unknown op kind", "kind", _set(("ops", 0, "kind"), "Conv")),
    ("unknown op kind", "unhashable-kind", _set(("ops", 0, "kind"), {"a": 1})),
    ("bad field", "unknown-op-key", _set(("ops", 0, "state"), {})),
    ("bad field", "size-in-attrs", _set(("ops", 1, "attrs", "output_size"), 2)),
    ("bad field", "kind-in-attrs", _set(("ops", 1, "attrs", "kind"), "dense")),
    ("bad field", "attrs-not-object", _set(("ops", 1, "attrs"), [])),
    ("bad field", "tensors-not-object", _set(("ops", 1, "tensors"), "head.W")),
    ("bad field", "duplicate-op-name", _set(("ops", 1, "name"), "lstm0")),
    ("bad field", "op-name-missing", _edit(lambda p, t: p["ops"][1].pop("name") and None)),
    ("bad field", "value-2d", _set(("values", "h", "shape"), [5, 1])),
    ("bad field", "value-extra-key", _set(("values", "h", "dtype"), "F32")),
    ("bad field", "value-bool-size", _set(("values", "h", "shape"), [True])),
    ("bad size", "value-zero", _set(("values", "h", "shape"), [0])),
    ("bad field", "input-value-missing", _edit(lambda p, t: p["input"].pop("value") and None)),
    ("bad field", "input-value-not-a-string", _set(("input", "value"), ["x"])),
    ("bad layer", "token-op-not-first", _edit(lambda p, t: _token_after_lstm(p, t))),
    ("bad layer", "token-input-read-by-lstm", _edit(lambda p, t: _tokens_into_lstm(p, t))),
    # tensors
    ("unused tensor", "stowaway", _edit(lambda p, t: t.__setitem__("stowaway", np.zeros(2, np.float32)))),
    ("tensor missing", "role-missing", _edit(lambda p, t: p["ops"][0]["tensors"].pop("R") and None)),
    ("unexpected tensor", "unknown-role", _set(("ops", 0, "tensors", "Q"), "lstm0.B")),
    ("shape mismatch", "consumer-weights", _edit(lambda p, t: _set_in(t, ("head.W",), np.ones((2, 4), F32)))),
]  # fmt: skip


def _reads_unwritten(plan, tensors):
    plan["values"]["w"] = {"shape": [3]}  # declared, written by nobody
    with_side(plan, tensors, reads="w")


def _output_unwritten(plan):
    plan["values"]["y2"] = {"shape": [2]}
    plan["ops"][1]["outputs"] = ["y2"]  # the model output "y" is declared but nobody writes it


def _token_after_lstm(plan, tensors):
    plan["values"]["e"] = {"shape": [4]}
    plan["ops"][1].update(kind="onehot", outputs=["e"], attrs={"vocab_size": 4}, tensors={})
    plan["ops"].append(
        {"kind": "dense", "name": "d2", "inputs": ["e"], "outputs": ["y"], "tensors": {"W": "head.W"}}
    )
    tensors["head.W"] = np.ones((2, 4), np.float32)
    tensors.pop("head.b")


def _tokens_into_lstm(plan, tensors):
    plan["input"] = {"kind": "tokens", "size": 1, "vocab_size": 5, "value": "x"}
    plan["values"]["x"] = {"shape": [1]}
    tensors["lstm0.W"] = np.zeros((1, 20, 1), np.float32)


@pytest.mark.parametrize("check,build", [pytest.param(c, b, id=f"{c}-{i}") for c, i, b in GRAPH_CASES])
def test_graph_check(check, build):
    plan, tensors = build()
    msg = rejects(check, plan, tensors)
    assert len(msg) < 1000


def test_graph_cases_control():
    """The unedited graph, and the graph with a used side branch, are valid: each case above changes
    exactly what it names."""
    plan, tensors = lstm_graph()
    A.validate_tensors(A.validate_plan(plan), tensors)
    # a second op reading x is fine as long as its output is used... which no one-input kind can do:
    # the side op's output is then unused, so a valid graph of today's kinds is a chain
    with pytest.raises(ArtifactError, match="^unused value: value 'z'"):
        A.validate_plan(with_side(plan, tensors)[0])


def test_cycle_message_names_the_ops():
    plan, _ = lstm_graph()
    plan["ops"][0]["inputs"] = ["y"]
    msg = rejects("cycle", plan)
    assert "'lstm0'" in msg and "'head'" in msg


@pytest.mark.parametrize("version", [True, 2.0, "2", 3])
def test_format_version_must_be_an_int(version):
    plan, _ = lstm_graph()
    plan["format_version"] = version
    rejects("unknown format version", plan)


# --------------------------------------------------------------------------------- hostile names

HOSTILE = [
    'a"b',
    "it's",
    "line\nbreak",
    "__import__('os').system('echo pwned')",
    "'; import os; #",
    "{0}{1}%s\\x00",
    "\x00\x1b[2J",
    "日本語",
    " ",
    "x" * A.MAX_NAME,
]


@pytest.mark.parametrize("name", HOSTILE, ids=range(len(HOSTILE)))
def test_hostile_names_load_and_compute_the_same(name, tmp_path, capsys):
    plan, tensors = lstm_graph()
    plan["ops"][0]["name"] = name
    plan["values"][name] = plan["values"].pop("h")  # the value named like the op
    plan["ops"][0]["outputs"] = [name]
    plan["ops"][1]["inputs"] = [name]
    A.write(tmp_path / "m.ernn", plan, tensors)
    m = edgernn.load(tmp_path / "m.ernn", backend="numba")  # the kernels generated for this model
    assert m.info["layers"][0]["name"] == name
    X = np.random.default_rng(0).normal(size=(6, 3)).astype(np.float32)
    ref = edgernn.Model(lstm_graph()[0], tensors, backend="numba")
    np.testing.assert_array_equal(m.predict(X), ref.predict(X))
    from edgernn.cli import main

    assert main(["inspect", str(tmp_path / "m.ernn")]) == 0
    out = capsys.readouterr().out
    assert "\x1b" not in out and "\x00" not in out
    assert len(out.splitlines()) == len(main_lines_for(tmp_path, capsys))


def main_lines_for(tmp_path, capsys) -> list[str]:
    """The lines `inspect` prints for the clean graph: a hostile name never adds a line."""
    from edgernn.cli import main

    plan, tensors = lstm_graph()
    A.write(tmp_path / "clean.ernn", plan, tensors)
    assert main(["inspect", str(tmp_path / "clean.ernn")]) == 0
    return capsys.readouterr().out.splitlines()


@pytest.mark.parametrize(
    "where,name",
    [
        ("op", "x" * (A.MAX_NAME + 1)),
        ("op", 7),
        ("op", ""),
        ("value", "v" * (A.MAX_VALUE_NAME + 1)),
        ("value", ""),
        ("value", "y" * 10**6),
    ],
    ids=["op-long", "op-int", "op-empty", "value-long", "value-empty", "value-megabyte"],
)
def test_bad_names_are_refused(where, name):
    plan, _ = lstm_graph()
    if where == "op":
        plan["ops"][0]["name"] = name
    else:
        plan["values"][name] = plan["values"].pop("h")
        plan["ops"][0]["outputs"] = [name]
        plan["ops"][1]["inputs"] = [name]
    msg = rejects("bad field", plan)
    assert len(msg) < 1000


def test_long_layer_names_are_refused_in_format1_too():
    plan, _ = hc.model("lstm")
    plan["layers"][0]["name"] = "n" * (A.MAX_NAME + 1)
    rejects("bad field", plan)
    plan["layers"][0]["name"] = "n" * A.MAX_NAME  # the longest name: upgrade still fits its value names
    assert A.upgrade(plan)["ops"][0]["outputs"] == ["n" * A.MAX_NAME + ":y"]


# ------------------------------------------------------- the format-1 rejection tests, on format 2

#: tests of test_harden_loader.py that do not run on format 2, and why
NOT_TWINNED = {
    "test_size_product_in_plan_overflow": "edits the plan's layers inside a header edit (covered: bad size)",
    "test_valid_files_round_trip": "compares with a format-1 write (see test_write_and_read_both_versions)",
    "test_header_not_json": "no plan",
    "test_not_a_regular_file": "no plan",
    "test_missing_file_is_artifact_error": "no plan",
    "test_writer_leaves_no_temp_file_on_failure": "writes a format-1 plan",
}
#: checks renamed in format 2
TWIN = {"layers do not chain": "shape mismatch", "unknown layer kind": "unknown op kind"}
#: per test, where "unexpected tensor" (format 1: an unused file tensor) is "unused tensor" in format 2
TWIN_BY_TEST = {"test_unexpected_tensor_in_file": {"unexpected tensor": "unused tensor"}}
#: tests whose bad plan is raw text (their check comes before any version)
TEXT_PLANS = {"test_plan_duplicate_key", "test_plan_not_json", "test_bad_recurrent_fields"}

_REJECTS_V1 = HL.rejects
for _name in [n for n in dir(HL) if n.startswith("test_") and n not in NOT_TWINNED]:
    globals()[f"{_name}__format2"] = getattr(HL, _name)
del _name


def _plan_of(data: bytes) -> dict | None:
    try:
        header, _ = hc.split(data)
        return json.loads(header["__metadata__"]["edgernn.plan"])
    except (ValueError, KeyError, TypeError, RecursionError, struct.error):
        return None


@pytest.fixture(autouse=True)
def _as_format2(request, monkeypatch):
    """For the tests taken from test_harden_loader: every plan packed or edited becomes a graph."""
    if request.function.__module__ != HL.__name__:
        yield
        return
    test = request.node.originalname.removesuffix("__format2")
    twins = {**TWIN, **TWIN_BY_TEST.get(test, {})}
    pack, with_plan = hc.pack, HL.with_plan

    def pack2(plan, tensors, **kw):
        if isinstance(plan, dict) and plan.get("format_version") == 1:
            plan = graph_raw(plan)
        return pack(plan, tensors, **kw)

    def with_plan2(data, fn):
        def edit(p2):
            p1 = chain_raw(p2)
            fn(p1)
            p2.clear()
            p2.update(graph_raw(p1))

        return with_plan(data, edit)

    def rejects2(check, data, **kw):
        p = _plan_of(data)
        if test not in TEXT_PLANS:
            assert p is None or p.get("format_version") != 1, "a format-1 file slipped through"
        return _REJECTS_V1(twins.get(check, check), data, **kw)

    monkeypatch.setattr(hc, "pack", pack2)
    monkeypatch.setattr(HL, "with_plan", with_plan2)
    monkeypatch.setattr(HL, "rejects", rejects2)
    yield


def test_twins_cover_every_loader_test():
    """Every format-1 loader test runs on format 2 too, or says why not."""
    names = {n for n in dir(HL) if n.startswith("test_")}
    assert set(NOT_TWINNED) <= names
    assert {n for n in globals() if n.endswith("__format2")} == {
        f"{n}__format2" for n in names - set(NOT_TWINNED)
    }


# ----------------------------------------------------------------------------------- fuzzing


@pytest.mark.parametrize("fuzz", ["test_fuzz_header_json", "test_fuzz_shapes_and_offsets"])
def test_fuzz_format2(fuzz, monkeypatch):
    """The loader's hypothesis fuzzers (tests/test_harden_fuzz.py) on format-2 seeds: every mutated
    graph is refused with a named check or loads and runs."""
    import test_harden_fuzz as HF

    seeds = {
        k: hc.pack(graph_raw(A.validate_plan(p)), t) for k, (p, t) in ((k, f()) for k, f in hc.SEEDS.items())
    }
    assert set(seeds) == set(HF.SEEDS) and all(_plan_of(d)["format_version"] == 2 for d in seeds.values())
    monkeypatch.setattr(HF, "SEEDS", seeds)
    from edgernn.runtime import get_backend

    get_backend()  # compile (or load from the cache) before the fuzzers' watchdog is on
    getattr(HF, fuzz)()
