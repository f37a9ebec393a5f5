"""The processor an INT8 export is for, which decides its weights' range.

x86 processors without VNNI multiply u8 activations by s8 weights with instructions
(vpmaddubsw) that add pairs of products into 16 bits and saturate there with 8-bit weights;
7-bit weights keep every pair in range. VNNI (AVX512-VNNI, AVX-VNNI) and every arm64 chip
add the products in 32 bits, so they take full 8-bit weights: finer steps, the same speed.
"""

from __future__ import annotations

import enum

from .rounding import FULL_RANGE, REDUCED_RANGE


class Target(str, enum.Enum):
    X86_AVX2 = "x86-avx2"  # the default: safe on every x86 processor
    X86_VNNI = "x86-vnni"
    ARM64 = "arm64"

    @property
    def weight_bits(self) -> int:
        return 7 if self is Target.X86_AVX2 else 8

    @property
    def weight_limit(self) -> int:
        """The largest weight magnitude in matrix products (depthwise convs take FULL_RANGE everywhere)."""
        return REDUCED_RANGE if self.weight_bits == 7 else FULL_RANGE


TARGETS = tuple(t.value for t in Target)
