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

The models are defined in :mod:`edgernn.sequence_model`, :mod:`edgernn.esn_model` and
:mod:`edgernn.convfront`; this module re-exports them (import them from here) and holds the checkpoints.
"""

from __future__ import annotations

import json
import os

from torch import nn

from .convfront import deepconvlstm  # a SequenceModel with a causal conv front-end
from .esn_model import ESN
from .sequence_model import CELLS, OUTPUT_ACTIVATIONS, AdditivePooling, SequenceModel

__all__ = [
    "CELLS",
    "CHECKPOINT_KEY",
    "ESN",
    "OUTPUT_ACTIVATIONS",
    "AdditivePooling",
    "SequenceModel",
    "deepconvlstm",
    "load",
    "save",
]

CHECKPOINT_KEY = "edgernn.checkpoint"

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
