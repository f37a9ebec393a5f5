"""Scene-change gating: a still scene skips the model, a change is caught at once."""

from __future__ import annotations

import numpy as np
import pytest

from edge_runtime.capture.camera import Camera
from edge_runtime.capture.gate import Changed, SceneGate, Unchanged
from edge_runtime.capture.sources.fake import ScriptedSource
from edge_runtime.config import load_settings
from edge_runtime.errors import ConfigError
from edge_runtime.metrics import Metrics
from edge_runtime.pipeline import Pipeline
from tests.conftest import wait_for
from tests.fakes import FakePredictor

RNG = np.random.default_rng(5)


def scene(level: int = 90, noise: float = 3.0, square: tuple[int, int] | None = None) -> np.ndarray:
    """A 1280x720 still scene with sensor noise, optionally with a 40x40 bright object at `square`."""
    image = np.clip(RNG.normal(level, noise, (720, 1280, 3)), 0, 255).astype(np.uint8)
    if square:
        x, y = square
        image[y:y + 40, x:x + 40] = 250
    return image


class Clock:
    def __init__(self) -> None:
        self.now = 0.0

    def __call__(self) -> float:
        return self.now


def run(gate: SceneGate, image: np.ndarray) -> bool:
    """One frame through the gate as the pipeline does: True when the model would run."""
    run, _ = gate.accept(gate.hook(lambda im: "prepared")(image))
    return run


def test_noise_is_still_but_a_small_object_or_the_idle_limit_runs_the_model():
    clock = Clock()
    gate = SceneGate(max_idle_s=10, clock=clock)
    assert run(gate, scene())  # nothing inferred yet
    assert not any(run(gate, scene()) for _ in range(5))  # fresh sensor noise every frame
    assert run(gate, scene(square=(600, 300)))  # a 40x40 object walks into a 1280x720 view
    assert not run(gate, scene(square=(600, 300)))  # and stands still
    assert run(gate, scene())  # and leaves
    clock.now = 10.5
    assert run(gate, scene())  # nothing changed for max_idle_s: run anyway
    assert gate.skipped == 6


def test_unchanged_frames_are_not_even_preprocessed():
    calls = []
    gate = SceneGate()
    hook = gate.hook(lambda im: calls.append(1) or "prepared")
    first = hook(scene())
    assert isinstance(first, Changed) and calls == [1]
    gate.accept(first)
    assert isinstance(hook(scene()), Unchanged) and calls == [1]


@pytest.mark.parametrize("runs", [1, 2])
def test_a_gated_camera_reuses_results_and_reports_a_change_on_the_next_frame(runs):
    still, bright = scene(60), scene(200)
    frames = [still] * 12 + [bright] * 6
    fake, metrics = FakePredictor(), Metrics()
    gate = SceneGate(max_idle_s=3600)  # a busy test machine must not reach the idle limit
    camera = Camera("door", lambda: ScriptedSource(frames, live=False), prepare=gate.hook(fake.prepare))
    results: list = []
    pipeline = Pipeline(fake, [camera], results.append, metrics=metrics, gates={"door": gate}, runs=runs)
    pipeline.start()
    try:
        assert wait_for(lambda: camera.finished and len(results) == 18, timeout=20)
    finally:
        pipeline.stop()
    assert [r.frame.seq for r in results] == list(range(1, 19))  # every frame has a result
    assert fake.inferred == 2 and pipeline.skipped("door") == 16  # the model ran on 2 of 18 frames
    reused = [r.reused for r in results]
    assert reused == [False] + [True] * 11 + [False] + [True] * 5
    assert results[12].prediction.predictions[0].tag_name == "bright"  # the change, on its own frame
    assert results[5].to_json()["reused"] is True and "reused" not in results[0].to_json()
    assert results[5].prediction is results[0].prediction
    text = metrics.render().decode()
    assert 'edge_frames_skipped_total{camera="door"} 16.0' in text
    assert 'edge_frames_processed_total{camera="door"} 2.0' in text


def test_gate_settings_are_checked():
    settings = load_settings(env={}, overrides={"cameras": [{"id": "a", "source": "demo:",
                                                             "gate": {"enabled": True, "max_idle_s": 2}}]})
    assert settings.cameras[0].gate.enabled and settings.cameras[0].gate.min_changed == 0.002
    with pytest.raises(ConfigError, match=r"gate\.treshold"):
        load_settings(env={}, overrides={"cameras": [{"id": "a", "source": "demo:", "gate": {"treshold": 1}}]})


def test_serve_gates_a_static_video_file_and_catches_the_change(tmp_path, exports):
    import cv2
    import httpx

    from edge_runtime.serve import build_services
    from edge_runtime.server import create_app
    from tests.server_util import running

    path = tmp_path / "still-then-red.avi"
    writer = cv2.VideoWriter(str(path), cv2.VideoWriter.fourcc(*"MJPG"), 30, (320, 240))
    for i in range(30):
        writer.write(np.full((240, 320, 3), (200, 40, 40) if i < 20 else (40, 40, 220), np.uint8))  # blue, then red
    writer.release()
    settings = load_settings(env={}, overrides={"model": {"path": str(exports["modern"])}, "cameras": [
        {"id": "shelf", "source": str(path), "gate": {"enabled": True, "max_idle_s": 3600}}]})
    app = create_app(build_services(settings))
    with running(app) as url:
        def published() -> int:
            return int(httpx.get(f"{url}/predictions/latest?camera=shelf").json().get("seq", 0))

        assert wait_for(lambda: published() == 30, timeout=30)  # every frame has a result
        camera = httpx.get(f"{url}/cameras").json()[0]
        latest = httpx.get(f"{url}/predictions/latest?camera=shelf").json()
        metrics = httpx.get(f"{url}/metrics").text
    processed = [line for line in metrics.splitlines() if line.startswith("edge_frames_processed_total")]
    assert camera["skipped"] == 28 and processed == ['edge_frames_processed_total{camera="shelf"} 2.0']
    assert latest["predictions"][0]["tagName"] == "red" and latest["reused"] is True and latest["seq"] == 30
