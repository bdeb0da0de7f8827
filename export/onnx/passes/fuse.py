"""Layer fusion, applied as each layer is emitted (peephole rules on the end of the chain):

* an ``affine`` layer (x*scale + shift) followed by a dense or recurrent layer is absorbed into that
  layer's input weights and bias (:func:`pop_trailing_affine`);
* an affine op after a linear ``dense`` layer scales its rows and shifts its bias; two affine ops compose
  (:func:`affine_into_tip`);
* an activation after a linear ``dense`` (or ``conv1d``) layer becomes that layer's activation
  (:func:`activation_into_tip`).

Each rewrites a layer already emitted, so each applies only when the node being compiled is the one reader
of that layer's output (``plan.exclusive``, from :func:`..graph.reader_counts`): ``a + relu(a)`` keeps
``a``.
"""

from __future__ import annotations

import numpy as np

__all__ = ["activation_into_tip", "affine_into_tip", "pop_trailing_affine"]


def pop_trailing_affine(plan, v) -> tuple[np.ndarray, np.ndarray] | None:
    """Remove a trailing affine layer (x*scale + shift) so the next matrix layer can absorb it; returns
    its (scale, shift) as float64, or None when the chain does not end in one that ``v`` comes from (or
    when another node reads the affine's output too)."""
    if not plan.exclusive or not plan.layers:
        return None
    if plan.layers[-1]["kind"] != "affine" or v.pos != len(plan.layers):
        return None
    layer = plan.layers.pop()
    plan.inputs.pop()
    sc = plan.tensors.pop(layer["tensors"]["scale"]).astype(np.float64)
    sh = plan.tensors.pop(layer["tensors"]["shift"]).astype(np.float64)
    return sc, sh


def affine_into_tip(plan, sc: np.ndarray, sh: np.ndarray) -> bool:
    """Fold ``x*sc + sh`` (over the chain's output vector) into the last layer when it is a linear dense
    or an affine layer; False when it cannot be folded (also when another node reads that layer's output:
    it would see the folded values)."""
    last = plan.layers[-1] if plan.layers and plan.exclusive else None
    if last is not None and last["kind"] == "dense" and last["activation"] == "linear":
        n = len(sc)
        w = plan.tensors[last["tensors"]["W"]].astype(np.float64)
        bname = last["tensors"].get("b")
        b = plan.tensors[bname].astype(np.float64) if bname else np.zeros(n)
        plan.tensors[last["tensors"]["W"]] = (w * sc[:, None]).astype(np.float32)
        nb = (b * sc + sh).astype(np.float32)
        if bname:
            plan.tensors[bname] = nb
        else:
            last["tensors"]["b"] = f"{last['name']}.b"
            plan.tensors[f"{last['name']}.b"] = nb
        return True
    if last is not None and last["kind"] == "conv1d" and last["activation"] == "linear":
        cout = last["out_channels"]
        lout = last["output_size"] // cout
        s2, h2 = sc.reshape(cout, lout), sh.reshape(cout, lout)
        if np.all(s2 == s2[:, :1]) and np.all(h2 == h2[:, :1]):  # per channel: scale rows, shift bias
            w = plan.tensors[last["tensors"]["W"]].astype(np.float64)
            bname = last["tensors"].get("b") or f"{last['name']}.b"
            b = plan.tensors[bname].astype(np.float64) if bname in plan.tensors else np.zeros(cout)
            plan.tensors[last["tensors"]["W"]] = (w * s2[:, :1, None]).astype(np.float32)
            plan.tensors[bname] = (b * s2[:, 0] + h2[:, 0]).astype(np.float32)
            last["tensors"]["b"] = bname
            return True
    if last is not None and last["kind"] == "affine":
        s0 = plan.tensors[last["tensors"]["scale"]].astype(np.float64)
        h0 = plan.tensors[last["tensors"]["shift"]].astype(np.float64)
        plan.tensors[last["tensors"]["scale"]] = (s0 * sc).astype(np.float32)
        plan.tensors[last["tensors"]["shift"]] = (h0 * sc + sh).astype(np.float32)
        return True
    return False


def activation_into_tip(plan, v, act: str, params: dict) -> bool:
    """Make ``act`` (with its alpha/beta ``params``) the activation of the last layer when it is a linear
    dense layer that ``v`` comes from and no other node reads; False otherwise."""
    last = plan.layers[-1] if plan.layers and plan.exclusive else None
    if last is None or last["kind"] not in ("dense", "conv1d", "tconv") or last["activation"] != "linear":
        return False
    if v.pos != len(plan.layers) or (last["kind"] != "dense" and act == "softmax"):
        return False
    last["activation"] = act
    last.update(params)
    return True
