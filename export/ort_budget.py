"""The budget's per-layer choice applied to ONNX Runtime's dynamic quantization (``model.int8.onnx``).

ORT's ``quantize_dynamic`` takes ``nodes_to_exclude`` (node names). The graphs edgernn writes have
unnamed nodes, so :func:`name_nodes` names every node of a graph (subgraphs included) and
:func:`nodes_of_layers` finds the nodes that read a layer's matrices: an initializer equal to one of the
layer's float32 matrices (ONNX layout ``[D, rows, cols]``, one direction ``[rows, cols]``, or its
transpose, as the MatMul form stores it). The layers the budget kept at fp16 or fp32 are excluded;
``fp16`` becomes fp32 in the int8 ONNX file (ORT's dynamic quantization has no fp16 weights).

ORT's own limits (its ``IntegerOpsRegistry``): it quantizes ``MatMul``, ``LSTM``, ``Gather``, ``Conv``
and ``Attention`` nodes, and a ``Gemm`` with alpha = beta = 1 and transA = 0, which its preprocessing
turns into a ``MatMul`` named ``<name>_MatMul`` (excluded under both names); ``GRU``/``RNN`` nodes stay
float32, and edgernn writes the MatMul form of GRU/RNN/ESN cells for that reason.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping

import numpy as np

__all__ = ["ORT_QUANTIZED_OPS", "minify", "name_nodes", "nodes_of_layers", "ort_layer_notes", "quantize_onnx"]

#: node types ONNX Runtime's dynamic quantization turns into int8 (its IntegerOpsRegistry)
ORT_QUANTIZED_OPS = frozenset({"MatMul", "Gemm", "LSTM", "Gather", "Conv", "Attention"})


def _graphs(g) -> Iterator:
    yield g
    for node in g.node:
        for a in node.attribute:
            if a.type == a.GRAPH:
                yield from _graphs(a.g)
            for sg in a.graphs:
                yield from _graphs(sg)


def name_nodes(model) -> None:
    """Give every node of ``model`` (subgraphs included) a unique name ``n<k>``, in place."""
    k = 0
    for g in _graphs(model.graph):
        for node in g.node:
            node.name = f"n{k}"
            k += 1


def _layer_matrices(layer: Mapping, tensors: Mapping[str, np.ndarray]) -> list[np.ndarray]:
    """The float32 matrices of a layer as the ONNX graphs store them (whole, per direction)."""
    from ..artifact import PER_CHANNEL_SCALE, QUANTIZABLE

    mats = []
    roles = layer["tensors"]
    for role in QUANTIZABLE.get(layer["kind"], ()):
        if role not in roles or role == "W_data":
            continue
        w = np.asarray(tensors[roles[role]], np.float32)
        mats.append(w)
        if w.ndim == 3 and layer["kind"] not in PER_CHANNEL_SCALE:  # [D, rows, cols]: per direction too
            mats.extend(w[d] for d in range(w.shape[0]))
    if layer["kind"] == "esn" and "W_data" in roles:
        from .onnx_layers import esn_dense_w

        mats.append(np.asarray(esn_dense_w(layer, tensors), np.float32))
    return [m for m in mats if m.size > 1]


def _same(a: np.ndarray, w: np.ndarray) -> bool:
    if a.dtype != np.float32 or a.size != w.size:
        return False
    if a.shape == w.shape and np.array_equal(a, w):
        return True
    return a.ndim == 2 and w.ndim == 2 and a.shape == w.shape[::-1] and np.array_equal(a, w.T)


def nodes_of_layers(
    model, plan: Mapping, tensors: Mapping[str, np.ndarray]
) -> dict[str, list[tuple[str, str]]]:
    """layer name -> [(node name, op type)] of the named ``model``'s nodes reading that layer's matrices."""
    from onnx import numpy_helper

    inits = {}
    for g in _graphs(model.graph):
        for t in g.initializer:
            inits[t.name] = numpy_helper.to_array(t)
    found: dict[str, list[tuple[str, str]]] = {}
    from ..artifact import plan_layers

    for _, layer in plan_layers(plan):
        mats = _layer_matrices(layer, tensors)
        if not mats:
            continue
        hits = []
        for g in _graphs(model.graph):
            for node in g.node:
                if any(i in inits and any(_same(inits[i], m) for m in mats) for i in node.input):
                    hits.append((node.name, node.op_type))
        found[layer["name"]] = hits
    return found


def ort_layer_notes(
    choices: Mapping[str, str], nodes: Mapping[str, list[tuple[str, str]]]
) -> tuple[list[str], dict[str, str]]:
    """``(nodes_to_exclude, layer -> what the int8 ONNX file holds for it and why)``."""
    exclude: list[str] = []
    notes: dict[str, str] = {}
    for name, choice in choices.items():
        hits = nodes.get(name, [])
        ops = sorted({op for _, op in hits})
        if not hits:
            notes[name] = "fp32: no node of the ONNX graph reads this layer's weights as an initializer"
        elif choice != "int8":
            exclude.extend(n for n, _ in hits)
            exclude.extend(f"{n}_MatMul" for n, op in hits if op == "Gemm")  # ORT's Gemm -> MatMul rewrite
            notes[name] = (
                f"fp32 (kept {choice} by the budget; excluded from ORT's quantizer: {', '.join(ops)})"
            )
        elif all(op in ORT_QUANTIZED_OPS for op in ops):
            notes[name] = f"int8 ({', '.join(ops)})"
        else:
            left = [op for op in ops if op not in ORT_QUANTIZED_OPS]
            notes[name] = (
                f"partly fp32: ORT's dynamic quantizer does not quantize {', '.join(left)} "
                f"(it quantizes {', '.join(sorted(ORT_QUANTIZED_OPS))})"
            )
    return exclude, notes


def quantize_onnx(src: str, dst: str, exclude: list[str] | None = None, per_channel: bool = False) -> None:
    """ORT dynamic int8 quantization of ``src`` into ``dst`` (``EnableSubgraph``: Scan bodies too), leaving
    the nodes named in ``exclude`` float; the result is minified (:func:`minify`) and checked."""
    import logging
    import os
    import tempfile
    import warnings

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    logging.getLogger().setLevel(max(logging.getLogger().level, logging.ERROR))
    with tempfile.TemporaryDirectory() as d:
        if exclude:
            model = onnx.load(src)
            name_nodes(model)
            src = os.path.join(d, "named.onnx")
            onnx.save(model, src)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            quantize_dynamic(
                src,
                dst,
                weight_type=QuantType.QInt8,
                per_channel=per_channel,
                reduce_range=True,
                extra_options={"EnableSubgraph": True},
                nodes_to_exclude=list(exclude or []),
            )
    model = onnx.load(dst)
    minify(model)
    onnx.checker.check_model(model, full_check=True)
    onnx.save(model, dst)


def minify(model) -> None:
    """Rename every internal tensor of ``model`` (subgraphs included) to a short id, drop node names, doc
    strings and value_info shape hints, in place. The main graph's inputs/outputs keep their names."""
    keep = {v.name for v in model.graph.input} | {v.name for v in model.graph.output}
    names: dict[str, str] = {}

    def new(n: str) -> str:
        if not n or n in keep:
            return n
        if n not in names:
            names[n] = f"t{len(names)}"
        return names[n]

    def walk(g) -> None:
        g.doc_string = ""
        for t in g.initializer:
            t.name = new(t.name)
            t.doc_string = ""
        del g.value_info[:]  # optional shape hints; ONNX Runtime infers them again
        for coll in (g.input, g.output):
            for v in coll:
                v.name = new(v.name)
                v.doc_string = ""
        for node in g.node:
            node.name = ""
            node.doc_string = ""
            for i, n in enumerate(node.input):
                node.input[i] = new(n)
            for i, n in enumerate(node.output):
                node.output[i] = new(n)
            for a in node.attribute:
                if a.type == a.GRAPH:
                    walk(a.g)
                for sg in a.graphs:
                    walk(sg)

    model.doc_string = ""
    walk(model.graph)


def _ort_outputs(path: str, xs: list[np.ndarray], tokens: bool) -> list[np.ndarray]:
    """ONNX Runtime's outputs of the sequence graph at ``path`` on each (B, T, I) array of ``xs``."""
    from .parity import ort_sequence

    run = ort_sequence(path)
    out = []
    for x in xs:
        feed = np.asarray(x)[..., 0].astype(np.int64) if tokens else np.ascontiguousarray(x, np.float32)
        out.append(np.asarray(run(feed), np.float64))
    return out


def onnx_int8_within_budget(
    src: str,
    dst: str,
    plan: Mapping,
    tensors: Mapping[str, np.ndarray],
    budget_report: Mapping,
    xs: list[np.ndarray],
    labels: np.ndarray | None,
    per_channel: bool = False,
) -> dict:
    """ORT's int8 of the sequence graph ``src`` into ``dst``, held to the budget the ``.ernn`` met.

    The layers the budget kept fp16/fp32 are excluded from ORT's quantizer (:func:`ort_layer_notes`);
    then ``dst`` is run against ``src`` in ONNX Runtime on the budget's own data ``xs`` (and ``labels``),
    scored with the budget's limits (``budget_report["limits"]``). ORT also quantizes activations at run
    time, which the ``.ernn`` measurement does not see, so the file can miss where the ``.ernn`` met:
    then the int8 layer with the largest int8 sensitivity is excluded too, and again, until the file meets
    the budget (with every layer excluded it holds the float32 graph). Returns ``{"layers": layer ->
    what the file holds, "final": metrics, "met": bool, "widened": [layers excluded for ORT's sake],
    "exclude": node names}``.
    """
    import onnx

    from .budget import _MEASURE, _is_class_ids, _task

    model = onnx.load(src)
    name_nodes(model)
    nodes = nodes_of_layers(model, plan, tensors)
    choices = {ly["name"]: ly["choice"] for ly in budget_report["layers"]}
    limits = budget_report["limits"]
    order = sorted(  # int8 layers, most sensitive to int8 first
        (ly for ly in budget_report["layers"] if ly["choice"] == "int8"),
        key=lambda ly: -max(float(v.get("max_error", 0.0)) for v in ly["sensitivity"].values()),
    )
    tokens = plan["input"].get("kind") == "tokens"
    ref = _ort_outputs(src, xs, tokens)
    scale = max(float(np.max(np.abs(y))) if y.size else 0.0 for y in ref) or 1.0
    classifier = plan["output"]["size"] > 1 and labels is not None and _is_class_ids(plan, labels, xs[0])
    widened: list[str] = []
    while True:
        exclude, notes = ort_layer_notes(choices, nodes)
        quantize_onnx(src, dst, exclude, per_channel)
        ys = _ort_outputs(dst, xs, tokens)
        err = max(float(np.max(np.abs(y - r))) if y.size else 0.0 for y, r in zip(ys, ref, strict=True))
        m = {"max_error": err / scale if np.isfinite(err) else float("inf")}
        try:
            m.update(_task(ref[0], ys[0], labels, classifier))
        except ValueError:  # labels that do not fit the outputs' shape: the max error alone
            pass
        score = -np.inf
        for lim, key in _MEASURE.items():
            if lim in limits and key in m:
                v, limit = m[key], float(limits[lim])
                score = max(score, v / limit if limit > 0 else (0.0 if v <= 0 else np.inf))
        met = score <= 1.0
        if met or not order:
            break
        layer = order.pop(0)["name"]
        choices[layer] = "fp32"
        widened.append(layer)
    for layer in widened:
        notes[layer] = notes[layer].replace(
            "kept fp32 by the budget",
            "kept fp32: with ORT's run-time activation quantization it missed the budget",
        )
    return {
        "layers": notes,
        "final": {k: (round(v, 6) if np.isfinite(v) else str(v)) for k, v in m.items()},
        "met": bool(met),
        "widened": widened,
        "exclude": exclude,
    }
