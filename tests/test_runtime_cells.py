"""Every layer kind, and stacks of them, against the float64 numpy reference (tests/reference.py).

Parametrized over a case table; ``test_every_layer_kind_is_covered`` fails when a kind registered in
edgernn.artifact.LAYER_KINDS has no case here.
"""

from __future__ import annotations

import zlib

import numpy as np
import pytest
from builders import attention, dense, esn, model, quantize_int8, recurrent, to_fp16
from reference import assert_close, reference_predict

import edgernn
from edgernn.artifact import LAYER_KINDS


def _case(name, rng):
    """(plan, tensors) for the named case."""
    I = 5
    if name == "rnn_tanh":
        return model([recurrent(rng, "rnn", "r", I, 16), dense(rng, "d", 16, 3)], I)
    if name == "rnn_relu":
        return model([recurrent(rng, "rnn", "r", I, 16, activations=["relu"]), dense(rng, "d", 16, 2)], I)
    if name == "rnn_onnx_acts":
        layer = recurrent(
            rng,
            "rnn",
            "r",
            I,
            8,
            activations=["scaled_tanh"],
            activation_alpha=[0.8],
            activation_beta=[1.3],
            clip=1.5,
        )
        return model([layer], I)
    if name == "lstm":
        return model([recurrent(rng, "lstm", "l", I, 16), dense(rng, "d", 16, 1)], I, sequence="many_to_one")
    if name == "lstm_peephole_clip_forget":
        layer = recurrent(
            rng, "lstm", "l", I, 12, P=True, initial_h=True, initial_c=True, clip=0.7, input_forget=True
        )
        return model([layer], I)
    if name == "lstm_acts":
        layer = recurrent(
            rng,
            "lstm",
            "l",
            I,
            8,
            activations=["hard_sigmoid", "softsign", "elu"],
            activation_alpha=[0.3, 0.0, 0.9],
            activation_beta=[0.4, 0.0, 0.0],
        )
        return model([layer], I)
    if name == "gru_lbr0":
        return model([recurrent(rng, "gru", "g", I, 16), dense(rng, "d", 16, 2)], I)
    if name == "gru_lbr1":
        return model([recurrent(rng, "gru", "g", I, 16, linear_before_reset=1, initial_h=True)], I)
    if name == "gru_acts_clip":
        layer = recurrent(
            rng,
            "gru",
            "g",
            I,
            8,
            activations=["hard_sigmoid", "softplus"],
            activation_alpha=[0.3, 0],
            activation_beta=[0.45, 0],
            clip=2.0,
            linear_before_reset=1,
        )
        return model([layer], I)
    if name == "bidirectional_lstm":
        return model([recurrent(rng, "lstm", "l", I, 8, "bidirectional", P=True), dense(rng, "d", 16, 2)], I)
    if name == "reverse_gru":
        return model([recurrent(rng, "gru", "g", I, 8, "reverse")], I)
    if name == "bidirectional_lstm_final":  # ONNX Y_h of a bidirectional node, then a readout
        fin = {"kind": "final", "name": "f", "input_size": 16, "output_size": 16}
        fin.update(hidden_size=8, direction="bidirectional")
        layers = [recurrent(rng, "lstm", "l", I, 8, "bidirectional"), (fin, {}), dense(rng, "d", 16, 2)]
        return model(layers, I, sequence="many_to_one")
    if name == "reverse_gru_final":
        fin = {"kind": "final", "name": "f", "input_size": 8, "output_size": 8}
        fin.update(hidden_size=8, direction="reverse")
        return model([recurrent(rng, "gru", "g", I, 8, "reverse"), (fin, {})], I, sequence="many_to_one")
    if name == "bidirectional_rnn_gru_stack":
        return model(
            [
                recurrent(rng, "rnn", "r", I, 6, "bidirectional"),
                recurrent(rng, "gru", "g", 12, 7, "bidirectional"),
            ],
            I,
        )
    if name == "stacked_lstm_gru_rnn":
        return model(
            [
                recurrent(rng, "lstm", "l0", I, 12),
                recurrent(rng, "gru", "g1", 12, 10, linear_before_reset=1),
                recurrent(rng, "rnn", "r2", 10, 9),
                dense(rng, "d", 9, 4, activation="softmax"),
            ],
            I,
        )
    if name == "esn_dense":
        return model([esn(rng, "e", I, 40), dense(rng, "d", 40, 2)], I)
    if name == "esn_sparse_extended":
        return model([esn(rng, "e", I, 60, sparse=True, readout_input="extended"), dense(rng, "d", 66, 2)], I)
    if name == "dense_acts":
        return model(
            [
                dense(rng, "d0", I, 7, activation="relu"),
                dense(rng, "d1", 7, 6, activation="tanh"),
                dense(rng, "d2", 6, 5, activation="leaky_relu", alpha=0.2, bias=False),
                dense(rng, "d3", 5, 3, activation="sigmoid"),
            ],
            I,
        )
    if name == "attention":
        return model(
            [
                recurrent(rng, "gru", "g", I, 10, linear_before_reset=1),
                attention(rng, "a", 10, 6),
                dense(rng, "d", 10, 3, activation="softmax"),
            ],
            I,
            sequence="many_to_one",
        )
    if name == "normalize_affine_activation":
        t = {
            "m": rng.normal(size=I).astype(np.float32),
            "s": (rng.random(I) + 0.5).astype(np.float32),
            "sc": rng.normal(size=8).astype(np.float32),
            "sh": rng.normal(size=8).astype(np.float32),
        }
        norm = ({"kind": "normalize", "name": "n", "input_size": I, "tensors": {"mean": "m", "std": "s"}}, t)
        aff = (
            {"kind": "affine", "name": "a", "input_size": 8, "tensors": {"scale": "sc", "shift": "sh"}},
            {},
        )
        actl = ({"kind": "activation", "name": "act", "input_size": 8, "activation": "elu", "alpha": 0.5}, {})
        return model([norm, recurrent(rng, "lstm", "l", I, 8), aff, actl], I)
    if name == "embedding":
        emb = (
            {
                "kind": "embedding",
                "name": "e",
                "input_size": 1,
                "vocab_size": 30,
                "output_size": 6,
                "tensors": {"table": "tab"},
            },
            {"tab": rng.normal(size=(30, 6)).astype(np.float32)},
        )
        return model(
            [emb, recurrent(rng, "gru", "g", 6, 8), dense(rng, "d", 8, 30, activation="softmax")],
            1,
            tokens=30,
        )
    if name == "onehot":
        oh = ({"kind": "onehot", "name": "o", "input_size": 1, "vocab_size": 12}, {})
        return model(
            [oh, recurrent(rng, "lstm", "l", 12, 8), dense(rng, "d", 8, 1, activation="sigmoid")],
            1,
            tokens=12,
            sequence="many_to_one",
        )
    if name == "graph_conv_chain":  # gather (reflect pad) -> conv1d -> unary -> layernorm -> dense (a chain)
        ix = np.array([1, 0, 1, 2, 3, 4, 3, 6, 5, 6, 7, 8, 9, 8], np.float32)  # [2, 5] -> [2, 7]
        g = (
            {"kind": "gather", "name": "g", "input_size": 10, "output_size": 14, "tensors": {"index": "g.i"}},
            {"g.i": ix},
        )
        cv = {"kind": "conv1d", "name": "c", "input_size": 14, "output_size": 9, "in_channels": 2,
              "out_channels": 3, "kernel_size": 3, "stride": 2, "dilation": 1, "pads": [0, 1], "groups": 1,
              "activation": "tanh", "tensors": {"W": "c.W", "b": "c.b"}}  # fmt: skip
        c = (
            cv,
            {
                "c.W": rng.normal(0, 0.5, (3, 2, 3)).astype(np.float32),
                "c.b": rng.normal(size=3).astype(np.float32),
            },
        )
        u = (
            {
                "kind": "unary",
                "name": "u",
                "input_size": 9,
                "output_size": 9,
                "func": "square",
                "tensors": {},
            },
            {},
        )
        ln_t = {"n.s": rng.normal(size=3).astype(np.float32), "n.b": rng.normal(size=3).astype(np.float32)}
        ln = {"kind": "layernorm", "name": "n", "input_size": 9, "output_size": 9, "size": 3, "epsilon": 1e-3}
        ln["tensors"] = {"scale": "n.s", "bias": "n.b"}
        return model([g, c, u, (ln, ln_t), dense(rng, "d", 9, 2)], 10)
    if name == "tconv_lstm":  # a causal convolution over time (state: the last (k-1)*d inputs) -> LSTM
        tc = {"kind": "tconv", "name": "tc", "input_size": 4, "output_size": 5, "in_channels": 4,
              "out_channels": 5, "kernel_size": 3, "dilation": 2, "activation": "relu",
              "tensors": {"W": "tc.W", "b": "tc.b"}}  # fmt: skip
        tt = {
            "tc.W": rng.normal(0, 0.5, (5, 4, 3)).astype(np.float32),
            "tc.b": rng.normal(size=5).astype(np.float32),
        }
        return model([(tc, tt), recurrent(rng, "lstm", "l", 5, 8), dense(rng, "d", 8, 2)], 4)
    if name == "graph_binary":  # a format-2 graph: the input read by two ops, a binary op joining them
        from edgernn.artifact import upgrade

        plan, tensors = model([dense(rng, "d", 6, 6, activation="tanh"), dense(rng, "e", 6, 2)], 6)
        g = upgrade(plan)
        g["values"]["b:y"] = {"shape": [6]}
        g["ops"].insert(
            1,
            {
                "kind": "binary",
                "name": "b",
                "inputs": ["d:y", "input"],
                "outputs": ["b:y"],
                "attrs": {"op": "mul"},
            },
        )
        g["ops"][2]["inputs"] = ["b:y"]
        return g, tensors
    if name == "graph_matmul":  # y = V (A B): A = tanh(W x) as [2, 2, 3], B = U x as [2, 3, 2]
        from edgernn.artifact import upgrade

        plan, tensors = model([dense(rng, "d", 4, 12, activation="tanh")], 4)
        (e, et), (f, ft) = dense(rng, "e", 4, 12), dense(rng, "f", 8, 2)
        tensors.update(et | ft)
        g = upgrade(plan)
        g["values"].update({"e:y": {"shape": [12]}, "m:y": {"shape": [8]}, "f:y": {"shape": [2]}})
        eop = {"kind": "dense", "name": "e", "inputs": ["input"], "outputs": ["e:y"], "tensors": e["tensors"]}
        mm = {"kind": "matmul", "name": "m", "inputs": ["d:y", "e:y"], "outputs": ["m:y"]}
        mm["attrs"] = {"batch": 2, "m": 2, "k": 3, "n": 2}
        fop = {"kind": "dense", "name": "f", "inputs": ["m:y"], "outputs": ["f:y"], "tensors": f["tensors"]}
        g["ops"] = [g["ops"][0], eop, mm, fop]
        g["output"] = {**g["output"], "size": 2, "value": "f:y"}
        return g, tensors
    if name == "graph_state":  # a state slot: s' = tanh(W x) * 0.5 + s (read by two ops), y = V s'
        from edgernn.artifact import upgrade

        plan, tensors = model([dense(rng, "d", 4, 6, activation="tanh"), dense(rng, "e", 6, 2)], 4)
        g = upgrade(plan)
        g["values"].update({"s:y": {"shape": [6]}, "a:y": {"shape": [6]}, "b:y": {"shape": [6]}})
        tensors["s.init"] = rng.normal(size=6).astype(np.float32)
        tensors["a.sc"] = np.full(6, 0.5, np.float32)
        tensors["a.sh"] = np.zeros(6, np.float32)
        state = {"kind": "state", "name": "s", "inputs": [], "outputs": ["s:y"], "attrs": {"next": "b:y"}}
        state["tensors"] = {"initial": "s.init"}
        aff = {"kind": "affine", "name": "a", "inputs": ["d:y"], "outputs": ["a:y"]}
        aff["tensors"] = {"scale": "a.sc", "shift": "a.sh"}
        add = {"kind": "binary", "name": "b", "inputs": ["a:y", "s:y"], "outputs": ["b:y"]}
        g["ops"] = [state, g["ops"][0], aff, add | {"attrs": {"op": "add"}}, g["ops"][1]]
        g["ops"][4]["inputs"] = ["b:y"]
        return g, tensors
    if name == "graph_where":  # d = tanh(W x), g = d > not(d), y = V where(g, e[:6], e[6:]), e = U x
        from edgernn.artifact import upgrade

        plan, tensors = model([dense(rng, "d", 4, 6, activation="tanh")], 4)
        (e, et), (f, ft) = dense(rng, "e", 4, 12), dense(rng, "f", 6, 2)
        tensors.update(et | ft)
        g = upgrade(plan)
        g["values"].update({"e:y": {"shape": [12]}, "c:y": {"shape": [6]}, "w:y": {"shape": [6]}})
        g["values"]["f:y"] = {"shape": [2]}
        eop = {"kind": "dense", "name": "e", "inputs": ["input"], "outputs": ["e:y"], "tensors": e["tensors"]}
        gt = {"kind": "unary", "name": "c", "inputs": ["d:y"], "outputs": ["c:y"], "attrs": {"func": "not"}}
        wh = {"kind": "where", "name": "w", "inputs": ["c:y", "e:y"], "outputs": ["w:y"]}
        fop = {"kind": "dense", "name": "f", "inputs": ["w:y"], "outputs": ["f:y"], "tensors": f["tensors"]}
        cmp = {"kind": "binary", "name": "g", "inputs": ["d:y", "c:y"], "outputs": ["g:y"]}
        g["values"]["g:y"] = {"shape": [6]}
        wh["inputs"] = ["g:y", "e:y"]
        g["ops"] = [g["ops"][0], eop, gt, cmp | {"attrs": {"op": "gt"}}, wh, fop]
        g["output"] = {**g["output"], "size": 2, "value": "f:y"}
        return g, tensors
    raise KeyError(name)


def _kinds(plan) -> set:
    from edgernn.artifact import graph_layers

    return {layer["kind"] for layer in graph_layers(plan)[0]}


CASES = [
    "rnn_tanh", "rnn_relu", "rnn_onnx_acts", "lstm", "lstm_peephole_clip_forget", "lstm_acts", "gru_lbr0",
    "gru_lbr1", "gru_acts_clip", "bidirectional_lstm", "reverse_gru", "bidirectional_lstm_final",
    "reverse_gru_final", "bidirectional_rnn_gru_stack",
    "stacked_lstm_gru_rnn", "esn_dense", "esn_sparse_extended", "dense_acts", "attention",
    "normalize_affine_activation", "embedding", "onehot", "graph_conv_chain", "graph_binary",
    "tconv_lstm", "graph_state", "graph_matmul", "graph_where",
]  # fmt: skip
STREAMABLE = [c for c in CASES if not any(s in c for s in ("bidirectional", "reverse"))]


def _inputs(plan, rng, T):
    if plan["input"]["kind"] == "tokens":
        return rng.integers(0, plan["input"]["vocab_size"], size=(T, 1)).astype(np.float32)
    return rng.normal(0, 1, (T, plan["input"]["size"])).astype(np.float32)


def test_every_layer_kind_is_covered():
    covered = set()
    rng = np.random.default_rng(0)
    for c in CASES:
        plan, _ = _case(c, rng)
        covered |= _kinds(plan)
    assert covered == set(LAYER_KINDS), f"layer kinds without a test case: {set(LAYER_KINDS) - covered}"


@pytest.mark.parametrize("backend", ["numba", "numpy"])
@pytest.mark.parametrize("case", CASES)
def test_predict_matches_reference(case, backend):
    rng = np.random.default_rng(zlib.crc32(case.encode()))
    plan, tensors = _case(case, rng)
    m = edgernn.Model(plan, tensors, backend=backend)
    X = _inputs(plan, rng, 40)
    ref = reference_predict(plan, tensors, X)
    got = m.predict(X)
    if plan["output"]["sequence"] == "many_to_one":
        ref = ref[-1]
    assert_close(got, ref, what=f"{case}/{backend}")


@pytest.mark.parametrize("case", STREAMABLE)
def test_step_run_predict_agree_over_1000_steps(case):
    rng = np.random.default_rng(1)
    plan, tensors = _case(case, rng)
    m = edgernn.Model(plan, tensors)
    X = _inputs(plan, rng, 1000)
    s = m.stream()
    Y_step = np.stack([s.step(x) for x in X])
    Y_run = m.stream().run(X)
    s2 = m.stream()  # run in chunks continues the state
    Y_chunks = np.concatenate([s2.run(X[:333]), s2.run(X[333:334]), s2.run(X[334:])])
    # exotic gate activations (leaky_relu/softplus gates, scaled_tanh) make chaotic recurrences whose
    # float32 and float64 trajectories part after a few hundred steps: compare those on 100 steps
    n_ref = 100 if case.endswith("acts") or case.endswith("acts_clip") else len(X)
    ref = reference_predict(plan, tensors, X[:n_ref])
    assert_close(Y_step[:n_ref], ref, what="step vs reference")
    assert_close(Y_run, Y_step, what="run vs step")
    assert_close(Y_chunks, Y_step, what="chunked run vs step")
    assert_close(s.state, s2.state, what="state after step vs run")
    p = m.predict(X)
    assert_close(p, Y_step[-1] if plan["output"]["sequence"] == "many_to_one" else Y_step, what="predict")


@pytest.mark.parametrize("case", STREAMABLE)
def test_int8_and_fp16_close_to_float(case):
    """Independent per-row int8 quantization: the runtime matches the reference on dequantized weights."""
    rng = np.random.default_rng(2)
    plan, tensors = _case(case, rng)
    if plan["format_version"] == 2:
        pytest.skip("the independent quantizers of tests/builders.py take format-1 chains")
    X = _inputs(plan, rng, 50)
    for conv in (quantize_int8, to_fp16):
        qplan, qt = conv(plan, tensors)
        if not any(t.dtype in (np.int8, np.float16) for t in qt.values()):
            continue  # nothing to quantize in this case
        m = edgernn.Model(qplan, qt)
        ref = reference_predict(qplan, qt, X)  # reference dequantizes the same stored weights
        s = m.stream()
        assert_close(np.stack([s.step(x) for x in X]), ref, what=f"{case}/{conv.__name__} step")
        assert_close(m.stream().run(X), ref, what=f"{case}/{conv.__name__} run")
        assert m.info["quantization"] == qplan["quantization"]


@pytest.mark.parametrize("case", ["lstm", "gru_lbr1", "esn_sparse_extended", "attention", "embedding"])
def test_streams_equal_separate_streams(case):
    rng = np.random.default_rng(3)
    plan, tensors = _case(case, rng)
    m = edgernn.Model(plan, tensors)
    n, T = 7, 30
    Xs = np.stack([_inputs(plan, rng, T) for _ in range(n)], axis=1)  # (T, n, I)
    b = m.streams(n)
    singles = [m.stream() for _ in range(n)]
    # step_batch's blocks (here one block of the first 4 streams; n - n % 4 streams are blocked) sum in
    # another order than the single-stream GEMV: equal to float32 rounding, not bit for bit. The n % 4
    # streams after the last block step one by one through the single-stream code: bit for bit where that
    # code is the one Stream.step runs (attention, embedding: no panels in either)
    one_by_one = slice(n - n % 4, n)
    exact = case in ("attention", "embedding")
    for t in range(T):
        Yb = b.step(Xs[t])
        Ys = np.stack([singles[i].step(Xs[t, i]) for i in range(n)])
        _close_f32(Yb, Ys)
        if exact:
            np.testing.assert_array_equal(Yb[one_by_one], Ys[one_by_one])
    states = np.stack([s.state for s in singles])
    _close_f32(b.state, states)
    if exact:
        np.testing.assert_array_equal(b.state[one_by_one], states[one_by_one])


def _close_f32(a, b):
    np.testing.assert_allclose(a, b, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize(
    "case", ["lstm_peephole_clip_forget", "stacked_lstm_gru_rnn", "esn_dense", "attention"]
)
def test_state_snapshot_restore(case):
    rng = np.random.default_rng(4)
    plan, tensors = _case(case, rng)
    m = edgernn.Model(plan, tensors)
    X = _inputs(plan, rng, 200)
    s = m.stream()
    s.run(X[:100])
    snap = s.state
    Y1 = s.run(X[100:])
    s.state = snap
    Y2 = s.run(X[100:])
    np.testing.assert_array_equal(Y1, Y2)
    s.reset()
    np.testing.assert_array_equal(s.run(X), m.stream().run(X))
    # a state moves between backends: same layout
    s_np = edgernn.Model(plan, tensors, backend="numpy").stream()
    s_np.state = snap
    assert_close(s_np.run(X[100:]), Y1, what="numpy backend from a numba snapshot")


def test_bidirectional_refuses_streaming_with_reason():
    plan, tensors = _case("bidirectional_lstm", np.random.default_rng(5))
    m = edgernn.Model(plan, tensors)
    assert m.info["streamable"] is False
    with pytest.raises(edgernn.EdgeRNNError, match="bidirectional.*predict"):
        m.stream()
    with pytest.raises(edgernn.EdgeRNNError, match="predict"):
        m.streams(2)


def test_predict_batched_matches_unbatched():
    rng = np.random.default_rng(6)
    plan, tensors = _case("attention", rng)
    m = edgernn.Model(plan, tensors)
    X = rng.normal(size=(3, 20, 5)).astype(np.float32)
    np.testing.assert_array_equal(m.predict(X), np.stack([m.predict(x) for x in X]))


def test_long_run_in_chunks_equals_one_call_and_rejects_atomically():
    rng = np.random.default_rng(7)
    plan, tensors = _case("lstm", rng)
    m = edgernn.Model(plan, tensors)
    X = rng.normal(size=(3000, 5)).astype(np.float32)
    whole = m.stream().run(X)
    m.SEQ_CHUNK = 257  # instance override: many chunks
    s = m.stream()
    np.testing.assert_array_equal(s.run(X), whole)
    before = s.state
    X[2500, 3] = np.inf
    with pytest.raises(edgernn.InputError, match="time step 2500"):
        s.run(X)
    np.testing.assert_array_equal(s.state, before)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_overflow_from_finite_input_raises_and_restores_state(backend):
    """A relu RNN with positive weights: a finite input near FLT_MAX drives the state to +Inf."""
    rng = np.random.default_rng(8)
    plan, tensors = model([recurrent(rng, "rnn", "r", 4, 6, activations=["relu"]), dense(rng, "d", 6, 2)], 4)
    tensors["r.W"] = np.abs(tensors["r.W"]) + 0.5
    m = edgernn.Model(plan, tensors, backend=backend)
    s, b = m.stream(), m.streams(2)
    ok = rng.normal(size=(3, 4)).astype(np.float32)
    s.run(ok)
    b.step(ok[:2])
    big = np.full(4, 3.0e38, np.float32)  # finite, so the input check lets it through
    before, bbefore = s.state, b.state
    with pytest.raises(edgernn.InputError, match="overflowed"):
        s.step(big)
    np.testing.assert_array_equal(s.state, before)
    with pytest.raises(edgernn.InputError, match="overflowed.*time step 1"):
        s.run(np.stack([ok[0], big, ok[1]]))
    np.testing.assert_array_equal(s.state, before)
    with pytest.raises(edgernn.InputError, match="overflowed.*stream 1"):
        b.step(np.stack([ok[0], big]))
    np.testing.assert_array_equal(b.state, bbefore)  # no stream advanced
    s.step(ok[2])  # the stream goes on normally
    assert np.isfinite(s.state).all()
    # nonfinite='propagate' lets it through (documented): the guard is what made the difference
    p = edgernn.Model(plan, tensors, backend=backend, nonfinite="propagate").stream()
    p.step(big)
    assert not np.isfinite(p.state).all()


@pytest.mark.parametrize("quant", ["fp32", "int8"])
@pytest.mark.parametrize("density", [0.02, 0.1, 0.4])
def test_sparse_reservoir_packed_dense_when_that_is_faster(density, quant):
    """A CSR reservoir with >= DENSIFY_MIN_DENSITY nonzeros runs as a dense matrix in memory (the file
    stays CSR); either way step/run/streams/predict agree with the numpy reference on the CSR weights."""
    I = 5  # noqa: E741
    from edgernn.kernels.ops import esn as esn_op

    rng = np.random.default_rng(11)
    plan, tensors = model([esn(rng, "e", I, 80, sparse=True, density=density), dense(rng, "d", 80, 2)], I)
    if quant == "int8":
        plan, tensors = quantize_int8(plan, tensors)
    nnz = plan["layers"][0]["nnz"]
    X = _inputs(plan, rng, 40)
    ref = reference_predict(plan, tensors, X)
    for backend in ("numba", "numpy"):
        m = edgernn.Model(plan, tensors, backend=backend)
        packed_dense = m.info["layers"][0].get("packed_dense", False)
        assert packed_dense == (nnz >= esn_op.DENSIFY_MIN_DENSITY * 80 * 80), (nnz, packed_dense)
        s = m.stream()
        assert_close(np.stack([s.step(x) for x in X]), ref, what=f"{density} {quant} {backend} step")
        assert_close(m.stream().run(X), ref, what=f"{density} {quant} {backend} run")
        assert_close(m.predict(X), ref, what=f"{density} {quant} {backend} predict")
        b = m.streams(3)
        Yb = np.stack([b.step(np.stack([x, x, x]))[1] for x in X])
        assert_close(Yb, ref, what=f"{density} {quant} {backend} streams")


def test_csr_with_repeated_entries_stays_csr():
    """CSR adds repeated (row, col) entries; the dense packing would have to add them too (and int8 sums
    could overflow), so such a reservoir keeps a sparse form (SELL-8 adds them as CSR does)."""
    I = 5  # noqa: E741
    rng = np.random.default_rng(12)
    plan, tensors = model([esn(rng, "e", I, 20, sparse=True, density=0.3), dense(rng, "d", 20, 2)], I)
    lay = plan["layers"][0]
    ind, ptr = tensors["e.W_indices"], tensors["e.W_indptr"]
    first = int(np.argmax(np.diff(ptr) >= 2))  # a row with two entries: make them the same column
    ind = ind.copy()
    ind[ptr[first] + 1] = ind[ptr[first]]
    tensors = dict(tensors, **{"e.W_indices": ind})
    m = edgernn.Model(plan, tensors)
    assert "packed_dense" not in m.info["layers"][0]
    X = _inputs(plan, rng, 20)
    assert_close(m.stream().run(X), reference_predict(plan, tensors, X), what="repeated entries")
    assert lay["nnz"] == len(ind)


@pytest.mark.parametrize("backend", ["numba", "numpy"])
def test_csr_reservoir_with_empty_rows_at_either_end(backend):
    """Rows without entries, first and last included (a sparse reservoir has them): they add nothing."""
    I = 5  # noqa: E741
    rng = np.random.default_rng(13)
    plan, tensors = model([esn(rng, "e", I, 30, sparse=True, density=0.02), dense(rng, "d", 30, 2)], I)
    data, ind, ptr = (np.asarray(tensors[f"e.W_{k}"]) for k in ("data", "indices", "indptr"))
    counts = np.diff(ptr)
    counts[:2] = 0
    counts[-3:] = 0
    keep = np.concatenate([np.arange(ptr[r], ptr[r] + counts[r]) for r in range(30)]).astype(np.int64)
    tensors = dict(tensors)
    tensors["e.W_data"], tensors["e.W_indices"] = data[keep], ind[keep]
    tensors["e.W_indptr"] = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    plan["layers"][0]["nnz"] = int(keep.size)
    assert keep.size > 0
    X = _inputs(plan, rng, 20)
    m = edgernn.Model(plan, tensors, backend=backend)
    assert_close(m.stream().run(X), reference_predict(plan, tensors, X), what=f"empty rows {backend}")


@pytest.mark.parametrize("kind", ["lstm", "gru", "rnn"])
def test_small_int8_recurrent_layers_compute_from_float32_by_default(kind, monkeypatch):
    """By default a small int8 recurrent layer is packed as float32 q·scale (the file stays int8): same
    results as the int8 kernels and the numpy reference on the dequantized weights, to float32 rounding."""
    from edgernn import pack

    monkeypatch.delenv("EDGERNN_DEQUANTIZE_MAX_BYTES", raising=False)
    rng = np.random.default_rng(14)
    extra = {"linear_before_reset": 1} if kind == "gru" else {}
    lay = recurrent(rng, kind, "r", 5, 16, direction="bidirectional", **extra)
    plan, tensors = quantize_int8(*model([lay, dense(rng, "d", 32, 2)], 5))
    X = _inputs(plan, rng, 30)
    ref = reference_predict(plan, tensors, X)
    m = edgernn.Model(plan, tensors)
    assert m.info["layers"][0].get("packed_float32") is True
    assert_close(m.predict(X), ref, what=f"{kind} dequantized predict")
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "0")  # int8 kernels
    m8 = edgernn.Model(plan, tensors)
    assert "packed_float32" not in m8.info["layers"][0]
    np.testing.assert_allclose(m.predict(X), m8.predict(X), rtol=1e-5, atol=1e-6)
    assert pack.DEQUANTIZE_MAX_BYTES > 0


def test_small_int8_recurrent_layers_streams_and_limits(monkeypatch):
    monkeypatch.delenv("EDGERNN_DEQUANTIZE_MAX_BYTES", raising=False)
    rng = np.random.default_rng(15)
    small = quantize_int8(*model([recurrent(rng, "lstm", "r", 5, 16), dense(rng, "d", 16, 2)], 5))
    big = quantize_int8(*model([recurrent(rng, "lstm", "r", 8, 256), dense(rng, "d", 256, 2)], 8))
    m = edgernn.Model(*small)
    X = _inputs(small[0], rng, 25)
    ref = reference_predict(*small, X)
    s = m.stream()
    assert_close(np.stack([s.step(x) for x in X]), ref, what="dequantized step")
    b = m.streams(4)
    assert_close(np.stack([b.step(np.stack([x] * 4))[2] for x in X]), ref, what="dequantized streams")
    # 4·256 rows x (8 + 256) columns of float32 is over the 256 KiB limit: the int8 kernels run
    assert "packed_float32" not in edgernn.Model(*big).info["layers"][0]
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", str(4 * 256 * 264 * 4))
    assert edgernn.Model(*big).info["layers"][0].get("packed_float32") is True
    monkeypatch.setenv("EDGERNN_DEQUANTIZE_MAX_BYTES", "lots")
    with pytest.raises(edgernn.EdgeRNNError, match="EDGERNN_DEQUANTIZE_MAX_BYTES must be"):
        edgernn.Model(*small)


def test_every_registered_op_has_a_kernel_a_numpy_implementation_and_a_case():
    """The op registry (kernels/ops) is complete: each kind has its code emitter, its numpy implementation
    and a test case above; and the registry covers every kind a plan may hold."""
    from edgernn.kernels.ops import REGISTRY

    covered = set()
    rng = np.random.default_rng(0)
    for c in CASES:
        plan, _ = _case(c, rng)
        covered |= _kinds(plan)
    names = {op.NAME for op in REGISTRY.values()}
    assert names == set(LAYER_KINDS), f"kinds without an op module: {set(LAYER_KINDS) - names}"
    for op in REGISTRY.values():
        two = "2" if getattr(op, "INPUTS", 1) == 2 else ""
        kernel = "emit_cell" if op.RECURRENT else "emit_apply" + two
        numpy_impl = "numpy_cell" if op.RECURRENT else "numpy_apply" + two
        if getattr(op, "SEQUENCE_ONLY", False):  # whole-sequence ops: only the layer-by-layer kernel
            kernel, numpy_impl = "emit_seq", "numpy_seq"
        assert callable(getattr(op, kernel, None)), f"{op.NAME}: no {kernel}"
        assert callable(getattr(op, numpy_impl, None)), f"{op.NAME}: no {numpy_impl}"
        assert op.NAME in covered, f"{op.NAME}: no test case in CASES"
