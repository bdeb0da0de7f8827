"""The edgernn model family: plain PyTorch ``nn.Module``s that export cleanly (imports torch).

* :class:`SequenceModel` — vanilla RNN (tanh/relu), LSTM or GRU; stacked, bidirectional, with optional
  additive attention pooling and an optional causal Conv1d front-end (DeepConvLSTM, :func:`deepconvlstm`);
  real-valued or token inputs; many-to-one or many-to-many heads.
* :class:`ESN` — an echo state network: a fixed random reservoir and a ridge-regression readout.
* :func:`save` / :func:`load` — a checkpoint is one safetensors file: the weights are its tensors and the
  constructor arguments are JSON in its metadata. Loading never unpickles, so an untrusted checkpoint
  cannot run code.

Shapes: inputs are batch-first, ``(batch, time, features)`` float32, or ``(batch, time)`` int64 token
ids. A many-to-one model returns ``(batch, output_size)``, a many-to-many one ``(batch, time, output_size)``.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from .errors import InputError

CELLS = ("rnn_tanh", "rnn_relu", "lstm", "gru")
OUTPUT_ACTIVATIONS = ("linear", "sigmoid", "softmax")
CHECKPOINT_KEY = "edgernn.checkpoint"


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


class SequenceModel(nn.Module):
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
    @property
    def many_to_many(self) -> bool:
        return self.config["many_to_many"]

    @property
    def output_activation(self) -> str:
        return self.config["output_activation"]

    @property
    def labels(self) -> list[str] | None:
        return self.config["labels"]

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


class ESN(nn.Module):
    """Echo state network: a fixed random leaky-tanh reservoir and a linear readout fitted by ridge.

    Update per step (``a`` = ``leak_rate``)::

        x_t = (1 - a) x_{t-1} + a tanh(W_in u_t + W x_{t-1} + b)
        y_t = W_out z_t + b_out,   z_t = x_t ("state") or [1; u_t; x_t] ("extended")

    ``W_in`` is uniform in ``±input_scaling``; ``W`` keeps a fraction ``1 - sparsity`` of uniform(-1, 1)
    entries and is rescaled to ``spectral_radius``; ``b`` is uniform in ``±bias_scaling``. Everything is
    drawn from ``numpy.random.default_rng(seed)``. :meth:`fit` solves the readout in closed form.
    """

    def __init__(
        self,
        input_size: int,
        reservoir_size: int,
        output_size: int,
        leak_rate: float = 1.0,
        spectral_radius: float = 0.9,
        input_scaling: float = 1.0,
        sparsity: float = 0.9,
        seed: int = 0,
        ridge: float = 1e-6,
        readout_input: str = "state",
        bias_scaling: float = 0.0,
        many_to_many: bool = True,
        output_activation: str = "linear",
        labels: Sequence[str] | None = None,
    ):
        super().__init__()
        for name, v in (
            ("input_size", input_size),
            ("reservoir_size", reservoir_size),
            ("output_size", output_size),
        ):
            if not isinstance(v, int) or v < 1:
                raise ValueError(f"{name} must be a positive integer, got {v!r}")
        if not 0.0 < leak_rate <= 1.0:
            raise ValueError(f"leak_rate must be in (0, 1], got {leak_rate!r}")
        if not 0.0 <= sparsity < 1.0:
            raise ValueError(f"sparsity (fraction of zero weights) must be in [0, 1), got {sparsity!r}")
        if spectral_radius < 0 or input_scaling < 0 or ridge < 0 or bias_scaling < 0:
            raise ValueError("spectral_radius, input_scaling, bias_scaling and ridge must be >= 0")
        if readout_input not in ("state", "extended"):
            raise ValueError(f"readout_input must be 'state' or 'extended', got {readout_input!r}")
        if output_activation not in OUTPUT_ACTIVATIONS:
            raise ValueError(
                f"output_activation must be one of {OUTPUT_ACTIVATIONS}, got {output_activation!r}"
            )
        if labels is not None:
            labels = [str(s) for s in labels]
            if len(labels) != output_size:
                raise ValueError(f"labels has {len(labels)} names, expected output_size={output_size}")
        self.config: dict[str, Any] = {
            "input_size": input_size,
            "reservoir_size": reservoir_size,
            "output_size": output_size,
            "leak_rate": float(leak_rate),
            "spectral_radius": float(spectral_radius),
            "input_scaling": float(input_scaling),
            "sparsity": float(sparsity),
            "seed": int(seed),
            "ridge": float(ridge),
            "readout_input": readout_input,
            "bias_scaling": float(bias_scaling),
            "many_to_many": bool(many_to_many),
            "output_activation": output_activation,
            "labels": labels,
        }
        rng = np.random.default_rng(seed)
        n = reservoir_size
        w_in = rng.uniform(-input_scaling, input_scaling, (n, input_size))
        w = rng.uniform(-1.0, 1.0, (n, n)) * (rng.random((n, n)) >= sparsity)
        radius = float(np.max(np.abs(np.linalg.eigvals(w)))) if n > 0 else 0.0
        if radius > 0:
            w *= spectral_radius / radius
        b = rng.uniform(-bias_scaling, bias_scaling, n) if bias_scaling > 0 else np.zeros(n)
        self.register_buffer("W_in", torch.tensor(w_in, dtype=torch.float32))
        self.register_buffer("W", torch.tensor(w, dtype=torch.float32))
        self.register_buffer("b", torch.tensor(b, dtype=torch.float32))
        feat = n if readout_input == "state" else 1 + input_size + n
        self.readout = nn.Linear(feat, output_size)
        nn.init.zeros_(self.readout.weight)
        nn.init.zeros_(self.readout.bias)
        for p in self.parameters():
            p.requires_grad_(False)

    @property
    def many_to_many(self) -> bool:
        return self.config["many_to_many"]

    @property
    def output_activation(self) -> str:
        return self.config["output_activation"]

    @property
    def labels(self) -> list[str] | None:
        return self.config["labels"]

    def _check(self, u: torch.Tensor) -> torch.Tensor:
        if u.dim() != 3 or u.shape[-1] != self.config["input_size"]:
            raise InputError(
                f"inputs must be (batch, time, {self.config['input_size']}), got {tuple(u.shape)}"
            )
        return u.to(torch.float32)

    def states(self, u: torch.Tensor) -> torch.Tensor:
        """Reservoir states ``(batch, time, reservoir_size)`` for inputs ``(batch, time, input_size)``."""
        u = self._check(u)
        a = self.config["leak_rate"]
        x = u.new_zeros(u.shape[0], self.config["reservoir_size"])
        drive = u @ self.W_in.T + self.b
        out = []
        for t in range(u.shape[1]):
            x = (1 - a) * x + a * torch.tanh(drive[:, t] + x @ self.W.T)
            out.append(x)
        return torch.stack(out, dim=1)

    def features(self, u: torch.Tensor) -> torch.Tensor:
        """Readout inputs ``(batch, time, F)``: states, or ``[1; u; x]`` (``readout_input="extended"``)."""
        u = self._check(u)
        x = self.states(u)
        if self.config["readout_input"] == "extended":
            x = torch.cat([torch.ones_like(u[..., :1]), u, x], dim=-1)
        return x

    def logits(self, u: torch.Tensor) -> torch.Tensor:
        """Readout output before ``output_activation``; same shapes as :meth:`forward`."""
        z = self.features(u)
        if not self.many_to_many:
            z = z[:, -1]
        return self.readout(z)

    def forward(self, u: torch.Tensor) -> torch.Tensor:
        """``(batch, time, input_size)`` -> ``(batch, time, output_size)`` (or ``(batch, output_size)``)."""
        return _activate(self.logits(u), self.output_activation)

    @torch.no_grad()
    def fit(self, X: Any, Y: Any, washout: int = 0) -> ESN:
        """Fit the readout by ridge regression, in closed form (float64 normal equations).

        ``X``: ``(batch, time, input_size)`` or ``(time, input_size)``. ``Y``: targets of the readout's
        pre-activation output, ``(batch, time, output_size)`` / ``(time, output_size)`` for a many-to-many
        ESN, ``(batch, output_size)`` for a many-to-one one. ``washout`` leading steps are left out.
        Solves ``min ||Z W_out^T + b_out - Y||² + ridge ||W_out||²`` (the bias is not penalized).
        """
        X = torch.as_tensor(np.asarray(X, dtype=np.float32))
        Y = torch.as_tensor(np.asarray(Y, dtype=np.float64))
        if X.dim() == 2:
            X, Y = X.unsqueeze(0), Y.unsqueeze(0)
        z = self.features(X).double()
        o = self.config["output_size"]
        if self.many_to_many:
            if Y.shape != (*X.shape[:2], o):
                raise InputError(f"targets must have shape {(*X.shape[:2], o)}, got {tuple(Y.shape)}")
            if not 0 <= washout < X.shape[1]:
                raise InputError(f"washout {washout} must be in [0, {X.shape[1]})")
            z = z[:, washout:].reshape(-1, z.shape[-1])
            Y = Y[:, washout:].reshape(-1, o)
        else:
            if Y.shape != (X.shape[0], o):
                raise InputError(f"targets must have shape {(X.shape[0], o)}, got {tuple(Y.shape)}")
            z = z[:, -1]
        if not torch.all(torch.isfinite(Y)):
            raise InputError("targets contain NaN or Inf")
        zb = torch.cat([z, torch.ones_like(z[:, :1])], dim=1)
        reg = torch.eye(zb.shape[1], dtype=torch.float64) * self.config["ridge"]
        reg[-1, -1] = 0.0
        sol = torch.linalg.lstsq(zb.T @ zb + reg, zb.T @ Y).solution
        self.readout.weight.copy_(sol[:-1].T.float())
        self.readout.bias.copy_(sol[-1].float())
        return self


from .convfront import deepconvlstm  # noqa: E402, F401  (a SequenceModel with a causal conv front-end)

# ----------------------------------------------------------------------------------------- save/load

_CLASSES = {"SequenceModel": SequenceModel, "ESN": ESN}


def save(model: nn.Module, path: str | os.PathLike) -> None:
    """Save an edgernn model as one safetensors file: weights as tensors, constructor args as JSON."""
    from safetensors.torch import save_file

    name = type(model).__name__
    if name not in _CLASSES or not isinstance(model, _CLASSES[name]):
        raise TypeError(f"save() takes a SequenceModel or ESN, got {type(model).__name__}")
    state = {k: v.detach().cpu().contiguous().clone() for k, v in model.state_dict().items()}
    meta = {CHECKPOINT_KEY: json.dumps({"class": name, "config": model.config, "version": 1})}
    save_file(state, os.fspath(path), metadata=meta)


def load(path: str | os.PathLike) -> nn.Module:
    """Load a checkpoint written by :func:`save`. Reads JSON and raw tensors only: no code runs.

    Raises ``ValueError`` when the file is not an edgernn checkpoint or its tensors do not match.
    """
    from safetensors import safe_open

    path = os.fspath(path)
    try:
        with safe_open(path, framework="pt") as f:
            meta = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}
    except FileNotFoundError:
        raise
    except Exception as e:  # safetensors raises its own error types for corrupt files
        raise ValueError(f"{path}: not a safetensors checkpoint ({e})") from None
    if CHECKPOINT_KEY not in meta:
        raise ValueError(f"{path}: not an edgernn checkpoint (no '{CHECKPOINT_KEY}' metadata)")
    try:
        info = json.loads(meta[CHECKPOINT_KEY])
        cls = _CLASSES[info["class"]]
        config = dict(info["config"])
    except (ValueError, KeyError, TypeError) as e:
        raise ValueError(f"{path}: bad checkpoint metadata ({e!r})") from None
    # sizes are checked before anything is built: a hostile config must not make us allocate terabytes
    for key, value in config.items():
        if key == "conv_channels" and isinstance(value, list) and len(value) > 64:
            raise ValueError(f"{path}: bad checkpoint configuration ({len(value)} convolution layers)")
        for v in value if key == "conv_channels" and isinstance(value, list) else ():
            if isinstance(v, int) and v > 1 << 16:
                raise ValueError(f"{path}: bad checkpoint configuration (conv_channels {v} exceeds 65536)")
        if isinstance(value, bool) or not isinstance(value, int) or key == "seed":
            continue
        limit = 1024 if key == "num_layers" else 1 << 24
        if value > limit:
            raise ValueError(f"{path}: bad checkpoint configuration ({key}={value} exceeds {limit})")
    if cls is SequenceModel and "input_mean" in tensors:
        config["input_mean"] = tensors["input_mean"].numpy()
        config["input_std"] = tensors["input_std"].numpy()
    try:
        model = cls(**config)
    except (TypeError, ValueError) as e:
        raise ValueError(f"{path}: bad checkpoint configuration ({e})") from None
    try:
        missing, unexpected = model.load_state_dict(tensors, strict=False)
    except RuntimeError as e:  # shape mismatch
        raise ValueError(f"{path}: checkpoint tensors do not match the model: {e}") from None
    if missing or unexpected:
        raise ValueError(
            f"{path}: checkpoint tensors do not match the model (missing {missing}, extra {unexpected})"
        )
    model.eval()
    return model
