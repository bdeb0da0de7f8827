"""``edgernn.AttentionPool``: the node :mod:`..passes.attention` puts in place of an additive attention
pooling subgraph; it becomes an ``attention`` layer (softmax over time of ``tanh(h W^T + b) . v``, then
the weighted sum of ``h``), which makes the model many_to_one."""

from __future__ import annotations

from ..errors import CompileError, where
from ..values import Data, Sym, whole_features
from .registry import register


@register("AttentionPool")
def attention_pool(cx, node, vals, at):
    f = cx.fused[node.name]
    v = vals[0]
    desc = f"additive attention pooling over nodes {f['nodes']}"
    if not isinstance(v, Data):
        raise CompileError(f"{desc}: input does not depend on the model input")
    plan = cx.plan
    plan.check_tip(v, where(node))
    r = len(v.axes)
    n = whole_features(v, node)
    sa = f["softmax_axis"] + (r - 1) if f["softmax_axis"] < 0 else f["softmax_axis"]  # scores: rank r-1
    ua = [a + r if a < 0 else a for a in f["unsqueeze_axes"]]
    ra = [a + r if a < 0 else a for a in f["reduce_axes"]]
    t_ax = v.axes[sa] if 0 <= sa < r - 1 else None
    if not isinstance(t_ax, Sym) or t_ax.role == "B" or ua != [r - 1] or ra != [sa]:
        raise CompileError(f"{desc}: softmax/sum are not over the time axis of {v.axes}")
    if v.last or v.step:
        raise CompileError(f"{desc}: needs the time axis")
    t_ax.role = "T"
    if f["W"].shape[1] != n:
        raise CompileError(f"{desc}: W {f['W'].shape} does not match {n} features")
    w = plan.fold_cols(v, f["W"], where(node))
    tip = plan.tip_size()
    plan.add_layer(
        {
            "kind": "attention",
            "name": plan.name("attention"),
            "input_size": tip,
            "output_size": tip,
            "attention_size": int(w.shape[0]),
        },
        {"W": w, "b": f["b"], "v": f["v"]},
    )
    axes = list(v.axes)
    if f["keepdims"]:
        axes[sa] = 1
    else:
        del axes[sa]
    return Data(axes, v.perm, v.bad, len(plan.layers), True, False, why=v.why)
