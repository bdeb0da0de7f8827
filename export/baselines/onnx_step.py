"""ONNX step graphs of a plan: :func:`onnx_step_model` builds one from the artifact's weights with
``onnx.helper`` (or a sequence graph for ORT's chunk mode), :func:`step_graph_from_file` reads someone
else's (e.g. ``edgernn export``'s ``model.step.onnx``). onnx is imported inside the functions."""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from ...artifact import validate_plan
from ..onnx_layers import ONNX_ACT  # the recurrent ops' activation names
from .common import Unsupported, _check_plan, dequantized


@dataclass
class StateSpec:
    """One recurrent state of a step graph: graph input ``name_in`` -> graph output ``name_out``."""

    name_in: str
    name_out: str
    shape: tuple[int, ...]
    initial: np.ndarray  # float32, broadcastable to ``shape``


@dataclass
class StepGraph:
    """An ONNX step graph and the names a runner needs to bind it."""

    model: object  # onnx.ModelProto
    x: str
    y: str
    x_shape: tuple[int, ...]
    y_shape: tuple[int, ...]
    states: list[StateSpec] = field(default_factory=list)
    consts: dict[str, np.ndarray] = field(default_factory=dict)  # inputs fed the same every step


_ONNX_ACT = {
    "relu": "Relu",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softsign": "Softsign",
    "softplus": "Softplus",
}


def onnx_step_model(
    plan: dict, tensors: Mapping[str, np.ndarray], batch: int = 1, opset: int = 17, seq_len: int = 1
) -> StepGraph:
    """Build the ONNX step graph of ``plan`` for ``batch`` streams (static shapes).

    Inputs ``x`` [1, batch, input_size] and one ``<layer>.h_in`` (and ``.c_in`` for LSTM) [1, batch, H]
    per recurrent/ESN layer; outputs ``y`` [batch, output_size] (or [1, batch, output_size] when the last
    layer is not ``dense``) and the matching ``<layer>.h_out``/``.c_out``. Weights are float32 initializers
    (int8/fp16 dequantized). Raises :class:`Unsupported` for layers ONNX cannot express here.

    ``seq_len`` T > 1 makes a *sequence* graph instead (ORT's chunk mode): x [T, batch, input_size] ->
    y [T, batch, output_size], recurrent ops over all T steps, same state inputs/outputs. ESN layers have
    no ONNX sequence op and raise :class:`Unsupported` there.
    """
    import onnx
    from onnx import TensorProto, helper, numpy_helper

    plan = validate_plan(plan)
    _check_plan(plan, torch=False)
    nodes, inits, inputs, outputs = [], [], [], []
    states: list[StateSpec] = []
    f32 = TensorProto.FLOAT

    def init(name: str, arr: np.ndarray) -> str:
        inits.append(numpy_helper.from_array(np.ascontiguousarray(arr), name))
        return name

    in_size = plan["input"]["size"]
    T = int(seq_len)
    seq = T > 1
    x_shape = (T, batch, in_size)
    inputs.append(helper.make_tensor_value_info("x", f32, list(x_shape)))
    cur, rank, width = "x", 3, in_size
    for li, layer in enumerate(plan["layers"]):
        k, name = layer["kind"], f"l{li}"
        w = dequantized(layer, tensors)
        out = f"{name}.y"
        if k == "normalize":
            nodes.append(helper.make_node("Sub", [cur, init(f"{name}.mean", w["mean"])], [f"{name}.c"]))
            inv = (1.0 / w["std"].astype(np.float64)).astype(np.float32)
            nodes.append(helper.make_node("Mul", [f"{name}.c", init(f"{name}.inv", inv)], [out]))
        elif k == "affine":
            nodes.append(helper.make_node("Mul", [cur, init(f"{name}.scale", w["scale"])], [f"{name}.m"]))
            nodes.append(helper.make_node("Add", [f"{name}.m", init(f"{name}.shift", w["shift"])], [out]))
        elif k in ("activation", "dense"):
            if k == "dense":
                o = layer["output_size"]
                bias = w.get("b", np.zeros(o, np.float32))
                pre = f"{name}.pre" if layer["activation"] != "linear" else out
                if not seq and (rank == 3 and li == len(plan["layers"]) - 1 or rank == 2):
                    if rank == 3:
                        shp = init(f"{name}.shape", np.array([batch, width], np.int64))
                        nodes.append(helper.make_node("Reshape", [cur, shp], [f"{name}.2d"]))
                        cur, rank = f"{name}.2d", 2
                    ins = [cur, init(f"{name}.W", w["W"]), init(f"{name}.b", bias)]
                    nodes.append(helper.make_node("Gemm", ins, [pre], transB=1))
                else:
                    nodes.append(
                        helper.make_node("MatMul", [cur, init(f"{name}.WT", w["W"].T.copy())], [f"{name}.mm"])
                    )
                    nodes.append(helper.make_node("Add", [f"{name}.mm", init(f"{name}.b", bias)], [pre]))
                cur, width = pre, o
            _onnx_act(nodes, init, name, cur, out, layer["activation"], layer["alpha"], layer["beta"], helper)
        elif k in ("lstm", "gru", "rnn"):
            h = layer["hidden_size"]
            if rank != 3:  # pragma: no cover - only dense leaves rank 2, and only as the last layer
                raise Unsupported(f"layer {layer['name']!r}: recurrent layer after a rank-2 activation")
            ins = [cur, init(f"{name}.W", w["W"]), init(f"{name}.R", w["R"])]
            ins.append(init(f"{name}.B", w["B"]) if "B" in w else "")
            ins.append("")  # sequence_lens
            ins.append(f"{name}.h_in")
            st_shape = (1, batch, h)
            inputs.append(helper.make_tensor_value_info(f"{name}.h_in", f32, list(st_shape)))
            outs = [f"{name}.Y" if seq else "", f"{name}.h_out"]
            h0 = w["initial_h"][0] if "initial_h" in w else np.zeros(h, np.float32)
            states.append(StateSpec(f"{name}.h_in", f"{name}.h_out", st_shape, h0))
            if k == "lstm":
                ins.append(f"{name}.c_in")
                inputs.append(helper.make_tensor_value_info(f"{name}.c_in", f32, list(st_shape)))
                c0 = w["initial_c"][0] if "initial_c" in w else np.zeros(h, np.float32)
                states.append(StateSpec(f"{name}.c_in", f"{name}.c_out", st_shape, c0))
                outs.append(f"{name}.c_out")
                if "P" in w:
                    ins.append(init(f"{name}.P", w["P"]))
            attrs = {"hidden_size": h}
            acts = layer["activations"]
            attrs["activations"] = [ONNX_ACT[a] for a in acts]
            if any(
                a in ("leaky_relu", "affine", "thresholded_relu", "scaled_tanh", "hard_sigmoid", "elu")
                for a in acts
            ):
                attrs["activation_alpha"] = [float(v) for v in layer["activation_alpha"]]
                attrs["activation_beta"] = [float(v) for v in layer["activation_beta"]]
            if layer.get("clip") is not None:
                attrs["clip"] = float(layer["clip"])
            if k == "lstm" and layer.get("input_forget"):
                attrs["input_forget"] = 1
            if k == "gru":
                attrs["linear_before_reset"] = int(layer["linear_before_reset"])
            nodes.append(helper.make_node(k.upper(), ins, outs, **attrs))
            for s in states[-(2 if k == "lstm" else 1) :]:
                outputs.append(helper.make_tensor_value_info(s.name_out, f32, list(st_shape)))
            out, width = f"{name}.h_out", h
            if seq:  # Y [T, 1, batch, H] -> [T, batch, H]
                axes = init(f"{name}.axes", np.array([1], np.int64))
                nodes.append(helper.make_node("Squeeze", [f"{name}.Y", axes], [f"{name}.Ys"]))
                out = f"{name}.Ys"
        elif k == "esn":
            if seq:
                raise Unsupported(
                    f"layer {layer['name']!r}: an ESN has no ONNX sequence op (step graph only)"
                )
            n, a = layer["reservoir_size"], float(layer["leak_rate"])
            st_shape = (1, batch, n) if rank == 3 else (batch, n)
            hin, hout = f"{name}.h_in", f"{name}.h_out"
            inputs.append(helper.make_tensor_value_info(hin, f32, list(st_shape)))
            outputs.append(helper.make_tensor_value_info(hout, f32, list(st_shape)))
            states.append(StateSpec(hin, hout, st_shape, np.zeros(n, np.float32)))
            nodes.append(
                helper.make_node("MatMul", [cur, init(f"{name}.W_inT", w["W_in"].T.copy())], [f"{name}.u"])
            )
            nodes.append(
                helper.make_node("MatMul", [hin, init(f"{name}.WT", w["W"].T.copy())], [f"{name}.r"])
            )
            nodes.append(helper.make_node("Add", [f"{name}.u", f"{name}.r"], [f"{name}.s"]))
            pre = f"{name}.s"
            if "b" in w:
                nodes.append(helper.make_node("Add", [pre, init(f"{name}.b", w["b"])], [f"{name}.sb"]))
                pre = f"{name}.sb"
            if a == 1.0:
                nodes.append(helper.make_node("Tanh", [pre], [hout]))
            else:
                nodes.append(helper.make_node("Tanh", [pre], [f"{name}.t"]))
                one_m_a = init(f"{name}.1ma", np.array(1.0 - a, np.float32))
                nodes.append(helper.make_node("Mul", [hin, one_m_a], [f"{name}.keep"]))
                nodes.append(
                    helper.make_node(
                        "Mul", [f"{name}.t", init(f"{name}.a", np.array(a, np.float32))], [f"{name}.new"]
                    )
                )
                nodes.append(helper.make_node("Add", [f"{name}.keep", f"{name}.new"], [hout]))
            out, width = hout, n
            if layer["readout_input"] == "extended":
                ones = init(f"{name}.ones", np.ones(st_shape[:-1] + (1,), np.float32))
                nodes.append(helper.make_node("Concat", [ones, cur, hout], [f"{name}.ext"], axis=-1))
                out, width = f"{name}.ext", 1 + layer["input_size"] + n
        cur = out
    y_shape = (batch, width) if rank == 2 else (T, batch, width)
    nodes.append(helper.make_node("Identity", [cur], ["y"]))
    outputs.insert(0, helper.make_tensor_value_info("y", f32, list(y_shape)))
    graph = helper.make_graph(nodes, "edgernn_step", inputs, outputs, inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", opset)], producer_name="edgernn")
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return StepGraph(model, "x", "y", x_shape, y_shape, states)


def _onnx_act(nodes, init, name, src, dst, act, alpha, beta, helper) -> None:
    if act == "linear":
        if src != dst:
            nodes.append(helper.make_node("Identity", [src], [dst]))
    elif act in _ONNX_ACT:
        nodes.append(helper.make_node(_ONNX_ACT[act], [src], [dst]))
    elif act == "softmax":
        nodes.append(helper.make_node("Softmax", [src], [dst], axis=-1))
    elif act == "leaky_relu":
        nodes.append(helper.make_node("LeakyRelu", [src], [dst], alpha=float(alpha)))
    elif act == "elu":
        nodes.append(helper.make_node("Elu", [src], [dst], alpha=float(alpha)))
    elif act == "thresholded_relu":
        nodes.append(helper.make_node("ThresholdedRelu", [src], [dst], alpha=float(alpha)))
    elif act == "hard_sigmoid":
        nodes.append(helper.make_node("HardSigmoid", [src], [dst], alpha=float(alpha), beta=float(beta)))
    elif act == "affine":
        nodes.append(
            helper.make_node("Mul", [src, init(f"{name}.alpha", np.array(alpha, np.float32))], [f"{name}.am"])
        )
        nodes.append(
            helper.make_node("Add", [f"{name}.am", init(f"{name}.beta", np.array(beta, np.float32))], [dst])
        )
    elif act == "scaled_tanh":
        nodes.append(
            helper.make_node("Mul", [src, init(f"{name}.beta", np.array(beta, np.float32))], [f"{name}.sb"])
        )
        nodes.append(helper.make_node("Tanh", [f"{name}.sb"], [f"{name}.st"]))
        nodes.append(
            helper.make_node("Mul", [f"{name}.st", init(f"{name}.alpha", np.array(alpha, np.float32))], [dst])
        )
    else:  # pragma: no cover - the plan validator knows no other activation
        raise Unsupported(f"activation {act!r}")


def step_graph_from_file(path: str, batch: int = 1) -> StepGraph:
    """A step graph from an ONNX file written by someone else (e.g. ``edgernn export``'s model.step.onnx).

    Convention: the first graph input is x_t, the other inputs are states; the first output is y_t and the
    next outputs are the new states, in the order of the state inputs and with their shapes. Symbolic
    dimensions (the batch dimension of ``edgernn export``'s step graph) are taken as ``batch`` streams
    (default 1). States start at zero. Raises :class:`Unsupported` otherwise.
    """
    import onnx

    m = onnx.load(path)
    inits = {i.name for i in m.graph.initializer}
    ins = [i for i in m.graph.input if i.name not in inits]
    outs = list(m.graph.output)

    def shape(v) -> tuple[int, ...]:
        t = v.type.tensor_type
        if t.elem_type != onnx.TensorProto.FLOAT:
            raise Unsupported(f"{path}: {v.name!r} is not float32")
        return tuple(d.dim_value if d.HasField("dim_value") else int(batch) for d in t.shape.dim)

    if not ins or len(outs) != len(ins):
        raise Unsupported(
            f"{path}: not a step graph ({len(ins)} inputs, {len(outs)} outputs; expected x + states in, "
            "y + the same states out)"
        )
    states = []
    for si, so in zip(ins[1:], outs[1:], strict=True):
        if shape(si) != shape(so):
            raise Unsupported(f"{path}: state {si.name!r} {shape(si)} != output {so.name!r} {shape(so)}")
        states.append(StateSpec(si.name, so.name, shape(si), np.zeros(shape(si)[-1], np.float32)))
    return StepGraph(m, ins[0].name, outs[0].name, shape(ins[0]), shape(outs[0]), states)
