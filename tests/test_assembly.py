"""assembly.local_pipeline: where each camera's preprocessing runs, with a real model and video."""

from __future__ import annotations

import threading
from collections import Counter
from pathlib import Path
from typing import Any

import numpy as np
import pytest

from edge_runtime.assembly import load_predictor, local_pipeline
from edge_runtime.config import load_settings
from edge_runtime.model.predictor import Predictor, Prepared
from edge_runtime.sinks import LatestResults
from tests.conftest import wait_for, write_video


def recording(predictor: Predictor) -> Counter[str]:
    """Counts, by thread name, the frames `predictor` preprocesses from now on."""
    threads: Counter[str] = Counter()
    prepare = predictor.prepare

    def counted(frame: np.ndarray) -> Prepared:
        name = threading.current_thread().name  # grab-CAMERA, or infer-CAMERA-N: counted per camera
        threads[name.rsplit("-", 1)[0] if name.startswith("infer-") else name] += 1
        return prepare(frame)

    predictor.prepare = counted  # type: ignore[method-assign]
    return threads


def run(settings: Any, predictor: Predictor, frames: int) -> LatestResults:
    latest = LatestResults()
    pipeline = local_pipeline(settings, predictor, latest)
    assert pipeline is not None
    pipeline.start()
    try:
        assert wait_for(lambda: all(c.finished for c in pipeline.cameras) and not pipeline.running, timeout=30)
    finally:
        pipeline.stop()
    assert all((r := latest.get(c.id)) is not None and r.frame.seq == frames for c in pipeline.cameras)
    return latest


@pytest.mark.timeout(60)
@pytest.mark.parametrize(("runs", "cameras", "where"), [
    (1, 1, "grab"),  # one inference thread: preprocessing overlaps it on the grabber
    (2, 1, "infer"),  # two: they preprocess their own frames, in parallel
    (2, 2, "grab"),  # two cameras share the two runs: one inference thread each
])
def test_preprocessing_runs_where_the_camera_has_threads_to_spare(exports, tmp_path: Path, runs: int, cameras: int,
                                                                  where: str) -> None:
    video = write_video(tmp_path / "clip.avi", frames=12)
    settings = load_settings(env={}, overrides={
        "model": {"path": str(exports["modern"]), "runs": runs},
        "cameras": [{"id": f"c{i}", "source": str(video)} for i in range(cameras)]})
    predictor = load_predictor(settings, runs=runs, threads=1)
    threads = recording(predictor)
    run(settings, predictor, frames=12)
    expected = {f"{where}-c{i}": 12 for i in range(cameras)} if where == "grab" else {"infer-c0": 12}
    assert dict(threads) == expected


@pytest.mark.timeout(60)
def test_a_gated_camera_with_two_inference_threads_skips_still_frames_before_preprocessing(exports, tmp_path):
    import cv2

    still = tmp_path / "still.avi"
    writer = cv2.VideoWriter(str(still), cv2.VideoWriter.fourcc(*"MJPG"), 30, (320, 240))
    for _ in range(20):
        writer.write(np.full((240, 320, 3), (40, 90, 160), np.uint8))
    writer.release()
    settings = load_settings(env={}, overrides={
        "model": {"path": str(exports["modern"]), "runs": 2},
        "cameras": [{"id": "door", "source": str(still), "gate": {"enabled": True, "max_idle_s": 3600}}]})
    predictor = load_predictor(settings, runs=2, threads=1)
    threads = recording(predictor)
    latest = run(settings, predictor, frames=20)
    assert dict(threads) == {"infer-door": 1}  # the first frame, on an inference thread; the others were skipped
    newest = latest.get("door")
    assert newest is not None and newest.reused and newest.prediction.predictions[0].tag_name == "red"


@pytest.mark.timeout(60)
def test_serve_gives_opencv_one_thread_per_run_when_its_cameras_fill_the_cores(exports, tmp_path, monkeypatch):
    import cv2

    from edge_runtime.serve import build_services

    before = cv2.getNumThreads()
    monkeypatch.setattr("edge_runtime.serve.os.cpu_count", lambda: 4)
    video = write_video(tmp_path / "clip.avi", frames=4)
    try:
        cv2.setNumThreads(4)
        uploads = load_settings(env={}, overrides={"workers": 0, "model": {"path": str(exports["modern"])}})
        build_services(uploads, env={})
        assert cv2.getNumThreads() == 4  # no cameras: OpenCV keeps its pool for the uploads
        for model, threads in (({}, 3), ({"runs": 4}, 1)):  # 2 runs of 3 threads; 4 runs of 1
            settings = load_settings(env={}, overrides={
                "workers": 0, "model": {"path": str(exports["modern"]), **model},
                "cameras": [{"id": "door", "source": str(video)}]})
            svc = build_services(settings, env={})
            assert svc.pipeline is not None and cv2.getNumThreads() == threads
    finally:
        cv2.setNumThreads(before)
