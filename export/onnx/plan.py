"""The layer chain being built: layer naming, tensor storage, and the emitters op handlers call
(``dense``, ``affine``, ``activation``, and the selection layer of :meth:`PlanBuilder.materialize`).

A :class:`~.values.Data` value's features are an index map (``perm``) into the output vector of the chain
built so far; the emitters fold that map into the new layer's matrix, and apply the fusion rules of
:mod:`.passes.fuse` (an affine op folded into a neighbouring dense/recurrent layer, an activation into the
dense layer before it).
"""

from __future__ import annotations

import numpy as np

from .errors import CompileError
from .passes import fuse
from .values import Data, is_identity

__all__ = ["PlanBuilder"]


class PlanBuilder:
    """The plan's layers (dicts as in docs/ARTIFACT.md) and their float32 tensors, built in order.

    ``in_size`` is the size of the plan's input vector; ``exact_int8`` maps a tensor name to the (int8 q,
    float32 per-row scale) pair the source model already stored it as.
    """

    def __init__(self) -> None:
        self.layers: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.exact_int8: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.in_size = 0
        #: per layer, the values it reads as positions (0: the plan input, j + 1: layer j's output)
        self.inputs: list[list[int]] = []
        #: recurrent output position -> position of the ``final`` op reading it (its Y_h)
        self.finals: dict[int, int] = {}
        #: whether the node being compiled is the only reader of its inputs (set per node by the
        #: compiler): the fusions of :mod:`.passes.fuse` rewrite the layer that made a value in place
        self.exclusive = True

    def value_size(self, pos: int) -> int:
        """The size of the value at position ``pos`` (0: the plan input, j + 1: layer j's output)."""
        return self.in_size if pos == 0 else self.layers[pos - 1]["output_size"]

    def is_chain(self) -> bool:
        """Whether every layer reads the previous layer's output (a format-1 chain)."""
        return all(ins == [i] for i, ins in enumerate(self.inputs))

    def name(self, kind: str) -> str:
        """The name the next layer of ``kind`` gets (kind + its position in the chain)."""
        return f"{kind}{len(self.layers)}"

    def add_layer(self, layer: dict, tensors: dict[str, np.ndarray], inputs: list[int] | None = None) -> None:
        """Append ``layer`` reading the values at positions ``inputs`` (default: the chain's tip); its
        tensors (role -> array) are stored as float32 under ``<layer>.<role>``."""
        self.inputs.append(list(inputs) if inputs is not None else [len(self.layers)])
        name = layer["name"]
        layer["tensors"] = {}
        for role, arr in tensors.items():
            tname = f"{name}.{role}"
            self.tensors[tname] = np.ascontiguousarray(arr, dtype=np.float32)
            layer["tensors"][role] = tname
        self.layers.append(layer)

    def tip_size(self) -> int:
        """The size of the chain's current output vector (the plan input's size before any layer)."""
        if self.layers:
            return self.layers[-1]["output_size"]
        return self.in_size

    def resolve_final(self, v: Data) -> None:
        """A recurrent node's ``Y_h`` whose reverse units ``v`` uses: make them a value, the output of a
        ``final`` op reading the node's output (one per node; its last step is [h_fwd(T−1); h_bwd(0)]),
        and update ``v`` in place to read it (same index map: the op keeps the node's unit order). A
        ``Y_h`` that uses forward units only keeps reading the node's output at the last step."""
        if v.fin is None or not v.bad.any():
            return
        src = v.fin
        if v.pos != src:  # pragma: no cover - plumbing keeps the position; copies resolve first
            raise CompileError("internal: a Y_h value moved before its final step was selected")
        pos = self.finals.get(src)
        if pos is None:
            rec = self.layers[src - 1]
            n = rec["output_size"]
            layer = {"kind": "final", "name": self.name("final"), "input_size": n, "output_size": n}
            layer.update(hidden_size=rec["hidden_size"], direction=rec["direction"])
            self.add_layer(layer, {}, inputs=[src])
            pos = self.finals[src] = len(self.layers)
        v.pos, v.bad, v.fin, v.why = pos, np.zeros(len(v.perm), bool), None, ""

    def check_tip(self, v: Data, where: str) -> None:
        """Make ``v`` a value at the end of the chain: a value computed earlier (the graph branches) is
        copied there by a ``gather`` layer, and ``v`` is updated in place to read that copy (the same
        numbers). A quantized value, token ids or a value the plan cannot produce cannot be copied."""
        self.resolve_final(v)
        if v.quant is not None:
            raise CompileError(f"{where}: unexpected use of a dynamically quantized value")
        if v.pos != len(self.layers):
            if v.tokens:
                raise CompileError(f"{where}: the graph branches on the token ids")
            pos = self.gather(v, where)
            v.perm, v.bad, v.pos = np.arange(len(v.perm)), np.zeros(len(v.perm), bool), pos

    def value_input(self, v: Data, where: str) -> int:
        """The position of a value holding exactly ``v``'s features in order: ``v``'s own value when its
        index map is the identity, else a ``gather`` layer's copy."""
        if v.quant is not None or v.tokens:
            raise CompileError(f"{where}: unexpected use of a dynamically quantized value or token ids")
        self.resolve_final(v)
        if is_identity(v.perm, self.value_size(v.pos)) and not v.bad.any():
            return v.pos
        return self.gather(v, where)

    def gather(self, v: Data, where: str) -> int:
        """Append a ``gather`` layer copying ``v``'s features (its index map) from its value; returns the
        copy's position."""
        if v.bad.any():
            raise CompileError(f"{where}: uses {v.why or 'a value the plan cannot produce'}")
        n = len(v.perm)
        layer = {
            "kind": "gather",
            "name": self.name("gather"),
            "input_size": self.value_size(v.pos),
            "output_size": n,
        }
        self.add_layer(layer, {"index": np.asarray(v.perm, np.float32)}, inputs=[v.pos])
        return len(self.layers)

    def concat(self, parts: list[Data], where: str) -> int:
        """A value holding the features of ``parts`` one after the other (a graph output that is a
        ``Concat`` of values of different ops: ``h_n`` of a 2-layer LSTM): each part ``gather``ed into its
        slot of a zero-padded vector (index −1 gives 0), the vectors summed by ``binary`` ``add`` ops
        (x + 0 = x exactly). Returns its position."""
        n = sum(len(p.perm) for p in parts)
        acc, at = None, 0
        for p in parts:
            if p.quant is not None or p.tokens:
                raise CompileError(f"{where}: unexpected use of a dynamically quantized value or token ids")
            self.resolve_final(p)
            if p.bad.any():
                raise CompileError(f"{where}: uses {p.why or 'a value the plan cannot produce'}")
            m = len(p.perm)
            index = np.full(n, -1.0, np.float32)
            index[at : at + m] = p.perm
            at += m
            layer = {"kind": "gather", "name": self.name("gather"), "input_size": self.value_size(p.pos)}
            self.add_layer(layer | {"output_size": n}, {"index": index}, inputs=[p.pos])
            if acc is not None:
                layer = {"kind": "binary", "name": self.name("binary"), "input_size": n, "output_size": n}
                self.add_layer(layer | {"op": "add"}, {}, inputs=[acc, len(self.layers)])
            acc = len(self.layers)
        return acc

    def fold_cols(self, v: Data, w: np.ndarray, where: str) -> np.ndarray:
        """Re-index the last axis of ``w`` (current feature order) onto the plan's output vector."""
        n = self.tip_size()
        if is_identity(v.perm, n) and not v.bad.any():
            return w
        if v.bad.any() and np.any(w[..., v.bad] != 0):
            raise CompileError(f"{where}: uses {v.why or 'a value the plan cannot produce'}")
        out = np.zeros(w.shape[:-1] + (n,), np.float64)
        for k, p in enumerate(v.perm):
            if not v.bad[k]:
                out[..., p] += w[..., k]
        return out

    def materialize(self, v: Data, where: str) -> Data:
        """Make ``v``'s features exactly the plan's output vector (adds a selection layer if needed)."""
        self.check_tip(v, where)
        n = self.tip_size()
        if is_identity(v.perm, n) and not v.bad.any():
            return v
        if v.bad.any():
            raise CompileError(f"{where}: uses {v.why or 'a value the plan cannot produce'}")
        m = len(v.perm)
        w = np.zeros((m, n), np.float32)
        w[np.arange(m), v.perm] = 1.0
        self.add_layer(
            {
                "kind": "dense",
                "name": self.name("dense"),
                "input_size": n,
                "output_size": m,
                "activation": "linear",
            },
            {"W": w},
        )
        return Data(v.axes, np.arange(m), np.zeros(m, bool), len(self.layers), v.last, v.step)

    def dense(
        self, where: str, v: Data, w: np.ndarray, b: np.ndarray | None, fold_affine: bool = True
    ) -> Data:
        """Append ``y = w @ x + b`` (w: [O, I] in the value's current feature order); a trailing affine
        layer is folded in unless ``fold_affine`` is False (weights that must stay as the source stored
        them)."""
        self.check_tip(v, where)
        if v.tokens:
            raise CompileError(f"{where}: MatMul on token ids")
        w = self.fold_cols(v, np.asarray(w, np.float64), where)
        o = w.shape[0]
        aff = fuse.pop_trailing_affine(self, v) if fold_affine else None
        if aff is not None:  # W (x*sc + sh) + b = (W diag(sc)) x + (W sh + b)
            sc, sh = aff
            b = (0.0 if b is None else np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (o,))) + w @ sh
            w = w * sc[None, :]
            v = Data(v.axes, v.perm, v.bad, len(self.layers), v.last, v.step)
        t = {"W": w.astype(np.float32)}
        if b is not None:
            t["b"] = np.broadcast_to(np.asarray(b, np.float32).reshape(-1), (o,)).copy()
        self.add_layer(
            {
                "kind": "dense",
                "name": self.name("dense"),
                "input_size": w.shape[1],
                "output_size": o,
                "activation": "linear",
            },
            t,
        )
        return Data(v.axes[:-1] + [o], np.arange(o), np.zeros(o, bool), len(self.layers), v.last, v.step)

    def affine(self, where: str, v: Data, scale: np.ndarray, shift: np.ndarray) -> Data:
        """Append ``x*scale + shift`` (vectors in the value's current feature order), folded into the layer
        before it when that is a linear dense or an affine layer."""
        self.check_tip(v, where)
        n = self.tip_size()
        if not (len(v.perm) == n and len(set(v.perm.tolist())) == n):
            v = self.materialize(v, where)
            n = self.tip_size()  # the selection layer's size: v's own features
        if v.bad.any():
            raise CompileError(f"{where}: uses {v.why}")
        sc = np.ones(n)
        sh = np.zeros(n)
        sc[v.perm] = scale
        sh[v.perm] = shift
        if not fuse.affine_into_tip(self, sc, sh):
            self.add_layer(
                {"kind": "affine", "name": self.name("affine"), "input_size": n, "output_size": n},
                {"scale": sc, "shift": sh},
            )
        return Data(v.axes, v.perm, v.bad, len(self.layers), v.last, v.step)

    def activation(self, where: str, v, act: str, alpha=None, beta=None) -> Data:
        """Apply activation ``act`` (a plan activation name) elementwise: the linear dense layer before it
        takes it as its own activation, else an ``activation`` layer is appended. ``softmax`` first
        materializes the feature order (it is over the whole vector)."""
        if not isinstance(v, Data):
            raise CompileError(f"{where}: activation of an unsupported value")
        self.check_tip(v, where)
        n = self.tip_size()
        params = {}
        if alpha is not None:
            params["alpha"] = float(alpha)
        if beta is not None:
            params["beta"] = float(beta)
        if act == "softmax":
            v = self.materialize(v, where)
        if not fuse.activation_into_tip(self, v, act, params):
            self.add_layer(
                {
                    "kind": "activation",
                    "name": self.name("activation"),
                    "input_size": n,
                    "output_size": n,
                    "activation": act,
                    **params,
                },
                {},
            )
        return Data(v.axes, v.perm, v.bad, len(self.layers), v.last, v.step, why=v.why)
