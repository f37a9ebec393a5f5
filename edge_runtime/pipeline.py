"""Cameras -> model -> sinks. One worker per camera; all share one onnxruntime session.

    pipeline = Pipeline(predictor, [camera], sink)
    pipeline.start()
    ...
    pipeline.stop()

Each worker takes its camera's newest frame, runs the model and hands the result to the
sink; `process` is that one step on its own, for tests and for callers with frames of
their own. A max-FPS limit makes a worker wait before it takes the next (newest) frame.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Mapping, Sequence

from .camera import Camera, Frame
from .errors import EdgeRuntimeError
from .metrics import Metrics
from .predictor import Predictor
from .results import FrameResult
from .sinks import Sink

log = logging.getLogger(__name__)
FRAME_WAIT_S = 0.25  # how often an idle worker looks at the stop flag
FPS_SMOOTHING = 0.1


class Pipeline:
    def __init__(
        self,
        predictor: Predictor,
        cameras: Sequence[Camera],
        sink: Sink,
        max_fps: Mapping[str, float] | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.predictor = predictor
        self.cameras = list(cameras)
        self.sink = sink
        self.max_fps = dict(max_fps or {})
        self.metrics = metrics
        self.errors = 0
        self._fps: dict[str, float] = {}
        self._stop = threading.Event()
        self._threads: list[threading.Thread] = []

    def start(self) -> None:
        for camera in self.cameras:
            camera.start()
            thread = threading.Thread(target=self._work, args=(camera,), name=f"infer-{camera.id}", daemon=True)
            thread.start()
            self._threads.append(thread)

    def stop(self, timeout: float = 3.0) -> None:
        """Stops the workers and cameras; returns within about `timeout` seconds."""
        self._stop.set()
        deadline = time.monotonic() + timeout
        for camera in self.cameras:
            camera.stop(timeout=max(0.1, (deadline - time.monotonic()) / 2))
        for thread in self._threads:
            thread.join(max(0.0, deadline - time.monotonic()))

    def fps(self, camera_id: str) -> float:
        return self._fps.get(camera_id, 0.0)

    def process(self, frame: Frame) -> FrameResult:
        """Run the model on one frame and publish the result."""
        start = time.perf_counter()
        prediction = self.predictor.predict(frame.image)
        elapsed = time.perf_counter() - start
        result = FrameResult(frame, prediction, elapsed * 1000, time.monotonic())
        self.sink(result)
        if self.metrics:
            self.metrics.inference.labels(frame.camera_id).observe(elapsed)
            self.metrics.processed.labels(frame.camera_id).inc()
            self.metrics.age.labels(frame.camera_id).set(result.age_ms / 1000)
        return result

    def _work(self, camera: Camera) -> None:
        seq, last = 0, 0.0
        limit = self.max_fps.get(camera.id)
        while not self._stop.is_set():
            if limit:
                wait = last + 1.0 / limit - time.monotonic()
                if wait > 0 and self._stop.wait(wait):
                    break
            frame = camera.next_frame(seq, FRAME_WAIT_S)
            if frame is None:
                if camera.finished:
                    break
                continue
            seq = frame.seq
            try:
                self.process(frame)
            except EdgeRuntimeError as exc:  # e.g. an odd frame: count it, keep going
                self.errors += 1
                log.error("camera %s frame %d: %s", camera.id, frame.seq, exc)
            now = time.monotonic()
            if last:
                rate = 1.0 / max(now - last, 1e-6)
                previous = self._fps.get(camera.id)
                self._fps[camera.id] = rate if previous is None else previous + FPS_SMOOTHING * (rate - previous)
                if self.metrics:
                    self.metrics.fps.labels(camera.id).set(self._fps[camera.id])
            last = now
