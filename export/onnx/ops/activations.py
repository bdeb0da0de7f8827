"""Activations: ``Relu``, ``Tanh``, ``Sigmoid``, ``LeakyRelu``, ``Elu``, ``HardSigmoid``, ``Softsign``,
``Softplus``, ``ThresholdedRelu`` (elementwise) and ``Softmax`` (over the whole feature vector). Each
becomes the activation of the linear dense layer before it, or an ``activation`` layer."""

from __future__ import annotations

from ..errors import CompileError, where
from ..values import Data, Sym
from .registry import register

#: ONNX op -> (plan activation, default alpha or None when it takes none, default beta or None)
UNARY = {
    "Relu": ("relu", None, None),
    "Tanh": ("tanh", None, None),
    "Sigmoid": ("sigmoid", None, None),
    "LeakyRelu": ("leaky_relu", 0.01, None),
    "Elu": ("elu", 1.0, None),
    "HardSigmoid": ("hard_sigmoid", 0.2, 0.5),
    "Softsign": ("softsign", None, None),
    "Softplus": ("softplus", None, None),
    "ThresholdedRelu": ("thresholded_relu", 1.0, None),
}


@register(*UNARY)
def unary(cx, node, vals, at):
    act, da, db = UNARY[node.op_type]
    alpha = at.get("alpha", da) if da is not None else None
    beta = at.get("beta", db) if db is not None else None
    return cx.plan.activation(where(node), vals[0], act, alpha, beta)


@register("Softmax")
def softmax(cx, node, vals, at):
    v = vals[0]
    if not isinstance(v, Data):
        raise CompileError(f"{where(node)}: Softmax of an unsupported value")
    r = len(v.axes)
    ver = cx.opset.get("", 13)
    axis = at.get("axis", -1 if ver >= 13 else 1)
    axis = axis + r if axis < 0 else axis
    if ver >= 13:
        ok = not isinstance(v.axes[axis], Sym) and all(
            isinstance(d, Sym) or d == 1 for k, d in enumerate(v.axes) if k != axis
        )
    else:
        ok = all(not isinstance(d, Sym) for d in v.axes[axis:]) and all(
            isinstance(d, Sym) or d == 1 for d in v.axes[:axis]
        )
    if not ok:
        raise CompileError(
            f"{where(node)}: Softmax over axis {axis} of {v.axes} is not over the feature vector"
        )
    return cx.plan.activation(where(node), v, "softmax")
