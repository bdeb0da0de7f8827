"""Build ONNX graphs from an artifact plan (docs/ARTIFACT.md) with ``onnx.helper``.

Two graphs per plan:

* :func:`sequence_graph` — ``input`` ``(batch, time, I)`` float32 (or ``(batch, time)`` int64 token ids)
  -> ``output`` ``(batch, time, O)`` (many-to-many) or ``(batch, O)`` (many-to-one, the last step).
* :func:`step_graph` — one time step: ``x`` ``(batch, I)`` (or ``(batch,)`` int64 ids) plus every
  layer's state ``state.<layer>.<var>`` ``(batch, n)`` -> ``y`` ``(batch, O)`` plus the new states
  ``state_out.<layer>.<var>``. Every state starts at zeros. A many-to-one model's ``y`` is the
  prediction for the sequence seen so far. Plans with a reverse/bidirectional layer have no step graph.

Two flavors of the recurrent cells:

* ``"native"`` — ONNX ``RNN``/``LSTM``/``GRU`` operators (a one-step sequence in the step graph);
* ``"matmul"`` — the same cell equations written with ``MatMul``/``Add``/activations, the sequence
  version inside a ``Scan`` over time. ONNX Runtime's dynamic quantizer quantizes these ``MatMul``s
  (``EnableSubgraph``), where it leaves ``GRU``/``RNN`` nodes in float.

ESN reservoirs and attention pooling always use the matmul form (a ``Scan`` in the sequence graph).
Attention keeps a running maximum ``m``, sum ``l`` and weighted sum ``acc`` of ``exp(s_τ - m)``, so
``y_t = acc / l`` equals the full softmax pooling over steps ``1..t`` exactly, at every step.
"""

from __future__ import annotations

import itertools

import numpy as np

OPSET = 17
_ONNX_ACT = {
    "tanh": "Tanh",
    "relu": "Relu",
    "sigmoid": "Sigmoid",
    "linear": "Affine",
    "leaky_relu": "LeakyRelu",
    "affine": "Affine",
    "thresholded_relu": "ThresholdedRelu",
    "scaled_tanh": "ScaledTanh",
    "hard_sigmoid": "HardSigmoid",
    "elu": "Elu",
    "softsign": "Softsign",
    "softplus": "Softplus",
}


class _Graph:
    _ids = itertools.count()

    def __init__(self, outer: _Graph | None = None):
        self.nodes: list = []
        self.inits: list = []
        self.root = outer.root if outer else self
        self._consts: dict = {} if outer is None else outer.root._consts

    def name(self, hint: str) -> str:
        return f"{hint}__{next(self._ids)}"

    def const(self, arr, hint: str = "c") -> str:
        from onnx import numpy_helper

        arr = np.asarray(arr)
        key = (arr.dtype.str, arr.shape, arr.tobytes()) if arr.size <= 8 else None
        if key is not None and key in self.root._consts:
            return self.root._consts[key]
        n = self.name(hint)
        self.root.inits.append(numpy_helper.from_array(arr, n))
        if key is not None:
            self.root._consts[key] = n
        return n

    def op(self, op_type: str, inputs: list[str], n_out: int = 1, **attrs):
        from onnx import helper

        outs = [self.name(op_type.lower()) for _ in range(n_out)]
        self.nodes.append(helper.make_node(op_type, inputs, outs, **attrs))
        return outs[0] if n_out == 1 else outs


def _act(g: _Graph, x: str, name: str, alpha=None, beta=None) -> str:
    if name == "linear":
        return x
    if name == "softmax":
        return g.op("Softmax", [x], axis=-1)
    if name in ("tanh", "relu", "sigmoid", "softsign", "softplus"):
        return g.op(_ONNX_ACT[name], [x])
    if name == "leaky_relu":
        return g.op("LeakyRelu", [x], alpha=float(alpha))
    if name == "elu":
        return g.op("Elu", [x], alpha=float(alpha))
    if name == "hard_sigmoid":
        return g.op("HardSigmoid", [x], alpha=float(alpha), beta=float(beta))
    if name == "thresholded_relu":
        return g.op("ThresholdedRelu", [x], alpha=float(alpha))
    if name == "affine":
        return g.op("Add", [g.op("Mul", [x, g.const(np.float32(alpha))]), g.const(np.float32(beta))])
    if name == "scaled_tanh":
        t = g.op("Tanh", [g.op("Mul", [x, g.const(np.float32(beta))])])
        return g.op("Mul", [t, g.const(np.float32(alpha))])
    raise NotImplementedError(f"activation {name!r}")


def _f32(t: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32))


def _dequant(layer: dict, tensors: dict, role: str) -> np.ndarray:
    """A role's float32 value (int8 roles are dequantized: the ONNX graphs are always float)."""
    name = layer["tensors"][role]
    w = tensors[name]
    if w.dtype == np.int8:
        s = tensors[layer["tensors"][role + "_scale"]]
        if role == "W_data":
            ptr = tensors[layer["tensors"]["W_indptr"]].astype(np.int64)
            s = np.repeat(s, np.diff(ptr))
            return w.astype(np.float32) * s
        return w.astype(np.float32) * s[..., None]
    return _f32(w)


def _esn_dense_w(layer: dict, tensors: dict) -> np.ndarray:
    n = layer["reservoir_size"]
    if not layer.get("sparse"):
        return _dequant(layer, tensors, "W")
    data = _dequant(layer, tensors, "W_data")
    ind = tensors[layer["tensors"]["W_indices"]].astype(np.int64)
    ptr = tensors[layer["tensors"]["W_indptr"]].astype(np.int64)
    w = np.zeros((n, n), np.float32)
    rows = np.repeat(np.arange(n), np.diff(ptr))
    w[rows, ind] = data
    return w


# ------------------------------------------------------------------------------------ cell equations


def _check_matmul_cell(layer: dict) -> None:
    k = layer["kind"]
    if layer.get("clip") is not None:
        raise NotImplementedError(f"{layer['name']}: cell clip is not supported in the matmul form")
    acts = layer["activations"]
    if k == "rnn" and any(a not in ("tanh", "relu") for a in acts):
        raise NotImplementedError(f"{layer['name']}: activations {acts}")
    if k == "lstm" and (
        acts[:3] != ["sigmoid", "tanh", "tanh"] or layer.get("input_forget") or "P" in layer["tensors"]
    ):
        raise NotImplementedError(f"{layer['name']}: only the default LSTM without peepholes is supported")
    if k == "gru" and (acts[:2] != ["sigmoid", "tanh"] or layer.get("linear_before_reset") != 1):
        raise NotImplementedError(f"{layer['name']}: only GRU with linear_before_reset=1 is supported")
    if "initial_h" in layer["tensors"] or "initial_c" in layer["tensors"]:
        raise NotImplementedError(f"{layer['name']}: initial states are not supported")


def _cell(g: _Graph, layer: dict, d: int, xp: str, h: str, c: str | None, consts: dict):
    """One recurrent step: ``xp`` = x W^T + bias (precomputed), returns (h_new, c_new)."""
    k, H = layer["kind"], layer["hidden_size"]
    hr = g.op("MatMul", [h, consts["RT"]])
    if k == "rnn":
        pre = g.op("Add", [xp, hr])
        return _act(g, pre, layer["activations"][d]), None
    if k == "lstm":
        gates = g.op("Add", [xp, hr])
        i, o, f, cc = g.op("Split", [gates, g.const(np.array([H] * 4, np.int64))], n_out=4, axis=-1)
        i, o, f = g.op("Sigmoid", [i]), g.op("Sigmoid", [o]), g.op("Sigmoid", [f])
        cc = g.op("Tanh", [cc])
        c_new = g.op("Add", [g.op("Mul", [f, c]), g.op("Mul", [i, cc])])
        return g.op("Mul", [o, g.op("Tanh", [c_new])]), c_new
    # gru, linear_before_reset = 1
    hr = g.op("Add", [hr, consts["Rb"]])
    split = g.const(np.array([H] * 3, np.int64))
    xz, xr, xh = g.op("Split", [xp, split], n_out=3, axis=-1)
    hz, hr_, hh = g.op("Split", [hr, split], n_out=3, axis=-1)
    z = g.op("Sigmoid", [g.op("Add", [xz, hz])])
    r = g.op("Sigmoid", [g.op("Add", [xr, hr_])])
    n = g.op("Tanh", [g.op("Add", [xh, g.op("Mul", [r, hh])])])
    # h' = (1 - z) * n + z * h = n + z * (h - n)
    return g.op("Add", [n, g.op("Mul", [z, g.op("Sub", [h, n])])]), None


def _cell_consts(g: _Graph, layer: dict, tensors: dict, d: int) -> dict:
    k, H = layer["kind"], layer["hidden_size"]
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[k]
    W = _dequant(layer, tensors, "W")[d]
    R = _dequant(layer, tensors, "R")[d]
    bname = layer["tensors"].get("B")
    B = _f32(tensors[bname])[d] if bname else np.zeros(2 * gates * H, np.float32)
    wb, rb = B[: gates * H], B[gates * H :]
    c = {
        "WT": g.const(_f32(W.T), f"{layer['name']}.WT{d}"),
        "RT": g.const(_f32(R.T), f"{layer['name']}.RT{d}"),
    }
    if k == "gru":
        c["xb"] = g.const(_f32(wb), f"{layer['name']}.Wb{d}")
        c["Rb"] = g.const(_f32(rb), f"{layer['name']}.Rb{d}")
    else:
        c["xb"] = g.const(_f32(wb + rb), f"{layer['name']}.b{d}")
    return c


def _attention_consts(g: _Graph, layer: dict, tensors: dict) -> dict:
    return {
        "WT": g.const(_f32(_dequant(layer, tensors, "W").T), f"{layer['name']}.WT"),
        "b": g.const(_f32(tensors[layer["tensors"]["b"]]), f"{layer['name']}.b"),
        "v": g.const(_f32(tensors[layer["tensors"]["v"]])[:, None], f"{layer['name']}.v"),
    }


def _attention_step(g: _Graph, h: str, m: str, l: str, acc: str, c: dict):
    s = g.op("MatMul", [g.op("Tanh", [g.op("Add", [g.op("MatMul", [h, c["WT"]]), c["b"]])]), c["v"]])  # (B,1)
    zero = g.const(np.float32(0.0))
    started = g.op("Greater", [l, zero])
    m_new = g.op("Where", [started, g.op("Max", [m, s]), s])
    e_old = g.op("Where", [started, g.op("Exp", [g.op("Sub", [m, m_new])]), zero])
    e_new = g.op("Exp", [g.op("Sub", [s, m_new])])
    l_new = g.op("Add", [g.op("Mul", [l, e_old]), e_new])
    acc_new = g.op("Add", [g.op("Mul", [acc, e_old]), g.op("Mul", [h, e_new])])
    return g.op("Div", [acc_new, l_new]), m_new, l_new, acc_new


def _esn_consts(g: _Graph, layer: dict, tensors: dict) -> dict:
    bname = layer["tensors"].get("b")
    n = layer["reservoir_size"]
    b = _f32(tensors[bname]) if bname else np.zeros(n, np.float32)
    a = float(layer["leak_rate"])
    return {
        "WinT": g.const(_f32(_dequant(layer, tensors, "W_in").T), f"{layer['name']}.W_inT"),
        "WT": g.const(_f32(_esn_dense_w(layer, tensors).T), f"{layer['name']}.WT"),
        "b": g.const(b, f"{layer['name']}.b"),
        "a": g.const(np.float32(a)),
        "1-a": g.const(np.float32(1.0 - a)),
    }


def _esn_step(g: _Graph, drive: str, x: str, c: dict) -> str:
    pre = g.op("Add", [drive, g.op("MatMul", [x, c["WT"]])])
    return g.op("Add", [g.op("Mul", [x, c["1-a"]]), g.op("Mul", [g.op("Tanh", [pre]), c["a"]])])


# ------------------------------------------------------------------------------------ pointwise layers


def _pointwise(g: _Graph, layer: dict, tensors: dict, x: str) -> str:
    k = layer["kind"]
    t = layer["tensors"]
    if k == "normalize":
        return g.op(
            "Div", [g.op("Sub", [x, g.const(_f32(tensors[t["mean"]]))]), g.const(_f32(tensors[t["std"]]))]
        )
    if k == "affine":
        return g.op(
            "Add", [g.op("Mul", [x, g.const(_f32(tensors[t["scale"]]))]), g.const(_f32(tensors[t["shift"]]))]
        )
    if k == "activation":
        return _act(g, x, layer["activation"], layer.get("alpha"), layer.get("beta"))
    if k == "dense":
        y = g.op("MatMul", [x, g.const(_f32(_dequant(layer, tensors, "W").T), f"{layer['name']}.WT")])
        if "b" in t:
            y = g.op("Add", [y, g.const(_f32(tensors[t["b"]]), f"{layer['name']}.b")])
        return _act(g, y, layer["activation"], layer.get("alpha"), layer.get("beta"))
    if k == "embedding":
        return g.op("Gather", [g.const(_f32(_dequant(layer, tensors, "table")), f"{layer['name']}.table"), x])
    if k == "onehot":
        depth = g.const(np.array([layer["vocab_size"]], np.int64))
        return g.op("OneHot", [x, depth, g.const(np.array([0.0, 1.0], np.float32))], axis=-1)
    raise NotImplementedError(k)


def _zeros(g: _Graph, batch: str, n: int) -> str:
    """zeros (batch, n) float32; ``batch`` is a 1-element int64 tensor."""
    shape = g.op("Concat", [batch, g.const(np.array([n], np.int64))], axis=0)
    from onnx import TensorProto, helper

    return g.op("ConstantOfShape", [shape], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))


def _state_vars(layer: dict) -> list[tuple[str, int]]:
    k = layer["kind"]
    if k in ("rnn", "gru"):
        return [("h", layer["hidden_size"])]
    if k == "lstm":
        return [("h", layer["hidden_size"]), ("c", layer["hidden_size"])]
    if k == "esn":
        return [("x", layer["reservoir_size"])]
    if k == "attention":
        return [("m", 1), ("l", 1), ("acc", layer["input_size"])]
    return []


def state_spec(plan: dict) -> list[tuple[str, int]]:
    """The step graph's state inputs in order: (name, size); outputs are ``state_out.`` + the same suffix."""
    return [(f"state.{lay['name']}.{v}", n) for lay in plan["layers"] for v, n in _state_vars(lay)]


def _model(g: _Graph, inputs, outputs, name: str):
    import onnx
    from onnx import helper

    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgernn")
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def _native_recurrent(
    g: _Graph, layer: dict, tensors: dict, x: str, h0: str | None = None, c0: str | None = None
):
    """Native ONNX node on a time-major sequence x (T, B, I); returns (Y (T,B,D*H), Y_h, Y_c)."""
    k = layer["kind"]
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[k]
    t = layer["tensors"]
    W = g.const(_f32(_dequant(layer, tensors, "W")), f"{layer['name']}.W")
    R = g.const(_f32(_dequant(layer, tensors, "R")), f"{layer['name']}.R")
    ins = [x, W, R, g.const(_f32(tensors[t["B"]]), f"{layer['name']}.B") if "B" in t else ""]
    ins += ["", h0 or ""]
    if k == "lstm":
        ins += [c0 or ""]
    while ins and ins[-1] == "":
        ins.pop()
    attrs = {
        "hidden_size": layer["hidden_size"],
        "direction": layer["direction"],
        "activations": [_ONNX_ACT[a] for a in layer["activations"]],
    }
    if any(a not in ("tanh", "relu", "sigmoid", "softsign", "softplus") for a in layer["activations"]):
        attrs["activation_alpha"] = [float(a) for a in layer["activation_alpha"]]
        attrs["activation_beta"] = [float(b) for b in layer["activation_beta"]]
    if layer.get("clip") is not None:
        attrs["clip"] = float(layer["clip"])
    if k == "gru":
        attrs["linear_before_reset"] = int(layer["linear_before_reset"])
    if k == "lstm" and layer.get("input_forget"):
        attrs["input_forget"] = 1
    if any(r in t for r in ("P", "initial_h", "initial_c")):
        raise NotImplementedError(f"{layer['name']}: peepholes/initial states")
    outs = g.op(op, ins, n_out=3 if k == "lstm" else 2, **attrs)
    y = outs[0]  # (T, D, B, H)
    y = g.op("Transpose", [y], perm=[0, 2, 1, 3])
    y = g.op("Reshape", [y, g.const(np.array([0, 0, -1], np.int64))])
    return y, outs[1], (outs[2] if k == "lstm" else None)


# ------------------------------------------------------------------------------------ sequence graph


def sequence_graph(plan: dict, tensors: dict, flavor: str = "native"):
    """The whole-sequence ONNX model of ``plan`` (see the module docstring); passes ``onnx.checker``."""
    from onnx import TensorProto, helper

    if flavor not in ("native", "matmul"):
        raise ValueError(f"flavor must be 'native' or 'matmul', got {flavor!r}")
    g = _Graph()
    tokens = plan["input"]["kind"] == "tokens"
    if tokens:
        inp = helper.make_tensor_value_info("input", TensorProto.INT64, ["batch", "time"])
        x = g.op("Transpose", ["input"], perm=[1, 0])
    else:
        inp = helper.make_tensor_value_info(
            "input", TensorProto.FLOAT, ["batch", "time", plan["input"]["size"]]
        )
        x = g.op("Transpose", ["input"], perm=[1, 0, 2])
    batch = g.op(
        "Slice", [g.op("Shape", [x]), g.const(np.array([1], np.int64)), g.const(np.array([2], np.int64))]
    )
    for layer in plan["layers"]:
        k = layer["kind"]
        if k in ("rnn", "lstm", "gru"):
            if flavor == "native":
                x = _native_recurrent(g, layer, tensors, x)[0]
                continue
            _check_matmul_cell(layer)
            H = layer["hidden_size"]
            outs = []
            dirs = ["forward", "reverse"] if layer["direction"] == "bidirectional" else [layer["direction"]]
            for d, direction in enumerate(dirs):
                c = _cell_consts(g, layer, tensors, d)
                xp = g.op("Add", [g.op("MatMul", [x, c["WT"]]), c["xb"]])  # (T, B, G*H)
                body = _Graph(g)
                names = ["h_in"] + (["c_in"] if k == "lstm" else []) + ["xp_t"]
                h_new, c_new = _cell(body, layer, d, "xp_t", "h_in", "c_in" if k == "lstm" else None, c)
                outs_b = [body.op("Identity", [h_new])] + (
                    [body.op("Identity", [c_new])] if k == "lstm" else []
                )
                outs_b.append(body.op("Identity", [h_new]))
                bgraph = helper.make_graph(
                    body.nodes,
                    g.name("body"),
                    [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in names],
                    [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs_b],
                )
                init = [_zeros(g, batch, H)] + ([_zeros(g, batch, H)] if k == "lstm" else [])
                rev = int(direction == "reverse")
                res = g.op(
                    "Scan",
                    init + [xp],
                    n_out=len(outs_b),
                    body=bgraph,
                    num_scan_inputs=1,
                    scan_input_directions=[rev],
                    scan_output_directions=[rev],
                )
                outs.append(res[-1])
            x = outs[0] if len(outs) == 1 else g.op("Concat", outs, axis=-1)
        elif k == "esn":
            c = _esn_consts(g, layer, tensors)
            drive = g.op("Add", [g.op("MatMul", [x, c["WinT"]]), c["b"]])
            body = _Graph(g)
            x_new = _esn_step(body, "drive_t", "x_in", c)
            o1, o2 = body.op("Identity", [x_new]), body.op("Identity", [x_new])
            bgraph = helper.make_graph(
                body.nodes,
                g.name("body"),
                [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x_in", "drive_t")],
                [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in (o1, o2)],
            )
            _, states = g.op(
                "Scan",
                [_zeros(g, batch, layer["reservoir_size"]), drive],
                n_out=2,
                body=bgraph,
                num_scan_inputs=1,
            )
            if layer["readout_input"] == "extended":
                tb = g.op(
                    "Slice",
                    [g.op("Shape", [x]), g.const(np.array([0], np.int64)), g.const(np.array([2], np.int64))],
                )
                ones_shape = g.op("Concat", [tb, g.const(np.array([1], np.int64))], axis=0)
                ones = g.op(
                    "ConstantOfShape",
                    [ones_shape],
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
                )
                states = g.op("Concat", [ones, x, states], axis=-1)
            x = states
        elif k == "attention":
            c = _attention_consts(g, layer, tensors)
            body = _Graph(g)
            y, m, l, acc = _attention_step(body, "h_t", "m_in", "l_in", "acc_in", c)
            outs_b = [body.op("Identity", [v]) for v in (m, l, acc, y)]
            bgraph = helper.make_graph(
                body.nodes,
                g.name("body"),
                [
                    helper.make_tensor_value_info(n, TensorProto.FLOAT, None)
                    for n in ("m_in", "l_in", "acc_in", "h_t")
                ],
                [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in outs_b],
            )
            init = [_zeros(g, batch, 1), _zeros(g, batch, 1), _zeros(g, batch, layer["input_size"])]
            x = g.op("Scan", init + [x], n_out=4, body=bgraph, num_scan_inputs=1)[-1]
        else:
            x = _pointwise(g, layer, tensors, x)
    if plan["output"]["sequence"] == "many_to_one":
        y = g.op("Gather", [x, g.const(np.array(-1, np.int64))], axis=0)
        shape = ["batch", plan["output"]["size"]]
    else:
        y = g.op("Transpose", [x], perm=[1, 0, 2])
        shape = ["batch", "time", plan["output"]["size"]]
    g.nodes.append(helper.make_node("Identity", [y], ["output"]))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)
    return _model(g, [inp], [out], "edgernn_sequence")


# ---------------------------------------------------------------------------------------- step graph


def step_graph(plan: dict, tensors: dict, flavor: str = "native"):
    """The one-step ONNX model of ``plan`` (see the module docstring); passes ``onnx.checker``.

    Raises ``ValueError`` for plans with a reverse or bidirectional layer (not streamable).
    """
    from onnx import TensorProto, helper

    if flavor not in ("native", "matmul"):
        raise ValueError(f"flavor must be 'native' or 'matmul', got {flavor!r}")
    for layer in plan["layers"]:
        if layer.get("direction", "forward") != "forward":
            raise ValueError(
                f"layer {layer['name']!r} is {layer['direction']}: a reverse direction needs the whole "
                "sequence, so the model has no step graph (use the sequence graph / predict)"
            )
    g = _Graph()
    tokens = plan["input"]["kind"] == "tokens"
    if tokens:
        inputs = [helper.make_tensor_value_info("x", TensorProto.INT64, ["batch"])]
    else:
        inputs = [helper.make_tensor_value_info("x", TensorProto.FLOAT, ["batch", plan["input"]["size"]])]
    outputs = []
    state_outs = []
    x = "x"
    for layer in plan["layers"]:
        k, name = layer["kind"], layer["name"]
        sv = _state_vars(layer)
        for v, n in sv:
            inputs.append(helper.make_tensor_value_info(f"state.{name}.{v}", TensorProto.FLOAT, ["batch", n]))
        st = {v: f"state.{name}.{v}" for v, _ in sv}
        if k in ("rnn", "lstm", "gru"):
            if flavor == "native":
                ax = g.const(np.array([0], np.int64))
                seq = g.op("Unsqueeze", [x, ax])
                h0 = g.op("Unsqueeze", [st["h"], ax])
                c0 = g.op("Unsqueeze", [st["c"], ax]) if k == "lstm" else None
                _, yh, yc = _native_recurrent(g, layer, tensors, seq, h0, c0)
                new = {"h": g.op("Squeeze", [yh, ax])}
                if k == "lstm":
                    new["c"] = g.op("Squeeze", [yc, ax])
                x = new["h"]
            else:
                _check_matmul_cell(layer)
                c = _cell_consts(g, layer, tensors, 0)
                xp = g.op("Add", [g.op("MatMul", [x, c["WT"]]), c["xb"]])
                h_new, c_new = _cell(g, layer, 0, xp, st["h"], st.get("c"), c)
                new = {"h": h_new}
                if k == "lstm":
                    new["c"] = c_new
                x = h_new
        elif k == "esn":
            c = _esn_consts(g, layer, tensors)
            drive = g.op("Add", [g.op("MatMul", [x, c["WinT"]]), c["b"]])
            xs = _esn_step(g, drive, st["x"], c)
            new = {"x": xs}
            if layer["readout_input"] == "extended":
                bshape = g.op(
                    "Slice",
                    [g.op("Shape", [x]), g.const(np.array([0], np.int64)), g.const(np.array([1], np.int64))],
                )
                ones = g.op(
                    "ConstantOfShape",
                    [g.op("Concat", [bshape, g.const(np.array([1], np.int64))], axis=0)],
                    value=helper.make_tensor("v", TensorProto.FLOAT, [1], [1.0]),
                )
                x = g.op("Concat", [ones, x, xs], axis=-1)
            else:
                x = xs
        elif k == "attention":
            c = _attention_consts(g, layer, tensors)
            y, m, l, acc = _attention_step(g, x, st["m"], st["l"], st["acc"], c)
            new = {"m": m, "l": l, "acc": acc}
            x = y
        else:
            x = _pointwise(g, layer, tensors, x)
            new = {}
        for v, n in sv:
            oname = f"state_out.{name}.{v}"
            g.nodes.append(helper.make_node("Identity", [new[v]], [oname]))
            state_outs.append(helper.make_tensor_value_info(oname, TensorProto.FLOAT, ["batch", n]))
    g.nodes.append(helper.make_node("Identity", [x], ["y"]))
    outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", plan["output"]["size"]]))
    return _model(g, inputs, outputs + state_outs, "edgernn_step")
