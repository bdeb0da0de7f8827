"""Many streams in one generated kernel: the op emitters' step code run for a block of up to ``NL``
streams, with every weight matrix product blocked across the block.

A single-stream step run n times reads every weight row n times. The generated ``step_batch`` takes the
streams in blocks of ``nb`` = ``NL`` (16; the last block shorter, a multiple of ``SB`` = 4; the n % 4
streams after it take the single-stream ``run1``). For each op it runs the op's own emitter (the code
``step`` uses) on a :class:`LaneCode`: what the emitter writes between two matrix products (biases, gate
activations, state updates) becomes a *segment*, emitted once inside ``for ln in range(nb):`` with ``M``
bound to stream ``ln``'s buffer; each matrix product (``gemv_acc``) becomes one product over the block.
Stream state stays stream-major (row ``MB[s, :]``); the product reads each stream's input where it lives
(its row of ``MB`` or of ``X``) and adds into each stream's own scratch (its gates, contiguous, so the
segments after it run on one stream's contiguous vectors).

The product, two ways:

* with the JIT on x86-64 with AVX2+FMA (:func:`emit_gemm`, the default): a GEMM of register-blocked
  tiles (``kernels/bgemm.py``): the rows are packed as *row panels* of R = 3 vectors (24 rows, 48 with
  AVX-512) k-major, int8 rows dequantized (:class:`BatchPanels`: placed when the source is written,
  made and appended to ``wf`` for the model's first ``Streams``, so ``Stream`` users hold no copy);
  a tile keeps 4 streams x R rows (12 vector accumulators) in registers over the whole reduction, each
  weight vector feeding 4 FMAs and each broadcast input R/8, then adds R contiguous floats into each
  stream's row. For each panel the block's streams are taken 4 at a time (a panel read from cache once
  per block). No transposed copy of the inputs: a tile broadcasts them from each stream's own row.
  LSTM 8→256's 1024x264 product runs at ~42 GFLOP/s here (AMD Zen 1, one core); in LSTM 8→64's step
  the product is ~55% of the time, the gate activations (per stream, vectorized over the gates) ~30%.
* the AOT modules, other CPUs and ``EDGERNN_BATCH_GEMM=0`` (:func:`emit_gemv`): four weight rows are
  loaded once and dotted with the rows of four streams at a time (16 accumulators; the reduction over k
  vectorizes), for each group of four streams of the block, so a weight row is read once per block.

No allocation per step. For this the arrays a product reads and writes must be found
again for every stream: they are the model input ``x``, the stream buffer ``M`` or a slice of one made
by :meth:`Code.view` (recorded here as an alias: name → parent and offset). A segment re-binds the
aliases it uses at its start. Op modules that keep to this say ``LANES = True`` (lstm, gru, rnn, dense,
esn); any other op is emitted as one segment with its products per stream (correct, just not blocked),
so every op runs in the batched kernel.
"""

from __future__ import annotations

import re

from . import bgemm
from .ops._emit import Code, I, row_blocks
from .ops.record import Matrix

#: streams per block (a weight row or panel is read once per block; 16 to 64 measure alike here)
NL = 16
#: streams per micro-kernel (4 weight rows x 4 streams = 16 accumulators; a GEMM tile's streams)
SB = bgemm.S
#: the roots a blocked product can read: the model input row (X[s]) and the stream buffer (MB[s])
ROOTS = {"x": "X", "M": "MB"}


class LaneCode(Code):
    """A :class:`Code` whose lines are one segment of per-stream code, written into ``out`` by
    :meth:`flush` inside a loop over the block's streams; ``gemv_acc`` calls become blocked products."""

    def __init__(self, out: Code, s0: str, nb: str = I(NL)):
        super().__init__(out.consts)
        self.out = out
        self.s0 = s0  # the generated name of the block's first stream index
        self.nb = nb  # the generated name (or literal) of the block's stream count, a multiple of SB
        self.wf = out.wf
        self.lanes = self
        self.blocking = True
        self.aliases: dict[str, tuple[str, int]] = {}
        self._lines_of: dict[str, str] = {}
        self._seg_defs: set[str] = set()

    def fresh(self, base: str) -> str:
        return self.out.fresh(base)

    def view(self, base: str, arr: str, a: int, b: int) -> str:
        name = self.fresh(base)
        line = f"{name} = {arr}[{I(a)} : {I(b)}]"
        self(line)
        self.aliases[name] = (arr, int(a))
        self._lines_of[name] = line
        self._seg_defs.add(name)
        return name

    def resolve(self, name: str) -> tuple[str, int] | None:
        """(the 2-D array of the block, offset in its row) of an array name, or None (not a root/alias)."""
        off = 0
        while name not in ROOTS:
            if name not in self.aliases:
                return None
            name, a = self.aliases[name]
            off += a
        return ROOTS[name], off

    def flush(self) -> None:
        """Write the pending segment into ``out``: once per stream of the block, its aliases re-bound."""
        lines, self.lines = self.lines, []
        defined, self._seg_defs = self._seg_defs, set()
        if not lines:
            return
        text = "\n".join(lines)
        used = [n for n in self.aliases if n not in defined and re.search(rf"\b{re.escape(n)}\b", text)]
        need: list[str] = []

        def add(n: str) -> None:
            parent = self.aliases[n][0]
            if parent in self.aliases and parent not in defined:
                add(parent)
            if n not in need:
                need.append(n)

        for n in used:
            add(n)
        order = [n for n in self.aliases if n in need]  # definition order: parents first
        o = self.out
        ln = o.fresh("ln")
        with o.block(f"for {ln} in range({self.nb}):"):
            o(f"M = MB[{self.s0} + {ln}]")
            o(f"x = X[{self.s0} + {ln}]")
            for n in order:
                o(self._lines_of[n])
            for line in lines:
                o(line)

    def gemv(self, m: Matrix, col0: int, cols: int, r0: int, nrows: int, x: str, y: str, y0: int) -> bool:
        """Emit y[y0+i] += W[r0+i, col0:col0+cols]·x as one blocked product over the block's streams, if
        blocking is on and both arrays can be found for every stream; False: the caller writes it per
        stream."""
        if not self.blocking:
            return False
        xr, yr = self.resolve(x), self.resolve(y)
        if xr is None or yr is None:
            return False
        self.flush()
        if self.out.batch is not None and (not m.int8 or self.out.batch.int8):
            emit_gemm(self.out, m, col0, cols, r0, nrows, xr, yr, y0, self.s0, self.nb)
        else:
            emit_gemv(self.out, m, col0, cols, r0, nrows, xr, yr, y0, self.s0, self.nb)
        return True


def emit_gemv(
    c: Code,
    m: Matrix,
    col0: int,
    cols: int,
    r0: int,
    nrows: int,
    xr: tuple[str, int],
    yr: tuple[str, int],
    y0: int,
    s0: str,
    nb: str = I(NL),
) -> None:
    """For each stream s of the block (rows ``s0``..``s0``+NL of the 2-D arrays named in ``xr``/``yr``):
    Y[s, yoff+y0+i] += W[r0+i, col0:col0+cols] · X[s, xoff:xoff+cols] for i < nrows. Four weight rows x
    four streams per inner loop; int8 rows are widened in the loop and scaled once per row and stream."""
    if nrows <= 0 or cols <= 0:
        return
    XA, xoff = xr
    YA, yoff = yr
    W = "wb" if m.int8 else "wf"
    cast = "np.float32" if m.int8 else ""
    ld = m.ld
    base = m.off + col0 + r0 * m.ld
    i, b, q, s, k = (c.fresh(n) for n in ("i", "b", "q", "s", "k"))

    def body(nr: int, row: str) -> None:
        w = [c.fresh("w") for _ in range(nr)]
        c(f"{b} = {I(base)} + ({row}) * {I(ld)}")
        for j in range(nr):
            c(f"{w[j]} = {W}[{b} + {I(j * ld)} : {b} + {I(j * ld + cols)}]")
        sc = []
        if m.int8:
            for j in range(nr):
                sc.append(c.fresh("sc"))
                c(f"{sc[j]} = wf[{I(m.soff + r0)} + ({row}) + {I(j)}]")
        with c.block(f"for {q} in range(0, {nb}, {I(SB)}):"):
            c(f"{s} = {s0} + {q}")
            xs = [c.fresh("xs") for _ in range(SB)]
            for t in range(SB):
                c(f"{xs[t]} = {XA}[{s} + {I(t)}, {I(xoff)} : {I(xoff + cols)}]")
            acc = [[c.fresh("a") for _ in range(SB)] for _ in range(nr)]
            for j in range(nr):
                c(" = ".join(acc[j]) + " = Z")
            with c.block(f"for {k} in range({I(cols)}):"):
                vs = [c.fresh("v") for _ in range(SB)]
                for t in range(SB):
                    c(f"{vs[t]} = {xs[t]}[{k}]")
                for j in range(nr):
                    u = c.fresh("u")
                    c(f"{u} = {cast}({w[j]}[{k}])")
                    for t in range(SB):
                        c(f"{acc[j][t]} += {u} * {vs[t]}")
            for j in range(nr):
                for t in range(SB):
                    scale = f" * {sc[j]}" if m.int8 else ""
                    c(f"{YA}[{s} + {I(t)}, {I(yoff + y0)} + ({row}) + {I(j)}] += {acc[j][t]}{scale}")

    row_blocks(c, i, nrows, body)


class BatchPanels:
    """The row panels of the blocked GEMM (``kernels/bgemm.py``) a generated ``step_batch`` reads: placed
    while its source is written (one per distinct product), at ``base`` onwards in ``wf``; made by
    :meth:`table` only when a ``Streams`` needs them (single-stream users never hold the copy)."""

    def __init__(self, wf, wb, base: int, vw: int):
        self.wf = wf
        self.wb = wb
        self.base = int(base)
        self.vw = int(vw)
        self.R = bgemm.NVEC * self.vw
        self.int8 = True  # int8 products too, on dequantized panels
        self.n = 0
        self.where: dict[tuple[int, int, int, int, int], int] = {}
        self._mats: dict[tuple[int, int, int, int, int], Matrix] = {}
        self.tiles: dict[tuple[int, int, int, int], str] = {}

    def _rows(self, a: int, nrows: int) -> int:
        """Floats per k of the panel holding rows a.. of ``nrows``: R, or the last rows in whole vectors."""
        return min(self.R, -(-(nrows - a) // self.vw) * self.vw)

    def panels(self, m: Matrix, col0: int, cols: int, r0: int, nrows: int) -> int:
        """Offset in wf of the panels of W[r0:r0+nrows, col0:col0+cols]: whole panels of R rows, then one
        of the last rows (padded with zero rows to whole vectors), each K·R floats k-major (int8 rows
        dequantized: row x its scale)."""
        key = (m.off, col0, cols, r0, nrows)
        if key not in self.where:
            self.where[key] = self.base + self.n
            self._mats[key] = m
            self.n += sum(self._rows(a, nrows) * cols for a in range(0, nrows, self.R))
        return self.where[key]

    def tile(self, nvec: int, valid: int) -> str:
        """The generated module's name of the SB-streams tile of ``nvec`` vectors storing ``valid`` rows."""
        key = (SB, nvec, valid, self.vw)
        if key not in self.tiles:
            self.tiles[key] = f"GT_{SB}_{nvec}_{valid}_{self.vw}"
        return self.tiles[key]

    def table(self):
        """The panels as one float32 array of ``n`` floats (empty when no product uses them)."""
        import numpy as np

        parts = []
        for key, m in self._mats.items():
            _, col0, cols, r0, nrows = key
            if m.int8:
                w = self.wb[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld).astype(np.float32)
                w *= self.wf[m.soff : m.soff + m.rows, None]
            else:
                w = self.wf[m.off : m.off + m.rows * m.ld].reshape(m.rows, m.ld)
            w = w[r0 : r0 + nrows, col0 : col0 + cols]
            for a in range(0, nrows, self.R):
                parts.append(bgemm.pack_panel(w[a : a + self.R], self._rows(a, nrows)))
        t = np.concatenate(parts) if parts else np.zeros(0, np.float32)
        assert len(t) == self.n
        return t

    def prelude(self) -> str:
        """The module-level lines that make the tiles the source calls."""
        if not self.tiles:
            return ""
        lines = ["", "from edgernn.kernels.bgemm import tile as bgemm_tile", ""]
        for (s, nvec, valid, vw), name in sorted(self.tiles.items()):
            lines.append(f"{name} = bgemm_tile({I(s)}, {I(nvec)}, {I(valid)}, {I(vw)})")
        return "\n".join(lines) + "\n"


def emit_gemm(
    c: Code,
    m: Matrix,
    col0: int,
    cols: int,
    r0: int,
    nrows: int,
    xr: tuple[str, int],
    yr: tuple[str, int],
    y0: int,
    s0: str,
    nb: str,
) -> None:
    """The float32 product of :func:`emit_gemv` as register-blocked tiles (``kernels/bgemm.py``) over
    the row panels of ``c.batch``: for each panel of R rows, the block's streams SB at a time."""
    if nrows <= 0 or cols <= 0:
        return
    bp: BatchPanels = c.batch
    XA, xoff = xr
    YA, yoff = yr
    R, vw = bp.R, bp.vw
    p0 = bp.panels(m, col0, cols, r0, nrows)
    full, rest = divmod(nrows, R)
    i, q = c.fresh("i"), c.fresh("q")
    if full:
        g = bp.tile(bgemm.NVEC, R)
        with c.block(f"for {i} in range({I(full)}):"):
            with c.block(f"for {q} in range(0, {nb}, {I(SB)}):"):
                c(
                    f"{g}(wf, {I(p0)} + {i} * {I(R * cols)}, {XA}, {s0} + {q}, {I(xoff)}, {YA}, "
                    f"{I(yoff + y0)} + {i} * {I(R)}, {I(cols)})"
                )
    if rest:
        g = bp.tile(-(-rest // vw), rest)
        with c.block(f"for {q} in range(0, {nb}, {I(SB)}):"):
            c(
                f"{g}(wf, {I(p0 + full * R * cols)}, {XA}, {s0} + {q}, {I(xoff)}, {YA}, "
                f"{I(yoff + y0 + full * R)}, {I(cols)})"
            )
