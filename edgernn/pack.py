"""Pack a validated plan and its tensors into the kernels' flat buffers (see ``kernels/layout.py``).

Done once per model at load time: recurrent float32 weights are fused into one ``[W | R]`` block per
direction (one pass over ``[x; h]`` per step), int8 weights are kept as int8 with their per-row scales,
float16 tensors are widened to float32, LSTM/RNN biases are pre-summed (Wb + Rb).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .artifact import ACTIVATION_DEFAULTS, ACTIVATIONS, DIRECTIONS, GRAPH_KINDS, RECURRENT_GATES, graph_layers
from .kernels import layout as L

_ALIGN = 16  # floats / bytes alignment of every block (64 bytes for float32)
#: a CSR reservoir at least this dense is packed as a dense matrix (the file stays CSR): from ~4% nonzeros
#: on, one vectorized pass over all N² weights beats the gathers (500 units at 10%: 32 -> 16 µs per step)
DENSIFY_MIN_DENSITY = 0.05
#: ... unless the dense matrix would take more than this many bytes
DENSIFY_MAX_BYTES = 4 << 20
#: an int8 recurrent layer whose fused float32 [W | R] block takes at most this many bytes per direction
#: is computed from that block (q·scale, made once at load): a small block sits in cache either way, so
#: int8 saves no memory traffic but costs conversions and a second pass (LSTM 8->64: 2.75 -> 2.4 µs).
#: The file stays int8. ``EDGERNN_DEQUANTIZE_MAX_BYTES`` overrides it (0: always compute in int8).
DEQUANTIZE_MAX_BYTES = 256 << 10


def dequantize_max_bytes() -> int:
    """The int8 -> float32 packing limit in bytes: ``EDGERNN_DEQUANTIZE_MAX_BYTES`` or the default."""
    v = os.environ.get("EDGERNN_DEQUANTIZE_MAX_BYTES", "").strip()
    if not v:
        return DEQUANTIZE_MAX_BYTES
    if not v.isdigit():
        from .errors import EdgeRNNError

        raise EdgeRNNError(f"EDGERNN_DEQUANTIZE_MAX_BYTES must be a non-negative integer (bytes), got {v!r}")
    return int(v)


@dataclass
class Packed:
    """The packed model: read-only buffers ``wf``/``wb`` shared by all streams, and the stream template."""

    wf: np.ndarray  # float32: header, records, params, float weights
    wb: np.ndarray  # int8: int8 weights, int32 CSR data
    state0: np.ndarray  # float32 (n_state,): the state after reset()
    m_size: int  # length of one stream buffer M
    n_state: int
    out_off: int
    in_size: int
    out_size: int
    seq_width: int
    seq_extra: int
    streamable: bool
    not_streamable_reason: str
    state_layout: list = field(default_factory=list)  # [(name, offset, size)]
    dense_reservoirs: list = field(default_factory=list)  # names of CSR reservoirs packed dense
    dequantized: list = field(default_factory=list)  # names of int8 recurrent layers packed as float32


class _Buf:
    def __init__(self, dtype, start: int = 0):
        self.dtype = np.dtype(dtype)
        self.parts: list[np.ndarray] = []
        self.n = start

    def add(self, arr: np.ndarray, align: int = _ALIGN) -> int:
        pad = -self.n % align
        if pad:
            self.parts.append(np.zeros(pad, self.dtype))
            self.n += pad
        off = self.n
        a = np.ascontiguousarray(arr, dtype=self.dtype).ravel()
        self.parts.append(a)
        self.n += a.size
        return off

    def array(self, head: np.ndarray | None = None, min_len: int = 0) -> np.ndarray:
        parts = ([head] if head is not None else []) + self.parts
        out = np.concatenate(parts) if parts else np.zeros(0, self.dtype)
        if out.size < min_len:
            out = np.concatenate([out, np.zeros(min_len - out.size, self.dtype)])
        return out


def _put_off(rec: np.ndarray, pos: int, off: int) -> None:
    rec[pos] = off >> 24
    rec[pos + 1] = off & 0xFFFFFF


def _float(t: np.ndarray) -> np.ndarray:
    return np.asarray(t, dtype=np.float32)


def _dequantized(w: np.ndarray, scale: np.ndarray | None) -> np.ndarray:
    """q · scale[..., None] in float32 for an int8 matrix (a float one is returned as is)."""
    if w.dtype != np.int8:
        return w
    return (w.astype(np.float32) * np.asarray(scale, np.float32)[..., None]).astype(np.float32)


def _densified(n: int, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray) -> np.ndarray | None:
    """The (n, n) dense form of a CSR reservoir (same dtype: float32, or int8 with the same per-row scales),
    or None when it is too sparse or too large for that to pay (see DENSIFY_MIN_DENSITY)."""
    item = 1 if data.dtype == np.int8 else 4
    if n == 0 or data.size < DENSIFY_MIN_DENSITY * n * n or n * n * item > DENSIFY_MAX_BYTES:
        return None
    rows = np.repeat(np.arange(n), np.diff(np.asarray(indptr, np.int64)))
    cols = np.asarray(indices, np.int64)
    if np.unique(rows * n + cols).size != cols.size:
        return None  # repeated (row, col) entries add up in CSR; keep that form (int8 sums could overflow)
    dense = np.zeros((n, n), np.int8 if item == 1 else np.float32)
    dense[rows, cols] = data if item == 1 else _float(data)
    return dense


def pack(plan: dict, tensors: dict[str, np.ndarray]) -> Packed:
    """Pack a plan validated by :func:`edgernn.artifact.validate_plan` (either format version) and its
    checked tensors. Every value has its own region of M; a layer's record holds the offsets of the
    values it reads (``R_IN``, and ``R_IN2`` for a second input)."""
    layers, inputs = graph_layers(plan)
    nl = len(layers)
    head_len = L.HEADER + nl * L.REC
    wf = _Buf(np.float32, start=head_len)
    wb = _Buf(np.int8)
    recs = np.zeros((nl, L.REC), np.float32)

    def T(layer, role):
        name = layer["tensors"].get(role)
        return None if name is None else tensors[name]

    def add_matrix(rec, j, layer, role, mat, scale):
        """Descriptor j <- matrix ``mat`` (rows x cols); int8 when its dtype is int8."""
        p = L.R_MAT + j * L.MAT
        rows, cols = mat.shape
        if mat.dtype == np.int8:
            rec[p + L.M_Q] = 1
            _put_off(rec, p + L.M_OFF, wb.add(mat))
            _put_off(rec, p + L.M_SOFF, wf.add(_float(scale)))
        else:
            rec[p + L.M_Q] = 0
            _put_off(rec, p + L.M_OFF, wf.add(_float(mat)))
        rec[p + L.M_ROWS] = rows
        rec[p + L.M_COLS] = cols
        rec[p + L.M_LD] = cols

    def set_vec(rec, slot, arr):
        _put_off(rec, L.R_VEC + 2 * slot, wf.add(_float(arr)))

    def set_params(rec, acts, alphas, betas, clip=None, leak=0.0, per_direction=1):
        """Activation j of direction d goes to slot 3d + j (the kernels' layout)."""
        fp = np.zeros(L.NP, np.float32)
        for i, a in enumerate(acts):
            slot = 3 * (i // per_direction) + i % per_direction
            rec[L.R_ACT + slot] = ACTIVATIONS.index(a)
            da, db = ACTIVATION_DEFAULTS.get(a, (0.0, 0.0))
            fp[L.P_ALPHA + slot] = da if alphas is None else alphas[i]
            fp[L.P_BETA + slot] = db if betas is None else betas[i]
        fp[L.P_CLIP] = np.inf if clip is None else clip
        fp[L.P_LEAK] = leak
        _put_off(rec, L.R_FP, wf.add(fp))

    # stream buffer M: [state | input copy | layer outputs | shared scratch]
    state_sizes = []
    for layer in layers:
        k = layer["kind"]
        if k in RECURRENT_GATES:
            state_sizes.append(layer["hidden_size"] * (2 if k == "lstm" else 1))
        elif k == "esn":
            state_sizes.append(layer["reservoir_size"])
        elif k == "attention":
            state_sizes.append(layer["input_size"] + 2)
        elif k in GRAPH_KINDS and hasattr(_graph_ops()[k], "state_size"):
            state_sizes.append(_graph_ops()[k].state_size(layer))
        else:
            state_sizes.append(0)
    n_state = int(sum(state_sizes))
    pos = n_state
    in_off = pos
    pos += plan["input"]["size"]
    out_offs = []
    for layer in layers:
        out_offs.append(pos)
        pos += layer["output_size"]
    scratch = 0
    for layer in layers:
        k, i = layer["kind"], layer["input_size"]
        if k in RECURRENT_GATES:
            h = layer["hidden_size"]
            scratch = max(scratch, {"rnn": 2 * h, "lstm": 6 * h, "gru": 6 * h}[k] + i)
        elif k == "esn":
            n = layer["reservoir_size"]
            # + the quantized state of dynamic_int8 (n bytes, and a 68-byte copy of its last chunk)
            scratch = max(scratch, n + (n + 3) // 4 + 17)
        elif k == "attention":
            scratch = max(scratch, layer["attention_size"])
        elif k in GRAPH_KINDS:
            scratch = max(scratch, _graph_ops()[k].scratch(layer))
    scr_off = pos
    val_off = [in_off] + out_offs  # position p: 0 the model input, j + 1 layer j's output
    value_pos = {}  # format 2: value name -> position (recurrent h_next/c_next name values)
    if plan.get("format_version") == 2:
        value_pos = {plan["input"]["value"]: 0} | {
            op["outputs"][0]: j + 1 for j, op in enumerate(plan["ops"])
        }
    m_size = pos + scratch + n_state  # the last n_state values: the overflow guard's state backup

    state0 = np.zeros(n_state, np.float32)
    state_layout = []
    dense_reservoirs: list[str] = []
    dequantized: list[str] = []
    max_deq = dequantize_max_bytes()
    streamable, reason = True, ""
    st = 0
    seq_width = plan["input"]["size"]
    seq_extra = 0
    for li, layer in enumerate(layers):
        k = layer["kind"]
        rec = recs[li]
        rec[L.R_KIND] = L.KIND_CODES[k]
        rec[L.R_NIN] = layer["input_size"]
        rec[L.R_NOUT] = layer["output_size"]
        _put_off(rec, L.R_IN, val_off[inputs[li][0]])
        if len(inputs[li]) > 1:
            _put_off(rec, L.R_IN2, val_off[inputs[li][1]])
        _put_off(rec, L.R_OUT, out_offs[li])
        _put_off(rec, L.R_ST, st)
        _put_off(rec, L.R_SCR, scr_off)
        rec[L.R_D] = 1
        seq_width = max(seq_width, layer["output_size"])
        flags = 0
        name = layer["name"]
        if k == "final" and streamable:  # after a reverse direction, which says so first
            streamable = False
            reason = f"op {name!r} reads the final step of a reverse direction: Model.predict(X) only"
        if k in RECURRENT_GATES:
            g, h, i = RECURRENT_GATES[k], layer["hidden_size"], layer["input_size"]
            direction = layer["direction"]
            D = DIRECTIONS[direction]
            rec[L.R_D] = D
            rec[L.R_H] = h
            if direction != "forward" and streamable:
                streamable = False
                reason = (
                    f"layer {name!r} is {direction}: it needs the whole sequence, so the model runs only "
                    "through Model.predict(X)"
                )
            if direction == "reverse":
                flags |= L.F_REVERSE
            W, R, B = T(layer, "W"), T(layer, "R"), T(layer, "B")
            quant = W.dtype == np.int8 or R.dtype == np.int8
            if quant and g * h * (i + h) * 4 <= max_deq:
                W, R = (
                    _dequantized(W, _scale(layer, tensors, "W")),
                    _dequantized(R, _scale(layer, tensors, "R")),
                )
                quant = False
                dequantized.append(name)
            if not quant:
                flags |= L.F_FUSED
            for d in range(D):
                if quant:
                    add_matrix(rec, 2 * d, layer, "W", W[d], _scale(layer, tensors, "W", d))
                    add_matrix(rec, 2 * d + 1, layer, "R", R[d], _scale(layer, tensors, "R", d))
                else:
                    fused = np.concatenate([_float(W[d]), _float(R[d])], axis=1)
                    add_matrix(rec, 2 * d, layer, "W", fused, None)
                    if D == 1:  # the step's layout of the input part (kernels/layout.py F_XT)
                        add_matrix(rec, L.XT, layer, "W", np.ascontiguousarray(_float(W[d]).T), None)
                        flags |= L.F_XT
                b = np.zeros(2 * g * h, np.float32) if B is None else _float(B[d])
                if k == "gru":
                    set_vec(rec, d, b[: g * h])
                    set_vec(rec, 2 + d, b[g * h :])
                else:
                    set_vec(rec, d, b[: g * h] + b[g * h :])
                if k == "lstm":
                    P = T(layer, "P")
                    if P is not None:
                        flags |= L.F_PEEPHOLE
                        set_vec(rec, 2 + d, P[d])
                h0 = T(layer, "initial_h")
                set_vec(rec, 4 + d, np.zeros(h, np.float32) if h0 is None else h0[d])
                if k == "lstm":
                    c0 = T(layer, "initial_c")
                    set_vec(rec, 6 + d, np.zeros(h, np.float32) if c0 is None else c0[d])
            if k == "lstm" and layer["input_forget"]:
                flags |= L.F_INPUT_FORGET
            if k == "lstm" and layer.get("cell_output"):
                flags |= L.F_CELL
            if k == "gru" and layer["linear_before_reset"]:
                flags |= L.F_LBR
            if layer.get("clip") is not None:
                flags |= L.F_CLIP
            for key, flag, field in (("h_next", L.F_HNEXT, L.R_IN2), ("c_next", L.F_CNEXT, L.R_AUX)):
                if layer.get(key) is not None:  # the state is set from the graph at the end of the step
                    flags |= flag
                    _put_off(rec, field, val_off[value_pos[layer[key]]])
            set_params(
                rec,
                layer["activations"],
                layer["activation_alpha"],
                layer["activation_beta"],
                layer.get("clip"),
                per_direction=len(layer["activations"]) // D,
            )
            h0 = T(layer, "initial_h")
            if h0 is not None and direction != "reverse":
                state0[st : st + h] = h0[0]
            state_layout.append((f"{name}.h", st, h))
            if k == "lstm":
                c0 = T(layer, "initial_c")
                if c0 is not None and direction != "reverse":
                    state0[st + h : st + 2 * h] = c0[0]
                state_layout.append((f"{name}.c", st + h, h))
            seq_extra = max(seq_extra, 2 * h)
        elif k == "dense":
            W = T(layer, "W")
            add_matrix(rec, 0, layer, "W", W, _scale(layer, tensors, "W"))
            if T(layer, "b") is not None:
                flags |= L.F_BIAS
                set_vec(rec, 0, T(layer, "b"))
            set_params(rec, [layer["activation"]], [layer["alpha"]], [layer["beta"]])
        elif k == "activation":
            set_params(rec, [layer["activation"]], [layer["alpha"]], [layer["beta"]])
        elif k == "normalize":
            set_vec(rec, 0, T(layer, "mean"))
            set_vec(rec, 1, T(layer, "std"))
        elif k == "affine":
            set_vec(rec, 0, T(layer, "scale"))
            set_vec(rec, 1, T(layer, "shift"))
        elif k == "embedding":
            add_matrix(rec, 0, layer, "table", T(layer, "table"), _scale(layer, tensors, "table"))
        elif k == "esn":
            n = layer["reservoir_size"]
            rec[L.R_H] = n
            add_matrix(rec, 0, layer, "W_in", T(layer, "W_in"), _scale(layer, tensors, "W_in"))
            if T(layer, "W_in").dtype != np.int8:  # the step's layout of W_in (kernels/layout.py F_XT)
                add_matrix(rec, L.XT, layer, "W_in", np.ascontiguousarray(_float(T(layer, "W_in")).T), None)
                flags |= L.F_XT
            data = T(layer, "W_data") if layer["sparse"] else None
            dense = None if data is None else _densified(n, data, T(layer, "W_indices"), T(layer, "W_indptr"))
            if dense is not None:
                add_matrix(rec, 1, layer, "W", dense, _scale(layer, tensors, "W_data"))
                dense_reservoirs.append(name)
            elif layer["sparse"]:
                flags |= L.F_SPARSE
                p = L.R_MAT + L.MAT
                if data.dtype == np.int8:
                    rec[p + L.M_Q] = 1
                    _put_off(rec, p + L.M_OFF, wb.add(data))
                    _put_off(rec, p + L.M_SOFF, wf.add(_float(_scale(layer, tensors, "W_data"))))
                else:
                    _put_off(rec, p + L.M_OFF, wf.add(_float(data)))
                rec[p + L.M_ROWS] = n
                rec[p + L.M_COLS] = n
                ind = np.ascontiguousarray(T(layer, "W_indices"), np.int32).view(np.int8)
                ptr = np.ascontiguousarray(T(layer, "W_indptr"), np.int32).view(np.int8)
                _put_off(rec, L.R_VEC + 2, wb.add(ind) // 4)
                _put_off(rec, L.R_VEC + 4, wb.add(ptr) // 4)
            else:
                add_matrix(rec, 1, layer, "W", T(layer, "W"), _scale(layer, tensors, "W"))
            if T(layer, "b") is not None:
                flags |= L.F_BIAS
                set_vec(rec, 0, T(layer, "b"))
            if layer["readout_input"] == "extended":
                flags |= L.F_EXTENDED
            set_params(rec, [], None, None, leak=layer["leak_rate"])
            state_layout.append((f"{name}.x", st, n))
        elif k == "attention":
            rec[L.R_H] = layer["attention_size"]
            add_matrix(rec, 0, layer, "W", T(layer, "W"), _scale(layer, tensors, "W"))
            set_vec(rec, 0, T(layer, "b"))
            set_vec(rec, 1, T(layer, "v"))
            state_layout.append((f"{name}.pool", st, layer["input_size"] + 2))
        elif k == "state":  # a state slot: R_IN is its next value (read at the end of the step)
            _pack_graph_op(layer, rec, wf, tensors, T, add_matrix, set_vec, set_params)
            state0[st : st + state_sizes[li]] = _graph_ops()[k].initial(layer, lambda r, ly=layer: T(ly, r))
            state_layout.append((f"{name}.slot", st, state_sizes[li]))
        elif k in GRAPH_KINDS:
            flags |= _pack_graph_op(layer, rec, wf, tensors, T, add_matrix, set_vec, set_params)
            if state_sizes[li]:
                state_layout.append((f"{name}.history", st, state_sizes[li]))
        rec[L.R_FLAGS] = flags
        st += state_sizes[li]

    if not streamable and any(ins != [i] for i, ins in enumerate(inputs)):
        # a graph run layer by layer (kernels/codegen.py ``seq``) keeps every value of every step: T rows of
        # the values' region of M in the 2·T·seq_width floats of the work buffer
        seq_width = max(seq_width, -(-(scr_off - in_off) // 2))
    head = np.zeros(head_len, np.float32)
    head[L.H_NLAYERS] = nl
    head[L.H_NIN] = plan["input"]["size"]
    head[L.H_NOUT] = plan["output"]["size"]
    _put_off(head, L.H_IN, in_off)
    _put_off(head, L.H_OUT, out_offs[-1])
    head[L.H_VOCAB] = plan["input"].get("vocab_size", 0) if plan["input"]["kind"] == "tokens" else 0
    _put_off(head, L.H_NSTATE, n_state)
    _put_off(head, L.H_NM, m_size)
    head[L.H_SEQW] = seq_width
    _put_off(head, L.H_SEQS, seq_extra)
    head[L.HEADER :] = recs.ravel()
    wf_arr = wf.array(head)
    wb_arr = wb.array(min_len=64)
    wb_arr = np.concatenate([wb_arr, np.zeros(-wb_arr.size % 4, np.int8)])
    return Packed(
        wf=wf_arr,
        wb=wb_arr,
        state0=state0,
        m_size=m_size,
        n_state=n_state,
        out_off=out_offs[-1],
        in_size=plan["input"]["size"],
        out_size=plan["output"]["size"],
        seq_width=seq_width,
        seq_extra=seq_extra,
        streamable=streamable,
        not_streamable_reason=reason,
        state_layout=state_layout,
        dense_reservoirs=dense_reservoirs,
        dequantized=dequantized,
    )


def _pack_graph_op(layer, rec, wf, tensors, T, add_matrix, set_vec, set_params) -> int:
    """Fill the record of a graph op through its module's ``pack``; returns the flags it set."""
    flags = [0]

    def aux(ints: list[int]) -> None:
        _put_off(rec, L.R_AUX, wf.add(np.asarray(ints, np.float32)))

    def flag(f: int) -> None:
        flags[0] |= f

    from .kernels.ops._graph import PackContext

    ctx = PackContext(
        tensor=lambda role: T(layer, role),
        matrix=lambda j, role, m: add_matrix(rec, j, layer, role, m, _scale(layer, tensors, role)),
        vector=lambda slot, arr: set_vec(rec, slot, arr),
        aux=aux,
        params=lambda acts, alphas, betas: set_params(rec, acts, alphas, betas),
        set_flag=flag,
    )
    _graph_ops()[layer["kind"]].pack(layer, ctx)
    return flags[0]


def _scale(layer: dict, tensors: dict, role: str, d: int | None = None) -> np.ndarray | None:
    name = layer["tensors"].get(role + "_scale")
    if name is None:
        return None
    s = tensors[name]
    return s[d] if d is not None else s


def _graph_ops() -> dict:
    """The graph op modules by kind (``kernels/ops``), imported on first use: importing them imports
    numba (their emitters), which ``import edgernn`` and the AOT path must not."""
    from .kernels.ops import GRAPH_BY_NAME

    return GRAPH_BY_NAME
