"""PyTorch module -> ``.ernn`` plan + tensors (docs/ARTIFACT.md), mapped straight from the weights.

Handles :class:`edgernn.models.SequenceModel`, :class:`edgernn.models.ESN` and a user's own module built
from ``nn.Embedding``, ``nn.RNN``/``nn.LSTM``/``nn.GRU`` (batch-first or time-first, stacked,
bidirectional) and ``nn.Linear`` with ReLU/Tanh/Sigmoid/Softmax between them (as modules or functions;
the order of the calls is read with ``torch.fx`` when the module traces, else the registration order).

Weight layout conversion (torch -> ONNX operator layout, which the artifact uses):

* LSTM gates: torch ``i, f, g, o`` -> ONNX ``i, o, f, c``.
* GRU gates: torch ``r, z, n`` -> ONNX ``z, r, h`` with ``linear_before_reset = 1`` (torch applies the
  reset gate to ``W_hn h + b_hn``).
* Biases: ``B = [W_b; R_b]`` per direction (``b_ih`` then ``b_hh``).

Besides the plan, :func:`describe` returns one torch function per plan layer (``stages``) computing that
layer's output sequence ``(batch, time, out)`` from its input sequence, with the plan's semantics (an
attention layer's ``y_t`` pools over steps ``1..t``). The parity check uses them to name the first layer
where two backends diverge.

This module holds :func:`describe`, what it returns and the layer builders (recurrent, dense, activation,
attention) the model families share; the families are in :mod:`.from_torch_models` (the built-in
models), :mod:`.from_torch_user` (a user's module, walked in call order) and :mod:`.from_torch_conv`
(convolutional front-ends and normalization layers).
"""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from ..errors import EdgeRNNError

_LSTM_ORDER = (0, 3, 1, 2)  # torch i,f,g,o -> onnx i,o,f,c
_GRU_ORDER = (1, 0, 2)  # torch r,z,n -> onnx z,r,h


class UnsupportedModuleError(EdgeRNNError, ValueError):
    """The module contains something the exporter cannot map to an artifact layer."""


@dataclass
class Description:
    """What :func:`describe` found: the plan, its tensors, and torch stages per plan layer."""

    plan: dict
    tensors: dict[str, np.ndarray]
    stages: list[Callable] = field(default_factory=list)
    #: per plan layer: the (submodule, call index) of a user module whose output is that layer's output
    sources: list = field(default_factory=list)
    time_first: bool = False
    tokens: bool = False
    many_to_one: bool = False
    bidirectional: bool = False

    @property
    def streamable(self) -> bool:
        return not self.bidirectional


def _np(t) -> np.ndarray:
    return t.detach().cpu().numpy().astype(np.float32, copy=True)


def _reorder(w: np.ndarray, order: tuple[int, ...]) -> np.ndarray:
    blocks = np.split(w, len(order), axis=0)
    return np.concatenate([blocks[i] for i in order], axis=0)


def _recurrent_layers(mod, name_prefix: str, counter: dict) -> list[tuple[dict, dict, Callable]]:
    """Split a (possibly stacked) nn.RNN/LSTM/GRU into one plan layer per torch layer."""
    import torch
    from torch import nn

    if isinstance(mod, nn.LSTM):
        kind, order = "lstm", _LSTM_ORDER
        if getattr(mod, "proj_size", 0):
            raise UnsupportedModuleError("nn.LSTM with proj_size is not supported")
        acts = ["sigmoid", "tanh", "tanh"]
    elif isinstance(mod, nn.GRU):
        kind, order = "gru", _GRU_ORDER
        acts = ["sigmoid", "tanh"]
    else:
        kind, order = "rnn", (0,)
        acts = ["relu" if mod.nonlinearity == "relu" else "tanh"]
    dirs = 2 if mod.bidirectional else 1
    h = mod.hidden_size
    out = []
    for k in range(mod.num_layers):
        name = f"{kind}{counter.setdefault(kind, 0)}"
        counter[kind] += 1
        ws, rs, bs = [], [], []
        for d in range(dirs):
            sfx = f"_l{k}" + ("_reverse" if d else "")
            w = _reorder(_np(getattr(mod, "weight_ih" + sfx)), order)
            r = _reorder(_np(getattr(mod, "weight_hh" + sfx)), order)
            if mod.bias:
                wb = _reorder(_np(getattr(mod, "bias_ih" + sfx)), order)
                rb = _reorder(_np(getattr(mod, "bias_hh" + sfx)), order)
            else:
                wb = np.zeros(w.shape[0], np.float32)
                rb = np.zeros(w.shape[0], np.float32)
            ws.append(w)
            rs.append(r)
            bs.append(np.concatenate([wb, rb]))
        layer = {
            "kind": kind,
            "name": name,
            "input_size": int(ws[0].shape[1]),
            "output_size": dirs * h,
            "hidden_size": h,
            "direction": "bidirectional" if dirs == 2 else "forward",
            "activations": acts * dirs,
            "clip": None,
        }
        if kind == "gru":
            layer["linear_before_reset"] = 1
        tensors = {"W": np.stack(ws), "R": np.stack(rs), "B": np.stack(bs)}
        # torch stage: a single-layer module with the same weights, batch-first
        cls = type(mod)
        kw = dict(batch_first=True, bidirectional=mod.bidirectional, bias=mod.bias)
        if kind == "rnn":
            kw["nonlinearity"] = mod.nonlinearity
        single = cls(layer["input_size"], h, **kw)
        with torch.no_grad():
            for d in range(dirs):
                src, dst = f"_l{k}" + ("_reverse" if d else ""), "_l0" + ("_reverse" if d else "")
                for p in ("weight_ih", "weight_hh") + (("bias_ih", "bias_hh") if mod.bias else ()):
                    getattr(single, p + dst).copy_(getattr(mod, p + src))
        single.eval()
        out.append((layer, tensors, lambda x, m=single: m(x)[0]))
    return out


def _attention_stage(W, b, v):
    import torch

    def stage(hseq):
        s = torch.tanh(hseq @ W.T + b) @ v  # (B, T)
        outs = []
        for t in range(hseq.shape[1]):
            a = torch.softmax(s[:, : t + 1], dim=1)
            outs.append((a.unsqueeze(-1) * hseq[:, : t + 1]).sum(1))
        return torch.stack(outs, dim=1)

    return stage


def _act_fn(name: str):
    import torch

    return {
        "linear": lambda y: y,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softmax": lambda y: torch.softmax(y, dim=-1),
    }[name]


def _dense(name: str, linear, activation: str) -> tuple[dict, dict, Callable]:
    layer = {
        "kind": "dense",
        "name": name,
        "input_size": int(linear.in_features),
        "output_size": int(linear.out_features),
        "activation": activation,
    }
    tensors = {"W": _np(linear.weight)}
    if linear.bias is not None:
        tensors["b"] = _np(linear.bias)
    act = _act_fn(activation)
    return layer, tensors, lambda x, m=linear, f=act: f(m(x))


def _activation(name: str, size: int, activation: str) -> tuple[dict, dict, Callable]:
    layer = {
        "kind": "activation",
        "name": name,
        "input_size": size,
        "output_size": size,
        "activation": activation,
    }
    return layer, {}, _act_fn(activation)


def describe(module, example_output_ndim: int | None = None) -> Description:
    """Map ``module`` to an artifact plan. ``example_output_ndim`` (2 or 3) tells a user module's head kind.

    Raises :class:`UnsupportedModuleError` naming the part that cannot be mapped.
    """
    from ..models import ESN, SequenceModel
    from .from_torch_models import _esn, _sequence_model
    from .from_torch_user import _user_module

    if isinstance(module, SequenceModel):
        layers, info = _sequence_model(module)
        info["time_first"] = False
    elif isinstance(module, ESN):
        layers, info = _esn(module)
        info["time_first"] = False
    else:
        layers, info = _user_module(module)
        if example_output_ndim not in (2, 3):
            raise UnsupportedModuleError("a user module's output must be (batch, out) or (batch, time, out)")
        info["many_to_one"] = example_output_ndim == 2
    plan_layers, tensors, stages, sources = [], {}, [], []
    for layer, t, fn in layers:
        sources.append(layer.pop("_source", None))
        roles = {}
        for role, arr in t.items():
            tname = f"{layer['name']}.{role}"
            tensors[tname] = np.ascontiguousarray(arr)
            roles[role] = tname
        layer = dict(layer, tensors=roles)
        plan_layers.append(layer)
        stages.append(fn)
    first = plan_layers[0]
    if info["tokens"]:
        inp = {"kind": "tokens", "size": 1, "vocab_size": info["vocab_size"]}
    else:
        inp = {"kind": "features", "size": first["input_size"]}
    digest = hashlib.sha256()
    for k in sorted(tensors):
        digest.update(k.encode())
        digest.update(tensors[k].tobytes())
    from .. import __version__

    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {
            "name": "edgernn",
            "version": __version__,
            "source": f"torch:{type(module).__name__}",
            "source_sha256": digest.hexdigest(),
        },
        "input": inp,
        "output": {
            "size": plan_layers[-1]["output_size"],
            "sequence": "many_to_one" if info["many_to_one"] else "many_to_many",
            "labels": info.get("labels"),
        },
        "quantization": "none",
        "layers": plan_layers,
    }
    from ..artifact import validate_plan, validate_tensors

    plan = validate_plan(plan)
    validate_tensors(plan, tensors)
    return Description(
        plan=plan,
        tensors=tensors,
        stages=stages,
        sources=sources,
        time_first=info["time_first"],
        tokens=info["tokens"],
        many_to_one=info["many_to_one"],
        bidirectional=info["bidirectional"],
    )
