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
"""

from __future__ import annotations

import hashlib
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

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


# --------------------------------------------------------------------------------- model families


def _sequence_model(m) -> tuple[list, dict]:
    import torch

    cfg = m.config
    layers: list = []
    counter: dict = {}
    info = {"tokens": m.tokens, "many_to_one": not cfg["many_to_many"], "labels": cfg["labels"]}
    if m.tokens:
        info["vocab_size"] = cfg["vocab_size"]
        if cfg["token_input"] == "embedding":
            emb = m.embedding
            layer = {
                "kind": "embedding",
                "name": "embedding0",
                "input_size": 1,
                "output_size": emb.embedding_dim,
                "vocab_size": emb.num_embeddings,
            }
            layers.append((layer, {"table": _np(emb.weight)}, lambda ids, e=emb: e(ids.long())))
        else:
            v = cfg["vocab_size"]
            layer = {"kind": "onehot", "name": "onehot0", "input_size": 1, "output_size": v, "vocab_size": v}
            layers.append(
                (layer, {}, lambda ids, v=v: torch.nn.functional.one_hot(ids.long(), v).to(torch.float32))
            )
    elif m.normalized:
        mean, std = m.input_mean, m.input_std
        n = cfg["input_size"]
        layer = {"kind": "normalize", "name": "normalize0", "input_size": n, "output_size": n}
        layers.append((layer, {"mean": _np(mean), "std": _np(std)}, lambda x, a=mean, s=std: (x - a) / s))
    layers += _recurrent_layers(m.rnn, "", counter)
    if m.attention is not None:
        att = m.attention
        size = att.proj.in_features
        layer = {
            "kind": "attention",
            "name": "attention0",
            "input_size": size,
            "output_size": size,
            "attention_size": att.proj.out_features,
        }
        t = {"W": _np(att.proj.weight), "b": _np(att.proj.bias), "v": _np(att.v)}
        layers.append((layer, t, _attention_stage(att.proj.weight, att.proj.bias, att.v)))
    layers.append(_dense("dense0", m.head, cfg["output_activation"]))
    info["bidirectional"] = cfg["bidirectional"]
    return layers, info


def _esn(m) -> tuple[list, dict]:
    cfg = m.config
    n, i = cfg["reservoir_size"], cfg["input_size"]
    w = _np(m.W)
    nnz = int(np.count_nonzero(w))
    sparse = nnz <= 0.5 * n * n
    layer = {
        "kind": "esn",
        "name": "esn0",
        "input_size": i,
        "reservoir_size": n,
        "leak_rate": cfg["leak_rate"],
        "readout_input": cfg["readout_input"],
        "sparse": sparse,
    }
    t: dict[str, np.ndarray] = {"W_in": _np(m.W_in), "b": _np(m.b)}
    if sparse:
        rows, cols = np.nonzero(w)  # row-major order: CSR
        t["W_data"] = w[rows, cols].astype(np.float32)
        t["W_indices"] = cols.astype(np.int32)
        t["W_indptr"] = np.concatenate([[0], np.cumsum(np.bincount(rows, minlength=n))]).astype(np.int32)
        layer["nnz"] = nnz
    else:
        t["W"] = w
    layer["output_size"] = n if cfg["readout_input"] == "state" else 1 + i + n
    layers = [(layer, t, lambda u, m=m: m.features(u))]
    layers.append(_dense("dense0", m.readout, cfg["output_activation"]))
    return layers, {
        "tokens": False,
        "many_to_one": not cfg["many_to_many"],
        "labels": cfg["labels"],
        "bidirectional": False,
    }


def _call_order(module) -> list:
    """The submodules and activation functions in the order ``forward`` calls them."""
    import torch
    import torch.nn.functional as F
    from torch import nn

    funcs = {
        torch.relu: "relu",
        F.relu: "relu",
        torch.tanh: "tanh",
        F.tanh: "tanh",
        torch.sigmoid: "sigmoid",
        F.sigmoid: "sigmoid",
        torch.softmax: "softmax",
        F.softmax: "softmax",
    }
    methods = {"relu": "relu", "tanh": "tanh", "sigmoid": "sigmoid", "softmax": "softmax"}
    try:
        import torch.fx

        class _Tracer(torch.fx.Tracer):
            def is_leaf_module(self, m, qualname):
                return isinstance(m, (nn.RNNBase, nn.Linear, nn.Embedding)) or super().is_leaf_module(
                    m, qualname
                )

        graph = _Tracer().trace(module)
        order: list = []
        for node in graph.nodes:
            if node.op == "call_module":
                order.append(module.get_submodule(node.target))
            elif node.op == "call_function" and node.target in funcs:
                order.append(funcs[node.target])
            elif node.op == "call_method" and node.target in methods:
                order.append(methods[node.target])
        return order
    except Exception:  # control flow fx cannot trace: fall back to the registration order
        return [m for m in module.modules() if not list(m.children())]


def _user_module(module) -> tuple[list, dict]:
    from torch import nn

    acts = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Softmax: "softmax"}
    ignore = (nn.Dropout, nn.Identity, nn.Flatten)
    layers: list = []
    counter: dict = {}
    info: dict[str, Any] = {"tokens": False, "bidirectional": False, "labels": None}
    batch_first = set()
    size = None
    seen: Counter = Counter()
    for i, m in enumerate(_call_order(module)):
        src = None if isinstance(m, str) else (m, seen[id(m)])
        if src is not None:
            seen[id(m)] += 1
        if isinstance(m, str) or type(m) in acts:
            act = m if isinstance(m, str) else acts[type(m)]
            if isinstance(m, nn.Softmax) and m.dim not in (-1, None, 1, 2):
                raise UnsupportedModuleError(f"nn.Softmax(dim={m.dim}) is not over the feature axis")
            if size is None:
                raise UnsupportedModuleError(f"activation {act!r} before any layer")
            if layers and layers[-1][0]["kind"] == "dense" and layers[-1][0]["activation"] == "linear":
                lay, t, _ = layers.pop()
                linear = lay.pop("_module")
                layers.append(_dense(lay["name"], linear, act))
                layers[-1][0]["_module"] = linear
                layers[-1][0]["_source"] = src
            else:
                layers.append(_activation(f"activation{i}", size, act))
                layers[-1][0]["_source"] = src
        elif isinstance(m, nn.Embedding):
            if layers:
                raise UnsupportedModuleError("nn.Embedding must be the first layer")
            info["tokens"] = True
            info["vocab_size"] = m.num_embeddings
            layer = {
                "kind": "embedding",
                "name": "embedding0",
                "input_size": 1,
                "output_size": m.embedding_dim,
                "vocab_size": m.num_embeddings,
            }
            layers.append((layer, {"table": _np(m.weight)}, lambda ids, e=m: e(ids.long())))
            layers[-1][0]["_source"] = src
            size = m.embedding_dim
        elif isinstance(m, (nn.RNN, nn.LSTM, nn.GRU)):
            batch_first.add(bool(m.batch_first))
            info["bidirectional"] = info["bidirectional"] or m.bidirectional
            for item in _recurrent_layers(m, "", counter):
                layers.append(item)
            layers[-1][0]["_source"] = src
            size = layers[-1][0]["output_size"]
        elif isinstance(m, nn.Linear):
            n = counter.setdefault("dense", 0)
            counter["dense"] += 1
            layer, t, fn = _dense(f"dense{n}", m, "linear")
            layer["_module"] = m
            layer["_source"] = src
            layers.append((layer, t, fn))
            size = m.out_features
        elif isinstance(m, ignore):
            continue
        else:
            raise UnsupportedModuleError(
                f"{type(m).__name__} is not supported: build the model from nn.Embedding, nn.RNN/LSTM/GRU, "
                "nn.Linear and ReLU/Tanh/Sigmoid/Softmax"
            )
    if not any(lay[0]["kind"] in ("rnn", "lstm", "gru") for lay in layers):
        raise UnsupportedModuleError("the module has no nn.RNN, nn.LSTM or nn.GRU")
    if len(batch_first) > 1:
        raise UnsupportedModuleError("mixing batch-first and time-first recurrent layers is not supported")
    for lay in layers:
        lay[0].pop("_module", None)
    info["time_first"] = batch_first == {False}
    return layers, info


def describe(module, example_output_ndim: int | None = None) -> Description:
    """Map ``module`` to an artifact plan. ``example_output_ndim`` (2 or 3) tells a user module's head kind.

    Raises :class:`UnsupportedModuleError` naming the part that cannot be mapped.
    """
    from ..models import ESN, SequenceModel

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
