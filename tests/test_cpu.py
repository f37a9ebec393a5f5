"""An 8-bit INT8 export on an x86 processor without VNNI: one warning at load, naming the target."""

from __future__ import annotations

import logging

import pytest

from edge_runtime.int8.quantize import quantize_export
from edge_runtime.int8.target import Target
from edge_runtime.model import cpu
from edge_runtime.model.cpu import has_vnni, int8_warning, read_cpu_flags
from edge_runtime.model.predictor import Predictor
from tests.test_quantize import colour_frames

AVX2 = "fpu vme sse sse2 ssse3 sse4_1 sse4_2 avx f16c avx2 fma bmi2"


@pytest.mark.parametrize(("flags", "vnni"), [
    (AVX2, False),
    (AVX2 + " avx512f avx512bw avx512_vnni", True),  # Cascade Lake and later Xeons
    (AVX2 + " avx_vnni", True),  # Alder Lake and later cores
    (AVX2 + " avx512_vnni_extra", False),  # a flag is a whole word
    ("", False),
])
def test_vnni_is_found_in_cpu_flags(flags, vnni):
    assert has_vnni(flags) is vnni


def test_the_flags_are_read_from_the_first_processor(tmp_path):
    cpuinfo = tmp_path / "cpuinfo"
    cpuinfo.write_text(f"processor\t: 0\nmodel name\t: x\nflags\t\t: {AVX2} avx_vnni\n\nprocessor\t: 1\n"
                       f"flags\t\t: {AVX2}\n")
    assert has_vnni(read_cpu_flags(cpuinfo) or "")
    cpuinfo.write_text("processor\t: 0\nFeatures\t: fp asimd asimddp\n")  # arm64 names no flags line
    assert read_cpu_flags(cpuinfo) is None and read_cpu_flags(tmp_path / "missing") is None


@pytest.mark.parametrize(("info", "machine", "flags", "warns"), [
    ({"int8": {"target": "arm64", "weightBits": 8}}, "x86_64", AVX2, True),
    ({"int8": {"target": "x86-vnni", "weightBits": 8}}, "AMD64", AVX2, True),
    ({"int8": {"target": "x86-vnni", "weightBits": 8}}, "x86_64", AVX2 + " avx512_vnni", False),
    ({"int8": {"target": "arm64", "weightBits": 8}}, "aarch64", None, False),
    ({"int8": {"target": "x86-avx2", "weightBits": 7}}, "x86_64", AVX2, False),
    ({}, "x86_64", AVX2, False),  # a float export, or an INT8 one from before targets
    ({"int8": {"target": "arm64", "weightBits": 8}}, "x86_64", None, False),  # flags unknown: no guess
])
def test_only_8_bit_weights_on_x86_without_vnni_warn(info, machine, flags, warns):
    warning = int8_warning(info, machine=machine, flags=lambda: flags)
    assert (warning is not None) is warns
    if warning:
        assert info["int8"]["target"] in warning and "without VNNI" in warning and "saturate" in warning
        assert "--target x86-avx2" in warning and "\n" not in warning


@pytest.mark.slow
def test_loading_an_arm64_export_on_x86_without_vnni_logs_one_warning(exports, tmp_path, monkeypatch, caplog):
    frames = colour_frames(tmp_path / "frames", count=8)
    arm = quantize_export(exports["modern"], frames, tmp_path / "arm64", target=Target.ARM64).out
    safe = quantize_export(exports["modern"], frames, tmp_path / "avx2").out
    monkeypatch.setattr(cpu.platform, "machine", lambda: "x86_64")
    monkeypatch.setattr(cpu, "read_cpu_flags", lambda: AVX2)
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model.predictor"):
        Predictor.load(arm)
        Predictor.load(safe)
    (record,) = caplog.records
    assert record.getMessage().startswith(f"{arm}: INT8 export quantised for arm64 (8-bit weights)")
    caplog.clear()
    with caplog.at_level(logging.WARNING, logger="edge_runtime.int8.quantize"):  # its figures are measured here
        quantize_export(exports["modern"], frames, tmp_path / "vnni", target=Target.X86_VNNI)
    assert "quantising for x86-vnni on an x86 processor without VNNI: its 8-bit weights saturate here" in caplog.text
    caplog.clear()
    monkeypatch.setattr(cpu, "read_cpu_flags", lambda: AVX2 + " avx512_vnni")
    with caplog.at_level(logging.WARNING, logger="edge_runtime.model.predictor"):
        Predictor.load(arm)
    assert caplog.records == []
