"""Samplers: each decision, the rate limits (with an injected clock), and the sink storing
full-resolution frames from a real model into the real store."""

from __future__ import annotations

import threading
import time
from pathlib import Path
from typing import Any

import cv2
import numpy as np
import pytest
from prometheus_client import CollectorRegistry

from edge_runtime.config import load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.events import samplers
from edge_runtime.events.store import Budget, EventStore
from edge_runtime.model.predictor import Predictor
from edge_runtime.sinks import EventBroadcaster
from edge_runtime.sinks.context import SinkContext
from edge_runtime.sinks.samples import SamplesCollector, SamplesSink, build
from edge_runtime.types import Frame, FrameResult, Prediction, PredictionResult
from tests.conftest import solid


def result(*predictions: tuple[str, float], camera: str = "cam", image: np.ndarray | None = None,
           prediction: PredictionResult | None = None) -> FrameResult:
    image = np.zeros((8, 8, 3), np.uint8) if image is None else image
    prediction = prediction or PredictionResult(
        tuple(Prediction(i, tag, p) for i, (tag, p) in enumerate(predictions)), image.shape[1], image.shape[0])
    frame = Frame(camera, 1, time.time(), time.monotonic(), image)
    return FrameResult(frame, prediction, inference_ms=1.0, published_mono=time.monotonic())


def sampler(**cfg: Any) -> samplers.Sampler:
    settings = load_settings(overrides={"samples": {"samplers": [
        {"per_minute": None, "per_hour": None, "per_day": None, **cfg}]}})
    return samplers.build(settings.samples.samplers[0])


class Clock:
    def __init__(self) -> None:
        self.now = 5000.0

    def __call__(self) -> float:
        return self.now


def test_uncertain_keeps_a_top_probability_inside_the_band():
    s = sampler(type="uncertain", low=0.4, high=0.6)
    assert s.offer(result(("cola", 0.5), ("water", 0.3)))
    assert s.offer(result(("cola", 0.4)))  # the band includes its ends
    assert not s.offer(result(("cola", 0.9), ("water", 0.05)))
    assert not s.offer(result(("cola", 0.35)))
    assert not s.offer(result())  # nothing found counts as probability 0
    assert (s.wanted, s.kept) == (2, 2)


def test_tags_keeps_a_class_of_interest_above_its_probability():
    s = sampler(type="tags", tags=["cola", "beer"], min_probability=0.6)
    assert s.offer(result(("water", 0.9), ("beer", 0.7)))
    assert not s.offer(result(("water", 0.9), ("cola", 0.5)))
    assert not s.offer(result(("water", 0.99)))


def test_random_keeps_the_fraction_its_random_numbers_say():
    draws = iter([0.05, 0.5, 0.09, 0.1, 0.99])
    settings = load_settings(overrides={"samples": {"samplers": [{"type": "random", "fraction": 0.1}]}})
    s = samplers.build(settings.samples.samplers[0], rng=lambda: next(draws))
    assert [s.offer(result(("a", 1.0))) for _ in range(5)] == [True, False, True, False, False]


def test_random_keeps_about_its_fraction():
    s = sampler(type="random", fraction=0.25)
    kept = sum(s.offer(result(("a", 1.0))) for _ in range(4000))
    assert 850 < kept < 1150


def test_disagreement_fires_when_a_cameras_top_tag_changes():
    s = sampler(type="disagreement", min_probability=0.5)
    seen = [s.offer(result(*p, camera=c)) for c, p in [
        ("a", [("cola", 0.9)]),                # first frame of camera a: nothing to disagree with
        ("b", [("beer", 0.9)]),                # camera b has its own history
        ("a", [("cola", 0.8), ("beer", 0.1)]),
        ("a", [("beer", 0.7), ("cola", 0.2)]),  # changed
        ("b", [("beer", 0.6)]),
        ("b", [("beer", 0.4)]),                # below min_probability: no tag, so a change
        ("b", []),                             # still no tag
        ("a", [("beer", 0.9)]),
    ]]
    assert seen == [False, False, False, True, False, True, False, False]


def test_cameras_filter_and_limits_count_only_kept_frames():
    clock = Clock()
    settings = load_settings(overrides={"samples": {"samplers": [
        {"type": "tags", "tags": ["cola"], "cameras": ["door"], "per_minute": 2, "per_hour": 3, "per_day": 4}]}})
    s = samplers.build(settings.samples.samplers[0], clock=clock)
    cola = ("cola", 0.9)

    def burst(n: int) -> list[bool]:
        return [s.offer(result(cola, camera="door")) for _ in range(n)]

    assert not s.offer(result(cola, camera="till"))
    assert burst(3) == [True, True, False]       # 2 a minute
    clock.now += 59
    assert burst(1) == [False]
    clock.now += 1.5                              # the first minute has passed
    assert burst(2) == [True, False]             # 3 an hour
    clock.now += 3600
    assert burst(2) == [True, False]             # 4 a day (the day holds 3 already)
    clock.now += 86400
    assert burst(1) == [True]
    assert (s.wanted, s.kept, s.limited) == (9, 5, 4)


def test_a_rate_limit_of_none_is_unlimited_and_zero_keeps_nothing():
    clock = Clock()
    assert all(samplers.RateLimit(None, None, None, clock).allow() for _ in range(10_000))
    assert not samplers.RateLimit(0, None, None, clock).allow()


def test_config_fails_loudly():
    with pytest.raises(ConfigError, match=r"samples\.samplers\.0\.tags\.per_mniute"):
        load_settings(overrides={"samples": {"samplers": [{"type": "tags", "tags": ["a"], "per_mniute": 1}]}})
    with pytest.raises(ConfigError, match="low must not be above high"):
        load_settings(overrides={"samples": {"samplers": [{"type": "uncertain", "low": 0.9, "high": 0.1}]}})
    with pytest.raises(ConfigError, match="sampler names must be unique"):
        load_settings(overrides={"samples": {"samplers": [{"type": "random", "fraction": 0.1},
                                                          {"type": "random", "fraction": 0.2}]}})


# --- the sink, with a real model and the real store ---------------------------------------------


@pytest.fixture
def store(tmp_path: Path):
    s = EventStore.open(tmp_path / "data")
    yield s
    s.close()


def test_the_sink_stores_full_resolution_frames_with_their_prediction(exports, store: EventStore):
    predictor = Predictor.load(exports["modern"])
    settings = load_settings(overrides={"samples": {"samplers": [
        {"type": "disagreement", "min_probability": 0.5}, {"type": "uncertain", "low": 0.2, "high": 0.6}]}})
    ctx = SinkContext(settings, "shelf", "it1", EventBroadcaster(), store)
    sink = build(ctx)
    assert sink is not None
    frames = [solid((0, 0, 255)), solid((0, 0, 255)), solid((0, 255, 0), 1280, 720), solid((90, 90, 90))]
    results = [result(image=f, prediction=predictor.predict(f)) for f in frames]
    assert [r.prediction.predictions[0].tag_name for r in results[:3]] == ["red", "red", "green"]
    for r in results:
        sink(r)
    sink.close()
    kept = store.samples()
    assert sorted(s.sampler for s in kept) == ["disagreement", "disagreement", "uncertain"]
    registry = CollectorRegistry()
    registry.register(SamplesCollector(sink))
    assert registry.get_sample_value("edge_samples_stored_total", {"sampler": "disagreement"}) == 2
    assert registry.get_sample_value("edge_samples_wanted_total", {"sampler": "uncertain"}) == 1
    assert registry.get_sample_value("edge_samples_dropped_total") == 0
    assert sink.stored == 3 and sink.dropped == sink.refused == sink.failed == 0
    green = next(s for s in kept if s.prediction["predictions"][0]["tagName"] == "green")
    image = cv2.imread(str(store.media_path(green.image)))
    assert image.shape == (720, 1280, 3)  # full resolution
    assert abs(int(image[360, 640, 1]) - 255) < 8 and green.prediction["project"] == "shelf"
    assert green.camera == "cam" and green.taken_at == results[2].frame.captured_at


def test_the_sink_is_off_without_samplers_or_a_store(store: EventStore):
    ctx = SinkContext(load_settings(), "", "", EventBroadcaster(), store)
    assert build(ctx) is None
    with_samplers = load_settings(overrides={"samples": {"samplers": [{"type": "random", "fraction": 1}]}})
    assert build(SinkContext(with_samplers, "", "", EventBroadcaster(), None)) is None


class SlowStore:
    """The real store behind a gate, to hold the sink's worker while frames keep coming."""

    def __init__(self, store: EventStore) -> None:
        self.store, self.gate = store, threading.Event()

    def add_sample(self, *args: Any) -> str | None:
        self.gate.wait(10)
        return self.store.add_sample(*args)


def test_a_full_queue_drops_and_counts_instead_of_blocking_the_publisher(store: EventStore):
    slow = SlowStore(store)
    sink = SamplesSink([sampler(type="random", fraction=1)], slow, queue_size=1)  # type: ignore[arg-type]
    started = time.monotonic()
    for _ in range(5):
        sink(result(("a", 1.0), image=solid((1, 2, 3), 64, 48)))
    assert time.monotonic() - started < 1.0
    slow.gate.set()
    sink.close()
    assert sink.stored + sink.dropped == 5 and sink.dropped >= 3
    assert len(store.samples()) == sink.stored


def test_the_disk_budget_refuses_samples_and_they_are_counted(tmp_path: Path):
    noise = np.random.default_rng(0).integers(0, 255, (120, 160, 3), np.uint8)
    size = len(cv2.imencode(".jpg", noise, [cv2.IMWRITE_JPEG_QUALITY, 95])[1])
    empty = EventStore.open(tmp_path / "data")
    base = empty.usage_bytes()
    empty.close()
    store = EventStore.open(tmp_path / "data", Budget(max_bytes=base + int(2.5 * size), min_free_bytes=0))
    sink = SamplesSink([sampler(type="random", fraction=1)], store)
    for _ in range(4):
        sink(result(("a", 1.0), image=noise))
    sink.close()
    assert sink.refused >= 1 and sink.stored >= 1 and sink.stored + sink.refused == 4
    assert len(store.samples()) == sink.stored
    store.close()
