"""edgernn.models: SequenceModel / ESN semantics against independent numpy computations, checkpoints."""

from __future__ import annotations

import json
import struct

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgernn import models  # noqa: E402
from edgernn.models import ESN, SequenceModel  # noqa: E402


def _np(t):
    return t.detach().numpy().astype(np.float64)


def _sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


@pytest.mark.parametrize("cell", ["rnn_tanh", "rnn_relu", "lstm", "gru"])
@pytest.mark.parametrize("many_to_many", [False, True])
def test_shapes(cell, many_to_many):
    m = SequenceModel(cell, 3, 5, 2, many_to_many=many_to_many, num_layers=2, dropout=0.2).eval()
    y = m(torch.randn(4, 7, 3))
    assert y.shape == ((4, 7, 2) if many_to_many else (4, 2))


def test_rnn_cell_matches_numpy_recurrence():
    torch.manual_seed(1)
    m = SequenceModel("rnn_relu", 3, 4, 2, many_to_many=True).eval()
    X = torch.randn(2, 6, 3)
    W, R = _np(m.rnn.weight_ih_l0), _np(m.rnn.weight_hh_l0)
    b = _np(m.rnn.bias_ih_l0) + _np(m.rnn.bias_hh_l0)
    Wo, bo = _np(m.head.weight), _np(m.head.bias)
    x = X.numpy().astype(np.float64)
    h = np.zeros((2, 4))
    ys = []
    for t in range(6):
        h = np.maximum(x[:, t] @ W.T + h @ R.T + b, 0.0)
        ys.append(h @ Wo.T + bo)
    np.testing.assert_allclose(_np(m(X)), np.stack(ys, 1), rtol=1e-5, atol=1e-6)


def test_attention_formula():
    """s_t = v·tanh(W h_t + b), α = softmax over time, pooled = Σ α_t h_t, then the head."""
    torch.manual_seed(2)
    m = SequenceModel("gru", 3, 4, 2, attention=True, attention_size=5, output_activation="softmax").eval()
    X = torch.randn(3, 8, 3)
    H = _np(m.rnn(X)[0])
    W, b, v = _np(m.attention.proj.weight), _np(m.attention.proj.bias), _np(m.attention.v)
    s = np.tanh(H @ W.T + b) @ v
    a = np.exp(s - s.max(1, keepdims=True))
    a /= a.sum(1, keepdims=True)
    pooled = (a[..., None] * H).sum(1)
    z = pooled @ _np(m.head.weight).T + _np(m.head.bias)
    expected = np.exp(z) / np.exp(z).sum(1, keepdims=True)
    np.testing.assert_allclose(_np(m(X)), expected, rtol=1e-5, atol=1e-6)


def test_bidirectional_many_to_one_takes_last_step_output():
    torch.manual_seed(3)
    m = SequenceModel("lstm", 3, 4, 2, bidirectional=True).eval()
    X = torch.randn(2, 5, 3)
    # forward direction: final state after the whole sequence; reverse: after seeing only the last step
    fwd = torch.nn.LSTM(3, 4, batch_first=True)
    rev = torch.nn.LSTM(3, 4, batch_first=True)
    with torch.no_grad():
        for p in ("weight_ih", "weight_hh", "bias_ih", "bias_hh"):
            getattr(fwd, p + "_l0").copy_(getattr(m.rnn, p + "_l0"))
            getattr(rev, p + "_l0").copy_(getattr(m.rnn, p + "_l0_reverse"))
        h_f = fwd(X)[0][:, -1]
        h_r = rev(X[:, -1:])[0][:, -1]
        expected = m.head(torch.cat([h_f, h_r], -1))
    np.testing.assert_allclose(_np(m(X)), _np(expected), rtol=1e-5, atol=1e-6)


def test_normalization_buffers():
    torch.manual_seed(4)
    mean, std = np.array([1.0, -2.0, 0.5]), np.array([2.0, 0.5, 3.0])
    a = SequenceModel("gru", 3, 4, 1, input_mean=mean, input_std=std).eval()
    b = SequenceModel("gru", 3, 4, 1).eval()
    b.load_state_dict({k: v for k, v in a.state_dict().items() if not k.startswith("input_")})
    X = np.random.default_rng(0).normal(size=(2, 5, 3)).astype(np.float32)
    Xn = ((X - mean) / std).astype(np.float32)
    np.testing.assert_allclose(
        _np(a(torch.from_numpy(X))), _np(b(torch.from_numpy(Xn))), rtol=1e-5, atol=1e-6
    )
    assert set(dict(a.named_buffers())) == {"input_mean", "input_std"}


def test_tokens_embedding_and_onehot():
    torch.manual_seed(5)
    ids = torch.randint(0, 6, (2, 4))
    e = SequenceModel("lstm", None, 4, 3, vocab_size=6, embedding_dim=5, many_to_many=True).eval()
    assert e(ids).shape == (2, 4, 3)
    o = SequenceModel("lstm", None, 4, 3, vocab_size=6, token_input="onehot").eval()
    # one-hot input x W^T picks a column of W: the same as an embedding whose table is W^T
    emb = SequenceModel("lstm", None, 4, 3, vocab_size=6, embedding_dim=6).eval()
    sd = {k: v for k, v in o.state_dict().items()}
    emb.load_state_dict({**sd, "embedding.weight": torch.eye(6)})
    np.testing.assert_allclose(_np(o(ids)), _np(emb(ids)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(cell="cnn", input_size=3, hidden_size=4, output_size=1), "cell"),
        (
            dict(cell="gru", input_size=3, hidden_size=4, output_size=1, attention=True, many_to_many=True),
            "attention",
        ),
        (dict(cell="gru", input_size=3, hidden_size=0, output_size=1), "hidden_size"),
        (dict(cell="gru", input_size=3, hidden_size=4, output_size=2, labels=["a"]), "labels"),
        (dict(cell="gru", input_size=3, hidden_size=4, output_size=1, input_std=[1, 0, 1]), "input_std"),
        (
            dict(cell="gru", input_size=3, hidden_size=4, output_size=1, output_activation="relu"),
            "output_activation",
        ),
        (dict(cell="gru", input_size=8, hidden_size=4, output_size=1, vocab_size=10), "token"),
    ],
)
def test_bad_arguments(kwargs, match):
    with pytest.raises(ValueError, match=match):
        SequenceModel(**kwargs)


def test_wrong_input_shape_is_clear():
    m = SequenceModel("gru", 3, 4, 1)
    with pytest.raises(ValueError, match=r"\(batch, time, 3\)"):
        m(torch.randn(2, 5, 4))


# ------------------------------------------------------------------------------------------------ ESN


def test_esn_reservoir_properties():
    e = ESN(3, 120, 1, spectral_radius=0.8, sparsity=0.9, input_scaling=0.5, seed=7)
    W = e.W.numpy().astype(np.float64)
    assert abs(np.max(np.abs(np.linalg.eigvals(W))) - 0.8) < 1e-4
    density = np.count_nonzero(W) / W.size
    assert 0.07 < density < 0.13
    assert np.all(np.abs(e.W_in.numpy()) <= 0.5)
    # same seed, same reservoir; another seed, another one
    assert torch.equal(ESN(3, 120, 1, spectral_radius=0.8, sparsity=0.9, input_scaling=0.5, seed=7).W, e.W)
    assert not torch.equal(ESN(3, 120, 1, spectral_radius=0.8, sparsity=0.9, seed=8).W, e.W)


def test_esn_states_follow_the_leaky_update():
    e = ESN(2, 30, 1, leak_rate=0.3, bias_scaling=0.2, seed=1)
    u = np.random.default_rng(0).normal(size=(1, 12, 2))
    Win, W, b = (t.numpy().astype(np.float64) for t in (e.W_in, e.W, e.b))
    x = np.zeros(30)
    expected = []
    for t in range(12):
        x = 0.7 * x + 0.3 * np.tanh(Win @ u[0, t] + W @ x + b)
        expected.append(x)
    np.testing.assert_allclose(_np(e.states(torch.tensor(u, dtype=torch.float32)))[0], expected, atol=2e-6)


@pytest.mark.parametrize("readout_input", ["state", "extended"])
def test_esn_fit_is_the_ridge_solution(readout_input):
    rng = np.random.default_rng(3)
    e = ESN(2, 40, 2, leak_rate=0.5, ridge=1e-2, readout_input=readout_input, seed=2)
    U = rng.normal(size=(3, 50, 2)).astype(np.float32)
    Y = rng.normal(size=(3, 50, 2))
    e.fit(U, Y, washout=5)
    Z = _np(e.features(torch.from_numpy(U)))[:, 5:].reshape(-1, e.readout.in_features)
    Zb = np.hstack([Z, np.ones((len(Z), 1))])
    reg = 1e-2 * np.eye(Zb.shape[1])
    reg[-1, -1] = 0
    sol = np.linalg.solve(Zb.T @ Zb + reg, Zb.T @ Y[:, 5:].reshape(-1, 2))
    np.testing.assert_allclose(_np(e.readout.weight), sol[:-1].T, rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(_np(e.readout.bias), sol[-1], rtol=1e-3, atol=1e-4)


def test_esn_learns_a_sine_one_step_ahead():
    t = np.arange(600) * 0.1
    s = np.sin(t).astype(np.float32)
    e = ESN(1, 100, 1, leak_rate=0.5, spectral_radius=0.9, ridge=1e-6, seed=0)
    e.fit(s[None, :-1, None], s[None, 1:, None], washout=50)
    pred = _np(e(torch.from_numpy(s[None, :-1, None])))[0, 100:, 0]
    assert np.sqrt(np.mean((pred - s[101:]) ** 2)) < 0.01


def test_esn_bad_arguments():
    with pytest.raises(ValueError, match="leak_rate"):
        ESN(2, 10, 1, leak_rate=0.0)
    with pytest.raises(ValueError, match="sparsity"):
        ESN(2, 10, 1, sparsity=1.0)
    e = ESN(2, 10, 1)
    with pytest.raises(ValueError, match="targets"):
        e.fit(np.zeros((1, 5, 2)), np.zeros((1, 4, 1)))


# ---------------------------------------------------------------------------------------- checkpoints


@pytest.mark.parametrize(
    "make",
    [
        lambda: SequenceModel("lstm", 3, 4, 2, input_mean=[1, 2, 3], input_std=[1, 2, 4], labels=["a", "b"]),
        lambda: SequenceModel(
            "gru", None, 4, 5, vocab_size=5, many_to_many=True, bidirectional=True, num_layers=2
        ),
        lambda: SequenceModel(
            "rnn_relu", 3, 4, 2, attention=True, attention_size=3, output_activation="sigmoid"
        ),
        lambda: ESN(3, 20, 2, readout_input="extended", leak_rate=0.4),
    ],
)
def test_checkpoint_round_trip(tmp_path, make):
    torch.manual_seed(0)
    m = make().eval()
    if isinstance(m, ESN):
        m.fit(
            np.random.default_rng(0).normal(size=(1, 30, 3)), np.random.default_rng(1).normal(size=(1, 30, 2))
        )
    p = tmp_path / "m.safetensors"
    models.save(m, p)
    m2 = models.load(p)
    assert type(m2) is type(m) and m2.config == m.config
    X = torch.randint(0, 5, (2, 6)) if getattr(m, "tokens", False) else torch.randn(2, 6, 3)
    with torch.no_grad():
        assert torch.equal(m(X), m2(X))
    # the file is plain safetensors: an 8-byte length, a JSON header, raw tensor bytes
    raw = p.read_bytes()
    (n,) = struct.unpack("<Q", raw[:8])
    header = json.loads(raw[8 : 8 + n])
    assert "edgernn.checkpoint" in header["__metadata__"]


def test_load_rejects_non_checkpoints(tmp_path):
    import pickle

    bad = tmp_path / "model.pt"
    bad.write_bytes(pickle.dumps({"weights": [1, 2, 3]}))
    with pytest.raises(ValueError, match="not a safetensors checkpoint"):
        models.load(bad)
    from safetensors.torch import save_file

    other = tmp_path / "other.safetensors"
    save_file(
        {"w": torch.zeros(2)}, str(other), metadata={"edgernn.checkpoint": json.dumps({"class": "os.system"})}
    )
    with pytest.raises(ValueError, match="bad checkpoint metadata"):
        models.load(other)
    plain = tmp_path / "plain.safetensors"
    save_file({"w": torch.zeros(2)}, str(plain))
    with pytest.raises(ValueError, match="not an edgernn checkpoint"):
        models.load(plain)
