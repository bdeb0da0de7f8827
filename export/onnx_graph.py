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

import numpy as np

from .onnx_layers import (
    ONNX_ACT,
    OPSET,
    Graph,
    act,
    attention_consts,
    attention_step,
    cell,
    cell_consts,
    check_matmul_cell,
    dequant,
    esn_consts,
    esn_step,
    f32,
    pointwise,
    state_vars,
    zeros,
)

__all__ = ["OPSET", "sequence_graph", "state_spec", "step_graph"]


def state_spec(plan: dict) -> list[tuple[str, int]]:
    """The step graph's state inputs in order: (name, size); outputs are ``state_out.`` + the same suffix."""
    return [(f"state.{lay['name']}.{v}", n) for lay in plan["layers"] for v, n in state_vars(lay)]


def _model(g: Graph, inputs, outputs, name: str):
    import onnx
    from onnx import helper

    graph = helper.make_graph(g.nodes, name, inputs, outputs, initializer=g.inits)
    model = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)], producer_name="edgernn")
    model.ir_version = min(model.ir_version, 9)
    onnx.checker.check_model(model)
    return model


def _native_recurrent(
    g: Graph, layer: dict, tensors: dict, x: str, h0: str | None = None, c0: str | None = None
):
    """Native ONNX node on a time-major sequence x (T, B, I); returns (Y (T,B,D*H), Y_h, Y_c)."""
    k = layer["kind"]
    op = {"rnn": "RNN", "lstm": "LSTM", "gru": "GRU"}[k]
    t = layer["tensors"]
    W = g.const(f32(dequant(layer, tensors, "W")), f"{layer['name']}.W")
    R = g.const(f32(dequant(layer, tensors, "R")), f"{layer['name']}.R")
    ins = [x, W, R, g.const(f32(tensors[t["B"]]), f"{layer['name']}.B") if "B" in t else ""]
    ins += ["", h0 or ""]
    if k == "lstm":
        ins += [c0 or ""]
    while ins and ins[-1] == "":
        ins.pop()
    attrs = {
        "hidden_size": layer["hidden_size"],
        "direction": layer["direction"],
        "activations": [ONNX_ACT[a] for a in layer["activations"]],
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
    g = Graph()
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
            check_matmul_cell(layer)
            H = layer["hidden_size"]
            outs = []
            dirs = ["forward", "reverse"] if layer["direction"] == "bidirectional" else [layer["direction"]]
            for d, direction in enumerate(dirs):
                c = cell_consts(g, layer, tensors, d)
                xp = g.op("Add", [g.op("MatMul", [x, c["WT"]]), c["xb"]])  # (T, B, G*H)
                body = Graph(g)
                names = ["h_in"] + (["c_in"] if k == "lstm" else []) + ["xp_t"]
                h_new, c_new = cell(body, layer, d, "xp_t", "h_in", "c_in" if k == "lstm" else None, c)
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
                init = [zeros(g, batch, H)] + ([zeros(g, batch, H)] if k == "lstm" else [])
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
            c = esn_consts(g, layer, tensors)
            drive = g.op("Add", [g.op("MatMul", [x, c["WinT"]]), c["b"]])
            body = Graph(g)
            x_new = esn_step(body, "drive_t", "x_in", c)
            o1, o2 = body.op("Identity", [x_new]), body.op("Identity", [x_new])
            bgraph = helper.make_graph(
                body.nodes,
                g.name("body"),
                [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in ("x_in", "drive_t")],
                [helper.make_tensor_value_info(n, TensorProto.FLOAT, None) for n in (o1, o2)],
            )
            _, states = g.op(
                "Scan",
                [zeros(g, batch, layer["reservoir_size"]), drive],
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
            c = attention_consts(g, layer, tensors)
            body = Graph(g)
            y, m, l, acc = attention_step(body, "h_t", "m_in", "l_in", "acc_in", c)
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
            init = [zeros(g, batch, 1), zeros(g, batch, 1), zeros(g, batch, layer["input_size"])]
            x = g.op("Scan", init + [x], n_out=4, body=bgraph, num_scan_inputs=1)[-1]
        elif k == "tconv":
            x = _tconv_sequence(g, layer, tensors, x)
        elif k == "final":  # forward units as they are, the reverse units of step 0 at every step
            n = layer["output_size"]
            r0 = layer["hidden_size"] if layer["direction"] == "bidirectional" else 0

            def cut(v, lo, hi, axis):
                ix = [g.const(np.array([a], np.int64)) for a in (lo, hi, axis)]
                return g.op("Slice", [v] + ix)

            rev = cut(x, r0, n, 2)
            first = g.op("Expand", [cut(rev, 0, 1, 0), g.op("Shape", [rev])])
            x = g.op("Concat", [cut(x, 0, r0, 2), first], axis=-1) if r0 else first
        else:
            x = pointwise(g, layer, tensors, x)
    if plan["output"]["sequence"] == "many_to_one":
        y = g.op("Gather", [x, g.const(np.array(-1, np.int64))], axis=0)
        shape = ["batch", plan["output"]["size"]]
    else:
        y = g.op("Transpose", [x], perm=[1, 0, 2])
        shape = ["batch", "time", plan["output"]["size"]]
    g.nodes.append(helper.make_node("Identity", [y], ["output"]))
    out = helper.make_tensor_value_info("output", TensorProto.FLOAT, shape)
    return _model(g, [inp], [out], "edgernn_sequence")


def _tconv_sequence(g: Graph, layer: dict, tensors: dict, x: str) -> str:
    """A causal convolution over time on a time-major (T, B, Cin) sequence: ``Pad`` (K-1)·d zeros
    before the first step, ``Conv`` over the time axis, the activation; returns (T, B, Cout)."""
    name, t = layer["name"], layer["tensors"]
    hn = (layer["kernel_size"] - 1) * layer.get("dilation", 1)
    z = g.op("Transpose", [x], perm=[1, 2, 0])  # (B, Cin, T)
    if hn:
        z = g.op("Pad", [z, g.const(np.array([0, 0, hn, 0, 0, 0], np.int64))], mode="constant")
    ins = [z, g.const(f32(dequant(layer, tensors, "W")), f"{name}.W")]
    if "b" in t:
        ins.append(g.const(f32(tensors[t["b"]]), f"{name}.b"))
    y = g.op("Conv", ins, dilations=[layer.get("dilation", 1)], kernel_shape=[layer["kernel_size"]])
    y = g.op("Transpose", [y], perm=[2, 0, 1])
    return act(g, y, layer["activation"], layer.get("alpha"), layer.get("beta"))


def _tconv_step(g: Graph, layer: dict, tensors: dict, x: str, hist: str | None) -> tuple[str, dict]:
    """One step of a causal convolution over time: ``[hist; x_t]`` (the last (K-1)·d inputs, oldest
    first, then x_t) times the taps' weights; the new history drops the oldest input."""
    name, t = layer["name"], layer["tensors"]
    cin, k, d = layer["in_channels"], layer["kernel_size"], layer.get("dilation", 1)
    hn = (k - 1) * d
    w = dequant(layer, tensors, "W")  # (Cout, Cin, K)
    full = np.zeros(((hn + 1) * cin, w.shape[0]), np.float32)
    for kk in range(k):
        full[kk * d * cin : (kk * d + 1) * cin] = w[:, :, kk].T
    rows = g.op("Concat", [hist, x], axis=-1) if hn else x
    y = g.op("MatMul", [rows, g.const(full, f"{name}.Wstep")])
    if "b" in t:
        y = g.op("Add", [y, g.const(f32(tensors[t["b"]]), f"{name}.b")])
    new = {}
    if hn:
        lo, hi = g.const(np.array([cin], np.int64)), g.const(np.array([(hn + 1) * cin], np.int64))
        new["hist"] = g.op("Slice", [rows, lo, hi, g.const(np.array([1], np.int64))])
    return act(g, y, layer["activation"], layer.get("alpha"), layer.get("beta")), new


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
    g = Graph()
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
        sv = state_vars(layer)
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
                check_matmul_cell(layer)
                c = cell_consts(g, layer, tensors, 0)
                xp = g.op("Add", [g.op("MatMul", [x, c["WT"]]), c["xb"]])
                h_new, c_new = cell(g, layer, 0, xp, st["h"], st.get("c"), c)
                new = {"h": h_new}
                if k == "lstm":
                    new["c"] = c_new
                x = h_new
        elif k == "esn":
            c = esn_consts(g, layer, tensors)
            drive = g.op("Add", [g.op("MatMul", [x, c["WinT"]]), c["b"]])
            xs = esn_step(g, drive, st["x"], c)
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
            c = attention_consts(g, layer, tensors)
            y, m, l, acc = attention_step(g, x, st["m"], st["l"], st["acc"], c)
            new = {"m": m, "l": l, "acc": acc}
            x = y
        elif k == "tconv":
            x, new = _tconv_step(g, layer, tensors, x, st.get("hist"))
        else:
            x = pointwise(g, layer, tensors, x)
            new = {}
        for v, n in sv:
            oname = f"state_out.{name}.{v}"
            g.nodes.append(helper.make_node("Identity", [new[v]], [oname]))
            state_outs.append(helper.make_tensor_value_info(oname, TensorProto.FLOAT, ["batch", n]))
    g.nodes.append(helper.make_node("Identity", [x], ["y"]))
    outputs.append(helper.make_tensor_value_info("y", TensorProto.FLOAT, ["batch", plan["output"]["size"]]))
    return _model(g, inputs, outputs + state_outs, "edgernn_step")
