"""``load`` warms the model: the backend's step (seq for a model that cannot stream) runs once at load, on
a scratch buffer, changing nothing.

A spy backend counts the kernel calls (the property "the first real step is not the first kernel call" is
checked without any timing); the streams and predictions of a warmed model are compared with a model
whose warm-up was switched off, for every kind of model (streamable or not, tokens, int8, initial states).
"""

from __future__ import annotations

import harden_common as hc
import numpy as np
import pytest
from builders import model, recurrent

from edgernn import runtime


def _initial_state_model():
    rng = np.random.default_rng(5)
    return model([recurrent(rng, "lstm", "l", 3, 4, initial_h=True, initial_c=True)], 3)


MODELS = {
    "lstm": lambda: hc.model("lstm"),
    "everything": hc.everything,
    "tokens": lambda: hc.tokens_model(vocab=11),
    "onehot": hc.onehot_model,
    "attention": hc.attention_model,
    "bidirectional": hc.bidirectional_model,
    "int8_lstm": lambda: hc.quantize_int8(*hc.model("lstm")),
    "int8_esn_sparse": lambda: hc.int8_esn(True),
    "initial_state": _initial_state_model,
}


class _Spy:
    """A backend whose step and seq record their inputs; everything else is the real backend's."""

    def __init__(self, inner, calls):
        self.inner, self.calls = inner, calls

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def for_model(self, packed, path=None):  # backends that generate kernels (or find a module) per model
        if not hasattr(self.inner, "for_model"):
            return self
        return _Spy(self.inner.for_model(packed, path), self.calls)

    def step(self, x, wf, wb, M):
        self.calls.append(("step", x.copy()))
        return self.inner.step(x, wf, wb, M)

    def seq(self, X, wf, wb, M, Y, buf):
        self.calls.append(("seq", X.copy()))
        return self.inner.seq(X, wf, wb, M, Y, buf)


@pytest.mark.parametrize("backend", ["numpy", "numba"])
@pytest.mark.parametrize("kind", sorted(MODELS))
def test_load_runs_the_kernels_once_and_changes_nothing(monkeypatch, kind, backend):
    plan, tensors = MODELS[kind]()
    spy = _Spy(runtime.get_backend(backend), [])
    monkeypatch.setattr(runtime, "get_backend", lambda name=None: spy)
    warmed = runtime.Model(plan, tensors)
    streamable = warmed.info["streamable"]
    kinds = [k for k, _ in spy.calls]
    assert kinds == (["step"] if streamable else ["seq"]), kinds
    for _, x in spy.calls:  # a valid input: zeros (token id 0)
        assert np.all(x == 0)
    spy.calls.clear()
    with monkeypatch.context() as m:
        m.setattr(runtime.Model, "_warm", lambda self: None)
        cold = runtime.Model(plan, tensors)
    assert spy.calls == []
    np.testing.assert_array_equal(warmed._m0, cold._m0)  # the initial buffer is untouched
    rng = np.random.default_rng(0)
    if warmed.info["input_kind"] == "tokens":
        X = rng.integers(0, warmed.info["vocab_size"], size=(6, 1)).astype(np.float32)
    else:
        X = rng.normal(size=(6, warmed.input_size)).astype(np.float32)
    np.testing.assert_array_equal(warmed.predict(X), cold.predict(X))
    if streamable:
        a, b = warmed.stream(), cold.stream()
        np.testing.assert_array_equal(a.state, b.state)
        for x in X:
            np.testing.assert_array_equal(a.step(x), b.step(x))
        np.testing.assert_array_equal(a.state, b.state)
