"""Every ONNX file ``edgernn.export.export`` writes compiles back (issue 13): the ESN's sequence graph
(an ONNX ``Scan`` whose body is the step), its step graph, and the attention model's sequence and step
graphs (running max, sum and accumulator as state: ``Greater``/``Where``/``Max``/``Exp``); an LSTM and a
GRU SequenceModel for ``inspect``.

Oracle: ONNX Runtime — the sequence graph over the T rows of each sequence; the step graph step by step
with its state outputs fed back as its state inputs, from zeros. Checked: ``Stream.run``, ``step``,
``predict``, the numpy backend, and agreement with the export's own ``model.ernn``.
"""

from __future__ import annotations

import numpy as np
import pytest

torch = pytest.importorskip("torch")
ort = pytest.importorskip("onnxruntime")

from edgernn.export import compile_onnx, export  # noqa: E402

import edgernn  # noqa: E402
from edgernn.cli import main  # noqa: E402
from edgernn.esn_model import ESN  # noqa: E402
from edgernn.sequence_model import SequenceModel  # noqa: E402

ATOL, RTOL = 1e-5, 1e-4
T = 30


def close(a, e) -> bool:
    a, e = np.asarray(a, np.float64), np.asarray(e, np.float64)
    return a.shape == e.shape and bool(np.all(np.abs(a - e) <= ATOL + RTOL * np.abs(e)))


def _model(name):
    torch.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(4, T, 3)).astype(np.float32)
    if name == "esn":
        m = ESN(3, 50, 2, leak_rate=0.5)
        m.fit(X, np.random.default_rng(1).normal(size=(4, T, 2)))  # a non-zero readout
        return m, X
    if name == "att":
        return SequenceModel("gru", 3, 16, 2, attention=True), X
    return SequenceModel(name, 3, 16, 2), X


@pytest.fixture(scope="module", params=["esn", "att"])
def exported(request, tmp_path_factory):
    m, X = _model(request.param)
    out = tmp_path_factory.mktemp(request.param)
    export(m.eval(), out, X[:1])
    return request.param, out, X


def _ort_steps(path, X) -> np.ndarray:
    """The step graph over rows X (T, F), its state outputs fed back, from zeros."""
    s = ort.InferenceSession(path)
    ins, outs = s.get_inputs(), [o.name for o in s.get_outputs()]
    state = {i.name: np.zeros([1] + list(i.shape[1:]), np.float32) for i in ins[1:]}
    pairs = {i.name: outs[k + 1] for k, i in enumerate(ins[1:])}  # the exporter writes them in order
    assert all(p.replace("state_out.", "state.") == i for i, p in pairs.items())
    ys = []
    for x in X:
        r = dict(zip(outs, s.run(None, {ins[0].name: x[None], **state}), strict=True))
        ys.append(r[outs[0]][0])
        state = {i: r[o] for i, o in pairs.items()}
    return np.stack(ys)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_sequence_graph_compiles_and_matches_ort(exported, tmp_path, backend):
    name, out, X = exported
    path = str(out / "model.onnx")
    res = compile_onnx(path, str(tmp_path / "seq.ernn"))
    s = ort.InferenceSession(path)
    ref = s.run(None, {s.get_inputs()[0].name: X})[0]
    m = edgernn.load(res["path"], backend=backend)
    mine = edgernn.load(str(out / "model.ernn"), backend=backend)
    for b in range(len(X)):
        Y = m.stream().run(X[b])
        last = ref[b] if ref.ndim == 3 else ref[b][None]  # many_to_many: every row; else the last
        assert close(Y if ref.ndim == 3 else Y[-1:], last)
        st = m.stream()
        assert close(np.stack([st.step(x) for x in X[b]]), Y)
        assert close(np.asarray(m.predict(X[b])).reshape(-1), (Y if ref.ndim == 3 else Y[-1]).reshape(-1))
        assert close(Y, mine.stream().run(X[b]))


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_step_graph_compiles_and_matches_ort_fed_its_state(exported, tmp_path, backend):
    name, out, X = exported
    path = str(out / "model.step.onnx")
    res = compile_onnx(path, str(tmp_path / "step.ernn"))
    m = edgernn.load(res["path"], backend=backend)
    mine = edgernn.load(str(out / "model.ernn"), backend=backend)
    for b in range(2):
        ref = _ort_steps(path, X[b])
        st = m.stream()
        assert close(np.stack([st.step(x) for x in X[b, :10]]), ref[:10])
        assert close(st.run(X[b, 10:]), ref[10:])
        assert close(m.stream().run(X[b]), mine.stream().run(X[b]))
        s2 = m.streams(2)
        ys = np.stack([s2.step(np.stack([x, x])) for x in X[b]])
        assert close(ys[:, 1], ref)


@pytest.mark.parametrize(
    "name, quantize", [("esn", None), ("att", None), ("lstm", None), ("gru", None), ("esn", "int8")]
)
def test_inspect_answers_on_every_file_export_writes(name, quantize, tmp_path, capsys):
    """With int8 too: ORT's quantized ESN step graph interleaves two MatMulIntegers before their scales."""
    m, X = _model(name)
    export(m.eval(), tmp_path, X[:1], quantize=quantize)
    files = sorted(p for p in tmp_path.iterdir() if p.suffix in (".onnx", ".ernn"))
    assert {p.name for p in files} >= {"model.onnx", "model.step.onnx", "model.ernn"}
    for p in files:
        capsys.readouterr()
        assert main(["inspect", str(p)]) == 0
        text = capsys.readouterr().out
        assert "does not compile" not in text, (p.name, text)
        if p.suffix == ".onnx":
            assert "compiles to" in text, (p.name, text)


@pytest.mark.parametrize(
    "name, flavor", [("att", "native"), ("att", "matmul"), ("lstm2", "matmul"), ("bi", "matmul")]
)
def test_plan_built_sequence_graphs_with_scans(name, flavor, tmp_path):
    """``onnx_graph.sequence_graph`` (the parity proof's and bench's ONNX): attention pooling as a Scan
    (m, l, acc state variables, Greater/Where in its body), the "matmul" flavor's cells as Scans; a
    bidirectional layer's reverse Scan is refused naming the attribute."""
    import onnx
    from edgernn.export.from_torch import describe
    from edgernn.export.onnx.errors import CompileError
    from edgernn.export.onnx_graph import sequence_graph

    torch.manual_seed(0)
    X = np.random.default_rng(0).normal(size=(2, T, 3)).astype(np.float32)
    mod = {
        "att": lambda: SequenceModel("gru", 3, 16, 2, attention=True),
        "lstm2": lambda: SequenceModel("lstm", 3, 8, 2, num_layers=2, many_to_many=True),
        "bi": lambda: SequenceModel("gru", 3, 8, 2, bidirectional=True),
    }[name]().eval()
    with torch.no_grad():
        yex = mod(torch.as_tensor(X[:1]))
    desc = describe(mod, example_output_ndim=yex.dim())
    p = str(tmp_path / "seq.onnx")
    onnx.save(sequence_graph(desc.plan, desc.tensors, flavor), p)
    if name == "bi":
        with pytest.raises(CompileError, match="scan_input_directions"):
            compile_onnx(p, p + ".ernn")
        return
    ref = ort.InferenceSession(p).run(None, {"input": X})[0]
    m = edgernn.load(compile_onnx(p, p + ".ernn")["path"])
    for b in range(2):
        Y = m.stream().run(X[b])
        assert close(Y if ref.ndim == 3 else Y[-1], ref[b])


HOSTILE = '"); __import__("os").getcwd(); ("'


def test_no_name_of_a_state_or_where_plan_reaches_the_generated_source(exported, tmp_path):
    """The compiled step graph (state slots with their ``next`` values, comparisons, ``where``, gathers)
    with every value, op and tensor name replaced by a hostile string still loads, streams exactly as
    before, and no piece of those names reaches the generated kernel source."""
    import json

    from edgernn import artifact

    _, out, X = exported
    compile_onnx(str(out / "model.step.onnx"), str(tmp_path / "step.ernn"))
    plan, tensors = artifact.read(tmp_path / "step.ernn")
    vals = {v: f"{HOSTILE}v{k}\n    pwned = 1\n" for k, v in enumerate(plan["values"])}
    tens = {t: f"{HOSTILE}t{k}" for k, t in enumerate(tensors)}
    p = json.loads(json.dumps(plan))
    p["values"] = {vals[v]: d for v, d in plan["values"].items()}
    p["input"]["value"], p["output"]["value"] = vals[plan["input"]["value"]], vals[plan["output"]["value"]]
    kinds = set()
    for k, op in enumerate(p["ops"]):
        kinds.add(op["kind"])
        op["name"] = f"{HOSTILE}op{k}"
        op["inputs"] = [vals[v] for v in op["inputs"]]
        op["outputs"] = [vals[v] for v in op["outputs"]]
        op["tensors"] = {r: tens[t] for r, t in op["tensors"].items()}
        if "next" in op.get("attrs", {}):
            op["attrs"]["next"] = vals[op["attrs"]["next"]]
    assert "state" in kinds
    artifact.write(tmp_path / "h.ernn", p, {tens[t]: a for t, a in tensors.items()})
    src = edgernn.load(tmp_path / "h.ernn", backend="numba").kernel_source
    for piece in (HOSTILE, HOSTILE[:8], "pwned", "getcwd"):
        assert piece not in src, f"{piece!r} reached the generated source"
    want = edgernn.load(tmp_path / "step.ernn").stream().run(X[0])
    np.testing.assert_array_equal(edgernn.load(tmp_path / "h.ernn").stream().run(X[0]), want)
