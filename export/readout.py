"""The readout a user module's head takes from a reverse direction, read from its traced ONNX graph.

A module's call order (what :func:`.from_torch.describe` maps) cannot show whether the head reads the
recurrent layer's last output step or its final states (``_, (h, c) = lstm(x)``); the plan compiled from
the module's own ONNX trace can. :func:`with_compiled_readout` brings that plan's ``final`` ops into the
plan mapped from torch, so the parity check's two artifacts compute the same function.
"""

from __future__ import annotations

from .from_torch import Description


def with_compiled_readout(desc: Description, compiled: dict) -> Description:
    """``desc`` with the ``final`` readouts (ONNX ``Y_h`` of a reverse/bidirectional layer) that the plan
    ``compiled`` from the module's own ONNX trace holds, inserted after the same recurrent layers.

    The module's call order cannot show whether its head reads the recurrent layer's last output step or
    its final states (``_, (h, c) = lstm(x)``); the traced graph does. The k-th recurrent layer of
    ``compiled`` is the k-th of ``desc.plan`` (one per torch layer on both sides); when its direction or
    hidden size differs, ``desc`` is returned unchanged (the parity check then reports the mismatch).
    """
    import torch

    from ..artifact import graph_layers, validate_plan

    layers, inputs = graph_layers(compiled)
    rec = [i for i, ly in enumerate(layers) if ly["kind"] in ("rnn", "lstm", "gru")]
    after = {}  # ordinal of the recurrent layer -> its final op
    for ly, ins in zip(layers, inputs, strict=True):
        if ly["kind"] == "final" and ins[0] - 1 in rec:
            after[rec.index(ins[0] - 1)] = ly
    if not after or not desc.many_to_one:
        return desc
    plan = desc.plan
    mine = [i for i, ly in enumerate(plan["layers"]) if ly["kind"] in ("rnn", "lstm", "gru")]
    names = {ly["name"] for ly in plan["layers"]}
    new_layers, stages, sources = [], [], []
    for i, (ly, st, src) in enumerate(zip(plan["layers"], desc.stages, desc.sources, strict=True)):
        new_layers.append(ly)
        stages.append(st)
        sources.append(src)
        k = mine.index(i) if i in mine else None
        if k is None or k not in after:
            continue
        fin = after[k]
        if (ly["direction"], ly["hidden_size"]) != (fin["direction"], fin["hidden_size"]):
            return desc
        name = next(f"final{j}" for j in range(len(names) + 1) if f"final{j}" not in names)
        names.add(name)
        n = ly["output_size"]
        r0 = fin["hidden_size"] if fin["direction"] == "bidirectional" else 0
        new_layers.append(
            {"kind": "final", "name": name, "input_size": n, "output_size": n, "tensors": {}}
            | {"hidden_size": fin["hidden_size"], "direction": fin["direction"]}
        )

        def stage(y, r0=r0):  # forward units as they are, reverse units from step 0
            return torch.cat([y[..., :r0], y[:, :1, r0:].expand(-1, y.shape[1], -1)], -1)

        stages.append(stage)
        sources.append(None)
    plan = validate_plan(dict(plan, layers=new_layers))
    return Description(
        plan=plan,
        tensors=desc.tensors,
        stages=stages,
        sources=sources,
        time_first=desc.time_first,
        tokens=desc.tokens,
        many_to_one=desc.many_to_one,
        bidirectional=desc.bidirectional,
    )
