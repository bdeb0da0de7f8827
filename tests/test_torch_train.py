"""edgernn.train: the fit loop on small real tasks, metrics against independent computations."""

from __future__ import annotations

import math

import numpy as np
import pytest

torch = pytest.importorskip("torch")

from edgernn import train  # noqa: E402
from edgernn.models import ESN, SequenceModel  # noqa: E402


def _sign_task(n=96, t=6, seed=0):
    rng = np.random.default_rng(seed)
    X = rng.normal(size=(n, t, 2)).astype(np.float32)
    y = (X[:, :, 0].sum(1) > 0).astype(np.int64)
    return X, y


@pytest.mark.parametrize("optimizer", ["adam", "rmsprop", "sgd"])
def test_fit_learns_a_classification_task(optimizer):
    torch.manual_seed(0)
    X, y = _sign_task()
    m = SequenceModel("gru", 2, 8, 2, output_activation="softmax")
    lr = {"adam": 0.02, "rmsprop": 0.01, "sgd": 0.3}[optimizer]
    h = train.fit(
        m, X, y, loss="cross_entropy", optimizer=optimizer, lr=lr, epochs=25, batch_size=16, progress=False
    )
    assert h["epochs"] == 25 and len(h["loss"]) == 25
    assert h["loss"][-1] < 0.6 * h["loss"][0]
    with torch.no_grad():
        assert train.accuracy(y, m(torch.from_numpy(X))) > 0.8


def test_fit_regression_with_clipping_and_validation():
    torch.manual_seed(1)
    rng = np.random.default_rng(1)
    X = rng.normal(size=(64, 5, 3)).astype(np.float32)
    Y = X.cumsum(1)[..., :1] * 0.3  # running sum: a many-to-many target
    m = SequenceModel("lstm", 3, 8, 1, many_to_many=True)
    h = train.fit(
        m, X, Y, loss="mse", lr=0.02, epochs=15, clip_grad_norm=0.5, validation_split=0.25, progress=False
    )
    assert len(h["val_loss"]) == 15
    assert h["val_loss"][-1] < h["val_loss"][0]


def test_early_stopping_restores_best_weights():
    torch.manual_seed(2)
    X, y = _sign_task(48)
    m = SequenceModel("rnn_tanh", 2, 4, 1, output_activation="sigmoid")
    # a huge learning rate makes validation loss go up after the first epochs
    h = train.fit(m, X, y[:, None].astype(np.float32), loss="bce", optimizer="sgd", lr=50.0, epochs=30,
                  validation_split=0.25, patience=2, progress=False)  # fmt: skip
    assert h["stopped_early"] and h["epochs"] < 30
    with torch.no_grad():
        val = torch.nn.functional.binary_cross_entropy_with_logits(
            m.logits(torch.from_numpy(X[-12:])), torch.from_numpy(y[-12:, None].astype(np.float32))
        ).item()
    assert val == pytest.approx(min(h["val_loss"]), rel=1e-5)


def test_token_cross_entropy_and_perplexity():
    torch.manual_seed(3)
    rng = np.random.default_rng(3)
    ids = rng.integers(0, 5, size=(40, 8))
    target = (ids + 1) % 5  # predict the next id of a fixed cycle
    m = SequenceModel("gru", None, 16, 5, vocab_size=5, many_to_many=True, output_activation="softmax")
    h = train.fit(m, ids, target, loss="token_cross_entropy", lr=0.05, epochs=20, progress=False)
    assert h["loss"][-1] < 0.2
    with torch.no_grad():
        probs = m(torch.from_numpy(ids))
    assert train.perplexity(probs, target, from_probs=True) < 1.3


def test_progress_line_without_tqdm(capsys):
    X, y = _sign_task(16)
    train.fit(SequenceModel("gru", 2, 4, 2), X, y, loss="cross_entropy", epochs=2, progress=True)
    err = capsys.readouterr().err
    try:
        import tqdm  # noqa: F401
    except ImportError:
        assert "epoch 2/2" in err and "loss=" in err


def test_fit_errors():
    X, y = _sign_task(8)
    with pytest.raises(TypeError, match="esn.fit"):
        train.fit(ESN(2, 10, 1), X, y)
    with pytest.raises(ValueError, match="loss"):
        train.fit(SequenceModel("gru", 2, 4, 2), X, y, loss="hinge")
    with pytest.raises(ValueError, match="samples"):
        train.fit(SequenceModel("gru", 2, 4, 2), X, y[:5], loss="cross_entropy")
    with pytest.raises(ValueError, match="validation"):
        train.fit(SequenceModel("gru", 2, 4, 2), X, y, loss="cross_entropy", patience=2)


# -------------------------------------------------------------------------------------------- metrics


def test_classification_metrics_against_confusion_counts():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 3, 200)
    p = np.where(rng.random(200) < 0.7, t, rng.integers(0, 3, 200))
    prec, rec, f = [], [], []
    for c in range(3):
        tp = sum(1 for a, b in zip(t, p, strict=True) if a == c and b == c)
        fp = sum(1 for a, b in zip(t, p, strict=True) if a != c and b == c)
        fn = sum(1 for a, b in zip(t, p, strict=True) if a == c and b != c)
        prec.append(tp / (tp + fp))
        rec.append(tp / (tp + fn))
        f.append(2 * prec[-1] * rec[-1] / (prec[-1] + rec[-1]))
    assert train.accuracy(t, p) == pytest.approx(sum(int(a == b) for a, b in zip(t, p, strict=True)) / 200)
    assert train.precision(t, p) == pytest.approx(np.mean(prec))
    assert train.recall(t, p) == pytest.approx(np.mean(rec))
    assert train.f1(t, p) == pytest.approx(np.mean(f))
    # micro averaging over all classes of a single-label task equals accuracy
    assert train.f1(t, p, average="micro") == pytest.approx(train.accuracy(t, p))
    # scores: argmax picks the label
    scores = np.eye(3)[p] + 0.1
    assert train.accuracy(t, scores) == train.accuracy(t, p)


def test_binary_metrics_by_hand():
    t = np.array([1, 1, 1, 0, 0, 0, 0, 1])
    prob = np.array([0.9, 0.6, 0.2, 0.7, 0.1, 0.4, 0.3, 0.8])  # threshold 0.5 -> 1 1 0 1 0 0 0 1
    assert train.precision(t, prob, average="binary") == pytest.approx(3 / 4)
    assert train.recall(t, prob, average="binary") == pytest.approx(3 / 4)
    assert train.accuracy(t, prob) == pytest.approx(6 / 8)


def test_regression_metrics():
    y = np.array([1.0, 2.0, 4.0, 8.0])
    p = np.array([1.5, 2.0, 3.0, 8.0])
    assert train.mae(y, p) == pytest.approx((0.5 + 0 + 1 + 0) / 4)
    assert train.rmse(y, p) == pytest.approx(math.sqrt((0.25 + 1) / 4))
    # for an ordinary least-squares fit with an intercept, R² equals the squared correlation
    rng = np.random.default_rng(1)
    x = rng.normal(size=100)
    yy = 2 * x + rng.normal(size=100)
    slope, icpt = np.polyfit(x, yy, 1)
    assert train.r2(yy, slope * x + icpt) == pytest.approx(np.corrcoef(x, yy)[0, 1] ** 2, rel=1e-9)
    assert train.r2(yy, np.full_like(yy, yy.mean())) == pytest.approx(0.0, abs=1e-12)


def test_perplexity():
    # uniform predictions over C classes: perplexity is exactly C
    assert train.perplexity(np.zeros((4, 6, 7)), np.zeros((4, 6), np.int64)) == pytest.approx(7.0)
    probs = np.array([[0.5, 0.25, 0.25], [0.1, 0.8, 0.1]])
    expected = math.exp(-(math.log(0.5) + math.log(0.8)) / 2)
    assert train.perplexity(probs, np.array([0, 1]), from_probs=True) == pytest.approx(expected)
    with pytest.raises(ValueError, match="do not match"):
        train.perplexity(probs, np.array([0, 1, 2]))


def test_bleu_by_hand():
    # Papineni et al.'s example: the modified unigram precision of "the the the ..." is 2/7 (the hypothesis
    # is longer than the reference: no brevity penalty)
    assert train.bleu([["the", "cat", "is", "on", "the", "mat"]], [["the"] * 7], max_n=1) == pytest.approx(
        2 / 7
    )
    assert train.bleu([[list("abcdef")]], [list("abcdef")]) == pytest.approx(1.0)
    # hyp "a b c d x" vs ref "a b c d e": p1=4/5 p2=3/4 p3=2/3 p4=1/2, equal lengths -> no brevity penalty
    got = train.bleu([[list("abcde")]], [list("abcdx")])
    assert got == pytest.approx((4 / 5 * 3 / 4 * 2 / 3 * 1 / 2) ** 0.25)
    # the closest reference length sets the brevity penalty: hyp of 3 against refs of 4 and 9
    got = train.bleu([[list("abcd"), list("abcdefghi")]], [list("abc")], max_n=1)
    assert got == pytest.approx(math.exp(1 - 4 / 3))
    assert train.bleu([[list("abcd")]], [list("wxyz")]) == 0.0
    assert train.bleu([[list("abcd")]], [list("abxy")], smooth=True) > 0.0


def test_fit_a_user_token_module():
    torch.manual_seed(4)

    class Net(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.emb = torch.nn.Embedding(4, 8)
            self.rnn = torch.nn.GRU(8, 8, batch_first=True)
            self.out = torch.nn.Linear(8, 4)

        def forward(self, ids):
            return self.out(self.rnn(self.emb(ids))[0])

    ids = np.random.default_rng(0).integers(0, 4, (32, 6))
    h = train.fit(Net(), ids, (ids + 1) % 4, loss="token_cross_entropy", lr=0.05, epochs=15, progress=False)
    assert h["loss"][-1] < 0.3 * h["loss"][0]
