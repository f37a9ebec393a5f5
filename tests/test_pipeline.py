"""Source -> model -> sinks, with real video files and a fake predictor (tests.fakes):
what is tested here is the plumbing around the model, which tests/test_predictor.py covers."""

from __future__ import annotations

import json
import os
import threading
import time
from collections import Counter

import numpy as np
import pytest

from edge_runtime.capture.camera import Camera
from edge_runtime.capture.sources import open_source
from edge_runtime.capture.sources.fake import ScriptedSource
from edge_runtime.metrics import Metrics
from edge_runtime.pipeline import INFERENCE_NICENESS, Pipeline
from edge_runtime.sinks import AnnotatedFrames, JsonlLog, LatestResults, MultiSink
from edge_runtime.types import Frame
from tests.conftest import wait_for, write_video
from tests.fakes import FakePredictor


@pytest.fixture()
def predictor() -> FakePredictor:
    return FakePredictor()


def test_every_frame_of_a_file_is_processed_in_order(predictor, tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=20, size=(640, 360))
    results: list = []
    metrics = Metrics()
    camera = Camera("file", lambda: open_source(str(video)))
    pipeline = Pipeline(predictor, [camera], results.append, metrics=metrics)
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


def test_a_failing_sink_does_not_stop_the_others(predictor, tmp_path):
    latest, frames = LatestResults(), AnnotatedFrames()

    def broken(result):
        raise OSError("No space left on device")

    errors: list[str] = []
    sink = MultiSink({"broken": broken, "latest": latest, "frames": frames}, on_error=errors.append)
    pipeline = Pipeline(predictor, [], sink)
    image = np.zeros((240, 320, 3), np.uint8)
    for seq in (1, 2, 3):
        pipeline.process(Frame("cam", seq, time.time(), time.monotonic(), image))
    assert errors == ["broken"] * 3 and sink.errors["broken"] == 3
    assert latest.get("cam") is not None and latest.get("cam").frame.seq == 3
    seq, jpeg = frames.jpeg("cam")
    assert seq == 3 and jpeg[:2] == b"\xff\xd8"


def test_jsonl_log_survives_a_full_disk(predictor, tmp_path, monkeypatch):
    import os

    path = tmp_path / "results.jsonl"
    log = JsonlLog(path)
    pipeline = Pipeline(predictor, [], MultiSink({"log": log}))
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


def test_max_fps_limits_the_model_rate(tmp_path):
    video = write_video(tmp_path / "clip.avi", frames=300, size=(160, 120), fps=100)
    fake = FakePredictor()
    results: list = []
    five = threading.Event()

    def sink(result):
        results.append(result)
        if len(results) == 5:
            five.set()

    camera = Camera("limited", lambda: open_source(str(video), realtime=True), prepare=fake.prepare)
    pipeline = Pipeline(fake, [camera], sink, max_fps={"limited": 10})
    pipeline.start()
    try:
        assert five.wait(10)
    finally:
        pipeline.stop()
    taken = [r.frame.captured_mono for r in results[:5]]
    # at most 10 per second, from a 100 fps file: a frame is captured up to one frame
    # interval (10 ms) before the worker takes it, so single gaps may be that much shorter
    assert min(np.diff(taken)) >= 0.1 - 0.02 and np.mean(np.diff(taken)) >= 0.095
    assert camera.stats.dropped > 0  # the file kept its own pace while the model waited


def test_preprocessing_runs_on_the_grabber_thread_and_cameras_are_left_as_given():
    fake = FakePredictor()
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(1, 6)]
    hooked = Camera("hooked", lambda: ScriptedSource(frames, live=False), prepare=fake.prepare)
    plain = Camera("plain", lambda: ScriptedSource(frames, live=False))
    latest = LatestResults()
    pipeline = Pipeline(fake, [hooked, plain], latest)
    assert hooked.prepare == fake.prepare and plain.prepare is None  # the pipeline changes neither
    pipeline.start()
    try:
        assert wait_for(lambda: all(latest.get(c) is not None and latest.get(c).frame.seq == 5
                                    for c in ("hooked", "plain")), timeout=10)
    finally:
        pipeline.stop()
    on = Counter(fake.prepared_on)
    assert on["grab-hooked"] == 5  # overlapped with inference, on the camera's thread
    assert on["infer-plain-0"] == 5 and set(on) == {"grab-hooked", "infer-plain-0"}


@pytest.mark.skipif(not hasattr(os, "setpriority"), reason="niceness per thread is Linux's")
def test_inference_threads_run_nicer_than_the_grabber_so_capture_gets_a_core():
    """With more runnable threads than cores the grabber, the stage that cannot be split,
    would get an even share; the inference threads give it way (and nothing else changes)."""
    def niceness() -> int:
        return os.getpriority(os.PRIO_PROCESS, threading.get_native_id())

    seen: dict[str, set[int]] = {}

    class Recording(FakePredictor):
        def prepare(self, frame: np.ndarray):  # type: ignore[no-untyped-def]
            seen.setdefault(threading.current_thread().name.split("-")[0], set()).add(niceness())
            return super().prepare(frame)

        def infer(self, tensor: np.ndarray):  # type: ignore[no-untyped-def]
            seen.setdefault("run", set()).add(niceness())
            return super().infer(tensor)

    fake = Recording()
    frames = [np.full((8, 8, 3), i, np.uint8) for i in range(1, 7)]
    camera = Camera("nice", lambda: ScriptedSource(frames, live=False), prepare=fake.prepare)
    results: list = []
    pipeline = Pipeline(fake, [camera], results.append, runs=2)
    before = niceness()
    if before + INFERENCE_NICENESS > 19:
        pytest.skip("this process already runs at the lowest priority")
    pipeline.start()
    try:
        assert wait_for(lambda: camera.finished and len(results) == 6, timeout=10)
    finally:
        pipeline.stop()
    assert seen["grab"] == {before} and seen["run"] == {before + INFERENCE_NICENESS}
    assert niceness() == before  # the caller's thread, and so threads it starts later, keep theirs


@pytest.mark.parametrize("runs", [1, 2])
def test_a_worker_survives_a_bad_frame(caplog, runs):
    fake = FakePredictor(bad_value=7)
    frames = [np.full((8, 8, 3), v, np.uint8) for v in (1, 7, 3)]
    camera = Camera("odd", lambda: ScriptedSource(frames, live=False), prepare=fake.prepare)
    results: list = []
    pipeline = Pipeline(fake, [camera], results.append, runs=runs)
    pipeline.start()
    try:
        assert wait_for(lambda: camera.finished and len(results) == 2, timeout=10)
        assert pipeline.healthy  # the worker lived on; its camera finished
    finally:
        pipeline.stop()
    assert [r.frame.seq for r in results] == [1, 3] and pipeline.errors == 1
    assert "ValueError: the fake model cannot take this frame" in caplog.text


@pytest.mark.parametrize("runs", [1, 3])
def test_two_cameras_share_one_session(predictor, tmp_path, runs):
    a = write_video(tmp_path / "a.avi", frames=8)
    b = write_video(tmp_path / "b.avi", frames=12)
    latest = LatestResults()
    cams = [Camera("a", lambda: open_source(str(a))), Camera("b", lambda: open_source(str(b)))]
    pipeline = Pipeline(predictor, cams, latest, runs=runs)
    pipeline.start()
    try:
        assert wait_for(lambda: (latest.get("a") is not None and latest.get("a").frame.seq == 8
                                 and latest.get("b") is not None and latest.get("b").frame.seq == 12), timeout=30)
    finally:
        start = time.monotonic()
        pipeline.stop()
        assert time.monotonic() - start < 5


class Overlapping(FakePredictor):
    """Holds each run until `runs` of them run at once (or a second passes), then lets even
    frames take ten times longer than odd ones, so that they finish out of order."""

    def __init__(self, runs: int) -> None:
        super().__init__()
        self.runs, self.running, self.most = runs, 0, 0
        self._together = threading.Condition()

    def infer(self, tensor):
        with self._together:
            self.running += 1
            self.most = max(self.most, self.running)
            self._together.notify_all()
            self._together.wait_for(lambda: self.running >= self.runs, timeout=1.0)
        try:
            time.sleep(0.04 if round(float(tensor.mean())) // 4 % 2 == 0 else 0.004)
            return super().infer(tensor)
        finally:
            with self._together:
                self.running -= 1


@pytest.mark.parametrize("runs", [1, 2, 3])
def test_frames_inferred_at_once_are_published_in_order(tmp_path, runs):
    video = write_video(tmp_path / "clip.avi", frames=24, size=(64, 48))  # frame i is grey 4*i
    fake, results = Overlapping(runs), []
    camera = Camera("file", lambda: open_source(str(video)), prepare=fake.prepare)
    pipeline = Pipeline(fake, [camera], results.append, runs=runs)
    pipeline.start()
    try:
        assert wait_for(lambda: camera.finished and len(results) == 24, timeout=30)
    finally:
        pipeline.stop()
    assert [r.frame.seq for r in results] == list(range(1, 25))  # none lost, none out of order
    assert fake.most == runs  # that many at once, never more
    for r in results:  # each result is its own frame's
        bright = next(p.probability for p in r.prediction.predictions if p.tag_name == "bright")
        assert bright == pytest.approx(r.frame.image.mean() / 255)


def test_a_stalled_run_holds_the_others_back_after_a_few_frames():
    class Stalling(FakePredictor):
        def __init__(self) -> None:
            super().__init__()
            self.release = threading.Event()

        def infer(self, tensor):
            if round(float(tensor.mean())) == 5:  # the fifth frame's run hangs until released
                assert self.release.wait(10)
            return super().infer(tensor)

    fake = Stalling()
    frames = [np.full((8, 8, 3), v, np.uint8) for v in range(1, 41)]
    camera = Camera("cam", lambda: ScriptedSource(frames, live=False), prepare=fake.prepare)
    results: list = []
    pipeline = Pipeline(fake, [camera], results.append, runs=2)
    pipeline.start()
    try:
        assert wait_for(lambda: fake.inferred == 4 + 3, timeout=10)  # 4 before it, then 3 more taken ahead
        time.sleep(0.5)
        assert fake.inferred == 7 and [r.frame.seq for r in results] == [1, 2, 3, 4]  # and no further
        fake.release.set()
        assert wait_for(lambda: camera.finished and len(results) == 40, timeout=20)
    finally:
        fake.release.set()
        pipeline.stop()
    assert [r.frame.seq for r in results] == list(range(1, 41))


def test_a_real_session_gives_each_frame_its_own_result_when_runs_overlap(tmp_path, exports):
    from edge_runtime.model.predictor import Predictor

    colours = [(0, 0, 255), (0, 255, 0), (255, 0, 0)] * 6
    images = [np.full((96, 128, 3), c, np.uint8) for c in colours]
    predictor = Predictor.load(exports["modern"], intra_op_threads=1, runs=2)
    assert predictor.model.runs == 2
    expected = [predictor.predict(im).predictions for im in images]
    camera = Camera("cam", lambda: ScriptedSource(images, live=False), prepare=predictor.prepare)
    results: list = []
    pipeline = Pipeline(predictor, [camera], results.append, runs=predictor.model.runs)
    pipeline.start()
    try:
        assert wait_for(lambda: camera.finished and len(results) == len(images), timeout=30)
    finally:
        pipeline.stop()
    assert [r.frame.seq for r in results] == list(range(1, len(images) + 1))
    assert [r.prediction.predictions for r in results] == expected  # no run saw another's tensor


def test_camera_frames_do_not_wait_for_the_upload_decode_budget(monkeypatch):
    from concurrent.futures import ThreadPoolExecutor

    from edge_runtime.model import limits
    from edge_runtime.model.predictor import Predictor
    from tests.conftest import DEMO as demo_model

    monkeypatch.setenv("EDGE_RUNTIME_DECODE_WAIT_S", "20")
    limits.reset()
    try:
        predictor = Predictor.load(demo_model)
        budget = limits.decode_budget()
        with budget.reserve(budget.total), ThreadPoolExecutor(1) as grabber:  # uploads hold all of it
            frame = grabber.submit(predictor.predict, np.zeros((720, 1280, 3), np.uint8))
            assert frame.result(timeout=10).predictions  # the camera's thread went on at once
    finally:
        monkeypatch.undo()
        limits.reset()
