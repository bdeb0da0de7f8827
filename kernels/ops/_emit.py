"""Building blocks of generated kernel source: a line builder and the loops every op emits.

Everything written into generated code comes from integers and floats the packer computed, from
identifiers made here, and from the op emitters' own text: never from a string taken from a file.
Float constants become module-level ``np.float32`` globals (numba treats globals as compile-time
constants); integers are written with ``int()`` so nothing but digits reaches the source.
"""

from __future__ import annotations

import math

from ..activations import (
    A_AFFINE,
    A_ELU,
    A_HARD_SIGMOID,
    A_LEAKY_RELU,
    A_LINEAR,
    A_RELU,
    A_SCALED_TANH,
    A_SIGMOID,
    A_SOFTMAX,
    A_SOFTPLUS,
    A_SOFTSIGN,
    A_TANH,
    A_THRESHOLDED_RELU,
)
from .record import Matrix


class Code:
    """Lines of Python source with indentation, fresh local names and pooled float constants."""

    def __init__(self, consts: dict[str, str] | None = None):
        self.lines: list[str] = []
        self.depth = 0
        self._n = 0
        self.consts = consts if consts is not None else {}
        self.wf = None  # the packed float32 buffer, for emitters that read their tables (numbers only)
        self.lanes = None  # a kernels.lanes.LaneCode when the code is one block of many streams
        self.qmode = None  # "vnni" | "avx2" | "loop": int8 recurrent products on a quantized h (_qemit.py)
        self.rowsums: dict[int, int] = {}  # int8 matrix offset -> offset of its row sums in wf (vnni)
        self.qpanels: dict[int, int] = {}  # int8 matrix offset -> offset of its AVX2 panel in wb (avx2)
        self.panels: dict[tuple[int, int], int] = {}  # (matrix offset, column) -> its panel in wf (_pemit)
        self.batch = None  # a kernels.lanes.BatchPanels: step_batch's float32 products as blocked GEMM tiles

    def view(self, base: str, arr: str, a: int, b: int) -> str:
        """A fresh name bound to the slice ``arr[a:b]`` (``arr`` the stream buffer ``M``, the model input
        ``x`` or another view): the many-stream kernel finds such arrays again for each stream."""
        name = self.fresh(base)
        self(f"{name} = {arr}[{I(a)} : {I(b)}]")
        return name

    def __call__(self, line: str) -> None:
        self.lines.append("    " * self.depth + line)

    def block(self, header: str) -> _Indent:
        """``with code.block("for k in range(4):"):`` indents what is written inside."""
        self(header)
        return _Indent(self)

    def fresh(self, base: str) -> str:
        """A local name not used before in this module (``base`` is an identifier made by the caller)."""
        self._n += 1
        return f"{base}_{self._n}"

    def f32(self, v: float) -> str:
        """The name of a module-level float32 constant equal to ``v`` (finite, or ±inf)."""
        v = float(v)
        if math.isnan(v):
            raise ValueError("NaN constant in generated code")
        key = "np.float32(np.inf)" if v == math.inf else "np.float32(-np.inf)" if v == -math.inf else None
        text = key or f"np.float32({v!r})"
        for name, t in self.consts.items():
            if t == text:
                return name
        name = f"F{len(self.consts)}"
        self.consts[name] = text
        return name


class _Indent:
    def __init__(self, code: Code):
        self.code = code

    def __enter__(self) -> Code:
        self.code.depth += 1
        return self.code

    def __exit__(self, *exc) -> None:
        self.code.depth -= 1


def I(v: int) -> str:  # noqa: E743 - a short name keeps the templates readable
    """An integer literal (only digits and a sign reach the source)."""
    return str(int(v))


def fill(c: Code, dst: str, d0: int, n: int, src: str | None = None, s0: int = 0) -> None:
    """dst[d0:d0+n] = src[s0:s0+n] (or 0 when ``src`` is None)."""
    if n <= 0:
        return
    with c.block(f"for k in range({I(n)}):"):
        if src is None:
            c(f"{dst}[{I(d0)} + k] = Z")
        else:
            c(f"{dst}[{I(d0)} + k] = {src}[{I(s0)} + k]")


def row_blocks(c: Code, i: str, nrows: int, body) -> None:
    """Emit ``body(4, row)`` for each block of four rows (a loop over ``i``: the block's first row), then
    ``body(1, row)`` for each of the last ``nrows % 4`` rows (``row``: a source expression)."""
    n4 = nrows - nrows % 4
    if n4:
        with c.block(f"for {i} in range(0, {I(n4)}, 4):"):
            body(4, i)
    for r in range(n4, nrows):
        body(1, I(r))


def gemv_acc(
    c: Code, m: Matrix, col0: int, cols: int, r0: int, nrows: int, x: str, y: str, y0: int = 0
) -> None:
    """y[y0+i] += W[r0+i, col0:col0+cols] · x[0:cols] for i < nrows (matrix ``m``; int8 rows are widened
    to float32 in the loop and scaled once per row). Four rows per pass: each load of x feeds four FMAs."""
    if nrows <= 0 or cols <= 0:
        return
    if c.lanes is not None and c.lanes.gemv(m, col0, cols, r0, nrows, x, y, y0):
        return  # one blocked product over a block of streams (kernels/lanes.py)
    if m.int8 and cols <= NARROW:
        _gemv_narrow(c, m, col0, cols, r0, nrows, x, y, y0)
        return
    if c.panels:
        from ._pemit import gemv_panel

        done = gemv_panel(c, m, col0, cols, r0, nrows, x, y, y0)
        if done:
            gemv_acc(c, m, col0, cols, r0 + done, nrows - done, x, y, y0 + done)
            return
    W = "wb" if m.int8 else "wf"
    base = m.off + col0 + r0 * m.ld
    ld = m.ld
    cast = "np.float32" if m.int8 else ""
    i = c.fresh("i")
    b = c.fresh("b")
    w = [c.fresh("w") for _ in range(4)]
    a = [c.fresh("a") for _ in range(4)]
    k = c.fresh("k")
    xv = c.fresh("xv")

    def body(nr: int, row: str) -> None:
        c(f"{b} = {I(base)} + ({row}) * {I(ld)}")
        for j in range(nr):
            c(f"{w[j]} = {W}[{b} + {I(j * ld)} : {b} + {I(j * ld + cols)}]")
            c(f"{a[j]} = Z")
        with c.block(f"for {k} in range({I(cols)}):"):
            c(f"{xv} = {x}[{k}]")
            for j in range(nr):
                c(f"{a[j]} += {cast}({w[j]}[{k}]) * {xv}")
        for j in range(nr):
            if m.int8:
                c(f"{y}[{I(y0)} + {row} + {I(j)}] += {a[j]} * wf[{I(m.soff + r0)} + {row} + {I(j)}]")
            else:
                c(f"{y}[{I(y0)} + {row} + {I(j)}] += {a[j]}")

    row_blocks(c, i, nrows, body)


#: int8 products over at most this many columns (an input part W·x) take :func:`_gemv_narrow`
NARROW = 16
#: an int8 cell or reservoir of at most this many inputs also packs its input part W dequantized (q·scale,
#: float32) and transposed (F_XT, a few KiB): the step's W·x is then an axpy per input column, as in
#: float32 models, instead of int8 rows of 8 bytes widened one by one (those took about 4 µs of LSTM
#: 8->256's 22 µs dynamic int8 step here). The file stays int8; the recurrent products keep int8 weights.
XT_MAX_INPUTS = 16


def _gemv_narrow(
    c: Code, m: Matrix, col0: int, cols: int, r0: int, nrows: int, x: str, y: str, y0: int
) -> None:
    """The int8 gemv of a few columns: one pass over the rows, the row's ``cols`` products written out
    (x held in scalars), so LLVM vectorizes across rows with interleaved loads and no horizontal sums
    (four-row dot products of 8 columns spend most of their time reducing: 3.3 against 1.1 µs for
    LSTM 8→256's W·x here)."""
    xs = [c.fresh("xq") for _ in range(cols)]
    for k, v in enumerate(xs):
        c(f"{v} = {x}[{I(k)}]")
    r, b = c.fresh("r"), c.fresh("b")
    with c.block(f"for {r} in range({I(nrows)}):"):
        c(f"{b} = {I(m.off + col0 + r0 * m.ld)} + {r} * {I(m.ld)}")
        terms = " + ".join(f"np.float32(wb[{b} + {I(k)}]) * {v}" for k, v in enumerate(xs))
        c(f"{y}[{I(y0)} + {r}] += ({terms}) * wf[{I(m.soff + r0)} + {r}]")


def axpy_acc(c: Code, m: Matrix, r0: int, nrows: int, x: str, y: str, y0: int = 0) -> None:
    """y[y0+r] += Σ_k M[k, r0+r]·x[k] for r < nrows, M = ``m`` (float32, rows = len(x)) a transposed
    matrix: one vectorized axpy over the rows per input column, no horizontal sums."""
    if nrows <= 0 or m.rows <= 0:
        return
    k, r, xv, wk, ys = c.fresh("k"), c.fresh("r"), c.fresh("xv"), c.fresh("wk"), c.fresh("ys")
    c(f"{ys} = {y}[{I(y0)} : {I(y0 + nrows)}]")
    with c.block(f"for {k} in range({I(m.rows)}):"):
        c(f"{xv} = {x}[{k}]")
        c(f"{wk} = wf[{I(m.off + r0)} + {k} * {I(m.ld)} : {I(m.off + r0)} + {k} * {I(m.ld)} + {I(nrows)}]")
        with c.block(f"for {r} in range({I(nrows)}):"):
            c(f"{ys}[{r}] += {wk}[{r}] * {xv}")


def act_scalar(c: Code, code: int, alpha: float, beta: float, v: str) -> str | None:
    """A scalar expression for elementwise activation ``code`` of ``v`` (None for softmax/linear)."""
    if code == A_LINEAR:
        return v
    if code == A_TANH:
        return f"fast_tanh({v})"
    if code == A_SIGMOID:
        return f"fast_sigmoid({v})"
    if code == A_RELU:
        return f"(Z if {v} < Z else {v})"
    if code == A_LEAKY_RELU:
        return f"({v} * {c.f32(alpha)} if {v} < Z else {v})"
    if code == A_AFFINE:
        return f"({c.f32(alpha)} * {v} + {c.f32(beta)})"
    if code == A_THRESHOLDED_RELU:  # ONNX/ORT: x if x > alpha else 0 (NaN -> 0)
        return f"({v} if {v} > {c.f32(alpha)} else Z)"
    if code == A_SCALED_TANH:
        return f"({c.f32(alpha)} * fast_tanh({c.f32(beta)} * {v}))"
    if code == A_HARD_SIGMOID:
        return f"hard_sigmoid_({v}, {c.f32(alpha)}, {c.f32(beta)})"
    if code == A_ELU:
        return f"elu_({v}, {c.f32(alpha)})"
    if code == A_SOFTSIGN:
        return f"({v} / (ONE + abs({v})))"
    if code == A_SOFTPLUS:
        return f"softplus_({v})"
    return None


def activate(c: Code, code: int, alpha: float, beta: float, arr: str, a0: int, n: int) -> None:
    """arr[a0:a0+n] = act(arr[a0:a0+n]) in place (softmax over those n values)."""
    if code == A_LINEAR or n <= 0:
        return
    k = c.fresh("k")
    if code == A_SOFTMAX:
        mx, s, e, inv = c.fresh("mx"), c.fresh("s"), c.fresh("e"), c.fresh("inv")
        c(f"{mx} = {arr}[{I(a0)}]")
        with c.block(f"for {k} in range(1, {I(n)}):"):
            with c.block(f"if {arr}[{I(a0)} + {k}] > {mx} or {arr}[{I(a0)} + {k}] != {arr}[{I(a0)} + {k}]:"):
                c(f"{mx} = {arr}[{I(a0)} + {k}]")
        c(f"{s} = Z")
        with c.block(f"for {k} in range({I(n)}):"):
            c(f"{e} = np.float32(math.exp({arr}[{I(a0)} + {k}] - {mx}))")
            c(f"{arr}[{I(a0)} + {k}] = {e}")
            c(f"{s} += {e}")
        c(f"{inv} = ONE / {s}")
        with c.block(f"for {k} in range({I(n)}):"):
            c(f"{arr}[{I(a0)} + {k}] *= {inv}")
        return
    v = c.fresh("v")
    expr = act_scalar(c, code, alpha, beta, v)
    if expr is None:  # pragma: no cover - every code is handled above
        raise ValueError(f"activation code {code}")
    with c.block(f"for {k} in range({I(n)}):"):
        c(f"{v} = {arr}[{I(a0)} + {k}]")
        c(f"{arr}[{I(a0)} + {k}] = {expr}")


def clip(c: Code, value: float, arr: str, a0: int, n: int) -> None:
    """Clamp arr[a0:a0+n] to [-value, value] in place (NaN stays NaN)."""
    k, v = c.fresh("k"), c.fresh("v")
    hi, lo = c.f32(value), c.f32(-value)
    with c.block(f"for {k} in range({I(n)}):"):
        c(f"{v} = {arr}[{I(a0)} + {k}]")
        with c.block(f"if {v} > {hi}:"):
            c(f"{v} = {hi}")
        with c.block(f"if {v} < {lo}:"):
            c(f"{v} = {lo}")
        c(f"{arr}[{I(a0)} + {k}] = {v}")


def project_scratch(xt: Matrix | None, cols: int, rows: int) -> int:
    """Floats of the caller's scratch :func:`project_setup` uses: the bias, and a transposed copy of the
    weights unless the packed transposed part ``xt`` is read in place."""
    return rows if xt is not None and xt.ld == rows else rows + cols * rows


def project_setup(
    c: Code, m: Matrix, xt: Matrix | None, cols: int, rows: int, bias: list[tuple[int, int, int]], buf: str
) -> tuple[str, str, int, int]:
    """Chunk mode: the input weights transposed (cols, rows) and the summed bias ``pb`` (rows,) from
    ``bias`` segments (vector offset in wf, first row, rows), both in the caller's scratch ``buf`` (no
    allocation in the kernel). With ``xt`` (the packed transposed float32 input part, flag F_XT) the
    weights are read from wf where they are; otherwise W[0:rows, 0:cols] is transposed into buf (int8 rows
    dequantized with their scales). Returns (pb, the array holding the transposed weights, their offset
    in it, how many values of buf are used)."""
    pb, r, k = c.fresh("pb"), c.fresh("r"), c.fresh("k")
    c(f"{pb} = {buf}[0 : {I(rows)}]")
    with c.block(f"for {r} in range({I(rows)}):"):
        c(f"{pb}[{r}] = Z")
    for voff, r0, n in bias:
        with c.block(f"for {r} in range({I(n)}):"):
            c(f"{pb}[{I(r0)} + {r}] += wf[{I(voff)} + {r}]")
    used = project_scratch(xt, cols, rows)
    if used == rows:
        return pb, "wf", xt.off, used
    W = "wb" if m.int8 else "wf"
    with c.block(f"for {r} in range({I(rows)}):"):
        with c.block(f"for {k} in range({I(cols)}):"):
            v = f"{W}[{I(m.off)} + {r} * {I(m.ld)} + {k}]"
            if m.int8:
                v = f"np.float32({v}) * wf[{I(m.soff)} + {r}]"
            c(f"{buf}[{I(rows)} + {k} * {I(rows)} + {r}] = {v}")
    return pb, buf, rows, used


def project_block(
    c: Code, wt: str, wt_off: int, pb: str, cols: int, rows: int, X: str, t0: str, tn: str, P: str
) -> None:
    """P[j*rows:(j+1)*rows] = pb + W·X[t0 + j] for j < tn (one axpy over the rows per input column), the
    transposed weights W at ``wt[wt_off + k*rows + r]``."""
    j, r, k, xv, pj, wk = (c.fresh(n) for n in ("j", "r", "k", "xv", "pj", "wk"))
    with c.block(f"for {j} in range({tn}):"):
        c(f"{pj} = {P}[{j} * {I(rows)} : {j} * {I(rows)} + {I(rows)}]")
        with c.block(f"for {r} in range({I(rows)}):"):
            c(f"{pj}[{r}] = {pb}[{r}]")
        with c.block(f"for {k} in range({I(cols)}):"):
            c(f"{xv} = {X}[{t0} + {j}, {k}]")
            c(f"{wk} = {wt}[{I(wt_off)} + {k} * {I(rows)} : {I(wt_off)} + {k} * {I(rows)} + {I(rows)}]")
            with c.block(f"for {r} in range({I(rows)}):"):
                c(f"{pj}[{r}] += {wk}[{r}] * {xv}")
