"""Source -> model -> sinks, with the real demo model and real video files."""

from __future__ import annotations

import json
import time

import numpy as np
import pytest

from edge_runtime.camera import Camera
from edge_runtime.metrics import Metrics
from edge_runtime.pipeline import Pipeline
from edge_runtime.predictor import Predictor
from edge_runtime.sinks import AnnotatedFrames, JsonlLog, LatestResults, MultiSink
from edge_runtime.sources import open_source
from edge_runtime.types import Frame
from tests.conftest import DEMO, wait_for, write_video


@pytest.fixture(scope="module")
def demo_predictor() -> Predictor:
    return Predictor.load(DEMO)


def test_every_frame_of_a_file_is_processed_in_order(demo_predictor, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=20, size=(640, 360))
    results: list = []
    metrics = Metrics()
    camera = Camera("file", lambda: open_source(str(video)))
    pipeline = Pipeline(demo_predictor, [camera], results.append, metrics=metrics)
    pipeline.start()
    try:
        assert wait_for(lambda: len(results) == 20, timeout=30)
    finally:
        pipeline.stop()
    seqs = [r.frame.seq for r in results]
    assert seqs == list(range(1, 21))
    assert all(r.age_ms >= r.inference_ms > 0 for r in results)
    assert all(r.frame.captured_at <= time.time() for r in results)
    metrics_text = metrics.render().decode()
    assert 'edge_frames_processed_total{camera="file"} 20.0' in metrics_text


def test_a_failing_sink_does_not_stop_the_others(demo_predictor, tmp_path):
    latest, frames = LatestResults(), AnnotatedFrames()

    def broken(result):
        raise OSError("No space left on device")

    errors: list[str] = []
    sink = MultiSink({"broken": broken, "latest": latest, "frames": frames}, on_error=errors.append)
    pipeline = Pipeline(demo_predictor, [], sink)
    image = np.zeros((240, 320, 3), np.uint8)
    for seq in (1, 2, 3):
        pipeline.process(Frame("cam", seq, time.time(), time.monotonic(), image))
    assert errors == ["broken"] * 3 and sink.errors["broken"] == 3
    assert latest.get("cam") is not None and latest.get("cam").frame.seq == 3
    seq, jpeg = frames.jpeg("cam")
    assert seq == 3 and jpeg[:2] == b"\xff\xd8"


def test_jsonl_log_survives_a_full_disk(demo_predictor, tmp_path, monkeypatch):
    import os

    path = tmp_path / "results.jsonl"
    log = JsonlLog(path)
    pipeline = Pipeline(demo_predictor, [], MultiSink({"log": log}))
    image = np.zeros((120, 160, 3), np.uint8)
    pipeline.process(Frame("cam", 1, time.time(), time.monotonic(), image))

    real_write = os.write
    calls = {"n": 0}

    def full_disk(fd, data):
        calls["n"] += 1
        if calls["n"] == 1:  # half a line gets out, then the disk is full
            real_write(fd, data[: len(data) // 2])
            raise OSError(28, "No space left on device")
        return real_write(fd, data)

    monkeypatch.setattr("edge_runtime.sinks.jsonl.os.write", full_disk)
    pipeline.process(Frame("cam", 2, time.time(), time.monotonic(), image))
    pipeline.process(Frame("cam", 3, time.time(), time.monotonic(), image))
    log.close()
    lines = path.read_text().splitlines()
    parsed = []
    for line in lines:
        try:
            parsed.append(json.loads(line))
        except json.JSONDecodeError:
            continue  # the line the full disk cut short stands alone
    assert [p["seq"] for p in parsed] == [1, 3]
    assert parsed[0]["camera"] == "cam" and parsed[0]["predictions"]


def test_max_fps_limits_the_model_rate(demo_predictor, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=300, size=(320, 240), fps=100)
    results: list = []
    camera = Camera("limited", lambda: open_source(str(video), realtime=True))
    pipeline = Pipeline(demo_predictor, [camera], results.append, max_fps={"limited": 5})
    pipeline.start()
    time.sleep(1.5)
    pipeline.stop()
    assert 4 <= len(results) <= 10
    assert camera.stats.dropped > 0  # the file kept its own pace while the model waited


def test_two_cameras_share_one_session(demo_predictor, tmp_path):
    a = write_video(tmp_path / "a.avi", frames=8)
    b = write_video(tmp_path / "b.avi", frames=12)
    latest = LatestResults()
    cams = [Camera("a", lambda: open_source(str(a))), Camera("b", lambda: open_source(str(b)))]
    pipeline = Pipeline(demo_predictor, cams, latest)
    pipeline.start()
    try:
        assert wait_for(lambda: (latest.get("a") is not None and latest.get("a").frame.seq == 8
                                 and latest.get("b") is not None and latest.get("b").frame.seq == 12), timeout=30)
    finally:
        start = time.monotonic()
        pipeline.stop()
        assert time.monotonic() - start < 5
