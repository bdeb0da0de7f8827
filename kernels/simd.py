"""A float32 dot product of four weight rows stored as one panel, for the generated step's GEMV.

The step's four-row dot products read four rows at once, ``ld`` floats apart: for LSTM 8→256 that is
1 MiB of weights as four interleaved streams, read at about half the bandwidth one contiguous stream
gets here (``benchmarks/roofline.py``: 1024×256 in 14.6 µs as rows, 8.1 µs as panels, 7.8 µs for a plain
1 MiB sum). A *panel* stores a block of four rows chunk by chunk: 16 floats of row 0, of row 1, of row 2,
of row 3, then the next 16 columns (``panelize``), so the block is one stream. numba cannot keep a vector
accumulator across such chunks, so :func:`dot4_panel` is an intrinsic written as generic LLVM vector IR
(``llvm.fma.v16f32``, shuffles; no target intrinsic: LLVM legalizes it for any CPU)::

    dot4_panel(p, off, x, xoff, n) -> (s0, s1, s2, s3)
    s_j = Σ_{k<n} p[off + (k // 16)·64 + 16·j + k % 16] · x[xoff + k]      (n a multiple of 16)

Sums are reassociated (16 lanes, two accumulators per row) like the fastmath loops they replace.
"""

from __future__ import annotations

import numpy as np

#: columns per chunk of a panel (one zmm, or two ymm / four NEON registers)
LANES = 16
#: chunks in flight per row (accumulators), to cover the FMA latency
UNROLL = 2


def panelize(block: np.ndarray) -> np.ndarray:
    """(rows, cols) float32 with rows % 4 == 0 and cols % 16 == 0 -> the panel copy, flat."""
    r, c = block.shape
    return np.ascontiguousarray(block.reshape(r // 4, 4, c // LANES, LANES).transpose(0, 2, 1, 3)).ravel()


def _make():
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    f32, i32, i64 = ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vf = ir.VectorType(f32, LANES)

    @intrinsic
    def dot4_panel(typingctx, p, off, x, xoff, n):
        sig = types.UniTuple(types.float32, 4)(p, off, x, xoff, n)

        def codegen(context, builder, signature, args):
            parr, po, xarr, xo, nv = (
                builder.sext(a, i64) if isinstance(a.type, ir.IntType) and a.type.width < 64 else a
                for a in args
            )
            pd = context.make_array(signature.args[0])(context, builder, parr).data
            xd = context.make_array(signature.args[2])(context, builder, xarr).data
            fma = cgutils.get_or_insert_function(
                builder.module, ir.FunctionType(vf, [vf, vf, vf]), f"llvm.fma.v{LANES}f32"
            )
            zero = ir.Constant(vf, None)
            accs = [[cgutils.alloca_once_value(builder, zero) for _ in range(UNROLL)] for _ in range(4)]

            def chunk(k, u):
                xv = builder.load(
                    builder.bitcast(builder.gep(xd, [builder.add(xo, k)]), vf.as_pointer()), align=4
                )
                base = builder.add(po, builder.mul(k, ir.Constant(i64, 4)))
                for j in range(4):
                    o = builder.add(base, ir.Constant(i64, j * LANES))
                    wv = builder.load(builder.bitcast(builder.gep(pd, [o]), vf.as_pointer()), align=4)
                    builder.store(builder.call(fma, [wv, xv, builder.load(accs[j][u])]), accs[j][u])

            step = LANES * UNROLL
            nfull = builder.udiv(nv, ir.Constant(i64, step))
            with cgutils.for_range(builder, nfull) as loop:
                k0 = builder.mul(loop.index, ir.Constant(i64, step))
                for u in range(UNROLL):
                    chunk(builder.add(k0, ir.Constant(i64, u * LANES)), u)
            # a last chunk when n / 16 is odd
            rest = builder.urem(builder.udiv(nv, ir.Constant(i64, LANES)), ir.Constant(i64, UNROLL))
            with builder.if_then(builder.icmp_unsigned("!=", rest, ir.Constant(i64, 0))):
                chunk(builder.mul(nfull, ir.Constant(i64, step)), 0)
            outs = []
            for j in range(4):
                v = builder.load(accs[j][0])
                for u in range(1, UNROLL):
                    v = builder.fadd(v, builder.load(accs[j][u]))
                w = LANES
                while w > 1:
                    w //= 2
                    lo = builder.shuffle_vector(v, v, ir.Constant(ir.VectorType(i32, w), list(range(w))))
                    hi = builder.shuffle_vector(
                        v, v, ir.Constant(ir.VectorType(i32, w), list(range(w, 2 * w)))
                    )
                    v = builder.fadd(lo, hi)
                outs.append(builder.extract_element(v, ir.Constant(i32, 0)))
            return context.make_tuple(builder, signature.return_type, outs)

        return sig, codegen

    return dot4_panel


def host_features() -> set[str]:
    """The host CPU's features as LLVM reports them for numba's code generation (``"+avx2"``, ...); empty
    without llvmlite or on a platform it cannot query (the callers then take their portable paths)."""
    try:
        import llvmlite.binding as ll

        return set(ll.get_host_cpu_features().flatten().split(","))
    except Exception:  # noqa: BLE001 - no llvmlite, or a platform it cannot query
        return set()


def have_simd() -> bool:
    """Whether the step uses panels here: x86-64 with AVX2 and FMA (measured there; other CPUs keep the
    row loops until measured)."""
    feats = host_features()
    return "+avx2" in feats and "+fma" in feats


try:
    dot4_panel = _make()
except ImportError:  # pragma: no cover - no numba: the numpy backend never calls it
    dot4_panel = None
