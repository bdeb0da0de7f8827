"""The CPU an AOT module is built for, and whether this machine can run it.

An AOT module built for the host CPU (the default of ``edgernn aot``) uses every instruction set
extension of the build machine (AVX2, AVX-512, FMA on x86-64; dot product, FP16 on aarch64); on a CPU
without one of them it would stop with an illegal instruction. So the module records the CPU it was
built for (:func:`record`) and the runtime compares it with this machine's (:func:`refusal`) before
using it. Both sides read the CPU the way the device can, without numba or llvmlite: the kernel's
``/proc/cpuinfo`` on Linux (the CPU model and its feature flags), numpy's own run-time CPU feature
detection elsewhere.

A module is accepted on a CPU with the same model identity (x86: vendor, family and model; Arm: the
implementer and part of every core; a subset of the build machine's core types is accepted) that has
every feature flag the build enabled. A module built for
the generic CPU of the architecture (``edgernn aot --cpu generic``) runs on every CPU of it and is not
checked; neither is one built for a CPU named explicitly (``--cpu cortex-a72``): that name is the
builder's promise.
"""

from __future__ import annotations

import functools
import platform
from typing import Any

#: LLVM feature name -> the Linux kernel's name for the same feature in /proc/cpuinfo, where they differ
#: beyond "." / "-" becoming "_" (x86: arch/x86/include/asm/cpufeatures.h; arm64: the hwcap names).
LLVM_TO_CPUINFO: dict[str, str] = {
    # x86-64
    "64bit": "lm",
    "x87": "fpu",
    "sse3": "pni",
    "pclmul": "pclmulqdq",
    "bmi": "bmi1",
    "rdrnd": "rdrand",
    "sahf": "lahf_lm",
    "lzcnt": "abm",
    "prfchw": "3dnowprefetch",
    "crc32": "sse4_2",
    "sha": "sha_ni",
    "avxvnni": "avx_vnni",
    "avx512vnni": "avx512_vnni",
    "avx512bf16": "avx512_bf16",
    "avx512vbmi2": "avx512_vbmi2",
    "avx512bitalg": "avx512_bitalg",
    "avx512vpopcntdq": "avx512_vpopcntdq",
    "avx512fp16": "avx512_fp16",
    "avx512vp2intersect": "avx512_vp2intersect",
    "avxifma": "avx_ifma",
    "avxvnniint8": "avx_vnni_int8",
    "avxneconvert": "avx_ne_convert",
    # aarch64
    "neon": "asimd",
    "fp-armv8": "fp",
    "crc": "crc32",
    "lse": "atomics",
    "rdm": "asimdrdm",
    "dotprod": "asimddp",
    "fullfp16": "asimdhp",
    "rcpc": "lrcpc",
    "rcpc-immo": "ilrcpc",
    "fp16fml": "asimdfhm",
    "jsconv": "jscvt",
    "complxnum": "fcma",
    "fptoint": "frint",
    "pauth": "paca",
    "rand": "rng",
    "ccpp": "dcpop",
    "ccdp": "dcpodp",
    "altnzcv": "flagm2",
    "crypto": "aes",
    "sve2-aes": "sveaes",
    "sve2-bitperm": "svebitperm",
    "sve2-sha3": "svesha3",
    "sve2-sm4": "svesm4",
    "f32mm": "svef32mm",
    "f64mm": "svef64mm",
}


def _cpuinfo(text: str) -> dict[str, Any]:
    """Model identity, a readable name and the feature flags common to every core, from /proc/cpuinfo."""
    blocks: list[dict[str, str]] = []
    common: dict[str, str] = {}
    cur: dict[str, str] = {}
    for line in text.splitlines() + [""]:
        if not line.strip():
            if "processor" in cur:
                blocks.append(cur)
            else:
                common.update(cur)
            cur = {}
            continue
        key, sep, value = line.partition(":")
        if sep:
            cur[key.strip().lower()] = value.strip()
    flags: set[str] | None = None
    models: set[str] = set()
    names: set[str] = set()
    for b in blocks or [common]:
        f = set((b.get("flags") or b.get("features") or "").split())
        flags = f if flags is None else flags & f
        if "vendor_id" in b:  # x86
            models.add(f"{b['vendor_id']} family {b.get('cpu family', '?')} model {b.get('model', '?')}")
        elif "cpu implementer" in b:  # arm
            models.add(f"implementer {b['cpu implementer']} part {b.get('cpu part', '?')}")
        elif b.get("cpu model") or b.get("uarch"):
            models.add(b.get("cpu model") or b.get("uarch", ""))
        if b.get("model name"):
            names.add(b["model name"])
    name = common.get("model") or common.get("hardware") or ", ".join(sorted(names))
    return {"model": "; ".join(sorted(models)), "name": name, "flags": frozenset(flags or ())}


def _numpy_features() -> frozenset[str]:
    """numpy's run-time CPU feature detection (cpuid / hwcaps), lower-cased: where /proc/cpuinfo is not."""
    try:
        from numpy._core._multiarray_umath import __cpu_features__ as f
    except ImportError:  # numpy 1.x
        try:
            from numpy.core._multiarray_umath import __cpu_features__ as f
        except ImportError:
            return frozenset()
    return frozenset(k.lower() for k, v in f.items() if v)


@functools.lru_cache(maxsize=1)
def host_cpu() -> dict[str, Any]:
    """This machine's CPU: ``machine`` (``x86_64``, ``aarch64``...), ``model`` (identity), ``name``
    (readable) and ``flags`` (frozenset of feature names, /proc/cpuinfo's on Linux)."""
    info: dict[str, Any] | None = None
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as f:
            info = _cpuinfo(f.read())
    except OSError:
        pass
    if info is None or not (info["model"] or info["flags"]):
        info = {"model": platform.processor() or "", "name": platform.processor(), "flags": _numpy_features()}
    info["machine"] = platform.machine()
    info["name"] = info["name"] or info["model"] or "unknown CPU"
    return info


def _flag(feature: str, flags: frozenset[str]) -> str | None:
    """The /proc/cpuinfo flag of an LLVM feature, or None when this machine lists no such flag."""
    for cand in (LLVM_TO_CPUINFO.get(feature), feature, feature.replace(".", "_").replace("-", "_")):
        if cand and cand in flags:
            return cand
    return None


def record(target: str, llvm_cpu: str, llvm_features: str) -> dict[str, Any]:
    """What a module built here records about its target (JSON-able).

    ``target``: ``"host"``, ``"generic"`` or ``"named"``; ``llvm_cpu``/``llvm_features``: what LLVM was
    given. For a host build, ``flags`` are the /proc/cpuinfo flags of the enabled LLVM features (the
    ones a run-time machine must have) and ``unmatched`` the enabled features with no such flag here.
    """
    here = host_cpu()
    out: dict[str, Any] = {"target": target, "cpu": llvm_cpu or "generic", "machine": here["machine"]}
    if target != "host":
        return out
    enabled = [f[1:] for f in llvm_features.split(",") if f.startswith("+")]
    flags = {f: _flag(f, here["flags"]) for f in enabled}
    out.update(
        model=here["model"],
        name=here["name"],
        flags=sorted({v for v in flags.values() if v}),
        unmatched=sorted(f for f, v in flags.items() if not v),
    )
    return out


def describe(meta: dict[str, Any]) -> str:
    """One phrase naming the CPU a module was built for, e.g. ``skylake-avx512 (Intel Xeon ...)``."""
    if meta.get("target") != "host":
        return f"{meta.get('cpu', 'generic')} ({meta.get('target', '?')}, {meta.get('machine', '?')})"
    return f"{meta['cpu']} ({meta.get('name') or '?'}; {meta.get('model') or '?'})"


def refusal(meta: dict[str, Any], here: dict[str, Any] | None = None) -> str | None:
    """Why a module that recorded ``meta`` must not run on this CPU (``here``: :func:`host_cpu`), or None."""
    if meta.get("target") != "host":
        return None
    here = here or host_cpu()
    missing = sorted(set(meta.get("flags", ())) - set(here["flags"]))
    # every core type here was there at build time (a big.LITTLE board with its big cores offline lists
    # only the little ones), and every feature the build used is here
    cores, built = set(here["model"].split("; ")), set(str(meta.get("model", "")).split("; "))
    if here["machine"] == meta.get("machine") and cores <= built and not missing:
        return None
    lacks = f", which lacks {', '.join(missing[:8])}{' ...' if len(missing) > 8 else ''}" if missing else ""
    return (
        f"it was built for the host CPU {describe(meta)} and this machine's CPU is {here['name']} "
        f"({here['model'] or here['machine']}){lacks}; a host-CPU module could stop with an illegal "
        "instruction here. Rebuild it on this machine with: edgernn aot MODEL.ernn (or build a portable "
        "one with: edgernn aot --cpu generic MODEL.ernn)"
    )
