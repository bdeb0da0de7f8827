"""The PyTorch baseline: :class:`TorchBaseline` runs a plan as torch cells / fused modules on the
artifact's float32 weights. torch is imported inside the constructor."""

from __future__ import annotations

from collections.abc import Mapping

import numpy as np

from ...artifact import validate_plan
from .common import Unsupported, _check_plan, dequantized


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
