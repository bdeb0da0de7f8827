"""Training loop and metrics for the edgernn model family (imports torch).

:func:`fit` trains any ``nn.Module`` mapping ``(batch, time, features)`` (or token ids) to outputs, with
Adam/RMSProp/SGD, gradient clipping, a validation split, early stopping and a progress bar (``tqdm``
when installed, else one line per epoch). Losses: ``"mse"``, ``"mae"``, ``"bce"`` (binary),
``"cross_entropy"`` (multi-class) and ``"token_cross_entropy"`` (one class per time step). For the
classification losses an edgernn model's pre-activation :meth:`logits` are used (numerically stable);
other modules' outputs are taken as logits.

Metrics (plain functions on numpy arrays or tensors): :func:`accuracy`, :func:`precision`,
:func:`recall`, :func:`f1`, :func:`perplexity`, :func:`rmse`, :func:`mae`, :func:`r2` and corpus
:func:`bleu`. They are small closed-form definitions (no extra dependency), tested against
independent computations.
"""

from __future__ import annotations

import math
import sys
import time
from collections import Counter
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError

LOSSES = ("mse", "mae", "bce", "cross_entropy", "token_cross_entropy")
OPTIMIZERS = ("adam", "rmsprop", "sgd")


class _Bar:
    """tqdm when installed, else a plain one-line-per-epoch report on stderr."""

    def __init__(self, total: int, enabled: bool):
        self.enabled = enabled
        self.tqdm = None
        if enabled:
            try:
                from tqdm.auto import tqdm

                self.tqdm = tqdm(total=total, unit="epoch")
            except ImportError:
                pass
        self.total = total
        self.t0 = time.perf_counter()

    def update(self, epoch: int, logs: dict) -> None:
        if not self.enabled:
            return
        text = " ".join(f"{k}={v:.4g}" for k, v in logs.items())
        if self.tqdm is not None:
            self.tqdm.set_postfix_str(text)
            self.tqdm.update(1)
        else:
            width = 20
            done = int(width * epoch / self.total)
            bar = "#" * done + "." * (width - done)
            print(
                f"epoch {epoch}/{self.total} [{bar}] {text} ({time.perf_counter() - self.t0:.1f}s)",
                file=sys.stderr,
                flush=True,
            )

    def close(self) -> None:
        if self.tqdm is not None:
            self.tqdm.close()


def _tensor(a: Any, dtype=None) -> torch.Tensor:
    t = a if isinstance(a, torch.Tensor) else torch.as_tensor(np.asarray(a))
    return t.to(dtype) if dtype is not None else t


def _loss_fn(loss: str):
    if loss == "mse":
        return nn.MSELoss()
    if loss == "mae":
        return nn.L1Loss()
    if loss == "bce":
        return nn.BCEWithLogitsLoss()
    ce = nn.CrossEntropyLoss(ignore_index=-100)

    def cross_entropy(logits, y):
        # (B, C) with (B,), or (B, T, C) with (B, T): classes on the last axis
        return ce(logits.reshape(-1, logits.shape[-1]), y.reshape(-1).long())

    return cross_entropy


def _forward(model: nn.Module, xb: torch.Tensor, loss: str) -> torch.Tensor:
    if loss in ("bce", "cross_entropy", "token_cross_entropy") and hasattr(model, "logits"):
        return model.logits(xb)
    return model(xb)


def fit(
    model: nn.Module,
    X: Any,
    Y: Any,
    loss: str = "mse",
    optimizer: str = "adam",
    lr: float = 1e-3,
    epochs: int = 10,
    batch_size: int = 32,
    clip_grad_norm: float | None = None,
    validation_split: float = 0.0,
    validation_data: tuple[Any, Any] | None = None,
    patience: int | None = None,
    weight_decay: float = 0.0,
    shuffle: bool = True,
    seed: int = 0,
    progress: bool = True,
) -> dict[str, Any]:
    """Train ``model`` in place; returns the history.

    Parameters
    ----------
    X : inputs ``(N, time, features)`` float, or ``(N, time)`` token ids.
    Y : targets: ``(N, out)``/``(N, time, out)`` floats for ``mse``/``mae``/``bce``; ``(N,)`` class ids for
        ``cross_entropy``; ``(N, time)`` class ids for ``token_cross_entropy`` (``-100`` = ignore).
    loss, optimizer, lr, weight_decay : see the module docstring.
    epochs, batch_size : passes over the training data and samples per step.
    clip_grad_norm : clip the global gradient L2 norm to this value (``None``: no clipping).
    validation_split : the last fraction of (X, Y) held out for validation (ignored when
        ``validation_data`` is given).
    patience : stop after this many epochs without a lower validation loss and restore the best weights.

    Returns ``{"loss": [...], "val_loss": [...], "epochs": n, "best_epoch": k, "stopped_early": bool}``
    (losses per epoch, mean over samples).
    """
    from .models import ESN

    if isinstance(model, ESN):
        raise TypeError("an ESN is not trained by backprop: call esn.fit(X, Y) (closed-form ridge readout)")
    if loss not in LOSSES:
        raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
    if optimizer not in OPTIMIZERS:
        raise ValueError(f"optimizer must be one of {OPTIMIZERS}, got {optimizer!r}")
    if epochs < 1 or batch_size < 1:
        raise ValueError("epochs and batch_size must be >= 1")
    if not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be in [0, 1), got {validation_split}")
    Xt = _tensor(X)
    tokens = getattr(model, "tokens", False) or not (Xt.is_floating_point() or Xt.is_complex())
    Xt = Xt.to(torch.long if tokens else torch.float32)
    ydtype = torch.long if loss in ("cross_entropy", "token_cross_entropy") else torch.float32
    Yt = _tensor(Y, ydtype)
    if len(Xt) != len(Yt):
        raise InputError(f"X has {len(Xt)} samples but Y has {len(Yt)}")
    if not tokens and not torch.all(torch.isfinite(Xt)):
        raise InputError("X contains NaN or Inf")
    if validation_data is not None:
        Xv = _tensor(validation_data[0], Xt.dtype)
        Yv = _tensor(validation_data[1], ydtype)
    elif validation_split > 0:
        n_val = max(1, int(round(len(Xt) * validation_split)))
        if n_val >= len(Xt):
            raise InputError("validation_split leaves no training samples")
        Xt, Xv, Yt, Yv = Xt[:-n_val], Xt[-n_val:], Yt[:-n_val], Yt[-n_val:]
    else:
        Xv = Yv = None
    if patience is not None and Xv is None:
        raise ValueError("early stopping (patience) needs validation data: set validation_split")
    params = [p for p in model.parameters() if p.requires_grad]
    opt_cls = {"adam": torch.optim.Adam, "rmsprop": torch.optim.RMSprop, "sgd": torch.optim.SGD}[optimizer]
    opt = opt_cls(params, lr=lr, weight_decay=weight_decay)
    crit = _loss_fn(loss)
    gen = torch.Generator().manual_seed(seed)
    history: dict[str, Any] = {"loss": [], "val_loss": [], "stopped_early": False}
    best, best_state, best_epoch, bad = math.inf, None, 0, 0
    bar = _Bar(epochs, progress)
    try:
        for epoch in range(1, epochs + 1):
            model.train()
            order = torch.randperm(len(Xt), generator=gen) if shuffle else torch.arange(len(Xt))
            total = 0.0
            for i in range(0, len(Xt), batch_size):
                idx = order[i : i + batch_size]
                opt.zero_grad()
                value = crit(_forward(model, Xt[idx], loss), Yt[idx])
                if not torch.isfinite(value):
                    raise FloatingPointError(f"loss became {value.item()} at epoch {epoch}; lower the lr")
                value.backward()
                if clip_grad_norm is not None:
                    nn.utils.clip_grad_norm_(params, clip_grad_norm)
                opt.step()
                total += value.item() * len(idx)
            history["loss"].append(total / len(Xt))
            logs = {"loss": history["loss"][-1]}
            if Xv is not None:
                model.eval()
                with torch.no_grad():
                    v = crit(_forward(model, Xv, loss), Yv).item()
                history["val_loss"].append(v)
                logs["val_loss"] = v
                if v < best:
                    best, best_epoch, bad = v, epoch, 0
                    best_state = {k: t.detach().clone() for k, t in model.state_dict().items()}
                else:
                    bad += 1
            bar.update(epoch, logs)
            if patience is not None and bad >= patience:
                history["stopped_early"] = True
                break
    finally:
        bar.close()
    if patience is not None and best_state is not None:
        model.load_state_dict(best_state)
    model.eval()
    history["epochs"] = len(history["loss"])
    history["best_epoch"] = best_epoch if Xv is not None else history["epochs"]
    return history


# ------------------------------------------------------------------------------------------- metrics


def _np(a: Any) -> np.ndarray:
    if isinstance(a, torch.Tensor):
        a = a.detach().cpu().numpy()
    return np.asarray(a)


def _labels(pred: Any, threshold: float = 0.5) -> np.ndarray:
    """Class labels from labels, scores ``(..., C)`` (argmax) or binary probabilities (``>= threshold``)."""
    p = _np(pred)
    if p.dtype.kind in "iub":
        return p.astype(np.int64)
    if p.ndim >= 2 and p.shape[-1] > 1:
        return p.argmax(-1)
    if p.ndim >= 2 and p.shape[-1] == 1:
        p = p[..., 0]
    return (p >= threshold).astype(np.int64)


def accuracy(y_true: Any, y_pred: Any) -> float:
    """Fraction of equal labels. ``y_pred``: labels, class scores ``(N, C)`` or binary probabilities."""
    t, p = _np(y_true).astype(np.int64).reshape(-1), _labels(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise InputError(f"y_true has {t.size} labels, y_pred {p.size}")
    return float(np.mean(t == p)) if t.size else float("nan")


def _prf(y_true: Any, y_pred: Any, average: str, positive: int):
    t, p = _np(y_true).astype(np.int64).reshape(-1), _labels(y_pred).reshape(-1)
    if t.shape != p.shape:
        raise InputError(f"y_true has {t.size} labels, y_pred {p.size}")
    if average == "binary":
        classes = [positive]
    elif average in ("macro", "micro"):
        classes = sorted(set(t.tolist()) | set(p.tolist()))
    else:
        raise ValueError(f"average must be 'binary', 'macro' or 'micro', got {average!r}")
    tp = np.array([np.sum((p == c) & (t == c)) for c in classes], np.float64)
    fp = np.array([np.sum((p == c) & (t != c)) for c in classes], np.float64)
    fn = np.array([np.sum((p != c) & (t == c)) for c in classes], np.float64)
    if average == "micro":
        tp, fp, fn = tp.sum(keepdims=True), fp.sum(keepdims=True), fn.sum(keepdims=True)
    with np.errstate(divide="ignore", invalid="ignore"):
        prec = np.where(tp + fp > 0, tp / (tp + fp), 0.0)
        rec = np.where(tp + fn > 0, tp / (tp + fn), 0.0)
        f = np.where(prec + rec > 0, 2 * prec * rec / (prec + rec), 0.0)
    return float(prec.mean()), float(rec.mean()), float(f.mean())


def precision(y_true: Any, y_pred: Any, average: str = "macro", positive: int = 1) -> float:
    """tp / (tp + fp) per class, averaged (``"macro"``), pooled (``"micro"``), or of ``positive`` only
    (``"binary"``).

    A class never predicted counts 0 (as scikit-learn's ``zero_division=0``).
    """
    return _prf(y_true, y_pred, average, positive)[0]


def recall(y_true: Any, y_pred: Any, average: str = "macro", positive: int = 1) -> float:
    """tp / (tp + fn), averaged like :func:`precision`."""
    return _prf(y_true, y_pred, average, positive)[1]


def f1(y_true: Any, y_pred: Any, average: str = "macro", positive: int = 1) -> float:
    """Harmonic mean of precision and recall per class, averaged like :func:`precision`."""
    return _prf(y_true, y_pred, average, positive)[2]


def perplexity(scores: Any, targets: Any, from_probs: bool = False, ignore_index: int = -100) -> float:
    """``exp(mean negative log-likelihood)`` of ``targets`` ``(...)`` under ``scores`` ``(..., C)``.

    ``scores`` are logits (default) or probabilities (``from_probs=True``, e.g. a softmax model's output).
    """
    s = torch.as_tensor(_np(scores), dtype=torch.float64)
    y = torch.as_tensor(_np(targets)).long()
    if s.shape[:-1] != y.shape:
        raise InputError(f"scores {tuple(s.shape)} do not match targets {tuple(y.shape)} (classes last)")
    logp = torch.log(s.clamp_min(1e-300)) if from_probs else torch.log_softmax(s, dim=-1)
    mask = y != ignore_index
    if not torch.any(mask):
        raise InputError("no target to score")
    nll = -logp[mask].gather(-1, y[mask].unsqueeze(-1)).mean()
    return float(torch.exp(nll))


def _reg(y_true: Any, y_pred: Any) -> tuple[np.ndarray, np.ndarray]:
    t, p = _np(y_true).astype(np.float64), _np(y_pred).astype(np.float64)
    if t.shape != p.shape:
        raise InputError(f"y_true shape {t.shape} != y_pred shape {p.shape}")
    return t, p


def rmse(y_true: Any, y_pred: Any) -> float:
    """Root mean squared error over all elements."""
    t, p = _reg(y_true, y_pred)
    return float(np.sqrt(np.mean((t - p) ** 2)))


def mae(y_true: Any, y_pred: Any) -> float:
    """Mean absolute error over all elements."""
    t, p = _reg(y_true, y_pred)
    return float(np.mean(np.abs(t - p)))


def r2(y_true: Any, y_pred: Any) -> float:
    """Coefficient of determination ``1 - SS_res / SS_tot`` per output column (last axis), averaged.

    Inputs ``(N,)`` or ``(..., outputs)``; all leading axes are samples.
    """
    t, p = _reg(y_true, y_pred)
    if t.ndim == 1:
        t, p = t[:, None], p[:, None]
    t, p = t.reshape(-1, t.shape[-1]), p.reshape(-1, p.shape[-1])
    ss_res = ((t - p) ** 2).sum(0)
    ss_tot = ((t - t.mean(0)) ** 2).sum(0)
    with np.errstate(divide="ignore", invalid="ignore"):
        r = np.where(ss_tot > 0, 1.0 - ss_res / ss_tot, np.where(ss_res == 0, 1.0, 0.0))
    return float(r.mean())


def _ngrams(tokens: Sequence, n: int) -> Counter:
    return Counter(tuple(tokens[i : i + n]) for i in range(len(tokens) - n + 1))


def bleu(
    references: Sequence[Sequence[Sequence]] | Sequence[Sequence],
    hypotheses: Sequence[Sequence],
    max_n: int = 4,
    smooth: bool = False,
) -> float:
    """Corpus BLEU (Papineni et al. 2002) of token sequences, in [0, 1].

    ``references[i]`` is a list of reference token lists for ``hypotheses[i]`` (a single token list is
    accepted as one reference). Clipped n-gram counts are summed over the corpus for n = 1..``max_n``,
    combined by a uniform geometric mean, times the brevity penalty ``exp(1 - r/c)`` when the total
    hypothesis length ``c`` is below the total closest-reference length ``r``. ``smooth`` adds one to
    every numerator and denominator for n > 1 (Lin & Och 2004), so short corpora do not score 0.
    """
    if len(references) != len(hypotheses):
        raise InputError(f"{len(references)} reference sets for {len(hypotheses)} hypotheses")
    num = np.zeros(max_n)
    den = np.zeros(max_n)
    c_len = r_len = 0
    for refs, hyp in zip(references, hypotheses, strict=True):
        hyp = list(hyp)
        if refs and not isinstance(refs[0], (list, tuple)):
            refs = [refs]
        refs = [list(r) for r in refs]
        if not refs:
            raise InputError("every hypothesis needs at least one reference")
        c_len += len(hyp)
        r_len += min((abs(len(r) - len(hyp)), len(r)) for r in refs)[1]
        for n in range(1, max_n + 1):
            h = _ngrams(hyp, n)
            best: Counter = Counter()
            for r in refs:
                best |= _ngrams(r, n)
            num[n - 1] += sum(min(c, best[g]) for g, c in h.items())
            den[n - 1] += max(len(hyp) - n + 1, 0)
    if smooth:
        num[1:] += 1
        den[1:] += 1
    if c_len == 0 or np.any(num == 0):
        return 0.0
    log_p = np.mean(np.log(num / den))
    bp = 1.0 if c_len > r_len else math.exp(1 - r_len / c_len)
    return float(bp * math.exp(log_p))
