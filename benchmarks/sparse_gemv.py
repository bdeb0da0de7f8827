"""The sparse reservoir product g += W·x of an ESN (N = 500) in every layout edgernn could pack it in,
measured in one process at several densities: which one each density should get.

    python benchmarks/sparse_gemv.py               # N 500; densities 1, 2, 5, 10, 20 %; 31 rounds
    python benchmarks/sparse_gemv.py -n 1000 -r 31

Layouts (all numba, one thread, the weights resident in the caches between calls as in a stream):

* ``dense panel``: the dense matrix as 4-row panels read by ``kernels.simd.dot4_panel`` (what a CSR
  reservoir at >= 5 % packs as today);
* ``csr i32 (today)``: ``kernels.esn._csr_acc`` (four accumulators per row); ``csr int32|uint32|uint16``: the
  same loop with separate index arrays of that type (unsigned: no negative-index wrap-around in numba);
* ``sell8 scalar``: sliced ELL (``kernels/sparse.py``), slices of 8 rows padded to the slice's longest row,
  the 8 rows' entries of one column slot side by side (float32 values, uint16 indices), summed by a plain
  loop;
* ``sell8 gather lanes|masked|x86``: the same layout, one 8-wide FMA per slot, x gathered by 8 scalar loads
  (what the generated step uses), by ``llvm.masked.gather.v8f32`` or by AVX2 ``vgatherdps``
  (``kernels.sparse.make_gather8``);
* ``... sorted``: rows sorted by length before slicing (less padding; the generated step's form).

Every layout's result is checked against ``W @ x`` in float64 before timing. Prints µs per product (the
minimum, or median, of interleaved rounds: a shared machine's bursts only ever add time) and each layout's
ratio to the dense panel; asserts nothing about speed.
"""

from __future__ import annotations

import argparse
import os
import sys
import time

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)


def _kernels():
    from edgernn.kernels.config import FASTMATH
    from edgernn.kernels.esn import _csr_acc
    from edgernn.kernels.simd import LANES, dot4_panel
    from edgernn.kernels.sparse import make_gather8, make_sell8, sell8_scalar
    from numba import njit

    fm = set(FASTMATH)

    @njit(fastmath=fm)
    def rep_panel(p, W, N, x, g, reps):
        cv = N - N % LANES
        n4 = N - N % 4
        for _ in range(reps):
            for i in range(0, n4, 4):
                a0, a1, a2, a3 = dot4_panel(p, i * cv, x, 0, cv)
                for k in range(cv, N):
                    xv = x[k]
                    a0 += W[i, k] * xv
                    a1 += W[i + 1, k] * xv
                    a2 += W[i + 2, k] * xv
                    a3 += W[i + 3, k] * xv
                g[i] += a0
                g[i + 1] += a1
                g[i + 2] += a2
                g[i + 3] += a3
            for i in range(n4, N):
                s = np.float32(0.0)
                for k in range(N):
                    s += W[i, k] * x[k]
                g[i] += s
        return g[0]

    @njit(fastmath=fm)
    def csr(vals, ind, ptr, N, x, g):
        # kernels.esn._csr_acc with the column indices and row pointers in separate arrays (int16 indices)
        for r in range(N):
            a0 = a1 = a2 = a3 = np.float32(0.0)
            j, e = ptr[r], ptr[r + 1]
            while j + 4 <= e:
                a0 += vals[j] * x[ind[j]]
                a1 += vals[j + 1] * x[ind[j + 1]]
                a2 += vals[j + 2] * x[ind[j + 2]]
                a3 += vals[j + 3] * x[ind[j + 3]]
                j += 4
            while j < e:
                a0 += vals[j] * x[ind[j]]
                j += 1
            g[r] += (a0 + a1) + (a2 + a3)

    @njit(fastmath=fm)
    def rep_csr32(wi, vals, N, nnz, x, g, reps):
        for _ in range(reps):
            _csr_acc(vals, 0, wi, 0, nnz, N, x, g, vals, -1)
        return g[0]

    @njit(fastmath=fm)
    def rep_csr(vals, ind, ptr, N, x, g, reps):
        for _ in range(reps):
            csr(vals, ind, ptr, N, x, g)
        return g[0]

    def rep_sell(kern):
        @njit(fastmath=fm)
        def rep(vals, ind, wi, ro, N, x, g, reps):
            for _ in range(reps):
                kern(vals, 0, ind, 0, wi, 0, ro, N, x, g)
            return g[0]

        return rep

    sells = {"scalar": rep_sell(sell8_scalar)}
    for mode in GATHER_MODES:
        sells[f"gather {mode}"] = rep_sell(make_sell8(make_gather8(mode)))

    return rep_panel, rep_csr32, rep_csr, sells


GATHER_MODES = ("lanes", "masked", "x86")


def reservoir(n: int, density: float, seed: int = 0) -> np.ndarray:
    """A random (n, n) float32 reservoir with about ``density`` nonzeros."""
    rng = np.random.default_rng(seed)
    W = rng.standard_normal((n, n)) * (rng.random((n, n)) < density)
    return (W / max(np.abs(W).sum(1).max(), 1e-9)).astype(np.float32)


def main(argv: list[str] | None = None) -> int:
    """Entry point; returns the exit code."""
    from edgernn.kernels import sparse
    from edgernn.kernels.simd import LANES, panelize

    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("-n", type=int, default=500)
    ap.add_argument("-d", "--density", type=float, action="append")
    ap.add_argument("-r", "--rounds", type=int, default=31)
    ap.add_argument("--median", action="store_true", help="medians of the rounds (default: minima)")
    args = ap.parse_args(argv)
    rep_panel, rep_csr32, rep_csr, sells = _kernels()
    N = args.n
    dens = args.density or [0.01, 0.02, 0.05, 0.10, 0.20]
    x = np.random.default_rng(1).standard_normal(N).astype(np.float32)
    g = np.zeros(N, np.float32)
    timers, meta, meta_pad = {}, {}, {}
    for d in dens:
        W = reservoir(N, d)
        ref = W.astype(np.float64) @ x.astype(np.float64)
        rows, cols = np.nonzero(W)
        ptr = np.zeros(N + 1, np.int64)
        np.add.at(ptr, rows + 1, 1)
        ptr = np.cumsum(ptr)
        data = W[rows, cols]
        nnz = data.size
        reps = max(20, int(2e6 / max(nnz, 1)))
        cv = N - N % LANES
        p = panelize(np.ascontiguousarray(W[: N - N % 4, :cv]))
        cases = {}
        cases["dense panel"] = (lambda W=W, p=p, k=reps: rep_panel(p, W, N, x, g, k), ref)
        wi = np.concatenate([cols, ptr]).astype(np.int32)  # indices then the row pointer, as in wb today
        cases["csr i32 (today)"] = (lambda wi=wi, v=data, z=nnz, k=reps: rep_csr32(wi, v, N, z, x, g, k), ref)
        pt = ptr.astype(np.int32)
        for it in (np.int32, np.uint32, np.uint16):
            ci = cols.astype(it)
            cases[f"csr {np.dtype(it).name}"] = (
                lambda v=data, i=ci, p=pt, k=reps: rep_csr(v, i, p, N, x, g, k),
                ref,
            )
        for srt in (False, True):
            vals, ind, sl, lr = sparse.sell_pack(N, data, cols, ptr, sort=srt)
            wi = np.concatenate([sl, lr])
            meta_pad[(d, srt)] = len(vals)
            for sname, rep in sells.items():
                cases[f"sell8 {sname}{' sorted' if srt else ''}"] = (
                    lambda v=vals, i=ind, w=wi, ro=sl.size, k=reps, f=rep: f(v, i, w, ro, N, x, g, k),
                    ref,
                )
        for name, (fn, r) in cases.items():
            g[:] = 0
            fn()  # compile, and check: g = reps · W·x
            got = g.astype(np.float64) / reps
            err = np.abs(got - r).max() / max(np.abs(r).max(), 1e-30)
            assert err < 1e-4, (name, d, err)
            label = f"{d:.0%} {name}"
            timers[label] = (fn, reps)
            meta[label] = (d, name, nnz)
    for fn, _ in timers.values():  # warm-up round
        fn()
    got = {k: [] for k in timers}
    for _ in range(args.rounds):
        for k, (fn, reps) in timers.items():
            t0 = time.perf_counter()
            fn()
            got[k].append((time.perf_counter() - t0) / reps * 1e6)
    stat = np.median if args.median else np.min
    med = {k: float(stat(v)) for k, v in got.items()}
    what = "median" if args.median else "minimum"
    print(
        f"N {N}; load average {' '.join(f'{v:.2f}' for v in os.getloadavg())}; {what} of {args.rounds} rounds"
    )
    print()
    names = list(dict.fromkeys(m[1] for m in meta.values()))
    print("| layout | " + " | ".join(f"{d:.0%}" for d in dens) + " |")
    print("|---|" + "---:|" * len(dens))
    print("| nonzeros | " + " | ".join(str(meta[f"{d:.0%} dense panel"][2]) for d in dens) + " |")
    print(
        "| SELL-8 entries, unsorted / sorted | "
        + " | ".join(f"{meta_pad[(d, False)]} / {meta_pad[(d, True)]}" for d in dens)
        + " |"
    )
    for nm in names:
        cells = []
        for d in dens:
            us = med[f"{d:.0%} {nm}"]
            base = med[f"{d:.0%} dense panel"]
            cells.append(f"{us:.2f} µs ({base / us:.2f}x)")
        print(f"| {nm} | " + " | ".join(cells) + " |")
    return 0


if __name__ == "__main__":
    sys.exit(main())
