"""Time each stage of a prediction on one 1280x720 frame and print a table.

    edge-runtime bench MODEL [--iterations 200]

Stages: JPEG decode, preprocess, bare `session.run`, postprocess, and the whole
`predict` (preprocess + run + postprocess). Numbers are medians and 90th percentiles in
milliseconds over the same frame; the overhead line compares preprocess + postprocess
with bare inference.
"""

from __future__ import annotations

import os
import platform
import resource
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort
from pydantic import BaseModel, ConfigDict, Field

from ..errors import ImageDecodeError
from ..paths import DEMO_SAMPLES
from .imageio import decode_image
from .postprocess import postprocess
from .predictor import Predictor
from .preprocess import preprocess

FRAME_SIZE = (1280, 720)
SAMPLE = DEMO_SAMPLES / "coffee.jpg"


class BenchOptions(BaseModel):
    """The benchmark's settings; the command line's --iterations is checked against these."""

    model_config = ConfigDict(extra="forbid", frozen=True)
    iterations: int = Field(200, ge=1, le=1_000_000, description="timed runs of each stage")


@dataclass(frozen=True)
class Timing:
    stage: str
    median_ms: float
    p90_ms: float


def elapsed_ms(fn: Callable[[], object]) -> float:
    """Wall milliseconds of one call."""
    start = time.perf_counter()
    fn()
    return (time.perf_counter() - start) * 1000


def _time(fn: Callable[[], object], iterations: int) -> tuple[float, float]:
    samples = sorted(elapsed_ms(fn) for _ in range(iterations))
    return statistics.median(samples), samples[min(len(samples) - 1, int(0.9 * len(samples)))]


def test_frame(path: Path = SAMPLE) -> bytes:
    image = cv2.imread(str(path))
    if image is None:
        raise ImageDecodeError(f"{path}: cannot read this image")
    frame = cv2.resize(image, FRAME_SIZE, interpolation=cv2.INTER_LINEAR)
    ok, jpeg = cv2.imencode(".jpg", frame, [cv2.IMWRITE_JPEG_QUALITY, 90])
    assert ok
    return jpeg.tobytes()


def run_benchmark(predictor: Predictor, iterations: int = 200, image: Path | None = None) -> list[Timing]:
    iterations = BenchOptions(iterations=iterations).iterations  # at least 1: medians of nothing do not exist
    jpeg = test_frame(image or SAMPLE)
    frame = decode_image(jpeg)
    spec = predictor.spec
    tensor, window = preprocess(frame, spec.input)
    outputs = predictor.infer(tensor)
    feeds = {spec.input.name: tensor}
    names = list(spec.output_names)
    session = predictor.model.session
    stages: list[tuple[str, Callable[[], object]]] = [
        ("decode JPEG", lambda: decode_image(jpeg)),
        ("preprocess", lambda: preprocess(frame, spec.input)),
        ("session.run", lambda: session.run(names, feeds)),
        ("postprocess", lambda: postprocess(outputs, spec, window, predictor.options)),
        ("predict (pre+run+post)", lambda: predictor.predict(frame)),
    ]
    for _, fn in stages:  # warm caches and thread pools
        for _ in range(5):
            fn()
    return [Timing(name, *_time(fn, iterations)) for name, fn in stages]


def machine() -> str:
    cpu = platform.processor() or platform.machine()
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith(("model name", "hardware")):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    system = f"{platform.system()} {platform.machine()}"
    return f"{cpu}, {os.cpu_count()} cores, {system}, Python {platform.python_version()}"


def report(predictor: Predictor, timings: list[Timing], iterations: int) -> str:
    by = {t.stage: t for t in timings}
    run = by["session.run"].median_ms
    overhead = by["preprocess"].median_ms + by["postprocess"].median_ms
    predict = by["predict (pre+run+post)"].median_ms
    peak_mb = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    lines = [
        f"model: {predictor.bundle.source} ({predictor.spec.variant.value}, input "
        f"{predictor.spec.input.width}x{predictor.spec.input.height} {predictor.spec.input.dtype})",
        f"machine: {machine()}",
        f"onnxruntime {ort.__version__}, OpenCV {cv2.__version__}, numpy {np.__version__}, "
        f"providers {', '.join(predictor.model.providers)}",
        f"frame: {FRAME_SIZE[0]}x{FRAME_SIZE[1]} JPEG, {iterations} iterations",
        "",
        "| stage | median ms | p90 ms |",
        "|---|---:|---:|",
        *(f"| {t.stage} | {t.median_ms:.2f} | {t.p90_ms:.2f} |" for t in timings),
        "",
        f"predict throughput: {1000 / predict:.1f} frames/s (decode excluded)",
        f"preprocess + postprocess: {overhead:.2f} ms = {100 * overhead / run:.1f}% of bare inference",
        f"peak RSS: {peak_mb:.0f} MB",
    ]
    return "\n".join(lines)
