"""Integer dot products for the dynamically quantized int8 GEMV (``load(..., dynamic_int8=True)``).

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
"""

from __future__ import annotations

#: bytes per vpdpbusd (zmm)
CHUNK = 64
_FEATURE = "+avx512vnni"


def have_vnni() -> bool:
    """Whether numba compiles for a host CPU with AVX512-VNNI (and AVX512BW), as LLVM reports it."""
    try:
        import llvmlite.binding as ll

        feats = set(ll.get_host_cpu_features().flatten().split(","))
    except Exception:  # noqa: BLE001 - no llvmlite, or a platform it cannot query: the portable loop
        return False
    return _FEATURE in feats and "+avx512bw" in feats


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


try:
    dot4_u8s8 = _make()
except ImportError:  # pragma: no cover - no numba: the numpy backend never calls it
    dot4_u8s8 = None
