"""A user's own ``nn.Module`` as ``.ernn`` plan layers, for :func:`.from_torch.describe`.

The submodules and activation functions are read in the order ``forward`` calls them (``torch.fx`` when
the module traces, else the registration order), then mapped one by one: ``nn.Embedding``,
``nn.RNN/LSTM/GRU``, ``nn.Linear`` (an activation right after it fused in), causal ``nn.Conv1d`` (an
``F.pad`` right before it), ``nn.BatchNorm1d`` (folded into the layer before when it can be),
``nn.LayerNorm``, ReLU/Tanh/Sigmoid/Softmax. Anything else raises :class:`.from_torch.UnsupportedModuleError`.
"""

from __future__ import annotations

from collections import Counter
from typing import Any

from .from_torch import UnsupportedModuleError, _activation, _dense, _np, _recurrent_layers


def _pad_entry(node) -> tuple:
    """An ``F.pad`` call as ``("pad", (left, right))`` on the last axis, or ``("pad", None)`` when it
    pads anything else or with something other than zeros (refused if a convolution follows)."""
    pads = node.args[1] if len(node.args) > 1 else node.kwargs.get("pad")
    mode = node.kwargs.get("mode", node.args[2] if len(node.args) > 2 else "constant")
    value = node.kwargs.get("value", node.args[3] if len(node.args) > 3 else None)
    ok = isinstance(pads, (tuple, list)) and all(isinstance(p, int) for p in pads)
    if not ok or mode != "constant" or value not in (None, 0, 0.0) or any(pads[2:]):
        return ("pad", None)
    return ("pad", (int(pads[0]), int(pads[1])) if len(pads) >= 2 else None)


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
            elif node.op == "call_function" and node.target is F.pad:
                order.append(_pad_entry(node))
        return order
    except Exception:  # control flow fx cannot trace: fall back to the registration order
        return [m for m in module.modules() if not list(m.children())]


def _user_module(module) -> tuple[list, dict]:
    from torch import nn

    from . import from_torch_conv as tc

    acts = {nn.ReLU: "relu", nn.Tanh: "tanh", nn.Sigmoid: "sigmoid", nn.Softmax: "softmax"}
    ignore = (nn.Dropout, nn.Identity, nn.Flatten)
    layers: list = []
    counter: dict = {}
    info: dict[str, Any] = {"tokens": False, "bidirectional": False, "labels": None}
    batch_first = set()
    size = None
    seen: Counter = Counter()
    pad = None
    for i, m in enumerate(_call_order(module)):
        if isinstance(m, tuple):  # ("pad", (left, right) | None): read by the convolution after it
            if pad is not None:
                raise UnsupportedModuleError("two F.pad calls in a row: pad once before each nn.Conv1d")
            pad = m
            continue
        if pad is not None and not isinstance(m, nn.Conv1d):
            raise UnsupportedModuleError(
                "F.pad is supported only right before an nn.Conv1d (zeros on the left of the time axis)"
            )
        src = None if isinstance(m, (str, tuple)) else (m, seen[id(m)])
        if src is not None:
            seen[id(m)] += 1
        if isinstance(m, str) or type(m) in acts:
            act = m if isinstance(m, str) else acts[type(m)]
            if isinstance(m, nn.Softmax) and m.dim not in (-1, None, 1, 2):
                raise UnsupportedModuleError(f"nn.Softmax(dim={m.dim}) is not over the feature axis")
            if size is None:
                raise UnsupportedModuleError(f"activation {act!r} before any layer")
            if layers and layers[-1][0]["kind"] == "tconv" and layers[-1][0]["activation"] == "linear":
                layers[-1] = tc.with_activation(layers[-1], act)
                layers[-1][0]["_source"] = src
            elif layers and layers[-1][0]["kind"] == "dense" and layers[-1][0]["activation"] == "linear":
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
        elif isinstance(m, nn.Conv1d):
            if pad is not None and pad[1] is None:
                raise UnsupportedModuleError(
                    f"the F.pad before {type(m).__name__} pads other axes or not with zeros: pad the "
                    "time axis (the last of (batch, channels, time)) on the left with zeros"
                )
            n = counter.setdefault("tconv", 0)
            counter["tconv"] += 1
            layers.append(tc.tconv_layer(f"tconv{n}", m, pad[1] if pad else None, f"nn.Conv1d #{n}"))
            pad = None
            layers[-1][0]["_source"] = src
            size = m.out_channels
        elif isinstance(m, nn.BatchNorm1d):
            if size is None:  # the first layer: normalizes the model's input channels
                size = int(m.num_features)
            last = layers[-1][0] if layers else {}
            if last.get("kind") in ("tconv", "dense") and last.get("activation") == "linear":
                layers[-1] = tc.fold_bn(layers[-1], m)
                layers[-1][0].pop("_module", None)
            else:
                n = counter.setdefault("affine", 0)
                counter["affine"] += 1
                layers.append(tc.affine_layer(f"affine{n}", size, m))
            layers[-1][0]["_source"] = src
        elif isinstance(m, nn.LayerNorm):
            if size is None:  # the first layer: normalizes the model's input features
                size = int(m.normalized_shape[-1])
            n = counter.setdefault("layernorm", 0)
            counter["layernorm"] += 1
            layers.append(tc.layernorm_layer(f"layernorm{n}", size, m))
            layers[-1][0]["_source"] = src
        elif isinstance(m, ignore):
            continue
        else:
            raise UnsupportedModuleError(
                f"{type(m).__name__} is not supported: build the model from nn.Embedding, causal nn.Conv1d, "
                "nn.BatchNorm1d, nn.LayerNorm, nn.RNN/LSTM/GRU, nn.Linear and ReLU/Tanh/Sigmoid/Softmax"
            )
    if pad is not None:
        raise UnsupportedModuleError("F.pad at the end of the model: pad only right before an nn.Conv1d")
    if not any(lay[0]["kind"] in ("rnn", "lstm", "gru") for lay in layers):
        raise UnsupportedModuleError("the module has no nn.RNN, nn.LSTM or nn.GRU")
    if len(batch_first) > 1:
        raise UnsupportedModuleError("mixing batch-first and time-first recurrent layers is not supported")
    for lay in layers:
        lay[0].pop("_module", None)
    info["time_first"] = batch_first == {False}
    return layers, info
