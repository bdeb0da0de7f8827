"""Recurrent cells: ``LSTM``, ``GRU``, ``RNN`` (every attribute of the ONNX spec) and
``com.microsoft.DynamicQuantizeLSTM`` (weights dequantized, kept exactly when symmetric int8) become
``lstm``/``gru``/``rnn`` layers. A preceding affine op folds into the input weights; ``initial_h``/
``initial_c`` become the plan's initial state (a constant), are dropped (zeros) or are the stream's state
(a graph input, recorded in ``cx.state_feeds`` for the state-wiring check)."""

from __future__ import annotations

import numpy as np

from ....artifact import ACTIVATION_DEFAULTS
from ..errors import CompileError, where
from ..passes.fuse import pop_trailing_affine
from ..values import Bcast, Const, Data, ShapeVal, State, Sym, is_identity, state_code
from .registry import register

#: ONNX activation name (lower case) -> plan activation
ACT_NAMES = {
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
ACT_PARAMS = {
    "affine": (True, True),
    "leaky_relu": (True, False),
    "thresholded_relu": (True, False),
    "scaled_tanh": (True, True),
    "hard_sigmoid": (True, True),
    "elu": (True, False),
}
CELL_DEFAULT_ACTS = {"RNN": ["tanh"], "LSTM": ["sigmoid", "tanh", "tanh"], "GRU": ["sigmoid", "tanh"]}
GATES = {"RNN": 1, "LSTM": 4, "GRU": 3}
RECURRENT_OPS = ("LSTM", "GRU", "RNN", "DynamicQuantizeLSTM")
#: input slots of initial_h / initial_c: a graph input reaching only these is the stream's state
STATE_SLOTS = (5, 6)


@register("LSTM", "GRU", "RNN")
def recurrent_op(cx, node, vals, at):
    return recurrent(cx, node, vals, at, node.op_type)


@register("DynamicQuantizeLSTM")
def dynamic_quantize_lstm(cx, node, vals, at):
    if node.domain != "com.microsoft":
        raise CompileError(f"unsupported op {node.op_type!r} ({where(node)})")
    vals = list(vals) + [None] * (12 - len(vals))
    exact = {}
    deq = []
    for slot, (wi, si, zi) in enumerate(((1, 8, 9), (2, 10, 11))):
        w, s, z = vals[wi], vals[si], vals[zi]
        if not all(isinstance(x, Const) for x in (w, s)) or (z is not None and not isinstance(z, Const)):
            raise CompileError(f"{where(node)}: quantized weights, scales and zero points must be constant")
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
    return recurrent(cx, node, vals, at, "LSTM", exact_int8=exact)


def _axes_of_x(node, x: Data, layout: int):
    """(time axis, batch axis, step) of X; marks the symbolic axes' roles."""
    if len(x.axes) != 3:
        raise CompileError(f"{where(node)}: X must be rank 3, got axes {x.axes}")
    t_ax, b_ax = (x.axes[0], x.axes[1]) if layout == 0 else (x.axes[1], x.axes[0])
    step = False
    if isinstance(t_ax, Sym):
        if t_ax.role == "B":
            raise CompileError(f"{where(node)}: the time axis of X is the model's batch axis")
        t_ax.role = "T"
    elif t_ax == 1:
        step = True
    else:
        raise CompileError(f"{where(node)}: the time axis of X has static size {t_ax}")
    if isinstance(b_ax, Sym):
        if b_ax.role == "T":
            raise CompileError(f"{where(node)}: the batch axis of X is the model's time axis")
        b_ax.role = "B"
    elif b_ax != 1:
        raise CompileError(f"{where(node)}: the batch axis of X has static size {b_ax}")
    if isinstance(x.axes[2], Sym):
        raise CompileError(f"{where(node)}: the feature axis of X is symbolic")
    return t_ax, b_ax, step


def _activations(node, at, op: str, nd: int) -> tuple[list, list, list]:
    """The cell's activations (plan names) with alpha/beta, consumed as ONNX Runtime consumes them."""
    acts_in = at.get("activations")
    n_act = len(CELL_DEFAULT_ACTS[op])
    if acts_in is None:
        acts = CELL_DEFAULT_ACTS[op] * nd
    else:
        if len(acts_in) != n_act * nd:
            raise CompileError(f"{where(node)}: {len(acts_in)} activations, expected {n_act * nd}")
        acts = []
        for a in acts_in:
            key = a.lower()
            if key not in ACT_NAMES:
                raise CompileError(f"{where(node)}: unknown activation {a!r}")
            acts.append(ACT_NAMES[key])
    alphas_in = list(at.get("activation_alpha", []))
    betas_in = list(at.get("activation_beta", []))
    alphas, betas = [], []
    for a in acts:
        na, nb = ACT_PARAMS.get(a, (False, False))
        da, db = ACTIVATION_DEFAULTS.get(a, (0.0, 0.0))
        alphas.append(float(alphas_in.pop(0)) if na and alphas_in else da)
        betas.append(float(betas_in.pop(0)) if nb and betas_in else db)
    return acts, alphas, betas


def recurrent(cx, node, vals, at, op: str, exact_int8: dict | None = None):
    """Append the ``op`` ("LSTM"/"GRU"/"RNN") layer; returns the values of Y, Y_h, Y_c (as many as the
    node has outputs). ``exact_int8``: role ("W"/"R") -> (int8 q, scale) of weights stored as int8."""
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
            raise CompileError(f"{where(node)}: unknown attribute {k!r}")
    vals = list(vals) + [None] * (8 - len(vals))
    x, wv, rv, bv, lens, h0, c0, pv = vals[:8]
    if op != "LSTM" and (c0 is not None or pv is not None):
        raise CompileError(f"{where(node)}: too many inputs for {op}")
    if not isinstance(x, Data):
        raise CompileError(f"{where(node)}: input X does not depend on the model input")
    for nm, v in (("W", wv), ("R", rv), ("B", bv), ("P", pv)):
        if v is not None and not isinstance(v, Const):
            raise CompileError(f"{where(node)}: {nm} must be constant (an initializer or constant subgraph)")
    plan = cx.plan
    plan.check_tip(x, where(node))
    if x.tokens:
        raise CompileError(f"{where(node)}: recurrent layer on raw token ids")
    if x.last:
        raise CompileError(f"{where(node)}: recurrent layer after the last time step was selected")
    direction = at.get("direction", "forward")
    if direction not in ("forward", "reverse", "bidirectional"):
        raise CompileError(f"{where(node)}: direction {direction!r}")
    nd = 2 if direction == "bidirectional" else 1
    layout = at.get("layout", 0)
    if layout not in (0, 1):
        raise CompileError(f"{where(node)}: layout {layout}")
    g = GATES[op]
    w = np.asarray(wv.arr, np.float64)
    r = np.asarray(rv.arr, np.float64)
    if w.ndim != 3 or r.ndim != 3 or w.shape[0] != nd or r.shape[0] != nd:
        raise CompileError(f"{where(node)}: W {w.shape} / R {r.shape} do not match direction {direction!r}")
    h = at.get("hidden_size", r.shape[-1])
    if w.shape[1] != g * h or r.shape[1:] != (g * h, h):
        raise CompileError(f"{where(node)}: W {w.shape} / R {r.shape} do not match hidden_size {h}")
    t_ax, b_ax, step = _axes_of_x(node, x, layout)
    n_in = x.axes[2]
    if w.shape[2] != n_in:
        raise CompileError(f"{where(node)}: W expects {w.shape[2]} inputs, X has {n_in}")
    if step and (direction != "forward" or (h0 is not None and not isinstance(h0, State))):
        raise CompileError(
            f"{where(node)}: a single-step recurrent node needs a forward direction "
            "and its state as a graph input"
        )
    x_ident = is_identity(x.perm, plan.tip_size()) and not x.bad.any()
    w = plan.fold_cols(x, w, where(node))
    aff = None if exact_int8 else pop_trailing_affine(plan, x)
    if aff is not None:  # W (x*sc + sh) = (W diag(sc)) x + W sh, added to the input bias Wb
        sc, sh = aff
        extra_b = np.einsum("dgi,i->dg", w, sh)
        w = w * sc[None, None, :]
        add = np.concatenate([extra_b, np.zeros_like(extra_b)], axis=1)
        if bv is not None and np.shape(bv.arr) != add.shape:
            raise CompileError(f"{where(node)}: B has shape {np.shape(bv.arr)}, expected {add.shape}")
        bv = Const(add + (0.0 if bv is None else np.asarray(bv.arr, np.float64)))
    if lens is not None:
        _check_lens(cx, node, lens, t_ax)
    tensors: dict[str, np.ndarray] = {"W": w, "R": r}
    if bv is not None:
        b = np.asarray(bv.arr, np.float64)
        if b.shape != (nd, 2 * g * h):
            raise CompileError(f"{where(node)}: B has shape {b.shape}, expected {(nd, 2 * g * h)}")
        if np.any(b != 0):
            tensors["B"] = b
    if pv is not None:
        p = np.asarray(pv.arr, np.float64)
        if p.shape != (nd, 3 * h):
            raise CompileError(f"{where(node)}: P has shape {p.shape}, expected {(nd, 3 * h)}")
        if np.any(p != 0):
            tensors["P"] = p
    for nm, sv in (("initial_h", h0), ("initial_c", c0)):
        arr = _initial_state(node, nm, sv, nd, h, layout)
        if arr is not None:
            tensors[nm] = arr
        if isinstance(sv, State):
            ix = None
            if sv.ix is not None and len(sv.ix.dims) == 3:
                a = np.asarray(sv.ix.arr)
                a = np.transpose(a, (1, 0, 2)) if layout == 1 else a
                if a.shape == (nd, 1, h):
                    ix = a[:, 0, :]
            cx.state_feeds.append((sv.src, len(plan.layers), nm[-1], ix))
    acts, alphas, betas = _activations(node, at, op, nd)
    kind = op.lower()
    layer = {
        "kind": kind,
        "name": plan.name(kind),
        "input_size": int(w.shape[2]),
        "hidden_size": int(h),
        "direction": direction,
        "activations": acts,
        "activation_alpha": alphas,
        "activation_beta": betas,
        "clip": float(at["clip"]) if "clip" in at else None,
    }
    cells = _cells_used(cx, node, op, step)
    if op == "LSTM":
        layer["input_forget"] = bool(at.get("input_forget", 0))
        if cells:
            layer["cell_output"] = True  # the op writes [h; c] per step: Y_c is read from its c block
    if op == "GRU":
        layer["linear_before_reset"] = int(at.get("linear_before_reset", 0))
    layer["output_size"] = (2 if cells else 1) * nd * h
    plan.add_layer(layer, tensors)
    if exact_int8:
        for role, qs in exact_int8.items():
            if role == "R" or x_ident:
                plan.exact_int8[layer["tensors"][role]] = qs
    return _outputs(cx, node, nd, h, layout, t_ax, b_ax, step, direction, cells)


def _cells_used(cx, node, op: str, step: bool) -> bool:
    """Whether the LSTM node's ``Y_c`` is computed: a node over a time axis whose Y_c a live node reads
    or the plan outputs, and that is not a state output (a step graph's c is the stream's state) — or in
    a step graph whose state outputs are computed from Y_c (``c' = f(Y_c)``: ``cx.rewire``)."""
    if op != "LSTM" or len(node.output) < 3 or not node.output[2]:
        return False
    yc = node.output[2]
    if step:
        return bool(cx.rewire) and yc in cx.used
    return yc in cx.used and yc not in {so for _, so in cx.state_pairs}


def _outputs(cx, node, nd, h, layout, t_ax, b_ax, step, direction, cells=False) -> list:
    """The values of Y, Y_h and Y_c; in a step graph, and for a forward node over a time axis (whose Y_h/Y_c
    are the state after the last step, what the stream keeps), Y_h/Y_c also get state codes for the
    wiring check. With ``cells`` the node's op writes [h; c] (``cell_output``): Y_c is its c block, the
    reverse units of both selected at time 0 by a ``final`` op like Y_h's."""
    pos = len(cx.plan.layers)
    f = nd * h
    ident = np.arange(f)
    t_axis = 1 if step else t_ax
    y_axes = [t_axis, nd, b_ax, h] if layout == 0 else [b_ax, t_axis, nd, h]
    y = Data(y_axes, ident, np.zeros(f, bool), pos, False, step)
    bad_h = np.zeros(f, bool)
    fin = None
    if not step and direction in ("reverse", "bidirectional"):
        # the reverse direction's last step is time 0: a ``final`` op selects it when these are used
        bad_h[(nd - 1) * h :] = True
        fin = pos
    yh_axes = [nd, b_ax, h] if layout == 0 else [b_ax, nd, h]
    yh = Data(
        yh_axes,
        ident,
        bad_h,
        pos,
        True,
        step,
        why=f"Y_h of the reverse direction of {where(node)} (its final state at time 0)",
        fin=fin,
    )
    if step or direction == "forward":
        li = pos - 1
        for k, which in ((1, "h"), (2, "c")):
            if len(node.output) > k and node.output[k]:
                codes = state_code(li, which, np.arange(f)).reshape(nd, 1, h)
                if layout == 1:
                    codes = np.transpose(codes, (1, 0, 2))
                cx.state_codes[node.output[k]] = Bcast(codes, list(yh_axes))
    if cells:
        yc = Data(
            yh_axes,
            f + ident,
            bad_h.copy(),
            pos,
            True,
            step,
            why=f"Y_c of the reverse direction of {where(node)} (its final cell state at time 0)",
            fin=fin,
        )
    else:  # a step graph: Y_c is the state
        yc = Data(
            yh_axes,
            ident,
            np.ones(f, bool),
            pos,
            True,
            step,
            why=(
                f"Y_c (the final cell state) of {where(node)} in a step graph, where it is the stream's "
                "state: compile the sequence graph to read it"
            ),
        )
    return [y, yh, yc][: len(node.output)]


def _check_lens(cx, node, lens, t_ax) -> None:
    """``sequence_lens`` must be absent/empty or equal the full sequence length everywhere."""
    if isinstance(lens, Const):
        vals = np.asarray(lens.arr).ravel()
        if vals.size == 0:
            return
        if isinstance(t_ax, Sym) and t_ax.static is not None and np.all(vals == t_ax.static):
            cx.notes.append(
                f"{where(node)}: sequence_lens = {t_ax.static} (the static sequence length) accepted; "
                "the compiled model runs whole sequences"
            )
            return
    elif isinstance(lens, (Bcast, ShapeVal)):
        if all(x is t_ax for x in np.asarray(lens.arr, dtype=object).ravel()):
            return
    raise CompileError(
        f"{where(node)}: sequence_lens must be absent or equal to the full sequence length "
        "(the compiled model always runs whole sequences)"
    )


def _initial_state(node, nm: str, sv, nd: int, h: int, layout: int) -> np.ndarray | None:
    """The plan's ``initial_h``/``initial_c`` [D, H] from a constant equal for every batch row; None when
    absent, zero or a state graph input."""
    if sv is None or isinstance(sv, State):
        return None
    if isinstance(sv, (Bcast, Const)):
        arr = np.asarray(sv.arr, np.float64)
    else:
        raise CompileError(f"{where(node)}: {nm} must be a constant, zeros, or a state graph input")
    if arr.ndim != 3:
        raise CompileError(f"{where(node)}: {nm} must be rank 3, got shape {arr.shape}")
    if layout == 1:
        arr = np.transpose(arr, (1, 0, 2))
    if arr.shape[0] != nd or arr.shape[2] != h:
        raise CompileError(f"{where(node)}: {nm} has shape {arr.shape}, expected [{nd}, batch, {h}]")
    if np.any(arr != arr[:, :1, :]):
        raise CompileError(
            f"{where(node)}: {nm} differs between batch rows; the plan has one initial state for every stream"
        )
    out = arr[:, 0, :]
    return out if np.any(out != 0) else None
