"""The runtime against PyTorch's nn.RNN/LSTM/GRU with the same weights (torch only in tests).

The weights are moved from torch to the ONNX layout here, independently of the exporter: LSTM gates
torch (i, f, g, o) -> ONNX (i, o, f, c); GRU torch (r, z, n) -> ONNX (z, r, h), linear_before_reset=1.
"""

from __future__ import annotations

import numpy as np
import pytest
from reference import assert_close

import edgernn

torch = pytest.importorskip("torch")

_ORDER = {"lstm": [0, 3, 1, 2], "gru": [1, 0, 2], "rnn": [0]}


def _onnx(w: np.ndarray, kind: str) -> np.ndarray:
    parts = np.split(w, len(_ORDER[kind]), axis=0)
    return np.concatenate([parts[i] for i in _ORDER[kind]], axis=0)


def _plan_from_torch(mod, kind, head):
    D = 2 if mod.bidirectional else 1
    layers, tensors = [], {}
    size = mod.input_size
    for l in range(mod.num_layers):
        W, R, B = [], [], []
        for d in range(D):
            sfx = f"_l{l}" + ("_reverse" if d else "")
            W.append(_onnx(getattr(mod, "weight_ih" + sfx).detach().numpy(), kind))
            R.append(_onnx(getattr(mod, "weight_hh" + sfx).detach().numpy(), kind))
            B.append(
                np.concatenate(
                    [
                        _onnx(getattr(mod, "bias_ih" + sfx).detach().numpy(), kind),
                        _onnx(getattr(mod, "bias_hh" + sfx).detach().numpy(), kind),
                    ]
                )
            )
        name = f"l{l}"
        tensors.update({f"{name}.W": np.stack(W), f"{name}.R": np.stack(R), f"{name}.B": np.stack(B)})
        layer = {
            "kind": "rnn" if kind.startswith("rnn") else kind,
            "name": name,
            "input_size": size,
            "hidden_size": mod.hidden_size,
            "direction": "bidirectional" if D == 2 else "forward",
            "tensors": {"W": f"{name}.W", "R": f"{name}.R", "B": f"{name}.B"},
        }
        if kind == "gru":
            layer["linear_before_reset"] = 1
        if kind == "rnn" and mod.nonlinearity == "relu":
            layer["activations"] = ["relu"] * D
        layers.append(layer)
        size = mod.hidden_size * D
    tensors["head.W"] = head.weight.detach().numpy()
    tensors["head.b"] = head.bias.detach().numpy()
    layers.append(
        {
            "kind": "dense",
            "name": "head",
            "input_size": size,
            "output_size": head.out_features,
            "tensors": {"W": "head.W", "b": "head.b"},
        }
    )
    plan = {
        "format": "ernn",
        "format_version": 1,
        "input": {"size": mod.input_size},
        "output": {"size": head.out_features, "sequence": "many_to_many"},
        "layers": layers,
    }
    return plan, tensors


@pytest.mark.parametrize(
    "kind,nonlin,layers,bidir",
    [
        ("rnn", "tanh", 1, False),
        ("rnn", "relu", 2, False),
        ("lstm", None, 1, False),
        ("lstm", None, 2, True),
        ("gru", None, 1, False),
        ("gru", None, 3, False),
        ("gru", None, 1, True),
    ],
)
def test_matches_torch(kind, nonlin, layers, bidir, tmp_path):
    torch.manual_seed(0)
    cls = {"rnn": torch.nn.RNN, "lstm": torch.nn.LSTM, "gru": torch.nn.GRU}[kind]
    kw = {"nonlinearity": nonlin} if kind == "rnn" else {}
    mod = cls(6, 24, num_layers=layers, bidirectional=bidir, batch_first=True, **kw)
    head = torch.nn.Linear(24 * (2 if bidir else 1), 3)
    X = np.random.default_rng(0).normal(size=(300, 6)).astype(np.float32)
    with torch.inference_mode():
        ref = head(mod(torch.from_numpy(X)[None])[0])[0].numpy()
    plan, tensors = _plan_from_torch(mod, kind, head)
    edgernn.artifact.write(tmp_path / "m.ernn", plan, tensors)
    m = edgernn.load(tmp_path / "m.ernn")
    assert_close(m.predict(X), ref, what="predict vs torch")
    if not bidir:
        s = m.stream()
        assert_close(np.stack([s.step(x) for x in X]), ref, what="step vs torch")
        assert_close(m.stream().run(X), ref, what="run vs torch")
