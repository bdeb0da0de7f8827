"""The ONNX → ``.ernn`` compiler.

:func:`compile_onnx` reads an ONNX graph, evaluates it *symbolically* and maps it onto the layer chain
of an ``.ernn`` plan (docs/ARTIFACT.md). Every value of the graph becomes one of:

* a constant (initializers, ``Constant`` nodes, and every subgraph that depends only on them: these are
  folded, so the Concat-built weights of the dynamo exporter become plain tensors);
* a *shape* value (the output of ``Shape`` and of arithmetic on it), whose entries are integers or the
  symbolic batch/time axes of the input;
* a *broadcast constant* (``ConstantOfShape``/``Expand`` of a constant over a symbolic shape, e.g. the
  zero initial state the exporters build from the batch size);
* a *state* value (a graph input that feeds only ``initial_h``/``initial_c``: the step graph's state,
  kept by the stream at run time, starting at zero);
* the *data* value: the activations flowing from the model's input. It knows which of its axes are the
  symbolic time (T) and batch (B) axes, and which are feature axes; the feature vector is the row-major
  flattening of the feature axes, an index map ``perm`` into the output vector of the plan built so far.

Supported operators (anything else is a :class:`CompileError` naming the op and the node):

* recurrent: ``LSTM``, ``GRU``, ``RNN`` with every attribute of the ONNX spec (``direction``, ``layout``,
  ``activations`` + ``activation_alpha``/``activation_beta`` consumed as ONNX Runtime consumes them, i.e.
  only by the activations that take a parameter, ``clip``, ``linear_before_reset``, ``input_forget``,
  ``hidden_size``), inputs ``B``, ``P`` (peepholes), ``initial_h``/``initial_c`` (a constant equal for every
  batch row → the plan's ``initial_h``/``initial_c``; zeros built from the input's shape → omitted; a graph
  input → the stream's state) and ``sequence_lens`` (accepted when absent, or when every entry equals the
  sequence length: a constant equal to the input's static time size, or a value computed from the input's
  own shape; anything else is an error because the plan always runs whole sequences);
  ``com.microsoft.DynamicQuantizeLSTM`` (ORT's quantized LSTM; its int8/uint8 weights are dequantized with
  their scales and zero points, and kept exactly as int8 when they are symmetric int8);
* dense: ``Gemm``, ``MatMul`` (constant right operand), ``Add``/``Sub``/``Mul``/``Div`` with constants
  (folded into the preceding dense layer or an ``affine`` layer), ORT's ``DynamicQuantizeLinear`` +
  ``MatMulInteger`` + ``Cast`` + ``Mul`` pattern and ``com.microsoft.DynamicQuantizeMatMul``;
* activations: ``Relu``, ``Tanh``, ``Sigmoid``, ``Softmax`` (over the whole feature vector), ``LeakyRelu``,
  ``Elu``, ``HardSigmoid``, ``Softsign``, ``Softplus``, ``ThresholdedRelu``;
* embedding: ``Gather`` of a constant table by the (integer) model input, or ``OneHot`` of it;
* attention: additive attention pooling over time as torch exports it
  (``ReduceSum(Unsqueeze(Softmax_t(MatMul(Tanh(MatMul(h, Wt) + b), v))) * h, t)``) → an ``attention`` layer;
* plumbing: ``Identity``, ``Dropout``, ``Cast``, ``Squeeze``, ``Unsqueeze``, ``Reshape``, ``Flatten``,
  ``Transpose``, ``Slice``, ``Gather``, ``Concat``, ``Shape``, ``ConstantOfShape``, ``Expand``, and any op
  whose inputs are all constant (evaluated with ``onnx.reference``).

Selecting the last time step (``Gather``/``Slice`` with index -1 on the time axis) makes the model
``many_to_one``; a graph whose output keeps the time axis is ``many_to_many``. ``Y_h`` of a forward
recurrent node is its last step; ``Y_h`` of a reverse direction and ``Y_c`` are final states the plan has no
output for, so using them is an error unless the reverse part is sliced away.

External data is read only from files inside the model's own folder (no absolute paths, no ``..``, no
symlink leaving the folder).
"""

from __future__ import annotations

import hashlib
import os
from typing import Any

import numpy as np

from ..artifact import ACTIVATION_DEFAULTS
from .onnx.errors import CompileError
from .onnx.errors import where as _where
from .onnx.fold import constant as _fold_constant
from .onnx.fold import fold as _fold_node
from .onnx.graph import attrs as _attrs
from .onnx.load import load_model as _load_model
from .onnx.values import INT_BIG, Bcast, Const, Data, Multi, QScale, QZero, ShapeVal, State, Sym
from .onnx.values import is_identity as _is_identity

__all__ = ["CompileError", "compile_onnx", "compile_graph"]

# --------------------------------------------------------------------------------------------- helpers

_ACT_NAMES = {
    "relu": "relu",
    "tanh": "tanh",
    "sigmoid": "sigmoid",
    "affine": "affine",
    "leakyrelu": "leaky_relu",
    "thresholdedrelu": "thresholded_relu",
    "scaledtanh": "scaled_tanh",
    "hardsigmoid": "hard_sigmoid",
    "elu": "elu",
    "softsign": "softsign",
    "softplus": "softplus",
}
#: (needs alpha, needs beta) — ONNX Runtime consumes activation_alpha/beta only for these.
_ACT_PARAMS = {
    "affine": (True, True),
    "leaky_relu": (True, False),
    "thresholded_relu": (True, False),
    "scaled_tanh": (True, True),
    "hard_sigmoid": (True, True),
    "elu": (True, False),
}
_CELL_DEFAULT_ACTS = {"RNN": ["tanh"], "LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
_GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
_UNARY_ACTS = {
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
_PLUMBING = {
    "Identity",
    "Dropout",
    "Cast",
    "Squeeze",
    "Unsqueeze",
    "Reshape",
    "Flatten",
    "Transpose",
    "Slice",
    "Gather",
    "Concat",
    "Split",
    "Shape",
    "ConstantOfShape",
    "Expand",
    "Constant",
}


# ------------------------------------------------------------------------------------------ compiler


def _state_code(layer: int, which: str, unit: np.ndarray) -> np.ndarray:
    """An integer naming (layer, h|c, unit) for the state wiring check."""
    return (layer * 2 + (which == "c")) * (1 << 24) + unit


class _Compiler:
    def __init__(self, model, output: str | None):
        self.model = model
        self.g = model.graph
        self.opset = {o.domain or "": o.version for o in model.opset_import}
        self.layers: list[dict] = []
        self.tensors: dict[str, np.ndarray] = {}
        self.exact_int8: dict[str, tuple[np.ndarray, np.ndarray]] = {}
        self.env: dict[str, Any] = {}
        self.input_name: str | None = None
        self.input_syms: list = []
        self.state_inputs: list[str] = []
        self.notes: list[str] = []
        self.fused: dict[str, dict] = {}  # fused attention pooling nodes
        self.state_feeds: list[tuple] = []  # (state input, layer index, "h"|"c", [D, H] positions or None)
        self.state_codes: dict[str, Bcast] = {}  # Y_h / Y_c output name -> codes of (layer, h|c, unit)
        outs = [o.name for o in self.g.output]
        if output is None:
            if not outs:
                raise CompileError("the graph has no outputs")
            output = outs[0]
        self.output = output
        self.ignored_outputs = [o for o in outs if o != output]

    # ------------------------------------------------------------------ layers
    def _name(self, kind: str) -> str:
        return f"{kind}{len(self.layers)}"

    def _add_layer(self, layer: dict, tensors: dict[str, np.ndarray]) -> None:
        name = layer["name"]
        layer["tensors"] = {}
        for role, arr in tensors.items():
            tname = f"{name}.{role}"
            self.tensors[tname] = np.ascontiguousarray(arr, dtype=np.float32)
            layer["tensors"][role] = tname
        self.layers.append(layer)

    def _tip_size(self) -> int:
        if self.layers:
            return self.layers[-1]["output_size"]
        return self.in_size

    def _fresh(self, v: Data, axes: list, n: int, **kw) -> Data:
        return Data(
            axes=axes,
            perm=np.arange(n),
            bad=np.zeros(n, bool),
            pos=len(self.layers),
            last=kw.get("last", v.last),
            step=kw.get("step", v.step),
        )

    def _check_tip(self, v: Data, node) -> None:
        if v.pos != len(self.layers):
            raise CompileError(
                f"{_where(node)}: the graph branches (this value was computed before layer "
                f"{self.layers[v.pos]['name']!r}); only a single chain of layers can be compiled"
            )
        if v.quant is not None:
            raise CompileError(f"{_where(node)}: unexpected use of a dynamically quantized value")

    def _fold_cols(self, v: Data, w: np.ndarray, node) -> np.ndarray:
        """Re-index the last axis of ``w`` (current feature order) onto the plan's output vector."""
        n = self._tip_size()
        if _is_identity(v.perm, n) and not v.bad.any():
            return w
        if v.bad.any() and np.any(w[..., v.bad] != 0):
            raise CompileError(f"{_where(node)}: uses {v.why or 'a value the plan cannot produce'}")
        out = np.zeros(w.shape[:-1] + (n,), np.float64)
        for k, p in enumerate(v.perm):
            if not v.bad[k]:
                out[..., p] += w[..., k]
        return out

    def _materialize(self, v: Data, node) -> Data:
        """Make ``v``'s features exactly the plan's output vector (adds a selection layer if needed)."""
        self._check_tip(v, node)
        n = self._tip_size()
        if _is_identity(v.perm, n) and not v.bad.any():
            return v
        if v.bad.any():
            raise CompileError(f"{_where(node)}: uses {v.why or 'a value the plan cannot produce'}")
        m = len(v.perm)
        w = np.zeros((m, n), np.float32)
        w[np.arange(m), v.perm] = 1.0
        name = self._name("dense")
        self._add_layer(
            {"kind": "dense", "name": name, "input_size": n, "output_size": m, "activation": "linear"},
            {"W": w},
        )
        return Data(v.axes, np.arange(m), np.zeros(m, bool), len(self.layers), v.last, v.step)

    # ------------------------------------------------------------------ entry
    def run(self) -> None:
        from onnx import numpy_helper

        g = self.g
        inits = {t.name: numpy_helper.to_array(t) for t in g.initializer}
        for name, arr in inits.items():
            self.env[name] = Const(np.asarray(arr))
        graph_nodes = self._fuse_attention(list(g.node), inits)
        producers = {}
        for n in graph_nodes:
            for o in n.output:
                if o:
                    producers[o] = n
        if self.output not in producers and self.output not in self.env:
            if not any(i.name == self.output for i in g.input):
                raise CompileError(f"the graph has no value named {self.output!r}")
        # nodes needed for the output
        needed = set()
        stack = [self.output]
        seen = set()
        while stack:
            name = stack.pop()
            if name in seen or not name:
                continue
            seen.add(name)
            n = producers.get(name)
            if n is not None and id(n) not in needed:
                needed.add(id(n))
                stack.extend(n.input)
        nodes = [n for n in graph_nodes if id(n) in needed]
        # classify graph inputs: state (only reaches initial_h/initial_c) or data
        graph_inputs = [i for i in g.input if i.name not in inits]
        used_inputs = [i for i in graph_inputs if i.name in seen]
        reach = {i.name: {i.name} for i in used_inputs}
        roots_of: dict[str, set] = {i.name: {i.name} for i in used_inputs}
        as_state: dict[str, bool] = {}
        as_data: dict[str, bool] = {}
        for n in nodes:
            src = set()
            if n.op_type in ("Shape", "Size"):
                continue  # only the shape of the value flows on
            for slot, name in enumerate(n.input):
                r = roots_of.get(name, set())
                if not r:
                    continue
                if n.op_type in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM") and slot in (5, 6):
                    for x in r:
                        as_state[x] = True
                    continue
                if n.op_type in ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM") or n.op_type not in _PLUMBING:
                    for x in r:
                        as_data[x] = True
                src |= r
            for o in n.output:
                if src:
                    roots_of[o] = set(src)
        for x in roots_of.get(self.output, set()):
            as_data[x] = True
        del reach
        data_inputs = [i for i in used_inputs if as_data.get(i.name) or not as_state.get(i.name)]
        for i in used_inputs:
            if as_state.get(i.name) and as_data.get(i.name):
                raise CompileError(
                    f"graph input {i.name!r} is used both as data and as recurrent initial state"
                )
        if len(data_inputs) != 1:
            raise CompileError(
                f"expected exactly one data input, found {[i.name for i in data_inputs]} "
                f"(inputs feeding only initial_h/initial_c are state)"
            )
        for i in used_inputs:
            if i not in data_inputs:
                self.env[i.name] = State(i.name, self._state_index(i))
                self.state_inputs.append(i.name)
        self._bind_input(data_inputs[0])
        for n in nodes:
            self._node(n)
        out = self.env.get(self.output)
        if not isinstance(out, Data):
            raise CompileError(f"output {self.output!r} does not depend on the model input")
        self._finish(out)
        if self.state_feeds:
            self._check_state_wiring(producers)

    # ------------------------------------------------------------------ attention pooling
    def _fuse_attention(self, nodes: list, inits: dict) -> list:
        """Replace additive attention pooling subgraphs by one ``edgernn.AttentionPool`` node.

        Pattern (what torch exports for ``softmax_t(tanh(h W^T + b) · v)`` pooling)::

            s = MatMul(Tanh(Add(MatMul(h, Wt), b)), v)      (v: [A] or [A, 1] + Squeeze)
            y = ReduceSum(Mul(Unsqueeze(Softmax(s, axis=time)), h), axes=time)
        """
        from onnx import helper, numpy_helper

        prod = {o: n for n in nodes for o in n.output if o}
        consts = dict(inits)
        for n in nodes:
            if n.op_type == "Constant" and n.attribute and n.attribute[0].name == "value":
                consts[n.output[0]] = numpy_helper.to_array(n.attribute[0].t)

        def node_of(name, op):
            n = prod.get(name)
            return n if n is not None and n.op_type == op else None

        def const(name):
            return consts.get(name) if name else None

        out = list(nodes)
        for red in nodes:
            if red.op_type != "ReduceSum" or red.domain not in ("", "ai.onnx"):
                continue
            mul = node_of(red.input[0], "Mul")
            if mul is None:
                continue
            for ui in (0, 1):
                uns = node_of(mul.input[ui], "Unsqueeze")
                h_name = mul.input[1 - ui]
                if uns is None:
                    continue
                sm = node_of(uns.input[0], "Softmax")
                if sm is None:
                    continue
                sc = prod.get(sm.input[0])
                squeeze = None
                if sc is not None and sc.op_type == "Squeeze":
                    squeeze, sc = sc, prod.get(sc.input[0])
                if sc is None or sc.op_type != "MatMul" or const(sc.input[1]) is None:
                    continue
                v = np.asarray(const(sc.input[1]), np.float64)
                if not (v.ndim == 1 or (v.ndim == 2 and v.shape[1] == 1 and squeeze is not None)):
                    continue
                th = node_of(sc.input[0], "Tanh")
                if th is None:
                    continue
                add = prod.get(th.input[0])
                b = None
                mm = add
                if add is not None and add.op_type == "Add":
                    for k in (0, 1):
                        if const(add.input[k]) is not None:
                            b, mm = np.asarray(const(add.input[k]), np.float64), prod.get(add.input[1 - k])
                            break
                if (
                    mm is None
                    or mm.op_type != "MatMul"
                    or mm.input[0] != h_name
                    or const(mm.input[1]) is None
                ):
                    continue
                wt = np.asarray(const(mm.input[1]), np.float64)  # [H, A]
                a = wt.shape[-1] if wt.ndim == 2 else -1
                if wt.ndim != 2 or v.reshape(-1).size != a or (b is not None and b.reshape(-1).size != a):
                    continue
                at = _attrs(red)
                r_axes = const(red.input[1]) if len(red.input) > 1 and red.input[1] else at.get("axes")
                u_axes = (
                    const(uns.input[1]) if len(uns.input) > 1 and uns.input[1] else _attrs(uns).get("axes")
                )
                if r_axes is None or u_axes is None:
                    continue
                name = f"edgernn_attention_{len(self.fused)}"
                self.fused[name] = {
                    "W": wt.T,
                    "b": np.zeros(a) if b is None else b.reshape(-1),
                    "v": v.reshape(-1),
                    "softmax_axis": _attrs(sm).get("axis", -1 if self.opset.get("", 13) >= 13 else 1),
                    "unsqueeze_axes": [int(x) for x in np.asarray(u_axes).ravel()],
                    "reduce_axes": [int(x) for x in np.asarray(r_axes).ravel()],
                    "keepdims": int(at.get("keepdims", 1)),
                    "nodes": [x.name for x in (mm, add, th, sc, squeeze, sm, uns, mul, red) if x is not None],
                }
                fused = helper.make_node(
                    "AttentionPool", [h_name], [red.output[0]], name=name, domain="edgernn"
                )
                out[out.index(red)] = fused
                break
        return out

    def _op_AttentionPool(self, node, vals, at):
        f = self.fused[node.name]
        v = vals[0]
        where = f"additive attention pooling over nodes {f['nodes']}"
        if not isinstance(v, Data):
            raise CompileError(f"{where}: input does not depend on the model input")
        self._check_tip(v, node)
        r = len(v.axes)
        n = self._whole_features(v, node)
        sa = f["softmax_axis"] + (r - 1) if f["softmax_axis"] < 0 else f["softmax_axis"]  # scores: rank r-1
        ua = [a + r if a < 0 else a for a in f["unsqueeze_axes"]]
        ra = [a + r if a < 0 else a for a in f["reduce_axes"]]
        t_ax = v.axes[sa] if 0 <= sa < r - 1 else None
        if not isinstance(t_ax, Sym) or t_ax.role == "B" or ua != [r - 1] or ra != [sa]:
            raise CompileError(f"{where}: softmax/sum are not over the time axis of {v.axes}")
        if v.last or v.step:
            raise CompileError(f"{where}: needs the time axis")
        t_ax.role = "T"
        if f["W"].shape[1] != n:
            raise CompileError(f"{where}: W {f['W'].shape} does not match {n} features")
        w = self._fold_cols(v, f["W"], node)
        tip = self._tip_size()
        self._add_layer(
            {
                "kind": "attention",
                "name": self._name("attention"),
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
        return Data(axes, v.perm, v.bad, len(self.layers), True, False, why=v.why)

    def _check_state_wiring(self, producers: dict) -> None:
        """The step graph's contract: state output k returns, at each position, the state that the same
        position of state input k fed (the stream keeps each layer's own state). Checked when the graph
        has as many state outputs as state inputs; otherwise noted."""
        outs = [o for o in self.ignored_outputs]
        if len(outs) != len(self.state_inputs):
            self.notes.append(
                f"state inputs {self.state_inputs} but other outputs {outs}: the state wiring was not checked"
            )
            return
        env2: dict[str, Any] = {k: v for k, v in self.env.items() if isinstance(v, Const)}
        env2.update(self.state_codes)
        for sin, sout in zip(self.state_inputs, outs, strict=True):
            try:
                got = self._eval_codes(sout, producers, env2)
            except CompileError as e:
                raise CompileError(
                    f"state output {sout!r}: cannot follow it back to the recurrent nodes: {e}"
                ) from None
            feeds = [f for f in self.state_feeds if f[0] == sin]
            if got is None or any(f[3] is None for f in feeds):
                raise CompileError(f"state input {sin!r} / output {sout!r}: cannot follow the state wiring")
            gi = np.asarray(got.arr)
            expected = np.full(gi.size, -1, np.int64)
            for _, li, which, ix in feeds:
                nd, h = ix.shape
                codes = _state_code(li, which, np.arange(nd * h)).reshape(nd, h)
                if ix.max() >= expected.size:
                    raise CompileError(f"state output {sout!r} is smaller than state input {sin!r}")
                expected[ix.ravel()] = codes.ravel()
            used = expected >= 0
            if gi.size != expected.size or np.any(gi.ravel()[used] != expected[used]):
                raise CompileError(
                    f"state output {sout!r} does not return, position by position, the states that input "
                    f"{sin!r} feeds into the recurrent layers; the stream could not reproduce this graph"
                )

    def _eval_codes(self, name: str, producers: dict, env2: dict) -> Bcast | None:
        if name in env2:
            v = env2[name]
            return v if isinstance(v, Bcast) else None
        node = producers.get(name)
        if node is None or node.op_type not in _PLUMBING:
            raise CompileError(f"{name!r} is not plumbing over Y_h/Y_c")
        vals = []
        for i in node.input:
            vals.append(None if not i else self._eval_codes(i, producers, env2) if i not in env2 else env2[i])
        if node.op_type == "Concat" and all(isinstance(v, Bcast) for v in vals):
            axis = _attrs(node)["axis"]
            res = [Bcast(np.concatenate([v.arr for v in vals], axis=axis), list(vals[0].dims))]
            r = len(vals[0].dims)
            res[0].dims[axis % r] = sum(v.dims[axis % r] for v in vals)
        else:
            res = getattr(self, f"_op_{node.op_type}")(node, vals, _attrs(node))
            res = res if isinstance(res, list) else [res]
        for o, v in zip(node.output, res, strict=False):
            env2[o] = v
        v = env2.get(name)
        return v if isinstance(v, Bcast) else None

    def _state_index(self, vi) -> Bcast | None:
        """Positions of a state input [..., batch, ...] as a Bcast (the symbolic batch axis collapsed)."""
        dims = []
        for d in vi.type.tensor_type.shape.dim:
            dims.append(d.dim_value if d.HasField("dim_value") else Sym(f"{vi.name}:state"))
        if sum(isinstance(d, Sym) for d in dims) > 1:
            return None
        shape = [1 if isinstance(d, Sym) else d for d in dims]
        return Bcast(np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape), dims)

    def _bind_input(self, vi) -> None:
        from onnx import TensorProto

        tt = vi.type.tensor_type
        dims = [d.dim_value if d.HasField("dim_value") else None for d in tt.shape.dim]
        self.input_name = vi.name
        if tt.elem_type in (TensorProto.INT64, TensorProto.INT32):
            if len(dims) not in (1, 2):
                raise CompileError(
                    f"integer input {vi.name!r} must be [batch, time] token ids, got rank {len(dims)}"
                )
            syms = [Sym(f"{vi.name}:{k}", d) for k, d in enumerate(dims)]
            self.input_syms = syms
            self.in_size = 1
            self.input_kind = "tokens"
            self.env[vi.name] = Data(list(syms), np.arange(1), np.zeros(1, bool), 0, tokens=True)
            return
        if tt.elem_type != TensorProto.FLOAT:
            raise CompileError(f"input {vi.name!r} has element type {tt.elem_type}; float32 is supported")
        if len(dims) < 1 or dims[-1] is None or dims[-1] <= 0:
            raise CompileError(f"input {vi.name!r} needs a static last (feature) dimension, got {dims}")
        if len(dims) > 3:
            raise CompileError(f"input {vi.name!r} has rank {len(dims)}; at most [batch, time, features]")
        syms = [Sym(f"{vi.name}:{k}", d) for k, d in enumerate(dims[:-1])]
        self.input_syms = syms
        self.in_size = dims[-1]
        self.input_kind = "features"
        self.env[vi.name] = Data(syms + [dims[-1]], np.arange(dims[-1]), np.zeros(dims[-1], bool), 0)

    # ------------------------------------------------------------------ dispatch
    def _node(self, node) -> None:
        op = node.op_type
        dom = node.domain or ""
        vals = [self.env.get(i) if i else None for i in node.input]
        for name, v in zip(node.input, vals, strict=False):
            if name and v is None:
                raise CompileError(f"{_where(node)}: input {name!r} is not defined")
        if op == "Constant" and dom == "":
            self._set(node, [Const(self._constant(node))])
            return
        present = [v for v in vals if v is not None]
        if (
            dom in ("", "ai.onnx")
            and all(isinstance(v, Const) for v in present)
            and op not in ("LSTM", "GRU", "RNN")
        ):
            self._set(node, [Const(a) for a in self._fold(node, [v.arr if v else None for v in vals])])
            return
        if any(isinstance(v, State) for v in present) and op not in (
            "LSTM",
            "GRU",
            "RNN",
            "DynamicQuantizeLSTM",
        ):
            if op not in _PLUMBING:
                raise CompileError(f"{_where(node)}: state input used by a non-plumbing op")
            src = next(v for v in present if isinstance(v, State)).src
            outs = [State(src)] * len(node.output)
            states = [v for v in vals if isinstance(v, State)]
            if all(v.ix is not None for v in states) and len({v.src for v in states}) == 1:
                sub = [v.ix if isinstance(v, State) else v for v in vals]
                try:
                    handler = getattr(self, f"_op_{op}")
                    res = handler(node, sub, _attrs(node))
                    res = res if isinstance(res, list) else [res]
                    outs = [State(src, r if isinstance(r, Bcast) else None) for r in res]
                except (CompileError, AttributeError, ValueError, IndexError):
                    pass
            self._set(node, outs)
            return
        handler = getattr(self, f"_op_{op}", None)
        if dom not in ("", "ai.onnx", "com.microsoft", "edgernn") or handler is None:
            raise CompileError(
                f"unsupported op {(dom + '.') if dom else ''}{op!r} ({_where(node)}) on the model's data path"
            )
        res = handler(node, vals, _attrs(node))
        self._set(node, res if isinstance(res, list) else [res])

    def _set(self, node, values: list) -> None:
        for name, v in zip(node.output, values, strict=False):
            if name:
                self.env[name] = v

    def _constant(self, node) -> np.ndarray:
        return _fold_constant(node)

    def _fold(self, node, arrs: list) -> list[np.ndarray]:
        return _fold_node(node, arrs, self.opset)

    # ------------------------------------------------------------------ shape-ish helpers
    @staticmethod
    def _ints(v, node, what: str) -> np.ndarray | None:
        if v is None:
            return None
        if isinstance(v, Const):
            return np.asarray(v.arr).astype(np.int64)
        raise CompileError(f"{_where(node)}: {what} must be constant")

    def _op_Shape(self, node, vals, at):
        v = vals[0]
        if isinstance(v, Data):
            dims = list(v.axes)
        elif isinstance(v, Bcast):
            dims = list(v.dims)
        elif isinstance(v, ShapeVal):
            dims = list(v.arr.shape)
        else:
            raise CompileError(f"{_where(node)}: Shape of an unsupported value")
        r = len(dims)
        s = at.get("start", 0)
        e = at.get("end", r)
        s = max(0, min(r, s + r if s < 0 else s))
        e = max(0, min(r, e + r if e < 0 else e))
        return self._shapeval(np.array(dims[s:e], dtype=object))

    @staticmethod
    def _shapeval(arr) -> Any:
        if not isinstance(arr, np.ndarray):
            a = np.empty((), dtype=object)
            a[()] = arr
            arr = a
        if all(isinstance(x, (int, np.integer)) for x in arr.ravel()):
            return Const(arr.astype(np.int64))
        return ShapeVal(arr)

    def _shape_like(self, v, node) -> list:
        if isinstance(v, Const):
            return [int(x) for x in np.asarray(v.arr).ravel()]
        if isinstance(v, ShapeVal):
            return [x if isinstance(x, Sym) else int(x) for x in v.arr.ravel()]
        raise CompileError(f"{_where(node)}: the shape operand must be constant or computed from shapes")

    # ------------------------------------------------------------------ generic plumbing ops
    def _op_Identity(self, node, vals, at):
        return vals[0]

    def _op_Dropout(self, node, vals, at):
        return [vals[0], None]

    def _op_Cast(self, node, vals, at):
        v = vals[0]
        if isinstance(v, Data):
            if at.get("to") not in (1, 11, 10, 16) and v.quant != "int" and not v.tokens:
                raise CompileError(f"{_where(node)}: casting the data to a non-float type")
            return v
        if isinstance(v, ShapeVal):
            return v
        if isinstance(v, Bcast):
            from onnx import helper

            return Bcast(v.arr.astype(helper.tensor_dtype_to_np_dtype(at["to"])), v.dims)
        if isinstance(v, (QScale, QZero)):
            return v
        raise CompileError(f"{_where(node)}: Cast of an unsupported value")

    def _axes_arg(self, node, vals, at, rank):
        if len(vals) > 1 and vals[1] is not None:
            axes = self._ints(vals[1], node, "axes")
        else:
            axes = at.get("axes")
        if axes is None:
            return None
        return [int(a) + rank if int(a) < 0 else int(a) for a in np.asarray(axes).ravel()]

    def _op_Unsqueeze(self, node, vals, at):
        v = vals[0]
        rank_of = (
            len(v.axes) if isinstance(v, Data) else (len(v.dims) if isinstance(v, Bcast) else v.arr.ndim)
        )
        axes = self._axes_arg(node, vals, at, 0)
        if axes is None:
            raise CompileError(f"{_where(node)}: Unsqueeze without axes")
        out_rank = rank_of + len(axes)
        axes = sorted(a + out_rank if a < 0 else a for a in axes)
        if isinstance(v, ShapeVal):
            arr = v.arr
            for a in axes:
                arr = np.expand_dims(arr, a)
            return ShapeVal(arr)
        if isinstance(v, Bcast):
            arr, dims = v.arr, list(v.dims)
            for a in axes:
                arr = np.expand_dims(arr, a)
                dims.insert(a, 1)
            return Bcast(arr, dims)
        if isinstance(v, Data):
            axs = list(v.axes)
            for a in axes:
                axs.insert(a, 1)
            return Data(axs, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant)
        raise CompileError(f"{_where(node)}: Unsqueeze of an unsupported value")

    def _op_Squeeze(self, node, vals, at):
        v = vals[0]
        if isinstance(v, ShapeVal):
            axes = self._axes_arg(node, vals, at, v.arr.ndim)
            return ShapeVal(np.squeeze(v.arr, axis=tuple(axes) if axes is not None else None))
        if isinstance(v, Bcast):
            axes = self._axes_arg(node, vals, at, len(v.dims))
            if axes is None:
                axes = [k for k, d in enumerate(v.dims) if d == 1]
            if any(v.dims[a] != 1 for a in axes):
                raise CompileError(f"{_where(node)}: Squeeze of a non-unit axis")
            return Bcast(
                np.squeeze(v.arr, axis=tuple(axes)), [d for k, d in enumerate(v.dims) if k not in axes]
            )
        if isinstance(v, Data):
            axes = self._axes_arg(node, vals, at, len(v.axes))
            if axes is None:
                axes = [k for k, d in enumerate(v.axes) if d == 1]
            for a in axes:
                if v.axes[a] != 1:
                    raise CompileError(
                        f"{_where(node)}: Squeeze of axis {a} ({v.axes[a]}) which is not size 1"
                    )
            axs = [d for k, d in enumerate(v.axes) if k not in axes]
            return Data(axs, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant)
        raise CompileError(f"{_where(node)}: Squeeze of an unsupported value")

    def _feat_index(self, v: Data) -> tuple[np.ndarray, list[int]]:
        """Index array over the feature axes (shape = the int axes) and the positions of those axes."""
        pos = [k for k, d in enumerate(v.axes) if not isinstance(d, Sym)]
        shape = [v.axes[k] for k in pos]
        return np.arange(int(np.prod(shape, dtype=np.int64))).reshape(shape), pos

    def _select(self, v: Data, idx: np.ndarray, axes: list, **kw) -> Data:
        flat = idx.ravel()
        return Data(
            axes,
            v.perm[flat],
            v.bad[flat],
            v.pos,
            kw.get("last", v.last),
            v.step,
            v.tokens,
            v.why,
            v.quant,
        )

    def _op_Transpose(self, node, vals, at):
        v = vals[0]
        if isinstance(v, Bcast):
            perm = at.get("perm", list(range(len(v.dims)))[::-1])
            return Bcast(np.transpose(v.arr, perm), [v.dims[p] for p in perm])
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: Transpose of an unsupported value")
        perm = at.get("perm", list(range(len(v.axes)))[::-1])
        idx, fpos = self._feat_index(v)
        new_axes = [v.axes[p] for p in perm]
        order = [fpos.index(p) for p in perm if p in fpos]
        return self._select(v, np.transpose(idx, order), new_axes)

    def _op_Slice(self, node, vals, at):
        v = vals[0]
        if len(vals) > 1:
            starts = self._ints(vals[1], node, "starts")
            ends = self._ints(vals[2], node, "ends")
            axes = self._ints(vals[3], node, "axes") if len(vals) > 3 else None
            steps = self._ints(vals[4], node, "steps") if len(vals) > 4 else None
        else:
            starts, ends, axes = np.array(at["starts"]), np.array(at["ends"]), at.get("axes")
            steps = None
        if axes is None:
            axes = np.arange(len(starts))
        if steps is None:
            steps = np.ones(len(starts), np.int64)
        if isinstance(v, Multi):
            r = len(v.parts[0].axes)
            if len(starts) != 1 or (int(axes[0]) + r if int(axes[0]) < 0 else int(axes[0])) != v.axis:
                raise CompileError(f"{_where(node)}: Slice of a Concat of data-dependent tensors")
            total = sum(p.axes[v.axis] for p in v.parts)
            rng = np.arange(total)[
                slice(int(starts[0]), int(max(min(ends[0], INT_BIG), -INT_BIG)), int(steps[0]))
            ]
            if rng.size == 0:
                raise CompileError(f"{_where(node)}: empty Slice")
            part, local = v.locate(rng, node)
            if int(steps[0]) != 1:
                raise CompileError(f"{_where(node)}: strided Slice of a Concat of data-dependent tensors")
            sub = [
                part,
                Const(np.array([local[0]])),
                Const(np.array([local[-1] + 1])),
                Const(np.array([v.axis])),
            ]
            return self._op_Slice(node, sub, {})
        if isinstance(v, ShapeVal):
            sl = [slice(None)] * v.arr.ndim
            for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
                sl[int(a)] = slice(int(s), int(min(e, INT_BIG)), int(st))
            return self._shapeval(v.arr[tuple(sl)])
        rank = len(v.dims) if isinstance(v, Bcast) else len(v.axes) if isinstance(v, Data) else None
        if rank is None:
            raise CompileError(f"{_where(node)}: Slice of an unsupported value")
        dims = v.dims if isinstance(v, Bcast) else v.axes
        if isinstance(v, Bcast):
            sl = [slice(None)] * rank
            dims = list(dims)
            for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
                a = int(a) + rank if int(a) < 0 else int(a)
                if isinstance(dims[a], Sym):
                    continue
                sl[a] = slice(int(s), int(max(min(e, INT_BIG), -INT_BIG)), int(st))
                dims[a] = len(range(*sl[a].indices(dims[a])))
            return Bcast(v.arr[tuple(sl)], dims)
        idx, fpos = self._feat_index(v)
        new_axes = list(v.axes)
        last = v.last
        isl = [slice(None)] * idx.ndim
        for s, e, a, st in zip(starts, ends, axes, steps, strict=False):
            a = int(a) + rank if int(a) < 0 else int(a)
            s, e, st = int(s), int(e), int(st)
            d = v.axes[a]
            if isinstance(d, Sym):
                if s == 0 and e >= 2**31 - 1 and st == 1:
                    continue  # the whole axis
                if s == -1 and e >= 2**31 - 1 and st == 1:
                    self._last_step(d, node)
                    new_axes[a] = 1
                    last = True
                    continue
                raise CompileError(
                    f"{_where(node)}: slicing [{s}:{e}:{st}] of the symbolic axis {d} is not supported "
                    "(only the whole axis or its last element; a graph unrolled over time steps, as "
                    "torch's dynamo exporter writes for nn.RNN, cannot be compiled: export "
                    "RNN/LSTM/GRU nodes, "
                    "e.g. torch.onnx.export(..., dynamo=False))"
                )
            sl = slice(s, max(min(e, INT_BIG), -INT_BIG), st)
            isl[fpos.index(a)] = sl
            new_axes[a] = len(range(*sl.indices(d)))
        return self._select(v, idx[tuple(isl)], new_axes, last=last)

    def _last_step(self, d: Sym, node) -> None:
        if d.role == "B":
            raise CompileError(f"{_where(node)}: selecting one element of the batch axis")
        if d.role is None:
            d.role = "T"

    def _op_Gather(self, node, vals, at):
        v, iv = vals[0], vals[1]
        axis = at.get("axis", 0)
        if isinstance(v, Multi):
            r = len(v.parts[0].axes)
            if (axis + r if axis < 0 else axis) != v.axis or not isinstance(iv, Const):
                raise CompileError(f"{_where(node)}: Gather on a Concat of data-dependent tensors")
            part, local = v.locate(np.asarray(iv.arr).astype(np.int64), node)
            return self._op_Gather(node, [part, Const(local)], at)
        if isinstance(v, Const) and isinstance(iv, Data):
            return self._embedding(node, v.arr, iv, axis)
        if isinstance(v, ShapeVal):
            ind = self._ints(iv, node, "indices")
            return self._shapeval(np.take(v.arr, ind, axis=axis))
        if not isinstance(iv, Const):
            raise CompileError(f"{_where(node)}: Gather with data-dependent indices")
        ind = np.asarray(iv.arr).astype(np.int64)
        if isinstance(v, Bcast):
            r = len(v.dims)
            axis = axis + r if axis < 0 else axis
            dims = list(v.dims)
            if isinstance(dims[axis], Sym):
                arr = np.take(v.arr, np.zeros_like(ind), axis=axis)
                new = dims[:axis] + [1] * ind.ndim + dims[axis + 1 :]
            else:
                arr = np.take(v.arr, ind, axis=axis)
                new = dims[:axis] + list(ind.shape) + dims[axis + 1 :]
            return Bcast(arr, new)
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: Gather of an unsupported value")
        r = len(v.axes)
        axis = axis + r if axis < 0 else axis
        d = v.axes[axis]
        idx, fpos = self._feat_index(v)
        if isinstance(d, Sym):
            if ind.size != 1 or int(ind.ravel()[0]) != -1:
                raise CompileError(
                    f"{_where(node)}: Gather of index {ind.tolist()} on the symbolic axis {d}; "
                    "only the last time step (-1) can be selected"
                )
            self._last_step(d, node)
            new_axes = v.axes[:axis] + [1] * ind.ndim + v.axes[axis + 1 :]
            return self._select(v, idx, new_axes, last=True)
        ind = np.where(ind < 0, ind + d, ind)
        if np.any(ind < 0) or np.any(ind >= d):
            raise CompileError(f"{_where(node)}: Gather index out of range")
        fa = fpos.index(axis)
        sel = np.take(idx, ind, axis=fa)
        new_axes = v.axes[:axis] + list(ind.shape) + v.axes[axis + 1 :]
        return self._select(v, sel, new_axes)

    def _embedding(self, node, table: np.ndarray, iv: Data, axis: int):
        if not iv.tokens or iv.pos != 0 or self.layers:
            raise CompileError(
                f"{_where(node)}: Gather of a constant by data is only supported as an embedding"
            )
        if axis != 0 or table.ndim != 2:
            raise CompileError(f"{_where(node)}: embedding table must be [vocab, dim] gathered on axis 0")
        v, e = table.shape
        self.vocab_size = int(v)
        name = self._name("embedding")
        self._add_layer(
            {"kind": "embedding", "name": name, "input_size": 1, "output_size": int(e), "vocab_size": int(v)},
            {"table": table.astype(np.float32)},
        )
        return Data(list(iv.axes) + [int(e)], np.arange(e), np.zeros(e, bool), len(self.layers))

    def _op_Split(self, node, vals, at):
        v = vals[0]
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: Split of an unsupported value")
        r = len(v.axes)
        axis = at.get("axis", 0)
        axis = axis + r if axis < 0 else axis
        d = v.axes[axis]
        if isinstance(d, Sym):
            raise CompileError(f"{_where(node)}: Split along the batch/time axis {d}")
        n_out = len(node.output)
        if len(vals) > 1 and vals[1] is not None:
            sizes = [int(x) for x in self._ints(vals[1], node, "split")]
        elif "split" in at:
            sizes = [int(x) for x in at["split"]]
        else:
            k = -(-d // n_out)
            sizes = [min(k, d - k * j) for j in range(n_out)]
        if sum(sizes) != d or len(sizes) != n_out:
            raise CompileError(f"{_where(node)}: split sizes {sizes} do not cover axis {axis} of size {d}")
        outs, start = [], 0
        for size in sizes:
            sub = [v, Const(np.array([start])), Const(np.array([start + size])), Const(np.array([axis]))]
            outs.append(self._op_Slice(node, sub, {}))
            start += size
        return outs

    def _op_OneHot(self, node, vals, at):
        iv, depth, values = vals
        if not (isinstance(iv, Data) and iv.tokens and iv.pos == 0 and not self.layers):
            raise CompileError(f"{_where(node)}: OneHot is only supported on the model's token ids")
        if not isinstance(depth, Const) or not isinstance(values, Const):
            raise CompileError(f"{_where(node)}: depth and values must be constant")
        axis = at.get("axis", -1)
        if axis not in (-1, len(iv.axes)):
            raise CompileError(f"{_where(node)}: OneHot axis {axis} (only the last axis is supported)")
        v = int(np.asarray(depth.arr).ravel()[0])
        off, on = (float(a) for a in np.asarray(values.arr).ravel()[:2])
        self.vocab_size = v
        self._add_layer(
            {"kind": "onehot", "name": self._name("onehot"), "input_size": 1, "vocab_size": v}, {}
        )
        self.layers[-1]["output_size"] = v
        out = Data(list(iv.axes) + [v], np.arange(v), np.zeros(v, bool), len(self.layers))
        if (off, on) != (0.0, 1.0):
            out = self._affine(node, out, np.full(v, on - off), np.full(v, off))
        return out

    def _op_Concat(self, node, vals, at):
        axis = at["axis"]
        if all(isinstance(v, (Const, ShapeVal)) for v in vals):
            arrs = [v.arr.astype(object) if isinstance(v, Const) else v.arr for v in vals]
            return self._shapeval(np.concatenate(arrs, axis=axis))
        if any(isinstance(v, Data) for v in vals) and all(isinstance(v, Data) for v in vals):
            r = len(vals[0].axes)
            axis = axis + r if axis < 0 else axis
            for v in vals:
                if len(v.axes) != r or isinstance(v.axes[axis], Sym):
                    raise CompileError(f"{_where(node)}: Concat of data-dependent tensors along {v.axes}")
            return Multi(list(vals), axis)
        raise CompileError(f"{_where(node)}: Concat of data-dependent tensors is not supported")

    def _op_Mul(self, node, vals, at):
        a, b = vals
        if isinstance(a, (ShapeVal, Const)) and isinstance(b, (ShapeVal, Const)):
            return self._shapeval(np.asarray(a.arr, dtype=object) * np.asarray(b.arr, dtype=object))
        return self._binary(node, vals, "Mul")

    def _op_ConstantOfShape(self, node, vals, at):
        from onnx import numpy_helper

        dims = self._shape_like(vals[0], node)
        val = numpy_helper.to_array(node.attribute[0].t) if node.attribute else np.zeros(1, np.float32)
        shape = [1 if isinstance(d, Sym) else d for d in dims]
        return Bcast(np.full(shape, val.ravel()[0], dtype=val.dtype), dims)

    def _op_Expand(self, node, vals, at):
        v = vals[0]
        dims = self._shape_like(vals[1], node)
        if isinstance(v, Const):
            arr = np.asarray(v.arr)
            r = max(arr.ndim, len(dims))
            arr = arr.reshape((1,) * (r - arr.ndim) + arr.shape)
            dims = [1] * (r - len(dims)) + list(dims)
            out_dims, shape = [], []
            for a, d in zip(arr.shape, dims, strict=False):
                if isinstance(d, Sym):
                    if a != 1:
                        raise CompileError(f"{_where(node)}: Expand of a non-broadcast axis to {d}")
                    out_dims.append(d)
                    shape.append(1)
                else:
                    out_dims.append(max(a, d))
                    shape.append(max(a, d))
            return Bcast(np.broadcast_to(arr, shape).copy(), out_dims)
        raise CompileError(f"{_where(node)}: Expand of the data is not supported")

    def _op_Reshape(self, node, vals, at):
        v = vals[0]
        target = self._shape_like(vals[1], node)
        if isinstance(v, ShapeVal):
            return ShapeVal(v.arr.reshape([int(t) for t in target]))
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: Reshape of an unsupported value")
        return self._reshape(node, v, target, allowzero=at.get("allowzero", 0))

    def _reshape(self, node, v: Data, target: list, allowzero: int = 0) -> Data:
        axes = v.axes
        tg = []
        for k, t in enumerate(target):
            if isinstance(t, Sym):
                tg.append(t)
            elif t == 0 and not allowzero:
                if k >= len(axes):
                    raise CompileError(f"{_where(node)}: 0 in the target shape beyond the input rank")
                tg.append(axes[k])
            else:
                tg.append(int(t))
        syms_in = [d for d in axes if isinstance(d, Sym)]
        if sum(isinstance(d, Sym) for d in tg) < len(syms_in):
            # exporters sometimes bake the traced batch/time size into a Reshape target
            for k, t in enumerate(tg):
                d = axes[k] if k < len(axes) else None
                if (
                    isinstance(d, Sym)
                    and not isinstance(t, Sym)
                    and t > 0
                    and d.static in (None, t)
                    and not any(x is d for x in tg)
                ):
                    tg[k] = d
                    self.notes.append(
                        f"{_where(node)}: the static size {t} in the Reshape target is taken as the symbolic "
                        f"axis {d.name} ({d.role or 'batch/time'}); the compiled model accepts any size"
                    )
        syms_out = [d for d in tg if isinstance(d, Sym)]
        n_neg = sum(1 for d in tg if not isinstance(d, Sym) and d == -1)
        if n_neg > 1:
            raise CompileError(f"{_where(node)}: more than one -1 in the target shape")
        if len(syms_out) == len(syms_in) - 1 and n_neg == 1:
            # the -1 stands for the missing symbolic axis
            missing = [s for s in syms_in if not any(s is o for o in syms_out)]
            if len(missing) != 1:
                raise CompileError(f"{_where(node)}: cannot match the symbolic axes of the reshape")
            tg = [missing[0] if (not isinstance(d, Sym) and d == -1) else d for d in tg]
            syms_out = [d for d in tg if isinstance(d, Sym)]
            n_neg = 0
        if len(syms_out) != len(syms_in) or any(a is not b for a, b in zip(syms_in, syms_out, strict=False)):
            raise CompileError(
                f"{_where(node)}: Reshape {axes} -> {target} would merge, split or reorder "
                "the batch/time axes"
            )

        def segments(lst):
            segs, cur = [], []
            for d in lst:
                if isinstance(d, Sym):
                    segs.append(cur)
                    cur = []
                else:
                    cur.append(d)
            segs.append(cur)
            return segs

        si, so = segments(axes), segments(tg)
        out_segs = []
        for a, b in zip(si, so, strict=False):
            pa = int(np.prod(a, dtype=np.int64)) if a else 1
            if -1 in b:
                rest = int(np.prod([x for x in b if x != -1], dtype=np.int64)) if len(b) > 1 else 1
                if rest == 0 or pa % rest:
                    raise CompileError(f"{_where(node)}: cannot infer -1 in Reshape {axes} -> {target}")
                b = [pa // rest if x == -1 else x for x in b]
            pb = int(np.prod(b, dtype=np.int64)) if b else 1
            if pa != pb:
                raise CompileError(
                    f"{_where(node)}: Reshape {axes} -> {target} moves features across batch/time axes"
                )
            out_segs.append(b)
        new_axes: list = []
        for k, seg in enumerate(out_segs):
            new_axes.extend(seg)
            if k < len(syms_in):
                new_axes.append(syms_in[k])
        return Data(new_axes, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, v.quant)

    def _op_Flatten(self, node, vals, at):
        v = vals[0]
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: Flatten of an unsupported value")
        axis = at.get("axis", 1)
        r = len(v.axes)
        axis = axis + r if axis < 0 else axis
        left, right = v.axes[:axis], v.axes[axis:]
        ls = [d for d in left if isinstance(d, Sym)]
        if any(isinstance(d, Sym) for d in right) or len(ls) > 1:
            raise CompileError(f"{_where(node)}: Flatten would merge the batch/time axes with features")
        lp = int(np.prod([d for d in left if not isinstance(d, Sym)], dtype=np.int64))
        if ls and lp != 1:
            raise CompileError(f"{_where(node)}: Flatten would merge features into the batch axis")
        target = [ls[0] if ls else lp, int(np.prod(right, dtype=np.int64))]
        return self._reshape(node, v, target, allowzero=1)

    # ------------------------------------------------------------------ feed-forward layers
    def _whole_features(self, v: Data, node) -> int:
        """Check the features all sit on the last axis (other int axes size 1); return their count."""
        if not v.axes or isinstance(v.axes[-1], Sym):
            raise CompileError(f"{_where(node)}: the last axis is not a feature axis")
        others = [d for d in v.axes[:-1] if not isinstance(d, Sym)]
        if any(d != 1 for d in others):
            raise CompileError(
                f"{_where(node)}: operates on the last axis ({v.axes[-1]}) "
                f"but the features span axes {v.axes}"
            )
        return v.axes[-1]

    def _pop_affine(self, v: Data) -> tuple[np.ndarray, np.ndarray] | None:
        """Remove a trailing affine layer (x*scale + shift) so the next matrix layer can absorb it."""
        if not self.layers or self.layers[-1]["kind"] != "affine" or v.pos != len(self.layers):
            return None
        layer = self.layers.pop()
        sc = self.tensors.pop(layer["tensors"]["scale"]).astype(np.float64)
        sh = self.tensors.pop(layer["tensors"]["shift"]).astype(np.float64)
        return sc, sh

    def _dense(self, node, v: Data, w: np.ndarray, b: np.ndarray | None, fold_affine: bool = True) -> Data:
        """Append ``y = w @ x + b`` (w: [O, I] in the value's current feature order)."""
        self._check_tip(v, node)
        if v.step is False and v.tokens:
            raise CompileError(f"{_where(node)}: MatMul on token ids")
        w = self._fold_cols(v, np.asarray(w, np.float64), node)
        o = w.shape[0]
        aff = self._pop_affine(v) if fold_affine else None
        if aff is not None:  # W (x*sc + sh) + b = (W diag(sc)) x + (W sh + b)
            sc, sh = aff
            b = (0.0 if b is None else np.broadcast_to(np.asarray(b, np.float64).reshape(-1), (o,))) + w @ sh
            w = w * sc[None, :]
            v = Data(v.axes, v.perm, v.bad, len(self.layers), v.last, v.step)
        name = self._name("dense")
        t = {"W": w.astype(np.float32)}
        if b is not None:
            t["b"] = np.broadcast_to(np.asarray(b, np.float32).reshape(-1), (o,)).copy()
        self._add_layer(
            {
                "kind": "dense",
                "name": name,
                "input_size": w.shape[1],
                "output_size": o,
                "activation": "linear",
            },
            t,
        )
        return Data(v.axes[:-1] + [o], np.arange(o), np.zeros(o, bool), len(self.layers), v.last, v.step)

    def _op_MatMul(self, node, vals, at):
        a, b = vals
        if not isinstance(a, Data) or not isinstance(b, Const):
            raise CompileError(f"{_where(node)}: only data @ constant matrix is supported")
        if b.arr.ndim != 2:
            raise CompileError(
                f"{_where(node)}: the constant operand must be a matrix, got shape {b.arr.shape}"
            )
        n = self._whole_features(a, node)
        if b.arr.shape[0] != n:
            raise CompileError(f"{_where(node)}: matrix {b.arr.shape} does not match {n} features")
        return self._dense(node, a, b.arr.T, None)

    def _op_Gemm(self, node, vals, at):
        a, b = vals[0], vals[1]
        c = vals[2] if len(vals) > 2 else None
        if (
            not isinstance(a, Data)
            or not isinstance(b, Const)
            or (c is not None and not isinstance(c, Const))
        ):
            raise CompileError(f"{_where(node)}: only Gemm(data, constant, constant) is supported")
        if at.get("transA", 0):
            raise CompileError(f"{_where(node)}: transA=1 on the data is not supported")
        if len(a.axes) != 2:
            raise CompileError(f"{_where(node)}: Gemm input must be 2-D, got axes {a.axes}")
        n = self._whole_features(a, node)
        w = b.arr.T if not at.get("transB", 0) else b.arr  # [O, I]
        if w.shape[1] != n:
            raise CompileError(f"{_where(node)}: weight {b.arr.shape} does not match {n} features")
        w = w.astype(np.float64) * at.get("alpha", 1.0)
        bias = None
        if c is not None:
            carr = np.asarray(c.arr, np.float64)
            if carr.size not in (1, w.shape[0]) or (carr.ndim == 2 and carr.shape[0] != 1):
                raise CompileError(f"{_where(node)}: bias of shape {carr.shape} varies over the batch")
            bias = np.broadcast_to(carr.reshape(-1), (w.shape[0],)) * at.get("beta", 1.0)
        return self._dense(node, a, w, bias)

    def _feature_vector(self, v: Data, c: np.ndarray, node) -> np.ndarray:
        """A constant broadcast against ``v``: its per-feature values in the value's current order."""
        c = np.asarray(c)
        r = len(v.axes)
        if c.ndim > r:
            if np.prod(c.shape[: c.ndim - r]) != 1:
                raise CompileError(f"{_where(node)}: constant of shape {c.shape} broadcasts beyond the data")
            c = c.reshape(c.shape[c.ndim - r :])
        c = c.reshape((1,) * (r - c.ndim) + c.shape)
        for k, d in enumerate(v.axes):
            if isinstance(d, Sym) and c.shape[k] != 1:
                raise CompileError(f"{_where(node)}: constant varies along the batch/time axis {k}")
        sub = c[tuple(0 if isinstance(d, Sym) else slice(None) for d in v.axes)]
        fshape = [d for d in v.axes if not isinstance(d, Sym)]
        try:
            return np.broadcast_to(sub, fshape).reshape(-1).astype(np.float64)
        except ValueError:
            raise CompileError(
                f"{_where(node)}: constant of shape {c.shape} does not broadcast to {v.axes}"
            ) from None

    def _affine(self, node, v: Data, scale: np.ndarray, shift: np.ndarray) -> Data:
        """Append x*scale + shift (vectors in the value's current feature order)."""
        self._check_tip(v, node)
        n = self._tip_size()
        if not (len(v.perm) == n and len(set(v.perm.tolist())) == n):
            v = self._materialize(v, node)
        if v.bad.any():
            raise CompileError(f"{_where(node)}: uses {v.why}")
        sc = np.ones(n)
        sh = np.zeros(n)
        sc[v.perm] = scale
        sh[v.perm] = shift
        last = self.layers[-1] if self.layers else None
        if last is not None and last["kind"] == "dense" and last["activation"] == "linear":
            w = self.tensors[last["tensors"]["W"]].astype(np.float64)
            bname = last["tensors"].get("b")
            b = self.tensors[bname].astype(np.float64) if bname else np.zeros(n)
            self.tensors[last["tensors"]["W"]] = (w * sc[:, None]).astype(np.float32)
            nb = (b * sc + sh).astype(np.float32)
            if bname:
                self.tensors[bname] = nb
            else:
                last["tensors"]["b"] = f"{last['name']}.b"
                self.tensors[f"{last['name']}.b"] = nb
        elif last is not None and last["kind"] == "affine":
            s0 = self.tensors[last["tensors"]["scale"]].astype(np.float64)
            h0 = self.tensors[last["tensors"]["shift"]].astype(np.float64)
            self.tensors[last["tensors"]["scale"]] = (s0 * sc).astype(np.float32)
            self.tensors[last["tensors"]["shift"]] = (h0 * sc + sh).astype(np.float32)
        else:
            name = self._name("affine")
            self._add_layer(
                {"kind": "affine", "name": name, "input_size": n, "output_size": n},
                {"scale": sc, "shift": sh},
            )
        return Data(v.axes, v.perm, v.bad, len(self.layers), v.last, v.step)

    def _binary(self, node, vals, op):
        a, b = vals
        if isinstance(a, Data) and a.quant == "int" and op == "Mul" and isinstance(b, QScale):
            return self._apply_qscale(node, a, b)
        if isinstance(b, Data) and b.quant == "int" and op == "Mul" and isinstance(a, QScale):
            return self._apply_qscale(node, b, a)
        if isinstance(a, QScale) and isinstance(b, Const) and op == "Mul":
            return QScale(a.coef * np.asarray(b.arr, np.float64))
        if isinstance(b, QScale) and isinstance(a, Const) and op == "Mul":
            return QScale(b.coef * np.asarray(a.arr, np.float64))
        if isinstance(a, Data) and isinstance(b, Const):
            v, c, left = a, b.arr, False
        elif isinstance(b, Data) and isinstance(a, Const):
            v, c, left = b, a.arr, True
        else:
            raise CompileError(f"{_where(node)}: {op} of two data-dependent tensors is not supported")
        if v.quant is not None:
            raise CompileError(f"{_where(node)}: unexpected use of a dynamically quantized value")
        vec = self._feature_vector(v, c, node)
        one, zero = np.ones_like(vec), np.zeros_like(vec)
        if op == "Add":
            return self._affine(node, v, one, vec)
        if op == "Sub":
            return self._affine(node, v, -one, vec) if left else self._affine(node, v, one, -vec)
        if op == "Mul":
            return self._affine(node, v, vec, zero)
        if op == "Div":
            if left:
                raise CompileError(f"{_where(node)}: constant / data is not supported")
            return self._affine(node, v, 1.0 / vec, zero)
        raise CompileError(f"{_where(node)}: unsupported op {op}")  # pragma: no cover

    def _op_Add(self, node, vals, at):
        a, b = vals
        if isinstance(a, (ShapeVal, Const)) and isinstance(b, (ShapeVal, Const)):
            raise CompileError(f"{_where(node)}: arithmetic on symbolic shapes")
        return self._binary(node, vals, "Add")

    def _op_Sub(self, node, vals, at):
        return self._binary(node, vals, "Sub")

    def _op_Div(self, node, vals, at):
        return self._binary(node, vals, "Div")

    def _activation(self, node, v: Data, act: str, alpha=None, beta=None) -> Data:
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: activation of an unsupported value")
        self._check_tip(v, node)
        n = self._tip_size()
        last = self.layers[-1] if self.layers else None
        params = {}
        if alpha is not None:
            params["alpha"] = float(alpha)
        if beta is not None:
            params["beta"] = float(beta)
        if act == "softmax":
            v = self._materialize(v, node)
            last = self.layers[-1] if self.layers else None
        if (
            last is not None
            and last["kind"] == "dense"
            and last["activation"] == "linear"
            and v.pos == len(self.layers)
        ):
            last["activation"] = act
            last.update(params)
        else:
            name = self._name("activation")
            self._add_layer(
                {
                    "kind": "activation",
                    "name": name,
                    "input_size": n,
                    "output_size": n,
                    "activation": act,
                    **params,
                },
                {},
            )
        return Data(v.axes, v.perm, v.bad, len(self.layers), v.last, v.step, why=v.why)

    def _unary(self, node, vals, at):
        act, da, db = _UNARY_ACTS[node.op_type]
        alpha = at.get("alpha", da) if da is not None else None
        beta = at.get("beta", db) if db is not None else None
        return self._activation(node, vals[0], act, alpha, beta)

    _op_Relu = _op_Tanh = _op_Sigmoid = _op_LeakyRelu = _op_Elu = _unary
    _op_HardSigmoid = _op_Softsign = _op_Softplus = _op_ThresholdedRelu = _unary

    def _op_Softmax(self, node, vals, at):
        v = vals[0]
        if not isinstance(v, Data):
            raise CompileError(f"{_where(node)}: Softmax of an unsupported value")
        r = len(v.axes)
        ver = self.opset.get("", 13)
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
                f"{_where(node)}: Softmax over axis {axis} of {v.axes} is not over the feature vector"
            )
        return self._activation(node, v, "softmax")

    # ------------------------------------------------------------------ ORT dynamic quantization
    def _op_DynamicQuantizeLinear(self, node, vals, at):
        v = vals[0]
        if not isinstance(v, Data) or v.quant is not None:
            raise CompileError(f"{_where(node)}: DynamicQuantizeLinear of an unsupported value")
        q = Data(v.axes, v.perm, v.bad, v.pos, v.last, v.step, v.tokens, v.why, "q")
        return [q, QScale(), QZero()]

    def _op_MatMulInteger(self, node, vals, at):
        a, b = vals[0], vals[1]
        azp = vals[2] if len(vals) > 2 else None
        bzp = vals[3] if len(vals) > 3 else None
        if not (isinstance(a, Data) and a.quant == "q" and isinstance(b, Const)):
            raise CompileError(f"{_where(node)}: only DynamicQuantizeLinear(data) x constant is supported")
        if azp is not None and not isinstance(azp, QZero):
            raise CompileError(f"{_where(node)}: the data zero point must come from DynamicQuantizeLinear")
        wq = np.asarray(b.arr)
        zp = np.zeros(1) if bzp is None else np.asarray(bzp.arr, np.float64)
        if wq.ndim != 2:
            raise CompileError(f"{_where(node)}: the quantized weight must be a matrix")
        w = (
            wq.astype(np.float64) - zp.reshape(1, -1)
            if zp.size > 1
            else wq.astype(np.float64) - zp.ravel()[0]
        )
        v = Data(a.axes, a.perm, a.bad, a.pos, a.last, a.step, a.tokens, a.why, None)
        n = self._whole_features(v, node)
        if w.shape[0] != n:
            raise CompileError(f"{_where(node)}: weight {w.shape} does not match {n} features")
        # the source's int8 values stay exact only if the input features reach the layer unpermuted
        ident = _is_identity(v.perm, self._tip_size()) and not v.bad.any()
        out = self._dense(node, v, w.T, None, fold_affine=False)
        self._pending_q = (self.layers[-1], wq, zp, ident)
        out.quant = "int"
        return out

    def _apply_qscale(self, node, v: Data, s: QScale) -> Data:
        layer, wq, zp, ident = self._pending_q
        if layer is not self.layers[-1] or v.pos != len(self.layers):
            raise CompileError(f"{_where(node)}: the quantized MatMul result is not the last layer")
        coef = np.asarray(s.coef, np.float64).reshape(-1)
        o = layer["output_size"]
        if coef.size not in (1, o):
            raise CompileError(f"{_where(node)}: weight scale of size {coef.size} for {o} outputs")
        coef = np.broadcast_to(coef, (o,))
        wn = layer["tensors"]["W"]
        self.tensors[wn] = (self.tensors[wn].astype(np.float64) * coef[:, None]).astype(np.float32)
        if wq.dtype == np.int8 and np.all(zp == 0) and wq.min() >= -127 and ident:
            q = np.ascontiguousarray(wq.T)
            if q.shape == self.tensors[wn].shape:
                self.exact_int8[wn] = (q, coef.astype(np.float32))
        return Data(v.axes, v.perm, v.bad, v.pos, v.last, v.step)

    def _op_DynamicQuantizeMatMul(self, node, vals, at):
        a, b, bs = vals[0], vals[1], vals[2]
        bzp = vals[3] if len(vals) > 3 else None
        bias = vals[4] if len(vals) > 4 else None
        if not (isinstance(a, Data) and isinstance(b, Const) and isinstance(bs, Const)):
            raise CompileError(
                f"{_where(node)}: only DynamicQuantizeMatMul(data, constant, ...) is supported"
            )
        wq = np.asarray(b.arr)
        zp = np.zeros(1) if bzp is None else np.asarray(bzp.arr, np.float64).reshape(-1)
        sc = np.asarray(bs.arr, np.float64).reshape(-1)
        w = (wq.astype(np.float64) - zp.reshape(1, -1)) * sc.reshape(1, -1)
        n = self._whole_features(a, node)
        if w.shape[0] != n:
            raise CompileError(f"{_where(node)}: weight {w.shape} does not match {n} features")
        bv = None if bias is None else np.asarray(bias.arr, np.float64)
        ident = _is_identity(a.perm, self._tip_size()) and not a.bad.any()
        out = self._dense(node, a, w.T, bv, fold_affine=False)
        if wq.dtype == np.int8 and np.all(zp == 0) and wq.min() >= -127 and ident:
            self.exact_int8[self.layers[-1]["tensors"]["W"]] = (
                np.ascontiguousarray(wq.T),
                np.broadcast_to(sc, (w.shape[1],)).astype(np.float32),
            )
        return out

    # ------------------------------------------------------------------ recurrent
    def _op_LSTM(self, node, vals, at):
        return self._recurrent(node, vals, at, "LSTM")

    def _op_GRU(self, node, vals, at):
        return self._recurrent(node, vals, at, "GRU")

    def _op_RNN(self, node, vals, at):
        return self._recurrent(node, vals, at, "RNN")

    def _op_DynamicQuantizeLSTM(self, node, vals, at):
        if node.domain != "com.microsoft":
            raise CompileError(f"unsupported op {node.op_type!r} ({_where(node)})")
        vals = list(vals) + [None] * (12 - len(vals))
        exact = {}
        deq = []
        for slot, (wi, si, zi) in enumerate(((1, 8, 9), (2, 10, 11))):
            w, s, z = vals[wi], vals[si], vals[zi]
            if not all(isinstance(x, Const) for x in (w, s)) or (z is not None and not isinstance(z, Const)):
                raise CompileError(
                    f"{_where(node)}: quantized weights, scales and zero points must be constant"
                )
            wq = np.asarray(w.arr)  # [D, in, 4H]
            d = wq.shape[0]
            sc = np.asarray(s.arr, np.float64).reshape(d, -1)  # [D, 1] or [D, 4H]
            zp = np.zeros((d, 1)) if z is None else np.asarray(z.arr, np.float64).reshape(d, -1)
            wf = (wq.astype(np.float64) - zp[:, None, :]) * sc[:, None, :]
            deq.append(Const(np.transpose(wf, (0, 2, 1)).astype(np.float32)))
            if wq.dtype == np.int8 and np.all(zp == 0) and wq.min() >= -127:
                rows = wq.shape[2]
                exact[("W", "R")[slot]] = (
                    np.ascontiguousarray(np.transpose(wq, (0, 2, 1))),
                    np.broadcast_to(sc, (d, rows)).astype(np.float32).copy(),
                )
        vals = [vals[0], deq[0], deq[1]] + vals[3:8]
        return self._recurrent(node, vals, at, "LSTM", exact_int8=exact)

    def _recurrent(self, node, vals, at, op: str, exact_int8: dict | None = None):
        allowed = {
            "hidden_size",
            "direction",
            "layout",
            "activations",
            "activation_alpha",
            "activation_beta",
            "clip",
        }
        allowed |= {"input_forget"} if op == "LSTM" else {"linear_before_reset"} if op == "GRU" else set()
        for k in at:
            if k not in allowed:
                raise CompileError(f"{_where(node)}: unknown attribute {k!r}")
        vals = list(vals) + [None] * (8 - len(vals))
        x, wv, rv, bv, lens, h0, c0, pv = vals[:8]
        if op != "LSTM" and (c0 is not None or pv is not None):
            raise CompileError(f"{_where(node)}: too many inputs for {op}")
        if not isinstance(x, Data):
            raise CompileError(f"{_where(node)}: input X does not depend on the model input")
        for nm, v in (("W", wv), ("R", rv), ("B", bv), ("P", pv)):
            if v is not None and not isinstance(v, Const):
                raise CompileError(
                    f"{_where(node)}: {nm} must be constant (an initializer or constant subgraph)"
                )
        self._check_tip(x, node)
        if x.tokens:
            raise CompileError(f"{_where(node)}: recurrent layer on raw token ids")
        if x.last:
            raise CompileError(f"{_where(node)}: recurrent layer after the last time step was selected")
        direction = at.get("direction", "forward")
        if direction not in ("forward", "reverse", "bidirectional"):
            raise CompileError(f"{_where(node)}: direction {direction!r}")
        nd = 2 if direction == "bidirectional" else 1
        layout = at.get("layout", 0)
        if layout not in (0, 1):
            raise CompileError(f"{_where(node)}: layout {layout}")
        g = _GATES[op]
        w = np.asarray(wv.arr, np.float64)
        r = np.asarray(rv.arr, np.float64)
        if w.ndim != 3 or r.ndim != 3 or w.shape[0] != nd or r.shape[0] != nd:
            raise CompileError(
                f"{_where(node)}: W {w.shape} / R {r.shape} do not match direction {direction!r}"
            )
        h = at.get("hidden_size", r.shape[-1])
        if w.shape[1] != g * h or r.shape[1:] != (g * h, h):
            raise CompileError(f"{_where(node)}: W {w.shape} / R {r.shape} do not match hidden_size {h}")
        # X axes
        if len(x.axes) != 3:
            raise CompileError(f"{_where(node)}: X must be rank 3, got axes {x.axes}")
        t_ax, b_ax = (x.axes[0], x.axes[1]) if layout == 0 else (x.axes[1], x.axes[0])
        step = False
        if isinstance(t_ax, Sym):
            if t_ax.role == "B":
                raise CompileError(f"{_where(node)}: the time axis of X is the model's batch axis")
            t_ax.role = "T"
        elif t_ax == 1:
            step = True
        else:
            raise CompileError(f"{_where(node)}: the time axis of X has static size {t_ax}")
        if isinstance(b_ax, Sym):
            if b_ax.role == "T":
                raise CompileError(f"{_where(node)}: the batch axis of X is the model's time axis")
            b_ax.role = "B"
        elif b_ax != 1:
            raise CompileError(f"{_where(node)}: the batch axis of X has static size {b_ax}")
        if isinstance(x.axes[2], Sym):
            raise CompileError(f"{_where(node)}: the feature axis of X is symbolic")
        n_in = x.axes[2]
        if w.shape[2] != n_in:
            raise CompileError(f"{_where(node)}: W expects {w.shape[2]} inputs, X has {n_in}")
        if step and (direction != "forward" or (h0 is not None and not isinstance(h0, State))):
            raise CompileError(
                f"{_where(node)}: a single-step recurrent node needs a forward direction "
                "and its state as a graph input"
            )
        x_ident = _is_identity(x.perm, self._tip_size()) and not x.bad.any()
        w = self._fold_cols(x, w, node)
        aff = None if exact_int8 else self._pop_affine(x)
        if aff is not None:  # W (x*sc + sh) = (W diag(sc)) x + W sh, added to the input bias Wb
            sc, sh = aff
            extra_b = np.einsum("dgi,i->dg", w, sh)
            w = w * sc[None, None, :]
            add = np.concatenate([extra_b, np.zeros_like(extra_b)], axis=1)
            if bv is not None and np.shape(bv.arr) != add.shape:
                raise CompileError(f"{_where(node)}: B has shape {np.shape(bv.arr)}, expected {add.shape}")
            bv = Const(add + (0.0 if bv is None else np.asarray(bv.arr, np.float64)))
        # sequence_lens
        if lens is not None:
            self._check_lens(node, lens, t_ax)
        tensors: dict[str, np.ndarray] = {"W": w, "R": r}
        if bv is not None:
            b = np.asarray(bv.arr, np.float64)
            if b.shape != (nd, 2 * g * h):
                raise CompileError(f"{_where(node)}: B has shape {b.shape}, expected {(nd, 2 * g * h)}")
            if np.any(b != 0):
                tensors["B"] = b
        if pv is not None:
            p = np.asarray(pv.arr, np.float64)
            if p.shape != (nd, 3 * h):
                raise CompileError(f"{_where(node)}: P has shape {p.shape}, expected {(nd, 3 * h)}")
            if np.any(p != 0):
                tensors["P"] = p
        for nm, sv in (("initial_h", h0), ("initial_c", c0)):
            arr = self._initial_state(node, nm, sv, nd, h, layout)
            if arr is not None:
                tensors[nm] = arr
            if isinstance(sv, State):
                ix = None
                if sv.ix is not None and len(sv.ix.dims) == 3:
                    a = np.asarray(sv.ix.arr)
                    a = np.transpose(a, (1, 0, 2)) if layout == 1 else a
                    if a.shape == (nd, 1, h):
                        ix = a[:, 0, :]
                self.state_feeds.append((sv.src, len(self.layers), nm[-1], ix))
        # activations
        acts_in = at.get("activations")
        n_act = len(_CELL_DEFAULT_ACTS[op])
        if acts_in is None:
            acts = _CELL_DEFAULT_ACTS[op] * nd
        else:
            if len(acts_in) != n_act * nd:
                raise CompileError(f"{_where(node)}: {len(acts_in)} activations, expected {n_act * nd}")
            acts = []
            for a in acts_in:
                key = a.lower()
                if key not in _ACT_NAMES:
                    raise CompileError(f"{_where(node)}: unknown activation {a!r}")
                acts.append(_ACT_NAMES[key])
        alphas_in = list(at.get("activation_alpha", []))
        betas_in = list(at.get("activation_beta", []))
        alphas, betas = [], []
        for a in acts:
            na, nb = _ACT_PARAMS.get(a, (False, False))
            da, db = ACTIVATION_DEFAULTS.get(a, (0.0, 0.0))
            alphas.append(float(alphas_in.pop(0)) if na and alphas_in else da)
            betas.append(float(betas_in.pop(0)) if nb and betas_in else db)
        kind = op.lower()
        layer = {
            "kind": kind,
            "name": self._name(kind),
            "input_size": int(w.shape[2]),
            "hidden_size": int(h),
            "direction": direction,
            "activations": acts,
            "activation_alpha": alphas,
            "activation_beta": betas,
            "clip": float(at["clip"]) if "clip" in at else None,
        }
        if op == "LSTM":
            layer["input_forget"] = bool(at.get("input_forget", 0))
        if op == "GRU":
            layer["linear_before_reset"] = int(at.get("linear_before_reset", 0))
        layer["output_size"] = nd * h
        self._add_layer(layer, tensors)
        if exact_int8:
            for role, qs in exact_int8.items():
                self.exact_int8[layer["tensors"][role]] = qs if (role == "R" or x_ident) else None
            self.exact_int8 = {k: v for k, v in self.exact_int8.items() if v is not None}
        pos = len(self.layers)
        f = nd * h
        ident = np.arange(f)
        t_axis = 1 if step else t_ax
        y_axes = [t_axis, nd, b_ax, h] if layout == 0 else [b_ax, t_axis, nd, h]
        y = Data(y_axes, ident, np.zeros(f, bool), pos, False, step)
        bad_h = np.zeros(f, bool)
        if not step and direction in ("reverse", "bidirectional"):
            bad_h[(nd - 1) * h :] = True
        yh_axes = [nd, b_ax, h] if layout == 0 else [b_ax, nd, h]
        yh = Data(
            yh_axes,
            ident,
            bad_h,
            pos,
            True,
            step,
            why=f"Y_h of the reverse direction of {_where(node)} "
            "(its final state, which the plan cannot output)",
        )
        if step:
            li = len(self.layers) - 1
            for k, which in ((1, "h"), (2, "c")):
                if len(node.output) > k and node.output[k]:
                    codes = _state_code(li, which, np.arange(f)).reshape(nd, 1, h)
                    if layout == 1:
                        codes = np.transpose(codes, (1, 0, 2))
                    dims = [nd, b_ax, h] if layout == 0 else [b_ax, nd, h]
                    self.state_codes[node.output[k]] = Bcast(codes, dims)
        yc = Data(
            yh_axes,
            ident,
            np.ones(f, bool),
            pos,
            True,
            step,
            why=f"Y_c (the cell state) of {_where(node)}, which the plan cannot output",
        )
        if isinstance(t_ax, Sym) or step:
            pass
        return [y, yh, yc][: len(node.output)]

    def _check_lens(self, node, lens, t_ax) -> None:
        vals = None
        if isinstance(lens, Const):
            vals = np.asarray(lens.arr).ravel()
            if vals.size == 0:
                return
            if isinstance(t_ax, Sym) and t_ax.static is not None and np.all(vals == t_ax.static):
                self.notes.append(
                    f"{_where(node)}: sequence_lens = {t_ax.static} (the static sequence length) accepted; "
                    "the compiled model runs whole sequences"
                )
                return
        elif isinstance(lens, (Bcast, ShapeVal)):
            arr = lens.arr
            if all(x is t_ax for x in np.asarray(arr, dtype=object).ravel()):
                return
        raise CompileError(
            f"{_where(node)}: sequence_lens must be absent or equal to the full sequence length "
            "(the compiled model always runs whole sequences)"
        )

    def _initial_state(self, node, nm: str, sv, nd: int, h: int, layout: int) -> np.ndarray | None:
        if sv is None or isinstance(sv, State):
            return None
        if isinstance(sv, Bcast):
            arr = np.asarray(sv.arr, np.float64)
        elif isinstance(sv, Const):
            arr = np.asarray(sv.arr, np.float64)
        else:
            raise CompileError(f"{_where(node)}: {nm} must be a constant, zeros, or a state graph input")
        if arr.ndim != 3:
            raise CompileError(f"{_where(node)}: {nm} must be rank 3, got shape {arr.shape}")
        if layout == 1:
            arr = np.transpose(arr, (1, 0, 2))
        if arr.shape[0] != nd or arr.shape[2] != h:
            raise CompileError(f"{_where(node)}: {nm} has shape {arr.shape}, expected [{nd}, batch, {h}]")
        if np.any(arr != arr[:, :1, :]):
            raise CompileError(
                f"{_where(node)}: {nm} differs between batch rows; "
                "the plan has one initial state for every stream"
            )
        out = arr[:, 0, :]
        return out if np.any(out != 0) else None

    # ------------------------------------------------------------------ finish
    def _finish(self, out: Data) -> None:
        class _N:
            op_type = "output"
            name = self.output

        out = self._materialize(out, _N)
        if out.quant is not None:
            raise CompileError("the output is an unscaled quantized matmul result")
        feats = [d for d in out.axes if not isinstance(d, Sym)]
        n_out = int(np.prod(feats, dtype=np.int64)) if feats else 1
        if not self.layers:
            raise CompileError("the graph has no layers between its input and output")
        if n_out != self._tip_size():
            raise CompileError(f"internal: output features {n_out} != plan size {self._tip_size()}")
        has_t = any(isinstance(d, Sym) and d.role == "T" for d in out.axes)
        self.sequence = "many_to_many" if (has_t or not out.last) else "many_to_one"
        self.out_value = out

    def axes_desc(self, axes: list) -> list:
        out = []
        for d in axes:
            if isinstance(d, Sym):
                out.append(d.role or "N")
            else:
                out.append(int(d))
        return out


# --------------------------------------------------------------------------------------------- public


def compile_graph(model, output: str | None = None, source: str = "model.onnx", sha256: str = "") -> dict:
    """Compile an in-memory ``onnx.ModelProto`` (external data already loaded) into ``(plan, tensors)``.

    Returns a dict with ``plan``, ``tensors`` (float32 arrays), ``exact_int8`` (tensor name ->
    (int8 q, float32 per-row scale) for weights that were already symmetric int8 in the source),
    ``io`` (input/output names and axis roles: "T" time, "B" batch, "N" independent rows, ints = feature
    axes), ``ignored_outputs``, ``state_inputs`` and ``notes``.
    """
    from .. import __version__

    c = _Compiler(model, output)
    c.run()
    plan = {
        "format": "ernn",
        "format_version": 1,
        "producer": {"name": "edgernn", "version": __version__, "source": source, "source_sha256": sha256},
        "input": {"kind": c.input_kind, "size": c.in_size},
        "output": {"size": c._tip_size(), "sequence": c.sequence, "labels": None},
        "quantization": "none",
        "layers": c.layers,
    }
    if c.input_kind == "tokens":
        plan["input"]["vocab_size"] = c.vocab_size
    in_axes = c.axes_desc(c.input_syms) + ([c.in_size] if c.input_kind == "features" else [])
    io = {
        "input": c.input_name,
        "input_axes": in_axes,
        "output": c.output,
        "output_axes": c.axes_desc(c.out_value.axes),
    }
    plan["source_io"] = io
    return {
        "plan": plan,
        "tensors": c.tensors,
        "exact_int8": c.exact_int8,
        "io": io,
        "ignored_outputs": c.ignored_outputs,
        "state_inputs": c.state_inputs,
        "notes": c.notes,
    }


def compile_onnx(
    onnx_path: str | os.PathLike,
    ernn_path: str | os.PathLike,
    quantize: str | None = None,
    *,
    output: str | None = None,
    labels: list[str] | None = None,
    calibration: np.ndarray | None = None,
    calibration_labels: np.ndarray | None = None,
) -> dict:
    """Compile the ONNX model at ``onnx_path`` into the ``.ernn`` artifact ``ernn_path``.

    ``quantize``: None (float32 weights), ``"int8"`` (int8 matrices with per-output-row symmetric scales)
    or ``"fp16"`` (float16 storage). ``output`` picks the graph output to compile (default: the first).
    ``labels``: optional class names (one per output). ``calibration``: optional representative input
    data, (T, I) or (B, T, I) float in the model's input units; with ``"int8"`` it calibrates the rounding
    (error-compensated on that data, see ``export/calibrate.py``; without it: nearest rounding) and it is
    the data of the quantization report (without it a deterministic random input is used);
    ``calibration_labels``: class ids (many_to_one) or regression targets for accuracy/RMSE change.

    Returns a dict: ``path``, ``plan`` (as written), ``io`` (axis roles of the ONNX input/output: "T",
    "B", "N" or feature sizes), ``ignored_outputs``, ``state_inputs``, ``notes``, ``bytes`` and, when
    quantizing, ``quantization_report``. Raises :class:`CompileError` for anything it cannot compile
    exactly, :class:`~edgernn.ArtifactError` if the result fails validation.
    """
    from .. import artifact

    if quantize not in (None, "none", "int8", "fp16"):
        raise CompileError(f"quantize must be None, 'int8' or 'fp16', got {quantize!r}")
    onnx_path = os.fspath(onnx_path)
    if not os.path.isfile(onnx_path):
        raise CompileError(f"no such file: {onnx_path!r}")
    with open(onnx_path, "rb") as f:
        sha = hashlib.sha256(f.read()).hexdigest()
    model = _load_model(onnx_path)
    res = compile_graph(model, output=output, source=os.path.basename(onnx_path), sha256=sha)
    plan, tensors = res["plan"], res["tensors"]
    if labels is not None:
        labels = [str(s) for s in labels]
        if len(labels) != plan["output"]["size"]:
            raise CompileError(f"{len(labels)} labels for {plan['output']['size']} outputs")
        plan["output"]["labels"] = labels
    report = None
    if quantize in ("int8", "fp16"):
        from .quantize import quantization_report, quantize_plan

        qplan, qtensors = quantize_plan(
            plan, tensors, quantize, exact_int8=res["exact_int8"], calibration=calibration
        )
        report = quantization_report(
            artifact.validate_plan(plan), tensors, qplan, qtensors, calibration, calibration_labels
        )
        qplan["quantization_report"] = report
        plan, tensors = qplan, qtensors
    written = artifact.write(ernn_path, plan, tensors)
    if report is not None:
        # the report is part of the file: settle its own "bytes" figure (converges in 1-2 rounds)
        # (the claimed size only grows; a growing pad field reaches it: at most a few rounds)
        for _ in range(64):
            size = os.path.getsize(ernn_path)
            if report["bytes"] == size:
                break
            if size > report["bytes"]:
                report["bytes"] = size
                report["size_ratio"] = round(size / report["float32_bytes"], 4)
            else:
                report["pad"] = report.get("pad", "") + " "
            plan["quantization_report"] = report
            written = artifact.write(ernn_path, plan, tensors)
        else:  # pragma: no cover - would need a pathological header
            raise CompileError("could not settle the size figure of the quantization report")
        report.pop("pad", None)
    out = dict(res)
    out.pop("tensors")
    out.pop("exact_int8")
    out.update({"path": os.fspath(ernn_path), "plan": written, "bytes": os.path.getsize(ernn_path)})
    if report is not None:
        out["quantization_report"] = report
    return out
