"""The built-in edgernn models (:class:`edgernn.models.SequenceModel`, :class:`edgernn.models.ESN`) as
``.ernn`` plan layers, for :func:`.from_torch.describe`.

Each family function returns ``(layers, info)``: the plan layers as ``(layer, tensors, torch stage)``
items built from :mod:`.from_torch`'s layer builders, and what the plan's input and output need to know
(tokens, many-to-one, labels, bidirectional).
"""

from __future__ import annotations

import numpy as np

from .from_torch import _attention_stage, _dense, _np, _recurrent_layers


def _sequence_model(m) -> tuple[list, dict]:
    import torch

    from . import from_torch_conv as tc

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
    if m.front is not None:
        for j, conv in enumerate(m.front.convs):
            item = tc.tconv_layer(f"tconv{j}", conv, m.front.pad(j), f"conv front-end layer {j}")
            if m.front.norms is not None:
                item = tc.fold_bn(item, m.front.norms[j])
            layers.append(tc.with_activation(item, "relu"))
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
