"""Slow, obvious numpy references of every layer kind (float64), straight from the ONNX operator spec.

They read a plan and its tensors (docs/ARTIFACT.md) directly, sharing no code with the runtime's packer
or kernels, so they are an independent oracle. ``reference_predict(plan, tensors, X)`` returns the
(T, output_size) outputs of a whole sequence from the initial state.
"""

from __future__ import annotations

import numpy as np

ACT_DEFAULTS = {
    "leaky_relu": (0.01, 0.0),
    "affine": (1.0, 0.0),
    "thresholded_relu": (1.0, 0.0),
    "scaled_tanh": (1.0, 1.0),
    "hard_sigmoid": (0.2, 0.5),
    "elu": (1.0, 0.0),
}


def act(name: str, x: np.ndarray, alpha: float | None = None, beta: float | None = None) -> np.ndarray:
    """ONNX activation functions (float64)."""
    da, db = ACT_DEFAULTS.get(name, (0.0, 0.0))
    a = da if alpha is None else alpha
    b = db if beta is None else beta
    x = np.asarray(x, np.float64)
    with np.errstate(over="ignore", invalid="ignore"):
        if name == "linear":
            return x
        if name == "relu":
            return np.where(x < 0, 0.0, x)
        if name == "tanh":
            return np.tanh(x)
        if name == "sigmoid":
            return 1.0 / (1.0 + np.exp(-x))
        if name == "softmax":
            e = np.exp(x - np.max(x))
            return e / e.sum()
        if name == "leaky_relu":
            return np.where(x < 0, a * x, x)
        if name == "affine":
            return a * x + b
        if name == "thresholded_relu":
            return np.where(x > a, x, 0.0)
        if name == "scaled_tanh":
            return a * np.tanh(b * x)
        if name == "hard_sigmoid":
            return np.clip(a * x + b, 0.0, 1.0)
        if name == "elu":
            return np.where(x < 0, a * (np.exp(np.minimum(x, 0)) - 1), x)
        if name == "softsign":
            return x / (1 + np.abs(x))
        if name == "softplus":
            return np.log1p(np.exp(x))
    raise ValueError(name)


def _f(t):
    if t is None:
        return None
    return np.asarray(t, np.float64)


def _w(layer, tensors, role):
    """A (dequantized) float64 tensor of a layer, or None."""
    name = layer["tensors"].get(role)
    if name is None:
        return None
    t = tensors[name]
    if t.dtype == np.int8:
        s = np.asarray(tensors[layer["tensors"][role + "_scale"]], np.float64)
        if role == "W_data":
            ptr = tensors[layer["tensors"]["W_indptr"]]
            rows = np.repeat(np.arange(len(ptr) - 1), np.diff(ptr))
            return t.astype(np.float64) * s[rows]
        return t.astype(np.float64) * s.reshape(s.shape + (1,) * (t.ndim - s.ndim))  # conv: per channel
    return np.asarray(t, np.float64)


def _clip(v, clip):
    return v if clip is None else np.clip(v, -clip, clip)


def recurrent_layer(layer: dict, tensors: dict, X: np.ndarray) -> np.ndarray:
    """ONNX RNN/LSTM/GRU over X (T, I) -> Y (T, D*H), directions concatenated per step."""
    kind, H = layer["kind"], layer["hidden_size"]
    direction = layer.get("direction", "forward")
    D = 2 if direction == "bidirectional" else 1
    W, R, B = _w(layer, tensors, "W"), _w(layer, tensors, "R"), _w(layer, tensors, "B")
    G = {"rnn": 1, "lstm": 4, "gru": 3}[kind]
    if B is None:
        B = np.zeros((D, 2 * G * H))
    defaults = {"rnn": ["tanh"], "lstm": ["sigmoid", "tanh", "tanh"], "gru": ["sigmoid", "tanh"]}[kind]
    acts = layer.get("activations") or defaults * D
    na = len(defaults)
    alphas = layer.get("activation_alpha") or [None] * len(acts)
    betas = layer.get("activation_beta") or [None] * len(acts)
    clip = layer.get("clip")
    T = X.shape[0]
    Y = np.zeros((T, D * H))
    h0, c0, P = _w(layer, tensors, "initial_h"), _w(layer, tensors, "initial_c"), _w(layer, tensors, "P")
    for d in range(D):
        reverse = direction == "reverse" or d == 1

        def f(j, v, d=d):
            i = d * na + j
            return act(acts[i], v, alphas[i], betas[i])

        h = np.zeros(H) if h0 is None else h0[d].copy()
        c = np.zeros(H) if c0 is None else c0[d].copy()
        Wd, Rd, Wb, Rb = W[d], R[d], B[d][: G * H], B[d][G * H :]
        for t in range(T - 1, -1, -1) if reverse else range(T):
            x = X[t]
            if kind == "rnn":
                h = f(0, _clip(Wd @ x + Rd @ h + Wb + Rb, clip))
            elif kind == "lstm":
                g = Wd @ x + Rd @ h + Wb + Rb
                gi, go, gf, gc = g[:H], g[H : 2 * H], g[2 * H : 3 * H], g[3 * H :]
                pi, po, pf = (P[d][:H], P[d][H : 2 * H], P[d][2 * H :]) if P is not None else (0, 0, 0)
                i = f(0, _clip(gi + pi * c, clip))
                fg = 1 - i if layer.get("input_forget") else f(0, _clip(gf + pf * c, clip))
                c = fg * c + i * f(1, _clip(gc, clip))
                o = f(0, _clip(go + po * c, clip))
                h = o * f(2, c)
            else:
                z = f(0, _clip(Wd[:H] @ x + Rd[:H] @ h + Wb[:H] + Rb[:H], clip))
                r = f(0, _clip(Wd[H : 2 * H] @ x + Rd[H : 2 * H] @ h + Wb[H : 2 * H] + Rb[H : 2 * H], clip))
                if layer.get("linear_before_reset", 0):
                    pre = Wd[2 * H :] @ x + r * (Rd[2 * H :] @ h + Rb[2 * H :]) + Wb[2 * H :]
                else:
                    pre = Wd[2 * H :] @ x + Rd[2 * H :] @ (r * h) + Rb[2 * H :] + Wb[2 * H :]
                h = (1 - z) * f(1, _clip(pre, clip)) + z * h
            Y[t, d * H : (d + 1) * H] = h
    return Y


def esn_layer(layer: dict, tensors: dict, U: np.ndarray) -> np.ndarray:
    """Leaky ESN: x <- (1-a) x + a tanh(W_in u + W x + b); y = x or [1; u; x]."""
    N, a = layer["reservoir_size"], layer["leak_rate"]
    W_in = _w(layer, tensors, "W_in")
    b = _w(layer, tensors, "b")
    if layer.get("sparse"):
        data = _w(layer, tensors, "W_data")
        ind = tensors[layer["tensors"]["W_indices"]]
        ptr = tensors[layer["tensors"]["W_indptr"]]
        W = np.zeros((N, N))
        for r in range(N):
            for j in range(ptr[r], ptr[r + 1]):
                W[r, ind[j]] += data[j]
    else:
        W = _w(layer, tensors, "W")
    x = np.zeros(N)
    out = []
    for u in U:
        pre = W_in @ u + W @ x + (0 if b is None else b)
        x = (1 - a) * x + a * np.tanh(pre)
        out.append(np.concatenate([[1.0], u, x]) if layer.get("readout_input") == "extended" else x.copy())
    return np.array(out).reshape(len(U), -1)


def attention_layer(layer: dict, tensors: dict, Hs: np.ndarray) -> np.ndarray:
    """Row t: the softmax(v·tanh(W h_τ + b)) weighted mean of h_1..h_t, computed from scratch each t."""
    W, b, v = _w(layer, tensors, "W"), _w(layer, tensors, "b"), _w(layer, tensors, "v")
    scores = np.array([v @ np.tanh(W @ h + b) for h in Hs])
    out = []
    for t in range(len(Hs)):
        s = scores[: t + 1]
        e = np.exp(s - s.max())
        out.append((e / e.sum()) @ Hs[: t + 1])
    return np.array(out).reshape(len(Hs), -1)


def conv1d_layer(layer: dict, tensors: dict, X: np.ndarray) -> np.ndarray:
    """ONNX Conv 1-D of every row of X (T, Cin·L), written as the definition's loops, float64."""
    cin, cout, k = layer["in_channels"], layer["out_channels"], layer["kernel_size"]
    s, d, g = layer.get("stride", 1), layer.get("dilation", 1), layer.get("groups", 1)
    pb, pe = layer.get("pads", [0, 0])
    n = X.shape[1] // cin
    lout = (n + pb + pe - d * (k - 1) - 1) // s + 1
    W, b = _w(layer, tensors, "W"), _w(layer, tensors, "b")
    out = np.zeros((len(X), cout, lout))
    for r, x in enumerate(X.reshape(len(X), cin, n)):
        for co in range(cout):
            gi = co // (cout // g)
            for t in range(lout):
                acc = 0.0 if b is None else b[co]
                for ci in range(cin // g):
                    for kk in range(k):
                        p = t * s + kk * d - pb
                        if 0 <= p < n:
                            acc += W[co, ci, kk] * x[gi * (cin // g) + ci, p]
                out[r, co, t] = acc
    a = layer.get("activation", "linear")
    return np.array([act(a, v, layer.get("alpha"), layer.get("beta")) for v in out.reshape(len(X), -1)])


GRAPH_FUNCS = {
    "sqrt": np.sqrt, "square": np.square, "abs": np.abs, "neg": np.negative, "exp": np.exp, "log": np.log,
    "reciprocal": np.reciprocal,
    "add": np.add, "sub": np.subtract, "mul": np.multiply, "div": np.divide, "max": np.maximum,
    "min": np.minimum, "pow": np.power,
    "gt": lambda a, b: (a > b) * 1.0, "lt": lambda a, b: (a < b) * 1.0, "ge": lambda a, b: (a >= b) * 1.0,
    "le": lambda a, b: (a <= b) * 1.0, "eq": lambda a, b: (a == b) * 1.0,
    "and": lambda a, b: ((a != 0) & (b != 0)) * 1.0, "or": lambda a, b: ((a != 0) | (b != 0)) * 1.0,
    "not": lambda a: (a == 0) * 1.0,
}  # fmt: skip


def _where(c: np.ndarray, ab: np.ndarray) -> np.ndarray:
    """A ``where`` op over T rows: a where c is non-zero, else b (``ab`` = [a; b] per row)."""
    n = c.shape[1]
    return np.where(c != 0, ab[:, :n], ab[:, n:])


def reference_predict(plan: dict, tensors: dict, X: np.ndarray) -> np.ndarray:
    """The whole model over X (T, input_size) from its initial state -> (T, output_size), float64.

    A format-2 plan runs op by op, each reading its input values by name; one holding ``state`` slots
    runs step by step (each slot's value from before the step, then its ``next`` value)."""
    if plan.get("format_version") == 2 and any(op["kind"] == "state" for op in plan["ops"]):
        return _reference_slots(plan, tensors, np.asarray(X, np.float64))
    if plan.get("format_version") == 2:
        vals = {plan["input"]["value"]: np.asarray(X, np.float64)}
        for op in plan["ops"]:
            layer = {
                "kind": op["kind"],
                "name": op["name"],
                "input_size": vals[op["inputs"][0]].shape[1],
                "output_size": plan["values"][op["outputs"][0]]["shape"][0],
                **op.get("attrs", {}),
                "tensors": op.get("tensors", {}),
            }
            if op["kind"] == "binary":
                a, b = (vals[v] for v in op["inputs"])
                vals[op["outputs"][0]] = GRAPH_FUNCS[layer["op"]](a, b)
            elif op["kind"] == "matmul":
                vals[op["outputs"][0]] = _matmul(layer, *(vals[v] for v in op["inputs"]))
            elif op["kind"] == "where":
                vals[op["outputs"][0]] = _where(*(vals[v] for v in op["inputs"]))
            else:
                one = dict(plan, format_version=1, layers=[layer])
                vals[op["outputs"][0]] = reference_predict(one, tensors, vals[op["inputs"][0]])
        return vals[plan["output"]["value"]]
    cur = np.asarray(X, np.float64)
    for layer in plan["layers"]:
        k = layer["kind"]
        if k == "gather":
            ix = np.asarray(tensors[layer["tensors"]["index"]]).astype(int)
            cur = np.where(ix >= 0, cur[:, np.maximum(ix, 0)], 0.0)
        elif k == "conv1d":
            cur = conv1d_layer(layer, tensors, cur)
        elif k == "unary":
            cur = GRAPH_FUNCS[layer["func"]](cur)
        elif k == "final":  # forward units as they are, reverse units from step 0 (their last step)
            r0 = layer["hidden_size"] if layer["direction"] == "bidirectional" else 0
            cur = cur.copy()
            cur[:, r0:] = cur[0, r0:]
        elif k == "tconv":  # causal: zeros before the first step
            W, b = _w(layer, tensors, "W"), _w(layer, tensors, "b")
            kk, d = layer["kernel_size"], layer.get("dilation", 1)
            xp = np.concatenate([np.zeros(((kk - 1) * d, cur.shape[1])), cur])
            z = np.stack(
                [np.einsum("oik,ki->o", W, xp[t : t + (kk - 1) * d + 1 : d]) for t in range(len(cur))]
            )
            z = z + (0 if b is None else b)
            a = layer.get("activation", "linear")
            cur = np.array([act(a, r, layer.get("alpha"), layer.get("beta")) for r in z]).reshape(len(z), -1)
        elif k == "layernorm":
            n = layer["size"]
            v = cur.reshape(len(cur), -1, n)
            mu = v.mean(axis=2, keepdims=True)
            z = (v - mu) / np.sqrt(((v - mu) ** 2).mean(axis=2, keepdims=True) + layer["epsilon"])
            b = _w(layer, tensors, "bias")
            cur = (z * _w(layer, tensors, "scale") + (0 if b is None else b)).reshape(len(cur), -1)
        elif k in ("rnn", "lstm", "gru"):
            cur = recurrent_layer(layer, tensors, cur)
        elif k == "esn":
            cur = esn_layer(layer, tensors, cur)
        elif k == "attention":
            cur = attention_layer(layer, tensors, cur)
        elif k == "dense":
            W, b = _w(layer, tensors, "W"), _w(layer, tensors, "b")
            z = cur @ W.T + (0 if b is None else b)
            a = layer.get("activation", "linear")
            cur = np.array([act(a, r, layer.get("alpha"), layer.get("beta")) for r in z]).reshape(len(z), -1)
        elif k == "normalize":
            cur = (cur - _f(tensors[layer["tensors"]["mean"]])) / _f(tensors[layer["tensors"]["std"]])
        elif k == "affine":
            cur = cur * _f(tensors[layer["tensors"]["scale"]]) + _f(tensors[layer["tensors"]["shift"]])
        elif k == "activation":
            a = layer["activation"]
            cur = np.array([act(a, r, layer.get("alpha"), layer.get("beta")) for r in cur]).reshape(
                len(cur), -1
            )
        elif k == "embedding":
            table = _w(layer, tensors, "table")
            cur = table[cur[:, 0].astype(int)]
        elif k == "onehot":
            cur = np.eye(layer["vocab_size"])[cur[:, 0].astype(int)]
        else:
            raise ValueError(k)
    return cur


def _matmul(layer: dict, a: np.ndarray, b: np.ndarray) -> np.ndarray:
    """A ``matmul`` op over T rows: row t of a as [B, M, K] times row t of b as [B, K, N], written out."""
    bt, m, k, n = (layer.get("batch", 1), layer["m"], layer["k"], layer["n"])
    A, Bm = a.reshape(len(a), bt, m, k), b.reshape(len(b), bt, k, n)
    out = np.zeros((len(a), bt, m, n))
    for t in range(len(a)):
        for q in range(bt):
            for i in range(m):
                for j in range(n):
                    out[t, q, i, j] = sum(A[t, q, i, kk] * Bm[t, q, kk, j] for kk in range(k))
    return out.reshape(len(a), -1)


def _reference_slots(plan: dict, tensors: dict, X: np.ndarray) -> np.ndarray:
    """A format-2 plan with state slots, step by step: every other op over one row (stateless ops only)."""
    slots = {}
    for op in plan["ops"]:
        if op["kind"] == "state":
            n = plan["values"][op["outputs"][0]]["shape"][0]
            init = op.get("tensors", {}).get("initial")
            slots[op["name"]] = np.zeros(n) if init is None else _f(tensors[init]).astype(np.float64)
    rows = []
    for x in X:
        vals = {plan["input"]["value"]: x[None]}
        for op in plan["ops"]:
            if op["kind"] == "state":
                vals[op["outputs"][0]] = slots[op["name"]][None].copy()
                continue
            sub = {**plan, "ops": [op], "output": {**plan["output"], "value": op["outputs"][0]}}
            sub["input"] = {**plan["input"], "value": op["inputs"][0]}
            if op["kind"] == "binary":
                a, b = (vals[v] for v in op["inputs"])
                vals[op["outputs"][0]] = GRAPH_FUNCS[op["attrs"]["op"]](a, b)
            elif op["kind"] == "where":
                vals[op["outputs"][0]] = _where(*(vals[v] for v in op["inputs"]))
            else:
                vals[op["outputs"][0]] = reference_predict(sub, tensors, vals[op["inputs"][0]])
        for op in plan["ops"]:
            if op["kind"] == "state":
                slots[op["name"]] = vals[op["attrs"]["next"]][0].copy()
        rows.append(vals[plan["output"]["value"]][0])
    return np.stack(rows)


def assert_close(actual, expected, atol: float = 1e-5, rtol: float = 1e-4, what: str = "") -> None:
    """ONNX Runtime's float32 tolerance |a-e| <= atol + rtol*|e|, NaN matching NaN."""
    a = np.asarray(actual, np.float64)
    e = np.asarray(expected, np.float64)
    assert a.shape == e.shape, f"{what}: shape {a.shape} != {e.shape}"
    nan_a, nan_e = np.isnan(a), np.isnan(e)
    assert np.array_equal(nan_a, nan_e), f"{what}: NaN positions differ"
    ok = nan_a | (np.abs(a - e) <= atol + rtol * np.abs(e))
    if not ok.all():
        idx = np.unravel_index(np.argmax(np.where(ok, 0, np.abs(a - e))), a.shape)
        raise AssertionError(
            f"{what}: {np.count_nonzero(~ok)} values out of tolerance; worst at {idx}: {a[idx]} vs {e[idx]}"
        )
