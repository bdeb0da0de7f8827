"""A packed layer record (``kernels/layout.py``) read back into named fields, at code-generation time.

The code generator works in Python on the packed buffer ``wf``: it reads each layer's record once and
hands the op emitters plain integers and floats with names, which become constants in the generated
source. Nothing here runs inside a kernel.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .. import layout as L


@dataclass(frozen=True)
class Matrix:
    """A ``rows x cols`` block of weights, row r starting at ``off + r*ld`` (float32 in ``wf``, or int8 in
    ``wb`` with float32 per-row scales at ``wf[soff:soff+rows]``)."""

    int8: bool
    off: int
    rows: int
    cols: int
    ld: int
    soff: int


@dataclass(frozen=True)
class Act:
    """An activation: its code (``kernels.activations.A_*``) and ONNX alpha/beta."""

    code: int
    alpha: float
    beta: float


@dataclass(frozen=True)
class Layer:
    """One layer of a packed model, every field named (offsets are element offsets in M, wf or wb)."""

    index: int
    kind: int
    nin: int
    nout: int
    in_off: int  # layer input in M
    out_off: int  # layer output in M
    hidden: int  # hidden / reservoir / attention size
    directions: int
    state_off: int  # state in M
    scratch_off: int  # scratch in M
    flags: int
    acts: tuple[Act, ...]  # 3 per direction (slot 3d + j)
    clip: float
    leak: float
    mats: tuple[Matrix, ...]  # descriptor j
    vecs: tuple[int, ...]  # vector slot offsets
    extra: dict = field(default_factory=dict)
    in2_off: int = 0  # second input in M (binary ops)
    aux_off: int = 0  # integer parameters in wf (graph ops: gather, conv1d, binary, unary)

    def has(self, flag: int) -> bool:
        """Whether the record's flag bit ``flag`` (``layout.F_*``) is set."""
        return bool(self.flags & flag)

    def aux(self, wf: np.ndarray, n: int) -> tuple[int, ...]:
        """The first ``n`` integer parameters of a graph op (stored as float32 at ``aux_off``)."""
        return tuple(int(v) for v in wf[self.aux_off : self.aux_off + n])

    def act(self, d: int, j: int) -> Act:
        """Activation ``j`` of direction ``d``."""
        return self.acts[3 * d + j]


def off2(wf: np.ndarray, p: int) -> int:
    """A two-field offset (``hi * 2**24 + lo``) at ``wf[p]``."""
    return int(wf[p]) * L.TWO24 + int(wf[p + 1])


def read_layer(wf: np.ndarray, index: int) -> Layer:
    """The record of layer ``index`` of the packed buffer ``wf``, decoded."""
    rec = L.HEADER + index * L.REC
    fp = off2(wf, rec + L.R_FP)
    acts = tuple(
        Act(int(wf[rec + L.R_ACT + s]), float(wf[fp + L.P_ALPHA + s]), float(wf[fp + L.P_BETA + s]))
        for s in range(6)
    )
    mats = []
    for j in range(6):
        p = rec + L.R_MAT + j * L.MAT
        mats.append(
            Matrix(
                int8=int(wf[p + L.M_Q]) == 1,
                off=off2(wf, p + L.M_OFF),
                rows=int(wf[p + L.M_ROWS]),
                cols=int(wf[p + L.M_COLS]),
                ld=int(wf[p + L.M_LD]),
                soff=off2(wf, p + L.M_SOFF),
            )
        )
    vecs = tuple(off2(wf, rec + L.R_VEC + 2 * s) for s in range(12))
    return Layer(
        index=index,
        kind=int(wf[rec + L.R_KIND]),
        nin=int(wf[rec + L.R_NIN]),
        nout=int(wf[rec + L.R_NOUT]),
        in_off=off2(wf, rec + L.R_IN),
        out_off=off2(wf, rec + L.R_OUT),
        hidden=int(wf[rec + L.R_H]),
        directions=int(wf[rec + L.R_D]),
        state_off=off2(wf, rec + L.R_ST),
        scratch_off=off2(wf, rec + L.R_SCR),
        flags=int(wf[rec + L.R_FLAGS]),
        acts=acts,
        clip=float(wf[fp + L.P_CLIP]),
        leak=float(wf[fp + L.P_LEAK]),
        mats=tuple(mats),
        vecs=vecs,
        in2_off=off2(wf, rec + L.R_IN2),
        aux_off=off2(wf, rec + L.R_AUX),
    )


@dataclass(frozen=True)
class Header:
    """The model-wide fields of a packed buffer."""

    n_layers: int
    nin: int
    nout: int
    in_off: int
    out_off: int
    vocab: int
    n_state: int
    m_size: int
    seq_width: int
    seq_extra: int
    propagate: bool  # nonfinite="propagate": no input check, no overflow guard


def read_header(wf: np.ndarray) -> Header:
    """The header of the packed buffer ``wf``, decoded."""
    return Header(
        n_layers=int(wf[L.H_NLAYERS]),
        nin=int(wf[L.H_NIN]),
        nout=int(wf[L.H_NOUT]),
        in_off=off2(wf, L.H_IN),
        out_off=off2(wf, L.H_OUT),
        vocab=int(wf[L.H_VOCAB]),
        n_state=off2(wf, L.H_NSTATE),
        m_size=off2(wf, L.H_NM),
        seq_width=int(wf[L.H_SEQW]),
        seq_extra=off2(wf, L.H_SEQS),
        propagate=bool(int(wf[L.H_FLAGS]) & 1),
    )
