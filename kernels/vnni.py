"""Integer dot products for the dynamically quantized int8 GEMV (``load(..., dynamic_int8=True)``).

Two numba intrinsics, each used only when the code is generated for a CPU that has its instructions
(VNNI first, else AVX2, else the generated code writes a plain integer loop with the same exact sums).

numba's loops of i8·i8 products reach at best ``vpdpwssd`` on 32-bit lanes here (8 products per
instruction, after widening every byte): no faster than float32 FMAs. :func:`dot4_u8s8` is a numba
intrinsic that emits the x86 VNNI instruction itself (``llvm.x86.avx512.vpdpbusd.512``: 64 u8·s8
products per instruction, summed into 16 int32 lanes); the generated code calls it only when
:func:`have_vnni` says the host CPU has AVX512-VNNI, and otherwise writes a plain integer loop with the
same (exact, integer) result, so generated code stays portable (aarch64, x86 without VNNI, AOT targets).

    dot4_u8s8(w, woff, ld, q, n) -> (s0, s1, s2, s3)
    s_j = Σ_{k<n} q[k] · w[woff + j·ld + k]      (int32; q uint8, w int8; n a multiple of 64)

The caller stores the quantized vector as ``v + 128`` in uint8 (v ∈ [−127, 127]) and takes off 128 times
the row's weight sum, computed once at load (``ops/_qemit.row_sums``).

:func:`dot4_s8_panel` is the AVX2 form (no VNNI: Zen 1/2, Haswell..Skylake client): the four rows are
stored as one *panel* (``panelize_i8``: 32 bytes of row 0, of row 1, of row 2, of row 3, then the next 32
columns, zero-padded to whole chunks), so they are read as one stream, and per 32 bytes of a row::

    vpsignb    w' = w · sign(q)            (x's sign moved onto the weights; w ∈ [−127, 127])
    vpmaddubsw t  = |q|·w' pairwise → i16  (no saturation: 2·127·127 < 32767)
    vpmaddwd   t·1 → i32, added to the row's accumulator

    dot4_s8_panel(p, off, q, n) -> (s0, s1, s2, s3)
    s_j = Σ_{k<n} q[k] · p[off + (k // 32)·128 + 32·j + k % 32]      (int32; q int8 ∈ [−127, 127];
                                                                       n a multiple of 32)

Measured here (Zen 1, one thread, 1024×256 weights: LSTM 8→256's R): 13–14 µs against 24–27 µs for
the float32 panel product over the same weights as float32 (``benchmarks/int8_step.py``); a 256-bit
``vpmaddubsw`` or ``vpmaddwd`` is two uops there, so this is about the integer ceiling without VNNI
(summing two ``vpmaddubsw`` in int16 before one ``vpmaddwd`` measured ~10% faster but needs |q| ≤ 64).
"""

from __future__ import annotations

import numpy as np

from .simd import host_features

#: bytes per vpdpbusd (zmm)
CHUNK = 64
#: bytes per row and chunk of an AVX2 int8 panel (one ymm)
PCHUNK = 32
_FEATURE = "+avx512vnni"


def have_vnni() -> bool:
    """Whether numba compiles for a host CPU with AVX512-VNNI (and AVX512BW), as LLVM reports it."""
    feats = host_features()
    return _FEATURE in feats and "+avx512bw" in feats


def have_avx2() -> bool:
    """Whether numba compiles for a host CPU with AVX2 (``dot4_s8_panel``), as LLVM reports it."""
    return "+avx2" in host_features()


def panelize_i8(block: np.ndarray) -> np.ndarray:
    """(rows, cols) int8 with rows % 4 == 0 -> its panel copy, flat int8: columns zero-padded to a
    multiple of PCHUNK, then per block of 4 rows chunk by chunk (32 bytes of each row in turn)."""
    r, c = block.shape
    cp = c + (-c % PCHUNK)
    padded = np.zeros((r, cp), np.int8)
    padded[:, :c] = block
    return np.ascontiguousarray(padded.reshape(r // 4, 4, cp // PCHUNK, PCHUNK).transpose(0, 2, 1, 3)).ravel()


def _make():
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i8, i32, i64 = ir.IntType(8), ir.IntType(32), ir.IntType(64)
    vi = ir.VectorType(i32, CHUNK // 4)
    vb = ir.VectorType(i8, CHUNK)

    @intrinsic
    def dot4_u8s8(typingctx, w, woff, ld, q, n):
        sig = types.UniTuple(types.int32, 4)(w, woff, ld, q, n)

        def codegen(context, builder, signature, args):
            warr, wo, ldv, qarr, nv = (
                builder.sext(a, i64) if isinstance(a.type, ir.IntType) and a.type.width < 64 else a
                for a in args
            )
            wd = context.make_array(signature.args[0])(context, builder, warr).data
            qd = context.make_array(signature.args[3])(context, builder, qarr).data
            dp = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vi, [vi, vi, vi]), "llvm.x86.avx512.vpdpbusd.512"
            )
            zero = ir.Constant(vi, None)
            accs = [cgutils.alloca_once_value(builder, zero) for _ in range(4)]
            nchunks = builder.udiv(nv, ir.Constant(i64, CHUNK))
            with cgutils.for_range(builder, nchunks) as loop:
                k = builder.mul(loop.index, ir.Constant(i64, CHUNK))
                qv = builder.load(builder.bitcast(builder.gep(qd, [k]), vb.as_pointer()), align=1)
                qv = builder.bitcast(qv, vi)
                for j in range(4):
                    o = builder.add(builder.add(wo, builder.mul(ldv, ir.Constant(i64, j))), k)
                    wv = builder.load(builder.bitcast(builder.gep(wd, [o]), vb.as_pointer()), align=1)
                    wv = builder.bitcast(wv, vi)
                    builder.store(builder.call(dp, [builder.load(accs[j]), qv, wv]), accs[j])
            red = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(i32, [vi]), f"llvm.vector.reduce.add.v{CHUNK // 4}i32"
            )
            outs = [builder.call(red, [builder.load(accs[j])]) for j in range(4)]
            return context.make_tuple(builder, signature.return_type, outs)

        return sig, codegen

    return dot4_u8s8


def _make_avx2():
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    i1, i8, i16, i32, i64 = ir.IntType(1), ir.IntType(8), ir.IntType(16), ir.IntType(32), ir.IntType(64)
    vb = ir.VectorType(i8, PCHUNK)
    vw = ir.VectorType(i16, PCHUNK // 2)
    vi = ir.VectorType(i32, PCHUNK // 4)

    @intrinsic
    def dot4_s8_panel(typingctx, p, off, q, n):
        sig = types.UniTuple(types.int32, 4)(p, off, q, n)

        def codegen(context, builder, signature, args):
            parr, po, qarr, nv = (
                builder.sext(a, i64) if isinstance(a.type, ir.IntType) and a.type.width < 64 else a
                for a in args
            )
            pd = context.make_array(signature.args[0])(context, builder, parr).data
            qd = context.make_array(signature.args[2])(context, builder, qarr).data

            def fn(ret, argt, name):
                return cgutils.get_or_insert_function(builder.module, ir.FunctionType(ret, argt), name)

            psign = fn(vb, [vb, vb], "llvm.x86.avx2.psign.b")
            mubs = fn(vw, [vb, vb], "llvm.x86.avx2.pmadd.ub.sw")
            mwd = fn(vi, [vw, vw], "llvm.x86.avx2.pmadd.wd")
            vabs = fn(vb, [vb, i1], f"llvm.abs.v{PCHUNK}i8")
            ones = ir.Constant(vw, [1] * (PCHUNK // 2))
            accs = [cgutils.alloca_once_value(builder, ir.Constant(vi, None)) for _ in range(4)]
            nchunks = builder.udiv(nv, ir.Constant(i64, PCHUNK))
            with cgutils.for_range(builder, nchunks) as loop:
                k = builder.mul(loop.index, ir.Constant(i64, PCHUNK))
                qv = builder.load(builder.bitcast(builder.gep(qd, [k]), vb.as_pointer()), align=1)
                qa = builder.call(vabs, [qv, ir.Constant(i1, 0)])  # |q| as u8 (q = −128 never occurs)
                base = builder.add(po, builder.mul(k, ir.Constant(i64, 4)))
                for j in range(4):
                    o = builder.add(base, ir.Constant(i64, j * PCHUNK))
                    wv = builder.load(builder.bitcast(builder.gep(pd, [o]), vb.as_pointer()), align=1)
                    t = builder.call(mubs, [qa, builder.call(psign, [wv, qv])])
                    builder.store(builder.add(builder.load(accs[j]), builder.call(mwd, [t, ones])), accs[j])
            red = fn(i32, [vi], f"llvm.vector.reduce.add.v{PCHUNK // 4}i32")
            outs = [builder.call(red, [builder.load(accs[j])]) for j in range(4)]
            return context.make_tuple(builder, signature.return_type, outs)

        return sig, codegen

    return dot4_s8_panel


try:
    dot4_u8s8 = _make()
    dot4_s8_panel = _make_avx2()
except ImportError:  # pragma: no cover - no numba: the numpy backend never calls it
    dot4_u8s8 = dot4_s8_panel = None
