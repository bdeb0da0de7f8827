"""Would float16 weight panels pay here? A 4-row panel GEMV (``kernels.simd.dot4_panel``) with the panel
stored as float16 and widened in the loop (``<16 x half>`` loads, ``fpext`` to float: ``vcvtph2ps`` with
F16C), against the float32 panel, in one process, rounds interleaved.

    python benchmarks/fp16_panel.py             # 1024x256 (LSTM 8->256's R: 1 MiB fp32, 512 KiB fp16),
                                                # 500x500 (ESN 500's W), 256x64; 31 rounds

The float16 variant halves the bytes read per step; it costs one conversion per 8 weights (two uops for a
ymm on Zen 1). Prints µs per product (minimum of the rounds) and GB/s of weights read; checks both against
the float64 product of the (float16-rounded) weights first. Asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np


def _dot4_panel_h(UNROLL: int):
    """dot4_panel over a float16 panel in a byte buffer: ``(p (int8), off (halves), x, xoff, n)``, with
    ``UNROLL`` chunks in flight per row (2 as dot4_panel: 16 ymm accumulators, so the converted weights
    spill on AVX2; 1: 8 accumulators)."""
    from edgernn.kernels.simd import LANES
    from llvmlite import ir
    from numba import types
    from numba.core import cgutils
    from numba.extending import intrinsic

    f16, f32, i32, i64 = ir.HalfType(), ir.FloatType(), ir.IntType(32), ir.IntType(64)
    vf, vh = ir.VectorType(f32, LANES), ir.VectorType(f16, LANES)

    @intrinsic
    def dot4_panel_h(typingctx, p, off, x, xoff, n):
        sig = types.UniTuple(types.float32, 4)(p, off, x, xoff, n)

        def codegen(context, builder, signature, args):
            parr, po, xarr, xo, nv = (
                builder.sext(a, i64) if isinstance(a.type, ir.IntType) and a.type.width < 64 else a
                for a in args
            )
            pd = builder.bitcast(
                context.make_array(signature.args[0])(context, builder, parr).data, f16.as_pointer()
            )
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
                    wh = builder.load(builder.bitcast(builder.gep(pd, [o]), vh.as_pointer()), align=2)
                    wv = builder.fpext(wh, vf)
                    builder.store(builder.call(fma, [wv, xv, builder.load(accs[j][u])]), accs[j][u])

            step = LANES * UNROLL
            nfull = builder.udiv(nv, ir.Constant(i64, step))
            with cgutils.for_range(builder, nfull) as loop:
                k0 = builder.mul(loop.index, ir.Constant(i64, step))
                for u in range(UNROLL):
                    chunk(builder.add(k0, ir.Constant(i64, u * LANES)), u)
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

    return dot4_panel_h


def _kernels():
    from edgernn.kernels.config import FASTMATH
    from edgernn.kernels.simd import dot4_panel
    from numba import njit

    fm = set(FASTMATH)

    @njit(fastmath=fm)
    def gemv32(p, R, C, x, y, reps):
        for _ in range(reps):
            for i in range(0, R, 4):
                a0, a1, a2, a3 = dot4_panel(p, i * C, x, 0, C)
                y[i] += a0
                y[i + 1] += a1
                y[i + 2] += a2
                y[i + 3] += a3
        return y[0]

    def gemv16(unroll):
        dot4_panel_h = _dot4_panel_h(unroll)

        @njit(fastmath=fm)
        def gemv(p, R, C, x, y, reps):
            for _ in range(reps):
                for i in range(0, R, 4):
                    a0, a1, a2, a3 = dot4_panel_h(p, i * C, x, 0, C)
                    y[i] += a0
                    y[i + 1] += a1
                    y[i + 2] += a2
                    y[i + 3] += a3
            return y[0]

        return gemv

    return gemv32, gemv16(2), gemv16(1)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from edgernn.kernels.simd import panelize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-r", "--rounds", type=int, default=31)
    args = ap.parse_args(argv)
    gemv32, gemv16, gemv16u1 = _kernels()
    rng = np.random.default_rng(0)
    timers, sizes = {}, {}
    for R, C in ((1024, 256), (500, 496), (256, 64)):  # 500x500's panel part: 496 whole chunks of 16 columns
        R4 = R - R % 4
        W = rng.uniform(-0.1, 0.1, (R4, C)).astype(np.float16).astype(np.float32)  # values fp16 holds exactly
        x = rng.standard_normal(C).astype(np.float32)
        ref = W.astype(np.float64) @ x
        p32 = panelize(W)
        p16 = p32.astype(np.float16).view(np.int8)
        y = np.zeros(R4, np.float32)
        reps = max(10, int(4e7 / (R4 * C)))
        for name, fn, p, nbytes in (
            ("fp32", gemv32, p32, 4),
            ("fp16", gemv16, p16, 2),
            ("fp16 unroll 1", gemv16u1, p16, 2),
        ):
            y[:] = 0
            fn(p, R4, C, x, y, 1)
            assert np.abs(y - ref).max() <= 1e-5 * (np.abs(W) @ np.abs(x)).max(), name
            label = f"{R4}x{C} {name}"
            timers[label] = (lambda fn=fn, p=p, R4=R4, C=C, x=x, y=y, k=reps: fn(p, R4, C, x, y, k), reps)
            sizes[label] = R4 * C * nbytes
    for fn, _ in timers.values():
        fn()
    got = {k: [] for k in timers}
    for _ in range(args.rounds):
        for k, (fn, reps) in timers.items():
            t0 = time.perf_counter()
            fn()
            got[k].append((time.perf_counter() - t0) / reps * 1e6)
    us = {k: float(np.min(v)) for k, v in got.items()}
    print(f"load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; minimum of {args.rounds} rounds")
    print()
    print("| GEMV | weights KiB | µs | GB/s | fp32 / this |")
    print("|---|---:|---:|---:|---:|")
    for k, v in us.items():
        base = us[k.split(" ", 1)[0] + " fp32"]
        print(f"| {k} | {sizes[k] / 1024:.0f} | {v:.2f} | {sizes[k] / v / 1e3:.1f} | {base / v:.2f}x |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
