"""Constant folding: ``Constant`` nodes, and any node whose inputs are all constant (run by
``onnx.reference``), so the dynamo exporter's Concat-built weights become plain tensors."""

from __future__ import annotations

import numpy as np

from .errors import CompileError, where
from .graph import attrs

__all__ = ["constant", "fold"]


def constant(node) -> np.ndarray:
    """The value of a ``Constant`` node."""
    from onnx import numpy_helper

    a = node.attribute[0]
    if a.name == "value":
        return numpy_helper.to_array(a.t)
    v = attrs(node)[a.name]
    if a.name in ("value_float", "value_int", "value_floats", "value_ints"):
        return np.array(v, np.float32 if a.name.startswith("value_float") else np.int64)
    raise CompileError(f"{where(node)}: unsupported Constant attribute {a.name!r}")


def fold(node, arrs: list, opset: dict[str, int]) -> list[np.ndarray]:
    """Evaluate ``node`` on the constant inputs ``arrs`` (None for an absent optional input) with
    ``onnx.reference`` under the model's ``opset`` (domain -> version); one array per node output."""
    from onnx import helper
    from onnx.reference import ReferenceEvaluator

    names = [f"i{k}" if a is not None else "" for k, a in enumerate(arrs)]
    outs = [f"o{k}" for k in range(len(node.output))]
    n2 = helper.make_node(node.op_type, names, outs, domain=node.domain)
    n2.attribute.extend(node.attribute)
    feeds = {nm: a for nm, a in zip(names, arrs, strict=False) if nm}
    try:
        graph = helper.make_graph(
            [n2],
            "fold",
            [
                helper.make_tensor_value_info(nm, helper.np_dtype_to_tensor_dtype(a.dtype), a.shape)
                for nm, a in feeds.items()
            ],
            [helper.make_tensor_value_info(o, 0, None) for o in outs],
        )
        m = helper.make_model(graph, opset_imports=[helper.make_opsetid(d, v) for d, v in opset.items()])
        res = ReferenceEvaluator(m).run(None, feeds)
    except Exception as e:  # noqa: BLE001
        raise CompileError(f"{where(node)}: cannot fold constant subgraph: {e}") from None
    return [np.asarray(r) for r in res]
