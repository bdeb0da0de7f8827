"""The recurrent sequence model of the edgernn family: :class:`SequenceModel` (imports torch).

Also holds what it is built from and shares with :class:`edgernn.models.ESN`: the cell and output
activation names, the head activation, and :class:`AdditivePooling` (attention pooling over time).
Import it from :mod:`edgernn.models`, which re-exports everything here.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
OUTPUT_ACTIVATIONS = ("linear", "sigmoid", "softmax")


def _activate(y: torch.Tensor, activation: str) -> torch.Tensor:
    if activation == "sigmoid":
        return torch.sigmoid(y)
    if activation == "softmax":
        return torch.softmax(y, dim=-1)
    return y


def _vector(v: Any, n: int, what: str) -> torch.Tensor:
    t = torch.as_tensor(np.asarray(v, dtype=np.float32).reshape(-1))
    if t.numel() == 1:
        t = t.expand(n).clone()
    if t.numel() != n:
        raise ValueError(f"{what} has {t.numel()} values, expected {n} (one per input feature)")
    if not torch.all(torch.isfinite(t)):
        raise ValueError(f"{what} has non-finite values")
    return t


class AdditivePooling(nn.Module):
    """Additive attention pooling over time.

    ``s_t = v · tanh(W h_t + b)``, ``α = softmax_t(s)``, ``pooled = Σ_t α_t h_t``.
    ``W`` is ``[attention_size, hidden]``, ``b`` and ``v`` are ``[attention_size]``.
    """

    def __init__(self, hidden: int, attention_size: int):
        super().__init__()
        self.proj = nn.Linear(hidden, attention_size)
        self.v = nn.Parameter(torch.empty(attention_size).uniform_(-1, 1) / attention_size**0.5)

    def scores(self, h: torch.Tensor) -> torch.Tensor:
        """``(batch, time, hidden)`` -> attention scores ``(batch, time)``."""
        return torch.tanh(self.proj(h)) @ self.v

    def forward(self, h: torch.Tensor) -> torch.Tensor:
        """``(batch, time, hidden)`` -> pooled ``(batch, hidden)``."""
        alpha = torch.softmax(self.scores(h), dim=1)
        return (alpha.unsqueeze(-1) * h).sum(dim=1)


class ConfigViews:
    """The settings every edgernn model reads from its ``config`` dict (saved with its checkpoint)."""

    @property
    def many_to_many(self) -> bool:
        return self.config["many_to_many"]

    @property
    def output_activation(self) -> str:
        return self.config["output_activation"]

    @property
    def labels(self) -> list[str] | None:
        return self.config["labels"]


class SequenceModel(ConfigViews, nn.Module):
    """A recurrent sequence model: [normalize | embed] → RNN/LSTM/GRU stack → [attention] → linear head.

    Parameters
    ----------
    cell : ``"rnn_tanh" | "rnn_relu" | "lstm" | "gru"``
    input_size : features per time step (ignored for token inputs; pass ``None`` or 1).
    hidden_size : hidden units per direction and layer.
    output_size : outputs per prediction.
    num_layers : stacked recurrent layers; ``dropout`` applies between them (training only).
    bidirectional : forward and reverse directions concatenated (``2 * hidden_size`` features). Such a
        model runs on whole sequences only (``predict``); streaming ``step`` is impossible.
    attention : additive attention pooling over the hidden states (many-to-one only),
        ``s_t = v·tanh(W h_t + b)``, ``α = softmax(s)``, ``pooled = Σ α_t h_t``, then the head.
    many_to_many : one output per time step; otherwise one per sequence. A many-to-one model without
        attention takes the recurrent output at the **last time step**; for a bidirectional model that
        is ``[forward state after the whole sequence; reverse state after the last step only]`` — the
        same ``out[:, -1]`` that the runtime's ``predict`` computes.
    output_activation : ``"linear" | "sigmoid" | "softmax"`` applied by ``forward``; ``logits`` skips it.
    vocab_size : when given, inputs are token ids ``(batch, time)`` in ``[0, vocab_size)``, fed through
        an ``nn.Embedding(vocab_size, embedding_dim)`` (``token_input="embedding"``) or one-hot vectors
        (``token_input="onehot"``).
    input_mean, input_std : optional per-feature normalization ``(x - mean) / std`` stored as buffers and
        carried into the exported artifact.
    labels : optional output names (``output_size`` strings).
    conv_channels : a causal convolutional front-end before the recurrent layers
        (:class:`edgernn.convfront.CausalConvStack`): output channels of each ``Conv1d → [BatchNorm1d] →
        ReLU`` layer over time, kernel ``conv_kernel_size``, dilation ``conv_dilation``, ``BatchNorm1d``
        when ``conv_batchnorm``. Real-valued inputs only; applied after the input normalization. Each
        layer streams with the last ``(K-1)·d`` inputs as state (zeros before the first step).
    """

    def __init__(
        self,
        cell: str,
        input_size: int | None,
        hidden_size: int,
        output_size: int,
        num_layers: int = 1,
        bidirectional: bool = False,
        attention: bool = False,
        attention_size: int | None = None,
        many_to_many: bool = False,
        output_activation: str = "linear",
        vocab_size: int | None = None,
        token_input: str = "embedding",
        embedding_dim: int | None = None,
        dropout: float = 0.0,
        input_mean: Sequence[float] | np.ndarray | None = None,
        input_std: Sequence[float] | np.ndarray | None = None,
        labels: Sequence[str] | None = None,
        conv_channels: Sequence[int] | None = None,
        conv_kernel_size: int = 5,
        conv_dilation: int = 1,
        conv_batchnorm: bool = False,
    ):
        super().__init__()
        if cell not in CELLS:
            raise ValueError(f"cell must be one of {CELLS}, got {cell!r}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}"
            )
        for name, v in (
            ("hidden_size", hidden_size),
            ("output_size", output_size),
            ("num_layers", num_layers),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if attention and many_to_many:
            raise ValueError("attention pooling gives one vector per sequence: it needs many_to_many=False")
        if not 0.0 <= float(dropout) < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {dropout!r}")
        if labels is not None:
            labels = [str(s) for s in labels]
            if len(labels) != output_size:
                raise ValueError(f"labels has {len(labels)} names, expected output_size={output_size}")
        self.tokens = vocab_size is not None
        if self.tokens:
            if not isinstance(vocab_size, int) or vocab_size < 2:
                raise ValueError(f"vocab_size must be an integer >= 2, got {vocab_size!r}")
            if token_input not in ("embedding", "onehot"):
                raise ValueError(f"token_input must be 'embedding' or 'onehot', got {token_input!r}")
            if input_size not in (None, 1):
                raise ValueError("token inputs take one id per step: pass input_size=None (or 1)")
            if input_mean is not None or input_std is not None:
                raise ValueError("input normalization applies to real-valued features, not token ids")
            if token_input == "embedding":
                embedding_dim = int(embedding_dim or hidden_size)
                self.embedding = nn.Embedding(vocab_size, embedding_dim)
                rnn_in = embedding_dim
            else:
                embedding_dim = None
                rnn_in = vocab_size
            input_size = 1
        else:
            if not isinstance(input_size, int) or input_size < 1:
                raise ValueError(f"input_size must be a positive integer, got {input_size!r}")
            rnn_in = input_size
            token_input = "embedding"
            embedding_dim = None
        self.config: dict[str, Any] = {
            "cell": cell,
            "input_size": input_size,
            "hidden_size": hidden_size,
            "output_size": output_size,
            "num_layers": num_layers,
            "bidirectional": bool(bidirectional),
            "attention": bool(attention),
            "attention_size": int(attention_size or hidden_size) if attention else None,
            "many_to_many": bool(many_to_many),
            "output_activation": output_activation,
            "vocab_size": vocab_size,
            "token_input": token_input,
            "embedding_dim": embedding_dim,
            "dropout": float(dropout),
            "labels": labels,
        }
        self.front = None
        if conv_channels is not None:
            from .convfront import CausalConvStack

            if self.tokens:
                raise ValueError("conv_channels: a convolutional front-end takes real-valued features")
            self.front = CausalConvStack(
                input_size, conv_channels, conv_kernel_size, conv_dilation, bool(conv_batchnorm)
            )
            rnn_in = self.front.convs[-1].out_channels
            self.config.update(
                conv_channels=[int(c) for c in conv_channels],
                conv_kernel_size=conv_kernel_size,
                conv_dilation=conv_dilation,
                conv_batchnorm=bool(conv_batchnorm),
            )
        self.normalized = input_mean is not None or input_std is not None
        if self.normalized:
            mean = _vector(0.0 if input_mean is None else input_mean, input_size, "input_mean")
            std = _vector(1.0 if input_std is None else input_std, input_size, "input_std")
            if not torch.all(std > 0):
                raise ValueError("input_std must be > 0 everywhere")
            self.register_buffer("input_mean", mean)
            self.register_buffer("input_std", std)
        kw = dict(batch_first=True, num_layers=num_layers, bidirectional=bidirectional)
        kw["dropout"] = float(dropout) if num_layers > 1 else 0.0
        if cell == "lstm":
            self.rnn = nn.LSTM(rnn_in, hidden_size, **kw)
        elif cell == "gru":
            self.rnn = nn.GRU(rnn_in, hidden_size, **kw)
        else:
            self.rnn = nn.RNN(rnn_in, hidden_size, nonlinearity=cell[4:], **kw)
        feat = hidden_size * (2 if bidirectional else 1)
        self.attention = AdditivePooling(feat, self.config["attention_size"]) if attention else None
        self.head = nn.Linear(feat, output_size)

    # -------------------------------------------------------------------------------- forward
    def encode(self, x: torch.Tensor) -> torch.Tensor:
        """Inputs ``(batch, time, input_size)`` (or token ids ``(batch, time)``) -> RNN input features."""
        if self.tokens:
            if x.dim() == 3 and x.shape[-1] == 1:
                x = x[..., 0]
            if x.dim() != 2:
                raise InputError(f"token ids must be (batch, time), got shape {tuple(x.shape)}")
            ids = x if x.dtype == torch.long else x.long()
            if self.config["token_input"] == "embedding":
                return self.embedding(ids)
            return nn.functional.one_hot(ids, self.config["vocab_size"]).to(torch.float32)
        if x.dim() != 3 or x.shape[-1] != self.config["input_size"]:
            raise InputError(
                f"inputs must be (batch, time, {self.config['input_size']}), got shape {tuple(x.shape)}"
            )
        x = x.to(torch.float32)
        if self.normalized:
            x = (x - self.input_mean) / self.input_std
        if self.front is not None:
            x = self.front(x)
        return x

    def logits(self, x: torch.Tensor) -> torch.Tensor:
        """The head's output before ``output_activation``; same shapes as :meth:`forward`."""
        out, _ = self.rnn(self.encode(x))
        if self.attention is not None:
            out = self.attention(out)
        elif not self.many_to_many:
            out = out[:, -1]
        return self.head(out)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(batch, time, input_size)`` -> ``(batch, output_size)`` or ``(batch, time, output_size)``."""
        return _activate(self.logits(x), self.output_activation)
