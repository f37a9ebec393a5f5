"""Whether this processor runs an INT8 export's weights as they were quantised.

    warning = int8_warning(bundle.info)   # None, or one line to log at load

An export quantised with full 8-bit weights (`edge-runtime quantize --target x86-vnni` or
`arm64`, recorded in bundle.json as "int8": {"target", "weightBits"}) runs on an x86 processor
without VNNI through kernels that add pairs of u8 x s8 products in 16 bits, which saturate:
its answers can drift from the float model's. Such a processor wants `--target x86-avx2`.
"""

from __future__ import annotations

import platform
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

CPUINFO = Path("/proc/cpuinfo")
VNNI_FLAGS = frozenset({"avx512_vnni", "avx_vnni"})
X86_MACHINES = frozenset({"x86_64", "amd64", "i386", "i686", "x86"})


def read_cpu_flags(path: Path = CPUINFO) -> str | None:
    """The first processor's `flags` line from /proc/cpuinfo; None where there is none (not Linux, not x86)."""
    try:
        with open(path, encoding="utf-8", errors="replace") as cpuinfo:
            for line in cpuinfo:
                key, _, value = line.partition(":")
                if key.strip() == "flags":
                    return value
    except OSError:
        return None
    return None


def has_vnni(flags: str) -> bool:
    """Whether a /proc/cpuinfo flags string names AVX512-VNNI or AVX-VNNI."""
    return not VNNI_FLAGS.isdisjoint(flags.split())


def saturates_8_bit_weights(machine: str | None = None, flags: Callable[[], str | None] | None = None) -> bool:
    """Whether this processor (or `machine` with `flags`) is x86 without VNNI; False when unknown,
    so that no warning may be wrong."""
    if (machine or platform.machine()).lower() not in X86_MACHINES:
        return False
    found = (flags or read_cpu_flags)()
    return found is not None and not has_vnni(found)


def int8_warning(info: Mapping[str, Any], machine: str | None = None,
                 flags: Callable[[], str | None] | None = None) -> str | None:
    """One line when an 8-bit INT8 export (bundle.json `info`) is loaded on an x86 processor
    without VNNI, else None. `machine` and `flags` default to this one's."""
    int8 = info.get("int8")
    if not isinstance(int8, Mapping) or int8.get("weightBits") != 8 or not saturates_8_bit_weights(machine, flags):
        return None
    return (f"INT8 export quantised for {int8.get('target')} (8-bit weights) on an x86 processor without VNNI: "
            "its u8 x s8 products can saturate and its answers drift from the float model's; "
            "quantise it again with --target x86-avx2")
