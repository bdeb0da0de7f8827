"""The pieces :mod:`.onnx_graph` builds ONNX graphs from: a node/initializer list (:class:`Graph`), and
one emitter per plan layer kind (recurrent cells in both flavors, ESN reservoirs, attention pooling,
pointwise layers), each writing that layer's ONNX nodes for one time step.
"""

from __future__ import annotations

import itertools

import numpy as np

OPSET = 17
ONNX_ACT = {
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


class Graph:
    _ids = itertools.count()

    def __init__(self, outer: Graph | None = None):
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


def act(g: Graph, x: str, name: str, alpha=None, beta=None) -> str:
    if name == "linear":
        return x
    if name == "softmax":
        return g.op("Softmax", [x], axis=-1)
    if name in ("tanh", "relu", "sigmoid", "softsign", "softplus"):
        return g.op(ONNX_ACT[name], [x])
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


def f32(t: np.ndarray) -> np.ndarray:
    return np.ascontiguousarray(np.asarray(t, dtype=np.float32))


def dequant(layer: dict, tensors: dict, role: str) -> np.ndarray:
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
    return f32(w)


def esn_dense_w(layer: dict, tensors: dict) -> np.ndarray:
    n = layer["reservoir_size"]
    if not layer.get("sparse"):
        return dequant(layer, tensors, "W")
    data = dequant(layer, tensors, "W_data")
    ind = tensors[layer["tensors"]["W_indices"]].astype(np.int64)
    ptr = tensors[layer["tensors"]["W_indptr"]].astype(np.int64)
    w = np.zeros((n, n), np.float32)
    rows = np.repeat(np.arange(n), np.diff(ptr))
    w[rows, ind] = data
    return w


# ------------------------------------------------------------------------------------ cell equations


def check_matmul_cell(layer: dict) -> None:
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


def cell(g: Graph, layer: dict, d: int, xp: str, h: str, c: str | None, consts: dict):
    """One recurrent step: ``xp`` = x W^T + bias (precomputed), returns (h_new, c_new)."""
    k, H = layer["kind"], layer["hidden_size"]
    hr = g.op("MatMul", [h, consts["RT"]])
    if k == "rnn":
        pre = g.op("Add", [xp, hr])
        return act(g, pre, layer["activations"][d]), None
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


def cell_consts(g: Graph, layer: dict, tensors: dict, d: int) -> dict:
    k, H = layer["kind"], layer["hidden_size"]
    gates = {"rnn": 1, "lstm": 4, "gru": 3}[k]
    W = dequant(layer, tensors, "W")[d]
    R = dequant(layer, tensors, "R")[d]
    bname = layer["tensors"].get("B")
    B = f32(tensors[bname])[d] if bname else np.zeros(2 * gates * H, np.float32)
    wb, rb = B[: gates * H], B[gates * H :]
    c = {
        "WT": g.const(f32(W.T), f"{layer['name']}.WT{d}"),
        "RT": g.const(f32(R.T), f"{layer['name']}.RT{d}"),
    }
    if k == "gru":
        c["xb"] = g.const(f32(wb), f"{layer['name']}.Wb{d}")
        c["Rb"] = g.const(f32(rb), f"{layer['name']}.Rb{d}")
    else:
        c["xb"] = g.const(f32(wb + rb), f"{layer['name']}.b{d}")
    return c


def attention_consts(g: Graph, layer: dict, tensors: dict) -> dict:
    return {
        "WT": g.const(f32(dequant(layer, tensors, "W").T), f"{layer['name']}.WT"),
        "b": g.const(f32(tensors[layer["tensors"]["b"]]), f"{layer['name']}.b"),
        "v": g.const(f32(tensors[layer["tensors"]["v"]])[:, None], f"{layer['name']}.v"),
    }


def attention_step(g: Graph, h: str, m: str, l: str, acc: str, c: dict):
    s = g.op("MatMul", [g.op("Tanh", [g.op("Add", [g.op("MatMul", [h, c["WT"]]), c["b"]])]), c["v"]])  # (B,1)
    zero = g.const(np.float32(0.0))
    started = g.op("Greater", [l, zero])
    m_new = g.op("Where", [started, g.op("Max", [m, s]), s])
    e_old = g.op("Where", [started, g.op("Exp", [g.op("Sub", [m, m_new])]), zero])
    e_new = g.op("Exp", [g.op("Sub", [s, m_new])])
    l_new = g.op("Add", [g.op("Mul", [l, e_old]), e_new])
    acc_new = g.op("Add", [g.op("Mul", [acc, e_old]), g.op("Mul", [h, e_new])])
    return g.op("Div", [acc_new, l_new]), m_new, l_new, acc_new


def esn_consts(g: Graph, layer: dict, tensors: dict) -> dict:
    bname = layer["tensors"].get("b")
    n = layer["reservoir_size"]
    b = f32(tensors[bname]) if bname else np.zeros(n, np.float32)
    a = float(layer["leak_rate"])
    return {
        "WinT": g.const(f32(dequant(layer, tensors, "W_in").T), f"{layer['name']}.W_inT"),
        "WT": g.const(f32(esn_dense_w(layer, tensors).T), f"{layer['name']}.WT"),
        "b": g.const(b, f"{layer['name']}.b"),
        "a": g.const(np.float32(a)),
        "1-a": g.const(np.float32(1.0 - a)),
    }


def esn_step(g: Graph, drive: str, x: str, c: dict) -> str:
    pre = g.op("Add", [drive, g.op("MatMul", [x, c["WT"]])])
    return g.op("Add", [g.op("Mul", [x, c["1-a"]]), g.op("Mul", [g.op("Tanh", [pre]), c["a"]])])


# ------------------------------------------------------------------------------------ pointwise layers


def pointwise(g: Graph, layer: dict, tensors: dict, x: str) -> str:
    k = layer["kind"]
    t = layer["tensors"]
    if k == "normalize":
        return g.op(
            "Div", [g.op("Sub", [x, g.const(f32(tensors[t["mean"]]))]), g.const(f32(tensors[t["std"]]))]
        )
    if k == "affine":
        return g.op(
            "Add", [g.op("Mul", [x, g.const(f32(tensors[t["scale"]]))]), g.const(f32(tensors[t["shift"]]))]
        )
    if k == "activation":
        return act(g, x, layer["activation"], layer.get("alpha"), layer.get("beta"))
    if k == "dense":
        y = g.op("MatMul", [x, g.const(f32(dequant(layer, tensors, "W").T), f"{layer['name']}.WT")])
        if "b" in t:
            y = g.op("Add", [y, g.const(f32(tensors[t["b"]]), f"{layer['name']}.b")])
        return act(g, y, layer["activation"], layer.get("alpha"), layer.get("beta"))
    if k == "layernorm":
        ins = [x, g.const(f32(tensors[t["scale"]]), f"{layer['name']}.scale")]
        if "bias" in t:
            ins.append(g.const(f32(tensors[t["bias"]]), f"{layer['name']}.bias"))
        return g.op("LayerNormalization", ins, axis=-1, epsilon=float(layer["epsilon"]))
    if k == "embedding":
        return g.op("Gather", [g.const(f32(dequant(layer, tensors, "table")), f"{layer['name']}.table"), x])
    if k == "onehot":
        depth = g.const(np.array([layer["vocab_size"]], np.int64))
        return g.op("OneHot", [x, depth, g.const(np.array([0.0, 1.0], np.float32))], axis=-1)
    raise NotImplementedError(k)


def zeros(g: Graph, batch: str, n: int) -> str:
    """zeros (batch, n) float32; ``batch`` is a 1-element int64 tensor."""
    shape = g.op("Concat", [batch, g.const(np.array([n], np.int64))], axis=0)
    from onnx import TensorProto, helper

    return g.op("ConstantOfShape", [shape], value=helper.make_tensor("v", TensorProto.FLOAT, [1], [0.0]))


def state_vars(layer: dict) -> list[tuple[str, int]]:
    k = layer["kind"]
    if k in ("rnn", "gru"):
        return [("h", layer["hidden_size"])]
    if k == "lstm":
        return [("h", layer["hidden_size"]), ("c", layer["hidden_size"])]
    if k == "esn":
        return [("x", layer["reservoir_size"])]
    if k == "attention":
        return [("m", 1), ("l", 1), ("acc", layer["input_size"])]
    if k == "tconv":
        hn = (layer["kernel_size"] - 1) * layer.get("dilation", 1) * layer["in_channels"]
        return [("hist", hn)] if hn else []
    return []
