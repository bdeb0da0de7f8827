"""Pack a validated plan and its tensors into the kernels' flat buffers (see ``kernels/layout.py``).

Done once per model at load time: recurrent float32 weights are fused into one ``[W | R]`` block per
direction (one pass over ``[x; h]`` per step), int8 weights are kept as int8 with their per-row scales,
float16 tensors are widened to float32, LSTM/RNN biases are pre-summed (Wb + Rb).
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

import numpy as np

from .artifact import ACTIVATION_DEFAULTS, ACTIVATIONS, graph_layers
from .kernels import layout as L

_ALIGN = 16  # floats / bytes alignment of every block (64 bytes for float32)
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
    wb: np.ndarray  # int8: int8 weights, int32 CSR data, uint16/int32 SELL-8 indices
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


class _Model:
    """What packing the ops gathers for the whole model (the :class:`Packed` fields ops contribute to)."""

    def __init__(self, n_state: int):
        self.dequantize_max_bytes = dequantize_max_bytes()
        self.state0 = np.zeros(n_state, np.float32)
        self.streamable, self.reason = True, ""
        self.seq_extra = 0
        self.dequantized: list[str] = []
        self.dense_reservoirs: list[str] = []
        self.value_off: dict[str, int] = {}


class _Context:
    """The :class:`~edgernn.kernels.ops._pack.PackContext` of one op: its record ``rec`` in the buffers
    ``wf``/``wb``, its state at ``st`` of the model's state."""

    def __init__(self, layer: dict, rec: np.ndarray, wf: _Buf, wb: _Buf, tensors: dict, model: _Model, st):
        self.layer, self.rec, self.wf, self.wb, self.tensors = layer, rec, wf, wb, tensors
        self.model, self.st = model, st
        self.flags = 0
        self.dequantize_max_bytes = model.dequantize_max_bytes

    def tensor(self, role: str) -> np.ndarray | None:
        name = self.layer["tensors"].get(role)
        return None if name is None else self.tensors[name]

    def _scale(self, role: str, d: int | None = None) -> np.ndarray | None:
        s = self.tensor(role + "_scale")
        return s if s is None or d is None else s[d]

    def dequantized(self, role: str) -> np.ndarray:
        return _dequantized(self.tensor(role), self._scale(role))

    def matrix(self, j: int, role: str, m: np.ndarray, d: int | None = None, dims=None) -> None:
        p = L.R_MAT + j * L.MAT
        rows, cols, ld = dims if dims is not None else (*m.shape, m.shape[1])
        rec = self.rec
        if m.dtype == np.int8:
            rec[p + L.M_Q] = 1
            _put_off(rec, p + L.M_OFF, self.wb.add(m))
            _put_off(rec, p + L.M_SOFF, self.wf.add(_float(self._scale(role, d))))
        else:
            rec[p + L.M_Q] = 0
            _put_off(rec, p + L.M_OFF, self.wf.add(_float(m)))
        rec[p + L.M_ROWS] = rows
        rec[p + L.M_COLS] = cols
        rec[p + L.M_LD] = ld

    def vector(self, slot: int, arr: np.ndarray) -> None:
        _put_off(self.rec, L.R_VEC + 2 * slot, self.wf.add(_float(arr)))

    def index_vector(self, slot: int, arr: np.ndarray, dtype=np.int32) -> None:
        dt = np.dtype(dtype)
        raw = np.ascontiguousarray(arr, dt).view(np.int8)
        _put_off(self.rec, L.R_VEC + 2 * slot, self.wb.add(raw) // dt.itemsize)  # wb blocks: 16-byte aligned

    def aux(self, ints: list[int]) -> None:
        _put_off(self.rec, L.R_AUX, self.wf.add(np.asarray(ints, np.float32)))

    def params(self, acts, alphas, betas, clip=None, leak=0.0, per_direction=1) -> None:
        fp = np.zeros(L.NP, np.float32)
        for i, a in enumerate(acts):  # activation j of direction d: slot 3d + j (the kernels' layout)
            slot = 3 * (i // per_direction) + i % per_direction
            self.rec[L.R_ACT + slot] = ACTIVATIONS.index(a)
            da, db = ACTIVATION_DEFAULTS.get(a, (0.0, 0.0))
            fp[L.P_ALPHA + slot] = da if alphas is None else alphas[i]
            fp[L.P_BETA + slot] = db if betas is None else betas[i]
        fp[L.P_CLIP] = np.inf if clip is None else clip
        fp[L.P_LEAK] = leak
        _put_off(self.rec, L.R_FP, self.wf.add(fp))

    def set_flag(self, flag: int) -> None:
        self.flags |= flag

    def set_field(self, field: int, value: int) -> None:
        self.rec[field] = value

    def set_offset(self, field: int, off: int) -> None:
        _put_off(self.rec, field, off)

    def value_offset(self, name: str) -> int:
        return self.model.value_off[name]

    def init_state(self, offset: int, values: np.ndarray) -> None:
        v = np.asarray(values, np.float32)
        self.model.state0[self.st + offset : self.st + offset + v.size] = v

    def not_streamable(self, reason: str) -> None:
        if self.model.streamable:  # the first op that cannot stream says why
            self.model.streamable, self.model.reason = False, reason

    def seq_scratch(self, n: int) -> None:
        self.model.seq_extra = max(self.model.seq_extra, n)

    def mark(self, what: str) -> None:
        getattr(self.model, what).append(self.layer["name"])


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

    # stream buffer M: [state | input copy | layer outputs | shared scratch]
    ops = _ops()
    states = [ops[layer["kind"]].state(layer) for layer in layers]
    state_sizes = [sum(n for _, n in parts) for parts in states]
    n_state = int(sum(state_sizes))
    pos = n_state
    in_off = pos
    pos += plan["input"]["size"]
    out_offs = []
    for layer in layers:
        out_offs.append(pos)
        pos += layer["output_size"]
    scratch = max([ops[layer["kind"]].scratch(layer) for layer in layers], default=0)
    scr_off = pos
    val_off = [in_off] + out_offs  # position p: 0 the model input, j + 1 layer j's output
    m_size = pos + scratch + n_state  # the last n_state values: the overflow guard's state backup

    model = _Model(n_state)
    if plan.get("format_version") == 2:  # value name -> its offset in M (recurrent h_next/c_next)
        names = [plan["input"]["value"]] + [op["outputs"][0] for op in plan["ops"]]
        model.value_off = dict(zip(names, val_off, strict=True))
    state_layout = []
    st = 0
    seq_width = plan["input"]["size"]
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
        ctx = _Context(layer, rec, wf, wb, tensors, model, st)
        ops[k].pack(layer, ctx)
        rec[L.R_FLAGS] = ctx.flags
        for part, n in states[li]:
            if n:
                state_layout.append((f"{layer['name']}.{part}", st, n))
            st += n

    if not model.streamable and any(ins != [i] for i, ins in enumerate(inputs)):
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
    _put_off(head, L.H_SEQS, model.seq_extra)
    head[L.HEADER :] = recs.ravel()
    wf_arr = wf.array(head)
    wb_arr = wb.array(min_len=64)
    wb_arr = np.concatenate([wb_arr, np.zeros(-wb_arr.size % 4, np.int8)])
    return Packed(
        wf=wf_arr,
        wb=wb_arr,
        state0=model.state0,
        m_size=m_size,
        n_state=n_state,
        out_off=out_offs[-1],
        in_size=plan["input"]["size"],
        out_size=plan["output"]["size"],
        seq_width=seq_width,
        seq_extra=model.seq_extra,
        streamable=model.streamable,
        not_streamable_reason=model.reason,
        state_layout=state_layout,
        dense_reservoirs=model.dense_reservoirs,
        dequantized=model.dequantized,
    )


def _ops() -> dict:
    """The op modules by plan kind name (``kernels/ops``), imported on first use: importing them imports
    numba (their emitters), which ``import edgernn`` must not."""
    from .kernels.ops import BY_NAME

    return BY_NAME
