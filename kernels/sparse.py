"""Sparse reservoir products of the generated ESN step (``kernels/ops/esn.py``): sliced ELL (SELL-8).

A *SELL-8* matrix groups its rows in slices of :data:`SLICE` = 8 rows (rows sorted by decreasing length
first, so a slice's rows are about as long: SELL-C-σ with σ = N); slice s is padded to the longest of its
rows (``w_s`` column slots) and stored slot by slot, the 8 rows' entries of slot j side by side, values
(float32) and column indices (uint16) in two arrays::

    g[row[8s + r]] += Σ_{j < w_s} vals[8·(sl[s] + j) + r] · x[ind[8·(sl[s] + j) + r]]      (r < 8)

``sl`` holds the slices' first slots (``sl[n_slices]`` = all slots), ``row`` the row of each lane (N for the
padding lanes of the last slice); padding entries hold value 0 and index 0. One slot is one 8-wide load of
values, eight scalar loads of x inserted into a vector, and one 8-wide FMA (:func:`make_gather8`). On this
Zen 1 host that beats both the dense panels (up to ~30 % nonzeros) and CSR, whose per-row sums serialize:
``benchmarks/sparse_gemv.py``. The indices are unsigned, so numba indexes x without a negative-index
wrap-around.
"""

from __future__ import annotations

import numpy as np

from .config import kernel

#: rows per slice: one ymm of float32
SLICE = 8
#: the most rows (and columns) a SELL-8 matrix has: its column indices are uint16
MAX_N = 1 << 16


def sell_pack(
    n: int, data: np.ndarray, indices: np.ndarray, indptr: np.ndarray, sort: bool = True
) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """A CSR (n, n) matrix, n ≤ :data:`MAX_N` (``data`` [nnz] float32, ``indices`` [nnz], ``indptr``
    [n+1]) as SELL-8: (values [8·slots] float32; column indices [8·slots] uint16; the slices' first slots
    [n_slices + 1] int32; the row of each lane [8·n_slices] int32, n for a padding lane). ``sort``: rows
    by decreasing length first (random rows pad ~20 % at 10 % density unsorted, ~1 % sorted). Entries of
    a row keep their CSR order: each row's sum is the CSR sum, reassociated (two accumulators)."""
    if n > MAX_N:
        raise ValueError(f"SELL-8 holds uint16 column indices: {n} rows > {MAX_N}")
    ptr = np.asarray(indptr, np.int64)
    lens = np.diff(ptr)
    ns = -(-n // SLICE)
    order = np.argsort(-lens, kind="stable") if sort else np.arange(n)
    lane_row = np.full(ns * SLICE, n, np.int64)
    lane_row[:n] = order
    lp = np.zeros(ns * SLICE, np.int64)
    lp[:n] = lens[order]
    width = lp.reshape(ns, SLICE).max(1)
    sl = np.zeros(ns + 1, np.int64)
    np.cumsum(width, out=sl[1:])
    vals = np.zeros(int(sl[-1]) * SLICE, np.float32)
    ind = np.zeros(int(sl[-1]) * SLICE, np.uint16)
    lane_of = np.empty(n, np.int64)
    lane_of[order] = np.arange(n)
    rows = np.repeat(np.arange(n), lens)
    pos = np.arange(ptr[-1]) - ptr[rows]  # slot of each entry within its row
    lane = lane_of[rows]
    at = (sl[lane // SLICE] + pos) * SLICE + lane % SLICE
    vals[at] = data
    ind[at] = np.asarray(indices, np.int64)
    return vals, ind, sl.astype(np.int32), lane_row.astype(np.int32)


@kernel
def sell8_scalar(vals, voff, ind, ioff, wi, so, ro, N, x, g):
    """:func:`sell8_acc` as a plain loop over the slots (the benchmark's baseline; not generated)."""
    ns = (N + 7) // 8
    for s in range(ns):
        a0 = a1 = a2 = a3 = a4 = a5 = a6 = a7 = np.float32(0.0)
        for j in range(wi[so + s] * 8, wi[so + s + 1] * 8, 8):
            a0 += vals[voff + j] * x[ind[ioff + j]]
            a1 += vals[voff + j + 1] * x[ind[ioff + j + 1]]
            a2 += vals[voff + j + 2] * x[ind[ioff + j + 2]]
            a3 += vals[voff + j + 3] * x[ind[ioff + j + 3]]
            a4 += vals[voff + j + 4] * x[ind[ioff + j + 4]]
            a5 += vals[voff + j + 5] * x[ind[ioff + j + 5]]
            a6 += vals[voff + j + 6] * x[ind[ioff + j + 6]]
            a7 += vals[voff + j + 7] * x[ind[ioff + j + 7]]
        _put8(wi, ro, N, g, s * 8, (a0, a1, a2, a3, a4, a5, a6, a7))


@kernel
def _put8(wi, ro, N, g, l0, acc):
    for r in range(8):
        row = wi[ro + l0 + r]
        if row < N:
            g[row] += acc[r]


def make_gather8(mode: str = "lanes"):
    """The numba intrinsic ``gather8(vals, voff, ind, ioff, x, w) -> 8 float32``: lane r's sum
    Σ_{j < w} vals[voff + 8j + r] · x[ind[ioff + 8j + r]] of one slice (float32 ``vals`` and ``x``,
    uint16 ``ind``; two accumulators, alternate slots). How x is gathered, ``mode``:

    * "lanes" (the generated code's): the 8 indices as two 64-bit words taken apart with shifts, 8 scalar
      loads of x inserted into a vector. Generic IR, any CPU; 8 separate index loads are merged by LLVM
      into one vector load and 8 costly extracts (on this Zen 1: 1.3-2x slower);
    * "masked": one ``llvm.masked.gather.v8f32``; LLVM scalarizes it where the target's gather is slow
      (Zen 1: 2x slower than "lanes");
    * "x86": the AVX2 ``vgatherdps`` itself (AVX2 hosts only; Zen 1: microcoded, 3x slower than "lanes").
    """
    import sys

    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.core.errors import TypingError
    from numba.extending import intrinsic

    f32, i1, i8, i16, i32, i64 = (ir.FloatType(), *(ir.IntType(b) for b in (1, 8, 16, 32, 64)))
    vf = ir.VectorType(f32, SLICE)
    vi32 = ir.VectorType(i32, SLICE)
    words = sys.byteorder == "little"  # the shifts take index r from bits 16r of the word

    @intrinsic
    def gather8(typingctx, vals, voff, ind, ioff, x, w):
        if (vals.dtype, ind.dtype, x.dtype) != (types.float32, types.uint16, types.float32):
            raise TypingError("gather8 takes float32 values and x and uint16 indices")
        sig = types.UniTuple(types.float32, SLICE)(vals, voff, ind, ioff, x, w)

        def codegen(context, builder, signature, args):
            va, vo, ia, io, xa, wv = (
                builder.sext(a, i64) if isinstance(a.type, ir.IntType) and a.type.width < 64 else a
                for a in args
            )
            vd = context.make_array(signature.args[0])(context, builder, va).data
            idd = context.make_array(signature.args[2])(context, builder, ia).data
            xd = context.make_array(signature.args[4])(context, builder, xa).data
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{SLICE}f32"
            )
            zero = ir.Constant(vf, None)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(2)]

            def at(base, off, k):  # &base[off + k]
                return builder.gep(base, [builder.add(off, ir.Constant(i64, k))])

            def lanes(o):
                io_ = builder.add(io, o)
                xv = zero
                for r in range(SLICE):
                    if words:
                        if r % 4 == 0:
                            word = builder.load(builder.bitcast(at(idd, io_, r), i64.as_pointer()), align=2)
                        e = builder.lshr(word, ir.Constant(i64, 16 * (r % 4))) if r % 4 else word
                        e = builder.and_(e, ir.Constant(i64, 0xFFFF))
                    else:
                        e = builder.zext(builder.load(at(idd, io_, r)), i64)
                    xr = builder.load(builder.gep(xd, [e]), align=4)
                    xv = builder.insert_element(xv, xr, ir.Constant(i32, r))
                return xv

            def vector_index(o):
                p = builder.bitcast(at(idd, builder.add(io, o), 0), ir.VectorType(i16, SLICE).as_pointer())
                return builder.zext(builder.load(p, align=2), vi32)

            def masked(o):
                vp = ir.VectorType(f32.as_pointer(), SLICE)
                gather = cgutils.get_or_insert_function(
                    builder.module,
                    ir.FunctionType(vf, [vp, i32, ir.VectorType(i1, SLICE), vf]),
                    f"llvm.masked.gather.v{SLICE}f32.v{SLICE}p0f32",
                )
                gep = ir.instructions.GEPInstr(
                    builder.block, xd, [vector_index(o)], True, "xp", source_etype=f32
                )
                gep.type = vp  # a vector GEP (llvmlite's builder types scalar ones only): 8 pointers
                builder._insert(gep)
                mask = ir.Constant(ir.VectorType(i1, SLICE), [1] * SLICE)
                return builder.call(gather, [gep, ir.Constant(i32, 4), mask, zero])

            def x86(o):
                i8p = i8.as_pointer()
                gather = cgutils.get_or_insert_function(
                    builder.module,
                    ir.FunctionType(vf, [vf, i8p, vi32, vf, i8]),
                    "llvm.x86.avx2.gather.d.ps.256",
                )
                ones = builder.bitcast(ir.Constant(vi32, [-1] * SLICE), vf)
                return builder.call(
                    gather, [zero, builder.bitcast(xd, i8p), vector_index(o), ones, ir.Constant(i8, 4)]
                )

            get_x = {"lanes": lanes, "masked": masked, "x86": x86}[mode]

            def slot(k, u):
                o = builder.mul(k, ir.Constant(i64, SLICE))
                v = builder.load(
                    builder.bitcast(builder.gep(vd, [builder.add(vo, o)]), vf.as_pointer()), align=4
                )
                builder.store(builder.call(fma, [v, get_x(o), builder.load(accs[u])]), accs[u])

            one, two = ir.Constant(i64, 1), ir.Constant(i64, 2)
            with cgutils.for_range(builder, builder.udiv(wv, two)) as loop:
                k0 = builder.mul(loop.index, two)
                slot(k0, 0)
                slot(builder.add(k0, one), 1)
            with builder.if_then(builder.icmp_unsigned("!=", builder.urem(wv, two), ir.Constant(i64, 0))):
                slot(builder.sub(wv, one), 0)
            acc = builder.fadd(builder.load(accs[0]), builder.load(accs[1]))
            outs = [builder.extract_element(acc, ir.Constant(i32, r)) for r in range(SLICE)]
            return context.make_tuple(builder, signature.return_type, outs)

        return sig, codegen

    return gather8


def make_sell8(gather8):
    """The SELL-8 product kernel over ``gather8`` (see :func:`make_gather8`)."""

    @kernel
    def sell8_acc(vals, voff, ind, ioff, wi, so, ro, N, x, g):
        """g += W·x for the SELL-8 W (module docstring) of N rows: values at ``vals[voff:]`` (float32),
        column indices at ``ind[ioff:]`` (uint16), the slices' first slots at ``wi[so:]`` and the lanes'
        rows at ``wi[ro:]`` (int32)."""
        ns = (N + 7) // 8
        for s in range(ns):
            k0 = wi[so + s] * 8
            _put8(
                wi, ro, N, g, s * 8, gather8(vals, voff + k0, ind, ioff + k0, x, wi[so + s + 1] - wi[so + s])
            )

    return sell8_acc


try:
    sell8_acc = make_sell8(make_gather8())
except ImportError:  # pragma: no cover - no numba: the numpy backend never calls it
    sell8_acc = None
