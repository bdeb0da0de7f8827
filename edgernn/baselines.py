"""Baselines on the same weights as an ``.ernn`` artifact: a PyTorch module and an ONNX Runtime step graph.

Used by ``edgernn bench`` and by ``benchmarks/``; nothing on the device path imports this module, and torch,
onnx and onnxruntime are imported inside the functions that need them (so importing it costs nothing).

Both baselines are built from a validated plan and its tensors (see ``docs/ARTIFACT.md``) so that every
backend runs the very same model: int8 and fp16 weights are dequantized (``w = q * scale``) to float32, which
is the model the edgernn runtime computes. Supported: forward ``rnn``/``lstm``/``gru`` layers with the
standard activations (PyTorch also needs ``linear_before_reset = 1`` for GRU, no clip and no peepholes),
``esn`` (dense or CSR), ``dense``, ``normalize``, ``affine`` and ``activation`` layers. Anything else raises
:class:`Unsupported` naming the layer.

* :class:`TorchBaseline` -- ``step(x)`` runs the cells one step at a time (``nn.LSTMCell``/``GRUCell``/
  ``RNNCell`` + ``nn.Linear``), ``run(X)`` the fused modules (``nn.LSTM``/``GRU``/``RNN``) over a whole
  sequence, ``streams_step(X)`` the batched cells for n streams; one thread, ``inference_mode``.
* :func:`onnx_step_model` -- an ONNX step graph (x_t + states in -> y_t + states out) made with
  ``onnx.helper``: ONNX ``LSTM``/``GRU``/``RNN`` with seq_len 1 and ``initial_h``/``initial_c`` inputs, a
  ``Gemm`` head, the ESN as ``MatMul``/``Add``/``Tanh``/``Mul``.
* :class:`OrtStep` -- runs a step graph at its best: one intra-op and one inter-op thread, sequential
  execution, IOBinding over preallocated buffers with two alternating (ping-pong) state sets, and no
  ``RunOptions`` (ORT 1.32 adds ~25 us of internal exception handling per call when they are passed).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .artifact import validate_plan
from .errors import EdgeRNNError

__all__ = [
    "OrtStep",
    "StateSpec",
    "StepGraph",
    "TorchBaseline",
    "Unsupported",
    "dequantized",
    "onnx_step_model",
    "ort_session",
]


class Unsupported(EdgeRNNError):
    """The plan has a layer this baseline cannot express; the message names the layer and why."""


# ------------------------------------------------------------------------------------------ weights


def _f32(tensors: Mapping[str, np.ndarray], layer: dict, role: str) -> np.ndarray | None:
    """The float32 value of a role: int8 ``q * scale`` per output row, fp16 widened; None when absent."""
    name = layer["tensors"].get(role)
    if name is None:
        return None
    arr = np.asarray(tensors[name])
    if arr.dtype == np.int8:
        scale = np.asarray(tensors[layer["tensors"][role + "_scale"]], dtype=np.float32)
        if role == "W_data":  # CSR values: one scale per reservoir row
            ptr = np.asarray(tensors[layer["tensors"]["W_indptr"]], dtype=np.int64)
            scale = np.repeat(scale, np.diff(ptr))
            return arr.astype(np.float32) * scale
        return arr.astype(np.float32) * scale[..., None]
    return arr.astype(np.float32)


def dequantized(layer: dict, tensors: Mapping[str, np.ndarray]) -> dict[str, np.ndarray]:
    """Every role of ``layer`` as float32 (int8 dequantized, fp16 widened; a CSR reservoir made dense, ``W``).

    Returns role -> array in the ONNX layouts of ``docs/ARTIFACT.md`` (e.g. LSTM ``W`` [D, 4H, I]).
    """
    out: dict[str, np.ndarray] = {}
    for role in layer["tensors"]:
        if role.endswith("_scale") or role in ("W_indices", "W_indptr", "W_data"):
            continue
        out[role] = _f32(tensors, layer, role)
    if layer["kind"] == "esn" and layer.get("sparse"):
        n = layer["reservoir_size"]
        data = _f32(tensors, layer, "W_data")
        ind = np.asarray(tensors[layer["tensors"]["W_indices"]], dtype=np.int64)
        ptr = np.asarray(tensors[layer["tensors"]["W_indptr"]], dtype=np.int64)
        w = np.zeros((n, n), np.float32)
        rows = np.repeat(np.arange(n), np.diff(ptr))
        np.add.at(w, (rows, ind), data)
        out["W"] = w
    return out


def _check_recurrent(layer: dict, torch: bool) -> None:
    kind, name = layer["kind"], layer["name"]
    if layer["direction"] != "forward":
        raise Unsupported(
            f"layer {name!r}: direction {layer['direction']!r} (streaming baselines are forward)"
        )
    std = {"lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"], "rnn": None}[kind]
    if torch:
        if std is not None and layer["activations"] != std:
            raise Unsupported(f"layer {name!r}: torch cells only have the default activations")
        if kind == "rnn" and layer["activations"][0] not in ("tanh", "relu"):
            raise Unsupported(f"layer {name!r}: torch RNN cells are tanh or relu")
        if layer.get("clip") is not None:
            raise Unsupported(f"layer {name!r}: torch cells have no clip")
        if kind == "lstm" and ("P" in layer["tensors"] or layer.get("input_forget")):
            raise Unsupported(f"layer {name!r}: torch LSTM has no peepholes / input_forget")
        if kind == "gru" and layer.get("linear_before_reset") != 1:
            raise Unsupported(f"layer {name!r}: torch GRU is linear_before_reset = 1 only")


SUPPORTED = ("normalize", "affine", "activation", "rnn", "lstm", "gru", "esn", "dense")


def _check_plan(plan: dict, torch: bool) -> None:
    if plan["input"].get("kind", "features") != "features":
        raise Unsupported("token inputs are not supported by the baselines")
    for layer in plan["layers"]:
        if layer["kind"] not in SUPPORTED:
            raise Unsupported(f"layer {layer['name']!r}: kind {layer['kind']!r} has no baseline")
        if layer["kind"] in ("rnn", "lstm", "gru"):
            _check_recurrent(layer, torch)


# -------------------------------------------------------------------------------------------- torch


def _torch_act(name: str, alpha: float, beta: float):
    import torch

    f = torch.nn.functional
    table = {
        "linear": lambda x: x,
        "relu": torch.relu,
        "tanh": torch.tanh,
        "sigmoid": torch.sigmoid,
        "softmax": lambda x: torch.softmax(x, dim=-1),
        "leaky_relu": lambda x: f.leaky_relu(x, alpha),
        "affine": lambda x: x * alpha + beta,
        "thresholded_relu": lambda x: torch.where(x > alpha, x, torch.zeros_like(x)),
        "scaled_tanh": lambda x: alpha * torch.tanh(beta * x),
        "hard_sigmoid": lambda x: torch.clamp(alpha * x + beta, 0.0, 1.0),
        "elu": lambda x: f.elu(x, alpha),
        "softsign": f.softsign,
        "softplus": f.softplus,
    }
    return table[name]


_TORCH_GATES = {"lstm": [0, 2, 3, 1], "gru": [1, 0, 2], "rnn": [0]}  # torch gate blocks from ONNX blocks


def _to_torch_gates(w: np.ndarray, kind: str, h: int) -> np.ndarray:
    """ONNX gate blocks (LSTM i,o,f,c; GRU z,r,h) -> torch's (LSTM i,f,g,o; GRU r,z,n), along axis 0."""
    return np.concatenate([w[g * h : (g + 1) * h] for g in _TORCH_GATES[kind]], axis=0)


class TorchBaseline:
    """A plan as PyTorch modules on the same float32 weights.

    ``step(x)``: x (input_size,) -> y (output_size,), cells one step at a time: ``torch.lstm_cell``/
    ``gru_cell``/``rnn_*_cell`` and ``F.linear`` on the parameters of ``nn.LSTMCell``/``GRUCell``/``RNNCell``
    and ``nn.Linear`` modules -- the kernels those modules call, without ``nn.Module.__call__``.
    ``run(X)``: X (T, input_size) -> (T, output_size), fused ``nn.LSTM``/``GRU``/``RNN`` over the sequence.
    ``streams_step(X)``: X (n, input_size) -> (n, output_size), batched cells (call ``reset(n)`` first).
    All three continue the state held by the object; ``reset(n)`` sets n streams to the initial state.
    Runs with ``torch.set_num_threads(1)`` (set by the constructor) under ``torch.inference_mode``.
    """

    def __init__(self, plan: dict, tensors: Mapping[str, np.ndarray], threads: int = 1):
        import torch

        plan = validate_plan(plan)
        _check_plan(plan, torch=True)
        torch.set_num_threads(threads)
        self.torch = torch
        self.plan = plan
        self.input_size = plan["input"]["size"]
        self.output_size = plan["output"]["size"]
        self._layers: list[dict] = []
        with torch.inference_mode():
            for layer in plan["layers"]:
                self._layers.append(self._build(layer, dequantized(layer, tensors)))
        self.reset(1)

    def _build(self, layer: dict, w: dict[str, np.ndarray]) -> dict:
        torch = self.torch
        nn = torch.nn
        kind = layer["kind"]
        t = lambda a: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32))  # noqa: E731
        ent: dict = {"kind": kind}
        if kind == "normalize":
            mean, inv = t(w["mean"]), t(1.0 / w["std"].astype(np.float64))
            ent["f"] = lambda x: (x - mean) * inv
        elif kind == "affine":
            scale, shift = t(w["scale"]), t(w["shift"])
            ent["f"] = lambda x: x * scale + shift
        elif kind == "activation":
            ent["f"] = _torch_act(layer["activation"], layer["alpha"], layer["beta"])
        elif kind == "dense":
            o, i = w["W"].shape
            lin = nn.Linear(i, o, bias=True)
            lin.weight.copy_(t(w["W"]))
            lin.bias.copy_(t(w["b"]) if "b" in w else torch.zeros(o))
            act = _torch_act(layer["activation"], layer["alpha"], layer["beta"])
            # F.linear on the Linear's parameters: the same kernel without nn.Module.__call__ (~2.5 us)
            wl, bl, linear = lin.weight, lin.bias, torch.nn.functional.linear
            if layer["activation"] == "linear":
                ent["f"] = lambda x: linear(x, wl, bl)
            else:
                ent["f"] = lambda x: act(linear(x, wl, bl))
            ent["module"] = lin
        elif kind in ("lstm", "gru", "rnn"):
            h, i = layer["hidden_size"], layer["input_size"]
            g = {"lstm": 4, "gru": 3, "rnn": 1}[kind]
            wi = _to_torch_gates(w["W"][0], kind, h)
            wh = _to_torch_gates(w["R"][0], kind, h)
            b = w.get("B", np.zeros((1, 2 * g * h), np.float32))[0]
            bi = _to_torch_gates(b[: g * h], kind, h)
            bh = _to_torch_gates(b[g * h :], kind, h)
            if kind == "lstm":
                cell, fused = nn.LSTMCell(i, h), nn.LSTM(i, h)
            elif kind == "gru":
                cell, fused = nn.GRUCell(i, h), nn.GRU(i, h)
            else:
                nl = layer["activations"][0]
                cell, fused = nn.RNNCell(i, h, nonlinearity=nl), nn.RNN(i, h, nonlinearity=nl)
            for m, names in ((cell, ("weight_ih", "weight_hh", "bias_ih", "bias_hh")), (fused, None)):
                names = names or ("weight_ih_l0", "weight_hh_l0", "bias_ih_l0", "bias_hh_l0")
                for n_, v in zip(names, (wi, wh, bi, bh), strict=True):
                    getattr(m, n_).copy_(t(v))
            ent.update(cell=cell.eval(), fused=fused.eval(), hidden=h)
            # the functional cell the module calls, on the module's own parameters: nn.LSTMCell.__call__
            # adds ~7 us of Python argument checks per step that are not part of the computation
            ent["fn"] = {"lstm": torch.lstm_cell, "gru": torch.gru_cell}.get(kind) or (
                torch.rnn_tanh_cell if layer["activations"][0] == "tanh" else torch.rnn_relu_cell
            )
            ent["params"] = (cell.weight_ih, cell.weight_hh, cell.bias_ih, cell.bias_hh)
            ent["h0"] = t(w["initial_h"][0]) if "initial_h" in w else torch.zeros(h)
            if kind == "lstm":
                ent["c0"] = t(w["initial_c"][0]) if "initial_c" in w else torch.zeros(h)
        elif kind == "esn":
            n = layer["reservoir_size"]
            a = float(layer["leak_rate"])
            w_in_t = t(w["W_in"].T.copy())
            bias = t(w["b"]) if "b" in w else torch.zeros(n)
            if layer.get("sparse"):
                # torch's CSR x dense product: (W @ state^T)^T
                import warnings

                with warnings.catch_warnings():
                    warnings.simplefilter("ignore", UserWarning)  # "sparse CSR support is in beta"
                    wcsr = t(w["W"]).to_sparse_csr()
                ent["rec"] = lambda x: (wcsr @ x.T).T
            else:
                wt = t(w["W"].T.copy())
                ent["rec"] = lambda x: x @ wt
            ent.update(w_in_t=w_in_t, bias=bias, a=a, n=n, extended=layer["readout_input"] == "extended")
            ent["h0"] = torch.zeros(n)
        else:  # pragma: no cover - _check_plan rejects it first
            raise Unsupported(kind)
        return ent

    def reset(self, n: int = 1) -> None:
        """Set ``n`` streams to the initial state (zeros, or the layers' ``initial_h``/``initial_c``)."""
        self.n = n
        for ent in self._layers:
            if "h0" in ent:
                ent["h"] = ent["h0"].expand(n, -1).clone()
            if "c0" in ent:
                ent["c"] = ent["c0"].expand(n, -1).clone()

    def _esn(self, ent: dict, u):
        torch = self.torch
        pre = torch.addmm(ent["bias"], u, ent["w_in_t"]) + ent["rec"](ent["h"])
        a = ent["a"]
        x = torch.tanh(pre) if a == 1.0 else torch.lerp(ent["h"], torch.tanh(pre), a)
        ent["h"] = x
        if ent["extended"]:
            return torch.cat([torch.ones(u.shape[0], 1), u, x], dim=1)
        return x

    def _step(self, x):
        for ent in self._layers:
            k = ent["kind"]
            if k == "lstm":
                ent["h"], ent["c"] = ent["fn"](x, (ent["h"], ent["c"]), *ent["params"])
                x = ent["h"]
            elif k in ("gru", "rnn"):
                x = ent["h"] = ent["fn"](x, ent["h"], *ent["params"])
            elif k == "esn":
                x = self._esn(ent, x)
            else:
                x = ent["f"](x)
        return x

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step of one stream: x (input_size,) float32 -> y (output_size,) float32 (cells + Linear)."""
        with self.torch.inference_mode():
            return self._step(self.torch.from_numpy(x).view(1, -1))[0].numpy()

    def streams_step(self, X: np.ndarray) -> np.ndarray:
        """One step of n streams (after ``reset(n)``): X (n, input_size) -> (n, output_size), batched."""
        with self.torch.inference_mode():
            return self._step(self.torch.from_numpy(X)).numpy()

    def run(self, X: np.ndarray) -> np.ndarray:
        """Stream 0 over a sequence with the fused modules: X (T, input_size) -> (T, output_size)."""
        torch = self.torch
        with torch.inference_mode():
            x = torch.from_numpy(np.ascontiguousarray(X, dtype=np.float32))  # (T, F)
            for ent in self._layers:
                k = ent["kind"]
                if k == "lstm":
                    hc = (ent["h"][:1].unsqueeze(0), ent["c"][:1].unsqueeze(0))
                    y, (h, c) = ent["fused"](x.unsqueeze(1), hc)
                    ent["h"], ent["c"] = h[0], c[0]
                    x = y[:, 0]
                elif k in ("gru", "rnn"):
                    y, h = ent["fused"](x.unsqueeze(1), ent["h"][:1].unsqueeze(0))
                    ent["h"] = h[0]
                    x = y[:, 0]
                elif k == "esn":
                    # no fused ESN in torch: input projections for all T at once, then the recurrence
                    proj = torch.addmm(ent["bias"], x, ent["w_in_t"])
                    h = ent["h"]
                    out = torch.empty(x.shape[0], ent["n"])
                    a = ent["a"]
                    for t_ in range(x.shape[0]):
                        pre = proj[t_ : t_ + 1] + ent["rec"](h)
                        h = torch.tanh(pre) if a == 1.0 else torch.lerp(h, torch.tanh(pre), a)
                        out[t_] = h[0]
                    ent["h"] = h
                    x = torch.cat([torch.ones(x.shape[0], 1), x, out], dim=1) if ent["extended"] else out
                else:
                    x = ent["f"](x)
            return x.numpy()


# --------------------------------------------------------------------------------------------- onnx


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


_ONNX_ACT = {
    "relu": "Relu",
    "tanh": "Tanh",
    "sigmoid": "Sigmoid",
    "softsign": "Softsign",
    "softplus": "Softplus",
}
_RNN_ACT = {
    "sigmoid": "Sigmoid",
    "tanh": "Tanh",
    "relu": "Relu",
    "leaky_relu": "LeakyRelu",
    "affine": "Affine",
    "thresholded_relu": "ThresholdedRelu",
    "scaled_tanh": "ScaledTanh",
    "hard_sigmoid": "HardSigmoid",
    "elu": "Elu",
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
            attrs["activations"] = [_RNN_ACT[a] for a in acts]
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


# ---------------------------------------------------------------------------------------------- ORT


def ort_session(model, threads: int = 1):
    """An ``onnxruntime.InferenceSession`` at its best for one stream: ``threads`` intra-op threads, one
    inter-op thread, sequential execution, all graph optimizations, CPU provider. ``model`` is a path,
    bytes or an ``onnx.ModelProto``."""
    import onnxruntime as ort

    so = ort.SessionOptions()
    so.intra_op_num_threads = threads
    so.inter_op_num_threads = 1
    so.execution_mode = ort.ExecutionMode.ORT_SEQUENTIAL
    so.graph_optimization_level = ort.GraphOptimizationLevel.ORT_ENABLE_ALL
    so.log_severity_level = 3
    if hasattr(model, "SerializeToString"):
        model = model.SerializeToString()
    return ort.InferenceSession(model, so, providers=["CPUExecutionProvider"])


class OrtStep:
    """Runs an ONNX step graph one step at a time with IOBinding and ping-pong state buffers.

    ``step(x)``: x (input_size,) or (batch, input_size) float32 -> y (output_size,) / (batch, output_size),
    a new array (for a sequence graph: X (T, input_size) -> Y (T, output_size)).
    States live in two preallocated buffer sets, A and B: even steps read A and write B, odd
    steps read B and write A, through two IOBindings made once; the input and output are preallocated too.
    ``run_with_iobinding`` is called on the session's C++ object directly, with no ``RunOptions``.
    """

    def __init__(self, graph: StepGraph, threads: int = 1, session=None):
        self.graph = graph
        self.sess = session if session is not None else ort_session(graph.model, threads)
        self._x = np.zeros(graph.x_shape, np.float32)
        self._y = np.zeros(graph.y_shape, np.float32)
        self._sa = [np.zeros(s.shape, np.float32) for s in graph.states]
        self._sb = [np.zeros(s.shape, np.float32) for s in graph.states]
        self._bind = [self._binding(self._sa, self._sb), self._binding(self._sb, self._sa)]
        self._raw = [b._iobinding for b in self._bind]
        self._run = self.sess._sess.run_with_iobinding
        self._x2 = self._x.reshape(-1, graph.x_shape[-1])  # (batch or T, input_size)
        self._y2 = self._y.reshape(-1, graph.y_shape[-1])
        self._x1, self._y1 = self._x2[0], self._y2[0]
        self.reset()

    def _binding(self, src: list[np.ndarray], dst: list[np.ndarray]):
        b = self.sess.io_binding()
        g = self.graph
        b.bind_input(g.x, "cpu", 0, np.float32, list(self._x.shape), self._x.ctypes.data)
        b.bind_output(g.y, "cpu", 0, np.float32, list(self._y.shape), self._y.ctypes.data)
        for s, a_in, a_out in zip(g.states, src, dst, strict=True):
            b.bind_input(s.name_in, "cpu", 0, np.float32, list(a_in.shape), a_in.ctypes.data)
            b.bind_output(s.name_out, "cpu", 0, np.float32, list(a_out.shape), a_out.ctypes.data)
        return b

    def reset(self) -> None:
        """Every stream back to the initial state (zeros or the layers' initial_h/initial_c)."""
        for s, a in zip(self.graph.states, self._sa, strict=True):
            a[...] = s.initial
        self._phase = 0

    def step(self, x: np.ndarray) -> np.ndarray:
        """One step: x (input_size,) or (batch, input_size) -> y (output_size,) or (batch, output_size)."""
        if x.ndim == 1:
            self._x1[:] = x
        else:
            self._x2[:] = x
        self._run(self._raw[self._phase], None)
        self._phase ^= 1
        return self._y1.copy() if x.ndim == 1 else self._y2.copy()

    @property
    def state(self) -> list[np.ndarray]:
        """The current states (copies), in the order of ``graph.states``."""
        cur = self._sa if self._phase == 0 else self._sb
        return [a.copy() for a in cur]


def step_graph_from_file(path: str) -> StepGraph:
    """A step graph from an ONNX file written by someone else (e.g. ``edgernn export``'s model.step.onnx).

    Convention: the first graph input is x_t, the other inputs are states; the first output is y_t and the
    next outputs are the new states, in the order of the state inputs and with their shapes. Symbolic
    dimensions are taken as 1 (one stream). States start at zero. Raises :class:`Unsupported` otherwise.
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
        return tuple(d.dim_value if d.HasField("dim_value") else 1 for d in t.shape.dim)

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


def ort_dynamic_int8(graph: StepGraph) -> StepGraph:
    """The step graph quantized by ONNX Runtime's own ``quantize_dynamic`` (int8 weights, per channel;
    activations quantized at run time; LSTM -> DynamicQuantizeLSTM, MatMul/Gemm -> integer kernels, GRU/RNN
    stay float). Its outputs differ from edgernn's int8 model by ORT's activation quantization error."""
    import os
    import tempfile

    import onnx
    from onnxruntime.quantization import QuantType, quantize_dynamic

    with tempfile.TemporaryDirectory(prefix="edgernn-ortq-") as d:
        src, dst = os.path.join(d, "f32.onnx"), os.path.join(d, "int8.onnx")
        onnx.save(graph.model, src)
        import logging

        root = logging.getLogger()
        level = root.level
        root.setLevel(logging.ERROR)  # "consider pre-processing" advice on every call
        try:
            quantize_dynamic(src, dst, weight_type=QuantType.QInt8, per_channel=True)
        finally:
            root.setLevel(level)
        model = onnx.load(dst)
    return StepGraph(model, graph.x, graph.y, graph.x_shape, graph.y_shape, list(graph.states))
