"""A register-blocked float32 GEMM micro-kernel for the many-stream kernel (``kernels/lanes.py``).

A block of streams times one matrix is a GEMM: ``Y[s, r] += Σ_k W[r, k] · X[s, k]`` with each stream's
input row ``X[s, :]`` and output row ``Y[s, :]`` where they live (rows of the 2-D stream buffer ``MB`` or
of the model input ``X``). The weights are packed once at load as *row panels*: ``R`` rows k-major,
``P[k·R + r] = W[r0 + r, col0 + k]`` (:func:`pack_panel`; rows past the matrix are zeros). The kernel
``tile(S, nvec, valid)`` computes an S-streams x R-rows tile (R = ``nvec``·VW) in registers::

    tile(wf, p, XA, s, xoff, YA, yoff, K)
    for k < K:  w_v = P[k·R + v·VW : +VW] (v < nvec);  b_t = broadcast X[s+t, xoff+k] (t < S)
                acc[t][v] = fma(w_v, b_t, acc[t][v])
    then        Y[s+t, yoff + r] += acc[t][r]   for r < valid (≤ R)

so each weight vector loaded feeds S FMAs and each broadcast input feeds ``nvec``; the output of one
stream is ``valid`` contiguous floats of its own row (a vector add, no scatter). Written as generic LLVM
vector IR (``llvm.fma.v{VW}f32``, insert/shuffle broadcasts): LLVM legalizes it for any CPU (two 128-bit
halves on NEON; ymm with AVX2; zmm with VW = 16 on AVX-512). Sums run in k order per element, like the
single-stream rows but without their lane reassociation.
"""

from __future__ import annotations

import functools

import numpy as np

#: streams per tile and weight vectors per tile (S x nvec accumulators: 4 x 3 = 12 of the 16 ymm/zmm)
S = 4
NVEC = 3


def vector_width() -> int:
    """Floats per vector register for the panels, chosen from the host CPU: 16 with AVX-512F, else 8."""
    from .simd import host_features

    return 16 if "+avx512f" in host_features() else 8


def pack_panel(w: np.ndarray, R: int) -> np.ndarray:
    """(rows ≤ R, K) float32 -> the k-major panel (K·R,) flat: ``P[k·R + r] = w[r, k]``, zero rows past
    ``rows``."""
    rows, K = w.shape
    p = np.zeros((K, R), np.float32)
    p[:, :rows] = w.T
    return p.ravel()


@functools.cache
def tile(s: int, nvec: int, valid: int, vw: int):
    """The numba intrinsic of an s-streams x (nvec·vw)-rows tile storing ``valid`` rows (see the module
    docstring); one per shape, made on first use."""
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    R = nvec * vw
    if not 0 < valid <= R:
        raise ValueError(f"valid rows {valid} outside 1..{R}")
    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vf = ir.VectorType(f32, vw)

    @intrinsic
    def gemm_tile(typingctx, wf, p, XA, s0, xoff, YA, yoff, K):
        sig = types.void(wf, p, XA, s0, xoff, YA, yoff, K)

        def codegen(context, builder, signature, args):
            wfa, po, xa, so, xo, ya, yo, kn = (
                builder.sext(a, i64) if isinstance(a.type, ir.IntType) and a.type.width < 64 else a
                for a in args
            )
            wd = context.make_array(signature.args[0])(context, builder, wfa).data
            xarr = context.make_array(signature.args[2])(context, builder, xa)
            yarr = context.make_array(signature.args[5])(context, builder, ya)
            # row strides in floats (C-contiguous 2-D arrays: inner stride 1)
            xld = builder.sdiv(builder.extract_value(xarr.strides, 0), ir.Constant(i64, 4))
            yld = builder.sdiv(builder.extract_value(yarr.strides, 0), ir.Constant(i64, 4))

            def row(arr, ld, off, t):  # &arr[s0 + t, off]
                return builder.gep(
                    arr.data, [builder.add(builder.mul(builder.add(so, ir.Constant(i64, t)), ld), off)]
                )

            xrow = [row(xarr, xld, xo, t) for t in range(s)]
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{vw}f32"
            )
            zero = ir.Constant(vf, None)
            undef = ir.Constant(vf, ir.Undefined)
            splat = ir.Constant(ir.VectorType(i32, vw), [0] * vw)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(nvec)] for _ in range(s)]
            pbase = builder.gep(wd, [po])

            def vload(ptr):
                return builder.load(builder.bitcast(ptr, vf.as_pointer()), align=4)

            with cgutils.for_range(builder, kn) as loop:
                k = loop.index
                wrow = builder.gep(pbase, [builder.mul(k, ir.Constant(i64, R))])
                ws = [vload(builder.gep(wrow, [ir.Constant(i64, v * vw)])) for v in range(nvec)]
                for t in range(s):
                    xv = builder.load(builder.gep(xrow[t], [k]))
                    b = builder.insert_element(undef, xv, ir.Constant(i32, 0))
                    b = builder.shuffle_vector(b, undef, splat)
                    for v in range(nvec):
                        builder.store(builder.call(fma, [ws[v], b, builder.load(accs[t][v])]), accs[t][v])
            for t in range(s):
                yrow = row(yarr, yld, yo, t)
                for v in range(nvec):
                    n = min(vw, valid - v * vw)
                    if n <= 0:
                        break
                    acc = builder.load(accs[t][v])
                    if n == vw:
                        ptr = builder.bitcast(builder.gep(yrow, [ir.Constant(i64, v * vw)]), vf.as_pointer())
                        builder.store(builder.fadd(builder.load(ptr, align=4), acc), ptr, align=4)
                    else:
                        for j in range(n):
                            ptr = builder.gep(yrow, [ir.Constant(i64, v * vw + j)])
                            e = builder.extract_element(acc, ir.Constant(i32, j))
                            builder.store(builder.fadd(builder.load(ptr), e), ptr)
            return context.get_dummy_value()

        return sig, codegen

    return gemm_tile
