"""The CPU check of AOT modules (edgernn.aot_target) on /proc/cpuinfo texts of other machines.

No module is built here (tests/test_arm_aot.py builds them); these check the parsing and the decision on
the texts of an x86-64 server, a Raspberry Pi 4 and a big.LITTLE board, as their kernels print them.
"""

from __future__ import annotations

import pytest

from edgernn import aot_target

XEON = """processor\t: 0
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx avx2 bmi1 bmi2 avx512f avx512dq avx512cd
bugs\t\t: spectre_v1

processor\t: 1
vendor_id\t: GenuineIntel
cpu family\t: 6
model\t\t: 85
model name\t: Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz
flags\t\t: fpu sse sse2 pni ssse3 fma sse4_1 sse4_2 avx avx2 bmi1 bmi2 avx512f avx512dq avx512cd
"""

PI4 = """processor\t: 0
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

processor\t: 1
BogoMIPS\t: 108.00
Features\t: fp asimd evtstrm crc32 cpuid
CPU implementer\t: 0x41
CPU architecture: 8
CPU variant\t: 0x0
CPU part\t: 0xd08
CPU revision\t: 3

Hardware\t: BCM2835
Revision\t: c03114
Model\t\t: Raspberry Pi 4 Model B Rev 1.4
"""

# RK3588-like: little cores (a55, 0xd05) and big cores (a76, 0xd0b); a55 lacks nothing here but the
# big cores list one more feature: only what every core has counts
BIG_LITTLE = """processor\t: 0
Features\t: fp asimd aes crc32 atomics fphp asimdhp asimddp
CPU implementer\t: 0x41
CPU part\t: 0xd05

processor\t: 4
Features\t: fp asimd aes crc32 atomics fphp asimdhp asimddp lrcpc
CPU implementer\t: 0x41
CPU part\t: 0xd0b
"""


def _cpu(text, machine):
    return dict(aot_target._cpuinfo(text), machine=machine)


def test_cpuinfo_x86():
    c = aot_target._cpuinfo(XEON)
    assert c["model"] == "GenuineIntel family 6 model 85"
    assert c["name"] == "Intel(R) Xeon(R) Gold 6148 CPU @ 2.40GHz"
    assert {"avx2", "avx512f", "pni", "sse4_2"} <= c["flags"] and "spectre_v1" not in c["flags"]


def test_cpuinfo_arm_boards():
    c = aot_target._cpuinfo(PI4)
    assert c["model"] == "implementer 0x41 part 0xd08"
    assert c["name"] == "Raspberry Pi 4 Model B Rev 1.4"
    assert c["flags"] == {"fp", "asimd", "evtstrm", "crc32", "cpuid"}
    b = aot_target._cpuinfo(BIG_LITTLE)
    assert b["model"] == "implementer 0x41 part 0xd05; implementer 0x41 part 0xd0b"
    assert "lrcpc" not in b["flags"] and "asimddp" in b["flags"]


@pytest.mark.parametrize(
    ("text", "machine", "llvm_cpu", "features", "want", "unmatched"),
    [
        (XEON, "x86_64", "skylake-avx512", "+avx2,-amx-tile,+avx512f,+sse3,+bmi,+crc32,+xsave",
         ["avx2", "avx512f", "bmi1", "pni", "sse4_2"], ["xsave"]),
        (PI4, "aarch64", "cortex-a72", "+neon,+fp-armv8,+crc,-aes,-sha2", ["asimd", "crc32", "fp"], []),
    ],
)  # fmt: skip
def test_record_maps_llvm_features_to_cpuinfo_flags(
    monkeypatch, text, machine, llvm_cpu, features, want, unmatched
):
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _cpu(text, machine))
    r = aot_target.record("host", llvm_cpu, features)
    assert r["flags"] == want and r["unmatched"] == unmatched
    assert r["cpu"] == llvm_cpu and r["machine"] == machine
    assert aot_target.refusal(r, _cpu(text, machine)) is None  # the machine it was built on


def test_refusal_between_boards(monkeypatch):
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _cpu(BIG_LITTLE, "aarch64"))
    rk = aot_target.record("host", "cortex-a76", "+neon,+dotprod,+fullfp16,+lse")
    assert set(rk["flags"]) == {"asimd", "asimddp", "asimdhp", "atomics"}
    why = aot_target.refusal(rk, _cpu(PI4, "aarch64"))  # RK3588 module copied to a Pi 4
    assert "cortex-a76" in why and "Raspberry Pi 4 Model B Rev 1.4" in why
    assert "lacks asimddp, asimdhp, atomics" in why
    # the same board model with one core type's features hidden: refused for the feature alone
    fewer = _cpu(BIG_LITTLE.replace(" asimddp", ""), "aarch64")
    assert "lacks asimddp" in aot_target.refusal(rk, fewer)
    # the same board with its big cores offline (only the a55 cores listed): accepted
    little = _cpu(BIG_LITTLE.split("\n\n")[0] + "\n", "aarch64")
    assert little["model"] == "implementer 0x41 part 0xd05"
    assert aot_target.refusal(rk, little) is None
    # a generic module is never refused; the Pi's own module is refused on the RK3588 (another model)
    assert aot_target.refusal(aot_target.record("generic", "", ""), _cpu(PI4, "aarch64")) is None
    monkeypatch.setattr(aot_target, "host_cpu", lambda: _cpu(PI4, "aarch64"))
    pi = aot_target.record("host", "cortex-a72", "+neon,+crc")
    assert "implementer 0x41 part 0xd08" in aot_target.refusal(pi, _cpu(BIG_LITTLE, "aarch64"))


def test_host_cpu_is_read_without_numba():
    c = aot_target.host_cpu()
    assert c["machine"] and c["name"] and isinstance(c["flags"], frozenset)
